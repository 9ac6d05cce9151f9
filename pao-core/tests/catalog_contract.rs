//! Contract tests between the published JSON Schemas (`schemas/catalog-item.v2.schema.json`,
//! `schemas/catalog.v2.schema.json`), the serde model (`pao-core/src/catalog/model.rs`) and the
//! example catalog (`examples/catalog`).
//!
//! Dev-dependencies this file needs:
//!
//! ```toml
//! serde_yaml = "0.9"
//! jsonschema = { version = "0.61", default-features = false }
//! ```
//!
//! What it checks:
//! - every example item and `catalog.yaml` validates against its schema, deserializes into the
//!   model, and serializes back to the same JSON (no added nulls, no materialised defaults);
//! - the example catalog covers every field type, every built-in action type, both modes, ...;
//! - drift: for every `$defs` entry named like a model type, the schema's property names equal
//!   serde's field names (and enum values equal serde's variant names), and a maximal document
//!   that uses every property is accepted by both; renaming or removing any key, or giving a
//!   value of the wrong type, is accepted by the schema only if serde accepts it too, and
//!   refused by serde only if the schema refuses it too (with a short, reasoned list of
//!   cross-field rules that only the schema expresses).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use pao_core::catalog::model::*;

/// Root of the repository (the folder holding `schemas/` and `examples/`).
fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

fn read_json(relative: &str) -> Value {
    let path = repo_root().join(relative);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn item_schema() -> Value {
    read_json("schemas/catalog-item.v2.schema.json")
}

fn catalog_schema() -> Value {
    read_json("schemas/catalog.v2.schema.json")
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).expect("schema compiles")
}

fn schema_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// JSON equality where numbers compare by value (`1` equals `1.0`): the data model of JSON and
/// JSON Schema. A YAML `jitter: 0` read into an `f64` serializes as `0.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// First difference between two JSON values, as a JSON pointer and both sides.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let p = format!("{path}/{key}");
                match (x.get(key), y.get(key)) {
                    (Some(v), Some(w)) => {
                        if let Some(d) = first_difference(v, w, &p) {
                            return Some(d);
                        }
                    }
                    (v, w) => return Some(format!("{p}: {v:?} vs {w:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}/{i}"))),
        _ if json_eq(a, b) => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

/// Loads one YAML document both as plain JSON and as `T`; checks the round trip.
fn load_and_round_trip<T: DeserializeOwned + serde::Serialize>(
    path: &Path,
) -> Result<(Value, T), String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let original: Value = serde_yaml::from_str(&text).map_err(|e| format!("YAML: {e}"))?;
    let typed: T = serde_yaml::from_str(&text).map_err(|e| format!("serde: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("serialize: {e}"))?;
    if let Some(diff) = first_difference(&original, &back, "") {
        return Err(format!("round trip changed the document at {diff}"));
    }
    Ok((original, typed))
}

fn pointer_mut<'a>(doc: &'a mut Value, pointer: &str) -> &'a mut Value {
    doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the maximal document"))
}

fn object_at<'a>(doc: &'a Value, pointer: &str) -> &'a Map<String, Value> {
    doc.pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no object at {pointer} in the maximal document"))
}

/// The names serde lists after "expected" in an error message:
/// "unknown field `x`, expected one of `a`, `b`" / "expected `a` or `b`" / "expected `a`".
fn expected_names(message: &str) -> BTreeSet<String> {
    let Some((_, tail)) = message.split_once("expected") else {
        panic!("serde message without an expected list: {message}");
    };
    tail.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn schema_props(schema: &Value, def: &str) -> BTreeSet<String> {
    schema["$defs"][def]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("$defs/{def} has no properties"))
        .keys()
        .cloned()
        .collect()
}

fn schema_enum(schema: &Value, def: &str) -> BTreeSet<String> {
    schema["$defs"][def]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("$defs/{def} has no enum"))
        .iter()
        .map(|v| v.as_str().expect("string enum").to_owned())
        .collect()
}

