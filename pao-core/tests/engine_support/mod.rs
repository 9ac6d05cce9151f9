//! Shared pieces of the engine tests: a scriptable `plugin:test` action that records every
//! call in a ledger, catalogs written from YAML snippets, and a paused clock.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pao_core::action::{
    Action, ActionContext, ActionDescriptor, ActionError, ActionOutput, ActionRegistry,
};
use pao_core::authz::Principal;
use pao_core::catalog::Catalog;
use pao_core::clock::TokioClock;
use pao_core::engine::{EngineConfig, Orchestrator};
use pao_core::store::MemoryStore;
use serde_json::{Value, json};

/// One call of the test action.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub action: String,
    pub key: String,
    pub attempt: u32,
    pub rollback: bool,
    pub at: tokio::time::Instant,
}

/// Records calls; behaviour comes from the action's config:
/// `{ fail: "permanent" | "retryable", fail_times: n, sleep_ms: n, result: {...}, retry_after_ms: n,
///    rollback_fails: true, log_lines: n, log_bytes: n }`.
#[derive(Default)]
pub struct Ledger {
    pub calls: Mutex<Vec<Call>>,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
    pub effects: Mutex<BTreeMap<String, usize>>,
    /// What each call of the test action received: (action, rollback, input).
    pub inputs: Mutex<Vec<(String, bool, Value)>>,
}

impl Ledger {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    pub fn executed(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !c.rollback)
            .map(|c| c.action)
            .collect()
    }
    pub fn rolled_back(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.rollback)
            .map(|c| c.action)
            .collect()
    }
    /// Distinct effects per idempotency key (what a remote system that deduplicates keeps).
    pub fn effects(&self) -> BTreeMap<String, usize> {
        self.effects.lock().unwrap().clone()
    }
}

pub struct TestAction {
    pub ledger: Arc<Ledger>,
}

#[async_trait]
impl Action for TestAction {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "plugin:test".into(),
            config_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            supports_rollback: true,
            sample_output: json!({"id": "sample-id"}),
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        let rollback = input.get("rollback_of").is_some();
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(&ctx.action_id)
            .to_string();
        self.ledger.calls.lock().unwrap().push(Call {
            action: name.clone(),
            key: ctx.idempotency_key.to_string(),
            attempt: ctx.attempt,
            rollback,
            at: tokio::time::Instant::now(),
        });
        self.ledger
            .inputs
            .lock()
            .unwrap()
            .push((name.clone(), rollback, input.clone()));
        let now = self.ledger.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.ledger.max_running.fetch_max(now, Ordering::SeqCst);
        let result = self.behave(ctx, input, rollback).await;
        self.ledger.running.fetch_sub(1, Ordering::SeqCst);
        if result.is_ok() {
            *self
                .ledger
                .effects
                .lock()
                .unwrap()
                .entry(ctx.idempotency_key.to_string())
                .or_default() += 1;
        }
        result
    }

    async fn rollback(
        &self,
        ctx: &ActionContext,
        input: &Value,
        _state: &Value,
    ) -> Result<(), ActionError> {
        let mut input = input.clone();
        input["rollback_of"] = json!(ctx.action_id);
        self.execute(ctx, &input).await.map(|_| ())
    }
}

impl TestAction {
    async fn behave(
        &self,
        ctx: &ActionContext,
        input: &Value,
        rollback: bool,
    ) -> Result<ActionOutput, ActionError> {
        let lines = input.get("log_lines").and_then(Value::as_u64).unwrap_or(0);
        let bytes = input.get("log_bytes").and_then(Value::as_u64).unwrap_or(1);
        if lines > 0 {
            let text = "x".repeat(bytes as usize);
            for _ in 0..lines {
                ctx.log.info(&text);
            }
        }
        let sleep = input.get("sleep_ms").and_then(Value::as_u64).unwrap_or(0);
        if sleep > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(sleep)) => {}
                _ = ctx.cancel.cancelled() => return Err(ActionError::cancelled()),
            }
        }
        if rollback {
            match input.get("rollback_fails").and_then(Value::as_str) {
                Some("retryable") => {
                    return Err(ActionError::retryable("rollback refused, for now"));
                }
                Some(_) => return Err(ActionError::permanent("rollback refused")),
                None => {}
            }
            return Ok(ActionOutput::default());
        }
        let fail_times = input
            .get("fail_times")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        match input.get("fail").and_then(Value::as_str) {
            Some(kind) if u64::from(ctx.attempt) <= fail_times => {
                let mut e = if kind == "permanent" {
                    ActionError::permanent(format!("{} failed on purpose", ctx.action_id))
                } else {
                    ActionError::retryable(format!("{} failed on purpose", ctx.action_id))
                };
                if let Some(ms) = input.get("retry_after_ms").and_then(Value::as_u64) {
                    e = e.with_retry_after(Duration::from_millis(ms));
                }
                Err(e)
            }
            _ => Ok(ActionOutput::new(
                input
                    .get("result")
                    .cloned()
                    .unwrap_or_else(|| json!({"id": format!("{}-id", ctx.action_id)})),
            )),
        }
    }
}

