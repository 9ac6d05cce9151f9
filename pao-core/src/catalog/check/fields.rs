//! Form fields: unique ids, defaults and options that fit the type, the conditions of groups
//! and fields (with the `required_when` rules), validation patterns, and HTTP option sources.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::catalog::diagnostic::codes;
use crate::catalog::load::{CompiledItem, CompiledSource, FileDiags};
use crate::catalog::model::{CatalogItem, Field, FieldType, HttpSource, NumberOrText};
use crate::vars::{Declarations, Engine, Reference, Scope, Template, VarError, did_you_mean};

/// Where a field is, and whether it may be hidden (it or its group has `visible_when`).
pub(super) struct FieldInfo {
    pub pointer: String,
    pub may_hide: bool,
}

/// The item's fields by id; group and field ids must be unique (PAO-E016), defaults and
/// options must fit (PAO-E012).
pub(super) fn collect(d: &mut FileDiags, item: &CatalogItem) -> BTreeMap<String, FieldInfo> {
    let mut fields = BTreeMap::new();
    let Some(p) = &item.presentation else {
        return fields;
    };
    let mut group_ids = BTreeSet::new();
    for (gi, g) in p.groups.iter().enumerate() {
        let gptr = format!("/presentation/groups/{gi}");
        if !group_ids.insert(g.id.clone()) {
            d.error(
                codes::DUPLICATE_ID,
                &format!("{gptr}/id"),
                format!("group id `{}` is used twice", g.id),
                None,
            );
        }
        for (fi, f) in g.fields.iter().enumerate() {
            let fptr = format!("{gptr}/fields/{fi}");
            let may_hide = f.visible_when.is_some() || g.visible_when.is_some();
            if fields.contains_key(&f.id) {
                d.error(
                    codes::DUPLICATE_ID,
                    &format!("{fptr}/id"),
                    format!("field id `{}` is used twice in this item", f.id),
                    Some("field ids are unique across all groups".to_string()),
                );
                continue;
            }
            fields.insert(
                f.id.clone(),
                FieldInfo {
                    pointer: fptr.clone(),
                    may_hide,
                },
            );
            check_field_values(d, f, &fptr);
        }
    }
    fields
}

/// Compiles the conditions of groups and fields, the fields' validation patterns and their
/// HTTP option sources, in form order.
pub(super) fn compile(
    d: &mut FileDiags,
    engine: &Engine,
    item: &CatalogItem,
    fields: &BTreeMap<String, FieldInfo>,
    base: &Declarations,
    compiled: &mut CompiledItem,
) {
    let Some(p) = &item.presentation else { return };
    for (gi, g) in p.groups.iter().enumerate() {
        let gptr = format!("/presentation/groups/{gi}");
        for (key, src) in [
            ("visible_when", &g.visible_when),
            ("required_when", &g.required_when),
            ("enabled_when", &g.enabled_when),
        ] {
            if let Some(src) = src {
                condition(d, engine, base, format!("{gptr}/{key}"), src, compiled);
            }
        }
        for (fi, f) in g.fields.iter().enumerate() {
            let fptr = format!("{gptr}/fields/{fi}");
            field_conditions(d, engine, f, &fptr, fields, base, compiled);
            if let Some(http) = f.source.as_ref().and_then(|s| s.http.as_ref()) {
                let ptr = format!("{fptr}/source/http");
                if let Some(source) = compile_http_source(d, engine, &ptr, http, base) {
                    compiled.sources.insert(f.id.clone(), source);
                }
            }
            if let Some(v) = &f.validation {
                let ptr = format!("{fptr}/validation/pattern");
                if let Some(re) = compile_pattern(d, &ptr, &f.id, &v.pattern) {
                    compiled.patterns.insert(f.id.clone(), re);
                }
            }
        }
    }
}

