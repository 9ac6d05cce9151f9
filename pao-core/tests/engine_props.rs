//! The fulfillment engine against random items: random DAGs (sequential steps, parallel groups
//! with and without `max_concurrency`, extra `depends_on` edges to earlier steps), random
//! `when` conditions, failure policies, behaviours (success, permanent failure, retryable
//! failure that passes after k attempts, sleeps), `rollback:` blocks, post-fulfillment actions,
//! approvals, and an interruption while a worker runs: none, a cancellation, or the worker
//! dying (its task aborted) with a second worker taking over once the lease has run out. Every
//! case runs in a fresh current-thread runtime with a paused clock, so sleeps, backoffs and
//! leases pass instantly and deterministically.
//!
//! The properties, checked on every case:
//! - (a) no action starts before each of its dependencies finished (succeeded, was skipped, or
//!   failed with `on_failure: continue`): by event order, journal and ledger timestamps;
//! - (b) each effect happens at most once per idempotency key;
//! - (c) the request ends in a terminal state, and nothing is left to claim;
//! - (d) terminal states absorb: cancel, approve and resolve_manual are refused afterwards and
//!   change nothing;
//! - (e) `Completed` means every action ran to success (or failed with `continue`) unless its
//!   `when` was false; a rollback undoes exactly the completed actions, in reverse completion
//!   order; the final state agrees with a model of the item;
//! - (f) the stored state changes follow `RequestState::can_transition_to`;
//! - (g) parallel groups never run more than `max_concurrency` members at once.
//!
//! The deterministic tests at the end replay the engine bugs this property found.

mod engine_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use engine_support::*;
use pao_core::engine::{BreakerConfig, EngineConfig, ManualOutcome, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::store::{AttemptOutcome, EventKind, RollbackStatus, Store};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

/// Attempts per action in every generated item (`fulfillment.defaults.retry`).
const MAX_ATTEMPTS: u32 = 3;

// ------------------------------------------------------------------------------ the model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ok,
    Permanent,
    /// Fails this many times (retryable), then succeeds.
    Retryable(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// No `on_failure` key: rollback.
    Default,
    Rollback,
    Continue,
    Fail,
}

impl Policy {
    fn yaml(self) -> Option<&'static str> {
        match self {
            Policy::Default => None,
            Policy::Rollback => Some("rollback"),
            Policy::Continue => Some("continue"),
            Policy::Fail => Some("fail"),
        }
    }
    fn rolls_back(self) -> bool {
        matches!(self, Policy::Default | Policy::Rollback)
    }
}

#[derive(Debug, Clone)]
struct RawAction {
    behaviour: Behaviour,
    sleep_ms: u64,
    when: bool,
    policy: Policy,
    rollback_block: bool,
    deps: Vec<Index>,
}

#[derive(Debug, Clone)]
enum RawStep {
    Single(RawAction),
    Parallel {
        max_concurrency: Option<u32>,
        members: Vec<RawAction>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Approval {
    None,
    Approve,
    Reject,
}

/// What happens while the worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    None,
    /// Cancel the request after this many (paused) milliseconds.
    Cancel(u64),
    /// The worker dies after this many milliseconds (no release, no more heartbeats); a
    /// second worker takes over once the lease has run out.
    Crash(u64),
}

#[derive(Debug, Clone)]
struct Case {
    steps: Vec<RawStep>,
    /// `post_fulfillment` actions (no `depends_on`, no `rollback:`).
    post: Vec<RawAction>,
    approval: Approval,
    interrupt: Interrupt,
}

/// One action of the item, resolved.
#[derive(Debug, Clone)]
struct Node {
    id: String,
    raw: RawAction,
    post: bool,
    /// Explicit `depends_on` targets (action or group ids).
    depends_on: Vec<String>,
    /// Every node that must finish first.
    deps: BTreeSet<String>,
}

impl Node {
    /// Whether the request goes on when the action fails: `on_failure: continue`, and every
    /// post-fulfillment action (its failure never fails the request).
    fn continues(&self) -> bool {
        self.post || self.raw.policy == Policy::Continue
    }

