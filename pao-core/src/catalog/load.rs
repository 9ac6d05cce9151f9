//! Loading a catalog folder: parse each YAML item with positions, validate it against the
//! published JSON Schema, deserialize it into the typed model, run the semantic checks, and
//! compile every template and condition once. One broken item never hides the others, and a
//! reload keeps the last good version of an item whose new version is broken.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;

use super::diagnostic::{Diagnostic, Severity, codes};
use super::model::{CatalogItem, CatalogSettings};
use super::yaml::{self, Pos, ScalarStyle, SpannedDoc, YamlErrorKind};
use crate::vars::{
    Engine, Expression, Scope, Template, ValueTemplate, VarError, VarErrorKind, did_you_mean,
};

/// Largest catalog file accepted.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// The published item schema (`schemas/catalog-item.v2.schema.json`).
pub const ITEM_SCHEMA: &str = include_str!("../../schemas/catalog-item.v2.schema.json");
/// The published `catalog.yaml` schema (`schemas/catalog.v2.schema.json`).
pub const SETTINGS_SCHEMA: &str = include_str!("../../schemas/catalog.v2.schema.json");

struct Schemas {
    item: jsonschema::Validator,
    settings: jsonschema::Validator,
    item_json: Value,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let item_json: Value =
        serde_json::from_str(ITEM_SCHEMA).expect("the embedded item schema is valid JSON");
    let settings_json: Value =
        serde_json::from_str(SETTINGS_SCHEMA).expect("the embedded settings schema is valid JSON");
    Schemas {
        item: jsonschema::draft202012::new(&item_json).expect("the embedded item schema compiles"),
        settings: jsonschema::draft202012::new(&settings_json)
            .expect("the embedded settings schema compiles"),
        item_json,
    }
});

/// A plugin's own check of an action config: `Err` holds its complaints, each `pointer:
/// message` (a JSON pointer into the config) or a bare message.
#[derive(Clone)]
pub struct ConfigValidator(pub std::sync::Arc<ConfigCheck>);

/// The function behind a [`ConfigValidator`].
pub type ConfigCheck = dyn Fn(&Value) -> Result<(), Vec<String>> + Send + Sync;

impl std::fmt::Debug for ConfigValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigValidator")
    }
}

/// What the loader needs from its embedder.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Action types that exist: the built-ins plus registered plugins (`plugin:<name>`).
    pub action_types: BTreeSet<String>,
    /// JSON Schemas of plugin configs, by type name.
    pub plugin_config_schemas: BTreeMap<String, Value>,
    /// Plugins' own config checks (their `validate`), by type name: run on each config of
    /// that type (as written, templates unrendered) that fits the schema.
    pub plugin_validators: BTreeMap<String, ConfigValidator>,
    /// The variable engine (with embedder functions).
    pub engine: Engine,
    /// Secrets only the server reads (inbound webhook keys, the key-encryption key): no item
    /// may read or declare them.
    pub reserved_secrets: BTreeSet<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            action_types: super::BUILT_IN_ACTION_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            plugin_config_schemas: BTreeMap::new(),
            plugin_validators: BTreeMap::new(),
            engine: Engine::new(),
            reserved_secrets: BTreeSet::new(),
        }
    }
}

impl LoadOptions {
    /// Registers a plugin action type, optionally with the JSON Schema of its config.
    pub fn with_plugin(mut self, name: &str, config_schema: Option<Value>) -> LoadOptions {
        let ty = format!("plugin:{name}");
        if let Some(s) = config_schema {
            self.plugin_config_schemas.insert(ty.clone(), s);
        }
        self.action_types.insert(ty);
        self
    }
}

/// An action's compiled templates.
#[derive(Debug)]
pub struct CompiledAction {
    /// The `when` condition.
    pub when: Option<Expression>,
    /// The config with its templates compiled.
    pub config: ValueTemplate,
    /// The `outputs` map, each value a template that may read `result`.
    pub outputs: Vec<(String, Template)>,
    /// The rollback config.
    pub rollback: Option<ValueTemplate>,
}

