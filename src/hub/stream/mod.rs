//! Where events go out live: the WebSocket stream at `/`, `/agent-events`
//! and `/stream`.
//!
//! Protocol (server → client, text messages, one JSON object each):
//!
//! 1. `{"event_type":"connection_established","timestamp":…,"message":…,
//!    "last_id":N,"oldest_id":M}` first.
//! 2. With `?since=ID`: every retained event with a larger id (from the
//!    in-memory ring, and from the JSONL log for ids older than the ring),
//!    then the live stream — no event missed or repeated at the seam.
//!    Without `since`: the live stream from the moment of connecting.
//! 3. Events in the wire format ([`crate::event`]), in id order, filtered by
//!    `types`, `agent`, `task_id`.
//! 4. `{"event_type":"stream_gap","timestamp":…,"payload":{"from_id":a,
//!    "to_id":b,"lost":n,"resume_from":r,"reason":…}}` when ids a..=b cannot
//!    be delivered: `not_retained` (older than anything kept; they are gone)
//!    or `slow_consumer` (the client fell more than `client_queue_bytes`
//!    behind; it is moved to the live edge and can fetch the skipped ids
//!    with `?since=r` or `/api/events?since=r`).
//! 5. `{"event_type":"service_shutdown","timestamp":…,"payload":{"message":…}}`
//!    then a close frame (code 1001) when the hub stops.
//!
//! A text message from the client is echoed back (the original's ping).
//! The server pings every `ping_interval`; a client silent for two
//! intervals, or whose socket accepts nothing for two intervals, is closed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

use super::{error_response, SharedState};
use crate::event::now_unix;

pub mod backfill;
pub mod filter;
pub mod ring;

use filter::{Filter, StreamParams};
use ring::StreamItem;

/// Most records taken from the ring per read.
const READ_CHUNK: usize = 1024;

/// Close code sent at shutdown ("going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a client dropped for silence or a stuck socket.
pub const CLOSE_POLICY: u16 = 1008;

/// The stream endpoint: checks origin, token and limits, then upgrades.
pub async fn handler(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let params = match StreamParams::from_query(&query) {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    if let Err(resp) = super::auth::check_ws(&state, &headers, &query, super::tokens::Access::Read)
    {
        return resp;
    }
    let Some(guard) = super::auth::ConnectionGuard::acquire(&state) else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "connection limit reached ({} connections)",
                state.config.max_connections
            ),
        );
    };
    let protocol = super::auth::selected_protocol(&headers);
    let ws = match protocol {
        Some(p) => ws.protocols([p]),
        None => ws,
    };
    let st = state.clone();
    ws.read_buffer_size(4 * 1024)
        // Messages of a drain are gathered into one write (a 0 here means
        // one syscall per message).
        .write_buffer_size(16 * 1024)
        .max_message_size(state.config.max_body_bytes)
        .on_upgrade(move |socket| {
            let tasks = st.tasks.clone();
            tasks.track_future(async move {
                st.counters.stream_clients.fetch_add(1, Ordering::Relaxed);
                serve_client(socket, &st, params).await;
                st.counters.stream_clients.fetch_sub(1, Ordering::Relaxed);
                drop(guard);
            })
        })
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

fn record_message(r: &StreamItem) -> Message {
    Message::Text(r.message.clone())
}

/// A `stream_gap` notice.
pub fn gap_message(from: u64, to: u64, resume_from: u64, reason: &str) -> serde_json::Value {
    json!({
        "event_type": "stream_gap",
        "timestamp": now_unix(),
        "payload": {
            "from_id": from,
            "to_id": to,
            "lost": to + 1 - from,
            "resume_from": resume_from,
            "reason": reason,
        }
    })
}

