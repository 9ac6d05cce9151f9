//! `terraform`: Terraform Cloud / Enterprise (API v2, JSON:API). Finds the workspace by name
//! or creates it (from a template registered on the instance, or a VCS repository), writes the
//! variables (sensitive ones as sensitive — and any value that holds a secret), queues a run
//! (or a destroy run), polls it with backoff until it is applied, errored or discarded (a run
//! without auto-apply waits at `planned` for a confirmation in Terraform Cloud), then reads the
//! current state version outputs. Result: `{run_id, status, workspace_id, outputs, url}`.
//!
//! Idempotency: the run message carries `[pao:<idempotency key>]`; before queuing, the
//! workspace's runs are searched for it, so a re-run after a crash follows the run it already
//! queued. Rollback queues a destroy run.

use std::collections::BTreeMap;

use async_trait::async_trait;
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::{TerraformInstance, pick};
use crate::http::{Call, Http, dry_run, join, redacted, secret, seg};

/// The `terraform` action.
#[derive(Debug, Clone)]
pub struct TerraformAction {
    http: Http,
    instances: BTreeMap<String, TerraformInstance>,
}

impl TerraformAction {
    pub(crate) fn new(
        http: Http,
        instances: BTreeMap<String, TerraformInstance>,
    ) -> TerraformAction {
        TerraformAction { http, instances }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    project: Option<String>,
    workspace: String,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    vcs: Option<Vcs>,
    #[serde(default)]
    variables: BTreeMap<String, Value>,
    #[serde(default)]
    auto_apply: Option<Value>,
    #[serde(default)]
    destroy: bool,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    terraform_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vcs {
    repository: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    working_directory: Option<String>,
    #[serde(default)]
    oauth_token_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Variable {
    value: Value,
    #[serde(default)]
    sensitive: Option<bool>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    hcl: Option<bool>,
    #[serde(default)]
    description: Option<String>,
}

const JSONAPI: &str = "application/vnd.api+json";

/// JSON:API errors: `errors[].detail` or `title`.
fn tfc_message(v: &Value) -> Option<String> {
    let list = v.get("errors")?.as_array()?;
    let parts: Vec<String> = list
        .iter()
        .map(|e| match e {
            Value::String(s) => s.clone(),
            _ => e
                .get("detail")
                .or_else(|| e.get("title"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn bool_of(v: &Option<Value>, default: bool) -> Result<bool, ActionError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ActionError::permanent(format!(
            "terraform config: auto_apply must be true or false, not {other}"
        ))),
    }
}

const DONE: &[&str] = &["applied", "planned_and_finished", "planned_and_saved"];
const FAILED: &[&str] = &[
    "errored",
    "discarded",
    "canceled",
    "force_canceled",
    "policy_soft_failed",
];

struct Site<'a> {
    name: &'a str,
    inst: &'a TerraformInstance,
    token: String,
}

impl Site<'_> {
    fn call(&self, method: reqwest::Method, path: &str) -> Call {
        Call::new(method, join(&self.inst.url, &format!("/api/v2{path}")))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", JSONAPI)
            .header("Accept", JSONAPI)
    }

    fn vendor(&self) -> String {
        format!("Terraform ({})", self.name)
    }
}

impl TerraformAction {
    async fn site<'a>(
        &'a self,
        ctx: &ActionContext,
        name: Option<&str>,
    ) -> Result<Site<'a>, ActionError> {
        let (name, inst) = pick("Terraform", &self.instances, name, |i| i.default)
            .map_err(ActionError::permanent)?;
        let token = if ctx.dry_run {
            "[REDACTED]".into()
        } else {
            secret(ctx, &inst.token_secret).await?
        };
        Ok(Site { name, inst, token })
    }

    async fn json(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        call: &Call,
    ) -> Result<Value, ActionError> {
        let v = site.vendor();
        self.http
            .send_ok(ctx, &v, call, tfc_message)
            .await?
            .json(&v)
    }

    /// The workspace id, or `None` when it does not exist.
    async fn find_workspace(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        org: &str,
        name: &str,
    ) -> Result<Option<String>, ActionError> {
        let call = site.call(
            reqwest::Method::GET,
            &format!("/organizations/{}/workspaces/{}", seg(org), seg(name)),
        );
        let r = self.http.send(ctx, &site.vendor(), &call).await?;
        if r.status == 404 {
            return Ok(None);
        }
        if !r.is_success() {
            return Err(r.error(&site.vendor(), tfc_message));
        }
        let v = r.json(&site.vendor())?;
        v.pointer("/data/id")
            .and_then(Value::as_str)
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| {
                ActionError::permanent(format!(
                    "{} answered a workspace without an id",
                    site.vendor()
                ))
            })
    }

