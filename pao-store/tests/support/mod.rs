//! Shared pieces of the process tests: fresh databases, the ledger HTTP server that records
//! idempotency keys, worker processes (`pao-test-worker`), submission, and the final checks.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pao_core::action::ActionRegistry;
use pao_core::authz::Principal;
use pao_core::engine::{Orchestrator, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::store::{RollbackStatus, Store};
use pao_store::SqlStore;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../../src/bin/pao-test-worker/fixture.rs"]
pub mod fixture;
pub mod instrumented;

static N: AtomicUsize = AtomicUsize::new(0);

/// A database for one test: a SQLite file in a fresh folder, or a fresh PostgreSQL database.
pub struct Db {
    /// The URL workers open.
    pub url: String,
    /// Scratch folder (SQLite file, stop file, logs, crash log).
    pub dir: PathBuf,
    /// Its name, for messages.
    pub kind: &'static str,
    pg: Option<(sqlx::AnyPool, String)>,
}

impl Db {
    /// A fresh SQLite database.
    pub fn sqlite(tag: &str) -> Db {
        let dir = scratch(tag);
        Db {
            url: format!("sqlite://{}/pao.db", dir.display()),
            dir,
            kind: "sqlite",
            pg: None,
        }
    }

    /// A fresh PostgreSQL database from `PAO_TEST_DATABASE_URL`, or `None` (skip) outside CI
    /// when the variable is not set.
    pub async fn postgres(tag: &str) -> Option<Db> {
        let Ok(base) = std::env::var("PAO_TEST_DATABASE_URL") else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PAO_TEST_DATABASE_URL is not set; CI requires the PostgreSQL tests to run");
            }
            eprintln!("skipping: PAO_TEST_DATABASE_URL is not set");
            return None;
        };
        let name = format!(
            "pao_p_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        sqlx::any::install_default_drivers();
        let admin = sqlx::pool::PoolOptions::<sqlx::Any>::new()
            .max_connections(2)
            .connect(&base)
            .await
            .expect("connect to PAO_TEST_DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        let url = match base.rfind('/') {
            Some(i) if i > base.find("://").map(|s| s + 2).unwrap_or(0) => {
                format!("{}/{name}", &base[..i])
            }
            _ => format!("{base}/{name}"),
        };
        Some(Db {
            url,
            dir: scratch(tag),
            kind: "postgres",
            pg: Some((admin, name)),
        })
    }

    /// The PostgreSQL database name.
    pub fn pg_name(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, n)| n.as_str())
    }

    /// A pool on the admin database (PostgreSQL only).
    pub fn admin(&self) -> Option<&sqlx::AnyPool> {
        self.pg.as_ref().map(|(a, _)| a)
    }

    /// Drops the PostgreSQL database and the scratch folder.
    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(admin)
            .await;
            admin.close().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pao-store-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// One call the ledger received.
#[derive(Debug, Clone)]
pub struct LedgerCall {
    pub key: String,
    pub request: String,
    pub action: String,
    pub op: String,
    /// When the call arrived (before any answer delay).
    pub at: Instant,
    /// The key had been applied before: a replay, answered from the ledger's memory.
    pub replay: bool,
}

/// The effect of one key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Effect {
    pub request: String,
    pub action: String,
    pub op: String,
}

#[derive(Default)]
struct LedgerState {
    calls: Vec<LedgerCall>,
    applied: HashMap<String, (u64, Effect)>,
}

/// A remote system that deduplicates by `Idempotency-Key`: the first call with a key applies
/// its effect, later ones are answered from memory. Refuses (422) bodies with `reject: true`.
pub struct Ledger {
    pub port: u16,
    state: Mutex<LedgerState>,
    delay: Duration,
}

impl Ledger {
    /// Listens on 127.0.0.1 (a free port) in the current runtime.
    pub async fn start() -> Arc<Ledger> {
        Ledger::start_with_delay(Duration::ZERO).await
    }

