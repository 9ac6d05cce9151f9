//! Per-invocation overhead of a WASM plugin: a fresh `Store`, instantiation from the
//! plugin's `InstancePre`, one `execute` call (JSON in, JSON out) and teardown, for a trivial
//! plugin (the probe's `{"probe": "ok"}`), beside a native `Action` doing the same work.
//!
//! Group `wasm`:
//! - `native`: an in-process `Action` returning the same result;
//! - `plugin_pooling`: the plugin with the pooling allocator (slots reserved up front);
//! - `plugin_on_demand`: the plugin with on-demand allocation (mmap per instance).
//!
//! Target (from the issue): ≤ 50 µs median per plugin invocation. The ratio plugin / native
//! is the cost of the sandbox.
//!
//! Pooling is the host's default. The measured medians, with the command that reproduces
//! them, are in `docs/benchmarks.md`.
//!
//! Before timing, each variant is run once and its result checked,
//! so `cargo test --benches` fails if the host breaks. Runs on a current-thread runtime.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use pao_core::secrets::StaticSecrets;
use pao_wasm_host::{Grant, HostConfig, Manifest, PluginHost};
use serde_json::{Value, json};

/// What the probe's `ok` does, natively.
struct NativeOk;

#[async_trait]
impl Action for NativeOk {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "native-ok".to_string(),
            config_schema: json!({ "type": "object" }),
            output_schema: json!({ "type": "object" }),
            supports_rollback: false,
            sample_output: json!({}),
        }
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        if input.get("probe").and_then(Value::as_str) != Some("ok") {
            return Err(ActionError::permanent("unknown probe"));
        }
        Ok(ActionOutput::new(
            json!({ "ok": true, "attempt": ctx.attempt }),
        ))
    }
}

fn plugin(rt: &tokio::runtime::Runtime, pooling: bool) -> Arc<dyn Action> {
    let wasm = common::build_plugin("pao-probe-plugin");
    let bytes = std::fs::read(&wasm).expect("probe wasm");
    let host = PluginHost::new(HostConfig {
        pooling,
        cache_dir: Some(common::cache_dir()),
        ..HostConfig::default()
    })
    .expect("host");
    let manifest = Manifest {
        name: "probe".to_string(),
        version: "0.1.0".to_string(),
        ..Manifest::default()
    };
    rt.block_on(host.load_bytes(&wasm, &bytes, manifest, &Grant::default()))
        .expect("load probe")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ctx = common::context(StaticSecrets::new());
    let input = json!({ "probe": "ok" });
    let expected = json!({ "ok": true, "attempt": 1 });
    let variants: Vec<(&str, Arc<dyn Action>)> = vec![
        ("native", Arc::new(NativeOk)),
        ("plugin_pooling", plugin(&rt, true)),
        ("plugin_on_demand", plugin(&rt, false)),
    ];
    let mut group = c.benchmark_group("wasm");
    for (name, action) in &variants {
        let out = rt.block_on(action.execute(&ctx, &input)).expect("execute");
        assert_eq!(out.result, expected, "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(action.execute(&ctx, black_box(&input)))
                        .expect("execute"),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