    /// Whether the action fails for good when it runs.
    fn fails(&self) -> bool {
        match self.raw.behaviour {
            Behaviour::Ok => false,
            Behaviour::Permanent => true,
            Behaviour::Retryable(k) => k >= MAX_ATTEMPTS,
        }
    }
}

struct Model {
    nodes: Vec<Node>,
    /// Parallel groups: (group id, max_concurrency, member ids).
    groups: Vec<(String, Option<u32>, Vec<String>)>,
    yaml: String,
}

impl Model {
    fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("known node")
    }

    fn build(case: &Case) -> Model {
        let mut nodes: Vec<Node> = Vec::new();
        let mut groups = Vec::new();
        let mut step_members: Vec<Vec<String>> = Vec::new();
        // Every id an action of a later step may name in `depends_on`, with the nodes it
        // stands for.
        let mut targets: Vec<(String, Vec<String>)> = Vec::new();
        for (s, step) in case.steps.iter().enumerate() {
            let raws: Vec<(String, RawAction)> = match step {
                RawStep::Single(a) => vec![(format!("a{s}"), a.clone())],
                RawStep::Parallel {
                    max_concurrency,
                    members,
                } => {
                    let ids: Vec<String> =
                        (0..members.len()).map(|m| format!("a{s}_{m}")).collect();
                    groups.push((format!("g{s}"), *max_concurrency, ids.clone()));
                    members
                        .iter()
                        .zip(ids)
                        .map(|(a, id)| (id, a.clone()))
                        .collect()
                }
            };
            let mut members = Vec::new();
            for (id, raw) in raws {
                let mut depends_on = Vec::new();
                let mut deps: BTreeSet<String> = step_members
                    .last()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                if !targets.is_empty() {
                    for ix in &raw.deps {
                        let (t, stands_for) = &targets[ix.index(targets.len())];
                        if !depends_on.contains(t) {
                            depends_on.push(t.clone());
                        }
                        deps.extend(stands_for.iter().cloned());
                    }
                }
                members.push(id.clone());
                nodes.push(Node {
                    id,
                    raw,
                    post: false,
                    depends_on,
                    deps,
                });
            }
            if let RawStep::Parallel { .. } = step {
                targets.push((format!("g{s}"), members.clone()));
            }
            for m in &members {
                targets.push((m.clone(), vec![m.clone()]));
            }
            step_members.push(members);
        }
        for (p, raw) in case.post.iter().enumerate() {
            let id = format!("p{p}");
            let deps = step_members.last().cloned().unwrap_or_default();
            nodes.push(Node {
                id: id.clone(),
                raw: RawAction {
                    deps: Vec::new(),
                    rollback_block: false,
                    ..raw.clone()
                },
                post: true,
                depends_on: Vec::new(),
                deps: deps.into_iter().collect(),
            });
            step_members.push(vec![id]);
        }
        let mut model = Model {
            nodes,
            groups,
            yaml: String::new(),
        };
        model.yaml = model.render(case);
        model
    }

    fn action_yaml(node: &Node, indent: &str) -> String {
        let r = &node.raw;
        let mut config = format!("sleep_ms: {}", r.sleep_ms);
        match r.behaviour {
            Behaviour::Ok => {}
            Behaviour::Permanent => config.push_str(", fail: permanent"),
            Behaviour::Retryable(k) => {
                let _ = write!(config, ", fail: retryable, fail_times: {k}");
            }
        }
        let mut line = format!(
            "{indent}- {{ id: {}, type: \"plugin:test\", config: {{ {config} }}",
            node.id
        );
        if !r.when {
            line.push_str(", when: \"false\"");
        } else if node.id.len().is_multiple_of(2) {
            // A literal `true` sometimes, no `when` otherwise.
            line.push_str(", when: \"true\"");
        }
        if let Some(p) = r.policy.yaml() {
            let _ = write!(line, ", on_failure: {p}");
        }
        if !node.depends_on.is_empty() {
            let _ = write!(line, ", depends_on: [{}]", node.depends_on.join(", "));
        }
        if r.rollback_block {
            let _ = write!(
                line,
                ", rollback: {{ type: \"plugin:test\", config: {{ name: {id}, rollback_of: {id} }} }}",
                id = node.id
            );
        }
        line.push_str(" }\n");
        line
    }

