//! `pao serve --sandbox`: development tokens and (with the actions crate) local fakes of the
//! services the example catalog talks to, so a newcomer sees a request complete without any
//! external account. Also where the production action registry is assembled.

use pao_core::authz::Principal;

use crate::config::ServerConfig;
use crate::state::Overrides;

/// The sandbox's development tokens: (token, principal).
pub fn dev_tokens() -> Vec<(String, Principal)> {
    let mut alice = Principal::new(
        "alice",
        &["platform", "data-platform", "app-team"],
        &["developer"],
    );
    alice.email = Some("alice@example.com".into());
    alice.name = Some("Alice Developer".into());
    let mut bob = Principal::new(
        "bob",
        &["platform-leads", "data-platform-leads", "security"],
        &["approver"],
    );
    bob.email = Some("bob@example.com".into());
    let mut admin = Principal::new("admin", &["platform-admins"], &["admin"]);
    admin.email = Some("admin@example.com".into());
    vec![
        ("dev-alice".into(), alice),
        ("dev-bob".into(), bob),
        ("dev-admin".into(), admin),
    ]
}

/// Prepares a sandbox: development tokens and a banner telling how to use them.
pub async fn prepare(
    config: ServerConfig,
) -> anyhow::Result<(ServerConfig, Overrides, Option<String>)> {
    let mut over = production_overrides(&config)?;
    over.tokens = dev_tokens();
    let banner = format!(
        "PAO sandbox on http://{bind}\n  developer: Authorization: Bearer dev-alice\n  approver:  Authorization: Bearer dev-bob\n  admin:     Authorization: Bearer dev-admin",
        bind = config.bind
    );
    Ok((config, over, Some(banner)))
}

/// The overrides of a normal start: the configured action types.
pub fn production_overrides(_config: &ServerConfig) -> anyhow::Result<Overrides> {
    Ok(Overrides::default())
}
