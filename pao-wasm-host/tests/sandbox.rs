//! The sandbox holds: a real Rust guest (`tests/probe-plugin`) tries, on request, everything
//! a plugin must not do, and hand-written WAT components check the loader's refusals.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::response::Redirect;
use axum::routing::get;
use pao_core::action::{Action, ErrorClass};
use pao_core::secrets::StaticSecrets;
use pao_sandbox::FakeServer;
use pao_wasm_host::config::RequestedLimits;
use pao_wasm_host::{
    Grant, Grants, HostConfig, LoadError, Manifest, PluginErrorKind, PluginHost, WasmAction,
};
use serde_json::{Value, json};

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(
        common::workspace_root().join("pao-wasm-host/tests/probe-plugin/probe.toml"),
    )
    .unwrap();
    toml::from_str(&text).unwrap()
}

async fn probe_with(config: HostConfig, grant: Grant) -> Arc<WasmAction> {
    let wasm = common::build_plugin("pao-probe-plugin");
    let host = PluginHost::new(config).unwrap();
    let bytes = std::fs::read(&wasm).unwrap();
    host.load_bytes(&wasm, &bytes, manifest(), &grant)
        .await
        .unwrap()
}

async fn probe(grant: Grant) -> Arc<WasmAction> {
    probe_with(
        HostConfig {
            pooling: false,
            cache_dir: Some(common::cache_dir()),
            ..HostConfig::default()
        },
        grant,
    )
    .await
}

fn secrets() -> StaticSecrets {
    StaticSecrets::new()
        .with("granted_token", "tok-granted-123")
        .with("other_secret", "tok-other-456")
}

async fn run(p: &WasmAction, input: Value) -> Result<Value, PluginErrorKind> {
    let ctx = common::context(secrets());
    p.run(&ctx, &input).await.map(|o| o.result).map_err(|e| {
        assert_eq!(e.plugin, "probe", "errors name the plugin");
        e.kind
    })
}

/// `/hello` echoes the Authorization header; `/same` redirects to `/hello` on the same
/// host; `/away` redirects to `localhost` (same server, another host name).
async fn echo_server() -> FakeServer {
    let router = Router::new()
        .route(
            "/hello",
            get(|h: HeaderMap| async move {
                h.get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string()
            }),
        )
        .route("/same", get(|| async { Redirect::temporary("/hello") }))
        .route("/big", get(|| async { "x".repeat(100_000) }));
    FakeServer::start(router).await.unwrap()
}

#[tokio::test]
async fn a_host_not_granted_is_denied() {
    let p = probe(Grant::default().http_hosts(["api.example.com"])).await;
    let e = run(
        &p,
        json!({ "probe": "http", "url": "http://127.0.0.1:9/x" }),
    )
    .await
    .unwrap_err();
    match e {
        PluginErrorKind::Denied(m) => {
            assert!(
                m.contains("host `127.0.0.1` is not granted to plugin `probe`"),
                "{m}"
            )
        }
        other => panic!("expected denied, got {other:?}"),
    }
}

#[tokio::test]
async fn an_entry_without_a_port_allows_the_default_port_only() {
    let server = echo_server().await;
    let url = format!("{}/hello", server.url());
    let p = probe(Grant::default().http_hosts(["127.0.0.1"])).await;
    let e = run(&p, json!({ "probe": "http", "url": url }))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PluginErrorKind::Denied(m) if m.contains("host `127.0.0.1` is not granted")),
        "{e:?}"
    );
    // `host:*` is any port.
    let p = probe(Grant::default().http_hosts(["127.0.0.1:*"])).await;
    let out = run(&p, json!({ "probe": "http", "url": url }))
        .await
        .unwrap();
    assert_eq!(out["status"], 200);
}

