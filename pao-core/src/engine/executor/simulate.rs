//! Simulation: the plan of a request walked without calling any action.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::Scopes;
use super::node::render_config;
use crate::action::{Action, ActionContext, ActionLogger, IdempotencyKey};
use crate::authz::Principal;
use crate::catalog::LoadedItem;
use crate::catalog::model::{DurationText, FulfillmentMode};
use crate::engine::plan::{Phase, Plan};
use crate::engine::{EngineError, Orchestrator};
use crate::store::{NewRequest, Request};
use crate::vars::{Context, Scope};

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
            cost: None,
        }
        .into_submitted(now);
        let mut fake = fake;
        fake.environment = self.request_environment(&item, &fake)?;
        fake.cost = self.admission_cost(&fake, &item).await;
        let mut problems = Vec::new();
        let scopes = self.simulation_scopes(&fake, &item, &mut problems);
        let cost = super::cost_scope(fake.cost.as_ref());
        let ctx = scopes.context().with(Scope::Cost, &cost);
        let rule = self.approval_rule(&item);
        let approval_required = match (&rule, rule.as_ref().and_then(|r| r.required_when())) {
            (Some(_), Some(e)) => e.eval_bool(&ctx).unwrap_or(true),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let plan = Plan::of(&item.item);
        let mut walk = Walk {
            item: &item,
            scopes: &scopes,
            plan: &plan,
            outputs: Map::new(),
            finish_ms: vec![0; plan.nodes.len()],
            problems,
        };
        let mut actions = Vec::new();
        for i in 0..plan.nodes.len() {
            actions.push(self.simulate_node(&mut walk, i).await);
        }
        Ok(Simulation {
            item_id: item_id.to_string(),
            mode: if item.item.fulfillment.mode == FulfillmentMode::Manual {
                "manual"
            } else {
                "automated"
            },
            approval_required,
            cost: fake.cost.clone(),
            computed: scopes.computed.clone(),
            actions,
            worst_case_ms: walk.finish_ms.iter().copied().max().unwrap_or(0),
            problems: walk.problems,
        })
    }

    /// The scopes of a simulated request: secrets are never fetched, each reads as
    /// `[secret:name]`.
    fn simulation_scopes(
        &self,
        request: &Request,
        item: &LoadedItem,
        problems: &mut Vec<String>,
    ) -> Scopes {
        let mut scopes = Scopes::base(self, request, item);
        let mut secret_names = Map::new();
        for a in item.compiled.actions.values() {
            a.config.for_each_template(&mut |_, t| {
                for r in t.references() {
                    if let Some(n) = r.secret_name() {
                        secret_names.insert(n.to_owned(), Value::String(format!("[secret:{n}]")));
                    }
                }
            });
        }
        scopes.secrets = Value::Object(secret_names);
        if let Err(e) = scopes.compute(item) {
            problems.push(e);
        }
        scopes
    }

    /// Simulates plan node `i`: whether it runs, its input, its sample outputs, its timing
    /// and its dry run.
    async fn simulate_node(&self, w: &mut Walk<'_>, i: usize) -> SimulatedAction {
        let (item, plan) = (w.item, w.plan);
        let n = &plan.nodes[i];
        let outs = Value::Object(w.outputs.clone());
        let ctx = w.scopes.context().with(Scope::Outputs, &outs);
        let compiled = item.compiled.actions.get(&n.spec.id);
        let will_run = match compiled.and_then(|c| c.when.as_ref()) {
            Some(when) => match when.eval_bool(&ctx) {
                Ok(b) => Some(b),
                Err(e) => {
                    w.problems
                        .push(format!("{}: when: {}", n.spec.id, e.message()));
                    None
                }
            },
            None => Some(true),
        };
        let input = match compiled.map(|c| render_config(&c.config, &n.spec.config, &ctx)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                w.problems.push(format!(
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
            w.problems.push(format!(
                "{}: no action of type `{type_name}` is registered here",
                n.spec.id
            ));
        }
        let sample = action
            .map(|a| a.describe().sample_output)
            .unwrap_or(Value::Null);
        if will_run == Some(true) {
            let rendered = w.sample_outputs(&n.spec.id, &ctx, &sample);
            w.outputs.insert(n.spec.id.clone(), Value::Object(rendered));
        }
        let timeout_ms = self.simulated_timeout_ms(item, n.spec.timeout.as_ref());
        let start = n.deps.iter().map(|&d| w.finish_ms[d]).max().unwrap_or(0);
        w.finish_ms[i] = start
            + if will_run == Some(false) {
                0
            } else {
                timeout_ms
            };
        // Actions that can describe their call without making it show what they would
        // send; secrets are placeholders, never fetched.
        let request = match action {
            Some(a) if a.supports_dry_run() && will_run == Some(true) && !input.is_null() => {
                dry_run(a.as_ref(), &n.spec.id, &input, &mut w.problems).await
            }
            _ => None,
        };
        SimulatedAction {
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
            timeout_ms,
            latest_finish_ms: w.finish_ms[i],
        }
    }

    /// An action's timeout in a simulation: its own, the item's default, or the engine's.
    fn simulated_timeout_ms(&self, item: &LoadedItem, spec_timeout: Option<&DurationText>) -> u64 {
        spec_timeout
            .or(self.execution_defaults(item).timeout.as_ref())
            .and_then(DurationText::get)
            .unwrap_or(self.config.default_timeout)
            .as_millis() as u64
    }
}

/// A simulation on its way through the plan.
struct Walk<'a> {
    item: &'a LoadedItem,
    scopes: &'a Scopes,
    plan: &'a Plan,
    /// The outputs of the nodes so far, rendered from their sample outputs.
    outputs: Map<String, Value>,
    /// When each node would finish at the latest.
    finish_ms: Vec<u64>,
    problems: Vec<String>,
}

