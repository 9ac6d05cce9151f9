//! Crash test: worker processes (`pao-test-worker`) SIGKILL themselves at injected points —
//! before an action's call, after the call but before its result is journaled, and during a
//! rollback — and are restarted, until every request has ended. One iteration is one injected
//! crash followed by the resumption of the request it interrupted.
//!
//! Checked against a ledger HTTP server that deduplicates by idempotency key: no request is
//! lost (each ends `Completed`, or `Failed` with a complete rollback where the script rejects
//! it), no effect is applied twice or under two keys, every expected effect is there, and each
//! interrupted request resumes within lease + poll interval (measured, printed).
//!
//! 50 iterations per database in the normal run; `cargo test -p pao-store --test crash --
//! --ignored` runs 200. PostgreSQL needs `PAO_TEST_DATABASE_URL` (see `conformance.rs`).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::*;

const LEASE_MS: u64 = 2000;
/// How often an idle worker polls (`Orchestrator::run_worker` waits at most 1 s for work).
const POLL_MS: u64 = 1000;
/// Scheduling slack on a loaded 2-core machine: process start-up is not in the bound (other
/// workers are running), but claim, journal reads and a busy CPU are.
const SLACK_MS: u64 = 500;
const WORKERS: usize = 3;

fn batch() -> Vec<Kind> {
    let mut kinds = Vec::new();
    for _ in 0..4 {
        kinds.extend([
            Kind::Single,
            Kind::TwoStepRejected,
            Kind::TwoStep,
            Kind::TwoStepRejected,
        ]);
    }
    kinds
}

async fn crash_run(db: Db, iterations: usize) {
    let started = Instant::now();
    let ledger = Ledger::start().await;
    let submitter = Submitter::open(&db, 4).await;
    submitter.submit(&batch(), 4).await;
    let mut slots: Vec<Option<Worker>> = (0..WORKERS).map(|_| None).collect();
    let mut spawned = 0usize;
    let mut armed: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut killed = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60 + iterations as u64);
    loop {
        let crashes = read_crashes(&crash_log(&db));
        let mut by_point: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &crashes {
            *by_point.entry(c.point.as_str()).or_default() += 1;
        }
        for slot in slots.iter_mut() {
            if let Some(child) = slot {
                match child.try_wait().expect("poll a worker") {
                    None => continue,
                    Some(status) => {
                        use std::os::unix::process::ExitStatusExt;
                        assert_eq!(
                            status.signal(),
                            Some(9),
                            "{}: a worker ended without being killed: {status}\n{}",
                            db.kind,
                            worker_logs(&db)
                        );
                        killed += 1;
                    }
                }
            }
            // Arm the next worker for the point with the fewest crashes so far, until enough.
            let crash = (crashes.len() < iterations).then(|| {
                let point = fixture::CrashPoint::ALL
                    .iter()
                    .map(|p| p.as_str())
                    .min_by_key(|p| {
                        by_point.get(p).copied().unwrap_or(0) * 4
                            + armed.get(p).copied().unwrap_or(0)
                    })
                    .unwrap_or("before_call");
                *armed.entry(point).or_default() += 1;
                (point, 1 + (spawned % 2) as u32)
            });
            spawned += 1;
            *slot = Some(spawn_worker(
                &db,
                &ledger,
                &WorkerSpec {
                    id: format!("w{spawned}"),
                    lease_ms: LEASE_MS,
                    loops: 1,
                    pool: 3,
                    crash,
                    idle_exit_secs: None,
                },
            ));
        }
        if submitter.live().await == 0 {
            if crashes.len() >= iterations {
                break;
            }
            // Out of work before enough crashes: more requests (rollbacks included).
            submitter.submit(&batch(), 4).await;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not done after {:?}: {} crashes, {} live requests\n{}",
            db.kind,
            started.elapsed(),
            crashes.len(),
            submitter.live().await,
            worker_logs(&db)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut children: Vec<Worker> = slots.into_iter().flatten().collect();
    let statuses = stop_workers(&db, &mut children, Duration::from_secs(10));
    // A worker that was armed may have crashed in its last moments: that is fine.
    for s in &statuses {
        use std::os::unix::process::ExitStatusExt;
        if s.signal() == Some(9) {
            killed += 1;
        } else {
            assert!(s.success(), "{}: a worker failed: {s}", db.kind);
        }
    }
    let crashes = read_crashes(&crash_log(&db));
    assert_eq!(
        killed,
        crashes.len(),
        "every crash the workers logged is a SIGKILL the test saw"
    );
    assert!(crashes.len() >= iterations);

    let outcome = check(&submitter, &ledger).await;
    let mut resumes = Vec::new();
    let mut late = Vec::new();
    let bound = (LEASE_MS + POLL_MS + SLACK_MS) as i64;
    for c in &crashes {
        match resume_ms(&submitter.store, c).await {
            Some(ms) => {
                resumes.push(ms);
                if ms > bound {
                    late.push(format!("{c:?}: {ms} ms"));
                }
            }
            None => late.push(format!("{c:?}: never resumed")),
        }
    }
    resumes.sort_unstable();
    let mut by_point: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &crashes {
        *by_point.entry(c.point.as_str()).or_default() += 1;
    }
    println!(
        "crash test on {}: {} iterations (crashes {:?}) over {} requests ({} completed, {} failed as scripted) in {:.1?}; \
         {} effects, {} duplicate effects, {} ledger calls of which {} duplicate calls (answered by key); \
         resumed after crash: p50 {} ms, p90 {} ms, max {} ms (bound lease {LEASE_MS} + poll {POLL_MS} + slack {SLACK_MS} ms)",
        db.kind,
        crashes.len(),
        by_point,
        outcome.requests,
        outcome.completed,
        outcome.failed_as_scripted,
        started.elapsed(),
        outcome.effects,
        outcome.duplicate_effects,
        outcome.calls,
        outcome.duplicate_calls,
        percentile(&resumes, 50).unwrap_or(-1),
        percentile(&resumes, 90).unwrap_or(-1),
        resumes.last().copied().unwrap_or(-1),
    );
    outcome.assert_exact(&db);
    for p in fixture::CrashPoint::ALL {
        assert!(
            by_point.get(p.as_str()).copied().unwrap_or(0) >= iterations / 4,
            "{}: too few crashes at {}: {by_point:?}",
            db.kind,
            p.as_str()
        );
    }
    assert!(
        late.is_empty(),
        "{}: {} of {} crashed requests resumed later than {bound} ms: {:?}",
        db.kind,
        late.len(),
        crashes.len(),
        late.iter().take(10).collect::<Vec<_>>()
    );
    submitter.store.pool().close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_50_on_sqlite() {
    crash_run(Db::sqlite("crash"), 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_50_on_postgres() {
    let Some(db) = Db::postgres("crash").await else {
        return;
    };
    crash_run(db, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "200 crash iterations per database: about two minutes"]
async fn crash_200_on_sqlite() {
    crash_run(Db::sqlite("crash200"), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "200 crash iterations per database: about two minutes"]
async fn crash_200_on_postgres() {
    let Some(db) = Db::postgres("crash200").await else {
        return;
    };
    crash_run(db, 200).await;
}
