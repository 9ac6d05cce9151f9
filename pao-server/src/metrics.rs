//! Prometheus metrics: HTTP latency by route, requests by state, action attempts by outcome,
//! breaker states, queue depth and WebSocket connections, rendered at `/api/v1/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pao_core::store::EventKind;

/// The process's metrics recorder.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

impl Metrics {
    /// Installs the global recorder once per process (later calls share it).
    pub fn install() -> Metrics {
        let handle = HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "pao_http_request_duration_seconds".into(),
                        ),
                        &[
                            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                            2.5, 5.0,
                        ],
                    )
                    .unwrap_or_else(|_| PrometheusBuilder::new());
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                // Another recorder may already be installed (an embedder's); then ours only
                // renders what it sees.
                let _ = metrics::set_global_recorder(recorder);
                handle
            })
            .clone();
        Metrics { handle }
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Counts what an engine event says.
    pub fn observe_event(&self, kind: &EventKind) {
        match kind {
            EventKind::StateChanged { to, .. } => {
                metrics::counter!("pao_request_transitions_total", "to" => to.to_string())
                    .increment(1);
            }
            EventKind::ActionSucceeded {
                rollback,
                action_type,
                ..
            } => {
                let kind = action_type.clone().unwrap_or_else(|| "unknown".into());
                metrics::counter!("pao_action_attempts_total", "type" => kind, "outcome" => "succeeded", "rollback" => rollback.to_string()).increment(1);
            }
            EventKind::ActionFailed {
                rollback,
                class,
                action_type,
                ..
            } => {
                let class = serde_json::to_value(class)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let kind = action_type.clone().unwrap_or_else(|| "unknown".into());
                metrics::counter!("pao_action_attempts_total", "type" => kind, "outcome" => "failed", "class" => class, "rollback" => rollback.to_string()).increment(1);
            }
            EventKind::BudgetThreshold {
                team,
                resource,
                percent,
                ..
            } => {
                metrics::counter!("pao_budget_threshold_events_total", "team" => team.clone(), "resource" => resource.clone(), "percent" => percent.to_string()).increment(1);
            }
            EventKind::SlaBreached { .. } => {
                metrics::counter!("pao_sla_breaches_total").increment(1);
            }
            _ => {}
        }
    }

    /// Counts one health check of an item's provisioned instance.
    pub fn health_checked(&self, item: &str, healthy: bool) {
        metrics::counter!("pao_health_checks_total", "item" => item.to_string(), "healthy" => healthy.to_string()).increment(1);
    }

    /// Counts what a retention run deleted.
    pub fn purged(&self, requests: u64, audit: u64) {
        metrics::counter!("pao_retention_deleted_total", "kind" => "requests").increment(requests);
        metrics::counter!("pao_retention_deleted_total", "kind" => "audit").increment(audit);
    }
}
