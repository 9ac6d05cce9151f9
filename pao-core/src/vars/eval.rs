//! The evaluator: walks the compiled tree against a [`Context`] of borrowed scopes.

use serde_json::{Map, Value};

use super::Limits;
use super::ast::*;
use super::error::{Span, VarError, VarErrorKind};
use super::functions;
use super::value::{Val, compare, equals};

static NULL: Value = Value::Null;

/// Hard cap on loop nesting.
pub(crate) const MAX_LOOP_DEPTH: usize = 16;

/// The data a template is rendered against: the nine scopes plus `result`, each borrowed.
///
/// A scope that is not set behaves as an empty object.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    scopes: [&'a Value; 11],
}

impl Default for Context<'_> {
    fn default() -> Self {
        Context::new()
    }
}

impl<'a> Context<'a> {
    /// A context with every scope empty.
    pub fn new() -> Context<'a> {
        Context {
            scopes: [&NULL; 11],
        }
    }

    /// Sets one scope.
    pub fn with(mut self, scope: Scope, value: &'a Value) -> Context<'a> {
        self.scopes[scope.index()] = value;
        self
    }

    /// Sets one scope in place.
    pub fn set(&mut self, scope: Scope, value: &'a Value) {
        self.scopes[scope.index()] = value;
    }

    /// The value of one scope (null when unset).
    pub fn get(&self, scope: Scope) -> &'a Value {
        self.scopes[scope.index()]
    }
}

pub(crate) struct Frame<'a> {
    /// The item, when it is not borrowed JSON (`Undef` when it is).
    pub item: Val<'a>,
    /// The item as borrowed JSON, when the loop runs over a borrowed list.
    pub json: Option<&'a Value>,
    pub index: usize,
    pub len: usize,
}

/// Loops nested this deep keep their frames inside [`State`]; deeper ones on the heap.
const INLINE_FRAMES: usize = 2;

/// The frames of the loops being run, one slot per nesting depth. Sized by the template's own
/// nesting so that an expression or a loop-free template does not set up sixteen of them.
enum Frames<'a> {
    None,
    Inline([Option<Frame<'a>>; INLINE_FRAMES]),
    Heap(Vec<Option<Frame<'a>>>),
}

impl<'a> Frames<'a> {
    fn new(depth: usize) -> Frames<'a> {
        if depth == 0 {
            Frames::None
        } else if depth <= INLINE_FRAMES {
            Frames::Inline([const { None }; INLINE_FRAMES])
        } else {
            Frames::Heap(std::iter::repeat_with(|| None).take(depth).collect())
        }
    }

    #[inline]
    fn get(&self, depth: usize) -> Option<&Frame<'a>> {
        match self {
            Frames::None => None,
            Frames::Inline(f) => f.get(depth)?.as_ref(),
            Frames::Heap(f) => f.get(depth)?.as_ref(),
        }
    }

    fn slot(&mut self, depth: usize) -> Option<&mut Option<Frame<'a>>> {
        match self {
            Frames::None => None,
            Frames::Inline(f) => f.get_mut(depth),
            Frames::Heap(f) => f.get_mut(depth),
        }
    }
}

pub(crate) struct State<'a> {
    fuel: u64,
    loop_budget: u64,
    pub max_output: usize,
    frames: Frames<'a>,
    pub secret_reads: u32,
    /// Secret values read and text derived from them, when the caller asked for them.
    pub tainted: Option<Vec<String>>,
}

impl<'a> State<'a> {
    /// State for one render or evaluation of something with loops nested `loop_depth` deep.
    pub(crate) fn new(limits: &Limits, track_secrets: bool, loop_depth: usize) -> State<'a> {
        State {
            fuel: limits.fuel,
            loop_budget: limits.max_loop_iterations,
            max_output: limits.max_output_bytes,
            frames: Frames::new(loop_depth),
            secret_reads: 0,
            tainted: track_secrets.then(Vec::new),
        }
    }

    /// The fuel not used yet.
    pub(crate) fn fuel_left(&self) -> u64 {
        self.fuel
    }

    #[inline]
    pub(crate) fn tick(&mut self, span: Span) -> Result<(), VarError> {
        self.tick_at(|| span)
    }

    /// [`State::tick`] that works out where it is only when the fuel has run out.
    #[inline]
    pub(crate) fn tick_at(&mut self, span: impl FnOnce() -> Span) -> Result<(), VarError> {
        if self.fuel == 0 {
            return Err(out_of_fuel(span()));
        }
        self.fuel -= 1;
        Ok(())
    }

    /// Charges `units` operations at once, for work proportional to a size (text produced,
    /// items compared), so that fuel bounds memory and time and not just the number of steps.
    pub(crate) fn charge(&mut self, units: u64, span: Span) -> Result<(), VarError> {
        if units > self.fuel {
            self.fuel = 0;
            return self.tick(span);
        }
        self.fuel -= units;
        Ok(())
    }

    fn taint(&mut self, text: &str) {
        if let Some(t) = &mut self.tainted
            && !text.is_empty()
            && !t.iter().any(|s| s == text)
        {
            t.push(text.to_owned());
        }
    }
}

/// Renders a list of nodes. Text and plain paths, what most nodes are, are written here; the
/// rest in [`render_node`], out of line, so that this function (entered once per loop item and
/// branch taken) stays small.
pub(crate) fn render_nodes<'a>(
    nodes: &'a [Node],
    ctx: &Context<'a>,
    st: &mut State<'a>,
    out: &mut String,
    out_start: usize,
) -> Result<(), VarError> {
    for node in nodes {
        match node {
            Node::Text(t) => push_text(out, t),
            // A plain path writes the JSON it finds, with no intermediate value.
            Node::Interp(Expr::Path(p))
                if p.plain
                    && let Some(v) = walk_plain(p, ctx, st) =>
            {
                st.tick(Span::default())?;
                v.write_to(out);
            }
            _ => render_node(node, ctx, st, out, out_start)?,
        }
        if out.len() - out_start > st.max_output {
            return Err(output_too_large(st.max_output));
        }
    }
    Ok(())
}

