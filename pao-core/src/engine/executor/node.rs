//! One plan node of a run: its `when`, journal reuse, rendering, and attempts with retries.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::{LEASE_LOST, NodeResult, RunCtx, lease_lost};
use crate::action::{
    Action, ActionContext, ActionError, ActionLogger, ActionOutput, ErrorClass, IdempotencyKey,
};
use crate::catalog::model::ActionSpec;
use crate::engine::policy::{Retry, Verdict};
use crate::store::{AttemptOutcome, AttemptRecord, EventKind, Write};
use crate::vars::{Context, Engine, LocatedVarError, Scope, ValueTemplate};

/// What every attempt of one action (or of its rollback) shares.
struct Attempts<'a> {
    spec: &'a ActionSpec,
    type_name: &'a str,
    input: &'a Value,
    /// The rollback state when this undoes the action.
    rollback: Option<&'a Value>,
    action: Arc<dyn Action>,
    key: IdempotencyKey,
    retry: Retry,
    timeout: Duration,
    /// The breaker's key.
    target: String,
    input_hash: String,
    /// The input as journaled: secrets redacted.
    stored_input: Value,
}

impl Attempts<'_> {
    fn is_rollback(&self) -> bool {
        self.rollback.is_some()
    }
}

/// One attempt's call and the journal record of its start (none when the breaker refused it).
type Attempted = (Result<ActionOutput, ActionError>, Option<AttemptRecord>);

impl RunCtx {
    /// Runs one action (or its rollback) with retries. Returns the output on success, with
    /// the journal record of the attempt that produced it (still `Running`: the caller
    /// writes its end).
    pub(super) async fn attempt_loop(
        &self,
        spec: &ActionSpec,
        type_name: &str,
        input: &Value,
        rollback: Option<&Value>,
    ) -> Result<(ActionOutput, AttemptRecord), ActionError> {
        let a = self.attempts(spec, type_name, input, rollback)?;
        let mut attempt = self.next_attempt(&spec.id, a.is_rollback());
        loop {
            if self.cancel.is_cancelled() && !a.is_rollback() {
                return Err(ActionError::cancelled());
            }
            let (result, started) = self.attempt_once(&a, attempt).await?;
            let now = self.engine.clock.now();
            let e = match (result, started) {
                (Ok(out), Some(record)) => return Ok((out, record)),
                (Ok(_), None) => return Err(lease_lost()),
                (Err(e), started) => self.record_failure(&a, attempt, e, started, now).await?,
            };
            let delay = a.retry.delay(attempt, a.key.as_str(), e.retry_after);
            if a.is_rollback() {
                self.engine.clock.sleep(delay).await;
            } else {
                tokio::select! {
                    _ = self.engine.clock.sleep(delay) => {}
                    _ = self.cancel.cancelled() => return Err(ActionError::cancelled()),
                }
            }
            attempt += 1;
        }
    }

