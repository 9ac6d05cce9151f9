//! The `terraform` action against the Terraform Cloud fake.

mod support;

use std::time::Duration;

use pao_sandbox::Fault;
use serde_json::json;
use support::*;

fn input() -> serde_json::Value {
    json!({
        "instance": "tfc-main", "organization": "example-platform", "project": "databases",
        "workspace": "pg-orders", "template": "postgres-rds",
        "variables": {
            "identifier": "orders", "allocated_storage": 100,
            "extensions": {"value": ["pgcrypto"], "hcl": true},
            "master_password": {"value": "s3cr3t-master-pw", "sensitive": true},
            "AWS_REGION": {"value": "eu-west-1", "category": "env"}
        },
        "auto_apply": true, "message": "PAO request r1"
    })
}

#[tokio::test]
async fn creates_workspace_sets_vars_runs_and_reads_outputs() {
    let s = sandbox().await;
    let out = s.run("terraform", "pao-r1-tf", &input()).await.unwrap();
    assert_eq!(out.result["status"], "applied");
    assert_eq!(out.result["outputs"]["port"], 5432);
    assert_eq!(
        out.result["outputs"]["endpoint"],
        "pg-orders.db.example.internal"
    );
    assert!(
        out.result["outputs"].get("admin_password").is_none(),
        "sensitive outputs stay in Terraform"
    );
    let ws = &s.fakes.terraform.workspaces()[0];
    assert_eq!(ws.name, "pg-orders");
    assert_eq!(
        ws.attributes["vcs-repo"]["identifier"],
        "example/terraform-aws-postgres"
    );
    assert_eq!(ws.vars["master_password"].1["sensitive"], true);
    assert_eq!(ws.vars["extensions"].1["value"], "[\"pgcrypto\"]");
    assert_eq!(ws.vars["extensions"].1["hcl"], true);
    assert_eq!(ws.vars["AWS_REGION"].1["category"], "env");
    assert_eq!(ws.vars["allocated_storage"].1["value"], "100");
    let runs = s.fakes.terraform.runs();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].message.contains("[pao:pao-r1-tf]"));
}

#[tokio::test]
async fn rerun_follows_the_same_run_and_updates_vars() {
    let s = sandbox().await;
    let a = s.run("terraform", "k-same", &input()).await.unwrap();
    let b = s.run("terraform", "k-same", &input()).await.unwrap();
    assert_eq!(a.result["run_id"], b.result["run_id"]);
    assert_eq!(s.fakes.terraform.runs().len(), 1);
    assert_eq!(s.fakes.terraform.workspaces().len(), 1);
}

#[tokio::test]
async fn without_auto_apply_waits_for_confirmation() {
    let s = sandbox().await;
    let mut i = input();
    i["auto_apply"] = json!(false);
    let ctx = s.ctx("k-confirm");
    let action = s.action("terraform");
    let h = tokio::spawn({
        let ctx = ctx.clone();
        async move { action.execute(&ctx, &i).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!h.is_finished(), "a planned run waits");
    assert_eq!(s.fakes.terraform.runs()[0].status, "planned");
    ctx.cancel.cancel();
    let e = h.await.unwrap().unwrap_err();
    assert_eq!(e.class, pao_core::action::ErrorClass::Cancelled);
}

#[tokio::test]
async fn errored_run_is_permanent() {
    let s = sandbox().await;
    s.run("terraform", "k-first", &input()).await.unwrap();
    s.fakes.terraform.fail_next_plan();
    let e = s.run("terraform", "k-err", &input()).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("ended errored"), "{}", e.message);
}

#[tokio::test]
async fn rollback_queues_a_destroy_run() {
    let s = sandbox().await;
    let out = s.run("terraform", "k-rb", &input()).await.unwrap();
    s.action("terraform")
        .rollback(&s.ctx("k-rb-rollback"), &input(), &out.rollback_state)
        .await
        .unwrap();
    let runs = s.fakes.terraform.runs();
    assert_eq!(runs.len(), 2);
    assert!(runs[1].is_destroy);
    assert_eq!(runs[1].status, "applied");
    // The catalog's rollback form: a terraform action with destroy: true.
    let r = s
        .run(
            "terraform",
            "k-rb2",
            &json!({"instance": "tfc-main", "workspace": "never-created", "destroy": true}),
        )
        .await
        .unwrap();
    assert_eq!(r.result["status"], "no_workspace");
}

#[tokio::test]
async fn unknown_template_is_permanent() {
    let s = sandbox().await;
    let mut i = input();
    i["template"] = json!("nope");
    let e = s.run("terraform", "k-tpl", &i).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("postgres-rds"), "{}", e.message);
}

#[tokio::test]
async fn fault_classes_with_jsonapi_errors() {
    let s = sandbox().await;
    s.fakes.terraform.faults.inject(Fault::Status(401), 1);
    let e = s.run("terraform", "f", &input()).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("unauthorized"), "{}", e.message);
    s.fakes.terraform.faults.inject(
        Fault::RateLimited {
            retry_after_secs: 5,
        },
        1,
    );
    let e = s.run("terraform", "f", &input()).await.unwrap_err();
    assert_eq!(e.retry_after, Some(Duration::from_secs(5)));
    s.fakes.terraform.faults.inject(Fault::Status(500), 1);
    assert_retryable(&s.run("terraform", "f", &input()).await.unwrap_err());
    s.fakes
        .terraform
        .faults
        .inject(Fault::Delay(Duration::from_secs(2)), 1);
    assert_retryable(&s.run("terraform", "f", &input()).await.unwrap_err());
    s.fakes.terraform.faults.inject(Fault::MalformedJson, 1);
    assert_permanent(&s.run("terraform", "f", &input()).await.unwrap_err());
    s.fakes
        .terraform
        .faults
        .inject(Fault::Oversized(2 << 20), 1);
    assert_permanent(&s.run("terraform", "f", &input()).await.unwrap_err());
    // After the faults: one workspace, one run.
    s.run("terraform", "f", &input()).await.unwrap();
    assert_eq!(s.fakes.terraform.runs().len(), 1);
}

#[tokio::test]
async fn workspace_is_created_in_another_organization_without_project() {
    let s = sandbox().await;
    let mut i = input();
    i["organization"] = json!("other-org");
    i["project"] = json!(null);
    i.as_object_mut().unwrap().remove("project");
    assert_eq!(
        s.run("terraform", "o", &i).await.unwrap().result["status"],
        "applied"
    );
}

#[tokio::test]
async fn dry_run_hides_sensitive_values() {
    let s = sandbox().await;
    let mut ctx = s.ctx("dry");
    ctx.dry_run = true;
    let out = s.action("terraform").execute(&ctx, &input()).await.unwrap();
    assert!(!out.result.to_string().contains("s3cr3t-master-pw"));
    assert_eq!(
        out.result["variables"]["master_password"]["value"],
        "[REDACTED]"
    );
    assert!(s.fakes.terraform.faults.requests().is_empty());
}

#[tokio::test]
async fn not_found_beyond_a_missing_workspace_is_permanent() {
    let s = sandbox().await;
    // The workspace lookup and then the create both answer 404 (e.g. a wrong organization).
    s.fakes.terraform.faults.inject(Fault::Status(404), 2);
    let e = s.run("terraform", "k404", &input()).await.unwrap_err();
    assert_permanent(&e);
    assert!(
        e.message.contains("404") && e.message.contains("not found"),
        "{}",
        e.message
    );
}
