//! The shared `Store` conformance suite on SQLite and on PostgreSQL: one test per check and
//! backend, each on a fresh database (a new SQLite file; a new PostgreSQL database created
//! from `PAO_TEST_DATABASE_URL` and dropped afterwards).
//!
//! PostgreSQL tests need `PAO_TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`). Without it they are skipped with a message,
//! except under `CI=true`, where a missing database fails the run.

use std::sync::atomic::{AtomicUsize, Ordering};

use pao_core::store::conformance;
use pao_store::SqlStore;

static N: AtomicUsize = AtomicUsize::new(0);

async fn sqlite() -> (SqlStore, tempdir::Dir) {
    let dir = tempdir::Dir::new("sqlite");
    let url = format!("sqlite://{}/pao.db", dir.path.display());
    (SqlStore::open(&url).await.expect("open sqlite"), dir)
}

/// A fresh PostgreSQL database, or `None` (skip) outside CI when none is configured.
async fn postgres() -> Option<(SqlStore, PgDb)> {
    let Ok(base) = std::env::var("PAO_TEST_DATABASE_URL") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PAO_TEST_DATABASE_URL is not set; CI requires the PostgreSQL tests to run");
        }
        eprintln!("skipping: PAO_TEST_DATABASE_URL is not set");
        return None;
    };
    let name = format!(
        "pao_t_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to PAO_TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    let url = match base.rfind('/') {
        Some(i) if base[..i].contains("://") && i > base.find("://").unwrap_or(0) + 2 => {
            format!("{}/{name}", &base[..i])
        }
        _ => format!("{base}/{name}"),
    };
    let store = SqlStore::open_with(&url, 5).await.expect("open postgres");
    Some((store, PgDb { admin, name, url }))
}

struct PgDb {
    admin: sqlx::AnyPool,
    name: String,
    url: String,
}

impl PgDb {
    async fn drop_db(self, store: SqlStore) {
        store.pool().close().await;
        drop(store);
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await;
    }
}

mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let path = std::env::temp_dir().join(format!(
                "pao-store-{tag}-{}-{}",
                std::process::id(),
                super::N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _dir) = super::sqlite().await;
                    pao_core::store::conformance::$check(&store).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some((store, db)) = super::postgres().await else { return };
                    pao_core::store::conformance::$check(&store).await;
                    db.drop_db(store).await;
                }
            )*
        }
    };
}

