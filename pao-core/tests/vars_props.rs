//! Property tests of the variable engine's round trips: literal text, substitution without
//! re-parsing, the `$${{` escape, typed single expressions against an independent integer
//! oracle, compile totality, and JSON values without templates.

use pao_core::vars::{Context, Engine, Scope, VarErrorKind};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Text made of the characters that matter to the template syntax, so that near misses
/// (`${`, `{{`, `%}`, `$$`, `-%}`) are common.
fn syntaxy_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("$".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("%".to_string()),
        Just("-".to_string()),
        Just("${{".to_string()),
        Just("$${{".to_string()),
        Just("{%".to_string()),
        Just("}}".to_string()),
        Just("%}".to_string()),
        Just("\n".to_string()),
        "[a-zA-Z0-9 .:'\"é中]{1,4}",
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// Any string, or a syntax-heavy one.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), syntaxy_text()]
}

fn render(src: &str, ctx: &Context<'_>) -> Result<String, pao_core::vars::VarError> {
    Engine::new().compile(src)?.render(ctx)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (a) Text without `${{` and `{%` (and so without `$${{`) is literal.
    #[test]
    fn text_without_syntax_renders_to_itself(s in text()) {
        prop_assume!(!s.contains("${{") && !s.contains("{%"));
        prop_assert_eq!(render(&s, &Context::new()).unwrap(), s.clone());
        let value = Engine::new().compile(&s).unwrap().render_value(&Context::new()).unwrap();
        prop_assert_eq!(value, Value::String(s));
    }

    /// (b) A substituted value is written as it is and never parsed again, whatever it holds.
    #[test]
    fn substituted_values_are_never_reparsed(s in text()) {
        let fields = json!({ "x": s });
        let secrets = json!({ "token": "must-not-leak" });
        let ctx = Context::new().with(Scope::Fields, &fields).with(Scope::Secrets, &secrets);
        prop_assert_eq!(render("${{ fields.x }}", &ctx).unwrap(), s.clone());
        prop_assert_eq!(render("<${{ fields.x }}>", &ctx).unwrap(), format!("<{s}>"));
        let t = Engine::new().compile("${{ fields.x }}").unwrap();
        prop_assert_eq!(t.render_value(&ctx).unwrap(), Value::String(s.clone()));
        // Through a loop and a filter too.
        prop_assert_eq!(
            render("{% for v in [fields.x] %}${{ v | string }}{% endfor %}", &ctx).unwrap(),
            s
        );
    }

    /// (c) Escaping every `${{` as `$${{` turns any text without `{%` into a template that
    /// renders back to the text.
    #[test]
    fn escaping_round_trips(s in text()) {
        prop_assume!(!s.contains("{%"));
        let escaped = s.replace("${{", "$${{");
        prop_assert_eq!(render(&escaped, &Context::new()).unwrap(), s);
    }

    /// (e) Compiling never panics, whatever the input: as a template and as an expression.
    #[test]
    fn compile_never_panics(s in prop_oneof![text(), expression_soup()]) {
        let engine = Engine::new();
        if let Err(e) = engine.compile(&s) {
            let _ = e.to_string();
        }
        if let Err(e) = engine.compile_expression(&s) {
            let _ = e.to_string();
        }
    }

    /// (f) A JSON value without templated strings comes back from compile_value + render as
    /// it went in.
    #[test]
    fn json_without_templates_survives(v in json_value()) {
        let compiled = Engine::new().compile_value(&v).unwrap();
        prop_assert_eq!(compiled.render(&Context::new()).unwrap(), v.clone());
        prop_assert_eq!(compiled.render_tracked(&Context::new()).unwrap().value, v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// (d) For generated integer expressions, `${{ expr }}` as a single-expression template
    /// keeps the int and equals the bare expression's value, and both agree with an
    /// independent oracle: checked i64 arithmetic with floored division and modulo.
    #[test]
    fn single_expression_equals_eval((src, expected) in int_expr()) {
        let fields = json!({ "n": 7, "m": -3, "list": [4, 5, 6] });
        let ctx = Context::new().with(Scope::Fields, &fields);
        let engine = Engine::new();
        let eval = engine.compile_expression(&src).unwrap().eval(&ctx);
        let template = format!("${{{{ {src} }}}}");
        let rendered = engine.compile(&template).unwrap().render_value(&ctx);
        match expected {
            Some(i) => {
                prop_assert_eq!(eval.unwrap(), json!(i), "{}", src);
                prop_assert_eq!(rendered.unwrap(), json!(i), "{}", src);
            }
            None => {
                let (a, b) = (eval.unwrap_err(), rendered.unwrap_err());
                prop_assert_eq!(a.kind(), VarErrorKind::Arithmetic, "{}: {}", src, a);
                prop_assert_eq!(a.kind(), b.kind());
                prop_assert_eq!(a.message(), b.message());
            }
        }
    }
}

/// A field value for a comparison: strings that often equal, or differ in one byte from, the
/// literal they are compared with; ints, big unsigned ints, floats, bools, null, lists.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[ab]{0,20}".prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => (-5i64..5).prop_map(Value::from),
        1 => Just(json!(u64::MAX)),
        1 => (-5.0f64..5.0).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => Just(json!(["a"])),
    ]
}