/// `out.push_str(text)`, without a call to `memcpy` for the one- and two-byte pieces between
/// values (`", "`, `"\n"`), which are most text nodes of a loop body.
#[inline(always)]
fn push_text(out: &mut String, text: &str) {
    match text.as_bytes() {
        [a] if a.is_ascii() => out.push(char::from(*a)),
        [a, b] if a.is_ascii() && b.is_ascii() => {
            out.push(char::from(*a));
            out.push(char::from(*b));
        }
        _ => out.push_str(text),
    }
}

#[inline(never)]
fn render_node<'a>(
    node: &'a Node,
    ctx: &Context<'a>,
    st: &mut State<'a>,
    out: &mut String,
    out_start: usize,
) -> Result<(), VarError> {
    match node {
        Node::Text(t) => out.push_str(t),
        // `upper`/`lower`/`trim` of a string write straight into the output.
        Node::Interp(Expr::Call(call))
            if st.tainted.is_none()
                && let Some(r) = functions::stream(call, ctx, st, out) =>
        {
            r?
        }
        Node::Interp(e) => {
            let reads = st.secret_reads;
            let start = out.len();
            let v = eval(e, ctx, st, false)?;
            if let Val::Undef = v {
                return Err(undefined_value(e));
            }
            functions::write_val(&v, out);
            if st.secret_reads != reads && st.tainted.is_some() {
                let piece = out[start..].to_owned();
                st.taint(&piece);
            }
        }
        Node::If(branches, otherwise) => {
            for (cond, body) in branches.iter() {
                st.tick_at(|| cond.span())?;
                // `{% if loop.last %}`, `{% if fields.flag %}`: read in place.
                let holds = match cond {
                    Expr::Path(p)
                        if p.plain
                            && let Some(v) = walk_plain(p, ctx, st) =>
                    {
                        st.tick(Span::default())?;
                        v.truthy()
                    }
                    _ => eval_truthy(cond, ctx, st)?,
                };
                if holds {
                    return render_nodes(body, ctx, st, out, out_start);
                }
            }
            if !otherwise.is_empty() {
                render_nodes(otherwise, ctx, st, out, out_start)?;
            }
        }
        Node::For(f) => render_for(f, ctx, st, out, out_start)?,
    }
    Ok(())
}

#[cold]
fn output_too_large(max: usize) -> VarError {
    VarError::new(
        VarErrorKind::Limit,
        format!("output larger than {max} bytes"),
    )
    .with_hint("raise `Limits::max_output_bytes` or shorten the template")
}

fn render_for<'a>(
    f: &'a ForNode,
    ctx: &Context<'a>,
    st: &mut State<'a>,
    out: &mut String,
    out_start: usize,
) -> Result<(), VarError> {
    let iterable = eval(&f.iter, ctx, st, false)?;
    let depth = f.depth as usize;
    // The frame is set up once and then updated field by field: writing a whole new frame
    // per item made the CPU stall on reading back the item it had just stored piecewise.
    macro_rules! iterate {
        ($len:expr, $items:expr, |$frame:ident, $item:ident| $set:expr) => {{
            let len = $len;
            let Some(slot) = st.frames.slot(depth) else {
                return Err(too_deep(f.span));
            };
            *slot = Some(Frame {
                item: Val::Undef,
                json: None,
                index: 0,
                len,
            });
            for (index, $item) in $items.enumerate() {
                if st.loop_budget == 0 {
                    return Err(VarError::at(
                        VarErrorKind::Limit,
                        f.span,
                        "too many loop iterations",
                    )
                    .with_hint("raise `Limits::max_loop_iterations`"));
                }
                st.loop_budget -= 1;
                st.tick(f.span)?;
                if let Some(Some($frame)) = st.frames.slot(depth) {
                    $frame.index = index;
                    $set;
                }
                render_nodes(&f.body, ctx, st, out, out_start)?;
            }
        }};
    }
    match &iterable {
        Val::Ref(Value::Array(items)) => {
            iterate!(items.len(), items.iter(), |frame, v| frame.json = Some(v))
        }
        Val::Ref(Value::Object(map)) => {
            iterate!(map.len(), map.keys(), |frame, k| frame.item =
                Val::Str(k.as_str()))
        }
        Val::Owned(Value::Array(items)) => {
            iterate!(items.len(), items.iter(), |frame, v| frame.item =
                Val::from_owned(v.clone()))
        }
        Val::Owned(Value::Object(map)) => {
            iterate!(map.len(), map.keys(), |frame, k| frame.item =
                Val::String(k.clone()))
        }
        other => {
            return Err(VarError::at(
                VarErrorKind::Type,
                f.iter.span(),
                format!("cannot loop over a {}", other.type_name()),
            )
            .with_hint("loops take a list or an object (its keys)"));
        }
    }
    if let Some(slot) = st.frames.slot(depth) {
        *slot = None;
    }
    Ok(())
}

#[cold]
fn too_deep(span: Span) -> VarError {
    VarError::at(VarErrorKind::Limit, span, "loops nested too deeply")
}

#[cold]
fn out_of_fuel(span: Span) -> VarError {
    VarError::at(
        VarErrorKind::Limit,
        span,
        "evaluation ran out of fuel (too many operations)",
    )
    .with_hint("simplify the template or raise `Limits::fuel`")
}

