//! Differential test: PAO's variable engine against minijinja 3 on the subset of the template
//! language the two share.
//!
//! A seeded generator builds a context and a template as a tree, prints the tree once in PAO's
//! syntax and once in Jinja's, renders both, and asserts the same output — or, when one side
//! fails, that both fail with an error of the same class (syntax, undefined, other). minijinja
//! runs with `${{ }}` variable delimiters, `trim_blocks`, `keep_trailing_newline` and strict
//! undefined handling, which is how PAO behaves.
//!
//! The number of cases is `PAO_DIFF_CASES` (default 1500) and the seed `PAO_DIFF_SEED`
//! (default fixed), so a run is reproducible; a failure prints the seed, the case number, both
//! templates and the context.
//!
//! Known differences, kept out of the generator on purpose (PAO's choices, documented in
//! `docs/variables.md`):
//!
//! - Booleans render as `true`/`false` in PAO and `True`/`False` in minijinja 3; the Jinja side
//!   of the generator writes a bool as `"true" if b else "false"`.
//! - `null` renders as `""` in PAO and `none` in minijinja; lists and objects render as compact
//!   JSON (`["a","b"]`) in PAO and as Python-like reprs (`["a", "b"]`) in minijinja.
//! - `~` binds looser than `+`/`-` in PAO (`1 + 2 ~ 3` is `"33"`) and between `+` and `*` in
//!   Jinja (`1 + (2 ~ 3)`); the generator parenthesizes every operand of `~`.
//! - Unary minus binds looser than filters in PAO (`-x | abs` is `-(x | abs)`) and tighter in
//!   Jinja (`(-x) | abs`); the generator parenthesizes such operands.
//! - Comparisons chain in Jinja (`a < b < c`); PAO compares left to right, so `(a < b) < c`
//!   is a type error. The generator parenthesizes nested comparisons.
//! - `and`/`or` return a bool in PAO and the deciding operand in Jinja (`'a' or 'b'` is `'a'`);
//!   the generator only gives them bool operands (truthiness inside `if` is the same).
//! - PAO is strictly typed: string filters (`lower`, `upper`, `trim`, `replace`) reject ints,
//!   `'a' + 1` is an error, `1 == true` is false, and loops take lists or objects only. minijinja
//!   converts ints to strings for string filters, treats `true` as `1` and iterates strings.
//! - `sort` and `unique` compare strings case-sensitively in PAO and case-insensitively by
//!   default in minijinja; the generator only sorts lists of lowercase words.
//! - `first`/`last` of an empty list or string give `null` in PAO and undefined (an error when
//!   printed, under strict undefined) in minijinja; the generator only takes them of non-empty
//!   values.
//! - `default` guards a whole missing chain in PAO (`fields.a.b | default(1)` is `1`); strict
//!   minijinja fails on the attribute lookup of an undefined value. The generator only defaults
//!   one missing key. `default` in PAO also replaces `null`, which the generator never produces.
//! - `default`'s fallback is evaluated only when the value is missing in PAO (like `??`);
//!   Jinja evaluates filter arguments first, so a failing fallback fails there. The generator
//!   puts no deliberate failure in a fallback.
//! - `replace` with an empty search string is an error in PAO and inserts everywhere in
//!   minijinja; the generator never searches for `""`.
//! - `$${{` is PAO's escape for a literal `${{`; minijinja reads `$` then an interpolation.
//!   `{# #}` comments and `${{-`/`-}}` trimming exist only in minijinja. None is generated.
//! - Integer overflow is an error in PAO; minijinja widens to 128 bits. Generated integers stay
//!   small.

use std::fmt::Write as _;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, syntax::SyntaxConfig};
use pao_core::vars::{Context, Engine, Scope, VarErrorKind};
use serde_json::{Map, Value, json};

// ------------------------------------------------------------------------------------ random

/// SplitMix64: tiny, seedable, and good enough to drive a generator.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }

    fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len())]
    }
}

// ------------------------------------------------------------------------------------ context

const WORDS: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "db", "prod", "dev", "eu", "a", "b", "z", "team",
];

/// Characters of generated strings: spaces, mixed case, quotes, non-ASCII, and template syntax
/// that must come out verbatim when substituted.
const STR_PIECES: &[&str] = &[
    "a", "b", "Z", "x", "Q", " ", "  ", "-", "_", ".", ":", "é", "ß", "Ä", "中", "'", "\"", "1",
    "42", "${{ x }}", "{% if %}", "}}", "db", "Prod", "\t", "\n",
];

fn gen_string(rng: &mut Rng, max_pieces: usize) -> String {
    let n = rng.below(max_pieces + 1);
    (0..n).map(|_| *rng.pick(STR_PIECES)).collect()
}

fn lower_word_list(rng: &mut Rng, max: usize) -> Value {
    let n = rng.below(max + 1);
    Value::Array((0..n).map(|_| json!(rng.pick(WORDS))).collect())
}

