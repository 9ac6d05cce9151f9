//! The WebAssembly plugin host for PAO.
//!
//! Third-party actions are WebAssembly components built against the `pao:action` WIT contract
//! (`pao-plugins-sdk/wit/action.wit`, the one source of truth shared with the SDK). This
//! crate loads them from a folder, adapts each to `pao-core`'s [`Action`] trait as
//! `plugin:<name>`, and runs every call sandboxed:
//!
//! - one wasmtime `Engine` per [`PluginHost`], components compiled once and cached on disk
//!   (keyed by content hash and engine compatibility), an `InstancePre` per plugin and a fresh
//!   `Store` per call;
//! - a memory cap (`StoreLimits`), a wall-clock timeout (epoch interruption plus an outer
//!   timeout), optional fuel; traps become [`PluginError`]s naming the plugin;
//! - HTTP only to granted hosts, checked on every redirect, with a response size cap; secrets
//!   only by granted name, and header values that reference secrets filled in host side; WASI
//!   linked with an empty context (no files, environment, arguments or sockets);
//! - logs to `tracing` and the request's redacting [`pao_core::action::ActionLogger`].
//!
//! A plugin folder holds `<name>.wasm` and its manifest `<name>.toml` ([`Manifest`]); the
//! operator's [`Grants`] say what each plugin may reach.
//!
//! ```no_run
//! # async fn run() -> Result<(), pao_wasm_host::LoadError> {
//! use pao_wasm_host::{Grant, Grants, HostConfig, PluginHost};
//!
//! let host = PluginHost::new(HostConfig {
//!     cache_dir: Some("/var/cache/pao/plugins".into()),
//!     ..HostConfig::default()
//! })?;
//! let grants = Grants::new().with(
//!     "slack-notify",
//!     Grant::default().http_hosts(["slack.com"]).secrets(["slack_bot_token"]),
//! );
//! let mut registry = pao_core::action::ActionRegistry::new();
//! for action in host.load_dir("plugins".as_ref(), &grants).await? {
//!     registry.register(action);
//! }
//! # Ok(()) }
//! ```

pub mod bindings;
mod compile;
pub mod config;
mod error;
mod http;
pub mod kv;
mod plugin;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pao_core::action::{Action, ActionDescriptor};
use wasmtime::component::Linker;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use config::{Capabilities, Effective, Grant, Grants, HostConfig, Limits, Manifest};
pub use error::{LoadError, PluginError, PluginErrorKind};
pub use kv::{KvStore, MemoryKv};
pub use pao_core;
pub use plugin::WasmAction;

use crate::state::{CallState, PluginShared};

/// Catalog items name a plugin action as `plugin:<name>`.
pub const PLUGIN_TYPE_PREFIX: &str = "plugin:";

/// The `pao:action` versions this host runs (semver requirement).
pub const SUPPORTED_CONTRACT: &str = ">=0.1.0, <0.2.0";

