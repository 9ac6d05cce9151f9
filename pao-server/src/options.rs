//! The HTTP step of dynamic field options (`source.http`; the rules are
//! [`pao_core::service::options`]): a GET cut at 1 MiB and 5 s, redirects followed within the
//! source's origin only, never from https to http ([`redirect_policy`]).

use std::time::Duration;

use pao_core::service::{FetchError, OptionFetcher};
use serde_json::Value;

const MAX_BYTES: usize = 1 << 20;

/// Redirects followed per options call.
const MAX_REDIRECTS: usize = 3;

/// The options client's redirect policy: at most [`MAX_REDIRECTS`] hops, within the origin
/// (scheme, host, port) of the source's URL. Its headers may hold `env` values (API keys),
/// which reqwest would forward to any host but for `Authorization` and `Cookie`.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let same_origin = attempt
            .previous()
            .first()
            .is_none_or(|first| first.origin() == attempt.url().origin());
        if same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Dynamic field options fetched with reqwest: 5 s, at most 1 MiB, redirects within the
/// origin ([`redirect_policy`]).
pub struct HttpOptions<'a>(pub &'a reqwest::Client);

fn source_error(e: reqwest::Error) -> FetchError {
    FetchError::Source(format!("options source: {}", e.without_url()))
}

#[async_trait::async_trait]
impl OptionFetcher for HttpOptions<'_> {
    async fn get_json(&self, url: &str, headers: &[(String, String)]) -> Result<Value, FetchError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| FetchError::InvalidUrl(format!("`{url}` is not a URL: {e}")))?;
        let mut req = self.0.get(parsed).timeout(Duration::from_secs(5));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let mut resp = req.send().await.map_err(source_error)?;
        if resp.status().is_redirection() {
            return Err(FetchError::Source(format!(
                "options source answered {} with a redirect to another origin, which PAO does \
                 not follow",
                resp.status()
            )));
        }
        if !resp.status().is_success() {
            return Err(FetchError::Source(format!(
                "options source answered {}",
                resp.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(source_error)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BYTES {
                return Err(FetchError::Source(
                    "options source answered more than 1 MiB".into(),
                ));
            }
        }
        serde_json::from_slice(&body)
            .map_err(|e| FetchError::Source(format!("options source answered invalid JSON: {e}")))
    }
}
