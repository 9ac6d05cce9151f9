//! The template scopes of a run: request, item, environment, computed values and secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};

use super::Orchestrator;
use crate::catalog::LoadedItem;
use crate::redact::Redactor;
use crate::sealing::DataKey;
use crate::secrets::SecretError;
use crate::store::{Request, SEALED_FIELD_PREFIX};
use crate::vars::{Context, Scope};

/// The owned values behind a request's template context.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scopes {
    user: Value,
    metadata: Value,
    request: Value,
    system: Value,
    env: Value,
    fields: Value,
    pub(super) computed: Value,
    pub(super) secrets: Value,
    /// Every secret value of the run, for redaction; shared with its actions' loggers.
    pub redactor: Redactor,
    /// The request's data key, when it has sealed values.
    pub(super) data_key: Option<DataKey>,
    /// What the request sealed for rollbacks: the real input and rollback state of completed
    /// actions, by action id.
    pub(super) rollback_data: BTreeMap<String, (Value, Value)>,
}

/// The name under which the real input and rollback state of a completed action are sealed.
pub(super) fn rollback_name(action_id: &str) -> String {
    format!("rollback:{action_id}")
}

/// What a request sealed, opened: its data key, its `secret` form fields, and its rollback
/// data by action id.
#[derive(Default)]
pub(super) struct Opened {
    pub key: Option<DataKey>,
    pub fields: Map<String, Value>,
    pub rollback: BTreeMap<String, (Value, Value)>,
}

/// Opens the sealed values of `request_id`.
pub(super) async fn open_sealed(
    engine: &Orchestrator,
    request_id: &str,
) -> Result<Opened, ScopesError> {
    let sealed =
        engine.store.sealed(request_id).await.map_err(|e| {
            ScopesError::SecretsUnavailable(format!("reading the sealed secrets: {e}"))
        })?;
    let mut out = Opened::default();
    let Some(wrapped) = sealed.key else {
        return Ok(out);
    };
    let key = engine
        .keyring
        .unwrap_key(request_id, &wrapped)
        .map_err(|e| ScopesError::Failed(format!("the request's sealed secrets: {e}")))?;
    for (name, bytes) in &sealed.values {
        let plain = key
            .open(name, bytes)
            .map_err(|e| ScopesError::Failed(format!("the request's sealed secrets: {e}")))?;
        let value: Value = serde_json::from_slice(&plain)
            .map_err(|_| ScopesError::Failed(format!("sealed value `{name}` is not JSON")))?;
        if let Some(field) = name.strip_prefix(SEALED_FIELD_PREFIX) {
            out.fields.insert(field.to_string(), value);
        } else if let Some(action) = name.strip_prefix("rollback:") {
            let input = value.get("input").cloned().unwrap_or(Value::Null);
            let state = value.get("state").cloned().unwrap_or(Value::Null);
            out.rollback.insert(action.to_string(), (input, state));
        }
    }
    out.key = Some(key);
    Ok(out)
}