/// Everything templated in an item, compiled once.
#[derive(Debug, Default)]
pub struct CompiledItem {
    /// Computed values in evaluation (dependency) order.
    pub computed: Vec<(String, Template)>,
    /// Field and group conditions by JSON pointer of the expression.
    pub conditions: BTreeMap<String, Expression>,
    /// The approval condition.
    pub approval_required_when: Option<Expression>,
    /// Actions by id (main and post-fulfillment).
    pub actions: BTreeMap<String, CompiledAction>,
    /// Other templated sections (manual ticket, cost, prerequisites, monitoring) by pointer.
    pub sections: BTreeMap<String, ValueTemplate>,
    /// Each field's `validation.pattern`, by field id.
    pub patterns: BTreeMap<String, regex::Regex>,
    /// Each field's HTTP option source, by field id.
    pub sources: BTreeMap<String, CompiledSource>,
    /// Where a request's environment comes from; `None` when the item declares none.
    pub environment: Option<ItemEnvironment>,
}

/// Where a request's environment comes from: `metadata.environment` (a template), or the
/// field whose options are the catalog's environments.
#[derive(Debug)]
pub struct ItemEnvironment {
    /// `metadata.environment`, compiled; `None` for the environments field.
    pub template: Option<Template>,
    /// The one field it reads (the environments field itself): refusals of the environment
    /// are located at it.
    pub field: Option<String>,
}

/// A field's HTTP option source, compiled with the catalog's engine.
#[derive(Debug)]
pub struct CompiledSource {
    /// The URL to GET, a URL template ([`Engine::compile_url`]).
    pub url: Template,
    /// Request headers: each name with its value template.
    pub headers: Vec<(String, Template)>,
    /// Where the options are in the answer (`items`; `$` when absent).
    pub items: serde_json_path::JsonPath,
}

/// A loaded, valid item.
#[derive(Debug)]
pub struct LoadedItem {
    /// The typed item.
    pub item: CatalogItem,
    /// The file, relative to the catalog folder.
    pub file: String,
    /// SHA-256 of the file's bytes, hex; changes whenever the file does.
    pub content_hash: String,
    /// The file's text: stored with each request, so that a request runs the definition it
    /// was admitted with after the catalog changes.
    pub source: Arc<str>,
    /// Compiled templates and conditions.
    pub compiled: CompiledItem,
}

impl LoadedItem {
    /// The item id.
    pub fn id(&self) -> &str {
        &self.item.metadata.id
    }

    /// The item's version.
    pub fn version(&self) -> &str {
        &self.item.metadata.version
    }
}

/// A loaded catalog: the valid items, the settings and every diagnostic.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    items: BTreeMap<String, Arc<LoadedItem>>,
    settings: Option<Arc<CatalogSettings>>,
    default_approval_when: Option<Arc<Expression>>,
    diagnostics: Vec<Diagnostic>,
}

impl Catalog {
    /// Loads every `*.yaml`/`*.yml` under `dir` (any depth). Fails only when the folder
    /// cannot be read; problems inside files are diagnostics.
    pub fn load(dir: &Path, opts: &LoadOptions) -> std::io::Result<Catalog> {
        Catalog::load_inner(dir, opts, None)
    }

    /// Loads again, keeping the previous good version of any item whose new file is broken
    /// (with a `PAO-W004` warning).
    pub fn reload(&self, dir: &Path, opts: &LoadOptions) -> std::io::Result<Catalog> {
        Catalog::load_inner(dir, opts, Some(self))
    }

