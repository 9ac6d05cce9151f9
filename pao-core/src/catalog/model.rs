//! Serde types of catalog Schema v2.0: one catalog item (`CatalogItem`) and the optional
//! catalog-wide settings file `catalog.yaml` (`CatalogSettings`).
//!
//! These types mirror `schemas/catalog-item.v2.schema.json` and `schemas/catalog.v2.schema.json`
//! property for property; `tests/catalog_contract.rs` fails when the two drift apart. They are
//! written by people, so every struct denies unknown fields, and every optional property is an
//! `Option` that is skipped when absent: deserializing an item and serializing it again gives
//! back the same JSON, without `null`s and without materialised defaults. Defaults (for example
//! `layout: wizard`) are applied by the code that reads the model, not here.
//!
//! Strings are kept as written: templates (`${{ … }}`) and bare expressions (`*_when`, `when`)
//! are compiled by the variable engine at load time, not by these types. Durations are
//! [`DurationText`]s: the text as written, parsed once when the item is read. Action `config` is a
//! free-form JSON value here; its shape per action type is checked against the JSON Schema and
//! by the action itself.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The only `apiVersion` this model accepts.
pub const API_VERSION: &str = "pao.dev/v2";
/// `kind` of a catalog item file.
pub const ITEM_KIND: &str = "CatalogItem";
/// `kind` of the catalog settings file `catalog.yaml`.
pub const CATALOG_KIND: &str = "Catalog";

/// The longest duration an item may state: ten years (3650 days).
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 3600);

/// A duration as the catalog writes it (`500ms`, `30s`, `10m`, `72h`, `30d`), parsed when the
/// item is read. It serializes back to its text. A text that is no duration, or one longer
/// than [`MAX_DURATION`], has no value; the loader refuses such an item (PAO-E021), so every
/// duration of a loaded item has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DurationText {
    text: String,
    value: Option<Duration>,
}

impl DurationText {
    /// Parses `text`.
    pub fn new(text: impl Into<String>) -> DurationText {
        let text = text.into();
        let value = crate::vars::parse_duration_ms(&text)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis)
            .filter(|d| *d <= MAX_DURATION);
        DurationText { text, value }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The duration; `None` when the text is not one PAO takes.
    pub fn get(&self) -> Option<Duration> {
        self.value
    }
}

impl From<&str> for DurationText {
    fn from(text: &str) -> DurationText {
        DurationText::new(text)
    }
}

impl From<String> for DurationText {
    fn from(text: String) -> DurationText {
        DurationText::new(text)
    }
}

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for DurationText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DurationText, D::Error> {
        String::deserialize(d).map(DurationText::new)
    }
}

// ------------------------------------------------------------------------------------------
// Item
// ------------------------------------------------------------------------------------------

/// One catalog item: one YAML file of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// Schema version; must be `pao.dev/v2` (checked by the loader, which hints v1 migration).
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Document kind; must be `CatalogItem`.
    pub kind: String,
    /// Identification, ownership, SLA, cost, compliance and access.
    pub metadata: ItemMetadata,
    /// The request form; absent for items that take no input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presentation: Option<Presentation>,
    /// Named derived values (name -> template), available as `computed.<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed: Option<BTreeMap<String, String>>,
    /// The provider's secrets this item's templates may read as `secrets.<name>` (its own
    /// `secret` form fields need no entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    /// How requests are fulfilled.
    pub fulfillment: Fulfillment,
    /// Lifecycle status, deprecation and maintenance windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// Health check, dashboards and alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
}

/// Identification and ownership of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemMetadata {
    /// Unique item id (`[a-z0-9][a-z0-9._-]*`), the API's `item_id`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What the requester gets.
    pub description: String,
    /// Semantic version of the definition.
    pub version: String,
    /// Category id (built-in or from `catalog.yaml`).
    pub category: String,
    /// Search keywords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Owning team.
    pub owner: Owner,
    /// Service levels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<Sla>,
    /// Cost indication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostInfo>,
    /// Compliance attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<Compliance>,
    /// Who may see and request the item; absent means everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// The environment a request targets: an environment id or a template (`${{
    /// fields.stage }}`). Without it, the value of the field whose options are the catalog's
    /// environments (`source.catalog.kind: environments`), if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// Owning team and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Team id of the owner.
    pub team: String,
    /// Contact e-mail addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    /// Slack channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<String>,
}

