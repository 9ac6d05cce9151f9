//! The example plugins (`examples/plugins/`), built for `wasm32-wasip2`, loaded from a plugin
//! folder like a deployment does, and run against the sandbox fakes of Slack and ServiceNow
//! on 127.0.0.1: the effect happens once per request action, rollback undoes it, and the
//! example catalog's configs pass the schemas the plugins describe.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use pao_core::action::{Action, ActionRegistry, ErrorClass};
use pao_core::catalog::Catalog;
use pao_core::secrets::StaticSecrets;
use pao_sandbox::servicenow::{self, ServiceNowFake};
use pao_sandbox::slack::{self, SlackFake};
use pao_wasm_host::{Grant, Grants, HostConfig, PluginHost};
use serde_json::json;

fn example(name: &str) -> (PathBuf, String) {
    let wasm = common::build_plugin(name);
    let manifest = std::fs::read_to_string(
        common::workspace_root().join(format!("examples/plugins/{name}/{name}.toml")),
    )
    .unwrap();
    (wasm, manifest)
}

async fn load(grants: &Grants) -> (ActionRegistry, tempfile::TempDir) {
    let (slack_wasm, slack_manifest) = example("slack-notify");
    let (sn_wasm, sn_manifest) = example("servicenow-incident");
    let dir = common::plugin_dir(&[
        (&slack_wasm, "slack-notify", &slack_manifest),
        (&sn_wasm, "servicenow-incident", &sn_manifest),
    ]);
    let host = PluginHost::new(HostConfig {
        cache_dir: Some(common::cache_dir()),
        ..HostConfig::default()
    })
    .unwrap();
    let mut registry = ActionRegistry::new();
    for action in host.load_dir(dir.path(), grants).await.unwrap() {
        registry.register(action);
    }
    (registry, dir)
}

fn secrets() -> StaticSecrets {
    StaticSecrets::new()
        .with("slack_bot_token", slack::SANDBOX_TOKEN)
        .with("servicenow_password", servicenow::SANDBOX_PASSWORD)
}

fn grants(slack: &SlackFake, sn: &ServiceNowFake) -> Grants {
    let host = |url: String| url.trim_start_matches("http://").to_string();
    Grants::new()
        .with(
            "slack-notify",
            Grant::default()
                .http_hosts([host(slack.url())])
                .secrets(["slack_bot_token"])
                .kv()
                .setting("api_url", &slack.api_url()),
        )
        .with(
            "servicenow-incident",
            Grant::default()
                .http_hosts([host(sn.url())])
                .secrets(["servicenow_password"])
                .setting("instance_url", &sn.url())
                .setting("username", servicenow::SANDBOX_USER),
        )
}

#[tokio::test]
async fn slack_notify_posts_once_per_action_and_rolls_back() {
    let slack = SlackFake::start().await.unwrap();
    let sn = ServiceNowFake::start().await.unwrap();
    let (registry, _dir) = load(&grants(&slack, &sn)).await;
    let action = registry.get("plugin:slack-notify").unwrap().clone();
    let input = json!({ "channel": "#data-platform", "text": ":elephant: orders-db is ready" });

    let ctx = common::context(secrets());
    let out = action.execute(&ctx, &input).await.unwrap();
    assert_eq!(out.result["channel"], "CDATAPLATFORM");
    let lines = ctx.log.drain();
    assert!(
        lines
            .iter()
            .any(|l| l.message.starts_with("posted to CDATAPLATFORM")),
        "{lines:?}"
    );

    // A retry of the same action (same idempotency key) does not post again.
    let mut retry = common::context(secrets());
    retry.attempt = 2;
    let again = action.execute(&retry, &input).await.unwrap();
    assert_eq!(again.result, out.result);
    let messages = slack.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].text, ":elephant: orders-db is ready");

    action
        .rollback(&ctx, &input, &out.rollback_state)
        .await
        .unwrap();
    assert!(slack.messages()[0].deleted);
}

#[tokio::test]
async fn slack_errors_keep_their_class() {
    let slack = SlackFake::start_with_token("xoxb-another-token")
        .await
        .unwrap();
    let sn = ServiceNowFake::start().await.unwrap();
    let (registry, _dir) = load(&grants(&slack, &sn)).await;
    let action = registry.get("plugin:slack-notify").unwrap().clone();
    let input = json!({ "channel": "#x", "text": "hi" });
    let e = action
        .execute(&common::context(secrets()), &input)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("invalid_auth"), "{}", e.message);

    slack.rate_limit_next(1);
    let e = action
        .execute(&common::context(secrets()), &input)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable);
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(1)));
}

