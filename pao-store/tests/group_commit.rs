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
        cost: None,
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

/// The writer never checkpoints inside a commit (that stalled every write queued behind it);
/// a background task copies the WAL into the database file while the store is open, so the
/// file grows with the data and the WAL does not take everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_in_the_background() {
    let dir = std::env::temp_dir().join(format!("pao-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/pao.db", dir.display());
    let db_file = dir.join("pao.db");
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    // Let a first checkpoint take the migrations in.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let before = std::fs::metadata(&db_file).unwrap().len();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..150 {
                s.submit(new_request(t * 1000 + i), "u", Utc::now())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Checkpoints run every 500 ms; give them a few turns.
    let mut after = before;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = std::fs::metadata(&db_file).unwrap().len();
        if after >= before + 200 * 1024 {
            break;
        }
    }
    assert!(
        after >= before + 200 * 1024,
        "1,200 requests were written but the database file grew from {before} to {after} bytes only: \
         the WAL was not checkpointed while the store was open"
    );
    let got = store.get("r-7149").await.unwrap();
    assert!(got.is_some(), "what was checkpointed reads back");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
