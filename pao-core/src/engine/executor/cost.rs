//! The cost of a request, estimated at admission: its item's `cost` actions run in estimate
//! mode (a dry run: no secret is read, nothing is called) with the submitted fields, or else
//! the item's declared `metadata.cost` rendered with them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::Scopes;
use super::node::render_config;
use super::simulate::PlaceholderSecrets;
use crate::action::{ActionContext, ActionLogger, IdempotencyKey};
use crate::catalog::LoadedItem;
use crate::engine::Orchestrator;
use crate::engine::plan::Plan;
use crate::store::{ActionEstimate, AdmissionCost, CostSource, Request};
use crate::vars::Scope;

/// How long one estimate may take.
const ESTIMATE_TIMEOUT: Duration = Duration::from_secs(5);

/// A number, or a string holding one.
fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// The `cost` scope of approval rules: `monthly`, `one_time` and `currency`. An item that
/// declares no cost costs nothing; an estimate that failed reads as `null` totals.
pub(crate) fn cost_scope(cost: Option<&AdmissionCost>) -> Value {
    match cost {
        None => json!({ "monthly": 0, "one_time": 0, "currency": null, "estimated": false }),
        Some(c) => json!({
            "monthly": c.monthly,
            "one_time": c.one_time,
            "currency": c.currency,
            "estimated": c.monthly.is_some(),
        }),
    }
}

impl Orchestrator {
    /// The cost of `request` (not stored yet), estimated for its admission; `None` when its
    /// item has neither a `cost` action nor a declared `metadata.cost`.
    pub(crate) async fn admission_cost(
        &self,
        request: &Request,
        item: &Arc<LoadedItem>,
    ) -> Option<AdmissionCost> {
        let plan = Plan::of(&item.item);
        let nodes: Vec<_> = plan
            .nodes
            .iter()
            .filter(|n| n.spec.action_type.to_string() == "cost")
            .collect();
        if nodes.is_empty() && item.item.metadata.cost.is_none() {
            return None;
        }
        let scopes = Scopes::for_admission(self, request, item);
        // Nothing has run yet: no outputs.
        let outputs = Value::Object(Map::new());
        let ctx = scopes.context().with(Scope::Outputs, &outputs);
        let mut cost = AdmissionCost::default();
        if let Some(declared) = &item.item.metadata.cost {
            match item.compiled.sections.get("/metadata/cost") {
                Some(t) => match t.render(&ctx) {
                    Ok(v) => cost.declared = Some(v),
                    Err(e) => cost.problems.push(format!(
                        "metadata.cost{}: {}",
                        e.pointer,
                        e.error.message()
                    )),
                },
                None => cost.declared = serde_json::to_value(declared).ok(),
            }
        }
        let mut failed = false;
        for n in nodes {
            let id = &n.spec.id;
            let compiled = item.compiled.actions.get(id);
            if let Some(when) = compiled.and_then(|c| c.when.as_ref()) {
                match when.eval_bool(&ctx) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        cost.problems.push(format!("{id}: when: {}", e.message()));
                        failed = true;
                        continue;
                    }
                }
            }
            let input = match compiled.map(|c| render_config(&c.config, &n.spec.config, &ctx)) {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    cost.problems
                        .push(format!("{id}: config{}: {}", e.pointer, e.error.message()));
                    failed = true;
                    continue;
                }
                None => n.spec.config.clone(),
            };
            let Some(action) = self.actions.get("cost") else {
                cost.problems
                    .push(format!("{id}: no `cost` action is registered here"));
                failed = true;
                continue;
            };
            let actx = ActionContext {
                request_id: request.id.clone(),
                action_id: id.clone(),
                attempt: 1,
                idempotency_key: IdempotencyKey::for_action(&request.id, id),
                deadline: None,
                cancel: CancellationToken::new(),
                log: ActionLogger::default(),
                secrets: Arc::new(PlaceholderSecrets),
                dry_run: true,
            };
            match tokio::time::timeout(ESTIMATE_TIMEOUT, action.execute(&actx, &input)).await {
                Ok(Ok(out)) => cost.estimates.push(ActionEstimate {
                    action_id: id.clone(),
                    result: out.result,
                }),
                Ok(Err(e)) => {
                    cost.problems.push(format!("{id}: {}", e.message));
                    failed = true;
                }
                Err(_) => {
                    cost.problems.push(format!(
                        "{id}: the estimate took more than {} s",
                        ESTIMATE_TIMEOUT.as_secs()
                    ));
                    failed = true;
                }
            }
        }
        if !cost.estimates.is_empty() || failed {
            cost.source = CostSource::Actions;
            let currencies: Vec<&str> = cost
                .estimates
                .iter()
                .filter_map(|e| e.result.get("currency").and_then(Value::as_str))
                .collect();
            cost.currency = currencies.first().map(|c| c.to_string());
            if currencies
                .iter()
                .any(|c| Some(*c) != cost.currency.as_deref())
            {
                cost.problems.push(format!(
                    "the estimates are in different currencies ({}); PAO does not convert them",
                    currencies.join(", ")
                ));
                failed = true;
            }
            if !failed {
                let sum = |key: &str| -> Option<f64> {
                    cost.estimates
                        .iter()
                        .try_fold(0.0, |acc, e| match e.result.get(key) {
                            None | Some(Value::Null) => Some(acc),
                            v => number(v).map(|x| acc + x),
                        })
                };
                cost.monthly = sum("monthly").map(round2);
                cost.one_time = sum("one_time").map(round2);
            }
        } else if let Some(d) = &cost.declared {
            cost.source = CostSource::Declared;
            cost.currency = d.get("currency").and_then(Value::as_str).map(String::from);
            cost.monthly = match d.get("monthly") {
                None | Some(Value::Null) => Some(0.0),
                v => number(v),
            };
            cost.one_time = match d.get("one_time") {
                None | Some(Value::Null) => Some(0.0),
                v => number(v),
            };
            if cost.monthly.is_none() || cost.one_time.is_none() {
                cost.problems
                    .push("metadata.cost: the declared cost is not a number".to_string());
            }
        } else {
            // The declared cost did not render (see `problems`).
            cost.source = CostSource::Declared;
        }
        Some(cost)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
