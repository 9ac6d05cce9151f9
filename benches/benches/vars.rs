//! PAO's variable engine against its peers, on the same fixtures, in the same run.
//!
//! Groups: `small` (2 variables), `jira20` (20 variables over 8 scopes), `filters3` (three
//! chained filters), `loop20` (a loop over 20 objects, one value each), `loop20_rich` (the same
//! loop with the index, three values and two conditionals per line), `cond_expr` (a `when:` condition to a
//! bool), `catalog_item` (every template, condition and computed value of one catalog item),
//! `compile_jira20` (compiling the jira20 template) and `error_undefined` (time to get the
//! error for a misspelt variable, strict mode).
//!
//! Engines: `pao`, `minijinja`, `tera`, `handlebars`, `upon`, `rhai` (only where the fixture is
//! expressions: `cond_expr` and `catalog_item`, whose templates it writes as interpolated
//! strings) and `native`, hand-written Rust over `serde_json` that is the floor.
//!
//! How it is measured, so the numbers are each peer's best case:
//! - The context is converted to each engine's own value type ONCE, outside the timing loop
//!   (minijinja `Value`, tera `Context`, handlebars `Context`, upon `Value`, rhai `Scope`). PAO
//!   borrows the `serde_json` values as they are.
//! - Templates and expressions are compiled outside the timing loop (except `compile_jira20`).
//! - Every engine renders to a new `String` through its plain render API; none escapes HTML.
//! - Peers that lack a filter or comparison get it registered as a helper (handlebars: `trim`,
//!   `lower`, `upper`, `replace`, `inc`, `contains`, `mul`; upon: those and `eq`, `ne`, `gt`,
//!   `ge`). Engines without an expression API (tera, handlebars, upon) evaluate conditions as a
//!   template rendering `true`/`false`.
//! - Undefined values are errors only in `error_undefined` (minijinja strict undefined,
//!   handlebars strict mode; tera, upon and PAO are strict by default).
//!
//! Before timing a group, every engine's output is asserted equal to PAO's, so
//! `cargo test --benches` and `cargo bench` fail on a mismatch. `benches/report.sh` turns the
//! results into ratios against the targets.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pao_benches::{
    SCOPES, catalog_item, cond_expr, cond_shapes, context_json, error_undefined, filters3, jira20,
    loop20, loop20_rich, pao_context, small,
};
use pao_core::vars::{Engine, Expression, Template};
use serde_json::Value;

// ------------------------------------------------------------------------------------ engines

fn minijinja_env(strict: bool) -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .variable_delimiters("${{", "}}")
        .trim_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .expect("minijinja syntax");
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    if strict {
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    }
    env
}

fn tera_with(templates: &[(&str, &str)]) -> tera::Tera {
    let mut tera = tera::Tera::new();
    tera.autoescape_on(Vec::<&str>::new());
    for (name, src) in templates {
        tera.add_raw_template(name, src).expect("tera template");
    }
    tera
}

mod hb_helpers {
    use handlebars::handlebars_helper;

    handlebars_helper!(trim: |s: str| s.trim());
    handlebars_helper!(lower: |s: str| s.to_lowercase());
    handlebars_helper!(upper: |s: str| s.to_uppercase());
    handlebars_helper!(replace: |s: str, from: str, to: str| s.replace(from, to));
    handlebars_helper!(inc: |i: u64| i + 1);
    handlebars_helper!(contains: |list: array, x: str| list.iter().any(|v| v.as_str() == Some(x)));
    handlebars_helper!(mul: |a: i64, b: i64| a * b);
}

fn handlebars(strict: bool) -> handlebars::Handlebars<'static> {
    let mut hb = handlebars::Handlebars::new();
    hb.register_escape_fn(handlebars::no_escape);
    hb.set_strict_mode(strict);
    hb.register_helper("trim", Box::new(hb_helpers::trim));
    hb.register_helper("lower", Box::new(hb_helpers::lower));
    hb.register_helper("upper", Box::new(hb_helpers::upper));
    hb.register_helper("replace", Box::new(hb_helpers::replace));
    hb.register_helper("inc", Box::new(hb_helpers::inc));
    hb.register_helper("contains", Box::new(hb_helpers::contains));
    hb.register_helper("mul", Box::new(hb_helpers::mul));
    hb
}

