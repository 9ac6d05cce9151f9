//! Every example catalog item runs end to end against the vendor fakes: the real catalog, the
//! built-in actions configured by `VendorFakes::actions_config_json`, stand-ins for the WASM
//! plugins, the in-memory store, and the engine. Manual items complete when their ticket is
//! resolved in the JIRA fake and the status maps to `Completed`.

use std::sync::Arc;

use async_trait::async_trait;
use pao_actions::{ActionsConfig, register_builtins};
use pao_core::action::{
    Action, ActionContext, ActionDescriptor, ActionError, ActionOutput, ActionRegistry,
};
use pao_core::authz::Principal;
use pao_core::catalog::Catalog;
use pao_core::engine::{EngineConfig, Orchestrator, SubmitOptions};
use pao_core::lifecycle::RequestState;
use pao_core::secrets::StaticSecrets;
use pao_core::store::{MemoryStore, Store};
use pao_sandbox::VendorFakes;
use serde_json::{Value, json};

/// Stands in for a WASM plugin (`plugin:slack-notify`, `plugin:servicenow-incident`).
struct PluginStandIn(&'static str);

#[async_trait]
impl Action for PluginStandIn {
    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: self.0.into(),
            config_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            supports_rollback: false,
            sample_output: json!({"ok": true, "number": "INC0010001"}),
        }
    }
    async fn execute(&self, _: &ActionContext, _: &Value) -> Result<ActionOutput, ActionError> {
        Ok(ActionOutput::new(
            json!({"ok": true, "number": "INC0010001", "ts": "1700000000.000100"}),
        ))
    }
}

