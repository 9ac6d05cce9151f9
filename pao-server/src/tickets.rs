//! Manual-mode tickets the server watches: their JIRA status is polled when no webhook came
//! for a while, and requests past their fulfillment SLA are escalated on the ticket.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pao_actions::jira::JiraTickets;
use pao_core::engine::{ManualOutcome, TicketReader};
use pao_core::secrets::SecretProvider;
use serde::Deserialize;

use crate::state::AppState;

/// `[manual_tickets]`: how the tickets of manual-mode requests are watched.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ManualTicketsConfig {
    /// Seconds without news of a ticket (no webhook, no change) after which its status is
    /// read from JIRA; 0 never reads it (webhooks only). SLA escalation runs either way.
    pub poll_after_secs: u64,
    /// Seconds between sweeps of the waiting tickets.
    pub interval_secs: u64,
}

impl Default for ManualTicketsConfig {
    fn default() -> Self {
        ManualTicketsConfig {
            poll_after_secs: 900,
            interval_secs: 60,
        }
    }
}

/// Reads tickets through the `jira` instances of the configuration.
pub struct JiraReader {
    tickets: JiraTickets,
    secrets: Arc<dyn SecretProvider>,
}

#[async_trait]
impl TicketReader for JiraReader {
    async fn outcome(
        &self,
        instance: Option<&str>,
        key: &str,
    ) -> Result<Option<ManualOutcome>, String> {
        self.tickets
            .outcome(self.secrets.clone(), instance, key)
            .await
            .map(|o| o.into_manual())
            .map_err(|e| e.message)
    }

    async fn comment(&self, instance: Option<&str>, key: &str, text: &str) -> Result<(), String> {
        self.tickets
            .comment(self.secrets.clone(), instance, key, text)
            .await
            .map_err(|e| e.message)
    }
}

/// Sweeps the waiting tickets every `interval_secs` until `token` is cancelled. Nothing runs
/// when no JIRA instance is configured.
pub async fn watch(state: AppState, token: tokio_util::sync::CancellationToken) {
    let cfg = state.config.manual_tickets.clone();
    if state.config.actions.jira.is_empty() {
        return;
    }
    let tickets = match JiraTickets::new(&state.config.actions) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "manual tickets are not watched: the JIRA configuration is invalid");
            return;
        }
    };
    let reader = JiraReader {
        tickets,
        secrets: state.secrets.clone(),
    };
    // 0: never poll (an interval no ticket reaches).
    let poll_after = match cfg.poll_after_secs {
        0 => Duration::MAX,
        s => Duration::from_secs(s),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.interval_secs.max(1)));
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => match state.orch.sweep_tickets(&reader, poll_after).await {
                Ok(s) => {
                    if s.resolved > 0 || s.escalated > 0 {
                        tracing::info!(
                            polled = s.polled,
                            resolved = s.resolved,
                            escalated = s.escalated,
                            "manual tickets swept"
                        );
                    }
                    for p in &s.problems {
                        tracing::warn!(problem = %p, "manual ticket sweep");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "manual ticket sweep failed; it runs again at the next interval"),
            },
        }
    }
}
