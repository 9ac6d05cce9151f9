//! A PAO worker process for the crash, concurrency and fault tests of `pao-store`: opens the
//! store at a URL, loads the generated test catalog, registers `plugin:ledger` (which posts each
//! effect with its idempotency key to a ledger on 127.0.0.1), and runs
//! [`Orchestrator::run_worker`] until the stop file appears or no work has remained for a while.
//!
//! ```text
//! pao-test-worker --url postgres://postgres@127.0.0.1:5432/db --ledger-port 40123 \
//!     [--worker-id w1] [--lease-ms 2000] [--loops 1] [--pool 4] \
//!     [--stop-file /tmp/stop] [--idle-exit-secs 5]
//! ```
//!
//! `--ledger-port` may also come from `PAO_LEDGER_PORT`. Crash injection: `PAO_CRASH_AT=before_call|after_call|during_rollback`
//! with `PAO_CRASH_AFTER=<n>` (the n-th time) or `PAO_CRASH_PROB=<p>`; the process then
//! SIGKILLs itself, after appending a line to `PAO_CRASH_LOG` when set.
//! Exit status: 0 after a stop, 2 on bad arguments, 3 when the store cannot be opened.

mod fixture;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pao_core::action::ActionRegistry;
use pao_core::engine::{EngineConfig, Orchestrator};
use pao_store::SqlStore;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

struct Args {
    url: String,
    ledger_port: u16,
    worker_id: String,
    lease: Duration,
    loops: usize,
    pool: u32,
    stop_file: Option<std::path::PathBuf>,
    idle_exit: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut ledger_port = std::env::var("PAO_LEDGER_PORT").ok();
    let mut worker_id = format!("worker-{}", std::process::id());
    let mut lease_ms: u64 = 2000;
    let mut loops: usize = 1;
    let mut pool: u32 = 4;
    let mut stop_file = None;
    let mut idle_exit = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: `{v}` is not a number"))
        };
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--ledger-port" => ledger_port = Some(value()?),
            "--worker-id" => worker_id = value()?,
            "--lease-ms" => lease_ms = number(value()?)?,
            "--loops" => loops = number(value()?)?.max(1) as usize,
            "--pool" => pool = number(value()?)?.max(1) as u32,
            "--stop-file" => stop_file = Some(value()?.into()),
            "--idle-exit-secs" => idle_exit = Some(Duration::from_secs(number(value()?)?)),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let ledger_port = ledger_port
        .ok_or("--ledger-port (or PAO_LEDGER_PORT) is required")?
        .parse::<u16>()
        .map_err(|_| "the ledger port is not a port number".to_string())?;
    Ok(Args {
        url: url.ok_or("--url is required")?,
        ledger_port,
        worker_id,
        lease: Duration::from_millis(lease_ms.max(100)),
        loops,
        pool,
        stop_file,
        idle_exit,
    })
}

/// Requests that a worker may still have to run.
async fn live_requests(store: &SqlStore) -> Option<i64> {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM requests WHERE state IN ('submitted', 'prerequisites', 'validation', 'queued', 'in_progress', 'post_fulfillment')",
    )
    .fetch_one(store.pool())
    .await
    .ok()?
    .try_get::<i64, _>("n")
    .ok()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pao-test-worker: {e}");
            std::process::exit(2);
        }
    };
    let crash = match fixture::CrashPlan::from_env() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("pao-test-worker: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pao-test-worker: cannot start the runtime: {e}");
            std::process::exit(3);
        }
    };
    std::process::exit(runtime.block_on(run(args, crash)));
}

async fn run(args: Args, crash: Arc<fixture::CrashPlan>) -> i32 {
    let store = match SqlStore::open_with(&args.url, args.pool).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("pao-test-worker: {e}");
            return 3;
        }
    };
    let mut registry = ActionRegistry::new();
    registry.register(Arc::new(fixture::LedgerAction {
        port: args.ledger_port,
        crash,
    }));
    let catalog = fixture::ledger_catalog(&registry);
    let engine = Orchestrator::builder(catalog, store.clone())
        .actions(registry)
        .config(EngineConfig {
            lease: args.lease,
            default_timeout: Duration::from_secs(30),
            instance: args.worker_id.clone(),
            ..EngineConfig::default()
        })
        .build();
    let shutdown = CancellationToken::new();
    let mut loops = Vec::new();
    for i in 0..args.loops {
        let id = if args.loops == 1 {
            args.worker_id.clone()
        } else {
            format!("{}-{i}", args.worker_id)
        };
        loops.push(tokio::spawn(
            engine.clone().run_worker(id, shutdown.clone()),
        ));
    }
    eprintln!(
        "pao-test-worker {}: running {} loop(s), lease {:?}",
        args.worker_id, args.loops, args.lease
    );
    // Stop on the stop file, or once nothing has been left to do for `idle_exit`. Store errors
    // (a killed connection) never stop the worker.
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(f) = &args.stop_file
            && f.exists()
        {
            break;
        }
        if let Some(limit) = args.idle_exit {
            match live_requests(&store).await {
                Some(0) => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= limit {
                        break;
                    }
                }
                _ => idle_since = None,
            }
        }
    }
    shutdown.cancel();
    for l in loops {
        let _ = l.await;
    }
    eprintln!("pao-test-worker {}: stopped", args.worker_id);
    0
}
