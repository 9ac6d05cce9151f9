//! HTTPS in `pao serve` (`[tls]`): rustls with the certificate chain and private key read
//! from PEM files, re-read when either file changes (a renewed certificate, a Kubernetes
//! `kubernetes.io/tls` secret updated in place) without a restart, and a minimum protocol
//! version. Handshakes run off the accept loop, with a deadline, so a slow client holds up
//! nobody else.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// The `[tls]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Oldest protocol version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// Seconds between checks of the two files for a change (default 10).
    #[serde(default = "default_reload_secs")]
    pub reload_interval_secs: u64,
}

fn default_min_version() -> String {
    "1.2".into()
}

fn default_reload_secs() -> u64 {
    10
}

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the pair: the chain parses, the key parses and matches the certificate.
fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let cert_pem = std::fs::read(cert_file)
        .map_err(|e| format!("tls.cert_file {}: {e}", cert_file.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert_file {}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls.cert_file {}: no PEM certificate in it",
            cert_file.display()
        ));
    }
    let key_pem =
        std::fs::read(key_file).map_err(|e| format!("tls.key_file {}: {e}", key_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "tls.key_file {}: no PEM private key in it ({e})",
            key_file.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!(
            "tls: the key in {} does not go with the certificate in {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })
}

/// When the files last changed, as far as a reload needs to know.
fn stamp(paths: &[&Path]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The certificate handed to every handshake; replaced when the files change.
#[derive(Debug)]
pub struct CertStore {
    config: TlsConfig,
    current: RwLock<Arc<CertifiedKey>>,
    seen: RwLock<Vec<Option<(SystemTime, u64)>>>,
}

impl CertStore {
    /// Loads the pair; an error names the file and what is wrong with it.
    pub fn open(config: &TlsConfig) -> Result<Arc<CertStore>, String> {
        let seen = stamp(&[&config.cert_file, &config.key_file]);
        let key = load(&config.cert_file, &config.key_file)?;
        Ok(Arc::new(CertStore {
            config: config.clone(),
            current: RwLock::new(Arc::new(key)),
            seen: RwLock::new(seen),
        }))
    }

    /// Re-reads the pair when either file changed. `Ok(true)`: the new pair is in use;
    /// an error keeps the pair in use (a half-written renewal is picked up at a later check).
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamp(&[&self.config.cert_file, &self.config.key_file]);
        if self.seen.read().map(|s| *s == now).unwrap_or(false) {
            return Ok(false);
        }
        let key = load(&self.config.cert_file, &self.config.key_file)?;
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(key);
        }
        if let Ok(mut s) = self.seen.write() {
            *s = now;
        }
        Ok(true)
    }

    /// The end-entity certificate in use (DER).
    pub fn current_certificate(&self) -> Option<Vec<u8>> {
        let c = self.current.read().ok()?;
        c.cert.first().map(|c| c.as_ref().to_vec())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// The rustls server configuration: the certificate store and the protocol versions.
pub fn server_config(
    config: &TlsConfig,
    certs: Arc<CertStore>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match config.min_version.as_str() {
        "1.2" => &[&rustls::version::TLS13, &rustls::version::TLS12],
        "1.3" => &[&rustls::version::TLS13],
        other => {
            return Err(format!(
                "tls.min_version = {other:?}: use \"1.2\" or \"1.3\""
            ));
        }
    };
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// Checks the files every `reload_interval_secs` until `stop`, logging each change.
pub async fn watch(certs: Arc<CertStore>, stop: tokio_util::sync::CancellationToken) {
    let every = Duration::from_secs(certs.config.reload_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => match certs.reload_if_changed() {
                Ok(true) => tracing::info!(
                    cert_file = %certs.config.cert_file.display(),
                    "tls: certificate reloaded"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "tls: keeping the certificate in use"),
            },
        }
    }
}

/// A listener whose connections arrive with their TLS handshake done: an accept loop hands
/// each TCP connection to a task of its own for the handshake, and finished ones queue here.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    /// Starts the accept loop on `tcp`; it ends when this listener is dropped.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let accepted = tokio::select! {
                    _ = tx.closed() => return,
                    a = tcp.accept() => a,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum's loop does.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop only ends with this listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
