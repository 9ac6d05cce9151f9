//! Inbound webhooks: GitHub (`X-Hub-Signature-256`), JIRA (shared secret; drives manual-mode
//! completion), Terraform Cloud (`X-TFE-Notification-Signature`, HMAC-SHA512) and approvals
//! from chat tools (`X-PAO-Signature` over `timestamp.body`). Signatures are compared in
//! constant time; a delivery seen before, or a timestamp outside five minutes, is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use pao_core::authz::Principal;
use pao_core::engine::ManualOutcome;
use pao_core::lifecycle::RequestState;
use pao_core::service::TicketOutcome;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

const WINDOW: Duration = Duration::from_secs(300);

/// Remembers deliveries for the replay window.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<String, Instant>>,
}

impl ReplayGuard {
    /// `false` when `id` was seen within the window.
    pub fn first_time(&self, id: &str) -> bool {
        let now = Instant::now();
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        seen.retain(|_, at| now.duration_since(*at) < WINDOW * 2);
        if seen.contains_key(id) {
            return false;
        }
        seen.insert(id.to_string(), now);
        true
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

async fn secret(state: &AppState, name: Option<&String>, hook: &str) -> Result<String, ApiError> {
    let name = name.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "PAO-API-WEBHOOK-DISABLED",
            format!("the {hook} webhook is not configured (webhooks.{hook}_secret)"),
        )
    })?;
    let key = state
        .secrets
        .get(name)
        .await
        .map_err(|e| ApiError::unavailable(format!("{hook} webhook secret: {e}")))?;
    // An empty key would make an empty signature valid.
    if key.len() < 16 {
        return Err(ApiError::unavailable(format!(
            "the {hook} webhook's secret is shorter than 16 bytes; it is refused"
        )));
    }
    Ok(key)
}

fn bad_signature() -> ApiError {
    ApiError::unauthorized("signature missing or wrong")
}

fn verify_sha256(key: &str, message: &[u8], hex_sig: &str) -> Result<(), ApiError> {
    let sig = hex::decode(hex_sig).map_err(|_| bad_signature())?;
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).map_err(|_| bad_signature())?;
    mac.update(message);
    mac.verify_slice(&sig).map_err(|_| bad_signature())
}

fn check_timestamp(ts: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), ApiError> {
    let t: i64 = ts
        .parse()
        .map_err(|_| ApiError::unauthorized("timestamp is not unix seconds"))?;
    if now.timestamp().abs_diff(t) > WINDOW.as_secs() {
        return Err(ApiError::unauthorized(
            "timestamp outside the five-minute window (replay?)",
        ));
    }
    Ok(())
}

fn replayed() -> ApiError {
    ApiError::conflict("this delivery was already processed")
}

async fn audit(state: &AppState, actor: &str, action: &str, target: &str, detail: Value) {
    if let Err(e) = state.orch.record_audit(actor, action, target, detail).await {
        tracing::warn!(error = %e, action, target, "audit record not stored");
    }
}

/// A delivery was accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookAccepted {
    /// Always `true`.
    pub accepted: bool,
    /// The event (`X-GitHub-Event`; GitHub only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// What a JIRA event did.
#[derive(Debug, Serialize, ToSchema)]
pub struct JiraOutcome {
    /// Whether a manual-mode request waits for the issue.
    pub matched: bool,
    /// The issue key (when nothing matched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    /// The request that waits for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Whether the issue's status ended the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<bool>,
    /// The issue's status (when it did not end the request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The request's state (when it ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::requests::StateName>)]
    pub state: Option<RequestState>,
}

