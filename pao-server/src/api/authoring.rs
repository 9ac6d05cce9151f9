//! Authoring aids for catalog authors: validate an item, preview its form, try a template,
//! simulate a fulfillment — without saving anything.

use axum::Json;
use axum::extract::State;
use pao_core::catalog::Diagnostic;
use pao_core::service::{Evaluation, VariablesInput};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::Body;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// An item given inline (`yaml`) or by id (`item_id`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemSource {
    /// The item file's text.
    pub yaml: Option<String>,
    /// Or an item of the loaded catalog.
    pub item_id: Option<String>,
    /// File name used in diagnostics (default `item.yaml`).
    pub file: Option<String>,
    /// Field values (simulation only).
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Value>,
}

fn diagnostics_json(d: &[Diagnostic]) -> Value {
    serde_json::to_value(d).unwrap_or(Value::Null)
}

/// Checks an inline item as the catalog loader would.
async fn load_inline(
    state: &AppState,
    src: &ItemSource,
) -> Result<(Option<pao_core::catalog::LoadedItem>, Vec<Diagnostic>), ApiError> {
    let yaml = src
        .yaml
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("send `yaml` (the item file's text)"))?;
    let file = src.file.as_deref().unwrap_or("item.yaml");
    Ok(state.orch.check_item_file(file, yaml).await?)
}

/// The verdict on an item file.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemVerdict {
    /// Loads with no errors.
    pub valid: bool,
    /// The item's id, when it loads.
    pub id: Option<String>,
    /// Errors.
    pub errors: usize,
    /// Warnings and hints.
    pub warnings: usize,
    /// Every diagnostic, located.
    #[schema(value_type = Vec<super::admin::DiagnosticDoc>)]
    pub diagnostics: Value,
}

/// The form an item would produce.
#[derive(Debug, Serialize, ToSchema)]
pub struct FormPreview {
    /// The form.
    pub schema: super::catalog::FormSchema,
    /// Warnings and hints of the item file.
    #[schema(value_type = Vec<super::admin::DiagnosticDoc>)]
    pub diagnostics: Value,
}

/// A template or expression error, located.
#[derive(Debug, Serialize, ToSchema)]
pub struct VarErrorView {
    /// Kind (`syntax`, `unknown-scope`, ...).
    pub kind: String,
    /// What is wrong.
    pub message: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The template with a caret under the error.
    pub snippet: Option<String>,
    /// How to fix it.
    pub hint: Option<String>,
}

/// The result of rendering a template or evaluating an expression. `ok` tells which members
/// are there: `value` (and `uses_secrets` for templates), or `error`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariablesResult {
    /// Whether it rendered.
    pub ok: bool,
    /// The value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub value: Option<Value>,
    /// Whether a template read `secrets` (its value is then masked in logs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses_secrets: Option<bool>,
    /// Why it did not render.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<VarErrorView>,
}

/// `POST /validate/catalog-item`: diagnostics of one item (`valid` is false when any is an
/// error). Always `200` when the body is well-formed: the verdict is in the document.
pub async fn validate(
    State(state): State<AppState>,
    Caller(_who): Caller,
    Body(src): Body<ItemSource>,
) -> Result<Json<ItemVerdict>, ApiError> {
    let (item, diags) = load_inline(&state, &src).await?;
    let errors = diags.iter().filter(|d| d.is_error()).count();
    Ok(Json(ItemVerdict {
        valid: item.is_some() && errors == 0,
        id: item.as_ref().map(|i| i.id().to_string()),
        errors,
        warnings: diags.len() - errors,
        diagnostics: diagnostics_json(&diags),
    }))
}

/// `POST /preview/form`: the form schema an item would produce.
pub async fn preview_form(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(src): Body<ItemSource>,
) -> Result<Json<FormPreview>, ApiError> {
    if let Some(id) = &src.item_id {
        return Ok(Json(FormPreview {
            schema: super::catalog::FormSchema(state.orch.form_of(&who, id)?),
            diagnostics: json!([]),
        }));
    }
    let (item, diags) = load_inline(&state, &src).await?;
    match item {
        Some(i) => Ok(Json(FormPreview {
            schema: super::catalog::FormSchema(pao_core::form::form_schema(&i.item)),
            diagnostics: diagnostics_json(&diags),
        })),
        None => Err(ApiError::unprocessable(
            "PAO-API-INVALID-ITEM",
            "the item has errors; fix them to preview its form",
            diagnostics_json(&diags),
        )),
    }
}

