//! `plugin:slack-notify`: posts a message to a Slack channel with `chat.postMessage`, and
//! deletes it on rollback (`chat.delete`).
//!
//! Operator setup: grant host `slack.com` and secret `slack_bot_token` (a bot token with
//! `chat:write`); setting `api_url` overrides `https://slack.com/api` (the sandbox fake).
//! Slack has no idempotency key, so when the key-value store is granted the plugin records
//! the message it posted under the action's idempotency key and a retry returns that message
//! instead of posting twice.

use pao_plugins_sdk::{Context, Descriptor, Error, Host, Plugin, Violation, json};
use serde::{Deserialize, Serialize};

/// The plugin.
pub struct SlackNotify;

/// The catalog item's `config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// `#channel` name or channel id.
    pub channel: String,
    /// Message text (Slack mrkdwn).
    pub text: String,
    /// Reply in a thread.
    #[serde(default)]
    pub thread_ts: Option<String>,
}

/// What the catalog item reads as `result`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Output {
    /// The channel id Slack posted to.
    pub channel: String,
    /// The message's timestamp (its id).
    pub ts: String,
    /// Whether this was a dry run (nothing posted).
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Deserialize)]
struct SlackReply {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

const SECRET: &str = "slack_bot_token";

fn api(ctx: &Context, method: &str) -> String {
    let base = ctx.setting("api_url").unwrap_or("https://slack.com/api");
    format!("{}/{method}", base.trim_end_matches('/'))
}

/// Sends one Web API call and checks Slack's `ok` flag.
fn call(
    host: &Host,
    ctx: &Context,
    method: &str,
    body: serde_json::Value,
) -> Result<SlackReply, Error> {
    let resp = host
        .post(&api(ctx, method))
        .bearer_secret(SECRET)
        .json(&body)
        .send()?;
    if !resp.is_success() {
        return Err(Error::from_status(&format!("Slack {method}"), &resp));
    }
    let reply: SlackReply = resp.json_body()?;
    if reply.ok {
        return Ok(reply);
    }
    let code = reply.error.unwrap_or_else(|| "unknown_error".to_string());
    Err(match code.as_str() {
        "ratelimited" | "internal_error" | "service_unavailable" | "fatal_error" => {
            Error::retryable(format!("Slack {method}: {code}"))
        }
        "invalid_auth" | "not_authed" | "token_revoked" | "account_inactive" => Error::failed(
            format!("Slack {method}: {code}: check the `{SECRET}` secret"),
        ),
        _ => Error::failed(format!("Slack {method}: {code}")),
    })
}

impl Plugin for SlackNotify {
    type Input = Input;
    type Output = Output;

    fn describe() -> Descriptor {
        Descriptor::new("slack-notify", env!("CARGO_PKG_VERSION"))
            .input_schema(json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["channel", "text"],
                "properties": {
                    "channel": { "type": "string", "minLength": 1, "description": "#channel or channel id" },
                    "text": { "type": "string", "minLength": 1, "description": "Message text (mrkdwn)" },
                    "thread_ts": { "type": "string", "description": "Reply in this thread" }
                }
            }))
            .output_schema(json!({
                "type": "object",
                "required": ["channel", "ts"],
                "properties": {
                    "channel": { "type": "string" },
                    "ts": { "type": "string" },
                    "dry_run": { "type": "boolean" }
                }
            }))
            .sample_output(json!({ "channel": "C0123456789", "ts": "1700000000.000100", "dry_run": false }))
            .http_host("slack.com")
            .secret(SECRET)
            .kv()
            .rollback()
    }

    fn validate(input: &Input) -> Result<(), Vec<Violation>> {
        let c = input.channel.trim();
        // A template (`${{ ... }}`) is only known at run time.
        let templated = c.contains("${{");
        let looks_right = c.starts_with(['#', 'C', 'G', 'D']);
        if !templated && !looks_right {
            return Err(vec![Violation::new(
                "/channel",
                "a channel is `#name` or a channel id (C…, G…, D…)",
            )]);
        }
        Ok(())
    }

    fn execute(host: &Host, ctx: &Context, input: Input) -> Result<Output, Error> {
        if ctx.dry_run {
            host.info(&format!("dry run: would post to {}", input.channel));
            return Ok(Output {
                channel: input.channel,
                ts: "dry-run".to_string(),
                dry_run: true,
            });
        }
        let key = format!("posted:{}", ctx.idempotency_key);
        // The store is optional: without it a retry after a lost reply may post twice.
        if let Ok(Some(done)) = host.kv_get(&key)
            && let Ok(out) = serde_json::from_str::<Output>(&done)
        {
            host.info(&format!(
                "already posted to {} (ts {}), not posting again",
                out.channel, out.ts
            ));
            return Ok(out);
        }
        let mut body = json!({ "channel": input.channel, "text": input.text });
        if let Some(t) = &input.thread_ts {
            body["thread_ts"] = json!(t);
        }
        let reply = call(host, ctx, "chat.postMessage", body)?;
        let out = Output {
            channel: reply.channel.unwrap_or(input.channel),
            ts: reply
                .ts
                .ok_or_else(|| Error::failed("Slack chat.postMessage: no `ts` in the reply"))?,
            dry_run: false,
        };
        if let Ok(text) = serde_json::to_string(&out) {
            let _ = host.kv_set(&key, &text);
        }
        host.info(&format!("posted to {} (ts {})", out.channel, out.ts));
        Ok(out)
    }

    fn rollback(host: &Host, ctx: &Context, _input: Input, output: Output) -> Result<(), Error> {
        if output.dry_run || ctx.dry_run {
            return Ok(());
        }
        match call(
            host,
            ctx,
            "chat.delete",
            json!({ "channel": output.channel, "ts": output.ts }),
        ) {
            Ok(_) => {}
            // Already gone: the rollback's effect is there.
            Err(Error::Failed(m)) if m.ends_with("message_not_found") => {}
            Err(e) => return Err(e),
        }
        let _ = host.kv_delete(&format!("posted:{}", ctx.idempotency_key));
        host.info(&format!(
            "deleted message {} in {}",
            output.ts, output.channel
        ));
        Ok(())
    }
}

