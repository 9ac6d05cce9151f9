//! Secrets in HashiCorp Vault's KV version 2 engine, read over Vault's HTTP API.
//!
//! PAO logs in (a token, AppRole or Kubernetes), keeps its token alive lazily — at a lookup,
//! a token past two thirds of its lease is renewed (`renew-self`), and replaced by a new login
//! when renewal fails, when it expired, or when Vault answers 403 — and caches each value for
//! `cache_ttl`, so a rotated secret is seen within that time without a restart. No background
//! task: nothing outlives the provider.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use pao_core::secrets::{SecretError, SecretProvider};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{SecretText, plain_name};
use crate::config::{ConfigError, duration_text};

/// The largest Vault response read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The `[secret_provider]` settings of `kind = "vault"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Vault's base URL, e.g. `https://vault.example.com:8200`.
    pub address: String,
    /// Where the KV v2 engine is mounted. Default `secret`.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// A folder under the mount every path is in, e.g. `pao/`. Default none.
    #[serde(default)]
    pub path_prefix: String,
    /// The key of the secret's data that holds the value. Default `value`.
    #[serde(default = "default_field")]
    pub field: String,
    /// Vault Enterprise namespace (`X-Vault-Namespace`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// How PAO logs in.
    pub auth: VaultAuth,
    /// Secret name → `path[#key][@version]` (under `path_prefix`), for names that are not
    /// `path_prefix + name` with key `field`.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// How long a value is reused before Vault is asked again. Default `60s`.
    #[serde(default = "default_cache_ttl", with = "duration_text")]
    pub cache_ttl: Duration,
    /// Time for one request to Vault. Default `10s`.
    #[serde(default = "default_timeout", with = "duration_text")]
    pub request_timeout: Duration,
    /// PEM file of the CA that signed Vault's certificate, when it is not a public one.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

fn default_mount() -> String {
    "secret".into()
}

fn default_field() -> String {
    "value".into()
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_approle_mount() -> String {
    "approle".into()
}

fn default_kubernetes_mount() -> String {
    "kubernetes".into()
}

fn default_jwt_file() -> PathBuf {
    PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
}

/// How PAO logs in to Vault (`[secret_provider.auth]`, tagged by `method`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum VaultAuth {
    /// A token issued elsewhere (e.g. written by Vault Agent), given as a value or a file.
    /// The file is read again when Vault refuses the token.
    Token {
        /// The token.
        #[serde(default)]
        token: Option<SecretText>,
        /// A file holding the token.
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    /// `POST /v1/auth/<mount>/login` with a role id and a secret id.
    Approle {
        /// The role id.
        role_id: String,
        /// The secret id.
        #[serde(default)]
        secret_id: Option<SecretText>,
        /// A file holding the secret id (read at each login).
        #[serde(default)]
        secret_id_file: Option<PathBuf>,
        /// Where the AppRole method is mounted. Default `approle`.
        #[serde(default = "default_approle_mount")]
        mount: String,
    },
    /// `POST /v1/auth/<mount>/login` with the pod's service-account token.
    Kubernetes {
        /// The Vault role.
        role: String,
        /// The service-account token file (read at each login). Default
        /// `/var/run/secrets/kubernetes.io/serviceaccount/token`.
        #[serde(default = "default_jwt_file")]
        jwt_file: PathBuf,
        /// Where the Kubernetes method is mounted. Default `kubernetes`.
        #[serde(default = "default_kubernetes_mount")]
        mount: String,
    },
}

impl VaultAuth {
    fn method(&self) -> &'static str {
        match self {
            VaultAuth::Token { .. } => "token",
            VaultAuth::Approle { .. } => "approle",
            VaultAuth::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// Where one secret is: path under the mount, key in its data, pinned version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    path: String,
    key: String,
    version: Option<u64>,
}

/// Parses `path[#key][@version]`.
fn parse_target(text: &str, default_key: &str) -> Result<Target, String> {
    let (rest, version) = match text.rsplit_once('@') {
        Some((r, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            let n =
                v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("`{text}`: the version after `@` is a number from 1 up")
                })?;
            (r, Some(n))
        }
        _ => (text, None),
    };
    let (path, key) = match rest.split_once('#') {
        Some((p, k)) => (p, k),
        None => (rest, default_key),
    };
    if key.is_empty() {
        return Err(format!("`{text}`: the key after `#` is empty"));
    }
    if path.is_empty()
        || path.starts_with('/')
        || path.ends_with('/')
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "`{text}`: the path is relative to the mount, without empty, `.` or `..` segments"
        ));
    }
    Ok(Target {
        path: path.to_string(),
        key: key.to_string(),
        version,
    })
}

