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

// ---------------------------------------------------------------------------------------
/// Quota limits no store can keep are refused with a located 422 on both endpoints (a limit
/// above `i64::MAX` used to become negative and block every request; an empty resource name
/// was kept); the largest limit is kept and blocks nothing. A team-admin sets limits up to
/// those `catalog.yaml` declares for the team; higher, or for undeclared resources, is for
/// admins.
async fn quota_limits(s: &TestServer) {
    const LEAD: &str = "t-lead";
    let too_large = i64::MAX as u64 + 1;
    for (path, body, pointer) in [
        (
            "/teams/app-team/config",
            json!({ "quotas": { "echoes": too_large } }),
            "/quotas/echoes",
        ),
        (
            "/quota/limits/app-team",
            json!({ "limits": { "echoes": u64::MAX } }),
            "/limits/echoes",
        ),
        (
            "/teams/app-team/config",
            json!({ "quotas": { "": 5 } }),
            "/quotas/",
        ),
        (
            "/teams/app-team/config",
            json!({ "quotas": { " ": 5 } }),
            "/quotas/ ",
        ),
        (
            "/quota/limits/app-team",
            json!({ "limits": { "": 5 } }),
            "/limits/",
        ),
    ] {
        let (code, v) = s.post(ADMIN, path, body.clone()).await;
        assert_eq!(code, 422, "{path} {body}: {v}");
        assert_eq!(v["errors"][0]["pointer"], pointer, "{path} {body}: {v}");
    }
    let (_, v) = s.get(ADMIN, "/quota/usage/app-team").await;
    assert!(
        v["usage"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["limit_source"] != "api"),
        "refused limits are not stored: {v}"
    );
    let (code, v) = s
        .post(
            ADMIN,
            "/quota/limits/app-team",
            json!({ "limits": { "echoes": (1u64 << 53) - 1 } }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = s
        .post(
            "t-alice",
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "svc-q" } }),
        )
        .await;
    assert_eq!(code, 201, "the largest limit blocks nothing: {v}");
    assert_ne!(v["state"], "rejected", "{v}");

    // team-admin of app-team: up to the declared 100.
    let (code, v) = s
        .post(
            LEAD,
            "/teams/app-team/config",
            json!({ "quotas": { "echoes": 100 } }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = s
        .post(
            LEAD,
            "/teams/app-team/config",
            json!({ "quotas": { "echoes": 101 } }),
        )
        .await;
    assert_eq!(code, 403, "above the declared limit: {v}");
    let (code, v) = s
        .post(
            LEAD,
            "/teams/app-team/config",
            json!({ "quotas": { "vcpu": 1 } }),
        )
        .await;
    assert_eq!(code, 403, "a resource catalog.yaml declares none for: {v}");
    let (code, v) = s
        .post(
            ADMIN,
            "/teams/app-team/config",
            json!({ "quotas": { "echoes": 101 } }),
        )
        .await;
    assert_eq!(code, 200, "admins may: {v}");
}

/// A server with a `team-admin` of `app-team` (token `t-lead`).
async fn with_team_admin(db: support::Db) -> Option<TestServer> {
    support::spawn_with(db, |config| {
        config.auth.tokens.push(pao_server::config::TokenConfig {
            id: "lead".into(),
            token_sha256: pao_server::config::hash_token("t-lead"),
            email: None,
            name: None,
            teams: vec!["app-team".into()],
            roles: vec!["team-admin".into()],
        });
    })
    .await
}

mod quota_limits_refused_or_kept {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        if let Some(s) = super::with_team_admin(crate::support::Db::Sqlite).await {
            super::quota_limits(&s).await;
            s.stop().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(s) = super::with_team_admin(crate::support::Db::Postgres).await {
            super::quota_limits(&s).await;
            s.stop().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
/// `GET /approvals/pending` pages: at most `limit` approvals, newest first, and a
/// `next_cursor` to go on with; requests the caller may not decide on are skipped.
async fn pending_approvals_paged(s: &TestServer) {
    let mut ids = Vec::new();
    for i in 0..3 {
        let (code, r) = s
            .post(
                "t-alice",
                "/requests",
                json!({ "item_id": "test.echo", "fields": { "name": format!("svc-p{i}"), "environment": "prod" } }),
            )
            .await;
        assert_eq!(code, 201, "{r}");
        assert_eq!(r["state"], "awaiting_approval", "{r}");
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    let (code, v) = s.get("t-bob", "/approvals/pending?limit=2").await;
    assert_eq!(code, 200, "{v}");
    let got: Vec<&str> = v["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approval_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()], "newest first: {v}");
    let cursor = v["next_cursor"].as_str().expect("a full page has a cursor");
    let (code, v) = s
        .get(
            "t-bob",
            &format!("/approvals/pending?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["approvals"][0]["approval_id"], ids[0].as_str(), "{v}");
    assert_eq!(v["approvals"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["next_cursor"].is_null(), "the last page: {v}");
    let (_, v) = s.get("t-alice", "/approvals/pending").await;
    assert!(
        v["approvals"].as_array().unwrap().is_empty(),
        "the requester may not decide: {v}"
    );
    let (code, v) = s.get("t-bob", "/approvals/pending?cursor=nope").await;
    assert_eq!(code, 400, "{v}");
}
on_both!(pending_approvals_are_paged, pending_approvals_paged);
