//! Load bench of the reference server: throughput and p50/p95/p99 latency of `GET /catalog`,
//! `GET /requests/{id}/status` (of 8 completed and 8 queued requests, then of the 8 queued
//! ones alone, which always read the database) and `POST /requests`, on SQLite, with a keep-alive HTTP/1.1
//! load generator (hyper client connections, one task per connection) in the same process.
//! Server and load share the machine's cores, as they would on a 2-core host running both.
//!
//! `cargo bench -p pao-server --bench load` (env: `PAO_LOAD_SECS`, default 5;
//! `PAO_LOAD_CONNECTIONS`, default `16,64`: each endpoint runs at each count;
//! `PAO_LOAD_DATABASE_URL` to use PostgreSQL).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use pao_server::config::ServerConfig;
use pao_server::state::{AppState, Overrides};
use serde_json::{Value, json};

struct Report {
    name: &'static str,
    requests: u64,
    errors: u64,
    secs: f64,
    hist: hdrhistogram::Histogram<u64>,
}

impl Report {
    fn print(&self) {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<28} {:>9.0} req/s  p50 {:>6.2} ms  p95 {:>6.2} ms  p99 {:>6.2} ms  ({} requests, {} errors, {:.1} s)",
            self.name,
            self.requests as f64 / self.secs,
            ms(0.50),
            ms(0.95),
            ms(0.99),
            self.requests,
            self.errors,
            self.secs
        );
    }
}

/// `connections` keep-alive connections, each sending `make(i)` requests back to back for
/// `secs` seconds.
async fn run(
    name: &'static str,
    addr: std::net::SocketAddr,
    connections: usize,
    secs: f64,
    make: Arc<dyn Fn(usize) -> Request<Full<Bytes>> + Send + Sync>,
    ok: u16,
) -> Report {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..connections {
        let make = make.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut errors = 0u64;
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let req = make(i);
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let _ = resp.into_body().collect().await;
                        hist.record(t.elapsed().as_micros().max(1) as u64).unwrap();
                        if status != ok {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (hist, errors)
        }));
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.unwrap();
        hist.add(h).unwrap();
        errors += e;
    }
    Report {
        name,
        requests: hist.len(),
        errors,
        secs: start.elapsed().as_secs_f64(),
        hist,
    }
}

fn get(path: String, token: &'static str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "pao")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this once as a smoke test,
    // briefly and at low concurrency.
    let bench = std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("PAO_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 5.0 } else { 0.2 });
    let levels: Vec<usize> = std::env::var("PAO_LOAD_CONNECTIONS")
        .unwrap_or_else(|_| if bench { "16,64" } else { "4" }.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = std::env::temp_dir().join(format!("pao-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = std::env::var("PAO_LOAD_DATABASE_URL")
            .unwrap_or_else(|_| format!("sqlite://{}/pao.db", dir.display()));
        let catalog =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog");
        let mut config = ServerConfig {
            bind: "127.0.0.1:0".into(),
            database_url: url.clone(),
            catalog,
            workers: 0,
            watch_catalog: false,
            ..ServerConfig::default()
        };
        // One bench principal sends everything: per-principal limiting would measure the limiter.
        config.limits.rate_per_second = 0;
        // The API tests' actions: `plugin:echo` returns at once.
        let over = Overrides {
            actions: Some(support::registry()),
            tokens: vec![(
                "t-alice".into(),
                support::principal("alice", &["app-team"], &["developer"]),
            )],
            ..Overrides::default()
        };
        let state = AppState::build(config, over).await.unwrap();
        // Quota of the fixture team: raise it out of the way.
        state
            .store
            .set_quota_limit("app-team", "echoes", u64::MAX / 4)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = pao_server::serve::start(state.clone(), Some(listener), 0).unwrap();
        let addr = running.addr;
        println!(
            "PAO load bench: {levels:?} connections, {secs} s per endpoint and level, database {}",
            if url.starts_with("sqlite") { "SQLite" } else { "PostgreSQL" }
        );
        for &conns in &levels {
            let r = run(
                "GET /api/v1/catalog",
                addr,
                conns,
                secs,
                Arc::new(|_| get("/api/v1/catalog".into(), "t-alice")),
                200,
            )
            .await;
            print!("{conns:>3} conn  ");
            r.print();
            assert!(bench || r.errors == 0, "{}: {} error answers", r.name, r.errors);
        }

        // Requests whose status is read: half of them ran to `Completed` (their status reads
        // the attempt journal too), half wait in `Queued`.
        let client = reqwest::Client::new();
        let mut ids = Vec::new();
        for i in 0..16 {
            if i == 8 {
                let ran = state.orch.run_until_idle("seed").await.unwrap();
                assert_eq!(ran, 8, "the first 8 seeded requests run");
            }
            let v: Value = client
                .post(format!("http://{addr}/api/v1/requests"))
                .bearer_auth("t-alice")
                .json(&json!({ "item_id": "test.echo", "fields": { "name": format!("seed-{i}") } }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        let ids = Arc::new(ids);
        for &conns in &levels {
            let ids = ids.clone();
            let r = run(
                "GET /api/v1/requests/{id}/status",
                addr,
                conns,
                secs,
                Arc::new(move |i| {
                    get(format!("/api/v1/requests/{}/status", ids[i % ids.len()]), "t-alice")
                }),
                200,
            )
            .await;
            print!("{conns:>3} conn  ");
            r.print();
            assert!(bench || r.errors == 0, "{}: {} error answers", r.name, r.errors);
        }

        // The same, of the queued requests only: every read goes to the database (the status
        // of ended requests is served from memory after its first read).
        let queued = Arc::new(ids[8..].to_vec());
        for &conns in &levels {
            let queued = queued.clone();
            let r = run(
                "GET …/status (queued only)",
                addr,
                conns,
                secs,
                Arc::new(move |i| {
                    get(format!("/api/v1/requests/{}/status", queued[i % queued.len()]), "t-alice")
                }),
                200,
            )
            .await;
            print!("{conns:>3} conn  ");
            r.print();
            assert!(bench || r.errors == 0, "{}: {} error answers", r.name, r.errors);
        }

        for &conns in &levels {
            let r = run(
                "POST /api/v1/requests",
                addr,
                conns,
                secs,
                Arc::new(move |i| {
                    let body = json!({ "item_id": "test.echo", "fields": { "name": format!("load-{conns}-{i}") } })
                        .to_string();
                    Request::post("/api/v1/requests")
                        .header("host", "pao")
                        .header("authorization", "Bearer t-alice")
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap()
                }),
                201,
            )
            .await;
            print!("{conns:>3} conn  ");
            r.print();
            assert!(bench || r.errors == 0, "{}: {} error answers", r.name, r.errors);
        }
        running.shutdown.cancel();
        let _ = running.done.await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
