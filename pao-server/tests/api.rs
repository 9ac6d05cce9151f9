//! Black-box tests of the `/api/v1` surface over HTTP on 127.0.0.1, each run on SQLite and on
//! PostgreSQL: success, unauthorized, forbidden and bad input for every endpoint.

mod support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use support::TestServer;

const ALICE: &str = "t-alice";
const BOB: &str = "t-bob";
const CAROL: &str = "t-carol";
const ADMIN: &str = "t-admin";

async fn submit(s: &TestServer, token: &str, fields: Value) -> Value {
    let (code, v) = s
        .post(
            token,
            "/requests",
            json!({ "item_id": "test.echo", "fields": fields }),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    v
}

// ---------------------------------------------------------------------------------------
async fn probes(s: &TestServer) {
    let r = s.http.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s.http.get(s.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["catalog_items"], 3);
    let v: Value = s
        .http
        .get(s.url("/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["api"], "v1");
    // Metrics carry the latency histogram of the routes called so far.
    let text = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("pao_http_request_duration_seconds"), "{text}");
    assert!(text.contains("route=\"/api/v1/health\""), "{text}");
    // Unknown endpoints are problems too.
    let (code, v) = s.get(ALICE, "/nope").await;
    assert_eq!(code, 404);
    assert_eq!(v["code"], "PAO-API-NOT-FOUND");
}
on_both!(probes_work_without_auth, probes);

// ---------------------------------------------------------------------------------------
/// `GET` with an `If-None-Match`: status, `ETag`, `Cache-Control`, body.
async fn conditional_get(
    s: &TestServer,
    token: &str,
    path: &str,
    if_none_match: Option<&str>,
) -> (u16, String, String, String) {
    let mut r = s.http.get(s.url(path)).bearer_auth(token);
    if let Some(tag) = if_none_match {
        r = r.header("If-None-Match", tag);
    }
    let r = r.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (etag, cache) = (header("etag"), header("cache-control"));
    let status = r.status().as_u16();
    (status, etag, cache, r.text().await.unwrap())
}

async fn catalog_etags(s: &TestServer) {
    for path in [
        "/catalog",
        "/catalog?limit=1",
        "/catalog/compute",
        "/catalog/search?q=echo",
        "/catalog/items/test.echo",
        "/catalog/items/test.echo/schema",
    ] {
        let (code, tag, cache, body) = conditional_get(s, ALICE, path, None).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() > 2,
            "{path}: {tag}"
        );
        assert_eq!(cache, "private, no-cache", "{path}");
        serde_json::from_str::<Value>(&body).unwrap();
        // The same answer again: the same tag; asked for with it, 304 and no body.
        let (_, again, _, _) = conditional_get(s, ALICE, path, None).await;
        assert_eq!(again, tag, "{path}");
        for header in [
            tag.clone(),
            format!("W/{tag}"),
            format!("\"x\", {tag}"),
            "*".into(),
        ] {
            let (code, same, _, body) = conditional_get(s, ALICE, path, Some(&header)).await;
            assert_eq!((code, body.as_str()), (304, ""), "{path} with {header}");
            assert_eq!(same, tag, "{path}");
        }
        let (code, _, _, body) = conditional_get(s, ALICE, path, Some("\"other\"")).await;
        assert_eq!(code, 200, "{path}");
        assert!(!body.is_empty());
    }
    // Another caller sees another list: alice's tag is not theirs.
    let (_, alice_tag, _, _) = conditional_get(s, ALICE, "/catalog", None).await;
    let (code, admin_tag, _, body) = conditional_get(s, ADMIN, "/catalog", Some(&alice_tag)).await;
    assert_eq!(code, 200, "{body}");
    assert_ne!(admin_tag, alice_tag);
    // A changed catalog changes the answer and its tag.
    s.state
        .orch
        .set_catalog(pao_core::catalog::Catalog::default());
    let (code, tag, _, body) = conditional_get(s, ALICE, "/catalog", Some(&alice_tag)).await;
    assert_eq!(code, 200, "{body}");
    assert_ne!(tag, alice_tag);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["total"], 0);
    // Errors carry no tag.
    let (code, tag, _, _) = conditional_get(s, ALICE, "/catalog/items/test.echo", None).await;
    assert_eq!((code, tag.as_str()), (404, ""));
}
on_both!(catalog_answers_carry_etags, catalog_etags);

