//! The WebAssembly plugin host for PAO.
//!
//! Third-party actions load as WebAssembly components (wasmtime, component model) and are
//! adapted to `pao-core`'s `Action` trait, sandboxed (memory, CPU, HTTP allow-list, secrets by
//! name). Filled by the WASM-plugin issue.
//!
//! ```
//! assert!(pao_wasm_host::PLUGIN_TYPE_PREFIX.starts_with("plugin"));
//! ```

pub use pao_core;

/// Catalog items name a plugin action as `plugin:<name>`.
pub const PLUGIN_TYPE_PREFIX: &str = "plugin:";
