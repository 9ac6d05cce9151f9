//! Server configuration: a TOML file (`--config pao.toml`) with environment overrides
//! (`PAO_BIND`, `PAO_DATABASE_URL`, `PAO_CATALOG`, `PAO_WORKERS`, `PAO_LOG_FORMAT`) applied by
//! the command line. Every key has a default, so `pao serve` runs with no file at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: String,
    /// `sqlite://./data/pao.db` (default) or `postgres://…`.
    pub database_url: String,
    /// Connections in the database pool (PostgreSQL); SQLite uses one writer.
    pub database_pool: u32,
    /// The catalog folder.
    pub catalog: PathBuf,
    /// Workers in this process (0 = API only).
    pub workers: usize,
    /// Seconds a claim on a request lasts without a heartbeat (workers renew it every third of
    /// this). Work held by a replica that died without releasing it resumes elsewhere after
    /// this long. Between 3 and 3600; the same on every replica.
    pub lease_secs: u64,
    /// Seconds a shutdown (SIGTERM) lets in-flight runs finish before handing them back to
    /// other replicas (0 = hand back at once).
    pub drain_timeout_secs: u64,
    /// `text` or `json`.
    pub log_format: String,
    /// The URL clients reach this server at (`system.base_url`).
    pub base_url: Option<String>,
    /// Environment variables templates may read as `env.NAME`, with their values; a value of
    /// `null`/absent reads the process environment.
    pub env: BTreeMap<String, Option<String>>,
    /// Secret values by name (development only): what the `static` secret provider serves.
    pub secrets: BTreeMap<String, String>,
    /// Where secrets come from: `static` (the `[secrets]` table, the default), `env`, `files`
    /// or `vault` (see `docs/secrets.md`).
    pub secret_provider: SecretProviderConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Limits on what clients send.
    pub limits: LimitsConfig,
    /// Shared secrets of the inbound webhooks.
    pub webhooks: WebhookConfig,
    /// Watch the catalog folder and reload on change.
    pub watch_catalog: bool,
    /// Seconds between catalog folder checks when watching.
    pub watch_interval_secs: u64,
    /// The built-in actions: JIRA, Terraform and GitHub instances, HTTP settings
    /// (see `docs/actions.md`).
    pub actions: pao_actions::ActionsConfig,
    /// WASM plugin actions.
    pub plugins: PluginsConfig,
    /// Who may read the Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Origins (`https://console.example.com`) whose pages may open WebSockets, besides the
    /// origin of `base_url` and the server's own host.
    pub allowed_origins: Vec<String>,
    /// Ended requests kept in memory for `GET /requests/{id}/status` (0 = none).
    pub finished_cache_entries: usize,
    /// Seconds an ended request is served from memory (a purge shows within this time).
    pub finished_cache_secs: u64,
    /// The key-encryption keys of sealed secrets (see `docs/secrets.md`).
    pub sealing: SealingConfig,
    /// HTTPS on `bind`: certificate and key files, minimum version. Absent: plain HTTP.
    pub tls: Option<crate::tls::TlsConfig>,
    /// The circuit breakers of the systems actions call.
    pub breakers: BreakersConfig,
    /// How long ended requests and audit records are kept.
    pub retention: RetentionConfig,
    /// How the tickets of manual-mode requests are watched.
    pub manual_tickets: crate::tickets::ManualTicketsConfig,
    /// How the items' health checks run.
    pub health_checks: crate::health::HealthChecksConfig,
}

/// `[retention]`: ended requests and audit records older than these periods are deleted by
/// a job every `interval_secs`. Without periods everything is kept.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days an ended request (`completed`, `failed`, `cancelled`, `rejected`) is kept after
    /// its last change, with its events, attempts, decisions and quota reservation.
    pub requests_days: Option<u32>,
    /// Days an audit record is kept.
    pub audit_days: Option<u32>,
    /// Seconds between runs of the job.
    pub interval_secs: u64,
    /// Rows deleted per transaction.
    pub batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            requests_days: None,
            audit_days: None,
            interval_secs: 3600,
            batch: 1000,
        }
    }
}

impl RetentionConfig {
    /// The policy the job applies; `None` when nothing is ever deleted.
    pub fn policy(&self) -> Option<pao_core::service::RetentionPolicy> {
        let days =
            |d: Option<u32>| d.map(|d| std::time::Duration::from_secs(u64::from(d) * 86_400));
        (self.requests_days.is_some() || self.audit_days.is_some()).then(|| {
            pao_core::service::RetentionPolicy {
                requests: days(self.requests_days),
                audit: days(self.audit_days),
                batch: self.batch.max(1),
            }
        })
    }
}

