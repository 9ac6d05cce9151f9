//! Health checks of provisioned instances: every item's `monitoring.health_check` URL,
//! rendered for each of its completed requests, is fetched every `interval` of the item; a
//! 2xx answer is healthy. Each change (and the first result) is a `health_changed` event on
//! the request, and every check counts in `pao_health_checks_total`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::state::AppState;

/// `[health_checks]`: how the server runs the items' health checks.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthChecksConfig {
    /// Whether this replica runs them (on several replicas, one is enough).
    pub enabled: bool,
    /// Seconds between looks for checks that are due.
    pub sweep_secs: u64,
    /// Completed requests checked per item (the newest).
    pub per_item: usize,
    /// Checks running at once.
    pub concurrency: usize,
    /// Seconds a check may take.
    pub timeout_secs: u64,
}

impl Default for HealthChecksConfig {
    fn default() -> Self {
        HealthChecksConfig {
            enabled: true,
            sweep_secs: 15,
            per_item: 1000,
            concurrency: 16,
            timeout_secs: 10,
        }
    }
}

/// What the job remembers of one request.
struct Seen {
    healthy: Option<bool>,
    checked: Option<Instant>,
}

/// Runs the health checks until `token` is cancelled.
pub async fn watch(state: AppState, token: tokio_util::sync::CancellationToken) {
    let cfg = state.config.health_checks.clone();
    if !cfg.enabled {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.timeout_secs.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "health checks do not run: no HTTP client");
            return;
        }
    };
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let limit = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.sweep_secs.max(1)));
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let targets = match state.orch.health_targets(cfg.per_item).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "health checks: listing completed requests failed");
                continue;
            }
        };
        let live: std::collections::HashSet<&str> =
            targets.iter().map(|t| t.request.id.as_str()).collect();
        seen.retain(|id, _| live.contains(id.as_str()));
        let mut checks = tokio::task::JoinSet::new();
        for t in targets {
            let entry = seen.entry(t.request.id.clone()).or_insert(Seen {
                healthy: None,
                checked: None,
            });
            if entry.checked.is_some_and(|c| c.elapsed() < t.interval) {
                continue;
            }
            entry.checked = Some(Instant::now());
            // Rendered only when due: it reads the request's journal.
            let url = match state.orch.health_url(&t).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(request_id = %t.request.id, error = %e, "health check skipped: its URL does not render");
                    continue;
                }
            };
            if entry.healthy.is_none() {
                // After a restart: what was recorded last, so it is not recorded again.
                entry.healthy = state.orch.last_health(&t.request.id).await.ok().flatten();
            }
            let before = entry.healthy;
            let (client, limit) = (client.clone(), limit.clone());
            checks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let (healthy, status, error) = match client.get(&url).send().await {
                    Ok(r) => (r.status().is_success(), Some(r.status().as_u16()), None),
                    Err(e) => (false, None, Some(e.without_url().to_string())),
                };
                (t, url, before, healthy, status, error)
            });
        }
        while let Some(done) = checks.join_next().await {
            let Ok((t, url, before, healthy, status, error)) = done else {
                continue;
            };
            state.metrics.health_checked(&t.request.item_id, healthy);
            if before == Some(healthy) {
                continue;
            }
            match state
                .orch
                .record_health(&t.request, healthy, &url, status, error)
                .await
            {
                Ok(()) => {
                    if let Some(s) = seen.get_mut(&t.request.id) {
                        s.healthy = Some(healthy);
                    }
                    if !healthy {
                        tracing::warn!(request_id = %t.request.id, item = %t.request.item_id, url = %url, "a provisioned instance is unhealthy");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, request_id = %t.request.id, "recording a health change failed")
                }
            }
        }
    }
}
