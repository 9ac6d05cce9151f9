//! Approvals as approvers see them: what waits for their decision, approve, reject.

use super::page_size;
use super::requests::RequestCursor;
use crate::authz::Principal;
use crate::engine::{EngineError, Orchestrator};
use crate::store::{PendingApproval, Request};

/// Pages of pending approvals hold 100 unless asked otherwise.
pub const DEFAULT_PENDING: usize = 100;
/// And at most 1,000.
pub const MAX_PENDING: usize = 1_000;
/// One call looks at most at this many awaiting requests, the ones the caller may not decide
/// on included; the page's `next` goes on from the last one looked at.
pub const PENDING_SCAN: usize = 2_000;

/// Requests awaiting the caller's decision, newest first.
#[derive(Debug, Clone)]
pub struct PendingPage {
    /// The requests with their decisions so far.
    pub approvals: Vec<PendingApproval>,
    /// Where the next page starts; `None` when no more may follow.
    pub next: Option<RequestCursor>,
}

impl Orchestrator {
    /// Requests awaiting approval that `who` may decide on and has not decided on yet,
    /// newest first, after `after`; at most `limit` ([`DEFAULT_PENDING`] when `None`, within
    /// 1..=[`MAX_PENDING`]). A call reads at most [`PENDING_SCAN`] awaiting requests; `next`
    /// is set when more may follow.
    pub async fn pending_for(
        &self,
        who: &Principal,
        after: Option<RequestCursor>,
        limit: Option<usize>,
    ) -> Result<PendingPage, EngineError> {
        let limit = page_size(limit, DEFAULT_PENDING, MAX_PENDING);
        let mut before = after;
        let mut approvals = Vec::new();
        let mut scanned = 0;
        let more = loop {
            let size = limit.min(PENDING_SCAN - scanned);
            let page = self.store.pending_approvals(before.as_ref(), size).await?;
            scanned += page.len();
            let full = page.len() == size;
            let mut cut = false;
            for p in page {
                before = Some((p.request.created_at, p.request.id.clone()));
                let decided = p.decisions.iter().any(|d| d.approver == who.id);
                if decided || !self.may_decide(who, &p.request) {
                    continue;
                }
                approvals.push(p);
                if approvals.len() == limit {
                    cut = true;
                    break;
                }
            }
            if cut || (full && scanned >= PENDING_SCAN) {
                break true;
            }
            if !full {
                break false;
            }
        };
        Ok(PendingPage {
            approvals,
            next: if more { before } else { None },
        })
    }

    /// Approves a request the caller can see (see [`Orchestrator::approve`]).
    pub async fn approve_request(
        &self,
        who: &Principal,
        id: &str,
        comment: Option<String>,
    ) -> Result<Request, EngineError> {
        self.visible_request(who, id).await?;
        self.approve(who, id, comment).await
    }

    /// Rejects a request the caller can see; the reason must not be blank.
    pub async fn reject_request(
        &self,
        who: &Principal,
        id: &str,
        reason: &str,
    ) -> Result<Request, EngineError> {
        self.visible_request(who, id).await?;
        if reason.trim().is_empty() {
            return Err(EngineError::input("/reason", "a rejection needs a reason"));
        }
        self.reject(who, id, reason).await
    }
}
