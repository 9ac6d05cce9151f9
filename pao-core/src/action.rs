//! Actions: the unit of work a fulfillment runs. Built-ins (`pao-actions`) and WASM plugins
//! (`pao-wasm-host`) implement [`Action`] and register in an [`ActionRegistry`]; the catalog
//! loader asks the registry which types exist and the engine asks it to run them.
//!
//! Execution is at-least-once: a worker that crashes after an action's effect but before its
//! result is journaled runs the action again. Every attempt of one action of one request
//! carries the same [`IdempotencyKey`], so an action that passes it to the remote system
//! (an `Idempotency-Key` header, a JIRA label, a Terraform run message) makes the effect
//! happen exactly once.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::redact::Redactor;
use crate::secrets::SecretProvider;

/// What an action type says about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionDescriptor {
    /// The type name used in catalog items (`terraform`, `plugin:slack-notify`).
    pub type_name: String,
    /// JSON Schema of `config`.
    pub config_schema: Value,
    /// JSON Schema of the result.
    pub output_schema: Value,
    /// Whether `rollback` undoes `execute`.
    pub supports_rollback: bool,
    /// A representative result, used by `simulate`.
    pub sample_output: Value,
}

/// The key that is the same for every attempt of one action of one request (and of its
/// rollback, suffixed), so remote systems can deduplicate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    /// The key of `action_id` in `request_id`: stable across attempts, runs and workers.
    pub fn for_action(request_id: &str, action_id: &str) -> IdempotencyKey {
        IdempotencyKey(format!("pao-{request_id}-{action_id}"))
    }

    /// The key of the rollback of that action.
    pub fn for_rollback(request_id: &str, action_id: &str) -> IdempotencyKey {
        IdempotencyKey(format!("pao-{request_id}-{action_id}-rollback"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Connect errors, timeouts, 429, 5xx: try again after a backoff.
    Retryable,
    /// Bad input, 4xx, schema mismatch: trying again will not help.
    Permanent,
    /// The request was cancelled while the action ran.
    Cancelled,
}

/// An action failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    /// Retryable or not.
    pub class: ErrorClass,
    /// What happened, with the remote system's own message where there is one. Never contains
    /// secret values (the engine redacts every form of them before storing it anyway).
    pub message: String,
    /// The remote system asked to wait this long (e.g. `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_ms")]
    pub retry_after: Option<Duration>,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl ActionError {
    /// A failure that may pass on a later attempt.
    pub fn retryable(message: impl Into<String>) -> ActionError {
        ActionError {
            class: ErrorClass::Retryable,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failure that will not pass by trying again.
    pub fn permanent(message: impl Into<String>) -> ActionError {
        ActionError {
            class: ErrorClass::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The action stopped because the request was cancelled.
    pub fn cancelled() -> ActionError {
        ActionError {
            class: ErrorClass::Cancelled,
            message: "cancelled".to_string(),
            retry_after: None,
        }
    }

    /// Asks the engine to wait at least this long before the next attempt.
    pub fn with_retry_after(mut self, after: Duration) -> ActionError {
        self.retry_after = Some(after);
        self
    }

    /// Whether another attempt may help.
    pub fn is_retryable(&self) -> bool {
        self.class == ErrorClass::Retryable
    }
}

/// A log line from an action, already redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The text, with secret values replaced by `[REDACTED]`.
    pub message: String,
}

/// Lines an action's attempt may log; past this the rest are counted in one more line. Each
/// line becomes a durable event.
pub const MAX_LOG_LINES: usize = 1_000;
/// Bytes of one log line; a longer line is cut with a marker that says how much.
pub const MAX_LOG_LINE_BYTES: usize = 8 * 1024;

/// Collects an action's log lines, replacing every form of every secret its [`Redactor`] knows
/// by `[REDACTED]`. It keeps at most [`MAX_LOG_LINES`] lines of at most [`MAX_LOG_LINE_BYTES`]
/// each.
///
/// The engine gives it the run's redactor: a secret an action adds ([`ActionLogger::add_secret`])
/// is redacted from everything the engine stores afterwards, not only from the action's lines.
#[derive(Debug, Clone, Default)]
pub struct ActionLogger {
    redactor: Redactor,
    lines: Arc<Mutex<LogBuffer>>,
}

#[derive(Debug, Default)]
struct LogBuffer {
    lines: Vec<LogLine>,
    /// Lines logged since the last drain, kept or not.
    seen: usize,
    dropped: u64,
}

/// The first `max` bytes of `text` (on a character boundary).
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl ActionLogger {
    /// A logger that redacts with `redactor` (shared: secrets added here are added there).
    pub fn new(redactor: Redactor) -> ActionLogger {
        ActionLogger {
            redactor,
            lines: Arc::default(),
        }
    }

    /// The redactor, shared with the run.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Adds a value to redact (a secret fetched during the action).
    pub fn add_secret(&self, value: &str) {
        self.redactor.add(value);
    }

    /// `text` with every known secret replaced.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact_str(text).into_owned()
    }

    /// `value` with every known secret replaced in its strings and keys.
    pub fn redact_json(&self, value: &Value) -> Value {
        self.redactor.redact_json(value)
    }

    fn push(&self, level: &str, message: &str) {
        {
            let Ok(mut b) = self.lines.lock() else { return };
            b.seen += 1;
            if b.seen > MAX_LOG_LINES {
                b.dropped += 1;
                return;
            }
        }
        // Redact before cutting, so a secret across the cut is still replaced; keep enough
        // past the limit for the longest secret.
        let longest = self.redactor.longest_form();
        let redacted = self.redact(cut(message, MAX_LOG_LINE_BYTES.saturating_add(longest)));
        let message = if message.len() > MAX_LOG_LINE_BYTES {
            let kept = cut(&redacted, MAX_LOG_LINE_BYTES);
            let cut_bytes = message.len() - cut(message, MAX_LOG_LINE_BYTES).len();
            format!("{kept}… [truncated {cut_bytes} bytes]")
        } else {
            redacted
        };
        let line = LogLine {
            level: level.to_string(),
            message,
        };
        if let Ok(mut b) = self.lines.lock() {
            b.lines.push(line);
        }
    }

    /// Logs at info level.
    pub fn info(&self, message: &str) {
        self.push("info", message);
    }

    /// Logs at warn level.
    pub fn warn(&self, message: &str) {
        self.push("warn", message);
    }

    /// Logs at error level.
    pub fn error(&self, message: &str) {
        self.push("error", message);
    }

    /// Takes the lines logged so far, with one more that counts those dropped past
    /// [`MAX_LOG_LINES`], and starts counting afresh.
    pub fn drain(&self) -> Vec<LogLine> {
        let Ok(mut b) = self.lines.lock() else {
            return Vec::new();
        };
        let b = std::mem::take(&mut *b);
        let mut lines = b.lines;
        if b.dropped > 0 {
            lines.push(LogLine {
                level: "warn".into(),
                message: format!(
                    "{} more log lines dropped (an attempt keeps at most {MAX_LOG_LINES})",
                    b.dropped
                ),
            });
        }
        lines
    }
}

/// Everything an action needs to know about the call it is in.
#[derive(Clone)]
pub struct ActionContext {
    /// The request.
    pub request_id: String,
    /// The action within the item.
    pub action_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Same for every attempt of this action in this request.
    pub idempotency_key: IdempotencyKey,
    /// The attempt must finish by then (the engine also enforces it).
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// Cancelled when the request is cancelled or the attempt times out.
    pub cancel: CancellationToken,
    /// Redacting logger.
    pub log: ActionLogger,
    /// Secret access by name.
    pub secrets: Arc<dyn SecretProvider>,
    /// Whether this is a simulation: describe the call, do not make it.
    pub dry_run: bool,
}

impl fmt::Debug for ActionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionContext")
            .field("request_id", &self.request_id)
            .field("action_id", &self.action_id)
            .field("attempt", &self.attempt)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

/// What a successful execution returns.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ActionOutput {
    /// The raw result: the item's `outputs` templates read it as `result`.
    pub result: Value,
    /// What `rollback` needs to undo the effect (ids, versions). Stored with the journal.
    #[serde(default)]
    pub rollback_state: Value,
}

impl ActionOutput {
    /// An output whose result is also its rollback state.
    pub fn new(result: Value) -> ActionOutput {
        ActionOutput {
            rollback_state: result.clone(),
            result,
        }
    }
}

/// One action type.
#[async_trait]
pub trait Action: Send + Sync {
    /// Type name, schemas, rollback support, sample output.
    fn describe(&self) -> ActionDescriptor;

    /// Checks a config beyond its JSON Schema; messages name the JSON pointer.
    fn validate(&self, _config: &Value) -> Result<(), Vec<String>> {
        Ok(())
    }

    /// The system this input talks to, for the circuit breaker (a host name, say). Actions of
    /// one type that talk to different systems should return different targets.
    fn target(&self, _input: &Value) -> String {
        self.describe().type_name
    }

    /// Does the work. Must honour `ctx.cancel` and pass `ctx.idempotency_key` on to the remote
    /// system where it can.
    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError>;

    /// Whether `execute` honours `ctx.dry_run`: describes the call it would make and makes
    /// none. Only such actions are asked during a simulation; the others show their rendered
    /// input alone. Answer `true` only when a dry run has no effect anywhere.
    fn supports_dry_run(&self) -> bool {
        false
    }

    /// Undoes a completed execution, given its input and rollback state.
    async fn rollback(
        &self,
        _ctx: &ActionContext,
        _input: &Value,
        _state: &Value,
    ) -> Result<(), ActionError> {
        Err(ActionError::permanent(format!(
            "action type `{}` cannot roll back",
            self.describe().type_name
        )))
    }
}

/// The action types a deployment can run.
#[derive(Clone, Default)]
pub struct ActionRegistry {
    actions: BTreeMap<String, Arc<dyn Action>>,
}

impl fmt::Debug for ActionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.actions.keys()).finish()
    }
}

