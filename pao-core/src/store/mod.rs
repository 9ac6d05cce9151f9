//! Durable state behind the engine. One trait, [`Store`], implemented in memory here and on
//! SQLite and PostgreSQL in `pao-store`; `conformance` (behind the `conformance` cargo feature)
//! is the shared test suite every implementation must pass (River's driver-test idea).
//!
//! The contract, in short:
//! - a state change and its event commit together ([`Store::transition`]); a transition from
//!   a state the request is no longer in is a [`StoreError::Conflict`], so two callers racing
//!   on one request cannot both win;
//! - workers [`claim`](Store::claim) requests with a lease and a fencing token; every write a
//!   worker makes carries its [`Lease`], and a write under a lease that was taken over is
//!   refused with [`StoreError::LeaseLost`];
//! - the journal of action attempts ([`Store::start_attempt`], [`Store::finish_attempt`]) is
//!   what lets a new worker resume without re-running finished actions;
//! - submission is idempotent by `idempotency_key`; events and audit records are append-only;
//! - several changes of one request commit together through [`Store::apply`] (and a request
//!   with its admission through [`Store::submit_with`]): all of them or none, the fence checked
//!   once. The engine writes through these, so each durable write it waits for carries
//!   everything that was ready.

#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;
mod observed;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use memory::MemoryStore;
pub use observed::{CallOutcome, Observed, StoreCall, StoreObserver};

use crate::action::{ActionError, ActionOutput, ErrorClass, IdempotencyKey};
use crate::authz::Principal;
use crate::lifecycle::{IllegalTransition, RequestState};
use crate::sealing::WrappedKey;

/// What a caller submits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRequest {
    /// Id to use (the engine makes a UUID).
    pub id: String,
    /// The catalog item.
    pub item_id: String,
    /// Its version when submitted.
    pub item_version: String,
    /// Its content hash when submitted.
    pub item_hash: String,
    /// Validated field values (secrets removed).
    pub fields: Value,
    /// Who asked.
    pub requester: Principal,
    /// The team the request counts against.
    pub team: String,
    /// Target environment, when the form has one.
    pub environment: Option<String>,
    /// Higher runs first.
    pub priority: i32,
    /// Submitting twice with the same key returns the first request.
    pub idempotency_key: Option<String>,
    /// Ties logs and events of this request together across systems.
    pub correlation_id: String,
    /// The failed request this one retries.
    pub retry_of: Option<String>,
    /// Its cost, estimated at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<AdmissionCost>,
}

/// Whether compensation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackStatus {
    /// No rollback.
    #[default]
    None,
    /// Rolling back now.
    InProgress,
    /// Every completed action was undone.
    Complete,
    /// A rollback failed: some effects remain.
    Incomplete,
}

/// A stored request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Id.
    pub id: String,
    /// The catalog item.
    pub item_id: String,
    /// Item version at submission.
    pub item_version: String,
    /// Item content hash at submission.
    pub item_hash: String,
    /// Field values.
    pub fields: Value,
    /// Who asked.
    pub requester: Principal,
    /// Owning team.
    pub team: String,
    /// Environment.
    pub environment: Option<String>,
    /// Priority.
    pub priority: i32,
    /// Idempotency key of the submission.
    pub idempotency_key: Option<String>,
    /// Correlation id.
    pub correlation_id: String,
    /// The failed request this one retries.
    pub retry_of: Option<String>,
    /// Lifecycle state.
    pub state: RequestState,
    /// Compensation status.
    pub rollback: RollbackStatus,
    /// Why it failed or was rejected.
    pub error: Option<String>,
    /// When approval times out.
    pub approval_due: Option<DateTime<Utc>>,
    /// Whether approval was escalated.
    pub escalated: bool,
    /// Cancellation was asked for while a worker held the request.
    pub cancel_requested: bool,
    /// What an `InProgress` request waits for outside PAO (a manual ticket key); such a
    /// request is not claimable until it is resolved.
    pub waiting_for: Option<String>,
    /// Its cost, estimated at admission; `None` for an item that declares no cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<AdmissionCost>,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A request's cost, estimated when it was admitted: the item's `cost` actions run in
/// estimate mode with the submitted fields, or else the item's declared `metadata.cost`
/// rendered with them. Approvers see it, and approval rules read it as `cost`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AdmissionCost {
    /// Currency of the totals (ISO 4217).
    #[serde(default)]
    pub currency: Option<String>,
    /// Monthly total; `None` when some part could not be estimated (see `problems`).
    #[serde(default)]
    pub monthly: Option<f64>,
    /// One-off total; `None` when some part could not be estimated.
    #[serde(default)]
    pub one_time: Option<f64>,
    /// Where the totals come from.
    pub source: CostSource,
    /// Each `cost` action's estimate, by action id.
    #[serde(default)]
    pub estimates: Vec<ActionEstimate>,
    /// The item's `metadata.cost`, rendered with the request.
    #[serde(default)]
    pub declared: Option<Value>,
    /// Why a part could not be estimated.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// What a [`Store::purge`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// Requests, with everything recorded about them.
    pub requests: u64,
    /// Audit records.
    pub audit: u64,
}

