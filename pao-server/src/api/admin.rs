//! Health, readiness, metrics, version, catalog refresh and validation, statistics, audit.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use pao_core::lifecycle::RequestState;
use pao_core::store::{AuditRecord, RequestFilter};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Query;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /health`: the process is up (no dependencies checked).
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
}

/// `GET /health/ready`: the store answers and the catalog loaded; `503` otherwise.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.store.list(&RequestFilter {
            limit: 1,
            ..RequestFilter::default()
        }),
    )
    .await;
    match probe {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(ApiError::unavailable(format!("store: {e}"))),
        Err(_) => return Err(ApiError::unavailable("store: no answer within 2 s")),
    }
    let catalog = state.orch.catalog();
    Ok(Json(json!({
        "status": "ready",
        "catalog_items": catalog.len(),
        "catalog_errors": catalog.diagnostics().iter().filter(|d| d.is_error()).count(),
    })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    for (target, b) in state.orch.breaker_states() {
        let v = match format!("{b:?}").to_ascii_lowercase() {
            s if s.starts_with("closed") => 0.0,
            s if s.starts_with("half") => 1.0,
            _ => 2.0,
        };
        metrics::gauge!("pao_breaker_state", "target" => target).set(v);
    }
    if let Ok(queued) = state
        .store
        .list(&RequestFilter {
            states: vec![RequestState::Queued],
            ..RequestFilter::default()
        })
        .await
    {
        metrics::gauge!("pao_queue_depth").set(queued.len() as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// `GET /version`.
pub async fn version() -> Json<Value> {
    Json(json!({
        "name": "pao",
        "version": env!("CARGO_PKG_VERSION"),
        "api": "v1",
        "catalog_schema": "pao.dev/v2",
        "plugin_contract": pao_plugins_sdk::CONTRACT_VERSION,
    }))
}

/// `POST /catalog/refresh`: reloads the catalog folder now (admins).
pub async fn refresh_catalog(
    State(state): State<AppState>,
    Admin(who): Admin,
) -> Result<Json<Value>, ApiError> {
    let summary = state
        .reload_catalog()
        .await
        .map_err(|e| ApiError::unavailable(format!("catalog folder: {e}")))?;
    state
        .store
        .audit(AuditRecord {
            at: state.orch.now(),
            actor: who.id,
            action: "catalog.refresh".into(),
            target: "catalog".into(),
            detail: summary.clone(),
        })
        .await?;
    Ok(Json(summary))
}

/// `GET /catalog/validation/{item_id}`: the diagnostics of the item's file from the last
/// load (admins and the owning team).
pub async fn validation(
    State(state): State<AppState>,
    crate::auth::Caller(who): crate::auth::Caller,
    Path(item_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let catalog = state.orch.catalog();
    let item = catalog.get(&item_id);
    if let Some(i) = item
        && !who.is_admin()
        && !who.teams.contains(&i.item.metadata.owner.team)
    {
        return Err(ApiError::forbidden(
            "validation results are for admins and the owning team",
        ));
    }
    if item.is_none() && !who.is_admin() {
        return Err(ApiError::not_found(format!(
            "catalog item `{item_id}` not found"
        )));
    }
    let file = item.map(|i| i.file.clone());
    let diags: Vec<&pao_core::catalog::Diagnostic> = catalog
        .diagnostics()
        .iter()
        .filter(|d| match &file {
            Some(f) => d.file == *f,
            None => d.message.contains(&item_id) || d.file.contains(&item_id),
        })
        .collect();
    if item.is_none() && diags.is_empty() {
        return Err(ApiError::not_found(format!(
            "catalog item `{item_id}` not found"
        )));
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    Ok(Json(json!({
        "item_id": item_id,
        "loaded": item.is_some(),
        "version": item.map(|i| i.version().to_string()),
        "content_hash": item.map(|i| i.content_hash.clone()),
        "valid": errors == 0,
        "errors": errors,
        "diagnostics": diags,
    })))
}

/// `GET /stats/usage` (admins): requests by state and by item, over all teams.
pub async fn stats_usage(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<Value>, ApiError> {
    let all = state
        .store
        .request_stats(&pao_core::store::StatsScope::default())
        .await?;
    let mut v = super::teams::analytics_of(&all);
    v["requests_by_state"] = json!(all.by(|c| c.state.to_string()));
    v["requests_by_team"] = json!(all.by(|c| c.team.clone()));
    v["catalog_items"] = json!(state.orch.catalog().len());
    Ok(Json(v))
}

/// `GET /stats/performance` (admins): completion-time percentiles, breaker states, queue.
pub async fn stats_performance(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<Value>, ApiError> {
    let all = state
        .store
        .request_stats(&pao_core::store::StatsScope::default())
        .await?;
    let a = super::teams::analytics_of(&all);
    let queued = all.in_state(RequestState::Queued);
    let running =
        all.in_state(RequestState::InProgress) + all.in_state(RequestState::PostFulfillment);
    let breakers: serde_json::Map<String, Value> = state
        .orch
        .breaker_states()
        .into_iter()
        .map(|(k, v)| (k, json!(format!("{v:?}"))))
        .collect();
    Ok(Json(json!({
        "completion_ms": a["completion_ms"],
        "success_rate": a["success_rate"],
        "queue_depth": queued,
        "running": running,
        "breakers": breakers,
        "uptime_seconds": state.started.elapsed().as_secs(),
    })))
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

/// `GET /audit/requests` (admins): the audit trail, newest first, each record with its `id`;
/// `next_cursor` (the last record's id, when the page is full) is the `before` of the next
/// page. Reading it is audited too.
pub async fn audit(
    State(state): State<AppState>,
    Admin(who): Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let records = state
        .store
        .audit_log(q.target.as_deref(), q.before, limit)
        .await?;
    let next_cursor = match records.last() {
        Some(last) if records.len() == limit => Some(last.id),
        _ => None,
    };
    state
        .store
        .audit(AuditRecord {
            at: state.orch.now(),
            actor: who.id,
            action: "audit.read".into(),
            target: q.target.clone().unwrap_or_else(|| "*".into()),
            detail: json!({ "limit": limit, "before": q.before }),
        })
        .await?;
    Ok(Json(
        json!({ "records": records, "next_cursor": next_cursor }),
    ))
}
