//! PostgreSQL, for several replicas on one database.

pub(crate) mod batch_statement;
pub(crate) mod open;
pub(crate) mod worker_connections;
