//! Dynamic field options from `source.http`: the URL and headers are templates over the
//! values of the fields the source depends on (given as query parameters) and the caller;
//! the response is cut at 1 MiB, the item array found with JSONPath (`items`), and each item
//! mapped to `{value, label}`.

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
    let fields: Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let fields = Value::Object(fields);
    let user = who.to_scope();
    let env = Value::Object(state.orch_env());
    let metadata = serde_json::to_value(&item.item.metadata).unwrap_or(Value::Null);
    let ctx = Context::new()
        .with(Scope::Fields, &fields)
        .with(Scope::User, &user)
        .with(Scope::Env, &env)
        .with(Scope::Metadata, &metadata);
    let render = |t: &str| -> Result<String, ApiError> {
        let tpl = engine.compile(t).map_err(|e| {
            ApiError::unprocessable("PAO-API-OPTIONS-TEMPLATE", e.to_string(), json!([]))
        })?;
        tpl.render(&ctx).map_err(|e| {
            ApiError::unprocessable(
                "PAO-API-OPTIONS-TEMPLATE",
                format!("{e} (pass the fields this source depends on as query parameters)"),
                json!([]),
            )
        })
    };
    let url = render(&src.url)?;
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
    for (k, v) in src.headers.iter().flatten() {
        req = req.header(k.as_str(), render(v)?);
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| bad_gateway(format!("options source: {}", e.without_url())))?;
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
