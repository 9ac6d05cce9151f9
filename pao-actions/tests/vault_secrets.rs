//! The Vault secret provider against the Vault fake of `pao-sandbox`, over loopback: each
//! login method, token renewal and re-login, rotation seen after the cache TTL, pinned
//! versions, and how failures are classified.

use std::path::PathBuf;
use std::time::Duration;

use pao_actions::secrets::{VaultConfig, VaultSecrets};
use pao_core::secrets::{SecretError, SecretProvider};
use pao_sandbox::vault::{ROOT_TOKEN, VaultFake};
use serde_json::{Value, json};

async fn fake() -> VaultFake {
    let v = VaultFake::start().await.expect("fake starts");
    v.put_secret("secret", "pao/jira_token", json!({"value": "jira-v1"}));
    v
}

fn provider(v: &VaultFake, auth: Value, extra: Value) -> VaultSecrets {
    let mut c = json!({
        "address": v.url(),
        "path_prefix": "pao/",
        "auth": auth,
        "request_timeout": "2s",
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    let config: VaultConfig = serde_json::from_value(c).expect("config deserializes");
    VaultSecrets::new(config).expect("config is valid")
}

fn temp_file(tag: &str, content: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "pao-vault-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::write(&p, content).expect("temp file written");
    p
}

#[tokio::test]
async fn token_auth_reads_a_secret() {
    let v = fake().await;
    let s = provider(
        &v,
        json!({"method": "token", "token": ROOT_TOKEN}),
        json!({}),
    );
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.logins(), 0);
}

#[tokio::test]
async fn token_file_auth_reads_a_secret() {
    let v = fake().await;
    let file = temp_file("token", &format!("{ROOT_TOKEN}\n"));
    let s = provider(
        &v,
        json!({"method": "token", "token_file": file}),
        json!({}),
    );
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn approle_auth_logs_in_once_and_reads() {
    let v = fake().await;
    v.add_approle("pao-role", "s3cret-id");
    let file = temp_file("secret-id", "s3cret-id\n");
    let s = provider(
        &v,
        json!({"method": "approle", "role_id": "pao-role", "secret_id_file": file}),
        json!({"cache_ttl": "0s"}),
    );
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.logins(), 1, "the token is reused");
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn approle_with_a_wrong_secret_id_is_denied_without_leaking_it() {
    let v = fake().await;
    v.add_approle("pao-role", "right-id");
    let s = provider(
        &v,
        json!({"method": "approle", "role_id": "pao-role", "secret_id": "wrong-id-value"}),
        json!({}),
    );
    match s.get("jira_token").await {
        Err(SecretError::Denied(m)) => {
            assert!(m.contains("AppRole login"), "{m}");
            assert!(!m.contains("wrong-id-value"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn kubernetes_auth_reads_with_the_service_account_token() {
    let v = fake().await;
    v.add_kubernetes_role("pao", "eyJhbGciOiJSUzI1NiJ9.sa.sig");
    let jwt = temp_file("jwt", "eyJhbGciOiJSUzI1NiJ9.sa.sig");
    let s = provider(
        &v,
        json!({"method": "kubernetes", "role": "pao", "jwt_file": jwt}),
        json!({}),
    );
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.logins(), 1);
    std::fs::remove_file(jwt).unwrap();
}

#[tokio::test]
async fn a_short_lived_token_is_renewed_and_reads_keep_working() {
    let v = fake().await;
    v.add_approle("pao-role", "id");
    v.set_token_ttl(Duration::from_secs(3));
    let s = provider(
        &v,
        json!({"method": "approle", "role_id": "pao-role", "secret_id": "id"}),
        json!({"cache_ttl": "0s"}),
    );
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.renewals(), 0);
    // Past two thirds of the 3 s lease, not past its end.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.renewals(), 1, "renew-self was called");
    assert_eq!(v.logins(), 1, "no second login");
    // The renewed token carries on past the first lease's end.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.logins(), 1);
}

#[tokio::test]
async fn an_expired_token_is_replaced_by_a_new_login() {
    let v = fake().await;
    v.add_approle("pao-role", "id");
    let s = provider(
        &v,
        json!({"method": "approle", "role_id": "pao-role", "secret_id": "id"}),
        json!({"cache_ttl": "0s"}),
    );
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.logins(), 1);
    // Vault says the token is gone before its lease says so (revoked, or Vault restarted).
    v.expire_tokens();
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.logins(), 2, "a 403 led to one new login");
}

#[tokio::test]
async fn a_token_past_its_lease_is_replaced_without_a_refused_read() {
    let v = fake().await;
    v.add_approle("pao-role", "id");
    v.set_token_ttl(Duration::from_secs(1));
    let s = provider(
        &v,
        json!({"method": "approle", "role_id": "pao-role", "secret_id": "id"}),
        json!({"cache_ttl": "0s"}),
    );
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = v.reads();
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.logins(), 2);
    assert_eq!(v.reads(), before + 1, "one read, with the new token");
}

#[tokio::test]
async fn a_rotated_secret_is_seen_after_the_cache_ttl_and_not_before() {
    let v = fake().await;
    let s = provider(
        &v,
        json!({"method": "token", "token": ROOT_TOKEN}),
        json!({"cache_ttl": "600ms"}),
    );
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    let version = v.put_secret("secret", "pao/jira_token", json!({"value": "jira-v2"}));
    assert_eq!(version, 2);
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1", "cached");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v2");
}

#[tokio::test]
async fn a_secret_written_over_the_api_is_read_back() {
    let v = fake().await;
    let written: Value = write_over_http(&v, "pao/db", json!({"value": "pw"})).await;
    assert_eq!(written["data"]["version"], 1);
    let s = provider(
        &v,
        json!({"method": "token", "token": ROOT_TOKEN}),
        json!({}),
    );
    assert_eq!(s.get("db").await.unwrap(), "pw");
}

/// Writes through the fake's HTTP API (`POST /v1/secret/data/<path>`), with a bare HTTP/1.1
/// request so the test needs no client of its own.
async fn write_over_http(v: &VaultFake, path: &str, data: Value) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!({ "data": data }).to_string();
    let addr = v.url().trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST /v1/secret/data/{path} HTTP/1.1\r\nHost: {addr}\r\nX-Vault-Token: {ROOT_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    let (_, json) = out.split_once("\r\n\r\n").expect("a response");
    serde_json::from_str(json.trim()).expect("JSON body")
}

#[tokio::test]
async fn a_pinned_version_keeps_returning_its_value() {
    let v = fake().await;
    v.put_secret("secret", "pao/teams/jira", json!({"token": "t-v1"}));
    v.put_secret("secret", "pao/teams/jira", json!({"token": "t-v2"}));
    let s = provider(
        &v,
        json!({"method": "token", "token": ROOT_TOKEN}),
        json!({"cache_ttl": "0s", "map": {
            "jira_old": "teams/jira#token@1",
            "jira_now": "teams/jira#token",
        }}),
    );
    assert_eq!(s.get("jira_old").await.unwrap(), "t-v1");
    assert_eq!(s.get("jira_now").await.unwrap(), "t-v2");
    v.put_secret("secret", "pao/teams/jira", json!({"token": "t-v3"}));
    assert_eq!(s.get("jira_old").await.unwrap(), "t-v1");
    assert_eq!(s.get("jira_now").await.unwrap(), "t-v3");
    assert!(
        v.faults
            .requests()
            .iter()
            .any(|r| r.uri == "/v1/secret/data/pao/teams/jira?version=1"),
        "{:?}",
        v.faults.requests()
    );
}

#[tokio::test]
async fn an_absent_secret_or_key_is_not_found() {
    let v = fake().await;
    v.put_secret("secret", "pao/no_value", json!({"other": "x"}));
    let s = provider(
        &v,
        json!({"method": "token", "token": ROOT_TOKEN}),
        json!({}),
    );
    assert_eq!(
        s.get("missing").await,
        Err(SecretError::NotFound("missing".into()))
    );
    match s.get("no_value").await {
        Err(SecretError::NotFound(m)) => {
            assert!(m.contains("secret/data/pao/no_value"), "{m}");
            assert!(m.contains("\"value\""), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // Names that are not one path segment never reach Vault.
    let reads = v.reads();
    assert!(matches!(
        s.get("../sys/seal").await,
        Err(SecretError::NotFound(_))
    ));
    assert_eq!(v.reads(), reads);
}

#[tokio::test]
async fn a_path_outside_the_policy_is_denied_after_one_new_login() {
    let v = fake().await;
    v.add_approle("pao-role", "id");
    v.put_secret("secret", "pao/forbidden", json!({"value": "x"}));
    v.deny("secret", "pao/forbidden");
    let s = provider(
        &v,
        json!({"method": "approle", "role_id": "pao-role", "secret_id": "id"}),
        json!({}),
    );
    match s.get("forbidden").await {
        Err(SecretError::Denied(m)) => assert!(m.contains("secret/data/pao/forbidden"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(v.logins(), 2);
}

#[tokio::test]
async fn vault_sealed_or_gone_is_unavailable_not_missing() {
    let v = fake().await;
    let s = provider(
        &v,
        json!({"method": "token", "token": ROOT_TOKEN}),
        json!({"cache_ttl": "0s"}),
    );
    v.set_sealed(true);
    match s.get("jira_token").await {
        Err(SecretError::Unavailable(m)) => {
            assert!(m.contains("503"), "{m}");
            assert!(!m.contains(ROOT_TOKEN), "{m}");
        }
        other => panic!("{other:?}"),
    }
    v.set_sealed(false);
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    v.faults.inject(
        pao_sandbox::Fault::RateLimited {
            retry_after_secs: 1,
        },
        1,
    );
    assert!(matches!(
        s.get("jira_token").await,
        Err(SecretError::Unavailable(_))
    ));
    v.faults
        .inject(pao_sandbox::Fault::Delay(Duration::from_secs(3)), 1);
    match s.get("jira_token").await {
        Err(SecretError::Unavailable(m)) => assert!(m.contains("did not answer"), "{m}"),
        other => panic!("{other:?}"),
    }
    v.stop_listening();
    tokio::time::sleep(Duration::from_millis(50)).await;
    match s.get("jira_token").await {
        Err(SecretError::Unavailable(m)) => assert!(m.contains("cannot connect"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_login_while_vault_is_sealed_is_unavailable() {
    let v = fake().await;
    v.add_approle("pao-role", "id");
    v.set_sealed(true);
    let s = provider(
        &v,
        json!({"method": "approle", "role_id": "pao-role", "secret_id": "id"}),
        json!({}),
    );
    assert!(matches!(
        s.get("jira_token").await,
        Err(SecretError::Unavailable(_))
    ));
}

#[tokio::test]
async fn the_namespace_header_is_sent() {
    let v = fake().await;
    let s = provider(
        &v,
        json!({"method": "token", "token": ROOT_TOKEN}),
        json!({"namespace": "platform/team-a"}),
    );
    assert_eq!(s.get("jira_token").await.unwrap(), "jira-v1");
    assert_eq!(v.namespaces(), vec!["platform/team-a".to_string()]);
}
