//! Finished requests kept in memory for `GET /requests/{id}/status`.
//!
//! Clients poll the status of a request until it ends, and CI pipelines keep polling ended
//! ones. A request in a terminal state no longer changes: the lifecycle has no move out of
//! `Completed`, `Failed`, `Cancelled` or `Rejected`, and its lease, which every attempt write
//! needs, was dropped when it got there. So its row and its attempt journal can be served from
//! memory instead of two database reads, on this replica and on every other one.
//!
//! Entries expire after [`FinishedRequests::ttl`] (a purge, or a rare patch of an ended
//! request through the store, shows within that time) and the least recently read go first
//! when [`FinishedRequests`] is full. Who may see a request is checked on every read, on the
//! cached copy, as on a stored one.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pao_core::service::{Progress, RequestStatus};
use pao_core::store::Request;

/// A finished request with its final progress.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The request (in a terminal state).
    pub request: Arc<Request>,
    /// Its progress, from its final attempt journal.
    pub progress: Arc<Progress>,
}

/// The cache.
pub struct FinishedRequests {
    entries: Mutex<lru::LruCache<String, (Instant, Finished)>>,
    ttl: Duration,
}

impl FinishedRequests {
    /// Keeps up to `capacity` requests for `ttl` each; a capacity of 0 keeps none.
    pub fn new(capacity: usize, ttl: Duration) -> FinishedRequests {
        FinishedRequests {
            entries: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            ttl: if capacity == 0 { Duration::ZERO } else { ttl },
        }
    }

    /// How long an entry is served.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The finished request `id`, if kept and not expired.
    pub fn get(&self, id: &str) -> Option<Finished> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(id) {
            Some((at, f)) if at.elapsed() < self.ttl => Some(f.clone()),
            Some(_) => {
                entries.pop(id);
                None
            }
            None => None,
        }
    }

    /// Keeps a request's status (its journal read after it was seen in its terminal state);
    /// a request that has not ended is not kept.
    pub fn put(&self, status: &RequestStatus) {
        let request = &status.request;
        if !request.state.is_terminal() || self.ttl.is_zero() {
            return;
        }
        let f = Finished {
            request: Arc::new(request.clone()),
            progress: Arc::new(status.progress.clone()),
        };
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(request.id.clone(), (Instant::now(), f));
    }

    /// How many are kept (expired ones included until read).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pao_core::lifecycle::RequestState;

    fn request(id: &str, state: RequestState) -> RequestStatus {
        let mut r: Request = serde_json::from_value(serde_json::json!({
            "id": id, "item_id": "i", "item_version": "1", "item_hash": "h",
            "fields": {}, "requester": { "id": "ada", "teams": [], "roles": [] },
            "team": "t", "environment": null, "priority": 0, "idempotency_key": null,
            "correlation_id": "c", "retry_of": null, "state": "completed",
            "rollback": "none", "error": null, "approval_due": null, "escalated": false,
            "cancel_requested": false, "waiting_for": null,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .expect("a request");
        r.state = state;
        RequestStatus {
            progress: Progress::of(&r, &[], 0),
            request: r,
        }
    }

    #[test]
    fn keeps_only_ended_requests_until_they_expire() {
        let cache = FinishedRequests::new(2, Duration::from_millis(200));
        cache.put(&request("live", RequestState::InProgress));
        assert!(cache.get("live").is_none(), "a live request is not kept");
        cache.put(&request("done", RequestState::Completed));
        let got = cache.get("done").expect("kept");
        assert_eq!(got.request.state, RequestState::Completed);
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get("done").is_none(), "expired");
        assert!(cache.is_empty(), "an expired entry is dropped when read");
    }

    #[test]
    fn the_least_recently_read_goes_first() {
        let cache = FinishedRequests::new(2, Duration::from_secs(60));
        cache.put(&request("a", RequestState::Failed));
        cache.put(&request("b", RequestState::Cancelled));
        assert!(cache.get("a").is_some());
        cache.put(&request("c", RequestState::Rejected));
        assert!(cache.get("b").is_none(), "b was read least recently");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = FinishedRequests::new(0, Duration::from_secs(60));
        cache.put(&request("a", RequestState::Completed));
        assert!(cache.get("a").is_none());
    }
}