fn upon_engine() -> upon::Engine<'static> {
    use upon::Value as V;
    let mut engine = upon::Engine::new();
    engine.set_syntax(
        upon::Syntax::builder()
            .expr("${{", "}}")
            .block("{%", "%}")
            .comment("{#", "#}")
            .build(),
    );
    engine.add_function("trim", |s: &str| s.trim().to_string());
    engine.add_function("lower", str::to_lowercase);
    engine.add_function("upper", str::to_uppercase);
    engine.add_function("replace", |s: &str, from: &str, to: &str| {
        s.replace(from, to)
    });
    engine.add_function("inc", |i: i64| i + 1);
    engine.add_function("eq", |a: &V, b: &V| a == b);
    engine.add_function("ne", |a: &V, b: &V| a != b);
    engine.add_function("gt", |a: i64, b: i64| a > b);
    engine.add_function("ge", |a: i64, b: i64| a >= b);
    engine.add_function("mul", |a: i64, b: i64| a * b);
    engine.add_function("contains", |list: &[V], x: &str| {
        list.iter().any(|v| matches!(v, V::String(s) if s == x))
    });
    engine
}

fn rhai_engine() -> rhai::Engine {
    rhai::Engine::new()
}

fn rhai_value(v: &Value) -> rhai::Dynamic {
    use rhai::Dynamic;
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(items) => Dynamic::from_array(items.iter().map(rhai_value).collect()),
        Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), rhai_value(v)))
                .collect(),
        ),
    }
}

/// The context in every engine's own value type, converted once.
struct Contexts {
    json: Value,
    minijinja: minijinja::Value,
    tera: tera::Context,
    handlebars: handlebars::Context,
    upon: upon::Value,
    rhai: rhai::Scope<'static>,
}

impl Contexts {
    fn new() -> Contexts {
        let json = context_json();
        let mut tera = tera::Context::new();
        let mut rhai = rhai::Scope::new();
        for scope in SCOPES {
            let v = &json[scope.name()];
            tera.insert_value(scope.name(), tera::Value::from_serializable(v));
            rhai.push(scope.name(), rhai_value(v));
        }
        Contexts {
            minijinja: minijinja::Value::from(minijinja::value::Serde(&json)),
            tera,
            handlebars: handlebars::Context::wraps(&json).expect("handlebars context"),
            upon: upon::to_value(&json).expect("upon context"),
            rhai,
            json,
        }
    }
}

// ------------------------------------------------------------------------------------ groups

fn configured<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_secs(1));
    g.sample_size(50);
    g
}

/// The templates of one rendering group, one per engine.
struct TemplateFixture<'s> {
    group: &'static str,
    pao: &'s str,
    minijinja: &'s str,
    tera: &'s str,
    handlebars: &'s str,
    upon: &'s str,
    native: fn(&Value) -> String,
}