/// Evaluates a condition straight to a bool: `&&`, `||` and comparisons, the usual shape of
/// `when:` and `{% if %}`, never build an intermediate value. The same as
/// `eval(expr)?.truthy()`, fuel included.
pub(crate) fn eval_truthy<'a>(
    expr: &'a Expr,
    ctx: &Context<'a>,
    st: &mut State<'a>,
) -> Result<bool, VarError> {
    match expr {
        Expr::And(b) => {
            st.tick(Span::default())?;
            Ok(eval_truthy(&b.0, ctx, st)? && eval_truthy(&b.1, ctx, st)?)
        }
        Expr::Or(b) => {
            st.tick(Span::default())?;
            Ok(eval_truthy(&b.0, ctx, st)? || eval_truthy(&b.1, ctx, st)?)
        }
        Expr::Path(p)
            if p.plain
                && let Some(v) = walk_plain(p, ctx, st) =>
        {
            st.tick(Span::default())?;
            Ok(v.truthy())
        }
        Expr::Binary(op, b, span) if op.is_comparison() => {
            st.tick(Span::default())?;
            // `fields.env == 'prod'`, `fields.replicas > 2`: the path is read in place and
            // compared with the literal, with nothing but two words moving in between. The
            // same fuel as the general way below: one for each side.
            if let (Expr::Path(p), Expr::Const(c, _)) = (&b.0, &b.1)
                && p.plain
                && let Some(found) = walk_plain(p, ctx, st)
                && let Some(answer) = compare_with_const(*op, found, c)
            {
                st.charge(2, Span::default())?;
                return Ok(answer);
            }
            // `fields.env in ['prod', 'staging']`: the folded list is searched in place.
            if let (BinOp::In | BinOp::NotIn, Expr::Path(p), Expr::Folded(f, _)) = (*op, &b.0, &b.1)
                && p.plain
                && let Value::Array(items) = &f.value
                && let Some(found) = walk_plain(p, ctx, st)
            {
                st.charge(1 + f.fuel, Span::default())?;
                return Ok(in_constant_list(found, items) == (*op == BinOp::In));
            }
            let l = operand(&b.0, ctx, st)?;
            let r = operand(&b.1, ctx, st)?;
            if let Some(answer) = quick_compare(*op, &l, &r) {
                return Ok(answer);
            }
            if matches!(l, Val::Undef) || matches!(r, Val::Undef) {
                return Ok(false);
            }
            compare_op(*op, &l, &r, *span)
        }
        _ => Ok(eval(expr, ctx, st, false)?.truthy()),
    }
}

/// [`eval`] of one side of a comparison, with plain paths read in place, and arithmetic on
/// them (`fields.replicas * 2 > 6`) worked out without the general evaluator's bookkeeping.
#[inline]
fn operand<'a>(e: &'a Expr, ctx: &Context<'a>, st: &mut State<'a>) -> Result<Val<'a>, VarError> {
    match e {
        Expr::Path(p)
            if p.plain
                && let Some(v) = walk_plain(p, ctx, st) =>
        {
            st.tick(Span::default())?;
            Ok(v.into_val())
        }
        Expr::Binary(op @ (BinOp::Add | BinOp::Sub | BinOp::Mul), b, span) => {
            st.tick(Span::default())?;
            let l = operand(&b.0, ctx, st)?;
            let r = operand(&b.1, ctx, st)?;
            if let (Val::Int(x), Val::Int(y)) = (&l, &r) {
                let v = match op {
                    BinOp::Add => x.checked_add(*y),
                    BinOp::Sub => x.checked_sub(*y),
                    _ => x.checked_mul(*y),
                };
                if let Some(v) = v {
                    return Ok(Val::Int(v));
                }
            }
            if matches!(l, Val::Undef) || matches!(r, Val::Undef) {
                return Ok(Val::Undef);
            }
            let v = binary(*op, l, r, *span)?;
            if *op == BinOp::Add {
                st.charge(functions::size_cost(&v), *span)?;
            }
            Ok(v)
        }
        _ => eval(e, ctx, st, false),
    }
}

/// Whether what a plain path found equals an item of a constant list.
#[inline]
fn in_constant_list(found: Found, items: &[Value]) -> bool {
    match found {
        Found::Json(Value::String(s)) => items
            .iter()
            .any(|i| matches!(i, Value::String(t) if t.len() == s.len() && same_bytes(t.as_bytes(), s.as_bytes()))),
        found => {
            let needle = found.into_val();
            items.iter().any(|i| equals(&Val::from_ref(i), &needle))
        }
    }
}

/// The comparisons of two ints or two strings, which need no error handling; `None` for the
/// rest, which [`compare_op`] decides.
#[inline]
fn quick_compare(op: BinOp, l: &Val, r: &Val) -> Option<bool> {
    match (l, r) {
        (Val::Int(a), Val::Int(b)) => ordered(op, a.cmp(b)),
        (Val::Str(a), Val::Str(b)) => compare_strs(op, a, b),
        _ => None,
    }
}

/// [`quick_compare`] of what a plain path found with a literal.
#[inline]
fn compare_with_const(op: BinOp, l: Found, r: &Const) -> Option<bool> {
    match (l, r) {
        (Found::Json(Value::String(a)), Const::Str(b)) => compare_strs(op, a, b),
        (Found::Json(Value::Number(n)), Const::Int(b)) => ordered(op, n.as_i64()?.cmp(b)),
        (Found::Int(a), Const::Int(b)) => ordered(op, a.cmp(b)),
        _ => None,
    }
}

#[inline]
fn compare_strs(op: BinOp, a: &str, b: &str) -> Option<bool> {
    match op {
        BinOp::Eq => Some(a.len() == b.len() && same_bytes(a.as_bytes(), b.as_bytes())),
        BinOp::Ne => Some(!(a.len() == b.len() && same_bytes(a.as_bytes(), b.as_bytes()))),
        _ => ordered(op, a.cmp(b)),
    }
}

