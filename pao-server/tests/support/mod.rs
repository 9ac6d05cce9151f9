//! A PAO server on 127.0.0.1 for black-box API tests, on SQLite (a temporary file) or on
//! PostgreSQL (a fresh database per server from `PAO_TEST_DATABASE_URL`; required under
//! `CI=true`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pao_core::action::{
    Action, ActionContext, ActionDescriptor, ActionError, ActionOutput, ActionRegistry,
};
use pao_core::authz::Principal;
use pao_server::config::ServerConfig;
use pao_server::state::{AppState, Overrides};
use serde_json::{Value, json};

static N: AtomicUsize = AtomicUsize::new(0);

/// Which database a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// `plugin:echo`: returns `{echo: message}`, fails permanently when `fail` is true, sleeps
/// `sleep_ms` (honouring cancellation).
pub struct Echo;

#[async_trait]
impl Action for Echo {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "plugin:echo".into(),
            config_schema: json!({
                "type": "object",
                "properties": {
                    "message": { "type": "string" },
                    "fail": {},
                    "sleep_ms": {}
                },
                "required": ["message"],
                "additionalProperties": false
            }),
            output_schema: json!({ "type": "object" }),
            supports_rollback: true,
            sample_output: json!({ "echo": "sample" }),
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        if let Some(ms) = input.get("sleep_ms").and_then(Value::as_u64) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                _ = ctx.cancel.cancelled() => return Err(ActionError::cancelled()),
            }
        }
        ctx.log.info(&format!("echoing {}", input["message"]));
        if input.get("fail").and_then(Value::as_bool) == Some(true) {
            return Err(ActionError::permanent("asked to fail"));
        }
        Ok(ActionOutput::new(json!({ "echo": input["message"] })))
    }

    async fn rollback(
        &self,
        _ctx: &ActionContext,
        _input: &Value,
        _state: &Value,
    ) -> Result<(), ActionError> {
        Ok(())
    }
}

/// Stands in for the JIRA action of manual mode: returns a ticket key; its rollback (closing
/// the ticket) records the request id in [`JIRA_CLOSED`].
pub struct JiraStub;

/// Requests whose ticket [`JiraStub`] closed.
pub static JIRA_CLOSED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[async_trait]
impl Action for JiraStub {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "jira".into(),
            config_schema: json!({ "type": "object" }),
            output_schema: json!({ "type": "object" }),
            supports_rollback: true,
            sample_output: json!({ "key": "NET-1" }),
        }
    }

    async fn execute(
        &self,
        _ctx: &ActionContext,
        _input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        Ok(ActionOutput::new(
            json!({ "key": "NET-7", "id": "10007", "url": "http://jira.invalid/browse/NET-7" }),
        ))
    }

    async fn rollback(
        &self,
        ctx: &ActionContext,
        _input: &Value,
        state: &Value,
    ) -> Result<(), ActionError> {
        assert_eq!(state["key"], "NET-7", "the ticket's rollback state");
        JIRA_CLOSED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ctx.request_id.clone());
        Ok(())
    }
}

pub fn principal(id: &str, teams: &[&str], roles: &[&str]) -> Principal {
    let mut p = Principal::new(id, teams, roles);
    p.email = Some(format!("{id}@example.com"));
    p
}

/// Tokens: `alice` (developer, app-team), `bob` (approver, leads), `carol` (developer in
/// another team), `admin`.
pub fn tokens() -> Vec<(String, Principal)> {
    vec![
        (
            "t-alice".into(),
            principal("alice", &["app-team"], &["developer"]),
        ),
        ("t-bob".into(), principal("bob", &["leads"], &["approver"])),
        (
            "t-carol".into(),
            principal("carol", &["other"], &["developer"]),
        ),
        (
            "t-admin".into(),
            principal("admin", &["platform-admins"], &["admin"]),
        ),
    ]
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog")
}

