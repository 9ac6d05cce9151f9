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
    assert_eq!(v["requester"], "dana");

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
