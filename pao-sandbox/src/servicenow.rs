//! Fake: ServiceNow Table API (incidents), for the example plugin.
//!
//! `POST /api/now/table/incident`, `GET /api/now/table/incident?sysparm_query=...`,
//! `GET|PATCH /api/now/table/incident/{sys_id}`, with basic auth. Bodies are the vendor's:
//! `{"result": ...}` on success, `{"error": {"message", "detail"}, "status": "failure"}`
//! otherwise; field values are strings, as ServiceNow returns them. Every call lands in a
//! ledger, so tests can prove an incident was created once.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let sn = pao_sandbox::servicenow::ServiceNowFake::start().await.unwrap();
//! assert!(sn.url().starts_with("http://127.0.0.1:"));
//! assert!(sn.incidents().is_empty());
//! # });
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::FakeServer;

/// The user the fake accepts unless told otherwise.
pub const SANDBOX_USER: &str = "pao.integration";
/// The password the fake accepts unless told otherwise.
pub const SANDBOX_PASSWORD: &str = "pao-sandbox-password";

/// One call the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Status returned.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Instance {
    auth: String,
    incidents: Vec<Map<String, Value>>,
    ledger: Vec<LedgerEntry>,
    fail_next: Vec<u16>,
}

/// A running ServiceNow fake.
#[derive(Debug)]
pub struct ServiceNowFake {
    server: FakeServer,
    state: Arc<Mutex<Instance>>,
}

impl ServiceNowFake {
    /// Starts a fake accepting [`SANDBOX_USER`] / [`SANDBOX_PASSWORD`].
    pub async fn start() -> std::io::Result<ServiceNowFake> {
        ServiceNowFake::start_with(SANDBOX_USER, SANDBOX_PASSWORD).await
    }

    /// Starts a fake accepting these credentials.
    pub async fn start_with(user: &str, password: &str) -> std::io::Result<ServiceNowFake> {
        let state = Arc::new(Mutex::new(Instance {
            auth: format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
            ..Instance::default()
        }));
        let router = Router::new()
            .route("/api/now/table/incident", get(list).post(create))
            .route("/api/now/table/incident/{sys_id}", get(read).patch(update))
            .with_state(state.clone());
        Ok(ServiceNowFake {
            server: FakeServer::start(router).await?,
            state,
        })
    }

    /// The instance URL (`http://127.0.0.1:<port>`), what the plugin's `instance_url`
    /// setting takes.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Incidents as stored (string fields, as the Table API returns them).
    pub fn incidents(&self) -> Vec<Value> {
        self.state
            .lock()
            .map(|s| s.incidents.iter().cloned().map(Value::Object).collect())
            .unwrap_or_default()
    }

    /// Every call answered so far.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.state
            .lock()
            .map(|s| s.ledger.clone())
            .unwrap_or_default()
    }

    /// The next calls fail with these statuses, in order (e.g. `[503]`).
    pub fn fail_next(&self, statuses: &[u16]) {
        if let Ok(mut s) = self.state.lock() {
            s.fail_next = statuses.iter().rev().copied().collect();
        }
    }
}

type Shared = State<Arc<Mutex<Instance>>>;

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn failure(status: StatusCode, message: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({
            "error": { "message": message, "detail": detail },
            "status": "failure",
        })),
    )
        .into_response()
}

/// Auth and injected failures; records the call. `Err` is the reply to send.
fn admit(
    s: &mut Instance,
    headers: &HeaderMap,
    method: &str,
    path: String,
) -> Result<usize, Box<Response>> {
    let idx = s.ledger.len();
    s.ledger.push(LedgerEntry {
        method: method.to_string(),
        path,
        status: 0,
    });
    let status_of = |r: &Response| r.status().as_u16();
    if let Some(code) = s.fail_next.pop() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let r = failure(status, "Service Unavailable", "injected by the sandbox");
        s.ledger[idx].status = status_of(&r);
        return Err(Box::new(r));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(s.auth.as_str()) {
        let r = failure(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            "Required to provide Auth information",
        );
        s.ledger[idx].status = status_of(&r);
        return Err(Box::new(r));
    }
    Ok(idx)
}

fn done(s: &mut Instance, idx: usize, r: Response) -> Response {
    s.ledger[idx].status = r.status().as_u16();
    r
}

