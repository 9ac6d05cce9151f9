//! Requests as their callers see them: submit, list, detail, progress, events, cancel, retry.
//!
//! Who may see a request: whoever the [`Authorizer`](crate::authz::Authorizer) lets view it
//! ([`Permission::View`] with the request's requester and team; by default its requester,
//! its team and admins), and whoever may decide on it (its approvers). A request the caller
//! may not see is `NotFound`, as if it did not exist.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{Progress, page_size};
use crate::authz::{Permission, Principal};
use crate::engine::{EngineError, Orchestrator, SubmitOptions};
use crate::lifecycle::RequestState;
use crate::store::{
    ApprovalDecision, AttemptOutcome, AttemptRecord, Event, Request, RequestFilter, Submitted,
};

/// A position in a list of requests, newest first: the creation time and id of the last
/// request of the previous page.
pub type RequestCursor = (DateTime<Utc>, String);

/// Pages of requests hold 50 unless asked otherwise.
pub const DEFAULT_PAGE: usize = 50;
/// And at most 500.
pub const MAX_PAGE: usize = 500;
/// Pages of events hold 500 unless asked otherwise.
pub const DEFAULT_EVENTS: usize = 500;
/// And at most 5,000.
pub const MAX_EVENTS: usize = 5_000;

/// Whose requests a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RequestScope {
    /// The caller's own.
    #[default]
    Mine,
    /// A team's (the caller must belong to it, or be an admin).
    Team(String),
    /// Everyone's (admins).
    All,
}

/// A list of requests to read.
#[derive(Debug, Clone, Default)]
pub struct RequestQuery {
    /// Whose.
    pub scope: RequestScope,
    /// Only these states; empty: every state.
    pub states: Vec<RequestState>,
    /// Only this item.
    pub item_id: Option<String>,
    /// Page size ([`DEFAULT_PAGE`] when `None`, within 1..=[`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Go on after this request.
    pub after: Option<RequestCursor>,
}

/// A page of requests, newest first.
#[derive(Debug, Clone)]
pub struct RequestPage {
    /// The requests.
    pub requests: Vec<Request>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<RequestCursor>,
}

/// A request with its journal.
#[derive(Debug, Clone)]
pub struct RequestDetail {
    /// The request.
    pub request: Request,
    /// Every attempt, in journal order.
    pub attempts: Vec<AttemptRecord>,
    /// Approval decisions, in the order they were made.
    pub decisions: Vec<ApprovalDecision>,
    /// Outputs by action id, of the actions that succeeded (compensations left out).
    pub outputs: Map<String, Value>,
    /// How far it has come.
    pub progress: Progress,
}

/// A request and how far it has come.
#[derive(Debug, Clone)]
pub struct RequestStatus {
    /// The request.
    pub request: Request,
    /// Its progress.
    pub progress: Progress,
}

impl Orchestrator {
    /// Whether `who` may see `request`: the authorizer lets them view it, or they may decide
    /// on it. A request whose item left the catalog is seen by its requester, its team and
    /// admins.
    pub fn may_view(&self, who: &Principal, request: &Request) -> bool {
        let owner = Some((request.requester.id.as_str(), request.team.as_str()));
        let viewer = match self.catalog().get(&request.item_id) {
            Some(item) => self.authz.allowed(who, Permission::View, &item.item, owner),
            None => {
                who.is_admin()
                    || request.requester.id == who.id
                    || who.teams.contains(&request.team)
            }
        };
        viewer || self.may_decide(who, request)
    }

    /// The request, if `who` may see it; `NotFound` otherwise.
    pub async fn visible_request(&self, who: &Principal, id: &str) -> Result<Request, EngineError> {
        match self.store.get(id).await? {
            Some(r) if self.may_view(who, &r) => Ok(r),
            _ => Err(EngineError::NotFound(format!("request {id}"))),
        }
    }

    /// Submits as `who` (see [`Orchestrator::submit`]) with the idempotency key in the
    /// caller's own namespace: two callers never share a key. With a key seen before, the
    /// earlier request comes back (`created: false`); a key used before for another item is
    /// [`EngineError::IdempotencyMismatch`]. An item the caller may not see is `NotFound`.
    pub async fn submit_request(
        &self,
        who: &Principal,
        item_id: &str,
        fields: &Value,
        mut opts: SubmitOptions,
    ) -> Result<Submitted, EngineError> {
        self.visible_item(who, item_id)?;
        if !fields.is_object() {
            return Err(EngineError::input(
                "/fields",
                "`fields` must be an object of field id to value",
            ));
        }
        // The id's length goes first, so `a:b` + `c` and `a` + `b:c` are different keys.
        opts.idempotency_key = opts
            .idempotency_key
            .map(|k| format!("{}:{}:{k}", who.id.len(), who.id));
        let submitted = self.submit_admitted(who, item_id, fields, opts).await?;
        if !submitted.created && submitted.request.item_id != item_id {
            return Err(EngineError::IdempotencyMismatch {
                request_id: submitted.request.id,
                item_id: submitted.request.item_id,
            });
        }
        Ok(submitted)
    }

