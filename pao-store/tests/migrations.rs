//! Migrations: an empty database migrates to the latest schema, opening again changes nothing,
//! and replicas that start at the same moment on one empty database all come up. The applied
//! versions are checked against the migration files and printed.
//!
//! From each earlier version: the database is migrated up to that version only, a request
//! is stored with that version's schema, and opening the store applies the rest and keeps
//! the request readable and claimable.

mod support;

use pao_store::SqlStore;
use sqlx::Row;
use support::Db;

/// Versions of the migration files of one dialect, from their names (`0001_init.sql`).
fn files(dialect: &str) -> Vec<i64> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let mut v: Vec<i64> = std::fs::read_dir(&dir)
        .expect("read the migrations folder")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.split('_').next()?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

async fn applied(store: &SqlStore) -> Vec<(i64, bool, Vec<u8>)> {
    sqlx::query("SELECT version, CASE WHEN success THEN 1 ELSE 0 END AS ok, checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(store.pool())
        .await
        .expect("read _sqlx_migrations")
        .iter()
        .map(|r| {
            (
                r.try_get::<i64, _>("version").expect("version"),
                r.try_get::<i64, _>("ok").expect("success") == 1,
                r.try_get::<Vec<u8>, _>("checksum").expect("checksum"),
            )
        })
        .collect()
}

async fn migrate_empty_then_again(db: Db, dialect: &str) {
    let first = SqlStore::open(&db.url)
        .await
        .expect("migrate an empty database");
    let after_first = applied(&first).await;
    let versions: Vec<i64> = after_first.iter().map(|(v, _, _)| *v).collect();
    assert_eq!(
        versions,
        files(dialect),
        "every migration file is applied, in order"
    );
    assert!(after_first.iter().all(|(_, ok, _)| *ok), "all succeeded");
    // Every table the store writes exists.
    for table in [
        "requests",
        "events",
        "attempts",
        "decisions",
        "quota_limits",
        "quota_reservations",
        "audit",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table}"
        )))
        .fetch_one(first.pool())
        .await
        .unwrap_or_else(|e| panic!("{dialect}: table {table} after migrating: {e}"));
    }
    first.pool().close().await;
    drop(first);

    let second = SqlStore::open(&db.url)
        .await
        .expect("open a migrated database again");
    assert_eq!(
        applied(&second).await,
        after_first,
        "opening again applies nothing"
    );
    println!(
        "migrations on {dialect}: applied versions {versions:?}; opening again changed nothing"
    );
    second.pool().close().await;
    drop(second);
    db.cleanup().await;
}

/// Replicas starting together on one empty database: one migrates, the others wait for it.
async fn replicas_start_together(db: Db, dialect: &str) {
    let opens = (0..3).map(|_| {
        let url = db.url.clone();
        async move { SqlStore::open_with(&url, 2).await }
    });
    let mut stores = Vec::new();
    for r in join_all(opens).await {
        stores.push(r.unwrap_or_else(|e| panic!("{dialect}: a replica failed to start: {e}")));
    }
    let versions: Vec<i64> = applied(&stores[0])
        .await
        .iter()
        .map(|(v, _, _)| *v)
        .collect();
    assert_eq!(versions, files(dialect));
    for s in stores {
        s.pool().close().await;
    }
    db.cleanup().await;
}

/// Runs the futures on their own tasks, at the same time.
async fn join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_empty_and_reopen_on_sqlite() {
    migrate_empty_then_again(Db::sqlite("mig"), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_empty_and_reopen_on_postgres() {
    let Some(db) = Db::postgres("mig").await else {
        return;
    };
    migrate_empty_then_again(db, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_start_together_on_sqlite() {
    replicas_start_together(Db::sqlite("mig3"), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_start_together_on_postgres() {
    let Some(db) = Db::postgres("mig3").await else {
        return;
    };
    replicas_start_together(db, "postgres").await;
}

/// Migrates to each earlier version, stores a queued request with that schema, then opens the
/// store (which applies the rest): the request reads back and is claimed.
async fn migrate_from_each_earlier(make: impl AsyncFn(i64) -> Option<Db>, dialect: &str) {
    let all = files(dialect);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    for &version in &all[..all.len() - 1] {
        let Some(db) = make(version).await else {
            return;
        };
        sqlx::any::install_default_drivers();
        let url = if dialect == "sqlite" {
            format!("{}?mode=rwc", db.url)
        } else {
            db.url.clone()
        };
        let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
        let migrator = sqlx::migrate::Migrator::new(dir.as_path())
            .await
            .expect("read the migrations");
        migrator
            .run_to(version, &pool)
            .await
            .unwrap_or_else(|e| panic!("{dialect}: migrate to {version}: {e}"));
        sqlx::query(
            "INSERT INTO requests (id, item_id, item_version, item_hash, fields, requester, requester_id, team, \
             priority, correlation_id, state, rollback, created_at, updated_at) \
             VALUES ('old-1', 'pg', '1.0.0', 'sha256:x', '{\"name\":\"a\"}', \
             '{\"id\":\"ada\",\"teams\":[\"t\"],\"roles\":[\"developer\"]}', 'ada', 't', 0, 'c-1', 'queued', 'none', 1, 1)",
        )
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{dialect}: a request in the version {version} schema: {e}"));
        sqlx::query("INSERT INTO quota_reservations (request_id, resource, team, amount) VALUES ('old-1', 'db', 't', 2)")
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{dialect}: a reservation in the version {version} schema: {e}"));
        if version >= 3 {
            // From version 3 the store keeps a running total next to the reservations.
            sqlx::query("INSERT INTO quota_totals (team, resource, used) VALUES ('t', 'db', 2)")
                .execute(&pool)
                .await
                .unwrap_or_else(|e| {
                    panic!("{dialect}: a total in the version {version} schema: {e}")
                });
        }
        pool.close().await;
        let store = SqlStore::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{dialect}: migrate from version {version}: {e}"));
        let versions: Vec<i64> = applied(&store).await.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(
            versions, all,
            "{dialect}: from {version}, every later migration is applied"
        );
        use pao_core::store::Store;
        let r = store.get("old-1").await.expect("get").unwrap_or_else(|| {
            panic!("{dialect}: the request stored at version {version} is gone")
        });
        assert_eq!(r.fields["name"], "a");
        let used = |u: Vec<pao_core::store::QuotaUsage>| u.iter().map(|q| q.used).sum::<u64>();
        assert_eq!(
            used(store.quota_usage("t").await.expect("usage")),
            2,
            "{dialect}: the reservation made at version {version} still counts"
        );
        store.release_quota("old-1").await.expect("release");
        assert_eq!(used(store.quota_usage("t").await.expect("usage")), 0);
        let claimed = store
            .claim("w", std::time::Duration::from_secs(30), chrono::Utc::now())
            .await
            .expect("claim");
        assert_eq!(
            claimed.map(|(r, _)| r.id).as_deref(),
            Some("old-1"),
            "{dialect}: the request queued at version {version} is claimable after migrating"
        );
        println!("migrations on {dialect}: from version {version} to {all:?}: data kept");
        store.pool().close().await;
        drop(store);
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_from_each_earlier_version_on_sqlite() {
    migrate_from_each_earlier(
        async |v| Some(Db::sqlite(&format!("mig-from-{v}"))),
        "sqlite",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_from_each_earlier_version_on_postgres() {
    migrate_from_each_earlier(
        async |v| Db::postgres(&format!("migfrom{v}")).await,
        "postgres",
    )
    .await;
}
