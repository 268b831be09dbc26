//! The router and the query endpoints: `/api/events`, `/api/metrics`,
//! `/health`, `/metrics` (Prometheus), and the page at `/`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{FromRequestParts, Query, Request, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tower_http::decompression::RequestDecompressionLayer;

use super::stream::backfill;
use super::stream::filter::StreamParams;
use super::tokens::Access;
use super::{error_response, ingest, otlp, stream, SharedState};
use crate::metrics::Granularity;

/// Default and largest `limit` of `/api/events`.
const EVENTS_DEFAULT_LIMIT: usize = 1000;
const EVENTS_MAX_LIMIT: usize = 100_000;

/// Every route of the hub.
pub fn router(state: SharedState) -> Router {
    // Writes: the token of a role that may write, then a browser origin
    // that may write. Decompression comes before `post_events`, which
    // applies the limit to the inflated body, so a small gzip bomb is
    // refused like any other oversized body.
    let writes = Router::new()
        .route("/events", post(ingest::post_events))
        .route("/v1/traces", post(otlp::http::traces))
        .route("/v1/logs", post(otlp::http::logs))
        .route("/v1/metrics", post(otlp::http::metrics))
        .layer(RequestDecompressionLayer::new().gzip(true))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_own_origin,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            Guard(state.clone(), Access::Write),
            require_token,
        ));
    // Reads (WebSockets check their token themselves: browsers can only
    // send it in the query or the subprotocol).
    let reads = Router::new()
        .route("/api/events", get(events))
        .route("/api/metrics", get(metrics_json))
        .route("/api/config", get(config_json))
        .route("/api/alerts", get(alerts_json))
        .route("/api/budgets", get(budgets_json))
        .route("/api/budgets/check", get(budget_check))
        .route("/metrics", get(prometheus))
        .route_layer(axum::middleware::from_fn_with_state(
            Guard(state.clone(), Access::Read),
            require_token,
        ));
    Router::new()
        .route("/", get(root))
        .route("/agent-events", get(stream::handler))
        .route("/stream", get(stream::handler))
        .route("/ingest", get(ingest::ws_ingest))
        .merge(writes)
        .merge(reads)
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost, so that no path (not even a 404) answers a name that
        // another site pointed at the hub.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_known_host,
        ))
        .with_state(state)
}

async fn require_known_host(
    State(state): State<SharedState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match super::auth::check_host(&state, req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused,
    }
}

async fn require_own_origin(
    State(state): State<SharedState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match super::auth::check_origin(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// The state of a token check: the hub and the access its routes need.
#[derive(Clone)]
struct Guard(SharedState, Access);

async fn require_token(
    State(Guard(state, access)): State<Guard>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match super::auth::check_http(&state, req.headers(), access) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused,
    }
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
    (
        [
            // A page of another site may not frame the dashboard.
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(include_str!("../../dashboard/index.html")),
    )
        .into_response()
}

/// `GET /api/events?since=&limit=&types=&agent=&task_id=`: retained events,
/// oldest first, as `{"events":[...],"last_id":N,"oldest_id":M}`.
async fn events(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
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
    let engine = state
        .emitter
        .engine()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    doc["events_by_type"] = json!(engine.totals().events_by_type);
    drop(engine);
    doc["otel"] = otlp::metrics_json(state);
    doc
}

/// `GET /api/metrics`: the live document; with `bucket=` a series of
/// buckets (`minute`, `hourly`, `daily`, `weekly`) between `from` and `to`
/// (Unix seconds, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`, UTC; default: the
/// last 60 buckets up to now).
async fn metrics_json(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match query.get("bucket") {
        None => Json(metrics_document(&state)).into_response(),
        Some(b) => match series_query(b, &query) {
            Ok((g, from, to)) => match (&state.store, g) {
                (Some(store), g) if g != Granularity::Minute => {
                    match redis_series(store, g, from, to).await {
                        Ok(v) => Json(v).into_response(),
                        Err(e) => {
                            error_response(StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}"))
                        }
                    }
                }
                _ => Json(series(&state, g, from, to)).into_response(),
            },
            Err(e) => error_response(StatusCode::BAD_REQUEST, e),
        },
    }
}

/// Parses `bucket`, `from`, `to`.
pub fn series_query(
    bucket: &str,
    query: &HashMap<String, String>,
) -> Result<(Granularity, f64, f64), String> {
    let g = Granularity::from_name(bucket).ok_or_else(|| {
        format!("bucket: expected minute, hourly, daily or weekly, got {bucket:?}")
    })?;
    let to = match query.get("to") {
        Some(t) => parse_time(t).map_err(|e| format!("to: {e}"))?,
        None => crate::event::now_unix(),
    };
    let from = match query.get("from") {
        Some(f) => parse_time(f).map_err(|e| format!("from: {e}"))?,
        None => to - 59.0 * g.length_secs() as f64,
    };
    if from > to {
        return Err("from: must not be after to".into());
    }
    Ok((g, from, to))
}

/// Unix seconds, `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` (UTC) or RFC 3339.
pub fn parse_time(s: &str) -> Result<f64, String> {
    if let Ok(x) = s.parse::<f64>() {
        if x.is_finite() && x >= 0.0 {
            return Ok(x);
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp() as f64);
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc().timestamp() as f64);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp() as f64);
    }
    Err(format!(
        "expected Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, got {s:?}"
    ))
}

