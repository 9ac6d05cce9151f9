//! PostgreSQL: the connections of the worker path (claims, a run's batches, heartbeats).
//!
//! sqlx's pool pings every connection given back to it before another caller may take it (one
//! more round trip, and a wake-up of the server process, per statement), because a caller may
//! have dropped its future half-way through a query. A worker writes two statements per
//! one-action request, so those pings were a third of its round trips. The lane keeps its own
//! idle connections, taken from the pool once, and knows when one was given back clean: only a
//! statement that ran to its end, without an error, returns the connection to the lane. One
//! dropped mid-query or that failed is closed, and the next caller opens a fresh one.
//!
//! A connection idle for `IDLE_PING_AFTER` (`pg/open.rs`, 100 ms) or longer is pinged before use, as
//! the pool does: the server may have closed it meanwhile.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pao_core::store::StoreError;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sql::db;

/// At most `size` connections, each in use by one statement at a time.
pub(crate) struct Lane {
    pool: AnyPool,
    idle: Mutex<Vec<(AnyConnection, Instant)>>,
    permits: Arc<Semaphore>,
    ping_after: Duration,
}

impl Lane {
    /// A lane of at most `size` connections opened through `pool` (and then detached from it).
    pub(crate) fn new(pool: AnyPool, size: u32, ping_after: Duration) -> Arc<Lane> {
        Arc::new(Lane {
            pool,
            idle: Mutex::default(),
            permits: Arc::new(Semaphore::new(size.max(1) as usize)),
            ping_after,
        })
    }

    /// Runs `op` on a lane connection. The connection goes back to the lane unless `op`
    /// failed with [`StoreError::Unavailable`] (the database's or the connection's error; a
    /// refusal such as a lost lease leaves it clean), or this future was dropped before `op`
    /// ended: then it is closed.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    {
        self.run_then(op, |r| !matches!(r, Err(StoreError::Unavailable(_))))
            .await?
    }

    /// [`run`](Self::run) for any result: `clean` says whether the connection may be used
    /// again after `op` returned it.
    pub(crate) async fn run_then<T, F>(
        self: &Arc<Self>,
        op: F,
        clean: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut AnyConnection) -> T,
    {
        let mut held = self.take().await?;
        let result = op(held.conn.as_mut().expect("a held connection")).await;
        held.clean = clean(&result);
        Ok(result)
    }

    /// An idle connection (pinged first if it rested long), or a new one.
    async fn take(self: &Arc<Self>) -> Result<Held, StoreError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        loop {
            let next = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some((mut conn, since)) = next else { break };
            if since.elapsed() >= self.ping_after && conn.ping().await.is_err() {
                continue;
            }
            return Ok(self.hold(conn, permit));
        }
        let conn = self.pool.acquire().await.map_err(db)?.detach();
        Ok(self.hold(conn, permit))
    }

    fn hold(self: &Arc<Self>, conn: AnyConnection, permit: OwnedSemaphorePermit) -> Held {
        Held {
            conn: Some(conn),
            clean: false,
            lane: self.clone(),
            _permit: permit,
        }
    }

    /// Closes the idle connections; later calls fail.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle = self
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }
}

/// A connection out of the lane.
struct Held {
    conn: Option<AnyConnection>,
    /// The statement ran to its end without an error.
    clean: bool,
    lane: Arc<Lane>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.clean
            && !self.lane.permits.is_closed()
            && let Ok(mut idle) = self.lane.idle.lock()
        {
            idle.push((conn, Instant::now()));
        }
        // Otherwise the connection is dropped here, which closes its socket.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    /// A lane on `PAO_TEST_DATABASE_URL`, or `None` (skip) outside CI when it is not set.
    async fn lane() -> Option<Arc<Lane>> {
        let Ok(url) = std::env::var("PAO_TEST_DATABASE_URL") else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "PAO_TEST_DATABASE_URL is not set; CI requires the PostgreSQL tests to run"
            );
            return None;
        };
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect to PAO_TEST_DATABASE_URL");
        Some(Lane::new(pool, 2, Duration::from_secs(60)))
    }

    async fn pid(c: &mut AnyConnection) -> Result<i32, StoreError> {
        let row = sqlx::query("SELECT pg_backend_pid() AS pid")
            .fetch_one(c)
            .await
            .map_err(db)?;
        row.try_get("pid").map_err(db)
    }

    fn idle(lane: &Lane) -> usize {
        lane.idle.lock().unwrap().len()
    }

    #[tokio::test]
    async fn connections_come_back_only_clean() {
        let Some(lane) = lane().await else { return };
        // A statement that ran to its end: the connection is kept and used again.
        let first = lane
            .run(async |c: &mut AnyConnection| pid(c).await)
            .await
            .unwrap();
        assert_eq!(idle(&lane), 1);
        let again = lane
            .run(async |c: &mut AnyConnection| pid(c).await)
            .await
            .unwrap();
        assert_eq!(first, again, "the idle connection is reused");

        // A refusal is no fault of the connection: it is kept.
        let refused: Result<(), _> = lane
            .run(async |_: &mut AnyConnection| Err(StoreError::LeaseLost("r".into())))
            .await;
        assert!(matches!(refused, Err(StoreError::LeaseLost(_))));
        assert_eq!(idle(&lane), 1);

        // A database or connection error: the connection is closed.
        let failed: Result<(), _> = lane
            .run(async |c: &mut AnyConnection| {
                sqlx::query("SELECT no_such_column FROM pg_class")
                    .execute(c)
                    .await
                    .map(|_| ())
                    .map_err(db)
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))));
        assert_eq!(idle(&lane), 0, "a connection that failed is not kept");
        let after_error = lane
            .run(async |c: &mut AnyConnection| pid(c).await)
            .await
            .unwrap();
        assert_ne!(after_error, first, "a new connection replaced it");

        // A caller that gives up half-way through a statement: the connection, whose answer
        // is still on its way, must not serve the next statement.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(100),
            lane.run(async |c: &mut AnyConnection| {
                sqlx::query("SELECT pg_sleep(2)")
                    .execute(c)
                    .await
                    .map(|_| ())
                    .map_err(db)
            }),
        )
        .await;
        assert!(gave_up.is_err(), "the statement was cut off");
        assert_eq!(
            idle(&lane),
            0,
            "a connection dropped mid-statement is not kept"
        );
        let n: i64 = lane
            .run(async |c: &mut AnyConnection| {
                let row = sqlx::query("SELECT 41 + 1 AS n")
                    .fetch_one(c)
                    .await
                    .map_err(db)?;
                row.try_get("n").map_err(db)
            })
            .await
            .unwrap();
        assert_eq!(n, 42, "the next statement gets its own answer");
        lane.close().await;
        let closed: Result<(), _> = lane.run(async |_: &mut AnyConnection| Ok(())).await;
        assert!(closed.is_err(), "a closed lane takes no more statements");
    }
}