fn serde_ok<T: DeserializeOwned>(doc: &Value) -> Result<(), String> {
    T::deserialize(doc.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

// ------------------------------------------------------------------------------------------
// the example catalog
// ------------------------------------------------------------------------------------------

#[test]
fn schemas_are_valid_json_schema_2020_12() {
    for schema in [item_schema(), catalog_schema()] {
        assert_eq!(
            schema["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema")
        );
        jsonschema::meta::validate(&schema).expect("valid against the 2020-12 meta-schema");
        validator(&schema);
    }
}

#[test]
fn every_example_item_validates_deserializes_and_round_trips() {
    let schema = validator(&item_schema());
    let dir = repo_root().join("examples/catalog");
    let mut failures = Vec::new();
    let mut count = 0;
    for path in yaml_files(&dir) {
        if path.file_name().is_some_and(|n| n == "catalog.yaml") {
            continue;
        }
        count += 1;
        match load_and_round_trip::<CatalogItem>(&path) {
            Err(e) => failures.push(format!("{}: {e}", path.display())),
            Ok((original, _)) => {
                for e in schema_errors(&schema, &original) {
                    failures.push(format!("{}: schema: {e}", path.display()));
                }
            }
        }
    }
    assert!(
        count >= 14,
        "expected at least 14 example items, found {count}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn example_catalog_settings_validate_deserialize_and_round_trip() {
    let path = repo_root().join("examples/catalog/catalog.yaml");
    let (original, settings) =
        load_and_round_trip::<CatalogSettings>(&path).unwrap_or_else(|e| panic!("{e}"));
    let errors = schema_errors(&validator(&catalog_schema()), &original);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(settings.api_version, API_VERSION);
    assert_eq!(settings.kind, CATALOG_KIND);
    let periods = settings.restricted_periods.expect("restricted periods");
    assert!(
        periods
            .iter()
            .any(|p| p.start == "09-01" && p.end == "01-31"),
        "the September-January freeze is the example"
    );
}

#[test]
fn example_catalog_covers_the_whole_contract() {
    let dir = repo_root().join("examples/catalog");
    let items: Vec<CatalogItem> = yaml_files(&dir)
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "catalog.yaml"))
        .map(|p| {
            load_and_round_trip(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .1
        })
        .collect();

    let categories: BTreeSet<&str> = items.iter().map(|i| i.metadata.category.as_str()).collect();
    for category in [
        "compute",
        "database",
        "messaging",
        "networking",
        "storage",
        "security",
        "monitoring",
        "identity",
    ] {
        assert!(categories.contains(category), "no {category} item");
    }

    let field_types: BTreeSet<FieldType> = items
        .iter()
        .flat_map(|i| i.all_fields().map(|f| f.field_type))
        .collect();
    for t in FieldType::ALL {
        assert!(field_types.contains(&t), "no field of type {}", t.as_str());
    }
    assert!(
        items
            .iter()
            .flat_map(CatalogItem::all_fields)
            .any(Field::is_secret)
    );

    let action_types: BTreeSet<String> = items
        .iter()
        .flat_map(|i| i.all_actions().map(|a| a.action_type.to_string()))
        .collect();
    for t in ActionType::BUILT_IN
        .iter()
        .copied()
        .chain(["plugin:servicenow-incident", "plugin:slack-notify"])
    {
        assert!(action_types.contains(t), "no action of type {t}");
    }

    let manual = items
        .iter()
        .filter(|i| i.fulfillment.mode == FulfillmentMode::Manual)
        .count();
    assert!(manual >= 3, "{manual} manual items");
    assert!(manual < items.len(), "no automated item");
    for item in items
        .iter()
        .filter(|i| i.fulfillment.mode == FulfillmentMode::Manual)
    {
        assert!(item.fulfillment.manual.is_some(), "{}", item.metadata.id);
    }

    let parallel = items
        .iter()
        .flat_map(|i| i.fulfillment.actions.iter().flatten())
        .filter(|s| matches!(s, ActionStep::Parallel(_)))
        .count();
    assert!(parallel >= 2, "{parallel} parallel groups");

    let all_actions: Vec<&ActionSpec> = items.iter().flat_map(CatalogItem::all_actions).collect();
    assert!(
        all_actions.iter().any(|a| a.rollback.is_some()),
        "no rollback"
    );
    assert!(
        all_actions.iter().any(|a| a.when.is_some()),
        "no conditional action"
    );
    assert!(
        items.iter().any(|i| i.fulfillment.approval.is_some()),
        "no approval"
    );

    let fields: Vec<&Field> = items.iter().flat_map(CatalogItem::all_fields).collect();
    let sources: Vec<&FieldSource> = fields.iter().filter_map(|f| f.source.as_ref()).collect();
    assert!(sources.iter().any(|s| s.http.is_some()), "no http source");
    assert!(
        sources.iter().any(|s| s.catalog.is_some()),
        "no catalog source"
    );
    assert!(
        sources.iter().any(|s| s.depends_on.is_some()),
        "no dependent source"
    );
    assert!(
        fields.iter().any(|f| f.visible_when.is_some()),
        "no visible_when"
    );
    assert!(
        fields.iter().any(|f| f.required_when.is_some()),
        "no required_when"
    );
    assert!(
        fields.iter().any(|f| f.enabled_when.is_some()),
        "no enabled_when"
    );

    assert!(
        items.iter().any(|i| {
            let lifecycle = i.lifecycle.as_ref();
            lifecycle.and_then(|l| l.status) == Some(LifecycleStatus::Deprecated)
                && lifecycle
                    .and_then(|l| l.deprecation.as_ref())
                    .and_then(|d| d.replacement.as_ref())
                    .is_some()
        }),
        "no deprecated item with a replacement"
    );

    let ids: BTreeSet<&str> = items.iter().map(|i| i.metadata.id.as_str()).collect();
    assert_eq!(ids.len(), items.len(), "duplicate item ids in the examples");
}

/// `examples/catalog-broken` holds one deliberate mistake per file, named in a first-line
/// comment; the loader's golden diagnostics are built from it.
#[test]
fn every_broken_example_names_its_mistake() {
    let dir = repo_root().join("examples/catalog-broken");
    let files = yaml_files(&dir);
    assert!(files.len() >= 12, "{} broken examples", files.len());
    for path in files {
        let text = fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with("# MISTAKE (PAO-"),
            "{} must start with `# MISTAKE (PAO-…): …`",
            path.display()
        );
    }
}

#[test]
fn all_actions_walks_parallel_groups_and_post_fulfillment_in_order() {
    let item: CatalogItem = serde_json::from_value(maximal_item()).expect("maximal item");
    let ids: Vec<&str> = item.all_actions().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "call",
            "member_a",
            "member_b",
            "jira_create",
            "jira_update",
            "rest_basic",
            "rest_bearer",
            "rest_none",
            "terraform_vcs",
            "github",
            "webhook",
            "cost",
            "script",
            "plugin"
        ]
    );
    let field_ids: Vec<&str> = item.all_fields().map(|f| f.id.as_str()).collect();
    assert_eq!(field_ids, ["everything", "from_catalog", "password"]);
    let secrets: Vec<&str> = item
        .all_fields()
        .filter(|f| f.is_secret())
        .map(|f| f.id.as_str())
        .collect();
    assert_eq!(secrets, ["password"]);
}

#[test]
fn action_type_parses_built_ins_and_plugins_only() {
    for name in ActionType::BUILT_IN {
        let parsed = ActionType::parse(name).expect(name);
        assert_eq!(parsed.to_string(), name);
        assert_eq!(parsed.plugin_name(), None);
    }
    let plugin = ActionType::parse("plugin:slack-notify").expect("plugin");
    assert_eq!(plugin.plugin_name(), Some("slack-notify"));
    assert_eq!(
        serde_json::to_value(&plugin).expect("ser"),
        json!("plugin:slack-notify")
    );
    for bad in [
        "",
        "Jira",
        "ansible",
        "plugin:",
        "plugin:Slack",
        "plugin:-x",
        "plugin:a b",
    ] {
        assert_eq!(ActionType::parse(bad), None, "{bad:?}");
        let err = serde_json::from_value::<ActionType>(json!(bad)).expect_err(bad);
        assert!(err.to_string().contains("unknown action type"), "{err}");
    }
}

