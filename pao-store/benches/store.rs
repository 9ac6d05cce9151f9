//! Store throughput and latency on SQLite and PostgreSQL, through the real engine:
//!
//! - submissions per second (`Orchestrator::submit`: store, audit, admission to `Queued`);
//! - no-op action steps per second: worker loops (`Orchestrator::run_worker`) drain the queued
//!   requests of a one-action item and of a ten-action item (a step is one action attempt,
//!   journaled start and finish, with its events);
//! - claim latency p50/p95 (every claim the workers made while draining: alone, or with the
//!   last batch of the run before, `Store::apply_then_claim`, timed whole);
//! - PostgreSQL only: submit → first action start at 1 request/s, the worker on its own
//!   connection pool and listener, so it is woken by LISTEN/NOTIFY and not in-process.
//!
//! ```text
//! PAO_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench -p pao-store --bench store -- [--only sqlite|postgres] [--requests 2000] \
//!     [--workers 4,16] [--submitters 8] [--latency-secs 20]
//! ```
//!
//! Steps are measured once per worker-loop count in `--workers` (default 4 and 16: on
//! PostgreSQL a commit waits for the WAL flush, so more loops in flight share each flush).
//!
//! ```text
//! ```
//!
//! `PAO_BENCH_SQLITE_DIR` puts the SQLite file elsewhere (a tmpfs shows the cost without
//! fsync); `--pg-async-commit` runs PostgreSQL with `synchronous_commit = off` on the bench
//! database, for the same diagnosis. Neither is how PAO runs.
//!
//! Without `PAO_TEST_DATABASE_URL` (or `PAO_BENCH_DATABASE_URL`) PostgreSQL is skipped.
//! Each run uses a fresh SQLite file and a fresh PostgreSQL database, dropped afterwards.

#[path = "../src/bin/pao-test-worker/fixture.rs"]
mod fixture;
#[path = "../tests/support/instrumented.rs"]
mod instrumented;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use instrumented::{InstrumentedStore, instrumented};
use pao_core::action::ActionRegistry;
use pao_core::authz::Principal;
use pao_core::engine::{EngineConfig, Orchestrator, SubmitOptions};
use pao_store::SqlStore;
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Opts {
    only: Option<String>,
    requests: usize,
    /// Worker loops to drain with, one run each.
    workers: Vec<usize>,
    submitters: usize,
    latency_secs: u64,
    pg_async_commit: bool,
    pool: Option<u32>,
}