fn int_list(rng: &mut Rng, max: usize) -> Value {
    let n = rng.below(max + 1);
    Value::Array((0..n).map(|_| json!(rng.range(-9, 9))).collect())
}

/// The `fields` scope: keys named after their type so the generator can pick by type.
fn gen_fields(rng: &mut Rng) -> Value {
    let mut m = Map::new();
    for i in 0..5 {
        m.insert(format!("s{i}"), json!(gen_string(rng, 4)));
    }
    for i in 0..4 {
        m.insert(format!("i{i}"), json!(rng.range(-30, 30)));
    }
    for i in 0..2 {
        m.insert(format!("b{i}"), json!(rng.chance(50)));
    }
    for i in 0..3 {
        m.insert(format!("ls{i}"), lower_word_list(rng, 4));
        m.insert(format!("li{i}"), int_list(rng, 5));
    }
    let mut obj = Map::new();
    for _ in 0..rng.below(4) {
        obj.insert(rng.pick(WORDS).to_string(), json!(gen_string(rng, 2)));
    }
    m.insert("m0".to_string(), Value::Object(obj));
    Value::Object(m)
}

// ------------------------------------------------------------------------------------ trees

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ty {
    Str,
    Int,
    Bool,
    ListStr,
    ListInt,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Concat,
    Add,
    Sub,
    Mul,
    FloorDiv,
    Rem,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Or => "or",
            Op::And => "and",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
            Op::NotIn => "not in",
            Op::Concat => "~",
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::FloorDiv => "//",
            Op::Rem => "%",
        }
    }

    /// Binding strength, identical in both languages for every operator but `~`.
    fn prec(self) -> u8 {
        match self {
            Op::Or => 1,
            Op::And => 2,
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::In | Op::NotIn => 4,
            Op::Concat => 5,
            Op::Add | Op::Sub => 6,
            Op::Mul | Op::FloorDiv | Op::Rem => 7,
        }
    }
}

#[derive(Clone, Debug)]
enum E {
    Str(String, char),
    Int(i64),
    Bool(bool),
    List(Vec<E>),
    /// `root.key` or `root['key']`, then optional indices.
    Path(String, Option<(String, bool)>, Vec<i64>),
    LoopAttr(&'static str),
    Bin(Op, Box<E>, Box<E>),
    Not(Box<E>),
    Neg(Box<E>),
    Cond(Box<E>, Box<E>, Box<E>),
    Filter(Box<E>, &'static str, Vec<E>),
    Call(&'static str, Vec<E>),
    /// A bool turned into text: itself in PAO, `"true" if b else "false"` in Jinja, since
    /// minijinja 3 writes `True`/`False`.
    BoolText(Box<E>),
}

impl E {
    fn prec(&self) -> u8 {
        match self {
            E::Cond(..) => 0,
            E::Not(_) => 3,
            E::Bin(op, ..) => op.prec(),
            E::Neg(_) => 8,
            E::Filter(..) => 9,
            E::BoolText(inner) => inner.prec(),
            _ => 10,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Pao,
    Jinja,
}

struct Printer {
    dialect: Dialect,
    /// Parenthesize every compound operand instead of only where precedence requires it.
    full_parens: bool,
}

impl Printer {
    fn expr(&self, e: &E, out: &mut String) {
        match e {
            E::Str(s, q) => {
                out.push(*q);
                for c in s.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        c if c == *q => {
                            out.push('\\');
                            out.push(c);
                        }
                        c => out.push(c),
                    }
                }
                out.push(*q);
            }
            E::Int(i) => {
                let _ = write!(out, "{i}");
            }
            E::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            E::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.expr(item, out);
                }
                out.push(']');
            }
            E::Path(root, key, indices) => {
                out.push_str(root);
                if let Some((k, bracket)) = key {
                    if *bracket {
                        let _ = write!(out, "['{k}']");
                    } else {
                        let _ = write!(out, ".{k}");
                    }
                }
                for i in indices {
                    let _ = write!(out, "[{i}]");
                }
            }
            E::LoopAttr(a) => {
                let _ = write!(out, "loop.{a}");
            }
            E::Bin(op, l, r) => {
                self.operand(l, self.needs_parens(*op, l, false), out);
                let _ = write!(out, " {} ", op.symbol());
                self.operand(r, self.needs_parens(*op, r, true), out);
            }
            E::Not(inner) => {
                out.push_str("not ");
                let parens = self.full_parens && !is_atom(inner) || inner.prec() < 3;
                self.operand(inner, parens, out);
            }
            E::Neg(inner) => {
                out.push('-');
                // `-x | f` and `-x.y` group differently in the two languages.
                let parens = !matches!(**inner, E::Int(_) | E::Path(..) | E::LoopAttr(_))
                    || matches!(**inner, E::Path(_, _, ref ix) if !ix.is_empty());
                self.operand(inner, parens, out);
            }
            E::Cond(c, then, otherwise) => match self.dialect {
                Dialect::Pao => {
                    self.operand(c, !is_atom(c), out);
                    out.push_str(" ? ");
                    self.operand(then, !is_atom(then), out);
                    out.push_str(" : ");
                    self.operand(otherwise, !is_atom(otherwise), out);
                }
                Dialect::Jinja => {
                    self.operand(then, !is_atom(then), out);
                    out.push_str(" if ");
                    self.operand(c, !is_atom(c), out);
                    out.push_str(" else ");
                    self.operand(otherwise, !is_atom(otherwise), out);
                }
            },
            E::Filter(base, name, args) => {
                self.operand(base, base.prec() < 9 || matches!(**base, E::Neg(_)), out);
                let _ = write!(out, " | {name}");
                if !args.is_empty() {
                    out.push('(');
                    self.args(args, out);
                    out.push(')');
                }
            }
            E::BoolText(inner) => match self.dialect {
                Dialect::Pao => self.expr(inner, out),
                Dialect::Jinja => {
                    out.push_str("(\"true\" if ");
                    self.operand(inner, !is_atom(inner), out);
                    out.push_str(" else \"false\")");
                }
            },
            E::Call(name, args) => {
                out.push_str(name);
                out.push('(');
                self.args(args, out);
                out.push(')');
            }
        }
    }

    fn args(&self, args: &[E], out: &mut String) {
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.expr(a, out);
        }
    }

