//! The catalog's answers serialized once per catalog: each item's summary (the same for every
//! caller) and each item as written, so that a page of `GET /catalog` copies bytes instead of
//! serializing items, and its `ETag` is a hash of those bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pao_core::catalog::{Catalog, LoadedItem};

use crate::api::catalog::{default_rule_of, summary};

/// One catalog's serialized pieces.
pub struct Rendered {
    catalog: Arc<Catalog>,
    /// `ItemSummary` JSON by item id.
    summaries: HashMap<String, String>,
    /// The item as written (`ItemDetail.item`), serialized on first use.
    items: HashMap<String, OnceLock<String>>,
}

impl Rendered {
    fn build(catalog: Arc<Catalog>) -> Rendered {
        let default_rule = default_rule_of(&catalog);
        let summaries = catalog
            .items()
            .map(|i| {
                let json = serde_json::to_string(&summary(i, default_rule))
                    .unwrap_or_else(|_| "null".into());
                (i.id().to_string(), json)
            })
            .collect();
        let items = catalog
            .items()
            .map(|i| (i.id().to_string(), OnceLock::new()))
            .collect();
        Rendered {
            catalog,
            summaries,
            items,
        }
    }

    /// The catalog these pieces were made from.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The summary of an item of this catalog, as JSON.
    pub fn summary(&self, item: &LoadedItem) -> &str {
        self.summaries.get(item.id()).map_or("null", String::as_str)
    }

    /// An item of this catalog as written, as JSON.
    pub fn item(&self, item: &LoadedItem) -> &str {
        match self.items.get(item.id()) {
            Some(cell) => cell.get_or_init(|| {
                serde_json::to_string(&item.item).unwrap_or_else(|_| "null".into())
            }),
            None => "null",
        }
    }
}

/// The [`Rendered`] pieces of the catalog in service, made again when it changes.
#[derive(Default)]
pub struct RenderedCatalog {
    current: Mutex<Option<Arc<Rendered>>>,
}

impl RenderedCatalog {
    /// The pieces of `catalog`.
    pub fn of(&self, catalog: &Arc<Catalog>) -> Arc<Rendered> {
        if let Some(r) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && Arc::ptr_eq(&r.catalog, catalog)
        {
            return r.clone();
        }
        // Built outside the lock; a concurrent first read may build it twice, never wrong.
        let built = Arc::new(Rendered::build(catalog.clone()));
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(built.clone());
        built
    }
}

/// A JSON answer with an `ETag` (a hash of the body): `304 Not Modified` with no body when
/// `If-None-Match` names it. `Cache-Control: private, no-cache` lets the caller's own client
/// keep it and ask again each time; shared caches do not keep it (answers depend on who asks).
pub fn json_with_etag(request: &HeaderMap, body: String) -> Response {
    let tag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(body.as_bytes()));
    let matches = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (headers, body).into_response()
}

/// `text` as a JSON string.
pub fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "null".into())
}
