//! The use cases of PAO's API, as methods of [`Orchestrator`](crate::engine::Orchestrator):
//! what PAO's reference server calls from its handlers, and what an embedder building an API
//! of their own calls. Each method takes the caller ([`Principal`](crate::authz::Principal)),
//! decides what the caller may see and do through the orchestrator's
//! [`Authorizer`](crate::authz::Authorizer) and the item's approvers, reads through the
//! [`Store`](crate::store::Store)'s queries (never a whole table), and returns typed results.
//!
//! - [requests](requests): submit (created or replayed), list, detail, progress, events,
//!   cancel, retry, and watching one request for live views;
//! - [approvals](approvals): the requests a caller may decide on, approve, reject;
//! - [teams](teams): a team's requests, owned items, usage, analytics, settings and quota
//!   limits (limits and their audit record in one transaction);
//! - [catalog](catalog): visible items with filters and pages, categories, validation
//!   reports;
//! - [authoring](authoring): check an item file, preview its form, evaluate a template;
//! - [options](options): the options of select-like fields (static, catalog, HTTP);
//! - [operations](operations): usage and performance statistics, the audit trail, readiness,
//!   cost estimates, and manual-mode tickets resolved from outside.
//!
//! Errors are [`EngineError`](crate::engine::EngineError)s: `NotFound` for what the caller
//! may not see (existence is not leaked), `Forbidden` for what they see but may not do,
//! `InvalidInput` located by a JSON pointer for bad input.

pub mod approvals;
pub mod authoring;
pub mod catalog;
pub mod operations;
pub mod options;
pub mod progress;
pub mod requests;
pub mod retention;
pub mod teams;

pub use approvals::PendingPage;
pub use authoring::{Evaluation, VariablesInput};
pub use catalog::{CatalogFilter, CatalogPage, DEFAULT_CATEGORIES, ValidationReport};
pub use operations::{
    AuditTrail, CostEstimate, CostEstimates, PerformanceStats, TicketOutcome, UsageStats,
};
pub use options::{
    FetchError, FieldOptions, OptionFetcher, OptionValue, OptionsError, OptionsFrom,
};
pub use progress::Progress;
pub use requests::{
    RequestCursor, RequestDetail, RequestPage, RequestQuery, RequestScope, RequestStatus,
    RequestWatch,
};
pub use retention::RetentionPolicy;
pub use teams::{Analytics, OwnedItem, PopularItem, TeamSettings, TeamUsage};

/// A page size: `None` is `default`, and the size is kept within `1..=max`.
pub(crate) fn page_size(limit: Option<usize>, default: usize, max: usize) -> usize {
    limit.unwrap_or(default).clamp(1, max)
}
