//! Manual-mode requests waiting for their ticket: when no webhook says the ticket changed
//! within a while, its status is polled; when the item's `sla.fulfillment` passes while the
//! ticket is still open, the request is escalated once (an `sla_breached` event and a comment
//! on the ticket).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{EngineError, ManualOutcome, Orchestrator};
use crate::lifecycle::RequestState;
use crate::store::{AttemptOutcome, EventKind, Request};

/// Prefix of `waiting_for` of a manual-mode request waiting for its ticket.
const MANUAL: &str = "manual:";
/// Parked requests read per page.
const PAGE: usize = 100;
/// Problems kept in a sweep's report.
const MAX_PROBLEMS: usize = 10;

/// Reads and comments on the tickets of manual-mode requests (the server's implementation
/// calls JIRA).
#[async_trait]
pub trait TicketReader: Send + Sync {
    /// How ticket `key` of `instance` (or the default instance) stands: `None` while it is
    /// still being worked.
    async fn outcome(
        &self,
        instance: Option<&str>,
        key: &str,
    ) -> Result<Option<ManualOutcome>, String>;

    /// Adds `text` as a comment to the ticket, unless it already has it.
    async fn comment(&self, instance: Option<&str>, key: &str, text: &str) -> Result<(), String>;
}

/// What a sweep of the waiting tickets did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketSweep {
    /// Tickets whose status was read.
    pub polled: usize,
    /// Requests their ticket's status ended.
    pub resolved: usize,
    /// Requests escalated for passing their fulfillment SLA.
    pub escalated: usize,
    /// What failed (at most 10), each naming the request.
    pub problems: Vec<String>,
}

impl TicketSweep {
    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

impl Orchestrator {
    /// Walks every manual-mode request waiting for its ticket: escalates those past their
    /// item's `sla.fulfillment` (counted from submission) once, and reads the status of the
    /// tickets of those that have not changed for `poll_after`, ending the requests whose
    /// ticket ended, as the JIRA webhook would.
    pub async fn sweep_tickets(
        &self,
        reader: &dyn TicketReader,
        poll_after: Duration,
    ) -> Result<TicketSweep, EngineError> {
        let mut sweep = TicketSweep::default();
        let mut after: Option<(String, String)> = None;
        loop {
            let position = after.as_ref().map(|(w, id)| (w.as_str(), id.as_str()));
            let page = self
                .store
                .parked_requests(MANUAL, RequestState::InProgress, position, PAGE)
                .await?;
            for r in &page {
                self.sweep_ticket(reader, r, poll_after, &mut sweep).await;
            }
            match page.last() {
                Some(last) if page.len() == PAGE => {
                    after = Some((
                        last.waiting_for.clone().unwrap_or_default(),
                        last.id.clone(),
                    ));
                }
                _ => return Ok(sweep),
            }
        }
    }

    async fn sweep_ticket(
        &self,
        reader: &dyn TicketReader,
        r: &Request,
        poll_after: Duration,
        sweep: &mut TicketSweep,
    ) {
        let Some(key) = r
            .waiting_for
            .as_deref()
            .and_then(|w| w.strip_prefix(MANUAL))
        else {
            return;
        };
        let now = self.clock.now();
        let instance = self.ticket_instance(r).await;
        let instance = instance.as_deref();
        // The SLA, from the definition the request was admitted with.
        let sla = match self.item_of(r).await {
            Ok(Some(item)) => item
                .item
                .metadata
                .sla
                .as_ref()
                .and_then(|s| s.fulfillment.clone()),
            _ => None,
        };
        if let Some(sla) = sla
            && let Some(limit) = sla.get()
            && (now - r.created_at).to_std().unwrap_or_default() > limit
        {
            match self
                .escalate_sla(reader, r, key, instance, &sla.to_string())
                .await
            {
                Ok(true) => sweep.escalated += 1,
                Ok(false) => {}
                Err(e) => sweep.problem(format!("{}: escalating ticket {key}: {e}", r.id)),
            }
        }
        let quiet = (now - r.updated_at).to_std().unwrap_or_default();
        if quiet < poll_after {
            return;
        }
        sweep.polled += 1;
        match reader.outcome(instance, key).await {
            Ok(Some(outcome)) => {
                match self
                    .resolve_manual(&r.id, outcome, &format!("jira-poll:{key}"))
                    .await
                {
                    Ok(_) => sweep.resolved += 1,
                    // A webhook or another replica's sweep ended it meanwhile.
                    Err(
                        EngineError::Invalid(_)
                        | EngineError::Store(crate::store::StoreError::Conflict { .. }),
                    ) => {}
                    Err(e) => sweep.problem(format!("{}: resolving ticket {key}: {e}", r.id)),
                }
            }
            Ok(None) => {}
            Err(e) => sweep.problem(format!("{}: reading ticket {key}: {e}", r.id)),
        }
    }

    /// The JIRA instance the request's ticket was created on, from its journal.
    async fn ticket_instance(&self, r: &Request) -> Option<String> {
        let journal = self.store.attempts(&r.id).await.ok()?;
        journal.iter().rev().find_map(|a| {
            let AttemptOutcome::Succeeded { .. } = a.outcome else {
                return None;
            };
            (a.action_id == super::executor::TICKET && !a.rollback)
                .then(|| a.input.get("instance").and_then(Value::as_str))
                .flatten()
                .map(str::to_string)
        })
    }

    /// Escalates `r` once: a comment on its ticket, then an `sla_breached` event. `false`
    /// when it was escalated before.
    async fn escalate_sla(
        &self,
        reader: &dyn TicketReader,
        r: &Request,
        key: &str,
        instance: Option<&str>,
        sla: &str,
    ) -> Result<bool, String> {
        let events = self
            .store
            .events(&r.id, 0, 0)
            .await
            .map_err(|e| e.to_string())?;
        if events
            .iter()
            .any(|e| matches!(e.kind, EventKind::SlaBreached { .. }))
        {
            return Ok(false);
        }
        let text = format!(
            "PAO request {} has passed its fulfillment SLA of {sla} (submitted {}); please resolve this ticket or say why it waits.",
            r.id,
            r.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        reader.comment(instance, key, &text).await?;
        let elapsed = (self.clock.now() - r.created_at).num_seconds().max(0);
        self.emit(
            r,
            EventKind::SlaBreached {
                sla: sla.to_string(),
                elapsed_secs: u64::try_from(elapsed).unwrap_or(0),
                ticket: key.to_string(),
            },
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(true)
    }
}
