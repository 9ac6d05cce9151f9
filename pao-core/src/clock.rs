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
