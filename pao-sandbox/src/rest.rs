//! Fakes of the JSON APIs the example catalog's `rest` actions call, one server with one
//! prefix per API: `/dns` (a DNS provider), `/kube` (Kubernetes API server, several clusters),
//! `/kafka` (Confluent REST v3), `/vault` (Vault KV v2 and a certificate service), `/grafana`
//! (Grafana HTTP API), `/idp` (OAuth 2.0 token endpoint and client admin API), `/redis` (an
//! asynchronous admin API: 202 + operation to poll).
//!
//! Shared behaviour: an `Idempotency-Key` header makes a repeated call replay the first answer
//! (recorded in [`RestFake::effects`] once), auth is checked per API, and faults are injected
//! for the whole server. Errors as `{"error": {"code": .., "message": ..}}` unless the real API
//! has its own shape (Kubernetes `Status`, Kafka `error_code`, Vault `errors`, Grafana
//! `message`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, patch, post};
use serde_json::{Value, json};

use crate::FakeServer;
use crate::faults::{self, Faults, basic_credentials, bearer, header_str, json};

/// Credentials the fake accepts (the secret values of the example catalog).
#[derive(Debug, Clone)]
pub struct RestCredentials {
    /// `X-API-Key` of the DNS API.
    pub dns_api_key: String,
    /// Bearer token of the Kubernetes API.
    pub kube_token: String,
    /// Basic auth of Kafka REST (user, password).
    pub kafka: (String, String),
    /// `X-Vault-Token`.
    pub vault_token: String,
    /// Bearer token of Grafana.
    pub grafana_token: String,
    /// OAuth 2.0 clients: client id → secret.
    pub oauth_clients: BTreeMap<String, String>,
    /// Static bearer tokens of the certificate service and the Redis admin API.
    pub static_tokens: Vec<String>,
}

impl Default for RestCredentials {
    fn default() -> Self {
        RestCredentials {
            dns_api_key: "sandbox-dns-api-key".into(),
            kube_token: "sandbox-kube-token".into(),
            kafka: ("pao-provisioner".into(), "sandbox-kafka-password".into()),
            vault_token: "sandbox-vault-token".into(),
            grafana_token: "sandbox-grafana-token".into(),
            oauth_clients: [
                ("pao-certs", "sandbox-cert-client-secret"),
                ("pao-redis", "sandbox-redis-client-secret"),
                ("pao-idp-admin", "sandbox-idp-client-secret"),
                ("pao", "sandbox-client-secret"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
            static_tokens: vec![
                "sandbox-cert-service-token".into(),
                "sandbox-redis-admin-token".into(),
            ],
        }
    }
}

/// One effect: a state-changing call that was not an idempotent replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// Response status.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Inner {
    /// Resources by collection path → id → JSON.
    resources: BTreeMap<String, BTreeMap<String, Value>>,
    replay: BTreeMap<String, (u16, Vec<u8>)>,
    effects: Vec<Effect>,
    tokens: Vec<(String, i64)>,
    token_requests: usize,
    zone_serials: BTreeMap<String, u64>,
    operations: BTreeMap<String, (u32, Value)>,
    seq: u64,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    creds: RestCredentials,
    token_ttl: Arc<Mutex<i64>>,
}

/// The running fake.
#[derive(Debug)]
pub struct RestFake {
    server: FakeServer,
    inner: Arc<Mutex<Inner>>,
    token_ttl: Arc<Mutex<i64>>,
    /// Fault injection and request log.
    pub faults: Faults,
    /// Accepted credentials.
    pub credentials: RestCredentials,
}

/// The generic error body.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"error": {"code": status, "message": message}})
}