pub const HEAD: &str = "apiVersion: pao.dev/v2\nkind: CatalogItem\nmetadata: { id: ID, name: Test, description: Test item., version: 1.0.0, category: compute, owner: { team: platform } }\n";

/// Writes items into a fresh folder and loads them with the test action registered.
pub fn catalog(items: &[(&str, &str)], registry: &ActionRegistry) -> Catalog {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "pao-engine-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (id, body) in items {
        std::fs::write(
            dir.join(format!("{id}.yaml")),
            format!("{}{body}", HEAD.replace("ID", id)),
        )
        .unwrap();
    }
    let c = Catalog::load(&dir, &registry.load_options()).unwrap();
    assert!(
        !c.has_errors(),
        "{}",
        pao_core::catalog::render_all(c.diagnostics())
    );
    c
}

pub struct Harness {
    pub engine: Arc<Orchestrator>,
    pub ledger: Arc<Ledger>,
    pub store: Arc<MemoryStore>,
}

pub fn harness(items: &[(&str, &str)]) -> Harness {
    harness_with(items, EngineConfig::default())
}

pub fn harness_with(items: &[(&str, &str)], config: EngineConfig) -> Harness {
    build_harness(items, config, None)
}

fn build_harness(
    items: &[(&str, &str)],
    config: EngineConfig,
    secrets: Option<Arc<dyn pao_core::secrets::SecretProvider>>,
) -> Harness {
    let ledger = Arc::new(Ledger::default());
    let mut registry = ActionRegistry::new();
    registry.register(Arc::new(TestAction {
        ledger: ledger.clone(),
    }));
    registry.register(Arc::new(JiraStub {
        ledger: ledger.clone(),
    }));
    let store = Arc::new(MemoryStore::new());
    let catalog = catalog(items, &registry);
    let clock = Arc::new(TokioClock::starting_at(
        chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .to_utc(),
    ));
    let mut builder = Orchestrator::builder(catalog, store.clone())
        .actions(registry)
        .clock(clock)
        .config(config);
    if let Some(secrets) = secrets {
        builder = builder.secrets(secrets);
    }
    let engine = builder.build();
    Harness {
        engine,
        ledger,
        store,
    }
}

/// Stands in for the JIRA action of manual mode.
pub struct JiraStub {
    pub ledger: Arc<Ledger>,
}

#[async_trait]
impl Action for JiraStub {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "jira".into(),
            config_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            supports_rollback: false,
            sample_output: json!({"key": "OPS-1"}),
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        self.ledger.calls.lock().unwrap().push(Call {
            action: format!(
                "jira:{}",
                input.get("summary").and_then(Value::as_str).unwrap_or("")
            ),
            key: ctx.idempotency_key.to_string(),
            attempt: ctx.attempt,
            rollback: false,
            at: tokio::time::Instant::now(),
        });
        Ok(ActionOutput::new(json!({"key": "OPS-42", "id": "10042"})))
    }
}

pub fn dev() -> Principal {
    Principal::new("dev1", &["payments"], &["developer"])
}

pub fn lead() -> Principal {
    Principal::new("lead1", &["platform-leads"], &["developer"])
}

/// A harness whose engine reads secrets from `secrets`.
pub fn harness_with_secrets(
    items: &[(&str, &str)],
    secrets: Arc<dyn pao_core::secrets::SecretProvider>,
) -> Harness {
    build_harness(items, EngineConfig::default(), Some(secrets))
}
