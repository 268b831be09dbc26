//! Where events come in over the network: `POST /events`, the `/ingest`
//! WebSocket, and the Redis `agent-events` bridge.
//!
//! # Answers
//!
//! Every ingest answer is a JSON object:
//!
//! ```json
//! {"accepted":2,"duplicates":1,"rejected":1,
//!  "ids":[41,42,17,null],
//!  "errors":[{"index":3,"event_type":"agent_completed","field":"cost_usd",
//!             "message":"expected a finite number >= 0, got \"abc\"",
//!             "fields":[{"field":"cost_usd","message":"expected a finite number >= 0, got \"abc\""}],
//!             "error":"agent_completed.cost_usd: expected a finite number >= 0, got \"abc\""}],
//!  "warnings":[{"index":2,"event_type":"agent_complete","likely_type":"agent_completed",
//!               "warning":"undeclared event type `agent_complete`; did you mean `agent_completed`?"}]}
//! ```
//!
//! `field` and `message` name an event's first fault; `fields` lists every
//! missing or wrong field of it (in declared order), and `error` says them
//! all in one line. `warnings` (present when there are some) names events
//! that were taken but whose undeclared type is a few edits from a
//! declared one.
//!
//! `ids` has one entry per input event, in order: its id, the id of the
//! original for a duplicate, or `null` when rejected. `errors` lists the
//! first [`MAX_ERRORS_LISTED`] rejections; `errors_omitted` counts the
//! rest, so an answer stays small whatever the body. HTTP status: 200 when
//! every event was taken (duplicates included), 207 when some were rejected
//! and some taken, 422 when all were rejected, 400 for malformed JSON (with
//! line and column), 408 for a body not received within the body timeout,
//! 413 for a body over the request limit, more events than the per-request
//! limit, or a single event over the event limit, 415 for a
//! `Content-Encoding` other than gzip, 401 without a valid token, 503 when
//! the log cannot take the events (see [`crate::emitter::EmitError`]). A
//! rejected event leaves no trace: it never reaches the log, the metrics or
//! the stream. Every refusal is a JSON object with an `error` naming the
//! fault.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use super::{error_response, SharedState};
use crate::emitter::EmitError;
use crate::pipeline::Outcome;
use crate::schema::ValidationError;

pub mod body;
pub mod redis_bridge;

use body::{parse_body, BodyError, Format, Item};

/// Rejections listed with their details in one answer; the others are only
/// counted (`errors_omitted`).
pub const MAX_ERRORS_LISTED: usize = 100;

/// The answer to one ingest request or message.
pub fn answer(items: Vec<Result<Outcome, ValidationError>>) -> (StatusCode, Value) {
    let mut ids = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut rejected = 0usize;
    let (mut accepted, mut duplicates) = (0u64, 0u64);
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Ok(Outcome::Accepted(id)) => {
                accepted += 1;
                ids.push(json!(id));
            }
            Ok(Outcome::Duplicate(id)) => {
                duplicates += 1;
                ids.push(json!(id));
            }
            Err(_) if rejected >= MAX_ERRORS_LISTED => {
                rejected += 1;
                ids.push(Value::Null);
            }
            Err(e) => {
                rejected += 1;
                ids.push(Value::Null);
                errors.push(json!({
                    "index": index,
                    "event_type": e.event_type,
                    "field": e.field,
                    "message": e.message,
                    "fields": e.fields(),
                    "error": e.to_string(),
                }));
            }
        }
    }
    let status = if rejected == 0 {
        StatusCode::OK
    } else if accepted + duplicates == 0 {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::MULTI_STATUS
    };
    let mut body = json!({
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": rejected,
        "ids": ids,
    });
    if !errors.is_empty() {
        let omitted = rejected - errors.len();
        body["errors"] = Value::Array(errors);
        if omitted > 0 {
            body["errors_omitted"] = json!(omitted);
        }
    }
    (status, body)
}

/// The answer to a batch the emitter did not take: 507 at the disk cap
/// (retrying will not help until space is freed), 503 otherwise.
pub fn refusal_answer(e: &EmitError) -> (StatusCode, Value) {
    match e {
        EmitError::LogFull { .. } => (
            StatusCode::INSUFFICIENT_STORAGE,
            json!({ "error": e.to_string(), "cause": "max_log_bytes", "retry": false }),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": e.to_string(), "retry": true }),
        ),
    }
}

