//! Markdown (or plain text, which is Markdown without markup) to Atlassian Document Format, the
//! JSON tree JIRA Cloud's REST v3 insists on for descriptions and comments. Line breaks inside a
//! paragraph are kept (ticket text is written line by line), and anything ADF has no node for
//! (HTML, tables) arrives as text.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use serde_json::{Value, json};

fn push_child(parent: &mut Value, child: Value) {
    if let Some(c) = parent.get_mut("content").and_then(Value::as_array_mut) {
        c.push(child);
    }
}

fn is_block_container(node: &Value) -> bool {
    matches!(
        node.get("type").and_then(Value::as_str),
        Some("doc" | "listItem" | "blockquote")
    )
}

/// Appends an inline node to the innermost node, opening a paragraph when the innermost node
/// holds blocks (a tight list item, a blockquote or the document itself).
fn push_inline(stack: &mut [Value], inline: Value) {
    let Some(top) = stack.last_mut() else {
        return;
    };
    if is_block_container(top) {
        let content = top.get_mut("content").and_then(Value::as_array_mut);
        if let Some(content) = content {
            let last_is_open_para = content.last().is_some_and(|l| {
                l.get("type") == Some(&json!("paragraph")) && l.get("_open").is_some()
            });
            if !last_is_open_para {
                content.push(json!({"type": "paragraph", "_open": true, "content": []}));
            }
            if let Some(p) = content.last_mut() {
                push_child(p, inline);
            }
        }
    } else {
        push_child(top, inline);
    }
}

fn strip_open(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("_open");
            for x in m.values_mut() {
                strip_open(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_open),
        _ => {}
    }
}

fn text(t: &str, marks: &[Value]) -> Value {
    if marks.is_empty() {
        json!({"type": "text", "text": t})
    } else {
        json!({"type": "text", "text": t, "marks": marks})
    }
}

/// Converts Markdown or plain text to an ADF document (`{"type":"doc","version":1,...}`).
pub fn markdown_to_adf(markdown: &str) -> Value {
    let parser = Parser::new_ext(markdown, Options::ENABLE_STRIKETHROUGH);
    let mut stack: Vec<Value> = vec![json!({"type": "doc", "version": 1, "content": []})];
    let mut marks: Vec<Value> = Vec::new();
    let mut in_code = false;
    for ev in parser {
        match ev {
            Event::Start(tag) => {
                let node = match tag {
                    Tag::Paragraph => Some(json!({"type": "paragraph", "content": []})),
                    Tag::Heading { level, .. } => Some(
                        json!({"type": "heading", "attrs": {"level": level as u8}, "content": []}),
                    ),
                    Tag::BlockQuote(_) => Some(json!({"type": "blockquote", "content": []})),
                    Tag::CodeBlock(kind) => {
                        in_code = true;
                        let lang = match kind {
                            CodeBlockKind::Fenced(l) if !l.is_empty() => json!(l.to_string()),
                            _ => Value::Null,
                        };
                        Some(
                            json!({"type": "codeBlock", "attrs": {"language": lang}, "content": []}),
                        )
                    }
                    Tag::List(Some(n)) => {
                        Some(json!({"type": "orderedList", "attrs": {"order": n}, "content": []}))
                    }
                    Tag::List(None) => Some(json!({"type": "bulletList", "content": []})),
                    Tag::Item => Some(json!({"type": "listItem", "content": []})),
                    Tag::Emphasis => {
                        marks.push(json!({"type": "em"}));
                        None
                    }
                    Tag::Strong => {
                        marks.push(json!({"type": "strong"}));
                        None
                    }
                    Tag::Strikethrough => {
                        marks.push(json!({"type": "strike"}));
                        None
                    }
                    Tag::Link { dest_url, .. } => {
                        marks
                            .push(json!({"type": "link", "attrs": {"href": dest_url.to_string()}}));
                        None
                    }
                    _ => None,
                };
                if let Some(n) = node {
                    // A block opened in a container closes the container's open paragraph.
                    if let Some(top) = stack.last_mut()
                        && let Some(last) = top
                            .get_mut("content")
                            .and_then(Value::as_array_mut)
                            .and_then(|c| c.last_mut())
                        && let Some(m) = last.as_object_mut()
                    {
                        m.remove("_open");
                    }
                    stack.push(n);
                }
            }
            Event::End(end) => match end {
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::BlockQuote(_)
                | TagEnd::CodeBlock
                | TagEnd::List(_)
                | TagEnd::Item => {
                    if matches!(end, TagEnd::CodeBlock) {
                        in_code = false;
                    }
                    if stack.len() > 1
                        && let Some(n) = stack.pop()
                        && let Some(parent) = stack.last_mut()
                    {
                        push_child(parent, n);
                    }
                }
                TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough | TagEnd::Link => {
                    marks.pop();
                }
                _ => {}
            },
            Event::Text(t) => {
                let node = if in_code {
                    text(&t, &[])
                } else {
                    text(&t, &marks)
                };
                push_inline(&mut stack, node);
            }
            Event::Code(t) => {
                let mut m = marks.clone();
                m.push(json!({"type": "code"}));
                push_inline(&mut stack, text(&t, &m));
            }
            Event::Html(t) | Event::InlineHtml(t) => push_inline(&mut stack, text(&t, &[])),
            Event::SoftBreak | Event::HardBreak => {
                push_inline(&mut stack, json!({"type": "hardBreak"}));
            }
            Event::Rule => {
                if let Some(top) = stack.last_mut() {
                    push_child(top, json!({"type": "rule"}));
                }
            }
            _ => {}
        }
    }
    while stack.len() > 1 {
        if let Some(n) = stack.pop()
            && let Some(parent) = stack.last_mut()
        {
            push_child(parent, n);
        }
    }
    let mut doc = stack
        .pop()
        .unwrap_or_else(|| json!({"type": "doc", "version": 1, "content": []}));
    strip_open(&mut doc);
    doc
}

