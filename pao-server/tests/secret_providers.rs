//! The server takes its secrets from the provider `[secret_provider]` names: here Vault (the
//! sandbox's fake, on 127.0.0.1), read at start for the inbound webhook keys.

mod support;

use pao_sandbox::vault::VaultFake;
use pao_server::config::ServerConfig;
use pao_server::state::AppState;
use serde_json::json;

async fn config_with_vault(vault: &VaultFake, auth: &str) -> ServerConfig {
    let url = support::database_url(support::Db::Sqlite).await.unwrap();
    let text = format!(
        r#"
database_url = "{url}"
catalog = "{catalog}"
workers = 0
watch_catalog = false

[webhooks]
github_secret = "github_hook"

[secret_provider]
kind = "vault"
address = "{address}"
path_prefix = "pao"
cache_ttl = "1s"

[secret_provider.auth]
{auth}
"#,
        catalog = support::catalog_copy().display(),
        address = vault.url(),
    );
    ServerConfig::from_toml(&text).expect("the configuration parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reads_its_secrets_from_vault() {
    let vault = VaultFake::start().await.unwrap();
    vault.add_approle("pao-server", "sid-0123");
    vault.put_secret(
        "secret",
        "pao/github_hook",
        json!({"value": "gh-hook-key-from-vault-0123"}),
    );
    let config = config_with_vault(
        &vault,
        "method = \"approle\"\nrole_id = \"pao-server\"\nsecret_id = \"sid-0123\"",
    )
    .await;
    let state = AppState::build(config, Default::default())
        .await
        .expect("the server starts");
    assert_eq!(vault.logins(), 1, "the start logged in to Vault");
    assert_eq!(
        state.secrets.get("github_hook").await.unwrap(),
        "gh-hook-key-from-vault-0123"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_checks_webhook_keys_read_from_vault() {
    let vault = VaultFake::start().await.unwrap();
    vault.put_secret("secret", "pao/github_hook", json!({"value": "short"}));
    let config = config_with_vault(
        &vault,
        &format!(
            "method = \"token\"\ntoken = \"{}\"",
            pao_sandbox::vault::ROOT_TOKEN
        ),
    )
    .await;
    let e = AppState::build(config, Default::default())
        .await
        .err()
        .expect("a 5-byte webhook key is refused");
    assert!(e.to_string().contains("github_secret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_provider_configuration_stops_the_start() {
    let vault = VaultFake::start().await.unwrap();
    let config = config_with_vault(&vault, "method = \"approle\"\nrole_id = \"pao-server\"").await;
    let e = AppState::build(config, Default::default())
        .await
        .err()
        .expect("an AppRole without a secret id is refused");
    let e = e.to_string();
    assert!(
        e.contains("method `approle` takes one of `secret_id` and `secret_id_file`"),
        "{e}"
    );
    assert_eq!(vault.logins(), 0);
}

/// The server's own secrets (webhook keys, key-encryption keys) are reserved: a plugin grant
/// that names one stops the start, and a KEK that is not a key does too, without its value.
#[tokio::test]
async fn reserved_secrets_and_bad_keys_stop_the_start() {
    let dir = std::env::temp_dir().join(format!("pao-reserved-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("catalog")).unwrap();
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    let base = format!(
        "database_url = \"sqlite://{d}/pao.db\"\ncatalog = \"{d}/catalog\"\n",
        d = dir.display()
    );
    let granted = format!(
        "{base}[secrets]\napproval_webhook = \"0123456789abcdef0123\"\n[webhooks]\napproval_secret = \"approval_webhook\"\n[plugins]\ndir = \"{d}/plugins\"\n[plugins.grants.slack-notify]\nsecrets = [\"approval_webhook\"]\n",
        d = dir.display()
    );
    let e = AppState::build(
        ServerConfig::from_toml(&granted).unwrap(),
        Default::default(),
    )
    .await
    .err()
    .expect("a plugin granted a webhook key is refused")
    .to_string();
    assert!(
        e.contains("plugins.grants.slack-notify.secrets: `approval_webhook` is reserved"),
        "{e}"
    );
    let bad_key = format!(
        "{base}[secrets]\npao_kek = \"not-a-key-but-secret-text\"\n[sealing]\nkek = \"pao_kek\"\n"
    );
    let e = AppState::build(
        ServerConfig::from_toml(&bad_key).unwrap(),
        Default::default(),
    )
    .await
    .err()
    .expect("a KEK that is not 32 bytes is refused")
    .to_string();
    assert!(e.contains("sealing: secret `pao_kek`"), "{e}");
    assert!(!e.contains("not-a-key-but-secret-text"), "{e}");
}

/// A request whose secret comes from Vault while Vault is down waits and is tried again; it
/// does not fail. Once Vault answers, it completes. The key-encryption key comes from Vault
/// too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_out_a_vault_outage_and_completes() {
    let vault = VaultFake::start().await.unwrap();
    vault.add_approle("pao-server", "sid-0123");
    vault.put_secret(
        "secret",
        "pao/api_token",
        json!({"value": "token-from-vault-0123"}),
    );
    vault.put_secret(
        "secret",
        "pao/pao_kek",
        json!({"value": "c2VhbGVkLXNlY3JldHMtdGVzdC1rZXktMzItYnl0ZXM="}),
    );
    let dir = std::env::temp_dir().join(format!("pao-vault-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("echo.yaml"),
        r#"apiVersion: pao.dev/v2
kind: CatalogItem
metadata: { id: vault.echo, name: Vault echo, description: Reads a secret from Vault., version: 1.0.0, category: security, owner: { team: platform } }
secrets: [api_token]
fulfillment:
  mode: automated
  actions:
    - { id: echo, type: "plugin:echo", config: { message: "${{ secrets.api_token }}" } }
"#,
    )
    .unwrap();
    let provider = ServerConfig::from_toml(&format!(
        "[secret_provider]\nkind = \"vault\"\naddress = \"{}\"\npath_prefix = \"pao\"\ncache_ttl = \"1s\"\n[secret_provider.auth]\nmethod = \"approle\"\nrole_id = \"pao-server\"\nsecret_id = \"sid-0123\"\n",
        vault.url()
    ))
    .unwrap()
    .secret_provider;
    let catalog = dir.clone();
    let Some(s) = support::spawn_with(support::Db::Sqlite, move |c| {
        c.catalog = catalog;
        c.secrets.clear();
        c.webhooks = Default::default();
        c.secret_provider = provider;
        c.sealing.kek = Some("pao_kek".into());
    })
    .await
    else {
        return;
    };
    vault.set_sealed(true);
    let (code, r) = s
        .post(
            "t-alice",
            "/requests",
            json!({"item_id": "vault.echo", "fields": {}}),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    // The run meets the outage, says so, and leaves the request to be tried again.
    let mut warned = false;
    for _ in 0..100 {
        let (_, events) = s.get("t-alice", &format!("/requests/{id}/logs")).await;
        if events
            .to_string()
            .contains("secret provider is unavailable")
        {
            warned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, events) = s.get("t-alice", &format!("/requests/{id}/logs")).await;
    let (_, now) = s.get("t-alice", &format!("/requests/{id}")).await;
    assert!(
        warned,
        "the outage is reported on the request: {events} {now}"
    );
    let (_, now) = s.get("t-alice", &format!("/requests/{id}")).await;
    assert_ne!(
        now["state"], "failed",
        "an outage is not the request's fault: {now}"
    );
    vault.set_sealed(false);
    let mut state = String::new();
    for _ in 0..300 {
        let (_, r) = s.get("t-alice", &format!("/requests/{id}")).await;
        state = r["state"].as_str().unwrap_or_default().to_string();
        assert_ne!(state, "failed", "{r}");
        if state == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state, "completed");
    let (_, detail) = s.get("t-alice", &format!("/requests/{id}")).await;
    assert!(
        !detail.to_string().contains("token-from-vault-0123"),
        "the secret is redacted: {detail}"
    );
    s.stop().await;
}
