//! Orchestration overhead of the fulfillment engine, per action, with the in-memory store.
//!
//! Groups (each reported with `Throughput::Elements(100)`, so criterion prints actions/s):
//! - `sequence_100`: one request whose item runs 100 no-op actions one after another;
//! - `parallel_100`: one request whose item runs a parallel group of 100 no-op actions;
//! - `floor_100`: the same no-op action called 100 times directly in a loop, the floor no
//!   engine can beat. The ratio engine / floor is the orchestration overhead.
//!
//! An iteration is a whole request: `submit` (validation, admission, approval decision) then
//! `run_until_idle` (claim, journal every attempt, events, completion). Each iteration gets a
//! fresh `MemoryStore` (built outside the timing) so the store does not grow across
//! iterations. Everything runs on a current-thread tokio runtime: one core.
//!
//! Target (from the issue): at least 50,000 no-op actions per second on one core, i.e. a
//! `sequence_100` iteration under 2 ms. Before timing, each item is run once and checked to
//! complete with 100 journaled attempts, so `cargo test --benches` fails if the engine breaks.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pao_core::action::{
    Action, ActionContext, ActionDescriptor, ActionError, ActionLogger, ActionOutput,
    ActionRegistry, IdempotencyKey,
};
use pao_core::authz::Principal;
use pao_core::catalog::Catalog;
use pao_core::engine::{Orchestrator, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::secrets::StaticSecrets;
use pao_core::store::{MemoryStore, Store};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

const N: usize = 100;

/// Does nothing, at once.
struct Noop;

#[async_trait]
impl Action for Noop {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "plugin:noop".into(),
            config_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            supports_rollback: false,
            sample_output: json!({}),
        }
    }

    async fn execute(&self, _: &ActionContext, _: &Value) -> Result<ActionOutput, ActionError> {
        Ok(ActionOutput::default())
    }
}

const HEAD: &str = "apiVersion: pao.dev/v2\nkind: CatalogItem\nmetadata: { id: ID, name: Bench, description: Engine benchmark item., version: 1.0.0, category: compute, owner: { team: platform } }\nfulfillment:\n  mode: automated\n  actions:\n";

fn sequence_item() -> String {
    let mut y = HEAD.replace("ID", "sequence");
    for i in 0..N {
        y.push_str(&format!(
            "    - {{ id: a{i}, type: \"plugin:noop\", config: {{}} }}\n"
        ));
    }
    y
}

fn parallel_item() -> String {
    let mut y = HEAD.replace("ID", "parallel");
    y.push_str("    - parallel:\n        id: all\n        actions:\n");
    for i in 0..N {
        y.push_str(&format!(
            "          - {{ id: a{i}, type: \"plugin:noop\", config: {{}} }}\n"
        ));
    }
    y
}

fn registry() -> ActionRegistry {
    let mut r = ActionRegistry::new();
    r.register(Arc::new(Noop));
    r
}

fn catalog(registry: &ActionRegistry) -> Catalog {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("pao-bench-engine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("sequence.yaml"), sequence_item()).expect("write item");
    std::fs::write(dir.join("parallel.yaml"), parallel_item()).expect("write item");
    let c = Catalog::load(&dir, &registry.load_options()).expect("load catalog");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !c.has_errors(),
        "{}",
        pao_core::catalog::render_all(c.diagnostics())
    );
    c
}

struct Fixture {
    catalog: Catalog,
    registry: ActionRegistry,
    who: Principal,
}

impl Fixture {
    fn engine(&self) -> (Arc<Orchestrator>, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let engine = Orchestrator::builder(self.catalog.clone(), store.clone())
            .actions(self.registry.clone())
            .build();
        (engine, store)
    }

    /// One request of `item`, submitted and run to the end.
    async fn run(&self, engine: &Arc<Orchestrator>, item: &str) -> String {
        let r = engine
            .submit(&self.who, item, &json!({}), SubmitOptions::default())
            .await
            .expect("submit");
        engine.run_until_idle("bench").await.expect("run");
        r.id
    }
}

fn check(rt: &Runtime, fx: &Fixture, item: &str) {
    let (engine, store) = fx.engine();
    rt.block_on(async {
        let id = fx.run(&engine, item).await;
        let r = store.get(&id).await.unwrap().expect("request");
        assert_eq!(r.state, RequestState::Completed, "{item}: {:?}", r.error);
        assert_eq!(store.attempts(&id).await.unwrap().len(), N, "{item}");
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let registry = registry();
    let fx = Fixture {
        catalog: catalog(&registry),
        registry,
        who: Principal::new("dev", &["payments"], &["developer"]),
    };
    check(&rt, &fx, "sequence");
    check(&rt, &fx, "parallel");

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(N as u64));
    for (name, item) in [("sequence_100", "sequence"), ("parallel_100", "parallel")] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || fx.engine().0,
                |engine| rt.block_on(fx.run(&engine, item)),
                BatchSize::SmallInput,
            )
        });
    }
    let noop = Noop;
    let ctx = ActionContext {
        request_id: "r".into(),
        action_id: "a".into(),
        attempt: 1,
        idempotency_key: IdempotencyKey::for_action("r", "a"),
        deadline: None,
        cancel: CancellationToken::new(),
        log: ActionLogger::default(),
        secrets: Arc::new(StaticSecrets::new()),
        dry_run: false,
    };
    let input = json!({});
    g.bench_function("floor_100", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..N {
                    black_box(noop.execute(&ctx, black_box(&input)).await.ok());
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
