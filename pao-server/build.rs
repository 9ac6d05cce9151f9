//! With the `sandbox` feature, builds the example plugins (`examples/plugins/*`) for
//! `wasm32-wasip2` and embeds them, so that `pao serve --sandbox` offers every example item
//! with nothing else to build. The plugins are built by a nested `cargo build` in a target
//! directory of their own (`<target>/wasm-plugins`, shared with `scripts/build-plugins` and
//! the tests), so it never waits on this build's lock.
//!
//! Without the `wasm32-wasip2` target, or with `PAO_SKIP_PLUGIN_BUILD=1`, nothing is embedded:
//! a warning says how to get the target, and the sandbox then offers the items that need no
//! plugin.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    println!("cargo:rerun-if-env-changed=PAO_SKIP_PLUGIN_BUILD");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let generated = out.join("example_plugins.rs");
    let embedded = if std::env::var_os("CARGO_FEATURE_SANDBOX").is_some()
        && std::env::var_os("PAO_SKIP_PLUGIN_BUILD").is_none_or(|v| v.is_empty() || v == "0")
    {
        build(&out).unwrap_or_else(|why| {
            println!("cargo:warning=the example plugins are not embedded: {why}");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let mut code = String::from(
        "/// The example plugins built for `wasm32-wasip2`: (name, component, manifest).\n\
         pub const EXAMPLE_PLUGINS: &[(&str, &[u8], &str)] = &[\n",
    );
    for (name, wasm, manifest) in &embedded {
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({wasm:?}), include_str!({manifest:?})),\n",
            wasm = wasm.display().to_string(),
            manifest = manifest.display().to_string(),
        ));
    }
    code.push_str("];\n");
    std::fs::write(&generated, code).expect("write example_plugins.rs");
}

/// Builds every `examples/plugins/<name>` with a `<name>.toml` manifest; returns each name
/// with its `.wasm` and manifest paths.
fn build(out: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>, String> {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("pao-server sits in the workspace")?
        .to_path_buf();
    let examples = root.join("examples/plugins");
    for dir in [&examples, &root.join("pao-plugins-sdk")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    let Ok(entries) = std::fs::read_dir(&examples) else {
        return Err(format!("no {} folder", examples.display()));
    };
    let mut plugins = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let dir = e.path();
        if dir.join("Cargo.toml").is_file() && dir.join(format!("{name}.toml")).is_file() {
            plugins.push(name);
        }
    }
    plugins.sort();
    if plugins.is_empty() {
        return Ok(Vec::new());
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("{rustc} --print sysroot: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if !Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        return Err(format!(
            "the {TARGET} target is not installed (`rustup target add {TARGET}`, then build again)"
        ));
    }
    let target_dir = wasm_target_dir(out);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for p in &plugins {
        cmd.args(["-p", p]);
    }
    // This build's settings are not the plugins' (flags for the host, its target dir).
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build --target {TARGET}` of {} failed ({status})",
            plugins.join(", ")
        ));
    }
    let mut built = Vec::new();
    for p in plugins {
        let wasm = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", p.replace('-', "_")));
        if !wasm.is_file() {
            return Err(format!("{} is missing after the build", wasm.display()));
        }
        let manifest = examples.join(&p).join(format!("{p}.toml"));
        built.push((p, wasm, manifest));
    }
    Ok(built)
}

/// `<target>/wasm-plugins`, where `<target>` holds this build's profile folder
/// (`OUT_DIR` is `<target>[/<triple>]/<profile>/build/<package>-<hash>/out`).
fn wasm_target_dir(out: &Path) -> PathBuf {
    out.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent())
        .and_then(|profile| profile.parent())
        .map(|t| t.join("wasm-plugins"))
        .unwrap_or_else(|| out.join("wasm-plugins"))
}
