//! The variable engine: `${{ }}` templates and bare expressions, compiled once at catalog load
//! and rendered for every action of every request.
//!
//! Templates interpolate with `${{ expr }}`, branch and loop with `{% if %}` / `{% for %}`
//! blocks, and escape with `$${{`. Expressions read nine scopes (`user`, `metadata`, `request`,
//! `system`, `env`, `fields`, `outputs`, `computed`, `secrets`; plus `result` inside an action's
//! `outputs`), are strictly typed, and call built-in or embedder functions, also as filters
//! (`x | f(a)` is `f(x, a)`). The full language is in `docs/variables.md`.
//!
//! ```
//! use pao_core::vars::{Context, Engine, Scope};
//! use serde_json::json;
//!
//! let engine = Engine::new();
//! let tpl = engine.compile("db-${{ fields.name | slugify }}-${{ fields.env }}").unwrap();
//! let fields = json!({ "name": "Billing DB", "env": "prod" });
//! let ctx = Context::new().with(Scope::Fields, &fields);
//! assert_eq!(tpl.render(&ctx).unwrap(), "db-billing-db-prod");
//!
//! let cond = engine.compile_expression("fields.env == 'prod' && length(fields.name) > 3").unwrap();
//! assert!(cond.eval_bool(&ctx).unwrap());
//! ```
//!
//! Rendering borrows from the context: looking up paths, comparing and writing strings
//! allocates nothing but the output buffer.

mod ast;
mod check;
mod error;
mod eval;
mod fold;
mod functions;
mod lexer;
mod parser;
mod value;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value};

pub use ast::Scope;
pub use check::{Declarations, Reference};
pub use error::{Span, VarError, VarErrorKind, did_you_mean, edit_distance};
pub use eval::Context;
pub use functions::{Builtin, CustomFn, Functions, parse_duration_ms};

use ast::{Expr, Node};
use eval::State;

/// Bounds on one compilation or evaluation, so a hostile template cannot hang or exhaust a
/// worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Operations one render or evaluation may perform.
    pub fuel: u64,
    /// Bytes one render may produce.
    pub max_output_bytes: usize,
    /// Loop iterations one render may run, over all loops.
    pub max_loop_iterations: u64,
    /// Nesting depth of blocks and loops (at most 16).
    pub max_nesting: usize,
    /// Nesting depth of expressions (parentheses, operators).
    pub max_expression_depth: usize,
    /// Size of a template's source.
    pub max_template_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 1_000_000,
            max_output_bytes: 1 << 20,
            max_loop_iterations: 10_000,
            max_nesting: 16,
            max_expression_depth: 64,
            max_template_bytes: 256 << 10,
        }
    }
}

/// Compiles templates and expressions. Holds the function registry and the limits; cheap to
/// clone, shareable across threads.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    functions: Functions,
    limits: Limits,
}

impl Engine {
    /// An engine with the built-in functions and default limits.
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Replaces the limits used by templates compiled from now on.
    pub fn with_limits(mut self, limits: Limits) -> Engine {
        self.limits = limits;
        self.limits.max_nesting = self.limits.max_nesting.min(eval::MAX_LOOP_DEPTH);
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The function registry.
    pub fn functions(&self) -> &Functions {
        &self.functions
    }

    /// Registers an embedder function with its arity, checked at compile time.
    ///
    /// ```
    /// use pao_core::vars::{Context, Engine};
    /// use serde_json::{Value, json};
    ///
    /// let mut engine = Engine::new();
    /// engine
    ///     .register_function("cost_center", 1, 1, |args| {
    ///         Ok(json!(format!("cc-{}", args[0].as_str().unwrap_or("none"))))
    ///     })
    ///     .unwrap();
    /// let tpl = engine.compile("${{ 'platform' | cost_center }}").unwrap();
    /// assert_eq!(tpl.render(&Context::new()).unwrap(), "cc-platform");
    /// assert!(engine.compile("${{ cost_center() }}").is_err());
    /// ```
    pub fn register_function<F>(
        &mut self,
        name: &str,
        min_args: usize,
        max_args: usize,
        f: F,
    ) -> Result<(), VarError>
    where
        F: Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.functions.register(name, min_args, max_args, f)
    }