    fn operand(&self, e: &E, parens: bool, out: &mut String) {
        if parens {
            out.push('(');
            self.expr(e, out);
            out.push(')');
        } else {
            self.expr(e, out);
        }
    }

    fn needs_parens(&self, op: Op, child: &E, right: bool) -> bool {
        if is_atom(child) {
            return false;
        }
        if self.full_parens || matches!(child, E::Cond(..)) {
            return true;
        }
        if let E::Bin(cop, ..) = child
            && (op == Op::Concat || *cop == Op::Concat || (op.prec() == 4 && cop.prec() == 4))
        {
            return true;
        }
        if op == Op::Concat && child.prec() < 9 {
            return true;
        }
        let cp = child.prec();
        if right {
            cp <= op.prec()
        } else {
            cp < op.prec()
        }
    }
}

fn is_atom(e: &E) -> bool {
    if let E::BoolText(inner) = e {
        return is_atom(inner);
    }
    matches!(
        e,
        E::Str(..)
            | E::Int(_)
            | E::Bool(_)
            | E::List(_)
            | E::Path(..)
            | E::LoopAttr(_)
            | E::Call(..)
    )
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Interp(E, bool),
    If(Vec<(E, Vec<Node>)>, Option<Vec<Node>>, [bool; 2]),
    For(String, E, Vec<Node>, [bool; 2]),
}

fn print_nodes(p: &Printer, nodes: &[Node], out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Interp(e, spaced) => {
                let mut text = String::new();
                p.expr(e, &mut text);
                // `${{-` trims white space in Jinja; it is a negation in PAO.
                let spaced = *spaced || text.starts_with('-');
                out.push_str(if spaced { "${{ " } else { "${{" });
                out.push_str(&text);
                out.push_str(if spaced { " }}" } else { "}}" });
            }
            Node::If(branches, otherwise, [l, r]) => {
                let open = if *l { "{%- " } else { "{% " };
                let close = if *r { " -%}" } else { " %}" };
                for (i, (cond, body)) in branches.iter().enumerate() {
                    out.push_str(open);
                    out.push_str(if i == 0 { "if " } else { "elif " });
                    // Jinja reads a bare `a if c else b` in a tag as the tag's own syntax.
                    p.operand(cond, matches!(cond, E::Cond(..)), out);
                    out.push_str(close);
                    print_nodes(p, body, out);
                }
                if let Some(body) = otherwise {
                    out.push_str(open);
                    out.push_str("else");
                    out.push_str(close);
                    print_nodes(p, body, out);
                }
                out.push_str(open);
                out.push_str("endif");
                out.push_str(close);
            }
            Node::For(var, iter, body, [l, r]) => {
                let open = if *l { "{%- " } else { "{% " };
                let close = if *r { " -%}" } else { " %}" };
                out.push_str(open);
                let _ = write!(out, "for {var} in ");
                p.operand(iter, matches!(iter, E::Cond(..)), out);
                out.push_str(close);
                print_nodes(p, body, out);
                out.push_str(open);
                out.push_str("endfor");
                out.push_str(close);
            }
        }
    }
}

// ------------------------------------------------------------------------------------ generator

/// What kind of failure a case deliberately contains.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Inject {
    None,
    Undefined,
    Type,
    Syntax,
}

