//! Catalog browsing: list, category, search, item details, form schema, dynamic options.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use pao_core::catalog::LoadedItem;
use pao_core::catalog::model::{FulfillmentMode, LifecycleStatus};
use pao_core::service::catalog::item_status;
use pao_core::service::{CatalogFilter, OptionsFrom};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{Query, cursor};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::rendered::{Rendered, json_string, json_with_etag};
use crate::state::AppState;

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
    /// Page size (default 50; 0 counts as 1, above 500 as 500).
    pub limit: Option<usize>,
    /// From `next_cursor` of the previous page.
    #[param(pattern = r"^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$")]
    pub cursor: Option<String>,
}

/// How an item is fulfilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    /// A person does the work (a JIRA ticket).
    Manual,
    /// A chain of actions.
    Automated,
}

/// Where an item is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Offered.
    Active,
    /// Offered, with a notice.
    Deprecated,
    /// No longer offered.
    Retired,
}

/// The service level an item declares.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Sla)]
pub struct SlaDoc {
    /// Target fulfillment time (`4h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fulfillment: Option<String>,
    /// Support hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support: Option<String>,
    /// Availability target (`99.9%`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
}

/// The summary of an item in lists.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemSummary {
    /// Item id (`compute.virtual-machine`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it provides.
    pub description: String,
    /// The item's version.
    pub version: String,
    /// Category id.
    pub category: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The owning team.
    pub owner: String,
    /// How it is fulfilled.
    pub mode: ModeName,
    /// Whether an approval rule applies: the item's own, or `catalog.yaml`'s
    /// `defaults.approval` (its condition decides per request).
    pub approval: bool,
    /// Environments it is available in (`null`: all).
    pub environments: Option<Vec<String>>,
    /// Lifecycle status.
    pub status: ItemStatus,
    /// Service level.
    #[schema(value_type = Option<SlaDoc>)]
    pub sla: Option<pao_core::catalog::model::Sla>,
    /// SHA-256 of the item file.
    pub content_hash: String,
}

/// The summary of an item in lists; `default_rule`: `catalog.yaml` has `defaults.approval`.
pub fn summary(item: &LoadedItem, default_rule: bool) -> ItemSummary {
    let m = &item.item.metadata;
    ItemSummary {
        id: m.id.clone(),
        name: m.name.clone(),
        description: m.description.clone(),
        version: m.version.clone(),
        category: m.category.clone(),
        tags: m.tags.clone().unwrap_or_default(),
        owner: m.owner.team.clone(),
        mode: match item.item.fulfillment.mode {
            FulfillmentMode::Manual => ModeName::Manual,
            FulfillmentMode::Automated => ModeName::Automated,
        },
        approval: item.item.fulfillment.approval.is_some() || default_rule,
        environments: m.access.as_ref().and_then(|a| a.environments.clone()),
        status: match item_status(item) {
            LifecycleStatus::Deprecated => ItemStatus::Deprecated,
            LifecycleStatus::Retired => ItemStatus::Retired,
            LifecycleStatus::Active => ItemStatus::Active,
        },
        sla: m.sla.clone(),
        content_hash: item.content_hash.clone(),
    }
}

/// A page of catalog items, sorted by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogPage {
    /// The items.
    pub items: Vec<ItemSummary>,
    /// Items matching the filters, over all pages.
    pub total: usize,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl CatalogQuery {
    fn filter(&self) -> Result<CatalogFilter, ApiError> {
        Ok(CatalogFilter {
            category: self.category.clone(),
            tag: self.tag.clone(),
            environment: self.environment.clone(),
            owner: self.owner.clone(),
            include_retired: self.include_retired == Some(true),
            limit: self.limit,
            after: self
                .cursor
                .as_deref()
                .map(cursor::decode_text)
                .transpose()?,
        })
    }
}