    fn render(&self, case: &Case) -> String {
        let mut y = String::from("fulfillment:\n  mode: automated\n");
        let _ = writeln!(
            y,
            "  defaults: {{ retry: {{ max_attempts: {MAX_ATTEMPTS}, backoff: fixed, initial: 10ms, jitter: 0 }} }}"
        );
        if case.approval != Approval::None {
            y.push_str("  approval: { approvers: { teams: [platform-leads] } }\n");
        }
        y.push_str("  actions:\n");
        let mut i = 0;
        for (s, step) in case.steps.iter().enumerate() {
            match step {
                RawStep::Single(_) => {
                    y.push_str(&Model::action_yaml(&self.nodes[i], "    "));
                    i += 1;
                }
                RawStep::Parallel {
                    max_concurrency,
                    members,
                } => {
                    let _ = writeln!(y, "    - parallel:\n        id: g{s}");
                    if let Some(m) = max_concurrency {
                        let _ = writeln!(y, "        max_concurrency: {m}");
                    }
                    y.push_str("        actions:\n");
                    for _ in members {
                        y.push_str(&Model::action_yaml(&self.nodes[i], "          "));
                        i += 1;
                    }
                }
            }
        }
        if !case.post.is_empty() {
            y.push_str("  post_fulfillment:\n");
            for n in self.nodes.iter().filter(|n| n.post) {
                y.push_str(&Model::action_yaml(n, "    "));
            }
        }
        y
    }
}

// ------------------------------------------------------------------------------ strategies

fn raw_action() -> impl Strategy<Value = RawAction> {
    let behaviour = prop_oneof![
        12 => Just(Behaviour::Ok),
        1 => Just(Behaviour::Permanent),
        3 => (1u32..=MAX_ATTEMPTS).prop_map(Behaviour::Retryable),
    ];
    let policy = prop_oneof![
        Just(Policy::Default),
        Just(Policy::Rollback),
        Just(Policy::Continue),
        Just(Policy::Fail),
    ];
    (
        behaviour,
        prop_oneof![Just(0u64), Just(10), Just(25), Just(60)],
        prop::bool::weighted(0.8),
        policy,
        any::<bool>(),
        prop::collection::vec(any::<Index>(), 0..=2),
    )
        .prop_map(
            |(behaviour, sleep_ms, when, policy, rollback_block, deps)| RawAction {
                behaviour,
                sleep_ms,
                when,
                policy,
                rollback_block,
                deps,
            },
        )
}

fn raw_step() -> impl Strategy<Value = RawStep> {
    prop_oneof![
        3 => raw_action().prop_map(RawStep::Single),
        2 => (
            prop::option::of(1u32..=3),
            prop::collection::vec(raw_action(), 2..=4)
        )
            .prop_map(|(max_concurrency, members)| RawStep::Parallel {
                max_concurrency,
                members
            }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(raw_step(), 1..=8),
        prop::collection::vec(raw_action(), 0..=2),
        prop_oneof![
            6 => Just(Approval::None),
            1 => Just(Approval::Approve),
            1 => Just(Approval::Reject),
        ],
        prop_oneof![
            2 => Just(Interrupt::None),
            2 => (1u64..=250).prop_map(Interrupt::Cancel),
            1 => (1u64..=250).prop_map(Interrupt::Crash),
        ],
    )
        .prop_map(|(steps, post, approval, interrupt)| Case {
            steps,
            post,
            approval,
            interrupt,
        })
}

// ------------------------------------------------------------------------------ one case

const BASE: &str = "2026-03-02T09:00:00Z";

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(BASE).unwrap().to_utc()
}