/// Where an admission estimate's totals come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The item's `cost` actions, run in estimate mode.
    #[default]
    Actions,
    /// The item's declared `metadata.cost` (it has no `cost` action).
    Declared,
}

/// One `cost` action's estimate at admission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionEstimate {
    /// The action.
    pub action_id: String,
    /// Its result: `currency`, `monthly`, `one_time`, lines, discounts, tax.
    pub result: Value,
}

/// Fields of a request that change outside transitions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestPatch {
    /// New rollback status.
    pub rollback: Option<RollbackStatus>,
    /// New error text.
    pub error: Option<String>,
    /// New approval deadline.
    pub approval_due: Option<Option<DateTime<Utc>>>,
    /// Mark escalated.
    pub escalated: Option<bool>,
    /// Mark cancellation requested.
    pub cancel_requested: Option<bool>,
    /// Set or clear what the request waits for.
    pub waiting_for: Option<Option<String>>,
}

impl Request {
    /// Moves this copy of the request from `from` to `to`, as every store applies a
    /// [`Write::Transition`]: `Conflict` when it is not in `from`, `Illegal` when the lifecycle
    /// has no such move. Returns the event that records it.
    pub fn apply_transition(
        &mut self,
        from: RequestState,
        to: RequestState,
        change: StateChange,
    ) -> Result<EventKind, StoreError> {
        if self.state != from {
            return Err(StoreError::Conflict {
                id: self.id.clone(),
                expected: from,
                actual: self.state,
            });
        }
        let at = change.at;
        let event = change.into_event(from, to)?;
        self.state = to;
        self.updated_at = at;
        Ok(event)
    }
}

impl NewRequest {
    /// The request as a submission stores it: `Submitted`, nothing else set, created and
    /// updated `now`.
    pub fn into_submitted(self, now: DateTime<Utc>) -> Request {
        Request {
            id: self.id,
            item_id: self.item_id,
            item_version: self.item_version,
            item_hash: self.item_hash,
            fields: self.fields,
            requester: self.requester,
            team: self.team,
            environment: self.environment,
            priority: self.priority,
            idempotency_key: self.idempotency_key,
            correlation_id: self.correlation_id,
            retry_of: self.retry_of,
            state: RequestState::Submitted,
            rollback: RollbackStatus::None,
            error: None,
            approval_due: None,
            escalated: false,
            cancel_requested: false,
            waiting_for: None,
            cost: self.cost,
            created_at: now,
            updated_at: now,
        }
    }
}

impl StateChange {
    /// The `StateChanged` event of a move from `from` to `to`, or `Illegal` when the lifecycle
    /// has no such move. It does not look at any request: a store that checks `from` itself
    /// (in SQL, say) builds the event with this.
    pub fn into_event(self, from: RequestState, to: RequestState) -> Result<EventKind, StoreError> {
        from.transition_to(to)?;
        Ok(EventKind::StateChanged {
            from: Some(from),
            to,
            actor: self.actor,
            reason: self.reason,
        })
    }
}

impl RequestPatch {
    /// Sets the fields this patch names on `request`.
    pub fn apply_to(self, request: &mut Request) {
        if let Some(v) = self.rollback {
            request.rollback = v;
        }
        if let Some(v) = self.error {
            request.error = Some(v);
        }
        if let Some(v) = self.approval_due {
            request.approval_due = v;
        }
        if let Some(v) = self.escalated {
            request.escalated = v;
        }
        if let Some(v) = self.cancel_requested {
            request.cancel_requested = v;
        }
        if let Some(v) = self.waiting_for {
            request.waiting_for = v;
        }
    }
}

