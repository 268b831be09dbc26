//! The hub: `agentpulse serve`. One axum server in front of the pipeline.
//!
//! | path                          | what                                              |
//! |-------------------------------|---------------------------------------------------|
//! | `POST /events`                | ingest: object, array or NDJSON, gzip accepted    |
//! | `GET /ingest` (WebSocket)     | ingest over a kept-open connection, one ack each  |
//! | `POST /v1/traces`, `/v1/logs`, `/v1/metrics` | OpenTelemetry (OTLP/HTTP, protobuf or JSON): [`otlp`]; OTLP/gRPC on its own port |
//! | `GET /`, `/agent-events`, `/stream` (WebSocket) | the stream, `?since=&epoch=&mode=&types=&agent=&task_id=` |
//! | `GET /` (plain)               | the dashboard page                                |
//! | `GET /api/events`             | retained events as JSON                           |
//! | `GET /api/tasks/{id}`         | one task: events, state, totals, spans ([`timeline`]) |
//! | `POST /api/hitl/{task_id}/resolve`, `GET /api/hitl/{task_id}?wait=` | answering an escalation ([`hitl`]) |
//! | `GET /api/metrics`            | KPIs and counters                                 |
//! | `GET /metrics`                | Prometheus text exposition                        |
//! | `GET /health`                 | component status                                  |
//!
//! Where events come in: [`ingest`]. Where they go out: [`stream`].
//! How connections are accepted (the cap, timeouts, TLS): [`server`].
//! Shutdown: a cancellation token stops accepting, every stream client gets
//! `service_shutdown` and a close frame, tracked tasks are awaited (bounded),
//! then the pipeline is stopped, which flushes the log.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::emitter::{Emitter, EmitterBuilder, EmitterError, StartReport};
use crate::sinks::jsonl::JsonlConfig;
use crate::sinks::redis_metrics::{Flusher, Increments, RedisMetricsConfig, StoreStats};

pub mod api;
pub mod auth;
pub mod hitl;
pub mod ingest;
pub mod otlp;
pub mod prometheus;
pub mod server;
pub mod stream;
pub mod task_index;
pub mod timeline;
pub mod tokens;

#[cfg(test)]
mod test_router;

use stream::ring::{Retained, RingTap};

/// Settings of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Address to listen on (default 127.0.0.1).
    pub bind: IpAddr,
    /// Port (default 3010; 0 picks a free one).
    pub port: u16,
    /// The tokens and their roles (none: everything open).
    pub tokens: tokens::Tokens,
    /// Browser origins allowed to write and open WebSockets, besides the hub's own
    /// and localhost.
    pub allowed_origins: Vec<String>,
    /// Host names the hub answers to besides IP addresses, loopback names
    /// and the machine's own name (`*`: any); see [`auth`].
    pub allowed_hosts: Vec<String>,
    /// Events kept in memory for resume and `/api/events`.
    pub ring_capacity: usize,
    /// Newest events whose task ids are indexed for `/api/tasks/{id}`.
    pub task_index_events: u64,
    /// How far (bytes) a live-mode stream client may fall behind before it
    /// is sent a `stream_gap` and moved to the live edge (lossless clients
    /// are served from the log instead).
    pub client_queue_bytes: u64,
    /// Interval of server pings; clients silent for two are dropped.
    pub ping_interval: Duration,
    /// Most simultaneous WebSocket connections.
    pub max_connections: usize,
    /// Most simultaneous connections of any kind (HTTP and WebSocket); see
    /// [`server`].
    pub max_total_connections: usize,
    /// How long a request's head may take to arrive (from its first byte;
    /// for a new connection, from accept, the TLS handshake included).
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// HTTPS and WSS with this configuration (`None`: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest request body (after decompression).
    pub max_body_bytes: usize,
    /// Largest single event.
    pub max_event_bytes: usize,
    /// Most events in one request, WebSocket message or Redis message.
    pub max_events_per_request: usize,
    /// How long a client may take to send a request's body.
    pub body_timeout: Duration,
    /// Redis for the `agent-events` bridge.
    pub redis_url: Option<String>,
    /// Redis bucket metrics (usually the same URL).
    pub redis_metrics: Option<RedisMetricsConfig>,
    /// The log, for resuming from ids older than the ring.
    pub log: Option<JsonlConfig>,
    /// How long shutdown waits for clients before closing anyway.
    pub shutdown_grace: Duration,
    /// OTLP/gRPC's port (`None`: off; `serve` asks for 4317).
    pub otlp_grpc: Option<otlp::GrpcListen>,
    /// A cluster joined ([`crate::cluster`]): ids from its Redis, events
    /// from its shared stream.
    pub cluster: Option<crate::cluster::Cluster>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 3010,
            tokens: tokens::Tokens::none(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            ring_capacity: 100_000,
            task_index_events: task_index::DEFAULT_WINDOW,
            client_queue_bytes: 8 * 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            max_connections: 10_000,
            max_total_connections: server::DEFAULT_MAX_TOTAL_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            tls: None,
            max_body_bytes: 16 * 1024 * 1024,
            max_event_bytes: 64 * 1024,
            max_events_per_request: ingest::body::DEFAULT_MAX_EVENTS,
            body_timeout: Duration::from_secs(60),
            redis_url: None,
            redis_metrics: None,
            log: Some(JsonlConfig::default()),
            shutdown_grace: Duration::from_secs(3),
            otlp_grpc: None,
            cluster: None,
        }
    }
}

