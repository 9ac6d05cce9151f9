//! PostgreSQL: the pool, migrations, and the `LISTEN`/`NOTIFY` wake-ups of other replicas.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tokio::sync::Notify;

use crate::sql::{OpenError, redact_url};

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A pooled PostgreSQL connection idle at least this long is pinged before it is handed out
/// (a round trip of about 0.1 ms: at most 0.1 % of the time it sat idle). A busy pool reuses
/// its connections within milliseconds and never pings; a connection the server closed while
/// it sat in the pool (a restart, `pg_terminate_backend`, an idle-session timeout) is found and
/// replaced before a statement fails on it, unless it was closed in its last 100 ms of rest.
pub(crate) const IDLE_PING_AFTER: Duration = Duration::from_millis(100);

/// The channel a replica notifies when a request becomes runnable.
const NOTIFY_CHANNEL: &str = "pao_work";

/// The pool of at most `max_connections` to `url`, with a 30 s statement timeout.
pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<AnyPool, OpenError> {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        // sqlx pings every connection it hands out: one more round trip per
        // statement, a third of a worker's on a busy store. A connection that
        // answered within `IDLE_PING_AFTER` is taken as alive; one idle for longer
        // is pinged first (pgxpool does the same, after 1 s).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_PING_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute("SET statement_timeout = '30s'").await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(|source| OpenError::Connect {
            url: redact_url(url),
            source,
        })
}

/// Runs the PostgreSQL migrations.
pub(crate) async fn migrate(pool: &AnyPool) -> Result<(), OpenError> {
    POSTGRES_MIGRATIONS.run(pool).await?;
    Ok(())
}

/// The channel every statement that appends events notifies, with the request id (the
/// trigger of migration `0009_event_notify`).
const EVENTS_CHANNEL: &str = "pao_events";

/// Announcements of appended events kept for slow subscribers before they lag (then they
/// look at everything, as after a lost connection).
pub(crate) const EVENT_WAKEUPS: usize = 4096;

/// Listens for other replicas' notifications: wakes this one's waiting workers (`work`), and
/// passes on the ids of requests whose events were appended (`events`). After a lost
/// connection it sends an empty id: announcements may have been missed.
pub(crate) fn spawn_listener(
    url: String,
    work: Arc<Notify>,
    events: tokio::sync::broadcast::Sender<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(mut l) = sqlx::postgres::PgListener::connect(&url).await
                && l.listen_all([NOTIFY_CHANNEL, EVENTS_CHANNEL]).await.is_ok()
            {
                let _ = events.send(String::new());
                while let Ok(n) = l.recv().await {
                    if n.channel() == EVENTS_CHANNEL {
                        let _ = events.send(n.payload().to_string());
                    } else {
                        work.notify_waiters();
                    }
                }
            }
            // Connection lost: the poll fallback in wait_for_work covers the gap.
            let _ = events.send(String::new());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Tells every replica's listener that request `id` may be runnable.
pub(crate) async fn notify_work<'e, E>(executor: E, id: &str) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(id.to_string())
        .execute(executor)
        .await?;
    Ok(())
}
