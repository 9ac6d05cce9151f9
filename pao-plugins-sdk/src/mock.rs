//! [`MockHost`]: PAO's side of the contract in native `cargo test`. Canned HTTP responses,
//! secrets, a key-value store, and a record of every request and log line, with secret
//! references resolved the way the real host resolves them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::host::{Host, HostApi};
use crate::types::{
    Context, Error, HeaderValue, HttpError, HttpRequest, HttpResponse, KvError, Level, SecretError,
};

type Responder = Box<dyn Fn(&MockRequest) -> Result<HttpResponse, HttpError> + Send>;

/// A request a plugin sent, as the remote server would see it (secrets filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockRequest {
    /// Upper-case method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Headers, lower-case names, secrets filled in.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl MockRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A fake host for native tests.
///
/// Routes match by method and URL prefix, first added first; a request that matches none
/// gets a 404. Hosts are all allowed unless [`MockHost::allow_hosts`] narrows them.
#[derive(Default)]
pub struct MockHost {
    secrets: BTreeMap<String, String>,
    allow: Option<Vec<String>>,
    kv_denied: bool,
    routes: Mutex<Vec<(String, String, Responder)>>,
    requests: Mutex<Vec<MockRequest>>,
    logs: Mutex<Vec<(Level, String)>>,
    kv: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for MockHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHost")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl MockHost {
    /// No secrets, no routes, every host allowed, kv granted.
    pub fn new() -> MockHost {
        MockHost::default()
    }

    /// Grants a secret.
    pub fn secret(mut self, name: &str, value: &str) -> MockHost {
        self.secrets.insert(name.to_string(), value.to_string());
        self
    }

    /// Only these hosts (exact host names) may be called; others are denied like in PAO.
    pub fn allow_hosts(mut self, hosts: &[&str]) -> MockHost {
        self.allow = Some(hosts.iter().map(|h| h.to_string()).collect());
        self
    }

    /// Denies the key-value store.
    pub fn deny_kv(mut self) -> MockHost {
        self.kv_denied = true;
        self
    }

    /// Answers `method` requests whose URL starts with `url_prefix`.
    pub fn on(
        self,
        method: &str,
        url_prefix: &str,
        respond: impl Fn(&MockRequest) -> Result<HttpResponse, HttpError> + Send + 'static,
    ) -> MockHost {
        if let Ok(mut r) = self.routes.lock() {
            r.push((
                method.to_ascii_uppercase(),
                url_prefix.to_string(),
                Box::new(respond),
            ));
        }
        self
    }

    /// Answers with a fixed JSON response.
    pub fn on_json(self, method: &str, url_prefix: &str, status: u16, body: Value) -> MockHost {
        self.on(method, url_prefix, move |_| {
            Ok(HttpResponse::json(status, body.clone()))
        })
    }

