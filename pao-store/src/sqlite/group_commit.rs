//! Group commit for SQLite's single writer.
//!
//! With `synchronous = FULL` every SQLite commit waits for the disk (an fsync of the WAL), and
//! a disk does a few hundred of those a second. When many writes arrive at once — a burst of
//! submissions, several workers journaling attempts — committing each alone caps throughput at
//! the disk's fsync rate. Here every write runs inside a SAVEPOINT of one open transaction, and
//! the first writer to come back for its commit commits everything written so far: one fsync
//! for the whole group. A write returns only after the commit that contains it succeeded, so
//! durability is what it was; a write that fails rolls back to its savepoint and leaves the
//! others alone. Alone, a write costs what it cost before (BEGIN, write, COMMIT) plus two
//! savepoint statements.
//!
//! Cancellation: a caller dropped while its write runs leaves a savepoint open; the next
//! writer rolls it back first. The commit itself runs in a spawned task, so a dropped caller
//! never leaves a batch open.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};
use tokio::sync::Mutex;

use pao_core::store::StoreError;

struct Batch {
    conn: Option<PoolConnection<Any>>,
    /// A transaction is open on `conn`.
    open: bool,
    /// Number of the open (or next) batch.
    epoch: u64,
    /// A write started and did not finish (its caller was dropped).
    in_op: bool,
    /// Outcomes of recent commits: (epoch, error text).
    done: VecDeque<(u64, Option<String>)>,
}

/// The SQLite writer.
pub(crate) struct GroupWriter {
    pool: AnyPool,
    batch: Mutex<Batch>,
    writes: AtomicU64,
    commits: AtomicU64,
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

async fn exec(conn: &mut AnyConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql).execute(conn).await.map(|_| ()).map_err(db)
}

/// Undoes the write in the current savepoint and leaves it.
async fn undo_write(conn: &mut AnyConnection) -> Result<(), StoreError> {
    exec(conn, "ROLLBACK TO SAVEPOINT pao_write").await?;
    exec(conn, "RELEASE SAVEPOINT pao_write").await
}

impl GroupWriter {
    pub(crate) fn new(pool: AnyPool) -> Arc<GroupWriter> {
        Arc::new(GroupWriter {
            pool,
            batch: Mutex::new(Batch {
                conn: None,
                open: false,
                epoch: 0,
                in_op: false,
                done: VecDeque::new(),
            }),
            writes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        })
    }

    /// (writes committed, commits): their ratio is the average group size.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.commits.load(Ordering::Relaxed),
        )
    }

    /// Runs `op` as one atomic write and returns once it is durable.
    pub(crate) async fn write<T, F>(self: &Arc<Self>, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    {
        let mut b = self.batch.lock().await;
        let epoch = match self.enter(&mut b).await {
            Ok(e) => e,
            Err(e) => {
                self.abort(&mut b).await;
                return Err(e);
            }
        };
        b.in_op = true;
        let result = match b.conn.as_mut() {
            Some(conn) => op(conn).await,
            None => Err(StoreError::Unavailable("writer connection lost".into())),
        };
        let leave = match b.conn.as_mut() {
            Some(conn) => match &result {
                Ok(_) => exec(conn, "RELEASE SAVEPOINT pao_write").await,
                Err(_) => undo_write(conn).await,
            },
            None => Err(StoreError::Unavailable("writer connection lost".into())),
        };
        b.in_op = false;
        if let Err(e) = leave {
            // The transaction is in an unknown state: give up the whole batch.
            self.abort(&mut b).await;
            return Err(e);
        }
        drop(b);
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                // Our write was undone; the batch may hold others' writes (or nothing) and must
                // not stay open holding SQLite's write lock.
                let me = self.clone();
                let _ = tokio::spawn(async move { me.commit(epoch).await }).await;
                return Err(e);
            }
        };
        // Commit (or learn how the commit that contained this write went). The task runs to
        // the end even if our caller goes away.
        let me = self.clone();
        let outcome = tokio::spawn(async move { me.commit(epoch).await })
            .await
            .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("commit task: {e}"))));
        if outcome.is_ok() {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        outcome.map(|()| value)
    }

    /// Opens a batch if none is open, cleans up after a dropped writer, opens the savepoint.
    async fn enter(&self, b: &mut Batch) -> Result<u64, StoreError> {
        if b.conn.is_none() {
            b.conn = Some(self.pool.acquire().await.map_err(db)?);
        }
        let Some(conn) = b.conn.as_mut() else {
            return Err(StoreError::Unavailable("writer connection lost".into()));
        };
        if b.in_op {
            // A caller was dropped inside its write: undo what it did.
            undo_write(conn).await?;
            b.in_op = false;
        }
        if !b.open {
            exec(conn, "BEGIN IMMEDIATE").await?;
            b.open = true;
        }
        exec(conn, "SAVEPOINT pao_write").await?;
        Ok(b.epoch)
    }

    /// Rolls the open batch back and closes the connection's transaction; every write of the
    /// batch that is still waiting for its commit learns that it failed.
    async fn abort(&self, b: &mut Batch) {
        if let Some(conn) = b.conn.as_mut()
            && b.open
            && exec(conn, "ROLLBACK").await.is_err()
        {
            // The connection is unusable: let the pool replace it.
            if let Some(c) = b.conn.take() {
                c.detach();
            }
        }
        if b.open {
            let e = b.epoch;
            Self::finish(b, e, Some("the write batch was rolled back".into()));
        }
        b.open = false;
        b.in_op = false;
        b.conn = None;
    }

    fn finish(b: &mut Batch, epoch: u64, error: Option<String>) {
        b.done.push_back((epoch, error));
        while b.done.len() > 4096 {
            b.done.pop_front();
        }
        b.epoch = epoch + 1;
    }

    async fn commit(&self, epoch: u64) -> Result<(), StoreError> {
        let mut b = self.batch.lock().await;
        if b.epoch == epoch && b.open {
            if b.in_op {
                // Only reachable if a writer was dropped between its write and its savepoint
                // release; undo that write before committing the rest.
                if let Some(conn) = b.conn.as_mut()
                    && undo_write(conn).await.is_err()
                {
                    self.abort(&mut b).await;
                    return Err(StoreError::Unavailable(
                        "the write batch was rolled back".into(),
                    ));
                }
                b.in_op = false;
            }
            let r = match b.conn.as_mut() {
                Some(conn) => exec(conn, "COMMIT").await,
                None => Err(StoreError::Unavailable("writer connection lost".into())),
            };
            match r {
                Ok(()) => {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    b.open = false;
                    Self::finish(&mut b, epoch, None);
                    // Give the connection back: on `sqlite::memory:` the readers share it.
                    b.conn = None;
                    Ok(())
                }
                Err(e) => {
                    self.abort(&mut b).await;
                    Err(e)
                }
            }
        } else {
            match b.done.iter().rev().find(|(e, _)| *e == epoch) {
                Some((_, None)) => Ok(()),
                Some((_, Some(err))) => Err(StoreError::Unavailable(err.clone())),
                None => Err(StoreError::Unavailable(
                    "the outcome of the write batch is unknown".into(),
                )),
            }
        }
    }
}