/// Service level commitments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    /// Target fulfillment time (duration string, e.g. `4h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillment: Option<DurationText>,
    /// Support hours, e.g. `business-hours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support: Option<String>,
    /// Availability target, e.g. `99.9%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
}

/// Cost indication shown before submitting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostInfo {
    /// ISO 4217 currency code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Monthly cost: a number or one `${{ }}` expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<NumberOrText>,
    /// One-off cost: a number or one `${{ }}` expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time: Option<NumberOrText>,
}

/// Compliance attributes of the provisioned service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compliance {
    /// Highest data classification the service may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_classification: Option<DataClassification>,
    /// Compliance frameworks satisfied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frameworks: Option<Vec<String>>,
    /// Whether personal data may be held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<bool>,
    /// Regions or jurisdictions where data may live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_residency: Option<Vec<String>>,
}

/// Data classification levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClassification {
    /// Public data.
    Public,
    /// Internal data.
    Internal,
    /// Confidential data.
    Confidential,
    /// Restricted data.
    Restricted,
}

/// Who may see and request an item; a requester must match every list present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Team ids allowed; `*` means every team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,
    /// Environment ids the item may be requested for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<String>>,
    /// Roles of which the requester needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

// ------------------------------------------------------------------------------------------
// Presentation
// ------------------------------------------------------------------------------------------

/// The request form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presentation {
    /// Wizard (page per group) or single page; default wizard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Field groups in display order.
    pub groups: Vec<FieldGroup>,
}

impl Presentation {
    /// Every field of every group, in display order.
    pub fn all_fields(&self) -> impl Iterator<Item = &Field> + '_ {
        self.groups.iter().flat_map(|group| group.fields.iter())
    }
}

/// Form layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One page per group.
    Wizard,
    /// All groups on one page.
    Single,
}

/// A group of fields (wizard page or form section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldGroup {
    /// Group id, unique within the item.
    pub id: String,
    /// Title of the page or section.
    pub title: String,
    /// Text under the title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Fields in display order.
    pub fields: Vec<Field>,
    /// Bare expression: group shown only when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_when: Option<String>,
    /// Bare expression: every field of the group required when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_when: Option<String>,
    /// Bare expression: group read-only when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_when: Option<String>,
}

/// One form field, readable in expressions as `fields.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Field id (`[a-z][a-z0-9_]*`), unique within the item.
    pub id: String,
    /// Field type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Label; default is the id in title case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Short explanation under the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Longer help text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Placeholder of an empty input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Whether a value is needed (never for hidden fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Initial value; must fit the type; may be one `${{ }}` expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Choices of select, multiselect, radio and `checkbox_list` fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<FieldOption>>,
    /// Lower bound (number, or ISO date / expression for date fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<NumberOrText>,
    /// Upper bound (number, or ISO date / expression for date fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<NumberOrText>,
    /// Minimum length in characters, or minimum number of items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Maximum length in characters, or maximum number of items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Granularity of number and integer fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// Regular-expression validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<FieldValidation>,
    /// Bare expression: field shown only when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_when: Option<String>,
    /// Bare expression: field required when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_when: Option<String>,
    /// Bare expression: field read-only when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_when: Option<String>,
    /// Dynamic options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<FieldSource>,
}

impl Field {
    /// Whether the value is a secret: never stored in request bodies, never logged.
    pub fn is_secret(&self) -> bool {
        self.field_type == FieldType::Secret
    }
}

/// The 20 field types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Single-line text.
    Text,
    /// Multi-line text.
    Textarea,
    /// Any number.
    Number,
    /// Whole number.
    Integer,
    /// Checkbox / toggle.
    Boolean,
    /// One choice from a drop-down.
    Select,
    /// Several choices from a drop-down.
    Multiselect,
    /// One choice shown as radio buttons.
    Radio,
    /// Several choices shown as checkboxes.
    CheckboxList,
    /// Calendar date (ISO 8601).
    Date,
    /// Date and time (RFC 3339).
    Datetime,
    /// E-mail address.
    Email,
    /// URL.
    Url,
    /// Secret value, redacted everywhere.
    Secret,
    /// Arbitrary JSON document.
    Json,
    /// Map of string keys to string values.
    KeyValue,
    /// List of strings.
    List,
    /// A team id.
    Team,
    /// A user id.
    User,
    /// An IPv4 or IPv6 CIDR block.
    Cidr,
}

