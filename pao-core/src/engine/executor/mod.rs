//! Running one claimed request: the action DAG with retries, timeouts, breakers, journaling,
//! cancellation and rollback; and simulation, which walks the same plan without calling
//! anything.

mod cost;
mod node;
mod phase;
mod rollback;
mod run;
mod scopes;
mod simulate;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Orchestrator;
use crate::action::{ActionError, ActionOutput};
use crate::catalog::LoadedItem;
use crate::catalog::model::DurationText;
use crate::lifecycle::RequestState;
use crate::redact::Redactor;
use crate::store::{
    AttemptOutcome, AttemptRecord, AuditRecord, EventKind, Lease, Request, RequestPatch,
    StateChange, StoreError, Write,
};
use crate::vars::{Context, Scope};

pub(crate) use cost::cost_scope;
pub(crate) use run::TICKET;
pub(crate) use scopes::Scopes;
pub use simulate::{SimulatedAction, Simulation};

/// How one node ended.
#[derive(Debug, Clone)]
enum NodeResult {
    Succeeded {
        outputs: Value,
        input: Value,
        state: Value,
    },
    Skipped,
    Failed(ActionError),
    /// The lease was lost: another worker owns the request now.
    Abandoned,
}

/// The writes of one run that wait for its next durable write.
///
/// A run writes when it must: an attempt's start before the action is called (the journal
/// entry an idempotent resume relies on), a failure at once, and the end of the request.
/// What may wait — the move to `InProgress`, an action's log lines, the success of an action
/// the phase loop ran alone in its own task (the next start or the final transition follows
/// with no task switch in between) — rides along with that write in the same transaction, so a one-action request costs three
/// durable writes (claim, start, finish + end) instead of eight. In a worker loop the claim of
/// the next request rides along with the end ([`Store::apply_then_claim`]): two round trips a
/// request on a busy PostgreSQL store.
#[derive(Default)]
pub(crate) struct RunWrites {
    pending: std::sync::Mutex<Vec<Write>>,
    /// A terminal transition was written (the lease went with it).
    ended: std::sync::atomic::AtomicBool,
    /// The worker loop's id: the run's final write claims its next request.
    worker_id: String,
    /// The request claimed with the final write, for the worker loop to run next.
    claimed: std::sync::Mutex<Option<(Request, Lease)>>,
    /// The run's redactor, once its scopes are built: every write is redacted with it.
    redactor: std::sync::OnceLock<Redactor>,
}

impl RunWrites {
    fn push(&self, w: Write) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(w);
        }
    }

    fn push_all(&self, ws: impl IntoIterator<Item = Write>) {
        if let Ok(mut p) = self.pending.lock() {
            p.extend(ws);
        }
    }

    fn take(&self) -> Vec<Write> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    /// Redacts `writes` with the run's redactor (which holds, by then, the secrets its actions
    /// fetched too).
    fn redact(&self, writes: &mut [Write]) {
        if let Some(r) = self.redactor.get().filter(|r| !r.is_empty()) {
            writes.iter_mut().for_each(|w| redact_write(w, r));
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.lock().map(|p| p.is_empty()).unwrap_or(true)
    }
}

/// Redacts the text a write stores: reasons, errors, log lines, an attempt's input, error and
/// output (result, rendered outputs, rollback state). The run keeps the real values in memory.
/// Every field is named, so that a new one is a decision, not a leak.
fn redact_write(w: &mut Write, r: &Redactor) {
    let text = |s: &mut String| {
        if let Cow::Owned(x) = r.redact_str(s) {
            *s = x;
        }
    };
    match w {
        Write::Transition {
            from: _,
            to: _,
            change:
                StateChange {
                    actor: _,
                    reason,
                    at: _,
                },
        } => reason.iter_mut().for_each(text),
        Write::Patch(RequestPatch {
            rollback: _,
            error,
            approval_due: _,
            escalated: _,
            cancel_requested: _,
            waiting_for,
        }) => {
            error.iter_mut().for_each(text);
            waiting_for.iter_mut().flatten().for_each(text);
        }
        Write::Event { at: _, kind } => match kind {
            EventKind::StateChanged { reason, .. } => reason.iter_mut().for_each(text),
            EventKind::ActionFailed { error, .. } => text(error),
            EventKind::ActionSkipped { reason, .. } => text(reason),
            EventKind::Log { message, .. } => text(message),
            EventKind::ApprovalDecided { reason, .. } => reason.iter_mut().for_each(text),
            EventKind::ActionStarted { .. }
            | EventKind::ActionSucceeded { .. }
            | EventKind::Escalated { .. }
            | EventKind::BudgetThreshold { .. }
            | EventKind::SlaBreached { .. }
            | EventKind::HealthChanged { .. } => {}
        },
        Write::StartAttempt(a) | Write::FinishAttempt(a) => {
            let AttemptRecord {
                request_id: _,
                action_id: _,
                rollback: _,
                attempt: _,
                idempotency_key: _,
                input_hash: _,
                input,
                started_at: _,
                finished_at: _,
                outcome,
            } = a;
            r.redact_json_in_place(input);
            match outcome {
                AttemptOutcome::Succeeded {
                    output:
                        ActionOutput {
                            result,
                            rollback_state,
                        },
                    outputs,
                } => {
                    r.redact_json_in_place(result);
                    r.redact_json_in_place(rollback_state);
                    r.redact_json_in_place(outputs);
                }
                AttemptOutcome::Failed {
                    error:
                        ActionError {
                            class: _,
                            message,
                            retry_after: _,
                        },
                } => text(message),
                AttemptOutcome::Running | AttemptOutcome::Skipped => {}
            }
        }
        Write::Audit(AuditRecord {
            at: _,
            actor: _,
            action: _,
            target: _,
            detail,
        }) => r.redact_json_in_place(detail),
        // Ciphertext: what it seals must stay real (a rollback replays it).
        Write::Seal { key: _, values: _ } => {}
        // The catalog's own text, not the request's values.
        Write::KeepItemDefinition { .. } => {}
        Write::ReserveQuota { .. } | Write::ReleaseQuota => {}
    }
}

