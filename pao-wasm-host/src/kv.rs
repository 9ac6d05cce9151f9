//! The plugins' key-value store. Each plugin sees only its own namespace: the host prefixes
//! every key with the plugin's name, so plugins can neither read nor overwrite each other.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;

/// Where plugin key-value data lives. The default is in memory ([`MemoryKv`]); `pao serve`
/// keeps it in its database, so it survives restarts and is shared by replicas.
#[async_trait]
pub trait KvStore: Send + Sync + fmt::Debug {
    /// The value of `key` in `namespace`; `Err` when the store cannot be read.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, String>;
    /// Sets `key`; fails when the namespace would hold more than `max_namespace_bytes`, or
    /// the store cannot be written.
    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        max_namespace_bytes: u64,
    ) -> Result<(), String>;
    /// Removes `key`.
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), String>;
}

/// A [`KvStore`] in process memory.
#[derive(Debug, Default)]
pub struct MemoryKv {
    data: Mutex<BTreeMap<(String, String), String>>,
}

#[async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, String> {
        let data = self
            .data
            .lock()
            .map_err(|_| "key-value store unavailable".to_string())?;
        Ok(data.get(&(namespace.to_string(), key.to_string())).cloned())
    }

    async fn set(
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

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        let mut data = self
            .data
            .lock()
            .map_err(|_| "key-value store unavailable".to_string())?;
        data.remove(&(namespace.to_string(), key.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn namespaces_do_not_meet_and_are_capped() {
        let kv = MemoryKv::default();
        kv.set("a", "k", "1", 100).await.unwrap();
        assert_eq!(kv.get("b", "k").await.unwrap(), None);
        assert_eq!(kv.get("a", "k").await.unwrap().as_deref(), Some("1"));
        assert!(kv.set("a", "big", &"x".repeat(200), 100).await.is_err());
        kv.delete("a", "k").await.unwrap();
        assert_eq!(kv.get("a", "k").await.unwrap(), None);
    }
}
