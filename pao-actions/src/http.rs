//! The HTTP plumbing every remote action shares: one reqwest client (rustls), a call that
//! honours the attempt's cancellation and deadline and caps the response size, the error
//! classification of the issue (connect errors, timeouts, 408, 429 with `Retry-After`, 5xx →
//! retryable; other 4xx and unreadable answers → permanent, with the vendor's own message), the
//! dry-run description of a call with its secrets redacted, and polling with backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use pao_core::action::{ActionContext, ActionError};
use pao_core::secrets::SecretError;
use serde_json::{Value, json};

use crate::config::{ConfigError, HttpSettings};

/// The shared clients and their settings.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    /// For calls without credentials: follows redirects to other origins (reqwest drops
    /// `Authorization` and `Cookie` there), never from https to http.
    client: reqwest::Client,
    /// For calls with credentials or a body: follows redirects within the call's origin only.
    confined: reqwest::Client,
    pub(crate) settings: HttpSettings,
}

/// Redirects followed per call.
const MAX_REDIRECTS: usize = 5;

/// The redirect policy: at most [`MAX_REDIRECTS`] hops, never from https to http, and when
/// `confined`, never to another origin (scheme, host, port) than the first URL's. A redirect
/// that is not followed comes back as the 3xx response, which [`Http::send`] turns into an
/// error saying why.
pub(crate) fn redirect_policy(confined: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        if redirect_refused(attempt.previous(), attempt.url(), confined) {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// Whether a redirect to `next`, after `previous` (the first URL first), is refused.
fn redirect_refused(previous: &[reqwest::Url], next: &reqwest::Url, confined: bool) -> bool {
    let downgrade = previous
        .last()
        .is_some_and(|p| p.scheme() == "https" && next.scheme() != "https");
    let elsewhere = previous
        .first()
        .is_some_and(|first| first.origin() != next.origin());
    downgrade || (confined && elsewhere)
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallBody {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
    /// Exact bytes (a signed payload); the caller sets `Content-Type`.
    Bytes(Vec<u8>),
}

/// One HTTP request, built before it is sent (or described, in a dry run).
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: CallBody,
    /// Overrides the client's response cap.
    pub max_bytes: Option<usize>,
}

impl Call {
    pub fn new(method: reqwest::Method, url: impl Into<String>) -> Call {
        Call {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: CallBody::None,
            max_bytes: None,
        }
    }

    pub fn json(mut self, body: Value) -> Call {
        self.body = CallBody::Json(body);
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Call {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// What a dry run shows: method, URL, headers and body, secrets redacted.
    pub fn describe(&self, ctx: &ActionContext) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown = if sensitive_header(n) {
                    "[REDACTED]".to_string()
                } else {
                    ctx.log.redact(v)
                };
                (n.clone(), Value::String(shown))
            })
            .collect();
        let body = match &self.body {
            CallBody::None => Value::Null,
            CallBody::Json(v) => redact_value(ctx, v),
            CallBody::Form(f) => Value::Object(
                f.iter()
                    .map(|(k, v)| (k.clone(), Value::String(ctx.log.redact(v))))
                    .collect(),
            ),
            CallBody::Bytes(b) => redact_value(
                ctx,
                &serde_json::from_slice(b)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
            ),
        };
        json!({
            "method": self.method.as_str(),
            "url": ctx.log.redact(&self.url),
            "headers": headers,
            "body": body,
        })
    }
}

fn sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "cookie"
        || n == "proxy-authorization"
        || n.contains("token")
        || n.contains("key") && n != "idempotency-key"
        || n.contains("secret")
        || n.contains("signature")
        || n.contains("password")
}

pub(crate) use crate::redact_json as redact_value;

