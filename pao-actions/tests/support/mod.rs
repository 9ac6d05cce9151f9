//! Shared set-up of the integration tests: every vendor fake, the built-in actions configured
//! against them, and contexts for direct calls.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::sync::Arc;
use std::time::Duration;

use pao_actions::{ActionsConfig, register_builtins};
use pao_core::action::{
    Action, ActionContext, ActionError, ActionLogger, ActionOutput, ActionRegistry, IdempotencyKey,
};
use pao_core::secrets::StaticSecrets;
use pao_sandbox::VendorFakes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct Sandbox {
    pub fakes: VendorFakes,
    pub registry: ActionRegistry,
    pub secrets: Arc<StaticSecrets>,
    pub config: ActionsConfig,
}

/// The fakes and the built-ins, with a short request timeout so timeout tests are quick.
pub async fn sandbox() -> Sandbox {
    let fakes = VendorFakes::start_all().await.expect("fakes start");
    let mut config: ActionsConfig =
        serde_json::from_value(fakes.actions_config_json()).expect("sandbox config deserializes");
    config.http.request_timeout = Duration::from_millis(500);
    let mut secrets = StaticSecrets::new();
    for (k, v) in fakes.secrets() {
        secrets = secrets.with(&k, &v);
    }
    let mut registry = ActionRegistry::new();
    register_builtins(&mut registry, &config, None).expect("config is valid");
    Sandbox {
        fakes,
        registry,
        secrets: Arc::new(secrets),
        config,
    }
}

impl Sandbox {
    pub fn action(&self, ty: &str) -> Arc<dyn Action> {
        self.registry.get(ty).expect("registered").clone()
    }

    /// A context for `key` (the same key = a re-run of the same action of the same request).
    pub fn ctx(&self, key: &str) -> ActionContext {
        ActionContext {
            request_id: "req-1".into(),
            action_id: "a".into(),
            attempt: 1,
            idempotency_key: IdempotencyKey(key.to_string()),
            deadline: None,
            cancel: CancellationToken::new(),
            log: ActionLogger::default(),
            secrets: self.secrets.clone(),
            dry_run: false,
        }
    }

    pub fn url(&self, env: &str) -> String {
        self.fakes.env()[env].clone()
    }

    pub fn secret(&self, name: &str) -> String {
        self.fakes.secrets()[name].clone()
    }

    pub async fn run(
        &self,
        ty: &str,
        key: &str,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        self.action(ty).execute(&self.ctx(key), input).await
    }
}

pub fn assert_retryable(e: &ActionError) {
    assert!(e.is_retryable(), "expected retryable: {e:?}");
}

pub fn assert_permanent(e: &ActionError) {
    assert_eq!(
        e.class,
        pao_core::action::ErrorClass::Permanent,
        "expected permanent: {e:?}"
    );
}
