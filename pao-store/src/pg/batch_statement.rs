//! PostgreSQL: a worker's batch as one statement.
//!
//! A batch applied in a transaction costs a `BEGIN`, a locking read of the request, a statement
//! per attempt written, the request's update with its events, and a `COMMIT`: five or six round
//! trips, each a wake-up of the server process and of the client. A worker's batches (an action
//! started or finished, with its events and state changes) need none of the read's values
//! beyond checks PostgreSQL can make itself, so they go as one statement of data-modifying
//! CTEs, committed on its own:
//!
//! ```sql
//! WITH upd AS (UPDATE requests SET state = .., updated_at = ..        -- or SELECT .. FOR UPDATE
//!              WHERE id = $1 AND lease_owner = .. AND lease_token = ..  -- the fence
//!                AND state = ..                                          -- the first `from`
//!                AND EXISTS (SELECT 1 FROM attempts WHERE ..)            -- attempts it finishes
//!              RETURNING ..),
//!      s  AS (INSERT INTO attempts .. SELECT .. FROM upd, (VALUES ..)),
//!      f0 AS (UPDATE attempts SET record = .. WHERE request_id = (SELECT id FROM upd) AND ..),
//!      e  AS (INSERT INTO events .. SELECT .. FROM upd, (SELECT MAX(seq) ..), (VALUES ..))
//! SELECT .. FROM upd
//! ```
//!
//! Every part joins `upd`, so a batch whose fence, state or attempts do not hold writes nothing,
//! and [`diagnose`] then names why, with the error the transactional path would give.
//!
//! All parts of a statement read one snapshot, taken before `upd` waits for the row lock. When
//! another writer appended events to the request meanwhile, the event numbers collide with
//! theirs; the statement fails as a whole (`events_pkey`) and is run again.
//!
//! Batches this does not cover take the transactional path: quota, audit, a move to `Queued`
//! (which notifies other replicas), transitions that do not chain, an attempt started and
//! finished in one batch, attempt writes without a lease.

use chrono::{DateTime, Utc};
use pao_core::lifecycle::RequestState;
use pao_core::store::*;
use sqlx::AnyConnection;

use sqlx::Row;

use crate::params::{Bind, Params};
use crate::sql::{
    COLUMNS, Dialect, claim_statement, claimed as claimed_row, db, fenced_state, json, ms,
    rollback_name, row_to_request,
};

/// An attempt's key: action, rollback, number.
type AttemptKey<'a> = (&'a str, bool, u32);

fn key(r: &AttemptRecord) -> AttemptKey<'_> {
    (r.action_id.as_str(), r.rollback, r.attempt)
}

/// A batch written as one statement.
pub(crate) struct Plan<'w> {
    /// `upd` and the parts that join it.
    ctes: Vec<String>,
    params: Params,
    /// The state the first transition moves from.
    from: Option<RequestState>,
    /// The attempts the batch starts.
    starts: Vec<AttemptKey<'w>>,
    /// The attempts the batch finishes.
    finishes: Vec<AttemptKey<'w>>,
}

/// The writes of a batch, gathered by kind.
struct Gathered<'w> {
    /// The state the first transition moves from.
    from: Option<RequestState>,
    /// The state the last transition moves to, and when.
    state: Option<(RequestState, DateTime<Utc>)>,
    /// A transition ends the request.
    terminal: bool,
    patch: RequestPatch,
    events: Vec<(DateTime<Utc>, EventKind)>,
    starts: Vec<&'w AttemptRecord>,
    finishes: Vec<&'w AttemptRecord>,
}