/// A copy of the fixture catalog the test may change.
pub fn catalog_copy() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pao-api-catalog-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(fixtures()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

pub async fn database_url(db: Db) -> Option<String> {
    match db {
        Db::Sqlite => {
            let dir = std::env::temp_dir().join(format!(
                "pao-api-db-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Some(format!("sqlite://{}/pao.db", dir.display()))
        }
        Db::Postgres => {
            let Ok(base) = std::env::var("PAO_TEST_DATABASE_URL") else {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!(
                        "PAO_TEST_DATABASE_URL is not set; CI requires the PostgreSQL tests to run"
                    );
                }
                eprintln!("skipping: PAO_TEST_DATABASE_URL is not set");
                return None;
            };
            let name = format!(
                "pao_api_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            );
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(&base)
                .await
                .expect("connect to PAO_TEST_DATABASE_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&admin)
            .await
            .expect("drop database");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .expect("create database");
            admin.close().await;
            let i = base.rfind('/').expect("a database URL with a path");
            Some(format!("{}/{name}", &base[..i]))
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub catalog_dir: PathBuf,
    pub database_url: String,
    running: Option<pao_server::serve::Running>,
    _inventory: pao_sandbox::FakeServer,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base.replacen("http://", "ws://", 1))
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        decode(r).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        decode(r).await
    }

    /// The events of `type` `kind` in request `id`'s log.
    pub async fn events_of(&self, token: &str, id: &str, kind: &str) -> Vec<Value> {
        let (code, logs) = self.get(token, &format!("/requests/{id}/logs")).await;
        assert_eq!(code, 200, "{logs}");
        logs["events"]
            .as_array()
            .unwrap_or_else(|| panic!("{logs}"))
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    /// Polls the status until `pred` holds (10 s at most).
    pub async fn wait_state(&self, token: &str, id: &str, want: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let (code, v) = self.get(token, &format!("/requests/{id}/status")).await;
            assert_eq!(code, 200, "{v}");
            if v["state"] == want {
                return v;
            }
            last = v;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("request {id} did not reach {want}; last status {last}");
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown.cancel();
            let _ = r.done.await;
        }
    }
}

pub async fn decode(r: reqwest::Response) -> (u16, Value) {
    let code = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().await.unwrap();
    if code >= 400 {
        assert!(
            ct.starts_with("application/problem+json"),
            "error {code} is not problem+json ({ct}): {text}"
        );
    }
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, v)
}

pub fn registry() -> ActionRegistry {
    let mut r = ActionRegistry::new();
    r.register(Arc::new(Echo));
    r.register(Arc::new(JiraStub));
    r
}

pub async fn spawn(db: Db) -> Option<TestServer> {
    spawn_with(db, |_| {}).await
}

pub async fn spawn_with(db: Db, tweak: impl FnOnce(&mut ServerConfig)) -> Option<TestServer> {
    spawn_clocked(db, None, tweak).await
}

/// [`spawn_with`], with the engine reading `clock`.
pub async fn spawn_clocked(
    db: Db,
    clock: Option<Arc<dyn pao_core::clock::Clock>>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> Option<TestServer> {
    spawn_full(db, clock, false, tweak).await
}

/// [`spawn_clocked`]; with `builtins`, the server registers its built-in actions from the
/// configuration (`[actions]`) instead of the test stubs.
pub async fn spawn_full(
    db: Db,
    clock: Option<Arc<dyn pao_core::clock::Clock>>,
    builtins: bool,
    tweak: impl FnOnce(&mut ServerConfig),
) -> Option<TestServer> {
    let database_url = database_url(db).await?;
    let catalog_dir = catalog_copy();
    let mut config = ServerConfig {
        bind: "127.0.0.1:0".into(),
        database_url: database_url.clone(),
        catalog: catalog_dir.clone(),
        workers: 1,
        watch_catalog: false,
        ..ServerConfig::default()
    };
    config
        .secrets
        .insert("jira_hook".into(), "jira-shared-secret".into());
    config
        .secrets
        .insert("github_hook".into(), "gh-secret-0123456789".into());
    config
        .secrets
        .insert("tfc_hook".into(), "tfc-secret-0123456789".into());
    config
        .secrets
        .insert("approval_hook".into(), "approval-secret-0123456789".into());
    config.webhooks.jira_secret = Some("jira_hook".into());
    config.webhooks.github_secret = Some("github_hook".into());
    config.webhooks.terraform_secret = Some("tfc_hook".into());
    config.webhooks.approval_secret = Some("approval_hook".into());
    // Dynamic field options come from an inventory service on 127.0.0.1.
    let inventory = inventory().await;
    config
        .env
        .insert("PAO_OPTIONS_URL".into(), Some(inventory.url()));
    tweak(&mut config);
    let workers = config.workers;
    // The `cost` action, with the price table of the catalog's `catalog.yaml`.
    let prices = pao_actions::PriceBook::new(None);
    let mut actions = registry();
    actions.register(Arc::new(pao_actions::cost::CostAction::new(prices.clone())));
    let over = Overrides {
        actions: (!builtins).then_some(actions),
        builtins: (!builtins).then_some(pao_actions::Builtins { prices }),
        tokens: tokens(),
        clock,
        ..Overrides::default()
    };
    let state = AppState::build(config, over).await.expect("server state");
    assert!(
        !state.orch.catalog().has_errors(),
        "{}",
        pao_core::catalog::render_all(state.orch.catalog().diagnostics())
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = pao_server::serve::start(state.clone(), Some(listener), workers).unwrap();
    Some(TestServer {
        base: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        state,
        catalog_dir,
        database_url,
        running: Some(running),
        _inventory: inventory,
    })
}

/// A small inventory API for `source.http` fields: regions, and the VPCs of a region.
async fn inventory() -> pao_sandbox::FakeServer {
    use axum::extract::Path as P;
    let router = axum::Router::new()
        .route(
            "/regions",
            axum::routing::get(|| async {
                axum::Json(json!({ "regions": [
                    { "id": "eu-west-1", "name": "Europe (Ireland)" },
                    { "id": "us-east-1", "name": "US East (Virginia)" }
                ] }))
            }),
        )
        .route(
            "/regions/{region}/vpcs",
            axum::routing::get(|P(region): P<String>| async move {
                axum::Json(json!([
                    format!("{region}-vpc-a"),
                    format!("{region}-vpc-b")
                ]))
            }),
        );
    pao_sandbox::FakeServer::start(router)
        .await
        .expect("inventory starts")
}

/// Runs a test body against SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(s) = $crate::support::spawn($crate::support::Db::Sqlite).await {
                    super::$body(&s).await;
                    s.stop().await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(s) = $crate::support::spawn($crate::support::Db::Postgres).await {
                    super::$body(&s).await;
                    s.stop().await;
                }
            }
        }
    };
}

/// A `pao` process started by a test; killed when dropped.
pub struct PaoProcess {
    pub child: std::process::Child,
    /// `http://127.0.0.1:<port>`, read from its `listening on` line.
    pub base: String,
}

impl Drop for PaoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PaoProcess {
    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn sigterm(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits up to `within` for the process to exit: its exit code, or `None` if it is still
    /// running.
    pub async fn exit_within(&mut self, within: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        while start.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// `GET /api/v1/requests/{id}` as `token`.
pub async fn request(http: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
    http.get(format!("{base}/api/v1/requests/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the request until its state is `want` (60 s at most); the request then.
pub async fn wait_request(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    want: &str,
) -> Value {
    let start = std::time::Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < Duration::from_secs(60) {
        last = request(http, base, token, id).await;
        if last["state"] == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} did not reach {want}: {last}");
}

/// Runs the `pao` binary with `args` in `cwd` and waits (up to `within`) until it says where
/// it listens.
pub fn spawn_pao(args: &[&std::ffi::OsStr], cwd: &Path, within: Duration) -> PaoProcess {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pao"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("PAO_DATABASE_URL")
        .env_remove("PAO_CONFIG")
        .env_remove("PAO_BIND");
    spawn_command(cmd, within)
}

/// Runs `cmd` (a `pao serve`, perhaps behind a wrapper) and waits (up to `within`) until it
/// says where it listens.
pub fn spawn_command(cmd: std::process::Command, within: Duration) -> PaoProcess {
    spawn_with_stderr(cmd, std::process::Stdio::null(), None, within)
}

/// As [`spawn_command`], with the standard error written to `stderr` and the standard output
/// (the log) to `stderr` with the extension `stdout`.
pub fn spawn_command_logging(
    cmd: std::process::Command,
    stderr: &Path,
    within: Duration,
) -> PaoProcess {
    let file = std::fs::File::create(stderr).expect("create the stderr log");
    let out = std::fs::File::create(stderr.with_extension("stdout")).expect("create the log");
    spawn_with_stderr(cmd, file.into(), Some(out), within)
}

fn spawn_with_stderr(
    mut cmd: std::process::Command,
    stderr: std::process::Stdio,
    mut log: Option<std::fs::File>,
    within: Duration,
) -> PaoProcess {
    use std::io::{BufRead, Write};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("pao starts");
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(within)
        .expect("the server says where it listens");
    PaoProcess { child, base }
}

/// Hex HMAC-SHA256 of `msg` under `key`, as webhook senders sign.
pub fn sign256(key: &str, msg: &[u8]) -> String {
    use hmac::Mac as _;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    m.update(msg);
    hex::encode(m.finalize().into_bytes())
}

/// Builds the example plugins into `dir` the way the README says (`scripts/build-plugins`).
pub fn build_plugins(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = std::process::Command::new(root.join("scripts/build-plugins"))
        .arg(dir)
        .status()
        .expect("scripts/build-plugins runs");
    assert!(built.success(), "scripts/build-plugins failed");
}