    fn load_inner(
        dir: &Path,
        opts: &LoadOptions,
        previous: Option<&Catalog>,
    ) -> std::io::Result<Catalog> {
        let mut files = Vec::new();
        collect_yaml_files(dir, &mut files)?;
        files.sort();
        let mut catalog = Catalog::default();
        // catalog.yaml first: its env allow-list applies to items.
        let settings_path = dir.join("catalog.yaml");
        let settings_env = if settings_path.is_file() {
            catalog.read_settings(&settings_path, opts)?
        } else {
            None
        };
        let mut inputs = Vec::with_capacity(files.len());
        for path in files {
            if path == settings_path {
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            inputs.push((rel, read_limited(&path)?));
        }
        let results = load_items(&inputs, opts, settings_env.as_ref());
        let mut first_file: HashMap<String, String> = HashMap::new();
        for ((rel, bytes), (loaded, diags)) in inputs.into_iter().zip(results) {
            catalog.diagnostics.extend(diags);
            match loaded {
                Some(item) => catalog.add(item, &rel, &bytes, &mut first_file),
                None => {
                    if let Some(prev) = previous {
                        catalog.keep_last_good(prev, &rel, &mut first_file);
                    }
                }
            }
        }
        Ok(catalog)
    }

    /// Reads `catalog.yaml` into the settings; its env allow-list, when it has one.
    fn read_settings(
        &mut self,
        path: &Path,
        opts: &LoadOptions,
    ) -> std::io::Result<Option<BTreeSet<String>>> {
        let (settings, diags) = match read_limited(path)? {
            FileBytes::Read(bytes) => {
                let source = String::from_utf8_lossy(&bytes);
                let (settings, mut diags) = load_settings("catalog.yaml", &source);
                let settings = settings.and_then(|s| {
                    let (when, more) = compile_default_approval(&source, &s, opts);
                    let ok = !more.iter().any(Diagnostic::is_error);
                    diags.extend(more);
                    self.default_approval_when = when.map(Arc::new);
                    ok.then_some(s)
                });
                (settings, diags)
            }
            FileBytes::TooLarge(size) => (None, vec![too_large("catalog.yaml", size)]),
        };
        self.diagnostics.extend(diags);
        let Some(s) = settings else { return Ok(None) };
        let env = s
            .env_allowlist
            .as_ref()
            .map(|l| l.iter().cloned().collect());
        self.settings = Some(Arc::new(s));
        Ok(env)
    }

    /// Adds a loaded item, unless an earlier file has its id (PAO-E005).
    fn add(
        &mut self,
        item: LoadedItem,
        rel: &str,
        bytes: &FileBytes,
        first_file: &mut HashMap<String, String>,
    ) {
        let id = item.id().to_string();
        if let Some(first) = first_file.get(&id) {
            let source = match bytes {
                FileBytes::Read(b) => String::from_utf8_lossy(b).into_owned(),
                FileBytes::TooLarge(_) => String::new(),
            };
            let doc = yaml::parse(&source).unwrap_or_default();
            self.diagnostics.push(diagnostic_at(
                Severity::Error,
                codes::DUPLICATE_ITEM,
                rel,
                &source,
                doc.pos("/metadata/id"),
                "/metadata/id",
                format!("item id `{id}` is already used by {first}"),
                Some("item ids are unique across the catalog; rename one of them".to_string()),
            ));
            return;
        }
        first_file.insert(id.clone(), rel.to_string());
        self.items.insert(id, Arc::new(item));
    }

    /// Keeps the previous version of the item of a file that is now broken (PAO-W004).
    fn keep_last_good(
        &mut self,
        previous: &Catalog,
        rel: &str,
        first_file: &mut HashMap<String, String>,
    ) {
        let Some(old) = previous.items.values().find(|i| i.file == rel) else {
            return;
        };
        if self.items.contains_key(old.id()) {
            return;
        }
        self.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code: codes::KEPT_LAST_GOOD,
            file: rel.to_string(),
            line: 1,
            column: 1,
            pointer: String::new(),
            message: format!(
                "the new version of `{}` is broken; version {} (hash {}) stays in service",
                old.id(),
                old.version(),
                &old.content_hash[..12]
            ),
            hint: Some("fix the errors above, then refresh the catalog".to_string()),
            source_line: None,
        });
        first_file.insert(old.id().to_string(), rel.to_string());
        self.items.insert(old.id().to_string(), old.clone());
    }

    /// One item by id.
    pub fn get(&self, id: &str) -> Option<&Arc<LoadedItem>> {
        self.items.get(id)
    }

    /// All valid items, by id.
    pub fn items(&self) -> impl Iterator<Item = &Arc<LoadedItem>> {
        self.items.values()
    }

    /// Number of valid items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item loaded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The `catalog.yaml` settings, when present and valid.
    pub fn settings(&self) -> Option<&CatalogSettings> {
        self.settings.as_deref()
    }

    /// `defaults.approval.required_when` of `catalog.yaml`, compiled: the approval condition
    /// of items without their own `approval` block.
    pub fn default_approval_when(&self) -> Option<&Expression> {
        self.default_approval_when.as_deref()
    }

    /// Every diagnostic, in file order.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Item ids with their versions and content hashes, to detect changes.
    pub fn fingerprint(&self) -> BTreeMap<String, (String, String)> {
        self.items
            .iter()
            .map(|(id, i)| {
                (
                    id.clone(),
                    (i.version().to_string(), i.content_hash.clone()),
                )
            })
            .collect()
    }
}

