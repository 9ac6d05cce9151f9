//! Policy the catalog declares, as the engine applies it: the approval rule of an item (its
//! own, or `catalog.yaml`'s `defaults.approval`), the environment of a request and the
//! environments an item allows, restricted change periods (at submission, and again when work
//! would start), team quotas and members from `catalog.yaml`.

use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::Value;

use super::{EngineError, Orchestrator};
use crate::authz::Principal;
use crate::catalog::model::{
    Approval, ExecutionDefaults, FulfillmentMode, RestrictedPeriod, RestrictionPolicy, RetryPolicy,
};
use crate::catalog::{Catalog, LoadedItem};
use crate::form::FieldError;
use crate::store::{EventKind, Request, RequestPatch, Write};
use crate::vars::Expression;

/// Why the definition a request was admitted with is not at hand.
#[derive(Debug, thiserror::Error)]
pub enum PinnedItemError {
    /// The store could not be read; try again.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The kept definition does not load any more.
    #[error("{0}")]
    NoLongerLoads(String),
}

/// Earlier item definitions a process keeps compiled.
const PINNED_CACHE: usize = 256;

/// Held requests read per page when releasing them.
const RELEASE_PAGE: usize = 500;

/// Prefix of `waiting_for` of a queued request held by a restricted period:
/// `restricted_period:<id>:<end, RFC 3339>`.
pub const HELD_BY_PERIOD: &str = "restricted_period:";

/// Budget thresholds, in percent of a team's quota limit: a submission whose reservation
/// reaches one records a [`EventKind::BudgetThreshold`] event.
pub const BUDGET_THRESHOLDS: [u32; 2] = [80, 100];

/// The approval rule that applies to an item.
#[derive(Debug, Clone)]
pub struct ApprovalRule {
    /// The rule.
    pub approval: Approval,
    /// Where it comes from.
    pub origin: RuleOrigin,
    item: Arc<LoadedItem>,
    catalog: Arc<Catalog>,
}

/// Where an item's approval rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOrigin {
    /// The item's `fulfillment.approval`.
    Item,
    /// `catalog.yaml`'s `defaults.approval`.
    CatalogDefault,
}

impl ApprovalRule {
    /// The compiled `required_when`; `None`: always required.
    pub fn required_when(&self) -> Option<&Expression> {
        match self.origin {
            RuleOrigin::Item => self.item.compiled.approval_required_when.as_ref(),
            RuleOrigin::CatalogDefault => self.catalog.default_approval_when(),
        }
    }

    /// Approvals needed.
    pub fn min_approvals(&self) -> usize {
        self.approval.approvers.min_approvals.unwrap_or(1) as usize
    }
}

/// A restricted change period in force, and the first instant after it.
#[derive(Debug, Clone)]
pub struct ActivePeriod {
    /// The period.
    pub period: RestrictedPeriod,
    /// Midnight (UTC) after its last day.
    pub ends_at: DateTime<Utc>,
}

impl ActivePeriod {
    /// What requesters are told.
    pub fn message(&self) -> String {
        self.period
            .message
            .clone()
            .unwrap_or_else(|| format!("changes are frozen during `{}`", self.period.name))
    }
}

/// Whether `today` (`MM-DD`) is inside `p` (inclusive, wrapping the new year when `start` is
/// after `end`).
fn inside(p: &RestrictedPeriod, today: &str) -> bool {
    if p.start <= p.end {
        p.start.as_str() <= today && today <= p.end.as_str()
    } else {
        today >= p.start.as_str() || today <= p.end.as_str()
    }
}

/// Midnight UTC after the last day of `p`, which contains `now`.
fn end_of(p: &RestrictedPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.format("%m-%d").to_string();
    let year = if p.start > p.end && today >= p.start {
        now.year() + 1
    } else {
        now.year()
    };
    let (m, d) = p
        .end
        .split_once('-')
        .and_then(|(m, d)| Some((m.parse().ok()?, d.parse().ok()?)))
        .unwrap_or((12, 31));
    // `02-29` in a year without it ends with February.
    let last = NaiveDate::from_ymd_opt(year, m, d)
        .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1).and_then(|d| d.pred_opt()))
        .unwrap_or_default();
    last.succ_opt()
        .unwrap_or(last)
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
}