async fn catalog(s: &TestServer) {
    // 401 without or with a wrong token.
    let r = s.http.get(s.url("/catalog")).send().await.unwrap();
    assert_eq!(support::decode(r).await.0, 401);
    let (code, _) = s.get("wrong", "/catalog").await;
    assert_eq!(code, 401);

    // Visibility follows `access`: alice sees echo and manual, not the restricted item.
    let (code, v) = s.get(ALICE, "/catalog").await;
    assert_eq!(code, 200, "{v}");
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["test.echo", "test.manual"]);
    let (_, v) = s.get(ADMIN, "/catalog").await;
    assert_eq!(v["total"], 3);

    // Pagination with cursors.
    let (_, p1) = s.get(ADMIN, "/catalog?limit=2").await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let cur = p1["next_cursor"].as_str().unwrap().to_string();
    let (_, p2) = s
        .get(ADMIN, &format!("/catalog?limit=2&cursor={cur}"))
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert!(p2["next_cursor"].is_null());
    let (code, v) = s.get(ADMIN, "/catalog?cursor=%%%").await;
    assert_eq!(code, 400, "{v}");
    let (code, _) = s.get(ADMIN, "/catalog?bogus=1").await;
    assert_eq!(code, 400);

    // Category.
    let (code, v) = s.get(ALICE, "/catalog/networking").await;
    assert_eq!(code, 200);
    assert_eq!(v["items"][0]["id"], "test.manual");
    let (code, v) = s.get(ALICE, "/catalog/kitchen").await;
    assert_eq!(code, 404);
    assert!(v["detail"].as_str().unwrap().contains("compute"), "{v}");

    // Search: typo tolerant, access-filtered, highlighted.
    let (code, v) = s.get(ALICE, "/catalog/search?q=ecoh").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["results"][0]["id"], "test.echo", "{v}");
    let (_, v) = s.get(ALICE, "/catalog/search?q=firewall").await;
    assert_eq!(v["results"][0]["id"], "test.manual");
    assert!(
        v["results"][0]["highlights"]["name"]
            .as_str()
            .unwrap()
            .contains("<mark>"),
        "{v}"
    );
    let (_, v) = s.get(CAROL, "/catalog/search?q=restricted").await;
    assert!(
        v["results"].as_array().unwrap().is_empty(),
        "hidden items are not found: {v}"
    );
    let (code, _) = s.get(ALICE, "/catalog/search?q=").await;
    assert_eq!(code, 400);

    // Item, schema, options.
    let (code, v) = s.get(ALICE, "/catalog/items/test.echo").await;
    assert_eq!(code, 200);
    assert_eq!(v["item"]["metadata"]["name"], "Echo service");
    assert_eq!(v["can_submit"], true);
    let (code, _) = s.get(ALICE, "/catalog/items/test.restricted").await;
    assert_eq!(code, 404, "hidden items do not exist for the caller");
    let (code, v) = s.get(ALICE, "/catalog/items/test.echo/schema").await;
    assert_eq!(code, 200);
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert!(v["required"].as_array().unwrap().contains(&json!("name")));
    let (code, v) = s
        .get(ALICE, "/catalog/items/test.echo/fields/environment/options")
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        v["options"],
        json!([{ "value": "dev", "label": "dev" }, { "value": "prod", "label": "prod" }])
    );
    let (_, v) = s
        .get(ALICE, "/catalog/items/test.echo/fields/team/options")
        .await;
    assert_eq!(v["options"][0]["value"], "app-team", "{v}");
    let (code, _) = s
        .get(ALICE, "/catalog/items/test.echo/fields/nope/options")
        .await;
    assert_eq!(code, 404);
    let (code, _) = s
        .get(ALICE, "/catalog/items/test.echo/fields/name/options")
        .await;
    assert_eq!(code, 422);
}
on_both!(catalog_endpoints, catalog);

