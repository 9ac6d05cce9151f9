//! Endpoints whose answers come from the store's bounded reads (audit pages, aggregates,
//! pending approvals) and quota limits, over HTTP on SQLite and on PostgreSQL.

mod support;

use serde_json::json;
use support::TestServer;

const ADMIN: &str = "t-admin";

// ---------------------------------------------------------------------------------------
/// `GET /audit/requests` shows the newest records first, also in a log of 1,500 records, and
/// `next_cursor` pages on to older ones.
async fn audit_newest_first(s: &TestServer) {
    for i in 0..1_500 {
        s.state
            .store
            .audit(pao_core::store::AuditRecord {
                at: chrono::Utc::now(),
                actor: "alice".into(),
                action: "request.submit".into(),
                target: format!("t-{i}"),
                detail: json!({ "n": i }),
            })
            .await
            .unwrap();
    }
    let (code, v) = s.get(ADMIN, "/audit/requests").await;
    assert_eq!(code, 200, "{v}");
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 100, "the default page");
    assert_eq!(records[0]["target"], "t-1499", "the newest record first");
    assert_eq!(records[99]["target"], "t-1400");
    let cursor = v["next_cursor"].as_u64().expect("a full page has a cursor");
    let (code, v) = s
        .get(
            ADMIN,
            &format!("/audit/requests?before={cursor}&limit=1000"),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let records = v["records"].as_array().unwrap();
    assert_eq!(
        records[0]["target"], "t-1399",
        "the next page goes on from the cursor"
    );
    assert_eq!(records[999]["target"], "t-400");
    let (code, v) = s.get(ADMIN, "/audit/requests?before=nope").await;
    assert_eq!(code, 400, "{v}");
}
on_both!(audit_reads_newest_first, audit_newest_first);
