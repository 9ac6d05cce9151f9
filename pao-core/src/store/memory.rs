//! The in-memory [`Store`]: one mutex over plain maps. For tests, embedding and benchmarks;
//! it loses everything when the process exits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::*;

#[derive(Default)]
struct Inner {
    requests: HashMap<String, Request>,
    order: Vec<String>,
    by_key: HashMap<String, String>,
    leases: HashMap<String, (String, u64, DateTime<Utc>)>,
    tokens: HashMap<String, u64>,
    events: HashMap<String, Vec<Event>>,
    attempts: HashMap<String, Vec<AttemptRecord>>,
    decisions: HashMap<String, Vec<ApprovalDecision>>,
    limits: BTreeMap<(String, String), u64>,
    reservations: BTreeMap<(String, String), (String, u64)>,
    /// Audit records with their ids, in append order; ids are never reused.
    audit: Vec<(u64, AuditRecord)>,
    audit_ids: u64,
    sealed: HashMap<String, SealedSecrets>,
    definitions: HashMap<String, (String, String)>,
    kv: BTreeMap<(String, String), String>,
}

/// A [`Store`] in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    work: Notify,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("in-memory store poisoned by a panic".to_string()))
    }
}

impl Inner {
    /// The request, after [`Inner::fence`].
    fn fenced(&mut self, id: &str, lease: Option<&Lease>) -> Result<&mut Request, StoreError> {
        self.fence(id, lease)?;
        self.requests
            .get_mut(id)
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    fn fence(&self, id: &str, lease: Option<&Lease>) -> Result<(), StoreError> {
        let Some(lease) = lease else { return Ok(()) };
        // Tokens count per request, so a lease on another request can carry the same numbers.
        if lease.request_id != id {
            return Err(StoreError::LeaseLost(id.to_string()));
        }
        match self.leases.get(id) {
            Some((worker, token, _)) if *worker == lease.worker_id && *token == lease.token => {
                Ok(())
            }
            _ => Err(StoreError::LeaseLost(id.to_string())),
        }
    }

    fn push_event(&mut self, id: &str, at: DateTime<Utc>, kind: EventKind) -> u64 {
        let correlation_id = self
            .requests
            .get(id)
            .map(|r| r.correlation_id.clone())
            .unwrap_or_default();
        let list = self.events.entry(id.to_string()).or_default();
        let seq = list.len() as u64 + 1;
        list.push(Event {
            seq,
            request_id: id.to_string(),
            at,
            correlation_id,
            kind,
        });
        seq
    }
}

/// What a failed batch restores: the parts of one request's state a batch can touch.
struct Undo {
    id: String,
    request: Option<Request>,
    lease: Option<(String, u64, DateTime<Utc>)>,
    events: usize,
    attempts: Option<Vec<AttemptRecord>>,
    reservations: Vec<((String, String), (String, u64))>,
    audit: usize,
    sealed: Option<SealedSecrets>,
}

impl Inner {
    fn push_audit(&mut self, record: AuditRecord) {
        self.audit_ids += 1;
        self.audit.push((self.audit_ids, record));
    }

    fn undo_point(&self, id: &str) -> Undo {
        Undo {
            id: id.to_string(),
            request: self.requests.get(id).cloned(),
            lease: self.leases.get(id).cloned(),
            events: self.events.get(id).map_or(0, Vec::len),
            attempts: self.attempts.get(id).cloned(),
            reservations: self
                .reservations
                .iter()
                .filter(|((rid, _), _)| rid == id)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            audit: self.audit.len(),
            sealed: self.sealed.get(id).cloned(),
        }
    }