impl RestFake {
    /// Starts the fake.
    pub async fn start() -> std::io::Result<RestFake> {
        let creds = RestCredentials::default();
        let faults = Faults::default();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let token_ttl = Arc::new(Mutex::new(3600));
        let s = Shared {
            inner: inner.clone(),
            creds: creds.clone(),
            token_ttl: token_ttl.clone(),
        };
        let api = Router::new()
            // DNS provider
            .route("/dns/v1/zones/{zone}/records", post(dns_create))
            .route(
                "/dns/v1/zones/{zone}/records/{id}",
                patch(dns_patch).delete(dns_delete),
            )
            .route(
                "/dns/v1/zones/{zone}/records/{name}/{ty}",
                axum::routing::put(dns_put).delete(dns_delete_named),
            )
            .route("/dns/v1/zones/{zone}/status", get(dns_status))
            // Kubernetes
            .route("/kube/clusters/{*rest}", any(kube))
            // Kafka REST v3
            .route("/kafka/v3/clusters/{c}/topics", post(kafka_topic))
            .route("/kafka/v3/clusters/{c}/topics/{name}", delete(kafka_delete))
            .route("/kafka/v3/clusters/{c}/acls:batch", post(kafka_acls))
            // Vault and the certificate service behind it
            .route("/vault/v1/secret/data/{*path}", post(vault_write))
            .route("/vault/v1/cert-service/certificates", post(cert_issue))
            .route(
                "/vault/v1/cert-service/certificates/{serial}/revoke",
                post(cert_revoke),
            )
            // Grafana
            .route(
                "/grafana/api/dashboards/uid/{uid}",
                get(grafana_get).delete(grafana_delete),
            )
            .route("/grafana/api/folders", post(grafana_folder))
            .route("/grafana/api/dashboards/db", post(grafana_dashboard))
            // Identity provider
            .route("/idp/oauth2/token", post(token))
            .route("/idp/admin/v1/clients", post(idp_create))
            .route("/idp/admin/v1/clients/{id}", delete(idp_delete))
            // Redis admin (asynchronous)
            .route("/redis/v2/caches", post(redis_create))
            .route("/redis/v2/caches/{id}", delete(redis_delete))
            .route("/redis/v2/operations/{id}", get(redis_operation))
            .with_state(s.clone());
        let s2 = s.clone();
        let api = api.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let s = s2.clone();
                idempotency(s, req, next)
            },
        ));
        let router = faults::layer(api, &faults, error_body, "application/json");
        let server = FakeServer::start(router).await?;
        Ok(RestFake {
            server,
            inner,
            token_ttl,
            faults,
            credentials: creds,
        })
    }

    /// Base URL; the APIs are under `/dns`, `/kube`, `/kafka`, `/vault`, `/grafana`, `/idp`,
    /// `/redis`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// State-changing calls, replays excluded.
    pub fn effects(&self) -> Vec<Effect> {
        self.inner
            .lock()
            .map(|i| i.effects.clone())
            .unwrap_or_default()
    }

    /// How many OAuth 2.0 tokens were issued.
    pub fn token_requests(&self) -> usize {
        self.inner.lock().map(|i| i.token_requests).unwrap_or(0)
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, secs: i64) {
        if let Ok(mut t) = self.token_ttl.lock() {
            *t = secs;
        }
    }

    /// Invalidates every issued OAuth token (the next call with one gets 401).
    pub fn revoke_tokens(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.tokens.clear();
        }
    }

    /// Resources of one collection path (e.g. `/dns/v1/zones/z/records`).
    pub fn resources(&self, collection: &str) -> Vec<Value> {
        self.inner
            .lock()
            .map(|i| {
                i.resources
                    .get(collection)
                    .map(|m| m.values().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
}

async fn idempotency(s: Shared, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let key = header_str(req.headers(), "idempotency-key");
    let changing = !matches!(method, Method::GET | Method::HEAD);
    if let Some(k) = &key {
        let replay = s
            .inner
            .lock()
            .ok()
            .and_then(|i| i.replay.get(&format!("{method} {path} {k}")).cloned());
        if let Some((status, body)) = replay {
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap_or_default();
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            r.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            return r;
        }
    }
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    if !changing || !(200..300).contains(&status) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    if let Ok(mut i) = s.inner.lock() {
        i.effects.push(Effect {
            method: method.to_string(),
            path: path.clone(),
            idempotency_key: key.clone(),
            status,
        });
        if let Some(k) = key {
            i.replay
                .insert(format!("{method} {path} {k}"), (status, bytes.to_vec()));
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn unauthorized() -> Response {
    json(401, error_body(401, "invalid or missing credentials"))
}

fn oauth_ok(s: &Shared, headers: &HeaderMap) -> bool {
    let now = chrono::Utc::now().timestamp();
    bearer(headers).is_some_and(|t| {
        s.creds.static_tokens.contains(&t)
            || s.inner
                .lock()
                .is_ok_and(|i| i.tokens.iter().any(|(x, exp)| *x == t && *exp > now))
    })
}

fn next_id(s: &Shared, prefix: &str) -> String {
    let n = s
        .inner
        .lock()
        .map(|mut i| {
            i.seq += 1;
            i.seq
        })
        .unwrap_or(0);
    format!("{prefix}{n:06}")
}

fn store(s: &Shared, collection: &str, id: &str, v: Value) -> bool {
    s.inner.lock().is_ok_and(|mut i| {
        let c = i.resources.entry(collection.to_string()).or_default();
        if c.contains_key(id) {
            return false;
        }
        c.insert(id.to_string(), v);
        true
    })
}

fn remove(s: &Shared, collection: &str, id: &str) -> bool {
    s.inner.lock().is_ok_and(|mut i| {
        i.resources
            .get_mut(collection)
            .is_some_and(|c| c.remove(id).is_some())
    })
}

// ---- DNS

fn dns_auth(s: &Shared, h: &HeaderMap) -> bool {
    header_str(h, "x-api-key").is_some_and(|k| k == s.creds.dns_api_key)
}

fn bump_serial(s: &Shared, zone: &str) -> u64 {
    s.inner
        .lock()
        .map(|mut i| {
            let e = i.zone_serials.entry(zone.to_string()).or_insert(2026010100);
            *e += 1;
            *e
        })
        .unwrap_or(0)
}

async fn dns_create(
    State(s): State<Shared>,
    Path(zone): Path<String>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !dns_auth(&s, &h) {
        return unauthorized();
    }
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return json(422, error_body(422, "name is required"));
    }
    let col = format!("/dns/v1/zones/{zone}/records");
    let exists = s.inner.lock().is_ok_and(|i| {
        i.resources
            .get(&col)
            .is_some_and(|c| c.values().any(|r| r["name"] == json!(name)))
    });
    if exists {
        return json(
            409,
            error_body(409, &format!("record {name} already exists")),
        );
    }
    let id = next_id(&s, "rec-");
    let mut rec = body.clone();
    rec["id"] = json!(id);
    rec["fqdn"] = json!(format!("{name}.{zone}"));
    rec["zone_serial"] = json!(bump_serial(&s, &zone));
    store(&s, &col, &id, rec.clone());
    json(201, rec)
}

async fn dns_patch(
    State(s): State<Shared>,
    Path((zone, id)): Path<(String, String)>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !dns_auth(&s, &h) {
        return unauthorized();
    }
    let col = format!("/dns/v1/zones/{zone}/records");
    let serial = bump_serial(&s, &zone);
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    let Some(rec) = i.resources.get_mut(&col).and_then(|c| c.get_mut(&id)) else {
        return json(404, error_body(404, &format!("record {id} not found")));
    };
    if let (Value::Object(r), Value::Object(b)) = (&mut *rec, &body) {
        for (k, v) in b {
            r.insert(k.clone(), v.clone());
        }
    }
    rec["zone_serial"] = json!(serial);
    json(200, rec.clone())
}

async fn dns_delete(
    State(s): State<Shared>,
    Path((zone, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if !dns_auth(&s, &h) {
        return unauthorized();
    }
    if remove(&s, &format!("/dns/v1/zones/{zone}/records"), &id) {
        axum::http::StatusCode::NO_CONTENT.into_response()
    } else {
        json(404, error_body(404, &format!("record {id} not found")))
    }
}

async fn dns_put(
    State(s): State<Shared>,
    Path((zone, name, ty)): Path<(String, String, String)>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !dns_auth(&s, &h) {
        return unauthorized();
    }
    let col = format!("/dns/v1/zones/{zone}/records");
    let id = format!("{name}/{ty}");
    let existed = remove(&s, &col, &id);
    let mut rec = body.clone();
    rec["id"] = json!(id);
    rec["name"] = json!(name);
    rec["type"] = json!(ty);
    rec["fqdn"] = json!(format!("{name}.{zone}"));
    rec["zone_serial"] = json!(bump_serial(&s, &zone));
    store(&s, &col, &id, rec.clone());
    json(if existed { 200 } else { 201 }, rec)
}

async fn dns_delete_named(
    State(s): State<Shared>,
    Path((zone, name, ty)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Response {
    if !dns_auth(&s, &h) {
        return unauthorized();
    }
    if remove(
        &s,
        &format!("/dns/v1/zones/{zone}/records"),
        &format!("{name}/{ty}"),
    ) {
        bump_serial(&s, &zone);
        axum::http::StatusCode::NO_CONTENT.into_response()
    } else {
        json(404, error_body(404, "record not found"))
    }
}

async fn dns_status(State(s): State<Shared>, Path(zone): Path<String>, h: HeaderMap) -> Response {
    if !dns_auth(&s, &h) {
        return unauthorized();
    }
    let serial = s
        .inner
        .lock()
        .ok()
        .and_then(|i| i.zone_serials.get(&zone).copied())
        .unwrap_or(2026010100);
    json(
        200,
        json!({"zone": zone, "serial": serial, "in_sync": true}),
    )
}

// ---- Kubernetes

fn kube_status(code: u16, reason: &str, message: &str) -> Response {
    json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

async fn kube(
    State(s): State<Shared>,
    Path(rest): Path<String>,
    method: Method,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if bearer(&h).is_none_or(|t| t != s.creds.kube_token) {
        return kube_status(401, "Unauthorized", "Unauthorized");
    }
    let col = format!("/kube/clusters/{rest}");
    match method {
        Method::POST => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return kube_status(400, "BadRequest", "the request body is not JSON");
            };
            let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) else {
                return kube_status(422, "Invalid", "metadata.name: Required value");
            };
            let name = name.to_string();
            obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
            obj["metadata"]["resourceVersion"] = json!("1");
            obj["metadata"]["creationTimestamp"] = json!(chrono::Utc::now().to_rfc3339());
            if store(&s, &col, &name, obj.clone()) {
                json(201, obj)
            } else {
                kube_status(409, "AlreadyExists", &format!("\"{name}\" already exists"))
            }
        }
        Method::DELETE => {
            let (parent, name) = col.rsplit_once('/').unwrap_or((&col, ""));
            if remove(&s, parent, name) {
                json(
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                )
            } else {
                kube_status(404, "NotFound", &format!("\"{name}\" not found"))
            }
        }
        Method::GET => {
            let (parent, name) = col.rsplit_once('/').unwrap_or((&col, ""));
            let found = s
                .inner
                .lock()
                .ok()
                .and_then(|i| i.resources.get(parent).and_then(|c| c.get(name)).cloned());
            match found {
                Some(o) => json(200, o),
                None => kube_status(404, "NotFound", &format!("\"{name}\" not found")),
            }
        }
        _ => kube_status(405, "MethodNotAllowed", "method not allowed"),
    }
}

// ---- Kafka REST v3

fn kafka_auth(s: &Shared, h: &HeaderMap) -> bool {
    basic_credentials(h).is_some_and(|c| c == s.creds.kafka)
}

fn kafka_error(code: u16, error_code: u32, message: &str) -> Response {
    json(code, json!({"error_code": error_code, "message": message}))
}

async fn kafka_topic(
    State(s): State<Shared>,
    Path(c): Path<String>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !kafka_auth(&s, &h) {
        return kafka_error(401, 40101, "Unauthorized");
    }
    let Some(name) = body.get("topic_name").and_then(Value::as_str) else {
        return kafka_error(400, 40002, "topic_name is required");
    };
    let topic = json!({
        "kind": "KafkaTopic", "cluster_id": c, "topic_name": name,
        "topic_id": uuid::Uuid::new_v4().simple().to_string(),
        "partitions_count": body.get("partitions_count"), "replication_factor": body.get("replication_factor"),
        "is_internal": false,
    });
    if store(
        &s,
        &format!("/kafka/v3/clusters/{c}/topics"),
        name,
        topic.clone(),
    ) {
        json(201, topic)
    } else {
        kafka_error(400, 40002, &format!("Topic '{name}' already exists."))
    }
}

async fn kafka_delete(
    State(s): State<Shared>,
    Path((c, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if !kafka_auth(&s, &h) {
        return kafka_error(401, 40101, "Unauthorized");
    }
    if remove(&s, &format!("/kafka/v3/clusters/{c}/topics"), &name) {
        axum::http::StatusCode::NO_CONTENT.into_response()
    } else {
        kafka_error(
            404,
            40403,
            "This server does not host this topic-partition.",
        )
    }
}

async fn kafka_acls(
    State(s): State<Shared>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !kafka_auth(&s, &h) {
        return kafka_error(401, 40101, "Unauthorized");
    }
    if !body.get("data").is_some_and(Value::is_array) {
        return kafka_error(400, 40002, "data must be a list of ACLs");
    }
    axum::http::StatusCode::NO_CONTENT.into_response()
}

// ---- Vault

fn vault_auth(s: &Shared, h: &HeaderMap) -> bool {
    header_str(h, "x-vault-token").is_some_and(|t| t == s.creds.vault_token)
}

async fn vault_write(
    State(s): State<Shared>,
    Path(path): Path<String>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !vault_auth(&s, &h) {
        return json(403, json!({"errors": ["permission denied"]}));
    }
    if !body.get("data").is_some_and(Value::is_object) {
        return json(400, json!({"errors": ["no data provided"]}));
    }
    let version = s
        .inner
        .lock()
        .map(|mut i| {
            let c = i.resources.entry("/vault/secret".into()).or_default();
            let v = c
                .get(&path)
                .and_then(|x| x["version"].as_u64())
                .unwrap_or(0)
                + 1;
            c.insert(path.clone(), json!({"version": v}));
            v
        })
        .unwrap_or(1);
    json(
        200,
        json!({"request_id": uuid::Uuid::new_v4().to_string(), "data": {"created_time": chrono::Utc::now().to_rfc3339(), "deletion_time": "", "destroyed": false, "version": version}}),
    )
}

async fn cert_issue(
    State(s): State<Shared>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !oauth_ok(&s, &h) {
        return unauthorized();
    }
    let Some(cn) = body.get("common_name").and_then(Value::as_str) else {
        return json(422, error_body(422, "common_name is required"));
    };
    let serial = next_id(&s, "4a:3f:").replace(' ', "");
    let cert = json!({
        "serial_number": serial, "common_name": cn,
        "not_after": (chrono::Utc::now() + chrono::Duration::days(90)).to_rfc3339(),
        "stored_at": body.get("store_at").cloned().unwrap_or(Value::Null),
    });
    store(
        &s,
        "/vault/v1/cert-service/certificates",
        &serial,
        cert.clone(),
    );
    json(201, cert)
}

async fn cert_revoke(
    State(s): State<Shared>,
    Path(serial): Path<String>,
    h: HeaderMap,
) -> Response {
    if !oauth_ok(&s, &h) {
        return unauthorized();
    }
    if remove(&s, "/vault/v1/cert-service/certificates", &serial) {
        json(200, json!({"serial_number": serial, "revoked": true}))
    } else {
        json(404, error_body(404, "certificate not found"))
    }
}

// ---- Grafana

fn grafana_auth(s: &Shared, h: &HeaderMap) -> bool {
    bearer(h).is_some_and(|t| t == s.creds.grafana_token)
}

fn grafana_err(code: u16, message: &str) -> Response {
    json(code, json!({"message": message}))
}

async fn grafana_get(State(s): State<Shared>, Path(uid): Path<String>, h: HeaderMap) -> Response {
    if !grafana_auth(&s, &h) {
        return grafana_err(401, "Unauthorized");
    }
    let stored = s.inner.lock().ok().and_then(|i| {
        i.resources
            .get("/grafana/dashboards")
            .and_then(|c| c.get(&uid))
            .cloned()
    });
    let dash = stored.unwrap_or_else(|| json!({"uid": uid, "title": format!("Template {uid}"), "panels": [], "schemaVersion": 39}));
    json(
        200,
        json!({"dashboard": dash, "meta": {"slug": uid, "folderUid": "pao-templates"}}),
    )
}

async fn grafana_delete(
    State(s): State<Shared>,
    Path(uid): Path<String>,
    h: HeaderMap,
) -> Response {
    if !grafana_auth(&s, &h) {
        return grafana_err(401, "Unauthorized");
    }
    if remove(&s, "/grafana/dashboards", &uid) {
        json(200, json!({"title": uid, "message": "Dashboard deleted"}))
    } else {
        grafana_err(404, "Dashboard not found")
    }
}

async fn grafana_folder(
    State(s): State<Shared>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !grafana_auth(&s, &h) {
        return grafana_err(401, "Unauthorized");
    }
    let uid = body
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or("folder")
        .to_string();
    let folder =
        json!({"uid": uid, "title": body.get("title"), "url": format!("/dashboards/f/{uid}")});
    if store(&s, "/grafana/folders", &uid, folder.clone()) {
        json(200, folder)
    } else {
        grafana_err(409, "a folder with the same uid already exists")
    }
}

async fn grafana_dashboard(
    State(s): State<Shared>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !grafana_auth(&s, &h) {
        return grafana_err(401, "Unauthorized");
    }
    let Some(d) = body.get("dashboard").filter(|d| d.is_object()) else {
        return grafana_err(400, "bad request data: dashboard is required");
    };
    let uid = d
        .get("uid")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| next_id(&s, "dash"));
    let slug = d
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("dashboard")
        .to_lowercase()
        .replace(' ', "-");
    let mut stored = d.clone();
    stored["uid"] = json!(uid);
    if !store(&s, "/grafana/dashboards", &uid, stored)
        && body.get("overwrite") != Some(&json!(true))
    {
        return grafana_err(412, "A dashboard with the same uid already exists");
    }
    json(
        200,
        json!({"id": 1, "uid": uid, "url": format!("/d/{uid}/{slug}"), "status": "success", "version": 1, "slug": slug}),
    )
}

// ---- Identity provider

async fn token(State(s): State<Shared>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let form: BTreeMap<String, String> = form_urlencoded(&body);
    let (id, secret) = match basic_credentials(&h) {
        Some(c) => c,
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return json(400, json!({"error": "unsupported_grant_type"}));
    }
    if s.creds.oauth_clients.get(&id) != Some(&secret) {
        return json(
            401,
            json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
        );
    }
    let ttl = s.token_ttl.lock().map(|t| *t).unwrap_or(3600);
    let token = format!("at-{}", uuid::Uuid::new_v4().simple());
    if let Ok(mut i) = s.inner.lock() {
        i.token_requests += 1;
        i.tokens
            .push((token.clone(), chrono::Utc::now().timestamp() + ttl));
    }
    json(
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": form.get("scope")}),
    )
}

fn form_urlencoded(body: &[u8]) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

async fn idp_create(
    State(s): State<Shared>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !oauth_ok(&s, &h) {
        return unauthorized();
    }
    let id = next_id(&s, "client-");
    let mut c = body.clone();
    c["client_id"] = json!(id);
    store(&s, "/idp/admin/v1/clients", &id, c.clone());
    json(201, c)
}

async fn idp_delete(State(s): State<Shared>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if !oauth_ok(&s, &h) {
        return unauthorized();
    }
    if remove(&s, "/idp/admin/v1/clients", &id) {
        axum::http::StatusCode::NO_CONTENT.into_response()
    } else {
        json(404, error_body(404, "client not found"))
    }
}

// ---- Redis admin

async fn redis_create(
    State(s): State<Shared>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !oauth_ok(&s, &h) {
        return unauthorized();
    }
    let id = next_id(&s, "cache-");
    let op = next_id(&s, "op-");
    let name = body.get("name").and_then(Value::as_str).unwrap_or("cache");
    let cache = json!({"id": id, "name": name, "primary_endpoint": format!("{name}.redis.example.internal:6379")});
    store(&s, "/redis/v2/caches", &id, cache.clone());
    if let Ok(mut i) = s.inner.lock() {
        i.operations.insert(op.clone(), (0, cache.clone()));
    }
    json(
        202,
        json!({"operation_id": op, "state": "PENDING", "cache": {"id": id}}),
    )
}

async fn redis_operation(
    State(s): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    if !oauth_ok(&s, &h) {
        return unauthorized();
    }
    let Ok(mut i) = s.inner.lock() else {
        return json(500, error_body(500, "lock"));
    };
    let Some((reads, cache)) = i.operations.get_mut(&id) else {
        return json(404, error_body(404, "operation not found"));
    };
    *reads += 1;
    let state = if *reads >= 2 { "DONE" } else { "RUNNING" };
    json(
        200,
        json!({"operation_id": id, "state": state, "cache": cache}),
    )
}

async fn redis_delete(State(s): State<Shared>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if !oauth_ok(&s, &h) {
        return unauthorized();
    }
    if remove(&s, "/redis/v2/caches", &id) {
        json(
            202,
            json!({"operation_id": next_id(&s, "op-"), "state": "PENDING"}),
        )
    } else {
        json(404, error_body(404, "cache not found"))
    }
}