    fn check_size(&self, source: &str) -> Result<(), VarError> {
        if source.len() > self.limits.max_template_bytes {
            return Err(VarError::new(
                VarErrorKind::Limit,
                format!(
                    "template is {} bytes; the limit is {}",
                    source.len(),
                    self.limits.max_template_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Compiles a template: text with `${{ }}` interpolations and `{% %}` blocks.
    pub fn compile(&self, source: &str) -> Result<Template, VarError> {
        let src: Arc<str> = Arc::from(source);
        self.check_size(source).map_err(|e| e.with_source(&src))?;
        let mut parser = parser::Parser::new(source, &self.functions, &self.limits);
        let nodes = parser.parse_template().map_err(|e| e.with_source(&src))?;
        let text_len: usize = nodes
            .iter()
            .map(|n| match n {
                Node::Text(t) => t.len(),
                _ => 16,
            })
            .sum();
        Ok(Template {
            single: matches!(nodes.as_slice(), [Node::Interp(_)]),
            uses_secrets: parser.uses_secrets,
            loop_depth: parser.loop_depth,
            size_hint: AtomicUsize::new(text_len + text_len / 4),
            source: src,
            nodes,
            limits: self.limits.clone(),
            url: false,
        })
    }

    /// Compiles a URL template: rendered like [`Engine::compile`]'s, except that a piece that
    /// reads a value from the request or an upstream (`fields`, `computed`, `user`, `request`,
    /// `outputs`, `result`) cannot change the shape of the URL. In the path or the query it is
    /// percent-encoded as one segment or value (unless it is a call to `url_encode`) and may
    /// not be `.` or `..`; in the host it may hold only letters, digits, `-`, `.` and `_`; at
    /// the very start (the whole URL from one value) it is left alone. Values of `env`,
    /// `system`, `metadata` and `secrets` are written as they are.
    ///
    /// ```
    /// use pao_core::vars::{Context, Engine, Scope};
    /// use serde_json::json;
    ///
    /// let engine = Engine::new();
    /// let tpl = engine
    ///     .compile_url("${{ env.API }}/clusters/${{ fields.cluster }}/ns?q=${{ fields.q }}")
    ///     .unwrap();
    /// let env = json!({ "API": "https://k8s.example.com/v1" });
    /// let fields = json!({ "cluster": "../../admin", "q": "a&b" });
    /// let ctx = Context::new().with(Scope::Env, &env).with(Scope::Fields, &fields);
    /// assert_eq!(
    ///     tpl.render(&ctx).unwrap(),
    ///     "https://k8s.example.com/v1/clusters/..%2F..%2Fadmin/ns?q=a%26b"
    /// );
    /// let fields = json!({ "cluster": "..", "q": "" });
    /// let ctx = Context::new().with(Scope::Env, &env).with(Scope::Fields, &fields);
    /// assert!(tpl.render(&ctx).is_err());
    /// ```
    pub fn compile_url(&self, source: &str) -> Result<Template, VarError> {
        let mut t = self.compile(source)?;
        t.url = true;
        Ok(t)
    }

    /// Compiles a bare expression, as written in `when:` and `*_when:`.
    pub fn compile_expression(&self, source: &str) -> Result<Expression, VarError> {
        let src: Arc<str> = Arc::from(source);
        self.check_size(source).map_err(|e| e.with_source(&src))?;
        let mut parser = parser::Parser::new(source, &self.functions, &self.limits);
        let expr = parser.parse_bare().map_err(|e| e.with_source(&src))?;
        Ok(Expression {
            source: src,
            expr,
            uses_secrets: parser.uses_secrets,
            limits: self.limits.clone(),
        })
    }

    /// Compiles every templated string inside a JSON value (an action's `config`). Strings
    /// without `${{`, `$${{` or `{%` stay literal. Errors carry the JSON pointer of the string.
    pub fn compile_value(&self, value: &Value) -> Result<ValueTemplate, Vec<LocatedVarError>> {
        self.compile_value_with(value, false)
    }

    /// [`Engine::compile_value`] for an action's `config`: a string under a key named `url`
    /// or ending in `_url` is a URL template ([`Engine::compile_url`]).
    pub fn compile_config(&self, value: &Value) -> Result<ValueTemplate, Vec<LocatedVarError>> {
        self.compile_value_with(value, true)
    }

    fn compile_value_with(
        &self,
        value: &Value,
        urls: bool,
    ) -> Result<ValueTemplate, Vec<LocatedVarError>> {
        let mut errors = Vec::new();
        let t = self.compile_value_at(value, &mut String::new(), &mut errors, urls);
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    fn compile_value_at(
        &self,
        value: &Value,
        pointer: &mut String,
        errors: &mut Vec<LocatedVarError>,
        urls: bool,
    ) -> ValueTemplate {
        let url_key = |pointer: &str| {
            let key = pointer.rsplit('/').next().unwrap_or("");
            key == "url" || key.ends_with("_url")
        };
        match value {
            Value::String(s) if is_templated(s) => match if urls && url_key(pointer) {
                self.compile_url(s)
            } else {
                self.compile(s)
            } {
                Ok(t) => ValueTemplate::Template(t),
                Err(error) => {
                    errors.push(LocatedVarError {
                        pointer: pointer.clone(),
                        error,
                    });
                    ValueTemplate::Literal(value.clone())
                }
            },
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = pointer.len();
                    pointer.push_str(&format!("/{i}"));
                    out.push(self.compile_value_at(item, pointer, errors, urls));
                    pointer.truncate(len);
                }
                if out.iter().all(|t| matches!(t, ValueTemplate::Literal(_))) {
                    ValueTemplate::Literal(value.clone())
                } else {
                    ValueTemplate::Array(out)
                }
            }
            Value::Object(map) => {
                let mut out = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    out.push((k.clone(), self.compile_value_at(v, pointer, errors, urls)));
                    pointer.truncate(len);
                }
                if out
                    .iter()
                    .all(|(_, t)| matches!(t, ValueTemplate::Literal(_)))
                {
                    ValueTemplate::Literal(value.clone())
                } else {
                    ValueTemplate::Object(out)
                }
            }
            other => ValueTemplate::Literal(other.clone()),
        }
    }
}

/// Whether a string contains template syntax and must be compiled.
pub fn is_templated(s: &str) -> bool {
    s.contains("${{") || s.contains("{%")
}

/// A compiled template.
#[derive(Debug)]
pub struct Template {
    source: Arc<str>,
    nodes: Vec<Node>,
    single: bool,
    uses_secrets: bool,
    /// How deep its loops nest.
    loop_depth: usize,
    /// Capacity for a new output buffer: the longest output so far, so a template renders
    /// into one allocation from its second render on.
    size_hint: AtomicUsize,
    limits: Limits,
    /// Compiled by [`Engine::compile_url`].
    url: bool,
}

/// A rendered value and the secret values that went into it, for redaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The result.
    pub value: Value,
    /// Secret values read while rendering, and every interpolation derived from one.
    pub secrets: Vec<String>,
}

impl Template {
    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template is exactly one `${{ expr }}`, so it keeps the expression's type.
    pub fn is_single_expression(&self) -> bool {
        self.single
    }

    /// Whether the template reads the `secrets` scope.
    pub fn uses_secrets(&self) -> bool {
        self.uses_secrets
    }

    /// Whether it is a URL template ([`Engine::compile_url`]).
    pub fn is_url(&self) -> bool {
        self.url
    }

    /// Renders to a new string.
    pub fn render(&self, ctx: &Context<'_>) -> Result<String, VarError> {
        let mut out = String::with_capacity(self.size_hint.load(Ordering::Relaxed));
        self.render_to(ctx, &mut out)?;
        self.learn_size(out.len());
        Ok(out)
    }

    fn learn_size(&self, len: usize) {
        // Bounded so one huge output cannot make every later render reserve as much.
        if len > self.size_hint.load(Ordering::Relaxed) && len <= 64 << 10 {
            self.size_hint.store(len, Ordering::Relaxed);
        }
    }

    /// Appends the rendered text to `out`.
    pub fn render_to(&self, ctx: &Context<'_>, out: &mut String) -> Result<(), VarError> {
        let mut st = State::new(&self.limits, false, self.loop_depth);
        self.render_nodes(ctx, &mut st, out)
    }

    fn render_nodes<'a>(
        &'a self,
        ctx: &Context<'a>,
        st: &mut State<'a>,
        out: &mut String,
    ) -> Result<(), VarError> {
        let start = out.len();
        if self.url {
            eval::render_url_nodes(&self.nodes, ctx, st, out, start)
        } else {
            eval::render_nodes(&self.nodes, ctx, st, out, start)
        }
        .map_err(|e| e.with_source(&self.source))
    }

    /// Renders to a JSON value: the expression's own type when the template is exactly one
    /// `${{ expr }}`, a string otherwise.
    pub fn render_value(&self, ctx: &Context<'_>) -> Result<Value, VarError> {
        let mut st = State::new(&self.limits, false, self.loop_depth);
        self.render_value_with(ctx, &mut st)
    }

    fn render_value_with<'a>(
        &'a self,
        ctx: &Context<'a>,
        st: &mut State<'a>,
    ) -> Result<Value, VarError> {
        if let [Node::Interp(expr)] = self.nodes.as_slice() {
            let reads = st.secret_reads;
            let v = eval::eval(expr, ctx, st, false).map_err(|e| e.with_source(&self.source))?;
            // The same bound `render` puts on the text.
            if v.as_str().is_some_and(|s| s.len() > st.max_output) {
                return Err(VarError::at(
                    VarErrorKind::Limit,
                    expr.span(),
                    format!("output larger than {} bytes", st.max_output),
                )
                .with_hint("raise `Limits::max_output_bytes` or shorten the template")
                .with_source(&self.source));
            }
            if let Some(t) = &mut st.tainted
                && st.secret_reads != reads
                && let Some(s) = v.as_str()
                && !s.is_empty()
                && !t.iter().any(|x| x == s)
            {
                t.push(s.to_owned());
            }
            return Ok(v.into_value());
        }
        let mut out = String::with_capacity(self.size_hint.load(Ordering::Relaxed));
        self.render_nodes(ctx, st, &mut out)?;
        self.learn_size(out.len());
        Ok(Value::String(out))
    }

