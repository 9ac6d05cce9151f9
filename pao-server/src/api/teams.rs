//! Team views: a team's requests, owned items, usage, analytics and settings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use pao_core::authz::Principal;
use pao_core::lifecycle::RequestState;
use pao_core::store::{AuditRecord, RequestFilter, RequestStats, StatsScope};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::requests::{RequestPage, page, parse_states};
use super::{Body, Query};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

fn member(who: &Principal, team: &str) -> Result<(), ApiError> {
    if who.is_admin() || who.teams.iter().any(|t| t == team) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("you are not in team `{team}`")))
    }
}

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
    member(&who, &team)?;
    let filter = RequestFilter {
        states: parse_states(q.state.as_deref())?,
        item_id: q.item_id,
        team: Some(team),
        ..RequestFilter::default()
    };
    Ok(Json(
        page(&state, filter, q.limit, q.cursor.as_deref()).await?,
    ))
}

/// Usage of one quota resource by a team.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaLine {
    /// The resource (`databases`, `vcpu`).
    pub resource: String,
    /// The team's limit, if one is set.
    pub limit: Option<u64>,
    /// Reserved by live and completed requests.
    pub used: u64,
}

/// The lines of a team's quota usage.
pub fn quota_lines(usage: Vec<pao_core::store::QuotaUsage>) -> Vec<QuotaLine> {
    usage
        .into_iter()
        .map(|u| QuotaLine {
            resource: u.resource,
            limit: u.limit,
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
    member(&who, &team)?;
    let catalog = state.orch.catalog();
    let owned: Vec<_> = catalog
        .items()
        .filter(|i| i.item.metadata.owner.team == team)
        .collect();
    let stats = state
        .store
        .request_stats(&StatsScope {
            item_ids: owned.iter().map(|i| i.id().to_string()).collect(),
            ..StatsScope::default()
        })
        .await?;
    let mut items = Vec::new();
    for i in owned {
        let of = |state: Option<RequestState>| -> usize {
            stats
                .counts
                .iter()
                .filter(|c| c.item_id == i.id() && state.is_none_or(|s| c.state == s))
                .map(|c| c.count as usize)
                .sum()
        };
        items.push(OwnedItem {
            item: super::catalog::summary(i),
            requests: of(None),
            completed: of(Some(RequestState::Completed)),
            failed: of(Some(RequestState::Failed)),
        });
    }
    items.sort_by(|a, b| a.item.id.cmp(&b.item.id));
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
    member(&who, &team)?;
    let quota = quota_lines(state.store.quota_usage(&team).await?);
    let stats = state.store.request_stats(&team_scope(&team)).await?;
    Ok(Json(TeamUsage {
        team,
        quota,
        requests_by_state: stats.by(|c| c.state.to_string()),
    }))
}

/// The requests of one team, for [`Store::request_stats`](pao_core::store::Store::request_stats).
fn team_scope(team: &str) -> StatsScope {
    StatsScope {
        team: Some(team.to_string()),
        ..StatsScope::default()
    }
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

/// Success rate, completion times, popular items and failure reasons of a set of requests,
/// from the store's aggregates.
pub fn analytics_of(stats: &RequestStats) -> Analytics {
    let finished = stats.finished();
    let completed = stats.in_state(RequestState::Completed);
    let of = |item: &str, state: RequestState| -> u64 {
        stats
            .counts
            .iter()
            .filter(|c| c.item_id == item && c.state == state)
            .map(|c| c.count)
            .sum()
    };
    let mut popular: Vec<PopularItem> = stats
        .by(|c| c.item_id.clone())
        .into_iter()
        .map(|(item, n)| PopularItem {
            completed: of(&item, RequestState::Completed),
            failed: of(&item, RequestState::Failed),
            item_id: item,
            requests: n,
        })
        .collect();
    popular.sort_by_key(|p| std::cmp::Reverse(p.requests));
    Analytics {
        requests: stats.total() as usize,
        finished: finished as usize,
        success_rate: (finished > 0).then(|| completed as f64 / finished as f64),
        completion_ms: Percentiles {
            p50: stats.completion_ms.p50,
            p90: stats.completion_ms.p90,
            p99: stats.completion_ms.p99,
        },
        popular_items: popular,
        failure_reasons: stats.failure_reasons.iter().cloned().collect(),
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
    member(&who, &team)?;
    let stats = state.store.request_stats(&team_scope(&team)).await?;
    Ok(Json(TeamAnalytics {
        analytics: analytics_of(&stats),
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
    member(&who, &team)?;
    let catalog = state.orch.catalog();
    let def = catalog
        .settings()
        .and_then(|s| s.teams.as_ref())
        .and_then(|ts| ts.iter().find(|t| t.id == team))
        .cloned();
    let quota = quota_lines(state.store.quota_usage(&team).await?);
    Ok(Json(TeamSettings {
        team,
        declared: def,
        quota,
    }))
}

/// A quota limit: a whole number from 0 to 2^53 - 1 (`5`, `5.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct QuotaLimit(pub u64);

impl QuotaLimit {
    /// The largest limit (the largest integer every JSON reader keeps exactly).
    pub const MAX: u64 = (1 << 53) - 1;
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

/// Refuses quota limits no store can keep (422, located at `{at}/{resource}`): an empty
/// resource name, a limit above [`pao_core::store::MAX_QUOTA_LIMIT`].
pub(super) fn check_limits(
    limits: &BTreeMap<String, QuotaLimit>,
    at: &str,
) -> Result<(), ApiError> {
    for (resource, limit) in limits {
        let refused = if limit.0 > QuotaLimit::MAX {
            Some(format!(
                "the limit of `{resource}` is a whole number from 0 to {}, not {}",
                QuotaLimit::MAX,
                limit.0
            ))
        } else {
            pao_core::store::check_quota_limit(resource, limit.0)
                .err()
                .map(|e| e.to_string())
        };
        if let Some(why) = refused {
            let pointer = format!("{at}/{}", resource.replace('~', "~0").replace('/', "~1"));
            return Err(ApiError::unprocessable(
                "PAO-API-INVALID-BODY",
                why.clone(),
                json!([{ "pointer": pointer, "message": why }]),
            ));
        }
    }
    Ok(())
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
    let team_admin = who.teams.contains(&team) && who.roles.iter().any(|r| r == "team-admin");
    if !who.is_admin() && !team_admin {
        return Err(ApiError::forbidden(
            "team configuration needs the admin role or team-admin in that team",
        ));
    }
    check_limits(&body.quotas, "/quotas")?;
    if !who.is_admin() {
        let catalog = state.orch.catalog();
        let declared = catalog
            .settings()
            .and_then(|s| s.teams.as_ref())
            .and_then(|ts| ts.iter().find(|t| t.id == team))
            .and_then(|t| t.quotas.as_ref());
        for (resource, limit) in &body.quotas {
            match declared.and_then(|d| d.get(resource)) {
                Some(ceiling) if limit.0 <= *ceiling => {}
                Some(ceiling) => {
                    return Err(ApiError::forbidden(format!(
                        "raising `{resource}` to {}, above the {ceiling} catalog.yaml \
                         declares for team `{team}`, needs the admin role",
                        limit.0
                    )));
                }
                None => {
                    return Err(ApiError::forbidden(format!(
                        "catalog.yaml declares no `{resource}` quota for team `{team}`: setting \
                         it needs the admin role"
                    )));
                }
            }
        }
    }
    for (resource, limit) in &body.quotas {
        state
            .store
            .set_quota_limit(&team, resource, limit.0)
            .await?;
    }
    state
        .store
        .audit(AuditRecord {
            at: state.orch.now(),
            actor: who.id.clone(),
            action: "team.config".into(),
            target: format!("team:{team}"),
            detail: json!({ "quotas": body.quotas }),
        })
        .await?;
    let quota = quota_lines(state.store.quota_usage(&team).await?);
    Ok(Json(TeamQuota { team, quota }))
}
