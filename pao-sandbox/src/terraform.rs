//! A fake Terraform Cloud / Enterprise API v2 (JSON:API, `application/vnd.api+json`):
//! workspaces (show by name, create — 422 when the name is taken), workspace variables
//! (list, create, update; sensitive values are write-only), runs (create, show, list per
//! workspace, apply and discard actions) that move pending → planning → planned → applying →
//! applied one step per read (a run without auto-apply stops at `planned` until applied), and
//! the current state version outputs. Errors as `{"errors":[{"status":..,"title":..}]}`.
//! Auth: `Authorization: Bearer <token>`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

use crate::FakeServer;
use crate::faults::{self, Faults, bearer, json_as};

const JSONAPI: &str = "application/vnd.api+json";

/// A workspace held by the fake.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeWorkspace {
    /// `ws-...`.
    pub id: String,
    /// Organization.
    pub organization: String,
    /// Name.
    pub name: String,
    /// Attributes as created.
    pub attributes: Value,
    /// Variables: key → (id, attributes).
    pub vars: BTreeMap<String, (String, Value)>,
}

/// A run held by the fake.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeTfRun {
    /// `run-...`.
    pub id: String,
    /// Workspace id.
    pub workspace_id: String,
    /// Message.
    pub message: String,
    /// Destroy run.
    pub is_destroy: bool,
    /// Applies without confirmation.
    pub auto_apply: bool,
    /// Current status.
    pub status: String,
}

#[derive(Debug, Default)]
struct Inner {
    workspaces: Vec<FakeWorkspace>,
    runs: Vec<FakeTfRun>,
    seq: u64,
    fail_next_plan: bool,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    token: String,
}

/// The running fake.
#[derive(Debug)]
pub struct TerraformFake {
    server: FakeServer,
    inner: Arc<Mutex<Inner>>,
    /// Fault injection and request log.
    pub faults: Faults,
    /// The accepted API token.
    pub token: String,
}

/// The JSON:API error body.
pub fn error_body(status: u16, title: &str) -> Value {
    let title = match status {
        401 => "unauthorized",
        404 => "not found",
        _ => title,
    };
    json!({"errors": [{"status": status.to_string(), "title": title}]})
}

fn err(status: u16, title: &str) -> Response {
    json_as(status, &error_body(status, title), JSONAPI)
}

fn ok(status: u16, body: Value) -> Response {
    json_as(status, &body, JSONAPI)
}

impl TerraformFake {
    /// Starts the fake.
    pub async fn start() -> std::io::Result<TerraformFake> {
        let token = "sandbox-tfc-token.atlasv1.0001".to_string();
        let faults = Faults::default();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared {
            inner: inner.clone(),
            token: token.clone(),
        };
        let router = Router::new()
            .route(
                "/api/v2/organizations/{org}/workspaces",
                post(create_workspace),
            )
            .route(
                "/api/v2/organizations/{org}/workspaces/{name}",
                get(show_workspace),
            )
            .route("/api/v2/organizations/{org}/projects", get(list_projects))
            .route(
                "/api/v2/workspaces/{id}/vars",
                get(list_vars).post(create_var),
            )
            .route("/api/v2/workspaces/{id}/vars/{var}", patch(update_var))
            .route("/api/v2/workspaces/{id}/runs", get(list_runs))
            .route(
                "/api/v2/workspaces/{id}/current-state-version-outputs",
                get(outputs),
            )
            .route("/api/v2/runs", post(create_run))
            .route("/api/v2/runs/{id}", get(show_run))
            .route("/api/v2/runs/{id}/actions/{action}", post(run_action))
            .with_state(shared);
        let router = faults::layer(router, &faults, error_body, JSONAPI);
        let server = FakeServer::start(router).await?;
        Ok(TerraformFake {
            server,
            inner,
            faults,
            token,
        })
    }

    /// Base URL (the API is under `/api/v2`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every workspace.
    pub fn workspaces(&self) -> Vec<FakeWorkspace> {
        self.inner
            .lock()
            .map(|i| i.workspaces.clone())
            .unwrap_or_default()
    }

    /// Every run.
    pub fn runs(&self) -> Vec<FakeTfRun> {
        self.inner
            .lock()
            .map(|i| i.runs.clone())
            .unwrap_or_default()
    }

    /// The next run's plan errors.
    pub fn fail_next_plan(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.fail_next_plan = true;
        }
    }
}

fn authorized(s: &Shared, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| t == s.token)
}

fn ws_json(w: &FakeWorkspace) -> Value {
    let mut attrs = w.attributes.clone();
    attrs["name"] = json!(w.name);
    json!({"data": {"id": w.id, "type": "workspaces", "attributes": attrs,
        "relationships": {"organization": {"data": {"id": w.organization, "type": "organizations"}}}}})
}

