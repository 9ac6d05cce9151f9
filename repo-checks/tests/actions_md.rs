//! The configuration examples of `docs/actions.md` against `pao-actions`.

use std::time::Duration;

use pao_actions::ActionsConfig;

/// The operator configuration shown in docs/actions.md is a valid `ActionsConfig`.
#[test]
fn the_documented_configuration_deserializes() {
    let doc = include_str!("../../docs/actions.md");
    let start = doc.find("```yaml\nactions:").expect("the config example") + "```yaml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&doc[start..end]).unwrap();
    let json = serde_json::to_value(&v["actions"]).unwrap();
    let c: ActionsConfig = serde_json::from_value(json).unwrap();
    c.validate().unwrap();
    assert!(matches!(
        c.github["github-example"].auth,
        pao_actions::GithubAuth::Pat { .. }
    ));
    assert_eq!(c.http.poll_max, Duration::from_secs(30));
}
