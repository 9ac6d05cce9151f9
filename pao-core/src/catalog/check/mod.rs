//! The semantic checks of one item, after it fits the schema and the model: ids, action types
//! and dependencies, templates and conditions (compiled once, with the catalog's engine),
//! field values, unused fields and the lifecycle. Each problem is a located diagnostic.

mod actions;
pub(super) mod durations;
mod fields;
mod graph;
mod sections;
mod unused;

use std::collections::BTreeSet;

use super::diagnostic::{Diagnostic, Severity, codes};
use super::load::{CompiledItem, FileDiags, LoadOptions};
use super::model::{CatalogItem, LifecycleStatus};
use crate::vars::Declarations;

pub use fields::valid_cidr;

/// Checks an item and compiles everything templated in it.
pub(super) fn check_item(
    d: &mut FileDiags,
    item: &CatalogItem,
    opts: &LoadOptions,
    env_allowlist: Option<&BTreeSet<String>>,
) -> CompiledItem {
    let engine = &opts.engine;
    let mut compiled = CompiledItem::default();
    let fields = fields::collect(d, item);
    let graph = actions::graph(d, item, opts);
    durations::check(d, item, &graph);
    let base = Declarations {
        fields: fields.keys().cloned().collect(),
        computed: item
            .computed
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect(),
        actions: graph.ids.keys().cloned().collect(),
        completed: BTreeSet::new(),
        env: env_allowlist.cloned(),
        allow_result: false,
        allow_cost: false,
        secrets: Some(item.secrets.iter().flatten().cloned().collect()),
        secret_fields: item
            .secret_field_ids()
            .into_iter()
            .map(str::to_string)
            .collect(),
        reserved_secrets: opts.reserved_secrets.clone(),
    };
    secret_grants(d, item, opts);
    compiled.computed = sections::computed(d, engine, item, &base);
    fields::compile(d, engine, item, &fields, &base, &mut compiled);
    sections::fulfillment(d, engine, item, &graph, &base, &mut compiled);
    compiled.environment = sections::environment(d, engine, item, &base);
    actions::compile(d, engine, &graph, &base, &mut compiled);
    // Fields nothing reads: only when every read is a literal path, and every template
    // compiled (a broken template's reads are unknown).
    if !d.out.iter().any(Diagnostic::is_error) {
        unused::warn_unused_fields(d, &fields, &compiled);
    }
    lifecycle(d, item);
    compiled
}

/// The item's `secrets:` list names no secret reserved for the server, and no secret field.
fn secret_grants(d: &mut FileDiags, item: &CatalogItem, opts: &LoadOptions) {
    let fields = item.secret_field_ids();
    for (i, name) in item.secrets.iter().flatten().enumerate() {
        if opts.reserved_secrets.contains(name) {
            d.push(
                Severity::Error,
                codes::SECRET_GRANT,
                &format!("/secrets/{i}"),
                format!("secret `{name}` is reserved for the server and cannot be granted to an item"),
                Some("inbound webhook keys and the key-encryption key are for PAO only; give the item its own secret".to_string()),
            );
        } else if fields.contains(name.as_str()) {
            d.push(
                Severity::Warning,
                codes::SECRET_GRANT,
                &format!("/secrets/{i}"),
                format!("`{name}` is a secret field of this item; it needs no grant"),
                Some(format!("remove `{name}` from `secrets:`; the provider's secret of that name is not read")),
            );
        }
    }
}

/// PAO-W001 and PAO-W002.
fn lifecycle(d: &mut FileDiags, item: &CatalogItem) {
    let Some(l) = &item.lifecycle else { return };
    match l.status {
        Some(LifecycleStatus::Deprecated)
            if l.deprecation
                .as_ref()
                .and_then(|x| x.replacement.as_ref())
                .is_none() =>
        {
            d.push(
                Severity::Warning,
                codes::DEPRECATED_NO_REPLACEMENT,
                "/lifecycle/status",
                format!("item `{}` is deprecated but names no replacement", item.metadata.id),
                Some("add `lifecycle.deprecation.replacement: <item id>` so requesters know where to go".to_string()),
            );
        }
        Some(LifecycleStatus::Retired) => {
            d.push(
                Severity::Warning,
                codes::RETIRED,
                "/lifecycle/status",
                format!(
                    "item `{}` is retired: it is listed but new requests are refused",
                    item.metadata.id
                ),
                None,
            );
        }
        _ => {}
    }
}
