//! Plugin HTTP: every request and every redirect hop must go to an allow-listed host;
//! secret references in headers are filled in here, so the plugin never sees the values, and
//! they are dropped when a redirect leaves the origin. Response bodies are capped.

use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::bindings::pao::action::http::{HeaderValue as WitValue, HttpError, Request, Response};

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// Whether `url`'s host is on the allow-list: `host`, `*.domain` (subdomains only) or
/// `host:port`.
pub(crate) fn host_allowed(allow: &[String], url: &Url) -> bool {
    let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    let port = url.port_or_known_default();
    allow.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        if let Some(domain) = entry.strip_prefix("*.") {
            host.ends_with(&format!(".{domain}"))
        } else if let Some((h, p)) = entry.rsplit_once(':')
            && let Ok(p) = p.parse::<u16>()
        {
            h == host && Some(p) == port
        } else {
            entry == host
        }
    })
}

/// Looks up a secret the plugin references; `Err` is already the error to return.
pub(crate) trait SecretSource {
    /// The value of a granted secret.
    fn secret(
        &mut self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<String, HttpError>> + Send;
}

/// Replaces `{{secret:NAME}}` placeholders.
async fn fill(template: &str, secrets: &mut impl SecretSource) -> Result<String, HttpError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{secret:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{secret:".len()..];
        let Some(end) = after.find("}}") else {
            return Err(HttpError::InvalidRequest(
                "unterminated `{{secret:` placeholder in a header".to_string(),
            ));
        };
        out.push_str(&secrets.secret(after[..end].trim()).await?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The limits of one request.
pub(crate) struct HttpLimits<'a> {
    pub plugin: &'a str,
    pub allow: &'a [String],
    pub max_response_bytes: u64,
    pub timeout: Duration,
}

/// Sends a plugin's request under `limits`.
pub(crate) async fn send(
    client: &reqwest::Client,
    req: Request,
    limits: HttpLimits<'_>,
    secrets: &mut impl SecretSource,
) -> Result<Response, HttpError> {
    let mut method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| HttpError::InvalidRequest(format!("bad method `{}`", req.method)))?;
    let mut url = Url::parse(&req.url)
        .map_err(|e| HttpError::InvalidRequest(format!("bad url `{}`: {e}", req.url)))?;
    let mut plain = HeaderMap::new();
    let mut secret = HeaderMap::new();
    for h in req.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("bad header name `{}`", h.name)))?;
        let (value, is_secret) = match h.value {
            WitValue::Text(t) => (t, false),
            WitValue::WithSecrets(t) => (fill(&t, secrets).await?, true),
            WitValue::BasicAuth((user, password)) => {
                let pair = format!(
                    "{}:{}",
                    fill(&user, secrets).await?,
                    fill(&password, secrets).await?
                );
                let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
                (format!("Basic {b64}"), true)
            }
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| HttpError::InvalidRequest(format!("bad value for header `{}`", h.name)))?;
        if is_secret {
            value.set_sensitive(true);
            secret.append(name, value);
        } else {
            plain.append(name, value);
        }
    }
    let mut body = req.body;
    let timeout = req
        .timeout_ms
        .map(|ms| Duration::from_millis(ms.into()).min(limits.timeout))
        .unwrap_or(limits.timeout);
    let origin = url.origin();
    let run = async {
        for hop in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(HttpError::InvalidRequest(format!(
                    "only http and https URLs are allowed, not `{}`",
                    url.scheme()
                )));
            }
            if !host_allowed(limits.allow, &url) {
                let host = url.host_str().unwrap_or("");
                let what = if hop == 0 { "host" } else { "redirect to host" };
                return Err(HttpError::Denied(format!(
                    "{what} `{host}` is not granted to plugin `{}` (allowed: {})",
                    limits.plugin,
                    if limits.allow.is_empty() {
                        "none".to_string()
                    } else {
                        limits.allow.join(", ")
                    }
                )));
            }
            let mut headers = plain.clone();
            if url.origin() == origin {
                headers.extend(secret.clone());
            }
            let mut rb = client.request(method.clone(), url.clone()).headers(headers);
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            let mut resp = rb.send().await.map_err(|e| transport(&e))?;
            let status = resp.status();
            if status.is_redirection()
                && let Some(loc) = resp.headers().get(reqwest::header::LOCATION)
            {
                let loc = loc.to_str().map_err(|_| {
                    HttpError::Transport("redirect with a non-text Location".to_string())
                })?;
                url = url.join(loc).map_err(|e| {
                    HttpError::Transport(format!("redirect to a bad location `{loc}`: {e}"))
                })?;
                if status == reqwest::StatusCode::SEE_OTHER
                    || (matches!(status.as_u16(), 301 | 302) && method == reqwest::Method::POST)
                {
                    method = reqwest::Method::GET;
                    body = None;
                }
                continue;
            }
            let max = limits.max_response_bytes;
            if let Some(len) = resp.content_length()
                && len > max
            {
                return Err(HttpError::TooLarge(max));
            }
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let mut bytes = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
                if (bytes.len() + chunk.len()) as u64 > max {
                    return Err(HttpError::TooLarge(max));
                }
                bytes.extend_from_slice(&chunk);
            }
            return Ok(Response {
                status: status.as_u16(),
                headers,
                body: bytes,
            });
        }
        Err(HttpError::Transport(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or(Err(HttpError::Timeout))
}

fn transport(e: &reqwest::Error) -> HttpError {
    if e.is_timeout() {
        return HttpError::Timeout;
    }
    // Without the URL: its query may carry a token.
    let mut message = e.to_string();
    if let Some(u) = e.url() {
        message = message.replace(u.as_str(), "<url>");
    }
    HttpError::Transport(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(allow: &[&str], url: &str) -> bool {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        host_allowed(&allow, &Url::parse(url).unwrap())
    }

    #[test]
    fn the_allow_list_matches_hosts_subdomains_and_ports() {
        assert!(allowed(&["slack.com"], "https://slack.com/api"));
        assert!(!allowed(&["slack.com"], "https://evil-slack.com/"));
        assert!(!allowed(&["slack.com"], "https://slack.com.evil.io/"));
        assert!(allowed(
            &["*.service-now.com"],
            "https://acme.service-now.com/"
        ));
        assert!(!allowed(&["*.service-now.com"], "https://service-now.com/"));
        assert!(allowed(&["127.0.0.1:8080"], "http://127.0.0.1:8080/x"));
        assert!(!allowed(&["127.0.0.1:8080"], "http://127.0.0.1:8081/x"));
        assert!(allowed(&["127.0.0.1"], "http://127.0.0.1:9/x"));
        assert!(!allowed(&[], "http://127.0.0.1/"));
    }
}