/// A field's `validation.pattern` (PAO-E022).
fn compile_pattern(d: &mut FileDiags, ptr: &str, id: &str, pattern: &str) -> Option<Regex> {
    match Regex::new(pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            let text = e.to_string();
            let why = text
                .lines()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or(&text)
                .to_string();
            d.error(
                codes::PATTERN,
                ptr,
                format!("the pattern of field `{id}` is not a regular expression: {why}"),
                Some(
                    "write a regular expression in Rust regex syntax, e.g. `^[a-z][a-z0-9-]*$`"
                        .to_string(),
                ),
            );
            None
        }
    }
}

/// An HTTP option source: the URL and header templates (checked like every template) and
/// the `items` JSONPath (PAO-E023). `None` when a piece does not compile.
fn compile_http_source(
    d: &mut FileDiags,
    engine: &Engine,
    ptr: &str,
    src: &HttpSource,
    base: &Declarations,
) -> Option<CompiledSource> {
    let url = checked(d, &format!("{ptr}/url"), engine.compile_url(&src.url), base);
    let mut headers = Vec::new();
    for (name, value) in src.headers.iter().flatten() {
        let hptr = format!(
            "{ptr}/headers/{}",
            name.replace('~', "~0").replace('/', "~1")
        );
        if let Some(t) = checked(d, &hptr, engine.compile(value), base) {
            headers.push((name.clone(), t));
        }
    }
    let path = src.items.as_deref().unwrap_or("$");
    let items = match JsonPath::parse(path) {
        Ok(p) => Some(p),
        Err(e) => {
            d.error(
                codes::JSONPATH,
                &format!("{ptr}/items"),
                format!("`{path}` is not JSONPath: {e}"),
                Some("write an RFC 9535 JSONPath to the list of options, e.g. `$.items[*]` or `$.data`".to_string()),
            );
            None
        }
    };
    let all_headers = headers.len() == src.headers.iter().flatten().count();
    match (url, items) {
        (Some(url), Some(items)) if all_headers => Some(CompiledSource {
            url,
            headers,
            items,
        }),
        _ => None,
    }
}

/// A compiled template, its check errors reported; `None` (reported) when it does not compile.
fn checked(
    d: &mut FileDiags,
    ptr: &str,
    compiled: Result<Template, VarError>,
    base: &Declarations,
) -> Option<Template> {
    match compiled {
        Ok(t) => {
            for e in t.check(base) {
                d.var_error(ptr, &e);
            }
            Some(t)
        }
        Err(e) => {
            d.var_error(ptr, &e);
            None
        }
    }
}

/// Compiles and checks one condition into `compiled.conditions`; its references when it
/// compiled.
fn condition(
    d: &mut FileDiags,
    engine: &Engine,
    base: &Declarations,
    ptr: String,
    src: &str,
    compiled: &mut CompiledItem,
) -> Option<Vec<Reference>> {
    match engine.compile_expression(src) {
        Ok(e) => {
            for err in e.check(base) {
                d.var_error(&ptr, &err);
            }
            let refs = e.references();
            compiled.conditions.insert(ptr, e);
            Some(refs)
        }
        Err(err) => {
            d.var_error(&ptr, &err);
            None
        }
    }
}

/// The three conditions of a field, and the `required_when` rules (PAO-E013).
fn field_conditions(
    d: &mut FileDiags,
    engine: &Engine,
    f: &Field,
    fptr: &str,
    fields: &BTreeMap<String, FieldInfo>,
    base: &Declarations,
    compiled: &mut CompiledItem,
) {
    for (key, src) in [
        ("visible_when", &f.visible_when),
        ("required_when", &f.required_when),
        ("enabled_when", &f.enabled_when),
    ] {
        let Some(src) = src else { continue };
        let ptr = format!("{fptr}/{key}");
        let refs = condition(d, engine, base, ptr.clone(), src, compiled);
        if key != "required_when" {
            continue;
        }
        if let (Some(vis), Some(req)) = (&f.visible_when, &refs)
            && let Ok(vis) = engine.compile_expression(vis)
        {
            required_reads_what_shows(d, f, &ptr, &vis.references(), req, fields);
        }
        required_reads_no_hidden_field(d, f, &ptr, refs.into_iter().flatten(), fields);
    }
}

