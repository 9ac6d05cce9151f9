//! One implementation for both databases over sqlx's `Any` driver: the SQL is shared (`$N`
//! placeholders work in both), except for the claim and quota statements where PostgreSQL
//! takes row locks (`FOR UPDATE SKIP LOCKED`) and SQLite relies on its single writer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use pao_core::lifecycle::RequestState;
use pao_core::store::*;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::Notify;

use crate::params::Params;

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
        let background = match dialect {
            Dialect::Postgres => Some(crate::pg::open::spawn_listener(
                url.to_string(),
                work.clone(),
            )),
            Dialect::Sqlite if wal => Some(crate::sqlite::open::spawn_checkpointer(pool.clone())),
            Dialect::Sqlite => None,
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

    /// Deletes ended requests (and their events, attempts, decisions) last updated before
    /// `before`, and audit records older than `audit_before`; returns how many requests went.
    pub async fn purge(
        &self,
        before: DateTime<Utc>,
        audit_before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let n = self
            .write(async |tx: &mut AnyConnection| {
                let cutoff = ms(before);
                let ended =
                    "state IN ('completed', 'failed', 'cancelled', 'rejected') AND updated_at < $1";
                release_in(
                    &mut *tx,
                    &format!("request_id IN (SELECT id FROM requests WHERE {ended})"),
                    cutoff,
                )
                .await?;
                for table in ["events", "attempts", "decisions"] {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE request_id IN (SELECT id FROM requests WHERE {ended})"
            )))
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
                }
                let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM requests WHERE {ended}"
                )))
                .bind(cutoff)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                sqlx::query("DELETE FROM audit WHERE at < $1")
                    .bind(ms(audit_before))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                Ok(n)
            })
            .await?;
        Ok(n)
    }
}

pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Unavailable(format!("corrupt stored document: {e}")))
}

pub(crate) const COLUMNS: &str = "id, item_id, item_version, item_hash, fields, requester, team, environment, priority, \
    idempotency_key, correlation_id, retry_of, state, rollback, error, approval_due, escalated, cancel_requested, \
    waiting_for, created_at, updated_at";

pub(crate) fn rollback_name(r: RollbackStatus) -> &'static str {
    match r {
        RollbackStatus::None => "none",
        RollbackStatus::InProgress => "in_progress",
        RollbackStatus::Complete => "complete",
        RollbackStatus::Incomplete => "incomplete",
    }
}

/// The database's clock, in Unix milliseconds. Leases are taken, renewed and judged by it,
/// never by a worker's: workers on several hosts whose clocks disagree still agree on when a
/// lease ends. PostgreSQL: the start of the statement (`statement_timestamp()`, stable within
/// it). SQLite: its own `unixepoch` (the same within a statement); every process of one SQLite
/// database runs on one host (WAL needs shared memory), so this is that host's clock.
pub(crate) fn db_now(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT",
        Dialect::Sqlite => "CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)",
    }
}

/// A lease's length in milliseconds, as a statement parameter.
pub(crate) fn lease_ms(lease_for: Duration) -> i64 {
    i64::try_from(lease_for.as_millis()).unwrap_or(i64::MAX / 4)
}

/// The claim: the next runnable request, highest priority then oldest, gets a lease for
/// `worker` for `lease_ms` milliseconds of the database's clock (a new fencing token), and
/// comes back whole with `lease_token` and `lease_expires_at`. `[worker, lease_ms]` and `not`
/// (a request id it must not take) are placeholders.
///
/// The predicate is the one of the partial index `requests_runnable` (a queued request never
/// waits for anything outside), which the scan walks in claim order. PostgreSQL skips rows
/// other claims hold; SQLite has a single writer.
pub(crate) fn claim_statement(
    dialect: Dialect,
    [worker, lease_ms]: [&str; 2],
    not: Option<&str>,
) -> String {
    let (hint, lock) = match dialect {
        Dialect::Postgres => ("", " FOR UPDATE SKIP LOCKED"),
        Dialect::Sqlite => (" INDEXED BY requests_runnable", ""),
    };
    let now = db_now(dialect);
    let not = not.map(|p| format!(" AND id <> {p}")).unwrap_or_default();
    format!(
        "UPDATE requests SET lease_owner = {worker}, lease_token = lease_token + 1, lease_expires_at = {now} + {lease_ms} \
         WHERE id = (SELECT id FROM requests{hint} WHERE state IN ('queued', 'in_progress', 'post_fulfillment') \
         AND waiting_for IS NULL AND (lease_expires_at IS NULL OR lease_expires_at <= {now}){not} \
         ORDER BY priority DESC, created_at, id LIMIT 1{lock}) RETURNING {COLUMNS}, lease_token, lease_expires_at"
    )
}

/// The request and lease of a row the claim statement returned.
pub(crate) fn claimed(row: &AnyRow, worker_id: &str) -> Result<(Request, Lease), StoreError> {
    let request = row_to_request(row)?;
    let token: i64 = row.try_get("lease_token").map_err(db)?;
    let expires: i64 = row.try_get("lease_expires_at").map_err(db)?;
    let lease = Lease {
        request_id: request.id.clone(),
        worker_id: worker_id.to_string(),
        token: token as u64,
        expires_at: at(expires),
    };
    Ok((request, lease))
}

pub(crate) fn row_to_request(row: &AnyRow) -> Result<Request, StoreError> {
    let get_s = |c: &str| row.try_get::<String, _>(c).map_err(db);
    let get_os = |c: &str| row.try_get::<Option<String>, _>(c).map_err(db);
    let get_i = |c: &str| row.try_get::<i64, _>(c).map_err(db);
    let state = get_s("state")?;
    Ok(Request {
        id: get_s("id")?,
        item_id: get_s("item_id")?,
        item_version: get_s("item_version")?,
        item_hash: get_s("item_hash")?,
        fields: parse(&get_s("fields")?)?,
        requester: parse(&get_s("requester")?)?,
        team: get_s("team")?,
        environment: get_os("environment")?,
        priority: get_i("priority")? as i32,
        idempotency_key: get_os("idempotency_key")?,
        correlation_id: get_s("correlation_id")?,
        retry_of: get_os("retry_of")?,
        state: RequestState::parse(&state)
            .ok_or_else(|| StoreError::Unavailable(format!("unknown state `{state}`")))?,
        rollback: parse(&format!("\"{}\"", get_s("rollback")?))?,
        error: get_os("error")?,
        approval_due: row
            .try_get::<Option<i64>, _>("approval_due")
            .map_err(db)?
            .map(at),
        escalated: get_i("escalated")? != 0,
        cancel_requested: get_i("cancel_requested")? != 0,
        waiting_for: get_os("waiting_for")?,
        created_at: at(get_i("created_at")?),
        updated_at: at(get_i("updated_at")?),
    })
}