// ---------------------------------------------------------------------------------------
async fn request_lifecycle(s: &TestServer) {
    let r = submit(s, ALICE, json!({ "name": "svc-a" })).await;
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["state"], "queued", "{r}");
    let st = s.wait_state(ALICE, &id, "completed").await;
    assert_eq!(st["progress"], 100);
    assert_eq!(st["actions_total"], 2);

    // Details: outputs chained through templates, attempts timeline.
    let (code, d) = s.get(ALICE, &format!("/requests/{id}")).await;
    assert_eq!(code, 200);
    assert_eq!(d["outputs"]["second"]["said"], "hello svc-a again", "{d}");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 2);

    // Logs: state changes and the action's own lines, resumable.
    let (_, logs) = s.get(ALICE, &format!("/requests/{id}/logs")).await;
    let events = logs["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["line"].as_str().is_some_and(|l| l.contains("echoing"))),
        "{logs}"
    );
    let first = events[0]["seq"].as_u64().unwrap();
    let (_, rest) = s
        .get(ALICE, &format!("/requests/{id}/logs?after={first}"))
        .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), events.len() - 1);

    // Visibility: the team sees it, an outsider gets 404, an admin sees it.
    let (code, _) = s.get(CAROL, &format!("/requests/{id}")).await;
    assert_eq!(code, 404);
    // The status of an ended request is served from memory after its first read (the wait
    // above): still only to who may see it, and the same as the stored one.
    let (code, _) = s.get(CAROL, &format!("/requests/{id}/status")).await;
    assert_eq!(code, 404);
    let (code, again) = s.get(ALICE, &format!("/requests/{id}/status")).await;
    assert_eq!(code, 200);
    assert_eq!(
        again, st,
        "an ended request's status from memory is the stored one"
    );
    let (code, _) = s.get(CAROL, &format!("/requests/{id}/logs")).await;
    assert_eq!(code, 404);
    let (code, _) = s.get(ADMIN, &format!("/requests/{id}")).await;
    assert_eq!(code, 200);

    // Lists: mine, team, admin-all; states filter; cursor.
    submit(s, ALICE, json!({ "name": "svc-b" })).await;
    let (_, mine) = s.get(ALICE, "/requests?limit=1").await;
    assert_eq!(mine["requests"].as_array().unwrap().len(), 1);
    let cur = mine["next_cursor"].as_str().unwrap().to_string();
    let (_, next) = s
        .get(ALICE, &format!("/requests?limit=1&cursor={cur}"))
        .await;
    assert_eq!(next["requests"].as_array().unwrap().len(), 1);
    assert_ne!(next["requests"][0]["id"], mine["requests"][0]["id"]);
    let (_, none) = s.get(CAROL, "/requests").await;
    assert!(none["requests"].as_array().unwrap().is_empty());
    let (code, _) = s.get(CAROL, "/requests?team=app-team").await;
    assert_eq!(code, 403);
    let (code, _) = s.get(CAROL, "/requests?all=true").await;
    assert_eq!(code, 403);
    let (code, all) = s
        .get(
            ADMIN,
            "/requests?all=true&state=completed,queued,in_progress",
        )
        .await;
    assert_eq!(code, 200);
    assert!(!all["requests"].as_array().unwrap().is_empty());
    let (code, v) = s.get(ALICE, "/requests?state=sleeping").await;
    assert_eq!(code, 400);
    assert!(v["detail"].as_str().unwrap().contains("awaiting_approval"));
}
on_both!(request_lifecycle_endpoints, request_lifecycle);

// ---------------------------------------------------------------------------------------
async fn bad_submissions(s: &TestServer) {
    // Field errors are located.
    let (code, v) = s
        .post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "X!" } }),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["code"], "PAO-API-INVALID-FIELDS");
    assert_eq!(v["errors"][0]["field"], "name", "{v}");
    // Unknown and hidden items.
    let (code, _) = s
        .post(ALICE, "/requests", json!({ "item_id": "nope" }))
        .await;
    assert_eq!(code, 404);
    let (code, _) = s
        .post(ALICE, "/requests", json!({ "item_id": "test.restricted" }))
        .await;
    assert_eq!(code, 404);
    // Unknown body keys, wrong types, broken JSON, no JSON content type.
    let (code, v) = s
        .post(ALICE, "/requests", json!({ "item": "test.echo" }))
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, _) = s
        .post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.echo", "fields": [] }),
        )
        .await;
    assert_eq!(code, 422);
    let (code, _) = s
        .post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.echo", "priority": 1000 }),
        )
        .await;
    assert_eq!(code, 422);
    let r = s
        .http
        .post(s.url("/requests"))
        .bearer_auth(ALICE)
        .header("content-type", "application/json")
        .body("{\"item_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 400);
    let r = s
        .http
        .post(s.url("/requests"))
        .bearer_auth(ALICE)
        .body("item_id=x")
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 415);
    // Too large. The server answers before reading the body and closes that connection, so
    // this goes on a connection of its own (a pooled one could be reused after the close).
    let big = "x".repeat(2 << 20);
    let r = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .post(s.url("/requests"))
        .bearer_auth(ALICE)
        .json(&json!({ "item_id": "test.echo", "fields": { "name": big } }))
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 413);
    // Nothing was stored by any of these.
    let (_, mine) = s.get(ALICE, "/requests").await;
    assert!(mine["requests"].as_array().unwrap().is_empty(), "{mine}");
}
on_both!(
    bad_submissions_are_located_and_store_nothing,
    bad_submissions
);

