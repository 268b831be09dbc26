//! Where events go out live: the WebSocket stream at `/`, `/agent-events`
//! and `/stream`.
//!
//! Protocol (server → client, text messages, one JSON object each):
//!
//! 1. `{"event_type":"connection_established","timestamp":…,"message":…,
//!    "last_id":N,"oldest_id":M,"epoch":"…","mode":"lossless"|"live"}`
//!    first. `oldest_id` is the oldest retained id (in the log, or in
//!    memory without one); `epoch` names this event history.
//! 2. With `?since=ID`: every retained event with a larger id, then the
//!    live stream, no event missed or repeated at the seam. Without
//!    `since`: the live stream from the moment of connecting.
//!    With `?since=ID&epoch=E` where `E` is not the hub's epoch, or with an
//!    `ID` above the hub's last id (the history the reader knew is not this
//!    one: a hub without a log restarted, a log deleted), first a
//!    `stream_gap` with `"reason":"reset"`, then every retained event from
//!    the oldest.
//! 3. Events in the wire format ([`crate::event`]), in id order, filtered by
//!    `types`, `agent`, `task_id`. Ids increase but are not contiguous
//!    (after a crash they jump past ids that were never written).
//! 4. `{"event_type":"stream_gap","timestamp":…,"payload":{"from_id":a,
//!    "to_id":b,"lost":n,"resume_from":r,"reason":…}}` when ids a..=b cannot
//!    be delivered: `not_retained` (older than anything kept: gone),
//!    `log_unreadable` (the log could not be read; the hub logs why), or in
//!    live mode `slow_consumer` (the client fell more than
//!    `client_queue_bytes` behind; it is moved to the live edge and can
//!    fetch the skipped ids with `/api/events?since=r`). A reset is
//!    `{"payload":{"reason":"reset","epoch":E,"previous_epoch":…,
//!    "since":ID,"last_id":N,"resume_from":r}}`: the events that follow are
//!    those after `r` of the history `E`.
//! 5. `{"event_type":"service_shutdown","timestamp":…,"payload":{"message":…}}`
//!    then a close frame (code 1001) when the hub stops.
//!
//! Modes (`?mode=`): `lossless` (the default) delivers every retained event
//! to every reader however slow it is: a reader that falls behind the
//! in-memory ring is served from the JSONL log (rotated and gzipped files
//! included) and returns to the ring once it has caught up; the hub holds
//! one read chunk per reader, never a queue, and ingest never waits for
//! readers. `live` skips a reader that is more than `client_queue_bytes`
//! behind to the live edge, with a `slow_consumer` gap.
//!
//! A text message from the client is echoed back (the original's ping).
//! The server pings every `ping_interval`. Close codes:
//! - 1001 "hub shutting down";
//! - 1008 "no answer to pings": nothing came from the client and its socket
//!   took no event for two ping intervals;
//! - 4008 "stuck: the socket accepted no bytes for two ping intervals": the
//!   client stopped reading. The close frame is queued behind what the
//!   socket holds and the connection kept one more ping interval (at least
//!   1 s, at most 10 s) for it to get through.
//!
//! After any close, reconnecting with `?since=` (and `epoch=`) gets every
//! retained event after the last one received.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::json;

use super::{error_response, HubState, SharedState};
use crate::event::now_unix;

pub mod cursor;
pub mod filter;
pub mod ring;

use cursor::{Cursor, Step};
use filter::{Mode, StreamParams};

/// Close code sent at shutdown ("going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a client that answered no ping for two intervals.
pub const CLOSE_POLICY: u16 = 1008;
/// Close code for a client whose socket accepted no bytes for two ping
/// intervals (it stopped reading).
pub const CLOSE_STUCK: u16 = 4008;

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

/// The oldest retained id: the log's first, else the ring's. Reads the
/// log's index, which may scan a file: call from a blocking thread.
pub fn oldest_retained(state: &HubState) -> Option<u64> {
    state
        .emitter
        .log_index()
        .and_then(|index| index.first_id())
        .or_else(|| state.ring.oldest_id())
}

