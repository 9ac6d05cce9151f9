//! What the worker binary and the process tests share: a generated catalog, the
//! `plugin:ledger` action that posts every effect to a ledger HTTP server on 127.0.0.1 with its
//! idempotency key, and crash injection (`PAO_CRASH_AT`) that SIGKILLs the process at a chosen
//! point of an action. The integration tests include this file with `#[path]`, so the catalog
//! they submit against is the one the workers run.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pao_core::action::{
    Action, ActionContext, ActionDescriptor, ActionError, ActionOutput, ActionRegistry,
};
use pao_core::catalog::Catalog;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One action that posts one effect.
pub const SINGLE: &str = "ledger-single";
/// Two actions (`create`, then `configure`); `configure` is refused by the ledger when the
/// request's `reject` field is true, and then `create` is rolled back.
pub const TWO_STEP: &str = "ledger-two-step";
/// One no-op action (benchmarks).
pub const NOOP_1: &str = "noop-1";
/// Ten no-op actions in sequence (benchmarks).
pub const NOOP_10: &str = "noop-10";

const HEAD: &str = "apiVersion: pao.dev/v2\nkind: CatalogItem\nmetadata: { id: ID, name: Store test, description: Generated for the pao-store process tests., version: 1.0.0, category: compute, owner: { team: platform } }\n";

const SINGLE_BODY: &str = r#"fulfillment:
  mode: automated
  actions:
    - { id: post, type: "plugin:ledger", config: { op: post } }
"#;

const TWO_STEP_BODY: &str = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: reject, type: boolean, default: false }
fulfillment:
  mode: automated
  actions:
    - { id: create, type: "plugin:ledger", config: { op: create } }
    - { id: configure, type: "plugin:ledger", config: { op: configure, reject: "${{ fields.reject }}" } }
"#;

/// The catalog of the process tests, loaded with `registry` (which must hold `plugin:ledger`).
pub fn ledger_catalog(registry: &ActionRegistry) -> Catalog {
    load_items(
        &[(SINGLE, SINGLE_BODY), (TWO_STEP, TWO_STEP_BODY)],
        registry,
    )
}

/// The catalog of the benchmarks, loaded with `registry` (which must hold `plugin:noop`).
pub fn noop_catalog(registry: &ActionRegistry) -> Catalog {
    let one = "fulfillment:\n  mode: automated\n  actions:\n    - { id: a1, type: \"plugin:noop\", config: {} }\n".to_string();
    let mut ten = "fulfillment:\n  mode: automated\n  actions:\n".to_string();
    for i in 1..=10 {
        ten.push_str(&format!(
            "    - {{ id: a{i}, type: \"plugin:noop\", config: {{}} }}\n"
        ));
    }
    load_items(&[(NOOP_1, &one), (NOOP_10, &ten)], registry)
}

/// Writes the items into a fresh folder, loads them, and removes the folder.
fn load_items(items: &[(&str, &str)], registry: &ActionRegistry) -> Catalog {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "pao-store-catalog-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the catalog folder");
    for (id, body) in items {
        std::fs::write(
            dir.join(format!("{id}.yaml")),
            format!("{}{body}", HEAD.replace("ID", id)),
        )
        .expect("write a catalog item");
    }
    let catalog = Catalog::load(&dir, &registry.load_options()).expect("load the catalog");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !catalog.has_errors(),
        "{}",
        pao_core::catalog::render_all(catalog.diagnostics())
    );
    catalog
}

/// Where a worker kills itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// In `execute`, after the attempt is journaled, before the HTTP call.
    BeforeCall,
    /// In `execute`, after the ledger answered, before the result is returned (and journaled).
    AfterCall,
    /// In `rollback`, after the ledger answered the undo, before the result is returned.
    DuringRollback,
}

impl CrashPoint {
    /// Every point.
    pub const ALL: [CrashPoint; 3] = [
        CrashPoint::BeforeCall,
        CrashPoint::AfterCall,
        CrashPoint::DuringRollback,
    ];

