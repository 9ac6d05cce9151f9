//! Black-box tests of catalog loading: the example catalog is clean, every diagnostic code is
//! produced where it should be, the broken examples match their golden file, malformed YAML
//! never panics, and reloads keep the last good version of an item.

use std::path::{Path, PathBuf};

use pao_core::catalog::{Catalog, Diagnostic, LoadOptions, load_item, render_all};
use proptest::prelude::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn options() -> LoadOptions {
    LoadOptions::default()
        .with_plugin("servicenow-incident", None)
        .with_plugin("slack-notify", None)
}

const HEAD: &str = "apiVersion: pao.dev/v2\nkind: CatalogItem\nmetadata:\n  id: t.item\n  name: Test\n  description: A test item.\n  version: 1.0.0\n  category: compute\n  owner: { team: platform }\n";

/// Diagnostics of one item, without PAO-W003 (unused fields), which has its own test: the
/// snippets here declare fields they do not read.
fn diags_of(yaml: &str) -> Vec<Diagnostic> {
    let (_, diags) = load_item("t.yaml", yaml, &options());
    diags.into_iter().filter(|d| d.code != "PAO-W003").collect()
}

fn codes_of(yaml: &str) -> Vec<(String, usize)> {
    diags_of(yaml)
        .iter()
        .map(|d| (d.code.to_string(), d.line))
        .collect()
}

fn first(yaml: &str) -> Diagnostic {
    diags_of(yaml)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("expected a diagnostic for:\n{yaml}"))
}

fn automated(actions: &str) -> String {
    format!(
        "{HEAD}presentation:\n  groups:\n    - id: g\n      title: G\n      fields:\n        - {{ id: name, type: text }}\n        - {{ id: env, type: select, options: [dev, prod] }}\nfulfillment:\n  mode: automated\n  actions:\n{actions}"
    )
}

#[test]
fn example_catalog_is_clean() {
    let catalog = Catalog::load(&root().join("examples/catalog"), &options()).unwrap();
    let diags = catalog.diagnostics();
    assert!(diags.iter().all(|d| !d.is_error()), "{}", render_all(diags));
    assert!(
        catalog.len() >= 12,
        "at least 12 items, got {}",
        catalog.len()
    );
    let categories: std::collections::BTreeSet<&str> = catalog
        .items()
        .map(|i| i.item.metadata.category.as_str())
        .collect();
    for c in [
        "compute",
        "database",
        "messaging",
        "networking",
        "storage",
        "security",
        "monitoring",
        "identity",
    ] {
        assert!(categories.contains(c), "no item in category {c}");
    }
    for item in catalog.items() {
        assert_eq!(item.content_hash.len(), 64);
        assert!(!item.version().is_empty());
    }
}

#[test]
fn broken_catalog_matches_golden_diagnostics() {
    let dir = root().join("examples/catalog-broken");
    let catalog = Catalog::load(&dir, &options()).unwrap();
    let rendered = render_all(catalog.diagnostics());
    let golden = dir.join("expected-diagnostics.txt");
    if std::env::var_os("PAO_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &rendered).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).expect("golden file; create it with PAO_UPDATE_GOLDEN=1");
    assert_eq!(
        rendered, expected,
        "diagnostics changed; review and rerun with PAO_UPDATE_GOLDEN=1"
    );
    // Every broken file yields at least one diagnostic.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "duplicate-id-a.yaml" {
            assert!(
                catalog.diagnostics().iter().any(|d| d.file == name),
                "no diagnostic for {name}"
            );
        }
    }
}

#[test]
fn e001_yaml_syntax_and_tabs() {
    let d = first(&format!("{HEAD}presentation:\n\tgroups: []\n"));
    assert_eq!((d.code, d.line), ("PAO-E001", 11));
    assert!(d.message.contains("tabs"), "{}", d.message);
    assert_eq!(first("a: [1, 2\nb: 3\n").code, "PAO-E001");
    assert!(first("\u{0}\u{1}").is_error());
}

#[test]
fn e002_duplicate_key() {
    let d = first(&format!("{HEAD}kind: CatalogItem\n"));
    assert_eq!((d.code, d.line), ("PAO-E002", 10));
    assert!(d.message.contains("first defined at line 2"));
}