/// `POST /webhooks/github`: verified and recorded; `workflow_run` events are announced on
/// `/ws/notifications`.
pub async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HookAccepted>), ApiError> {
    let key = secret(
        &state,
        state.config.webhooks.github_secret.as_ref(),
        "github",
    )
    .await?;
    let sig = header(&headers, "x-hub-signature-256")
        .and_then(|s| s.strip_prefix("sha256="))
        .ok_or_else(bad_signature)?;
    verify_sha256(&key, &body, sig)?;
    let delivery = header(&headers, "x-github-delivery")
        .ok_or_else(|| ApiError::bad_request("X-GitHub-Delivery is missing"))?;
    if !state.replay.first_time(&format!("github:{delivery}")) {
        return Err(replayed());
    }
    let event = header(&headers, "x-github-event")
        .unwrap_or("unknown")
        .to_string();
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    audit(
        &state,
        "webhook:github",
        "webhook.github",
        &event,
        json!({ "delivery": delivery }),
    )
    .await;
    let _ = state.notifications.send(json!({
        "source": "github",
        "event": event,
        "action": payload.get("action"),
        "run_id": payload.pointer("/workflow_run/id"),
        "conclusion": payload.pointer("/workflow_run/conclusion"),
    }));
    Ok((
        StatusCode::ACCEPTED,
        Json(HookAccepted {
            accepted: true,
            event: Some(event),
        }),
    ))
}

/// `POST /webhooks/jira`: a JIRA issue changed. When a manual-mode request waits for that
/// issue and its status maps to an outcome, the request completes or fails.
pub async fn jira(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<JiraOutcome>, ApiError> {
    verify_jira(&state, &headers, &q, &body).await?;
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let issue_key = first_jira_delivery(&state, &payload)?;
    let status = payload
        .pointer("/issue/fields/status/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let category = payload
        .pointer("/issue/fields/status/statusCategory/key")
        .and_then(Value::as_str)
        .unwrap_or("");
    let resolution = payload
        .pointer("/issue/fields/resolution/name")
        .and_then(Value::as_str);
    let outcome = jira_outcome(&state.config.actions, status, category, resolution);
    let outcome = state
        .orch
        .ticket_changed(&issue_key, outcome, &format!("jira:{issue_key}"))
        .await?;
    Ok(Json(JiraOutcome::of(outcome, issue_key, status)))
}

/// Checks a JIRA delivery's signature (`X-Hub-Signature`), or its shared secret
/// (`X-PAO-Webhook-Secret`, or `?secret=` when allowed) compared in constant time.
async fn verify_jira(
    state: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<(), ApiError> {
    let key = secret(state, state.config.webhooks.jira_secret.as_ref(), "jira").await?;
    if let Some(sig) = header(headers, "x-hub-signature").and_then(|s| s.strip_prefix("sha256=")) {
        // JIRA Cloud signs the body with the webhook's secret.
        return verify_sha256(&key, body, sig);
    }
    let given = header(headers, "x-pao-webhook-secret")
        .map(str::to_string)
        .or_else(|| {
            q.get("secret")
                .filter(|_| state.config.webhooks.jira_secret_in_query)
                .cloned()
        })
        .ok_or_else(bad_signature)?;
    // Constant-time comparison through HMAC of both sides.
    let digest = |s: &str| {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"pao-jira").expect("any key length");
        m.update(s.as_bytes());
        m.finalize().into_bytes()
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"pao-jira").expect("any key length");
    mac.update(given.as_bytes());
    mac.verify_slice(&digest(&key)).map_err(|_| bad_signature())
}

/// The issue key of a JIRA delivery seen for the first time, stamped within the window.
fn first_jira_delivery(state: &AppState, payload: &Value) -> Result<String, ApiError> {
    let issue_key = payload
        .pointer("/issue/key")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::unprocessable(
                "PAO-API-INVALID-BODY",
                "`issue.key` is missing",
                json!([{ "pointer": "/issue/key", "message": "required" }]),
            )
        })?
        .to_string();
    // JIRA stamps every delivery (milliseconds): without one, a captured delivery could be
    // replayed at any time.
    let ts = payload
        .get("timestamp")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            ApiError::unprocessable(
                "PAO-API-INVALID-BODY",
                "`timestamp` (milliseconds since the epoch) is missing",
                json!([{ "pointer": "/timestamp", "message": "required" }]),
            )
        })?;
    check_timestamp(&(ts / 1000).to_string(), state.orch.now())?;
    let event = payload
        .get("webhookEvent")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !state
        .replay
        .first_time(&format!("jira:{issue_key}:{ts}:{event}"))
    {
        return Err(replayed());
    }
    Ok(issue_key)
}

