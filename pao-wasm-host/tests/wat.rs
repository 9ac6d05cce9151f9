//! Hand-written WAT components that implement the `pao:action/action@0.1.0` exports directly,
//! with no SDK in between: the host's limits hold for any guest, not only well-behaved
//! Rust ones.

mod common;

use std::time::{Duration, Instant};

use pao_core::secrets::StaticSecrets;
use pao_wasm_host::{Grant, HostConfig, Manifest, PluginErrorKind, PluginHost};
use serde_json::json;

/// A component whose `describe` returns a valid descriptor (name `wat`, contract 0.1.0,
/// schemas `{}`) laid out in memory by a data segment, and whose other exports run `body`.
fn component(body: &str) -> String {
    // Descriptor at 16: six strings (ptr, len), two empty lists, two bools.
    // Strings at 256: "wat" (256), "0.1.0" (259), "{}" (264).
    let descriptor = concat!(
        "\\00\\01\\00\\00\\03\\00\\00\\00", // name
        "\\03\\01\\00\\00\\05\\00\\00\\00", // version
        "\\03\\01\\00\\00\\05\\00\\00\\00", // contract-version
        "\\08\\01\\00\\00\\02\\00\\00\\00", // input-schema
        "\\08\\01\\00\\00\\02\\00\\00\\00", // output-schema
        "\\08\\01\\00\\00\\02\\00\\00\\00", // sample-output
        "\\00\\00\\00\\00\\00\\00\\00\\00", // requested.http-hosts
        "\\00\\00\\00\\00\\00\\00\\00\\00", // requested.secrets
        "\\00\\00\\00\\00",                 // requested.kv + padding
        "\\00\\00\\00\\00",                 // supports-rollback + padding
    );
    format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    (table $t 1 funcref)
    (data (i32.const 16) "{descriptor}")
    (data (i32.const 256) "wat0.1.0{{}}")
    (global $heap (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      ;; Bump allocation, aligned: p = (heap + align - 1) & !(align - 1).
      (local.set $p (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func $body (result i32) {body} (i32.const 0))
    (func (export "describe") (result i32) (i32.const 16))
    (func (export "validate") (param i32 i32) (result i32) (call $body))
    (func (export "execute")
      (param i32 i32 i32 i32 i32 i32 i32 i32 i64 i32 i32 i32 i32 i32) (result i32)
      (call $body))
    (func (export "rollback")
      (param i32 i32 i32 i32 i32 i32 i32 i32 i64 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (call $body)))
  (core instance $i (instantiate $m))

  (type $context' (record
    (field "request-id" string) (field "action-id" string) (field "attempt" u32)
    (field "idempotency-key" string) (field "deadline-unix-ms" (option u64))
    (field "dry-run" bool) (field "settings" (list (tuple string string)))))
  (export $context "context" (type $context'))
  (type $violation' (record (field "pointer" string) (field "message" string)))
  (export $violation "violation" (type $violation'))
  (type $retryable' (record (field "message" string) (field "retry-after-ms" (option u64))))
  (export $retryable "retryable-error" (type $retryable'))
  (type $error' (variant
    (case "invalid-input" (list $violation)) (case "denied" string)
    (case "retryable" $retryable) (case "failed" string) (case "cancelled")))
  (export $error "action-error" (type $error'))
  (type $caps' (record
    (field "http-hosts" (list string)) (field "secrets" (list string)) (field "kv" bool)))
  (export $caps "capabilities" (type $caps'))
  (type $descriptor' (record
    (field "name" string) (field "version" string) (field "contract-version" string)
    (field "input-schema" string) (field "output-schema" string)
    (field "sample-output" string) (field "requested" $caps)
    (field "supports-rollback" bool)))
  (export $descriptor "descriptor" (type $descriptor'))
  (type $output' (record (field "value" string) (field "rollback-state" (option string))))
  (export $output "output" (type $output'))

  (func $describe (result $descriptor)
    (canon lift (core func $i "describe") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $validate (param "input" string) (result (result (error (list $violation))))
    (canon lift (core func $i "validate") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $execute (param "ctx" $context) (param "input" string)
    (result (result $output (error $error)))
    (canon lift (core func $i "execute") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $rollback (param "ctx" $context) (param "input" string) (param "state" string)
    (result (result (error $error)))
    (canon lift (core func $i "rollback") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (instance $action
    (export "describe" (func $describe))
    (export "validate" (func $validate))
    (export "execute" (func $execute))
    (export "rollback" (func $rollback)))
  (export "pao:action/action@0.1.0" (instance $action)))"#
    )
}

async fn run_wat(body: &str, grant: Grant) -> PluginErrorKind {
    let bytes = wat::parse_str(component(body)).expect("valid WAT");
    let host = PluginHost::new(HostConfig {
        pooling: false,
        ..HostConfig::default()
    })
    .unwrap();
    let manifest = Manifest {
        name: "wat".to_string(),
        version: "0.1.0".to_string(),
        ..Manifest::default()
    };
    let plugin = host
        .load_bytes("wat.wasm".as_ref(), &bytes, manifest, &grant)
        .await
        .expect("the WAT component loads");
    assert_eq!(plugin.describe_name(), "plugin:wat");
    let ctx = common::context(StaticSecrets::new());
    let e = plugin.run(&ctx, &json!({})).await.unwrap_err();
    assert_eq!(e.plugin, "wat");
    e.kind
}

trait DescribeName {
    fn describe_name(&self) -> String;
}

impl DescribeName for pao_wasm_host::WasmAction {
    fn describe_name(&self) -> String {
        pao_core::action::Action::describe(self).type_name
    }
}

#[tokio::test]
async fn a_wat_infinite_loop_is_interrupted_at_the_timeout() {
    let mut grant = Grant::default();
    grant.limits.timeout_ms = Some(200);
    let started = Instant::now();
    let e = run_wat("(loop $forever (br $forever))", grant).await;
    assert_eq!(e, PluginErrorKind::Timeout(Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_wat_memory_bomb_is_stopped_at_the_cap() {
    let mut grant = Grant::default();
    grant.limits.memory_mb = Some(2);
    // Grow one 64 KiB page at a time, forever.
    let e = run_wat(
        "(loop $grow (drop (memory.grow (i32.const 1))) (br $grow))",
        grant,
    )
    .await;
    assert_eq!(e, PluginErrorKind::MemoryLimit(2 << 20));
}

#[tokio::test]
async fn a_wat_trap_is_a_typed_error() {
    let e = run_wat(
        "(drop (i32.div_u (i32.const 1) (i32.const 0)))",
        Grant::default(),
    )
    .await;
    assert!(
        matches!(&e, PluginErrorKind::Trap(m) if m.contains("divide by zero")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_wat_table_cannot_grow_past_the_cap_without_the_pooling_allocator() {
    // 1,000,000 elements (8 MB here, unbounded in a loop): refused, the call traps.
    let e = run_wat(
        "(drop (table.grow $t (ref.null func) (i32.const 1000000)))",
        Grant::default(),
    )
    .await;
    assert!(matches!(&e, PluginErrorKind::Trap(_)), "{e:?}");
}
