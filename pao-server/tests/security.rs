//! What a caller must not be able to do, tried over HTTP on 127.0.0.1 as an attacker would:
//! act as someone else, charge another team, jump the queue, read metrics without a
//! credential, forge a cross-site POST, open streams from another site's page or without end,
//! flood the server without a credential, or forge an approver through a signed webhook.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::TestServer;

const ALICE: &str = "t-alice";
const ADMIN: &str = "t-admin";
/// In alice's team and an approver of the `leads` team that approves `test.echo`.
const DAVE: &str = "t-dave";

async fn server() -> TestServer {
    support::spawn_with(support::Db::Sqlite, |c| {
        c.auth.tokens.push(pao_server::config::TokenConfig {
            id: "dave".into(),
            token_sha256: pao_server::config::hash_token(DAVE),
            email: None,
            name: None,
            teams: vec!["app-team".into(), "leads".into()],
            roles: vec!["approver".into(), "developer".into()],
        });
    })
    .await
    .expect("server")
}

async fn submit(s: &TestServer, token: &str, body: Value) -> (u16, Value) {
    s.post(token, "/requests", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_the_callers_own_request() {
    let s = server().await;
    let (code, r) = submit(
        &s,
        ALICE,
        json!({ "item_id": "test.echo", "fields": { "name": "svc-r", "fail": true } }),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    let id = r["id"].as_str().unwrap();
    s.wait_state(ALICE, id, "failed").await;
    // Dave, in alice's team, retries it with his own changes, for production (approval by
    // `leads`, which he is in).
    let (code, v) = s
        .post(
            DAVE,
            &format!("/requests/{id}/retry"),
            json!({ "fields": { "fail": false, "environment": "prod" } }),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["requester"], "dave", "the retry is dave's: {v}");
    assert_eq!(v["retry_of"], id);
    assert_eq!(v["state"], "awaiting_approval", "{v}");
    let new = v["id"].as_str().unwrap();
    let (code, v) = s
        .post(DAVE, &format!("/approvals/{new}/approve"), json!({}))
        .await;
    assert_eq!(code, 403, "dave cannot approve his own retry: {v}");
    // The audit trail names dave as the one who submitted it.
    let (code, v) = s.get(ADMIN, &format!("/audit/requests?target={new}")).await;
    assert_eq!(code, 200, "{v}");
    let records = v["records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "request.submit" && r["actor"] == "dave"),
        "{v}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_and_priority_are_the_callers_to_choose_within_their_rights() {
    let s = server().await;
    let body = |extra: Value| {
        let mut b = json!({ "item_id": "test.echo", "fields": { "name": "svc-t" } });
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let (code, v) = submit(&s, ALICE, body(json!({ "team": "leads" }))).await;
    assert_eq!(code, 403, "alice is not in leads: {v}");
    let (code, v) = submit(&s, ALICE, body(json!({ "team": "app-team" }))).await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = submit(&s, ALICE, body(json!({ "priority": 100 }))).await;
    assert_eq!(code, 403, "a developer cannot jump the queue: {v}");
    let (code, v) = submit(&s, ALICE, body(json!({ "priority": -5 }))).await;
    assert_eq!(code, 201, "lowering one's own priority is fine: {v}");
    let (code, v) = submit(&s, ALICE, body(json!({ "priority": 101 }))).await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = submit(
        &s,
        ADMIN,
        body(json!({ "priority": 100, "team": "app-team" })),
    )
    .await;
    assert_eq!(code, 201, "admins may: {v}");
    // Correlation ids are bounded: they are copied into every event.
    let r = s
        .http
        .post(s.url("/requests"))
        .bearer_auth(ALICE)
        .header("x-correlation-id", "c".repeat(129))
        .json(&body(json!({})))
        .send()
        .await
        .unwrap();
    let (code, v) = support::decode(r).await;
    assert_eq!(code, 422, "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_of_different_callers_never_meet() {
    // `a:b` with key `c` and `a` with key `b:c` made the same stored key.
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        for (id, token) in [("a:b", "t-ab"), ("a", "t-a")] {
            c.auth.tokens.push(pao_server::config::TokenConfig {
                id: id.into(),
                token_sha256: pao_server::config::hash_token(token),
                email: None,
                name: None,
                teams: vec!["app-team".into()],
                roles: vec!["developer".into()],
            });
        }
    })
    .await
    .unwrap();
    let post = |token: &'static str, key: &'static str| {
        s.http
            .post(s.url("/requests"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({ "item_id": "test.echo", "fields": { "name": "svc-i" } }))
            .send()
    };
    let (c1, v1) = support::decode(post("t-ab", "c").await.unwrap()).await;
    let (c2, v2) = support::decode(post("t-a", "b:c").await.unwrap()).await;
    assert_eq!((c1, c2), (201, 201), "{v1} {v2}");
    assert_ne!(v1["id"], v2["id"]);
    assert_eq!(v2["requester"], "a");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_credential() {
    let s = server().await;
    let r = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(support::decode(r).await.0, 401);
    let r = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 403);
    let r = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("pao_http_request_duration_seconds")
    );
    s.stop().await;

    // A scrape token for Prometheus.
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        c.metrics.token_sha256 = Some(pao_server::config::hash_token("scrape-me"));
    })
    .await
    .unwrap();
    let r = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_forms_cannot_post() {
    let s = server().await;
    let (code, r) = submit(
        &s,
        ALICE,
        json!({ "item_id": "test.echo", "fields": { "name": "svc-x", "environment": "prod" } }),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    let id = r["id"].as_str().unwrap();
    // A body that is not declared JSON is refused, even where the body is optional.
    let r = s
        .http
        .post(s.url(&format!("/requests/{id}/cancel")))
        .bearer_auth(ALICE)
        .header("content-type", "text/plain")
        .body(r#"{"reason":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 415);
    s.stop().await;

    // Behind a cookie gateway, identity is ambient: every POST must prove it is not a form.
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        c.auth.trusted_header = Some(pao_server::config::TrustedHeaderConfig {
            user: "x-pao-user".into(),
            teams: "x-pao-teams".into(),
            roles: "x-pao-roles".into(),
            email: "x-pao-email".into(),
            trusted_proxies: vec!["127.0.0.1".into()],
            gateway_secret_sha256: None,
            secret_header: "x-pao-gateway-secret".into(),
        });
    })
    .await
    .unwrap();
    let as_bob = |path: String, ct: Option<&'static str>| {
        let mut r = s
            .http
            .post(s.url(&path))
            .header("x-pao-user", "bob")
            .header("x-pao-teams", "leads");
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let (code, r) = submit(
        &s,
        ALICE,
        json!({ "item_id": "test.echo", "fields": { "name": "svc-y", "environment": "prod" } }),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    let id = r["id"].as_str().unwrap();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (code, v) = support::decode(
            as_bob(format!("/approvals/{id}/approve"), ct)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(code, 415, "{ct:?}: {v}");
    }
    let (code, v) = support::decode(
        as_bob(format!("/approvals/{id}/approve"), Some("application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_check_origin_and_are_capped() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        c.limits.websockets_per_principal = 3;
    })
    .await
    .unwrap();
    let url = s.ws_url(&format!("/ws/notifications?access_token={ALICE}"));
    // Another site's page.
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.err();
    assert!(
        matches!(&err, Some(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "{err:?}"
    );
    // This server's own pages.
    let mut req = url.clone().into_client_request().unwrap();
    let origin = s.base.clone();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let (own, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("same origin");
    // Three streams per principal here; the fourth is refused.
    let mut open = vec![own];
    for _ in 0..2 {
        open.push(
            tokio_tungstenite::connect_async(url.clone())
                .await
                .unwrap()
                .0,
        );
    }
    let err = tokio_tungstenite::connect_async(url.clone()).await.err();
    assert!(
        matches!(&err, Some(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 429),
        "{err:?}"
    );
    // Another principal is not affected; a closed stream frees its slot.
    let bob = s.ws_url("/ws/notifications?access_token=t-bob");
    assert!(tokio_tungstenite::connect_async(bob).await.is_ok());
    drop(open.pop());
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(url.clone()).await {
            again = Some(ws);
            break;
        }
    }
    assert!(again.is_some(), "the slot came back");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_credential_are_rate_limited() {
    let s = server().await;
    let mut limited = 0;
    for _ in 0..300 {
        let r = s
            .http
            .get(s.url("/catalog"))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            limited += 1;
        }
    }
    assert!(
        limited > 0,
        "300 failed logins in a burst were never slowed down"
    );
    // Valid callers from the same address are not.
    assert_eq!(s.get(ALICE, "/catalog").await.0, 200);
    s.stop().await;
}

async fn approval_hook(s: &TestServer, body: &Value, ts: &str) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&body);
    let r = s
        .http
        .post(s.url("/webhooks/approval"))
        .header("X-PAO-Timestamp", ts)
        .header(
            "X-PAO-Signature",
            format!(
                "sha256={}",
                support::sign256("approval-secret-0123456789", &signed)
            ),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    support::decode(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_webhook_cannot_forge_an_approver() {
    let s = server().await;
    let (code, r) = submit(
        &s,
        ALICE,
        json!({ "item_id": "test.echo", "fields": { "name": "svc-w", "environment": "prod" } }),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    let id = r["id"].as_str().unwrap();
    let now = chrono::Utc::now().timestamp().to_string();
    // Roles and teams in the delivery are refused outright.
    let (code, v) = approval_hook(
        &s,
        &json!({ "request_id": id, "approver": { "id": "zed", "roles": ["admin"] }, "approved": true }),
        &now,
    )
    .await;
    assert_eq!(code, 422, "{v}");
    // Someone the server does not know decides nothing.
    let (code, v) = approval_hook(
        &s,
        &json!({ "request_id": id, "approver": { "id": "zed" }, "approved": true }),
        &now,
    )
    .await;
    assert_eq!(code, 403, "{v}");
    // A timestamp at the end of the integer range is refused, not a panic.
    let (code, v) = approval_hook(
        &s,
        &json!({ "request_id": id, "approver": { "id": "bob" }, "approved": true }),
        &i64::MIN.to_string(),
    )
    .await;
    assert_eq!(code, 401, "{v}");
    // A known approver, with the teams the server knows for them.
    let (code, v) = approval_hook(
        &s,
        &json!({ "request_id": id, "approver": { "id": "bob" }, "approved": true }),
        &now,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jira_webhook_wants_its_secret_in_a_header_and_a_timestamp() {
    let s = server().await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let payload = json!({
        "timestamp": now_ms,
        "webhookEvent": "jira:issue_updated",
        "issue": { "key": "NET-404", "fields": { "status": { "name": "Done" } } }
    });
    let r = s
        .http
        .post(s.url("/webhooks/jira?secret=jira-shared-secret"))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::decode(r).await.0,
        401,
        "a secret in the URL ends up in proxy logs"
    );
    let mut undated = payload.clone();
    undated.as_object_mut().unwrap().remove("timestamp");
    let r = s
        .http
        .post(s.url("/webhooks/jira"))
        .header("X-PAO-Webhook-Secret", "jira-shared-secret")
        .json(&undated)
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::decode(r).await.0,
        422,
        "an undated delivery could be replayed for ever"
    );
    // JIRA Cloud's body signature.
    let body = serde_json::to_vec(&payload).unwrap();
    let r = s
        .http
        .post(s.url("/webhooks/jira"))
        .header(
            "X-Hub-Signature",
            format!("sha256={}", support::sign256("jira-shared-secret", &body)),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let (code, v) = support::decode(r).await;
    assert_eq!(code, 200, "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_keys_must_be_keys() {
    let url = support::database_url(support::Db::Sqlite).await.unwrap();
    let mut config = pao_server::config::ServerConfig {
        database_url: url,
        catalog: support::catalog_copy(),
        ..Default::default()
    };
    config.secrets.insert("hook".into(), "short".into());
    config.webhooks.github_secret = Some("hook".into());
    let e = pao_server::state::AppState::build(config, Default::default())
        .await
        .err()
        .expect("a 5-byte webhook key is refused");
    assert!(e.to_string().contains("github_secret"), "{e}");
}

#[cfg(feature = "sandbox")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_stays_on_this_machine() {
    let config = pao_server::config::ServerConfig {
        bind: "0.0.0.0:8080".into(),
        ..Default::default()
    };
    let e = pao_server::sandbox::prepare(config)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("loopback"), "{e}");
}