/// The statement for `writes`, or `None` when the batch needs the transactional path.
pub(crate) fn plan<'w>(id: &str, lease: Option<&Lease>, writes: &'w [Write]) -> Option<Plan<'w>> {
    if writes.is_empty() || Write::queues(writes) {
        return None;
    }
    if let Some(l) = lease
        && l.request_id != id
    {
        return None;
    }
    let g = gather(id, lease, writes)?;
    let mut p = Params::default();
    let id_p = p.text(id);
    let sets = sets(&mut p, g.state, g.patch, g.terminal);
    // Which row, in which state.
    let mut conds = vec![format!("id = {id_p}")];
    if let Some(l) = lease {
        conds.push(format!("lease_owner = {}", p.text(&l.worker_id)));
        conds.push(format!("lease_token = {}", p.int(l.token as i64)));
    }
    if let Some(f) = g.from {
        conds.push(format!("state = {}", p.text(f.as_str())));
    }
    let mut finish_parts = Vec::new();
    for r in &g.finishes {
        let k = format!(
            "action_id = {} AND rollback = {} AND attempt = {}",
            p.text(&r.action_id),
            p.int(i64::from(r.rollback)),
            p.int(i64::from(r.attempt))
        );
        conds.push(format!(
            "EXISTS (SELECT 1 FROM attempts WHERE request_id = {id_p} AND {k})"
        ));
        finish_parts.push((k, p.push(Bind::Text(json(*r)))));
    }
    let lock = if sets.is_empty() {
        format!(
            "SELECT {COLUMNS} FROM requests WHERE {} FOR UPDATE",
            conds.join(" AND ")
        )
    } else {
        format!(
            "UPDATE requests SET {} WHERE {} RETURNING {COLUMNS}",
            sets.join(", "),
            conds.join(" AND ")
        )
    };
    let mut ctes = vec![format!("upd AS ({lock})")];
    if !g.starts.is_empty() {
        ctes.push(starts_cte(&mut p, &g.starts));
    }
    for (i, (k, record)) in finish_parts.into_iter().enumerate() {
        ctes.push(format!(
            "f{i} AS (UPDATE attempts SET record = {record} WHERE request_id = (SELECT id FROM upd) AND {k})"
        ));
    }
    if !g.events.is_empty() {
        ctes.push(events_cte(&mut p, g.events, &id_p));
    }
    // An ended request's sealed values go with the transition (see `Store::sealed`).
    match g.state {
        Some((RequestState::Failed, _)) => ctes.push(format!(
            "sv AS (DELETE FROM sealed_values WHERE request_id = (SELECT id FROM upd) AND name LIKE {})",
            p.text(&format!("{SEALED_FIELD_PREFIX}%"))
        )),
        Some((to, _)) if to.is_terminal() => {
            ctes.push(
                "sv AS (DELETE FROM sealed_values WHERE request_id = (SELECT id FROM upd))"
                    .to_string(),
            );
            ctes.push(
                "sk AS (DELETE FROM sealed_keys WHERE request_id = (SELECT id FROM upd))"
                    .to_string(),
            );
        }
        _ => {}
    }
    Some(Plan {
        ctes,
        params: p,
        from: g.from,
        starts: g.starts.iter().map(|r| key(r)).collect(),
        finishes: g.finishes.iter().map(|r| key(r)).collect(),
    })
}

/// Sorts a batch's writes by kind; `None` when the batch needs the transactional path
/// (transitions that do not chain, attempts of another request or without a lease, an attempt
/// written twice, quota or audit).
fn gather<'w>(id: &str, lease: Option<&Lease>, writes: &'w [Write]) -> Option<Gathered<'w>> {
    let mut g = Gathered {
        from: None,
        state: None,
        terminal: false,
        patch: RequestPatch::default(),
        events: Vec::new(),
        starts: Vec::new(),
        finishes: Vec::new(),
    };
    for w in writes {
        match w {
            Write::Transition {
                from: f,
                to,
                change,
            } => {
                match g.state {
                    None => g.from = Some(*f),
                    Some((s, _)) if s != *f => return None,
                    Some(_) => {}
                }
                g.events
                    .push((change.at, change.clone().into_event(*f, *to).ok()?));
                g.state = Some((*to, change.at));
                g.terminal |= to.is_terminal();
            }
            Write::Patch(p) => merge(&mut g.patch, p),
            Write::Event { at, kind } => g.events.push((*at, kind.clone())),
            Write::StartAttempt(r) | Write::FinishAttempt(r) => {
                if lease.is_none()
                    || r.request_id != id
                    || g.starts.iter().chain(&g.finishes).any(|o| key(o) == key(r))
                {
                    return None;
                }
                if matches!(w, Write::StartAttempt(_)) {
                    g.starts.push(r);
                } else {
                    g.finishes.push(r);
                }
            }
            Write::ReserveQuota { .. }
            | Write::ReleaseQuota
            | Write::Audit(_)
            | Write::Seal { .. }
            | Write::KeepItemDefinition { .. } => return None,
        }
    }
    Some(g)
}

