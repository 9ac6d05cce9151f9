//! YAML to JSON with positions. Catalog diagnostics point at the line and column of the YAML
//! node a JSON pointer names, so the parser here keeps a map from pointer to position while it
//! builds the `serde_json::Value`. It also refuses what a typed loader must not accept
//! silently: duplicate keys, non-string keys, runaway aliases, and nesting past a limit.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a YAML node starts: 1-based line and column, and whether the node is a block scalar
/// (`|` or `>`), whose content starts on the next line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Byte offset in the file.
    pub offset: usize,
    /// How the scalar was written, for mapping positions inside templates.
    pub style: ScalarStyle,
}

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// Not a scalar, or a plain scalar.
    Plain,
    /// `'...'` or `"..."`.
    Quoted,
    /// `|` or `>`.
    Block,
}

/// A parsed YAML document and the positions of its nodes and keys by JSON pointer.
#[derive(Debug, Clone, Default)]
pub struct SpannedDoc {
    /// The document as JSON.
    pub value: Value,
    /// Position of each value.
    pub values: HashMap<String, Pos>,
    /// Position of each mapping key (pointer of the value it names).
    pub keys: HashMap<String, Pos>,
}

impl SpannedDoc {
    /// Position of the value at `pointer`, or of its closest ancestor.
    pub fn pos(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => {
                    return Pos {
                        line: 1,
                        column: 1,
                        offset: 0,
                        style: ScalarStyle::Plain,
                    };
                }
            }
        }
    }

    /// Position of the key that introduces `pointer`, falling back to the value.
    pub fn key_pos(&self, pointer: &str) -> Pos {
        self.keys
            .get(pointer)
            .copied()
            .unwrap_or_else(|| self.pos(pointer))
    }
}

/// A YAML problem with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// What kind of problem.
    pub kind: YamlErrorKind,
    /// What went wrong.
    pub message: String,
    /// Where.
    pub line: usize,
    /// Where.
    pub column: usize,
    /// JSON pointer of the node, when known.
    pub pointer: String,
}

/// Kinds of YAML problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YamlErrorKind {
    /// The text is not valid YAML.
    Syntax,
    /// A mapping repeats a key.
    DuplicateKey,
    /// Nesting or alias expansion past the limits.
    TooDeep,
}

/// Limits on one document.
pub const MAX_DEPTH: usize = 64;
const MAX_NODES: usize = 1_000_000;
/// Bytes that aliases may add to a document (string lengths plus keys). Without it a short
/// document aliasing a long string many times expands to gigabytes.
const MAX_ALIAS_BYTES: usize = 4 * 1024 * 1024;

/// What expanding an anchor costs: its nodes, and its bytes (strings and keys; 8 for other
/// scalars and for each container).
#[derive(Debug, Clone, Copy)]
struct Cost {
    nodes: usize,
    bytes: usize,
}

enum Frame {
    Seq {
        items: Vec<Value>,
        pointer: String,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        pointer: String,
        anchor: usize,
        pending_key: Option<String>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    anchors: HashMap<usize, (Value, Cost)>,
    doc: SpannedDoc,
    error: Option<YamlError>,
    nodes: usize,
    alias_bytes: usize,
    documents: usize,
}

fn escape(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['~', '/']) {
        std::borrow::Cow::Owned(key.replace('~', "~0").replace('/', "~1"))
    } else {
        std::borrow::Cow::Borrowed(key)
    }
}

fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Value::String(s.to_string()),
        _ => {}
    }
    let looks_numeric = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.');
    if looks_numeric {
        let digits = s.strip_prefix('+').unwrap_or(s);
        if let Ok(i) = digits.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Some(hex) = s.strip_prefix("0x")
            && let Ok(i) = i64::from_str_radix(hex, 16)
        {
            return Value::Number(i.into());
        }
        if let Some(oct) = s.strip_prefix("0o")
            && let Ok(i) = i64::from_str_radix(oct, 8)
        {
            return Value::Number(i.into());
        }
        let float_like = digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
            && digits.bytes().any(|b| b.is_ascii_digit());
        if float_like
            && let Ok(f) = digits.parse::<f64>()
            && let Some(n) = Number::from_f64(f)
        {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

impl Builder {
    fn current_pointer(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { items, pointer, .. }) => format!("{pointer}/{}", items.len()),
            Some(Frame::Map {
                pointer,
                pending_key,
                ..
            }) => match pending_key {
                Some(k) => format!("{pointer}/{}", escape(k)),
                None => pointer.clone(),
            },
        }
    }

    fn fail(&mut self, kind: YamlErrorKind, message: String, mark: Marker, pointer: String) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                kind,
                message,
                line: mark.line(),
                column: mark.col() + 1,
                pointer,
            });
        }
    }

    fn pos(mark: Marker, style: ScalarStyle) -> Pos {
        Pos {
            line: mark.line(),
            column: mark.col() + 1,
            offset: mark.index(),
            style,
        }
    }

    /// Adds a finished value to the container on top of the stack (or makes it the root).
    fn push_value(&mut self, value: Value, mark: Marker) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(value);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                map, pending_key, ..
            }) => match pending_key.take() {
                Some(k) => {
                    map.insert(k, value);
                }
                None => {
                    // This value is a key.
                    let key = match value {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".to_string(),
                        _ => {
                            let p = self.current_pointer();
                            self.fail(
                                YamlErrorKind::Syntax,
                                "mapping keys must be plain values, not lists or maps".to_string(),
                                mark,
                                p,
                            );
                            return;
                        }
                    };
                    let Some(Frame::Map {
                        map,
                        pointer,
                        pending_key,
                        ..
                    }) = self.stack.last_mut()
                    else {
                        return;
                    };
                    let child = format!("{pointer}/{}", escape(&key));
                    if map.contains_key(&key) {
                        let first = self.doc.keys.get(&child).copied();
                        let msg = match first {
                            Some(p) => {
                                format!("duplicate key `{key}` (first defined at line {})", p.line)
                            }
                            None => format!("duplicate key `{key}`"),
                        };
                        self.fail(YamlErrorKind::DuplicateKey, msg, mark, child);
                        return;
                    }
                    *pending_key = Some(key);
                    self.doc
                        .keys
                        .insert(child, Self::pos(mark, ScalarStyle::Plain));
                }
            },
        }
    }

    fn is_key_position(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Map {
                pending_key: None,
                ..
            })
        )
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            let p = self.current_pointer();
            self.fail(
                YamlErrorKind::TooDeep,
                format!("more than {MAX_NODES} YAML nodes"),
                mark,
                p,
            );
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        YamlErrorKind::Syntax,
                        "a catalog file holds one item; found a second YAML document (`---`)"
                            .to_string(),
                        mark,
                        String::new(),
                    );
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let key = self.is_key_position();
                let value = match style {
                    TScalarStyle::Plain => resolve_plain(&text),
                    _ => Value::String(text),
                };
                if !key {
                    let pointer = self.current_pointer();
                    let style = match style {
                        TScalarStyle::Plain => ScalarStyle::Plain,
                        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                            ScalarStyle::Quoted
                        }
                        _ => ScalarStyle::Block,
                    };
                    self.doc.values.insert(pointer, Self::pos(mark, style));
                }
                if anchor > 0 {
                    self.anchors.insert(anchor, (value.clone(), cost(&value)));
                }
                self.push_value(value, mark);
            }
            Event::Alias(id) => {
                let Some(&(_, c)) = self.anchors.get(&id) else {
                    let p = self.current_pointer();
                    self.fail(
                        YamlErrorKind::Syntax,
                        "alias to an unknown anchor".to_string(),
                        mark,
                        p,
                    );
                    return;
                };
                self.nodes = self.nodes.saturating_add(c.nodes);
                self.alias_bytes = self.alias_bytes.saturating_add(c.bytes);
                let too_much = if self.nodes > MAX_NODES {
                    Some("aliases expand to too many nodes".to_string())
                } else if self.alias_bytes > MAX_ALIAS_BYTES {
                    Some(format!(
                        "aliases expand to more than {} MiB; reuse smaller anchors or fewer times",
                        MAX_ALIAS_BYTES / (1024 * 1024)
                    ))
                } else {
                    None
                };
                if let Some(message) = too_much {
                    let p = self.current_pointer();
                    self.fail(YamlErrorKind::TooDeep, message, mark, p);
                    return;
                }
                let Some((value, _)) = self.anchors.get(&id).cloned() else {
                    return;
                };
                if !self.is_key_position() {
                    let pointer = self.current_pointer();
                    self.doc
                        .values
                        .insert(pointer, Self::pos(mark, ScalarStyle::Plain));
                }
                self.push_value(value, mark);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let pointer = self.current_pointer();
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(
                        YamlErrorKind::TooDeep,
                        format!("nested deeper than {MAX_DEPTH} levels"),
                        mark,
                        pointer,
                    );
                    return;
                }
                if self.is_key_position() {
                    self.fail(
                        YamlErrorKind::Syntax,
                        "mapping keys must be plain values, not lists or maps".to_string(),
                        mark,
                        pointer.clone(),
                    );
                    return;
                }
                self.doc
                    .values
                    .insert(pointer.clone(), Self::pos(mark, ScalarStyle::Plain));
                let frame = if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq {
                        items: Vec::new(),
                        pointer,
                        anchor,
                    }
                } else {
                    Frame::Map {
                        map: Map::new(),
                        pointer,
                        anchor,
                        pending_key: None,
                    }
                };
                self.stack.push(frame);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { items, anchor, .. }) => (Value::Array(items), anchor),
                    Some(Frame::Map { map, anchor, .. }) => (Value::Object(map), anchor),
                    None => return,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, (value.clone(), cost(&value)));
                }
                self.push_value(value, mark);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

fn cost(v: &Value) -> Cost {
    let mut c = Cost { nodes: 1, bytes: 8 };
    let mut add = |x: Cost| {
        c.nodes = c.nodes.saturating_add(x.nodes);
        c.bytes = c.bytes.saturating_add(x.bytes);
    };
    match v {
        Value::String(s) => c.bytes = s.len().max(8),
        Value::Array(a) => a.iter().for_each(|x| add(cost(x))),
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            add(Cost {
                nodes: 0,
                bytes: k.len(),
            });
            add(cost(x));
        }),
        _ => {}
    }
    c
}