fn day(offset: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

fn cases() -> Vec<(&'static str, Value)> {
    vec![
        (
            "compute.kubernetes-namespace",
            json!({
            "name": "orders-api", "cluster": "eu-1", "team": "payments", "admins": ["li.wei"],
            "technical_contact": "ada", "labels": {"cost-center": "cc-42"}, "cpu_limit": 4, "memory_limit_gi": 8,
            "network_policy": "deny-all-ingress", "gitops_enabled": true,
            "manifests_repo": "https://github.com/example/orders", "manifests_path": "k8s"}),
        ),
        (
            "compute.virtual-machine",
            json!({
            "hostname": "build-01", "environment": "dev", "region": "eu-west-1", "os": "ubuntu-24.04",
            "size": "small", "disk_gb": 50, "public_ip": false, "expires_on": day(30)}),
        ),
        (
            "compute.vm-classic",
            json!({
            "hostname": "legacy-01", "environment": "dev", "template": "rhel-8-hardened",
            "vcpus": 2, "memory_gb": 8, "extra_disks": ["100G data"], "justification": "Vendor software needs VMware."}),
        ),
        (
            "database.postgres",
            json!({
            "name": "orders", "environment": "test", "owner_team": "payments", "region": "eu-west-1",
            "vpc": "vpc-0a1b2c", "size": "small", "storage_gb": 50, "extensions": ["pg_stat_statements", "pgcrypto"],
            "parameters": {"max_connections": "200"}}),
        ),
        (
            "database.redis",
            json!({"name": "sessions", "environment": "dev", "memory_gb": 2, "clustered": false}),
        ),
        (
            "identity.privileged-access",
            json!({
            "grantee": "ada", "system": "payments-db", "role": "read-only", "break_glass": true,
            "incident_key": "INC-1234", "starts_at": "2026-11-29T12:00:00Z", "hours": 4, "reason": "Investigate INC-1234."}),
        ),
        (
            "identity.service-account",
            json!({
            "name": "sa-orders", "team": "payments", "owner": "ada", "scopes": ["orders.read"],
            "expires_on": day(90), "vault_path": "apps/payments/"}),
        ),
        (
            "messaging.kafka-topic",
            json!({
            "environment": "dev", "cluster": "kafka-eu-1", "name": "orders.created", "partitions": 6,
            "replication_factor": 3, "retention": "7d", "cleanup_policies": ["delete"],
            "producers": ["svc-orders"], "consumers": ["svc-billing"], "extra_config": {}}),
        ),
        (
            "monitoring.grafana-dashboard",
            json!({
            "team": "payments", "title": "Orders API", "origin": "template", "template": "golden-signals", "refresh": "1m"}),
        ),
        (
            "monitoring.uptime-check",
            json!({
            "target_url": "https://orders.example.com/health", "expected_status": 200, "interval_seconds": 60,
            "locations": ["eu-west", "us-east"], "severity": "critical", "escalation_policy": "payments-oncall"}),
        ),
        (
            "networking.dns-record",
            json!({
            "zone": "example.internal", "name": "orders", "record_type": "CNAME", "target": "lb.example.internal", "ttl": 300}),
        ),
        (
            "networking.firewall-rule",
            json!({
            "source_cidrs": ["10.0.0.0/24"], "destination_cidr": "10.1.0.0/24", "protocols": ["tcp"], "ports": "443",
            "environment": "dev", "urgent": false, "business_justification": "Orders API calls the payment gateway."}),
        ),
        (
            "security.secret-rotation",
            json!({
            "secret_path": "apps/payments/orders/db_password", "generate": true, "restart_targets": ["eu-1/payments/api"],
            "compromised": true, "exposure_details": "Printed in a CI log."}),
        ),
        (
            "security.tls-certificate",
            json!({
            "common_name": "orders.example.internal", "sans": ["api.example.internal"], "key_type": "ec-p256", "validity": "90d",
            "auto_renew": false, "expiry_contact": "ada@example.com"}),
        ),
        (
            "storage.backup-restore",
            json!({
            "resource_kind": "volume", "resource_id": "vol-0123", "point_in_time": "2026-11-01T10:00:00Z",
            "keep_until": day(30), "overwrite": false}),
        ),
        (
            "storage.object-bucket",
            json!({
            "name": "orders-exports", "environment": "dev", "storage_class": "standard", "expected_gb": 100,
            "versioning": true, "tags": {"cost-center": "cc-42", "data-owner": "payments"}, "lifecycle_enabled": false}),
        ),
    ]
}

fn principal(id: &str, teams: &[&str], roles: &[&str]) -> Principal {
    let mut p = Principal::new(id, teams, roles);
    p.email = Some(format!("{id}@example.com"));
    p.name = Some(id.to_string());
    p
}

/// The example catalog with the built-ins pointed at `fakes`, on a `MemoryStore`.
fn engine(fakes: &VendorFakes, config: &ActionsConfig) -> (Arc<Orchestrator>, Arc<MemoryStore>) {
    let mut registry = ActionRegistry::new();
    registry.register(Arc::new(PluginStandIn("plugin:slack-notify")));
    registry.register(Arc::new(PluginStandIn("plugin:servicenow-incident")));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    let builtins = register_builtins(&mut registry, config, None).unwrap();
    let catalog = Catalog::load(&dir, &registry.load_options()).unwrap();
    assert!(!catalog.has_errors(), "{:#?}", catalog.diagnostics());
    builtins.update_prices(catalog.settings());
    let mut secrets = StaticSecrets::new();
    for (k, v) in fakes.secrets() {
        secrets = secrets.with(&k, &v);
    }
    let env = fakes
        .env()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let engine = Orchestrator::builder(catalog, store.clone())
        .actions(registry)
        .secrets(Arc::new(secrets))
        .config(EngineConfig {
            env,
            ..EngineConfig::default()
        })
        .build();
    (engine, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_shows_the_calls_without_making_them() {
    let fakes = VendorFakes::start_all().await.unwrap();
    let config: ActionsConfig = serde_json::from_value(fakes.actions_config_json()).unwrap();
    let (engine, _store) = engine(&fakes, &config);
    let ada = principal("ada", &["payments"], &["developer", "sre", "data-engineer"]);
    let (item, fields) = cases()
        .into_iter()
        .find(|(i, _)| *i == "networking.dns-record")
        .unwrap();
    let sim = engine.simulate(&ada, item, &fields).await.unwrap();
    // (Outputs rendered from the type's generic sample output may not exist for this item:
    // those are reported as problems; a dry run that failed would be one too.)
    assert!(
        !sim.problems.iter().any(|p| p.contains("dry run")),
        "{:?}",
        sim.problems
    );
    let record = &sim.actions[0];
    let call = &record.request.as_ref().expect("rest can dry-run")["requests"][0];
    assert_eq!(call["method"], "PUT", "{call}");
    assert!(
        call["url"]
            .as_str()
            .unwrap()
            .starts_with(&fakes.env()["PAO_DNS_API_URL"]),
        "{call}"
    );
    let text = serde_json::to_string(&sim.actions).unwrap();
    for secret in fakes.secrets().values() {
        assert!(
            !text.contains(secret.as_str()),
            "a secret value leaked into the simulation"
        );
    }
    assert!(
        fakes.rest.effects().is_empty(),
        "a simulation changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_item_completes_against_the_fakes() {
    let fakes = VendorFakes::start_all().await.unwrap();
    let config: ActionsConfig = serde_json::from_value(fakes.actions_config_json()).unwrap();
    let (engine, store) = engine(&fakes, &config);
    let ada = principal("ada", &["payments"], &["developer", "sre", "data-engineer"]);
    let all = [
        "compute-platform",
        "data-platform",
        "data-platform-leads",
        "network-engineering",
        "security-engineering",
        "identity-team",
        "messaging-platform",
        "platform-admins",
    ];
    let approvers = [
        principal("marta", &all, &["dba", "system-owner"]),
        principal("li", &all, &["dba", "system-owner"]),
    ];

    let mut failures = Vec::new();
    for (item, fields) in cases() {
        let mut r = match engine
            .submit(&ada, item, &fields, SubmitOptions::default())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{item}: submit: {e:?}"));
                continue;
            }
        };
        for a in &approvers {
            if r.state == RequestState::AwaitingApproval {
                r = engine.approve(a, &r.id, Some("ok".into())).await.unwrap();
            }
        }
        engine.run_until_idle("w1").await.unwrap();
        let mut r = store.get(&r.id).await.unwrap().unwrap();
        if let Some(w) = r.waiting_for.clone() {
            // Manual mode: the ticket is worked and resolved in JIRA.
            let key = w.trim_start_matches("manual:").to_string();
            fakes.jira.set_status(&key, "Done");
            let outcome = config
                .jira_ticket_outcome(None, "Done", Some("Done"))
                .unwrap()
                .into_manual()
                .unwrap();
            engine
                .resolve_manual(&r.id, outcome, "jira-webhook")
                .await
                .unwrap();
            engine.run_until_idle("w1").await.unwrap();
            r = store.get(&r.id).await.unwrap().unwrap();
        }
        if r.state != RequestState::Completed {
            let events = store.events(&r.id, 0, 0).await.unwrap();
            let tail: Vec<String> = events
                .iter()
                .rev()
                .take(8)
                .map(|e| format!("{:?}", e.kind))
                .collect();
            failures.push(format!(
                "{item}: {} ({:?})\n    {}",
                r.state,
                r.error,
                tail.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // What the fakes saw.
    assert!(
        fakes.jira.issues().len() >= 6,
        "manual tickets and jira actions"
    );
    assert!(fakes.terraform.runs().len() >= 3);
    assert_eq!(fakes.github.runs().len(), 2);
    assert!(fakes.webhook.deliveries().len() >= 4);
    assert_eq!(fakes.webhook.rejected(), 0);
    assert_eq!(
        fakes.rest.resources("/redis/v2/caches").len(),
        1,
        "the asynchronous create was polled to DONE"
    );
    assert_eq!(
        fakes
            .rest
            .resources("/dns/v1/zones/example.internal/records")
            .len(),
        1
    );
    assert_eq!(fakes.rest.resources("/idp/admin/v1/clients").len(), 1);
    let record = fakes
        .jira
        .issues()
        .into_iter()
        .find(|i| i.key.starts_with("DBA-"))
        .unwrap();
    assert_eq!(
        record.status, "Done",
        "post-fulfillment ticket transitioned"
    );
    let classic = fakes
        .jira
        .issues()
        .into_iter()
        .find(|i| i.key.starts_with("VMW-"))
        .unwrap();
    assert_eq!(classic.created_via, 2, "jira-onprem speaks REST v2");
    let oncall = fakes
        .jira
        .issues()
        .into_iter()
        .find(|i| i.key.starts_with("OPS-") && i.key != "OPS-1")
        .unwrap();
    assert_eq!(oncall.links.len(), 1);
}