/// Appends an event inside a transaction, with the next sequence number of the request. The
/// caller holds the request's row lock, which keeps the numbers of one request in order.
async fn insert_event(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    correlation_id: &str,
    when: DateTime<Utc>,
    kind: &EventKind,
) -> Result<u64, StoreError> {
    let seq: i64 = sqlx::query(
        "INSERT INTO events (request_id, seq, at, correlation_id, kind) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM events WHERE request_id = $1 RETURNING seq",
    )
    .bind(id.to_string())
    .bind(ms(when))
    .bind(correlation_id.to_string())
    .bind(json(kind))
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?
    .try_get("seq")
    .map_err(db)?;
    Ok(seq as u64)
}

/// Journals an attempt's start inside a transaction.
async fn insert_attempt(
    conn: &mut sqlx::AnyConnection,
    record: &AttemptRecord,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO attempts (request_id, action_id, rollback, attempt, started_at, record) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(record.request_id.clone())
        .bind(record.action_id.clone())
        .bind(i64::from(record.rollback))
        .bind(i64::from(record.attempt))
        .bind(ms(record.started_at))
        .bind(json(record))
        .execute(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate(format!(
                "attempt {} of {} exists",
                record.attempt, record.action_id
            )),
            _ => db(e),
        })?;
    Ok(())
}

/// Appends an audit record inside a transaction.
async fn insert_audit(
    conn: &mut sqlx::AnyConnection,
    record: &AuditRecord,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit (at, target, record) VALUES ($1, $2, $3)")
        .bind(ms(record.at))
        .bind(record.target.clone())
        .bind(json(record))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// The insert of `n` events of one request, numbered after its last one, with its parameters
/// from `$base`: the request id, its correlation id, then (number, time, kind) per event.
fn events_sql(n: usize, base: usize) -> String {
    let values: Vec<String> = (0..n)
        .map(|i| {
            let p = base + 2 + 3 * i;
            format!("(${p}, ${}, ${})", p + 1, p + 2)
        })
        .collect();
    format!(
        "INSERT INTO events (request_id, seq, at, correlation_id, kind) \
         SELECT ${base}, last.m + v.column1, v.column2, ${}, v.column3 \
         FROM (SELECT COALESCE(MAX(seq), 0) AS m FROM events WHERE request_id = ${base}) AS last, \
         (VALUES {}) AS v",
        base + 1,
        values.join(", ")
    )
}

/// Binds the parameters of [`events_sql`] after those already bound.
fn bind_events<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    id: &str,
    correlation_id: &str,
    events: &[(DateTime<Utc>, EventKind)],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q = q.bind(id.to_string()).bind(correlation_id.to_string());
    for (i, (when, kind)) in events.iter().enumerate() {
        q = q.bind(i as i64 + 1).bind(ms(*when)).bind(json(kind));
    }
    q
}

/// Appends several events of one request in one statement, numbered after its last one. The
/// caller holds the request's row lock.
async fn insert_events(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    correlation_id: &str,
    events: &[(DateTime<Utc>, EventKind)],
) -> Result<(), StoreError> {
    match events {
        [] => Ok(()),
        [(when, kind)] => insert_event(conn, id, correlation_id, *when, kind)
            .await
            .map(|_| ()),
        _ => {
            let q = sqlx::query(sqlx::AssertSqlSafe(events_sql(events.len(), 1)));
            bind_events(q, id, correlation_id, events)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            Ok(())
        }
    }
}

/// Returns the reservations matching `filter` (over `quota_reservations`, one bind `$1`):
/// their amounts leave the running totals, then the rows go.
async fn release_in<B>(conn: &mut AnyConnection, filter: &str, bind: B) -> Result<(), StoreError>
where
    B: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Clone + Send,
{
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE quota_totals SET used = used - COALESCE((SELECT SUM(r.amount) FROM quota_reservations r \
         WHERE r.team = quota_totals.team AND r.resource = quota_totals.resource AND r.{filter}), 0) \
         WHERE EXISTS (SELECT 1 FROM quota_reservations r WHERE r.team = quota_totals.team \
         AND r.resource = quota_totals.resource AND r.{filter})"
    )))
    .bind(bind.clone())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM quota_reservations WHERE {filter}"
    )))
    .bind(bind)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// The request's state, read after a fenced write matched no row: `NotFound` when there is
