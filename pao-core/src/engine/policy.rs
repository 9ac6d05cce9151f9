//! Retry backoff and circuit breakers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::Digest;

use crate::catalog::model::{Backoff, DurationText, RetryPolicy};

/// The longest wait a remote system's `Retry-After` (or rate-limit reset) can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// A retry policy with every value resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts in all, at least 1.
    pub max_attempts: u32,
    /// Fixed, linear or exponential.
    pub backoff: Backoff,
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// ± this fraction of the delay, spread deterministically per key and attempt.
    pub jitter: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

fn dur(d: &Option<DurationText>) -> Option<Duration> {
    d.as_ref().and_then(DurationText::get)
}

impl Retry {
    /// The action's policy over the item's defaults over the built-in defaults.
    pub fn resolve(action: Option<&RetryPolicy>, defaults: Option<&RetryPolicy>) -> Retry {
        let base = Retry::default();
        let pick = |f: &dyn Fn(&RetryPolicy) -> Option<Duration>| {
            action.and_then(f).or_else(|| defaults.and_then(f))
        };
        Retry {
            max_attempts: action
                .and_then(|a| a.max_attempts)
                .or_else(|| defaults.and_then(|d| d.max_attempts))
                .unwrap_or(base.max_attempts)
                .max(1),
            backoff: action
                .and_then(|a| a.backoff)
                .or_else(|| defaults.and_then(|d| d.backoff))
                .unwrap_or(base.backoff),
            initial: pick(&|p| dur(&p.initial)).unwrap_or(base.initial),
            max: pick(&|p| dur(&p.max)).unwrap_or(base.max),
            jitter: action
                .and_then(|a| a.jitter)
                .or_else(|| defaults.and_then(|d| d.jitter))
                .unwrap_or(base.jitter)
                .clamp(0.0, 1.0),
        }
    }

    /// The delay before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.
    /// `retry_after` from the remote system is a floor, but never more than the policy's `max`
    /// nor [`MAX_RETRY_AFTER`]: a remote system must not park a worker for a year.
    pub fn delay(&self, attempt: u32, key: &str, retry_after: Option<Duration>) -> Duration {
        let n = attempt.max(1);
        let base = match self.backoff {
            Backoff::Fixed => self.initial,
            Backoff::Linear => self.initial.saturating_mul(n),
            Backoff::Exponential => self
                .initial
                .saturating_mul(2u32.saturating_pow((n - 1).min(30))),
        }
        .min(self.max);
        // A deterministic spread in [-jitter, +jitter].
        let h = sha2::Sha256::digest(format!("{key}#{attempt}").as_bytes());
        let unit = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) as f64
            / u64::MAX as f64;
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        let jittered =
            Duration::from_secs_f64((base.as_secs_f64() * factor).max(0.0)).min(self.max);
        match retry_after {
            Some(r) if r > jittered => r.min(self.max).min(MAX_RETRY_AFTER).max(jittered),
            _ => jittered,
        }
    }
}

/// Breaker thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting one trial call through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass; counts consecutive failures.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Calls are refused until `until`.
    Open {
        /// When a trial call may pass.
        until: DateTime<Utc>,
    },
    /// One trial call is in flight; its outcome closes or re-opens the breaker.
    HalfOpen,
}

/// What a call said about the health of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (the call succeeded).
    Healthy,
    /// It failed in a way that may pass later (a timeout, a 5xx, a refused connection).
    Failing,
    /// Nothing: the call was cancelled, never made, or refused for its own input (a 4xx, a
    /// bad configuration).
    Unknown,
}

/// Leave to call a target, from [`Breakers::try_acquire`]. Report the call's outcome with
/// [`BreakerPermit::record`]. A permit dropped without an outcome (the call was cancelled,
/// its run stopped, or it was never made) counts as [`Verdict::Unknown`]: a half-open
/// breaker's trial is given back, so a later call may try again, and the breaker never stays
/// half-open.
#[must_use = "report the call's outcome with `record`"]
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breakers: &'a Breakers,
    target: String,
    /// This call is the half-open breaker's one trial.
    trial: bool,
    at: DateTime<Utc>,
    recorded: bool,
}

impl BreakerPermit<'_> {
    /// Whether this call is the trial of a half-open breaker.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// Records what the call said about its target.
    pub fn record(mut self, verdict: Verdict, now: DateTime<Utc>) {
        self.recorded = true;
        self.breakers.record_verdict(&self.target, verdict, now);
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breakers
                .record_verdict(&self.target, Verdict::Unknown, self.at);
        }
    }
}