/// Body of `POST /test/variables`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestVariables {
    /// A template (`Hello ${{ user.name }}`).
    pub template: Option<String>,
    /// Or a bare expression (`fields.env == 'prod'`).
    pub expression: Option<String>,
    /// Scope values: `fields`, `user`, `metadata`, `request`, `system`, `env`, `outputs`,
    /// `computed`, `secrets`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: serde_json::Map<String, Value>,
}

/// `POST /test/variables`: renders a template or evaluates an expression against a context
/// the caller gives; errors come back located, with a caret under the template.
pub async fn test_variables(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(body): Body<TestVariables>,
) -> Result<Json<VariablesResult>, ApiError> {
    let input = match (body.template, body.expression) {
        (Some(t), None) => VariablesInput::Template(t),
        (None, Some(x)) => VariablesInput::Expression(x),
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of `template` or `expression`",
            ));
        }
    };
    let out = match state.orch.evaluate(&who, &input, &body.context)? {
        Evaluation::Value {
            value,
            uses_secrets,
        } => VariablesResult {
            ok: true,
            value: Some(value),
            uses_secrets,
            error: None,
        },
        Evaluation::Error(e) => {
            let (line, column) = e.line_col().unzip();
            VariablesResult {
                ok: false,
                value: None,
                uses_secrets: None,
                error: Some(VarErrorView {
                    kind: e.kind().as_str().to_string(),
                    message: e.message().to_string(),
                    line,
                    column,
                    snippet: e.snippet(),
                    hint: e.hint().map(|s| s.to_string()),
                }),
            }
        }
    };
    Ok(Json(out))
}

/// What a request would do: `item_id`, `mode`, `approval_required`, `computed` values, the
/// `actions` in plan order (whether each runs, its rendered input with secrets masked, its
/// timeout) and `worst_case_ms`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = SimulationDoc)]
pub struct SimulationView(pub pao_core::engine::Simulation);

/// What a request would do, without running anything (the API shape of
/// `pao_core::engine::Simulation`).
#[derive(ToSchema)]
#[schema(as = Simulation)]
#[allow(dead_code)]
pub struct SimulationDoc {
    /// The item.
    item_id: String,
    /// `manual` or `automated`.
    mode: String,
    /// Whether the request would wait for approval.
    approval_required: bool,
    /// The cost its admission would estimate; `null` when the item declares no cost.
    cost: Option<super::requests::AdmissionCostDoc>,
    /// The item's computed values for these fields.
    #[schema(value_type = Object)]
    computed: Value,
    /// Each action in plan order.
    actions: Vec<SimulatedActionDoc>,
    /// Upper bound of the fulfillment time: the critical path of timeouts.
    worst_case_ms: u64,
    /// Problems found on the way (render errors, missing action types).
    problems: Vec<String>,
}

/// One action of a simulation (the API shape of `pao_core::engine::SimulatedAction`).
#[derive(ToSchema)]
#[schema(as = SimulatedAction)]
#[allow(dead_code)]
pub struct SimulatedActionDoc {
    /// Action id.
    id: String,
    /// Action type.
    action_type: String,
    /// `main` or `post_fulfillment`.
    phase: String,
    /// Parallel group.
    group: Option<String>,
    /// Direct dependencies.
    depends_on: Vec<String>,
    /// Whether its `when` holds (`null` when it cannot be decided before running).
    will_run: Option<bool>,
    /// The input it would get (secrets as `[secret:<name>]`).
    #[schema(value_type = Object)]
    input: Value,
    /// What it would send (its dry run), for action types that can say without sending.
    #[schema(value_type = Option<Object>)]
    request: Option<Value>,
    /// The sample output its type describes.
    #[schema(value_type = Value)]
    sample_output: Value,
    /// Its timeout.
    timeout_ms: u64,
    /// When it would finish at the latest, from the start.
    latest_finish_ms: u64,
}

/// `POST /simulate/fulfillment`: what a request for `item_id` with `fields` would do — the
/// plan, which actions run, rendered inputs (secrets masked), approval, worst-case time —
/// without running anything.
pub async fn simulate(
    State(state): State<AppState>,
    Caller(who): Caller,
    Body(src): Body<ItemSource>,
) -> Result<Json<SimulationView>, ApiError> {
    let id = src
        .item_id
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("send `item_id` and `fields`"))?;
    state.orch.visible_item(&who, id)?;
    let fields = src.fields.clone().unwrap_or_else(|| json!({}));
    let sim = state.orch.simulate(&who, id, &fields).await?;
    Ok(Json(SimulationView(sim)))
}

