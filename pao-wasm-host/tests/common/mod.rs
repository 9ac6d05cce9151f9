//! Shared by the integration tests: builds real plugins for `wasm32-wasip2` and lays out
//! plugin folders.
//!
//! The nested `cargo build` uses a target directory of its own (`<target>/wasm-plugins`):
//! the outer `cargo test` may still hold the lock on the main one. It is `--locked`, so it
//! needs no network once the workspace's dependencies are fetched.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use pao_core::action::{ActionContext, ActionLogger, IdempotencyKey};
use pao_core::secrets::StaticSecrets;
use tokio_util::sync::CancellationToken;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("pao-wasm-host sits in the workspace")
        .to_path_buf()
}

/// `<target>/wasm-plugins`, next to the `debug` folder holding this test binary.
fn wasm_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/debug/deps/<test-binary>
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("wasm-plugins")
}

/// Builds `package` for `wasm32-wasip2` (once per test process) and returns its `.wasm`.
pub fn build_plugin(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(package) {
        return p.clone();
    }
    let target_dir = wasm_target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .env_remove("CARGO_TARGET_DIR")
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building {package} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );
    let wasm = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(wasm.is_file(), "{} missing", wasm.display());
    built.insert(package.to_string(), wasm.clone());
    wasm
}

/// A compiled-component cache shared by the tests (a debug build of cranelift is slow).
pub fn cache_dir() -> PathBuf {
    wasm_target_dir().join("cwasm-cache")
}

/// A plugin folder with `<name>.wasm` (copied from `wasm`) and `<name>.toml`.
pub fn plugin_dir(plugins: &[(&Path, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (wasm, name, manifest) in plugins {
        std::fs::copy(wasm, dir.path().join(format!("{name}.wasm"))).expect("copy wasm");
        std::fs::write(dir.path().join(format!("{name}.toml")), manifest).expect("write manifest");
    }
    dir
}

/// A context for `request_id`/`action_id` with these secrets.
pub fn context(secrets: StaticSecrets) -> ActionContext {
    ActionContext {
        request_id: "req-42".to_string(),
        action_id: "notify".to_string(),
        attempt: 1,
        idempotency_key: IdempotencyKey::for_action("req-42", "notify"),
        deadline: None,
        cancel: CancellationToken::new(),
        log: ActionLogger::default(),
        secrets: Arc::new(secrets),
        dry_run: false,
    }
}
