//! The SDK's own types: what a plugin author handles, independent of the generated bindings
//! (so the same code runs against the real host and a [`crate::MockHost`]).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// What a plugin says about itself. Built with [`Descriptor::new`] and chained setters.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    /// `slack-notify`: catalog items use it as `plugin:slack-notify`.
    pub name: String,
    /// The plugin's version (semver).
    pub version: String,
    /// JSON Schema of the input; catalogs are checked against it.
    pub input_schema: Value,
    /// JSON Schema of the output.
    pub output_schema: Value,
    /// A representative output (for `pao simulate`).
    pub sample_output: Value,
    /// Hosts the plugin calls (the operator must grant them too).
    pub http_hosts: Vec<String>,
    /// Secrets it reads or references (the operator must grant them too).
    pub secrets: Vec<String>,
    /// Whether it uses its key-value store.
    pub kv: bool,
    /// Whether [`crate::Plugin::rollback`] undoes an execution.
    pub supports_rollback: bool,
}

impl Descriptor {
    /// A plugin with this name and version, accepting any object.
    pub fn new(name: &str, version: &str) -> Descriptor {
        Descriptor {
            name: name.to_string(),
            version: version.to_string(),
            input_schema: serde_json::json!({ "type": "object" }),
            output_schema: serde_json::json!({ "type": "object" }),
            sample_output: serde_json::json!({}),
            http_hosts: Vec::new(),
            secrets: Vec::new(),
            kv: false,
            supports_rollback: false,
        }
    }

    /// Sets the input's JSON Schema.
    pub fn input_schema(mut self, schema: Value) -> Descriptor {
        self.input_schema = schema;
        self
    }

    /// Sets the output's JSON Schema.
    pub fn output_schema(mut self, schema: Value) -> Descriptor {
        self.output_schema = schema;
        self
    }

    /// Sets the sample output.
    pub fn sample_output(mut self, sample: Value) -> Descriptor {
        self.sample_output = sample;
        self
    }

    /// Asks for a host.
    pub fn http_host(mut self, host: &str) -> Descriptor {
        self.http_hosts.push(host.to_string());
        self
    }

    /// Asks for a secret.
    pub fn secret(mut self, name: &str) -> Descriptor {
        self.secrets.push(name.to_string());
        self
    }

    /// Asks for the key-value store.
    pub fn kv(mut self) -> Descriptor {
        self.kv = true;
        self
    }

    /// Declares that rollback undoes an execution.
    pub fn rollback(mut self) -> Descriptor {
        self.supports_rollback = true;
        self
    }
}

/// The call a plugin runs in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// The PAO request.
    pub request_id: String,
    /// The action within the catalog item.
    pub action_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The same for every attempt: send it to the remote system to deduplicate.
    pub idempotency_key: String,
    /// Finish by then (Unix milliseconds).
    pub deadline_unix_ms: Option<u64>,
    /// Describe what would happen; do not do it.
    pub dry_run: bool,
    /// The operator's settings for this plugin (`api_url`...).
    pub settings: BTreeMap<String, String>,
}

impl Context {
    /// A context for tests: request `req-1`, action `act-1`, attempt 1.
    pub fn test() -> Context {
        Context {
            request_id: "req-1".to_string(),
            action_id: "act-1".to_string(),
            attempt: 1,
            idempotency_key: "pao-req-1-act-1".to_string(),
            ..Context::default()
        }
    }

    /// Adds a setting (tests).
    pub fn with_setting(mut self, key: &str, value: &str) -> Context {
        self.settings.insert(key.to_string(), value.to_string());
        self
    }

    /// One of the operator's settings.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }
}

/// One problem with an input, located by a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `/channel`.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl Violation {
    /// A problem at `pointer`.
    pub fn new(pointer: &str, message: impl Into<String>) -> Violation {
        Violation {
            pointer: pointer.to_string(),
            message: message.into(),
        }
    }
}

/// Why an action failed. Choose the variant by whether another attempt may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input is wrong.
    InvalidInput(Vec<Violation>),
    /// A host or secret the plugin needs is not granted.
    Denied(String),
    /// Worth another attempt (timeouts, 429, 5xx).
    Retryable {
        /// What happened.
        message: String,
        /// The remote system asked to wait this long.
        retry_after_ms: Option<u64>,
    },
    /// Failed for good.
    Failed(String),
    /// The request was cancelled.
    Cancelled,
}

