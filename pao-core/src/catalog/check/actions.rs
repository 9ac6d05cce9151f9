//! Actions: unique ids, known types (and plugin configs that fit their schema), dependencies
//! without cycles, and each action's templates checked against what has surely run before it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::graph::{find_cycle, reach};
use super::sections::compile_checked_with;
use crate::catalog::diagnostic::codes;
use crate::catalog::load::{CompiledAction, CompiledItem, FileDiags, LoadOptions};
use crate::catalog::model::{ActionSpec, ActionStep, ActionType, CatalogItem, OnFailure};
use crate::vars::{Declarations, Engine, did_you_mean};

/// Where an action lives and what runs before it.
pub(super) struct ActionInfo<'i> {
    pub spec: &'i ActionSpec,
    pub pointer: String,
    /// Sequential phase index (main steps 0.., post-fulfillment after them).
    pub step: usize,
    /// Parallel group id, when inside one.
    pub group: Option<String>,
}

/// The actions of an item with their dependency graph.
pub(super) struct ActionGraph<'i> {
    /// Every action, main steps first (parallel members in order), then post-fulfillment.
    pub actions: Vec<ActionInfo<'i>>,
    /// Parallel group id → its member action ids.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Action id → its index in `actions` (the first one, for a duplicated id).
    pub ids: BTreeMap<String, usize>,
    /// The step index of the first post-fulfillment action.
    pub post_base: usize,
    /// Each action's transitive dependencies, explicit and by step order.
    pub ancestors: Vec<BTreeSet<usize>>,
}

impl ActionGraph<'_> {
    /// Whether action `j` may not run: it has `when`, or failing it does not stop the request.
    pub fn optional(&self, j: usize) -> bool {
        let spec = self.actions[j].spec;
        spec.when.is_some() || matches!(spec.on_failure, Some(OnFailure::Continue))
    }

    /// The actions surely completed before action `i` starts.
    fn completed_before(&self, i: usize) -> BTreeSet<String> {
        self.ancestors[i]
            .iter()
            .filter(|&&j| !self.optional(j))
            .map(|&j| self.actions[j].spec.id.clone())
            .collect()
    }
}

/// Collects the actions and checks ids (PAO-E016), types (PAO-E006, PAO-E020) and
/// dependencies (PAO-E007, PAO-E008).
pub(super) fn graph<'i>(
    d: &mut FileDiags,
    item: &'i CatalogItem,
    opts: &LoadOptions,
) -> ActionGraph<'i> {
    let (actions, groups, post_base) = collect(item);
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (i, a) in actions.iter().enumerate() {
        if ids.contains_key(&a.spec.id) || groups.contains_key(&a.spec.id) {
            d.error(
                codes::DUPLICATE_ID,
                &format!("{}/id", a.pointer),
                format!("action id `{}` is used twice in this item", a.spec.id),
                Some("action and parallel-group ids share one namespace per item".to_string()),
            );
            continue;
        }
        ids.insert(a.spec.id.clone(), i);
    }
    for a in &actions {
        check_types(d, a, opts);
    }
    let mut graph = ActionGraph {
        actions,
        groups,
        ids,
        post_base,
        ancestors: Vec::new(),
    };
    let edges = explicit_edges(d, &graph);
    // Implicit edges: every action of a step waits for every action of the previous steps.
    let n = graph.actions.len();
    let mut full = edges;
    for (deps, a) in full.iter_mut().zip(&graph.actions) {
        for (j, b) in graph.actions.iter().enumerate() {
            if b.step < a.step {
                deps.insert(j);
            }
        }
    }
    if let Some(cycle) = find_cycle(&full) {
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| graph.actions[i].spec.id.as_str())
            .collect();
        d.error(
            codes::CYCLE,
            &format!("{}/depends_on", graph.actions[cycle[0]].pointer),
            format!("dependency cycle: {}", names.join(" → ")),
            Some("list order already runs earlier steps first; a depends_on pointing at a later step closes a cycle".to_string()),
        );
    }
    graph.ancestors = (0..n).map(|i| reach(&full, i)).collect();
    graph
}