pao_core::for_each_conformance_check!(checks);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_sqlite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| async {
        let (s, d) = sqlite().await;
        dirs.lock().unwrap().push(d);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_purge_on_sqlite() {
    use pao_core::store::Store;
    let (store, dir) = sqlite().await;
    let now = chrono::Utc::now();
    let new = pao_core::store::NewRequest {
        id: "r1".into(),
        item_id: "i".into(),
        item_version: "1".into(),
        item_hash: "h".into(),
        fields: serde_json::json!({}),
        requester: pao_core::authz::Principal::new("u", &["t"], &[]),
        team: "t".into(),
        environment: None,
        priority: 0,
        idempotency_key: None,
        correlation_id: "c".into(),
        retry_of: None,
        cost: None,
    };
    store.submit(new.clone(), "u", now).await.unwrap();
    // r2 runs to `Completed` holding 2 units of quota: a completed request keeps its
    // reservation until it is purged.
    use pao_core::lifecycle::RequestState as S;
    use pao_core::store::{StateChange, Write};
    let step = |from, to| Write::Transition {
        from,
        to,
        change: StateChange {
            actor: "system".into(),
            reason: None,
            at: now,
        },
    };
    let r2 = pao_core::store::NewRequest {
        id: "r2".into(),
        ..new
    };
    let admitted = vec![
        step(S::Submitted, S::Prerequisites),
        Write::ReserveQuota {
            resource: "db".into(),
            amount: 2,
            default_limit: None,
        },
        step(S::Prerequisites, S::Validation),
        step(S::Validation, S::Queued),
    ];
    store.submit_with(r2, "u", now, admitted).await.unwrap();
    let (claimed, lease) = store
        .claim("w", std::time::Duration::from_secs(30), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, "r2");
    let ran = vec![
        step(S::Queued, S::InProgress),
        step(S::InProgress, S::Completed),
    ];
    store.apply("r2", Some(&lease), ran).await.unwrap();
    let used = |u: Vec<pao_core::store::QuotaUsage>| u.iter().map(|q| q.used).sum::<u64>();
    assert_eq!(used(store.quota_usage("t").await.unwrap()), 2);
    let copy = dir.path.join("backup.db");
    store.backup_to(copy.to_str().unwrap()).await.unwrap();
    let restored = SqlStore::open(&format!("sqlite://{}", copy.display()))
        .await
        .unwrap();
    assert!(
        restored.get("r1").await.unwrap().is_some(),
        "the backup holds the request"
    );
    assert!(
        store.backup_to(copy.to_str().unwrap()).await.is_err(),
        "never overwrites"
    );
    // Ended requests older than the cutoff go, with their quota; live ones never do, and
    // their events are protected by a trigger too.
    assert_eq!(
        store
            .purge(now + chrono::Duration::days(1), now, 100)
            .await
            .unwrap()
            .requests,
        1,
        "only the completed r2 is purged"
    );
    assert!(store.get("r2").await.unwrap().is_none());
    assert!(
        store.get("r1").await.unwrap().is_some(),
        "the live r1 stays"
    );
    assert_eq!(
        used(store.quota_usage("t").await.unwrap()),
        0,
        "the purged request's quota is returned"
    );
    assert!(
        sqlx::query("DELETE FROM events")
            .execute(store.pool())
            .await
            .is_err()
    );
    assert!(
        sqlx::query("UPDATE events SET at = 0")
            .execute(store.pool())
            .await
            .is_err()
    );
}

/// Two replicas on one database, with clocks 25 s apart: `exact` reads the true time, `ahead`
/// runs 25 s fast. With leases of 20 s judged by the workers' clocks, the replica ahead took
/// every lease the other had just taken or renewed (by its clock they had ended 5 s ago). The
/// database's clock decides: it takes none.
async fn skewed_replicas_take_no_live_lease(exact: &SqlStore, ahead: &SqlStore) {
    use pao_core::lifecycle::RequestState as S;
    use pao_core::store::{StateChange, Store, Write};
    let lease_for = std::time::Duration::from_secs(20);
    let skew = chrono::Duration::seconds(25);
    let now = chrono::Utc::now();
    let step = |from, to| Write::Transition {
        from,
        to,
        change: StateChange {
            actor: "system".into(),
            reason: None,
            at: now,
        },
    };
    let new = pao_core::store::NewRequest {
        id: "r1".into(),
        item_id: "i".into(),
        item_version: "1".into(),
        item_hash: "h".into(),
        fields: serde_json::json!({}),
        requester: pao_core::authz::Principal::new("u", &["t"], &[]),
        team: "t".into(),
        environment: None,
        priority: 0,
        idempotency_key: None,
        correlation_id: "c".into(),
        retry_of: None,
        cost: None,
    };
    let queued = vec![
        step(S::Submitted, S::Prerequisites),
        step(S::Prerequisites, S::Validation),
        step(S::Validation, S::Queued),
    ];
    exact.submit_with(new, "u", now, queued).await.unwrap();
    let (_, lease) = exact
        .claim("exact", lease_for, chrono::Utc::now())
        .await
        .unwrap()
        .expect("the queued request");
    let stolen = ahead
        .claim("ahead", lease_for, chrono::Utc::now() + skew)
        .await
        .unwrap();
    assert!(
        stolen.is_none(),
        "the replica 25 s ahead took a lease taken a moment ago: {stolen:?}"
    );
    exact
        .apply("r1", Some(&lease), vec![step(S::Queued, S::InProgress)])
        .await
        .unwrap();
    let renewed = exact
        .heartbeat(&lease, lease_for, chrono::Utc::now())
        .await
        .unwrap();
    let stolen = ahead
        .claim("ahead", lease_for, chrono::Utc::now() + skew)
        .await
        .unwrap();
    assert!(
        stolen.is_none(),
        "the replica 25 s ahead took a lease renewed a moment ago: {stolen:?}"
    );
    exact
        .apply(
            "r1",
            Some(&renewed),
            vec![step(S::InProgress, S::Completed)],
        )
        .await
        .expect("the holder still holds its lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_replicas_take_no_live_lease_on_sqlite() {
    let (exact, dir) = sqlite().await;
    let url = format!("sqlite://{}/pao.db", dir.path.display());
    let ahead = SqlStore::open(&url).await.expect("open sqlite again");
    skewed_replicas_take_no_live_lease(&exact, &ahead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_replicas_take_no_live_lease_on_postgres() {
    let Some((exact, db)) = postgres().await else {
        return;
    };
    let ahead = SqlStore::open_with(&db.url, 2)
        .await
        .expect("open postgres again");
    skewed_replicas_take_no_live_lease(&exact, &ahead).await;
    ahead.close().await;
    db.drop_db(exact).await;
}
