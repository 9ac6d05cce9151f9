//! The lab's routes. Each handler takes the caller and the input, calls one service method
//! of the orchestrator, and maps what it returns, or its error, to the lab's own JSON.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pao_core::catalog::LoadedItem;
use pao_core::engine::{EngineError, Orchestrator, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::service::{CatalogFilter, Progress, RequestQuery};
use pao_core::store::Request;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identity::User;

type Pao = State<Arc<Orchestrator>>;

/// An item as the lab lists it.
#[derive(Serialize)]
pub struct ItemView {
    id: String,
    name: String,
    description: String,
    needs_approval: bool,
}

impl ItemView {
    fn of(item: &LoadedItem) -> ItemView {
        let m = &item.item.metadata;
        ItemView {
            id: m.id.clone(),
            name: m.name.clone(),
            description: m.description.clone(),
            needs_approval: item.item.fulfillment.approval.is_some(),
        }
    }
}

/// A request as the lab shows it.
#[derive(Serialize)]
pub struct RequestView {
    id: String,
    item: String,
    requester: String,
    state: RequestState,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Set when an `Idempotency-Key` brought back an earlier request.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
}

impl RequestView {
    fn of(r: &Request) -> RequestView {
        RequestView {
            id: r.id.clone(),
            item: r.item_id.clone(),
            requester: r.requester.id.clone(),
            state: r.state,
            done: r.state.is_terminal(),
            error: r.error.clone(),
            replayed: false,
        }
    }
}

/// A request with how far it has come and what its actions returned.
#[derive(Serialize)]
pub struct DetailView {
    #[serde(flatten)]
    request: RequestView,
    progress: Progress,
    outputs: Map<String, Value>,
}

/// `GET /items`: the items the caller may see.
pub async fn items(State(pao): Pao, User(who): User) -> Json<Vec<ItemView>> {
    let page = pao.catalog_page(&who, &CatalogFilter::default());
    Json(page.items.iter().map(|i| ItemView::of(i)).collect())
}

/// The body of `POST /items/{id}/requests`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    #[serde(default)]
    fields: Value,
}

/// `POST /items/{id}/requests`: 201 with a new request; 200 with the request an earlier
/// call with the same `Idempotency-Key` made.
pub async fn submit(
    State(pao): Pao,
    User(who): User,
    Path(item): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RequestView>), Problem> {
    let Json(body) = body?;
    let key = headers.get("idempotency-key").map(|v| v.to_str());
    let key = key.transpose().map_err(|_| Problem::bad_key())?;
    let opts = SubmitOptions {
        idempotency_key: key.map(String::from),
        ..SubmitOptions::default()
    };
    let submitted = pao.submit_request(&who, &item, &body.fields, opts).await?;
    let view = RequestView {
        replayed: !submitted.created,
        ..RequestView::of(&submitted.request)
    };
    let status = match submitted.created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((status, Json(view)))
}

/// `GET /requests`: the caller's requests, newest first.
pub async fn mine(State(pao): Pao, User(who): User) -> Result<Json<Vec<RequestView>>, Problem> {
    let page = pao.list_requests(&who, RequestQuery::default()).await?;
    Ok(Json(page.requests.iter().map(RequestView::of).collect()))
}

/// `GET /approvals`: the requests waiting for the caller's decision, newest first.
pub async fn approvals(
    State(pao): Pao,
    User(who): User,
) -> Result<Json<Vec<RequestView>>, Problem> {
    let page = pao.pending_for(&who, None, None).await?;
    Ok(Json(
        page.approvals
            .iter()
            .map(|p| RequestView::of(&p.request))
            .collect(),
    ))
}

/// `GET /requests/{id}`: one request, if the caller may see it (404 otherwise).
pub async fn request(
    State(pao): Pao,
    User(who): User,
    Path(id): Path<String>,
) -> Result<Json<DetailView>, Problem> {
    let detail = pao.request_detail(&who, &id).await?;
    Ok(Json(DetailView {
        request: RequestView::of(&detail.request),
        progress: detail.progress,
        outputs: detail.outputs,
    }))
}

/// `POST /requests/{id}/cancel`.
pub async fn cancel(
    State(pao): Pao,
    User(who): User,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, Problem> {
    let request = pao.cancel_request(&who, &id, None).await?;
    Ok(Json(RequestView::of(&request)))
}

/// `POST /requests/{id}/approve`.
pub async fn approve(
    State(pao): Pao,
    User(who): User,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, Problem> {
    let request = pao.approve_request(&who, &id, None).await?;
    Ok(Json(RequestView::of(&request)))
}

/// An error as the lab reports it: `{ "error": code, "message": .., "errors": [located] }`.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    message: String,
    errors: Vec<Located>,
}

/// What is wrong where: a JSON pointer into the request body.
#[derive(Debug, Serialize)]
pub struct Located {
    pointer: String,
    message: String,
}

impl Problem {
    /// A problem without located errors.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Problem {
        let message = message.into();
        let errors = Vec::new();
        Problem {
            status,
            code,
            message,
            errors,
        }
    }

    fn bad_key() -> Problem {
        let message = "Idempotency-Key must be visible ASCII";
        Problem::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn at(mut self, pointer: String, message: String) -> Problem {
        self.errors.push(Located { pointer, message });
        self
    }
}

impl From<EngineError> for Problem {
    fn from(e: EngineError) -> Problem {
        use StatusCode as S;
        let text = e.to_string();
        match e {
            EngineError::NotFound(_) => Problem::new(S::NOT_FOUND, "not_found", text),
            EngineError::Forbidden(_) => Problem::new(S::FORBIDDEN, "forbidden", text),
            EngineError::Invalid(_) => Problem::new(S::CONFLICT, "conflict", text),
            EngineError::InvalidFields(errors) => errors.into_iter().fold(
                Problem::new(S::UNPROCESSABLE_ENTITY, "invalid_fields", text),
                |p, f| p.at(format!("/fields{}", f.pointer), f.message),
            ),
            EngineError::InvalidInput { pointer, message } => {
                Problem::new(S::UNPROCESSABLE_ENTITY, "invalid_input", &message)
                    .at(pointer, message)
            }
            EngineError::IdempotencyMismatch { .. } | EngineError::InvalidOption(_) => {
                Problem::new(S::UNPROCESSABLE_ENTITY, "invalid_input", text)
            }
            e => {
                eprintln!("internal error: {e}");
                Problem::new(S::INTERNAL_SERVER_ERROR, "internal", "try again later")
            }
        }
    }
}

impl From<JsonRejection> for Problem {
    fn from(e: JsonRejection) -> Problem {
        Problem::new(e.status(), "bad_body", e.body_text())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.code, "message": self.message });
        if !self.errors.is_empty() {
            body["errors"] = serde_json::json!(self.errors);
        }
        (self.status, Json(body)).into_response()
    }
}