#[test]
fn e003_schema_violation() {
    let yaml = automated(
        "    - { id: a, type: script, config: { script: \"1\" }, retry: { max_attempts: \"two\" } }\n",
    );
    let d = first(&yaml);
    assert_eq!((d.code, d.line), ("PAO-E003", 20));
    assert_eq!(d.pointer, "/fulfillment/actions/0/retry/max_attempts");
    let d = first("apiVersion: pao.dev/v2\nkind: CatalogItem\n");
    assert_eq!(d.code, "PAO-E003");
    assert_eq!(first("just a string").code, "PAO-E003");
}

#[test]
fn e004_unknown_key_with_did_you_mean() {
    let d = first(&format!(
        "{HEAD}  descripton: typo\nfulfillment: {{ mode: manual, manual: {{ jira: {{ project: P, issue_type: Task, summary: s }} }} }}\n"
    ));
    assert_eq!((d.code, d.line, d.column), ("PAO-E004", 10, 3));
    assert_eq!(d.hint.as_deref(), Some("did you mean `description`?"));
}

#[test]
fn e005_duplicate_item_ids_across_files() {
    let dir = tempdir("dup");
    let item = format!(
        "{HEAD}fulfillment: {{ mode: manual, manual: {{ jira: {{ project: P, issue_type: Task, summary: s }} }} }}\n"
    );
    std::fs::write(dir.join("a.yaml"), &item).unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/b.yaml"), &item).unwrap();
    let c = Catalog::load(&dir, &options()).unwrap();
    assert_eq!(c.len(), 1);
    let d = &c.diagnostics()[0];
    assert_eq!(
        (d.code, d.file.as_str(), d.line),
        ("PAO-E005", "sub/b.yaml", 4)
    );
    assert!(d.message.contains("a.yaml"));
}

#[test]
fn e006_unknown_action_type() {
    let d = first(&automated("    - { id: a, type: terrafrom, config: {} }\n"));
    assert_eq!(d.code, "PAO-E006");
    assert_eq!(d.hint.as_deref(), Some("did you mean `terraform`?"));
    let d = first(&automated(
        "    - { id: a, type: \"plugin:unknown\", config: {} }\n",
    ));
    assert_eq!(d.code, "PAO-E006");
    // A registered plugin is accepted.
    assert!(
        codes_of(&automated(
            "    - { id: a, type: \"plugin:slack-notify\", config: {} }\n"
        ))
        .is_empty()
    );
}

#[test]
fn e007_unknown_dependency() {
    let d = first(&automated(
        "    - { id: a, type: script, config: { script: \"1\" } }\n    - { id: b, type: script, config: { script: \"1\" }, depends_on: [aa] }\n",
    ));
    assert_eq!((d.code, d.line), ("PAO-E007", 21));
    assert_eq!(d.hint.as_deref(), Some("did you mean `a`?"));
}

#[test]
fn e008_cycle_names_the_cycle() {
    let d = first(&automated(
        "    - { id: a, type: script, config: { script: \"1\" }, depends_on: [b] }\n    - { id: b, type: script, config: { script: \"1\" } }\n",
    ));
    assert_eq!(d.code, "PAO-E008");
    assert!(
        d.message.contains("a → b → a") || d.message.contains("b → a → b"),
        "{}",
        d.message
    );
}

#[test]
fn e009_outputs_before_guaranteed() {
    let yaml = automated(concat!(
        "    - parallel:\n        id: grp\n        actions:\n",
        "          - { id: a, type: script, config: { script: \"1\" } }\n",
        "          - { id: b, type: script, config: { script: \"${{ outputs.a.x }}\" } }\n",
    ));
    let d = first(&yaml);
    assert_eq!((d.code, d.line), ("PAO-E009", 24));
    // depends_on makes it guaranteed; a later step also sees it.
    let ok = automated(concat!(
        "    - parallel:\n        id: grp\n        actions:\n",
        "          - { id: a, type: script, config: { script: \"1\" } }\n",
        "          - { id: b, type: script, config: { script: \"${{ outputs.a.x }}\" }, depends_on: [a] }\n",
        "    - { id: c, type: script, config: { script: \"${{ outputs.b.y }}\" } }\n",
    ));
    assert!(codes_of(&ok).is_empty(), "{:?}", codes_of(&ok));
    // A conditional action's outputs need a guard.
    let cond = automated(concat!(
        "    - { id: a, type: script, config: { script: \"1\" }, when: \"fields.env == 'prod'\" }\n",
        "    - { id: b, type: script, config: { script: \"${{ outputs.a?.x }} ${{ outputs.a.x }}\" } }\n",
    ));
    assert_eq!(codes_of(&cond), vec![("PAO-E009".to_string(), 21)]);
}

