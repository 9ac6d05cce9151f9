//! [`Observed`]: a [`Store`] that forwards every call to another and tells a
//! [`StoreObserver`] about it, for metrics, tests that count writes, and fault injection.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;

/// A [`Store`] method, as an [`Observed`] store reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)]
pub enum StoreCall {
    Submit,
    SubmitWith,
    Apply,
    Get,
    List,
    RequestWaitingFor,
    HeldRequests,
    ParkedRequests,
    KvGet,
    KvSet,
    KvDelete,
    ItemDefinition,
    Purge,
    Transition,
    Update,
    AppendEvent,
    Events,
    Claim,
    ApplyThenClaim,
    Heartbeat,
    Release,
    StartAttempt,
    FinishAttempt,
    Attempts,
    RecordDecision,
    Decisions,
    Sealed,
    KeysNotWrappedBy,
    RewrapKey,
    SetQuotaLimit,
    SetQuotaLimits,
    ReserveQuota,
    ReleaseQuota,
    QuotaUsage,
    Audit,
    AuditLog,
    RequestStats,
    PendingApprovals,
    ApprovalsDue,
    WaitForWork,
}

impl StoreCall {
    /// The method's name (`"submit_with"`, `"claim"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StoreCall::Submit => "submit",
            StoreCall::SubmitWith => "submit_with",
            StoreCall::Apply => "apply",
            StoreCall::Get => "get",
            StoreCall::List => "list",
            StoreCall::RequestWaitingFor => "request_waiting_for",
            StoreCall::HeldRequests => "held_requests",
            StoreCall::ItemDefinition => "item_definition",
            StoreCall::ParkedRequests => "parked_requests",
            StoreCall::KvGet => "kv_get",
            StoreCall::KvSet => "kv_set",
            StoreCall::KvDelete => "kv_delete",
            StoreCall::Purge => "purge",
            StoreCall::Transition => "transition",
            StoreCall::Update => "update",
            StoreCall::AppendEvent => "append_event",
            StoreCall::Events => "events",
            StoreCall::Claim => "claim",
            StoreCall::ApplyThenClaim => "apply_then_claim",
            StoreCall::Heartbeat => "heartbeat",
            StoreCall::Release => "release",
            StoreCall::StartAttempt => "start_attempt",
            StoreCall::FinishAttempt => "finish_attempt",
            StoreCall::Attempts => "attempts",
            StoreCall::RecordDecision => "record_decision",
            StoreCall::Decisions => "decisions",
            StoreCall::Sealed => "sealed",
            StoreCall::KeysNotWrappedBy => "keys_not_wrapped_by",
            StoreCall::RewrapKey => "rewrap_key",
            StoreCall::SetQuotaLimit => "set_quota_limit",
            StoreCall::SetQuotaLimits => "set_quota_limits",
            StoreCall::ReserveQuota => "reserve_quota",
            StoreCall::ReleaseQuota => "release_quota",
            StoreCall::QuotaUsage => "quota_usage",
            StoreCall::Audit => "audit",
            StoreCall::AuditLog => "audit_log",
            StoreCall::RequestStats => "request_stats",
            StoreCall::PendingApprovals => "pending_approvals",
            StoreCall::ApprovalsDue => "approvals_due",
            StoreCall::WaitForWork => "wait_for_work",
        }
    }

    /// Whether the method writes (a claim writes the lease it takes).
    pub fn writes(self) -> bool {
        !matches!(
            self,
            StoreCall::Get
                | StoreCall::List
                | StoreCall::RequestWaitingFor
                | StoreCall::HeldRequests
                | StoreCall::ParkedRequests
                | StoreCall::KvGet
                | StoreCall::ItemDefinition
                | StoreCall::Events
                | StoreCall::Attempts
                | StoreCall::Decisions
                | StoreCall::Sealed
                | StoreCall::KeysNotWrappedBy
                | StoreCall::QuotaUsage
                | StoreCall::AuditLog
                | StoreCall::RequestStats
                | StoreCall::PendingApprovals
                | StoreCall::ApprovalsDue
                | StoreCall::WaitForWork
        )
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It succeeded.
    Done,
    /// It succeeded and found nothing: a claim without work, a `get` of an unknown id, a
    /// `request_waiting_for` that no request waits for, an `apply_then_claim` whose batch was
    /// written and whose claim found no work.
    Empty,
    /// It returned an error (for `apply_then_claim`: its batch or its claim did).
    Failed,
}

