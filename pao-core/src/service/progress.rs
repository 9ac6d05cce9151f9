//! How far a request has come: actions done of the item's actions, and which run now.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::lifecycle::RequestState;
use crate::store::{AttemptOutcome, AttemptRecord, Request};

/// Progress of a request, from its attempt journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Percent of actions done: 100 only once the request completed (a request whose
    /// actions are all done still runs post-fulfillment work at 99).
    pub percent: usize,
    /// Actions done: succeeded or skipped (compensations do not count).
    pub done: usize,
    /// Actions of the item (0 when the item is no longer in the catalog).
    pub total: usize,
    /// Actions with an attempt running now.
    pub running: BTreeSet<String>,
}

impl Progress {
    /// The progress of `request` from its `attempts` (in journal order), for an item of
    /// `total` actions.
    pub fn of(request: &Request, attempts: &[AttemptRecord], total: usize) -> Progress {
        let mut done = BTreeSet::new();
        let mut running = BTreeSet::new();
        for a in attempts.iter().filter(|a| !a.rollback) {
            match a.outcome {
                AttemptOutcome::Succeeded { .. } | AttemptOutcome::Skipped => {
                    running.remove(&a.action_id);
                    done.insert(a.action_id.clone());
                }
                AttemptOutcome::Running => {
                    running.insert(a.action_id.clone());
                }
                AttemptOutcome::Failed { .. } => {
                    running.remove(&a.action_id);
                }
            }
        }
        let percent = if request.state == RequestState::Completed {
            100
        } else {
            (done.len() * 100).checked_div(total).unwrap_or(0).min(99)
        };
        Progress {
            percent,
            done: done.len(),
            total,
            running,
        }
    }
}
