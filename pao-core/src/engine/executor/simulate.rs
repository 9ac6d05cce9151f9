//! Simulation: the plan of a request walked without calling any action.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::Scopes;
use super::node::render_config;
use crate::action::{ActionContext, ActionLogger, IdempotencyKey};
use crate::authz::Principal;
use crate::catalog::model::FulfillmentMode;
use crate::engine::plan::Phase;
use crate::engine::plan::Plan;
use crate::engine::{EngineError, Orchestrator};
use crate::store::NewRequest;
use crate::vars::Scope;

impl Orchestrator {
    /// Predicts what a request would do, calling no action: the plan, each action's rendered
    /// input (secrets shown as `[secret:name]`, earlier outputs from the actions' sample
    /// outputs), which `when` conditions hold, whether approval is needed, and problems.
    pub async fn simulate(
        &self,
        who: &Principal,
        item_id: &str,
        fields: &Value,
    ) -> Result<Simulation, EngineError> {
        let item = self.item(item_id)?;
        let form_ctx = crate::form::FormContext {
            user: who.to_scope(),
            ..Default::default()
        };
        let validated = crate::form::validate_fields(&item, fields, &form_ctx)
            .map_err(EngineError::InvalidFields)?;
        let now = self.clock.now();
        let fake = NewRequest {
            id: "simulation".into(),
            item_id: item_id.into(),
            item_version: item.version().into(),
            item_hash: item.content_hash.clone(),
            fields: validated.values,
            requester: who.clone(),
            team: who.teams.first().cloned().unwrap_or_default(),
            environment: None,
            priority: 0,
            idempotency_key: None,
            correlation_id: "simulation".into(),
            retry_of: None,
        }
        .into_submitted(now);
        let mut scopes = Scopes::base(self, &fake, &item);
        let mut problems = Vec::new();
        // Secrets are never fetched in a simulation.
        let mut secret_names = Map::new();
        for a in item.compiled.actions.values() {
            a.config.for_each_template(&mut |_, t| {
                for r in t.references() {
                    if r.scope == Scope::Secrets
                        && let Some(n) = r.path.first()
                    {
                        secret_names.insert(n.clone(), Value::String(format!("[secret:{n}]")));
                    }
                }
            });
        }
        scopes.secrets = Value::Object(secret_names);
        if let Err(e) = scopes.compute(&item) {
            problems.push(e);
        }
        let ctx = scopes.context();
        let approval_required = match (
            &item.item.fulfillment.approval,
            &item.compiled.approval_required_when,
        ) {
            (Some(_), Some(e)) => e.eval_bool(&ctx).unwrap_or(true),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let plan = Plan::of(&item.item);
        let mut outputs = Map::new();
        let mut actions = Vec::new();
        let mut finish_ms: Vec<u64> = vec![0; plan.nodes.len()];
        for (i, n) in plan.nodes.iter().enumerate() {
            let outs = Value::Object(outputs.clone());
            let ctx = scopes.context().with(Scope::Outputs, &outs);
            let compiled = item.compiled.actions.get(&n.spec.id);
            let will_run = match compiled.and_then(|c| c.when.as_ref()) {
                Some(w) => match w.eval_bool(&ctx) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        problems.push(format!("{}: when: {}", n.spec.id, e.message()));
                        None
                    }
                },
                None => Some(true),
            };
            let input = match compiled.map(|c| render_config(&c.config, &n.spec.config, &ctx)) {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    problems.push(format!(
                        "{}: config{}: {}",
                        n.spec.id,
                        e.pointer,
                        e.error.message()
                    ));
                    Value::Null
                }
                None => n.spec.config.clone(),
            };
            let type_name = n.spec.action_type.to_string();
            let action = self.actions.get(&type_name);
            if action.is_none() {
                problems.push(format!(
                    "{}: no action of type `{type_name}` is registered here",
                    n.spec.id
                ));
            }
            let sample = action
                .map(|a| a.describe().sample_output)
                .unwrap_or(Value::Null);
            if will_run == Some(true) {
                let mut rendered = Map::new();
                if let Some(c) = compiled {
                    let oc = ctx.with(Scope::Result, &sample);
                    for (k, t) in &c.outputs {
                        match t.render_value(&oc) {
                            Ok(v) => {
                                rendered.insert(k.clone(), v);
                            }
                            Err(e) => problems.push(format!(
                                "{}: outputs.{k}: {}",
                                n.spec.id,
                                e.message()
                            )),
                        }
                    }
                }
                outputs.insert(n.spec.id.clone(), Value::Object(rendered));
            }
            let rc_timeout = n
                .spec
                .timeout
                .as_deref()
                .or_else(|| {
                    item.item
                        .fulfillment
                        .defaults
                        .as_ref()
                        .and_then(|d| d.timeout.as_deref())
                })
                .and_then(crate::vars::parse_duration_ms)
                .and_then(|ms| u64::try_from(ms).ok())
                .unwrap_or(self.config.default_timeout.as_millis() as u64);
            let start = n.deps.iter().map(|&d| finish_ms[d]).max().unwrap_or(0);
            finish_ms[i] = start
                + if will_run == Some(false) {
                    0
                } else {
                    rc_timeout
                };
            // Actions that can describe their call without making it show what they would
            // send; secrets are placeholders, never fetched.
            let request = match action {
                Some(a) if a.supports_dry_run() && will_run == Some(true) && !input.is_null() => {
                    let ctx = ActionContext {
                        request_id: "simulation".into(),
                        action_id: n.spec.id.clone(),
                        attempt: 1,
                        idempotency_key: IdempotencyKey::for_action("simulation", &n.spec.id),
                        deadline: None,
                        cancel: CancellationToken::new(),
                        log: ActionLogger::default(),
                        secrets: Arc::new(PlaceholderSecrets),
                        dry_run: true,
                    };
                    match tokio::time::timeout(Duration::from_secs(5), a.execute(&ctx, &input))
                        .await
                    {
                        Ok(Ok(out)) => Some(out.result),
                        Ok(Err(e)) => {
                            problems.push(format!("{}: dry run: {}", n.spec.id, e.message));
                            None
                        }
                        Err(_) => {
                            problems.push(format!("{}: dry run took more than 5 s", n.spec.id));
                            None
                        }
                    }
                }
                _ => None,
            };
            actions.push(SimulatedAction {
                id: n.spec.id.clone(),
                action_type: type_name,
                phase: if n.phase == Phase::Main {
                    "main"
                } else {
                    "post_fulfillment"
                },
                group: n.group.map(|g| plan.groups[g].id.clone()),
                depends_on: n
                    .deps
                    .iter()
                    .map(|&d| plan.nodes[d].spec.id.clone())
                    .collect(),
                will_run,
                input,
                request,
                sample_output: sample,
                timeout_ms: rc_timeout,
                latest_finish_ms: finish_ms[i],
            });
        }
        Ok(Simulation {
            item_id: item_id.to_string(),
            mode: if item.item.fulfillment.mode == FulfillmentMode::Manual {
                "manual"
            } else {
                "automated"
            },
            approval_required,
            computed: scopes.computed.clone(),
            actions,
            worst_case_ms: finish_ms.iter().copied().max().unwrap_or(0),
            problems,
        })
    }
}

