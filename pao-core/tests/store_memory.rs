//! Runs the shared [`Store`](pao_core::store::Store) conformance suite on [`MemoryStore`]: one
//! test per check so a failure is named, and one that runs them all through `run_all` (which
//! also catches a check added to the suite but not listed here).

use pao_core::store::{MemoryStore, conformance};

macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                conformance::$check(&MemoryStore::new()).await;
            }
        )*
    };
}

pao_core::for_each_conformance_check!(checks);

#[tokio::test]
async fn run_all() {
    conformance::run_all(|| async { MemoryStore::new() }).await;
}
