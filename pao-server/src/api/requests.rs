//! Request lifecycle: submit (idempotent), list, details, status, logs, retry, cancel.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use pao_core::engine::SubmitOptions;
use pao_core::lifecycle::RequestState;
use pao_core::service::{Progress, RequestQuery, RequestScope};
use pao_core::store::{AttemptOutcome, AttemptRecord, Event, EventKind, Request, RollbackStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{Body, OptBody, Query, cursor};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Body of `POST /requests`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "item_id": "networking.dns-record",
    "fields": {"zone": "example.internal", "name": "orders", "record_type": "CNAME",
               "target": "lb.example.internal", "ttl": 300}
}))]
pub struct SubmitBody {
    /// The catalog item.
    pub item_id: String,
    /// Field values.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub fields: Value,
    /// Higher runs first (-100..=100); above 0 needs the approver or admin role.
    #[serde(default, deserialize_with = "super::whole::i32")]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: i32,
    /// The team the request counts against (default: the caller's first team).
    #[serde(default)]
    pub team: Option<String>,
}

fn empty_object() -> Value {
    json!({})
}

/// A request's lifecycle state (the names `state=` filters take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RequestState)]
pub enum StateName {
    /// Accepted and persisted; nothing checked yet.
    Submitted,
    /// Quota, access, item lifecycle and change-freeze checks.
    Prerequisites,
    /// Field values checked against the form schema.
    Validation,
    /// Waiting for approvers.
    AwaitingApproval,
    /// Waiting for a worker.
    Queued,
    /// Actions running (or, in manual mode, the ticket open).
    InProgress,
    /// Post-fulfillment actions running.
    PostFulfillment,
    /// Done.
    Completed,
    /// An action failed and the request stopped.
    Failed,
    /// Cancelled by a person.
    Cancelled,
    /// Refused by a prerequisite, validation or an approver.
    Rejected,
}

/// Whether compensation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RollbackStatus)]
pub enum RollbackName {
    /// No rollback.
    None,
    /// Rolling back now.
    InProgress,
    /// Every completed action was undone.
    Complete,
    /// A rollback failed: some effects remain.
    Incomplete,
}

