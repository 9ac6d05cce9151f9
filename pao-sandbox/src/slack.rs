//! Fake: Slack Web API chat.postMessage and incoming webhooks, for the example plugin.
//!
//! Placeholder; filled by the issue that needs it.
