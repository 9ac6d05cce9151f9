//! The nodes of one phase: resumed from the journal, then run as their dependencies allow.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::{Map, Value};
use tokio::task::JoinSet;

use super::{NodeResult, PhaseEnd, RunCtx};
use crate::action::ErrorClass;
use crate::catalog::model::OnFailure;
use crate::engine::Orchestrator;
use crate::engine::plan::{Phase, Plan};
use crate::engine::policy::Retry;
use crate::store::{AttemptOutcome, EventKind};

impl Orchestrator {
    /// Runs the nodes of one phase; `done` and `order` collect results and completion order.
    pub(super) async fn run_phase(
        &self,
        rc: &RunCtx,
        plan: &Plan,
        phase: Phase,
        done: &mut BTreeMap<usize, NodeResult>,
        order: &mut Vec<usize>,
    ) -> PhaseEnd {
        earlier_phases(rc, plan, phase, done);
        let failure = resume(rc, plan, phase, done, order);
        let mut outputs = Map::new();
        for (i, r) in done.iter() {
            if let NodeResult::Succeeded { outputs: o, .. } = r {
                outputs.insert(plan.nodes[*i].spec.id.clone(), o.clone());
            }
        }
        // Nodes of this phase not started yet, in plan order: each pass looks at these only.
        let pending: Vec<usize> = (0..plan.nodes.len())
            .filter(|&i| plan.nodes[i].phase == phase && !done.contains_key(&i))
            .collect();
        let mut run = PhaseRun {
            plan,
            done,
            order,
            outputs: Arc::new(Value::Object(outputs)),
            running: JoinSet::new(),
            in_flight: BTreeSet::new(),
            pending,
            failure,
            abandoned: false,
        };
        run.drive(rc).await;
        run.end(rc)
    }
}

/// Nodes of earlier phases count as finished, with their outputs from the journal.
fn earlier_phases(rc: &RunCtx, plan: &Plan, phase: Phase, done: &mut BTreeMap<usize, NodeResult>) {
    for (i, n) in plan.nodes.iter().enumerate() {
        let earlier = phase == Phase::Post && n.phase == Phase::Main;
        if earlier && !done.contains_key(&i) {
            let r = rc
                .journal
                .iter()
                .rev()
                .filter(|a| a.action_id == n.spec.id && !a.rollback)
                .find_map(|a| rc.journaled_success(a))
                .unwrap_or(NodeResult::Skipped);
            done.insert(i, r);
        }
    }
}

/// Resuming after a crash: what this request already finished in this phase stays finished.
/// Successes are reused in completion order (for rollback), failures for good are not tried
/// again and stop the phase again, so a crash in the middle of a rollback or a cancellation
/// resumes it instead of re-running undone actions. Returns the failure that stops the phase.
fn resume(
    rc: &RunCtx,
    plan: &Plan,
    phase: Phase,
    done: &mut BTreeMap<usize, NodeResult>,
    order: &mut Vec<usize>,
) -> Option<(String, bool)> {
    let mut failure: Option<(String, bool)> = None;
    let mut resumed = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        if n.phase != phase || done.contains_key(&i) {
            continue;
        }
        let last = rc.journal.iter().enumerate().rev().find(|(_, a)| {
            a.request_id == rc.request.id && a.action_id == n.spec.id && !a.rollback
        });
        let Some((pos, a)) = last else { continue };
        let max_attempts = Retry::resolve(n.spec.retry.as_ref(), rc.defaults_retry()).max_attempts;
        let r = match &a.outcome {
            AttemptOutcome::Succeeded { .. } => match rc.journaled_success(a) {
                Some(r) => r,
                None => continue,
            },
            AttemptOutcome::Failed { error }
                if error.class == ErrorClass::Permanent
                    || (error.class == ErrorClass::Retryable && a.attempt >= max_attempts) =>
            {
                NodeResult::Failed(error.clone())
            }
            _ => continue,
        };
        resumed.push((a.finished_at, pos, i, r));
    }
    resumed.sort_by_key(|(at, pos, ..)| (*at, *pos));
    for (_, _, i, r) in resumed {
        let n = &plan.nodes[i];
        match (&r, n.on_failure()) {
            (NodeResult::Succeeded { .. }, _) => order.push(i),
            (NodeResult::Failed(_), OnFailure::Continue) => {}
            (NodeResult::Failed(e), policy) => {
                failure.get_or_insert((
                    format!("action `{}` failed: {}", n.spec.id, e.message),
                    policy == OnFailure::Rollback,
                ));
            }
            _ => {}
        }
        done.insert(i, r);
    }
    failure
}

/// One phase while its nodes run.
struct PhaseRun<'p> {
    plan: &'p Plan,
    done: &'p mut BTreeMap<usize, NodeResult>,
    order: &'p mut Vec<usize>,
    /// The outputs so far, one copy shared by the node tasks (copied on write only while an
    /// older task still reads it).
    outputs: Arc<Value>,
    running: JoinSet<(usize, NodeResult)>,
    in_flight: BTreeSet<usize>,
    /// Nodes of this phase not started yet, in plan order.
    pending: Vec<usize>,
    /// The first failure that stops the phase, and whether it rolls back.
    failure: Option<(String, bool)>,
    abandoned: bool,
}