/// Loads the item files on every core; the results are in file order, so diagnostics and
/// duplicate-id decisions do not depend on scheduling.
fn load_items(
    inputs: &[(String, FileBytes)],
    opts: &LoadOptions,
    env: Option<&BTreeSet<String>>,
) -> Vec<(Option<LoadedItem>, Vec<Diagnostic>)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(inputs.len().max(1));
    let chunk = inputs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .chunks(chunk)
            .map(|part| {
                let handle = scope.spawn(move || {
                    part.iter()
                        .map(|(rel, bytes)| match bytes {
                            FileBytes::Read(bytes) => load_item_bytes(rel, bytes, opts, env),
                            FileBytes::TooLarge(size) => (None, vec![too_large(rel, *size)]),
                        })
                        .collect::<Vec<_>>()
                });
                (part, handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(part, h)| {
                // A panic is a loader bug; it must not shift results onto other files.
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|(rel, _)| (None, vec![internal_error(rel)]))
                        .collect()
                })
            })
            .collect()
    })
}

fn internal_error(file: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code: codes::SCHEMA,
        file: file.to_string(),
        line: 1,
        column: 1,
        pointer: String::new(),
        message: "internal error while loading this file (please report it)".to_string(),
        hint: None,
        source_line: None,
    }
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    collect_yaml_files_in(dir, out, &mut HashSet::new())
}

/// Follows symbolic links (a Kubernetes ConfigMap mounts every file as one, into a dot-folder
/// that is skipped here); each real folder is walked once, so a link loop ends.
fn collect_yaml_files_in(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    walked: &mut HashSet<PathBuf>,
) -> std::io::Result<()> {
    if !walked.insert(std::fs::canonicalize(dir)?) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let mut ty = entry.file_type()?;
        if ty.is_symlink() {
            // A dangling link names nothing to load.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            ty = meta.file_type();
        }
        if ty.is_dir() {
            collect_yaml_files_in(&path, out, walked)?;
        } else if ty.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        {
            out.push(path);
        }
    }
    Ok(())
}

/// A catalog file's bytes, or its size when past [`MAX_FILE_BYTES`] (then it is not read).
enum FileBytes {
    Read(Vec<u8>),
    TooLarge(u64),
}