/// Validates and queues parsed items; answers per item.
pub async fn take(state: &SharedState, items: Vec<Item>) -> (StatusCode, Value) {
    let mut events = Vec::with_capacity(items.len());
    let mut slots: Vec<Result<(), ValidationError>> = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Ok(ev) => {
                events.push(ev);
                slots.push(Ok(()));
            }
            Err(e) => slots.push(Err(e)),
        }
    }
    let pre_rejected = slots.iter().filter(|s| s.is_err()).count() as u64;
    let warnings = near_miss_types(state, &slots, &events);
    // Answered once the accepted events are in the log (per its
    // durability setting): an acknowledged event survives a crash.
    let results = match state.emitter.ingest(events).await {
        Ok(r) => r,
        Err(e) => {
            state
                .counters
                .ingest_unavailable
                .fetch_add(1, Ordering::Relaxed);
            return refusal_answer(&e);
        }
    };
    let mut results = results.into_iter();
    let merged: Vec<Result<Outcome, ValidationError>> = slots
        .into_iter()
        .map(|s| match s {
            Ok(()) => results.next().expect("one result per event"),
            Err(e) => Err(e),
        })
        .collect();
    let (status, mut body) = answer(merged);
    let taken = |i: usize| body["ids"][i].is_u64();
    let warnings: Vec<Value> = warnings
        .into_iter()
        .filter(|w| taken(w.0))
        .map(|w| w.1)
        .collect();
    if !warnings.is_empty() {
        body["warnings"] = Value::Array(warnings);
    }
    let rejected = body["rejected"].as_u64().unwrap_or(0);
    state
        .counters
        .ingest_rejected
        .fetch_add(rejected, Ordering::Relaxed);
    // Envelope errors never reached the emitter; count them there too so
    // that the pipeline's `rejected` covers every refusal.
    state.emitter.note_rejected(pre_rejected);
    (status, body)
}

/// `(index, warning)` for each event whose undeclared type is a likely
/// misspelling of a declared one.
fn near_miss_types(
    state: &SharedState,
    slots: &[Result<(), ValidationError>],
    events: &[crate::event::NewEvent],
) -> Vec<(usize, Value)> {
    let schema = state.emitter.schema();
    let mut events = events.iter();
    let mut out = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        if slot.is_err() {
            continue;
        }
        let Some(ev) = events.next() else { break };
        if let Some(likely) = schema.likely_type(&ev.event_type) {
            out.push((
                index,
                json!({
                    "index": index,
                    "event_type": &*ev.event_type,
                    "likely_type": likely,
                    "warning": format!(
                        "undeclared event type `{}`; did you mean `{likely}`?",
                        ev.event_type
                    ),
                }),
            ));
        }
    }
    out
}

/// The answer to a body that could not be read at all (counted).
fn refuse_body(state: &SharedState, e: BodyError) -> (StatusCode, Value) {
    state
        .counters
        .ingest_rejected
        .fetch_add(1, Ordering::Relaxed);
    let status = match e {
        BodyError::EventTooLarge { .. } | BodyError::TooManyEvents { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    (status, json!({ "error": e.to_string() }))
}

/// `POST /events`.
pub async fn post_events(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    state
        .counters
        .ingest_requests
        .fetch_add(1, Ordering::Relaxed);
    // Checked before the body is read: a refused type costs nothing.
    let format = match Format::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    ) {
        Ok(f) => f,
        Err(e) => {
            state
                .counters
                .ingest_rejected
                .fetch_add(1, Ordering::Relaxed);
            return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string());
        }
    };
    let limit = state.config.max_body_bytes;
    let timeout = state.config.body_timeout;
    let body = match tokio::time::timeout(timeout, read_body(body, limit)).await {
        Ok(Ok(b)) => b,
        Err(_) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s (--body-timeout)",
                    timeout.as_secs_f64()
                ),
            )
        }
        Ok(Err(ReadError::TooLarge)) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the {limit}-byte limit"),
            )
        }
        Ok(Err(ReadError::Broken(e))) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
        }
    };
    let schema = state.emitter.schema();
    let items = match parse_body(&body, format, state.body_limits(), &|t| schema.intern(t)) {
        Ok(items) => items,
        Err(e) => {
            let (status, body) = refuse_body(&state, e);
            return (status, Json(body)).into_response();
        }
    };
    let (status, body) = take(&state, items).await;
    let mut resp = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Nothing was stored: a retry in a second may be (SDKs retry).
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

