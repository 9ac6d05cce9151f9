//! Writes inside a transaction: requests, events, attempts, audit, quota, and whole batches.

use chrono::{DateTime, Utc};
use pao_core::lifecycle::RequestState;
use pao_core::store::*;
use sqlx::{AnyConnection, Row};

use super::rows::{COLUMNS, at, db, json, ms, rollback_name, row_to_request};
use super::{Dialect, SqlStore, Writes};

/// Appends an event inside a transaction, with the next sequence number of the request. The
/// caller holds the request's row lock, which keeps the numbers of one request in order.
pub(super) async fn insert_event(
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
pub(super) async fn insert_audit(
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
pub(super) async fn release_in<B>(
    conn: &mut AnyConnection,
    filter: &str,
    bind: B,
) -> Result<(), StoreError>
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
    default_limit: Option<u64>,
) -> Result<bool, StoreError> {
    let asked = i64::try_from(amount).ok();
    // The team's limit, else the catalog's (`$4`, the largest integer when there is none).
    let fallback = default_limit
        .and_then(|l| i64::try_from(l).ok())
        .unwrap_or(i64::MAX);
    let grown = match asked {
        // `used <= limit - amount`, never `used + amount`: no overflow in either database.
        Some(a) => sqlx::query(
            "INSERT INTO quota_totals (team, resource, used) \
             SELECT $1, $2, $3 WHERE $3 <= COALESCE((SELECT lim FROM quota_limits WHERE team = $1 AND resource = $2), $4) \
             ON CONFLICT (team, resource) DO UPDATE SET used = quota_totals.used + excluded.used \
             WHERE quota_totals.used <= COALESCE((SELECT lim FROM quota_limits WHERE team = $1 AND resource = $2), $4) - excluded.used \
             RETURNING used",
        )
        .bind(team.to_string())
        .bind(resource.to_string())
        .bind(a)
        .bind(fallback)
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
pub(super) enum Current {
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
         cancel_requested, waiting_for, cost, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
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
    .bind(r.cost.as_ref().map(json))
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
    /// The terminal state it ended in (its sealed values go).
    ended_as: Option<RequestState>,
}

impl Applying<'_> {
    /// The lease attempt writes need.
    fn leased(&self) -> Result<&Lease, StoreError> {
        self.lease
            .ok_or_else(|| StoreError::LeaseLost(self.id.to_string()))
    }
}

/// Stores sealed values of a request (and its wrapped data key, when it has none yet).
async fn seal_in(
    tx: &mut AnyConnection,
    id: &str,
    key: &pao_core::sealing::WrappedKey,
    values: &[(String, Vec<u8>)],
) -> Result<(), StoreError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let wrapped = b64.encode(&key.wrapped);
    sqlx::query(
        "INSERT INTO sealed_keys (request_id, kek_id, wrapped) VALUES ($1, $2, $3) \
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(key.kek_id.clone())
    .bind(wrapped.clone())
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let stored: Option<(String, String)> =
        sqlx::query_as("SELECT kek_id, wrapped FROM sealed_keys WHERE request_id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    if stored.as_ref() != Some(&(key.kek_id.clone(), wrapped)) {
        return Err(StoreError::Duplicate(format!(
            "request {id} has another data key"
        )));
    }
    for (name, sealed) in values {
        sqlx::query(
            "INSERT INTO sealed_values (request_id, name, sealed) VALUES ($1, $2, $3) \
             ON CONFLICT (request_id, name) DO UPDATE SET sealed = excluded.sealed",
        )
        .bind(id.to_string())
        .bind(name.clone())
        .bind(b64.encode(sealed))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Deletes what an ended request no longer needs of its sealed values: the form's secrets;
/// everything with the data key unless it failed (a retry may undo what it reuses).
async fn drop_sealed_in(
    tx: &mut AnyConnection,
    id: &str,
    ended_as: RequestState,
) -> Result<(), StoreError> {
    if ended_as == RequestState::Failed {
        sqlx::query("DELETE FROM sealed_values WHERE request_id = $1 AND name LIKE $2")
            .bind(id.to_string())
            .bind(format!("{SEALED_FIELD_PREFIX}%"))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    } else {
        for sql in [
            "DELETE FROM sealed_values WHERE request_id = $1",
            "DELETE FROM sealed_keys WHERE request_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
    }
    Ok(())
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
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
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
    pub(super) async fn write_auto<T, F>(&self, op: F) -> Result<T, StoreError>
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
    pub(super) async fn reserve_in(
        &self,
        tx: &mut AnyConnection,
        request_id: &str,
        team: &str,
        resource: &str,
        amount: u64,
        default_limit: Option<u64>,
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
        let limit: Option<i64> = row
            .try_get::<Option<i64>, _>("lim")
            .map_err(db)?
            .or_else(|| default_limit.and_then(|l| i64::try_from(l).ok()));
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
    pub(super) async fn apply_in(
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
            ended_as: None,
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
                if to.is_terminal() {
                    a.ended_as = Some(to);
                }
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
            Write::ReserveQuota {
                resource,
                amount,
                default_limit,
            } => {
                let team = r.team.clone();
                // A refusal is described (and checked once more) by the general path.
                if !(a.new
                    && reserve_new_in(&mut *tx, id, &team, &resource, amount, default_limit)
                        .await?)
                {
                    self.reserve_in(&mut *tx, id, &team, &resource, amount, default_limit)
                        .await?;
                }
            }
            Write::ReleaseQuota => release_in(&mut *tx, "request_id = $1", id.to_string()).await?,
            Write::Audit(audit) => insert_audit(&mut *tx, &audit).await?,
            Write::Seal { key, values } => seal_in(&mut *tx, id, &key, &values).await?,
            Write::KeepItemDefinition {
                hash,
                item_id,
                source,
            } => {
                sqlx::query(
                    "INSERT INTO item_definitions (hash, item_id, source) VALUES ($1, $2, $3) \
                     ON CONFLICT (hash) DO NOTHING",
                )
                .bind(hash)
                .bind(item_id)
                .bind(source)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
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
        if let Some(to) = a.ended_as {
            drop_sealed_in(&mut *tx, id, to).await?;
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
    pub(super) async fn lock_fenced(
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
}
