//! Every `[secret_provider]` example in `docs/secrets.md` is one `pao serve` accepts.

use pao_server::config::{SecretProviderConfig, ServerConfig};

const DOC: &str = include_str!("../../docs/secrets.md");

/// The TOML blocks of the guide that hold a whole `[secret_provider]` table.
fn provider_examples() -> Vec<&'static str> {
    DOC.split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .filter(|block| block.contains("[secret_provider]\n"))
        .collect()
}

#[test]
fn the_documented_secret_providers_parse() {
    let examples = provider_examples();
    let mut kinds = Vec::new();
    for text in &examples {
        let config = ServerConfig::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        kinds.push(match &config.secret_provider {
            SecretProviderConfig::Static => "static",
            SecretProviderConfig::Env { .. } => "env",
            SecretProviderConfig::Files { .. } => "files",
            SecretProviderConfig::Vault(v) => {
                v.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(v.map["tfc_token"], "teams/terraform#token@3");
                "vault"
            }
        });
    }
    assert_eq!(kinds, ["static", "env", "files", "vault"]);
}

#[test]
fn the_documented_sealing_table_parses() {
    let block = DOC
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains("[sealing]\n"))
        .expect("docs/secrets.md shows the [sealing] table");
    let config = ServerConfig::from_toml(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert_eq!(config.sealing.kek.as_deref(), Some("pao_kek"));
    assert_eq!(config.sealing.rewrap_interval_secs, 600);
    assert!(config.reserved_secrets().contains("pao_kek"));
}
