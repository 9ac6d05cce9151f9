//! `pao serve --sandbox`: starts local fakes of JIRA, GitHub, Terraform Cloud, the example
//! catalog's REST services and a webhook receiver (`pao-sandbox`), points the built-in actions
//! and the `env` scope at them, fills the secrets they accept, and adds development tokens, so
//! a newcomer sees a request reach `Completed` without any external account.

use pao_core::authz::Principal;

use crate::config::ServerConfig;
use crate::state::Overrides;

/// The sandbox's development tokens: (token, principal).
pub fn dev_tokens() -> Vec<(String, Principal)> {
    let mut alice = Principal::new(
        "alice",
        &["platform", "data-platform", "app-team", "payments"],
        &["developer"],
    );
    alice.email = Some("alice@example.com".into());
    alice.name = Some("Alice Developer".into());
    // Two approvers, so items that need two approvals can be walked through too.
    let approver_teams = [
        "compute-platform",
        "security-engineering",
        "identity-team",
        "network-engineering",
        "messaging-platform",
        "data-platform-leads",
    ];
    let mut bob = Principal::new("bob", &approver_teams, &["approver", "developer"]);
    bob.email = Some("bob@example.com".into());
    bob.name = Some("Bob Approver".into());
    let mut carol = Principal::new("carol", &approver_teams, &["approver", "developer"]);
    carol.email = Some("carol@example.com".into());
    carol.name = Some("Carol Approver".into());
    let mut admin = Principal::new("admin", &["platform-admins"], &["admin"]);
    admin.email = Some("admin@example.com".into());
    vec![
        ("dev-alice".into(), alice),
        ("dev-bob".into(), bob),
        ("dev-carol".into(), carol),
        ("dev-admin".into(), admin),
    ]
}

/// A started sandbox: the fakes run as long as this lives.
pub struct Sandbox {
    /// The vendor fakes.
    pub fakes: pao_sandbox::VendorFakes,
    /// The Slack fake (the `slack-notify` example plugin).
    pub slack: pao_sandbox::slack::SlackFake,
    /// The ServiceNow fake (the `servicenow-incident` example plugin).
    pub servicenow: pao_sandbox::servicenow::ServiceNowFake,
}

/// Where `scripts/build-plugins` puts the example plugins.
pub const DEFAULT_PLUGIN_DIR: &str = "target/plugins";

/// Where the sandbox writes the example plugins built into this binary.
pub const EMBEDDED_PLUGIN_DIR: &str = "data/sandbox-plugins";

// `EXAMPLE_PLUGINS`, written by the build script.
include!(concat!(env!("OUT_DIR"), "/example_plugins.rs"));

