//! A fake JIRA (Cloud REST v3 and Server/Data Center REST v2): create issue (v3 insists on an
//! Atlassian Document Format description, v2 on a string), get issue, search by JQL (label and
//! project clauses, `startAt`/`maxResults` pagination, and Cloud's `/search/jql` with
//! `nextPageToken`), transitions, comments and issue links; errors as
//! `{"errorMessages":[...],"errors":{...}}`. Auth: Basic `email:api-token` or Bearer PAT.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::FakeServer;
use crate::faults::{self, Faults, basic_credentials, bearer, json};

/// One issue held by the fake.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeIssue {
    /// Numeric id.
    pub id: String,
    /// Key, e.g. `OPS-2`.
    pub key: String,
    /// The `fields` as sent (with `status` and `resolution` maintained by the fake).
    pub fields: Value,
    /// Status name.
    pub status: String,
    /// Comments (bodies as sent: text for v2, ADF for v3).
    pub comments: Vec<Value>,
    /// Links as (type, other issue key).
    pub links: Vec<(String, String)>,
    /// API version the issue was created through (2 or 3).
    pub created_via: u8,
}

#[derive(Debug, Default)]
struct Inner {
    issues: BTreeMap<String, FakeIssue>,
    next_id: u64,
    counters: BTreeMap<String, u64>,
}

/// Credentials the fake accepts.
#[derive(Debug, Clone)]
pub struct JiraCredentials {
    /// Basic auth user (Cloud: the account e-mail).
    pub email: String,
    /// Basic auth password (Cloud: the API token).
    pub api_token: String,
    /// Bearer personal access token (Data Center).
    pub pat: String,
}

impl Default for JiraCredentials {
    fn default() -> Self {
        JiraCredentials {
            email: "pao-bot@example.com".into(),
            api_token: "sandbox-jira-api-token".into(),
            pat: "sandbox-jira-pat".into(),
        }
    }
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    creds: JiraCredentials,
    base: Arc<Mutex<String>>,
}

/// The running fake.
#[derive(Debug)]
pub struct JiraFake {
    server: FakeServer,
    inner: Arc<Mutex<Inner>>,
    /// Fault injection and request log.
    pub faults: Faults,
    /// Accepted credentials.
    pub credentials: JiraCredentials,
}

/// The JIRA error body.
pub fn error_body(_status: u16, message: &str) -> Value {
    json!({"errorMessages": [message], "errors": {}})
}

const WORKFLOW: &[(&str, &str, &str)] = &[
    ("11", "To Do", "To Do"),
    ("21", "Start Progress", "In Progress"),
    ("31", "Done", "Done"),
    ("41", "Won't Do", "Won't Do"),
    ("51", "Cancel", "Cancelled"),
];

impl JiraFake {
    /// Starts the fake with default credentials and one existing issue, `OPS-1`.
    pub async fn start() -> std::io::Result<JiraFake> {
        let creds = JiraCredentials::default();
        let faults = Faults::default();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared {
            inner: inner.clone(),
            creds: creds.clone(),
            base: Arc::default(),
        };
        let router = Router::new()
            .route("/rest/api/{v}/issue", post(create_issue))
            .route("/rest/api/{v}/issue/{key}", get(get_issue))
            .route(
                "/rest/api/{v}/issue/{key}/transitions",
                get(list_transitions).post(do_transition),
            )
            .route(
                "/rest/api/{v}/issue/{key}/comment",
                get(list_comments).post(add_comment),
            )
            .route("/rest/api/{v}/issueLink", post(add_link))
            .route("/rest/api/{v}/search", get(search_get).post(search_post))
            .route("/rest/api/{v}/search/jql", get(search_get))
            .with_state(shared.clone());
        let router = faults::layer(router, &faults, error_body, "application/json");
        let server = FakeServer::start(router).await?;
        if let Ok(mut b) = shared.base.lock() {
            *b = server.url();
        }
        let fake = JiraFake {
            server,
            inner,
            faults,
            credentials: creds,
        };
        fake.seed("OPS", "Existing on-call runbook");
        Ok(fake)
    }