impl FieldType {
    /// Every field type, in schema order.
    pub const ALL: [FieldType; 20] = [
        FieldType::Text,
        FieldType::Textarea,
        FieldType::Number,
        FieldType::Integer,
        FieldType::Boolean,
        FieldType::Select,
        FieldType::Multiselect,
        FieldType::Radio,
        FieldType::CheckboxList,
        FieldType::Date,
        FieldType::Datetime,
        FieldType::Email,
        FieldType::Url,
        FieldType::Secret,
        FieldType::Json,
        FieldType::KeyValue,
        FieldType::List,
        FieldType::Team,
        FieldType::User,
        FieldType::Cidr,
    ];

    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Textarea => "textarea",
            FieldType::Number => "number",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
            FieldType::Select => "select",
            FieldType::Multiselect => "multiselect",
            FieldType::Radio => "radio",
            FieldType::CheckboxList => "checkbox_list",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Email => "email",
            FieldType::Url => "url",
            FieldType::Secret => "secret",
            FieldType::Json => "json",
            FieldType::KeyValue => "key_value",
            FieldType::List => "list",
            FieldType::Team => "team",
            FieldType::User => "user",
            FieldType::Cidr => "cidr",
        }
    }

    /// Whether the type takes `options` (or a `source`).
    pub fn has_options(self) -> bool {
        matches!(
            self,
            FieldType::Select | FieldType::Multiselect | FieldType::Radio | FieldType::CheckboxList
        )
    }
}

/// A choice: a plain string, or a `{value, label}` pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldOption {
    /// Value and label are the same string.
    Plain(String),
    /// Value with a different label.
    Labeled(LabeledOption),
}

impl FieldOption {
    /// The value stored in the request.
    pub fn value(&self) -> &str {
        match self {
            FieldOption::Plain(value) => value,
            FieldOption::Labeled(option) => &option.value,
        }
    }

    /// The text shown to the requester.
    pub fn label(&self) -> &str {
        match self {
            FieldOption::Plain(value) => value,
            FieldOption::Labeled(option) => &option.label,
        }
    }
}

// Hand-written rather than `#[serde(untagged)]` so that a mistake inside `{value, label}`
// (an unknown key, a missing label) keeps serde's precise message instead of "did not match
// any variant".
impl<'de> Deserialize<'de> for FieldOption {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(value) => Ok(FieldOption::Plain(value)),
            value @ Value::Object(_) => LabeledOption::deserialize(value)
                .map(FieldOption::Labeled)
                .map_err(de::Error::custom),
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a string or a {value, label} map",
            )),
        }
    }
}

/// A choice whose label differs from its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabeledOption {
    /// Value stored in the request.
    pub value: String,
    /// Text shown to the requester.
    pub label: String,
}

/// A number, or a string (ISO date, or one `${{ }}` expression).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    /// A literal number.
    Number(f64),
    /// A date or a template.
    Text(String),
}

/// An integer, or a string that is exactly one `${{ }}` expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrTemplate {
    /// A literal integer.
    Int(i64),
    /// A template evaluating to an integer.
    Template(String),
}

/// Regular-expression validation of a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldValidation {
    /// Regex the whole value must match.
    pub pattern: String,
    /// Message shown on mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Dynamic options: exactly one of `http` or `catalog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSource {
    /// Options from an HTTP GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    /// Options from the catalog itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogSource>,
    /// Fields whose change re-fetches the options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
}

/// Options fetched from an HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// URL to GET (templated).
    pub url: String,
    /// `JSONPath` to the item array; default `$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// Item property used as value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Item property used as label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Request headers (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// Options taken from the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSource {
    /// What to list.
    pub kind: CatalogSourceKind,
    /// With `kind: items`, only this category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// What a catalog source lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogSourceKind {
    /// Catalog item ids.
    Items,
    /// Team ids.
    Teams,
    /// Environment ids.
    Environments,
}

// ------------------------------------------------------------------------------------------
// Fulfillment
// ------------------------------------------------------------------------------------------

/// How requests are fulfilled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fulfillment {
    /// Manual or automated, never both.
    pub mode: FulfillmentMode,
    /// Ticket of manual mode (fallback documentation in automated mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<ManualFulfillment>,
    /// Approval rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Submission-time checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prerequisites: Option<Prerequisites>,
    /// Timeout and retry defaults of the actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ExecutionDefaults>,
    /// Actions and parallel groups of automated mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<ActionStep>>,
    /// Actions after successful fulfillment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_fulfillment: Option<Vec<ActionSpec>>,
}