#[test]
fn unknown_keys_keep_precise_serde_messages_inside_untagged_shapes() {
    let mut doc = maximal_item();
    pointer_mut(&mut doc, "/fulfillment/actions/1/parallel/actions/0")
        .as_object_mut()
        .expect("object")
        .insert("descripton".into(), json!("typo"));
    let err = serde_json::from_value::<CatalogItem>(doc).expect_err("typo refused");
    assert!(
        err.to_string().contains("unknown field `descripton`"),
        "{err}"
    );

    let mut doc = maximal_item();
    pointer_mut(&mut doc, "/presentation/groups/0/fields/0/options/1")
        .as_object_mut()
        .expect("object")
        .insert("lable".into(), json!("typo"));
    let err = serde_json::from_value::<CatalogItem>(doc).expect_err("typo refused");
    assert!(err.to_string().contains("unknown field `lable`"), "{err}");
}

// ------------------------------------------------------------------------------------------
// drift: schema <-> serde
// ------------------------------------------------------------------------------------------

/// A catalog item that uses every property of every model type (and every config property of
/// every built-in action type). Written once; both the schema and serde must accept it.
const MAXIMAL_ITEM: &str = r##"
apiVersion: pao.dev/v2
kind: CatalogItem
metadata:
  id: test.everything
  name: Everything
  description: Uses every property once.
  version: 1.0.0-rc.1+build.7
  category: compute
  tags: [a, b]
  owner: { team: platform, contacts: [a@example.com], slack: "#platform" }
  sla: { fulfillment: 4h, support: 24x7, availability: 99.9% }
  cost: { currency: USD, monthly: "${{ computed.total }}", one_time: 12.5 }
  compliance: { data_classification: confidential, frameworks: [SOC2], pii: false, data_residency: [eu] }
  access: { teams: ["*"], environments: [dev, prod], roles: [developer] }
  environment: prod
presentation:
  layout: wizard
  groups:
    - id: main
      title: Main
      description: All of it.
      visible_when: "true"
      required_when: "false"
      enabled_when: "true"
      fields:
        - id: everything
          type: select
          label: Everything
          description: A field with every property.
          help: Help text.
          placeholder: pick one
          required: true
          default: a
          options: [a, { value: b, label: B }]
          min: 1
          max: "${{ 10 }}"
          min_length: 1
          max_length: 5
          step: 1
          validation: { pattern: "^[ab]$", message: a or b }
          visible_when: "true"
          required_when: "true"
          enabled_when: "true"
          source:
            http:
              url: "https://inventory.example.com/x"
              items: $.items
              value: id
              label: name
              headers: { Authorization: "Bearer ${{ secrets.token }}" }
            depends_on: [password]
        - id: from_catalog
          type: multiselect
          source:
            catalog: { kind: items, category: database }
        - id: password
          type: secret
computed:
  total: "${{ 1 + 2 }}"
secrets: [token, key, s, p, t, h]
fulfillment:
  mode: automated
  manual:
    jira:
      project: OPS
      issue_type: Task
      summary: Do it
      description: By hand.
      labels: [pao]
      priority: High
      components: [Platform]
      instance: jira-cloud
  approval:
    required_when: fields.everything == 'b'
    approvers: { teams: [leads], roles: [admin], users: [boss@example.com], min_approvals: 2, allow_self_approval: false }
    timeout: 72h
    on_timeout: escalate
    escalation: { after: 24h, teams: [admins] }
  prerequisites:
    quota: { resource: vcpus, amount: 2 }
  defaults:
    timeout: 10m
    retry: { max_attempts: 3, backoff: exponential, initial: 2s, max: 60s, jitter: 0.2 }
  actions:
    - id: call
      type: rest
      description: Every ActionSpec property.
      depends_on: []
      when: fields.everything == 'a'
      timeout: 30s
      retry: { max_attempts: 2, backoff: fixed, initial: 1s, max: 1s, jitter: 0 }
      on_failure: rollback
      change: true
      config:
        method: POST
        url: "https://api.example.com/things"
        query: { dry_run: false, page: 1, q: x }
        headers: { X-Request: "${{ request.id }}" }
        body: { name: x, nested: { list: [1, 2] } }
        auth: { kind: api_key, name: X-API-Key, value: "${{ secrets.key }}", in: header }
        success_status: [201, "2xx"]
        extract: { id: $.id }
        idempotency_header: Idempotency-Key
        max_response_bytes: 65536
        poll: { url: "${{ result.headers.location }}", until: "result.body.done", interval: 5s, timeout: 5m }
      rollback:
        type: rest
        config: { method: DELETE, url: "https://api.example.com/things/${{ outputs.call.id }}", auth: { kind: oauth2_client_credentials, token_url: "https://login.example.com/token", client_id: pao, client_secret: "${{ secrets.s }}", scopes: [a], audience: api } }
      outputs:
        id: "${{ result.extract.id }}"
    - parallel:
        id: group
        max_concurrency: 2
        actions:
          - { id: member_a, type: script, config: { script: "1 + 1" } }
          - { id: member_b, type: webhook, config: { url: "https://hooks.example.com/b" } }
  post_fulfillment:
    - id: jira_create
      type: jira
      config:
        instance: jira-cloud
        project: OPS
        issue_type: Task
        summary: Created
        description: Body
        labels: [pao]
        components: [Platform]
        priority: High
        custom_fields: { customfield_10042: { value: x } }
        transition: Done
        comment: Done by PAO
        link: { issue_key: OPS-1, type: Relates }
      outputs: { key: "${{ result.key }}" }
    - { id: jira_update, type: jira, config: { issue_key: "${{ outputs.jira_create.key }}", comment: again } }
    - { id: rest_basic, type: rest, config: { url: "https://a.example.com", form: { a: b }, auth: { kind: basic, username: u, password: "${{ secrets.p }}" } } }
    - { id: rest_bearer, type: rest, config: { url: "https://a.example.com", auth: { kind: bearer, token: "${{ secrets.t }}" } } }
    - { id: rest_none, type: rest, config: { method: HEAD, url: "https://a.example.com", auth: { kind: none } } }
    - id: terraform_vcs
      type: terraform
      config:
        instance: tfc
        organization: org
        project: proj
        workspace: "ws-${{ computed.total }}"
        vcs: { repository: org/repo, branch: main, working_directory: stacks/x, oauth_token_id: ot-123 }
        variables:
          plain: x
          number: 3
          flag: true
          full: { value: [1, 2], sensitive: false, category: terraform, hcl: true, description: A list }
        auto_apply: "${{ true }}"
        destroy: false
        message: Run
        terraform_version: 1.9.8
      rollback:
        type: terraform
        config: { workspace: ws, template: tpl, destroy: true }
    - id: github
      type: github_workflow
      config: { instance: gh, owner: org, repo: repo, workflow: run.yml, ref: main, inputs: { a: x, b: 1, c: true }, wait: true }
    - id: webhook
      type: webhook
      config: { url: "https://hooks.example.com", headers: { X-A: b }, body: { a: 1 }, secret: "${{ secrets.h }}" }
    - id: cost
      type: cost
      config:
        items: [{ sku: vm.small, quantity: "${{ 2 }}", region: eu-west-1 }, { sku: disk.ssd, quantity: 10.5 }]
        currency: EUR
        discounts: [enterprise-agreement, { id: promo, percent: 5 }]
    - id: script
      type: script
      config: { script: "inputs.a + 1", inputs: { a: 1 }, max_operations: 100 }
    - id: plugin
      type: plugin:slack-notify
      config: { anything: [goes, here] }