/// A response, body read in full (within the cap).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON; an empty body is `null`. A 2xx that is not JSON is a permanent error
    /// (the service does not speak the API we expect).
    pub fn json(&self, vendor: &str) -> Result<Value, ActionError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            ActionError::permanent(format!(
                "{vendor} answered {} with a body that is not valid JSON ({e})",
                self.status
            ))
        })
    }

    /// The body as JSON, or the text when it is not JSON.
    pub fn json_or_text(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    /// The error for a non-success status, with the vendor's message.
    pub fn error(&self, vendor: &str, message_of: fn(&Value) -> Option<String>) -> ActionError {
        let parsed = serde_json::from_slice::<Value>(&self.body).ok();
        let message = parsed
            .as_ref()
            .and_then(message_of)
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| {
                let t = String::from_utf8_lossy(&self.body);
                t.chars().take(300).collect()
            });
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let text = if message.is_empty() {
            format!("{vendor} answered {} {reason}", self.status)
        } else {
            format!("{vendor} answered {} {reason}: {message}", self.status)
        };
        match self.status {
            429 => {
                let e = ActionError::retryable(text);
                match self.retry_after() {
                    Some(d) => e.with_retry_after(d),
                    None => e,
                }
            }
            408 | 500..=599 => {
                let e = ActionError::retryable(text);
                match self.retry_after() {
                    Some(d) => e.with_retry_after(d),
                    None => e,
                }
            }
            _ => ActionError::permanent(text),
        }
    }

    /// `Retry-After` as seconds or an HTTP date.
    pub fn retry_after(&self) -> Option<Duration> {
        let v = self.headers.get("retry-after")?.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        let when = httpdate::parse_http_date(v).ok()?;
        Some(
            when.duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        )
    }
}

/// The vendor message of a generic JSON error body: `message`, `error.message`,
/// `error_description`, `error`, `errors[0]`, `detail`, `title`.
pub(crate) fn generic_message(v: &Value) -> Option<String> {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    s("/message")
        .or_else(|| s("/error/message"))
        .or_else(|| s("/error_description"))
        .or_else(|| s("/error"))
        .or_else(|| s("/errors/0"))
        .or_else(|| s("/errors/0/detail"))
        .or_else(|| s("/errors/0/title"))
        .or_else(|| s("/detail"))
        .or_else(|| s("/title"))
}

impl Http {
    pub fn new(settings: &HttpSettings) -> Result<Http, ConfigError> {
        // reqwest is built without a default crypto provider; ring is ours. Installing fails
        // harmlessly when the embedder installed one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |confined: bool| {
            reqwest::Client::builder()
                .connect_timeout(settings.connect_timeout)
                .user_agent(settings.user_agent.clone())
                .redirect(redirect_policy(confined))
                .build()
                .map_err(|e| ConfigError::Invalid {
                    at: "http".into(),
                    message: format!("cannot build the HTTP client: {e}"),
                })
        };
        Ok(Http {
            client: build(false)?,
            confined: build(true)?,
            settings: settings.clone(),
        })
    }

    /// Whether `call` carries something that must not reach another origin: an auth header
    /// (by name), a header holding a secret, or a body (reqwest re-sends it on 307 and 308).
    fn carries_credentials(ctx: &ActionContext, call: &Call) -> bool {
        call.body != CallBody::None
            || call
                .headers
                .iter()
                .any(|(n, v)| sensitive_header(n) || ctx.log.redactor().contains_secret(v))
    }

    /// Sends `call`; any status is `Ok`. Connect errors and timeouts are retryable, the
    /// cancellation of the attempt is `Cancelled`, a body over the cap is permanent.
    pub async fn send(
        &self,
        ctx: &ActionContext,
        vendor: &str,
        call: &Call,
    ) -> Result<Reply, ActionError> {
        let mut timeout = self.settings.request_timeout;
        if let Some(deadline) = ctx.deadline {
            let left = (deadline - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::from_millis(1));
            timeout = timeout.min(left.max(Duration::from_millis(1)));
        }
        let client = if Self::carries_credentials(ctx, call) {
            &self.confined
        } else {
            &self.client
        };
        let mut rb = client
            .request(call.method.clone(), &call.url)
            .timeout(timeout);
        for (n, v) in &call.headers {
            rb = rb.header(n, v);
        }
        rb = match &call.body {
            CallBody::None => rb,
            CallBody::Json(v) => rb.json(v),
            CallBody::Form(f) => rb.form(f),
            CallBody::Bytes(b) => rb.body(b.clone()),
        };
        let cap = call.max_bytes.unwrap_or(self.settings.max_response_bytes);
        let secs = timeout.as_secs_f64();
        let work = async {
            let mut resp = rb.send().await.map_err(|e| transport(vendor, &e, secs))?;
            if let Some(e) = refused_redirect(vendor, &resp) {
                return Err(e);
            }
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            if resp.content_length().is_some_and(|l| l as usize > cap) {
                return Err(too_large(vendor, cap));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| transport(vendor, &e, secs))?
            {
                if body.len() + chunk.len() > cap {
                    return Err(too_large(vendor, cap));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Reply {
                status,
                headers,
                body,
            })
        };
        tokio::select! {
            r = work => r,
            _ = ctx.cancel.cancelled() => Err(ActionError::cancelled()),
        }
    }

    /// Sends `call` and turns a non-2xx status into its classified error.
    pub async fn send_ok(
        &self,
        ctx: &ActionContext,
        vendor: &str,
        call: &Call,
        message_of: fn(&Value) -> Option<String>,
    ) -> Result<Reply, ActionError> {
        let r = self.send(ctx, vendor, call).await?;
        if r.is_success() {
            Ok(r)
        } else {
            Err(r.error(vendor, message_of))
        }
    }

    /// A polling schedule: `poll_initial`, doubling up to `poll_max`.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            next: self.settings.poll_initial,
            max: self.settings.poll_max.max(self.settings.poll_initial),
        }
    }
}

