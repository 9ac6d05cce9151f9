//! No secret value in any log line, error or output, whatever happens; the sandbox's actions
//! configuration is a valid `ActionsConfig`; describe() agrees with the catalog schema.

mod support;

use std::time::Duration;

use pao_actions::{ActionsConfig, BUILT_IN_TYPES};
use pao_sandbox::{Fault, VendorFakes};
use serde_json::json;
use support::*;

#[tokio::test]
async fn sandbox_actions_config_deserializes_and_validates() {
    let fakes = VendorFakes::start_all().await.unwrap();
    let c: ActionsConfig = serde_json::from_value(fakes.actions_config_json()).unwrap();
    c.validate().unwrap();
    assert_eq!(c.jira["jira-cloud"].api_version, 3);
    assert_eq!(c.jira["jira-onprem"].api_version, 2);
    assert!(c.terraform.contains_key("tfc-main"));
    assert!(c.github.contains_key("github-example"));
    // Every secret named by the config is in the sandbox's secrets.
    let secrets = fakes.secrets();
    for name in [
        "jira_cloud_api_token",
        "jira_onprem_pat",
        "tfc_token",
        "github_token",
        "hook_hmac",
    ] {
        assert!(secrets.contains_key(name), "{name}");
    }
    // Unknown keys are refused.
    let mut bad = fakes.actions_config_json();
    bad["jira"]["jira-cloud"]["passwrd"] = json!("x");
    assert!(serde_json::from_value::<ActionsConfig>(bad).is_err());
}

#[test]
fn config_validation_errors() {
    let two_defaults: ActionsConfig = serde_json::from_value(json!({"github": {
        "a": {"auth": {"kind": "pat", "token_secret": "t"}, "default": true},
        "b": {"auth": {"kind": "pat", "token_secret": "t"}, "default": true}}}))
    .unwrap();
    assert!(
        two_defaults
            .validate()
            .unwrap_err()
            .to_string()
            .contains("more than one")
    );
    let bad_url: ActionsConfig = serde_json::from_value(
        json!({"terraform": {"t": {"url": "app.terraform.io", "token_secret": "x"}}}),
    )
    .unwrap();
    assert!(
        bad_url
            .validate()
            .unwrap_err()
            .to_string()
            .contains("terraform.t.url")
    );
}

#[tokio::test]
async fn describe_takes_the_config_schema_from_the_item_schema() {
    let s = sandbox().await;
    for ty in BUILT_IN_TYPES {
        let d = s.action(ty).describe();
        assert_eq!(&d.type_name, ty);
        assert_eq!(d.config_schema["additionalProperties"], false, "{ty}");
        assert!(d.config_schema["$defs"].is_object());
        assert!(!d.sample_output.is_null());
    }
}

/// Every action, every failure path: the captured log lines and error messages never contain
/// a secret value.
#[tokio::test]
async fn secrets_never_appear_in_logs_errors_or_outputs() {
    let s = sandbox().await;
    let secret_values: Vec<String> = s.fakes.secrets().into_values().collect();
    let mut texts: Vec<String> = Vec::new();
    let jira = json!({"project": "OPS", "issue_type": "Task", "summary": "x", "description": "y"});
    let tf = json!({"workspace": "ws-secret", "variables": {"pw": {"value": s.secret("pg_master_password"), "sensitive": true}}});
    let gh = json!({"owner": "example", "repo": "r", "workflow": "w.yml", "ref": "main"});
    let rest = json!({"method": "POST", "url": format!("{}/admin/v1/clients", s.url("PAO_IDP_URL")),
        "auth": {"kind": "oauth2_client_credentials", "token_url": format!("{}/oauth2/token", s.url("PAO_IDP_URL")),
                 "client_id": "pao-idp-admin", "client_secret": s.secret("idp_admin_client_secret")}, "body": {"n": 1}});
    let basic = json!({"method": "POST", "url": format!("{}/v3/clusters/c/topics", s.url("PAO_KAFKA_REST_URL")),
        "auth": {"kind": "basic", "username": "pao-provisioner", "password": s.secret("kafka_rest_password")}, "body": {"topic_name": "t"}});
    let hook = json!({"url": format!("{}/x", s.url("PAO_EVENTS_WEBHOOK_URL")), "secret": s.secret("hook_hmac"), "body": {"a": 1}});
    // An error body that echoes the credential back must not leak it either.
    let echo = json!({"url": format!("{}/v1/zones/z/status?api_key={}", s.url("PAO_DNS_API_URL"), s.secret("dns_api_key")),
        "auth": {"kind": "api_key", "name": "X-API-Key", "value": s.secret("dns_api_key")}});
    let cases = [
        ("jira", jira),
        ("terraform", tf),
        ("github_workflow", gh),
        ("rest", rest),
        ("rest", basic),
        ("webhook", hook),
        ("rest", echo),
    ];
    let faults = [
        None,
        Some(Fault::Status(401)),
        Some(Fault::Status(500)),
        Some(Fault::RateLimited {
            retry_after_secs: 1,
        }),
        Some(Fault::Delay(Duration::from_secs(2))),
        Some(Fault::MalformedJson),
    ];
    for (i, (ty, input)) in cases.iter().enumerate() {
        for (j, fault) in faults.iter().enumerate() {
            for f in [
                &s.fakes.jira.faults,
                &s.fakes.github.faults,
                &s.fakes.terraform.faults,
                &s.fakes.rest.faults,
                &s.fakes.webhook.faults,
            ] {
                f.clear();
                if let Some(fault) = fault {
                    f.inject(fault.clone(), 1);
                }
            }
            for dry in [false, true] {
                let mut ctx = s.ctx(&format!("k-{i}-{j}"));
                ctx.dry_run = dry;
                let r = s.action(ty).execute(&ctx, input).await;
                match r {
                    Ok(o) => texts.push(o.result.to_string()),
                    Err(e) => texts.push(e.message),
                }
                texts.extend(ctx.log.drain().into_iter().map(|l| l.message));
            }
        }
    }
    assert!(texts.len() > 80);
    for t in &texts {
        for v in &secret_values {
            assert!(!t.contains(v.as_str()), "secret leaked in: {t}");
        }
    }
}
