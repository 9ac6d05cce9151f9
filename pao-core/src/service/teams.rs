//! Teams: their requests, the items they own, usage, analytics, settings and quota limits.
//!
//! A team's views are for its members and admins. Quota limits are set by admins, and by a
//! team's `team-admin` role holders up to what `catalog.yaml` declares for the team; every
//! change is stored with its audit record in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::authz::Principal;
use crate::catalog::LoadedItem;
use crate::catalog::model::TeamDef;
use crate::engine::{EngineError, Orchestrator};
use crate::lifecycle::RequestState;
use crate::store::{AuditRecord, CompletionTimes, RequestStats, StatsScope, check_quota_limit};

/// The largest quota limit the API accepts: the largest integer every JSON reader keeps
/// exactly (2^53 - 1).
pub const MAX_API_QUOTA_LIMIT: u64 = (1 << 53) - 1;

/// An item a team owns, with its request counts.
#[derive(Debug, Clone)]
pub struct OwnedItem {
    /// The item.
    pub item: Arc<LoadedItem>,
    /// Requests for it.
    pub requests: u64,
    /// Of which completed.
    pub completed: u64,
    /// Of which failed.
    pub failed: u64,
}

/// Where a team's quota limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// Set through the API (`POST /quota/limits`, `POST /teams/{id}/config`).
    Api,
    /// `catalog.yaml`'s `teams[].quotas`, for a resource with no limit set.
    Catalog,
}

/// A team's usage of one resource, with the limit that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaLine {
    /// The resource.
    pub resource: String,
    /// The limit that applies; `None`: unlimited.
    pub limit: Option<u64>,
    /// Where the limit comes from.
    pub limit_source: Option<LimitSource>,
    /// Reserved by live and completed requests.
    pub used: u64,
}

/// A team's quota usage and requests by state.
#[derive(Debug, Clone)]
pub struct TeamUsage {
    /// Usage by resource.
    pub quota: Vec<QuotaLine>,
    /// Requests by state name.
    pub requests_by_state: BTreeMap<String, u64>,
}

/// A team as `catalog.yaml` declares it, with its quota usage.
#[derive(Debug, Clone)]
pub struct TeamSettings {
    /// Its entry in `catalog.yaml`, if any.
    pub declared: Option<TeamDef>,
    /// Usage by resource.
    pub quota: Vec<QuotaLine>,
}

/// Requests for one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PopularItem {
    /// The item.
    pub item_id: String,
    /// Requests.
    pub requests: u64,
    /// Of which completed.
    pub completed: u64,
    /// Of which failed.
    pub failed: u64,
}

/// Success rate, completion times, popular items and failure reasons of a set of requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analytics {
    /// Requests.
    pub requests: u64,
    /// Of which in a final state.
    pub finished: u64,
    /// Completed over finished (`None` before any finished).
    pub success_rate: Option<f64>,
    /// Completion times of completed requests, in milliseconds.
    pub completion_ms: CompletionTimes,
    /// Items by requests, most requested first (equal counts by item id).
    pub popular_items: Vec<PopularItem>,
    /// Failed requests by reason.
    pub failure_reasons: BTreeMap<String, u64>,
}

impl Analytics {
    /// The analytics of the store's aggregates.
    pub fn of(stats: &RequestStats) -> Analytics {
        let finished = stats.finished();
        let completed = stats.in_state(RequestState::Completed);
        let of = |item: &str, state: RequestState| -> u64 {
            stats
                .counts
                .iter()
                .filter(|c| c.item_id == item && c.state == state)
                .map(|c| c.count)
                .sum()
        };
        let mut popular: Vec<PopularItem> = stats
            .by(|c| c.item_id.clone())
            .into_iter()
            .map(|(item, n)| PopularItem {
                completed: of(&item, RequestState::Completed),
                failed: of(&item, RequestState::Failed),
                item_id: item,
                requests: n,
            })
            .collect();
        popular.sort_by_key(|p| std::cmp::Reverse(p.requests));
        Analytics {
            requests: stats.total(),
            finished,
            success_rate: (finished > 0).then(|| completed as f64 / finished as f64),
            completion_ms: stats.completion_ms,
            popular_items: popular,
            failure_reasons: stats.failure_reasons.iter().cloned().collect(),
        }
    }
}

