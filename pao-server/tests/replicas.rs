//! Two `pao serve` processes on one PostgreSQL database, both with workers, both pointed at
//! one set of vendor fakes run by this test: every request submitted to either runs exactly
//! once (one record write per request at the fake DNS API, each under its own idempotency
//! key), and a request's event stream on replica B shows a request submitted to replica A
//! through to its end.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn spawn(config: &std::path::Path, cwd: &std::path::Path) -> support::PaoProcess {
    let args = [
        std::ffi::OsStr::new("serve"),
        std::ffi::OsStr::new("--config"),
        config.as_os_str(),
    ];
    support::spawn_pao(&args, cwd, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_run_each_request_once_and_share_events() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(url) = support::database_url(support::Db::Postgres).await else {
        return;
    };
    let fakes = pao_sandbox::VendorFakes::start_all().await.unwrap();
    let dir = std::env::temp_dir().join(format!("pao-replicas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    let mut env = toml::Table::new();
    for (k, v) in fakes.env() {
        env.insert(k, toml::Value::String(v));
    }
    let mut secrets = toml::Table::new();
    for (k, v) in fakes.secrets() {
        secrets.insert(k, toml::Value::String(v));
    }
    let actions: toml::Value = serde_json::from_value(fakes.actions_config_json()).unwrap();
    let config = |name: &str| {
        let mut t = toml::Table::new();
        t.insert("bind".into(), "127.0.0.1:0".into());
        t.insert("database_url".into(), url.clone().into());
        t.insert("database_pool".into(), 4.into());
        t.insert("catalog".into(), catalog.display().to_string().into());
        t.insert("workers".into(), 2.into());
        t.insert("watch_catalog".into(), false.into());
        t.insert("env".into(), toml::Value::Table(env.clone()));
        t.insert("secrets".into(), toml::Value::Table(secrets.clone()));
        t.insert("actions".into(), actions.clone());
        let token = toml::toml! {
            id = "alice"
            teams = ["platform"]
            roles = ["developer"]
        };
        let mut token = token;
        token.insert(
            "token_sha256".into(),
            pao_server::config::hash_token("t-alice").into(),
        );
        let mut auth = toml::Table::new();
        auth.insert(
            "tokens".into(),
            toml::Value::Array(vec![toml::Value::Table(token)]),
        );
        t.insert("auth".into(), toml::Value::Table(auth));
        let path = dir.join(name);
        std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
        path
    };
    let a = spawn(&config("a.toml"), &dir);
    let b = spawn(&config("b.toml"), &dir);
    let http = reqwest::Client::new();

    let submit = |base: String, i: usize| {
        let http = http.clone();
        async move {
            let v: Value = http
                .post(format!("{base}/api/v1/requests"))
                .bearer_auth("t-alice")
                .json(&json!({ "item_id": "networking.dns-record", "fields": { "zone": "example.internal", "name": format!("svc-{i}"), "record_type": "CNAME", "target": "lb.example.internal", "ttl": 300 } }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_string()
        }
    };

    // The first request goes to A; B's stream follows it from the first event to the end.
    let first = submit(a.base.clone(), 0).await;
    let ws_url = format!(
        "{}/api/v1/ws/requests/{first}/logs?access_token=t-alice&after=0",
        b.base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut states = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("events keep coming");
        let Some(Ok(Message::Text(t))) = m else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "end" {
            break;
        }
        if v["event"]["type"] == "state_changed" {
            states.push(v["event"]["to"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        states.first().map(String::as_str),
        Some("submitted"),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("completed"),
        "{states:?}"
    );

    // Many more, spread over both replicas.
    let mut ids = vec![first];
    for i in 1..40 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        ids.push(submit(base, i).await);
    }
    for id in &ids {
        let mut done = false;
        for _ in 0..300 {
            let v: Value = http
                .get(format!("{}/api/v1/requests/{id}/status", b.base))
                .bearer_auth("t-alice")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["state"] == "completed" {
                done = true;
                break;
            }
            assert!(!v["terminal"].as_bool().unwrap_or(false), "{v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(done, "{id} did not complete");
    }
    // Exactly one record creation per request, each under its own key.
    let creates: Vec<_> = fakes
        .rest
        .effects()
        .into_iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/records/"))
        .collect();
    let keys: BTreeSet<_> = creates
        .iter()
        .filter_map(|e| e.idempotency_key.clone())
        .collect();
    assert_eq!(creates.len(), ids.len(), "{creates:?}");
    assert_eq!(keys.len(), ids.len());
    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
