//! Durable storage for PAO.
//!
//! This crate will hold the `Store` implementations on sqlx: SQLite (the embedded default, WAL,
//! single-writer claims) and PostgreSQL (several replicas, `FOR UPDATE SKIP LOCKED` claims,
//! leases with fencing tokens, LISTEN/NOTIFY). It is filled by the durable-storage issue; until
//! then it only re-exports the core crate so the workspace shape is in place.
//!
//! ```
//! assert!(!pao_store::pao_core::VERSION.is_empty());
//! ```

pub use pao_core;
