//! Retention: ended requests and audit records older than an operator's periods are deleted,
//! in bounded batches, by a periodic job of the server (or an embedder's).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::engine::{EngineError, Orchestrator};
use crate::store::Purged;

/// How long what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Ended requests (with their events, attempts, decisions and quota) are deleted this
    /// long after they last changed; `None` keeps them.
    pub requests: Option<Duration>,
    /// Audit records are deleted this long after they were written; `None` keeps them.
    pub audit: Option<Duration>,
    /// Rows deleted per transaction.
    pub batch: usize,
}

impl Orchestrator {
    /// Deletes what `policy` no longer keeps, a batch per transaction until nothing is left;
    /// returns the totals. Live requests are never deleted.
    pub async fn purge_expired(&self, policy: &RetentionPolicy) -> Result<Purged, EngineError> {
        let mut total = Purged::default();
        if policy.requests.is_none() && policy.audit.is_none() {
            return Ok(total);
        }
        let now = self.clock.now();
        let cutoff = |keep: Option<Duration>| match keep {
            Some(d) => chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            // Keep everything: nothing is older than the earliest instant.
            None => DateTime::<Utc>::MIN_UTC,
        };
        let (before, audit_before) = (cutoff(policy.requests), cutoff(policy.audit));
        let batch = policy.batch.max(1);
        loop {
            let p = self.store.purge(before, audit_before, batch).await?;
            total.requests += p.requests;
            total.audit += p.audit;
            if p.requests < batch as u64 && p.audit < batch as u64 {
                return Ok(total);
            }
            // Let other work in between batches.
            tokio::task::yield_now().await;
        }
    }
}
