//! Files a crate keeps a copy of so that it packages on its own (`cargo package` takes nothing
//! from outside the crate's folder), checked byte for byte against the original.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_path_buf()
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The plugin contract: the SDK's guest bindings and the host's bindings are generated from
/// the same WIT, so a plugin built with the SDK loads in the host.
#[test]
fn the_host_wit_is_the_sdk_wit() {
    assert!(
        read("pao-wasm-host/wit/action.wit") == read("pao-plugins-sdk/wit/action.wit"),
        "pao-wasm-host/wit/action.wit differs from pao-plugins-sdk/wit/action.wit: copy the SDK's file over the host's"
    );
}

/// The published catalog schemas live in pao-core (which embeds them); `schemas/` at the
/// repository root, where users and editors find them, must show the same files.
#[test]
fn the_published_schemas_are_pao_core_schemas() {
    for name in ["catalog-item.v2.schema.json", "catalog.v2.schema.json"] {
        assert!(
            read(&format!("schemas/{name}")) == read(&format!("pao-core/schemas/{name}")),
            "schemas/{name} differs from pao-core/schemas/{name} (it should be a symlink to it)"
        );
    }
}
