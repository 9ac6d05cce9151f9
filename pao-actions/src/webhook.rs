//! `webhook`: POST a JSON payload, signed. With a `secret`, each delivery carries
//! `X-PAO-Timestamp: <unix seconds>` and `X-PAO-Signature: sha256=<hex HMAC-SHA256 of
//! "<timestamp>.<body>">`; it always carries `Idempotency-Key` (the same on every attempt) so a
//! receiver can drop redeliveries. Any 2xx is success. See docs/actions.md for how receivers
//! verify the signature.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeMap;

use crate::http::{Call, Http, dry_run, generic_message, redacted};

/// The `webhook` action.
#[derive(Debug, Clone)]
pub struct WebhookAction {
    http: Http,
}

impl WebhookAction {
    pub(crate) fn new(http: Http) -> WebhookAction {
        WebhookAction { http }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    secret: Option<String>,
}

/// The signature header value of `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.to_string()))
        .unwrap_or_else(|| "webhook".into())
}

impl WebhookAction {
    async fn run(&self, ctx: &ActionContext, input: &Value) -> Result<ActionOutput, ActionError> {
        let cfg: Config = serde_json::from_value(input.clone())
            .map_err(|e| ActionError::permanent(format!("webhook config: {e}")))?;
        if let Some(s) = &cfg.secret {
            ctx.log.add_secret(s);
        }
        let body = cfg.body.clone().unwrap_or_else(|| {
            json!({
                "event": "pao.action",
                "request_id": ctx.request_id,
                "action_id": ctx.action_id,
                "idempotency_key": ctx.idempotency_key.as_str(),
            })
        });
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| ActionError::permanent(format!("webhook body: {e}")))?;
        let ts = chrono::Utc::now().timestamp();
        let mut call = Call::new(reqwest::Method::POST, &cfg.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", ctx.idempotency_key.as_str())
            .header("X-PAO-Timestamp", ts.to_string());
        if let Some(s) = &cfg.secret {
            call = call.header("X-PAO-Signature", signature(s, ts, &bytes));
        }
        for (k, v) in &cfg.headers {
            call = call.header(k, v.clone());
        }
        // The signature covers these exact bytes: send them as they are.
        call.body = crate::http::CallBody::Bytes(bytes);
        if ctx.dry_run {
            return Ok(dry_run(ctx, &[&call], "the webhook would be delivered"));
        }
        let vendor = host(&cfg.url);
        let reply = self
            .http
            .send_ok(ctx, &vendor, &call, generic_message)
            .await?;
        ctx.log
            .info(&format!("webhook delivered to {vendor}: {}", reply.status));
        Ok(ActionOutput {
            result: json!({"status": reply.status, "body": reply.json_or_text()}),
            rollback_state: Value::Null,
        })
    }
}

#[async_trait]
impl Action for WebhookAction {
    // `execute` describes its calls without making them when `ctx.dry_run` is set.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "webhook".into(),
            config_schema: crate::schema::config_schema("WebhookConfig"),
            output_schema: json!({
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "integer"}, "body": {}}
            }),
            supports_rollback: false,
            sample_output: json!({"status": 200, "body": {"received": true}}),
        }
    }

    fn target(&self, input: &Value) -> String {
        input
            .get("url")
            .and_then(Value::as_str)
            .map(host)
            .unwrap_or_else(|| "webhook".into())
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        redacted(ctx, self.run(ctx, input).await)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac k
        let s = super::signature("k", 1_700_000_000, br#"{"a":1}"#);
        assert!(s.starts_with("sha256="));
        assert_eq!(s.len(), "sha256=".len() + 64);
        assert_eq!(s, super::signature("k", 1_700_000_000, br#"{"a":1}"#));
        assert_ne!(s, super::signature("k", 1_700_000_001, br#"{"a":1}"#));
    }
}
