//! What the server sends out on behalf of a caller: the options endpoint turns only the
//! query parameters a source reads into field values, keeps each value in its place in the
//! source's URL, and does not follow a redirect to another origin with the source's headers;
//! a source-backed field value that is not a name is refused at submit.

mod support;

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use support::*;

const ALICE: &str = "t-alice";

/// One request a fake received: path (as sent, still percent-encoded) and headers.
type Received = (String, Vec<(String, String)>);

/// The requests a fake received.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Received>>>);

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn headers(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, h)| h.clone())
            .collect()
    }
}

/// A fake that records every request; `/moved` redirects to `elsewhere` + `/systems`,
/// everything else answers `["a", "b"]`.
async fn fake(seen: Seen, elsewhere: Option<String>) -> pao_sandbox::FakeServer {
    let router = axum::Router::new().fallback(move |req: Request| {
        let seen = seen.clone();
        let elsewhere = elsewhere.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            seen.0.lock().unwrap().push((path.clone(), headers));
            let r: Response = match (&elsewhere, path.as_str()) {
                (Some(to), "/moved") => (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, format!("{to}/systems"))],
                )
                    .into_response(),
                _ => axum::Json(json!(["a", "b"])).into_response(),
            };
            r
        }
    });
    pao_sandbox::FakeServer::start(router).await.unwrap()
}

const OUTBOUND_ITEM: &str = r#"apiVersion: pao.dev/v2
kind: CatalogItem
metadata:
  id: test.outbound
  name: Outbound calls
  description: An options source behind a redirect, for the outbound tests.
  version: 1.0.0
  category: compute
  owner: { team: app-team }
  environment: dev
  access: { teams: [app-team], environments: [dev] }
presentation:
  groups:
    - id: basics
      title: Basics
      fields:
        - { id: system, type: select, source: { http: { url: "${{ env.PAO_OPTIONS_URL }}/moved", headers: { X-API-Key: inventory-key-123 } } } }
        - { id: owner, type: select, source: { http: { url: "${{ env.PAO_OPTIONS_URL }}/owners", headers: { Authorization: "Bearer ${{ secrets.cmdb_token }}" } } } }
secrets: [cmdb_token]
fulfillment:
  mode: automated
  actions:
    - id: first
      type: "plugin:echo"
      config: { message: "hello ${{ fields.system }}" }
"#;

/// A server whose `PAO_OPTIONS_URL` is a recording fake that redirects `/moved` to a second
/// recording fake; returns the server and what each fake saw.
async fn server() -> Option<(TestServer, Seen, Seen, Vec<pao_sandbox::FakeServer>)> {
    let second = Seen::default();
    let other = fake(second.clone(), None).await;
    let first = Seen::default();
    let options = fake(first.clone(), Some(other.url())).await;
    let url = options.url();
    let s = spawn_with(Db::Sqlite, move |c| {
        std::fs::write(c.catalog.join("outbound.yaml"), OUTBOUND_ITEM).unwrap();
        c.env.insert("PAO_OPTIONS_URL".into(), Some(url));
        c.secrets
            .insert("cmdb_token".into(), "cmdb-token-0123456789".into());
    })
    .await?;
    Some((s, first, second, vec![options, other]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_options_parameter_stays_in_its_path_segment() {
    let Some((s, first, _, _fakes)) = server().await else {
        return;
    };
    let (code, v) = s
        .get(
            ALICE,
            "/catalog/items/test.echo/fields/vpc/options?region=..%2F..%2Fadmin&admin=1",
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let paths = first.paths();
    assert!(
        paths.iter().all(|p| p.starts_with("/regions/")),
        "the source was called outside /regions/: {paths:?}"
    );
    assert_eq!(paths, vec!["/regions/..%2F..%2Fadmin/vpcs".to_string()]);

    // Too long, or with a control character: refused before any call.
    let long = "a".repeat(300);
    let (code, v) = s
        .get(
            ALICE,
            &format!("/catalog/items/test.echo/fields/vpc/options?region={long}"),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = s
        .get(
            ALICE,
            "/catalog/items/test.echo/fields/vpc/options?region=eu%0D%0AX-Evil:%201",
        )
        .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(first.paths().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_options_source_redirect_to_another_origin_is_not_followed() {
    let Some((s, first, second, _fakes)) = server().await else {
        return;
    };
    let (code, v) = s
        .get(ALICE, "/catalog/items/test.outbound/fields/system/options")
        .await;
    assert_eq!(code, 502, "{v}");
    assert!(v.to_string().contains("redirect"), "{v}");
    assert_eq!(first.paths(), vec!["/moved".to_string()]);
    assert!(
        first
            .headers()
            .iter()
            .any(|(n, v)| n == "x-api-key" && v == "inventory-key-123")
    );
    assert!(
        !second.headers().iter().any(|(n, _)| n == "x-api-key"),
        "the second host received the API key"
    );
    assert!(second.paths().is_empty(), "{:?}", second.paths());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_backed_value_that_is_not_a_name_is_refused_at_submit() {
    let Some((s, _, _, _fakes)) = server().await else {
        return;
    };
    let (code, v) = s
        .post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "echo-one", "region": "../../x" } }),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    assert!(v.to_string().contains("region"), "{v}");
    let (code, v) = s
        .post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "echo-two", "region": "eu-west-1" } }),
        )
        .await;
    assert!(code == 201 || code == 202, "{code} {v}");
    s.stop().await;
}

/// A source's headers may read `secrets` (the server fetches, never the browser): the value
/// reaches the source and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_options_source_header_reads_a_secret() {
    let Some((s, first, _, _fakes)) = server().await else {
        return;
    };
    let (code, v) = s
        .get(ALICE, "/catalog/items/test.outbound/fields/owner/options")
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["options"][0]["value"], "a", "{v}");
    assert!(!v.to_string().contains("cmdb-token"), "{v}");
    assert_eq!(first.paths(), vec!["/owners".to_string()]);
    assert!(
        first
            .headers()
            .iter()
            .any(|(n, v)| n == "authorization" && v == "Bearer cmdb-token-0123456789"),
        "{:?}",
        first.headers()
    );
    s.stop().await;
}