/// Why a request body could not be read.
pub(crate) enum ReadError {
    /// Over the limit (after decompression).
    TooLarge,
    /// The connection or the gzip stream broke.
    Broken(axum::Error),
}

/// How much of an oversized body is read and thrown away before answering.
const DRAIN_CAP: usize = 64 * 1024 * 1024;
/// How long draining an oversized body may take.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads a body of at most `limit` bytes.
///
/// An oversized body is still read (and discarded) up to [`DRAIN_CAP`]
/// bytes or [`DRAIN_TIME`]: answering 413 and closing while the client is
/// still sending makes most HTTP clients report "broken pipe" instead of the
/// 413, which hides the reason from the user.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ReadError> {
    read_body_sized(body, limit, 0).await
}

/// [`read_body`] into a buffer of `hint` bytes (the declared length): a
/// large body then grows no buffer by copies.
pub(crate) async fn read_body_sized(
    body: Body,
    limit: usize,
    hint: usize,
) -> Result<Bytes, ReadError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::with_capacity(hint.min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Broken)?;
        if buf.len() + chunk.len() > limit {
            let seen = buf.len() + chunk.len();
            drop(buf);
            drain_stream(&mut stream, seen).await;
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Reads and throws away what is left of a body, up to [`DRAIN_CAP`] bytes
/// in all (`seen` already) or [`DRAIN_TIME`]: then the client, done
/// sending, reads the answer instead of "broken pipe".
async fn drain_stream<S>(stream: &mut S, mut seen: usize)
where
    S: futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    let drain = async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_CAP {
                break;
            }
        }
    };
    // Out of time: the connection closes under the client, as it must.
    if tokio::time::timeout(DRAIN_TIME, drain).await.is_err() {
        tracing::debug!("gave up draining a refused request's body after {DRAIN_TIME:?}");
    }
}

/// Throws a refused request's body away (see [`drain_stream`]) before the
/// refusal is sent.
pub(crate) async fn drain_body(body: Body) {
    drain_stream(&mut body.into_data_stream(), 0).await;
}

/// `GET /ingest`: a WebSocket whose text messages are events or batches;
/// each gets an answer message like the HTTP one plus `"seq"` (1-based
/// message number) and `"status"`.
pub async fn ws_ingest(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(resp) = super::auth::check_ws(&state, &headers, &query, super::tokens::Access::Write)
    {
        return resp;
    }
    let Some(guard) = super::auth::ConnectionGuard::acquire(&state) else {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "connection limit reached");
    };
    let ws = match super::auth::selected_protocol(&headers) {
        Some(p) => ws.protocols([p]),
        None => ws,
    };
    let st = state.clone();
    ws.max_message_size(state.config.max_body_bytes)
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |socket| {
            let tasks = st.tasks.clone();
            tasks.track_future(async move {
                ingest_socket(socket, &st).await;
                drop(guard);
            })
        })
}

async fn ingest_socket(socket: WebSocket, state: &SharedState) {
    let (mut tx, mut rx) = socket.split();
    let mut seq = 0u64;
    loop {
        let msg = tokio::select! {
            _ = state.shutdown.cancelled() => {
                let _ = tx.send(Message::Close(None)).await;
                return;
            }
            m = rx.next() => m,
        };
        let bytes = match msg {
            Some(Ok(Message::Text(t))) => Bytes::from(t),
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => continue,
        };
        seq += 1;
        state
            .counters
            .ingest_requests
            .fetch_add(1, Ordering::Relaxed);
        let (status, mut body) = ingest_message(state, &bytes).await;
        body["seq"] = json!(seq);
        body["status"] = json!(status.as_u16());
        if tx
            .send(Message::Text(Utf8Bytes::from(body.to_string())))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// One message: a JSON object or array, or NDJSON lines.
pub async fn ingest_message(state: &SharedState, bytes: &[u8]) -> (StatusCode, Value) {
    let schema = state.emitter.schema();
    let intern = |t: &str| schema.intern(t);
    let limits = state.body_limits();
    let parsed = match parse_body(bytes, Format::Json, limits, &intern) {
        Err(BodyError::Malformed { .. }) if bytes.contains(&b'\n') => {
            parse_body(bytes, Format::Ndjson, limits, &intern)
        }
        other => other,
    };
    match parsed {
        Ok(items) => take(state, items).await,
        Err(e) => refuse_body(state, e),
    }
}
