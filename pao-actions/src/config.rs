//! What an operator writes in the server's configuration file for the built-in actions: named
//! JIRA, Terraform and GitHub instances, and HTTP settings. Secret values are never here, only
//! the names the secret provider resolves at execution time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// A configuration problem found by [`crate::register_builtins`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A URL does not parse or is not http(s).
    #[error("{at}: `{url}` is not an absolute http(s) URL")]
    BadUrl {
        /// Where (e.g. `jira.jira-cloud.url`).
        at: String,
        /// The value.
        url: String,
    },
    /// More than one instance of a kind says `default: true`.
    #[error("{kind}: more than one instance is marked `default: true` ({names})")]
    SeveralDefaults {
        /// `jira`, `terraform` or `github`.
        kind: &'static str,
        /// The instances.
        names: String,
    },
    /// A value is out of range.
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: String,
        /// What is wrong.
        message: String,
    },
}

/// Configuration of the built-in actions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    /// HTTP client settings shared by every action.
    #[serde(default)]
    pub http: HttpSettings,
    /// JIRA instances by name (the `instance` of a `jira` action or manual ticket).
    #[serde(default)]
    pub jira: BTreeMap<String, JiraInstance>,
    /// Terraform Cloud / Enterprise instances by name.
    #[serde(default)]
    pub terraform: BTreeMap<String, TerraformInstance>,
    /// GitHub connections by name (github.com or Enterprise Server).
    #[serde(default)]
    pub github: BTreeMap<String, GithubInstance>,
}

/// HTTP client settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Time to establish a connection. Default `10s`.
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// Time for one request, response body included. Default `30s`.
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// Largest response body read (REST actions may lower it per call). Default 1 MiB.
    pub max_response_bytes: usize,
    /// First delay between two polls of a long-running job (Terraform run, workflow run,
    /// REST `poll`). Default `2s`.
    #[serde(with = "duration_text")]
    pub poll_initial: Duration,
    /// Largest delay between two polls; the delay doubles up to it. Also caps a REST action's
    /// own `poll.interval`. Default `30s`.
    #[serde(with = "duration_text")]
    pub poll_max: Duration,
    /// `User-Agent` header. Default `pao/<version>`.
    pub user_agent: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
            poll_initial: Duration::from_secs(2),
            poll_max: Duration::from_secs(30),
            user_agent: format!("pao/{}", pao_core::VERSION),
        }
    }
}

/// A JIRA site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraInstance {
    /// Base URL, e.g. `https://example.atlassian.net` or `https://jira.example.com`.
    pub url: String,
    /// REST API version: 3 (Cloud, Atlassian Document Format) or 2 (Server / Data Center).
    #[serde(default = "default_jira_version")]
    pub api_version: u8,
    /// Credentials.
    pub auth: JiraAuth,
    /// The instance used when an action names none.
    #[serde(default)]
    pub default: bool,
    /// How ticket statuses map to request outcomes in manual mode.
    #[serde(default)]
    pub outcomes: JiraOutcomes,
    /// Transition (name, or target status name) that a rollback applies. Default `Cancel`,
    /// falling back to any transition into a `cancelled` status.
    #[serde(default = "default_cancel_transition")]
    pub cancel_transition: String,
}

fn default_jira_version() -> u8 {
    3
}

fn default_cancel_transition() -> String {
    "Cancel".into()
}

/// JIRA credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JiraAuth {
    /// Basic auth: Cloud e-mail + API token, or Server user + password.
    Basic {
        /// Account e-mail (Cloud) or user name.
        #[serde(alias = "user")]
        email: String,
        /// Name of the secret holding the API token or password.
        token_secret: String,
    },
    /// `Authorization: Bearer <personal access token>` (Data Center).
    Bearer {
        /// Name of the secret holding the token.
        token_secret: String,
    },
}

/// Status names (case-insensitive) that end a manual-mode request, per outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JiraOutcomes {
    /// The request completes. Default `Done`, `Resolved`, `Closed`.
    pub completed: Vec<String>,
    /// The request fails. Default `Won't Do`, `Rejected`, `Declined`.
    pub failed: Vec<String>,
    /// The request fails as cancelled. Default `Cancelled`, `Canceled`.
    pub cancelled: Vec<String>,
    /// Resolution names that turn a `completed` status into a failure (`Closed` with
    /// resolution `Won't Do`). Default `Won't Do`, `Won't Fix`, `Declined`, `Duplicate`.
    pub failed_resolutions: Vec<String>,
}

impl Default for JiraOutcomes {
    fn default() -> Self {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        JiraOutcomes {
            completed: v(&["Done", "Resolved", "Closed"]),
            failed: v(&["Won't Do", "Rejected", "Declined"]),
            cancelled: v(&["Cancelled", "Canceled"]),
            failed_resolutions: v(&["Won't Do", "Won't Fix", "Declined", "Duplicate"]),
        }
    }
}

