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
use serde_json::{Map, Value, json};

use crate::catalog::LoadedItem;
use crate::catalog::model::{CatalogItem, Field, FieldType, Layout, NumberOrText};
use crate::vars::{Context, Scope};

/// The JSON Schema 2020-12 of an item's form, with `x-pao-*` UI hints.
pub fn form_schema(item: &CatalogItem) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut all_of = Vec::new();
    let mut groups = Vec::new();
    if let Some(p) = &item.presentation {
        for g in &p.groups {
            let mut ids = Vec::new();
            for f in &g.fields {
                ids.push(Value::String(f.id.clone()));
                properties.insert(f.id.clone(), field_schema(f, &g.id));
                let conditional = f.visible_when.is_some() || g.visible_when.is_some();
                if f.required == Some(true) && !conditional {
                    required.push(Value::String(f.id.clone()));
                }
                // Express equality conditions as if/then.
                let cond = f.required_when.as_deref().or(if f.required == Some(true) {
                    f.visible_when.as_deref()
                } else {
                    None
                });
                if let Some(c) = cond
                    && let Some(if_schema) = equality_condition(c)
                {
                    all_of.push(json!({ "if": if_schema, "then": { "required": [f.id] } }));
                }
            }
            let mut group = json!({ "id": g.id, "title": g.title, "fields": ids });
            if let Some(d) = &g.description {
                group["description"] = json!(d);
            }
            for (k, v) in [
                ("visible_when", &g.visible_when),
                ("required_when", &g.required_when),
                ("enabled_when", &g.enabled_when),
            ] {
                if let Some(v) = v {
                    group[k] = json!(v);
                }
            }
            groups.push(group);
        }
    }
    let layout = match item.presentation.as_ref().and_then(|p| p.layout) {
        Some(Layout::Single) => "single",
        _ => "wizard",
    };
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("pao:catalog/{}/form", item.metadata.id),
        "title": item.metadata.name,
        "description": item.metadata.description,
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
        "required": required,
        "x-pao-item": { "id": item.metadata.id, "version": item.metadata.version },
        "x-pao-layout": layout,
        "x-pao-groups": groups,
    });
    if !all_of.is_empty() {
        schema["allOf"] = Value::Array(all_of);
    }
    schema
}

/// `fields.x == 'lit'` (or `'lit' == fields.x`, or bool/number literals) as a JSON Schema
/// `if` clause; other expressions stay in `x-pao-*` only.
fn equality_condition(expr: &str) -> Option<Value> {
    let (l, r) = expr.split_once("==")?;
    if r.contains("==")
        || expr.contains("&&")
        || expr.contains("||")
        || expr.contains('?')
        || l.ends_with('!')
    {
        return None;
    }
    let (l, r) = (l.trim(), r.trim());
    let (path, lit) = if l.starts_with("fields.") {
        (l, r)
    } else {
        (r, l)
    };
    let name = path.strip_prefix("fields.")?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let value: Value = if (lit.starts_with('\'') && lit.ends_with('\''))
        || (lit.starts_with('"') && lit.ends_with('"'))
    {
        let inner = &lit[1..lit.len() - 1];
        if inner.contains('\\') || inner.contains('\'') || inner.contains('"') {
            return None;
        }
        Value::String(inner.to_string())
    } else {
        serde_json::from_str(lit)
            .ok()
            .filter(|v: &Value| v.is_boolean() || v.is_number())?
    };
    Some(json!({ "properties": { name: { "const": value } }, "required": [name] }))
}

fn widget(t: FieldType) -> &'static str {
    match t {
        FieldType::Text => "text",
        FieldType::Textarea => "textarea",
        FieldType::Number | FieldType::Integer => "number",
        FieldType::Boolean => "toggle",
        FieldType::Select => "select",
        FieldType::Multiselect => "multiselect",
        FieldType::Radio => "radio",
        FieldType::CheckboxList => "checkboxes",
        FieldType::Date => "date",
        FieldType::Datetime => "datetime",
        FieldType::Email => "email",
        FieldType::Url => "url",
        FieldType::Secret => "password",
        FieldType::Json => "code-json",
        FieldType::KeyValue => "key-value",
        FieldType::List => "list",
        FieldType::Team => "team-picker",
        FieldType::User => "user-picker",
        FieldType::Cidr => "cidr",
    }
}