#[test]
fn e010_expression_syntax_located_inside_the_string() {
    let d = first(&automated(
        "    - { id: a, type: script, config: { script: \"x ${{ fields.name + }}\" } }\n",
    ));
    assert_eq!(d.code, "PAO-E010");
    assert_eq!(d.line, 20);
    let col = d.source_line.as_ref().unwrap().find("}}").unwrap() + 1;
    assert_eq!(d.column, col, "caret at the token after `+`");
}

#[test]
fn e011_undeclared_and_unknown_scope() {
    let d = first(&automated(
        "    - { id: a, type: script, config: { script: \"${{ fields.nmae }}\" } }\n",
    ));
    assert_eq!(d.code, "PAO-E011");
    assert_eq!(d.hint.as_deref(), Some("did you mean `name`?"));
    let d = first(&automated(
        "    - { id: a, type: script, config: { script: \"${{ feilds.name }}\" } }\n",
    ));
    assert_eq!(d.code, "PAO-E011");
    assert_eq!(d.hint.as_deref(), Some("did you mean `fields`?"));
}

#[test]
fn e012_defaults_and_options() {
    let manual = "fulfillment: { mode: manual, manual: { jira: { project: P, issue_type: Task, summary: s } } }\n";
    for (field, line) in [
        ("{ id: n, type: integer, default: 3, max: 2 }", 15),
        ("{ id: n, type: integer, default: \"3\" }", 15),
        ("{ id: s, type: select, options: [a, b], default: c }", 15),
        ("{ id: t, type: text, options: [a] }", 15),
        ("{ id: d, type: date, default: \"31.01.2026\" }", 15),
        (
            "{ id: m, type: multiselect, options: [a, b], default: [a, z] }",
            15,
        ),
    ] {
        let yaml = format!(
            "{HEAD}presentation:\n  groups:\n    - id: g\n      title: G\n      fields:\n        - {field}\n{manual}"
        );
        assert_eq!(
            codes_of(&yaml),
            vec![("PAO-E012".to_string(), line)],
            "{field}"
        );
    }
}

#[test]
fn e013_required_when_reads_a_field_that_may_be_hidden() {
    let yaml = format!(
        "{HEAD}presentation:\n  groups:\n    - id: g\n      title: G\n      fields:\n        - {{ id: env, type: select, options: [dev, prod] }}\n        - {{ id: tier, type: text, visible_when: \"fields.env == 'prod'\" }}\n        - {{ id: owner, type: text, required_when: \"fields.tier == 'gold'\" }}\nfulfillment: {{ mode: manual, manual: {{ jira: {{ project: P, issue_type: Task, summary: s }} }} }}\n"
    );
    let d = first(&yaml);
    assert_eq!((d.code, d.line), ("PAO-E013", 17));
    let guarded = yaml.replace(
        "fields.tier == 'gold'",
        "default(fields.tier, '') == 'gold'",
    );
    assert!(codes_of(&guarded).is_empty());
}

#[test]
fn e014_manual_without_jira() {
    let d = first(&format!("{HEAD}fulfillment:\n  mode: manual\n"));
    assert_eq!((d.code, d.line), ("PAO-E014", 11));
}

#[test]
fn e015_restricted_periods() {
    let dir = tempdir("periods");
    std::fs::write(
        dir.join("catalog.yaml"),
        "apiVersion: pao.dev/v2\nkind: Catalog\nrestricted_periods:\n  - { id: freeze, name: Freeze, start: \"02-30\", end: \"01-31\", policy: refuse }\n",
    )
    .unwrap();
    let c = Catalog::load(&dir, &options()).unwrap();
    let d = &c.diagnostics()[0];
    assert_eq!((d.code, d.line), ("PAO-E015", 4));
    assert!(c.settings().is_none());
}

#[test]
fn e016_duplicate_ids_in_an_item() {
    let d = first(&automated(
        "    - { id: a, type: script, config: { script: \"1\" } }\n    - { id: a, type: script, config: { script: \"2\" } }\n",
    ));
    assert_eq!((d.code, d.line), ("PAO-E016", 21));
}

