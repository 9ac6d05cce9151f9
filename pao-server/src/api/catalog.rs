//! Catalog browsing: list, category, search, item details, form schema, dynamic options.

use axum::Json;
use axum::extract::{Path, State};
use pao_core::authz::{Authorizer, ItemAccessAuthorizer, Permission};
use pao_core::catalog::LoadedItem;
use pao_core::catalog::model::{CatalogSourceKind, FieldOption, FulfillmentMode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Query, cursor, visible_item};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Categories when `catalog.yaml` declares none: the eight platform domains.
pub const DEFAULT_CATEGORIES: &[&str] = &[
    "compute",
    "database",
    "messaging",
    "networking",
    "storage",
    "security",
    "monitoring",
    "identity",
];

/// Filters of `GET /catalog`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CatalogQuery {
    /// Only this category.
    pub category: Option<String>,
    /// Only items with this tag.
    pub tag: Option<String>,
    /// Only items available in this environment.
    pub environment: Option<String>,
    /// Only items owned by this team.
    pub owner: Option<String>,
    /// Include deprecated and retired items (default: active and deprecated).
    pub include_retired: Option<bool>,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The summary of an item in lists.
pub fn summary(item: &LoadedItem) -> Value {
    let m = &item.item.metadata;
    json!({
        "id": m.id,
        "name": m.name,
        "description": m.description,
        "version": m.version,
        "category": m.category,
        "tags": m.tags.clone().unwrap_or_default(),
        "owner": m.owner.team,
        "mode": match item.item.fulfillment.mode { FulfillmentMode::Manual => "manual", FulfillmentMode::Automated => "automated" },
        "approval": item.item.fulfillment.approval.is_some(),
        "environments": m.access.as_ref().and_then(|a| a.environments.clone()),
        "status": lifecycle_status(item),
        "sla": m.sla,
        "content_hash": item.content_hash,
    })
}

fn lifecycle_status(item: &LoadedItem) -> String {
    item.item
        .lifecycle
        .as_ref()
        .and_then(|l| l.status)
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "active".to_string())
}

pub(crate) fn listing(
    state: &AppState,
    who: &pao_core::authz::Principal,
    q: &CatalogQuery,
) -> Result<Value, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let after = q.cursor.as_deref().map(cursor::decode_text).transpose()?;
    let catalog = state.orch.catalog();
    let mut items: Vec<&std::sync::Arc<LoadedItem>> = catalog
        .items()
        .filter(|i| ItemAccessAuthorizer.allowed(who, Permission::View, &i.item, None))
        .filter(|i| {
            q.category
                .as_ref()
                .is_none_or(|c| i.item.metadata.category == *c)
        })
        .filter(|i| {
            q.owner
                .as_ref()
                .is_none_or(|o| i.item.metadata.owner.team == *o)
        })
        .filter(|i| {
            q.tag
                .as_ref()
                .is_none_or(|t| i.item.metadata.tags.iter().flatten().any(|x| x == t))
        })
        .filter(|i| {
            q.environment.as_ref().is_none_or(|e| {
                match i
                    .item
                    .metadata
                    .access
                    .as_ref()
                    .and_then(|a| a.environments.as_ref())
                {
                    None => true,
                    Some(envs) => envs.iter().any(|x| x == e || x == "*"),
                }
            })
        })
        .filter(|i| q.include_retired == Some(true) || lifecycle_status(i) != "retired")
        .collect();
    items.sort_by(|a, b| a.id().cmp(b.id()));
    let page: Vec<Value> = items
        .iter()
        .filter(|i| after.as_deref().is_none_or(|a| i.id() > a))
        .take(limit + 1)
        .map(|i| summary(i))
        .collect();
    let more = page.len() > limit;
    let page: Vec<Value> = page.into_iter().take(limit).collect();
    let next = if more {
        page.last()
            .and_then(|v| v["id"].as_str())
            .map(cursor::encode_text)
    } else {
        None
    };
    Ok(json!({ "items": page, "total": items.len(), "next_cursor": next }))
}

/// `GET /catalog`: the items the caller may see, sorted by id, paginated.
pub async fn list(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<CatalogQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(listing(&state, &who, &q)?))
}

/// `GET /catalog/{category}`.
pub async fn by_category(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(category): Path<String>,
    Query(mut q): Query<CatalogQuery>,
) -> Result<Json<Value>, ApiError> {
    let catalog = state.orch.catalog();
    let known: Vec<String> = match catalog.settings().and_then(|s| s.categories.as_ref()) {
        Some(c) => c.iter().map(|c| c.id.clone()).collect(),
        None => DEFAULT_CATEGORIES.iter().map(|s| s.to_string()).collect(),
    };
    if !known.contains(&category) {
        return Err(ApiError::not_found(format!(
            "no category `{category}`; categories: {}",
            known.join(", ")
        )));
    }
    q.category = Some(category);
    Ok(Json(listing(&state, &who, &q)?))
}