fn template_group(c: &mut Criterion, f: TemplateFixture<'_>) {
    let cx = Contexts::new();
    let ctx = pao_context(&cx.json);

    let pao = Engine::new().compile(f.pao).expect("pao compile");
    let expected = pao.render(&ctx).expect("pao render");

    let mj_env = minijinja_env(false);
    let mj = mj_env
        .template_from_str(f.minijinja)
        .expect("minijinja compile");
    let tera = tera_with(&[(f.group, f.tera)]);
    let mut hb = handlebars(false);
    hb.register_template_string(f.group, f.handlebars)
        .expect("handlebars compile");
    let up_engine = upon_engine();
    let up = up_engine.compile(f.upon).expect("upon compile");

    assert_eq!((f.native)(&cx.json), expected, "{}: native", f.group);
    assert_eq!(
        mj.render(&cx.minijinja).expect("minijinja"),
        expected,
        "{}: minijinja",
        f.group
    );
    assert_eq!(
        tera.render(f.group, &cx.tera).expect("tera"),
        expected,
        "{}: tera",
        f.group
    );
    assert_eq!(
        hb.render_with_context(f.group, &cx.handlebars)
            .expect("handlebars"),
        expected,
        "{}: handlebars",
        f.group
    );
    assert_eq!(
        up.render_from(&up_engine, &cx.upon)
            .to_string()
            .expect("upon"),
        expected,
        "{}: upon",
        f.group
    );

    let mut g = configured(c, f.group);
    g.bench_function("pao", |b| b.iter(|| pao.render(black_box(&ctx)).unwrap()));
    g.bench_function("minijinja", |b| {
        b.iter(|| mj.render(black_box(&cx.minijinja)).unwrap())
    });
    g.bench_function("tera", |b| {
        b.iter(|| tera.render(f.group, black_box(&cx.tera)).unwrap())
    });
    g.bench_function("handlebars", |b| {
        b.iter(|| {
            hb.render_with_context(f.group, black_box(&cx.handlebars))
                .unwrap()
        })
    });
    g.bench_function("upon", |b| {
        b.iter(|| {
            up.render_from(&up_engine, black_box(&cx.upon))
                .to_string()
                .unwrap()
        })
    });
    g.bench_function("native", |b| b.iter(|| (f.native)(black_box(&cx.json))));
    g.finish();
}

fn bench_small(c: &mut Criterion) {
    template_group(
        c,
        TemplateFixture {
            group: "small",
            pao: small::PAO,
            minijinja: small::MINIJINJA,
            tera: small::TERA,
            handlebars: small::HANDLEBARS,
            upon: small::UPON,
            native: small::native,
        },
    );
}

fn bench_jira20(c: &mut Criterion) {
    let (tera, hb, up) = (jira20::tera(), jira20::handlebars(), jira20::upon());
    template_group(
        c,
        TemplateFixture {
            group: "jira20",
            pao: jira20::PAO,
            minijinja: jira20::MINIJINJA,
            tera: &tera,
            handlebars: &hb,
            upon: &up,
            native: jira20::native,
        },
    );
}

fn bench_filters3(c: &mut Criterion) {
    template_group(
        c,
        TemplateFixture {
            group: "filters3",
            pao: filters3::PAO,
            minijinja: filters3::MINIJINJA,
            tera: filters3::TERA,
            handlebars: filters3::HANDLEBARS,
            upon: filters3::UPON,
            native: filters3::native,
        },
    );
}

fn bench_loop20(c: &mut Criterion) {
    template_group(
        c,
        TemplateFixture {
            group: "loop20",
            pao: loop20::PAO,
            minijinja: loop20::MINIJINJA,
            tera: loop20::TERA,
            handlebars: loop20::HANDLEBARS,
            upon: loop20::UPON,
            native: loop20::native,
        },
    );
}

fn bench_loop20_rich(c: &mut Criterion) {
    template_group(
        c,
        TemplateFixture {
            group: "loop20_rich",
            pao: loop20_rich::PAO,
            minijinja: loop20_rich::MINIJINJA,
            tera: loop20_rich::TERA,
            handlebars: loop20_rich::HANDLEBARS,
            upon: loop20_rich::UPON,
            native: loop20_rich::native,
        },
    );
}

