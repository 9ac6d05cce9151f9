use super::*;
use serde_json::json;

struct Fixture {
    fields: Value,
    user: Value,
    outputs: Value,
    secrets: Value,
    system: Value,
    computed: Value,
    request: Value,
    metadata: Value,
    env: Value,
    result: Value,
}

fn fixture() -> Fixture {
    Fixture {
        fields: json!({
            "name": "Billing DB", "env": "prod", "replicas": 3, "ratio": 0.5,
            "tags": ["a", "b", "c"], "empty": [], "on": true, "nothing": null,
            "labels": {"team": "data", "tier": "gold"}, "nums": [3, 1, 2], "text": "  padded  "
        }),
        user: json!({"id": "u1", "email": "ada@example.com", "name": "Ada", "teams": ["data"], "roles": ["developer"]}),
        outputs: json!({
            "tf": {"endpoint": "db.internal", "port": 5432},
            "hosts": [{"name": "a", "ip": "10.0.0.1"}, {"name": "b", "zone": "z"}]
        }),
        secrets: json!({"token": "s3cr3t"}),
        system: json!({"now": "2026-11-29T10:00:00Z", "version": "0.1.0"}),
        computed: json!({"db_name": "billing-db-prod"}),
        request: json!({"id": "r-1", "priority": "high"}),
        metadata: json!({"id": "database.postgres", "name": "PostgreSQL"}),
        env: json!({"REGION": "eu-west-1"}),
        result: json!({"status": 201}),
    }
}

impl Fixture {
    fn ctx(&self) -> Context<'_> {
        Context::new()
            .with(Scope::Fields, &self.fields)
            .with(Scope::User, &self.user)
            .with(Scope::Outputs, &self.outputs)
            .with(Scope::Secrets, &self.secrets)
            .with(Scope::System, &self.system)
            .with(Scope::Computed, &self.computed)
            .with(Scope::Request, &self.request)
            .with(Scope::Metadata, &self.metadata)
            .with(Scope::Env, &self.env)
            .with(Scope::Result, &self.result)
    }
}

fn render(src: &str) -> String {
    let f = fixture();
    let t = Engine::new()
        .compile(src)
        .unwrap_or_else(|e| panic!("compile {src:?}: {e}"));
    t.render(&f.ctx())
        .unwrap_or_else(|e| panic!("render {src:?}: {e}"))
}

fn value(expr: &str) -> Value {
    let f = fixture();
    let e = Engine::new()
        .compile_expression(expr)
        .unwrap_or_else(|e| panic!("compile {expr:?}: {e}"));
    e.eval(&f.ctx())
        .unwrap_or_else(|e| panic!("eval {expr:?}: {e}"))
}

fn render_err(src: &str) -> VarError {
    let f = fixture();
    match Engine::new().compile(src) {
        Err(e) => e,
        Ok(t) => t.render(&f.ctx()).expect_err(src),
    }
}

fn eval_err(expr: &str) -> VarError {
    let f = fixture();
    match Engine::new().compile_expression(expr) {
        Err(e) => e,
        Ok(e) => e.eval(&f.ctx()).expect_err(expr),
    }
}

