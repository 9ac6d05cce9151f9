//! `pao serve --sandbox` as a newcomer runs it: the real binary on the example catalog with
//! the local fakes; a request submitted with curl-like calls reaches `Completed`, and one that
//! needs approval completes after the approver approves.
#![cfg(feature = "sandbox")]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn start() -> (support::PaoProcess, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("pao-sandbox-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let catalog = root.join("examples/catalog");
    // The example plugins, built for wasm32-wasip2 the way the README says.
    let plugins = dir.join("plugins");
    support::build_plugins(&plugins);
    std::fs::write(
        dir.join("pao.toml"),
        format!("[plugins]\ndir = {:?}\n", plugins.display().to_string()),
    )
    .unwrap();
    let started = Instant::now();
    let args: Vec<&std::ffi::OsStr> = [
        "serve",
        "--sandbox",
        "--config",
        "pao.toml",
        "--bind",
        "127.0.0.1:0",
        "--catalog",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .chain([catalog.as_os_str()])
    .collect();
    // The first start compiles the plugins (seconds in a debug build); later ones use the cache.
    let p = support::spawn_pao(&args, &dir, Duration::from_secs(120));
    eprintln!("ready after {:?}", started.elapsed());
    (p, dir)
}

async fn wait_state(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    want: &str,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = http
            .get(format!("{base}/api/v1/requests/{id}/status"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if last["state"] == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} did not reach {want}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_sees_requests_complete_in_the_sandbox() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (s, _dir) = start();
    let http = reqwest::Client::new();
    let base = s.base.clone();
    let ready = http
        .get(format!("{base}/api/v1/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // A DNS record through the REST fakes.
    let r: Value = http
        .post(format!("{base}/api/v1/requests"))
        .bearer_auth("dev-alice")
        .json(&json!({ "item_id": "networking.dns-record", "fields": { "zone": "example.internal", "name": "orders", "record_type": "CNAME", "target": "lb.example.internal", "ttl": 300 } }))
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
    let st = wait_state(&http, &base, "dev-alice", &id, "completed").await;
    assert_eq!(st["progress"], 100);

    // Every example item loaded, the plugin ones included.
    let cat: Value = http
        .get(format!("{base}/api/v1/catalog?limit=100"))
        .bearer_auth("dev-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cat["total"], 16, "{cat}");

    // A security incident through the ServiceNow plugin (a WASM component) and its fake.
    let r: Value = http
        .post(format!("{base}/api/v1/requests"))
        .bearer_auth("dev-alice")
        .json(&json!({ "item_id": "security.secret-rotation", "fields": { "secret_path": "apps/payments/orders/db_password", "generate": true, "restart_targets": ["eu-1/payments/api"], "compromised": true, "exposure_details": "Printed in a CI log." } }))
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
    if r["state"] == "awaiting_approval" {
        for approver in ["dev-bob", "dev-carol"] {
            http.post(format!("{base}/api/v1/approvals/{id}/approve"))
                .bearer_auth(approver)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
        }
    }
    wait_state(&http, &base, "dev-alice", &id, "completed").await;
    let d: Value = http
        .get(format!("{base}/api/v1/requests/{id}"))
        .bearer_auth("dev-alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(d["outputs"]["incident"].is_object(), "{}", d["outputs"]);

    // A VM with a public IP needs two approvals: cost estimate, bob and carol approve, then
    // the Terraform Cloud fake and the webhook receiver.
    let r: Value = http
        .post(format!("{base}/api/v1/requests"))
        .bearer_auth("dev-alice")
        .json(&json!({ "item_id": "compute.virtual-machine", "fields": { "hostname": "build-01", "environment": "dev", "region": "eu-west-1", "os": "ubuntu-24.04", "size": "small", "disk_gb": 50, "public_ip": true, "ssh_cidr": "203.0.113.0/24", "expires_on": (chrono::Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%d").to_string() } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if let Some(id) = r["id"].as_str() {
        assert_eq!(r["state"], "awaiting_approval", "{r}");
        for approver in ["dev-bob", "dev-carol"] {
            let ok = http
                .post(format!("{base}/api/v1/approvals/{id}/approve"))
                .bearer_auth(approver)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap());
        }
        let st = wait_state(&http, &base, "dev-alice", id, "completed").await;
        assert_eq!(st["actions_done"], st["actions_total"]);
        let cost: Value = http
            .get(format!("{base}/api/v1/cost/estimates/{id}"))
            .bearer_auth("dev-alice")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            cost["estimates"][0]["result"]["monthly"].is_number(),
            "{cost}"
        );
    } else {
        panic!("the VM request was refused: {r}");
    }
}

/// `pao serve --sandbox` on `catalog` in `dir`, as the README's first command runs it: no
/// configuration file, no `PAO_*` variables.
fn readme_command(catalog: &std::path::Path, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pao"));
    cmd.args(["serve", "--sandbox", "--bind", "127.0.0.1:0", "--catalog"])
        .arg(catalog)
        .current_dir(dir)
        .env_remove("PAO_DATABASE_URL")
        .env_remove("PAO_CONFIG")
        .env_remove("PAO_BIND")
        .env_remove("PAO_CATALOG");
    cmd
}

/// The README's first command as a newcomer runs it, in a fresh folder with no configuration
/// and no plugin folder: the plugins built into `pao` are used, every example item is offered
/// and the catalog reports no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_command_offers_every_example_item() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("pao-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    let stderr = dir.join("stderr.log");
    let cmd = readme_command(&catalog, &dir);
    let started = Instant::now();
    let p = support::spawn_command_logging(cmd, &stderr, Duration::from_secs(120));
    eprintln!("first start ready after {:?}", started.elapsed());
    let http = reqwest::Client::new();
    let cat: Value = http
        .get(format!("{}/api/v1/catalog?limit=100", p.base))
        .bearer_auth("dev-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cat["total"], 16, "{cat}");
    let ready: Value = http
        .get(format!("{}/api/v1/health/ready", p.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["catalog_errors"], 0, "{ready}");
    drop(p);
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        !log.contains("PAO-E"),
        "catalog errors on the terminal: {log}"
    );
    assert!(
        dir.join("data/sandbox-plugins/slack-notify.wasm").is_file(),
        "the built-in plugins were written out"
    );
}

/// A plugin's own config check (its `validate` export) runs when the catalog loads: a config
/// the plugin refuses is a catalog diagnostic at the offending key, and the item is not offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_the_plugin_refuses_is_a_catalog_diagnostic() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("pao-plugin-validate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    std::fs::copy(examples.join("catalog.yaml"), catalog.join("catalog.yaml")).unwrap();
    let item = |id: &str, channel: &str| {
        format!(
            "apiVersion: pao.dev/v2\nkind: CatalogItem\nmetadata:\n  id: {id}\n  name: Notify\n  description: Posts to Slack.\n  version: 1.0.0\n  category: compute\n  owner: {{ team: platform-admins }}\n\
             presentation:\n  groups:\n    - id: basics\n      title: Basics\n      fields:\n        - {{ id: note, type: text }}\n\
             fulfillment:\n  mode: automated\n  actions:\n    - id: notify\n      type: \"plugin:slack-notify\"\n      config:\n        channel: \"{channel}\"\n        text: \"${{{{ fields.note }}}}\"\n"
        )
    };
    // A file that does not load is found by its name.
    std::fs::write(
        catalog.join("notify.bad.yaml"),
        item("notify.bad", "general"),
    )
    .unwrap();
    std::fs::write(catalog.join("good.yaml"), item("notify.good", "#general")).unwrap();
    let stderr = dir.join("stderr.log");
    let cmd = readme_command(&catalog, &dir);
    let p = support::spawn_command_logging(cmd, &stderr, Duration::from_secs(120));
    let http = reqwest::Client::new();
    let get = async |path: &str| -> Value {
        http.get(format!("{}/api/v1{path}", p.base))
            .bearer_auth("dev-admin")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let report = get("/catalog/validation/notify.bad").await;
    assert_eq!(report["loaded"], false, "{report}");
    let d = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "PAO-E020")
        .cloned()
        .unwrap_or_else(|| panic!("no PAO-E020: {report}"));
    assert_eq!(d["pointer"], "/fulfillment/actions/0/config/channel", "{d}");
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .contains("a channel is `#name` or a channel id"),
        "{d}"
    );
    assert!(d["line"].as_u64().unwrap() > 0, "{d}");
    let good = get("/catalog/validation/notify.good").await;
    assert_eq!(good["valid"], true, "{good}");
    assert_eq!(good["loaded"], true, "{good}");
}