// ---------------------------------------------------------------------------------------
async fn idempotency(s: &TestServer) {
    let send = |key: &'static str, item: &'static str| {
        s.http
            .post(s.url("/requests"))
            .bearer_auth(ALICE)
            .header("Idempotency-Key", key)
            .json(&json!({ "item_id": item, "fields": { "name": "svc-i" } }))
            .send()
    };
    let (c1, a) = support::decode(send("k-1", "test.echo").await.unwrap()).await;
    let (c2, b) = support::decode(send("k-1", "test.echo").await.unwrap()).await;
    assert_eq!((c1, c2), (201, 200), "{a} {b}");
    assert_eq!(a["id"], b["id"]);
    let (c3, v) = support::decode(send("k-1", "test.manual").await.unwrap()).await;
    assert_eq!(c3, 422, "{v}");
    assert_eq!(v["code"], "PAO-API-IDEMPOTENCY-MISMATCH");
    // Keys are per caller.
    let r = s
        .http
        .post(s.url("/requests"))
        .bearer_auth(BOB)
        .header("Idempotency-Key", "k-1")
        .json(&json!({ "item_id": "test.echo", "fields": { "name": "svc-i" } }))
        .send()
        .await
        .unwrap();
    let (c4, other) = support::decode(r).await;
    assert_eq!(c4, 201);
    assert_ne!(other["id"], a["id"]);
}
on_both!(idempotent_submission, idempotency);

// ---------------------------------------------------------------------------------------
async fn approvals(s: &TestServer) {
    let r = submit(s, ALICE, json!({ "name": "svc-p", "environment": "prod" })).await;
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["state"], "awaiting_approval", "{r}");
    // Bob (leads) sees it pending; alice and carol do not.
    let (code, p) = s.get(BOB, "/approvals/pending").await;
    assert_eq!(code, 200);
    assert_eq!(p["approvals"][0]["approval_id"], id.as_str(), "{p}");
    let (_, p) = s.get(ALICE, "/approvals/pending").await;
    assert!(p["approvals"].as_array().unwrap().is_empty(), "{p}");
    // The requester cannot approve; an outsider does not even see it.
    let (code, _) = s
        .post(ALICE, &format!("/approvals/{id}/approve"), json!({}))
        .await;
    assert_eq!(code, 403);
    let (code, _) = s
        .post(CAROL, &format!("/approvals/{id}/approve"), json!({}))
        .await;
    assert_eq!(code, 404);
    // Rejections need a reason.
    let (code, _) = s
        .post(
            BOB,
            &format!("/approvals/{id}/reject"),
            json!({ "reason": " " }),
        )
        .await;
    assert_eq!(code, 422);
    let (code, _) = s
        .post(BOB, &format!("/approvals/{id}/reject"), json!({}))
        .await;
    assert_eq!(code, 422);
    let r = s
        .http
        .post(s.url(&format!("/approvals/{id}/approve")))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    let (code, v) = support::decode(r).await;
    assert_eq!(code, 200, "{v}");
    s.wait_state(ALICE, &id, "completed").await;
    let (_, d) = s.get(ALICE, &format!("/requests/{id}")).await;
    assert_eq!(d["approvals"][0]["approver"], "bob");
    // Deciding again is a conflict.
    let (code, _) = s
        .post(BOB, &format!("/approvals/{id}/approve"), json!({}))
        .await;
    assert_eq!(code, 409);

    // A rejection ends the request.
    let r = submit(s, ALICE, json!({ "name": "svc-q", "environment": "prod" })).await;
    let id = r["id"].as_str().unwrap();
    let (code, v) = s
        .post(
            BOB,
            &format!("/approvals/{id}/reject"),
            json!({ "reason": "not now" }),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["state"], "rejected");
}
on_both!(approval_endpoints, approvals);