/// Fulfillment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FulfillmentMode {
    /// One JIRA ticket; the request completes when it is resolved.
    Manual,
    /// The actions run.
    Automated,
}

/// Manual fulfillment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualFulfillment {
    /// The ticket to create.
    pub jira: JiraTicket,
}

/// The JIRA ticket of a manual item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraTicket {
    /// Project key.
    pub project: String,
    /// Issue type name.
    pub issue_type: String,
    /// Summary (templated).
    pub summary: String,
    /// Description (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Priority name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Component names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
    /// Configured JIRA instance name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// Approval rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Bare expression; absent means always required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_when: Option<String>,
    /// Who may approve.
    pub approvers: Approvers,
    /// How long approval may take (duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// What happens on timeout; default reject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// Escalation; required with `on_timeout: escalate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
}

/// Who may approve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    /// Teams whose members may approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,
    /// Roles whose holders may approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Users who may approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    /// Distinct approvals needed; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_approvals: Option<u32>,
    /// Whether the requester may approve; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_self_approval: Option<bool>,
}

/// Escalation of a pending approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// Delay before escalating (duration).
    pub after: DurationText,
    /// Teams asked after the delay.
    pub teams: Vec<String>,
}

/// What happens when approval times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Reject the request.
    Reject,
    /// Ask the escalation teams.
    Escalate,
}

/// Submission-time checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prerequisites {
    /// Quota consumed from the requester's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaRequirement>,
}

/// Quota consumed by one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRequirement {
    /// Quota resource name.
    pub resource: String,
    /// Units consumed (integer or one `${{ }}` expression).
    pub amount: IntOrTemplate,
}

/// Timeout and retry defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionDefaults {
    /// Per-attempt timeout (duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

/// Retry policy of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts including the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay growth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// First delay (duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<DurationText>,
    /// Largest delay (duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<DurationText>,
    /// Random fraction 0..=1 applied to each delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

/// Delay growth between retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// Always the initial delay.
    Fixed,
    /// Initial delay doubled each attempt.
    Exponential,
    /// Initial delay times the attempt number.
    Linear,
}

/// One entry of `fulfillment.actions`: a parallel group or an action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "a catalog holds a few hundred steps, loaded once; boxing would only add noise"
)]
pub enum ActionStep {
    /// A parallel group (`{parallel: {...}}`).
    Parallel(ParallelBlock),
    /// A single action.
    Action(ActionSpec),
}

// Hand-written rather than `#[serde(untagged)]`: the `parallel` key decides the variant, and a
// mistake inside either keeps serde's precise message ("unknown field `descripton`, expected
// one of ...") instead of "data did not match any variant of untagged enum ActionStep".
impl<'de> Deserialize<'de> for ActionStep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let is_parallel = value
            .as_object()
            .is_some_and(|map| map.contains_key("parallel"));
        if is_parallel {
            ParallelBlock::deserialize(value)
                .map(ActionStep::Parallel)
                .map_err(de::Error::custom)
        } else {
            ActionSpec::deserialize(value)
                .map(ActionStep::Action)
                .map_err(de::Error::custom)
        }
    }
}

/// Wrapper of a parallel group: `{ parallel: { id, max_concurrency, actions } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelBlock {
    /// The group.
    pub parallel: ParallelGroup,
}

/// Actions that start together; the group ends when all end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelGroup {
    /// Group id, unique among action ids.
    pub id: String,
    /// Members running at once; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Member actions.
    pub actions: Vec<ActionSpec>,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Action id, unique within the item.
    pub id: String,
    /// Action type (built-in or `plugin:<name>`).
    #[serde(rename = "type")]
    pub action_type: ActionType,
    /// Configuration; shape depends on the type.
    pub config: Value,
    /// Actions or groups that must finish first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// Bare expression; skipped when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Per-attempt timeout (duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// What happens after the last failed attempt; default rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// Compensating action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackSpec>,
    /// Values kept from the result (name -> template over `result`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, String>>,
    /// Description shown in the timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether the action changes production (restricted periods apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<bool>,
}