#[tokio::test]
async fn a_name_resolving_to_a_loopback_address_the_grant_does_not_name_is_denied() {
    let server = echo_server().await;
    let port = server.addr().port();
    let url = format!("http://localhost:{port}/hello");
    // `localhost` is granted, its address is not: the connection is refused.
    let p = probe(Grant::default().http_hosts(["localhost:*"])).await;
    let e = run(&p, json!({ "probe": "http", "url": url }))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PluginErrorKind::Denied(m) if m.contains("`localhost` resolves to") && m.contains("does not name")),
        "{e:?}"
    );
    // Naming the address (or its range) allows it.
    for named in ["127.0.0.1", "127.0.0.0/8"] {
        let p = probe(Grant::default().http_hosts(["localhost:*", named])).await;
        let out = run(&p, json!({ "probe": "http", "url": url }))
            .await
            .unwrap();
        assert_eq!(out["status"], 200, "{named}");
    }
}

#[tokio::test]
async fn a_granted_host_answers_and_secret_headers_are_filled_host_side() {
    let server = echo_server().await;
    let port = server.addr().port();
    let p = probe(
        Grant::default()
            .http_hosts([format!("127.0.0.1:{port}")])
            .secrets(["granted_token"]),
    )
    .await;
    let url = format!("{}/hello", server.url());
    let out = run(
        &p,
        json!({ "probe": "http", "url": url, "bearer": "granted_token" }),
    )
    .await
    .unwrap();
    // The server echoed the real token; the plugin's result is redacted on its way out.
    assert_eq!(out, json!({ "status": 200, "body": "Bearer [REDACTED]" }));
    // Same-host redirects are followed.
    let out = run(
        &p,
        json!({ "probe": "http", "url": format!("{}/same", server.url()) }),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], 200);
    // A secret that is not granted cannot be referenced either.
    let e = run(
        &p,
        json!({ "probe": "http", "url": url, "bearer": "other_secret" }),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, PluginErrorKind::Denied(m) if m.contains("secret `other_secret` is not granted")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_redirect_to_a_host_not_granted_is_denied() {
    let target = echo_server().await;
    let away = format!("http://localhost:{}/hello", target.addr().port());
    let redirector = FakeServer::start(Router::new().route(
        "/away",
        get(move || {
            let away = away.clone();
            async move { Redirect::temporary(&away) }
        }),
    ))
    .await
    .unwrap();
    let p = probe(Grant::default().http_hosts(["127.0.0.1:*"])).await;
    let e = run(
        &p,
        json!({ "probe": "http", "url": format!("{}/away", redirector.url()) }),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, PluginErrorKind::Denied(m) if m.contains("redirect to host `localhost` is not granted")),
        "{e:?}"
    );
}

#[tokio::test]
async fn secret_headers_do_not_follow_a_redirect_to_another_origin() {
    let target = echo_server().await;
    let port = target.addr().port();
    let away = format!("http://localhost:{port}/hello");
    let redirector = FakeServer::start(Router::new().route(
        "/away",
        get(move || {
            let away = away.clone();
            async move { Redirect::temporary(&away) }
        }),
    ))
    .await
    .unwrap();
    // Both hosts are granted: the redirect is followed, the bearer token is not.
    let p = probe(
        Grant::default()
            .http_hosts(["127.0.0.1:*", "localhost:*"])
            .secrets(["granted_token"]),
    )
    .await;
    let url = format!("{}/away", redirector.url());
    let out = run(
        &p,
        json!({ "probe": "http", "url": url, "bearer": "granted_token" }),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({ "status": 200, "body": "none" }));
}

