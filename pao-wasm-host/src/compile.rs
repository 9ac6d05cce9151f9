//! From bytes to a compiled `Component`, with clear errors for what is not a component, and
//! an on-disk cache keyed by the bytes' SHA-256 and the engine's compatibility hash (wasmtime
//! version, target, settings), so a restart does not recompile and an upgrade never loads a
//! stale artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// The file name of `bytes` compiled by `engine` in the cache.
pub(crate) fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    let content = hex::encode(Sha256::digest(bytes));
    // `DefaultHasher::new()` uses fixed keys: the same engine settings give the same hash
    // from one process to the next.
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{content}-{:016x}.cwasm", h.finish())
}

/// Checks the header: a component, not a core module or something else.
pub(crate) fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm(path.to_path_buf()));
    }
    // Version 1, layer 0 is a core module; components have layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule(path.to_path_buf()));
    }
    Ok(())
}

/// Compiles `bytes`, or loads them precompiled from `cache_dir`.
pub(crate) fn compile(
    engine: &Engine,
    cache_dir: Option<&Path>,
    path: &Path,
    bytes: &[u8],
) -> Result<Component, LoadError> {
    check_header(path, bytes)?;
    let cached: Option<PathBuf> = cache_dir.map(|d| d.join(cache_key(engine, bytes)));
    if let Some(file) = &cached
        && file.is_file()
    {
        // SAFETY: the file is one this host wrote into its own cache directory, under a name
        // that includes the hash of the source bytes and of the engine's settings; wasmtime
        // additionally checks the artifact's header and engine compatibility. A file that
        // fails those checks is recompiled below.
        match unsafe { Component::deserialize_file(engine, file) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(cache = %file.display(), error = %e, "recompiling a stale cached plugin")
            }
        }
    }
    let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })?;
    if let Some(file) = &cached
        && let Err(e) = store(&component, file)
    {
        // The cache is an optimisation: a read-only disk must not stop the plugin loading.
        tracing::warn!(cache = %file.display(), error = %e, "cannot cache a compiled plugin");
    }
    Ok(component)
}

fn store(component: &Component, file: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}
