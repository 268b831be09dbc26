//! OpenTelemetry in: OTLP over HTTP (`POST /v1/traces`, `/v1/logs`,
//! `/v1/metrics` on the hub's port: [`http`]) and over gRPC (tonic, the
//! `opentelemetry-proto` services, on `--otlp-grpc-port`: [`grpc`]).
//!
//! Both transports decode a request ([`crate::otel::decode`]), map it
//! ([`crate::otel::Mapper`], one per hub, shared; its locks are held only
//! for its ledger and counters), queue its events like `POST /events` does (validated, answered
//! once durable per `--durability`) and answer per the OTLP specification:
//!
//! | outcome | HTTP | gRPC |
//! |---|---|---|
//! | taken, maybe some items rejected or cut | 200, `Export*ServiceResponse` with `partial_success` (rejected count and a message naming each rejected item's path and field), in the request's encoding | OK, the same message |
//! | body not decodable | 400, `google.rpc.Status` in the request's encoding | `INVALID_ARGUMENT` (tonic's decoding: `INTERNAL`) |
//! | body over `--max-body-bytes` (after gzip) | 413 | `RESOURCE_EXHAUSTED` (tonic's limit) |
//! | a content type other than protobuf or JSON | 415 naming the accepted ones | - |
//! | queue full with `--queue-policy drop` | 429, `Retry-After: 1` | `UNAVAILABLE` with `RetryInfo` (1 s) |
//! | events taken but the log has not confirmed them in time, or the hub is stopping | 503, `Retry-After: 1` | `UNAVAILABLE` |
//! | the log has reached its disk cap (`--max-log-bytes`) | 507 (not retried by exporters) | `RESOURCE_EXHAUSTED` |
//! | token missing or unknown / of a role that may not write | 401 / 403 | `UNAUTHENTICATED` / `PERMISSION_DENIED` |
//!
//! A retry after 429 or 503 is safe: every event has an `event_id` derived
//! from its span or record, so what was taken the first time is a duplicate
//! the second.

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::{json, Value};

use super::SharedState;
use crate::emitter::EmitError;
use crate::otel::{item_path, summary, Batch, Decoded, Mapper, Prices, Problem, Signal};
use crate::pipeline::Outcome;

pub mod grpc;
pub mod http;

/// The default OTLP/gRPC port.
pub const DEFAULT_GRPC_PORT: u16 = 4317;

/// Where OTLP/gRPC listens, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcListen {
    /// The port (on the hub's bind address).
    pub port: u16,
    /// Whether the user chose it: a chosen port that is taken is a
    /// start-up error; the default one that is taken only turns gRPC off.
    pub explicit: bool,
}

/// What became of OTLP/gRPC at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcStatus {
    /// Not asked for (`--otlp-grpc-port 0`).
    Disabled,
    /// Serving on this address.
    Listening(std::net::SocketAddr),
    /// The default port was taken: serving OTLP over HTTP only.
    PortTaken {
        /// The port.
        port: u16,
        /// Why it could not be bound.
        error: String,
    },
}

/// Counters of the OTLP endpoints.
#[derive(Debug, Default)]
pub struct OtlpCounters {
    /// Requests over HTTP.
    pub http_requests: AtomicU64,
    /// Requests over gRPC.
    pub grpc_requests: AtomicU64,
    /// Bodies refused whole (undecodable, too large, wrong type).
    pub refused_bodies: AtomicU64,
    /// Requests answered 429/503 (queue full, not durable, stopping).
    pub throttled: AtomicU64,
}

/// The hub's OTLP state.
#[derive(Debug)]
pub struct OtlpState {
    /// The mapper (its ledger, sessions and per-model counters).
    pub mapper: Mapper,
    /// OTLP/gRPC's state.
    pub grpc: GrpcStatus,
    /// Counters.
    pub counters: OtlpCounters,
}

impl OtlpState {
    /// A new state pricing with `prices`.
    pub fn new(prices: Prices, grpc: GrpcStatus) -> OtlpState {
        OtlpState {
            mapper: Mapper::new(prices),
            grpc,
            counters: OtlpCounters::default(),
        }
    }
}

/// A request taken: what to put in `partial_success`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Items rejected.
    pub rejected: u64,
    /// The message (empty when all is well).
    pub message: String,
}

/// Why a request was not taken; the sender should retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportError {
    /// The queue is full (policy drop).
    QueueFull,
    /// Not confirmed by the log in time, or the hub is stopping.
    Unavailable(String),
    /// The log has reached its disk cap: retrying helps only once space is
    /// freed.
    LogFull(String),
}

impl ExportError {
    /// The message for the sender.
    pub fn message(&self) -> String {
        match self {
            ExportError::QueueFull => {
                "the hub's event queue is full: retry later (nothing of this request was kept)"
                    .to_owned()
            }
            ExportError::Unavailable(m) => format!("{m}: retry later"),
            ExportError::LogFull(m) => m.clone(),
        }
    }
}

