//! The service layer (`pao_core::service`): what every API built on pao-core gets — requests
//! seen through the embedder's `Authorizer`, submissions that tell a replay from a new
//! request by the store, not by the clock, progress, team views and quota limits with their
//! audit record.

mod engine_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use engine_support::*;
use pao_core::action::ActionRegistry;
use pao_core::authz::{Authorizer, ItemAccessAuthorizer, Permission, Principal};
use pao_core::catalog::model::CatalogItem;
use pao_core::clock::Clock;
use pao_core::engine::{EngineError, Orchestrator, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::service::{RequestQuery, RequestScope};
use pao_core::store::{MemoryStore, Store};
use serde_json::json;

const ITEM: &str = r#"fulfillment:
  mode: automated
  actions:
    - { id: one, type: "plugin:test", config: {} }
    - { id: two, type: "plugin:test", config: {} }
"#;

/// An embedder's rule: auditors see nothing of other people's requests, even in their team.
struct NoTeamReads;

impl Authorizer for NoTeamReads {
    fn allowed(
        &self,
        who: &Principal,
        what: Permission,
        item: &CatalogItem,
        owner: Option<(&str, &str)>,
    ) -> bool {
        if what == Permission::View
            && let Some((requester, _)) = owner
            && requester != who.id
            && who.roles.iter().any(|r| r == "auditor")
        {
            return false;
        }
        ItemAccessAuthorizer.allowed(who, what, item, owner)
    }
}

/// A clock that never moves: every request is created at the same instant.
struct Frozen(chrono::DateTime<chrono::Utc>);

#[async_trait::async_trait]
impl Clock for Frozen {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0
    }

    async fn sleep(&self, d: std::time::Duration) {
        tokio::time::sleep(d).await;
    }
}

fn engine(authz: Arc<dyn Authorizer>) -> (Arc<Orchestrator>, Arc<MemoryStore>) {
    let ledger = Arc::new(Ledger::default());
    let mut registry = ActionRegistry::new();
    registry.register(Arc::new(TestAction { ledger }));
    let store = Arc::new(MemoryStore::new());
    let catalog = catalog(&[("svc", ITEM)], &registry);
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z").unwrap();
    let engine = Orchestrator::builder(catalog, store.clone())
        .actions(registry)
        .clock(Arc::new(Frozen(at.to_utc())))
        .authorizer(authz)
        .build();
    (engine, store)
}

fn auditor() -> Principal {
    Principal::new("aud1", &["payments"], &["auditor"])
}

#[tokio::test]
async fn reads_go_through_the_embedders_authorizer() {
    let (engine, _) = engine(Arc::new(NoTeamReads));
    let r = engine
        .submit_request(&dev(), "svc", &json!({}), SubmitOptions::default())
        .await
        .unwrap()
        .request;
    // A teammate sees it under the default rules; this authorizer says no to auditors.
    let teammate = Principal::new("dev2", &["payments"], &["developer"]);
    assert!(engine.visible_request(&teammate, &r.id).await.is_ok());
    for result in [
        engine.visible_request(&auditor(), &r.id).await.map(|_| ()),
        engine.request_detail(&auditor(), &r.id).await.map(|_| ()),
        engine.request_status(&auditor(), &r.id).await.map(|_| ()),
        engine
            .request_events(&auditor(), &r.id, 0, None)
            .await
            .map(|_| ()),
        engine
            .cancel_request(&auditor(), &r.id, None)
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(EngineError::NotFound(_))),
            "{result:?}"
        );
    }
    assert!(!engine.may_view(&auditor(), &r));
}

