//! The configuration file shown in `docs/operators.md` is one `pao serve` accepts.

use pao_server::config::ServerConfig;

const DOC: &str = include_str!("../../docs/operators.md");

#[test]
fn the_documented_configuration_parses() {
    let start = DOC.find("```toml\n").expect("the TOML example") + "```toml\n".len();
    let end = start
        + DOC[start..]
            .find("```")
            .expect("the end of the TOML example");
    let config = ServerConfig::from_toml(&DOC[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.bind, "0.0.0.0:8080");
    assert_eq!(config.workers, 4);
    assert_eq!(config.allowed_origins, ["https://console.example.com"]);
    assert_eq!(config.limits.rate_per_second, 200);
    assert!(config.plugins.grants.contains_key("slack-notify"));
}
