//! [`Host`]: everything a plugin can reach outside its own memory. Backed by the contract's
//! imports in a real component ([`WasmHost`]) and by a [`crate::MockHost`] in native tests.

use crate::types::{
    HeaderValue, HttpError, HttpRequest, HttpResponse, KvError, Level, SecretError,
};

/// The host's services, as an object-safe trait: implement it to fake the host.
pub trait HostApi {
    /// Writes a log line.
    fn log(&self, level: Level, message: &str);
    /// Sends a request.
    fn http(&self, request: HttpRequest) -> Result<HttpResponse, HttpError>;
    /// Reads a granted secret.
    fn secret(&self, name: &str) -> Result<String, SecretError>;
    /// Reads a key of the plugin's store.
    fn kv_get(&self, key: &str) -> Result<Option<String>, KvError>;
    /// Writes a key of the plugin's store.
    fn kv_set(&self, key: &str, value: &str) -> Result<(), KvError>;
    /// Removes a key of the plugin's store.
    fn kv_delete(&self, key: &str) -> Result<(), KvError>;
}

/// What a plugin's `execute` and `rollback` get to reach the world.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    api: &'a dyn HostApi,
}

impl std::fmt::Debug for Host<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Host")
    }
}

impl<'a> Host<'a> {
    /// A host over these services.
    pub fn new(api: &'a dyn HostApi) -> Host<'a> {
        Host { api }
    }

    /// Logs at debug level (host tracing only).
    pub fn debug(&self, message: &str) {
        self.api.log(Level::Debug, message);
    }

    /// Logs to the request's log (secrets redacted by the host).
    pub fn info(&self, message: &str) {
        self.api.log(Level::Info, message);
    }

    /// Logs a warning.
    pub fn warn(&self, message: &str) {
        self.api.log(Level::Warn, message);
    }

    /// Logs an error.
    pub fn error(&self, message: &str) {
        self.api.log(Level::Error, message);
    }

    /// Reads a granted secret. Prefer [`HttpRequestBuilder::bearer_secret`] and friends: a
    /// secret referenced in a header never enters the plugin's memory.
    pub fn secret(&self, name: &str) -> Result<String, SecretError> {
        self.api.secret(name)
    }

    /// Reads a key of the plugin's own store.
    pub fn kv_get(&self, key: &str) -> Result<Option<String>, KvError> {
        self.api.kv_get(key)
    }

    /// Writes a key of the plugin's own store.
    pub fn kv_set(&self, key: &str, value: &str) -> Result<(), KvError> {
        self.api.kv_set(key, value)
    }

    /// Removes a key of the plugin's own store.
    pub fn kv_delete(&self, key: &str) -> Result<(), KvError> {
        self.api.kv_delete(key)
    }

    /// A request with this method.
    pub fn request(&self, method: &str, url: &str) -> HttpRequestBuilder<'a> {
        HttpRequestBuilder {
            api: self.api,
            request: HttpRequest {
                method: method.to_string(),
                url: url.to_string(),
                headers: Vec::new(),
                body: None,
                timeout_ms: None,
            },
        }
    }

    /// A `GET`.
    pub fn get(&self, url: &str) -> HttpRequestBuilder<'a> {
        self.request("GET", url)
    }

    /// A `POST`.
    pub fn post(&self, url: &str) -> HttpRequestBuilder<'a> {
        self.request("POST", url)
    }

    /// A `PATCH`.
    pub fn patch(&self, url: &str) -> HttpRequestBuilder<'a> {
        self.request("PATCH", url)
    }

    /// A `PUT`.
    pub fn put(&self, url: &str) -> HttpRequestBuilder<'a> {
        self.request("PUT", url)
    }

    /// A `DELETE`.
    pub fn delete(&self, url: &str) -> HttpRequestBuilder<'a> {
        self.request("DELETE", url)
    }
}

/// Builds and sends one request.
#[must_use = "a request does nothing until `send`"]
pub struct HttpRequestBuilder<'a> {
    api: &'a dyn HostApi,
    request: HttpRequest,
}

