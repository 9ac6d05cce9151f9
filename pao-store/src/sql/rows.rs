//! Conversions between rows and values, and the statement parts both databases share.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pao_core::lifecycle::RequestState;
use pao_core::store::*;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Dialect;

pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn at(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Unavailable(format!("corrupt stored document: {e}")))
}

pub(crate) const COLUMNS: &str = "id, item_id, item_version, item_hash, fields, requester, team, environment, priority, \
    idempotency_key, correlation_id, retry_of, state, rollback, error, approval_due, escalated, cancel_requested, \
    waiting_for, cost, created_at, updated_at";

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
        cost: get_os("cost")?.map(|s| parse(&s)).transpose()?,
        created_at: at(get_i("created_at")?),
        updated_at: at(get_i("updated_at")?),
    })
}
