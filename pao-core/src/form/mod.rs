//! Forms: the JSON Schema (2020-12) plus UI hints a renderer needs for one catalog item, and
//! the validation of submitted values against it. Conditions are the item's own compiled
//! expressions, evaluated the same way here as at run time; what plain JSON Schema can say
//! (`if`/`then` for equality conditions) is said, and the original expression always rides
//! along under an `x-pao-*` key.
//!
//! ```
//! use pao_core::catalog::{LoadOptions, load_item};
//! use pao_core::form::{FormContext, form_schema, validate_fields};
//! use serde_json::json;
//!
//! let yaml = r#"
//! apiVersion: pao.dev/v2
//! kind: CatalogItem
//! metadata:
//!   id: demo.bucket
//!   name: Bucket
//!   description: An object storage bucket.
//!   version: 1.0.0
//!   category: storage
//!   owner: { team: storage }
//! presentation:
//!   groups:
//!     - id: basics
//!       title: Basics
//!       fields:
//!         - { id: name, type: text, required: true }
//!         - { id: env, type: select, options: [dev, prod], default: dev }
//!         - { id: retention, type: integer, min: 1, visible_when: "fields.env == 'prod'", required_when: "fields.env == 'prod'" }
//! fulfillment:
//!   mode: manual
//!   manual: { jira: { project: STO, issue_type: Task, summary: "Bucket ${{ fields.name }}" } }
//! "#;
//! let (item, diags) = load_item("bucket.yaml", yaml, &LoadOptions::default());
//! let item = item.expect("valid");
//! assert!(diags.iter().all(|d| !d.is_error()));
//! let schema = form_schema(&item.item);
//! assert_eq!(schema["properties"]["env"]["default"], json!("dev"));
//!
//! let ok = validate_fields(&item, &json!({"name": "logs", "retention": 7}), &FormContext::default()).unwrap();
//! assert_eq!(ok.values, json!({"name": "logs", "env": "dev"}), "retention is hidden in dev, so dropped");
//! let errs = validate_fields(&item, &json!({"name": "logs", "env": "prod"}), &FormContext::default()).unwrap_err();
//! assert_eq!(errs[0].field, "retention");
//! assert_eq!(errs[0].code, "required");
//! ```

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::catalog::LoadedItem;
use crate::catalog::model::Field;
use crate::vars::{Context, Scope};

mod schema;
mod values;

pub use schema::form_schema;
use values::{MAX_ERRORS_PER_FIELD, check_source_value, check_value, shown};
pub use values::{MAX_LIST_ITEMS, MAX_SOURCE_VALUE_CHARS};

/// Who submits and for what, so conditions can read `user` and `request`.
#[derive(Debug, Clone, Default)]
pub struct FormContext {
    /// The `user` scope.
    pub user: Value,
    /// The `request` scope.
    pub request: Value,
    /// The `env` scope.
    pub env: Value,
}

/// Values that passed validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidatedFields {
    /// What may be stored: visible, non-secret fields, with defaults filled in.
    pub values: Value,
    /// Secret field values: hand to the secret store, never persist with the request.
    #[serde(skip)]
    pub secrets: Map<String, Value>,
}

/// One invalid value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field id (empty for the whole payload).
    pub field: String,
    /// JSON pointer into the submitted object.
    pub pointer: String,
    /// A stable code: required, type, option, pattern, min, max, min_length, max_length,
    /// format, unknown_field, not_object, condition.
    pub code: &'static str,
    /// What is wrong, for people.
    pub message: String,
}

fn ferr(field: &str, code: &'static str, message: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        pointer: if field.is_empty() {
            String::new()
        } else {
            format!("/{field}")
        },
        code,
        message,
    }
}

