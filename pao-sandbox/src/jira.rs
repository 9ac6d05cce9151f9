//! Fake: JIRA Cloud / Data Center REST v2 and v3.
//!
//! Placeholder; filled by the issue that needs it.