impl PhaseRun<'_> {
    /// Starts nodes as their dependencies finish, until none runs and none can start.
    async fn drive(&mut self, rc: &RunCtx) {
        // Tasks share one copy of the run context.
        let shared = Arc::new(rc.clone());
        loop {
            let ready = self.ready(rc);
            let (i, result) = if let [i] = ready[..]
                && self.in_flight.len() == 1
            {
                // The only action that can run now runs in this task: its success then
                // waits for the write that follows at once (the next start, or the phase's
                // end), with no task switch between the call's return and that write.
                let call =
                    AssertUnwindSafe(rc.run_node(&self.plan.nodes[i].spec, &self.outputs, true));
                match call.catch_unwind().await {
                    Ok(r) => (i, r),
                    Err(_) => {
                        self.in_flight.remove(&i);
                        self.failure
                            .get_or_insert(("an action panicked".to_string(), true));
                        continue;
                    }
                }
            } else {
                for i in ready {
                    let rc = shared.clone();
                    let spec = self.plan.nodes[i].spec.clone();
                    let snapshot = self.outputs.clone();
                    self.running
                        .spawn(async move { (i, rc.run_node(&spec, &snapshot, false).await) });
                }
                let Some(joined) = self.running.join_next().await else {
                    break;
                };
                let Ok(joined) = joined else {
                    // A panicking action is a failed action, not a crashed worker.
                    self.failure
                        .get_or_insert(("an action panicked".to_string(), true));
                    continue;
                };
                joined
            };
            self.in_flight.remove(&i);
            self.settle(rc, i, &result);
            self.done.insert(i, result);
            // What waits (skips, logs) is not held back while other actions still run.
            if !self.running.is_empty() && !self.abandoned && rc.flush().await.is_err() {
                self.abandoned = true;
            }
        }
    }

    /// Takes the pending nodes whose dependencies finished and whose group has room, and
    /// counts them in flight; none once the phase is stopping.
    fn ready(&mut self, rc: &RunCtx) -> Vec<usize> {
        let mut ready = Vec::new();
        if self.failure.is_some() || rc.cancel.is_cancelled() || self.abandoned {
            return ready;
        }
        let (plan, done, in_flight) = (self.plan, &*self.done, &mut self.in_flight);
        self.pending.retain(|&i| {
            let n = &plan.nodes[i];
            if !n.deps.iter().all(|d| done.contains_key(d)) {
                return true;
            }
            if let Some(g) = n.group
                && let Some(max) = plan.groups[g].max_concurrency
                && in_flight
                    .iter()
                    .filter(|&&j| plan.nodes[j].group == Some(g))
                    .count()
                    >= max as usize
            {
                return true;
            }
            in_flight.insert(i);
            ready.push(i);
            false
        });
        ready
    }

    /// Takes in how node `i` ended: its outputs, or the failure its `on_failure` makes of it.
    fn settle(&mut self, rc: &RunCtx, i: usize, result: &NodeResult) {
        let node = &self.plan.nodes[i];
        match result {
            NodeResult::Succeeded { outputs: o, .. } => {
                if let Value::Object(m) = Arc::make_mut(&mut self.outputs) {
                    m.insert(node.spec.id.clone(), o.clone());
                }
                self.order.push(i);
            }
            NodeResult::Skipped => {}
            NodeResult::Abandoned => self.abandoned = true,
            NodeResult::Failed(e) if e.class == ErrorClass::Cancelled => {}
            NodeResult::Failed(e) => match node.on_failure() {
                OnFailure::Continue => {
                    let why = if node.phase == crate::engine::Phase::Post {
                        "post-fulfillment never fails the request"
                    } else {
                        "on_failure: continue"
                    };
                    rc.emit(EventKind::Log {
                        action_id: Some(node.spec.id.clone()),
                        level: "warn".into(),
                        message: format!("failed, continuing ({why}): {}", e.message),
                    });
                }
                OnFailure::Fail => {
                    self.failure.get_or_insert((
                        format!("action `{}` failed: {}", node.spec.id, e.message),
                        false,
                    ));
                }
                OnFailure::Rollback => {
                    self.failure.get_or_insert((
                        format!("action `{}` failed: {}", node.spec.id, e.message),
                        true,
                    ));
                }
            },
        }
    }

    fn end(self, rc: &RunCtx) -> PhaseEnd {
        if self.abandoned {
            return PhaseEnd::Abandoned;
        }
        if let Some((error, rollback)) = self.failure {
            return PhaseEnd::Failed { error, rollback };
        }
        if rc.cancel.is_cancelled() {
            return PhaseEnd::Cancelled;
        }
        PhaseEnd::Done
    }
}
