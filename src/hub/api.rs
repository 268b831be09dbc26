//! The router and the query endpoints: `/api/events`, `/api/metrics`,
//! `/health`, `/metrics` (Prometheus), and the page at `/`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{FromRequestParts, Query, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tower_http::decompression::RequestDecompressionLayer;

use super::stream::backfill;
use super::stream::filter::StreamParams;
use super::{error_response, ingest, stream, SharedState};

/// Default and largest `limit` of `/api/events`.
const EVENTS_DEFAULT_LIMIT: usize = 1000;
const EVENTS_MAX_LIMIT: usize = 100_000;

/// Every route of the hub.
pub fn router(state: SharedState) -> Router {
    let body_limit = state.config.max_body_bytes;
    // Decompression first, then the limit applies to the inflated body, so
    // a small gzip bomb is refused like any other oversized body.
    let ingest = Router::new()
        .route("/events", post(ingest::post_events))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(RequestDecompressionLayer::new().gzip(true));
    Router::new()
        .route("/", get(root))
        .route("/agent-events", get(stream::handler))
        .route("/stream", get(stream::handler))
        .route("/ingest", get(ingest::ws_ingest))
        .merge(ingest)
        .route("/api/events", get(events))
        .route("/api/metrics", get(metrics_json))
        .route("/metrics", get(prometheus))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no such path: {}", req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// `GET /`: the stream for WebSocket upgrades, the dashboard otherwise.
async fn root(State(state): State<SharedState>, req: Request) -> Response {
    let wants_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants_ws {
        return dashboard().await;
    }
    let (mut parts, _body) = req.into_parts();
    let query = Query::<HashMap<String, String>>::from_request_parts(&mut parts, &state).await;
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &state).await;
    match (query, ws) {
        (Ok(q), Ok(ws)) => stream::handler(State(state), q, parts.headers, ws).await,
        (Err(e), _) => error_response(StatusCode::BAD_REQUEST, e.body_text()),
        (_, Err(e)) => e.into_response(),
    }
}

/// The dashboard page (embedded).
pub async fn dashboard() -> Response {
    Html(include_str!("../../dashboard/index.html")).into_response()
}

/// `GET /api/events?since=&limit=&types=&agent=&task_id=`: retained events,
/// oldest first, as `{"events":[...],"last_id":N,"oldest_id":M}`.
async fn events(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = super::auth::check_http(&state, &headers) {
        return resp;
    }
    let params = match StreamParams::from_query(&query) {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    let limit = params
        .limit
        .unwrap_or(EVENTS_DEFAULT_LIMIT)
        .min(EVENTS_MAX_LIMIT);
    let last_id = state.ring.last_id();
    // Without `since`: the most recent `limit` events.
    let since = params.since.unwrap_or_else(|| {
        if params.filter.is_empty() {
            last_id.saturating_sub(limit as u64)
        } else {
            state.ring.oldest_id().unwrap_or(1).saturating_sub(1)
        }
    });
    if state.ring.oldest_id().is_some_and(|o| since + 1 < o) {
        // Older ids come from the log: make sure it holds everything.
        state.emitter.flush_async().await;
    }
    let st = state.clone();
    let filter = params.filter.clone();
    let messages =
        tokio::task::spawn_blocking(move || backfill::collect(&st, since, limit, &filter))
            .await
            .unwrap_or_default();
    // Without `since` and with a filter, keep the newest `limit`.
    let skip = if params.since.is_none() {
        messages.len().saturating_sub(limit)
    } else {
        0
    };
    // The events are already JSON: splice their bytes, do not re-encode.
    let mut body = Vec::with_capacity(64 + messages.iter().map(|m| m.len() + 1).sum::<usize>());
    body.extend_from_slice(b"{\"events\":[");
    for (i, m) in messages.iter().skip(skip).enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(m);
    }
    body.extend_from_slice(
        format!(
            "],\"last_id\":{last_id},\"oldest_id\":{}}}",
            state
                .ring
                .oldest_id()
                .map_or("null".to_string(), |o| o.to_string())
        )
        .as_bytes(),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("valid response")
}

/// The `/api/metrics` document.
pub fn metrics_document(state: &SharedState) -> Value {
    let m = state.emitter.get_metrics();
    let mut doc = serde_json::to_value(&m).unwrap_or_else(|_| json!({}));
    let c = &state.counters;
    doc["hub"] = json!({
        "uptime_seconds": state.uptime(),
        "clients_connected": c.stream_clients.load(Ordering::Relaxed),
        "connections": c.connections.load(Ordering::Relaxed),
        "refused": c.refused.load(Ordering::Relaxed),
        "slow_consumer_gaps": c.slow_consumer_gaps.load(Ordering::Relaxed),
        "dropped_clients": c.dropped_clients.load(Ordering::Relaxed),
        "messages_out": c.messages_out.load(Ordering::Relaxed),
        "ingest_requests": c.ingest_requests.load(Ordering::Relaxed),
        "ingest_rejected": c.ingest_rejected.load(Ordering::Relaxed),
        "queue_depth": state.emitter.queue_depth(),
        "retained": state.ring.len(),
        "last_id": state.ring.last_id(),
        "redis": redis_status(state),
    });
    doc
}

async fn metrics_json(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Err(resp) = super::auth::check_http(&state, &headers) {
        return resp;
    }
    Json(metrics_document(&state)).into_response()
}

fn redis_status(state: &SharedState) -> Value {
    match &state.config.redis_url {
        None => json!({"configured": false}),
        Some(_) => json!({
            "configured": true,
            "up": state.counters.redis_up.load(Ordering::Relaxed),
            "messages": state.counters.redis_messages.load(Ordering::Relaxed),
            "errors": state.counters.redis_errors.load(Ordering::Relaxed),
        }),
    }
}

/// `GET /health`: always 200; `status` is `ok` or `degraded` with reasons.
async fn health(State(state): State<SharedState>) -> Response {
    let mut reasons: Vec<String> = Vec::new();
    let mut components = serde_json::Map::new();
    components.insert("pipeline".into(), json!({"status": "ok"}));
    for s in state.emitter.sink_reports() {
        let status = if s.last_error.is_some() {
            "degraded"
        } else {
            "ok"
        };
        if let Some(err) = &s.last_error {
            reasons.push(format!("sink {}: {err}", s.name));
        }
        components.insert(
            format!("sink_{}", s.name),
            json!({"status": status, "error": s.last_error, "dropped": s.dropped}),
        );
    }
    if state.config.redis_url.is_some() {
        let up = state.counters.redis_up.load(Ordering::Relaxed);
        if !up {
            reasons.push("redis: not connected".into());
        }
        components.insert(
            "redis".into(),
            json!({"status": if up { "ok" } else { "degraded" }}),
        );
    }
    let status = if reasons.is_empty() { "ok" } else { "degraded" };
    Json(json!({
        "status": status,
        "reasons": reasons,
        "components": components,
        "uptime_seconds": state.uptime(),
        "last_id": state.ring.last_id(),
    }))
    .into_response()
}

/// `GET /metrics`: Prometheus text exposition.
async fn prometheus(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Err(resp) = super::auth::check_http(&state, &headers) {
        return resp;
    }
    let text = super::prometheus::render(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