impl Walk<'_> {
    /// Action `id`'s outputs rendered over its type's sample output.
    fn sample_outputs(
        &mut self,
        id: &str,
        ctx: &Context<'_>,
        sample: &Value,
    ) -> Map<String, Value> {
        let mut rendered = Map::new();
        if let Some(c) = self.item.compiled.actions.get(id) {
            let oc = ctx.with(Scope::Result, sample);
            for (k, t) in &c.outputs {
                match t.render_value(&oc) {
                    Ok(v) => {
                        rendered.insert(k.clone(), v);
                    }
                    Err(e) => self
                        .problems
                        .push(format!("{id}: outputs.{k}: {}", e.message())),
                }
            }
        }
        rendered
    }
}

/// The dry run of an action: what it would send, with placeholder secrets.
async fn dry_run(
    a: &dyn Action,
    action_id: &str,
    input: &Value,
    problems: &mut Vec<String>,
) -> Option<Value> {
    let ctx = ActionContext {
        request_id: "simulation".into(),
        action_id: action_id.to_string(),
        attempt: 1,
        idempotency_key: IdempotencyKey::for_action("simulation", action_id),
        deadline: None,
        cancel: CancellationToken::new(),
        log: ActionLogger::default(),
        secrets: Arc::new(PlaceholderSecrets),
        dry_run: true,
    };
    match tokio::time::timeout(Duration::from_secs(5), a.execute(&ctx, input)).await {
        Ok(Ok(out)) => Some(out.result),
        Ok(Err(e)) => {
            problems.push(format!("{action_id}: dry run: {}", e.message));
            None
        }
        Err(_) => {
            problems.push(format!("{action_id}: dry run took more than 5 s"));
            None
        }
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
    /// The cost its admission would estimate.
    pub cost: Option<crate::store::AdmissionCost>,
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
pub(super) struct PlaceholderSecrets;

#[async_trait::async_trait]
impl crate::secrets::SecretProvider for PlaceholderSecrets {
    async fn get(&self, name: &str) -> Result<String, crate::secrets::SecretError> {
        Ok(format!("[secret:{name}]"))
    }
}