/// What changes on the request row: its state, the patched columns, the lease on an end.
fn sets(
    p: &mut Params,
    state: Option<(RequestState, DateTime<Utc>)>,
    patch: RequestPatch,
    terminal: bool,
) -> Vec<String> {
    let mut sets: Vec<String> = Vec::new();
    if let Some((to, at)) = state {
        sets.push(format!("state = {}", p.text(to.as_str())));
        sets.push(format!("updated_at = {}", p.int(ms(at))));
    }
    if let Some(v) = patch.rollback {
        sets.push(format!("rollback = {}", p.text(rollback_name(v))));
    }
    if let Some(v) = patch.error {
        sets.push(format!("error = {}", p.push(Bind::Text(v))));
    }
    if let Some(v) = patch.approval_due {
        sets.push(format!(
            "approval_due = {}",
            p.push(Bind::OptInt(v.map(ms)))
        ));
    }
    if let Some(v) = patch.escalated {
        sets.push(format!("escalated = {}", p.int(i64::from(v))));
    }
    if let Some(v) = patch.cancel_requested {
        sets.push(format!("cancel_requested = {}", p.int(i64::from(v))));
    }
    if let Some(v) = patch.waiting_for {
        sets.push(format!("waiting_for = {}", p.push(Bind::OptText(v))));
    }
    if terminal {
        sets.push("lease_owner = NULL, lease_expires_at = NULL".to_string());
    }
    sets
}

/// The part that inserts the attempts a batch starts.
fn starts_cte(p: &mut Params, starts: &[&AttemptRecord]) -> String {
    let rows: Vec<String> = starts
        .iter()
        .map(|r| {
            format!(
                "({}, {}, {}, {}, {})",
                p.text(&r.action_id),
                p.int(i64::from(r.rollback)),
                p.int(i64::from(r.attempt)),
                p.int(ms(r.started_at)),
                p.push(Bind::Text(json(*r)))
            )
        })
        .collect();
    format!(
        "s AS (INSERT INTO attempts (request_id, action_id, rollback, attempt, started_at, record) \
         SELECT upd.id, v.column1, v.column2, v.column3, v.column4, v.column5 FROM upd, (VALUES {}) AS v)",
        rows.join(", ")
    )
}

/// The part that appends a batch's events after the request's last one.
fn events_cte(p: &mut Params, events: Vec<(DateTime<Utc>, EventKind)>, id_p: &str) -> String {
    let rows: Vec<String> = events
        .into_iter()
        .enumerate()
        .map(|(i, (at, kind))| {
            format!(
                "({}, {}, {})",
                p.int(i as i64 + 1),
                p.int(ms(at)),
                p.push(Bind::Text(json(&kind)))
            )
        })
        .collect();
    format!(
        "e AS (INSERT INTO events (request_id, seq, at, correlation_id, kind) \
         SELECT upd.id, last.m + v.column1, v.column2, upd.correlation_id, v.column3 \
         FROM upd, (SELECT COALESCE(MAX(seq), 0) AS m FROM events WHERE request_id = {id_p}) AS last, \
         (VALUES {}) AS v)",
        rows.join(", ")
    )
}

/// Later patches of a batch win, field by field, as when applied one after the other.
fn merge(into: &mut RequestPatch, p: &RequestPatch) {
    let p = p.clone();
    into.rollback = p.rollback.or(into.rollback);
    into.error = p.error.or(into.error.take());
    into.approval_due = p.approval_due.or(into.approval_due);
    into.escalated = p.escalated.or(into.escalated);
    into.cancel_requested = p.cancel_requested.or(into.cancel_requested);
    into.waiting_for = p.waiting_for.or(into.waiting_for.take());
}

/// How often a statement whose event numbers collided with another writer's is run again.
const COLLISION_RETRIES: usize = 16;

/// What a statement's failure means: `None` for event numbers taken by a writer that
/// committed while this one waited (run it again), else the error to return.
fn failure(plan: &Plan<'_>, e: sqlx::Error) -> Option<StoreError> {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            if d.constraint() != Some("attempts_pkey") {
                return None;
            }
            let named: Vec<String> = plan
                .starts
                .iter()
                .map(|(action, _, attempt)| format!("attempt {attempt} of {action}"))
                .collect();
            Some(StoreError::Duplicate(format!(
                "{} exists",
                named.join(" or ")
            )))
        }
        e => Some(db(e)),
    }
}

fn kept_changing(id: &str) -> StoreError {
    StoreError::Unavailable(format!("request {id} kept changing; try again"))
}

/// Runs the plan as one statement, committed on its own: the request as written, or the error
/// the transactional path would give (nothing is written then).
pub(crate) async fn run(
    conn: &mut AnyConnection,
    id: &str,
    lease: Option<&Lease>,
    plan: &Plan<'_>,
) -> Result<Request, StoreError> {
    let sql = format!("WITH {} SELECT {COLUMNS} FROM upd", plan.ctes.join(", "));
    for _ in 0..COLLISION_RETRIES {
        let q = plan
            .params
            .bind_to(sqlx::query(sqlx::AssertSqlSafe(sql.clone())));
        match q.fetch_optional(&mut *conn).await {
            Ok(Some(row)) => return row_to_request(&row),
            Ok(None) => match diagnose(conn, id, lease, plan).await {
                Some(e) => return Err(e),
                // It holds now: the row changed between the two statements.
                None => continue,
            },
            Err(e) => match failure(plan, e) {
                Some(e) => return Err(e),
                None => continue,
            },
        }
    }
    Err(kept_changing(id))
}

