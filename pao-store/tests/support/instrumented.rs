//! A [`Store`] wrapper for tests and the bench: times every claim, counts calls, and can fail
//! the next heartbeats with `Unavailable` (a connection dropped mid-query).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pao_core::store::*;

pub struct InstrumentedStore<S> {
    pub inner: S,
    /// Heartbeats still to fail.
    pub fail_heartbeats: AtomicUsize,
    /// Heartbeats that reached the store.
    pub heartbeats: AtomicUsize,
    /// How long each claim took, and whether it found work.
    pub claims: Mutex<Vec<(Duration, bool)>>,
}

impl<S: Store> InstrumentedStore<S> {
    pub fn new(inner: S) -> InstrumentedStore<S> {
        InstrumentedStore {
            inner,
            fail_heartbeats: AtomicUsize::new(0),
            heartbeats: AtomicUsize::new(0),
            claims: Mutex::default(),
        }
    }

    /// Claim latencies so far (with whether each found work), and forgets them.
    pub fn take_claims(&self) -> Vec<(Duration, bool)> {
        std::mem::take(&mut *self.claims.lock().unwrap())
    }
}

#[async_trait]
impl<S: Store> Store for InstrumentedStore<S> {
    async fn submit(
        &self,
        request: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Submitted, StoreError> {
        self.inner.submit(request, actor, now).await
    }
    async fn submit_with(
        &self,
        request: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
        writes: Vec<Write>,
    ) -> Result<Submitted, StoreError> {
        self.inner.submit_with(request, actor, now, writes).await
    }
    async fn apply(
        &self,
        id: &str,
        lease: Option<&Lease>,
        writes: Vec<Write>,
    ) -> Result<Request, StoreError> {
        self.inner.apply(id, lease, writes).await
    }
    async fn get(&self, id: &str) -> Result<Option<Request>, StoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        self.inner.list(filter).await
    }
    async fn transition(
        &self,
        id: &str,
        from: pao_core::lifecycle::RequestState,
        to: pao_core::lifecycle::RequestState,
        change: StateChange,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        self.inner.transition(id, from, to, change, lease).await
    }
    async fn update(
        &self,
        id: &str,
        patch: RequestPatch,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        self.inner.update(id, patch, lease).await
    }
    async fn append_event(
        &self,
        id: &str,
        at: DateTime<Utc>,
        kind: EventKind,
        lease: Option<&Lease>,
    ) -> Result<u64, StoreError> {
        self.inner.append_event(id, at, kind, lease).await
    }
    async fn events(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id, after_seq, limit).await
    }
    async fn claim(
        &self,
        worker_id: &str,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<(Request, Lease)>, StoreError> {
        let t = Instant::now();
        let r = self.inner.claim(worker_id, lease_for, now).await;
        let found = matches!(r, Ok(Some(_)));
        self.claims.lock().unwrap().push((t.elapsed(), found));
        r
    }
    async fn heartbeat(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.heartbeats.fetch_add(1, Ordering::SeqCst);
        if self
            .fail_heartbeats
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable(
                "error communicating with database: connection reset (injected)".into(),
            ));
        }
        self.inner.heartbeat(lease, lease_for, now).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }
    async fn start_attempt(&self, lease: &Lease, record: AttemptRecord) -> Result<(), StoreError> {
        self.inner.start_attempt(lease, record).await
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
        self.inner
            .finish_attempt(lease, action_id, rollback, attempt, outcome, at)
            .await
    }
    async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        self.inner.attempts(id).await
    }
    async fn record_decision(
        &self,
        decision: ApprovalDecision,
    ) -> Result<Vec<ApprovalDecision>, StoreError> {
        self.inner.record_decision(decision).await
    }
    async fn decisions(&self, id: &str) -> Result<Vec<ApprovalDecision>, StoreError> {
        self.inner.decisions(id).await
    }
    async fn set_quota_limit(
        &self,
        team: &str,
        resource: &str,
        limit: u64,
    ) -> Result<(), StoreError> {
        self.inner.set_quota_limit(team, resource, limit).await
    }
    async fn reserve_quota(
        &self,
        request_id: &str,
        team: &str,
        resource: &str,
        amount: u64,
    ) -> Result<(), StoreError> {
        self.inner
            .reserve_quota(request_id, team, resource, amount)
            .await
    }
    async fn release_quota(&self, request_id: &str) -> Result<(), StoreError> {
        self.inner.release_quota(request_id).await
    }
    async fn quota_usage(&self, team: &str) -> Result<Vec<QuotaUsage>, StoreError> {
        self.inner.quota_usage(team).await
    }
    async fn audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        self.inner.audit(record).await
    }
    async fn audit_log(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit_log(target, limit).await
    }
    async fn wait_for_work(&self, timeout: Duration) {
        self.inner.wait_for_work(timeout).await
    }
}