/// Whether `ord` satisfies an order or equality operator; `None` for `in` and the rest.
#[inline]
fn ordered(op: BinOp, ord: std::cmp::Ordering) -> Option<bool> {
    Some(match op {
        BinOp::Eq => ord.is_eq(),
        BinOp::Ne => ord.is_ne(),
        BinOp::Lt => ord.is_lt(),
        BinOp::Le => ord.is_le(),
        BinOp::Gt => ord.is_gt(),
        BinOp::Ge => ord.is_ge(),
        _ => return None,
    })
}

fn undefined_value(e: &Expr) -> VarError {
    VarError::at(
        VarErrorKind::Undefined,
        e.span(),
        "the expression has no value",
    )
}

/// Evaluates an expression. Constants and paths, the leaves of nearly every expression, are
/// handled here; the rest in [`eval_compound`].
#[inline]
pub(crate) fn eval<'a>(
    expr: &'a Expr,
    ctx: &Context<'a>,
    st: &mut State<'a>,
    lenient: bool,
) -> Result<Val<'a>, VarError> {
    st.tick(Span::default())?;
    eval_untimed(expr, ctx, st, lenient)
}

/// [`eval`] without charging the node itself.
#[inline]
fn eval_untimed<'a>(
    expr: &'a Expr,
    ctx: &Context<'a>,
    st: &mut State<'a>,
    lenient: bool,
) -> Result<Val<'a>, VarError> {
    match expr {
        Expr::Const(c, _) => Ok(match c {
            Const::Null => Val::Null,
            Const::Bool(b) => Val::Bool(*b),
            Const::Int(i) => Val::Int(*i),
            Const::Float(f) => Val::Float(*f),
            Const::Str(s) => Val::Str(s),
        }),
        Expr::Path(p) => eval_path(p, ctx, st, lenient),
        Expr::Folded(f, span) => {
            st.charge(f.fuel.saturating_sub(1), *span)?;
            Ok(Val::from_ref(&f.value))
        }
        _ => eval_compound(expr, ctx, st, lenient),
    }
}

#[inline(never)]
fn eval_compound<'a>(
    expr: &'a Expr,
    ctx: &Context<'a>,
    st: &mut State<'a>,
    lenient: bool,
) -> Result<Val<'a>, VarError> {
    match expr {
        Expr::Const(..) | Expr::Path(_) | Expr::Folded(..) => eval_untimed(expr, ctx, st, lenient),
        Expr::And(b) => {
            let l = eval(&b.0, ctx, st, lenient)?;
            if lenient && matches!(l, Val::Undef) {
                return Ok(Val::Undef);
            }
            if !l.truthy() {
                return Ok(Val::Bool(false));
            }
            let r = eval(&b.1, ctx, st, lenient)?;
            if lenient && matches!(r, Val::Undef) {
                return Ok(Val::Undef);
            }
            Ok(Val::Bool(r.truthy()))
        }
        Expr::Or(b) => {
            let l = eval(&b.0, ctx, st, lenient)?;
            if lenient && matches!(l, Val::Undef) {
                return Ok(Val::Undef);
            }
            if l.truthy() {
                return Ok(Val::Bool(true));
            }
            let r = eval(&b.1, ctx, st, lenient)?;
            if lenient && matches!(r, Val::Undef) {
                return Ok(Val::Undef);
            }
            Ok(Val::Bool(r.truthy()))
        }
        Expr::Cond(b) => {
            let c = eval(&b.0, ctx, st, lenient)?;
            if lenient && matches!(c, Val::Undef) {
                return Ok(Val::Undef);
            }
            if c.truthy() {
                eval(&b.1, ctx, st, lenient)
            } else {
                eval(&b.2, ctx, st, lenient)
            }
        }
        Expr::Unary(op, inner, span) => {
            let v = eval(inner, ctx, st, lenient)?;
            if matches!(v, Val::Undef) {
                return Ok(Val::Undef);
            }
            match op {
                UnOp::Not => Ok(Val::Bool(!v.truthy())),
                UnOp::Neg => match v {
                    Val::Int(i) => i.checked_neg().map(Val::Int).ok_or_else(|| {
                        VarError::at(VarErrorKind::Arithmetic, *span, "integer overflow")
                    }),
                    Val::Float(f) => Ok(Val::Float(-f)),
                    other => Err(VarError::at(
                        VarErrorKind::Type,
                        *span,
                        format!("cannot negate a {}", other.type_name()),
                    )),
                },
            }
        }
        Expr::Binary(op, b, span) => {
            let l = eval(&b.0, ctx, st, lenient)?;
            let r = eval(&b.1, ctx, st, lenient)?;
            if matches!(l, Val::Undef) || matches!(r, Val::Undef) {
                return Ok(Val::Undef);
            }
            if op.is_comparison() {
                return compare_op(*op, &l, &r, *span).map(Val::Bool);
            }
            let v = binary(*op, l, r, *span)?;
            if matches!(op, BinOp::Concat | BinOp::Add) {
                st.charge(functions::size_cost(&v), *span)?;
            }
            Ok(v)
        }
        Expr::Call(call) => functions::call(call, ctx, st, lenient),
        Expr::List(items, _) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                let v = eval(item, ctx, st, lenient)?;
                if matches!(v, Val::Undef) {
                    return Ok(Val::Undef);
                }
                out.push(v.into_value());
            }
            Ok(Val::Owned(Value::Array(out)))
        }
        Expr::Object(entries, _) => {
            let mut out = Map::new();
            for (k, e) in entries.iter() {
                let v = eval(e, ctx, st, lenient)?;
                if matches!(v, Val::Undef) {
                    return Ok(Val::Undef);
                }
                out.insert(k.to_string(), v.into_value());
            }
            Ok(Val::Owned(Value::Object(out)))
        }
    }
}