/// The actions in order, the parallel groups, and the step index of post-fulfillment.
#[allow(clippy::type_complexity)]
fn collect(item: &CatalogItem) -> (Vec<ActionInfo<'_>>, BTreeMap<String, Vec<String>>, usize) {
    let mut actions = Vec::new();
    let mut groups = BTreeMap::new();
    let main_steps = item.fulfillment.actions.as_deref().unwrap_or(&[]);
    for (si, step) in main_steps.iter().enumerate() {
        match step {
            ActionStep::Action(a) => actions.push(ActionInfo {
                spec: a,
                pointer: format!("/fulfillment/actions/{si}"),
                step: si,
                group: None,
            }),
            ActionStep::Parallel(p) => {
                let g = &p.parallel;
                groups.insert(
                    g.id.clone(),
                    g.actions.iter().map(|a| a.id.clone()).collect(),
                );
                for (ai, a) in g.actions.iter().enumerate() {
                    actions.push(ActionInfo {
                        spec: a,
                        pointer: format!("/fulfillment/actions/{si}/parallel/actions/{ai}"),
                        step: si,
                        group: Some(g.id.clone()),
                    });
                }
            }
        }
    }
    let post_base = main_steps.len();
    let post = item.fulfillment.post_fulfillment.iter().flatten();
    for (pi, a) in post.enumerate() {
        actions.push(ActionInfo {
            spec: a,
            pointer: format!("/fulfillment/post_fulfillment/{pi}"),
            step: post_base + pi,
            group: None,
        });
    }
    (actions, groups, post_base)
}