// ---------------------------------------------------------------------------------------
async fn cancel_and_retry(s: &TestServer) {
    let r = submit(s, ALICE, json!({ "name": "svc-c", "environment": "prod" })).await;
    let id = r["id"].as_str().unwrap();
    let (code, _) = s
        .post(CAROL, &format!("/requests/{id}/cancel"), json!({}))
        .await;
    assert_eq!(code, 404);
    let (code, v) = s
        .post(
            ALICE,
            &format!("/requests/{id}/cancel"),
            json!({ "reason": "changed my mind" }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["state"], "cancelled");
    let (code, _) = s
        .post(ALICE, &format!("/requests/{id}/cancel"), json!({}))
        .await;
    assert_eq!(code, 409, "cancelling twice is a conflict");
    let (code, _) = s
        .post(
            ALICE,
            &format!("/requests/{id}/cancel"),
            json!({ "why": 1 }),
        )
        .await;
    assert_eq!(code, 422);

    // A failing second action fails the request and rolls back the first.
    let r = submit(s, ALICE, json!({ "name": "svc-f", "fail": true })).await;
    let id = r["id"].as_str().unwrap().to_string();
    let st = s.wait_state(ALICE, &id, "failed").await;
    assert_eq!(st["rollback"], "complete", "{st}");
    // Action attempts are counted by type and outcome.
    let text = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let attempts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pao_action_attempts_total{"))
        .collect();
    for want in ["outcome=\"succeeded\"", "outcome=\"failed\""] {
        assert!(
            attempts
                .iter()
                .any(|l| l.contains("type=\"plugin:echo\"") && l.contains(want)),
            "no plugin:echo attempt with {want}: {attempts:?}"
        );
    }
    let (code, _) = s
        .post(CAROL, &format!("/requests/{id}/retry"), json!({}))
        .await;
    assert_eq!(code, 404);
    let (code, _) = s
        .post(
            ALICE,
            &format!("/requests/{id}/retry"),
            json!({ "fields": 3 }),
        )
        .await;
    assert_eq!(code, 422);
    let (code, v) = s
        .post(
            ALICE,
            &format!("/requests/{id}/retry"),
            json!({ "fields": { "fail": false } }),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["retry_of"], id.as_str());
    let new = v["id"].as_str().unwrap();
    s.wait_state(ALICE, new, "completed").await;
    // Only failed requests can be retried.
    let (code, _) = s
        .post(ALICE, &format!("/requests/{new}/retry"), json!({}))
        .await;
    assert_eq!(code, 409);
}
on_both!(cancel_and_retry_endpoints, cancel_and_retry);

// ---------------------------------------------------------------------------------------
async fn teams_and_quota(s: &TestServer) {
    let r = submit(s, ALICE, json!({ "name": "svc-t" })).await;
    s.wait_state(ALICE, r["id"].as_str().unwrap(), "completed")
        .await;
    for path in ["requests", "catalog", "usage", "analytics", "settings"] {
        let (code, v) = s.get(ALICE, &format!("/teams/app-team/{path}")).await;
        assert_eq!(code, 200, "{path}: {v}");
        let (code, _) = s.get(CAROL, &format!("/teams/app-team/{path}")).await;
        assert_eq!(code, 403, "{path}");
    }
    let (_, v) = s.get(ALICE, "/teams/app-team/analytics").await;
    assert_eq!(v["success_rate"], 1.0, "{v}");
    assert_eq!(v["popular_items"][0]["item_id"], "test.echo");
    let (_, v) = s.get(ALICE, "/teams/app-team/catalog").await;
    assert_eq!(v["items"][0]["requests"], 1);
    let (_, v) = s.get(ALICE, "/quota/usage/app-team").await;
    assert_eq!(v["usage"][0]["resource"], "echoes", "{v}");
    assert_eq!(v["usage"][0]["used"], 1);
    let (code, _) = s.get(CAROL, "/quota/usage/app-team").await;
    assert_eq!(code, 403);

    // Limits: admins only; a limit of 1 refuses the next submission.
    let (code, _) = s
        .post(
            ALICE,
            "/quota/limits/app-team",
            json!({ "limits": { "echoes": 1 } }),
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = s
        .post(ADMIN, "/quota/limits/app-team", json!({ "limits": {} }))
        .await;
    assert_eq!(code, 422);
    let (code, v) = s
        .post(
            ADMIN,
            "/quota/limits/app-team",
            json!({ "limits": { "echoes": 1 } }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = s
        .post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "svc-u" } }),
        )
        .await;
    assert!(code == 422 || v["state"] == "rejected", "{code} {v}");
    let (code, _) = s
        .post(
            ALICE,
            "/teams/app-team/config",
            json!({ "quotas": { "echoes": 5 } }),
        )
        .await;
    assert_eq!(code, 403);
    let (code, v) = s
        .post(
            ADMIN,
            "/teams/app-team/config",
            json!({ "quotas": { "echoes": 5 } }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, _) = s
        .post(
            ADMIN,
            "/teams/app-team/config",
            json!({ "quotas": { "echoes": -1 } }),
        )
        .await;
    assert_eq!(code, 422);
}
on_both!(team_and_quota_endpoints, teams_and_quota);

// ---------------------------------------------------------------------------------------
async fn authoring(s: &TestServer) {
    let good = std::fs::read_to_string(support::fixtures().join("echo.yaml")).unwrap();
    let (code, v) = s
        .post(ALICE, "/validate/catalog-item", json!({ "yaml": good }))
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["valid"], true, "{v}");
    let bad = good.replace("type: text", "type: txet");
    let (_, v) = s
        .post(
            ALICE,
            "/validate/catalog-item",
            json!({ "yaml": bad, "file": "echo.yaml" }),
        )
        .await;
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(d["file"], "echo.yaml");
    assert!(d["line"].as_u64().unwrap() > 10, "{v}");
    let (code, _) = s.post(ALICE, "/validate/catalog-item", json!({})).await;
    assert_eq!(code, 400);
    let r = s
        .http
        .post(s.url("/validate/catalog-item"))
        .json(&json!({ "yaml": "" }))
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 401);

    let (code, v) = s
        .post(ALICE, "/preview/form", json!({ "yaml": good }))
        .await;
    assert_eq!(code, 200);
    assert!(v["schema"]["properties"]["name"].is_object(), "{v}");
    let (code, v) = s
        .post(ALICE, "/preview/form", json!({ "yaml": "kind: nope" }))
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, _) = s
        .post(
            CAROL,
            "/preview/form",
            json!({ "item_id": "test.restricted" }),
        )
        .await;
    assert_eq!(code, 404);

    let (code, v) = s
        .post(ALICE, "/test/variables", json!({ "template": "Hi ${{ fields.name | upper }} from ${{ user.id }}", "context": { "fields": { "name": "db" } } }))
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["value"], "Hi DB from alice");
    let (_, v) = s
        .post(
            ALICE,
            "/test/variables",
            json!({ "expression": "fields.n > 2", "context": { "fields": { "n": 3 } } }),
        )
        .await;
    assert_eq!(v["value"], true);
    let (_, v) = s
        .post(
            ALICE,
            "/test/variables",
            json!({ "template": "x ${{ fields.nme }}", "context": { "fields": { "name": 1 } } }),
        )
        .await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["line"], 1, "{v}");
    assert!(v["error"]["snippet"].as_str().unwrap().contains('^'));
    let (code, _) = s
        .post(
            ALICE,
            "/test/variables",
            json!({ "template": "a", "expression": "b" }),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = s
        .post(
            ALICE,
            "/test/variables",
            json!({ "template": "a", "context": { "galaxy": {} } }),
        )
        .await;
    assert_eq!(code, 422);

    let (code, v) = s
        .post(
            ALICE,
            "/simulate/fulfillment",
            json!({ "item_id": "test.echo", "fields": { "name": "sim-1", "environment": "prod" } }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["approval_required"], true);
    assert_eq!(v["actions"].as_array().unwrap().len(), 2);
    let (code, _) = s
        .post(
            ALICE,
            "/simulate/fulfillment",
            json!({ "item_id": "test.echo", "fields": { "name": 7 } }),
        )
        .await;
    assert_eq!(code, 422);
    // Nothing was submitted by simulating.
    let (_, mine) = s.get(ALICE, "/requests").await;
    assert!(mine["requests"].as_array().unwrap().is_empty());
}
on_both!(authoring_endpoints, authoring);

// ---------------------------------------------------------------------------------------
async fn admin(s: &TestServer) {
    let r = submit(s, ALICE, json!({ "name": "svc-adm" })).await;
    s.wait_state(ALICE, r["id"].as_str().unwrap(), "completed")
        .await;
    for path in ["/stats/usage", "/stats/performance", "/audit/requests"] {
        let (code, v) = s.get(ADMIN, path).await;
        assert_eq!(code, 200, "{path} {v}");
        let (code, _) = s.get(ALICE, path).await;
        assert_eq!(code, 403, "{path}");
    }
    let (_, v) = s.get(ADMIN, "/stats/usage").await;
    assert_eq!(v["requests_by_team"]["app-team"], 1, "{v}");
    let (_, v) = s.get(ADMIN, "/audit/requests").await;
    let actions: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(actions.iter().any(|a| a.contains("submit")), "{actions:?}");
    // Reading the audit trail is itself audited.
    let (_, v) = s.get(ADMIN, "/audit/requests?target=*").await;
    assert_eq!(v["records"][0]["action"], "audit.read", "{v}");

    // Validation results: owner team and admins.
    let (code, v) = s.get(ALICE, "/catalog/validation/test.echo").await;
    assert_eq!(code, 200);
    assert_eq!(v["valid"], true);
    let (code, _) = s.get(CAROL, "/catalog/validation/test.echo").await;
    assert_eq!(code, 403);
    let (code, _) = s.get(ADMIN, "/catalog/validation/nope").await;
    assert_eq!(code, 404);

    // Refresh: a changed file is picked up; a broken one keeps its last good version.
    let (code, _) = s.post(ALICE, "/catalog/refresh", json!({})).await;
    assert_eq!(code, 403);
    let path = s.catalog_dir.join("manual.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("version: 1.0.0", "version: 1.1.0")).unwrap();
    let (code, v) = s.post(ADMIN, "/catalog/refresh", json!({})).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["changed"], json!(["test.manual"]));
    std::fs::write(
        &path,
        "apiVersion: pao.dev/v2\nkind: CatalogItem\nmetadata: [",
    )
    .unwrap();
    s.post(ADMIN, "/catalog/refresh", json!({})).await;
    let (code, v) = s.get(ALICE, "/catalog/items/test.manual").await;
    assert_eq!(code, 200);
    assert_eq!(v["version"], "1.1.0");
    let (_, v) = s.get(ADMIN, "/catalog/validation/test.manual").await;
    assert_eq!(v["valid"], false, "{v}");
}
on_both!(admin_endpoints, admin);

// ---------------------------------------------------------------------------------------

async fn webhooks(s: &TestServer) {
    // Manual mode: the JIRA webhook completes the request waiting for its ticket.
    let (code, r) = s
        .post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.manual", "fields": { "name": "fw-1" } }),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let mut waiting = Value::Null;
    for _ in 0..200 {
        let (_, v) = s.get(ALICE, &format!("/requests/{id}/status")).await;
        if v["waiting_for"].is_string() {
            waiting = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        waiting["waiting_for"].as_str().unwrap().contains("NET-7"),
        "{waiting}"
    );
    let now_ms = chrono::Utc::now().timestamp_millis();
    let payload = json!({
        "timestamp": now_ms,
        "webhookEvent": "jira:issue_updated",
        "issue": { "key": "NET-7", "fields": { "status": { "name": "Done", "statusCategory": { "key": "done" } }, "resolution": { "name": "Done" } } }
    });
    let r = s
        .http
        .post(s.url("/webhooks/jira?secret=wrong"))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 401);
    let r = s
        .http
        .post(s.url("/webhooks/jira"))
        .header("X-PAO-Webhook-Secret", "jira-shared-secret")
        .json(&payload)
        .send()
        .await
        .unwrap();
    let (code, v) = support::decode(r).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["resolved"], true, "{v}");
    s.wait_state(ALICE, &id, "completed").await;
    let r = s
        .http
        .post(s.url("/webhooks/jira"))
        .header("X-PAO-Webhook-Secret", "jira-shared-secret")
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::decode(r).await.0,
        409,
        "a replayed delivery is refused"
    );
    let r = s
        .http
        .post(s.url("/webhooks/jira"))
        .header("X-PAO-Webhook-Secret", "jira-shared-secret")
        .json(&json!({ "issue": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 422);

    // GitHub.
    let body = br#"{"action":"completed","workflow_run":{"id":42,"conclusion":"success"}}"#;
    let gh = |sig: String, delivery: &str| {
        s.http
            .post(s.url("/webhooks/github"))
            .header("X-Hub-Signature-256", sig)
            .header("X-GitHub-Event", "workflow_run")
            .header("X-GitHub-Delivery", delivery.to_string())
            .body(body.to_vec())
            .send()
    };
    let good = format!("sha256={}", support::sign256("gh-secret-0123456789", body));
    assert_eq!(
        support::decode(gh(good.clone(), "d-1").await.unwrap())
            .await
            .0,
        202
    );
    assert_eq!(support::decode(gh(good, "d-1").await.unwrap()).await.0, 409);
    assert_eq!(
        support::decode(gh("sha256=00".into(), "d-2").await.unwrap())
            .await
            .0,
        401
    );

    // Terraform Cloud (HMAC-SHA512).
    let body = br#"{"run_id":"run-1","notifications":[{"trigger":"run:completed","run_updated_at":"2026-01-01T00:00:00Z"}]}"#;
    let mut m = Hmac::<sha2::Sha512>::new_from_slice(b"tfc-secret-0123456789").unwrap();
    m.update(body);
    let sig = hex::encode(m.finalize().into_bytes());
    let r = s
        .http
        .post(s.url("/webhooks/terraform"))
        .header("X-TFE-Notification-Signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 202);
    let r = s
        .http
        .post(s.url("/webhooks/terraform"))
        .header("X-TFE-Notification-Signature", "abcd")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 401);

    // Approval from a chat tool, signed over "timestamp.body".
    let r = submit(s, ALICE, json!({ "name": "svc-w", "environment": "prod" })).await;
    let rid = r["id"].as_str().unwrap();
    let body = serde_json::to_vec(
        &json!({ "request_id": rid, "approver": { "id": "bob" }, "approved": true }),
    )
    .unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&body);
    let approve = |ts: String, sig: String| {
        s.http
            .post(s.url("/webhooks/approval"))
            .header("X-PAO-Timestamp", ts)
            .header("X-PAO-Signature", format!("sha256={sig}"))
            .body(body.clone())
            .send()
    };
    let old = (chrono::Utc::now().timestamp() - 3600).to_string();
    let mut old_signed = format!("{old}.").into_bytes();
    old_signed.extend_from_slice(&body);
    assert_eq!(
        support::decode(
            approve(
                old.clone(),
                support::sign256("approval-secret-0123456789", &old_signed)
            )
            .await
            .unwrap()
        )
        .await
        .0,
        401,
        "stale timestamp"
    );
    let (code, v) = support::decode(
        approve(
            ts.clone(),
            support::sign256("approval-secret-0123456789", &signed),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    s.wait_state(ALICE, rid, "completed").await;
    assert_eq!(
        support::decode(
            approve(ts, support::sign256("approval-secret-0123456789", &signed))
                .await
                .unwrap()
        )
        .await
        .0,
        409
    );
}
on_both!(webhook_endpoints, webhooks);

// ---------------------------------------------------------------------------------------
async fn websockets(s: &TestServer) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    async fn next_json(
        ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    ) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .ok()??
                .ok()?;
            if let Message::Text(t) = m {
                return serde_json::from_str(&t).ok();
            }
        }
    }

    // Unauthorized and forbidden streams are refused before the upgrade.
    let r = tokio_tungstenite::connect_async(s.ws_url("/ws/notifications")).await;
    assert!(r.is_err());

    let mut notes = tokio_tungstenite::connect_async(
        s.ws_url(&format!("/ws/notifications?access_token={BOB}")),
    )
    .await
    .unwrap()
    .0;
    let r = submit(s, ALICE, json!({ "name": "svc-ws", "environment": "prod" })).await;
    let id = r["id"].as_str().unwrap().to_string();
    let mut saw_approval = false;
    for _ in 0..20 {
        let Some(v) = next_json(&mut notes).await else {
            break;
        };
        if v["type"] == "approval_requested" && v["request_id"] == id.as_str() {
            saw_approval = true;
            break;
        }
    }
    assert!(saw_approval, "bob is notified of the approval he may give");

    let (mut status, _) = tokio_tungstenite::connect_async(s.ws_url(&format!(
        "/ws/requests/{id}/status?access_token={ALICE}&heartbeat=1"
    )))
    .await
    .unwrap();
    let first = next_json(&mut status).await.unwrap();
    assert_eq!(first["type"], "status");
    assert_eq!(first["state"], "awaiting_approval");
    let r = tokio_tungstenite::connect_async(
        s.ws_url(&format!("/ws/requests/{id}/status?access_token={CAROL}")),
    )
    .await;
    assert!(r.is_err(), "an outsider cannot watch the request");
    s.post(BOB, &format!("/approvals/{id}/approve"), json!({}))
        .await;
    let mut states = Vec::new();
    let mut heartbeats = 0;
    while let Some(v) = next_json(&mut status).await {
        match v["type"].as_str() {
            Some("status") => states.push(v["state"].as_str().unwrap().to_string()),
            Some("heartbeat") => heartbeats += 1,
            Some("end") => break,
            _ => {}
        }
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("completed"),
        "{states:?}"
    );
    let _ = heartbeats;

    // Logs resume from a sequence number and end with the request.
    let (_, logs) = s.get(ALICE, &format!("/requests/{id}/logs")).await;
    let all = logs["events"].as_array().unwrap().len();
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url(&format!(
        "/ws/requests/{id}/logs?access_token={ALICE}&after=2"
    )))
    .await
    .unwrap();
    let mut seqs = Vec::new();
    while let Some(v) = next_json(&mut ws).await {
        match v["type"].as_str() {
            Some("event") => seqs.push(v["event"]["seq"].as_u64().unwrap()),
            Some("end") => break,
            _ => {}
        }
    }
    assert_eq!(seqs.first(), Some(&3));
    assert_eq!(seqs.len(), all - 2);

    // Catalog changes are announced.
    let (mut cat, _) = tokio_tungstenite::connect_async(
        s.ws_url(&format!("/ws/catalog/changes?access_token={ALICE}")),
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut cat).await.unwrap()["type"], "hello");
    let path = s.catalog_dir.join("echo.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("version: 1.0.0", "version: 1.0.1")).unwrap();
    s.post(ADMIN, "/catalog/refresh", json!({})).await;
    let v = next_json(&mut cat).await.unwrap();
    assert_eq!(v["type"], "catalog_changed");
    assert_eq!(v["changed"], json!(["test.echo"]));
}
on_both!(websocket_streams, websockets);

// ---------------------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        c.limits.rate_per_second = 1;
        c.limits.rate_burst = 3;
    })
    .await
    .unwrap();
    let mut codes = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let r = s
            .http
            .get(s.url("/catalog"))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
        codes.push(r.status().as_u16());
    }
    assert!(codes.contains(&429), "{codes:?}");
    assert!(retry_after.is_some());
    // Another principal is not affected.
    let (code, _) = s.get(BOB, "/catalog").await;
    assert_eq!(code, 200);
    s.stop().await;
}