/// The public view of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestView {
    /// Request id.
    pub id: String,
    /// The catalog item.
    pub item_id: String,
    /// The item's version at submission.
    pub item_version: String,
    /// Lifecycle state.
    #[schema(value_type = StateName)]
    pub state: RequestState,
    /// Whether the state is final.
    pub terminal: bool,
    /// Who submitted it.
    pub requester: String,
    /// The team it counts against.
    pub team: String,
    /// Environment, when the item has one.
    pub environment: Option<String>,
    /// Higher runs first.
    pub priority: i32,
    /// Field values (secrets masked).
    #[schema(value_type = Object)]
    pub fields: Value,
    /// Ties PAO's events and logs to the caller's trace.
    pub correlation_id: String,
    /// The failed request this one retries.
    pub retry_of: Option<String>,
    /// Compensation status.
    #[schema(value_type = RollbackName)]
    pub rollback: RollbackStatus,
    /// Why it failed or was rejected.
    pub error: Option<String>,
    /// When approval times out.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub approval_due: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether approval was escalated.
    pub escalated: bool,
    /// Cancellation was asked for while actions ran.
    pub cancel_requested: bool,
    /// What the request waits for outside PAO (a manual ticket key).
    pub waiting_for: Option<String>,
    /// Its cost, estimated at admission; `null` when the item declares no cost.
    #[schema(value_type = Option<AdmissionCostDoc>)]
    pub cost: Option<pao_core::store::AdmissionCost>,
    /// Submitted at.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last change.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl RequestView {
    /// The view of a stored request.
    pub fn of(r: &Request) -> RequestView {
        RequestView {
            id: r.id.clone(),
            item_id: r.item_id.clone(),
            item_version: r.item_version.clone(),
            state: r.state,
            terminal: r.state.is_terminal(),
            requester: r.requester.id.clone(),
            team: r.team.clone(),
            environment: r.environment.clone(),
            priority: r.priority,
            fields: r.fields.clone(),
            correlation_id: r.correlation_id.clone(),
            retry_of: r.retry_of.clone(),
            rollback: r.rollback,
            error: r.error.clone(),
            approval_due: r.approval_due,
            escalated: r.escalated,
            cancel_requested: r.cancel_requested,
            waiting_for: r.waiting_for.clone(),
            cost: r.cost.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A request's cost, estimated at admission: the item's `cost` actions run in estimate mode
/// with the submitted fields, or else its declared `metadata.cost` (the API shape of
/// `pao_core::store::AdmissionCost`). Approval rules read it as `cost`.
#[derive(ToSchema)]
#[schema(as = AdmissionCost)]
#[allow(dead_code)]
pub struct AdmissionCostDoc {
    /// Currency of the totals (ISO 4217).
    currency: Option<String>,
    /// Monthly total; `null` when some part could not be estimated (see `problems`).
    monthly: Option<f64>,
    /// One-off total; `null` when some part could not be estimated.
    one_time: Option<f64>,
    /// `actions` (the item's `cost` actions) or `declared` (its `metadata.cost`).
    #[schema(pattern = "^(actions|declared)$")]
    source: String,
    /// Each `cost` action's estimate.
    estimates: Vec<ActionEstimateDoc>,
    /// The item's `metadata.cost`, rendered with the request.
    #[schema(value_type = Option<Object>)]
    declared: Option<Value>,
    /// Why a part could not be estimated.
    problems: Vec<String>,
}

/// One `cost` action's estimate at admission.
#[derive(ToSchema)]
#[schema(as = ActionEstimate)]
#[allow(dead_code)]
pub struct ActionEstimateDoc {
    /// The action.
    action_id: String,
    /// Its result: `currency`, `monthly`, `one_time`, `lines`, `discounts`, `tax`.
    #[schema(value_type = Object)]
    result: Value,
}

/// The public view of a request, as JSON.
pub fn view(r: &Request) -> Value {
    serde_json::to_value(RequestView::of(r)).unwrap_or(Value::Null)
}

/// `POST /requests`: validates, checks prerequisites, decides on approval and persists.
/// `201` for a new request, `200` when the `Idempotency-Key` was seen before.
pub async fn submit(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Body(body): Body<SubmitBody>,
) -> Result<(StatusCode, Json<RequestView>), ApiError> {
    let opts = SubmitOptions {
        idempotency_key: idempotency_key(&headers)?,
        priority: body.priority,
        team: body.team,
        // Bytes that are not text keep their place, so the engine refuses them by length and
        // character like any other bad correlation id.
        correlation_id: headers
            .get("x-correlation-id")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    };
    let submitted = state
        .orch
        .submit_request(&who, &body.item_id, &body.fields, opts)
        .await?;
    let r = submitted.request;
    if !submitted.created {
        return Ok((StatusCode::OK, Json(RequestView::of(&r))));
    }
    metrics::counter!("pao_requests_submitted_total", "item" => r.item_id.clone()).increment(1);
    Ok((StatusCode::CREATED, Json(RequestView::of(&r))))
}

/// The `Idempotency-Key` header: text of 1 to 200 characters (trimmed), if sent.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .map_err(|_| ApiError::bad_request("`Idempotency-Key` must be text"))?
        .trim();
    if k.is_empty() || k.len() > 200 {
        return Err(ApiError::bad_request(
            "`Idempotency-Key` must be 1 to 200 characters",
        ));
    }
    Ok(Some(k.to_string()))
}

/// Filters of `GET /requests`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated states (`queued,in_progress`); empty: every state.
    #[param(
        pattern = r"^((submitted|prerequisites|validation|awaiting_approval|queued|in_progress|post_fulfillment|completed|failed|cancelled|rejected)(,(submitted|prerequisites|validation|awaiting_approval|queued|in_progress|post_fulfillment|completed|failed|cancelled|rejected))*)?$"
    )]
    pub state: Option<String>,
    /// Only this item.
    pub item_id: Option<String>,
    /// Only this team (the caller must belong to it, or be an admin).
    pub team: Option<String>,
    /// Admins: everyone's requests (`all=true`).
    pub all: Option<bool>,
    /// Page size (default 50; 0 counts as 1, above 500 as 500).
    pub limit: Option<usize>,
    /// From `next_cursor`.
    #[param(
        pattern = r"^([A-Za-z0-9_-]{4}){2}([A-Za-z0-9_-]{3}|[A-Za-z0-9_-]{4}([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?)$"
    )]
    pub cursor: Option<String>,
}

pub(crate) fn parse_states(s: Option<&str>) -> Result<Vec<RequestState>, ApiError> {
    let s = s.unwrap_or("");
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|part| {
            RequestState::from_name(part).ok_or_else(|| {
                let names: Vec<&str> = RequestState::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::bad_request(format!(
                    "unknown state `{part}`; states: {}",
                    names.join(", ")
                ))
            })
        })
        .collect()
}