    /// Base URL (no trailing slash).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every issue, by key.
    pub fn issues(&self) -> Vec<FakeIssue> {
        self.inner
            .lock()
            .map(|i| i.issues.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One issue.
    pub fn issue(&self, key: &str) -> Option<FakeIssue> {
        self.inner.lock().ok()?.issues.get(key).cloned()
    }

    /// Issues carrying this label.
    pub fn issues_labelled(&self, label: &str) -> Vec<FakeIssue> {
        self.issues()
            .into_iter()
            .filter(|i| has_label(&i.fields, label))
            .collect()
    }

    /// Sets an issue's status as a person working the ticket would.
    pub fn set_status(&self, key: &str, status: &str) {
        if let Ok(mut i) = self.inner.lock()
            && let Some(issue) = i.issues.get_mut(key)
        {
            issue.status = status.to_string();
        }
    }

    fn seed(&self, project: &str, summary: &str) {
        if let Ok(mut i) = self.inner.lock() {
            let fields = json!({"project": {"key": project}, "summary": summary, "issuetype": {"name": "Task"}, "labels": []});
            insert_issue(&mut i, project, fields, 2);
        }
    }
}

fn has_label(fields: &Value, label: &str) -> bool {
    fields
        .get("labels")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|x| x.as_str() == Some(label)))
}

fn insert_issue(i: &mut Inner, project: &str, fields: Value, version: u8) -> FakeIssue {
    i.next_id += 1;
    let id = (10000 + i.next_id).to_string();
    let n = i.counters.entry(project.to_string()).or_insert(0);
    *n += 1;
    let key = format!("{project}-{n}");
    let issue = FakeIssue {
        id,
        key: key.clone(),
        fields,
        status: "To Do".into(),
        comments: Vec::new(),
        links: Vec::new(),
        created_via: version,
    };
    i.issues.insert(key, issue.clone());
    issue
}

fn authorized(s: &Shared, headers: &HeaderMap) -> bool {
    if let Some((u, p)) = basic_credentials(headers) {
        return u == s.creds.email && p == s.creds.api_token;
    }
    bearer(headers).is_some_and(|t| t == s.creds.pat)
}

fn unauthorized() -> Response {
    json(
        401,
        json!({"errorMessages": ["You are not authenticated. Authentication required to perform this operation."], "errors": {}}),
    )
}

fn version(v: &str) -> Option<u8> {
    match v {
        "2" => Some(2),
        "3" | "latest" => Some(3),
        _ => None,
    }
}

fn issue_json(base: &str, v: u8, issue: &FakeIssue) -> Value {
    let mut fields = issue.fields.clone();
    if let Value::Object(m) = &mut fields {
        let category = match issue.status.as_str() {
            "To Do" => "new",
            "In Progress" => "indeterminate",
            _ => "done",
        };
        m.insert(
            "status".into(),
            json!({"name": issue.status, "statusCategory": {"key": category}}),
        );
        let resolution = match issue.status.as_str() {
            "Done" => json!({"name": "Done"}),
            "Won't Do" => json!({"name": "Won't Do"}),
            "Cancelled" => json!({"name": "Cancelled"}),
            _ => Value::Null,
        };
        m.insert("resolution".into(), resolution);
    }
    json!({
        "id": issue.id,
        "key": issue.key,
        "self": format!("{base}/rest/api/{v}/issue/{}", issue.id),
        "fields": fields,
    })
}

