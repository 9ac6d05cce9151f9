//! Fake: GitHub REST API (workflow dispatch, runs, artifacts, app installation tokens).
//!
//! Placeholder; filled by the issue that needs it.