    /// A page of requests: the caller's own, a team's, or everyone's.
    pub async fn list_requests(
        &self,
        who: &Principal,
        query: RequestQuery,
    ) -> Result<RequestPage, EngineError> {
        let mut filter = RequestFilter {
            states: query.states,
            item_id: query.item_id,
            ..RequestFilter::default()
        };
        match query.scope {
            RequestScope::Mine => filter.requester = Some(who.id.clone()),
            RequestScope::Team(team) => {
                self.require_member(who, &team)?;
                filter.team = Some(team);
            }
            RequestScope::All if who.is_admin() => {}
            RequestScope::All => {
                return Err(EngineError::Forbidden("`all=true` is for admins".into()));
            }
        }
        let limit = page_size(query.limit, DEFAULT_PAGE, MAX_PAGE);
        filter.limit = limit + 1;
        filter.before = query.after;
        let mut requests = self.store.list(&filter).await?;
        let more = requests.len() > limit;
        requests.truncate(limit);
        let next = more
            .then(|| requests.last().map(|r| (r.created_at, r.id.clone())))
            .flatten();
        Ok(RequestPage { requests, next })
    }

    /// The request with its attempts, outputs, decisions and progress.
    pub async fn request_detail(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<RequestDetail, EngineError> {
        let request = self.visible_request(who, id).await?;
        let attempts = self.store.attempts(id).await?;
        let decisions = self.store.decisions(id).await?;
        let mut outputs = Map::new();
        for a in attempts.iter().filter(|a| !a.rollback) {
            if let AttemptOutcome::Succeeded { outputs: o, .. } = &a.outcome {
                outputs.insert(a.action_id.clone(), o.clone());
            }
        }
        let progress = self.progress_of(&request, &attempts);
        Ok(RequestDetail {
            request,
            attempts,
            decisions,
            outputs,
            progress,
        })
    }

    /// The request and its progress. A request that never ran is read without its journal.
    pub async fn request_status(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<RequestStatus, EngineError> {
        let request = self.visible_request(who, id).await?;
        self.status_of(request).await
    }

    async fn status_of(&self, request: Request) -> Result<RequestStatus, EngineError> {
        let attempts = if request.state.may_have_attempts() {
            self.store.attempts(&request.id).await?
        } else {
            Vec::new()
        };
        let progress = self.progress_of(&request, &attempts);
        Ok(RequestStatus { request, progress })
    }

    /// The progress of `request` from its attempts, against its item's actions.
    pub fn progress_of(&self, request: &Request, attempts: &[AttemptRecord]) -> Progress {
        let total = self
            .catalog()
            .get(&request.item_id)
            .map(|i| i.compiled.actions.len())
            .unwrap_or(0);
        Progress::of(request, attempts, total)
    }

    /// The request's events (state changes, attempts, action log lines, decisions) after
    /// sequence number `after`, at most `limit` ([`DEFAULT_EVENTS`] when `None`, within
    /// 1..=[`MAX_EVENTS`]).
    pub async fn request_events(
        &self,
        who: &Principal,
        id: &str,
        after: u64,
        limit: Option<usize>,
    ) -> Result<Vec<Event>, EngineError> {
        self.visible_request(who, id).await?;
        let limit = page_size(limit, DEFAULT_EVENTS, MAX_EVENTS);
        Ok(self.store.events(id, after, limit).await?)
    }

    /// Cancels a request the caller can see (see [`Orchestrator::cancel`]).
    pub async fn cancel_request(
        &self,
        who: &Principal,
        id: &str,
        reason: Option<String>,
    ) -> Result<Request, EngineError> {
        self.visible_request(who, id).await?;
        self.cancel(who, id, reason).await
    }

    /// Retries a failed request the caller can see, with changed field values merged over
    /// its own (see [`Orchestrator::retry`]).
    pub async fn retry_request(
        &self,
        who: &Principal,
        id: &str,
        fields: Option<Value>,
    ) -> Result<Request, EngineError> {
        self.visible_request(who, id).await?;
        if fields.as_ref().is_some_and(|f| !f.is_object()) {
            return Err(EngineError::input("/fields", "`fields` must be an object"));
        }
        self.retry(who, id, fields).await
    }

    /// Starts watching a request the caller can see: a live view (a WebSocket) reads its
    /// events and status through the [`RequestWatch`] without checking visibility again on
    /// every read.
    pub async fn watch(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
    ) -> Result<RequestWatch, EngineError> {
        self.visible_request(who, id).await?;
        Ok(RequestWatch {
            orch: self.clone(),
            id: id.to_string(),
        })
    }
}

/// One request being watched by a caller who may see it ([`Orchestrator::watch`]).
pub struct RequestWatch {
    orch: Arc<Orchestrator>,
    id: String,
}

impl RequestWatch {
    /// The request's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Events after `after`, at most `limit` (0: all).
    pub async fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, EngineError> {
        Ok(self.orch.store.events(&self.id, after, limit).await?)
    }

    /// The request as stored now (`None` once purged).
    pub async fn request(&self) -> Result<Option<Request>, EngineError> {
        Ok(self.orch.store.get(&self.id).await?)
    }

    /// The request and its progress (`None` once purged).
    pub async fn status(&self) -> Result<Option<RequestStatus>, EngineError> {
        match self.orch.store.get(&self.id).await? {
            Some(r) => self.orch.status_of(r).await.map(Some),
            None => Ok(None),
        }
    }
}
