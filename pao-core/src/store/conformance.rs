//! The conformance suite every [`Store`](super::Store) implementation must pass. Call
//! [`run_all`] from an async test with a factory that returns a fresh, empty store.
//!
//! This is River's `riverdrivertest` idea: the contract written in the doc comments of
//! [`Store`] is checked once, here, and the in-memory store, the SQLite store and the
//! PostgreSQL store all run the same checks. A backend that passes them can sit under the
//! engine; a behaviour the engine relies on that is not checked here is a gap in this file.
//!
//! Each check is also public on its own (`check_*`, taking `&dyn Store`), so a backend can run
//! them as separate tests and see failures by name. Every check expects a fresh, empty store.
//! A failed check panics with a message naming the operation and what was expected.
//!
//! The checks use fixed timestamps (2026-01-01T00:00:00Z plus whole seconds), never the wall
//! clock. On a store that judges leases by the caller's clock ([`LeaseClock::Caller`]) leases
//! therefore expire exactly when a check says they do. A store with its own clock
//! ([`LeaseClock::Store`], a database's) ignores those times for leases: there a lease the
//! checks let run out is renewed for zero seconds by its holder (which ends it at the store's
//! now), and the lease ends a store reports are compared with the test host's clock, within
//! [`CLOCK_TOLERANCE`] (the test database must keep the host's time). The only real time spent
//! is in [`check_wait_for_work_returns`], which waits 50 ms.
//!
//! The races (two transitions, two reservations, two submissions with one key) run both calls
//! with `tokio::join!` on one task: they interleave at every `.await` inside the backend, so a
//! backend that reads in one round trip and writes in another, outside one transaction or
//! without a conditional write, loses them. On the in-memory store each call completes without
//! yielding, so there they only check the outcome, not the locking.
//!
//! ```
//! use pao_core::store::{conformance, MemoryStore};
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//! rt.block_on(conformance::run_all(|| async { MemoryStore::new() }));
//! ```
//!
//! What is checked, by area:
//! - submission: the first event, idempotency by key (also under a race), duplicate ids;
//! - transitions: atomic with their event, `Conflict` on a stale `from` (one winner in a race),
//!   `Illegal` for what the lifecycle forbids, terminal states absorb, `NotFound`;
//! - events: per-request sequence from 1, paging with `after_seq` and `limit`, every
//!   [`EventKind`] round-trips;
//! - claims and leases: what is claimable, priority then age, fencing tokens, stale workers
//!   refused with `LeaseLost` on every write, heartbeat, release, terminal states drop the
//!   lease, `waiting_for` parks a request, a lease fences only its own request, leases end by
//!   the clock the store names (workers with skewed clocks take no live lease), the request
//!   waiting for a ticket (`request_waiting_for`);
//! - the attempt journal, listing with filters and keyset pagination, approvals, quotas (also
//!   under a race, with absurd amounts, and limits set with their audit record all or nothing),
//!   audit (newest first, paged by id), [`RequestPatch`], `wait_for_work`.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{
    ApprovalDecision, AttemptOutcome, AttemptRecord, AuditRecord, CompletionTimes, Event,
    EventKind, Lease, LeaseClock, LoggedAudit, NewRequest, QuotaUsage, Request, RequestFilter,
    RequestPatch, RollbackStatus, SealedSecrets, StateChange, StateCount, StatsScope, Store,
    StoreError, Write,
};
use crate::action::{ActionError, ActionOutput, ErrorClass, IdempotencyKey};
use crate::authz::Principal;
use crate::lifecycle::{IllegalTransition, RequestState as State};

/// The lease every check asks for.
const LEASE: Duration = Duration::from_secs(30);

/// How far a lease end reported by a store with its own clock may be from the test host's
/// clock at the call plus the lease.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(1);

/// Calls `$callback!(check_a, check_b, ...)` with every check of the suite, so a backend's
/// test file can generate one named test per check without repeating the list:
///
/// ```ignore
/// macro_rules! checks {
///     ($($check:ident),*) => { $( #[tokio::test] async fn $check() {
///         pao_core::store::conformance::$check(&MyStore::new()).await;
///     } )* };
/// }
/// pao_core::for_each_conformance_check!(checks);
/// ```
#[macro_export]
macro_rules! for_each_conformance_check {
    ($callback:ident) => {
        $callback!(
            check_submit_creates_request_and_first_event,
            check_submit_idempotent_by_key,
            check_submit_distinct_keys,
            check_submit_duplicate_id_refused,
            check_submit_concurrent_same_key,
            check_transition_appends_event,
            check_transition_conflict,
            check_transition_concurrent_one_wins,
            check_transition_illegal_changes_nothing,
            check_terminal_states_absorb,
            check_not_found,
            check_events_sequence_and_paging,
            check_events_round_trip_every_kind,
            check_claim_only_runnable,
            check_claim_priority_then_age,
            check_claim_blocked_until_lease_expires,
            check_stale_lease_writes_refused,
            check_heartbeat_extends,
            check_release_makes_claimable,
            check_terminal_transition_drops_lease,
            check_waiting_for_not_claimable,
            check_request_waiting_for,
            check_held_requests,
            check_lease_fences_only_its_request,
            check_lease_clock,
            check_attempts_journal,
            check_finish_unknown_attempt,
            check_list_filters,
            check_list_pagination,
            check_approvals,
            check_quotas,
            check_quota_concurrent_reservations,
            check_quota_huge_amount,
            check_quota_huge_limit,
            check_set_quota_limits,
            check_audit,
            check_audit_newest_first_with_cursor,
            check_request_stats,
            check_pending_approvals,
            check_approvals_due,
            check_update_patch,
            check_wait_for_work_returns,
            check_apply_commits_a_batch,
            check_apply_all_or_nothing,
            check_apply_fenced,
            check_apply_worker_batches_all_or_nothing,
            check_apply_concurrent_batches_number_events,
            check_apply_then_claim,
            check_submit_with_admits_in_one_write,
            check_submit_with_all_or_nothing,
            check_submit_with_quota_counts_earlier_requests,
            check_submit_with_default_quota_limit,
            check_item_definitions,
            check_sealed_values,
            check_purge,
            check_parked_requests,
            check_plugin_kv,
        );
    };
}

/// Runs every check, each on a fresh store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: Store,
{
    macro_rules! run {
        ($($check:ident),* $(,)?) => {
            $(
                {
                    let store = make().await;
                    // Shown by the test harness only when the check fails.
                    eprintln!("store conformance: {}", stringify!($check));
                    $check(&store).await;
                }
            )*
        };
    }
    crate::for_each_conformance_check!(run);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The fixed base time plus `secs` seconds.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("the fixed base time parses")
        .with_timezone(&Utc)
        + chrono::Duration::seconds(secs)
}

fn new_request(id: &str) -> NewRequest {
    NewRequest {
        id: id.to_string(),
        item_id: "postgres-database".to_string(),
        item_version: "1.2.0".to_string(),
        item_hash: "sha256:0123abcd".to_string(),
        fields: json!({ "name": id, "size": "small", "tags": ["a", "b"] }),
        requester: Principal::new("ada", &["team-a"], &["developer"]),
        team: "team-a".to_string(),
        environment: Some("dev".to_string()),
        priority: 0,
        idempotency_key: None,
        correlation_id: format!("corr-{id}"),
        retry_of: None,
        cost: None,
    }
}

fn change(actor: &str, reason: Option<&str>, at: DateTime<Utc>) -> StateChange {
    StateChange {
        actor: actor.to_string(),
        reason: reason.map(str::to_string),
        at,
    }
}

fn attempt(
    request_id: &str,
    action_id: &str,
    rollback: bool,
    attempt: u32,
    started_at: DateTime<Utc>,
) -> AttemptRecord {
    AttemptRecord {
        request_id: request_id.to_string(),
        action_id: action_id.to_string(),
        rollback,
        attempt,
        idempotency_key: if rollback {
            IdempotencyKey::for_rollback(request_id, action_id)
        } else {
            IdempotencyKey::for_action(request_id, action_id)
        },
        input_hash: format!("sha256:{action_id}-{attempt}-{rollback}"),
        input: json!({ "action": action_id, "attempt": attempt, "nested": { "n": 1.5 } }),
        started_at,
        finished_at: None,
        outcome: AttemptOutcome::Running,
    }
}

fn log(message: &str) -> EventKind {
    EventKind::Log {
        action_id: None,
        level: "info".to_string(),
        message: message.to_string(),
    }
}

#[track_caller]
fn ok<T>(what: &str, result: Result<T, StoreError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e} ({e:?})"),
    }
}

#[track_caller]
fn expect_lease_lost<T: Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::LeaseLost(_)) => {}
        other => panic!("{what}: expected StoreError::LeaseLost, got {other:?}"),
    }
}

#[track_caller]
fn expect_not_found<T: Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("{what}: expected StoreError::NotFound, got {other:?}"),
    }
}

#[track_caller]
fn expect_duplicate<T: Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Duplicate(_)) => {}
        other => panic!("{what}: expected StoreError::Duplicate, got {other:?}"),
    }
}

/// Submits as `ada`, expecting a new request.
async fn submit(store: &dyn Store, new: NewRequest, at: DateTime<Utc>) -> Request {
    let id = new.id.clone();
    let submitted = ok(&format!("submit {id}"), store.submit(new, "ada", at).await);
    assert!(
        submitted.created,
        "submit {id}: a first submission must report created=true"
    );
    assert_eq!(submitted.request.id, id, "submit {id}: returned another id");
    submitted.request
}

async fn get(store: &dyn Store, id: &str) -> Request {
    match ok(&format!("get {id}"), store.get(id).await) {
        Some(r) => r,
        None => panic!("get {id}: the request is missing"),
    }
}

async fn all_events(store: &dyn Store, id: &str) -> Vec<Event> {
    ok(&format!("events of {id}"), store.events(id, 0, 0).await)
}

/// A transition without a lease, by `system`.
async fn step(store: &dyn Store, id: &str, from: State, to: State, at: DateTime<Utc>) -> Request {
    ok(
        &format!("transition {id} {from} -> {to}"),
        store
            .transition(id, from, to, change("system", None, at), None)
            .await,
    )
}

/// Submitted → Prerequisites → Validation → Queued.
async fn queue(store: &dyn Store, id: &str, at: DateTime<Utc>) -> Request {
    step(store, id, State::Submitted, State::Prerequisites, at).await;
    step(store, id, State::Prerequisites, State::Validation, at).await;
    step(store, id, State::Validation, State::Queued, at).await
}

/// Asserts that `lease`, taken or renewed for `lease_for` by a call at `now` that the test
/// host saw run from `before` to `after`, ends when the store's lease clock says it must.
#[track_caller]
fn assert_lease_ends(
    store: &dyn Store,
    what: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    lease_for: Duration,
    (before, after): (DateTime<Utc>, DateTime<Utc>),
) {
    let length = chrono::Duration::from_std(lease_for).expect("a short lease");
    match store.lease_clock() {
        LeaseClock::Caller => assert_eq!(
            lease.expires_at,
            now + length,
            "{what}: a lease taken at {now} for {lease_for:?} must end then"
        ),
        LeaseClock::Store => {
            let slack = chrono::Duration::from_std(CLOCK_TOLERANCE).expect("a short tolerance");
            let (from, to) = (before + length - slack, after + length + slack);
            assert!(
                from <= lease.expires_at && lease.expires_at <= to,
                "{what}: the store's clock decides, so a lease for {lease_for:?} taken between \
                 {before} and {after} must end between {from} and {to}, not at {} (the caller \
                 passed now = {now})",
                lease.expires_at
            );
        }
    }
}

/// Lets `lease` run out, as the crash of its worker would, before a call at `at`. A store that
/// judges leases by the caller's clock needs nothing: `at` must be past the lease's end
/// (checked). A store with its own clock, which no `now` moves, has the holder renew the lease
/// for zero seconds, which ends it at the store's now. Nobody takes it over: it still fences.
async fn lapse(store: &dyn Store, lease: &Lease, at: DateTime<Utc>) {
    match store.lease_clock() {
        LeaseClock::Caller => assert!(
            lease.expires_at <= at,
            "check bug: the lease of {} ends at {}, after {at}",
            lease.request_id,
            lease.expires_at
        ),
        LeaseClock::Store => {
            ok(
                &format!(
                    "end the lease of {} by a zero-second heartbeat",
                    lease.request_id
                ),
                store.heartbeat(lease, Duration::ZERO, at).await,
            );
        }
    }
}

async fn must_claim(store: &dyn Store, worker: &str, now: DateTime<Utc>) -> (Request, Lease) {
    let before = Utc::now();
    let claimed = store.claim(worker, LEASE, now).await;
    let after = Utc::now();
    match ok(&format!("claim by {worker} at {now}"), claimed) {
        Some((request, lease)) => {
            assert_eq!(
                lease.request_id, request.id,
                "claim by {worker}: the lease names another request"
            );
            assert_eq!(
                lease.worker_id, worker,
                "claim by {worker}: the lease names another worker"
            );
            assert_lease_ends(
                store,
                &format!("claim by {worker}"),
                &lease,
                now,
                LEASE,
                (before, after),
            );
            (request, lease)
        }
        None => panic!("claim by {worker} at {now}: expected a claimable request, got none"),
    }
}

async fn must_not_claim(store: &dyn Store, worker: &str, now: DateTime<Utc>, why: &str) {
    let got = ok(
        &format!("claim by {worker} at {now}"),
        store.claim(worker, LEASE, now).await,
    );
    if let Some((request, lease)) = got {
        panic!(
            "claim by {worker} at {now}: expected nothing claimable ({why}), got {} in {} (token {})",
            request.id, request.state, lease.token
        );
    }
}

/// A worker's first batch for a claimed, queued request: the move to `InProgress` and the
/// start of attempt 1 of `action`, under `lease`. Returns the running attempt.
async fn start_first_attempt(
    store: &dyn Store,
    lease: &Lease,
    action: &str,
    at: DateTime<Utc>,
) -> AttemptRecord {
    let id = &lease.request_id;
    let running = attempt(id, action, false, 1, at);
    ok(
        &format!("start {action} of {id}"),
        store
            .apply(
                id,
                Some(lease),
                vec![
                    Write::Transition {
                        from: State::Queued,
                        to: State::InProgress,
                        change: change(&format!("worker:{}", lease.worker_id), None, at),
                    },
                    Write::StartAttempt(running.clone()),
                ],
            )
            .await,
    );
    running
}

/// Queues `id`, claims it as `worker` and moves it to `InProgress` under the lease.
async fn run(store: &dyn Store, id: &str, worker: &str, at: DateTime<Utc>) -> Lease {
    queue(store, id, at).await;
    let (request, lease) = must_claim(store, worker, at).await;
    assert_eq!(
        request.id, id,
        "claim by {worker}: claimed the wrong request"
    );
    ok(
        &format!("transition {id} queued -> in_progress under {worker}'s lease"),
        store
            .transition(
                id,
                State::Queued,
                State::InProgress,
                change(&format!("worker:{worker}"), None, at),
                Some(&lease),
            )
            .await,
    );
    lease
}

async fn list_ids(store: &dyn Store, filter: &RequestFilter) -> Vec<String> {
    ok(&format!("list {filter:?}"), store.list(filter).await)
        .into_iter()
        .map(|r| r.id)
        .collect()
}

async fn usage(store: &dyn Store, team: &str) -> Vec<QuotaUsage> {
    let mut usage = ok(
        &format!("quota usage of {team}"),
        store.quota_usage(team).await,
    );
    usage.sort_by(|a, b| a.resource.cmp(&b.resource));
    usage
}

/// Used amount of one resource; a resource without limit nor reservation may be absent.
async fn used(store: &dyn Store, team: &str, resource: &str) -> u64 {
    usage(store, team)
        .await
        .into_iter()
        .find(|u| u.resource == resource)
        .map_or(0, |u| u.used)
}

fn quota(resource: &str, limit: Option<u64>, used: u64) -> QuotaUsage {
    QuotaUsage {
        resource: resource.to_string(),
        limit,
        used,
    }
}

// ---------------------------------------------------------------------------------------------
// Submission

/// `submit` stores every field, starts in `Submitted` with `created_at == updated_at == now`,
/// and writes exactly one event: `StateChanged { from: None, to: Submitted }` with seq 1.
pub async fn check_submit_creates_request_and_first_event(store: &dyn Store) {
    let mut new = new_request("req-1");
    new.priority = 7;
    new.retry_of = Some("req-0".to_string());
    new.idempotency_key = Some("key-1".to_string());
    new.environment = None;
    new.cost = Some(crate::store::AdmissionCost {
        currency: Some("EUR".to_string()),
        monthly: Some(1234.5),
        one_time: Some(0.0),
        source: crate::store::CostSource::Actions,
        estimates: vec![crate::store::ActionEstimate {
            action_id: "estimate".to_string(),
            result: json!({ "currency": "EUR", "monthly": 1234.5, "lines": [] }),
        }],
        declared: Some(json!({ "currency": "EUR", "monthly": 1200 })),
        problems: vec!["a note".to_string()],
    });
    let submitted = ok("submit", store.submit(new.clone(), "ada", t(0)).await);
    assert!(submitted.created, "submit: a first submission is created");
    let expected = Request {
        id: new.id.clone(),
        item_id: new.item_id.clone(),
        item_version: new.item_version.clone(),
        item_hash: new.item_hash.clone(),
        fields: new.fields.clone(),
        requester: new.requester.clone(),
        team: new.team.clone(),
        environment: None,
        priority: 7,
        idempotency_key: Some("key-1".to_string()),
        correlation_id: new.correlation_id.clone(),
        retry_of: Some("req-0".to_string()),
        state: State::Submitted,
        rollback: RollbackStatus::None,
        error: None,
        approval_due: None,
        escalated: false,
        cancel_requested: false,
        waiting_for: None,
        cost: new.cost.clone(),
        created_at: t(0),
        updated_at: t(0),
    };
    assert_eq!(submitted.request, expected, "submit: the returned request");
    assert_eq!(
        get(store, "req-1").await,
        expected,
        "get after submit: the stored request"
    );
    assert_eq!(
        all_events(store, "req-1").await,
        vec![Event {
            seq: 1,
            request_id: "req-1".to_string(),
            at: t(0),
            correlation_id: "corr-req-1".to_string(),
            kind: EventKind::StateChanged {
                from: None,
                to: State::Submitted,
                actor: "ada".to_string(),
                reason: None,
            },
        }],
        "submit: exactly one first event"
    );
}