/// Action type: one of the built-ins, or a plugin named `plugin:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActionType {
    /// Create or update a JIRA issue.
    Jira,
    /// Call an HTTP API.
    Rest,
    /// Run Terraform in Terraform Cloud/Enterprise.
    Terraform,
    /// Dispatch a GitHub Actions workflow.
    GithubWorkflow,
    /// Send a signed webhook.
    Webhook,
    /// Estimate cost from the price table.
    Cost,
    /// Run a sandboxed script.
    Script,
    /// A WebAssembly plugin; holds the name after `plugin:`.
    Plugin(String),
}

impl ActionType {
    /// Names of the built-in types.
    pub const BUILT_IN: [&'static str; 7] = [
        "jira",
        "rest",
        "terraform",
        "github_workflow",
        "webhook",
        "cost",
        "script",
    ];

    /// Parses a type name; `None` for an unknown built-in or a malformed plugin name.
    pub fn parse(name: &str) -> Option<ActionType> {
        Some(match name {
            "jira" => ActionType::Jira,
            "rest" => ActionType::Rest,
            "terraform" => ActionType::Terraform,
            "github_workflow" => ActionType::GithubWorkflow,
            "webhook" => ActionType::Webhook,
            "cost" => ActionType::Cost,
            "script" => ActionType::Script,
            _ => {
                let plugin = name.strip_prefix("plugin:")?;
                let mut chars = plugin.chars();
                let first_ok = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
                let rest_ok = chars
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
                if !(first_ok && rest_ok) {
                    return None;
                }
                ActionType::Plugin(plugin.to_owned())
            }
        })
    }

    /// The plugin name, for `plugin:<name>` types.
    pub fn plugin_name(&self) -> Option<&str> {
        match self {
            ActionType::Plugin(name) => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionType::Jira => f.write_str("jira"),
            ActionType::Rest => f.write_str("rest"),
            ActionType::Terraform => f.write_str("terraform"),
            ActionType::GithubWorkflow => f.write_str("github_workflow"),
            ActionType::Webhook => f.write_str("webhook"),
            ActionType::Cost => f.write_str("cost"),
            ActionType::Script => f.write_str("script"),
            ActionType::Plugin(name) => write!(f, "plugin:{name}"),
        }
    }
}

impl Serialize for ActionType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ActionType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ActionTypeVisitor;

        impl Visitor<'_> for ActionTypeVisitor {
            type Value = ActionType;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an action type name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<ActionType, E> {
                ActionType::parse(name).ok_or_else(|| {
                    E::custom(format_args!(
                        "unknown action type `{name}`, expected one of `jira`, `rest`, \
                         `terraform`, `github_workflow`, `webhook`, `cost`, `script` or \
                         `plugin:<name>`"
                    ))
                })
            }
        }

        deserializer.deserialize_str(ActionTypeVisitor)
    }
}

/// What happens after an action's last failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Undo completed actions, then fail the request.
    Rollback,
    /// Carry on with the next actions.
    Continue,
    /// Fail the request without rollback.
    Fail,
}

/// Compensating action run when a later action fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackSpec {
    /// Action type of the compensation.
    #[serde(rename = "type")]
    pub action_type: ActionType,
    /// Its configuration.
    pub config: Value,
}

impl CatalogItem {
    /// Every action of the item, in declaration order: top-level actions, members of parallel
    /// groups (in place of their group), then `post_fulfillment`. Rollback specs are not listed.
    pub fn all_actions(&self) -> impl Iterator<Item = &ActionSpec> + '_ {
        let steps = self.fulfillment.actions.as_deref().unwrap_or_default();
        let post = self
            .fulfillment
            .post_fulfillment
            .as_deref()
            .unwrap_or_default();
        steps
            .iter()
            .flat_map(|step| match step {
                ActionStep::Action(action) => std::slice::from_ref(action).iter(),
                ActionStep::Parallel(block) => block.parallel.actions.iter(),
            })
            .chain(post.iter())
    }

    /// Every field of the form, in display order (none without a presentation).
    pub fn all_fields(&self) -> impl Iterator<Item = &Field> + '_ {
        self.presentation.iter().flat_map(Presentation::all_fields)
    }

    /// Whether the item declares that its templates read the provider's secret `name`.
    pub fn grants_secret(&self, name: &str) -> bool {
        self.secrets.iter().flatten().any(|s| s == name)
    }

    /// The ids of the form's `secret` fields (read as `secrets.<id>`).
    pub fn secret_field_ids(&self) -> std::collections::BTreeSet<&str> {
        self.all_fields()
            .filter(|f| f.is_secret())
            .map(|f| f.id.as_str())
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// Lifecycle and monitoring
// ------------------------------------------------------------------------------------------

/// Lifecycle of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Status; default active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<LifecycleStatus>,
    /// Deprecation details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<Deprecation>,
    /// Recurring maintenance windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Vec<MaintenanceWindow>>,
}

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleStatus {
    /// Requestable.
    Active,
    /// Requestable with a warning.
    Deprecated,
    /// Not requestable.
    Retired,
}