/// Parses one YAML document into JSON with positions.
pub fn parse(source: &str) -> Result<SpannedDoc, YamlError> {
    let mut builder = Builder {
        stack: Vec::new(),
        root: None,
        anchors: HashMap::new(),
        doc: SpannedDoc::default(),
        error: None,
        nodes: 0,
        alias_bytes: 0,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(source);
    let result = parser.load(&mut builder, true);
    if let Some(e) = builder.error {
        return Err(e);
    }
    if let Err(e) = result {
        let mark = e.marker();
        let mut message = e.info().to_string();
        if source
            .lines()
            .nth(mark.line().saturating_sub(1))
            .is_some_and(|l| l.contains('\t'))
            || message.contains("tab")
        {
            message.push_str(" (YAML does not allow tabs for indentation; use spaces)");
        }
        return Err(YamlError {
            kind: YamlErrorKind::Syntax,
            message,
            line: mark.line().max(1),
            column: mark.col() + 1,
            pointer: String::new(),
        });
    }
    builder.doc.value = builder.root.unwrap_or(Value::Null);
    Ok(builder.doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_and_positions() {
        let doc =
            parse("a: 1\nb:\n  - x\n  - 'y'\n  - {c: true, d: ~, e: 1.5, f: \"2\"}\nv: 1.4.0\n")
                .unwrap();
        assert_eq!(
            doc.value,
            json!({"a": 1, "b": ["x", "y", {"c": true, "d": null, "e": 1.5, "f": "2"}], "v": "1.4.0"})
        );
        assert_eq!((doc.pos("/b/1").line, doc.pos("/b/1").column), (4, 5));
        assert_eq!(doc.pos("/b/1").style, ScalarStyle::Quoted);
        assert_eq!((doc.key_pos("/b").line, doc.key_pos("/b").column), (2, 1));
        assert_eq!(doc.pos("/b/2/e").line, 5);
        assert_eq!(
            doc.pos("/b/2/nope").line,
            5,
            "falls back to the closest ancestor"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.kind, YamlErrorKind::DuplicateKey);
        assert_eq!((e.line, e.pointer.as_str()), (3, "/a"));
        assert!(
            e.message.contains("first defined at line 1"),
            "{}",
            e.message
        );
    }

    #[test]
    fn tabs_and_syntax_errors_are_located() {
        let e = parse("a:\n\tb: 1\n").unwrap_err();
        assert_eq!(e.kind, YamlErrorKind::Syntax);
        assert_eq!(e.line, 2);
        assert!(e.message.contains("tabs"), "{}", e.message);
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(e.kind, YamlErrorKind::Syntax);
    }

    #[test]
    fn depth_and_alias_bombs_are_refused() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse(&deep).unwrap_err().kind, YamlErrorKind::TooDeep);
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert_eq!(parse(&bomb).unwrap_err().kind, YamlErrorKind::TooDeep);
    }

    #[test]
    fn aliases_to_long_strings_are_charged_by_bytes() {
        // A few aliases to a large string: tens of MB once expanded.
        let small = format!(
            "a: &a \"{}\"\nb:\n{}",
            "x".repeat(400_000),
            "- *a\n".repeat(20)
        );
        let e = parse(&small).unwrap_err();
        assert_eq!(e.kind, YamlErrorKind::TooDeep);
        assert!(e.message.contains("MiB"), "{}", e.message);
        assert!(
            e.line > 2,
            "located at the alias that crossed the limit: {e:?}"
        );
        // The ~900 KB document that would expand to ~40 GB is refused quickly.
        let bomb = format!(
            "a: &a \"{}\"\nb:\n{}",
            "x".repeat(400_000),
            "- *a\n".repeat(100_000)
        );
        let started = std::time::Instant::now();
        let e = parse(&bomb).unwrap_err();
        assert_eq!(e.kind, YamlErrorKind::TooDeep);
        assert!(e.pointer.starts_with("/b/"), "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Aliases to keys count too: a map with a long key, repeated.
        let keyed = format!(
            "a: &a {{\"{}\": 1}}\nb: [{}]\n",
            "k".repeat(300_000),
            vec!["*a"; 20].join(", ")
        );
        assert_eq!(parse(&keyed).unwrap_err().kind, YamlErrorKind::TooDeep);
        // Ordinary reuse stays fine.
        let ok = format!(
            "a: &a \"{}\"\nb:\n{}",
            "x".repeat(1_000),
            "- *a\n".repeat(100)
        );
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn aliases_and_block_scalars() {
        let doc = parse("base: &b {x: 1}\nother: *b\ntext: |\n  line one\n  line two\n").unwrap();
        assert_eq!(doc.value["other"], json!({"x": 1}));
        assert_eq!(doc.value["text"], json!("line one\nline two\n"));
        assert_eq!(doc.pos("/text").style, ScalarStyle::Block);
    }

    #[test]
    fn multiple_documents_are_refused() {
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }
}
