//! The catalog as a caller sees it: the items they may view, filtered and paged by id,
//! categories, and the validation report of an item's file.

use std::sync::Arc;

use crate::authz::{Permission, Principal};
use crate::catalog::model::LifecycleStatus;
use crate::catalog::{Diagnostic, LoadedItem};
use crate::engine::{EngineError, Orchestrator};

use super::page_size;

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

/// Pages of items hold 50 unless asked otherwise.
pub const DEFAULT_PAGE: usize = 50;
/// And at most 500.
pub const MAX_PAGE: usize = 500;

/// Which items to list.
#[derive(Debug, Clone, Default)]
pub struct CatalogFilter {
    /// Only this category.
    pub category: Option<String>,
    /// Only items with this tag.
    pub tag: Option<String>,
    /// Only items available in this environment (items that name none are available in all).
    pub environment: Option<String>,
    /// Only items owned by this team.
    pub owner: Option<String>,
    /// Include retired items (deprecated ones are always listed).
    pub include_retired: bool,
    /// Page size ([`DEFAULT_PAGE`] when `None`, within 1..=[`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Go on after this item id.
    pub after: Option<String>,
}

/// A page of items, by id.
#[derive(Debug, Clone)]
pub struct CatalogPage {
    /// The items.
    pub items: Vec<Arc<LoadedItem>>,
    /// Items matching the filter, over all pages.
    pub total: usize,
    /// The id the next page starts after; `None` on the last page.
    pub next: Option<String>,
}

/// The diagnostics of an item's file from the last catalog load.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    /// The item, when it loaded (it is offered).
    pub item: Option<Arc<LoadedItem>>,
    /// Every diagnostic of its file.
    pub diagnostics: Vec<Diagnostic>,
}

/// An item's lifecycle status (`Active` when it declares none).
pub fn item_status(item: &LoadedItem) -> LifecycleStatus {
    item.item
        .lifecycle
        .as_ref()
        .and_then(|l| l.status)
        .unwrap_or(LifecycleStatus::Active)
}

impl CatalogFilter {
    fn matches(&self, item: &LoadedItem) -> bool {
        let m = &item.item.metadata;
        let environment_ok = || match m.access.as_ref().and_then(|a| a.environments.as_ref()) {
            None => true,
            Some(envs) => self
                .environment
                .as_ref()
                .is_none_or(|e| envs.iter().any(|x| x == e || x == "*")),
        };
        self.category.as_ref().is_none_or(|c| m.category == *c)
            && self.owner.as_ref().is_none_or(|o| m.owner.team == *o)
            && self
                .tag
                .as_ref()
                .is_none_or(|t| m.tags.iter().flatten().any(|x| x == t))
            && environment_ok()
            && (self.include_retired || item_status(item) != LifecycleStatus::Retired)
    }
}

impl Orchestrator {
    /// Whether `who` may see `item` ([`Permission::View`]).
    pub fn may_see_item(&self, who: &Principal, item: &LoadedItem) -> bool {
        self.authz.allowed(who, Permission::View, &item.item, None)
    }

    /// Whether `who` may request `item` ([`Permission::Submit`]).
    pub fn may_submit(&self, who: &Principal, item: &LoadedItem) -> bool {
        self.authz
            .allowed(who, Permission::Submit, &item.item, None)
    }

    /// The item, if `who` may see it; `NotFound` otherwise (existence is not leaked).
    pub fn visible_item(&self, who: &Principal, id: &str) -> Result<Arc<LoadedItem>, EngineError> {
        match self.catalog().get(id) {
            Some(item) if self.may_see_item(who, item) => Ok(item.clone()),
            _ => Err(EngineError::NotFound(format!("catalog item `{id}`"))),
        }
    }

    /// The catalog's categories: `catalog.yaml`'s, or [`DEFAULT_CATEGORIES`].
    pub fn categories(&self) -> Vec<String> {
        match self
            .catalog()
            .settings()
            .and_then(|s| s.categories.as_ref())
        {
            Some(c) => c.iter().map(|c| c.id.clone()).collect(),
            None => DEFAULT_CATEGORIES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A page of the items `who` may see that match `filter`, by id.
    pub fn catalog_page(&self, who: &Principal, filter: &CatalogFilter) -> CatalogPage {
        let limit = page_size(filter.limit, DEFAULT_PAGE, MAX_PAGE);
        let catalog = self.catalog();
        let mut matching: Vec<&Arc<LoadedItem>> = catalog
            .items()
            .filter(|i| self.may_see_item(who, i) && filter.matches(i))
            .collect();
        matching.sort_by(|a, b| a.id().cmp(b.id()));
        let total = matching.len();
        let mut items: Vec<Arc<LoadedItem>> = matching
            .into_iter()
            .filter(|i| filter.after.as_deref().is_none_or(|a| i.id() > a))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        let next = more
            .then(|| items.last().map(|i| i.id().to_string()))
            .flatten();
        CatalogPage { items, total, next }
    }

    /// [`Orchestrator::catalog_page`] of one category; an unknown category is `NotFound`.
    pub fn category_page(
        &self,
        who: &Principal,
        category: &str,
        filter: &CatalogFilter,
    ) -> Result<CatalogPage, EngineError> {
        let known = self.categories();
        if !known.iter().any(|c| c == category) {
            return Err(EngineError::NotFound(format!(
                "category `{category}` (categories: {})",
                known.join(", ")
            )));
        }
        let filter = CatalogFilter {
            category: Some(category.to_string()),
            ..filter.clone()
        };
        Ok(self.catalog_page(who, &filter))
    }

    /// The diagnostics of an item's file from the last load, for admins and the owning team.
    /// An id that is not loaded matches the diagnostics that name it (admins only).
    pub fn validation_report(
        &self,
        who: &Principal,
        item_id: &str,
    ) -> Result<ValidationReport, EngineError> {
        let catalog = self.catalog();
        let item = catalog.get(item_id).cloned();
        let not_found = || EngineError::NotFound(format!("catalog item `{item_id}`"));
        match &item {
            Some(i) if !who.is_admin() && !who.teams.contains(&i.item.metadata.owner.team) => {
                return Err(EngineError::Forbidden(
                    "validation results are for admins and the owning team".into(),
                ));
            }
            None if !who.is_admin() => return Err(not_found()),
            _ => {}
        }
        let file = item.as_ref().map(|i| i.file.clone());
        let diagnostics: Vec<Diagnostic> = catalog
            .diagnostics()
            .iter()
            .filter(|d| match &file {
                Some(f) => d.file == *f,
                None => d.message.contains(item_id) || d.file.contains(item_id),
            })
            .cloned()
            .collect();
        if item.is_none() && diagnostics.is_empty() {
            return Err(not_found());
        }
        Ok(ValidationReport { item, diagnostics })
    }
}
