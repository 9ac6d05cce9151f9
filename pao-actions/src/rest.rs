//! `rest`: one HTTP call to any JSON API. Method, URL, query, headers, a JSON or form body;
//! auth none / basic / bearer / API key (header or query) / OAuth 2.0 client credentials (the
//! token is cached until shortly before it expires and fetched again on a 401); the statuses
//! that count as success; values extracted from the JSON response with JSONPath (RFC 9535);
//! the attempt's idempotency key in a header of your choice; a response size cap; and optional
//! polling of a status URL until a condition over `result` holds (APIs that answer 202). The
//! status URL must be on the origin of `url`: it may come from the upstream's own answer, and
//! is called with the action's credentials.
//!
//! Result: `{status, headers, body, extract}` (with polling: of the last poll response, whose
//! `extract` is computed with the same paths).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use pao_core::vars::{Context, Engine, Scope};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{Call, CallBody, Http, Reply, dry_run, generic_message, redacted};

/// The `rest` action.
#[derive(Debug)]
pub struct RestAction {
    http: Http,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl RestAction {
    pub(crate) fn new(http: Http) -> RestAction {
        RestAction {
            http,
            tokens: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    method: Option<String>,
    url: String,
    #[serde(default)]
    query: BTreeMap<String, Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    form: Option<BTreeMap<String, String>>,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    success_status: Option<Vec<Value>>,
    #[serde(default)]
    extract: BTreeMap<String, String>,
    #[serde(default)]
    idempotency_header: Option<String>,
    #[serde(default)]
    max_response_bytes: Option<usize>,
    #[serde(default)]
    poll: Option<Poll>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Auth {
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    ApiKey {
        name: String,
        value: String,
        #[serde(default, rename = "in")]
        location: Option<String>,
    },
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: String,
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        audience: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Poll {
    #[serde(default)]
    url: Option<String>,
    until: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    /// Added by the engine: values of the scopes `url` and `until` read.
    #[serde(default)]
    scopes: Map<String, Value>,
}

fn host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_else(|| "rest".into())
}

/// Whether two absolute URLs have the same scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin().is_tuple() && a.origin() == b.origin(),
        _ => false,
    }
}

fn success(list: &Option<Vec<Value>>, status: u16) -> bool {
    match list {
        None => (200..300).contains(&status),
        Some(l) => l.iter().any(|v| match v {
            Value::Number(n) => n.as_u64() == Some(u64::from(status)),
            Value::String(s) => {
                s.len() == 3 && s.ends_with("xx") && s.as_bytes()[0] == b'0' + (status / 100) as u8
            }
            _ => false,
        }),
    }
}

fn query_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn extract(paths: &BTreeMap<String, String>, body: &Value) -> Result<Value, ActionError> {
    let mut out = Map::new();
    for (name, path) in paths {
        let p = serde_json_path::JsonPath::parse(path).map_err(|e| {
            ActionError::permanent(format!("extract.{name}: `{path}` is not JSONPath: {e}"))
        })?;
        let nodes = p.query(body).all();
        let v = match nodes.len() {
            0 => Value::Null,
            1 => nodes[0].clone(),
            _ => Value::Array(nodes.into_iter().cloned().collect()),
        };
        out.insert(name.clone(), v);
    }
    Ok(Value::Object(out))
}

impl RestAction {
    fn cache_key(
        token_url: &str,
        client_id: &str,
        scopes: &[String],
        aud: &Option<String>,
        secret: &str,
    ) -> String {
        let digest =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(secret));
        format!(
            "{token_url}|{client_id}|{}|{}|{}",
            scopes.join(" "),
            aud.as_deref().unwrap_or(""),
            hex::encode(digest)
        )
    }

    async fn oauth_token(
        &self,
        ctx: &ActionContext,
        auth: &Auth,
        fresh: bool,
    ) -> Result<String, ActionError> {
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scopes,
            audience,
        } = auth
        else {
            return Err(ActionError::permanent("not an OAuth 2.0 auth"));
        };
        let key = Self::cache_key(token_url, client_id, scopes, audience, client_secret);
        if !fresh
            && let Ok(cache) = self.tokens.lock()
            && let Some((t, exp)) = cache.get(&key)
            && *exp > Instant::now()
        {
            ctx.log.add_secret(t);
            return Ok(t.clone());
        }
        let mut form = vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("client_id".to_string(), client_id.clone()),
            ("client_secret".to_string(), client_secret.clone()),
        ];
        if !scopes.is_empty() {
            form.push(("scope".into(), scopes.join(" ")));
        }
        if let Some(a) = audience {
            form.push(("audience".into(), a.clone()));
        }
        let mut call = Call::new(reqwest::Method::POST, token_url.clone());
        call.body = CallBody::Form(form);
        let vendor = format!("token endpoint {}", host(token_url));
        let reply = self
            .http
            .send_ok(ctx, &vendor, &call, generic_message)
            .await?;
        let v = reply.json(&vendor)?;
        let Some(token) = v.get("access_token").and_then(Value::as_str) else {
            return Err(ActionError::permanent(format!(
                "{vendor} answered without access_token"
            )));
        };
        ctx.log.add_secret(token);
        let ttl = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
        // Renew early (30 s, or half the lifetime of a short-lived token) so a token never
        // expires in flight.
        let life = Duration::from_secs(ttl);
        let exp = Instant::now() + life.saturating_sub(Duration::from_secs(30).min(life / 2));
        if let Ok(mut cache) = self.tokens.lock() {
            cache.insert(key, (token.to_string(), exp));
        }
        Ok(token.to_string())
    }

    /// Builds the call; `token` is the OAuth token when auth is OAuth 2.0 (None in a dry run).
    fn build(
        &self,
        cfg: &Config,
        url: &str,
        method: reqwest::Method,
        with_body: bool,
        token: Option<&str>,
        ctx: &ActionContext,
    ) -> Result<Call, ActionError> {
        // Polls of the action's own URL keep its query; a separate status URL has its own.
        let same_url = url == cfg.url;
        let mut url = reqwest::Url::parse(url).map_err(|e| {
            ActionError::permanent(format!(
                "url `{}` is not an absolute URL: {e}",
                ctx.log.redact(url)
            ))
        })?;
        if !cfg.query.is_empty() && (with_body || same_url) {
            let mut q = url.query_pairs_mut();
            for (k, v) in &cfg.query {
                q.append_pair(k, &query_value(v));
            }
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        match &cfg.auth {
            None | Some(Auth::None) => {}
            Some(Auth::Basic { username, password }) => {
                let b = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                ctx.log.add_secret(&b);
                headers.push(("Authorization".into(), format!("Basic {b}")));
            }
            Some(Auth::Bearer { token }) => {
                headers.push(("Authorization".into(), format!("Bearer {token}")))
            }
            Some(Auth::ApiKey {
                name,
                value,
                location,
            }) => {
                if location.as_deref() == Some("query") {
                    url.query_pairs_mut().append_pair(name, value);
                } else {
                    headers.push((name.clone(), value.clone()));
                }
            }
            Some(Auth::OAuth2 { .. }) => headers.push((
                "Authorization".into(),
                format!(
                    "Bearer {}",
                    token.unwrap_or("[token from the token endpoint]")
                ),
            )),
        }
        for (k, v) in &cfg.headers {
            headers.push((k.clone(), v.clone()));
        }
        if with_body && let Some(h) = &cfg.idempotency_header {
            headers.push((h.clone(), ctx.idempotency_key.as_str().to_string()));
        }
        let body = match (with_body, &cfg.body, &cfg.form) {
            (false, _, _) => CallBody::None,
            (true, Some(b), _) => CallBody::Json(b.clone()),
            (true, None, Some(f)) => {
                CallBody::Form(f.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            _ => CallBody::None,
        };
        Ok(Call {
            method,
            url: url.to_string(),
            headers,
            body,
            max_bytes: Some(
                cfg.max_response_bytes
                    .unwrap_or(self.http.settings.max_response_bytes),
            ),
        })
    }

    /// Sends with auth; a 401 with a cached OAuth token fetches a new one and tries once more.
    async fn call(
        &self,
        ctx: &ActionContext,
        cfg: &Config,
        url: &str,
        method: reqwest::Method,
        with_body: bool,
    ) -> Result<Reply, ActionError> {
        let vendor = host(url);
        let oauth = matches!(cfg.auth, Some(Auth::OAuth2 { .. }));
        let token = match (&cfg.auth, oauth) {
            (Some(a), true) => Some(self.oauth_token(ctx, a, false).await?),
            _ => None,
        };
        let call = self.build(cfg, url, method.clone(), with_body, token.as_deref(), ctx)?;
        let reply = self.http.send(ctx, &vendor, &call).await?;
        if reply.status == 401
            && oauth
            && let Some(a) = &cfg.auth
        {
            ctx.log
                .info("401 with a cached OAuth token: fetching a new token and trying again");
            let token = self.oauth_token(ctx, a, true).await?;
            let call = self.build(cfg, url, method, with_body, Some(&token), ctx)?;
            return self.http.send(ctx, &vendor, &call).await;
        }
        Ok(reply)
    }

    fn result_of(&self, cfg: &Config, reply: &Reply, vendor: &str) -> Result<Value, ActionError> {
        let is_json = reply
            .headers
            .get("content-type")
            .is_some_and(|c| c.contains("json"));
        let body = if is_json {
            reply.json(vendor)?
        } else {
            reply.json_or_text()
        };
        let extracted = extract(&cfg.extract, &body)?;
        Ok(
            json!({"status": reply.status, "headers": reply.headers, "body": body, "extract": extracted}),
        )
    }

    async fn run(&self, ctx: &ActionContext, input: &Value) -> Result<ActionOutput, ActionError> {
        let cfg: Config = serde_json::from_value(input.clone())
            .map_err(|e| ActionError::permanent(format!("rest config: {e}")))?;
        match &cfg.auth {
            Some(Auth::Basic { password, .. }) => ctx.log.add_secret(password),
            Some(Auth::Bearer { token }) => ctx.log.add_secret(token),
            Some(Auth::ApiKey { value, .. }) => ctx.log.add_secret(value),
            Some(Auth::OAuth2 { client_secret, .. }) => ctx.log.add_secret(client_secret),
            _ => {}
        }
        if cfg.body.is_some() && cfg.form.is_some() {
            return Err(ActionError::permanent(
                "rest config: body and form cannot be used together",
            ));
        }
        let method = reqwest::Method::from_bytes(cfg.method.as_deref().unwrap_or("GET").as_bytes())
            .map_err(|_| ActionError::permanent("rest config: invalid method"))?;
        if ctx.dry_run {
            let call = self.build(&cfg, &cfg.url, method, true, None, ctx)?;
            let note = if cfg.poll.is_some() {
                "then polls until the condition holds"
            } else {
                "one call"
            };
            return Ok(dry_run(ctx, &[&call], note));
        }
        let vendor = host(&cfg.url);
        let reply = self.call(ctx, &cfg, &cfg.url, method, true).await?;
        if !success(&cfg.success_status, reply.status) {
            return Err(reply.error(&vendor, generic_message));
        }
        let mut result = self.result_of(&cfg, &reply, &vendor)?;
        ctx.log.info(&format!("{vendor} answered {}", reply.status));
        if let Some(poll) = &cfg.poll {
            result = self.poll(ctx, &cfg, poll, result).await?;
        }
        Ok(ActionOutput {
            rollback_state: json!({"status": result["status"], "extract": result["extract"]}),
            result,
        })
    }

    async fn poll(
        &self,
        ctx: &ActionContext,
        cfg: &Config,
        poll: &Poll,
        first: Value,
    ) -> Result<Value, ActionError> {
        let engine = Engine::new();
        let until = engine
            .compile_expression(&poll.until)
            .map_err(|e| ActionError::permanent(format!("poll.until: {}", e.message())))?;
        let scopes: Vec<(Scope, &Value)> = poll
            .scopes
            .iter()
            .filter_map(|(k, v)| Some((Scope::from_name(k)?, v)))
            .collect();
        let holds = |result: &Value| -> Result<bool, ActionError> {
            let mut c = Context::new();
            for (s, v) in &scopes {
                c.set(*s, v);
            }
            c.set(Scope::Result, result);
            until.eval_bool(&c).map_err(|e| {
                ActionError::permanent(format!("poll.until `{}`: {}", poll.until, e.message()))
            })
        };
        let url = match &poll.url {
            None => cfg.url.clone(),
            Some(t) => {
                let tpl = engine
                    .compile_url(t)
                    .map_err(|e| ActionError::permanent(format!("poll.url: {}", e.message())))?;
                let mut c = Context::new();
                for (s, v) in &scopes {
                    c.set(*s, v);
                }
                c.set(Scope::Result, &first);
                tpl.render(&c)
                    .map_err(|e| ActionError::permanent(format!("poll.url: {}", e.message())))?
            }
        };
        if !same_origin(&url, &cfg.url) {
            return Err(ActionError::permanent(format!(
                "poll.url `{}` is not on the origin of url ({}): PAO polls only the origin the \
                 action calls, so that its credentials and the response stay there",
                ctx.log.redact(&url),
                host(&cfg.url)
            )));
        }
        let interval = poll
            .interval
            .as_deref()
            .and_then(crate::config::parse)
            .unwrap_or(Duration::from_secs(10))
            .min(self.http.settings.poll_max);
        let timeout = poll.timeout.as_deref().and_then(crate::config::parse);
        let started = Instant::now();
        let vendor = host(&url);
        let mut result = first;
        let mut polls = 0u32;
        loop {
            if holds(&result)? {
                ctx.log
                    .info(&format!("poll condition holds after {polls} poll(s)"));
                return Ok(result);
            }
            if timeout.is_some_and(|t| started.elapsed() >= t) {
                return Err(ActionError::retryable(format!(
                    "poll condition `{}` still false after {polls} poll(s)",
                    poll.until
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = ctx.cancel.cancelled() => return Err(ActionError::cancelled()),
            }
            let reply = self
                .call(ctx, cfg, &url, reqwest::Method::GET, false)
                .await?;
            polls += 1;
            if !reply.is_success() {
                return Err(reply.error(&vendor, generic_message));
            }
            result = self.result_of(cfg, &reply, &vendor)?;
        }
    }
}

#[async_trait]
impl Action for RestAction {
    // `execute` describes its calls without making them when `ctx.dry_run` is set.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "rest".into(),
            config_schema: crate::schema::config_schema("RestConfig"),
            output_schema: json!({
                "type": "object",
                "required": ["status", "headers", "body", "extract"],
                "properties": {
                    "status": {"type": "integer"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {},
                    "extract": {"type": "object"}
                }
            }),
            supports_rollback: false,
            sample_output: json!({
                "status": 201,
                "headers": {"content-type": "application/json"},
                "body": {"id": "rec-000123", "fqdn": "orders-db.db.example.internal", "metadata": {"uid": "3f1c9a52-8f0e-4c1b-9d2e-5a7b6c4d3e21"}},
                "extract": {}
            }),
        }
    }

    fn target(&self, input: &Value) -> String {
        input
            .get("url")
            .and_then(Value::as_str)
            .map(host)
            .unwrap_or_else(|| "rest".into())
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
    use super::*;

    #[test]
    fn status_lists() {
        assert!(success(&None, 204));
        assert!(!success(&None, 404));
        let l = Some(vec![json!(201), json!("4xx")]);
        assert!(success(&l, 201));
        assert!(success(&l, 404));
        assert!(!success(&l, 200));
    }

    #[test]
    fn jsonpath_extracts() {
        let body = json!({"data": {"id": 7, "tags": [{"n": "a"}, {"n": "b"}]}});
        let paths: BTreeMap<String, String> = [
            ("id".to_string(), "$.data.id".to_string()),
            ("names".to_string(), "$.data.tags[*].n".to_string()),
            ("none".to_string(), "$.nope".to_string()),
        ]
        .into();
        let v = extract(&paths, &body).unwrap();
        assert_eq!(v, json!({"id": 7, "names": ["a", "b"], "none": null}));
    }
}