    async fn project_id(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        org: &str,
        project: &str,
    ) -> Result<String, ActionError> {
        if project.starts_with("prj-") {
            return Ok(project.to_string());
        }
        let mut call = site.call(
            reqwest::Method::GET,
            &format!("/organizations/{}/projects", seg(org)),
        );
        call.url = format!("{}?filter%5Bnames%5D={}", call.url, seg(project));
        let v = self.json(ctx, site, &call).await?;
        v.pointer("/data/0/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                ActionError::permanent(format!("organization {org} has no project named {project}"))
            })
    }

    async fn create_workspace(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        org: &str,
        cfg: &Config,
        auto_apply: bool,
    ) -> Result<String, ActionError> {
        let mut attrs = json!({"name": cfg.workspace, "auto-apply": auto_apply});
        let vcs = match (&cfg.template, &cfg.vcs) {
            (Some(t), _) => {
                let tpl = site.inst.templates.get(t).ok_or_else(|| {
                    ActionError::permanent(format!(
                        "terraform template `{t}` is not configured on instance {} (configured: {})",
                        site.name,
                        site.inst.templates.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                if let Some(v) = &tpl.terraform_version {
                    attrs["terraform-version"] = json!(v);
                }
                Some((
                    tpl.repository.clone(),
                    tpl.branch.clone(),
                    tpl.working_directory.clone(),
                    None,
                ))
            }
            (None, Some(v)) => Some((
                v.repository.clone(),
                v.branch.clone(),
                v.working_directory.clone(),
                v.oauth_token_id.clone(),
            )),
            (None, None) => None,
        };
        if let Some((repo, branch, wd, token)) = vcs {
            let mut vr = json!({"identifier": repo});
            if let Some(b) = branch {
                vr["branch"] = json!(b);
            }
            if let Some(t) = token.or_else(|| site.inst.oauth_token_id.clone()) {
                vr["oauth-token-id"] = json!(t);
            }
            attrs["vcs-repo"] = vr;
            if let Some(wd) = wd {
                attrs["working-directory"] = json!(wd);
            }
        }
        if let Some(v) = &cfg.terraform_version {
            attrs["terraform-version"] = json!(v);
        }
        let mut data = json!({"type": "workspaces", "attributes": attrs});
        if let Some(p) = &cfg.project {
            let id = self.project_id(ctx, site, org, p).await?;
            data["relationships"] = json!({"project": {"data": {"type": "projects", "id": id}}});
        }
        let call = site
            .call(
                reqwest::Method::POST,
                &format!("/organizations/{}/workspaces", seg(org)),
            )
            .json(json!({"data": data}));
        let r = self.http.send(ctx, &site.vendor(), &call).await?;
        if r.status == 422 && String::from_utf8_lossy(&r.body).contains("already been taken") {
            // Created by a concurrent or earlier attempt.
            return self
                .find_workspace(ctx, site, org, &cfg.workspace)
                .await?
                .ok_or_else(|| {
                    ActionError::retryable(format!("workspace {} is being created", cfg.workspace))
                });
        }
        if !r.is_success() {
            return Err(r.error(&site.vendor(), tfc_message));
        }
        let v = r.json(&site.vendor())?;
        ctx.log
            .info(&format!("created workspace {}", cfg.workspace));
        v.pointer("/data/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                ActionError::permanent(format!(
                    "{} answered a workspace without an id",
                    site.vendor()
                ))
            })
    }

    fn var_attrs(ctx: &ActionContext, key: &str, raw: &Value) -> Result<Value, ActionError> {
        let var = match raw {
            Value::Object(_) => serde_json::from_value::<Variable>(raw.clone())
                .map_err(|e| ActionError::permanent(format!("terraform variable {key}: {e}")))?,
            other => Variable {
                value: other.clone(),
                sensitive: None,
                category: None,
                hcl: None,
                description: None,
            },
        };
        let hcl = var.hcl.unwrap_or(false);
        let value = match &var.value {
            Value::String(s) => s.clone(),
            Value::Array(_) | Value::Object(_) if hcl => var.value.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(ActionError::permanent(format!(
                    "terraform variable {key}: lists and maps need hcl: true"
                )));
            }
            Value::Null => String::new(),
            other => other.to_string(),
        };
        // A value that holds a known secret is written as sensitive whatever the config says.
        let holds_secret = ctx.log.redactor().contains_secret(&value);
        let sensitive = var.sensitive.unwrap_or(false) || holds_secret;
        if sensitive {
            ctx.log.add_secret(&value);
        }
        let mut a = json!({
            "key": key, "value": value, "category": var.category.unwrap_or_else(|| "terraform".into()),
            "hcl": hcl, "sensitive": sensitive,
        });
        if let Some(d) = var.description {
            a["description"] = json!(d);
        }
        Ok(a)
    }

    async fn write_vars(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        ws: &str,
        vars: &BTreeMap<String, Value>,
    ) -> Result<(), ActionError> {
        if vars.is_empty() {
            return Ok(());
        }
        let call = site.call(
            reqwest::Method::GET,
            &format!("/workspaces/{}/vars", seg(ws)),
        );
        let v = self.json(ctx, site, &call).await?;
        let existing: BTreeMap<(String, String), String> = v
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| {
                Some((
                    (
                        d.pointer("/attributes/key")?.as_str()?.to_string(),
                        d.pointer("/attributes/category")?.as_str()?.to_string(),
                    ),
                    d.get("id")?.as_str()?.to_string(),
                ))
            })
            .collect();
        for (key, raw) in vars {
            let attrs = Self::var_attrs(ctx, key, raw)?;
            let cat = attrs["category"]
                .as_str()
                .unwrap_or("terraform")
                .to_string();
            let call = match existing.get(&(key.clone(), cat)) {
                Some(id) => site
                    .call(
                        reqwest::Method::PATCH,
                        &format!("/workspaces/{}/vars/{}", seg(ws), seg(id)),
                    )
                    .json(json!({"data": {"type": "vars", "id": id, "attributes": attrs}})),
                None => site
                    .call(
                        reqwest::Method::POST,
                        &format!("/workspaces/{}/vars", seg(ws)),
                    )
                    .json(json!({"data": {"type": "vars", "attributes": attrs}})),
            };
            self.http
                .send_ok(ctx, &site.vendor(), &call, tfc_message)
                .await?;
        }
        ctx.log.info(&format!("wrote {} variable(s)", vars.len()));
        Ok(())
    }

    async fn find_run(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        ws: &str,
        tag: &str,
    ) -> Result<Option<String>, ActionError> {
        let call = site.call(
            reqwest::Method::GET,
            &format!("/workspaces/{}/runs?page%5Bsize%5D=50", seg(ws)),
        );
        let v = self.json(ctx, site, &call).await?;
        Ok(v.get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| {
                r.pointer("/attributes/message")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.contains(tag))
            })
            .and_then(|r| r.get("id")?.as_str().map(str::to_string)))
    }

    async fn wait_run(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        run: &str,
    ) -> Result<String, ActionError> {
        let mut backoff = self.http.backoff();
        let mut told = false;
        loop {
            let call = site.call(reqwest::Method::GET, &format!("/runs/{}", seg(run)));
            let v = self.json(ctx, site, &call).await?;
            let status = v
                .pointer("/data/attributes/status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if DONE.contains(&status.as_str()) {
                return Ok(status);
            }
            if FAILED.contains(&status.as_str()) {
                return Err(ActionError::permanent(format!(
                    "Terraform run {run} ended {status}"
                )));
            }
            if status == "planned" && !told {
                told = true;
                ctx.log.info(&format!(
                    "run {run} is planned and waits for a confirmation in Terraform"
                ));
            }
            backoff.wait(ctx).await?;
        }
    }

    async fn outputs(
        &self,
        ctx: &ActionContext,
        site: &Site<'_>,
        ws: &str,
    ) -> Result<Value, ActionError> {
        let call = site.call(
            reqwest::Method::GET,
            &format!("/workspaces/{}/current-state-version-outputs", seg(ws)),
        );
        let r = self.http.send(ctx, &site.vendor(), &call).await?;
        if r.status == 404 {
            return Ok(json!({}));
        }
        if !r.is_success() {
            return Err(r.error(&site.vendor(), tfc_message));
        }
        let v = r.json(&site.vendor())?;
        let mut out = Map::new();
        for o in v
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = o.pointer("/attributes/name").and_then(Value::as_str) else {
                continue;
            };
            let sensitive = o.pointer("/attributes/sensitive") == Some(&json!(true));
            // Sensitive outputs stay in Terraform: PAO results are stored and shown.
            if !sensitive {
                out.insert(
                    name.to_string(),
                    o.pointer("/attributes/value")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
            }
        }
        Ok(Value::Object(out))
    }

    async fn run(
        &self,
        ctx: &ActionContext,
        input: &Value,
        force_destroy: bool,
    ) -> Result<ActionOutput, ActionError> {
        let cfg: Config = serde_json::from_value(input.clone())
            .map_err(|e| ActionError::permanent(format!("terraform config: {e}")))?;
        let destroy = cfg.destroy || force_destroy;
        let auto_apply = bool_of(&cfg.auto_apply, true)?;
        if cfg.template.is_some() && cfg.vcs.is_some() {
            return Err(ActionError::permanent(
                "terraform config: template and vcs cannot be used together",
            ));
        }
        let site = self.site(ctx, cfg.instance.as_deref()).await?;
        let org = cfg
            .organization
            .clone()
            .or_else(|| site.inst.organization.clone())
            .ok_or_else(|| {
                ActionError::permanent(format!(
                    "terraform: no organization given and instance {} has none",
                    site.name
                ))
            })?;
        let tag = format!("[pao:{}]", ctx.idempotency_key);
        let message = format!(
            "{} {tag}",
            cfg.message
                .clone()
                .unwrap_or_else(|| format!("PAO request {}", ctx.request_id))
        );
        if ctx.dry_run {
            let find = site.call(
                reqwest::Method::GET,
                &format!("/organizations/{org}/workspaces/{}", cfg.workspace),
            );
            let run = site.call(reqwest::Method::POST, "/runs").json(json!({"data": {"type": "runs", "attributes": {
                "message": message, "is-destroy": destroy, "auto-apply": auto_apply},
                "relationships": {"workspace": {"data": {"type": "workspaces", "id": "<workspace id>"}}}}}));
            let mut vars = Map::new();
            for (k, raw) in &cfg.variables {
                let mut a = Self::var_attrs(ctx, k, raw)?;
                if a["sensitive"] == json!(true) {
                    a["value"] = json!("[REDACTED]");
                }
                vars.insert(k.clone(), a);
            }
            let mut out = dry_run(
                ctx,
                &[&find, &run],
                "the workspace is created when missing, variables written, then the run is polled",
            );
            out.result["variables"] = crate::redact_json(ctx, &Value::Object(vars));
            return Ok(out);
        }
        let ws = match self
            .find_workspace(ctx, &site, &org, &cfg.workspace)
            .await?
        {
            Some(id) => id,
            None if destroy => {
                ctx.log.info(&format!(
                    "workspace {} does not exist: nothing to destroy",
                    cfg.workspace
                ));
                return Ok(ActionOutput {
                    result: json!({"run_id": null, "status": "no_workspace", "workspace": cfg.workspace, "outputs": {}}),
                    rollback_state: Value::Null,
                });
            }
            None => {
                self.create_workspace(ctx, &site, &org, &cfg, auto_apply)
                    .await?
            }
        };
        if !destroy {
            self.write_vars(ctx, &site, &ws, &cfg.variables).await?;
        }
        let run = match self.find_run(ctx, &site, &ws, &tag).await? {
            Some(r) => {
                ctx.log
                    .info(&format!("run {r} was queued by an earlier attempt"));
                r
            }
            None => {
                let call = site.call(reqwest::Method::POST, "/runs").json(json!({"data": {"type": "runs",
                    "attributes": {"message": message, "is-destroy": destroy, "auto-apply": auto_apply},
                    "relationships": {"workspace": {"data": {"type": "workspaces", "id": ws}}}}}));
                let v = self.json(ctx, &site, &call).await?;
                let id = v
                    .pointer("/data/id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ActionError::permanent(format!(
                            "{} answered a run without an id",
                            site.vendor()
                        ))
                    })?;
                ctx.log.info(&format!(
                    "queued {}run {id}",
                    if destroy { "destroy " } else { "" }
                ));
                id.to_string()
            }
        };
        let status = self.wait_run(ctx, &site, &run).await?;
        let outputs = if destroy {
            json!({})
        } else {
            self.outputs(ctx, &site, &ws).await?
        };
        let url = join(
            &site.inst.url,
            &format!("/app/{org}/workspaces/{}/runs/{run}", cfg.workspace),
        );
        Ok(ActionOutput {
            result: json!({"run_id": run, "status": status, "workspace_id": ws, "workspace": cfg.workspace, "outputs": outputs, "url": url}),
            rollback_state: json!({"workspace_id": ws, "run_id": run}),
        })
    }
}

