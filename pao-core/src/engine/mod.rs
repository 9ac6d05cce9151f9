//! The fulfillment engine: from a submitted request to `Completed`, `Failed`, `Cancelled` or
//! `Rejected`. [`Orchestrator`] is the whole of it — submission with prerequisites and
//! approval, workers that claim requests and run their action DAG with retries, timeouts,
//! circuit breakers and rollback, cancellation, retries of failed requests, manual-mode
//! completion, and simulation.
//!
//! Decisions worth knowing:
//! - A skipped action (`when` false) counts as finished for its dependents; reading its
//!   outputs fails unless guarded with `?.` or `default` (the loader insists on the guard).
//! - An action with `on_failure: continue` that fails also counts as finished; `fail` stops
//!   without rollback; `rollback` (the default) stops and undoes completed actions in reverse
//!   completion order.
//! - Post-fulfillment actions run after the main ones succeed; their failure fails the request
//!   but does not roll back the main actions.
//! - Retrying a failed request creates a new request (`retry_of`) that reuses the outputs of
//!   actions that succeeded and were not rolled back.
//! - Execution is at-least-once; effects are exactly-once where actions honour the
//!   idempotency key.

mod executor;
mod governance;
mod health;
mod manual;
pub mod plan;
pub mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::action::ActionRegistry;
use crate::authz::{Authorizer, ItemAccessAuthorizer, Permission, Principal};
use crate::catalog::model::{DurationText, LifecycleStatus, OnTimeout, RestrictionPolicy};
use crate::catalog::{Catalog, LoadOptions, LoadedItem};
use crate::clock::{Clock, SystemClock};
use crate::events::{EventSink, LiveEvent, NoopSink};
use crate::form::{FieldError, FormContext, validate_fields};
use crate::lifecycle::RequestState;
use crate::sealing::Keyring;
use crate::secrets::{SecretProvider, StaticSecrets};
use crate::store::{
    ApprovalDecision, AuditRecord, EventKind, Lease, NewRequest, Request, RequestPatch,
    SEALED_FIELD_PREFIX, StateChange, Store, StoreError, Submitted, Write,
};

pub use executor::{SimulatedAction, Simulation};
pub use governance::{ActivePeriod, ApprovalRule, HELD_BY_PERIOD, PinnedItemError, RuleOrigin};
pub use health::{DEFAULT_HEALTH_INTERVAL, HealthTarget};
pub use manual::{TicketReader, TicketSweep};
pub use plan::{Phase, Plan};
pub use policy::{BreakerConfig, BreakerPermit, BreakerState, Breakers, Retry, Verdict};

/// How many requests [`Orchestrator::sweep_approvals`] reads at a time.
pub const SWEEP_PAGE: usize = 200;

