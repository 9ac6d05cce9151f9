//! Group commit on SQLite: concurrent writes share commits, each write is durable when it
//! returns (a fresh store on the same file sees it), and a failing write in a group does not
//! take the others down.

use std::sync::Arc;

use chrono::Utc;
use pao_core::authz::Principal;
use pao_core::lifecycle::RequestState;
use pao_core::store::{ApprovalDecision, NewRequest, StateChange, Store, StoreError};
use pao_store::SqlStore;

fn new_request(i: usize) -> NewRequest {
    NewRequest {
        id: format!("r-{i}"),
        item_id: "item".into(),
        item_version: "1.0.0".into(),
        item_hash: "h".into(),
        fields: serde_json::json!({ "i": i }),
        requester: Principal::new("u", &["t"], &[]),
        team: "t".into(),
        environment: None,
        priority: 0,
        idempotency_key: None,
        correlation_id: format!("c-{i}"),
        retry_of: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_commits_and_stay_durable() {
    let dir = std::env::temp_dir().join(format!("pao-group-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/pao.db", dir.display());
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let n = 400;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let now = Utc::now();
            s.submit(new_request(i), "u", now).await.unwrap();
            let change = StateChange {
                actor: "u".into(),
                reason: None,
                at: now,
            };
            s.transition(
                &format!("r-{i}"),
                RequestState::Submitted,
                RequestState::Prerequisites,
                change,
                None,
            )
            .await
            .unwrap();
            // Every tenth request also gets a failing write (a duplicate decision) in the middle
            // of everyone else's group.
            if i % 10 == 0 {
                let d = ApprovalDecision {
                    request_id: format!("r-{i}"),
                    approver: "a".into(),
                    approved: true,
                    reason: None,
                    at: now,
                };
                s.record_decision(d.clone()).await.unwrap();
                let again = s.record_decision(d).await;
                assert!(matches!(again, Err(StoreError::Duplicate(_))), "{again:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (writes, commits) = store.group_commit_stats().unwrap();
    assert!(writes >= 2 * n as u64 + n as u64 / 10, "{writes} writes");
    assert!(
        commits < writes,
        "concurrent writes should share commits: {writes} writes in {commits} commits"
    );
    println!("group commit: {writes} writes in {commits} commits");
    // Durable and complete as seen by another store on the same file.
    let other = SqlStore::open(&url).await.unwrap();
    for i in 0..n {
        let r = other.get(&format!("r-{i}")).await.unwrap().unwrap();
        assert_eq!(r.state, RequestState::Prerequisites);
        let events = other.events(&r.id, 0, 0).await.unwrap();
        assert_eq!(events.len(), 2, "{i}");
        if i % 10 == 0 {
            assert_eq!(other.decisions(&r.id).await.unwrap().len(), 1);
        }
    }
    other.close().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_alone_commits_at_once() {
    let store = SqlStore::open("sqlite::memory:").await.unwrap();
    store.submit(new_request(1), "u", Utc::now()).await.unwrap();
    assert_eq!(store.group_commit_stats(), Some((1, 1)));
    // Readers share the one in-memory connection: the batch gave it back.
    assert!(store.get("r-1").await.unwrap().is_some());
}