/// A failure before it is tied to a secret name.
#[derive(Debug)]
enum Fail {
    Denied(String),
    Unavailable(String),
}

/// What a read answered.
enum ReadOutcome {
    Value(String),
    Missing,
    MissingKey,
    Forbidden,
}

/// A token and what Vault said about its lease.
struct Session {
    token: SecretText,
    obtained: Instant,
    /// `None`: no expiry known (a given token, or a lease of 0).
    lease: Option<Duration>,
    renewable: bool,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        self.lease.is_some_and(|l| now >= self.obtained + l)
    }

    /// Past two thirds of the lease: time to renew or log in again.
    fn ageing(&self, now: Instant) -> bool {
        self.lease
            .is_some_and(|l| now >= self.obtained + l.mul_f64(2.0 / 3.0))
    }
}

/// Secrets read from Vault KV v2. Secret `name` is `<mount>/data/<path_prefix><name>`, key
/// `field`, unless `map` says otherwise.
pub struct VaultSecrets {
    config: VaultConfig,
    client: reqwest::Client,
    targets: BTreeMap<String, Target>,
    session: tokio::sync::Mutex<Option<Session>>,
    cache: Mutex<HashMap<String, (Instant, String)>>,
}

impl fmt::Debug for VaultSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSecrets")
            .field("address", &self.config.address)
            .field("mount", &self.config.mount)
            .field("path_prefix", &self.config.path_prefix)
            .field("auth", &self.config.auth.method())
            .finish_non_exhaustive()
    }
}

impl VaultConfig {
    /// Checks what serde cannot: the address, the credentials' sources, the map.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |at: &str, message: String| ConfigError::Invalid {
            at: format!("secret_provider.{at}"),
            message,
        };
        let url = reqwest::Url::parse(&self.address).ok();
        if !url.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
            return Err(ConfigError::BadUrl {
                at: "secret_provider.address".into(),
                url: self.address.clone(),
            });
        }
        if self.mount.trim_matches('/').is_empty() {
            return Err(invalid("mount", "the KV v2 mount is empty".into()));
        }
        if self.field.is_empty() {
            return Err(invalid("field", "the key is empty".into()));
        }
        match &self.auth {
            VaultAuth::Token { token, token_file } => {
                if token.is_some() == token_file.is_some() {
                    return Err(invalid(
                        "auth",
                        "method `token` takes one of `token` and `token_file`".into(),
                    ));
                }
            }
            VaultAuth::Approle {
                role_id,
                secret_id,
                secret_id_file,
                ..
            } => {
                if role_id.is_empty() {
                    return Err(invalid("auth.role_id", "the role id is empty".into()));
                }
                if secret_id.is_some() == secret_id_file.is_some() {
                    return Err(invalid(
                        "auth",
                        "method `approle` takes one of `secret_id` and `secret_id_file`".into(),
                    ));
                }
            }
            VaultAuth::Kubernetes { role, .. } => {
                if role.is_empty() {
                    return Err(invalid("auth.role", "the Vault role is empty".into()));
                }
            }
        }
        for (name, text) in &self.map {
            parse_target(text, &self.field).map_err(|m| invalid(&format!("map.{name}"), m))?;
        }
        Ok(())
    }
}

