//! Aids for catalog authors: check an item file, preview its form, evaluate a template or an
//! expression. Nothing is saved.

use serde_json::{Map, Value};

use crate::authz::Principal;
use crate::catalog::{Diagnostic, LoadedItem, MAX_FILE_BYTES, load_item};
use crate::engine::{EngineError, Orchestrator};
use crate::vars::{Context, Scope, VarError};

/// What to evaluate: a template (`Hello ${{ user.name }}`) or a bare expression
/// (`fields.env == 'prod'`), against scope values the caller gives.
#[derive(Debug, Clone)]
pub enum VariablesInput {
    /// A template.
    Template(String),
    /// A bare expression.
    Expression(String),
}

/// The result of an evaluation.
#[derive(Debug)]
pub enum Evaluation {
    /// It rendered: the value and, for templates, whether it read `secrets` (its value is
    /// then masked in logs).
    Value {
        /// The value.
        value: Value,
        /// Templates only: whether it read `secrets`.
        uses_secrets: Option<bool>,
    },
    /// It did not compile or render: the located error.
    Error(VarError),
}

/// The scopes an author may give values for (`result` is an action's own).
const AUTHOR_SCOPES: [Scope; 9] = [
    Scope::User,
    Scope::Metadata,
    Scope::Request,
    Scope::System,
    Scope::Env,
    Scope::Fields,
    Scope::Outputs,
    Scope::Computed,
    Scope::Secrets,
];

impl Orchestrator {
    /// Loads an item file given as text, as the catalog loader would, on a blocking thread
    /// (a large item takes CPU that must not hold up the async workers). A file over
    /// [`MAX_FILE_BYTES`] is refused as [`EngineError::TooLarge`].
    pub async fn check_item_file(
        &self,
        file: &str,
        yaml: &str,
    ) -> Result<(Option<LoadedItem>, Vec<Diagnostic>), EngineError> {
        if yaml.len() > MAX_FILE_BYTES {
            return Err(EngineError::TooLarge(format!(
                "an item file may have at most {MAX_FILE_BYTES} bytes"
            )));
        }
        let (file, yaml) = (file.to_string(), yaml.to_string());
        let options = self.load_options.clone();
        tokio::task::spawn_blocking(move || load_item(&file, &yaml, &options))
            .await
            .map_err(|e| EngineError::Invalid(format!("checking the item stopped: {e}")))
    }

    /// The form schema (JSON Schema 2020-12 with UI hints) of an item `who` may see, with
    /// its maintenance windows now under `x-pao-maintenance`.
    pub fn form_of(&self, who: &Principal, item_id: &str) -> Result<Value, EngineError> {
        let item = self.visible_item(who, item_id)?;
        let mut schema = crate::form::form_schema(&item.item);
        let windows = self.maintenance_of(&item);
        if !windows.is_empty()
            && let Some(o) = schema.as_object_mut()
        {
            o.insert(
                "x-pao-maintenance".into(),
                serde_json::to_value(windows).unwrap_or(Value::Null),
            );
        }
        Ok(schema)
    }

    /// The item's maintenance windows now: whether one is in progress, and the next.
    pub fn maintenance_of(
        &self,
        item: &crate::catalog::LoadedItem,
    ) -> Vec<crate::catalog::maintenance::WindowStatus> {
        crate::catalog::maintenance::windows(&item.item, self.clock.now())
    }

    /// Evaluates a template or an expression with the catalog's variable engine (embedder
    /// functions included) against `context`, a map of scope name to value. `user` defaults
    /// to the caller. An unknown scope name is `InvalidInput` at `/context/<name>`.
    pub fn evaluate(
        &self,
        who: &Principal,
        input: &VariablesInput,
        context: &Map<String, Value>,
    ) -> Result<Evaluation, EngineError> {
        for k in context.keys() {
            if !AUTHOR_SCOPES.iter().any(|s| s.name() == k) {
                return Err(EngineError::input(
                    format!("/context/{}", k.replace('~', "~0").replace('/', "~1")),
                    format!("unknown scope `{k}` in `context`"),
                ));
            }
        }
        let default_user = who.to_scope();
        let mut ctx = Context::new();
        for scope in AUTHOR_SCOPES {
            if let Some(v) = context.get(scope.name()) {
                ctx = ctx.with(scope, v);
            } else if scope == Scope::User {
                ctx = ctx.with(scope, &default_user);
            }
        }
        let engine = &self.load_options.engine;
        let out = match input {
            VariablesInput::Template(t) => engine
                .compile(t)
                .and_then(|tpl| tpl.render_tracked(&ctx))
                .map(|r| Evaluation::Value {
                    uses_secrets: Some(!r.secrets.is_empty()),
                    value: r.value,
                }),
            VariablesInput::Expression(x) => engine
                .compile_expression(x)
                .and_then(|e| e.eval(&ctx))
                .map(|value| Evaluation::Value {
                    value,
                    uses_secrets: None,
                }),
        };
        Ok(out.unwrap_or_else(Evaluation::Error))
    }
}