    /// Renders to a value and reports the secret values that went into it.
    pub fn render_tracked(&self, ctx: &Context<'_>) -> Result<Rendered, VarError> {
        let mut st = State::new(&self.limits, self.uses_secrets, self.loop_depth);
        let value = self.render_value_with(ctx, &mut st)?;
        Ok(Rendered {
            value,
            secrets: st.tainted.unwrap_or_default(),
        })
    }

    /// Every path the template reads.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        check::collect_nodes(&self.nodes, &mut out);
        out
    }

    /// Static checks against what the item declares; errors carry line and column.
    pub fn check(&self, decl: &Declarations) -> Vec<VarError> {
        check::check(&self.references(), decl)
            .into_iter()
            .map(|e| e.with_source(&self.source))
            .collect()
    }
}

/// A compiled bare expression.
#[derive(Debug)]
pub struct Expression {
    source: Arc<str>,
    expr: Expr,
    uses_secrets: bool,
    limits: Limits,
}

impl Expression {
    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to a JSON value.
    pub fn eval(&self, ctx: &Context<'_>) -> Result<Value, VarError> {
        let mut st = State::new(&self.limits, false, 0);
        eval::eval(&self.expr, ctx, &mut st, false)
            .map(|v| v.into_value())
            .map_err(|e| e.with_source(&self.source))
    }