/// `==`, `!=`, `<`, `<=`, `>`, `>=`, `in` and `not in`.
#[inline]
fn compare_op(op: BinOp, l: &Val, r: &Val, span: Span) -> Result<bool, VarError> {
    match op {
        BinOp::Eq => Ok(equals(l, r)),
        BinOp::Ne => Ok(!equals(l, r)),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let Some(ord) = compare(l, r) else {
                return Err(operand_types(op, l, r, span)
                    .with_hint("order compares numbers with numbers and strings with strings"));
            };
            Ok(match op {
                BinOp::Lt => ord.is_lt(),
                BinOp::Le => ord.is_le(),
                BinOp::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        BinOp::In | BinOp::NotIn => match contains(r, l) {
            Some(found) => Ok(found == (op == BinOp::In)),
            None => Err(operand_types(op, l, r, span)),
        },
        _ => unreachable!("compare_op is only called for comparisons"),
    }
}

#[cold]
fn operand_types(op: BinOp, l: &Val, r: &Val, span: Span) -> VarError {
    VarError::at(
        VarErrorKind::Type,
        span,
        format!(
            "cannot apply `{}` to {} and {}",
            op.symbol(),
            l.type_name(),
            r.type_name()
        ),
    )
}

fn binary<'a>(op: BinOp, l: Val<'a>, r: Val<'a>, span: Span) -> Result<Val<'a>, VarError> {
    let type_err = |l: &Val, r: &Val| {
        VarError::at(
            VarErrorKind::Type,
            span,
            format!(
                "cannot apply `{}` to {} and {}",
                op.symbol(),
                l.type_name(),
                r.type_name()
            ),
        )
    };
    let overflow = || VarError::at(VarErrorKind::Arithmetic, span, "integer overflow");
    match op {
        BinOp::Eq
        | BinOp::Ne
        | BinOp::Lt
        | BinOp::Le
        | BinOp::Gt
        | BinOp::Ge
        | BinOp::In
        | BinOp::NotIn => compare_op(op, &l, &r, span).map(Val::Bool),
        BinOp::Concat => {
            let mut s = String::new();
            functions::write_val(&l, &mut s);
            functions::write_val(&r, &mut s);
            Ok(Val::String(s))
        }
        BinOp::Add => match (&l, &r) {
            (Val::Int(a), Val::Int(b)) => a.checked_add(*b).map(Val::Int).ok_or_else(overflow),
            (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => Ok(Val::Float(
                l.as_f64().unwrap_or(0.0) + r.as_f64().unwrap_or(0.0),
            )),
            _ => {
                if let (Some(a), Some(b)) = (l.as_str(), r.as_str()) {
                    let mut s = String::with_capacity(a.len() + b.len());
                    s.push_str(a);
                    s.push_str(b);
                    return Ok(Val::String(s));
                }
                if let (Some(a), Some(b)) = (l.as_array(), r.as_array()) {
                    let mut v = a.clone();
                    v.extend(b.iter().cloned());
                    return Ok(Val::Owned(Value::Array(v)));
                }
                Err(type_err(&l, &r).with_hint("use `~` to join values as text"))
            }
        },
        BinOp::Sub | BinOp::Mul => match (&l, &r) {
            (Val::Int(a), Val::Int(b)) => {
                let v = if op == BinOp::Sub {
                    a.checked_sub(*b)
                } else {
                    a.checked_mul(*b)
                };
                v.map(Val::Int).ok_or_else(overflow)
            }
            (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
                let (a, b) = (l.as_f64().unwrap_or(0.0), r.as_f64().unwrap_or(0.0));
                Ok(Val::Float(if op == BinOp::Sub { a - b } else { a * b }))
            }
            _ => Err(type_err(&l, &r)),
        },
        BinOp::Div | BinOp::FloorDiv | BinOp::Rem => {
            let (Some(a), Some(b)) = (l.as_f64(), r.as_f64()) else {
                return Err(type_err(&l, &r));
            };
            if b == 0.0 {
                return Err(VarError::at(
                    VarErrorKind::Arithmetic,
                    span,
                    "division by zero",
                ));
            }
            match (op, &l, &r) {
                (BinOp::Div, _, _) => Ok(Val::Float(a / b)),
                (BinOp::FloorDiv, Val::Int(x), Val::Int(y)) => {
                    let q = x.checked_div(*y).ok_or_else(overflow)?;
                    let q = if (x % y != 0) && ((*x < 0) != (*y < 0)) {
                        q - 1
                    } else {
                        q
                    };
                    Ok(Val::Int(q))
                }
                (BinOp::FloorDiv, _, _) => Ok(Val::Float((a / b).floor())),
                (_, Val::Int(x), Val::Int(y)) => {
                    let m = x.checked_rem(*y).ok_or_else(overflow)?;
                    Ok(Val::Int(if m != 0 && ((m < 0) != (*y < 0)) {
                        m + y
                    } else {
                        m
                    }))
                }
                _ => {
                    let m = a % b;
                    Ok(Val::Float(if m != 0.0 && ((m < 0.0) != (b < 0.0)) {
                        m + b
                    } else {
                        m
                    }))
                }
            }
        }
    }
}

/// `needle in haystack`: substring, list membership or object key.
pub(crate) fn contains(haystack: &Val, needle: &Val) -> Option<bool> {
    if let Some(h) = haystack.as_str() {
        return needle.as_str().map(|n| h.contains(n));
    }
    if let Some(items) = haystack.as_array() {
        return Some(items.iter().any(|i| equals(&Val::from_ref(i), needle)));
    }
    if let Some(map) = haystack.as_object() {
        return needle.as_str().map(|k| map.contains_key(k));
    }
    None
}

/// What a plain path finds: borrowed JSON, or a field of `loop`. Two words, so it comes back
/// in registers.
#[derive(Clone, Copy)]
enum Found<'a> {
    Json(&'a Value),
    Int(i64),
    Bool(bool),
}

impl<'a> Found<'a> {
    #[inline]
    fn into_val(self) -> Val<'a> {
        match self {
            Found::Json(v) => Val::from_ref(v),
            Found::Int(i) => Val::Int(i),
            Found::Bool(b) => Val::Bool(b),
        }
    }

    #[inline]
    fn truthy(self) -> bool {
        match self {
            Found::Json(v) => Val::from_ref(v).truthy(),
            Found::Int(i) => i != 0,
            Found::Bool(b) => b,
        }
    }

    #[inline]
    fn write_to(self, out: &mut String) {
        match self {
            Found::Json(v) => super::value::write_json_value(v, out),
            Found::Int(i) => out.push_str(itoa::Buffer::new().format(i)),
            Found::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        }
    }
}

/// Walks a plain path (see [`Path::plain`]) over borrowed JSON. `None` when a link is missing
/// or of the wrong type, the path starts at an unset scope or at a loop item that is not
/// borrowed JSON: the general walk then decides what that means (an error, `Undef` or `null`)
/// and says why.
#[inline(always)]
fn walk_plain<'a>(p: &'a Path, ctx: &Context<'a>, st: &State<'a>) -> Option<Found<'a>> {
    let mut cur: &'a Value = match &p.base {
        Base::Scope(scope) => match ctx.get(*scope) {
            Value::Null => return None,
            v => v,
        },
        Base::Local(depth, _) => st.frames.get(*depth as usize)?.json?,
        Base::LoopMeta(depth) => {
            let frame = st.frames.get(*depth as usize)?;
            let (index, len) = (frame.index, frame.len);
            return Some(match p.loop_field? {
                LoopField::Index => Found::Int(index as i64 + 1),
                LoopField::Index0 => Found::Int(index as i64),
                LoopField::First => Found::Bool(index == 0),
                LoopField::Last => Found::Bool(index + 1 == len),
                LoopField::Length => Found::Int(len as i64),
                LoopField::RevIndex => Found::Int((len - index) as i64),
            });
        }
        Base::Expr(_) => return None,
    };
    for seg in &p.segs {
        cur = match (cur, &seg.kind) {
            (Value::Object(m), SegKind::Key(k)) => get_key(m, k)?,
            (Value::Array(a), SegKind::Index(i)) => index(a, *i)?,
            _ => return None,
        };
    }
    Some(Found::Json(cur))
}

