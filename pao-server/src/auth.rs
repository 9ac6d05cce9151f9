//! Authentication: maps an HTTP request to a [`Principal`]. API tokens are compared by their
//! SHA-256 digest (the server never stores a token); JWTs from an OIDC issuer are checked
//! against its JWKS (fetched on first use and again when a token names an unknown key, at most
//! every 30 s); gateway headers are trusted only when the operator turned that mode on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use pao_core::authz::Principal;

use crate::config::{AuthConfig, OidcConfig, TrustedHeaderConfig, hash_token};
use crate::error::ApiError;
use crate::state::AppState;

/// Recognises callers.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: HashMap<String, Principal>,
    trusted: Option<TrustedGateway>,
    oidc: Option<Arc<Oidc>>,
}

/// An OIDC issuer and its cached signing keys.
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    keys: tokio::sync::RwLock<JwksCache>,
}

/// The key set held, when it was loaded, and when a fetch last failed.
#[derive(Debug, Default)]
struct JwksCache {
    set: Option<jsonwebtoken::jwk::JwkSet>,
    loaded: Option<Instant>,
    tried: Option<Instant>,
}

impl Oidc {
    /// How long after a failed fetch the next one may run.
    const RETRY: Duration = Duration::from_secs(30);

    /// Makes sure a key set is loaded: fetched when none is, when the one held is older than
    /// `jwks_ttl_secs`, or (`force`, a token named an unknown key) when the last fetch is more
    /// than 30 s old. A failed fetch keeps the set held (the issuer may be down); with none
    /// held, callers get 503 without a new fetch until 30 s have passed.
    async fn refresh(&self, force: bool) -> Result<(), ApiError> {
        let ttl = Duration::from_secs(self.config.jwks_ttl_secs.max(1));
        let due = |k: &JwksCache| match (&k.set, k.loaded, k.tried) {
            (_, _, Some(tried)) if tried.elapsed() < Self::RETRY => false,
            (None, _, _) => true,
            (Some(_), Some(loaded), _) => {
                loaded.elapsed() >= ttl || (force && loaded.elapsed() >= Self::RETRY)
            }
            (Some(_), None, _) => true,
        };
        if !due(&*self.keys.read().await) {
            return self.have_keys().await;
        }
        let mut k = self.keys.write().await;
        if !due(&k) {
            drop(k);
            return self.have_keys().await;
        }
        k.tried = Some(Instant::now());
        let fetched = self
            .http
            .get(&self.config.jwks_url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot fetch the issuer's JWKS: {}", e.without_url()));
        let set = match fetched {
            Ok(r) => r
                .json::<jsonwebtoken::jwk::JwkSet>()
                .await
                .map_err(|e| format!("the issuer's JWKS is not a JWK set: {e}")),
            Err(e) => Err(e),
        };
        match set {
            Ok(set) => {
                k.set = Some(set);
                k.loaded = Some(Instant::now());
                k.tried = None;
                Ok(())
            }
            Err(e) if k.set.is_some() => {
                tracing::warn!(error = %e, "keeping the issuer's previous key set");
                Ok(())
            }
            Err(e) => Err(ApiError::unavailable(e)),
        }
    }

    async fn have_keys(&self) -> Result<(), ApiError> {
        if self.keys.read().await.set.is_some() {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "the issuer's signing keys could not be fetched; try again shortly",
            ))
        }
    }

    async fn find(&self, kid: &str) -> Option<jsonwebtoken::jwk::Jwk> {
        self.keys
            .read()
            .await
            .set
            .as_ref()
            .and_then(|s| s.find(kid).cloned())
    }

    async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ApiError::unauthorized(format!("not a valid JWT: {e}")))?;
        let kid = header
            .kid
            .clone()
            .ok_or_else(|| ApiError::unauthorized("the JWT has no `kid`"))?;
        self.refresh(false).await?;
        let mut jwk = self.find(&kid).await;
        if jwk.is_none() {
            // Keys rotate: look again before refusing.
            self.refresh(true).await?;
            jwk = self.find(&kid).await;
        }
        let jwk = jwk.ok_or_else(|| {
            ApiError::unauthorized(format!("no signing key `{kid}` at the issuer"))
        })?;
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk)
            .map_err(|e| ApiError::unauthorized(format!("unusable signing key `{kid}`: {e}")))?;
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 30;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| ApiError::unauthorized(format!("JWT refused: {e}")))?;
        let c = data.claims;
        let list = |name: &str| -> Vec<String> {
            match c.get(name) {
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                Some(serde_json::Value::String(s)) => s
                    .split([',', ' '])
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let text = |name: &str| c.get(name).and_then(|x| x.as_str()).map(str::to_string);
        let id = text(&self.config.id_claim)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(format!(
                    "the JWT has no `{}` claim to identify its subject",
                    self.config.id_claim
                ))
            })?;
        // An address the issuer did not verify could be anyone's: it names no approver.
        let verified = c.get("email_verified").and_then(|v| v.as_bool()) == Some(true);
        Ok(Principal {
            id,
            email: text("email").filter(|_| verified),
            name: text("name"),
            teams: list(&self.config.teams_claim),
            roles: list(&self.config.roles_claim),
        })
    }
}

