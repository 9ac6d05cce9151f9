//! The fulfillment engine under a paused tokio clock: every sleep, backoff, timeout and lease
//! passes instantly and deterministically. No test sleeps for real.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use pao_core::engine::{EngineConfig, EngineError, ManualOutcome, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::store::{AttemptOutcome, EventKind, RollbackStatus, Store};
use serde_json::json;

const CHAIN: &str = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: name, type: text, required: true }
fulfillment:
  mode: automated
  defaults: { retry: { max_attempts: 3, backoff: exponential, initial: 2s, max: 60s, jitter: 0.2 } }
  actions:
    - { id: first, type: "plugin:test", config: { result: { host: "db-${{ fields.name }}" } }, outputs: { host: "${{ result.host }}" } }
    - { id: second, type: "plugin:test", config: { target: "${{ outputs.first.host }}" } }
"#;

#[tokio::test(start_paused = true)]
async fn happy_path_runs_in_order_and_passes_outputs() {
    let h = harness(&[("chain", CHAIN)]);
    let r = h
        .engine
        .submit(
            &dev(),
            "chain",
            &json!({"name": "orders"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.state, RequestState::Queued);
    assert_eq!(h.engine.run_until_idle("w1").await.unwrap(), 1);
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Completed, "{:?}", r.error);
    assert_eq!(h.ledger.executed(), vec!["first", "second"]);
    let attempts = h.store.attempts(&r.id).await.unwrap();
    assert_eq!(
        attempts[1].input,
        json!({"target": "db-orders"}),
        "outputs of `first` rendered into `second`"
    );
    let states: Vec<RequestState> = h
        .store
        .events(&r.id, 0, 0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::StateChanged { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    use RequestState::*;
    assert_eq!(
        states,
        vec![
            Submitted,
            Prerequisites,
            Validation,
            Queued,
            InProgress,
            Completed
        ]
    );
    // Same idempotency key for every attempt of an action, distinct across actions.
    let keys: Vec<String> = h.ledger.calls().iter().map(|c| c.key.clone()).collect();
    assert_eq!(
        keys,
        vec![
            format!("pao-{}-first", r.id),
            format!("pao-{}-second", r.id)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_within_bounds_and_honour_retry_after() {
    let item = CHAIN.replace(
        "config: { result: { host: \"db-${{ fields.name }}\" } }",
        "config: { fail: retryable, fail_times: 2, result: { host: \"h\" } }",
    );
    let h = harness(&[("retry", &item)]);
    let r = h
        .engine
        .submit(
            &dev(),
            "retry",
            &json!({"name": "x"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.store.get(&r.id).await.unwrap().unwrap().state,
        RequestState::Completed
    );
    let calls: Vec<_> = h
        .ledger
        .calls()
        .into_iter()
        .filter(|c| c.action == "first")
        .collect();
    assert_eq!(
        calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let gap1 = (calls[1].at - calls[0].at).as_secs_f64();
    let gap2 = (calls[2].at - calls[1].at).as_secs_f64();
    assert!(
        (1.6..=2.4).contains(&gap1),
        "first backoff {gap1}s is 2s ± 20%"
    );
    assert!(
        (3.2..=4.8).contains(&gap2),
        "second backoff {gap2}s is 4s ± 20%"
    );
    // Retry-After wins over a shorter backoff.
    let item = CHAIN.replace(
        "config: { result: { host: \"db-${{ fields.name }}\" } }",
        "config: { fail: retryable, fail_times: 1, retry_after_ms: 30000 }",
    );
    let h = harness(&[("ra", &item)]);
    h.engine
        .submit(
            &dev(),
            "ra",
            &json!({"name": "x"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let calls: Vec<_> = h
        .ledger
        .calls()
        .into_iter()
        .filter(|c| c.action == "first")
        .collect();
    assert!((calls[1].at - calls[0].at) >= Duration::from_secs(30));
}

/// An action that logs a million lines yields at most 1,001 log events (1,000 lines and one
/// that counts the rest), and long lines are cut.
#[tokio::test(start_paused = true)]
async fn action_log_lines_are_bounded_per_attempt() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: { log_lines: 1000000 } }
    - { id: b, type: "plugin:test", config: { log_lines: 3, log_bytes: 100000 } }
"#;
    let h = harness(&[("logs", item)]);
    let r = h
        .engine
        .submit(&dev(), "logs", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.store.get(&r.id).await.unwrap().unwrap().state,
        RequestState::Completed
    );
    let events = h.store.events(&r.id, 0, 0).await.unwrap();
    let logs = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Log {
                    action_id: Some(a),
                    message,
                    ..
                } if a == id => Some(message.clone()),
                _ => None,
            })
            .collect()
    };
    let a = logs("a");
    assert_eq!(a.len(), 1_001);
    assert!(
        a[1_000].contains("999000 more log lines dropped"),
        "{}",
        a[1_000]
    );
    let b = logs("b");
    assert_eq!(b.len(), 3);
    assert!(b.iter().all(|m| m.len() <= 8 * 1024 + 64), "{}", b[0].len());
    assert!(
        b[0].ends_with("[truncated 91808 bytes]"),
        "{}",
        &b[0][8_000..]
    );
}

/// A secret provider that fails with `Unavailable` the first `failures` times it is asked.
struct FlakySecrets {
    failures: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl pao_core::secrets::SecretProvider for FlakySecrets {
    async fn get(&self, name: &str) -> Result<String, pao_core::secrets::SecretError> {
        use std::sync::atomic::Ordering;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(pao_core::secrets::SecretError::Unavailable(
                "vault: connection refused".into(),
            ));
        }
        match name {
            "api_token" => Ok("tok-123456".into()),
            _ => Err(pao_core::secrets::SecretError::NotFound(name.into())),
        }
    }
}

/// A secret provider that is down for a moment does not fail the request: it is tried again
/// and completes. A secret that does not exist still fails it.
#[tokio::test(start_paused = true)]
async fn a_secret_provider_outage_is_retried_not_fatal() {
    let item = r#"secrets: [api_token]
fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: { token: "${{ secrets.api_token }}" } }
"#;
    let missing = item.replace("api_token", "nope");
    let h = harness_with_secrets(
        &[("sec", item), ("missing", &missing)],
        std::sync::Arc::new(FlakySecrets { failures: 1.into() }),
    );
    let r = h
        .engine
        .submit(&dev(), "sec", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let got = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(got.state, RequestState::Completed, "{:?}", got.error);
    let calls = h.ledger.calls();
    assert_eq!(calls.len(), 1, "the action ran once, after the outage");
    let events = format!("{:?}", h.store.events(&r.id, 0, 0).await.unwrap());
    assert!(
        events.contains("secret provider is unavailable"),
        "{events}"
    );
    let r = h
        .engine
        .submit(&dev(), "missing", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.store.get(&r.id).await.unwrap().unwrap().state,
        RequestState::Failed
    );
}

/// A remote `Retry-After` of days does not park the worker: the wait is cut to the policy's
/// `max` (60 s here).
#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_is_cut_to_the_policy_max() {
    let item = CHAIN.replace(
        "config: { result: { host: \"db-${{ fields.name }}\" } }",
        "config: { fail: retryable, fail_times: 1, retry_after_ms: 999999000, result: { host: \"h\" } }",
    );
    let h = harness(&[("ra", &item)]);
    let r = h
        .engine
        .submit(
            &dev(),
            "ra",
            &json!({"name": "x"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.store.get(&r.id).await.unwrap().unwrap().state,
        RequestState::Completed
    );
    let calls: Vec<_> = h
        .ledger
        .calls()
        .into_iter()
        .filter(|c| c.action == "first")
        .collect();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_secs(48) && gap <= Duration::from_secs(60),
        "retried after {gap:?}, not within the policy's max of 60 s"
    );
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_exhaust_attempts_then_fail() {
    let item = CHAIN.replace(
        "config: { result: { host: \"db-${{ fields.name }}\" } }",
        "config: { fail: retryable }",
    );
    let h = harness(&[("exhaust", &item)]);
    let r = h
        .engine
        .submit(
            &dev(),
            "exhaust",
            &json!({"name": "x"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Failed);
    assert!(r.error.unwrap().contains("first failed on purpose"));
    assert_eq!(
        h.ledger.executed(),
        vec!["first", "first", "first"],
        "max_attempts 3, `second` never starts"
    );
}

/// A DAG with a parallel group, to check rollback order.
fn dag(fail_at: &str) -> String {
    let f = |id: &str| {
        if id == fail_at {
            ", fail: permanent"
        } else {
            ""
        }
    };
    format!(
        r#"fulfillment:
  mode: automated
  actions:
    - {{ id: a, type: "plugin:test", config: {{ sleep_ms: 10{} }} }}
    - parallel:
        id: grp
        actions:
          - {{ id: b, type: "plugin:test", config: {{ sleep_ms: 30{} }} }}
          - {{ id: c, type: "plugin:test", config: {{ sleep_ms: 20{} }} }}
          - {{ id: d, type: "plugin:test", config: {{ sleep_ms: 10{} }} }}
    - {{ id: e, type: "plugin:test", config: {{ sleep_ms: 10{} }} }}
"#,
        f("a"),
        f("b"),
        f("c"),
        f("d"),
        f("e")
    )
}

#[tokio::test(start_paused = true)]
async fn rollback_order_for_first_middle_last_and_in_group_failures() {
    for (fail_at, executed, rolled_back) in [
        ("a", vec!["a"], vec![]),
        ("c", vec!["a", "b", "c", "d"], vec!["b", "d", "a"]),
        ("e", vec!["a", "b", "c", "d", "e"], vec!["b", "c", "d", "a"]),
        ("d", vec!["a", "b", "c", "d"], vec!["b", "c", "a"]),
    ] {
        let h = harness(&[("dag", &dag(fail_at))]);
        let r = h
            .engine
            .submit(&dev(), "dag", &json!({}), SubmitOptions::default())
            .await
            .unwrap();
        h.engine.run_until_idle("w1").await.unwrap();
        let r = h.store.get(&r.id).await.unwrap().unwrap();
        assert_eq!(r.state, RequestState::Failed, "{fail_at}");
        let mut ex = h.ledger.executed();
        ex.sort();
        assert_eq!(ex, executed, "executed when {fail_at} fails");
        assert_eq!(
            h.ledger.rolled_back(),
            rolled_back,
            "reverse completion order when {fail_at} fails"
        );
        let want = if rolled_back.is_empty() {
            RollbackStatus::None
        } else {
            RollbackStatus::Complete
        };
        assert_eq!(r.rollback, want);
    }
}

#[tokio::test(start_paused = true)]
async fn failed_rollback_leaves_compensation_incomplete() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - id: a
      type: "plugin:test"
      config: {}
      retry: { max_attempts: 3, initial: 1s }
      rollback: { type: "plugin:test", config: { name: a, rollback_of: a, rollback_fails: retryable } }
    - { id: b, type: "plugin:test", config: { fail: permanent } }
"#;
    let h = harness(&[("rb", item)]);
    let r = h
        .engine
        .submit(&dev(), "rb", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Failed);
    assert_eq!(
        r.rollback,
        RollbackStatus::Incomplete,
        "never Completed after a failed rollback"
    );
    assert_eq!(
        h.ledger.rolled_back(),
        vec!["a", "a", "a"],
        "rollbacks are retried like actions... then give up"
    );
}

#[tokio::test(start_paused = true)]
async fn on_failure_continue_and_fail() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: {} }
    - { id: b, type: "plugin:test", config: { fail: permanent }, on_failure: continue }
    - { id: c, type: "plugin:test", config: {} }
"#;
    let h = harness(&[("cont", item)]);
    let r = h
        .engine
        .submit(&dev(), "cont", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.store.get(&r.id).await.unwrap().unwrap().state,
        RequestState::Completed
    );
    assert_eq!(h.ledger.executed(), vec!["a", "b", "c"]);
    let h = harness(&[(
        "stop",
        &item.replace("on_failure: continue", "on_failure: fail"),
    )]);
    let r = h
        .engine
        .submit(&dev(), "stop", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Failed);
    assert!(
        h.ledger.rolled_back().is_empty(),
        "fail stops without rollback"
    );
    assert_eq!(h.ledger.executed(), vec!["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn parallel_groups_respect_max_concurrency() {
    let members: String = (0..6)
        .map(|i| {
            format!(
                "          - {{ id: p{i}, type: \"plugin:test\", config: {{ sleep_ms: 100 }} }}\n"
            )
        })
        .collect();
    let item = format!(
        "fulfillment:\n  mode: automated\n  actions:\n    - parallel:\n        id: grp\n        max_concurrency: 2\n        actions:\n{members}"
    );
    let h = harness(&[("par", &item)]);
    let start = tokio::time::Instant::now();
    h.engine
        .submit(&dev(), "par", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.ledger
            .max_running
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let elapsed = tokio::time::Instant::now() - start;
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(400),
        "{elapsed:?}: 6 × 100 ms, 2 at a time"
    );
    // Without a limit they all run together; the engine-wide limit still applies.
    let h = harness_with(
        &[("par", &item.replace("        max_concurrency: 2\n", ""))],
        EngineConfig {
            max_concurrent_actions: 4,
            ..EngineConfig::default()
        },
    );
    h.engine
        .submit(&dev(), "par", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.ledger
            .max_running
            .load(std::sync::atomic::Ordering::SeqCst),
        4
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retryable_failures() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: slow, type: "plugin:test", timeout: 1s, retry: { max_attempts: 2, initial: 1s, jitter: 0 }, config: { sleep_ms: 5000 } }
"#;
    let h = harness(&[("slow", item)]);
    let start = tokio::time::Instant::now();
    let r = h
        .engine
        .submit(&dev(), "slow", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Failed);
    assert!(r.error.unwrap().contains("timed out after 1s"));
    let elapsed = tokio::time::Instant::now() - start;
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(4),
        "1 s + 1 s backoff + 1 s: {elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn circuit_breaker_opens_after_repeated_failures() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: flaky, type: "plugin:test", retry: { max_attempts: 1 }, config: { fail: retryable } }
"#;
    let h = harness_with(
        &[("flaky", item)],
        EngineConfig {
            breakers: pao_core::engine::BreakerConfig {
                failure_threshold: 3,
                open_for: Duration::from_secs(60),
            },
            ..EngineConfig::default()
        },
    );
    for _ in 0..4 {
        h.engine
            .submit(&dev(), "flaky", &json!({}), SubmitOptions::default())
            .await
            .unwrap();
    }
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.ledger.executed().len(),
        3,
        "the fourth request is refused by the open breaker without a call"
    );
    assert!(matches!(
        h.engine.breaker_states()["plugin:test"],
        pao_core::engine::BreakerState::Open { .. }
    ));
}

/// The trial call of a half-open breaker that fails permanently (a 4xx: the call's own input
/// was refused) says nothing about the target: the breaker does not stay half-open, and the
/// next call may try again.
#[tokio::test(start_paused = true)]
async fn a_trial_call_that_fails_permanently_does_not_leave_the_breaker_half_open() {
    let item = |fail: &str| {
        format!(
            "fulfillment:\n  mode: automated\n  actions:\n    - {{ id: call, type: \"plugin:test\", retry: {{ max_attempts: 1 }}, config: {{ {fail} }} }}\n"
        )
    };
    let (flaky, refused, fine) = (item("fail: retryable"), item("fail: permanent"), item(""));
    let h = harness_with(
        &[("flaky", &flaky), ("refused", &refused), ("fine", &fine)],
        EngineConfig {
            breakers: pao_core::engine::BreakerConfig {
                failure_threshold: 2,
                open_for: Duration::from_secs(60),
            },
            ..EngineConfig::default()
        },
    );
    for _ in 0..2 {
        h.engine
            .submit(&dev(), "flaky", &json!({}), SubmitOptions::default())
            .await
            .unwrap();
    }
    h.engine.run_until_idle("w1").await.unwrap();
    assert!(matches!(
        h.engine.breaker_states()["plugin:test"],
        pao_core::engine::BreakerState::Open { .. }
    ));
    tokio::time::advance(Duration::from_secs(61)).await;
    // The trial: the target answers, refusing this call's input.
    let trial = h
        .engine
        .submit(&dev(), "refused", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.store.get(&trial.id).await.unwrap().unwrap().state,
        RequestState::Failed
    );
    assert_ne!(
        h.engine.breaker_states()["plugin:test"],
        pao_core::engine::BreakerState::HalfOpen,
        "the trial's outcome was recorded"
    );
    let next = h
        .engine
        .submit(&dev(), "fine", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let next = h.store.get(&next.id).await.unwrap().unwrap();
    assert_eq!(
        next.state,
        RequestState::Completed,
        "the next call went through: {:?}",
        next.error
    );
    assert_eq!(
        h.engine.breaker_states()["plugin:test"],
        pao_core::engine::BreakerState::Closed { failures: 0 }
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_before_work_starts_in_every_state() {
    let approval = r#"fulfillment:
  mode: automated
  approval: { approvers: { teams: [platform-leads] } }
  actions:
    - { id: a, type: "plugin:test", config: {} }
"#;
    let h = harness(&[("appr", approval), ("chain", CHAIN)]);
    let waiting = h
        .engine
        .submit(&dev(), "appr", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    assert_eq!(waiting.state, RequestState::AwaitingApproval);
    let queued = h
        .engine
        .submit(
            &dev(),
            "chain",
            &json!({"name": "x"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    for r in [waiting, queued] {
        let c = h
            .engine
            .cancel(&dev(), &r.id, Some("changed my mind".into()))
            .await
            .unwrap();
        assert_eq!(c.state, RequestState::Cancelled);
    }
    assert_eq!(
        h.engine.run_until_idle("w1").await.unwrap(),
        0,
        "nothing left to run"
    );
    assert!(h.ledger.calls().is_empty());
    // Someone else may not cancel; an ended request cannot be cancelled again.
    let r = h
        .engine
        .submit(
            &dev(),
            "chain",
            &json!({"name": "y"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    let stranger = pao_core::authz::Principal::new("eve", &["other"], &["developer"]);
    assert!(h.engine.cancel(&stranger, &r.id, None).await.is_err());
    h.engine.run_until_idle("w1").await.unwrap();
    assert!(h.engine.cancel(&dev(), &r.id, None).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn cancel_while_running_stops_new_actions_and_rolls_back() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: {} }
    - { id: b, type: "plugin:test", config: { sleep_ms: 60000 } }
    - { id: c, type: "plugin:test", config: {} }
"#;
    let h = harness(&[("long", item)]);
    let started = tokio::time::Instant::now();
    let r = h
        .engine
        .submit(&dev(), "long", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    let engine = h.engine.clone();
    let worker = tokio::spawn(async move { engine.run_until_idle("w1").await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mid = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(mid.state, RequestState::InProgress);
    h.engine
        .cancel(&dev(), &r.id, Some("stop".into()))
        .await
        .unwrap();
    worker.await.unwrap().unwrap();
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Cancelled);
    assert_eq!(h.ledger.executed(), vec!["a", "b"], "c never starts");
    assert_eq!(
        h.ledger.rolled_back(),
        vec!["a"],
        "completed actions are rolled back"
    );
    // The cancel interrupted `b`'s minute-long call instead of waiting for it to end.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[tokio::test(start_paused = true)]
async fn approvals_thresholds_self_approval_rejection_timeout_and_escalation() {
    let item = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: env, type: select, options: [dev, prod], default: dev }
fulfillment:
  mode: automated
  approval:
    required_when: fields.env == 'prod'
    approvers: { teams: [platform-leads], min_approvals: 2, allow_self_approval: false }
    timeout: 48h
    on_timeout: reject
    escalation: { after: 24h, teams: [admins-team] }
  actions:
    - { id: a, type: "plugin:test", config: {} }
"#;
    let h = harness(&[("gov", item)]);
    let dev_req = h
        .engine
        .submit(
            &dev(),
            "gov",
            &json!({"env": "dev"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        dev_req.state,
        RequestState::Queued,
        "no approval needed in dev"
    );
    let r = h
        .engine
        .submit(
            &lead(),
            "gov",
            &json!({"env": "prod"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.state, RequestState::AwaitingApproval);
    assert!(
        h.engine.approve(&lead(), &r.id, None).await.is_err(),
        "no self-approval"
    );
    assert!(
        h.engine.approve(&dev(), &r.id, None).await.is_err(),
        "not an approver"
    );
    let lead2 = pao_core::authz::Principal::new("lead2", &["platform-leads"], &[]);
    let lead3 = pao_core::authz::Principal::new("lead3", &["platform-leads"], &[]);
    let after_one = h.engine.approve(&lead2, &r.id, None).await.unwrap();
    assert_eq!(
        after_one.state,
        RequestState::AwaitingApproval,
        "min_approvals 2"
    );
    assert!(
        h.engine.approve(&lead2, &r.id, None).await.is_err(),
        "one vote per approver"
    );
    assert_eq!(
        h.engine.approve(&lead3, &r.id, None).await.unwrap().state,
        RequestState::Queued
    );
    // Rejection needs a reason.
    let r2 = h
        .engine
        .submit(
            &lead(),
            "gov",
            &json!({"env": "prod"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    assert!(h.engine.reject(&lead2, &r2.id, "  ").await.is_err());
    assert_eq!(
        h.engine
            .reject(&lead2, &r2.id, "too big")
            .await
            .unwrap()
            .state,
        RequestState::Rejected
    );
    // Escalation after 24 h lets the escalation team approve; the timeout rejects at 48 h.
    let r3 = h
        .engine
        .submit(
            &lead(),
            "gov",
            &json!({"env": "prod"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    let admin_team = pao_core::authz::Principal::new("ops", &["admins-team"], &[]);
    assert!(
        h.engine.approve(&admin_team, &r3.id, None).await.is_err(),
        "not yet escalated"
    );
    tokio::time::advance(Duration::from_secs(23 * 3600)).await;
    assert_eq!(h.engine.sweep_approvals().await.unwrap(), 0);
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    assert_eq!(h.engine.sweep_approvals().await.unwrap(), 1);
    let esc = h.store.get(&r3.id).await.unwrap().unwrap();
    assert!(esc.escalated);
    assert_eq!(
        h.engine
            .approve(&admin_team, &r3.id, None)
            .await
            .unwrap()
            .state,
        RequestState::AwaitingApproval
    );
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    assert_eq!(h.engine.sweep_approvals().await.unwrap(), 1);
    let timed_out = h.store.get(&r3.id).await.unwrap().unwrap();
    assert_eq!(timed_out.state, RequestState::Rejected);
}

#[tokio::test(start_paused = true)]
async fn manual_mode_waits_for_the_ticket() {
    let item = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: name, type: text, required: true }
fulfillment:
  mode: manual
  manual: { jira: { project: OPS, issue_type: Task, summary: "Create ${{ fields.name }}" } }
"#;
    let h = harness(&[("manual", item)]);
    let r = h
        .engine
        .submit(
            &dev(),
            "manual",
            &json!({"name": "vm-1"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let waiting = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(waiting.state, RequestState::InProgress);
    assert_eq!(waiting.waiting_for.as_deref(), Some("manual:OPS-42"));
    assert_eq!(h.ledger.executed(), vec!["jira:Create vm-1"]);
    assert_eq!(
        h.engine.run_until_idle("w2").await.unwrap(),
        0,
        "a waiting request is not claimable"
    );
    let done = h
        .engine
        .resolve_manual(&r.id, ManualOutcome::Completed, "jira-webhook")
        .await
        .unwrap();
    assert_eq!(done.state, RequestState::Completed);
    assert!(
        h.engine
            .resolve_manual(&r.id, ManualOutcome::Completed, "jira-webhook")
            .await
            .is_err()
    );
    let r2 = h
        .engine
        .submit(
            &dev(),
            "manual",
            &json!({"name": "vm-2"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let failed = h
        .engine
        .resolve_manual(
            &r2.id,
            ManualOutcome::Failed("won't do".into()),
            "jira-webhook",
        )
        .await
        .unwrap();
    assert_eq!(failed.state, RequestState::Failed);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_worker_is_resumed_without_rerunning_finished_actions() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: {}, outputs: { id: "${{ result.id }}" } }
    - { id: b, type: "plugin:test", config: { sleep_ms: 60000, from: "${{ outputs.a.id }}" } }
"#;
    let h = harness_with(
        &[("crash", item)],
        EngineConfig {
            lease: Duration::from_secs(30),
            ..EngineConfig::default()
        },
    );
    let r = h
        .engine
        .submit(&dev(), "crash", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    let engine = h.engine.clone();
    let worker = tokio::spawn(async move { engine.run_until_idle("doomed").await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    worker.abort(); // the worker dies while `b` runs: no release, no more heartbeats
    let _ = worker.await;
    assert_eq!(
        h.engine.run_until_idle("w2").await.unwrap(),
        0,
        "lease still held by the dead worker"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(h.engine.run_until_idle("w2").await.unwrap(), 1);
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Completed);
    assert_eq!(
        h.ledger.executed(),
        vec!["a", "b", "b"],
        "a ran once; b was running when the worker died"
    );
    let attempts = h.store.attempts(&r.id).await.unwrap();
    let b: Vec<_> = attempts.iter().filter(|a| a.action_id == "b").collect();
    assert_eq!(b.len(), 2);
    assert!(
        matches!(b[0].outcome, AttemptOutcome::Running),
        "the dead attempt stays in the journal"
    );
    assert_eq!(b[1].attempt, 2);
    assert_eq!(
        b[1].input["from"],
        json!("a-id"),
        "outputs of `a` came from the journal"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_of_a_failed_request_resumes_from_the_failed_action() {
    let item = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: mode, type: text, default: bad }
fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: {}, on_failure: fail }
    - { id: b, type: "plugin:test", config: { fail: "${{ fields.mode == 'bad' ? 'permanent' : null }}" }, on_failure: fail }
"#;
    let h = harness(&[("rt", item)]);
    let r = h
        .engine
        .submit(&dev(), "rt", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.store.get(&r.id).await.unwrap().unwrap().state,
        RequestState::Failed
    );
    assert!(h.engine.retry(&dev(), &r.id, None).await.is_ok());
    let second = h
        .engine
        .retry(&dev(), &r.id, Some(json!({"mode": "good"})))
        .await
        .unwrap();
    assert_eq!(second.retry_of.as_deref(), Some(r.id.as_str()));
    h.engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        h.store.get(&second.id).await.unwrap().unwrap().state,
        RequestState::Completed
    );
    assert_eq!(
        h.ledger.executed().iter().filter(|a| *a == "a").count(),
        1,
        "a is not re-run by either retry"
    );
    assert!(
        h.engine.retry(&dev(), &second.id, None).await.is_err(),
        "only failed requests are retried"
    );
}

#[tokio::test(start_paused = true)]
async fn quota_and_idempotent_submission() {
    let item = r#"fulfillment:
  mode: automated
  prerequisites: { quota: { resource: databases, amount: 2 } }
  actions:
    - { id: a, type: "plugin:test", config: {} }
"#;
    let h = harness(&[("q", item)]);
    h.store
        .set_quota_limit("payments", "databases", 3)
        .await
        .unwrap();
    let opts = SubmitOptions {
        idempotency_key: Some("k1".into()),
        ..SubmitOptions::default()
    };
    let r1 = h
        .engine
        .submit(&dev(), "q", &json!({}), opts.clone())
        .await
        .unwrap();
    let again = h
        .engine
        .submit(&dev(), "q", &json!({}), opts)
        .await
        .unwrap();
    assert_eq!(r1.id, again.id, "same key, same request");
    let refused = h
        .engine
        .submit(&dev(), "q", &json!({}), SubmitOptions::default())
        .await;
    let Err(EngineError::QuotaExceeded { request_id, reason }) = refused else {
        panic!("over quota: {refused:?}");
    };
    assert!(reason.contains("quota `databases`"), "{reason}");
    let r2 = h.store.get(&request_id).await.unwrap().unwrap();
    assert_eq!(r2.state, RequestState::Rejected);
    let events = h.store.events(&r2.id, 0, 0).await.unwrap();
    let reason = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::StateChanged { reason, .. } => reason.clone(),
        _ => None,
    });
    assert!(reason.unwrap().contains("quota `databases`"));
    let states: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StateChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            RequestState::Submitted,
            RequestState::Prerequisites,
            RequestState::Rejected
        ],
        "a request over quota is stored as rejected, nothing of its admission half-done"
    );
    let audit = h.store.audit_log(Some(&r2.id), None, 0).await.unwrap();
    assert_eq!(audit.len(), 1, "its submission is audited once: {audit:?}");
    let usage = h.store.quota_usage("payments").await.unwrap();
    assert_eq!(usage[0].used, 2, "only the first request holds quota");
    // Cancelling the first frees its quota.
    h.engine.cancel(&dev(), &r1.id, None).await.unwrap();
    let r3 = h
        .engine
        .submit(&dev(), "q", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    assert_eq!(r3.state, RequestState::Queued);
}

#[tokio::test(start_paused = true)]
async fn invalid_fields_and_unknown_items_are_refused_before_anything_is_stored() {
    let h = harness(&[("chain", CHAIN)]);
    let e = h
        .engine
        .submit(&dev(), "chain", &json!({}), SubmitOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, pao_core::engine::EngineError::InvalidFields(ref f) if f[0].field == "name"),
        "{e:?}"
    );
    assert!(
        h.engine
            .submit(&dev(), "nope", &json!({}), SubmitOptions::default())
            .await
            .is_err()
    );
    assert!(h.store.list(&Default::default()).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn simulation_predicts_without_calling() {
    let item = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: env, type: select, options: [dev, prod], default: dev }
secrets: [api_token]
fulfillment:
  mode: automated
  approval: { required_when: "fields.env == 'prod'", approvers: { teams: [platform-leads] } }
  actions:
    - { id: a, type: "plugin:test", timeout: 2m, config: { token: "${{ secrets.api_token }}" }, outputs: { id: "${{ result.id }}" } }
    - { id: b, type: "plugin:test", timeout: 3m, when: "fields.env == 'prod'", config: { ref: "${{ outputs.a.id }}" } }
    - { id: c, type: "plugin:test", timeout: 1m, config: { ref: "${{ outputs.a.id }}" } }
"#;
    let h = harness(&[("sim", item)]);
    let s = h
        .engine
        .simulate(&dev(), "sim", &json!({"env": "dev"}))
        .await
        .unwrap();
    assert!(h.ledger.calls().is_empty());
    assert!(
        s.actions.iter().all(|a| a.request.is_none()),
        "an action that cannot dry-run is not asked"
    );
    assert!(!s.approval_required);
    assert_eq!(s.actions[0].input, json!({"token": "[secret:api_token]"}));
    assert_eq!(s.actions[1].will_run, Some(false));
    assert_eq!(
        s.actions[2].input,
        json!({"ref": "sample-id"}),
        "sample outputs flow downstream"
    );
    assert_eq!(s.worst_case_ms, 180_000, "2 m + (b skipped) + 1 m");
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    let p = h
        .engine
        .simulate(&dev(), "sim", &json!({"env": "prod"}))
        .await
        .unwrap();
    assert!(p.approval_required);
    assert_eq!(p.worst_case_ms, 360_000);
}

#[tokio::test(start_paused = true)]
async fn workers_run_requests_and_sweep_approval_deadlines() {
    let item = r#"fulfillment:
  mode: automated
  approval: { approvers: { teams: [platform-leads] }, timeout: 1h, on_timeout: reject }
  actions:
    - { id: a, type: "plugin:test", config: {} }
"#;
    let h = harness(&[("w", item), ("chain", CHAIN)]);
    let waiting = h
        .engine
        .submit(&dev(), "w", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let workers: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(
                h.engine
                    .clone()
                    .run_worker(format!("w{i}"), shutdown.clone()),
            )
        })
        .collect();
    let queued = h
        .engine
        .submit(
            &dev(),
            "chain",
            &json!({"name": "x"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        h.store.get(&queued.id).await.unwrap().unwrap().state,
        RequestState::Completed
    );
    assert_eq!(
        h.store.get(&waiting.id).await.unwrap().unwrap().state,
        RequestState::Rejected,
        "timed out by the sweep"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_while_waiting_for_a_ticket_and_during_post_fulfillment() {
    let manual = r#"fulfillment:
  mode: manual
  manual: { jira: { project: OPS, issue_type: Task, summary: "Do it" } }
"#;
    let post = r#"fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: {} }
  post_fulfillment:
    - { id: notify, type: "plugin:test", config: { sleep_ms: 60000 } }
    - { id: never, type: "plugin:test", config: {} }
"#;
    let h = harness(&[("manual", manual), ("post", post)]);
    let m = h
        .engine
        .submit(&dev(), "manual", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    assert!(
        h.store
            .get(&m.id)
            .await
            .unwrap()
            .unwrap()
            .waiting_for
            .is_some()
    );
    // A worker closes the ticket (the jira action's rollback), then cancels the request.
    let asked = h.engine.cancel(&dev(), &m.id, None).await.unwrap();
    assert!(
        asked.cancel_requested && asked.waiting_for.is_none(),
        "{asked:?}"
    );
    h.engine.run_until_idle("w1").await.unwrap();
    let cancelled = h.store.get(&m.id).await.unwrap().unwrap();
    assert_eq!(cancelled.state, RequestState::Cancelled);
    assert!(
        h.store
            .attempts(&m.id)
            .await
            .unwrap()
            .iter()
            .any(|a| a.action_id == "manual-ticket" && a.rollback),
        "the ticket's rollback ran"
    );

    let p = h
        .engine
        .submit(&dev(), "post", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    let engine = h.engine.clone();
    let worker = tokio::spawn(async move { engine.run_until_idle("w1").await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        h.store.get(&p.id).await.unwrap().unwrap().state,
        RequestState::PostFulfillment
    );
    h.engine.cancel(&dev(), &p.id, None).await.unwrap();
    worker.await.unwrap().unwrap();
    assert_eq!(
        h.store.get(&p.id).await.unwrap().unwrap().state,
        RequestState::Cancelled
    );
    assert!(!h.ledger.executed().contains(&"never".to_string()));
}

#[tokio::test(start_paused = true)]
async fn post_fulfillment_runs_after_main_and_reads_its_outputs() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: {}, outputs: { id: "${{ result.id }}" } }
  post_fulfillment:
    - { id: notify, type: "plugin:test", config: { about: "${{ outputs.a.id }}" } }
    - { id: close, type: "plugin:test", config: { fail: permanent } }
"#;
    let h = harness(&[("post", item)]);
    let r = h
        .engine
        .submit(&dev(), "post", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    h.engine.run_until_idle("w1").await.unwrap();
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(h.ledger.executed(), vec!["a", "notify", "close"]);
    let notify = h
        .store
        .attempts(&r.id)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.action_id == "notify")
        .unwrap();
    assert_eq!(notify.input, json!({"about": "a-id"}));
    assert_eq!(
        r.state,
        RequestState::Completed,
        "a post-fulfillment failure never fails the request"
    );
    assert_eq!(r.error, None);
    let warned = h
        .store
        .events(&r.id, 0, 0)
        .await
        .unwrap()
        .into_iter()
        .any(|e| matches!(&e.kind, EventKind::Log { action_id: Some(a), level, .. } if a == "close" && level == "warn"));
    assert!(warned, "the failure is reported in the request's log");
    assert!(
        h.ledger.rolled_back().is_empty(),
        "a post-fulfillment failure does not undo the main actions"
    );
}

#[tokio::test(start_paused = true)]
async fn secret_fields_reach_actions_but_are_never_stored() {
    let item = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: db_password, type: secret, required: true }
fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: { password: "${{ secrets.db_password }}", fail: retryable, fail_times: 1, retry: x } }
"#;
    let h = harness(&[("sec", item)]);
    let r = h
        .engine
        .submit(
            &dev(),
            "sec",
            &json!({"db_password": "hunter2-very-secret"}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.fields,
        json!({}),
        "the secret is not in the stored fields"
    );
    h.engine.run_until_idle("w1").await.unwrap();
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Completed);
    let attempts = h.store.attempts(&r.id).await.unwrap();
    assert_eq!(
        attempts[0].input["password"],
        json!("[REDACTED]"),
        "journaled input is redacted"
    );
    let everything = format!(
        "{:?}{:?}{:?}",
        h.store.events(&r.id, 0, 0).await.unwrap(),
        attempts,
        h.store.get(&r.id).await.unwrap()
    );
    assert!(
        !everything.contains("hunter2-very-secret"),
        "the secret value is stored nowhere"
    );
}

/// Counts the runs of `plugin:slow` in flight: one starts with the call, ends when its future
/// is done or dropped.
#[derive(Default)]
struct SlowRuns {
    live: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

struct InFlight(std::sync::Arc<SlowRuns>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A remote call that takes ten minutes and does not listen for cancellation.
struct SlowAction(std::sync::Arc<SlowRuns>);

#[async_trait::async_trait]
impl pao_core::action::Action for SlowAction {
    fn describe(&self) -> pao_core::action::ActionDescriptor {
        pao_core::action::ActionDescriptor {
            type_name: "plugin:slow".into(),
            config_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            supports_rollback: false,
            sample_output: json!({}),
        }
    }

    async fn execute(
        &self,
        _: &pao_core::action::ActionContext,
        _: &serde_json::Value,
    ) -> Result<pao_core::action::ActionOutput, pao_core::action::ActionError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.0.live.fetch_add(1, SeqCst) + 1;
        self.0.most.fetch_max(now, SeqCst);
        let _in_flight = InFlight(self.0.clone());
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(pao_core::action::ActionOutput::new(json!({})))
    }
}

/// Every store call fails while `down` is set (the database is unreachable).
#[derive(Default)]
struct Outage {
    down: std::sync::atomic::AtomicBool,
}

impl pao_core::store::StoreObserver for Outage {
    fn before(&self, _: pao_core::store::StoreCall) -> Result<(), pao_core::store::StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(pao_core::store::StoreError::Unavailable(
                "database unreachable".into(),
            ));
        }
        Ok(())
    }
}

/// A worker that cannot renew its lease stops its run once the lease may have ended, so after
/// a store outage longer than the lease, the worker that takes the request over is the only
/// one running it. The stopped run writes nothing (the request is neither cancelled nor
/// failed); the new holder resumes it from the journal.
#[tokio::test(start_paused = true)]
async fn a_worker_that_cannot_renew_its_lease_stops_its_run_when_the_lease_ends() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::SeqCst;
    let runs = Arc::new(SlowRuns::default());
    let mut registry = pao_core::action::ActionRegistry::new();
    registry.register(Arc::new(SlowAction(runs.clone())));
    let item = "fulfillment:\n  mode: automated\n  actions:\n    - { id: call, type: \"plugin:slow\", config: {} }\n";
    let (store, engine) = observed_engine("slow", item, registry, Outage::default());
    let engine = engine
        .clock(Arc::new(pao_core::clock::TokioClock::starting_at(
            chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
                .unwrap()
                .to_utc(),
        )))
        .config(EngineConfig {
            lease: Duration::from_secs(30),
            // Longer than the call, so that the call's end and its timeout never race.
            default_timeout: Duration::from_secs(1200),
            ..EngineConfig::default()
        })
        .build();
    let r = engine
        .submit(&dev(), "slow", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    let first = engine.clone();
    let w1 = tokio::spawn(async move { first.run_until_idle("w1").await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runs.live.load(SeqCst), 1, "w1 runs the call");
    store.observer.down.store(true, SeqCst);
    tokio::time::sleep(Duration::from_secs(28)).await;
    assert_eq!(
        runs.live.load(SeqCst),
        1,
        "29 s in, w1's lease may still be live: it keeps running"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        runs.live.load(SeqCst),
        0,
        "31 s without a renewal: w1's lease may have ended, so w1 must have stopped its run"
    );
    assert!(w1.is_finished(), "w1 stopped (its next claim failed)");
    store.observer.down.store(false, SeqCst);
    let stored = store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(
        stored.state,
        RequestState::InProgress,
        "the stopped run wrote nothing: {stored:?}"
    );
    assert_eq!(engine.run_until_idle("w2").await.unwrap(), 1);
    let done = store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(done.state, RequestState::Completed);
    assert_eq!(
        runs.most.load(SeqCst),
        1,
        "never two runs of the call at once"
    );
}

/// Counts store calls by method.
#[derive(Default)]
struct Calls(std::sync::Mutex<std::collections::BTreeMap<pao_core::store::StoreCall, usize>>);

impl pao_core::store::StoreObserver for Calls {
    fn after(
        &self,
        call: pao_core::store::StoreCall,
        _: Duration,
        _: pao_core::store::CallOutcome,
    ) {
        *self.0.lock().unwrap().entry(call).or_default() += 1;
    }
}

impl Calls {
    fn take(&self) -> std::collections::BTreeMap<pao_core::store::StoreCall, usize> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The approval sweep (every worker, every minute) reads only requests whose deadline is near,
/// in pages, never every request awaiting approval; it still escalates and times out as due.
#[tokio::test(start_paused = true)]
async fn the_approval_sweep_reads_only_requests_near_their_deadline() {
    use pao_core::store::StoreCall;
    use std::sync::Arc;
    let item = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: env, type: select, options: [dev, prod], default: dev }
fulfillment:
  mode: automated
  approval:
    required_when: fields.env == 'prod'
    approvers: { teams: [platform-leads], min_approvals: 1 }
    timeout: 48h
    on_timeout: reject
    escalation: { after: 24h, teams: [admins-team] }
  actions:
    - { id: a, type: "plugin:test", config: {} }
"#;
    let ledger = Arc::new(Ledger::default());
    let mut registry = pao_core::action::ActionRegistry::new();
    registry.register(Arc::new(TestAction {
        ledger: ledger.clone(),
    }));
    let store = Arc::new(pao_core::store::Observed::new(
        pao_core::store::MemoryStore::new(),
        Calls::default(),
    ));
    let engine = pao_core::engine::Orchestrator::builder(
        catalog(&[("gov", item)], &registry),
        store.clone(),
    )
    .actions(registry)
    .clock(Arc::new(pao_core::clock::TokioClock::starting_at(
        chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .to_utc(),
    )))
    .build();
    const N: usize = 250;
    for _ in 0..N {
        let r = engine
            .submit(
                &dev(),
                "gov",
                &json!({"env": "prod"}),
                SubmitOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.state, RequestState::AwaitingApproval);
    }
    store.observer.take();
    assert_eq!(engine.sweep_approvals().await.unwrap(), 0);
    let calls = store.observer.take();
    assert_eq!(
        calls.get(&StoreCall::List),
        None,
        "no deadline is near: the sweep lists nothing ({calls:?})"
    );
    assert_eq!(
        calls.get(&StoreCall::ApprovalsDue),
        Some(&1),
        "one read of the requests due soon, which finds none ({calls:?})"
    );
    tokio::time::advance(Duration::from_secs(25 * 3600)).await;
    assert_eq!(
        engine.sweep_approvals().await.unwrap(),
        N,
        "every request escalates after 24 h"
    );
    let calls = store.observer.take();
    assert_eq!(calls.get(&StoreCall::List), None, "{calls:?}");
    assert_eq!(
        calls.get(&StoreCall::ApprovalsDue),
        Some(&2),
        "250 requests in pages of 200 ({calls:?})"
    );
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    assert_eq!(
        engine.sweep_approvals().await.unwrap(),
        N,
        "every request times out at 48 h"
    );
    let rejected = store
        .list(&pao_core::store::RequestFilter {
            states: vec![RequestState::Rejected],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rejected.len(), N);
}

#[tokio::test(start_paused = true)]
async fn health_targets_read_no_journal_until_a_check_is_due() {
    use pao_core::store::StoreCall;
    use std::sync::Arc;
    let item = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: name, type: text, required: true }
fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: { result: { host: "db-${{ fields.name }}" } }, outputs: { host: "${{ result.host }}" } }
monitoring:
  health_check: { url: "http://${{ outputs.a.host }}:8008/health", interval: 1h }
"#;
    let ledger = Arc::new(Ledger::default());
    let mut registry = pao_core::action::ActionRegistry::new();
    registry.register(Arc::new(TestAction { ledger }));
    let (store, engine) = observed_engine("monitored", item, registry, Calls::default());
    let engine = engine.build();
    const N: usize = 40;
    for i in 0..N {
        engine
            .submit(
                &dev(),
                "monitored",
                &json!({ "name": format!("n{i}") }),
                SubmitOptions::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(engine.run_until_idle("w1").await.unwrap(), N);
    store.observer.take();
    let targets = engine.health_targets(1000).await.unwrap();
    assert_eq!(targets.len(), N);
    assert_eq!(targets[0].interval, Duration::from_secs(3600));
    let calls = store.observer.take();
    assert_eq!(
        calls.get(&StoreCall::Attempts),
        None,
        "listing the targets reads no journal ({calls:?})"
    );
    let url = engine.health_url(&targets[0]).await.unwrap();
    let name = targets[0].request.fields["name"].as_str().unwrap();
    assert_eq!(url, format!("http://db-{name}:8008/health"));
    let calls = store.observer.take();
    assert_eq!(calls.get(&StoreCall::Attempts), Some(&1), "{calls:?}");
}

/// An engine on a memory store watched by `observer`, with one item and `registry`'s actions:
/// the store and the builder (for a clock or a config before `build`).
fn observed_engine<O: pao_core::store::StoreObserver + 'static>(
    id: &str,
    item: &str,
    registry: pao_core::action::ActionRegistry,
    observer: O,
) -> (
    std::sync::Arc<pao_core::store::Observed<pao_core::store::MemoryStore, O>>,
    pao_core::engine::OrchestratorBuilder,
) {
    let store = std::sync::Arc::new(pao_core::store::Observed::new(
        pao_core::store::MemoryStore::new(),
        observer,
    ));
    let builder =
        pao_core::engine::Orchestrator::builder(catalog(&[(id, item)], &registry), store.clone())
            .actions(registry);
    (store, builder)
}