/// Reads a file unless its size is past the limit; never more than the limit plus one byte,
/// should it grow while being read (the parser then refuses it).
fn read_limited(path: &Path) -> std::io::Result<FileBytes> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > MAX_FILE_BYTES as u64 {
        return Ok(FileBytes::TooLarge(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(FileBytes::Read(bytes))
}

fn too_large(file: &str, size: u64) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code: codes::TOO_LARGE,
        file: file.to_string(),
        line: 1,
        column: 1,
        pointer: String::new(),
        message: format!("file is {size} bytes; the limit is {MAX_FILE_BYTES}"),
        hint: Some("one item per file; move large texts out of the catalog".to_string()),
        source_line: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn diagnostic_at(
    severity: Severity,
    code: &'static str,
    file: &str,
    source: &str,
    pos: Pos,
    pointer: &str,
    message: String,
    hint: Option<String>,
) -> Diagnostic {
    Diagnostic {
        severity,
        code,
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        pointer: pointer.to_string(),
        message,
        hint,
        source_line: source
            .lines()
            .nth(pos.line.saturating_sub(1))
            .map(str::to_string),
    }
}

/// Collects diagnostics for one file.
pub(super) struct FileDiags<'s> {
    file: &'s str,
    source: &'s str,
    doc: SpannedDoc,
    pub(super) out: Vec<Diagnostic>,
}

impl FileDiags<'_> {
    pub(super) fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        pointer: &str,
        message: String,
        hint: Option<String>,
    ) {
        let pos = self.doc.pos(pointer);
        self.out.push(diagnostic_at(
            severity,
            code,
            self.file,
            self.source,
            pos,
            pointer,
            message,
            hint,
        ));
    }

    pub(super) fn error(
        &mut self,
        code: &'static str,
        pointer: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.push(Severity::Error, code, pointer, message.into(), hint);
    }

    pub(super) fn error_at_key(
        &mut self,
        code: &'static str,
        pointer: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let pos = self.doc.key_pos(pointer);
        self.out.push(diagnostic_at(
            Severity::Error,
            code,
            self.file,
            self.source,
            pos,
            pointer,
            message.into(),
            hint,
        ));
    }

    /// A template or expression error inside the YAML string at `pointer`.
    pub(super) fn var_error(&mut self, pointer: &str, e: &VarError) {
        let code = match e.kind() {
            VarErrorKind::Syntax
            | VarErrorKind::UnknownFunction
            | VarErrorKind::BadArguments
            | VarErrorKind::Limit => codes::EXPRESSION_SYNTAX,
            VarErrorKind::OutputNotAvailable => codes::OUTPUT_NOT_AVAILABLE,
            _ => codes::UNDECLARED,
        };
        let pos = self.doc.pos(pointer);
        let (l, c) = e.line_col().unwrap_or((1, 1));
        let (line, column) = match pos.style {
            ScalarStyle::Block => {
                let line = pos.line + l;
                let indent = self
                    .source
                    .lines()
                    .nth(line - 1)
                    .map(|s| s.len() - s.trim_start().len())
                    .unwrap_or(0);
                (line, indent + c)
            }
            ScalarStyle::Quoted if l == 1 => (pos.line, pos.column + c),
            _ if l == 1 => (pos.line, pos.column + c - 1),
            _ => (pos.line + l - 1, c),
        };
        let located = Pos {
            line,
            column,
            ..pos
        };
        self.out.push(diagnostic_at(
            Severity::Error,
            code,
            self.file,
            self.source,
            located,
            pointer,
            e.message().to_string(),
            e.hint().map(str::to_string),
        ));
    }
}

/// Compiles `defaults.approval.required_when`. It applies to every item without its own
/// rule, so it reads what every request has (`request`, `user`, `system`, allow-listed `env`),
/// never a field (PAO-E011 with a hint, PAO-E025 for an unknown environment it names).
fn compile_default_approval(
    source: &str,
    settings: &CatalogSettings,
    opts: &LoadOptions,
) -> (Option<Expression>, Vec<Diagnostic>) {
    let Some(src) = settings
        .defaults
        .as_ref()
        .and_then(|d| d.approval.as_ref())
        .and_then(|a| a.required_when.as_ref())
    else {
        return (None, Vec::new());
    };
    let Ok(mut d) = parse_file("catalog.yaml", source) else {
        return (None, Vec::new());
    };
    let ptr = "/defaults/approval/required_when";
    let decl = crate::vars::Declarations {
        env: settings
            .env_allowlist
            .as_ref()
            .map(|l| l.iter().cloned().collect()),
        secrets: Some(BTreeSet::new()),
        allow_cost: true,
        ..crate::vars::Declarations::default()
    };
    let expr = match opts.engine.compile_expression(src) {
        Ok(e) => e,
        Err(e) => {
            d.var_error(ptr, &e);
            return (None, d.out);
        }
    };
    let errors = expr.check(&decl);
    let reads_fields = expr
        .references()
        .iter()
        .any(|r| matches!(r.scope, Scope::Fields | Scope::Computed | Scope::Outputs));
    if reads_fields {
        d.error(
            codes::UNDECLARED,
            ptr,
            "the catalog-wide approval rule reads the form, which differs from item to item"
                .to_string(),
            Some(
                "read what every request has, e.g. `request.environment == 'prod'`; an item that needs a rule on its fields gets its own `fulfillment.approval`"
                    .to_string(),
            ),
        );
    } else {
        for e in errors {
            d.var_error(ptr, &e);
        }
    }
    (Some(expr), d.out)
}