/// A Terraform Cloud organization host or Terraform Enterprise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerraformInstance {
    /// Base URL. Default `https://app.terraform.io`.
    #[serde(default = "default_tfc_url")]
    pub url: String,
    /// Name of the secret holding a team or user API token.
    pub token_secret: String,
    /// Organization used when an action names none.
    #[serde(default)]
    pub organization: Option<String>,
    /// The instance used when an action names none.
    #[serde(default)]
    pub default: bool,
    /// VCS OAuth token id used for workspaces connected to a repository.
    #[serde(default)]
    pub oauth_token_id: Option<String>,
    /// Templates by name (the `template` of a `terraform` action): the repository a new
    /// workspace is connected to.
    #[serde(default)]
    pub templates: BTreeMap<String, TerraformTemplate>,
}

fn default_tfc_url() -> String {
    "https://app.terraform.io".into()
}

/// A workspace template: a VCS repository holding a root module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerraformTemplate {
    /// Repository identifier, e.g. `platform/terraform-postgres`.
    pub repository: String,
    /// Branch; default the repository's default branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// Directory of the root module.
    #[serde(default)]
    pub working_directory: Option<String>,
    /// Terraform version of new workspaces.
    #[serde(default)]
    pub terraform_version: Option<String>,
}

/// A GitHub connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubInstance {
    /// REST API URL. Default `https://api.github.com` (GHES: `https://<host>/api/v3`).
    #[serde(default = "default_github_url")]
    pub api_url: String,
    /// Credentials.
    pub auth: GithubAuth,
    /// The instance used when an action names none.
    #[serde(default)]
    pub default: bool,
    /// Workflow input that carries PAO's correlation id; workflows dispatched by PAO declare it
    /// and put it in their `run-name`. Default `pao_correlation_id`.
    #[serde(default = "default_correlation_input")]
    pub correlation_input: String,
}

fn default_github_url() -> String {
    "https://api.github.com".into()
}

fn default_correlation_input() -> String {
    "pao_correlation_id".into()
}

/// GitHub credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GithubAuth {
    /// A personal access token (fine-grained: Actions read and write).
    Pat {
        /// Name of the secret holding the token.
        token_secret: String,
    },
    /// A GitHub App installation: a JWT signed with the app's key buys an installation token
    /// (cached until shortly before it expires).
    App {
        /// The app id.
        app_id: String,
        /// Name of the secret holding the app's PEM private key.
        private_key_secret: String,
        /// The installation id in the organization.
        installation_id: u64,
    },
}

impl ActionsConfig {
    /// Checks URLs, defaults and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check_url = |at: String, url: &str| {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() > "https://".len();
            if ok {
                Ok(())
            } else {
                Err(ConfigError::BadUrl {
                    at,
                    url: url.to_string(),
                })
            }
        };
        for (n, i) in &self.jira {
            check_url(format!("jira.{n}.url"), &i.url)?;
            if !matches!(i.api_version, 2 | 3) {
                return Err(ConfigError::Invalid {
                    at: format!("jira.{n}.api_version"),
                    message: format!("must be 2 or 3, not {}", i.api_version),
                });
            }
        }
        for (n, i) in &self.terraform {
            check_url(format!("terraform.{n}.url"), &i.url)?;
        }
        for (n, i) in &self.github {
            check_url(format!("github.{n}.api_url"), &i.api_url)?;
        }
        defaults("jira", self.jira.iter().map(|(n, i)| (n, i.default)))?;
        defaults(
            "terraform",
            self.terraform.iter().map(|(n, i)| (n, i.default)),
        )?;
        defaults("github", self.github.iter().map(|(n, i)| (n, i.default)))?;
        if self.http.max_response_bytes == 0 {
            return Err(ConfigError::Invalid {
                at: "http.max_response_bytes".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

fn defaults<'a>(
    kind: &'static str,
    it: impl Iterator<Item = (&'a String, bool)>,
) -> Result<(), ConfigError> {
    let d: Vec<&str> = it.filter(|(_, d)| *d).map(|(n, _)| n.as_str()).collect();
    if d.len() > 1 {
        return Err(ConfigError::SeveralDefaults {
            kind,
            names: d.join(", "),
        });
    }
    Ok(())
}

/// Picks the named instance, or the default one (marked `default`, or the only one).
pub(crate) fn pick<'a, T>(
    kind: &str,
    map: &'a BTreeMap<String, T>,
    name: Option<&str>,
    is_default: impl Fn(&T) -> bool,
) -> Result<(&'a str, &'a T), String> {
    match name {
        Some(n) => map
            .get_key_value(n)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| {
                let known: Vec<&str> = map.keys().map(String::as_str).collect();
                format!(
                    "no {kind} instance `{n}` is configured (configured: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            }),
        None => map
            .iter()
            .find(|(_, v)| is_default(v))
            .or_else(|| (map.len() == 1).then(|| map.iter().next()).flatten())
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| {
                format!("the action names no {kind} instance and none is marked `default: true`")
            }),
    }
}

/// Durations as text (`500ms`, `10s`, `2m`) or milliseconds.
pub(crate) mod duration_text {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a duration (use 500ms, 10s, 2m, 1h)"
                ))
            }),
        }
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` (and combinations the variable engine accepts).
pub(crate) fn parse(text: &str) -> Option<Duration> {
    pao_core::vars::parse_duration_ms(text)
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis)
}
