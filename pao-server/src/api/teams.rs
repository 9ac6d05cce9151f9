//! Team views: a team's requests, owned items, usage, analytics and settings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use pao_core::service::{RequestQuery, RequestScope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::requests::{RequestPage, parse_states};
use super::{Body, Query};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Filters of `GET /teams/{team_id}/requests`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TeamRequestsQuery {
    /// Comma-separated states (`queued,in_progress`); empty: every state.
    #[param(
        pattern = r"^((submitted|prerequisites|validation|awaiting_approval|queued|in_progress|post_fulfillment|completed|failed|cancelled|rejected)(,(submitted|prerequisites|validation|awaiting_approval|queued|in_progress|post_fulfillment|completed|failed|cancelled|rejected))*)?$"
    )]
    pub state: Option<String>,
    /// Only this item.
    pub item_id: Option<String>,
    /// Page size (default 50; 0 counts as 1, above 500 as 500).
    pub limit: Option<usize>,
    /// From `next_cursor`.
    #[param(
        pattern = r"^([A-Za-z0-9_-]{4}){2}([A-Za-z0-9_-]{3}|[A-Za-z0-9_-]{4}([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?)$"
    )]
    pub cursor: Option<String>,
}

/// `GET /teams/{team_id}/requests`.
pub async fn requests(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    Query(q): Query<TeamRequestsQuery>,
) -> Result<Json<RequestPage>, ApiError> {
    let query = RequestQuery {
        scope: RequestScope::Team(team),
        states: parse_states(q.state.as_deref())?,
        item_id: q.item_id,
        limit: q.limit,
        after: q.cursor.as_deref().map(super::cursor::decode).transpose()?,
    };
    let page = state.orch.list_requests(&who, query).await?;
    Ok(Json(RequestPage::of(&page)))
}

/// Usage of one quota resource by a team.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaLine {
    /// The resource (`databases`, `vcpu`).
    pub resource: String,
    /// The limit that applies; absent: unlimited.
    pub limit: Option<u64>,
    /// Where the limit comes from: `api` (set by an admin or team-admin), `catalog`
    /// (`catalog.yaml`'s `teams[].quotas`, for a resource with no limit set).
    #[schema(value_type = Option<String>)]
    pub limit_source: Option<pao_core::service::teams::LimitSource>,
    /// Reserved by live and completed requests.
    pub used: u64,
}

/// The lines of a team's quota usage.
pub fn quota_lines(usage: Vec<pao_core::service::teams::QuotaLine>) -> Vec<QuotaLine> {
    usage
        .into_iter()
        .map(|u| QuotaLine {
            resource: u.resource,
            limit: u.limit,
            limit_source: u.limit_source,
            used: u.used,
        })
        .collect()
}

/// An item a team owns, with request counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct OwnedItem {
    /// The item.
    #[serde(flatten)]
    pub item: super::catalog::ItemSummary,
    /// Requests for it.
    pub requests: usize,
    /// Of which completed.
    pub completed: usize,
    /// Of which failed.
    pub failed: usize,
}

/// Items a team owns.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamCatalog {
    /// The team.
    pub team: String,
    /// Its items, by id.
    pub items: Vec<OwnedItem>,
}

/// `GET /teams/{team_id}/catalog`: items the team owns, with request counts.
pub async fn catalog(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> Result<Json<TeamCatalog>, ApiError> {
    let default_rule = super::catalog::default_rule(&state);
    let items = state
        .orch
        .team_catalog(&who, &team)
        .await?
        .iter()
        .map(|o| OwnedItem {
            item: super::catalog::summary(&o.item, default_rule),
            requests: o.requests as usize,
            completed: o.completed as usize,
            failed: o.failed as usize,
        })
        .collect();
    Ok(Json(TeamCatalog { team, items }))
}

/// A team's quota usage and requests by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamUsage {
    /// The team.
    pub team: String,
    /// Quota usage by resource.
    pub quota: Vec<QuotaLine>,
    /// Requests by state.
    pub requests_by_state: BTreeMap<String, u64>,
}

/// `GET /teams/{team_id}/usage`: quota usage and requests by state.
pub async fn usage(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> Result<Json<TeamUsage>, ApiError> {
    let usage = state.orch.team_usage(&who, &team).await?;
    Ok(Json(TeamUsage {
        team,
        quota: quota_lines(usage.quota),
        requests_by_state: usage.requests_by_state,
    }))
}

/// Completion-time percentiles in milliseconds (`null` without completed requests).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<i64>,
    /// 90th percentile.
    pub p90: Option<i64>,
    /// 99th percentile.
    pub p99: Option<i64>,
}

