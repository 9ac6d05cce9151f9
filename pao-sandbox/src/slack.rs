//! Fake: Slack Web API `chat.postMessage` / `chat.delete` (bearer token) and incoming
//! webhooks, for the example plugin.
//!
//! Replies as Slack does: HTTP 200 with `{"ok": true, ...}` or `{"ok": false, "error": ...}`;
//! `ratelimited` is HTTP 429 with `Retry-After`. Every call lands in a ledger and every
//! posted message in [`SlackFake::messages`], so tests can prove nothing was posted twice.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let slack = pao_sandbox::slack::SlackFake::start().await.unwrap();
//! assert!(slack.api_url().ends_with("/api"));
//! assert!(slack.messages().is_empty());
//! # });
//! ```

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::FakeServer;

/// The bot token the fake accepts unless told otherwise.
pub const SANDBOX_TOKEN: &str = "xoxb-pao-sandbox";

/// The incoming-webhook path the fake accepts (`/services/T000/B000/XXXX`).
pub const WEBHOOK_PATH: &str = "/services/TPAO0000/BPAO0000/sandboxwebhooksecret";

/// A posted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Channel id (`C` + name for `#name`).
    pub channel: String,
    /// Message id.
    pub ts: String,
    /// Text.
    pub text: String,
    /// Parent thread, when a reply.
    pub thread_ts: Option<String>,
    /// Deleted by `chat.delete`.
    pub deleted: bool,
}

/// One call the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// `chat.postMessage`, `chat.delete` or `webhook`.
    pub method: String,
    /// HTTP status returned.
    pub status: u16,
    /// Slack's `error`, when not ok.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct SlackState {
    token: String,
    messages: Vec<Message>,
    ledger: Vec<LedgerEntry>,
    next_ts: u64,
    rate_limit_next: u32,
}

/// A running Slack fake.
#[derive(Debug)]
pub struct SlackFake {
    server: FakeServer,
    state: Arc<Mutex<SlackState>>,
}

impl SlackFake {
    /// Starts a fake accepting [`SANDBOX_TOKEN`].
    pub async fn start() -> std::io::Result<SlackFake> {
        SlackFake::start_with_token(SANDBOX_TOKEN).await
    }

    /// Starts a fake accepting this bot token.
    pub async fn start_with_token(token: &str) -> std::io::Result<SlackFake> {
        let state = Arc::new(Mutex::new(SlackState {
            token: token.to_string(),
            next_ts: 1_700_000_000_000_100,
            ..SlackState::default()
        }));
        let router = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/chat.delete", post(delete_message))
            .route("/services/{t}/{b}/{secret}", post(webhook))
            .with_state(state.clone());
        Ok(SlackFake {
            server: FakeServer::start(router).await?,
            state,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The Web API base (`<url>/api`), what the plugin's `api_url` setting takes.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.server.url())
    }

    /// The incoming-webhook URL.
    pub fn webhook_url(&self) -> String {
        format!("{}{WEBHOOK_PATH}", self.server.url())
    }

    /// Messages posted so far (deleted ones flagged).
    pub fn messages(&self) -> Vec<Message> {
        self.state
            .lock()
            .map(|s| s.messages.clone())
            .unwrap_or_default()
    }

    /// Every call answered so far.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.state
            .lock()
            .map(|s| s.ledger.clone())
            .unwrap_or_default()
    }

    /// The next `n` Web API calls get `429 ratelimited` with `Retry-After: 1`.
    pub fn rate_limit_next(&self, n: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.rate_limit_next = n;
        }
    }
}

type Shared = State<Arc<Mutex<SlackState>>>;

fn reply(
    s: &mut SlackState,
    method: &str,
    status: StatusCode,
    body: Value,
    extra: Option<(header::HeaderName, &'static str)>,
) -> Response {
    let error = body
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string);
    s.ledger.push(LedgerEntry {
        method: method.to_string(),
        status: status.as_u16(),
        error,
    });
    let mut resp = (status, Json(body)).into_response();
    if let Some((k, v)) = extra {
        resp.headers_mut()
            .insert(k, header::HeaderValue::from_static(v));
    }
    resp
}

