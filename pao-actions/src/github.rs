//! `github_workflow`: dispatch a GitHub Actions workflow (`workflow_dispatch`) and follow the
//! run it created. GitHub answers a dispatch with 204 and no run id, so PAO passes a
//! correlation input (the attempt's idempotency key, in the input named by the instance's
//! `correlation_input`, default `pao_correlation_id`) that the workflow puts in its `run-name`;
//! PAO then lists the workflow's runs until one whose title carries it appears (it takes a few
//! seconds). Before dispatching, the same search runs, so a re-run after a crash follows the
//! run already dispatched instead of starting a second one. With `wait` (default), the run is
//! polled to completion and anything but `success` fails the action.
//! Result: `{run_id, url, html_url, status, conclusion, artifacts}`.
//!
//! Auth: a personal access token, or a GitHub App: a JWT (RS256, signed with the app's private
//! key) buys an installation token, cached until five minutes before it expires.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::{GithubAuth, GithubInstance, pick};
use crate::http::{Call, Http, Reply, dry_run, generic_message, join, redacted, secret, seg};

/// Lookups of the dispatched run before giving up (the attempt is then retried).
const FIND_ATTEMPTS: u32 = 12;

/// The `github_workflow` action.
#[derive(Debug)]
pub struct GithubWorkflowAction {
    http: Http,
    instances: BTreeMap<String, GithubInstance>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl GithubWorkflowAction {
    pub(crate) fn new(
        http: Http,
        instances: BTreeMap<String, GithubInstance>,
    ) -> GithubWorkflowAction {
        GithubWorkflowAction {
            http,
            instances,
            tokens: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    instance: Option<String>,
    owner: String,
    repo: String,
    workflow: String,
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Value>,
    #[serde(default)]
    wait: Option<Value>,
}

#[derive(serde::Serialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

/// Turns GitHub's primary rate limit (403 with `x-ratelimit-remaining: 0`) into a retryable
/// error that waits until `x-ratelimit-reset`; other statuses as usual.
fn gh_error(r: &Reply, vendor: &str) -> ActionError {
    if r.status == 403 && r.headers.get("x-ratelimit-remaining").map(String::as_str) == Some("0") {
        let wait = r
            .headers
            .get("x-ratelimit-reset")
            .and_then(|s| s.parse::<i64>().ok())
            .map(|reset| (reset - chrono::Utc::now().timestamp()).max(1) as u64)
            .unwrap_or(60);
        return ActionError::retryable(format!("{vendor}: API rate limit exceeded"))
            .with_retry_after(Duration::from_secs(wait));
    }
    r.error(vendor, generic_message)
}

struct Site<'a> {
    name: &'a str,
    inst: &'a GithubInstance,
    token: String,
}

impl Site<'_> {
    fn call(&self, method: reqwest::Method, path: &str) -> Call {
        Call::new(method, join(&self.inst.api_url, path))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    }

    fn vendor(&self) -> String {
        format!("GitHub ({})", self.name)
    }
}

fn bool_of(v: &Option<Value>) -> Result<bool, ActionError> {
    match v {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(o) => Err(ActionError::permanent(format!(
            "github_workflow config: wait must be true or false, not {o}"
        ))),
    }
}

impl GithubWorkflowAction {
    async fn app_token(
        &self,
        ctx: &ActionContext,
        inst: &GithubInstance,
        app_id: &str,
        key_secret: &str,
        installation: u64,
    ) -> Result<String, ActionError> {
        let cache_key = format!("{}|{app_id}|{installation}", inst.api_url);
        if let Ok(c) = self.tokens.lock()
            && let Some((t, exp)) = c.get(&cache_key)
            && *exp > Instant::now()
        {
            ctx.log.add_secret(t);
            return Ok(t.clone());
        }
        let pem = secret(ctx, key_secret).await?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
            ActionError::permanent(format!(
                "secret `{key_secret}` is not an RSA private key in PEM format"
            ))
        })?;
        let now = chrono::Utc::now().timestamp();
        // GitHub allows 10 minutes; back-date for clock drift as GitHub recommends.
        let claims = AppClaims {
            iat: now - 60,
            exp: now + 540,
            iss: app_id.to_string(),
        };
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .map_err(|e| ActionError::permanent(format!("cannot sign the GitHub App JWT: {e}")))?;
        ctx.log.add_secret(&jwt);
        let call = Call::new(
            reqwest::Method::POST,
            join(
                &inst.api_url,
                &format!("/app/installations/{installation}/access_tokens"),
            ),
        )
        .header("Authorization", format!("Bearer {jwt}"))
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28");
        let vendor = "GitHub App token endpoint";
        let r = self.http.send(ctx, vendor, &call).await?;
        if !r.is_success() {
            return Err(gh_error(&r, vendor));
        }
        let v = r.json(vendor)?;
        let token = v.get("token").and_then(Value::as_str).ok_or_else(|| {
            ActionError::permanent("GitHub answered an installation token request without a token")
        })?;
        ctx.log.add_secret(token);
        let ttl = v
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|e| (e.timestamp() - now - 300).max(1) as u64)
            .unwrap_or(600);
        if let Ok(mut c) = self.tokens.lock() {
            c.insert(
                cache_key,
                (token.to_string(), Instant::now() + Duration::from_secs(ttl)),
            );
        }
        Ok(token.to_string())
    }

    async fn site<'a>(
        &'a self,
        ctx: &ActionContext,
        name: Option<&str>,
    ) -> Result<Site<'a>, ActionError> {
        let (name, inst) =
            pick("GitHub", &self.instances, name, |i| i.default).map_err(ActionError::permanent)?;
        let token = if ctx.dry_run {
            "[REDACTED]".into()
        } else {
            match &inst.auth {
                GithubAuth::Pat { token_secret } => secret(ctx, token_secret).await?,
                GithubAuth::App {
                    app_id,
                    private_key_secret,
                    installation_id,
                } => {
                    self.app_token(ctx, inst, app_id, private_key_secret, *installation_id)
                        .await?
                }
            }
        };
        Ok(Site { name, inst, token })
    }

    async fn get_json(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        path: &str,
    ) -> Result<Value, ActionError> {
        let v = site.vendor();
        let r = self
            .http
            .send(ctx, &v, &site.call(reqwest::Method::GET, path))
            .await?;
        if !r.is_success() {
            return Err(gh_error(&r, &v));
        }
        r.json(&v)
    }

    /// The run whose title carries `corr`, if listed yet (newest first, two pages).
    async fn find_run(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        base: &str,
        corr: &str,
    ) -> Result<Option<Value>, ActionError> {
        for page in 1..=2 {
            let v = self
                .get_json(
                    ctx,
                    site,
                    &format!("{base}/runs?event=workflow_dispatch&per_page=50&page={page}"),
                )
                .await?;
            let runs = v
                .get("workflow_runs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(r) = runs.iter().find(|r| {
                ["display_title", "name"].iter().any(|f| {
                    r.get(*f)
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.contains(corr))
                })
            }) {
                return Ok(Some(r.clone()));
            }
            if runs.len() < 50 {
                break;
            }
        }
        Ok(None)
    }

    async fn run(&self, ctx: &ActionContext, input: &Value) -> Result<ActionOutput, ActionError> {
        let cfg: Config = serde_json::from_value(input.clone())
            .map_err(|e| ActionError::permanent(format!("github_workflow config: {e}")))?;
        let wait = bool_of(&cfg.wait)?;
        let site = self.site(ctx, cfg.instance.as_deref()).await?;
        let corr = ctx.idempotency_key.as_str().to_string();
        let mut inputs = Map::new();
        for (k, v) in &cfg.inputs {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            inputs.insert(k.clone(), Value::String(s));
        }
        inputs.insert(
            site.inst.correlation_input.clone(),
            Value::String(corr.clone()),
        );
        let repo_path = format!("/repos/{}/{}", seg(&cfg.owner), seg(&cfg.repo));
        let base = format!("{repo_path}/actions/workflows/{}", seg(&cfg.workflow));
        if ctx.dry_run {
            let call = site.call(reqwest::Method::POST, &format!("{base}/dispatches"))
                .json(json!({"ref": cfg.git_ref.clone().unwrap_or_else(|| "<default branch>".into()), "inputs": inputs}));
            return Ok(dry_run(
                ctx,
                &[&call],
                "then the run carrying the correlation input is looked up and polled",
            ));
        }
        let run = match self.find_run(ctx, &site, &base, &corr).await? {
            Some(r) => {
                ctx.log
                    .info("the workflow run of an earlier attempt exists: following it");
                r
            }
            None => {
                let git_ref = match &cfg.git_ref {
                    Some(r) => r.clone(),
                    None => self
                        .get_json(ctx, &site, &repo_path)
                        .await?
                        .get("default_branch")
                        .and_then(Value::as_str)
                        .unwrap_or("main")
                        .to_string(),
                };
                let call = site
                    .call(reqwest::Method::POST, &format!("{base}/dispatches"))
                    .json(json!({"ref": git_ref, "inputs": inputs}));
                let r = self.http.send(ctx, &site.vendor(), &call).await?;
                if !r.is_success() {
                    return Err(gh_error(&r, &site.vendor()));
                }
                ctx.log.info(&format!(
                    "dispatched {} on {}/{}@{git_ref}",
                    cfg.workflow, cfg.owner, cfg.repo
                ));
                let mut backoff = self.http.backoff();
                let mut found = None;
                for _ in 0..FIND_ATTEMPTS {
                    backoff.wait(ctx).await?;
                    if let Some(r) = self.find_run(ctx, &site, &base, &corr).await? {
                        found = Some(r);
                        break;
                    }
                }
                found.ok_or_else(|| ActionError::retryable(format!(
                    "the run of {} did not appear after {FIND_ATTEMPTS} lookups (does the workflow declare the `{}` input and use it in run-name?)",
                    cfg.workflow, site.inst.correlation_input
                )))?
            }
        };
        let id = run
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| ActionError::permanent("GitHub listed a run without an id"))?;
        let mut run = run;
        if wait {
            let mut backoff = self.http.backoff();
            loop {
                run = self
                    .get_json(ctx, &site, &format!("{repo_path}/actions/runs/{id}"))
                    .await?;
                if run.get("status").and_then(Value::as_str) == Some("completed") {
                    break;
                }
                backoff.wait(ctx).await?;
            }
        }
        let s = |k: &str| run.get(k).cloned().unwrap_or(Value::Null);
        let html_url = s("html_url");
        let conclusion = s("conclusion");
        if wait && conclusion != json!("success") {
            return Err(ActionError::permanent(format!(
                "workflow run {id} concluded {} ({})",
                conclusion.as_str().unwrap_or("without a conclusion"),
                html_url.as_str().unwrap_or("")
            )));
        }
        let artifacts = if wait {
            let v = self
                .get_json(
                    ctx,
                    &site,
                    &format!("{repo_path}/actions/runs/{id}/artifacts"),
                )
                .await?;
            let list: Vec<Value> = v.get("artifacts").and_then(Value::as_array).into_iter().flatten().map(|a| json!({
                "id": a.get("id"), "name": a.get("name"), "size_in_bytes": a.get("size_in_bytes"),
                "archive_download_url": a.get("archive_download_url"), "expired": a.get("expired"),
            })).collect();
            Value::Array(list)
        } else {
            json!([])
        };
        Ok(ActionOutput {
            result: json!({"run_id": id, "url": html_url, "html_url": html_url, "status": s("status"), "conclusion": conclusion, "artifacts": artifacts}),
            rollback_state: json!({"run_id": id}),
        })
    }
}

