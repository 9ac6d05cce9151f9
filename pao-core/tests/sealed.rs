//! Sealed secrets: what a request needs later — its `secret` form fields, the real inputs of
//! completed actions a rollback replays — is stored encrypted, so another engine over the
//! same store (another replica, or this one after a restart) runs the request with the real
//! values, and nothing readable is left once the request is over.

mod engine_support;

use std::sync::Arc;
use std::time::Duration;

use engine_support::*;
use pao_core::action::ActionRegistry;
use pao_core::clock::TokioClock;
use pao_core::engine::{EngineConfig, Orchestrator, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::sealing::{Kek, Keyring};
use pao_core::store::{MemoryStore, Store};
use serde_json::{Value, json};

const SECRET: &str = "hunter2-very-secret-value";

/// An engine over `store` with its own test action and ledger (a replica).
fn replica(
    store: &Arc<MemoryStore>,
    items: &[(&str, &str)],
    keyring: Option<Keyring>,
) -> (Arc<Orchestrator>, Arc<Ledger>) {
    let ledger = Arc::new(Ledger::default());
    let mut registry = ActionRegistry::new();
    registry.register(Arc::new(TestAction {
        ledger: ledger.clone(),
    }));
    let catalog = catalog(items, &registry);
    let clock = Arc::new(TokioClock::starting_at(
        chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .to_utc(),
    ));
    let mut b = Orchestrator::builder(catalog, store.clone())
        .actions(registry)
        .clock(clock)
        .config(EngineConfig {
            lease: Duration::from_secs(30),
            ..EngineConfig::default()
        })
        .secrets(Arc::new(
            pao_core::secrets::StaticSecrets::new().with("api_token", "tok-from-the-provider"),
        ));
    if let Some(k) = keyring {
        b = b.keyring(k);
    }
    (b.build(), ledger)
}

const FORM: &str = r#"presentation:
  groups:
    - id: g
      title: G
      fields:
        - { id: db_password, type: secret, required: true }
"#;

/// The form and one action that receives the secret field.
fn one_action_item() -> String {
    format!(
        "{FORM}fulfillment:\n  mode: automated\n  actions:\n    - {{ id: a, type: \"plugin:test\", config: {{ password: \"${{{{ secrets.db_password }}}}\" }} }}\n"
    )
}

fn inputs_of(ledger: &Ledger, action: &str, rollback: bool) -> Vec<Value> {
    ledger
        .inputs
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, r, _)| a == action && *r == rollback)
        .map(|(_, _, i)| i.clone())
        .collect()
}

