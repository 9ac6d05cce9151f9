//! Every endpoint of the API's endpoint table, called by every kind of caller, with the status
//! each must get. The rows are checked against `pao_server::api::openapi::endpoints()`: an
//! endpoint added without its row, or a row left for a removed endpoint, fails this test.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::TestServer;

/// The callers, in the order of each row's statuses.
const ROLES: [&str; 6] = [
    "anonymous",
    "developer",
    "other-team developer",
    "approver",
    "team admin",
    "admin",
];

/// The token of each role (`None`: no credential).
const TOKENS: [Option<&str>; 6] = [
    None,
    Some("t-alice"),
    Some("t-carol"),
    Some("t-bob"),
    Some("t-tina"),
    Some("t-admin"),
];

/// What an endpoint is called on: a fresh resource per call where the call changes it.
#[derive(Debug, Clone, Copy)]
enum On {
    /// Nothing to prepare.
    Nothing,
    /// Alice's request of `test.echo` for production, awaiting the `leads` team's approval.
    Awaiting,
    /// Alice's failed request.
    Failed,
}

struct Row {
    method: &'static str,
    path: &'static str,
    on: On,
    body: fn() -> Option<Value>,
    /// Statuses for [`ROLES`], in order.
    want: [u16; 6],
}

fn none() -> Option<Value> {
    None
}
fn empty() -> Option<Value> {
    Some(json!({}))
}

const U200: [u16; 6] = [401, 200, 200, 200, 200, 200];
const ADMIN_ONLY: [u16; 6] = [401, 403, 403, 403, 403, 200];
const OPEN: [u16; 6] = [200; 6];
/// Webhooks authenticate by the sender's signature, whoever the caller claims to be.
const SIGNED: [u16; 6] = [401; 6];
/// `test.echo` is for app-team and leads: carol does not see it.
const ITEM: [u16; 6] = [401, 200, 404, 200, 200, 200];
/// Alice's request: her, her team (tina), its approvers (bob), admins.
const REQUEST: [u16; 6] = [401, 200, 404, 200, 200, 200];
/// Team endpoints of app-team: its members and admins.
const TEAM: [u16; 6] = [401, 200, 403, 403, 200, 200];
/// WebSocket handshakes: 101 when the stream opens.
const WS_REQUEST: [u16; 6] = [401, 101, 404, 101, 101, 101];
const WS_USER: [u16; 6] = [401, 101, 101, 101, 101, 101];

fn rows() -> Vec<Row> {
    let r = |method, path, on, body, want| Row {
        method,
        path,
        on,
        body,
        want,
    };
    use On::*;
    vec![
        r("GET", "/catalog", Nothing, none, U200),
        r("GET", "/catalog/search", Nothing, none, U200),
        r("GET", "/catalog/items/{item_id}", Nothing, none, ITEM),
        r(
            "GET",
            "/catalog/items/{item_id}/schema",
            Nothing,
            none,
            ITEM,
        ),
        r(
            "GET",
            "/catalog/items/{item_id}/fields/{field_id}/options",
            Nothing,
            none,
            ITEM,
        ),
        r("GET", "/catalog/{category}", Nothing, none, U200),
        r("POST", "/catalog/refresh", Nothing, none, ADMIN_ONLY),
        // Diagnostics are for the owning team (app-team) and admins.
        r(
            "GET",
            "/catalog/validation/{item_id}",
            Nothing,
            none,
            [401, 200, 403, 403, 200, 200],
        ),
        r(
            "POST",
            "/requests",
            Nothing,
            || Some(json!({ "item_id": "test.echo", "fields": { "name": "svc-m" } })),
            [401, 201, 404, 201, 201, 201],
        ),
        r("GET", "/requests", Nothing, none, U200),
        r("GET", "/requests/{id}", Awaiting, none, REQUEST),
        r("GET", "/requests/{id}/status", Awaiting, none, REQUEST),
        r("GET", "/requests/{id}/logs", Awaiting, none, REQUEST),
        // The owner and the owner's team; an approver sees it but may not act on it.
        r(
            "POST",
            "/requests/{id}/retry",
            Failed,
            empty,
            [401, 201, 404, 403, 201, 201],
        ),
        r(
            "POST",
            "/requests/{id}/cancel",
            Awaiting,
            empty,
            [401, 200, 404, 403, 200, 200],
        ),
        r("GET", "/teams/{team_id}/requests", Nothing, none, TEAM),
        r("GET", "/teams/{team_id}/catalog", Nothing, none, TEAM),
        r("GET", "/teams/{team_id}/usage", Nothing, none, TEAM),
        r("GET", "/teams/{team_id}/analytics", Nothing, none, TEAM),
        r("GET", "/teams/{team_id}/settings", Nothing, none, TEAM),
        // A developer of the team may not; its team admin may.
        r(
            "POST",
            "/teams/{team_id}/config",
            Nothing,
            || Some(json!({ "quotas": { "echoes": 50 } })),
            [401, 403, 403, 403, 200, 200],
        ),
        r(
            "POST",
            "/validate/catalog-item",
            Nothing,
            || Some(json!({ "yaml": ECHO_ITEM })),
            U200,
        ),
        r(
            "POST",
            "/preview/form",
            Nothing,
            || Some(json!({ "item_id": "test.echo" })),
            [401, 200, 404, 200, 200, 200],
        ),
        r(
            "POST",
            "/test/variables",
            Nothing,
            || Some(json!({ "template": "hi ${{ user.id }}" })),
            U200,
        ),
        r(
            "POST",
            "/simulate/fulfillment",
            Nothing,
            || Some(json!({ "item_id": "test.echo", "fields": { "name": "svc-s" } })),
            ITEM,
        ),
        r("GET", "/health", Nothing, none, OPEN),
        r("GET", "/health/ready", Nothing, none, OPEN),
        r("GET", "/metrics", Nothing, none, ADMIN_ONLY),
        r("GET", "/version", Nothing, none, OPEN),
        r("GET", "/openapi.json", Nothing, none, OPEN),
        r("GET", "/stats/usage", Nothing, none, ADMIN_ONLY),
        r("GET", "/stats/performance", Nothing, none, ADMIN_ONLY),
        r("GET", "/audit/requests", Nothing, none, ADMIN_ONLY),
        r("GET", "/approvals/pending", Nothing, none, U200),
        // Alice may not approve her own request; tina sees it (her team) but is no approver.
        r(
            "POST",
            "/approvals/{id}/approve",
            Awaiting,
            empty,
            [401, 403, 404, 200, 403, 200],
        ),
        r(
            "POST",
            "/approvals/{id}/reject",
            Awaiting,
            || Some(json!({ "reason": "no" })),
            [401, 403, 404, 200, 403, 200],
        ),
        r(
            "GET",
            "/cost/estimates/{request_id}",
            Awaiting,
            none,
            REQUEST,
        ),
        r("GET", "/quota/usage/{team_id}", Nothing, none, TEAM),
        r(
            "POST",
            "/quota/limits/{team_id}",
            Nothing,
            || Some(json!({ "limits": { "echoes": 100 } })),
            ADMIN_ONLY,
        ),
        r("POST", "/webhooks/github", Nothing, empty, SIGNED),
        r("POST", "/webhooks/jira", Nothing, empty, SIGNED),
        r("POST", "/webhooks/terraform", Nothing, empty, SIGNED),
        r("POST", "/webhooks/approval", Nothing, empty, SIGNED),
        r(
            "GET",
            "/ws/requests/{id}/status",
            Awaiting,
            none,
            WS_REQUEST,
        ),
        r("GET", "/ws/requests/{id}/logs", Awaiting, none, WS_REQUEST),
        r("GET", "/ws/catalog/changes", Nothing, none, WS_USER),
        r("GET", "/ws/notifications", Nothing, none, WS_USER),
    ]
}