    /// The requests sent so far.
    pub fn requests(&self) -> Vec<MockRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The log lines so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A [`Host`] backed by this mock.
    pub fn host(&self) -> Host<'_> {
        Host::new(self)
    }

    /// Runs `P::execute` the way PAO does: JSON in, JSON out.
    pub fn execute<P: crate::Plugin>(&self, ctx: &Context, input: Value) -> Result<Value, Error> {
        let input: P::Input = crate::__private::parse("input", &input.to_string())?;
        let out = P::execute(&self.host(), ctx, input)?;
        serde_json::to_value(out).map_err(|e| Error::failed(format!("output: {e}")))
    }

    /// Runs `P::rollback` the way PAO does, with the output of an earlier `execute`.
    pub fn rollback<P: crate::Plugin>(
        &self,
        ctx: &Context,
        input: Value,
        output: Value,
    ) -> Result<(), Error> {
        let input: P::Input = crate::__private::parse("input", &input.to_string())?;
        let output: P::Output = crate::__private::parse("rollback state", &output.to_string())?;
        P::rollback(&self.host(), ctx, input, output)
    }

    /// Runs `P::validate` on JSON input.
    pub fn validate<P: crate::Plugin>(&self, input: Value) -> Result<(), Error> {
        let input: P::Input = crate::__private::parse("input", &input.to_string())?;
        P::validate(&input).map_err(Error::InvalidInput)
    }

    fn fill(&self, template: &str) -> Result<String, HttpError> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{secret:") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "{{secret:".len()..];
            let end = after.find("}}").ok_or_else(|| {
                HttpError::InvalidRequest("unterminated `{{secret:` placeholder".to_string())
            })?;
            let name = after[..end].trim();
            let value = self
                .secrets
                .get(name)
                .ok_or_else(|| HttpError::Denied(format!("secret `{name}` is not granted")))?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    authority.split(':').next().unwrap_or(authority)
}

impl HostApi for MockHost {
    fn log(&self, level: Level, message: &str) {
        if let Ok(mut l) = self.logs.lock() {
            l.push((level, message.to_string()));
        }
    }

    fn http(&self, r: HttpRequest) -> Result<HttpResponse, HttpError> {
        if let Some(allow) = &self.allow {
            let host = host_of(&r.url);
            if !allow.iter().any(|a| a == host) {
                return Err(HttpError::Denied(format!("host `{host}` is not granted")));
            }
        }
        let mut headers = Vec::new();
        for (name, v) in r.headers {
            let value = match v {
                HeaderValue::Text(t) => t,
                HeaderValue::WithSecrets(t) => self.fill(&t)?,
                HeaderValue::BasicAuth(u, p) => {
                    let pair = format!("{}:{}", self.fill(&u)?, self.fill(&p)?);
                    format!("Basic {}", base64(pair.as_bytes()))
                }
            };
            headers.push((name.to_ascii_lowercase(), value));
        }
        let req = MockRequest {
            method: r.method.to_ascii_uppercase(),
            url: r.url,
            headers,
            body: r.body.unwrap_or_default(),
        };
        if let Ok(mut rs) = self.requests.lock() {
            rs.push(req.clone());
        }
        let routes = self
            .routes
            .lock()
            .map_err(|_| HttpError::Transport("mock poisoned".to_string()))?;
        for (method, prefix, respond) in routes.iter() {
            if *method == req.method && req.url.starts_with(prefix.as_str()) {
                return respond(&req);
            }
        }
        Ok(HttpResponse::json(
            404,
            serde_json::json!({ "error": "no mock route" }),
        ))
    }

    fn secret(&self, name: &str) -> Result<String, SecretError> {
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::Denied(format!("secret `{name}` is not granted")))
    }

    fn kv_get(&self, key: &str) -> Result<Option<String>, KvError> {
        if self.kv_denied {
            return Err(KvError::Denied);
        }
        Ok(self.kv.lock().ok().and_then(|kv| kv.get(key).cloned()))
    }

    fn kv_set(&self, key: &str, value: &str) -> Result<(), KvError> {
        if self.kv_denied {
            return Err(KvError::Denied);
        }
        if let Ok(mut kv) = self.kv.lock() {
            kv.insert(key.to_string(), value.to_string());
        }
        Ok(())
    }

    fn kv_delete(&self, key: &str) -> Result<(), KvError> {
        if self.kv_denied {
            return Err(KvError::Denied);
        }
        if let Ok(mut kv) = self.kv.lock() {
            kv.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"admin:secret"), "YWRtaW46c2VjcmV0");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn secret_references_are_filled_and_ungranted_ones_denied() {
        let mock = MockHost::new().secret("tok", "s3cr3t").on_json(
            "GET",
            "https://api.example/",
            200,
            serde_json::json!({"ok": true}),
        );
        let h = mock.host();
        let r = h
            .get("https://api.example/x")
            .bearer_secret("tok")
            .send()
            .unwrap();
        assert!(r.is_success());
        assert_eq!(
            mock.requests()[0].header("authorization"),
            Some("Bearer s3cr3t")
        );
        let e = h
            .get("https://api.example/x")
            .bearer_secret("other")
            .send()
            .unwrap_err();
        assert!(matches!(e, HttpError::Denied(_)));
    }

    #[test]
    fn hosts_outside_the_allow_list_are_denied() {
        let mock = MockHost::new().allow_hosts(&["api.example"]);
        let e = mock
            .host()
            .get("https://evil.example:8443/")
            .send()
            .unwrap_err();
        assert_eq!(
            e,
            HttpError::Denied("host `evil.example` is not granted".to_string())
        );
    }
}
