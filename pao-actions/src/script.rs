//! `script`: a sandboxed [Rhai](https://rhai.rs) script. `inputs` arrive as the constant
//! `inputs` (a map); the value of the last expression is the result (converted to JSON). The
//! sandbox: no module loading (`import` does not exist: the `no_module` feature), no `eval`, no
//! I/O (Rhai's standard library has none; `print`/`debug` go to the action log), and limits on
//! operations (default 100 000, at most 100 000 000), string size (64 KiB), array and map sizes (10 000), call depth
//! (32) and expression depth. A script that exceeds them is stopped with an error that says
//! which limit it hit; one whose attempt is cancelled, times out or is dropped stops at its
//! next operation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use rhai::{Dynamic, Engine, EvalAltResult, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

/// Operations a script may run when its config sets no budget.
pub const DEFAULT_MAX_OPERATIONS: u64 = 100_000;
/// The largest operation budget a config may set.
pub const MAX_OPERATIONS: u64 = 100_000_000;
/// Largest string a script may build.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// Largest array or map a script may build.
pub const MAX_COLLECTION_LEN: usize = 10_000;
/// Deepest function-call nesting.
pub const MAX_CALL_DEPTH: usize = 32;

/// The `script` action.
#[derive(Debug, Clone, Default)]
pub struct ScriptAction;

impl ScriptAction {
    /// The action.
    pub fn new() -> ScriptAction {
        ScriptAction
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    script: String,
    #[serde(default)]
    inputs: Value,
    #[serde(default)]
    max_operations: Option<u64>,
}

fn engine(max_ops: u64, stop: Arc<AtomicBool>, log: pao_core::action::ActionLogger) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(max_ops);
    e.set_max_string_size(MAX_STRING_BYTES);
    e.set_max_array_size(MAX_COLLECTION_LEN);
    e.set_max_map_size(MAX_COLLECTION_LEN);
    e.set_max_call_levels(MAX_CALL_DEPTH);
    e.set_max_expr_depths(64, 32);
    e.disable_symbol("eval");
    let l1 = log.clone();
    e.on_print(move |s| l1.info(&format!("script: {s}")));
    e.on_debug(move |s, _, pos| log.info(&format!("script debug at {pos}: {s}")));
    e.on_progress(move |_| {
        if stop.load(Ordering::Relaxed) {
            Some(Dynamic::from("cancelled"))
        } else {
            None
        }
    });
    e
}

fn explain(err: &EvalAltResult, max_ops: u64) -> ActionError {
    match err {
        EvalAltResult::ErrorTooManyOperations(pos) => ActionError::permanent(format!(
            "script stopped at {pos}: it exceeded its budget of {max_ops} operations (raise max_operations or simplify the script)"
        )),
        EvalAltResult::ErrorTerminated(_, _) => ActionError::cancelled(),
        EvalAltResult::ErrorDataTooLarge(what, pos) => ActionError::permanent(format!(
            "script stopped at {pos}: {what} exceeds the sandbox limit (strings {MAX_STRING_BYTES} bytes, arrays and maps {MAX_COLLECTION_LEN} items)"
        )),
        EvalAltResult::ErrorStackOverflow(pos) => ActionError::permanent(format!(
            "script stopped at {pos}: calls nested deeper than {MAX_CALL_DEPTH}"
        )),
        EvalAltResult::ErrorRuntime(v, pos) => {
            ActionError::permanent(format!("script threw at {pos}: {v}"))
        }
        EvalAltResult::ErrorParsing(p, pos) => {
            ActionError::permanent(format!("script does not parse at {pos}: {p}"))
        }
        other => ActionError::permanent(format!("script failed: {other}")),
    }
}

/// Runs `script` with `inputs` in the sandbox, on the current thread.
pub fn run(
    script: &str,
    inputs: &Value,
    max_operations: Option<u64>,
) -> Result<Value, ActionError> {
    run_with(
        script,
        inputs,
        max_operations,
        Arc::new(AtomicBool::new(false)),
        pao_core::action::ActionLogger::default(),
    )
}

fn run_with(
    script: &str,
    inputs: &Value,
    max_operations: Option<u64>,
    stop: Arc<AtomicBool>,
    log: pao_core::action::ActionLogger,
) -> Result<Value, ActionError> {
    let max_ops = max_operations.unwrap_or(DEFAULT_MAX_OPERATIONS).max(1);
    if max_ops > MAX_OPERATIONS {
        return Err(ActionError::permanent(format!(
            "script config: max_operations is {max_ops}; it may be at most {MAX_OPERATIONS}"
        )));
    }
    let e = engine(max_ops, stop, log);
    let inputs = rhai::serde::to_dynamic(inputs)
        .map_err(|err| ActionError::permanent(format!("script inputs: {err}")))?;
    let mut scope = Scope::new();
    scope.push_constant("inputs", inputs);
    let out = e
        .eval_with_scope::<Dynamic>(&mut scope, script)
        .map_err(|err| explain(&err, max_ops))?;
    rhai::serde::from_dynamic::<Value>(&out).map_err(|err| {
        ActionError::permanent(format!(
            "the script's result cannot be turned into JSON: {err}"
        ))
    })
}