/// What the events say about one run.
#[derive(Default, Debug)]
struct Observed {
    /// Non-rollback starts: action -> [(seq, at)].
    started: BTreeMap<String, Vec<(u64, DateTime<Utc>)>>,
    /// When each action first became finished for its dependents (a resumed run re-evaluates
    /// skipped actions).
    finished: BTreeMap<String, (u64, DateTime<Utc>)>,
    /// Successful executions, in completion order.
    succeeded: Vec<String>,
    /// Successful rollbacks, in order.
    rolled_back: Vec<String>,
    skipped: BTreeSet<String>,
    /// Actions whose last attempt failed for good.
    failed: BTreeSet<String>,
    states: Vec<(Option<RequestState>, RequestState)>,
}

fn observe(model: &Model, events: &[pao_core::store::Event]) -> Observed {
    let mut o = Observed::default();
    for e in events {
        match &e.kind {
            EventKind::StateChanged { from, to, .. } => o.states.push((*from, *to)),
            EventKind::ActionStarted {
                action_id,
                rollback: false,
                ..
            } => o
                .started
                .entry(action_id.clone())
                .or_default()
                .push((e.seq, e.at)),
            EventKind::ActionSucceeded {
                action_id,
                rollback,
                ..
            } => {
                if *rollback {
                    o.rolled_back.push(action_id.clone());
                } else {
                    o.succeeded.push(action_id.clone());
                    o.finished.entry(action_id.clone()).or_insert((e.seq, e.at));
                }
            }
            EventKind::ActionSkipped { action_id, .. } => {
                o.skipped.insert(action_id.clone());
                o.finished.entry(action_id.clone()).or_insert((e.seq, e.at));
            }
            EventKind::ActionFailed {
                action_id,
                rollback: false,
                will_retry: false,
                ..
            } => {
                o.failed.insert(action_id.clone());
                if model.node(action_id).continues() {
                    o.finished.entry(action_id.clone()).or_insert((e.seq, e.at));
                }
            }
            _ => {}
        }
    }
    o
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(check_case(case))
}

async fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let model = Model::build(case);
    let yaml = &model.yaml;
    // The clock starts now; the paused runtime does not move while the catalog loads.
    let t0 = tokio::time::Instant::now();
    let h = harness_with(
        &[("prop", yaml)],
        EngineConfig {
            // Every action targets `plugin:test`: keep the breaker out of the model.
            breakers: BreakerConfig {
                failure_threshold: 10_000,
                open_for: Duration::from_secs(1),
            },
            ..EngineConfig::default()
        },
    );
    let to_clock = |at: tokio::time::Instant| {
        base() + chrono::Duration::from_std(at - t0).expect("small duration")
    };
    let r = h
        .engine
        .submit(&dev(), "prop", &json!({}), SubmitOptions::default())
        .await
        .map_err(|e| TestCaseError::fail(format!("submit: {e}\n{yaml}")))?;
    match case.approval {
        Approval::None => prop_assert_eq!(r.state, RequestState::Queued),
        Approval::Approve => {
            prop_assert_eq!(r.state, RequestState::AwaitingApproval);
            let a = h.engine.approve(&lead(), &r.id, None).await.unwrap();
            prop_assert_eq!(a.state, RequestState::Queued);
        }
        Approval::Reject => {
            prop_assert_eq!(r.state, RequestState::AwaitingApproval);
            let a = h.engine.reject(&lead(), &r.id, "no").await.unwrap();
            prop_assert_eq!(a.state, RequestState::Rejected);
        }
    }

    // Run, with a cancellation while the worker holds the request.
    let mut accepted_cancel = false;
    let crashed = matches!(case.interrupt, Interrupt::Crash(_));
    match case.interrupt {
        Interrupt::None => {
            h.engine.run_until_idle("w1").await.unwrap();
        }
        Interrupt::Crash(ms) => {
            let engine = h.engine.clone();
            let worker = tokio::spawn(async move { engine.run_until_idle("doomed").await });
            tokio::time::sleep(Duration::from_millis(ms)).await;
            worker.abort();
            let _ = worker.await;
            tokio::time::sleep(EngineConfig::default().lease + Duration::from_secs(1)).await;
            h.engine.run_until_idle("w1").await.unwrap();
        }
        Interrupt::Cancel(ms) => {
            let engine = h.engine.clone();
            let worker = tokio::spawn(async move { engine.run_until_idle("w1").await });
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let before = h.store.get(&r.id).await.unwrap().unwrap().state;
            match h.engine.cancel(&dev(), &r.id, Some("stop".into())).await {
                Ok(c) => {
                    prop_assert!(!before.is_terminal(), "cancel accepted on {before}");
                    accepted_cancel = true;
                    prop_assert!(
                        c.state == RequestState::Cancelled || c.cancel_requested,
                        "an accepted cancel ends or marks the request"
                    );
                }
                Err(e) => prop_assert!(before.is_terminal(), "cancel refused on {before}: {e}"),
            }
            worker.await.unwrap().unwrap();
        }
    }

    // (c) terminal, nothing left.
    prop_assert_eq!(h.engine.run_until_idle("w2").await.unwrap(), 0);
    let done = h.store.get(&r.id).await.unwrap().unwrap();
    prop_assert!(done.state.is_terminal(), "ended in {}\n{yaml}", done.state);
    if accepted_cancel {
        prop_assert!(
            matches!(done.state, RequestState::Cancelled | RequestState::Failed),
            "an accepted cancel is honoured (unless a failure came first): {}\n{yaml}",
            done.state
        );
    }

    let events = h.store.events(&r.id, 0, 0).await.unwrap();
    let journal = h.store.attempts(&r.id).await.unwrap();
    let calls = h.ledger.calls();
    let o = observe(&model, &events);

    // (f) state changes follow the lifecycle.
    prop_assert_eq!(
        o.states.first().copied(),
        Some((None, RequestState::Submitted))
    );
    for w in o.states.windows(2) {
        let (prev_to, (from, to)) = (w[0].1, w[1]);
        prop_assert_eq!(from, Some(prev_to), "state changes chain");
        prop_assert!(
            prev_to.can_transition_to(to),
            "illegal {} -> {}",
            prev_to,
            to
        );
    }
    prop_assert_eq!(o.states.last().map(|s| s.1), Some(done.state));

    // (a) dependencies finish before their dependents start.
    for n in &model.nodes {
        let Some(starts) = o.started.get(&n.id) else {
            continue;
        };
        let (first_seq, first_at) = starts[0];
        let first_journal = journal
            .iter()
            .find(|a| a.action_id == n.id && !a.rollback)
            .map(|a| a.started_at);
        prop_assert_eq!(first_journal, Some(first_at), "journal of {}", &n.id);
        for d in &n.deps {
            let Some(&(seq, at)) = o.finished.get(d) else {
                return Err(TestCaseError::fail(format!(
                    "{} started but its dependency {d} never finished\n{yaml}",
                    n.id
                )));
            };
            prop_assert!(seq < first_seq, "{} started before {} finished", &n.id, d);
            // A dead worker's attempt stays `Running` in the journal; it finished nothing.
            for a in journal.iter().filter(|a| {
                &a.action_id == d && !a.rollback && a.outcome != AttemptOutcome::Running
            }) {
                prop_assert!(
                    a.finished_at.is_some_and(|f| f <= first_at),
                    "attempt {} of {} still ran when {} started",
                    a.attempt,
                    d,
                    &n.id
                );
            }
            for c in calls.iter().filter(|c| c.action == n.id && !c.rollback) {
                prop_assert!(
                    to_clock(c.at) >= at,
                    "{} called before {} finished",
                    &n.id,
                    d
                );
            }
        }
        prop_assert!(
            starts.len() as u32 <= MAX_ATTEMPTS + u32::from(crashed),
            "{} attempts of {}",
            starts.len(),
            &n.id
        );
    }

    prop_assert!(
        crashed || journal.iter().all(|a| a.outcome != AttemptOutcome::Running),
        "only a dead worker leaves attempts running"
    );

    // (b) at most one effect per idempotency key.
    for (key, count) in h.ledger.effects() {
        prop_assert!(count <= 1, "{count} effects under {key}");
        prop_assert!(key.starts_with(&format!("pao-{}-", r.id)), "{}", key);
    }
    for c in &calls {
        let want = if c.rollback {
            format!("pao-{}-{}-rollback", r.id, c.action)
        } else {
            format!("pao-{}-{}", r.id, c.action)
        };
        prop_assert_eq!(&c.key, &want);
    }

    // (e) outcomes agree with the model.
    let would_fail = model
        .nodes
        .iter()
        .any(|n| n.raw.when && n.fails() && !n.continues());
    let expected_rolled_back = |filter: &dyn Fn(&Node) -> bool| -> Vec<String> {
        o.succeeded
            .iter()
            .rev()
            .filter(|id| filter(model.node(id)))
            .cloned()
            .collect()
    };
    // A resumed worker knows the completion order only from the journal's timestamps: among
    // actions that finished at the same instant, any order is a reverse completion order.
    let finished_at = |id: &str| {
        journal
            .iter()
            .find(|a| {
                a.action_id == id
                    && !a.rollback
                    && matches!(a.outcome, AttemptOutcome::Succeeded { .. })
            })
            .and_then(|a| a.finished_at)
    };
    let same_rollback = |actual: &[String], want: &[String]| -> Result<(), TestCaseError> {
        if !crashed {
            prop_assert_eq!(actual, want, "rollback\n{}", yaml);
            return Ok(());
        }
        let (mut a, mut w) = (actual.to_vec(), want.to_vec());
        a.sort();
        w.sort();
        prop_assert_eq!(a, w, "rolled back after a crash\n{}", yaml);
        for pair in actual.windows(2) {
            prop_assert!(
                finished_at(&pair[0]) >= finished_at(&pair[1]),
                "{} finished before {} but was undone first\n{}",
                &pair[0],
                &pair[1],
                yaml
            );
        }
        Ok(())
    };
    match done.state {
        RequestState::Rejected => {
            prop_assert_eq!(case.approval, Approval::Reject);
            prop_assert!(calls.is_empty() && journal.is_empty());
        }
        RequestState::Completed => {
            // A crash can cost an attempt; the model then does not know the outcome.
            prop_assert!(
                crashed || !would_fail,
                "completed although an action must fail\n{yaml}"
            );
            for n in &model.nodes {
                if !n.raw.when {
                    prop_assert!(o.skipped.contains(&n.id), "{} not skipped", &n.id);
                    prop_assert!(!o.started.contains_key(&n.id));
                    continue;
                }
                let last = journal
                    .iter()
                    .rev()
                    .find(|a| a.action_id == n.id && !a.rollback)
                    .map(|a| &a.outcome);
                let ok = matches!(last, Some(AttemptOutcome::Succeeded { .. }))
                    || (matches!(last, Some(AttemptOutcome::Failed { .. })) && n.continues());
                prop_assert!(
                    ok,
                    "{} ended {:?} in a completed request\n{}",
                    &n.id,
                    last,
                    yaml
                );
                if !crashed {
                    prop_assert_eq!(o.succeeded.contains(&n.id), !n.fails());
                }
            }
            prop_assert!(o.rolled_back.is_empty());
            prop_assert_eq!(done.rollback, RollbackStatus::None);
        }
        RequestState::Failed => {
            prop_assert!(
                crashed || would_fail,
                "failed although every action passes\n{yaml}"
            );
            let error = done.error.clone().unwrap_or_default();
            let culprit = error
                .strip_prefix("post-fulfillment: ")
                .unwrap_or(&error)
                .strip_prefix("action `")
                .and_then(|s| s.split('`').next())
                .map(|id| model.node(id).clone());
            let Some(culprit) = culprit else {
                return Err(TestCaseError::fail(format!("unexpected error {error}")));
            };
            prop_assert!(culprit.fails() && !culprit.continues());
            prop_assert!(o.failed.contains(&culprit.id));
            // Post-fulfillment failures do not roll back the main actions.
            let want = if culprit.raw.policy.rolls_back() && !culprit.post {
                expected_rolled_back(&|_| true)
            } else {
                Vec::new()
            };
            // A subset of the completed actions, in reverse completion order: all of them.
            same_rollback(&o.rolled_back, &want)?;
            // The ledger agrees (a rollback cut short by a crash is called again).
            let mut ledger_rb: Vec<String> = calls
                .iter()
                .filter(|c| c.rollback)
                .map(|c| c.action.clone())
                .collect();
            ledger_rb.dedup();
            same_rollback(&ledger_rb, &want)?;
            prop_assert_eq!(
                done.rollback,
                if want.is_empty() {
                    RollbackStatus::None
                } else {
                    RollbackStatus::Complete
                }
            );
        }
        RequestState::Cancelled => {
            prop_assert!(matches!(case.interrupt, Interrupt::Cancel(_)));
            // Completed actions whose policy is rollback are undone, newest first; once in
            // post-fulfillment, the main actions stand.
            let in_post = o
                .states
                .iter()
                .any(|s| s.1 == RequestState::PostFulfillment);
            let want = if in_post {
                Vec::new()
            } else {
                expected_rolled_back(&|n| n.raw.policy.rolls_back())
            };
            same_rollback(&o.rolled_back, &want)?;
        }
        other => prop_assert!(false, "not terminal: {other}"),
    }
    // No action runs to success twice, crash or not.
    let mut seen = BTreeSet::new();
    for id in &o.succeeded {
        prop_assert!(seen.insert(id.clone()), "{} succeeded twice", id);
    }

    // (g) parallel groups respect max_concurrency (a dead worker's attempts never end: they
    // stopped running when the worker died).
    let dead: BTreeSet<(String, u32)> = journal
        .iter()
        .filter(|a| !a.rollback && a.outcome == AttemptOutcome::Running)
        .map(|a| (a.action_id.clone(), a.attempt))
        .collect();
    for (gid, max, members) in &model.groups {
        let Some(max) = max else { continue };
        let mut running = 0i64;
        for e in &events {
            match &e.kind {
                EventKind::ActionStarted {
                    action_id,
                    attempt,
                    rollback: false,
                    ..
                } if members.contains(action_id)
                    && !dead.contains(&(action_id.clone(), *attempt)) =>
                {
                    running += 1;
                    prop_assert!(running <= i64::from(*max), "{gid}: {running} > {max}");
                }
                EventKind::ActionSucceeded {
                    action_id,
                    rollback: false,
                    ..
                }
                | EventKind::ActionFailed {
                    action_id,
                    rollback: false,
                    ..
                } if members.contains(action_id) => running -= 1,
                _ => {}
            }
        }
    }

    // (d) terminal states absorb.
    let n_events = events.len();
    prop_assert!(h.engine.cancel(&dev(), &r.id, None).await.is_err());
    prop_assert!(h.engine.approve(&lead(), &r.id, None).await.is_err());
    prop_assert!(
        h.engine
            .resolve_manual(&r.id, ManualOutcome::Completed, "jira")
            .await
            .is_err()
    );
    prop_assert!(
        h.engine
            .resolve_manual(&r.id, ManualOutcome::Failed("x".into()), "jira")
            .await
            .is_err()
    );
    let after = h.store.get(&r.id).await.unwrap().unwrap();
    prop_assert_eq!(after.state, done.state);
    prop_assert_eq!(h.store.events(&r.id, 0, 0).await.unwrap().len(), n_events);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_items_keep_the_engine_invariants(case in case()) {
        run_case(&case)?;
    }
}