/// A transition write by `actor`.
pub(crate) fn state_change(
    from: RequestState,
    to: RequestState,
    actor: &str,
    reason: Option<String>,
    at: chrono::DateTime<chrono::Utc>,
) -> Write {
    Write::Transition {
        from,
        to,
        change: StateChange {
            actor: actor.to_string(),
            reason,
            at,
        },
    }
}

/// Shared, cheap-to-clone data for node tasks.
#[derive(Clone)]
struct RunCtx {
    engine: Arc<Orchestrator>,
    item: Arc<LoadedItem>,
    request: Request,
    lease: Lease,
    scopes: Arc<Scopes>,
    cancel: CancellationToken,
    journal: Arc<Vec<AttemptRecord>>,
    writes: Arc<RunWrites>,
    /// The request's data key: the one it was submitted with, or one made when the run
    /// first seals something.
    data_key: Arc<std::sync::OnceLock<crate::sealing::DataKey>>,
    /// The real input and rollback state of completed actions, sealed by this request and
    /// the requests it retries, by (request id, action id).
    rollback_data: Arc<std::collections::BTreeMap<(String, String), (Value, Value)>>,
    /// The item's `fulfillment.defaults` over `catalog.yaml`'s `defaults.execution`.
    defaults: Arc<crate::catalog::model::ExecutionDefaults>,
}

impl RunCtx {
    /// A completed action of the journal as the run knows it: its outputs, and its real input
    /// and rollback state (sealed; the journal keeps them redacted).
    fn journaled_success(&self, a: &AttemptRecord) -> Option<NodeResult> {
        let crate::store::AttemptOutcome::Succeeded { output, outputs } = &a.outcome else {
            return None;
        };
        let (input, state) = self
            .rollback_data
            .get(&(a.request_id.clone(), a.action_id.clone()))
            .cloned()
            .unwrap_or_else(|| (a.input.clone(), output.rollback_state.clone()));
        Some(NodeResult::Succeeded {
            outputs: outputs.clone(),
            input,
            state,
        })
    }

    /// A write that seals a completed action's real input and rollback state, when the
    /// journal keeps them redacted (so a rollback after a resume or in a retry replays the
    /// real values).
    fn seal_rollback_data(
        &self,
        action_id: &str,
        input: &Value,
        stored_input: &Value,
        state: &Value,
    ) -> Option<Write> {
        let stored_state = self.scopes.redact_json(state);
        if *input == *stored_input && *state == stored_state {
            return None;
        }
        let key = self
            .data_key
            .get_or_init(|| self.engine.keyring.new_data_key(&self.request.id));
        let name = scopes::rollback_name(action_id);
        let plain = serde_json::to_vec(&serde_json::json!({ "input": input, "state": state }))
            .unwrap_or_default();
        Some(Write::Seal {
            key: key.wrapped().clone(),
            values: vec![(name.clone(), key.seal(&name, &plain))],
        })
    }

    fn context<'a>(&'a self, outputs: &'a Value) -> Context<'a> {
        self.scopes.context().with(Scope::Outputs, outputs)
    }

    /// Appends an event with the run's next write.
    fn emit(&self, kind: EventKind) {
        self.writes.push(Write::Event {
            at: self.engine.clock.now(),
            kind,
        });
    }

    /// Writes what waits, with `extra`, now.
    async fn flush_with(&self, extra: Vec<Write>) -> Result<Request, StoreError> {
        self.engine
            .commit_run(&self.writes, &self.request, &self.lease, extra)
            .await
    }

    /// Writes what waits, if anything does.
    async fn flush(&self) -> Result<(), StoreError> {
        if !self.writes.is_empty() {
            self.flush_with(Vec::new()).await?;
        }
        Ok(())
    }

    fn defaults_retry(&self) -> Option<&crate::catalog::model::RetryPolicy> {
        self.defaults.retry.as_ref()
    }

    fn timeout(&self, spec_timeout: Option<&DurationText>) -> Duration {
        spec_timeout
            .or(self.defaults.timeout.as_ref())
            .and_then(DurationText::get)
            .unwrap_or(self.engine.config.default_timeout)
    }
}

const LEASE_LOST: &str = "lease lost";

fn lease_lost() -> ActionError {
    ActionError::permanent(LEASE_LOST)
}

/// How a phase ended.
enum PhaseEnd {
    Done,
    Failed { error: String, rollback: bool },
    Cancelled,
    Abandoned,
}
