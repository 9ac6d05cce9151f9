//! Local fakes of the services PAO's actions and plugins talk to.
//!
//! Each module serves the subset of one vendor's real API that PAO uses, on `127.0.0.1` with an
//! ephemeral port: the same paths, payloads, status codes, pagination and error bodies as the
//! vendor documents. Integration tests start them to test actions against something that
//! behaves like the real service; `pao serve --sandbox` starts them so a newcomer can watch a
//! request reach `Completed` without any external account.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let server = pao_sandbox::FakeServer::start(axum::Router::new()).await.unwrap();
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! # });
//! ```
//!
//! [`vault::VaultFake`] is the secret store behind PAO's Vault secret provider (KV v2, AppRole
//! and Kubernetes logins, token renewal); tests start it on its own.
//!
//! [`VendorFakes`] starts every fake the built-in actions talk to and says how to reach them:
//! `env()` for the engine's `env` scope, `secrets()` for the secret provider and
//! `actions_config_json()` for `pao-actions`' `ActionsConfig`. Tests inject faults
//! ([`Fault`]) and read each fake's state (issues, runs, effects, deliveries).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use pao_sandbox::{Fault, VendorFakes};
//! let fakes = VendorFakes::start_all().await.unwrap();
//! assert!(fakes.env()["PAO_DNS_API_URL"].ends_with("/dns"));
//! assert!(fakes.secrets().contains_key("hook_hmac"));
//! assert_eq!(fakes.actions_config_json()["jira"]["jira-cloud"]["api_version"], 3);
//! fakes.jira.faults.inject(Fault::RateLimited { retry_after_secs: 5 }, 1);
//! # });
//! ```

mod faults;
pub mod github;
pub mod jira;
pub mod rest;
pub mod servicenow;
pub mod slack;
pub mod terraform;
pub mod vault;
pub mod webhook;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use faults::{Fault, Faults, RecordedRequest};

/// A running fake: an axum router served on `127.0.0.1:<ephemeral>` until dropped.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and serves `router` on the current tokio runtime.
    pub async fn start(router: axum::Router) -> std::io::Result<FakeServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeServer {
            addr,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Every vendor fake PAO's built-in actions talk to, started together: what integration tests
/// and `pao serve --sandbox` use. Hand [`VendorFakes::env`] to the engine's `env` scope,
/// [`VendorFakes::secrets`] to a secret provider and [`VendorFakes::actions_config_json`] to
/// `pao-actions`' configuration, and every example catalog item runs with no external account.
#[derive(Debug)]
pub struct VendorFakes {
    /// JIRA (REST v2 and v3; instances `jira-cloud` and `jira-onprem`).
    pub jira: jira::JiraFake,
    /// GitHub Actions (instance `github-example`).
    pub github: github::GithubFake,
    /// Terraform Cloud (instance `tfc-main`).
    pub terraform: terraform::TerraformFake,
    /// The JSON APIs of the `rest` actions.
    pub rest: rest::RestFake,
    /// The webhook receiver.
    pub webhook: webhook::WebhookFake,
}

/// The HMAC key the sandbox webhook receiver shares with PAO (`secrets.hook_hmac`).
pub const SANDBOX_HOOK_HMAC: &str = "sandbox-webhook-hmac-key";

impl VendorFakes {
    /// Starts every fake on the current tokio runtime.
    pub async fn start_all() -> std::io::Result<VendorFakes> {
        Ok(VendorFakes {
            jira: jira::JiraFake::start().await?,
            github: github::GithubFake::start().await?,
            terraform: terraform::TerraformFake::start().await?,
            rest: rest::RestFake::start().await?,
            webhook: webhook::WebhookFake::start(SANDBOX_HOOK_HMAC).await?,
        })
    }

    /// Every `PAO_*_URL` environment variable the example catalog reads, pointing at the fakes.
    pub fn env(&self) -> BTreeMap<String, String> {
        let r = self.rest.url();
        [
            ("PAO_DNS_API_URL", format!("{r}/dns")),
            ("PAO_KUBE_API_URL", format!("{r}/kube")),
            ("PAO_KAFKA_REST_URL", format!("{r}/kafka")),
            ("PAO_VAULT_URL", format!("{r}/vault")),
            ("PAO_GRAFANA_URL", format!("{r}/grafana")),
            ("PAO_IDP_URL", format!("{r}/idp")),
            ("PAO_REDIS_ADMIN_URL", format!("{r}/redis")),
            ("PAO_EVENTS_WEBHOOK_URL", self.webhook.url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Secret name → value for every `secrets.*` the example catalog reads and every secret
    /// named by [`VendorFakes::actions_config_json`]: the values the fakes accept.
    pub fn secrets(&self) -> BTreeMap<String, String> {
        let c = &self.rest.credentials;
        let client = |id: &str| c.oauth_clients.get(id).cloned().unwrap_or_default();
        [
            (
                "jira_cloud_api_token",
                self.jira.credentials.api_token.clone(),
            ),
            ("jira_onprem_pat", self.jira.credentials.pat.clone()),
            ("github_token", self.github.credentials.pat.clone()),
            ("tfc_token", self.terraform.token.clone()),
            ("hook_hmac", self.webhook.secret.clone()),
            ("dns_api_key", c.dns_api_key.clone()),
            ("kube_provisioner_token", c.kube_token.clone()),
            ("kafka_rest_password", c.kafka.1.clone()),
            ("vault_rotation_token", c.vault_token.clone()),
            ("grafana_service_account_token", c.grafana_token.clone()),
            ("cert_service_client_secret", client("pao-certs")),
            ("redis_admin_client_secret", client("pao-redis")),
            ("idp_admin_client_secret", client("pao-idp-admin")),
            ("cert_service_token", c.static_tokens[0].clone()),
            ("redis_admin_token", c.static_tokens[1].clone()),
            ("inventory_token", "sandbox-inventory-token".to_string()),
            (
                "pg_master_password",
                "sandbox-pg-master-password".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The `pao-actions` configuration (`ActionsConfig` as JSON) with the JIRA, Terraform and
    /// GitHub instances of the example catalog pointing at the fakes, and short polling
    /// intervals so a sandbox request finishes in seconds.
    pub fn actions_config_json(&self) -> Value {
        json!({
            "http": {
                "connect_timeout": "2s",
                "request_timeout": "10s",
                "max_response_bytes": 1_048_576,
                "poll_initial": "20ms",
                "poll_max": "200ms"
            },
            "jira": {
                "jira-cloud": {
                    "url": self.jira.url(),
                    "api_version": 3,
                    "auth": {"kind": "basic", "email": self.jira.credentials.email, "token_secret": "jira_cloud_api_token"},
                    "default": true
                },
                "jira-onprem": {
                    "url": self.jira.url(),
                    "api_version": 2,
                    "auth": {"kind": "bearer", "token_secret": "jira_onprem_pat"}
                }
            },
            "terraform": {
                "tfc-main": {
                    "url": self.terraform.url(),
                    "token_secret": "tfc_token",
                    "organization": "example-platform",
                    "default": true,
                    "templates": {
                        "postgres-rds": {"repository": "example/terraform-aws-postgres", "branch": "main"},
                        "s3-bucket": {"repository": "example/terraform-aws-s3", "branch": "main"}
                    }
                }
            },
            "github": {
                "github-example": {
                    "api_url": self.github.url(),
                    "auth": {"kind": "pat", "token_secret": "github_token"},
                    "default": true
                }
            }
        })
    }
}
