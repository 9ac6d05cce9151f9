//! # pao-core
//!
//! The orchestration core of PAO, the Platform Automation Orchestrator: the catalog model
//! (Schema v2.0), the variable engine, form schemas, and (as later work lands) the request
//! lifecycle and the fulfillment engine. It does no I/O of its own: storage, HTTP and plugins
//! plug in through traits, so it embeds anywhere.
//!
//! ```
//! use pao_core::vars::{Context, Engine, Scope};
//! use serde_json::json;
//!
//! let engine = Engine::new();
//! let summary = engine.compile("New ${{ fields.size }} database for ${{ user.name }}").unwrap();
//! let (fields, user) = (json!({"size": "large"}), json!({"name": "Ada"}));
//! let ctx = Context::new().with(Scope::Fields, &fields).with(Scope::User, &user);
//! assert_eq!(summary.render(&ctx).unwrap(), "New large database for Ada");
//! ```

pub mod action;
pub mod authz;
pub mod catalog;
pub mod clock;
pub mod engine;
pub mod events;
pub mod form;
pub mod lifecycle;
pub mod redact;
pub mod sealing;
pub mod secrets;
pub mod service;
pub mod store;
pub mod vars;

/// The version of this crate, reported by `/version` and `system.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