fn bench_cond_expr(c: &mut Criterion) {
    let mut cx = Contexts::new();
    let ctx = pao_context(&cx.json);

    let pao = Engine::new()
        .compile_expression(cond_expr::PAO)
        .expect("pao compile");
    let expected = pao.eval_bool(&ctx).expect("pao eval");
    assert!(expected, "the fixture's condition holds");

    let mj_env = minijinja_env(false);
    let mj = mj_env
        .compile_expression(cond_expr::MINIJINJA)
        .expect("minijinja compile");
    let tera = tera_with(&[("cond", cond_expr::TERA)]);
    let mut hb = handlebars(false);
    hb.register_template_string("cond", cond_expr::HANDLEBARS)
        .expect("handlebars compile");
    let up_engine = upon_engine();
    let up = up_engine.compile(cond_expr::UPON).expect("upon compile");
    let rhai = rhai_engine();
    let rhai_ast = rhai
        .compile_expression(cond_expr::RHAI)
        .expect("rhai compile");

    assert_eq!(cond_expr::native(&cx.json), expected, "native");
    assert_eq!(
        mj.eval(&cx.minijinja).expect("minijinja").is_true(),
        expected,
        "minijinja"
    );
    assert_eq!(
        tera.render("cond", &cx.tera).expect("tera") == "true",
        expected,
        "tera"
    );
    assert_eq!(
        hb.render_with_context("cond", &cx.handlebars)
            .expect("handlebars")
            == "true",
        expected,
        "handlebars"
    );
    assert_eq!(
        up.render_from(&up_engine, &cx.upon)
            .to_string()
            .expect("upon")
            == "true",
        expected,
        "upon"
    );
    assert_eq!(
        rhai.eval_ast_with_scope::<bool>(&mut cx.rhai, &rhai_ast)
            .expect("rhai"),
        expected,
        "rhai"
    );

    let mut g = configured(c, "cond_expr");
    g.bench_function("pao", |b| {
        b.iter(|| pao.eval_bool(black_box(&ctx)).unwrap())
    });
    g.bench_function("minijinja", |b| {
        b.iter(|| mj.eval(black_box(&cx.minijinja)).unwrap().is_true())
    });
    g.bench_function("tera", |b| {
        b.iter(|| tera.render("cond", black_box(&cx.tera)).unwrap() == "true")
    });
    g.bench_function("handlebars", |b| {
        b.iter(|| {
            hb.render_with_context("cond", black_box(&cx.handlebars))
                .unwrap()
                == "true"
        })
    });
    g.bench_function("upon", |b| {
        b.iter(|| {
            up.render_from(&up_engine, black_box(&cx.upon))
                .to_string()
                .unwrap()
                == "true"
        })
    });
    g.bench_function("rhai", |b| {
        b.iter(|| {
            rhai.eval_ast_with_scope::<bool>(black_box(&mut cx.rhai), &rhai_ast)
                .unwrap()
        })
    });
    g.bench_function("native", |b| {
        b.iter(|| cond_expr::native(black_box(&cx.json)))
    });
    g.finish();
}

/// One of [`cond_shapes`]: PAO, minijinja, rhai and the floor, after each gives the same answer.
fn bench_cond_shape(c: &mut Criterion, shape: &cond_shapes::Shape, eq_chain: Option<&str>) {
    let mut cx = Contexts::new();
    let ctx = pao_context(&cx.json);
    let pao = Engine::new()
        .compile_expression(shape.pao)
        .expect("pao compile");
    let expected = pao.eval_bool(&ctx).expect("pao eval");
    let chain = eq_chain.map(|src| {
        let e = Engine::new()
            .compile_expression(src)
            .expect("chain compile");
        assert_eq!(e.eval_bool(&ctx).expect("chain eval"), expected, "eq chain");
        e
    });
    let mj_env = minijinja_env(false);
    let mj = mj_env
        .compile_expression(shape.minijinja)
        .expect("minijinja compile");
    let rhai = rhai_engine();
    let rhai_ast = rhai.compile_expression(shape.rhai).expect("rhai compile");
    assert_eq!((shape.native)(&cx.json), expected, "native");
    assert_eq!(
        mj.eval(&cx.minijinja).expect("minijinja").is_true(),
        expected,
        "minijinja"
    );
    assert_eq!(
        rhai.eval_ast_with_scope::<bool>(&mut cx.rhai, &rhai_ast)
            .expect("rhai"),
        expected,
        "rhai"
    );

    let mut g = configured(c, shape.group);
    g.bench_function("pao", |b| {
        b.iter(|| pao.eval_bool(black_box(&ctx)).unwrap())
    });
    if let Some(chain) = &chain {
        g.bench_function("pao_eq_chain", |b| {
            b.iter(|| chain.eval_bool(black_box(&ctx)).unwrap())
        });
    }
    g.bench_function("minijinja", |b| {
        b.iter(|| mj.eval(black_box(&cx.minijinja)).unwrap().is_true())
    });
    g.bench_function("rhai", |b| {
        b.iter(|| {
            rhai.eval_ast_with_scope::<bool>(black_box(&mut cx.rhai), &rhai_ast)
                .unwrap()
        })
    });
    g.bench_function("native", |b| b.iter(|| (shape.native)(black_box(&cx.json))));
    g.finish();
}

