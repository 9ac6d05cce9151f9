//! Static checks used by the catalog loader: which paths a template reads, and which of them
//! name something the item does not declare or an output that may not exist yet.

use std::collections::BTreeSet;

use super::ast::*;
use super::error::{Span, VarError, VarErrorKind, did_you_mean};
use super::functions::Builtin;

/// One path a template or expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The scope it starts from.
    pub scope: Scope,
    /// The literal segments after the scope (stops at the first dynamic index).
    pub path: Vec<String>,
    /// Where it is in the template.
    pub span: Span,
    /// Read through `?.`, or inside `default`/`coalesce`: a missing value is handled.
    pub guarded: bool,
}

impl Reference {
    /// The secret it names, when it reads `secrets.<name>`.
    pub fn secret_name(&self) -> Option<&str> {
        match self.scope {
            Scope::Secrets => self.path.first().map(String::as_str),
            _ => None,
        }
    }
}

/// What an item declares, for the static checks.
#[derive(Debug, Clone, Default)]
pub struct Declarations {
    /// Field ids of the form.
    pub fields: BTreeSet<String>,
    /// Names in the item's `computed` section that may be read here.
    pub computed: BTreeSet<String>,
    /// Every action id of the item.
    pub actions: BTreeSet<String>,
    /// Actions guaranteed to have completed where the template is evaluated.
    pub completed: BTreeSet<String>,
    /// Allow-listed environment variables; `None` accepts any name.
    pub env: Option<BTreeSet<String>>,
    /// Whether `result` may be read (inside an action's `outputs`).
    pub allow_result: bool,
    /// Whether `cost` may be read (in approval rules).
    pub allow_cost: bool,
    /// The provider's secrets that may be read as `secrets.<name>` besides the secret fields;
    /// `None` accepts any name.
    pub secrets: Option<BTreeSet<String>>,
    /// Ids of `secret` form fields: read as `secrets.<id>`, never as `fields.<id>`.
    pub secret_fields: BTreeSet<String>,
    /// Secrets only the server reads: never readable here.
    pub reserved_secrets: BTreeSet<String>,
}

pub(crate) fn collect_nodes(nodes: &[Node], out: &mut Vec<Reference>) {
    for node in nodes {
        match node {
            Node::Text(_) => {}
            Node::Interp(e) => collect(e, false, out),
            Node::If(branches, otherwise) => {
                for (cond, body) in branches.iter() {
                    collect(cond, false, out);
                    collect_nodes(body, out);
                }
                collect_nodes(otherwise, out);
            }
            Node::For(f) => {
                collect(&f.iter, false, out);
                collect_nodes(&f.body, out);
            }
        }
    }
}

pub(crate) fn collect(expr: &Expr, guarded: bool, out: &mut Vec<Reference>) {
    match expr {
        Expr::Const(..) | Expr::Folded(..) => {}
        Expr::Path(p) => {
            let mut segs_guarded = guarded;
            for seg in &p.segs {
                segs_guarded |= seg.optional;
                if let SegKind::Dyn(e) = &seg.kind {
                    collect(e, false, out);
                }
            }
            match &p.base {
                Base::Scope(scope) => {
                    let mut path = Vec::new();
                    for seg in &p.segs {
                        match &seg.kind {
                            SegKind::Key(k) => path.push(k.to_string()),
                            SegKind::Index(i) => path.push(i.to_string()),
                            SegKind::Dyn(_) => break,
                        }
                    }
                    out.push(Reference {
                        scope: *scope,
                        path,
                        span: p.span,
                        guarded: segs_guarded,
                    });
                }
                Base::Expr(e) => collect(e, guarded, out),
                Base::Local(..) | Base::LoopMeta(_) => {}
            }
        }
        Expr::Unary(_, e, _) => collect(e, guarded, out),
        Expr::Binary(_, b, _) | Expr::And(b) | Expr::Or(b) => {
            collect(&b.0, guarded, out);
            collect(&b.1, guarded, out);
        }
        Expr::Cond(b) => {
            collect(&b.0, guarded, out);
            collect(&b.1, guarded, out);
            collect(&b.2, guarded, out);
        }
        Expr::Call(c) => {
            let guard_upto = match c.func {
                Func::Builtin(Builtin::Default) => 1,
                Func::Builtin(Builtin::Coalesce) => c.args.len(),
                _ => 0,
            };
            for (i, a) in c.args.iter().enumerate() {
                collect(a, guarded || i < guard_upto, out);
            }
        }
        Expr::List(items, _) => items.iter().for_each(|e| collect(e, guarded, out)),
        Expr::Object(entries, _) => entries.iter().for_each(|(_, e)| collect(e, guarded, out)),
    }
}

