//! Authoring aids for catalog authors: validate an item, preview its form, try a template,
//! simulate a fulfillment — without saving anything.

use axum::Json;
use axum::extract::State;
use pao_core::catalog::{Diagnostic, load_item};
use pao_core::vars::{Context, Engine, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Body;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// An item given inline (`yaml`) or by id (`item_id`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemSource {
    /// The item file's text.
    pub yaml: Option<String>,
    /// Or an item of the loaded catalog.
    pub item_id: Option<String>,
    /// File name used in diagnostics (default `item.yaml`).
    pub file: Option<String>,
    /// Field values (simulation only).
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Value>,
}

fn diagnostics_json(d: &[Diagnostic]) -> Value {
    serde_json::to_value(d).unwrap_or(Value::Null)
}

/// Parses and checks an inline item on a blocking thread: a large item takes CPU that must not
/// hold up the async workers (heartbeats, other requests).
async fn load_inline(
    state: &AppState,
    src: &ItemSource,
) -> Result<(Option<pao_core::catalog::LoadedItem>, Vec<Diagnostic>), ApiError> {
    let yaml = src
        .yaml
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("send `yaml` (the item file's text)"))?;
    if yaml.len() > pao_core::catalog::MAX_FILE_BYTES {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "PAO-API-BODY-TOO-LARGE",
            format!(
                "an item file may have at most {} bytes",
                pao_core::catalog::MAX_FILE_BYTES
            ),
        ));
    }
    let file = src.file.as_deref().unwrap_or("item.yaml").to_string();
    let yaml = yaml.to_string();
    let options = state.load_options.clone();
    tokio::task::spawn_blocking(move || load_item(&file, &yaml, &options))
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "PAO-API-INTERNAL",
                format!("checking the item stopped: {e}"),
            )
        })
}

/// `POST /validate/catalog-item`: diagnostics of one item (`valid` is false when any is an
/// error). Always `200` when the body is well-formed: the verdict is in the document.
pub async fn validate(
    State(state): State<AppState>,
    Caller(_who): Caller,
    Body(src): Body<ItemSource>,
) -> Result<Json<Value>, ApiError> {
    let (item, diags) = load_inline(&state, &src).await?;
    let errors = diags.iter().filter(|d| d.is_error()).count();
    Ok(Json(json!({
        "valid": item.is_some() && errors == 0,
        "id": item.as_ref().map(|i| i.id().to_string()),
        "errors": errors,
        "warnings": diags.len() - errors,
        "diagnostics": diagnostics_json(&diags),
    })))
}

/// `POST /preview/form`: the form schema an item would produce.
pub async fn preview_form(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(src): Body<ItemSource>,
) -> Result<Json<Value>, ApiError> {
    if let Some(id) = &src.item_id {
        let item = super::visible_item(&state, &who, id)?;
        return Ok(Json(
            json!({ "schema": pao_core::form::form_schema(&item.item), "diagnostics": [] }),
        ));
    }
    let (item, diags) = load_inline(&state, &src).await?;
    match item {
        Some(i) => Ok(Json(json!({
            "schema": pao_core::form::form_schema(&i.item),
            "diagnostics": diagnostics_json(&diags),
        }))),
        None => Err(ApiError::unprocessable(
            "PAO-API-INVALID-ITEM",
            "the item has errors; fix them to preview its form",
            diagnostics_json(&diags),
        )),
    }
}

/// Body of `POST /test/variables`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestVariables {
    /// A template (`Hello ${{ user.name }}`).
    pub template: Option<String>,
    /// Or a bare expression (`fields.env == 'prod'`).
    pub expression: Option<String>,
    /// Scope values: `fields`, `user`, `metadata`, `request`, `system`, `env`, `outputs`,
    /// `computed`, `secrets`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: serde_json::Map<String, Value>,
}

/// `POST /test/variables`: renders a template or evaluates an expression against a context
/// the caller gives; errors come back located, with a caret under the template.
pub async fn test_variables(
    Caller(who): Caller,
    Body(body): Body<TestVariables>,
) -> Result<Json<Value>, ApiError> {
    let engine = Engine::new();
    let scopes = [
        ("user", Scope::User),
        ("metadata", Scope::Metadata),
        ("request", Scope::Request),
        ("system", Scope::System),
        ("env", Scope::Env),
        ("fields", Scope::Fields),
        ("outputs", Scope::Outputs),
        ("computed", Scope::Computed),
        ("secrets", Scope::Secrets),
    ];
    for k in body.context.keys() {
        if !scopes.iter().any(|(n, _)| n == k) {
            return Err(ApiError::unprocessable(
                "PAO-API-INVALID-BODY",
                format!("unknown scope `{k}` in `context`"),
                json!([{ "pointer": format!("/context/{k}"), "message": "unknown scope" }]),
            ));
        }
    }
    let default_user = who.to_scope();
    let mut ctx = Context::new();
    for (name, scope) in scopes {
        if let Some(v) = body.context.get(name) {
            ctx = ctx.with(scope, v);
        } else if name == "user" {
            ctx = ctx.with(scope, &default_user);
        }
    }
    let error = |e: pao_core::vars::VarError| {
        let (line, column) = e.line_col().unzip();
        json!({
            "ok": false,
            "error": {
                "kind": e.kind().as_str(),
                "message": e.message(),
                "line": line,
                "column": column,
                "snippet": e.snippet(),
                "hint": e.hint(),
            }
        })
    };
    let out = match (&body.template, &body.expression) {
        (Some(t), None) => match engine.compile(t) {
            Ok(tpl) => match tpl.render_tracked(&ctx) {
                Ok(r) => {
                    json!({ "ok": true, "value": r.value, "uses_secrets": !r.secrets.is_empty() })
                }
                Err(e) => error(e),
            },
            Err(e) => error(e),
        },
        (None, Some(x)) => match engine.compile_expression(x) {
            Ok(ex) => match ex.eval(&ctx) {
                Ok(v) => json!({ "ok": true, "value": v }),
                Err(e) => error(e),
            },
            Err(e) => error(e),
        },
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of `template` or `expression`",
            ));
        }
    };
    Ok(Json(out))
}

/// `POST /simulate/fulfillment`: what a request for `item_id` with `fields` would do — the
/// plan, which actions run, rendered inputs (secrets masked), approval, worst-case time —
/// without running anything.
pub async fn simulate(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(src): Body<ItemSource>,
) -> Result<Json<Value>, ApiError> {
    let id = src
        .item_id
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("send `item_id` and `fields`"))?;
    super::visible_item(&state, &who, id)?;
    let fields = src.fields.clone().unwrap_or_else(|| json!({}));
    let sim = state.orch.simulate(&who, id, &fields).await?;
    Ok(Json(serde_json::to_value(&sim).unwrap_or(Value::Null)))
}