/// How often the epoch advances: the granularity of plugin timeouts.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Loads and runs plugins. One per process: it owns the wasmtime `Engine`.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<CallState>,
    config: HostConfig,
    kv: Arc<dyn KvStore>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Starts the engine (and its epoch ticker thread) with an in-memory key-value store.
    pub fn new(config: HostConfig) -> Result<PluginHost, LoadError> {
        PluginHost::with_kv(config, Arc::new(MemoryKv::default()))
    }

    /// Starts the engine with the given key-value store for plugins.
    pub fn with_kv(config: HostConfig, kv: Arc<dyn KvStore>) -> Result<PluginHost, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let mut c = wasmtime::Config::new();
        c.wasm_component_model(true);
        c.epoch_interruption(true);
        c.consume_fuel(config.fuel);
        if config.pooling {
            let n = config.max_concurrent_instances.max(1);
            let mut p = PoolingAllocationConfig::default();
            // A Rust wasm32-wasip2 component has a handful of core instances and tables and
            // one or two memories.
            p.total_component_instances(n)
                .total_core_instances(n * 8)
                .total_memories(n * 2)
                .total_tables(n * 8)
                .total_stacks(n)
                .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX));
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        }
        let engine = Engine::new(&c).map_err(engine_err)?;
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(engine_err)?;
        // reqwest is built without a TLS provider; ring is ours unless the embedder installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Each plugin gets its own client (its grant decides which addresses it may reach);
        // this one checks at start that a client can be built at all.
        http::client(&[]).map_err(LoadError::Engine)?;
        start_epoch_ticker(&engine);
        Ok(PluginHost {
            inner: Arc::new(HostInner {
                engine,
                linker,
                config,
                kv,
            }),
        })
    }

    /// The engine (for tools that precompile).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Loads every `<name>.wasm` of `dir` with its `<name>.toml` manifest, in name order, as
    /// `plugin:<name>` actions ready for [`pao_core::action::ActionRegistry::register`].
    /// Fails on the first plugin that cannot load: a deployment does not start half-equipped.
    pub async fn load_dir(
        &self,
        dir: &Path,
        grants: &Grants,
    ) -> Result<Vec<Arc<dyn Action>>, LoadError> {
        let io = |source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut wasm: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        wasm.sort();
        let mut out: Vec<Arc<dyn Action>> = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for path in wasm {
            let plugin = self.load_file(&path, grants).await?;
            if !names.insert(plugin.name().to_string()) {
                return Err(LoadError::Duplicate(plugin.name().to_string()));
            }
            out.push(plugin);
        }
        Ok(out)
    }

    /// Loads one `<name>.wasm` with the manifest next to it.
    pub async fn load_file(
        &self,
        wasm: &Path,
        grants: &Grants,
    ) -> Result<Arc<WasmAction>, LoadError> {
        let manifest_path = wasm.with_extension("toml");
        let text = match std::fs::read_to_string(&manifest_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::MissingManifest {
                    wasm: wasm.to_path_buf(),
                    manifest: manifest_path,
                });
            }
            Err(source) => {
                return Err(LoadError::Io {
                    path: manifest_path,
                    source,
                });
            }
        };
        let manifest: Manifest = toml::from_str(&text).map_err(|e| LoadError::Manifest {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        let bytes = std::fs::read(wasm).map_err(|source| LoadError::Io {
            path: wasm.to_path_buf(),
            source,
        })?;
        let grant = grants
            .plugins
            .get(&manifest.name)
            .cloned()
            .unwrap_or_default();
        if !grants.plugins.contains_key(&manifest.name) {
            tracing::warn!(plugin = %manifest.name, "no grant for this plugin: it runs without HTTP, secrets or kv");
        }
        self.load_bytes(wasm, &bytes, manifest, &grant).await
    }

    /// Loads a plugin from bytes; `path` only names it in errors.
    pub async fn load_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
        manifest: Manifest,
        grant: &Grant,
    ) -> Result<Arc<WasmAction>, LoadError> {
        let inner = &self.inner;
        let component = compile::compile(
            &inner.engine,
            inner.config.cache_dir.as_deref(),
            path,
            bytes,
        )?;
        check_contract(&inner.engine, &component, path)?;
        let link = |e: wasmtime::Error| LoadError::Link {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let pre = inner.linker.instantiate_pre(&component).map_err(link)?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| LoadError::Invalid {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })?;
        let effective = Effective::resolve(&inner.config, &manifest, grant);
        let client = http::client(&effective.http_hosts).map_err(LoadError::Engine)?;
        let shared = Arc::new(PluginShared {
            name: manifest.name.clone(),
            effective,
            http: client,
            kv: inner.kv.clone(),
        });
        let mut plugin = WasmAction {
            shared,
            pre,
            descriptor: ActionDescriptor {
                type_name: format!("{PLUGIN_TYPE_PREFIX}{}", manifest.name),
                config_schema: serde_json::Value::Null,
                output_schema: serde_json::Value::Null,
                supports_rollback: false,
                sample_output: serde_json::Value::Null,
            },
            version: manifest.version.clone(),
            path: path.to_path_buf(),
            fuel_enabled: inner.config.fuel,
        };
        let describe_err = |message: String| LoadError::Describe {
            path: path.to_path_buf(),
            message,
        };
        let d = plugin
            .call(None, None, async |g, s| g.call_describe(s).await)
            .await
            .map_err(|e| describe_err(e.to_string()))?;
        if d.name != manifest.name {
            return Err(describe_err(format!(
                "the plugin calls itself `{}` but its manifest says `{}`",
                d.name, manifest.name
            )));
        }
        let version_ok = semver::VersionReq::parse(SUPPORTED_CONTRACT)
            .ok()
            .zip(semver::Version::parse(&d.contract_version).ok())
            .is_some_and(|(req, v)| req.matches(&v));
        if !version_ok {
            return Err(LoadError::ContractVersion {
                path: path.to_path_buf(),
                found: d.contract_version,
                supported: SUPPORTED_CONTRACT.to_string(),
            });
        }
        let json = |what: &str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| describe_err(format!("{what} is not JSON: {e}")))
        };
        plugin.descriptor.config_schema = json("input schema", &d.input_schema)?;
        if let Err(e) = jsonschema::validator_for(&plugin.descriptor.config_schema) {
            return Err(describe_err(format!(
                "input schema is not a JSON Schema: {e}"
            )));
        }
        plugin.descriptor.output_schema = json("output schema", &d.output_schema)?;
        plugin.descriptor.sample_output = json("sample output", &d.sample_output)?;
        plugin.descriptor.supports_rollback = d.supports_rollback;
        plugin.version = d.version;
        let granted = &plugin.shared.effective;
        let asked = &manifest.capabilities;
        for h in asked
            .http_hosts
            .iter()
            .filter(|h| !granted.http_hosts.contains(h))
        {
            tracing::warn!(plugin = %manifest.name, host = %h, "requested host not granted: calls to it will be denied");
        }
        for s in asked
            .secrets
            .iter()
            .filter(|s| !granted.secrets.contains(s))
        {
            tracing::warn!(plugin = %manifest.name, secret = %s, "requested secret not granted: reads of it will be denied");
        }
        for s in granted
            .secrets
            .iter()
            .filter(|s| !asked.secrets.contains(s))
        {
            tracing::warn!(plugin = %manifest.name, secret = %s, "secret granted but not requested by the manifest");
        }
        tracing::info!(plugin = %manifest.name, version = %plugin.version, "plugin loaded");
        Ok(Arc::new(plugin))
    }
}

/// Refuses components whose exported `pao:action/action` version is out of range, before
/// anything runs.
fn check_contract(
    engine: &Engine,
    component: &wasmtime::component::Component,
    path: &Path,
) -> Result<(), LoadError> {
    let ty = component.component_type();
    let export = ty
        .exports(engine)
        .map(|(name, _)| name)
        .find_map(|name| name.strip_prefix("pao:action/action@"))
        .map(str::to_string);
    let Some(found) = export else {
        return Err(LoadError::NotAPlugin(path.to_path_buf()));
    };
    let ok = semver::VersionReq::parse(SUPPORTED_CONTRACT)
        .ok()
        .zip(semver::Version::parse(&found).ok())
        .is_some_and(|(req, v)| req.matches(&v));
    if ok {
        Ok(())
    } else {
        Err(LoadError::ContractVersion {
            path: path.to_path_buf(),
            found,
            supported: SUPPORTED_CONTRACT.to_string(),
        })
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("pao-wasm-epoch".to_string())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the plugin epoch ticker: plugin timeouts rely on the outer timeout only");
    }
}
