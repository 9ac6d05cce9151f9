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
use super::model::{
    ActionSpec, ActionStep, CatalogItem, CatalogSettings, Field, FieldType, FulfillmentMode,
    LifecycleStatus,
};
use super::yaml::{self, Pos, ScalarStyle, SpannedDoc, YamlErrorKind};
use crate::vars::{
    Declarations, Engine, Expression, Template, ValueTemplate, VarError, VarErrorKind, did_you_mean,
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

/// What the loader needs from its embedder.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Action types that exist: the built-ins plus registered plugins (`plugin:<name>`).
    pub action_types: BTreeSet<String>,
    /// JSON Schemas of plugin configs, by type name.
    pub plugin_config_schemas: BTreeMap<String, Value>,
    /// The variable engine (with embedder functions).
    pub engine: Engine,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            action_types: super::BUILT_IN_ACTION_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            plugin_config_schemas: BTreeMap::new(),
            engine: Engine::new(),
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
    /// Other templated sections (manual ticket, cost, sources, monitoring, quota) by pointer.
    pub sections: BTreeMap<String, ValueTemplate>,
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
        let mut settings_env: Option<BTreeSet<String>> = None;
        // catalog.yaml first: its env allow-list applies to items.
        let settings_path = dir.join("catalog.yaml");
        if settings_path.is_file() {
            let (settings, diags) = match read_limited(&settings_path)? {
                FileBytes::Read(bytes) => {
                    load_settings("catalog.yaml", &String::from_utf8_lossy(&bytes))
                }
                FileBytes::TooLarge(size) => (None, vec![too_large("catalog.yaml", size)]),
            };
            catalog.diagnostics.extend(diags);
            if let Some(s) = settings {
                settings_env = s
                    .env_allowlist
                    .as_ref()
                    .map(|l| l.iter().cloned().collect());
                catalog.settings = Some(Arc::new(s));
            }
        }
        // Parse and check the files on every core; merge in file order, so diagnostics and
        // duplicate-id decisions do not depend on scheduling.
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
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(inputs.len().max(1));
        let chunk = inputs.len().div_ceil(threads).max(1);
        let results: Vec<(Option<LoadedItem>, Vec<Diagnostic>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = inputs
                .chunks(chunk)
                .map(|part| {
                    let env = settings_env.as_ref();
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
                            .map(|(rel, _)| {
                                let d = Diagnostic {
                                    severity: Severity::Error,
                                    code: codes::SCHEMA,
                                    file: rel.clone(),
                                    line: 1,
                                    column: 1,
                                    pointer: String::new(),
                                    message:
                                        "internal error while loading this file (please report it)"
                                            .to_string(),
                                    hint: None,
                                    source_line: None,
                                };
                                (None, vec![d])
                            })
                            .collect()
                    })
                })
                .collect()
        });
        let mut first_file: HashMap<String, String> = HashMap::new();
        for ((rel, bytes), (loaded, diags)) in inputs.into_iter().zip(results) {
            let bytes = match bytes {
                FileBytes::Read(b) => b,
                FileBytes::TooLarge(_) => Vec::new(),
            };
            let failed = loaded.is_none();
            catalog.diagnostics.extend(diags);
            match loaded {
                Some(item) => {
                    let id = item.id().to_string();
                    if let Some(first) = first_file.get(&id) {
                        let doc = yaml::parse(&String::from_utf8_lossy(&bytes)).unwrap_or_default();
                        catalog.diagnostics.push(diagnostic_at(
                            Severity::Error,
                            codes::DUPLICATE_ITEM,
                            &rel,
                            &String::from_utf8_lossy(&bytes),
                            doc.pos("/metadata/id"),
                            "/metadata/id",
                            format!("item id `{id}` is already used by {first}"),
                            Some(
                                "item ids are unique across the catalog; rename one of them"
                                    .to_string(),
                            ),
                        ));
                        continue;
                    }
                    first_file.insert(id.clone(), rel.clone());
                    catalog.items.insert(id, Arc::new(item));
                }
                None if failed => {
                    if let Some(prev) = previous
                        && let Some(old) = prev.items.values().find(|i| i.file == rel)
                        && !catalog.items.contains_key(old.id())
                    {
                        catalog.diagnostics.push(Diagnostic {
                            severity: Severity::Warning,
                            code: codes::KEPT_LAST_GOOD,
                            file: rel.clone(),
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
                        first_file.insert(old.id().to_string(), rel.clone());
                        catalog.items.insert(old.id().to_string(), old.clone());
                    }
                }
                None => {}
            }
        }
        Ok(catalog)
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
struct FileDiags<'s> {
    file: &'s str,
    source: &'s str,
    doc: SpannedDoc,
    out: Vec<Diagnostic>,
}

impl FileDiags<'_> {
    fn push(
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

    fn error(
        &mut self,
        code: &'static str,
        pointer: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.push(Severity::Error, code, pointer, message.into(), hint);
    }

    fn error_at_key(
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
    fn var_error(&mut self, pointer: &str, e: &VarError) {
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
    let compiled = check_item(&mut d, &item, opts, env_allowlist);
    let ok = !d.out.iter().any(Diagnostic::is_error);
    let loaded = ok.then(|| LoadedItem {
        item,
        file: file.to_string(),
        content_hash: hex::encode(sha2::Sha256::digest(bytes)),
        compiled,
    });
    (loaded, d.out)
}

/// Where each action lives and what runs before it.
struct ActionInfo<'i> {
    spec: &'i ActionSpec,
    pointer: String,
    /// Sequential phase index (main steps 0.., post-fulfillment after them).
    step: usize,
    /// Parallel group id, when inside one.
    group: Option<String>,
}

fn check_item(
    d: &mut FileDiags,
    item: &CatalogItem,
    opts: &LoadOptions,
    env_allowlist: Option<&BTreeSet<String>>,
) -> CompiledItem {
    let mut compiled = CompiledItem::default();
    let engine = &opts.engine;

    // ---- fields
    let mut fields: BTreeMap<String, (&Field, String, bool)> = BTreeMap::new();
    if let Some(p) = &item.presentation {
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
                fields.insert(f.id.clone(), (f, fptr.clone(), may_hide));
                check_field_values(d, f, &fptr);
            }
        }
    }

    // ---- actions: ids, types, dependencies
    let mut actions: Vec<ActionInfo> = Vec::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let main_steps = item.fulfillment.actions.as_deref().unwrap_or(&[]);
    for (si, step) in main_steps.iter().enumerate() {
        match step {
            ActionStep::Action(a) => actions.push(ActionInfo {
                spec: a,
                pointer: format!("/fulfillment/actions/{si}"),
                step: si,
                group: None,
            }),
            ActionStep::Parallel(p) => {
                let g = &p.parallel;
                groups.insert(
                    g.id.clone(),
                    g.actions.iter().map(|a| a.id.clone()).collect(),
                );
                for (ai, a) in g.actions.iter().enumerate() {
                    actions.push(ActionInfo {
                        spec: a,
                        pointer: format!("/fulfillment/actions/{si}/parallel/actions/{ai}"),
                        step: si,
                        group: Some(g.id.clone()),
                    });
                }
            }
        }
    }
    let post_base = main_steps.len();
    for (pi, a) in item
        .fulfillment
        .post_fulfillment
        .iter()
        .flatten()
        .enumerate()
    {
        actions.push(ActionInfo {
            spec: a,
            pointer: format!("/fulfillment/post_fulfillment/{pi}"),
            step: post_base + pi,
            group: None,
        });
    }
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (i, a) in actions.iter().enumerate() {
        if ids.contains_key(&a.spec.id) || groups.contains_key(&a.spec.id) {
            d.error(
                codes::DUPLICATE_ID,
                &format!("{}/id", a.pointer),
                format!("action id `{}` is used twice in this item", a.spec.id),
                Some("action and parallel-group ids share one namespace per item".to_string()),
            );
            continue;
        }
        ids.insert(a.spec.id.clone(), i);
    }
    for (i, a) in actions.iter().enumerate() {
        let ty = a.spec.action_type.to_string();
        if !opts.action_types.contains(&ty) {
            let hint = match did_you_mean(&ty, opts.action_types.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None if ty.starts_with("plugin:") => {
                    format!(
                        "no plugin `{}` is installed; add it to the plugin folder",
                        ty.trim_start_matches("plugin:")
                    )
                }
                None => format!(
                    "known types: {}",
                    opts.action_types
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            d.error(
                codes::UNKNOWN_ACTION_TYPE,
                &format!("{}/type", a.pointer),
                format!("unknown action type `{ty}`"),
                Some(hint),
            );
        } else if let Some(schema) = opts.plugin_config_schemas.get(&ty)
            && let Ok(v) = jsonschema::validator_for(schema)
        {
            for e in v.iter_errors(&a.spec.config) {
                let p = format!("{}/config{}", a.pointer, e.instance_path().as_str());
                d.error(codes::ACTION_CONFIG, &p, format!("{ty} config: {e}"), None);
            }
        }
        let _ = i;
        if let Some(rb) = &a.spec.rollback {
            let rty = rb.action_type.to_string();
            if !opts.action_types.contains(&rty) {
                d.error(
                    codes::UNKNOWN_ACTION_TYPE,
                    &format!("{}/rollback/type", a.pointer),
                    format!("unknown action type `{rty}` in rollback"),
                    did_you_mean(&rty, opts.action_types.iter().map(String::as_str))
                        .map(|s| format!("did you mean `{s}`?")),
                );
            }
        }
    }
    // Explicit edges (group ids expand to their members).
    let n = actions.len();
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for (i, a) in actions.iter().enumerate() {
        for (di, dep) in a.spec.depends_on.iter().flatten().enumerate() {
            let ptr = format!("{}/depends_on/{di}", a.pointer);
            if let Some(&j) = ids.get(dep) {
                if j == i {
                    d.error(
                        codes::CYCLE,
                        &ptr,
                        format!("action `{dep}` depends on itself"),
                        None,
                    );
                } else {
                    edges[i].insert(j);
                }
            } else if let Some(members) = groups.get(dep) {
                if a.group.as_deref() == Some(dep.as_str()) {
                    d.error(
                        codes::CYCLE,
                        &ptr,
                        format!(
                            "action `{}` depends on its own parallel group `{dep}`",
                            a.spec.id
                        ),
                        None,
                    );
                }
                for m in members {
                    if let Some(&j) = ids.get(m)
                        && j != i
                    {
                        edges[i].insert(j);
                    }
                }
            } else {
                let known = ids.keys().chain(groups.keys()).map(String::as_str);
                let hint = did_you_mean(dep, known).map(|s| format!("did you mean `{s}`?"));
                d.error(
                    codes::UNKNOWN_DEPENDENCY,
                    &ptr,
                    format!("depends_on names unknown action `{dep}`"),
                    hint,
                );
            }
        }
    }
    // Implicit edges: every action of a step waits for every action of the previous steps.
    let mut full = edges.clone();
    for i in 0..n {
        for j in 0..n {
            if actions[j].step < actions[i].step {
                full[i].insert(j);
            }
        }
    }
    if let Some(cycle) = find_cycle(&full) {
        let names: Vec<&str> = cycle.iter().map(|&i| actions[i].spec.id.as_str()).collect();
        let first = cycle[0];
        d.error(
            codes::CYCLE,
            &format!("{}/depends_on", actions[first].pointer),
            format!("dependency cycle: {}", names.join(" → ")),
            Some("list order already runs earlier steps first; a depends_on pointing at a later step closes a cycle".to_string()),
        );
    }
    // Ancestors (transitive), if acyclic.
    let ancestors: Vec<BTreeSet<usize>> = (0..n).map(|i| reach(&full, i)).collect();
    let optional = |j: usize| {
        actions[j].spec.when.is_some()
            || matches!(
                actions[j].spec.on_failure,
                Some(super::model::OnFailure::Continue)
            )
    };
    let action_ids: BTreeSet<String> = ids.keys().cloned().collect();

    // ---- declarations
    let field_ids: BTreeSet<String> = fields.keys().cloned().collect();
    let computed_names: BTreeSet<String> = item
        .computed
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    let base = Declarations {
        fields: field_ids.clone(),
        computed: computed_names.clone(),
        actions: action_ids.clone(),
        completed: BTreeSet::new(),
        env: env_allowlist.cloned(),
        allow_result: false,
    };

    // ---- computed values, in dependency order
    let mut computed_templates: BTreeMap<String, Template> = BTreeMap::new();
    for (name, src) in item.computed.iter().flatten() {
        let ptr = format!("/computed/{name}");
        match engine.compile(src) {
            Ok(t) => {
                for e in t.check(&base) {
                    d.var_error(&ptr, &e);
                }
                computed_templates.insert(name.clone(), t);
            }
            Err(e) => d.var_error(&ptr, &e),
        }
    }
    let order = computed_order(d, &computed_templates);
    for name in order {
        if let Some(t) = computed_templates.remove(&name) {
            compiled.computed.push((name, t));
        }
    }

    // ---- conditions on fields and groups
    let condition = |d: &mut FileDiags,
                     ptr: String,
                     src: &str,
                     compiled: &mut CompiledItem|
     -> Option<Vec<crate::vars::Reference>> {
        match engine.compile_expression(src) {
            Ok(e) => {
                for err in e.check(&base) {
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
    };
    if let Some(p) = &item.presentation {
        for (gi, g) in p.groups.iter().enumerate() {
            let gptr = format!("/presentation/groups/{gi}");
            for (key, src) in [
                ("visible_when", &g.visible_when),
                ("required_when", &g.required_when),
                ("enabled_when", &g.enabled_when),
            ] {
                if let Some(src) = src {
                    condition(d, format!("{gptr}/{key}"), src, &mut compiled);
                }
            }
            for (fi, f) in g.fields.iter().enumerate() {
                let fptr = format!("{gptr}/fields/{fi}");
                for (key, src) in [
                    ("visible_when", &f.visible_when),
                    ("required_when", &f.required_when),
                    ("enabled_when", &f.enabled_when),
                ] {
                    let Some(src) = src else { continue };
                    let ptr = format!("{fptr}/{key}");
                    let refs = condition(d, ptr.clone(), src, &mut compiled);
                    if key == "required_when"
                        && let (Some(vis), Some(req)) = (&f.visible_when, &refs)
                        && let Ok(vis) = engine.compile_expression(vis)
                    {
                        let shown_by: BTreeSet<&str> = vis
                            .references()
                            .iter()
                            .filter(|r| r.scope == crate::vars::Scope::Fields)
                            .filter_map(|r| r.path.first().map(|s| s.as_str()))
                            .collect::<Vec<_>>()
                            .into_iter()
                            .map(|s| {
                                fields
                                    .get_key_value(s)
                                    .map(|(k, _)| k.as_str())
                                    .unwrap_or("")
                            })
                            .collect();
                        let required_by: BTreeSet<&str> = req
                            .iter()
                            .filter(|r| r.scope == crate::vars::Scope::Fields)
                            .filter_map(|r| r.path.first())
                            .map(|s| {
                                fields
                                    .get_key_value(s.as_str())
                                    .map(|(k, _)| k.as_str())
                                    .unwrap_or("")
                            })
                            .collect();
                        if !required_by.is_empty() && shown_by.is_disjoint(&required_by) {
                            d.error(
                                codes::REQUIRED_HIDDEN,
                                &ptr,
                                format!(
                                    "`{}` may be hidden (visible_when) while its required_when holds: the two conditions read different fields",
                                    f.id
                                ),
                                Some("a hidden field is never required; make required_when imply visible_when, e.g. `fields.environment == 'prod' && ...`".to_string()),
                            );
                        }
                    }
                    if key == "required_when" {
                        for r in refs.into_iter().flatten() {
                            if r.scope != crate::vars::Scope::Fields || r.guarded {
                                continue;
                            }
                            let Some(other) = r.path.first() else {
                                continue;
                            };
                            if other == &f.id {
                                continue;
                            }
                            if let Some((_, _, true)) = fields.get(other) {
                                d.error(
                                    codes::REQUIRED_HIDDEN,
                                    &ptr,
                                    format!("required_when of `{}` reads field `{other}`, which may be hidden (it has visible_when); a hidden field has no value", f.id),
                                    Some(format!("guard it: `fields.{other}?.…` or `default(fields.{other}, …)`, or drop the visible_when of `{other}`")),
                                );
                            }
                        }
                    }
                }
                if let Some(src) = &f.source {
                    let v = serde_json::to_value(src).unwrap_or(Value::Null);
                    compile_section(
                        d,
                        engine,
                        &format!("{fptr}/source"),
                        &v,
                        &base,
                        &mut compiled,
                    );
                }
            }
        }
    }

    // ---- approval, manual ticket, cost, quota, monitoring
    let f = &item.fulfillment;
    if let Some(a) = &f.approval
        && let Some(src) = &a.required_when
    {
        let ptr = "/fulfillment/approval/required_when".to_string();
        match engine.compile_expression(src) {
            Ok(e) => {
                for err in e.check(&base) {
                    d.var_error(&ptr, &err);
                }
                compiled.approval_required_when = Some(e);
            }
            Err(err) => d.var_error(&ptr, &err),
        }
    }
    if f.mode == FulfillmentMode::Manual && f.manual.is_none() {
        d.error_at_key(
            codes::MANUAL_WITHOUT_JIRA,
            "/fulfillment/mode",
            "`mode: manual` needs a `manual.jira` block: the ticket to create",
            Some("add `manual: { jira: { project: ..., issue_type: Task, summary: ... } }` under fulfillment".to_string()),
        );
    }
    if f.mode == FulfillmentMode::Automated && main_steps.is_empty() {
        d.error_at_key(
            codes::SCHEMA,
            "/fulfillment/mode",
            "`mode: automated` needs at least one action under `fulfillment.actions`",
            Some("add actions, or use `mode: manual` with a JIRA ticket".to_string()),
        );
    }
    for (ptr, value) in [
        (
            "/fulfillment/manual",
            f.manual
                .as_ref()
                .map(|m| serde_json::to_value(m).unwrap_or(Value::Null)),
        ),
        (
            "/metadata/cost",
            item.metadata
                .cost
                .as_ref()
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null)),
        ),
        (
            "/fulfillment/prerequisites",
            f.prerequisites
                .as_ref()
                .map(|p| serde_json::to_value(p).unwrap_or(Value::Null)),
        ),
    ] {
        if let Some(v) = value {
            compile_section(d, engine, ptr, &v, &base, &mut compiled);
        }
    }
    let all_guaranteed: BTreeSet<String> = (0..n)
        .filter(|&j| !optional(j) && actions[j].step < post_base)
        .map(|j| actions[j].spec.id.clone())
        .collect();
    if let Some(m) = &item.monitoring {
        let v = serde_json::to_value(m).unwrap_or(Value::Null);
        let decl = Declarations {
            completed: all_guaranteed.clone(),
            ..base.clone()
        };
        compile_section(d, engine, "/monitoring", &v, &decl, &mut compiled);
    }

    // ---- each action's templates
    for (i, a) in actions.iter().enumerate() {
        let completed: BTreeSet<String> = ancestors[i]
            .iter()
            .filter(|&&j| !optional(j))
            .map(|&j| actions[j].spec.id.clone())
            .collect();
        let decl = Declarations {
            completed,
            ..base.clone()
        };
        let when = a.spec.when.as_ref().and_then(|src| {
            let ptr = format!("{}/when", a.pointer);
            match engine.compile_expression(src) {
                Ok(e) => {
                    for err in e.check(&decl) {
                        d.var_error(&ptr, &err);
                    }
                    Some(e)
                }
                Err(err) => {
                    d.var_error(&ptr, &err);
                    None
                }
            }
        });
        // A polling REST call may read the first response (`result`) in its `poll` block.
        let config = compile_checked_with(
            d,
            engine,
            &format!("{}/config", a.pointer),
            &a.spec.config,
            &decl,
            true,
            |p| p.starts_with("/poll"),
        );
        let mut outputs = Vec::new();
        let out_decl = Declarations {
            allow_result: true,
            ..decl.clone()
        };
        for (k, src) in a.spec.outputs.iter().flatten() {
            let ptr = format!("{}/outputs/{k}", a.pointer);
            match engine.compile(src) {
                Ok(t) => {
                    for err in t.check(&out_decl) {
                        d.var_error(&ptr, &err);
                    }
                    outputs.push((k.clone(), t));
                }
                Err(err) => d.var_error(&ptr, &err),
            }
        }
        let rollback = a.spec.rollback.as_ref().map(|rb| {
            let mut rb_decl = decl.clone();
            rb_decl.completed.insert(a.spec.id.clone());
            compile_checked_with(
                d,
                engine,
                &format!("{}/rollback/config", a.pointer),
                &rb.config,
                &rb_decl,
                true,
                |_| false,
            )
        });
        compiled.actions.insert(
            a.spec.id.clone(),
            CompiledAction {
                when,
                config,
                outputs,
                rollback,
            },
        );
    }

    // ---- fields nothing reads (only when every read is a literal path, and every template
    // compiled: a broken template's reads are unknown)
    if !d.out.iter().any(Diagnostic::is_error) {
        warn_unused_fields(d, &fields, &compiled);
    }

    // ---- lifecycle
    if let Some(l) = &item.lifecycle {
        match l.status {
            Some(LifecycleStatus::Deprecated)
                if l.deprecation
                    .as_ref()
                    .and_then(|x| x.replacement.as_ref())
                    .is_none() =>
            {
                d.push(
                    Severity::Warning,
                    codes::DEPRECATED_NO_REPLACEMENT,
                    "/lifecycle/status",
                    format!("item `{}` is deprecated but names no replacement", item.metadata.id),
                    Some("add `lifecycle.deprecation.replacement: <item id>` so requesters know where to go".to_string()),
                );
            }
            Some(LifecycleStatus::Retired) => {
                d.push(
                    Severity::Warning,
                    codes::RETIRED,
                    "/lifecycle/status",
                    format!(
                        "item `{}` is retired: it is listed but new requests are refused",
                        item.metadata.id
                    ),
                    None,
                );
            }
            _ => {}
        }
    }
    compiled
}

fn compile_section(
    d: &mut FileDiags,
    engine: &Engine,
    ptr: &str,
    value: &Value,
    decl: &Declarations,
    compiled: &mut CompiledItem,
) {
    let t = compile_checked(d, engine, ptr, value, decl);
    if !matches!(t, ValueTemplate::Literal(_)) {
        compiled.sections.insert(ptr.to_string(), t);
    }
}

fn compile_checked(
    d: &mut FileDiags,
    engine: &Engine,
    ptr: &str,
    value: &Value,
    decl: &Declarations,
) -> ValueTemplate {
    compile_checked_with(d, engine, ptr, value, decl, false, |_| false)
}

fn compile_checked_with(
    d: &mut FileDiags,
    engine: &Engine,
    ptr: &str,
    value: &Value,
    decl: &Declarations,
    action_config: bool,
    allow_result_at: impl Fn(&str) -> bool,
) -> ValueTemplate {
    let with_result = Declarations {
        allow_result: true,
        ..decl.clone()
    };
    let compiled = if action_config {
        engine.compile_config(value)
    } else {
        engine.compile_value(value)
    };
    match compiled {
        Ok(t) => {
            let mut errors = Vec::new();
            t.for_each_template(&mut |p, tpl| {
                let decl = if allow_result_at(p) {
                    &with_result
                } else {
                    decl
                };
                for e in tpl.check(decl) {
                    errors.push((format!("{ptr}{p}"), e));
                }
            });
            for (p, e) in errors {
                d.var_error(&p, &e);
            }
            t
        }
        Err(errors) => {
            for e in errors {
                d.var_error(&format!("{ptr}{}", e.pointer), &e.error);
            }
            ValueTemplate::Literal(Value::Null)
        }
    }
}

/// Orders computed values so each comes after the ones it reads; reports cycles.
fn computed_order(d: &mut FileDiags, templates: &BTreeMap<String, Template>) -> Vec<String> {
    let names: Vec<&String> = templates.keys().collect();
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); names.len()];
    for (i, name) in names.iter().enumerate() {
        for r in templates[*name].references() {
            if r.scope == crate::vars::Scope::Computed
                && let Some(first) = r.path.first()
                && let Some(&j) = index.get(first.as_str())
            {
                deps[i].insert(j);
            }
        }
    }
    if let Some(cycle) = find_cycle(&deps) {
        let list: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
        d.error(
            codes::COMPUTED_CYCLE,
            &format!("/computed/{}", names[cycle[0]]),
            format!("computed values form a cycle: {}", list.join(" → ")),
            Some("a computed value may read others only if they do not read it back".to_string()),
        );
        return names.iter().map(|s| s.to_string()).collect();
    }
    // Depth-first post-order gives dependencies first.
    let mut order = Vec::new();
    let mut done = vec![false; names.len()];
    fn visit(i: usize, deps: &[BTreeSet<usize>], done: &mut [bool], order: &mut Vec<usize>) {
        if done[i] {
            return;
        }
        done[i] = true;
        for &j in &deps[i] {
            visit(j, deps, done, order);
        }
        order.push(i);
    }
    for i in 0..names.len() {
        visit(i, &deps, &mut done, &mut order);
    }
    order.into_iter().map(|i| names[i].clone()).collect()
}

/// A cycle in the graph (edges point at dependencies), as a closed list of nodes.
fn find_cycle(edges: &[BTreeSet<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = edges.len();
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS with an explicit path.
        let mut stack: Vec<(usize, Vec<usize>)> =
            vec![(start, edges[start].iter().copied().collect())];
        mark[start] = Mark::Active;
        while let Some((node, pending)) = stack.last_mut() {
            if let Some(next) = pending.pop() {
                match mark[next] {
                    Mark::Active => {
                        let pos = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(n, _)| *n).collect();
                        cycle.reverse();
                        cycle.insert(0, next);
                        // Read as "a waits for b waits for ... a".
                        cycle.reverse();
                        return Some(cycle);
                    }
                    Mark::New => {
                        mark[next] = Mark::Active;
                        let children = edges[next].iter().copied().collect();
                        stack.push((next, children));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[*node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

fn reach(edges: &[BTreeSet<usize>], from: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<usize> = edges[from].iter().copied().collect();
    while let Some(i) = stack.pop() {
        if i != from && seen.insert(i) {
            stack.extend(edges[i].iter().copied());
        }
    }
    seen
}

/// Defaults and options that cannot fit the field's type (PAO-E012).
fn check_field_values(d: &mut FileDiags, f: &Field, fptr: &str) {
    let options: Option<Vec<&str>> = f
        .options
        .as_ref()
        .map(|o| o.iter().map(|o| o.value()).collect());
    if options.is_some() && !f.field_type.has_options() {
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
    if f.field_type.has_options() && options.is_none() && f.source.is_none() {
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
    let Some(default) = &f.default else { return };
    if default.as_str().is_some_and(crate::vars::is_templated) {
        return; // a templated default is rendered at request time
    }
    let ptr = format!("{fptr}/default");
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
            &ptr,
            msg,
            Some(expected_hint(ty).to_string()),
        );
        return;
    }
    if let Some(opts) = &options {
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
                    &ptr,
                    format!(
                        "default `{s}` of field `{}` is not one of its options",
                        f.id
                    ),
                    Some(hint),
                );
            }
        }
    }
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
            &ptr,
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
            &ptr,
            format!("default {n} is below min {min}"),
            None,
        );
    }
    if let (Some(n), Some(max)) = (default.as_f64(), f.max.as_ref().and_then(num))
        && n > max
    {
        d.error(
            codes::FIELD_VALUE_TYPE,
            &ptr,
            format!("default {n} is above max {max}"),
            None,
        );
    }
}

fn num(v: &super::model::NumberOrText) -> Option<f64> {
    match v {
        super::model::NumberOrText::Number(n) => Some(*n),
        super::model::NumberOrText::Text(_) => None,
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

/// PAO-W003: a field that no template, condition, source or action reads is collected and
/// stored but never used. Skipped when some template reads `fields[...]` dynamically.
fn warn_unused_fields(
    d: &mut FileDiags,
    fields: &BTreeMap<String, (&Field, String, bool)>,
    compiled: &CompiledItem,
) {
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut dynamic = false;
    let mut note = |refs: Vec<crate::vars::Reference>| {
        for r in refs {
            if r.scope == crate::vars::Scope::Fields {
                match r.path.first() {
                    Some(f) => {
                        used.insert(f.clone());
                    }
                    None => dynamic = true,
                }
            }
        }
    };
    for (_, t) in &compiled.computed {
        note(t.references());
    }
    for e in compiled.conditions.values() {
        note(e.references());
    }
    if let Some(e) = &compiled.approval_required_when {
        note(e.references());
    }
    for a in compiled.actions.values() {
        if let Some(w) = &a.when {
            note(w.references());
        }
        a.config.for_each_template(&mut |_, t| note(t.references()));
        for (_, t) in &a.outputs {
            note(t.references());
        }
        if let Some(rb) = &a.rollback {
            rb.for_each_template(&mut |_, t| note(t.references()));
        }
    }
    for t in compiled.sections.values() {
        t.for_each_template(&mut |_, t| note(t.references()));
    }
    if dynamic {
        return;
    }
    for (id, (_, ptr, _)) in fields {
        if !used.contains(id) {
            d.push(
                Severity::Warning,
                codes::UNUSED_FIELD,
                &format!("{ptr}/id"),
                format!("field `{id}` is declared but never used"),
                Some(format!(
                    "read it somewhere (`${{{{ fields.{id} }}}}` in an action, the ticket or a condition), or remove it from the form"
                )),
            );
        }
    }
}