/// `CatalogPage` as JSON, from the summaries serialized once per catalog.
fn page_json(page: &pao_core::service::CatalogPage, rendered: &Rendered) -> String {
    let mut out = String::with_capacity(64 + page.items.len() * 512);
    out.push_str("{\"items\":[");
    for (n, item) in page.items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(rendered.summary(item));
    }
    out.push_str("],\"total\":");
    out.push_str(&page.total.to_string());
    out.push_str(",\"next_cursor\":");
    match page.next.as_deref() {
        Some(next) => out.push_str(&json_string(&cursor::encode_text(next))),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

/// `GET /catalog`: the items the caller may see, sorted by id, paginated. Answers carry an
/// `ETag`; `If-None-Match` with it gives `304 Not Modified`.
pub async fn list(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Query(q): Query<CatalogQuery>,
) -> Result<Response, ApiError> {
    let rendered = state.rendered.of(&state.orch.catalog());
    let page = state.orch.catalog_page(&who, &q.filter()?);
    Ok(json_with_etag(&headers, page_json(&page, &rendered)))
}

/// `GET /catalog/{category}`.
pub async fn by_category(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(category): Path<String>,
    Query(q): Query<CatalogQuery>,
) -> Result<Response, ApiError> {
    let rendered = state.rendered.of(&state.orch.catalog());
    let page = state.orch.category_page(&who, &category, &q.filter()?)?;
    Ok(json_with_etag(&headers, page_json(&page, &rendered)))
}

/// Query of `GET /catalog/search`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The words (not only white space).
    #[param(
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub q: String,
    /// At most this many results (default 20; 0 counts as 1, above 100 as 100).
    pub limit: Option<usize>,
}

/// A search hit: the item's summary with relevance and highlights.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    /// The item.
    #[serde(flatten)]
    pub item: ItemSummary,
    /// Relevance (higher is better).
    pub score: f32,
    /// Fragments with `<mark>` around the matches, by field (`name`, `description`).
    #[schema(value_type = Object)]
    pub highlights: Value,
}

/// Search results, best first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    /// The words searched for.
    pub query: String,
    /// The hits.
    pub results: Vec<SearchHit>,
}

/// `GET /catalog/search?q=`: full text over name, description and tags, typo tolerant,
/// with highlighted fragments.
pub async fn search(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    if q.q.trim().is_empty() {
        return Err(ApiError::bad_request("`q` must not be empty"));
    }
    let catalog = state.orch.catalog();
    let rendered = state.rendered.of(&catalog);
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    // The best 200 are looked at; hits the caller may not see are skipped.
    let hits = state.search.search(&catalog, &q.q, (limit, 200), |id| {
        catalog
            .get(id)
            .is_some_and(|item| state.orch.may_see_item(&who, item))
    })?;
    let mut out = String::with_capacity(64 + limit * 640);
    out.push_str("{\"query\":");
    out.push_str(&json_string(&q.q));
    out.push_str(",\"results\":[");
    for (n, h) in hits.iter().enumerate() {
        let Some(item) = catalog.get(&h.id) else {
            continue;
        };
        if n > 0 {
            out.push(',');
        }
        // `SearchHit`: the summary's members, then `score` and `highlights`.
        let summary = rendered.summary(item);
        out.push_str(summary.strip_suffix('}').unwrap_or(summary));
        out.push_str(",\"score\":");
        out.push_str(&serde_json::to_string(&h.score).unwrap_or_else(|_| "0".into()));
        out.push_str(",\"highlights\":");
        out.push_str(&h.highlights.to_string());
        out.push('}');
    }
    out.push_str("]}");
    Ok(json_with_etag(&headers, out))
}

/// A maintenance window of an item, now.
#[derive(Debug, Serialize, ToSchema)]
pub struct MaintenanceWindow {
    /// When windows start: a 5-field cron expression in UTC (`0 2 * * SUN`).
    pub cron: String,
    /// How long each lasts (`2h`).
    pub duration: String,
    /// Whether a window is in progress.
    pub in_progress: bool,
    /// When the window in progress ends.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The next start.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_start: Option<chrono::DateTime<chrono::Utc>>,
    /// The end of the next window.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_end: Option<chrono::DateTime<chrono::Utc>>,
}

/// An item as written.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemDetail {
    /// Item id.
    pub id: String,
    /// The item's version.
    pub version: String,
    /// SHA-256 of the item file.
    pub content_hash: String,
    /// The file, relative to the catalog folder.
    pub file: String,
    /// Whether the caller may submit it.
    pub can_submit: bool,
    /// Lifecycle status.
    pub status: ItemStatus,
    /// Its maintenance windows (`lifecycle.maintenance`) now.
    pub maintenance: Vec<MaintenanceWindow>,
    /// The item (catalog Schema v2.0: `apiVersion`, `kind`, `metadata`, `presentation`,
    /// `fulfillment`, ...).
    #[schema(value_type = Object)]
    pub item: Value,
}

/// `ItemDetail` without `item`, which is copied in already serialized.
#[derive(Serialize)]
struct DetailHead<'a> {
    id: &'a str,
    version: &'a str,
    content_hash: &'a str,
    file: &'a str,
    can_submit: bool,
    status: ItemStatus,
    maintenance: Vec<MaintenanceWindow>,
}