impl Authenticator {
    /// From the `[auth]` section; an error names the key that is wrong.
    pub fn new(config: &AuthConfig) -> Result<Authenticator, String> {
        let tokens = config
            .tokens
            .iter()
            .map(|t| {
                (
                    t.token_sha256.to_ascii_lowercase(),
                    Principal {
                        id: t.id.clone(),
                        email: t.email.clone(),
                        name: t.name.clone(),
                        teams: t.teams.clone(),
                        roles: t.roles.clone(),
                    },
                )
            })
            .collect();
        Ok(Authenticator {
            tokens,
            trusted: config
                .trusted_header
                .clone()
                .map(TrustedGateway::new)
                .transpose()?,
            oidc: config.oidc.clone().map(|config| {
                Arc::new(Oidc {
                    config,
                    http: reqwest::Client::new(),
                    keys: tokio::sync::RwLock::default(),
                })
            }),
        })
    }

    /// The principal of the API token with this id (the directory the approval webhook
    /// resolves approvers from).
    pub fn principal_by_id(&self, id: &str) -> Option<Principal> {
        self.tokens.values().find(|p| p.id == id).cloned()
    }

    /// Adds a token at run time (the sandbox's development tokens).
    pub fn add_token(&mut self, token: &str, principal: Principal) {
        self.tokens.insert(hash_token(token), principal);
    }

    /// Who sent these headers from `peer`; 401 when no mode recognises them.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Principal, ApiError> {
        if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
            let text = value
                .to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
            let Some(token) = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
            else {
                return Err(ApiError::unauthorized(
                    "use `Authorization: Bearer <token>`",
                ));
            };
            let token = token.trim();
            if let Some(oidc) = &self.oidc
                && token.matches('.').count() == 2
            {
                return oidc.verify(token).await;
            }
            // The digest lookup compares hashes, so timing reveals nothing about the token.
            return self
                .tokens
                .get(&hash_token(token))
                .cloned()
                .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"));
        }
        if let Some(g) = &self.trusted
            && let Some(user) = header_text(headers, &g.config.user)
        {
            g.admit(headers, peer)?;
            let t = &g.config;
            let list = |name: &str| -> Vec<String> {
                header_text(headers, name)
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            return Ok(Principal {
                id: user,
                email: header_text(headers, &t.email),
                name: None,
                teams: list(&t.teams),
                roles: list(&t.roles),
            });
        }
        Err(ApiError::unauthorized(
            "authentication required: send `Authorization: Bearer <token>`",
        ))
    }

    /// Whether these headers would be authenticated by the gateway's identity headers, which a
    /// browser behind the gateway sends with every request it makes, cross-site ones included
    /// (so such requests must prove they are not a cross-site form).
    pub fn ambient(&self, headers: &HeaderMap) -> bool {
        !headers.contains_key(axum::http::header::AUTHORIZATION)
            && self
                .trusted
                .as_ref()
                .is_some_and(|g| header_text(headers, &g.config.user).is_some())
    }
}

