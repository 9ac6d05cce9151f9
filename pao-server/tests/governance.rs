//! Governance written in the catalog, enforced through the API, on SQLite and PostgreSQL:
//! `catalog.yaml` approval defaults, team quotas and members; the request's environment and
//! `access.environments`; restricted change periods for every mode, at submission and again
//! when work would start (at the period's boundaries, with a clock the test sets); approvals
//! under concurrency; post-fulfilment failures; the quota refusal's status code.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use pao_core::clock::{Clock, ManualClock};
use serde_json::{Value, json};
use support::{Db, TestServer};

const ALICE: &str = "t-alice";
const BOB: &str = "t-bob";
const ADMIN: &str = "t-admin";
/// Dana has no team from the identity provider; `catalog.yaml` lists her in `platform-admins`.
const DANA: &str = "t-dana";

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
}

/// A server on the governance catalog whose engine reads `clock`.
async fn server(db: Db, clock: Arc<ManualClock>) -> Option<TestServer> {
    server_with(db, clock, |_| {}).await
}

/// [`server`], with more configuration.
async fn server_with(
    db: Db,
    clock: Arc<ManualClock>,
    tweak: impl FnOnce(&mut pao_server::config::ServerConfig),
) -> Option<TestServer> {
    let dir = std::env::temp_dir().join(format!(
        "pao-governance-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/governance");
    for e in std::fs::read_dir(fixtures).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    support::spawn_clocked(db, Some(clock), |c| {
        c.catalog = dir;
        c.auth.tokens.push(pao_server::config::TokenConfig {
            id: "dana".into(),
            token_sha256: pao_server::config::hash_token(DANA),
            email: Some("dana@example.com".into()),
            name: None,
            teams: vec![],
            roles: vec!["developer".into()],
        });
        tweak(c);
    })
    .await
}

async fn submit(s: &TestServer, token: &str, item: &str, fields: Value) -> (u16, Value) {
    s.post(
        token,
        "/requests",
        json!({ "item_id": item, "fields": fields }),
    )
    .await
}

async fn submitted(s: &TestServer, token: &str, item: &str, fields: Value) -> Value {
    let (code, v) = submit(s, token, item, fields).await;
    assert_eq!(code, 201, "{v}");
    v
}

/// The entry of the array `list` whose `key` is `value`.
fn entry(list: &Value, key: &str, value: &str) -> Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .find(|e| e[key] == value)
        .cloned()
        .unwrap_or_else(|| panic!("no {key} = {value} in {list}"))
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

macro_rules! on_both_clocked {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::run(super::support::Db::Sqlite, super::$body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::run(super::support::Db::Postgres, super::$body).await;
            }
        }
    };
}

/// Tests of a body that starts its own server (`body(db)`), on SQLite and PostgreSQL.
macro_rules! on_both_databases {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(super::support::Db::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(super::support::Db::Postgres).await;
            }
        }
    };
}

