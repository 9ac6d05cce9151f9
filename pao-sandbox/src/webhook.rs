//! A webhook receiver that verifies PAO's signature the way a receiver should: recompute
//! `HMAC-SHA256(secret, "<X-PAO-Timestamp>.<raw body>")`, compare it in constant time with the
//! hex after `sha256=` in `X-PAO-Signature`, and refuse timestamps more than five minutes
//! away. A delivery whose `Idempotency-Key` was seen before is acknowledged without a second
//! effect. Any path is accepted (`POST /<anything>`).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::FakeServer;
use crate::faults::{self, Faults, header_str, json};

/// Largest clock difference accepted between sender and receiver.
pub const MAX_SKEW_SECS: i64 = 300;

/// One accepted delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Request path.
    pub path: String,
    /// Parsed body.
    pub body: Value,
    /// `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// Extra headers seen (`X-PAO-Event` and the like), as (name, value).
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Inner {
    deliveries: Vec<Delivery>,
    rejected: usize,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    secret: String,
}

/// The running receiver.
#[derive(Debug)]
pub struct WebhookFake {
    server: FakeServer,
    inner: Arc<Mutex<Inner>>,
    /// Fault injection and request log.
    pub faults: Faults,
    /// The HMAC key the receiver shares with PAO.
    pub secret: String,
}

/// The receiver's error body.
pub fn error_body(_status: u16, message: &str) -> Value {
    json!({"error": message})
}

/// Verifies a PAO webhook signature: what a receiver runs on each delivery.
pub fn verify_signature(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

impl WebhookFake {
    /// Starts a receiver that shares `secret` with PAO.
    pub async fn start(secret: &str) -> std::io::Result<WebhookFake> {
        let faults = Faults::default();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared {
            inner: inner.clone(),
            secret: secret.to_string(),
        };
        let router = Router::new()
            .route("/{*path}", post(receive))
            .with_state(shared);
        let router = faults::layer(router, &faults, error_body, "application/json");
        let server = FakeServer::start(router).await?;
        Ok(WebhookFake {
            server,
            inner,
            faults,
            secret: secret.to_string(),
        })
    }

    /// Base URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Accepted deliveries (duplicates by idempotency key excluded).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner
            .lock()
            .map(|i| i.deliveries.clone())
            .unwrap_or_default()
    }

    /// Deliveries refused for a bad or missing signature.
    pub fn rejected(&self) -> usize {
        self.inner.lock().map(|i| i.rejected).unwrap_or(0)
    }
}

async fn receive(State(s): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let headers: HeaderMap = req.headers().clone();
    let Ok(body) = axum::body::to_bytes(req.into_body(), 1 << 20).await else {
        return json(413, error_body(413, "payload too large"));
    };
    let ts = header_str(&headers, "x-pao-timestamp").unwrap_or_default();
    let sig = header_str(&headers, "x-pao-signature").unwrap_or_default();
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= MAX_SKEW_SECS);
    if !fresh || !verify_signature(&s.secret, &ts, &body, &sig) {
        if let Ok(mut i) = s.inner.lock() {
            i.rejected += 1;
        }
        return json(401, error_body(401, "invalid signature"));
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return json(400, error_body(400, "body is not JSON"));
    };
    let key = header_str(&headers, "idempotency-key");
    let extra = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-") && !n.as_str().starts_with("x-pao-sig"))
        .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    let dup = key.is_some() && i.deliveries.iter().any(|d| d.idempotency_key == key);
    if !dup {
        i.deliveries.push(Delivery {
            path,
            body: parsed,
            idempotency_key: key,
            headers: extra,
        });
    }
    json(200, json!({"received": true, "duplicate": dup}))
}
