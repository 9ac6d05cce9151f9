//! The server's shared state and how it is assembled from the configuration: store, catalog,
//! action registry, orchestrator, authentication, live events and metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use pao_core::action::ActionRegistry;
use pao_core::catalog::{Catalog, LoadOptions};
use pao_core::engine::{EngineConfig, Orchestrator};
use pao_core::events::{EventSink, LiveEvent};
use pao_core::secrets::SecretProvider;
use pao_core::store::Store;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// Everything a handler can reach: one shared [`AppStateInner`]. Cloning it (axum does for
/// every extractor and middleware that takes the state) is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct AppStateInner {
    /// The engine.
    pub orch: Arc<Orchestrator>,
    /// The store the engine uses.
    pub store: Arc<dyn Store>,
    /// Who is calling.
    pub auth: Arc<Authenticator>,
    /// Live events of this process.
    pub events: broadcast::Sender<LiveEvent>,
    /// Catalog change announcements.
    pub catalog_changes: broadcast::Sender<Value>,
    /// Where the catalog comes from and how it is loaded.
    pub catalog_dir: Arc<PathBuf>,
    /// Loader options (action types, plugin schemas).
    pub load_options: Arc<LoadOptions>,
    /// Serializes catalog reloads.
    pub reload_lock: Arc<tokio::sync::Mutex<()>>,
    /// Prometheus.
    pub metrics: Metrics,
    /// Secrets of the inbound webhooks and the server.
    pub secrets: Arc<dyn SecretProvider>,
    /// The configuration.
    pub config: Arc<ServerConfig>,
    /// When the server started.
    pub started: Instant,
    /// Per-principal rate limiter.
    pub limiter: Arc<crate::limits::PrincipalLimiter>,
    /// Per-address rate limiter of callers without a valid credential.
    pub anonymous_limiter: Arc<crate::limits::PrincipalLimiter>,
    /// Open WebSocket streams.
    pub sockets: Arc<crate::limits::SocketSlots>,
    /// Queue depth for `/metrics`, recounted at most every few seconds.
    pub queue_depth: Arc<tokio::sync::Mutex<Option<(Instant, f64)>>>,
    /// Ended requests served from memory by `GET /requests/{id}/status`.
    pub finished: Arc<crate::finished::FinishedRequests>,
    /// Outbound HTTP (dynamic field options).
    pub http: reqwest::Client,
    /// The `env` scope templates see.
    pub env: Arc<Map<String, Value>>,
    /// Catalog search index.
    pub search: crate::search::CatalogSearch,
    /// Wake-ups of the streams following a request.
    pub wakes: Arc<crate::wakes::Wakes>,
    /// Whether the store announces other replicas' events (else streams poll every 500 ms).
    pub cross_replica_wakeups: bool,
    /// The catalog's answers, serialized once per catalog.
    pub rendered: crate::rendered::RenderedCatalog,
    /// Webhook deliveries seen recently.
    pub replay: Arc<crate::api::webhooks::ReplayGuard>,
    /// Notices for `/ws/notifications` (inbound webhooks).
    pub notifications: broadcast::Sender<Value>,
    /// Handles of the built-in actions (the cost action's price table), when registered here.
    pub builtins: Option<pao_actions::Builtins>,
    /// The WASM plugin host, when plugins were loaded.
    pub plugins: Option<pao_wasm_host::PluginHost>,
    /// Set when a shutdown began: readiness fails from then on.
    pub draining: std::sync::atomic::AtomicBool,
}

/// The event sink the orchestrator publishes to: a broadcast channel for WebSockets plus
/// metrics.
pub struct ServerSink {
    tx: broadcast::Sender<LiveEvent>,
    metrics: Metrics,
    wakes: Arc<crate::wakes::Wakes>,
}

impl EventSink for ServerSink {
    fn publish(&self, event: LiveEvent) {
        self.metrics.observe_event(&event.kind);
        self.wakes.wake(&event.request_id);
        let _ = self.tx.send(event);
    }
}