lifecycle:
  status: deprecated
  deprecation: { since: "2026-01-01", replacement: test.other, message: Use the other one. }
  maintenance: [{ cron: "0 2 * * SUN", duration: 2h }]
monitoring:
  health_check: { url: "https://x.example.com/health", interval: 60s }
  dashboards: ["https://grafana.example.com/d/x"]
  alerts: [{ name: Down, condition: "up == 0", severity: critical, runbook: "https://runbooks.example.com/x", notify: ["#platform"] }]
"##;

/// `catalog.yaml` using every property of every settings type.
const MAXIMAL_CATALOG: &str = r##"
apiVersion: pao.dev/v2
kind: Catalog
categories: [{ id: compute, name: Compute, description: Machines. }]
environments: [{ id: prod, name: Production, production: true }]
teams: [{ id: platform, name: Platform, members: [a@example.com], quotas: { vcpus: 10 } }]
restricted_periods:
  - id: freeze
    name: Freeze
    start: "09-01"
    end: "01-31"
    applies_to: { categories: [compute], environments: [prod] }
    policy: require_approval
    message: Frozen.
defaults:
  approval:
    required_when: "true"
    approvers: { teams: [platform], roles: [admin], users: [a@example.com], min_approvals: 1, allow_self_approval: false }
    timeout: 72h
    on_timeout: escalate
    escalation: { after: 24h, teams: [platform] }
  execution:
    timeout: 10m
    retry: { max_attempts: 3, backoff: linear, initial: 1s, max: 10s, jitter: 0.1 }
prices:
  currency: USD
  tax_rate: 0.2
  discounts: [{ id: ea, description: Agreement, percent: 10, skus: ["vm.*"], teams: [platform] }]
  skus:
    vm.small: { unit_price: 35.04, unit: instance-month, region_multipliers: { eu-west-1: 1.08 } }
env_allowlist: [PAO_X_URL]
"##;

fn maximal_item() -> Value {
    serde_yaml::from_str(MAXIMAL_ITEM).expect("maximal item is YAML")
}

fn maximal_catalog() -> Value {
    serde_yaml::from_str(MAXIMAL_CATALOG).expect("maximal catalog is YAML")
}

/// Where each model struct lives in the maximal item (several places when one instance cannot
/// hold every property at once, for example FieldSource's http and catalog).
const ITEM_STRUCTS: &[(&str, &[&str])] = &[
    ("CatalogItem", &[""]),
    ("ItemMetadata", &["/metadata"]),
    ("Owner", &["/metadata/owner"]),
    ("Sla", &["/metadata/sla"]),
    ("CostInfo", &["/metadata/cost"]),
    ("Compliance", &["/metadata/compliance"]),
    ("Access", &["/metadata/access"]),
    ("Presentation", &["/presentation"]),
    ("FieldGroup", &["/presentation/groups/0"]),
    ("Field", &["/presentation/groups/0/fields/0"]),
    (
        "LabeledOption",
        &["/presentation/groups/0/fields/0/options/1"],
    ),
    (
        "FieldValidation",
        &["/presentation/groups/0/fields/0/validation"],
    ),
    (
        "FieldSource",
        &[
            "/presentation/groups/0/fields/0/source",
            "/presentation/groups/0/fields/1/source",
        ],
    ),
    (
        "HttpSource",
        &["/presentation/groups/0/fields/0/source/http"],
    ),
    (
        "CatalogSource",
        &["/presentation/groups/0/fields/1/source/catalog"],
    ),
    ("Fulfillment", &["/fulfillment"]),
    ("ManualFulfillment", &["/fulfillment/manual"]),
    ("JiraTicket", &["/fulfillment/manual/jira"]),
    ("Approval", &["/fulfillment/approval"]),
    ("Approvers", &["/fulfillment/approval/approvers"]),
    ("Escalation", &["/fulfillment/approval/escalation"]),
    ("Prerequisites", &["/fulfillment/prerequisites"]),
    ("QuotaRequirement", &["/fulfillment/prerequisites/quota"]),
    ("ExecutionDefaults", &["/fulfillment/defaults"]),
    ("RetryPolicy", &["/fulfillment/defaults/retry"]),
    ("ActionSpec", &["/fulfillment/actions/0"]),
    ("RollbackSpec", &["/fulfillment/actions/0/rollback"]),
    ("ParallelBlock", &["/fulfillment/actions/1"]),
    ("ParallelGroup", &["/fulfillment/actions/1/parallel"]),
    ("Lifecycle", &["/lifecycle"]),
    ("Deprecation", &["/lifecycle/deprecation"]),
    ("MaintenanceWindow", &["/lifecycle/maintenance/0"]),
    ("Monitoring", &["/monitoring"]),
    ("HealthCheck", &["/monitoring/health_check"]),
    ("Alert", &["/monitoring/alerts/0"]),
];

