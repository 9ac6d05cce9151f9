//! Fake: Terraform Cloud / Enterprise API v2 (workspaces, vars, runs, state versions).
//!
//! Placeholder; filled by the issue that needs it.