/// A second submission with a seen idempotency key returns the stored request (as it is now)
/// with `created == false`, whatever else it carries, and adds no request and no event.
pub async fn check_submit_idempotent_by_key(store: &dyn Store) {
    let mut first = new_request("req-1");
    first.idempotency_key = Some("key-1".to_string());
    let created = submit(store, first.clone(), t(0)).await;

    let mut again = new_request("req-2");
    again.idempotency_key = Some("key-1".to_string());
    again.team = "team-b".to_string();
    again.fields = json!({ "different": true });
    let second = ok(
        "resubmit with a seen key",
        store.submit(again, "bob", t(5)).await,
    );
    assert!(
        !second.created,
        "resubmit with a seen key: created must be false"
    );
    assert_eq!(
        second.request, created,
        "resubmit with a seen key: must return the first request"
    );
    let third = ok(
        "resubmit the same request",
        store.submit(first, "ada", t(6)).await,
    );
    assert!(!third.created, "resubmit the same request: created=false");
    assert_eq!(third.request, created, "resubmit the same request");

    assert_eq!(
        ok("get req-2", store.get("req-2").await),
        None,
        "resubmit with a seen key must not store the new id"
    );
    assert_eq!(
        all_events(store, "req-1").await.len(),
        1,
        "resubmissions must not add events"
    );
    assert_eq!(
        list_ids(store, &RequestFilter::default()).await,
        vec!["req-1".to_string()],
        "resubmissions must not add requests"
    );

    // The key keeps answering after the request moved on, with its current state.
    step(store, "req-1", State::Submitted, State::Prerequisites, t(7)).await;
    let mut later = new_request("req-3");
    later.idempotency_key = Some("key-1".to_string());
    let fourth = ok(
        "resubmit after a transition",
        store.submit(later, "ada", t(8)).await,
    );
    assert!(
        !fourth.created,
        "resubmit after a transition: created=false"
    );
    assert_eq!(
        fourth.request,
        get(store, "req-1").await,
        "resubmit after a transition: returns the request as stored now"
    );
    assert_eq!(fourth.request.state, State::Prerequisites);
}

/// Different keys (or no key and different ids) create different requests.
pub async fn check_submit_distinct_keys(store: &dyn Store) {
    let mut a = new_request("req-a");
    a.idempotency_key = Some("key-a".to_string());
    let mut b = new_request("req-b");
    b.idempotency_key = Some("key-b".to_string());
    submit(store, a, t(0)).await;
    submit(store, b, t(1)).await;
    submit(store, new_request("req-c"), t(2)).await;
    submit(store, new_request("req-d"), t(3)).await;
    let mut ids = list_ids(store, &RequestFilter::default()).await;
    ids.sort();
    assert_eq!(
        ids,
        ["req-a", "req-b", "req-c", "req-d"],
        "four submissions with distinct keys or ids make four requests"
    );
    for id in ["req-a", "req-b", "req-c", "req-d"] {
        assert_eq!(
            all_events(store, id).await.len(),
            1,
            "{id}: one first event"
        );
    }
}

/// A second submission with an existing id and no (or a new) key is `Duplicate`; the stored
/// request is untouched and the failed submission's key stays unbound.
pub async fn check_submit_duplicate_id_refused(store: &dyn Store) {
    let original = submit(store, new_request("req-1"), t(0)).await;

    let mut clash = new_request("req-1");
    clash.fields = json!({ "other": 1 });
    expect_duplicate(
        "submit an existing id without a key",
        store.submit(clash.clone(), "bob", t(1)).await,
    );
    clash.idempotency_key = Some("key-new".to_string());
    expect_duplicate(
        "submit an existing id with a new key",
        store.submit(clash, "bob", t(2)).await,
    );
    assert_eq!(
        get(store, "req-1").await,
        original,
        "a refused duplicate must not change the stored request"
    );
    assert_eq!(
        all_events(store, "req-1").await.len(),
        1,
        "a refused duplicate must not add events"
    );

    let mut fresh = new_request("req-2");
    fresh.idempotency_key = Some("key-new".to_string());
    let got = ok(
        "submit with the key of a refused submission",
        store.submit(fresh, "bob", t(3)).await,
    );
    assert!(
        got.created && got.request.id == "req-2",
        "a refused submission must not bind its idempotency key, got {:?}",
        got.request.id
    );
}

/// Two submissions racing with one key: both succeed, exactly one creates, both return it.
pub async fn check_submit_concurrent_same_key(store: &dyn Store) {
    let mut a = new_request("req-a");
    a.idempotency_key = Some("key-1".to_string());
    let mut b = new_request("req-b");
    b.idempotency_key = Some("key-1".to_string());
    let (ra, rb) = tokio::join!(store.submit(a, "ada", t(0)), store.submit(b, "ada", t(0)));
    let (ra, rb) = (
        ok("racing submit a", ra),
        ok("racing submit b (same key)", rb),
    );
    assert!(
        ra.created != rb.created,
        "racing submissions with one key: exactly one must create (got {} and {})",
        ra.created,
        rb.created
    );
    assert_eq!(
        ra.request.id, rb.request.id,
        "racing submissions with one key must return the same request"
    );
    assert_eq!(
        list_ids(store, &RequestFilter::default()).await,
        vec![ra.request.id.clone()],
        "racing submissions with one key store one request"
    );
}

// ---------------------------------------------------------------------------------------------
// Transitions

/// A transition changes the state and `updated_at` and appends its `StateChanged` event with
/// from, to, actor, reason and time, in the same operation.
pub async fn check_transition_appends_event(store: &dyn Store) {
    let before = submit(store, new_request("req-1"), t(0)).await;
    let after = ok(
        "transition submitted -> prerequisites",
        store
            .transition(
                "req-1",
                State::Submitted,
                State::Prerequisites,
                change("system", Some("checks start"), t(5)),
                None,
            )
            .await,
    );
    let mut expected = before.clone();
    expected.state = State::Prerequisites;
    expected.updated_at = t(5);
    assert_eq!(
        after, expected,
        "transition: only state and updated_at change"
    );
    assert_eq!(get(store, "req-1").await, expected, "get after transition");
    let events = all_events(store, "req-1").await;
    assert_eq!(events.len(), 2, "transition appends exactly one event");
    assert_eq!(
        events[1].kind,
        EventKind::StateChanged {
            from: Some(State::Submitted),
            to: State::Prerequisites,
            actor: "system".to_string(),
            reason: Some("checks start".to_string()),
        },
        "transition event"
    );
    assert_eq!(events[1].at, t(5), "transition event time");
    assert!(events[1].seq > events[0].seq, "event seq grows");

    step(
        store,
        "req-1",
        State::Prerequisites,
        State::Validation,
        t(6),
    )
    .await;
    let cancelled = ok(
        "cancel",
        store
            .transition(
                "req-1",
                State::Validation,
                State::Cancelled,
                change("user:ada", Some("not needed"), t(7)),
                None,
            )
            .await,
    );
    assert_eq!(cancelled.state, State::Cancelled);
    let events = all_events(store, "req-1").await;
    let kinds: Vec<_> = events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds[2..],
        [
            EventKind::StateChanged {
                from: Some(State::Prerequisites),
                to: State::Validation,
                actor: "system".to_string(),
                reason: None,
            },
            EventKind::StateChanged {
                from: Some(State::Validation),
                to: State::Cancelled,
                actor: "user:ada".to_string(),
                reason: Some("not needed".to_string()),
            },
        ],
        "one event per transition, in order"
    );
}

/// A transition from a state the request is not in is `Conflict` naming both states, and
/// changes nothing.
pub async fn check_transition_conflict(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    step(store, "req-1", State::Submitted, State::Prerequisites, t(1)).await;
    let before = get(store, "req-1").await;
    let err = store
        .transition(
            "req-1",
            State::Submitted,
            State::Prerequisites,
            change("system", None, t(2)),
            None,
        )
        .await;
    assert_eq!(
        err,
        Err(StoreError::Conflict {
            id: "req-1".to_string(),
            expected: State::Submitted,
            actual: State::Prerequisites,
        }),
        "transition from a state the request left"
    );
    let err = store
        .transition(
            "req-1",
            State::Validation,
            State::Queued,
            change("system", None, t(2)),
            None,
        )
        .await;
    assert_eq!(
        err,
        Err(StoreError::Conflict {
            id: "req-1".to_string(),
            expected: State::Validation,
            actual: State::Prerequisites,
        }),
        "transition from a state the request has not reached"
    );
    assert_eq!(
        get(store, "req-1").await,
        before,
        "a conflict changes nothing"
    );
    assert_eq!(
        all_events(store, "req-1").await.len(),
        2,
        "a conflict adds no event"
    );
}

/// Two transitions racing from the same state: exactly one wins, the other gets `Conflict`
/// naming the winner's state, and exactly one event is written.
pub async fn check_transition_concurrent_one_wins(store: &dyn Store) {
    // Different targets.
    submit(store, new_request("req-1"), t(0)).await;
    step(store, "req-1", State::Submitted, State::Prerequisites, t(1)).await;
    let (a, b) = tokio::join!(
        store.transition(
            "req-1",
            State::Prerequisites,
            State::Validation,
            change("worker:a", None, t(2)),
            None
        ),
        store.transition(
            "req-1",
            State::Prerequisites,
            State::Rejected,
            change("worker:b", Some("quota"), t(2)),
            None
        ),
    );
    assert_one_winner(store, "req-1", a, b, 3).await;

    // The same target.
    submit(store, new_request("req-2"), t(0)).await;
    step(store, "req-2", State::Submitted, State::Prerequisites, t(1)).await;
    let (a, b) = tokio::join!(
        store.transition(
            "req-2",
            State::Prerequisites,
            State::Validation,
            change("worker:a", None, t(2)),
            None
        ),
        store.transition(
            "req-2",
            State::Prerequisites,
            State::Validation,
            change("worker:b", None, t(2)),
            None
        ),
    );
    assert_one_winner(store, "req-2", a, b, 3).await;
}

async fn assert_one_winner(
    store: &dyn Store,
    id: &str,
    a: Result<Request, StoreError>,
    b: Result<Request, StoreError>,
    events: usize,
) {
    let (winner, loser) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        (a, b) => panic!(
            "{id}: two racing transitions from one state: exactly one must win, got {a:?} and {b:?}"
        ),
    };
    assert_eq!(
        loser,
        StoreError::Conflict {
            id: id.to_string(),
            expected: State::Prerequisites,
            actual: winner.state,
        },
        "{id}: the losing transition"
    );
    assert_eq!(
        get(store, id).await.state,
        winner.state,
        "{id}: final state"
    );
    let all = all_events(store, id).await;
    assert_eq!(all.len(), events, "{id}: only the winner writes an event");
    match &all[events - 1].kind {
        EventKind::StateChanged { to, .. } => {
            assert_eq!(*to, winner.state, "{id}: the event is the winner's")
        }
        other => panic!("{id}: expected the winner's StateChanged, got {other:?}"),
    }
}

/// A transition the lifecycle forbids is `Illegal` (with both states) and changes nothing.
pub async fn check_transition_illegal_changes_nothing(store: &dyn Store) {
    let before = submit(store, new_request("req-1"), t(0)).await;
    for to in [
        State::Queued,
        State::Submitted,
        State::InProgress,
        State::Completed,
        State::Rejected,
    ] {
        let got = store
            .transition(
                "req-1",
                State::Submitted,
                to,
                change("system", None, t(1)),
                None,
            )
            .await;
        assert_eq!(
            got,
            Err(StoreError::Illegal(IllegalTransition {
                from: State::Submitted,
                to
            })),
            "transition submitted -> {to} must be refused as illegal"
        );
    }
    assert_eq!(
        get(store, "req-1").await,
        before,
        "an illegal transition changes nothing"
    );
    assert_eq!(
        all_events(store, "req-1").await.len(),
        1,
        "an illegal transition adds no event"
    );
}

/// Nothing leaves `Completed`, `Failed`, `Cancelled` or `Rejected`.
pub async fn check_terminal_states_absorb(store: &dyn Store) {
    let to_in_progress = [
        State::Prerequisites,
        State::Validation,
        State::Queued,
        State::InProgress,
    ];
    let done: Vec<State> = to_in_progress
        .iter()
        .copied()
        .chain([State::Completed])
        .collect();
    let failed: Vec<State> = to_in_progress
        .iter()
        .copied()
        .chain([State::Failed])
        .collect();
    for (id, path) in [
        ("done", done),
        ("failed", failed),
        ("cancelled", vec![State::Cancelled]),
        ("rejected", vec![State::Prerequisites, State::Rejected]),
    ] {
        submit(store, new_request(id), t(0)).await;
        let mut state = State::Submitted;
        for next in path {
            step(store, id, state, next, t(1)).await;
            state = next;
        }
        assert!(state.is_terminal(), "{id}: set-up reaches a terminal state");
        let before = get(store, id).await;
        let events = all_events(store, id).await.len();
        for to in State::ALL {
            let got = store
                .transition(id, state, to, change("system", None, t(2)), None)
                .await;
            assert_eq!(
                got,
                Err(StoreError::Illegal(IllegalTransition { from: state, to })),
                "{id}: transition {state} -> {to} must be refused (terminal states absorb)"
            );
        }
        assert_eq!(
            get(store, id).await,
            before,
            "{id}: terminal state unchanged"
        );
        assert_eq!(
            all_events(store, id).await.len(),
            events,
            "{id}: no events after the end"
        );
    }
}

/// Unknown ids: `get` is `None`; writes are `NotFound`; reads of the journals are empty (or
/// `NotFound`).
pub async fn check_not_found(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    assert_eq!(
        ok("get unknown", store.get("nope").await),
        None,
        "get of an unknown id"
    );
    expect_not_found(
        "transition unknown",
        store
            .transition(
                "nope",
                State::Submitted,
                State::Prerequisites,
                change("system", None, t(1)),
                None,
            )
            .await,
    );
    expect_not_found(
        "update unknown",
        store
            .update(
                "nope",
                RequestPatch {
                    escalated: Some(true),
                    ..RequestPatch::default()
                },
                None,
            )
            .await,
    );
    expect_not_found(
        "append_event unknown",
        store.append_event("nope", t(1), log("x"), None).await,
    );
    expect_not_found(
        "record_decision unknown",
        store
            .record_decision(ApprovalDecision {
                request_id: "nope".to_string(),
                approver: "carol".to_string(),
                approved: true,
                reason: None,
                at: t(1),
            })
            .await,
    );
    match store.events("nope", 0, 0).await {
        Ok(v) if v.is_empty() => {}
        Err(StoreError::NotFound(_)) => {}
        other => panic!("events of an unknown id: expected empty or NotFound, got {other:?}"),
    }
    match store.attempts("nope").await {
        Ok(v) if v.is_empty() => {}
        Err(StoreError::NotFound(_)) => {}
        other => panic!("attempts of an unknown id: expected empty or NotFound, got {other:?}"),
    }
    match store.decisions("nope").await {
        Ok(v) if v.is_empty() => {}
        Err(StoreError::NotFound(_)) => {}
        other => panic!("decisions of an unknown id: expected empty or NotFound, got {other:?}"),
    }
    assert_eq!(
        get(store, "req-1").await.state,
        State::Submitted,
        "writes to unknown ids leave others alone"
    );
}

// ---------------------------------------------------------------------------------------------
// Events

/// Per request, seq starts at 1 and strictly grows; `append_event` returns the stored seq;
/// `after_seq` and `limit` page; every event carries the request id and correlation id.
pub async fn check_events_sequence_and_paging(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    step(store, "req-1", State::Submitted, State::Prerequisites, t(1)).await;
    let mut returned = Vec::new();
    for i in 0..4 {
        returned.push(ok(
            "append_event",
            store
                .append_event("req-1", t(2 + i), log(&format!("line {i}")), None)
                .await,
        ));
    }
    // Another request's stream is its own.
    submit(store, new_request("req-2"), t(3)).await;
    let other = ok(
        "append_event to req-2",
        store.append_event("req-2", t(4), log("other"), None).await,
    );

    let events = all_events(store, "req-1").await;
    assert_eq!(events.len(), 6, "req-1: submit + transition + 4 appended");
    assert_eq!(events[0].seq, 1, "req-1: the first event has seq 1");
    for w in events.windows(2) {
        assert!(
            w[1].seq > w[0].seq,
            "req-1: seq must strictly grow: {} then {}",
            w[0].seq,
            w[1].seq
        );
    }
    let stored: Vec<u64> = events[2..].iter().map(|e| e.seq).collect();
    assert_eq!(stored, returned, "append_event returns the seq it stored");
    for (i, e) in events[2..].iter().enumerate() {
        assert_eq!(e.kind, log(&format!("line {i}")), "appended event {i}");
        assert_eq!(e.at, t(2 + i as i64), "appended event {i} time");
    }
    for e in &events {
        assert_eq!(e.request_id, "req-1", "event {} request id", e.seq);
        assert_eq!(
            e.correlation_id, "corr-req-1",
            "event {} must carry the request's correlation id",
            e.seq
        );
    }

    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let page = |after: u64, limit: usize| store.events("req-1", after, limit);
    let got: Vec<u64> = ok("events after", page(seqs[1], 0).await)
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(got, seqs[2..], "events after seq {}", seqs[1]);
    let got: Vec<u64> = ok("events limit", page(0, 2).await)
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(got, seqs[..2], "events limit 2");
    let got: Vec<u64> = ok("events after + limit", page(seqs[2], 2).await)
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(got, seqs[3..5], "events after seq {} limit 2", seqs[2]);
    assert!(
        ok("events after the last", page(seqs[5], 0).await).is_empty(),
        "events after the last seq"
    );

    let events2 = all_events(store, "req-2").await;
    assert_eq!(events2.len(), 2, "req-2: its own two events");
    assert_eq!(events2[0].seq, 1, "req-2: its stream starts at 1 too");
    assert_eq!(events2[1].seq, other, "req-2: append_event returns the seq");
    assert!(
        events2.iter().all(|e| e.correlation_id == "corr-req-2"),
        "req-2: its own correlation id"
    );
}

