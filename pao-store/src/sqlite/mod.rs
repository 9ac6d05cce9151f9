//! SQLite, the embedded default.

pub(crate) mod group_commit;
