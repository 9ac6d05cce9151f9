//! The PAO reference server: the `/api/v1` REST surface, WebSockets, authentication and
//! RBAC, Prometheus metrics and in-process workers, assembled from `pao-core`, `pao-store`
//! and the action crates. Handlers only translate HTTP into `pao-core` calls.
//!
//! Embed it in a test or another binary:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use pao_server::{config::ServerConfig, state::{AppState, Overrides}};
//! let config = ServerConfig {
//!     catalog: "examples/catalog".into(),
//!     database_url: "sqlite://./data/pao.db".into(),
//!     ..ServerConfig::default()
//! };
//! let state = AppState::build(config, Overrides::default()).await?;
//! let app = pao_server::api::router(state);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod finished;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod options;
pub mod rendered;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod search;
pub mod serve;
pub mod state;
pub mod tickets;
pub mod tls;
pub mod wakes;
