//! Every error code `docs/api.md` documents is one the server has, with the documented
//! status, and this test makes the server answer each of them over HTTP; every code the
//! server has is documented.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use support::{Db, TestServer};

const ALICE: &str = "t-alice";
const BOB: &str = "t-bob";
const CAROL: &str = "t-carol";
const ADMIN: &str = "t-admin";

/// The table of `docs/api.md`: code → status.
fn documented() -> BTreeMap<String, u16> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md"),
    )
    .unwrap();
    let table = doc
        .split("| Status | Codes |")
        .nth(1)
        .expect("docs/api.md has the table of error codes");
    let mut out = BTreeMap::new();
    for line in table.lines().skip(2) {
        let Some(rest) = line.strip_prefix("| ") else {
            break;
        };
        let status: u16 = rest[..3].parse().expect("a status in the first column");
        for c in codes(rest) {
            out.insert(c, status);
        }
    }
    out
}

/// The `PAO-API-…` codes in `text`; with `quoted`, only those in double quotes.
fn codes_in(text: &str, quoted: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("PAO-API-") {
        if quoted && !text[..at].ends_with('"') {
            continue;
        }
        let code: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '-')
            .collect();
        out.push(code.trim_end_matches('-').to_string());
    }
    out
}

fn codes(text: &str) -> Vec<String> {
    codes_in(text, false)
}

/// Every `"PAO-API-…"` literal of the server's sources.
fn in_source() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.extend(codes_in(&text, true));
            }
        }
    }
    out
}

async fn decode(r: reqwest::Response) -> (u16, Value) {
    support::decode(r).await
}

/// What the first server answers for each code: (status, body).
async fn on_default_server(s: &TestServer) -> Vec<(&'static str, u16, Value)> {
    let mut seen = Vec::new();
    let mut note = |code: &'static str, (status, body): (u16, Value)| {
        seen.push((code, status, body));
    };
    note(
        "PAO-API-BAD-REQUEST",
        s.get(ALICE, "/requests?nope=1").await,
    );
    note(
        "PAO-API-UNAUTHORIZED",
        decode(s.http.get(s.url("/requests")).send().await.unwrap()).await,
    );
    note(
        "PAO-API-FORBIDDEN",
        s.post(
            ALICE,
            "/quota/limits/app-team",
            json!({ "limits": { "echoes": 5 } }),
        )
        .await,
    );
    note(
        "PAO-API-NOT-FOUND",
        s.get(ALICE, "/requests/no-such-request").await,
    );
    // Cancelling a request that ended.
    let (_, r) = s
        .post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "svc-a" } }),
        )
        .await;
    let id = r["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    s.wait_state(ALICE, &id, "completed").await;
    note(
        "PAO-API-INVALID-STATE",
        s.post(
            ALICE,
            &format!("/requests/{id}/cancel"),
            json!({ "reason": "x" }),
        )
        .await,
    );
    // A JIRA delivery seen before.
    let delivery = json!({
        "timestamp": chrono::Utc::now().timestamp_millis(),
        "webhookEvent": "jira:issue_updated",
        "issue": { "key": "NET-404", "fields": { "status": { "name": "In Progress", "statusCategory": { "key": "indeterminate" } } } }
    });
    for _ in 0..2 {
        let r = s
            .http
            .post(s.url("/webhooks/jira"))
            .header("X-PAO-Webhook-Secret", "jira-shared-secret")
            .json(&delivery)
            .send()
            .await
            .unwrap();
        let answer = decode(r).await;
        if answer.0 != 200 {
            note("PAO-API-CONFLICT", answer);
        }
    }
    // On a connection of its own: the server answers before reading the body and closes it.
    note(
        "PAO-API-BODY-TOO-LARGE",
        decode(
            reqwest::Client::new()
                .post(s.url("/requests"))
                .header("connection", "close")
                .bearer_auth(ALICE)
                .header("content-type", "application/json")
                .body(vec![b' '; 3 * 1024 * 1024])
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    note(
        "PAO-API-UNSUPPORTED-MEDIA-TYPE",
        decode(
            s.http
                .post(s.url("/requests"))
                .bearer_auth(ALICE)
                .header("content-type", "text/plain")
                .body("item_id=test.echo")
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    note(
        "PAO-API-INVALID-BODY",
        s.post(ALICE, "/requests", json!({ "item_id": 5 })).await,
    );
    note(
        "PAO-API-INVALID-FIELDS",
        s.post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "X" } }),
        )
        .await,
    );
    // The same idempotency key for another item.
    let keyed = |item: &str, fields: Value| {
        s.http
            .post(s.url("/requests"))
            .bearer_auth(ALICE)
            .header("Idempotency-Key", "doc-key-1")
            .json(&json!({ "item_id": item, "fields": fields }))
            .send()
    };
    let first = decode(
        keyed("test.echo", json!({ "name": "svc-b" }))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.0, 201, "{}", first.1);
    note(
        "PAO-API-IDEMPOTENCY-MISMATCH",
        decode(keyed("test.manual", json!({ "name": "x" })).await.unwrap()).await,
    );
    note(
        "PAO-API-INVALID-ITEM",
        s.post(ALICE, "/preview/form", json!({ "yaml": "kind: [" }))
            .await,
    );
    note(
        "PAO-API-NO-OPTIONS",
        s.get(ALICE, "/catalog/items/test.echo/fields/name/options")
            .await,
    );
    note(
        "PAO-API-OPTIONS-PARAM",
        s.get(
            ALICE,
            "/catalog/items/test.echo/fields/vpc/options?region=eu%01west",
        )
        .await,
    );
    // The team's limit set to what it uses.
    let (code, v) = s
        .post(
            ADMIN,
            "/quota/limits/app-team",
            json!({ "limits": { "echoes": 0 } }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    note(
        "PAO-API-QUOTA-EXCEEDED",
        s.post(
            ALICE,
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "svc-c" } }),
        )
        .await,
    );
    seen
}

