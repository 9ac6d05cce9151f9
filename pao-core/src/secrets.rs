//! Secrets: looked up by name when a template reads `secrets.<name>`, never stored in request
//! bodies, and redacted by value wherever text leaves the engine.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

/// A secret lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No secret of that name.
    #[error("secret `{0}` does not exist")]
    NotFound(String),
    /// The caller may not read it.
    #[error("secret `{0}` is not granted here")]
    Denied(String),
    /// The provider failed.
    #[error("secret provider failed: {0}")]
    Unavailable(String),
}

/// Where secrets come from (environment, Vault, a cloud secret manager...).
#[async_trait]
pub trait SecretProvider: Send + Sync {
    /// The value of one secret.
    async fn get(&self, name: &str) -> Result<String, SecretError>;
}

/// Secrets held in memory: for tests, embedding and the sandbox.
#[derive(Clone, Default)]
pub struct StaticSecrets {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for StaticSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: the values never reach a log.
        f.debug_list().entries(self.values.keys()).finish()
    }
}

impl StaticSecrets {
    /// No secrets.
    pub fn new() -> StaticSecrets {
        StaticSecrets::default()
    }

    /// Adds one secret.
    pub fn with(mut self, name: &str, value: &str) -> StaticSecrets {
        self.values.insert(name.to_string(), value.to_string());
        self
    }
}

#[async_trait]
impl SecretProvider for StaticSecrets {
    async fn get(&self, name: &str) -> Result<String, SecretError> {
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::NotFound(name.to_string()))
    }
}