/// Validates `catalog.yaml`.
pub fn load_settings(file: &str, source: &str) -> (Option<CatalogSettings>, Vec<Diagnostic>) {
    let mut d = match parse_file(file, source) {
        Ok(d) => d,
        Err(diags) => return (None, diags),
    };
    schema_errors(&mut d, &SCHEMAS.settings, false, &BTreeSet::new());
    if d.out.iter().any(Diagnostic::is_error) {
        return (None, d.out);
    }
    let settings: CatalogSettings = match CatalogSettings::deserialize(&d.doc.value) {
        Ok(s) => s,
        Err(e) => {
            d.error(codes::SCHEMA, "", e.to_string(), None);
            return (None, d.out);
        }
    };
    let mut seen = BTreeSet::new();
    for (i, p) in settings.restricted_periods.iter().flatten().enumerate() {
        let base = format!("/restricted_periods/{i}");
        for (key, date) in [("start", &p.start), ("end", &p.end)] {
            if !valid_month_day(date) {
                d.error(
                    codes::RESTRICTED_PERIOD,
                    &format!("{base}/{key}"),
                    format!("`{date}` is not a day of the year"),
                    Some(
                        "write MM-DD, e.g. 09-01 or 01-31; 02-29 is allowed, 02-30 is not"
                            .to_string(),
                    ),
                );
            }
        }
        if p.start == p.end {
            d.error(
                codes::RESTRICTED_PERIOD,
                &base,
                format!(
                    "restricted period `{}` starts and ends on the same day",
                    p.id
                ),
                Some(
                    "a one-day period is fine, but make sure that is meant; use a range otherwise"
                        .to_string(),
                ),
            );
        }
        if !seen.insert(p.id.clone()) {
            d.error(
                codes::RESTRICTED_PERIOD,
                &format!("{base}/id"),
                format!("restricted period id `{}` is used twice", p.id),
                None,
            );
        }
    }
    if let Some(defaults) = &settings.defaults {
        if let Some(a) = &defaults.approval {
            super::check::durations::check_approval(&mut d, "/defaults/approval", a);
        }
        if let Some(x) = &defaults.execution {
            super::check::durations::check_execution(&mut d, "/defaults/execution", x);
        }
    }
    let ok = !d.out.iter().any(Diagnostic::is_error);
    (ok.then_some(settings), d.out)
}

fn valid_month_day(s: &str) -> bool {
    let Some((m, day)) = s.split_once('-') else {
        return false;
    };
    let (Ok(m), Ok(day)) = (m.parse::<u32>(), day.parse::<u32>()) else {
        return false;
    };
    let max = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => 29,
        _ => return false,
    };
    (1..=max).contains(&day)
}

fn parse_file<'s>(file: &'s str, source: &'s str) -> Result<FileDiags<'s>, Vec<Diagnostic>> {
    let mut d = FileDiags {
        file,
        source,
        doc: SpannedDoc::default(),
        out: Vec::new(),
    };
    if source.len() > MAX_FILE_BYTES {
        d.error(
            codes::TOO_LARGE,
            "",
            format!(
                "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                source.len()
            ),
            Some("one item per file; move large texts out of the catalog".to_string()),
        );
        return Err(d.out);
    }
    match yaml::parse(source) {
        Ok(doc) => {
            d.doc = doc;
            if !d.doc.value.is_object() {
                d.error(
                    codes::SCHEMA,
                    "",
                    "a catalog file must be a YAML mapping",
                    None,
                );
                return Err(d.out);
            }
            Ok(d)
        }
        Err(e) => {
            let code = match e.kind {
                YamlErrorKind::Syntax => codes::YAML_SYNTAX,
                YamlErrorKind::DuplicateKey => codes::DUPLICATE_KEY,
                YamlErrorKind::TooDeep => codes::TOO_LARGE,
            };
            let hint = match e.kind {
                YamlErrorKind::DuplicateKey => {
                    Some("remove or rename one of the two keys".to_string())
                }
                YamlErrorKind::TooDeep => {
                    Some(format!("keep nesting under {} levels", yaml::MAX_DEPTH))
                }
                YamlErrorKind::Syntax => None,
            };
            let pos = Pos {
                line: e.line,
                column: e.column,
                offset: 0,
                style: ScalarStyle::Plain,
            };
            d.out.push(diagnostic_at(
                Severity::Error,
                code,
                file,
                source,
                pos,
                &e.pointer,
                e.message,
                hint,
            ));
            Err(d.out)
        }
    }
}

