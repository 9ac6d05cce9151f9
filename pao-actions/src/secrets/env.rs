//! Secrets in environment variables: the simplest provider, for a container whose platform
//! injects secrets as variables.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use pao_core::secrets::{SecretError, SecretProvider};

/// The prefix [`EnvSecrets`] uses unless configured otherwise.
pub const DEFAULT_ENV_PREFIX: &str = "PAO_SECRET_";

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Secret `jira_token` is the environment variable `<prefix>JIRA_TOKEN`: the name upper-cased,
/// every character other than a letter or digit turned into `_`. The variable is read at each
/// lookup, so a changed environment is seen at once.
#[derive(Clone)]
pub struct EnvSecrets {
    prefix: String,
    lookup: Arc<Lookup>,
}

impl fmt::Debug for EnvSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvSecrets")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Default for EnvSecrets {
    fn default() -> Self {
        EnvSecrets::new(DEFAULT_ENV_PREFIX)
    }
}

impl EnvSecrets {
    /// Reads the process environment.
    pub fn new(prefix: impl Into<String>) -> EnvSecrets {
        EnvSecrets::with_lookup(prefix, |var| std::env::var(var).ok())
    }

    /// Reads variables through `lookup` (tests, or an embedder's own environment).
    pub fn with_lookup(
        prefix: impl Into<String>,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> EnvSecrets {
        EnvSecrets {
            prefix: prefix.into(),
            lookup: Arc::new(lookup),
        }
    }

    /// The variable that holds secret `name`.
    pub fn variable(&self, name: &str) -> String {
        let upper: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}{upper}", self.prefix)
    }
}

#[async_trait]
impl SecretProvider for EnvSecrets {
    async fn get(&self, name: &str) -> Result<String, SecretError> {
        if name.is_empty() {
            return Err(SecretError::NotFound(name.to_string()));
        }
        (self.lookup)(&self.variable(name)).ok_or_else(|| SecretError::NotFound(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    fn provider(vars: Arc<Mutex<BTreeMap<String, String>>>) -> EnvSecrets {
        EnvSecrets::with_lookup(DEFAULT_ENV_PREFIX, move |k| {
            vars.lock().ok().and_then(|v| v.get(k).cloned())
        })
    }

    #[tokio::test]
    async fn reads_the_prefixed_upper_case_variable() {
        let vars = Arc::new(Mutex::new(BTreeMap::from([(
            "PAO_SECRET_JIRA_TOKEN".to_string(),
            "abc".to_string(),
        )])));
        let s = provider(vars);
        assert_eq!(s.get("jira_token").await.unwrap(), "abc");
        assert_eq!(
            s.get("other").await,
            Err(SecretError::NotFound("other".into()))
        );
    }

    #[tokio::test]
    async fn a_changed_environment_is_seen_at_the_next_lookup() {
        let vars = Arc::new(Mutex::new(BTreeMap::new()));
        let s = provider(vars.clone());
        assert!(matches!(
            s.get("tfc_token").await,
            Err(SecretError::NotFound(_))
        ));
        vars.lock()
            .unwrap()
            .insert("PAO_SECRET_TFC_TOKEN".into(), "v1".into());
        assert_eq!(s.get("tfc_token").await.unwrap(), "v1");
        vars.lock()
            .unwrap()
            .insert("PAO_SECRET_TFC_TOKEN".into(), "v2".into());
        assert_eq!(s.get("tfc_token").await.unwrap(), "v2");
    }

    #[test]
    fn variable_names() {
        let s = EnvSecrets::new("APP_");
        assert_eq!(s.variable("jira-cloud.token"), "APP_JIRA_CLOUD_TOKEN");
        assert_eq!(EnvSecrets::default().variable("x"), "PAO_SECRET_X");
    }

    #[test]
    fn debug_shows_no_values() {
        let s = EnvSecrets::with_lookup("P_", |_| Some("value-never-shown".into()));
        assert!(!format!("{s:?}").contains("value-never-shown"));
    }
}
