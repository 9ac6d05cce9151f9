//! WebSocket streams. Each message is a JSON object with a `type`. Request streams read the
//! store's event log, so they resume from a sequence number (`?after=N`) and see events of a
//! request that runs on another replica; local events only wake them early. A `heartbeat`
//! message (and a ping frame) goes out every `?heartbeat=` seconds (default 15).
//! Browsers may authenticate with `?access_token=` since they cannot set headers; a browser's
//! `Origin` must be this server's or an allowed one. Streams are capped per principal and in
//! all, and end (`{"type":"end","reason":"unauthorized"}`) when their credential stops
//! authenticating or the caller may no longer see what they stream.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use pao_core::authz::Principal;
use pao_core::events::LiveEvent;
use pao_core::lifecycle::RequestState;
use pao_core::service::RequestWatch;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::Query;
use super::requests::{StatusView, event_view};
use crate::error::ApiError;
use crate::limits::SocketSlot;
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

/// Who opens the stream. The `?access_token=` of browsers was moved into the
/// `Authorization` header by the API's middleware.
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    let p = state.auth.authenticate(headers, peer).await?;
    Ok(state.orch.with_catalog_teams(p))
}

/// Everything a stream checks before the upgrade: who the caller is, that the page that
/// opens it is ours (a WebSocket is not bound by CORS, so another site's page could open one
/// with the browser's credentials), and that the caller has a stream slot left.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<(Principal, SocketSlot), ApiError> {
    let who = caller(state, headers, peer).await?;
    check_origin(state, headers)?;
    let slot = state.sockets.take(&who.id).map_err(|why| {
        let mut e = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "PAO-API-TOO-MANY-STREAMS",
            why,
        );
        e.retry_after = Some(5);
        e
    })?;
    Ok((who, slot))
}

/// A browser names the page's origin; it must be this server's (`base_url`, the `Host` it
/// was reached at) or one of `allowed_origins`. Clients that are not browsers send none.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let same_host = origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(host));
    let base = state
        .config
        .base_url
        .as_deref()
        .map(origin_of)
        .is_some_and(|b| b.eq_ignore_ascii_case(origin));
    let listed = state
        .config
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin));
    if same_host || base || listed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "WebSocket from origin `{origin}` refused: add it to allowed_origins if it is your console"
        )))
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').map_or(url.len(), |i| scheme.len() + 3 + i);
            &url[..end]
        }
        None => url,
    }
}

/// The largest message a client may send (streams only send; clients send pings and closes).
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// How often a stream checks that its caller still authenticates (an expired or revoked
/// token ends the stream) and may still see what it streams.
const RECHECK: Duration = Duration::from_secs(30);

/// The credentials a stream was opened with, checked again every [`RECHECK`].
#[derive(Clone)]
struct Credentials {
    headers: HeaderMap,
    peer: Option<IpAddr>,
}

impl Credentials {
    fn of(headers: &HeaderMap, peer: Option<IpAddr>) -> Credentials {
        let mut kept = HeaderMap::new();
        for (k, v) in headers {
            if k != header::COOKIE {
                kept.append(k.clone(), v.clone());
            }
        }
        Credentials {
            headers: kept,
            peer,
        }
    }

    async fn still(&self, state: &AppState) -> Option<Principal> {
        let p = state
            .auth
            .authenticate(&self.headers, self.peer)
            .await
            .ok()?;
        Some(state.orch.with_catalog_teams(p))
    }
}

/// Clients only send small control messages: a read buffer of 4 KiB (the library's default
/// is 128 KiB, held by every open stream) keeps a thousand streams under 30 MiB.
const READ_BUFFER: usize = 4 * 1024;

fn upgrade(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(READ_BUFFER)
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
    ConnectInfoOpt(peer): ConnectInfoOpt,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (who, slot) = admit(&state, &headers, peer).await?;
    let watch = state.orch.watch(&who, &id).await?;
    let creds = Credentials::of(&headers, peer);
    Ok(upgrade(ws).on_upgrade(move |socket| tail(state, socket, watch, q, true, creds, slot)))
}

/// `/ws/requests/{id}/logs`: every event of the request (state changes, attempts, log
/// lines) from `?after=`, then live.
pub async fn request_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (who, slot) = admit(&state, &headers, peer).await?;
    let watch = state.orch.watch(&who, &id).await?;
    let creds = Credentials::of(&headers, peer);
    Ok(upgrade(ws).on_upgrade(move |socket| tail(state, socket, watch, q, false, creds, slot)))
}

/// The client's address, when the server recorded it.
pub struct ConnectInfoOpt(pub Option<IpAddr>);