fn bench_cond_shapes(c: &mut Criterion) {
    bench_cond_shape(c, &cond_shapes::IN_LIST, Some(cond_shapes::EQ_CHAIN));
    bench_cond_shape(c, &cond_shapes::ARITH, None);
    bench_cond_shape(c, &cond_shapes::CONST_FOLD, None);
}

fn bench_catalog_item(c: &mut Criterion) {
    use catalog_item::{Output, Sources};
    let mut cx = Contexts::new();
    let ctx = pao_context(&cx.json);

    // PAO.
    let engine = Engine::new();
    let src = catalog_item::pao();
    let pao_config: Vec<Template> = src
        .config
        .iter()
        .map(|(_, t)| engine.compile(t).expect("pao compile"))
        .collect();
    let pao_when: Vec<Expression> = src
        .when
        .iter()
        .map(|e| engine.compile_expression(e).expect("pao compile"))
        .collect();
    let pao_computed: Vec<Expression> = src
        .computed
        .iter()
        .map(|e| engine.compile_expression(e).expect("pao compile"))
        .collect();
    let pao = |ctx| Output {
        config: pao_config.iter().map(|t| t.render(ctx).unwrap()).collect(),
        when: std::array::from_fn(|n| pao_when[n].eval_bool(ctx).unwrap()),
        computed: std::array::from_fn(|n| match pao_computed[n].eval(ctx).unwrap() {
            Value::String(s) => s,
            other => other.to_string(),
        }),
    };

    // minijinja.
    let mj_env = minijinja_env(false);
    let src = catalog_item::minijinja();
    let mj_config: Vec<_> = src
        .config
        .iter()
        .map(|(_, t)| mj_env.template_from_str(t).expect("minijinja compile"))
        .collect();
    let mj_when: Vec<_> = src
        .when
        .iter()
        .map(|e| mj_env.compile_expression(e).expect("minijinja compile"))
        .collect();
    let mj_computed: Vec<_> = src
        .computed
        .iter()
        .map(|e| mj_env.compile_expression(e).expect("minijinja compile"))
        .collect();
    let mj = |ctx: &minijinja::Value| Output {
        config: mj_config.iter().map(|t| t.render(ctx).unwrap()).collect(),
        when: std::array::from_fn(|n| mj_when[n].eval(ctx).unwrap().is_true()),
        computed: std::array::from_fn(|n| mj_computed[n].eval(ctx).unwrap().to_string()),
    };

    // Template-only engines: names `c0..c9`, `w0..w2`, `v0..v1`.
    fn named(src: &Sources) -> Vec<(String, &str)> {
        let config = src
            .config
            .iter()
            .enumerate()
            .map(|(n, (_, t))| (format!("c{n}"), t.as_str()));
        let when = src
            .when
            .iter()
            .enumerate()
            .map(|(n, t)| (format!("w{n}"), t.as_str()));
        let computed = src
            .computed
            .iter()
            .enumerate()
            .map(|(n, t)| (format!("v{n}"), t.as_str()));
        config.chain(when).chain(computed).collect()
    }
    fn output(mut render: impl FnMut(&str) -> String) -> Output {
        const C: [&str; 10] = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"];
        Output {
            config: C.iter().map(|n| render(n)).collect(),
            when: std::array::from_fn(|n| render(["w0", "w1", "w2"][n]) == "true"),
            computed: std::array::from_fn(|n| render(["v0", "v1"][n])),
        }
    }

    let tera_src = catalog_item::tera();
    let tera_named = named(&tera_src);
    let tera_refs: Vec<(&str, &str)> = tera_named.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let tera = tera_with(&tera_refs);
    let tera_item = |ctx: &tera::Context| output(|n| tera.render(n, ctx).unwrap());

    let hb_src = catalog_item::handlebars();
    let mut hb = handlebars(false);
    for (n, t) in named(&hb_src) {
        hb.register_template_string(&n, t)
            .expect("handlebars compile");
    }
    let hb_item = |ctx: &handlebars::Context| output(|n| hb.render_with_context(n, ctx).unwrap());

    let up_src = catalog_item::upon();
    let up_engine = upon_engine();
    let up_named: Vec<(String, upon::Template<'_>)> = named(&up_src)
        .into_iter()
        .map(|(n, t)| (n, up_engine.compile(t).expect("upon compile")))
        .collect();
    let up_item = |ctx: &upon::Value| {
        output(|n| {
            let (_, t) = up_named
                .iter()
                .find(|(name, _)| name == n)
                .expect("template");
            t.render_from(&up_engine, ctx).to_string().unwrap()
        })
    };

    // rhai.
    let rhai = rhai_engine();
    let rh_src = catalog_item::rhai();
    let compile = |e: &str| rhai.compile_expression(e).expect("rhai compile");
    let rh_config: Vec<_> = rh_src.config.iter().map(|(_, t)| compile(t)).collect();
    let rh_when: Vec<_> = rh_src.when.iter().map(|e| compile(e)).collect();
    let rh_computed: Vec<_> = rh_src.computed.iter().map(|e| compile(e)).collect();
    let rh_item = |scope: &mut rhai::Scope<'static>| Output {
        config: rh_config
            .iter()
            .map(|a| rhai.eval_ast_with_scope::<String>(scope, a).unwrap())
            .collect(),
        when: std::array::from_fn(|n| {
            rhai.eval_ast_with_scope::<bool>(scope, &rh_when[n])
                .unwrap()
        }),
        computed: std::array::from_fn(|n| {
            rhai.eval_ast_with_scope::<rhai::Dynamic>(scope, &rh_computed[n])
                .unwrap()
                .to_string()
        }),
    };

    let expected = pao(&ctx);
    assert_eq!(
        expected.when,
        [true, true, false],
        "the fixture's conditions"
    );
    assert_eq!(catalog_item::native(&cx.json), expected, "native");
    assert_eq!(mj(&cx.minijinja), expected, "minijinja");
    assert_eq!(tera_item(&cx.tera), expected, "tera");
    assert_eq!(hb_item(&cx.handlebars), expected, "handlebars");
    assert_eq!(up_item(&cx.upon), expected, "upon");
    assert_eq!(rh_item(&mut cx.rhai), expected, "rhai");

    let mut g = configured(c, "catalog_item");
    g.bench_function("pao", |b| b.iter(|| pao(black_box(&ctx))));
    g.bench_function("minijinja", |b| b.iter(|| mj(black_box(&cx.minijinja))));
    g.bench_function("tera", |b| b.iter(|| tera_item(black_box(&cx.tera))));
    g.bench_function("handlebars", |b| {
        b.iter(|| hb_item(black_box(&cx.handlebars)))
    });
    g.bench_function("upon", |b| b.iter(|| up_item(black_box(&cx.upon))));
    g.bench_function("rhai", |b| b.iter(|| rh_item(black_box(&mut cx.rhai))));
    g.bench_function("native", |b| {
        b.iter(|| catalog_item::native(black_box(&cx.json)))
    });
    g.finish();
}