/// ServiceNow stores every field as a string.
fn as_field(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        Value::Null => Value::String(String::new()),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        other => Value::String(other.to_string()),
    }
}

/// `field=value^field2=value2` (the subset of encoded queries PAO uses).
fn matches(incident: &Map<String, Value>, query: &str) -> bool {
    query.split('^').filter(|t| !t.is_empty()).all(|term| {
        let Some((field, value)) = term.split_once('=') else {
            return false;
        };
        incident.get(field).and_then(Value::as_str) == Some(value)
    })
}

async fn list(
    State(state): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let query = q.get("sysparm_query").cloned().unwrap_or_default();
    let idx = match admit(
        &mut s,
        &headers,
        "GET",
        format!("/api/now/table/incident?sysparm_query={query}"),
    ) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let limit = q
        .get("sysparm_limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10_000);
    let found: Vec<Value> = s
        .incidents
        .iter()
        .filter(|i| matches(i, &query))
        .take(limit)
        .cloned()
        .map(Value::Object)
        .collect();
    let r = (StatusCode::OK, Json(json!({ "result": found }))).into_response();
    done(&mut s, idx, r)
}

async fn create(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let idx = match admit(&mut s, &headers, "POST", "/api/now/table/incident".into()) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&body) else {
        let r = failure(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            "The payload is not valid JSON.",
        );
        return done(&mut s, idx, r);
    };
    let n = s.incidents.len() + 1;
    let mut incident = Map::new();
    for (k, v) in &fields {
        incident.insert(k.clone(), as_field(v));
    }
    let sys_id = format!("{n:08x}{}", "0".repeat(24));
    incident.insert("sys_id".into(), json!(sys_id));
    incident.insert("number".into(), json!(format!("INC{:07}", 10_000 + n)));
    incident
        .entry("state".to_string())
        .or_insert_with(|| json!("1"));
    incident
        .entry("impact".to_string())
        .or_insert_with(|| json!("3"));
    incident
        .entry("urgency".to_string())
        .or_insert_with(|| json!("3"));
    incident.insert("sys_created_on".into(), json!("2026-01-01 00:00:00"));
    s.incidents.push(incident.clone());
    let r = (StatusCode::CREATED, Json(json!({ "result": incident }))).into_response();
    done(&mut s, idx, r)
}

async fn read(State(state): Shared, headers: HeaderMap, Path(sys_id): Path<String>) -> Response {
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let path = format!("/api/now/table/incident/{sys_id}");
    let idx = match admit(&mut s, &headers, "GET", path) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let found = s
        .incidents
        .iter()
        .find(|i| i.get("sys_id").and_then(Value::as_str) == Some(sys_id.as_str()))
        .cloned();
    let r = match found {
        Some(i) => (StatusCode::OK, Json(json!({ "result": i }))).into_response(),
        None => not_found(),
    };
    done(&mut s, idx, r)
}

fn not_found() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "No Record found",
        "Record doesn't exist or ACL restricts the record retrieval",
    )
}

async fn update(
    State(state): Shared,
    headers: HeaderMap,
    Path(sys_id): Path<String>,
    body: String,
) -> Response {
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let path = format!("/api/now/table/incident/{sys_id}");
    let idx = match admit(&mut s, &headers, "PATCH", path) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&body) else {
        let r = failure(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            "The payload is not valid JSON.",
        );
        return done(&mut s, idx, r);
    };
    let found = s
        .incidents
        .iter_mut()
        .find(|i| i.get("sys_id").and_then(Value::as_str) == Some(sys_id.as_str()));
    let r = match found {
        Some(i) => {
            for (k, v) in &fields {
                if k != "sys_id" && k != "number" {
                    i.insert(k.clone(), as_field(v));
                }
            }
            (StatusCode::OK, Json(json!({ "result": i.clone() }))).into_response()
        }
        None => not_found(),
    };
    done(&mut s, idx, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_queries_match_every_term() {
        let mut i = Map::new();
        i.insert("correlation_id".into(), json!("k1"));
        i.insert("state".into(), json!("1"));
        assert!(matches(&i, "correlation_id=k1"));
        assert!(matches(&i, "correlation_id=k1^state=1"));
        assert!(!matches(&i, "correlation_id=k2"));
    }

    #[test]
    fn basic_auth_is_standard_base64() {
        assert_eq!(base64(b"admin:admin"), "YWRtaW46YWRtaW4=");
    }
}