/// Why the hub could not run.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The pipeline could not start.
    #[error(transparent)]
    Emitter(#[from] EmitterError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
    /// The price table or the configuration's `prices:` is wrong.
    #[error(transparent)]
    Prices(#[from] crate::otel::prices::PriceTableError),
}

/// Counters of the hub itself (the pipeline has its own).
#[derive(Debug, Default)]
pub struct HubCounters {
    /// WebSocket connections open now (stream and ingest).
    pub connections: AtomicUsize,
    /// Stream clients open now.
    pub stream_clients: AtomicUsize,
    /// Connections refused (limit, origin, token).
    pub refused: AtomicU64,
    /// Connections open now, of any kind (HTTP and WebSocket).
    pub tcp_connections: AtomicUsize,
    /// Connections refused at accept: the total cap was reached.
    pub connections_over_limit: AtomicU64,
    /// Connections closed because a request's head (or the TLS handshake)
    /// did not arrive within the header timeout.
    pub header_timeouts: AtomicU64,
    /// Kept-alive connections closed after the idle timeout.
    pub idle_closed: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_handshake_failures: AtomicU64,
    /// Gap notices sent to slow stream clients.
    pub slow_consumer_gaps: AtomicU64,
    /// Stream clients dropped (silent past two pings, or stuck sending).
    pub dropped_clients: AtomicU64,
    /// Of those, the ones whose socket accepted nothing (stuck).
    pub stuck_clients: AtomicU64,
    /// Messages sent to stream clients.
    pub messages_out: AtomicU64,
    /// Of those, the ones read back from the log (readers behind the ring).
    pub messages_from_log: AtomicU64,
    /// Ingest requests and messages.
    pub ingest_requests: AtomicU64,
    /// Events refused at ingest (malformed or invalid).
    pub ingest_rejected: AtomicU64,
    /// Ingest requests answered 503 (the log cannot take their events).
    pub ingest_unavailable: AtomicU64,
    /// Whether the Redis bridge is connected (when configured).
    pub redis_up: AtomicBool,
    /// Messages taken from the Redis channel.
    pub redis_messages: AtomicU64,
    /// Redis connection failures.
    pub redis_errors: AtomicU64,
    /// Redis messages refused whole (over the body or event-count limit).
    pub redis_refused: AtomicU64,
}

/// What every handler shares.
pub struct HubState {
    /// The pipeline.
    pub emitter: Emitter,
    /// Retained events and the wake-up channel of stream clients.
    pub ring: Arc<Retained>,
    /// Settings.
    pub config: HubConfig,
    /// Cancelled when the hub shuts down.
    pub shutdown: CancellationToken,
    /// Long-lived tasks (WebSocket clients, bridges) awaited at shutdown.
    pub tasks: TaskTracker,
    /// Counters.
    pub counters: HubCounters,
    /// When the hub started.
    pub started: Instant,
    /// The address actually bound.
    pub addr: SocketAddr,
    /// The Redis bucket store, when configured.
    pub store: Option<StoreHandle>,
    /// The stream epoch: which event history this hub serves.
    pub epoch: String,
    /// Losses acknowledged with `POST /api/health/acknowledge`.
    pub acknowledged: std::sync::Mutex<api::Losses>,
    /// OpenTelemetry in: the mapper, OTLP/gRPC's state, counters.
    pub otlp: otlp::OtlpState,
    /// Task id → event ids of the last million events (`/api/tasks/{id}`).
    pub task_index: Arc<task_index::TaskIndex>,
    /// The HITL queue: open escalations and their answers.
    pub hitl: Arc<hitl::HitlBook>,
}

/// The hub's view of the Redis bucket store.
pub struct StoreHandle {
    /// The flusher's counters.
    pub stats: Arc<StoreStats>,
    /// Its settings.
    pub config: RedisMetricsConfig,
    /// A connection for reading series back, made on first use.
    pub reader: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
}

/// Shared hub state.
pub type SharedState = Arc<HubState>;

/// A started hub: its address and a handle to stop it.
pub struct RunningHub {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// What the pipeline recovered at start.
    pub start_report: StartReport,
    state: SharedState,
    server: tokio::task::JoinHandle<Result<(), HubError>>,
    /// Closes every connection still open once the grace has passed.
    hard_stop: CancellationToken,
    flusher: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl RunningHub {
    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Shuts down: clients get `service_shutdown`, the log is flushed.
    pub async fn shutdown(self) -> Result<(), HubError> {
        self.state.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the hub has shut down (after its token is cancelled).
    /// Fails with the server's error, or else with the pipeline's stop
    /// error (a dispatcher or sink thread that panicked).
    pub async fn wait(self) -> Result<(), HubError> {
        let state = self.state.clone();
        let grace = state.config.shutdown_grace;
        let mut server = self.server;
        let joined = |j: Result<Result<(), HubError>, tokio::task::JoinError>| match j {
            Ok(r) => r,
            Err(e) => Err(HubError::Serve(std::io::Error::other(e))),
        };
        // A graceful shutdown waits for every open connection, so one
        // client that sent half a request would hold the hub forever: once
        // shutdown starts, connections get the grace period and no more.
        let result = tokio::select! {
            j = &mut server => joined(j),
            () = async {
                state.shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("HTTP connections still open after the shutdown grace; closing them");
                self.hard_stop.cancel();
                match tokio::time::timeout(Duration::from_secs(1), &mut server).await {
                    Ok(j) => joined(j),
                    Err(_) => {
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        state.tasks.close();
        if tokio::time::timeout(state.config.shutdown_grace, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some clients did not close in time; closing anyway");
        }
        let emitter = state.emitter.clone();
        let stopped = match tokio::task::spawn_blocking(move || emitter.stop()).await {
            Ok(stopped) => stopped.map_err(HubError::from),
            Err(e) => Err(HubError::Serve(std::io::Error::other(e))),
        };
        // Only now are all increments in: the last flush comes after the
        // pipeline has stopped.
        if let Some((token, task)) = self.flusher {
            token.cancel();
            let limit = state.config.shutdown_grace + Duration::from_secs(5);
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::warn!("redis metrics: final flush did not finish in time");
            }
        }
        // The server's own failure comes first; a pipeline that panicked
        // fails an otherwise clean shutdown.
        result.and(stopped)
    }
}

/// Starts the pipeline (built from `builder`) and the server; returns once
/// it listens.
pub async fn start(
    config: HubConfig,
    builder: EmitterBuilder,
    shutdown: CancellationToken,
) -> Result<RunningHub, HubError> {
    let ring = Arc::new(Retained::new(config.ring_capacity, 0));
    let task_index = Arc::new(task_index::TaskIndex::new(config.task_index_events));
    let hitl = Arc::new(hitl::HitlBook::default());
    let mut builder =
        builder
            .tap(Box::new(RingTap(ring.clone())))
            .tap(Box::new(task_index::TaskTap {
                index: task_index.clone(),
                hitl: hitl.clone(),
            }));
    let mut flusher = None;
    if let Some(rc) = &config.redis_metrics {
        let increments = Increments::new(rc.flush_max_events);
        builder = builder.metrics_increments(increments.clone());
        flusher = Some(Flusher::new(rc.clone(), increments));
    }
    if let Some(cluster) = &config.cluster {
        if config.redis_metrics.is_some() {
            // Each event's increments by the hub that appended it: once.
            cluster.own.enable();
            let own = cluster.own.clone();
            builder = builder.metrics_increment_filter(Arc::new(move |id| own.take(id)));
        }
        let leader = cluster.status.clone();
        builder = builder.alerts_gate(Arc::new(move || {
            leader
                .alerts_leader
                .load(std::sync::atomic::Ordering::Relaxed)
        }));
        let outbox = crate::cluster::append::start(cluster);
        builder = builder.cluster(Box::new(outbox), cluster.epoch.clone());
    }
    let emitter = builder.build()?;
    let starter = emitter.clone();
    let start_report = tokio::task::spawn_blocking(move || starter.start())
        .await
        .map_err(|e| HubError::Serve(std::io::Error::other(e)))??;
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HubError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(HubError::Serve)?;
    let prices = crate::otel::Prices::new(&emitter.config().prices)?;
    let (grpc_listener, grpc) = match config.otlp_grpc {
        None | Some(otlp::GrpcListen { port: 0, .. }) => (None, otlp::GrpcStatus::Disabled),
        Some(g) => {
            let gaddr = SocketAddr::new(config.bind, g.port);
            match tokio::net::TcpListener::bind(gaddr).await {
                Ok(l) => {
                    let a = l.local_addr().map_err(HubError::Serve)?;
                    (Some(l), otlp::GrpcStatus::Listening(a))
                }
                // The default port may be another hub's: serve OTLP over
                // HTTP only, and say so.
                Err(e) if !g.explicit && e.kind() == std::io::ErrorKind::AddrInUse => (
                    None,
                    otlp::GrpcStatus::PortTaken {
                        port: g.port,
                        error: e.to_string(),
                    },
                ),
                Err(source) => {
                    return Err(HubError::Bind {
                        addr: gaddr,
                        source,
                    })
                }
            }
        }
    };
    let store = match (&flusher, &config.redis_metrics) {
        (Some(f), Some(rc)) => Some(StoreHandle {
            stats: f.stats(),
            config: rc.clone(),
            reader: tokio::sync::Mutex::new(None),
        }),
        _ => None,
    };
    let flusher = flusher.map(|f| {
        let token = CancellationToken::new();
        let task = tokio::spawn(f.run(token.clone()));
        (token, task)
    });
    let state = Arc::new(HubState {
        emitter,
        ring,
        config,
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
        counters: HubCounters::default(),
        started: Instant::now(),
        addr,
        store,
        epoch: start_report.epoch.clone(),
        acknowledged: std::sync::Mutex::new(api::Losses::default()),
        otlp: otlp::OtlpState::new(prices, grpc),
        task_index,
        hitl,
    });
    if let Some(l) = grpc_listener {
        state.tasks.spawn(otlp::grpc::serve(state.clone(), l));
    }
    if let Some(cluster) = state.config.cluster.clone() {
        // From the last id of this hub's log: a restart catches up.
        let last_id = start_report.next_id.saturating_sub(1);
        state.tasks.spawn(crate::cluster::lease::run(
            cluster.clone(),
            state.shutdown.clone(),
        ));
        state.tasks.spawn(crate::cluster::tail::run(
            cluster,
            state.emitter.clone(),
            last_id,
            state.shutdown.clone(),
        ));
    }
    if let Some(url) = state.config.redis_url.clone() {
        let st = state.clone();
        state.tasks.spawn(ingest::redis_bridge::run(st, url));
    }
    let app = api::router(state.clone());
    let hard_stop = CancellationToken::new();
    let server = tokio::spawn(server::serve(
        listener,
        app,
        state.clone(),
        hard_stop.clone(),
    ));
    Ok(RunningHub {
        addr,
        start_report,
        state,
        server,
        hard_stop,
        flusher,
    })
}

/// A JSON error response: `{"error": message}` with `status`.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

impl HubState {
    /// What one request, WebSocket message or Redis message may hold.
    pub fn body_limits(&self) -> ingest::body::BodyLimits {
        ingest::body::BodyLimits {
            max_event_bytes: self.config.max_event_bytes,
            max_events: self.config.max_events_per_request,
        }
    }

    /// `http` or `https`: how the hub is reached.
    pub fn scheme(&self) -> &'static str {
        if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Uptime in seconds.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