/// The period and end of a hold written as [`HELD_BY_PERIOD`].
pub(crate) fn parse_hold(waiting_for: &str) -> Option<(&str, DateTime<Utc>)> {
    let rest = waiting_for.strip_prefix(HELD_BY_PERIOD)?;
    let (id, end) = rest.split_once(':')?;
    Some((
        id,
        DateTime::parse_from_rfc3339(end).ok()?.with_timezone(&Utc),
    ))
}

impl Orchestrator {
    /// The budget events of a submission whose admission `writes` reserve quota: one per
    /// threshold of [`BUDGET_THRESHOLDS`] that the reservation reaches, judged against the
    /// team's usage read just before the submission is stored. None when the admission
    /// releases the reservation or goes over the limit (the store refuses it).
    pub(crate) async fn budget_events(
        &self,
        request: &Request,
        writes: &[Write],
        at: DateTime<Utc>,
    ) -> Result<Vec<Write>, EngineError> {
        if writes.iter().any(|w| matches!(w, Write::ReleaseQuota)) {
            return Ok(Vec::new());
        }
        let Some((resource, amount, default_limit)) = writes.iter().find_map(|w| match w {
            Write::ReserveQuota {
                resource,
                amount,
                default_limit,
            } => Some((resource, *amount, *default_limit)),
            _ => None,
        }) else {
            return Ok(Vec::new());
        };
        if amount == 0 {
            return Ok(Vec::new());
        }
        let usage = self.store.quota_usage(&request.team).await?;
        let line = usage.iter().find(|u| &u.resource == resource);
        let before = line.map_or(0, |l| l.used);
        let Some(limit) = line.and_then(|l| l.limit).or(default_limit) else {
            return Ok(Vec::new());
        };
        let after = before.saturating_add(amount);
        if limit == 0 || after > limit {
            return Ok(Vec::new());
        }
        let pct = |used: u64| u128::from(used) * 100;
        let mut events = Vec::new();
        for t in BUDGET_THRESHOLDS {
            let mark = u128::from(t) * u128::from(limit);
            if pct(before) < mark && pct(after) >= mark {
                events.push(Write::Event {
                    at,
                    kind: EventKind::BudgetThreshold {
                        team: request.team.clone(),
                        resource: resource.clone(),
                        percent: t,
                        used: after,
                        limit,
                    },
                });
            }
        }
        Ok(events)
    }

    /// The approval rule of `item`: its own `fulfillment.approval`, or else `catalog.yaml`'s
    /// `defaults.approval`; `None` when neither exists.
    pub fn approval_rule(&self, item: &Arc<LoadedItem>) -> Option<ApprovalRule> {
        let catalog = self.catalog();
        let (approval, origin) = match &item.item.fulfillment.approval {
            Some(a) => (a.clone(), RuleOrigin::Item),
            None => (
                catalog.settings()?.defaults.as_ref()?.approval.clone()?,
                RuleOrigin::CatalogDefault,
            ),
        };
        Some(ApprovalRule {
            approval,
            origin,
            item: item.clone(),
            catalog,
        })
    }

