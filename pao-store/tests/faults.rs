//! Fault test: while worker processes run on PostgreSQL, every connection to the test database
//! is killed again and again (`pg_terminate_backend`). Workers must recover without exiting,
//! and nothing may be lost or doubled: every request ends as scripted, the ledger holds exactly
//! the expected effects. The ledger answers slowly (300 ms) so that kills land while actions
//! run and while leases are being renewed.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Row;
use support::*;

const REQUESTS: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_lose_nothing_on_postgres() {
    let Some(db) = Db::postgres("fault").await else {
        return;
    };
    let started = Instant::now();
    let ledger = Ledger::start_with_delay(Duration::from_millis(300)).await;
    let submitter = Submitter::open(&db, 4).await;
    let kinds: Vec<Kind> = (0..REQUESTS)
        .map(|i| match i % 3 {
            0 => Kind::Single,
            1 => Kind::TwoStep,
            _ => Kind::TwoStepRejected,
        })
        .collect();
    submitter.submit(&kinds, 4).await;

    let mut children: Vec<Worker> = (0..3)
        .map(|i| {
            spawn_worker(
                &db,
                &ledger,
                &WorkerSpec {
                    id: format!("f{i}"),
                    lease_ms: 2000,
                    loops: 4,
                    pool: 4,
                    crash: None,
                    idle_exit_secs: None,
                },
            )
        })
        .collect();

    // The killer: every 250 ms, terminate every backend on the test database.
    let stop = Arc::new(AtomicBool::new(false));
    let terminated = Arc::new(AtomicU64::new(0));
    let rounds = Arc::new(AtomicU64::new(0));
    let killer = {
        let admin = db.admin().expect("postgres admin pool").clone();
        let name = db.pg_name().expect("database name").to_string();
        let (stop, terminated, rounds) = (stop.clone(), terminated.clone(), rounds.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let r = sqlx::query(
                    "SELECT COUNT(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()) t",
                )
                .bind(name.clone())
                .fetch_one(&admin)
                .await;
                if let Ok(row) = r {
                    terminated.fetch_add(
                        row.try_get::<i64, _>("n").unwrap_or(0) as u64,
                        Ordering::SeqCst,
                    );
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for c in children.iter_mut() {
            assert!(
                c.try_wait().expect("poll a worker").is_none(),
                "a worker exited after its connections were killed\n{}",
                worker_logs(&db)
            );
        }
        // The test's own connections are killed too: an error here means "ask again".
        if let Ok(0) = submitter.try_live().await
            && rounds.load(Ordering::SeqCst) >= 8
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests still live after {:?}\n{}",
            started.elapsed(),
            worker_logs(&db)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let _ = killer.await;

    // The LISTEN connections were killed too. Every store (3 workers and the submitter) must
    // listen again (the listener retries after 1 s), so new work wakes workers at once.
    let admin = db.admin().expect("postgres admin pool");
    let name = db.pg_name().expect("database name").to_string();
    let listening = || async {
        sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'listen%'",
        )
        .bind(name.clone())
        .fetch_one(admin)
        .await
        .expect("read pg_stat_activity")
        .try_get::<i64, _>("n")
        .expect("n")
    };
    let since = Instant::now();
    while listening().await < 4 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "only {} of 4 stores listen again after their connections were killed",
            listening().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut wake = Vec::new();
    for _ in 0..5 {
        let before = submitter.submitted().len();
        submitter.submit(&[Kind::Single], 1).await;
        let queued = Instant::now();
        let id = submitter.submitted()[before].0.clone();
        let call = loop {
            if let Some(c) = ledger.calls().into_iter().find(|c| c.request == id) {
                break c;
            }
            assert!(
                queued.elapsed() < Duration::from_secs(10),
                "request {id} never ran"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        wake.push(call.at.saturating_duration_since(queued));
        while submitter.try_live().await.map_or(true, |n| n > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wake.sort_unstable();
    println!(
        "fault test on postgres: listeners back after {:.1?}; then queued -> action call: {wake:?}",
        since.elapsed()
    );

    for s in stop_workers(&db, &mut children, Duration::from_secs(10)) {
        assert!(s.success(), "a worker failed: {s}\n{}", worker_logs(&db));
    }
    let outcome = check(&submitter, &ledger).await;
    println!(
        "fault test on postgres: {} requests ({} completed, {} failed as scripted) in {:.1?}; {} kill rounds terminated {} connections; \
         {} effects, {} duplicate effects, {} ledger calls of which {} duplicate calls",
        outcome.requests,
        outcome.completed,
        outcome.failed_as_scripted,
        started.elapsed(),
        rounds.load(Ordering::SeqCst),
        terminated.load(Ordering::SeqCst),
        outcome.effects,
        outcome.duplicate_effects,
        outcome.calls,
        outcome.duplicate_calls,
    );
    assert!(
        terminated.load(Ordering::SeqCst) > 0,
        "the killer terminated no connection: the test proved nothing"
    );
    outcome.assert_exact(&db);
    submitter.store.pool().close().await;
    db.cleanup().await;
}

/// A heartbeat that fails for a moment (the connection was dropped mid-query) is no lost lease:
/// the worker must renew on its next beat and finish the request, not cancel it.
async fn transient_heartbeat_failure(db: Db) {
    use pao_core::action::ActionRegistry;
    use pao_core::authz::Principal;
    use pao_core::engine::{EngineConfig, Orchestrator, SubmitOptions};
    use pao_core::lifecycle::RequestState;
    use pao_core::store::Store;
    use support::instrumented::instrumented;

    let ledger = Ledger::start_with_delay(Duration::from_millis(600)).await;
    let store = Arc::new(instrumented(
        pao_store::SqlStore::open(&db.url).await.expect("open"),
    ));
    store.observer.fail_heartbeats.store(1, Ordering::SeqCst);
    let mut registry = ActionRegistry::new();
    registry.register(Arc::new(fixture::LedgerAction {
        port: ledger.port,
        crash: Arc::new(fixture::CrashPlan::none()),
    }));
    let catalog = fixture::ledger_catalog(&registry);
    let engine = Orchestrator::builder(catalog, store.clone())
        .actions(registry)
        .config(EngineConfig {
            lease: Duration::from_millis(300),
            ..EngineConfig::default()
        })
        .build();
    let who = Principal::new("dev1", &["payments"], &["developer"]);
    let r = engine
        .submit(
            &who,
            fixture::SINGLE,
            &serde_json::json!({}),
            SubmitOptions::default(),
        )
        .await
        .expect("submit");
    assert_eq!(engine.run_until_idle("w1").await.expect("run"), 1);
    let r = store.get(&r.id).await.expect("get").expect("exists");
    assert_eq!(
        r.state,
        RequestState::Completed,
        "{}: a failed heartbeat cancelled the request: {r:?}",
        db.kind
    );
    assert!(
        store.observer.heartbeats.load(Ordering::SeqCst) >= 2,
        "the action outlived several heartbeats"
    );
    assert_eq!(ledger.applied().len(), 1);
    store.inner.pool().close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_heartbeat_failure_on_sqlite() {
    transient_heartbeat_failure(Db::sqlite("hb")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_heartbeat_failure_on_postgres() {
    let Some(db) = Db::postgres("hb").await else {
        return;
    };
    transient_heartbeat_failure(db).await;
}

/// Neither the pool nor the worker path's connections ping a connection that answered moments
/// ago (that round trip was a third of a busy worker's), but both ping one that sat idle: a
/// connection the server closed while it rested is replaced before a statement runs on it.
/// Here every backend of the database is terminated while the store is idle; the next reads
/// and claims must succeed, and the connections they ran on must be new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_while_idle_are_replaced_on_postgres() {
    use pao_core::store::{RequestFilter, Store};

    let Some(db) = Db::postgres("idle").await else {
        return;
    };
    let store = pao_store::SqlStore::open_with(&db.url, 2)
        .await
        .expect("open");
    let backend = |store: &pao_store::SqlStore| {
        let pool = store.pool().clone();
        async move {
            sqlx::query("SELECT pg_backend_pid() AS pid")
                .fetch_one(&pool)
                .await
                .map(|r| r.try_get::<i32, _>("pid").expect("pid"))
        }
    };
    let before = backend(&store).await.expect("a first statement");
    // A claim runs on the worker path's own connections (no ping per statement): open one.
    let claim = || store.claim("w1", Duration::from_secs(30), chrono::Utc::now());
    assert!(claim().await.expect("a first claim").is_none());
    let admin = db.admin().expect("postgres admin pool");
    let killed: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()) t",
    )
    .bind(db.pg_name().expect("name").to_string())
    .fetch_one(admin)
    .await
    .expect("terminate")
    .try_get("n")
    .expect("n");
    assert!(killed >= 1, "the store's connections were terminated");
    // Idle past the store's ping threshold (100 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..4 {
        store
            .list(&RequestFilter::default())
            .await
            .unwrap_or_else(|e| panic!("call {round} after the kill failed: {e}"));
        claim()
            .await
            .unwrap_or_else(|e| panic!("claim {round} after the kill failed: {e}"));
    }
    let after = backend(&store).await.expect("a statement after the kill");
    assert_ne!(before, after, "a new connection replaced the killed one");
    store.close().await;
    db.cleanup().await;
}