/// [`oldest_retained`] for async callers.
pub async fn oldest_retained_async(state: &SharedState) -> Option<u64> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || oldest_retained(&st))
        .await
        .unwrap_or_else(|_| state.ring.oldest_id())
}

/// Whether a reader resuming with `since` (and `epoch`) knew another
/// history than this hub's.
pub fn is_reset(state: &HubState, since: Option<u64>, epoch: Option<&str>) -> bool {
    since.is_some_and(|s| s > state.ring.last_id()) || epoch.is_some_and(|e| e != state.epoch)
}

/// Why a connection ends.
enum End {
    /// The client closed, or the connection broke.
    Gone,
    /// The hub shuts down.
    Shutdown,
    /// Nothing heard and nothing taken for two ping intervals.
    Silent,
    /// The socket accepted no bytes for two ping intervals.
    Stuck,
}

/// One client's connection: the socket and its timers.
struct Conn<'a> {
    tx: Tx,
    rx: futures_util::stream::SplitStream<WebSocket>,
    state: &'a SharedState,
    /// Two ping intervals.
    stall: Duration,
    ping: tokio::time::Interval,
    /// When a frame last came from the client.
    last_heard: Instant,
    /// When the socket last took events.
    last_taken: Instant,
}

impl Conn<'_> {
    /// Sends one message; `Err` when the socket takes nothing for `stall`
    /// or the hub shuts down meanwhile.
    async fn send(&mut self, msg: Message) -> Result<(), End> {
        let stall = self.stall;
        tokio::select! {
            biased;
            _ = self.state.shutdown.cancelled() => Err(End::Shutdown),
            r = tokio::time::timeout(stall, self.tx.send(msg)) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Gone),
                Err(_) => Err(End::Stuck),
            },
        }
    }

    /// Sends events: each is queued without flushing (the write buffer
    /// gathers them into few writes), then one flush.
    async fn send_events(&mut self, messages: Vec<(u64, Utf8Bytes)>) -> Result<(), End> {
        let stall = self.stall;
        let tx = &mut self.tx;
        let all = async move {
            for (_, m) in messages {
                tokio::time::timeout(stall, tx.feed(Message::Text(m)))
                    .await
                    .map_err(|_| End::Stuck)?
                    .map_err(|_| End::Gone)?;
            }
            tokio::time::timeout(stall, tx.flush())
                .await
                .map_err(|_| End::Stuck)?
                .map_err(|_| End::Gone)
        };
        // Not cut short by a shutdown: the cursor has already moved past
        // these, and the shutdown's own bound (the grace period) holds.
        let r = all.await;
        self.last_taken = Instant::now();
        r
    }

    /// Handles one frame from the client.
    async fn incoming(&mut self, msg: Option<Result<Message, axum::Error>>) -> Result<(), End> {
        self.last_heard = Instant::now();
        match msg {
            Some(Ok(Message::Text(t))) => self.send(Message::Text(t)).await,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Err(End::Gone),
            Some(Ok(_)) => Ok(()), // pong, ping (answered by axum), binary
        }
    }

    /// Handles whatever the client sent meanwhile, without waiting.
    async fn incoming_ready(&mut self) -> Result<(), End> {
        while let Some(msg) = self.rx.next().now_or_never() {
            self.incoming(msg).await?;
        }
        Ok(())
    }

    /// A ping is due: drops a silent client, else pings.
    async fn ping_due(&mut self) -> Result<(), End> {
        if self.last_heard.elapsed() > self.stall && self.last_taken.elapsed() > self.stall {
            return Err(End::Silent);
        }
        self.send(Message::Ping(Default::default())).await
    }

    /// Ends the connection, telling the client why when it can.
    async fn close(mut self, end: End) {
        let counters = &self.state.counters;
        let (code, reason, wait) = match end {
            End::Gone => return,
            End::Shutdown => {
                let bye = json!({
                    "event_type": "service_shutdown",
                    "timestamp": now_unix(),
                    "payload": {"message": "agentpulse hub is shutting down"},
                });
                let _ = tokio::time::timeout(Duration::from_secs(1), self.tx.send(text(bye))).await;
                (
                    CLOSE_GOING_AWAY,
                    "hub shutting down",
                    Duration::from_secs(1),
                )
            }
            End::Silent => {
                counters.dropped_clients.fetch_add(1, Ordering::Relaxed);
                (CLOSE_POLICY, "no answer to pings", Duration::from_secs(1))
            }
            End::Stuck => {
                counters.dropped_clients.fetch_add(1, Ordering::Relaxed);
                counters.stuck_clients.fetch_add(1, Ordering::Relaxed);
                let grace = (self.stall / 2).clamp(Duration::from_secs(1), Duration::from_secs(10));
                (
                    CLOSE_STUCK,
                    "stuck: the socket accepted no bytes for two ping intervals",
                    grace,
                )
            }
        };
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        // Behind everything the socket still holds: it gets through only if
        // the client reads meanwhile (or never, and the connection ends).
        let _ = tokio::time::timeout(wait, self.tx.send(frame)).await;
    }
}

