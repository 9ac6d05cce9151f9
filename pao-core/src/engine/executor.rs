//! Running one claimed request: the action DAG with retries, timeouts, breakers, journaling,
//! cancellation and rollback; and simulation, which walks the same plan without calling
//! anything.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Digest;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::plan::{Phase, Plan};
use super::policy::Retry;
use super::{EngineError, Orchestrator};
use crate::action::{
    ActionContext, ActionError, ActionLogger, ActionOutput, ErrorClass, IdempotencyKey,
};
use crate::authz::Principal;
use crate::catalog::LoadedItem;
use crate::catalog::model::{ActionSpec, DurationText, FulfillmentMode, OnFailure};
use crate::lifecycle::RequestState;
use crate::secrets::SecretError;
use crate::store::{
    AttemptOutcome, AttemptRecord, EventKind, Lease, NewRequest, Request, RequestPatch,
    RollbackStatus, StateChange, StoreError, Write,
};
use crate::vars::{Context, Engine, LocatedVarError, Scope, ValueTemplate};

/// The owned values behind a request's template context.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scopes {
    user: Value,
    metadata: Value,
    request: Value,
    system: Value,
    env: Value,
    fields: Value,
    computed: Value,
    secrets: Value,
    /// Every secret value, for redaction.
    pub secret_values: Vec<String>,
}

impl Scopes {
    pub(crate) fn context(&self) -> Context<'_> {
        Context::new()
            .with(Scope::User, &self.user)
            .with(Scope::Metadata, &self.metadata)
            .with(Scope::Request, &self.request)
            .with(Scope::System, &self.system)
            .with(Scope::Env, &self.env)
            .with(Scope::Fields, &self.fields)
            .with(Scope::Computed, &self.computed)
            .with(Scope::Secrets, &self.secrets)
    }

    fn base(engine: &Orchestrator, request: &Request, item: &LoadedItem) -> Scopes {
        Scopes {
            user: request.requester.to_scope(),
            metadata: serde_json::to_value(&item.item.metadata).unwrap_or(Value::Null),
            request: Orchestrator::request_scope(request),
            system: engine.system_scope(),
            env: Value::Object(engine.config.env.clone()),
            fields: request.fields.clone(),
            ..Scopes::default()
        }
    }

    /// Scopes for admission (no secrets; computed values evaluated where they can be).
    pub(crate) fn for_admission(
        engine: &Orchestrator,
        request: &Request,
        item: &LoadedItem,
    ) -> Scopes {
        let mut s = Scopes::base(engine, request, item);
        let _ = s.compute(item);
        s
    }

    fn compute(&mut self, item: &LoadedItem) -> Result<(), String> {
        let mut computed = Map::new();
        for (name, t) in &item.compiled.computed {
            self.computed = Value::Object(computed.clone());
            let v = t
                .render_value(&self.context())
                .map_err(|e| format!("computed `{name}`: {}", e.message()))?;
            computed.insert(name.clone(), v);
        }
        self.computed = Value::Object(computed);
        Ok(())
    }

    async fn for_run(
        engine: &Orchestrator,
        request: &Request,
        item: &LoadedItem,
    ) -> Result<Scopes, ScopesError> {
        let mut s = Scopes::base(engine, request, item);
        // Fetch only the secrets the item's templates read.
        let mut names = BTreeSet::new();
        let mut collect = |refs: Vec<crate::vars::Reference>| {
            for r in refs {
                if r.scope == Scope::Secrets
                    && let Some(n) = r.path.first()
                {
                    names.insert(n.clone());
                }
            }
        };
        let c = &item.compiled;
        for (_, t) in &c.computed {
            collect(t.references());
        }
        for a in c.actions.values() {
            a.config
                .for_each_template(&mut |_, t| collect(t.references()));
            if let Some(rb) = &a.rollback {
                rb.for_each_template(&mut |_, t| collect(t.references()));
            }
            if let Some(w) = &a.when {
                collect(w.references());
            }
        }
        for t in c.sections.values() {
            t.for_each_template(&mut |_, t| collect(t.references()));
        }
        let mut secrets = Map::new();
        for name in names {
            match engine.secrets.get(&name).await {
                Ok(v) => {
                    s.secret_values.push(v.clone());
                    secrets.insert(name, Value::String(v));
                }
                Err(SecretError::Unavailable(why)) => {
                    return Err(ScopesError::SecretsUnavailable(format!(
                        "secret `{name}`: {why}"
                    )));
                }
                // A missing or refused secret: the template that reads it fails, for good.
                Err(SecretError::NotFound(_) | SecretError::Denied(_)) => {}
            }
        }
        // Secret form fields of this request, kept in memory by the engine that accepted it.
        let from_form = engine
            .field_secrets
            .lock()
            .ok()
            .and_then(|m| m.get(&request.id).cloned())
            .unwrap_or_default();
        for (k, v) in from_form {
            if let Some(text) = v.as_str() {
                s.secret_values.push(text.to_string());
            }
            secrets.insert(k, v);
        }
        s.secrets = Value::Object(secrets);
        s.compute(item).map_err(ScopesError::Failed)?;
        Ok(s)
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secret_values.iter().filter(|s| s.len() >= 3) {
            out = out.replace(s.as_str(), "[REDACTED]");
        }
        out
    }
}

/// Why a run's scopes could not be built.
enum ScopesError {
    /// A template cannot be rendered: the request fails.
    Failed(String),
    /// The secret provider did not answer: the request waits and is tried again.
    SecretsUnavailable(String),
}

/// How long a run waits, holding its lease, after the secret provider failed, before it gives
/// the request back to be claimed again.
pub(crate) const SECRETS_UNAVAILABLE_WAIT: Duration = Duration::from_secs(10);