/// The key-encryption keys (KEKs) that wrap the data keys of sealed secrets: secret form
/// fields and the inputs of completed actions a rollback replays. Every replica sharing a
/// database needs the same keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealingConfig {
    /// The secret (read from the secret provider) holding the current KEK: 32 bytes as base64
    /// or 64 hex digits (`openssl rand -base64 32`). Without it, each process makes a random
    /// key: sealed values then survive neither a restart nor a move to another replica.
    pub kek: Option<String>,
    /// Secrets holding earlier KEKs, still needed to open what they wrapped until it is
    /// re-wrapped under the current one.
    pub previous_keks: Vec<String>,
    /// Seconds between re-wrap passes (data keys still wrapped by a previous KEK move to the
    /// current one); 0 turns them off.
    pub rewrap_interval_secs: u64,
}

impl Default for SealingConfig {
    fn default() -> Self {
        SealingConfig {
            kek: None,
            previous_keks: Vec::new(),
            rewrap_interval_secs: 600,
        }
    }
}

impl ServerConfig {
    /// The secrets only the server reads (inbound webhook keys, the KEKs): no catalog item
    /// may read or declare them.
    pub fn reserved_secrets(&self) -> std::collections::BTreeSet<String> {
        let w = &self.webhooks;
        [
            &w.github_secret,
            &w.jira_secret,
            &w.terraform_secret,
            &w.approval_secret,
            &self.sealing.kek,
        ]
        .into_iter()
        .flatten()
        .chain(&self.sealing.previous_keks)
        .cloned()
        .collect()
    }
}

/// `[breakers]`: one circuit breaker per system actions call (a JIRA site, a Terraform
/// organization, a webhook host).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakersConfig {
    /// Consecutive retryable failures (timeouts, 5xx, refused connections) that open it.
    pub failure_threshold: u32,
    /// Seconds it stays open before one trial call may pass.
    pub open_secs: u64,
}

impl Default for BreakersConfig {
    fn default() -> Self {
        let d = pao_core::engine::BreakerConfig::default();
        BreakersConfig {
            failure_threshold: d.failure_threshold,
            open_secs: d.open_for.as_secs(),
        }
    }
}

/// Where plugins come from and what each may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Folder of `<name>.wasm` + `<name>.toml` (`scripts/build-plugins` writes
    /// `target/plugins`). No folder, no plugins.
    pub dir: Option<PathBuf>,
    /// Where compiled plugins are cached between starts (default `data/plugin-cache`).
    pub cache_dir: Option<PathBuf>,
    /// What each plugin may reach: hosts, secrets, key-value store, settings, lower limits
    /// (`[plugins.grants.slack-notify]`). A plugin without a grant reaches nothing.
    pub grants: BTreeMap<String, pao_wasm_host::Grant>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            database_url: "sqlite://./data/pao.db".into(),
            database_pool: 8,
            catalog: PathBuf::from("catalog"),
            workers: 2,
            lease_secs: 30,
            drain_timeout_secs: 20,
            log_format: "text".into(),
            base_url: None,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            secret_provider: SecretProviderConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            webhooks: WebhookConfig::default(),
            watch_catalog: true,
            watch_interval_secs: 2,
            actions: pao_actions::ActionsConfig::default(),
            plugins: PluginsConfig::default(),
            metrics: MetricsConfig::default(),
            allowed_origins: Vec::new(),
            finished_cache_entries: 10_000,
            finished_cache_secs: 10,
            sealing: SealingConfig::default(),
            tls: None,
            breakers: BreakersConfig::default(),
            retention: RetentionConfig::default(),
            manual_tickets: crate::tickets::ManualTicketsConfig::default(),
            health_checks: crate::health::HealthChecksConfig::default(),
        }
    }
}

/// The `[secret_provider]` table, tagged by `kind`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretProviderConfig {
    /// The values of the `[secrets]` table (development and tests).
    #[default]
    Static,
    /// Environment variables: secret `jira_token` is `<prefix>JIRA_TOKEN`.
    Env {
        /// Default `PAO_SECRET_`.
        #[serde(default = "default_env_prefix")]
        prefix: String,
    },
    /// One file per secret in a folder (a mounted Kubernetes secret).
    Files {
        /// The folder.
        dir: PathBuf,
    },
    /// HashiCorp Vault, KV version 2.
    Vault(Box<pao_actions::secrets::VaultConfig>),
}