impl HttpRequestBuilder<'_> {
    /// Adds a plain header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request
            .headers
            .push((name.to_string(), HeaderValue::Text(value.to_string())));
        self
    }

    /// Adds a header whose `{{secret:NAME}}` placeholders the host fills in.
    pub fn header_with_secrets(mut self, name: &str, template: &str) -> Self {
        self.request.headers.push((
            name.to_string(),
            HeaderValue::WithSecrets(template.to_string()),
        ));
        self
    }

    /// `Authorization: Bearer <secret>`, filled in by the host.
    pub fn bearer_secret(self, secret: &str) -> Self {
        self.header_with_secrets("authorization", &format!("Bearer {{{{secret:{secret}}}}}"))
    }

    /// `Authorization: Basic ...` from a user and a password; either may hold
    /// `{{secret:NAME}}` placeholders.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.request.headers.push((
            "authorization".to_string(),
            HeaderValue::BasicAuth(user.to_string(), password.to_string()),
        ));
        self
    }

    /// A JSON body (and its content type).
    pub fn json<T: serde::Serialize>(mut self, body: &T) -> Self {
        self.request.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self.header("content-type", "application/json")
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.request.body = Some(body.into());
        self
    }

    /// A timeout for this request (the host's limit still applies).
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.request.timeout_ms = Some(ms);
        self
    }

    /// Sends it.
    pub fn send(self) -> Result<HttpResponse, HttpError> {
        self.api.http(self.request)
    }
}

/// The real host: the component's imports.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WasmHost;

mod wasm {
    use super::WasmHost;
    use crate::bindings::pao::action::{http, kv, log, secrets};
    use crate::types::{HeaderValue, HttpError, HttpRequest, HttpResponse, KvError, Level};

    impl super::HostApi for WasmHost {
        fn log(&self, level: Level, message: &str) {
            let level = match level {
                Level::Debug => log::Level::Debug,
                Level::Info => log::Level::Info,
                Level::Warn => log::Level::Warn,
                Level::Error => log::Level::Error,
            };
            log::log(level, message);
        }

        fn http(&self, r: HttpRequest) -> Result<HttpResponse, HttpError> {
            let headers = r
                .headers
                .into_iter()
                .map(|(name, v)| http::Header {
                    name,
                    value: match v {
                        HeaderValue::Text(t) => http::HeaderValue::Text(t),
                        HeaderValue::WithSecrets(t) => http::HeaderValue::WithSecrets(t),
                        HeaderValue::BasicAuth(u, p) => http::HeaderValue::BasicAuth((u, p)),
                    },
                })
                .collect();
            let req = http::Request {
                method: r.method,
                url: r.url,
                headers,
                body: r.body,
                timeout_ms: r.timeout_ms,
            };
            match http::send(&req) {
                Ok(resp) => Ok(HttpResponse {
                    status: resp.status,
                    headers: resp.headers,
                    body: resp.body,
                }),
                Err(e) => Err(match e {
                    http::HttpError::Denied(m) => HttpError::Denied(m),
                    http::HttpError::Timeout => HttpError::Timeout,
                    http::HttpError::TooLarge(n) => HttpError::TooLarge(n),
                    http::HttpError::Transport(m) => HttpError::Transport(m),
                    http::HttpError::InvalidRequest(m) => HttpError::InvalidRequest(m),
                }),
            }
        }

        fn secret(&self, name: &str) -> Result<String, crate::types::SecretError> {
            secrets::get(name).map_err(|e| match e {
                secrets::SecretError::Denied(m) => crate::types::SecretError::Denied(m),
                secrets::SecretError::NotFound(m) => crate::types::SecretError::NotFound(m),
                secrets::SecretError::Unavailable(m) => crate::types::SecretError::Unavailable(m),
            })
        }

        fn kv_get(&self, key: &str) -> Result<Option<String>, KvError> {
            kv::get(key).map_err(kv_err)
        }

        fn kv_set(&self, key: &str, value: &str) -> Result<(), KvError> {
            kv::set(key, value).map_err(kv_err)
        }

        fn kv_delete(&self, key: &str) -> Result<(), KvError> {
            kv::delete(key).map_err(kv_err)
        }
    }

    fn kv_err(e: kv::KvError) -> KvError {
        match e {
            kv::KvError::Denied => KvError::Denied,
            kv::KvError::TooLarge(m) => KvError::TooLarge(m),
        }
    }
}