impl JiraOutcome {
    fn of(outcome: TicketOutcome, issue_key: String, status: &str) -> JiraOutcome {
        let none = JiraOutcome {
            matched: true,
            issue: None,
            request_id: None,
            resolved: None,
            status: None,
            state: None,
        };
        match outcome {
            TicketOutcome::Unmatched => JiraOutcome {
                matched: false,
                issue: Some(issue_key),
                ..none
            },
            TicketOutcome::Waiting(r) => JiraOutcome {
                request_id: Some(r.id),
                resolved: Some(false),
                status: Some(status.to_string()),
                ..none
            },
            TicketOutcome::Resolved(done) => JiraOutcome {
                request_id: Some(done.id),
                resolved: Some(true),
                state: Some(done.state),
                ..none
            },
        }
    }
}

/// How a JIRA status ends a manual request: the status → outcome mapping of the default JIRA
/// instance (`pao-actions`; its defaults when no instance is configured). A status in JIRA's
/// `done` category that the mapping does not name ends the ticket as `Done` would.
pub fn jira_outcome(
    actions: &pao_actions::ActionsConfig,
    status: &str,
    category: &str,
    resolution: Option<&str>,
) -> Option<ManualOutcome> {
    use pao_actions::jira::{TicketOutcome, ticket_outcome};
    let map = |s: &str| {
        actions
            .jira_ticket_outcome(None, s, resolution)
            .unwrap_or_else(|_| {
                ticket_outcome(&pao_actions::JiraOutcomes::default(), s, resolution)
            })
    };
    match map(status) {
        TicketOutcome::Pending if category == "done" => map("Done"),
        o => o,
    }
    .into_manual()
}

/// `POST /webhooks/terraform`: a Terraform Cloud run notification, verified with HMAC-SHA512.
pub async fn terraform(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HookAccepted>), ApiError> {
    let key = secret(
        &state,
        state.config.webhooks.terraform_secret.as_ref(),
        "terraform",
    )
    .await?;
    let sig = header(&headers, "x-tfe-notification-signature").ok_or_else(bad_signature)?;
    let sig = hex::decode(sig).map_err(|_| bad_signature())?;
    let mut mac =
        Hmac::<sha2::Sha512>::new_from_slice(key.as_bytes()).map_err(|_| bad_signature())?;
    mac.update(&body);
    mac.verify_slice(&sig).map_err(|_| bad_signature())?;
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let run = payload.get("run_id").and_then(Value::as_str).unwrap_or("");
    let trigger = payload
        .pointer("/notifications/0/trigger")
        .and_then(Value::as_str)
        .unwrap_or("");
    let at = payload
        .pointer("/notifications/0/run_updated_at")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !state
        .replay
        .first_time(&format!("tfc:{run}:{trigger}:{at}"))
    {
        return Err(replayed());
    }
    audit(
        &state,
        "webhook:terraform",
        "webhook.terraform",
        run,
        json!({ "trigger": trigger }),
    )
    .await;
    let _ = state
        .notifications
        .send(json!({ "source": "terraform", "run_id": run, "trigger": trigger }));
    Ok((
        StatusCode::ACCEPTED,
        Json(HookAccepted {
            accepted: true,
            event: None,
        }),
    ))
}

/// Body of `POST /webhooks/approval`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalHook {
    /// The request (= approval id).
    pub request_id: String,
    /// Who decided, by id. Their teams and roles come from the server's configuration
    /// (`webhooks.approvers`, or the API token with that id), never from the delivery.
    pub approver: HookApprover,
    /// Approve or reject.
    pub approved: bool,
    /// Comment, or the reason of a rejection (required then).
    pub reason: Option<String>,
}