/// A literal for the right-hand side, often derived from the field value.
fn literal_for(v: &Value, pick: u8, at: usize) -> String {
    let quote = |s: &str| format!("'{s}'");
    match (v, pick % 4) {
        (Value::String(s), 0) => quote(s),
        (Value::String(s), 1) if !s.is_empty() => {
            // The same length, one byte changed.
            let mut b = s.clone().into_bytes();
            let i = at % b.len();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            quote(&String::from_utf8(b).unwrap())
        }
        // Literals are i64 (`-i64::MIN` does not parse) or floats.
        (Value::Number(n), 0) if n.is_f64() => n.to_string(),
        (Value::Number(n), 0 | 1) => match n.as_i64() {
            Some(i) if i > i64::MIN => i.saturating_add(i64::from(pick % 4)).to_string(),
            _ => "0".into(),
        },
        (_, 2) => format!("{}", at as i64 - 3),
        (_, 3) => "2.5".into(),
        _ => quote("ab"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// `path <op> literal` as a condition (`eval_bool`, which compares in place), as a value
    /// (`eval`, the general evaluator) and as an `{% if %}` in a template all agree: the same
    /// answer or the same kind of error. String equality also agrees with Rust's `==`.
    #[test]
    fn comparisons_agree_however_they_are_evaluated(
        v in field_value(),
        pick in any::<u8>(),
        at in 0usize..20,
        op in prop_oneof![Just("=="), Just("!="), Just("<"), Just("<="), Just(">"), Just(">=")],
        missing in proptest::bool::weighted(0.1),
    ) {
        let lit = literal_for(&v, pick, at);
        let fields = if missing { json!({}) } else { json!({ "x": v.clone() }) };
        let ctx = Context::new().with(Scope::Fields, &fields);
        let engine = Engine::new();
        let src = format!("fields.x {op} {lit}");
        let expr = engine.compile_expression(&src).unwrap();
        let as_bool = expr.eval_bool(&ctx);
        let as_value = expr.eval(&ctx);
        let template = engine
            .compile(&format!("{{% if {src} %}}y{{% else %}}n{{% endif %}}"))
            .unwrap()
            .render(&ctx);
        match (&as_bool, &as_value) {
            (Ok(b), Ok(val)) => {
                prop_assert_eq!(&json!(b), val, "{}", src);
                prop_assert_eq!(template.unwrap(), if *b { "y" } else { "n" }, "{}", src);
            }
            (Err(a), Err(b)) => {
                prop_assert_eq!(a.kind(), b.kind(), "{}: {} / {}", src, a, b);
                prop_assert_eq!(template.unwrap_err().kind(), a.kind(), "{}", src);
            }
            _ => prop_assert!(false, "{}: eval_bool {:?}, eval {:?}", src, as_bool, as_value),
        }
        let quoted = lit.strip_prefix('\'').and_then(|l| l.strip_suffix('\''));
        if let (Value::String(s), Some(l)) = (&v, quoted)
            && !missing
            && op == "=="
        {
            prop_assert_eq!(as_bool.unwrap(), s == l, "{}", src);
        }
    }
}

/// Token soup: mostly valid pieces of the language in random order.
fn expression_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("fields.x"),
        Just("?."),
        Just("."),
        Just("["),
        Just("]"),
        Just("("),
        Just(")"),
        Just("{"),
        Just("}"),
        Just("'s'"),
        Just("\"d\\u00e9\""),
        Just("1"),
        Just("-"),
        Just("2.5e3"),
        Just("|"),
        Just("upper"),
        Just("default("),
        Just(","),
        Just("?"),
        Just(":"),
        Just("~"),
        Just("=="),
        Just("not"),
        Just("in"),
        Just("and"),
        Just("${{"),
        Just("}}"),
        Just("{%"),
        Just("%}"),
        Just("-%}"),
        Just("if"),
        Just("for"),
        Just("endif"),
        Just("endfor"),
        Just(" "),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

/// JSON values whose strings are never templates.
fn json_value() -> impl Strategy<Value = Value> {
    let plain = any::<String>().prop_filter("not a template", |s| {
        !s.contains("${{") && !s.contains("{%")
    });
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        plain.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((plain.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An integer expression and its value by the oracle (`None` when it must fail: division by
/// zero or overflow).
fn int_expr() -> impl Strategy<Value = (String, Option<i64>)> {
    let leaf = prop_oneof![
        (-50i64..50).prop_map(|i| {
            // A negative literal is written as negation; both must give the same.
            (format!("{i}"), Some(i))
        }),
        Just(("fields.n".to_string(), Some(7))),
        Just(("fields.m".to_string(), Some(-3))),
        Just(("fields.list[1]".to_string(), Some(5))),
        Just(("fields.list[-1]".to_string(), Some(6))),
        Just(("length(fields.list)".to_string(), Some(3))),
        Just(("9223372036854775807".to_string(), Some(i64::MAX))),
    ];
    leaf.prop_recursive(5, 48, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone(), 0..6usize).prop_map(|((a, x), (b, y), op)| {
                let sym = ["+", "-", "*", "//", "%", "max"][op];
                let v = match (x, y) {
                    (Some(x), Some(y)) => match op {
                        0 => x.checked_add(y),
                        1 => x.checked_sub(y),
                        2 => x.checked_mul(y),
                        3 => floor_div(x, y),
                        4 => floor_mod(x, y),
                        _ => Some(x.max(y)),
                    },
                    _ => None,
                };
                let src = if op == 5 {
                    format!("max({a}, {b})")
                } else {
                    format!("({a}) {sym} ({b})")
                };
                (src, v)
            }),
            inner
                .clone()
                .prop_map(|(a, x)| (format!("-({a})"), x.and_then(i64::checked_neg))),
            inner
                .clone()
                .prop_map(|(a, x)| (format!("({a}) | abs"), x.and_then(i64::checked_abs))),
            (inner.clone(), inner.clone(), inner).prop_map(|((a, x), (b, y), (c, z))| {
                // Only the taken branch is evaluated.
                let v = match x {
                    Some(x) if x > 0 => y,
                    Some(_) => z,
                    None => None,
                };
                (format!("({a}) > 0 ? ({b}) : ({c})"), v)
            }),
        ]
    })
}

fn floor_div(x: i64, y: i64) -> Option<i64> {
    if y == 0 {
        return None;
    }
    let q = x.checked_div(y)?;
    Some(if x % y != 0 && ((x < 0) != (y < 0)) {
        q - 1
    } else {
        q
    })
}

fn floor_mod(x: i64, y: i64) -> Option<i64> {
    if y == 0 {
        return None;
    }
    let m = x.checked_rem(y)?;
    Some(if m != 0 && ((m < 0) != (y < 0)) {
        m + y
    } else {
        m
    })
}