async fn serve_client(socket: WebSocket, state: &SharedState, params: StreamParams) {
    let (tx, rx) = socket.split();
    let mut wake = state.ring.subscribe();
    let mut written = state.emitter.log_index().map(|i| i.subscribe());
    let last_id = state.ring.last_id();
    let oldest = oldest_retained_async(state).await;
    let reset = is_reset(state, params.since, params.epoch.as_deref());
    let welcome = json!({
        "event_type": "connection_established",
        "timestamp": now_unix(),
        "message": "Connected to agentpulse event stream",
        "last_id": last_id,
        "oldest_id": oldest,
        "epoch": state.epoch,
        "mode": match params.mode { Mode::Lossless => "lossless", Mode::Live => "live" },
    });
    let stall = state.config.ping_interval * 2;
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + state.config.ping_interval,
        state.config.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = Conn {
        tx,
        rx,
        state,
        stall,
        ping,
        last_heard: Instant::now(),
        last_taken: Instant::now(),
    };
    if let Err(end) = conn.send(text(welcome)).await {
        return conn.close(end).await;
    }
    // Where this client stands: the last id it has been given (or skipped).
    let start = if reset {
        let resume_from = oldest.map_or(last_id, |o| o - 1);
        let notice = json!({
            "event_type": "stream_gap",
            "timestamp": now_unix(),
            "payload": {
                "reason": "reset",
                "epoch": state.epoch,
                "previous_epoch": params.epoch,
                "since": params.since,
                "last_id": last_id,
                "resume_from": resume_from,
            }
        });
        if let Err(end) = conn.send(text(notice)).await {
            return conn.close(end).await;
        }
        resume_from
    } else {
        params.since.unwrap_or(last_id)
    };
    let mut cursor = Cursor::new(start, params.filter);
    let end = loop {
        match serve_step(&mut conn, &mut cursor, params.mode, &mut wake, &mut written).await {
            Ok(()) => {}
            Err(end) => break end,
        }
    };
    if matches!(end, End::Shutdown) {
        drain(&mut conn, &mut cursor).await;
    }
    conn.close(end).await;
}