/// no such request, `LeaseLost` when `lease` no longer holds it.
pub(crate) async fn fenced_state(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    lease: Option<&Lease>,
) -> Result<RequestState, StoreError> {
    let row = sqlx::query("SELECT state, lease_owner, lease_token FROM requests WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
    if let Some(l) = lease {
        let owner: Option<String> = row.try_get("lease_owner").unwrap_or(None);
        let token: i64 = row.try_get("lease_token").unwrap_or(-1);
        if owner.as_deref() != Some(l.worker_id.as_str()) || token != l.token as i64 {
            return Err(StoreError::LeaseLost(id.to_string()));
        }
    }
    let state: String = row.try_get("state").map_err(db)?;
    RequestState::parse(&state)
        .ok_or_else(|| StoreError::Unavailable(format!("unknown state `{state}`")))
}

/// Why a fenced write on a request matched no row.
async fn why_unmatched(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    lease: Option<&Lease>,
) -> StoreError {
    match fenced_state(conn, id, lease).await {
        Err(e) => e,
        // Matched now: the row changed between the two statements; the caller retries.
        Ok(_) => StoreError::Unavailable(format!("request {id} changed; try again")),
    }
}

/// Reserves quota for a request being submitted (which has no reservation yet) in two
/// statements: the team's running total grows only where the limit allows it (one
/// conditional upsert, which also takes the total's row lock in PostgreSQL), then the
/// reservation is recorded. `false` when the limit refuses it, with nothing written: the
/// caller then goes through [`SqlStore::reserve_in`], which says by how much.
async fn reserve_new_in(
    tx: &mut AnyConnection,
    request_id: &str,
    team: &str,
    resource: &str,
    amount: u64,
) -> Result<bool, StoreError> {
    const MAX: &str = "9223372036854775807";
    let asked = i64::try_from(amount).ok();
    let grown = match asked {
        // `used <= limit - amount`, never `used + amount`: no overflow in either database.
        Some(a) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO quota_totals (team, resource, used) \
             SELECT $1, $2, $3 WHERE $3 <= COALESCE((SELECT lim FROM quota_limits WHERE team = $1 AND resource = $2), {MAX}) \
             ON CONFLICT (team, resource) DO UPDATE SET used = quota_totals.used + excluded.used \
             WHERE quota_totals.used <= COALESCE((SELECT lim FROM quota_limits WHERE team = $1 AND resource = $2), {MAX}) - excluded.used \
             RETURNING used"
        )))
        .bind(team.to_string())
        .bind(resource.to_string())
        .bind(a)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .is_some(),
        None => false,
    };
    if !grown {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO quota_reservations (request_id, resource, team, amount) VALUES ($1, $2, $3, $4)",
    )
    .bind(request_id.to_string())
    .bind(resource.to_string())
    .bind(team.to_string())
    .bind(asked.unwrap_or(0))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(true)
}

/// What a batch applies to.
enum Current {
    /// The stored request.
    Stored,
    /// A request being submitted, with its first event: not stored yet.
    New(Box<Request>, (DateTime<Utc>, EventKind)),
}

/// Inserts a submitted request as it stands after its admission writes; `Duplicate` when its
/// id or idempotency key is taken.
async fn insert_request(conn: &mut AnyConnection, r: &Request) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO requests (id, item_id, item_version, item_hash, fields, requester, requester_id, team, environment, \
         priority, idempotency_key, correlation_id, retry_of, state, rollback, error, approval_due, escalated, \
         cancel_requested, waiting_for, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
    )
    .bind(r.id.clone())
    .bind(r.item_id.clone())
    .bind(r.item_version.clone())
    .bind(r.item_hash.clone())
    .bind(json(&r.fields))
    .bind(json(&r.requester))
    .bind(r.requester.id.clone())
    .bind(r.team.clone())
    .bind(r.environment.clone())
    .bind(i64::from(r.priority))
    .bind(r.idempotency_key.clone())
    .bind(r.correlation_id.clone())
    .bind(r.retry_of.clone())
    .bind(r.state.as_str().to_string())
    .bind(rollback_name(r.rollback).to_string())
    .bind(r.error.clone())
    .bind(r.approval_due.map(ms))
    .bind(i64::from(r.escalated))
    .bind(i64::from(r.cancel_requested))
    .bind(r.waiting_for.clone())
    .bind(ms(r.created_at))
    .bind(ms(r.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Duplicate(format!("request id {} exists", r.id))
        }
        _ => db(e),
    })?;
    Ok(())
}

/// A batch being applied by [`SqlStore::apply_in`].
struct Applying<'a> {
    id: &'a str,
    lease: Option<&'a Lease>,
    /// The request is being submitted: not stored yet.
    new: bool,
    /// The events to append, in order.
    events: Vec<(DateTime<Utc>, EventKind)>,
    /// The request row changes (a transition or a patch).
    changed: bool,
    /// A transition ended the request: its lease goes.
    terminal: bool,
}

impl Applying<'_> {
    /// The lease attempt writes need.
    fn leased(&self) -> Result<&Lease, StoreError> {
        self.lease
            .ok_or_else(|| StoreError::LeaseLost(self.id.to_string()))
    }
}

/// Journals an attempt's end inside a transaction; `NotFound` when its start is not journaled.
async fn finish_attempt_in(
    tx: &mut AnyConnection,
    id: &str,
    record: &AttemptRecord,
) -> Result<(), StoreError> {
    let n = sqlx::query("UPDATE attempts SET record = $5 WHERE request_id = $1 AND action_id = $2 AND rollback = $3 AND attempt = $4")
        .bind(id.to_string())
        .bind(record.action_id.clone())
        .bind(i64::from(record.rollback))
        .bind(i64::from(record.attempt))
        .bind(json(record))
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "attempt {} of {} in {id}",
            record.attempt, record.action_id
        )));
    }
    Ok(())
}

impl SqlStore {
    /// Runs `op` as one transaction: group-committed on SQLite, its own transaction on
    /// PostgreSQL (whose server already groups concurrent commits).
    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    {
        match &self.writes {
            Writes::Grouped(g) => g.write(op).await,
            Writes::Pooled(_) => {
                let mut tx = self.writer.begin().await.map_err(db)?;
                let v = op(&mut *tx).await?;
                tx.commit().await.map_err(db)?;
                Ok(v)
            }
        }
    }

    /// Runs `op` (one statement) outside an explicit transaction on PostgreSQL, in the group
    /// commit on SQLite.
    async fn write_auto<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    {
        match &self.writes {
            Writes::Grouped(g) => g.write(op).await,
            Writes::Pooled(lane) => lane.run(op).await,
        }
    }