impl Scopes {
    pub(crate) fn context(&self) -> Context<'_> {
        Context::new()
            .with(Scope::User, &self.user)
            .with(Scope::Metadata, &self.metadata)
            .with(Scope::Request, &self.request)
            .with(Scope::System, &self.system)
            .with(Scope::Env, &self.env)
            .with(Scope::Fields, &self.fields)
            .with(Scope::Computed, &self.computed)
            .with(Scope::Secrets, &self.secrets)
    }

    pub(super) fn base(engine: &Orchestrator, request: &Request, item: &LoadedItem) -> Scopes {
        Scopes {
            user: request.requester.to_scope(),
            metadata: serde_json::to_value(&item.item.metadata).unwrap_or(Value::Null),
            request: Orchestrator::request_scope(request),
            system: engine.system_scope(),
            env: Value::Object(engine.config.env.clone()),
            fields: request.fields.clone(),
            ..Scopes::default()
        }
    }

    /// Scopes for admission (no secrets; computed values evaluated where they can be).
    pub(crate) fn for_admission(
        engine: &Orchestrator,
        request: &Request,
        item: &LoadedItem,
    ) -> Scopes {
        let mut s = Scopes::base(engine, request, item);
        let _ = s.compute(item);
        s
    }

    /// Evaluates the computed values in order. A value built from a secret (the text of an
    /// interpolation that read one) is redacted like the secret.
    pub(super) fn compute(&mut self, item: &LoadedItem) -> Result<(), String> {
        let mut computed = Map::new();
        for (name, t) in &item.compiled.computed {
            self.computed = Value::Object(computed.clone());
            let ctx = self.context();
            let rendered = if t.uses_secrets() {
                t.render_tracked(&ctx).map(|r| {
                    self.redactor.add_all(
                        r.secrets
                            .iter()
                            .filter(|s| !matches!(s.as_str(), "true" | "false" | "null")),
                    );
                    r.value
                })
            } else {
                t.render_value(&ctx)
            };
            let v =
                rendered.map_err(|e| format!("computed `{name}`: {}", self.redact(e.message())))?;
            computed.insert(name.clone(), v);
        }
        self.computed = Value::Object(computed);
        Ok(())
    }

    /// The scopes of a run. `fresh`: the request never ran, so it sealed nothing but what
    /// its submission did (its secret fields); without secret fields the store is not read.
    pub(super) async fn for_run(
        engine: &Orchestrator,
        request: &Request,
        item: &LoadedItem,
        fresh: bool,
    ) -> Result<Scopes, ScopesError> {
        let mut s = Scopes::base(engine, request, item);
        let secret_fields = item.item.secret_field_ids();
        let opened = if fresh && secret_fields.is_empty() {
            Opened::default()
        } else {
            open_sealed(engine, &request.id).await?
        };
        s.data_key = opened.key;
        s.rollback_data = opened.rollback;
        // Fetch only the secrets the item's templates read.
        let mut names = BTreeSet::new();
        let mut collect = |refs: Vec<crate::vars::Reference>| {
            names.extend(
                refs.iter()
                    .filter_map(|r| r.secret_name())
                    .map(str::to_owned),
            );
        };
        let c = &item.compiled;
        for (_, t) in &c.computed {
            collect(t.references());
        }
        for a in c.actions.values() {
            a.config
                .for_each_template(&mut |_, t| collect(t.references()));
            if let Some(rb) = &a.rollback {
                rb.for_each_template(&mut |_, t| collect(t.references()));
            }
            if let Some(w) = &a.when {
                collect(w.references());
            }
        }
        for t in c.sections.values() {
            t.for_each_template(&mut |_, t| collect(t.references()));
        }
        let mut secrets = Map::new();
        for name in names {
            if secret_fields.contains(name.as_str()) {
                continue;
            }
            engine
                .secret_grant(&item.item, &name)
                .map_err(ScopesError::Failed)?;
            match engine.secrets.get(&name).await {
                Ok(v) => {
                    s.redactor.add(&v);
                    secrets.insert(name, Value::String(v));
                }
                Err(SecretError::Unavailable(why)) => {
                    return Err(ScopesError::SecretsUnavailable(format!(
                        "secret `{name}`: {why}"
                    )));
                }
                // A missing or refused secret: the template that reads it fails, for good.
                Err(SecretError::NotFound(_) | SecretError::Denied(_)) => {}
            }
        }
        // Secret form fields of this request, sealed when it was submitted.
        for (k, v) in opened.fields {
            if let Some(text) = v.as_str() {
                s.redactor.add(text);
            }
            secrets.insert(k, v);
        }
        s.secrets = Value::Object(secrets);
        s.compute(item).map_err(ScopesError::Failed)?;
        Ok(s)
    }

    pub(super) fn redact_json(&self, v: &Value) -> Value {
        self.redactor.redact_json(v)
    }

    pub(super) fn redact(&self, text: &str) -> String {
        self.redactor.redact_str(text).into_owned()
    }
}

/// Why a run's scopes could not be built.
pub(super) enum ScopesError {
    /// A template cannot be rendered: the request fails.
    Failed(String),
    /// The secret provider did not answer: the request waits and is tried again.
    SecretsUnavailable(String),
}

/// How long a run waits, holding its lease, after the secret provider failed, before it gives
/// the request back to be claimed again.
pub(crate) const SECRETS_UNAVAILABLE_WAIT: Duration = Duration::from_secs(10);