pao_plugins_sdk::export_action!(SlackNotify);

#[cfg(test)]
mod tests {
    use super::*;
    use pao_plugins_sdk::{HttpResponse, MockHost};

    fn ok_reply() -> serde_json::Value {
        json!({ "ok": true, "channel": "C0PLATFORM", "ts": "1700000000.000200" })
    }

    #[test]
    fn posts_with_the_bot_token_and_returns_the_message_id() {
        let mock = MockHost::new().secret(SECRET, "xoxb-test").on_json(
            "POST",
            "https://slack.com/api/chat.postMessage",
            200,
            ok_reply(),
        );
        let out = mock
            .execute::<SlackNotify>(
                &Context::test(),
                json!({ "channel": "#platform", "text": "hi" }),
            )
            .unwrap();
        assert_eq!(
            out,
            json!({ "channel": "C0PLATFORM", "ts": "1700000000.000200", "dry_run": false })
        );
        let req = &mock.requests()[0];
        assert_eq!(req.header("authorization"), Some("Bearer xoxb-test"));
        assert_eq!(req.json(), json!({ "channel": "#platform", "text": "hi" }));
    }

    #[test]
    fn a_retry_of_the_same_action_does_not_post_twice() {
        let mock = MockHost::new().secret(SECRET, "xoxb-test").on_json(
            "POST",
            "https://slack.com/api/chat.postMessage",
            200,
            ok_reply(),
        );
        let input = json!({ "channel": "#platform", "text": "hi" });
        let first = mock
            .execute::<SlackNotify>(&Context::test(), input.clone())
            .unwrap();
        let mut retry = Context::test();
        retry.attempt = 2;
        let second = mock.execute::<SlackNotify>(&retry, input).unwrap();
        assert_eq!(first, second);
        assert_eq!(mock.requests().len(), 1);
    }

    #[test]
    fn slack_errors_are_classified() {
        let mock = MockHost::new().secret(SECRET, "bad").on_json(
            "POST",
            "https://slack.com/api/chat.postMessage",
            200,
            json!({ "ok": false, "error": "invalid_auth" }),
        );
        let e = mock
            .execute::<SlackNotify>(&Context::test(), json!({ "channel": "#x", "text": "hi" }))
            .unwrap_err();
        assert!(
            matches!(&e, Error::Failed(m) if m.contains("invalid_auth")),
            "{e:?}"
        );

        let limited = MockHost::new()
            .secret(SECRET, "t")
            .on("POST", "https://slack.com/", |_| {
                let mut r = HttpResponse::json(429, json!({ "ok": false, "error": "ratelimited" }));
                r.headers.push(("retry-after".to_string(), "3".to_string()));
                Ok(r)
            });
        let e = limited
            .execute::<SlackNotify>(&Context::test(), json!({ "channel": "#x", "text": "hi" }))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Retryable {
                    retry_after_ms: Some(3000),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn dry_run_sends_nothing() {
        let mock = MockHost::new();
        let mut ctx = Context::test();
        ctx.dry_run = true;
        let out = mock
            .execute::<SlackNotify>(&ctx, json!({ "channel": "#x", "text": "hi" }))
            .unwrap();
        assert_eq!(out["dry_run"], true);
        assert!(mock.requests().is_empty());
    }

    #[test]
    fn rollback_deletes_the_message() {
        let mock = MockHost::new().secret(SECRET, "t").on_json(
            "POST",
            "https://hooks.test/api/chat.delete",
            200,
            json!({ "ok": true }),
        );
        let ctx = Context::test().with_setting("api_url", "https://hooks.test/api/");
        mock.rollback::<SlackNotify>(
            &ctx,
            json!({ "channel": "#x", "text": "hi" }),
            json!({ "channel": "C1", "ts": "1.2" }),
        )
        .unwrap();
        assert_eq!(
            mock.requests()[0].json(),
            json!({ "channel": "C1", "ts": "1.2" })
        );
    }

    #[test]
    fn bad_channels_and_unknown_fields_are_refused() {
        let mock = MockHost::new();
        let e = mock
            .validate::<SlackNotify>(json!({ "channel": "platform", "text": "x" }))
            .unwrap_err();
        assert!(matches!(&e, Error::InvalidInput(v) if v[0].pointer == "/channel"));
        assert!(
            mock.validate::<SlackNotify>(json!({ "channel": "#p", "text": "x", "colour": 1 }))
                .is_err()
        );
    }
}