/// The in-memory buckets of `g` from the bucket containing `from` to the
/// one containing `to`; empty buckets included, so a chart has no holes.
pub fn series(state: &SharedState, g: Granularity, from: f64, to: f64) -> Value {
    let engine = state
        .emitter
        .engine()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let len = g.length_secs();
    let (first, last) = (g.bucket_start(from), g.bucket_start(to));
    let stored: std::collections::BTreeMap<i64, &crate::metrics::BucketStats> = engine
        .buckets(g)
        .filter(|(s, _)| *s >= first && *s <= last)
        .collect();
    let empty = crate::metrics::BucketStats::default();
    let mut out = Vec::new();
    let mut start = first;
    // At most 10,000 points: a year of hours is not a chart.
    while start <= last && out.len() < 10_000 {
        let stats = stored.get(&start).copied().unwrap_or(&empty);
        out.push(json!({
            "key": g.bucket_name(start),
            "start": start,
            "kpis": stats.kpis(len as f64),
            "events": stats.events,
            "total_cost": stats.total_cost,
        }));
        start += len;
        if g == Granularity::Weekly || g == Granularity::Daily {
            start = g.bucket_start(start as f64);
        }
    }
    json!({ "bucket": g.as_str(), "source": "memory", "series": out })
}

/// The stored series of `g` from Redis.
async fn redis_series(
    store: &super::StoreHandle,
    g: Granularity,
    from: f64,
    to: f64,
) -> Result<Value, String> {
    let mut reader = store.reader.lock().await;
    if reader.is_none() {
        let t = store.config.timeout;
        *reader = Some(crate::sinks::redis_metrics::connect(&store.config.url, t, t).await?);
    }
    let con = reader.as_mut().expect("connected");
    let series =
        crate::sinks::redis_metrics::store::read_series(con, &store.config.keys, g, from, to)
            .await
            .map_err(|e| e.to_string())?;
    Ok(json!({ "bucket": g.as_str(), "source": "redis", "series": series }))
}

/// `GET /api/alerts`: `{"active":[...],"history":[...]}` (history newest
/// last, at most 1,000 transitions).
async fn alerts_json(State(state): State<SharedState>) -> Response {
    let a = state
        .emitter
        .alerts()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let notify = state.emitter.notify_stats();
    Json(json!({
        "rules": a.engine.rules().len(),
        "active": a.engine.active(),
        "history": a.engine.history(),
        "notifications": {
            "delivered": notify.delivered.load(Ordering::Relaxed),
            "failed": notify.failed.load(Ordering::Relaxed),
            "dropped": notify.dropped.load(Ordering::Relaxed),
        },
    }))
    .into_response()
}

/// `GET /api/budgets`: each budget and key with spend, limit, remaining and
/// state (`ok`, `warning`, `exceeded`).
async fn budgets_json(State(state): State<SharedState>) -> Response {
    let a = state
        .emitter
        .alerts()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Json(json!({
        "budgets": a.budgets.snapshot(crate::event::now_unix()),
        "stats": a.budgets.stats(),
    }))
    .into_response()
}

/// `GET /api/budgets/check?cost=0.4&feature=X&task=T&agent=A`: whether that
/// spend would exceed a budget (`allowed`, and the budgets it would exceed).
async fn budget_check(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let cost = match query.get("cost").map(|c| c.parse::<f64>()) {
        Some(Ok(c)) => c,
        Some(Err(_)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("cost: expected a number, got {:?}", query["cost"]),
            )
        }
        None => return error_response(StatusCode::BAD_REQUEST, "cost: missing"),
    };
    let keys = crate::alerts::CheckKeys {
        feature: query.get("feature").map(String::as_str),
        task: query
            .get("task")
            .or_else(|| query.get("task_id"))
            .map(String::as_str),
        agent: query.get("agent").map(String::as_str),
    };
    let a = state
        .emitter
        .alerts()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match a.budgets.check(keys, cost, crate::event::now_unix()) {
        Ok(r) => Json(r).into_response(),
        Err(e) => error_response(StatusCode::BAD_REQUEST, format!("cost: {e}")),
    }
}

/// `GET /api/config`: what a dashboard needs to know of the configuration.
async fn config_json(State(state): State<SharedState>) -> Response {
    let c = state.emitter.config();
    Json(json!({
        "window_minutes": c.metrics.aggregate.window_minutes,
        "track": c.metrics.track,
        "alerts": c.alerts,
        "declared_types": state.emitter.schema().declared_types(),
        "strict": state.emitter.schema().strict(),
    }))
    .into_response()
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
            reasons.push("redis bridge: not connected".into());
        }
        components.insert(
            "redis_bridge".into(),
            json!({"status": if up { "ok" } else { "degraded" }}),
        );
    }
    if let Some(store) = &state.store {
        let s = &store.stats;
        let up = s.up.load(Ordering::Relaxed);
        let dropped = s.dropped_events.load(Ordering::Relaxed);
        let pending = s.pending_events.load(Ordering::Relaxed);
        if !up {
            reasons.push(format!(
                "redis metrics: not connected; increments of {pending} events pending"
            ));
        }
        if dropped > 0 {
            reasons.push(format!(
                "redis metrics: increments of {dropped} events dropped (pending bound reached)"
            ));
        }
        components.insert(
            "redis_metrics".into(),
            json!({
                "status": if up && dropped == 0 { "ok" } else { "degraded" },
                "pending_events": pending,
                "dropped_events": dropped,
                "flushes": s.flushes.load(Ordering::Relaxed),
                "failures": s.failures.load(Ordering::Relaxed),
            }),
        );
    }
    components.insert("otlp_grpc".into(), otlp::grpc_json(&state.otlp.grpc));
    if let Some(r) = otlp::health_reason(&state.otlp.grpc, state.addr) {
        reasons.push(r);
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
async fn prometheus(State(state): State<SharedState>) -> Response {
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