/// `required_when` and `visible_when` of a field must read some field in common, or the field
/// may be required while hidden.
fn required_reads_what_shows(
    d: &mut FileDiags,
    f: &Field,
    ptr: &str,
    visible_refs: &[Reference],
    required_refs: &[Reference],
    fields: &BTreeMap<String, FieldInfo>,
) {
    let shown_by = field_reads(visible_refs, fields);
    let required_by = field_reads(required_refs, fields);
    if !required_by.is_empty() && shown_by.is_disjoint(&required_by) {
        d.error(
            codes::REQUIRED_HIDDEN,
            ptr,
            format!(
                "`{}` may be hidden (visible_when) while its required_when holds: the two conditions read different fields",
                f.id
            ),
            Some("a hidden field is never required; make required_when imply visible_when, e.g. `fields.environment == 'prod' && ...`".to_string()),
        );
    }
}

/// The declared fields that `refs` read (an undeclared one as `""`).
fn field_reads<'f>(
    refs: &[Reference],
    fields: &'f BTreeMap<String, FieldInfo>,
) -> BTreeSet<&'f str> {
    refs.iter()
        .filter(|r| r.scope == Scope::Fields)
        .filter_map(|r| r.path.first())
        .map(|s| {
            fields
                .get_key_value(s.as_str())
                .map(|(k, _)| k.as_str())
                .unwrap_or("")
        })
        .collect()
}

/// `required_when` must not read, unguarded, another field that may be hidden.
fn required_reads_no_hidden_field(
    d: &mut FileDiags,
    f: &Field,
    ptr: &str,
    refs: impl Iterator<Item = Reference>,
    fields: &BTreeMap<String, FieldInfo>,
) {
    for r in refs {
        if r.scope != Scope::Fields || r.guarded {
            continue;
        }
        let Some(other) = r.path.first() else {
            continue;
        };
        if other == &f.id {
            continue;
        }
        if fields.get(other).is_some_and(|o| o.may_hide) {
            d.error(
                codes::REQUIRED_HIDDEN,
                ptr,
                format!("required_when of `{}` reads field `{other}`, which may be hidden (it has visible_when); a hidden field has no value", f.id),
                Some(format!("guard it: `fields.{other}?.…` or `default(fields.{other}, …)`, or drop the visible_when of `{other}`")),
            );
        }
    }
}

/// Options that cannot go with the field's type (PAO-E012).
fn check_options(d: &mut FileDiags, f: &Field, fptr: &str, has_options: bool) {
    if has_options && !f.field_type.has_options() {
        d.error(
            codes::FIELD_VALUE_TYPE,
            &format!("{fptr}/options"),
            format!(
                "field `{}` of type {} cannot have options",
                f.id,
                f.field_type.as_str()
            ),
            Some("options go with select, multiselect, radio and checkbox_list".to_string()),
        );
    }
    if f.field_type.has_options() && !has_options && f.source.is_none() {
        d.error_at_key(
            codes::FIELD_VALUE_TYPE,
            &format!("{fptr}/type"),
            format!(
                "field `{}` of type {} needs `options` or a `source`",
                f.id,
                f.field_type.as_str()
            ),
            None,
        );
    }
}

/// Defaults and options that cannot fit the field's type (PAO-E012).
fn check_field_values(d: &mut FileDiags, f: &Field, fptr: &str) {
    let options: Option<Vec<&str>> = f
        .options
        .as_ref()
        .map(|o| o.iter().map(|o| o.value()).collect());
    check_options(d, f, fptr, options.is_some());
    let Some(default) = &f.default else { return };
    if default.as_str().is_some_and(crate::vars::is_templated) {
        return; // a templated default is rendered at request time
    }
    let ptr = format!("{fptr}/default");
    if !default_fits_type(d, f, default, &ptr) {
        return;
    }
    if let Some(opts) = &options {
        default_among_options(d, f, default, opts, &ptr);
    }
    default_format_and_range(d, f, default, &ptr);
}