async fn create_issue(
    State(s): State<Shared>,
    Path(v): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let Some(v) = version(&v) else {
        return json(404, error_body(404, "No API version"));
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return json(
            400,
            json!({"errorMessages": ["Unexpected character: was expecting a JSON value"], "errors": {}}),
        );
    };
    let fields = body.get("fields").cloned().unwrap_or(Value::Null);
    let mut errors = serde_json::Map::new();
    let project = fields
        .pointer("/project/key")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if project.is_empty() {
        errors.insert("project".into(), json!("Specify a valid project ID or key"));
    }
    if fields
        .get("summary")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.insert(
            "summary".into(),
            json!("You must specify a summary of the issue."),
        );
    }
    if fields.pointer("/issuetype/name").is_none() && fields.pointer("/issuetype/id").is_none() {
        errors.insert("issuetype".into(), json!("Specify an issue type"));
    }
    match (v, fields.get("description")) {
        (3, Some(d)) if !(d.get("type") == Some(&json!("doc")) && d.get("version").is_some()) => {
            errors.insert(
                "description".into(),
                json!("Operation value must be an Atlassian Document (see the Atlassian Document Format)"),
            );
        }
        (2, Some(d)) if !d.is_string() => {
            errors.insert(
                "description".into(),
                json!("Operation value must be a string"),
            );
        }
        _ => {}
    }
    if !errors.is_empty() {
        return json(400, json!({"errorMessages": [], "errors": errors}));
    }
    let base = s.base.lock().map(|b| b.clone()).unwrap_or_default();
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    let issue = insert_issue(&mut i, &project, fields, v);
    json(
        201,
        json!({"id": issue.id, "key": issue.key, "self": format!("{base}/rest/api/{v}/issue/{}", issue.id)}),
    )
}

fn find<'a>(i: &'a mut Inner, key: &str) -> Option<&'a mut FakeIssue> {
    if i.issues.contains_key(key) {
        return i.issues.get_mut(key);
    }
    i.issues.values_mut().find(|x| x.id == key)
}