    /// Evaluates as a condition: `null`, `false`, `0`, `""`, `[]` and `{}` are false.
    pub fn eval_bool(&self, ctx: &Context<'_>) -> Result<bool, VarError> {
        let mut st = State::new(&self.limits, false, 0);
        eval::eval_truthy(&self.expr, ctx, &mut st).map_err(|e| e.with_source(&self.source))
    }

    /// Whether the expression reads the `secrets` scope.
    pub fn uses_secrets(&self) -> bool {
        self.uses_secrets
    }

    /// Every path the expression reads.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        check::collect(&self.expr, false, &mut out);
        out
    }

    /// Static checks against what the item declares.
    pub fn check(&self, decl: &Declarations) -> Vec<VarError> {
        check::check(&self.references(), decl)
            .into_iter()
            .map(|e| e.with_source(&self.source))
            .collect()
    }
}

/// An error inside a compiled JSON value, with the JSON pointer of the string it is in.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatedVarError {
    /// JSON pointer of the templated string inside the value (`""` for the root).
    pub pointer: String,
    /// The error.
    pub error: VarError,
}

impl std::fmt::Display for LocatedVarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at `{}`: {}", self.pointer, self.error)
    }
}

/// A JSON value whose templated strings are compiled.
#[derive(Debug)]
pub enum ValueTemplate {
    /// No templates inside.
    Literal(Value),
    /// One templated string.
    Template(Template),
    /// An array with templates inside.
    Array(Vec<ValueTemplate>),
    /// An object with templates inside.
    Object(Vec<(String, ValueTemplate)>),
}

