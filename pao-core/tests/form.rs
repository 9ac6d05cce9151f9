//! Form schemas and field validation, black-box through the public API.

use std::path::Path;

use pao_core::catalog::{Catalog, LoadOptions, LoadedItem, load_item};
use pao_core::form::{FormContext, form_schema, validate_fields};
use serde_json::{Value, json};

fn catalog() -> Catalog {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    let opts = LoadOptions::default()
        .with_plugin("servicenow-incident", None)
        .with_plugin("slack-notify", None);
    Catalog::load(&dir, &opts).unwrap()
}

/// Every example item's form schema is a valid JSON Schema 2020-12 document, and the
/// postgres one matches its golden file.
#[test]
fn form_schemas_are_valid_json_schema_and_golden() {
    let c = catalog();
    assert!(c.len() >= 12);
    for item in c.items() {
        let schema = form_schema(&item.item);
        jsonschema::draft202012::meta::validate(&schema)
            .unwrap_or_else(|e| panic!("{}: form schema is not valid JSON Schema: {e}", item.id()));
        let props = schema["properties"].as_object().unwrap();
        let n_fields = item
            .item
            .presentation
            .iter()
            .flat_map(|p| p.all_fields())
            .count();
        assert_eq!(props.len(), n_fields, "{}", item.id());
    }
    let pg = c.get("database.postgres").unwrap();
    let schema = form_schema(&pg.item);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/postgres.form.json");
    let rendered = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("PAO_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &rendered).unwrap();
    }
    assert_eq!(
        rendered,
        std::fs::read_to_string(&golden).unwrap(),
        "rerun with PAO_UPDATE_GOLDEN=1 after review"
    );
    // Spot checks that the golden file says what a form renderer needs.
    assert_eq!(
        schema["properties"]["size"]["oneOf"][2],
        json!({"const": "large", "title": "Large: 8 vCPU, 32 GiB"})
    );
    assert_eq!(
        schema["properties"]["replicas"]["x-pao-visible-when"],
        json!("fields.environment == 'prod'")
    );
    assert_eq!(
        schema["properties"]["name"]["x-pao-pattern-message"],
        json!("3-31 characters: lower-case letters, digits and -, starting with a letter")
    );
    assert_eq!(
        schema["properties"]["parameters"]["maxProperties"],
        json!(20)
    );
    assert!(
        schema["allOf"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["then"]["required"] == json!(["replicas"]))
    );
}

const ITEM: &str = r#"
apiVersion: pao.dev/v2
kind: CatalogItem
metadata: { id: t.form, name: Form, description: All the checks., version: 1.0.0, category: compute, owner: { team: t } }
presentation:
  groups:
    - id: a
      title: A
      fields:
        - { id: name, type: text, required: true, min_length: 3, max_length: 8, validation: { pattern: "^[a-z]+$", message: "lower-case letters only" } }
        - { id: env, type: radio, options: [dev, prod], default: dev }
        - { id: count, type: integer, min: 1, max: 5, step: 1 }
        - { id: ratio, type: number, min: 0, max: 1 }
        - { id: on, type: boolean }
        - { id: tags, type: multiselect, options: [a, b, c] }
        - { id: when, type: date }
        - { id: at, type: datetime }
        - { id: mail, type: email }
        - { id: link, type: url }
        - { id: net, type: cidr }
        - { id: labels, type: key_value }
        - { id: doc, type: json }
        - { id: items, type: list }
        - { id: token, type: secret }
        - { id: owner, type: team }
    - id: prod
      title: Production
      visible_when: "fields.env == 'prod'"
      fields:
        - { id: pager, type: text, required: true }
        - { id: reason, type: textarea, required_when: "fields.count > 3" }
fulfillment: { mode: manual, manual: { jira: { project: P, issue_type: Task, summary: s } } }
"#;

fn item() -> LoadedItem {
    let (item, diags) = load_item("form.yaml", ITEM, &LoadOptions::default());
    // The form's fields are read by nothing here, so PAO-W003 warnings are expected.
    assert!(diags.iter().all(|d| d.code == "PAO-W003"), "{diags:?}");
    item.unwrap()
}

fn errors(values: Value) -> Vec<(String, &'static str)> {
    match validate_fields(&item(), &values, &FormContext::default()) {
        Ok(v) => panic!("expected errors, got {v:?}"),
        Err(e) => e.into_iter().map(|e| (e.field, e.code)).collect(),
    }
}