impl Error {
    /// A permanent failure.
    pub fn failed(message: impl Into<String>) -> Error {
        Error::Failed(message.into())
    }

    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Error {
        Error::Retryable {
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// One invalid input field.
    pub fn invalid(pointer: &str, message: impl Into<String>) -> Error {
        Error::InvalidInput(vec![Violation::new(pointer, message)])
    }

    /// An HTTP response that is not a success, classified: 429 and 5xx are retryable
    /// (honouring `Retry-After` in seconds), other statuses are failures. `what` names the
    /// call (`ServiceNow create incident`).
    pub fn from_status(what: &str, response: &HttpResponse) -> Error {
        let body = response.text();
        let snippet: String = body.chars().take(300).collect();
        let message = format!("{what}: HTTP {}: {snippet}", response.status);
        if response.status == 429 || response.status >= 500 {
            Error::Retryable {
                message,
                retry_after_ms: response
                    .header("retry-after")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(|s| s * 1000),
            }
        } else {
            Error::Failed(message)
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(v) => {
                f.write_str("invalid input: ")?;
                for (i, v) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{}: {}", v.pointer, v.message)?;
                }
                Ok(())
            }
            Error::Denied(m) => write!(f, "denied: {m}"),
            Error::Retryable { message, .. } => f.write_str(message),
            Error::Failed(m) => f.write_str(m),
            Error::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for Error {}

impl From<HttpError> for Error {
    fn from(e: HttpError) -> Error {
        match e {
            HttpError::Denied(m) => Error::Denied(m),
            HttpError::Timeout => Error::retryable("HTTP request timed out"),
            HttpError::TooLarge(n) => Error::failed(format!("HTTP response over {n} bytes")),
            HttpError::Transport(m) => Error::retryable(format!("HTTP transport error: {m}")),
            HttpError::InvalidRequest(m) => Error::failed(format!("bad HTTP request: {m}")),
        }
    }
}

impl From<SecretError> for Error {
    fn from(e: SecretError) -> Error {
        match e {
            SecretError::Denied(m) => Error::Denied(m),
            SecretError::NotFound(n) => Error::failed(format!("secret `{n}` does not exist")),
            SecretError::Unavailable(m) => Error::retryable(format!("secrets unavailable: {m}")),
        }
    }
}

impl From<KvError> for Error {
    fn from(e: KvError) -> Error {
        match e {
            KvError::Denied => Error::Denied("the key-value store is not granted".to_string()),
            KvError::TooLarge(m) => Error::failed(m),
        }
    }
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Host tracing only.
    Debug,
    /// Request log.
    Info,
    /// Request log.
    Warn,
    /// Request log.
    Error,
}

/// A header value. Secrets are referenced, never read: the host fills them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Sent as is.
    Text(String),
    /// `{{secret:NAME}}` placeholders filled by the host.
    WithSecrets(String),
    /// `Basic base64(user:password)`, both with `{{secret:NAME}}` placeholders.
    BasicAuth(String, String),
}

/// An outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`...
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, HeaderValue)>,
    /// Body.
    pub body: Option<Vec<u8>>,
    /// Per-request timeout.
    pub timeout_ms: Option<u32>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Lower-case header names.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A JSON response (for mocks).
    pub fn json(status: u16, body: Value) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: body.to_string().into_bytes(),
        }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json_body<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::failed(format!(
                "unexpected response body (HTTP {}): {e}",
                self.status
            ))
        })
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Host or referenced secret not granted.
    Denied(String),
    /// No response in time.
    Timeout,
    /// The body exceeded the cap (bytes).
    TooLarge(u64),
    /// Connection, TLS or protocol failure.
    Transport(String),
    /// Bad method, URL or header.
    InvalidRequest(String),
}

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// Not granted to this plugin.
    Denied(String),
    /// No such secret.
    NotFound(String),
    /// The secret store failed.
    Unavailable(String),
}

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The store is not granted.
    Denied,
    /// Over the size limit.
    TooLarge(String),
}
