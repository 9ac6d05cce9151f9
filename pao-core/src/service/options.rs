//! The options of a select-like field: listed in the item, taken from the catalog (items,
//! teams, environments), or fetched from an HTTP source through an [`OptionFetcher`].
//!
//! An HTTP source's URL and headers are templates over the values of the fields it depends
//! on (given by the caller), the caller, `env` and the item's metadata, compiled with the
//! catalog's variable engine (embedder functions included) when the catalog loads, as is its
//! `items` JSONPath ([`CompiledSource`]). Only the parameters naming a
//! field the templates read become `fields.*`, each at most [`MAX_PARAM_BYTES`] without
//! control characters; the URL is a URL template, so a value cannot leave its place in the
//! path or query. The answer's items are found with the source's JSONPath (`items`) and each
//! is mapped to a value and a label; at most [`MAX_OPTIONS`] are kept.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::authz::Principal;
use crate::catalog::model::{CatalogSourceKind, Field, FieldOption, HttpSource};
use crate::catalog::{CompiledSource, LoadedItem};
use crate::engine::{EngineError, Orchestrator};
use crate::secrets::SecretError;
use crate::vars::{Context, Scope, Template};

/// The longest value of a parameter that becomes a field value.
pub const MAX_PARAM_BYTES: usize = 256;
/// At most this many options are returned.
pub const MAX_OPTIONS: usize = 5_000;

/// One option: the value stored in the request and the label shown.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionValue {
    /// The value.
    pub value: Value,
    /// The label.
    pub label: Value,
}

/// Where a field's options came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionsFrom {
    /// Listed in the item.
    Static,
    /// The catalog (items, teams, environments).
    Catalog,
    /// An HTTP GET.
    Http,
}

/// A field's options.
#[derive(Debug, Clone)]
pub struct FieldOptions {
    /// The options, in source order.
    pub options: Vec<OptionValue>,
    /// Where they came from.
    pub from: OptionsFrom,
}

/// Why a field's options could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// The field has neither options nor a source.
    #[error("{0}")]
    NoOptions(String),
    /// A parameter given for a field value is refused.
    #[error("{0}")]
    Param(String),
    /// A template of the source does not render, or is not an http(s) URL.
    #[error("{0}")]
    Template(String),
    /// The source failed or answered something PAO does not take.
    #[error("{0}")]
    Source(String),
}

/// Why an [`OptionFetcher`] gave no document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The rendered URL is not a URL.
    InvalidUrl(String),
    /// The source failed, or answered too much, not JSON, or not 2xx.
    Source(String),
}

/// The one I/O step of HTTP options: GET `url` with `headers`, give the answer's JSON. The
/// implementation bounds time, size and redirects (PAO's server: 5 s, 1 MiB, same origin).
#[async_trait]
pub trait OptionFetcher: Send + Sync {
    /// The JSON document at `url`.
    async fn get_json(&self, url: &str, headers: &[(String, String)]) -> Result<Value, FetchError>;
}

fn field<'a>(item: &'a LoadedItem, field_id: &str) -> Option<&'a Field> {
    item.item
        .presentation
        .iter()
        .flat_map(|p| p.groups.iter())
        .flat_map(|g| g.fields.iter())
        .find(|f| f.id == field_id)
}

fn option(value: &str, label: &str) -> OptionValue {
    OptionValue {
        value: json!(value),
        label: json!(label),
    }
}

