//! The `github_workflow` action against the GitHub fake.

mod support;

use std::time::Duration;

use pao_actions::register_builtins;
use pao_core::action::ActionRegistry;
use pao_sandbox::Fault;
use serde_json::json;
use support::*;

fn input() -> serde_json::Value {
    json!({"instance": "github-example", "owner": "example", "repo": "platform-gitops", "workflow": "register-namespace.yml",
           "ref": "main", "inputs": {"cluster": "eu-1", "replicas": 3, "dry": false}, "wait": true})
}

#[tokio::test]
async fn dispatches_finds_the_run_and_waits_for_success() {
    let s = sandbox().await;
    let out = s
        .run("github_workflow", "pao-r1-argocd", &input())
        .await
        .unwrap();
    assert_eq!(out.result["conclusion"], "success");
    assert!(
        out.result["url"]
            .as_str()
            .unwrap()
            .contains("/actions/runs/")
    );
    assert_eq!(out.result["artifacts"][0]["name"], "provision-report");
    let runs = s.fakes.github.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].inputs["pao_correlation_id"], "pao-r1-argocd");
    assert_eq!(
        runs[0].inputs["replicas"], "3",
        "inputs are sent as strings"
    );
    assert_eq!(out.result["run_id"], runs[0].id);
}

#[tokio::test]
async fn rerun_follows_the_dispatched_run() {
    let s = sandbox().await;
    let a = s.run("github_workflow", "k-same", &input()).await.unwrap();
    let b = s.run("github_workflow", "k-same", &input()).await.unwrap();
    assert_eq!(a.result["run_id"], b.result["run_id"]);
    assert_eq!(s.fakes.github.runs().len(), 1);
}

#[tokio::test]
async fn failed_run_is_permanent_with_its_url() {
    let s = sandbox().await;
    s.fakes.github.conclude_with("failure");
    let e = s
        .run("github_workflow", "k-fail", &input())
        .await
        .unwrap_err();
    assert_permanent(&e);
    assert!(
        e.message.contains("concluded failure") && e.message.contains("https://github.com/"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn no_wait_returns_after_the_run_appears() {
    let s = sandbox().await;
    let mut i = input();
    i["wait"] = json!(false);
    i.as_object_mut().unwrap().remove("ref");
    let out = s.run("github_workflow", "k-nowait", &i).await.unwrap();
    assert_eq!(out.result["conclusion"], serde_json::Value::Null);
    assert_eq!(
        s.fakes.github.runs()[0].git_ref,
        "main",
        "default branch from the repository"
    );
}

#[tokio::test]
async fn fault_classes_with_github_messages() {
    let s = sandbox().await;
    s.fakes.github.faults.inject(Fault::Status(401), 1);
    let e = s.run("github_workflow", "f", &input()).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("Bad credentials"), "{}", e.message);
    let mut missing = input();
    missing["repo"] = json!("missing");
    let e = s
        .run("github_workflow", "f404", &missing)
        .await
        .unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("Not Found"), "{}", e.message);
    s.fakes.github.faults.inject(
        Fault::RateLimited {
            retry_after_secs: 60,
        },
        1,
    );
    let e = s.run("github_workflow", "f", &input()).await.unwrap_err();
    assert_eq!(e.retry_after, Some(Duration::from_secs(60)));
    s.fakes.github.faults.inject(Fault::Status(502), 1);
    assert_retryable(&s.run("github_workflow", "f", &input()).await.unwrap_err());
    s.fakes
        .github
        .faults
        .inject(Fault::Delay(Duration::from_secs(2)), 1);
    assert_retryable(&s.run("github_workflow", "f", &input()).await.unwrap_err());
    s.fakes.github.faults.inject(Fault::MalformedJson, 1);
    assert_permanent(&s.run("github_workflow", "f", &input()).await.unwrap_err());
    s.fakes.github.faults.inject(Fault::Oversized(2 << 20), 1);
    assert_permanent(&s.run("github_workflow", "f", &input()).await.unwrap_err());
    s.run("github_workflow", "f", &input()).await.unwrap();
    assert_eq!(
        s.fakes.github.runs().len(),
        1,
        "one dispatch in spite of the faults"
    );
}

/// A throwaway 2048-bit key made for this test only.
const TEST_APP_KEY: &str = include_str!("data/test-app-key.pem");

#[tokio::test]
async fn github_app_auth_mints_and_caches_an_installation_token() {
    let s = sandbox().await;
    let mut config = s.config.clone();
    let inst = config.github.get_mut("github-example").unwrap();
    inst.auth = pao_actions::GithubAuth::App {
        app_id: s.fakes.github.credentials.app_id.clone(),
        private_key_secret: "github_app_key".into(),
        installation_id: s.fakes.github.credentials.installation_id,
    };
    let mut registry = ActionRegistry::new();
    register_builtins(&mut registry, &config, None).unwrap();
    let secrets = std::sync::Arc::new((*s.secrets).clone().with("github_app_key", TEST_APP_KEY));
    let action = registry.get("github_workflow").unwrap().clone();
    let mut ctx = s.ctx("app-1");
    ctx.secrets = secrets.clone();
    action.execute(&ctx, &input()).await.unwrap();
    let mut ctx = s.ctx("app-2");
    ctx.secrets = secrets;
    action.execute(&ctx, &input()).await.unwrap();
    assert_eq!(
        s.fakes.github.installation_tokens().len(),
        1,
        "token cached"
    );
    assert_eq!(s.fakes.github.runs().len(), 2);
}
