//! The data of one plugin call's `Store` (a fresh one per call), and the host side of the
//! contract's imports: log, http, secrets, kv. WASI is linked with an empty context: no
//! preopened directories, no environment, no arguments, no sockets, stdio to memory.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use pao_core::action::ActionLogger;
use pao_core::secrets::{SecretError as CoreSecretError, SecretProvider};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::pao::action::{http, kv, log, secrets, types};
use crate::config::Effective;
use crate::kv::KvStore;

/// Elements per table: the pooling allocator's default bound, applied without it too, so a
/// plugin cannot grow a table until the host runs out of memory.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 20_000;

/// What every call of one plugin shares.
#[derive(Debug)]
pub(crate) struct PluginShared {
    pub name: String,
    pub effective: Effective,
    pub http: reqwest::Client,
    pub kv: Arc<dyn KvStore>,
}

/// What only an `execute` or `rollback` call has: the request's logger and secrets.
pub(crate) struct CallScope {
    pub log: ActionLogger,
    pub secrets: Arc<dyn SecretProvider>,
    pub deadline: Option<Instant>,
}

/// How much stderr a plugin may write per call (a panic message fits).
const STDERR_CAPACITY: usize = 16 << 10;

/// One call's store data.
pub(crate) struct CallState {
    pub plugin: Arc<PluginShared>,
    pub scope: Option<CallScope>,
    pub limiter: MemoryLimiter,
    pub stderr: MemoryOutputPipe,
    /// Secret names read or referenced during the call (granted ones only).
    pub secrets_used: BTreeSet<String>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl CallState {
    pub fn new(plugin: Arc<PluginShared>, scope: Option<CallScope>) -> CallState {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // The defaults are what we want: no preopens, env or args; TCP/UDP denied for every
        // address; no name lookup. Stdout is discarded, stderr kept for panic messages.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let memory = usize::try_from(plugin.effective.limits.memory_bytes).unwrap_or(usize::MAX);
        CallState {
            limiter: MemoryLimiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory)
                    .instances(16)
                    .memories(4)
                    .tables(16)
                    .table_elements(MAX_TABLE_ELEMENTS)
                    .trap_on_grow_failure(true)
                    .build(),
                hit: false,
            },
            plugin,
            scope,
            stderr,
            secrets_used: BTreeSet::new(),
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// What the plugin wrote to stderr (a Rust panic message lands here).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }

    fn redact(&self, text: &str) -> String {
        match &self.scope {
            Some(s) => s.log.redact(text),
            None => text.to_string(),
        }
    }

    async fn granted_secret(&mut self, name: &str) -> Result<String, CoreSecretError> {
        if !self.plugin.effective.secrets.iter().any(|s| s == name) {
            return Err(CoreSecretError::Denied(name.to_string()));
        }
        let Some(scope) = &self.scope else {
            return Err(CoreSecretError::Denied(format!(
                "{name} (secrets are only available in execute and rollback)"
            )));
        };
        let value = scope.secrets.get(name).await?;
        scope.log.add_secret(&value);
        self.secrets_used.insert(name.to_string());
        Ok(value)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `StoreLimits`, remembering whether the memory cap was hit so the trap can say so.
pub(crate) struct MemoryLimiter {
    inner: StoreLimits,
    pub hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let r = self.inner.memory_growing(current, desired, maximum);
        if !matches!(r, Ok(true)) {
            self.hit = true;
        }
        r
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl types::Host for CallState {}

impl log::Host for CallState {
    async fn log(&mut self, level: log::Level, message: String) {
        let message = self.redact(&message);
        let plugin = self.plugin.name.as_str();
        match level {
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
        if let Some(scope) = &self.scope {
            match level {
                // The request's log stream has no debug level: debug stays in tracing.
                log::Level::Debug => {}
                log::Level::Info => scope.log.info(&message),
                log::Level::Warn => scope.log.warn(&message),
                log::Level::Error => scope.log.error(&message),
            }
        }
    }
}

impl secrets::Host for CallState {
    async fn get(&mut self, name: String) -> Result<String, secrets::SecretError> {
        self.granted_secret(&name).await.map_err(|e| match e {
            CoreSecretError::Denied(n) => secrets::SecretError::Denied(format!(
                "secret `{n}` is not granted to plugin `{}`",
                self.plugin.name
            )),
            CoreSecretError::NotFound(n) => secrets::SecretError::NotFound(n),
            CoreSecretError::Unavailable(m) => secrets::SecretError::Unavailable(m),
        })
    }
}

struct Secrets<'a>(&'a mut CallState);

impl crate::http::SecretSource for Secrets<'_> {
    async fn secret(&mut self, name: &str) -> Result<String, http::HttpError> {
        let plugin = self.0.plugin.name.clone();
        self.0.granted_secret(name).await.map_err(|e| match e {
            CoreSecretError::Denied(n) => {
                http::HttpError::Denied(format!("secret `{n}` is not granted to plugin `{plugin}`"))
            }
            CoreSecretError::NotFound(n) => {
                http::HttpError::InvalidRequest(format!("secret `{n}` does not exist"))
            }
            CoreSecretError::Unavailable(m) => http::HttpError::Transport(m),
        })
    }
}

impl http::Host for CallState {
    async fn send(&mut self, req: http::Request) -> Result<http::Response, http::HttpError> {
        if self.scope.is_none() {
            return Err(http::HttpError::Denied(
                "HTTP is only available in execute and rollback".to_string(),
            ));
        }
        let plugin = self.plugin.clone();
        let mut timeout = plugin.effective.limits.timeout;
        if let Some(deadline) = self.scope.as_ref().and_then(|s| s.deadline) {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        let method = req.method.clone();
        let url = req.url.clone();
        let limits = crate::http::HttpLimits {
            plugin: &plugin.name,
            allow: &plugin.effective.http_hosts,
            max_response_bytes: plugin.effective.limits.max_response_bytes,
            timeout,
        };
        let r = crate::http::send(&plugin.http, req, limits, &mut Secrets(self)).await;
        match &r {
            Ok(resp) => {
                tracing::debug!(plugin = %plugin.name, %method, url = %self.redact(&url), status = resp.status, "plugin http")
            }
            Err(e) => {
                tracing::info!(plugin = %plugin.name, %method, url = %self.redact(&url), error = %self.redact(&format!("{e:?}")), "plugin http failed")
            }
        }
        r
    }
}

impl kv::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<String>, kv::KvError> {
        if !self.plugin.effective.kv {
            return Err(kv::KvError::Denied);
        }
        // The WIT contract has no "unavailable" error: a store that cannot be read says so in
        // `too-large`'s text rather than answering "no value".
        self.plugin
            .kv
            .get(&self.plugin.name, &key)
            .await
            .map_err(kv::KvError::TooLarge)
    }

    async fn set(&mut self, key: String, value: String) -> Result<(), kv::KvError> {
        let p = &self.plugin;
        if !p.effective.kv {
            return Err(kv::KvError::Denied);
        }
        let max = p.effective.limits.max_kv_value_bytes;
        if value.len() as u64 > max {
            return Err(kv::KvError::TooLarge(format!(
                "values are limited to {max} bytes"
            )));
        }
        p.kv.set(&p.name, &key, &value, max.saturating_mul(256))
            .await
            .map_err(kv::KvError::TooLarge)
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::KvError> {
        if !self.plugin.effective.kv {
            return Err(kv::KvError::Denied);
        }
        self.plugin
            .kv
            .delete(&self.plugin.name, &key)
            .await
            .map_err(kv::KvError::TooLarge)
    }
}