/// Found by the property above: a worker whose future is dropped (its task aborted, or a
/// `select!` on shutdown) left its heartbeat task running, renewing the lease forever, so no
/// other worker could ever take the request over.
#[tokio::test(start_paused = true)]
async fn a_dropped_worker_stops_renewing_its_lease() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: {} }
  post_fulfillment:
    - { id: p, type: "plugin:test", config: { sleep_ms: 60000 } }
"#;
    let h = harness(&[("crash", item)]);
    let r = h
        .engine
        .submit(&dev(), "crash", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    let engine = h.engine.clone();
    let worker = tokio::spawn(async move { engine.run_until_idle("doomed").await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.abort();
    let _ = worker.await;
    // Real time passes: a leftover heartbeat would renew the lease every 10 s.
    tokio::time::sleep(EngineConfig::default().lease + Duration::from_secs(1)).await;
    assert_eq!(
        h.engine.run_until_idle("w2").await.unwrap(),
        1,
        "the dead worker's lease ran out"
    );
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RequestState::Completed);
    assert_eq!(h.ledger.executed(), vec!["a", "p", "p"]);
}

/// Runs `item` with a worker that dies after `crash_after`, then lets the lease run out and
/// has a second worker resume it. `cancel_after` cancels the request first.
async fn crash_and_resume(
    item: &str,
    cancel_after: Option<Duration>,
    crash_after: Duration,
) -> (Harness, pao_core::store::Request) {
    let h = harness(&[("crash", item)]);
    let r = h
        .engine
        .submit(&dev(), "crash", &json!({}), SubmitOptions::default())
        .await
        .unwrap();
    let engine = h.engine.clone();
    let worker = tokio::spawn(async move { engine.run_until_idle("doomed").await });
    let start = tokio::time::Instant::now();
    if let Some(after) = cancel_after {
        tokio::time::sleep(after).await;
        h.engine.cancel(&dev(), &r.id, None).await.unwrap();
    }
    tokio::time::sleep_until(start + crash_after).await;
    worker.abort();
    let _ = worker.await;
    tokio::time::sleep(EngineConfig::default().lease + Duration::from_secs(1)).await;
    assert_eq!(h.engine.run_until_idle("w2").await.unwrap(), 1);
    let r = h.store.get(&r.id).await.unwrap().unwrap();
    (h, r)
}

/// Found by the property above: a worker that died while rolling back left a request that
/// the next worker re-ran from the start of its journal: it executed the rolled-back actions
/// again (two effects under one idempotency key), re-ran failed actions (which could then
/// pass and complete a half-undone request), and re-ran an action that had failed with
/// `on_failure: continue`.
#[tokio::test(start_paused = true)]
async fn a_crash_during_rollback_resumes_the_rollback() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: { sleep_ms: 10 } }
    - { id: x, type: "plugin:test", config: { fail: permanent }, on_failure: continue }
    - { id: b, type: "plugin:test", config: { sleep_ms: 10 } }
    - { id: c, type: "plugin:test", config: { fail: retryable }, retry: { max_attempts: 1 } }
