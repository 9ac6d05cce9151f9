//! The request lifecycle: the states a request moves through and the only transitions
//! allowed between them. Terminal states absorb: nothing leaves `Completed`, `Failed`,
//! `Cancelled` or `Rejected`. Retrying a failed request therefore starts a new run linked to
//! the failed one (as Temporal's reset does), which resumes from the failed run's journal.
//!
//! ```
//! use pao_core::lifecycle::RequestState::*;
//!
//! assert!(Submitted.can_transition_to(Prerequisites));
//! assert!(InProgress.can_transition_to(Cancelled));
//! assert!(Completed.transition_to(InProgress).is_err());
//! assert!(Failed.is_terminal());
//! ```

use serde::{Deserialize, Serialize};

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Accepted and persisted; nothing checked yet.
    Submitted,
    /// Quota, access, item lifecycle and change-freeze checks.
    Prerequisites,
    /// Field values checked against the form schema.
    Validation,
    /// Waiting for approvers.
    AwaitingApproval,
    /// Waiting for a worker.
    Queued,
    /// Actions running (or, in manual mode, the ticket open).
    InProgress,
    /// Post-fulfillment actions running.
    PostFulfillment,
    /// Done.
    Completed,
    /// An action failed and the request stopped (after rollback where asked for).
    Failed,
    /// Cancelled by a person.
    Cancelled,
    /// Refused by a prerequisite, validation or an approver.
    Rejected,
}

impl RequestState {
    /// Every state, in lifecycle order.
    pub const ALL: [RequestState; 11] = [
        RequestState::Submitted,
        RequestState::Prerequisites,
        RequestState::Validation,
        RequestState::AwaitingApproval,
        RequestState::Queued,
        RequestState::InProgress,
        RequestState::PostFulfillment,
        RequestState::Completed,
        RequestState::Failed,
        RequestState::Cancelled,
        RequestState::Rejected,
    ];

    /// Whether the request can never move again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RequestState::Completed
                | RequestState::Failed
                | RequestState::Cancelled
                | RequestState::Rejected
        )
    }

    /// Whether a request in this state may have attempts in its journal: it reached
    /// `InProgress` at some point. Requests that were never queued, or wait in the queue, have
    /// none.
    pub fn may_have_attempts(self) -> bool {
        !matches!(
            self,
            RequestState::Submitted
                | RequestState::Prerequisites
                | RequestState::Validation
                | RequestState::AwaitingApproval
                | RequestState::Queued
                | RequestState::Rejected
        )
    }

    /// The state with that snake_case name.
    pub fn from_name(name: &str) -> Option<RequestState> {
        RequestState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The snake_case name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Submitted => "submitted",
            RequestState::Prerequisites => "prerequisites",
            RequestState::Validation => "validation",
            RequestState::AwaitingApproval => "awaiting_approval",
            RequestState::Queued => "queued",
            RequestState::InProgress => "in_progress",
            RequestState::PostFulfillment => "post_fulfillment",
            RequestState::Completed => "completed",
            RequestState::Failed => "failed",
            RequestState::Cancelled => "cancelled",
            RequestState::Rejected => "rejected",
        }
    }

    /// The state with that name.
    pub fn parse(name: &str) -> Option<RequestState> {
        RequestState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether `self → to` is allowed.
    pub fn can_transition_to(self, to: RequestState) -> bool {
        use RequestState::*;
        if self.is_terminal() {
            return false;
        }
        // Cancel is allowed from every non-terminal state.
        if to == Cancelled {
            return true;
        }
        matches!(
            (self, to),
            (Submitted, Prerequisites)
                | (Prerequisites, Validation | Rejected)
                | (Validation, AwaitingApproval | Queued | Rejected)
                | (AwaitingApproval, Queued | Rejected)
                | (Queued, InProgress)
                | (InProgress, PostFulfillment | Completed | Failed)
                | (PostFulfillment, Completed | Failed)
        )
    }

    /// The transition, or a typed error naming both states.
    pub fn transition_to(self, to: RequestState) -> Result<RequestState, IllegalTransition> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a request cannot go from {from} to {to}{}", if from.is_terminal() { " (it has ended)" } else { "" })]
pub struct IllegalTransition {
    /// Where the request is.
    pub from: RequestState,
    /// Where it was asked to go.
    pub to: RequestState,
}

#[cfg(test)]
mod tests {
    use super::RequestState::*;
    use super::*;

    #[test]
    fn terminal_states_absorb() {
        for from in RequestState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in RequestState::ALL {
                let e = from.transition_to(to).unwrap_err();
                assert!(e.to_string().contains("it has ended"), "{e}");
            }
        }
    }

    #[test]
    fn cancel_from_every_live_state() {
        for from in RequestState::ALL.into_iter().filter(|s| !s.is_terminal()) {
            assert!(from.can_transition_to(Cancelled), "{from}");
        }
    }

    #[test]
    fn happy_path_and_no_skipping() {
        let path = [
            Submitted,
            Prerequisites,
            Validation,
            AwaitingApproval,
            Queued,
            InProgress,
            PostFulfillment,
            Completed,
        ];
        for w in path.windows(2) {
            assert!(w[0].can_transition_to(w[1]), "{} -> {}", w[0], w[1]);
        }
        assert!(!Submitted.can_transition_to(InProgress));
        assert!(!Queued.can_transition_to(Completed));
        assert!(!AwaitingApproval.can_transition_to(InProgress));
        assert!(
            !InProgress.can_transition_to(Rejected),
            "rejection happens before work starts"
        );
        assert!(Validation.can_transition_to(Queued), "no approval needed");
        assert!(
            InProgress.can_transition_to(Completed),
            "no post-fulfillment actions"
        );
    }

    #[test]
    fn names_round_trip() {
        for s in RequestState::ALL {
            assert_eq!(RequestState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
    }
}