    /// A ledger that takes `delay` to answer each call (a slow remote system).
    pub async fn start_with_delay(delay: Duration) -> Arc<Ledger> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the ledger");
        let ledger = Arc::new(Ledger {
            port: listener.local_addr().expect("ledger address").port(),
            state: Mutex::default(),
            delay,
        });
        let l = ledger.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let l = l.clone();
                tokio::spawn(async move {
                    let _ = l.serve(conn).await;
                });
            }
        });
        ledger
    }

    async fn serve(&self, mut conn: tokio::net::TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
        let key = header("idempotency-key").unwrap_or_default();
        let arrived = Instant::now();
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let (status, answer) = self.handle(&key, &body, arrived);
        let reason = if status == 200 {
            "OK"
        } else {
            "Unprocessable Entity"
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
        conn.write_all(response.as_bytes()).await?;
        conn.shutdown().await
    }

    fn handle(&self, key: &str, body: &Value, arrived: Instant) -> (u16, String) {
        let field = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let effect = Effect {
            request: field("request"),
            action: field("action"),
            op: field("op"),
        };
        let mut s = self.state.lock().unwrap();
        let replay = s.applied.get(key).map(|(id, _)| *id);
        s.calls.push(LedgerCall {
            key: key.to_string(),
            request: effect.request.clone(),
            action: effect.action.clone(),
            op: effect.op.clone(),
            at: arrived,
            replay: replay.is_some(),
        });
        if let Some(id) = replay {
            return (200, json!({"effect": id, "replayed": true}).to_string());
        }
        if key.is_empty() {
            return (
                422,
                json!({"error": "Idempotency-Key is required"}).to_string(),
            );
        }
        if body.get("reject") == Some(&json!(true)) {
            return (422, json!({"error": "rejected on purpose"}).to_string());
        }
        let id = s.applied.len() as u64 + 1;
        s.applied.insert(key.to_string(), (id, effect));
        (200, json!({"effect": id}).to_string())
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<LedgerCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Applied effects by key.
    pub fn applied(&self) -> BTreeMap<String, Effect> {
        self.state
            .lock()
            .unwrap()
            .applied
            .iter()
            .map(|(k, (_, e))| (k.clone(), e.clone()))
            .collect()
    }
}

/// How a worker process is started.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub id: String,
    pub lease_ms: u64,
    pub loops: usize,
    pub pool: u32,
    /// `(PAO_CRASH_AT, PAO_CRASH_AFTER)`.
    pub crash: Option<(&'static str, u32)>,
    pub idle_exit_secs: Option<u64>,
}

/// A worker process that is killed when dropped, so a failing test leaves no worker behind.
pub struct Worker(pub Child);

impl std::ops::Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `pao-test-worker` on `db`, with its stderr in `<dir>/<id>.log`.
pub fn spawn_worker(db: &Db, ledger: &Ledger, spec: &WorkerSpec) -> Worker {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(db.dir.join(format!("{}.log", spec.id)))
        .expect("worker log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pao-test-worker"));
    cmd.args(["--url", &db.url])
        .args(["--ledger-port", &ledger.port.to_string()])
        .args(["--worker-id", &spec.id])
        .args(["--lease-ms", &spec.lease_ms.to_string()])
        .args(["--loops", &spec.loops.to_string()])
        .args(["--pool", &spec.pool.to_string()])
        .args(["--stop-file", &stop_file(db).display().to_string()])
        .env("PAO_CRASH_LOG", crash_log(db))
        .env_remove("PAO_CRASH_AT")
        .env_remove("PAO_CRASH_AFTER")
        .env_remove("PAO_CRASH_PROB")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    if let Some(secs) = spec.idle_exit_secs {
        cmd.args(["--idle-exit-secs", &secs.to_string()]);
    }
    if let Some((point, after)) = spec.crash {
        cmd.env("PAO_CRASH_AT", point)
            .env("PAO_CRASH_AFTER", after.to_string());
    }
    Worker(cmd.spawn().expect("start pao-test-worker"))
}

pub fn stop_file(db: &Db) -> PathBuf {
    db.dir.join("stop")
}

pub fn crash_log(db: &Db) -> PathBuf {
    db.dir.join("crashes.log")
}

/// Tells every worker to stop and waits for them (killing stragglers after `grace`).
pub fn stop_workers(
    db: &Db,
    children: &mut [Worker],
    grace: Duration,
) -> Vec<std::process::ExitStatus> {
    std::fs::write(stop_file(db), b"stop").expect("write the stop file");
    let until = Instant::now() + grace;
    let mut out = Vec::new();
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(s)) => {
                    out.push(s);
                    break;
                }
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = c.kill();
                    if let Ok(s) = c.wait() {
                        out.push(s);
                    }
                    break;
                }
            }
        }
    }
    out
}

