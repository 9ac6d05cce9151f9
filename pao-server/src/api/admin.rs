//! Health, readiness, metrics, version, catalog refresh and validation, statistics, audit.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Query;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
}

/// `GET /health`: the process is up (no dependencies checked).
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready` (not ready is a 503 problem).
    pub status: &'static str,
    /// Items offered.
    pub catalog_items: usize,
    /// Errors in the catalog folder (broken items are not offered).
    pub catalog_errors: usize,
}

/// `GET /health/ready`: the store answers and the catalog loaded; `503` otherwise, and from
/// the moment a shutdown begins (so a load balancer stops sending traffic while the process
/// drains).
pub async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::unavailable("shutting down"));
    }
    if let Err(e) = state
        .orch
        .store_ready(std::time::Duration::from_secs(2))
        .await
    {
        // The database's message names hosts and users: the log has it, probes do not.
        tracing::warn!(error = %e, "readiness: store failed");
        return Err(ApiError::unavailable("store: not answering within 2 s"));
    }
    let catalog = state.orch.catalog();
    Ok(Json(Ready {
        status: "ready",
        catalog_items: catalog.len(),
        catalog_errors: catalog
            .diagnostics()
            .iter()
            .filter(|d| d.is_error())
            .count(),
    }))
}

/// `GET /metrics`: Prometheus text format, for admins and the configured scrape token
/// (`[metrics] token_sha256`), or anyone when `[metrics] public = true`.
pub async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    caller: Option<crate::auth::Caller>,
) -> Result<impl IntoResponse, ApiError> {
    let m = &state.config.metrics;
    let scrape_token = m.token_sha256.as_ref().is_some_and(|want| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| crate::config::hash_token(t.trim()) == want.to_ascii_lowercase())
    });
    if !(m.public || scrape_token) {
        match caller {
            Some(crate::auth::Caller(who)) if who.is_admin() => {}
            Some(_) => {
                return Err(ApiError::forbidden(
                    "metrics are for admins and the scrape token",
                ));
            }
            None => {
                return Err(ApiError::unauthorized(
                    "metrics need a credential: an admin's, or the scrape token ([metrics] token_sha256)",
                ));
            }
        }
    }
    for (target, b) in state.orch.breaker_states() {
        let v = match format!("{b:?}").to_ascii_lowercase() {
            s if s.starts_with("closed") => 0.0,
            s if s.starts_with("half") => 1.0,
            _ => 2.0,
        };
        metrics::gauge!("pao_breaker_state", "target" => target).set(v);
    }
    // One count every few seconds, however many scrapers ask.
    {
        let mut depth = state.queue_depth.lock().await;
        let stale = depth.is_none_or(|(at, _)| at.elapsed() >= std::time::Duration::from_secs(5));
        if stale && let Ok(queued) = state.orch.queue_depth().await {
            *depth = Some((std::time::Instant::now(), queued as f64));
        }
        if let Some((_, n)) = *depth {
            metrics::gauge!("pao_queue_depth").set(n);
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}

/// Versions of the server and of the contracts it speaks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    /// `pao`.
    pub name: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// `v1`.
    pub api: &'static str,
    /// The catalog schema (`pao.dev/v2`).
    pub catalog_schema: &'static str,
    /// The WASM plugin contract.
    pub plugin_contract: &'static str,
}

/// `GET /version`.
pub async fn version() -> Json<Version> {
    Json(Version {
        name: "pao",
        version: env!("CARGO_PKG_VERSION"),
        api: "v1",
        catalog_schema: "pao.dev/v2",
        plugin_contract: pao_plugins_sdk::CONTRACT_VERSION,
    })
}

/// What a catalog reload changed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CatalogReload {
    /// Item ids new in the folder.
    pub added: Vec<String>,
    /// Item ids whose file changed.
    pub changed: Vec<String>,
    /// Item ids no longer in the folder.
    pub removed: Vec<String>,
    /// Items offered now.
    pub items: usize,
    /// Errors in the folder.
    pub errors: usize,
}

/// `POST /catalog/refresh`: reloads the catalog folder now (admins).
pub async fn refresh_catalog(
    State(state): State<AppState>,
    Admin(who): Admin,
) -> Result<Json<CatalogReload>, ApiError> {
    let summary = state
        .reload_catalog()
        .await
        .map_err(|e| ApiError::unavailable(format!("catalog folder: {e}")))?;
    state
        .orch
        .record_audit(&who.id, "catalog.refresh", "catalog", summary.clone())
        .await?;
    let summary = serde_json::from_value(summary)
        .map_err(|e| ApiError::unavailable(format!("catalog reload summary: {e}")))?;
    Ok(Json(summary))
}

/// How bad a problem is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Severity)]
pub enum SeverityDoc {
    /// The item cannot be used.
    Error,
    /// The item loads, but something deserves attention.
    Warning,
    /// A suggestion.
    Hint,
}

/// One problem of a catalog file, located.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Diagnostic)]
pub struct DiagnosticDoc {
    /// Error, warning or hint.
    pub severity: SeverityDoc,
    /// Stable code (`PAO-E007`).
    pub code: String,
    /// The file, relative to the catalog folder.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// JSON pointer of the node inside the item.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The diagnostics of an item's file from the last load.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationReport {
    /// The item.
    pub item_id: String,
    /// Whether the item is offered.
    pub loaded: bool,
    /// Its version, when loaded.
    pub version: Option<String>,
    /// Its content hash, when loaded.
    pub content_hash: Option<String>,
    /// No errors.
    pub valid: bool,
    /// Errors.
    pub errors: usize,
    /// Every diagnostic of the file.
    #[schema(value_type = Vec<DiagnosticDoc>)]
    pub diagnostics: Vec<pao_core::catalog::Diagnostic>,
}

/// `GET /catalog/validation/{item_id}`: the diagnostics of the item's file from the last
/// load (admins and the owning team).
pub async fn validation(
    State(state): State<AppState>,
    crate::auth::Caller(who): crate::auth::Caller,
    Path(item_id): Path<String>,
) -> Result<Json<ValidationReport>, ApiError> {
    let report = state.orch.validation_report(&who, &item_id)?;
    let item = report.item.as_ref();
    let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
    Ok(Json(ValidationReport {
        loaded: item.is_some(),
        version: item.map(|i| i.version().to_string()),
        content_hash: item.map(|i| i.content_hash.clone()),
        valid: errors == 0,
        errors,
        diagnostics: report.diagnostics,
        item_id,
    }))
}

/// Usage over all teams.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsUsage {
    /// Success rate, completion times, popular items, failure reasons.
    #[serde(flatten)]
    pub analytics: super::teams::Analytics,
    /// Requests by state.
    pub requests_by_state: std::collections::BTreeMap<String, u64>,
    /// Requests by team.
    pub requests_by_team: std::collections::BTreeMap<String, u64>,
    /// Items offered.
    pub catalog_items: usize,
}

/// `GET /stats/usage` (admins): requests by state and by item, over all teams.
pub async fn stats_usage(
    State(state): State<AppState>,
    Admin(who): Admin,
) -> Result<Json<StatsUsage>, ApiError> {
    let u = state.orch.usage_stats(&who).await?;
    Ok(Json(StatsUsage {
        analytics: super::teams::Analytics::of(&u.analytics),
        requests_by_state: u.requests_by_state,
        requests_by_team: u.requests_by_team,
        catalog_items: u.catalog_items,
    }))
}

/// Performance over all teams.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsPerformance {
    /// Completion times of completed requests.
    pub completion_ms: super::teams::Percentiles,
    /// Completed over finished (`null` before any finished).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub success_rate: Option<f64>,
    /// Requests waiting for a worker.
    pub queue_depth: usize,
    /// Requests whose actions run.
    pub running: usize,
    /// Circuit breaker state by target (`Closed`, `Open { .. }`, `HalfOpen`).
    pub breakers: std::collections::BTreeMap<String, String>,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
}

/// `GET /stats/performance` (admins): completion-time percentiles, breaker states, queue.
pub async fn stats_performance(
    State(state): State<AppState>,
    Admin(who): Admin,
) -> Result<Json<StatsPerformance>, ApiError> {
    let p = state.orch.performance_stats(&who).await?;
    let a = super::teams::Analytics::of(&p.analytics);
    Ok(Json(StatsPerformance {
        completion_ms: a.completion_ms,
        success_rate: a.success_rate,
        queue_depth: p.queue_depth as usize,
        running: p.running as usize,
        breakers: p
            .breakers
            .into_iter()
            .map(|(k, v)| (k, format!("{v:?}")))
            .collect(),
        uptime_seconds: state.started.elapsed().as_secs(),
    }))
}

/// Filters of `GET /audit/requests`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only records about this target (a request id, `team:<id>`, `catalog`).
    pub target: Option<String>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<usize>,
    /// Only records older than this one: the `next_cursor` of the previous page.
    pub before: Option<u64>,
}

/// One audit record.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Its place in the log: pass the last one's as `before` for older records.
    pub id: u64,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who.
    pub actor: String,
    /// What (`request.submit`, `approval.approve`, ...).
    pub action: String,
    /// On what (a request id, `team:<id>`, `catalog`).
    pub target: String,
    /// Details.
    #[schema(value_type = Value)]
    pub detail: Value,
}

impl From<pao_core::store::LoggedAudit> for AuditEntry {
    fn from(r: pao_core::store::LoggedAudit) -> AuditEntry {
        AuditEntry {
            id: r.id,
            at: r.record.at,
            actor: r.record.actor,
            action: r.record.action,
            target: r.record.target,
            detail: r.record.detail,
        }
    }
}

/// Audit records, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The records.
    pub records: Vec<AuditEntry>,
    /// The `before` of the next (older) page; `null` on the last page.
    pub next_cursor: Option<u64>,
}

/// `GET /audit/requests` (admins): the audit trail, newest first, each record with its `id`;
/// `next_cursor` (the last record's id, when the page is full) is the `before` of the next
/// page. Reading it is audited too.
pub async fn audit(
    State(state): State<AppState>,
    Admin(who): Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let trail = state
        .orch
        .audit_trail(&who, q.target.as_deref(), q.before, q.limit)
        .await?;
    Ok(Json(AuditPage {
        records: trail.records.into_iter().map(AuditEntry::from).collect(),
        next_cursor: trail.next,
    }))
}