/// What [`Orchestrator::rewrap_sealed`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Data keys now wrapped by the current key-encryption key.
    pub rewrapped: u64,
    /// Data keys wrapped by a key-encryption key this process does not hold.
    pub unreadable: u64,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// Actions running at once in this process, over all requests.
    pub max_concurrent_actions: usize,
    /// Actions of one item running at once in this process.
    pub max_concurrent_per_item: Option<usize>,
    /// Default action timeout when neither the action nor the item sets one.
    pub default_timeout: Duration,
    /// Circuit breaker thresholds.
    pub breakers: BreakerConfig,
    /// `system.instance`.
    pub instance: String,
    /// `system.base_url`.
    pub base_url: String,
    /// The `env` scope: only allow-listed variables.
    pub env: Map<String, Value>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease: Duration::from_secs(30),
            max_concurrent_actions: 64,
            max_concurrent_per_item: None,
            default_timeout: Duration::from_secs(600),
            breakers: BreakerConfig::default(),
            instance: "pao".to_string(),
            base_url: "http://127.0.0.1:8080".to_string(),
            env: Map::new(),
        }
    }
}

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such item or request.
    #[error("{0} not found")]
    NotFound(String),
    /// The principal may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Field values are invalid.
    #[error("invalid field values")]
    InvalidFields(Vec<FieldError>),
    /// The call does not fit the request's state or input.
    #[error("{0}")]
    Invalid(String),
    /// A submission option (priority, team, correlation id) is out of its range.
    #[error("{0}")]
    InvalidOption(String),
    /// A part of the caller's input is invalid: `pointer` (a JSON pointer into the input)
    /// locates it.
    #[error("{pointer}: {message}")]
    InvalidInput {
        /// Where in the input.
        pointer: String,
        /// What is wrong.
        message: String,
    },
    /// An input is larger than PAO takes.
    #[error("{0}")]
    TooLarge(String),
    /// An idempotency key was used before for a request of another item.
    #[error("this idempotency key was used for request {request_id} of item `{item_id}`")]
    IdempotencyMismatch {
        /// The earlier request.
        request_id: String,
        /// Its item.
        item_id: String,
    },
    /// A field's options could not be given.
    #[error(transparent)]
    Options(#[from] crate::service::OptionsError),
    /// The submission would exceed the team's quota. The request is stored, rejected, with
    /// this reason.
    #[error("{reason}")]
    QuotaExceeded {
        /// The rejected request.
        request_id: String,
        /// Which limit, how much was used and asked.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// An [`EngineError::InvalidInput`] at `pointer`.
    pub fn input(pointer: impl Into<String>, message: impl Into<String>) -> EngineError {
        EngineError::InvalidInput {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Options of a submission.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Same key, same request.
    pub idempotency_key: Option<String>,
    /// Higher runs first.
    pub priority: i32,
    /// The team the request counts against (default: the requester's first team).
    pub team: Option<String>,
    /// Correlation id (default: a new UUID).
    pub correlation_id: Option<String>,
}

/// How a manual ticket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManualOutcome {
    /// Done: the request completes (after post-fulfillment actions).
    Completed,
    /// Won't do: the request fails with this reason.
    Failed(String),
}

/// The engine.
pub struct Orchestrator {
    catalog: RwLock<Arc<Catalog>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) actions: ActionRegistry,
    pub(crate) secrets: Arc<dyn SecretProvider>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) authz: Arc<dyn Authorizer>,
    pub(crate) breakers: Breakers,
    pub(crate) config: EngineConfig,
    pub(crate) running: Mutex<HashMap<String, CancellationToken>>,
    /// Fired by [`Orchestrator::hand_back_running`]: every run stops and gives its request
    /// back.
    pub(crate) hand_back: CancellationToken,
    /// Seals what a request needs later (its `secret` form fields, rollback inputs) in the
    /// store; see [`crate::sealing`].
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) global_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) item_slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    pub(crate) load_options: Arc<LoadOptions>,
    /// Earlier definitions of items that requests still run, compiled, by content hash.
    pub(crate) pinned: Mutex<HashMap<String, Arc<LoadedItem>>>,
    /// The catalog as each class of callers sees it.
    pub(crate) views: Mutex<crate::service::catalog::ViewCache>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("actions", &self.actions)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Orchestrator`].
pub struct OrchestratorBuilder {
    catalog: Catalog,
    store: Arc<dyn Store>,
    actions: ActionRegistry,
    secrets: Arc<dyn SecretProvider>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn EventSink>,
    authz: Arc<dyn Authorizer>,
    config: EngineConfig,
    load_options: Arc<LoadOptions>,
    keyring: Option<Keyring>,
}

impl OrchestratorBuilder {
    /// The key-encryption keys that seal what requests need later (their `secret` form
    /// fields, the inputs of completed actions a rollback replays) in the store. Every
    /// process sharing a store needs the same current key (and the previous ones until
    /// [`Orchestrator::rewrap_sealed`] has re-wrapped everything). Default: a random key of
    /// this process, so sealed values survive neither a restart nor a move to another
    /// process.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }
    /// The action types.
    pub fn actions(mut self, actions: ActionRegistry) -> Self {
        self.actions = actions;
        self
    }
    /// The secret provider.
    pub fn secrets(mut self, secrets: Arc<dyn SecretProvider>) -> Self {
        self.secrets = secrets;
        self
    }
    /// The clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// The live event sink.
    pub fn events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = sink;
        self
    }
    /// The authorizer.
    pub fn authorizer(mut self, authz: Arc<dyn Authorizer>) -> Self {
        self.authz = authz;
        self
    }
    /// Settings.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }
    /// How item files are loaded (action types, plugin config schemas, the variable engine
    /// with embedder functions): used to check an item file given inline and to evaluate
    /// templates for authors. Default: [`LoadOptions::default`].
    pub fn load_options(mut self, options: Arc<LoadOptions>) -> Self {
        self.load_options = options;
        self
    }
    /// The engine.
    pub fn build(self) -> Arc<Orchestrator> {
        Arc::new(Orchestrator {
            catalog: RwLock::new(Arc::new(self.catalog)),
            store: self.store,
            actions: self.actions,
            secrets: self.secrets,
            clock: self.clock,
            sink: self.sink,
            authz: self.authz,
            breakers: Breakers::new(self.config.breakers.clone()),
            global_slots: Arc::new(tokio::sync::Semaphore::new(
                self.config.max_concurrent_actions.max(1),
            )),
            config: self.config,
            running: Mutex::default(),
            hand_back: CancellationToken::new(),
            keyring: Arc::new(self.keyring.unwrap_or_else(Keyring::ephemeral)),
            item_slots: Mutex::default(),
            pinned: Mutex::default(),
            views: Mutex::default(),
            load_options: self.load_options,
        })
    }
}

fn approval_duration(d: Option<&DurationText>, default: Duration) -> Duration {
    d.and_then(DurationText::get).unwrap_or(default)
}

impl Orchestrator {
    /// Starts building an engine over a catalog and a store.
    pub fn builder(catalog: Catalog, store: Arc<dyn Store>) -> OrchestratorBuilder {
        OrchestratorBuilder {
            catalog,
            store,
            actions: ActionRegistry::new(),
            secrets: Arc::new(StaticSecrets::new()),
            clock: Arc::new(SystemClock),
            sink: Arc::new(NoopSink),
            authz: Arc::new(ItemAccessAuthorizer),
            config: EngineConfig::default(),
            load_options: Arc::new(LoadOptions::default()),
            keyring: None,
        }
    }

    /// Re-wraps the data keys of sealed values that are not wrapped by the current
    /// key-encryption key, `batch` at a time, until none is left or one cannot be opened
    /// (its KEK is not held). Requests keep running meanwhile: a re-wrap replaces a key
    /// only if it is still the one read. Returns how many keys were re-wrapped and how many
    /// could not be (their KEK is held by no one here).
    pub async fn rewrap_sealed(&self, batch: usize) -> Result<RewrapReport, StoreError> {
        let mut report = RewrapReport::default();
        let current = self.keyring.current_id().to_string();
        let mut skipped = std::collections::BTreeSet::new();
        loop {
            let keys = self
                .store
                .keys_not_wrapped_by(&current, batch.max(1) + skipped.len())
                .await?;
            let mut progressed = false;
            for (id, wrapped) in keys {
                if skipped.contains(&id) {
                    continue;
                }
                match self.keyring.rewrap(&id, &wrapped) {
                    Ok(Some(new)) => {
                        if self.store.rewrap_key(&id, &wrapped, &new).await? {
                            report.rewrapped += 1;
                        }
                        progressed = true;
                    }
                    Ok(None) => {}
                    Err(_) => {
                        report.unreadable += 1;
                        skipped.insert(id);
                    }
                }
            }
            if !progressed {
                return Ok(report);
            }
        }
    }

    /// Whether `item`'s templates may read the provider's secret `name`: it must be declared
    /// in the item's `secrets:` list and not be reserved for the server. The loader reports
    /// the same as a diagnostic; this is the run-time check.
    pub(crate) fn secret_grant(
        &self,
        item: &crate::catalog::model::CatalogItem,
        name: &str,
    ) -> Result<(), String> {
        if self.load_options.reserved_secrets.contains(name) {
            return Err(format!(
                "secret `{name}` is reserved for the server and cannot be read from the catalog"
            ));
        }
        if !item.grants_secret(name) {
            return Err(format!(
                "secret `{name}` is not granted to item `{}` (declare it in the item's `secrets:` list)",
                item.metadata.id
            ));
        }
        Ok(())
    }

    /// The fingerprint of the key-encryption key that wraps new data keys.
    pub fn current_kek_id(&self) -> &str {
        self.keyring.current_id()
    }

    /// The catalog in service.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replaces the catalog (after a refresh); running requests keep the item they started with.
    pub fn set_catalog(&self, catalog: Catalog) {
        if let Ok(mut c) = self.catalog.write() {
            *c = Arc::new(catalog);
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Circuit breaker states by target.
    pub fn breaker_states(&self) -> std::collections::BTreeMap<String, BreakerState> {
        self.breakers.snapshot()
    }

    fn item(&self, id: &str) -> Result<Arc<LoadedItem>, EngineError> {
        self.catalog()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("catalog item `{id}`")))
    }

    pub(crate) async fn emit(
        &self,
        request: &Request,
        kind: EventKind,
        lease: Option<&Lease>,
    ) -> Result<(), StoreError> {
        let at = self.clock.now();
        self.store
            .append_event(&request.id, at, kind.clone(), lease)
            .await?;
        self.sink.publish(LiveEvent {
            request_id: request.id.clone(),
            correlation_id: request.correlation_id.clone(),
            at,
            kind,
        });
        Ok(())
    }

    pub(crate) async fn move_to(
        &self,
        request: &Request,
        to: RequestState,
        actor: &str,
        reason: Option<String>,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        let change = StateChange {
            actor: actor.to_string(),
            reason,
            at: self.clock.now(),
        };
        self.commit(
            request,
            lease,
            vec![Write::Transition {
                from: request.state,
                to,
                change,
            }],
        )
        .await
    }

    /// Applies `writes` to `request` in one durable write ([`Store::apply`]) and then
    /// publishes their transitions and events to the live sink. A transition to a terminal
    /// state other than `Completed` returns the request's quota in the same write.
    pub(crate) async fn commit(
        &self,
        request: &Request,
        lease: Option<&Lease>,
        mut writes: Vec<Write>,
    ) -> Result<Request, StoreError> {
        let stored = Stored::of(request, &mut writes);
        let updated = self.store.apply(&request.id, lease, writes).await?;
        self.tell(request, stored);
        Ok(updated)
    }

    /// [`commit`](Self::commit) of a run's final batch, with the claim of the worker loop's
    /// next request in the same store call. The claim is returned whether or not the batch was
    /// written (a failed claim is `None`: the loop claims again as usual).
    pub(crate) async fn commit_then_claim(
        &self,
        request: &Request,
        lease: &Lease,
        mut writes: Vec<Write>,
        worker_id: &str,
    ) -> (Result<Request, StoreError>, Option<(Request, Lease)>) {
        let stored = Stored::of(request, &mut writes);
        let done = self
            .store
            .apply_then_claim(
                lease,
                writes,
                worker_id,
                self.config.lease,
                self.clock.now(),
            )
            .await;
        if done.applied.is_ok() {
            self.tell(request, stored);
        }
        (done.applied, done.claimed.ok().flatten())
    }

    /// What a stored batch means beyond the store: its live events are published.
    fn tell(&self, _request: &Request, stored: Stored) {
        for e in stored.live {
            self.sink.publish(e);
        }
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<(), StoreError> {
        self.store
            .audit(AuditRecord {
                at: self.clock.now(),
                actor: actor.to_string(),
                action: action.to_string(),
                target: target.to_string(),
                detail,
            })
            .await
    }

    pub(crate) fn system_scope(&self) -> Value {
        json!({
            "now": self.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "instance": self.config.instance,
            "version": crate::VERSION,
            "base_url": self.config.base_url,
        })
    }

    /// Submits a request: validates the fields, persists it, checks prerequisites (access,
    /// lifecycle, change freeze, quota) and decides on approval. Returns the request in
    /// `AwaitingApproval`, `Queued` or `Rejected`.
    pub async fn submit(
        &self,
        who: &Principal,
        item_id: &str,
        fields: &Value,
        opts: SubmitOptions,
    ) -> Result<Request, EngineError> {
        Ok(self
            .submit_admitted(who, item_id, fields, opts)
            .await?
            .request)
    }

    /// [`Orchestrator::submit`], telling whether this call created the request or the
    /// idempotency key (used as given) was seen before and the earlier request came back.
    pub async fn submit_admitted(
        &self,
        who: &Principal,
        item_id: &str,
        fields: &Value,
        opts: SubmitOptions,
    ) -> Result<Submitted, EngineError> {
        let item = self.item(item_id)?;
        self.check_submit_options(who, &item, &opts)?;
        self.submit_inner(who, item_id, fields, opts, None).await
    }

    /// What a caller may choose about their own submission: the team it is charged to (one
    /// of theirs, unless they are an admin), a priority above the default (only with
    /// [`Permission::Prioritize`]), and a correlation id of at most 128 printable characters.
    fn check_submit_options(
        &self,
        who: &Principal,
        item: &LoadedItem,
        opts: &SubmitOptions,
    ) -> Result<(), EngineError> {
        if let Some(team) = &opts.team
            && !who.is_admin()
            && !who.teams.iter().any(|t| t == team)
        {
            return Err(EngineError::Forbidden(format!(
                "{} is not in team `{team}` and may not charge a request to it",
                who.id
            )));
        }
        if !(-100..=100).contains(&opts.priority) {
            return Err(EngineError::InvalidOption(
                "`priority` must be between -100 and 100".into(),
            ));
        }
        if opts.priority > 0
            && !self
                .authz
                .allowed(who, Permission::Prioritize, &item.item, None)
        {
            return Err(EngineError::Forbidden(format!(
                "{} may not submit with a priority above 0",
                who.id
            )));
        }
        if let Some(c) = &opts.correlation_id
            && (c.is_empty() || c.len() > 128 || !c.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(EngineError::InvalidOption(
                "a correlation id (`X-Correlation-Id`) is 1 to 128 printable ASCII characters"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn submit_inner(
        &self,
        who: &Principal,
        item_id: &str,
        fields: &Value,
        opts: SubmitOptions,
        retry_of: Option<String>,
    ) -> Result<Submitted, EngineError> {
        let item = self.item(item_id)?;
        if !self
            .authz
            .allowed(who, Permission::Submit, &item.item, None)
        {
            return Err(EngineError::Forbidden(format!(
                "{} may not request `{item_id}`",
                who.id
            )));
        }
        let form_ctx = FormContext {
            user: who.to_scope(),
            request: Value::Null,
            env: Value::Object(self.config.env.clone()),
        };
        let validated =
            validate_fields(&item, fields, &form_ctx).map_err(EngineError::InvalidFields)?;
        let now = self.clock.now();
        let secrets = validated.secrets;
        let mut new = new_request(who, item_id, &item, validated.values, opts, retry_of);
        new.environment = self.request_environment(&item, &new.clone().into_submitted(now))?;
        // The cost, estimated before admission: approval rules read it, approvers see it.
        new.cost = self
            .admission_cost(&new.clone().into_submitted(now), &item)
            .await;
        // Admission is decided before anything is written, and stored with the request in
        // one durable write: audit, prerequisites, quota reservation, the approval decision.
        // The request as it will be stored, for deciding its admission before writing.
        let provisional = new.clone().into_submitted(now);
        let audited = Write::Audit(AuditRecord {
            at: now,
            actor: who.id.clone(),
            action: "request.submit".to_string(),
            target: new.id.clone(),
            detail: json!({ "item": item_id }),
        });
        // The definition admitted, kept so the request runs it whatever the catalog becomes.
        let mut writes = vec![
            audited.clone(),
            Write::KeepItemDefinition {
                hash: item.content_hash.clone(),
                item_id: item_id.to_string(),
                source: item.source.to_string(),
            },
        ];
        // The secret form fields, sealed with the request: any worker of any replica opens
        // them; the end of the request deletes them.
        if !secrets.is_empty() {
            let key = self.keyring.new_data_key(&new.id);
            let values = secrets
                .iter()
                .map(|(k, v)| {
                    let name = format!("{SEALED_FIELD_PREFIX}{k}");
                    let sealed = key.seal(&name, &serde_json::to_vec(v).unwrap_or_default());
                    (name, sealed)
                })
                .collect();
            writes.push(Write::Seal {
                key: key.wrapped().clone(),
                values,
            });
        }
        writes.extend(self.admission(&provisional, &item));
        release_quota_on_failure(&mut writes);
        writes.extend(self.budget_events(&provisional, &writes, now).await?);
        let live = live_events(&provisional, &writes);
        let (submitted, live) = match self
            .store
            .submit_with(new.clone(), &who.id, now, writes)
            .await
        {
            Ok(s) => (s, live),
            // The reservation lost against the team's limit (checked in the same write):
            // the request is stored as rejected, with the reason.
            Err(e @ StoreError::QuotaExceeded { .. }) => {
                let reason = e.to_string();
                match self.store.get(&new.id).await? {
                    // A store whose batches are not atomic kept part of the admission.
                    Some(partial) => {
                        let r = self
                            .move_to(
                                &partial,
                                RequestState::Rejected,
                                "system",
                                Some(reason.clone()),
                                None,
                            )
                            .await?;
                        return Err(EngineError::QuotaExceeded {
                            request_id: r.id,
                            reason,
                        });
                    }
                    None => {
                        let at = self.clock.now();
                        let step = |from, to, reason| {
                            executor::state_change(from, to, "system", reason, at)
                        };
                        let writes = vec![
                            audited,
                            step(RequestState::Submitted, RequestState::Prerequisites, None),
                            step(
                                RequestState::Prerequisites,
                                RequestState::Rejected,
                                Some(reason.clone()),
                            ),
                        ];
                        let live = live_events(&provisional, &writes);
                        let stored = self.store.submit_with(new, &who.id, now, writes).await?;
                        if !stored.created {
                            // The idempotency key was seen before: the earlier request.
                            return Ok(stored);
                        }
                        for e in live {
                            self.sink.publish(e);
                        }
                        return Err(EngineError::QuotaExceeded {
                            request_id: stored.request.id,
                            reason,
                        });
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        if !submitted.created {
            // The idempotency key was seen before: the earlier request, nothing new.
            return Ok(submitted);
        }
        for e in live {
            self.sink.publish(e);
        }
        Ok(submitted)
    }

    /// The admission of a new request, decided without writing: `Prerequisites` (lifecycle,
    /// restricted change periods, quota), `Validation`, then the approval decision, ending in
    /// `AwaitingApproval`, `Queued` or `Rejected`. The quota reservation is one of the writes,
    /// so the store checks it against the limit atomically.
    fn admission(&self, request: &Request, item: &Arc<LoadedItem>) -> Vec<Write> {
        use RequestState as S;
        let at = self.clock.now();
        let step = |from, to, reason: Option<String>| {
            executor::state_change(from, to, "system", reason, at)
        };
        let mut w = vec![step(S::Submitted, S::Prerequisites, None)];
        // Lifecycle.
        match item.item.lifecycle.as_ref().and_then(|l| l.status) {
            Some(LifecycleStatus::Retired) => {
                let reason = format!("item `{}` is retired", item.id());
                w.push(step(S::Prerequisites, S::Rejected, Some(reason)));
                return w;
            }
            Some(LifecycleStatus::Deprecated) => {
                let replacement = item
                    .item
                    .lifecycle
                    .as_ref()
                    .and_then(|l| l.deprecation.as_ref())
                    .and_then(|d| d.replacement.clone());
                let message = match replacement {
                    Some(r) => format!("item `{}` is deprecated; use `{r}`", item.id()),
                    None => format!("item `{}` is deprecated", item.id()),
                };
                w.push(Write::Event {
                    at,
                    kind: EventKind::Log {
                        action_id: None,
                        level: "warn".into(),
                        message,
                    },
                });
            }
            _ => {}
        }
        // A maintenance window in progress: the request is admitted, and told.
        for window in crate::catalog::maintenance::windows(&item.item, at) {
            if let Some(end) = window.ends_at {
                w.push(Write::Event {
                    at,
                    kind: EventKind::Log {
                        action_id: None,
                        level: "warn".into(),
                        message: format!(
                            "item `{}` is in a maintenance window until {}",
                            item.id(),
                            end.to_rfc3339()
                        ),
                    },
                });
            }
        }
        // Restricted change periods.
        let mut force_approval = false;
        if let Some(active) = self.active_restriction(item, request.environment.as_deref(), at) {
            match active.period.policy {
                RestrictionPolicy::Refuse => {
                    w.push(step(S::Prerequisites, S::Rejected, Some(active.message())));
                    return w;
                }
                RestrictionPolicy::RequireApproval => force_approval = true,
            }
        }
        // Quota.
        let scopes = executor::Scopes::for_admission(self, request, item);
        let cost = executor::cost_scope(request.cost.as_ref());
        let ctx = scopes.context().with(crate::vars::Scope::Cost, &cost);
        if let Some(q) = item
            .item
            .fulfillment
            .prerequisites
            .as_ref()
            .and_then(|p| p.quota.as_ref())
        {
            let amount = match item.compiled.sections.get("/fulfillment/prerequisites") {
                Some(t) => t
                    .render(&ctx)
                    .ok()
                    .and_then(|v| v.pointer("/quota/amount").cloned())
                    .and_then(|v| {
                        v.as_u64()
                            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    }),
                None => match &q.amount {
                    crate::catalog::model::IntOrTemplate::Int(i) => u64::try_from(*i).ok(),
                    crate::catalog::model::IntOrTemplate::Template(s) => s.parse().ok(),
                },
            };
            let Some(amount) = amount else {
                let reason = "quota amount is not a whole number".to_string();
                w.push(step(S::Prerequisites, S::Rejected, Some(reason)));
                return w;
            };
            w.push(Write::ReserveQuota {
                resource: q.resource.clone(),
                amount,
                default_limit: self.declared_quota(&request.team, &q.resource),
            });
        }
        w.push(step(S::Prerequisites, S::Validation, None));
        // Approval.
        let rule = self.approval_rule(item);
        let approval = rule.as_ref().map(|r| &r.approval);
        let needed = force_approval
            || match (approval, rule.as_ref().and_then(|r| r.required_when())) {
                (Some(_), Some(expr)) => match expr.eval_bool(&ctx) {
                    Ok(b) => b,
                    Err(e) => {
                        let reason = format!("approval rule failed: {}", e.message());
                        w.push(step(S::Validation, S::Rejected, Some(reason)));
                        return w;
                    }
                },
                (Some(_), None) => true,
                (None, _) => false,
            };
        if needed {
            let timeout = approval_duration(
                approval.and_then(|a| a.timeout.as_ref()),
                Duration::from_secs(72 * 3600),
            );
            let due = at + chrono::Duration::from_std(timeout).unwrap_or_default();
            w.push(Write::Patch(RequestPatch {
                approval_due: Some(Some(due)),
                ..RequestPatch::default()
            }));
            let reason =
                force_approval.then(|| "restricted change period: approval required".to_string());
            w.push(step(S::Validation, S::AwaitingApproval, reason));
        } else {
            w.push(step(S::Validation, S::Queued, None));
        }
        w
    }

    async fn request(&self, id: &str) -> Result<Request, EngineError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("request {id}")))
    }

    /// Whether `who` may approve or reject `request`: a designated approver (team, role or
    /// user; escalation teams once escalated), not the requester unless self-approval is
    /// allowed, or an admin. Lists of pending approvals use it.
    pub fn may_decide(&self, who: &Principal, request: &Request) -> bool {
        self.item(&request.item_id)
            .map(|item| self.may_approve(who, &item, request).is_ok())
            .unwrap_or(false)
    }

    /// Whether `who` may decide on `request`.
    fn may_approve(
        &self,
        who: &Principal,
        item: &Arc<LoadedItem>,
        request: &Request,
    ) -> Result<(), EngineError> {
        let rule = self.approval_rule(item);
        let Some(approval) = rule.as_ref().map(|r| &r.approval) else {
            if who.is_admin() {
                return Ok(());
            }
            return Err(EngineError::Forbidden(
                "only admins decide on requests without approvers".into(),
            ));
        };
        let a = &approval.approvers;
        if who.id == request.requester.id && a.allow_self_approval != Some(true) {
            return Err(EngineError::Forbidden(
                "you cannot approve your own request".into(),
            ));
        }
        let mut teams: Vec<&String> = a.teams.iter().flatten().collect();
        if request.escalated {
            teams.extend(approval.escalation.iter().flat_map(|e| e.teams.iter()));
        }
        let ok = who.is_admin()
            || teams.iter().any(|t| who.teams.contains(t))
            || a.roles.iter().flatten().any(|r| who.roles.contains(r))
            || a.users
                .iter()
                .flatten()
                .any(|u| *u == who.id || who.email.as_deref() == Some(u));
        if !ok {
            return Err(EngineError::Forbidden(format!(
                "{} is not an approver of this request",
                who.id
            )));
        }
        let owner = Some((request.requester.id.as_str(), request.team.as_str()));
        if !self
            .authz
            .allowed(who, Permission::Approve, &item.item, owner)
        {
            return Err(EngineError::Forbidden(format!(
                "the authorizer does not let {} decide on this request",
                who.id
            )));
        }
        Ok(())
    }

    /// Approves; with enough approvals the request is queued.
    pub async fn approve(
        &self,
        who: &Principal,
        request_id: &str,
        comment: Option<String>,
    ) -> Result<Request, EngineError> {
        self.decide(who, request_id, true, comment).await
    }

    /// Rejects, with a mandatory reason.
    pub async fn reject(
        &self,
        who: &Principal,
        request_id: &str,
        reason: &str,
    ) -> Result<Request, EngineError> {
        if reason.trim().is_empty() {
            return Err(EngineError::Invalid("a rejection needs a reason".into()));
        }
        self.decide(who, request_id, false, Some(reason.to_string()))
            .await
    }

    async fn decide(
        &self,
        who: &Principal,
        request_id: &str,
        approved: bool,
        reason: Option<String>,
    ) -> Result<Request, EngineError> {
        let request = self.request(request_id).await?;
        if request.state != RequestState::AwaitingApproval {
            return Err(EngineError::Invalid(format!(
                "request {request_id} is {}, not awaiting approval",
                request.state
            )));
        }
        let item = self.item(&request.item_id)?;
        self.may_approve(who, &item, &request)?;
        let decisions = self
            .store
            .record_decision(ApprovalDecision {
                request_id: request_id.to_string(),
                approver: who.id.clone(),
                approved,
                reason: reason.clone(),
                at: self.clock.now(),
            })
            .await?;
        self.emit(
            &request,
            EventKind::ApprovalDecided {
                approver: who.id.clone(),
                approved,
                reason: reason.clone(),
            },
            None,
        )
        .await?;
        self.audit(
            &who.id,
            if approved {
                "approval.approve"
            } else {
                "approval.reject"
            },
            request_id,
            json!({ "reason": reason }),
        )
        .await?;
        let (to, why) = if !approved {
            (RequestState::Rejected, reason)
        } else {
            let needed = self.approval_rule(&item).map_or(1, |r| r.min_approvals());
            if decisions.iter().filter(|d| d.approved).count() < needed {
                return Ok(request);
            }
            (RequestState::Queued, Some("approved".into()))
        };
        match self.move_to(&request, to, &who.id, why, None).await {
            Ok(r) => Ok(r),
            // Another decision, recorded at the same time, moved the request first. An
            // approval that met an approval is done: the request is approved either way.
            Err(StoreError::Conflict { .. }) => {
                let now = self.request(request_id).await?;
                if approved && now.state != RequestState::Rejected {
                    Ok(now)
                } else {
                    Err(EngineError::Invalid(format!(
                        "request {request_id} was {} by a decision made at the same time; \
                         yours is recorded in its approvals",
                        if now.state == RequestState::Rejected {
                            "rejected"
                        } else {
                            "approved"
                        }
                    )))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies approval timeouts and escalations that are due; returns how many requests changed.
    ///
    /// It reads only requests whose deadline is near: due now, or within the longest time an
    /// item of the catalog escalates before its deadline; in pages of [`SWEEP_PAGE`].
    pub async fn sweep_approvals(&self) -> Result<usize, EngineError> {
        let now = self.clock.now();
        // Escalation comes `after` the request entered approval, `timeout - after` before
        // its deadline: requests due within the longest such lead may escalate now.
        let lead = self
            .catalog()
            .items()
            .filter_map(|i| self.approval_rule(i))
            .filter_map(|rule| {
                let approval = &rule.approval;
                let esc = approval.escalation.as_ref()?;
                let timeout =
                    approval_duration(approval.timeout.as_ref(), Duration::from_secs(72 * 3600));
                let after = approval_duration(Some(&esc.after), timeout);
                Some(timeout.saturating_sub(after))
            })
            .max()
            .unwrap_or_default();
        let by = chrono::Duration::from_std(lead)
            .ok()
            .and_then(|lead| now.checked_add_signed(lead))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut changed = 0;
        let mut after = None;
        loop {
            let page = self
                .store
                .approvals_due(by, after.as_ref(), SWEEP_PAGE)
                .await?;
            let last = page.len() < SWEEP_PAGE;
            if let Some(r) = page.last()
                && let Some(due) = r.approval_due
            {
                after = Some((due, r.id.clone()));
            }
            changed += self.sweep_page(now, page).await?;
            if last {
                return Ok(changed);
            }
        }
    }

    /// [`Orchestrator::sweep_approvals`] for one page of requests.
    async fn sweep_page(
        &self,
        now: DateTime<Utc>,
        waiting: Vec<Request>,
    ) -> Result<usize, EngineError> {
        let mut changed = 0;
        for request in waiting {
            let Ok(item) = self.item(&request.item_id) else {
                continue;
            };
            let Some(rule) = self.approval_rule(&item) else {
                continue;
            };
            let approval = &rule.approval;
            let Some(due) = request.approval_due else {
                continue;
            };
            let timeout =
                approval_duration(approval.timeout.as_ref(), Duration::from_secs(72 * 3600));
            let entered = due - chrono::Duration::from_std(timeout).unwrap_or_default();
            if let Some(esc) = &approval.escalation
                && !request.escalated
            {
                let after = approval_duration(Some(&esc.after), timeout);
                if now >= entered + chrono::Duration::from_std(after).unwrap_or_default()
                    || (now >= due && approval.on_timeout == Some(OnTimeout::Escalate))
                {
                    let mut patch = RequestPatch {
                        escalated: Some(true),
                        ..RequestPatch::default()
                    };
                    if now >= due {
                        patch.approval_due = Some(Some(
                            now + chrono::Duration::from_std(timeout).unwrap_or_default(),
                        ));
                    }
                    let r = self.store.update(&request.id, patch, None).await?;
                    self.emit(
                        &r,
                        EventKind::Escalated {
                            teams: esc.teams.clone(),
                        },
                        None,
                    )
                    .await?;
                    changed += 1;
                    continue;
                }
            }
            if now >= due {
                let reason = "approval timed out".to_string();
                match self
                    .move_to(
                        &request,
                        RequestState::Rejected,
                        "system",
                        Some(reason),
                        None,
                    )
                    .await
                {
                    Ok(_) | Err(StoreError::Conflict { .. }) => changed += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(changed)
    }

    /// Cancels a request. Before work starts it ends at once; while actions run, no new action
    /// starts, running ones see their cancellation token, and completed ones are rolled back
    /// per policy by the worker that holds the request.
    pub async fn cancel(
        &self,
        who: &Principal,
        request_id: &str,
        reason: Option<String>,
    ) -> Result<Request, EngineError> {
        for _ in 0..5 {
            let request = self.request(request_id).await?;
            let item = self.item(&request.item_id)?;
            if !self.authz.allowed(
                who,
                Permission::Cancel,
                &item.item,
                Some((&request.requester.id, &request.team)),
            ) {
                return Err(EngineError::Forbidden(format!(
                    "{} may not cancel request {request_id}",
                    who.id
                )));
            }
            if request.state.is_terminal() {
                return Err(EngineError::Invalid(format!(
                    "request {request_id} has ended ({})",
                    request.state
                )));
            }
            let running = matches!(
                request.state,
                RequestState::InProgress | RequestState::PostFulfillment
            ) && request.waiting_for.is_none();
            // A manual request waiting on its ticket: a worker closes the ticket, then
            // cancels the request.
            let ticket_open = request.state == RequestState::InProgress
                && request
                    .waiting_for
                    .as_deref()
                    .is_some_and(|w| w.starts_with("manual:"));
            if running || ticket_open {
                let r = self
                    .store
                    .update(
                        request_id,
                        RequestPatch {
                            cancel_requested: Some(true),
                            waiting_for: ticket_open.then_some(None),
                            ..RequestPatch::default()
                        },
                        None,
                    )
                    .await?;
                if let Ok(map) = self.running.lock()
                    && let Some(token) = map.get(request_id)
                {
                    token.cancel();
                }
                self.audit(
                    &who.id,
                    "request.cancel",
                    request_id,
                    json!({ "reason": reason }),
                )
                .await?;
                return Ok(r);
            }
            match self
                .move_to(
                    &request,
                    RequestState::Cancelled,
                    &who.id,
                    reason.clone(),
                    None,
                )
                .await
            {
                Ok(r) => {
                    self.audit(
                        &who.id,
                        "request.cancel",
                        request_id,
                        json!({ "reason": reason }),
                    )
                    .await?;
                    return Ok(r);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Invalid(format!(
            "request {request_id} keeps changing; try again"
        )))
    }

    /// Retries a failed request as a new request that resumes from the failed action,
    /// optionally with changed field values.
    pub async fn retry(
        &self,
        who: &Principal,
        request_id: &str,
        fields: Option<Value>,
    ) -> Result<Request, EngineError> {
        let request = self.request(request_id).await?;
        if request.state != RequestState::Failed {
            return Err(EngineError::Invalid(format!(
                "only failed requests can be retried; {request_id} is {}",
                request.state
            )));
        }
        let item = self.item(&request.item_id)?;
        if !self.authz.allowed(
            who,
            Permission::Cancel,
            &item.item,
            Some((&request.requester.id, &request.team)),
        ) {
            return Err(EngineError::Forbidden(format!(
                "{} may not retry request {request_id}",
                who.id
            )));
        }
        let mut merged = request.fields.as_object().cloned().unwrap_or_default();
        if let Some(Value::Object(changes)) = fields {
            merged.extend(changes);
        }
        // The retry is the caller's own request: submitted as them (their item access, their
        // name on it and in the audit, so they cannot approve it themselves), charged to the
        // original's team, and above the default priority only if they may raise it.
        let priority = if self
            .authz
            .allowed(who, Permission::Prioritize, &item.item, None)
        {
            request.priority
        } else {
            request.priority.min(0)
        };
        let opts = SubmitOptions {
            priority,
            team: Some(request.team.clone()),
            correlation_id: Some(request.correlation_id.clone()),
            idempotency_key: None,
        };
        self.submit_inner(
            who,
            &request.item_id,
            &Value::Object(merged),
            opts,
            Some(request.id.clone()),
        )
        .await
        .map(|s| s.request)
    }

    /// Ends a manual-mode request whose ticket was resolved (the JIRA webhook calls this).
    pub async fn resolve_manual(
        &self,
        request_id: &str,
        outcome: ManualOutcome,
        actor: &str,
    ) -> Result<Request, EngineError> {
        let request = self.request(request_id).await?;
        if request.state != RequestState::InProgress || request.waiting_for.is_none() {
            return Err(EngineError::Invalid(format!(
                "request {request_id} is not waiting for a manual ticket"
            )));
        }
        let item = self.item(&request.item_id)?;
        let request = self
            .store
            .update(
                request_id,
                RequestPatch {
                    waiting_for: Some(None),
                    ..RequestPatch::default()
                },
                None,
            )
            .await?;
        let r = match outcome {
            ManualOutcome::Completed
                if item
                    .item
                    .fulfillment
                    .post_fulfillment
                    .as_ref()
                    .is_some_and(|p| !p.is_empty()) =>
            {
                self.move_to(
                    &request,
                    RequestState::PostFulfillment,
                    actor,
                    Some("ticket resolved".into()),
                    None,
                )
                .await?
            }
            ManualOutcome::Completed => {
                self.move_to(
                    &request,
                    RequestState::Completed,
                    actor,
                    Some("ticket resolved".into()),
                    None,
                )
                .await?
            }
            ManualOutcome::Failed(reason) => {
                self.store
                    .update(
                        request_id,
                        RequestPatch {
                            error: Some(reason.clone()),
                            ..RequestPatch::default()
                        },
                        None,
                    )
                    .await?;
                self.move_to(&request, RequestState::Failed, actor, Some(reason), None)
                    .await?
            }
        };
        self.audit(
            actor,
            "request.resolve_manual",
            request_id,
            json!({ "state": r.state }),
        )
        .await?;
        Ok(r)
    }

    /// Claims and runs requests until none is claimable; returns how many it ran. For tests
    /// and one-shot tools.
    pub async fn run_until_idle(self: &Arc<Self>, worker_id: &str) -> Result<usize, EngineError> {
        let mut n = 0;
        let mut next = None;
        loop {
            let (request, lease) = match next.take() {
                Some(claimed) => claimed,
                None => match self
                    .store
                    .claim(worker_id, self.config.lease, self.clock.now())
                    .await?
                {
                    Some(claimed) => claimed,
                    None => return Ok(n),
                },
            };
            next = self
                .clone()
                .execute_then_claim(request, lease, worker_id)
                .await;
            n += 1;
        }
    }

    /// A worker loop: claim, run, repeat, until `shutdown` is cancelled (or runs are handed
    /// back: [`Orchestrator::hand_back_running`]). The run in flight is finished, or handed
    /// back, before it returns; a request claimed but not started is released.
    pub async fn run_worker(self: Arc<Self>, worker_id: String, shutdown: CancellationToken) {
        let mut last_sweep: Option<DateTime<Utc>> = None;
        let mut last_release: Option<tokio::time::Instant> = None;
        // The request claimed together with the end of the previous one.
        let mut next: Option<(Request, Lease)> = None;
        // Once runs are handed back, claiming more would only hand them back too.
        let stop = async || {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.hand_back.cancelled() => {}
            }
        };
        while !shutdown.is_cancelled() && !self.hand_back.is_cancelled() {
            // Approval deadlines and escalations are due by the clock, not by any event.
            let now = self.clock.now();
            if last_sweep.is_none_or(|t| now - t >= chrono::Duration::seconds(60)) {
                last_sweep = Some(now);
                let _ = self.sweep_approvals().await;
            }
            // Requests held by a restricted period start within a second of its end: the
            // check reads only the held requests.
            if last_release.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_release = Some(tokio::time::Instant::now());
                let _ = self.release_held().await;
            }
            let claimed = match next.take() {
                Some(claimed) => Ok(Some(claimed)),
                None => {
                    self.store
                        .claim(&worker_id, self.config.lease, self.clock.now())
                        .await
                }
            };
            match claimed {
                Ok(Some((request, lease))) => {
                    next = self
                        .clone()
                        .execute_then_claim(request, lease, &worker_id)
                        .await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.store.wait_for_work(Duration::from_secs(1)) => {}
                        _ = stop() => {}
                    }
                }
                Err(_) => {
                    tokio::select! {
                        _ = self.clock.sleep(Duration::from_secs(1)) => {}
                        _ = stop() => {}
                    }
                }
            }
        }
        // Claimed but not started: give it back, so another worker need not wait out the lease.
        if let Some((_, lease)) = next {
            let _ = self.store.release(&lease).await;
        }
    }

    /// Stops every run of this engine where it is and gives its request back: what the run
    /// has recorded is stored, its lease released, and another worker or replica resumes the
    /// request from its journal at once (an action cut off mid-call runs again there, with
    /// the same idempotency key). Worker loops stop claiming. For a shutdown whose drain time
    /// ran out; it cannot be undone.
    pub fn hand_back_running(&self) {
        self.hand_back.cancel();
    }

    /// Requests this engine is running now.
    pub fn running_count(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Context scopes of a request for a `Context`.
    pub fn request_scope(request: &Request) -> Value {
        json!({
            "id": request.id,
            "created_at": request.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "environment": request.environment,
            "priority": request.priority,
            "correlation_id": request.correlation_id,
            "team": request.team,
        })
    }

    /// The time now, per the engine's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// A batch about to be committed: what [`Orchestrator::tell`] does once it is stored.
struct Stored {
    live: Vec<LiveEvent>,
}

impl Stored {
    /// Completes `writes` (a quota release when they end the request other than `Completed`)
    /// and notes what to tell once they are stored.
    fn of(request: &Request, writes: &mut Vec<Write>) -> Stored {
        release_quota_on_failure(writes);
        Stored {
            live: live_events(request, writes),
        }
    }
}

/// Appends a quota release to a batch that ends the request other than `Completed`.
fn release_quota_on_failure(writes: &mut Vec<Write>) {
    let end = Write::final_state(writes).filter(|to| to.is_terminal());
    if end.is_some_and(|to| to != RequestState::Completed)
        && !writes.iter().any(|w| matches!(w, Write::ReleaseQuota))
    {
        writes.push(Write::ReleaseQuota);
    }
}

/// What the live sink hears about a batch once it is stored.
fn live_events(request: &Request, writes: &[Write]) -> Vec<LiveEvent> {
    writes
        .iter()
        .filter_map(|w| {
            let (at, kind) = match w {
                Write::Transition { from, to, change } => (
                    change.at,
                    EventKind::StateChanged {
                        from: Some(*from),
                        to: *to,
                        actor: change.actor.clone(),
                        reason: change.reason.clone(),
                    },
                ),
                Write::Event { at, kind } => (*at, kind.clone()),
                _ => return None,
            };
            Some(LiveEvent {
                request_id: request.id.clone(),
                correlation_id: request.correlation_id.clone(),
                at,
                kind,
            })
        })
        .collect()
}

/// A new request of `who` for `item` (`item_id`) with its validated field values: for the team of the
/// options, or `who`'s first team, or `who`. Its environment is worked out by
/// [`Orchestrator::request_environment`].
fn new_request(
    who: &Principal,
    item_id: &str,
    item: &LoadedItem,
    values: Value,
    opts: SubmitOptions,
    retry_of: Option<String>,
) -> NewRequest {
    let team = opts
        .team
        .clone()
        .or_else(|| who.teams.first().cloned())
        .unwrap_or_else(|| who.id.clone());
    NewRequest {
        id: uuid::Uuid::new_v4().to_string(),
        item_id: item_id.to_string(),
        item_version: item.version().to_string(),
        item_hash: item.content_hash.clone(),
        fields: values,
        requester: who.clone(),
        team,
        environment: None,
        priority: opts.priority,
        idempotency_key: opts.idempotency_key,
        correlation_id: opts
            .correlation_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        retry_of,
        cost: None,
    }
}
