//! How many durable writes the engine makes, counted at the [`Store`] boundary: a submission
//! is one write (request, audit and admission together), a one-action run is a claim and two
//! writes (the attempt's start, then its end with the request's and the claim of the worker's
//! next request), and what a run defers is never held back from watchers while another action
//! of the request still runs.

mod engine_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_support::*;
use pao_core::action::ActionRegistry;
use pao_core::clock::TokioClock;
use pao_core::engine::{EngineConfig, Orchestrator, SubmitOptions};
use pao_core::events::{EventSink, LiveEvent};
use pao_core::lifecycle::RequestState;
use pao_core::store::*;
use serde_json::json;

/// Counts the calls of every writing method of the store it wraps (claims that found work; a
/// batch with the next claim whether or not that found work).
#[derive(Default)]
struct Writes(Mutex<BTreeMap<&'static str, usize>>);

impl StoreObserver for Writes {
    fn after(&self, call: StoreCall, _: Duration, outcome: CallOutcome) {
        if call.writes() && (outcome != CallOutcome::Empty || call == StoreCall::ApplyThenClaim) {
            *self.0.lock().unwrap().entry(call.name()).or_default() += 1;
        }
    }
}

type Counting = Observed<MemoryStore, Writes>;

/// The calls counted so far, forgotten.
fn take(store: &Counting) -> BTreeMap<&'static str, usize> {
    std::mem::take(&mut *store.observer.0.lock().unwrap())
}

/// Live events as the sink heard them, with the request's stored events at that moment.
#[derive(Default)]
struct Heard(Mutex<Vec<LiveEvent>>);