/// Query of `GET /catalog/search`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The words.
    pub q: String,
    /// At most this many results (default 20).
    pub limit: Option<usize>,
}

/// `GET /catalog/search?q=`: full text over name, description and tags, typo tolerant,
/// with highlighted fragments.
pub async fn search(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.q.trim().is_empty() {
        return Err(ApiError::bad_request("`q` must not be empty"));
    }
    let catalog = state.orch.catalog();
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let hits = state.search.search(&catalog, &q.q, 200)?;
    let results: Vec<Value> = hits
        .into_iter()
        .filter_map(|h| {
            let item = catalog.get(&h.id)?;
            ItemAccessAuthorizer
                .allowed(&who, Permission::View, &item.item, None)
                .then(|| {
                    let mut s = summary(item);
                    s["score"] = json!(h.score);
                    s["highlights"] = h.highlights;
                    s
                })
        })
        .take(limit)
        .collect();
    Ok(Json(json!({ "query": q.q, "results": results })))
}

/// `GET /catalog/items/{item_id}`: the whole item as written, with its version and hash.
pub async fn item(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(item_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let item = visible_item(&state, &who, &item_id)?;
    let can_submit = ItemAccessAuthorizer.allowed(&who, Permission::Submit, &item.item, None);
    Ok(Json(json!({
        "id": item.id(),
        "version": item.version(),
        "content_hash": item.content_hash,
        "file": item.file,
        "can_submit": can_submit,
        "status": lifecycle_status(&item),
        "item": item.item,
    })))
}

/// `GET /catalog/items/{item_id}/schema`: JSON Schema 2020-12 of the form, with UI hints.
pub async fn schema(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(item_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let item = visible_item(&state, &who, &item_id)?;
    Ok(Json(pao_core::form::form_schema(&item.item)))
}

/// `GET /catalog/items/{item_id}/fields/{field_id}/options`: the options of a select-like
/// field, static or from its `source` (catalog items, teams, environments, or an HTTP GET).
/// Values of the fields it depends on come as query parameters.
pub async fn field_options(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((item_id, field_id)): Path<(String, String)>,
    Query(params): Query<std::collections::BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let item = visible_item(&state, &who, &item_id)?;
    let field = item
        .item
        .presentation
        .iter()
        .flat_map(|p| p.groups.iter())
        .flat_map(|g| g.fields.iter())
        .find(|f| f.id == field_id)
        .ok_or_else(|| {
            ApiError::not_found(format!("item `{item_id}` has no field `{field_id}`"))
        })?;
    let catalog = state.orch.catalog();
    let option = |value: &str, label: &str| json!({ "value": value, "label": label });
    if let Some(opts) = &field.options {
        let options: Vec<Value> = opts
            .iter()
            .map(|o| match o {
                FieldOption::Plain(s) => option(s, s),
                FieldOption::Labeled(l) => serde_json::to_value(l).unwrap_or(Value::Null),
            })
            .collect();
        return Ok(Json(
            json!({ "field": field_id, "options": options, "source": "static" }),
        ));
    }
    let Some(source) = &field.source else {
        return Err(ApiError::unprocessable(
            "PAO-API-NO-OPTIONS",
            format!("field `{field_id}` has neither options nor a source"),
            json!([]),
        ));
    };
    if let Some(c) = &source.catalog {
        let settings = catalog.settings();
        let options: Vec<Value> = match c.kind {
            CatalogSourceKind::Items => catalog
                .items()
                .filter(|i| {
                    c.category
                        .as_ref()
                        .is_none_or(|cat| i.item.metadata.category == *cat)
                })
                .filter(|i| ItemAccessAuthorizer.allowed(&who, Permission::View, &i.item, None))
                .map(|i| option(i.id(), &i.item.metadata.name))
                .collect(),
            CatalogSourceKind::Teams => settings
                .and_then(|s| s.teams.as_ref())
                .into_iter()
                .flatten()
                .map(|t| option(&t.id, &t.name))
                .collect(),
            CatalogSourceKind::Environments => settings
                .and_then(|s| s.environments.as_ref())
                .into_iter()
                .flatten()
                .map(|e| option(&e.id, &e.name))
                .collect(),
        };
        return Ok(Json(
            json!({ "field": field_id, "options": options, "source": "catalog" }),
        ));
    }
    if let Some(http) = &source.http {
        let options =
            crate::options::fetch_http_options(&state, &who, &item, http, &params).await?;
        return Ok(Json(
            json!({ "field": field_id, "options": options, "source": "http" }),
        ));
    }
    Err(ApiError::unprocessable(
        "PAO-API-NO-OPTIONS",
        format!("field `{field_id}` has an empty source"),
        json!([]),
    ))
}