fn default_env_prefix() -> String {
    pao_actions::secrets::DEFAULT_ENV_PREFIX.into()
}

impl SecretProviderConfig {
    /// The provider this configuration describes, `statics` being the `[secrets]` table.
    /// Checks the configuration; sends no request.
    pub fn build(
        &self,
        statics: &BTreeMap<String, String>,
    ) -> Result<std::sync::Arc<dyn pao_core::secrets::SecretProvider>, String> {
        use pao_actions::secrets::{EnvSecrets, FileSecrets, VaultSecrets};
        use pao_core::secrets::StaticSecrets;
        let kind = match self {
            SecretProviderConfig::Static => "static",
            SecretProviderConfig::Env { .. } => "env",
            SecretProviderConfig::Files { .. } => "files",
            SecretProviderConfig::Vault(_) => "vault",
        };
        if kind != "static" && !statics.is_empty() {
            return Err(format!(
                "[secrets] holds values but secret_provider.kind is `{kind}`, which does not read them: remove the [secrets] table or use kind = \"static\""
            ));
        }
        Ok(match self {
            SecretProviderConfig::Static => std::sync::Arc::new(
                statics
                    .iter()
                    .fold(StaticSecrets::new(), |s, (k, v)| s.with(k, v)),
            ),
            SecretProviderConfig::Env { prefix } => std::sync::Arc::new(EnvSecrets::new(prefix)),
            SecretProviderConfig::Files { dir } => {
                if !dir.is_dir() {
                    return Err(format!(
                        "secret_provider.dir: {} is not a folder",
                        dir.display()
                    ));
                }
                std::sync::Arc::new(FileSecrets::new(dir))
            }
            SecretProviderConfig::Vault(c) => {
                std::sync::Arc::new(VaultSecrets::new((**c).clone()).map_err(|e| e.to_string())?)
            }
        })
    }
}

/// How callers prove who they are. Several modes can be on at once; a request is
/// authenticated by the first that recognises it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API tokens (`Authorization: Bearer <token>`), stored as SHA-256 hex digests.
    pub tokens: Vec<TokenConfig>,
    /// Trust identity headers set by an API gateway that already authenticated the caller.
    pub trusted_header: Option<TrustedHeaderConfig>,
    /// JWTs from an OIDC issuer.
    pub oidc: Option<OidcConfig>,
}

/// One API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Principal id.
    pub id: String,
    /// `sha256:<hex>` of the token (`pao admin hash-token` prints it).
    pub token_sha256: String,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Teams.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Roles (`admin` for the admin endpoints).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Gateway headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedHeaderConfig {
    /// Header with the principal id.
    #[serde(default = "default_user_header")]
    pub user: String,
    /// Header with comma-separated teams.
    #[serde(default = "default_teams_header")]
    pub teams: String,
    /// Header with comma-separated roles.
    #[serde(default = "default_roles_header")]
    pub roles: String,
    /// Header with the e-mail address.
    #[serde(default = "default_email_header")]
    pub email: String,
    /// Peers (CIDRs or single addresses) whose identity headers are believed. Headers from any
    /// other peer are refused with 401. Empty: loopback peers only.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `sha256:<hex>` of a secret the gateway sends in `secret_header` with every request
    /// (`pao admin hash-token` prints it). When set, headers without it are refused.
    #[serde(default)]
    pub gateway_secret_sha256: Option<String>,
    /// Header carrying the gateway secret.
    #[serde(default = "default_gateway_secret_header")]
    pub secret_header: String,
}

fn default_gateway_secret_header() -> String {
    "x-pao-gateway-secret".into()
}

fn default_user_header() -> String {
    "x-pao-user".into()
}
fn default_teams_header() -> String {
    "x-pao-teams".into()
}
fn default_roles_header() -> String {
    "x-pao-roles".into()
}
fn default_email_header() -> String {
    "x-pao-email".into()
}