/// The property names a schema location allows, for "did you mean".
fn allowed_properties(schema_path: &str) -> Vec<String> {
    // The schema path ends in `/additionalProperties`; its sibling `properties` lists them.
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    let mut node = &SCHEMAS.item_json;
    for seg in parent.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg == "$ref" {
            let target = node
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
                .and_then(|name| SCHEMAS.item_json["$defs"].get(name));
            match target {
                Some(t) => node = t,
                None => return Vec::new(),
            }
            continue;
        }
        node = match node
            .get(&seg)
            .or_else(|| seg.parse::<usize>().ok().and_then(|i| node.get(i)))
        {
            Some(n) => n,
            None => return Vec::new(),
        };
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn schema_errors(
    d: &mut FileDiags,
    validator: &jsonschema::Validator,
    item: bool,
    action_types: &BTreeSet<String>,
) {
    // Valid documents (the common case) skip error collection, and the clone it needs.
    if validator.is_valid(&d.doc.value) {
        return;
    }
    let value = d.doc.value.clone();
    let mut seen = BTreeSet::new();
    for err in validator.iter_errors(&value) {
        let pointer = err.instance_path().as_str().to_string();
        let eval_path = err.evaluation_path().as_str().to_string();
        let kind = err.kind();
        let key = (pointer.clone(), err.to_string());
        if !seen.insert(key) {
            continue;
        }
        if item && pointer == "/apiVersion" {
            continue; // reported as PAO-E018
        }
        match kind {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = allowed_properties(&eval_path);
                for name in unexpected {
                    let child = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
                    let hint = match did_you_mean(name, allowed.iter().map(String::as_str)) {
                        Some(s) => Some(format!("did you mean `{s}`?")),
                        None if !allowed.is_empty() => {
                            Some(format!("allowed keys here: {}", allowed.join(", ")))
                        }
                        None => None,
                    };
                    let code = if in_action_config(&pointer) {
                        codes::ACTION_CONFIG
                    } else {
                        codes::UNKNOWN_KEY
                    };
                    d.error_at_key(code, &child, format!("unknown key `{name}`"), hint);
                }
            }
            jsonschema::error::ValidationErrorKind::Required { property }
                if item && pointer == "/fulfillment" && property.as_str() == Some("manual") =>
            {
                d.error_at_key(
                    codes::MANUAL_WITHOUT_JIRA,
                    "/fulfillment/mode",
                    "`mode: manual` needs a `manual.jira` block: the ticket to create",
                    Some("add `manual: { jira: { project: ..., issue_type: Task, summary: ... } }` under fulfillment".to_string()),
                );
            }
            _ if item
                && pointer.starts_with("/presentation/")
                && pointer.ends_with("/type")
                && d.doc
                    .value
                    .pointer(&pointer[..pointer.len() - 5])
                    .and_then(|f| f.get("options"))
                    .is_some() =>
            {
                let ty = d
                    .doc
                    .value
                    .pointer(&pointer)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                d.error(
                    codes::FIELD_VALUE_TYPE,
                    &format!("{}/options", &pointer[..pointer.len() - 5]),
                    format!("a field of type {ty} cannot have options"),
                    Some(
                        "options go with select, multiselect, radio and checkbox_list".to_string(),
                    ),
                );
            }
            _ if item && pointer.starts_with("/fulfillment/") && pointer.ends_with("/type") => {
                let ty = d
                    .doc
                    .value
                    .pointer(&pointer)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if !seen.insert((pointer.clone(), "type".to_string())) {
                    continue;
                }
                let hint = match did_you_mean(&ty, action_types.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "known types: {}; plugins are written `plugin:<name>`",
                        action_types.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                d.error(
                    codes::UNKNOWN_ACTION_TYPE,
                    &pointer,
                    format!("unknown action type `{ty}`"),
                    Some(hint),
                );
            }
            _ => {
                let code = if in_action_config(&pointer) {
                    codes::ACTION_CONFIG
                } else if item
                    && pointer.starts_with("/presentation/")
                    && (pointer.ends_with("/default")
                        || pointer.contains("/options/")
                        || pointer.ends_with("/options"))
                {
                    codes::FIELD_VALUE_TYPE
                } else if !item && pointer.starts_with("/restricted_periods") {
                    codes::RESTRICTED_PERIOD
                } else {
                    codes::SCHEMA
                };
                let mut msg = err.to_string();
                if msg.len() > 300 {
                    msg.truncate(300);
                    msg.push('…');
                }
                let hint = schema_hint(kind);
                if matches!(
                    kind,
                    jsonschema::error::ValidationErrorKind::Required { .. }
                ) {
                    d.error_at_key(code, &pointer, msg, hint);
                } else {
                    d.error(code, &pointer, msg, hint);
                }
            }
        }
    }
}

fn schema_hint(kind: &jsonschema::error::ValidationErrorKind) -> Option<String> {
    use jsonschema::error::ValidationErrorKind as K;
    match kind {
        K::Type { .. } => {
            Some("check the value's type; quote numbers-like strings such as versions".to_string())
        }
        K::Enum { options } => Some(format!("allowed values: {options}")),
        K::Pattern { pattern } => Some(format!("the value must match `{pattern}`")),
        K::Required { property } => {
            Some(format!("add `{}`", property.as_str().unwrap_or("the key")))
        }
        _ => None,
    }
}

fn in_action_config(pointer: &str) -> bool {
    pointer.starts_with("/fulfillment/")
        && (pointer.contains("/config/") || pointer.ends_with("/config"))
}

/// Validates one item file without a catalog around it (for the API and the CLI).
pub fn load_item(
    file: &str,
    source: &str,
    opts: &LoadOptions,
) -> (Option<LoadedItem>, Vec<Diagnostic>) {
    load_item_bytes(file, source.as_bytes(), opts, None)
}

fn load_item_bytes(
    file: &str,
    bytes: &[u8],
    opts: &LoadOptions,
    env_allowlist: Option<&BTreeSet<String>>,
) -> (Option<LoadedItem>, Vec<Diagnostic>) {
    let source = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            return (
                None,
                vec![Diagnostic {
                    severity: Severity::Error,
                    code: codes::YAML_SYNTAX,
                    file: file.to_string(),
                    line: 1,
                    column: 1,
                    pointer: String::new(),
                    message: format!(
                        "the file is not UTF-8 text (invalid byte at offset {})",
                        e.valid_up_to()
                    ),
                    hint: Some("save the file as UTF-8".to_string()),
                    source_line: None,
                }],
            );
        }
    };
    let mut d = match parse_file(file, source) {
        Ok(d) => d,
        Err(diags) => return (None, diags),
    };
    // apiVersion first: a v1 item gets a migration hint rather than a pile of schema errors.
    match d.doc.value.get("apiVersion").and_then(Value::as_str) {
        Some(super::model::API_VERSION) => {}
        Some(other) => {
            let hint = if other.ends_with("/v1") || other == "v1" || other.starts_with("1") {
                "v1 items must be migrated to Schema v2.0: set `apiVersion: pao.dev/v2` and follow docs/catalog-authors.md"
            } else {
                "set `apiVersion: pao.dev/v2`"
            };
            d.error(
                codes::API_VERSION,
                "/apiVersion",
                format!("unsupported apiVersion `{other}`"),
                Some(hint.to_string()),
            );
            return (None, d.out);
        }
        None => {
            d.error_at_key(
                codes::API_VERSION,
                "",
                "missing `apiVersion`",
                Some(
                    "start the file with `apiVersion: pao.dev/v2` and `kind: CatalogItem`"
                        .to_string(),
                ),
            );
            return (None, d.out);
        }
    }
    schema_errors(&mut d, &SCHEMAS.item, true, &opts.action_types);
    if d.out.iter().any(Diagnostic::is_error) {
        return (None, d.out);
    }
    let item: CatalogItem = match CatalogItem::deserialize(&d.doc.value) {
        Ok(i) => i,
        Err(e) => {
            d.error(
                codes::SCHEMA,
                "",
                format!("the item does not fit the model: {e}"),
                None,
            );
            return (None, d.out);
        }
    };
    let compiled = super::check::check_item(&mut d, &item, opts, env_allowlist);
    let ok = !d.out.iter().any(Diagnostic::is_error);
    let loaded = ok.then(|| LoadedItem {
        item,
        file: file.to_string(),
        content_hash: hex::encode(sha2::Sha256::digest(bytes)),
        source: Arc::from(source),
        compiled,
    });
    (loaded, d.out)
}
