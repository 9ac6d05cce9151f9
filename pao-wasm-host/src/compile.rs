//! From bytes to a compiled `Component`, with clear errors for what is not a component, and
//! an on-disk cache keyed by the bytes' SHA-256 and the engine's compatibility hash (wasmtime
//! version, target, settings), so a restart does not recompile and an upgrade never loads a
//! stale artifact. Cached artifacts are native code: see [`Cache`] for why a file in the
//! cache is loaded only when this host wrote it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use hmac::Mac as _;
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
#[allow(
    unsafe_code,
    reason = "`Component::deserialize` of an artifact this host wrote and authenticated (SAFETY below)"
)]
pub(crate) fn compile(
    engine: &Engine,
    cache_dir: Option<&Path>,
    path: &Path,
    bytes: &[u8],
) -> Result<Component, LoadError> {
    check_header(path, bytes)?;
    // The cache is an optimisation: a directory that cannot be made private, or a key that
    // cannot be read, only means compiling on every start.
    let cache = cache_dir.and_then(|d| match Cache::open(d) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(cache = %d.display(), error = %e, "not using the plugin cache");
            None
        }
    });
    let name = cache_key(engine, bytes);
    if let Some(cache) = &cache
        && let Some(artifact) = cache.read(&name)
    {
        // SAFETY: `artifact` is bytes this host serialized itself: `Cache::read` returns them
        // only when their HMAC, under a key only this host's user can read, matches. They are
        // deserialized from memory, so the file cannot change between check and use. wasmtime
        // additionally checks the header and the engine's compatibility; a failure recompiles.
        match unsafe { Component::deserialize(engine, &artifact) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(cache = %cache.dir.display(), error = %e, "recompiling a stale cached plugin")
            }
        }
    }
    let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })?;
    if let Some(cache) = &cache
        && let Err(e) = cache.write(&name, &component)
    {
        // A read-only disk must not stop the plugin loading.
        tracing::warn!(cache = %cache.dir.display(), error = %e, "cannot cache a compiled plugin");
    }
    Ok(component)
}

/// The on-disk cache of compiled plugins: a directory only this host's user may enter (0700,
/// owned by it), a random key in `cache.key` (0600), and per plugin `<cache_key>` holding the
/// serialized artifact followed by the HMAC-SHA256 of its name and bytes under that key.
/// Files are written under unpredictable temporary names, then renamed.
///
/// The artifact is native code that is run as such: a file that does not carry the right HMAC
/// (someone else wrote it, or it was changed) is never loaded, and is replaced by a fresh
/// compilation.
pub(crate) struct Cache {
    dir: PathBuf,
    key: [u8; 32],
}

const KEY_FILE: &str = "cache.key";
const MAC_LEN: usize = 32;

impl Cache {
    /// Opens (creating it 0700 if needed) the cache directory and its key.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Cache> {
        private_dir(dir)?;
        let key_path = dir.join(KEY_FILE);
        let key = match read_key(&key_path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                random(&mut key)?;
                // Another process may win the race: then its key is the one on disk.
                match write_private(dir, &key_path, &key, false) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                    _ => read_key(&key_path)?,
                }
            }
            Err(e) => return Err(e),
        };
        Ok(Cache {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The artifact named `name`, when it is there and its HMAC is right.
    pub(crate) fn read(&self, name: &str) -> Option<Vec<u8>> {
        let file = self.dir.join(name);
        let mut data = std::fs::read(&file).ok()?;
        if data.len() < MAC_LEN {
            return None;
        }
        let mac = data.split_off(data.len() - MAC_LEN);
        if verify_mac(&self.key, name, &data, &mac) {
            Some(data)
        } else {
            tracing::warn!(cache = %file.display(), "a cached plugin does not carry this host's HMAC: recompiling");
            None
        }
    }

    fn write(&self, name: &str, component: &Component) -> std::io::Result<()> {
        let mut data = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mac = mac_of(&self.key, name, &data);
        data.extend_from_slice(&mac);
        write_private(&self.dir, &self.dir.join(name), &data, true)
    }
}

/// Creates `dir` with mode 0700, or checks that an existing one is a directory of this user
/// that no one else may write (tightening it to 0700 when it is ours).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let meta = std::fs::symlink_metadata(dir)?;
        if !meta.is_dir() {
            return Err(std::io::Error::other(
                "not a directory (or a symbolic link)",
            ));
        }
        // Whose is it? A file this process creates is owned by its effective user.
        let probe = tempfile_name(dir, "owner")?;
        let mine = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .and_then(|f| f.metadata())
            .map(|m| m.uid());
        let _ = std::fs::remove_file(&probe);
        if mine? != meta.uid() {
            return Err(std::io::Error::other(
                "the directory belongs to another user",
            ));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

fn read_key(path: &Path) -> std::io::Result<[u8; 32]> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_file() || meta.mode() & 0o077 != 0 {
            return Err(std::io::Error::other(format!(
                "{} must be a regular file only its owner can read (0600)",
                path.display()
            )));
        }
    }
    let bytes = std::fs::read(path)?;
    bytes
        .try_into()
        .map_err(|_| std::io::Error::other(format!("{} is not a 32-byte key", path.display())))
}

/// Writes `data` to a new file with mode 0600 under an unpredictable name in `dir`, then
/// moves it to `path` (replacing a file there when `replace`, else failing with
/// `AlreadyExists`), so a reader never sees half a file and no one can plant the temporary
/// file in advance.
fn write_private(dir: &Path, path: &Path, data: &[u8], replace: bool) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = tempfile_name(dir, "tmp")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    let moved = written.and_then(|()| {
        if replace {
            std::fs::rename(&tmp, path)
        } else {
            std::fs::hard_link(&tmp, path)
        }
    });
    let _ = std::fs::remove_file(&tmp);
    moved
}

fn tempfile_name(dir: &Path, what: &str) -> std::io::Result<PathBuf> {
    let mut r = [0u8; 16];
    random(&mut r)?;
    Ok(dir.join(format!(".{what}-{}", hex::encode(r))))
}

/// Fills `buf` from the operating system's random source.
fn random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// The MAC of a cache file: HMAC-SHA256 of `name`, a zero byte and `data`. Binding the name
/// means an artifact cannot be moved to another plugin's name.
fn mac_of(key: &[u8; 32], name: &str, data: &[u8]) -> [u8; 32] {
    mac_state(key, name, data).finalize().into_bytes().into()
}

/// Whether `tag` is the MAC of `name` and `data` (compared in constant time).
fn verify_mac(key: &[u8; 32], name: &str, data: &[u8], tag: &[u8]) -> bool {
    mac_state(key, name, data).verify_slice(tag).is_ok()
}

fn mac_state(key: &[u8; 32], name: &str, data: &[u8]) -> hmac::Hmac<Sha256> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(data);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_binds_the_name() {
        let key = [7u8; 32];
        let a = mac_of(&key, "a", b"data");
        assert_ne!(a, mac_of(&key, "b", b"data"));
        assert_ne!(a, mac_of(&key, "a", b"datb"));
        assert!(verify_mac(&key, "a", b"data", &a));
        assert!(!verify_mac(&[8u8; 32], "a", b"data", &a));
    }
}