fn not_found() -> Response {
    json(
        404,
        json!({"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}),
    )
}

async fn get_issue(
    State(s): State<Shared>,
    Path((v, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let v = version(&v).unwrap_or(2);
    let base = s.base.lock().map(|b| b.clone()).unwrap_or_default();
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    match find(&mut i, &key) {
        Some(issue) => json(200, issue_json(&base, v, issue)),
        None => not_found(),
    }
}

async fn list_transitions(
    State(s): State<Shared>,
    Path((_v, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    let Some(issue) = find(&mut i, &key) else {
        return not_found();
    };
    let list: Vec<Value> = WORKFLOW
        .iter()
        .filter(|(_, _, to)| *to != issue.status)
        .map(|(id, name, to)| json!({"id": id, "name": name, "to": {"name": to}}))
        .collect();
    json(200, json!({"expand": "transitions", "transitions": list}))
}

async fn do_transition(
    State(s): State<Shared>,
    Path((_v, key)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    let Some(issue) = find(&mut i, &key) else {
        return not_found();
    };
    let id = body.pointer("/transition/id").and_then(Value::as_str);
    match WORKFLOW
        .iter()
        .find(|(tid, _, to)| Some(*tid) == id && *to != issue.status)
    {
        Some((_, _, to)) => {
            issue.status = to.to_string();
            axum::http::StatusCode::NO_CONTENT.into_response()
        }
        None => json(
            400,
            json!({"errorMessages": ["Transition id is not valid for this issue."], "errors": {}}),
        ),
    }
}

async fn add_comment(
    State(s): State<Shared>,
    Path((v, key)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let v = version(&v).unwrap_or(2);
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    let Some(issue) = find(&mut i, &key) else {
        return not_found();
    };
    let Some(text) = body.get("body").cloned() else {
        return json(
            400,
            json!({"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}}),
        );
    };
    if v == 3 && text.get("type") != Some(&json!("doc")) {
        return json(
            400,
            json!({"errorMessages": [], "errors": {"comment": "Comment body must be an Atlassian Document"}}),
        );
    }
    issue.comments.push(text.clone());
    json(
        201,
        json!({"id": (issue.comments.len() + 10000).to_string(), "body": text}),
    )
}

async fn add_link(
    State(s): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let ty = body
        .pointer("/type/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let inward = body
        .pointer("/inwardIssue/key")
        .and_then(Value::as_str)
        .unwrap_or("");
    let outward = body
        .pointer("/outwardIssue/key")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    if !i.issues.contains_key(inward) || !i.issues.contains_key(outward) {
        return json(
            404,
            json!({"errorMessages": ["No issue link can be created: issue not found."], "errors": {}}),
        );
    }
    if !["Relates", "Blocks", "Duplicate", "Cloners"].contains(&ty.as_str()) {
        return json(
            404,
            json!({"errorMessages": [format!("No issue link type with name '{ty}' found.")], "errors": {}}),
        );
    }
    if let Some(issue) = i.issues.get_mut(inward) {
        issue.links.push((ty, outward.to_string()));
    }
    axum::http::StatusCode::CREATED.into_response()
}

async fn search_get(
    State(s): State<Shared>,
    Path(v): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    search(
        s,
        v,
        headers,
        q.into_iter().map(|(k, v)| (k, json!(v))).collect(),
    )
    .await
}

async fn search_post(
    State(s): State<Shared>,
    Path(v): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let q = body
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    search(s, v, headers, q).await
}

/// Understands `labels = "x"`, `project = X` and `key = X` joined by `AND`.
fn matches_jql(issue: &FakeIssue, jql: &str) -> Result<bool, String> {
    for clause in jql.split(" AND ").map(str::trim).filter(|c| !c.is_empty()) {
        let (field, value) = clause
            .split_once('=')
            .ok_or_else(|| format!("Error in the JQL Query: '{clause}' is not understood."))?;
        let value = value.trim().trim_matches('"');
        let ok = match field.trim() {
            "labels" => has_label(&issue.fields, value),
            "project" => issue.key.starts_with(&format!("{value}-")),
            "key" | "issuekey" => issue.key == value,
            other => {
                return Err(format!(
                    "Field '{other}' does not exist or you do not have permission to view it."
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn search(s: Shared, v: String, headers: HeaderMap, q: BTreeMap<String, Value>) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let v = version(&v).unwrap_or(2);
    let jql = q
        .get("jql")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let num = |k: &str, d: usize| {
        q.get(k)
            .and_then(|x| {
                x.as_u64()
                    .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            })
            .map(|x| x as usize)
            .unwrap_or(d)
    };
    let max = num("maxResults", 50).clamp(1, 100);
    let start = q
        .get("nextPageToken")
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| num("startAt", 0));
    let base = s.base.lock().map(|b| b.clone()).unwrap_or_default();
    let Ok(i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    let mut hits = Vec::new();
    for issue in i.issues.values() {
        match matches_jql(issue, &jql) {
            Ok(true) => hits.push(issue_json(&base, v, issue)),
            Ok(false) => {}
            Err(e) => return json(400, json!({"errorMessages": [e], "errors": {}})),
        }
    }
    let total = hits.len();
    let page: Vec<Value> = hits.into_iter().skip(start).take(max).collect();
    let is_last = start + page.len() >= total;
    let mut out = json!({"startAt": start, "maxResults": max, "total": total, "issues": page, "isLast": is_last});
    if !is_last {
        out["nextPageToken"] = json!((start + max).to_string());
    }
    json(200, out)
}

/// `GET .../comment`: `startAt`/`maxResults` paged, like JIRA.
async fn list_comments(
    State(s): State<Shared>,
    Path((_v, key)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let start: usize = q.get("startAt").and_then(|x| x.parse().ok()).unwrap_or(0);
    let max: usize = q
        .get("maxResults")
        .and_then(|x| x.parse().ok())
        .unwrap_or(50)
        .clamp(1, 100);
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    let Some(issue) = find(&mut i, &key) else {
        return not_found();
    };
    let total = issue.comments.len();
    let page: Vec<Value> = issue
        .comments
        .iter()
        .enumerate()
        .skip(start)
        .take(max)
        .map(|(n, b)| json!({"id": (n + 10001).to_string(), "body": b}))
        .collect();
    json(
        200,
        json!({"startAt": start, "maxResults": max, "total": total, "comments": page}),
    )
}
