//! A fake HashiCorp Vault: the KV version 2 secrets engine (read a version, write a new one),
//! the AppRole and Kubernetes auth methods, and the token endpoints a client uses to keep its
//! token alive (`renew-self`, `lookup-self`). Tokens expire after their TTL and Vault's own
//! answers are used: `403 {"errors":["permission denied"]}` for a missing or expired token,
//! `404 {"errors":[]}` for an absent secret, `503` while sealed. Auth: `X-Vault-Token`.
//!
//! Tests write and rotate secrets, shorten the TTL of the tokens it issues, count logins and
//! renewals, seal it (503) or stop it listening (connection refused).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::FakeServer;
use crate::faults::{self, Faults, header_str, json};

/// The token the fake accepts from the start; it never expires.
pub const ROOT_TOKEN: &str = "hvs.sandbox-root-token";

#[derive(Debug, Clone)]
struct Token {
    expires: Option<Instant>,
    ttl: Duration,
    renewable: bool,
    policies: Vec<String>,
    accessor: String,
}

#[derive(Debug, Clone)]
struct Version {
    data: Map<String, Value>,
    created: String,
}

#[derive(Debug)]
struct Inner {
    /// (mount, path) → versions, version 1 first.
    kv: BTreeMap<(String, String), Vec<Version>>,
    tokens: HashMap<String, Token>,
    approles: HashMap<String, String>,
    kubernetes_roles: HashMap<String, String>,
    denied: BTreeSet<(String, String)>,
    token_ttl: Duration,
    sealed: bool,
    logins: usize,
    renewals: usize,
    seq: u64,
    namespaces: Vec<String>,
}

type Shared = Arc<Mutex<Inner>>;

/// The running fake.
#[derive(Debug)]
pub struct VaultFake {
    server: Mutex<Option<FakeServer>>,
    url: String,
    inner: Shared,
    /// Fault injection and request log.
    pub faults: Faults,
}

/// Vault's error body: `{"errors":[message]}` (`[]` for a 404).
pub fn error_body(status: u16, message: &str) -> Value {
    match status {
        404 => json!({"errors": []}),
        403 => json!({"errors": ["permission denied"]}),
        503 => json!({"errors": ["Vault is sealed"]}),
        _ => json!({"errors": [message]}),
    }
}

fn err(status: u16, message: &str) -> Response {
    json(status, error_body(status, message))
}

impl VaultFake {
    /// Starts the fake with the root token only, a `secret/` KV v2 mount and a one-hour TTL
    /// for the tokens it issues.
    pub async fn start() -> std::io::Result<VaultFake> {
        let faults = Faults::default();
        let mut tokens = HashMap::new();
        tokens.insert(
            ROOT_TOKEN.to_string(),
            Token {
                expires: None,
                ttl: Duration::ZERO,
                renewable: false,
                policies: vec!["root".into()],
                accessor: "accessor-root".into(),
            },
        );
        let inner = Arc::new(Mutex::new(Inner {
            kv: BTreeMap::new(),
            tokens,
            approles: HashMap::new(),
            kubernetes_roles: HashMap::new(),
            denied: BTreeSet::new(),
            token_ttl: Duration::from_secs(3600),
            sealed: false,
            logins: 0,
            renewals: 0,
            seq: 0,
            namespaces: Vec::new(),
        }));
        let router = Router::new()
            .route("/v1/auth/approle/login", post(approle_login))
            .route("/v1/auth/kubernetes/login", post(kubernetes_login))
            .route("/v1/auth/token/renew-self", post(renew_self))
            .route("/v1/auth/token/lookup-self", get(lookup_self))
            .route("/v1/{mount}/data/{*path}", get(read).post(write).put(write))
            .with_state(inner.clone());
        let router = faults::layer(router, &faults, error_body, "application/json");
        let server = FakeServer::start(router).await?;
        Ok(VaultFake {
            url: server.url(),
            server: Mutex::new(Some(server)),
            inner,
            faults,
        })
    }

