//! Each action's config schema is the `$def` of the published item schema
//! (`schemas/catalog-item.v2.schema.json`), so the catalog loader and the action agree on one
//! contract.

use serde_json::{Value, json};

/// The JSON Schema of the `$def` named `def`, with every `$def` attached so that its `$ref`s
/// resolve on their own.
#[allow(dead_code, reason = "unused when every action feature is off")]
pub(crate) fn config_schema(def: &str) -> Value {
    let item: Value = serde_json::from_str(pao_core::catalog::ITEM_SCHEMA).unwrap_or(Value::Null);
    let defs = item.get("$defs").cloned().unwrap_or_else(|| json!({}));
    let mut schema = defs
        .get(def)
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    if let Value::Object(m) = &mut schema {
        m.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        m.insert("$defs".into(), defs);
    }
    schema
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_action_def_exists_in_the_item_schema() {
        for d in [
            "JiraConfig",
            "RestConfig",
            "TerraformConfig",
            "GithubWorkflowConfig",
            "WebhookConfig",
            "CostConfig",
            "ScriptConfig",
        ] {
            let s = super::config_schema(d);
            assert_eq!(s["type"], "object", "{d}");
            assert!(s["$defs"]["StringList"].is_object());
        }
    }
}
