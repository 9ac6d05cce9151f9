//! Authentication modes: API tokens, OIDC JWTs checked against a JWKS the test serves on
//! 127.0.0.1 with keys it generates, and trusted gateway headers.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pao_server::config::{OidcConfig, TrustedHeaderConfig};
use serde_json::{Value, json};

struct Issuer {
    der: Vec<u8>,
    kid: String,
}

fn generate(kid: &str) -> (Issuer, Value) {
    // A fresh Ed25519 key: 32 random bytes (two v4 UUIDs) as the seed.
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();
    // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410).
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(&seed);
    let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": URL_SAFE_NO_PAD.encode(public) });
    (
        Issuer {
            der,
            kid: kid.into(),
        },
        jwk,
    )
}

fn token(iss: &Issuer, claims: Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(iss.kid.clone());
    jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ed_der(&iss.der)).unwrap()
}

fn claims(iss: &str, aud: &str, exp_in: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": iss, "aud": aud, "sub": "u-123", "preferred_username": "dana",
        "email": "dana@example.com", "groups": ["app-team"], "roles": ["developer"],
        "iat": now, "exp": now + exp_in,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_jwts_are_verified_against_the_issuers_jwks() {
    let (issuer, jwk) = generate("k1");
    let fetches = Arc::new(AtomicUsize::new(0));
    let f2 = fetches.clone();
    let jwks = json!({ "keys": [jwk] });
    let router = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            let f2 = f2.clone();
            async move {
                f2.fetch_add(1, Ordering::SeqCst);
                axum::Json(jwks)
            }
        }),
    );
    let idp = pao_sandbox::FakeServer::start(router).await.unwrap();
    let iss = idp.url();
    let jwks_url = format!("{iss}/.well-known/jwks.json");
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        c.auth.oidc = Some(OidcConfig {
            issuer: iss.clone(),
            audience: "pao".into(),
            jwks_url,
            teams_claim: "groups".into(),
            roles_claim: "roles".into(),
            id_claim: "sub".into(),
            jwks_ttl_secs: 600,
        });
    })
    .await
    .unwrap();

    // A valid token: the principal comes from the claims; team membership grants the item.
    let good = token(&issuer, claims(&iss, "pao", 300));
    let (code, v) = s.get(&good, "/catalog").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["total"], 2, "dana is in app-team: {v}");
    let (code, v) = s
        .post(
            &good,
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "svc-j" } }),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(
        v["requester"], "u-123",
        "the id is the issuer's `sub`, not the self-chosen `preferred_username`"
    );

    // Refusals.
    let expired = token(&issuer, claims(&iss, "pao", -3600));
    assert_eq!(s.get(&expired, "/catalog").await.0, 401);
    let wrong_aud = token(&issuer, claims(&iss, "other", 300));
    assert_eq!(s.get(&wrong_aud, "/catalog").await.0, 401);
    let wrong_iss = token(&issuer, claims("https://evil.example", "pao", 300));
    assert_eq!(s.get(&wrong_iss, "/catalog").await.0, 401);
    let (other, _) = generate("k1");
    let forged = token(&other, claims(&iss, "pao", 300));
    assert_eq!(
        s.get(&forged, "/catalog").await.0,
        401,
        "same kid, other key"
    );
    let (unknown, _) = generate("k9");
    let (code, v) = s
        .get(&token(&unknown, claims(&iss, "pao", 300)), "/catalog")
        .await;
    assert_eq!(code, 401);
    assert!(v["detail"].as_str().unwrap().contains("k9"), "{v}");
    let mut tampered = good.clone();
    tampered.insert(good.find('.').unwrap() + 1, 'e');
    assert_eq!(s.get(&tampered, "/catalog").await.0, 401);
    // Keys are cached: one fetch, plus at most one look-again for the unknown kid.
    assert!(
        fetches.load(Ordering::SeqCst) <= 2,
        "{}",
        fetches.load(Ordering::SeqCst)
    );
    // API tokens still work beside OIDC.
    assert_eq!(s.get("t-alice", "/catalog").await.0, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_gateway_headers() {
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        c.auth.trusted_header = Some(TrustedHeaderConfig {
            user: "x-pao-user".into(),
            teams: "x-pao-teams".into(),
            roles: "x-pao-roles".into(),
            email: "x-pao-email".into(),
            trusted_proxies: Vec::new(),
            gateway_secret_sha256: None,
            secret_header: "x-pao-gateway-secret".into(),
        });
    })
    .await
    .unwrap();
    let r = s
        .http
        .get(s.url("/catalog"))
        .header("x-pao-user", "erin")
        .header("x-pao-teams", "app-team, leads")
        .header("x-pao-roles", "developer")
        .send()
        .await
        .unwrap();
    let (code, v) = support::decode(r).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["total"], 2);
    let r = s
        .http
        .get(s.url("/catalog"))
        .header("x-pao-teams", "app-team")
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::decode(r).await.0,
        401,
        "no user header, no principal"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_headers_are_ignored_unless_enabled() {
    let s = support::spawn(support::Db::Sqlite).await.unwrap();
    let r = s
        .http
        .get(s.url("/catalog"))
        .header("x-pao-user", "mallory")
        .header("x-pao-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(support::decode(r).await.0, 401);
    s.stop().await;
}

fn gateway(proxies: &[&str], secret: Option<&str>) -> TrustedHeaderConfig {
    TrustedHeaderConfig {
        user: "x-pao-user".into(),
        teams: "x-pao-teams".into(),
        roles: "x-pao-roles".into(),
        email: "x-pao-email".into(),
        trusted_proxies: proxies.iter().map(|p| p.to_string()).collect(),
        gateway_secret_sha256: secret.map(pao_server::config::hash_token),
        secret_header: "x-pao-gateway-secret".into(),
    }
}

async fn as_mallory(s: &support::TestServer, secret: Option<&str>) -> u16 {
    let mut r = s
        .http
        .get(s.url("/audit/requests"))
        .header("x-pao-user", "mallory")
        .header("x-pao-roles", "admin");
    if let Some(secret) = secret {
        r = r.header("x-pao-gateway-secret", secret);
    }
    support::decode(r.send().await.unwrap()).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_headers_only_from_the_gateway() {
    // The gateway is elsewhere: this test's loopback connection is not it.
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        c.auth.trusted_header = Some(gateway(&["10.20.0.0/16"], None));
    })
    .await
    .unwrap();
    assert_eq!(
        as_mallory(&s, None).await,
        401,
        "identity headers from a peer outside trusted_proxies"
    );
    s.stop().await;

    // The gateway is on this machine and sends a secret.
    let s = support::spawn_with(support::Db::Sqlite, |c| {
        c.auth.trusted_header = Some(gateway(&["127.0.0.1/32"], Some("gw-secret-0123456789")));
    })
    .await
    .unwrap();
    assert_eq!(as_mallory(&s, None).await, 401, "no gateway secret");
    assert_eq!(as_mallory(&s, Some("guess")).await, 401, "wrong secret");
    assert_eq!(
        as_mallory(&s, Some("gw-secret-0123456789")).await,
        200,
        "the gateway itself"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_headers_on_a_public_bind_need_proxies_or_a_secret() {
    let mut config = pao_server::config::ServerConfig {
        bind: "0.0.0.0:8080".into(),
        database_url: support::database_url(support::Db::Sqlite).await.unwrap(),
        catalog: support::catalog_copy(),
        ..Default::default()
    };
    config.auth.trusted_header = Some(gateway(&[], None));
    let e = pao_server::state::AppState::build(config.clone(), Default::default())
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("trusted_proxies"), "{e}");
    config.auth.trusted_header = Some(gateway(&["10.0.0.0/8"], None));
    assert!(
        pao_server::state::AppState::build(config.clone(), Default::default())
            .await
            .is_ok()
    );
    config.auth.trusted_header = Some(gateway(&["10.0.0.0/33"], None));
    let e = pao_server::state::AppState::build(config, Default::default())
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
}

/// An issuer on 127.0.0.1 whose key set the test can swap.
struct Idp {
    server: pao_sandbox::FakeServer,
    keys: Arc<std::sync::Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn idp(first: Value) -> Idp {
    let keys = Arc::new(std::sync::Mutex::new(json!({ "keys": [first] })));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (k2, f2) = (keys.clone(), fetches.clone());
    let router = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (k2, f2) = (k2.clone(), f2.clone());
            async move {
                f2.fetch_add(1, Ordering::SeqCst);
                axum::Json(k2.lock().unwrap().clone())
            }
        }),
    );
    Idp {
        server: pao_sandbox::FakeServer::start(router).await.unwrap(),
        keys,
        fetches,
    }
}