fn field_schema(f: &Field, group: &str) -> Value {
    let mut s = Map::new();
    let options = f.options.as_ref().map(|o| {
        o.iter()
            .map(|o| json!({ "const": o.value(), "title": o.label() }))
            .collect::<Vec<_>>()
    });
    match f.field_type {
        FieldType::Text | FieldType::Textarea | FieldType::Team | FieldType::User => {
            s.insert("type".into(), json!("string"));
        }
        FieldType::Number => {
            s.insert("type".into(), json!("number"));
        }
        FieldType::Integer => {
            s.insert("type".into(), json!("integer"));
        }
        FieldType::Boolean => {
            s.insert("type".into(), json!("boolean"));
        }
        FieldType::Select | FieldType::Radio => {
            s.insert("type".into(), json!("string"));
            if let Some(o) = &options {
                s.insert("oneOf".into(), json!(o));
            }
        }
        FieldType::Multiselect | FieldType::CheckboxList => {
            s.insert("type".into(), json!("array"));
            s.insert("uniqueItems".into(), json!(true));
            let items = match &options {
                Some(o) => json!({ "type": "string", "oneOf": o }),
                None => json!({ "type": "string" }),
            };
            s.insert("items".into(), items);
        }
        FieldType::Date => {
            s.insert("type".into(), json!("string"));
            s.insert("format".into(), json!("date"));
        }
        FieldType::Datetime => {
            s.insert("type".into(), json!("string"));
            s.insert("format".into(), json!("date-time"));
        }
        FieldType::Email => {
            s.insert("type".into(), json!("string"));
            s.insert("format".into(), json!("email"));
        }
        FieldType::Url => {
            s.insert("type".into(), json!("string"));
            s.insert("format".into(), json!("uri"));
        }
        FieldType::Secret => {
            s.insert("type".into(), json!("string"));
            s.insert("writeOnly".into(), json!(true));
            s.insert("x-pao-secret".into(), json!(true));
        }
        FieldType::Json => {}
        FieldType::KeyValue => {
            s.insert("type".into(), json!("object"));
            s.insert("additionalProperties".into(), json!({ "type": "string" }));
        }
        FieldType::List => {
            s.insert("type".into(), json!("array"));
            s.insert("items".into(), json!({ "type": "string" }));
        }
        FieldType::Cidr => {
            s.insert("type".into(), json!("string"));
            s.insert("x-pao-format".into(), json!("cidr"));
        }
    }
    if let Some(l) = &f.label {
        s.insert("title".into(), json!(l));
    }
    if let Some(d) = &f.description {
        s.insert("description".into(), json!(d));
    }
    if let Some(d) = &f.default {
        s.insert("default".into(), d.clone());
    }
    let numeric = matches!(f.field_type, FieldType::Number | FieldType::Integer);
    let listy = matches!(
        f.field_type,
        FieldType::Multiselect | FieldType::CheckboxList | FieldType::List
    );
    for (key, bound) in [("min", &f.min), ("max", &f.max)] {
        match bound {
            Some(NumberOrText::Number(n)) => {
                let k = match (key, numeric, listy) {
                    ("min", true, _) => "minimum",
                    ("max", true, _) => "maximum",
                    ("min", _, true) => "minItems",
                    ("max", _, true) => "maxItems",
                    ("min", _, _) => "formatMinimum",
                    _ => "formatMaximum",
                };
                s.insert(k.into(), json!(n));
            }
            Some(NumberOrText::Text(t)) => {
                s.insert(format!("x-pao-{key}"), json!(t));
            }
            None => {}
        }
    }
    // Length bounds mean characters for text, entries for key/value maps, and characters of
    // each item for lists.
    for (bound, n) in [("min", f.min_length), ("max", f.max_length)] {
        let Some(n) = n else { continue };
        match f.field_type {
            FieldType::KeyValue => {
                s.insert(format!("{bound}Properties"), json!(n));
            }
            FieldType::Multiselect | FieldType::CheckboxList | FieldType::List => {
                if let Some(items) = s.get_mut("items").and_then(Value::as_object_mut) {
                    items.insert(format!("{bound}Length"), json!(n));
                }
            }
            _ => {
                s.insert(format!("{bound}Length"), json!(n));
            }
        }
    }
    if let Some(step) = f.step {
        s.insert("multipleOf".into(), json!(step));
    }
    if let Some(v) = &f.validation {
        s.insert("pattern".into(), json!(v.pattern));
        if let Some(m) = &v.message {
            s.insert("x-pao-pattern-message".into(), json!(m));
        }
    }
    for (k, v) in [
        ("x-pao-visible-when", &f.visible_when),
        ("x-pao-required-when", &f.required_when),
        ("x-pao-enabled-when", &f.enabled_when),
    ] {
        if let Some(v) = v {
            s.insert(k.into(), json!(v));
        }
    }
    if let Some(src) = &f.source {
        s.insert(
            "x-pao-source".into(),
            serde_json::to_value(src).unwrap_or(Value::Null),
        );
    }
    let mut ui = json!({ "widget": widget(f.field_type), "group": group });
    if let Some(p) = &f.placeholder {
        ui["placeholder"] = json!(p);
    }
    if let Some(h) = &f.help {
        ui["help"] = json!(h);
    }
    s.insert("x-pao-ui".into(), ui);
    Value::Object(s)
}

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
    // Defaults fill in before conditions are evaluated, as the form shows them.
    let mut current = submitted.clone();
    for (_, _, f) in &fields {
        if !current.contains_key(&f.id)
            && let Some(d) = &f.default
            && !d.as_str().is_some_and(crate::vars::is_templated)
        {
            current.insert(f.id.clone(), d.clone());
        }
    }
    let current = Value::Object(current);
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