/// The claim [`run_then_claim`] adds.
pub(crate) struct Claim<'a> {
    pub(crate) worker_id: &'a str,
    /// The new lease's length in milliseconds of the database's clock.
    pub(crate) lease_ms: i64,
}

/// Runs the plan (a batch under `lease`) with a claim of the worker's next request as one
/// statement: the claim is one more part, `c`, that does not join `upd`, so it is made whether
/// or not the batch's conditions hold, and it never takes the batch's own request. The rows
/// come back tagged: `part` 0 is the batch's request, 1 the claimed one.
///
/// When the batch matched nothing, the claim stands and the batch goes on as [`run`] would
/// (read why, or run it alone again); when the statement failed, nothing stands, not even
/// the claim.
pub(crate) async fn run_then_claim(
    conn: &mut AnyConnection,
    lease: &Lease,
    plan: &Plan<'_>,
    claim: Claim<'_>,
) -> AppliedThenClaimed {
    let id = lease.request_id.as_str();
    let mut params = plan.params.clone();
    let placeholders = [params.text(claim.worker_id), params.int(claim.lease_ms)];
    let not = params.text(id);
    let c = claim_statement(
        Dialect::Postgres,
        placeholders.each_ref().map(String::as_str),
        Some(&not),
    );
    let sql = format!(
        "WITH {}, c AS ({c}) \
         SELECT 0::BIGINT AS part, {COLUMNS}, 0::BIGINT AS lease_token, 0::BIGINT AS lease_expires_at FROM upd \
         UNION ALL SELECT 1::BIGINT AS part, {COLUMNS}, lease_token, lease_expires_at FROM c",
        plan.ctes.join(", ")
    );
    for _ in 0..COLLISION_RETRIES {
        let q = params.bind_to(sqlx::query(sqlx::AssertSqlSafe(sql.clone())));
        let rows = match q.fetch_all(&mut *conn).await {
            Ok(rows) => rows,
            Err(e) => match failure(plan, e) {
                Some(e) => {
                    // Nothing was written; the worker claims on its own next.
                    let claimed = match e {
                        StoreError::Duplicate(_) => Ok(None),
                        ref other => Err(other.clone()),
                    };
                    return AppliedThenClaimed {
                        applied: Err(e),
                        claimed,
                    };
                }
                None => continue,
            },
        };
        let mut applied = None;
        let mut claimed = Ok(None);
        for row in &rows {
            match row.try_get::<i64, _>("part") {
                Ok(0) => applied = Some(row_to_request(row)),
                Ok(_) => claimed = claimed_row(row, claim.worker_id).map(Some),
                Err(e) => claimed = Err(db(e)),
            }
        }
        let applied = match applied {
            Some(r) => r,
            None => run(conn, id, Some(lease), plan).await,
        };
        return AppliedThenClaimed { applied, claimed };
    }
    let e = kept_changing(id);
    AppliedThenClaimed {
        applied: Err(e),
        claimed: Ok(None),
    }
}

/// Why the plan matched no row, as the transactional path would say it; `None` when it
/// matches now.
async fn diagnose(
    conn: &mut AnyConnection,
    id: &str,
    lease: Option<&Lease>,
    plan: &Plan<'_>,
) -> Option<StoreError> {
    let actual = match fenced_state(conn, id, lease).await {
        Ok(s) => s,
        Err(e) => return Some(e),
    };
    if let Some(expected) = plan.from
        && actual != expected
    {
        return Some(StoreError::Conflict {
            id: id.to_string(),
            expected,
            actual,
        });
    }
    for (action_id, rollback, attempt) in &plan.finishes {
        let found = sqlx::query(
            "SELECT 1 AS one FROM attempts WHERE request_id = $1 AND action_id = $2 AND rollback = $3 AND attempt = $4",
        )
        .bind(id.to_string())
        .bind(action_id.to_string())
        .bind(i64::from(*rollback))
        .bind(i64::from(*attempt))
        .fetch_optional(&mut *conn)
        .await;
        match found {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Some(StoreError::NotFound(format!(
                    "attempt {attempt} of {action_id} in {id}"
                )));
            }
            Err(e) => return Some(db(e)),
        }
    }
    None
}