#[tokio::test]
async fn a_replay_is_told_by_the_store_even_when_the_clock_stands_still() {
    let (engine, store) = engine(Arc::new(ItemAccessAuthorizer));
    let opts = || SubmitOptions {
        idempotency_key: Some("k-1".into()),
        ..SubmitOptions::default()
    };
    let first = engine
        .submit_request(&dev(), "svc", &json!({}), opts())
        .await
        .unwrap();
    let again = engine
        .submit_request(&dev(), "svc", &json!({}), opts())
        .await
        .unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.request.id, again.request.id);
    assert_eq!(first.request.created_at, again.request.created_at);
    // Keys are per caller: another caller's `k-1` is a request of its own.
    let other = Principal::new("dev2", &["payments"], &["developer"]);
    let theirs = engine
        .submit_request(&other, "svc", &json!({}), opts())
        .await
        .unwrap();
    assert!(theirs.created && theirs.request.id != first.request.id);
    assert_eq!(store.list(&Default::default()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn progress_lists_and_team_scopes() {
    let (engine, _) = engine(Arc::new(ItemAccessAuthorizer));
    let r = engine
        .submit_request(&dev(), "svc", &json!({}), SubmitOptions::default())
        .await
        .unwrap()
        .request;
    let s = engine.request_status(&dev(), &r.id).await.unwrap();
    assert_eq!(
        (s.progress.done, s.progress.total, s.progress.percent),
        (0, 2, 0)
    );
    engine.run_until_idle("w").await.unwrap();
    let s = engine.request_status(&dev(), &r.id).await.unwrap();
    assert_eq!(s.request.state, RequestState::Completed);
    assert_eq!((s.progress.done, s.progress.percent), (2, 100));
    let mine = engine
        .list_requests(&dev(), RequestQuery::default())
        .await
        .unwrap();
    assert_eq!(mine.requests.len(), 1);
    let outsider = Principal::new("x", &["other"], &["developer"]);
    let team = RequestQuery {
        scope: RequestScope::Team("payments".into()),
        ..RequestQuery::default()
    };
    assert!(matches!(
        engine.list_requests(&outsider, team.clone()).await,
        Err(EngineError::Forbidden(_))
    ));
    let all = RequestQuery {
        scope: RequestScope::All,
        ..RequestQuery::default()
    };
    assert!(matches!(
        engine.list_requests(&dev(), all).await,
        Err(EngineError::Forbidden(_))
    ));
    let a = engine.team_analytics(&dev(), "payments").await.unwrap();
    assert_eq!((a.requests, a.finished, a.success_rate), (1, 1, Some(1.0)));
}

#[tokio::test]
async fn quota_limits_are_checked_and_stored_with_their_audit_record() {
    let (engine, store) = engine(Arc::new(ItemAccessAuthorizer));
    let admin = Principal::new("root", &[], &["admin"]);
    let mut limits = BTreeMap::new();
    limits.insert("vcpu".to_string(), 8u64);
    assert!(matches!(
        engine.set_quota_limits(&dev(), "payments", &limits).await,
        Err(EngineError::Forbidden(_))
    ));
    let usage = engine
        .set_quota_limits(&admin, "payments", &limits)
        .await
        .unwrap();
    assert_eq!(usage[0].limit, Some(8));
    let audit = store
        .audit_log(Some("team:payments"), None, 0)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].record.action, "quota.set_limits");
    // A bad limit is located, and nothing of the batch is stored.
    limits.insert("vcpu".to_string(), 9);
    limits.insert(" ".to_string(), 1);
    match engine.set_quota_limits(&admin, "payments", &limits).await {
        Err(EngineError::InvalidInput { pointer, .. }) => assert_eq!(pointer, "/limits/ "),
        other => panic!("{other:?}"),
    }
    let usage = store.quota_usage("payments").await.unwrap();
    assert_eq!(usage[0].limit, Some(8));
}

/// An embedder's rule: contractors never decide on requests, whatever the catalog says.
struct NoContractorApprovals;

impl Authorizer for NoContractorApprovals {
    fn allowed(
        &self,
        who: &Principal,
        what: Permission,
        item: &CatalogItem,
        owner: Option<(&str, &str)>,
    ) -> bool {
        if what == Permission::Approve && who.roles.iter().any(|r| r == "contractor") {
            return false;
        }
        ItemAccessAuthorizer.allowed(who, what, item, owner)
    }
}

const APPROVED_ITEM: &str = r#"fulfillment:
  mode: automated
  approval:
    approvers: { teams: [leads], min_approvals: 1 }
  actions:
    - { id: one, type: "plugin:test", config: {} }
"#;