/// Who changed the state and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// A principal id, or `system`/`worker:<id>`.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A lifecycle transition.
    StateChanged {
        /// Previous state (none for the first event).
        from: Option<RequestState>,
        /// New state.
        to: RequestState,
        /// Who.
        actor: String,
        /// Why.
        reason: Option<String>,
    },
    /// An attempt started.
    ActionStarted {
        /// Action.
        action_id: String,
        /// The action's type (`rest`, `plugin:slack-notify`); absent in events stored before
        /// it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action_type: Option<String>,
        /// Attempt number.
        attempt: u32,
        /// Whether this is a rollback.
        rollback: bool,
    },
    /// An attempt succeeded.
    ActionSucceeded {
        /// Action.
        action_id: String,
        /// The action's type (`rest`, `plugin:slack-notify`); absent in events stored before
        /// it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action_type: Option<String>,
        /// Attempt number.
        attempt: u32,
        /// Whether this is a rollback.
        rollback: bool,
    },
    /// An attempt failed.
    ActionFailed {
        /// Action.
        action_id: String,
        /// The action's type (`rest`, `plugin:slack-notify`); absent in events stored before
        /// it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action_type: Option<String>,
        /// Attempt number.
        attempt: u32,
        /// Whether this is a rollback.
        rollback: bool,
        /// Retryable or not.
        class: ErrorClass,
        /// Redacted message.
        error: String,
        /// Whether another attempt follows.
        will_retry: bool,
    },
    /// An action did not run.
    ActionSkipped {
        /// Action.
        action_id: String,
        /// Why (its `when` was false, the request was cancelled, ...).
        reason: String,
    },
    /// A log line of an action.
    Log {
        /// The action, when the line comes from one.
        action_id: Option<String>,
        /// Level.
        level: String,
        /// Redacted text.
        message: String,
    },
    /// An approver decided.
    ApprovalDecided {
        /// Approver id.
        approver: String,
        /// Approved or rejected.
        approved: bool,
        /// Reason (mandatory for rejections).
        reason: Option<String>,
    },
    /// Approval was escalated.
    Escalated {
        /// Teams asked now.
        teams: Vec<String>,
    },
    /// The health of what a completed request provisioned changed (its item's
    /// `monitoring.health_check`); the first check records it too.
    HealthChanged {
        /// Whether the URL answered 2xx.
        healthy: bool,
        /// The URL checked.
        url: String,
        /// Its HTTP status, when it answered.
        status: Option<u16>,
        /// Why it did not answer.
        error: Option<String>,
    },
    /// A manual-mode request passed its item's fulfillment SLA with its ticket still open;
    /// the ticket got a comment saying so.
    SlaBreached {
        /// The SLA (`sla.fulfillment`, e.g. `4h`).
        sla: String,
        /// Seconds since submission when it was noticed.
        elapsed_secs: u64,
        /// The ticket.
        ticket: String,
    },
    /// This request's quota reservation took its team's use of a resource to a budget
    /// threshold (80 % or 100 % of the limit).
    BudgetThreshold {
        /// The team.
        team: String,
        /// The quota resource.
        resource: String,
        /// The threshold reached, in percent of the limit.
        percent: u32,
        /// In use after the reservation.
        used: u64,
        /// The team's limit.
        limit: u64,
    },
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the request's stream, from 1.
    pub seq: u64,
    /// The request.
    pub request_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The request's correlation id.
    pub correlation_id: String,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// A worker's hold on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The request.
    pub request_id: String,
    /// The worker.
    pub worker_id: String,
    /// Fencing token: grows with every claim of this request.
    pub token: u64,
    /// Until when.
    pub expires_at: DateTime<Utc>,
}

/// Whose clock decides when a lease ends ([`Store::lease_clock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseClock {
    /// The `now` the caller passes to [`Store::claim`] and [`Store::heartbeat`]: right for a
    /// store that lives in one process (the in-memory store), where every worker reads the same
    /// clock.
    Caller,
    /// The store's own clock (a database's): leases start, end and are taken over by it, and
    /// the `now` of a claim or heartbeat plays no part in them, so workers whose clocks
    /// disagree still agree on when a lease ends.
    Store,
}

/// [`Store::apply_then_claim`] as two calls: [`Store::apply`], then [`Store::claim`]. Should
/// the claim take the batch's own request (its lease ran out and the batch did not end it),
/// it is given back at once and the claim reports none.
pub async fn apply_then_claim_in_turn<S: Store + ?Sized>(
    store: &S,
    lease: &Lease,
    writes: Vec<Write>,
    worker_id: &str,
    lease_for: Duration,
    now: DateTime<Utc>,
) -> AppliedThenClaimed {
    let applied = store.apply(&lease.request_id, Some(lease), writes).await;
    let claimed = match store.claim(worker_id, lease_for, now).await {
        Ok(Some((request, own))) if request.id == lease.request_id => {
            store.release(&own).await.map(|()| None)
        }
        other => other,
    };
    AppliedThenClaimed { applied, claimed }
}

/// What [`Store::apply_then_claim`] did.
#[derive(Debug, Clone)]
pub struct AppliedThenClaimed {
    /// The batch: the request as written, or why nothing of it was.
    pub applied: Result<Request, StoreError>,
    /// The claim: the next request and its lease, none, or why the claim failed.
    pub claimed: Result<Option<(Request, Lease)>, StoreError>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Started, not finished (or the worker died).
    Running,
    /// Succeeded.
    Succeeded {
        /// What the action returned.
        output: ActionOutput,
        /// The item's `outputs` map rendered from it.
        outputs: Value,
    },
    /// Failed.
    Failed {
        /// The error.
        error: ActionError,
    },
    /// Not run (its `when` was false).
    Skipped,
}