#[test]
fn e017_too_large_or_too_deep() {
    let big = format!(
        "{HEAD}# {}\n",
        "x".repeat(pao_core::catalog::MAX_FILE_BYTES)
    );
    assert_eq!(first(&big).code, "PAO-E017");
    // A 10 MB file is refused before it is parsed.
    let huge = format!("{HEAD}description: \"{}\"\n", "y".repeat(10 << 20));
    let d = first(&huge);
    assert_eq!(d.code, "PAO-E017");
    assert!(d.message.contains("limit"), "{}", d.message);
    let deep = format!("{HEAD}x: {}{}\n", "[".repeat(100), "]".repeat(100));
    assert_eq!(first(&deep).code, "PAO-E017");
}

#[test]
fn e018_api_version() {
    let d = first("apiVersion: pao.dev/v1\nkind: CatalogItem\n");
    assert_eq!((d.code, d.line), ("PAO-E018", 1));
    assert!(d.hint.unwrap().contains("migrated"));
}

#[test]
fn e019_computed_cycle() {
    let yaml = format!(
        "{HEAD}computed:\n  a: \"${{{{ computed.b }}}}\"\n  b: \"${{{{ computed.a }}}}\"\nfulfillment: {{ mode: manual, manual: {{ jira: {{ project: P, issue_type: Task, summary: s }} }} }}\n"
    );
    assert_eq!(first(&yaml).code, "PAO-E019");
}

#[test]
fn e020_action_config_schema() {
    let d = first(&automated(
        "    - { id: a, type: webhook, config: { ur: \"https://x\" } }\n",
    ));
    assert_eq!(d.code, "PAO-E020");
    // Plugin configs are checked against the schema the plugin describes.
    let opts = LoadOptions::default().with_plugin(
        "p",
        Some(serde_json::json!({"type": "object", "required": ["channel"]})),
    );
    let (_, diags) = load_item(
        "t.yaml",
        &automated("    - { id: a, type: \"plugin:p\", config: {} }\n"),
        &opts,
    );
    assert_eq!(diags[0].code, "PAO-E020");
}

/// Diagnostics of one item as `(code, pointer)`, without PAO-W003.
fn located(yaml: &str) -> Vec<(String, String)> {
    diags_of(yaml)
        .iter()
        .map(|d| (d.code.to_string(), d.pointer.clone()))
        .collect()
}

fn one(code: &str, pointer: &str) -> Vec<(String, String)> {
    vec![(code.to_string(), pointer.to_string())]
}

#[test]
fn e021_durations_are_parsed_at_load() {
    // The schema takes any whole number with a unit; one PAO cannot use is refused when the
    // catalog loads, not when a request waits for approval or an action runs.
    let script = "id: a, type: script, config: { script: \"1\" }";
    for (action, pointer) in [
        (
            format!("{{ {script}, timeout: 99999999999999999999s }}"),
            "/fulfillment/actions/0/timeout",
        ),
        (
            format!("{{ {script}, retry: {{ initial: 1s, max: 9999999999999999d }} }}"),
            "/fulfillment/actions/0/retry/max",
        ),
        (
            "{ id: a, type: rest, config: { url: \"https://x.example\", poll: { until: \"result.status == 200\", interval: 99999999999999999999ms } } }".to_string(),
            "/fulfillment/actions/0/config/poll/interval",
        ),
    ] {
        let d = diags_of(&automated(&format!("    - {action}\n")));
        assert_eq!(d.len(), 1, "{action}: {d:?}");
        assert_eq!((d[0].code, d[0].pointer.as_str()), ("PAO-E021", pointer));
        assert_eq!(d[0].line, 20, "{action}");
    }
    // Longer than PAO takes (it would overflow the date a request is due).
    let approval = format!(
        "{}  approval: {{ approvers: {{ teams: [t] }}, timeout: 99999999999d }}\n",
        automated(&format!("    - {{ {script} }}\n"))
    );
    let d = first(&approval);
    assert_eq!(
        (d.code, d.pointer.as_str(), d.line),
        ("PAO-E021", "/fulfillment/approval/timeout", 21)
    );
    assert!(d.message.contains("99999999999d"), "{}", d.message);
    let fine = approval.replace("99999999999d", "72h");
    assert!(located(&fine).is_empty(), "{:?}", located(&fine));
}