/// The gateway whose identity headers are believed: only from its addresses, and only with
/// its secret when one is configured.
#[derive(Debug, Clone)]
struct TrustedGateway {
    config: TrustedHeaderConfig,
    proxies: Vec<ipnet::IpNet>,
    secret_sha256: Option<String>,
}

impl TrustedGateway {
    fn new(config: TrustedHeaderConfig) -> Result<TrustedGateway, String> {
        let proxies = config
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!(
                            "auth.trusted_header.trusted_proxies: `{p}` is not an address or CIDR"
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let secret_sha256 = match &config.gateway_secret_sha256 {
            Some(s) if !s.starts_with("sha256:") || s.len() != 71 => {
                return Err(
                    "auth.trusted_header.gateway_secret_sha256: expected `sha256:<64 hex digits>` (`pao admin hash-token` prints it)"
                        .into(),
                );
            }
            Some(s) => Some(s.to_ascii_lowercase()),
            None => None,
        };
        Ok(TrustedGateway {
            config,
            proxies,
            secret_sha256,
        })
    }

    /// Refuses identity headers from a peer that is not the gateway.
    fn admit(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let from_gateway = match peer {
            Some(ip) if self.proxies.is_empty() => ip.is_loopback(),
            Some(ip) => self.proxies.iter().any(|n| n.contains(&ip)),
            None => false,
        };
        if !from_gateway {
            return Err(ApiError::unauthorized(
                "identity headers are accepted only from the configured gateway (auth.trusted_header.trusted_proxies)",
            ));
        }
        if let Some(want) = &self.secret_sha256 {
            let given = header_text(headers, &self.config.secret_header)
                .map(|v| hash_token(&v))
                .unwrap_or_default();
            // Digests are compared, so timing tells nothing about the secret.
            if &given != want {
                return Err(ApiError::unauthorized(
                    "identity headers without the gateway's secret",
                ));
            }
        }
        Ok(())
    }
}

/// Why `[auth]` cannot be used.
pub fn check_config(config: &AuthConfig, bind: &str) -> Result<(), String> {
    let Some(t) = &config.trusted_header else {
        return Ok(());
    };
    TrustedGateway::new(t.clone())?;
    let loopback = bind_is_loopback(bind);
    if !loopback && t.trusted_proxies.is_empty() && t.gateway_secret_sha256.is_none() {
        return Err(format!(
            "auth.trusted_header is on and the server listens on {bind}, beyond this machine: set auth.trusted_header.trusted_proxies (the gateway's addresses) and/or gateway_secret_sha256, or anyone who reaches the port could claim to be anyone"
        ));
    }
    Ok(())
}

/// Whether a `bind` address only accepts connections from this machine.
pub fn bind_is_loopback(bind: &str) -> bool {
    let host = bind
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(bind)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The authenticated caller of a handler.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let p = state
            .auth
            .authenticate(&parts.headers, peer(&parts.extensions))
            .await?;
        Ok(Caller(state.orch.with_catalog_teams(p)))
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Caller>, std::convert::Infallible> {
        Ok(
            <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

/// A caller with the `admin` role.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        let Caller(p) = Caller::from_request_parts(parts, state).await?;
        if p.is_admin() {
            Ok(Admin(p))
        } else {
            Err(ApiError::forbidden("this endpoint is for admins"))
        }
    }
}

/// The address of the client's end of the connection, when the server recorded it.
pub fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}
