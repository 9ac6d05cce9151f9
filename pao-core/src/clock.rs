//! Time enters the engine through [`Clock`], so tests run with tokio's paused clock: backoffs,
//! timeouts, leases and approval deadlines pass instantly and deterministically.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Wall-clock time and sleeping.
#[async_trait]
pub trait Clock: Send + Sync {
    /// Now, for timestamps and deadlines.
    fn now(&self) -> DateTime<Utc>;
    /// Waits.
    async fn sleep(&self, d: Duration);
}

/// The real clock: `Utc::now()` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// A clock that starts at a fixed instant and advances with tokio's (possibly paused) time:
/// under `#[tokio::test(start_paused = true)]` it moves only when the runtime auto-advances.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now.
    pub fn starting_at(base: DateTime<Utc>) -> TokioClock {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

#[async_trait]
impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.base + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// A clock that reads what it is set to: [`ManualClock::set`] and [`ManualClock::advance`]
/// move it; it never moves by itself. Sleeping waits real time. For tests of dates and
/// deadlines (restricted periods, approval timeouts) in a server that otherwise runs normally.
#[derive(Debug)]
pub struct ManualClock {
    now: std::sync::Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock reading `at`.
    pub fn at(at: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: std::sync::Mutex::new(at),
        }
    }

    /// Sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Moves the time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += chrono::Duration::from_std(d).unwrap_or_default();
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}