#[test]
fn e022_field_patterns_compile_at_load() {
    let manual = "fulfillment: { mode: manual, manual: { jira: { project: P, issue_type: Task, summary: s } } }\n";
    let form = |pattern: &str| {
        format!(
            "{HEAD}presentation:\n  groups:\n    - id: g\n      title: G\n      fields:\n        - {{ id: name, type: text, validation: {{ pattern: \"{pattern}\" }} }}\n{manual}"
        )
    };
    let d = first(&form("^([a-z]+$"));
    assert_eq!(
        (d.code, d.pointer.as_str(), d.line),
        (
            "PAO-E022",
            "/presentation/groups/0/fields/0/validation/pattern",
            15
        )
    );
    let (item, diags) = load_item("t.yaml", &form("^[a-z]+$"), &options());
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let item = item.expect("a valid pattern loads");
    let re = &item.compiled.patterns["name"];
    assert!(re.is_match("abc") && !re.is_match("ABC"));
}

#[test]
fn e023_option_sources_compile_at_load() {
    let manual = "fulfillment: { mode: manual, manual: { jira: { project: P, issue_type: Task, summary: \"${{ fields.team }}\" } } }\n";
    let form = |http: &str| {
        format!(
            "{HEAD}presentation:\n  groups:\n    - id: g\n      title: G\n      fields:\n        - {{ id: team, type: select, source: {{ http: {{ {http} }} }} }}\n{manual}"
        )
    };
    assert_eq!(
        located(&form("url: \"https://teams.example/list\", items: \"$[[\"")),
        one(
            "PAO-E023",
            "/presentation/groups/0/fields/0/source/http/items"
        )
    );
    assert_eq!(
        located(&form("url: \"https://teams.example/${{ env.X + }}\"")),
        one(
            "PAO-E010",
            "/presentation/groups/0/fields/0/source/http/url"
        )
    );
    assert_eq!(
        located(&form(
            "url: \"https://teams.example/\", headers: { X-Team: \"${{ fields.nope }}\" }"
        )),
        one(
            "PAO-E011",
            "/presentation/groups/0/fields/0/source/http/headers/X-Team"
        )
    );
    let ok = form(
        "url: \"https://teams.example/${{ env.REGION }}\", items: \"$.teams[*]\", headers: { X-Env: \"${{ env.REGION }}\" }",
    );
    let (item, diags) = load_item("t.yaml", &ok, &options());
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let source = &item.expect("loads").compiled.sources["team"];
    assert_eq!(source.headers.len(), 1);
}

/// Secrets are granted per item (`secrets:`); the server's own secrets are never readable from
/// the catalog; a secret field is read as `secrets.<id>`, never `fields.<id>`.
#[test]
fn e011_e024_secret_grants() {
    let reserved = LoadOptions {
        reserved_secrets: ["approval_hook".to_string()].into(),
        ..options()
    };
    let item = |grants: &str, url: &str| {
        format!(
            "{HEAD}presentation:\n  groups:\n    - id: g\n      title: G\n      fields:\n        - {{ id: pw, type: secret }}\n{grants}fulfillment:\n  mode: automated\n  actions:\n    - {{ id: w, type: webhook, config: {{ url: \"https://hooks.example.com/{url}\", body: {{ a: 1 }} }} }}\n"
        )
    };
    let diags = |yaml: &str| {
        let (_, d) = load_item("t.yaml", yaml, &reserved);
        d.into_iter()
            .filter(|d| d.code != "PAO-W003")
            .map(|d| (d.code.to_string(), d.message, d.line))
            .collect::<Vec<_>>()
    };
    // Declared, and the item's own secret field: clean.
    assert!(
        diags(&item(
            "secrets: [hook_token]\n",
            "${{ secrets.hook_token }}/${{ secrets.pw }}"
        ))
        .is_empty()
    );
    // Not declared: located at the template, with the fix.
    let d = diags(&item("", "${{ secrets.hook_token }}"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].0, "PAO-E011");
    assert!(
        d[0].1.contains("secret `hook_token` is not granted"),
        "{d:?}"
    );
    assert_eq!(d[0].2, 19, "the line of the action that reads it");
    // A near miss gets a suggestion.
    let (_, near) = load_item(
        "t.yaml",
        &item("secrets: [hook_token]\n", "${{ secrets.hook_tokn }}"),
        &reserved,
    );
    assert!(
        near.iter().any(|d| d
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("did you mean `hook_token`"))),
        "{near:?}"
    );
    // Reserved: neither readable nor grantable.
    let d = diags(&item(
        "secrets: [approval_hook]\n",
        "${{ secrets.approval_hook }}",
    ));
    let codes: Vec<&str> = d.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(codes, vec!["PAO-E024", "PAO-E011"], "{d:?}");
    assert!(
        d.iter().all(|x| x.1.contains("reserved for the server")),
        "{d:?}"
    );
    // A secret field read through `fields`.
    let d = diags(&item("", "${{ fields.pw }}"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].1.contains("`pw` is a secret field"), "{d:?}");
}