/// `m.get(key)`, faster for the small objects templates mostly read: a scan that compares
/// lengths and first bytes before calling `memcmp` beats the tree search's string ordering.
#[inline]
fn get_key<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    const SCAN_UP_TO: usize = 12;
    if m.len() > SCAN_UP_TO {
        return m.get(key);
    }
    let want = key.as_bytes();
    let first = *want.first()?;
    m.iter()
        .find(|(k, _)| {
            let k = k.as_bytes();
            k.len() == want.len() && k[0] == first && same_bytes(k, want)
        })
        .map(|(_, v)| v)
}

/// `a == b` for slices of the same length, without a call to `memcmp` for the short keys and
/// values templates compare: two overlapping word loads cover 4 to 16 bytes.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    fn word<const N: usize>(s: &[u8], at: usize) -> [u8; N] {
        s[at..at + N].try_into().unwrap_or([0; N])
    }
    match n {
        0..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=8 => {
            u32::from_ne_bytes(word(a, 0)) == u32::from_ne_bytes(word(b, 0))
                && u32::from_ne_bytes(word(a, n - 4)) == u32::from_ne_bytes(word(b, n - 4))
        }
        9..=16 => {
            u64::from_ne_bytes(word(a, 0)) == u64::from_ne_bytes(word(b, 0))
                && u64::from_ne_bytes(word(a, n - 8)) == u64::from_ne_bytes(word(b, n - 8))
        }
        _ => a == b,
    }
}

fn eval_path<'a>(
    p: &'a Path,
    ctx: &Context<'a>,
    st: &mut State<'a>,
    lenient: bool,
) -> Result<Val<'a>, VarError> {
    if p.plain
        && let Some(v) = walk_plain(p, ctx, st)
    {
        return Ok(v.into_val());
    }
    eval_path_general(p, ctx, st, lenient)
}