/// A page of requests, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestPage {
    /// The requests.
    pub requests: Vec<RequestView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl RequestPage {
    /// The page as the API shows it.
    pub fn of(page: &pao_core::service::RequestPage) -> RequestPage {
        RequestPage {
            requests: page.requests.iter().map(RequestView::of).collect(),
            next_cursor: page.next.as_ref().map(|(at, id)| cursor::encode(*at, id)),
        }
    }
}

/// `GET /requests`: the caller's requests (a team's with `team=`, everyone's for admins with
/// `all=true`), newest first, cursor-paginated.
pub async fn list(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<RequestPage>, ApiError> {
    let scope = match (q.team, q.all) {
        (Some(team), _) => RequestScope::Team(team),
        (None, Some(true)) => RequestScope::All,
        _ => RequestScope::Mine,
    };
    let query = RequestQuery {
        scope,
        states: parse_states(q.state.as_deref())?,
        item_id: q.item_id,
        limit: q.limit,
        after: q.cursor.as_deref().map(cursor::decode).transpose()?,
    };
    let page = state.orch.list_requests(&who, query).await?;
    Ok(Json(RequestPage::of(&page)))
}

/// How an attempt ended (or that it runs).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Running now.
    Running,
    /// Succeeded.
    Succeeded,
    /// Failed.
    Failed,
    /// Skipped (its `when` was false).
    Skipped,
}

/// Whether a failure may be retried.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClassName {
    /// Retried with backoff.
    Retryable,
    /// Not retried.
    Permanent,
    /// Stopped by a cancellation.
    Cancelled,
}

/// Why an attempt failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptError {
    /// Whether it may be retried.
    #[schema(value_type = ErrorClassName)]
    pub class: pao_core::action::ErrorClass,
    /// What went wrong.
    pub message: String,
}

/// One attempt of one action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    /// The action.
    pub action_id: String,
    /// A compensation (rollback) attempt.
    pub rollback: bool,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// How it ended.
    pub status: AttemptStatus,
    /// The rendered input (secrets masked).
    #[schema(value_type = Object)]
    pub input: Value,
    /// Outputs of a successful attempt, else `null`.
    #[schema(value_type = Option<Object>)]
    pub outputs: Value,
    /// Why it failed, else `null`.
    pub error: Option<AttemptError>,
    /// Started at.
    #[schema(value_type = String, format = DateTime)]
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Finished at (`null` while running).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn attempt_view(a: &AttemptRecord) -> AttemptView {
    let (status, outputs, error) = match &a.outcome {
        AttemptOutcome::Running => (AttemptStatus::Running, Value::Null, None),
        AttemptOutcome::Succeeded { outputs, .. } => {
            (AttemptStatus::Succeeded, outputs.clone(), None)
        }
        AttemptOutcome::Failed { error } => (
            AttemptStatus::Failed,
            Value::Null,
            Some(AttemptError {
                class: error.class,
                message: error.message.clone(),
            }),
        ),
        AttemptOutcome::Skipped => (AttemptStatus::Skipped, Value::Null, None),
    };
    AttemptView {
        action_id: a.action_id.clone(),
        rollback: a.rollback,
        attempt: a.attempt,
        status,
        input: a.input.clone(),
        outputs,
        error,
        started_at: a.started_at,
        finished_at: a.finished_at,
    }
}

/// A request with its timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestDetail {
    /// The request.
    #[serde(flatten)]
    pub request: RequestView,
    /// Outputs by action id, of the actions that succeeded.
    #[schema(value_type = Object)]
    pub outputs: serde_json::Map<String, Value>,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptView>,
    /// Approval decisions.
    #[schema(value_type = Vec<Object>)]
    pub approvals: Value,
    /// Progress.
    pub status: StatusView,
}