    /// Resolves what the attempts of an action share; fails when its type is not registered.
    fn attempts<'a>(
        &self,
        spec: &'a ActionSpec,
        type_name: &'a str,
        input: &'a Value,
        rollback: Option<&'a Value>,
    ) -> Result<Attempts<'a>, ActionError> {
        let Some(action) = self.engine.actions.get(type_name).cloned() else {
            return Err(ActionError::permanent(format!(
                "no action of type `{type_name}` is registered"
            )));
        };
        let key = if rollback.is_some() {
            IdempotencyKey::for_rollback(&self.request.id, &spec.id)
        } else {
            IdempotencyKey::for_action(&self.request.id, &spec.id)
        };
        let target = action.target(input);
        let input_hash = hex::encode(sha2::Sha256::digest(
            serde_json::to_vec(input).unwrap_or_default(),
        ));
        Ok(Attempts {
            spec,
            type_name,
            input,
            rollback,
            key,
            retry: Retry::resolve(spec.retry.as_ref(), self.defaults_retry()),
            timeout: self.timeout(spec.timeout.as_ref()),
            target,
            input_hash,
            stored_input: self.scopes.redactor.redact_json(input),
            action,
        })
    }

    /// The number of the next attempt of an action: one after the last in this request's
    /// journal.
    fn next_attempt(&self, action_id: &str, is_rollback: bool) -> u32 {
        self.journal
            .iter()
            .filter(|a| {
                a.action_id == action_id
                    && a.rollback == is_rollback
                    && a.request_id == self.request.id
            })
            .map(|a| a.attempt)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// One attempt: the breaker, the durable journal entry of its start, the call. `Err`: the
    /// lease was lost, and the attempts end at once.
    async fn attempt_once(&self, a: &Attempts<'_>, attempt: u32) -> Result<Attempted, ActionError> {
        let engine = &self.engine;
        let now = engine.clock.now();
        // Held until the call's outcome is recorded: a permit dropped without one (the
        // journal write failed, the run stopped) gives a half-open breaker's trial back.
        let permit = match engine.breakers.try_acquire(&a.target, now) {
            Ok(p) => p,
            Err(wait) => {
                let target = &a.target;
                let refused =
                    ActionError::retryable(format!("circuit breaker for `{target}` is open"))
                        .with_retry_after(wait);
                return Ok((Err(refused), None));
            }
        };
        let record = AttemptRecord {
            request_id: self.request.id.clone(),
            action_id: a.spec.id.clone(),
            rollback: a.is_rollback(),
            attempt,
            idempotency_key: a.key.clone(),
            input_hash: a.input_hash.clone(),
            input: a.stored_input.clone(),
            started_at: now,
            finished_at: None,
            outcome: AttemptOutcome::Running,
        };
        // The journal entry is durable before the action is called, with what waited for it.
        let started = Write::StartAttempt(record.clone());
        let event = Write::Event {
            at: now,
            kind: EventKind::ActionStarted {
                action_id: a.spec.id.clone(),
                action_type: Some(a.type_name.to_string()),
                attempt,
                rollback: a.is_rollback(),
            },
        };
        if self.flush_with(vec![started, event]).await.is_err() {
            return Err(lease_lost());
        }
        let result = self.call(a, attempt, now).await;
        permit.record(verdict(&result), engine.clock.now());
        Ok((result, Some(record)))
    }

    /// Calls the action (or its rollback) once, under its timeout and the concurrency limits,
    /// and keeps its log lines.
    async fn call(
        &self,
        a: &Attempts<'_>,
        attempt: u32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ActionOutput, ActionError> {
        let engine = &self.engine;
        let timeout = a.timeout;
        let child = if a.is_rollback() {
            CancellationToken::new()
        } else {
            self.cancel.child_token()
        };
        let ctx = ActionContext {
            request_id: self.request.id.clone(),
            action_id: a.spec.id.clone(),
            attempt,
            idempotency_key: a.key.clone(),
            deadline: Some(now + chrono::Duration::from_std(timeout).unwrap_or_default()),
            cancel: child.clone(),
            log: ActionLogger::new(self.scopes.redactor.clone()),
            secrets: engine.secrets.clone(),
            dry_run: false,
        };
        let _slot = engine.global_slots.clone().acquire_owned().await.ok();
        let _item_slot = match engine.item_semaphore(&self.item.item.metadata.id) {
            Some(s) => s.acquire_owned().await.ok(),
            None => None,
        };
        let call = async {
            match a.rollback {
                Some(state) if a.spec.rollback.is_none() => a
                    .action
                    .rollback(&ctx, a.input, state)
                    .await
                    .map(|_| ActionOutput::default()),
                _ => a.action.execute(&ctx, a.input).await,
            }
        };
        let r = tokio::select! {
            r = call => r,
            _ = engine.clock.sleep(timeout) => {
                child.cancel();
                Err(ActionError::retryable(format!("timed out after {}s", timeout.as_secs_f64())))
            }
            _ = child.cancelled() => Err(ActionError::cancelled()),
        };
        for line in ctx.log.drain() {
            self.emit(EventKind::Log {
                action_id: Some(a.spec.id.clone()),
                level: line.level,
                message: line.message,
            });
        }
        r
    }

    /// Writes a failed attempt at once (with what waited), so watchers see it during the
    /// backoff. Returns the error when the action is tried again; `Err` ends the attempts
    /// with it (or with a lost lease).
    async fn record_failure(
        &self,
        a: &Attempts<'_>,
        attempt: u32,
        mut e: ActionError,
        started: Option<AttemptRecord>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ActionError, ActionError> {
        e.message = self.scopes.redact(&e.message);
        let will_retry = e.is_retryable() && attempt < a.retry.max_attempts;
        let mut writes = Vec::new();
        if let Some(mut record) = started {
            record.outcome = AttemptOutcome::Failed { error: e.clone() };
            record.finished_at = Some(now);
            writes.push(Write::FinishAttempt(record));
        }
        writes.push(Write::Event {
            at: now,
            kind: EventKind::ActionFailed {
                action_id: a.spec.id.clone(),
                action_type: Some(a.type_name.to_string()),
                attempt,
                rollback: a.is_rollback(),
                class: e.class,
                error: e.message.clone(),
                will_retry,
            },
        });
        if self.flush_with(writes).await.is_err() {
            return Err(lease_lost());
        }
        if !will_retry {
            return Err(e);
        }
        Ok(e)
    }

    /// Runs one plan node: `when`, journal reuse, render, attempts, outputs. `inline`: the
    /// phase loop awaits this node alone, so its success may wait for the run's next write; a
    /// node running beside others writes it at once.
    pub(super) async fn run_node(
        &self,
        spec: &ActionSpec,
        outputs: &Value,
        inline: bool,
    ) -> NodeResult {
        let compiled = self.item.compiled.actions.get(&spec.id);
        let ctx = self.context(outputs);
        if let Some(when) = compiled.and_then(|c| c.when.as_ref()) {
            match when.eval_bool(&ctx) {
                Ok(false) => {
                    self.emit(EventKind::ActionSkipped {
                        action_id: spec.id.clone(),
                        reason: format!("when `{}` is false", when.source()),
                    });
                    return NodeResult::Skipped;
                }
                Ok(true) => {}
                Err(e) => {
                    return NodeResult::Failed(ActionError::permanent(format!(
                        "when: {}",
                        self.scopes.redact(e.message())
                    )));
                }
            }
        }
        if let Some(done) = self.reused(&spec.id) {
            return done;
        }
        let input = match compiled.map(|c| render_config(&c.config, &spec.config, &ctx)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                return NodeResult::Failed(ActionError::permanent(format!(
                    "config{}: {}",
                    e.pointer,
                    self.scopes.redact(e.error.message())
                )));
            }
            None => spec.config.clone(),
        };
        let type_name = spec.action_type.to_string();
        match self.attempt_loop(spec, &type_name, &input, None).await {
            Ok((out, record)) => {
                let finished = Finished {
                    spec,
                    type_name: &type_name,
                    ctx: &ctx,
                    inline,
                };
                self.finish_node(finished, out, record, input).await
            }
            Err(e) if e.message == LEASE_LOST => NodeResult::Abandoned,
            Err(e) => NodeResult::Failed(e),
        }
    }

    /// A succeeded attempt in the journal (this request's, or the failed request it retries)
    /// that was not undone is reused: the action does not run again.
    fn reused(&self, action_id: &str) -> Option<NodeResult> {
        let done = self.journal.iter().rev().find(|a| {
            a.action_id == action_id
                && !a.rollback
                && matches!(a.outcome, AttemptOutcome::Succeeded { .. })
        })?;
        let rolled_back = self.journal.iter().any(|a| {
            a.request_id == done.request_id
                && a.action_id == action_id
                && a.rollback
                && matches!(a.outcome, AttemptOutcome::Succeeded { .. })
        });
        if rolled_back {
            return None;
        }
        self.journaled_success(done)
    }

    /// Renders a succeeded node's outputs and writes the end of its attempt (with what
    /// waits, or at once when it ran beside others).
    async fn finish_node(
        &self,
        node: Finished<'_>,
        out: ActionOutput,
        mut record: AttemptRecord,
        input: Value,
    ) -> NodeResult {
        let spec = node.spec;
        let attempt = record.attempt;
        let mut rendered = Map::new();
        if let Some(c) = self.item.compiled.actions.get(&spec.id) {
            let oc = node.ctx.with(Scope::Result, &out.result);
            for (k, t) in &c.outputs {
                match t.render_value(&oc) {
                    Ok(v) => {
                        rendered.insert(k.clone(), v);
                    }
                    Err(e) => {
                        let err = ActionError::permanent(format!(
                            "outputs.{k}: {}",
                            self.scopes.redact(e.message())
                        ));
                        record.outcome = AttemptOutcome::Failed { error: err.clone() };
                        record.finished_at = Some(self.engine.clock.now());
                        if self
                            .flush_with(vec![Write::FinishAttempt(record)])
                            .await
                            .is_err()
                        {
                            return NodeResult::Abandoned;
                        }
                        return NodeResult::Failed(err);
                    }
                }
            }
        }
        let outputs = Value::Object(rendered);
        // Stored redacted with the rest of the run's writes; the run goes on with the real
        // values.
        record.outcome = AttemptOutcome::Succeeded {
            output: out.clone(),
            outputs: outputs.clone(),
        };
        let now = self.engine.clock.now();
        record.finished_at = Some(now);
        let sealed = self.seal_rollback_data(&spec.id, &input, &record.input, &out.rollback_state);
        let mut finished = vec![
            Write::FinishAttempt(record),
            Write::Event {
                at: now,
                kind: EventKind::ActionSucceeded {
                    action_id: spec.id.clone(),
                    action_type: Some(node.type_name.to_string()),
                    attempt,
                    rollback: false,
                },
            },
        ];
        finished.extend(sealed);
        if node.inline {
            self.writes.push_all(finished);
        } else if self.flush_with(finished).await.is_err() {
            return NodeResult::Abandoned;
        }
        NodeResult::Succeeded {
            outputs,
            input,
            state: out.rollback_state,
        }
    }
}

/// A node whose action succeeded, for [`RunCtx::finish_node`].
struct Finished<'a> {
    spec: &'a ActionSpec,
    type_name: &'a str,
    ctx: &'a Context<'a>,
    inline: bool,
}