#[inline(never)]
fn eval_path_general<'a>(
    p: &'a Path,
    ctx: &Context<'a>,
    st: &mut State<'a>,
    lenient: bool,
) -> Result<Val<'a>, VarError> {
    let mut segs = p.segs.iter();
    let mut cur: Val<'a> = match &p.base {
        Base::Scope(scope) => {
            if *scope == Scope::Secrets {
                st.secret_reads += 1;
            }
            match ctx.get(*scope) {
                Value::Null => Val::Ref(&EMPTY_OBJECT),
                v => Val::from_ref(v),
            }
        }
        Base::Local(depth, name) => match st.frames.get(*depth as usize) {
            Some(frame) => match frame.json {
                Some(v) => Val::from_ref(v),
                None => frame.item.clone(),
            },
            None => {
                return Err(VarError::at(
                    VarErrorKind::Undefined,
                    p.base_span,
                    format!("loop variable `{name}` used outside its loop"),
                ));
            }
        },
        Base::LoopMeta(depth) => {
            let Some(frame) = st.frames.get(*depth as usize) else {
                return Err(VarError::at(
                    VarErrorKind::Undefined,
                    p.base_span,
                    "`loop` used outside a loop",
                ));
            };
            let Some(seg) = segs.next() else {
                return Err(VarError::at(
                    VarErrorKind::Type,
                    p.span,
                    "`loop` is not a value; use loop.index, loop.index0, loop.first, loop.last or loop.length",
                ));
            };
            loop_meta(frame, seg)?
        }
        Base::Expr(e) => eval(e, ctx, st, lenient)?,
    };
    // One `?.` anywhere in the chain makes a missing link anywhere in it give null, so
    // `outputs.dns?.id` reads as "the id, if dns ran".
    let optional_chain = p.optional_chain;
    for (i, seg) in segs.enumerate() {
        let seg_index = i + usize::from(matches!(p.base, Base::LoopMeta(_)));
        if matches!(cur, Val::Undef) {
            return Ok(if optional_chain {
                Val::Null
            } else {
                Val::Undef
            });
        }
        // Resolve a dynamic index first.
        let dyn_key;
        let kind: &SegKind = match &seg.kind {
            SegKind::Dyn(e) => {
                dyn_key = dyn_seg_kind(e, seg.span, ctx, st)?;
                &dyn_key
            }
            k => k,
        };
        let found: Option<Val<'a>> = match (&cur, kind) {
            (Val::Ref(Value::Object(m)), SegKind::Key(k)) => m.get(&**k).map(Val::from_ref),
            (Val::Ref(Value::Array(a)), SegKind::Index(i)) => index(a, *i).map(Val::from_ref),
            (Val::Owned(Value::Object(m)), SegKind::Key(k)) => {
                m.get(&**k).map(|v| Val::from_owned(v.clone()))
            }
            (Val::Owned(Value::Array(a)), SegKind::Index(i)) => {
                index(a, *i).map(|v| Val::from_owned(v.clone()))
            }
            (Val::Null, _) if optional_chain => return Ok(Val::Null),
            (Val::Null, _) if lenient => return Ok(Val::Undef),
            (other, kind) => {
                let what = match kind {
                    SegKind::Key(k) => format!("`.{k}`"),
                    SegKind::Index(i) => format!("`[{i}]`"),
                    SegKind::Dyn(_) => "an index".to_string(),
                };
                if optional_chain && matches!(other, Val::Null) {
                    return Ok(Val::Null);
                }
                return Err(VarError::at(
                    VarErrorKind::Type,
                    seg.span,
                    format!(
                        "cannot read {what} of `{}`: it is a {}",
                        path_text(p, seg_index),
                        other.type_name()
                    ),
                ));
            }
        };
        cur = match found {
            Some(v) => v,
            None if optional_chain => return Ok(Val::Null),
            None if lenient => return Ok(Val::Undef),
            None => return Err(missing(p, seg_index, kind, &cur, seg.span)),
        };
    }
    if matches!(p.base, Base::Scope(Scope::Secrets)) && st.tainted.is_some() {
        let text = cur.to_text().into_owned();
        st.taint(&text);
    }
    Ok(cur)
}

/// `loop.<seg>` in the loop of `frame`: its index, index0, first, last, length or revindex.
fn loop_meta<'a>(frame: &Frame<'a>, seg: &Seg) -> Result<Val<'a>, VarError> {
    let key = match &seg.kind {
        SegKind::Key(k) => &**k,
        _ => "",
    };
    Ok(match key {
        "index" => Val::Int(frame.index as i64 + 1),
        "index0" => Val::Int(frame.index as i64),
        "first" => Val::Bool(frame.index == 0),
        "last" => Val::Bool(frame.index + 1 == frame.len),
        "length" => Val::Int(frame.len as i64),
        "revindex" => Val::Int((frame.len - frame.index) as i64),
        other => {
            return Err(VarError::at(
                VarErrorKind::Undefined,
                seg.span,
                format!(
                    "`loop` has no `{other}`; it has index, index0, first, last, length, revindex"
                ),
            ));
        }
    })
}

/// A dynamic index (`x[expr]`) evaluated into a key or an index.
fn dyn_seg_kind<'a>(
    e: &'a Expr,
    span: Span,
    ctx: &Context<'a>,
    st: &mut State<'a>,
) -> Result<SegKind, VarError> {
    match eval(e, ctx, st, false)? {
        Val::Int(i) => Ok(SegKind::Index(i)),
        Val::Str(s) => Ok(SegKind::Key(s.into())),
        Val::String(s) => Ok(SegKind::Key(s.as_str().into())),
        other => Err(VarError::at(
            VarErrorKind::Type,
            span,
            format!(
                "an index must be an int or a string, not a {}",
                other.type_name()
            ),
        )),
    }
}

static EMPTY_OBJECT: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::Object(Map::new()));

fn index(items: &[Value], i: i64) -> Option<&Value> {
    let i = if i < 0 { items.len() as i64 + i } else { i };
    usize::try_from(i).ok().and_then(|i| items.get(i))
}

fn missing(p: &Path, seg_index: usize, kind: &SegKind, cur: &Val, span: Span) -> VarError {
    let parent = path_text(p, seg_index);
    let full = path_text(p, seg_index + 1);
    match (kind, cur) {
        (SegKind::Key(k), _) => {
            let keys: Vec<&str> = cur
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let listing = if keys.is_empty() {
                "it has no keys".to_string()
            } else if keys.len() > 12 {
                format!("it has: {}, … ({} keys)", keys[..12].join(", "), keys.len())
            } else {
                format!("it has: {}", keys.join(", "))
            };
            let mut err = VarError::at(
                VarErrorKind::Undefined,
                span,
                format!("`{full}` is undefined: `{parent}` has no key `{k}`; {listing}"),
            );
            if let Some(s) = super::error::did_you_mean(k, keys.iter().copied()) {
                err = err.with_hint(format!("did you mean `{parent}.{s}`?"));
            } else {
                err = err.with_hint(format!("guard it with `{full} | default(...)` or `?.`"));
            }
            err
        }
        (SegKind::Index(i), _) => VarError::at(
            VarErrorKind::Undefined,
            span,
            format!(
                "`{full}` is undefined: index {i} is out of range for `{parent}` (length {})",
                cur.as_array().map(Vec::len).unwrap_or(0)
            ),
        ),
        (SegKind::Dyn(_), _) => VarError::at(
            VarErrorKind::Undefined,
            span,
            format!("`{full}` is undefined"),
        ),
    }
}