/// The approver named by an approval delivery.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookApprover {
    /// The principal id.
    #[schema(min_length = 1, max_length = 200)]
    pub id: String,
}

/// The principal an approval delivery speaks for: the configured approver with that id, or
/// the API token's principal with that id; 403 for anyone else.
fn hook_principal(state: &AppState, id: &str) -> Result<Principal, ApiError> {
    if let Some(a) = state.config.webhooks.approvers.get(id) {
        return Ok(Principal {
            id: id.to_string(),
            email: a.email.clone(),
            name: a.name.clone(),
            teams: a.teams.clone(),
            roles: a.roles.clone(),
        });
    }
    state.auth.principal_by_id(id).ok_or_else(|| {
        ApiError::forbidden(format!(
            "`{id}` is not a known approver (webhooks.approvers or an API token's id)"
        ))
    })
}

/// `POST /webhooks/approval`: a decision from a chat tool, signed like PAO's own outgoing
/// webhooks (`X-PAO-Signature: sha256=<hex HMAC of "<X-PAO-Timestamp>.<body>">`). The
/// approver's teams and roles come from the configuration; the engine checks that they may
/// decide.
pub async fn approval(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<super::requests::RequestView>, ApiError> {
    let key = secret(
        &state,
        state.config.webhooks.approval_secret.as_ref(),
        "approval",
    )
    .await?;
    let ts = header(&headers, "x-pao-timestamp").ok_or_else(bad_signature)?;
    let sig = header(&headers, "x-pao-signature")
        .and_then(|s| s.strip_prefix("sha256="))
        .ok_or_else(bad_signature)?;
    let mut signed = Vec::with_capacity(ts.len() + 1 + body.len());
    signed.extend_from_slice(ts.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(&body);
    verify_sha256(&key, &signed, sig)?;
    check_timestamp(ts, state.orch.now())?;
    if !state.replay.first_time(&format!("approval:{sig}")) {
        return Err(replayed());
    }
    let hook: ApprovalHook = serde_json::from_slice(&body)
        .map_err(|e| ApiError::unprocessable("PAO-API-INVALID-BODY", format!("{e}"), json!([])))?;
    let approver = hook_principal(&state, &hook.approver.id)?;
    audit(
        &state,
        &approver.id,
        "webhook.approval",
        &hook.request_id,
        json!({ "approved": hook.approved, "channel": "webhook:approval" }),
    )
    .await;
    let r = if hook.approved {
        state
            .orch
            .approve(&approver, &hook.request_id, hook.reason)
            .await?
    } else {
        let reason = hook
            .reason
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "PAO-API-INVALID-BODY",
                    "a rejection needs a reason",
                    json!([{ "pointer": "/reason", "message": "required" }]),
                )
            })?;
        state
            .orch
            .reject(&approver, &hook.request_id, &reason)
            .await?
    };
    Ok(Json(super::requests::RequestView::of(&r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jira_outcomes() {
        let none = pao_actions::ActionsConfig::default();
        assert_eq!(
            jira_outcome(&none, "In Progress", "indeterminate", None),
            None
        );
        assert_eq!(
            jira_outcome(&none, "Done", "done", Some("Done")),
            Some(ManualOutcome::Completed)
        );
        assert!(matches!(
            jira_outcome(&none, "Done", "done", Some("Won't Do")),
            Some(ManualOutcome::Failed(_))
        ));
        assert!(matches!(
            jira_outcome(&none, "Declined", "", None),
            Some(ManualOutcome::Failed(_))
        ));
    }

    #[test]
    fn replay_guard_refuses_second_delivery() {
        let g = ReplayGuard::default();
        assert!(g.first_time("a"));
        assert!(!g.first_time("a"));
        assert!(g.first_time("b"));
    }
}
