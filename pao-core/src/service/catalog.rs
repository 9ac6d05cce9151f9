//! The catalog as a caller sees it: the items they may view, filtered and paged by id,
//! categories, and the validation report of an item's file.

use std::collections::HashMap;
use std::sync::Arc;

use crate::authz::{Permission, Principal};
use crate::catalog::model::LifecycleStatus;
use crate::catalog::{Catalog, Diagnostic, LoadedItem};
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

/// The items one class of callers may see ([`crate::authz::Authorizer::view_class`]), by id,
/// with and without retired items, and by category.
#[derive(Debug, Default)]
pub(crate) struct ClassView {
    /// `[0]`: without retired items; `[1]`: with them.
    sets: [ViewSet; 2],
}

#[derive(Debug, Default)]
struct ViewSet {
    all: Vec<Arc<LoadedItem>>,
    by_category: HashMap<String, Vec<Arc<LoadedItem>>>,
}

impl ClassView {
    fn build(catalog: &Catalog, visible: impl Fn(&LoadedItem) -> bool) -> ClassView {
        let mut view = ClassView::default();
        // The catalog iterates by id: every list comes out sorted.
        for item in catalog.items().filter(|i| visible(i)) {
            let retired = item_status(item) == LifecycleStatus::Retired;
            for (n, set) in view.sets.iter_mut().enumerate() {
                if retired && n == 0 {
                    continue;
                }
                set.all.push(item.clone());
                set.by_category
                    .entry(item.item.metadata.category.clone())
                    .or_default()
                    .push(item.clone());
            }
        }
        view
    }

    /// The items a filter's category and `include_retired` select, by id.
    fn base(&self, filter: &CatalogFilter) -> &[Arc<LoadedItem>] {
        let set = &self.sets[usize::from(filter.include_retired)];
        match &filter.category {
            None => &set.all,
            Some(c) => set.by_category.get(c).map_or(&[], Vec::as_slice),
        }
    }
}

/// Precomputed [`ClassView`]s of the catalog in service, by class key. Bounded: when full it
/// starts over (a class costs two pointers per visible item).
#[derive(Debug, Default)]
pub(crate) struct ViewCache {
    catalog: Option<Arc<Catalog>>,
    classes: HashMap<String, Arc<ClassView>>,
}

/// How many classes [`ViewCache`] keeps.
const MAX_VIEW_CLASSES: usize = 512;

impl Orchestrator {
    /// The items `who` may see: the precomputed view of their class, or one built now when the
    /// authorizer gives no class.
    fn class_view(&self, who: &Principal) -> Arc<ClassView> {
        let catalog = self.catalog();
        let build = || Arc::new(ClassView::build(&catalog, |i| self.may_see_item(who, i)));
        let Some(key) = self.authz.view_class(who) else {
            return build();
        };
        {
            let cache = self.views.lock().unwrap_or_else(|e| e.into_inner());
            if cache
                .catalog
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &catalog))
                && let Some(view) = cache.classes.get(&key)
            {
                return view.clone();
            }
        }
        // Built outside the lock: other classes are served meanwhile.
        let view = build();
        let mut cache = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if !cache
            .catalog
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &catalog))
        {
            cache.catalog = Some(catalog.clone());
            cache.classes.clear();
        }
        if cache.classes.len() >= MAX_VIEW_CLASSES {
            cache.classes.clear();
        }
        cache.classes.insert(key, view.clone());
        view
    }

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

    /// A page of the items `who` may see that match `filter`, by id. Costs the page when
    /// the filter has no tag, environment or owner (a binary search in the caller's class
    /// view); those filters scan the view, with no authorization call.
    pub fn catalog_page(&self, who: &Principal, filter: &CatalogFilter) -> CatalogPage {
        let limit = page_size(filter.limit, DEFAULT_PAGE, MAX_PAGE);
        let view = self.class_view(who);
        let base = view.base(filter);
        let after = |items: &[Arc<LoadedItem>]| match filter.after.as_deref() {
            None => 0,
            Some(a) => items.partition_point(|i| i.id() <= a),
        };
        let (total, mut items): (usize, Vec<Arc<LoadedItem>>) =
            if filter.tag.is_none() && filter.environment.is_none() && filter.owner.is_none() {
                let start = after(base);
                let end = (start + limit + 1).min(base.len());
                (base.len(), base[start..end].to_vec())
            } else {
                let matching: Vec<Arc<LoadedItem>> =
                    base.iter().filter(|i| filter.matches(i)).cloned().collect();
                let start = after(&matching);
                let end = (start + limit + 1).min(matching.len());
                (matching.len(), matching[start..end].to_vec())
            };
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