#[tokio::test]
async fn responses_over_the_cap_are_refused() {
    let server = echo_server().await;
    let mut grant = Grant::default().http_hosts(["127.0.0.1:*"]);
    grant.limits = RequestedLimits {
        max_response_bytes: Some(10_000),
        ..RequestedLimits::default()
    };
    let p = probe(grant).await;
    let e = run(
        &p,
        json!({ "probe": "http", "url": format!("{}/big", server.url()) }),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, PluginErrorKind::Failed(m) if m.contains("over 10000 bytes")),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_within_the_timeout() {
    let mut grant = Grant::default();
    grant.limits.timeout_ms = Some(300);
    let p = probe(grant).await;
    let started = Instant::now();
    let e = run(&p, json!({ "probe": "loop" })).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e, PluginErrorKind::Timeout(Duration::from_millis(300)));
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    // Through the Action trait a timeout is worth retrying, and says which plugin.
    let ctx = common::context(secrets());
    let ae = p
        .execute(&ctx, &json!({ "probe": "loop" }))
        .await
        .unwrap_err();
    assert_eq!(ae.class, ErrorClass::Retryable);
    assert!(
        ae.message.starts_with("plugin `probe`: stopped after"),
        "{}",
        ae.message
    );
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_at_the_cap() {
    let p = probe(Grant::default()).await;
    let e = run(&p, json!({ "probe": "memory" })).await.unwrap_err();
    assert_eq!(e, PluginErrorKind::MemoryLimit(16 << 20));
}

#[tokio::test]
async fn the_memory_cap_holds_with_the_pooling_allocator_too() {
    let config = HostConfig {
        cache_dir: Some(common::cache_dir()),
        ..HostConfig::default()
    };
    let p = probe_with(config, Grant::default()).await;
    let e = run(&p, json!({ "probe": "memory" })).await.unwrap_err();
    assert_eq!(e, PluginErrorKind::MemoryLimit(16 << 20));
    // And the next call gets a fresh store.
    assert_eq!(
        run(&p, json!({ "probe": "ok" })).await.unwrap(),
        json!({ "ok": true, "attempt": 1 })
    );
}

#[tokio::test]
async fn fuel_runs_out_when_the_host_counts_it() {
    let mut grant = Grant::default();
    grant.limits.fuel = Some(5_000_000);
    let p = probe_with(
        HostConfig {
            pooling: false,
            fuel: true,
            cache_dir: Some(common::cache_dir()),
            ..HostConfig::default()
        },
        grant,
    )
    .await;
    let e = run(&p, json!({ "probe": "loop" })).await.unwrap_err();
    assert_eq!(e, PluginErrorKind::OutOfFuel(5_000_000));
}

#[tokio::test]
async fn only_granted_secrets_can_be_read_and_they_are_redacted_from_logs() {
    let p = probe(Grant::default().secrets(["granted_token"])).await;
    let out = run(&p, json!({ "probe": "secret", "name": "granted_token" }))
        .await
        .unwrap();
    assert_eq!(out, json!({ "length": 15 }));
    let e = run(&p, json!({ "probe": "secret", "name": "other_secret" }))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PluginErrorKind::Denied(m) if m.contains("secret `other_secret` is not granted to plugin `probe`")),
        "{e:?}"
    );
    let ctx = common::context(secrets());
    p.run(
        &ctx,
        &json!({ "probe": "log-secret", "name": "granted_token" }),
    )
    .await
    .unwrap();
    let lines = ctx.log.drain();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].message, "the token is [REDACTED]");
}

#[tokio::test]
async fn the_filesystem_environment_and_sockets_are_out_of_reach() {
    let p = probe(Grant::default()).await;
    let fs = run(&p, json!({ "probe": "fs" })).await.unwrap();
    for op in ["read", "write", "list"] {
        assert!(fs[op].is_string(), "{op} should have failed: {fs}");
    }
    let env = run(&p, json!({ "probe": "env" })).await.unwrap();
    assert_eq!(env, json!({ "vars": 0, "home": null, "args": 0 }));
    let net = run(&p, json!({ "probe": "socket" })).await.unwrap();
    assert!(net["connect"].is_string(), "connect should fail: {net}");
}

#[tokio::test]
async fn a_panic_is_a_typed_error_with_its_message() {
    let p = probe(Grant::default()).await;
    let e = run(&p, json!({ "probe": "panic" })).await.unwrap_err();
    assert!(
        matches!(&e, PluginErrorKind::Panic(m) if m.contains("probe panicked on purpose")),
        "{e:?}"
    );
}

#[tokio::test]
async fn kv_is_per_plugin_and_only_when_granted() {
    let p = probe(Grant::default().kv()).await;
    let out = run(&p, json!({ "probe": "kv", "value": "v1" }))
        .await
        .unwrap();
    assert_eq!(out, json!({ "value": "v1" }));
    let denied = probe(Grant::default()).await;
    let e = run(&denied, json!({ "probe": "kv", "value": "v1" }))
        .await
        .unwrap_err();
    assert!(matches!(e, PluginErrorKind::Denied(_)), "{e:?}");
}