#[test]
fn valid_values_pass_with_defaults_and_secrets_split() {
    let v = json!({
        "name": "abc", "count": 2, "ratio": 0.5, "on": true, "tags": ["a", "c"], "when": "2026-01-31",
        "at": "2026-01-31T09:00:00Z", "mail": "a@b.io", "link": "https://x.io", "net": "10.0.0.0/16",
        "labels": {"k": "v"}, "doc": {"any": [1]}, "items": ["x"], "token": "hunter2", "owner": "data"
    });
    let ok = validate_fields(&item(), &v, &FormContext::default()).unwrap();
    assert_eq!(ok.values["env"], json!("dev"), "default filled in");
    assert!(
        ok.values.get("token").is_none(),
        "secrets are never in stored values"
    );
    assert_eq!(ok.secrets["token"], json!("hunter2"));
    assert!(ok.values.get("pager").is_none());
}

#[test]
fn every_error_is_reported_with_its_field() {
    let got = errors(json!({
        "name": "AB", "count": "2", "ratio": 2, "on": "yes", "tags": ["a", "z", "a"], "when": "31.01.2026",
        "at": "tomorrow", "mail": "nope", "link": "ftp//x", "net": "10.0.0.0/33", "labels": {"k": 1},
        "items": "x", "env": "qa", "extra": 1
    }));
    let want: Vec<(String, &str)> = [
        ("extra", "unknown_field"),
        ("name", "min_length"),
        ("name", "pattern"),
        ("env", "option"),
        ("count", "type"),
        ("ratio", "max"),
        ("on", "type"),
        ("tags", "option"),
        ("tags", "option"),
        ("when", "format"),
        ("at", "format"),
        ("mail", "format"),
        ("link", "format"),
        ("net", "format"),
        ("labels", "type"),
        ("items", "type"),
    ]
    .iter()
    .map(|(f, c)| (f.to_string(), *c))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn conditional_requirement_and_hidden_fields() {
    // Missing required field.
    assert_eq!(errors(json!({})), vec![("name".to_string(), "required")]);
    // A hidden group's fields are neither required nor kept, even when sent.
    let ok = validate_fields(
        &item(),
        &json!({"name": "abc", "pager": "x"}),
        &FormContext::default(),
    )
    .unwrap();
    assert!(ok.values.get("pager").is_none());
    // Visible: required applies, and required_when follows the values.
    assert_eq!(
        errors(json!({"name": "abc", "env": "prod"})),
        vec![("pager".to_string(), "required")]
    );
    assert_eq!(
        errors(json!({"name": "abc", "env": "prod", "pager": "p", "count": 4})),
        vec![("reason".to_string(), "required")]
    );
    let ok = validate_fields(
        &item(),
        &json!({"name": "abc", "env": "prod", "pager": "p", "count": 2}),
        &FormContext::default(),
    )
    .unwrap();
    assert_eq!(ok.values["pager"], json!("p"));
    // Not an object.
    let e = validate_fields(&item(), &json!([1]), &FormContext::default()).unwrap_err();
    assert_eq!(e[0].code, "not_object");
}

/// List values are bounded before anything looks at their items: a request with a huge list
/// gets one error per field, fast; many bad items give a few errors, not one per item.
#[test]
fn long_lists_get_few_short_errors_fast() {
    let base = || json!({"name": "abc"});
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        validate_fields(&item(), &b, &FormContext::default()).unwrap_err()
    };
    // Many items that are not options: ten errors, then one that counts the rest.
    let bad: Vec<String> = (0..500).map(|i| format!("z{i}")).collect();
    let e = with("tags", json!(bad));
    assert_eq!(e.len(), 11, "{e:?}");
    assert!(e[10].message.contains("490 more"), "{}", e[10].message);
    assert!(e.iter().all(|x| x.message.len() < 200), "{e:?}");
    // Duplicates in a multiselect, found without comparing every pair.
    let e = with("tags", json!(vec!["a"; 1_000]));
    assert_eq!(e.len(), 11, "{e:?}");
    assert!(e[0].message.contains("selected twice"), "{}", e[0].message);
    // Past the hard cap: one error per field, before any item is looked at.
    let many: Vec<String> = (0..90_000).map(|i| format!("v{i}")).collect();
    let started = std::time::Instant::now();
    for field in ["items", "tags"] {
        let e = with(field, json!(many));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].code, "max");
        assert!(
            e[0].message.contains("at most 1000 items"),
            "{}",
            e[0].message
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
