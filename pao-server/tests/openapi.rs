//! The OpenAPI document is generated from the endpoint table; `schemas/openapi.json` is the
//! checked-in copy. This test fails when they differ (regenerate with
//! `PAO_UPDATE_GOLDEN=1 cargo test -p pao-server --test openapi`) and checks that the server
//! serves the same document and that every documented route answers (no 404 from the router).

mod support;

use std::path::Path;

use serde_json::Value;

fn golden_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json")
}

#[test]
fn checked_in_document_matches_the_code() {
    let doc = pao_server::api::openapi::document_json();
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var("PAO_UPDATE_GOLDEN").is_ok() {
        std::fs::write(golden_path(), &text).unwrap();
    }
    let golden = std::fs::read_to_string(golden_path()).expect("schemas/openapi.json exists");
    assert!(
        golden == text,
        "schemas/openapi.json is stale: run PAO_UPDATE_GOLDEN=1 cargo test -p pao-server --test openapi"
    );
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    // Every endpoint of the brief is documented.
    for p in [
        "/api/v1/catalog",
        "/api/v1/catalog/{category}",
        "/api/v1/catalog/search",
        "/api/v1/catalog/items/{item_id}",
        "/api/v1/catalog/items/{item_id}/schema",
        "/api/v1/requests",
        "/api/v1/requests/{id}",
        "/api/v1/requests/{id}/status",
        "/api/v1/requests/{id}/logs",
        "/api/v1/requests/{id}/retry",
        "/api/v1/requests/{id}/cancel",
        "/api/v1/teams/{team_id}/requests",
        "/api/v1/teams/{team_id}/catalog",
        "/api/v1/teams/{team_id}/usage",
        "/api/v1/teams/{team_id}/analytics",
        "/api/v1/validate/catalog-item",
        "/api/v1/preview/form",
        "/api/v1/test/variables",
        "/api/v1/simulate/fulfillment",
        "/api/v1/health",
        "/api/v1/health/ready",
        "/api/v1/metrics",
        "/api/v1/version",
        "/api/v1/catalog/refresh",
        "/api/v1/catalog/validation/{item_id}",
        "/api/v1/stats/usage",
        "/api/v1/stats/performance",
        "/api/v1/audit/requests",
        "/api/v1/approvals/pending",
        "/api/v1/approvals/{id}/approve",
        "/api/v1/approvals/{id}/reject",
        "/api/v1/cost/estimates/{request_id}",
        "/api/v1/quota/usage/{team_id}",
        "/api/v1/quota/limits/{team_id}",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    // Bodies reference schemas that exist.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (p, item) in paths {
        for (_, op) in item.as_object().unwrap() {
            if let Some(r) = op
                .pointer("/requestBody/content/application~1json/schema/$ref")
                .and_then(Value::as_str)
            {
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(schemas.contains_key(name), "{p}: {r} missing");
            }
        }
    }
    assert!(schemas["SubmitBody"]["properties"]["item_id"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_equals_generated_and_every_route_exists() {
    let s = support::spawn(support::Db::Sqlite).await.unwrap();
    let served: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, pao_server::api::openapi::document_json());
    for (path, item) in served["paths"].as_object().unwrap() {
        let concrete = path
            .trim_start_matches("/api/v1")
            .replace("{category}", "compute")
            .replace(['{', '}'], "");
        for method in item.as_object().unwrap().keys() {
            let req = match method.as_str() {
                "get" => s.http.get(s.url(&concrete)),
                "post" => s.http.post(s.url(&concrete)).json(&serde_json::json!({})),
                _ => continue,
            };
            let r = req.bearer_auth("t-admin").send().await.unwrap();
            let code = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            // A 404 here must come from the handler (a missing resource), never the router.
            assert!(
                code != 404 || body["detail"] != "no such endpoint",
                "{method} {path}: the router does not know it"
            );
            assert_ne!(code, 405, "{method} {path}");
            assert!(code < 500 || code == 503, "{method} {path}: {code} {body}");
        }
    }
    s.stop().await;
}