/// Validates submitted values: unknown fields are refused, hidden fields are dropped and never
/// required, nothing is coerced, and every error is returned with its field.
pub fn validate_fields(
    item: &LoadedItem,
    values: &Value,
    ctx: &FormContext,
) -> Result<ValidatedFields, Vec<FieldError>> {
    let Some(submitted) = values.as_object() else {
        return Err(vec![ferr(
            "",
            "not_object",
            "the field values must be a JSON object".to_string(),
        )]);
    };
    let mut errors = Vec::new();
    let fields: Vec<(usize, usize, &Field)> = item
        .item
        .presentation
        .iter()
        .flat_map(|p| p.groups.iter().enumerate())
        .flat_map(|(gi, g)| g.fields.iter().enumerate().map(move |(fi, f)| (gi, fi, f)))
        .collect();
    unknown_fields(item, submitted, &fields, &mut errors);
    let current = with_defaults(submitted, &fields);
    let vars_ctx = Context::new()
        .with(Scope::Fields, &current)
        .with(Scope::User, &ctx.user)
        .with(Scope::Request, &ctx.request)
        .with(Scope::Env, &ctx.env);
    let cond = |ptr: String, fallback: bool| -> bool {
        match item.compiled.conditions.get(&ptr) {
            Some(e) => e.eval_bool(&vars_ctx).unwrap_or(fallback),
            None => fallback,
        }
    };
    let mut out = Map::new();
    let mut secrets = Map::new();
    for (gi, fi, f) in &fields {
        let gptr = format!("/presentation/groups/{gi}");
        let fptr = format!("{gptr}/fields/{fi}");
        let visible = cond(format!("{gptr}/visible_when"), true)
            && cond(format!("{fptr}/visible_when"), true);
        if !visible {
            continue;
        }
        let required = f.required == Some(true)
            || (f.required_when.is_some() && cond(format!("{fptr}/required_when"), false))
            || (item
                .item
                .presentation
                .as_ref()
                .and_then(|p| p.groups[*gi].required_when.as_ref())
                .is_some()
                && cond(format!("{gptr}/required_when"), false));
        let value = current.get(&f.id);
        let empty = match value {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if empty {
            if required {
                errors.push(ferr(
                    &f.id,
                    "required",
                    format!("{} is required", f.label.as_deref().unwrap_or(&f.id)),
                ));
            }
            continue;
        }
        let Some(value) = value else { continue };
        let before = errors.len();
        check_value(f, item.compiled.patterns.get(&f.id), value, &mut errors);
        check_source_value(f, value, &mut errors);
        if errors.len() == before {
            if f.is_secret() {
                secrets.insert(f.id.clone(), value.clone());
            } else {
                out.insert(f.id.clone(), value.clone());
            }
        }
    }
    if errors.is_empty() {
        Ok(ValidatedFields {
            values: Value::Object(out),
            secrets,
        })
    } else {
        Err(errors)
    }
}

/// Refuses the submitted names that are not fields of the item: the first few each with an
/// error, the rest counted in one more.
fn unknown_fields(
    item: &LoadedItem,
    submitted: &Map<String, Value>,
    fields: &[(usize, usize, &Field)],
    errors: &mut Vec<FieldError>,
) {
    let known: HashSet<&str> = fields.iter().map(|(_, _, f)| f.id.as_str()).collect();
    let unknown: Vec<&String> = submitted
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    for key in unknown.iter().take(MAX_ERRORS_PER_FIELD) {
        errors.push(ferr(
            key,
            "unknown_field",
            format!("`{}` is not a field of {}", shown(key), item.id()),
        ));
    }
    if unknown.len() > MAX_ERRORS_PER_FIELD {
        errors.push(ferr(
            "",
            "unknown_field",
            format!(
                "and {} more names that are not fields of {}",
                unknown.len() - MAX_ERRORS_PER_FIELD,
                item.id()
            ),
        ));
    }
}

/// The submitted values with the fields' defaults filled in (untemplated ones), as the form
/// shows them: conditions are evaluated over these.
fn with_defaults(submitted: &Map<String, Value>, fields: &[(usize, usize, &Field)]) -> Value {
    let mut current = submitted.clone();
    for (_, _, f) in fields {
        if !current.contains_key(&f.id)
            && let Some(d) = &f.default
            && !d.as_str().is_some_and(crate::vars::is_templated)
        {
            current.insert(f.id.clone(), d.clone());
        }
    }
    Value::Object(current)
}