/// Sets the flag the script's progress callback reads when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[async_trait]
impl Action for ScriptAction {
    // `execute` describes its calls without making them when `ctx.dry_run` is set.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "script".into(),
            config_schema: crate::schema::config_schema("ScriptConfig"),
            output_schema: json!({"description": "The value of the script's last expression, as JSON."}),
            supports_rollback: false,
            sample_output: json!({"restarts": [{"cluster": "eu-1", "namespace": "payments", "deployment": "api"}], "count": 1}),
        }
    }

    fn target(&self, _input: &Value) -> String {
        "script".into()
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        let cfg: Config = serde_json::from_value(input.clone())
            .map_err(|e| ActionError::permanent(format!("script config: {e}")))?;
        if ctx.dry_run {
            return Ok(ActionOutput {
                result: json!({"dry_run": true, "note": "the script would run with these inputs", "inputs": crate::redact_json(ctx, &cfg.inputs)}),
                rollback_state: Value::Null,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        // The engine drops this future on a timeout (and may on a cancel) before it cancels
        // `ctx.cancel`: the guard stops the script's thread then.
        let _stop_on_drop = StopOnDrop(stop.clone());
        let log = ctx.log.clone();
        let s2 = stop.clone();
        let task = tokio::task::spawn_blocking(move || {
            run_with(&cfg.script, &cfg.inputs, cfg.max_operations, s2, log)
        });
        let watch = async {
            ctx.cancel.cancelled().await;
            stop.store(true, Ordering::Relaxed);
            std::future::pending::<()>().await;
        };
        let result = tokio::select! {
            r = task => r.map_err(|e| ActionError::permanent(format!("script panicked: {e}")))?,
            _ = watch => unreachable!("the watcher never completes"),
        };
        let result = result.map_err(|mut e| {
            e.message = ctx.log.redact(&e.message);
            e
        })?;
        Ok(ActionOutput {
            result,
            rollback_state: Value::Null,
        })
    }

    async fn rollback(
        &self,
        _ctx: &ActionContext,
        _input: &Value,
        _state: &Value,
    ) -> Result<(), ActionError> {
        // A script has no effect outside its result.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_in_result_out() {
        let v = run(
            "let x = inputs.n * 2; #{ doubled: x, name: inputs.name }",
            &json!({"n": 21, "name": "a"}),
            None,
        )
        .unwrap();
        assert_eq!(v, json!({"doubled": 42, "name": "a"}));
    }

    #[test]
    fn runaway_loop_is_stopped() {
        let e = run("loop { }", &json!({}), Some(1000)).unwrap_err();
        assert!(
            e.message.contains("budget of 1000 operations"),
            "{}",
            e.message
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn big_strings_and_arrays_are_refused() {
        let e = run("let s = \"x\"; loop { s += s; }", &json!({}), None).unwrap_err();
        assert!(e.message.contains("sandbox limit"), "{}", e.message);
        let e = run(
            "let a = []; loop { a.push(1); }",
            &json!({}),
            Some(10_000_000),
        )
        .unwrap_err();
        assert!(e.message.contains("sandbox limit"), "{}", e.message);
    }

    #[test]
    fn no_modules_no_eval() {
        assert!(run("import \"x\" as y; 1", &json!({}), None).is_err());
        assert!(run("eval(\"1\")", &json!({}), None).is_err());
    }

    fn ctx() -> ActionContext {
        ActionContext {
            request_id: "req-1".into(),
            action_id: "a".into(),
            attempt: 1,
            idempotency_key: pao_core::action::IdempotencyKey("k".into()),
            deadline: None,
            cancel: tokio_util::sync::CancellationToken::new(),
            log: pao_core::action::ActionLogger::default(),
            secrets: Arc::new(pao_core::secrets::StaticSecrets::new()),
            dry_run: false,
        }
    }

    /// The engine times an attempt out by dropping its future (before it cancels the
    /// attempt's token): the script's thread must stop then, not run out its budget.
    #[test]
    fn dropping_the_attempt_stops_the_script_thread() {
        // One blocking thread: a second blocking task runs only once the script's is free.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        rt.block_on(async {
            let ctx = ctx();
            let input = json!({"script": "loop { }", "max_operations": MAX_OPERATIONS});
            let attempt = ScriptAction.execute(&ctx, &input);
            let timed_out = tokio::time::timeout(std::time::Duration::from_secs(1), attempt).await;
            assert!(timed_out.is_err(), "the loop runs until the timeout");
            let freed = std::time::Instant::now();
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                tokio::task::spawn_blocking(|| ()),
            )
            .await
            .expect("the script's thread stopped within 2 s of the timeout")
            .unwrap();
            assert!(freed.elapsed() < std::time::Duration::from_secs(2));
        });
    }

    #[test]
    fn budgets_past_the_limit_are_refused() {
        let e = run("1", &json!({}), Some(MAX_OPERATIONS + 1)).unwrap_err();
        assert!(e.message.contains("at most 100000000"), "{}", e.message);
        assert!(!e.is_retryable());
        assert_eq!(
            run("1", &json!({}), Some(MAX_OPERATIONS)).unwrap(),
            json!(1)
        );
        // The catalog loader refuses such a config, located at the value.
        let item = |ops: u64| {
            format!(
                "apiVersion: pao.dev/v2\nkind: CatalogItem\nmetadata: {{ id: t.script, name: Script, description: A script., version: 1.0.0, category: compute, owner: {{ team: t }} }}\nfulfillment:\n  mode: automated\n  actions:\n    - id: s\n      type: script\n      config: {{ script: \"1\", max_operations: {ops} }}\n"
            )
        };
        let opts = pao_core::catalog::LoadOptions::default();
        let (_, diags) = pao_core::catalog::load_item("s.yaml", &item(1_000_000_000), &opts);
        let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 1, "{diags:?}");
        assert!(errors[0].line == 9, "{diags:?}");
        let (_, diags) = pao_core::catalog::load_item("s.yaml", &item(1_000), &opts);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    }

    #[test]
    fn deep_recursion_is_refused() {
        let e = run("fn f(n) { f(n + 1) } f(0)", &json!({}), None).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{}", e.message);
    }
}
