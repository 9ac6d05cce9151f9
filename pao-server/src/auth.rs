//! Authentication: maps an HTTP request to a [`Principal`]. API tokens are compared by their
//! SHA-256 digest (the server never stores a token), and gateway headers are trusted only when
//! the operator turned that mode on.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use pao_core::authz::Principal;

use crate::config::{AuthConfig, TrustedHeaderConfig, hash_token};
use crate::error::ApiError;
use crate::state::AppState;

/// Recognises callers.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: HashMap<String, Principal>,
    trusted: Option<TrustedHeaderConfig>,
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
        }
    }

    /// Adds a token at run time (the sandbox's development tokens).
    pub fn add_token(&mut self, token: &str, principal: Principal) {
        self.tokens.insert(hash_token(token), principal);
    }

    /// Who sent these headers; `None` when no mode recognises them.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
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
            // The digest lookup compares hashes, so timing reveals nothing about the token.
            return self
                .tokens
                .get(&hash_token(token.trim()))
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
        let p = state.auth.authenticate(&parts.headers)?;
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
