//! Templated sections: computed values (in dependency order), the approval condition, the
//! manual ticket, cost, prerequisites and monitoring, and the helpers that compile a JSON
//! value's templates and check what they read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::actions::ActionGraph;
use super::graph::find_cycle;
use crate::catalog::diagnostic::codes;
use crate::catalog::load::{CompiledItem, FileDiags, ItemEnvironment};
use crate::catalog::model::{CatalogItem, CatalogSourceKind, FulfillmentMode};
use crate::vars::{Declarations, Engine, Template, ValueTemplate};

fn compile_section(
    d: &mut FileDiags,
    engine: &Engine,
    ptr: &str,
    value: &Value,
    decl: &Declarations,
    compiled: &mut CompiledItem,
) {
    let t = compile_checked(d, engine, ptr, value, decl);
    if !matches!(t, ValueTemplate::Literal(_)) {
        compiled.sections.insert(ptr.to_string(), t);
    }
}

fn compile_checked(
    d: &mut FileDiags,
    engine: &Engine,
    ptr: &str,
    value: &Value,
    decl: &Declarations,
) -> ValueTemplate {
    compile_checked_with(d, engine, ptr, value, decl, false, |_| false)
}

pub(super) fn compile_checked_with(
    d: &mut FileDiags,
    engine: &Engine,
    ptr: &str,
    value: &Value,
    decl: &Declarations,
    action_config: bool,
    allow_result_at: impl Fn(&str) -> bool,
) -> ValueTemplate {
    let with_result = Declarations {
        allow_result: true,
        ..decl.clone()
    };
    let compiled = if action_config {
        engine.compile_config(value)
    } else {
        engine.compile_value(value)
    };
    match compiled {
        Ok(t) => {
            let mut errors = Vec::new();
            t.for_each_template(&mut |p, tpl| {
                let decl = if allow_result_at(p) {
                    &with_result
                } else {
                    decl
                };
                for e in tpl.check(decl) {
                    errors.push((format!("{ptr}{p}"), e));
                }
            });
            for (p, e) in errors {
                d.var_error(&p, &e);
            }
            t
        }
        Err(errors) => {
            for e in errors {
                d.var_error(&format!("{ptr}{}", e.pointer), &e.error);
            }
            ValueTemplate::Literal(Value::Null)
        }
    }
}

/// Orders computed values so each comes after the ones it reads; reports cycles.
fn computed_order(d: &mut FileDiags, templates: &BTreeMap<String, Template>) -> Vec<String> {
    let names: Vec<&String> = templates.keys().collect();
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); names.len()];
    for (i, name) in names.iter().enumerate() {
        for r in templates[*name].references() {
            if r.scope == crate::vars::Scope::Computed
                && let Some(first) = r.path.first()
                && let Some(&j) = index.get(first.as_str())
            {
                deps[i].insert(j);
            }
        }
    }
    if let Some(cycle) = find_cycle(&deps) {
        let list: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
        d.error(
            codes::COMPUTED_CYCLE,
            &format!("/computed/{}", names[cycle[0]]),
            format!("computed values form a cycle: {}", list.join(" → ")),
            Some("a computed value may read others only if they do not read it back".to_string()),
        );
        return names.iter().map(|s| s.to_string()).collect();
    }
    // Depth-first post-order gives dependencies first.
    let mut order = Vec::new();
    let mut done = vec![false; names.len()];
    fn visit(i: usize, deps: &[BTreeSet<usize>], done: &mut [bool], order: &mut Vec<usize>) {
        if done[i] {
            return;
        }
        done[i] = true;
        for &j in &deps[i] {
            visit(j, deps, done, order);
        }
        order.push(i);
    }
    for i in 0..names.len() {
        visit(i, &deps, &mut done, &mut order);
    }
    order.into_iter().map(|i| names[i].clone()).collect()
}

/// Compiles the computed values, in dependency order (a cycle is PAO-E019).
pub(super) fn computed(
    d: &mut FileDiags,
    engine: &Engine,
    item: &CatalogItem,
    base: &Declarations,
) -> Vec<(String, Template)> {
    let mut templates: BTreeMap<String, Template> = BTreeMap::new();
    for (name, src) in item.computed.iter().flatten() {
        let ptr = format!("/computed/{name}");
        match engine.compile(src) {
            Ok(t) => {
                for e in t.check(base) {
                    d.var_error(&ptr, &e);
                }
                templates.insert(name.clone(), t);
            }
            Err(e) => d.var_error(&ptr, &e),
        }
    }
    let order = computed_order(d, &templates);
    order
        .into_iter()
        .filter_map(|name| templates.remove(&name).map(|t| (name, t)))
        .collect()
}