/// An OIDC issuer whose JWTs are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// `iss` claim to require.
    pub issuer: String,
    /// `aud` claim to require.
    pub audience: String,
    /// Where the signing keys are (`<issuer>/.well-known/jwks.json` usually).
    pub jwks_url: String,
    /// Claim holding the teams.
    #[serde(default = "default_teams_claim")]
    pub teams_claim: String,
    /// Claim holding the roles.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim holding the principal id: `sub` (stable and unique per issuer, the default).
    /// `preferred_username` is neither unique nor stable (OIDC Core 5.7): use it only with an
    /// issuer that guarantees both.
    #[serde(default = "default_id_claim")]
    pub id_claim: String,
    /// Seconds the issuer's key set is kept before it is fetched again (a key the issuer
    /// removed stops working within this time).
    #[serde(default = "default_jwks_ttl")]
    pub jwks_ttl_secs: u64,
}

fn default_id_claim() -> String {
    "sub".into()
}
fn default_jwks_ttl() -> u64 {
    600
}

fn default_teams_claim() -> String {
    "groups".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}

/// Request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Requests per second per principal (sustained).
    pub rate_per_second: u32,
    /// Burst above the sustained rate.
    pub rate_burst: u32,
    /// Requests per second per client address that carry no valid credential (failed logins,
    /// probes, webhooks); 0 turns this limit off.
    pub anonymous_rate_per_second: u32,
    /// Burst above `anonymous_rate_per_second`.
    pub anonymous_rate_burst: u32,
    /// Open WebSocket streams per principal.
    pub websockets_per_principal: usize,
    /// Open WebSocket streams in this process.
    pub websockets_total: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1 << 20,
            rate_per_second: 200,
            rate_burst: 400,
            anonymous_rate_per_second: 20,
            anonymous_rate_burst: 100,
            websockets_per_principal: 32,
            websockets_total: 4096,
        }
    }
}

/// Who may read `GET /api/v1/metrics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `sha256:<hex>` of the bearer token Prometheus scrapes with (`authorization` in its
    /// scrape config). Admins may always read metrics.
    pub token_sha256: Option<String>,
    /// Serve metrics to anyone, without a credential (only where the network already keeps
    /// strangers away from the port).
    pub public: bool,
}

/// Inbound webhook secrets, by secret name (resolved like other secrets).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// GitHub webhook secret (`X-Hub-Signature-256`).
    pub github_secret: Option<String>,
    /// JIRA shared secret (`X-PAO-Webhook-Secret`, or a `X-Hub-Signature: sha256=` HMAC of
    /// the body as JIRA Cloud signs it).
    pub jira_secret: Option<String>,
    /// Also accept the JIRA secret as `?secret=` in the URL (it then shows in proxy logs):
    /// only for JIRA versions that can neither sign nor set headers.
    pub jira_secret_in_query: bool,
    /// Terraform Cloud notification HMAC key (`X-TFE-Notification-Signature`).
    pub terraform_secret: Option<String>,
    /// Approval webhook HMAC key (`X-PAO-Signature`).
    pub approval_secret: Option<String>,
    /// Who may decide through the approval webhook, by the id the chat tool sends: their
    /// teams, roles and e-mail come from here (or from `[[auth.tokens]]` with that id), never
    /// from the delivery.
    pub approvers: BTreeMap<String, WebhookApprover>,
}

/// A person who may decide through the approval webhook.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookApprover {
    /// E-mail.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Teams.
    pub teams: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