/// Refuses limits no store or JSON reader keeps: a blank resource name, a limit above
/// [`MAX_API_QUOTA_LIMIT`]. The error is located at `{at}/{resource}`.
pub fn check_limits(limits: &BTreeMap<String, u64>, at: &str) -> Result<(), EngineError> {
    for (resource, &limit) in limits {
        let refused = if limit > MAX_API_QUOTA_LIMIT {
            Some(format!(
                "the limit of `{resource}` is a whole number from 0 to {MAX_API_QUOTA_LIMIT}, \
                 not {limit}"
            ))
        } else {
            check_quota_limit(resource, limit)
                .err()
                .map(|e| e.to_string())
        };
        if let Some(why) = refused {
            let pointer = format!("{at}/{}", resource.replace('~', "~0").replace('/', "~1"));
            return Err(EngineError::input(pointer, why));
        }
    }
    Ok(())
}

fn team_scope(team: &str) -> StatsScope {
    StatsScope {
        team: Some(team.to_string()),
        ..StatsScope::default()
    }
}

impl Orchestrator {
    /// `Forbidden` unless `who` is in `team` or an admin.
    pub fn require_member(&self, who: &Principal, team: &str) -> Result<(), EngineError> {
        if who.is_admin() || who.teams.iter().any(|t| t == team) {
            Ok(())
        } else {
            Err(EngineError::Forbidden(format!(
                "you are not in team `{team}`"
            )))
        }
    }

    /// The items `team` owns, by id, with their request counts.
    pub async fn team_catalog(
        &self,
        who: &Principal,
        team: &str,
    ) -> Result<Vec<OwnedItem>, EngineError> {
        self.require_member(who, team)?;
        let catalog = self.catalog();
        let mut owned: Vec<Arc<LoadedItem>> = catalog
            .items()
            .filter(|i| i.item.metadata.owner.team == team)
            .cloned()
            .collect();
        owned.sort_by(|a, b| a.id().cmp(b.id()));
        let stats = self
            .store
            .request_stats(&StatsScope {
                item_ids: owned.iter().map(|i| i.id().to_string()).collect(),
                ..StatsScope::default()
            })
            .await?;
        let count = |item: &str, state: Option<RequestState>| -> u64 {
            stats
                .counts
                .iter()
                .filter(|c| c.item_id == item && state.is_none_or(|s| c.state == s))
                .map(|c| c.count)
                .sum()
        };
        Ok(owned
            .into_iter()
            .map(|item| OwnedItem {
                requests: count(item.id(), None),
                completed: count(item.id(), Some(RequestState::Completed)),
                failed: count(item.id(), Some(RequestState::Failed)),
                item,
            })
            .collect())
    }

    /// A team's quota usage by resource (members and admins), with the limit that applies:
    /// the one set through the API, else the one `catalog.yaml` declares.
    pub async fn team_quota(
        &self,
        who: &Principal,
        team: &str,
    ) -> Result<Vec<QuotaLine>, EngineError> {
        self.require_member(who, team)?;
        self.quota_lines(team).await
    }

    async fn quota_lines(&self, team: &str) -> Result<Vec<QuotaLine>, EngineError> {
        let usage = self.store.quota_usage(team).await?;
        let declared = self
            .declared_team(team)
            .and_then(|t| t.quotas)
            .unwrap_or_default();
        let mut lines: BTreeMap<String, QuotaLine> = declared
            .iter()
            .map(|(resource, &limit)| {
                let line = QuotaLine {
                    resource: resource.clone(),
                    limit: Some(limit),
                    limit_source: Some(LimitSource::Catalog),
                    used: 0,
                };
                (resource.clone(), line)
            })
            .collect();
        for u in usage {
            let line = lines.entry(u.resource.clone()).or_insert(QuotaLine {
                resource: u.resource.clone(),
                limit: None,
                limit_source: None,
                used: 0,
            });
            line.used = u.used;
            if let Some(limit) = u.limit {
                line.limit = Some(limit);
                line.limit_source = Some(LimitSource::Api);
            }
        }
        Ok(lines.into_values().collect())
    }

