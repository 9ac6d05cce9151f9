//! Health checks of what completed requests provisioned (`monitoring.health_check` of their
//! item): the targets to check, with their URLs rendered from the request (fields, computed
//! values, outputs), and the record of each change of health as an event on the request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::executor::Scopes;
use super::{EngineError, Orchestrator};
use crate::catalog::LoadedItem;
use crate::lifecycle::RequestState;
use crate::store::{AttemptOutcome, EventKind, Request, RequestFilter};
use crate::vars::Scope;

/// Checked every 5 minutes unless the item says otherwise.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(300);

/// One provisioned instance to check.
#[derive(Debug, Clone)]
pub struct HealthTarget {
    /// The request that provisioned it.
    pub request: Request,
    /// How often to check.
    pub interval: Duration,
    /// The definition the request was admitted with.
    item: Arc<LoadedItem>,
}

impl Orchestrator {
    /// The health-check targets: the completed requests of every item with a
    /// `monitoring.health_check`, newest first, at most `per_item` per item. Their URLs are
    /// rendered only when a check is due ([`Orchestrator::health_url`]).
    pub async fn health_targets(&self, per_item: usize) -> Result<Vec<HealthTarget>, EngineError> {
        let catalog = self.catalog();
        let mut targets = Vec::new();
        for item in catalog.items() {
            if item
                .item
                .monitoring
                .as_ref()
                .and_then(|m| m.health_check.as_ref())
                .is_none()
            {
                continue;
            }
            let requests = self
                .store
                .list(&RequestFilter {
                    states: vec![RequestState::Completed],
                    item_id: Some(item.id().to_string()),
                    limit: per_item,
                    ..RequestFilter::default()
                })
                .await?;
            for r in requests {
                // The definition the request was admitted with.
                let pinned = match self.item_of(&r).await {
                    Ok(Some(i)) => i,
                    _ => continue,
                };
                let Some(check) = pinned
                    .item
                    .monitoring
                    .as_ref()
                    .and_then(|m| m.health_check.as_ref())
                else {
                    continue;
                };
                let interval = check
                    .interval
                    .as_ref()
                    .and_then(|d| d.get())
                    .unwrap_or(DEFAULT_HEALTH_INTERVAL);
                targets.push(HealthTarget {
                    request: r,
                    interval,
                    item: pinned,
                });
            }
        }
        Ok(targets)
    }

    /// The target's health-check URL, rendered with its request's fields, computed values and
    /// the outputs of its actions (read from the journal).
    pub async fn health_url(&self, target: &HealthTarget) -> Result<String, String> {
        let (r, item) = (&target.request, target.item.as_ref());
        let mut outputs = Map::new();
        for a in self
            .store
            .attempts(&r.id)
            .await
            .map_err(|e| e.to_string())?
        {
            if let (false, AttemptOutcome::Succeeded { outputs: o, .. }) = (a.rollback, a.outcome) {
                outputs.insert(a.action_id, o);
            }
        }
        let outputs = Value::Object(outputs);
        let scopes = Scopes::for_admission(self, r, item);
        let ctx = scopes.context().with(Scope::Outputs, &outputs);
        let rendered = match item.compiled.sections.get("/monitoring") {
            Some(t) => t
                .render(&ctx)
                .map_err(|e| format!("{}{}", e.pointer, e.error.message()))?,
            None => serde_json::to_value(&item.item.monitoring).unwrap_or(Value::Null),
        };
        rendered
            .pointer("/health_check/url")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "did not render to a text".to_string())
    }

    /// The last health recorded for request `id` (`None`: never checked).
    pub async fn last_health(&self, id: &str) -> Result<Option<bool>, EngineError> {
        let events = self.store.events(id, 0, 0).await?;
        Ok(events.iter().rev().find_map(|e| match e.kind {
            EventKind::HealthChanged { healthy, .. } => Some(healthy),
            _ => None,
        }))
    }

    /// Records a change of health of what `request` provisioned: a `health_changed` event.
    pub async fn record_health(
        &self,
        request: &Request,
        healthy: bool,
        url: &str,
        status: Option<u16>,
        error: Option<String>,
    ) -> Result<(), EngineError> {
        self.emit(
            request,
            EventKind::HealthChanged {
                healthy,
                url: url.to_string(),
                status,
                error,
            },
            None,
        )
        .await?;
        Ok(())
    }
}