/// The result of [`Orchestrator::simulate`].
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    /// The item.
    pub item_id: String,
    /// `manual` or `automated`.
    pub mode: &'static str,
    /// Whether the request would wait for approval.
    pub approval_required: bool,
    /// Computed values.
    pub computed: Value,
    /// Each action in plan order.
    pub actions: Vec<SimulatedAction>,
    /// Upper bound of the fulfillment time: the critical path of timeouts.
    pub worst_case_ms: u64,
    /// Problems found on the way (render errors, missing action types).
    pub problems: Vec<String>,
}

/// One action in a simulation.
#[derive(Debug, Clone, Serialize)]
pub struct SimulatedAction {
    /// Action id.
    pub id: String,
    /// Action type.
    pub action_type: String,
    /// `main` or `post_fulfillment`.
    pub phase: &'static str,
    /// Parallel group.
    pub group: Option<String>,
    /// Direct dependencies.
    pub depends_on: Vec<String>,
    /// Whether its `when` holds (`None` when it cannot be decided).
    pub will_run: Option<bool>,
    /// The input it would get.
    pub input: Value,
    /// What it would send (its dry run), for action types that can say without sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    /// The sample output its type describes.
    pub sample_output: Value,
    /// Its timeout.
    pub timeout_ms: u64,
    /// When it would finish at the latest, from the start.
    pub latest_finish_ms: u64,
}

/// The secret provider of simulations: every name reads as `[secret:<name>]`.
struct PlaceholderSecrets;

#[async_trait::async_trait]
impl crate::secrets::SecretProvider for PlaceholderSecrets {
    async fn get(&self, name: &str) -> Result<String, crate::secrets::SecretError> {
        Ok(format!("[secret:{name}]"))
    }
}