impl ValueTemplate {
    /// Renders the whole value.
    pub fn render(&self, ctx: &Context<'_>) -> Result<Value, LocatedVarError> {
        self.render_at(ctx, &mut String::new(), &mut None)
    }

    /// Renders the whole value and reports the secret values that went into it.
    pub fn render_tracked(&self, ctx: &Context<'_>) -> Result<Rendered, LocatedVarError> {
        let mut secrets = Some(Vec::new());
        let value = self.render_at(ctx, &mut String::new(), &mut secrets)?;
        Ok(Rendered {
            value,
            secrets: secrets.unwrap_or_default(),
        })
    }

    fn render_at(
        &self,
        ctx: &Context<'_>,
        pointer: &mut String,
        secrets: &mut Option<Vec<String>>,
    ) -> Result<Value, LocatedVarError> {
        let locate = |pointer: &String, error: VarError| LocatedVarError {
            pointer: pointer.clone(),
            error,
        };
        match self {
            ValueTemplate::Literal(v) => Ok(v.clone()),
            ValueTemplate::Template(t) => match secrets {
                Some(list) => {
                    let r = t.render_tracked(ctx).map_err(|e| locate(pointer, e))?;
                    for s in r.secrets {
                        if !list.contains(&s) {
                            list.push(s);
                        }
                    }
                    Ok(r.value)
                }
                None => t.render_value(ctx).map_err(|e| locate(pointer, e)),
            },
            ValueTemplate::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = pointer.len();
                    pointer.push_str(&format!("/{i}"));
                    out.push(item.render_at(ctx, pointer, secrets)?);
                    pointer.truncate(len);
                }
                Ok(Value::Array(out))
            }
            ValueTemplate::Object(entries) => {
                let mut out = Map::new();
                for (k, item) in entries {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    out.insert(k.clone(), item.render_at(ctx, pointer, secrets)?);
                    pointer.truncate(len);
                }
                Ok(Value::Object(out))
            }
        }
    }

    /// Calls `f` on every compiled template inside, with its JSON pointer.
    pub fn for_each_template(&self, f: &mut dyn FnMut(&str, &Template)) {
        fn walk(t: &ValueTemplate, pointer: &mut String, f: &mut dyn FnMut(&str, &Template)) {
            match t {
                ValueTemplate::Literal(_) => {}
                ValueTemplate::Template(t) => f(pointer, t),
                ValueTemplate::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let len = pointer.len();
                        pointer.push_str(&format!("/{i}"));
                        walk(item, pointer, f);
                        pointer.truncate(len);
                    }
                }
                ValueTemplate::Object(entries) => {
                    for (k, item) in entries {
                        let len = pointer.len();
                        pointer.push('/');
                        pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                        walk(item, pointer, f);
                        pointer.truncate(len);
                    }
                }
            }
        }
        walk(self, &mut String::new(), f);
    }
}

#[cfg(test)]
mod tests;