/// Every [`EventKind`] is stored and read back unchanged.
pub async fn check_events_round_trip_every_kind(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    let kinds = vec![
        EventKind::ActionStarted {
            action_id: "provision".to_string(),
            action_type: Some("terraform".to_string()),
            attempt: 1,
            rollback: false,
        },
        EventKind::ActionFailed {
            action_id: "provision".to_string(),
            action_type: Some("terraform".to_string()),
            attempt: 1,
            rollback: false,
            class: ErrorClass::Retryable,
            error: "503 from the API".to_string(),
            will_retry: true,
        },
        EventKind::ActionSucceeded {
            action_id: "provision".to_string(),
            action_type: Some("plugin:slack-notify".to_string()),
            attempt: 2,
            rollback: false,
        },
        EventKind::ActionSucceeded {
            action_id: "provision".to_string(),
            action_type: None,
            attempt: 1,
            rollback: true,
        },
        EventKind::ActionSkipped {
            action_id: "notify".to_string(),
            reason: "its `when` was false".to_string(),
        },
        EventKind::Log {
            action_id: Some("provision".to_string()),
            level: "warn".to_string(),
            message: "slow: «ünïcode» ✓".to_string(),
        },
        EventKind::Log {
            action_id: None,
            level: "info".to_string(),
            message: String::new(),
        },
        EventKind::ApprovalDecided {
            approver: "carol".to_string(),
            approved: false,
            reason: Some("too big".to_string()),
        },
        EventKind::Escalated {
            teams: vec!["dba".to_string(), "security".to_string()],
        },
        EventKind::BudgetThreshold {
            team: "team-a".to_string(),
            resource: "vcpus".to_string(),
            percent: 80,
            used: 410,
            limit: 512,
        },
        EventKind::HealthChanged {
            healthy: false,
            url: "https://db-1.example.internal:8008/health".to_string(),
            status: Some(503),
            error: None,
        },
        EventKind::SlaBreached {
            sla: "4h".to_string(),
            elapsed_secs: 14_401,
            ticket: "NET-7".to_string(),
        },
        EventKind::StateChanged {
            from: Some(State::Queued),
            to: State::InProgress,
            actor: "worker:w1".to_string(),
            reason: None,
        },
    ];
    for (i, kind) in kinds.iter().enumerate() {
        ok(
            &format!("append event {i}"),
            store
                .append_event("req-1", t(1 + i as i64), kind.clone(), None)
                .await,
        );
    }
    let got: Vec<EventKind> = all_events(store, "req-1").await[1..]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(got, kinds, "every event kind round-trips");
}

// ---------------------------------------------------------------------------------------------
// Claims and leases

/// Only `Queued` requests, and `InProgress`/`PostFulfillment` ones whose lease expired, are
/// claimable; a lease runs `lease_for` from `now`.
pub async fn check_claim_only_runnable(store: &dyn Store) {
    must_not_claim(store, "w1", t(0), "the store is empty").await;
    for (id, path) in [
        ("submitted", &[][..]),
        ("prereq", &[State::Prerequisites][..]),
        ("validation", &[State::Prerequisites, State::Validation][..]),
        (
            "approval",
            &[
                State::Prerequisites,
                State::Validation,
                State::AwaitingApproval,
            ][..],
        ),
        ("cancelled", &[State::Cancelled][..]),
        ("rejected", &[State::Prerequisites, State::Rejected][..]),
        (
            "completed",
            &[
                State::Prerequisites,
                State::Validation,
                State::Queued,
                State::InProgress,
                State::Completed,
            ][..],
        ),
        (
            "failed",
            &[
                State::Prerequisites,
                State::Validation,
                State::Queued,
                State::InProgress,
                State::Failed,
            ][..],
        ),
    ] {
        submit(store, new_request(id), t(0)).await;
        let mut state = State::Submitted;
        for &next in path {
            step(store, id, state, next, t(1)).await;
            state = next;
        }
    }
    must_not_claim(store, "w1", t(10), "no request is queued").await;

    submit(store, new_request("queued"), t(2)).await;
    queue(store, "queued", t(3)).await;
    let (request, lease) = must_claim(store, "w1", t(100)).await;
    assert_eq!(request.id, "queued", "the only queued request is claimed");
    assert_eq!(
        request.state,
        State::Queued,
        "claim leaves the state as it is"
    );
    must_not_claim(store, "w2", t(101), "the queued request is leased").await;

    // PostFulfillment under a live lease is not claimable; once the lease expired it is.
    for (from, to) in [
        (State::Queued, State::InProgress),
        (State::InProgress, State::PostFulfillment),
    ] {
        ok(
            &format!("transition {from} -> {to} under the lease"),
            store
                .transition(
                    "queued",
                    from,
                    to,
                    change("worker:w1", None, t(102)),
                    Some(&lease),
                )
                .await,
        );
    }
    must_not_claim(store, "w2", t(129), "the post-fulfillment lease is live").await;
    lapse(store, &lease, t(131)).await;
    let (request, second) = must_claim(store, "w2", t(131)).await;
    assert_eq!(request.id, "queued");
    assert_eq!(
        request.state,
        State::PostFulfillment,
        "an expired post-fulfillment request is claimable"
    );
    assert!(
        second.token > lease.token,
        "a new claim's token ({}) must be larger than the earlier one ({})",
        second.token,
        lease.token
    );
    must_not_claim(store, "w3", t(132), "w2 holds it").await;
}

/// Claims go by priority (higher first), then age (older first); not by the order of queueing.
pub async fn check_claim_priority_then_age(store: &dyn Store) {
    for (id, priority, created) in [
        ("e", -1, 1),
        ("a", 0, 2),
        ("b", 5, 3),
        ("c", 5, 4),
        ("d", 0, 5),
    ] {
        let mut new = new_request(id);
        new.priority = priority;
        submit(store, new, t(created)).await;
    }
    for (i, id) in ["d", "c", "b", "a", "e"].into_iter().enumerate() {
        queue(store, id, t(10 + i as i64)).await;
    }
    let mut order = Vec::new();
    for i in 0..5 {
        let (request, _) = must_claim(store, &format!("w{i}"), t(100)).await;
        order.push(request.id);
    }
    assert_eq!(
        order,
        ["b", "c", "a", "d", "e"],
        "claim order must be priority (high first) then age (old first)"
    );
    must_not_claim(store, "w9", t(100), "all five are leased").await;
}

/// A claimed request is not claimable until its lease expires; then another worker claims it
/// with a larger token and the first worker's writes are refused.
pub async fn check_claim_blocked_until_lease_expires(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    queue(store, "req-1", t(1)).await;
    let (_, first) = must_claim(store, "w1", t(10)).await;
    must_not_claim(store, "w2", t(20), "w1's lease is live").await;
    must_not_claim(store, "w2", t(39), "w1's lease is live until t+40").await;
    lapse(store, &first, t(41)).await;
    let (request, second) = must_claim(store, "w2", t(41)).await;
    assert_eq!(request.id, "req-1");
    assert_eq!(
        request.state,
        State::Queued,
        "a crashed worker's queued request is claimed again"
    );
    assert!(
        second.token > first.token,
        "the new token ({}) must be larger than the expired one ({})",
        second.token,
        first.token
    );
    expect_lease_lost(
        "w1 transitions after w2 took over",
        store
            .transition(
                "req-1",
                State::Queued,
                State::InProgress,
                change("worker:w1", None, t(42)),
                Some(&first),
            )
            .await,
    );
    assert_eq!(get(store, "req-1").await.state, State::Queued);
    ok(
        "w2 transitions under its lease",
        store
            .transition(
                "req-1",
                State::Queued,
                State::InProgress,
                change("worker:w2", None, t(42)),
                Some(&second),
            )
            .await,
    );

    // The same worker claiming again after its own lease expired also gets a new token.
    lapse(store, &second, t(80)).await;
    let (_, third) = must_claim(store, "w2", t(80)).await;
    assert!(
        third.token > second.token,
        "a re-claim by the same worker must get a larger token"
    );
    expect_lease_lost(
        "w2's older lease after its own re-claim",
        store.heartbeat(&second, LEASE, t(81)).await,
    );
}

/// Every write under a lease that was taken over is `LeaseLost` and changes nothing; a stale
/// release does not free the new holder's lease.
pub async fn check_stale_lease_writes_refused(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    let stale = run(store, "req-1", "w1", t(1)).await;
    ok(
        "w1 starts attempt 1",
        store
            .start_attempt(&stale, attempt("req-1", "provision", false, 1, t(2)))
            .await,
    );

    lapse(store, &stale, t(100)).await;
    let (request, lease) = must_claim(store, "w2", t(100)).await;
    assert_eq!(
        request.state,
        State::InProgress,
        "an expired in-progress request is claimable"
    );
    assert!(lease.token > stale.token, "the takeover's token is larger");
    let journal = ok("attempts", store.attempts("req-1").await);
    assert_eq!(
        journal,
        vec![attempt("req-1", "provision", false, 1, t(2))],
        "the new worker sees the crashed worker's journal"
    );
    ok(
        "w2 starts attempt 2",
        store
            .start_attempt(&lease, attempt("req-1", "provision", false, 2, t(101)))
            .await,
    );

    let request = get(store, "req-1").await;
    let events = all_events(store, "req-1").await;
    let journal = ok("attempts", store.attempts("req-1").await);

    expect_lease_lost(
        "stale transition",
        store
            .transition(
                "req-1",
                State::InProgress,
                State::Completed,
                change("worker:w1", None, t(102)),
                Some(&stale),
            )
            .await,
    );
    expect_lease_lost(
        "stale update",
        store
            .update(
                "req-1",
                RequestPatch {
                    error: Some("w1 was here".to_string()),
                    ..RequestPatch::default()
                },
                Some(&stale),
            )
            .await,
    );
    expect_lease_lost(
        "stale append_event",
        store
            .append_event("req-1", t(102), log("w1 was here"), Some(&stale))
            .await,
    );
    expect_lease_lost(
        "stale start_attempt",
        store
            .start_attempt(&stale, attempt("req-1", "provision", false, 3, t(102)))
            .await,
    );
    expect_lease_lost(
        "stale finish_attempt of its own attempt",
        store
            .finish_attempt(
                &stale,
                "provision",
                false,
                1,
                AttemptOutcome::Succeeded {
                    output: ActionOutput::new(json!({})),
                    outputs: json!({}),
                },
                t(102),
            )
            .await,
    );
    expect_lease_lost(
        "stale finish_attempt of the new worker's attempt",
        store
            .finish_attempt(
                &stale,
                "provision",
                false,
                2,
                AttemptOutcome::Failed {
                    error: ActionError::permanent("w1 was here"),
                },
                t(102),
            )
            .await,
    );
    expect_lease_lost(
        "stale heartbeat",
        store.heartbeat(&stale, LEASE, t(102)).await,
    );

    assert_eq!(
        get(store, "req-1").await,
        request,
        "refused writes change nothing"
    );
    assert_eq!(
        all_events(store, "req-1").await,
        events,
        "refused writes add no event"
    );
    assert_eq!(
        ok("attempts", store.attempts("req-1").await),
        journal,
        "refused writes leave the journal"
    );

    // A stale release may succeed or fail, but must not free the holder's lease.
    let _ = store.release(&stale).await;
    must_not_claim(
        store,
        "w3",
        t(103),
        "w2 still holds it after w1's stale release",
    )
    .await;
    ok(
        "the holder's heartbeat after a stale release",
        store.heartbeat(&lease, LEASE, t(104)).await,
    );
    ok(
        "the holder's write after a stale release",
        store
            .append_event("req-1", t(104), log("w2 works"), Some(&lease))
            .await,
    );
}

/// A heartbeat moves the expiry to `now + lease_for` and keeps the token; the request stays
/// unclaimable until the new expiry.
pub async fn check_heartbeat_extends(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    queue(store, "req-1", t(0)).await;
    let (_, lease) = must_claim(store, "w1", t(0)).await;
    let before = Utc::now();
    let extended = ok("heartbeat", store.heartbeat(&lease, LEASE, t(20)).await);
    assert_lease_ends(
        store,
        "heartbeat at t+20 for 30 s",
        &extended,
        t(20),
        LEASE,
        (before, Utc::now()),
    );
    assert_eq!(
        extended,
        Lease {
            expires_at: extended.expires_at,
            ..lease.clone()
        },
        "heartbeat: same request, worker and token"
    );
    ok(
        "write under the extended lease",
        store
            .transition(
                "req-1",
                State::Queued,
                State::InProgress,
                change("worker:w1", None, t(21)),
                Some(&extended),
            )
            .await,
    );
    must_not_claim(
        store,
        "w2",
        t(40),
        "the heartbeat extended the lease to t+50",
    )
    .await;
    let before = Utc::now();
    let again = ok(
        "second heartbeat",
        store.heartbeat(&extended, LEASE, t(45)).await,
    );
    assert_lease_ends(
        store,
        "second heartbeat",
        &again,
        t(45),
        LEASE,
        (before, Utc::now()),
    );
    must_not_claim(store, "w2", t(70), "extended again to t+75").await;
    lapse(store, &again, t(76)).await;
    let (_, taken) = must_claim(store, "w2", t(76)).await;
    assert!(taken.token > lease.token);
    expect_lease_lost(
        "heartbeat after a takeover",
        store.heartbeat(&again, LEASE, t(77)).await,
    );
}

/// A release makes the request claimable at once (queued or in progress), with a larger
/// token, and the released lease no longer writes.
pub async fn check_release_makes_claimable(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    queue(store, "req-1", t(0)).await;
    let (_, first) = must_claim(store, "w1", t(1)).await;
    ok("release", store.release(&first).await);
    expect_lease_lost(
        "heartbeat after release",
        store.heartbeat(&first, LEASE, t(2)).await,
    );
    expect_lease_lost(
        "write after release",
        store
            .append_event("req-1", t(2), log("x"), Some(&first))
            .await,
    );
    let (request, second) = must_claim(store, "w2", t(2)).await;
    assert_eq!(request.state, State::Queued, "release keeps the state");
    assert!(second.token > first.token);

    ok(
        "w2 starts work",
        store
            .transition(
                "req-1",
                State::Queued,
                State::InProgress,
                change("worker:w2", None, t(3)),
                Some(&second),
            )
            .await,
    );
    ok("release in progress", store.release(&second).await);
    let (request, third) = must_claim(store, "w3", t(4)).await;
    assert_eq!(
        request.state,
        State::InProgress,
        "a released in-progress request is claimable at once"
    );
    assert!(third.token > second.token);
}

/// Moving to a terminal state under a lease ends the lease: it no longer heartbeats and the
/// request is never claimed again.
pub async fn check_terminal_transition_drops_lease(store: &dyn Store) {
    for (id, end) in [("done", State::Completed), ("failed", State::Failed)] {
        submit(store, new_request(id), t(0)).await;
        let lease = run(store, id, "w1", t(1)).await;
        ok(
            &format!("{id}: terminal transition under the lease"),
            store
                .transition(
                    id,
                    State::InProgress,
                    end,
                    change("worker:w1", None, t(2)),
                    Some(&lease),
                )
                .await,
        );
        expect_lease_lost(
            &format!("{id}: heartbeat after the terminal transition"),
            store.heartbeat(&lease, LEASE, t(3)).await,
        );
    }
    must_not_claim(store, "w2", t(1000), "both requests ended").await;
}

/// An in-progress request that waits for something outside (`waiting_for`) is not claimable,
/// even with no live lease, until that is cleared.
pub async fn check_waiting_for_not_claimable(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    let lease = run(store, "req-1", "w1", t(1)).await;
    let parked = ok(
        "set waiting_for under the lease",
        store
            .update(
                "req-1",
                RequestPatch {
                    waiting_for: Some(Some("JIRA-42".to_string())),
                    ..RequestPatch::default()
                },
                Some(&lease),
            )
            .await,
    );
    assert_eq!(parked.waiting_for.as_deref(), Some("JIRA-42"));
    ok("release the parked request", store.release(&lease).await);
    must_not_claim(store, "w2", t(2), "it waits for JIRA-42").await;
    must_not_claim(store, "w2", t(10_000), "it still waits for JIRA-42").await;
    ok(
        "clear waiting_for (the ticket was resolved)",
        store
            .update(
                "req-1",
                RequestPatch {
                    waiting_for: Some(None),
                    ..RequestPatch::default()
                },
                None,
            )
            .await,
    );
    let (request, again) = must_claim(store, "w2", t(10_001)).await;
    assert_eq!(request.id, "req-1");
    assert_eq!(request.waiting_for, None);
    assert!(again.token > lease.token);
}

/// A queued request whose `waiting_for` is set (held by a restricted period) is not
/// claimed; `held_requests` lists the queued ones whose `waiting_for` starts with a prefix,
/// oldest first, and not in-progress requests parked on the same kind of key; once cleared,
/// the request is claimed.
pub async fn check_held_requests(store: &dyn Store) {
    let hold = |id: &str| format!("hold:{id}");
    for (secs, id) in (0..).zip(["h-b", "h-a", "h-c"]) {
        submit(store, new_request(id), t(secs)).await;
        queue(store, id, t(secs)).await;
        ok(
            "hold",
            store
                .update(
                    id,
                    RequestPatch {
                        waiting_for: Some(Some(hold(id))),
                        ..RequestPatch::default()
                    },
                    None,
                )
                .await,
        );
    }
    // Another kind of wait, and an in-progress request parked on a key with the prefix.
    submit(store, new_request("other"), t(3)).await;
    queue(store, "other", t(3)).await;
    ok(
        "park",
        store
            .update(
                "other",
                RequestPatch {
                    waiting_for: Some(Some("holdx".into())),
                    ..RequestPatch::default()
                },
                None,
            )
            .await,
    );
    must_not_claim(store, "w1", t(10), "every queued request is held").await;
    let ids = |v: Vec<Request>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ok("held", store.held_requests("hold:", 10).await)),
        ["h-b", "h-a", "h-c"],
        "oldest first, only the prefix"
    );
    assert_eq!(
        ids(ok("held", store.held_requests("hold:", 2).await)),
        ["h-b", "h-a"]
    );
    ok(
        "release h-a",
        store
            .update(
                "h-a",
                RequestPatch {
                    waiting_for: Some(None),
                    ..RequestPatch::default()
                },
                None,
            )
            .await,
    );
    let (r, _) = must_claim(store, "w1", t(11)).await;
    assert_eq!(r.id, "h-a");
    assert_eq!(
        ids(ok("held", store.held_requests("hold:", 10).await)),
        ["h-b", "h-c"]
    );
}