/// Circuit breakers, one per target system.
#[derive(Debug, Default)]
pub struct Breakers {
    config: BreakerConfig,
    states: Mutex<BTreeMap<String, BreakerState>>,
}

impl Breakers {
    /// Breakers with these thresholds.
    pub fn new(config: BreakerConfig) -> Breakers {
        Breakers {
            config,
            states: Mutex::default(),
        }
    }

    /// May a call to `target` go now? `Ok` holds the leave to call; report what the call said
    /// with [`BreakerPermit::record`]. `Err(wait)` says how long until a trial is allowed.
    pub fn try_acquire(
        &self,
        target: &str,
        now: DateTime<Utc>,
    ) -> Result<BreakerPermit<'_>, Duration> {
        let permit = |trial| BreakerPermit {
            breakers: self,
            target: target.to_string(),
            trial,
            at: now,
            recorded: false,
        };
        let Ok(mut states) = self.states.lock() else {
            return Ok(permit(false));
        };
        let state = states
            .entry(target.to_string())
            .or_insert(BreakerState::Closed { failures: 0 });
        match *state {
            BreakerState::Closed { .. } => Ok(permit(false)),
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen;
                Ok(permit(true))
            }
            BreakerState::Open { until } => Err((until - now).to_std().unwrap_or_default()),
            BreakerState::HalfOpen => Err(self.config.open_for / 10),
        }
    }

    /// Records a call's outcome: `true` the target answered, `false` it failed.
    pub fn record(&self, target: &str, success: bool, now: DateTime<Utc>) {
        let verdict = if success {
            Verdict::Healthy
        } else {
            Verdict::Failing
        };
        self.record_verdict(target, verdict, now);
    }

    fn record_verdict(&self, target: &str, verdict: Verdict, now: DateTime<Utc>) {
        let Ok(mut states) = self.states.lock() else {
            return;
        };
        let state = states
            .entry(target.to_string())
            .or_insert(BreakerState::Closed { failures: 0 });
        let open_until = now + chrono::Duration::from_std(self.config.open_for).unwrap_or_default();
        *state = match (*state, verdict) {
            (_, Verdict::Healthy) => BreakerState::Closed { failures: 0 },
            // The trial said nothing about the target: the next call may try at once.
            (BreakerState::HalfOpen, Verdict::Unknown) => BreakerState::Open { until: now },
            (other, Verdict::Unknown) => other,
            (BreakerState::HalfOpen, Verdict::Failing) => BreakerState::Open { until: open_until },
            (BreakerState::Closed { failures }, Verdict::Failing)
                if failures + 1 >= self.config.failure_threshold =>
            {
                BreakerState::Open { until: open_until }
            }
            (BreakerState::Closed { failures }, Verdict::Failing) => BreakerState::Closed {
                failures: failures + 1,
            },
            (open @ BreakerState::Open { .. }, Verdict::Failing) => open,
        };
    }

    /// Every breaker's state, for metrics and the API.
    pub fn snapshot(&self) -> BTreeMap<String, BreakerState> {
        self.states.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn exponential_backoff_within_jitter_bounds() {
        let r = Retry {
            max_attempts: 6,
            backoff: Backoff::Exponential,
            initial: Duration::from_secs(2),
            max: Duration::from_secs(60),
            jitter: 0.2,
        };
        for (attempt, base) in [
            (1u32, 2.0f64),
            (2, 4.0),
            (3, 8.0),
            (4, 16.0),
            (5, 32.0),
            (6, 60.0),
            (9, 60.0),
        ] {
            for key in ["a", "b", "c", "d"] {
                let d = r.delay(attempt, key, None).as_secs_f64();
                assert!(
                    d >= base * 0.8 - 1e-9 && d <= (base * 1.2).min(60.0) + 1e-9,
                    "attempt {attempt}: {d}"
                );
            }
        }
        assert_eq!(
            r.delay(1, "a", None),
            r.delay(1, "a", None),
            "deterministic"
        );
        assert_ne!(
            r.delay(1, "a", None),
            r.delay(1, "b", None),
            "spread by key"
        );
        assert_eq!(
            r.delay(1, "a", Some(Duration::from_secs(30))),
            Duration::from_secs(30),
            "Retry-After is a floor"
        );
        assert_eq!(
            r.delay(1, "a", Some(Duration::from_secs(31_536_000))),
            Duration::from_secs(60),
            "but no more than the policy's max"
        );
        let long = Retry {
            max: Duration::from_secs(86_400),
            ..r.clone()
        };
        assert_eq!(
            long.delay(1, "a", Some(Duration::from_secs(31_536_000))),
            MAX_RETRY_AFTER,
            "nor the global ceiling"
        );
    }

    #[test]
    fn fixed_and_linear() {
        let mut r = Retry {
            jitter: 0.0,
            initial: Duration::from_secs(3),
            ..Retry::default()
        };
        r.backoff = Backoff::Fixed;
        assert_eq!(r.delay(4, "k", None), Duration::from_secs(3));
        r.backoff = Backoff::Linear;
        assert_eq!(r.delay(4, "k", None), Duration::from_secs(12));
    }

    #[test]
    fn resolve_prefers_action_then_defaults() {
        let action = RetryPolicy {
            max_attempts: Some(5),
            backoff: None,
            initial: Some("500ms".into()),
            max: None,
            jitter: None,
        };
        let defaults = RetryPolicy {
            max_attempts: Some(2),
            backoff: Some(Backoff::Linear),
            initial: Some("2s".into()),
            max: Some("10s".into()),
            jitter: Some(0.0),
        };
        let r = Retry::resolve(Some(&action), Some(&defaults));
        assert_eq!(r.max_attempts, 5);
        assert_eq!(r.backoff, Backoff::Linear);
        assert_eq!(r.initial, Duration::from_millis(500));
        assert_eq!(r.max, Duration::from_secs(10));
        assert_eq!(r.jitter, 0.0);
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let b = Breakers::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
        });
        for i in 0..2 {
            b.try_acquire("jira", t(i))
                .unwrap()
                .record(Verdict::Failing, t(i));
        }
        assert_eq!(b.snapshot()["jira"], BreakerState::Closed { failures: 2 });
        b.record("jira", false, t(2));
        assert_eq!(b.snapshot()["jira"], BreakerState::Open { until: t(32) });
        assert_eq!(
            b.try_acquire("jira", t(10)).err(),
            Some(Duration::from_secs(22))
        );
        assert!(
            b.try_acquire("other", t(10)).is_ok(),
            "breakers are per target"
        );
        let trial = b.try_acquire("jira", t(32)).expect("trial after open_for");
        assert!(trial.is_trial());
        assert_eq!(b.snapshot()["jira"], BreakerState::HalfOpen);
        assert!(b.try_acquire("jira", t(33)).is_err(), "one trial at a time");
        trial.record(Verdict::Failing, t(33));
        assert_eq!(b.snapshot()["jira"], BreakerState::Open { until: t(63) });
        b.try_acquire("jira", t(63))
            .unwrap()
            .record(Verdict::Healthy, t(63));
        assert_eq!(b.snapshot()["jira"], BreakerState::Closed { failures: 0 });
    }

    /// A trial that says nothing about the target (a 4xx, a cancelled call) or that is never
    /// made gives the trial back: the breaker does not stay half-open.
    #[test]
    fn a_trial_without_a_verdict_is_given_back() {
        let b = Breakers::new(BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_secs(30),
        });
        b.record("tfc", false, t(0));
        let trial = b.try_acquire("tfc", t(30)).unwrap();
        trial.record(Verdict::Unknown, t(31));
        assert_eq!(b.snapshot()["tfc"], BreakerState::Open { until: t(31) });
        let dropped = b.try_acquire("tfc", t(31)).unwrap();
        assert!(dropped.is_trial());
        drop(dropped);
        assert_eq!(b.snapshot()["tfc"], BreakerState::Open { until: t(31) });
        let trial = b.try_acquire("tfc", t(32)).expect("a new trial may pass");
        trial.record(Verdict::Healthy, t(32));
        assert_eq!(b.snapshot()["tfc"], BreakerState::Closed { failures: 0 });
        // Outside a trial an unknown verdict changes nothing.
        let b = Breakers::new(BreakerConfig::default());
        b.record("gh", false, t(40));
        drop(b.try_acquire("gh", t(40)).unwrap());
        b.try_acquire("gh", t(41))
            .unwrap()
            .record(Verdict::Unknown, t(41));
        assert_eq!(b.snapshot()["gh"], BreakerState::Closed { failures: 1 });
    }
}
