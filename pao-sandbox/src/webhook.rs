//! Fake: A webhook receiver that verifies X-PAO-Signature and records deliveries.
//!
//! Placeholder; filled by the issue that needs it.
