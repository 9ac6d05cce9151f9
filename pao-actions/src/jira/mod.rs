//! `jira`: create an issue (project, type, summary, description, labels, components, priority,
//! custom fields by id), or act on an existing one (`issue_key`): transition, comment, link.
//!
//! Idempotent create: the issue is labelled with the attempt's idempotency key and a search for
//! that label runs before creating, so a re-run after a crash finds the issue instead of
//! opening a second one. REST v3 (Cloud) descriptions and comments are converted from Markdown
//! or plain text to Atlassian Document Format; v2 (Server / Data Center) takes text.
//! Rollback transitions the issue to the instance's cancel transition and comments why.
//! Result: `{key, id, url, status}`.
//!
//! [`ticket_outcome`] maps a ticket's status and resolution to the outcome of a manual-mode
//! request, per instance.

mod adf;

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine as _;
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use pao_core::engine::ManualOutcome;
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub use adf::{adf_to_text, markdown_to_adf};

use crate::config::{ActionsConfig, JiraAuth, JiraInstance, JiraOutcomes, pick};
use crate::http::{Call, Http, dry_run, join, redacted, secret, seg};

/// The `jira` action.
#[derive(Debug, Clone)]
pub struct JiraAction {
    http: Http,
    instances: BTreeMap<String, JiraInstance>,
}

impl JiraAction {
    pub(crate) fn new(http: Http, instances: BTreeMap<String, JiraInstance>) -> JiraAction {
        JiraAction { http, instances }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    issue_type: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    custom_fields: Map<String, Value>,
    #[serde(default)]
    transition: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    issue_key: Option<String>,
    #[serde(default)]
    link: Option<Link>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Link {
    issue_key: String,
    #[serde(rename = "type")]
    link_type: String,
}

/// JIRA's error body: `errorMessages` and the per-field `errors`.
fn jira_message(v: &Value) -> Option<String> {
    let mut parts: Vec<String> = v
        .get("errorMessages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if let Some(m) = v.get("errors").and_then(Value::as_object) {
        for (k, e) in m {
            parts.push(format!("{k}: {}", e.as_str().unwrap_or(&e.to_string())));
        }
    }
    if parts.is_empty() {
        crate::http::generic_message(v)
    } else {
        Some(parts.join("; "))
    }
}

/// The label that marks the issue of one action of one request. JIRA labels cannot hold
/// spaces.
fn idempotency_label(ctx: &ActionContext) -> String {
    ctx.idempotency_key
        .as_str()
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .take(255)
        .collect()
}

/// How a manual-mode ticket stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketOutcome {
    /// Still being worked.
    Pending,
    /// Done: the request completes.
    Completed,
    /// Refused or failed: the request fails with this reason.
    Failed(String),
    /// Cancelled: the request fails as cancelled, with this reason.
    Cancelled(String),
}

impl TicketOutcome {
    /// What the engine's [`Orchestrator::resolve_manual`](pao_core::engine::Orchestrator::resolve_manual)
    /// takes; `None` while the ticket is pending. A cancelled ticket fails the request.
    pub fn into_manual(self) -> Option<ManualOutcome> {
        match self {
            TicketOutcome::Pending => None,
            TicketOutcome::Completed => Some(ManualOutcome::Completed),
            TicketOutcome::Failed(r) | TicketOutcome::Cancelled(r) => {
                Some(ManualOutcome::Failed(r))
            }
        }
    }
}

/// Maps a ticket's status (and resolution, when set) to a manual-mode outcome, per the
/// instance's [`JiraOutcomes`]. Names compare case-insensitively.
pub fn ticket_outcome(
    outcomes: &JiraOutcomes,
    status: &str,
    resolution: Option<&str>,
) -> TicketOutcome {
    let is = |list: &[String], s: &str| list.iter().any(|x| x.eq_ignore_ascii_case(s.trim()));
    if is(&outcomes.cancelled, status) {
        return TicketOutcome::Cancelled(format!("ticket cancelled (status {status})"));
    }
    if is(&outcomes.failed, status) {
        return TicketOutcome::Failed(format!("ticket refused (status {status})"));
    }
    if is(&outcomes.completed, status) {
        return match resolution {
            Some(r) if is(&outcomes.cancelled, r) => {
                TicketOutcome::Cancelled(format!("ticket cancelled (resolution {r})"))
            }
            Some(r) if is(&outcomes.failed_resolutions, r) => {
                TicketOutcome::Failed(format!("ticket closed as {r}"))
            }
            _ => TicketOutcome::Completed,
        };
    }
    TicketOutcome::Pending
}

impl ActionsConfig {
    /// [`ticket_outcome`] with the outcomes of the named JIRA instance (or the default one).
    pub fn jira_ticket_outcome(
        &self,
        instance: Option<&str>,
        status: &str,
        resolution: Option<&str>,
    ) -> Result<TicketOutcome, String> {
        let (_, i) = pick("JIRA", &self.jira, instance, |i| i.default)?;
        Ok(ticket_outcome(&i.outcomes, status, resolution))
    }
}

/// Reads manual-mode tickets: what a server polls when JIRA cannot call its webhook.
#[derive(Debug, Clone)]
pub struct JiraTickets {
    action: JiraAction,
}

impl JiraTickets {
    /// A reader over the JIRA instances of `config`.
    pub fn new(config: &ActionsConfig) -> Result<JiraTickets, crate::ConfigError> {
        config.validate()?;
        Ok(JiraTickets {
            action: JiraAction::new(Http::new(&config.http)?, config.jira.clone()),
        })
    }