#[test]
fn interpolation_and_text() {
    assert_eq!(render("plain"), "plain");
    assert_eq!(render("${{ fields.name }}"), "Billing DB");
    assert_eq!(
        render("a ${{ fields.replicas }} b ${{ fields.on }} c"),
        "a 3 b true c"
    );
    assert_eq!(render("${{fields.ratio}}"), "0.5");
    assert_eq!(render("${{ 2.0 }}"), "2.0");
    assert_eq!(render("[${{ fields.nothing }}]"), "[]");
    assert_eq!(render("${{ fields.tags }}"), r#"["a","b","c"]"#);
    assert_eq!(
        render("${{ fields.labels }}"),
        r#"{"team":"data","tier":"gold"}"#
    );
    assert_eq!(render("${{ '}}' }}"), "}}");
    assert_eq!(render("${{ {'a': 1}.a }}"), "1");
}

#[test]
fn escapes_are_literal() {
    assert_eq!(render("$${{ fields.name }}"), "${{ fields.name }}");
    assert_eq!(render("cost: $5 and ${ x }"), "cost: $5 and ${ x }");
    assert_eq!(render("$$${{ 1 }}"), "$${{ 1 }}");
}

#[test]
fn substituted_values_are_not_reparsed() {
    let fields = json!({"evil": "${{ secrets.token }}"});
    let secrets = json!({"token": "s3cr3t"});
    let ctx = Context::new()
        .with(Scope::Fields, &fields)
        .with(Scope::Secrets, &secrets);
    let t = Engine::new().compile("v=${{ fields.evil }}").unwrap();
    assert_eq!(t.render(&ctx).unwrap(), "v=${{ secrets.token }}");
}

#[test]
fn single_expression_keeps_type() {
    let f = fixture();
    let e = Engine::new();
    let cases = [
        ("${{ fields.replicas }}", json!(3)),
        ("${{ fields.on }}", json!(true)),
        ("${{ fields.tags }}", json!(["a", "b", "c"])),
        (
            "${{ fields.labels }}",
            json!({"team": "data", "tier": "gold"}),
        ),
        ("${{ fields.nothing }}", Value::Null),
        ("${{ fields.ratio * 2 }}", json!(1.0)),
        (" ${{ fields.replicas }}", json!(" 3")),
        ("${{ fields.replicas }}${{ fields.replicas }}", json!("33")),
    ];
    for (src, want) in cases {
        let t = e.compile(src).unwrap();
        assert_eq!(t.render_value(&f.ctx()).unwrap(), want, "{src}");
    }
}

#[test]
fn operators() {
    let cases: &[(&str, Value)] = &[
        ("1 + 2 * 3", json!(7)),
        ("(1 + 2) * 3", json!(9)),
        ("7 / 2", json!(3.5)),
        ("7 // 2", json!(3)),
        ("-7 // 2", json!(-4)),
        ("7 % 3", json!(1)),
        ("-7 % 3", json!(2)),
        ("7.5 % 2", json!(1.5)),
        ("1 + 0.5", json!(1.5)),
        ("10 - 4 - 3", json!(3)),
        ("-fields.replicas", json!(-3)),
        ("'a' + 'b'", json!("ab")),
        ("[1] + [2]", json!([1, 2])),
        ("'n' ~ 1 ~ true", json!("n1true")),
        ("1 == 1.0", json!(true)),
        ("1 != 2", json!(true)),
        ("'a' == 1", json!(false)),
        ("2 < 3", json!(true)),
        ("3 <= 3", json!(true)),
        ("4 > 3.5", json!(true)),
        ("'b' >= 'a'", json!(true)),
        ("'b' in fields.tags", json!(true)),
        ("'z' not in fields.tags", json!(true)),
        ("'ill' in 'Billing'", json!(true)),
        ("'team' in fields.labels", json!(true)),
        ("true && false", json!(false)),
        ("true and true", json!(true)),
        ("false || true", json!(true)),
        ("false or false", json!(false)),
        ("!true", json!(false)),
        ("not fields.on", json!(false)),
        ("not 1 == 2", json!(true)),
        ("!fields.empty", json!(true)),
        ("fields.on ? 'y' : 'n'", json!("y")),
        ("false ? 1 : true ? 2 : 3", json!(2)),
        ("fields.env == 'prod' && fields.replicas > 2", json!(true)),
        (
            "fields.env == 'prod' || missing_is_not_evaluated()",
            json!(true),
        ),
    ];
    let _ = cases;
    for (expr, want) in cases
        .iter()
        .filter(|(e, _)| !e.contains("missing_is_not_evaluated"))
    {
        assert_eq!(&value(expr), want, "{expr}");
    }
}

#[test]
fn short_circuit_skips_the_other_side() {
    // The right side would fail (undefined), but it is never evaluated.
    assert_eq!(value("fields.on || fields.nope.deeper"), json!(true));
    assert_eq!(value("!fields.on && fields.nope"), json!(false));
    assert_eq!(value("fields.on ? 1 : fields.nope"), json!(1));
}

#[test]
fn access_and_optional_chaining() {
    assert_eq!(value("fields.tags[0]"), json!("a"));
    assert_eq!(value("fields.tags[-1]"), json!("c"));
    assert_eq!(value("fields['name']"), json!("Billing DB"));
    assert_eq!(
        value("fields.labels[fields.tags[0] == 'a' ? 'team' : 'tier']"),
        json!("data")
    );
    assert_eq!(value("outputs.tf.port"), json!(5432));
    assert_eq!(value("fields.nope?.deep"), Value::Null);
    assert_eq!(value("fields?.nope"), Value::Null);
    assert_eq!(value("fields.nothing?.x.y"), Value::Null);
    assert_eq!(value("fields.tags?.[7]"), Value::Null);
    assert_eq!(value("[1, [2, 3]][1][0]"), json!(2));
    assert_eq!(value("{'k': {'j': 5}}.k.j"), json!(5));
    assert_eq!(value("(fields.tags | reverse)[0]"), json!("c"));
}

#[test]
fn every_scope_is_readable() {
    assert_eq!(value("user.email"), json!("ada@example.com"));
    assert_eq!(value("metadata.id"), json!("database.postgres"));
    assert_eq!(value("request.priority"), json!("high"));
    assert_eq!(value("system.version"), json!("0.1.0"));
    assert_eq!(value("env.REGION"), json!("eu-west-1"));
    assert_eq!(value("computed.db_name"), json!("billing-db-prod"));
    assert_eq!(value("secrets.token"), json!("s3cr3t"));
    assert_eq!(value("result.status"), json!(201));
    assert_eq!(value("fields.name"), json!("Billing DB"));
    assert_eq!(value("outputs.tf.endpoint"), json!("db.internal"));
}

#[test]
fn unknown_scope_is_a_compile_error() {
    let e = Engine::new().compile("${{ field.name }}").unwrap_err();
    assert_eq!(e.kind(), VarErrorKind::UnknownScope);
    assert_eq!(e.hint(), Some("did you mean `fields`?"));
    assert_eq!(e.line_col(), Some((1, 5)));
    let e = Engine::new()
        .compile_expression("foo.bar == 1")
        .unwrap_err();
    assert_eq!(e.kind(), VarErrorKind::UnknownScope);
    assert!(e.message().contains("unknown scope `foo`"), "{e}");
}

#[test]
fn undefined_paths_name_scope_path_and_existing_keys() {
    let e = render_err("line one\nvalue: ${{ fields.replica }}");
    assert_eq!(e.kind(), VarErrorKind::Undefined);
    assert!(e.message().contains("`fields.replica` is undefined"), "{e}");
    assert!(e.message().contains("replicas"), "lists existing keys: {e}");
    assert_eq!(e.hint(), Some("did you mean `fields.replicas`?"));
    assert_eq!(e.line_col(), Some((2, 18)));
    let snippet = e.snippet().unwrap();
    assert!(
        snippet.contains("value: ${{ fields.replica }}"),
        "{snippet}"
    );
    assert!(snippet.contains("^^^^^^^^"), "{snippet}");
    let e = eval_err("fields.tags[9]");
    assert!(e.message().contains("out of range"), "{e}");
    let e = eval_err("fields.name.first");
    assert_eq!(e.kind(), VarErrorKind::Type);
    assert!(e.message().contains("it is a string"), "{e}");
}

#[test]
fn default_and_coalesce_guard_undefined() {
    assert_eq!(value("fields.nope | default('x')"), json!("x"));
    assert_eq!(value("default(fields.nope.deeper, 3)"), json!(3));
    assert_eq!(value("fields.nothing | default(1)"), json!(1));
    assert_eq!(value("fields.name | default('x')"), json!("Billing DB"));
    assert_eq!(
        value("coalesce(fields.a, fields.b, fields.env)"),
        json!("prod")
    );
    assert_eq!(value("coalesce(fields.a, fields.nothing)"), Value::Null);
    assert_eq!(value("(fields.nope | upper) | default('d')"), json!("d"));
    // Guarding does not hide errors that are not about missing values.
    assert_eq!(
        eval_err("default(1 / 0, 2)").kind(),
        VarErrorKind::Arithmetic
    );
}

#[test]
fn type_errors_are_strict() {
    for expr in [
        "'a' + 1",
        "'a' - 'b'",
        "1 < 'a'",
        "[1] * 2",
        "-'x'",
        "1 in 2",
        "'a' ~ fields.nope",
    ] {
        let e = eval_err(expr);
        assert!(
            matches!(e.kind(), VarErrorKind::Type | VarErrorKind::Undefined),
            "{expr}: {e}"
        );
    }
    assert_eq!(eval_err("1 / 0").kind(), VarErrorKind::Arithmetic);
    assert_eq!(eval_err("1 % 0").kind(), VarErrorKind::Arithmetic);
    assert_eq!(
        eval_err("9223372036854775807 + 1").kind(),
        VarErrorKind::Arithmetic
    );
}

#[test]
fn functions_string() {
    let cases: &[(&str, Value)] = &[
        ("lower('AbC')", json!("abc")),
        ("upper(fields.env)", json!("PROD")),
        ("title('hello big world')", json!("Hello Big World")),
        ("trim(fields.text)", json!("padded")),
        ("trim('--x--', '-')", json!("x")),
        ("replace('a-b-c', '-', '+')", json!("a+b+c")),
        ("split('a,b', ',')", json!(["a", "b"])),
        ("join(fields.tags, '|')", json!("a|b|c")),
        ("fields.tags | join", json!("abc")),
        ("slugify(' Billing DB (EU) ')", json!("billing-db-eu")),
        ("truncate('abcdef', 3)", json!("abc")),
        ("truncate('abcdef', 5, '…')", json!("abcd…")),
        ("truncate('ab', 5)", json!("ab")),
        ("length(fields.name)", json!(10)),
        ("length(fields.tags)", json!(3)),
        ("fields.labels | length", json!(2)),
        ("contains(fields.tags, 'b')", json!(true)),
        ("contains('abc', 'd')", json!(false)),
        ("starts_with(fields.name, 'Bill')", json!(true)),
        ("startsWith(fields.name, 'x')", json!(false)),
        ("ends_with(fields.name, 'DB')", json!(true)),
        ("endsWith(fields.name, 'DB')", json!(true)),
        ("matches(fields.env, '^pr')", json!(true)),
        ("matches('abc', '^\\\\d+$')", json!(false)),
        ("regex_replace('a1b22', '[0-9]+', '#')", json!("a#b#")),
        ("regexReplace('x', 'x', 'y')", json!("y")),
        ("url_encode('a b&c')", json!("a%20b%26c")),
        ("string(12)", json!("12")),
        ("string(fields.tags)", json!(r#"["a","b","c"]"#)),
        ("first(fields.tags)", json!("a")),
        ("last('xyz')", json!("z")),
        ("reverse('abc')", json!("cba")),
        ("len('abc')", json!(3)),
    ];
    for (expr, want) in cases {
        assert_eq!(&value(expr), want, "{expr}");
    }
}

#[test]
fn functions_data_and_numbers() {
    let cases: &[(&str, Value)] = &[
        (
            "to_json(fields.labels)",
            json!(r#"{"team":"data","tier":"gold"}"#),
        ),
        ("toJSON([1, 'a'])", json!(r#"[1,"a"]"#)),
        ("from_json('{\"a\": [1, 2]}').a[1]", json!(2)),
        ("fromJSON('3')", json!(3)),
        ("base64_encode('hello')", json!("aGVsbG8=")),
        ("base64_decode('aGVsbG8=')", json!("hello")),
        (
            "base64Decode(base64Encode('round trip'))",
            json!("round trip"),
        ),
        (
            "sha256('abc')",
            json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ),
        (
            "hmac_sha256('The quick brown fox jumps over the lazy dog', 'key')",
            json!("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"),
        ),
        ("min(fields.nums)", json!(1)),
        ("max(fields.nums)", json!(3)),
        ("min(4, 2.5, 3)", json!(2.5)),
        ("max('a', 'c', 'b')", json!("c")),
        ("round(2.5)", json!(3.0)),
        ("round(1.23456, 2)", json!(1.23)),
        ("int('42')", json!(42)),
        ("int(3.9)", json!(3)),
        ("int(true)", json!(1)),
        ("float('2.5')", json!(2.5)),
        ("float(2)", json!(2.0)),
        ("keys(fields.labels)", json!(["team", "tier"])),
        ("values(fields.labels)", json!(["data", "gold"])),
        (
            "merge(fields.labels, {'tier': 'silver', 'x': 1})",
            json!({"team": "data", "tier": "silver", "x": 1}),
        ),
        ("unique([1, 2, 1, 2.0, 'a', 'a'])", json!([1, 2, "a"])),
        ("sort(fields.nums)", json!([1, 2, 3])),
        ("sort(['b', 'a'])", json!(["a", "b"])),
        ("abs(-3)", json!(3)),
        ("abs(-2.5)", json!(2.5)),
        ("reverse(fields.nums)", json!([2, 1, 3])),
        ("range(3)", json!([0, 1, 2])),
        ("range(1, 7, 3)", json!([1, 4])),
        ("range(3, 0, -1)", json!([3, 2, 1])),
    ];
    for (expr, want) in cases {
        assert_eq!(&value(expr), want, "{expr}");
    }
}

#[test]
fn functions_time_and_ids() {
    assert_eq!(value("now()"), json!("2026-11-29T10:00:00Z"));
    assert_eq!(
        value("format_date(now(), '%Y/%m/%d %H:%M')"),
        json!("2026/11/29 10:00")
    );
    assert_eq!(
        value("formatDate('2026-01-31', '%d.%m.%Y')"),
        json!("31.01.2026")
    );
    assert_eq!(value("format_date(0, '%Y')"), json!("1970"));
    assert_eq!(
        value("add_duration(now(), '2h30m')"),
        json!("2026-11-29T12:30:00Z")
    );
    assert_eq!(
        value("add_duration('2026-11-29T10:00:00+01:00', '-1d')"),
        json!("2026-11-28T09:00:00Z")
    );
    assert_eq!(
        value("addDuration(now(), 60)"),
        json!("2026-11-29T10:01:00Z")
    );
    let a = value("uuid()");
    let b = value("uuid()");
    assert_ne!(a, b);
    assert_eq!(a.as_str().unwrap().len(), 36);
    assert_eq!(value("uuid('x')"), value("uuid('x')"));
    assert_ne!(value("uuid('x')"), value("uuid('y')"));
}

#[test]
fn function_errors() {
    let cases = [
        ("upper(1)", VarErrorKind::BadArguments),
        ("upper(fields.replicas)", VarErrorKind::Type),
        ("lower()", VarErrorKind::BadArguments),
        ("replace('a', 'b')", VarErrorKind::BadArguments),
        ("no_such_fn(1)", VarErrorKind::UnknownFunction),
        ("matches('a', '(')", VarErrorKind::Function),
        ("matches('a', fields.env ~ '(')", VarErrorKind::Function),
        ("from_json('{')", VarErrorKind::Function),
        ("base64_decode('***')", VarErrorKind::Function),
        ("format_date('yesterday', '%Y')", VarErrorKind::BadArguments),
        ("format_date(now(), '%Q')", VarErrorKind::BadArguments),
        (
            "add_duration(now(), '3 fortnights')",
            VarErrorKind::BadArguments,
        ),
        ("sort([1, 'a'])", VarErrorKind::Type),
        ("keys([1])", VarErrorKind::Type),
        ("merge({}, 1)", VarErrorKind::Type),
        ("int('x')", VarErrorKind::Type),
        ("length(1)", VarErrorKind::Type),
        ("range(0, 5, 0)", VarErrorKind::BadArguments),
        ("replace('a', '', 'b')", VarErrorKind::BadArguments),
        ("truncate('a', -1)", VarErrorKind::BadArguments),
        ("join(1)", VarErrorKind::Type),
        ("min(1, 'a')", VarErrorKind::Type),
    ];
    for (expr, kind) in cases {
        let e = eval_err(expr);
        assert_eq!(e.kind(), kind, "{expr}: {e}");
    }
    let e = eval_err("uppr('x')");
    assert_eq!(e.hint(), Some("did you mean `upper`?"));
}

#[test]
fn filters_are_calls_with_the_value_first() {
    assert_eq!(
        value("fields.name | lower | replace(' ', '_')"),
        json!("billing_db")
    );
    assert_eq!(value("fields.tags | join(', ') | upper"), json!("A, B, C"));
    assert_eq!(value("!fields.tags | contains('z')"), json!(true));
    assert_eq!(value("'a' ~ fields.env | upper"), json!("aPROD"));
}

#[test]
fn if_blocks() {
    let src = "{% if fields.env == 'dev' %}dev{% elif fields.replicas > 2 %}big{% else %}small{% endif %}";
    assert_eq!(render(src), "big");
    assert_eq!(render("{% if false %}x{% endif %}y"), "y");
    assert_eq!(
        render("{% if fields.on %}a{% if fields.empty %}b{% else %}c{% endif %}{% endif %}"),
        "ac"
    );
    // trim_blocks: the newline after a tag goes; `-` trims all white space on that side.
    assert_eq!(
        render("{% if true %}\nyes\n{% endif %}\nafter"),
        "yes\nafter"
    );
    assert_eq!(render("a   {%- if true -%}   b   {%- endif %}"), "ab");
}

#[test]
fn for_blocks_and_loop_variables() {
    assert_eq!(
        render("{% for t in fields.tags %}${{ t }}{% endfor %}"),
        "abc"
    );
    assert_eq!(
        render(
            "{% for t in fields.tags %}${{ loop.index }}:${{ t }}{% if !loop.last %}, {% endif %}{% endfor %}"
        ),
        "1:a, 2:b, 3:c"
    );
    assert_eq!(
        render(
            "{% for t in fields.tags %}{% if loop.first %}[{% endif %}${{ loop.index0 }}/${{ loop.length }}{% endfor %}"
        ),
        "[0/31/32/3"
    );
    assert_eq!(
        render("{% for k in fields.labels %}${{ k }}={{ fields.labels[k] }};{% endfor %}"),
        "team={{ fields.labels[k] }};tier={{ fields.labels[k] }};"
    );
    assert_eq!(
        render("{% for k in fields.labels %}${{ k }}=${{ fields.labels[k] }};{% endfor %}"),
        "team=data;tier=gold;"
    );
    assert_eq!(
        render(
            "{% for a in [1, 2] %}{% for b in ['x', 'y'] %}${{ a }}${{ b }}${{ loop.index }} {% endfor %}{% endfor %}"
        ),
        "1x1 1y2 2x1 2y2 "
    );
    assert_eq!(render("{% for t in fields.empty %}x{% endfor %}-"), "-");
    assert_eq!(
        render("{% for i in range(3) %}${{ i * 2 }}{% endfor %}"),
        "024"
    );
    // Items of a borrowed list of objects: read in place, through `?.`, with a dynamic key
    // from an inner loop; and loops at the same depth, borrowed after built and built after
    // borrowed, each see only their own items.
    assert_eq!(
        render(
            "{% for h in outputs.hosts %}{% for k in ['name'] %}${{ h[k] }}{% endfor %}=${{ default(h?.zone, '-') }}/${{ h.name }};{% endfor %}"
        ),
        "a=-/a;b=z/b;"
    );
    assert_eq!(
        render(
            "{% for t in ['x'] %}${{ t }}{% endfor %}{% for h in outputs.hosts %}${{ h?.name }}${{ loop.length }}{% endfor %}{% for t in ['y', 'z'] %}${{ t }}${{ t | upper }}{% endfor %}"
        ),
        "xa2b2yYzZ"
    );
    let e = render_err("{% for t in fields.name %}x{% endfor %}");
    assert_eq!(e.kind(), VarErrorKind::Type);
}

#[test]
fn block_syntax_errors_are_located() {
    let cases = [
        ("{% if true %}never closed", "`{% endif %}`"),
        ("{% endif %}", "without a matching opening block"),
        ("{% iff true %}{% endif %}", "unknown block `iff`"),
        (
            "{% for in x %}{% endfor %}",
            "`in` cannot be a loop variable",
        ),
        ("{% for 1 in x %}{% endfor %}", "expected a loop variable"),
        (
            "{% for fields in [1] %}{% endfor %}",
            "cannot be a loop variable",
        ),
        ("{% for x of [1] %}{% endfor %}", "expected `in`"),
        ("{% if true }", "expected `%}`"),
        ("${{ fields.name", "unclosed `${{`"),
        ("${{ }}", "empty"),
        ("${{ fields.name ) }}", "expected `}}`"),
        ("${{ 'abc }}", "unterminated string"),
        ("${{ a = 1 }}", "unexpected `=`"),
        ("${{ 1 + }}", "expected a value"),
        ("${{ f(1 }}", "expected `,` or `)`"),
        ("${{ f(1) }}", "unknown function"),
        ("${{ loop.index }}", "only available inside"),
        ("${{ 'x' | 1 }}", "expected a function name"),
        ("${{ [1, 2 }}", "expected `,` or `]`"),
        ("${{ '\\q' }}", "unknown escape"),
        ("${{ 99999999999999999999 }}", "does not fit"),
        ("${{ true ? 1 }}", "`:`"),
    ];
    for (src, needle) in cases {
        let e = Engine::new().compile(src).expect_err(src);
        assert!(
            e.message().contains(needle) || e.to_string().contains(needle),
            "{src}: {e}"
        );
        assert!(e.line_col().is_some(), "{src}: error has a location");
    }
}

#[test]
fn limits_are_clean_errors() {
    let f = fixture();
    let small = Engine::new().with_limits(Limits {
        fuel: 500,
        max_output_bytes: 64,
        max_loop_iterations: 50,
        ..Limits::default()
    });
    let e = small
        .compile("{% for i in range(40) %}{% for j in range(40) %}x{% endfor %}{% endfor %}")
        .unwrap()
        .render(&f.ctx())
        .unwrap_err();
    assert_eq!(e.kind(), VarErrorKind::Limit);
    let e = small
        .compile("{% for i in range(30) %}0123456789{% endfor %}")
        .unwrap()
        .render(&f.ctx())
        .unwrap_err();
    assert_eq!(e.kind(), VarErrorKind::Limit);
    assert!(e.message().contains("output"), "{e}");
    let e = small
        .compile_expression("range(1000) | join")
        .unwrap()
        .eval(&f.ctx())
        .unwrap_err();
    assert!(e.message().contains("fuel"), "{e}");
    // A long operator chain deepens the tree like nesting does.
    let e = Engine::new()
        .compile_expression(&vec!["1"; 400].join(" + "))
        .unwrap_err();
    assert_eq!(e.kind(), VarErrorKind::Limit);
    assert_eq!(
        Engine::new()
            .compile_expression(&vec!["1"; 40].join(" + "))
            .unwrap()
            .eval(&f.ctx())
            .unwrap(),
        json!(40)
    );
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    let e = Engine::new().compile_expression(&deep).unwrap_err();
    assert_eq!(e.kind(), VarErrorKind::Limit);
    let nested = "{% if true %}".repeat(20) + &"{% endif %}".repeat(20);
    assert_eq!(
        Engine::new().compile(&nested).unwrap_err().kind(),
        VarErrorKind::Limit
    );
    let big = "x".repeat(300 << 10);
    assert_eq!(
        Engine::new().compile(&big).unwrap_err().kind(),
        VarErrorKind::Limit
    );
    let e = Engine::new()
        .compile_expression(&"!".repeat(10_000))
        .unwrap_err();
    assert_eq!(e.kind(), VarErrorKind::Limit);
}

#[test]
fn secrets_are_reported_for_redaction() {
    let f = fixture();
    let e = Engine::new();
    let t = e
        .compile("Bearer ${{ secrets.token }} for ${{ fields.env }}")
        .unwrap();
    assert!(t.uses_secrets());
    let r = t.render_tracked(&f.ctx()).unwrap();
    assert_eq!(r.value, json!("Bearer s3cr3t for prod"));
    assert!(r.secrets.contains(&"s3cr3t".to_string()));
    let t = e
        .compile("sig=${{ secrets.token | base64_encode }}")
        .unwrap();
    let r = t.render_tracked(&f.ctx()).unwrap();
    assert!(
        r.secrets.contains(&"czNjcjN0".to_string()),
        "derived value is tainted: {r:?}"
    );
    let t = e.compile("${{ fields.env }}").unwrap();
    assert!(!t.uses_secrets());
    assert!(t.render_tracked(&f.ctx()).unwrap().secrets.is_empty());
    let v = e
        .compile_value(
            &json!({"headers": {"Authorization": "Bearer ${{ secrets.token }}"}, "n": 1}),
        )
        .unwrap();
    let r = v.render_tracked(&f.ctx()).unwrap();
    assert_eq!(
        r.value,
        json!({"headers": {"Authorization": "Bearer s3cr3t"}, "n": 1})
    );
    assert!(r.secrets.contains(&"s3cr3t".to_string()));
}

#[test]
fn value_templates_render_and_locate_errors() {
    let f = fixture();
    let e = Engine::new();
    let v = e
        .compile_value(&json!({
            "count": "${{ fields.replicas }}",
            "name": "db-${{ computed.db_name }}",
            "list": ["${{ fields.on }}", "lit", "$${{ x }}"],
            "plain": {"a": 1}
        }))
        .unwrap();
    assert_eq!(
        v.render(&f.ctx()).unwrap(),
        json!({"count": 3, "name": "db-billing-db-prod", "list": [true, "lit", "${{ x }}"], "plain": {"a": 1}})
    );
    let errs = e
        .compile_value(&json!({"a": [1, "${{ oops.x }}"], "b/c": "${{ ( }}"}))
        .unwrap_err();
    let pointers: Vec<&str> = errs.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(pointers, vec!["/a/1", "/b~1c"]);
    let v = e
        .compile_value(&json!({"x": {"y": "${{ fields.nope }}"}}))
        .unwrap();
    assert_eq!(v.render(&f.ctx()).unwrap_err().pointer, "/x/y");
}

#[test]
fn static_checks() {
    let e = Engine::new();
    let decl = Declarations {
        fields: ["name", "env"].iter().map(|s| s.to_string()).collect(),
        computed: ["db_name"].iter().map(|s| s.to_string()).collect(),
        actions: ["tf", "dns", "later"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        completed: ["tf"].iter().map(|s| s.to_string()).collect(),
        env: Some(["REGION"].iter().map(|s| s.to_string()).collect()),
        allow_result: false,
        ..Declarations::default()
    };
    let t = e
        .compile("${{ fields.name }} ${{ fields.nmae }}\n${{ computed.db }} ${{ outputs.tf.x }} ${{ outputs.dns.id }} ${{ outputs.dns?.id }} ${{ outputs.nope.x }} ${{ env.HOME }} ${{ result.x }} ${{ default(outputs.later.x, 1) }}")
        .unwrap();
    let errs = t.check(&decl);
    let summary: Vec<(VarErrorKind, (usize, usize))> = errs
        .iter()
        .map(|e| (e.kind(), e.line_col().unwrap()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (VarErrorKind::Undeclared, (1, 24)),
            (VarErrorKind::Undeclared, (2, 5)),
            (VarErrorKind::OutputNotAvailable, (2, 44)),
            (VarErrorKind::Undeclared, (2, 89)),
            (VarErrorKind::Undeclared, (2, 111)),
            (VarErrorKind::UnknownScope, (2, 127)),
        ],
        "{errs:#?}"
    );
    assert_eq!(errs[0].hint(), Some("did you mean `name`?"));
    let refs = e
        .compile_expression("fields.env == 'prod' && computed.db_name != ''")
        .unwrap()
        .references();
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0].scope, Scope::Fields);
    assert_eq!(refs[0].path, vec!["env".to_string()]);
    // Loop variables are not scopes and are not checked against declarations.
    let t = e
        .compile("{% for t in fields.name | split(',') %}${{ t }}{% endfor %}")
        .unwrap();
    assert!(t.check(&decl).is_empty());
}

#[test]
fn custom_functions_are_checked_at_compile_time() {
    let mut e = Engine::new();
    e.register_function("double", 1, 1, |a| {
        a[0].as_i64()
            .map(|i| json!(i * 2))
            .ok_or_else(|| "expected an int".to_string())
    })
    .unwrap();
    assert!(
        e.register_function("upper", 1, 1, |_| Ok(Value::Null))
            .is_err()
    );
    assert!(
        e.register_function("fields", 1, 1, |_| Ok(Value::Null))
            .is_err()
    );
    assert!(
        e.register_function("bad name", 1, 1, |_| Ok(Value::Null))
            .is_err()
    );
    let f = fixture();
    assert_eq!(
        e.compile("${{ fields.replicas | double }}")
            .unwrap()
            .render(&f.ctx())
            .unwrap(),
        "6"
    );
    assert_eq!(
        e.compile("${{ double(1, 2) }}").unwrap_err().kind(),
        VarErrorKind::BadArguments
    );
    let err = e
        .compile("${{ double('x') }}")
        .unwrap()
        .render(&f.ctx())
        .unwrap_err();
    assert_eq!(err.kind(), VarErrorKind::Function);
    assert!(err.message().contains("expected an int"));
}

#[test]
fn duration_parsing() {
    assert_eq!(parse_duration_ms("90s"), Some(90_000));
    assert_eq!(parse_duration_ms("2h30m"), Some(9_000_000));
    assert_eq!(parse_duration_ms("250ms"), Some(250));
    assert_eq!(parse_duration_ms("-1d"), Some(-86_400_000));
    assert_eq!(parse_duration_ms("1w"), Some(604_800_000));
    for bad in ["", "h", "10", "5 m", "1y", "-"] {
        assert_eq!(parse_duration_ms(bad), None, "{bad}");
    }
}

#[test]
fn templates_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Template>();
    assert_send_sync::<Expression>();
    assert_send_sync::<Engine>();
}

/// Renders with a tenth of the default fuel and returns the error, failing the test if the
/// render takes long: each case used to run out of memory or take tens of seconds.
fn limit_err(src: &str) -> VarError {
    let f = fixture();
    let engine = Engine::new().with_limits(Limits {
        fuel: 100_000,
        ..Limits::default()
    });
    let started = std::time::Instant::now();
    let e = match engine.compile(src) {
        Err(e) => e,
        Ok(t) => t.render(&f.ctx()).expect_err(src),
    };
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{src}: took {:?}",
        started.elapsed()
    );
    e
}

#[test]
fn growing_strings_are_charged_to_the_fuel() {
    // Each step multiplies the text, so 20 steps would need terabytes. Producing text costs
    // fuel per 64 bytes, which stops the chain long before memory runs out.
    let times = |step: &str, n: usize| format!("${{{{ 'a a'{} | length }}}}", step.repeat(n));
    for src in [
        times(" | replace('a', 'aaaa')", 20),
        times(" | regex_replace('a', 'aaaa')", 20),
        times(" | regex_replace('(a)', '$1$1$1$1')", 20),
        times(" | to_json", 40),
        times(" | base64_encode", 80),
        times(" | url_encode | replace('%', '%%')", 40),
        "${{ range(100000) | join('0123456789abcdef0123456789abcdef0123456789abcdef') | length }}"
            .to_string(),
    ] {
        let e = limit_err(&src);
        assert_eq!(e.kind(), VarErrorKind::Limit, "{src}: {e}");
        assert!(e.message().contains("fuel"), "{src}: {e}");
    }
    // Ordinary use stays well inside the default budget.
    assert_eq!(
        render("${{ 'aaaa' | replace('a', 'aaaa') | replace('a', 'aaaa') | length }}"),
        "64"
    );
    assert_eq!(
        render("${{ regex_replace('a1b22', '([0-9])', '<$1>') }}"),
        "a<1>b<2><2>"
    );
    assert_eq!(render("${{ regex_replace('abc', '', '-') }}"), "-a-b-c-");
    assert_eq!(
        render(
            "${{ regex_replace('2026-01-31', '(?P<y>\\\\d+)-(\\\\d+)-(\\\\d+)', '$3.$2.${y}') }}"
        ),
        "31.01.2026"
    );
}

#[test]
fn unique_is_charged_for_its_comparisons() {
    // `unique` compares every item with those kept so far; 100 000 distinct items would take
    // minutes, and must be stopped by the fuel instead.
    let e = limit_err("${{ range(20000) | unique | length }}");
    assert_eq!(e.kind(), VarErrorKind::Limit, "{e}");
    let started = std::time::Instant::now();
    let e = Engine::new()
        .compile_expression("range(100000) | unique")
        .unwrap()
        .eval(&Context::new())
        .unwrap_err();
    assert!(e.message().contains("fuel"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(render("${{ range(500) | unique | length }}"), "500");
}

#[test]
fn a_single_expression_value_obeys_the_output_limit() {
    let f = fixture();
    let small = Engine::new().with_limits(Limits {
        max_output_bytes: 64,
        ..Limits::default()
    });
    let t = small
        .compile(&format!(
            "${{{{ 'x' | replace('x', '{}') }}}}",
            "0123456789".repeat(7)
        ))
        .unwrap();
    assert_eq!(t.render(&f.ctx()).unwrap_err().kind(), VarErrorKind::Limit);
    assert_eq!(
        t.render_value(&f.ctx()).unwrap_err().kind(),
        VarErrorKind::Limit
    );
    let t = small.compile("${{ 'x' | replace('x', '0123') }}").unwrap();
    assert_eq!(t.render_value(&f.ctx()).unwrap(), json!("0123"));
}

#[test]
fn sort_of_mixed_kinds_is_an_error_not_a_panic() {
    // Ints and strings have no order between them; sorting with such a comparison used to
    // panic ("does not correctly implement a total order") once the list was long enough.
    let mut items = Vec::new();
    for i in 0..60 {
        items.push(json!(i * 7 % 13));
        items.push(json!(format!("{}", i % 5)));
    }
    let fields = json!({ "l": items });
    let ctx = Context::new().with(Scope::Fields, &fields);
    let e = Engine::new()
        .compile_expression("sort(fields.l)")
        .unwrap()
        .eval(&ctx)
        .unwrap_err();
    assert_eq!(e.kind(), VarErrorKind::Type);
    assert_eq!(value("sort([])"), json!([]));
    assert_eq!(value("sort([true, false])"), json!([false, true]));
    assert_eq!(eval_err("sort([null, null])").kind(), VarErrorKind::Type);
}

#[test]
fn ints_and_floats_compare_exactly() {
    // 2^53 + 1 is not a float; comparing through f64 made it equal to 2^53 as a float while
    // greater than 2^53 as an int, so sorting such numbers was not an order at all.
    let fields = json!({ "l": [9007199254740993i64, 9007199254740992.0, 9007199254740992i64, 9007199254740991i64, 9007199254740994i64, 9007199254740992.0] });
    let ctx = Context::new().with(Scope::Fields, &fields);
    let sorted = Engine::new()
        .compile_expression("sort(fields.l)")
        .unwrap()
        .eval(&ctx)
        .unwrap();
    assert_eq!(
        sorted,
        json!([
            9007199254740991i64,
            9007199254740992.0,
            9007199254740992i64,
            9007199254740992.0,
            9007199254740993i64,
            9007199254740994i64
        ])
    );
    assert_eq!(value("9007199254740993 > 9007199254740992.0"), json!(true));
    assert_eq!(
        value("9007199254740993 == 9007199254740992.0"),
        json!(false)
    );
    assert_eq!(value("9007199254740992 == 9007199254740992.0"), json!(true));
    assert_eq!(value("1 == 1.0 && 2.5 > 2 && -1 < -0.5"), json!(true));
    assert_eq!(value("unique([1, 1.0, 2])"), json!([1, 2]));
}

#[test]
fn int_and_float_errors_do_not_echo_the_text() {
    for expr in ["secrets.token | int", "float(secrets.token)"] {
        let e = eval_err(expr);
        assert_eq!(e.kind(), VarErrorKind::Type, "{expr}");
        assert!(!e.message().contains("s3cr3t"), "{expr}: {}", e.message());
        assert!(
            e.message()
                .contains("a text of 6 characters is not a number"),
            "{expr}: {}",
            e.message()
        );
    }
}

#[test]
fn cost_is_read_only_in_approval_rules() {
    let e = Engine::new();
    let x = e.compile_expression("cost.monthly > 1000").unwrap();
    let errs = x.check(&Declarations::default());
    assert!(
        errs.iter()
            .any(|e| e.message().contains("only available in approval rules")),
        "{errs:?}"
    );
    let allowed = Declarations {
        allow_cost: true,
        ..Declarations::default()
    };
    assert!(x.check(&allowed).is_empty());
    let cost = serde_json::json!({ "monthly": 1200.5 });
    let ctx = Context::new().with(Scope::Cost, &cost);
    assert!(x.eval_bool(&ctx).unwrap());
}

/// `src` compiled with `fuel`, with or without constant folding, evaluated as a condition.
fn eval_folded(src: &str, fuel: u64, fold: bool) -> Result<bool, String> {
    let f = fixture();
    super::fold::NO_FOLD.with(|n| n.set(!fold));
    let compiled = Engine::new()
        .with_limits(Limits {
            fuel,
            ..Limits::default()
        })
        .compile_expression(src);
    super::fold::NO_FOLD.with(|n| n.set(false));
    let e = compiled.map_err(|e| format!("compile: {e}"))?;
    e.eval_bool(&f.ctx()).map_err(|e| e.to_string())
}

/// The least fuel `src` evaluates with.
fn least_fuel(src: &str, fold: bool) -> u64 {
    let (mut lo, mut hi) = (1, 10_000);
    assert!(eval_folded(src, hi, fold).is_ok(), "{src}");
    while lo < hi {
        let mid = (lo + hi) / 2;
        if eval_folded(src, mid, fold).is_ok() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[test]
fn folded_constants_give_the_same_answers_errors_and_fuel() {
    let fine = [
        "fields.env in ['dev', 'qa', 'staging', 'prod']",
        "fields.env not in ['dev', 'qa']",
        "fields.replicas in [1, 2, 3.0]",
        "fields.ratio in [0.5]",
        "fields.on in [false, true]",
        "fields.nothing in [null]",
        "fields.tags in [['a', 'b', 'c'], []]",
        "fields.replicas > 2 * 4 - 7",
        "fields.name == 'Billing' ~ ' ' ~ 'DB'",
        "fields.nums == [3, 1, 2]",
        "fields.labels == {'team': 'data', 'tier': 'gold'}",
        "-(2 * 3) < fields.replicas",
        "!(1 > 2) && fields.on",
        "(true ? 'x' : 'y') == 'x' && fields.on",
        "fields.replicas * 2 + 1 > 6",
        "fields.replicas * fields.replicas - 1 == 8",
        "fields.ratio * 2 == 1.0",
        "fields.replicas + 0.5 > 3",
        "fields.name + '!' == 'Billing DB!'",
        "matches(fields.name, '^Bill' ~ 'ing')",
        "len([1, 2, 3] + [4]) == 4",
    ];
    for src in fine {
        assert_eq!(
            eval_folded(src, 1_000_000, true),
            eval_folded(src, 1_000_000, false),
            "{src}"
        );
        assert_eq!(eval_folded(src, 1_000_000, true), Ok(true), "{src}");
        assert_eq!(
            least_fuel(src, true),
            least_fuel(src, false),
            "fuel of {src}"
        );
    }
    // Constant expressions that fail are left as written: they fail when evaluated, with the
    // same message and location.
    let failing = [
        "fields.replicas > 1 / 0",
        "fields.replicas > 9223372036854775807 + 1",
        "fields.on && 'a' - 1 > 0",
        "fields.missing * 2 > 1",
        "fields.name * 2 > 1",
        "fields.replicas in 3",
        "fields.replicas * 4611686018427387904 > 1",
    ];
    for src in failing {
        let folded = eval_folded(src, 1_000_000, true);
        assert!(folded.is_err(), "{src}: {folded:?}");
        assert_eq!(folded, eval_folded(src, 1_000_000, false), "{src}");
    }
}