impl EventSink for Heard {
    fn publish(&self, event: LiveEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn setup(items: &[(&str, &str)]) -> (Arc<Orchestrator>, Arc<Counting>, Arc<Ledger>, Arc<Heard>) {
    let ledger = Arc::new(Ledger::default());
    let mut registry = ActionRegistry::new();
    registry.register(Arc::new(TestAction {
        ledger: ledger.clone(),
    }));
    let store = Arc::new(Counting::default());
    let heard = Arc::new(Heard::default());
    let clock = Arc::new(TokioClock::starting_at(
        chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .to_utc(),
    ));
    let engine = Orchestrator::builder(catalog(items, &registry), store.clone())
        .actions(registry)
        .clock(clock)
        .events(heard.clone())
        .config(EngineConfig::default())
        .build();
    (engine, store, ledger, heard)
}

const ONE: &str = r#"fulfillment:
  mode: automated
  actions:
    - { id: only, type: "plugin:test", config: { result: { id: 1 } }, outputs: { id: "${{ result.id }}" } }
"#;

const TWO: &str = r#"fulfillment:
  mode: automated
  actions:
    - { id: first, type: "plugin:test", config: {} }
    - { id: second, type: "plugin:test", config: {} }
"#;

fn counts(pairs: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
    pairs.iter().copied().collect()
}

#[tokio::test(start_paused = true)]
async fn a_submission_is_one_write_and_a_one_action_run_two_after_the_claim() {
    let (engine, store, ledger, heard) = setup(&[("one", ONE)]);
    let r = engine
        .submit(&dev(), "one", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    assert_eq!(r.state, RequestState::Queued);
    assert_eq!(
        take(&store),
        counts(&[("submit_with", 1)]),
        "request, audit, admission: one write"
    );
    assert_eq!(engine.run_until_idle("w1").await.unwrap(), 1);
    assert_eq!(
        take(&store),
        counts(&[("apply", 1), ("apply_then_claim", 1), ("claim", 1)]),
        "claim, start (with the move to InProgress), finish with the end and the claim of the \
         next request; no release after a terminal state"
    );
    assert_eq!(ledger.executed(), vec!["only"]);
    let stored = store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(stored.state, RequestState::Completed);
    // Everything the run wrote is there, in order.
    let kinds: Vec<String> = store
        .events(&r.id, 0, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| match &e.kind {
            EventKind::StateChanged { to, .. } => format!("state:{to}"),
            EventKind::ActionStarted { action_id, .. } => format!("started:{action_id}"),
            EventKind::ActionSucceeded { action_id, .. } => format!("succeeded:{action_id}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "state:submitted",
            "state:prerequisites",
            "state:validation",
            "state:queued",
            "state:in_progress",
            "started:only",
            "succeeded:only",
            "state:completed"
        ]
    );
    let attempts = store.attempts(&r.id).await.unwrap();
    assert!(
        matches!(&attempts[0].outcome, AttemptOutcome::Succeeded { outputs, .. } if outputs == &json!({"id": 1})),
        "{attempts:?}"
    );
    // The live sink heard what was stored (all but the first event, which no one can be
    // subscribed to yet), in the same order.
    let live: Vec<_> = heard
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    let stored_kinds: Vec<_> = store
        .events(&r.id, 1, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(live, stored_kinds);
}

#[tokio::test(start_paused = true)]
async fn a_worker_claims_its_next_request_with_the_end_of_the_last() {
    let (engine, store, ledger, _) = setup(&[("one", ONE)]);
    for _ in 0..3 {
        engine
            .submit(&dev(), "one", &json!({}), SubmitOptions::default())
            .await
            .unwrap();
    }
    take(&store);
    assert_eq!(engine.run_until_idle("w1").await.unwrap(), 3);
    assert_eq!(ledger.executed(), vec!["only", "only", "only"]);
    assert_eq!(
        take(&store),
        counts(&[("apply", 3), ("apply_then_claim", 3), ("claim", 1)]),
        "one claim on its own; each end claims the next request (the last finds none)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_stops_gives_back_the_request_it_claimed_with_its_last_end() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: only, type: "plugin:test", config: { sleep_ms: 1000 } }
"#;
    let (engine, store, ledger, _) = setup(&[("slow", item)]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = engine
            .submit(&dev(), "slow", &json!({}), SubmitOptions::default())
            .await
            .unwrap();
        ids.push(r.id);
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(engine.clone().run_worker("w1".into(), shutdown.clone()));
    // Stop while the first request's action runs: the run finishes, and its end claims the
    // second request, which the loop must not start and must not keep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    worker.await.unwrap();
    assert_eq!(ledger.executed(), vec!["only"]);
    let first = store.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!(first.state, RequestState::Completed);
    let (second, _) = store
        .claim("w2", Duration::from_secs(30), engine.now())
        .await
        .unwrap()
        .expect("the second request is claimable at once, not after the stopped worker's lease");
    assert_eq!(second.id, ids[1]);
    assert_eq!(second.state, RequestState::Queued);
}

#[tokio::test(start_paused = true)]
async fn a_chain_writes_each_success_with_the_next_start() {
    let (engine, store, ledger, _) = setup(&[("two", TWO)]);
    engine
        .submit(&dev(), "two", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    take(&store);
    engine.run_until_idle("w1").await.unwrap();
    assert_eq!(ledger.executed(), vec!["first", "second"]);
    assert_eq!(
        take(&store),
        counts(&[("apply", 2), ("apply_then_claim", 1), ("claim", 1)]),
        "start first; finish first + start second; finish second + complete + claim the next"
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_is_written_at_once_while_another_action_still_runs() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - parallel:
        id: grp
        actions:
          - { id: fast, type: "plugin:test", config: { sleep_ms: 1000 } }
          - { id: slow, type: "plugin:test", config: { sleep_ms: 300000 } }
"#;
    let (engine, store, _, heard) = setup(&[("par", item)]);
    let r = engine
        .submit(&dev(), "par", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    let run = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run_until_idle("w1").await })
    };
    // Five minutes of the slow action (well inside the default ten-minute action timeout, which
    // would otherwise race it at the same instant of the paused clock); look after one.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let events = store.events(&r.id, 0, 0).await.unwrap();
    assert!(
        events.iter().any(|e| matches!(&e.kind, EventKind::ActionSucceeded { action_id, .. } if action_id == "fast")),
        "the fast action's success is stored while the slow one runs: {events:?}"
    );
    assert!(
        heard.0.lock().unwrap().iter().any(|e| matches!(&e.kind, EventKind::ActionSucceeded { action_id, .. } if action_id == "fast")),
        "and watchers heard it"
    );
    let attempts = store.attempts(&r.id).await.unwrap();
    let fast = attempts.iter().find(|a| a.action_id == "fast").unwrap();
    assert!(
        matches!(fast.outcome, AttemptOutcome::Succeeded { .. }),
        "its journal entry is finished: {fast:?}"
    );
    assert_eq!(
        store.get(&r.id).await.unwrap().unwrap().state,
        RequestState::InProgress
    );
    assert_eq!(run.await.unwrap().unwrap(), 1);
    assert_eq!(
        store.get(&r.id).await.unwrap().unwrap().state,
        RequestState::Completed
    );
}

/// A worker killed the moment an action's call returns (at the same instant of the paused
/// clock) leaves no success unrecorded: the next worker does not call the action again. The
/// deferred success is written in the task that made the call, before it yields.
///
/// Which of the two wakes at that instant tokio polls first (the test's sleep or the
/// action's) is the runtime's choice, so the kill comes both before and after the worker task
/// had its turn: killed before, the call never returned and runs once on the next worker;
/// killed after, its success was already stored. (The first version of the deferral, which
/// handed the success from a spawned task to the phase loop, lost it in the first case.)
#[tokio::test(start_paused = true)]
async fn a_crash_as_the_last_call_returns_does_not_repeat_it() {
    for yield_first in [false, true] {
        crash_as_the_call_returns(yield_first).await;
    }
}

async fn crash_as_the_call_returns(yield_first: bool) {
    for (name, item) in [
        (
            "last",
            r#"fulfillment:
  mode: automated
  actions:
    - { id: first, type: "plugin:test", config: {} }
    - { id: last, type: "plugin:test", config: { sleep_ms: 10 } }
"#,
        ),
        (
            "post",
            r#"fulfillment:
  mode: automated
  actions:
    - { id: skipped, type: "plugin:test", when: "false", config: {} }
  post_fulfillment:
    - { id: post, type: "plugin:test", config: { sleep_ms: 10 } }
"#,
        ),
    ] {
        let (engine, store, ledger, _) = setup(&[("it", item)]);
        let r = engine
            .submit(&dev(), "it", &json!({}), SubmitOptions::default())
            .await
            .unwrap();
        let doomed = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run_until_idle("doomed").await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        if yield_first {
            tokio::task::yield_now().await;
        }
        doomed.abort();
        let _ = doomed.await;
        tokio::time::sleep(EngineConfig::default().lease + Duration::from_secs(1)).await;
        engine.run_until_idle("w1").await.unwrap();
        assert_eq!(
            store.get(&r.id).await.unwrap().unwrap().state,
            RequestState::Completed,
            "{name}, yield first: {yield_first}"
        );
        for (key, n) in ledger.effects() {
            assert_eq!(
                n, 1,
                "{name} (yield first: {yield_first}): {key} succeeded {n} times"
            );
        }
        assert!(
            ledger.executed().contains(&name.to_string()),
            "{name}: {:?}",
            ledger.executed()
        );
    }
}
