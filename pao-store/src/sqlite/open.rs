//! SQLite: opening the file (one writer connection, a pool of readers), migrating it, and
//! checkpointing its WAL in the background.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::sql::{OpenError, redact_url};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Opens the SQLite database of `url`, creating the file and its folder when missing: the
/// readers' pool (of at most `max_connections`), the single writer's, and whether the database
/// is a file with a WAL to checkpoint (not `:memory:`).
pub(crate) async fn connect(
    url: &str,
    max_connections: u32,
) -> Result<(AnyPool, AnyPool, bool), OpenError> {
    let connect_err = |source| OpenError::Connect {
        url: redact_url(url),
        source,
    };
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path != ":memory:"
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| OpenError::Folder(dir.display().to_string(), e))?;
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(connect_err)?
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    // Connect once with the typed options so the file exists with WAL on, then pool
    // through `Any` with the same pragmas in the URL.
    let first = busy_retry(|| {
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
    })
    .await
    .map_err(connect_err)?;
    first.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    let any_url = format!("{url}{sep}mode=rwc");
    // SQLite has one writer. Writers on several connections of one process would
    // meet in SQLite's busy handler, which sleeps (1, 2, 5, 10 ... ms) and retries:
    // throughput fell to a quarter with four workers. One writer connection queues
    // them in the pool instead, fairly and without sleeping; reads keep their own
    // connections (WAL readers never block the writer).
    let writer = busy_retry(|| pool(&any_url, 1))
        .await
        .map_err(connect_err)?;
    let reader = if path == ":memory:" {
        // Every connection would open its own empty in-memory database.
        writer.clone()
    } else {
        busy_retry(|| pool(&any_url, max_connections.max(1)))
            .await
            .map_err(connect_err)?
    };
    Ok((reader, writer, path != ":memory:"))
}

/// A pool of `size` connections to `any_url`, each with the store's pragmas.
async fn pool(any_url: &str, size: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(size)
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor;
                // The busy timeout first: setting the journal mode waits for a
                // lock while another process migrates the same new file. No
                // automatic checkpoints: they would run inside a commit of the
                // single writer and stall every write queued behind it; a
                // background task checkpoints instead (`spawn_checkpointer`).
                conn.execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;")
                    .await?;
                Ok(())
            })
        })
        .connect(any_url)
        .await
}

/// Migrates through the writer. sqlx takes no lock for SQLite migrations: when two processes
/// open a new file at once, the slower one fails on `CREATE TABLE` after the faster one
/// committed. Each migration is one transaction, so running again is safe and then finds it
/// applied.
pub(crate) async fn migrate(writer: &AnyPool) -> Result<(), OpenError> {
    let mut tries = 0;
    loop {
        match SQLITE_MIGRATIONS.run(writer).await {
            Ok(()) => return Ok(()),
            Err(_) if tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Retries opening SQLite while the file is locked: setting up a connection (WAL mode) can
/// meet another process creating or migrating the same new file, and SQLite then answers
/// `SQLITE_BUSY` at once instead of waiting for its busy timeout.
async fn busy_retry<T, F, Fut>(mut open: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 0u64;
    loop {
        match open().await {
            Err(sqlx::Error::Database(e))
                if tries < 10 && matches!(e.code().as_deref(), Some("5" | "261" | "517")) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            other => return other,
        }
    }
}

/// How often the SQLite WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL frames beyond which a checkpoint that readers kept from finishing is forced
/// (`TRUNCATE` waits for them), so the WAL file stays bounded (about 40 MB of 4 KiB pages).
const WAL_FRAMES_FORCE: i64 = 10_000;

/// Copies the WAL into the database file off the write path, on a reader connection
/// (`PASSIVE`: it never waits for the writer, and the writer never waits for it).
pub(crate) fn spawn_checkpointer(reader: AnyPool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // (busy, frames in the WAL, frames copied)
            let Ok(row) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&reader)
                .await
            else {
                continue;
            };
            let frames: i64 = row.try_get(1).unwrap_or(0);
            let copied: i64 = row.try_get(2).unwrap_or(0);
            if frames >= WAL_FRAMES_FORCE && copied < frames {
                let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&reader)
                    .await;
            }
        }
    })
}