/// Checks one value against its field; `pattern` is the field's compiled `validation.pattern`.
fn check_value(f: &Field, pattern: Option<&regex::Regex>, v: &Value, errors: &mut Vec<FieldError>) {
    let id = f.id.as_str();
    let want = |errors: &mut Vec<FieldError>, what: &str| {
        errors.push(ferr(
            id,
            "type",
            format!("{id} must be {what}, got {}", type_name(v)),
        ));
    };
    let options: Option<Vec<&str>> = f
        .options
        .as_ref()
        .map(|o| o.iter().map(|o| o.value()).collect());
    match f.field_type {
        FieldType::Number if !v.is_number() => return want(errors, "a number"),
        FieldType::Integer if !(v.is_i64() || v.is_u64()) => return want(errors, "a whole number"),
        FieldType::Boolean if !v.is_boolean() => return want(errors, "true or false"),
        FieldType::Multiselect | FieldType::CheckboxList | FieldType::List => {
            let Some(items) = v.as_array() else {
                return want(errors, "a list");
            };
            // The count first, so a huge list costs one error and no per-item work.
            if items.len() > MAX_LIST_ITEMS {
                errors.push(ferr(
                    id,
                    "max",
                    format!(
                        "{id} takes at most {MAX_LIST_ITEMS} items, got {}",
                        items.len()
                    ),
                ));
                return;
            }
            let before = errors.len();
            check_bounds(f, items.len() as f64, errors, "items");
            if errors[before..].iter().any(|e| e.code == "max") {
                return;
            }
            let options: Option<HashSet<&str>> = options.map(|o| o.into_iter().collect());
            let mut seen = HashSet::with_capacity(items.len());
            let mut found = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Some(s) = item.as_str() else {
                    found.push(ferr(id, "type", format!("{id}[{i}] must be a string")));
                    continue;
                };
                if let Some(o) = &options
                    && !o.contains(s)
                {
                    found.push(ferr(
                        id,
                        "option",
                        format!("`{}` is not an option of {id}", shown(s)),
                    ));
                }
                let len = s.chars().count() as u64;
                if f.min_length.is_some_and(|n| len < n) || f.max_length.is_some_and(|n| len > n) {
                    found.push(ferr(
                        id,
                        "max_length",
                        format!("{id}[{i}] has a length outside the allowed range"),
                    ));
                }
                if !seen.insert(s) && f.field_type != FieldType::List {
                    found.push(ferr(
                        id,
                        "option",
                        format!("`{}` is selected twice", shown(s)),
                    ));
                }
            }
            if found.len() > MAX_ERRORS_PER_FIELD {
                let more = found.len() - MAX_ERRORS_PER_FIELD;
                found.truncate(MAX_ERRORS_PER_FIELD);
                found.push(ferr(
                    id,
                    "more",
                    format!("and {more} more problems with the items of {id}"),
                ));
            }
            errors.extend(found);
            return;
        }
        FieldType::KeyValue => {
            let Some(m) = v.as_object() else {
                return want(errors, "a mapping of names to text");
            };
            if m.values().any(|x| !x.is_string()) {
                errors.push(ferr(id, "type", format!("{id}: every value must be text")));
            }
            if let Some(n) = f.min_length
                && (m.len() as u64) < n
            {
                errors.push(ferr(
                    id,
                    "min_length",
                    format!("{id} needs at least {n} entries"),
                ));
            }
            if let Some(n) = f.max_length
                && (m.len() as u64) > n
            {
                errors.push(ferr(
                    id,
                    "max_length",
                    format!("{id} takes at most {n} entries"),
                ));
            }
            return;
        }
        FieldType::Json => return,
        FieldType::Number | FieldType::Integer => {
            check_bounds(f, v.as_f64().unwrap_or(0.0), errors, "value");
            if let Some(step) = f.step
                && step > 0.0
            {
                let base = match &f.min {
                    Some(NumberOrText::Number(m)) => *m,
                    _ => 0.0,
                };
                let q = (v.as_f64().unwrap_or(0.0) - base) / step;
                if (q - q.round()).abs() > 1e-9 {
                    errors.push(ferr(id, "step", format!("{id} must be in steps of {step}")));
                }
            }
            return;
        }
        FieldType::Boolean => return,
        _ => {}
    }
    let Some(s) = v.as_str() else {
        return want(errors, "text");
    };
    let chars = s.chars().count() as u64;
    if let Some(n) = f.min_length
        && chars < n
    {
        errors.push(ferr(
            id,
            "min_length",
            format!("{id} must be at least {n} characters"),
        ));
    }
    if let Some(n) = f.max_length
        && chars > n
    {
        errors.push(ferr(
            id,
            "max_length",
            format!("{id} must be at most {n} characters"),
        ));
    }
    if let Some(o) = &options
        && !o.contains(&s)
    {
        errors.push(ferr(
            id,
            "option",
            format!(
                "`{}` is not an option of {id} ({})",
                shown(s),
                options_hint(o)
            ),
        ));
    }
    if let Some(val) = &f.validation {
        match pattern {
            Some(re) if !re.is_match(s) => {
                let msg = val
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{id} must match {}", val.pattern));
                errors.push(ferr(id, "pattern", msg));
            }
            Some(_) => {}
            None => errors.push(ferr(
                id,
                "pattern",
                format!("{id} has an invalid pattern in the catalog"),
            )),
        }
    }
    let bad = match f.field_type {
        FieldType::Email => {
            let mut parts = s.split('@');
            let (local, domain) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            local.is_empty()
                || !domain.contains('.')
                || parts.next().is_some()
                || s.contains(char::is_whitespace)
        }
        FieldType::Url => {
            !(s.starts_with("https://") || s.starts_with("http://"))
                || s.contains(char::is_whitespace)
        }
        FieldType::Date => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err(),
        FieldType::Datetime => chrono::DateTime::parse_from_rfc3339(s).is_err(),
        FieldType::Cidr => !crate::catalog::valid_cidr(s),
        _ => false,
    };
    if bad {
        errors.push(ferr(
            id,
            "format",
            format!("`{s}` is not a valid {}", f.field_type.as_str()),
        ));
    }
}

