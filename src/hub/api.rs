//! The router and the query endpoints: `/api/events`, `/api/metrics`,
//! `/api/agents`, `/api/features`, `/api/tasks/{id}` ([`super::timeline`]),
//! `/api/hitl/...` ([`super::hitl`]), `/health` (and its acknowledgement),
//! `/metrics` (Prometheus), and the page at `/`.
//!
//! Answers are bounded whatever the data: `/api/metrics` lists the most
//! active agents and event types ([`METRICS_TOP`]); the full lists are paged
//! through `/api/agents` and `/api/features`.

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

use super::stream::cursor::{Cursor, Step};
use super::stream::filter::{Filter, StreamParams};
use super::tokens::Access;
use super::{error_response, ingest, otlp, stream, HubState, SharedState};
use crate::metrics::Granularity;

/// Agents and event types listed in `/api/metrics` (the most active).
pub const METRICS_TOP: usize = crate::metrics::DEFAULT_SNAPSHOT_AGENTS;

/// Default and largest page of `/api/agents` and `/api/features`.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;

/// Default and largest `limit` of `/api/events`.
const EVENTS_DEFAULT_LIMIT: usize = 1000;

/// Most events one `/api/events` answer looks at: a filter that matches
/// little gets a `next` cursor to go on rather than a long wait.
const EVENTS_SCAN_BUDGET: usize = 250_000;

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
        .route("/api/hitl/{task_id}/resolve", post(super::hitl::resolve))
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
        .route("/api/agents", get(agents_page))
        .route("/api/features", get(features_page))
        .route("/api/config", get(config_json))
        .route("/api/alerts", get(alerts_json))
        .route("/api/budgets", get(budgets_json))
        .route("/api/budgets/check", get(budget_check))
        .route("/api/tasks/{task_id}", get(super::timeline::task))
        .route("/api/hitl", get(super::hitl::queue))
        .route("/api/hitl/{task_id}", get(super::hitl::status))
        .route("/metrics", get(prometheus))
        .route_layer(axum::middleware::from_fn_with_state(
            Guard(state.clone(), Access::Read),
            require_token,
        ));
    // Admin calls change the hub's own state: an admin token, and no
    // foreign browser origin.
    let admin = Router::new()
        .route("/api/health/acknowledge", post(acknowledge_losses))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_own_origin,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            Guard(state.clone(), Access::Admin),
            require_token,
        ));
    Router::new()
        .route("/", get(root))
        .route("/agent-events", get(stream::handler))
        .route("/stream", get(stream::handler))
        .route("/ingest", get(ingest::ws_ingest))
        .merge(writes)
        .merge(reads)
        .merge(admin)
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(json_refusals))
        // Outermost, so that no path (not even a 404) answers a name that
        // another site pointed at the hub.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_known_host,
        ))
        .with_state(state)
}