pub(crate) fn check(refs: &[Reference], decl: &Declarations) -> Vec<VarError> {
    let mut errors = Vec::new();
    for r in refs {
        let first = r.path.first().map(String::as_str);
        let undeclared = |what: &str, name: &str, known: &BTreeSet<String>| {
            let mut e = VarError::at(
                VarErrorKind::Undeclared,
                r.span,
                format!("{what} `{name}` is not declared in this item"),
            );
            if let Some(s) = did_you_mean(name, known.iter().map(String::as_str)) {
                e = e.with_hint(format!("did you mean `{s}`?"));
            } else if known.is_empty() {
                e = e.with_hint(format!("this item declares no {what}s"));
            } else {
                let list: Vec<&str> = known.iter().map(String::as_str).take(12).collect();
                e = e.with_hint(format!("declared: {}", list.join(", ")));
            }
            e
        };
        match r.scope {
            Scope::Fields => {
                if let Some(name) = first
                    && !decl.fields.contains(name)
                {
                    errors.push(undeclared("field", name, &decl.fields));
                } else if let Some(name) = first
                    && decl.secret_fields.contains(name)
                {
                    errors.push(
                        VarError::at(
                            VarErrorKind::Undeclared,
                            r.span,
                            format!("`{name}` is a secret field: its value is never in `fields`"),
                        )
                        .with_hint(format!("read it as `secrets.{name}`")),
                    );
                }
            }
            Scope::Secrets => {
                let Some(name) = first else { continue };
                if decl.secret_fields.contains(name) {
                    continue;
                }
                if decl.reserved_secrets.contains(name) {
                    errors.push(
                        VarError::at(
                            VarErrorKind::Undeclared,
                            r.span,
                            format!("secret `{name}` is reserved for the server and cannot be read from the catalog"),
                        )
                        .with_hint("inbound webhook keys and the key-encryption key are for PAO only; give the item its own secret"),
                    );
                } else if let Some(allowed) = &decl.secrets
                    && !allowed.contains(name)
                {
                    let mut e = VarError::at(
                        VarErrorKind::Undeclared,
                        r.span,
                        format!("secret `{name}` is not granted to this item"),
                    );
                    e = match did_you_mean(name, allowed.iter().map(String::as_str)) {
                        Some(s) => e.with_hint(format!(
                            "did you mean `{s}`? Otherwise add `{name}` to the item's `secrets:` list"
                        )),
                        None => e.with_hint(format!("add `{name}` to the item's `secrets:` list")),
                    };
                    errors.push(e);
                }
            }
            Scope::Computed => {
                if let Some(name) = first
                    && !decl.computed.contains(name)
                {
                    errors.push(undeclared("computed value", name, &decl.computed));
                }
            }
            Scope::Outputs => {
                if let Some(action) = first {
                    if !decl.actions.contains(action) {
                        errors.push(undeclared("action", action, &decl.actions));
                    } else if !decl.completed.contains(action) && !r.guarded {
                        errors.push(
                            VarError::at(
                                VarErrorKind::OutputNotAvailable,
                                r.span,
                                format!("`outputs.{action}` is read where action `{action}` is not guaranteed to have run"),
                            )
                            .with_hint(format!(
                                "add `depends_on: [{action}]`, move the reader after it, or guard the read with `?.` or `default(...)`"
                            )),
                        );
                    }
                }
            }
            Scope::Env => {
                if let (Some(name), Some(allowed)) = (first, &decl.env)
                    && !allowed.contains(name)
                {
                    errors.push(
                        VarError::at(
                            VarErrorKind::Undeclared,
                            r.span,
                            format!(
                                "environment variable `{name}` is not in the server's allow-list"
                            ),
                        )
                        .with_hint(
                            "add it to `env_allowlist` in catalog.yaml or the server configuration",
                        ),
                    );
                }
            }
            Scope::Cost if !decl.allow_cost => {
                errors.push(
                    VarError::at(
                        VarErrorKind::UnknownScope,
                        r.span,
                        "`cost` is only available in approval rules (`required_when`)",
                    )
                    .with_hint("the estimate is made at admission, for deciding on approval"),
                );
            }
            Scope::Result if !decl.allow_result => {
                errors.push(
                    VarError::at(
                        VarErrorKind::UnknownScope,
                        r.span,
                        "`result` is only available inside an action's `outputs` map",
                    )
                    .with_hint("read another action's result through `outputs.<action_id>.<key>`"),
                );
            }
            _ => {}
        }
    }
    errors
}
