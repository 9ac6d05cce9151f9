//! Rendering allocates nothing but the output buffer: with a buffer that is already large
//! enough, rendering the benchmark fixtures and evaluating a condition make zero heap
//! allocations. A counting global allocator checks it.
//!
//! The fixtures are copies of those in `benches/src/lib.rs` (`small`, `jira20`, `loop20_rich`,
//! `cond_expr`); `pao-core` cannot depend on the benchmark crate.
#![allow(
    unsafe_code,
    reason = "a `GlobalAlloc` that counts and forwards to `System` (SAFETY below)"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pao_core::vars::{Context, Engine, Scope};
use serde_json::{Value, json};

/// Counts the allocations made by the current thread, so the test harness's own threads do not
/// disturb the count.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may be gone while the thread shuts down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to the system allocator unchanged and only bumps a counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const RUNS: usize = 100;

fn context_json() -> Value {
    let hosts: Vec<Value> = (1..=20)
        .map(|i| {
            let zone = ["eu-west-1a", "eu-west-1b", "eu-west-1c"][i % 3];
            json!({
                "name": format!("pg-billing-{i:02}"),
                "ip": format!("10.20.{}.{}", i / 8, 10 + i),
                "zone": zone,
                "role": if i == 1 { "primary" } else { "replica" },
            })
        })
        .collect();
    json!({
        "user": {
            "id": "u-1042",
            "email": "ada.lovelace@example.com",
            "name": "Ada Lovelace",
            "teams": ["data-platform", "billing"],
            "roles": ["developer", "db-admin"]
        },
        "metadata": { "id": "database.postgres", "name": "PostgreSQL database", "version": "2.3.0" },
        "request": {
            "id": "req-7f3a9c",
            "created_at": "2026-11-29T10:04:12Z",
            "priority": "high"
        },
        "system": { "instance": "pao-eu-1", "base_url": "https://pao.example.com" },
        "env": { "REGION": "eu-west-1" },
        "fields": {
            "project": "Billing",
            "env": "prod",
            "replicas": 3,
            "storage_gb": 250,
            "ratio": 0.75,
            "cost_center": "CC-4410",
            "justification": "Quarter-end reporting load needs a dedicated replica set."
        },
        "outputs": {
            "terraform": { "endpoint": "billing-ledger.db.internal", "port": 5432 },
            "inventory": { "hosts": hosts }
        },
        "computed": { "db_name": "billing-prod" },
        "secrets": { "api_token": "tok_live_9f8e7d6c" }
    })
}

fn context(json: &Value) -> Context<'_> {
    let mut ctx = Context::new();
    for scope in &Scope::ALL[..9] {
        ctx.set(*scope, &json[scope.name()]);
    }
    ctx
}

const SMALL: &str = "Request ${{ request.id }} for ${{ user.email }}";

const JIRA20: &str = "h2. Database request ${{ request.id }}

*Requested by:* ${{ user.name }} (${{ user.email }}), team ${{ user.teams[0] }}
*Catalog item:* ${{ metadata.name }} v${{ metadata.version }}
*Priority:* ${{ request.priority }}, created ${{ request.created_at }}

h3. Details
* Name: ${{ computed.db_name }}
* Project: ${{ fields.project }}
* Environment: ${{ fields.env }} in ${{ env.REGION }}
* Replicas: ${{ fields.replicas }}, storage ${{ fields.storage_gb }} GB
* Cost center: ${{ fields.cost_center }}

h3. Justification
${{ fields.justification }}

Endpoint: ${{ outputs.terraform.endpoint }}:${{ outputs.terraform.port }}
Tracked by ${{ system.instance }} at ${{ system.base_url }}/requests
";

const LOOP20: &str = "Hosts:
{% for h in outputs.inventory.hosts %}
${{ loop.index }}. ${{ h.name }} ${{ h.ip }} ${{ h.zone }}{% if loop.first %} (first){% endif %}{% if loop.last %} (last){% endif %}

{% endfor %}
";

const COND_EXPR: &str = "fields.env == 'prod' && fields.replicas > 2";

/// Renders `source` once to learn its size, then `RUNS` times into a buffer with room for it,
/// and returns the allocations of those runs.
fn render_allocations(source: &str) -> u64 {
    let json = context_json();
    let ctx = context(&json);
    let tpl = Engine::new()
        .compile(source)
        .unwrap_or_else(|e| panic!("compile: {e}"));
    let first = tpl.render(&ctx).unwrap_or_else(|e| panic!("render: {e}"));
    let mut out = String::with_capacity(first.len() * 2);
    let allocations = allocations_in(|| {
        for _ in 0..RUNS {
            out.clear();
            tpl.render_to(&ctx, &mut out)
                .unwrap_or_else(|e| panic!("render: {e}"));
        }
    });
    assert_eq!(out, first, "render_to renders what render does");
    allocations
}

#[test]
fn rendering_small_allocates_nothing() {
    assert_eq!(render_allocations(SMALL), 0);
}

#[test]
fn rendering_jira20_allocates_nothing() {
    assert_eq!(render_allocations(JIRA20), 0);
}

#[test]
fn rendering_loop20_allocates_nothing() {
    assert_eq!(render_allocations(LOOP20), 0);
}

#[test]
fn rendering_numbers_and_conditions_allocates_nothing() {
    let src = "${{ fields.replicas * 2 }} ${{ fields.ratio }} ${{ fields.ratio * 2 }} \
               ${{ -fields.storage_gb }} ${{ fields.env == 'prod' }} ${{ null }}\
               {% if fields.replicas > 2 && 'db-admin' in user.roles %} yes{% endif %}";
    assert_eq!(render_allocations(src), 0);
}

#[test]
fn rendering_streamed_filters_allocates_nothing() {
    // `upper`, `lower` and `trim` of a string write into the output wherever they stand.
    let src = "db-${{ fields.project | lower }}-${{ fields.env | upper }}-${{ request.id | trim }}";
    assert_eq!(render_allocations(src), 0);
}

#[test]
fn evaluating_a_condition_allocates_nothing() {
    let json = context_json();
    let ctx = context(&json);
    let cond = Engine::new()
        .compile_expression(COND_EXPR)
        .unwrap_or_else(|e| panic!("compile: {e}"));
    assert!(cond.eval_bool(&ctx).unwrap_or_else(|e| panic!("eval: {e}")));
    let allocations = allocations_in(|| {
        for _ in 0..RUNS {
            assert!(cond.eval_bool(&ctx).unwrap_or_else(|e| panic!("eval: {e}")));
        }
    });
    assert_eq!(allocations, 0);
}

#[test]
fn the_counter_sees_allocations() {
    // A test that could be false: the allocator does count this thread's allocations.
    let n = allocations_in(|| {
        let v: Vec<u8> = Vec::with_capacity(64);
        std::hint::black_box(v);
    });
    assert_eq!(n, 1);
}
