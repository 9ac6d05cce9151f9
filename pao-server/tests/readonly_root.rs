//! `pao serve` as the container image runs it: an unprivileged user whose working directory,
//! configuration and catalog it cannot write, with one writable data folder (the image's
//! `/data`) and the temporary folder. It starts, reports ready, runs a request to completion
//! and writes nothing outside the data folder and the temporary folder.
//!
//! Run as root (CI), the server runs as `nobody` through `setpriv`, so the folders really are
//! unwritable to it; run as another user, the folders are made read-only with their mode.
#![cfg(unix)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_a_read_only_root_with_one_writable_data_folder() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = std::env::temp_dir().join(format!("pao-ro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (cwd, etc, catalog, data) = (
        root.join("cwd"),
        root.join("etc"),
        root.join("catalog"),
        root.join("data"),
    );
    for d in [&cwd, &etc, &catalog, &data] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(
        catalog.join("note.yaml"),
        r##"apiVersion: pao.dev/v2
kind: CatalogItem
metadata: { id: ro.note, name: Note, description: A script that answers., version: 1.0.0, category: test, owner: { team: platform } }
presentation:
  groups:
    - { id: g, title: G, fields: [ { id: text, type: text } ] }
fulfillment:
  mode: automated
  actions:
    - { id: say, type: script, config: { script: "#{ said: inputs.text }", inputs: { text: "${{ fields.text }}" } } }
"##,
    )
    .unwrap();
    std::fs::write(
        etc.join("pao.toml"),
        format!(
            r#"bind = "127.0.0.1:0"
database_url = "sqlite://{data}/pao.db"
catalog = "{catalog}"
workers = 1

[plugins]
cache_dir = "{data}/plugin-cache"

[[auth.tokens]]
id = "alice"
teams = ["payments"]
roles = ["developer"]
token_sha256 = "{alice}"
"#,
            data = data.display(),
            catalog = catalog.display(),
            alice = pao_server::config::hash_token("t-alice"),
        ),
    )
    .unwrap();
    let config = etc.join("pao.toml");
    let root_user = is_root();
    if root_user {
        // Owned by root, mode 0755: readable, not writable, by `nobody`.
        std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
    } else {
        for d in [&cwd, &etc, &catalog] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
    }
    // A copy `nobody` may run wherever the build put the binary.
    let pao = if root_user {
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_pao"), bin.join("pao")).unwrap();
        std::fs::set_permissions(bin.join("pao"), std::fs::Permissions::from_mode(0o755)).unwrap();
        bin.join("pao")
    } else {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_pao"))
    };
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if root_user {
        argv.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ]
            .map(Into::into),
        );
    }
    argv.push(pao.into_os_string());
    argv.extend([
        "serve".into(),
        "--config".into(),
        config.clone().into_os_string(),
    ]);
    let (program, rest) = argv.split_first().unwrap();
    let mut child = std::process::Command::new(program);
    child
        .args(rest)
        .current_dir(&cwd)
        .env_remove("PAO_DATABASE_URL")
        .env_remove("PAO_CONFIG")
        .env_remove("PAO_BIND")
        .env("HOME", &cwd);
    let p = support::spawn_command(child, Duration::from_secs(60));
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/api/v1/health/ready", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let r: Value = http
        .post(format!("{}/api/v1/requests", p.base))
        .bearer_auth("t-alice")
        .json(&json!({"item_id": "ro.note", "fields": {"text": "hello"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let mut state = Value::Null;
    for _ in 0..200 {
        state = http
            .get(format!("{}/api/v1/requests/{id}/status", p.base))
            .bearer_auth("t-alice")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if state["state"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"], "completed", "{state}");
    drop(p);
    assert!(
        files_under(&cwd).is_empty(),
        "wrote into its working directory: {:?}",
        files_under(&cwd)
    );
    assert_eq!(files_under(&etc), vec![config.display().to_string()]);
    assert_eq!(files_under(&catalog).len(), 1);
    assert!(
        data.join("pao.db").exists(),
        "the database is in the data folder"
    );
    if !root_user {
        for d in [&cwd, &etc, &catalog] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