/// Hears about every call of an [`Observed`] store. Both methods default to doing nothing.
pub trait StoreObserver: Send + Sync {
    /// Before the call reaches the store. An error is returned in its place and the store is
    /// not called (fault injection). `wait_for_work` cannot fail and ignores it.
    fn before(&self, call: StoreCall) -> Result<(), StoreError> {
        let _ = call;
        Ok(())
    }

    /// After the store returned, with how long it took (wall time).
    fn after(&self, call: StoreCall, took: Duration, outcome: CallOutcome) {
        let _ = (call, took, outcome);
    }
}

/// A store that forwards every call, batches included, to `inner` and reports it to
/// `observer`.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use pao_core::store::{CallOutcome, MemoryStore, Observed, Store, StoreCall, StoreObserver};
///
/// #[derive(Default)]
/// struct Reads(AtomicUsize);
/// impl StoreObserver for Reads {
///     fn after(&self, call: StoreCall, _: std::time::Duration, _: CallOutcome) {
///         if !call.writes() {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = Observed::new(MemoryStore::default(), Reads::default());
/// assert!(store.get("nope").await.unwrap().is_none());
/// assert_eq!(store.observer.0.load(Ordering::Relaxed), 1);
/// # });
/// ```
#[derive(Debug, Default)]
pub struct Observed<S, O> {
    /// The store that does the work.
    pub inner: S,
    /// Who hears about it.
    pub observer: O,
}

impl<S: Store, O: StoreObserver> Observed<S, O> {
    /// Wraps `inner`.
    pub fn new(inner: S, observer: O) -> Observed<S, O> {
        Observed { inner, observer }
    }

    async fn observe<T>(
        &self,
        call: StoreCall,
        empty: impl FnOnce(&T) -> bool,
        run: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.observer.before(call)?;
        let started = Instant::now();
        let result = run.await;
        let outcome = match &result {
            Ok(v) if empty(v) => CallOutcome::Empty,
            Ok(_) => CallOutcome::Done,
            Err(_) => CallOutcome::Failed,
        };
        self.observer.after(call, started.elapsed(), outcome);
        result
    }

    async fn forward<T>(
        &self,
        call: StoreCall,
        run: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.observe(call, |_| false, run).await
    }
}

