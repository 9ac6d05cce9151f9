//! Built-in PAO actions.
//!
//! Each action type (`jira`, `rest`, `terraform`, `github_workflow`, `webhook`, `cost`, `script`)
//! will live in its own module behind a cargo feature and implement `pao-core`'s `Action` trait.
//! Filled by the built-in-actions issue; for now only the names of the built-in types, which
//! the catalog loader already knows from `pao_core::catalog`.
//!
//! ```
//! assert!(pao_actions::BUILT_IN_TYPES.contains(&"terraform"));
//! ```

pub use pao_core;

/// The action type names this crate will provide.
pub const BUILT_IN_TYPES: &[&str] = pao_core::catalog::BUILT_IN_ACTION_TYPES;