    /// The name used in `PAO_CRASH_AT`.
    pub fn as_str(self) -> &'static str {
        match self {
            CrashPoint::BeforeCall => "before_call",
            CrashPoint::AfterCall => "after_call",
            CrashPoint::DuringRollback => "during_rollback",
        }
    }

    /// Parses a `PAO_CRASH_AT` value.
    pub fn parse(s: &str) -> Option<CrashPoint> {
        CrashPoint::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// When to crash: `PAO_CRASH_AT=<point>` with either `PAO_CRASH_AFTER=<n>` (the n-th time the
/// point is reached, default 1) or `PAO_CRASH_PROB=<0..1>` (each time, with that probability).
/// Before dying, a line `point request action attempt unix_ms` is appended to `PAO_CRASH_LOG`.
#[derive(Debug)]
pub struct CrashPlan {
    point: Option<CrashPoint>,
    countdown: AtomicU32,
    probability: Option<f64>,
    log: Option<PathBuf>,
    rng: AtomicU64,
}

impl CrashPlan {
    /// No crash.
    pub fn none() -> CrashPlan {
        CrashPlan {
            point: None,
            countdown: AtomicU32::new(0),
            probability: None,
            log: None,
            rng: AtomicU64::new(1),
        }
    }

    /// From the `PAO_CRASH_*` variables.
    pub fn from_env() -> Result<CrashPlan, String> {
        let Ok(at) = std::env::var("PAO_CRASH_AT") else {
            return Ok(CrashPlan::none());
        };
        let point = CrashPoint::parse(&at).ok_or_else(|| {
            format!("PAO_CRASH_AT={at}: use before_call, after_call or during_rollback")
        })?;
        let probability = match std::env::var("PAO_CRASH_PROB") {
            Ok(p) => Some(
                p.parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| format!("PAO_CRASH_PROB={p}: use a number from 0 to 1"))?,
            ),
            Err(_) => None,
        };
        let after = match std::env::var("PAO_CRASH_AFTER") {
            Ok(n) => n
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("PAO_CRASH_AFTER={n}: use a count from 1"))?,
            Err(_) => 1,
        };
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7);
        Ok(CrashPlan {
            point: Some(point),
            countdown: AtomicU32::new(after),
            probability,
            log: std::env::var_os("PAO_CRASH_LOG").map(PathBuf::from),
            rng: AtomicU64::new(seed | 1),
        })
    }

    fn roll(&self) -> f64 {
        // xorshift64: enough randomness to spread crashes, no dependency.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Kills this process with SIGKILL when `point` is the planned one and its turn has come.
    pub fn reached(&self, point: CrashPoint, ctx: &ActionContext) {
        if self.point != Some(point) {
            return;
        }
        let fire = match self.probability {
            Some(p) => self.roll() < p,
            None => self.countdown.fetch_sub(1, Ordering::SeqCst) == 1,
        };
        if !fire {
            return;
        }
        if let Some(log) = &self.log {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let line = format!(
                "{} {} {} {} {}\n",
                point.as_str(),
                ctx.request_id,
                ctx.action_id,
                ctx.attempt,
                now
            );
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        // SIGKILL is not instant for the sender; never go on with the action.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// `plugin:ledger`: POSTs `{request, action, op, reject}` to `http://127.0.0.1:<port>/effects`
/// with the attempt's idempotency key in the `Idempotency-Key` header. 2xx succeeds, 4xx fails
/// permanently, anything else (and a connection error) is retryable.
pub struct LedgerAction {
    /// The ledger's port on 127.0.0.1.
    pub port: u16,
    /// Crash injection.
    pub crash: Arc<CrashPlan>,
}

impl LedgerAction {
    async fn post(
        &self,
        ctx: &ActionContext,
        op: &str,
        input: &Value,
    ) -> Result<Value, ActionError> {
        let reject = input
            .get("reject")
            .map(|v| v == &json!(true) || v == &json!("true"))
            .unwrap_or(false);
        let body = json!({
            "request": ctx.request_id,
            "action": ctx.action_id,
            "op": op,
            "reject": reject && op == "do",
            "attempt": ctx.attempt,
        })
        .to_string();
        let call = http_post(self.port, "/effects", ctx.idempotency_key.as_str(), &body);
        let (status, answer) = tokio::select! {
            r = call => r.map_err(|e| ActionError::retryable(format!("ledger: {e}")))?,
            _ = ctx.cancel.cancelled() => return Err(ActionError::cancelled()),
        };
        match status {
            200..=299 => Ok(serde_json::from_str(&answer).unwrap_or(Value::Null)),
            400..=499 => Err(ActionError::permanent(format!(
                "ledger refused ({status}): {answer}"
            ))),
            _ => Err(ActionError::retryable(format!(
                "ledger failed ({status}): {answer}"
            ))),
        }
    }
}

#[async_trait]
impl Action for LedgerAction {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "plugin:ledger".into(),
            config_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            supports_rollback: true,
            sample_output: json!({"effect": 1}),
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        self.crash.reached(CrashPoint::BeforeCall, ctx);
        let r = self.post(ctx, "do", input).await;
        self.crash.reached(CrashPoint::AfterCall, ctx);
        r.map(ActionOutput::new)
    }

    async fn rollback(
        &self,
        ctx: &ActionContext,
        input: &Value,
        _state: &Value,
    ) -> Result<(), ActionError> {
        let r = self.post(ctx, "undo", input).await;
        self.crash.reached(CrashPoint::DuringRollback, ctx);
        r.map(|_| ())
    }
}

/// One HTTP/1.1 POST over a fresh connection (`Connection: close`); returns status and body.
pub async fn http_post(
    port: u16,
    path: &str,
    idempotency_key: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nIdempotency-Key: {idempotency_key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `plugin:noop`: succeeds at once (benchmarks). Counts its calls and reports each start.
#[derive(Default)]
pub struct NoopAction {
    /// Calls so far.
    pub calls: AtomicU64,
    /// Gets `(request id, when)` for every first action of a request, when set.
    pub started:
        std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, std::time::Instant)>>>,
}

#[async_trait]
impl Action for NoopAction {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "plugin:noop".into(),
            config_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            supports_rollback: false,
            sample_output: json!({}),
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        _input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        let now = std::time::Instant::now();
        self.calls.fetch_add(1, Ordering::Relaxed);
        if ctx.action_id == "a1"
            && let Ok(tx) = self.started.lock()
            && let Some(tx) = tx.as_ref()
        {
            let _ = tx.send((ctx.request_id.clone(), now));
        }
        Ok(ActionOutput::default())
    }
}
