//! The catalog: Schema v2.0 items, loading and validation with located diagnostics.

/// The built-in action types every catalog may use without registering anything.
pub const BUILT_IN_ACTION_TYPES: &[&str] = &[
    "jira",
    "rest",
    "terraform",
    "github_workflow",
    "webhook",
    "cost",
    "script",
];

mod check;
pub mod diagnostic;
mod load;
pub mod maintenance;
pub mod model;
pub mod yaml;

pub use check::valid_cidr;
pub use diagnostic::{Diagnostic, Severity, codes, render_all};
pub use load::{
    Catalog, CompiledAction, CompiledItem, CompiledSource, ConfigValidator, ITEM_SCHEMA,
    LoadOptions, LoadedItem, MAX_FILE_BYTES, SETTINGS_SCHEMA, load_item, load_settings,
};