#[tokio::test]
async fn servicenow_incident_is_created_once_and_cancelled_on_rollback() {
    let slack = SlackFake::start().await.unwrap();
    let sn = ServiceNowFake::start().await.unwrap();
    let (registry, _dir) = load(&grants(&slack, &sn)).await;
    let action: Arc<dyn Action> = registry.get("plugin:servicenow-incident").unwrap().clone();
    let input = json!({
        "assignment_group": "Security Operations",
        "category": "security",
        "impact": 2,
        "urgency": 1,
        "short_description": "Exposed secret kv/payments/stripe",
        "description": "found in a public gist\nExposed since: unknown",
        "caller_id": "ada@example.com"
    });

    // The first attempt meets a 503: retryable, and nothing is created.
    sn.fail_next(&[503]);
    let ctx = common::context(secrets());
    let e = action.execute(&ctx, &input).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable, "{}", e.message);
    assert!(sn.incidents().is_empty());

    let out = action.execute(&ctx, &input).await.unwrap();
    assert_eq!(out.result["number"], "INC0010001");
    assert_eq!(out.result["existing"], false);
    let incident = &sn.incidents()[0];
    assert_eq!(incident["correlation_id"], "pao-req-42-notify");
    assert_eq!(incident["impact"], "2");
    assert_eq!(incident["assignment_group"], "Security Operations");

    // Another attempt of the same action finds it instead of opening a second one.
    let mut retry = common::context(secrets());
    retry.attempt = 3;
    let again = action.execute(&retry, &input).await.unwrap();
    assert_eq!(again.result["number"], "INC0010001");
    assert_eq!(again.result["existing"], true);
    assert_eq!(sn.incidents().len(), 1);
    let posts = sn.ledger().iter().filter(|l| l.method == "POST").count();
    assert_eq!(posts, 1);

    action
        .rollback(&ctx, &input, &out.rollback_state)
        .await
        .unwrap();
    assert_eq!(sn.incidents()[0]["state"], "8");
}

#[tokio::test]
async fn without_grants_the_examples_reach_nothing() {
    let slack = SlackFake::start().await.unwrap();
    let sn = ServiceNowFake::start().await.unwrap();
    let mut g = grants(&slack, &sn);
    // The settings stay, the hosts go.
    for grant in g.plugins.values_mut() {
        grant.http_hosts.clear();
    }
    let (registry, _dir) = load(&g).await;
    let action = registry.get("plugin:slack-notify").unwrap().clone();
    let e = action
        .execute(
            &common::context(secrets()),
            &json!({ "channel": "#x", "text": "hi" }),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message
            .contains("is not granted to plugin `slack-notify`"),
        "{}",
        e.message
    );
    assert!(slack.ledger().is_empty());
}

#[tokio::test]
async fn the_example_catalog_passes_the_schemas_the_plugins_describe() {
    let slack = SlackFake::start().await.unwrap();
    let sn = ServiceNowFake::start().await.unwrap();
    let (registry, _dir) = load(&grants(&slack, &sn)).await;
    // The built-in types as the server registers them, plus the plugins' schemas.
    let from_registry = registry.load_options();
    assert!(
        from_registry
            .plugin_config_schemas
            .contains_key("plugin:slack-notify")
    );
    let mut opts = pao_core::catalog::LoadOptions::default();
    opts.action_types.extend(from_registry.action_types);
    opts.plugin_config_schemas = from_registry.plugin_config_schemas;
    let catalog = Catalog::load(&common::workspace_root().join("examples/catalog"), &opts).unwrap();
    let plugin_errors: Vec<_> = catalog
        .diagnostics()
        .iter()
        .filter(|d| d.is_error() && format!("{d:?}").contains("plugin:"))
        .collect();
    assert!(plugin_errors.is_empty(), "{plugin_errors:#?}");

    // And the schemas do bite: a wrong config is caught at load time.
    let schema = &registry
        .get("plugin:slack-notify")
        .unwrap()
        .describe()
        .config_schema;
    let v = jsonschema::validator_for(schema).unwrap();
    assert!(v.is_valid(&json!({ "channel": "#x", "text": "hi" })));
    assert!(!v.is_valid(&json!({ "channel": "#x" })));
    assert!(!v.is_valid(&json!({ "channel": "#x", "text": "hi", "colour": "red" })));
}
