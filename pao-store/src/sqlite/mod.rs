//! SQLite, the embedded default.

mod backup;
pub(crate) mod group_commit;
pub(crate) mod open;
