//! Secrets across processes: `pao serve` processes on one PostgreSQL database, with a
//! key-encryption key from the secret provider. A request with a `secret` form field accepted
//! by a replica without workers is run by another, and its actions (a webhook and a WASM
//! plugin) receive the value; a request awaiting approval keeps its secret across a restart
//! of every process; work resumed after a worker process is killed, its rollback, and a
//! retry get the real value. Afterwards the database holds no plaintext (nor base64 or
//! URL-encoded form) of any secret, and neither do the processes' logs (at debug level), the
//! API's answers, the WebSocket stream of a run or the plugin's result and log lines.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const FIELD_SECRET_1: &str = "first-field-secret-9f3a7c";
const FIELD_SECRET_2: &str = "second-field-secret-b81d2e";
const PROVIDER_SECRET: &str = "provider-token-5e6f7a8b9c";
/// The bot token of the Slack plugin (a WASM component), from the secret provider.
const SLACK_TOKEN: &str = "xoxb-planted-slack-token-3c4d5e";
const KEK: &str = "c2VhbGVkLXNlY3JldHMtdGVzdC1rZXktMzItYnl0ZXM=";

/// Bodies posted to the fake receiver.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Value>>>);

async fn receiver() -> (String, Received) {
    let got = Received::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(got): axum::extract::State<Received>,
                 axum::Json(body): axum::Json<Value>| async move {
                    got.0.lock().unwrap().push(body);
                    axum::Json(json!({"received": true}))
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// `extra`: more actions, one per line, after the webhook.
fn item(id: &str, receiver: &str, approval: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: pao.dev/v2
kind: CatalogItem
metadata: {{ id: {id}, name: Secret test, description: Sends a secret field on., version: 1.0.0, category: security, owner: {{ team: platform }} }}
presentation:
  groups:
    - id: g
      title: G
      fields:
        - {{ id: password, type: secret, required: true }}
secrets: [api_token]
fulfillment:
  mode: automated
{approval}  actions:
    - {{ id: call, type: webhook, config: {{ url: "{receiver}/hook", body: {{ password: "${{{{ secrets.password }}}}", token: "${{{{ secrets.api_token }}}}" }} }} }}
{extra}"#
    )
}

/// A `pao serve` logging at debug level; its output (the log) goes to `log`.
fn spawn(config: &std::path::Path, cwd: &std::path::Path, log: &std::path::Path) -> Process {
    use std::io::{BufRead, Write};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pao"))
        .args([
            std::ffi::OsStr::new("serve"),
            std::ffi::OsStr::new("--config"),
            config.as_os_str(),
        ])
        .current_dir(cwd)
        .env_remove("PAO_DATABASE_URL")
        .env_remove("PAO_CONFIG")
        .env_remove("PAO_BIND")
        .env("PAO_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log.with_extension("stderr")).unwrap())
        .spawn()
        .expect("pao starts");
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut file = std::fs::File::create(log).unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("the server says where it listens");
    Process { child, base }
}

struct Process {
    child: std::process::Child,
    base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every form a secret must never appear in.
fn forms(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        secret.to_string(),
        b64.encode(secret),
        url.encode(secret),
        // URL-encoded: these secrets have only unreserved characters, so check the
        // percent-encoding of every byte as well.
        secret.bytes().map(|b| format!("%{b:02X}")).collect(),
    ]
}

fn assert_clean(what: &str, text: &str) {
    for s in [FIELD_SECRET_1, FIELD_SECRET_2, PROVIDER_SECRET, SLACK_TOKEN] {
        for f in forms(s) {
            assert!(
                !text.contains(&f),
                "{what} contains `{f}` (a form of a secret)"
            );
        }
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
    transcript: &mut String,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = &body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    transcript.push_str(&text);
    transcript.push('\n');
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn wait_state(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    want: &str,
    transcript: &mut String,
) -> Value {
    for _ in 0..300 {
        let (_, r) = call(
            http,
            reqwest::Method::GET,
            format!("{base}/api/v1/requests/{id}"),
            "t-alice",
            None,
            transcript,
        )
        .await;
        let state = r["state"].as_str().unwrap_or_default().to_string();
        if state == want {
            return r;
        }
        assert!(
            !matches!(state.as_str(), "failed" | "rejected" | "cancelled") || want == state,
            "request {id} ended {state}, not {want}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("request {id} never reached {want}");
}

/// Every row of every table of the database at `url`, as text, each table headed by its name.
async fn database_text(url: &str) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut dump = String::new();
    for (table,) in &tables {
        dump.push_str(&format!("== {table}\n"));
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM \"{table}\" t"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        for (row,) in rows {
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    pool.close().await;
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_fields_cross_replicas_and_restarts_and_leave_no_plaintext() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(url) = support::database_url(support::Db::Postgres).await else {
        return;
    };
    let (recv, received) = receiver().await;
    let dir = std::env::temp_dir().join(format!("pao-sealed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    // The run of `sec.direct` includes a WASM plugin (the Slack example) posting the secrets.
    let slack = pao_sandbox::slack::SlackFake::start_with_token(SLACK_TOKEN)
        .await
        .unwrap();
    let plugins = dir.join("plugins");
    support::build_plugins(&plugins);
    std::fs::write(
        catalog.join("direct.yaml"),
        item(
            "sec.direct",
            &recv,
            "",
            "    - { id: notify, type: \"plugin:slack-notify\", config: { channel: \"#security\", text: \"set ${{ secrets.password }} with ${{ secrets.api_token }}\" } }\n",
        ),
    )
    .unwrap();
    std::fs::write(
        catalog.join("approved.yaml"),
        item(
            "sec.approved",
            &recv,
            "  approval: { required_when: \"true\", approvers: { teams: [platform-leads] } }\n",
            "",
        ),
    )
    .unwrap();
    let config = |name: &str, workers: i64| {
        let text = format!(
            r#"bind = "127.0.0.1:0"
database_url = "{url}"
database_pool = 4
catalog = "{catalog}"
workers = {workers}
watch_catalog = false
log_format = "json"

[secrets]
api_token = "{PROVIDER_SECRET}"
pao_kek = "{KEK}"
slack_bot_token = "{SLACK_TOKEN}"

[sealing]
kek = "pao_kek"

[plugins]
dir = "{plugins}"

[plugins.grants.slack-notify]
http_hosts = ["{slack_host}"]
secrets = ["slack_bot_token"]
kv = true
settings = {{ api_url = "{slack_api}" }}

[[auth.tokens]]
id = "alice"
teams = ["payments"]
roles = ["developer"]
token_sha256 = "{alice}"

[[auth.tokens]]
id = "bob"
teams = ["platform-leads"]
roles = ["developer", "approver"]
token_sha256 = "{bob}"
"#,
            catalog = catalog.display(),
            plugins = plugins.display(),
            slack_host = slack.url().trim_start_matches("http://"),
            slack_api = slack.api_url(),
            alice = pao_server::config::hash_token("t-alice"),
            bob = pao_server::config::hash_token("t-bob"),
        );
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (api_only, runner) = (config("a.toml", 0), config("b.toml", 2));
    let logs: Vec<std::path::PathBuf> = ["a.log", "b.log", "c.log"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    let http = reqwest::Client::new();
    let mut transcript = String::new();
    let t = &mut transcript;

    // Accepted by A (no workers), run by B.
    let a = spawn(&api_only, &dir, &logs[0]);
    let b = spawn(&runner, &dir, &logs[1]);
    let (status, r) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/api/v1/requests", a.base),
        "t-alice",
        Some(json!({"item_id": "sec.direct", "fields": {"password": FIELD_SECRET_1}})),
        t,
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let direct = r["id"].as_str().unwrap().to_string();
    // Its whole event stream, live from the replica that runs it.
    let ws_url = format!(
        "{}/api/v1/ws/requests/{direct}/logs?access_token=t-alice&after=0",
        b.base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut messages = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("events keep coming");
        let Some(Ok(Message::Text(text))) = m else {
            continue;
        };
        messages += 1;
        t.push_str(&text);
        t.push('\n');
        if serde_json::from_str::<Value>(&text).unwrap()["type"] == "end" {
            break;
        }
    }
    assert!(messages > 3, "the stream showed the run");
    let done = wait_state(&http, &a.base, &direct, "completed", t).await;
    assert_eq!(done["state"], "completed");

    // Awaiting approval while every process restarts.
    let (status, r) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/api/v1/requests", a.base),
        "t-alice",
        Some(json!({"item_id": "sec.approved", "fields": {"password": FIELD_SECRET_2}})),
        t,
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let approved = r["id"].as_str().unwrap().to_string();
    wait_state(&http, &a.base, &approved, "awaiting_approval", t).await;
    drop(a);
    drop(b);
    let c = spawn(&runner, &dir, &logs[2]);
    let (status, r) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/api/v1/approvals/{approved}/approve", c.base),
        "t-bob",
        Some(json!({"comment": "ok"})),
        t,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    wait_state(&http, &c.base, &approved, "completed", t).await;

    // The action received the real values, each request its own.
    let got = received.0.lock().unwrap().clone();
    let passwords: Vec<&str> = got.iter().filter_map(|b| b["password"].as_str()).collect();
    assert_eq!(passwords, vec![FIELD_SECRET_1, FIELD_SECRET_2], "{got:?}");
    assert!(got.iter().all(|b| b["token"] == PROVIDER_SECRET));
    // The plugin posted with its token and received the values in its input.
    let posted = slack.messages();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(
        posted[0].text,
        format!("set {FIELD_SECRET_1} with {PROVIDER_SECRET}")
    );

    // Every answer about the requests.
    for id in [&direct, &approved] {
        for path in [
            format!("/api/v1/requests/{id}"),
            format!("/api/v1/requests/{id}/logs"),
            format!("/api/v1/requests/{id}/status"),
        ] {
            call(
                &http,
                reqwest::Method::GET,
                format!("{}{path}", c.base),
                "t-alice",
                None,
                t,
            )
            .await;
        }
    }
    call(
        &http,
        reqwest::Method::GET,
        format!("{}/api/v1/requests", c.base),
        "t-alice",
        None,
        t,
    )
    .await;
    drop(c);
    assert_clean("the API's answers and WebSocket messages", &transcript);
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap()
            + std::fs::read_to_string(log.with_extension("stderr"))
                .unwrap_or_default()
                .as_str();
        assert!(
            text.lines().count() > 5 && text.contains("DEBUG"),
            "{} logged at debug level: {text}",
            log.display()
        );
        assert_clean(&format!("log {}", log.display()), &text);
    }

    // The database, every row of every table as text.
    let dump = database_text(&url).await;
    assert!(
        dump.contains("sealed_values"),
        "the dump covers the sealed tables"
    );
    assert!(dump.contains(&direct), "the dump has the requests");
    assert_clean("the database", &dump);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let left: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sealed_values")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left.0, 0, "completed requests keep nothing sealed");
    pool.close().await;
}

/// On SQLite, the database file and its write-ahead log hold no form of a secret field or of
/// a provider secret after a run whose action echoed both back in its result; a request still
/// waiting for approval holds its secret only sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_holds_no_secret_in_any_form() {
    let dir = std::env::temp_dir().join(format!("pao-sealed-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let echo = |id: &str, approval: &str| {
        format!(
            r#"apiVersion: pao.dev/v2
kind: CatalogItem
metadata: {{ id: {id}, name: Echo secret, description: Echoes a secret back., version: 1.0.0, category: security, owner: {{ team: platform }} }}
presentation:
  groups:
    - id: g
      title: G
      fields:
        - {{ id: password, type: secret, required: true }}
secrets: [api_token]
fulfillment:
  mode: automated
{approval}  actions:
    - {{ id: echo, type: "plugin:echo", config: {{ message: "${{{{ secrets.password }}}} ${{{{ secrets.api_token }}}}" }} }}
"#
        )
    };
    std::fs::write(dir.join("echo.yaml"), echo("sec.echo", "")).unwrap();
    std::fs::write(
        dir.join("wait.yaml"),
        echo(
            "sec.wait",
            "  approval: { required_when: \"true\", approvers: { teams: [leads] } }\n",
        ),
    )
    .unwrap();
    let catalog = dir.clone();
    let Some(s) = support::spawn_with(support::Db::Sqlite, move |c| {
        c.catalog = catalog;
        c.secrets.insert("api_token".into(), PROVIDER_SECRET.into());
        c.secrets.insert("pao_kek".into(), KEK.into());
        c.sealing.kek = Some("pao_kek".into());
    })
    .await
    else {
        return;
    };
    let (code, r) = s
        .post(
            "t-alice",
            "/requests",
            json!({"item_id": "sec.echo", "fields": {"password": FIELD_SECRET_1}}),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    s.wait_state("t-alice", &id, "completed").await;
    let (_, attempts) = s.get("t-alice", &format!("/requests/{id}")).await;
    assert_clean("the request's detail", &attempts.to_string());
    let (code, r) = s
        .post(
            "t-alice",
            "/requests",
            json!({"item_id": "sec.wait", "fields": {"password": FIELD_SECRET_2}}),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let waiting = r["id"].as_str().unwrap().to_string();
    s.wait_state("t-alice", &waiting, "awaiting_approval").await;
    let sealed = s.state.store.sealed(&waiting).await.unwrap();
    assert_eq!(
        sealed.values.len(),
        1,
        "the waiting request's secret is sealed"
    );
    let file = s
        .database_url
        .strip_prefix("sqlite://")
        .unwrap()
        .to_string();
    s.stop().await;
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(b) = std::fs::read(format!("{file}{suffix}")) {
            bytes.extend(b);
        }
    }
    assert!(bytes.len() > 4096, "read the database");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(&id), "the file holds the requests");
    assert_clean("the SQLite file", &text);
}

/// What the receiver of the crash test does with a call to `/slow`.
#[derive(Clone, Copy, PartialEq)]
enum Slow {
    /// Never answers (the worker calling it is killed meanwhile).
    Hang,
    /// Answers 400: a permanent failure.
    Fail,
    /// Answers 200.
    Ok,
}

/// Bodies posted to the crash test's receiver, by path, and what `/slow` does next.
#[derive(Clone)]
struct Calls {
    got: Arc<Mutex<Vec<(String, Value)>>>,
    slow: Arc<Mutex<Slow>>,
}

impl Calls {
    fn bodies(&self, path: &str) -> Vec<Value> {
        let got = self.got.lock().unwrap();
        got.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    async fn wait_for(&self, path: &str, n: usize) {
        for _ in 0..600 {
            if self.bodies(path).len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} was not called {n} times: {:?}", self.bodies(path));
    }
}

async fn crash_receiver() -> (String, Calls) {
    let calls = Calls {
        got: Arc::default(),
        slow: Arc::new(Mutex::new(Slow::Hang)),
    };
    let record = |path: &'static str| {
        axum::routing::post(
            move |axum::extract::State(c): axum::extract::State<Calls>,
                  axum::Json(body): axum::Json<Value>| async move {
                c.got.lock().unwrap().push((path.to_string(), body));
                let mode = *c.slow.lock().unwrap();
                if path != "/slow" || mode == Slow::Ok {
                    return (axum::http::StatusCode::OK, axum::Json(json!({"ok": true})));
                }
                if mode == Slow::Hang {
                    std::future::pending::<()>().await;
                }
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": "no"})),
                )
            },
        )
    };
    let app = axum::Router::new()
        .route("/hook", record("/hook"))
        .route("/undo", record("/undo"))
        .route("/slow", record("/slow"))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

/// `a` sends the secret field and is undone by a call that sends it again; `b` sends it to
/// `/slow`, which hangs, fails or answers as the test says.
fn crash_item(id: &str, receiver: &str, b_on_failure: &str) -> String {
    format!(
        r#"apiVersion: pao.dev/v2
kind: CatalogItem
metadata: {{ id: {id}, name: Crash test, description: Two actions that send a secret field., version: 1.0.0, category: security, owner: {{ team: platform }} }}
presentation:
  groups:
    - id: g
      title: G
      fields:
        - {{ id: password, type: secret, required: true }}
fulfillment:
  mode: automated
  actions:
    - id: a
      type: webhook
      config: {{ url: "{receiver}/hook", body: {{ password: "${{{{ secrets.password }}}}" }} }}
      rollback: {{ type: webhook, config: {{ url: "{receiver}/undo", body: {{ password: "${{{{ secrets.password }}}}" }} }} }}
    - id: b
      type: webhook
      config: {{ url: "{receiver}/slow", body: {{ password: "${{{{ secrets.password }}}}" }} }}
      retry: {{ max_attempts: 1 }}
      on_failure: {b_on_failure}
"#
    )
}

/// A worker process is killed (SIGKILL) while a request with a secret field runs; the
/// replica that resumes it after the lease runs out sends the real secret, and so does the
/// rollback it then runs. The same for a retry of a failed request: killed mid-run, resumed
/// elsewhere, it completes with the secret given to the retry and reuses the action that
/// had completed. Three `pao serve` processes on one PostgreSQL database, one of them
/// serving the API only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_resumed_after_a_crash_rolls_back_and_retries_with_the_real_secret() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(url) = support::database_url(support::Db::Postgres).await else {
        return;
    };
    let (recv, calls) = crash_receiver().await;
    let dir = std::env::temp_dir().join(format!("pao-sealed-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(
        catalog.join("undo.yaml"),
        crash_item("crash.undo", &recv, "rollback"),
    )
    .unwrap();
    std::fs::write(
        catalog.join("keep.yaml"),
        crash_item("crash.keep", &recv, "fail"),
    )
    .unwrap();
    let config = |name: &str, workers: i64| {
        let text = format!(
            r#"bind = "127.0.0.1:0"
database_url = "{url}"
database_pool = 4
catalog = "{catalog}"
workers = {workers}
lease_secs = 3
watch_catalog = false

[secrets]
pao_kek = "{KEK}"

[sealing]
kek = "pao_kek"

[[auth.tokens]]
id = "alice"
teams = ["payments"]
roles = ["developer"]
token_sha256 = "{alice}"
"#,
            catalog = catalog.display(),
            alice = pao_server::config::hash_token("t-alice"),
        );
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (api_only, runner) = (config("api.toml", 0), config("runner.toml", 2));
    let http = reqwest::Client::new();
    let mut transcript = String::new();
    let t = &mut transcript;
    let submit = async |t: &mut String, base: &str, path: String, body: Value| {
        let (status, r) = call(
            &http,
            reqwest::Method::POST,
            format!("{base}{path}"),
            "t-alice",
            Some(body),
            t,
        )
        .await;
        assert_eq!(status, 201, "{r}");
        r["id"].as_str().unwrap().to_string()
    };
    let password = |b: &Value| b["password"].as_str().unwrap_or_default().to_string();

    // A rollback after a crash and resume.
    let api = spawn(&api_only, &dir, &dir.join("api.log"));
    let first = spawn(&runner, &dir, &dir.join("first.log"));
    let undo = submit(
        t,
        &api.base,
        "/api/v1/requests".into(),
        json!({"item_id": "crash.undo", "fields": {"password": FIELD_SECRET_1}}),
    )
    .await;
    calls.wait_for("/slow", 1).await;
    drop(first); // SIGKILL while `b` waits on `/slow`
    let r = wait_state(&http, &api.base, &undo, "in_progress", t).await;
    assert_eq!(r["state"], "in_progress");
    *calls.slow.lock().unwrap() = Slow::Fail;
    let second = spawn(&runner, &dir, &dir.join("second.log"));
    wait_state(&http, &api.base, &undo, "failed", t).await;
    let slow = calls.bodies("/slow");
    assert_eq!(slow.len(), 2, "the resumed run called `b` again: {slow:?}");
    assert_eq!(password(&slow[1]), FIELD_SECRET_1, "after the crash");
    let undone = calls.bodies("/undo");
    assert_eq!(
        undone.iter().map(password).collect::<Vec<_>>(),
        vec![FIELD_SECRET_1],
        "the resumed run undid `a` with the real secret"
    );

    // A retry, killed mid-run and resumed elsewhere.
    *calls.slow.lock().unwrap() = Slow::Fail;
    let kept = submit(
        t,
        &api.base,
        "/api/v1/requests".into(),
        json!({"item_id": "crash.keep", "fields": {"password": FIELD_SECRET_2}}),
    )
    .await;
    wait_state(&http, &api.base, &kept, "failed", t).await;
    let hooks_before = calls.bodies("/hook").len();
    *calls.slow.lock().unwrap() = Slow::Hang;
    let slow_before = calls.bodies("/slow").len();
    let retry = submit(
        t,
        &api.base,
        format!("/api/v1/requests/{kept}/retry"),
        json!({"fields": {"password": FIELD_SECRET_1}}),
    )
    .await;
    calls.wait_for("/slow", slow_before + 1).await;
    drop(second);
    *calls.slow.lock().unwrap() = Slow::Ok;
    let third = spawn(&runner, &dir, &dir.join("third.log"));
    wait_state(&http, &api.base, &retry, "completed", t).await;
    let slow = calls.bodies("/slow");
    assert_eq!(
        slow[slow_before..].iter().map(password).collect::<Vec<_>>(),
        vec![FIELD_SECRET_1, FIELD_SECRET_1],
        "the retry sent its secret before and after the crash"
    );
    assert_eq!(
        calls.bodies("/hook").len(),
        hooks_before,
        "the retry reused `a`"
    );
    assert_eq!(calls.bodies("/undo").len(), 1, "nothing else was undone");

    // Nothing readable is left: the API's answers and the database.
    for id in [&undo, &kept, &retry] {
        for path in [
            format!("/api/v1/requests/{id}"),
            format!("/api/v1/requests/{id}/logs"),
        ] {
            call(
                &http,
                reqwest::Method::GET,
                format!("{}{path}", api.base),
                "t-alice",
                None,
                t,
            )
            .await;
        }
    }
    drop(third);
    drop(api);
    assert_clean("the API's answers", &transcript);
    for name in ["api", "first", "second", "third"] {
        let log = dir.join(format!("{name}.log"));
        let text = std::fs::read_to_string(&log).unwrap()
            + std::fs::read_to_string(log.with_extension("stderr"))
                .unwrap_or_default()
                .as_str();
        assert_clean(&format!("log {}", log.display()), &text);
    }
    let dump = database_text(&url).await;
    assert!(dump.contains(&retry), "the dump has the requests");
    assert_clean("the database", &dump);
}
