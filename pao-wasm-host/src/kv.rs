//! The plugins' key-value store. Each plugin sees only its own namespace: the host prefixes
//! every key with the plugin's name, so plugins can neither read nor overwrite each other.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// Where plugin key-value data lives. The default is in memory ([`MemoryKv`]); an embedder
/// may put it in its `Store`.
pub trait KvStore: Send + Sync + fmt::Debug {
    /// The value of `key` in `namespace`.
    fn get(&self, namespace: &str, key: &str) -> Option<String>;
    /// Sets `key`; fails when the namespace would hold more than `max_namespace_bytes`.
    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        max_namespace_bytes: u64,
    ) -> Result<(), String>;
    /// Removes `key`.
    fn delete(&self, namespace: &str, key: &str);
}

/// A [`KvStore`] in process memory.
#[derive(Debug, Default)]
pub struct MemoryKv {
    data: Mutex<BTreeMap<(String, String), String>>,
}

impl KvStore for MemoryKv {
    fn get(&self, namespace: &str, key: &str) -> Option<String> {
        let data = self.data.lock().ok()?;
        data.get(&(namespace.to_string(), key.to_string())).cloned()
    }

    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        max_namespace_bytes: u64,
    ) -> Result<(), String> {
        let mut data = self
            .data
            .lock()
            .map_err(|_| "key-value store unavailable".to_string())?;
        let used: usize = data
            .iter()
            .filter(|((ns, k), _)| ns == namespace && k != key)
            .map(|((_, k), v)| k.len() + v.len())
            .sum();
        if (used + key.len() + value.len()) as u64 > max_namespace_bytes {
            return Err(format!(
                "namespace `{namespace}` would exceed {max_namespace_bytes} bytes"
            ));
        }
        data.insert((namespace.to_string(), key.to_string()), value.to_string());
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) {
        if let Ok(mut data) = self.data.lock() {
            data.remove(&(namespace.to_string(), key.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_do_not_meet_and_are_capped() {
        let kv = MemoryKv::default();
        kv.set("a", "k", "1", 100).unwrap();
        assert_eq!(kv.get("b", "k"), None);
        assert_eq!(kv.get("a", "k").as_deref(), Some("1"));
        assert!(kv.set("a", "big", &"x".repeat(200), 100).is_err());
        kv.delete("a", "k");
        assert_eq!(kv.get("a", "k"), None);
    }
}
