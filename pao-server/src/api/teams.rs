//! Team views: a team's requests, owned items, usage, analytics and settings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use pao_core::authz::Principal;
use pao_core::lifecycle::RequestState;
use pao_core::store::{AuditRecord, RequestFilter, RequestStats, StatsScope};
use serde::Deserialize;
use serde_json::{Value, json};

use super::requests::{page, parse_states};
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
    /// Comma-separated states.
    pub state: Option<String>,
    /// Only this item.
    pub item_id: Option<String>,
    /// Page size.
    pub limit: Option<usize>,
    /// From `next_cursor`.
    pub cursor: Option<String>,
}

/// `GET /teams/{team_id}/requests`.
pub async fn requests(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
    Query(q): Query<TeamRequestsQuery>,
) -> Result<Json<Value>, ApiError> {
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

/// `GET /teams/{team_id}/catalog`: items the team owns, with request counts.
pub async fn catalog(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
        let of = |state: Option<RequestState>| -> u64 {
            stats
                .counts
                .iter()
                .filter(|c| c.item_id == i.id() && state.is_none_or(|s| c.state == s))
                .map(|c| c.count)
                .sum()
        };
        let mut s = super::catalog::summary(i);
        s["requests"] = json!(of(None));
        s["completed"] = json!(of(Some(RequestState::Completed)));
        s["failed"] = json!(of(Some(RequestState::Failed)));
        items.push(s);
    }
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!({ "team": team, "items": items })))
}

/// `GET /teams/{team_id}/usage`: quota usage and requests by state.
pub async fn usage(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> Result<Json<Value>, ApiError> {
    member(&who, &team)?;
    let quota = state.store.quota_usage(&team).await?;
    let stats = state.store.request_stats(&team_scope(&team)).await?;
    let by_state = stats.by(|c| c.state.to_string());
    Ok(Json(
        json!({ "team": team, "quota": quota, "requests_by_state": by_state }),
    ))
}

/// The requests of one team, for [`Store::request_stats`](pao_core::store::Store::request_stats).
fn team_scope(team: &str) -> StatsScope {
    StatsScope {
        team: Some(team.to_string()),
        ..StatsScope::default()
    }
}

/// Success rate, completion times, popular items and failure reasons of a set of requests,
/// from the store's aggregates.
pub fn analytics_of(stats: &RequestStats) -> Value {
    let finished = stats.finished();
    let completed = stats.in_state(RequestState::Completed);
    let mut popular: Vec<Value> = stats
        .by(|c| c.item_id.clone())
        .into_iter()
        .map(|(item, n)| {
            let of = |state| {
                stats
                    .counts
                    .iter()
                    .filter(|c| c.item_id == item && c.state == state)
                    .map(|c| c.count)
                    .sum::<u64>()
            };
            json!({
                "item_id": item,
                "requests": n,
                "completed": of(RequestState::Completed),
                "failed": of(RequestState::Failed),
            })
        })
        .collect();
    popular.sort_by(|a, b| b["requests"].as_u64().cmp(&a["requests"].as_u64()));
    let failures: BTreeMap<&str, u64> = stats
        .failure_reasons
        .iter()
        .map(|(reason, n)| (reason.as_str(), *n))
        .collect();
    json!({
        "requests": stats.total(),
        "finished": finished,
        "success_rate": if finished == 0 { Value::Null } else { json!(completed as f64 / finished as f64) },
        "completion_ms": stats.completion_ms,
        "popular_items": popular,
        "failure_reasons": failures,
    })
}

/// `GET /teams/{team_id}/analytics`.
pub async fn analytics(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> Result<Json<Value>, ApiError> {
    member(&who, &team)?;
    let stats = state.store.request_stats(&team_scope(&team)).await?;
    let mut v = analytics_of(&stats);
    v["team"] = json!(team);
    Ok(Json(v))
}

/// `GET /teams/{team_id}/settings`: the team as `catalog.yaml` declares it, with its current
/// quota limits.
pub async fn settings(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> Result<Json<Value>, ApiError> {
    member(&who, &team)?;
    let catalog = state.orch.catalog();
    let def = catalog
        .settings()
        .and_then(|s| s.teams.as_ref())
        .and_then(|ts| ts.iter().find(|t| t.id == team))
        .cloned();
    let quota = state.store.quota_usage(&team).await?;
    Ok(Json(
        json!({ "team": team, "declared": def, "quota": quota }),
    ))
}

/// Body of `POST /teams/{team_id}/config`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamConfigBody {
    /// Quota limits by resource.
    #[serde(default)]
    pub quotas: BTreeMap<String, u64>,
}

/// Refuses quota limits no store can keep (422, located at `{at}/{resource}`): an empty
/// resource name, a limit above [`pao_core::store::MAX_QUOTA_LIMIT`].
pub(super) fn check_limits(limits: &BTreeMap<String, u64>, at: &str) -> Result<(), ApiError> {
    for (resource, limit) in limits {
        if let Err(e) = pao_core::store::check_quota_limit(resource, *limit) {
            let pointer = format!("{at}/{}", resource.replace('~', "~0").replace('/', "~1"));
            return Err(ApiError::unprocessable(
                "PAO-API-INVALID-BODY",
                e.to_string(),
                json!([{ "pointer": pointer, "message": e.to_string() }]),
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
) -> Result<Json<Value>, ApiError> {
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
                Some(ceiling) if limit <= ceiling => {}
                Some(ceiling) => {
                    return Err(ApiError::forbidden(format!(
                        "raising `{resource}` to {limit}, above the {ceiling} catalog.yaml \
                         declares for team `{team}`, needs the admin role"
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
        state.store.set_quota_limit(&team, resource, *limit).await?;
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
    let quota = state.store.quota_usage(&team).await?;
    Ok(Json(json!({ "team": team, "quota": quota })))
}
