//! Arbitrary bytes compiled as a template (or, when the first byte is odd, as a bare
//! expression) and rendered against a fixed context under tight limits: no panic, no hang, no
//! memory blow-up.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pao_core::vars::{Context, Engine, Limits, Scope};
use serde_json::{Value, json};

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    Engine::new().with_limits(Limits {
        fuel: 20_000,
        max_output_bytes: 64 << 10,
        max_loop_iterations: 2_000,
        max_nesting: 8,
        max_expression_depth: 32,
        max_template_bytes: 16 << 10,
    })
});

static SCOPES: LazyLock<Vec<(Scope, Value)>> = LazyLock::new(|| {
    vec![
        (
            Scope::Fields,
            json!({
                "name": "Billing DB", "env": "prod", "replicas": 3, "ratio": 0.5, "big": 9007199254740993u64,
                "neg": -9223372036854775807i64, "tags": ["a", "b", "c"], "empty": [], "on": true,
                "nothing": null, "labels": {"team": "data", "tier": "gold"}, "nums": [3, 1, 2.5],
                "text": "  padded ${{ x }} {% if %}  ", "date": "2026-01-31T09:00:00Z",
                "nested": {"a": [{"b": {"c": [1, [2, {"d": "deep"}]]}}]}, "unicode": "ÄßİΐЖ中🎉"
            }),
        ),
        (
            Scope::User,
            json!({"id": "u1", "email": "ada@example.com", "teams": ["data"]}),
        ),
        (
            Scope::Outputs,
            json!({"tf": {"endpoint": "db.internal", "port": 5432}}),
        ),
        (Scope::Secrets, json!({"token": "s3cr3t", "key": "k"})),
        (
            Scope::System,
            json!({"now": "2026-11-29T10:00:00Z", "version": "0.1.0"}),
        ),
        (Scope::Computed, json!({"db_name": "billing-db-prod"})),
        (Scope::Env, json!({"REGION": "eu-west-1"})),
        (Scope::Result, json!({"status": 201, "body": "{\"id\": 7}"})),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let source = String::from_utf8_lossy(rest);
    let mut ctx = Context::new();
    for (scope, value) in SCOPES.iter() {
        ctx.set(*scope, value);
    }
    if mode & 1 == 0 {
        if let Ok(t) = ENGINE.compile(&source) {
            if let Ok(s) = t.render(&ctx) {
                assert!(
                    s.len() <= 64 << 10,
                    "output limit ignored: {} bytes",
                    s.len()
                );
            }
            let _ = t.render_value(&ctx);
            if let Ok(r) = t.render_tracked(&ctx) {
                let _ = r.secrets;
            }
        }
    } else if let Ok(x) = ENGINE.compile_expression(&source) {
        let _ = x.eval(&ctx);
        let _ = x.eval_bool(&ctx);
    }
});
