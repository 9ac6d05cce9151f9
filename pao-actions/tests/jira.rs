//! The `jira` action against the JIRA fake (REST v3 with ADF, and v2).

mod support;

use std::time::Duration;

use pao_actions::JiraOutcomes;
use pao_actions::jira::{TicketOutcome, adf_to_text, ticket_outcome};
use pao_sandbox::Fault;
use serde_json::json;
use support::*;

fn create() -> serde_json::Value {
    json!({
        "instance": "jira-cloud", "project": "DBA", "issue_type": "Task",
        "summary": "New PostgreSQL orders-prod",
        "description": "Requested by **Ada**.\nEndpoint: db:5432",
        "labels": ["pao", "postgres"], "components": ["Databases"], "priority": "High",
        "custom_fields": {"customfield_10042": "sev1"}
    })
}

#[tokio::test]
async fn creates_an_issue_with_adf_and_returns_key_id_url() {
    let s = sandbox().await;
    let out = s.run("jira", "pao-r1-ticket", &create()).await.unwrap();
    let key = out.result["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("DBA-"));
    assert_eq!(
        out.result["url"],
        format!("{}/browse/{key}", s.fakes.jira.url())
    );
    assert_eq!(out.result["status"], "To Do");
    let issue = s.fakes.jira.issue(&key).unwrap();
    assert_eq!(issue.created_via, 3);
    assert_eq!(issue.fields["description"]["type"], "doc");
    assert_eq!(
        adf_to_text(&issue.fields["description"]),
        "Requested by Ada.\nEndpoint: db:5432\n"
    );
    assert_eq!(issue.fields["priority"]["name"], "High");
    assert_eq!(issue.fields["customfield_10042"], "sev1");
    assert_eq!(
        issue.fields["labels"],
        json!(["pao", "postgres", "pao-r1-ticket"])
    );
}

#[tokio::test]
async fn v2_sends_text_and_bearer_auth() {
    let s = sandbox().await;
    let mut input = create();
    input["instance"] = json!("jira-onprem");
    let out = s.run("jira", "k-v2", &input).await.unwrap();
    let issue = s
        .fakes
        .jira
        .issue(out.result["key"].as_str().unwrap())
        .unwrap();
    assert_eq!(issue.created_via, 2);
    assert_eq!(
        issue.fields["description"],
        "Requested by **Ada**.\nEndpoint: db:5432"
    );
}

#[tokio::test]
async fn rerun_after_a_crash_finds_the_issue_instead_of_creating_another() {
    let s = sandbox().await;
    let a = s.run("jira", "pao-r2-ticket", &create()).await.unwrap();
    let b = s.run("jira", "pao-r2-ticket", &create()).await.unwrap();
    assert_eq!(a.result["key"], b.result["key"]);
    assert_eq!(s.fakes.jira.issues_labelled("pao-r2-ticket").len(), 1);
    assert_eq!(b.result["created"], false);
}

#[tokio::test]
async fn transition_comment_and_link_on_an_existing_issue() {
    let s = sandbox().await;
    let a = s.run("jira", "k-tcl", &create()).await.unwrap();
    let key = a.result["key"].as_str().unwrap();
    let out = s
        .run("jira", "k-tcl-2", &json!({"instance": "jira-cloud", "issue_key": key, "comment": "Check is *live*", "link": {"issue_key": "OPS-1", "type": "Relates"}, "transition": "Done"}))
        .await
        .unwrap();
    assert_eq!(out.result["status"], "Done");
    let issue = s.fakes.jira.issue(key).unwrap();
    assert_eq!(issue.comments.len(), 1);
    assert_eq!(issue.comments[0]["type"], "doc");
    assert_eq!(
        issue.links,
        vec![("Relates".to_string(), "OPS-1".to_string())]
    );
}

#[tokio::test]
async fn unknown_transition_is_permanent_and_lists_the_choices() {
    let s = sandbox().await;
    let a = s.run("jira", "k-ut", &create()).await.unwrap();
    let e = s
        .run(
            "jira",
            "k-ut2",
            &json!({"issue_key": a.result["key"], "transition": "Teleport"}),
        )
        .await
        .unwrap_err();
    assert_permanent(&e);
    assert!(
        e.message.contains("no transition `Teleport`"),
        "{}",
        e.message
    );
    assert!(e.message.contains("Done"), "{}", e.message);
}

#[tokio::test]
async fn rollback_cancels_with_a_comment() {
    let s = sandbox().await;
    let out = s.run("jira", "k-rb", &create()).await.unwrap();
    let key = out.result["key"].as_str().unwrap().to_string();
    s.action("jira")
        .rollback(&s.ctx("k-rb-rollback"), &create(), &out.rollback_state)
        .await
        .unwrap();
    let issue = s.fakes.jira.issue(&key).unwrap();
    assert_eq!(issue.status, "Cancelled");
    assert_eq!(issue.comments.len(), 1);
    // Twice is fine: already cancelled.
    s.action("jira")
        .rollback(&s.ctx("k-rb-rollback"), &create(), &out.rollback_state)
        .await
        .unwrap();
    assert_eq!(s.fakes.jira.issue(&key).unwrap().comments.len(), 1);
}

#[tokio::test]
async fn bad_credentials_are_permanent_with_jira_message() {
    let s = sandbox().await;
    s.fakes.jira.faults.inject(Fault::Status(401), 1);
    let e = s.run("jira", "k401", &create()).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("401"), "{}", e.message);
    assert!(e.message.contains("Unauthorized"), "{}", e.message);
}

