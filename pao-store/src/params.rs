//! Parameters of a statement whose SQL is put together at run time: [`Params::push`] binds a
//! value and returns its placeholder (`$1`, `$2`, …), so numbering never goes wrong.

use sqlx::any::AnyArguments;
use sqlx::query::Query;

/// A value to bind.
#[derive(Clone)]
pub(crate) enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
}

/// The parameters of a statement being written.
#[derive(Default, Clone)]
pub(crate) struct Params(Vec<Bind>);

impl Params {
    /// Binds `b`; returns its placeholder.
    pub(crate) fn push(&mut self, b: Bind) -> String {
        self.0.push(b);
        format!("${}", self.0.len())
    }

    /// Binds a text.
    pub(crate) fn text(&mut self, s: &str) -> String {
        self.push(Bind::Text(s.to_string()))
    }

    /// Binds an integer.
    pub(crate) fn int(&mut self, i: i64) -> String {
        self.push(Bind::Int(i))
    }

    /// `q` with every parameter bound, in order.
    pub(crate) fn bind_to<'q>(
        &self,
        mut q: Query<'q, sqlx::Any, AnyArguments>,
    ) -> Query<'q, sqlx::Any, AnyArguments> {
        for b in &self.0 {
            q = match b {
                Bind::Text(s) => q.bind(s.clone()),
                Bind::OptText(s) => q.bind(s.clone()),
                Bind::Int(i) => q.bind(*i),
                Bind::OptInt(i) => q.bind(*i),
            };
        }
        q
    }
}