/// What the second server, configured to be strict, answers.
async fn on_strict_server(s: &TestServer) -> Vec<(&'static str, u16, Value)> {
    let mut seen = Vec::new();
    // Each principal here may send 2 requests at once, 1 a second after that.
    // The options source is down.
    let (code, body) = s
        .get(BOB, "/catalog/items/test.echo/fields/region/options")
        .await;
    seen.push(("PAO-API-OPTIONS-SOURCE", code, body));
    // The source URL does not render: a path segment may not be `..`.
    let (code, body) = s
        .get(
            ADMIN,
            "/catalog/items/test.echo/fields/vpc/options?region=..",
        )
        .await;
    seen.push(("PAO-API-OPTIONS-TEMPLATE", code, body));
    // The GitHub webhook has no secret configured.
    let r = s
        .http
        .post(s.url("/webhooks/github"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (code, body) = decode(r).await;
    seen.push(("PAO-API-WEBHOOK-DISABLED", code, body));
    // The OIDC issuer's keys cannot be fetched.
    let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0.c2ln";
    let (code, body) = s.get(jwt, "/requests").await;
    seen.push(("PAO-API-UNAVAILABLE", code, body));
    // One WebSocket stream per principal.
    let first = tokio_tungstenite::connect_async(
        s.ws_url(&format!("/ws/notifications?access_token={CAROL}")),
    )
    .await
    .expect("the first stream opens");
    let second = tokio_tungstenite::connect_async(
        s.ws_url(&format!("/ws/notifications?access_token={CAROL}")),
    )
    .await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            seen.push(("PAO-API-TOO-MANY-STREAMS", r.status().as_u16(), body));
        }
        other => panic!("a second stream was not refused: {:?}", other.map(|_| ())),
    }
    drop(first);
    // Alice over her rate.
    let mut limited = None;
    for _ in 0..20 {
        let (code, body) = s.get(ALICE, "/catalog").await;
        if code == 429 {
            limited = Some((code, body));
            break;
        }
    }
    let (code, body) = limited.expect("alice was never rate-limited");
    seen.push(("PAO-API-RATE-LIMITED", code, body));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_error_code_is_answered_with_its_status() {
    let documented = documented();
    let source = in_source();
    let undocumented: Vec<_> = source
        .iter()
        .filter(|c| !documented.contains_key(*c))
        .collect();
    assert!(
        undocumented.is_empty(),
        "codes the server has that docs/api.md does not list: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.keys().filter(|c| !source.contains(*c)).collect();
    assert!(
        unknown.is_empty(),
        "codes docs/api.md lists that the server does not have: {unknown:?}"
    );

    let Some(s) = support::spawn(Db::Sqlite).await else {
        return;
    };
    let mut answered = on_default_server(&s).await;
    s.stop().await;
    let Some(strict) = support::spawn_with(Db::Sqlite, |c| {
        c.env
            .insert("PAO_OPTIONS_URL".into(), Some("http://127.0.0.1:9".into()));
        c.webhooks.github_secret = None;
        c.limits.websockets_per_principal = 1;
        c.limits.rate_per_second = 1;
        c.limits.rate_burst = 2;
        c.auth.oidc = Some(
            serde_json::from_value(json!({
                "issuer": "https://idp.invalid",
                "audience": "pao",
                "jwks_url": "http://127.0.0.1:9/jwks.json"
            }))
            .unwrap(),
        );
    })
    .await
    else {
        return;
    };
    answered.extend(on_strict_server(&strict).await);
    strict.stop().await;

    let mut wrong = Vec::new();
    for (code, status, body) in &answered {
        let want = documented[*code];
        if *status != want || body["code"] != *code {
            wrong.push(format!(
                "{code}: documented {want}, answered {status} {body}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let produced: BTreeSet<&str> = answered.iter().map(|(c, _, _)| *c).collect();
    let missing: Vec<_> = documented
        .keys()
        .filter(|c| !produced.contains(c.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but never produced: {missing:?}"
    );
}
