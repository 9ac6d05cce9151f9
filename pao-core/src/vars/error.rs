//! Errors of the variable engine: one type for compile-time, static-check and render-time
//! problems, carrying a kind, the span inside the template and, once attached, the template
//! source so the error can be printed with a caret like rustc does.

use std::fmt;
use std::sync::Arc;

/// A byte range inside a template's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    pub(crate) fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// 1-based line and column (in characters) of the span's start inside `source`.
    pub fn line_col(&self, source: &str) -> (usize, usize) {
        let start = (self.start as usize).min(source.len());
        let before = &source[..floor_char_boundary(source, start)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarErrorKind {
    /// The template or expression does not parse.
    Syntax,
    /// A path starts with something that is not one of the scopes.
    UnknownScope,
    /// A function that is neither built in nor registered.
    UnknownFunction,
    /// A function called with the wrong number or kind of arguments.
    BadArguments,
    /// A path names a field, computed value, action or env variable that is not declared.
    Undeclared,
    /// An action's output is read where that action is not guaranteed to have run.
    OutputNotAvailable,
    /// An operation on values of the wrong type.
    Type,
    /// A path that does not exist in the context at render time.
    Undefined,
    /// Division or modulo by zero, integer overflow.
    Arithmetic,
    /// A function failed (bad regex, bad base64, bad date...).
    Function,
    /// The fuel, output, loop or nesting limit was exceeded.
    Limit,
    /// A value from the request would change the shape of a URL (its host, or path segments,
    /// query or fragment beyond its own place).
    UnsafeUrl,
}

impl VarErrorKind {
    /// A short, stable name for the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            VarErrorKind::Syntax => "syntax",
            VarErrorKind::UnknownScope => "unknown-scope",
            VarErrorKind::UnknownFunction => "unknown-function",
            VarErrorKind::BadArguments => "bad-arguments",
            VarErrorKind::Undeclared => "undeclared",
            VarErrorKind::OutputNotAvailable => "output-not-available",
            VarErrorKind::Type => "type",
            VarErrorKind::Undefined => "undefined",
            VarErrorKind::Arithmetic => "arithmetic",
            VarErrorKind::Function => "function",
            VarErrorKind::Limit => "limit",
            VarErrorKind::UnsafeUrl => "unsafe-url",
        }
    }
}

/// An error from compiling, checking or rendering a template or expression.
///
/// The details live behind one pointer so that `Result<Val, VarError>`, which every step of
/// evaluation returns, stays as small as the value.
#[derive(Clone, PartialEq)]
pub struct VarError(Box<Details>);

#[derive(Clone, PartialEq)]
struct Details {
    kind: VarErrorKind,
    message: String,
    span: Option<Span>,
    hint: Option<String>,
    source: Option<Arc<str>>,
}

impl fmt::Debug for VarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VarError")
            .field("kind", &self.0.kind)
            .field("message", &self.0.message)
            .field("span", &self.0.span)
            .field("hint", &self.0.hint)
            .field("source", &self.0.source)
            .finish()
    }
}

impl VarError {
    #[cold]
    pub(crate) fn new(kind: VarErrorKind, message: impl Into<String>) -> VarError {
        VarError(Box::new(Details {
            kind,
            message: message.into(),
            span: None,
            hint: None,
            source: None,
        }))
    }

    #[cold]
    pub(crate) fn at(kind: VarErrorKind, span: Span, message: impl Into<String>) -> VarError {
        VarError::new(kind, message).with_span(span)
    }

    pub(crate) fn with_span(mut self, span: Span) -> VarError {
        if self.0.span.is_none() {
            self.0.span = Some(span);
        }
        self
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> VarError {
        self.0.hint = Some(hint.into());
        self
    }

    pub(crate) fn with_source(mut self, source: &Arc<str>) -> VarError {
        if self.0.source.is_none() {
            self.0.source = Some(source.clone());
        }
        self
    }

    /// The kind of error.
    pub fn kind(&self) -> VarErrorKind {
        self.0.kind
    }

    /// The message, without location.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// How to fix it, when known.
    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }

    /// Where in the template the problem is.
    pub fn span(&self) -> Option<Span> {
        self.0.span
    }

    /// 1-based line and column inside the template, when the error has a location.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        match (&self.0.source, self.0.span) {
            (Some(src), Some(span)) => Some(span.line_col(src)),
            _ => None,
        }
    }

    /// The template source line with a caret under the problem, rustc style.
    pub fn snippet(&self) -> Option<String> {
        let src = self.0.source.as_deref()?;
        let span = self.0.span?;
        let (line, col) = span.line_col(src);
        let text = src.lines().nth(line - 1).unwrap_or("");
        let start = (span.start as usize).min(src.len());
        let end = (span.end as usize).clamp(start, src.len());
        let width = src
            .get(start..end)
            .map(|s| s.split('\n').next().unwrap_or("").chars().count())
            .unwrap_or(1)
            .max(1);
        let gutter = line.to_string().len();
        Some(format!(
            "{:gutter$} |\n{line} | {text}\n{:gutter$} | {}{}",
            "",
            "",
            " ".repeat(col - 1),
            "^".repeat(width),
        ))
    }
}

impl fmt::Display for VarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.message)?;
        if let Some((line, col)) = self.line_col() {
            write!(f, " (at line {line}, column {col})")?;
        }
        if let Some(snippet) = self.snippet() {
            write!(f, "\n{snippet}")?;
        }
        if let Some(hint) = &self.0.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for VarError {}

/// The closest candidate to `name` by edit distance, for "did you mean" hints.
pub fn did_you_mean<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(name, c);
        let limit = (name.len().max(c.len()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Edit distance over characters, counting an adjacent transposition as one edit
/// (optimal string alignment), so `nmae` is one edit from `name`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        d[i * w] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}