/// The path as written, up to `upto` segments.
pub(crate) fn path_text(p: &Path, upto: usize) -> String {
    let mut s = match &p.base {
        Base::Scope(scope) => scope.name().to_string(),
        Base::Local(_, name) => name.to_string(),
        Base::LoopMeta(_) => "loop".to_string(),
        Base::Expr(_) => "(…)".to_string(),
    };
    for seg in p.segs.iter().take(upto) {
        if seg.optional {
            s.push('?');
        }
        match &seg.kind {
            SegKind::Key(k) if k.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                s.push('.');
                s.push_str(k);
            }
            SegKind::Key(k) => s.push_str(&format!("['{k}']")),
            SegKind::Index(i) => s.push_str(&format!("[{i}]")),
            SegKind::Dyn(_) => s.push_str("[…]"),
        }
    }
    s
}

/// Where in a URL a piece of a URL template lands, judged from the text before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlPart {
    /// Nothing before it: the piece is the start of the URL (a whole URL from a value).
    Start,
    /// Scheme, user info, host or port.
    Authority,
    /// The path.
    Path,
    /// The query or the fragment.
    Query,
}

fn url_part(before: &str) -> UrlPart {
    if before.is_empty() {
        return UrlPart::Start;
    }
    let rest = before.find("://").map_or(before, |i| &before[i + 3..]);
    match rest.find(['/', '?', '#']) {
        None => UrlPart::Authority,
        Some(i) if rest[i..].contains(['?', '#']) => UrlPart::Query,
        Some(_) => UrlPart::Path,
    }
}

/// Whether a piece of a template reads a value that comes from the request or from an
/// upstream (fields, computed values, the user, the request, outputs, a result) rather than
/// from the operator or the catalog author (env, system, metadata, secrets).
fn reads_request_values(node: &Node) -> bool {
    let mut refs = Vec::new();
    super::check::collect_nodes(std::slice::from_ref(node), &mut refs);
    refs.iter().any(|r| {
        !matches!(
            r.scope,
            Scope::Env | Scope::System | Scope::Metadata | Scope::Secrets
        )
    })
}

/// Renders the nodes of a URL template (see [`super::Engine::compile_url`]): as
/// [`render_nodes`], except that each interpolation or loop reading a request value is kept
/// to its place in the URL. In the path and the query it is percent-encoded (one segment, one
/// query value; not again when it is a call to `url_encode`) and may not be `.` or `..`; in the
/// host it may hold only letters, digits, `-`, `.` and `_`; at the very start (the whole URL
/// from a value) it is left alone.
pub(crate) fn render_url_nodes<'a>(
    nodes: &'a [Node],
    ctx: &Context<'a>,
    st: &mut State<'a>,
    out: &mut String,
    out_start: usize,
) -> Result<(), VarError> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::If(branches, otherwise) => {
                let mut body: &[Node] = otherwise;
                for (cond, b) in branches.iter() {
                    st.tick_at(|| cond.span())?;
                    if eval_truthy(cond, ctx, st)? {
                        body = b;
                        break;
                    }
                }
                render_url_nodes(body, ctx, st, out, out_start)?;
            }
            Node::Interp(_) | Node::For(_) => {
                let start = out.len();
                render_node(node, ctx, st, out, out_start)?;
                if reads_request_values(node) {
                    confine_to_url_part(node, st, out, out_start, start)?;
                }
            }
        }
        if out.len() - out_start > st.max_output {
            return Err(output_too_large(st.max_output));
        }
    }
    Ok(())
}

fn confine_to_url_part(
    node: &Node,
    st: &mut State<'_>,
    out: &mut String,
    out_start: usize,
    start: usize,
) -> Result<(), VarError> {
    let span = match node {
        Node::Interp(e) => e.span(),
        Node::For(f) => f.span,
        _ => Span::default(),
    };
    let piece = &out[start..];
    let part = url_part(&out[out_start..start]);
    match part {
        UrlPart::Start => Ok(()),
        UrlPart::Authority => {
            if piece
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                Ok(())
            } else {
                Err(VarError::at(
                    VarErrorKind::UnsafeUrl,
                    span,
                    "a value from the request in the host of a URL may hold only letters, \
                     digits, `-`, `.` and `_`",
                )
                .with_hint("choose the host from a select field with fixed options"))
            }
        }
        UrlPart::Path | UrlPart::Query => {
            if part == UrlPart::Path && !piece.is_empty() && piece.bytes().all(|b| b == b'.') {
                return Err(VarError::at(
                    VarErrorKind::UnsafeUrl,
                    span,
                    "a value from the request cannot be `.` or `..` in the path of a URL",
                ));
            }
            let encoded = matches!(node, Node::Interp(Expr::Call(c))
                if matches!(c.func, Func::Builtin(functions::Builtin::UrlEncode)));
            if encoded || piece.bytes().all(is_unreserved) {
                return Ok(());
            }
            let mut text = String::with_capacity(piece.len() * 3);
            for b in piece.bytes() {
                if is_unreserved(b) {
                    text.push(char::from(b));
                } else {
                    text.push_str(&format!("%{b:02X}"));
                }
            }
            let tainted = st
                .tainted
                .as_ref()
                .is_some_and(|t| t.iter().any(|s| s == piece));
            out.truncate(start);
            out.push_str(&text);
            if tainted {
                st.taint(&text);
            }
            Ok(())
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}
