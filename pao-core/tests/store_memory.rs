//! Runs the shared [`Store`](pao_core::store::Store) conformance suite on [`MemoryStore`]: one
//! test per check so a failure is named, and one that runs them all through `run_all` (which
//! also catches a check added to the suite but not listed here).

use pao_core::store::{MemoryStore, conformance};

macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                conformance::$check(&MemoryStore::new()).await;
            }
        )*
    };
}

checks!(
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
    check_lease_fences_only_its_request,
    check_attempts_journal,
    check_finish_unknown_attempt,
    check_list_filters,
    check_list_pagination,
    check_approvals,
    check_quotas,
    check_quota_concurrent_reservations,
    check_quota_huge_amount,
    check_audit,
    check_update_patch,
    check_wait_for_work_returns,
);

#[tokio::test]
async fn run_all() {
    conformance::run_all(|| async { MemoryStore::new() }).await;
}
