//! Running the server: HTTP listener, in-process workers, catalog watcher, graceful shutdown
//! (stop accepting, let workers finish or release what they hold, exit).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// A running server.
pub struct Running {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Cancel to shut down.
    pub shutdown: CancellationToken,
    /// Ends when everything stopped.
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts workers (`workers` of them), the catalog watcher and, when `listener` is given, the
/// HTTP API. Returns at once.
pub fn start(
    state: AppState,
    listener: Option<tokio::net::TcpListener>,
    workers: usize,
) -> std::io::Result<Running> {
    let shutdown = CancellationToken::new();
    let addr = match &listener {
        Some(l) => l.local_addr()?,
        None => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let mut tasks = Vec::new();
    let instance = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    for i in 0..workers {
        let orch = state.orch.clone();
        let token = shutdown.child_token();
        let id = format!("{instance}-w{i}");
        tasks.push(tokio::spawn(
            async move { orch.run_worker(id, token).await },
        ));
    }
    let rewrap_every = state.config.sealing.rewrap_interval_secs;
    if rewrap_every > 0 {
        let orch = state.orch.clone();
        let token = shutdown.child_token();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(rewrap_every));
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tick.tick() => match orch.rewrap_sealed(100).await {
                        Ok(r) if r.rewrapped > 0 || r.unreadable > 0 => tracing::info!(
                            rewrapped = r.rewrapped,
                            unreadable = r.unreadable,
                            current = orch.current_kek_id(),
                            "sealed data keys re-wrapped under the current key-encryption key"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "re-wrapping sealed data keys failed"),
                    },
                }
            }
        }));
    }
    if state.config.watch_catalog {
        let st = state.clone();
        let token = shutdown.child_token();
        let every = Duration::from_secs(st.config.watch_interval_secs.max(1));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = st.reload_catalog().await {
                            tracing::warn!(error = %e, "catalog reload failed; keeping the loaded catalog");
                        }
                    }
                }
            }
        }));
    }
    if let Some(listener) = listener {
        let app = crate::api::router(state.clone());
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            // The client's address reaches handlers (gateway trust, per-address limits).
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }));
    }
    let done = tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
    });
    Ok(Running {
        addr,
        shutdown,
        done,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