/// `request_waiting_for` finds the in-progress request parked on a key, whether its
/// `waiting_for` is the key itself or a manual-mode ticket (`manual:KEY`); not one waiting for
/// another key (nor a key that only starts or differs in case the same), nor one in another
/// state; the oldest by creation when several wait for one key, whatever their ids or the
/// order they were parked in.
pub async fn check_request_waiting_for(store: &dyn Store) {
    async fn park(store: &dyn Store, id: &str, on: Option<&str>, lease: Option<&Lease>) {
        ok(
            &format!("set waiting_for of {id} to {on:?}"),
            store
                .update(
                    id,
                    RequestPatch {
                        waiting_for: Some(on.map(str::to_string)),
                        ..RequestPatch::default()
                    },
                    lease,
                )
                .await,
        );
    }
    async fn waiting_id(store: &dyn Store, key: &str) -> Option<String> {
        ok(
            &format!("request_waiting_for {key}"),
            store.request_waiting_for(key).await,
        )
        .map(|r| r.id)
    }
    // Created in this order; ids sort the other way.
    let ids = ["w-z", "w-y", "w-x", "w-w"];
    for (secs, id) in (0..).zip(ids) {
        submit(store, new_request(id), t(secs)).await;
    }
    assert_eq!(waiting_id(store, "JIRA-1").await, None, "nothing waits yet");
    let mut leases = Vec::new();
    for (secs, id) in (10..).zip(ids) {
        leases.push(run(store, id, "w1", t(secs)).await);
    }
    // Parked newest first: the order of parking must not decide.
    park(store, "w-w", Some("JIRA-2"), Some(&leases[3])).await;
    park(store, "w-x", Some("manual:JIRA-1"), Some(&leases[2])).await;
    park(store, "w-y", Some("JIRA-1"), Some(&leases[1])).await;
    park(store, "w-z", Some("JIRA-10"), Some(&leases[0])).await;

    let found = ok(
        "request_waiting_for JIRA-1",
        store.request_waiting_for("JIRA-1").await,
    );
    assert_eq!(
        found.as_ref().map(|r| r.id.as_str()),
        Some("w-y"),
        "JIRA-1: w-y (waiting_for JIRA-1) is older than w-x (manual:JIRA-1)"
    );
    assert_eq!(
        found,
        Some(get(store, "w-y").await),
        "the request comes back whole"
    );
    assert_eq!(waiting_id(store, "JIRA-2").await.as_deref(), Some("w-w"));
    assert_eq!(waiting_id(store, "JIRA-10").await.as_deref(), Some("w-z"));
    for other in ["JIRA-", "JIRA", "jira-1", "JIRA-3", "manual:", ""] {
        assert_eq!(
            waiting_id(store, other).await,
            None,
            "nothing waits for `{other}`"
        );
    }

    // The ticket of w-y is resolved: the manual-mode ticket of w-x is the one left.
    park(store, "w-y", None, Some(&leases[1])).await;
    assert_eq!(
        waiting_id(store, "JIRA-1").await.as_deref(),
        Some("w-x"),
        "JIRA-1 after w-y stopped waiting: w-x, by its manual-mode ticket"
    );

    // Only in-progress requests count: w-x fails with its ticket still set, a submitted
    // request is given one.
    ok(
        "fail w-x",
        store
            .transition(
                "w-x",
                State::InProgress,
                State::Failed,
                change("worker:w1", Some("gave up"), t(20)),
                Some(&leases[2]),
            )
            .await,
    );
    assert_eq!(
        get(store, "w-x").await.waiting_for.as_deref(),
        Some("manual:JIRA-1"),
        "check bug: the failed request keeps its ticket"
    );
    submit(store, new_request("w-v"), t(21)).await;
    park(store, "w-v", Some("JIRA-1"), None).await;
    assert_eq!(
        waiting_id(store, "JIRA-1").await,
        None,
        "a failed and a submitted request wait for JIRA-1, neither in progress"
    );
}

/// A lease fences only the request it was issued for, even when one worker holds leases on
/// two requests with equal tokens.
pub async fn check_lease_fences_only_its_request(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    submit(store, new_request("req-2"), t(1)).await;
    queue(store, "req-1", t(2)).await;
    queue(store, "req-2", t(2)).await;
    let (r1, lease1) = must_claim(store, "w1", t(3)).await;
    let (r2, _lease2) = must_claim(store, "w1", t(3)).await;
    assert_eq!((r1.id.as_str(), r2.id.as_str()), ("req-1", "req-2"));
    let before = get(store, "req-2").await;
    let events = all_events(store, "req-2").await;

    expect_lease_lost(
        "transition req-2 under req-1's lease",
        store
            .transition(
                "req-2",
                State::Queued,
                State::InProgress,
                change("worker:w1", None, t(4)),
                Some(&lease1),
            )
            .await,
    );
    expect_lease_lost(
        "update req-2 under req-1's lease",
        store
            .update(
                "req-2",
                RequestPatch {
                    escalated: Some(true),
                    ..RequestPatch::default()
                },
                Some(&lease1),
            )
            .await,
    );
    expect_lease_lost(
        "append_event to req-2 under req-1's lease",
        store
            .append_event("req-2", t(4), log("x"), Some(&lease1))
            .await,
    );
    let got = store
        .start_attempt(&lease1, attempt("req-2", "provision", false, 1, t(4)))
        .await;
    assert!(
        got.is_err(),
        "start_attempt of a req-2 record under req-1's lease must be refused, got {got:?}"
    );
    assert_eq!(get(store, "req-2").await, before, "req-2 unchanged");
    assert_eq!(all_events(store, "req-2").await, events, "req-2 no events");
    for id in ["req-1", "req-2"] {
        assert!(
            ok("attempts", store.attempts(id).await).is_empty(),
            "{id}: no attempt journaled"
        );
    }
}