async fn run<F>(db: Db, body: impl FnOnce(TestServer, Arc<ManualClock>) -> F)
where
    F: std::future::Future<Output = TestServer>,
{
    // Outside every restricted period of the catalog.
    let clock = Arc::new(ManualClock::at(utc(2026, 6, 15, 12, 0, 0)));
    if let Some(s) = server(db, clock.clone()).await {
        body(s, clock).await.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
/// An item without its own approval rule gets `catalog.yaml`'s `defaults.approval`: its
/// condition, approvers and timeout. The approvers' team takes members from `catalog.yaml`.
async fn default_approval(s: TestServer, clock: Arc<ManualClock>) -> TestServer {
    let dev = submitted(&s, ALICE, "gov.plain", json!({ "stage": "dev" })).await;
    assert_eq!(dev["state"], "queued", "dev needs no approval: {dev}");
    assert_eq!(dev["environment"], "dev", "{dev}");
    let prod = submitted(&s, ALICE, "gov.plain", json!({ "stage": "prod" })).await;
    assert_eq!(prod["state"], "awaiting_approval", "{prod}");
    assert_eq!(prod["environment"], "prod", "{prod}");
    let due: DateTime<Utc> = prod["approval_due"].as_str().unwrap().parse().unwrap();
    assert_eq!(due, clock.now() + chrono::Duration::hours(48), "{prod}");
    let pid = id(&prod);
    // Bob leads another team: not an approver of the default rule.
    let (code, v) = s
        .post(BOB, &format!("/approvals/{pid}/approve"), json!({}))
        .await;
    assert!(code == 403 || code == 404, "{code} {v}");
    // Dana is in platform-admins by catalog.yaml: she sees it pending and approves it.
    let (code, pending) = s.get(DANA, "/approvals/pending").await;
    assert_eq!(code, 200, "{pending}");
    assert_eq!(
        pending["approvals"][0]["approval_id"],
        pid.as_str(),
        "{pending}"
    );
    let (code, v) = s
        .post(DANA, &format!("/approvals/{pid}/approve"), json!({}))
        .await;
    assert_eq!(code, 200, "{v}");
    s.wait_state(ALICE, &pid, "completed").await;
    s.wait_state(ALICE, &id(&dev), "completed").await;
    // The catalog list says an approval rule applies to the item.
    let (_, list) = s.get(ALICE, "/catalog").await;
    let plain = entry(&list["items"], "id", "gov.plain");
    assert_eq!(plain["approval"], true, "{plain}");
    // Catalog members see their team's views.
    let (code, v) = s.get(DANA, "/teams/platform-admins/settings").await;
    assert_eq!(code, 200, "{v}");
    s
}
on_both_clocked!(
    defaults_approval_applies_to_items_without_their_own,
    default_approval
);

// ---------------------------------------------------------------------------------------
/// `catalog.yaml` team quotas are limits until an admin sets one through the API; a refusal
/// answers 422 `PAO-API-QUOTA-EXCEEDED` and the refused request stays on record as rejected.
async fn catalog_quotas(s: TestServer, _clock: Arc<ManualClock>) -> TestServer {
    let (code, v) = s.get(ALICE, "/teams/app-team/settings").await;
    assert_eq!(code, 200, "{v}");
    let line = entry(&v["quota"], "resource", "echoes");
    assert_eq!(line["limit"], 2, "{v}");
    assert_eq!(line["limit_source"], "catalog", "{v}");
    for _ in 0..2 {
        submitted(&s, ALICE, "gov.plain", json!({ "stage": "dev" })).await;
    }
    let (code, v) = submit(&s, ALICE, "gov.plain", json!({ "stage": "dev" })).await;
    assert_eq!(code, 422, "the third is over the catalog's limit of 2: {v}");
    assert_eq!(v["code"], "PAO-API-QUOTA-EXCEEDED", "{v}");
    let refused = v["request_id"].as_str().unwrap_or_else(|| panic!("{v}"));
    let (code, r) = s.get(ALICE, &format!("/requests/{refused}")).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["state"], "rejected", "{r}");
    // An admin's limit replaces the catalog's.
    let (code, v) = s
        .post(
            ADMIN,
            "/quota/limits/app-team",
            json!({ "limits": { "echoes": 3 } }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (_, v) = s.get(ALICE, "/teams/app-team/settings").await;
    let line = entry(&v["quota"], "resource", "echoes");
    assert_eq!(line["limit"], 3, "{v}");
    assert_eq!(line["limit_source"], "api", "{v}");
    submitted(&s, ALICE, "gov.plain", json!({ "stage": "dev" })).await;
    s
}
on_both_clocked!(catalog_team_quotas_are_limits, catalog_quotas);

// ---------------------------------------------------------------------------------------
/// The environment is what the item declares (`metadata.environment`, or its field sourced
/// from the catalog's environments), one of `catalog.yaml`'s, and one `access.environments`
/// allows; otherwise 422 at the field, with nothing stored.
async fn environments(s: TestServer, _clock: Arc<ManualClock>) -> TestServer {
    let (code, v) = submit(&s, ALICE, "gov.devonly", json!({ "environment": "prod" })).await;
    assert_eq!(code, 422, "prod is not allowed for this item: {v}");
    assert_eq!(v["errors"][0]["pointer"], "/environment", "{v}");
    let (code, v) = submit(&s, ALICE, "gov.plain", json!({ "stage": "qa" })).await;
    assert_eq!(code, 422, "qa is no environment of the catalog: {v}");
    assert_eq!(v["errors"][0]["pointer"], "/stage", "{v}");
    let (_, list) = s.get(ALICE, "/requests").await;
    assert!(list["requests"].as_array().unwrap().is_empty(), "{list}");
    let ok = submitted(&s, ALICE, "gov.devonly", json!({ "environment": "dev" })).await;
    assert_eq!(ok["environment"], "dev", "{ok}");
    s
}
on_both_clocked!(environments_are_explicit_and_access_checked, environments);

// ---------------------------------------------------------------------------------------
/// A `refuse` period refuses manual-mode items too, and holds an approved request that would
/// start inside it until the period ends: still held on its last second, started on the
/// first second after it.
async fn freeze(s: TestServer, clock: Arc<ManualClock>) -> TestServer {
    clock.set(utc(2026, 11, 24, 0, 0, 0));
    let (code, v) = submit(&s, ALICE, "gov.ticket", json!({ "environment": "prod" })).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(
        v["state"], "rejected",
        "a manual change in prod during peak week: {v}"
    );
    let dev = submitted(&s, ALICE, "gov.ticket", json!({ "environment": "dev" })).await;
    assert_ne!(dev["state"], "rejected", "dev is not frozen: {dev}");

    // Submitted the second before the period, approved inside it.
    clock.set(utc(2026, 11, 23, 23, 59, 59));
    let r = submitted(&s, ALICE, "gov.plain", json!({ "stage": "prod" })).await;
    assert_eq!(r["state"], "awaiting_approval", "{r}");
    let rid = id(&r);
    clock.set(utc(2026, 11, 24, 0, 0, 0));
    let (code, v) = s
        .post(DANA, &format!("/approvals/{rid}/approve"), json!({}))
        .await;
    assert_eq!(code, 200, "{v}");
    let held = wait_waiting(&s, &rid).await;
    assert_eq!(held["state"], "queued", "{held}");
    assert!(
        held["waiting_for"].as_str().unwrap().contains("peak-week"),
        "{held}"
    );
    // The period's last second: still held.
    clock.set(utc(2026, 12, 2, 23, 59, 59));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, st) = s.get(ALICE, &format!("/requests/{rid}/status")).await;
    assert_eq!(st["state"], "queued", "held until the period ends: {st}");
    // The first second after it: released and run.
    clock.set(utc(2026, 12, 3, 0, 0, 0));
    s.wait_state(ALICE, &rid, "completed").await;
    s
}
on_both_clocked!(
    restricted_periods_hold_every_mode_at_submit_and_at_start,
    freeze
);

async fn wait_waiting(s: &TestServer, id: &str) -> Value {
    for _ in 0..200 {
        let (_, v) = s.get(ALICE, &format!("/requests/{id}/status")).await;
        if v["waiting_for"].is_string() {
            return v;
        }
        assert!(
            !matches!(
                v["state"].as_str(),
                Some("in_progress" | "completed" | "failed")
            ),
            "started inside the period: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("request {id} was not held");
}

// ---------------------------------------------------------------------------------------
/// Two approvers approving at once: each answer is 200, or a 409 whose decision was not
/// recorded; never a 409 after the decision was stored.
async fn concurrent_approvals(s: TestServer, _clock: Arc<ManualClock>) -> TestServer {
    for round in 0..12 {
        let r = submitted(
            &s,
            ALICE,
            "gov.gated",
            json!({ "note": format!("r{round}") }),
        )
        .await;
        let rid = id(&r);
        let approve = |token: &'static str| {
            let url = s.url(&format!("/approvals/{rid}/approve"));
            let http = s.http.clone();
            async move {
                let resp = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                support::decode(resp).await
            }
        };
        let (a, b) = tokio::join!(approve(BOB), approve(ADMIN));
        let (_, detail) = s.get(ADMIN, &format!("/requests/{rid}")).await;
        let recorded: Vec<&str> = detail["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["approver"].as_str().unwrap())
            .collect();
        for ((code, v), who) in [(a, "bob"), (b, "admin")] {
            match code {
                200 => assert!(recorded.contains(&who), "{who}: 200 but not recorded"),
                409 => assert!(
                    !recorded.contains(&who),
                    "round {round}: {who} got 409 after the decision was recorded: {v}"
                ),
                _ => panic!("{who}: {code} {v}"),
            }
        }
        s.wait_state(ALICE, &rid, "completed").await;
    }
    s
}
on_both_clocked!(
    approvals_are_idempotent_under_concurrency,
    concurrent_approvals
);

// ---------------------------------------------------------------------------------------
/// A failed post-fulfilment action does not fail the request: it completes, the failure is
/// a warning in its log, and its quota stays reserved (the resources exist).
async fn post_fulfilment(s: TestServer, _clock: Arc<ManualClock>) -> TestServer {
    let r = submitted(
        &s,
        ALICE,
        "gov.plain",
        json!({ "stage": "dev", "post_fail": true }),
    )
    .await;
    let rid = id(&r);
    s.wait_state(ALICE, &rid, "completed").await;
    let (_, logs) = s.get(ALICE, &format!("/requests/{rid}/logs")).await;
    let text = logs.to_string();
    assert!(
        text.contains("announce") && text.contains("warn"),
        "the post-fulfilment failure is logged: {logs}"
    );
    let (_, v) = s.get(ALICE, "/quota/usage/app-team").await;
    assert_eq!(entry(&v["usage"], "resource", "echoes")["used"], 1, "{v}");
    s
}
on_both_clocked!(
    post_fulfilment_failures_do_not_fail_the_request,
    post_fulfilment
);

// ---------------------------------------------------------------------------------------
/// `catalog.yaml`'s `defaults.execution` (timeout 1 s, 2 attempts) applies to an action that
/// sets neither: it times out twice and the request fails within seconds.
async fn execution_defaults(s: TestServer, _clock: Arc<ManualClock>) -> TestServer {
    let r = submitted(&s, ALICE, "gov.slow", json!({})).await;
    let rid = id(&r);
    let failed = s.wait_state(ALICE, &rid, "failed").await;
    let (_, detail) = s.get(ALICE, &format!("/requests/{rid}")).await;
    let attempts: Vec<&Value> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action_id"] == "wait")
        .collect();
    assert_eq!(
        attempts.len(),
        2,
        "max_attempts 2 from catalog.yaml: {detail}"
    );
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out")
            || detail.to_string().contains("timed out"),
        "{failed} {detail}"
    );
    s
}
on_both_clocked!(catalog_execution_defaults_apply, execution_defaults);

// ---------------------------------------------------------------------------------------
/// A request runs the item definition it was submitted and approved against: the catalog
/// changes while it waits for approval, and it still runs the old version.
async fn pinned_versions(s: TestServer, _clock: Arc<ManualClock>) -> TestServer {
    let r = submitted(&s, ALICE, "gov.versioned", json!({ "note": "a" })).await;
    let rid = id(&r);
    assert_eq!(r["state"], "awaiting_approval", "{r}");
    let file = s.state.catalog_dir.join("versioned.yaml");
    let old = std::fs::read_to_string(&file).unwrap();
    let new = old
        .replace("version: 1.0.0", "version: 2.0.0")
        .replace("first version", "second version");
    std::fs::write(&file, new).unwrap();
    let (code, v) = s.post(ADMIN, "/catalog/refresh", json!({})).await;
    assert_eq!(code, 200, "{v}");
    let (_, item) = s.get(ALICE, "/catalog/items/gov.versioned").await;
    assert_eq!(item["version"], "2.0.0", "{item}");
    let (code, v) = s
        .post(BOB, &format!("/approvals/{rid}/approve"), json!({}))
        .await;
    assert_eq!(code, 200, "{v}");
    s.wait_state(ALICE, &rid, "completed").await;
    let (_, detail) = s.get(ALICE, &format!("/requests/{rid}")).await;
    assert_eq!(detail["item_version"], "1.0.0", "{detail}");
    let input = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action_id"] == "say")
        .map(|a| a["input"]["message"].clone());
    assert_eq!(input, Some(json!("first version a")), "{detail}");
    // A new request gets the new version.
    let r2 = submitted(&s, ALICE, "gov.versioned", json!({ "note": "b" })).await;
    let r2id = id(&r2);
    s.post(BOB, &format!("/approvals/{r2id}/approve"), json!({}))
        .await;
    s.wait_state(ALICE, &r2id, "completed").await;
    let (_, detail) = s.get(ALICE, &format!("/requests/{r2id}")).await;
    assert_eq!(detail["item_version"], "2.0.0", "{detail}");
    s
}
on_both_clocked!(
    requests_run_the_version_they_were_admitted_with,
    pinned_versions
);

// ---------------------------------------------------------------------------------------
/// Cancelling a manual request whose ticket is open closes the ticket (the `jira` action's
/// rollback: cancel transition and comment), then cancels the request.
async fn manual_cancel(s: TestServer, _clock: Arc<ManualClock>) -> TestServer {
    let r = submitted(&s, ALICE, "gov.ticket", json!({ "environment": "dev" })).await;
    let rid = id(&r);
    for _ in 0..200 {
        let (_, st) = s.get(ALICE, &format!("/requests/{rid}/status")).await;
        if st["waiting_for"]
            .as_str()
            .is_some_and(|w| w.contains("NET-7"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, v) = s
        .post(
            ALICE,
            &format!("/requests/{rid}/cancel"),
            json!({ "reason": "not needed" }),
        )
        .await;
    assert!(code == 200 || code == 202, "{code} {v}");
    let done = s.wait_state(ALICE, &rid, "cancelled").await;
    assert_eq!(done["rollback"], "complete", "{done}");
    assert!(
        support::JIRA_CLOSED.lock().unwrap().contains(&rid),
        "the ticket of {rid} was closed"
    );
    s
}
on_both_clocked!(cancelling_a_manual_request_closes_its_ticket, manual_cancel);

// ---------------------------------------------------------------------------------------
/// The cost is estimated at admission: the item's `cost` action runs in estimate mode with the
/// submitted fields. The approval rule reads it (`cost.monthly > 1000`), approvers see it in
/// `GET /approvals/pending`, and `GET /cost/estimates/{id}` shows it with the declared cost
/// rendered.
async fn cost_at_admission(s: TestServer, _clock: Arc<ManualClock>) -> TestServer {
    let small = submitted(&s, ALICE, "gov.costly", json!({ "nodes": 2 })).await;
    assert_eq!(
        small["state"], "queued",
        "600 a month needs no approval: {small}"
    );
    assert_eq!(small["cost"]["monthly"], 600.0, "{small}");
    assert_eq!(small["cost"]["currency"], "USD", "{small}");
    assert_eq!(small["cost"]["source"], "actions", "{small}");
    assert_eq!(
        small["cost"]["estimates"][0]["action_id"], "estimate",
        "{small}"
    );
    let big = submitted(&s, ALICE, "gov.costly", json!({ "nodes": 4 })).await;
    assert_eq!(big["state"], "awaiting_approval", "1,200 a month: {big}");
    let bid = id(&big);
    let (code, pending) = s.get(BOB, "/approvals/pending").await;
    assert_eq!(code, 200, "{pending}");
    let line = entry(&pending["approvals"], "approval_id", &bid);
    assert_eq!(line["cost"]["monthly"], 1200.0, "{pending}");
    assert_eq!(
        line["cost"]["estimates"][0]["result"]["lines"][0]["quantity"], 4.0,
        "{pending}"
    );
    let (code, c) = s.get(ALICE, &format!("/cost/estimates/{bid}")).await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["admission"]["monthly"], 1200.0, "{c}");
    assert_eq!(
        c["declared"]["monthly"], 1200,
        "the declared cost is rendered: {c}"
    );
    assert_eq!(c["estimates"], json!([]), "nothing has run yet: {c}");
    let (code, v) = s
        .post(BOB, &format!("/approvals/{bid}/approve"), json!({}))
        .await;
    assert_eq!(code, 200, "{v}");
    s.wait_state(ALICE, &bid, "completed").await;
    let (_, c) = s.get(ALICE, &format!("/cost/estimates/{bid}")).await;
    assert_eq!(c["estimates"][0]["result"]["monthly"], 1200.0, "{c}");
    s.wait_state(ALICE, &id(&small), "completed").await;
    s
}
on_both_clocked!(cost_is_estimated_at_admission, cost_at_admission);

// ---------------------------------------------------------------------------------------
/// A submission whose quota reservation takes its team to 80 % or 100 % of a limit records a
/// `budget_threshold` event on that request.
async fn budget_events(s: TestServer, _clock: Arc<ManualClock>) -> TestServer {
    let thresholds = async |id: &str| s.events_of(ALICE, id, "budget_threshold").await;
    // The catalog gives app-team 10 nodes.
    let mut ids = Vec::new();
    for nodes in [3, 3, 2, 2] {
        let r = submitted(&s, ALICE, "gov.costly", json!({ "nodes": nodes })).await;
        ids.push(id(&r));
    }
    assert_eq!(thresholds(&ids[0]).await, Vec::<Value>::new(), "30 %");
    assert_eq!(thresholds(&ids[1]).await, Vec::<Value>::new(), "60 %");
    let at80 = thresholds(&ids[2]).await;
    assert_eq!(at80.len(), 1, "{at80:?}");
    assert_eq!(at80[0]["percent"], 80, "{at80:?}");
    assert_eq!(at80[0]["team"], "app-team", "{at80:?}");
    assert_eq!(at80[0]["resource"], "nodes", "{at80:?}");
    assert_eq!(at80[0]["used"], 8, "{at80:?}");
    assert_eq!(at80[0]["limit"], 10, "{at80:?}");
    let at100 = thresholds(&ids[3]).await;
    assert_eq!(at100.len(), 1, "{at100:?}");
    assert_eq!(at100[0]["percent"], 100, "{at100:?}");
    let (code, v) = submit(&s, ALICE, "gov.costly", json!({ "nodes": 1 })).await;
    assert_eq!(code, 422, "over the limit: {v}");
    let refused = v["request_id"].as_str().unwrap().to_string();
    assert_eq!(thresholds(&refused).await, Vec::<Value>::new(), "refused");
    s
}
on_both_clocked!(budget_thresholds_are_events, budget_events);

// ---------------------------------------------------------------------------------------
/// `lifecycle.maintenance` is shown on the item and its form: the window in progress and the
/// next one; a request submitted during a window is told so in its log.
async fn maintenance(s: TestServer, clock: Arc<ManualClock>) -> TestServer {
    // Sunday 03:00 UTC: inside the 02:00-04:00 window.
    clock.set(utc(2026, 6, 14, 3, 0, 0));
    let (code, item) = s.get(ALICE, "/catalog/items/gov.maintained").await;
    assert_eq!(code, 200, "{item}");
    let w = &item["maintenance"][0];
    assert_eq!(w["cron"], "0 2 * * SUN", "{item}");
    assert_eq!(w["duration"], "2h", "{item}");
    assert_eq!(w["in_progress"], true, "{item}");
    assert_eq!(w["ends_at"], "2026-06-14T04:00:00Z", "{item}");
    assert_eq!(w["next_start"], "2026-06-21T02:00:00Z", "{item}");
    assert_eq!(w["next_end"], "2026-06-21T04:00:00Z", "{item}");
    let (code, form) = s.get(ALICE, "/catalog/items/gov.maintained/schema").await;
    assert_eq!(code, 200, "{form}");
    assert_eq!(form["x-pao-maintenance"][0]["in_progress"], true, "{form}");
    let r = submitted(&s, ALICE, "gov.maintained", json!({ "note": "hi" })).await;
    let (_, logs) = s.get(ALICE, &format!("/requests/{}/logs", id(&r))).await;
    let told = logs["events"].as_array().unwrap().iter().any(|e| {
        e["type"] == "log"
            && e["level"] == "warn"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("maintenance window until 2026-06-14T04:00:00"))
    });
    assert!(told, "{logs}");
    // At 04:00 the window is over; the next is a week later.
    clock.set(utc(2026, 6, 14, 4, 0, 0));
    let (_, item) = s.get(ALICE, "/catalog/items/gov.maintained").await;
    assert_eq!(item["maintenance"][0]["in_progress"], false, "{item}");
    assert_eq!(item["maintenance"][0]["ends_at"], Value::Null, "{item}");
    // Items without windows show none.
    let (_, plain) = s.get(ALICE, "/catalog/items/gov.plain").await;
    assert_eq!(plain["maintenance"], json!([]), "{plain}");
    s
}
on_both_clocked!(maintenance_windows_are_shown, maintenance);

// ---------------------------------------------------------------------------------------
/// `[retention]`: a job deletes requests that ended more than `requests_days` ago, with their
/// journal, and audit records older than `audit_days`; live requests and recent ones stay.
async fn retention(db: Db) {
    let clock = Arc::new(ManualClock::at(utc(2026, 6, 15, 12, 0, 0)));
    let Some(s) = server_with(db, clock.clone(), |c| {
        c.retention.requests_days = Some(30);
        c.retention.audit_days = Some(60);
        c.retention.interval_secs = 1;
        c.retention.batch = 1;
    })
    .await
    else {
        return;
    };
    let mut old = Vec::new();
    for (item, fields) in [
        ("gov.plain", json!({ "stage": "dev" })),
        ("gov.maintained", json!({ "note": "x" })),
    ] {
        let r = submitted(&s, ALICE, item, fields).await;
        s.wait_state(ALICE, &id(&r), "completed").await;
        old.push(id(&r));
    }
    // A manual ticket stays in progress: live, however old.
    let live = id(&submitted(&s, ALICE, "gov.ticket", json!({ "environment": "dev" })).await);
    s.wait_state(ALICE, &live, "in_progress").await;
    // 31 days later, a request ends.
    clock.set(utc(2026, 7, 16, 12, 0, 0));
    let recent = id(&submitted(&s, ALICE, "gov.maintained", json!({ "note": "y" })).await);
    s.wait_state(ALICE, &recent, "completed").await;
    let gone = async |rid: &str| {
        for _ in 0..100 {
            let (code, _) = s.get(ALICE, &format!("/requests/{rid}")).await;
            if code == 404 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    for rid in &old {
        assert!(
            gone(rid).await,
            "{rid} ended 31 days ago and was not deleted"
        );
        let (code, v) = s.get(ALICE, &format!("/requests/{rid}/logs")).await;
        assert_eq!(code, 404, "its journal went with it: {v}");
    }
    for rid in [&live, &recent] {
        let (code, v) = s.get(ALICE, &format!("/requests/{rid}")).await;
        assert_eq!(code, 200, "{rid} stays: {v}");
    }
    // The audit trail is kept 60 days: the old submissions are still in it.
    let (code, audit) = s.get(ADMIN, "/audit/requests").await;
    assert_eq!(code, 200, "{audit}");
    let targets = audit.to_string();
    assert!(targets.contains(&old[0]), "{audit}");
    // 61 days after the first submissions, their audit records go too.
    clock.set(utc(2026, 8, 15, 12, 0, 1));
    let mut cleared = false;
    for _ in 0..100 {
        let (_, audit) = s.get(ADMIN, "/audit/requests").await;
        if !audit.to_string().contains(&old[0]) {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cleared, "the audit records of 2026-06-15 were not deleted");
    s.stop().await;
}

on_both_databases!(retention_deletes_what_is_past_its_period, retention);

// ---------------------------------------------------------------------------------------
/// `monitoring.health_check` runs for completed requests every `interval`: its URL rendered
/// from the request's outputs; the first result and every change are `health_changed` events.
async fn health_checks(db: Db) {
    use std::sync::atomic::{AtomicU16, Ordering};
    let status = Arc::new(AtomicU16::new(200));
    let answer = status.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let s = answer.load(Ordering::SeqCst);
            async move { axum::http::StatusCode::from_u16(s).unwrap() }
        }),
    );
    let instance = pao_sandbox::FakeServer::start(app).await.unwrap();
    let port: u16 = instance.url().rsplit(':').next().unwrap().parse().unwrap();
    let clock = Arc::new(ManualClock::at(Utc::now()));
    let Some(s) = server_with(db, clock, |c| c.health_checks.sweep_secs = 1).await else {
        return;
    };
    let r = submitted(&s, ALICE, "gov.monitored", json!({ "port": port })).await;
    let rid = id(&r);
    s.wait_state(ALICE, &rid, "completed").await;
    let changes = async |n: usize| -> Vec<Value> {
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen = s.events_of(ALICE, &rid, "health_changed").await;
            if seen.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    };
    let first = changes(1).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["healthy"], true, "{first:?}");
    assert_eq!(first[0]["status"], 200, "{first:?}");
    assert_eq!(first[0]["url"], format!("http://127.0.0.1:{port}/health"));
    status.store(503, Ordering::SeqCst);
    let down = changes(2).await;
    assert_eq!(down.len(), 2, "{down:?}");
    assert_eq!(down[1]["healthy"], false, "{down:?}");
    assert_eq!(down[1]["status"], 503, "{down:?}");
    // Checks go on every second; only changes are recorded.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(changes(2).await.len(), 2);
    status.store(204, Ordering::SeqCst);
    let up = changes(3).await;
    assert_eq!(up.len(), 3, "{up:?}");
    assert_eq!(up[2]["healthy"], true, "{up:?}");
    s.stop().await;
}

on_both_databases!(health_checks_run_for_completed_requests, health_checks);