/// Things an embedder or a test may replace when assembling a server.
#[derive(Default)]
pub struct Overrides {
    /// The action types (default: the built-ins configured from the config file).
    pub actions: Option<ActionRegistry>,
    /// The store (default: opened from `database_url`).
    pub store: Option<Arc<dyn Store>>,
    /// The secret provider (default: `[secrets]` of the config file).
    pub secrets: Option<Arc<dyn SecretProvider>>,
    /// Extra API tokens (token, principal).
    pub tokens: Vec<(String, pao_core::authz::Principal)>,
    /// The engine's clock (default: the system clock).
    pub clock: Option<Arc<dyn pao_core::clock::Clock>>,
    /// With `actions`: the built-ins' handles (the `cost` action's price table) that catalog
    /// loads and reloads keep up to date.
    pub builtins: Option<pao_actions::Builtins>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database {url}: {message}")]
    Database {
        /// URL without password.
        url: String,
        /// Cause.
        message: String,
    },
    /// A plugin could not be loaded.
    #[error("plugins: {0}")]
    Plugins(String),
    /// The actions configuration is invalid.
    #[error("actions configuration: {0}")]
    Actions(String),
    /// The configuration is unsafe or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The catalog folder could not be read.
    #[error("catalog folder {dir}: {source}")]
    Catalog {
        /// Folder.
        dir: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl AppState {
    /// Opens the store, loads the catalog and builds the orchestrator.
    pub async fn build(config: ServerConfig, over: Overrides) -> Result<AppState, StartError> {
        // reqwest is built without a TLS provider of its own; ring is ours (an embedder that
        // installed another one keeps it).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Metrics::install();
        let store: Arc<dyn Store> = match over.store {
            Some(s) => s,
            None => Arc::new(open_store(&config).await?),
        };
        let (actions, builtins, plugins) = match over.actions {
            Some(a) => (a, over.builtins.clone(), None),
            None => {
                let mut registry = ActionRegistry::new();
                let b = pao_actions::register_builtins(&mut registry, &config.actions, None)
                    .map_err(|e| StartError::Actions(e.to_string()))?;
                let host = load_plugins(&config, &mut registry, store.clone()).await?;
                (registry, Some(b), host)
            }
        };
        let mut load_options = actions.load_options();
        load_options.reserved_secrets = config.reserved_secrets();
        // Parsing a large catalog is CPU work: keep it off the async workers.
        let (dir, options) = (config.catalog.clone(), load_options.clone());
        let catalog = tokio::task::spawn_blocking(move || Catalog::load(&dir, &options))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| StartError::Catalog {
                dir: config.catalog.clone(),
                source,
            })?;
        if let Some(b) = &builtins {
            b.update_prices(catalog.settings());
        }
        let secrets: Arc<dyn SecretProvider> = match over.secrets {
            Some(s) => s,
            None => config
                .secret_provider
                .build(&config.secrets)
                .map_err(StartError::Config)?,
        };
        let (tx, changes) = (broadcast::channel(4096).0, broadcast::channel(256).0);
        let wakes = Arc::new(crate::wakes::Wakes::default());
        let cross_replica = spawn_cross_replica_wakes(store.as_ref(), &wakes);
        let sink = Arc::new(ServerSink {
            tx: tx.clone(),
            metrics: metrics.clone(),
            wakes: wakes.clone(),
        });
        let mut env = Map::new();
        for (k, v) in &config.env {
            let value = v.clone().or_else(|| std::env::var(k).ok());
            if let Some(value) = value {
                env.insert(k.clone(), Value::String(value));
            }
        }
        if !(3..=3600).contains(&config.lease_secs) {
            return Err(StartError::Config(format!(
                "lease_secs = {}: must be between 3 and 3600",
                config.lease_secs
            )));
        }
        if config.breakers.failure_threshold == 0 || config.breakers.open_secs == 0 {
            return Err(StartError::Config(
                "breakers: failure_threshold and open_secs must be at least 1".into(),
            ));
        }
        let engine_config = EngineConfig {
            lease: std::time::Duration::from_secs(config.lease_secs),
            breakers: pao_core::engine::BreakerConfig {
                failure_threshold: config.breakers.failure_threshold,
                open_for: std::time::Duration::from_secs(config.breakers.open_secs),
            },
            instance: hostname(),
            base_url: config
                .base_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.bind)),
            env: env.clone(),
            ..EngineConfig::default()
        };
        let keyring = keyring(&config, secrets.as_ref()).await?;
        let mut builder = Orchestrator::builder(catalog, store.clone());
        if let Some(clock) = over.clock.clone() {
            builder = builder.clock(clock);
        }
        let orch = builder
            .actions(actions)
            .keyring(keyring)
            .secrets(secrets.clone())
            .events(sink)
            .config(engine_config)
            .load_options(Arc::new(load_options.clone()))
            .build();
        crate::auth::check_config(&config.auth, &config.bind).map_err(StartError::Config)?;
        check_webhook_secrets(&config, secrets.as_ref()).await?;
        let mut auth = Authenticator::new(&config.auth).map_err(StartError::Config)?;
        for (token, p) in over.tokens {
            auth.add_token(&token, p);
        }
        let limiter = Arc::new(crate::limits::PrincipalLimiter::new(
            config.limits.rate_per_second,
            config.limits.rate_burst,
        ));
        let anonymous_limiter = Arc::new(crate::limits::PrincipalLimiter::new(
            config.limits.anonymous_rate_per_second,
            config.limits.anonymous_rate_burst,
        ));
        let sockets = Arc::new(crate::limits::SocketSlots::new(
            config.limits.websockets_per_principal,
            config.limits.websockets_total,
        ));
        let finished = Arc::new(crate::finished::FinishedRequests::new(
            config.finished_cache_entries,
            std::time::Duration::from_secs(config.finished_cache_secs),
        ));
        Ok(AppState(Arc::new(AppStateInner {
            orch,
            store,
            auth: Arc::new(auth),
            events: tx,
            catalog_changes: changes,
            catalog_dir: Arc::new(config.catalog.clone()),
            load_options: Arc::new(load_options),
            reload_lock: Arc::default(),
            metrics,
            secrets,
            config: Arc::new(config),
            started: Instant::now(),
            limiter,
            anonymous_limiter,
            sockets,
            queue_depth: Arc::default(),
            finished,
            http: reqwest::Client::builder()
                .redirect(crate::options::redirect_policy())
                .build()
                .unwrap_or_default(),
            env: Arc::new(env),
            search: crate::search::CatalogSearch::new(),
            wakes,
            cross_replica_wakeups: cross_replica,
            rendered: crate::rendered::RenderedCatalog::default(),
            replay: Arc::default(),
            notifications: broadcast::channel(256).0,
            builtins,
            plugins,
            draining: std::sync::atomic::AtomicBool::new(false),
        })))
    }

    /// The `env` scope.
    pub fn orch_env(&self) -> Map<String, Value> {
        (*self.env).clone()
    }

    /// Reloads the catalog folder. Broken items keep their last good version; returns what
    /// changed (`added`, `changed`, `removed` item ids) and announces it on
    /// `/ws/catalog/changes` when anything did.
    pub async fn reload_catalog(&self) -> Result<Value, std::io::Error> {
        let _guard = self.reload_lock.lock().await;
        let old = self.orch.catalog();
        let dir = self.catalog_dir.clone();
        let opts = self.load_options.clone();
        let old2 = old.clone();
        let new = tokio::task::spawn_blocking(move || old2.reload(&dir, &opts))
            .await
            .map_err(std::io::Error::other)??;
        let before = old.fingerprint();
        let after = new.fingerprint();
        let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        let changed: Vec<&String> = after
            .iter()
            .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
            .map(|(k, _)| k)
            .collect();
        let summary = serde_json::json!({
            "added": added,
            "changed": changed,
            "removed": removed,
            "items": new.len(),
            "errors": new.diagnostics().iter().filter(|d| d.is_error()).count(),
        });
        let any = !(added.is_empty() && removed.is_empty() && changed.is_empty());
        if let Some(b) = &self.builtins {
            b.update_prices(new.settings());
        }
        self.orch.set_catalog(new);
        if any {
            let _ = self.catalog_changes.send(summary.clone());
        }
        Ok(summary)
    }
}