/// Checks the bearer token and the rate limit; `Err` is the reply to send.
fn admit(s: &mut SlackState, headers: &HeaderMap, method: &str) -> Result<(), Box<Response>> {
    if s.rate_limit_next > 0 {
        s.rate_limit_next -= 1;
        return Err(Box::new(reply(
            s,
            method,
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "ok": false, "error": "ratelimited" }),
            Some((header::RETRY_AFTER, "1")),
        )));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let error = match auth.and_then(|a| a.strip_prefix("Bearer ")) {
        None => Some("not_authed"),
        Some(t) if t != s.token => Some("invalid_auth"),
        Some(_) => None,
    };
    match error {
        Some(e) => Err(Box::new(reply(
            s,
            method,
            StatusCode::OK,
            json!({ "ok": false, "error": e }),
            None,
        ))),
        None => Ok(()),
    }
}

fn channel_id(channel: &str) -> String {
    match channel.strip_prefix('#') {
        Some(name) => format!("C{}", name.to_ascii_uppercase().replace('-', "")),
        None => channel.to_string(),
    }
}

async fn post_message(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    const M: &str = "chat.postMessage";
    if let Err(r) = admit(&mut s, &headers, M) {
        return *r;
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return reply(
            &mut s,
            M,
            StatusCode::OK,
            json!({ "ok": false, "error": "invalid_json" }),
            None,
        );
    };
    let channel = body.get("channel").and_then(Value::as_str).unwrap_or("");
    let text = body.get("text").and_then(Value::as_str).unwrap_or("");
    if channel.is_empty() {
        return reply(
            &mut s,
            M,
            StatusCode::OK,
            json!({ "ok": false, "error": "channel_not_found" }),
            None,
        );
    }
    if text.is_empty() && body.get("blocks").is_none() {
        return reply(
            &mut s,
            M,
            StatusCode::OK,
            json!({ "ok": false, "error": "no_text" }),
            None,
        );
    }
    s.next_ts += 100;
    let ts = format!("{}.{:06}", s.next_ts / 1_000_000, s.next_ts % 1_000_000);
    let message = Message {
        channel: channel_id(channel),
        ts: ts.clone(),
        text: text.to_string(),
        thread_ts: body
            .get("thread_ts")
            .and_then(Value::as_str)
            .map(str::to_string),
        deleted: false,
    };
    let out = json!({
        "ok": true,
        "channel": message.channel,
        "ts": ts,
        "message": { "type": "message", "text": text, "ts": ts },
    });
    s.messages.push(message);
    reply(&mut s, M, StatusCode::OK, out, None)
}

async fn delete_message(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    const M: &str = "chat.delete";
    if let Err(r) = admit(&mut s, &headers, M) {
        return *r;
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let channel = channel_id(body.get("channel").and_then(Value::as_str).unwrap_or(""));
    let ts = body.get("ts").and_then(Value::as_str).unwrap_or("");
    let found = s
        .messages
        .iter_mut()
        .find(|m| m.channel == channel && m.ts == ts && !m.deleted);
    match found {
        Some(m) => {
            m.deleted = true;
            let out = json!({ "ok": true, "channel": channel, "ts": ts });
            reply(&mut s, M, StatusCode::OK, out, None)
        }
        None => reply(
            &mut s,
            M,
            StatusCode::OK,
            json!({ "ok": false, "error": "message_not_found" }),
            None,
        ),
    }
}

async fn webhook(
    State(state): Shared,
    Path((t, b, secret)): Path<(String, String, String)>,
    body: String,
) -> Response {
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let path = format!("/services/{t}/{b}/{secret}");
    // Incoming webhooks answer in plain text, not JSON.
    let (status, text) = if path != WEBHOOK_PATH {
        (StatusCode::FORBIDDEN, "invalid_token")
    } else {
        match serde_json::from_str::<Value>(&body) {
            Ok(v) if v.get("text").and_then(Value::as_str).is_some() => {
                s.next_ts += 100;
                let ts = format!("{}.{:06}", s.next_ts / 1_000_000, s.next_ts % 1_000_000);
                let text = v
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                s.messages.push(Message {
                    channel: "CWEBHOOK".to_string(),
                    ts,
                    text,
                    thread_ts: None,
                    deleted: false,
                });
                (StatusCode::OK, "ok")
            }
            Ok(_) => (StatusCode::BAD_REQUEST, "no_text"),
            Err(_) => (StatusCode::BAD_REQUEST, "invalid_payload"),
        }
    };
    s.ledger.push(LedgerEntry {
        method: "webhook".to_string(),
        status: status.as_u16(),
        error: (status != StatusCode::OK).then(|| text.to_string()),
    });
    (status, text).into_response()
}