#[tokio::test]
async fn cancellation_stops_a_call() {
    let p = probe(Grant::default()).await;
    let ctx = common::context(secrets());
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    // The guest yields at every epoch tick, so even a tight loop sees the cancellation long
    // before its 2 s timeout.
    let started = Instant::now();
    let e = p.run(&ctx, &json!({ "probe": "loop" })).await.unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn settings_reach_the_plugin() {
    let p = probe(Grant::default().setting("api_url", "http://x")).await;
    let out = run(&p, json!({ "probe": "settings" })).await.unwrap();
    assert_eq!(out, json!({ "api_url": "http://x" }));
}

#[tokio::test]
async fn the_descriptor_carries_the_schema_and_validate_runs_in_the_plugin() {
    let p = probe(Grant::default()).await;
    let d = p.describe();
    assert_eq!(d.type_name, "plugin:probe");
    assert_eq!(d.config_schema["required"], json!(["probe"]));
    assert!(p.validate(&json!({ "probe": "ok" })).is_ok());
    let errs = p.validate(&json!({ "nope": 1 })).unwrap_err();
    assert_eq!(errs, vec!["/probe: required".to_string()]);
}

// ---- load errors ---------------------------------------------------------------------

async fn load_wat(wat: &str) -> Result<Arc<WasmAction>, LoadError> {
    let bytes = wat::parse_str(wat).unwrap();
    load_raw(&bytes).await
}

async fn load_raw(bytes: &[u8]) -> Result<Arc<WasmAction>, LoadError> {
    let host = PluginHost::new(HostConfig {
        pooling: false,
        ..HostConfig::default()
    })
    .unwrap();
    let m = Manifest {
        name: "bad".to_string(),
        version: "0.1.0".to_string(),
        ..Manifest::default()
    };
    host.load_bytes("bad.wasm".as_ref(), bytes, m, &Grant::default())
        .await
}

#[tokio::test]
async fn malformed_and_non_component_files_are_clear_load_errors() {
    let e = load_raw(b"MZ\x90\x00 definitely not wasm")
        .await
        .unwrap_err();
    assert!(matches!(e, LoadError::NotWasm(_)), "{e}");
    assert!(e.to_string().contains("is not a WebAssembly file"), "{e}");

    let e = load_wat("(module (func (export \"run\")))")
        .await
        .unwrap_err();
    assert!(matches!(e, LoadError::CoreModule(_)), "{e}");
    assert!(e.to_string().contains("--target wasm32-wasip2"), "{e}");

    // A component header followed by garbage.
    let e = load_raw(b"\0asm\x0d\x00\x01\x00\xff\xff\xff")
        .await
        .unwrap_err();
    assert!(matches!(e, LoadError::Invalid { .. }), "{e}");

    let e = load_wat("(component)").await.unwrap_err();
    assert!(matches!(e, LoadError::NotAPlugin(_)), "{e}");
}

#[tokio::test]
async fn a_wrong_contract_version_names_the_supported_range() {
    let e = load_wat(
        r#"(component
            (instance $action)
            (export "pao:action/action@0.2.0" (instance $action)))"#,
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, LoadError::ContractVersion { .. }), "{text}");
    assert!(
        text.contains(
            "targets contract pao:action@0.2.0, but this host supports pao:action@>=0.1.0, <0.2.0"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn imports_the_host_does_not_provide_are_refused_at_load() {
    let e = load_wat(
        r#"(component
            (import "evil:net/raw-socket" (instance (export "open" (func))))
            (instance $action)
            (export "pao:action/action@0.1.0" (instance $action)))"#,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, LoadError::Link { .. }), "{e}");
    assert!(e.to_string().contains("evil:net/raw-socket"), "{e}");
}

#[tokio::test]
async fn a_plugin_folder_needs_manifests_that_match() {
    let wasm = common::build_plugin("pao-probe-plugin");
    let host = PluginHost::new(HostConfig {
        pooling: false,
        cache_dir: Some(common::cache_dir()),
        ..HostConfig::default()
    })
    .unwrap();
    let dir = common::plugin_dir(&[]);
    std::fs::copy(&wasm, dir.path().join("probe.wasm")).unwrap();
    let e = host
        .load_dir(dir.path(), &Grants::new())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, LoadError::MissingManifest { .. }), "{e}");

    std::fs::write(
        dir.path().join("probe.toml"),
        "name = \"other\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let e = host
        .load_dir(dir.path(), &Grants::new())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("calls itself `probe` but its manifest says `other`"),
        "{e}"
    );

    std::fs::write(
        dir.path().join("probe.toml"),
        "name = \"probe\"\nversion = \"0.1.0\"\nshell = true\n",
    )
    .unwrap();
    let e = host
        .load_dir(dir.path(), &Grants::new())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, LoadError::Manifest { .. }), "{e}");
}

