//! Fake: ServiceNow Table API (incidents), for the example plugin.
//!
//! Placeholder; filled by the issue that needs it.
