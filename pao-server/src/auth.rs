//! Authentication: maps an HTTP request to a [`Principal`]. API tokens are compared by their
//! SHA-256 digest (the server never stores a token); JWTs from an OIDC issuer are checked
//! against its JWKS (fetched on first use and again when a token names an unknown key, at most
//! every 30 s); gateway headers are trusted only when the operator turned that mode on.

use std::collections::HashMap;
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
    trusted: Option<TrustedHeaderConfig>,
    oidc: Option<Arc<Oidc>>,
}

/// An OIDC issuer and its cached signing keys.
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    keys: tokio::sync::RwLock<(Option<jsonwebtoken::jwk::JwkSet>, Option<Instant>)>,
}

impl Oidc {
    async fn refresh(&self, force: bool) -> Result<(), ApiError> {
        {
            let k = self.keys.read().await;
            let fresh = k.1.is_some_and(|at| at.elapsed() < Duration::from_secs(30));
            if k.0.is_some() && (!force || fresh) {
                return Ok(());
            }
        }
        let mut k = self.keys.write().await;
        if k.1.is_some_and(|at| at.elapsed() < Duration::from_secs(30)) && k.0.is_some() {
            return Ok(());
        }
        k.1 = Some(Instant::now());
        let set: jsonwebtoken::jwk::JwkSet = self
            .http
            .get(&self.config.jwks_url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| {
                ApiError::unavailable(format!(
                    "cannot fetch the issuer's JWKS: {}",
                    e.without_url()
                ))
            })?
            .json()
            .await
            .map_err(|e| {
                ApiError::unavailable(format!("the issuer's JWKS is not a JWK set: {e}"))
            })?;
        k.0 = Some(set);
        Ok(())
    }

    async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ApiError::unauthorized(format!("not a valid JWT: {e}")))?;
        let kid = header
            .kid
            .clone()
            .ok_or_else(|| ApiError::unauthorized("the JWT has no `kid`"))?;
        self.refresh(false).await?;
        let mut jwk = self
            .keys
            .read()
            .await
            .0
            .as_ref()
            .and_then(|s| s.find(&kid).cloned());
        if jwk.is_none() {
            // Keys rotate: look again before refusing.
            self.refresh(true).await?;
            jwk = self
                .keys
                .read()
                .await
                .0
                .as_ref()
                .and_then(|s| s.find(&kid).cloned());
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
        Ok(Principal {
            id: text("preferred_username")
                .or_else(|| text("sub"))
                .unwrap_or_default(),
            email: text("email"),
            name: text("name"),
            teams: list(&self.config.teams_claim),
            roles: list(&self.config.roles_claim),
        })
    }
}

impl Authenticator {
    /// From the `[auth]` section.
    pub fn new(config: &AuthConfig) -> Authenticator {
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
        Authenticator {
            tokens,
            trusted: config.trusted_header.clone(),
            oidc: config.oidc.clone().map(|config| {
                Arc::new(Oidc {
                    config,
                    http: reqwest::Client::new(),
                    keys: tokio::sync::RwLock::new((None, None)),
                })
            }),
        }
    }

    /// Adds a token at run time (the sandbox's development tokens).
    pub fn add_token(&mut self, token: &str, principal: Principal) {
        self.tokens.insert(hash_token(token), principal);
    }

    /// Who sent these headers; 401 when no mode recognises them.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
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
        if let Some(t) = &self.trusted
            && let Some(user) = header_text(headers, &t.user)
        {
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
        let p = state.auth.authenticate(&parts.headers).await?;
        Ok(Caller(p))
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