    /// `http://127.0.0.1:<port>` (the API is under `/v1`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut i| f(&mut i))
    }

    /// Writes a new version of the KV v2 secret `mount/path` holding `data` (a JSON object);
    /// it becomes the current version. Returns its version number.
    pub fn put_secret(&self, mount: &str, path: &str, data: Value) -> u64 {
        let data = match data {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.with(|i| put(i, mount, path, data)).unwrap_or(0)
    }

    /// Accepts an AppRole login with this role and secret id.
    pub fn add_approle(&self, role_id: &str, secret_id: &str) {
        self.with(|i| i.approles.insert(role_id.into(), secret_id.into()));
    }

    /// Accepts a Kubernetes login for `role` with this service-account JWT.
    pub fn add_kubernetes_role(&self, role: &str, jwt: &str) {
        self.with(|i| i.kubernetes_roles.insert(role.into(), jwt.into()));
    }

    /// Creates a token that expires after `ttl` (renewable), as `vault token create` would.
    pub fn create_token(&self, ttl: Duration) -> String {
        self.with(|i| issue(i, ttl, vec!["default".into()]))
            .unwrap_or_default()
    }

    /// The TTL of the tokens issued by later logins (and granted by renewals).
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.with(|i| i.token_ttl = ttl);
    }

    /// Makes every issued token (not the root token) expire now.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        self.with(|i| {
            for t in i.tokens.values_mut() {
                if t.expires.is_some() {
                    t.expires = Some(now);
                }
            }
        });
    }

    /// Reading `mount/path` answers 403 from now on, whatever the token (a policy without it).
    pub fn deny(&self, mount: &str, path: &str) {
        self.with(|i| i.denied.insert((mount.into(), path.into())));
    }

    /// Successful logins so far (AppRole and Kubernetes).
    pub fn logins(&self) -> usize {
        self.with(|i| i.logins).unwrap_or(0)
    }

    /// Successful `renew-self` calls so far.
    pub fn renewals(&self) -> usize {
        self.with(|i| i.renewals).unwrap_or(0)
    }

    /// The `X-Vault-Namespace` headers of the KV reads received so far.
    pub fn namespaces(&self) -> Vec<String> {
        self.with(|i| i.namespaces.clone()).unwrap_or_default()
    }

    /// KV reads received so far (`GET /v1/<mount>/data/...`), whatever the answer.
    pub fn reads(&self) -> usize {
        self.faults
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.uri.contains("/data/"))
            .count()
    }

    /// Sealed, every request answers `503 {"errors":["Vault is sealed"]}`; unsealed, it serves
    /// again with its secrets and tokens kept.
    pub fn set_sealed(&self, sealed: bool) {
        self.with(|i| i.sealed = sealed);
    }

    /// Stops listening: later connections are refused. There is no way back.
    pub fn stop_listening(&self) {
        if let Ok(mut s) = self.server.lock() {
            s.take();
        }
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn put(i: &mut Inner, mount: &str, path: &str, data: Map<String, Value>) -> u64 {
    let versions = i.kv.entry((mount.into(), path.into())).or_default();
    versions.push(Version {
        data,
        created: now_text(),
    });
    versions.len() as u64
}

fn issue(i: &mut Inner, ttl: Duration, policies: Vec<String>) -> String {
    i.seq += 1;
    let token = format!("hvs.{}", uuid::Uuid::new_v4().simple());
    i.tokens.insert(
        token.clone(),
        Token {
            expires: Some(Instant::now() + ttl),
            ttl,
            renewable: true,
            policies,
            accessor: format!("accessor-{}", i.seq),
        },
    );
    token
}

fn auth_body(token: &str, t: &Token, metadata: Value) -> Value {
    json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "wrap_info": null,
        "warnings": null,
        "auth": {
            "client_token": token,
            "accessor": t.accessor,
            "policies": t.policies,
            "token_policies": t.policies,
            "metadata": metadata,
            "lease_duration": t.ttl.as_secs(),
            "renewable": t.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": true,
        }
    })
}

/// The caller's live token, or the status to answer: 403, or 503 while sealed.
fn live_token(i: &Inner, headers: &HeaderMap) -> Result<(String, Token), u16> {
    if i.sealed {
        return Err(503);
    }
    let Some(token) = header_str(headers, "x-vault-token") else {
        return Err(403);
    };
    match i.tokens.get(&token) {
        Some(t) if t.expires.is_none_or(|e| e > Instant::now()) => Ok((token, t.clone())),
        _ => Err(403),
    }
}

fn login(i: &mut Inner, role: &str, method: &str) -> Response {
    i.logins += 1;
    let ttl = i.token_ttl;
    let policies = vec!["default".to_string(), format!("{method}-{role}")];
    let token = issue(i, ttl, policies);
    match i.tokens.get(&token) {
        Some(t) => json(200, auth_body(&token, t, json!({"role_name": role}))),
        None => err(500, "internal error"),
    }
}