/// Everything the store keeps about a request, as text.
async fn stored_text(store: &MemoryStore, id: &str) -> String {
    format!(
        "{:?}{:?}{:?}{:?}",
        store.get(id).await.unwrap(),
        store.events(id, 0, 0).await.unwrap(),
        store.attempts(id).await.unwrap(),
        store.sealed(id).await.unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_secret_field_accepted_by_one_engine_is_run_by_another() {
    let item = one_action_item();
    let store = Arc::new(MemoryStore::new());
    let kek = Kek::generate();
    let (accepting, _) = replica(&store, &[("sec", &item)], Some(Keyring::new(kek.clone())));
    let (running, ledger) = replica(&store, &[("sec", &item)], Some(Keyring::new(kek)));
    let r = accepting
        .submit(
            &dev(),
            "sec",
            &json!({"db_password": SECRET}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    // Sealed, not readable, while it waits.
    let sealed = store.sealed(&r.id).await.unwrap();
    assert_eq!(sealed.values.len(), 1);
    assert!(!stored_text(&store, &r.id).await.contains(SECRET));
    assert!(!stored_text(&store, &r.id).await.contains("hunter2"));
    assert_eq!(running.run_until_idle("w-other").await.unwrap(), 1);
    let done = store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(done.state, RequestState::Completed, "{:?}", done.error);
    assert_eq!(
        inputs_of(&ledger, "a", false),
        vec![json!({"password": SECRET})],
        "the other engine's action received the real value"
    );
    assert_eq!(
        store.sealed(&r.id).await.unwrap(),
        Default::default(),
        "nothing sealed is kept once the request completed"
    );
    assert!(!stored_text(&store, &r.id).await.contains(SECRET));
}

#[tokio::test(start_paused = true)]
async fn an_engine_without_the_key_fails_the_request_and_says_why() {
    let item = one_action_item();
    let store = Arc::new(MemoryStore::new());
    let (accepting, _) = replica(&store, &[("sec", &item)], None);
    let (running, ledger) = replica(&store, &[("sec", &item)], None);
    let r = accepting
        .submit(
            &dev(),
            "sec",
            &json!({"db_password": SECRET}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    running.run_until_idle("w-other").await.unwrap();
    let failed = store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(failed.state, RequestState::Failed);
    let why = failed.error.unwrap_or_default();
    assert!(why.contains("does not hold"), "{why}");
    assert!(inputs_of(&ledger, "a", false).is_empty(), "nothing ran");
}

/// A rotation: the new KEK is current and the old one previous; re-wrapping moves every data
/// key under the new KEK while requests wait, after which the old KEK is not needed.
#[tokio::test(start_paused = true)]
async fn rotation_rewraps_waiting_requests_and_the_old_key_can_go() {
    let item = one_action_item();
    let store = Arc::new(MemoryStore::new());
    let (old, new) = (Kek::generate(), Kek::generate());
    let (before, _) = replica(&store, &[("sec", &item)], Some(Keyring::new(old.clone())));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            before
                .submit(
                    &dev(),
                    "sec",
                    &json!({"db_password": SECRET}),
                    SubmitOptions::default(),
                )
                .await
                .unwrap()
                .id,
        );
    }
    let (during, _) = replica(
        &store,
        &[("sec", &item)],
        Some(Keyring::new(new.clone()).with_previous(old)),
    );
    let report = during.rewrap_sealed(2).await.unwrap();
    assert_eq!(report.rewrapped, 3);
    assert_eq!(report.unreadable, 0);
    assert_eq!(
        during.rewrap_sealed(2).await.unwrap().rewrapped,
        0,
        "nothing left"
    );
    let (after, ledger) = replica(&store, &[("sec", &item)], Some(Keyring::new(new)));
    assert_eq!(after.run_until_idle("w").await.unwrap(), 3);
    for id in &ids {
        assert_eq!(
            store.get(id).await.unwrap().unwrap().state,
            RequestState::Completed
        );
    }
    assert_eq!(inputs_of(&ledger, "a", false).len(), 3);
}

const ROLLBACK_ITEM: &str = r#"secrets: [api_token]
fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: { password: "${{ secrets.db_password }}", token: "${{ secrets.api_token }}" } }
    - { id: b, type: "plugin:test", config: { sleep_ms: 60000, fail: permanent }, on_failure: rollback }
"#;

/// The journal keeps a completed action's input redacted; after a crash, the engine that
/// resumes the request and rolls it back replays the real input (review finding M12).
#[tokio::test(start_paused = true)]
async fn a_rollback_after_a_crash_resume_gets_the_real_input() {
    let item = format!("{FORM}{ROLLBACK_ITEM}");
    let store = Arc::new(MemoryStore::new());
    let kek = Kek::generate();
    let (first, _) = replica(&store, &[("rb", &item)], Some(Keyring::new(kek.clone())));
    let (second, ledger) = replica(&store, &[("rb", &item)], Some(Keyring::new(kek)));
    let r = first
        .submit(
            &dev(),
            "rb",
            &json!({"db_password": SECRET}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    let engine = first.clone();
    let worker = tokio::spawn(async move { engine.run_until_idle("doomed").await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    worker.abort(); // dies while `b` runs
    let _ = worker.await;
    let attempts = store.attempts(&r.id).await.unwrap();
    assert_eq!(attempts[0].input["password"], json!("[REDACTED]"));
    tokio::time::advance(Duration::from_secs(31)).await;
    // `b` sleeps a minute then fails: the resumed run undoes `a`.
    let run = tokio::spawn({
        let e = second.clone();
        async move { e.run_until_idle("w2").await }
    });
    tokio::time::sleep(Duration::from_secs(120)).await;
    run.await.unwrap().unwrap();
    let end = store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(end.state, RequestState::Failed);
    assert_eq!(
        inputs_of(&ledger, "a", true),
        vec![json!({"password": SECRET, "token": "tok-from-the-provider", "rollback_of": "a"})],
        "the rollback replayed the real input, not the journal's redacted one"
    );
    assert!(!stored_text(&store, &r.id).await.contains(SECRET));
}

/// A retry reuses the completed actions of the failed request; when the retry is cancelled,
/// it undoes them with their real inputs, sealed by the request that ran them.
#[tokio::test(start_paused = true)]
async fn a_cancelled_retry_undoes_reused_actions_with_their_real_inputs() {
    let item = format!(
        r#"{FORM}        - {{ id: mode, type: text, default: fast }}
fulfillment:
  mode: automated
  actions:
    - {{ id: a, type: "plugin:test", config: {{ password: "${{{{ secrets.db_password }}}}" }}, on_failure: rollback }}
    - {{ id: b, type: "plugin:test", config: {{ sleep_ms: "${{{{ fields.mode == 'slow' ? 60000 : 0 }}}}", fail: "${{{{ fields.mode == 'slow' ? null : 'permanent' }}}}" }}, on_failure: fail }}
"#
    );
    let store = Arc::new(MemoryStore::new());
    let (engine, ledger) = replica(&store, &[("rt", &item)], Some(Keyring::ephemeral()));
    let r = engine
        .submit(
            &dev(),
            "rt",
            &json!({"db_password": SECRET}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    engine.run_until_idle("w1").await.unwrap();
    assert_eq!(
        store.get(&r.id).await.unwrap().unwrap().state,
        RequestState::Failed
    );
    assert!(
        inputs_of(&ledger, "a", true).is_empty(),
        "`b` fails without undoing `a`"
    );
    // The failed request keeps the sealed input of `a`, not the form's secret.
    let kept = store.sealed(&r.id).await.unwrap();
    assert_eq!(kept.values.keys().collect::<Vec<_>>(), vec!["rollback:a"]);
    // The retry needs the secret field again (its value is not kept).
    assert!(engine.retry(&dev(), &r.id, None).await.is_err());
    let second = engine
        .retry(
            &dev(),
            &r.id,
            Some(json!({"db_password": "another-secret-value", "mode": "slow"})),
        )
        .await
        .unwrap();
    let run = tokio::spawn({
        let e = engine.clone();
        async move { e.run_until_idle("w1").await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    engine
        .cancel(&dev(), &second.id, Some("changed my mind".into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    run.await.unwrap().unwrap();
    assert_eq!(
        store.get(&second.id).await.unwrap().unwrap().state,
        RequestState::Cancelled
    );
    assert_eq!(
        inputs_of(&ledger, "a", false).len(),
        1,
        "`a` was reused, not re-run"
    );
    assert_eq!(
        inputs_of(&ledger, "a", true),
        vec![json!({"password": SECRET, "rollback_of": "a"})],
        "the retry undid `a` with the input it ran with"
    );
}
