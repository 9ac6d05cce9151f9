//! Checks every example in `docs/variables.md` against the engine, so the language reference
//! cannot drift from the implementation. The machine-readable forms are described at the end
//! of that file ("How the examples are checked").

use pao_core::vars::{Context, Engine, Scope};
use serde_json::Value;

const DOC: &str = include_str!("../../docs/variables.md");

fn context_json() -> Value {
    let marker = "<!-- doc-examples: context -->";
    let after = &DOC[DOC.find(marker).expect("the context marker") + marker.len()..];
    let start = after
        .find("```json\n")
        .expect("a json block after the marker")
        + 8;
    let end = after[start..]
        .find("```")
        .expect("the end of the json block")
        + start;
    serde_json::from_str(&after[start..end]).expect("the context is JSON")
}

fn context(json: &Value) -> Context<'_> {
    let mut ctx = Context::new();
    for (name, value) in json.as_object().expect("the context is an object") {
        let scope = Scope::from_name(name).unwrap_or_else(|| panic!("unknown scope {name}"));
        ctx.set(scope, value);
    }
    ctx
}

/// Splits a table row into cells, keeping `\|` inside a cell.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().expect("a cell").push('|');
            }
            '|' => out.push(String::new()),
            c => out.last_mut().expect("a cell").push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The text of a cell that is one code span.
fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

#[derive(Debug)]
struct TableExample {
    line: usize,
    template: bool,
    source: String,
    expected: String,
}

fn table_examples() -> Vec<TableExample> {
    let lines: Vec<&str> = DOC.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with('|') {
            i += 1;
            continue;
        }
        let header = cells(lines[i]);
        let col = |name: &str| header.iter().position(|h| h == name);
        let (src_col, want_col, template) = match (
            col("Expression"),
            col("Value"),
            col("Template"),
            col("Output"),
        ) {
            (Some(s), Some(w), _, _) => (s, w, false),
            (_, _, Some(s), Some(w)) => (s, w, true),
            _ => {
                while i < lines.len() && lines[i].starts_with('|') {
                    i += 1;
                }
                continue;
            }
        };
        i += 2; // header and separator
        while i < lines.len() && lines[i].starts_with('|') {
            let row = cells(lines[i]);
            let source = code(&row[src_col]).unwrap_or_else(|| panic!("line {}: not code", i + 1));
            let expected = match code(&row[want_col]) {
                Some(c) => c.to_string(),
                None => row[want_col].clone(),
            };
            out.push(TableExample {
                line: i + 1,
                template,
                source: source.to_string(),
                expected,
            });
            i += 1;
        }
    }
    out
}

fn outcome_matches(
    result: Result<Value, pao_core::vars::VarError>,
    expected: &str,
) -> Result<(), String> {
    match (result, expected.strip_prefix("error: ")) {
        (Ok(v), None) => {
            let want: Value = serde_json::from_str(expected)
                .map_err(|e| format!("the expected value `{expected}` is not JSON: {e}"))?;
            if v == want {
                Ok(())
            } else {
                Err(format!("got {v}, the doc says {want}"))
            }
        }
        (Err(e), Some(kind)) if e.kind().as_str() == kind => Ok(()),
        (Err(e), _) => Err(format!(
            "got the error `{}` ({}), the doc says {expected}",
            e.message(),
            e.kind().as_str()
        )),
        (Ok(v), Some(_)) => Err(format!("got {v}, the doc says {expected}")),
    }
}

#[test]
fn table_examples_are_true() {
    let json = context_json();
    let ctx = context(&json);
    let engine = Engine::new();
    let examples = table_examples();
    let (templates, expressions) =
        examples.iter().fold(
            (0, 0),
            |(t, e), x| {
                if x.template { (t + 1, e) } else { (t, e + 1) }
            },
        );
    assert!(
        templates >= 15 && expressions >= 120,
        "{templates} templates, {expressions} expressions"
    );
    let mut failures = Vec::new();
    for ex in &examples {
        let result = if ex.template {
            engine
                .compile(&ex.source)
                .and_then(|t| t.render(&ctx))
                .map(Value::String)
        } else {
            engine
                .compile_expression(&ex.source)
                .and_then(|e| e.eval(&ctx))
        };
        if let Err(why) = outcome_matches(result, &ex.expected) {
            failures.push(format!(
                "docs/variables.md:{}: `{}`: {why}",
                ex.line, ex.source
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong examples:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Fenced blocks: (info string, content, line of the opening fence).
fn fences() -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String, usize)> = None;
    for (n, line) in DOC.lines().enumerate() {
        match &mut open {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some((info.trim().to_string(), String::new(), n + 1));
                }
            }
            Some((_, body, _)) => {
                if line == "```" {
                    out.push(open.take().expect("open"));
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "unclosed code block");
    out
}

#[test]
fn block_examples_are_true() {
    let json = context_json();
    let ctx = context(&json);
    let engine = Engine::new();
    let blocks = fences();
    let mut checked = 0;
    for (i, (info, body, line)) in blocks.iter().enumerate() {
        if info != "jinja" {
            continue;
        }
        let template = body.strip_suffix('\n').unwrap_or(body);
        let (kind, expected, _) = blocks.get(i + 1).unwrap_or_else(|| {
            panic!("line {line}: a jinja block needs a text or console block after it")
        });
        let expected = expected.strip_suffix('\n').unwrap_or(expected);
        let result = engine.compile(template).and_then(|t| t.render(&ctx));
        match (kind.as_str(), result) {
            ("text", Ok(out)) => assert_eq!(out, expected, "docs/variables.md:{line}"),
            ("console", Err(e)) => assert_eq!(e.to_string(), expected, "docs/variables.md:{line}"),
            (kind, result) => {
                panic!("docs/variables.md:{line}: a {kind} block follows, but got {result:?}")
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} block examples");
}

#[test]
fn every_builtin_is_documented() {
    let names = Engine::new()
        .functions()
        .names()
        .map(str::to_string)
        .collect::<Vec<_>>();
    for name in names {
        assert!(
            DOC.contains(&format!("`{name}("))
                || DOC.contains(&format!("alias `{name}`"))
                || DOC.contains(&format!("`{name}`")),
            "`{name}` is not in docs/variables.md"
        );
    }
}