/// `GET /requests/{id}`: the request with its attempts (timeline), outputs and decisions.
pub async fn detail(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<RequestDetail>, ApiError> {
    let d = state.orch.request_detail(&who, &id).await?;
    Ok(Json(RequestDetail {
        request: RequestView::of(&d.request),
        outputs: d.outputs,
        attempts: d.attempts.iter().map(attempt_view).collect(),
        approvals: serde_json::to_value(&d.decisions).unwrap_or(Value::Null),
        status: StatusView::of(&d.request, &d.progress),
    }))
}

/// Progress of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusView {
    /// Request id.
    pub id: String,
    /// Lifecycle state.
    #[schema(value_type = StateName)]
    pub state: RequestState,
    /// Whether the state is final.
    pub terminal: bool,
    /// Percent of actions done (100 only once completed).
    #[schema(minimum = 0, maximum = 100)]
    pub progress: usize,
    /// Actions done.
    pub actions_done: usize,
    /// Actions of the item.
    pub actions_total: usize,
    /// Actions running now.
    pub current_actions: std::collections::BTreeSet<String>,
    /// Compensation status.
    #[schema(value_type = RollbackName)]
    pub rollback: RollbackStatus,
    /// Why it failed or was rejected.
    pub error: Option<String>,
    /// What the request waits for outside PAO.
    pub waiting_for: Option<String>,
    /// Last change.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl StatusView {
    /// The view of a request's progress.
    pub fn of(r: &Request, p: &Progress) -> StatusView {
        StatusView {
            id: r.id.clone(),
            state: r.state,
            terminal: r.state.is_terminal(),
            progress: p.percent,
            actions_done: p.done,
            actions_total: p.total,
            current_actions: p.running.clone(),
            rollback: r.rollback,
            error: r.error.clone(),
            waiting_for: r.waiting_for.clone(),
            updated_at: r.updated_at,
        }
    }
}

/// `GET /requests/{id}/status`.
pub async fn status(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<StatusView>, ApiError> {
    // An ended request no longer changes: served from memory, after the same visibility check.
    if let Some(f) = state.finished.get(&id) {
        if !state.orch.may_view(&who, &f.request) {
            return Err(ApiError::not_found(format!("request {id} not found")));
        }
        return Ok(Json(StatusView::of(&f.request, &f.progress)));
    }
    let s = state.orch.request_status(&who, &id).await?;
    state.finished.put(&s);
    Ok(Json(StatusView::of(&s.request, &s.progress)))
}

/// Paging of `GET /requests/{id}/logs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Events after this sequence number (default 0: from the start).
    pub after: Option<u64>,
    /// At most this many (default 500; 0 counts as 1, above 5,000 as 5,000).
    pub limit: Option<usize>,
}

/// One event as the API shows it.
pub fn event_view(e: &Event) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let EventKind::Log { level, message, .. } = &e.kind {
        v["line"] = json!(format!("[{level}] {message}"));
    }
    v
}

/// A page of a request's events.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsPage {
    /// The request.
    pub request_id: String,
    /// Events in sequence order: each has `seq`, `request_id`, `at`, `correlation_id` and a
    /// `type` (`state_changed`, `attempt_started`, `log`, ...) with its own members; `log`
    /// events also have `line`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Pass as `after` for the next page (`null` before the first event).
    pub next_after: Option<u64>,
}

/// `GET /requests/{id}/logs`: the request's event stream (state changes, attempts, action
/// log lines, decisions), redacted, from a sequence number.
pub async fn logs(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<LogsPage>, ApiError> {
    let events = state
        .orch
        .request_events(&who, &id, q.after.unwrap_or(0), q.limit)
        .await?;
    let last = events.last().map(|e| e.seq);
    Ok(Json(LogsPage {
        request_id: id,
        events: events.iter().map(event_view).collect(),
        next_after: last.or(q.after),
    }))
}

/// Body of `POST /requests/{id}/retry`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Changed field values (merged over the failed request's).
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Value>,
}

/// `POST /requests/{id}/retry`: a new request that resumes from the failed action.
pub async fn retry(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    OptBody(body): OptBody<RetryBody>,
) -> Result<(StatusCode, Json<RequestView>), ApiError> {
    let new = state.orch.retry_request(&who, &id, body.fields).await?;
    Ok((StatusCode::CREATED, Json(RequestView::of(&new))))
}

/// Body of `POST /requests/{id}/cancel`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why.
    pub reason: Option<String>,
}

/// `POST /requests/{id}/cancel`: ends the request at once before work starts; while actions
/// run, stops them and rolls back per policy (`202` until the worker finishes).
pub async fn cancel(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    OptBody(body): OptBody<CancelBody>,
) -> Result<(StatusCode, Json<RequestView>), ApiError> {
    let out = state.orch.cancel_request(&who, &id, body.reason).await?;
    let code = if out.state.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(RequestView::of(&out))))
}