/// Where a value of each model enum lives in the maximal item.
const ITEM_ENUMS: &[(&str, &str)] = &[
    (
        "DataClassification",
        "/metadata/compliance/data_classification",
    ),
    ("Layout", "/presentation/layout"),
    ("FieldType", "/presentation/groups/0/fields/0/type"),
    (
        "CatalogSourceKind",
        "/presentation/groups/0/fields/1/source/catalog/kind",
    ),
    ("FulfillmentMode", "/fulfillment/mode"),
    ("OnTimeout", "/fulfillment/approval/on_timeout"),
    ("Backoff", "/fulfillment/defaults/retry/backoff"),
    ("OnFailure", "/fulfillment/actions/0/on_failure"),
    ("LifecycleStatus", "/lifecycle/status"),
    ("AlertSeverity", "/monitoring/alerts/0/severity"),
];

/// Schema-only definitions of built-in action configs (config is a JSON value in the model).
const ITEM_CONFIGS: &[(&str, &[&str])] = &[
    (
        "JiraConfig",
        &[
            "/fulfillment/post_fulfillment/0/config",
            "/fulfillment/post_fulfillment/1/config",
        ],
    ),
    ("JiraLink", &["/fulfillment/post_fulfillment/0/config/link"]),
    (
        "RestConfig",
        &[
            "/fulfillment/actions/0/config",
            "/fulfillment/post_fulfillment/2/config",
        ],
    ),
    ("RestPoll", &["/fulfillment/actions/0/config/poll"]),
    (
        "RestAuthNone",
        &["/fulfillment/post_fulfillment/4/config/auth"],
    ),
    (
        "RestAuthBasic",
        &["/fulfillment/post_fulfillment/2/config/auth"],
    ),
    (
        "RestAuthBearer",
        &["/fulfillment/post_fulfillment/3/config/auth"],
    ),
    ("RestAuthApiKey", &["/fulfillment/actions/0/config/auth"]),
    (
        "RestAuthOAuth2",
        &["/fulfillment/actions/0/rollback/config/auth"],
    ),
    (
        "TerraformConfig",
        &[
            "/fulfillment/post_fulfillment/5/config",
            "/fulfillment/post_fulfillment/5/rollback/config",
        ],
    ),
    (
        "TerraformVcs",
        &["/fulfillment/post_fulfillment/5/config/vcs"],
    ),
    (
        "TerraformVariable",
        &["/fulfillment/post_fulfillment/5/config/variables/full"],
    ),
    (
        "GithubWorkflowConfig",
        &["/fulfillment/post_fulfillment/6/config"],
    ),
    ("WebhookConfig", &["/fulfillment/post_fulfillment/7/config"]),
    ("CostConfig", &["/fulfillment/post_fulfillment/8/config"]),
    (
        "CostLine",
        &["/fulfillment/post_fulfillment/8/config/items/0"],
    ),
    (
        "CostDiscount",
        &["/fulfillment/post_fulfillment/8/config/discounts/1"],
    ),
    ("ScriptConfig", &["/fulfillment/post_fulfillment/9/config"]),
];

const CATALOG_STRUCTS: &[(&str, &[&str])] = &[
    ("CatalogSettings", &[""]),
    ("CategoryDef", &["/categories/0"]),
    ("EnvironmentDef", &["/environments/0"]),
    ("TeamDef", &["/teams/0"]),
    ("RestrictedPeriod", &["/restricted_periods/0"]),
    ("RestrictionScope", &["/restricted_periods/0/applies_to"]),
    ("CatalogDefaults", &["/defaults"]),
    ("Approval", &["/defaults/approval"]),
    ("Approvers", &["/defaults/approval/approvers"]),
    ("Escalation", &["/defaults/approval/escalation"]),
    ("ExecutionDefaults", &["/defaults/execution"]),
    ("RetryPolicy", &["/defaults/execution/retry"]),
    ("PriceTable", &["/prices"]),
    ("PriceEntry", &["/prices/skus/vm.small"]),
    ("Discount", &["/prices/discounts/0"]),
];

const CATALOG_ENUMS: &[(&str, &str)] = &[
    ("RestrictionPolicy", "/restricted_periods/0/policy"),
    ("OnTimeout", "/defaults/approval/on_timeout"),
    ("Backoff", "/defaults/execution/retry/backoff"),
];

#[test]
fn maximal_documents_are_accepted_by_schema_and_serde_and_round_trip() {
    for (doc, schema, name) in [
        (maximal_item(), item_schema(), "item"),
        (maximal_catalog(), catalog_schema(), "catalog"),
    ] {
        let errors = schema_errors(&validator(&schema), &doc);
        assert!(errors.is_empty(), "maximal {name}: {}", errors.join("\n"));
        let back = if name == "item" {
            serde_json::to_value(serde_json::from_value::<CatalogItem>(doc.clone()).expect(name))
        } else {
            serde_json::to_value(
                serde_json::from_value::<CatalogSettings>(doc.clone()).expect(name),
            )
        }
        .expect("serialize");
        assert_eq!(
            first_difference(&doc, &back, ""),
            None,
            "maximal {name} round trip"
        );
    }
}

