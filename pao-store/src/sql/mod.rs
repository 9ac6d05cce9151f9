//! One implementation for both databases over sqlx's `Any` driver: the SQL is shared (`$N`
//! placeholders work in both), except for the claim and quota statements where PostgreSQL
//! takes row locks (`FOR UPDATE SKIP LOCKED`) and SQLite relies on its single writer.
//!
//! Here: the store and how it opens; `rows` converts rows and builds the statement parts both
//! databases share, `tx` writes inside a transaction (batches, events, attempts, quota), and
//! `store` implements [`Store`]. What only one database does (opening, migrating, the WAL
//! checkpointer and backups; the pool, LISTEN/NOTIFY and one-statement batches) is in
//! [`crate::sqlite`] and [`crate::pg`].

use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::Notify;

mod rows;
mod store;
mod tx;

pub(crate) use rows::{
    COLUMNS, claim_statement, claimed, db, json, ms, rollback_name, row_to_request,
};
pub(crate) use tx::fenced_state;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (embedded).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Opening or migrating the database failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL names no supported database.
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// Connecting failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, without password.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Creating the folder of the SQLite file failed.
    #[error("cannot create {0}: {1}")]
    Folder(String, std::io::Error),
}

/// A [`Store`] on SQLite or PostgreSQL.
pub struct SqlStore {
    /// Reads (and, on PostgreSQL, everything).
    pool: AnyPool,
    /// Writes: on SQLite a pool of one connection, on PostgreSQL the same pool as `pool`.
    writer: AnyPool,
    /// How writes reach `writer`.
    writes: Writes,
    dialect: Dialect,
    work: Arc<Notify>,
    /// PostgreSQL: the requests whose events were appended, from `LISTEN pao_events`.
    events: Option<tokio::sync::broadcast::Sender<String>>,
    /// PostgreSQL: the LISTEN task; SQLite: the WAL checkpointer.
    background: Option<tokio::task::JoinHandle<()>>,
}

/// How a store's writes reach the database.
enum Writes {
    /// SQLite: every write through the group-committing single writer.
    Grouped(Arc<crate::sqlite::group_commit::GroupWriter>),
    /// PostgreSQL: transactions on the pool; the worker path's single statements (claims,
    /// heartbeats, one-statement batches) on the lane, without sqlx's ping per statement.
    Pooled(Arc<crate::pg::worker_connections::Lane>),
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        if let Some(task) = &self.background {
            task.abort();
        }
    }
}

/// `url` with its password masked, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl SqlStore {
    /// Opens (creating a SQLite file and its folder when missing) and migrates.
    pub async fn open(url: &str) -> Result<SqlStore, OpenError> {
        SqlStore::open_with(url, 10).await
    }

    /// Opens with a pool of at most `max_connections`.
    pub async fn open_with(url: &str, max_connections: u32) -> Result<SqlStore, OpenError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(OpenError::UnsupportedUrl(url.to_string()));
        };
        let (pool, writer, wal) = match dialect {
            Dialect::Sqlite => crate::sqlite::open::connect(url, max_connections).await?,
            Dialect::Postgres => {
                let pool = crate::pg::open::connect(url, max_connections).await?;
                (pool.clone(), pool, false)
            }
        };
        match dialect {
            Dialect::Sqlite => crate::sqlite::open::migrate(&writer).await?,
            Dialect::Postgres => crate::pg::open::migrate(&pool).await?,
        }
        let work = Arc::new(Notify::new());
        let events = (dialect == Dialect::Postgres)
            .then(|| tokio::sync::broadcast::channel(crate::pg::open::EVENT_WAKEUPS).0);
        let background = match (dialect, &events) {
            (Dialect::Postgres, Some(events)) => Some(crate::pg::open::spawn_listener(
                url.to_string(),
                work.clone(),
                events.clone(),
            )),
            (Dialect::Sqlite, _) if wal => {
                Some(crate::sqlite::open::spawn_checkpointer(pool.clone()))
            }
            _ => None,
        };
        let writes = match dialect {
            Dialect::Sqlite => Writes::Grouped(crate::sqlite::group_commit::GroupWriter::new(
                writer.clone(),
            )),
            Dialect::Postgres => Writes::Pooled(crate::pg::worker_connections::Lane::new(
                writer.clone(),
                max_connections,
                crate::pg::open::IDLE_PING_AFTER,
            )),
        };
        Ok(SqlStore {
            pool,
            writer,
            writes,
            dialect,
            work,
            events,
            background,
        })
    }

    /// SQLite only: how many writes were committed and in how many commits (group commit puts
    /// concurrent writes into one); `None` on PostgreSQL.
    pub fn group_commit_stats(&self) -> Option<(u64, u64)> {
        match &self.writes {
            Writes::Grouped(g) => Some(g.stats()),
            Writes::Pooled(_) => None,
        }
    }

    /// The database kind.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pool, for operators' tooling. On SQLite it is the pool the store reads with; writes
    /// through it wait (busy_timeout) for the store's single writer connection.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the store's connections (the pool above and, on SQLite, the writer; on
    /// PostgreSQL the worker path's).
    pub async fn close(&self) {
        if let Writes::Pooled(lane) = &self.writes {
            lane.close().await;
        }
        self.pool.close().await;
        self.writer.close().await;
    }
}