/// Renders an action's config. A `poll` block (REST actions polling an asynchronous API) may
/// read `result`, which exists only once the first call was made: it is passed on unrendered,
/// with the values of the non-secret scopes it reads under `poll.scopes`, and the action
/// renders it after each response.
pub(super) fn render_config(
    template: &ValueTemplate,
    raw: &Value,
    ctx: &Context<'_>,
) -> Result<Value, LocatedVarError> {
    let (ValueTemplate::Object(entries), Some(Value::Object(poll))) = (template, raw.get("poll"))
    else {
        return template.render(ctx);
    };
    let mut out = Map::new();
    for (k, t) in entries.iter().filter(|(k, _)| k != "poll") {
        let v = t.render(ctx).map_err(|mut e| {
            e.pointer = format!("/{k}{}", e.pointer);
            e
        })?;
        out.insert(k.clone(), v);
    }
    let engine = Engine::new();
    let mut read = BTreeSet::new();
    for (k, v) in poll {
        let refs = match (k.as_str(), v) {
            ("until", Value::String(src)) => engine
                .compile_expression(src)
                .map(|e| e.references())
                .unwrap_or_default(),
            (_, Value::String(src)) => engine
                .compile(src)
                .map(|t| t.references())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        read.extend(refs.into_iter().map(|r| r.scope));
    }
    let mut scopes = Map::new();
    for scope in read {
        if !matches!(scope, Scope::Secrets | Scope::Result) {
            scopes.insert(scope.name().to_string(), ctx.get(scope).clone());
        }
    }
    let mut poll = poll.clone();
    poll.insert("scopes".into(), Value::Object(scopes));
    out.insert("poll".into(), Value::Object(poll));
    Ok(Value::Object(out))
}

/// What a call's result says about its target's health, for its circuit breaker: only
/// failures that may pass later count against it; a refusal of the call's own input (a
/// permanent error) or a cancelled call says nothing.
fn verdict(result: &Result<ActionOutput, ActionError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Healthy,
        Err(e) if e.class == ErrorClass::Retryable => Verdict::Failing,
        Err(_) => Verdict::Unknown,
    }
}
