//! A claimed request from start to end: the lease, the run's writes, the phases in turn.

use crate::store::RollbackStatus;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::scopes::{SECRETS_UNAVAILABLE_WAIT, ScopesError};
use super::{LEASE_LOST, NodeResult, PhaseEnd, RunCtx, RunWrites, Scopes, state_change};
use crate::action::ActionOutput;
use crate::catalog::LoadedItem;
use crate::catalog::model::{ActionSpec, FulfillmentMode};
use crate::engine::Orchestrator;
use crate::engine::plan::{Phase, Plan};
use crate::lifecycle::RequestState;
use crate::store::{
    AttemptOutcome, AttemptRecord, EventKind, Lease, Request, RequestPatch, StoreError, Write,
};

/// Aborts a task when dropped: the heartbeat must stop with the run it renews the lease for,
/// also when the worker's future is dropped mid-run (an aborted task, a shutdown `select!`);
/// otherwise it renews the lease forever and no other worker can take the request over.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a run ended in this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// As far as it could go.
    Ran,
    /// Stopped where it was: the lease may be another worker's by now.
    Abandoned,
    /// Stopped where it was and given back ([`Orchestrator::hand_back_running`]).
    HandedBack,
}

/// The action id of a manual request's ticket.
pub(crate) const TICKET: &str = "manual-ticket";

