//! HTTPS in `pao serve`: the real binary with `[tls]` serves the API over TLS with the
//! certificate from its files, picks up a renewed certificate without a restart, refuses
//! clients below `min_version`, and refuses to start on a key that does not go with the
//! certificate, naming the file.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM, DER).
fn self_signed(name: &str) -> (String, String, Vec<u8>) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn client(
    trust: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(trust.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET /api/v1/health` over TLS trusting only `trust`: the status line and the certificate
/// the server presented, or the handshake error.
async fn get_health(
    addr: &str,
    trust: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(String, Vec<u8>), String> {
    get_health_version(addr, trust, versions)
        .await
        .map(|(status, cert, _)| (status, cert))
}

/// As [`get_health`], with the protocol version the handshake settled on.
async fn get_health_version(
    addr: &str,
    trust: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(String, Vec<u8>, rustls::ProtocolVersion), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = client(trust, versions)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let version = tls.get_ref().1.protocol_version().unwrap();
    tls.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    let text = String::from_utf8_lossy(&reply);
    Ok((
        text.lines().next().unwrap_or_default().to_string(),
        presented,
        version,
    ))
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("tls.key"), key).unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
}

fn config(dir: &Path, min_version: &str) {
    std::fs::write(
        dir.join("pao.toml"),
        format!(
            r#"bind = "127.0.0.1:0"
database_url = "sqlite://{db}"
catalog = "{catalog}"
workers = 0

[tls]
cert_file = "tls.crt"
key_file = "tls.key"
min_version = "{min_version}"
reload_interval_secs = 1
"#,
            db = dir.join("pao.db").display(),
            catalog = dir.join("catalog").display(),
        ),
    )
    .unwrap();
}

fn args() -> Vec<&'static std::ffi::OsStr> {
    ["serve", "--config", "pao.toml"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect()
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pao-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("catalog")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_and_picks_up_a_renewed_certificate() {
    let dir = temp("renew");
    let (cert1, key1, der1) = self_signed("first");
    write_pair(&dir, &cert1, &key1);
    config(&dir, "1.2");
    let p = support::spawn_pao(&args(), &dir, Duration::from_secs(60));
    let addr = p
        .base
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("announces https: {}", p.base))
        .to_string();
    let all = rustls::ALL_VERSIONS;
    let (status, presented, version) = get_health_version(&addr, &der1, all).await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(presented, der1);
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    // Plain HTTP to the TLS port gets no HTTP answer: the connection is refused in the
    // handshake.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut reply)).await;
    assert!(
        !String::from_utf8_lossy(&reply).contains("HTTP/1.1"),
        "plain HTTP was answered: {reply:?}"
    );
    // TLS 1.2 clients are still welcome at min_version 1.2.
    let (status, _) = get_health(&addr, &der1, &[&rustls::version::TLS12])
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");

    // The certificate is renewed in place: new connections get it, with no restart.
    let (cert2, key2, der2) = self_signed("second");
    write_pair(&dir, &cert2, &key2);
    let mut renewed = false;
    for _ in 0..100 {
        if let Ok((status, presented)) = get_health(&addr, &der2, all).await {
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(presented, der2);
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the renewed certificate was never presented");

    // A broken renewal (a key of another certificate) keeps the working pair in use.
    let (_, key3, _) = self_signed("third");
    std::fs::write(dir.join("tls.key"), key3).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, presented) = get_health(&addr, &der2, all).await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(presented, der2);
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_tls_1_2_clients() {
    let dir = temp("min");
    let (cert, key, der) = self_signed("only");
    write_pair(&dir, &cert, &key);
    config(&dir, "1.3");
    let p = support::spawn_pao(&args(), &dir, Duration::from_secs(60));
    let addr = p.base.strip_prefix("https://").unwrap().to_string();
    let (status, _) = get_health(&addr, &der, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let refused = get_health(&addr, &der, &[&rustls::version::TLS12]).await;
    assert!(refused.is_err(), "a TLS 1.2 client got in: {refused:?}");
    drop(p);
}

#[test]
fn a_key_that_does_not_match_or_a_bad_version_stops_the_start() {
    let dir = temp("bad");
    let (cert, _, _) = self_signed("cert");
    let (_, other_key, _) = self_signed("other");
    write_pair(&dir, &cert, &other_key);
    config(&dir, "1.2");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pao"))
            .args(args())
            .current_dir(&dir)
            .env_remove("PAO_DATABASE_URL")
            .env_remove("PAO_CONFIG")
            .env_remove("PAO_BIND")
            .output()
            .unwrap()
    };
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("tls.key") && err.contains("does not go with the certificate"),
        "{err}"
    );
    let (cert, key, _) = self_signed("cert");
    write_pair(&dir, &cert, &key);
    config(&dir, "1.1");
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("tls.min_version = \"1.1\""), "{err}");
    std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
    config(&dir, "1.2");
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("tls.cert_file") && err.contains("tls.crt"),
        "{err}"
    );
}
