//! Undoing the completed actions of a failed or cancelled run.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{LEASE_LOST, NodeResult, RunCtx};
use crate::action::ActionOutput;
use crate::action::ErrorClass;
use crate::catalog::model::OnFailure;
use crate::engine::Orchestrator;
use crate::engine::plan::{Plan, PlanNode};
use crate::store::{AttemptOutcome, AttemptRecord, EventKind, RequestPatch, RollbackStatus, Write};

impl Orchestrator {
    /// Undoes completed actions in reverse completion order. Returns `None` when the lease was
    /// lost, `Some(complete)` otherwise.
    pub(super) async fn roll_back(
        &self,
        rc: &RunCtx,
        plan: &Plan,
        done: &BTreeMap<usize, NodeResult>,
        order: &[usize],
        cancelling: bool,
    ) -> Option<bool> {
        let targets = self.rollback_targets(rc, plan, order, cancelling);
        if targets.is_empty() && rc.request.rollback == RollbackStatus::None {
            return Some(true);
        }
        let started = Write::Patch(RequestPatch {
            rollback: Some(RollbackStatus::InProgress),
            ..RequestPatch::default()
        });
        if rc.flush_with(vec![started]).await.is_err() {
            return None;
        }
        let mut outputs = Map::new();
        for (i, r) in done {
            if let NodeResult::Succeeded { outputs: o, .. } = r {
                outputs.insert(plan.nodes[*i].spec.id.clone(), o.clone());
            }
        }
        let outputs = Value::Object(outputs);
        let mut complete = true;
        for i in targets {
            let n = &plan.nodes[i];
            let Some(NodeResult::Succeeded { input, state, .. }) = done.get(&i) else {
                continue;
            };
            complete &= self.undo(rc, n, input, state, &outputs).await?;
        }
        let status = if complete {
            RollbackStatus::Complete
        } else {
            RollbackStatus::Incomplete
        };
        rc.flush_with(vec![Write::Patch(RequestPatch {
            rollback: Some(status),
            ..RequestPatch::default()
        })])
        .await
        .ok()?;
        Some(complete)
    }

    /// The completed nodes to undo, last completed first: those with a rollback (their own,
    /// or their action type's) not undone yet; on a cancel, only those whose `on_failure`
    /// is `rollback`.
    fn rollback_targets(
        &self,
        rc: &RunCtx,
        plan: &Plan,
        order: &[usize],
        cancelling: bool,
    ) -> Vec<usize> {
        order
            .iter()
            .rev()
            .copied()
            .filter(|&i| !cancelling || plan.nodes[i].on_failure() == OnFailure::Rollback)
            .filter(|&i| {
                let n = &plan.nodes[i];
                n.spec.rollback.is_some()
                    || self
                        .actions
                        .get(&n.spec.action_type.to_string())
                        .is_some_and(|a| a.describe().supports_rollback)
            })
            // Undone before a crash: not twice.
            .filter(|&i| {
                !rc.journal.iter().any(|a| {
                    a.request_id == rc.request.id
                        && a.action_id == plan.nodes[i].spec.id
                        && a.rollback
                        && matches!(a.outcome, AttemptOutcome::Succeeded { .. })
                })
            })
            .collect()
    }

    /// The writes that end a rollback attempt that succeeded: its journal record and its
    /// `ActionSucceeded` event.
    pub(super) fn rollback_succeeded(
        &self,
        mut record: AttemptRecord,
        out: ActionOutput,
        action_id: &str,
        type_name: &str,
    ) -> Vec<Write> {
        let attempt = record.attempt;
        record.outcome = AttemptOutcome::Succeeded {
            output: out,
            outputs: Value::Null,
        };
        record.finished_at = Some(self.clock.now());
        let event = Write::Event {
            at: self.clock.now(),
            kind: EventKind::ActionSucceeded {
                action_id: action_id.to_string(),
                action_type: Some(type_name.to_string()),
                attempt,
                rollback: true,
            },
        };
        vec![Write::FinishAttempt(record), event]
    }

    /// Undoes one completed node, with its own rollback action or its type's. Returns `None`
    /// when the lease was lost, `Some(undone)` otherwise.
    async fn undo(
        &self,
        rc: &RunCtx,
        n: &PlanNode,
        input: &Value,
        state: &Value,
        outputs: &Value,
    ) -> Option<bool> {
        let (type_name, rb_input) = match (
            &n.spec.rollback,
            rc.item
                .compiled
                .actions
                .get(&n.spec.id)
                .and_then(|c| c.rollback.as_ref()),
        ) {
            (Some(spec), Some(t)) => match t.render(&rc.context(outputs)) {
                Ok(v) => (spec.action_type.to_string(), v),
                Err(e) => {
                    rc.emit(EventKind::ActionFailed {
                        action_id: n.spec.id.clone(),
                        action_type: Some(n.spec.rollback.as_ref().map_or_else(
                            || n.spec.action_type.to_string(),
                            |r| r.action_type.to_string(),
                        )),
                        attempt: 0,
                        rollback: true,
                        class: ErrorClass::Permanent,
                        error: format!(
                            "rollback config{}: {}",
                            e.pointer,
                            rc.scopes.redact(e.error.message())
                        ),
                        will_retry: false,
                    });
                    return Some(false);
                }
            },
            _ => (n.spec.action_type.to_string(), input.clone()),
        };
        let result = if n.spec.rollback.is_some() {
            rc.attempt_loop(&n.spec, &type_name, &rb_input, Some(&Value::Null))
                .await
        } else {
            rc.attempt_loop(&n.spec, &type_name, &rb_input, Some(state))
                .await
        };
        match result {
            Ok((out, record)) => rc
                .flush_with(self.rollback_succeeded(record, out, &n.spec.id, &type_name))
                .await
                .ok()
                .map(|_| true),
            Err(e) if e.message == LEASE_LOST => None,
            Err(_) => Some(false),
        }
    }
}