#[tokio::test]
async fn the_authorizer_may_refuse_an_approver_named_by_the_item() {
    let mut registry = ActionRegistry::new();
    registry.register(Arc::new(TestAction {
        ledger: Arc::new(Ledger::default()),
    }));
    let catalog = catalog(&[("gated", APPROVED_ITEM)], &registry);
    let engine = Orchestrator::builder(catalog, Arc::new(MemoryStore::new()))
        .actions(registry)
        .authorizer(Arc::new(NoContractorApprovals))
        .build();
    let r = engine
        .submit_request(&dev(), "gated", &json!({}), SubmitOptions::default())
        .await
        .unwrap()
        .request;
    assert_eq!(r.state, RequestState::AwaitingApproval);
    // Both are in the approving team; only one is let decide.
    let contractor = Principal::new("c1", &["leads", "payments"], &["contractor"]);
    let lead = Principal::new("l1", &["leads", "payments"], &["developer"]);
    assert!(!engine.may_decide(&contractor, &r));
    let refused = engine.approve_request(&contractor, &r.id, None).await;
    assert!(
        matches!(refused, Err(EngineError::Forbidden(_))),
        "{refused:?}"
    );
    let pending = engine.pending_for(&contractor, None, None).await.unwrap();
    assert!(pending.approvals.is_empty(), "{:?}", pending.approvals);
    assert!(engine.may_decide(&lead, &r));
    let approved = engine.approve_request(&lead, &r.id, None).await.unwrap();
    assert_ne!(approved.state, RequestState::AwaitingApproval);
}

/// A catalog of `n` items with every combination of access rule, category, owner, tag,
/// environment and lifecycle status the catalog filters look at.
fn varied_catalog(n: usize, registry: &ActionRegistry) -> pao_core::catalog::Catalog {
    let dir = std::env::temp_dir().join(format!("pao-views-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let teams = [
        "",
        "teams: [payments]",
        "teams: ['*']",
        "teams: [data, payments]",
    ];
    let roles = ["", "roles: [sre]", "roles: [developer, sre]"];
    let categories = ["compute", "database", "networking"];
    let envs = [
        "",
        "environments: [prod]",
        "environments: ['*']",
        "environments: [dev, staging]",
    ];
    let status = [
        "",
        "lifecycle: { status: deprecated }\n",
        "lifecycle: { status: retired }\n",
    ];
    for i in 0..n {
        let access = [teams[i % 4], roles[(i / 4) % 3], envs[(i / 2) % 4]]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        let yaml = format!(
            "apiVersion: pao.dev/v2\nkind: CatalogItem\nmetadata: {{ id: item-{i:04}, name: Item {i}, \
             description: Item number {i}., version: 1.0.0, category: {}, tags: [t{}, common], \
             owner: {{ team: {} }}{} }}\n{}{ITEM}",
            categories[i % 3],
            i % 5,
            ["platform", "data"][(i / 3) % 2],
            if access.is_empty() {
                String::new()
            } else {
                format!(", environment: prod, access: {{ {access} }}")
            },
            status[(i / 7) % 3],
        );
        std::fs::write(dir.join(format!("item-{i:04}.yaml")), yaml).unwrap();
    }
    let c = pao_core::catalog::Catalog::load(&dir, &registry.load_options()).unwrap();
    assert!(
        !c.has_errors(),
        "{}",
        pao_core::catalog::render_all(c.diagnostics())
    );
    assert_eq!(c.len(), n);
    c
}

/// Every page of `filter` for `who`, followed by cursor: (ids, totals seen).
fn all_pages(
    engine: &Orchestrator,
    who: &Principal,
    filter: &pao_core::service::CatalogFilter,
) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut totals = Vec::new();
    let mut f = filter.clone();
    loop {
        let page = engine.catalog_page(who, &f);
        assert!(page.items.len() <= f.limit.unwrap_or(50).max(1));
        ids.extend(page.items.iter().map(|i| i.id().to_string()));
        totals.push(page.total);
        match page.next {
            Some(next) => f.after = Some(next),
            None => break,
        }
    }
    (ids, totals)
}

