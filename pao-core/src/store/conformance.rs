//! The conformance suite every [`Store`](super::Store) implementation must pass. Call
//! [`run_all`] from an async test with a factory that returns a fresh, empty store.