impl Orchestrator {
    /// The options of field `field_id` of an item `who` may see. `params` are the values of
    /// the fields an HTTP source depends on.
    pub async fn field_options(
        &self,
        who: &Principal,
        item_id: &str,
        field_id: &str,
        params: &BTreeMap<String, String>,
        fetcher: &dyn OptionFetcher,
    ) -> Result<FieldOptions, EngineError> {
        let item = self.visible_item(who, item_id)?;
        let field = field(&item, field_id).ok_or_else(|| {
            EngineError::NotFound(format!("field `{field_id}` of item `{item_id}`"))
        })?;
        if let Some(opts) = &field.options {
            let options = opts
                .iter()
                .map(|o| match o {
                    FieldOption::Plain(s) => option(s, s),
                    FieldOption::Labeled(l) => OptionValue {
                        value: serde_json::to_value(&l.value).unwrap_or(Value::Null),
                        label: json!(l.label),
                    },
                })
                .collect();
            return Ok(FieldOptions {
                options,
                from: OptionsFrom::Static,
            });
        }
        let source = field.source.as_ref();
        if let Some(c) = source.and_then(|s| s.catalog.as_ref()) {
            return Ok(FieldOptions {
                options: self.catalog_options(who, c.kind, c.category.as_deref()),
                from: OptionsFrom::Catalog,
            });
        }
        if let Some(http) = source.and_then(|s| s.http.as_ref()) {
            let compiled = item.compiled.sources.get(field_id).ok_or_else(|| {
                OptionsError::Template(format!("the source of field `{field_id}` did not compile"))
            })?;
            return Ok(FieldOptions {
                options: self
                    .http_options(who, &item, http, compiled, params, fetcher)
                    .await?,
                from: OptionsFrom::Http,
            });
        }
        let why = match source {
            None => format!("field `{field_id}` has neither options nor a source"),
            Some(_) => format!("field `{field_id}` has an empty source"),
        };
        Err(OptionsError::NoOptions(why).into())
    }

    fn catalog_options(
        &self,
        who: &Principal,
        kind: CatalogSourceKind,
        category: Option<&str>,
    ) -> Vec<OptionValue> {
        let catalog = self.catalog();
        let settings = catalog.settings();
        match kind {
            CatalogSourceKind::Items => catalog
                .items()
                .filter(|i| category.is_none_or(|c| i.item.metadata.category == c))
                .filter(|i| self.may_see_item(who, i))
                .map(|i| option(i.id(), &i.item.metadata.name))
                .collect(),
            CatalogSourceKind::Teams => settings
                .and_then(|s| s.teams.as_ref())
                .into_iter()
                .flatten()
                .map(|t| option(&t.id, &t.name))
                .collect(),
            CatalogSourceKind::Environments => settings
                .and_then(|s| s.environments.as_ref())
                .into_iter()
                .flatten()
                .map(|e| option(&e.id, &e.name))
                .collect(),
        }
    }

    async fn http_options(
        &self,
        who: &Principal,
        item: &LoadedItem,
        src: &HttpSource,
        compiled: &CompiledSource,
        params: &BTreeMap<String, String>,
        fetcher: &dyn OptionFetcher,
    ) -> Result<Vec<OptionValue>, EngineError> {
        let mut templates = vec![&compiled.url];
        templates.extend(compiled.headers.iter().map(|(_, t)| t));
        let fields = field_values(&templates, params)?;
        // Secrets only in headers: a URL shows up in errors and in the source's logs.
        let secrets = self.source_secrets(&item.item, &templates[1..]).await?;
        let (user, env) = (who.to_scope(), Value::Object(self.config.env.clone()));
        let metadata = serde_json::to_value(&item.item.metadata).unwrap_or(Value::Null);
        let ctx = Context::new()
            .with(Scope::Fields, &fields)
            .with(Scope::User, &user)
            .with(Scope::Env, &env)
            .with(Scope::Metadata, &metadata)
            .with(Scope::Secrets, &secrets);
        let render = |t: &Template| -> Result<String, OptionsError> {
            t.render(&ctx).map_err(|e| {
                OptionsError::Template(format!(
                    "{e} (pass the fields this source depends on as query parameters)"
                ))
            })
        };
        let url = render(&compiled.url)?;
        check_url(&url)?;
        let mut rendered = Vec::new();
        for (k, t) in &compiled.headers {
            rendered.push((k.clone(), render(t)?));
        }
        let doc = fetcher
            .get_json(&url, &rendered)
            .await
            .map_err(|e| match e {
                FetchError::InvalidUrl(why) => OptionsError::Template(why),
                FetchError::Source(why) => OptionsError::Source(why),
            })?;
        Ok(pick_options(&compiled.items.query(&doc).all(), src))
    }
}

