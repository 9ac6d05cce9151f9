//! Checks of one submitted value against its field: type, options, bounds, pattern, format.

use std::collections::HashSet;

use serde_json::Value;

use super::{FieldError, ferr};
use crate::catalog::model::{Field, FieldType, NumberOrText};

/// Checks one submitted value against its field, adding what is wrong to `errors`;
/// `pattern` is the field's `validation.pattern` as compiled at catalog load.
pub(super) fn check_value(
    f: &Field,
    pattern: Option<&regex::Regex>,
    v: &Value,
    errors: &mut Vec<FieldError>,
) {
    let options: Option<Vec<&str>> = f
        .options
        .as_ref()
        .map(|o| o.iter().map(|o| o.value()).collect());
    match f.field_type {
        FieldType::Number if !v.is_number() => wrong_type(f, v, errors, "a number"),
        FieldType::Integer if !(v.is_i64() || v.is_u64()) => {
            wrong_type(f, v, errors, "a whole number")
        }
        FieldType::Boolean if !v.is_boolean() => wrong_type(f, v, errors, "true or false"),
        FieldType::Multiselect | FieldType::CheckboxList | FieldType::List => {
            check_list(f, v, options, errors)
        }
        FieldType::KeyValue => check_key_value(f, v, errors),
        FieldType::Json | FieldType::Boolean => {}
        FieldType::Number | FieldType::Integer => check_number(f, v, errors),
        _ => check_text(f, v, options.as_deref(), pattern, errors),
    }
}

/// A value of the wrong JSON type: `what` says what it must be.
fn wrong_type(f: &Field, v: &Value, errors: &mut Vec<FieldError>, what: &str) {
    let id = f.id.as_str();
    errors.push(ferr(
        id,
        "type",
        format!("{id} must be {what}, got {}", type_name(v)),
    ));
}

/// A list (multiselect, checkbox list, list): its count, then each item.
fn check_list(f: &Field, v: &Value, options: Option<Vec<&str>>, errors: &mut Vec<FieldError>) {
    let id = f.id.as_str();
    let Some(items) = v.as_array() else {
        return wrong_type(f, v, errors, "a list");
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
    let mut found = list_item_errors(f, items, options.as_ref());
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
}

/// What is wrong with each item of a list: its type, option, length, and repeats (allowed in
/// a plain list only).
fn list_item_errors(
    f: &Field,
    items: &[Value],
    options: Option<&HashSet<&str>>,
) -> Vec<FieldError> {
    let id = f.id.as_str();
    let mut seen = HashSet::with_capacity(items.len());
    let mut found = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(s) = item.as_str() else {
            found.push(ferr(id, "type", format!("{id}[{i}] must be a string")));
            continue;
        };
        if let Some(o) = options
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
    found
}

/// A key/value map: text values, and its entry count within the length bounds.
fn check_key_value(f: &Field, v: &Value, errors: &mut Vec<FieldError>) {
    let id = f.id.as_str();
    let Some(m) = v.as_object() else {
        return wrong_type(f, v, errors, "a mapping of names to text");
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
}

/// A number (already known to be one): its bounds and step.
fn check_number(f: &Field, v: &Value, errors: &mut Vec<FieldError>) {
    let id = f.id.as_str();
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
}

/// A text value: its length, option, pattern and format.
fn check_text(
    f: &Field,
    v: &Value,
    options: Option<&[&str]>,
    pattern: Option<&regex::Regex>,
    errors: &mut Vec<FieldError>,
) {
    let id = f.id.as_str();
    let Some(s) = v.as_str() else {
        return wrong_type(f, v, errors, "text");
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
    if let Some(o) = options
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
    if !well_formed(f.field_type, s) {
        errors.push(ferr(
            id,
            "format",
            format!("`{s}` is not a valid {}", f.field_type.as_str()),
        ));
    }
}

/// Whether text is well formed for its field type (email, URL, date, date-time, CIDR; any
/// text for the other types).
fn well_formed(t: FieldType, s: &str) -> bool {
    let bad = match t {
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
    !bad
}

/// Items a list value may have, whatever the catalog says: validation and storage stay small.
pub const MAX_LIST_ITEMS: usize = 1_000;
/// Item errors reported for one list field; the rest are counted in one more error.
pub(super) const MAX_ERRORS_PER_FIELD: usize = 10;

/// A submitted value as quoted in an error message: at most 64 characters.
pub(super) fn shown(s: &str) -> std::borrow::Cow<'_, str> {
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
pub(super) fn check_source_value(f: &Field, v: &Value, errors: &mut Vec<FieldError>) {
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
