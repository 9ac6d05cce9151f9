//! Secret providers for production: where `secrets.<name>` comes from when PAO runs for real.
//!
//! - [`EnvSecrets`]: environment variables, `jira_token` → `PAO_SECRET_JIRA_TOKEN`.
//! - [`FileSecrets`]: one file per secret in a folder, such as a mounted Kubernetes secret;
//!   a file replaced on disk is read again.
//! - [`VaultSecrets`] (feature `vault`): HashiCorp Vault's KV version 2 engine, with token,
//!   AppRole or Kubernetes login, token renewal and a short cache so a rotated secret is seen
//!   without a restart.
//!
//! Each implements `pao-core`'s [`SecretProvider`](pao_core::secrets::SecretProvider) and
//! answers the same way: [`NotFound`](pao_core::secrets::SecretError::NotFound) when the
//! secret is not there, [`Denied`](pao_core::secrets::SecretError::Denied) when the provider
//! refuses PAO, [`Unavailable`](pao_core::secrets::SecretError::Unavailable) when it cannot
//! answer now (the engine tries again later). No error message and no `Debug` output holds a
//! secret value or a credential.
//!
//! ```
//! use pao_actions::secrets::EnvSecrets;
//! use pao_core::secrets::SecretProvider;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let secrets = EnvSecrets::with_lookup("PAO_SECRET_", |var| {
//!     (var == "PAO_SECRET_JIRA_TOKEN").then(|| "t0ken".to_string())
//! });
//! assert_eq!(secrets.get("jira_token").await.unwrap(), "t0ken");
//! # });
//! ```

mod env;
mod files;
#[cfg(feature = "vault")]
mod vault;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use env::{DEFAULT_ENV_PREFIX, EnvSecrets};
pub use files::{FileSecrets, MAX_SECRET_FILE_BYTES};
#[cfg(feature = "vault")]
pub use vault::{VaultAuth, VaultConfig, VaultSecrets};

/// A credential written in a configuration file: deserialized like a string, never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> SecretText {
        SecretText(value.into())
    }

    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Whether `name` is safe to use as one path segment: not empty, no `/` or `\`, no NUL, not
/// starting with `.` (which also rules out `.` and `..`).
pub(crate) fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_text_debug_hides_the_value() {
        let t = SecretText::new("hvs.very-secret");
        assert_eq!(format!("{t:?}"), "[REDACTED]");
        assert_eq!(t.expose(), "hvs.very-secret");
    }

    #[test]
    fn plain_names() {
        for ok in ["jira_token", "a-b.c", "X1"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "..data", "a/b", "a\\b", "a..b", "..", "a\0"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
