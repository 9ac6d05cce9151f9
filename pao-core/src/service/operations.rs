//! Running the service: usage and performance statistics, the audit trail, readiness, cost
//! estimates, and manual-mode tickets resolved from outside (a JIRA webhook).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::page_size;
use super::teams::Analytics;
use crate::authz::Principal;
use crate::engine::{BreakerState, EngineError, ManualOutcome, Orchestrator};
use crate::lifecycle::RequestState;
use crate::store::{AttemptOutcome, AuditRecord, LoggedAudit, Request, RequestFilter, StatsScope};

/// Pages of the audit trail hold 100 unless asked otherwise.
pub const DEFAULT_AUDIT: usize = 100;
/// And at most 1,000.
pub const MAX_AUDIT: usize = 1_000;

/// Usage over all teams.
#[derive(Debug, Clone)]
pub struct UsageStats {
    /// Success rate, completion times, popular items, failure reasons.
    pub analytics: Analytics,
    /// Requests by state name.
    pub requests_by_state: BTreeMap<String, u64>,
    /// Requests by team.
    pub requests_by_team: BTreeMap<String, u64>,
    /// Items offered.
    pub catalog_items: usize,
}

/// Performance over all teams.
#[derive(Debug, Clone)]
pub struct PerformanceStats {
    /// Success rate and completion times.
    pub analytics: Analytics,
    /// Requests waiting for a worker.
    pub queue_depth: u64,
    /// Requests whose actions run (`InProgress`, `PostFulfillment`).
    pub running: u64,
    /// Circuit breakers of this process, by target.
    pub breakers: BTreeMap<String, BreakerState>,
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone)]
pub struct AuditTrail {
    /// The records.
    pub records: Vec<LoggedAudit>,
    /// The `before` of the next (older) page; `None` on the last page.
    pub next: Option<u64>,
}

/// The result of one successful `cost` action.
#[derive(Debug, Clone)]
pub struct CostEstimate {
    /// The action.
    pub action_id: String,
    /// Its result.
    pub result: Value,
    /// Its outputs (`monthly`, `currency`, ...).
    pub outputs: Value,
}

/// A request's cost estimates.
#[derive(Debug, Clone)]
pub struct CostEstimates {
    /// Results of its `cost` actions that succeeded.
    pub estimates: Vec<CostEstimate>,
    /// The estimate made at admission, before approval.
    pub admission: Option<crate::store::AdmissionCost>,
    /// The item's declared cost, rendered with the request's fields at admission; for a
    /// request admitted without an estimate, the item's declared cost when it is not a
    /// template.
    pub declared: Option<Value>,
}

/// What a resolved ticket did.
#[derive(Debug, Clone)]
pub enum TicketOutcome {
    /// No manual-mode request waits for this ticket.
    Unmatched,
    /// A request waits for it and the ticket's status does not end it yet.
    Waiting(Request),
    /// The ticket's status ended the request (the request after it).
    Resolved(Request),
}

fn admin_only(who: &Principal, what: &str) -> Result<(), EngineError> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(EngineError::Forbidden(format!("{what} are for admins")))
    }
}

impl Orchestrator {
    /// Requests by state and team, and their analytics, over all teams (admins).
    pub async fn usage_stats(&self, who: &Principal) -> Result<UsageStats, EngineError> {
        admin_only(who, "statistics")?;
        let all = self.store.request_stats(&StatsScope::default()).await?;
        Ok(UsageStats {
            analytics: Analytics::of(&all),
            requests_by_state: all.by(|c| c.state.to_string()),
            requests_by_team: all.by(|c| c.team.clone()),
            catalog_items: self.catalog().len(),
        })
    }

    /// Completion times, success rate, the queue and this process's breakers (admins).
    pub async fn performance_stats(
        &self,
        who: &Principal,
    ) -> Result<PerformanceStats, EngineError> {
        admin_only(who, "statistics")?;
        let all = self.store.request_stats(&StatsScope::default()).await?;
        Ok(PerformanceStats {
            analytics: Analytics::of(&all),
            queue_depth: all.in_state(RequestState::Queued),
            running: all.in_state(RequestState::InProgress)
                + all.in_state(RequestState::PostFulfillment),
            breakers: self.breaker_states(),
        })
    }