/// The worker logs, for failure messages.
pub fn worker_logs(db: &Db) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(&db.dir) {
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            out.push_str(&format!("--- {}\n", f.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// What a test submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Single,
    TwoStep,
    TwoStepRejected,
}

/// Submits through an engine that has the workers' catalog.
pub struct Submitter {
    pub store: Arc<SqlStore>,
    pub engine: Arc<Orchestrator>,
    pub submitted: Mutex<Vec<(String, Kind)>>,
}

impl Submitter {
    pub async fn open(db: &Db, pool: u32) -> Submitter {
        let store = Arc::new(
            SqlStore::open_with(&db.url, pool)
                .await
                .expect("open the store"),
        );
        let mut registry = ActionRegistry::new();
        registry.register(Arc::new(fixture::LedgerAction {
            port: 1,
            crash: Arc::new(fixture::CrashPlan::none()),
        }));
        let catalog = fixture::ledger_catalog(&registry);
        let engine = Orchestrator::builder(catalog, store.clone())
            .actions(registry)
            .build();
        Submitter {
            store,
            engine,
            submitted: Mutex::default(),
        }
    }

    /// Submits `kinds` with `concurrency` submissions in flight; every one must be `Queued`.
    pub async fn submit(&self, kinds: &[Kind], concurrency: usize) {
        let who = Principal::new("dev1", &["payments"], &["developer"]);
        let next = AtomicUsize::new(0);
        let work = (0..concurrency.max(1)).map(|_| async {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(kind) = kinds.get(i) else { break };
                let (item, fields) = match kind {
                    Kind::Single => (fixture::SINGLE, json!({})),
                    Kind::TwoStep => (fixture::TWO_STEP, json!({"reject": false})),
                    Kind::TwoStepRejected => (fixture::TWO_STEP, json!({"reject": true})),
                };
                let r = self
                    .engine
                    .submit(&who, item, &fields, SubmitOptions::default())
                    .await
                    .expect("submit");
                assert_eq!(r.state, RequestState::Queued, "{r:?}");
                self.submitted.lock().unwrap().push((r.id, *kind));
            }
        });
        futures_join_all(work).await;
    }

    /// Requests that a worker still has to run.
    pub async fn live(&self) -> i64 {
        self.try_live().await.expect("count live requests")
    }

    /// Requests that a worker still has to run, or the database error.
    pub async fn try_live(&self) -> Result<i64, sqlx::Error> {
        sqlx::query(
            "SELECT COUNT(*) AS n FROM requests WHERE state NOT IN ('completed', 'failed', 'cancelled', 'rejected')",
        )
        .fetch_one(self.store.pool())
        .await?
        .try_get::<i64, _>("n")
    }

    pub fn submitted(&self) -> Vec<(String, Kind)> {
        self.submitted.lock().unwrap().clone()
    }
}

/// Runs futures concurrently on the current task (no `futures` dependency).
pub async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// The effects each kind of request must leave, keyed by idempotency key.
pub fn expected_effects(id: &str, kind: Kind) -> Vec<(String, Effect)> {
    let e = |action: &str, op: &str, suffix: &str| {
        (
            format!("pao-{id}-{action}{suffix}"),
            Effect {
                request: id.to_string(),
                action: action.to_string(),
                op: op.to_string(),
            },
        )
    };
    match kind {
        Kind::Single => vec![e("post", "do", "")],
        Kind::TwoStep => vec![e("create", "do", ""), e("configure", "do", "")],
        Kind::TwoStepRejected => vec![e("create", "do", ""), e("create", "undo", "-rollback")],
    }
}

/// What the final check found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub requests: usize,
    pub completed: usize,
    pub failed_as_scripted: usize,
    /// Requests not in their scripted end state (ids and what they are).
    pub lost: Vec<String>,
    /// Effects applied by the ledger.
    pub effects: usize,
    /// Logical effects (request, action, op) applied under more than one key.
    pub duplicate_effects: usize,
    /// Expected effects the ledger never applied.
    pub missing_effects: Vec<String>,
    /// Effects nobody expected.
    pub unexpected_effects: Vec<String>,
    /// Calls answered from the ledger's memory (at-least-once execution at work).
    pub duplicate_calls: usize,
    pub calls: usize,
}