#[async_trait]
impl Action for GithubWorkflowAction {
    // `execute` describes its calls without making them when `ctx.dry_run` is set.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "github_workflow".into(),
            config_schema: crate::schema::config_schema("GithubWorkflowConfig"),
            output_schema: json!({
                "type": "object",
                "required": ["run_id", "url", "conclusion"],
                "properties": {
                    "run_id": {"type": "integer"}, "url": {"type": "string"}, "html_url": {"type": "string"},
                    "status": {"type": "string"}, "conclusion": {"type": ["string", "null"]},
                    "artifacts": {"type": "array"}
                }
            }),
            supports_rollback: false,
            sample_output: json!({
                "run_id": 9000001, "url": "https://github.com/example/platform-gitops/actions/runs/9000001",
                "html_url": "https://github.com/example/platform-gitops/actions/runs/9000001",
                "status": "completed", "conclusion": "success",
                "artifacts": [{"id": 9000002, "name": "provision-report", "size_in_bytes": 2048, "archive_download_url": "https://api.github.com/repos/example/platform-gitops/actions/artifacts/9000002/zip", "expired": false}]
            }),
        }
    }

    fn target(&self, input: &Value) -> String {
        let name = input.get("instance").and_then(Value::as_str);
        match pick("GitHub", &self.instances, name, |i| i.default) {
            Ok((n, _)) => format!("github:{n}"),
            Err(_) => "github".into(),
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        redacted(ctx, self.run(ctx, input).await)
    }
}