/// Gives every refusal a JSON body naming the fault: some come from layers
/// and extractors (decompression, WebSocket upgrade checks) with an empty
/// or plain-text body.
async fn json_refusals(req: Request, next: axum::middleware::Next) -> Response {
    let encoding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let resp = next.run(req).await;
    let status = resp.status();
    // Only bare or plain-text refusals are rewritten: JSON ones already
    // are, and a protocol's own error bodies (OTLP's protobuf `Status`)
    // must reach its clients as they are.
    let typed = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| !c.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || typed {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match (status, encoding) {
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(enc)) => format!(
            "Content-Encoding {enc:?} is not supported: send the body plain or gzip-compressed"
        ),
        _ if !text.is_empty() => text,
        _ => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
    };
    let mut out = error_response(status, message);
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

async fn require_known_host(
    State(state): State<SharedState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match super::auth::check_host(&state, req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refuse_after_body(req, refused).await,
    }
}

async fn require_own_origin(
    State(state): State<SharedState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match super::auth::check_origin(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refuse_after_body(req, refused).await,
    }
}

/// Sends `refused` once the request's body has been read and thrown away
/// (bounded): a hub that answers and closes while the client is still
/// sending makes it report "broken pipe" instead of the 401 or 403.
async fn refuse_after_body(req: Request, refused: Response) -> Response {
    super::ingest::drain_body(req.into_body()).await;
    refused
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
        Err(refused) => refuse_after_body(req, refused).await,
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

/// `GET /api/events?since=&epoch=&limit=&types=&agent=&task_id=`: retained
/// events, oldest first, as `{"events":[...],"next":N|null,"last_id":N,
/// "oldest_id":M,"epoch":E}`. With `since`: the matches after it, from the
/// log for ids older than the ring, up to `limit`; `next` is where to go
/// on (`since=next`) when there may be more, `null` once the answer
/// reaches the last id. Without `since`: the newest `limit` matches in
/// memory. A `since` above the last id, or an `epoch` that is not the
/// hub's, belongs to another history: an empty answer with `"reset":true`.
async fn events(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let params = match StreamParams::from_query(&query) {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    let limit = params.limit.unwrap_or(EVENTS_DEFAULT_LIMIT);
    let last_id = state.ring.last_id();
    let reset = stream::is_reset(&state, params.since, params.epoch.as_deref());
    let st = state.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let oldest = stream::oldest_retained(&st);
        let (messages, next) = match params.since {
            _ if reset => (Vec::new(), None),
            Some(since) => read_events(&st, since, limit, params.filter),
            None => (recent_events(&st, limit, params.filter), None),
        };
        (messages, next, oldest)
    })
    .await;
    let Ok((messages, next, oldest)) = answer else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "reading events failed");
    };
    // The events are already JSON: splice their bytes, do not re-encode.
    let mut body = Vec::with_capacity(128 + messages.iter().map(|m| m.len() + 1).sum::<usize>());
    body.extend_from_slice(b"{\"events\":[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(m.as_bytes());
    }
    let tail = json!({
        "next": next,
        "last_id": last_id,
        "oldest_id": oldest,
        "epoch": state.epoch,
    });
    body.extend_from_slice(b"],");
    // `tail` is an object: splice its members after the array.
    let tail = tail.to_string();
    body.extend_from_slice(&tail.as_bytes()[1..tail.len() - 1]);
    if reset {
        body.extend_from_slice(b",\"reset\":true");
    }
    body.push(b'}');
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("valid response")
}

/// The matches after `since`, at most `limit`, and where to go on.
fn read_events(
    state: &HubState,
    since: u64,
    limit: usize,
    filter: Filter,
) -> (Vec<axum::extract::ws::Utf8Bytes>, Option<u64>) {
    let mut cursor = Cursor::new(since, filter);
    let mut out = Vec::new();
    let mut scanned_in_all = 0;
    loop {
        match cursor.step(state) {
            Step::Events {
                messages, scanned, ..
            } => {
                scanned_in_all += scanned;
                for (id, m) in messages {
                    out.push(m);
                    if out.len() == limit {
                        return (out, Some(id));
                    }
                }
            }
            Step::Gap { .. } => {}
            Step::Live => return (out, None),
            // The log writer is a moment behind: the caller asks again.
            Step::Waiting => return (out, Some(cursor.after())),
        }
        if scanned_in_all >= EVENTS_SCAN_BUDGET {
            return (out, Some(cursor.after()));
        }
    }
}

/// The newest `limit` matches in memory.
fn recent_events(
    state: &HubState,
    limit: usize,
    filter: Filter,
) -> Vec<axum::extract::ws::Utf8Bytes> {
    let last_id = state.ring.last_id();
    if filter.is_empty() {
        return read_events(state, last_id.saturating_sub(limit as u64), limit, filter).0;
    }
    let Some(oldest) = state.ring.oldest_id() else {
        return Vec::new();
    };
    let from = oldest - 1;
    let mut cursor = Cursor::new(from, filter);
    let mut newest = std::collections::VecDeque::with_capacity(limit.min(4096));
    loop {
        match cursor.step(state) {
            // Only what is in memory (the ring moved on meanwhile).
            Step::Events { from_log: true, .. } => return newest.into(),
            Step::Events { messages, .. } => {
                for (_, m) in messages {
                    if newest.len() == limit {
                        newest.pop_front();
                    }
                    newest.push_back(m);
                }
            }
            Step::Gap { .. } => {}
            Step::Live | Step::Waiting => return newest.into(),
        }
    }
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
        "stuck_clients": c.stuck_clients.load(Ordering::Relaxed),
        "messages_out": c.messages_out.load(Ordering::Relaxed),
        "messages_from_log": c.messages_from_log.load(Ordering::Relaxed),
        "ingest_requests": c.ingest_requests.load(Ordering::Relaxed),
        "ingest_rejected": c.ingest_rejected.load(Ordering::Relaxed),
        "queue_depth": state.emitter.queue_depth(),
        "retained": state.ring.len(),
        "last_id": state.ring.last_id(),
        "epoch": state.epoch,
        "redis": redis_status(state),
    });
    doc["hub"]["ingest_unavailable"] = json!(c.ingest_unavailable.load(Ordering::Relaxed));
    doc["hub"]["http"] = http_counters(state);
    let engine = state
        .emitter
        .engine()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let by_type = &engine.totals().events_by_type;
    let mut types: Vec<(&std::sync::Arc<str>, &u64)> = by_type.iter().collect();
    types.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let mut listed = serde_json::Map::new();
    let mut rest = 0u64;
    for (i, (t, n)) in types.iter().enumerate() {
        if i < METRICS_TOP {
            listed.insert(t.to_string(), json!(n));
        } else {
            rest += **n;
        }
    }
    if rest > 0 {
        let other = listed
            .get(crate::metrics::OTHER)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        listed.insert(crate::metrics::OTHER.into(), json!(other + rest));
    }
    doc["events_by_type"] = Value::Object(listed);
    doc["event_types_total"] = json!(types.len());
    drop(engine);
    doc["otel"] = otlp::metrics_json(state);
    doc
}

