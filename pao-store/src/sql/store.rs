//! [`Store`] on [`SqlStore`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pao_core::lifecycle::RequestState;
use pao_core::sealing::WrappedKey;
use pao_core::store::*;
use sqlx::{AnyConnection, Row};

use super::rows::{
    COLUMNS, at, claim_statement, claimed, db, db_now, json, lease_ms, ms, parse, row_to_request,
};
use super::tx::{Current, insert_audit, insert_event, release_in};
use super::{Dialect, SqlStore, Writes};
use crate::params::Params;

impl SqlStore {
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

    async fn parked_requests(
        &self,
        prefix: &str,
        state: RequestState,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError> {
        // A range on `waiting_for` walks the partial index of parked requests in its order.
        let mut upper = prefix.to_string();
        let last = upper
            .pop()
            .map_or('\u{1}', |c| char::from_u32(c as u32 + 1).unwrap_or(c));
        upper.push(last);
        let (from, from_id) = after.unwrap_or((prefix, ""));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM requests WHERE waiting_for >= $1 AND waiting_for < $2 AND state = $3 \
             AND (waiting_for > $4 OR (waiting_for = $4 AND id > $5)) ORDER BY waiting_for, id LIMIT $6"
        )))
        .bind(prefix.to_string())
        .bind(upper)
        .bind(state.as_str().to_string())
        .bind(from.to_string())
        .bind(from_id.to_string())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(row_to_request).collect()
    }

    async fn held_requests(&self, prefix: &str, limit: usize) -> Result<Vec<Request>, StoreError> {
        // A range on `waiting_for` walks the partial index of parked requests.
        let mut upper = prefix.to_string();
        let last = upper
            .pop()
            .map_or('\u{1}', |c| char::from_u32(c as u32 + 1).unwrap_or(c));
        upper.push(last);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM requests WHERE waiting_for >= $1 AND waiting_for < $2 \
             AND state = 'queued' ORDER BY created_at, id LIMIT $3"
        )))
        .bind(prefix.to_string())
        .bind(upper)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(row_to_request).collect()
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

    async fn purge(
        &self,
        before: DateTime<Utc>,
        audit_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        let limit = limit.max(1);
        // The batch: the oldest ended requests before the cutoff (the `requests_ended`
        // index). The cutoff is in the past, so the batch is the same for every statement.
        let batch = format!(
            "SELECT id FROM requests WHERE state IN ('completed', 'failed', 'cancelled', 'rejected') \
             AND updated_at < $1 ORDER BY updated_at, id LIMIT {limit}"
        );
        self.write(async |tx: &mut AnyConnection| {
            let cutoff = ms(before);
            release_in(&mut *tx, &format!("request_id IN ({batch})"), cutoff).await?;
            for table in [
                "events",
                "attempts",
                "decisions",
                "sealed_values",
                "sealed_keys",
            ] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE request_id IN ({batch})"
                )))
                .bind(cutoff)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            let requests = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM requests WHERE id IN ({batch})"
            )))
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            // Audit ids grow with time: the oldest come first.
            let audit = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 ORDER BY id LIMIT {limit})"
            )))
            .bind(ms(audit_before))
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            Ok(Purged { requests, audit })
        })
        .await
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM plugin_kv WHERE namespace = $1 AND key = $2")
            .bind(namespace.to_string())
            .bind(key.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        max_namespace_bytes: u64,
    ) -> Result<bool, StoreError> {
        let (size, lock) = match self.dialect {
            Dialect::Postgres => (
                "octet_length(key) + octet_length(value)",
                // Two sets in one namespace at once must not both pass the size check.
                Some("SELECT pg_advisory_xact_lock(hashtext('plugin_kv:' || $1))"),
            ),
            Dialect::Sqlite => (
                "length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))",
                None,
            ),
        };
        let (ns, k, v) = (namespace.to_string(), key.to_string(), value.to_string());
        let wanted = i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX);
        let max = i64::try_from(max_namespace_bytes).unwrap_or(i64::MAX);
        self.write(async |tx: &mut AnyConnection| {
            if let Some(lock) = lock {
                sqlx::query(lock)
                    .bind(ns.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            let others: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(COALESCE(SUM({size}), 0) AS BIGINT) FROM plugin_kv WHERE namespace = $1 AND key <> $2"
            )))
            .bind(ns.clone())
            .bind(k.clone())
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if others.saturating_add(wanted) > max {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO plugin_kv (namespace, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            )
            .bind(ns.clone())
            .bind(k.clone())
            .bind(v.clone())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            Ok(true)
        })
        .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let (ns, k) = (namespace.to_string(), key.to_string());
        self.write(async |tx: &mut AnyConnection| {
            sqlx::query("DELETE FROM plugin_kv WHERE namespace = $1 AND key = $2")
                .bind(ns.clone())
                .bind(k.clone())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn item_definition(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        sqlx::query_as("SELECT item_id, source FROM item_definitions WHERE hash = $1")
            .bind(hash.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn sealed(&self, request_id: &str) -> Result<SealedSecrets, StoreError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let undecodable = |what: &str| {
            StoreError::Unavailable(format!(
                "sealed {what} of request {request_id} is not base64"
            ))
        };
        let key: Option<(String, String)> =
            sqlx::query_as("SELECT kek_id, wrapped FROM sealed_keys WHERE request_id = $1")
                .bind(request_id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, sealed FROM sealed_values WHERE request_id = $1 ORDER BY name",
        )
        .bind(request_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let key = match key {
            Some((kek_id, w)) => Some(WrappedKey {
                kek_id,
                wrapped: b64.decode(w).map_err(|_| undecodable("data key"))?,
            }),
            None => None,
        };
        let mut values = std::collections::BTreeMap::new();
        for (name, v) in rows {
            let bytes = b64.decode(v).map_err(|_| undecodable(&name))?;
            values.insert(name, bytes);
        }
        Ok(SealedSecrets { key, values })
    }

    async fn keys_not_wrapped_by(
        &self,
        kek_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, WrappedKey)>, StoreError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT request_id, kek_id, wrapped FROM sealed_keys WHERE kek_id <> $1 \
             ORDER BY request_id LIMIT $2",
        )
        .bind(kek_id.to_string())
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(id, kek_id, w)| {
                let wrapped = b64.decode(w).map_err(|_| {
                    StoreError::Unavailable(format!("data key of request {id} is not base64"))
                })?;
                Ok((id, WrappedKey { kek_id, wrapped }))
            })
            .collect()
    }

    async fn rewrap_key(
        &self,
        request_id: &str,
        old: &WrappedKey,
        new: &WrappedKey,
    ) -> Result<bool, StoreError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (request_id, old, new) = (request_id.to_string(), old.clone(), new.clone());
        self.write(async move |tx: &mut sqlx::AnyConnection| {
            let n = sqlx::query(
                "UPDATE sealed_keys SET kek_id = $1, wrapped = $2 \
                 WHERE request_id = $3 AND kek_id = $4 AND wrapped = $5",
            )
            .bind(new.kek_id.clone())
            .bind(b64.encode(&new.wrapped))
            .bind(request_id.clone())
            .bind(old.kek_id.clone())
            .bind(b64.encode(&old.wrapped))
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            Ok(n == 1)
        })
        .await
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
            self.reserve_in(tx, request_id, team, resource, amount, None)
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

    fn event_wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.events.as_ref().map(|tx| tx.subscribe())
    }
}