/// Definitions whose only property is a discriminator; the variants they select are checked.
const DISPATCHERS: &[&str] = &["RestAuth"];

/// Every object definition of a schema is either a model struct (checked against serde) or a
/// schema-only action config; nothing is left unchecked.
fn assert_every_object_def_is_listed(schema: &Value, listed: &[&[(&str, &[&str])]]) {
    let listed: BTreeSet<&str> = listed
        .iter()
        .flat_map(|t| t.iter().map(|(n, _)| *n))
        .collect();
    for (name, def) in schema["$defs"].as_object().expect("$defs") {
        if def.get("properties").is_some() && !DISPATCHERS.contains(&name.as_str()) {
            assert!(
                listed.contains(name.as_str()),
                "$defs/{name} has properties but is in no drift table: add it to the tests"
            );
        }
    }
}

/// Property names of a definition = keys used at its places in the maximal document.
fn assert_maximal(schema: &Value, doc: &Value, table: &[(&str, &[&str])]) {
    for (def, pointers) in table {
        let used: BTreeSet<String> = pointers
            .iter()
            .flat_map(|p| object_at(doc, p).keys().cloned())
            .collect();
        assert_eq!(
            schema_props(schema, def),
            used,
            "$defs/{def} vs the maximal document"
        );
    }
}

/// Property names of a definition = serde's field names, read from serde's own
/// "unknown field `…`, expected one of …" message.
fn assert_struct_fields<T: DeserializeOwned>(
    schema: &Value,
    doc: &Value,
    table: &[(&str, &[&str])],
) {
    for (def, pointers) in table {
        let mut probe = doc.clone();
        pointer_mut(&mut probe, pointers[0])
            .as_object_mut()
            .expect("object")
            .insert("__probe__".into(), json!(1));
        let message = serde_ok::<T>(&probe).expect_err("probe key refused");
        assert!(
            message.contains("unknown field `__probe__`"),
            "{def}: {message}"
        );
        assert_eq!(
            expected_names(&message),
            schema_props(schema, def),
            "serde fields of {def} vs $defs/{def}/properties"
        );
    }
}

/// Enum values of a definition = serde's variant names.
fn assert_enum_variants<T: DeserializeOwned>(schema: &Value, doc: &Value, table: &[(&str, &str)]) {
    for (def, pointer) in table {
        let mut probe = doc.clone();
        *pointer_mut(&mut probe, pointer) = json!("__probe__");
        let message = serde_ok::<T>(&probe).expect_err("probe variant refused");
        assert!(
            message.contains("unknown variant `__probe__`"),
            "{def}: {message}"
        );
        assert_eq!(
            expected_names(&message),
            schema_enum(schema, def),
            "serde variants of {def} vs $defs/{def}/enum"
        );
    }
}

#[test]
fn drift_item_schema_and_model_have_the_same_properties() {
    let schema = item_schema();
    let doc = maximal_item();
    assert_every_object_def_is_listed(&schema, &[ITEM_STRUCTS, ITEM_CONFIGS]);
    assert_maximal(&schema, &doc, ITEM_STRUCTS);
    assert_maximal(&schema, &doc, ITEM_CONFIGS);
    assert_struct_fields::<CatalogItem>(&schema, &doc, ITEM_STRUCTS);
    assert_enum_variants::<CatalogItem>(&schema, &doc, ITEM_ENUMS);

    let built_in: BTreeSet<String> = schema["$defs"]["ActionType"]["anyOf"][0]["enum"]
        .as_array()
        .expect("ActionType enum")
        .iter()
        .map(|v| v.as_str().expect("str").to_owned())
        .collect();
    let model: BTreeSet<String> = ActionType::BUILT_IN.iter().map(|s| s.to_string()).collect();
    assert_eq!(built_in, model, "built-in action types");
    let config_by_type: BTreeSet<String> = schema["$defs"]["ActionConfigByType"]["allOf"]
        .as_array()
        .expect("allOf")
        .iter()
        .map(|rule| {
            rule["if"]["properties"]["type"]["const"]
                .as_str()
                .expect("const")
                .to_owned()
        })
        .collect();
    assert_eq!(
        config_by_type, model,
        "every built-in type has a config schema"
    );

    let field_types: BTreeSet<String> = FieldType::ALL
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    assert_eq!(field_types, schema_enum(&schema, "FieldType"));
}

#[test]
fn drift_catalog_schema_and_model_have_the_same_properties() {
    let schema = catalog_schema();
    let doc = maximal_catalog();
    assert_every_object_def_is_listed(&schema, &[CATALOG_STRUCTS]);
    assert_maximal(&schema, &doc, CATALOG_STRUCTS);
    assert_struct_fields::<CatalogSettings>(&schema, &doc, CATALOG_STRUCTS);
    assert_enum_variants::<CatalogSettings>(&schema, &doc, CATALOG_ENUMS);
}

#[test]
fn shared_definitions_are_identical_in_both_schemas() {
    let item = item_schema();
    let catalog = catalog_schema();
    let mut shared = 0;
    for (name, def) in catalog["$defs"].as_object().expect("$defs") {
        if let Some(other) = item["$defs"].get(name) {
            assert_eq!(def, other, "$defs/{name} differs between the two schemas");
            shared += 1;
        }
    }
    assert!(shared >= 6, "{shared} shared definitions");
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mutation {
    Rename,
    Remove,
    WrongType,
}

/// Every key of every object, and every scalar, of `doc`, as JSON pointers.
fn locations(doc: &Value, path: String, keys: &mut Vec<String>, scalars: &mut Vec<String>) {
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                keys.push(p.clone());
                locations(v, p, keys, scalars);
            }
        }
        Value::Array(list) => {
            for (i, v) in list.iter().enumerate() {
                locations(v, format!("{path}/{i}"), keys, scalars);
            }
        }
        _ => scalars.push(path),
    }
}

fn split_pointer(pointer: &str) -> (&str, String) {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer");
    (parent, last.replace("~1", "/").replace("~0", "~"))
}

