//! The `webhook` action against the signature-verifying receiver.

mod support;

use std::time::Duration;

use pao_sandbox::Fault;
use pao_sandbox::webhook::verify_signature;
use serde_json::json;
use support::*;

fn input(s: &Sandbox) -> serde_json::Value {
    json!({"url": format!("{}/cmdb/databases", s.url("PAO_EVENTS_WEBHOOK_URL")), "secret": s.secret("hook_hmac"),
           "headers": {"X-PAO-Event": "db.created"}, "body": {"name": "orders", "port": 5432}})
}

#[tokio::test]
async fn signed_delivery_is_accepted_by_a_verifying_receiver() {
    let s = sandbox().await;
    let out = s.run("webhook", "pao-r1-notify", &input(&s)).await.unwrap();
    assert_eq!(out.result["status"], 200);
    let d = s.fakes.webhook.deliveries();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].path, "/cmdb/databases");
    assert_eq!(d[0].body, json!({"name": "orders", "port": 5432}));
    assert!(
        d[0].headers
            .iter()
            .any(|(n, v)| n == "x-pao-event" && v == "db.created")
    );
}

#[tokio::test]
async fn wrong_secret_is_refused_as_permanent() {
    let s = sandbox().await;
    let mut i = input(&s);
    i["secret"] = json!("not-the-shared-key");
    let e = s.run("webhook", "k", &i).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("invalid signature"), "{}", e.message);
    assert_eq!(s.fakes.webhook.rejected(), 1);
    let mut unsigned = input(&s);
    unsigned.as_object_mut().unwrap().remove("secret");
    assert!(s.run("webhook", "k2", &unsigned).await.is_err());
}

#[tokio::test]
async fn redelivery_has_one_effect() {
    let s = sandbox().await;
    s.run("webhook", "k-same", &input(&s)).await.unwrap();
    let again = s.run("webhook", "k-same", &input(&s)).await.unwrap();
    assert_eq!(again.result["body"]["duplicate"], true);
    assert_eq!(s.fakes.webhook.deliveries().len(), 1);
}

#[test]
fn documented_verification_matches_the_signer() {
    let sig = pao_actions::webhook::signature("k3y", 1_700_000_000, b"{\"a\":1}");
    assert!(verify_signature("k3y", "1700000000", b"{\"a\":1}", &sig));
    assert!(!verify_signature("k3y", "1700000001", b"{\"a\":1}", &sig));
    assert!(!verify_signature("other", "1700000000", b"{\"a\":1}", &sig));
}

#[tokio::test]
async fn fault_classes() {
    let s = sandbox().await;
    let i = input(&s);
    s.fakes.webhook.faults.inject(Fault::Status(404), 1);
    assert_permanent(&s.run("webhook", "f", &i).await.unwrap_err());
    s.fakes.webhook.faults.inject(
        Fault::RateLimited {
            retry_after_secs: 9,
        },
        1,
    );
    assert_eq!(
        s.run("webhook", "f", &i).await.unwrap_err().retry_after,
        Some(Duration::from_secs(9))
    );
    s.fakes.webhook.faults.inject(Fault::Status(500), 1);
    assert_retryable(&s.run("webhook", "f", &i).await.unwrap_err());
    s.fakes
        .webhook
        .faults
        .inject(Fault::Delay(Duration::from_secs(2)), 1);
    assert_retryable(&s.run("webhook", "f", &i).await.unwrap_err());
    s.fakes.webhook.faults.inject(Fault::Oversized(2 << 20), 1);
    assert_permanent(&s.run("webhook", "f", &i).await.unwrap_err());
    // A receiver's 2xx body need not be JSON.
    s.fakes.webhook.faults.inject(Fault::MalformedJson, 1);
    assert_eq!(
        s.run("webhook", "f", &i).await.unwrap().result["status"],
        200
    );
    s.run("webhook", "f", &i).await.unwrap();
    assert_eq!(s.fakes.webhook.deliveries().len(), 1);
}

#[tokio::test]
async fn dry_run_shows_headers_without_the_signature_or_secret() {
    let s = sandbox().await;
    let mut ctx = s.ctx("dry");
    ctx.dry_run = true;
    let out = s.action("webhook").execute(&ctx, &input(&s)).await.unwrap();
    let r = &out.result["requests"][0];
    assert_eq!(r["headers"]["X-PAO-Signature"], "[REDACTED]");
    assert_eq!(r["body"]["name"], "orders");
    assert!(!out.result.to_string().contains(&s.secret("hook_hmac")));
    assert!(s.fakes.webhook.faults.requests().is_empty());
}