#[async_trait]
impl Action for TerraformAction {
    // `execute` describes its calls without making them when `ctx.dry_run` is set.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "terraform".into(),
            config_schema: crate::schema::config_schema("TerraformConfig"),
            output_schema: json!({
                "type": "object",
                "required": ["run_id", "status", "outputs"],
                "properties": {
                    "run_id": {"type": ["string", "null"]}, "status": {"type": "string"},
                    "workspace_id": {"type": "string"}, "workspace": {"type": "string"},
                    "outputs": {"type": "object"}, "url": {"type": "string"}
                }
            }),
            supports_rollback: true,
            sample_output: json!({
                "run_id": "run-CZcmD7eagjhyX0vN", "status": "applied", "workspace_id": "ws-6jrRyVDv1J8zQMB5",
                "workspace": "pg-orders-prod", "url": "https://app.terraform.io/app/example-platform/workspaces/pg-orders-prod/runs/run-CZcmD7eagjhyX0vN",
                "outputs": {"endpoint": "orders-prod.db.example.internal", "port": 5432, "private_ip": "10.20.30.40",
                            "public_ip": "", "instance_id": "i-0abc", "bucket_arn": "arn:aws:s3:::s3-orders",
                            "bucket_regional_domain_name": "s3-orders.s3.eu-west-1.amazonaws.com"}
            }),
        }
    }

    fn target(&self, input: &Value) -> String {
        let name = input.get("instance").and_then(Value::as_str);
        match pick("Terraform", &self.instances, name, |i| i.default) {
            Ok((n, _)) => format!("terraform:{n}"),
            Err(_) => "terraform".into(),
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        redacted(ctx, self.run(ctx, input, false).await)
    }

    async fn rollback(
        &self,
        ctx: &ActionContext,
        input: &Value,
        _state: &Value,
    ) -> Result<(), ActionError> {
        redacted(ctx, self.run(ctx, input, true).await.map(|_| ()))
    }
}