#[test]
fn rest_poll_until_compiles_at_load() {
    let rest = |until: &str| {
        automated(&format!(
            "    - {{ id: a, type: rest, config: {{ url: \"https://x.example\", poll: {{ until: \"{until}\" }} }} }}\n"
        ))
    };
    let pointer = "/fulfillment/actions/0/config/poll/until";
    assert_eq!(
        located(&rest("result.body.state ==")),
        one("PAO-E010", pointer)
    );
    assert_eq!(
        located(&rest("result.body.state == fieldz.name")),
        one("PAO-E011", pointer)
    );
    assert!(located(&rest("result.body.state == fields.name")).is_empty());
    // `poll.url` is a URL template over `result`, compiled with the action's config.
    let url = automated(
        "    - { id: a, type: rest, config: { url: \"https://x.example\", poll: { url: \"https://x.example/${{ result.body.id + }}\", until: \"true\" } } }\n",
    );
    assert_eq!(
        located(&url),
        one("PAO-E010", "/fulfillment/actions/0/config/poll/url")
    );
}

#[test]
fn warnings_for_lifecycle() {
    let manual = "fulfillment: { mode: manual, manual: { jira: { project: P, issue_type: Task, summary: s } } }\n";
    let (item, diags) = load_item(
        "t.yaml",
        &format!("{HEAD}{manual}lifecycle: {{ status: deprecated }}\n"),
        &options(),
    );
    assert!(item.is_some(), "warnings do not stop an item");
    assert_eq!(diags[0].code, "PAO-W001");
    let (_, diags) = load_item(
        "t.yaml",
        &format!("{HEAD}{manual}lifecycle: {{ status: retired }}\n"),
        &options(),
    );
    assert_eq!(diags[0].code, "PAO-W002");
}

#[test]
fn reload_keeps_last_good_version() {
    let dir = tempdir("reload");
    let good = format!(
        "{HEAD}fulfillment: {{ mode: manual, manual: {{ jira: {{ project: P, issue_type: Task, summary: s }} }} }}\n"
    );
    std::fs::write(dir.join("item.yaml"), &good).unwrap();
    std::fs::write(dir.join("other.yaml"), good.replace("t.item", "t.other")).unwrap();
    let first = Catalog::load(&dir, &options()).unwrap();
    assert_eq!(first.len(), 2);
    let hash = first.get("t.item").unwrap().content_hash.clone();
    std::fs::write(
        dir.join("item.yaml"),
        good.replace("summary: s", "summary: \"${{ nope }}\""),
    )
    .unwrap();
    let second = first.reload(&dir, &options()).unwrap();
    assert_eq!(
        second.len(),
        2,
        "the broken item keeps its last good version, the other one still loads"
    );
    assert_eq!(second.get("t.item").unwrap().content_hash, hash);
    let codes: Vec<&str> = second.diagnostics().iter().map(|d| d.code).collect();
    assert_eq!(codes, vec!["PAO-E011", "PAO-W004"]);
    // A fixed file replaces it, with a new hash.
    std::fs::write(
        dir.join("item.yaml"),
        good.replace("summary: s", "summary: fixed"),
    )
    .unwrap();
    let third = second.reload(&dir, &options()).unwrap();
    assert_ne!(third.get("t.item").unwrap().content_hash, hash);
    assert!(third.diagnostics().is_empty());
}

#[test]
fn json_output_is_machine_readable() {
    let d = first(&automated("    - { id: a, type: terrafrom, config: {} }\n"));
    let v = serde_json::to_value(&d).unwrap();
    for key in [
        "severity", "code", "file", "line", "column", "pointer", "message", "hint",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["severity"], "error");
}

