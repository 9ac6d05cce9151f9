//! Fault injection and request recording shared by the vendor fakes: a test queues the next N
//! answers (401, 404, 429 with `Retry-After`, 500, a delay beyond the client's timeout,
//! malformed JSON, an oversized body) and every request is recorded, so tests can count calls.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One injected answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// This status with the vendor's error body (401, 403, 404, 500, 503...).
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    RateLimited {
        /// Seconds in the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// Waits this long, then answers normally (to exceed the client's timeout).
    Delay(Duration),
    /// 200 with a `Content-Type: application/json` body that is not JSON.
    MalformedJson,
    /// 200 with a JSON body of about this many bytes.
    Oversized(usize),
}

/// One request a fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
}

/// Queued faults and the request log of one fake. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    queue: Arc<Mutex<VecDeque<Fault>>>,
    log: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl Faults {
    /// The next `times` requests get `fault` (after any already queued).
    pub fn inject(&self, fault: Fault, times: usize) {
        if let Ok(mut q) = self.queue.lock() {
            for _ in 0..times {
                q.push_back(fault.clone());
            }
        }
    }

    /// Drops queued faults.
    pub fn clear(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.clear();
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn next(&self, method: &str, uri: &str) -> Option<Fault> {
        if let Ok(mut l) = self.log.lock() {
            l.push(RecordedRequest {
                method: method.to_string(),
                uri: uri.to_string(),
            });
        }
        self.queue.lock().ok().and_then(|mut q| q.pop_front())
    }
}

/// JSON response with a status.
pub(crate) fn json(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

/// JSON response with a vendor media type (`application/vnd.api+json`).
pub(crate) fn json_as(status: u16, body: &Value, content_type: &'static str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The middleware body: answers with the next queued fault, or runs the handler.
pub(crate) async fn apply(
    faults: Faults,
    error_body: fn(u16, &str) -> Value,
    content_type: &'static str,
    req: Request,
    next: Next,
) -> Response {
    let uri = req.uri().to_string();
    let fault = faults.next(req.method().as_str(), &uri);
    match fault {
        None => next.run(req).await,
        Some(Fault::Status(code)) => {
            let reason = StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            json_as(code, &error_body(code, reason), content_type)
        }
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut r = json_as(429, &error_body(429, "rate limit exceeded"), content_type);
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::MalformedJson) => {
            let mut r = Response::new(Body::from("{\"id\": 1, \"key\": "));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Some(Fault::Oversized(n)) => {
            let body = format!("{{\"padding\":\"{}\"}}", "x".repeat(n));
            let mut r = Response::new(Body::from(body));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
    }
}

/// Wraps `router` with fault injection and request recording.
pub(crate) fn layer(
    router: axum::Router,
    faults: &Faults,
    error_body: fn(u16, &str) -> Value,
    content_type: &'static str,
) -> axum::Router {
    let faults = faults.clone();
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let faults = faults.clone();
            apply(faults, error_body, content_type, req, next)
        },
    ))
}

/// Decodes `Authorization: Basic` into (user, password).
pub(crate) fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The token of `Authorization: Bearer <token>` (or GitHub's `token <token>`).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("token "))
        .map(str::to_string)
}

/// A header's value as text.
pub(crate) fn header_str(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