fn bench_compile_jira20(c: &mut Criterion) {
    let engine = Engine::new();
    let mj_env = minijinja_env(false);
    let mut tera = tera_with(&[]);
    let tera_src = jira20::tera();
    let hb_src = jira20::handlebars();
    let up_engine = upon_engine();
    let up_src = jira20::upon();

    // Each compiles the same template; rendering it is checked in `jira20`.
    engine.compile(jira20::PAO).expect("pao");
    mj_env
        .template_from_str(jira20::MINIJINJA)
        .expect("minijinja");
    tera.add_raw_template("jira20", &tera_src).expect("tera");
    handlebars::Template::compile(&hb_src).expect("handlebars");
    up_engine.compile(up_src.as_str()).expect("upon");

    let mut g = configured(c, "compile_jira20");
    g.bench_function("pao", |b| {
        b.iter(|| engine.compile(black_box(jira20::PAO)).unwrap())
    });
    g.bench_function("minijinja", |b| {
        b.iter(|| {
            mj_env
                .template_from_str(black_box(jira20::MINIJINJA))
                .unwrap()
        })
    });
    // Tera has no standalone compile: this replaces the one template of an instance.
    g.bench_function("tera", |b| {
        b.iter(|| {
            tera.add_raw_template("jira20", black_box(&tera_src))
                .unwrap()
        })
    });
    g.bench_function("handlebars", |b| {
        b.iter(|| handlebars::Template::compile(black_box(&hb_src)).unwrap())
    });
    g.bench_function("upon", |b| {
        b.iter(|| up_engine.compile(black_box(up_src.as_str())).unwrap())
    });
    g.finish();
}