async fn oidc_server(idp: &Idp, ttl: u64) -> support::TestServer {
    let iss = idp.server.url();
    support::spawn_with(support::Db::Sqlite, |c| {
        c.auth.oidc = Some(OidcConfig {
            issuer: iss.clone(),
            audience: "pao".into(),
            jwks_url: format!("{iss}/.well-known/jwks.json"),
            teams_claim: "groups".into(),
            roles_claim: "roles".into(),
            id_claim: "sub".into(),
            jwks_ttl_secs: ttl,
        });
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_claims_that_must_not_be_trusted() {
    let (issuer, jwk) = generate("k1");
    let idp = idp(jwk).await;
    let s = oidc_server(&idp, 600).await;
    let iss = idp.server.url();

    // Not valid yet.
    let mut c = claims(&iss, "pao", 7200);
    c["nbf"] = json!(chrono::Utc::now().timestamp() + 3600);
    assert_eq!(s.get(&token(&issuer, c), "/catalog").await.0, 401, "nbf");

    // A self-chosen username equal to an API token's id does not become that principal.
    let mut c = claims(&iss, "pao", 300);
    c["preferred_username"] = json!("alice");
    let (code, v) = s.get(&token(&issuer, c), "/requests").await;
    assert_eq!(code, 200, "{v}");
    let alice = s
        .post(
            "t-alice",
            "/requests",
            json!({ "item_id": "test.echo", "fields": { "name": "svc-a" } }),
        )
        .await;
    assert_eq!(alice.0, 201, "{}", alice.1);
    let mut c = claims(&iss, "pao", 300);
    c["preferred_username"] = json!("alice");
    c["groups"] = json!([]);
    let (code, _) = s
        .get(
            &token(&issuer, c),
            &format!("/requests/{}", alice.1["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(
        code, 404,
        "preferred_username `alice` must not see alice's request"
    );

    // An empty subject is no one.
    let mut c = claims(&iss, "pao", 300);
    c["sub"] = json!("");
    assert_eq!(
        s.get(&token(&issuer, c), "/catalog").await.0,
        401,
        "empty sub"
    );

    // No `kid`, and `alg: none`.
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = None;
    let no_kid = jsonwebtoken::encode(
        &h,
        &claims(&iss, "pao", 300),
        &EncodingKey::from_ed_der(&issuer.der),
    )
    .unwrap();
    assert_eq!(s.get(&no_kid, "/catalog").await.0, 401, "no kid");
    let body = URL_SAFE_NO_PAD.encode(claims(&iss, "pao", 300).to_string());
    let none = format!(
        "{}.{body}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#)
    );
    assert_eq!(s.get(&none, "/catalog").await.0, 401, "alg none");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_issuer_removed_stops_working_after_the_ttl() {
    let (k1, jwk1) = generate("k1");
    let (_k2, jwk2) = generate("k2");
    let idp = idp(jwk1).await;
    let s = oidc_server(&idp, 1).await;
    let iss = idp.server.url();
    let t1 = token(&k1, claims(&iss, "pao", 300));
    assert_eq!(s.get(&t1, "/catalog").await.0, 200);
    *idp.keys.lock().unwrap() = json!({ "keys": [jwk2] });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        s.get(&t1, "/catalog").await.0,
        401,
        "k1 was removed from the issuer's key set"
    );
    assert!(idp.fetches.load(Ordering::SeqCst) >= 2);
    s.stop().await;
}
