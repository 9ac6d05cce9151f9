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

fn op<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    &doc["paths"][format!("/api/v1{path}")][method]
}

fn statuses(op: &Value) -> Vec<u16> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}

#[test]
fn document_states_bodies_statuses_and_limits() {
    let doc = pao_server::api::openapi::document_json();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let label = format!("{method} {path}");
            let codes = statuses(op);
            for (code, resp) in op["responses"].as_object().unwrap() {
                let content = resp["content"].as_object();
                if code.starts_with('2') && !path.ends_with("/metrics") {
                    // Every JSON success body has a schema of its own.
                    let r = resp
                        .pointer("/content/application~1json/schema/$ref")
                        .and_then(Value::as_str)
                        .unwrap_or_else(|| panic!("{label} {code}: no response schema"));
                    let name = r.trim_start_matches("#/components/schemas/");
                    assert!(schemas.contains_key(name), "{label}: {r} missing");
                } else if code.starts_with('4') || code.starts_with('5') {
                    assert!(
                        content.is_some_and(|c| c.contains_key("application/problem+json")),
                        "{label} {code}"
                    );
                }
            }
            // Every operation may be rate limited; every POST refuses other media types.
            assert!(codes.contains(&429), "{label}");
            if method == "post" {
                assert!(codes.contains(&415), "{label}");
            }
            if path.starts_with("/api/v1/webhooks/") {
                assert!(
                    codes.contains(&404),
                    "{label}: unconfigured webhooks answer 404"
                );
            }
        }
    }
    // Nested schemas are in the components too (no dangling references).
    let text = doc.to_string();
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(
            schemas.contains_key(name),
            "{name} is referenced but missing"
        );
    }
    let submit = op(&doc, "post", "/requests");
    for code in [200, 201, 403, 404, 409, 413, 415, 422, 429, 503] {
        assert!(statuses(submit).contains(&code), "POST /requests {code}");
    }
    // A new request links to the operations on it (the stateful contract test follows them).
    let link = &submit["responses"]["201"]["links"]["get_requests_id"];
    assert_eq!(link["operationId"], "get_requests_id", "{link}");
    assert_eq!(link["parameters"]["id"], "$response.body#/id");
    let cancel = op(&doc, "post", "/requests/{id}/cancel");
    assert!(statuses(cancel).contains(&200) && statuses(cancel).contains(&202));
    assert_eq!(
        cancel["requestBody"]["required"], false,
        "cancel takes an empty body"
    );
    let metrics = op(&doc, "get", "/metrics");
    assert!(metrics["responses"]["200"]["content"]["text/plain"].is_object());
    assert!(statuses(metrics).contains(&401) && statuses(metrics).contains(&403));
    // Limits.
    let priority = &schemas["SubmitBody"]["properties"]["priority"];
    assert_eq!(priority["minimum"], -100);
    assert_eq!(priority["maximum"], 100);
    let list = op(&doc, "get", "/requests")["parameters"]
        .as_array()
        .unwrap();
    let param = |name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))["schema"]
            .clone()
    };
    assert_eq!(param("limit")["maximum"], u64::MAX);
    assert_eq!(param("limit")["minimum"], 0);
    assert_eq!(param("cursor")["pattern"], pao_server::api::cursor::PATTERN);
    assert!(
        param("state")["pattern"]
            .as_str()
            .unwrap()
            .contains("awaiting_approval")
    );
    let catalog = op(&doc, "get", "/catalog")["parameters"]
        .as_array()
        .unwrap();
    let cursor = catalog.iter().find(|p| p["name"] == "cursor").unwrap();
    assert_eq!(
        cursor["schema"]["pattern"],
        pao_server::api::cursor::TEXT_PATTERN
    );
    assert_eq!(
        op(&doc, "post", "/requests")["parameters"][0]["schema"]["maxLength"],
        200,
        "Idempotency-Key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_takes_what_the_document_allows_and_refuses_the_rest() {
    let s = support::spawn(support::Db::Sqlite).await.unwrap();
    // Any text of a cursor's pattern is a cursor.
    let (code, v) = s.get("t-admin", "/requests?cursor=AAAAAAAAAAA").await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = s.get("t-admin", "/catalog?cursor=_-_").await;
    assert_eq!(code, 200, "{v}");
    let (code, _) = s.get("t-admin", "/requests?cursor=AAAAAAAAAA").await;
    assert_eq!(code, 400, "too short for a request cursor");
    // A state list has no empty entries.
    let (code, _) = s.get("t-admin", "/requests?state=queued,").await;
    assert_eq!(code, 400);
    let (code, _) = s.get("t-admin", "/requests?state=queued,completed").await;
    assert_eq!(code, 200);
    // `5.0` is the integer 5, as JSON Schema counts.
    let (code, v) = s
        .post(
            "t-admin",
            "/requests",
            serde_json::json!({ "item_id": "no.such-item", "priority": 5.0 }),
        )
        .await;
    assert_eq!(code, 404, "the body was taken: {v}");
    let (code, v) = s
        .post(
            "t-admin",
            "/quota/limits/app-team",
            serde_json::json!({ "limits": { "vcpu": 8.0 } }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    // Bodies are objects (serde alone would read a struct from an array).
    let (code, v) = s
        .post("t-admin", "/teams/app-team/config", serde_json::json!([{}]))
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = s
        .post(
            "t-admin",
            "/requests/r-1/cancel",
            serde_json::json!(["why"]),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    // Quota limits stop at 2^53 - 1.
    let (code, v) = s
        .post(
            "t-admin",
            "/quota/limits/app-team",
            serde_json::json!({ "limits": { "vcpu": 9007199254740992u64 } }),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = s
        .post(
            "t-admin",
            "/teams/app-team/config",
            serde_json::json!({ "quotas": { "vcpu": 9007199254740991u64 } }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    s.stop().await;
}

/// Every success response names its body: JSON bodies are a `$ref` to a component generated
/// from the handler's response type (an object with properties, or a documented composition),
/// never an inline or untyped schema. Only the Prometheus text of `/metrics` is plain text, and
/// two bodies are documents of other standards, typed by those: the form (JSON Schema) and
/// the API document itself (OpenAPI).
#[test]
fn every_success_response_has_a_schema_from_its_type() {
    let doc = pao_server::api::openapi::document_json();
    let components = &doc["components"]["schemas"];
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (code, resp) in op["responses"].as_object().unwrap() {
                if !code.starts_with('2') {
                    continue;
                }
                let Some(content) = resp.get("content").and_then(Value::as_object) else {
                    assert_eq!(code, "204", "{method} {path} {code} has no body schema");
                    continue;
                };
                for (kind, media) in content {
                    if kind == "text/plain" {
                        assert_eq!(path, "/api/v1/metrics", "{method} {path}: text body");
                        continue;
                    }
                    let name = media["schema"]["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                        .unwrap_or_else(|| panic!("{method} {path} {code}: inline schema"));
                    let mut schema = &components[name];
                    if let Some(inner) = schema["$ref"].as_str() {
                        schema = &components[inner.trim_start_matches("#/components/schemas/")];
                    }
                    if ["FormSchema", "OpenApiDocument"].contains(&name) {
                        assert!(schema["description"].is_string(), "{name}: {schema}");
                        checked += 1;
                        continue;
                    }
                    let typed = schema.get("properties").is_some()
                        || schema.get("oneOf").is_some()
                        || schema.get("allOf").is_some()
                        || schema.get("items").is_some();
                    assert!(
                        typed,
                        "{method} {path} {code}: `{name}` is untyped: {schema}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} success bodies found");
}
