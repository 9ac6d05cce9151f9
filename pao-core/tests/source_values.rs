//! A field whose options come from a source (`source.http`, `source.catalog`) accepts at
//! submit only values that can be a name: they go into URLs (the example Kubernetes item puts
//! `fields.cluster` in the path of every call).

use std::path::Path;

use pao_core::catalog::{Catalog, LoadOptions};
use pao_core::form::{FormContext, validate_fields};
use serde_json::{Value, json};

fn cluster_errors(cluster: Value) -> Vec<&'static str> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    let opts = LoadOptions::default()
        .with_plugin("servicenow-incident", None)
        .with_plugin("slack-notify", None);
    let catalog = Catalog::load(&dir, &opts).unwrap();
    let item = catalog.get("compute.kubernetes-namespace").unwrap();
    let values = json!({
        "name": "orders", "cluster": cluster, "team": "platform", "technical_contact": "alice",
        "gitops_enabled": false
    });
    match validate_fields(item, &values, &FormContext::default()) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .into_iter()
            .filter(|e| e.field == "cluster")
            .map(|e| e.code)
            .collect(),
    }
}

#[test]
fn a_source_backed_value_that_is_not_a_name_is_refused() {
    for bad in [
        "../../x",
        "..",
        "a/b",
        "a?b",
        "a#b",
        "a%2Fb",
        "a\\b",
        "a\nb",
        &"c".repeat(257),
    ] {
        assert_eq!(cluster_errors(json!(bad)), vec!["source_value"], "{bad:?}");
    }
}

#[test]
fn a_source_backed_name_is_accepted() {
    for good in ["prod-eu-1", "dev.cluster_2", "k8s:prod@eu"] {
        assert!(cluster_errors(json!(good)).is_empty(), "{good}");
    }
}