/// `GET /catalog/items/{item_id}`: the whole item as written, with its version and hash.
pub async fn item(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(item_id): Path<String>,
) -> Result<Response, ApiError> {
    let rendered = state.rendered.of(&state.orch.catalog());
    let item = state.orch.visible_item(&who, &item_id)?;
    let head = DetailHead {
        id: item.id(),
        version: item.version(),
        content_hash: &item.content_hash,
        file: &item.file,
        can_submit: state.orch.may_submit(&who, &item),
        status: summary(&item, false).status,
        maintenance: state
            .orch
            .maintenance_of(&item)
            .into_iter()
            .map(|w| MaintenanceWindow {
                cron: w.cron,
                duration: w.duration,
                in_progress: w.in_progress,
                ends_at: w.ends_at,
                next_start: w.next_start,
                next_end: w.next_end,
            })
            .collect(),
    };
    let head = serde_json::to_string(&head)
        .map_err(|e| ApiError::unavailable(format!("item detail: {e}")))?;
    // A definition the catalog replaced since `rendered` was taken is serialized here.
    let written: std::borrow::Cow<str> = match rendered.catalog().get(item.id()) {
        Some(current) if Arc::ptr_eq(current, &item) => rendered.item(&item).into(),
        _ => serde_json::to_string(&item.item)
            .unwrap_or_else(|_| "null".into())
            .into(),
    };
    let mut out = String::with_capacity(head.len() + written.len() + 16);
    out.push_str(head.strip_suffix('}').unwrap_or(&head));
    out.push_str(",\"item\":");
    out.push_str(&written);
    out.push('}');
    Ok(json_with_etag(&headers, out))
}

/// A form as JSON Schema 2020-12 (`type: object`, `properties`, `required`, conditions as
/// `if`/`then`) with UI hints (`x-ui`: groups, order, widgets, help texts).
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct FormSchema(pub Value);

/// `GET /catalog/items/{item_id}/schema`: JSON Schema 2020-12 of the form, with UI hints.
pub async fn schema(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(item_id): Path<String>,
) -> Result<Response, ApiError> {
    let form = state.orch.form_of(&who, &item_id)?;
    Ok(json_with_etag(&headers, form.to_string()))
}

/// Where options come from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptionSource {
    /// Listed in the item.
    Static,
    /// Catalog items, teams or environments.
    Catalog,
    /// An HTTP GET.
    Http,
}

/// One option of a select-like field.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldOptionView {
    /// The value stored in the request (HTTP sources may give any JSON value).
    #[schema(value_type = Value)]
    pub value: Value,
    /// The text shown.
    #[schema(value_type = Value)]
    pub label: Value,
}

/// The options of a field.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldOptions {
    /// The field.
    pub field: String,
    /// The options.
    #[schema(value_type = Vec<FieldOptionView>)]
    pub options: Vec<Value>,
    /// Where they come from.
    pub source: OptionSource,
}

/// `GET /catalog/items/{item_id}/fields/{field_id}/options`: the options of a select-like
/// field, static or from its `source` (catalog items, teams, environments, or an HTTP GET).
/// Values of the fields it depends on come as query parameters.
pub async fn field_options(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((item_id, field_id)): Path<(String, String)>,
    Query(params): Query<std::collections::BTreeMap<String, String>>,
) -> Result<Json<FieldOptions>, ApiError> {
    let fetcher = crate::options::HttpOptions(&state.http);
    let got = state
        .orch
        .field_options(&who, &item_id, &field_id, &params, &fetcher)
        .await?;
    Ok(Json(FieldOptions {
        field: field_id,
        options: got
            .options
            .into_iter()
            .map(|o| json!({ "value": o.value, "label": o.label }))
            .collect(),
        source: match got.from {
            OptionsFrom::Static => OptionSource::Static,
            OptionsFrom::Catalog => OptionSource::Catalog,
            OptionsFrom::Http => OptionSource::Http,
        },
    }))
}

/// Whether `catalog.yaml` has a default approval rule.
pub fn default_rule(state: &AppState) -> bool {
    default_rule_of(&state.orch.catalog())
}

/// Whether this catalog's `catalog.yaml` has a default approval rule.
pub fn default_rule_of(catalog: &pao_core::catalog::Catalog) -> bool {
    catalog
        .settings()
        .and_then(|s| s.defaults.as_ref())
        .is_some_and(|d| d.approval.is_some())
}