struct Gen<'c> {
    rng: Rng,
    fields: &'c Map<String, Value>,
    /// Loop variables in scope, innermost last.
    locals: Vec<(String, Ty)>,
    inject: Inject,
    injected: bool,
    missing: usize,
}

impl Gen<'_> {
    fn keys(&self, prefix: &str, pred: impl Fn(&Value) -> bool) -> Vec<String> {
        let mut keys: Vec<String> = self
            .fields
            .iter()
            .filter(|(k, v)| {
                k.starts_with(prefix)
                    && k[prefix.len()..].chars().all(|c| c.is_ascii_digit())
                    && pred(v)
            })
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    fn field(&mut self, key: String) -> E {
        let bracket = self.rng.chance(15);
        E::Path("fields".into(), Some((key, bracket)), Vec::new())
    }

    fn field_of(&mut self, prefix: &str, nonempty: bool) -> Option<E> {
        let keys = self.keys(prefix, |v| {
            !nonempty
                || match v {
                    Value::String(s) => !s.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                }
        });
        if keys.is_empty() {
            return None;
        }
        let k = self.rng.pick(&keys).clone();
        Some(self.field(k))
    }

    fn local_of(&mut self, ty: Ty) -> Option<E> {
        let names: Vec<String> = self
            .locals
            .iter()
            .filter(|(_, t)| *t == ty)
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            return None;
        }
        let n = self.rng.pick(&names).clone();
        Some(E::Path(n, None, Vec::new()))
    }

    /// A leaf that fails at render time, used once per case when asked for.
    fn maybe_inject(&mut self) -> Option<E> {
        if self.injected || !self.rng.chance(20) {
            return None;
        }
        match self.inject {
            Inject::Undefined => {
                self.injected = true;
                self.missing += 1;
                Some(E::Path(
                    "fields".into(),
                    Some((format!("nope{}", self.missing), false)),
                    Vec::new(),
                ))
            }
            Inject::Type => {
                self.injected = true;
                Some(match self.rng.below(4) {
                    0 => E::Bin(
                        Op::Sub,
                        Box::new(self.str_lit()),
                        Box::new(E::Int(self.rng.range(0, 9))),
                    ),
                    1 => E::Neg(Box::new(self.str_lit())),
                    2 => E::Filter(Box::new(self.str_lit()), "abs", Vec::new()),
                    _ => E::Bin(
                        Op::Sub,
                        Box::new(E::List(vec![E::Int(1)])),
                        Box::new(E::Int(1)),
                    ),
                })
            }
            _ => None,
        }
    }

    fn str_lit(&mut self) -> E {
        let q = if self.rng.chance(50) { '\'' } else { '"' };
        E::Str(gen_string(&mut self.rng, 3), q)
    }

    fn word_lit(&mut self) -> E {
        let q = if self.rng.chance(50) { '\'' } else { '"' };
        E::Str(self.rng.pick(WORDS).to_string(), q)
    }

    fn nonempty_str_leaf(&mut self) -> E {
        if self.rng.chance(50)
            && let Some(e) = self.field_of("s", true)
        {
            return e;
        }
        let q = if self.rng.chance(50) { '\'' } else { '"' };
        let mut s = gen_string(&mut self.rng, 3);
        if s.is_empty() {
            s.push('k');
        }
        E::Str(s, q)
    }

    fn any(&mut self, ty: Ty, depth: u32) -> E {
        if matches!(ty, Ty::Str | Ty::Int)
            && let Some(e) = self.maybe_inject()
        {
            return e;
        }
        match ty {
            Ty::Str => self.gen_str(depth),
            Ty::Int => self.gen_int(depth),
            Ty::Bool => self.gen_bool(depth),
            Ty::ListStr | Ty::ListInt => self.gen_list(ty, depth, false),
        }
    }

    /// A value of that type that is about to be written as text.
    fn text_of(&mut self, ty: Ty, depth: u32) -> E {
        let e = self.any(ty, depth);
        if ty == Ty::Bool {
            E::BoolText(Box::new(e))
        } else {
            e
        }
    }

    fn scalar_ty(&mut self) -> Ty {
        *self.rng.pick(&[Ty::Str, Ty::Int, Ty::Bool])
    }

    fn gen_str(&mut self, depth: u32) -> E {
        let leaf = depth == 0 || self.rng.chance(30);
        if leaf {
            return match self.rng.below(4) {
                0 => self.str_lit(),
                1 => self.local_of(Ty::Str).unwrap_or_else(|| self.word_lit()),
                _ => self.field_of("s", false).unwrap_or_else(|| self.str_lit()),
            };
        }
        let d = depth - 1;
        match self.rng.below(12) {
            0 | 1 => {
                let (a, b) = (self.scalar_ty(), self.scalar_ty());
                E::Bin(
                    Op::Concat,
                    Box::new(self.text_of(a, d)),
                    Box::new(self.text_of(b, d)),
                )
            }
            2 => E::Bin(
                Op::Add,
                Box::new(self.gen_str(d)),
                Box::new(self.gen_str(d)),
            ),
            3 => {
                let f = *self.rng.pick(&["lower", "upper", "trim", "reverse"]);
                E::Filter(Box::new(self.gen_str(d)), f, Vec::new())
            }
            4 => {
                let from = E::Str(self.rng.pick(&["a", " ", "db", "é", "x"]).to_string(), '\'');
                let to = self.str_lit();
                E::Filter(Box::new(self.gen_str(d)), "replace", vec![from, to])
            }
            5 => {
                let f = *self.rng.pick(&["first", "last"]);
                let base = if self.rng.chance(50) {
                    self.nonempty_str_leaf()
                } else {
                    self.gen_list(Ty::ListStr, d, true)
                };
                E::Filter(Box::new(base), f, Vec::new())
            }
            6 => {
                let ty = *self.rng.pick(&[Ty::ListStr, Ty::ListInt]);
                let list = self.gen_list(ty, d, false);
                let args = if self.rng.chance(25) {
                    Vec::new()
                } else {
                    vec![E::Str(
                        self.rng.pick(&[",", ", ", "-", ""]).to_string(),
                        '"',
                    )]
                };
                E::Filter(Box::new(list), "join", args)
            }
            7 => {
                // `default` on a missing key gives the default; on a present one, the value.
                let base = if self.rng.chance(60) {
                    self.missing += 1;
                    E::Path(
                        "fields".into(),
                        Some((format!("absent{}", self.missing), false)),
                        Vec::new(),
                    )
                } else {
                    self.field_of("s", false).unwrap_or_else(|| self.str_lit())
                };
                // The fallback is only evaluated when needed in PAO, always in Jinja: keep
                // deliberate failures out of it.
                let saved = std::mem::replace(&mut self.inject, Inject::None);
                let fallback = self.gen_str(d);
                self.inject = saved;
                E::Filter(Box::new(base), "default", vec![fallback])
            }
            8 => {
                let c = self.gen_cond(d);
                E::Cond(
                    Box::new(c),
                    Box::new(self.gen_str(d)),
                    Box::new(self.gen_str(d)),
                )
            }
            9 => {
                // An index into a non-empty list of words, from either end.
                let keys = self.keys("ls", |v| v.as_array().is_some_and(|a| !a.is_empty()));
                if keys.is_empty() {
                    return self.word_lit();
                }
                let k = self.rng.pick(&keys).clone();
                let len = self.fields[&k].as_array().map_or(1, Vec::len) as i64;
                let i = if self.rng.chance(30) {
                    -self.rng.range(1, len)
                } else {
                    self.rng.range(0, len - 1)
                };
                E::Path("fields".into(), Some((k, false)), vec![i])
            }
            10 => {
                let keys: Vec<String> = self.fields["m0"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                if keys.is_empty() {
                    return self.str_lit();
                }
                let k = self.rng.pick(&keys).clone();
                let bracket = self.rng.chance(40);
                E::Path("fields.m0".into(), Some((k, bracket)), Vec::new())
            }
            _ => self.local_of(Ty::Str).unwrap_or_else(|| self.str_lit()),
        }
    }

    fn gen_int(&mut self, depth: u32) -> E {
        let leaf = depth == 0 || self.rng.chance(30);
        if leaf {
            return match self.rng.below(5) {
                0 | 1 => E::Int(self.rng.range(0, 20)),
                2 if !self.locals.is_empty() => E::LoopAttr(
                    self.rng
                        .pick_str(&["index", "index0", "length", "revindex"]),
                ),
                3 => self
                    .local_of(Ty::Int)
                    .unwrap_or_else(|| E::Int(self.rng.range(0, 9))),
                _ => self
                    .field_of("i", false)
                    .unwrap_or_else(|| E::Int(self.rng.range(0, 9))),
            };
        }
        let d = depth - 1;
        match self.rng.below(11) {
            0..=2 => {
                let op = *self.rng.pick(&[Op::Add, Op::Sub, Op::Mul]);
                E::Bin(op, Box::new(self.gen_int(d)), Box::new(self.gen_int(d)))
            }
            3 => {
                // Floor division and remainder by a positive divisor: Python semantics in both.
                let op = *self.rng.pick(&[Op::FloorDiv, Op::Rem]);
                E::Bin(
                    op,
                    Box::new(self.gen_int(d)),
                    Box::new(E::Int(self.rng.range(1, 7))),
                )
            }
            4 => E::Neg(Box::new(self.gen_int(d))),
            5 => E::Filter(Box::new(self.gen_int(d)), "abs", Vec::new()),
            6 => {
                let ty = *self.rng.pick(&[Ty::Str, Ty::ListStr, Ty::ListInt]);
                let base = self.any(ty, d);
                E::Filter(Box::new(base), "length", Vec::new())
            }
            7 => {
                let f = *self.rng.pick(&["first", "last"]);
                let list = self.gen_list(Ty::ListInt, d, true);
                E::Filter(Box::new(list), f, Vec::new())
            }
            8 => {
                let c = self.gen_cond(d);
                E::Cond(
                    Box::new(c),
                    Box::new(self.gen_int(d)),
                    Box::new(self.gen_int(d)),
                )
            }
            9 => {
                let keys = self.keys("li", |v| v.as_array().is_some_and(|a| !a.is_empty()));
                if keys.is_empty() {
                    return E::Int(1);
                }
                let k = self.rng.pick(&keys).clone();
                let len = self.fields[&k].as_array().map_or(1, Vec::len) as i64;
                E::Path(
                    "fields".into(),
                    Some((k, false)),
                    vec![self.rng.range(0, len - 1)],
                )
            }
            _ => self.local_of(Ty::Int).unwrap_or(E::Int(7)),
        }
    }

    fn gen_bool(&mut self, depth: u32) -> E {
        let leaf = depth == 0 || self.rng.chance(25);
        if leaf {
            return match self.rng.below(4) {
                0 => E::Bool(self.rng.chance(50)),
                1 if !self.locals.is_empty() => E::LoopAttr(self.rng.pick_str(&["first", "last"])),
                _ => self
                    .field_of("b", false)
                    .unwrap_or(E::Bool(self.rng.chance(50))),
            };
        }
        let d = depth - 1;
        match self.rng.below(9) {
            0 | 1 => {
                let op = *self
                    .rng
                    .pick(&[Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge]);
                E::Bin(op, Box::new(self.gen_int(d)), Box::new(self.gen_int(d)))
            }
            2 => {
                let op = *self
                    .rng
                    .pick(&[Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge]);
                E::Bin(op, Box::new(self.gen_str(d)), Box::new(self.gen_str(d)))
            }
            3 => {
                let op = *self.rng.pick(&[Op::In, Op::NotIn]);
                let (needle, hay) = match self.rng.below(3) {
                    0 => {
                        let needle = if self.rng.chance(50) {
                            self.word_lit()
                        } else {
                            self.gen_str(d)
                        };
                        (needle, self.gen_list(Ty::ListStr, d, false))
                    }
                    1 => (self.gen_str(d), self.gen_str(d)),
                    _ => (self.gen_int(d), self.gen_list(Ty::ListInt, d, false)),
                };
                E::Bin(op, Box::new(needle), Box::new(hay))
            }
            4 | 5 => {
                let op = *self.rng.pick(&[Op::And, Op::Or]);
                E::Bin(op, Box::new(self.gen_bool(d)), Box::new(self.gen_bool(d)))
            }
            6 => E::Not(Box::new(self.gen_bool(d))),
            7 => {
                let c = self.gen_cond(d);
                E::Cond(
                    Box::new(c),
                    Box::new(self.gen_bool(d)),
                    Box::new(self.gen_bool(d)),
                )
            }
            _ => E::Bin(
                Op::Eq,
                Box::new(self.gen_bool(d)),
                Box::new(self.gen_bool(d)),
            ),
        }
    }

    /// A condition: a bool, or any value tested for truthiness.
    fn gen_cond(&mut self, depth: u32) -> E {
        if self.rng.chance(70) {
            self.gen_bool(depth)
        } else {
            let ty = *self.rng.pick(&[Ty::Str, Ty::Int, Ty::ListStr, Ty::ListInt]);
            self.any(ty, depth)
        }
    }

    fn gen_list(&mut self, ty: Ty, depth: u32, nonempty: bool) -> E {
        let prefix = if ty == Ty::ListStr { "ls" } else { "li" };
        let leaf = depth == 0 || self.rng.chance(40);
        if leaf {
            if self.rng.chance(60)
                && let Some(e) = self.field_of(prefix, nonempty)
            {
                return e;
            }
            if ty == Ty::ListInt && self.rng.chance(40) {
                let n = self.rng.range(i64::from(nonempty), 6);
                return E::Call("range", vec![E::Int(n)]);
            }
            let n = self.rng.below(4) + usize::from(nonempty);
            let items = (0..n)
                .map(|_| {
                    if ty == Ty::ListStr {
                        self.word_lit()
                    } else {
                        E::Int(self.rng.range(0, 9))
                    }
                })
                .collect();
            return E::List(items);
        }
        let f = *self.rng.pick(&["sort", "unique", "reverse"]);
        E::Filter(
            Box::new(self.gen_list(ty, depth - 1, nonempty)),
            f,
            Vec::new(),
        )
    }

    fn gen_text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a", "Hello", " ", "  ", "\n", "\n\n", "\t", ":", ",", "-", "=", "é", "}}", "%}", "{",
            "}", "$", "x", "(", ")", "'", "\"", "<p>", "&",
        ];
        loop {
            let n = self.rng.below(5) + 1;
            let mut s: String = (0..n).map(|_| *self.rng.pick(PIECES)).collect();
            while s.ends_with('$') || s.ends_with('{') {
                s.pop();
            }
            if !s.contains("${{") && !s.contains("{%") && !s.contains("{#") && !s.contains("$$") {
                return s;
            }
        }
    }

    fn gen_nodes(&mut self, depth: u32, max: usize) -> Vec<Node> {
        let n = self.rng.below(max) + 1;
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let block = depth > 0 && self.rng.chance(30);
            if !block {
                if self.rng.chance(45) {
                    nodes.push(Node::Text(self.gen_text()));
                } else {
                    let ty = self.scalar_ty();
                    let e = self.text_of(ty, 3);
                    nodes.push(Node::Interp(e, self.rng.chance(85)));
                }
                continue;
            }
            let trims = [self.rng.chance(20), self.rng.chance(20)];
            if self.rng.chance(55) {
                let mut branches = Vec::new();
                for _ in 0..=self.rng.below(3) {
                    let c = self.gen_cond(2);
                    let body = self.gen_nodes(depth - 1, 3);
                    branches.push((c, body));
                }
                let otherwise = self.rng.chance(50).then(|| self.gen_nodes(depth - 1, 3));
                nodes.push(Node::If(branches, otherwise, trims));
            } else {
                let var = ["item", "x", "y", "word"][self.locals.len().min(3)].to_string();
                let (iter, ty) = match self.rng.below(5) {
                    0 | 1 => (self.gen_list(Ty::ListStr, 1, false), Ty::Str),
                    2 | 3 => (self.gen_list(Ty::ListInt, 1, false), Ty::Int),
                    _ => (
                        E::Path("fields".into(), Some(("m0".into(), false)), Vec::new()),
                        Ty::Str,
                    ),
                };
                let iter = if self.inject == Inject::Type && !self.injected && self.rng.chance(30) {
                    self.injected = true;
                    self.gen_int(1)
                } else {
                    iter
                };
                self.locals.push((var.clone(), ty));
                let body = self.gen_nodes(depth - 1, 3);
                self.locals.pop();
                nodes.push(Node::For(var, iter, body, trims));
            }
        }
        nodes
    }
}