/// Requests for one item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PopularItem {
    /// The item.
    pub item_id: String,
    /// Requests.
    pub requests: u64,
    /// Of which completed.
    pub completed: u64,
    /// Of which failed.
    pub failed: u64,
}

/// Success rate, completion times, popular items and failure reasons.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Analytics {
    /// Requests.
    pub requests: usize,
    /// Of which in a final state.
    pub finished: usize,
    /// Completed over finished (`null` before any finished).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub success_rate: Option<f64>,
    /// Completion times of completed requests.
    pub completion_ms: Percentiles,
    /// Items by requests, most requested first.
    pub popular_items: Vec<PopularItem>,
    /// Failed requests by error (first 120 characters).
    pub failure_reasons: BTreeMap<String, u64>,
}

impl Analytics {
    /// The view of the core's analytics.
    pub fn of(a: &pao_core::service::Analytics) -> Analytics {
        Analytics {
            requests: a.requests as usize,
            finished: a.finished as usize,
            success_rate: a.success_rate,
            completion_ms: Percentiles {
                p50: a.completion_ms.p50,
                p90: a.completion_ms.p90,
                p99: a.completion_ms.p99,
            },
            popular_items: a
                .popular_items
                .iter()
                .map(|p| PopularItem {
                    item_id: p.item_id.clone(),
                    requests: p.requests,
                    completed: p.completed,
                    failed: p.failed,
                })
                .collect(),
            failure_reasons: a.failure_reasons.clone(),
        }
    }
}

/// A team's analytics.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamAnalytics {
    /// The numbers.
    #[serde(flatten)]
    pub analytics: Analytics,
    /// The team.
    pub team: String,
}

/// `GET /teams/{team_id}/analytics`.
pub async fn analytics(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> Result<Json<TeamAnalytics>, ApiError> {
    let analytics = state.orch.team_analytics(&who, &team).await?;
    Ok(Json(TeamAnalytics {
        analytics: Analytics::of(&analytics),
        team,
    }))
}

/// A team as `catalog.yaml` declares it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamSettings {
    /// The team.
    pub team: String,
    /// Its entry in `catalog.yaml` (`id`, `name`, `members`, `quotas`), if any.
    #[schema(value_type = Option<Object>)]
    pub declared: Option<pao_core::catalog::model::TeamDef>,
    /// Quota usage by resource.
    pub quota: Vec<QuotaLine>,
}

/// A team's quotas after a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamQuota {
    /// The team.
    pub team: String,
    /// Quota usage by resource.
    pub quota: Vec<QuotaLine>,
}

/// `GET /teams/{team_id}/settings`: the team as `catalog.yaml` declares it, with its current
/// quota limits.
pub async fn settings(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> Result<Json<TeamSettings>, ApiError> {
    let settings = state.orch.team_settings(&who, &team).await?;
    Ok(Json(TeamSettings {
        team,
        declared: settings.declared,
        quota: quota_lines(settings.quota),
    }))
}

/// A quota limit: a whole number from 0 to 2^53 - 1 (`5`, `5.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct QuotaLimit(pub u64);

impl QuotaLimit {
    /// The largest limit (the largest integer every JSON reader keeps exactly).
    pub const MAX: u64 = pao_core::service::teams::MAX_API_QUOTA_LIMIT;
}

impl<'de> Deserialize<'de> for QuotaLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<QuotaLimit, D::Error> {
        let n = super::whole::number(d)?;
        // The range is checked with the resource's name (a located 422): `check_limits`.
        u64::try_from(n).map(QuotaLimit).map_err(|_| {
            serde::de::Error::custom(format!(
                "a quota limit is a whole number from 0 to {}, not {n}",
                QuotaLimit::MAX
            ))
        })
    }
}

impl utoipa::PartialSchema for QuotaLimit {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::Integer)
            .minimum(Some(0))
            .maximum(Some(QuotaLimit::MAX as usize))
            .description(Some("A whole number from 0 to 2^53 - 1."))
            .into()
    }
}

impl ToSchema for QuotaLimit {}

/// Body of `POST /teams/{team_id}/config`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamConfigBody {
    /// Quota limits by resource.
    #[serde(default)]
    pub quotas: BTreeMap<String, QuotaLimit>,
}

/// `POST /teams/{team_id}/config`: admins set the team's quotas; the team's `team-admin` role
/// holders may set a resource's limit up to the one `catalog.yaml` declares for the team (not
/// above it, nor for a resource it declares none for).
pub async fn config(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    Body(body): Body<TeamConfigBody>,
) -> Result<Json<TeamQuota>, ApiError> {
    let limits = body.quotas.into_iter().map(|(k, v)| (k, v.0)).collect();
    let quota = quota_lines(state.orch.configure_team(&who, &team, &limits).await?);
    Ok(Json(TeamQuota { team, quota }))
}
