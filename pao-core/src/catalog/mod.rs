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