fn field(body: &Value, name: &str) -> String {
    body.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

async fn approle_login(State(s): State<Shared>, body: axum::Json<Value>) -> Response {
    let Ok(mut i) = s.lock() else {
        return err(500, "internal error");
    };
    if i.sealed {
        return err(503, "");
    }
    let (role_id, secret_id) = (field(&body, "role_id"), field(&body, "secret_id"));
    if role_id.is_empty() {
        return err(400, "missing role_id");
    }
    match i.approles.get(&role_id) {
        Some(expected) if *expected == secret_id && !secret_id.is_empty() => {
            login(&mut i, &role_id, "approle")
        }
        _ => err(400, "invalid role or secret ID"),
    }
}

async fn kubernetes_login(State(s): State<Shared>, body: axum::Json<Value>) -> Response {
    let Ok(mut i) = s.lock() else {
        return err(500, "internal error");
    };
    if i.sealed {
        return err(503, "");
    }
    let (role, jwt) = (field(&body, "role"), field(&body, "jwt"));
    match i.kubernetes_roles.get(&role) {
        None => err(400, &format!("invalid role name \"{role}\"")),
        Some(expected) if *expected == jwt => login(&mut i, &role, "kubernetes"),
        Some(_) => err(403, ""),
    }
}

async fn renew_self(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let Ok(mut i) = s.lock() else {
        return err(500, "internal error");
    };
    let (token, t) = match live_token(&i, &headers) {
        Ok(t) => t,
        Err(status) => return err(status, ""),
    };
    if !t.renewable {
        return err(400, "lease is not renewable");
    }
    let ttl = i.token_ttl;
    i.renewals += 1;
    let Some(entry) = i.tokens.get_mut(&token) else {
        return err(403, "");
    };
    entry.ttl = ttl;
    entry.expires = Some(Instant::now() + ttl);
    let t = entry.clone();
    json(200, auth_body(&token, &t, Value::Null))
}

async fn lookup_self(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let Ok(i) = s.lock() else {
        return err(500, "internal error");
    };
    let (token, t) = match live_token(&i, &headers) {
        Ok(t) => t,
        Err(status) => return err(status, ""),
    };
    let left = t
        .expires
        .map(|e| e.saturating_duration_since(Instant::now()).as_secs())
        .unwrap_or(0);
    json(
        200,
        json!({"data": {
            "id": token,
            "accessor": t.accessor,
            "policies": t.policies,
            "renewable": t.renewable,
            "creation_ttl": t.ttl.as_secs(),
            "ttl": left,
            "expire_time": t.expires.map(|_| Value::String(now_text())).unwrap_or(Value::Null),
        }}),
    )
}

async fn read(
    State(s): State<Shared>,
    Path((mount, path)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Ok(mut i) = s.lock() else {
        return err(500, "internal error");
    };
    if let Some(ns) = header_str(&headers, "x-vault-namespace") {
        i.namespaces.push(ns);
    }
    if let Err(status) = live_token(&i, &headers) {
        return err(status, "");
    }
    if i.denied.contains(&(mount.clone(), path.clone())) {
        return err(403, "");
    }
    let Some(versions) = i.kv.get(&(mount, path)) else {
        return err(404, "");
    };
    let n = match q.get("version").map(|v| v.parse::<usize>()) {
        None | Some(Ok(0)) => versions.len(),
        Some(Ok(n)) => n,
        Some(Err(_)) => return err(400, "invalid version"),
    };
    let Some(v) = n.checked_sub(1).and_then(|k| versions.get(k)) else {
        return err(404, "");
    };
    json(
        200,
        json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": {
                "data": v.data,
                "metadata": {
                    "created_time": v.created,
                    "custom_metadata": null,
                    "deletion_time": "",
                    "destroyed": false,
                    "version": n,
                }
            },
            "wrap_info": null,
            "warnings": null,
            "auth": null,
        }),
    )
}

async fn write(
    State(s): State<Shared>,
    Path((mount, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    let Ok(mut i) = s.lock() else {
        return err(500, "internal error");
    };
    if let Err(status) = live_token(&i, &headers) {
        return err(status, "");
    }
    let Some(data) = body.get("data").and_then(Value::as_object).cloned() else {
        return err(400, "no data provided");
    };
    let version = put(&mut i, &mount, &path, data);
    let created =
        i.kv.get(&(mount, path))
            .and_then(|v| v.last())
            .map(|v| v.created.clone())
            .unwrap_or_default();
    json(
        200,
        json!({"data": {
            "created_time": created,
            "custom_metadata": null,
            "deletion_time": "",
            "destroyed": false,
            "version": version,
        }}),
    )
}