/// One turn of a client's loop: what it sent, a due ping, then the next
/// chunk after its cursor (or a wait when there is none).
async fn serve_step(
    conn: &mut Conn<'_>,
    cursor: &mut Cursor,
    mode: Mode,
    wake: &mut tokio::sync::watch::Receiver<u64>,
    written: &mut Option<tokio::sync::watch::Receiver<u64>>,
) -> Result<(), End> {
    let state = conn.state;
    if state.shutdown.is_cancelled() {
        return Err(End::Shutdown);
    }
    conn.incoming_ready().await?;
    if conn.ping.tick().now_or_never().is_some() {
        conn.ping_due().await?;
    }
    if mode == Mode::Live {
        let (lag_bytes, lag_count) = state.ring.lag(cursor.after());
        if lag_bytes > state.config.client_queue_bytes && lag_count > 0 {
            let to = state.ring.last_id();
            let gap = gap_message(cursor.after() + 1, to, cursor.after(), "slow_consumer");
            state
                .counters
                .slow_consumer_gaps
                .fetch_add(1, Ordering::Relaxed);
            cursor.skip_to(to);
            return conn.send(text(gap)).await;
        }
    }
    // Seen before reading: a push after this wakes the wait below.
    wake.borrow_and_update();
    if let Some(w) = written.as_mut() {
        w.borrow_and_update();
    }
    let step = next_step(state, cursor).await?;
    match step {
        Step::Events { .. } | Step::Gap { .. } => deliver(conn, step).await,
        Step::Live | Step::Waiting => {
            let waiting = matches!(step, Step::Waiting);
            tokio::select! {
                biased;
                _ = state.shutdown.cancelled() => Err(End::Shutdown),
                msg = conn.rx.next() => conn.incoming(msg).await,
                changed = wake.changed() => changed.map_err(|_| End::Shutdown),
                _ = async {
                    match written.as_mut() {
                        Some(w) if waiting => { let _ = w.changed().await; }
                        _ => std::future::pending::<()>().await,
                    }
                } => Ok(()),
                // The writer may be slow to report; look again now and then.
                _ = tokio::time::sleep(Duration::from_millis(100)), if waiting => Ok(()),
                _ = conn.ping.tick() => conn.ping_due().await,
            }
        }
    }
}

/// The cursor's next step; from the log on a blocking thread (file I/O),
/// the cursor going there and back.
async fn next_step(state: &SharedState, cursor: &mut Cursor) -> Result<Step, End> {
    if !cursor.in_log(state) {
        return Ok(cursor.step(state));
    }
    let st = state.clone();
    let mut moved = std::mem::replace(cursor, Cursor::new(0, Default::default()));
    let (back, step) = tokio::task::spawn_blocking(move || {
        let step = moved.step(&st);
        (moved, step)
    })
    .await
    .map_err(|_| End::Gone)?;
    *cursor = back;
    Ok(step)
}

/// Sends a step's events or gap notice (a step that waits sends nothing).
async fn deliver(conn: &mut Conn<'_>, step: Step) -> Result<(), End> {
    let state = conn.state;
    match step {
        Step::Events {
            messages, from_log, ..
        } => {
            if messages.is_empty() {
                return Ok(());
            }
            let n = messages.len() as u64;
            conn.send_events(messages).await?;
            state.counters.messages_out.fetch_add(n, Ordering::Relaxed);
            if from_log {
                state
                    .counters
                    .messages_from_log
                    .fetch_add(n, Ordering::Relaxed);
            }
            Ok(())
        }
        Step::Gap { from, to, reason } => conn.send(text(gap_message(from, to, to, reason))).await,
        Step::Live | Step::Waiting => Ok(()),
    }
}

/// Once the shutdown has begun: the events the hub took before it (in the
/// ring or the log past the cursor), so a reader connected at a SIGTERM
/// gets every acknowledged event before `service_shutdown`. Bounded by half
/// the grace period; a client that does not read meanwhile gets the rest
/// by resuming from another hub start.
async fn drain(conn: &mut Conn<'_>, cursor: &mut Cursor) {
    let state = conn.state;
    let all = async {
        loop {
            match next_step(state, cursor).await {
                Ok(Step::Live | Step::Waiting) | Err(_) => return,
                Ok(step) => {
                    if deliver(conn, step).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // Past the bound the client simply gets `service_shutdown` now.
    tokio::time::timeout(state.config.shutdown_grace / 2, all)
        .await
        .ok();
}

type Tx = futures_util::stream::SplitSink<WebSocket, Message>;