/// One attempt of one action (or of its rollback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The request.
    pub request_id: String,
    /// The action.
    pub action_id: String,
    /// Rollback or execution.
    pub rollback: bool,
    /// 1-based.
    pub attempt: u32,
    /// The key passed to the action.
    pub idempotency_key: IdempotencyKey,
    /// SHA-256 of the rendered input.
    pub input_hash: String,
    /// The rendered input, secrets redacted.
    pub input: Value,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Outcome.
    pub outcome: AttemptOutcome,
}

/// An approver's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// The request.
    pub request_id: String,
    /// Who decided.
    pub approver: String,
    /// Approved or rejected.
    pub approved: bool,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Usage of one quota resource by one team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// The resource (`databases`, `vcpu`).
    pub resource: String,
    /// The team's limit, if one is set.
    pub limit: Option<u64>,
    /// Reserved by live and completed requests.
    pub used: u64,
}

/// The largest quota limit: stores hold limits as signed 64-bit integers.
pub const MAX_QUOTA_LIMIT: u64 = i64::MAX as u64;

/// Why a quota limit cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaLimitError {
    /// The resource name is empty or blank.
    #[error("a quota resource name is empty")]
    EmptyResource,
    /// The limit is above [`MAX_QUOTA_LIMIT`].
    #[error("the limit of `{resource}` ({limit}) is above the largest limit, {MAX_QUOTA_LIMIT}")]
    TooLarge {
        /// The resource.
        resource: String,
        /// The limit asked for.
        limit: u64,
    },
}

/// Whether `limit` may be set for `resource`: a named resource, a limit a store can hold.
pub fn check_quota_limit(resource: &str, limit: u64) -> Result<(), QuotaLimitError> {
    if resource.trim().is_empty() {
        return Err(QuotaLimitError::EmptyResource);
    }
    if limit > MAX_QUOTA_LIMIT {
        return Err(QuotaLimitError::TooLarge {
            resource: resource.to_string(),
            limit,
        });
    }
    Ok(())
}

/// Whether every limit of a [`Store::set_quota_limits`] call may be set
/// ([`check_quota_limit`]); the first refusal, as a [`StoreError::Duplicate`] carrying its
/// message.
pub fn check_quota_limits(limits: &[(String, u64)]) -> Result<(), StoreError> {
    for (resource, limit) in limits {
        check_quota_limit(resource, *limit).map_err(|e| StoreError::Duplicate(e.to_string()))?;
    }
    Ok(())
}

/// An audit record: who did what to what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What (`request.submit`, `approval.approve`, ...).
    pub action: String,
    /// On what (a request id, an item id).
    pub target: String,
    /// Details.
    pub detail: Value,
}

/// An audit record with its place in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedAudit {
    /// Its place in the log: larger for every record appended after it. Pass it as `before`
    /// to [`Store::audit_log`] to read the records older than it.
    pub id: u64,
    /// The record.
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// Which requests [`Store::request_stats`] aggregates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsScope {
    /// Only this team's requests.
    pub team: Option<String>,
    /// Only requests for these items; empty: for every item.
    pub item_ids: Vec<String>,
}

/// How many requests of one team and item are in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCount {
    /// The team.
    pub team: String,
    /// The catalog item.
    pub item_id: String,
    /// The state.
    pub state: RequestState,
    /// How many.
    pub count: u64,
}

/// Percentiles of the time completed requests took, from submission to their last change, in
/// milliseconds; `None` without completed requests. Nearest rank: of `n` times sorted, the
/// `p`th percentile is the one at index `(n - 1) * p / 100`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTimes {
    /// Median.
    pub p50: Option<i64>,
    /// 90th percentile.
    pub p90: Option<i64>,
    /// 99th percentile.
    pub p99: Option<i64>,
}

/// At most this many reasons in [`RequestStats::failure_reasons`].
pub const FAILURE_REASONS: usize = 20;

/// A failure reason is the first this many characters of a failed request's error.
pub const FAILURE_REASON_CHARS: usize = 120;

/// Aggregates of the requests a [`StatsScope`] selects, computed by the store: its size does
/// not grow with the number of requests (only with teams × items × states).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestStats {
    /// Requests by team, item and state (no count of 0), sorted by team, item, then state
    /// name.
    pub counts: Vec<StateCount>,
    /// How long completed requests took.
    pub completion_ms: CompletionTimes,
    /// The most frequent reasons of failed requests (the first [`FAILURE_REASON_CHARS`]
    /// characters of the error, `unknown` without one), with their counts: most frequent
    /// first, equal counts by reason (byte order); at most [`FAILURE_REASONS`].
    pub failure_reasons: Vec<(String, u64)>,
}

impl RequestStats {
    /// How many requests in all.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.count).sum()
    }

    /// How many requests are in `state`.
    pub fn in_state(&self, state: RequestState) -> u64 {
        self.counts
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.count)
            .sum()
    }

    /// How many requests ended (a terminal state).
    pub fn finished(&self) -> u64 {
        self.counts
            .iter()
            .filter(|c| c.state.is_terminal())
            .map(|c| c.count)
            .sum()
    }

    /// Counts summed by `key` (a state, a team, an item).
    pub fn by<K: Ord>(&self, key: impl Fn(&StateCount) -> K) -> std::collections::BTreeMap<K, u64> {
        let mut out = std::collections::BTreeMap::new();
        for c in &self.counts {
            *out.entry(key(c)).or_default() += c.count;
        }
        out
    }
}