    /// Reserves quota inside a transaction (see [`Store::reserve_quota`]). The team's running
    /// total (`quota_totals`) is created or locked first, which serialises reservations of one
    /// team and resource in PostgreSQL (SQLite has a single writer anyway); the limit is checked
    /// against it, not against a sum over every reservation.
    async fn reserve_in(
        &self,
        tx: &mut AnyConnection,
        request_id: &str,
        team: &str,
        resource: &str,
        amount: u64,
    ) -> Result<(), StoreError> {
        let total: i64 = sqlx::query(
            "INSERT INTO quota_totals (team, resource, used) VALUES ($1, $2, 0) \
             ON CONFLICT (team, resource) DO UPDATE SET used = quota_totals.used RETURNING used",
        )
        .bind(team.to_string())
        .bind(resource.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?
        .try_get("used")
        .map_err(db)?;
        let row = sqlx::query(
            "SELECT (SELECT lim FROM quota_limits WHERE team = $1 AND resource = $2) AS lim, \
             (SELECT amount FROM quota_reservations WHERE request_id = $3 AND resource = $2) AS prev, \
             (SELECT team FROM quota_reservations WHERE request_id = $3 AND resource = $2) AS prev_team",
        )
        .bind(team.to_string())
        .bind(resource.to_string())
        .bind(request_id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let limit: Option<i64> = row.try_get("lim").map_err(db)?;
        let prev: Option<i64> = row.try_get("prev").map_err(db)?;
        let prev_team: Option<String> = row.try_get("prev_team").map_err(db)?;
        // This request's earlier reservation is replaced, not added to.
        let same_team = prev_team.as_deref() == Some(team);
        let used = if same_team {
            total - prev.unwrap_or(0)
        } else {
            total
        };
        let used = used.max(0) as u64;
        if let Some(limit) = limit
            && used.saturating_add(amount) > limit as u64
        {
            return Err(StoreError::QuotaExceeded {
                team: team.to_string(),
                resource: resource.to_string(),
                limit: limit as u64,
                used,
                asked: amount,
            });
        }
        let Some(stored) = i64::try_from(amount)
            .ok()
            .filter(|a| (used as i64).checked_add(*a).is_some())
        else {
            return Err(StoreError::QuotaExceeded {
                team: team.to_string(),
                resource: resource.to_string(),
                limit: limit.map(|l| l as u64).unwrap_or(i64::MAX as u64),
                used,
                asked: amount,
            });
        };
        sqlx::query("UPDATE quota_totals SET used = $3 WHERE team = $1 AND resource = $2")
            .bind(team.to_string())
            .bind(resource.to_string())
            .bind(used as i64 + stored)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if let (Some(p), Some(pt)) = (prev, prev_team.as_deref())
            && pt != team
        {
            sqlx::query(
                "UPDATE quota_totals SET used = used - $3 WHERE team = $1 AND resource = $2",
            )
            .bind(pt.to_string())
            .bind(resource.to_string())
            .bind(p)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query("INSERT INTO quota_reservations (request_id, resource, team, amount) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (request_id, resource) DO UPDATE SET amount = excluded.amount, team = excluded.team")
            .bind(request_id.to_string())
            .bind(resource.to_string())
            .bind(team.to_string())
            .bind(stored)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Applies a batch inside a transaction, to the stored request (its row is locked and read
    /// here, and the fence checked once) or to a new one, inserted at the end.
    async fn apply_in(
        &self,
        tx: &mut AnyConnection,
        id: &str,
        lease: Option<&Lease>,
        writes: Vec<Write>,
        current: Current,
    ) -> Result<Request, StoreError> {
        if let Some(l) = lease
            && l.request_id != id
        {
            return Err(StoreError::LeaseLost(id.to_string()));
        }
        let mut a = Applying {
            id,
            lease,
            new: matches!(current, Current::New(..)),
            events: Vec::new(),
            changed: false,
            terminal: false,
        };
        let mut r = match current {
            Current::New(r, first) => {
                a.events.push(first);
                *r
            }
            Current::Stored => self.locked_request(&mut *tx, id, lease).await?,
        };
        for w in writes {
            self.apply_write(&mut *tx, &mut a, &mut r, w).await?;
        }
        self.store_applied(&mut *tx, a, &r).await?;
        Ok(r)
    }

    /// Reads the stored request, its row locked on PostgreSQL (SQLite has a single writer),
    /// and checks the fence.
    async fn locked_request(
        &self,
        tx: &mut AnyConnection,
        id: &str,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, lease_owner, lease_token FROM requests WHERE id = $1{lock}"
        )))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        if let Some(l) = lease {
            let owner: Option<String> = row.try_get("lease_owner").map_err(db)?;
            let token: i64 = row.try_get("lease_token").map_err(db)?;
            if owner.as_deref() != Some(l.worker_id.as_str()) || token != l.token as i64 {
                return Err(StoreError::LeaseLost(id.to_string()));
            }
        }
        row_to_request(&row)
    }

    /// Applies one write of a batch: to the request in memory, or to the attempts, quota
    /// and audit tables at once.
    async fn apply_write(
        &self,
        tx: &mut AnyConnection,
        a: &mut Applying<'_>,
        r: &mut Request,
        w: Write,
    ) -> Result<(), StoreError> {
        let id = a.id;
        match w {
            Write::Transition { from, to, change } => {
                let when = change.at;
                let event = r.apply_transition(from, to, change)?;
                // Stored to the millisecond.
                r.updated_at = at(ms(when));
                a.changed = true;
                a.terminal |= to.is_terminal();
                a.events.push((when, event));
            }
            Write::Patch(p) => {
                p.apply_to(r);
                r.approval_due = r.approval_due.map(|d| at(ms(d)));
                a.changed = true;
            }
            Write::Event { at, kind } => a.events.push((at, kind)),
            Write::StartAttempt(record) => {
                a.leased()?;
                if record.request_id != id {
                    return Err(StoreError::LeaseLost(id.to_string()));
                }
                insert_attempt(&mut *tx, &record).await?;
            }
            Write::FinishAttempt(record) => {
                a.leased()?;
                finish_attempt_in(&mut *tx, id, &record).await?;
            }
            Write::ReserveQuota { resource, amount } => {
                let team = r.team.clone();
                // A refusal is described (and checked once more) by the general path.
                if !(a.new && reserve_new_in(&mut *tx, id, &team, &resource, amount).await?) {
                    self.reserve_in(&mut *tx, id, &team, &resource, amount)
                        .await?;
                }
            }
            Write::ReleaseQuota => release_in(&mut *tx, "request_id = $1", id.to_string()).await?,
            Write::Audit(audit) => insert_audit(&mut *tx, &audit).await?,
        }
        Ok(())
    }

    /// Stores what a batch did to the request: a new request inserted, a stored one updated,
    /// its events appended; on PostgreSQL a request queued again is announced to the other
    /// replicas.
    async fn store_applied(
        &self,
        tx: &mut AnyConnection,
        a: Applying<'_>,
        r: &Request,
    ) -> Result<(), StoreError> {
        let (id, events) = (a.id, &a.events);
        let clear_lease = if a.terminal {
            ", lease_owner = NULL, lease_expires_at = NULL"
        } else {
            ""
        };
        let update = format!(
            "UPDATE requests SET state = $1, updated_at = $2, rollback = $3, error = $4, approval_due = $5, \
             escalated = $6, cancel_requested = $7, waiting_for = $8{clear_lease} WHERE id = $9"
        );
        let bind_update = |q: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>| {
            q.bind(r.state.as_str().to_string())
                .bind(ms(r.updated_at))
                .bind(rollback_name(r.rollback).to_string())
                .bind(r.error.clone())
                .bind(r.approval_due.map(ms))
                .bind(i64::from(r.escalated))
                .bind(i64::from(r.cancel_requested))
                .bind(r.waiting_for.clone())
                .bind(id.to_string())
        };
        if a.new {
            insert_request(&mut *tx, r).await?;
            insert_events(&mut *tx, id, &r.correlation_id, events).await?;
        } else if a.changed && !events.is_empty() && self.dialect == Dialect::Postgres {
            // One round trip: the row's update as a data-modifying CTE of the events' insert.
            let sql = format!(
                "WITH changed AS ({update}) {}",
                events_sql(events.len(), 10)
            );
            let q = bind_update(sqlx::query(sqlx::AssertSqlSafe(sql)));
            bind_events(q, id, &r.correlation_id, events)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        } else {
            if a.changed {
                bind_update(sqlx::query(sqlx::AssertSqlSafe(update)))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            insert_events(&mut *tx, id, &r.correlation_id, events).await?;
        }
        if r.state == RequestState::Queued && a.changed && self.dialect == Dialect::Postgres {
            crate::pg::open::notify_work(&mut *tx, id)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// Locks the request row for this transaction (a no-op update takes the write lock in both
    /// databases) after checking the fence; returns its correlation id.
    async fn lock_fenced(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
        lease: Option<&Lease>,
    ) -> Result<String, StoreError> {
        if let Some(l) = lease
            && l.request_id != id
        {
            return Err(StoreError::LeaseLost(id.to_string()));
        }
        let row = match lease {
            Some(l) => sqlx::query("UPDATE requests SET updated_at = updated_at WHERE id = $1 AND lease_owner = $2 AND lease_token = $3 RETURNING correlation_id")
                .bind(id.to_string())
                .bind(l.worker_id.clone())
                .bind(l.token as i64)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?,
            None => sqlx::query("UPDATE requests SET updated_at = updated_at WHERE id = $1 RETURNING correlation_id")
                .bind(id.to_string())
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?,
        };
        match row {
            Some(r) => r.try_get::<String, _>("correlation_id").map_err(db),
            None => Err(why_unmatched(conn, id, lease).await),
        }
    }

    /// The request submitted earlier with this idempotency key, as a `Submitted` that did not
    /// create anything.
    async fn by_idempotency_key(&self, key: Option<&str>) -> Result<Option<Submitted>, StoreError> {
        let Some(key) = key else { return Ok(None) };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM requests WHERE idempotency_key = $1"
        )))
        .bind(key.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|row| {
            Ok(Submitted {
                request: row_to_request(&row)?,
                created: false,
            })
        })
        .transpose()
    }

    /// The JSON documents in the `record` column of the rows `sql` selects for one request.
    async fn records_of<T: serde::de::DeserializeOwned>(
        &self,
        sql: &'static str,
        id: &str,
    ) -> Result<Vec<T>, StoreError> {
        let rows = sqlx::query(sql)
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("record").map_err(db)?))
            .collect()
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn submit(
        &self,
        new: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Submitted, StoreError> {
        self.submit_with(new, actor, now, Vec::new()).await
    }

    async fn submit_with(
        &self,
        new: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
        writes: Vec<Write>,
    ) -> Result<Submitted, StoreError> {
        if let Some(earlier) = self
            .by_idempotency_key(new.idempotency_key.as_deref())
            .await?
        {
            return Ok(earlier);
        }
        let wakes = Write::queues(&writes);
        let id = new.id.clone();
        let key = new.idempotency_key.clone();
        let first = EventKind::StateChanged {
            from: None,
            to: RequestState::Submitted,
            actor: actor.to_string(),
            reason: None,
        };
        let submitted = new.into_submitted(at(ms(now)));
        // The admission writes are applied to the new request in memory and the row is
        // inserted once, at the end, with its final state, and its first event goes with the
        // batch's: fewer statements on the single writer.
        let inserted = self
            .write(async |tx: &mut AnyConnection| {
                self.apply_in(
                    &mut *tx,
                    &id,
                    None,
                    writes,
                    Current::New(Box::new(submitted), (now, first)),
                )
                .await
            })
            .await;
        let request = match inserted {
            Ok(r) => r,
            Err(StoreError::Duplicate(what)) => {
                // A concurrent submission with the same key won the race: return its request.
                if let Some(earlier) = self.by_idempotency_key(key.as_deref()).await? {
                    return Ok(earlier);
                }
                return Err(StoreError::Duplicate(what));
            }
            Err(e) => return Err(e),
        };
        if wakes {
            self.work.notify_waiters();
        }
        Ok(Submitted {
            request,
            created: true,
        })
    }

    async fn apply(
        &self,
        id: &str,
        lease: Option<&Lease>,
        writes: Vec<Write>,
    ) -> Result<Request, StoreError> {
        if let Writes::Pooled(lane) = &self.writes
            && let Some(plan) = crate::pg::batch_statement::plan(id, lease, &writes)
        {
            return lane
                .run(async |c: &mut AnyConnection| {
                    crate::pg::batch_statement::run(c, id, lease, &plan).await
                })
                .await;
        }
        let wakes = Write::queues(&writes);
        let r = self
            .write(async |tx: &mut AnyConnection| {
                self.apply_in(&mut *tx, id, lease, writes, Current::Stored)
                    .await
            })
            .await?;
        if wakes {
            self.work.notify_waiters();
        }
        Ok(r)
    }

    async fn get(&self, id: &str) -> Result<Option<Request>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM requests WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(row_to_request).transpose()
    }

    async fn list(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM requests WHERE 1 = 1");
        let mut p = Params::default();
        if !f.states.is_empty() {
            let ps: Vec<String> = f.states.iter().map(|s| p.text(s.as_str())).collect();
            sql.push_str(&format!(" AND state IN ({})", ps.join(", ")));
        }
        if let Some(u) = &f.requester {
            sql.push_str(&format!(" AND requester_id = {}", p.text(u)));
        }
        if let Some(t) = &f.team {
            sql.push_str(&format!(" AND team = {}", p.text(t)));
        }
        if let Some(i) = &f.item_id {
            sql.push_str(&format!(" AND item_id = {}", p.text(i)));
        }
        if let Some((t, id)) = &f.before {
            let p1 = p.int(ms(*t));
            let p2 = p.text(id);
            sql.push_str(&format!(
                " AND (created_at < {p1} OR (created_at = {p1} AND id < {p2}))"
            ));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        if f.limit > 0 {
            sql.push_str(&format!(" LIMIT {}", f.limit));
        }
        let rows = p
            .bind_to(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_request).collect()
    }

    async fn request_waiting_for(&self, key: &str) -> Result<Option<Request>, StoreError> {
        // The partial index `requests_waiting_for` holds the few parked requests.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM requests WHERE waiting_for IN ($1, $2) AND state = 'in_progress' \
             ORDER BY created_at, id LIMIT 1"
        )))
        .bind(key.to_string())
        .bind(format!("manual:{key}"))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(row_to_request).transpose()
    }

    async fn transition(
        &self,
        id: &str,
        from: RequestState,
        to: RequestState,
        change: StateChange,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        from.transition_to(to)?;
        self.apply(id, lease, vec![Write::Transition { from, to, change }])
            .await
    }

    async fn update(
        &self,
        id: &str,
        patch: RequestPatch,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        self.apply(id, lease, vec![Write::Patch(patch)]).await
    }

    async fn append_event(
        &self,
        id: &str,
        when: DateTime<Utc>,
        kind: EventKind,
        lease: Option<&Lease>,
    ) -> Result<u64, StoreError> {
        let seq = self
            .write(async |tx: &mut AnyConnection| {
                let correlation_id = self.lock_fenced(&mut *tx, id, lease).await?;
                let seq = insert_event(&mut *tx, id, &correlation_id, when, &kind).await?;
                Ok(seq)
            })
            .await?;
        Ok(seq)
    }

    async fn events(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let lim = if limit > 0 {
            format!(" LIMIT {limit}")
        } else {
            String::new()
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, at, correlation_id, kind FROM events WHERE request_id = $1 AND seq > $2 ORDER BY seq{lim}"
        )))
        .bind(id.to_string())
        .bind(after_seq as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    seq: r.try_get::<i64, _>("seq").map_err(db)? as u64,
                    request_id: id.to_string(),
                    at: at(r.try_get("at").map_err(db)?),
                    correlation_id: r.try_get("correlation_id").map_err(db)?,
                    kind: parse(&r.try_get::<String, _>("kind").map_err(db)?)?,
                })
            })
            .collect()
    }

    async fn claim(
        &self,
        worker_id: &str,
        lease_for: Duration,
        _now: DateTime<Utc>,
    ) -> Result<Option<(Request, Lease)>, StoreError> {
        let sql = claim_statement(self.dialect, ["$1", "$2"], None);
        let row = self
            .write_auto(async |c: &mut AnyConnection| {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(worker_id.to_string())
                    .bind(lease_ms(lease_for))
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)
            })
            .await?;
        row.map(|row| claimed(&row, worker_id)).transpose()
    }

    async fn apply_then_claim(
        &self,
        lease: &Lease,
        writes: Vec<Write>,
        worker_id: &str,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> AppliedThenClaimed {
        let id = lease.request_id.as_str();
        if let Writes::Pooled(lane) = &self.writes
            && let Some(plan) = crate::pg::batch_statement::plan(id, Some(lease), &writes)
        {
            let claim = crate::pg::batch_statement::Claim {
                worker_id,
                lease_ms: lease_ms(lease_for),
            };
            let done = lane
                .run_then(
                    async |c: &mut AnyConnection| {
                        crate::pg::batch_statement::run_then_claim(c, lease, &plan, claim).await
                    },
                    |done| {
                        !matches!(done.applied, Err(StoreError::Unavailable(_)))
                            && !matches!(done.claimed, Err(StoreError::Unavailable(_)))
                    },
                )
                .await;
            return done.unwrap_or_else(|e| AppliedThenClaimed {
                applied: Err(e.clone()),
                claimed: Err(e),
            });
        }
        apply_then_claim_in_turn(self, lease, writes, worker_id, lease_for, now).await
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        lease_for: Duration,
        _now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let sql = format!(
            "UPDATE requests SET lease_expires_at = {} + $1 WHERE id = $2 AND lease_owner = $3 \
             AND lease_token = $4 RETURNING lease_expires_at",
            db_now(self.dialect)
        );
        let row = self
            .write_auto(async |c: &mut AnyConnection| {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(lease_ms(lease_for))
                    .bind(lease.request_id.clone())
                    .bind(lease.worker_id.clone())
                    .bind(lease.token as i64)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)
            })
            .await?;
        let Some(row) = row else {
            return Err(StoreError::LeaseLost(lease.request_id.clone()));
        };
        let expires: i64 = row.try_get("lease_expires_at").map_err(db)?;
        Ok(Lease {
            expires_at: at(expires),
            ..lease.clone()
        })
    }

    fn lease_clock(&self) -> LeaseClock {
        LeaseClock::Store
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let n = self
            .write_auto(async |c: &mut AnyConnection| {
                Ok(sqlx::query("UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2 AND lease_token = $3")
                    .bind(lease.request_id.clone())
                    .bind(lease.worker_id.clone())
                    .bind(lease.token as i64)
                    .execute(&mut *c)
                    .await
                    .map_err(db)?
                    .rows_affected())
            })
            .await?;
        // Workers release after every run; only a request that is live again is news (a
        // finished one dropped its lease already).
        if n == 0 {
            return Ok(());
        }
        self.work.notify_waiters();
        if self.dialect == Dialect::Postgres {
            let _ = crate::pg::open::notify_work(&self.writer, &lease.request_id).await;
        }
        Ok(())
    }

    async fn start_attempt(&self, lease: &Lease, record: AttemptRecord) -> Result<(), StoreError> {
        let id = record.request_id.clone();
        self.apply(&id, Some(lease), vec![Write::StartAttempt(record)])
            .await
            .map(|_| ())
    }

    async fn finish_attempt(
        &self,
        lease: &Lease,
        action_id: &str,
        rollback: bool,
        attempt: u32,
        outcome: AttemptOutcome,
        when: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let () = self
            .write(async |tx: &mut AnyConnection| {
        self.lock_fenced(&mut *tx, &lease.request_id, Some(lease))
            .await?;
        let key = (
            lease.request_id.clone(),
            action_id.to_string(),
            i64::from(rollback),
            i64::from(attempt),
        );
        let row = sqlx::query("SELECT record FROM attempts WHERE request_id = $1 AND action_id = $2 AND rollback = $3 AND attempt = $4")
            .bind(key.0.clone())
            .bind(key.1.clone())
            .bind(key.2)
            .bind(key.3)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound(format!("attempt {attempt} of {action_id} in {}", lease.request_id)))?;
        let mut record: AttemptRecord = parse(&row.try_get::<String, _>("record").map_err(db)?)?;
        record.outcome = outcome;
        record.finished_at = Some(when);
        sqlx::query("UPDATE attempts SET record = $5 WHERE request_id = $1 AND action_id = $2 AND rollback = $3 AND attempt = $4")
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .bind(key.3)
            .bind(json(&record))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(())
            })
            .await?;
        Ok(())
    }

    async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        self.records_of(
            "SELECT record FROM attempts WHERE request_id = $1 ORDER BY started_at, action_id, rollback, attempt",
            id,
        )
        .await
    }

    async fn record_decision(
        &self,
        d: ApprovalDecision,
    ) -> Result<Vec<ApprovalDecision>, StoreError> {
        let () = self
            .write(async |tx: &mut AnyConnection| {
                self.lock_fenced(&mut *tx, &d.request_id, None).await?;
                let seq: i64 = sqlx::query(
                    "SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM decisions WHERE request_id = $1",
                )
                .bind(d.request_id.clone())
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?
                .try_get("next")
                .map_err(db)?;
                sqlx::query(
            "INSERT INTO decisions (request_id, approver, seq, record) VALUES ($1, $2, $3, $4)",
        )
        .bind(d.request_id.clone())
        .bind(d.approver.clone())
        .bind(seq)
        .bind(json(&d))
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(x) if x.is_unique_violation() => StoreError::Duplicate(format!(
                "{} already decided on {}",
                d.approver, d.request_id
            )),
            _ => db(e),
        })?;
                Ok(())
            })
            .await?;
        self.decisions(&d.request_id).await
    }

    async fn decisions(&self, id: &str) -> Result<Vec<ApprovalDecision>, StoreError> {
        self.records_of(
            "SELECT record FROM decisions WHERE request_id = $1 ORDER BY seq",
            id,
        )
        .await
    }

    async fn set_quota_limit(
        &self,
        team: &str,
        resource: &str,
        limit: u64,
    ) -> Result<(), StoreError> {
        self.write_auto(async |c: &mut AnyConnection| {
            sqlx::query("INSERT INTO quota_limits (team, resource, lim) VALUES ($1, $2, $3) ON CONFLICT (team, resource) DO UPDATE SET lim = excluded.lim")
                .bind(team.to_string())
                .bind(resource.to_string())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .execute(&mut *c)
                .await
                .map_err(db)
        })
        .await?;
        Ok(())
    }

    async fn set_quota_limits(
        &self,
        team: &str,
        limits: &[(String, u64)],
        audit: AuditRecord,
    ) -> Result<(), StoreError> {
        check_quota_limits(limits)?;
        // One row per resource, its last limit: an upsert may not touch a row twice.
        let limits: std::collections::BTreeMap<&str, u64> =
            limits.iter().map(|(r, l)| (r.as_str(), *l)).collect();
        self.write(async |tx: &mut AnyConnection| {
            if !limits.is_empty() {
                let mut p = Params::default();
                let team = p.text(team);
                let rows: Vec<String> = limits
                    .iter()
                    .map(|(resource, limit)| {
                        // Checked above: every limit fits.
                        let lim = i64::try_from(*limit).unwrap_or(i64::MAX);
                        format!("({team}, {}, {})", p.text(resource), p.int(lim))
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO quota_limits (team, resource, lim) VALUES {} \
                     ON CONFLICT (team, resource) DO UPDATE SET lim = excluded.lim",
                    rows.join(", ")
                );
                p.bind_to(sqlx::query(sqlx::AssertSqlSafe(sql)))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            insert_audit(&mut *tx, &audit).await
        })
        .await
    }

    async fn reserve_quota(
        &self,
        request_id: &str,
        team: &str,
        resource: &str,
        amount: u64,
    ) -> Result<(), StoreError> {
        self.write(async |tx: &mut AnyConnection| {
            self.reserve_in(tx, request_id, team, resource, amount)
                .await
        })
        .await
    }

    async fn release_quota(&self, request_id: &str) -> Result<(), StoreError> {
        self.write(async |tx: &mut AnyConnection| {
            release_in(&mut *tx, "request_id = $1", request_id.to_string()).await
        })
        .await
    }

    async fn quota_usage(&self, team: &str) -> Result<Vec<QuotaUsage>, StoreError> {
        let mut usage: std::collections::BTreeMap<String, QuotaUsage> =
            std::collections::BTreeMap::new();
        for r in sqlx::query("SELECT resource, lim FROM quota_limits WHERE team = $1")
            .bind(team.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
        {
            let resource: String = r.try_get("resource").map_err(db)?;
            let lim: i64 = r.try_get("lim").map_err(db)?;
            usage.insert(
                resource.clone(),
                QuotaUsage {
                    resource,
                    limit: Some(lim as u64),
                    used: 0,
                },
            );
        }
        for r in sqlx::query("SELECT resource, used FROM quota_totals WHERE team = $1 AND used > 0")
            .bind(team.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
        {
            let resource: String = r.try_get("resource").map_err(db)?;
            let used: i64 = r.try_get("used").map_err(db)?;
            usage
                .entry(resource.clone())
                .or_insert(QuotaUsage {
                    resource,
                    limit: None,
                    used: 0,
                })
                .used = used as u64;
        }
        Ok(usage.into_values().collect())
    }

    async fn audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        self.write_auto(async |c: &mut AnyConnection| insert_audit(&mut *c, &record).await)
            .await
    }

    async fn audit_log(
        &self,
        target: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LoggedAudit>, StoreError> {
        let mut params = Params::default();
        let mut conds = Vec::new();
        if let Some(t) = target {
            conds.push(format!("target = {}", params.text(t)));
        }
        if let Some(b) = before {
            conds.push(format!(
                "id < {}",
                params.int(i64::try_from(b).unwrap_or(i64::MAX))
            ));
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let lim = if limit > 0 {
            format!(" LIMIT {limit}")
        } else {
            String::new()
        };
        let sql = format!("SELECT id, record FROM audit{filter} ORDER BY id DESC{lim}");
        let rows = params
            .bind_to(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(LoggedAudit {
                    id: r.try_get::<i64, _>("id").map_err(db)? as u64,
                    record: parse(&r.try_get::<String, _>("record").map_err(db)?)?,
                })
            })
            .collect()
    }

    async fn request_stats(&self, scope: &StatsScope) -> Result<RequestStats, StoreError> {
        let mut p = Params::default();
        let mut conds = vec!["1 = 1".to_string()];
        if let Some(t) = &scope.team {
            conds.push(format!("team = {}", p.text(t)));
        }
        if !scope.item_ids.is_empty() {
            let ids: Vec<String> = scope.item_ids.iter().map(|i| p.text(i)).collect();
            conds.push(format!("item_id IN ({})", ids.join(", ")));
        }
        let filter = conds.join(" AND ");
        let fetch = async |sql: String| {
            p.bind_to(sqlx::query(sqlx::AssertSqlSafe(sql)))
                .fetch_all(&self.pool)
                .await
                .map_err(db)
        };
        let rows = fetch(format!(
            "SELECT team, item_id, state, COUNT(*) AS n FROM requests WHERE {filter} \
             GROUP BY team, item_id, state"
        ))
        .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for r in &rows {
            let state: String = r.try_get("state").map_err(db)?;
            counts.push(StateCount {
                team: r.try_get("team").map_err(db)?,
                item_id: r.try_get("item_id").map_err(db)?,
                state: RequestState::parse(&state)
                    .ok_or_else(|| StoreError::Unavailable(format!("unknown state `{state}`")))?,
                count: r.try_get::<i64, _>("n").map_err(db)? as u64,
            });
        }
        counts.sort_by(|a, b| {
            (&a.team, &a.item_id, a.state.as_str()).cmp(&(&b.team, &b.item_id, b.state.as_str()))
        });
        let stats = RequestStats {
            counts,
            ..RequestStats::default()
        };
        let completed = stats.in_state(RequestState::Completed);
        let mut times = [None; 3];
        for (slot, pct) in times.iter_mut().zip([50, 90, 99]) {
            let Some(i) = percentile_index(completed, pct) else {
                continue;
            };
            let rows = fetch(format!(
                "SELECT updated_at - created_at AS d FROM requests WHERE {filter} \
                 AND state = 'completed' ORDER BY d LIMIT 1 OFFSET {i}"
            ))
            .await?;
            if let Some(r) = rows.first() {
                *slot = Some(r.try_get::<i64, _>("d").map_err(db)?.max(0));
            }
        }
        // Ties by reason in byte order, as Rust orders strings.
        let bytes = match self.dialect {
            Dialect::Postgres => " COLLATE \"C\"",
            Dialect::Sqlite => "",
        };
        let rows = fetch(format!(
            "SELECT reason, n FROM (SELECT COALESCE(SUBSTR(error, 1, {FAILURE_REASON_CHARS}), \
             'unknown') AS reason, COUNT(*) AS n FROM requests WHERE {filter} \
             AND state = 'failed' GROUP BY COALESCE(SUBSTR(error, 1, {FAILURE_REASON_CHARS}), \
             'unknown')) AS r ORDER BY n DESC, reason{bytes} LIMIT {FAILURE_REASONS}"
        ))
        .await?;
        let failure_reasons = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("reason").map_err(db)?,
                    r.try_get::<i64, _>("n").map_err(db)? as u64,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(RequestStats {
            completion_ms: CompletionTimes {
                p50: times[0],
                p90: times[1],
                p99: times[2],
            },
            failure_reasons,
            ..stats
        })
    }

    async fn pending_approvals(
        &self,
        before: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<PendingApproval>, StoreError> {
        let page = self
            .list(&RequestFilter {
                states: vec![RequestState::AwaitingApproval],
                before: before.cloned(),
                limit,
                ..RequestFilter::default()
            })
            .await?;
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = Params::default();
        let ids: Vec<String> = page.iter().map(|r| p.text(&r.id)).collect();
        let rows = p
            .bind_to(sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT request_id, record FROM decisions WHERE request_id IN ({}) ORDER BY seq",
                ids.join(", ")
            ))))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut decisions: std::collections::HashMap<String, Vec<ApprovalDecision>> =
            std::collections::HashMap::new();
        for r in &rows {
            let id: String = r.try_get("request_id").map_err(db)?;
            let d: ApprovalDecision = parse(&r.try_get::<String, _>("record").map_err(db)?)?;
            decisions.entry(id).or_default().push(d);
        }
        Ok(page
            .into_iter()
            .map(|request| PendingApproval {
                decisions: decisions.remove(&request.id).unwrap_or_default(),
                request,
            })
            .collect())
    }

    async fn approvals_due(
        &self,
        by: DateTime<Utc>,
        after: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError> {
        let mut p = Params::default();
        let mut sql = format!(
            "SELECT {COLUMNS} FROM requests WHERE state = 'awaiting_approval' \
             AND approval_due IS NOT NULL AND approval_due <= {}",
            p.int(ms(by))
        );
        if let Some((due, id)) = after {
            let (p1, p2) = (p.int(ms(*due)), p.text(id));
            sql.push_str(&format!(
                " AND (approval_due > {p1} OR (approval_due = {p1} AND id > {p2}))"
            ));
        }
        sql.push_str(" ORDER BY approval_due, id");
        if limit > 0 {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let rows = p
            .bind_to(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_request).collect()
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
    }
}
