//! Shutting down as a rolling deploy does it: `kill -TERM` on a `pao serve` whose worker is
//! inside an action that does not answer. Readiness fails at once, the process exits 0 after
//! the drain time (well inside Kubernetes' 30 s grace period) and hands the run back, and
//! another replica on the same PostgreSQL database resumes it at once — not after the lease
//! runs out — calling the action again with the same idempotency key. A run that finishes
//! within the drain time finishes where it started.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Calls to `/act`: the `Idempotency-Key` of each, the keys of those answered (the fake's
/// effects), and whether the next ones hang.
#[derive(Clone, Default)]
struct Calls {
    keys: Arc<Mutex<Vec<String>>>,
    effects: Arc<Mutex<Vec<String>>>,
    hang: Arc<Mutex<bool>>,
}

async fn receiver() -> (String, Calls) {
    let calls = Calls::default();
    *calls.hang.lock().unwrap() = true;
    let app = axum::Router::new()
        .route(
            "/act",
            axum::routing::post(
                |axum::extract::State(c): axum::extract::State<Calls>,
                 headers: axum::http::HeaderMap| async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    c.keys.lock().unwrap().push(key.clone());
                    let hang = *c.hang.lock().unwrap();
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    // As a vendor honouring the key would: one effect per key.
                    let mut effects = c.effects.lock().unwrap();
                    if !effects.contains(&key) {
                        effects.push(key);
                    }
                    axum::Json(json!({"ok": true}))
                },
            ),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

impl Calls {
    fn count(&self) -> usize {
        self.keys.lock().unwrap().len()
    }

    async fn wait_for(&self, n: usize) {
        for _ in 0..600 {
            if self.count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/act was not called {n} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_hands_the_run_to_another_replica() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(url) = support::database_url(support::Db::Postgres).await else {
        return;
    };
    let (recv, calls) = receiver().await;
    let dir = std::env::temp_dir().join(format!("pao-drain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(
        catalog.join("slow.yaml"),
        format!(
            r#"apiVersion: pao.dev/v2
kind: CatalogItem
metadata: {{ id: drain.slow, name: Slow, description: One slow call., version: 1.0.0, category: test, owner: {{ team: platform }} }}
presentation:
  groups:
    - {{ id: g, title: G, fields: [ {{ id: note, type: text }} ] }}
fulfillment:
  mode: automated
  actions:
    - {{ id: act, type: webhook, config: {{ url: "{recv}/act" }} }}
"#
        ),
    )
    .unwrap();
    // A long lease: the second replica resumes at once only if the first gave the run back.
    std::fs::write(
        dir.join("pao.toml"),
        format!(
            r#"bind = "127.0.0.1:0"
database_url = "{url}"
catalog = "{catalog}"
workers = 2
lease_secs = 120
drain_timeout_secs = 2
watch_catalog = false

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
    let http = reqwest::Client::new();
    let submit = async |base: &str| -> String {
        let r: Value = http
            .post(format!("{base}/api/v1/requests"))
            .bearer_auth("t-alice")
            .json(&json!({"item_id": "drain.slow", "fields": {}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    };

    // The action never answers: the drain time runs out and the run is handed back.
    let mut first = support::spawn_pao(&args, &dir, Duration::from_secs(60));
    let id = submit(&first.base).await;
    calls.wait_for(1).await;
    let ready = format!("{}/api/v1/health/ready", first.base);
    assert_eq!(http.get(&ready).send().await.unwrap().status(), 200);
    let signalled = Instant::now();
    first.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = http.get(&ready).send().await.unwrap().status();
    assert_eq!(during, 503, "readiness fails while draining");
    // drain_timeout_secs + 2 s.
    let code = first.exit_within(Duration::from_secs(4)).await;
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "exits 0 within 4 s of SIGTERM ({took:?})");
    assert!(
        took >= Duration::from_secs(2),
        "the run had its drain time: {took:?}"
    );
    *calls.hang.lock().unwrap() = false;
    let mut second = support::spawn_pao(&args, &dir, Duration::from_secs(60));
    let resumed = Instant::now();
    support::wait_request(&http, &second.base, "t-alice", &id, "completed").await;
    let resumed_in = resumed.elapsed();
    assert!(
        resumed_in < Duration::from_secs(30),
        "resumed without waiting out the 120 s lease: {resumed_in:?}"
    );
    let keys = calls.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "called once per replica: {keys:?}");
    assert_eq!(keys[0], keys[1], "the same idempotency key");
    assert_eq!(
        calls.effects.lock().unwrap().len(),
        1,
        "one effect at the fake"
    );

    // A run that ends within the drain time finishes here, and the process then exits.
    let other = submit(&second.base).await;
    calls.wait_for(3).await;
    second.sigterm();
    let code = second.exit_within(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0));
    let third = support::spawn_pao(&args, &dir, Duration::from_secs(60));
    let r = support::request(&http, &third.base, "t-alice", &other).await;
    assert_eq!(r["state"], "completed", "finished before the exit: {r}");
    assert_eq!(calls.count(), 3, "not called again");
}