fn redact_value(v: &Value, secrets: &[String]) -> Value {
    match v {
        Value::String(s) => {
            let mut out = s.clone();
            for x in secrets.iter().filter(|x| x.len() >= 3) {
                out = out.replace(x.as_str(), "[REDACTED]");
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_value(x, secrets)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), redact_value(x, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// How one node ended.
#[derive(Debug, Clone)]
enum NodeResult {
    Succeeded {
        outputs: Value,
        input: Value,
        state: Value,
    },
    Skipped,
    Failed(ActionError),
    /// The lease was lost: another worker owns the request now.
    Abandoned,
}

/// The writes of one run that wait for its next durable write.
///
/// A run writes when it must: an attempt's start before the action is called (the journal
/// entry an idempotent resume relies on), a failure at once, and the end of the request.
/// What may wait — the move to `InProgress`, an action's log lines, the success of an action
/// the phase loop ran alone in its own task (the next start or the final transition follows
/// with no task switch in between) — rides along with that write in the same transaction, so a one-action request costs three
/// durable writes (claim, start, finish + end) instead of eight. In a worker loop the claim of
/// the next request rides along with the end ([`Store::apply_then_claim`]): two round trips a
/// request on a busy PostgreSQL store.
#[derive(Default)]
pub(crate) struct RunWrites {
    pending: std::sync::Mutex<Vec<Write>>,
    /// A terminal transition was written (the lease went with it).
    ended: std::sync::atomic::AtomicBool,
    /// The worker loop's id: the run's final write claims its next request.
    worker_id: String,
    /// The request claimed with the final write, for the worker loop to run next.
    claimed: std::sync::Mutex<Option<(Request, Lease)>>,
}

impl RunWrites {
    fn push(&self, w: Write) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(w);
        }
    }

    fn push_all(&self, ws: impl IntoIterator<Item = Write>) {
        if let Ok(mut p) = self.pending.lock() {
            p.extend(ws);
        }
    }

    fn take(&self) -> Vec<Write> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.pending.lock().map(|p| p.is_empty()).unwrap_or(true)
    }
}

/// A transition write by `actor`.
pub(crate) fn state_change(
    from: RequestState,
    to: RequestState,
    actor: &str,
    reason: Option<String>,
    at: chrono::DateTime<chrono::Utc>,
) -> Write {
    Write::Transition {
        from,
        to,
        change: StateChange {
            actor: actor.to_string(),
            reason,
            at,
        },
    }
}

/// Shared, cheap-to-clone data for node tasks.
#[derive(Clone)]
struct RunCtx {
    engine: Arc<Orchestrator>,
    item: Arc<LoadedItem>,
    request: Request,
    lease: Lease,
    scopes: Arc<Scopes>,
    cancel: CancellationToken,
    journal: Arc<Vec<AttemptRecord>>,
    writes: Arc<RunWrites>,
}

impl RunCtx {
    fn context<'a>(&'a self, outputs: &'a Value) -> Context<'a> {
        self.scopes.context().with(Scope::Outputs, outputs)
    }

    /// Appends an event with the run's next write.
    fn emit(&self, kind: EventKind) {
        self.writes.push(Write::Event {
            at: self.engine.clock.now(),
            kind,
        });
    }

    /// Writes what waits, with `extra`, now.
    async fn flush_with(&self, extra: Vec<Write>) -> Result<Request, StoreError> {
        self.engine
            .commit_run(&self.writes, &self.request, &self.lease, extra)
            .await
    }

    /// Writes what waits, if anything does.
    async fn flush(&self) -> Result<(), StoreError> {
        if !self.writes.is_empty() {
            self.flush_with(Vec::new()).await?;
        }
        Ok(())
    }

    fn defaults_retry(&self) -> Option<&crate::catalog::model::RetryPolicy> {
        self.item
            .item
            .fulfillment
            .defaults
            .as_ref()
            .and_then(|d| d.retry.as_ref())
    }

    fn timeout(&self, spec_timeout: Option<&DurationText>) -> Duration {
        spec_timeout
            .or_else(|| {
                self.item
                    .item
                    .fulfillment
                    .defaults
                    .as_ref()
                    .and_then(|d| d.timeout.as_ref())
            })
            .and_then(DurationText::get)
            .unwrap_or(self.engine.config.default_timeout)
    }

    /// Runs one action (or its rollback) with retries. Returns the output on success, with
    /// the journal record of the attempt that produced it (still `Running`: the caller
    /// writes its end).
    async fn attempt_loop(
        &self,
        spec: &ActionSpec,
        type_name: &str,
        input: &Value,
        rollback: Option<&Value>,
    ) -> Result<(ActionOutput, AttemptRecord), ActionError> {
        let engine = &self.engine;
        let is_rollback = rollback.is_some();
        let Some(action) = engine.actions.get(type_name).cloned() else {
            return Err(ActionError::permanent(format!(
                "no action of type `{type_name}` is registered"
            )));
        };
        let key = if is_rollback {
            IdempotencyKey::for_rollback(&self.request.id, &spec.id)
        } else {
            IdempotencyKey::for_action(&self.request.id, &spec.id)
        };
        let retry = Retry::resolve(spec.retry.as_ref(), self.defaults_retry());
        let timeout = self.timeout(spec.timeout.as_ref());
        let target = action.target(input);
        let input_hash = hex::encode(sha2::Sha256::digest(
            serde_json::to_vec(input).unwrap_or_default(),
        ));
        let stored_input = redact_value(input, &self.scopes.secret_values);
        let mut attempt = self
            .journal
            .iter()
            .filter(|a| {
                a.action_id == spec.id
                    && a.rollback == is_rollback
                    && a.request_id == self.request.id
            })
            .map(|a| a.attempt)
            .max()
            .unwrap_or(0)
            + 1;
        let mut current: Option<AttemptRecord> = None;
        loop {
            if self.cancel.is_cancelled() && !is_rollback {
                return Err(ActionError::cancelled());
            }
            let now = engine.clock.now();
            let result: Result<ActionOutput, ActionError> = if let Err(wait) =
                engine.breakers.try_acquire(&target, now)
            {
                Err(
                    ActionError::retryable(format!("circuit breaker for `{target}` is open"))
                        .with_retry_after(wait),
                )
            } else {
                let record = AttemptRecord {
                    request_id: self.request.id.clone(),
                    action_id: spec.id.clone(),
                    rollback: is_rollback,
                    attempt,
                    idempotency_key: key.clone(),
                    input_hash: input_hash.clone(),
                    input: stored_input.clone(),
                    started_at: now,
                    finished_at: None,
                    outcome: AttemptOutcome::Running,
                };
                // The journal entry is durable before the action is called, with what
                // waited for it.
                let started = Write::StartAttempt(record.clone());
                let event = Write::Event {
                    at: now,
                    kind: EventKind::ActionStarted {
                        action_id: spec.id.clone(),
                        action_type: Some(type_name.to_string()),
                        attempt,
                        rollback: is_rollback,
                    },
                };
                if self.flush_with(vec![started, event]).await.is_err() {
                    return Err(lease_lost());
                }
                current = Some(record);
                let child = if is_rollback {
                    CancellationToken::new()
                } else {
                    self.cancel.child_token()
                };
                let ctx = ActionContext {
                    request_id: self.request.id.clone(),
                    action_id: spec.id.clone(),
                    attempt,
                    idempotency_key: key.clone(),
                    deadline: Some(now + chrono::Duration::from_std(timeout).unwrap_or_default()),
                    cancel: child.clone(),
                    log: ActionLogger::new(self.scopes.secret_values.clone()),
                    secrets: engine.secrets.clone(),
                    dry_run: false,
                };
                let _slot = engine.global_slots.clone().acquire_owned().await.ok();
                let _item_slot = match engine.item_semaphore(&self.item.item.metadata.id) {
                    Some(s) => s.acquire_owned().await.ok(),
                    None => None,
                };
                let call = async {
                    match rollback {
                        Some(state) if spec.rollback.is_none() => action
                            .rollback(&ctx, input, state)
                            .await
                            .map(|_| ActionOutput::default()),
                        _ => action.execute(&ctx, input).await,
                    }
                };
                let r = tokio::select! {
                    r = call => r,
                    _ = engine.clock.sleep(timeout) => {
                        child.cancel();
                        Err(ActionError::retryable(format!("timed out after {}s", timeout.as_secs_f64())))
                    }
                    _ = child.cancelled() => Err(ActionError::cancelled()),
                };
                for line in ctx.log.drain() {
                    self.emit(EventKind::Log {
                        action_id: Some(spec.id.clone()),
                        level: line.level,
                        message: line.message,
                    });
                }
                match &r {
                    Ok(_) => engine.breakers.record(&target, true, engine.clock.now()),
                    Err(e) if e.class == ErrorClass::Retryable => {
                        engine.breakers.record(&target, false, engine.clock.now())
                    }
                    Err(_) => {}
                }
                r
            };
            let now = engine.clock.now();
            match (result, current.take()) {
                (Ok(out), Some(record)) => return Ok((out, record)),
                (Ok(_), None) => return Err(lease_lost()),
                (Err(mut e), started) => {
                    e.message = self.scopes.redact(&e.message);
                    let will_retry = e.is_retryable() && attempt < retry.max_attempts;
                    // A failure is written at once (with what waited), so watchers see it
                    // during the backoff.
                    let mut writes = Vec::new();
                    if let Some(mut record) = started {
                        record.outcome = AttemptOutcome::Failed { error: e.clone() };
                        record.finished_at = Some(now);
                        writes.push(Write::FinishAttempt(record));
                    }
                    writes.push(Write::Event {
                        at: now,
                        kind: EventKind::ActionFailed {
                            action_id: spec.id.clone(),
                            action_type: Some(type_name.to_string()),
                            attempt,
                            rollback: is_rollback,
                            class: e.class,
                            error: e.message.clone(),
                            will_retry,
                        },
                    });
                    if self.flush_with(writes).await.is_err() {
                        return Err(lease_lost());
                    }
                    if !will_retry {
                        return Err(e);
                    }
                    let delay = retry.delay(attempt, key.as_str(), e.retry_after);
                    if is_rollback {
                        engine.clock.sleep(delay).await;
                    } else {
                        tokio::select! {
                            _ = engine.clock.sleep(delay) => {}
                            _ = self.cancel.cancelled() => return Err(ActionError::cancelled()),
                        }
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Runs one plan node: `when`, journal reuse, render, attempts, outputs.
    /// Runs one plan node. `inline`: the phase loop awaits this node alone, so its success
    /// may wait for the run's next write; a node running beside others writes it at once.
    async fn run_node(&self, spec: &ActionSpec, outputs: &Value, inline: bool) -> NodeResult {
        let compiled = self.item.compiled.actions.get(&spec.id);
        let ctx = self.context(outputs);
        if let Some(when) = compiled.and_then(|c| c.when.as_ref()) {
            match when.eval_bool(&ctx) {
                Ok(false) => {
                    self.emit(EventKind::ActionSkipped {
                        action_id: spec.id.clone(),
                        reason: format!("when `{}` is false", when.source()),
                    });
                    return NodeResult::Skipped;
                }
                Ok(true) => {}
                Err(e) => {
                    return NodeResult::Failed(ActionError::permanent(format!(
                        "when: {}",
                        self.scopes.redact(e.message())
                    )));
                }
            }
        }
        // A succeeded attempt in the journal (this request's, or the failed request it retries)
        // is reused: the action does not run again.
        if let Some(done) = self.journal.iter().rev().find(|a| {
            a.action_id == spec.id
                && !a.rollback
                && matches!(a.outcome, AttemptOutcome::Succeeded { .. })
        }) {
            let rolled_back = self.journal.iter().any(|a| {
                a.request_id == done.request_id
                    && a.action_id == spec.id
                    && a.rollback
                    && matches!(a.outcome, AttemptOutcome::Succeeded { .. })
            });
            if !rolled_back && let AttemptOutcome::Succeeded { output, outputs } = &done.outcome {
                return NodeResult::Succeeded {
                    outputs: outputs.clone(),
                    input: done.input.clone(),
                    state: output.rollback_state.clone(),
                };
            }
        }
        let input = match compiled.map(|c| render_config(&c.config, &spec.config, &ctx)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                return NodeResult::Failed(ActionError::permanent(format!(
                    "config{}: {}",
                    e.pointer,
                    self.scopes.redact(e.error.message())
                )));
            }
            None => spec.config.clone(),
        };
        let type_name = spec.action_type.to_string();
        match self.attempt_loop(spec, &type_name, &input, None).await {
            Ok((out, mut record)) => {
                let attempt = record.attempt;
                let mut rendered = Map::new();
                if let Some(c) = compiled {
                    let oc = ctx.with(Scope::Result, &out.result);
                    for (k, t) in &c.outputs {
                        match t.render_value(&oc) {
                            Ok(v) => {
                                rendered.insert(k.clone(), v);
                            }
                            Err(e) => {
                                let err = ActionError::permanent(format!(
                                    "outputs.{k}: {}",
                                    self.scopes.redact(e.message())
                                ));
                                record.outcome = AttemptOutcome::Failed { error: err.clone() };
                                record.finished_at = Some(self.engine.clock.now());
                                if self
                                    .flush_with(vec![Write::FinishAttempt(record)])
                                    .await
                                    .is_err()
                                {
                                    return NodeResult::Abandoned;
                                }
                                return NodeResult::Failed(err);
                            }
                        }
                    }
                }
                let outputs = Value::Object(rendered);
                record.outcome = AttemptOutcome::Succeeded {
                    output: out.clone(),
                    outputs: outputs.clone(),
                };
                let now = self.engine.clock.now();
                record.finished_at = Some(now);
                let finished = [
                    Write::FinishAttempt(record),
                    Write::Event {
                        at: now,
                        kind: EventKind::ActionSucceeded {
                            action_id: spec.id.clone(),
                            action_type: Some(type_name.clone()),
                            attempt,
                            rollback: false,
                        },
                    },
                ];
                if inline {
                    self.writes.push_all(finished);
                } else if self.flush_with(finished.into()).await.is_err() {
                    return NodeResult::Abandoned;
                }
                NodeResult::Succeeded {
                    outputs,
                    input,
                    state: out.rollback_state,
                }
            }
            Err(e) if e.message == LEASE_LOST => NodeResult::Abandoned,
            Err(e) => NodeResult::Failed(e),
        }
    }
}

const LEASE_LOST: &str = "lease lost";

fn lease_lost() -> ActionError {
    ActionError::permanent(LEASE_LOST)
}

/// Aborts a task when dropped: the heartbeat must stop with the run it renews the lease for,
/// also when the worker's future is dropped mid-run (an aborted task, a shutdown `select!`);
/// otherwise it renews the lease forever and no other worker can take the request over.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a phase ended.
enum PhaseEnd {
    Done,
    Failed { error: String, rollback: bool },
    Cancelled,
    Abandoned,
}

impl Orchestrator {
    pub(crate) fn item_semaphore(&self, item_id: &str) -> Option<Arc<tokio::sync::Semaphore>> {
        let limit = self.config.max_concurrent_per_item?;
        let mut map = self.item_slots.lock().ok()?;
        Some(
            map.entry(item_id.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(limit.max(1))))
                .clone(),
        )
    }

    /// Runs a claimed request as far as it can go. Never panics on bad input: every problem
    /// ends the request `Failed` with the reason, or leaves it for another worker when the
    /// lease is lost.
    ///
    /// The write that ends the request also claims the next request of the worker loop
    /// `worker_id` ([`Store::apply_then_claim`]); that request and its lease are returned, and
    /// the loop must run or release it.
    pub(crate) async fn execute_then_claim(
        self: Arc<Self>,
        request: Request,
        lease: Lease,
        worker_id: &str,
    ) -> Option<(Request, Lease)> {
        let cancel = CancellationToken::new();
        if let Ok(mut m) = self.running.lock() {
            m.insert(request.id.clone(), cancel.clone());
        }
        if request.cancel_requested {
            cancel.cancel();
        }
        let lease_state = Arc::new(tokio::sync::Mutex::new(lease.clone()));
        // Fired when the lease may have ended without this worker hearing of it (the store
        // was unreachable for a whole lease): the run stops where it is.
        let abandon = CancellationToken::new();
        let heartbeat = {
            let engine = self.clone();
            let cancel = cancel.clone();
            let abandon = abandon.clone();
            let lease_state = lease_state.clone();
            let id = request.id.clone();
            AbortOnDrop(tokio::spawn(async move {
                engine.renew_lease(&id, lease_state, cancel, abandon).await;
            }))
        };
        let id = request.id.clone();
        let writes = Arc::new(RunWrites {
            worker_id: worker_id.to_string(),
            ..RunWrites::default()
        });
        let shell = Request {
            fields: Value::Null,
            ..request.clone()
        };
        let ran = tokio::select! {
            _ = self.clone().execute_inner(request, lease, cancel, writes.clone()) => true,
            _ = abandon.cancelled() => false,
        };
        drop(heartbeat);
        if let Ok(mut m) = self.running.lock() {
            m.remove(&id);
        }
        if !ran {
            // As a crashed worker would: nothing more is written under a lease another worker
            // may hold by now, and nothing is given back. The journal lets the next holder
            // resume.
            return None;
        }
        let current = lease_state.lock().await.clone();
        // Whatever still waits (a path that ended without a final write).
        if !writes.is_empty() {
            let _ = self.commit_run(&writes, &shell, &current, Vec::new()).await;
        }
        // Give the request back if it is still live (manual waits, lost races); a terminal
        // transition dropped the lease already.
        if !writes.ended.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.store.release(&current).await;
        }
        writes.claimed.lock().ok().and_then(|mut c| c.take())
    }

    /// Renews a run's lease every third of its length until the run ends (the caller aborts
    /// this task). A lost lease cancels the run (`cancel`): its writes are fenced off from
    /// then on. A store that cannot be reached is no lost lease, and renewals go on; but once
    /// no renewal has succeeded for a whole lease, another worker may hold the request, and
    /// `abandon` stops the run at once, whatever it was doing.
    ///
    /// The lease ends `lease` after the store last renewed it, by the store's clock. This
    /// worker counts the same length on its own clock from before it sent that renewal (from
    /// the start of the run for the claim), so it gives up no later than the store ends the
    /// lease, whatever the two clocks read.
    async fn renew_lease(
        &self,
        id: &str,
        lease_state: Arc<tokio::sync::Mutex<Lease>>,
        cancel: CancellationToken,
        abandon: CancellationToken,
    ) {
        let length = self.config.lease;
        let every = length / 3;
        let mut renewed = self.clock.now();
        loop {
            let deadline = renewed + chrono::Duration::from_std(length).unwrap_or_default();
            let left = |now: chrono::DateTime<chrono::Utc>| {
                (deadline - now).to_std().unwrap_or(Duration::ZERO)
            };
            self.clock.sleep(every.min(left(self.clock.now()))).await;
            let sent = self.clock.now();
            if sent >= deadline {
                abandon.cancel();
                return;
            }
            let current = lease_state.lock().await.clone();
            let beat = tokio::select! {
                r = self.store.heartbeat(&current, length, sent) => Some(r),
                _ = self.clock.sleep(left(sent)) => None,
            };
            match beat {
                Some(Ok(l)) => {
                    *lease_state.lock().await = l;
                    renewed = sent;
                }
                Some(Err(StoreError::LeaseLost(_))) => {
                    cancel.cancel();
                    return;
                }
                // A store hiccup (a dropped connection) is no lost lease, and no reason to
                // cancel the request: renew on the next beat, until the deadline.
                Some(Err(_)) => continue,
                None => {
                    abandon.cancel();
                    return;
                }
            }
            let asked = tokio::select! {
                r = self.store.get(id) => r.ok().flatten().is_some_and(|r| r.cancel_requested),
                _ = self.clock.sleep(left(self.clock.now())) => false,
            };
            if asked {
                cancel.cancel();
            }
        }
    }

    /// Writes what waits in `writes` with `extra`, in one durable write under the lease.
    async fn commit_run(
        &self,
        writes: &RunWrites,
        request: &Request,
        lease: &Lease,
        extra: Vec<Write>,
    ) -> Result<Request, StoreError> {
        let mut all = writes.take();
        all.extend(extra);
        let ends = Write::final_state(&all).is_some_and(|to| to.is_terminal());
        let r = if ends {
            let (r, next) = self
                .commit_then_claim(request, lease, all, &writes.worker_id)
                .await;
            if let (Some(next), Ok(mut slot)) = (next, writes.claimed.lock()) {
                *slot = Some(next);
            }
            r?
        } else {
            self.commit(request, Some(lease), all).await?
        };
        if ends {
            writes
                .ended
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(r)
    }

    /// Moves the request to `to` under the lease, with what waits.
    async fn move_run(
        &self,
        writes: &RunWrites,
        request: &Request,
        lease: &Lease,
        to: RequestState,
        reason: Option<String>,
    ) -> Result<Request, StoreError> {
        let actor = format!("worker:{}", lease.worker_id);
        let change = state_change(request.state, to, &actor, reason, self.clock.now());
        self.commit_run(writes, request, lease, vec![change]).await
    }

    async fn fail(
        &self,
        writes: &RunWrites,
        request: &Request,
        lease: &Lease,
        reason: String,
    ) -> Result<Request, StoreError> {
        let actor = format!("worker:{}", lease.worker_id);
        let patch = Write::Patch(RequestPatch {
            error: Some(reason.clone()),
            ..RequestPatch::default()
        });
        let change = state_change(
            request.state,
            RequestState::Failed,
            &actor,
            Some(reason),
            self.clock.now(),
        );
        self.commit_run(writes, request, lease, vec![patch, change])
            .await
    }

    async fn execute_inner(
        self: Arc<Self>,
        mut request: Request,
        lease: Lease,
        cancel: CancellationToken,
        writes: Arc<RunWrites>,
    ) -> Result<(), StoreError> {
        let actor = format!("worker:{}", lease.worker_id);
        // A queued request never ran: it has no attempts of its own. Its move to
        // `InProgress` waits for the run's first write.
        let fresh = request.state == RequestState::Queued;
        if fresh {
            writes.push(state_change(
                RequestState::Queued,
                RequestState::InProgress,
                &actor,
                None,
                self.clock.now(),
            ));
            request.state = RequestState::InProgress;
        }
        let Some(item) = self.catalog().get(&request.item_id).cloned() else {
            let reason = format!(
                "catalog item `{}` is no longer in the catalog",
                request.item_id
            );
            self.fail(&writes, &request, &lease, reason).await?;
            return Ok(());
        };
        let scopes = match Scopes::for_run(&self, &request, &item).await {
            Ok(s) => Arc::new(s),
            Err(ScopesError::Failed(e)) => {
                self.fail(&writes, &request, &lease, e).await?;
                return Ok(());
            }
            Err(ScopesError::SecretsUnavailable(e)) => {
                // An outage of the secret provider is no fault of the request: wait a little,
                // then give it back (the caller releases the lease) to be claimed again. The
                // wait is not cut short by a cancel, so that a re-claim cannot spin.
                if fresh {
                    writes.push(Write::Event {
                        at: self.clock.now(),
                        kind: EventKind::Log {
                            action_id: None,
                            level: "warn".into(),
                            message: format!(
                                "the secret provider is unavailable ({e}); the request will be tried again"
                            ),
                        },
                    });
                }
                self.clock.sleep(SECRETS_UNAVAILABLE_WAIT).await;
                return Ok(());
            }
        };
        // The journal: this request's attempts, and those of the requests it retries.
        let mut journal = if fresh {
            Vec::new()
        } else {
            self.store.attempts(&request.id).await?
        };
        let mut prior = request.retry_of.clone();
        let mut hops = 0;
        while let Some(pid) = prior {
            if hops > 20 {
                break;
            }
            hops += 1;
            let mut older = self.store.attempts(&pid).await?;
            older.append(&mut journal);
            journal = older;
            prior = self.store.get(&pid).await?.and_then(|r| r.retry_of);
        }
        let rc = RunCtx {
            engine: self.clone(),
            item: item.clone(),
            request: request.clone(),
            lease: lease.clone(),
            scopes,
            cancel: cancel.clone(),
            journal: Arc::new(journal),
            writes: writes.clone(),
        };
        if item.item.fulfillment.mode == FulfillmentMode::Manual
            && request.state == RequestState::InProgress
        {
            return self.run_manual(&rc, request).await;
        }
        let plan = Plan::of(&item.item);
        let mut done: BTreeMap<usize, NodeResult> = BTreeMap::new();
        let mut order: Vec<usize> = Vec::new();
        if request.state == RequestState::InProgress {
            match self
                .run_phase(&rc, &plan, Phase::Main, &mut done, &mut order)
                .await
            {
                PhaseEnd::Done => {
                    let has_post = plan.nodes.iter().any(|n| n.phase == Phase::Post);
                    if !has_post {
                        self.move_run(&writes, &request, &lease, RequestState::Completed, None)
                            .await?;
                        return Ok(());
                    }
                    request = self
                        .move_run(
                            &writes,
                            &request,
                            &lease,
                            RequestState::PostFulfillment,
                            None,
                        )
                        .await?;
                }
                PhaseEnd::Abandoned => return Ok(()),
                PhaseEnd::Cancelled => {
                    let complete = self.roll_back(&rc, &plan, &done, &order, true).await;
                    if complete.is_none() {
                        return Ok(());
                    }
                    self.move_run(
                        &writes,
                        &request,
                        &lease,
                        RequestState::Cancelled,
                        Some("cancelled".into()),
                    )
                    .await?;
                    return Ok(());
                }
                PhaseEnd::Failed { error, rollback } => {
                    if rollback
                        && self
                            .roll_back(&rc, &plan, &done, &order, false)
                            .await
                            .is_none()
                    {
                        return Ok(());
                    }
                    self.fail(&writes, &request, &lease, error).await?;
                    return Ok(());
                }
            }
        }
        if request.state == RequestState::PostFulfillment {
            // Main outputs are needed by post actions: take them from the journal.
            match self
                .run_phase(&rc, &plan, Phase::Post, &mut done, &mut order)
                .await
            {
                PhaseEnd::Done => {
                    self.move_run(&writes, &request, &lease, RequestState::Completed, None)
                        .await?;
                }
                PhaseEnd::Abandoned => {}
                PhaseEnd::Cancelled => {
                    self.move_run(
                        &writes,
                        &request,
                        &lease,
                        RequestState::Cancelled,
                        Some("cancelled".into()),
                    )
                    .await?;
                }
                PhaseEnd::Failed { error, .. } => {
                    self.fail(
                        &writes,
                        &request,
                        &lease,
                        format!("post-fulfillment: {error}"),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn run_manual(&self, rc: &RunCtx, request: Request) -> Result<(), StoreError> {
        const TICKET: &str = "manual-ticket";
        let lease = &rc.lease;
        if request.waiting_for.is_some() {
            return Ok(());
        }
        let Some(manual) = rc.item.item.fulfillment.manual.as_ref() else {
            self.fail(
                &rc.writes,
                &request,
                lease,
                "manual mode without a ticket definition".into(),
            )
            .await?;
            return Ok(());
        };
        let ctx = rc.context(&Value::Null);
        let ticket = match rc.item.compiled.sections.get("/fulfillment/manual") {
            Some(t) => match t.render(&ctx) {
                Ok(v) => v.get("jira").cloned().unwrap_or(Value::Null),
                Err(e) => {
                    self.fail(
                        &rc.writes,
                        &request,
                        lease,
                        format!("manual ticket{}: {}", e.pointer, e.error.message()),
                    )
                    .await?;
                    return Ok(());
                }
            },
            None => serde_json::to_value(&manual.jira).unwrap_or(Value::Null),
        };
        let spec = ActionSpec {
            id: TICKET.to_string(),
            action_type: crate::catalog::model::ActionType::Jira,
            config: ticket.clone(),
            depends_on: None,
            when: None,
            timeout: None,
            retry: None,
            on_failure: None,
            rollback: None,
            outputs: None,
            description: None,
            change: None,
        };
        let reused = rc.journal.iter().rev().find_map(|a| match &a.outcome {
            AttemptOutcome::Succeeded { output, .. } if a.action_id == TICKET && !a.rollback => {
                Some(output.clone())
            }
            _ => None,
        });
        let out = match reused {
            Some(o) => Ok((o, None)),
            None => rc
                .attempt_loop(&spec, "jira", &ticket, None)
                .await
                .map(|(out, record)| (out, Some(record))),
        };
        match out {
            Ok((out, record)) => {
                let key = out
                    .result
                    .get("key")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| "ticket".to_string());
                let mut writes = Vec::new();
                if let Some(mut record) = record {
                    record.outcome = AttemptOutcome::Succeeded {
                        output: out.clone(),
                        outputs: Value::Null,
                    };
                    record.finished_at = Some(self.clock.now());
                    writes.push(Write::FinishAttempt(record));
                }
                writes.push(Write::Patch(RequestPatch {
                    waiting_for: Some(Some(format!("manual:{key}"))),
                    ..RequestPatch::default()
                }));
                writes.push(Write::Event {
                    at: self.clock.now(),
                    kind: EventKind::Log {
                        action_id: Some(TICKET.into()),
                        level: "info".into(),
                        message: format!("waiting for ticket {key} to be resolved"),
                    },
                });
                rc.flush_with(writes).await?;
            }
            Err(e) if e.message == LEASE_LOST => {}
            Err(e) => {
                self.fail(
                    &rc.writes,
                    &request,
                    lease,
                    format!("creating the manual ticket failed: {}", e.message),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Runs the nodes of one phase; `done` and `order` collect results and completion order.
    async fn run_phase(
        &self,
        rc: &RunCtx,
        plan: &Plan,
        phase: Phase,
        done: &mut BTreeMap<usize, NodeResult>,
        order: &mut Vec<usize>,
    ) -> PhaseEnd {
        // Nodes of earlier phases count as finished, with their outputs from the journal.
        let mut outputs = Map::new();
        for (i, n) in plan.nodes.iter().enumerate() {
            let earlier = phase == Phase::Post && n.phase == Phase::Main;
            if earlier && !done.contains_key(&i) {
                let prev = rc.journal.iter().rev().find_map(|a| match &a.outcome {
                    AttemptOutcome::Succeeded { outputs, output }
                        if a.action_id == n.spec.id && !a.rollback =>
                    {
                        Some((
                            outputs.clone(),
                            output.rollback_state.clone(),
                            a.input.clone(),
                        ))
                    }
                    _ => None,
                });
                let r = match prev {
                    Some((o, state, input)) => NodeResult::Succeeded {
                        outputs: o,
                        input,
                        state,
                    },
                    None => NodeResult::Skipped,
                };
                done.insert(i, r);
            }
        }
        // Resuming after a crash: what this request already finished in this phase stays
        // finished. Successes are reused in completion order (for rollback), failures for good
        // are not tried again and stop the phase again, so a crash in the middle of a rollback
        // or a cancellation resumes it instead of re-running undone actions.
        let mut failure: Option<(String, bool)> = None;
        let mut resumed = Vec::new();
        for (i, n) in plan.nodes.iter().enumerate() {
            if n.phase != phase || done.contains_key(&i) {
                continue;
            }
            let last = rc.journal.iter().enumerate().rev().find(|(_, a)| {
                a.request_id == rc.request.id && a.action_id == n.spec.id && !a.rollback
            });
            let Some((pos, a)) = last else { continue };
            let max_attempts =
                Retry::resolve(n.spec.retry.as_ref(), rc.defaults_retry()).max_attempts;
            let r = match &a.outcome {
                AttemptOutcome::Succeeded { output, outputs } => NodeResult::Succeeded {
                    outputs: outputs.clone(),
                    input: a.input.clone(),
                    state: output.rollback_state.clone(),
                },
                AttemptOutcome::Failed { error }
                    if error.class == ErrorClass::Permanent
                        || (error.class == ErrorClass::Retryable && a.attempt >= max_attempts) =>
                {
                    NodeResult::Failed(error.clone())
                }
                _ => continue,
            };
            resumed.push((a.finished_at, pos, i, r));
        }
        resumed.sort_by_key(|(at, pos, ..)| (*at, *pos));
        for (_, _, i, r) in resumed {
            let n = &plan.nodes[i];
            match (&r, n.on_failure()) {
                (NodeResult::Succeeded { .. }, _) => order.push(i),
                (NodeResult::Failed(_), OnFailure::Continue) => {}
                (NodeResult::Failed(e), policy) => {
                    failure.get_or_insert((
                        format!("action `{}` failed: {}", n.spec.id, e.message),
                        policy == OnFailure::Rollback,
                    ));
                }
                _ => {}
            }
            done.insert(i, r);
        }
        for (i, r) in done.iter() {
            if let NodeResult::Succeeded { outputs: o, .. } = r {
                outputs.insert(plan.nodes[*i].spec.id.clone(), o.clone());
            }
        }
        // Tasks share one copy of the outputs so far (copied on write only while an older
        // task still reads it), and one copy of the run context.
        let mut outputs = Arc::new(Value::Object(outputs));
        let shared = Arc::new(rc.clone());
        let mut running: JoinSet<(usize, NodeResult)> = JoinSet::new();
        let mut in_flight: BTreeSet<usize> = BTreeSet::new();
        // Nodes of this phase not started yet, in plan order: each pass looks at these only.
        let mut pending: Vec<usize> = (0..plan.nodes.len())
            .filter(|&i| plan.nodes[i].phase == phase && !done.contains_key(&i))
            .collect();
        let mut abandoned = false;
        loop {
            let stopping = failure.is_some() || rc.cancel.is_cancelled() || abandoned;
            let mut ready = Vec::new();
            if !stopping {
                pending.retain(|&i| {
                    let n = &plan.nodes[i];
                    if !n.deps.iter().all(|d| done.contains_key(d)) {
                        return true;
                    }
                    if let Some(g) = n.group
                        && let Some(max) = plan.groups[g].max_concurrency
                        && in_flight
                            .iter()
                            .filter(|&&j| plan.nodes[j].group == Some(g))
                            .count()
                            >= max as usize
                    {
                        return true;
                    }
                    in_flight.insert(i);
                    ready.push(i);
                    false
                });
            }
            let (i, result) = if let [i] = ready[..]
                && in_flight.len() == 1
            {
                // The only action that can run now runs in this task: its success then
                // waits for the write that follows at once (the next start, or the phase's
                // end), with no task switch between the call's return and that write.
                let call = AssertUnwindSafe(rc.run_node(&plan.nodes[i].spec, &outputs, true));
                match call.catch_unwind().await {
                    Ok(r) => (i, r),
                    Err(_) => {
                        in_flight.remove(&i);
                        failure.get_or_insert(("an action panicked".to_string(), true));
                        continue;
                    }
                }
            } else {
                for i in ready {
                    let rc = shared.clone();
                    let spec = plan.nodes[i].spec.clone();
                    let snapshot = outputs.clone();
                    running.spawn(async move { (i, rc.run_node(&spec, &snapshot, false).await) });
                }
                let Some(joined) = running.join_next().await else {
                    break;
                };
                let Ok(joined) = joined else {
                    // A panicking action is a failed action, not a crashed worker.
                    failure.get_or_insert(("an action panicked".to_string(), true));
                    continue;
                };
                joined
            };
            in_flight.remove(&i);
            let node = &plan.nodes[i];
            match &result {
                NodeResult::Succeeded { outputs: o, .. } => {
                    if let Value::Object(m) = Arc::make_mut(&mut outputs) {
                        m.insert(node.spec.id.clone(), o.clone());
                    }
                    order.push(i);
                }
                NodeResult::Skipped => {}
                NodeResult::Abandoned => abandoned = true,
                NodeResult::Failed(e) if e.class == ErrorClass::Cancelled => {}
                NodeResult::Failed(e) => match node.on_failure() {
                    OnFailure::Continue => {
                        rc.emit(EventKind::Log {
                            action_id: Some(node.spec.id.clone()),
                            level: "warn".into(),
                            message: format!(
                                "failed, continuing (on_failure: continue): {}",
                                e.message
                            ),
                        });
                    }
                    OnFailure::Fail => {
                        failure.get_or_insert((
                            format!("action `{}` failed: {}", node.spec.id, e.message),
                            false,
                        ));
                    }
                    OnFailure::Rollback => {
                        failure.get_or_insert((
                            format!("action `{}` failed: {}", node.spec.id, e.message),
                            true,
                        ));
                    }
                },
            }
            done.insert(i, result);
            // What waits (skips, logs) is not held back while other actions still run.
            if !running.is_empty() && !abandoned && rc.flush().await.is_err() {
                abandoned = true;
            }
        }
        if abandoned {
            return PhaseEnd::Abandoned;
        }
        if let Some((error, rollback)) = failure {
            return PhaseEnd::Failed { error, rollback };
        }
        if rc.cancel.is_cancelled() {
            return PhaseEnd::Cancelled;
        }
        PhaseEnd::Done
    }

    /// Undoes completed actions in reverse completion order. Returns `None` when the lease was
    /// lost, `Some(complete)` otherwise.
    async fn roll_back(
        &self,
        rc: &RunCtx,
        plan: &Plan,
        done: &BTreeMap<usize, NodeResult>,
        order: &[usize],
        cancelling: bool,
    ) -> Option<bool> {
        let targets: Vec<usize> = order
            .iter()
            .rev()
            .copied()
            .filter(|&i| !cancelling || plan.nodes[i].on_failure() == OnFailure::Rollback)
            .filter(|&i| {
                let n = &plan.nodes[i];
                n.spec.rollback.is_some()
                    || self
                        .actions
                        .get(&n.spec.action_type.to_string())
                        .is_some_and(|a| a.describe().supports_rollback)
            })
            // Undone before a crash: not twice.
            .filter(|&i| {
                !rc.journal.iter().any(|a| {
                    a.request_id == rc.request.id
                        && a.action_id == plan.nodes[i].spec.id
                        && a.rollback
                        && matches!(a.outcome, AttemptOutcome::Succeeded { .. })
                })
            })
            .collect();
        if targets.is_empty() && rc.request.rollback == RollbackStatus::None {
            return Some(true);
        }
        let started = Write::Patch(RequestPatch {
            rollback: Some(RollbackStatus::InProgress),
            ..RequestPatch::default()
        });
        if rc.flush_with(vec![started]).await.is_err() {
            return None;
        }
        let mut outputs = Map::new();
        for (i, r) in done {
            if let NodeResult::Succeeded { outputs: o, .. } = r {
                outputs.insert(plan.nodes[*i].spec.id.clone(), o.clone());
            }
        }
        let outputs = Value::Object(outputs);
        let mut complete = true;
        for i in targets {
            let n = &plan.nodes[i];
            let Some(NodeResult::Succeeded { input, state, .. }) = done.get(&i) else {
                continue;
            };
            let (type_name, rb_input) = match (
                &n.spec.rollback,
                rc.item
                    .compiled
                    .actions
                    .get(&n.spec.id)
                    .and_then(|c| c.rollback.as_ref()),
            ) {
                (Some(spec), Some(t)) => match t.render(&rc.context(&outputs)) {
                    Ok(v) => (spec.action_type.to_string(), v),
                    Err(e) => {
                        complete = false;
                        rc.emit(EventKind::ActionFailed {
                            action_id: n.spec.id.clone(),
                            action_type: Some(n.spec.rollback.as_ref().map_or_else(
                                || n.spec.action_type.to_string(),
                                |r| r.action_type.to_string(),
                            )),
                            attempt: 0,
                            rollback: true,
                            class: ErrorClass::Permanent,
                            error: format!("rollback config{}: {}", e.pointer, e.error.message()),
                            will_retry: false,
                        });
                        continue;
                    }
                },
                _ => (n.spec.action_type.to_string(), input.clone()),
            };
            let result = if n.spec.rollback.is_some() {
                rc.attempt_loop(&n.spec, &type_name, &rb_input, Some(&Value::Null))
                    .await
            } else {
                rc.attempt_loop(&n.spec, &type_name, &rb_input, Some(state))
                    .await
            };
            match result {
                Ok((out, mut record)) => {
                    let attempt = record.attempt;
                    record.outcome = AttemptOutcome::Succeeded {
                        output: out,
                        outputs: Value::Null,
                    };
                    record.finished_at = Some(self.clock.now());
                    let event = Write::Event {
                        at: self.clock.now(),
                        kind: EventKind::ActionSucceeded {
                            action_id: n.spec.id.clone(),
                            action_type: Some(type_name.clone()),
                            attempt,
                            rollback: true,
                        },
                    };
                    if rc
                        .flush_with(vec![Write::FinishAttempt(record), event])
                        .await
                        .is_err()
                    {
                        return None;
                    }
                }
                Err(e) if e.message == LEASE_LOST => return None,
                Err(_) => complete = false,
            }
        }
        let status = if complete {
            RollbackStatus::Complete
        } else {
            RollbackStatus::Incomplete
        };
        rc.flush_with(vec![Write::Patch(RequestPatch {
            rollback: Some(status),
            ..RequestPatch::default()
        })])
        .await
        .ok()?;
        Some(complete)
    }

    /// Predicts what a request would do, calling no action: the plan, each action's rendered
    /// input (secrets shown as `[secret:name]`, earlier outputs from the actions' sample
    /// outputs), which `when` conditions hold, whether approval is needed, and problems.
    pub async fn simulate(
        &self,
        who: &Principal,
        item_id: &str,
        fields: &Value,
    ) -> Result<Simulation, EngineError> {
        let item = self.item(item_id)?;
        let form_ctx = crate::form::FormContext {
            user: who.to_scope(),
            ..Default::default()
        };
        let validated = crate::form::validate_fields(&item, fields, &form_ctx)
            .map_err(EngineError::InvalidFields)?;
        let now = self.clock.now();
        let fake = NewRequest {
            id: "simulation".into(),
            item_id: item_id.into(),
            item_version: item.version().into(),
            item_hash: item.content_hash.clone(),
            fields: validated.values,
            requester: who.clone(),
            team: who.teams.first().cloned().unwrap_or_default(),
            environment: None,
            priority: 0,
            idempotency_key: None,
            correlation_id: "simulation".into(),
            retry_of: None,
        }
        .into_submitted(now);
        let mut scopes = Scopes::base(self, &fake, &item);
        let mut problems = Vec::new();
        // Secrets are never fetched in a simulation.
        let mut secret_names = Map::new();
        for a in item.compiled.actions.values() {
            a.config.for_each_template(&mut |_, t| {
                for r in t.references() {
                    if r.scope == Scope::Secrets
                        && let Some(n) = r.path.first()
                    {
                        secret_names.insert(n.clone(), Value::String(format!("[secret:{n}]")));
                    }
                }
            });
        }
        scopes.secrets = Value::Object(secret_names);
        if let Err(e) = scopes.compute(&item) {
            problems.push(e);
        }
        let ctx = scopes.context();
        let approval_required = match (
            &item.item.fulfillment.approval,
            &item.compiled.approval_required_when,
        ) {
            (Some(_), Some(e)) => e.eval_bool(&ctx).unwrap_or(true),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let plan = Plan::of(&item.item);
        let mut outputs = Map::new();
        let mut actions = Vec::new();
        let mut finish_ms: Vec<u64> = vec![0; plan.nodes.len()];
        for (i, n) in plan.nodes.iter().enumerate() {
            let outs = Value::Object(outputs.clone());
            let ctx = scopes.context().with(Scope::Outputs, &outs);
            let compiled = item.compiled.actions.get(&n.spec.id);
            let will_run = match compiled.and_then(|c| c.when.as_ref()) {
                Some(w) => match w.eval_bool(&ctx) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        problems.push(format!("{}: when: {}", n.spec.id, e.message()));
                        None
                    }
                },
                None => Some(true),
            };
            let input = match compiled.map(|c| render_config(&c.config, &n.spec.config, &ctx)) {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    problems.push(format!(
                        "{}: config{}: {}",
                        n.spec.id,
                        e.pointer,
                        e.error.message()
                    ));
                    Value::Null
                }
                None => n.spec.config.clone(),
            };
            let type_name = n.spec.action_type.to_string();
            let action = self.actions.get(&type_name);
            if action.is_none() {
                problems.push(format!(
                    "{}: no action of type `{type_name}` is registered here",
                    n.spec.id
                ));
            }
            let sample = action
                .map(|a| a.describe().sample_output)
                .unwrap_or(Value::Null);
            if will_run == Some(true) {
                let mut rendered = Map::new();
                if let Some(c) = compiled {
                    let oc = ctx.with(Scope::Result, &sample);
                    for (k, t) in &c.outputs {
                        match t.render_value(&oc) {
                            Ok(v) => {
                                rendered.insert(k.clone(), v);
                            }
                            Err(e) => problems.push(format!(
                                "{}: outputs.{k}: {}",
                                n.spec.id,
                                e.message()
                            )),
                        }
                    }
                }
                outputs.insert(n.spec.id.clone(), Value::Object(rendered));
            }
            let rc_timeout = n
                .spec
                .timeout
                .as_ref()
                .or_else(|| {
                    item.item
                        .fulfillment
                        .defaults
                        .as_ref()
                        .and_then(|d| d.timeout.as_ref())
                })
                .and_then(DurationText::get)
                .unwrap_or(self.config.default_timeout)
                .as_millis() as u64;
            let start = n.deps.iter().map(|&d| finish_ms[d]).max().unwrap_or(0);
            finish_ms[i] = start
                + if will_run == Some(false) {
                    0
                } else {
                    rc_timeout
                };
            // Actions that can describe their call without making it show what they would
            // send; secrets are placeholders, never fetched.
            let request = match action {
                Some(a) if a.supports_dry_run() && will_run == Some(true) && !input.is_null() => {
                    let ctx = ActionContext {
                        request_id: "simulation".into(),
                        action_id: n.spec.id.clone(),
                        attempt: 1,
                        idempotency_key: IdempotencyKey::for_action("simulation", &n.spec.id),
                        deadline: None,
                        cancel: CancellationToken::new(),
                        log: ActionLogger::default(),
                        secrets: Arc::new(PlaceholderSecrets),
                        dry_run: true,
                    };
                    match tokio::time::timeout(Duration::from_secs(5), a.execute(&ctx, &input))
                        .await
                    {
                        Ok(Ok(out)) => Some(out.result),
                        Ok(Err(e)) => {
                            problems.push(format!("{}: dry run: {}", n.spec.id, e.message));
                            None
                        }
                        Err(_) => {
                            problems.push(format!("{}: dry run took more than 5 s", n.spec.id));
                            None
                        }
                    }
                }
                _ => None,
            };
            actions.push(SimulatedAction {
                id: n.spec.id.clone(),
                action_type: type_name,
                phase: if n.phase == Phase::Main {
                    "main"
                } else {
                    "post_fulfillment"
                },
                group: n.group.map(|g| plan.groups[g].id.clone()),
                depends_on: n
                    .deps
                    .iter()
                    .map(|&d| plan.nodes[d].spec.id.clone())
                    .collect(),
                will_run,
                input,
                request,
                sample_output: sample,
                timeout_ms: rc_timeout,
                latest_finish_ms: finish_ms[i],
            });
        }
        Ok(Simulation {
            item_id: item_id.to_string(),
            mode: if item.item.fulfillment.mode == FulfillmentMode::Manual {
                "manual"
            } else {
                "automated"
            },
            approval_required,
            computed: scopes.computed.clone(),
            actions,
            worst_case_ms: finish_ms.iter().copied().max().unwrap_or(0),
            problems,
        })
    }
}

/// Renders an action's config. A `poll` block (REST actions polling an asynchronous API) may
/// read `result`, which exists only once the first call was made: it is passed on unrendered,
/// with the values of the non-secret scopes it reads under `poll.scopes`, and the action
/// renders it after each response.
fn render_config(
    template: &ValueTemplate,
    raw: &Value,
    ctx: &Context<'_>,
) -> Result<Value, LocatedVarError> {
    let (ValueTemplate::Object(entries), Some(Value::Object(poll))) = (template, raw.get("poll"))
    else {
        return template.render(ctx);
    };
    let mut out = Map::new();
    for (k, t) in entries.iter().filter(|(k, _)| k != "poll") {
        let v = t.render(ctx).map_err(|mut e| {
            e.pointer = format!("/{k}{}", e.pointer);
            e
        })?;
        out.insert(k.clone(), v);
    }
    let engine = Engine::new();
    let mut read = BTreeSet::new();
    for (k, v) in poll {
        let refs = match (k.as_str(), v) {
            ("until", Value::String(src)) => engine
                .compile_expression(src)
                .map(|e| e.references())
                .unwrap_or_default(),
            (_, Value::String(src)) => engine
                .compile(src)
                .map(|t| t.references())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        read.extend(refs.into_iter().map(|r| r.scope));
    }
    let mut scopes = Map::new();
    for scope in read {
        if !matches!(scope, Scope::Secrets | Scope::Result) {
            scopes.insert(scope.name().to_string(), ctx.get(scope).clone());
        }
    }
    let mut poll = poll.clone();
    poll.insert("scopes".into(), Value::Object(scopes));
    out.insert("poll".into(), Value::Object(poll));
    Ok(Value::Object(out))
}

/// The result of [`Orchestrator::simulate`].
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    /// The item.
    pub item_id: String,
    /// `manual` or `automated`.
    pub mode: &'static str,
    /// Whether the request would wait for approval.
    pub approval_required: bool,
    /// Computed values.
    pub computed: Value,
    /// Each action in plan order.
    pub actions: Vec<SimulatedAction>,
    /// Upper bound of the fulfillment time: the critical path of timeouts.
    pub worst_case_ms: u64,
    /// Problems found on the way (render errors, missing action types).
    pub problems: Vec<String>,
}

/// One action in a simulation.
#[derive(Debug, Clone, Serialize)]
pub struct SimulatedAction {
    /// Action id.
    pub id: String,
    /// Action type.
    pub action_type: String,
    /// `main` or `post_fulfillment`.
    pub phase: &'static str,
    /// Parallel group.
    pub group: Option<String>,
    /// Direct dependencies.
    pub depends_on: Vec<String>,
    /// Whether its `when` holds (`None` when it cannot be decided).
    pub will_run: Option<bool>,
    /// The input it would get.
    pub input: Value,
    /// What it would send (its dry run), for action types that can say without sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    /// The sample output its type describes.
    pub sample_output: Value,
    /// Its timeout.
    pub timeout_ms: u64,
    /// When it would finish at the latest, from the start.
    pub latest_finish_ms: u64,
}

/// The secret provider of simulations: every name reads as `[secret:<name>]`.
struct PlaceholderSecrets;

#[async_trait::async_trait]
impl crate::secrets::SecretProvider for PlaceholderSecrets {
    async fn get(&self, name: &str) -> Result<String, crate::secrets::SecretError> {
        Ok(format!("[secret:{name}]"))
    }
}