/// Plain text of an ADF document (for logs and tests).
pub fn adf_to_text(doc: &Value) -> String {
    let mut out = String::new();
    fn walk(v: &Value, out: &mut String) {
        match v.get("type").and_then(Value::as_str) {
            Some("text") => out.push_str(v.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("hardBreak") => out.push('\n'),
            _ => {
                for c in v
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    walk(c, out);
                }
                if matches!(
                    v.get("type").and_then(Value::as_str),
                    Some("paragraph" | "heading" | "codeBlock" | "listItem")
                ) {
                    out.push('\n');
                }
            }
        }
    }
    walk(doc, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_keeps_lines() {
        let d = markdown_to_adf("Requested by Ada.\nEndpoint: db:5432\n\nSecond paragraph");
        assert_eq!(d["type"], "doc");
        assert_eq!(d["version"], 1);
        let c = d["content"].as_array().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["type"], "paragraph");
        assert_eq!(c[0]["content"][1]["type"], "hardBreak");
        assert_eq!(
            adf_to_text(&d),
            "Requested by Ada.\nEndpoint: db:5432\nSecond paragraph\n"
        );
    }

    #[test]
    fn markdown_structures() {
        let d = markdown_to_adf(
            "# Title\n\n- **bold** item\n- `code` [link](https://x.example)\n\n```sql\nselect 1\n```\n",
        );
        let c = d["content"].as_array().unwrap();
        assert_eq!(c[0]["type"], "heading");
        assert_eq!(c[0]["attrs"]["level"], 1);
        assert_eq!(c[1]["type"], "bulletList");
        let item = &c[1]["content"][0];
        assert_eq!(item["type"], "listItem");
        assert_eq!(item["content"][0]["type"], "paragraph");
        assert_eq!(
            item["content"][0]["content"][0]["marks"][0]["type"],
            "strong"
        );
        let second = &c[1]["content"][1]["content"][0]["content"];
        assert_eq!(second[0]["marks"][0]["type"], "code");
        assert_eq!(second[2]["marks"][0]["attrs"]["href"], "https://x.example");
        assert_eq!(c[2]["type"], "codeBlock");
        assert_eq!(c[2]["attrs"]["language"], "sql");
        assert!(!d.to_string().contains("_open"));
    }
}