#[async_trait]
impl<S: Store, O: StoreObserver> Store for Observed<S, O> {
    async fn submit(
        &self,
        request: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Submitted, StoreError> {
        let run = self.inner.submit(request, actor, now);
        self.forward(StoreCall::Submit, run).await
    }
    async fn submit_with(
        &self,
        request: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
        writes: Vec<Write>,
    ) -> Result<Submitted, StoreError> {
        let run = self.inner.submit_with(request, actor, now, writes);
        self.forward(StoreCall::SubmitWith, run).await
    }
    async fn apply(
        &self,
        id: &str,
        lease: Option<&Lease>,
        writes: Vec<Write>,
    ) -> Result<Request, StoreError> {
        let run = self.inner.apply(id, lease, writes);
        self.forward(StoreCall::Apply, run).await
    }
    async fn get(&self, id: &str) -> Result<Option<Request>, StoreError> {
        let run = self.inner.get(id);
        self.observe(StoreCall::Get, Option::is_none, run).await
    }
    async fn list(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        self.forward(StoreCall::List, self.inner.list(filter)).await
    }
    async fn request_waiting_for(&self, key: &str) -> Result<Option<Request>, StoreError> {
        let run = self.inner.request_waiting_for(key);
        self.observe(StoreCall::RequestWaitingFor, Option::is_none, run)
            .await
    }
    async fn item_definition(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        let run = self.inner.item_definition(hash);
        self.forward(StoreCall::ItemDefinition, run).await
    }
    async fn purge(
        &self,
        before: DateTime<Utc>,
        audit_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        let run = self.inner.purge(before, audit_before, limit);
        self.forward(StoreCall::Purge, run).await
    }
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        let run = self.inner.kv_get(namespace, key);
        self.forward(StoreCall::KvGet, run).await
    }
    async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        max_namespace_bytes: u64,
    ) -> Result<bool, StoreError> {
        let run = self
            .inner
            .kv_set(namespace, key, value, max_namespace_bytes);
        self.forward(StoreCall::KvSet, run).await
    }
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let run = self.inner.kv_delete(namespace, key);
        self.forward(StoreCall::KvDelete, run).await
    }
    async fn parked_requests(
        &self,
        prefix: &str,
        state: RequestState,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError> {
        let run = self.inner.parked_requests(prefix, state, after, limit);
        self.forward(StoreCall::ParkedRequests, run).await
    }
    async fn held_requests(&self, prefix: &str, limit: usize) -> Result<Vec<Request>, StoreError> {
        let run = self.inner.held_requests(prefix, limit);
        self.forward(StoreCall::HeldRequests, run).await
    }
    async fn transition(
        &self,
        id: &str,
        from: RequestState,
        to: RequestState,
        change: StateChange,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        let run = self.inner.transition(id, from, to, change, lease);
        self.forward(StoreCall::Transition, run).await
    }
    async fn update(
        &self,
        id: &str,
        patch: RequestPatch,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        let run = self.inner.update(id, patch, lease);
        self.forward(StoreCall::Update, run).await
    }
    async fn append_event(
        &self,
        id: &str,
        at: DateTime<Utc>,
        kind: EventKind,
        lease: Option<&Lease>,
    ) -> Result<u64, StoreError> {
        let run = self.inner.append_event(id, at, kind, lease);
        self.forward(StoreCall::AppendEvent, run).await
    }
    async fn events(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let run = self.inner.events(id, after_seq, limit);
        self.forward(StoreCall::Events, run).await
    }
    async fn claim(
        &self,
        worker_id: &str,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<(Request, Lease)>, StoreError> {
        let run = self.inner.claim(worker_id, lease_for, now);
        self.observe(StoreCall::Claim, Option::is_none, run).await
    }
    async fn apply_then_claim(
        &self,
        lease: &Lease,
        writes: Vec<Write>,
        worker_id: &str,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> AppliedThenClaimed {
        let call = StoreCall::ApplyThenClaim;
        if let Err(e) = self.observer.before(call) {
            return AppliedThenClaimed {
                applied: Err(e.clone()),
                claimed: Err(e),
            };
        }
        let started = Instant::now();
        let done = self
            .inner
            .apply_then_claim(lease, writes, worker_id, lease_for, now)
            .await;
        let outcome = match &done.claimed {
            _ if done.applied.is_err() => CallOutcome::Failed,
            Err(_) => CallOutcome::Failed,
            Ok(None) => CallOutcome::Empty,
            Ok(Some(_)) => CallOutcome::Done,
        };
        self.observer.after(call, started.elapsed(), outcome);
        done
    }
    async fn heartbeat(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let run = self.inner.heartbeat(lease, lease_for, now);
        self.forward(StoreCall::Heartbeat, run).await
    }
    fn lease_clock(&self) -> LeaseClock {
        self.inner.lease_clock()
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.forward(StoreCall::Release, self.inner.release(lease))
            .await
    }
    async fn start_attempt(&self, lease: &Lease, record: AttemptRecord) -> Result<(), StoreError> {
        let run = self.inner.start_attempt(lease, record);
        self.forward(StoreCall::StartAttempt, run).await
    }
    async fn finish_attempt(
        &self,
        lease: &Lease,
        action_id: &str,
        rollback: bool,
        attempt: u32,
        outcome: AttemptOutcome,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let run = self
            .inner
            .finish_attempt(lease, action_id, rollback, attempt, outcome, at);
        self.forward(StoreCall::FinishAttempt, run).await
    }
    async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        self.forward(StoreCall::Attempts, self.inner.attempts(id))
            .await
    }
    async fn record_decision(
        &self,
        decision: ApprovalDecision,
    ) -> Result<Vec<ApprovalDecision>, StoreError> {
        let run = self.inner.record_decision(decision);
        self.forward(StoreCall::RecordDecision, run).await
    }
    async fn decisions(&self, id: &str) -> Result<Vec<ApprovalDecision>, StoreError> {
        self.forward(StoreCall::Decisions, self.inner.decisions(id))
            .await
    }
    async fn sealed(&self, request_id: &str) -> Result<SealedSecrets, StoreError> {
        self.forward(StoreCall::Sealed, self.inner.sealed(request_id))
            .await
    }
    async fn keys_not_wrapped_by(
        &self,
        kek_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, WrappedKey)>, StoreError> {
        self.forward(
            StoreCall::KeysNotWrappedBy,
            self.inner.keys_not_wrapped_by(kek_id, limit),
        )
        .await
    }
    async fn rewrap_key(
        &self,
        request_id: &str,
        old: &WrappedKey,
        new: &WrappedKey,
    ) -> Result<bool, StoreError> {
        self.forward(
            StoreCall::RewrapKey,
            self.inner.rewrap_key(request_id, old, new),
        )
        .await
    }
    async fn set_quota_limit(
        &self,
        team: &str,
        resource: &str,
        limit: u64,
    ) -> Result<(), StoreError> {
        let run = self.inner.set_quota_limit(team, resource, limit);
        self.forward(StoreCall::SetQuotaLimit, run).await
    }
    async fn set_quota_limits(
        &self,
        team: &str,
        limits: &[(String, u64)],
        audit: AuditRecord,
    ) -> Result<(), StoreError> {
        let run = self.inner.set_quota_limits(team, limits, audit);
        self.forward(StoreCall::SetQuotaLimits, run).await
    }
    async fn reserve_quota(
        &self,
        request_id: &str,
        team: &str,
        resource: &str,
        amount: u64,
    ) -> Result<(), StoreError> {
        let run = self.inner.reserve_quota(request_id, team, resource, amount);
        self.forward(StoreCall::ReserveQuota, run).await
    }
    async fn release_quota(&self, request_id: &str) -> Result<(), StoreError> {
        let run = self.inner.release_quota(request_id);
        self.forward(StoreCall::ReleaseQuota, run).await
    }
    async fn quota_usage(&self, team: &str) -> Result<Vec<QuotaUsage>, StoreError> {
        self.forward(StoreCall::QuotaUsage, self.inner.quota_usage(team))
            .await
    }
    async fn audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        self.forward(StoreCall::Audit, self.inner.audit(record))
            .await
    }
    async fn audit_log(
        &self,
        target: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LoggedAudit>, StoreError> {
        let run = self.inner.audit_log(target, before, limit);
        self.forward(StoreCall::AuditLog, run).await
    }
    async fn request_stats(&self, scope: &StatsScope) -> Result<RequestStats, StoreError> {
        let run = self.inner.request_stats(scope);
        self.forward(StoreCall::RequestStats, run).await
    }
    async fn pending_approvals(
        &self,
        before: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<PendingApproval>, StoreError> {
        let run = self.inner.pending_approvals(before, limit);
        self.forward(StoreCall::PendingApprovals, run).await
    }
    async fn approvals_due(
        &self,
        by: DateTime<Utc>,
        after: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError> {
        let run = self.inner.approvals_due(by, after, limit);
        self.forward(StoreCall::ApprovalsDue, run).await
    }
    async fn wait_for_work(&self, timeout: Duration) {
        let started = Instant::now();
        self.inner.wait_for_work(timeout).await;
        self.observer
            .after(StoreCall::WaitForWork, started.elapsed(), CallOutcome::Done);
    }
    fn event_wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.inner.event_wakeups()
    }
}