impl VaultSecrets {
    /// Checks `config` and builds the HTTP client; no request is sent yet.
    pub fn new(config: VaultConfig) -> Result<VaultSecrets, ConfigError> {
        config.validate()?;
        let targets = config
            .map
            .iter()
            .filter_map(|(n, t)| Some((n.clone(), parse_target(t, &config.field).ok()?)))
            .collect();
        // reqwest is built without a default crypto provider; ring is ours. Installing fails
        // harmlessly when the embedder installed one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.request_timeout)
            .timeout(config.request_timeout)
            .user_agent(format!("pao/{}", pao_core::VERSION))
            // Vault answers from the node asked; a redirect is not followed with a token.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_cert {
            let invalid = |message: String| ConfigError::Invalid {
                at: "secret_provider.ca_cert".into(),
                message,
            };
            let pem = std::fs::read(path)
                .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                invalid(format!("{} is not a PEM certificate: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| ConfigError::Invalid {
            at: "secret_provider".into(),
            message: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(VaultSecrets {
            config,
            client,
            targets,
            session: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Drops every cached value: the next lookups ask Vault.
    pub fn clear_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    fn target(&self, name: &str) -> Option<Target> {
        if let Some(t) = self.targets.get(name) {
            return Some(t.clone());
        }
        plain_name(name).then(|| Target {
            path: name.to_string(),
            key: self.config.field.clone(),
            version: None,
        })
    }

    /// `<mount>/data/<prefix><path>`, as written in a policy and in messages.
    fn display_path(&self, t: &Target) -> String {
        format!(
            "{}/data/{}",
            self.config.mount.trim_matches('/'),
            self.full_path(t)
        )
    }

    fn full_path(&self, t: &Target) -> String {
        let prefix = self.config.path_prefix.trim_matches('/');
        if prefix.is_empty() {
            t.path.clone()
        } else {
            format!("{prefix}/{}", t.path)
        }
    }

    fn url(&self, path: &str) -> String {
        let encoded: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(crate::http::seg)
            .collect();
        format!(
            "{}/v1/{}",
            self.config.address.trim_end_matches('/'),
            encoded.join("/")
        )
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, url);
        match &self.config.namespace {
            Some(ns) if !ns.is_empty() => rb.header("X-Vault-Namespace", ns),
            _ => rb,
        }
    }

    /// Sends and reads the body within the cap.
    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<(u16, Option<Value>), Fail> {
        let transport = |e: reqwest::Error| {
            Fail::Unavailable(if e.is_timeout() {
                format!(
                    "{what}: Vault did not answer within {:.1}s",
                    self.config.request_timeout.as_secs_f64()
                )
            } else if e.is_connect() {
                format!("{what}: cannot connect to Vault at {}", self.config.address)
            } else {
                format!("{what}: the call to Vault failed")
            })
        };
        let mut resp = rb.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let too_large =
            || Fail::Unavailable(format!("{what}: Vault's answer is larger than 1 MiB"));
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, serde_json::from_slice(&body).ok()))
    }

    /// The error for an unexpected status: Vault's own message (never a secret) and whether
    /// to try again.
    fn status_fail(what: &str, status: u16, body: Option<&Value>) -> Fail {
        let message = body
            .and_then(|b| b.get("errors"))
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|m| !m.is_empty())
            .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
            .unwrap_or_default();
        let text = format!("{what}: Vault answered {status}{message}");
        match status {
            400 | 401 | 403 => Fail::Denied(text),
            _ => Fail::Unavailable(text),
        }
    }

    fn read_file(path: &std::path::Path, what: &str) -> Result<SecretText, Fail> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Fail::Unavailable(format!("cannot read the {what} {}: {e}", path.display()))
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Err(Fail::Unavailable(format!(
                "the {what} {} is empty",
                path.display()
            )));
        }
        Ok(SecretText::new(text))
    }

    /// A new token: the configured one, or a login.
    async fn login(&self) -> Result<Session, Fail> {
        let (mount, body, what) = match &self.config.auth {
            VaultAuth::Token { token, token_file } => {
                let token = match (token, token_file) {
                    (Some(t), _) => t.clone(),
                    (None, Some(file)) => Self::read_file(file, "Vault token file")?,
                    (None, None) => return Err(Fail::Denied("no Vault token configured".into())),
                };
                return Ok(Session {
                    token,
                    obtained: Instant::now(),
                    lease: None,
                    renewable: false,
                });
            }
            VaultAuth::Approle {
                role_id,
                secret_id,
                secret_id_file,
                mount,
            } => {
                let secret_id = match (secret_id, secret_id_file) {
                    (Some(s), _) => s.clone(),
                    (None, Some(file)) => Self::read_file(file, "AppRole secret id file")?,
                    (None, None) => {
                        return Err(Fail::Denied("no AppRole secret id configured".into()));
                    }
                };
                (
                    mount,
                    json!({"role_id": role_id, "secret_id": secret_id.expose()}),
                    "AppRole login",
                )
            }
            VaultAuth::Kubernetes {
                role,
                jwt_file,
                mount,
            } => {
                let jwt = Self::read_file(jwt_file, "Kubernetes service account token")?;
                (
                    mount,
                    json!({"role": role, "jwt": jwt.expose()}),
                    "Kubernetes login",
                )
            }
        };
        let url = self.url(&format!("auth/{}/login", mount.trim_matches('/')));
        let rb = self.request(reqwest::Method::POST, url).json(&body);
        let (status, reply) = self.send(rb, what).await?;
        if !(200..300).contains(&status) {
            return Err(Self::status_fail(what, status, reply.as_ref()));
        }
        Self::session_of(reply.as_ref(), what)
    }

    /// The session in a login or renewal answer (`auth.client_token`, `lease_duration`,
    /// `renewable`).
    fn session_of(reply: Option<&Value>, what: &str) -> Result<Session, Fail> {
        let auth = reply.and_then(|r| r.get("auth"));
        let token = auth
            .and_then(|a| a.get("client_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Fail::Unavailable(format!("{what}: Vault's answer has no token")))?;
        let lease = auth
            .and_then(|a| a.get("lease_duration"))
            .and_then(Value::as_u64)
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        Ok(Session {
            token: SecretText::new(token),
            obtained: Instant::now(),
            lease,
            renewable: auth
                .and_then(|a| a.get("renewable"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    async fn renew(&self, token: &SecretText) -> Result<Session, Fail> {
        let what = "token renewal";
        let rb = self
            .request(reqwest::Method::POST, self.url("auth/token/renew-self"))
            .header("X-Vault-Token", token.expose())
            .json(&json!({}));
        let (status, reply) = self.send(rb, what).await?;
        if !(200..300).contains(&status) {
            return Err(Self::status_fail(what, status, reply.as_ref()));
        }
        Self::session_of(reply.as_ref(), what)
    }

    /// A token to use now: the current one, renewed or replaced when it is ageing or expired.
    async fn token(&self) -> Result<SecretText, Fail> {
        let mut session = self.session.lock().await;
        let now = Instant::now();
        if let Some(s) = session.as_ref() {
            if !s.ageing(now) {
                return Ok(s.token.clone());
            }
            if s.renewable
                && !s.expired(now)
                && let Ok(renewed) = self.renew(&s.token).await
            {
                let token = renewed.token.clone();
                *session = Some(renewed);
                return Ok(token);
            }
        }
        match self.login().await {
            Ok(new) => {
                let token = new.token.clone();
                *session = Some(new);
                Ok(token)
            }
            // Renewal and login failed, but the token has not expired: use it while it lasts.
            Err(e) => match session.as_ref() {
                Some(s) if !s.expired(Instant::now()) => Ok(s.token.clone()),
                _ => Err(e),
            },
        }
    }

    /// Forgets `token` after Vault refused it, so the next lookup logs in again.
    async fn forget(&self, token: &SecretText) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| s.token == *token) {
            *session = None;
        }
    }

    async fn read(&self, t: &Target, token: &SecretText) -> Result<ReadOutcome, Fail> {
        let mut url = self.url(&format!(
            "{}/data/{}",
            self.config.mount.trim_matches('/'),
            self.full_path(t)
        ));
        if let Some(v) = t.version {
            url.push_str(&format!("?version={v}"));
        }
        let what = format!("reading {}", self.display_path(t));
        let rb = self
            .request(reqwest::Method::GET, url)
            .header("X-Vault-Token", token.expose());
        let (status, reply) = self.send(rb, &what).await?;
        match status {
            200..=299 => {}
            404 => return Ok(ReadOutcome::Missing),
            403 => return Ok(ReadOutcome::Forbidden),
            _ => {
                return Err(match Self::status_fail(&what, status, reply.as_ref()) {
                    Fail::Denied(m) => Fail::Unavailable(m),
                    f => f,
                });
            }
        }
        let Some(data) = reply.as_ref().and_then(|r| r.pointer("/data/data")) else {
            return Err(Fail::Unavailable(format!(
                "{what}: Vault's answer is not a KV version 2 secret (is `{}` a KV v2 mount?)",
                self.config.mount
            )));
        };
        Ok(match data.get(&t.key) {
            None | Some(Value::Null) => ReadOutcome::MissingKey,
            Some(Value::String(s)) => ReadOutcome::Value(s.clone()),
            Some(other) => ReadOutcome::Value(other.to_string()),
        })
    }

    fn cached(&self, name: &str) -> Option<String> {
        let ttl = self.config.cache_ttl;
        let c = self.cache.lock().ok()?;
        c.get(name)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, v)| v.clone())
    }

    async fn lookup(&self, name: &str, t: &Target) -> Result<String, SecretError> {
        let tied = |f: Fail| match f {
            Fail::Denied(m) => SecretError::Denied(format!("{name} ({m})")),
            // The engine names the secret; `m` names the Vault path or the login.
            Fail::Unavailable(m) => SecretError::Unavailable(m),
        };
        let mut retried = false;
        loop {
            let token = self.token().await.map_err(tied)?;
            match self.read(t, &token).await.map_err(tied)? {
                ReadOutcome::Value(v) => return Ok(v),
                ReadOutcome::Missing => return Err(SecretError::NotFound(name.to_string())),
                ReadOutcome::MissingKey => {
                    return Err(SecretError::NotFound(format!(
                        "{name} (Vault secret {} has no key \"{}\")",
                        self.display_path(t),
                        t.key
                    )));
                }
                ReadOutcome::Forbidden if !retried => {
                    // An expired or revoked token: log in once more.
                    self.forget(&token).await;
                    retried = true;
                }
                ReadOutcome::Forbidden => {
                    return Err(SecretError::Denied(format!(
                        "{name} (Vault answered 403 for {}: check the policy of PAO's role)",
                        self.display_path(t)
                    )));
                }
            }
        }
    }
}

#[async_trait]
impl SecretProvider for VaultSecrets {
    async fn get(&self, name: &str) -> Result<String, SecretError> {
        let Some(target) = self.target(name) else {
            return Err(SecretError::NotFound(name.to_string()));
        };
        if let Some(v) = self.cached(name) {
            return Ok(v);
        }
        let value = self.lookup(name, &target).await?;
        if !self.config.cache_ttl.is_zero()
            && let Ok(mut c) = self.cache.lock()
        {
            c.insert(name.to_string(), (Instant::now(), value.clone()));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("teams/jira#token@3", "value"),
            Ok(Target {
                path: "teams/jira".into(),
                key: "token".into(),
                version: Some(3)
            })
        );
        assert_eq!(
            parse_target("teams/jira", "value"),
            Ok(Target {
                path: "teams/jira".into(),
                key: "value".into(),
                version: None
            })
        );
        assert_eq!(
            parse_target("db@2", "password").map(|t| (t.key, t.version)),
            Ok(("password".to_string(), Some(2)))
        );
        // `@` not followed by digits is part of the key.
        assert_eq!(
            parse_target("ops#bot@example.com", "value").map(|t| t.key),
            Ok("bot@example.com".to_string())
        );
        for bad in ["", "/abs", "a/../b", "a//b", "a#", "a@0", "dir/"] {
            assert!(parse_target(bad, "value").is_err(), "{bad}");
        }
    }

    fn config(auth: Value) -> VaultConfig {
        serde_json::from_value(json!({"address": "https://vault.example.com:8200", "auth": auth}))
            .unwrap()
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let c = config(json!({"method": "approle", "role_id": "r"}));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("secret_id_file"), "{e}");
        let mut c = config(json!({"method": "token", "token": "t"}));
        c.address = "vault:8200".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("secret_provider.address"), "{e}");
        let mut c = config(json!({"method": "kubernetes", "role": "pao"}));
        c.map.insert("x".into(), "a/../b".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("secret_provider.map.x"), "{e}");
        assert!(
            config(json!({"method": "kubernetes", "role": "pao"}))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn debug_shows_no_credential() {
        let c = config(json!({"method": "token", "token": "hvs.never-shown"}));
        assert!(!format!("{c:?}").contains("never-shown"));
        let s = VaultSecrets::new(c).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("never-shown"), "{shown}");
        assert!(shown.contains("token"), "{shown}");
    }
}