/// The approval condition, the mode's requirements (PAO-E014, PAO-E003), and the manual
/// ticket, cost, prerequisites and monitoring sections.
pub(super) fn fulfillment(
    d: &mut FileDiags,
    engine: &Engine,
    item: &CatalogItem,
    g: &ActionGraph,
    base: &Declarations,
    compiled: &mut CompiledItem,
) {
    let f = &item.fulfillment;
    if let Some(a) = &f.approval
        && let Some(src) = &a.required_when
    {
        let ptr = "/fulfillment/approval/required_when".to_string();
        // An approval rule may read the cost estimated at admission.
        let decl = Declarations {
            allow_cost: true,
            ..base.clone()
        };
        match engine.compile_expression(src) {
            Ok(e) => {
                for err in e.check(&decl) {
                    d.var_error(&ptr, &err);
                }
                compiled.approval_required_when = Some(e);
            }
            Err(err) => d.var_error(&ptr, &err),
        }
    }
    if f.mode == FulfillmentMode::Manual && f.manual.is_none() {
        d.error_at_key(
            codes::MANUAL_WITHOUT_JIRA,
            "/fulfillment/mode",
            "`mode: manual` needs a `manual.jira` block: the ticket to create",
            Some("add `manual: { jira: { project: ..., issue_type: Task, summary: ... } }` under fulfillment".to_string()),
        );
    }
    if f.mode == FulfillmentMode::Automated && g.post_base == 0 {
        d.error_at_key(
            codes::SCHEMA,
            "/fulfillment/mode",
            "`mode: automated` needs at least one action under `fulfillment.actions`",
            Some("add actions, or use `mode: manual` with a JIRA ticket".to_string()),
        );
    }
    for (ptr, value) in [
        ("/fulfillment/manual", f.manual.as_ref().map(json_of)),
        ("/metadata/cost", item.metadata.cost.as_ref().map(json_of)),
        (
            "/fulfillment/prerequisites",
            f.prerequisites.as_ref().map(json_of),
        ),
    ] {
        if let Some(v) = value {
            compile_section(d, engine, ptr, &v, base, compiled);
        }
    }
    if let Some(m) = &item.monitoring {
        let guaranteed: BTreeSet<String> = (0..g.actions.len())
            .filter(|&j| !g.optional(j) && g.actions[j].step < g.post_base)
            .map(|j| g.actions[j].spec.id.clone())
            .collect();
        let decl = Declarations {
            completed: guaranteed,
            ..base.clone()
        };
        compile_section(d, engine, "/monitoring", &json_of(m), &decl, compiled);
    }
}

fn json_of(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Where the item's requests get their environment (PAO-E025): `metadata.environment`,
/// which may read fields, the user and computed values but not `request` (the environment is
/// part of it); or else the one field whose options are the catalog's environments.
pub(super) fn environment(
    d: &mut FileDiags,
    engine: &Engine,
    item: &CatalogItem,
    base: &Declarations,
) -> Option<ItemEnvironment> {
    let ptr = "/metadata/environment";
    if let Some(src) = &item.metadata.environment {
        let t = match engine.compile(src) {
            Ok(t) => t,
            Err(e) => {
                d.var_error(ptr, &e);
                return None;
            }
        };
        for e in t.check(base) {
            d.var_error(ptr, &e);
        }
        let refs = t.references();
        if refs.iter().any(|r| r.scope == crate::vars::Scope::Request) {
            d.error(
                codes::ENVIRONMENT,
                ptr,
                "the environment cannot read `request`: `request.environment` is this value"
                    .to_string(),
                Some("read the form instead, e.g. `${{ fields.environment }}`".to_string()),
            );
        }
        let read: BTreeSet<&str> = refs
            .iter()
            .filter(|r| r.scope == crate::vars::Scope::Fields)
            .filter_map(|r| r.path.first().map(String::as_str))
            .collect();
        let field =
            (read.len() == 1).then(|| read.into_iter().next().unwrap_or_default().to_string());
        return Some(ItemEnvironment {
            template: Some(t),
            field,
        });
    }
    let sourced: Vec<&str> = item
        .all_fields()
        .filter(|f| {
            f.source
                .as_ref()
                .and_then(|s| s.catalog.as_ref())
                .is_some_and(|c| c.kind == CatalogSourceKind::Environments)
        })
        .map(|f| f.id.as_str())
        .collect();
    match sourced.as_slice() {
        [] => {
            if item
                .metadata
                .access
                .as_ref()
                .is_some_and(|a| a.environments.is_some())
            {
                d.error(
                    codes::ENVIRONMENT,
                    "/metadata/access/environments",
                    "`access.environments` limits the environments, but the item does not say which environment a request is for".to_string(),
                    Some("add `environment: \"${{ fields.environment }}\"` to metadata, or take the field's options from `source: { catalog: { kind: environments } }`".to_string()),
                );
            }
            None
        }
        [one] => Some(ItemEnvironment {
            template: None,
            field: Some(one.to_string()),
        }),
        many => {
            d.error(
                codes::ENVIRONMENT,
                "/presentation",
                format!(
                    "fields {} all list the catalog's environments: which one is the request's environment?",
                    many.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                ),
                Some(format!(
                    "say which in `metadata.environment`, e.g. `environment: \"${{{{ fields.{} }}}}\"`",
                    many[0]
                )),
            );
            None
        }
    }
}