async fn serve_client(socket: WebSocket, state: &SharedState, params: StreamParams) {
    let (mut tx, mut rx) = socket.split();
    let mut wake = state.ring.subscribe();
    let last_id = state.ring.last_id();
    let welcome = json!({
        "event_type": "connection_established",
        "timestamp": now_unix(),
        "message": "Connected to agentpulse event stream",
        "last_id": last_id,
        "oldest_id": state.ring.oldest_id(),
    });
    let stall = state.config.ping_interval * 2;
    if send_timed(&mut tx, text(welcome), stall).await.is_err() {
        return;
    }
    let filter = params.filter;
    // Where this client stands: the last id it has been given (or skipped).
    let mut cursor = match params.since {
        Some(since) => match backfill::from_log(state, &mut tx, since, &filter, stall).await {
            Ok(c) => c,
            Err(()) => return,
        },
        None => last_id,
    };
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + state.config.ping_interval,
        state.config.ping_interval,
    );
    // Events may already be waiting (since, or pushed while we greeted).
    wake.mark_changed();
    loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => {
                let bye = json!({
                    "event_type": "service_shutdown",
                    "timestamp": now_unix(),
                    "payload": {"message": "agentpulse hub is shutting down"},
                });
                let _ = send_timed(&mut tx, text(bye), Duration::from_secs(1)).await;
                let _ = send_timed(&mut tx, Message::Close(Some(CloseFrame {
                    code: CLOSE_GOING_AWAY,
                    reason: Utf8Bytes::from_static("hub shutting down"),
                })), Duration::from_secs(1)).await;
                return;
            }
            msg = rx.next() => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        if send_timed(&mut tx, Message::Text(t), stall).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {} // pong, ping (answered by axum), binary
                }
            }
            changed = wake.changed() => {
                if changed.is_err() {
                    return;
                }
                match drain(state, &mut tx, &mut cursor, &filter, stall).await {
                    Ok(()) => {}
                    Err(()) => {
                        state.counters.dropped_clients.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > stall {
                    state.counters.dropped_clients.fetch_add(1, Ordering::Relaxed);
                    let _ = send_timed(&mut tx, Message::Close(Some(CloseFrame {
                        code: CLOSE_POLICY,
                        reason: Utf8Bytes::from_static("no answer to pings"),
                    })), Duration::from_secs(1)).await;
                    return;
                }
                if send_timed(&mut tx, Message::Ping(Default::default()), stall).await.is_err() {
                    return;
                }
            }
        }
    }
}

type Tx = futures_util::stream::SplitSink<WebSocket, Message>;

/// Sends one message, giving up when the socket accepts nothing for `limit`.
async fn send_timed(tx: &mut Tx, msg: Message, limit: Duration) -> Result<(), ()> {
    match tokio::time::timeout(limit, tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Sends everything after `cursor` that the filter keeps, in chunks.
async fn drain(
    state: &SharedState,
    tx: &mut Tx,
    cursor: &mut u64,
    filter: &Filter,
    limit: Duration,
) -> Result<(), ()> {
    loop {
        let (lag_bytes, lag_count) = state.ring.lag(*cursor);
        if lag_bytes > state.config.client_queue_bytes && lag_count > 0 {
            let to = state.ring.last_id();
            let gap = gap_message(*cursor + 1, to, *cursor, "slow_consumer");
            state
                .counters
                .slow_consumer_gaps
                .fetch_add(1, Ordering::Relaxed);
            send_timed(tx, text(gap), limit).await?;
            *cursor = to;
            return Ok(());
        }
        let read = state
            .ring
            .read_after(*cursor, READ_CHUNK, |r| filter.matches_item(r));
        if let Some((from, to)) = read.missing {
            send_timed(tx, text(gap_message(from, to, to, "not_retained")), limit).await?;
        }
        let n = read.records.len();
        for r in &read.records {
            // feed() queues without flushing; one flush per chunk.
            match tokio::time::timeout(limit, tx.feed(record_message(r))).await {
                Ok(Ok(())) => {}
                _ => return Err(()),
            }
        }
        if n > 0 {
            match tokio::time::timeout(limit, tx.flush()).await {
                Ok(Ok(())) => {}
                _ => return Err(()),
            }
            state
                .counters
                .messages_out
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        let advanced = read.next_cursor != *cursor;
        *cursor = read.next_cursor;
        if !advanced || (n < READ_CHUNK && *cursor >= state.ring.last_id()) {
            return Ok(());
        }
    }
}