    /// The environment of a request for `item` with the field values of `provisional`:
    /// `metadata.environment` rendered, or the environments field's value. It must be one
    /// of `catalog.yaml`'s environments (when it lists any) and one `access.environments`
    /// allows; a refusal is a field error at the field it comes from.
    pub fn request_environment(
        &self,
        item: &LoadedItem,
        provisional: &Request,
    ) -> Result<Option<String>, EngineError> {
        let access = item
            .item
            .metadata
            .access
            .as_ref()
            .and_then(|a| a.environments.as_ref());
        let Some(source) = &item.compiled.environment else {
            return Ok(None);
        };
        let field = source.field.clone().unwrap_or_default();
        let refuse = |message: String| {
            EngineError::InvalidFields(vec![FieldError {
                pointer: if field.is_empty() {
                    String::new()
                } else {
                    format!("/{field}")
                },
                field: field.clone(),
                code: "environment",
                message,
            }])
        };
        let value = match &source.template {
            Some(t) => {
                let scopes = super::executor::Scopes::for_admission(self, provisional, item);
                t.render_value(&scopes.context()).map_err(|e| {
                    refuse(format!(
                        "the environment (`metadata.environment`) could not be worked out: {}",
                        e.message()
                    ))
                })?
            }
            None => provisional
                .fields
                .get(&field)
                .cloned()
                .unwrap_or(Value::Null),
        };
        let environment = match value {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s),
            other => {
                return Err(refuse(format!(
                    "the environment is an environment id, not `{other}`"
                )));
            }
        };
        let Some(env) = environment else {
            return match access {
                Some(list) => Err(refuse(format!(
                    "`{}` is requested for an environment: one of {}",
                    item.id(),
                    list.join(", ")
                ))),
                None => Ok(None),
            };
        };
        let catalog = self.catalog();
        if let Some(known) = catalog.settings().and_then(|s| s.environments.as_ref())
            && !known.iter().any(|e| e.id == env)
        {
            let ids: Vec<&str> = known.iter().map(|e| e.id.as_str()).collect();
            return Err(refuse(format!(
                "`{env}` is not an environment of the catalog ({})",
                ids.join(", ")
            )));
        }
        if let Some(list) = access
            && !list.contains(&env)
        {
            return Err(refuse(format!(
                "`{}` may not be requested for `{env}`, only for {}",
                item.id(),
                list.join(", ")
            )));
        }
        Ok(Some(env))
    }

    /// The restricted period in force at `at` for a request for `item` in `environment`:
    /// items in manual mode, and automated items with a `change: true` action, are subject
    /// to them; the first matching period of `catalog.yaml` applies.
    pub fn active_restriction(
        &self,
        item: &LoadedItem,
        environment: Option<&str>,
        at: DateTime<Utc>,
    ) -> Option<ActivePeriod> {
        let subject = item.item.fulfillment.mode == FulfillmentMode::Manual
            || item.item.all_actions().any(|a| a.change == Some(true));
        if !subject {
            return None;
        }
        let catalog = self.catalog();
        let today = at.format("%m-%d").to_string();
        catalog
            .settings()?
            .restricted_periods
            .iter()
            .flatten()
            .find(|p| {
                inside(p, &today)
                    && p.applies_to.as_ref().is_none_or(|a| {
                        a.categories
                            .as_ref()
                            .is_none_or(|c| c.contains(&item.item.metadata.category))
                            && a.environments.as_ref().is_none_or(|e| {
                                environment.is_some_and(|env| e.iter().any(|x| x == env))
                            })
                    })
            })
            .map(|p| ActivePeriod {
                ends_at: end_of(p, at),
                period: p.clone(),
            })
    }

    /// The writes that hold a queued request whose work would start inside a `refuse`
    /// period: it stays queued, waits for the period's end (`waiting_for`), and says so in
    /// its log. `None` when no such period is in force for it.
    pub(crate) fn period_hold(&self, request: &Request) -> Option<Vec<Write>> {
        let item = self.catalog().get(&request.item_id).cloned()?;
        let now = self.clock.now();
        let active = self.active_restriction(&item, request.environment.as_deref(), now)?;
        if active.period.policy != RestrictionPolicy::Refuse {
            return None;
        }
        let ends = active
            .ends_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Some(vec![
            Write::Patch(RequestPatch {
                waiting_for: Some(Some(format!("{HELD_BY_PERIOD}{}:{ends}", active.period.id))),
                ..RequestPatch::default()
            }),
            Write::Event {
                at: now,
                kind: EventKind::Log {
                    action_id: None,
                    level: "warn".into(),
                    message: format!(
                        "held by restricted period `{}` until {ends}: {}",
                        active.period.id,
                        active.message()
                    ),
                },
            },
        ])
    }

    /// Releases the requests held by restricted periods that have ended: they become
    /// claimable and start (unless another period holds them again when they would).
    /// Returns how many were released.
    pub async fn release_held(&self) -> Result<usize, EngineError> {
        let mut released = 0;
        loop {
            let page = self
                .store
                .held_requests(HELD_BY_PERIOD, RELEASE_PAGE)
                .await?;
            let full = page.len() == RELEASE_PAGE;
            let now = self.clock.now();
            let mut this_page = 0;
            for r in page {
                let Some((period, until)) = r.waiting_for.as_deref().and_then(parse_hold) else {
                    continue;
                };
                if now < until {
                    continue;
                }
                let message = format!("restricted period `{period}` has ended: the request starts");
                let patched = self
                    .store
                    .update(
                        &r.id,
                        RequestPatch {
                            waiting_for: Some(None),
                            ..RequestPatch::default()
                        },
                        None,
                    )
                    .await?;
                self.emit(
                    &patched,
                    EventKind::Log {
                        action_id: None,
                        level: "info".into(),
                        message,
                    },
                    None,
                )
                .await?;
                this_page += 1;
            }
            released += this_page;
            if !full || this_page == 0 {
                return Ok(released);
            }
        }
    }

    /// The timeout and retry defaults of `item`'s actions: its `fulfillment.defaults`, each
    /// setting it leaves out taken from `catalog.yaml`'s `defaults.execution`.
    pub fn execution_defaults(&self, item: &LoadedItem) -> ExecutionDefaults {
        let own = item.item.fulfillment.defaults.clone();
        let catalog = self.catalog();
        let wide = catalog
            .settings()
            .and_then(|s| s.defaults.as_ref())
            .and_then(|d| d.execution.clone());
        let (own, wide) = match (own, wide) {
            (Some(o), Some(w)) => (o, w),
            (Some(o), None) => return o,
            (None, Some(w)) => return w,
            (None, None) => {
                return ExecutionDefaults {
                    timeout: None,
                    retry: None,
                };
            }
        };
        let retry = match (own.retry, wide.retry) {
            (Some(o), Some(w)) => Some(RetryPolicy {
                max_attempts: o.max_attempts.or(w.max_attempts),
                backoff: o.backoff.or(w.backoff),
                initial: o.initial.or(w.initial),
                max: o.max.or(w.max),
                jitter: o.jitter.or(w.jitter),
            }),
            (o, w) => o.or(w),
        };
        ExecutionDefaults {
            timeout: own.timeout.or(wide.timeout),
            retry,
        }
    }

    /// The item definition `request` was admitted with: the catalog's item when its content
    /// is unchanged, else the definition kept with the request, compiled once per process.
    /// `Ok(None)` when neither exists (an item removed from the catalog, a request older
    /// than kept definitions whose item changed: then the current one).
    /// [`PinnedItemError::NoLongerLoads`] says why a kept definition does not load (for
    /// example, an action type that is gone).
    pub async fn item_of(
        &self,
        request: &Request,
    ) -> Result<Option<Arc<LoadedItem>>, PinnedItemError> {
        let current = self.catalog().get(&request.item_id).cloned();
        if current
            .as_ref()
            .is_some_and(|c| c.content_hash == request.item_hash)
        {
            return Ok(current);
        }
        if let Some(hit) = self
            .pinned
            .lock()
            .ok()
            .and_then(|m| m.get(&request.item_hash).cloned())
        {
            return Ok(Some(hit));
        }
        let kept = self
            .store
            .item_definition(&request.item_hash)
            .await
            .map_err(PinnedItemError::Store)?;
        let Some((_, source)) = kept else {
            return Ok(current);
        };
        let file = current
            .as_ref()
            .map_or_else(|| format!("{}.yaml", request.item_id), |c| c.file.clone());
        let (loaded, diags) = crate::catalog::load_item(&file, &source, &self.load_options);
        let Some(loaded) = loaded else {
            let first = diags
                .iter()
                .find(|d| d.is_error())
                .map(|d| format!("{}: {}", d.code, d.message))
                .unwrap_or_default();
            return Err(PinnedItemError::NoLongerLoads(format!(
                "version {} of `{}`, which this request was admitted with, no longer loads: {first}",
                request.item_version, request.item_id
            )));
        };
        let loaded = Arc::new(loaded);
        if let Ok(mut m) = self.pinned.lock() {
            // Bounded: a process keeps at most this many earlier definitions compiled.
            if m.len() >= PINNED_CACHE {
                m.clear();
            }
            m.insert(request.item_hash.clone(), loaded.clone());
        }
        Ok(Some(loaded))
    }

    /// The limit `catalog.yaml` declares for `team` and `resource`.
    pub fn declared_quota(&self, team: &str, resource: &str) -> Option<u64> {
        self.catalog()
            .settings()?
            .teams
            .as_ref()?
            .iter()
            .find(|t| t.id == team)?
            .quotas
            .as_ref()?
            .get(resource)
            .copied()
    }

    /// `who` with the teams `catalog.yaml` lists them in (`teams[].members`, by id or
    /// e-mail) added to those the identity provider gave.
    pub fn with_catalog_teams(&self, mut who: Principal) -> Principal {
        let catalog = self.catalog();
        let Some(teams) = catalog.settings().and_then(|s| s.teams.as_ref()) else {
            return who;
        };
        for t in teams {
            let member = t.members.iter().flatten().any(|m| {
                *m == who.id
                    || who
                        .email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(m))
            });
            if member && !who.teams.contains(&t.id) {
                who.teams.push(t.id.clone());
            }
        }
        who
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(start: &str, end: &str) -> RestrictedPeriod {
        RestrictedPeriod {
            id: "p".into(),
            name: "P".into(),
            start: start.into(),
            end: end.into(),
            applies_to: None,
            policy: crate::catalog::model::RestrictionPolicy::Refuse,
            message: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_period_ends_at_midnight_after_its_last_day() {
        let p = period("11-24", "12-02");
        assert!(inside(&p, "11-24") && inside(&p, "12-02"));
        assert!(!inside(&p, "11-23") && !inside(&p, "12-03"));
        assert_eq!(
            end_of(&p, at("2026-11-24T00:00:00Z")),
            at("2026-12-03T00:00:00Z")
        );
    }

    #[test]
    fn a_period_over_new_year_ends_in_the_next_year_when_started_in_this_one() {
        let p = period("09-01", "01-31");
        assert!(inside(&p, "12-31") && inside(&p, "01-01"));
        assert!(!inside(&p, "02-01") && !inside(&p, "08-31"));
        assert_eq!(
            end_of(&p, at("2026-12-07T10:00:00Z")),
            at("2027-02-01T00:00:00Z")
        );
        assert_eq!(
            end_of(&p, at("2027-01-10T10:00:00Z")),
            at("2027-02-01T00:00:00Z")
        );
    }

    #[test]
    fn a_period_ending_on_the_29th_of_february_ends_with_february() {
        let p = period("02-20", "02-29");
        assert_eq!(
            end_of(&p, at("2027-02-21T00:00:00Z")),
            at("2027-03-01T00:00:00Z")
        );
        assert_eq!(
            end_of(&p, at("2028-02-21T00:00:00Z")),
            at("2028-03-01T00:00:00Z")
        );
    }

    #[test]
    fn holds_round_trip() {
        let w = format!("{HELD_BY_PERIOD}peak-week:2026-12-03T00:00:00+00:00");
        assert_eq!(
            parse_hold(&w),
            Some(("peak-week", at("2026-12-03T00:00:00Z")))
        );
        assert_eq!(parse_hold("manual:NET-1"), None);
    }
}
