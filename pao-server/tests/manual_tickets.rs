//! Manual-mode tickets without webhooks, on SQLite and PostgreSQL, against a fake JIRA Cloud on
//! 127.0.0.1: a ticket that nobody reports on is read from JIRA once it has been quiet for
//! `poll_after_secs` and ends its request; a ticket still open when the item's
//! `sla.fulfillment` passes is escalated once (a comment on the ticket, an `sla_breached`
//! event). The engine reads a clock the test sets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pao_core::clock::ManualClock;
use pao_sandbox::jira::JiraFake;
use serde_json::{Value, json};
use support::{Db, TestServer};

const ALICE: &str = "t-alice";

async fn server(db: Db, clock: Arc<ManualClock>, jira: &JiraFake) -> Option<TestServer> {
    let dir = std::env::temp_dir().join(format!(
        "pao-manual-tickets-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manual_tickets");
    for e in std::fs::read_dir(fixtures).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let actions = json!({ "jira": { "jira-cloud": {
        "url": jira.url(),
        "api_version": 3,
        "auth": { "kind": "basic", "email": jira.credentials.email, "token_secret": "jira_cloud_api_token" },
        "default": true
    } } });
    let token = jira.credentials.api_token.clone();
    support::spawn_full(db, Some(clock), true, move |c| {
        c.catalog = dir;
        c.actions = serde_json::from_value(actions).unwrap();
        c.secrets.insert("jira_cloud_api_token".into(), token);
        c.manual_tickets.poll_after_secs = 300;
        c.manual_tickets.interval_secs = 1;
    })
    .await
}

/// The ticket key the request waits for.
async fn ticket_of(s: &TestServer, id: &str) -> String {
    let mut st = Value::Null;
    for _ in 0..200 {
        (_, st) = s.get(ALICE, &format!("/requests/{id}/status")).await;
        if let Some(key) = st["waiting_for"]
            .as_str()
            .and_then(|w| w.strip_prefix("manual:"))
        {
            return key.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, logs) = s.get(ALICE, &format!("/requests/{id}/logs")).await;
    panic!("{id} never waited for a ticket: {st}\n{logs}");
}

async fn submit(s: &TestServer, rule: &str) -> String {
    let (code, r) = s
        .post(
            ALICE,
            "/requests",
            json!({ "item_id": "net.firewall-change", "fields": { "rule": rule } }),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    r["id"].as_str().unwrap().to_string()
}

async fn scenario(db: Db) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let jira = JiraFake::start().await.unwrap();
    // Near the real time: actions measure their deadlines against the system clock.
    let clock = Arc::new(ManualClock::at(Utc::now()));
    let Some(s) = server(db, clock.clone(), &jira).await else {
        return;
    };

    // Resolved in JIRA, and no webhook comes.
    let done = submit(&s, "allow 10.0.0.0/8 to db:5432").await;
    let key = ticket_of(&s, &done).await;
    jira.set_status(&key, "Done");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, st) = s.get(ALICE, &format!("/requests/{done}/status")).await;
    assert_eq!(
        st["state"], "in_progress",
        "not read before the ticket was quiet for poll_after_secs: {st}"
    );
    clock.advance(Duration::from_secs(301));
    s.wait_state(ALICE, &done, "completed").await;
    let moves = s.events_of(ALICE, &done, "state_changed").await;
    assert!(
        moves
            .iter()
            .any(|e| e["to"] == "completed" && e["actor"] == format!("jira-poll:{key}")),
        "{moves:?}"
    );

    // Still open when the SLA of 1h passes: escalated once.
    let open = submit(&s, "allow 10.1.0.0/16 to cache:6379").await;
    let key = ticket_of(&s, &open).await;
    assert!(s.events_of(ALICE, &open, "sla_breached").await.is_empty());
    clock.advance(Duration::from_secs(2 * 3600));
    let mut breached = Vec::new();
    for _ in 0..100 {
        breached = s.events_of(ALICE, &open, "sla_breached").await;
        if !breached.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(breached.len(), 1, "{breached:?}");
    assert_eq!(breached[0]["sla"], "1h", "{breached:?}");
    assert_eq!(breached[0]["ticket"], key.as_str(), "{breached:?}");
    assert!(
        breached[0]["elapsed_secs"].as_u64().unwrap() >= 7200,
        "{breached:?}"
    );
    let comments = jira.issue(&key).unwrap().comments;
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0].to_string().contains("fulfillment SLA of 1h"),
        "{comments:?}"
    );
    // Later sweeps do not escalate again; the ticket is still being worked.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.events_of(ALICE, &open, "sla_breached").await.len(), 1);
    assert_eq!(jira.issue(&key).unwrap().comments.len(), 1);
    let (_, st) = s.get(ALICE, &format!("/requests/{open}/status")).await;
    assert_eq!(st["state"], "in_progress", "{st}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    scenario(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    scenario(Db::Postgres).await;
}