/// Deprecation details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deprecation {
    /// Date of deprecation, YYYY-MM-DD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Id of the item to use instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// Message to requesters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A recurring maintenance window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Start, as a 5-field cron expression (UTC).
    pub cron: String,
    /// Length (duration).
    pub duration: DurationText,
}

/// Observability of what the item provisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Dashboard URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboards: Option<Vec<String>>,
    /// Alert rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<Alert>>,
}

/// Health check of a provisioned instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// URL answering 2xx when healthy.
    pub url: String,
    /// Time between checks (duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationText>,
}

/// An alert rule shipped with the provisioned service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Alert name.
    pub name: String,
    /// Condition, e.g. a `PromQL` expression.
    pub condition: String,
    /// Severity; default warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<AlertSeverity>,
    /// Runbook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// Notification targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
}

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    /// Informational.
    Info,
    /// Needs attention.
    Warning,
    /// Needs attention now.
    Critical,
}

// ------------------------------------------------------------------------------------------
// catalog.yaml
// ------------------------------------------------------------------------------------------

/// Catalog-wide settings: the optional `catalog.yaml` at the root of a catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// Schema version; must be `pao.dev/v2`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Document kind; must be `Catalog`.
    pub kind: String,
    /// Categories (replace the built-in list when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<CategoryDef>>,
    /// Target environments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<EnvironmentDef>>,
    /// Teams, members and quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<TeamDef>>,
    /// Restricted change periods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted_periods: Option<Vec<RestrictedPeriod>>,
    /// Catalog-wide defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<CatalogDefaults>,
    /// Price table of the cost action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices: Option<PriceTable>,
    /// Environment variables expressions may read as `env.<NAME>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_allowlist: Option<Vec<String>>,
}

/// A category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryDef {
    /// Category id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What belongs in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A target environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentDef {
    /// Environment id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether it is production; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<bool>,
}

/// A team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamDef {
    /// Team id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Member user ids or e-mails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    /// Quota limits by resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<BTreeMap<String, u64>>,
}

/// A yearly restricted change period (inclusive, may wrap the new year).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictedPeriod {
    /// Period id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// First day, `MM-DD`.
    pub start: String,
    /// Last day, `MM-DD`, inclusive.
    pub end: String,
    /// Affected categories and environments; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to: Option<RestrictionScope>,
    /// What happens to change actions.
    pub policy: RestrictionPolicy,
    /// Message to requesters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Scope of a restricted period; every list present must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictionScope {
    /// Affected category ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Affected environment ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<String>>,
}

/// What a restricted period does to requests with change actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestrictionPolicy {
    /// Change actions need approval.
    RequireApproval,
    /// Requests with change actions are refused.
    Refuse,
}

/// Catalog-wide defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDefaults {
    /// Default approval rule (also used by `require_approval` periods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Default timeout and retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<ExecutionDefaults>,
}

/// Price table of the cost action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Currency of all prices.
    pub currency: String,
    /// Tax as a fraction; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_rate: Option<f64>,
    /// Named discounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discounts: Option<Vec<Discount>>,
    /// Price by SKU.
    pub skus: BTreeMap<String, PriceEntry>,
}

/// Price of one SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// Price of one unit.
    pub unit_price: f64,
    /// What a unit is, e.g. `instance-month`.
    pub unit: String,
    /// Price factor by region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_multipliers: Option<BTreeMap<String, f64>>,
}

/// A named discount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discount {
    /// Id named by cost actions.
    pub id: String,
    /// Shown in the estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Percentage off.
    pub percent: f64,
    /// SKU glob patterns it applies to; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skus: Option<Vec<String>>,
    /// Teams it applies to; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => de::Unexpected::Unsigned(u),
            (_, Some(i), _) => de::Unexpected::Signed(i),
            (_, _, Some(f)) => de::Unexpected::Float(f),
            _ => de::Unexpected::Other("number"),
        },
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}