/// Items a list value may have, whatever the catalog says: validation and storage stay small.
pub const MAX_LIST_ITEMS: usize = 1_000;
/// Item errors reported for one list field; the rest are counted in one more error.
const MAX_ERRORS_PER_FIELD: usize = 10;

/// A submitted value as quoted in an error message: at most 64 characters.
fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]).into(),
        None => s.into(),
    }
}

/// The first options of a field, for an error message.
fn options_hint(o: &[&str]) -> String {
    const SHOWN: usize = 10;
    if o.len() <= SHOWN {
        o.join(", ")
    } else {
        format!("{}, and {} more", o[..SHOWN].join(", "), o.len() - SHOWN)
    }
}

/// The longest value of a field whose options come from a source.
pub const MAX_SOURCE_VALUE_CHARS: usize = 256;

/// The value of a field whose options come from a source (`source.http`, `source.catalog`) is
/// not looked up in that source at submit: the source may be slow, answer per user, or have
/// changed. Such values often go into URLs, so unless the field has its own
/// `validation.pattern`, each (one, or each of a list) must be a name: at most
/// [`MAX_SOURCE_VALUE_CHARS`] characters, without `/`, `\`, `?`, `#`, `%`, `..` or control
/// characters.
fn check_source_value(f: &Field, v: &Value, errors: &mut Vec<FieldError>) {
    if f.source.is_none() || f.options.is_some() || f.validation.is_some() {
        return;
    }
    let one;
    let values: &[Value] = match v {
        Value::Array(items) => items,
        Value::String(_) => {
            one = [v.clone()];
            &one
        }
        _ => return,
    };
    for s in values.iter().filter_map(Value::as_str) {
        let bad = s.chars().count() > MAX_SOURCE_VALUE_CHARS
            || s.contains("..")
            || s.chars()
                .any(|c| c.is_control() || matches!(c, '/' | '\\' | '?' | '#' | '%'));
        if bad {
            errors.push(ferr(
                &f.id,
                "source_value",
                format!(
                    "{} must be one of the options its source offers: at most \
                     {MAX_SOURCE_VALUE_CHARS} characters, without `/`, `\\`, `?`, `#`, `%`, `..` \
                     or control characters",
                    f.id
                ),
            ));
            return;
        }
    }
}

fn check_bounds(f: &Field, n: f64, errors: &mut Vec<FieldError>, what: &str) {
    if let Some(NumberOrText::Number(min)) = &f.min
        && n < *min
    {
        errors.push(ferr(
            &f.id,
            "min",
            format!("{}: {what} must be at least {min}", f.id),
        ));
    }
    if let Some(NumberOrText::Number(max)) = &f.max
        && n > *max
    {
        errors.push(ferr(
            &f.id,
            "max",
            format!("{}: {what} must be at most {max}", f.id),
        ));
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
