//! Secrets as files in a folder: what a Kubernetes secret mounted as a volume looks like
//! (`<dir>/jira_token` → `..data/jira_token`, `..data` → `..2026_01_31_10_00_00.123`), and
//! what Docker and systemd credentials look like too.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use pao_core::secrets::{SecretError, SecretProvider};

use super::plain_name;

/// The largest secret file read; a larger one is an error.
pub const MAX_SECRET_FILE_BYTES: u64 = 1 << 20;

/// What identifies one content of a file without reading it: when Kubernetes swaps the
/// `..data` link, the file behind the name is a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        }
    }
}

/// Secret `name` is the file `<dir>/<name>` (links followed), its trailing newline removed.
/// Each lookup checks the file's modification time, size and inode and reads it again when
/// one changed, so a rotated secret is seen at the next lookup. Names with `/` or `\`, or
/// starting with `.`, are never looked up (the `..data` folders of Kubernetes stay hidden).
pub struct FileSecrets {
    dir: PathBuf,
    cache: Mutex<HashMap<String, (Stamp, String)>>,
}

impl fmt::Debug for FileSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSecrets")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FileSecrets {
    /// Secrets in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> FileSecrets {
        FileSecrets {
            dir: dir.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Result<String, SecretError> {
        if !plain_name(name) {
            return Err(SecretError::NotFound(name.to_string()));
        }
        let path = self.dir.join(name);
        let io_error = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => SecretError::NotFound(name.to_string()),
            _ => {
                SecretError::Unavailable(format!("cannot read secret file {}: {e}", path.display()))
            }
        };
        // `metadata` follows links: the stamp is the one of the file behind `..data`.
        let meta = std::fs::metadata(&path).map_err(io_error)?;
        if !meta.is_file() {
            return Err(SecretError::NotFound(name.to_string()));
        }
        let stamp = Stamp::of(&meta);
        if let Some(value) = self.cache.lock().ok().and_then(|c| {
            c.get(name)
                .filter(|(s, _)| *s == stamp)
                .map(|(_, v)| v.clone())
        }) {
            return Ok(value);
        }
        let too_large = || {
            SecretError::Unavailable(format!(
                "secret file {} is larger than {MAX_SECRET_FILE_BYTES} bytes",
                path.display()
            ))
        };
        if meta.len() > MAX_SECRET_FILE_BYTES {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(io_error)?;
        if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            SecretError::Unavailable(format!("secret file {} is not UTF-8", path.display()))
        })?;
        let value = text.trim_end_matches(['\n', '\r']).to_string();
        if let Ok(mut c) = self.cache.lock() {
            c.insert(name.to_string(), (stamp, value.clone()));
        }
        Ok(value)
    }
}

#[async_trait]
impl SecretProvider for FileSecrets {
    async fn get(&self, name: &str) -> Result<String, SecretError> {
        self.read(name)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pao-file-secrets-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn reads_a_file_and_trims_the_trailing_newline() {
        let d = temp_dir("plain");
        std::fs::write(d.join("jira_token"), "abc\n").unwrap();
        std::fs::write(d.join("crlf"), "x y\r\n").unwrap();
        let s = FileSecrets::new(&d);
        assert_eq!(s.get("jira_token").await.unwrap(), "abc");
        assert_eq!(s.get("crlf").await.unwrap(), "x y");
        assert_eq!(
            s.get("missing").await,
            Err(SecretError::NotFound("missing".into()))
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_file_changed_on_disk_is_read_again() {
        let d = temp_dir("change");
        std::fs::write(d.join("tfc_token"), "first").unwrap();
        let s = FileSecrets::new(&d);
        assert_eq!(s.get("tfc_token").await.unwrap(), "first");
        std::fs::write(d.join("tfc_token"), "second-value").unwrap();
        assert_eq!(s.get("tfc_token").await.unwrap(), "second-value");
        std::fs::remove_file(d.join("tfc_token")).unwrap();
        assert!(matches!(
            s.get("tfc_token").await,
            Err(SecretError::NotFound(_))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The layout the kubelet writes, and its atomic swap of `..data` on rotation.
    #[tokio::test]
    async fn kubernetes_data_links_and_their_swap() {
        let d = temp_dir("k8s");
        let v1 = d.join("..2026_01_31_10_00_00.000000001");
        std::fs::create_dir(&v1).unwrap();
        std::fs::write(v1.join("db_password"), "old-password\n").unwrap();
        symlink("..2026_01_31_10_00_00.000000001", d.join("..data")).unwrap();
        symlink("..data/db_password", d.join("db_password")).unwrap();
        let s = FileSecrets::new(&d);
        assert_eq!(s.get("db_password").await.unwrap(), "old-password");

        // Rotation: a new timestamped folder, a new link renamed over `..data`.
        let v2 = d.join("..2026_02_01_10_00_00.000000002");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v2.join("db_password"), "new-password\n").unwrap();
        symlink("..2026_02_01_10_00_00.000000002", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(&v1).unwrap();
        assert_eq!(s.get("db_password").await.unwrap(), "new-password");

        // The kubelet's own entries are not secrets.
        for hidden in ["..data", "..2026_02_01_10_00_00.000000002", ".hidden"] {
            assert_eq!(
                s.get(hidden).await,
                Err(SecretError::NotFound(hidden.into())),
                "{hidden}"
            );
        }
        assert!(matches!(
            s.get("..data/db_password").await,
            Err(SecretError::NotFound(_))
        ));
        assert!(matches!(
            s.get("../etc/passwd").await,
            Err(SecretError::NotFound(_))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_large_file_or_a_folder_is_refused() {
        let d = temp_dir("large");
        std::fs::write(
            d.join("big"),
            vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1],
        )
        .unwrap();
        std::fs::create_dir(d.join("folder")).unwrap();
        let s = FileSecrets::new(&d);
        match s.get("big").await {
            Err(SecretError::Unavailable(m)) => assert!(m.contains("larger than"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.get("folder").await,
            Err(SecretError::NotFound(_))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn an_unreadable_file_is_unavailable_not_missing() {
        let d = temp_dir("io");
        // A link loop: not absent, but unreadable.
        symlink("loop_b", d.join("loop_a")).unwrap();
        symlink("loop_a", d.join("loop_b")).unwrap();
        let s = FileSecrets::new(&d);
        match s.get("loop_a").await {
            Err(SecretError::Unavailable(m)) => assert!(m.contains("loop_a"), "{m}"),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn debug_shows_the_folder_only() {
        let s = FileSecrets::new("/run/secrets");
        assert_eq!(
            format!("{s:?}"),
            "FileSecrets { dir: \"/run/secrets\", .. }"
        );
    }
}