/// What the authoring endpoints read of their bodies. The handlers parse one
/// [`ItemSource`] (or [`TestVariables`]); these schemas say which members each one needs.
pub mod doc {
    use utoipa::openapi::schema::{
        AdditionalProperties, AllOfBuilder, AnyOfBuilder, OneOfBuilder, Schema,
    };
    use utoipa::openapi::{ObjectBuilder, RefOr, Type};
    use utoipa::{PartialSchema, ToSchema};

    fn text(desc: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(desc))
    }

    fn text_or_null(desc: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                Type::String,
                Type::Null,
            ]))
            .description(Some(desc))
    }

    fn object_or_null(desc: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                Type::Object,
                Type::Null,
            ]))
            .description(Some(desc))
    }

    const YAML: &str = "The item file's text (at most 1 MiB).";
    const FILE: &str = "File name used in diagnostics (default `item.yaml`).";

    fn closed(o: ObjectBuilder) -> ObjectBuilder {
        o.additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
    }

    /// Body of `POST /validate/catalog-item`: `yaml` is required.
    pub struct ValidateItem;

    impl PartialSchema for ValidateItem {
        fn schema() -> RefOr<Schema> {
            closed(
                ObjectBuilder::new()
                    .description(Some("An item file to validate."))
                    .property("yaml", text(YAML))
                    .property("file", text_or_null(FILE))
                    .required("yaml"),
            )
            .into()
        }
    }

    impl ToSchema for ValidateItem {}

    /// Body of `POST /preview/form`: an item of the catalog (`item_id`) or a file (`yaml`).
    pub struct PreviewItem;

    impl PartialSchema for PreviewItem {
        fn schema() -> RefOr<Schema> {
            let members = closed(
                ObjectBuilder::new()
                    .property("item_id", text_or_null("An item of the loaded catalog."))
                    .property("yaml", text_or_null(YAML))
                    .property("file", text_or_null(FILE)),
            );
            let either = AnyOfBuilder::new()
                .item(
                    ObjectBuilder::new()
                        .property("item_id", text("An item of the loaded catalog."))
                        .required("item_id"),
                )
                .item(
                    ObjectBuilder::new()
                        .property("yaml", text(YAML))
                        .required("yaml"),
                );
            AllOfBuilder::new()
                .description(Some(
                    "An item of the catalog (`item_id`, which wins when both are given) or a file (`yaml`).",
                ))
                .item(members)
                .item(either)
                .into()
        }
    }

    impl ToSchema for PreviewItem {}

    /// Body of `POST /simulate/fulfillment`.
    pub struct SimulateItem;

    impl PartialSchema for SimulateItem {
        fn schema() -> RefOr<Schema> {
            closed(
                ObjectBuilder::new()
                    .description(Some("An item of the catalog and field values."))
                    .property("item_id", text("An item of the loaded catalog."))
                    .property(
                        "fields",
                        object_or_null(
                            "Field values (default: none), checked against the item's form.",
                        ),
                    )
                    .required("item_id"),
            )
            .into()
        }
    }

    impl ToSchema for SimulateItem {}

    /// Body of `POST /test/variables`: exactly one of `template` and `expression`.
    pub struct TestVariablesBody;

    impl PartialSchema for TestVariablesBody {
        fn schema() -> RefOr<Schema> {
            let mut context = ObjectBuilder::new().description(Some(
                "Scope values; the `user` scope defaults to the caller.",
            ));
            for scope in [
                "fields", "user", "metadata", "request", "system", "env", "outputs", "computed",
                "secrets",
            ] {
                context = context.property(
                    scope,
                    ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::AnyValue),
                );
            }
            let members = closed(
                ObjectBuilder::new()
                    .property(
                        "template",
                        text_or_null("A template (`Hello ${{ user.name }}`)."),
                    )
                    .property(
                        "expression",
                        text_or_null("A bare expression (`fields.env == 'prod'`)."),
                    )
                    .property("context", closed(context)),
            );
            let one = OneOfBuilder::new()
                .item(
                    ObjectBuilder::new()
                        .property("template", text("A template."))
                        .required("template"),
                )
                .item(
                    ObjectBuilder::new()
                        .property("expression", text("An expression."))
                        .required("expression"),
                );
            AllOfBuilder::new()
                .description(Some(
                    "A template or an expression (exactly one), and a context.",
                ))
                .item(members)
                .item(one)
                .into()
        }
    }

    impl ToSchema for TestVariablesBody {}
}
