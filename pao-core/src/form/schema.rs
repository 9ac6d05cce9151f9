//! The JSON Schema of a form, with the `x-pao-*` hints a renderer needs.

use serde_json::{Map, Value, json};

use crate::catalog::model::{CatalogItem, Field, FieldType, Layout, NumberOrText};

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
    type_schema(f, &mut s);
    if let Some(l) = &f.label {
        s.insert("title".into(), json!(l));
    }
    if let Some(d) = &f.description {
        s.insert("description".into(), json!(d));
    }
    if let Some(d) = &f.default {
        s.insert("default".into(), d.clone());
    }
    bounds_schema(f, &mut s);
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

/// The JSON type (and format, options, items) of a field's type.
fn type_schema(f: &Field, s: &mut Map<String, Value>) {
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
}

/// A field's `min`/`max` and length bounds, under the keys its type gives them.
fn bounds_schema(f: &Field, s: &mut Map<String, Value>) {
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
}