/// Leases end by the clock the store names ([`Store::lease_clock`]). By the caller's: exactly
/// `lease_for` after the `now` of the claim or heartbeat. By the store's own: a lease runs
/// `lease_for` from the store's now whatever `now` a worker passes, so a worker whose clock
/// runs 25 s ahead cannot take a lease that a worker whose clock runs 25 s behind just took or
/// renewed (by their clocks, it ended 20 s ago).
pub async fn check_lease_clock(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    queue(store, "req-1", t(0)).await;
    match store.lease_clock() {
        LeaseClock::Caller => {
            let (_, lease) = must_claim(store, "w1", t(10)).await;
            must_not_claim(store, "w2", t(39), "the lease ends at t+40").await;
            let (_, taken) = must_claim(store, "w2", t(40)).await;
            assert!(taken.token > lease.token, "taken over at its end");
        }
        LeaseClock::Store => {
            let skew = chrono::Duration::seconds(25);
            let (_, lease) = must_claim(store, "slow", Utc::now() - skew).await;
            must_not_claim(
                store,
                "fast",
                Utc::now() + skew,
                "the slow worker's lease was just taken (by the store's clock)",
            )
            .await;
            let before = Utc::now();
            let renewed = ok(
                "the slow worker's heartbeat",
                store.heartbeat(&lease, LEASE, before - skew).await,
            );
            assert_lease_ends(
                store,
                "the slow worker's heartbeat",
                &renewed,
                before - skew,
                LEASE,
                (before, Utc::now()),
            );
            must_not_claim(
                store,
                "fast",
                Utc::now() + skew,
                "the slow worker's lease was just renewed (by the store's clock)",
            )
            .await;
            ok(
                "the holder writes after the skewed claims",
                store
                    .append_event("req-1", t(1), log("still mine"), Some(&renewed))
                    .await,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attempt journal

/// Attempts are journaled in start order and read back unchanged; finishing sets outcome and
/// time of that attempt only; an execution attempt and a rollback attempt of one action with
/// the same number are distinct records.
pub async fn check_attempts_journal(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    let lease = run(store, "req-1", "w1", t(1)).await;
    let starts = [
        attempt("req-1", "db", false, 1, t(10)),
        attempt("req-1", "dns", false, 1, t(11)),
        attempt("req-1", "db", false, 2, t(12)),
        attempt("req-1", "db", true, 1, t(13)),
    ];
    let mut expected = Vec::new();
    for (i, record) in starts.iter().enumerate() {
        ok(
            &format!("start attempt {i}"),
            store.start_attempt(&lease, record.clone()).await,
        );
        expected.push(record.clone());
        assert_eq!(
            ok("attempts", store.attempts("req-1").await),
            expected,
            "journal after start {i}: in start order, unchanged"
        );
    }

    let failed = AttemptOutcome::Failed {
        error: ActionError::retryable("503").with_retry_after(Duration::from_millis(1500)),
    };
    let succeeded = AttemptOutcome::Succeeded {
        output: ActionOutput {
            result: json!({ "id": "db-123", "endpoint": "db.internal:5432" }),
            rollback_state: json!({ "id": "db-123" }),
        },
        outputs: json!({ "connection": "postgres://db.internal:5432" }),
    };
    let undone = AttemptOutcome::Succeeded {
        output: ActionOutput::new(json!(null)),
        outputs: json!({}),
    };
    for (action, rollback, n, outcome, at, index) in [
        ("db", false, 1, failed.clone(), t(20), 0),
        ("db", false, 2, succeeded.clone(), t(21), 2),
        ("db", true, 1, undone.clone(), t(22), 3),
    ] {
        ok(
            &format!("finish {action} rollback={rollback} attempt {n}"),
            store
                .finish_attempt(&lease, action, rollback, n, outcome.clone(), at)
                .await,
        );
        expected[index].outcome = outcome;
        expected[index].finished_at = Some(at);
        assert_eq!(
            ok("attempts", store.attempts("req-1").await),
            expected,
            "journal after finishing {action} rollback={rollback} attempt {n}: only that record changes"
        );
    }
    assert_eq!(
        expected[1].outcome,
        AttemptOutcome::Running,
        "an unfinished attempt stays running"
    );

    ok(
        "start a skipped attempt",
        store
            .start_attempt(&lease, attempt("req-1", "notify", false, 1, t(30)))
            .await,
    );
    ok(
        "finish it as skipped",
        store
            .finish_attempt(&lease, "notify", false, 1, AttemptOutcome::Skipped, t(30))
            .await,
    );
    let journal = ok("attempts", store.attempts("req-1").await);
    assert_eq!(journal.len(), 5);
    assert_eq!(journal[4].outcome, AttemptOutcome::Skipped);
    submit(store, new_request("req-2"), t(40)).await;
    assert!(
        ok("attempts of req-2", store.attempts("req-2").await).is_empty(),
        "journals are per request"
    );
}

/// Finishing an attempt that was never started is `NotFound` and changes nothing: not another
/// action, not another number, not the rollback of a started execution.
pub async fn check_finish_unknown_attempt(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    let lease = run(store, "req-1", "w1", t(1)).await;
    ok(
        "start",
        store
            .start_attempt(&lease, attempt("req-1", "db", false, 1, t(2)))
            .await,
    );
    let outcome = AttemptOutcome::Skipped;
    for (action, rollback, n) in [("nope", false, 1), ("db", false, 2), ("db", true, 1)] {
        expect_not_found(
            &format!("finish {action} rollback={rollback} attempt {n}, never started"),
            store
                .finish_attempt(&lease, action, rollback, n, outcome.clone(), t(3))
                .await,
        );
    }
    assert_eq!(
        ok("attempts", store.attempts("req-1").await),
        vec![attempt("req-1", "db", false, 1, t(2))],
        "failed finishes change nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Listing

/// `list` filters by states (any of), requester id, team and item, combined with AND, newest
/// first; `limit` caps the count.
pub async fn check_list_filters(store: &dyn Store) {
    for (id, requester, team, item, created) in [
        ("r1", "ada", "team-a", "pg", 1),
        ("r2", "bob", "team-b", "pg", 2),
        ("r3", "ada", "team-a", "redis", 3),
        ("r4", "cy", "team-a", "pg", 4),
        ("r5", "bob", "team-b", "redis", 5),
    ] {
        let mut new = new_request(id);
        new.requester = Principal::new(requester, &[team], &["developer"]);
        new.team = team.to_string();
        new.item_id = item.to_string();
        submit(store, new, t(created)).await;
    }
    queue(store, "r1", t(10)).await;
    queue(store, "r5", t(10)).await;
    step(store, "r3", State::Submitted, State::Prerequisites, t(10)).await;
    step(store, "r3", State::Prerequisites, State::Rejected, t(10)).await;

    let f = RequestFilter::default;
    for (what, filter, expected) in [
        (
            "everything, newest first",
            f(),
            &["r5", "r4", "r3", "r2", "r1"][..],
        ),
        (
            "state queued",
            RequestFilter {
                states: vec![State::Queued],
                ..f()
            },
            &["r5", "r1"][..],
        ),
        (
            "states queued or rejected",
            RequestFilter {
                states: vec![State::Rejected, State::Queued],
                ..f()
            },
            &["r5", "r3", "r1"][..],
        ),
        (
            "requester ada",
            RequestFilter {
                requester: Some("ada".to_string()),
                ..f()
            },
            &["r3", "r1"][..],
        ),
        (
            "team team-b",
            RequestFilter {
                team: Some("team-b".to_string()),
                ..f()
            },
            &["r5", "r2"][..],
        ),
        (
            "item redis",
            RequestFilter {
                item_id: Some("redis".to_string()),
                ..f()
            },
            &["r5", "r3"][..],
        ),
        (
            "team-a and item pg",
            RequestFilter {
                team: Some("team-a".to_string()),
                item_id: Some("pg".to_string()),
                ..f()
            },
            &["r4", "r1"][..],
        ),
        (
            "bob and submitted",
            RequestFilter {
                requester: Some("bob".to_string()),
                states: vec![State::Submitted],
                ..f()
            },
            &["r2"][..],
        ),
        (
            "no match",
            RequestFilter {
                requester: Some("ada".to_string()),
                team: Some("team-b".to_string()),
                ..f()
            },
            &[][..],
        ),
        (
            "limit 2",
            RequestFilter { limit: 2, ..f() },
            &["r5", "r4"][..],
        ),
        (
            "team-a limit 1",
            RequestFilter {
                team: Some("team-a".to_string()),
                limit: 1,
                ..f()
            },
            &["r4"][..],
        ),
    ] {
        assert_eq!(list_ids(store, &filter).await, expected, "list: {what}");
    }
}

/// Keyset pagination with `before = (created_at, id)` of the last row and `limit` visits
/// every request exactly once in the unpaged order, also with equal `created_at`, with a
/// filter, and when newer requests arrive between pages.
pub async fn check_list_pagination(store: &dyn Store) {
    // Several requests share a creation time, and ids do not follow submission order.
    let spec = [
        ("p-5", 1, "team-a"),
        ("p-3", 2, "team-b"),
        ("p-1", 2, "team-a"),
        ("p-4", 2, "team-a"),
        ("p-2", 3, "team-b"),
        ("p-9", 4, "team-a"),
        ("p-7", 4, "team-b"),
        ("p-6", 5, "team-a"),
        ("p-8", 6, "team-a"),
    ];
    for (id, created, team) in spec {
        let mut new = new_request(id);
        new.team = team.to_string();
        submit(store, new, t(created)).await;
    }
    let full = ok("list all", store.list(&RequestFilter::default()).await);
    assert_eq!(full.len(), spec.len(), "list all");
    for w in full.windows(2) {
        assert!(
            w[0].created_at >= w[1].created_at,
            "list must be newest first: {} ({}) before {} ({})",
            w[0].id,
            w[0].created_at,
            w[1].id,
            w[1].created_at
        );
    }
    let full: Vec<String> = full.into_iter().map(|r| r.id).collect();
    let mut sorted = full.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), spec.len(), "list all: no duplicates");

    for page in [1, 2, 3, 4, 9, 20] {
        assert_eq!(
            paginate(store, &RequestFilter::default(), page, None).await,
            full,
            "pages of {page}: every request once, in order"
        );
    }
    let team_a = RequestFilter {
        team: Some("team-a".to_string()),
        ..RequestFilter::default()
    };
    let full_a = list_ids(store, &team_a).await;
    assert_eq!(full_a.len(), 6, "team-a has six");
    for page in [1, 2, 4] {
        assert_eq!(
            paginate(store, &team_a, page, None).await,
            full_a,
            "team-a pages of {page}"
        );
    }

    // A cursor is stable when newer requests arrive between pages.
    let first = ok(
        "first page",
        store
            .list(&RequestFilter {
                limit: 3,
                ..RequestFilter::default()
            })
            .await,
    );
    submit(store, new_request("p-new"), t(100)).await;
    let last = first.last().map(|r| (r.created_at, r.id.clone()));
    let mut rest: Vec<String> = first.iter().map(|r| r.id.clone()).collect();
    rest.extend(paginate(store, &RequestFilter::default(), 3, last).await);
    assert_eq!(
        rest, full,
        "paging on after a newer request arrived sees the old set exactly"
    );
    assert_eq!(
        list_ids(
            store,
            &RequestFilter {
                limit: 1,
                ..RequestFilter::default()
            }
        )
        .await,
        ["p-new"],
        "the newest request comes first"
    );
}

async fn paginate(
    store: &dyn Store,
    base: &RequestFilter,
    page: usize,
    mut before: Option<(DateTime<Utc>, String)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let filter = RequestFilter {
            before: before.clone(),
            limit: page,
            ..base.clone()
        };
        let got = ok(&format!("list {filter:?}"), store.list(&filter).await);
        assert!(
            got.len() <= page,
            "list with limit {page} returned {}",
            got.len()
        );
        let Some(last) = got.last() else {
            return out;
        };
        before = Some((last.created_at, last.id.clone()));
        out.extend(got.into_iter().map(|r| r.id));
    }
    panic!("pagination with pages of {page} does not end: {out:?}");
}

// ---------------------------------------------------------------------------------------------
// Approvals

/// Decisions are kept per request in the order recorded; the same approver cannot decide
/// twice on one request (`Duplicate`), but may decide on another.
pub async fn check_approvals(store: &dyn Store) {
    submit(store, new_request("req-1"), t(0)).await;
    submit(store, new_request("req-2"), t(0)).await;
    let decision = |request: &str, approver: &str, approved: bool, reason: Option<&str>, at| {
        ApprovalDecision {
            request_id: request.to_string(),
            approver: approver.to_string(),
            approved,
            reason: reason.map(str::to_string),
            at,
        }
    };
    let alice = decision("req-1", "alice", true, None, t(1));
    let bob = decision("req-1", "bob", false, Some("too big"), t(2));
    assert_eq!(
        ok("alice decides", store.record_decision(alice.clone()).await),
        vec![alice.clone()],
        "record_decision returns the decisions so far"
    );
    assert_eq!(
        ok("bob decides", store.record_decision(bob.clone()).await),
        vec![alice.clone(), bob.clone()],
        "record_decision returns the decisions so far, in order"
    );
    expect_duplicate(
        "alice decides twice",
        store
            .record_decision(decision("req-1", "alice", false, Some("changed"), t(3)))
            .await,
    );
    assert_eq!(
        ok("decisions", store.decisions("req-1").await),
        vec![alice.clone(), bob],
        "a refused duplicate changes nothing"
    );
    let alice2 = decision("req-2", "alice", true, Some("fine"), t(4));
    assert_eq!(
        ok(
            "alice decides on another request",
            store.record_decision(alice2.clone()).await
        ),
        vec![alice2.clone()],
        "decisions are per request"
    );
    assert_eq!(
        ok("decisions of req-2", store.decisions("req-2").await),
        vec![alice2]
    );
    assert_eq!(
        ok("decisions of req-1", store.decisions("req-1").await).len(),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Quotas

/// Reservations count against a team's limit per resource (inclusive), `QuotaExceeded`
/// carries the numbers and changes nothing, re-reserving replaces, release returns
/// everything a request holds, teams and resources are separate.
pub async fn check_quotas(store: &dyn Store) {
    for id in ["q-1", "q-2", "q-3", "q-4"] {
        submit(store, new_request(id), t(0)).await;
    }
    assert!(
        usage(store, "team-a").await.is_empty(),
        "no limits, no reservations: empty usage"
    );
    ok(
        "set limit",
        store.set_quota_limit("team-a", "databases", 3).await,
    );
    assert_eq!(
        usage(store, "team-a").await,
        vec![quota("databases", Some(3), 0)],
        "a limit shows with zero usage"
    );
    ok(
        "reserve 2",
        store.reserve_quota("q-1", "team-a", "databases", 2).await,
    );
    assert_eq!(
        store.reserve_quota("q-2", "team-a", "databases", 2).await,
        Err(StoreError::QuotaExceeded {
            team: "team-a".to_string(),
            resource: "databases".to_string(),
            limit: 3,
            used: 2,
            asked: 2,
        }),
        "2 used + 2 asked > 3"
    );
    assert_eq!(
        usage(store, "team-a").await,
        vec![quota("databases", Some(3), 2)],
        "a refused reservation reserves nothing"
    );
    ok(
        "reserve up to the limit",
        store.reserve_quota("q-2", "team-a", "databases", 1).await,
    );
    assert_eq!(used(store, "team-a", "databases").await, 3, "limit reached");

    ok(
        "re-reserve smaller",
        store.reserve_quota("q-1", "team-a", "databases", 1).await,
    );
    assert_eq!(
        used(store, "team-a", "databases").await,
        2,
        "re-reserving replaces (1 + 1)"
    );
    assert_eq!(
        store.reserve_quota("q-1", "team-a", "databases", 3).await,
        Err(StoreError::QuotaExceeded {
            team: "team-a".to_string(),
            resource: "databases".to_string(),
            limit: 3,
            used: 1,
            asked: 3,
        }),
        "re-reserving counts others only: 1 used by q-2 + 3 asked > 3"
    );
    assert_eq!(
        used(store, "team-a", "databases").await,
        2,
        "a refused re-reservation keeps the earlier one"
    );
    ok(
        "re-reserve larger within the limit",
        store.reserve_quota("q-1", "team-a", "databases", 2).await,
    );
    assert_eq!(used(store, "team-a", "databases").await, 3);

    ok(
        "reserve a resource without limit",
        store.reserve_quota("q-1", "team-a", "vcpu", 64).await,
    );
    assert_eq!(
        usage(store, "team-a").await,
        vec![quota("databases", Some(3), 3), quota("vcpu", None, 64)],
        "usage per resource"
    );

    ok("release q-1", store.release_quota("q-1").await);
    assert_eq!(
        used(store, "team-a", "databases").await,
        1,
        "release returns q-1's databases"
    );
    assert_eq!(
        used(store, "team-a", "vcpu").await,
        0,
        "release returns q-1's vcpu too"
    );
    ok("release q-1 again", store.release_quota("q-1").await);
    assert_eq!(
        used(store, "team-a", "databases").await,
        1,
        "release is idempotent"
    );
    ok(
        "release a request without reservations",
        store.release_quota("q-4").await,
    );

    ok(
        "limit of another team",
        store.set_quota_limit("team-b", "databases", 1).await,
    );
    ok(
        "reserve for team-b",
        store.reserve_quota("q-3", "team-b", "databases", 1).await,
    );
    assert_eq!(
        usage(store, "team-b").await,
        vec![quota("databases", Some(1), 1)],
        "team-b"
    );
    assert_eq!(
        used(store, "team-a", "databases").await,
        1,
        "teams are separate"
    );
    ok(
        "raise the limit",
        store.set_quota_limit("team-a", "databases", 10).await,
    );
    assert_eq!(
        usage(store, "team-a").await,
        vec![quota("databases", Some(10), 1)],
        "a new limit replaces the old"
    );
    assert!(
        usage(store, "team-nobody").await.is_empty(),
        "unknown team: empty usage"
    );
    // Re-reserving a request's resource under another team moves it there.
    ok(
        "reserve q-3 again for team-a",
        store.reserve_quota("q-3", "team-a", "databases", 3).await,
    );
    assert_eq!(
        usage(store, "team-b").await,
        vec![quota("databases", Some(1), 0)],
        "team-b no longer holds q-3's reservation"
    );
    assert_eq!(used(store, "team-a", "databases").await, 4, "1 + 3");
    ok("release q-3", store.release_quota("q-3").await);
    assert_eq!(used(store, "team-a", "databases").await, 1);
    assert_eq!(used(store, "team-b", "databases").await, 0);
}

/// Two reservations racing that together exceed the limit: exactly one succeeds.
pub async fn check_quota_concurrent_reservations(store: &dyn Store) {
    submit(store, new_request("q-1"), t(0)).await;
    submit(store, new_request("q-2"), t(0)).await;
    ok(
        "set limit",
        store.set_quota_limit("team-a", "databases", 5).await,
    );
    let (a, b) = tokio::join!(
        store.reserve_quota("q-1", "team-a", "databases", 3),
        store.reserve_quota("q-2", "team-a", "databases", 3),
    );
    let loser = match (a, b) {
        (Ok(()), Err(e)) | (Err(e), Ok(())) => e,
        (a, b) => panic!(
            "racing reservations of 3 + 3 against 5: exactly one must succeed, got {a:?} and {b:?}"
        ),
    };
    assert_eq!(
        loser,
        StoreError::QuotaExceeded {
            team: "team-a".to_string(),
            resource: "databases".to_string(),
            limit: 5,
            used: 3,
            asked: 3,
        },
        "the losing reservation"
    );
    assert_eq!(
        used(store, "team-a", "databases").await,
        3,
        "only the winner is reserved"
    );
}

/// An absurd amount is refused with `QuotaExceeded`, not an overflow.
pub async fn check_quota_huge_amount(store: &dyn Store) {
    submit(store, new_request("q-1"), t(0)).await;
    submit(store, new_request("q-2"), t(0)).await;
    ok(
        "set limit",
        store.set_quota_limit("team-a", "vcpu", 10).await,
    );
    ok(
        "reserve 1",
        store.reserve_quota("q-1", "team-a", "vcpu", 1).await,
    );
    assert_eq!(
        store.reserve_quota("q-2", "team-a", "vcpu", u64::MAX).await,
        Err(StoreError::QuotaExceeded {
            team: "team-a".to_string(),
            resource: "vcpu".to_string(),
            limit: 10,
            used: 1,
            asked: u64::MAX,
        }),
        "1 used + u64::MAX asked > 10"
    );
    assert_eq!(used(store, "team-a", "vcpu").await, 1);
}

/// The largest limit ([`MAX_QUOTA_LIMIT`](super::MAX_QUOTA_LIMIT)) reads back as set and blocks
/// nothing; a larger one is kept as the largest (it must not wrap into a limit that blocks
/// everything).
pub async fn check_quota_huge_limit(store: &dyn Store) {
    submit(store, new_request("q-1"), t(0)).await;
    submit(store, new_request("q-2"), t(0)).await;
    for (resource, limit) in [("vcpu", super::MAX_QUOTA_LIMIT), ("disk", u64::MAX)] {
        ok(
            &format!("set limit {limit} on {resource}"),
            store.set_quota_limit("team-a", resource, limit).await,
        );
        ok(
            &format!("reserve 5 {resource} under limit {limit}"),
            store.reserve_quota("q-1", "team-a", resource, 5).await,
        );
    }
    assert_eq!(
        usage(store, "team-a").await,
        vec![
            quota("disk", Some(super::MAX_QUOTA_LIMIT), 5),
            quota("vcpu", Some(super::MAX_QUOTA_LIMIT), 5),
        ],
        "huge limits read back as the largest limit"
    );
}

/// `set_quota_limits` stores every limit and its audit record together: the limits read back
/// through `quota_usage` and hold against reservations, the record through `audit_log`; a
/// resource named twice gets its last limit; limits already set for other resources or teams
/// stay. A call with one limit no store can hold (above
/// [`MAX_QUOTA_LIMIT`](super::MAX_QUOTA_LIMIT), or an empty resource name), wherever it stands
/// in the list, stores nothing: neither its other limits nor its record.
pub async fn check_set_quota_limits(store: &dyn Store) {
    let record = |secs, detail| AuditRecord {
        at: t(secs),
        actor: "admin".to_string(),
        action: "quota.set_limits".to_string(),
        target: "team:team-a".to_string(),
        detail,
    };
    let limits = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
        pairs.iter().map(|(r, l)| (r.to_string(), *l)).collect()
    };
    let logged = async || -> Vec<AuditRecord> {
        ok("audit log", store.audit_log(None, None, 0).await)
            .into_iter()
            .map(|l| l.record)
            .collect()
    };
    ok(
        "set_quota_limit team-b databases",
        store.set_quota_limit("team-b", "databases", 7).await,
    );
    let first = record(1, json!({ "databases": 3, "vcpu": 8 }));
    ok(
        "set_quota_limits databases 3, vcpu 8",
        store
            .set_quota_limits(
                "team-a",
                &limits(&[("databases", 3), ("vcpu", 8)]),
                first.clone(),
            )
            .await,
    );
    let expected = vec![quota("databases", Some(3), 0), quota("vcpu", Some(8), 0)];
    assert_eq!(usage(store, "team-a").await, expected, "both limits stored");
    assert_eq!(logged().await, vec![first.clone()], "the record stored");

    let max = super::MAX_QUOTA_LIMIT;
    for (why, refused) in [
        (
            "a limit above the largest, last",
            limits(&[("databases", 5), ("disk", 1), ("vcpu", max + 1)]),
        ),
        (
            "a limit above the largest, first",
            limits(&[("vcpu", u64::MAX), ("databases", 5)]),
        ),
        (
            "an empty resource name",
            limits(&[("databases", 5), (" ", 1), ("disk", 1)]),
        ),
    ] {
        let got = store
            .set_quota_limits("team-a", &refused, record(2, json!(why)))
            .await;
        assert!(
            matches!(got, Err(StoreError::Duplicate(_))),
            "set_quota_limits with {why}: expected a refusal (StoreError::Duplicate), got {got:?}"
        );
        assert_eq!(
            usage(store, "team-a").await,
            expected,
            "set_quota_limits with {why}: no limit stored"
        );
        assert_eq!(
            logged().await,
            vec![first.clone()],
            "set_quota_limits with {why}: no record stored"
        );
    }

    let second = record(3, json!({ "vcpu": 4, "disk": max }));
    ok(
        "set_quota_limits vcpu 2 then 4, disk at the largest limit",
        store
            .set_quota_limits(
                "team-a",
                &limits(&[("vcpu", 2), ("disk", max), ("vcpu", 4)]),
                second.clone(),
            )
            .await,
    );
    assert_eq!(
        usage(store, "team-a").await,
        vec![
            quota("databases", Some(3), 0),
            quota("disk", Some(max), 0),
            quota("vcpu", Some(4), 0),
        ],
        "the last limit of vcpu wins; databases, not named, keeps its limit"
    );
    assert_eq!(
        usage(store, "team-b").await,
        vec![quota("databases", Some(7), 0)],
        "another team's limit is untouched"
    );
    let third = record(4, json!({}));
    ok(
        "set_quota_limits with no limits",
        store.set_quota_limits("team-a", &[], third.clone()).await,
    );
    assert_eq!(
        logged().await,
        vec![third, second, first],
        "every record of a stored call, newest first"
    );

    submit(store, new_request("q-1"), t(5)).await;
    ok(
        "reserve 4 vcpu under limit 4",
        store.reserve_quota("q-1", "team-a", "vcpu", 4).await,
    );
    submit(store, new_request("q-2"), t(6)).await;
    assert_eq!(
        store.reserve_quota("q-2", "team-a", "vcpu", 1).await,
        Err(StoreError::QuotaExceeded {
            team: "team-a".to_string(),
            resource: "vcpu".to_string(),
            limit: 4,
            used: 4,
            asked: 1,
        }),
        "the limit set by set_quota_limits holds"
    );
}

// ---------------------------------------------------------------------------------------------
// Audit

/// The audit log is append-only: records come back unchanged, newest first, duplicates kept;
/// `target` filters; `limit` caps the count and keeps the newest; `before` pages on to older
/// records.
pub async fn check_audit(store: &dyn Store) {
    let record = |secs, actor: &str, action: &str, target: &str, detail| AuditRecord {
        at: t(secs),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail,
    };
    let records = [
        record(1, "ada", "request.submit", "req-1", json!({ "item": "pg" })),
        record(
            2,
            "bob",
            "request.submit",
            "req-2",
            json!({ "item": "redis" }),
        ),
        record(
            3,
            "carol",
            "approval.approve",
            "req-1",
            json!({ "reason": "ok", "n": [1, 2.5, null, true] }),
        ),
        record(4, "system", "catalog.reload", "item:pg", json!(null)),
        record(
            3,
            "carol",
            "approval.approve",
            "req-1",
            json!({ "reason": "ok", "n": [1, 2.5, null, true] }),
        ),
    ];
    let logged = |store_log: Vec<LoggedAudit>| -> Vec<AuditRecord> {
        store_log.into_iter().map(|l| l.record).collect()
    };
    assert!(
        ok("empty audit log", store.audit_log(None, None, 0).await).is_empty(),
        "a fresh store has no audit records"
    );
    for (i, r) in records.iter().enumerate() {
        ok(&format!("audit {i}"), store.audit(r.clone()).await);
        let mut newest_first = records[..=i].to_vec();
        newest_first.reverse();
        assert_eq!(
            logged(ok("audit log", store.audit_log(None, None, 0).await)),
            newest_first,
            "after appending record {i}: all records, newest first, earlier ones unchanged"
        );
    }
    let all = ok("audit log", store.audit_log(None, None, 0).await);
    assert!(
        all.windows(2).all(|w| w[0].id > w[1].id),
        "ids grow with every record appended: {all:?}"
    );
    assert_eq!(
        logged(ok(
            "audit log of req-1",
            store.audit_log(Some("req-1"), None, 0).await
        )),
        vec![records[4].clone(), records[2].clone(), records[0].clone()],
        "filter by target"
    );
    assert!(
        ok(
            "audit log of nothing",
            store.audit_log(Some("nope"), None, 0).await
        )
        .is_empty(),
        "unknown target"
    );
    let limited = ok("audit log limit 2", store.audit_log(None, None, 2).await);
    assert_eq!(
        logged(limited.clone()),
        vec![records[4].clone(), records[3].clone()],
        "limit 2: the two newest"
    );
    let older = ok(
        "audit log before the second newest",
        store.audit_log(None, Some(limited[1].id), 2).await,
    );
    assert_eq!(
        logged(older),
        vec![records[2].clone(), records[1].clone()],
        "`before` pages on to older records"
    );
    let limited = ok(
        "audit log of req-1 limit 2",
        store.audit_log(Some("req-1"), None, 2).await,
    );
    assert_eq!(
        logged(limited.clone()),
        vec![records[4].clone(), records[2].clone()],
        "target and limit: the two newest of req-1"
    );
    assert_eq!(
        logged(ok(
            "audit log of req-1 before its second newest",
            store.audit_log(Some("req-1"), Some(limited[1].id), 0).await,
        )),
        vec![records[0].clone()],
        "target and `before`"
    );
}

/// A long audit log (1,500 records) read with a limit shows its newest records, and paging
/// with `before` walks all of it once, newest to oldest.
pub async fn check_audit_newest_first_with_cursor(store: &dyn Store) {
    const N: usize = 1_500;
    for i in 0..N {
        ok(
            &format!("audit {i}"),
            store
                .audit(AuditRecord {
                    at: t(i as i64),
                    actor: "ada".to_string(),
                    action: "request.submit".to_string(),
                    target: format!("req-{i}"),
                    detail: json!({ "n": i }),
                })
                .await,
        );
    }
    let first = ok(
        "audit log limit 1000",
        store.audit_log(None, None, 1000).await,
    );
    assert_eq!(first.len(), 1000, "a page of 1,000");
    assert_eq!(
        first[0].record.target,
        format!("req-{}", N - 1),
        "the default read starts with the newest record"
    );
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = ok(
            &format!("audit log before {before:?}"),
            store.audit_log(None, before, 400).await,
        );
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        seen.extend(
            page.into_iter()
                .map(|l| l.record.detail["n"].as_u64().unwrap_or(u64::MAX)),
        );
    }
    let expected: Vec<u64> = (0..N as u64).rev().collect();
    assert_eq!(
        seen, expected,
        "pages of 400 walk every record once, newest first"
    );
}

// ---------------------------------------------------------------------------------------------
// Aggregates and bounded reads

/// Submits `id` for `team` and `item` at `created`, then moves it along `path` at `at`.
async fn request_in(
    store: &dyn Store,
    id: &str,
    team: &str,
    item: &str,
    created: DateTime<Utc>,
    path: &[State],
    at: DateTime<Utc>,
) -> Request {
    let mut new = new_request(id);
    new.team = team.to_string();
    new.item_id = item.to_string();
    submit(store, new, created).await;
    let mut state = State::Submitted;
    for &next in path {
        step(store, id, state, next, at).await;
        state = next;
    }
    get(store, id).await
}

const TO_COMPLETED: [State; 5] = [
    State::Prerequisites,
    State::Validation,
    State::Queued,
    State::InProgress,
    State::Completed,
];
const TO_FAILED: [State; 5] = [
    State::Prerequisites,
    State::Validation,
    State::Queued,
    State::InProgress,
    State::Failed,
];
const TO_APPROVAL: [State; 3] = [
    State::Prerequisites,
    State::Validation,
    State::AwaitingApproval,
];

/// Fails `id` with `error` (a failed request of `team`/`item`).
async fn failed_with(store: &dyn Store, id: &str, team: &str, item: &str, error: &str) {
    request_in(store, id, team, item, t(0), &TO_FAILED, t(1)).await;
    ok(
        &format!("set the error of {id}"),
        store
            .update(
                id,
                RequestPatch {
                    error: Some(error.to_string()),
                    ..RequestPatch::default()
                },
                None,
            )
            .await,
    );
}

/// `request_stats` counts by team, item and state within its scope (a team, some items),
/// gives nearest-rank completion times and the most frequent failure reasons (cut to 120
/// characters, at most 20, most frequent first).
pub async fn check_request_stats(store: &dyn Store) {
    let all = StatsScope::default();
    assert_eq!(
        ok("stats of an empty store", store.request_stats(&all).await),
        super::RequestStats::default(),
        "an empty store has no counts, times or reasons"
    );
    for (id, secs) in [("c1", 10), ("c2", 20), ("c3", 30), ("c4", 40)] {
        request_in(store, id, "team-a", "pg", t(0), &TO_COMPLETED, t(secs)).await;
    }
    request_in(store, "c5", "team-b", "redis", t(0), &TO_COMPLETED, t(100)).await;
    request_in(store, "q1", "team-a", "pg", t(0), &TO_COMPLETED[..3], t(1)).await;
    failed_with(store, "f1", "team-a", "pg", "boom").await;
    failed_with(store, "f2", "team-a", "pg", &"x".repeat(200)).await;
    failed_with(store, "f3", "team-b", "redis", "boom").await;
    let count = |team: &str, item: &str, state, count| StateCount {
        team: team.to_string(),
        item_id: item.to_string(),
        state,
        count,
    };
    let stats = ok("stats of every request", store.request_stats(&all).await);
    assert_eq!(
        stats.counts,
        vec![
            count("team-a", "pg", State::Completed, 4),
            count("team-a", "pg", State::Failed, 2),
            count("team-a", "pg", State::Queued, 1),
            count("team-b", "redis", State::Completed, 1),
            count("team-b", "redis", State::Failed, 1),
        ],
        "counts by team, item and state"
    );
    assert_eq!(
        stats.completion_ms,
        CompletionTimes {
            p50: Some(30_000),
            p90: Some(40_000),
            p99: Some(40_000),
        },
        "completion times 10, 20, 30, 40, 100 s: indexes 2, 3, 3"
    );
    assert_eq!(
        stats.failure_reasons,
        vec![("boom".to_string(), 2), ("x".repeat(120), 1)],
        "failure reasons, most frequent first, cut to 120 characters"
    );
    let team_a = ok(
        "stats of team-a",
        store
            .request_stats(&StatsScope {
                team: Some("team-a".to_string()),
                ..StatsScope::default()
            })
            .await,
    );
    assert_eq!(team_a.total(), 7, "team-a's requests only: {team_a:?}");
    assert_eq!(team_a.finished(), 6);
    assert_eq!(
        team_a.completion_ms,
        CompletionTimes {
            p50: Some(20_000),
            p90: Some(30_000),
            p99: Some(30_000),
        },
        "team-a's completion times 10, 20, 30, 40 s: indexes 1, 2, 2"
    );
    assert_eq!(
        team_a.failure_reasons,
        vec![("boom".to_string(), 1), ("x".repeat(120), 1)],
        "equal counts by reason"
    );
    let redis = ok(
        "stats of redis",
        store
            .request_stats(&StatsScope {
                item_ids: vec!["redis".to_string(), "unknown".to_string()],
                ..StatsScope::default()
            })
            .await,
    );
    assert_eq!(
        redis.counts,
        vec![
            count("team-b", "redis", State::Completed, 1),
            count("team-b", "redis", State::Failed, 1),
        ],
        "only the items asked for"
    );
    assert_eq!(redis.completion_ms.p50, Some(100_000));
    // Many distinct reasons: the 20 most frequent.
    for i in 0..22 {
        failed_with(
            store,
            &format!("m{i:02}"),
            "team-c",
            "mq",
            &format!("e{i:02}"),
        )
        .await;
    }
    failed_with(store, "m-boom", "team-c", "mq", "boom").await;
    failed_with(store, "m-boom2", "team-c", "mq", "boom").await;
    let many = ok(
        "stats of team-c",
        store
            .request_stats(&StatsScope {
                team: Some("team-c".to_string()),
                ..StatsScope::default()
            })
            .await,
    );
    let mut expected = vec![("boom".to_string(), 2)];
    expected.extend((0..19).map(|i| (format!("e{i:02}"), 1)));
    assert_eq!(
        many.failure_reasons, expected,
        "at most 20 reasons: the most frequent, then by reason"
    );
    assert_eq!(many.completion_ms, CompletionTimes::default());
}

/// `pending_approvals` pages requests awaiting approval newest first with their decisions.
pub async fn check_pending_approvals(store: &dyn Store) {
    for (id, secs) in [("a1", 1), ("a2", 2), ("a3", 3)] {
        request_in(store, id, "team-a", "pg", t(secs), &TO_APPROVAL, t(10)).await;
    }
    request_in(store, "q1", "team-a", "pg", t(4), &TO_COMPLETED[..3], t(10)).await;
    let decision = ApprovalDecision {
        request_id: "a2".to_string(),
        approver: "bob".to_string(),
        approved: true,
        reason: None,
        at: t(11),
    };
    ok(
        "bob decides on a2",
        store.record_decision(decision.clone()).await,
    );
    let all = ok("pending approvals", store.pending_approvals(None, 0).await);
    let ids: Vec<&str> = all.iter().map(|p| p.request.id.as_str()).collect();
    assert_eq!(ids, ["a3", "a2", "a1"], "awaiting requests, newest first");
    assert_eq!(all[1].decisions, vec![decision], "a2 with its decision");
    assert!(all[0].decisions.is_empty() && all[2].decisions.is_empty());
    let first = ok("a page of 2", store.pending_approvals(None, 2).await);
    assert_eq!(first.len(), 2);
    let last = &first[1].request;
    let rest = ok(
        "the page after a2",
        store
            .pending_approvals(Some(&(last.created_at, last.id.clone())), 2)
            .await,
    );
    let ids: Vec<&str> = rest.iter().map(|p| p.request.id.as_str()).collect();
    assert_eq!(ids, ["a1"], "the cursor pages on");
}

/// `approvals_due` lists requests awaiting approval whose deadline has come, earliest first,
/// paged by (deadline, id); requests without a deadline or no longer awaiting approval are not
/// listed.
pub async fn check_approvals_due(store: &dyn Store) {
    for (id, due) in [
        ("d1", Some(100)),
        ("d2", Some(50)),
        ("d3", None),
        ("d5", Some(50)),
        ("d6", Some(60)),
    ] {
        request_in(store, id, "team-a", "pg", t(0), &TO_APPROVAL, t(1)).await;
        ok(
            &format!("deadline of {id}"),
            store
                .update(
                    id,
                    RequestPatch {
                        approval_due: Some(due.map(t)),
                        ..RequestPatch::default()
                    },
                    None,
                )
                .await,
        );
    }
    request_in(store, "d4", "team-a", "pg", t(0), &TO_APPROVAL, t(1)).await;
    ok(
        "deadline of d4",
        store
            .update(
                "d4",
                RequestPatch {
                    approval_due: Some(Some(t(10))),
                    ..RequestPatch::default()
                },
                None,
            )
            .await,
    );
    step(store, "d4", State::AwaitingApproval, State::Queued, t(2)).await;
    let ids = |rs: Vec<Request>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ok("due by t+60", store.approvals_due(t(60), None, 0).await)),
        ["d2", "d5", "d6"],
        "earliest deadline first, then id; a deadline equal to `by` is due"
    );
    let first = ok(
        "due by t+100, 2",
        store.approvals_due(t(100), None, 2).await,
    );
    assert_eq!(ids(first.clone()), ["d2", "d5"]);
    let last = &first[1];
    let after = (
        last.approval_due.expect("d5 has a deadline"),
        last.id.clone(),
    );
    assert_eq!(
        ids(ok(
            "due by t+100 after d5",
            store.approvals_due(t(100), Some(&after), 0).await
        )),
        ["d6", "d1"],
        "the cursor pages on"
    );
    assert!(
        ok("due by t+9", store.approvals_due(t(9), None, 0).await).is_empty(),
        "nothing is due yet"
    );
}

// ---------------------------------------------------------------------------------------------
// Update

/// What a patch should do to the stored request.
type PatchEffect = fn(&mut Request);

/// A patch changes the fields it names and nothing else (the state included); `Some(None)`
/// clears the optional ones; an empty patch changes nothing.
pub async fn check_update_patch(store: &dyn Store) {
    let mut expected = submit(store, new_request("req-1"), t(0)).await;
    step(store, "req-1", State::Submitted, State::Prerequisites, t(1)).await;
    expected.state = State::Prerequisites;
    expected.updated_at = t(1);

    let cases: Vec<(&str, RequestPatch, PatchEffect)> = vec![
        ("empty patch", RequestPatch::default(), |_| {}),
        (
            "rollback in progress",
            RequestPatch {
                rollback: Some(RollbackStatus::InProgress),
                ..RequestPatch::default()
            },
            |r| r.rollback = RollbackStatus::InProgress,
        ),
        (
            "rollback incomplete",
            RequestPatch {
                rollback: Some(RollbackStatus::Incomplete),
                ..RequestPatch::default()
            },
            |r| r.rollback = RollbackStatus::Incomplete,
        ),
        (
            "error",
            RequestPatch {
                error: Some("boom: «db» refused".to_string()),
                ..RequestPatch::default()
            },
            |r| r.error = Some("boom: «db» refused".to_string()),
        ),
        (
            "approval due",
            RequestPatch {
                approval_due: Some(Some(t(86_400))),
                ..RequestPatch::default()
            },
            |r| r.approval_due = Some(t(86_400)),
        ),
        (
            "escalated",
            RequestPatch {
                escalated: Some(true),
                ..RequestPatch::default()
            },
            |r| r.escalated = true,
        ),
        (
            "approval due cleared",
            RequestPatch {
                approval_due: Some(None),
                ..RequestPatch::default()
            },
            |r| r.approval_due = None,
        ),
        (
            "cancel requested",
            RequestPatch {
                cancel_requested: Some(true),
                ..RequestPatch::default()
            },
            |r| r.cancel_requested = true,
        ),
        (
            "waiting for",
            RequestPatch {
                waiting_for: Some(Some("JIRA-7".to_string())),
                ..RequestPatch::default()
            },
            |r| r.waiting_for = Some("JIRA-7".to_string()),
        ),
        (
            "waiting for cleared",
            RequestPatch {
                waiting_for: Some(None),
                ..RequestPatch::default()
            },
            |r| r.waiting_for = None,
        ),
        (
            "two fields at once",
            RequestPatch {
                escalated: Some(false),
                cancel_requested: Some(false),
                ..RequestPatch::default()
            },
            |r| {
                r.escalated = false;
                r.cancel_requested = false;
            },
        ),
    ];
    for (what, patch, apply) in cases {
        let got = ok(
            &format!("update: {what}"),
            store.update("req-1", patch, None).await,
        );
        apply(&mut expected);
        // The contract does not say whether an update moves `updated_at`.
        expected.updated_at = got.updated_at;
        assert_eq!(got, expected, "update: {what}: returned request");
        assert_eq!(
            get(store, "req-1").await,
            expected,
            "update: {what}: stored request"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// `wait_for_work` returns by its timeout (50 ms here), with and without queued work.
pub async fn check_wait_for_work_returns(store: &dyn Store) {
    let guard = Duration::from_secs(10);
    let wait = Duration::from_millis(50);
    assert!(
        tokio::time::timeout(guard, store.wait_for_work(wait))
            .await
            .is_ok(),
        "wait_for_work(50 ms) on an empty store did not return within {guard:?}"
    );
    submit(store, new_request("req-1"), t(0)).await;
    queue(store, "req-1", t(0)).await;
    assert!(
        tokio::time::timeout(guard, store.wait_for_work(wait))
            .await
            .is_ok(),
        "wait_for_work(50 ms) with queued work did not return within {guard:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Batches

fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.kind {
            EventKind::StateChanged { to, .. } => format!("state:{to}"),
            EventKind::ActionStarted { action_id, .. } => format!("started:{action_id}"),
            EventKind::ActionSucceeded { action_id, .. } => format!("succeeded:{action_id}"),
            EventKind::Log { message, .. } => format!("log:{message}"),
            other => format!("{other:?}"),
        })
        .collect()
}

fn succeeded(mut record: AttemptRecord, at: DateTime<Utc>) -> AttemptRecord {
    record.outcome = AttemptOutcome::Succeeded {
        output: ActionOutput {
            result: json!({ "id": 7 }),
            rollback_state: json!({ "undo": 7 }),
        },
        outputs: json!({ "id": 7 }),
    };
    record.finished_at = Some(at);
    record
}

/// `apply_then_claim`: a worker's last batch for one request and the claim of its next one.
/// The batch is written as `apply` would (its events, its attempt, the dropped lease), the
/// claim as `claim` would (claim order, a fresh lease), and the two are independent: a batch
/// that is refused still claims, a claim that finds nothing leaves the batch written, and the
/// claim never takes the batch's own request, even when that request's lease has run out.
pub async fn check_apply_then_claim(store: &dyn Store) {
    for (id, priority) in [("atc-1", 9), ("atc-2", 5), ("atc-3", 0)] {
        let mut new = new_request(id);
        new.priority = priority;
        submit(store, new, t(0)).await;
        queue(store, id, t(1)).await;
    }
    let (first, lease) = must_claim(store, "w1", t(2)).await;
    assert_eq!(first.id, "atc-1");
    let running = start_first_attempt(store, &lease, "a", t(3)).await;
    let events_before = all_events(store, "atc-1").await.len();

    // The end of atc-1, and the claim of the next request in claim order.
    let before_end = Utc::now();
    let done = store
        .apply_then_claim(
            &lease,
            vec![
                Write::FinishAttempt(succeeded(running.clone(), t(4))),
                Write::Event {
                    at: t(4),
                    kind: log("done"),
                },
                Write::Transition {
                    from: State::InProgress,
                    to: State::Completed,
                    change: change("worker:w1", None, t(4)),
                },
            ],
            "w1",
            LEASE,
            t(4),
        )
        .await;
    let ended = ok("the end of atc-1", done.applied);
    assert_eq!(ended.id, "atc-1");
    assert_eq!(ended.state, State::Completed);
    let (next, next_lease) = ok("the claim with the end of atc-1", done.claimed)
        .expect("atc-2 and atc-3 are queued: the claim must find one");
    assert_eq!(next.id, "atc-2", "claim order: priority 5 before 0");
    assert_eq!(next.state, State::Queued);
    assert_eq!(next_lease.request_id, "atc-2");
    assert_eq!(next_lease.worker_id, "w1");
    assert_lease_ends(
        store,
        "the claim with the end of atc-1",
        &next_lease,
        t(4),
        LEASE,
        (before_end, Utc::now()),
    );
    let events = all_events(store, "atc-1").await;
    assert_eq!(
        events.len(),
        events_before + 2,
        "the batch's log and transition were appended"
    );
    assert!(
        events.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "event numbers stay consecutive"
    );
    assert!(
        matches!(
            ok("attempts", store.attempts("atc-1").await)[0].outcome,
            AttemptOutcome::Succeeded { .. }
        ),
        "the attempt's end was journaled"
    );
    expect_lease_lost(
        "the ended request's lease went with its terminal transition",
        store.heartbeat(&lease, LEASE, t(5)).await,
    );
    // atc-2 is leased to w1 now: another worker gets atc-3.
    let (third, third_lease) = must_claim(store, "w2", t(5)).await;
    assert_eq!(third.id, "atc-3");

    // A refused batch (a stale `from`) writes nothing, and the claim is still made.
    submit(store, new_request("atc-4"), t(6)).await;
    queue(store, "atc-4", t(6)).await;
    let before = get(store, "atc-2").await;
    let refused = store
        .apply_then_claim(
            &next_lease,
            vec![Write::Transition {
                from: State::InProgress,
                to: State::Completed,
                change: change("worker:w1", None, t(7)),
            }],
            "w1",
            LEASE,
            t(7),
        )
        .await;
    assert!(
        matches!(
            refused.applied,
            Err(StoreError::Conflict {
                expected: State::InProgress,
                actual: State::Queued,
                ..
            })
        ),
        "atc-2 is queued, not in progress: {:?}",
        refused.applied
    );
    assert_eq!(
        get(store, "atc-2").await,
        before,
        "the refused batch wrote nothing"
    );
    let (fourth, fourth_lease) = ok("the claim with a refused batch", refused.claimed)
        .expect("atc-4 is queued: the claim is made although the batch was refused");
    assert_eq!(fourth.id, "atc-4");

    // A batch under a lease that has run out (nobody took over, so it still fences) is
    // written, and its claim does not take the batch's own request although it is now
    // claimable; with nothing else runnable it finds nothing.
    for (id, lease) in [("atc-2", &next_lease), ("atc-4", &fourth_lease)] {
        ok(
            &format!("cancel {id}"),
            store
                .transition(
                    id,
                    State::Queued,
                    State::Cancelled,
                    change("worker:w1", None, t(8)),
                    Some(lease),
                )
                .await,
        );
    }
    let late = t(5) + chrono::Duration::seconds(31);
    lapse(store, &third_lease, late).await;
    let done = store
        .apply_then_claim(
            &third_lease,
            vec![Write::Event {
                at: late,
                kind: log("late"),
            }],
            "w2",
            LEASE,
            late,
        )
        .await;
    ok(
        "a batch under an expired but unchallenged lease",
        done.applied,
    );
    assert!(
        ok("the claim beside it", done.claimed).is_none(),
        "atc-3, whose batch this is, is the only runnable request: the claim must not take it"
    );
    // Taken on its own, it is claimable.
    let (again, again_lease) = must_claim(store, "w3", late).await;
    assert_eq!(again.id, "atc-3");
    assert!(again_lease.token > third_lease.token);
}

/// `apply` writes a transition, an attempt start and an event together (seqs consecutive, in
/// batch order), then an attempt's finish, a log and the final transition; the terminal
/// transition drops the lease as `transition` does.
pub async fn check_apply_commits_a_batch(store: &dyn Store) {
    submit(store, new_request("b-1"), t(0)).await;
    queue(store, "b-1", t(1)).await;
    let (_, lease) = must_claim(store, "w1", t(2)).await;
    let started = attempt("b-1", "create", false, 1, t(3));
    let r = ok(
        "apply start batch",
        store
            .apply(
                "b-1",
                Some(&lease),
                vec![
                    Write::Transition {
                        from: State::Queued,
                        to: State::InProgress,
                        change: change("worker:w1", None, t(3)),
                    },
                    Write::StartAttempt(started.clone()),
                    Write::Event {
                        at: t(3),
                        kind: EventKind::ActionStarted {
                            action_id: "create".into(),
                            action_type: Some("rest".into()),
                            attempt: 1,
                            rollback: false,
                        },
                    },
                ],
            )
            .await,
    );
    assert_eq!(
        r.state,
        State::InProgress,
        "apply returns the request after the batch"
    );
    assert_eq!(r.updated_at, t(3), "the transition sets updated_at");
    assert_eq!(get(store, "b-1").await.state, State::InProgress);
    assert_eq!(
        ok("attempts", store.attempts("b-1").await),
        vec![started.clone()],
        "the started attempt is journaled"
    );
    let events = all_events(store, "b-1").await;
    assert_eq!(
        kinds(&events),
        [
            "state:submitted",
            "state:prerequisites",
            "state:validation",
            "state:queued",
            "state:in_progress",
            "started:create"
        ],
        "batch events follow earlier ones in batch order"
    );
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<u64>>(),
        "seqs stay consecutive"
    );
    assert!(
        events.iter().all(|e| e.correlation_id == "corr-b-1"),
        "batch events carry the correlation id"
    );
    let finished = succeeded(started, t(4));
    let r = ok(
        "apply finish batch",
        store
            .apply(
                "b-1",
                Some(&lease),
                vec![
                    Write::FinishAttempt(finished.clone()),
                    Write::Event {
                        at: t(4),
                        kind: EventKind::ActionSucceeded {
                            action_id: "create".into(),
                            action_type: Some("rest".into()),
                            attempt: 1,
                            rollback: false,
                        },
                    },
                    Write::Event {
                        at: t(4),
                        kind: log("done"),
                    },
                    Write::Patch(RequestPatch {
                        error: Some("none really".into()),
                        ..RequestPatch::default()
                    }),
                    Write::Transition {
                        from: State::InProgress,
                        to: State::Completed,
                        change: change("worker:w1", Some("all done"), t(5)),
                    },
                    Write::Audit(AuditRecord {
                        at: t(5),
                        actor: "worker:w1".into(),
                        action: "request.complete".into(),
                        target: "b-1".into(),
                        detail: json!({ "n": 1 }),
                    }),
                ],
            )
            .await,
    );
    assert_eq!(r.state, State::Completed);
    assert_eq!(
        r.error.as_deref(),
        Some("none really"),
        "a patch in a batch applies"
    );
    let stored = get(store, "b-1").await;
    assert_eq!(stored, r, "the stored request is the one apply returned");
    assert_eq!(
        ok("attempts", store.attempts("b-1").await),
        vec![finished],
        "the finished attempt replaces the running one"
    );
    let events = all_events(store, "b-1").await;
    assert_eq!(
        kinds(&events)[6..],
        ["succeeded:create", "log:done", "state:completed"],
        "events of the second batch in order"
    );
    assert_eq!(events.last().map(|e| e.seq), Some(9));
    match &events[8].kind {
        EventKind::StateChanged {
            from,
            actor,
            reason,
            ..
        } => {
            assert_eq!(*from, Some(State::InProgress));
            assert_eq!(actor, "worker:w1");
            assert_eq!(reason.as_deref(), Some("all done"));
        }
        other => panic!("expected a state change, got {other:?}"),
    }
    assert_eq!(
        ok("audit", store.audit_log(Some("b-1"), None, 0).await).len(),
        1,
        "the audit record of the batch is stored"
    );
    expect_lease_lost(
        "a write under the lease after the terminal batch",
        store
            .append_event("b-1", t(6), log("late"), Some(&lease))
            .await,
    );
}

/// A batch whose last write fails stores nothing of the batch: not its transition, events,
/// attempts, patch, audit or quota.
pub async fn check_apply_all_or_nothing(store: &dyn Store) {
    ok("limit", store.set_quota_limit("team-a", "db", 1).await);
    submit(store, new_request("n-1"), t(0)).await;
    queue(store, "n-1", t(1)).await;
    let (_, lease) = must_claim(store, "w1", t(2)).await;
    let before = get(store, "n-1").await;
    let events_before = all_events(store, "n-1").await;
    let prefix = || {
        vec![
            Write::Transition {
                from: State::Queued,
                to: State::InProgress,
                change: change("worker:w1", None, t(3)),
            },
            Write::StartAttempt(attempt("n-1", "a", false, 1, t(3))),
            Write::Event {
                at: t(3),
                kind: log("x"),
            },
            Write::Patch(RequestPatch {
                error: Some("patched".into()),
                ..RequestPatch::default()
            }),
            Write::ReserveQuota {
                resource: "db".into(),
                amount: 1,
                default_limit: None,
            },
            Write::Audit(AuditRecord {
                at: t(3),
                actor: "w1".into(),
                action: "x".into(),
                target: "n-1".into(),
                detail: json!(null),
            }),
        ]
    };
    type IsExpected = fn(&StoreError) -> bool;
    let failing: Vec<(&str, Write, IsExpected)> = vec![
        (
            "a transition from a state the request is no longer in",
            Write::Transition {
                from: State::Queued,
                to: State::InProgress,
                change: change("worker:w1", None, t(3)),
            },
            |e| matches!(e, StoreError::Conflict { .. }),
        ),
        (
            "an illegal transition",
            Write::Transition {
                from: State::InProgress,
                to: State::Queued,
                change: change("worker:w1", None, t(3)),
            },
            |e| matches!(e, StoreError::Illegal(_)),
        ),
        (
            "finishing an attempt never started",
            Write::FinishAttempt(succeeded(attempt("n-1", "zzz", false, 1, t(3)), t(4))),
            |e| matches!(e, StoreError::NotFound(_)),
        ),
        (
            "starting the same attempt twice",
            Write::StartAttempt(attempt("n-1", "a", false, 1, t(3))),
            |e| matches!(e, StoreError::Duplicate(_)),
        ),
        (
            "quota over the limit",
            Write::ReserveQuota {
                resource: "db".into(),
                amount: 5,
                default_limit: None,
            },
            |e| matches!(e, StoreError::QuotaExceeded { .. }),
        ),
    ];
    for (what, last, expected) in failing {
        let mut writes = prefix();
        writes.push(last);
        match store.apply("n-1", Some(&lease), writes).await {
            Err(e) if expected(&e) => {}
            other => panic!("a batch ending in {what}: unexpected result {other:?}"),
        }
        assert_eq!(
            get(store, "n-1").await,
            before,
            "{what}: the request is unchanged"
        );
        assert_eq!(
            all_events(store, "n-1").await,
            events_before,
            "{what}: no event of the batch is stored"
        );
        assert!(
            ok("attempts", store.attempts("n-1").await).is_empty(),
            "{what}: no attempt of the batch is stored"
        );
        assert!(
            ok("audit", store.audit_log(Some("n-1"), None, 0).await).is_empty(),
            "{what}: no audit record of the batch is stored"
        );
        assert_eq!(
            used(store, "team-a", "db").await,
            0,
            "{what}: no quota reserved"
        );
    }
    // The same batch without the failing write goes through whole.
    let r = ok(
        "the batch alone",
        store.apply("n-1", Some(&lease), prefix()).await,
    );
    assert_eq!(r.state, State::InProgress);
    assert_eq!(used(store, "team-a", "db").await, 1);
    assert_eq!(ok("attempts", store.attempts("n-1").await).len(), 1);
}

/// A batch under a stale lease, or a lease on another request, stores nothing; a batch on an
/// unknown request is `NotFound`.
pub async fn check_apply_fenced(store: &dyn Store) {
    submit(store, new_request("f-1"), t(0)).await;
    submit(store, new_request("f-2"), t(0)).await;
    queue(store, "f-1", t(1)).await;
    let (_, old) = must_claim(store, "w1", t(2)).await;
    // The lease expires and another worker takes over.
    let late = t(2) + chrono::Duration::seconds(LEASE.as_secs() as i64 + 1);
    lapse(store, &old, late).await;
    let (_, new) = must_claim(store, "w2", late).await;
    let events_before = all_events(store, "f-1").await;
    let batch = || {
        vec![
            Write::Event {
                at: t(100),
                kind: log("stale"),
            },
            Write::Transition {
                from: State::Queued,
                to: State::InProgress,
                change: change("worker:w1", None, t(100)),
            },
        ]
    };
    expect_lease_lost(
        "a batch under a lease taken over",
        store.apply("f-1", Some(&old), batch()).await,
    );
    expect_lease_lost(
        "a batch on another request than the lease's",
        store
            .apply(
                "f-2",
                Some(&new),
                vec![Write::Event {
                    at: t(100),
                    kind: log("x"),
                }],
            )
            .await,
    );
    expect_lease_lost(
        "an attempt start without a lease",
        store
            .apply(
                "f-1",
                None,
                vec![Write::StartAttempt(attempt("f-1", "a", false, 1, t(100)))],
            )
            .await,
    );
    assert_eq!(
        all_events(store, "f-1").await,
        events_before,
        "nothing of the refused batches"
    );
    assert_eq!(get(store, "f-1").await.state, State::Queued);
    expect_not_found(
        "a batch on an unknown request",
        store
            .apply(
                "nope",
                None,
                vec![Write::Event {
                    at: t(1),
                    kind: log("x"),
                }],
            )
            .await,
    );
    let r = ok(
        "the new lease's batch",
        store.apply("f-1", Some(&new), batch()).await,
    );
    assert_eq!(r.state, State::InProgress);
}

/// The batches a worker writes (transitions, patches, events, attempt starts and finishes,
/// nothing else): a stale `from` on the first transition, an attempt finished that was never
/// started or one started twice stores nothing of the batch; patches in one batch apply in
/// order, field by field.
pub async fn check_apply_worker_batches_all_or_nothing(store: &dyn Store) {
    submit(store, new_request("w-1"), t(0)).await;
    queue(store, "w-1", t(1)).await;
    let (_, lease) = must_claim(store, "w1", t(2)).await;
    let running = start_first_attempt(store, &lease, "a", t(3)).await;
    let before = get(store, "w-1").await;
    let events_before = all_events(store, "w-1").await;
    let attempts_before = ok("attempts", store.attempts("w-1").await);
    let patch = |error: &str| {
        Write::Patch(RequestPatch {
            error: Some(error.into()),
            ..RequestPatch::default()
        })
    };
    let to_post = || Write::Transition {
        from: State::InProgress,
        to: State::PostFulfillment,
        change: change("worker:w1", None, t(4)),
    };
    let event = || Write::Event {
        at: t(4),
        kind: log("x"),
    };
    type IsExpected = fn(&StoreError) -> bool;
    let failing: Vec<(&str, Vec<Write>, IsExpected)> = vec![
        (
            "a first transition from a state the request is not in",
            vec![
                event(),
                patch("p"),
                Write::StartAttempt(attempt("w-1", "b", false, 1, t(4))),
                Write::Transition {
                    from: State::PostFulfillment,
                    to: State::Completed,
                    change: change("worker:w1", None, t(4)),
                },
            ],
            |e| {
                matches!(
                    e,
                    StoreError::Conflict {
                        expected: State::PostFulfillment,
                        actual: State::InProgress,
                        ..
                    }
                )
            },
        ),
        (
            "finishing an attempt never started",
            vec![
                event(),
                patch("p"),
                Write::FinishAttempt(succeeded(attempt("w-1", "zzz", false, 1, t(3)), t(4))),
                to_post(),
            ],
            |e| matches!(e, StoreError::NotFound(_)),
        ),
        (
            "finishing an attempt never started, without a transition",
            vec![
                patch("p"),
                Write::FinishAttempt(succeeded(attempt("w-1", "a", false, 2, t(3)), t(4))),
            ],
            |e| matches!(e, StoreError::NotFound(_)),
        ),
        (
            "starting an attempt that exists",
            vec![event(), Write::StartAttempt(running.clone()), to_post()],
            |e| matches!(e, StoreError::Duplicate(_)),
        ),
    ];
    for (what, writes, expected) in failing {
        match store.apply("w-1", Some(&lease), writes).await {
            Err(e) if expected(&e) => {}
            other => panic!("a batch with {what}: unexpected result {other:?}"),
        }
        assert_eq!(
            get(store, "w-1").await,
            before,
            "{what}: the request is unchanged"
        );
        assert_eq!(
            all_events(store, "w-1").await,
            events_before,
            "{what}: no event of the batch is stored"
        );
        assert_eq!(
            ok("attempts", store.attempts("w-1").await),
            attempts_before,
            "{what}: no attempt of the batch is stored or finished"
        );
    }
    // The last batch of the run: two patches (the later wins where both set a field), the
    // finish, an event and two transitions to the end.
    let r = ok(
        "the last batch",
        store
            .apply(
                "w-1",
                Some(&lease),
                vec![
                    Write::Patch(RequestPatch {
                        error: Some("first".into()),
                        escalated: Some(true),
                        waiting_for: Some(Some("ticket".into())),
                        ..RequestPatch::default()
                    }),
                    Write::FinishAttempt(succeeded(running.clone(), t(4))),
                    Write::Patch(RequestPatch {
                        error: Some("second".into()),
                        waiting_for: Some(None),
                        ..RequestPatch::default()
                    }),
                    event(),
                    to_post(),
                    Write::Transition {
                        from: State::PostFulfillment,
                        to: State::Completed,
                        change: change("worker:w1", Some("done"), t(5)),
                    },
                ],
            )
            .await,
    );
    assert_eq!(r.state, State::Completed);
    assert_eq!(r.error.as_deref(), Some("second"), "the later patch wins");
    assert!(r.escalated, "a field only the earlier patch sets is kept");
    assert_eq!(
        r.waiting_for, None,
        "the later patch clears what the earlier set"
    );
    assert_eq!(r.updated_at, t(5), "the last transition's time");
    assert_eq!(get(store, "w-1").await, r, "stored as returned");
    let attempts = ok("attempts", store.attempts("w-1").await);
    assert_eq!(
        attempts,
        vec![succeeded(running, t(4))],
        "the attempt is finished"
    );
    let events = all_events(store, "w-1").await;
    assert_eq!(
        kinds(&events[events_before.len()..]),
        ["log:x", "state:post_fulfillment", "state:completed"]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "event numbers stay consecutive");
    expect_lease_lost(
        "a write after the terminal batch",
        store
            .append_event("w-1", t(6), log("late"), Some(&lease))
            .await,
    );
}

/// Batches and single events written at once on one request all land, each batch's events
/// numbered together, with no number missing or taken twice.
pub async fn check_apply_concurrent_batches_number_events(store: &dyn Store) {
    submit(store, new_request("c-1"), t(0)).await;
    let lease = run(store, "c-1", "w1", t(1)).await;
    let before = all_events(store, "c-1").await.len();
    let batches = (0..8).map(|i| {
        let lease = lease.clone();
        async move {
            let writes = vec![
                Write::Event {
                    at: t(2),
                    kind: log(&format!("batch {i} first")),
                },
                Write::Event {
                    at: t(2),
                    kind: log(&format!("batch {i} second")),
                },
            ];
            ok(
                &format!("batch {i}"),
                store.apply("c-1", Some(&lease), writes).await,
            );
        }
    });
    let singles = (0..4).map(|i| async move {
        ok(
            &format!("event {i}"),
            store
                .append_event("c-1", t(2), log(&format!("single {i}")), None)
                .await,
        );
    });
    tokio::join!(
        futures_util::future::join_all(batches),
        futures_util::future::join_all(singles)
    );
    let events = all_events(store, "c-1").await;
    assert_eq!(
        events.len(),
        before + 8 * 2 + 4,
        "every event is stored once"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "numbers are consecutive, none taken twice");
    let names = kinds(&events);
    for i in 0..8 {
        let first = names
            .iter()
            .position(|n| *n == format!("log:batch {i} first"))
            .unwrap_or_else(|| panic!("batch {i}'s first event is missing: {names:?}"));
        assert_eq!(
            names.get(first + 1).map(String::as_str),
            Some(format!("log:batch {i} second").as_str()),
            "batch {i}'s events are numbered together"
        );
    }
}

fn admission(id: &str, quota: u64) -> Vec<Write> {
    admission_limited(id, quota, None)
}

fn admission_limited(id: &str, quota: u64, default_limit: Option<u64>) -> Vec<Write> {
    vec![
        Write::Audit(AuditRecord {
            at: t(0),
            actor: "ada".into(),
            action: "request.submit".into(),
            target: id.into(),
            detail: json!({ "item": "postgres-database" }),
        }),
        Write::Transition {
            from: State::Submitted,
            to: State::Prerequisites,
            change: change("system", None, t(0)),
        },
        Write::ReserveQuota {
            resource: "db".into(),
            amount: quota,
            default_limit,
        },
        Write::Transition {
            from: State::Prerequisites,
            to: State::Validation,
            change: change("system", None, t(0)),
        },
        Write::Patch(RequestPatch {
            approval_due: Some(Some(t(3600))),
            ..RequestPatch::default()
        }),
        Write::Transition {
            from: State::Validation,
            to: State::AwaitingApproval,
            change: change("system", Some("needs a yes"), t(0)),
        },
    ]
}

/// `submit_with` stores the request and its admission writes together; a second submission
/// with the same key returns the first request and applies nothing.
pub async fn check_submit_with_admits_in_one_write(store: &dyn Store) {
    ok("limit", store.set_quota_limit("team-a", "db", 3).await);
    let mut new = new_request("s-1");
    new.idempotency_key = Some("key-s".into());
    let s = ok(
        "submit_with",
        store
            .submit_with(new.clone(), "ada", t(0), admission("s-1", 2))
            .await,
    );
    assert!(s.created);
    assert_eq!(s.request.state, State::AwaitingApproval);
    assert_eq!(s.request.approval_due, Some(t(3600)));
    assert_eq!(get(store, "s-1").await, s.request, "stored as returned");
    assert_eq!(
        kinds(&all_events(store, "s-1").await),
        [
            "state:submitted",
            "state:prerequisites",
            "state:validation",
            "state:awaiting_approval"
        ]
    );
    assert_eq!(used(store, "team-a", "db").await, 2);
    assert_eq!(
        ok("audit", store.audit_log(Some("s-1"), None, 0).await).len(),
        1
    );
    // The same key again: the first request, nothing applied twice.
    let mut again = new.clone();
    again.id = "s-1-again".into();
    let s2 = ok(
        "submit_with again",
        store
            .submit_with(again, "ada", t(1), admission("s-1-again", 1))
            .await,
    );
    assert!(!s2.created, "the same key does not create");
    assert_eq!(s2.request.id, "s-1");
    assert_eq!(
        used(store, "team-a", "db").await,
        2,
        "no second reservation"
    );
    assert_eq!(all_events(store, "s-1").await.len(), 4);
    assert!(ok("get", store.get("s-1-again").await).is_none());
}

/// A reservation's `default_limit` (the catalog's team quota) limits a team that has no limit
/// set for the resource; a limit set for the team replaces it.
pub async fn check_submit_with_default_quota_limit(store: &dyn Store) {
    ok(
        "within the default",
        store
            .submit_with(
                new_request("d-1"),
                "ada",
                t(0),
                admission_limited("d-1", 2, Some(3)),
            )
            .await,
    );
    match store
        .submit_with(
            new_request("d-2"),
            "ada",
            t(0),
            admission_limited("d-2", 2, Some(3)),
        )
        .await
    {
        Err(StoreError::QuotaExceeded {
            limit: 3,
            used: 2,
            asked: 2,
            ..
        }) => {}
        other => panic!("over the default limit: expected QuotaExceeded, got {other:?}"),
    }
    assert!(
        ok("get", store.get("d-2").await).is_none(),
        "nothing stored"
    );
    ok("limit", store.set_quota_limit("team-a", "db", 10).await);
    ok(
        "the team's own limit",
        store
            .submit_with(
                new_request("d-3"),
                "ada",
                t(0),
                admission_limited("d-3", 2, Some(3)),
            )
            .await,
    );
    assert_eq!(used(store, "team-a", "db").await, 4);
}

/// An item definition kept with a submission is read back by its hash; a second one under
/// the same hash leaves the first as it was; an unknown hash has none.
pub async fn check_item_definitions(store: &dyn Store) {
    let keep = |source: &str| Write::KeepItemDefinition {
        hash: "h-1".into(),
        item_id: "postgres-database".into(),
        source: source.into(),
    };
    let mut first = admission("v-1", 0);
    first.push(keep("version: 1.0.0"));
    ok(
        "submit",
        store
            .submit_with(new_request("v-1"), "ada", t(0), first)
            .await,
    );
    let mut second = admission("v-2", 0);
    second.push(keep("version: 2.0.0"));
    ok(
        "submit",
        store
            .submit_with(new_request("v-2"), "ada", t(1), second)
            .await,
    );
    assert_eq!(
        ok("item_definition", store.item_definition("h-1").await),
        Some((
            "postgres-database".to_string(),
            "version: 1.0.0".to_string()
        ))
    );
    assert_eq!(
        ok("item_definition", store.item_definition("h-2").await),
        None
    );
}

/// A failing admission batch stores nothing: no request, no event, no audit, and its
/// idempotency key stays free.
pub async fn check_submit_with_all_or_nothing(store: &dyn Store) {
    ok("limit", store.set_quota_limit("team-a", "db", 1).await);
    let mut new = new_request("s-2");
    new.idempotency_key = Some("key-2".into());
    match store
        .submit_with(new.clone(), "ada", t(0), admission("s-2", 5))
        .await
    {
        Err(StoreError::QuotaExceeded {
            asked: 5, limit: 1, ..
        }) => {}
        other => panic!("an admission over quota: expected QuotaExceeded, got {other:?}"),
    }
    assert!(
        ok("get", store.get("s-2").await).is_none(),
        "no request stored"
    );
    assert!(all_events(store, "s-2").await.is_empty(), "no event stored");
    assert!(ok("audit", store.audit_log(Some("s-2"), None, 0).await).is_empty());
    assert_eq!(used(store, "team-a", "db").await, 0);
    assert!(
        ok("list", store.list(&RequestFilter::default()).await).is_empty(),
        "no request listed"
    );
    // The key is free: a plain submission with it creates the request.
    let s = ok("submit after", store.submit(new, "ada", t(1)).await);
    assert!(s.created, "the key of a failed admission is not taken");
}

/// Admissions reserve against what earlier requests of the team hold: up to the limit exactly,
/// not one more; a refused admission (or an absurd amount) stores nothing and leaves the total
/// as it was; the total of another resource or team is separate.
pub async fn check_submit_with_quota_counts_earlier_requests(store: &dyn Store) {
    ok("limit", store.set_quota_limit("team-a", "db", 3).await);
    let admit = |id: &str, amount: u64| {
        let id = id.to_string();
        async move {
            store
                .submit_with(new_request(&id), "ada", t(0), admission(&id, amount))
                .await
        }
    };
    ok("the first two", admit("q-1", 2).await);
    match admit("q-2", 2).await {
        Err(StoreError::QuotaExceeded {
            limit: 3,
            used: 2,
            asked: 2,
            ..
        }) => {}
        other => panic!("2 more over 2 of 3: expected QuotaExceeded (used 2), got {other:?}"),
    }
    assert!(
        ok("get", store.get("q-2").await).is_none(),
        "q-2 not stored"
    );
    assert_eq!(
        used(store, "team-a", "db").await,
        2,
        "the refusal reserved nothing"
    );
    match admit("q-3", u64::MAX).await {
        Err(StoreError::QuotaExceeded { .. }) => {}
        other => panic!("an absurd amount: expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(used(store, "team-a", "db").await, 2);
    ok("up to the limit exactly", admit("q-4", 1).await);
    assert_eq!(used(store, "team-a", "db").await, 3);
    match admit("q-5", 1).await {
        Err(StoreError::QuotaExceeded { used: 3, .. }) => {}
        other => panic!("one over the limit: expected QuotaExceeded, got {other:?}"),
    }
    // Without a limit any amount that fits is reserved; other teams count apart.
    let mut other_team = new_request("q-6");
    other_team.team = "team-b".into();
    ok(
        "another team",
        store
            .submit_with(other_team, "ada", t(0), admission("q-6", 1_000_000))
            .await,
    );
    assert_eq!(used(store, "team-b", "db").await, 1_000_000);
    assert_eq!(used(store, "team-a", "db").await, 3);
    ok("nothing reserved", admit("q-7", 0).await);
    assert_eq!(used(store, "team-a", "db").await, 3);
}

/// Sealed values ([`Write::Seal`], [`Store::sealed`]): stored with the request's wrapped data
/// key, refused under another key (and the whole batch with them), trimmed when the request
/// ends (a failed one keeps all but the form's values), and re-wrapped by compare-and-set.
pub async fn check_sealed_values(store: &dyn Store) {
    use crate::sealing::WrappedKey;
    let k1 = WrappedKey {
        kek_id: "kek-a".into(),
        wrapped: vec![1, 2, 3, 0, 255],
    };
    let k2 = WrappedKey {
        kek_id: "kek-b".into(),
        wrapped: vec![9, 9],
    };
    let seal = |key: &WrappedKey, values: &[(&str, &[u8])]| Write::Seal {
        key: key.clone(),
        values: values
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect(),
    };
    let none = ok("sealed of an unknown request", store.sealed("nobody").await);
    assert_eq!(
        none,
        SealedSecrets::default(),
        "an unknown request has nothing sealed"
    );
    for (id, end) in [
        ("sealed-failed", State::Failed),
        ("sealed-done", State::Completed),
    ] {
        let submitted = ok(
            &format!("submit {id} with sealed values"),
            store
                .submit_with(
                    new_request(id),
                    "alice",
                    t(0),
                    vec![seal(&k1, &[("field:pw", b"c1"), ("field:token", b"c2")])],
                )
                .await,
        );
        assert!(submitted.created);
        let s = ok(&format!("sealed {id}"), store.sealed(id).await);
        assert_eq!(s.key.as_ref(), Some(&k1), "{id}: the data key as written");
        assert_eq!(s.values.len(), 2, "{id}: both values");
        assert_eq!(s.values["field:pw"], b"c1".to_vec());
        let lease = run(store, id, "w1", t(1)).await;
        // The same key again: values added and replaced.
        ok(
            &format!("{id}: seal a rollback input"),
            store
                .apply(
                    id,
                    Some(&lease),
                    vec![seal(&k1, &[("rollback:a", b"in"), ("field:pw", b"c1b")])],
                )
                .await,
        );
        // Another key: refused, and nothing of the batch is kept.
        let refused = store
            .apply(
                id,
                Some(&lease),
                vec![
                    Write::Event {
                        at: t(2),
                        kind: EventKind::Log {
                            action_id: None,
                            level: "info".into(),
                            message: "kept?".into(),
                        },
                    },
                    seal(&k2, &[("rollback:b", b"x")]),
                ],
            )
            .await;
        assert!(
            refused.is_err(),
            "{id}: a seal under another data key must be refused"
        );
        let s = ok(&format!("sealed {id}"), store.sealed(id).await);
        assert_eq!(s.key.as_ref(), Some(&k1));
        assert_eq!(
            s.values.keys().cloned().collect::<Vec<_>>(),
            vec!["field:pw", "field:token", "rollback:a"],
            "{id}: the refused batch left nothing"
        );
        assert_eq!(s.values["field:pw"], b"c1b".to_vec());
        // The end, as a worker writes it: under the lease with its event.
        ok(
            &format!("{id}: end as {end}"),
            store
                .apply(
                    id,
                    Some(&lease),
                    vec![Write::Transition {
                        from: State::InProgress,
                        to: end,
                        change: change("worker:w1", None, t(3)),
                    }],
                )
                .await,
        );
        let s = ok(
            &format!("sealed {id} after the end"),
            store.sealed(id).await,
        );
        if end == State::Failed {
            assert_eq!(
                s.key.as_ref(),
                Some(&k1),
                "a failed request keeps its data key"
            );
            assert_eq!(
                s.values.keys().cloned().collect::<Vec<_>>(),
                vec!["rollback:a"],
                "a failed request keeps its rollback inputs, not its form's secrets"
            );
        } else {
            assert_eq!(
                s,
                SealedSecrets::default(),
                "a completed request keeps nothing sealed"
            );
        }
    }
    // Re-wrapping after a rotation: only keys not under the current KEK, compare-and-set.
    let old = ok(
        "keys not under kek-b",
        store.keys_not_wrapped_by("kek-b", 10).await,
    );
    assert_eq!(old, vec![("sealed-failed".to_string(), k1.clone())]);
    assert!(
        ok(
            "keys not under kek-a",
            store.keys_not_wrapped_by("kek-a", 10).await
        )
        .is_empty()
    );
    let new = WrappedKey {
        kek_id: "kek-b".into(),
        wrapped: vec![4, 5, 6],
    };
    assert!(ok(
        "rewrap",
        store.rewrap_key("sealed-failed", &k1, &new).await
    ));
    assert!(
        !ok(
            "rewrap from a stale key",
            store.rewrap_key("sealed-failed", &k1, &new).await
        ),
        "a stale re-wrap must not apply"
    );
    assert_eq!(
        ok("sealed after rewrap", store.sealed("sealed-failed").await).key,
        Some(new)
    );
    assert!(
        ok(
            "keys not under kek-b",
            store.keys_not_wrapped_by("kek-b", 10).await
        )
        .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Retention

/// `purge` deletes ended requests last updated before its cutoff, oldest first and at most
/// `limit`, with their events, attempts, decisions and quota; never a live request nor a newer
/// ended one. Audit records before their own cutoff go, oldest first, at most `limit`.
pub async fn check_purge(store: &dyn Store) {
    request_in(store, "old-1", "team-a", "item", t(0), &TO_COMPLETED, t(10)).await;
    request_in(store, "old-2", "team-a", "item", t(0), &TO_FAILED, t(20)).await;
    request_in(store, "live", "team-a", "item", t(0), &TO_APPROVAL, t(5)).await;
    request_in(store, "new", "team-a", "item", t(0), &TO_COMPLETED, t(100)).await;
    ok(
        "reserve",
        store.reserve_quota("old-1", "team-a", "databases", 2).await,
    );
    ok(
        "reserve",
        store.reserve_quota("live", "team-a", "databases", 3).await,
    );
    for (at, target) in [(1, "old-1"), (2, "live"), (50, "new")] {
        ok(
            "audit",
            store
                .audit(AuditRecord {
                    at: t(at),
                    actor: "ada".to_string(),
                    action: "request.submit".to_string(),
                    target: target.to_string(),
                    detail: json!({}),
                })
                .await,
        );
    }
    let first = ok("purge", store.purge(t(50), t(30), 1).await);
    assert_eq!(
        first,
        super::Purged {
            requests: 1,
            audit: 1
        },
        "purge with limit 1: the oldest ended request and the oldest audit record"
    );
    assert!(
        ok("get", store.get("old-1").await).is_none(),
        "purge: old-1 (ended at t10) went first"
    );
    assert!(
        ok("events", store.events("old-1", 0, 100).await).is_empty(),
        "purge: old-1's events went with it"
    );
    assert!(
        ok("get", store.get("old-2").await).is_some(),
        "purge with limit 1: old-2 waits for the next pass"
    );
    let used = |u: Vec<QuotaUsage>| u.iter().map(|q| q.used).sum::<u64>();
    assert_eq!(
        used(ok("quota", store.quota_usage("team-a").await)),
        3,
        "purge: old-1's reservation is returned, live's kept"
    );
    let second = ok("purge", store.purge(t(50), t(30), 10).await);
    assert_eq!(
        second,
        super::Purged {
            requests: 1,
            audit: 1
        },
        "purge: old-2, and the second audit record before t30"
    );
    let third = ok("purge", store.purge(t(50), t(30), 10).await);
    assert_eq!(
        third,
        super::Purged::default(),
        "purge: nothing is left to purge"
    );
    assert!(
        ok("get", store.get("live").await).is_some(),
        "purge never deletes a live request, however old"
    );
    assert!(
        !ok("events", store.events("live", 0, 100).await).is_empty(),
        "the live request keeps its events"
    );
    assert!(
        ok("get", store.get("new").await).is_some(),
        "purge keeps requests that ended after the cutoff"
    );
    let audit = ok("audit log", store.audit_log(None, None, 0).await);
    assert_eq!(audit.len(), 1, "purge: the audit record after t30 stays");
    assert_eq!(audit[0].record.target, "new");
}

/// `parked_requests` pages through the requests of one state parked on a `waiting_for` with a
/// prefix, in `(waiting_for, id)` order.
pub async fn check_parked_requests(store: &dyn Store) {
    const TO_RUNNING: [State; 4] = [
        State::Prerequisites,
        State::Validation,
        State::Queued,
        State::InProgress,
    ];
    let park = async |id: &str, path: &[State], on: &str| {
        request_in(store, id, "team-a", "item", t(0), path, t(1)).await;
        ok(
            "park",
            store
                .update(
                    id,
                    RequestPatch {
                        waiting_for: Some(Some(on.to_string())),
                        ..RequestPatch::default()
                    },
                    None,
                )
                .await,
        );
    };
    park("p-1", &TO_RUNNING, "manual:NET-2").await;
    park("p-2", &TO_RUNNING, "manual:NET-1").await;
    park("p-3", &TO_RUNNING, "manual:NET-3").await;
    park("p-4", &TO_RUNNING, "other:NET-0").await;
    park("p-5", &TO_APPROVAL, "manual:NET-0").await;
    let ids = |v: Vec<Request>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let first = ok(
        "parked",
        store
            .parked_requests("manual:", State::InProgress, None, 2)
            .await,
    );
    assert_eq!(
        ids(first.clone()),
        ["p-2", "p-1"],
        "parked_requests: in waiting_for order, only the state and the prefix"
    );
    let last = first.last().unwrap();
    let after = (last.waiting_for.as_deref().unwrap(), last.id.as_str());
    assert_eq!(
        ids(ok(
            "parked",
            store
                .parked_requests("manual:", State::InProgress, Some(after), 2)
                .await
        )),
        ["p-3"],
        "parked_requests: the next page goes on after the last one"
    );
    assert_eq!(
        ids(ok(
            "parked",
            store
                .parked_requests("manual:", State::AwaitingApproval, None, 10)
                .await
        )),
        ["p-5"],
        "parked_requests: another state"
    );
}

/// Plugin key-value data: namespaces apart, values replaced, a namespace capped in bytes (a set
/// that would pass the cap changes nothing), deletes.
pub async fn check_plugin_kv(store: &dyn Store) {
    assert_eq!(ok("kv_get", store.kv_get("slack", "k").await), None);
    assert!(ok("kv_set", store.kv_set("slack", "k", "v1", 100).await));
    assert!(ok("kv_set", store.kv_set("jira", "k", "other", 100).await));
    assert_eq!(
        ok("kv_get", store.kv_get("slack", "k").await).as_deref(),
        Some("v1"),
        "kv: namespaces do not meet"
    );
    assert!(ok("kv_set", store.kv_set("slack", "k", "v2", 100).await));
    assert_eq!(
        ok("kv_get", store.kv_get("slack", "k").await).as_deref(),
        Some("v2"),
        "kv: a set replaces the value"
    );
    // 20 bytes in the namespace: `k` + `v2` (3) and `big` + 15 bytes (18) is over.
    assert!(
        !ok("kv_set", store.kv_set("slack", "big", "ééééééé.", 20).await),
        "kv: a set over the namespace's bytes is refused (é is 2 bytes)"
    );
    assert_eq!(ok("kv_get", store.kv_get("slack", "big").await), None);
    assert!(
        ok(
            "kv_set",
            store.kv_set("slack", "k", &"x".repeat(19), 20).await
        ),
        "kv: replacing a key counts its new value only"
    );
    ok("kv_delete", store.kv_delete("slack", "k").await);
    assert_eq!(ok("kv_get", store.kv_get("slack", "k").await), None);
    assert_eq!(
        ok("kv_get", store.kv_get("jira", "k").await).as_deref(),
        Some("other"),
        "kv: a delete touches its namespace only"
    );
}