/// The error for a redirect the policy did not follow (another origin for a call with
/// credentials, or https to http); `None` for any other response.
fn refused_redirect(vendor: &str, resp: &reqwest::Response) -> Option<ActionError> {
    if !resp.status().is_redirection() {
        return None;
    }
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    let next = resp.url().join(location).ok()?;
    let from = resp.url();
    let reason = if from.scheme() == "https" && next.scheme() != "https" {
        "from https to http"
    } else if from.origin() != next.origin() {
        "to another origin, with credentials or a body"
    } else {
        return None;
    };
    Some(ActionError::permanent(format!(
        "{vendor} answered {} with a redirect to {}; PAO does not follow a redirect {reason}",
        resp.status().as_u16(),
        next.origin().ascii_serialization()
    )))
}

fn too_large(vendor: &str, cap: usize) -> ActionError {
    ActionError::permanent(format!(
        "the response of {vendor} is larger than the {cap} bytes allowed"
    ))
}

fn transport(vendor: &str, e: &reqwest::Error, secs: f64) -> ActionError {
    if e.is_timeout() {
        ActionError::retryable(format!("{vendor} did not answer within {secs:.1}s"))
    } else if e.is_connect() {
        ActionError::retryable(format!("cannot connect to {vendor}"))
    } else if e.is_builder() {
        ActionError::permanent(format!("invalid request to {vendor}: bad URL or header"))
    } else {
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        let mut detail = String::new();
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        ActionError::retryable(format!("the call to {vendor} failed: {detail}"))
    }
}

/// Waits between polls, doubling the delay, honouring cancellation.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    pub next: Duration,
    pub max: Duration,
}

impl Backoff {
    pub async fn wait(&mut self, ctx: &ActionContext) -> Result<(), ActionError> {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = ctx.cancel.cancelled() => Err(ActionError::cancelled()),
        }
    }
}

/// Reads a secret by name and registers its value for redaction.
pub(crate) async fn secret(ctx: &ActionContext, name: &str) -> Result<String, ActionError> {
    match ctx.secrets.get(name).await {
        Ok(v) => {
            ctx.log.add_secret(&v);
            Ok(v)
        }
        Err(e @ SecretError::Unavailable(_)) => Err(ActionError::retryable(e.to_string())),
        Err(e) => Err(ActionError::permanent(e.to_string())),
    }
}

/// Last line of defence: no error message leaves an action with a known secret in it, in any
/// form the run's [`pao_core::redact::Redactor`] recognises.
pub(crate) fn redacted<T>(
    ctx: &ActionContext,
    r: Result<T, ActionError>,
) -> Result<T, ActionError> {
    r.map_err(|mut e| {
        e.message = ctx.log.redact(&e.message);
        e
    })
}

/// A path segment, percent-encoded.
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Joins a base URL and a path.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// The output of a dry run: the calls the action would make.
pub(crate) fn dry_run(
    ctx: &ActionContext,
    calls: &[&Call],
    note: &str,
) -> pao_core::action::ActionOutput {
    let described: Vec<Value> = calls.iter().map(|c| c.describe(ctx)).collect();
    pao_core::action::ActionOutput {
        result: json!({"dry_run": true, "requests": described, "note": note}),
        rollback_state: Value::Null,
    }
}
