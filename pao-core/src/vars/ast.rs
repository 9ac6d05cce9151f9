//! The compiled form of templates and expressions: a tree whose paths are already split into
//! segments, whose functions are already resolved, and whose regex literals are already
//! compiled, so rendering does no parsing and no name lookups beyond the context's own maps.

use std::sync::Arc;

use compact_str::CompactString;
use regex::Regex;

use super::error::Span;
use super::functions::{Builtin, CustomFunction};

/// The roots a path may start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The requesting user: id, email, name, teams, roles.
    User,
    /// The catalog item's metadata.
    Metadata,
    /// The request: id, created_at, environment, priority, correlation_id.
    Request,
    /// The running system: now, instance, version, base_url.
    System,
    /// Environment variables allow-listed in the server configuration.
    Env,
    /// The submitted form values.
    Fields,
    /// Outputs of completed actions: `outputs.<action_id>.<key>`.
    Outputs,
    /// The item's computed values.
    Computed,
    /// Secrets from the secret provider; tainted, redacted by value.
    Secrets,
    /// Inside an action's `outputs` map: that action's raw result.
    Result,
    /// In approval rules: the request's cost estimated at admission (`monthly`, `one_time`,
    /// `currency`).
    Cost,
}

impl Scope {
    /// Every scope, in context order.
    pub const ALL: [Scope; 11] = [
        Scope::User,
        Scope::Metadata,
        Scope::Request,
        Scope::System,
        Scope::Env,
        Scope::Fields,
        Scope::Outputs,
        Scope::Computed,
        Scope::Secrets,
        Scope::Result,
        Scope::Cost,
    ];