/// Breaks a template in a way both languages reject.
fn corrupt(rng: &mut Rng, pao: &str, jinja: &str) -> (String, String) {
    let both = |f: &dyn Fn(&str) -> String| (f(pao), f(jinja));
    match rng.below(6) {
        0 if pao.contains("{% endif %}") => both(&|s: &str| s.replacen("{% endif %}", "", 1)),
        1 if pao.contains("{% endfor %}") => both(&|s: &str| s.replacen("{% endfor %}", "", 1)),
        2 if pao.contains(" }}") => both(&|s: &str| s.replacen(" }}", " }", 1)),
        3 => both(&|s: &str| format!("{s}{{% endif %}}")),
        4 => both(&|s: &str| format!("${{{{ 1 + }}}}{s}")),
        _ => both(&|s: &str| format!("{s}{{% bogus %}}")),
    }
}

// ------------------------------------------------------------------------------------ running

#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(String),
    Syntax(String),
    Undefined(String),
    Other(String),
}

impl Outcome {
    fn class(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Syntax(_) => "syntax",
            Outcome::Undefined(_) => "undefined",
            Outcome::Other(_) => "other",
        }
    }
}

fn run_pao(engine: &Engine, src: &str, fields: &Value) -> Outcome {
    let tpl = match engine.compile(src) {
        Ok(t) => t,
        Err(e) => return Outcome::Syntax(e.to_string()),
    };
    let ctx = Context::new().with(Scope::Fields, fields);
    match tpl.render(&ctx) {
        Ok(s) => Outcome::Ok(s),
        Err(e) if e.kind() == VarErrorKind::Undefined => Outcome::Undefined(e.to_string()),
        Err(e) => Outcome::Other(e.to_string()),
    }
}