/// Inbound webhook keys must be long enough to be keys: an empty one would accept an empty
/// signature, a short one can be guessed.
/// The KEKs of `[sealing]`, read from the secret provider.
async fn keyring(
    config: &ServerConfig,
    secrets: &dyn SecretProvider,
) -> Result<pao_core::sealing::Keyring, StartError> {
    use pao_core::sealing::{Kek, Keyring};
    let read = async |name: &str| -> Result<Kek, StartError> {
        let text = secrets.get(name).await.map_err(|e| {
            StartError::Config(format!("sealing: key-encryption key `{name}`: {e}"))
        })?;
        Kek::parse(&text).map_err(|e| StartError::Config(format!("sealing: secret `{name}`: {e}")))
    };
    let Some(current) = &config.sealing.kek else {
        tracing::warn!(
            "no [sealing] kek configured: secret form fields and rollback inputs are sealed with a key of this process only; they are lost on restart and other replicas cannot run such requests (see docs/secrets.md)"
        );
        return Ok(Keyring::ephemeral());
    };
    let mut ring = Keyring::new(read(current).await?);
    for name in &config.sealing.previous_keks {
        ring = ring.with_previous(read(name).await?);
    }
    tracing::info!(
        current = ring.current_id(),
        keys = ring.ids().len(),
        "sealing keys loaded"
    );
    Ok(ring)
}

