//! Approvals, cost estimates and quotas.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::requests::RequestView;
use super::teams::{QuotaLine, quota_lines};
use super::{Body, OptBody, Query};
use crate::auth::{Admin, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// Paging of `GET /approvals/pending`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PendingQuery {
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<usize>,
    /// From `next_cursor`: go on after the requests an earlier page looked at.
    #[param(
        pattern = r"^([A-Za-z0-9_-]{4}){2}([A-Za-z0-9_-]{3}|[A-Za-z0-9_-]{4}([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?)$"
    )]
    pub cursor: Option<String>,
}

/// A request awaiting the caller's decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingApproval {
    /// The request.
    #[serde(flatten)]
    pub request: RequestView,
    /// The approval id (the request id).
    pub approval_id: String,
    /// Decisions taken so far.
    #[schema(value_type = Vec<Object>)]
    pub decisions: Value,
}

/// Requests awaiting the caller's decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingApprovals {
    /// Newest first.
    pub approvals: Vec<PendingApproval>,
    /// The `cursor` of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /approvals/pending`: requests awaiting approval that the caller may decide on, newest
/// first. The approval id is the request id (one approval step per request). A call reads at
/// most 2,000 awaiting requests; `next_cursor` is set when more may follow.
pub async fn pending(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<PendingQuery>,
) -> Result<Json<PendingApprovals>, ApiError> {
    let after = q.cursor.as_deref().map(super::cursor::decode).transpose()?;
    let page = state.orch.pending_for(&who, after, q.limit).await?;
    let approvals = page
        .approvals
        .iter()
        .map(|p| PendingApproval {
            request: RequestView::of(&p.request),
            approval_id: p.request.id.clone(),
            decisions: serde_json::to_value(&p.decisions).unwrap_or(Value::Null),
        })
        .collect();
    Ok(Json(PendingApprovals {
        approvals,
        next_cursor: page.next.map(|(at, id)| super::cursor::encode(at, &id)),
    }))
}

/// Body of `POST /approvals/{id}/approve`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Optional comment.
    pub comment: Option<String>,
}

/// `POST /approvals/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    OptBody(body): OptBody<ApproveBody>,
) -> Result<Json<RequestView>, ApiError> {
    let r = state.orch.approve_request(&who, &id, body.comment).await?;
    Ok(Json(RequestView::of(&r)))
}

/// Body of `POST /approvals/{id}/reject`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Why (not blank).
    #[schema(
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub reason: String,
}

/// `POST /approvals/{id}/reject`: a reason is required.
pub async fn reject(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Body(body): Body<RejectBody>,
) -> Result<Json<RequestView>, ApiError> {
    let r = state.orch.reject_request(&who, &id, &body.reason).await?;
    Ok(Json(RequestView::of(&r)))
}

/// The result of one `cost` action.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostEstimate {
    /// The action.
    pub action_id: String,
    /// Its result.
    #[schema(value_type = Value)]
    pub result: Value,
    /// Its outputs (`monthly`, `currency`, ...).
    #[schema(value_type = Value)]
    pub outputs: Value,
}

/// A request's cost estimates.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostEstimates {
    /// The request.
    pub request_id: String,
    /// Results of its `cost` actions that ran.
    pub estimates: Vec<CostEstimate>,
    /// The estimate made at admission, before approval.
    #[schema(value_type = Option<super::requests::AdmissionCostDoc>)]
    pub admission: Option<pao_core::store::AdmissionCost>,
    /// The item's declared cost (`currency`, `monthly`, `one_time`), rendered with the
    /// request's fields.
    #[schema(value_type = Option<Object>)]
    pub declared: Option<Value>,
}

/// A team's quota usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaReport {
    /// The team.
    pub team: String,
    /// Usage by resource.
    pub usage: Vec<QuotaLine>,
}

/// `GET /cost/estimates/{request_id}`: the outputs of the request's `cost` actions and the
/// item's declared monthly cost.
pub async fn cost_estimate(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<CostEstimates>, ApiError> {
    let c = state.orch.cost_estimates(&who, &id).await?;
    Ok(Json(CostEstimates {
        request_id: id,
        estimates: c
            .estimates
            .into_iter()
            .map(|e| CostEstimate {
                action_id: e.action_id,
                result: e.result,
                outputs: e.outputs,
            })
            .collect(),
        admission: c.admission,
        declared: c.declared,
    }))
}

/// `GET /quota/usage/{team_id}`: members of the team and admins.
pub async fn quota_usage(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(team): Path<String>,
) -> Result<Json<QuotaReport>, ApiError> {
    let usage = quota_lines(state.orch.team_quota(&who, &team).await?);
    Ok(Json(QuotaReport { team, usage }))
}

/// Body of `POST /quota/limits/{team_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    /// Resource → limit.
    pub limits: std::collections::BTreeMap<String, super::teams::QuotaLimit>,
}

impl utoipa::PartialSchema for LimitsBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .description(Some("Body of `POST /quota/limits/{team_id}`."))
            .property(
                "limits",
                ObjectBuilder::new()
                    .description(Some(
                        "Resource → limit; at least one, resource names not blank.",
                    ))
                    .property_names(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(super::pattern::NON_BLANK)),
                    ))
                    .additional_properties(Some(
                        <super::teams::QuotaLimit as utoipa::PartialSchema>::schema(),
                    ))
                    .min_properties(Some(1)),
            )
            .required("limits")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ))
            .into()
    }
}

impl utoipa::ToSchema for LimitsBody {}

/// `POST /quota/limits/{team_id}`: admins set a team's limits.
pub async fn quota_limits(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(team): Path<String>,
    Body(body): Body<LimitsBody>,
) -> Result<Json<QuotaReport>, ApiError> {
    let limits = body.limits.into_iter().map(|(k, v)| (k, v.0)).collect();
    let usage = state.orch.set_quota_limits(&who, &team, &limits).await?;
    let usage = quota_lines(usage);
    Ok(Json(QuotaReport { team, usage }))
}