fn jinja_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .variable_delimiters("${{", "}}")
            .trim_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("valid syntax config"),
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

fn run_jinja(env: &Environment<'_>, src: &str, fields: &Value) -> Outcome {
    let tpl = match env.template_from_str(src) {
        Ok(t) => t,
        Err(e) => return Outcome::Syntax(e.to_string()),
    };
    let ctx = minijinja::Value::from(minijinja::value::Serde(json!({ "fields": fields })));
    match tpl.render(ctx) {
        Ok(s) => Outcome::Ok(s),
        Err(e) if e.kind() == ErrorKind::UndefinedError => Outcome::Undefined(e.to_string()),
        Err(e) if e.kind() == ErrorKind::SyntaxError => Outcome::Syntax(e.to_string()),
        Err(e) => Outcome::Other(e.to_string()),
    }
}

fn agree(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Ok(x), Outcome::Ok(y)) => x == y,
        _ => a.class() == b.class(),
    }
}

struct Case {
    pao: String,
    jinja: String,
    fields: Value,
    inject: Inject,
}

fn gen_case(seed: u64, index: u64) -> Case {
    let mut rng = Rng(seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let fields = gen_fields(&mut rng);
    let inject = match rng.below(100) {
        0..=5 => Inject::Undefined,
        6..=10 => Inject::Type,
        11..=14 => Inject::Syntax,
        _ => Inject::None,
    };
    let full_parens = rng.chance(40);
    let map = fields.as_object().expect("fields is an object").clone();
    let mut g = Gen {
        rng,
        fields: &map,
        locals: Vec::new(),
        inject,
        injected: false,
        missing: 0,
    };
    let mut nodes = g.gen_nodes(2, 5);
    if matches!(inject, Inject::Undefined | Inject::Type) && !g.injected {
        // The leaf lottery did not fire: append the failure so the case tests it.
        g.rng = Rng(g.rng.next_u64() | 1);
        g.injected = false;
        let mut e = None;
        while e.is_none() {
            e = g.maybe_inject();
        }
        nodes.push(Node::Interp(e.expect("just generated"), true));
    }
    let mut rng = Rng(g.rng.next_u64());
    let mut pao = String::new();
    let mut jinja = String::new();
    print_nodes(
        &Printer {
            dialect: Dialect::Pao,
            full_parens,
        },
        &nodes,
        &mut pao,
    );
    print_nodes(
        &Printer {
            dialect: Dialect::Jinja,
            full_parens,
        },
        &nodes,
        &mut jinja,
    );
    if inject == Inject::Syntax {
        (pao, jinja) = corrupt(&mut rng, &pao, &jinja);
    }
    Case {
        pao,
        jinja,
        fields,
        inject,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn pao_agrees_with_minijinja_on_the_common_subset() {
    let seed = env_u64("PAO_DIFF_SEED", 0x5eed_f9a0);
    let cases = env_u64("PAO_DIFF_CASES", 1500);
    let engine = Engine::new();
    let env = jinja_env();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut failures = Vec::new();
    for i in 0..cases {
        let case = gen_case(seed, i);
        let ours = run_pao(&engine, &case.pao, &case.fields);
        let theirs = run_jinja(&env, &case.jinja, &case.fields);
        *counts.entry(ours.class()).or_default() += 1;
        if !agree(&ours, &theirs) {
            failures.push(format!(
                "case {i} (seed {seed:#x}, injected {:?})\n  pao:    {:?}\n  jinja:  {:?}\n  fields: {}\n  ours:   {ours:?}\n  theirs: {theirs:?}",
                case.inject, case.pao, case.jinja, case.fields
            ));
        }
    }
    println!("{cases} cases, outcomes: {counts:?}");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ:\n\n{}",
        failures.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    // The generator must exercise both success and every failure class, or the test proves
    // little.
    let ok = counts.get("ok").copied().unwrap_or(0);
    assert!(
        ok * 100 >= cases as usize * 60,
        "too few successful cases: {counts:?}"
    );
    for class in ["syntax", "undefined", "other"] {
        assert!(
            counts.get(class).copied().unwrap_or(0) > 0,
            "no {class} case: {counts:?}"
        );
    }
}

#[test]
fn printers_translate_the_ternary_and_keep_precedence() {
    let e = E::Cond(
        Box::new(E::Bin(
            Op::Lt,
            Box::new(E::Int(1)),
            Box::new(E::Bin(Op::Add, Box::new(E::Int(2)), Box::new(E::Int(3)))),
        )),
        Box::new(E::Str("a".into(), '\'')),
        Box::new(E::Str("b\"".into(), '"')),
    );
    let print = |dialect| {
        let mut s = String::new();
        Printer {
            dialect,
            full_parens: false,
        }
        .expr(&e, &mut s);
        s
    };
    assert_eq!(print(Dialect::Pao), r#"(1 < 2 + 3) ? 'a' : "b\"""#);
    assert_eq!(print(Dialect::Jinja), r#"'a' if (1 < 2 + 3) else "b\"""#);
    let env = jinja_env();
    let fields = json!({});
    assert_eq!(
        run_jinja(
            &env,
            &format!("${{{{ {} }}}}", print(Dialect::Jinja)),
            &fields
        ),
        Outcome::Ok("a".into())
    );
    assert_eq!(
        run_pao(
            &Engine::new(),
            &format!("${{{{ {} }}}}", print(Dialect::Pao)),
            &fields
        ),
        Outcome::Ok("a".into())
    );
}