/// Whether the default has the field type's JSON type; reports it when not.
fn default_fits_type(d: &mut FileDiags, f: &Field, default: &Value, ptr: &str) -> bool {
    let ty = f.field_type;
    let fits = match ty {
        FieldType::Number => default.is_number(),
        FieldType::Integer => default.is_i64() || default.is_u64(),
        FieldType::Boolean => default.is_boolean(),
        FieldType::Multiselect | FieldType::CheckboxList | FieldType::List => default.is_array(),
        FieldType::KeyValue => default.is_object(),
        FieldType::Json => true,
        FieldType::Secret => false,
        _ => default.is_string(),
    };
    if !fits {
        let msg = if ty == FieldType::Secret {
            format!("secret field `{}` cannot have a default", f.id)
        } else {
            format!(
                "default {} does not fit field `{}` of type {}",
                default,
                f.id,
                ty.as_str()
            )
        };
        d.error(
            codes::FIELD_VALUE_TYPE,
            ptr,
            msg,
            Some(expected_hint(ty).to_string()),
        );
    }
    fits
}

/// Each value of the default is one of the options.
fn default_among_options(d: &mut FileDiags, f: &Field, default: &Value, opts: &[&str], ptr: &str) {
    let values: Vec<&Value> = match default {
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    for v in values {
        let s = v.as_str().unwrap_or("");
        if !opts.contains(&s) {
            let hint = did_you_mean(s, opts.iter().copied())
                .map(|x| format!("did you mean `{x}`?"))
                .unwrap_or_else(|| format!("options are: {}", opts.join(", ")));
            d.error(
                codes::FIELD_VALUE_TYPE,
                ptr,
                format!(
                    "default `{s}` of field `{}` is not one of its options",
                    f.id
                ),
                Some(hint),
            );
        }
    }
}

/// Dates, date-times, e-mails and CIDR blocks are well formed; numbers within min and max.
fn default_format_and_range(d: &mut FileDiags, f: &Field, default: &Value, ptr: &str) {
    let ty = f.field_type;
    let text = default.as_str();
    let bad_format = match (ty, text) {
        (FieldType::Date, Some(s)) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err(),
        (FieldType::Datetime, Some(s)) => chrono::DateTime::parse_from_rfc3339(s).is_err(),
        (FieldType::Email, Some(s)) => !s.contains('@'),
        (FieldType::Cidr, Some(s)) => !valid_cidr(s),
        _ => false,
    };
    if bad_format {
        d.error(
            codes::FIELD_VALUE_TYPE,
            ptr,
            format!(
                "default `{}` is not a valid {}",
                text.unwrap_or(""),
                ty.as_str()
            ),
            Some(expected_hint(ty).to_string()),
        );
    }
    if let (Some(n), Some(min)) = (default.as_f64(), f.min.as_ref().and_then(num))
        && n < min
    {
        d.error(
            codes::FIELD_VALUE_TYPE,
            ptr,
            format!("default {n} is below min {min}"),
            None,
        );
    }
    if let (Some(n), Some(max)) = (default.as_f64(), f.max.as_ref().and_then(num))
        && n > max
    {
        d.error(
            codes::FIELD_VALUE_TYPE,
            ptr,
            format!("default {n} is above max {max}"),
            None,
        );
    }
}

fn num(v: &NumberOrText) -> Option<f64> {
    match v {
        NumberOrText::Number(n) => Some(*n),
        NumberOrText::Text(_) => None,
    }
}

fn expected_hint(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Number => "write a number, e.g. 2.5",
        FieldType::Integer => "write a whole number, e.g. 3",
        FieldType::Boolean => "write true or false",
        FieldType::Multiselect | FieldType::CheckboxList | FieldType::List => {
            "write a list, e.g. [a, b]"
        }
        FieldType::KeyValue => "write a mapping, e.g. {team: data}",
        FieldType::Date => "write a date as YYYY-MM-DD",
        FieldType::Datetime => "write an RFC 3339 date-time, e.g. 2026-01-31T09:00:00Z",
        FieldType::Cidr => "write a CIDR block, e.g. 10.0.0.0/16",
        FieldType::Secret => {
            "secrets are typed by the requester and never stored; remove the default"
        }
        _ => "write a string",
    }
}

/// IPv4 or IPv6 CIDR, e.g. `10.0.0.0/16`.
pub fn valid_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}