/// `?limit=&after=` of the paged lists.
fn page_params(query: &HashMap<String, String>) -> Result<(usize, Option<String>), String> {
    let limit = match query.get("limit") {
        None => PAGE_DEFAULT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=PAGE_MAX).contains(&n) => n,
            _ => return Err(format!("limit: expected 1..={PAGE_MAX}, got {l:?}")),
        },
    };
    Ok((limit, query.get("after").cloned()))
}

/// The rolling window now and its length in seconds.
fn window_now(state: &SharedState) -> (crate::metrics::BucketStats, f64) {
    let engine = state
        .emitter
        .engine()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let span = f64::from(engine.config().window_minutes) * 60.0;
    (engine.window_stats(crate::event::now_unix()), span)
}

/// One page of `entries` sorted by name, after `after`.
fn page<T>(
    mut entries: Vec<(String, T)>,
    limit: usize,
    after: Option<&str>,
) -> (Vec<(String, T)>, usize, Option<String>) {
    let total = entries.len();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let start = match after {
        Some(a) => entries.partition_point(|(n, _)| n.as_str() <= a),
        None => 0,
    };
    let mut out: Vec<(String, T)> = entries.into_iter().skip(start).take(limit + 1).collect();
    let next = if out.len() > limit {
        out.truncate(limit);
        out.last().map(|(n, _)| n.clone())
    } else {
        None
    };
    (out, total, next)
}