/// The names of the compiled artifacts in a cache directory.
fn cwasm_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".cwasm"))
        .collect();
    names.sort();
    names
}

/// Someone who can write the cache directory replaces the probe's artifact with another valid
/// artifact of the same engine (the empty component's): the host does not load it (it would
/// run that code as the probe), but recompiles the probe and runs it.
#[tokio::test]
async fn a_replaced_cache_file_is_recompiled_not_loaded() {
    let wasm = common::build_plugin("pao-probe-plugin");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("plugin-cache");
    let config = HostConfig {
        pooling: false,
        cache_dir: Some(dir.clone()),
        ..HostConfig::default()
    };
    let bytes = std::fs::read(&wasm).unwrap();
    PluginHost::new(config.clone())
        .unwrap()
        .load_bytes(&wasm, &bytes, manifest(), &Grant::default())
        .await
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "the cache directory is private");
        assert_eq!(mode(&dir.join("cache.key")), 0o600, "the key is private");
        let probe = &cwasm_files(&dir)[0];
        assert_eq!(mode(&dir.join(probe)), 0o600);
    }
    let probe = cwasm_files(&dir).remove(0);
    // The empty component, compiled by the same host into the same cache (it is no action,
    // so loading it fails after it was cached).
    let empty = wat::parse_str("(component)").unwrap();
    let _ = PluginHost::new(config.clone())
        .unwrap()
        .load_bytes("empty.wasm".as_ref(), &empty, manifest(), &Grant::default())
        .await;
    let other = cwasm_files(&dir)
        .into_iter()
        .find(|n| *n != probe)
        .expect("the empty component was cached");
    std::fs::copy(dir.join(&other), dir.join(&probe)).unwrap();

    let host = PluginHost::new(config).unwrap();
    let p = host
        .load_bytes(&wasm, &bytes, manifest(), &Grant::default())
        .await
        .expect("the probe is recompiled, not replaced by the planted artifact");
    assert_eq!(
        run(&p, json!({ "probe": "ok" })).await.unwrap(),
        json!({ "ok": true, "attempt": 1 })
    );
    assert_ne!(
        std::fs::read(dir.join(&probe)).unwrap(),
        std::fs::read(dir.join(&other)).unwrap(),
        "the planted file was replaced by a fresh compilation"
    );
}

#[tokio::test]
async fn compiled_plugins_are_cached_on_disk() {
    let wasm = common::build_plugin("pao-probe-plugin");
    let cache = tempfile::tempdir().unwrap();
    let config = HostConfig {
        pooling: false,
        cache_dir: Some(cache.path().to_path_buf()),
        ..HostConfig::default()
    };
    let bytes = std::fs::read(&wasm).unwrap();
    let first = PluginHost::new(config.clone()).unwrap();
    first
        .load_bytes(&wasm, &bytes, manifest(), &Grant::default())
        .await
        .unwrap();
    let cached = cwasm_files(cache.path());
    assert_eq!(cached.len(), 1, "one artifact per content hash + engine");
    let name = &cached[0];
    assert!(name.ends_with(".cwasm") && name.len() > 64, "{name}");
    // A second host (a restart) loads from the cache and runs.
    let second = PluginHost::new(config).unwrap();
    let p = second
        .load_bytes(&wasm, &bytes, manifest(), &Grant::default())
        .await
        .unwrap();
    assert_eq!(
        run(&p, json!({ "probe": "ok" })).await.unwrap(),
        json!({ "ok": true, "attempt": 1 })
    );
}
