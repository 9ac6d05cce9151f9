//! What the host, a plugin and the operator each decide: [`HostConfig`] (the process),
//! [`Manifest`] (the plugin asks), [`Grant`] (the operator allows). The operator's grant is
//! what a plugin gets (hosts differ between deployments: a sandbox on 127.0.0.1, a customer's
//! own ServiceNow instance); the manifest's requests are what the operator reviews, and the
//! loader warns where the two differ. Limits are the lower of manifest and grant, within the
//! host's ceilings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Process-wide settings of a [`crate::PluginHost`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled plugins are cached (keyed by content hash and engine compatibility).
    /// `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
    /// Pre-reserve instance slots (the pooling allocator): faster instantiation, more virtual
    /// memory reserved up front.
    pub pooling: bool,
    /// Instances that may run at once with the pooling allocator.
    pub max_concurrent_instances: u32,
    /// Count fuel (instructions) so manifests and grants may cap it. Costs some speed.
    pub fuel: bool,
    /// Defaults for a plugin that does not say, and ceilings it cannot go above.
    pub limits: Limits,
    /// The ceiling on any plugin's memory, whatever its manifest and grant say.
    pub max_memory_bytes: u64,
    /// The ceiling on any plugin's call, whatever its manifest and grant say.
    pub max_timeout: Duration,
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
            cache_dir: None,
            pooling: true,
            max_concurrent_instances: 64,
            fuel: false,
            limits: Limits::default(),
            max_memory_bytes: 256 << 20,
            max_timeout: Duration::from_secs(300),
        }
    }
}

/// Limits of one plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap, bytes.
    pub memory_bytes: u64,
    /// Wall-clock time of one call (describe, validate, execute or rollback).
    pub timeout: Duration,
    /// Fuel per call, when the host counts fuel.
    pub fuel: Option<u64>,
    /// Largest HTTP response body the plugin may receive, bytes.
    pub max_response_bytes: u64,
    /// Largest value the plugin may store in its key-value namespace, bytes; the namespace
    /// holds at most 256 times that.
    pub max_kv_value_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            fuel: None,
            max_response_bytes: 4 << 20,
            max_kv_value_bytes: 64 << 10,
        }
    }
}

/// `<name>.toml` next to `<name>.wasm`: who the plugin is and what it asks for.
///
/// ```toml
/// name = "slack-notify"
/// version = "0.1.0"
///
/// [limits]
/// memory_mb = 32
/// timeout_ms = 10000
///
/// [capabilities]
/// http_hosts = ["slack.com"]
/// secrets = ["slack_bot_token"]
/// kv = false
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name: catalog items use `plugin:<name>`. Must equal what the plugin's
    /// `describe` returns.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// Requested limits; the host's defaults where absent.
    #[serde(default)]
    pub limits: RequestedLimits,
    /// What the plugin needs.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// Limits a manifest or a grant asks for (each capped by the host's ceilings).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    /// Memory cap, MiB.
    pub memory_mb: Option<u64>,
    /// Per-call timeout, milliseconds.
    pub timeout_ms: Option<u64>,
    /// Fuel per call.
    pub fuel: Option<u64>,
    /// HTTP response body cap, bytes.
    pub max_response_bytes: Option<u64>,
}

/// Capabilities a plugin requests (manifest) or is granted (operator).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Host names: `api.example.com`, `*.service-now.com` (any subdomain), or `host:port`.
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// Secret names it may read or reference in headers.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Whether it may use its key-value namespace.
    #[serde(default)]
    pub kv: bool,
}

/// The operator's grants, per plugin name: typically a `[plugins.<name>]` table of the
/// server's configuration.
///
/// ```toml
/// [plugins.slack-notify]
/// http_hosts = ["slack.com"]
/// secrets = ["slack_bot_token"]
/// settings = { api_url = "https://slack.com/api" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Grant per plugin name. A plugin without one loads with no capabilities.
    #[serde(default)]
    pub plugins: BTreeMap<String, Grant>,
}

impl Grants {
    /// No grants.
    pub fn new() -> Grants {
        Grants::default()
    }

    /// Adds or replaces the grant of one plugin.
    pub fn with(mut self, plugin: &str, grant: Grant) -> Grants {
        self.plugins.insert(plugin.to_string(), grant);
        self
    }
}

/// What the operator allows one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Allowed hosts, same syntax as [`Capabilities::http_hosts`].
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// Allowed secret names.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Whether the key-value store is allowed.
    #[serde(default)]
    pub kv: bool,
    /// Lower limits than the manifest asks for (never higher).
    #[serde(default)]
    pub limits: RequestedLimits,
    /// Deployment settings handed to the plugin in every call's context (`api_url`).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

