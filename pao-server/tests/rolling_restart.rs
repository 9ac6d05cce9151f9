//! A rolling restart under load: two `pao serve` processes on one PostgreSQL database take a
//! steady stream of submissions and status reads while each in turn gets SIGTERM and is
//! replaced by a new process. No answer is a 5xx; every submission is either answered or
//! refused at the connection level; every accepted request completes, with one effect at the
//! vendor; the database holds no request whose submitter got no answer.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Calls per idempotency key at the vendor fake.
#[derive(Clone, Default)]
struct Vendor(Arc<Mutex<BTreeMap<String, usize>>>);

async fn vendor() -> (String, Vendor) {
    let v = Vendor::default();
    let app = axum::Router::new()
        .route(
            "/effect",
            axum::routing::post(
                |axum::extract::State(v): axum::extract::State<Vendor>,
                 headers: axum::http::HeaderMap| async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    // Long enough that restarts catch runs in flight.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    *v.0.lock().unwrap().entry(key).or_default() += 1;
                    axum::Json(json!({"ok": true}))
                },
            ),
        )
        .with_state(v.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, v)
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    accepted: Vec<String>,
    refused_at_connection: usize,
    server_errors: Vec<String>,
    reads: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_answers_no_5xx() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(url) = support::database_url(support::Db::Postgres).await else {
        return;
    };
    let (vendor_url, calls) = vendor().await;
    let dir = std::env::temp_dir().join(format!("pao-rolling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(
        catalog.join("quick.yaml"),
        format!(
            r#"apiVersion: pao.dev/v2
kind: CatalogItem
metadata: {{ id: roll.quick, name: Quick, description: One call to a vendor., version: 1.0.0, category: test, owner: {{ team: platform }} }}
presentation:
  groups:
    - {{ id: g, title: G, fields: [ {{ id: n, type: number }} ] }}
fulfillment:
  mode: automated
  actions:
    - {{ id: effect, type: webhook, config: {{ url: "{vendor_url}/effect" }} }}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pao.toml"),
        format!(
            r#"bind = "127.0.0.1:0"
database_url = "{url}"
database_pool = 4
catalog = "{catalog}"
workers = 8
drain_timeout_secs = 5
watch_catalog = false

[limits]
rate_per_second = 0

[[auth.tokens]]
id = "alice"
teams = ["payments"]
roles = ["developer"]
token_sha256 = "{alice}"
"#,
            catalog = catalog.display(),
            alice = pao_server::config::hash_token("t-alice"),
        ),
    )
    .unwrap();
    let args: Vec<&std::ffi::OsStr> = ["serve", "--config", "pao.toml"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    let started = std::sync::atomic::AtomicUsize::new(0);
    // Each process logs to `<n>.stderr` / `<n>.stdout` in `dir`.
    let start = || {
        let n = started.fetch_add(1, Ordering::SeqCst);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pao"));
        cmd.args(&args)
            .current_dir(&dir)
            .env_remove("PAO_DATABASE_URL")
            .env_remove("PAO_CONFIG")
            .env_remove("PAO_BIND")
            .env("PAO_LOG", "info,pao_core=debug");
        support::spawn_command_logging(
            cmd,
            &dir.join(format!("{n}.stderr")),
            Duration::from_secs(60),
        )
    };
    let mut procs = [start(), start()];
    // What a load balancer would route to: the processes' addresses.
    let bases = Arc::new(Mutex::new(
        procs.iter().map(|p| p.base.clone()).collect::<Vec<_>>(),
    ));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // A new connection per call, as many clients behind a balancer make: a process that is
    // gone refuses the connection.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut load = Vec::new();
    for client in 0..4usize {
        let (bases, seen, stop, http) = (bases.clone(), seen.clone(), stop.clone(), http.clone());
        load.push(tokio::spawn(async move {
            let mut i = client;
            while !stop.load(Ordering::SeqCst) {
                // A steady load the two processes keep up with (about 60 submissions a
                // second against their 16 worker loops and 100 ms calls).
                tokio::time::sleep(Duration::from_millis(50)).await;
                i += 1;
                let base = {
                    let b = bases.lock().unwrap();
                    b[i % b.len()].clone()
                };
                let r = http
                    .post(format!("{base}/api/v1/requests"))
                    .bearer_auth("t-alice")
                    .json(&json!({"item_id": "roll.quick", "fields": {"n": i}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let body: Value = r.json().await.unwrap();
                        seen.lock()
                            .unwrap()
                            .accepted
                            .push(body["id"].as_str().unwrap().to_string());
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        seen.lock()
                            .unwrap()
                            .server_errors
                            .push(format!("submit {status}: {text}"));
                    }
                    // No HTTP answer: the connection was refused, or closed unread by a
                    // listener going away. The database count below shows none of these
                    // was stored.
                    Err(_) => seen.lock().unwrap().refused_at_connection += 1,
                }
                // A status read of a recent request.
                let id = seen.lock().unwrap().accepted.last().cloned();
                if let Some(id) = id {
                    match http
                        .get(format!("{base}/api/v1/requests/{id}/status"))
                        .bearer_auth("t-alice")
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => seen.lock().unwrap().reads += 1,
                        Ok(r) => {
                            let status = r.status();
                            seen.lock()
                                .unwrap()
                                .server_errors
                                .push(format!("status read {status}"));
                        }
                        Err(_) => seen.lock().unwrap().refused_at_connection += 1,
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    for (slot, process) in procs.iter_mut().enumerate() {
        let before = seen.lock().unwrap().accepted.len();
        process.sigterm();
        let code = process.exit_within(Duration::from_secs(12)).await;
        assert_eq!(code, Some(0), "process {slot} exits 0 after its drain");
        let fresh = start();
        bases.lock().unwrap()[slot] = fresh.base.clone();
        *process = fresh;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            seen.lock().unwrap().accepted.len() > before,
            "submissions kept being accepted around restart {slot}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }

    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    assert!(
        seen.server_errors.is_empty(),
        "answers that were not 2xx: {:?}",
        seen.server_errors
    );
    assert!(
        seen.accepted.len() >= 20,
        "a steady load: {}",
        seen.accepted.len()
    );
    assert!(seen.reads > 0);
    // Every accepted request completes.
    let base = procs[0].base.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &seen.accepted {
        loop {
            let r: Value = http
                .get(format!("{base}/api/v1/requests/{id}/status"))
                .bearer_auth("t-alice")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if r["state"] == "completed" {
                break;
            }
            assert!(
                Instant::now() < deadline && r["state"] != "failed",
                "{id} did not complete: {r}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // One effect per request (a call cut off by a hand-back is repeated with the same key).
    let effects = calls.0.lock().unwrap().clone();
    assert_eq!(
        effects.len(),
        seen.accepted.len(),
        "one idempotency key per accepted request at the vendor"
    );
    // Nothing stored that its submitter was not told about.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let (stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM requests")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(stored as usize, seen.accepted.len());
    eprintln!(
        "accepted {}, refused at connection level {}, status reads {}, vendor calls {}",
        seen.accepted.len(),
        seen.refused_at_connection,
        seen.reads,
        effects.values().sum::<usize>()
    );
}
