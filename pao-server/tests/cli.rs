//! The `pao` binary: exit codes and output formats of validate, schema and form.

use std::path::Path;
use std::process::Command;

fn pao(args: &[&str]) -> (i32, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_pao"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("run pao");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_example_catalog_succeeds() {
    let (code, out, _) = pao(&[
        "validate",
        "examples/catalog",
        "--plugin",
        "servicenow-incident",
        "--plugin",
        "slack-notify",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 error(s)"), "{out}");
}

#[test]
fn validate_without_the_plugins_reports_unknown_types() {
    let (code, out, _) = pao(&["validate", "examples/catalog"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("error[PAO-E006]: unknown action type `plugin:slack-notify`"),
        "{out}"
    );
    assert!(
        out.contains("no plugin `slack-notify` is installed"),
        "{out}"
    );
}

#[test]
fn validate_broken_catalog_fails_with_rustc_style_and_json_output() {
    let (code, out, _) = pao(&["validate", "examples/catalog-broken"]);
    assert_eq!(code, 1);
    assert!(out.contains("error[PAO-E004]: unknown key"), "{out}");
    assert!(out.contains(" --> unknown-key-typo.yaml:"), "{out}");
    let (code, out, _) = pao(&["validate", "examples/catalog-broken", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json output");
    let diags = v["diagnostics"].as_array().unwrap();
    assert!(diags.iter().any(|d| d["code"] == "PAO-E008"));
    assert!(diags.iter().all(|d| d["line"].as_u64().unwrap() >= 1));
}

#[test]
fn validate_missing_folder_is_a_clear_error() {
    let (code, _, err) = pao(&["validate", "no/such/folder"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read catalog folder no/such/folder"),
        "{err}"
    );
}

#[test]
fn schema_prints_the_published_schema() {
    let (code, out, _) = pao(&["schema"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let on_disk = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/catalog-item.v2.schema.json"),
    )
    .unwrap();
    assert_eq!(out, on_disk);
    let (_, out, _) = pao(&["schema", "--settings"]);
    assert!(out.contains("restricted_periods"));
}

#[test]
fn form_prints_the_form_schema_or_diagnostics() {
    let (code, out, _) = pao(&[
        "form",
        "examples/catalog/database/postgres.yaml",
        "--plugin",
        "slack-notify",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["x-pao-item"]["id"], "database.postgres");
    let (code, _, err) = pao(&["form", "examples/catalog-broken/unknown-key-typo.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("PAO-E004"), "{err}");
}

#[test]
fn admin_backup_copies_a_sqlite_database_and_never_overwrites() {
    let dir = std::env::temp_dir().join(format!("pao-cli-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/pao.db", dir.display());
    let copy = dir.join("copy.db");
    let copy = copy.to_str().unwrap();
    let (code, out, err) = pao(&["admin", "backup", copy, "--database", &db]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(std::path::Path::new(copy).exists());
    let (code, _, err) = pao(&["admin", "backup", copy, "--database", &db]);
    assert_eq!(code, 2, "an existing file is never overwritten");
    assert!(err.contains("backup to"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