impl Orchestrator {
    pub(crate) fn item_semaphore(&self, item_id: &str) -> Option<Arc<tokio::sync::Semaphore>> {
        let limit = self.config.max_concurrent_per_item?;
        let mut map = self.item_slots.lock().ok()?;
        Some(
            map.entry(item_id.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(limit.max(1))))
                .clone(),
        )
    }

    /// Runs a claimed request as far as it can go. Never panics on bad input: every problem
    /// ends the request `Failed` with the reason, or leaves it for another worker when the
    /// lease is lost.
    ///
    /// The write that ends the request also claims the next request of the worker loop
    /// `worker_id` ([`Store::apply_then_claim`]); that request and its lease are returned, and
    /// the loop must run or release it.
    pub(crate) async fn execute_then_claim(
        self: Arc<Self>,
        request: Request,
        lease: Lease,
        worker_id: &str,
    ) -> Option<(Request, Lease)> {
        let cancel = CancellationToken::new();
        if let Ok(mut m) = self.running.lock() {
            m.insert(request.id.clone(), cancel.clone());
        }
        if request.cancel_requested {
            cancel.cancel();
        }
        let lease_state = Arc::new(tokio::sync::Mutex::new(lease.clone()));
        // Fired when the lease may have ended without this worker hearing of it (the store
        // was unreachable for a whole lease): the run stops where it is.
        let abandon = CancellationToken::new();
        let heartbeat = {
            let engine = self.clone();
            let cancel = cancel.clone();
            let abandon = abandon.clone();
            let lease_state = lease_state.clone();
            let id = request.id.clone();
            AbortOnDrop(tokio::spawn(async move {
                engine.renew_lease(&id, lease_state, cancel, abandon).await;
            }))
        };
        let id = request.id.clone();
        let writes = Arc::new(RunWrites {
            worker_id: worker_id.to_string(),
            ..RunWrites::default()
        });
        let shell = Request {
            fields: Value::Null,
            ..request.clone()
        };
        let hand_back = self.hand_back.clone();
        let ended = tokio::select! {
            _ = self.clone().execute_inner(request, lease, cancel, writes.clone()) => Ended::Ran,
            _ = abandon.cancelled() => Ended::Abandoned,
            _ = hand_back.cancelled() => Ended::HandedBack,
        };
        drop(heartbeat);
        if let Ok(mut m) = self.running.lock() {
            m.remove(&id);
        }
        if ended == Ended::Abandoned {
            // As a crashed worker would: nothing more is written under a lease another worker
            // may hold by now, and nothing is given back. The journal lets the next holder
            // resume.
            return None;
        }
        let current = lease_state.lock().await.clone();
        // Whatever still waits (a path that ended without a final write).
        if !writes.is_empty() {
            let _ = self.commit_run(&writes, &shell, &current, Vec::new()).await;
        }
        // Give the request back if it is still live (manual waits, lost races); a terminal
        // transition dropped the lease already.
        if !writes.ended.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.store.release(&current).await;
        }
        let next = writes.claimed.lock().ok().and_then(|mut c| c.take());
        if ended == Ended::HandedBack
            && let Some((_, lease)) = &next
        {
            let _ = self.store.release(lease).await;
            return None;
        }
        next
    }

    /// Renews a run's lease every third of its length until the run ends (the caller aborts
    /// this task). A lost lease cancels the run (`cancel`): its writes are fenced off from
    /// then on. A store that cannot be reached is no lost lease, and renewals go on; but once
    /// no renewal has succeeded for a whole lease, another worker may hold the request, and
    /// `abandon` stops the run at once, whatever it was doing.
    ///
    /// The lease ends `lease` after the store last renewed it, by the store's clock. This
    /// worker counts the same length on its own clock from before it sent that renewal (from
    /// the start of the run for the claim), so it gives up no later than the store ends the
    /// lease, whatever the two clocks read.
    async fn renew_lease(
        &self,
        id: &str,
        lease_state: Arc<tokio::sync::Mutex<Lease>>,
        cancel: CancellationToken,
        abandon: CancellationToken,
    ) {
        let length = self.config.lease;
        let every = length / 3;
        let mut renewed = self.clock.now();
        loop {
            let deadline = renewed + chrono::Duration::from_std(length).unwrap_or_default();
            let left = |now: chrono::DateTime<chrono::Utc>| {
                (deadline - now).to_std().unwrap_or(Duration::ZERO)
            };
            self.clock.sleep(every.min(left(self.clock.now()))).await;
            let sent = self.clock.now();
            if sent >= deadline {
                abandon.cancel();
                return;
            }
            let current = lease_state.lock().await.clone();
            let beat = tokio::select! {
                r = self.store.heartbeat(&current, length, sent) => Some(r),
                _ = self.clock.sleep(left(sent)) => None,
            };
            match beat {
                Some(Ok(l)) => {
                    *lease_state.lock().await = l;
                    renewed = sent;
                }
                Some(Err(StoreError::LeaseLost(_))) => {
                    cancel.cancel();
                    return;
                }
                // A store hiccup (a dropped connection) is no lost lease, and no reason to
                // cancel the request: renew on the next beat, until the deadline.
                Some(Err(_)) => continue,
                None => {
                    abandon.cancel();
                    return;
                }
            }
            let asked = tokio::select! {
                r = self.store.get(id) => r.ok().flatten().is_some_and(|r| r.cancel_requested),
                _ = self.clock.sleep(left(self.clock.now())) => false,
            };
            if asked {
                cancel.cancel();
            }
        }
    }

    /// Writes what waits in `writes` with `extra`, in one durable write under the lease.
    pub(super) async fn commit_run(
        &self,
        writes: &RunWrites,
        request: &Request,
        lease: &Lease,
        extra: Vec<Write>,
    ) -> Result<Request, StoreError> {
        let mut all = writes.take();
        all.extend(extra);
        writes.redact(&mut all);
        let ends = Write::final_state(&all).is_some_and(|to| to.is_terminal());
        let r = if ends {
            let (r, next) = self
                .commit_then_claim(request, lease, all, &writes.worker_id)
                .await;
            if let (Some(next), Ok(mut slot)) = (next, writes.claimed.lock()) {
                *slot = Some(next);
            }
            r?
        } else {
            self.commit(request, Some(lease), all).await?
        };
        if ends {
            writes
                .ended
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(r)
    }

    /// Moves the request to `to` under the lease, with what waits.
    async fn move_run(
        &self,
        writes: &RunWrites,
        request: &Request,
        lease: &Lease,
        to: RequestState,
        reason: Option<String>,
    ) -> Result<Request, StoreError> {
        let actor = format!("worker:{}", lease.worker_id);
        let change = state_change(request.state, to, &actor, reason, self.clock.now());
        self.commit_run(writes, request, lease, vec![change]).await
    }

    async fn fail(
        &self,
        writes: &RunWrites,
        request: &Request,
        lease: &Lease,
        reason: String,
    ) -> Result<Request, StoreError> {
        let actor = format!("worker:{}", lease.worker_id);
        let patch = Write::Patch(RequestPatch {
            error: Some(reason.clone()),
            ..RequestPatch::default()
        });
        let change = state_change(
            request.state,
            RequestState::Failed,
            &actor,
            Some(reason),
            self.clock.now(),
        );
        self.commit_run(writes, request, lease, vec![patch, change])
            .await
    }

    async fn execute_inner(
        self: Arc<Self>,
        mut request: Request,
        lease: Lease,
        cancel: CancellationToken,
        writes: Arc<RunWrites>,
    ) -> Result<(), StoreError> {
        let actor = format!("worker:{}", lease.worker_id);
        // A queued request never ran: it has no attempts of its own. Its move to
        // `InProgress` waits for the run's first write.
        let fresh = request.state == RequestState::Queued;
        // Work that would start inside a restricted period waits for its end.
        if fresh && let Some(hold) = self.period_hold(&request) {
            writes.push_all(hold);
            return Ok(());
        }
        if fresh {
            writes.push(state_change(
                RequestState::Queued,
                RequestState::InProgress,
                &actor,
                None,
                self.clock.now(),
            ));
            request.state = RequestState::InProgress;
        }
        // The definition the request was admitted with, whatever the catalog holds now.
        let item = match self.item_of(&request).await {
            Ok(Some(item)) => item,
            Ok(None) => {
                let reason = format!(
                    "catalog item `{}` is no longer in the catalog",
                    request.item_id
                );
                self.fail(&writes, &request, &lease, reason).await?;
                return Ok(());
            }
            Err(super::super::governance::PinnedItemError::NoLongerLoads(reason)) => {
                self.fail(&writes, &request, &lease, reason).await?;
                return Ok(());
            }
            Err(super::super::governance::PinnedItemError::Store(e)) => return Err(e),
        };
        let Some(scopes) = self
            .run_scopes(&writes, &request, &lease, &item, fresh)
            .await?
        else {
            return Ok(());
        };
        // From here on, every write of the run is redacted with the run's secrets.
        let _ = writes.redactor.set(scopes.redactor.clone());
        let journal = self.journal(&request, fresh).await?;
        let rollback_data = self.rollback_data(&request, &scopes, &journal).await;
        let data_key = std::sync::OnceLock::new();
        if let Some(k) = scopes.data_key.clone() {
            let _ = data_key.set(k);
        }
        let rc = RunCtx {
            engine: self.clone(),
            item: item.clone(),
            request: request.clone(),
            lease: lease.clone(),
            scopes,
            cancel: cancel.clone(),
            journal: Arc::new(journal),
            writes: writes.clone(),
            data_key: Arc::new(data_key),
            rollback_data: Arc::new(rollback_data),
            defaults: Arc::new(self.execution_defaults(&item)),
        };
        if item.item.fulfillment.mode == FulfillmentMode::Manual
            && request.state == RequestState::InProgress
        {
            return self.run_manual(&rc, request).await;
        }
        let plan = Plan::of(&item.item);
        let mut done: BTreeMap<usize, NodeResult> = BTreeMap::new();
        let mut order: Vec<usize> = Vec::new();
        if request.state == RequestState::InProgress {
            match self
                .main_phase(&rc, &plan, &mut done, &mut order, request)
                .await?
            {
                Some(next) => request = next,
                None => return Ok(()),
            }
        }
        if request.state == RequestState::PostFulfillment {
            // Main outputs are needed by post actions: take them from the journal.
            self.post_phase(&rc, &plan, &mut done, &mut order, &request)
                .await?;
        }
        Ok(())
    }

    /// The scopes of a run. `None`: the request cannot run now and the run ends (it failed,
    /// or waits for the secret provider).
    async fn run_scopes(
        &self,
        writes: &RunWrites,
        request: &Request,
        lease: &Lease,
        item: &LoadedItem,
        fresh: bool,
    ) -> Result<Option<Arc<Scopes>>, StoreError> {
        match Scopes::for_run(self, request, item, fresh).await {
            Ok(s) => Ok(Some(Arc::new(s))),
            Err(ScopesError::Failed(e)) => {
                self.fail(writes, request, lease, e).await?;
                Ok(None)
            }
            Err(ScopesError::SecretsUnavailable(e)) => {
                // An outage of the secret provider is no fault of the request: wait a little,
                // then give it back (the caller releases the lease) to be claimed again. The
                // wait is not cut short by a cancel, so that a re-claim cannot spin.
                if fresh {
                    // Stored now, not after the wait: the request's log says at once why it
                    // does not start.
                    let warning = Write::Event {
                        at: self.clock.now(),
                        kind: EventKind::Log {
                            action_id: None,
                            level: "warn".into(),
                            message: format!(
                                "the secret provider is unavailable ({e}); the request will be tried again"
                            ),
                        },
                    };
                    self.commit_run(writes, request, lease, vec![warning])
                        .await?;
                }
                self.clock.sleep(SECRETS_UNAVAILABLE_WAIT).await;
                Ok(None)
            }
        }
    }

    /// The real inputs and rollback states sealed by this request and the requests it retries
    /// (whose completed actions it may reuse and undo). A prior request whose sealed values
    /// cannot be opened contributes nothing: its actions are undone with the journal's input.
    async fn rollback_data(
        &self,
        request: &Request,
        scopes: &Scopes,
        journal: &[AttemptRecord],
    ) -> BTreeMap<(String, String), (Value, Value)> {
        let mut out = BTreeMap::new();
        for (action, data) in &scopes.rollback_data {
            out.insert((request.id.clone(), action.clone()), data.clone());
        }
        let prior: std::collections::BTreeSet<&str> = journal
            .iter()
            .map(|a| a.request_id.as_str())
            .filter(|id| *id != request.id)
            .collect();
        for id in prior {
            if let Ok(opened) = super::scopes::open_sealed(self, id).await {
                for (action, data) in opened.rollback {
                    out.insert((id.to_string(), action), data);
                }
            }
        }
        out
    }

    /// The journal of a run: this request's attempts, and those of the requests it retries.
    async fn journal(
        &self,
        request: &Request,
        fresh: bool,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut journal = if fresh {
            Vec::new()
        } else {
            self.store.attempts(&request.id).await?
        };
        let mut prior = request.retry_of.clone();
        let mut hops = 0;
        while let Some(pid) = prior {
            if hops > 20 {
                break;
            }
            hops += 1;
            let mut older = self.store.attempts(&pid).await?;
            older.append(&mut journal);
            journal = older;
            prior = self.store.get(&pid).await?.and_then(|r| r.retry_of);
        }
        Ok(journal)
    }

    /// Runs the main phase and writes how it ended. Returns the request in
    /// `PostFulfillment` when post-fulfillment actions follow, `None` when the run is over.
    async fn main_phase(
        &self,
        rc: &RunCtx,
        plan: &Plan,
        done: &mut BTreeMap<usize, NodeResult>,
        order: &mut Vec<usize>,
        request: Request,
    ) -> Result<Option<Request>, StoreError> {
        let (writes, lease) = (&rc.writes, &rc.lease);
        match self.run_phase(rc, plan, Phase::Main, done, order).await {
            PhaseEnd::Done => {
                let has_post = plan.nodes.iter().any(|n| n.phase == Phase::Post);
                if !has_post {
                    self.move_run(writes, &request, lease, RequestState::Completed, None)
                        .await?;
                    return Ok(None);
                }
                let next = self
                    .move_run(writes, &request, lease, RequestState::PostFulfillment, None)
                    .await?;
                Ok(Some(next))
            }
            PhaseEnd::Abandoned => Ok(None),
            PhaseEnd::Cancelled => {
                let complete = self.roll_back(rc, plan, done, order, true).await;
                if complete.is_none() {
                    return Ok(None);
                }
                self.move_run(
                    writes,
                    &request,
                    lease,
                    RequestState::Cancelled,
                    Some("cancelled".into()),
                )
                .await?;
                Ok(None)
            }
            PhaseEnd::Failed { error, rollback } => {
                if rollback && self.roll_back(rc, plan, done, order, false).await.is_none() {
                    return Ok(None);
                }
                self.fail(writes, &request, lease, error).await?;
                Ok(None)
            }
        }
    }

    /// Runs the post-fulfillment phase and writes how it ended.
    async fn post_phase(
        &self,
        rc: &RunCtx,
        plan: &Plan,
        done: &mut BTreeMap<usize, NodeResult>,
        order: &mut Vec<usize>,
        request: &Request,
    ) -> Result<(), StoreError> {
        let (writes, lease) = (&rc.writes, &rc.lease);
        match self.run_phase(rc, plan, Phase::Post, done, order).await {
            PhaseEnd::Done => {
                self.move_run(writes, request, lease, RequestState::Completed, None)
                    .await?;
            }
            PhaseEnd::Abandoned => {}
            PhaseEnd::Cancelled => {
                self.move_run(
                    writes,
                    request,
                    lease,
                    RequestState::Cancelled,
                    Some("cancelled".into()),
                )
                .await?;
            }
            PhaseEnd::Failed { error, .. } => {
                let reason = format!("post-fulfillment: {error}");
                self.fail(writes, request, lease, reason).await?;
            }
        }
        Ok(())
    }

    /// A manual request: creates its ticket (or takes it from the journal), then waits for
    /// the ticket to be resolved.
    async fn run_manual(&self, rc: &RunCtx, request: Request) -> Result<(), StoreError> {
        let lease = &rc.lease;
        if request.cancel_requested {
            return self.cancel_manual(rc, request).await;
        }
        if request.waiting_for.is_some() {
            return Ok(());
        }
        let Some(manual) = rc.item.item.fulfillment.manual.as_ref() else {
            self.fail(
                &rc.writes,
                &request,
                lease,
                "manual mode without a ticket definition".into(),
            )
            .await?;
            return Ok(());
        };
        let ctx = rc.context(&Value::Null);
        let ticket = match rc.item.compiled.sections.get("/fulfillment/manual") {
            Some(t) => match t.render(&ctx) {
                Ok(v) => v.get("jira").cloned().unwrap_or(Value::Null),
                Err(e) => {
                    self.fail(
                        &rc.writes,
                        &request,
                        lease,
                        format!(
                            "manual ticket{}: {}",
                            e.pointer,
                            rc.scopes.redact(e.error.message())
                        ),
                    )
                    .await?;
                    return Ok(());
                }
            },
            None => serde_json::to_value(&manual.jira).unwrap_or(Value::Null),
        };
        let spec = ticket_spec(ticket.clone());
        let reused = rc.journal.iter().rev().find_map(|a| match &a.outcome {
            AttemptOutcome::Succeeded { output, .. } if a.action_id == TICKET && !a.rollback => {
                Some(output.clone())
            }
            _ => None,
        });
        let out = match reused {
            Some(o) => Ok((o, None)),
            None => rc
                .attempt_loop(&spec, "jira", &ticket, None)
                .await
                .map(|(out, record)| (out, Some(record))),
        };
        match out {
            Ok((out, record)) => self.ticket_created(rc, out, record).await?,
            Err(e) if e.message == LEASE_LOST => {}
            Err(e) => {
                self.fail(
                    &rc.writes,
                    &request,
                    lease,
                    format!("creating the manual ticket failed: {}", e.message),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Cancels a manual request: its ticket, if one was created, is closed through the `jira`
    /// action's rollback (the instance's cancel transition and a comment), journaled as a
    /// rollback attempt; then the request is cancelled. A ticket that cannot be closed leaves
    /// the rollback `incomplete`, with the error in the log.
    async fn cancel_manual(&self, rc: &RunCtx, request: Request) -> Result<(), StoreError> {
        let lease = &rc.lease;
        let ticket = rc.journal.iter().rev().find_map(|a| {
            (a.action_id == TICKET && !a.rollback)
                .then(|| rc.journaled_success(a))
                .flatten()
        });
        let closed_before = rc.journal.iter().any(|a| {
            a.action_id == TICKET
                && a.rollback
                && matches!(a.outcome, AttemptOutcome::Succeeded { .. })
        });
        let mut status = RollbackStatus::None;
        if let (Some(NodeResult::Succeeded { input, state, .. }), false) = (ticket, closed_before) {
            let spec = ticket_spec(input.clone());
            status = match rc.attempt_loop(&spec, "jira", &input, Some(&state)).await {
                Ok((out, record)) => {
                    rc.writes
                        .push_all(self.rollback_succeeded(record, out, TICKET, "jira"));
                    RollbackStatus::Complete
                }
                Err(e) if e.message == LEASE_LOST => return Ok(()),
                Err(_) => RollbackStatus::Incomplete,
            };
        }
        if status != RollbackStatus::None {
            rc.writes.push(Write::Patch(RequestPatch {
                rollback: Some(status),
                ..RequestPatch::default()
            }));
        }
        self.move_run(
            &rc.writes,
            &request,
            lease,
            RequestState::Cancelled,
            Some("cancelled".into()),
        )
        .await?;
        Ok(())
    }

    /// Writes the end of the ticket's attempt (when it ran now) and the wait for the ticket.
    async fn ticket_created(
        &self,
        rc: &RunCtx,
        out: ActionOutput,
        record: Option<AttemptRecord>,
    ) -> Result<(), StoreError> {
        let key = out
            .result
            .get("key")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| "ticket".to_string());
        let mut writes = Vec::new();
        if let Some(mut record) = record {
            record.outcome = AttemptOutcome::Succeeded {
                output: out.clone(),
                outputs: Value::Null,
            };
            record.finished_at = Some(self.clock.now());
            writes.push(Write::FinishAttempt(record));
        }
        writes.push(Write::Patch(RequestPatch {
            waiting_for: Some(Some(format!("manual:{key}"))),
            ..RequestPatch::default()
        }));
        writes.push(Write::Event {
            at: self.clock.now(),
            kind: EventKind::Log {
                action_id: Some(TICKET.into()),
                level: "info".into(),
                message: format!("waiting for ticket {key} to be resolved"),
            },
        });
        rc.flush_with(writes).await?;
        Ok(())
    }
}

/// The action spec of a manual request's ticket.
fn ticket_spec(config: Value) -> ActionSpec {
    ActionSpec {
        id: TICKET.to_string(),
        action_type: crate::catalog::model::ActionType::Jira,
        config,
        depends_on: None,
        when: None,
        timeout: None,
        retry: None,
        on_failure: None,
        rollback: None,
        outputs: None,
        description: None,
        change: None,
    }
}
