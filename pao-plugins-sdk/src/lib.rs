//! The SDK for PAO plugin authors.
//!
//! A plugin is a Rust crate built for `wasm32-wasip2` against the `pao:action` WIT contract.
//! This crate will carry the contract, typed bindings, an `export_action!` macro and a
//! `MockHost` for native tests. Filled by the WASM-plugin issue.
//!
//! ```
//! assert_eq!(pao_plugins_sdk::CONTRACT_VERSION, "0.1.0");
//! ```

/// Version of the `pao:action` WIT package this SDK targets.
pub const CONTRACT_VERSION: &str = "0.1.0";