fn run_json(r: &FakeTfRun) -> Value {
    json!({"data": {"id": r.id, "type": "runs", "attributes": {
        "status": r.status, "message": r.message, "is-destroy": r.is_destroy, "auto-apply": r.auto_apply,
        "actions": {"is-confirmable": r.status == "planned", "is-discardable": r.status == "planned"},
    }, "relationships": {"workspace": {"data": {"id": r.workspace_id, "type": "workspaces"}}}}})
}

async fn show_workspace(
    State(s): State<Shared>,
    Path((org, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let Ok(i) = s.inner.lock() else {
        return err(500, "internal");
    };
    match i
        .workspaces
        .iter()
        .find(|w| w.organization == org && w.name == name)
    {
        Some(w) => ok(200, ws_json(w)),
        None => err(404, ""),
    }
}

async fn create_workspace(
    State(s): State<Shared>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return err(400, "JSON body is invalid");
    };
    if body.pointer("/data/type") != Some(&json!("workspaces")) {
        return err(422, "invalid resource type");
    }
    let attrs = body
        .pointer("/data/attributes")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let Some(name) = attrs
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return err(422, "Name can't be blank");
    };
    let Ok(mut i) = s.inner.lock() else {
        return err(500, "internal");
    };
    if i.workspaces
        .iter()
        .any(|w| w.organization == org && w.name == name)
    {
        return json_as(
            422,
            &json!({"errors": [{"status": "422", "title": "invalid attribute", "detail": "Name has already been taken", "source": {"pointer": "/data/attributes/name"}}]}),
            JSONAPI,
        );
    }
    i.seq += 1;
    let w = FakeWorkspace {
        id: format!("ws-{:016}", i.seq),
        organization: org,
        name,
        attributes: attrs,
        vars: BTreeMap::new(),
    };
    i.workspaces.push(w.clone());
    ok(201, ws_json(&w))
}

fn var_json(id: &str, attrs: &Value) -> Value {
    let mut a = attrs.clone();
    if a.get("sensitive") == Some(&json!(true)) {
        a["value"] = Value::Null;
    }
    json!({"id": id, "type": "vars", "attributes": a})
}

async fn list_vars(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let Ok(i) = s.inner.lock() else {
        return err(500, "internal");
    };
    match i.workspaces.iter().find(|w| w.id == id) {
        Some(w) => ok(
            200,
            json!({"data": w.vars.values().map(|(id, a)| var_json(id, a)).collect::<Vec<_>>()}),
        ),
        None => err(404, ""),
    }
}

async fn create_var(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let attrs = body
        .pointer("/data/attributes")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(key) = attrs.get("key").and_then(Value::as_str).map(str::to_string) else {
        return err(422, "Key can't be blank");
    };
    let Ok(mut i) = s.inner.lock() else {
        return err(500, "internal");
    };
    i.seq += 1;
    let var_id = format!("var-{:016}", i.seq);
    let Some(w) = i.workspaces.iter_mut().find(|w| w.id == id) else {
        return err(404, "");
    };
    if w.vars.contains_key(&key) {
        return json_as(
            422,
            &json!({"errors": [{"status": "422", "title": "invalid attribute", "detail": "Key has already been taken"}]}),
            JSONAPI,
        );
    }
    w.vars.insert(key, (var_id.clone(), attrs.clone()));
    ok(201, json!({"data": var_json(&var_id, &attrs)}))
}