fn bench_error_undefined(c: &mut Criterion) {
    let cx = Contexts::new();
    let ctx = pao_context(&cx.json);

    let pao = Engine::new()
        .compile(error_undefined::PAO)
        .expect("pao compile");
    let err = pao.render(&ctx).expect_err("pao: undefined is an error");
    assert_eq!(err.kind(), pao_core::vars::VarErrorKind::Undefined);

    let mj_env = minijinja_env(true);
    let mj = mj_env
        .template_from_str(error_undefined::MINIJINJA)
        .expect("minijinja compile");
    let tera = tera_with(&[("err", error_undefined::TERA)]);
    let mut hb = handlebars(true);
    hb.register_template_string("err", error_undefined::HANDLEBARS)
        .expect("handlebars compile");
    let up_engine = upon_engine();
    let up = up_engine
        .compile(error_undefined::UPON)
        .expect("upon compile");

    assert!(mj.render(&cx.minijinja).is_err(), "minijinja");
    assert!(tera.render("err", &cx.tera).is_err(), "tera");
    assert!(
        hb.render_with_context("err", &cx.handlebars).is_err(),
        "handlebars"
    );
    assert!(
        up.render_from(&up_engine, &cx.upon).to_string().is_err(),
        "upon"
    );

    let mut g = configured(c, "error_undefined");
    g.bench_function("pao", |b| {
        b.iter(|| pao.render(black_box(&ctx)).unwrap_err())
    });
    g.bench_function("minijinja", |b| {
        b.iter(|| mj.render(black_box(&cx.minijinja)).unwrap_err())
    });
    g.bench_function("tera", |b| {
        b.iter(|| tera.render("err", black_box(&cx.tera)).unwrap_err())
    });
    g.bench_function("handlebars", |b| {
        b.iter(|| {
            hb.render_with_context("err", black_box(&cx.handlebars))
                .unwrap_err()
        })
    });
    g.bench_function("upon", |b| {
        b.iter(|| {
            up.render_from(&up_engine, black_box(&cx.upon))
                .to_string()
                .unwrap_err()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_small,
    bench_jira20,
    bench_filters3,
    bench_loop20,
    bench_loop20_rich,
    bench_cond_expr,
    bench_cond_shapes,
    bench_catalog_item,
    bench_compile_jira20,
    bench_error_undefined
);
criterion_main!(benches);
