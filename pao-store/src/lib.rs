//! Durable storage for PAO: the [`pao_core::store::Store`] trait on sqlx, for SQLite (the
//! embedded default: one file, WAL, `synchronous=FULL`) and PostgreSQL (several replicas:
//! `FOR UPDATE SKIP LOCKED` claims, leases with fencing tokens, LISTEN/NOTIFY wake-ups).
//! Both pass the same conformance suite as the in-memory store.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pao_store::OpenError> {
//! use pao_store::SqlStore;
//!
//! let sqlite = SqlStore::open("sqlite://./data/pao.db").await?;        // created and migrated
//! let pg = SqlStore::open("postgres://postgres@127.0.0.1:5432/pao").await?;
//! # let _ = (sqlite, pg);
//! # Ok(()) }
//! ```

mod params;
mod pg;
mod sql;
mod sqlite;

pub use pao_core;
pub use sql::{Dialect, OpenError, SqlStore};
