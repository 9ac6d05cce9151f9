//! The `/api/v1` surface. Handlers translate HTTP into `pao-core` calls and back; the rules
//! live in `pao-core`. Every error is `application/problem+json` (see [`crate::error`]).

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub mod admin;
pub mod authoring;
pub mod catalog;
pub mod governance;
pub mod openapi;
pub mod requests;
pub mod teams;
pub mod webhooks;
pub mod ws;

/// The whole router, state applied.
pub fn router(state: AppState) -> Router {
    let mut by_path: std::collections::BTreeMap<
        &'static str,
        axum::routing::MethodRouter<AppState>,
    > = std::collections::BTreeMap::new();
    for e in openapi::endpoints() {
        let handler = match by_path.remove(e.path) {
            Some(existing) => existing.merge(e.handler),
            None => e.handler,
        };
        by_path.insert(e.path, handler);
    }
    let api = by_path
        .into_iter()
        .fold(Router::new(), |r, (path, h)| r.route(path, h))
        .fallback(not_found);
    let max_body = state.config.limits.max_body_bytes;
    Router::new()
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// Latency histogram by route, plus problem+json for axum's own plain-text rejections.
async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    // A request id for logs and the client (`X-Request-Id`), taken from the caller when it
    // sent a sane one; the correlation id ties it to the PAO request it touches.
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let correlation_id = req
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let span = tracing::info_span!(
        "http",
        request_id = %request_id,
        correlation_id = correlation_id.as_deref().unwrap_or(""),
        method = %method,
        route = %route,
    );
    let mut resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = resp.status();
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = start.elapsed().as_secs_f64() * 1000.0,
            "request"
        )
    });
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    metrics::histogram!("pao_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone(), "status" => status.as_u16().to_string())
        .record(start.elapsed().as_secs_f64());
    as_problem(resp).await
}

/// axum's extractor rejections (bad JSON, body too large, bad path) are plain text: they go
/// out as problem documents, with their other headers.
async fn as_problem(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut out = crate::error::rejection(parts.status, text).into_response();
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Authenticates once for the handlers, limits each principal's rate, and limits callers with
/// no valid credential per client address. Requests that carry gateway identity headers (a
/// browser's ambient credential) must show they are not a cross-site form: a JSON content
/// type or an `X-Requested-With` header on every POST.
async fn rate_limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = crate::auth::peer(req.extensions());
    // Browsers cannot set headers on a WebSocket: their token comes as `?access_token=`.
    if req.uri().path().starts_with("/api/v1/ws/")
        && !req
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION)
        && let Some(token) = query_value(req.uri(), "access_token")
        && let Ok(v) = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
    {
        req.headers_mut()
            .insert(axum::http::header::AUTHORIZATION, v);
    }
    match state.auth.authenticate(req.headers(), peer).await {
        Ok(p) => {
            // Team membership `catalog.yaml` declares joins the identity provider's.
            let p = state.orch.with_catalog_teams(p);
            if let Err(wait) = state.limiter.check(&p.id) {
                return too_many(format!("{} is over its request rate", p.id), wait);
            }
            if req.method() == axum::http::Method::POST
                && state.auth.ambient(req.headers())
                && !is_json(req.headers())
                && !req.headers().contains_key("x-requested-with")
            {
                return ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "PAO-API-UNSUPPORTED-MEDIA-TYPE",
                    "send `Content-Type: application/json` (or `X-Requested-With`) with every POST",
                )
                .into_response();
            }
            req.extensions_mut().insert(Caller(p));
        }
        // Deliveries are verified by their signature, and vendors do not retry a 429.
        Err(_) if req.uri().path().starts_with("/api/v1/webhooks/") => {}
        Err(_) => {
            let key = peer.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
            if let Err(wait) = state.anonymous_limiter.check(&key) {
                return too_many(
                    format!("{key} is over the rate for requests without a valid credential"),
                    wait,
                );
            }
        }
    }
    next.run(req).await
}

fn too_many(detail: String, wait: std::time::Duration) -> Response {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "PAO-API-RATE-LIMITED",
        detail,
    );
    e.retry_after = Some(wait.as_secs().max(1));
    e.into_response()
}

/// Whether the body is declared as JSON (`application/json`, `application/*+json`).
pub fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

fn query_value(uri: &axum::http::Uri, name: &str) -> Option<String> {
    let q = axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(uri)
        .ok()?;
    q.0.get(name).cloned()
}

/// Opaque list cursors: base64url (no padding) of the last item's sort key. Any text of the
/// documented pattern decodes, so a cursor is either refused by its pattern or accepted.
pub mod cursor {
    use base64::Engine as _;
    use base64::alphabet::URL_SAFE;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use chrono::{DateTime, Utc};

    use crate::error::ApiError;

    /// The pattern of [`encode_text`] cursors: unpadded base64url.
    pub const TEXT_PATTERN: &str = "^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$";

