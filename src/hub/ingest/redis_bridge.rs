//! The contract's cross-process bridge: agents of the original system
//! `PUBLISH agent-events <event JSON>`; the hub subscribes and ingests each
//! message like any other (the original wire format, `id` ignored).
//!
//! Each message is held to the limits of `POST /events`: a message over the
//! body limit, or of more events than one request may carry, is refused
//! whole without being parsed, counted (`redis.refused` in `/api/metrics`,
//! `agentpulse_redis_refused_total`) and logged (at most once a second).
//!
//! Reconnects on its own with backoff (100 ms doubling to 5 s) when Redis
//! goes away; `/health` reports the bridge `degraded` meanwhile. Messages
//! published while the hub was disconnected are lost: that is pub/sub's
//! nature, and the original behaved the same.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;

use super::body::{parse_body, BodyError, Format, Item};
use crate::hub::SharedState;

/// The channel of the contract.
pub const CHANNEL: &str = "agent-events";

/// Most messages gathered into one ingest call.
const BATCH: usize = 512;

/// Runs until the hub shuts down.
pub async fn run(state: SharedState, url: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            r = session(&state, &url) => r,
        };
        state.counters.redis_up.store(false, Ordering::Relaxed);
        match connected {
            Ok(()) => {
                tracing::warn!(
                    "redis bridge: connection to {} lost; reconnecting",
                    redact(&url)
                );
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                state.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "redis bridge: {}: {e}; retrying in {backoff:?}",
                    redact(&url)
                );
            }
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection: subscribe, then ingest until the stream ends.
async fn session(state: &SharedState, url: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })??;
    pubsub.subscribe(CHANNEL).await?;
    state.counters.redis_up.store(true, Ordering::Relaxed);
    tracing::info!("redis bridge: subscribed to {CHANNEL} on {}", redact(url));
    let schema = state.emitter.schema();
    let limits = state.body_limits();
    let max_bytes = state.config.max_body_bytes;
    let mut last_warn: Option<std::time::Instant> = None;
    let mut warn = |msg: String| {
        if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!("redis bridge: {msg}");
            last_warn = Some(std::time::Instant::now());
        }
    };
    let mut messages = pubsub.into_on_message().ready_chunks(BATCH);
    while let Some(chunk) = messages.next().await {
        state
            .counters
            .redis_messages
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let mut items: Vec<Item> = Vec::with_capacity(chunk.len());
        for msg in &chunk {
            let bytes = msg.get_payload_bytes();
            if bytes.len() > max_bytes {
                state.counters.redis_refused.fetch_add(1, Ordering::Relaxed);
                warn(format!(
                    "refused a message of {} bytes on {CHANNEL}: over the {max_bytes}-byte limit",
                    bytes.len()
                ));
                continue;
            }
            match parse_body(bytes, Format::Json, limits, &|t| schema.intern(t)) {
                Ok(mut parsed) => items.append(&mut parsed),
                Err(e @ BodyError::TooManyEvents { .. }) => {
                    state.counters.redis_refused.fetch_add(1, Ordering::Relaxed);
                    warn(format!("refused a message on {CHANNEL}: {e}"));
                }
                Err(e) => items.push(Err(crate::schema::ValidationError::new(
                    "event",
                    "event",
                    e.to_string(),
                ))),
            }
        }
        if items.is_empty() {
            continue;
        }
        let (_, answer) = super::take(state, items).await;
        if let Some(errors) = answer.get("errors").and_then(|e| e.as_array()) {
            if let Some(e) = errors.first() {
                let more = answer["rejected"].as_u64().unwrap_or(1).saturating_sub(1);
                warn(format!(
                    "rejected an event on {CHANNEL}: {}{}",
                    e["error"].as_str().unwrap_or("?"),
                    if more > 0 {
                        format!(" (and {more} more in this batch)")
                    } else {
                        String::new()
                    }
                ));
            }
        } else if let Some(e) = answer.get("error") {
            warn(format!("could not take events from {CHANNEL}: {e}"));
        }
    }
    Ok(())
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