    fn restore(&mut self, u: Undo) {
        let id = u.id;
        match u.request {
            Some(r) => {
                self.requests.insert(id.clone(), r);
            }
            None => {
                if let Some(r) = self.requests.remove(&id)
                    && let Some(k) = r.idempotency_key
                {
                    self.by_key.remove(&k);
                }
                self.order.retain(|o| *o != id);
            }
        }
        match u.lease {
            Some(l) => {
                self.leases.insert(id.clone(), l);
            }
            None => {
                self.leases.remove(&id);
            }
        }
        if let Some(list) = self.events.get_mut(&id) {
            list.truncate(u.events);
        }
        match u.attempts {
            Some(a) => {
                self.attempts.insert(id.clone(), a);
            }
            None => {
                self.attempts.remove(&id);
            }
        }
        self.reservations.retain(|(rid, _), _| *rid != id);
        match u.sealed {
            Some(x) => {
                self.sealed.insert(id.clone(), x);
            }
            None => {
                self.sealed.remove(&id);
            }
        }
        self.reservations.extend(u.reservations);
        self.audit.truncate(u.audit);
    }

    fn submit_in(
        &mut self,
        new: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Submitted, StoreError> {
        if let Some(key) = &new.idempotency_key
            && let Some(id) = self.by_key.get(key)
            && let Some(existing) = self.requests.get(id)
        {
            return Ok(Submitted {
                request: existing.clone(),
                created: false,
            });
        }
        let request = new.into_submitted(now);
        if self.requests.contains_key(&request.id) {
            return Err(StoreError::Duplicate(format!(
                "request id {} exists",
                request.id
            )));
        }
        if let Some(key) = &request.idempotency_key {
            self.by_key.insert(key.clone(), request.id.clone());
        }
        self.order.push(request.id.clone());
        self.requests.insert(request.id.clone(), request.clone());
        self.push_event(
            &request.id,
            now,
            EventKind::StateChanged {
                from: None,
                to: RequestState::Submitted,
                actor: actor.to_string(),
                reason: None,
            },
        );
        Ok(Submitted {
            request,
            created: true,
        })
    }

    fn transition_in(
        &mut self,
        id: &str,
        from: RequestState,
        to: RequestState,
        change: StateChange,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        let r = self.fenced(id, lease)?;
        let at = change.at;
        let event = r.apply_transition(from, to, change)?;
        let out = r.clone();
        self.push_event(id, at, event);
        if to.is_terminal() {
            self.leases.remove(id);
            if to == RequestState::Failed {
                if let Some(x) = self.sealed.get_mut(id) {
                    x.values.retain(|k, _| !k.starts_with(SEALED_FIELD_PREFIX));
                }
            } else {
                self.sealed.remove(id);
            }
        }
        Ok(out)
    }

    fn update_in(
        &mut self,
        id: &str,
        patch: RequestPatch,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        let r = self.fenced(id, lease)?;
        patch.apply_to(r);
        Ok(r.clone())
    }

    fn event_in(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        kind: EventKind,
        lease: Option<&Lease>,
    ) -> Result<u64, StoreError> {
        self.fence(id, lease)?;
        if !self.requests.contains_key(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(self.push_event(id, at, kind))
    }

    fn start_in(&mut self, lease: &Lease, record: AttemptRecord) -> Result<(), StoreError> {
        self.fence(&record.request_id, Some(lease))?;
        let list = self.attempts.entry(record.request_id.clone()).or_default();
        if list.iter().any(|a| {
            a.action_id == record.action_id
                && a.rollback == record.rollback
                && a.attempt == record.attempt
        }) {
            return Err(StoreError::Duplicate(format!(
                "attempt {} of {} exists",
                record.attempt, record.action_id
            )));
        }
        list.push(record);
        Ok(())
    }

    fn finish_in(
        &mut self,
        lease: &Lease,
        action_id: &str,
        rollback: bool,
        attempt: u32,
        outcome: AttemptOutcome,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.fence(&lease.request_id, Some(lease))?;
        let list = self.attempts.entry(lease.request_id.clone()).or_default();
        match list
            .iter_mut()
            .rev()
            .find(|a| a.action_id == action_id && a.rollback == rollback && a.attempt == attempt)
        {
            Some(a) => {
                a.outcome = outcome;
                a.finished_at = Some(at);
                Ok(())
            }
            None => Err(StoreError::NotFound(format!(
                "attempt {attempt} of {action_id} in {}",
                lease.request_id
            ))),
        }
    }

    fn reserve_in(
        &mut self,
        request_id: &str,
        team: &str,
        resource: &str,
        amount: u64,
        default_limit: Option<u64>,
    ) -> Result<(), StoreError> {
        let key = (request_id.to_string(), resource.to_string());
        let used: u64 = self
            .reservations
            .iter()
            .filter(|((rid, res), (t, _))| res == resource && t == team && *rid != request_id)
            .map(|(_, (_, a))| *a)
            .fold(0, u64::saturating_add);
        if let Some(limit) = self
            .limits
            .get(&(team.to_string(), resource.to_string()))
            .copied()
            .or(default_limit)
            && used.saturating_add(amount) > limit
        {
            return Err(StoreError::QuotaExceeded {
                team: team.to_string(),
                resource: resource.to_string(),
                limit,
                used,
                asked: amount,
            });
        }
        self.reservations.insert(key, (team.to_string(), amount));
        Ok(())
    }

    /// Applies a batch; the caller restores the undo point when it fails.
    fn apply_in(
        &mut self,
        id: &str,
        lease: Option<&Lease>,
        writes: Vec<Write>,
    ) -> Result<Request, StoreError> {
        self.fence(id, lease)?;
        let leased = || lease.ok_or_else(|| StoreError::LeaseLost(id.to_string()));
        for w in writes {
            match w {
                Write::Transition { from, to, change } => {
                    self.transition_in(id, from, to, change, lease)?;
                }
                Write::Patch(p) => {
                    self.update_in(id, p, lease)?;
                }
                Write::Event { at, kind } => {
                    self.event_in(id, at, kind, lease)?;
                }
                Write::StartAttempt(r) => {
                    if r.request_id != id {
                        return Err(StoreError::LeaseLost(id.to_string()));
                    }
                    self.start_in(leased()?, r)?
                }
                Write::FinishAttempt(r) => {
                    let at = r.finished_at.unwrap_or(r.started_at);
                    self.finish_in(
                        leased()?,
                        &r.action_id,
                        r.rollback,
                        r.attempt,
                        r.outcome,
                        at,
                    )?
                }
                Write::ReserveQuota {
                    resource,
                    amount,
                    default_limit,
                } => {
                    let team = self
                        .requests
                        .get(id)
                        .ok_or_else(|| StoreError::NotFound(id.to_string()))?
                        .team
                        .clone();
                    self.reserve_in(id, &team, &resource, amount, default_limit)?
                }
                Write::ReleaseQuota => self.reservations.retain(|(rid, _), _| rid != id),
                Write::Audit(a) => self.push_audit(a),
                Write::Seal { key, values } => {
                    if !self.requests.contains_key(id) {
                        return Err(StoreError::NotFound(id.to_string()));
                    }
                    let x = self.sealed.entry(id.to_string()).or_default();
                    match &x.key {
                        Some(k) if *k != key => {
                            return Err(StoreError::Duplicate(format!(
                                "request {id} has another data key"
                            )));
                        }
                        _ => x.key = Some(key),
                    }
                    x.values.extend(values);
                }
                Write::KeepItemDefinition {
                    hash,
                    item_id,
                    source,
                } => {
                    self.definitions.entry(hash).or_insert((item_id, source));
                }
            }
        }
        self.requests
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn submit(
        &self,
        new: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Submitted, StoreError> {
        self.lock()?.submit_in(new, actor, now)
    }

    async fn submit_with(
        &self,
        new: NewRequest,
        actor: &str,
        now: DateTime<Utc>,
        writes: Vec<Write>,
    ) -> Result<Submitted, StoreError> {
        let wakes = Write::queues(&writes);
        let mut g = self.lock()?;
        let undo = g.undo_point(&new.id);
        let submitted = g.submit_in(new, actor, now)?;
        if !submitted.created {
            return Ok(submitted);
        }
        match g.apply_in(&submitted.request.id, None, writes) {
            Ok(request) => {
                drop(g);
                if wakes {
                    self.work.notify_waiters();
                }
                Ok(Submitted {
                    request,
                    created: true,
                })
            }
            Err(e) => {
                g.restore(undo);
                Err(e)
            }
        }
    }

    async fn apply(
        &self,
        id: &str,
        lease: Option<&Lease>,
        writes: Vec<Write>,
    ) -> Result<Request, StoreError> {
        let wakes = Write::queues(&writes);
        let mut g = self.lock()?;
        if !g.requests.contains_key(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        let undo = g.undo_point(id);
        match g.apply_in(id, lease, writes) {
            Ok(r) => {
                drop(g);
                if wakes {
                    self.work.notify_waiters();
                }
                Ok(r)
            }
            Err(e) => {
                g.restore(undo);
                Err(e)
            }
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Request>, StoreError> {
        Ok(self.lock()?.requests.get(id).cloned())
    }

    async fn list(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let g = self.lock()?;
        let mut out: Vec<Request> = g
            .order
            .iter()
            .rev()
            .filter_map(|id| g.requests.get(id))
            .filter(|r| f.states.is_empty() || f.states.contains(&r.state))
            .filter(|r| f.requester.as_ref().is_none_or(|u| &r.requester.id == u))
            .filter(|r| f.team.as_ref().is_none_or(|t| &r.team == t))
            .filter(|r| f.item_id.as_ref().is_none_or(|i| &r.item_id == i))
            .filter(|r| {
                f.before
                    .as_ref()
                    .is_none_or(|(at, id)| (r.created_at, &r.id) < (*at, id))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        if f.limit > 0 {
            out.truncate(f.limit);
        }
        Ok(out)
    }

    async fn request_waiting_for(&self, key: &str) -> Result<Option<Request>, StoreError> {
        let manual = format!("manual:{key}");
        let g = self.lock()?;
        Ok(g.requests
            .values()
            .filter(|r| r.state == RequestState::InProgress)
            .filter(|r| {
                r.waiting_for
                    .as_deref()
                    .is_some_and(|w| w == key || w == manual)
            })
            .min_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            .cloned())
    }

    async fn parked_requests(
        &self,
        prefix: &str,
        state: RequestState,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError> {
        let g = self.lock()?;
        let mut parked: Vec<Request> = g
            .requests
            .values()
            .filter(|r| r.state == state)
            .filter(|r| {
                r.waiting_for.as_deref().is_some_and(|w| {
                    w.starts_with(prefix) && after.is_none_or(|a| (w, r.id.as_str()) > a)
                })
            })
            .cloned()
            .collect();
        parked.sort_by(|a, b| (&a.waiting_for, &a.id).cmp(&(&b.waiting_for, &b.id)));
        parked.truncate(limit);
        Ok(parked)
    }

    async fn held_requests(&self, prefix: &str, limit: usize) -> Result<Vec<Request>, StoreError> {
        let g = self.lock()?;
        let mut held: Vec<Request> = g
            .requests
            .values()
            .filter(|r| r.state == RequestState::Queued)
            .filter(|r| {
                r.waiting_for
                    .as_deref()
                    .is_some_and(|w| w.starts_with(prefix))
            })
            .cloned()
            .collect();
        held.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        held.truncate(limit);
        Ok(held)
    }

    async fn transition(
        &self,
        id: &str,
        from: RequestState,
        to: RequestState,
        change: StateChange,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        let out = self.lock()?.transition_in(id, from, to, change, lease)?;
        if to == RequestState::Queued {
            self.work.notify_waiters();
        }
        Ok(out)
    }

    async fn update(
        &self,
        id: &str,
        patch: RequestPatch,
        lease: Option<&Lease>,
    ) -> Result<Request, StoreError> {
        self.lock()?.update_in(id, patch, lease)
    }

    async fn append_event(
        &self,
        id: &str,
        at: DateTime<Utc>,
        kind: EventKind,
        lease: Option<&Lease>,
    ) -> Result<u64, StoreError> {
        self.lock()?.event_in(id, at, kind, lease)
    }

    async fn events(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let g = self.lock()?;
        let list = g.events.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let iter = list.iter().filter(|e| e.seq > after_seq).cloned();
        Ok(if limit > 0 {
            iter.take(limit).collect()
        } else {
            iter.collect()
        })
    }

    async fn claim(
        &self,
        worker_id: &str,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<(Request, Lease)>, StoreError> {
        let mut g = self.lock()?;
        let mut best: Option<&Request> = None;
        for id in &g.order {
            let Some(r) = g.requests.get(id) else {
                continue;
            };
            let runnable = match r.state {
                RequestState::Queued => {
                    r.waiting_for.is_none()
                        && g.leases.get(id).is_none_or(|(_, _, exp)| *exp <= now)
                }
                RequestState::InProgress | RequestState::PostFulfillment => {
                    r.waiting_for.is_none()
                        && g.leases.get(id).is_none_or(|(_, _, exp)| *exp <= now)
                }
                _ => false,
            };
            if runnable
                && best.is_none_or(|b| {
                    (r.priority, std::cmp::Reverse(r.created_at))
                        > (b.priority, std::cmp::Reverse(b.created_at))
                })
            {
                best = Some(r);
            }
        }
        let Some(r) = best.cloned() else {
            return Ok(None);
        };
        let token = g.tokens.get(&r.id).copied().unwrap_or(0) + 1;
        g.tokens.insert(r.id.clone(), token);
        let expires_at = now + chrono::Duration::from_std(lease_for).unwrap_or_default();
        g.leases
            .insert(r.id.clone(), (worker_id.to_string(), token, expires_at));
        Ok(Some((
            r.clone(),
            Lease {
                request_id: r.id,
                worker_id: worker_id.to_string(),
                token,
                expires_at,
            },
        )))
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let mut g = self.lock()?;
        g.fence(&lease.request_id, Some(lease))?;
        let expires_at = now + chrono::Duration::from_std(lease_for).unwrap_or_default();
        g.leases.insert(
            lease.request_id.clone(),
            (lease.worker_id.clone(), lease.token, expires_at),
        );
        Ok(Lease {
            expires_at,
            ..lease.clone()
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        if g.fence(&lease.request_id, Some(lease)).is_ok() {
            g.leases.remove(&lease.request_id);
        }
        drop(g);
        self.work.notify_waiters();
        Ok(())
    }

    async fn start_attempt(&self, lease: &Lease, record: AttemptRecord) -> Result<(), StoreError> {
        self.lock()?.start_in(lease, record)
    }

    async fn finish_attempt(
        &self,
        lease: &Lease,
        action_id: &str,
        rollback: bool,
        attempt: u32,
        outcome: AttemptOutcome,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.lock()?
            .finish_in(lease, action_id, rollback, attempt, outcome, at)
    }

    async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        Ok(self.lock()?.attempts.get(id).cloned().unwrap_or_default())
    }

    async fn record_decision(
        &self,
        d: ApprovalDecision,
    ) -> Result<Vec<ApprovalDecision>, StoreError> {
        let mut g = self.lock()?;
        if !g.requests.contains_key(&d.request_id) {
            return Err(StoreError::NotFound(d.request_id));
        }
        let list = g.decisions.entry(d.request_id.clone()).or_default();
        if list.iter().any(|x| x.approver == d.approver) {
            return Err(StoreError::Duplicate(format!(
                "{} already decided on {}",
                d.approver, d.request_id
            )));
        }
        list.push(d);
        Ok(list.clone())
    }

    async fn purge(
        &self,
        before: DateTime<Utc>,
        audit_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        let mut g = self.lock()?;
        let mut ended: Vec<(DateTime<Utc>, String)> = g
            .requests
            .values()
            .filter(|r| r.state.is_terminal() && r.updated_at < before)
            .map(|r| (r.updated_at, r.id.clone()))
            .collect();
        ended.sort();
        ended.truncate(limit);
        let mut out = Purged::default();
        for (_, id) in &ended {
            if let Some(r) = g.requests.remove(id)
                && let Some(k) = r.idempotency_key
            {
                g.by_key.remove(&k);
            }
            g.order.retain(|o| o != id);
            g.leases.remove(id);
            g.tokens.remove(id);
            g.events.remove(id);
            g.attempts.remove(id);
            g.decisions.remove(id);
            g.sealed.remove(id);
            g.reservations.retain(|(rid, _), _| rid != id);
            out.requests += 1;
        }
        // Oldest first (the log is in append order), at most `limit`.
        let mut left = limit;
        g.audit.retain(|(_, a)| {
            let goes = left > 0 && a.at < audit_before;
            if goes {
                left -= 1;
            }
            !goes
        });
        out.audit = (limit - left) as u64;
        Ok(out)
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()?
            .kv
            .get(&(namespace.to_string(), key.to_string()))
            .cloned())
    }

    async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        max_namespace_bytes: u64,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock()?;
        let others: usize =
            g.kv.iter()
                .filter(|((ns, k), _)| ns == namespace && k != key)
                .map(|((_, k), v)| k.len() + v.len())
                .sum();
        if (others + key.len() + value.len()) as u64 > max_namespace_bytes {
            return Ok(false);
        }
        g.kv.insert((namespace.to_string(), key.to_string()), value.to_string());
        Ok(true)
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        self.lock()?
            .kv
            .remove(&(namespace.to_string(), key.to_string()));
        Ok(())
    }

    async fn item_definition(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self.lock()?.definitions.get(hash).cloned())
    }

    async fn sealed(&self, request_id: &str) -> Result<SealedSecrets, StoreError> {
        Ok(self
            .lock()?
            .sealed
            .get(request_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn keys_not_wrapped_by(
        &self,
        kek_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, WrappedKey)>, StoreError> {
        let g = self.lock()?;
        let mut out: Vec<(String, WrappedKey)> = g
            .sealed
            .iter()
            .filter_map(|(id, x)| x.key.as_ref().map(|k| (id.clone(), k.clone())))
            .filter(|(_, k)| k.kek_id != kek_id)
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.truncate(limit);
        Ok(out)
    }

    async fn rewrap_key(
        &self,
        request_id: &str,
        old: &WrappedKey,
        new: &WrappedKey,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock()?;
        match g.sealed.get_mut(request_id) {
            Some(x) if x.key.as_ref() == Some(old) => {
                x.key = Some(new.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn decisions(&self, id: &str) -> Result<Vec<ApprovalDecision>, StoreError> {
        Ok(self.lock()?.decisions.get(id).cloned().unwrap_or_default())
    }

    async fn set_quota_limit(
        &self,
        team: &str,
        resource: &str,
        limit: u64,
    ) -> Result<(), StoreError> {
        self.lock()?.limits.insert(
            (team.to_string(), resource.to_string()),
            limit.min(MAX_QUOTA_LIMIT),
        );
        Ok(())
    }

    async fn set_quota_limits(
        &self,
        team: &str,
        limits: &[(String, u64)],
        audit: AuditRecord,
    ) -> Result<(), StoreError> {
        check_quota_limits(limits)?;
        let mut g = self.lock()?;
        for (resource, limit) in limits {
            g.limits
                .insert((team.to_string(), resource.clone()), *limit);
        }
        g.push_audit(audit);
        Ok(())
    }

    async fn reserve_quota(
        &self,
        request_id: &str,
        team: &str,
        resource: &str,
        amount: u64,
    ) -> Result<(), StoreError> {
        self.lock()?
            .reserve_in(request_id, team, resource, amount, None)
    }

    async fn release_quota(&self, request_id: &str) -> Result<(), StoreError> {
        self.lock()?
            .reservations
            .retain(|(rid, _), _| rid != request_id);
        Ok(())
    }

    async fn quota_usage(&self, team: &str) -> Result<Vec<QuotaUsage>, StoreError> {
        let g = self.lock()?;
        let mut usage: BTreeMap<String, QuotaUsage> = BTreeMap::new();
        for ((t, res), limit) in &g.limits {
            if t == team {
                usage.insert(
                    res.clone(),
                    QuotaUsage {
                        resource: res.clone(),
                        limit: Some(*limit),
                        used: 0,
                    },
                );
            }
        }
        for ((_, res), (t, amount)) in &g.reservations {
            if t == team {
                let u = usage.entry(res.clone()).or_insert_with(|| QuotaUsage {
                    resource: res.clone(),
                    limit: None,
                    used: 0,
                });
                u.used = u.used.saturating_add(*amount);
            }
        }
        Ok(usage.into_values().collect())
    }

    async fn audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        self.lock()?.push_audit(record);
        Ok(())
    }

    async fn audit_log(
        &self,
        target: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LoggedAudit>, StoreError> {
        let g = self.lock()?;
        let iter = g
            .audit
            .iter()
            .rev()
            .filter(|(id, a)| {
                before.is_none_or(|b| *id < b) && target.is_none_or(|t| a.target == t)
            })
            .map(|(id, a)| LoggedAudit {
                id: *id,
                record: a.clone(),
            });
        Ok(if limit > 0 {
            iter.take(limit).collect()
        } else {
            iter.collect()
        })
    }

    async fn request_stats(&self, scope: &StatsScope) -> Result<RequestStats, StoreError> {
        let g = self.lock()?;
        let selected = g.requests.values().filter(|r| {
            scope.team.as_ref().is_none_or(|t| &r.team == t)
                && (scope.item_ids.is_empty() || scope.item_ids.contains(&r.item_id))
        });
        let mut counts: BTreeMap<(String, String, &'static str), StateCount> = BTreeMap::new();
        let mut times = Vec::new();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for r in selected {
            counts
                .entry((r.team.clone(), r.item_id.clone(), r.state.as_str()))
                .or_insert_with(|| StateCount {
                    team: r.team.clone(),
                    item_id: r.item_id.clone(),
                    state: r.state,
                    count: 0,
                })
                .count += 1;
            match r.state {
                RequestState::Completed => {
                    times.push((r.updated_at - r.created_at).num_milliseconds().max(0));
                }
                RequestState::Failed => {
                    let reason = r
                        .error
                        .as_deref()
                        .unwrap_or("unknown")
                        .chars()
                        .take(FAILURE_REASON_CHARS)
                        .collect();
                    *reasons.entry(reason).or_default() += 1;
                }
                _ => {}
            }
        }
        times.sort_unstable();
        let at = |p| percentile_index(times.len() as u64, p).map(|i| times[i as usize]);
        let mut failure_reasons: Vec<(String, u64)> = reasons.into_iter().collect();
        failure_reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        failure_reasons.truncate(FAILURE_REASONS);
        Ok(RequestStats {
            counts: counts.into_values().collect(),
            completion_ms: CompletionTimes {
                p50: at(50),
                p90: at(90),
                p99: at(99),
            },
            failure_reasons,
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
        let g = self.lock()?;
        Ok(page
            .into_iter()
            .map(|request| PendingApproval {
                decisions: g.decisions.get(&request.id).cloned().unwrap_or_default(),
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
        let g = self.lock()?;
        let mut due: Vec<(DateTime<Utc>, &Request)> = g
            .requests
            .values()
            .filter(|r| r.state == RequestState::AwaitingApproval)
            .filter_map(|r| r.approval_due.map(|d| (d, r)))
            .filter(|(d, r)| *d <= by && after.is_none_or(|(ad, aid)| (*d, &r.id) > (*ad, aid)))
            .collect();
        due.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        if limit > 0 {
            due.truncate(limit);
        }
        Ok(due.into_iter().map(|(_, r)| r.clone()).collect())
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
    }
}