    /// The pattern of [`encode`] cursors: unpadded base64url of at least 8 bytes.
    pub const PATTERN: &str = "^([A-Za-z0-9_-]{4}){2}([A-Za-z0-9_-]{3}|[A-Za-z0-9_-]{4}([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?)$";

    const B64: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );

    fn bad() -> ApiError {
        ApiError::bad_request("`cursor` is not a cursor this API returned")
    }

    /// Encodes a (created_at, id) key: nanoseconds since the epoch (8 bytes, big-endian),
    /// then the id.
    pub fn encode(at: DateTime<Utc>, id: &str) -> String {
        let nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut raw = nanos.to_be_bytes().to_vec();
        raw.extend_from_slice(id.as_bytes());
        B64.encode(raw)
    }

    /// Decodes a cursor made by [`encode`] (any text of [`PATTERN`]).
    pub fn decode(c: &str) -> Result<(DateTime<Utc>, String), ApiError> {
        let raw = B64.decode(c).map_err(|_| bad())?;
        if raw.len() < 8 {
            return Err(bad());
        }
        let (at, id) = raw.split_at(8);
        let nanos = i64::from_be_bytes(at.try_into().map_err(|_| bad())?);
        Ok((
            DateTime::from_timestamp_nanos(nanos),
            String::from_utf8_lossy(id).into_owned(),
        ))
    }

    /// Encodes a plain text key (catalog item ids).
    pub fn encode_text(key: &str) -> String {
        B64.encode(key)
    }

    /// Decodes [`encode_text`] (any text of [`TEXT_PATTERN`]).
    pub fn decode_text(c: &str) -> Result<String, ApiError> {
        B64.decode(c)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|_| bad())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_and_every_patterned_text_decodes() {
            let at = DateTime::parse_from_rfc3339("2026-12-07T10:11:12.345Z")
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(decode(&encode(at, "r-1")).unwrap(), (at, "r-1".to_string()));
            assert_eq!(decode_text(&encode_text("a.b")).unwrap(), "a.b");
            // Texts of the patterns decode; others do not.
            for c in [
                "AAAAAAAAAAA",
                "AAAAAAAAAAB",
                "_-_-_-_-_-_-",
                "AAAAAAAAAAAAAA",
            ] {
                assert!(decode(c).is_ok(), "{c}");
            }
            for c in ["", "AAAAAAAAAA", "AAAAAAAAAAAAA", "AAAAAAAAAAA=", "%%%"] {
                assert!(decode(c).is_err(), "{c}");
            }
            for c in ["", "ab", "abc", "abcd", "abcdef", "_-_"] {
                assert!(decode_text(c).is_ok(), "{c}");
            }
            for c in ["a", "abcde", "ab=", "%%%"] {
                assert!(decode_text(c).is_err(), "{c}");
            }
        }
    }
}

/// Schema patterns of text the server checks.
pub mod pattern {
    /// Text with a character that is not white space (what `str::trim` keeps).
    pub const NON_BLANK: &str = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
}

/// Integers of JSON bodies as JSON Schema counts them: `5`, `5.0` and `5e0` are all the
/// integer 5.
pub mod whole {
    use serde::{Deserialize, Deserializer, de::Error as _};

    /// Any integer.
    pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(i) = n.as_i64() {
            return Ok(i128::from(i));
        }
        if let Some(u) = n.as_u64() {
            return Ok(i128::from(u));
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e30 => Ok(f as i128),
            _ => Err(D::Error::custom(format!("{n} is not an integer"))),
        }
    }

    /// An `i32`.
    pub fn i32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        let n = number(d)?;
        i32::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range")))
    }
}

/// JSON body extractor whose rejections are problem documents.
pub struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let v = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rej) => return Err(crate::error::rejection(rej.status(), rej.body_text())),
        };
        from_object(v).map(Body)
    }
}

/// Query extractor whose rejections are problem documents.
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rej) => Err(ApiError::bad_request(rej.body_text())),
        }
    }
}

/// An optional JSON body: an empty body gives `T::default()`.
pub struct OptBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for OptBody<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(req.headers());
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rej| crate::error::rejection(rej.status(), rej.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptBody(T::default()));
        }
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "PAO-API-UNSUPPORTED-MEDIA-TYPE",
                "a request body must be sent as `Content-Type: application/json`",
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "PAO-API-INVALID-BODY",
                format!("invalid JSON body: {e}"),
            )
        })?;
        from_object(v).map(OptBody)
    }
}

/// A body's value as `T`. Bodies are JSON objects: serde would also read a struct from an
/// array of its members' values, which the schemas do not allow.
fn from_object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    if !v.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PAO-API-INVALID-BODY",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PAO-API-INVALID-BODY",
            format!("Failed to deserialize the JSON body into the target type: {e}"),
        )
    })
}
