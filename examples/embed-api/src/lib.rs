//! A lab's own HTTP API on pao-core's service layer: its routes, its JSON, its sign-in
//! scheme and its permission rule; every rule about requests stays in pao-core.
//! `docs/embedding.md` ("Your own HTTP API on the service layer") walks through it.

pub mod api;
pub mod identity;
pub mod sandbox;

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use pao_core::action::ActionRegistry;
use pao_core::catalog::{Catalog, render_all};
use pao_core::engine::Orchestrator;
use pao_core::store::MemoryStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use identity::OwnRequestsOnly;
use sandbox::Sandboxes;

/// The orchestrator: the lab's catalog and action, its authorizer, an in-memory store.
pub fn engine(catalog_dir: &Path) -> Result<Arc<Orchestrator>, Box<dyn Error>> {
    let mut actions = ActionRegistry::new();
    actions.register(Arc::new(Sandboxes));
    let catalog = Catalog::load(catalog_dir, &actions.load_options())?;
    if catalog.diagnostics().iter().any(|d| d.is_error()) {
        return Err(render_all(catalog.diagnostics()).into());
    }
    let store = Arc::new(MemoryStore::new());
    let engine = Orchestrator::builder(catalog, store).actions(actions);
    Ok(engine.authorizer(Arc::new(OwnRequestsOnly)).build())
}

/// The lab's routes over the orchestrator.
pub fn router(pao: Arc<Orchestrator>) -> Router {
    Router::new()
        .route("/items", get(api::items))
        .route("/items/{id}/requests", post(api::submit))
        .route("/requests", get(api::mine))
        .route("/requests/{id}", get(api::request))
        .route("/requests/{id}/cancel", post(api::cancel))
        .route("/requests/{id}/approve", post(api::approve))
        .route("/approvals", get(api::approvals))
        .with_state(pao)
}

/// Serves the routes on `listener`, with a worker running the requests, until `stop` is
/// cancelled; the worker finishes its work in flight, or releases it, before this returns.
pub async fn serve(
    listener: TcpListener,
    pao: Arc<Orchestrator>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let worker = tokio::spawn(pao.clone().run_worker("lab-1".into(), stop.clone()));
    let shutdown = stop.clone().cancelled_owned();
    axum::serve(listener, router(pao))
        .with_graceful_shutdown(shutdown)
        .await?;
    stop.cancel();
    worker.await.map_err(std::io::Error::other)
}
