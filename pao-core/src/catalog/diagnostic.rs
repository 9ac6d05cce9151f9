//! Diagnostics: every problem found while loading a catalog, located in the YAML file, with a
//! stable code and a hint, rendered like rustc for people and as JSON for machines.

use std::fmt::Write;

use serde::Serialize;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The item cannot be used.
    Error,
    /// The item loads, but something deserves attention.
    Warning,
    /// A suggestion.
    Hint,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Hint => "hint",
        }
    }
}

/// Stable diagnostic codes. `docs/catalog-authors.md` explains each one.
pub mod codes {
    /// YAML syntax error.
    pub const YAML_SYNTAX: &str = "PAO-E001";
    /// Duplicate YAML key.
    pub const DUPLICATE_KEY: &str = "PAO-E002";
    /// Schema violation: wrong type, missing required key, bad enum value.
    pub const SCHEMA: &str = "PAO-E003";
    /// Unknown key.
    pub const UNKNOWN_KEY: &str = "PAO-E004";
    /// Two items share an id.
    pub const DUPLICATE_ITEM: &str = "PAO-E005";
    /// Unknown action type.
    pub const UNKNOWN_ACTION_TYPE: &str = "PAO-E006";
    /// `depends_on` names an unknown action.
    pub const UNKNOWN_DEPENDENCY: &str = "PAO-E007";
    /// Dependency cycle.
    pub const CYCLE: &str = "PAO-E008";
    /// Output read before its action is guaranteed to have run.
    pub const OUTPUT_NOT_AVAILABLE: &str = "PAO-E009";
    /// Template or expression syntax error.
    pub const EXPRESSION_SYNTAX: &str = "PAO-E010";
    /// Unknown scope, or undeclared field, computed value, action or env variable.
    pub const UNDECLARED: &str = "PAO-E011";
    /// A default or option that does not fit the field type.
    pub const FIELD_VALUE_TYPE: &str = "PAO-E012";
    /// `required_when` on a field that may be hidden, or naming one.
    pub const REQUIRED_HIDDEN: &str = "PAO-E013";
    /// Manual mode without `manual.jira`.
    pub const MANUAL_WITHOUT_JIRA: &str = "PAO-E014";
    /// Malformed restricted change period.
    pub const RESTRICTED_PERIOD: &str = "PAO-E015";
    /// Duplicate action or field id within an item.
    pub const DUPLICATE_ID: &str = "PAO-E016";
    /// File too large or nested too deeply.
    pub const TOO_LARGE: &str = "PAO-E017";
    /// Unsupported apiVersion.
    pub const API_VERSION: &str = "PAO-E018";
    /// Computed values form a cycle.
    pub const COMPUTED_CYCLE: &str = "PAO-E019";
    /// Action config does not match the action type's schema.
    pub const ACTION_CONFIG: &str = "PAO-E020";
    /// A duration that is not one PAO takes (it does not parse, or is longer than ten years).
    pub const DURATION: &str = "PAO-E021";
    /// A field's `validation.pattern` that is not a regular expression.
    pub const PATTERN: &str = "PAO-E022";
    /// The `items` of an HTTP option source that is not JSONPath.
    pub const JSONPATH: &str = "PAO-E023";
    /// The item's `secrets:` list grants a secret reserved for the server.
    pub const SECRET_GRANT: &str = "PAO-E024";
    /// The item's environment: a `metadata.environment` that reads `request`, two fields
    /// listing the catalog's environments, an `access.environments` entry or a default
    /// approval rule the catalog cannot apply.
    pub const ENVIRONMENT: &str = "PAO-E025";
    /// A maintenance window's `cron` is not a 5-field cron expression that matches a date.
    pub const CRON: &str = "PAO-E026";
    /// Deprecated item without a replacement.
    pub const DEPRECATED_NO_REPLACEMENT: &str = "PAO-W001";
    /// Retired item.
    pub const RETIRED: &str = "PAO-W002";
    /// A field that no template, condition or action reads.
    pub const UNUSED_FIELD: &str = "PAO-W003";
    /// A re-loaded item is broken; the last good version is kept.
    pub const KEPT_LAST_GOOD: &str = "PAO-W004";
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error, warning or hint.
    pub severity: Severity,
    /// Stable code, e.g. `PAO-E007`.
    pub code: &'static str,
    /// The file, relative to the catalog folder.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// JSON pointer of the node inside the item.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The source line, for rendering.
    #[serde(skip)]
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders like rustc: header, location, source line with a caret, hint.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}[{}]: {}",
            self.severity.as_str(),
            self.code,
            self.message
        );
        let gutter = self.line.to_string().len();
        let _ = writeln!(
            out,
            "{:gutter$}--> {}:{}:{}",
            "", self.file, self.line, self.column
        );
        if let Some(src) = &self.source_line {
            let width = caret_width(src, self.column);
            let _ = writeln!(out, "{:gutter$} |", "");
            let _ = writeln!(out, "{} | {}", self.line, src);
            let pad: String = src
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{:gutter$} | {}{}", "", pad, "^".repeat(width));
        }
        if !self.pointer.is_empty() {
            let _ = writeln!(out, "{:gutter$} = at: {}", "", self.pointer);
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "{:gutter$} = hint: {}", "", hint);
        }
        out
    }
}

/// Width of the token starting at `column` (1-based).
fn caret_width(line: &str, column: usize) -> usize {
    let rest: String = line.chars().skip(column.saturating_sub(1)).collect();
    let rest = rest.trim_end();
    if rest.is_empty() {
        return 1;
    }
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'');
    let width = match quote {
        Some(q) => rest[1..]
            .find(q)
            .map(|i| i + 2)
            .unwrap_or(rest.chars().count()),
        None => rest.find([',', ']', '}', '#', ':']).unwrap_or(rest.len()),
    };
    rest[..width.min(rest.len())]
        .trim_end()
        .chars()
        .count()
        .max(1)
}

/// Renders a list of diagnostics, with a summary line.
pub fn render_all(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.render());
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    out
}