    /// The outcome of ticket `key` on `instance` (or the default one) as it stands now,
    /// with the credentials read from `secrets`.
    pub async fn outcome(
        &self,
        secrets: std::sync::Arc<dyn pao_core::secrets::SecretProvider>,
        instance: Option<&str>,
        key: &str,
    ) -> Result<TicketOutcome, ActionError> {
        let ctx = Self::context(secrets, &format!("poll-{key}"));
        let r = async {
            let site = self.action.site(&ctx, instance).await?;
            let call = site.call(
                reqwest::Method::GET,
                &format!("/issue/{}?fields=status,resolution", seg(key)),
            );
            let v = self.action.json(&ctx, &site, &call).await?;
            let status = v
                .pointer("/fields/status/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ActionError::permanent(format!(
                        "{} answered {key} without a status",
                        site.vendor()
                    ))
                })?;
            let resolution = v.pointer("/fields/resolution/name").and_then(Value::as_str);
            Ok(ticket_outcome(&site.inst.outcomes, status, resolution))
        }
        .await;
        redacted(&ctx, r)
    }
}

impl JiraTickets {
    fn context(
        secrets: std::sync::Arc<dyn pao_core::secrets::SecretProvider>,
        key: &str,
    ) -> ActionContext {
        ActionContext {
            request_id: String::new(),
            action_id: "manual-ticket".into(),
            attempt: 1,
            idempotency_key: pao_core::action::IdempotencyKey(key.to_string()),
            deadline: None,
            cancel: tokio_util::sync::CancellationToken::new(),
            log: pao_core::action::ActionLogger::default(),
            secrets,
            dry_run: false,
        }
    }

    /// Adds `text` as a comment to ticket `key`, unless one of its last 100 comments already
    /// says the same (a retry after a lost answer does not comment twice).
    pub async fn comment(
        &self,
        secrets: std::sync::Arc<dyn pao_core::secrets::SecretProvider>,
        instance: Option<&str>,
        key: &str,
        text: &str,
    ) -> Result<(), ActionError> {
        let ctx = Self::context(secrets, &format!("comment-{key}"));
        let r = async {
            let site = self.action.site(&ctx, instance).await?;
            if !self.action.has_comment(&ctx, &site, key, text).await? {
                self.action.comment(&ctx, &site, key, text).await?;
            }
            Ok(())
        }
        .await;
        redacted(&ctx, r)
    }
}

/// One instance, resolved for a call.
struct Site<'a> {
    name: &'a str,
    inst: &'a JiraInstance,
    auth: String,
}

impl Site<'_> {
    fn api(&self, path: &str) -> String {
        join(
            &self.inst.url,
            &format!("/rest/api/{}{path}", self.inst.api_version),
        )
    }

    fn call(&self, method: reqwest::Method, path: &str) -> Call {
        Call::new(method, self.api(path))
            .header("Authorization", self.auth.clone())
            .header("Accept", "application/json")
    }

    fn text(&self, s: &str) -> Value {
        if self.inst.api_version >= 3 {
            markdown_to_adf(s)
        } else {
            Value::String(s.to_string())
        }
    }

    fn vendor(&self) -> String {
        format!("JIRA ({})", self.name)
    }
}