fn opts() -> Opts {
    let mut o = Opts {
        only: None,
        requests: 2000,
        workers: vec![4, 16],
        submitters: 8,
        latency_secs: 20,
        pg_async_commit: false,
        pool: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        if args[i] == "--pg-async-commit" {
            o.pg_async_commit = true;
            i += 1;
            continue;
        }
        match args[i].as_str() {
            "--only" => o.only = Some(v),
            "--requests" => o.requests = v.parse().unwrap_or(o.requests),
            "--pool" => o.pool = v.parse().ok(),
            "--workers" => {
                o.workers = v.split(',').filter_map(|w| w.parse().ok()).collect();
            }
            "--submitters" => o.submitters = v.parse().unwrap_or(o.submitters),
            "--latency-secs" => o.latency_secs = v.parse().unwrap_or(o.latency_secs),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

struct Backend {
    name: &'static str,
    url: String,
    cleanup: Option<(sqlx::AnyPool, String)>,
    dir: Option<std::path::PathBuf>,
}

async fn sqlite_backend() -> Backend {
    let parent = std::env::var_os("PAO_BENCH_SQLITE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = parent.join(format!("pao-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench folder");
    Backend {
        name: "sqlite",
        url: format!("sqlite://{}/bench.db", dir.display()),
        cleanup: None,
        dir: Some(dir),
    }
}

async fn postgres_backend(tag: &str, async_commit: bool) -> Option<Backend> {
    let base = std::env::var("PAO_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("PAO_TEST_DATABASE_URL"))
        .ok()?;
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base).await.expect("connect");
    let name = format!("pao_bench_{tag}_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .expect("drop");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    if async_commit {
        // Diagnosis only: commits stop waiting for the WAL flush, which shows how much of the
        // time is fsync. Never what PAO runs with.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        )))
        .execute(&admin)
        .await
        .expect("alter database");
    }
    let i = base.rfind('/').expect("a database URL has a path");
    Some(Backend {
        name: "postgres",
        url: format!("{}/{name}", &base[..i]),
        cleanup: Some((admin, name)),
        dir: None,
    })
}

impl Backend {
    async fn drop_it(self) {
        if let Some((admin, name)) = self.cleanup {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
        }
        if let Some(d) = self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

struct Engine {
    engine: Arc<Orchestrator>,
    store: Arc<InstrumentedStore<SqlStore>>,
    noop: Arc<fixture::NoopAction>,
}

async fn engine(url: &str, pool: u32, lease: Duration) -> Engine {
    let store = Arc::new(instrumented(
        SqlStore::open_with(url, pool).await.expect("open"),
    ));
    let noop = Arc::new(fixture::NoopAction::default());
    let mut registry = ActionRegistry::new();
    registry.register(noop.clone());
    let catalog = fixture::noop_catalog(&registry);
    let engine = Orchestrator::builder(catalog, store.clone())
        .actions(registry)
        .config(EngineConfig {
            lease,
            ..EngineConfig::default()
        })
        .build();
    Engine {
        engine,
        store,
        noop,
    }
}

async fn submit_many(e: &Engine, item: &str, n: usize, concurrency: usize) -> Duration {
    let who = Principal::new("bench", &["platform"], &["developer"]);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (engine, next, who, item) = (
            e.engine.clone(),
            next.clone(),
            who.clone(),
            item.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < n {
                engine
                    .submit(&who, &item, &json!({}), SubmitOptions::default())
                    .await
                    .expect("submit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("submitter");
    }
    t.elapsed()
}

/// Whether any request is still runnable (queued, or in progress under a worker). Polled every
/// 20 ms while workers drain, so it must cost next to nothing: the claim's own walk of the
/// partial index `requests_runnable`, first row only. (A `COUNT(*)` of live requests read the
/// whole growing table, 6 ms a call and a sixth of PostgreSQL's CPU during a drain.)
async fn any_runnable(store: &SqlStore) -> bool {
    sqlx::query(
        "SELECT id FROM requests WHERE state IN ('queued', 'in_progress', 'post_fulfillment') \
         AND waiting_for IS NULL ORDER BY priority DESC, created_at, id LIMIT 1",
    )
    .fetch_optional(store.pool())
    .await
    .expect("probe")
    .is_some()
}

/// Runs `workers` loops until nothing is live; returns (elapsed, steps).
async fn drain(e: &Engine, workers: usize) -> (Duration, u64) {
    let before = e.noop.calls.load(Ordering::SeqCst);
    let shutdown = CancellationToken::new();
    let t = Instant::now();
    let loops: Vec<_> = (0..workers)
        .map(|i| {
            tokio::spawn(
                e.engine
                    .clone()
                    .run_worker(format!("bench-{i}"), shutdown.clone()),
            )
        })
        .collect();
    while any_runnable(&e.store.inner).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t.elapsed();
    shutdown.cancel();
    for l in loops {
        let _ = l.await;
    }
    (elapsed, e.noop.calls.load(Ordering::SeqCst) - before)
}

async fn throughput(b: &Backend, o: &Opts) {
    let most = o.workers.iter().copied().max().unwrap_or(4);
    let pool = o
        .pool
        .unwrap_or((most.max(o.submitters) as u32 + 2).min(30));
    let e = engine(&b.url, pool, Duration::from_secs(30)).await;
    // Submissions.
    let n = o.requests;
    let took = submit_many(&e, fixture::NOOP_1, n, o.submitters).await;
    println!(
        "{:<8} submissions: {n} in {:.2}s = {:.0}/s ({} concurrent submitters)",
        b.name,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        o.submitters
    );
    for (round, &workers) in o.workers.iter().enumerate() {
        if round > 0 {
            submit_many(&e, fixture::NOOP_1, n, o.submitters).await;
        }
        e.store.observer.take_claims();
        e.store.observer.take_batch_claims();
        // One-action requests.
        let (took, steps) = drain(&e, workers).await;
        let claims = e.store.observer.take_claims();
        let batch_claims = e.store.observer.take_batch_claims();
        println!(
            "{:<8} steps, 1-action item: {steps} in {:.2}s = {:.0} steps/s ({workers} worker loops)",
            b.name,
            took.as_secs_f64(),
            steps as f64 / took.as_secs_f64(),
        );
        report_claims(b.name, &claims, &batch_claims);
        // Ten-action requests.
        let m = (n / 10).max(1);
        submit_many(&e, fixture::NOOP_10, m, o.submitters).await;
        e.store.observer.take_claims();
        e.store.observer.take_batch_claims();
        let (took, steps) = drain(&e, workers).await;
        let claims = e.store.observer.take_claims();
        let batch_claims = e.store.observer.take_batch_claims();
        println!(
            "{:<8} steps, 10-action item: {steps} in {:.2}s = {:.0} steps/s ({workers} worker loops)",
            b.name,
            took.as_secs_f64(),
            steps as f64 / took.as_secs_f64(),
        );
        report_claims(b.name, &claims, &batch_claims);
    }
    e.store.inner.pool().close().await;
}

/// Claim latency: every claim that found work, whether made alone (`claim`) or with a run's
/// last batch (`apply_then_claim`, timed whole: the batch's time counts as the claim's), then
/// the two kinds apart, and all standalone claims including those that found nothing.
fn report_claims(name: &str, claims: &[(Duration, bool)], with_batch: &[(Duration, bool)]) {
    let found = |v: &[(Duration, bool)]| -> Vec<Duration> {
        v.iter().filter(|c| c.1).map(|c| c.0).collect()
    };
    let mut alone = found(claims);
    let mut batched = found(with_batch);
    let mut every: Vec<Duration> = alone.iter().chain(&batched).copied().collect();
    let mut all: Vec<Duration> = claims.iter().map(|c| c.0).collect();
    for v in [&mut alone, &mut batched, &mut every, &mut all] {
        v.sort_unstable();
    }
    let max = |v: &[Duration]| {
        v.last()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "{:<8}   claim latency (claims that found work, n={}): p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms; \
         alone (n={}): p50 {:.2} ms, p95 {:.2} ms; with a run's last batch (n={}): p50 {:.2} ms, p95 {:.2} ms; \
         all claims alone, found or not (n={}): p50 {:.2} ms, p95 {:.2} ms",
        name,
        every.len(),
        pct(&every, 50),
        pct(&every, 95),
        max(&every),
        alone.len(),
        pct(&alone, 50),
        pct(&alone, 95),
        batched.len(),
        pct(&batched, 50),
        pct(&batched, 95),
        all.len(),
        pct(&all, 50),
        pct(&all, 95),
    );
}

/// Submit → first action start at 1 request/s: the submitter and the worker have separate
/// stores (pools and listeners), so only LISTEN/NOTIFY (or the 1 s poll) wakes the worker.
async fn wake_latency(b: &Backend, secs: u64) {
    let worker = engine(&b.url, 4, Duration::from_secs(30)).await;
    let submitter = engine(&b.url, 4, Duration::from_secs(30)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    *worker.noop.started.lock().unwrap() = Some(tx);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        worker
            .engine
            .clone()
            .run_worker("wake".into(), shutdown.clone()),
    );
    // Let the worker settle into waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let who = Principal::new("bench", &["platform"], &["developer"]);
    let mut from_call = Vec::new();
    let mut from_queued = Vec::new();
    for _ in 0..secs {
        let tick = Instant::now();
        let t0 = Instant::now();
        let r = submitter
            .engine
            .submit(&who, fixture::NOOP_1, &json!({}), SubmitOptions::default())
            .await
            .expect("submit");
        let t1 = Instant::now();
        let (id, started) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the action starts within 5 s")
            .expect("channel");
        assert_eq!(id, r.id);
        from_call.push(started - t0);
        from_queued.push(started - t1);
        let rest = Duration::from_secs(1).saturating_sub(tick.elapsed());
        tokio::time::sleep(rest).await;
    }
    shutdown.cancel();
    let _ = run.await;
    from_call.sort_unstable();
    from_queued.sort_unstable();
    println!(
        "{:<8} submit -> first action start at 1 request/s, n={}: from the submit call p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; \
         from submit returned (request queued) p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        b.name,
        from_call.len(),
        pct(&from_call, 50),
        pct(&from_call, 90),
        from_call
            .last()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN),
        pct(&from_queued, 50),
        pct(&from_queued, 90),
        from_queued
            .last()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN),
    );
    worker.store.inner.pool().close().await;
    submitter.store.inner.pool().close().await;
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if o.only.as_deref().is_none_or(|x| x == "sqlite") {
            let b = sqlite_backend().await;
            throughput(&b, &o).await;
            b.drop_it().await;
        }
        if o.only.as_deref().is_none_or(|x| x == "postgres") {
            match postgres_backend("tp", o.pg_async_commit).await {
                Some(b) => {
                    throughput(&b, &o).await;
                    b.drop_it().await;
                }
                None => println!("postgres skipped: set PAO_TEST_DATABASE_URL"),
            }
            if let Some(b) = postgres_backend("wake", o.pg_async_commit).await {
                wake_latency(&b, o.latency_secs).await;
                b.drop_it().await;
            }
        }
    });
}