    /// A team's quota usage and requests by state.
    pub async fn team_usage(&self, who: &Principal, team: &str) -> Result<TeamUsage, EngineError> {
        let quota = self.team_quota(who, team).await?;
        let stats = self.store.request_stats(&team_scope(team)).await?;
        Ok(TeamUsage {
            quota,
            requests_by_state: stats.by(|c| c.state.to_string()),
        })
    }

    /// A team's success rate, completion times, popular items and failure reasons.
    pub async fn team_analytics(
        &self,
        who: &Principal,
        team: &str,
    ) -> Result<Analytics, EngineError> {
        self.require_member(who, team)?;
        let stats = self.store.request_stats(&team_scope(team)).await?;
        Ok(Analytics::of(&stats))
    }

    /// The team as `catalog.yaml` declares it, with its quota usage.
    pub async fn team_settings(
        &self,
        who: &Principal,
        team: &str,
    ) -> Result<TeamSettings, EngineError> {
        let quota = self.team_quota(who, team).await?;
        Ok(TeamSettings {
            declared: self.declared_team(team),
            quota,
        })
    }

    fn declared_team(&self, team: &str) -> Option<TeamDef> {
        self.catalog()
            .settings()
            .and_then(|s| s.teams.as_ref())
            .and_then(|ts| ts.iter().find(|t| t.id == team))
            .cloned()
    }

    /// Sets a team's quota limits as an admin, or as a `team-admin` of the team up to the
    /// limits `catalog.yaml` declares for it (not above, nor for a resource it declares
    /// none for). Limits and the `team.config` audit record are stored in one transaction.
    /// Returns the team's usage after the change.
    pub async fn configure_team(
        &self,
        who: &Principal,
        team: &str,
        limits: &BTreeMap<String, u64>,
    ) -> Result<Vec<QuotaLine>, EngineError> {
        let team_admin =
            who.teams.iter().any(|t| t == team) && who.roles.iter().any(|r| r == "team-admin");
        if !who.is_admin() && !team_admin {
            return Err(EngineError::Forbidden(
                "team configuration needs the admin role or team-admin in that team".into(),
            ));
        }
        check_limits(limits, "/quotas")?;
        if !who.is_admin() {
            self.within_declared(team, limits)?;
        }
        self.store_limits(
            who,
            team,
            limits,
            "team.config",
            json!({ "quotas": limits }),
        )
        .await
    }

    fn within_declared(
        &self,
        team: &str,
        limits: &BTreeMap<String, u64>,
    ) -> Result<(), EngineError> {
        let declared = self.declared_team(team).and_then(|t| t.quotas);
        for (resource, limit) in limits {
            match declared.as_ref().and_then(|d| d.get(resource)) {
                Some(ceiling) if limit <= ceiling => {}
                Some(ceiling) => {
                    return Err(EngineError::Forbidden(format!(
                        "raising `{resource}` to {limit}, above the {ceiling} catalog.yaml \
                         declares for team `{team}`, needs the admin role"
                    )));
                }
                None => {
                    return Err(EngineError::Forbidden(format!(
                        "catalog.yaml declares no `{resource}` quota for team `{team}`: setting \
                         it needs the admin role"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Sets a team's quota limits (admins; at least one). Limits and the
    /// `quota.set_limits` audit record are stored in one transaction. Returns the team's
    /// usage after the change.
    pub async fn set_quota_limits(
        &self,
        who: &Principal,
        team: &str,
        limits: &BTreeMap<String, u64>,
    ) -> Result<Vec<QuotaLine>, EngineError> {
        if !who.is_admin() {
            return Err(EngineError::Forbidden(
                "quota limits are set by admins".into(),
            ));
        }
        if limits.is_empty() {
            return Err(EngineError::input("/limits", "`limits` is empty"));
        }
        check_limits(limits, "/limits")?;
        self.store_limits(who, team, limits, "quota.set_limits", json!(limits))
            .await
    }

    async fn store_limits(
        &self,
        who: &Principal,
        team: &str,
        limits: &BTreeMap<String, u64>,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<Vec<QuotaLine>, EngineError> {
        let list: Vec<(String, u64)> = limits.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let record = AuditRecord {
            at: self.now(),
            actor: who.id.clone(),
            action: action.to_string(),
            target: format!("team:{team}"),
            detail,
        };
        self.store.set_quota_limits(team, &list, record).await?;
        self.quota_lines(team).await
    }
}