fn mutate(doc: &Value, pointer: &str, mutation: Mutation) -> Value {
    let mut out = doc.clone();
    match mutation {
        Mutation::Rename | Mutation::Remove => {
            let (parent, key) = split_pointer(pointer);
            let map = pointer_mut(&mut out, parent)
                .as_object_mut()
                .expect("object");
            let value = map.remove(&key).expect("key");
            if mutation == Mutation::Rename {
                map.insert(format!("{key}_typo"), value);
            }
        }
        Mutation::WrongType => {
            let target = pointer_mut(&mut out, pointer);
            *target = match target {
                Value::String(_) => json!(12345),
                _ => json!("not-a-number-or-bool"),
            };
        }
    }
    out
}

/// Cases where the schema refuses and serde accepts by design: rules across properties, or
/// patterns, that the model leaves to the loader's semantic checks. (pointer prefix, mutation,
/// reason). Everything under an action `config` is a JSON value for serde and is left out.
const SCHEMA_ONLY_RULES: &[(&str, Mutation, &str)] = &[
    (
        "/fulfillment/actions",
        Mutation::Remove,
        "automated mode requires actions",
    ),
    (
        "/fulfillment/actions",
        Mutation::Rename,
        "automated mode requires actions",
    ),
    (
        "/fulfillment/approval/escalation",
        Mutation::Remove,
        "on_timeout: escalate requires escalation",
    ),
    (
        "/fulfillment/approval/escalation",
        Mutation::Rename,
        "on_timeout: escalate requires escalation",
    ),
    (
        "/defaults/approval/escalation",
        Mutation::Remove,
        "on_timeout: escalate requires escalation",
    ),
    (
        "/defaults/approval/escalation",
        Mutation::Rename,
        "on_timeout: escalate requires escalation",
    ),
    (
        "/presentation/groups/0/fields/0/source/http",
        Mutation::Remove,
        "a source needs http or catalog",
    ),
    (
        "/presentation/groups/0/fields/1/source/catalog",
        Mutation::Remove,
        "a source needs http or catalog",
    ),
    (
        "/presentation/groups/0/fields/1/source",
        Mutation::Remove,
        "a multiselect needs options or a source",
    ),
    (
        "/presentation/groups/0/fields/0/default",
        Mutation::WrongType,
        "a select default must be a string",
    ),
    (
        "/fulfillment/prerequisites/quota/amount",
        Mutation::WrongType,
        "a templated integer is an integer or one ${{ }}",
    ),
    (
        "/metadata/cost/monthly",
        Mutation::WrongType,
        "a templated number is a number or one ${{ }}",
    ),
    (
        "/metadata/cost/one_time",
        Mutation::WrongType,
        "a templated number is a number or one ${{ }}",
    ),
];

fn under_config(pointer: &str) -> bool {
    pointer.split('/').any(|segment| segment == "config") && !pointer.ends_with("/config")
}