impl ActionRegistry {
    /// An empty registry.
    pub fn new() -> ActionRegistry {
        ActionRegistry::default()
    }

    /// Registers an action under its described type name, replacing any earlier one.
    pub fn register(&mut self, action: Arc<dyn Action>) -> &mut ActionRegistry {
        let name = action.describe().type_name;
        self.actions.insert(name, action);
        self
    }

    /// The action of that type.
    pub fn get(&self, type_name: &str) -> Option<&Arc<dyn Action>> {
        self.actions.get(type_name)
    }

    /// Registered type names.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    /// Catalog load options that accept exactly these types and check plugin configs against
    /// their described schemas.
    pub fn load_options(&self) -> crate::catalog::LoadOptions {
        let mut opts = crate::catalog::LoadOptions {
            action_types: self.type_names().map(str::to_string).collect(),
            ..crate::catalog::LoadOptions::default()
        };
        for (name, action) in &self.actions {
            if name.starts_with("plugin:") {
                opts.plugin_config_schemas
                    .insert(name.clone(), action.describe().config_schema);
                let action = action.clone();
                opts.plugin_validators.insert(
                    name.clone(),
                    crate::catalog::ConfigValidator(Arc::new(move |config: &Value| {
                        action.validate(config)
                    })),
                );
            }
        }
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_after_redaction() {
        let log = ActionLogger::new(["s3cr3t-value"].into_iter().collect());
        // A secret across the cut is still replaced, not half shown.
        let text = format!(
            "{}s3cr3t-value{}",
            "a".repeat(MAX_LOG_LINE_BYTES - 4),
            "b".repeat(10)
        );
        log.info(&text);
        let lines = log.drain();
        assert!(!lines[0].message.contains("s3cr"), "{}", lines[0].message);
        assert!(
            lines[0].message.ends_with("[truncated 18 bytes]"),
            "{}",
            lines[0].message
        );
        // Multi-byte text is cut on a character boundary.
        log.info(&"é".repeat(MAX_LOG_LINE_BYTES));
        assert!(log.drain()[0].message.len() <= MAX_LOG_LINE_BYTES + 32);
    }
}