/// Peak resident memory of this test process so far, in MiB (`VmHWM`).
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// A catalog mounted from a Kubernetes ConfigMap: every file is a symlink into a dot-folder
/// that is itself a symlink. The items load, and a symlink loop is no endless walk.
#[cfg(unix)]
#[test]
fn symlinked_files_load() {
    use std::os::unix::fs::symlink;
    let dir = tempdir("configmap");
    let data = dir.join("..2026_12_07_00_00_00.1");
    std::fs::create_dir_all(&data).unwrap();
    let examples = root().join("examples/catalog");
    std::fs::copy(examples.join("catalog.yaml"), data.join("catalog.yaml")).unwrap();
    std::fs::copy(
        examples.join("networking/firewall-rule.yaml"),
        data.join("firewall-rule.yaml"),
    )
    .unwrap();
    symlink("..2026_12_07_00_00_00.1", dir.join("..data")).unwrap();
    for name in ["catalog.yaml", "firewall-rule.yaml"] {
        symlink(format!("..data/{name}"), dir.join(name)).unwrap();
    }
    let c = Catalog::load(&dir, &options()).unwrap();
    assert!(
        c.get("networking.firewall-rule").is_some(),
        "{}",
        render_all(c.diagnostics())
    );
    assert!(c.settings().is_some());
    assert!(!c.has_errors(), "{}", render_all(c.diagnostics()));
    symlink(".", dir.join("again")).unwrap();
    symlink("nowhere.yaml", dir.join("dangling.yaml")).unwrap();
    let c = Catalog::load(&dir, &options()).unwrap();
    assert_eq!(c.len(), 1, "{}", render_all(c.diagnostics()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file past the size limit is refused by its size, without reading it.
#[test]
fn huge_files_are_refused_unread() {
    let dir = tempdir("huge");
    // A sparse file of 1.5 GiB: reading it whole would show in the process's memory.
    let huge = std::fs::File::create(dir.join("huge.yaml")).unwrap();
    huge.set_len(1536 << 20).unwrap();
    drop(huge);
    let c = Catalog::load(&dir, &options()).unwrap();
    let d = c.diagnostics();
    assert_eq!(d.len(), 1, "{}", render_all(d));
    assert_eq!((d[0].code, d[0].file.as_str()), ("PAO-E017", "huge.yaml"));
    assert!(
        d[0].message.contains("1610612736 bytes"),
        "{}",
        d[0].message
    );
    let peak = peak_rss_mib();
    assert!(peak < 512, "peak RSS {peak} MiB");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pao-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Arbitrary text never panics the loader.
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
        let _ = load_item("p.yaml", &s, &options());
    }

    /// Mutating a valid item (deleting, duplicating or swapping characters) never panics.
    #[test]
    fn mutated_items_never_panic(ops in proptest::collection::vec((0usize..4000, 0u8..4, any::<char>()), 1..8)) {
        let mut s: Vec<char> = automated("    - { id: a, type: script, config: { script: \"${{ fields.name | upper }}\" }, when: \"fields.env == 'prod'\" }\n").chars().collect();
        for (pos, op, c) in ops {
            let i = pos % s.len().max(1);
            match op {
                0 => { s.remove(i); }
                1 => s.insert(i, c),
                2 => s.insert(i, ['\t', '{', '[', ':', '-', '"', '\'', '&', '*', '$'][pos % 10]),
                _ => { let ch = s[i]; s.insert(i, ch); }
            }
            if s.is_empty() { s.push('x'); }
        }
        let text: String = s.into_iter().collect();
        let _ = load_item("m.yaml", &text, &options());
    }
}

#[test]
fn w003_unused_field() {
    let manual = "fulfillment: { mode: manual, manual: { jira: { project: P, issue_type: Task, summary: \"${{ fields.used }}\" } } }\n";
    let form = "presentation:\n  groups:\n    - id: g\n      title: G\n      fields:\n        - { id: used, type: text }\n        - { id: forgotten, type: text }\n";
    let (item, diags) = load_item("t.yaml", &format!("{HEAD}{form}{manual}"), &options());
    assert!(item.is_some(), "a warning does not stop the item");
    let got: Vec<(&str, usize, &str)> = diags
        .iter()
        .map(|d| (d.code, d.line, d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![(
            "PAO-W003",
            16,
            "field `forgotten` is declared but never used"
        )]
    );
    // A dynamic read (`fields[...]`) may read any field: no warning then.
    let dynamic = manual.replace("fields.used", "fields['us' ~ 'ed'] ~ fields[fields.used]");
    let (_, diags) = load_item("t.yaml", &format!("{HEAD}{form}{dynamic}"), &options());
    assert!(diags.is_empty(), "{diags:?}");
}
