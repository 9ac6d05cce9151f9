//! WebSocket streams. Each message is a JSON object with a `type`. Request streams read the
//! store's event log, so they resume from a sequence number (`?after=N`) and see events of a
//! request that runs on another replica; local events only wake them early. A `heartbeat`
//! message (and a ping frame) goes out every `?heartbeat=` seconds (default 15).
//! Browsers may authenticate with `?access_token=` since they cannot set headers.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use pao_core::authz::Principal;
use pao_core::lifecycle::RequestState;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::requests::{event_view, status_of};
use super::{Query, may_see_request, visible_request};
use crate::error::ApiError;
use crate::state::AppState;

/// Query of every stream.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this event sequence number.
    pub after: Option<u64>,
    /// Heartbeat period in seconds (default 15; 0 counts as 1, above 300 as 300).
    pub heartbeat: Option<u64>,
    /// Token for clients that cannot send an `Authorization` header.
    pub access_token: Option<String>,
}

async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    q: &StreamQuery,
) -> Result<Principal, ApiError> {
    if let Some(t) = &q.access_token {
        let mut h = HeaderMap::new();
        let v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| ApiError::unauthorized("bad access_token"))?;
        h.insert(header::AUTHORIZATION, v);
        return state.auth.authenticate(&h).await;
    }
    state.auth.authenticate(headers).await
}

fn heartbeat(q: &StreamQuery) -> Duration {
    Duration::from_secs(q.heartbeat.unwrap_or(15).clamp(1, 300))
}

async fn send(socket: &mut WebSocket, v: Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

/// `/ws/requests/{id}/status`: a `status` message now and after every change, until the
/// request ends (the socket then closes).
pub async fn request_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let who = caller(&state, &headers, &q).await?;
    visible_request(&state, &who, &id).await?;
    Ok(ws.on_upgrade(move |socket| tail(state, socket, id, q, true)))
}

/// `/ws/requests/{id}/logs`: every event of the request (state changes, attempts, log
/// lines) from `?after=`, then live.
pub async fn request_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let who = caller(&state, &headers, &q).await?;
    visible_request(&state, &who, &id).await?;
    Ok(ws.on_upgrade(move |socket| tail(state, socket, id, q, false)))
}

struct Gauge;
impl Gauge {
    fn open() -> Gauge {
        metrics::gauge!("pao_websocket_connections").increment(1.0);
        Gauge
    }
}
impl Drop for Gauge {
    fn drop(&mut self) {
        metrics::gauge!("pao_websocket_connections").decrement(1.0);
    }
}

async fn tail(state: AppState, mut socket: WebSocket, id: String, q: StreamQuery, status: bool) {
    let _g = Gauge::open();
    let mut live = state.events.subscribe();
    let mut after = q.after.unwrap_or(0);
    let mut beat = tokio::time::interval(heartbeat(&q));
    beat.tick().await;
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    let mut first = true;
    loop {
        // Drain what the store has after `after`.
        let events = match state.store.events(&id, after, 500).await {
            Ok(e) => e,
            Err(e) => {
                let _ = send(
                    &mut socket,
                    json!({ "type": "error", "message": e.to_string() }),
                )
                .await;
                break;
            }
        };
        let changed = !events.is_empty();
        for e in &events {
            after = e.seq;
            if !status
                && !send(
                    &mut socket,
                    json!({ "type": "event", "event": event_view(e) }),
                )
                .await
            {
                return;
            }
        }
        if status && (changed || first) {
            let Ok(Some(r)) = state.store.get(&id).await else {
                break;
            };
            let attempts = state.store.attempts(&id).await.unwrap_or_default();
            let mut s = status_of(&state, &r, &attempts);
            s["type"] = json!("status");
            s["seq"] = json!(after);
            if !send(&mut socket, s).await {
                return;
            }
            if r.state.is_terminal() {
                break;
            }
        }
        if !status && !first && !changed {
            // Logs stream ends with the request too, once everything was sent.
            if let Ok(Some(r)) = state.store.get(&id).await
                && r.state.is_terminal()
                && r.rollback != pao_core::store::RollbackStatus::InProgress
            {
                // Events committed between the read above and this one still go out.
                for e in state.store.events(&id, after, 0).await.unwrap_or_default() {
                    after = e.seq;
                    if !send(
                        &mut socket,
                        json!({ "type": "event", "event": event_view(&e) }),
                    )
                    .await
                    {
                        return;
                    }
                }
                break;
            }
        }
        first = false;
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(e) if e.request_id != id => {}
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            _ = poll.tick() => {}
            _ = beat.tick() => {
                if !send(&mut socket, json!({ "type": "heartbeat", "seq": after })).await
                    || socket.send(Message::Ping(Vec::new().into())).await.is_err()
                {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = send(&mut socket, json!({ "type": "end", "seq": after })).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// `/ws/catalog/changes`: a `catalog_changed` message with added/changed/removed item ids
/// after each reload that changed something.
pub async fn catalog_changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    caller(&state, &headers, &q).await?;
    let mut rx = state.catalog_changes.subscribe();
    Ok(ws.on_upgrade(move |mut socket| async move {
        let _g = Gauge::open();
        let mut beat = tokio::time::interval(heartbeat(&q));
        beat.tick().await;
        let _ = send(
            &mut socket,
            json!({ "type": "hello", "items": state.orch.catalog().len() }),
        )
        .await;
        loop {
            tokio::select! {
                c = rx.recv() => match c {
                    Ok(mut v) => {
                        v["type"] = json!("catalog_changed");
                        if !send(&mut socket, v).await { return; }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = beat.tick() => {
                    if !send(&mut socket, json!({ "type": "heartbeat" })).await { return; }
                }
                msg = socket.recv() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    }))
}

/// `/ws/notifications`: what concerns the caller — state changes of requests they may see,
/// approvals they may decide, and (admins) inbound webhook notices.
pub async fn notifications(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let who = caller(&state, &headers, &q).await?;
    let mut events = state.events.subscribe();
    let mut notices = state.notifications.subscribe();
    Ok(ws.on_upgrade(move |mut socket| async move {
        let _g = Gauge::open();
        let mut beat = tokio::time::interval(heartbeat(&q));
        beat.tick().await;
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Ok(e) => {
                        let pao_core::store::EventKind::StateChanged { to, .. } = &e.kind else { continue };
                        let Ok(Some(r)) = state.store.get(&e.request_id).await else { continue };
                        let kind = if *to == RequestState::AwaitingApproval && state.orch.may_decide(&who, &r) && r.requester.id != who.id {
                            "approval_requested"
                        } else if may_see_request(&state, &who, &r) {
                            "request_state"
                        } else {
                            continue;
                        };
                        let v = json!({ "type": kind, "request_id": r.id, "item_id": r.item_id, "state": to, "at": e.at });
                        if !send(&mut socket, v).await { return; }
                    }
                    Err(RecvError::Lagged(n)) => {
                        if !send(&mut socket, json!({ "type": "lagged", "missed": n })).await { return; }
                    }
                    Err(RecvError::Closed) => return,
                },
                n = notices.recv() => match n {
                    Ok(mut v) if who.is_admin() => {
                        v["type"] = json!("webhook");
                        if !send(&mut socket, v).await { return; }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = beat.tick() => {
                    if !send(&mut socket, json!({ "type": "heartbeat" })).await { return; }
                }
                msg = socket.recv() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    }))
}