fn check_mutations<T: DeserializeOwned>(
    schema: &Value,
    doc: &Value,
    schema_only: &[(&str, Mutation, &str)],
) -> usize {
    let validator = validator(schema);
    let (mut keys, mut scalars) = (Vec::new(), Vec::new());
    locations(doc, String::new(), &mut keys, &mut scalars);
    let cases = keys
        .iter()
        .flat_map(|k| [(k, Mutation::Rename), (k, Mutation::Remove)])
        .chain(scalars.iter().map(|s| (s, Mutation::WrongType)));
    let mut problems = Vec::new();
    let mut refused_by_both = 0;
    for (pointer, mutation) in cases {
        let mutated = mutate(doc, pointer, mutation);
        let by_schema = validator.is_valid(&mutated);
        let by_serde = serde_ok::<T>(&mutated);
        if by_schema && by_serde.is_err() {
            problems.push(format!(
                "{mutation:?} {pointer}: the schema accepts it but serde refuses: {}",
                by_serde
                    .as_ref()
                    .err()
                    .map(String::as_str)
                    .unwrap_or_default()
            ));
        }
        let schema_only_rule = under_config(pointer)
            || schema_only
                .iter()
                .any(|(prefix, m, _)| *m == mutation && pointer == *prefix);
        if !by_schema && by_serde.is_ok() && !schema_only_rule {
            problems.push(format!(
                "{mutation:?} {pointer}: serde accepts it but the schema refuses: {:?}",
                schema_errors(&validator, &mutated)
            ));
        }
        if !by_schema && by_serde.is_err() {
            refused_by_both += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "{} disagreements:\n{}",
        problems.len(),
        problems.join("\n")
    );
    refused_by_both
}

#[test]
fn drift_item_mutations_are_judged_alike_by_schema_and_serde() {
    let refused =
        check_mutations::<CatalogItem>(&item_schema(), &maximal_item(), SCHEMA_ONLY_RULES);
    assert!(refused > 200, "only {refused} mutations refused by both");
}

#[test]
fn drift_catalog_mutations_are_judged_alike_by_schema_and_serde() {
    let refused = check_mutations::<CatalogSettings>(
        &catalog_schema(),
        &maximal_catalog(),
        SCHEMA_ONLY_RULES,
    );
    assert!(refused > 60, "only {refused} mutations refused by both");
}

#[test]
fn renamed_keys_of_model_structs_are_refused_by_both() {
    for (schema, doc, table, is_item) in [
        (item_schema(), maximal_item(), ITEM_STRUCTS, true),
        (catalog_schema(), maximal_catalog(), CATALOG_STRUCTS, false),
    ] {
        let validator = validator(&schema);
        for (def, pointers) in table {
            for pointer in *pointers {
                for key in object_at(&doc, pointer).keys() {
                    let p = format!("{pointer}/{key}");
                    let mutated = mutate(&doc, &p, Mutation::Rename);
                    let serde = if is_item {
                        serde_ok::<CatalogItem>(&mutated)
                    } else {
                        serde_ok::<CatalogSettings>(&mutated)
                    };
                    assert!(
                        !validator.is_valid(&mutated),
                        "schema accepts renamed {def}.{key}"
                    );
                    let message = serde.expect_err("serde accepts a renamed key");
                    assert!(
                        message.contains(&format!("unknown field `{key}_typo`")),
                        "{def}.{key}: {message}"
                    );
                }
            }
        }
    }
}

#[test]
fn renamed_keys_of_action_configs_are_refused_by_the_schema() {
    let schema = item_schema();
    let validator = validator(&schema);
    let doc = maximal_item();
    for (def, pointers) in ITEM_CONFIGS {
        for pointer in *pointers {
            for key in object_at(&doc, pointer).keys() {
                let mutated = mutate(&doc, &format!("{pointer}/{key}"), Mutation::Rename);
                assert!(
                    !validator.is_valid(&mutated),
                    "schema accepts renamed {def}.{key}"
                );
            }
        }
    }
}

#[test]
fn wrong_types_from_the_brief_are_refused_by_both() {
    let validator = validator(&item_schema());
    for (pointer, value) in [
        (
            "/fulfillment/approval/approvers/min_approvals",
            json!("two"),
        ),
        (
            "/fulfillment/actions/1/parallel/max_concurrency",
            json!("${{ 2 }}"),
        ),
        ("/presentation/groups/0/fields/0/options/0", json!(3)),
        ("/fulfillment/defaults/retry/jitter", json!("0.2")),
        ("/presentation/groups/0/fields/0/required", json!("yes")),
    ] {
        let mut doc = maximal_item();
        *pointer_mut(&mut doc, pointer) = value.clone();
        assert!(
            !validator.is_valid(&doc),
            "schema accepts {pointer} = {value}"
        );
        assert!(
            serde_ok::<CatalogItem>(&doc).is_err(),
            "serde accepts {pointer} = {value}"
        );
    }
    for (pointer, value) in [
        (
            "/fulfillment/prerequisites/quota/amount",
            json!("${{ fields.everything == 'a' ? 1 : 2 }}"),
        ),
        ("/metadata/cost/monthly", json!(99.5)),
        ("/presentation/groups/0/fields/0/min", json!("2026-01-01")),
    ] {
        let mut doc = maximal_item();
        *pointer_mut(&mut doc, pointer) = value.clone();
        let errors = schema_errors(&validator, &doc);
        assert!(
            errors.is_empty(),
            "schema refuses {pointer} = {value}: {errors:?}"
        );
        serde_ok::<CatalogItem>(&doc)
            .unwrap_or_else(|e| panic!("serde refuses {pointer} = {value}: {e}"));
    }
}

#[test]
fn schema_expresses_the_cross_field_rules_of_the_contract() {
    let validator = validator(&item_schema());
    let refused = |edit: &dyn Fn(&mut Value)| {
        let mut doc = maximal_item();
        edit(&mut doc);
        !validator.is_valid(&doc)
    };
    // manual mode needs manual.jira and takes no actions
    assert!(refused(&|d| {
        d["fulfillment"]["mode"] = json!("manual");
        d["fulfillment"]
            .as_object_mut()
            .expect("o")
            .remove("actions");
        d["fulfillment"]
            .as_object_mut()
            .expect("o")
            .remove("manual");
    }));
    assert!(refused(&|d| d["fulfillment"]["mode"] = json!("manual")));
    assert!(!refused(&|d| {
        d["fulfillment"]["mode"] = json!("manual");
        d["fulfillment"]
            .as_object_mut()
            .expect("o")
            .remove("actions");
    }));
    // a secret field takes no default
    assert!(refused(
        &|d| d["presentation"]["groups"][0]["fields"][2]["default"] = json!("hunter2")
    ));
    // options only on choice fields
    assert!(refused(
        &|d| d["presentation"]["groups"][0]["fields"][2]["options"] = json!(["a"])
    ));
    // an unknown action type, a malformed plugin name
    assert!(refused(
        &|d| d["fulfillment"]["actions"][0]["type"] = json!("ansible")
    ));
    assert!(refused(
        &|d| d["fulfillment"]["actions"][0]["type"] = json!("plugin:Bad Name")
    ));
    // durations
    assert!(refused(
        &|d| d["fulfillment"]["approval"]["timeout"] = json!("3 days")
    ));
    // a REST call takes body or form, not both
    assert!(refused(
        &|d| d["fulfillment"]["actions"][0]["config"]["form"] = json!({"a": "b"})
    ));
    // a plugin config is free-form
    assert!(!refused(
        &|d| d["fulfillment"]["post_fulfillment"][10]["config"] = json!({"x": {"y": 1}})
    ));
    // a rollback config follows its own type
    assert!(refused(
        &|d| d["fulfillment"]["actions"][0]["rollback"]["config"] = json!({"workspace": "x"})
    ));
}

#[test]
fn serialization_adds_no_nulls_and_no_defaults() {
    let minimal = json!({
        "apiVersion": "pao.dev/v2",
        "kind": "CatalogItem",
        "metadata": {
            "id": "x", "name": "X", "description": "d", "version": "1.0.0",
            "category": "compute", "owner": { "team": "t" }
        },
        "presentation": { "groups": [ { "id": "g", "title": "G", "fields": [ { "id": "f", "type": "text" } ] } ] },
        "fulfillment": { "mode": "automated", "actions": [ { "id": "a", "type": "script", "config": { "script": "1" } } ] }
    });
    let errors = schema_errors(&validator(&item_schema()), &minimal);
    assert!(errors.is_empty(), "{errors:?}");
    let item: CatalogItem = serde_json::from_value(minimal.clone()).expect("minimal item");
    assert_eq!(serde_json::to_value(&item).expect("serialize"), minimal);
}

#[test]
fn numbers_compare_by_value_in_round_trips() {
    assert!(json_eq(&json!({"a": [0, 1.5]}), &json!({"a": [0.0, 1.5]})));
    assert!(!json_eq(&json!({"a": 1}), &json!({"a": 2})));
    assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": null})));
}
