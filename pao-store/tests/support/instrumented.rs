//! A [`Store`] wrapper for tests and the bench: times every claim (alone or with a run's last
//! batch), counts heartbeats, and can fail the next heartbeats with `Unavailable` (a connection
//! dropped mid-query).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pao_core::store::*;

/// A store with [`Instruments`] on every call.
pub type InstrumentedStore<S> = Observed<S, Instruments>;

/// Wraps `inner`.
pub fn instrumented<S: Store>(inner: S) -> InstrumentedStore<S> {
    Observed::new(inner, Instruments::default())
}

#[derive(Default)]
pub struct Instruments {
    /// Heartbeats still to fail.
    pub fail_heartbeats: AtomicUsize,
    /// Heartbeats that reached the store.
    pub heartbeats: AtomicUsize,
    /// How long each claim took, and whether it found work.
    pub claims: Mutex<Vec<(Duration, bool)>>,
    /// How long each `apply_then_claim` (a run's last batch with the claim of the next
    /// request) took, and whether its claim found work.
    pub batch_claims: Mutex<Vec<(Duration, bool)>>,
}

impl Instruments {
    /// Claim latencies so far (with whether each found work), and forgets them.
    pub fn take_claims(&self) -> Vec<(Duration, bool)> {
        std::mem::take(&mut *self.claims.lock().unwrap())
    }

    /// `apply_then_claim` latencies so far (with whether the claim found work), and forgets
    /// them.
    pub fn take_batch_claims(&self) -> Vec<(Duration, bool)> {
        std::mem::take(&mut *self.batch_claims.lock().unwrap())
    }
}

impl StoreObserver for Instruments {
    fn before(&self, call: StoreCall) -> Result<(), StoreError> {
        if call == StoreCall::Heartbeat {
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
        }
        Ok(())
    }

    fn after(&self, call: StoreCall, took: Duration, outcome: CallOutcome) {
        let found = outcome == CallOutcome::Done;
        match call {
            StoreCall::Claim => self.claims.lock().unwrap().push((took, found)),
            StoreCall::ApplyThenClaim => self.batch_claims.lock().unwrap().push((took, found)),
            _ => {}
        }
    }
}
