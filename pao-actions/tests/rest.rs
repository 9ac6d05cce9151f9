//! The `rest` action against the REST API fakes.

mod support;

use std::time::Duration;

use pao_sandbox::Fault;
use serde_json::json;
use support::*;

fn dns_record(s: &Sandbox) -> serde_json::Value {
    json!({
        "method": "POST",
        "url": format!("{}/v1/zones/db.example.internal/records", s.url("PAO_DNS_API_URL")),
        "auth": {"kind": "api_key", "name": "X-API-Key", "value": s.secret("dns_api_key"), "in": "header"},
        "body": {"name": "orders", "type": "CNAME", "ttl": 300, "value": "pending"},
        "success_status": [201, 409],
        "idempotency_header": "Idempotency-Key",
        "extract": {"id": "$.id", "serial": "$.zone_serial"}
    })
}

#[tokio::test]
async fn post_with_api_key_extracts_with_jsonpath() {
    let s = sandbox().await;
    let out = s.run("rest", "pao-r-dns", &dns_record(&s)).await.unwrap();
    assert_eq!(out.result["status"], 201);
    assert_eq!(out.result["body"]["fqdn"], "orders.db.example.internal");
    assert_eq!(out.result["extract"]["id"], out.result["body"]["id"]);
    assert!(out.result["extract"]["serial"].is_u64());
}

#[tokio::test]
async fn idempotency_key_makes_a_rerun_a_replay() {
    let s = sandbox().await;
    let a = s.run("rest", "pao-r-idem", &dns_record(&s)).await.unwrap();
    let b = s.run("rest", "pao-r-idem", &dns_record(&s)).await.unwrap();
    assert_eq!(a.result["body"], b.result["body"]);
    assert_eq!(b.result["headers"]["idempotent-replayed"], "true");
    let effects: Vec<_> = s
        .fakes
        .rest
        .effects()
        .into_iter()
        .filter(|e| e.idempotency_key.as_deref() == Some("pao-r-idem"))
        .collect();
    assert_eq!(effects.len(), 1);
}

#[tokio::test]
async fn basic_bearer_and_query_key_auth() {
    let s = sandbox().await;
    let kafka = json!({
        "method": "POST", "url": format!("{}/v3/clusters/c1/topics", s.url("PAO_KAFKA_REST_URL")),
        "auth": {"kind": "basic", "username": "pao-provisioner", "password": s.secret("kafka_rest_password")},
        "body": {"topic_name": "orders", "partitions_count": 6, "replication_factor": 3}, "success_status": [201]
    });
    let out = s.run("rest", "k-kafka", &kafka).await.unwrap();
    assert!(out.result["body"]["topic_id"].is_string());
    let kube = json!({
        "method": "POST", "url": format!("{}/clusters/eu-1/api/v1/namespaces", s.url("PAO_KUBE_API_URL")),
        "auth": {"kind": "bearer", "token": s.secret("kube_provisioner_token")},
        "body": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}, "success_status": [201]
    });
    let out = s.run("rest", "k-kube", &kube).await.unwrap();
    assert!(out.result["body"]["metadata"]["uid"].is_string());
    // Second create: Kubernetes' own Status body in a permanent error.
    let e = s.run("rest", "k-kube-2", &kube).await.unwrap_err();
    assert_permanent(&e);
    assert!(
        e.message.contains("409") && e.message.contains("already exists"),
        "{}",
        e.message
    );
    let wrong = json!({"url": format!("{}/v1/zones/z/status", s.url("PAO_DNS_API_URL")),
        "auth": {"kind": "api_key", "name": "api_key", "value": "nope", "in": "query"}});
    let e = s.run("rest", "k-q", &wrong).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("401"), "{}", e.message);
}

fn oauth_call(s: &Sandbox) -> serde_json::Value {
    json!({
        "method": "POST", "url": format!("{}/admin/v1/clients", s.url("PAO_IDP_URL")),
        "auth": {"kind": "oauth2_client_credentials", "token_url": format!("{}/oauth2/token", s.url("PAO_IDP_URL")),
                 "client_id": "pao-idp-admin", "client_secret": s.secret("idp_admin_client_secret"), "scopes": ["clients.manage"]},
        "body": {"client_name": "svc"}, "success_status": [201]
    })
}

#[tokio::test]
async fn oauth2_token_is_cached_and_refreshed_on_401() {
    let s = sandbox().await;
    s.run("rest", "o1", &oauth_call(&s)).await.unwrap();
    s.run("rest", "o2", &oauth_call(&s)).await.unwrap();
    assert_eq!(s.fakes.rest.token_requests(), 1, "cached token reused");
    s.fakes.rest.revoke_tokens();
    s.run("rest", "o3", &oauth_call(&s)).await.unwrap();
    assert_eq!(s.fakes.rest.token_requests(), 2, "401 fetched a new token");
}

#[tokio::test]
async fn oauth2_expired_token_is_renewed() {
    let s = sandbox().await;
    s.fakes.rest.set_token_ttl(2);
    s.run("rest", "e1", &oauth_call(&s)).await.unwrap();
    s.run("rest", "e2", &oauth_call(&s)).await.unwrap();
    assert_eq!(s.fakes.rest.token_requests(), 1);
    // Renewed a second before it expires.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.run("rest", "e3", &oauth_call(&s)).await.unwrap();
    assert_eq!(s.fakes.rest.token_requests(), 2);
}