async fn update_var(
    State(s): State<Shared>,
    Path((id, var)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let attrs = body
        .pointer("/data/attributes")
        .cloned()
        .unwrap_or(Value::Null);
    let Ok(mut i) = s.inner.lock() else {
        return err(500, "internal");
    };
    let Some(w) = i.workspaces.iter_mut().find(|w| w.id == id) else {
        return err(404, "");
    };
    let Some((_, (vid, a))) = w.vars.iter_mut().find(|(_, (vid, _))| *vid == var) else {
        return err(404, "");
    };
    if let (Value::Object(a), Value::Object(n)) = (a, &attrs) {
        for (k, v) in n {
            a.insert(k.clone(), v.clone());
        }
    }
    let vid = vid.clone();
    let a = w
        .vars
        .values()
        .find(|(x, _)| *x == vid)
        .map(|(_, a)| a.clone());
    ok(
        200,
        json!({"data": var_json(&vid, &a.unwrap_or(Value::Null))}),
    )
}

async fn create_run(
    State(s): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let ws = body
        .pointer("/data/relationships/workspace/data/id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let attrs = body
        .pointer("/data/attributes")
        .cloned()
        .unwrap_or(Value::Null);
    let Ok(mut i) = s.inner.lock() else {
        return err(500, "internal");
    };
    if !i.workspaces.iter().any(|w| w.id == ws) {
        return err(404, "");
    }
    i.seq += 1;
    let fail = std::mem::take(&mut i.fail_next_plan);
    let r = FakeTfRun {
        id: format!("run-{:016}", i.seq),
        workspace_id: ws,
        message: attrs
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("Queued manually via the Terraform Enterprise API")
            .to_string(),
        is_destroy: attrs.get("is-destroy") == Some(&json!(true)),
        auto_apply: attrs.get("auto-apply") == Some(&json!(true)),
        status: if fail { "pending-error" } else { "pending" }.into(),
    };
    i.runs.push(r.clone());
    ok(201, run_json(&r))
}

fn advance(r: &mut FakeTfRun) {
    r.status = match r.status.as_str() {
        "pending-error" => "planning-error",
        "planning-error" => "errored",
        "pending" => "planning",
        "planning" if r.auto_apply => "applying",
        "planning" => "planned",
        "applying" => "applied",
        "confirmed" => "applying",
        other => other,
    }
    .to_string();
}

async fn show_run(State(s): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let Ok(mut i) = s.inner.lock() else {
        return err(500, "internal");
    };
    let Some(r) = i.runs.iter_mut().find(|r| r.id == id) else {
        return err(404, "");
    };
    advance(r);
    ok(200, run_json(r))
}

async fn list_runs(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let Ok(i) = s.inner.lock() else {
        return err(500, "internal");
    };
    if !i.workspaces.iter().any(|w| w.id == id) {
        return err(404, "");
    }
    let runs: Vec<Value> = i
        .runs
        .iter()
        .rev()
        .filter(|r| r.workspace_id == id)
        .map(|r| run_json(r)["data"].clone())
        .collect();
    ok(
        200,
        json!({"data": runs, "meta": {"pagination": {"current-page": 1, "total-pages": 1}}}),
    )
}

async fn run_action(
    State(s): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let Ok(mut i) = s.inner.lock() else {
        return err(500, "internal");
    };
    let Some(r) = i.runs.iter_mut().find(|r| r.id == id) else {
        return err(404, "");
    };
    if r.status != "planned" {
        return json_as(
            409,
            &json!({"errors": [{"status": "409", "title": "transition not allowed"}]}),
            JSONAPI,
        );
    }
    r.status = match action.as_str() {
        "apply" => "confirmed",
        "discard" => "discarded",
        _ => return err(404, ""),
    }
    .into();
    json_as(202, &json!({}), JSONAPI)
}

/// Outputs every applied workspace reports: enough for the example catalog's templates.
fn canned_outputs(w: &FakeWorkspace) -> Vec<(String, Value, bool)> {
    let n = &w.name;
    vec![
        (
            "endpoint".into(),
            json!(format!("{n}.db.example.internal")),
            false,
        ),
        ("port".into(), json!(5432), false),
        ("private_ip".into(), json!("10.20.30.40"), false),
        ("public_ip".into(), json!(""), false),
        (
            "instance_id".into(),
            json!(format!("i-{}", &w.id[3..])),
            false,
        ),
        (
            "bucket_arn".into(),
            json!(format!("arn:aws:s3:::{n}")),
            false,
        ),
        (
            "bucket_regional_domain_name".into(),
            json!(format!("{n}.s3.eu-west-1.amazonaws.com")),
            false,
        ),
        ("admin_password".into(), json!("not-shown"), true),
    ]
}

async fn outputs(State(s): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let Ok(i) = s.inner.lock() else {
        return err(500, "internal");
    };
    let Some(w) = i.workspaces.iter().find(|w| w.id == id) else {
        return err(404, "");
    };
    if !i
        .runs
        .iter()
        .any(|r| r.workspace_id == id && r.status == "applied")
    {
        return err(404, "");
    }
    let data: Vec<Value> = canned_outputs(w)
        .into_iter()
        .enumerate()
        .map(|(n, (name, value, sensitive))| {
            json!({"id": format!("wsout-{n}"), "type": "state-version-outputs", "attributes": {
                "name": name, "sensitive": sensitive, "type": "string",
                "value": if sensitive { Value::Null } else { value },
                "detailed-type": "string"}})
        })
        .collect();
    ok(200, json!({"data": data}))
}

/// Every organization has the projects it is asked about (`filter[names]`), plus `Default Project`.
async fn list_projects(
    State(s): State<Shared>,
    Path(_org): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401, "");
    }
    let name = q
        .get("filter[names]")
        .cloned()
        .unwrap_or_else(|| "Default Project".into());
    let id = format!("prj-{}", name.to_lowercase().replace(' ', "-"));
    ok(
        200,
        json!({"data": [{"id": id, "type": "projects", "attributes": {"name": name}}]}),
    )
}
