//! Team views: a team's requests, owned items, usage, analytics and settings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use pao_core::authz::Principal;
use pao_core::lifecycle::RequestState;
use pao_core::store::{AuditRecord, RequestFilter};
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
    let mut items = Vec::new();
    for i in catalog
        .items()
        .filter(|i| i.item.metadata.owner.team == team)
    {
        let reqs = state
            .store
            .list(&RequestFilter {
                item_id: Some(i.id().to_string()),
                ..RequestFilter::default()
            })
            .await?;
        let mut s = super::catalog::summary(i);
        s["requests"] = json!(reqs.len());
        s["completed"] = json!(
            reqs.iter()
                .filter(|r| r.state == RequestState::Completed)
                .count()
        );
        s["failed"] = json!(
            reqs.iter()
                .filter(|r| r.state == RequestState::Failed)
                .count()
        );
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
    let reqs = state
        .store
        .list(&RequestFilter {
            team: Some(team.clone()),
            ..RequestFilter::default()
        })
        .await?;
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    for r in &reqs {
        *by_state.entry(r.state.to_string()).or_default() += 1;
    }
    Ok(Json(
        json!({ "team": team, "quota": quota, "requests_by_state": by_state }),
    ))
}

/// Success rate, completion times and popular items of a set of requests.
pub fn analytics_of(reqs: &[pao_core::store::Request]) -> Value {
    let terminal: Vec<_> = reqs.iter().filter(|r| r.state.is_terminal()).collect();
    let completed: Vec<_> = terminal
        .iter()
        .filter(|r| r.state == RequestState::Completed)
        .collect();
    let mut durations: Vec<i64> = completed
        .iter()
        .map(|r| (r.updated_at - r.created_at).num_milliseconds().max(0))
        .collect();
    durations.sort_unstable();
    let pct = |p: usize| -> Option<i64> {
        (!durations.is_empty()).then(|| durations[(durations.len() - 1) * p / 100])
    };
    let mut by_item: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for r in reqs {
        let e = by_item.entry(r.item_id.clone()).or_default();
        e.0 += 1;
        if r.state == RequestState::Completed {
            e.1 += 1;
        }
        if r.state == RequestState::Failed {
            e.2 += 1;
        }
    }
    let mut popular: Vec<Value> = by_item
        .iter()
        .map(|(k, (n, ok, failed))| json!({ "item_id": k, "requests": n, "completed": ok, "failed": failed }))
        .collect();
    popular.sort_by(|a, b| b["requests"].as_u64().cmp(&a["requests"].as_u64()));
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for r in reqs.iter().filter(|r| r.state == RequestState::Failed) {
        let reason = r
            .error
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .take(120)
            .collect::<String>();
        *failures.entry(reason).or_default() += 1;
    }
    json!({
        "requests": reqs.len(),
        "finished": terminal.len(),
        "success_rate": if terminal.is_empty() { Value::Null } else { json!(completed.len() as f64 / terminal.len() as f64) },
        "completion_ms": { "p50": pct(50), "p90": pct(90), "p99": pct(99) },
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
    let reqs = state
        .store
        .list(&RequestFilter {
            team: Some(team.clone()),
            ..RequestFilter::default()
        })
        .await?;
    let mut v = analytics_of(&reqs);
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
