//! Concurrency test: several worker processes (`pao-test-worker`) on one database, many
//! single-action requests submitted while they run. Every request must complete exactly once:
//! the ledger (which deduplicates by idempotency key) holds one effect per request, under the
//! request's own key, and no logical effect under two keys. Duplicate *calls* (which
//! at-least-once execution allows) are counted and printed.
//!
//! 4 workers on PostgreSQL with 5,000 requests (about 20 s on 2 cores), 2 workers on SQLite
//! with 1,000.

mod support;

use std::time::{Duration, Instant};

use support::*;

async fn concurrency_run(db: Db, workers: usize, requests: usize) {
    let started = Instant::now();
    let ledger = Ledger::start().await;
    let submitter = Submitter::open(&db, 4).await;
    let mut children: Vec<Worker> = (0..workers)
        .map(|i| {
            spawn_worker(
                &db,
                &ledger,
                &WorkerSpec {
                    id: format!("c{i}"),
                    lease_ms: 5000,
                    loops: 1,
                    pool: 3,
                    crash: None,
                    idle_exit_secs: None,
                },
            )
        })
        .collect();
    submitter.submit(&vec![Kind::Single; requests], 4).await;
    let submitted_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30 + requests as u64 / 10);
    while submitter.live().await > 0 {
        for c in children.iter_mut() {
            assert!(
                c.try_wait().expect("poll a worker").is_none(),
                "{}: a worker exited while work remained\n{}",
                db.kind,
                worker_logs(&db)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{}: {} requests still live after {:?}\n{}",
            db.kind,
            submitter.live().await,
            started.elapsed(),
            worker_logs(&db)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    for s in stop_workers(&db, &mut children, Duration::from_secs(10)) {
        assert!(s.success(), "{}: a worker failed: {s}", db.kind);
    }
    let outcome = check(&submitter, &ledger).await;
    println!(
        "concurrency test on {}: {workers} workers, {} requests ({} completed) in {elapsed:.1?} \
         (submitted in {submitted_in:.1?}); {} distinct keys applied, {} duplicate effects, {} ledger calls of which {} duplicate calls",
        db.kind,
        outcome.requests,
        outcome.completed,
        outcome.effects,
        outcome.duplicate_effects,
        outcome.calls,
        outcome.duplicate_calls,
    );
    outcome.assert_exact(&db);
    assert_eq!(outcome.requests, requests);
    assert_eq!(outcome.completed, requests, "every request completed");
    assert_eq!(outcome.effects, requests, "ledger distinct keys = requests");
    submitter.store.pool().close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_5000_requests_on_postgres() {
    let Some(db) = Db::postgres("conc5k").await else {
        return;
    };
    concurrency_run(db, 4, 5000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_1000_requests_on_sqlite() {
    concurrency_run(Db::sqlite("conc"), 2, 1000).await;
}