    /// How many requests wait for a worker.
    pub async fn queue_depth(&self) -> Result<u64, EngineError> {
        let all = self.store.request_stats(&StatsScope::default()).await?;
        Ok(all.in_state(RequestState::Queued))
    }

    /// The audit trail, newest first: only records about `target` when given, older than
    /// the record `before` when given, at most `limit` ([`DEFAULT_AUDIT`] when `None`, within
    /// 1..=[`MAX_AUDIT`]). Reading it is audited too (admins).
    pub async fn audit_trail(
        &self,
        who: &Principal,
        target: Option<&str>,
        before: Option<u64>,
        limit: Option<usize>,
    ) -> Result<AuditTrail, EngineError> {
        admin_only(who, "audit records")?;
        let limit = page_size(limit, DEFAULT_AUDIT, MAX_AUDIT);
        let records = self.store.audit_log(target, before, limit).await?;
        let next = match records.last() {
            Some(last) if records.len() == limit => Some(last.id),
            _ => None,
        };
        self.record_audit(
            &who.id,
            "audit.read",
            target.unwrap_or("*"),
            json!({ "limit": limit, "before": before }),
        )
        .await?;
        Ok(AuditTrail { records, next })
    }

    /// Appends an audit record of something done outside the engine (a catalog reload, a
    /// verified webhook delivery).
    pub async fn record_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<(), EngineError> {
        self.store
            .audit(AuditRecord {
                at: self.now(),
                actor: actor.to_string(),
                action: action.to_string(),
                target: target.to_string(),
                detail,
            })
            .await?;
        Ok(())
    }

    /// Whether the store answers within `timeout` (readiness).
    pub async fn store_ready(&self, timeout: Duration) -> Result<(), EngineError> {
        let one = RequestFilter {
            limit: 1,
            ..RequestFilter::default()
        };
        let probe = self.store.list(&one);
        match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(EngineError::Store(crate::store::StoreError::Unavailable(
                format!("no answer within {} s", timeout.as_secs()),
            ))),
        }
    }

    /// The results of the request's `cost` actions and its item's declared cost.
    pub async fn cost_estimates(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<CostEstimates, EngineError> {
        let request = self.visible_request(who, id).await?;
        let catalog = self.catalog();
        let item = catalog.get(&request.item_id);
        let cost_actions: Vec<String> = item
            .map(|i| {
                crate::engine::plan::Plan::of(&i.item)
                    .nodes
                    .iter()
                    .filter(|n| n.spec.action_type.to_string() == "cost")
                    .map(|n| n.spec.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut estimates = Vec::new();
        for a in self.store.attempts(id).await? {
            if a.rollback || !cost_actions.contains(&a.action_id) {
                continue;
            }
            if let AttemptOutcome::Succeeded { output, outputs } = a.outcome {
                estimates.push(CostEstimate {
                    action_id: a.action_id,
                    result: output.result,
                    outputs,
                });
            }
        }
        let declared = match &request.cost {
            Some(c) => c.declared.clone(),
            None => item
                .and_then(|i| i.item.metadata.cost.as_ref())
                .and_then(|c| serde_json::to_value(c).ok())
                .filter(|v| !v.to_string().contains("${{")),
        };
        Ok(CostEstimates {
            estimates,
            admission: request.cost,
            declared,
        })
    }

    /// A ticket `key` changed outside PAO: the manual-mode request waiting for it, if any,
    /// ends as `outcome` says (`None`: the ticket's status does not end it).
    pub async fn ticket_changed(
        &self,
        key: &str,
        outcome: Option<ManualOutcome>,
        actor: &str,
    ) -> Result<TicketOutcome, EngineError> {
        let Some(request) = self.store.request_waiting_for(key).await? else {
            return Ok(TicketOutcome::Unmatched);
        };
        match outcome {
            None => Ok(TicketOutcome::Waiting(request)),
            Some(outcome) => Ok(TicketOutcome::Resolved(
                self.resolve_manual(&request.id, outcome, actor).await?,
            )),
        }
    }
}