async fn check_webhook_secrets(
    config: &ServerConfig,
    secrets: &dyn SecretProvider,
) -> Result<(), StartError> {
    const MIN: usize = 16;
    let w = &config.webhooks;
    for (hook, name) in [
        ("github_secret", &w.github_secret),
        ("jira_secret", &w.jira_secret),
        ("terraform_secret", &w.terraform_secret),
        ("approval_secret", &w.approval_secret),
    ] {
        let Some(name) = name else { continue };
        match secrets.get(name).await {
            Ok(v) if v.len() < MIN => {
                return Err(StartError::Config(format!(
                    "webhooks.{hook}: secret `{name}` has {} bytes; inbound webhook keys need at least {MIN}",
                    v.len()
                )));
            }
            Ok(_) => {}
            // Not there yet (a provider filled later): checked again at each delivery.
            Err(e) => {
                tracing::warn!(hook, secret = %name, error = %e, "webhook secret not readable at start")
            }
        }
    }
    Ok(())
}

/// Loads the plugin folder, if one is configured, into `registry`.
async fn load_plugins(
    config: &ServerConfig,
    registry: &mut ActionRegistry,
    store: Arc<dyn Store>,
) -> Result<Option<pao_wasm_host::PluginHost>, StartError> {
    let Some(dir) = &config.plugins.dir else {
        return Ok(None);
    };
    // The server's own secrets are for the server: not for plugins either.
    let reserved = config.reserved_secrets();
    for (plugin, grant) in &config.plugins.grants {
        if let Some(name) = grant.secrets.iter().find(|n| reserved.contains(*n)) {
            return Err(StartError::Config(format!(
                "plugins.grants.{plugin}.secrets: `{name}` is reserved for the server (an inbound webhook key or a key-encryption key); give the plugin its own secret"
            )));
        }
    }
    // Plugin key-value data lives in the database: it survives restarts and replicas share it.
    let kv = Arc::new(StoreKv { store });
    let host = pao_wasm_host::PluginHost::with_kv(
        pao_wasm_host::HostConfig {
            // Compiling a plugin takes seconds; the cache makes later starts instant.
            cache_dir: Some(
                config
                    .plugins
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("data/plugin-cache")),
            ),
            ..pao_wasm_host::HostConfig::default()
        },
        kv,
    )
    .map_err(|e| StartError::Plugins(e.to_string()))?;
    let grants = pao_wasm_host::Grants {
        plugins: config.plugins.grants.clone(),
    };
    for action in host
        .load_dir(dir, &grants)
        .await
        .map_err(|e| StartError::Plugins(e.to_string()))?
    {
        tracing::info!(plugin = %action.describe().type_name, "plugin loaded");
        registry.register(action);
    }
    Ok(Some(host))
}

async fn open_store(config: &ServerConfig) -> Result<pao_store::SqlStore, StartError> {
    let url = &config.database_url;
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(parent);
        }
    }
    pao_store::SqlStore::open_with(url, config.database_pool)
        .await
        .map_err(|e| StartError::Database {
            url: redact_url(url),
            message: e.to_string(),
        })
}

/// A database URL without its password (in the user-info part or as a `password=` query
/// parameter).
pub fn redact_url(url: &str) -> String {
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    };
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}");
    }
    out
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pao".to_string())
}

/// The plugins' key-value data in the server's store: it survives restarts and every
/// replica sees it.
pub struct StoreKv {
    store: Arc<dyn Store>,
}

impl StoreKv {
    /// Keeps plugin key-value data in `store`.
    pub fn new(store: Arc<dyn Store>) -> StoreKv {
        StoreKv { store }
    }
}

impl std::fmt::Debug for StoreKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKv")
    }
}

#[async_trait::async_trait]
impl pao_wasm_host::KvStore for StoreKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, String> {
        self.store
            .kv_get(namespace, key)
            .await
            .map_err(|e| format!("key-value store unavailable: {e}"))
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        max_namespace_bytes: u64,
    ) -> Result<(), String> {
        match self
            .store
            .kv_set(namespace, key, value, max_namespace_bytes)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "namespace `{namespace}` would exceed {max_namespace_bytes} bytes"
            )),
            Err(e) => Err(format!("key-value store unavailable: {e}")),
        }
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        self.store
            .kv_delete(namespace, key)
            .await
            .map_err(|e| format!("key-value store unavailable: {e}"))
    }
}

/// Passes the store's announcements of other replicas' events to this one's streams; whether
/// the store makes any.
fn spawn_cross_replica_wakes(store: &dyn Store, wakes: &Arc<crate::wakes::Wakes>) -> bool {
    let Some(mut rx) = store.event_wakeups() else {
        return false;
    };
    let wakes = wakes.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(id) => wakes.wake(&id),
                Err(broadcast::error::RecvError::Lagged(_)) => wakes.wake(""),
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_url_hides_passwords() {
        use super::redact_url;
        assert_eq!(
            redact_url("postgres://u:secret@db/pao"),
            "postgres://u:***@db/pao"
        );
        assert_eq!(
            redact_url("postgres://db/pao?user=u&password=secret&sslmode=require"),
            "postgres://db/pao?user=u&password=***&sslmode=require"
        );
    }
}