/// The action's type and its rollback's are known; a plugin config fits the plugin's schema.
fn check_types(d: &mut FileDiags, a: &ActionInfo, opts: &LoadOptions) {
    let ty = a.spec.action_type.to_string();
    if !opts.action_types.contains(&ty) {
        let hint = match did_you_mean(&ty, opts.action_types.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None if ty.starts_with("plugin:") => {
                format!(
                    "no plugin `{}` is installed; add it to the plugin folder",
                    ty.trim_start_matches("plugin:")
                )
            }
            None => format!(
                "known types: {}",
                opts.action_types
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        d.error(
            codes::UNKNOWN_ACTION_TYPE,
            &format!("{}/type", a.pointer),
            format!("unknown action type `{ty}`"),
            Some(hint),
        );
    } else {
        plugin_config(d, &a.pointer, &ty, &a.spec.config, opts);
    }
    if let Some(rb) = &a.spec.rollback {
        let rty = rb.action_type.to_string();
        if opts.action_types.contains(&rty) {
            let ptr = format!("{}/rollback", a.pointer);
            plugin_config(d, &ptr, &rty, &rb.config, opts);
        } else {
            d.error(
                codes::UNKNOWN_ACTION_TYPE,
                &format!("{}/rollback/type", a.pointer),
                format!("unknown action type `{rty}` in rollback"),
                did_you_mean(&rty, opts.action_types.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?")),
            );
        }
    }
}

/// A plugin action's config (at `ptr/config`) fits the plugin's schema, then passes the
/// plugin's own `validate`.
fn plugin_config(d: &mut FileDiags, ptr: &str, ty: &str, config: &Value, opts: &LoadOptions) {
    let mut fits = true;
    if let Some(schema) = opts.plugin_config_schemas.get(ty)
        && let Ok(v) = jsonschema::validator_for(schema)
    {
        for e in v.iter_errors(config) {
            let p = format!("{ptr}/config{}", e.instance_path().as_str());
            d.error(codes::ACTION_CONFIG, &p, format!("{ty} config: {e}"), None);
            fits = false;
        }
    }
    let Some(check) = opts.plugin_validators.get(ty).filter(|_| fits) else {
        return;
    };
    if let Err(complaints) = (check.0)(config) {
        for c in complaints {
            // `/channel: a channel is ...` points into the config; a bare message at it.
            let (at, message) = match c.split_once(": ") {
                Some((p, m)) if p.starts_with('/') && config.pointer(p).is_some() => {
                    (format!("{ptr}/config{p}"), m.to_string())
                }
                _ => (format!("{ptr}/config"), c.clone()),
            };
            d.error(
                codes::ACTION_CONFIG,
                &at,
                format!("{ty} config: {message}"),
                Some("the plugin's own check (`validate`) refused it".to_string()),
            );
        }
    }
}

/// The `depends_on` edges (a group id stands for its members), each pointing at a dependency.
fn explicit_edges(d: &mut FileDiags, g: &ActionGraph) -> Vec<BTreeSet<usize>> {
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); g.actions.len()];
    for (i, a) in g.actions.iter().enumerate() {
        for (di, dep) in a.spec.depends_on.iter().flatten().enumerate() {
            let ptr = format!("{}/depends_on/{di}", a.pointer);
            if let Some(&j) = g.ids.get(dep) {
                if j == i {
                    d.error(
                        codes::CYCLE,
                        &ptr,
                        format!("action `{dep}` depends on itself"),
                        None,
                    );
                } else {
                    edges[i].insert(j);
                }
            } else if let Some(members) = g.groups.get(dep) {
                if a.group.as_deref() == Some(dep.as_str()) {
                    d.error(
                        codes::CYCLE,
                        &ptr,
                        format!(
                            "action `{}` depends on its own parallel group `{dep}`",
                            a.spec.id
                        ),
                        None,
                    );
                }
                for m in members {
                    if let Some(&j) = g.ids.get(m)
                        && j != i
                    {
                        edges[i].insert(j);
                    }
                }
            } else {
                let known = g.ids.keys().chain(g.groups.keys()).map(String::as_str);
                let hint = did_you_mean(dep, known).map(|s| format!("did you mean `{s}`?"));
                d.error(
                    codes::UNKNOWN_DEPENDENCY,
                    &ptr,
                    format!("depends_on names unknown action `{dep}`"),
                    hint,
                );
            }
        }
    }
    edges
}

/// Compiles each action's `when`, config, outputs and rollback config into
/// `compiled.actions`, checked against the actions surely completed before it.
pub(super) fn compile(
    d: &mut FileDiags,
    engine: &Engine,
    g: &ActionGraph,
    base: &Declarations,
    compiled: &mut CompiledItem,
) {
    for (i, a) in g.actions.iter().enumerate() {
        let decl = Declarations {
            completed: g.completed_before(i),
            ..base.clone()
        };
        let action = compile_action(d, engine, a, &decl);
        compiled.actions.insert(a.spec.id.clone(), action);
    }
}

fn compile_action(
    d: &mut FileDiags,
    engine: &Engine,
    a: &ActionInfo,
    decl: &Declarations,
) -> CompiledAction {
    let when = a.spec.when.as_ref().and_then(|src| {
        let ptr = format!("{}/when", a.pointer);
        match engine.compile_expression(src) {
            Ok(e) => {
                for err in e.check(decl) {
                    d.var_error(&ptr, &err);
                }
                Some(e)
            }
            Err(err) => {
                d.var_error(&ptr, &err);
                None
            }
        }
    });
    // A polling REST call may read the first response (`result`) in its `poll` block.
    let config = compile_checked_with(
        d,
        engine,
        &format!("{}/config", a.pointer),
        &a.spec.config,
        decl,
        true,
        |p| p.starts_with("/poll"),
    );
    if a.spec.action_type == ActionType::Rest {
        check_poll_until(d, engine, a, decl);
    }
    let mut outputs = Vec::new();
    let out_decl = Declarations {
        allow_result: true,
        ..decl.clone()
    };
    for (k, src) in a.spec.outputs.iter().flatten() {
        let ptr = format!("{}/outputs/{k}", a.pointer);
        match engine.compile(src) {
            Ok(t) => {
                for err in t.check(&out_decl) {
                    d.var_error(&ptr, &err);
                }
                outputs.push((k.clone(), t));
            }
            Err(err) => d.var_error(&ptr, &err),
        }
    }
    let rollback = a.spec.rollback.as_ref().map(|rb| {
        let mut rb_decl = decl.clone();
        rb_decl.completed.insert(a.spec.id.clone());
        compile_checked_with(
            d,
            engine,
            &format!("{}/rollback/config", a.pointer),
            &rb.config,
            &rb_decl,
            true,
            |_| false,
        )
    });
    CompiledAction {
        when,
        config,
        outputs,
        rollback,
    }
}

/// A REST action's `poll.until`: a bare expression over `result` that the action evaluates
/// after each response. It is compiled and checked here, with the catalog's engine, so that a
/// mistake in it is a load error (PAO-E010, PAO-E011) rather than a failed action.
fn check_poll_until(d: &mut FileDiags, engine: &Engine, a: &ActionInfo, decl: &Declarations) {
    let Some(Value::String(src)) = a.spec.config.pointer("/poll/until") else {
        return;
    };
    let ptr = format!("{}/config/poll/until", a.pointer);
    let with_result = Declarations {
        allow_result: true,
        ..decl.clone()
    };
    match engine.compile_expression(src) {
        Ok(e) => {
            for err in e.check(&with_result) {
                d.var_error(&ptr, &err);
            }
        }
        Err(err) => d.var_error(&ptr, &err),
    }
}
