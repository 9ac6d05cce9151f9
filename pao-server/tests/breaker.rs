//! The circuit breaker of a called system, through the API: consecutive 5xx answers open it;
//! after `open_secs` one trial call passes; a trial the system answers with a 4xx (the call's
//! own input refused) says nothing about its health, so the breaker does not stay half-open
//! and the next request's call goes through and closes it.

mod support;

use std::time::Duration;

use serde_json::{Value, json};

/// A vendor on 127.0.0.1: `/down` answers 503, `/refuse` 400, `/up` 200.
async fn vendor() -> String {
    let app = axum::Router::new()
        .route(
            "/down",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"error": "maintenance"})),
                )
            }),
        )
        .route(
            "/refuse",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": "no such project"})),
                )
            }),
        )
        .route(
            "/up",
            axum::routing::post(|| async { axum::Json(json!({"ok": true})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn item(id: &str, url: &str) -> String {
    format!(
        r#"apiVersion: pao.dev/v2
kind: CatalogItem
metadata: {{ id: {id}, name: Breaker test, description: One call to the vendor., version: 1.0.0, category: test, owner: {{ team: platform }} }}
presentation:
  groups:
    - {{ id: g, title: G, fields: [ {{ id: note, type: text }} ] }}
fulfillment:
  mode: automated
  actions:
    - {{ id: call, type: webhook, retry: {{ max_attempts: 1 }}, config: {{ url: "{url}" }} }}
"#
    )
}

/// `pao_breaker_state` of the vendor's host: 0 closed, 1 half-open, 2 open.
async fn breaker(http: &reqwest::Client, base: &str) -> String {
    let m = http
        .get(format!("{base}/api/v1/metrics"))
        .bearer_auth("t-admin")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    m.lines()
        .find(|l| l.starts_with("pao_breaker_state{") && l.contains("127.0.0.1"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("none")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_breaker_lets_the_next_call_through_after_a_4xx_trial() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = vendor().await;
    let dir = std::env::temp_dir().join(format!("pao-breaker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    for (id, path) in [
        ("vendor.down", "down"),
        ("vendor.refuse", "refuse"),
        ("vendor.up", "up"),
    ] {
        std::fs::write(
            catalog.join(format!("{id}.yaml")),
            item(id, &format!("{base}/{path}")),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("pao.toml"),
        format!(
            r#"bind = "127.0.0.1:0"
database_url = "sqlite://{db}"
catalog = "{catalog}"
watch_catalog = false

[breakers]
failure_threshold = 2
open_secs = 1

[[auth.tokens]]
id = "alice"
teams = ["payments"]
roles = ["developer"]
token_sha256 = "{alice}"

[[auth.tokens]]
id = "admin"
teams = ["platform"]
roles = ["admin"]
token_sha256 = "{admin}"
"#,
            db = dir.join("pao.db").display(),
            catalog = catalog.display(),
            alice = pao_server::config::hash_token("t-alice"),
            admin = pao_server::config::hash_token("t-admin"),
        ),
    )
    .unwrap();
    let args: Vec<&std::ffi::OsStr> = ["serve", "--config", "pao.toml"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    let p = support::spawn_pao(&args, &dir, Duration::from_secs(60));
    let http = reqwest::Client::new();
    let submit = async |item: &str| -> String {
        let r: Value = http
            .post(format!("{}/api/v1/requests", p.base))
            .bearer_auth("t-alice")
            .json(&json!({"item_id": item, "fields": {}}))
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
    // Two 5xx in a row open the breaker of 127.0.0.1.
    for _ in 0..2 {
        let id = submit("vendor.down").await;
        support::wait_request(&http, &p.base, "t-alice", &id, "failed").await;
    }
    assert_eq!(breaker(&http, &p.base).await, "2", "open");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The trial: the vendor answers, refusing this call's input.
    let trial = submit("vendor.refuse").await;
    let failed = support::wait_request(&http, &p.base, "t-alice", &trial, "failed").await;
    assert!(
        !failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("circuit breaker"),
        "the trial reached the vendor: {failed}"
    );
    assert_ne!(
        breaker(&http, &p.base).await,
        "1",
        "not left half-open by the trial"
    );
    // The next request's call goes through and closes the breaker.
    let next = submit("vendor.up").await;
    support::wait_request(&http, &p.base, "t-alice", &next, "completed").await;
    assert_eq!(breaker(&http, &p.base).await, "0", "closed");
}
