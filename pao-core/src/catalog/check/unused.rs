//! PAO-W003: fields that nothing reads.

use std::collections::{BTreeMap, BTreeSet};

use super::fields::FieldInfo;
use crate::catalog::diagnostic::{Severity, codes};
use crate::catalog::load::{CompiledItem, FileDiags};
use crate::vars::{Reference, Scope};

/// PAO-W003: a field that no template, condition, source or action reads is collected and
/// stored but never used. Skipped when some template reads `fields[...]` dynamically.
pub(super) fn warn_unused_fields(
    d: &mut FileDiags,
    fields: &BTreeMap<String, FieldInfo>,
    compiled: &CompiledItem,
) {
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut dynamic = false;
    let mut note = |refs: Vec<Reference>| {
        for r in refs {
            if r.scope == Scope::Fields {
                match r.path.first() {
                    Some(f) => {
                        used.insert(f.clone());
                    }
                    None => dynamic = true,
                }
            }
        }
    };
    for (_, t) in &compiled.computed {
        note(t.references());
    }
    for e in compiled.conditions.values() {
        note(e.references());
    }
    if let Some(e) = &compiled.approval_required_when {
        note(e.references());
    }
    for a in compiled.actions.values() {
        if let Some(w) = &a.when {
            note(w.references());
        }
        a.config.for_each_template(&mut |_, t| note(t.references()));
        for (_, t) in &a.outputs {
            note(t.references());
        }
        if let Some(rb) = &a.rollback {
            rb.for_each_template(&mut |_, t| note(t.references()));
        }
    }
    for t in compiled.sections.values() {
        t.for_each_template(&mut |_, t| note(t.references()));
    }
    if let Some(t) = compiled
        .environment
        .as_ref()
        .and_then(|e| e.template.as_ref())
    {
        note(t.references());
    }
    for s in compiled.sources.values() {
        note(s.url.references());
        for (_, t) in &s.headers {
            note(t.references());
        }
    }
    if dynamic {
        return;
    }
    // The field the request's environment comes from.
    if let Some(e) = &compiled.environment
        && e.template.is_none()
    {
        used.extend(e.field.iter().cloned());
    }
    for (id, info) in fields {
        if !used.contains(id) {
            d.push(
                Severity::Warning,
                codes::UNUSED_FIELD,
                &format!("{}/id", info.pointer),
                format!("field `{id}` is declared but never used"),
                Some(format!(
                    "read it somewhere (`${{{{ fields.{id} }}}}` in an action, the ticket or a condition), or remove it from the form"
                )),
            );
        }
    }
}