    /// The name used in templates.
    pub fn name(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Metadata => "metadata",
            Scope::Request => "request",
            Scope::System => "system",
            Scope::Env => "env",
            Scope::Fields => "fields",
            Scope::Outputs => "outputs",
            Scope::Computed => "computed",
            Scope::Secrets => "secrets",
            Scope::Result => "result",
            Scope::Cost => "cost",
        }
    }

    /// The scope with that template name.
    pub fn from_name(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Const {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Rem,
    Concat,
}

impl BinOp {
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`: the operators that give a bool.
    pub(crate) fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq
                | BinOp::Ne
                | BinOp::Lt
                | BinOp::Le
                | BinOp::Gt
                | BinOp::Ge
                | BinOp::In
                | BinOp::NotIn
        )
    }

    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::NotIn => "not in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Rem => "%",
            BinOp::Concat => "~",
        }
    }
}

#[derive(Debug)]
pub(crate) enum Expr {
    Const(Const, Span),
    Path(Box<Path>),
    Unary(UnOp, Box<Expr>, Span),
    Binary(BinOp, Box<(Expr, Expr)>, Span),
    And(Box<(Expr, Expr)>),
    Or(Box<(Expr, Expr)>),
    Cond(Box<(Expr, Expr, Expr)>),
    Call(Box<Call>),
    List(Box<[Expr]>, Span),
    Object(Box<[(Box<str>, Expr)]>, Span),
    /// An operator or literal over constants, evaluated when compiled (see `fold`).
    Folded(Box<Folded>, Span),
}

/// The value of a constant expression, and the fuel its evaluation cost.
#[derive(Debug)]
pub(crate) struct Folded {
    pub value: serde_json::Value,
    pub fuel: u64,
}

impl Expr {
    pub(crate) fn span(&self) -> Span {
        match self {
            Expr::Const(_, s) | Expr::Unary(_, _, s) | Expr::Binary(_, _, s) => *s,
            Expr::List(_, s) | Expr::Object(_, s) | Expr::Folded(_, s) => *s,
            Expr::Path(p) => p.span,
            Expr::And(b) | Expr::Or(b) => b.0.span().to(b.1.span()),
            Expr::Cond(b) => b.0.span().to(b.2.span()),
            Expr::Call(c) => c.span,
        }
    }

    /// The text of a string literal, or of a constant expression that folded to a string.
    pub(crate) fn const_str(&self) -> Option<&str> {
        match self {
            Expr::Const(Const::Str(s), _) => Some(s),
            Expr::Folded(f, _) => f.value.as_str(),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Base {
    Scope(Scope),
    /// A loop variable, by loop depth.
    Local(u8, Box<str>),
    /// `loop` of the loop at that depth.
    LoopMeta(u8),
    Expr(Expr),
}

#[derive(Debug)]
pub(crate) struct Path {
    pub base: Base,
    pub base_span: Span,
    pub segs: Segs,
    pub span: Span,
    /// Some segment is written with `?.`, which makes the whole chain optional.
    pub optional_chain: bool,
    /// A scope (not `secrets`) or loop variable followed by literal keys and indexes only, none
    /// optional, or a known `loop.<field>`: rendering can walk it over borrowed JSON without
    /// any bookkeeping.
    pub plain: bool,
    /// For `loop.<field>`, the field, resolved once.
    pub loop_field: Option<LoopField>,
}

/// The fields of `loop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoopField {
    Index,
    Index0,
    First,
    Last,
    Length,
    RevIndex,
}

impl Path {
    /// Sets the flags derived from the base and segments, once they are final.
    pub(crate) fn finish(&mut self) {
        self.optional_chain = self.segs.iter().any(|s| s.optional);
        if let (Base::LoopMeta(_), [seg]) = (&self.base, &*self.segs)
            && !seg.optional
            && let SegKind::Key(k) = &seg.kind
        {
            self.loop_field = match &**k {
                "index" => Some(LoopField::Index),
                "index0" => Some(LoopField::Index0),
                "first" => Some(LoopField::First),
                "last" => Some(LoopField::Last),
                "length" => Some(LoopField::Length),
                "revindex" => Some(LoopField::RevIndex),
                _ => None,
            };
            self.plain = self.loop_field.is_some();
            return;
        }
        self.plain = matches!(self.base, Base::Local(..))
            || matches!(self.base, Base::Scope(s) if s != Scope::Secrets);
        self.plain &= !self.optional_chain
            && self
                .segs
                .iter()
                .all(|s| matches!(s.kind, SegKind::Key(_) | SegKind::Index(_)));
    }
}

/// The segments of a path. Most paths have one, kept inline so that compiling it does not
/// allocate a list.
#[derive(Debug, Default)]
pub(crate) enum Segs {
    #[default]
    Empty,
    One(Seg),
    Many(Vec<Seg>),
}

impl Segs {
    pub(crate) fn push(&mut self, seg: Seg) {
        match self {
            Segs::Empty => *self = Segs::One(seg),
            Segs::One(_) => {
                if let Segs::One(first) = std::mem::take(self) {
                    *self = Segs::Many(vec![first, seg]);
                }
            }
            Segs::Many(all) => all.push(seg),
        }
    }
}

impl std::ops::Deref for Segs {
    type Target = [Seg];

    #[inline]
    fn deref(&self) -> &[Seg] {
        match self {
            Segs::Empty => &[],
            Segs::One(seg) => std::slice::from_ref(seg),
            Segs::Many(all) => all,
        }
    }
}

impl<'s> IntoIterator for &'s Segs {
    type Item = &'s Seg;
    type IntoIter = std::slice::Iter<'s, Seg>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug)]
pub(crate) struct Seg {
    pub kind: SegKind,
    /// Written with `?.`: a null or missing receiver, or a missing key, gives null.
    pub optional: bool,
    pub span: Span,
}

#[derive(Debug)]
pub(crate) enum SegKind {
    Key(CompactString),
    Index(i64),
    Dyn(Box<Expr>),
}

#[derive(Debug, Clone)]
pub(crate) enum Func {
    Builtin(Builtin),
    Custom(Arc<CustomFunction>),
}

#[derive(Debug)]
pub(crate) struct Call {
    pub func: Func,
    pub name: Box<str>,
    pub args: Box<[Expr]>,
    pub span: Span,
    /// The pattern, compiled at load time when it is a literal.
    pub regex: Option<Regex>,
}

#[derive(Debug)]
pub(crate) enum Node {
    Text(CompactString),
    Interp(Expr),
    If(Box<[(Expr, Vec<Node>)]>, Vec<Node>),
    For(Box<ForNode>),
}

#[derive(Debug)]
pub(crate) struct ForNode {
    pub depth: u8,
    pub iter: Expr,
    pub body: Vec<Node>,
    pub span: Span,
}