#[test]
fn catalog_pages_from_class_views_match_the_items_filtered_one_by_one() {
    use pao_core::service::CatalogFilter;
    let registry = {
        let mut r = ActionRegistry::new();
        r.register(Arc::new(TestAction {
            ledger: Arc::new(Ledger::default()),
        }));
        r
    };
    let catalog = varied_catalog(240, &registry);
    let principals = [
        Principal::new("ann", &["payments"], &["developer"]),
        Principal::new("ben", &["data"], &["sre"]),
        Principal::new("cid", &["payments", "data"], &["developer", "sre"]),
        Principal::new("dee", &[], &[]),
        Principal::new("eve", &["data", "payments"], &["sre", "developer"]),
        Principal::new("root", &[], &["admin"]),
    ];
    let filters = [
        CatalogFilter::default(),
        CatalogFilter {
            limit: Some(7),
            ..Default::default()
        },
        CatalogFilter {
            include_retired: true,
            limit: Some(13),
            ..Default::default()
        },
        CatalogFilter {
            category: Some("database".into()),
            limit: Some(5),
            ..Default::default()
        },
        CatalogFilter {
            category: Some("nope".into()),
            ..Default::default()
        },
        CatalogFilter {
            tag: Some("t3".into()),
            limit: Some(4),
            ..Default::default()
        },
        CatalogFilter {
            environment: Some("prod".into()),
            limit: Some(9),
            ..Default::default()
        },
        CatalogFilter {
            owner: Some("data".into()),
            include_retired: true,
            ..Default::default()
        },
        CatalogFilter {
            after: Some("item-0100".into()),
            limit: Some(11),
            ..Default::default()
        },
        CatalogFilter {
            after: Some("item-0100x".into()),
            limit: Some(11),
            ..Default::default()
        },
        CatalogFilter {
            after: Some("zzz".into()),
            ..Default::default()
        },
    ];
    // The same rules with no view class: every item asked for at each read.
    struct Unclassed;
    impl Authorizer for Unclassed {
        fn allowed(
            &self,
            who: &Principal,
            what: Permission,
            item: &CatalogItem,
            owner: Option<(&str, &str)>,
        ) -> bool {
            ItemAccessAuthorizer.allowed(who, what, item, owner)
        }
    }
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let classed = Orchestrator::builder(catalog.clone(), store.clone()).build();
    let unclassed = Orchestrator::builder(catalog.clone(), store)
        .authorizer(Arc::new(Unclassed))
        .build();
    for who in &principals {
        for filter in &filters {
            // What the filter means, item by item.
            let expected: Vec<String> = catalog
                .items()
                .filter(|i| ItemAccessAuthorizer.allowed(who, Permission::View, &i.item, None))
                .filter(|i| {
                    let m = &i.item.metadata;
                    let retired = i.item.lifecycle.as_ref().and_then(|l| l.status)
                        == Some(pao_core::catalog::model::LifecycleStatus::Retired);
                    filter.category.as_ref().is_none_or(|c| &m.category == c)
                        && filter.owner.as_ref().is_none_or(|o| &m.owner.team == o)
                        && filter
                            .tag
                            .as_ref()
                            .is_none_or(|t| m.tags.iter().flatten().any(|x| x == t))
                        && filter.environment.as_ref().is_none_or(|e| {
                            m.access
                                .as_ref()
                                .and_then(|a| a.environments.as_ref())
                                .is_none_or(|envs| envs.iter().any(|x| x == e || x == "*"))
                        })
                        && (filter.include_retired || !retired)
                })
                .map(|i| i.id().to_string())
                .collect();
            let total = expected.len();
            let expected: Vec<String> = expected
                .into_iter()
                .filter(|id| filter.after.as_deref().is_none_or(|a| id.as_str() > a))
                .collect();
            for engine in [&classed, &unclassed] {
                let (ids, totals) = all_pages(engine, who, filter);
                assert_eq!(ids, expected, "{} {filter:?}", who.id);
                assert!(
                    totals.iter().all(|t| *t == total),
                    "{} {filter:?}: {totals:?}",
                    who.id
                );
            }
        }
    }
    // Two principals with the same teams and roles in another order share a class, and a
    // new catalog replaces every class's view.
    let (before, _) = all_pages(&classed, &principals[2], &CatalogFilter::default());
    assert_eq!(
        all_pages(&classed, &principals[4], &CatalogFilter::default()).0,
        before
    );
    classed.set_catalog(varied_catalog(30, &registry));
    let (after, totals) = all_pages(&classed, &principals[2], &CatalogFilter::default());
    assert!(after.len() < before.len() && after.iter().all(|id| id.as_str() < "item-0030"));
    assert_eq!(totals, vec![after.len()]);
}