/// The index of the `p`th percentile of `n` sorted values (nearest rank, see
/// [`CompletionTimes`]); `None` when `n` is 0.
pub fn percentile_index(n: u64, p: u64) -> Option<u64> {
    n.checked_sub(1).map(|last| last * p / 100)
}

/// A request awaiting approval, with the decisions made on it so far.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingApproval {
    /// The request.
    pub request: Request,
    /// Its decisions, in the order they were made.
    pub decisions: Vec<ApprovalDecision>,
}

/// Filters for listing requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFilter {
    /// Only these states.
    pub states: Vec<RequestState>,
    /// Only this requester.
    pub requester: Option<String>,
    /// Only this team.
    pub team: Option<String>,
    /// Only this item.
    pub item_id: Option<String>,
    /// Created strictly before this request (cursor, newest first).
    pub before: Option<(DateTime<Utc>, String)>,
    /// At most this many (0 = no limit).
    pub limit: usize,
}

/// What went wrong in the store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// No such request.
    #[error("request {0} not found")]
    NotFound(String),
    /// The request is not in the expected state (someone else moved it).
    #[error("request {id} is {actual}, not {expected}")]
    Conflict {
        /// Request.
        id: String,
        /// What the caller expected.
        expected: RequestState,
        /// What it is.
        actual: RequestState,
    },
    /// The lifecycle forbids the transition.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// The caller's lease was taken over (or released); it must stop working on the request.
    #[error("lease on request {0} was lost")]
    LeaseLost(String),
    /// A quota would be exceeded.
    #[error("quota `{resource}` of team {team} exceeded: {used} used + {asked} asked > {limit}")]
    QuotaExceeded {
        /// Team.
        team: String,
        /// Resource.
        resource: String,
        /// Limit.
        limit: u64,
        /// Used before this request.
        used: u64,
        /// Asked by this request.
        asked: u64,
    },
    /// A duplicate (an approver deciding twice), or another write refused for what it asks
    /// whatever the store holds (a quota limit no store can hold, see [`check_quota_limits`]).
    #[error("{0}")]
    Duplicate(String),
    /// The backend failed; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// One change in an atomic [`Store::apply`] (or [`Store::submit_with`]) batch.
///
/// A batch is how the engine keeps the number of durable writes per step small: a state
/// change, its events, the attempt journal, quota and audit of one moment commit in one
/// transaction, and a fenced batch checks the lease once.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Moves the request from `from` to `to` with its `StateChanged` event, as
    /// [`Store::transition`] does (a terminal state drops the lease).
    Transition {
        /// The state the request must be in.
        from: RequestState,
        /// The new state.
        to: RequestState,
        /// Who and why.
        change: StateChange,
    },
    /// Changes non-state fields, as [`Store::update`].
    Patch(RequestPatch),
    /// Appends an event, as [`Store::append_event`].
    Event {
        /// When.
        at: DateTime<Utc>,
        /// What.
        kind: EventKind,
    },
    /// Journals the start of an attempt, as [`Store::start_attempt`] (needs the lease).
    StartAttempt(AttemptRecord),
    /// Journals the end of an attempt: the record as it was started, with its outcome and
    /// `finished_at` set (needs the lease).
    FinishAttempt(AttemptRecord),
    /// Reserves quota for the request's team, as [`Store::reserve_quota`].
    ReserveQuota {
        /// The resource.
        resource: String,
        /// How much.
        amount: u64,
        /// The limit when none is set for the team (`catalog.yaml`'s team quota); `None`:
        /// unlimited unless set.
        default_limit: Option<u64>,
    },
    /// Returns the request's quota, as [`Store::release_quota`].
    ReleaseQuota,
    /// Appends an audit record.
    Audit(AuditRecord),
    /// Stores sealed values of the request, replacing values of the same name. `key` is the
    /// request's wrapped data key: stored when the request has none yet, otherwise it must be
    /// the stored one (values sealed under another data key would not open).
    Seal {
        /// The request's data key, wrapped.
        key: WrappedKey,
        /// Sealed values by name.
        values: Vec<(String, Vec<u8>)>,
    },
    /// Keeps the definition of the request's item as it was admitted (the file's text), by
    /// its content hash; a definition already kept under that hash stays as it is.
    KeepItemDefinition {
        /// SHA-256 of the file, hex (the request's `item_hash`).
        hash: String,
        /// The item id.
        item_id: String,
        /// The file's text.
        source: String,
    },
}

impl Write {
    /// The state the last transition of a batch moves its request to, if the batch has one.
    pub fn final_state(writes: &[Write]) -> Option<RequestState> {
        writes.iter().rev().find_map(|w| match w {
            Write::Transition { to, .. } => Some(*to),
            _ => None,
        })
    }

