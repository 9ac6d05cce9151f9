//! # pao-actions
//!
//! The action types a platform team needs on day one, each implementing `pao-core`'s
//! [`Action`](pao_core::action::Action) trait and each behind a cargo feature (all on by
//! default): `jira`, `rest`, `terraform`, `github_workflow` (feature `github`), `webhook`,
//! `cost` and `script` (rhai).
//!
//! A server registers them all with [`register_builtins`], from an [`ActionsConfig`] the
//! operator writes (named JIRA, Terraform and GitHub instances, HTTP settings) and the
//! catalog's price table. Secret values are never in the configuration: only secret names,
//! resolved through the [`SecretProvider`](pao_core::secrets::SecretProvider) of the call and
//! redacted from logs and errors.
//!
//! [`secrets`] holds the secret providers a server chooses in its configuration: environment
//! variables, a folder of files (a mounted Kubernetes secret) and HashiCorp Vault (feature
//! `vault`).
//!
//! Every remote action classifies its failures the same way: connect errors, timeouts, 408,
//! 429 (with `Retry-After`) and 5xx are retryable; other 4xx and answers that do not parse are
//! permanent and carry the vendor's own message. Every one passes the attempt's idempotency key
//! on (a JIRA label, a Terraform run message, a workflow correlation input, an
//! `Idempotency-Key` header), so a re-run after a crash has no second effect. In a dry run
//! (`ctx.dry_run`) they return the requests they would send, secrets redacted.
//!
//! ```
//! use pao_actions::{ActionsConfig, register_builtins};
//! use pao_core::action::ActionRegistry;
//!
//! let config: ActionsConfig = serde_json::from_value(serde_json::json!({
//!     "jira": { "jira-cloud": {
//!         "url": "https://example.atlassian.net",
//!         "auth": { "kind": "basic", "email": "bot@example.com", "token_secret": "jira_token" }
//!     } }
//! })).unwrap();
//! let mut registry = ActionRegistry::new();
//! let builtins = register_builtins(&mut registry, &config, None).unwrap();
//! assert!(registry.get("jira").is_some());
//! assert!(registry.get("github_workflow").is_some());
//! // When the catalog reloads, hand the cost action the new price table.
//! builtins.update_prices(None);
//! ```

// Helpers shared by the remote actions go unused when only some of them are enabled.
#![cfg_attr(
    not(all(feature = "jira", feature = "terraform", feature = "github")),
    allow(dead_code)
)]

pub use pao_core;

mod config;
mod schema;

#[cfg(feature = "http")]
mod http;

#[cfg(feature = "cost")]
pub mod cost;
#[cfg(feature = "github")]
pub mod github;
#[cfg(feature = "jira")]
pub mod jira;
#[cfg(feature = "rest")]
pub mod rest;
#[cfg(feature = "script")]
pub mod script;
pub mod secrets;
#[cfg(feature = "terraform")]
pub mod terraform;
#[cfg(feature = "webhook")]
pub mod webhook;

use std::sync::{Arc, RwLock};

pub use config::{
    ActionsConfig, ConfigError, GithubAuth, GithubInstance, HttpSettings, JiraAuth, JiraInstance,
    JiraOutcomes, TerraformInstance, TerraformTemplate,
};
use pao_core::action::ActionRegistry;
use pao_core::catalog::model::{CatalogSettings, PriceTable};

/// The action type names this crate provides (those of the enabled features register).
pub const BUILT_IN_TYPES: &[&str] = pao_core::catalog::BUILT_IN_ACTION_TYPES;

/// The price table the `cost` action reads; shared so a catalog reload can replace it.
#[derive(Debug, Clone, Default)]
pub struct PriceBook(Arc<RwLock<Option<PriceTable>>>);

impl PriceBook {
    /// A book holding `table`.
    pub fn new(table: Option<PriceTable>) -> PriceBook {
        PriceBook(Arc::new(RwLock::new(table)))
    }

    /// Replaces the table.
    pub fn set(&self, table: Option<PriceTable>) {
        if let Ok(mut t) = self.0.write() {
            *t = table;
        }
    }

    /// The current table.
    pub fn get(&self) -> Option<PriceTable> {
        self.0.read().ok().and_then(|t| t.clone())
    }
}

/// What [`register_builtins`] hands back: the handles a server keeps.
#[derive(Debug, Clone)]
pub struct Builtins {
    /// The cost action's price table.
    pub prices: PriceBook,
}

impl Builtins {
    /// Takes the price table of a (re)loaded catalog's `catalog.yaml`.
    pub fn update_prices(&self, settings: Option<&CatalogSettings>) {
        self.prices.set(settings.and_then(|s| s.prices.clone()));
    }
}

/// Registers every built-in action enabled by cargo features in `registry`, configured by
/// `config`, with the price table of `settings` for the `cost` action.
pub fn register_builtins(
    registry: &mut ActionRegistry,
    config: &ActionsConfig,
    settings: Option<&CatalogSettings>,
) -> Result<Builtins, ConfigError> {
    config.validate()?;
    let prices = PriceBook::new(settings.and_then(|s| s.prices.clone()));
    #[cfg(feature = "http")]
    let http = http::Http::new(&config.http)?;
    #[cfg(feature = "jira")]
    registry.register(Arc::new(jira::JiraAction::new(
        http.clone(),
        config.jira.clone(),
    )));
    #[cfg(feature = "rest")]
    registry.register(Arc::new(rest::RestAction::new(http.clone())));
    #[cfg(feature = "terraform")]
    registry.register(Arc::new(terraform::TerraformAction::new(
        http.clone(),
        config.terraform.clone(),
    )));
    #[cfg(feature = "github")]
    registry.register(Arc::new(github::GithubWorkflowAction::new(
        http.clone(),
        config.github.clone(),
    )));
    #[cfg(feature = "webhook")]
    registry.register(Arc::new(webhook::WebhookAction::new(http.clone())));
    #[cfg(feature = "cost")]
    registry.register(Arc::new(cost::CostAction::new(prices.clone())));
    #[cfg(feature = "script")]
    registry.register(Arc::new(script::ScriptAction::new()));
    // With every action feature off there is nothing to register.
    #[cfg(not(any(feature = "http", feature = "cost", feature = "script")))]
    let _ = registry;
    Ok(Builtins { prices })
}

/// Replaces every form of every secret the run's redactor knows in a JSON value (strings and
/// keys).
#[allow(dead_code, reason = "unused when every action feature is off")]
pub(crate) fn redact_json(
    ctx: &pao_core::action::ActionContext,
    v: &serde_json::Value,
) -> serde_json::Value {
    ctx.log.redact_json(v)
}