/// Maps and queues a trace export request.
pub async fn export_traces(
    state: &SharedState,
    d: Decoded<ExportTraceServiceRequest>,
) -> Result<Exported, ExportError> {
    let batch = state.otlp.mapper.traces(&d);
    finish(state, Signal::Traces, batch).await
}

/// Maps and queues a logs export request.
pub async fn export_logs(
    state: &SharedState,
    d: Decoded<ExportLogsServiceRequest>,
) -> Result<Exported, ExportError> {
    let batch = state.otlp.mapper.logs(&d);
    finish(state, Signal::Logs, batch).await
}

/// Takes a metrics export request into the per-model counters.
pub async fn export_metrics(
    state: &SharedState,
    d: Decoded<ExportMetricsServiceRequest>,
) -> Result<Exported, ExportError> {
    let batch = state.otlp.mapper.metrics(&d);
    finish(state, Signal::Metrics, batch).await
}

async fn finish(
    state: &SharedState,
    signal: Signal,
    mut batch: Batch,
) -> Result<Exported, ExportError> {
    let events = std::mem::take(&mut batch.events);
    // Items refused before they became events count as rejected too.
    state.emitter.note_rejected(batch.rejected.len() as u64);
    let results = if events.is_empty() {
        Vec::new()
    } else {
        match state.emitter.ingest_or_refuse(events).await {
            Ok(r) => r,
            Err(e) => {
                state
                    .otlp
                    .counters
                    .throttled
                    .fetch_add(1, Ordering::Relaxed);
                return Err(match e {
                    EmitError::QueueFull { .. } => ExportError::QueueFull,
                    EmitError::LogFull { reason } => ExportError::LogFull(reason),
                    other => ExportError::Unavailable(other.to_string()),
                });
            }
        }
    };
    let mut rejected: Vec<Problem> = std::mem::take(&mut batch.rejected);
    let mut invalid = 0u64;
    {
        let m = &state.otlp.mapper;
        for (meta, r) in batch.meta.iter().zip(results) {
            match r {
                Ok(Outcome::Accepted(_)) => m.settle(meta, Some(true)),
                Ok(Outcome::Duplicate(_)) => m.settle(meta, Some(false)),
                Err(e) => {
                    m.settle(meta, None);
                    invalid += 1;
                    rejected.push(Problem {
                        item: meta.item,
                        path: item_path(signal, meta.pos),
                        message: e.to_string(),
                    });
                }
            }
        }
        m.counters().stats.rejected += invalid;
    }
    state
        .counters
        .ingest_rejected
        .fetch_add(rejected.len() as u64, Ordering::Relaxed);
    let (n, message) = summary(
        signal,
        batch.items,
        &rejected,
        &batch.truncated,
        &batch.warnings,
    );
    Ok(Exported {
        rejected: n,
        message,
    })
}

/// The `otel` section of `/api/metrics`.
pub fn metrics_json(state: &SharedState) -> Value {
    let o = &state.otlp;
    let m = o.mapper.counters();
    let models: serde_json::Map<String, Value> = m
        .usage
        .iter()
        .map(|(name, c)| {
            (
                name.to_owned(),
                json!({
                    "input_tokens": c.input_tokens.round() as u64,
                    "output_tokens": c.output_tokens.round() as u64,
                    "cache_read_tokens": c.cache_read_tokens.round() as u64,
                    "cache_creation_tokens": c.cache_creation_tokens.round() as u64,
                    "cost_usd": c.cost_usd,
                    "data_points": c.data_points,
                }),
            )
        })
        .collect();
    json!({
        "requests": {
            "http": o.counters.http_requests.load(Ordering::Relaxed),
            "grpc": o.counters.grpc_requests.load(Ordering::Relaxed),
            "refused_bodies": o.counters.refused_bodies.load(Ordering::Relaxed),
            "throttled": o.counters.throttled.load(Ordering::Relaxed),
        },
        "received": m.stats,
        "models": models,
        "unpriced_models": m.unpriced,
        "prices_date": o.mapper.prices().table_date(),
        "grpc": grpc_json(&o.grpc),
    })
}

/// The state of OTLP/gRPC as JSON (for `/health` and `/api/metrics`).
pub fn grpc_json(g: &GrpcStatus) -> Value {
    match g {
        GrpcStatus::Disabled => json!({"status": "off"}),
        GrpcStatus::Listening(a) => json!({"status": "ok", "addr": a.to_string()}),
        GrpcStatus::PortTaken { port, error } => json!({
            "status": "degraded",
            "port": port,
            "error": error,
        }),
    }
}

/// The `/health` reason, when OTLP/gRPC could not start.
pub fn health_reason(g: &GrpcStatus, http_addr: std::net::SocketAddr) -> Option<String> {
    match g {
        GrpcStatus::PortTaken { port, error } => Some(format!(
            "otlp grpc: port {port} is taken ({error}; another hub?): OTLP over gRPC is off, OTLP over HTTP works at http://{http_addr}/v1/traces, /v1/logs, /v1/metrics"
        )),
        _ => None,
    }
}
