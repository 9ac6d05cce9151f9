//! A fake GitHub REST API for Actions: `workflow_dispatch` (204, no body, no run id — like
//! GitHub), workflow runs listed per workflow with `page`/`per_page` pagination, a run that
//! appears only after a short delay and then goes queued → in_progress → completed, run
//! artifacts, and GitHub App installation tokens. Errors as
//! `{"message": ..., "documentation_url": ...}`. Auth: a PAT, or an installation token minted
//! from an App JWT (RS256, `iss` = app id).
//!
//! A dispatched workflow's `run-name` is taken to include the input named
//! [`CORRELATION_INPUT`], as PAO's docs ask workflow authors to do, so a run's `display_title`
//! carries the correlation id.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::FakeServer;
use crate::faults::{self, Faults, bearer, json};

/// The workflow input the fake copies into each run's `display_title`.
pub const CORRELATION_INPUT: &str = "pao_correlation_id";

/// A run held by the fake.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRun {
    /// Run id.
    pub id: u64,
    /// `owner/repo`.
    pub repo: String,
    /// Workflow file or id as dispatched.
    pub workflow: String,
    /// Git ref.
    pub git_ref: String,
    /// Inputs as dispatched.
    pub inputs: Value,
    /// List calls before the run is visible.
    pub hidden_for: u32,
    /// Get calls so far (drives the status).
    pub polls: u32,
    /// Conclusion once completed.
    pub conclusion: String,
}

#[derive(Debug, Default)]
struct Inner {
    runs: Vec<FakeRun>,
    next_id: u64,
    installation_tokens: Vec<String>,
    conclusion: Option<String>,
}

/// Credentials the fake accepts.
#[derive(Debug, Clone)]
pub struct GithubCredentials {
    /// Personal access token.
    pub pat: String,
    /// GitHub App id whose JWTs are accepted.
    pub app_id: String,
    /// Installation of that app.
    pub installation_id: u64,
}

impl Default for GithubCredentials {
    fn default() -> Self {
        GithubCredentials {
            pat: "ghp_sandboxPersonalAccessToken0001".into(),
            app_id: "424242".into(),
            installation_id: 777,
        }
    }
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    creds: GithubCredentials,
    base: Arc<Mutex<String>>,
}

/// The running fake.
#[derive(Debug)]
pub struct GithubFake {
    server: FakeServer,
    inner: Arc<Mutex<Inner>>,
    /// Fault injection and request log.
    pub faults: Faults,
    /// Accepted credentials.
    pub credentials: GithubCredentials,
}

/// GitHub's error body.
pub fn error_body(status: u16, message: &str) -> Value {
    let message = match status {
        401 => "Bad credentials",
        404 => "Not Found",
        _ => message,
    };
    json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.to_string()})
}

impl GithubFake {
    /// Starts the fake.
    pub async fn start() -> std::io::Result<GithubFake> {
        let creds = GithubCredentials::default();
        let faults = Faults::default();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared {
            inner: inner.clone(),
            creds: creds.clone(),
            base: Arc::default(),
        };
        let router = Router::new()
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{wf}/dispatches",
                post(dispatch),
            )
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{wf}/runs",
                get(list_runs),
            )
            .route("/repos/{owner}/{repo}/actions/runs/{id}", get(get_run))
            .route(
                "/repos/{owner}/{repo}/actions/runs/{id}/artifacts",
                get(artifacts),
            )
            .route(
                "/app/installations/{id}/access_tokens",
                post(installation_token),
            )
            .route("/repos/{owner}/{repo}", get(get_repo))
            .with_state(shared.clone());
        let router = faults::layer(
            router,
            &faults,
            error_body,
            "application/json; charset=utf-8",
        );
        let server = FakeServer::start(router).await?;
        if let Ok(mut b) = shared.base.lock() {
            *b = server.url();
        }
        Ok(GithubFake {
            server,
            inner,
            faults,
            credentials: creds,
        })
    }

    /// API base URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every dispatched run.
    pub fn runs(&self) -> Vec<FakeRun> {
        self.inner
            .lock()
            .map(|i| i.runs.clone())
            .unwrap_or_default()
    }

    /// Makes later runs conclude with this (`success` by default, or `failure`...).
    pub fn conclude_with(&self, conclusion: &str) {
        if let Ok(mut i) = self.inner.lock() {
            i.conclusion = Some(conclusion.to_string());
        }
    }

    /// Installation tokens minted so far.
    pub fn installation_tokens(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|i| i.installation_tokens.clone())
            .unwrap_or_default()
    }
}

fn authorized(s: &Shared, headers: &HeaderMap) -> bool {
    let Some(t) = bearer(headers) else {
        return false;
    };
    t == s.creds.pat
        || s.inner
            .lock()
            .is_ok_and(|i| i.installation_tokens.contains(&t))
}

fn err(status: u16) -> Response {
    json(status, error_body(status, ""))
}

