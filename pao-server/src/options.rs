//! Dynamic field options from `source.http`: the URL and headers are templates over the
//! values of the fields the source depends on (given as query parameters) and the caller;
//! the response is cut at 1 MiB, the item array found with JSONPath (`items`), and each item
//! mapped to `{value, label}`.
//!
//! Only the query parameters naming a field the templates read become `fields.*` (others are
//! ignored), each at most [`MAX_PARAM_BYTES`] without control characters; the URL is a URL
//! template, so a value cannot leave its place in the path or query. Redirects are followed
//! within the source's origin only, never from https to http ([`redirect_policy`]).

use std::collections::BTreeMap;
use std::time::Duration;

use pao_core::authz::Principal;
use pao_core::catalog::LoadedItem;
use pao_core::catalog::model::HttpSource;
use pao_core::vars::{Context, Engine, Scope};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::state::AppState;

const MAX_BYTES: usize = 1 << 20;

/// The longest value of a query parameter that becomes a field value.
pub const MAX_PARAM_BYTES: usize = 256;

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

fn bad_param(msg: String) -> ApiError {
    ApiError::unprocessable("PAO-API-OPTIONS-PARAM", msg, json!([]))
}

/// The field values of the request: the query parameters naming a field that `templates`
/// read, each checked.
fn field_values(
    templates: &[&pao_core::vars::Template],
    params: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let read: std::collections::BTreeSet<String> = templates
        .iter()
        .flat_map(|t| t.references())
        .filter(|r| r.scope == Scope::Fields)
        .filter_map(|r| r.path.first().cloned())
        .collect();
    let mut fields = Map::new();
    for (k, v) in params.iter().filter(|(k, _)| read.contains(*k)) {
        if v.len() > MAX_PARAM_BYTES {
            return Err(bad_param(format!(
                "query parameter `{k}` is longer than {MAX_PARAM_BYTES} bytes"
            )));
        }
        if v.chars().any(char::is_control) {
            return Err(bad_param(format!(
                "query parameter `{k}` holds a control character"
            )));
        }
        fields.insert(k.clone(), Value::String(v.clone()));
    }
    Ok(Value::Object(fields))
}

fn bad_gateway(msg: String) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_GATEWAY,
        "PAO-API-OPTIONS-SOURCE",
        msg,
    )
}

/// Fetches and maps the options.
pub async fn fetch_http_options(
    state: &AppState,
    who: &Principal,
    item: &LoadedItem,
    src: &HttpSource,
    params: &BTreeMap<String, String>,
) -> Result<Vec<Value>, ApiError> {
    let engine = Engine::new();
    let template_error = |e: pao_core::vars::VarError| {
        ApiError::unprocessable("PAO-API-OPTIONS-TEMPLATE", e.to_string(), json!([]))
    };
    let url_template = engine.compile_url(&src.url).map_err(template_error)?;
    let mut headers = Vec::new();
    for (k, v) in src.headers.iter().flatten() {
        headers.push((k.as_str(), engine.compile(v).map_err(template_error)?));
    }
    let mut templates = vec![&url_template];
    templates.extend(headers.iter().map(|(_, t)| t));
    let fields = field_values(&templates, params)?;
    let user = who.to_scope();
    let env = Value::Object(state.orch_env());
    let metadata = serde_json::to_value(&item.item.metadata).unwrap_or(Value::Null);
    let ctx = Context::new()
        .with(Scope::Fields, &fields)
        .with(Scope::User, &user)
        .with(Scope::Env, &env)
        .with(Scope::Metadata, &metadata);
    let render = |tpl: &pao_core::vars::Template| -> Result<String, ApiError> {
        tpl.render(&ctx).map_err(|e| {
            ApiError::unprocessable(
                "PAO-API-OPTIONS-TEMPLATE",
                format!("{e} (pass the fields this source depends on as query parameters)"),
                json!([]),
            )
        })
    };
    let url = render(&url_template)?;
    let parsed = reqwest::Url::parse(&url).map_err(|e| {
        ApiError::unprocessable(
            "PAO-API-OPTIONS-TEMPLATE",
            format!("`{url}` is not a URL: {e}"),
            json!([]),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::unprocessable(
            "PAO-API-OPTIONS-TEMPLATE",
            "only http and https sources",
            json!([]),
        ));
    }
    let mut req = state.http.get(parsed).timeout(Duration::from_secs(5));
    for (k, t) in &headers {
        req = req.header(*k, render(t)?);
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| bad_gateway(format!("options source: {}", e.without_url())))?;
    if resp.status().is_redirection() {
        return Err(bad_gateway(format!(
            "options source answered {} with a redirect to another origin, which PAO does not \
             follow",
            resp.status()
        )));
    }
    if !resp.status().is_success() {
        return Err(bad_gateway(format!(
            "options source answered {}",
            resp.status()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| bad_gateway(format!("options source: {}", e.without_url())))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BYTES {
            return Err(bad_gateway(
                "options source answered more than 1 MiB".into(),
            ));
        }
    }
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| bad_gateway(format!("options source answered invalid JSON: {e}")))?;
    let path = src.items.as_deref().unwrap_or("$");
    let jp = serde_json_path::JsonPath::parse(path).map_err(|e| {
        ApiError::unprocessable(
            "PAO-API-OPTIONS-TEMPLATE",
            format!("`items` is not JSONPath: {e}"),
            json!([]),
        )
    })?;
    let found = jp.query(&doc).all();
    let list: Vec<&Value> = match found.as_slice() {
        [Value::Array(a)] => a.iter().collect(),
        other => other.to_vec(),
    };
    let pick = |v: &Value, key: Option<&String>| -> Value {
        match (v, key) {
            (Value::Object(o), Some(k)) => o.get(k).cloned().unwrap_or(Value::Null),
            (other, _) => other.clone(),
        }
    };
    Ok(list
        .into_iter()
        .take(5000)
        .map(|v| {
            let value = pick(v, src.value.as_ref());
            let label = match src.label.as_ref() {
                Some(_) => pick(v, src.label.as_ref()),
                None => value.clone(),
            };
            json!({ "value": value, "label": label })
        })
        .collect())
}