impl Grant {
    /// Allows these hosts.
    pub fn http_hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Grant {
        self.http_hosts.extend(hosts.into_iter().map(Into::into));
        self
    }

    /// Allows these secrets.
    pub fn secrets<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Grant {
        self.secrets.extend(names.into_iter().map(Into::into));
        self
    }

    /// Allows the key-value store.
    pub fn kv(mut self) -> Grant {
        self.kv = true;
        self
    }

    /// Adds a setting.
    pub fn setting(mut self, key: &str, value: &str) -> Grant {
        self.settings.insert(key.to_string(), value.to_string());
        self
    }
}

/// What one loaded plugin may do: the manifest's requests within the operator's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Hosts it may call.
    pub http_hosts: Vec<String>,
    /// Secrets it may read.
    pub secrets: Vec<String>,
    /// Key-value store access.
    pub kv: bool,
    /// Its limits.
    pub limits: Limits,
    /// Its settings.
    pub settings: BTreeMap<String, String>,
}

impl Effective {
    /// The grant's capabilities, limits the lower of manifest and grant, capped by the host.
    pub fn resolve(host: &HostConfig, manifest: &Manifest, grant: &Grant) -> Effective {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let l = &manifest.limits;
        let g = &grant.limits;
        let d = &host.limits;
        let memory = min(l.memory_mb, g.memory_mb)
            .map(|mb| mb.saturating_mul(1 << 20))
            .unwrap_or(d.memory_bytes)
            .min(host.max_memory_bytes);
        let timeout = min(l.timeout_ms, g.timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(d.timeout)
            .min(host.max_timeout);
        Effective {
            http_hosts: grant.http_hosts.clone(),
            secrets: grant.secrets.clone(),
            kv: grant.kv,
            limits: Limits {
                memory_bytes: memory,
                timeout,
                fuel: min(l.fuel, g.fuel).or(d.fuel),
                max_response_bytes: min(l.max_response_bytes, g.max_response_bytes)
                    .unwrap_or(d.max_response_bytes),
                max_kv_value_bytes: d.max_kv_value_bytes,
            },
            settings: grant.settings.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_gets_its_grant_and_the_lowest_limits() {
        let host = HostConfig {
            max_memory_bytes: 16 << 20,
            ..HostConfig::default()
        };
        let manifest: Manifest = toml::from_str(
            r#"
            name = "x"
            version = "1.0.0"
            [limits]
            memory_mb = 64
            timeout_ms = 5000
            [capabilities]
            http_hosts = ["a.example", "b.example"]
            secrets = ["s1", "s2"]
            kv = true
            "#,
        )
        .unwrap();
        let grant = Grant::default()
            .http_hosts(["b.example", "c.example"])
            .secrets(["s2"]);
        let e = Effective::resolve(&host, &manifest, &grant);
        assert_eq!(e.http_hosts, vec!["b.example", "c.example"]);
        assert_eq!(e.secrets, vec!["s2"]);
        assert!(!e.kv, "kv was asked for but not granted");
        assert_eq!(e.limits.memory_bytes, 16 << 20);
        assert_eq!(e.limits.timeout, Duration::from_secs(5));
    }

    #[test]
    fn grants_read_from_the_servers_toml() {
        let grants: Grants = toml::from_str(
            r#"
            [plugins.slack-notify]
            http_hosts = ["slack.com"]
            secrets = ["slack_bot_token"]
            kv = true
            settings = { api_url = "https://slack.com/api" }
            limits = { timeout_ms = 5000 }
            "#,
        )
        .unwrap();
        let g = &grants.plugins["slack-notify"];
        assert_eq!(g.http_hosts, vec!["slack.com"]);
        assert!(g.kv);
        assert_eq!(g.settings["api_url"], "https://slack.com/api");
        assert_eq!(g.limits.timeout_ms, Some(5000));
        let typo: Result<Grants, _> = toml::from_str("[plugins.x]\nhttp_host = [\"a\"]\n");
        assert!(
            typo.is_err(),
            "a misspelt grant must not silently grant nothing"
        );
    }

    #[test]
    fn unknown_manifest_keys_are_refused() {
        let r: Result<Manifest, _> =
            toml::from_str("name = \"x\"\nversion = \"1\"\nnetwork = true\n");
        assert!(r.is_err());
    }
}