fn run_json(base: &str, r: &FakeRun) -> Value {
    let (status, conclusion) = match r.polls {
        0 => ("queued", Value::Null),
        1 => ("in_progress", Value::Null),
        _ => ("completed", json!(r.conclusion)),
    };
    let correlation = r
        .inputs
        .get(CORRELATION_INPUT)
        .and_then(Value::as_str)
        .unwrap_or("");
    json!({
        "id": r.id,
        "name": r.workflow,
        "display_title": format!("{} {}", r.workflow, correlation).trim().to_string(),
        "event": "workflow_dispatch",
        "head_branch": r.git_ref,
        "status": status,
        "conclusion": conclusion,
        "run_attempt": 1,
        "html_url": format!("https://github.com/{}/actions/runs/{}", r.repo, r.id),
        "url": format!("{base}/repos/{}/actions/runs/{}", r.repo, r.id),
        "created_at": "2026-01-01T00:00:00Z",
    })
}

async fn dispatch(
    State(s): State<Shared>,
    Path((owner, repo, wf)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401);
    }
    let Some(git_ref) = body.get("ref").and_then(Value::as_str) else {
        return json(
            422,
            json!({"message": "Invalid request.\n\n\"ref\" wasn't supplied.", "documentation_url": "https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event"}),
        );
    };
    if repo == "missing" {
        return err(404);
    }
    let inputs = body.get("inputs").cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = inputs.as_object()
        && m.values().any(|v| !v.is_string())
    {
        return json(
            422,
            json!({"message": "Invalid request.\n\nFor 'properties/inputs', values must be strings.", "documentation_url": "https://docs.github.com/rest"}),
        );
    }
    let Ok(mut i) = s.inner.lock() else {
        return err(500);
    };
    i.next_id += 1;
    let id = 9_000_000 + i.next_id;
    let conclusion = i.conclusion.clone().unwrap_or_else(|| "success".into());
    i.runs.push(FakeRun {
        id,
        repo: format!("{owner}/{repo}"),
        workflow: wf,
        git_ref: git_ref.to_string(),
        inputs,
        hidden_for: 1,
        polls: 0,
        conclusion,
    });
    StatusCode::NO_CONTENT.into_response()
}

async fn list_runs(
    State(s): State<Shared>,
    Path((owner, repo, wf)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401);
    }
    let base = s.base.lock().map(|b| b.clone()).unwrap_or_default();
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let Ok(mut i) = s.inner.lock() else {
        return err(500);
    };
    let full = format!("{owner}/{repo}");
    let mut visible = Vec::new();
    for r in i.runs.iter_mut().rev() {
        if r.repo != full || r.workflow != wf {
            continue;
        }
        if r.hidden_for > 0 {
            r.hidden_for -= 1;
            continue;
        }
        if q.get("event").is_some_and(|e| e != "workflow_dispatch") {
            continue;
        }
        visible.push(run_json(&base, r));
    }
    let total = visible.len();
    let runs: Vec<Value> = visible
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    json(200, json!({"total_count": total, "workflow_runs": runs}))
}

async fn get_run(
    State(s): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401);
    }
    let base = s.base.lock().map(|b| b.clone()).unwrap_or_default();
    let Ok(mut i) = s.inner.lock() else {
        return err(500);
    };
    let full = format!("{owner}/{repo}");
    match i.runs.iter_mut().find(|r| r.id == id && r.repo == full) {
        Some(r) => {
            let out = run_json(&base, r);
            r.polls += 1;
            json(200, out)
        }
        None => err(404),
    }
}

async fn artifacts(
    State(s): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401);
    }
    let base = s.base.lock().map(|b| b.clone()).unwrap_or_default();
    json(
        200,
        json!({"total_count": 1, "artifacts": [{
            "id": id + 1,
            "name": "provision-report",
            "size_in_bytes": 2048,
            "expired": false,
            "archive_download_url": format!("{base}/repos/{owner}/{repo}/actions/artifacts/{}/zip", id + 1),
        }]}),
    )
}

/// Checks an App JWT: three base64url parts, RS256 header, `iss` = app id, unexpired. The
/// signature itself is not verified (the fake holds no public key).
fn valid_app_jwt(s: &Shared, token: &str) -> bool {
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return false;
    }
    let decode = |p: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    let (Some(h), Some(c)) = (decode(parts[0]), decode(parts[1])) else {
        return false;
    };
    let iss = match c.get("iss") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return false,
    };
    let now = chrono::Utc::now().timestamp();
    h.get("alg") == Some(&json!("RS256"))
        && iss == s.creds.app_id
        && c.get("exp")
            .and_then(Value::as_i64)
            .is_some_and(|e| e > now)
}

async fn installation_token(
    State(s): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let Some(jwt) = bearer(&headers) else {
        return err(401);
    };
    if !valid_app_jwt(&s, &jwt) {
        return json(
            401,
            json!({"message": "A JSON web token could not be decoded", "documentation_url": "https://docs.github.com/rest"}),
        );
    }
    if id != s.creds.installation_id {
        return err(404);
    }
    let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    if let Ok(mut i) = s.inner.lock() {
        i.installation_tokens.push(token.clone());
    }
    json(
        201,
        json!({"token": token, "expires_at": expires, "permissions": {"actions": "write"}, "repository_selection": "all"}),
    )
}

async fn get_repo(
    State(s): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return err(401);
    }
    if repo == "missing" {
        return err(404);
    }
    json(
        200,
        json!({"name": repo, "full_name": format!("{owner}/{repo}"), "default_branch": "main", "private": true}),
    )
}
