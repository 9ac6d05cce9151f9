//! Plugin HTTP: every request and every redirect hop must go to an allow-listed host;
//! secret references in headers are filled in here, so the plugin never sees the values, and
//! they are dropped when a redirect leaves the origin. Response bodies are capped.
//!
//! An allow-list entry is a host (`slack.com`, `*.example.com` for subdomains, an IP address)
//! with an optional port: none means the scheme's default port only, `:8443` that port, `:*`
//! any port. Names are resolved when connecting, and an address that is loopback, link-local
//! (169.254.0.0/16, where cloud metadata services answer), private (RFC 1918, 100.64.0.0/10,
//! fc00::/7) or otherwise not public is used only when the grant names it: as an IP-address
//! entry, or inside a range entry such as `10.0.0.0/8` (ranges name addresses only, they do
//! not match URLs). The check runs on the addresses actually connected to, so a name that
//! resolves to a public address when checked and to a private one later gains nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::bindings::pao::action::http::{HeaderValue as WitValue, HttpError, Request, Response};

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// Splits an entry into its host and port rule: `None` = the scheme's default port,
/// `Some(None)` = any port, `Some(Some(p))` = port `p`.
fn split_port(entry: &str) -> (&str, Option<Option<u16>>) {
    if let Some(h) = entry.strip_suffix(":*") {
        return (h, Some(None));
    }
    if let Some((h, p)) = entry.rsplit_once(':')
        && let Ok(p) = p.parse::<u16>()
        && (!h.contains(':') || h.ends_with(']'))
    {
        return (h, Some(Some(p)));
    }
    (entry, None)
}

/// Whether `url`'s host and port are on the allow-list.
pub(crate) fn host_allowed(allow: &[String], url: &Url) -> bool {
    let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    // `None` when the URL uses its scheme's default port.
    let port = url.port();
    allow.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        if entry.contains('/') {
            return false;
        }
        let (h, rule) = split_port(&entry);
        let host_matches = match h.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => h == host,
        };
        let port_matches = match rule {
            None => port.is_none(),
            Some(None) => true,
            Some(Some(p)) => url.port_or_known_default() == Some(p),
        };
        host_matches && port_matches
    })
}

/// The addresses a grant names: its IP-address entries and its ranges (`10.0.0.0/8`).
#[derive(Debug, Clone, Default)]
pub(crate) struct NamedAddresses(Vec<(IpAddr, u8)>);

impl NamedAddresses {
    pub(crate) fn of(allow: &[String]) -> NamedAddresses {
        let mut named = Vec::new();
        for entry in allow {
            let (h, _) = split_port(entry.trim());
            let (ip, prefix) = match h.split_once('/') {
                Some((ip, bits)) => (ip, bits.parse::<u8>().ok()),
                None => (h, None),
            };
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = ip.parse::<IpAddr>() {
                let full = if ip.is_ipv4() { 32 } else { 128 };
                named.push((ip, prefix.unwrap_or(full).min(full)));
            }
        }
        NamedAddresses(named)
    }

    /// Whether a connection to `ip` is allowed: a public address, or one the grant names.
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.0.iter().any(|(net, bits)| in_range(ip, *net, *bits))
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether `ip` is a public unicast address (not loopback, link-local, private, shared,
/// unspecified, broadcast, multicast, documentation or reserved).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = a.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., a, b, c, d] = a.octets();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0xdb8))
        }
    }
}

/// The error of a name that resolves to no address the grant allows.
#[derive(Debug)]
struct NotGranted(String);

impl std::fmt::Display for NotGranted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotGranted {}

/// Resolves names for one plugin's client, keeping only the addresses its grant allows.
struct GrantResolver(NamedAddresses);

impl reqwest::dns::Resolve for GrantResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let named = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| named.allows(a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(Box::new(NotGranted(format!(
                    "`{host}` resolves to {}, a loopback, link-local or private address the \
                     grant does not name (add it, or its range, to http_hosts)",
                    found[0].ip()
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of a plugin granted `allow`: no proxy, no redirects (followed by hand so
/// each hop meets the allow-list), names resolved under [`GrantResolver`].
pub(crate) fn client(allow: &[String]) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("pao-wasm-host/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GrantResolver(NamedAddresses::of(allow))))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
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
            let literal = match url.host() {
                Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
                Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
                _ => None,
            };
            if let Some(ip) = literal
                && !NamedAddresses::of(limits.allow).allows(ip)
            {
                return Err(HttpError::Denied(format!(
                    "address `{ip}` is not public and not named by the grant of plugin `{}`",
                    limits.plugin
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
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(n) = s.downcast_ref::<NotGranted>() {
            return HttpError::Denied(n.0.clone());
        }
        source = s.source();
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
        assert!(!allowed(&[], "http://127.0.0.1/"));
    }

    #[test]
    fn an_entry_without_a_port_means_the_default_port_only() {
        assert!(allowed(&["127.0.0.1"], "http://127.0.0.1/x"));
        assert!(!allowed(&["127.0.0.1"], "http://127.0.0.1:9/x"));
        assert!(allowed(&["127.0.0.1:*"], "http://127.0.0.1:9/x"));
        assert!(allowed(&["slack.com"], "https://slack.com:443/api"));
        assert!(!allowed(&["slack.com"], "https://slack.com:8443/api"));
        assert!(!allowed(&["slack.com"], "http://slack.com:443/api"));
        assert!(allowed(&["slack.com:8443"], "https://slack.com:8443/api"));
        assert!(!allowed(&["*.example.com"], "https://a.example.com:22/"));
        assert!(allowed(&["*.example.com:*"], "https://a.example.com:22/"));
        assert!(allowed(&["[::1]:8080"], "http://[::1]:8080/"));
        assert!(allowed(&["[::1]"], "http://[::1]/"));
        // A range names addresses, it does not match URLs.
        assert!(!allowed(&["10.0.0.0/8"], "http://10.1.2.3/"));
    }

    #[test]
    fn private_addresses_need_to_be_named() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = NamedAddresses::of(&[]);
        for private in [
            "127.0.0.1",
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!none.allows(ip(private)), "{private}");
        }
        for public in ["1.1.1.1", "140.82.112.3", "2606:4700::1111"] {
            assert!(none.allows(ip(public)), "{public}");
        }
        let named = NamedAddresses::of(&[
            "127.0.0.1:*".to_string(),
            "10.0.0.0/8".to_string(),
            "slack.com".to_string(),
        ]);
        assert!(named.allows(ip("127.0.0.1")));
        assert!(!named.allows(ip("127.0.0.2")));
        assert!(named.allows(ip("10.200.0.1")));
        assert!(!named.allows(ip("169.254.169.254")));
    }
}