impl JiraAction {
    async fn site<'a>(
        &'a self,
        ctx: &ActionContext,
        instance: Option<&str>,
    ) -> Result<Site<'a>, ActionError> {
        let (name, inst) = pick("JIRA", &self.instances, instance, |i| i.default)
            .map_err(ActionError::permanent)?;
        let auth = if ctx.dry_run {
            "[REDACTED]".to_string()
        } else {
            match &inst.auth {
                JiraAuth::Basic {
                    email,
                    token_secret,
                } => {
                    let token = secret(ctx, token_secret).await?;
                    let b = base64::engine::general_purpose::STANDARD
                        .encode(format!("{email}:{token}"));
                    ctx.log.add_secret(&b);
                    format!("Basic {b}")
                }
                JiraAuth::Bearer { token_secret } => {
                    format!("Bearer {}", secret(ctx, token_secret).await?)
                }
            }
        };
        Ok(Site { name, inst, auth })
    }

    async fn json(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        call: &Call,
    ) -> Result<Value, ActionError> {
        let vendor = site.vendor();
        let r = self.http.send_ok(ctx, &vendor, call, jira_message).await?;
        r.json(&vendor)
    }

    fn create_fields(
        &self,
        cfg: &Config,
        site: &Site<'_>,
        label: &str,
    ) -> Result<Value, ActionError> {
        let (Some(project), Some(issue_type), Some(summary)) =
            (&cfg.project, &cfg.issue_type, &cfg.summary)
        else {
            return Err(ActionError::permanent(
                "jira config: creating an issue needs project, issue_type and summary (or give issue_key)",
            ));
        };
        let mut labels: Vec<String> = cfg
            .labels
            .iter()
            .map(|l| l.trim().replace(char::is_whitespace, "-"))
            .filter(|l| !l.is_empty())
            .collect();
        labels.push(label.to_string());
        let mut fields = json!({
            "project": {"key": project},
            "issuetype": {"name": issue_type},
            "summary": summary.chars().take(255).collect::<String>(),
            "labels": labels,
        });
        if let Some(d) = &cfg.description {
            fields["description"] = site.text(d);
        }
        if !cfg.components.is_empty() {
            fields["components"] = json!(
                cfg.components
                    .iter()
                    .map(|c| json!({"name": c}))
                    .collect::<Vec<_>>()
            );
        }
        if let Some(p) = &cfg.priority {
            fields["priority"] = json!({"name": p});
        }
        for (k, v) in &cfg.custom_fields {
            fields[k.as_str()] = v.clone();
        }
        Ok(json!({"fields": fields}))
    }

    async fn find_by_label(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        label: &str,
    ) -> Result<Option<(String, String)>, ActionError> {
        let jql = format!("labels = \"{label}\"");
        let path = if site.inst.api_version >= 3 {
            "/search/jql"
        } else {
            "/search"
        };
        let mut call = site.call(reqwest::Method::GET, path);
        let mut url = reqwest::Url::parse(&call.url)
            .map_err(|e| ActionError::permanent(format!("JIRA url: {e}")))?;
        url.query_pairs_mut()
            .append_pair("jql", &jql)
            .append_pair("fields", "summary,status")
            .append_pair("maxResults", "2");
        call.url = url.to_string();
        let v = self.json(ctx, site, &call).await?;
        let issues = v
            .get("issues")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if issues.len() > 1 {
            ctx.log.warn(&format!(
                "{} issues carry label {label}; using the first",
                issues.len()
            ));
        }
        Ok(issues.first().and_then(|i| {
            Some((
                i.get("key")?.as_str()?.to_string(),
                i.get("id")?.as_str()?.to_string(),
            ))
        }))
    }

    async fn status(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        key: &str,
    ) -> Result<(String, String), ActionError> {
        let call = site.call(
            reqwest::Method::GET,
            &format!("/issue/{}?fields=status", seg(key)),
        );
        let v = self.json(ctx, site, &call).await?;
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let status = v
            .pointer("/fields/status/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if v.get("key").is_none() {
            return Err(ActionError::permanent(format!(
                "{} answered an issue without a key",
                site.vendor()
            )));
        }
        Ok((id, status))
    }

    /// Applies a transition by id, name or target status name. `Ok(false)` when the issue is
    /// already in the target status.
    async fn transition(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        key: &str,
        wanted: &str,
        current: &str,
    ) -> Result<bool, ActionError> {
        let call = site.call(
            reqwest::Method::GET,
            &format!("/issue/{}/transitions", seg(key)),
        );
        let v = self.json(ctx, site, &call).await?;
        let list = v
            .get("transitions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let s = |t: &Value, p: &str| {
            t.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let found = list
            .iter()
            .find(|t| s(t, "/id") == wanted || s(t, "/name").eq_ignore_ascii_case(wanted))
            .or_else(|| {
                list.iter()
                    .find(|t| s(t, "/to/name").eq_ignore_ascii_case(wanted))
            });
        let Some(t) = found else {
            if current.eq_ignore_ascii_case(wanted) {
                return Ok(false);
            }
            let names: Vec<String> = list
                .iter()
                .map(|t| format!("{} (→ {})", s(t, "/name"), s(t, "/to/name")))
                .collect();
            return Err(ActionError::permanent(format!(
                "{key} has no transition `{wanted}` from status {current}; available: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        if s(t, "/to/name").eq_ignore_ascii_case(current) {
            return Ok(false);
        }
        let call = site
            .call(
                reqwest::Method::POST,
                &format!("/issue/{}/transitions", seg(key)),
            )
            .json(json!({"transition": {"id": s(t, "/id")}}));
        self.http
            .send_ok(ctx, &site.vendor(), &call, jira_message)
            .await?;
        ctx.log
            .info(&format!("{key}: transition {}", s(t, "/name")));
        Ok(true)
    }

    /// Whether the issue already has a comment with this text (a re-run after a crash must
    /// not comment twice). Looks at the last 100 comments.
    async fn has_comment(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        key: &str,
        text: &str,
    ) -> Result<bool, ActionError> {
        let call = site.call(
            reqwest::Method::GET,
            &format!(
                "/issue/{}/comment?orderBy=-created&maxResults=100",
                seg(key)
            ),
        );
        let v = self.json(ctx, site, &call).await?;
        let want = site.text(text);
        Ok(v.get("comments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("body"))
            .any(|b| match (b, &want) {
                (Value::String(b), Value::String(w)) => b.trim() == w.trim(),
                (b, w) => adf_to_text(b).trim() == adf_to_text(w).trim(),
            }))
    }

    async fn comment(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        key: &str,
        text: &str,
    ) -> Result<(), ActionError> {
        let call = site
            .call(
                reqwest::Method::POST,
                &format!("/issue/{}/comment", seg(key)),
            )
            .json(json!({"body": site.text(text)}));
        self.http
            .send_ok(ctx, &site.vendor(), &call, jira_message)
            .await?;
        Ok(())
    }

    async fn run(&self, ctx: &ActionContext, input: &Value) -> Result<ActionOutput, ActionError> {
        let cfg: Config = serde_json::from_value(input.clone())
            .map_err(|e| ActionError::permanent(format!("jira config: {e}")))?;
        let site = self.site(ctx, cfg.instance.as_deref()).await?;
        let label = idempotency_label(ctx);
        if ctx.dry_run {
            let mut calls = Vec::new();
            if cfg.issue_key.is_none() {
                calls.push(
                    site.call(reqwest::Method::POST, "/issue")
                        .json(self.create_fields(&cfg, &site, &label)?),
                );
            }
            let key = cfg
                .issue_key
                .clone()
                .unwrap_or_else(|| "<new issue>".into());
            if let Some(t) = &cfg.transition {
                calls.push(
                    site.call(reqwest::Method::POST, &format!("/issue/{key}/transitions"))
                        .json(json!({"transition": {"name": t}})),
                );
            }
            if let Some(c) = &cfg.comment {
                calls.push(
                    site.call(reqwest::Method::POST, &format!("/issue/{key}/comment"))
                        .json(json!({"body": site.text(c)})),
                );
            }
            let refs: Vec<&Call> = calls.iter().collect();
            return Ok(dry_run(
                ctx,
                &refs,
                "an issue labelled with the idempotency key is searched first and reused",
            ));
        }
        let (key, mut id, created) = match cfg.issue_key.as_deref().filter(|k| !k.is_empty()) {
            Some(k) => (k.to_string(), String::new(), false),
            None => match self.find_by_label(ctx, &site, &label).await? {
                Some((k, i)) => {
                    ctx.log.info(&format!(
                        "{k} already exists from an earlier attempt (label {label})"
                    ));
                    (k, i, false)
                }
                None => {
                    let body = self.create_fields(&cfg, &site, &label)?;
                    let call = site.call(reqwest::Method::POST, "/issue").json(body);
                    let v = self.json(ctx, &site, &call).await?;
                    let (Some(k), Some(i)) = (
                        v.get("key").and_then(Value::as_str),
                        v.get("id").and_then(Value::as_str),
                    ) else {
                        return Err(ActionError::permanent(format!(
                            "{} answered a create without key and id",
                            site.vendor()
                        )));
                    };
                    ctx.log.info(&format!("created {k}"));
                    (k.to_string(), i.to_string(), true)
                }
            },
        };
        let (got_id, mut status) = self.status(ctx, &site, &key).await?;
        if id.is_empty() {
            id = got_id;
        }
        if let Some(l) = &cfg.link {
            let call = site.call(reqwest::Method::POST, "/issueLink").json(json!({
                "type": {"name": l.link_type},
                "inwardIssue": {"key": key},
                "outwardIssue": {"key": l.issue_key},
            }));
            self.http
                .send_ok(ctx, &site.vendor(), &call, jira_message)
                .await?;
        }
        if let Some(c) = &cfg.comment {
            if self.has_comment(ctx, &site, &key, c).await? {
                ctx.log.info(&format!(
                    "{key} already has this comment from an earlier attempt"
                ));
            } else {
                self.comment(ctx, &site, &key, c).await?;
            }
        }
        if let Some(t) = &cfg.transition
            && self.transition(ctx, &site, &key, t, &status).await?
        {
            status = self.status(ctx, &site, &key).await?.1;
        }
        let url = join(&site.inst.url, &format!("/browse/{key}"));
        Ok(ActionOutput {
            result: json!({"key": key, "id": id, "url": url, "status": status, "created": created, "instance": site.name}),
            rollback_state: json!({"key": key, "instance": site.name}),
        })
    }

    async fn undo(
        &self,
        ctx: &ActionContext,
        input: &Value,
        state: &Value,
    ) -> Result<(), ActionError> {
        let instance = state
            .get("instance")
            .and_then(Value::as_str)
            .or_else(|| input.get("instance").and_then(Value::as_str));
        let Some(key) = state.get("key").and_then(Value::as_str) else {
            return Err(ActionError::permanent(
                "jira rollback: no issue key in the rollback state",
            ));
        };
        let site = self.site(ctx, instance).await?;
        if ctx.dry_run {
            ctx.log.info(&format!(
                "dry run: would apply transition `{}` to {key} and comment",
                site.inst.cancel_transition
            ));
            return Ok(());
        }
        let status = match self.status(ctx, &site, key).await {
            Ok((_, s)) => s,
            Err(e) if e.message.contains(" 404 ") => {
                ctx.log
                    .info(&format!("{key} no longer exists: nothing to cancel"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if site
            .inst
            .outcomes
            .cancelled
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&status))
        {
            return Ok(());
        }
        let wanted = site.inst.cancel_transition.clone();
        let moved = match self.transition(ctx, &site, key, &wanted, &status).await {
            Ok(m) => m,
            Err(e) if !e.is_retryable() => {
                // Fall back to any transition into a cancelled status.
                let mut done = false;
                for c in &site.inst.outcomes.cancelled {
                    if let Ok(m) = self.transition(ctx, &site, key, c, &status).await {
                        done = m;
                        break;
                    }
                }
                if !done {
                    return Err(e);
                }
                done
            }
            Err(e) => return Err(e),
        };
        if moved {
            self.comment(
                ctx,
                &site,
                key,
                &format!(
                    "Cancelled by PAO: request {} was rolled back.",
                    ctx.request_id
                ),
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Action for JiraAction {
    // `execute` describes its calls without making them when `ctx.dry_run` is set.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "jira".into(),
            config_schema: crate::schema::config_schema("JiraConfig"),
            output_schema: json!({
                "type": "object",
                "required": ["key", "id", "url", "status"],
                "properties": {
                    "key": {"type": "string"}, "id": {"type": "string"},
                    "url": {"type": "string"}, "status": {"type": "string"},
                    "created": {"type": "boolean"}, "instance": {"type": "string"}
                }
            }),
            supports_rollback: true,
            sample_output: json!({"key": "OPS-1234", "id": "10042", "url": "https://example.atlassian.net/browse/OPS-1234", "status": "To Do", "created": true, "instance": "jira-cloud"}),
        }
    }

    fn target(&self, input: &Value) -> String {
        let name = input.get("instance").and_then(Value::as_str);
        match pick("JIRA", &self.instances, name, |i| i.default) {
            Ok((n, _)) => format!("jira:{n}"),
            Err(_) => "jira".into(),
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        redacted(ctx, self.run(ctx, input).await)
    }

    async fn rollback(
        &self,
        ctx: &ActionContext,
        input: &Value,
        state: &Value,
    ) -> Result<(), ActionError> {
        redacted(ctx, self.undo(ctx, input, state).await)
    }
}
