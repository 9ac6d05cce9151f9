//! Every error the API returns is `application/problem+json` (RFC 9457) with a stable `code`
//! a client can branch on; field errors and catalog diagnostics ride along where they apply.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pao_core::engine::EngineError;
use pao_core::service::OptionsError;
use pao_core::store::StoreError;
use serde_json::{Value, json};

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (`PAO-API-NOT-FOUND`, ...).
    pub code: &'static str,
    /// What went wrong, for people.
    pub detail: String,
    /// More members of the problem document (`errors`, `diagnostics`).
    pub extra: Option<(&'static str, Value)>,
    /// Seconds to wait (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A problem with this status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extra: None,
            retry_after: None,
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "PAO-API-BAD-REQUEST", detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "PAO-API-UNAUTHORIZED", detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "PAO-API-FORBIDDEN", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "PAO-API-NOT-FOUND", detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "PAO-API-CONFLICT", detail)
    }

    /// 422 with a list of located errors.
    pub fn unprocessable(code: &'static str, detail: impl Into<String>, errors: Value) -> ApiError {
        ApiError {
            extra: Some(("errors", errors)),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
        }
    }

    /// 503.
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "PAO-API-UNAVAILABLE",
            detail,
        )
    }

    /// The problem document.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("https://pao.dev/problems/{}", self.code.to_ascii_lowercase()),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let (Some((k, v)), Some(obj)) = (&self.extra, body.as_object_mut()) {
            obj.insert((*k).to_string(), v.clone());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            EngineError::Forbidden(why) => ApiError::forbidden(why),
            EngineError::InvalidFields(errors) => ApiError::unprocessable(
                "PAO-API-INVALID-FIELDS",
                "the field values do not satisfy the item's form",
                serde_json::to_value(&errors).unwrap_or(Value::Null),
            ),
            EngineError::Invalid(why) => {
                ApiError::new(StatusCode::CONFLICT, "PAO-API-INVALID-STATE", why)
            }
            EngineError::InvalidOption(why) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "PAO-API-INVALID-BODY",
                why,
            ),
            EngineError::InvalidInput { pointer, message } => ApiError::unprocessable(
                "PAO-API-INVALID-BODY",
                message.clone(),
                json!([{ "pointer": pointer, "message": message }]),
            ),
            EngineError::IdempotencyMismatch {
                request_id,
                item_id,
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "PAO-API-IDEMPOTENCY-MISMATCH",
                format!(
                    "this Idempotency-Key was used for request {request_id} of item `{item_id}`"
                ),
            ),
            EngineError::TooLarge(why) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAO-API-BODY-TOO-LARGE", why)
            }
            EngineError::Options(e) => {
                let code = match e {
                    OptionsError::NoOptions(_) => "PAO-API-NO-OPTIONS",
                    OptionsError::Param(_) => "PAO-API-OPTIONS-PARAM",
                    OptionsError::Template(_) => "PAO-API-OPTIONS-TEMPLATE",
                    OptionsError::Source(_) => {
                        return ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "PAO-API-OPTIONS-SOURCE",
                            e.to_string(),
                        );
                    }
                };
                ApiError::unprocessable(code, e.to_string(), json!([]))
            }
            EngineError::QuotaExceeded { request_id, reason } => ApiError {
                extra: Some(("request_id", Value::String(request_id))),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "PAO-API-QUOTA-EXCEEDED",
                    reason,
                )
            },
            EngineError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(id) => ApiError::not_found(format!("request {id} not found")),
            StoreError::Conflict { .. } | StoreError::Illegal(_) | StoreError::Duplicate(_) => {
                ApiError::conflict(e.to_string())
            }
            StoreError::QuotaExceeded { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "PAO-API-QUOTA-EXCEEDED",
                e.to_string(),
            ),
            StoreError::LeaseLost(_) | StoreError::Unavailable(_) => {
                // The database's own message names hosts, users and statements: it goes to
                // the server's log, the client gets a generic one.
                tracing::warn!(error = %e, "store unavailable");
                ApiError::unavailable("the store is unavailable; try again shortly")
            }
        }
    }
}

/// Turns axum's extractor rejections (bad JSON, wrong content type, too large) into problems.
pub fn rejection(status: StatusCode, text: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "PAO-API-BODY-TOO-LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "PAO-API-UNSUPPORTED-MEDIA-TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "PAO-API-INVALID-BODY",
        _ => "PAO-API-BAD-REQUEST",
    };
    ApiError::new(status, code, text)
}
