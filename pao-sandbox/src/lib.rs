//! Local fakes of the services PAO's actions and plugins talk to.
//!
//! Each module serves the subset of one vendor's real API that PAO uses, on `127.0.0.1` with an
//! ephemeral port: the same paths, payloads, status codes, pagination and error bodies as the
//! vendor documents. Integration tests start them to test actions against something that
//! behaves like the real service; `pao serve --sandbox` starts them so a newcomer can watch a
//! request reach `Completed` without any external account.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let server = pao_sandbox::FakeServer::start(axum::Router::new()).await.unwrap();
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! # });
//! ```

pub mod github;
pub mod jira;
pub mod rest;
pub mod servicenow;
pub mod slack;
pub mod terraform;
pub mod webhook;

use std::net::SocketAddr;

use tokio::sync::oneshot;

/// A running fake: an axum router served on `127.0.0.1:<ephemeral>` until dropped.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and serves `router` on the current tokio runtime.
    pub async fn start(router: axum::Router) -> std::io::Result<FakeServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeServer {
            addr,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