impl Orchestrator {
    /// The secrets a source's header templates read (`secrets.<name>`), from the
    /// orchestrator's secret provider, as actions get them: a secret that does not exist or is
    /// not granted is left out (the header that reads it fails to render); a failing provider
    /// fails the call. The values go to the source only, never into an answer or an error.
    async fn source_secrets(
        &self,
        item: &crate::catalog::model::CatalogItem,
        templates: &[&Template],
    ) -> Result<Value, OptionsError> {
        let names: BTreeSet<String> = templates
            .iter()
            .flat_map(|t| t.references())
            .filter_map(|r| r.secret_name().map(str::to_owned))
            .filter(|name| self.secret_grant(item, name).is_ok())
            .collect();
        let mut out = Map::new();
        for name in names {
            match self.secrets.get(&name).await {
                Ok(value) => {
                    out.insert(name, Value::String(value));
                }
                Err(SecretError::Unavailable(why)) => {
                    return Err(OptionsError::Source(format!(
                        "options source: secret `{name}`: {why}"
                    )));
                }
                Err(SecretError::NotFound(_) | SecretError::Denied(_)) => {}
            }
        }
        Ok(Value::Object(out))
    }
}

/// Only http and https sources (the fetcher checks the rest of the URL).
fn check_url(url: &str) -> Result<(), OptionsError> {
    match url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()) {
        Some(s) if s == "http" || s == "https" => Ok(()),
        Some(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            Err(OptionsError::Template("only http and https sources".into()))
        }
        _ => Err(OptionsError::Template(format!("`{url}` is not a URL"))),
    }
}

/// The field values of the call: the parameters naming a field that `templates` read, each
/// checked.
fn field_values(
    templates: &[&Template],
    params: &BTreeMap<String, String>,
) -> Result<Value, OptionsError> {
    let read: BTreeSet<String> = templates
        .iter()
        .flat_map(|t| t.references())
        .filter(|r| r.scope == Scope::Fields)
        .filter_map(|r| r.path.first().cloned())
        .collect();
    let mut fields = Map::new();
    for (k, v) in params.iter().filter(|(k, _)| read.contains(*k)) {
        if v.len() > MAX_PARAM_BYTES {
            return Err(OptionsError::Param(format!(
                "query parameter `{k}` is longer than {MAX_PARAM_BYTES} bytes"
            )));
        }
        if v.chars().any(char::is_control) {
            return Err(OptionsError::Param(format!(
                "query parameter `{k}` holds a control character"
            )));
        }
        fields.insert(k.clone(), Value::String(v.clone()));
    }
    Ok(Value::Object(fields))
}

/// Maps what the JSONPath found (one array: its elements) to options.
fn pick_options(found: &[&Value], src: &HttpSource) -> Vec<OptionValue> {
    let list: Vec<&Value> = match found {
        [Value::Array(a)] => a.iter().collect(),
        other => other.to_vec(),
    };
    let pick = |v: &Value, key: Option<&String>| -> Value {
        match (v, key) {
            (Value::Object(o), Some(k)) => o.get(k).cloned().unwrap_or(Value::Null),
            (other, _) => other.clone(),
        }
    };
    list.into_iter()
        .take(MAX_OPTIONS)
        .map(|v| {
            let value = pick(v, src.value.as_ref());
            let label = match src.label.as_ref() {
                Some(_) => pick(v, src.label.as_ref()),
                None => value.clone(),
            };
            OptionValue { value, label }
        })
        .collect()
}