impl axum::extract::FromRequestParts<AppState> for ConnectInfoOpt {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ConnectInfoOpt(crate::auth::peer(&parts.extensions)))
    }
}

/// Why a stream ends early.
fn ended(reason: &str) -> Value {
    json!({ "type": "end", "reason": reason })
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

/// Whether the client's credentials still hold and still show request `id`.
async fn still_visible(state: &AppState, creds: &Credentials, id: &str) -> bool {
    match creds.still(state).await {
        Some(who) => state.orch.visible_request(&who, id).await.is_ok(),
        None => false,
    }
}

/// What a stream does after a step.
enum Flow {
    /// Goes on.
    Go,
    /// Ends: an `end` message, then the close.
    End,
    /// The client is gone: nothing more to send.
    Gone,
}

/// One request's stream: its events (`logs`) or its status after each change (`status`).
struct Tail {
    socket: WebSocket,
    watch: RequestWatch,
    after: u64,
    status: bool,
}

impl Tail {
    /// Sends what the store has after `after` (as events on a logs stream); whether there
    /// was anything.
    async fn drain(&mut self, limit: usize) -> Result<bool, Flow> {
        let events = match self.watch.events(self.after, limit).await {
            Ok(e) => e,
            Err(e) => {
                let _ = send(
                    &mut self.socket,
                    json!({ "type": "error", "message": e.to_string() }),
                )
                .await;
                return Err(Flow::End);
            }
        };
        for e in &events {
            self.after = e.seq;
            let event = json!({ "type": "event", "event": event_view(e) });
            if !self.status && !send(&mut self.socket, event).await {
                return Err(Flow::Gone);
            }
        }
        Ok(!events.is_empty())
    }

    /// Sends the request's status; the stream ends with the request.
    async fn send_status(&mut self) -> Flow {
        let Ok(Some(st)) = self.watch.status().await else {
            return Flow::End;
        };
        let mut s =
            serde_json::to_value(StatusView::of(&st.request, &st.progress)).unwrap_or(Value::Null);
        s["type"] = json!("status");
        s["seq"] = json!(self.after);
        if !send(&mut self.socket, s).await {
            return Flow::Gone;
        }
        if st.request.state.is_terminal() {
            Flow::End
        } else {
            Flow::Go
        }
    }

    /// A logs stream ends with the request (its rollback done), once everything was sent.
    async fn logs_end(&mut self) -> Flow {
        match self.watch.request().await {
            Ok(Some(r))
                if r.state.is_terminal()
                    && r.rollback != pao_core::store::RollbackStatus::InProgress =>
            {
                // Events committed between the last read and this one still go out.
                match self.drain(0).await {
                    Err(Flow::Gone) => Flow::Gone,
                    _ => Flow::End,
                }
            }
            _ => Flow::Go,
        }
    }

    async fn step(&mut self, first: bool) -> Flow {
        let changed = match self.drain(500).await {
            Ok(changed) => changed,
            Err(flow) => return flow,
        };
        if self.status && (changed || first) {
            return self.send_status().await;
        }
        if !self.status && !first && !changed {
            return self.logs_end().await;
        }
        Flow::Go
    }
}

/// How often a request's stream reads the store with no wake-up: with the store's
/// announcements of other replicas' events only as a safety net.
fn poll_every(state: &AppState) -> Duration {
    if state.cross_replica_wakeups {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(500)
    }
}

async fn tail(
    state: AppState,
    socket: WebSocket,
    watch: RequestWatch,
    q: StreamQuery,
    status: bool,
    creds: Credentials,
    _slot: SocketSlot,
) {
    let _g = Gauge::open();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.tick().await;
    let id = watch.id().to_string();
    let mut wake = state.wakes.watch(&id);
    let mut beat = tokio::time::interval(heartbeat(&q));
    beat.tick().await;
    let mut poll = tokio::time::interval(poll_every(&state));
    let mut t = Tail {
        socket,
        watch,
        after: q.after.unwrap_or(0),
        status,
    };
    let mut first = true;
    loop {
        match t.step(first).await {
            Flow::Go => {}
            Flow::End => break,
            Flow::Gone => return,
        }
        first = false;
        tokio::select! {
            _ = wake.changed() => {}
            _ = poll.tick() => {}
            _ = recheck.tick() => {
                if !still_visible(&state, &creds, &id).await {
                    let _ = send(&mut t.socket, ended("unauthorized")).await;
                    let _ = t.socket.send(Message::Close(None)).await;
                    return;
                }
            }
            _ = beat.tick() => {
                if !send(&mut t.socket, json!({ "type": "heartbeat", "seq": t.after })).await
                    || t.socket.send(Message::Ping(Vec::new().into())).await.is_err()
                {
                    return;
                }
            }
            msg = t.socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = send(&mut t.socket, json!({ "type": "end", "seq": t.after })).await;
    let _ = t.socket.send(Message::Close(None)).await;
}

/// `/ws/catalog/changes`: a `catalog_changed` message with added/changed/removed item ids
/// after each reload that changed something.
pub async fn catalog_changes(
    State(state): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (mut who, slot) = admit(&state, &headers, peer).await?;
    let creds = Credentials::of(&headers, peer);
    let mut rx = state.catalog_changes.subscribe();
    Ok(upgrade(ws).on_upgrade(move |mut socket| async move {
        let _g = Gauge::open();
        let _slot = slot;
        let mut beat = tokio::time::interval(heartbeat(&q));
        beat.tick().await;
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        // Only items the caller may see are announced, removals included.
        let mut visible = visible_items(&state, &who);
        let _ = send(
            &mut socket,
            json!({ "type": "hello", "items": visible.len() }),
        )
        .await;
        loop {
            tokio::select! {
                c = rx.recv() => match c {
                    Ok(v) => {
                        let now = visible_items(&state, &who);
                        let msg = catalog_change(&v, &visible, &now);
                        visible = now;
                        if let Some(msg) = msg && !send(&mut socket, msg).await {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = recheck.tick() => match creds.still(&state).await {
                    Some(p) => who = p,
                    None => {
                        let _ = send(&mut socket, ended("unauthorized")).await;
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
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

/// The part of a catalog reload a caller sees, given the items visible to them before
/// (`before`) and after it (`now`); `None` when nothing they see changed. An item whose
/// access rules changed appears or disappears for them as if it were added or removed.
fn catalog_change(v: &Value, before: &HashSet<String>, now: &HashSet<String>) -> Option<Value> {
    let ids = |key: &str| -> Vec<&str> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    };
    let (added_ids, changed_ids, removed_ids) = (ids("added"), ids("changed"), ids("removed"));
    let added: Vec<&str> = added_ids
        .iter()
        .chain(changed_ids.iter().filter(|id| !before.contains(**id)))
        .filter(|id| now.contains(**id))
        .copied()
        .collect();
    let changed: Vec<&str> = changed_ids
        .iter()
        .filter(|id| now.contains(**id) && before.contains(**id))
        .copied()
        .collect();
    let removed: Vec<&str> = removed_ids
        .iter()
        .chain(changed_ids.iter().filter(|id| !now.contains(**id)))
        .filter(|id| before.contains(**id))
        .copied()
        .collect();
    if added.is_empty() && changed.is_empty() && removed.is_empty() {
        return None;
    }
    Some(json!({
        "type": "catalog_changed",
        "added": added,
        "changed": changed,
        "removed": removed,
        "items": now.len(),
    }))
}

fn visible_items(state: &AppState, who: &Principal) -> HashSet<String> {
    state
        .orch
        .catalog()
        .items()
        .filter(|i| state.orch.may_see_item(who, i))
        .map(|i| i.id().to_string())
        .collect()
}

/// A state change as a notification for `who`: `approval_requested` when they may decide on
/// it (not their own), `request_state` when they may see it; `None` otherwise.
async fn notice_of(state: &AppState, who: &Principal, e: &LiveEvent) -> Option<Value> {
    let pao_core::store::EventKind::StateChanged { to, .. } = &e.kind else {
        return None;
    };
    let r = state.orch.visible_request(who, &e.request_id).await.ok()?;
    let kind = if *to == RequestState::AwaitingApproval
        && state.orch.may_decide(who, &r)
        && r.requester.id != who.id
    {
        "approval_requested"
    } else {
        "request_state"
    };
    Some(json!({ "type": kind, "request_id": r.id, "item_id": r.item_id, "state": to, "at": e.at }))
}

/// `/ws/notifications`: what concerns the caller — state changes of requests they may see,
/// approvals they may decide, and (admins) inbound webhook notices.
pub async fn notifications(
    State(state): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (mut who, slot) = admit(&state, &headers, peer).await?;
    let creds = Credentials::of(&headers, peer);
    let mut events = state.events.subscribe();
    let mut notices = state.notifications.subscribe();
    Ok(upgrade(ws).on_upgrade(move |mut socket| async move {
        let _g = Gauge::open();
        let _slot = slot;
        let mut beat = tokio::time::interval(heartbeat(&q));
        beat.tick().await;
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            tokio::select! {
                _ = recheck.tick() => match creds.still(&state).await {
                    Some(p) => who = p,
                    None => {
                        let _ = send(&mut socket, ended("unauthorized")).await;
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                },
                e = events.recv() => match e {
                    Ok(e) => {
                        let Some(v) = notice_of(&state, &who, &e).await else { continue };
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