#[tokio::test]
async fn bad_client_secret_is_permanent_with_the_idp_message() {
    let s = sandbox().await;
    let mut c = oauth_call(&s);
    c["auth"]["client_secret"] = json!("wrong-secret-value");
    let e = s.run("rest", "bad", &c).await.unwrap_err();
    assert_permanent(&e);
    assert!(
        e.message.contains("Client authentication failed"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("wrong-secret-value"));
}

#[tokio::test]
async fn polls_until_the_condition_holds() {
    let s = sandbox().await;
    let base = s.url("PAO_REDIS_ADMIN_URL");
    let input = json!({
        "method": "POST", "url": format!("{base}/v2/caches"),
        "auth": {"kind": "bearer", "token": s.secret("redis_admin_token")},
        "body": {"name": "sessions"}, "success_status": [202], "idempotency_header": "Idempotency-Key",
        "extract": {"operation": "$.operation_id"},
        "poll": {"url": format!("{base}/v2/operations/${{{{ result.extract.operation }}}}"), "until": "result.body.state == 'DONE'", "interval": "10ms", "timeout": "5s"}
    });
    let out = s.run("rest", "poll-1", &input).await.unwrap();
    assert_eq!(out.result["body"]["state"], "DONE");
    assert!(
        out.result["body"]["cache"]["primary_endpoint"]
            .as_str()
            .unwrap()
            .starts_with("sessions.")
    );
}

#[tokio::test]
async fn poll_gives_up_after_its_timeout() {
    let s = sandbox().await;
    let input = json!({
        "url": format!("{}/v1/zones/z/status", s.url("PAO_DNS_API_URL")),
        "auth": {"kind": "api_key", "name": "X-API-Key", "value": s.secret("dns_api_key")},
        "poll": {"until": "result.body.serial > 99999999999", "interval": "10ms", "timeout": "100ms"}
    });
    let e = s.run("rest", "poll-2", &input).await.unwrap_err();
    assert_retryable(&e);
    assert!(e.message.contains("still false"), "{}", e.message);
}

#[tokio::test]
async fn fault_classes() {
    let s = sandbox().await;
    let input = dns_record(&s);
    s.fakes.rest.faults.inject(Fault::Status(404), 1);
    assert_permanent(&s.run("rest", "f404", &input).await.unwrap_err());
    s.fakes.rest.faults.inject(
        Fault::RateLimited {
            retry_after_secs: 3,
        },
        1,
    );
    let e = s.run("rest", "f429", &input).await.unwrap_err();
    assert_retryable(&e);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    s.fakes.rest.faults.inject(Fault::Status(503), 1);
    assert_retryable(&s.run("rest", "f5xx", &input).await.unwrap_err());
    s.run("rest", "f5xx", &input).await.unwrap();
    s.fakes
        .rest
        .faults
        .inject(Fault::Delay(Duration::from_secs(2)), 1);
    let e = s.run("rest", "fto", &input).await.unwrap_err();
    assert_retryable(&e);
    s.fakes.rest.faults.inject(Fault::MalformedJson, 1);
    let mut ok200 = input.clone();
    ok200["success_status"] = json!(["2xx"]);
    let e = s.run("rest", "fmj", &ok200).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("not valid JSON"));
}

#[tokio::test]
async fn response_cap_from_config() {
    let s = sandbox().await;
    let mut input = dns_record(&s);
    input["max_response_bytes"] = json!(1000);
    s.fakes.rest.faults.inject(Fault::Oversized(5000), 1);
    let e = s.run("rest", "cap", &input).await.unwrap_err();
    assert_permanent(&e);
    assert!(
        e.message.contains("larger than the 1000 bytes"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn rollback_by_delete_accepts_listed_statuses() {
    let s = sandbox().await;
    let out = s.run("rest", "rb", &dns_record(&s)).await.unwrap();
    let id = out.result["body"]["id"].as_str().unwrap().to_string();
    let del = json!({"method": "DELETE", "url": format!("{}/v1/zones/db.example.internal/records/{id}", s.url("PAO_DNS_API_URL")),
        "auth": {"kind": "api_key", "name": "X-API-Key", "value": s.secret("dns_api_key")}, "success_status": [204, 404]});
    assert_eq!(
        s.run("rest", "rb-rollback", &del).await.unwrap().result["status"],
        204
    );
    assert_eq!(
        s.run("rest", "rb-rollback2", &del).await.unwrap().result["status"],
        404
    );
    assert!(
        s.fakes
            .rest
            .resources("/dns/v1/zones/db.example.internal/records")
            .is_empty()
    );
}

#[tokio::test]
async fn dry_run_redacts_auth() {
    let s = sandbox().await;
    let mut ctx = s.ctx("dry");
    ctx.dry_run = true;
    let out = s
        .action("rest")
        .execute(&ctx, &oauth_call(&s))
        .await
        .unwrap();
    let text = out.result.to_string();
    assert!(!text.contains(&s.secret("idp_admin_client_secret")));
    assert_eq!(
        out.result["requests"][0]["headers"]["Authorization"],
        "[REDACTED]"
    );
    assert_eq!(s.fakes.rest.token_requests(), 0);
}