    /// Whether a batch queues its request (news for idle workers).
    pub fn queues(writes: &[Write]) -> bool {
        writes.iter().any(|w| {
            matches!(
                w,
                Write::Transition {
                    to: RequestState::Queued,
                    ..
                }
            )
        })
    }
}

/// The name prefix of sealed `secret` form field values. A transition to a terminal state
/// deletes them; see [`Store::sealed`].
pub const SEALED_FIELD_PREFIX: &str = "field:";

/// The sealed values of one request ([`Store::sealed`]): its wrapped data key and the values
/// it seals, by name. Only ciphertext: see [`crate::sealing`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SealedSecrets {
    /// The request's data key, wrapped by a key-encryption key.
    pub key: Option<WrappedKey>,
    /// Sealed values by name.
    pub values: std::collections::BTreeMap<String, Vec<u8>>,
}

/// A submission's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The request (the earlier one when the idempotency key was seen before).
    pub request: Request,
    /// Whether this call created it.
    pub created: bool,
}

/// The durable state of requests.
#[async_trait]
pub trait Store: Send + Sync {
    /// Persists a new request in `Submitted` with its first event, in one transaction; with
    /// an idempotency key seen before, returns the earlier request instead.
    async fn submit(
        &self,
        request: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Submitted, StoreError>;

    /// Submits like [`Store::submit`] and, when this call created the request, applies
    /// `writes` to it, all in one transaction: either the request exists with every write, or
    /// nothing was stored. The engine admits a request this way (audit, prerequisites, quota,
    /// approval decision) in one durable write.
    ///
    /// The default implementation is not atomic: it submits, then calls [`Store::apply`]; a
    /// failing write leaves the request in the state it had reached. The stores of this
    /// workspace override it.
    async fn submit_with(
        &self,
        request: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
        writes: Vec<Write>,
    ) -> Result<Submitted, StoreError> {
        let submitted = self.submit(request, actor, now).await?;
        if !submitted.created || writes.is_empty() {
            return Ok(submitted);
        }
        let request = self.apply(&submitted.request.id, None, writes).await?;
        Ok(Submitted {
            request,
            created: true,
        })
    }

    /// Applies `writes` to one request in order, atomically: one transaction, the fence
    /// checked once. Any failing write (a state conflict, a lost lease, an exceeded quota)
    /// fails the whole batch and nothing of it is stored. Returns the request after the
    /// batch.
    ///
    /// The default implementation calls the single-write methods one after another and is
    /// therefore not atomic; the stores of this workspace override it.
    async fn apply(
        &self,
        id: &str,
        lease: Option<&Lease>,
        writes: Vec<Write>,
    ) -> Result<Request, StoreError> {
        let leased = || lease.ok_or_else(|| StoreError::LeaseLost(id.to_string()));
        for w in writes {
            match w {
                Write::Transition { from, to, change } => {
                    self.transition(id, from, to, change, lease).await?;
                }
                Write::Patch(p) => {
                    self.update(id, p, lease).await?;
                }
                Write::Event { at, kind } => {
                    self.append_event(id, at, kind, lease).await?;
                }
                Write::StartAttempt(r) => self.start_attempt(leased()?, r).await?,
                Write::FinishAttempt(r) => {
                    let at = r.finished_at.unwrap_or(r.started_at);
                    self.finish_attempt(
                        leased()?,
                        &r.action_id,
                        r.rollback,
                        r.attempt,
                        r.outcome,
                        at,
                    )
                    .await?
                }
                Write::ReserveQuota {
                    resource,
                    amount,
                    default_limit,
                } => {
                    let team = self
                        .get(id)
                        .await?
                        .ok_or_else(|| StoreError::NotFound(id.to_string()))?
                        .team;
                    // Not atomic, as nothing in this fallback is: the limit of the catalog
                    // when the team has none set.
                    if let Some(limit) = default_limit {
                        let usage = self.quota_usage(&team).await?;
                        let line = usage.iter().find(|u| u.resource == resource);
                        let used = line.map_or(0, |u| u.used);
                        if line.is_none_or(|u| u.limit.is_none())
                            && used.saturating_add(amount) > limit
                        {
                            return Err(StoreError::QuotaExceeded {
                                team,
                                resource,
                                limit,
                                used,
                                asked: amount,
                            });
                        }
                    }
                    self.reserve_quota(id, &team, &resource, amount).await?
                }
                Write::ReleaseQuota => self.release_quota(id).await?,
                Write::Audit(a) => self.audit(a).await?,
                Write::Seal { .. } | Write::KeepItemDefinition { .. } => {
                    return Err(StoreError::Unavailable(
                        "this store keeps no sealed values: implement `apply`".to_string(),
                    ));
                }
            }
        }
        self.get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    /// One request.
    async fn get(&self, id: &str) -> Result<Option<Request>, StoreError>;

    /// Up to `limit` requests in `state` whose `waiting_for` starts with `prefix`, ordered by
    /// `waiting_for` then id, after the position `after` (`(waiting_for, id)` of the last one
    /// of the previous page): the manual-mode tickets a poller walks through.
    async fn parked_requests(
        &self,
        prefix: &str,
        state: RequestState,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError>;

    /// Requests, newest first.
    async fn list(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError>;

    /// The request in `InProgress` that waits for `key`: its `waiting_for` is `key` or
    /// `manual:{key}` (a manual-mode ticket). The oldest one if several do.
    async fn request_waiting_for(&self, key: &str) -> Result<Option<Request>, StoreError>;

    /// Queued requests held back: their `waiting_for` starts with `prefix` (a restricted
    /// period's hold). Oldest first, at most `limit`.
    async fn held_requests(&self, prefix: &str, limit: usize) -> Result<Vec<Request>, StoreError>;

    /// Moves a request from `from` to `to` and appends the event, atomically. With a lease,
    /// the write is fenced.
    async fn transition(
        &self,
        id: &str,
        from: RequestState,
        to: RequestState,
        change: StateChange,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError>;

    /// Changes non-state fields.
    async fn update(
        &self,
        id: &str,
        patch: RequestPatch,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError>;

    /// Appends an event; returns its sequence number.
    async fn append_event(
        &self,
        id: &str,
        at: DateTime<Utc>,
        kind: EventKind,
        lease: Option<&Lease>,
    ) -> Result<u64, StoreError>;

    /// Events after `after_seq`, at most `limit` (0 = all).
    async fn events(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Claims the next runnable request: `Queued`, or `InProgress`/`PostFulfillment` whose
    /// lease expired (a crashed worker's) and that waits for nothing outside (`waiting_for`).
    /// Highest priority first, then oldest. The new lease's token is larger than any earlier
    /// one for that request.
    ///
    /// A lease ends `lease_for` after it was taken or last renewed, by the clock
    /// [`Store::lease_clock`] names: `now` (the caller's clock) or the store's own.
    async fn claim(
        &self,
        worker_id: &str,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<(Request, Lease)>, StoreError>;

    /// A worker's last batch for one request (under `lease`), then a claim of the next
    /// runnable request for the same worker: what a worker loop does between two runs. The
    /// two are independent: the claim is made whether or not the batch could be written, and
    /// never takes `lease`'s request. A store may do both in one round trip; PostgreSQL does,
    /// for the batches it writes as one statement.
    ///
    /// `claimed` may be `Ok(None)` although work is waiting (a store that could not add the
    /// claim this time); callers then claim as usual.
    ///
    /// The default implementation is [`apply_then_claim_in_turn`].
    async fn apply_then_claim(
        &self,
        lease: &Lease,
        writes: Vec<Write>,
        worker_id: &str,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> AppliedThenClaimed {
        apply_then_claim_in_turn(self, lease, writes, worker_id, lease_for, now).await
    }

    /// Extends a lease to `lease_for` from now (by [`Store::lease_clock`]); `LeaseLost` if it
    /// was taken over.
    async fn heartbeat(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError>;

    /// Whose clock decides when leases end. The default is the caller's (`now`); a store
    /// shared by processes on several hosts must use its own, or a worker whose clock runs
    /// ahead takes over live leases.
    fn lease_clock(&self) -> LeaseClock {
        LeaseClock::Caller
    }

    /// Gives a request back (it stays in its state and can be claimed at once).
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Journals the start of an attempt.
    async fn start_attempt(&self, lease: &Lease, record: AttemptRecord) -> Result<(), StoreError>;

    /// Journals the end of an attempt.
    async fn finish_attempt(
        &self,
        lease: &Lease,
        action_id: &str,
        rollback: bool,
        attempt: u32,
        outcome: AttemptOutcome,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The journal of a request, in start order.
    async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>, StoreError>;

    /// Records an approver's decision; the same approver cannot decide twice.
    async fn record_decision(
        &self,
        decision: ApprovalDecision,
    ) -> Result<Vec<ApprovalDecision>, StoreError>;

    /// Decisions on a request.
    async fn decisions(&self, id: &str) -> Result<Vec<ApprovalDecision>, StoreError>;

    /// Sets a team's limit for a resource. A limit above [`MAX_QUOTA_LIMIT`] is kept as
    /// [`MAX_QUOTA_LIMIT`] (no usage reaches either); callers refuse it first
    /// ([`check_quota_limit`]).
    async fn set_quota_limit(
        &self,
        team: &str,
        resource: &str,
        limit: u64,
    ) -> Result<(), StoreError>;

    /// Sets a team's limits (resource, limit) and appends `audit`, in one transaction: every
    /// limit and the record are stored, or none. Limits are checked with
    /// [`check_quota_limits`] first: a limit no store can hold (an empty resource name, a limit
    /// above [`MAX_QUOTA_LIMIT`]) refuses the whole call. A resource named twice gets its last
    /// limit.
    async fn set_quota_limits(
        &self,
        team: &str,
        limits: &[(String, u64)],
        audit: AuditRecord,
    ) -> Result<(), StoreError>;

    /// Reserves quota for a request, atomically against the limit. Reserving again for the
    /// same request and resource replaces the earlier reservation.
    async fn reserve_quota(
        &self,
        request_id: &str,
        team: &str,
        resource: &str,
        amount: u64,
    ) -> Result<(), StoreError>;

    /// Returns a request's reservations (rejected, cancelled, failed and rolled back).
    async fn release_quota(&self, request_id: &str) -> Result<(), StoreError>;

    /// A team's usage per resource.
    async fn quota_usage(&self, team: &str) -> Result<Vec<QuotaUsage>, StoreError>;

    /// Appends an audit record.
    async fn audit(&self, record: AuditRecord) -> Result<(), StoreError>;

    /// Audit records, newest first: only those about `target` when given, only those older
    /// than the record `before` (an id of an earlier page) when given, at most `limit`
    /// (0 = all).
    async fn audit_log(
        &self,
        target: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LoggedAudit>, StoreError>;

    /// Aggregates of the requests `scope` selects: counts by team, item and state, completion
    /// times and the most frequent failure reasons ([`RequestStats`]). The work is the store's
    /// (a database aggregates in SQL); what comes back is small however many requests match.
    async fn request_stats(&self, scope: &StatsScope) -> Result<RequestStats, StoreError>;

    /// Requests awaiting approval, newest first as [`Store::list`] orders them, created
    /// strictly before `before` (a cursor: the creation time and id of the last request of the
    /// previous page) when given, at most `limit` (0 = all), each with its decisions so far.
    async fn pending_approvals(
        &self,
        before: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<PendingApproval>, StoreError>;

    /// Requests awaiting approval whose deadline (`approval_due`) is at or before `by`,
    /// earliest deadline first, then by id; after `after` (the deadline and id of the last
    /// request of the previous page) when given; at most `limit` (0 = all).
    async fn approvals_due(
        &self,
        by: DateTime<Utc>,
        after: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError>;

    /// The sealed values of a request ([`Write::Seal`]); empty when it has none.
    ///
    /// Sealed values live as long as they can be needed: a transition to a terminal state
    /// deletes the values named `field:*` ([`SEALED_FIELD_PREFIX`]); a transition to a
    /// terminal state other than `Failed` deletes them all with the data key (a failed
    /// request keeps what a retry may need to undo the actions it reuses, until it is purged).
    async fn sealed(&self, request_id: &str) -> Result<SealedSecrets, StoreError>;

    /// The item definition kept under `hash` ([`Write::KeepItemDefinition`]): item id and
    /// the file's text.
    async fn item_definition(&self, hash: &str) -> Result<Option<(String, String)>, StoreError>;

    /// Retention: deletes up to `limit` requests that ended (`completed`, `failed`,
    /// `cancelled`, `rejected`) and were last updated before `before`, oldest first, with
    /// their events, attempts, decisions, sealed values and quota reservations (their quota is
    /// returned); and the audit records older than `audit_before`. One transaction; never
    /// touches a live request. Kept item definitions stay.
    async fn purge(
        &self,
        before: DateTime<Utc>,
        audit_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Purged, StoreError>;

    /// Plugin key-value data: the value of `key` in `namespace` (a plugin's name).
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets `key` in `namespace` unless the namespace would then hold more than
    /// `max_namespace_bytes` (keys and values, in bytes): `false` then, and nothing changes.
    async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        max_namespace_bytes: u64,
    ) -> Result<bool, StoreError>;

    /// Removes `key` from `namespace`.
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError>;

    /// Up to `limit` wrapped data keys not wrapped by the key-encryption key `kek_id`, with
    /// their request ids (for re-wrapping after a rotation).
    async fn keys_not_wrapped_by(
        &self,
        kek_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, WrappedKey)>, StoreError>;

    /// Replaces the wrapped data key of a request when it is still `old`; `false` when it
    /// changed or went meanwhile.
    async fn rewrap_key(
        &self,
        request_id: &str,
        old: &WrappedKey,
        new: &WrappedKey,
    ) -> Result<bool, StoreError>;

    /// Waits until new work may be claimable, or `timeout` passes. The default sleeps; stores
    /// with notifications (PostgreSQL LISTEN/NOTIFY, the in-memory store) wake at once.
    async fn wait_for_work(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }

    /// Ids of requests whose events any process appended, as the database announces them
    /// (PostgreSQL `LISTEN`/`NOTIFY`), for live streams of other replicas to wake at once. An
    /// empty id means "announcements may have been missed: look at every request". `None`
    /// (the default): the store cannot tell, and streams poll.
    fn event_wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}