/// Checks every submitted request against its script and the ledger.
pub async fn check(submitter: &Submitter, ledger: &Ledger) -> Outcome {
    let mut out = Outcome::default();
    let applied = ledger.applied();
    let mut expected: BTreeMap<String, Effect> = BTreeMap::new();
    for (id, kind) in submitter.submitted() {
        out.requests += 1;
        let r = submitter
            .store
            .get(&id)
            .await
            .expect("read a request")
            .expect("the request exists");
        let ok = match kind {
            Kind::Single | Kind::TwoStep => r.state == RequestState::Completed,
            Kind::TwoStepRejected => {
                r.state == RequestState::Failed && r.rollback == RollbackStatus::Complete
            }
        };
        if ok && r.state == RequestState::Completed {
            out.completed += 1;
        } else if ok {
            out.failed_as_scripted += 1;
        } else {
            out.lost.push(format!(
                "{id} ({kind:?}) is {} rollback {:?} error {:?}",
                r.state, r.rollback, r.error
            ));
        }
        for (key, effect) in expected_effects(&id, kind) {
            expected.insert(key, effect);
        }
    }
    let mut by_effect: BTreeMap<&Effect, usize> = BTreeMap::new();
    for e in applied.values() {
        *by_effect.entry(e).or_default() += 1;
    }
    out.effects = applied.len();
    out.duplicate_effects = by_effect.values().map(|n| n.saturating_sub(1)).sum();
    for (key, effect) in &expected {
        if applied.get(key) != Some(effect) {
            out.missing_effects.push(key.clone());
        }
    }
    for key in applied.keys() {
        if !expected.contains_key(key) {
            out.unexpected_effects.push(key.clone());
        }
    }
    let calls = ledger.calls();
    out.calls = calls.len();
    out.duplicate_calls = calls.iter().filter(|c| c.replay).count();
    out
}

impl Outcome {
    /// Panics, with the worker logs, unless nothing was lost or doubled.
    pub fn assert_exact(&self, db: &Db) {
        let problems = !self.lost.is_empty()
            || self.duplicate_effects != 0
            || !self.missing_effects.is_empty()
            || !self.unexpected_effects.is_empty();
        assert!(
            !problems,
            "{}: {} lost requests {:?}, {} duplicate effects, missing effects {:?}, unexpected effects {:?}\n{}",
            db.kind,
            self.lost.len(),
            self.lost.iter().take(10).collect::<Vec<_>>(),
            self.duplicate_effects,
            self.missing_effects.iter().take(10).collect::<Vec<_>>(),
            self.unexpected_effects.iter().take(10).collect::<Vec<_>>(),
            worker_logs(db)
        );
    }
}

/// A line of the crash log.
#[derive(Debug, Clone)]
pub struct Crash {
    pub point: String,
    pub request: String,
    pub action: String,
    pub attempt: i64,
    pub at_ms: i64,
}

pub fn read_crashes(path: &Path) -> Vec<Crash> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            Some(Crash {
                point: p.first()?.to_string(),
                request: p.get(1)?.to_string(),
                action: p.get(2)?.to_string(),
                attempt: p.get(3)?.parse().ok()?,
                at_ms: p.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// Milliseconds from the crash to the next attempt any worker started on the same request.
pub async fn resume_ms(store: &SqlStore, crash: &Crash) -> Option<i64> {
    let rollback = i64::from(crash.point == "during_rollback");
    let rows = sqlx::query(
        "SELECT action_id, rollback, attempt, started_at FROM attempts WHERE request_id = $1",
    )
    .bind(crash.request.clone())
    .fetch_all(store.pool())
    .await
    .expect("read attempts");
    rows.iter()
        .filter_map(|r| {
            let action: String = r.try_get("action_id").ok()?;
            let rb: i64 = r.try_get("rollback").ok()?;
            let attempt: i64 = r.try_get("attempt").ok()?;
            let started: i64 = r.try_get("started_at").ok()?;
            let same = action == crash.action && rb == rollback && attempt == crash.attempt;
            (!same && started >= crash.at_ms).then_some(started - crash.at_ms)
        })
        .min()
}

/// `p`-th percentile (0..=100) of a sorted slice.
pub fn percentile<T: Copy>(sorted: &[T], p: usize) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}