async fn prepare(s: &TestServer, on: On) -> Option<String> {
    let fields = match on {
        On::Nothing => return None,
        On::Awaiting => json!({ "name": "svc-m", "environment": "prod" }),
        On::Failed => json!({ "name": "svc-m", "fail": true }),
    };
    let (code, v) = s
        .post(
            "t-alice",
            "/requests",
            json!({ "item_id": "test.echo", "fields": fields }),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let want = match on {
        On::Failed => "failed",
        _ => "awaiting_approval",
    };
    s.wait_state("t-alice", &id, want).await;
    Some(id)
}

const ECHO_ITEM: &str = include_str!("fixtures/catalog/echo.yaml");

fn fill(path: &str, id: Option<&str>) -> String {
    let query = if path == "/catalog/search" {
        "?q=echo"
    } else {
        ""
    };
    path.replace("{item_id}", "test.echo")
        .replace("{field_id}", "environment")
        .replace("{category}", "compute")
        .replace("{team_id}", "app-team")
        .replace("{request_id}", id.unwrap_or("none"))
        .replace("{id}", id.unwrap_or("none"))
        + query
}

async fn call(s: &TestServer, row: &Row, token: Option<&str>, id: Option<&str>) -> (u16, String) {
    let path = fill(row.path, id);
    if row.path.starts_with("/ws/") {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = s.ws_url(&path).into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        return match tokio_tungstenite::connect_async(req).await {
            Ok(_) => (101, String::new()),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => (
                r.status().as_u16(),
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
            ),
            Err(e) => panic!("{path}: {e}"),
        };
    }
    let mut req = match row.method {
        "GET" => s.http.get(s.url(&path)),
        _ => s.http.post(s.url(&path)),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = (row.body)() {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_for_every_role() {
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        c.auth.tokens.push(pao_server::config::TokenConfig {
            id: "tina".into(),
            token_sha256: pao_server::config::hash_token("t-tina"),
            email: None,
            name: None,
            teams: vec!["app-team".into()],
            roles: vec!["team-admin".into(), "developer".into()],
        });
        // Hundreds of calls from one address, some without a credential.
        c.limits.anonymous_rate_per_second = 0;
    })
    .await
    .unwrap();
    let rows = rows();
    let table: BTreeSet<(String, String)> = pao_server::api::openapi::endpoints()
        .iter()
        .map(|e| {
            let m = if e.method == utoipa::openapi::path::HttpMethod::Post {
                "POST"
            } else {
                "GET"
            };
            (m.to_string(), e.path.to_string())
        })
        .collect();
    let covered: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let missing: Vec<_> = table.difference(&covered).collect();
    let stale: Vec<_> = covered.difference(&table).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "endpoints without a row: {missing:?}; rows without an endpoint: {stale:?}"
    );
    assert_eq!(covered.len(), rows.len(), "one row per endpoint");

    let mut wrong = Vec::new();
    for row in &rows {
        for (i, role) in ROLES.iter().enumerate() {
            let id = prepare(&s, row.on).await;
            let (code, body) = call(&s, row, TOKENS[i], id.as_deref()).await;
            if code != row.want[i] {
                wrong.push(format!(
                    "{} {} as {role}: got {code}, want {} ({})",
                    row.method,
                    row.path,
                    row.want[i],
                    body.chars().take(200).collect::<String>()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    s.stop().await;
}
