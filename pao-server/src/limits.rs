//! Per-principal rate limiting (governor's GCRA, keyed by principal id, or by client address
//! for callers without a valid credential): one noisy client cannot starve the others. Over
//! the limit, the API answers 429 with `Retry-After`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A keyed limiter.
pub struct PrincipalLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    checks: std::sync::atomic::AtomicU64,
}

impl PrincipalLimiter {
    /// `per_second` sustained with `burst` on top; 0 turns limiting off.
    pub fn new(per_second: u32, burst: u32) -> PrincipalLimiter {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        PrincipalLimiter {
            limiter,
            clock: DefaultClock::default(),
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Err(wait)` when `principal` is over its rate.
    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        // Keys that are back to a full burst carry no state worth keeping: dropping them now
        // and then keeps the map as large as the set of recently active keys, not of every
        // key ever seen.
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 4096 == 4095 {
            l.retain_recent();
            l.shrink_to_fit();
        }
        l.check_key(&principal.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Open WebSocket streams, per principal and in all: a slot is taken before the upgrade and
/// given back when the stream ends.
pub struct SocketSlots {
    per_principal: usize,
    total: usize,
    open: std::sync::Mutex<(usize, std::collections::HashMap<String, usize>)>,
}

/// One open stream; dropping it frees the slot.
pub struct SocketSlot {
    slots: std::sync::Arc<SocketSlots>,
    principal: String,
}

impl SocketSlots {
    /// At most `per_principal` streams per principal and `total` in all.
    pub fn new(per_principal: usize, total: usize) -> SocketSlots {
        SocketSlots {
            per_principal,
            total,
            open: std::sync::Mutex::default(),
        }
    }

    /// A slot for `principal`, or why there is none.
    pub fn take(self: &std::sync::Arc<Self>, principal: &str) -> Result<SocketSlot, &'static str> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| "the server is shutting down")?;
        if open.0 >= self.total {
            return Err("the server has as many open streams as it allows");
        }
        let mine = open.1.entry(principal.to_string()).or_default();
        if *mine >= self.per_principal {
            return Err("you have as many open streams as one principal may");
        }
        *mine += 1;
        open.0 += 1;
        Ok(SocketSlot {
            slots: self.clone(),
            principal: principal.to_string(),
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.slots.open.lock() {
            open.0 = open.0.saturating_sub(1);
            if let Some(n) = open.1.get_mut(&self.principal) {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(&self.principal);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_keys_are_dropped() {
        let l = PrincipalLimiter::new(1000, 1000);
        for i in 0..10_000 {
            l.check(&format!("p{i}")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1100));
        for _ in 0..4096 {
            l.check("steady").ok();
        }
        let len = l.limiter.as_ref().map_or(0, |l| l.len());
        assert!(len < 100, "{len} keys kept");
    }

    #[test]
    fn socket_slots_are_capped_and_given_back() {
        let s = std::sync::Arc::new(SocketSlots::new(2, 3));
        let a1 = s.take("a").unwrap();
        let _a2 = s.take("a").unwrap();
        assert!(s.take("a").is_err(), "per principal");
        let _b1 = s.take("b").unwrap();
        assert!(s.take("c").is_err(), "in all");
        drop(a1);
        assert!(s.take("a").is_ok());
    }
}