/// `GET /api/agents?limit=100&after=NAME`: every agent of the rolling
/// window with its figures, by name, a page at a time:
/// `{"agents":[{"agent":...,"events":...,...}],"total":N,"next":NAME|null}`
/// (pass `next` as `after` for the following page).
async fn agents_page(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (limit, after) = match page_params(&query) {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    let (window, span) = window_now(&state);
    let entries: Vec<(String, &crate::metrics::AgentStats)> = window
        .per_agent
        .iter()
        .map(|(a, s)| (a.to_string(), s))
        .collect();
    let (rows, total, next) = page(entries, limit, after.as_deref());
    let agents: Vec<Value> = rows
        .into_iter()
        .map(|(name, s)| {
            let mut v = json!(crate::metrics::AgentKpis::from_stats(s, span));
            v["agent"] = json!(name);
            v
        })
        .collect();
    Json(json!({ "agents": agents, "total": total, "next": next })).into_response()
}

/// `GET /api/features?limit=100&after=NAME`: every feature of the rolling
/// window, by name, a page at a time (as `/api/agents`).
async fn features_page(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (limit, after) = match page_params(&query) {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    let (window, _) = window_now(&state);
    let entries: Vec<(String, &crate::metrics::FeatureStats)> = window
        .per_feature
        .iter()
        .map(|(f, s)| (f.to_string(), s))
        .collect();
    let (rows, total, next) = page(entries, limit, after.as_deref());
    let features: Vec<Value> = rows
        .into_iter()
        .map(|(name, s)| {
            let done = window.features_completed.contains(name.as_str());
            let mut v = json!(crate::metrics::FeatureReport::from_stats(s, done));
            v["feature"] = json!(name);
            v
        })
        .collect();
    Json(json!({ "features": features, "total": total, "next": next })).into_response()
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

/// The latest time a query may name: 9999-12-31T23:59:59Z.
pub const MAX_TIME: f64 = 253_402_300_799.0;

/// Unix seconds, `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` (UTC) or RFC 3339,
/// from 1970 to the year 9999.
pub fn parse_time(s: &str) -> Result<f64, String> {
    let x = if let Ok(x) = s.parse::<f64>() {
        x
    } else if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        t.timestamp() as f64
    } else if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        t.and_utc().timestamp() as f64
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp() as f64
    } else {
        return Err(format!(
            "expected Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, got {s:?}"
        ));
    };
    if x.is_finite() && (0.0..=MAX_TIME).contains(&x) {
        Ok(x)
    } else {
        Err(format!(
            "expected a time from 1970 to 9999 (Unix seconds in 0..={MAX_TIME}), got {s:?}"
        ))
    }
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
/// state (`ok`, `warning`, `exceeded`), and `configured`: the `budgets:`
/// entries themselves (a feature budget has no row before its first cost).
async fn budgets_json(State(state): State<SharedState>) -> Response {
    let a = state
        .emitter
        .alerts()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Json(json!({
        "configured": state.emitter.config().budgets,
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

/// `GET /api/config`: what a dashboard needs to know of the configuration,
/// and the KPI names (`kpis`, [`crate::metrics::KPI_NAMES`]).
async fn config_json(State(state): State<SharedState>) -> Response {
    let c = state.emitter.config();
    Json(json!({
        "window_minutes": c.metrics.aggregate.window_minutes,
        "track": c.metrics.track,
        "alerts": c.alerts,
        "declared_types": state.emitter.schema().declared_types(),
        "strict": state.emitter.schema().strict(),
        "kpis": crate::metrics::KPI_NAMES,
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
            "refused": state.counters.redis_refused.load(Ordering::Relaxed),
        }),
    }
}

/// Losses since start: counted until acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    /// Log lines the JSONL sink had to drop.
    pub log_lines: u64,
    /// Events whose Redis increments were dropped.
    pub redis_increments: u64,
}

/// The losses counted since start.
fn losses(state: &SharedState) -> Losses {
    Losses {
        log_lines: state
            .emitter
            .sink_reports()
            .iter()
            .find(|s| s.name == "jsonl")
            .map_or(0, |s| s.dropped),
        redis_increments: state
            .store
            .as_ref()
            .map_or(0, |s| s.stats.dropped_events.load(Ordering::Relaxed)),
    }
}

/// `POST /api/health/acknowledge` (token): the losses counted so far are
/// acknowledged; `/health` is `ok` again once nothing else is wrong. The
/// counters of `/metrics` and `/api/metrics` are not reset.
async fn acknowledge_losses(State(state): State<SharedState>) -> Response {
    let now = losses(&state);
    let before = std::mem::replace(
        &mut *state.acknowledged.lock().unwrap_or_else(|e| e.into_inner()),
        now,
    );
    Json(json!({
        "acknowledged": {
            "log_lines_dropped": now.log_lines - before.log_lines.min(now.log_lines),
            "redis_increments_dropped": now.redis_increments - before.redis_increments.min(now.redis_increments),
        },
    }))
    .into_response()
}

/// `GET /health`: always 200; `status` is `ok` or `degraded` with reasons.
/// A component is `degraded` while it fails (and `ok` as soon as it
/// recovers, without waiting for an event), and while a loss since start
/// (log lines or Redis increments dropped) is not acknowledged with
/// `POST /api/health/acknowledge`.
async fn health(State(state): State<SharedState>) -> Response {
    let mut reasons: Vec<String> = Vec::new();
    let mut components = serde_json::Map::new();
    let acked = *state.acknowledged.lock().unwrap_or_else(|e| e.into_inner());
    let lost = losses(&state);
    let lost_lines = lost.log_lines.saturating_sub(acked.log_lines);
    let lost_increments = lost.redis_increments.saturating_sub(acked.redis_increments);
    let refused = state.emitter.stats().refused;
    components.insert(
        "pipeline".into(),
        json!({"status": "ok", "refused": refused}),
    );
    for s in state.emitter.sink_reports() {
        let mut degraded = s.last_error.is_some();
        if let Some(err) = &s.last_error {
            reasons.push(format!("sink {}: {err}", s.name));
        }
        let mut c = json!({"error": s.last_error, "dropped": s.dropped});
        if s.name == "jsonl" {
            c["lost_since_acknowledged"] = json!(lost_lines);
            if let Some(b) = state.emitter.log_backlog() {
                c["unwritten_bytes"] = json!(b.unwritten());
                c["refused"] = json!(b.refused().max(refused));
                if let Some(cap) = b.cap_report() {
                    c["disk_cap"] = json!({
                        "max_log_bytes": cap.max_bytes,
                        "used_bytes": cap.used_bytes,
                        "deleted_files": cap.deleted_files,
                        "deleted_bytes": cap.deleted_bytes,
                        "full": b.full().is_some(),
                    });
                }
                if let Some(why) = b.full() {
                    degraded = true;
                    reasons.push(format!("sink jsonl: {why}"));
                }
            }
            if lost_lines > 0 {
                degraded = true;
                reasons.push(format!(
                    "sink jsonl: {lost_lines} log lines dropped since start (not stored); \
                     acknowledge with POST /api/health/acknowledge"
                ));
            }
        }
        c["status"] = json!(if degraded { "degraded" } else { "ok" });
        components.insert(format!("sink_{}", s.name), c);
    }
    if state.config.redis_url.is_some() {
        let up = state.counters.redis_up.load(Ordering::Relaxed);
        if !up {
            reasons.push("redis bridge: not connected".into());
        }
        components.insert(
            "redis_bridge".into(),
            json!({
                "status": if up { "ok" } else { "degraded" },
                "refused": state.counters.redis_refused.load(Ordering::Relaxed),
            }),
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
        if lost_increments > 0 {
            reasons.push(format!(
                "redis metrics: increments of {lost_increments} events dropped since start \
                 (pending bound reached); acknowledge with POST /api/health/acknowledge"
            ));
        }
        components.insert(
            "redis_metrics".into(),
            json!({
                "status": if up && lost_increments == 0 { "ok" } else { "degraded" },
                "pending_events": pending,
                "dropped_events": dropped,
                "lost_since_acknowledged": lost_increments,
                "flushes": s.flushes.load(Ordering::Relaxed),
                "failures": s.failures.load(Ordering::Relaxed),
            }),
        );
    }
    if let Some(cluster) = &state.config.cluster {
        reasons.extend(cluster.status.reasons());
        components.insert("cluster".into(), cluster.status.to_json());
    }
    components.insert("otlp_grpc".into(), otlp::grpc_json(&state.otlp.grpc));
    let mut http = http_counters(&state);
    http["status"] = json!("ok");
    components.insert("http".into(), http);
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

/// The connection counters (see `hub::server`): open now, the cap, and
/// connections refused or closed by the limits.
fn http_counters(state: &SharedState) -> Value {
    let c = &state.counters;
    json!({
        "scheme": state.scheme(),
        "open_connections": c.tcp_connections.load(Ordering::Relaxed),
        "max_total_connections": state.config.max_total_connections,
        "over_limit": c.connections_over_limit.load(Ordering::Relaxed),
        "header_timeouts": c.header_timeouts.load(Ordering::Relaxed),
        "idle_closed": c.idle_closed.load(Ordering::Relaxed),
        "tls_handshake_failures": c.tls_handshake_failures.load(Ordering::Relaxed),
    })
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::{json, Value};

    use super::super::test_router::{call, error_of, hub, request};
    use super::super::HubConfig;

    async fn get(r: &axum::Router, uri: &str) -> (StatusCode, Value) {
        call(r, request("GET", uri, &[], "")).await
    }

    /// Each malformed query is a 400 naming the parameter.
    async fn refused(r: &axum::Router, uri: &str, names: &str) {
        let (s, b) = get(r, uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {b}");
        assert!(error_of(&b).contains(names), "{uri}: {b}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_query_of_api_events_is_parsed_or_refused() {
        let (running, r) = hub(HubConfig::default()).await;
        let emitter = running.state().emitter.clone();
        for n in 1..=3 {
            emitter.emit("note", json!({ "n": n })).unwrap();
        }
        emitter.emit("other", json!({})).unwrap();
        assert!(emitter.flush_async().await);

        refused(&r, "/api/events?since=abc", "since: expected an event id").await;
        refused(&r, "/api/events?since=-1", "since:").await;
        refused(&r, "/api/events?limit=0", "limit: expected an integer").await;
        refused(&r, "/api/events?limit=x", "limit:").await;
        refused(
            &r,
            "/api/events?mode=fast",
            "mode: expected lossless or live",
        )
        .await;
        refused(&r, "/api/events?epoch=no%20spaces", "epoch:").await;

        let ids = |b: &Value| -> Vec<u64> {
            b["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_u64().unwrap())
                .collect()
        };
        // `since` and `limit`: the page after `since`, and where to go on.
        let (s, b) = get(&r, "/api/events?since=1&limit=1").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(ids(&b), [2]);
        assert_eq!(b["next"], 2);
        assert_eq!(b["last_id"], 4);
        assert_eq!(b["epoch"], running.state().epoch.as_str());
        // Blank values count as absent; `types` filters.
        let (_, b) = get(&r, "/api/events?since=&limit=&types=other").await;
        assert_eq!(ids(&b), [4]);
        let (_, b) = get(&r, "/api/events?since=0&types=note,%20other").await;
        assert_eq!(ids(&b), [1, 2, 3, 4]);
        // An epoch that is not the hub's: a reset, no events.
        let (_, b) = get(&r, "/api/events?since=0&epoch=someotherhub").await;
        assert_eq!(b["reset"], true, "{b}");
        assert_eq!(ids(&b), Vec::<u64>::new());
        running.shutdown().await.unwrap();
    }

    /// The quoted names in `src` between `start` and the next `end`.
    fn quoted_between(src: &str, start: &str, end: &str, quote: char) -> Vec<String> {
        let from = src.find(start).expect("the list is there") + start.len();
        let list = &src[from..from + src[from..].find(end).expect("the list ends")];
        list.split(quote)
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_kpi_names_are_served_and_the_dashboard_and_python_sdk_agree() {
        let (running, r) = hub(HubConfig::default()).await;
        let (s, b) = get(&r, "/api/config").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["kpis"], json!(crate::metrics::KPI_NAMES));
        running.shutdown().await.unwrap();

        // The dashboard's cards: `key: '...'` in `const KPIS = [...]`.
        let page = include_str!("../../dashboard/index.html");
        let from = page.find("const KPIS = [").expect("the cards are listed");
        let block = &page[from..from + page[from..].find("];").expect("the list ends")];
        let keys: Vec<&str> = block
            .lines()
            .filter_map(|l| {
                let at = l.find("key: '")? + "key: '".len();
                Some(&l[at..at + l[at..].find('\'')?])
            })
            .collect();
        assert_eq!(keys, crate::metrics::KPI_NAMES, "dashboard/index.html KPIS");
        // The Python SDK's `KPI_NAMES = (...)`.
        let py = include_str!("../../clients/python/src/agentpulse/emitter.py");
        let names = quoted_between(py, "KPI_NAMES = (", ")", '"');
        assert_eq!(
            names,
            crate::metrics::KPI_NAMES,
            "the Python SDK's KPI_NAMES"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_series_and_budget_checks_refuse_bad_queries() {
        let (running, r) = hub(HubConfig::default()).await;
        for path in ["/api/agents", "/api/features"] {
            refused(&r, &format!("{path}?limit=0"), "limit: expected 1..=1000").await;
            refused(
                &r,
                &format!("{path}?limit=1001"),
                "limit: expected 1..=1000",
            )
            .await;
            refused(&r, &format!("{path}?limit=ten"), "limit:").await;
            let (s, b) = get(&r, &format!("{path}?limit=1000&after=m")).await;
            assert_eq!(s, StatusCode::OK, "{path}: {b}");
            assert_eq!(b["total"], 0, "{b}");
        }
        refused(&r, "/api/metrics?bucket=yearly", "bucket: expected minute").await;
        refused(&r, "/api/metrics?bucket=hourly&from=yesterday", "from:").await;
        refused(&r, "/api/metrics?bucket=hourly&to=1e300", "to:").await;
        refused(
            &r,
            "/api/metrics?bucket=daily&from=2026-12-02&to=2026-12-01",
            "from: must not be after to",
        )
        .await;
        for ok in [
            "/api/metrics",
            "/api/metrics?bucket=minute",
            "/api/metrics?bucket=daily&from=2026-12-01&to=2026-12-02T12:00:00",
            "/api/metrics?bucket=weekly&from=1764547200&to=2026-12-03T00:00:00Z",
        ] {
            let (s, b) = get(&r, ok).await;
            assert_eq!(s, StatusCode::OK, "{ok}: {b}");
        }
        refused(&r, "/api/budgets/check", "cost: missing").await;
        refused(
            &r,
            "/api/budgets/check?cost=lots",
            "cost: expected a number",
        )
        .await;
        let (s, b) = get(&r, "/api/budgets/check?cost=0.5&task=t1").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["allowed"], true, "{b}");
        running.shutdown().await.unwrap();
    }
}
