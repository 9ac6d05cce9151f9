//! Per-principal rate limiting (governor's GCRA, keyed by principal id): one noisy client
//! cannot starve the others. Over the limit, the API answers 429 with `Retry-After`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A keyed limiter.
pub struct PrincipalLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
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
        }
    }

    /// `Err(wait)` when `principal` is over its rate.
    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&principal.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}