#[tokio::test]
async fn missing_issue_is_permanent() {
    let s = sandbox().await;
    let e = s
        .run(
            "jira",
            "k404",
            &json!({"issue_key": "NOPE-9", "comment": "x"}),
        )
        .await
        .unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("Issue does not exist"), "{}", e.message);
}

#[tokio::test]
async fn field_errors_carry_jira_errors_map() {
    let s = sandbox().await;
    let mut input = create();
    input["summary"] = json!("");
    let e = s.run("jira", "k400", &input).await.unwrap_err();
    assert_permanent(&e);
    assert!(
        e.message.contains("summary: You must specify a summary"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn rate_limit_is_retryable_with_retry_after() {
    let s = sandbox().await;
    s.fakes.jira.faults.inject(
        Fault::RateLimited {
            retry_after_secs: 7,
        },
        1,
    );
    let e = s.run("jira", "k429", &create()).await.unwrap_err();
    assert_retryable(&e);
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn server_error_then_success_creates_one_issue() {
    let s = sandbox().await;
    s.fakes.jira.faults.inject(Fault::Status(500), 1);
    let e = s.run("jira", "k500", &create()).await.unwrap_err();
    assert_retryable(&e);
    s.run("jira", "k500", &create()).await.unwrap();
    assert_eq!(s.fakes.jira.issues_labelled("k500").len(), 1);
}

#[tokio::test]
async fn timeout_is_retryable() {
    let s = sandbox().await;
    s.fakes
        .jira
        .faults
        .inject(Fault::Delay(Duration::from_secs(2)), 1);
    let e = s.run("jira", "kto", &create()).await.unwrap_err();
    assert_retryable(&e);
    assert!(e.message.contains("did not answer"), "{}", e.message);
}

#[tokio::test]
async fn malformed_json_is_permanent() {
    let s = sandbox().await;
    s.fakes.jira.faults.inject(Fault::MalformedJson, 1);
    let e = s.run("jira", "kmj", &create()).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("not valid JSON"), "{}", e.message);
}

#[tokio::test]
async fn oversized_response_is_refused() {
    let s = sandbox().await;
    s.fakes.jira.faults.inject(Fault::Oversized(2 << 20), 1);
    let e = s.run("jira", "kbig", &create()).await.unwrap_err();
    assert_permanent(&e);
    assert!(e.message.contains("larger than"), "{}", e.message);
}

#[tokio::test]
async fn cancellation_stops_the_call() {
    let s = sandbox().await;
    s.fakes
        .jira
        .faults
        .inject(Fault::Delay(Duration::from_millis(400)), 1);
    let ctx = s.ctx("kcancel");
    let c = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.cancel();
    });
    let e = s.action("jira").execute(&ctx, &create()).await.unwrap_err();
    assert_eq!(e.class, pao_core::action::ErrorClass::Cancelled);
}

#[tokio::test]
async fn dry_run_describes_without_calling() {
    let s = sandbox().await;
    let mut ctx = s.ctx("kdry");
    ctx.dry_run = true;
    let out = s.action("jira").execute(&ctx, &create()).await.unwrap();
    assert_eq!(out.result["dry_run"], true);
    let req = &out.result["requests"][0];
    assert_eq!(req["method"], "POST");
    assert!(req["url"].as_str().unwrap().ends_with("/rest/api/3/issue"));
    assert_eq!(req["headers"]["Authorization"], "[REDACTED]");
    assert_eq!(req["body"]["fields"]["description"]["type"], "doc");
    assert!(s.fakes.jira.faults.requests().is_empty());
}

#[test]
fn status_to_outcome() {
    let o = JiraOutcomes::default();
    assert_eq!(
        ticket_outcome(&o, "In Progress", None),
        TicketOutcome::Pending
    );
    assert_eq!(
        ticket_outcome(&o, "done", Some("Done")),
        TicketOutcome::Completed
    );
    assert!(matches!(
        ticket_outcome(&o, "Closed", Some("Won't Fix")),
        TicketOutcome::Failed(_)
    ));
    assert!(matches!(
        ticket_outcome(&o, "Won't Do", None),
        TicketOutcome::Failed(_)
    ));
    assert!(matches!(
        ticket_outcome(&o, "Cancelled", None),
        TicketOutcome::Cancelled(_)
    ));
    assert_eq!(
        ticket_outcome(&o, "Done", None).into_manual(),
        Some(pao_core::engine::ManualOutcome::Completed)
    );
    assert_eq!(TicketOutcome::Pending.into_manual(), None);
    let custom = JiraOutcomes {
        completed: vec!["Provisioned".into()],
        ..JiraOutcomes::default()
    };
    assert_eq!(
        ticket_outcome(&custom, "Provisioned", None),
        TicketOutcome::Completed
    );
    assert_eq!(
        ticket_outcome(&custom, "Done", None),
        TicketOutcome::Pending
    );
}

#[tokio::test]
async fn rerun_of_a_comment_does_not_comment_twice() {
    let s = sandbox().await;
    let a = s.run("jira", "k-c", &create()).await.unwrap();
    let input =
        json!({"issue_key": a.result["key"], "comment": "Check is live: https://x.example/run/1"});
    s.run("jira", "k-c2", &input).await.unwrap();
    s.run("jira", "k-c2", &input).await.unwrap();
    let issue = s
        .fakes
        .jira
        .issue(a.result["key"].as_str().unwrap())
        .unwrap();
    assert_eq!(issue.comments.len(), 1);
}

#[tokio::test]
async fn a_server_can_poll_a_manual_ticket_outcome() {
    let s = sandbox().await;
    let tickets = pao_actions::jira::JiraTickets::new(&s.config).unwrap();
    let out = s.run("jira", "k-manual", &create()).await.unwrap();
    let key = out.result["key"].as_str().unwrap();
    let outcome = |status: &'static str| {
        s.fakes.jira.set_status(key, status);
        tickets.outcome(s.secrets.clone(), Some("jira-cloud"), key)
    };
    assert_eq!(
        outcome("In Progress").await.unwrap(),
        TicketOutcome::Pending
    );
    assert_eq!(outcome("Done").await.unwrap(), TicketOutcome::Completed);
    assert!(matches!(
        outcome("Won't Do").await.unwrap(),
        TicketOutcome::Failed(_)
    ));
    assert!(matches!(
        outcome("Cancelled").await.unwrap(),
        TicketOutcome::Cancelled(_)
    ));
    let e = tickets
        .outcome(s.secrets.clone(), None, "NOPE-1")
        .await
        .unwrap_err();
    assert_permanent(&e);
}