impl ServerConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ServerConfig::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// `sha256:<hex>` of a token, the form `auth.tokens[].token_sha256` takes.
pub fn hash_token(token: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = ServerConfig::from_toml("").unwrap();
        assert_eq!(c.database_url, "sqlite://./data/pao.db");
        assert_eq!(c.bind, "127.0.0.1:8080");
    }

    #[test]
    fn unknown_key_is_located() {
        let e = ServerConfig::from_toml("bind = \"x\"\nwrokers = 3\n").unwrap_err();
        assert!(e.contains("wrokers"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn secret_provider_defaults_to_the_secrets_table() {
        let c = ServerConfig::from_toml("[secrets]\nhook_hmac = \"k\"\n").unwrap();
        assert_eq!(c.secret_provider, SecretProviderConfig::Static);
        assert!(c.secret_provider.build(&c.secrets).is_ok());
        let c = ServerConfig::from_toml("[secret_provider]\nkind = \"static\"\n").unwrap();
        assert_eq!(c.secret_provider, SecretProviderConfig::Static);
    }

    #[test]
    fn secret_provider_env() {
        let c = ServerConfig::from_toml("[secret_provider]\nkind = \"env\"\n").unwrap();
        assert_eq!(
            c.secret_provider,
            SecretProviderConfig::Env {
                prefix: "PAO_SECRET_".into()
            }
        );
        let c = ServerConfig::from_toml("[secret_provider]\nkind = \"env\"\nprefix = \"APP_\"\n")
            .unwrap();
        assert_eq!(
            c.secret_provider,
            SecretProviderConfig::Env {
                prefix: "APP_".into()
            }
        );
        assert!(c.secret_provider.build(&c.secrets).is_ok());
    }

    #[test]
    fn secret_provider_files() {
        let dir = std::env::temp_dir();
        let text = format!(
            "[secret_provider]\nkind = \"files\"\ndir = \"{}\"\n",
            dir.display()
        );
        let c = ServerConfig::from_toml(&text).unwrap();
        assert_eq!(
            c.secret_provider,
            SecretProviderConfig::Files { dir: dir.clone() }
        );
        assert!(c.secret_provider.build(&c.secrets).is_ok());
        let c = ServerConfig::from_toml(
            "[secret_provider]\nkind = \"files\"\ndir = \"/nonexistent/pao-secrets\"\n",
        )
        .unwrap();
        let e = c.secret_provider.build(&c.secrets).err().unwrap();
        assert!(
            e.contains("/nonexistent/pao-secrets is not a folder"),
            "{e}"
        );
    }

    #[test]
    fn secret_provider_vault() {
        let c = ServerConfig::from_toml(
            r#"
[secret_provider]
kind = "vault"
address = "https://vault.example.com:8200"
mount = "kv"
path_prefix = "pao/"
namespace = "platform"
cache_ttl = "30s"
[secret_provider.auth]
method = "approle"
role_id = "0f5c"
secret_id_file = "/etc/pao/secret-id"
[secret_provider.map]
jira_token = "teams/jira#token@3"
"#,
        )
        .unwrap();
        let SecretProviderConfig::Vault(v) = &c.secret_provider else {
            panic!("{:?}", c.secret_provider);
        };
        assert_eq!(v.mount, "kv");
        assert_eq!(v.field, "value");
        assert_eq!(v.cache_ttl, std::time::Duration::from_secs(30));
        assert_eq!(v.map["jira_token"], "teams/jira#token@3");
        assert!(matches!(
            &v.auth,
            pao_actions::secrets::VaultAuth::Approle { mount, .. } if mount == "approle"
        ));
        assert!(c.secret_provider.build(&c.secrets).is_ok());
    }

    #[test]
    fn bad_secret_provider_configs_say_what_is_wrong() {
        let vault_auth = "[secret_provider.auth]\nmethod = \"kubernetes\"\nrole = \"pao\"\n";
        // Caught when the file is read, with the key named.
        for (text, expected) in [
            (
                format!("[secret_provider]\nkind = \"vault\"\n{vault_auth}"),
                "missing field `address`",
            ),
            (
                "[secret_provider]\nkind = \"vault\"\naddress = \"https://v\"\n[secret_provider.auth]\nmethod = \"approle\"\nsecret_id = \"s\"\n".to_string(),
                "missing field `role_id`",
            ),
            (
                "[secret_provider]\nkind = \"aws\"\n".to_string(),
                "unknown variant `aws`",
            ),
            (
                "[secret_provider]\nkind = \"env\"\nprefx = \"A_\"\n".to_string(),
                "unknown field `prefx`",
            ),
        ] {
            let e = ServerConfig::from_toml(&text).unwrap_err();
            assert!(e.contains(expected), "{expected}: {e}");
            assert!(e.contains("line "), "located: {e}");
        }
        // Caught when the provider is built, at start.
        for (text, expected) in [
            (
                format!("[secret_provider]\nkind = \"vault\"\naddress = \"vault:8200\"\n{vault_auth}"),
                "secret_provider.address: `vault:8200` is not an absolute http(s) URL",
            ),
            (
                "[secret_provider]\nkind = \"vault\"\naddress = \"https://v\"\n[secret_provider.auth]\nmethod = \"approle\"\nrole_id = \"r\"\n".to_string(),
                "takes one of `secret_id` and `secret_id_file`",
            ),
            (
                "[secrets]\na = \"b\"\n[secret_provider]\nkind = \"env\"\n".to_string(),
                "[secrets] holds values but secret_provider.kind is `env`",
            ),
        ] {
            let c = ServerConfig::from_toml(&text).unwrap();
            let e = c.secret_provider.build(&c.secrets).err().unwrap();
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }

    #[test]
    fn token_hash_is_prefixed_sha256() {
        assert_eq!(
            hash_token("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
