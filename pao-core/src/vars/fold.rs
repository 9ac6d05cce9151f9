//! Constant folding: an operator, list or object literal whose operands are all constants is
//! evaluated once when it is compiled, so `fields.env in ['prod', 'staging']` does not build
//! its list at every evaluation and `fields.disk_gb > 1024 * 4` compares with one number.
//!
//! A folded node keeps the fuel its evaluation cost, and charges it whenever it is evaluated,
//! so that limits hold exactly as for the unfolded tree. A constant expression that fails
//! (`1 / 0`, `'a' - 1`) is left as it is: it fails when evaluated, with the same error.

use serde_json::Value;

use super::Limits;
use super::ast::{Const, Expr, Folded};
use super::eval::{Context, State, eval};
use super::value::Val;

/// Whether `e` is a constant: a literal or an already folded node.
fn is_constant(e: &Expr) -> bool {
    matches!(e, Expr::Const(..) | Expr::Folded(..))
}

/// Whether every operand of `e` is a constant, and `e` is an operator or a literal whose
/// value depends on nothing else (function calls and paths are never folded).
fn foldable(e: &Expr) -> bool {
    match e {
        Expr::Unary(_, inner, _) => is_constant(inner),
        Expr::Binary(_, b, _) | Expr::And(b) | Expr::Or(b) => {
            is_constant(&b.0) && is_constant(&b.1)
        }
        Expr::Cond(b) => is_constant(&b.0) && is_constant(&b.1) && is_constant(&b.2),
        Expr::List(items, _) => items.iter().all(is_constant),
        Expr::Object(entries, _) => entries.iter().all(|(_, v)| is_constant(v)),
        Expr::Const(..) | Expr::Folded(..) | Expr::Path(_) | Expr::Call(_) => false,
    }
}

/// `e`, folded into one constant when all its operands are constants and it evaluates
/// without error; otherwise `e` unchanged.
pub(crate) fn fold(e: Expr, limits: &Limits) -> Expr {
    #[cfg(test)]
    if NO_FOLD.with(|f| f.get()) {
        return e;
    }
    if !foldable(&e) {
        return e;
    }
    let span = e.span();
    let mut st = State::new(limits, false, 0);
    let value = match eval(&e, &Context::new(), &mut st, false) {
        Ok(Val::Undef) | Err(_) => return e,
        Ok(v) => v.into_value(),
    };
    let fuel = limits.fuel - st.fuel_left();
    match value {
        // A scalar that a literal can hold becomes one, when it costs what a literal costs.
        Value::Null if fuel == 1 => Expr::Const(Const::Null, span),
        Value::Bool(b) if fuel == 1 => Expr::Const(Const::Bool(b), span),
        value => Expr::Folded(Box::new(Folded { value, fuel }), span),
    }
}

#[cfg(test)]
thread_local! {
    /// Tests compile the same source with and without folding, to compare.
    pub(crate) static NO_FOLD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
