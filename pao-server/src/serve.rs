//! Running the server: HTTP listener, in-process workers, catalog watcher, and the drain of a
//! shutdown: readiness fails at once, workers stop claiming, in-flight runs get the drain
//! time to finish and are then handed back to other replicas, and the listener closes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// A running server.
pub struct Running {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Cancel to stop at once: workers finish their run (however long it takes), the
    /// listener closes. [`Running::drain`] is the bounded shutdown.
    pub shutdown: CancellationToken,
    /// Ends when everything stopped.
    pub done: tokio::task::JoinHandle<()>,
    state: AppState,
    /// Cancelled first: the worker loops stop claiming.
    stop_claiming: CancellationToken,
    workers: tokio_util::task::TaskTracker,
}

/// How a [`Running::drain`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Runs that finished within the drain time.
    pub finished_in_time: bool,
    /// Runs handed back to other replicas when the time ran out.
    pub handed_back: usize,
}

impl Running {
    /// Shuts down the way a rolling deploy needs: readiness fails at once, no new work is
    /// claimed, runs in flight get `timeout` to finish (or until `cut_short` resolves, a
    /// second signal), and are then handed back so another replica resumes them from their
    /// journal. The listener closes last, giving open HTTP calls up to 3 s: with the default
    /// 20 s drain the process ends within 27 s, inside Kubernetes' default 30 s grace period.
    pub async fn drain(
        self,
        timeout: Duration,
        cut_short: impl std::future::Future<Output = ()>,
    ) -> Drained {
        use std::sync::atomic::Ordering;
        self.state.draining.store(true, Ordering::SeqCst);
        self.stop_claiming.cancel();
        let workers = self.workers.wait();
        tokio::pin!(workers);
        let finished_in_time = tokio::select! {
            _ = &mut workers => true,
            _ = tokio::time::sleep(timeout) => false,
            _ = cut_short => false,
        };
        let mut handed_back = 0;
        if !finished_in_time {
            handed_back = self.state.orch.running_count();
            self.state.orch.hand_back_running();
            // Handing back is a write and a lease release per run.
            let _ = tokio::time::timeout(Duration::from_secs(3), &mut workers).await;
        }
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.done).await;
        Drained {
            finished_in_time,
            handed_back,
        }
    }
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
    let stop_claiming = shutdown.child_token();
    let mut tasks = Vec::new();
    let worker_tasks = tokio_util::task::TaskTracker::new();
    let instance = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    for i in 0..workers {
        let orch = state.orch.clone();
        let token = stop_claiming.child_token();
        let id = format!("{instance}-w{i}");
        worker_tasks.spawn(async move { orch.run_worker(id, token).await });
    }
    worker_tasks.close();
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
    tasks.push(tokio::spawn(crate::health::watch(
        state.clone(),
        shutdown.child_token(),
    )));
    tasks.push(tokio::spawn(crate::tickets::watch(
        state.clone(),
        shutdown.child_token(),
    )));
    tasks.push(tokio::spawn(retention(
        state.clone(),
        shutdown.child_token(),
    )));
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
        let app = crate::api::router(state.clone())
            // The client's address reaches handlers (gateway trust, per-address limits).
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let token = shutdown.clone();
        let stopped = async move { token.cancelled().await };
        match &state.config.tls {
            None => tasks.push(tokio::spawn(async move {
                let r = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            })),
            Some(tls) => {
                use axum::serve::ListenerExt as _;
                let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
                let certs = crate::tls::CertStore::open(tls).map_err(invalid)?;
                let config = crate::tls::server_config(tls, certs.clone()).map_err(invalid)?;
                tasks.push(tokio::spawn(crate::tls::watch(
                    certs,
                    shutdown.child_token(),
                )));
                // `tap_io` gives the connection's address to handlers as for plain TCP.
                let listener = crate::tls::TlsListener::new(listener, config)?.tap_io(|_| {});
                tasks.push(tokio::spawn(async move {
                    let r = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "HTTPS server stopped");
                    }
                }));
            }
        }
    }
    let all_workers = worker_tasks.clone();
    let done = tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
        all_workers.wait().await;
    });
    Ok(Running {
        addr,
        shutdown,
        done,
        state,
        stop_claiming,
        workers: worker_tasks,
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

/// Deletes what `[retention]` no longer keeps, every `interval_secs`, until `token` is
/// cancelled; nothing runs without `[retention]`.
async fn retention(state: AppState, token: CancellationToken) {
    let Some(policy) = state.config.retention.policy() else {
        return;
    };
    let every = Duration::from_secs(state.config.retention.interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => match state.orch.purge_expired(&policy).await {
                Ok(p) => {
                    state.metrics.purged(p.requests, p.audit);
                    if p.requests > 0 || p.audit > 0 {
                        tracing::info!(
                            requests = p.requests,
                            audit = p.audit,
                            "retention deleted ended requests and audit records past their periods"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention run failed; it runs again at the next interval"),
            },
        }
    }
}