"#;
    // a 0-10 ms, x fails, b 10-20, c fails at 20; rollback of b 20-30, of a 30-40: the worker
    // dies while `a` is being undone.
    let (h, r) = crash_and_resume(item, None, Duration::from_millis(35)).await;
    assert_eq!(r.state, RequestState::Failed);
    assert!(r.error.unwrap().contains("action `c` failed"));
    assert_eq!(r.rollback, RollbackStatus::Complete);
    assert_eq!(
        h.ledger.executed(),
        vec!["a", "x", "b", "c"],
        "nothing ran twice"
    );
    assert_eq!(
        h.ledger.rolled_back(),
        vec!["b", "a", "a"],
        "b was undone once; a's cut-short rollback runs again"
    );
    assert!(h.ledger.effects().values().all(|&n| n == 1));
}

/// Found by the property above: a worker that died while rolling back a cancelled request
/// left the rest of the rollback undone, and the request `Cancelled` with its rollback
/// `in_progress` for ever.
#[tokio::test(start_paused = true)]
async fn a_crash_during_a_cancellation_finishes_its_rollback() {
    let item = r#"fulfillment:
  mode: automated
  actions:
    - { id: a, type: "plugin:test", config: { sleep_ms: 10 } }
    - { id: b, type: "plugin:test", config: { sleep_ms: 10 } }
    - { id: c, type: "plugin:test", config: { sleep_ms: 60000 } }
"#;
    // Cancelled at 30 ms while c runs; rollback of b 30-40, of a 40-50: the worker dies at 45.
    let (h, r) = crash_and_resume(
        item,
        Some(Duration::from_millis(30)),
        Duration::from_millis(45),
    )
    .await;
    assert_eq!(r.state, RequestState::Cancelled);
    assert_eq!(r.rollback, RollbackStatus::Complete);
    assert_eq!(h.ledger.executed(), vec!["a", "b", "c"]);
    assert_eq!(h.ledger.rolled_back(), vec!["b", "a", "a"]);
}
