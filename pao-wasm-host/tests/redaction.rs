//! A plugin that leaks a secret it read — in its error, its result, its panic — runs through
//! the engine: what the engine stores (attempts, events, the request's error) holds
//! `[REDACTED]`, never the value.

mod common;

use std::sync::Arc;

use pao_core::action::ActionRegistry;
use pao_core::authz::Principal;
use pao_core::catalog::Catalog;
use pao_core::engine::{Orchestrator, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::secrets::StaticSecrets;
use pao_core::store::{MemoryStore, Store};
use pao_wasm_host::{Grant, HostConfig, Manifest, PluginHost};
use serde_json::json;

/// Only the plugin reads it: the engine's templates never do, so only the plugin host's
/// redaction can hide it.
const TOKEN: &str = "tok-granted-123";

const ITEM: &str = r#"apiVersion: pao.dev/v2
kind: CatalogItem
metadata: { id: leak, name: Leak, description: A plugin that leaks its secret., version: 1.0.0, category: compute, owner: { team: platform } }
presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: how, type: text, required: true }
fulfillment:
  mode: automated
  actions:
    - { id: leak, type: "plugin:probe", config: { probe: leak-secret, name: granted_token, how: "${{ fields.how }}" }, outputs: { token: "${{ result.token }}" } }
"#;

struct Setup {
    engine: Arc<Orchestrator>,
    store: Arc<MemoryStore>,
    _catalog_dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let manifest: Manifest = toml::from_str(
        &std::fs::read_to_string(
            common::workspace_root().join("pao-wasm-host/tests/probe-plugin/probe.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let wasm = common::build_plugin("pao-probe-plugin");
    let host = PluginHost::new(HostConfig {
        pooling: false,
        cache_dir: Some(common::cache_dir()),
        ..HostConfig::default()
    })
    .unwrap();
    let probe = host
        .load_bytes(
            &wasm,
            &std::fs::read(&wasm).unwrap(),
            manifest,
            &Grant::default().secrets(["granted_token"]),
        )
        .await
        .unwrap();
    let mut registry = ActionRegistry::new();
    registry.register(probe);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leak.yaml"), ITEM).unwrap();
    let catalog = Catalog::load(dir.path(), &registry.load_options()).unwrap();
    assert!(
        !catalog.has_errors(),
        "{}",
        pao_core::catalog::render_all(catalog.diagnostics())
    );
    let store = Arc::new(MemoryStore::new());
    let engine = Orchestrator::builder(catalog, store.clone())
        .actions(registry)
        .secrets(Arc::new(StaticSecrets::new().with("granted_token", TOKEN)))
        .build();
    Setup {
        engine,
        store,
        _catalog_dir: dir,
    }
}

/// Runs the item with `how`, and returns the request's state and everything stored about it.
async fn run(how: &str) -> (RequestState, String) {
    let s = setup().await;
    let who = Principal::new("dev1", &["payments"], &["developer"]);
    let r = s
        .engine
        .submit(
            &who,
            "leak",
            &json!({ "how": how }),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    s.engine.run_until_idle("w1").await.unwrap();
    let r = s.store.get(&r.id).await.unwrap().unwrap();
    let stored = format!(
        "{:?}\n{:?}\n{:?}",
        s.store.events(&r.id, 0, 0).await.unwrap(),
        s.store.attempts(&r.id).await.unwrap(),
        r
    );
    (r.state, stored)
}

fn assert_redacted(stored: &str) {
    let hex: String = TOKEN.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(stored.contains("[REDACTED]"), "{stored}");
    assert!(!stored.contains(TOKEN), "the secret is stored: {stored}");
    assert!(
        !stored.contains(&hex),
        "the secret's hex is stored: {stored}"
    );
}

#[tokio::test]
async fn a_secret_in_a_plugin_error_is_stored_redacted() {
    let (state, stored) = run("error").await;
    assert_eq!(state, RequestState::Failed, "{stored}");
    assert!(stored.contains("login failed with [REDACTED]"), "{stored}");
    assert_redacted(&stored);
}

#[tokio::test]
async fn a_secret_in_a_plugin_panic_is_stored_redacted() {
    let (state, stored) = run("panic").await;
    assert_eq!(state, RequestState::Failed, "{stored}");
    assert!(
        stored.contains("cannot go on with token [REDACTED]"),
        "{stored}"
    );
    assert_redacted(&stored);
}

#[tokio::test]
async fn a_secret_in_a_plugin_result_is_stored_redacted() {
    let (state, stored) = run("result").await;
    assert_eq!(state, RequestState::Completed, "{stored}");
    assert_redacted(&stored);
}
