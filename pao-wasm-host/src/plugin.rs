//! One loaded plugin as a `pao-core` [`Action`]: a pre-linked component (`InstancePre`)
//! and a fresh `Store` per call, bounded by memory, time and (optionally) fuel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wasmtime::{Store, UpdateDeadline};

use crate::bindings::exports::pao::action::action::{
    ActionError as WitError, Context as WitContext, Guest,
};
use crate::bindings::{Plugin as Bindings, PluginPre};
use crate::error::{PluginError, PluginErrorKind};
use crate::state::{CallScope, CallState, PluginShared};

/// A loaded plugin: `plugin:<name>` in the [`pao_core::action::ActionRegistry`].
pub struct WasmAction {
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) pre: PluginPre<CallState>,
    pub(crate) descriptor: ActionDescriptor,
    pub(crate) version: String,
    pub(crate) path: PathBuf,
    pub(crate) fuel_enabled: bool,
}

impl std::fmt::Debug for WasmAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmAction")
            .field("name", &self.shared.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WasmAction {
    /// The plugin's name (without the `plugin:` prefix).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The plugin's own version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The `.wasm` it was loaded from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Hosts, secrets and limits this plugin actually has (its requests within its grant).
    pub fn effective(&self) -> &crate::config::Effective {
        &self.shared.effective
    }

    fn error(&self, kind: PluginErrorKind) -> PluginError {
        PluginError {
            plugin: self.shared.name.clone(),
            kind,
        }
    }

    fn store(
        &self,
        scope: Option<CallScope>,
        timeout: Duration,
    ) -> Result<Store<CallState>, PluginError> {
        let limits = &self.shared.effective.limits;
        let mut store = Store::new(
            self.pre.engine(),
            CallState::new(self.shared.clone(), scope),
        );
        store.limiter(|s| &mut s.limiter);
        if self.fuel_enabled {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| self.error(PluginErrorKind::Trap(format!("{e:#}"))))?;
        }
        // At every epoch tick, guest code either yields to the executor (so cancellation and
        // the outer timeout are observed even in a tight loop) or, past its deadline, traps.
        let deadline = Instant::now() + timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        Ok(store)
    }

    /// Runs `f` on a fresh instance in a fresh store, bounded by the plugin's limits, the
    /// call's deadline and its cancellation.
    pub(crate) async fn call<R>(
        &self,
        scope: Option<CallScope>,
        cancel: Option<&CancellationToken>,
        f: impl AsyncFnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let limits = self.shared.effective.limits.clone();
        let mut timeout = limits.timeout;
        if let Some(deadline) = scope.as_ref().and_then(|s| s.deadline) {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        let mut store = self.store(scope, timeout)?;
        let run = async {
            let instance: Bindings = self.pre.instantiate_async(&mut store).await?;
            f(instance.pao_action_action(), &mut store).await
        };
        // Epoch interruption stops guest code; this outer timeout also stops a call that is
        // waiting in a host import.
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, run) => r,
            _ = cancel.cancelled() => return Err(self.error(PluginErrorKind::Cancelled)),
        };
        match outcome {
            Err(_elapsed) => Err(self.error(PluginErrorKind::Timeout(timeout))),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(self.classify(e, store.data(), &limits, timeout)),
        }
    }

    fn classify(
        &self,
        e: wasmtime::Error,
        state: &CallState,
        limits: &crate::config::Limits,
        timeout: Duration,
    ) -> PluginError {
        if state.limiter.hit {
            return self.error(PluginErrorKind::MemoryLimit(limits.memory_bytes));
        }
        let kind = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => PluginErrorKind::Timeout(timeout),
            Some(wasmtime::Trap::OutOfFuel) => {
                PluginErrorKind::OutOfFuel(limits.fuel.unwrap_or(u64::MAX))
            }
            Some(wasmtime::Trap::UnreachableCodeReached) => {
                let stderr = state.stderr_text();
                PluginErrorKind::Panic(if stderr.is_empty() {
                    "unreachable code reached (a Rust panic or abort)".to_string()
                } else {
                    stderr
                })
            }
            Some(t) => PluginErrorKind::Trap(t.to_string()),
            None => PluginErrorKind::Trap(format!("{e:#}")),
        };
        self.error(kind)
    }

    fn wit_context(&self, ctx: &ActionContext) -> WitContext {
        WitContext {
            request_id: ctx.request_id.clone(),
            action_id: ctx.action_id.clone(),
            attempt: ctx.attempt,
            idempotency_key: ctx.idempotency_key.to_string(),
            deadline_unix_ms: ctx
                .deadline
                .and_then(|d| u64::try_from(d.timestamp_millis()).ok()),
            dry_run: ctx.dry_run,
            settings: self
                .shared
                .effective
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn scope(ctx: &ActionContext) -> CallScope {
        let deadline = ctx.deadline.map(|d| {
            let left = (d - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
            Instant::now() + left
        });
        CallScope {
            log: ctx.log.clone(),
            secrets: ctx.secrets.clone(),
            deadline,
        }
    }

    fn plugin_error(&self, e: WitError) -> PluginError {
        self.error(match e {
            WitError::InvalidInput(v) => PluginErrorKind::InvalidInput(
                v.into_iter().map(|v| (v.pointer, v.message)).collect(),
            ),
            WitError::Denied(m) => PluginErrorKind::Denied(m),
            WitError::Retryable(r) => PluginErrorKind::Retryable {
                message: r.message,
                retry_after: r.retry_after_ms.map(Duration::from_millis),
            },
            WitError::Failed(m) => PluginErrorKind::Failed(m),
            WitError::Cancelled => PluginErrorKind::Cancelled,
        })
    }

    /// `execute`, with the typed error. [`Action::execute`] converts it to an `ActionError`.
    ///
    /// The error, the result and the rollback state are redacted with the context's redactor,
    /// which holds the run's secrets and those the plugin read: what a plugin returns never
    /// carries a secret to the journal, the events or a later action.
    pub async fn run(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, PluginError> {
        let redactor = ctx.log.redactor();
        match self.run_unredacted(ctx, input).await {
            Ok(out) => Ok(ActionOutput {
                result: redactor.redact_json(&out.result),
                rollback_state: redactor.redact_json(&out.rollback_state),
            }),
            Err(e) => Err(e.redacted(redactor)),
        }
    }

    async fn run_unredacted(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, PluginError> {
        let wctx = self.wit_context(ctx);
        let input = input.to_string();
        let out = self
            .call(Some(Self::scope(ctx)), Some(&ctx.cancel), async |g, s| {
                g.call_execute(s, &wctx, &input).await
            })
            .await?
            .map_err(|e| self.plugin_error(e))?;
        let parse = |what: &str, text: &str| {
            serde_json::from_str::<Value>(text).map_err(|e| {
                self.error(PluginErrorKind::BadOutput(format!(
                    "{what} is not JSON: {e}"
                )))
            })
        };
        let result = parse("result", &out.value)?;
        let rollback_state = match out.rollback_state {
            Some(s) => parse("rollback state", &s)?,
            None => result.clone(),
        };
        Ok(ActionOutput {
            result,
            rollback_state,
        })
    }

    /// `rollback`, with the typed error, redacted as [`WasmAction::run`]'s.
    pub async fn run_rollback(
        &self,
        ctx: &ActionContext,
        input: &Value,
        state: &Value,
    ) -> Result<(), PluginError> {
        let wctx = self.wit_context(ctx);
        let input = input.to_string();
        let state = state.to_string();
        self.call(Some(Self::scope(ctx)), Some(&ctx.cancel), async |g, s| {
            g.call_rollback(s, &wctx, &input, &state).await
        })
        .await
        .and_then(|r| r.map_err(|e| self.plugin_error(e)))
        .map_err(|e| e.redacted(ctx.log.redactor()))
    }

    /// `validate`, with the typed error: the plugin's own checks beyond the JSON Schema.
    pub async fn check(&self, input: &Value) -> Result<Vec<(String, String)>, PluginError> {
        let input = input.to_string();
        let r = self
            .call(None, None, async |g, s| g.call_validate(s, &input).await)
            .await?;
        Ok(match r {
            Ok(()) => Vec::new(),
            Err(v) => v.into_iter().map(|v| (v.pointer, v.message)).collect(),
        })
    }
}

#[async_trait]
impl Action for WasmAction {
    fn describe(&self) -> ActionDescriptor {
        self.descriptor.clone()
    }

    fn validate(&self, config: &Value) -> Result<(), Vec<String>> {
        // `Action::validate` is synchronous and plugin calls are not: run the call on a
        // thread of its own, so this works inside and outside a tokio runtime alike. It is
        // bounded by the plugin's timeout.
        let outcome = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(self.check(config)).map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("plugin validation thread panicked".to_string()))
        });
        match outcome {
            Ok(v) if v.is_empty() => Ok(()),
            Ok(v) => Err(v.into_iter().map(|(p, m)| format!("{p}: {m}")).collect()),
            Err(e) => Err(vec![e]),
        }
    }

    fn target(&self, _input: &Value) -> String {
        self.descriptor.type_name.clone()
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        self.run(ctx, input).await.map_err(ActionError::from)
    }

    async fn rollback(
        &self,
        ctx: &ActionContext,
        input: &Value,
        state: &Value,
    ) -> Result<(), ActionError> {
        if !self.descriptor.supports_rollback {
            return Err(ActionError::permanent(format!(
                "action type `{}` cannot roll back",
                self.descriptor.type_name
            )));
        }
        self.run_rollback(ctx, input, state)
            .await
            .map_err(ActionError::from)
    }
}