/// The folder of the example plugins: those built into this binary, written to
/// [`EMBEDDED_PLUGIN_DIR`] (rewritten only when they differ); else [`DEFAULT_PLUGIN_DIR`] when
/// `scripts/build-plugins` filled it; else none.
fn example_plugins_dir() -> anyhow::Result<Option<std::path::PathBuf>> {
    if !EXAMPLE_PLUGINS.is_empty() {
        let dir = std::path::PathBuf::from(EMBEDDED_PLUGIN_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        for (name, wasm, manifest) in EXAMPLE_PLUGINS {
            for (file, bytes) in [
                (dir.join(format!("{name}.wasm")), *wasm),
                (dir.join(format!("{name}.toml")), manifest.as_bytes()),
            ] {
                if std::fs::read(&file).ok().as_deref() != Some(bytes) {
                    std::fs::write(&file, bytes)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
                }
            }
        }
        return Ok(Some(dir));
    }
    let dir = std::path::PathBuf::from(DEFAULT_PLUGIN_DIR);
    Ok(dir.join("slack-notify.wasm").exists().then_some(dir))
}

/// The sandbox's key-encryption key (32 bytes, base64): public, for development only.
pub const SANDBOX_KEK: &str = "cGFvLXNhbmRib3gta2V5LWVuY3J5cHRpb24ta2V5ISE=";

/// Starts the fakes and returns the configuration pointing at them, the overrides with the
/// development tokens, and a banner for the terminal.
pub async fn prepare(
    mut config: ServerConfig,
) -> anyhow::Result<(ServerConfig, Overrides, Sandbox, String)> {
    // The development tokens are printed on the terminal and written in the docs: anyone who
    // reaches the port would be an admin.
    if !crate::auth::bind_is_loopback(&config.bind) {
        anyhow::bail!(
            "--sandbox listens on this machine only (its development tokens are public): bind {} is not a loopback address",
            config.bind
        );
    }
    let fakes = pao_sandbox::VendorFakes::start_all().await?;
    for (k, v) in fakes.env() {
        config.env.insert(k, Some(v));
    }
    // The fakes' credentials are served from memory, whatever provider the file names.
    config.secret_provider = crate::config::SecretProviderConfig::Static;
    for (k, v) in fakes.secrets() {
        config.secrets.insert(k, v);
    }
    config.actions = serde_json::from_value(fakes.actions_config_json())?;
    // The fakes' outputs name addresses that do not exist (a VM's private IP): health checks
    // of what sandbox requests provisioned would only reach out of the machine and fail.
    config.health_checks.enabled = false;
    // A fixed development key, so that the sandbox's database keeps its sealed secrets across
    // restarts. Public: the sandbox holds no real secrets.
    if config.sealing.kek.is_none() {
        config
            .secrets
            .insert("sandbox_kek".into(), SANDBOX_KEK.into());
        config.sealing.kek = Some("sandbox_kek".into());
    }
    // The example plugins, when built, talk to their fakes.
    let slack = pao_sandbox::slack::SlackFake::start().await?;
    let servicenow = pao_sandbox::servicenow::ServiceNowFake::start().await?;
    let mut plugin_note = String::new();
    if config.plugins.dir.is_none() {
        match example_plugins_dir()? {
            Some(dir) => config.plugins.dir = Some(dir),
            None => {
                plugin_note = format!(
                    "\n  (items using the example plugins are off: this `pao` was built without them; `rustup target add wasm32-wasip2` and build again, or run scripts/build-plugins to build them into {DEFAULT_PLUGIN_DIR})"
                );
            }
        }
    }
    let host = |url: String| url.trim_start_matches("http://").to_string();
    config.secrets.insert(
        "slack_bot_token".into(),
        pao_sandbox::slack::SANDBOX_TOKEN.into(),
    );
    config.secrets.insert(
        "servicenow_password".into(),
        pao_sandbox::servicenow::SANDBOX_PASSWORD.into(),
    );
    config
        .plugins
        .grants
        .entry("slack-notify".into())
        .or_insert_with(|| {
            pao_wasm_host::Grant::default()
                .http_hosts([host(slack.url())])
                .secrets(["slack_bot_token"])
                .kv()
                .setting("api_url", &slack.api_url())
        });
    config
        .plugins
        .grants
        .entry("servicenow-incident".into())
        .or_insert_with(|| {
            pao_wasm_host::Grant::default()
                .http_hosts([host(servicenow.url())])
                .secrets(["servicenow_password"])
                .setting("instance_url", &servicenow.url())
                .setting("username", pao_sandbox::servicenow::SANDBOX_USER)
        });
    let over = Overrides {
        tokens: dev_tokens(),
        ..Overrides::default()
    };
    let banner = format!(
        "PAO sandbox on http://{{addr}} (fakes: JIRA {jira}, GitHub {gh}, Terraform {tf})\n  developer: Authorization: Bearer dev-alice\n  approvers: Authorization: Bearer dev-bob, dev-carol\n  admin:     Authorization: Bearer dev-admin",
        jira = fakes.jira.url(),
        gh = fakes.github.url(),
        tf = fakes.terraform.url(),
    ) + plugin_note.as_str();
    Ok((
        config,
        over,
        Sandbox {
            fakes,
            slack,
            servicenow,
        },
        banner,
    ))
}
