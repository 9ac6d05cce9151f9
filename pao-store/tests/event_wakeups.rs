//! Announcements of appended events across processes: a store opened on the same PostgreSQL
//! database as another hears, through `LISTEN pao_events`, the id of every request whose
//! events the other appended (what wakes a replica's WebSocket streams at once). SQLite
//! announces nothing: its streams poll.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use pao_core::store::Store;
use pao_store::SqlStore;
use support::{Db, Kind, Submitter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_hears_which_requests_had_events() {
    let Some(db) = Db::postgres("wakeups").await else {
        return;
    };
    let listener = SqlStore::open_with(&db.url, 2).await.expect("open");
    let mut rx = listener
        .event_wakeups()
        .expect("PostgreSQL announces appended events");
    // The listener announces that it (re)connected with an empty id: anything before may
    // have been missed. Wait for it, so that the submissions below are heard.
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if rx.recv().await.expect("announcement").is_empty() {
                break;
            }
        }
    })
    .await;
    assert!(connected.is_ok(), "the listener never connected");

    let other = Submitter::open(&db, 4).await;
    other
        .submit(&[Kind::Single, Kind::TwoStep, Kind::Single], 1)
        .await;
    let submitted: HashSet<String> = other.submitted().into_iter().map(|(id, _)| id).collect();
    let mut heard = HashSet::new();
    let all = tokio::time::timeout(Duration::from_secs(10), async {
        while !submitted.is_subset(&heard) {
            let id = rx.recv().await.expect("announcement");
            if !id.is_empty() {
                heard.insert(id);
            }
        }
    })
    .await;
    assert!(all.is_ok(), "heard {heard:?} of {submitted:?}");
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_announces_nothing() {
    let db = Db::sqlite("wakeups");
    let store = SqlStore::open(&db.url).await.expect("open");
    assert!(store.event_wakeups().is_none());
    db.cleanup().await;
}
