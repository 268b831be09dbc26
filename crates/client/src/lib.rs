//! agentpulse-client, the Rust SDK: send events to a running hub from
//! another process, and read its live stream. A light crate: it builds on
//! `agentpulse-core` (the event model) and compiles none of the hub. The
//! `agentpulse` crate re-exports it as `agentpulse::client`.
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//!
//! let client = agentpulse_client::Client::connect("http://127.0.0.1:3010")?;
//! client.emit("agent_started", json!({
//!     "agent": "scribe", "task_id": "t_001",
//!     "model": "claude-sonnet-4.5", "tools": ["read", "write"],
//! }))?;
//! client.flush(Duration::from_secs(5)); // before exit: wait for the hub's answers
//! println!("{:?}", client.stats());
//! # Ok::<(), agentpulse_client::ClientError>(())
//! ```
//!
//! # Behaviour
//!
//! - **Never blocks the caller.** [`Client::emit`] checks the event type's
//!   spelling and that the payload is an object, stamps the time and an
//!   `event_id`, and appends to a bounded in-memory queue under a lock held
//!   for a few hundred nanoseconds. It works from any thread and from async
//!   code alike; the schema is checked by the hub.
//! - **Its own thread.** A background thread (`agentpulse-client`) runs a
//!   tokio current-thread runtime, so the client needs no runtime from the
//!   program and works the same in synchronous programs.
//! - **Transport.** Events go over the hub's `/ingest` WebSocket (one
//!   message per batch, a JSON array; the hub answers each message with
//!   `seq` and `status`); up to [`WS_WINDOW`] batches are in flight at once.
//!   When the WebSocket cannot be opened although the hub answers HTTP (a
//!   proxy without WebSocket support, a hub without `/ingest`), batches go
//!   to `POST /events` instead (gzipped from 64 KiB), and the WebSocket is
//!   tried again every 30 s.
//! - **Batches** of up to 500 events or 1 MiB, sent once the oldest queued
//!   event has waited 50 ms, or at once when a batch is full or on
//!   [`Client::flush`] / [`Client::close`].
//! - **At-least-once delivery.** Every event gets its `event_id` when it is
//!   emitted (a prefix unique to the client, then a counter in hex:
//!   `9f3c0e5a1b2d4c6e-1a`). A batch stays held until the hub answers it;
//!   when the connection breaks (or no answer comes within the request
//!   timeout), every unanswered batch is sent again after reconnecting, with
//!   the same `event_id`s: the hub keeps each event once and answers the
//!   re-sent copies as duplicates.
//! - **Reconnects** with exponential backoff (100 ms doubling up to 5 s,
//!   with jitter) for as long as it takes, or until [`Client::close`]'s
//!   deadline. Answers 408, 429 and 5xx are retried the same way.
//! - **Refusals are final.** Events the hub refuses (invalid: HTTP 207/422
//!   with per-event errors; or a whole batch refused with another 4xx such
//!   as 401 for a wrong token) are counted in [`ClientStats::rejected`],
//!   the error kept in [`ClientStats::last_error`] and logged through
//!   `tracing` (at most once every 10 s), and never sent again. A batch the
//!   hub finds too large (413) is split in halves first.
//! - **Bounded memory.** At most [`ClientBuilder::max_queue`] events
//!   (default 10,000) are held at once, counting the batches in flight;
//!   beyond that `emit` drops the new event, counts it
//!   ([`ClientStats::dropped`]) and returns [`ClientError::QueueFull`].
//!
//! Every event given to `emit` ends up in exactly one of `sent`,
//! `rejected`, `dropped`, `lost` (given up at `close`'s deadline), or is
//! still `queued`.
//!
//! Dropping the last clone of a [`Client`] closes it, waiting at most
//! [`ClientBuilder::close_on_drop`] (default 2 s) for undelivered events.
//!
//! # One line of setup for existing code
//!
//! With `AGENTPULSE_HUB_URL` set (and `AGENTPULSE_TOKEN` when the hub has
//! a token), the `agentpulse` crate's global `emit_event` / `get_emitter`
//! forward to that hub through a `Client` (its `emitter` module's
//! `ForwardSink`); call `agentpulse::get_emitter().stop()` before exit as
//! usual.
//!
//! `https://` hubs are reached over TLS (the ingest WebSocket becomes
//! `wss://`), trusting the system's roots, or the CA of
//! [`ClientBuilder::ca_cert`] / `AGENTPULSE_CA_CERT`.
//!
//! To read a hub's stream (every event once, in id order, across
//! reconnects and hub restarts), see [`Subscription`].

#![deny(missing_docs)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use agentpulse_core::event::{
    is_valid_type_name, kind_of, NewEvent, MAX_EVENT_ID_LEN, TYPE_NAME_PATTERN,
};

pub mod subscription;
pub mod tls;
mod worker;

pub use subscription::{Delivery, StreamEvent, Subscription, SubscriptionBuilder};

/// Environment variable naming the hub's base URL (`http://host:port`).
pub const ENV_HUB_URL: &str = "AGENTPULSE_HUB_URL";
/// Environment variable holding the hub's bearer token (unset or empty: none).
pub const ENV_TOKEN: &str = "AGENTPULSE_TOKEN";
/// Environment variable naming a PEM file of certificates to trust for an
/// `https://` hub, besides the system's.
pub const ENV_CA_CERT: &str = "AGENTPULSE_CA_CERT";
/// Default bound on the events held at once.
pub const DEFAULT_MAX_QUEUE: usize = 10_000;
/// Default largest batch, in events.
pub const DEFAULT_MAX_BATCH: usize = 500;
/// Default largest batch, in bytes of JSON.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1 << 20;
/// Default longest wait of a queued event before its batch is sent.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Batches sent on the WebSocket before waiting for the first answer.
pub const WS_WINDOW: usize = 4;

/// A human's answer to an escalation ([`Client::wait_for_resolution`]),
/// as the hub's `hitl_resolved` event carries it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct HitlResolution {
    /// `resolved`, `retry` or `abandoned`.
    pub resolution: String,
    /// The note the human wrote (may be empty).
    pub note: String,
    /// Who answered.
    pub by: String,
    /// When (Unix seconds).
    pub timestamp: f64,
    /// The `hitl_resolved` event's id.
    pub id: u64,
}

/// `s` for a URL path segment: unreserved characters as they are, every
/// other byte `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why an event was not queued, or the client could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The hub URL is not `http://HOST[:PORT][/PATH]` (or `HOST[:PORT]`).
    #[error("invalid hub URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The event is malformed (checked cheaply on the caller's side: the
    /// type's spelling, the payload being an object, the `event_id`'s length,
    /// the timestamp).
    #[error("{event_type}.{field}: {message}")]
    Invalid {
        /// The event's type as given.
        event_type: String,
        /// The faulty part: `event_type`, `payload`, `event_id`, `timestamp`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The queue holds its maximum; the event was dropped and counted.
    #[error("{event_type}: dropped, the client's queue is full ({max} events held)")]
    QueueFull {
        /// The dropped event's type.
        event_type: String,
        /// The bound.
        max: usize,
    },
    /// The client was closed; the event was dropped and counted.
    #[error("{event_type}: dropped, the client is closed")]
    Closed {
        /// The dropped event's type.
        event_type: String,
    },
    /// The background thread could not be started.
    #[error("cannot start the client's thread: {0}")]
    Thread(String),
    /// A query to the hub failed ([`Client::get_metrics`]).
    #[error("{0}")]
    Query(String),
    /// The TLS settings cannot be used (e.g. an unreadable `--ca-cert`).
    #[error("TLS: {0}")]
    Tls(String),
}

/// Counters of one client, since its creation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    /// Events the hub stored, or recognised as already stored.
    pub sent: u64,
    /// Of `sent`, those the hub answered as duplicates of an earlier send.
    pub duplicates: u64,
    /// Events the hub refused (invalid, or a batch refused with a 4xx such
    /// as 401); never sent again.
    pub rejected: u64,
    /// Events not queued: the queue was full or the client closed.
    pub dropped: u64,
    /// Events given up: still undelivered at `close`'s deadline.
    pub lost: u64,
    /// Times a batch was sent again after a failure.
    pub retries: u64,
    /// Events held now: waiting in the queue or in a batch in flight.
    pub queued: u64,
    /// The largest number of events held at once so far (never above the
    /// bound).
    pub peak_queued: u64,
    /// The transport in use: `websocket`, `http`, or `None` while
    /// disconnected.
    pub transport: Option<&'static str>,
    /// The last delivery problem seen, if any.
    pub last_error: Option<String>,
}

/// Which transport the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The `/ingest` WebSocket, falling back to `POST /events` when it
    /// cannot be opened (default).
    #[default]
    Auto,
    /// Only the WebSocket.
    WebSocket,
    /// Only `POST /events`.
    Http,
}

/// Settings of a [`Client`]; see [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    max_queue: usize,
    max_batch: usize,
    max_batch_bytes: usize,
    flush_interval: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    request_timeout: Duration,
    drop_timeout: Duration,
    transport: Transport,
    ca_cert: Option<std::path::PathBuf>,
}

impl ClientBuilder {
    /// For an `https://` hub: a PEM file of certificates to trust besides
    /// the system's (which honour `SSL_CERT_FILE`), e.g. a self-made one's.
    pub fn ca_cert(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.ca_cert = path;
        self
    }

    /// Sends `Authorization: Bearer <token>` (an empty token sends none).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let t = token.into();
        self.token = (!t.trim().is_empty()).then(|| t.trim().to_string());
        self
    }

    /// Holds at most `n` events at once (default 10,000), counting the
    /// batches in flight.
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n.max(1);
        self
    }

    /// Largest batch in events (default 500).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Largest batch in bytes of JSON (default 1 MiB); a single larger event
    /// is sent alone.
    pub fn max_batch_bytes(mut self, n: usize) -> Self {
        self.max_batch_bytes = n.max(1);
        self
    }

    /// Longest wait of a queued event before its batch goes (default 50 ms).
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }

    /// Backoff between attempts: `initial` (at least 1 ms) doubling up to
    /// `max` (defaults 100 ms and 5 s), each wait with jitter (between half
    /// and all of it).
    pub fn retry(mut self, initial: Duration, max: Duration) -> Self {
        // Never zero: a refused connection must not become a busy loop.
        self.retry_initial = initial.max(Duration::from_millis(1));
        self.retry_max = max.max(self.retry_initial);
        self
    }

    /// How long a connection attempt or an answer may take (default 10 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// How long dropping the last handle waits for undelivered events
    /// (default 2 s; zero: not at all).
    pub fn close_on_drop(mut self, d: Duration) -> Self {
        self.drop_timeout = d;
        self
    }

    /// The transport (default [`Transport::Auto`]).
    pub fn transport(mut self, t: Transport) -> Self {
        self.transport = t;
        self
    }

    /// Checks the URL and starts the background thread. Does not wait for
    /// the hub: events queue until it can be reached.
    pub fn build(self) -> Result<Client, ClientError> {
        let endpoints = Endpoints::parse(&self.url)?;
        // Read once: the system's certificate store takes milliseconds.
        let tls = if endpoints.tls {
            Some(tls::client_config(self.ca_cert.as_deref())?)
        } else {
            None
        };
        let mut agent = ureq::AgentBuilder::new();
        if let Some(config) = &tls {
            agent = agent.tls_config(config.clone());
        }
        let settings = Settings {
            endpoints,
            tls,
            agent: agent
                .timeout(self.request_timeout)
                .user_agent(worker::USER_AGENT)
                .build(),
            token: self.token,
            max_queue: self.max_queue,
            max_batch: self.max_batch,
            max_batch_bytes: self.max_batch_bytes,
            flush_interval: self.flush_interval,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            request_timeout: self.request_timeout,
            transport: self.transport,
        };
        let shared = Arc::new(Shared {
            settings,
            state: Mutex::new(State {
                worker_alive: true,
                ..State::default()
            }),
            progress: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            kick: tokio::sync::Notify::new(),
            prefix: format!("{:016x}-", random_u64()),
            seq: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("agentpulse-client".into())
            .spawn(move || worker::run(thread_shared))
            .map_err(|e| ClientError::Thread(e.to_string()))?;
        Ok(Client {
            handle: Arc::new(Handle {
                shared,
                thread: Mutex::new(Some(thread)),
                drop_timeout: self.drop_timeout,
            }),
        })
    }
}

/// Sends events to a hub from any thread, without blocking; see the
/// [module documentation](self). Cheap to clone: clones share the queue and
/// the connection.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("hub", &self.handle.shared.settings.endpoints.base)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Handle {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    drop_timeout: Duration,
}

impl Drop for Handle {
    fn drop(&mut self) {
        close(&self.shared, &self.thread, self.drop_timeout);
    }
}

impl Client {
    /// A client of the hub at `url` (`http://host:port`) with the defaults.
    pub fn connect(url: &str) -> Result<Client, ClientError> {
        Client::builder(url).build()
    }

    /// Settings for a client of the hub at `url`.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_string(),
            token: None,
            max_queue: DEFAULT_MAX_QUEUE,
            max_batch: DEFAULT_MAX_BATCH,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            drop_timeout: Duration::from_secs(2),
            transport: Transport::Auto,
            ca_cert: None,
        }
    }

    /// The client `AGENTPULSE_HUB_URL`, `AGENTPULSE_TOKEN` and
    /// `AGENTPULSE_CA_CERT` describe, or `None` when `AGENTPULSE_HUB_URL` is
    /// unset or empty.
    pub fn from_env() -> Option<Result<Client, ClientError>> {
        let url = std::env::var(ENV_HUB_URL).ok()?;
        let url = url.trim();
        if url.is_empty() {
            return None;
        }
        let mut b = Client::builder(url);
        if let Ok(t) = std::env::var(ENV_TOKEN) {
            b = b.token(t);
        }
        if let Some(ca) = std::env::var_os(ENV_CA_CERT).filter(|v| !v.is_empty()) {
            b = b.ca_cert(Some(ca.into()));
        }
        Some(b.build())
    }

    /// The hub's base URL.
    pub fn hub_url(&self) -> &str {
        &self.handle.shared.settings.endpoints.base
    }

    /// Queues an event of `event_type` with `payload` (a JSON object),
    /// stamped now with a fresh `event_id`. Never waits.
    pub fn emit(&self, event_type: &str, payload: Value) -> Result<(), ClientError> {
        let Value::Object(payload) = payload else {
            return Err(ClientError::Invalid {
                event_type: event_type.to_string(),
                field: "payload",
                message: format!("expected a JSON object, got {}", kind_of(&payload)),
            });
        };
        self.push(event_type, payload, None, None).map(drop)
    }

    /// Queues a prepared event, keeping its timestamp and `event_id` when
    /// it has them (give your own `event_id` to make re-emitting the same
    /// event idempotent at the hub). Returns the `event_id`. Never waits.
    pub fn emit_event(&self, event: NewEvent) -> Result<String, ClientError> {
        self.push(
            &event.event_type,
            event.payload,
            event.timestamp,
            event.event_id,
        )
    }

    /// Emits a `critic_decision` event (`{"rejected": bool}`), counted by
    /// `critic_rejection_rate`.
    pub fn record_critic_decision(&self, rejected: bool) -> Result<(), ClientError> {
        let mut payload = Map::new();
        payload.insert("rejected".into(), Value::Bool(rejected));
        self.push(
            agentpulse_core::metrics::CRITIC_DECISION,
            payload,
            None,
            None,
        )
        .map(drop)
    }

    fn push(
        &self,
        event_type: &str,
        payload: Map<String, Value>,
        timestamp: Option<f64>,
        event_id: Option<Box<str>>,
    ) -> Result<String, ClientError> {
        let invalid = |field, message: String| ClientError::Invalid {
            event_type: event_type.to_string(),
            field,
            message,
        };
        if !is_valid_type_name(event_type) {
            return Err(invalid(
                "event_type",
                format!("expected a name matching {TYPE_NAME_PATTERN}"),
            ));
        }
        if let Some(id) = &event_id {
            if id.is_empty() || id.len() > MAX_EVENT_ID_LEN {
                return Err(invalid(
                    "event_id",
                    format!("expected 1 to {MAX_EVENT_ID_LEN} bytes, got {}", id.len()),
                ));
            }
        }
        let timestamp = match timestamp {
            Some(ts) if !(ts.is_finite() && ts >= 0.0) => {
                return Err(invalid(
                    "timestamp",
                    format!("expected a finite number >= 0, got {ts}"),
                ))
            }
            Some(ts) => ts,
            None => agentpulse_core::event::now_unix(),
        };
        let shared = &self.handle.shared;
        let event_id: String = match event_id {
            Some(id) => id.into(),
            None => {
                let n = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{}{n:x}", shared.prefix)
            }
        };
        let max = shared.settings.max_queue;
        let mut st = shared.lock();
        if st.closed || st.held() >= max as u64 {
            st.dropped += 1;
            let closed = st.closed;
            let warn = st.drop_warning.ready();
            let dropped = st.dropped;
            drop(st);
            if warn {
                tracing::warn!(
                    "agentpulse client: dropping events ({}); {dropped} dropped so far",
                    if closed {
                        "the client is closed".to_string()
                    } else {
                        format!("the queue is full: {max} events held")
                    }
                );
            }
            return Err(if closed {
                ClientError::Closed {
                    event_type: event_type.to_string(),
                }
            } else {
                ClientError::QueueFull {
                    event_type: event_type.to_string(),
                    max,
                }
            });
        }
        if st.queue.is_empty() {
            st.first_at = Some(Instant::now());
        }
        st.queue.push_back(Item {
            event_type: event_type.into(),
            timestamp,
            event_id: event_id.clone(),
            payload,
        });
        st.enqueued += 1;
        st.peak = st.peak.max(st.held());
        let len = st.queue.len();
        drop(st);
        if len == 1 || len == shared.settings.max_batch {
            shared.wake.notify_one();
        }
        Ok(event_id)
    }

    /// Sends what is queued and waits, at most `timeout`, until the hub has
    /// answered every event emitted before the call (stored it, or refused
    /// it). Returns whether it has.
    pub fn flush(&self, timeout: Duration) -> bool {
        flush(&self.handle.shared, timeout)
    }

    /// Stops taking events, gives the queued ones at most `timeout` to reach
    /// the hub, then stops the thread; what is left is counted as `lost`.
    /// Returns whether everything emitted reached the hub (answered). Later
    /// emits fail with [`ClientError::Closed`]. Safe to call more than once.
    pub fn close(&self, timeout: Duration) -> bool {
        close(&self.handle.shared, &self.handle.thread, timeout)
    }

    /// The hub's `GET /api/metrics` document, with the six KPIs of its
    /// rolling `window` copied to the top level (`doc["validation_pass_rate"]`),
    /// as the Python SDK's `get_metrics`. This client's queued events are
    /// flushed first (at most `timeout`), so the metrics include them once
    /// the hub's engine has taken them (a few milliseconds after the hub
    /// acknowledged them). Blocks the calling thread.
    pub fn get_metrics(&self, timeout: Duration) -> Result<Value, ClientError> {
        self.flush(timeout);
        let settings = &self.handle.shared.settings;
        let url = format!("{}/api/metrics", settings.endpoints.base);
        let req = settings
            .agent
            .get(&url)
            .timeout(timeout.max(Duration::from_millis(100)));
        let mut doc = settings.query(req, &url)?;
        let window = doc["window"].clone();
        if !window.is_object() {
            return Err(ClientError::Query(format!("GET {url}: no `window` object")));
        }
        for name in agentpulse_core::metrics::KPI_NAMES {
            doc[name] = window[name].clone();
        }
        Ok(doc)
    }

    /// Waits for a human's answer to the escalation of `task_id` (the
    /// hub's `GET /api/hitl/{task_id}?wait=`, long polls of at most 30 s
    /// until `timeout`): `Some` once it is resolved, `None` if it is still
    /// open when `timeout` is over. This client's queued events (its
    /// `hitl_escalated`) are flushed first. An error when the hub knows no
    /// escalation of the task or cannot be asked. Blocks the calling thread.
    pub fn wait_for_resolution(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<HitlResolution>, ClientError> {
        let deadline = std::time::Instant::now() + timeout;
        self.flush(timeout);
        let settings = &self.handle.shared.settings;
        let url = format!(
            "{}/api/hitl/{}",
            settings.endpoints.base,
            percent_encode(task_id)
        );
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let wait = left.min(Duration::from_secs(30));
            let req = settings
                .agent
                .get(&url)
                .query("wait", &format!("{:.3}", wait.as_secs_f64()))
                .timeout(wait + Duration::from_secs(10));
            let doc = settings.query(req, &url)?;
            if doc["state"] == "resolved" {
                return serde_json::from_value(doc["resolution"].clone())
                    .map(Some)
                    .map_err(|e| ClientError::Query(format!("GET {url}: resolution: {e}")));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Whether [`Client::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.handle.shared.lock().closed
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        let st = self.handle.shared.lock();
        ClientStats {
            sent: st.sent,
            duplicates: st.duplicates,
            rejected: st.rejected,
            dropped: st.dropped,
            lost: st.lost,
            retries: st.retries,
            queued: st.held(),
            peak_queued: st.peak,
            transport: st.transport,
            last_error: st.last_error.clone(),
        }
    }
}

fn flush(shared: &Shared, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut st = shared.lock();
    let target = st.enqueued;
    if st.done >= target {
        return true;
    }
    st.flush_target = st.flush_target.max(target);
    drop(st);
    shared.kick.notify_one();
    shared.wake.notify_one();
    let mut st = shared.lock();
    while st.done < target && st.worker_alive {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        st = shared
            .progress
            .wait_timeout(st, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    st.done >= target
}

fn close(shared: &Shared, thread: &Mutex<Option<JoinHandle<()>>>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    {
        let mut st = shared.lock();
        st.closed = true;
        if !st.stopping {
            st.stopping = true;
            st.deadline = Some(deadline);
        }
    }
    shared.kick.notify_one();
    shared.wake.notify_one();
    // The worker gives up at the deadline and then exits: wait for that.
    let mut st = shared.lock();
    while st.worker_alive {
        // A little past the deadline: the worker needs a moment to count
        // what it abandons.
        let left =
            (deadline + Duration::from_millis(500)).saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        st = shared
            .progress
            .wait_timeout(st, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    let alive = st.worker_alive;
    let delivered = st.done >= st.enqueued && st.lost == 0;
    drop(st);
    if !alive {
        let handle = thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
    delivered
}

/// The hub's addresses derived from its base URL.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    /// `http(s)://host:port[/path]`, without a trailing `/`.
    pub base: String,
    /// Whether the hub is reached over TLS (`https://`, `wss://`).
    pub tls: bool,
    /// `ws(s)://host:port[/path]/ingest`.
    pub ws: String,
    /// `http(s)://host:port[/path]/events`.
    pub events: String,
}

impl Endpoints {
    pub(crate) fn parse(url: &str) -> Result<Endpoints, ClientError> {
        let bad = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = url.trim().trim_end_matches('/');
        // A bare `HOST:PORT` means http.
        let owned;
        let trimmed = if trimmed.contains("://") || trimmed.is_empty() {
            trimmed
        } else {
            owned = format!("http://{trimmed}");
            owned.as_str()
        };
        let (tls, rest) = if let Some(r) = trimmed.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = trimmed.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("expected http(s)://HOST[:PORT]"));
        };
        let host_port = rest.split('/').next().unwrap_or("");
        if host_port.is_empty()
            || host_port.starts_with(':')
            || host_port.contains(['?', '#', '@', ' '])
        {
            return Err(bad("expected http(s)://HOST[:PORT]"));
        }
        if let Some((_, port)) = host_port.rsplit_once(':') {
            if !host_port.ends_with(']') && port.parse::<u16>().is_err() {
                return Err(bad("the port is not a number from 0 to 65535"));
            }
        }
        Ok(Endpoints {
            base: trimmed.to_string(),
            tls,
            ws: format!("{}://{rest}/ingest", if tls { "wss" } else { "ws" }),
            events: format!("{trimmed}/events"),
        })
    }
}

pub(crate) struct Settings {
    pub endpoints: Endpoints,
    /// For an `https://` hub: whom to trust (also the WebSocket's).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// For every HTTP request of the client (its TLS settings above).
    pub agent: ureq::Agent,
    pub token: Option<String>,
    pub max_queue: usize,
    pub max_batch: usize,
    pub max_batch_bytes: usize,
    pub flush_interval: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub request_timeout: Duration,
    pub transport: Transport,
}

impl Settings {
    /// Sends `req` (a GET of `url`) with the token; its JSON answer, or an
    /// error naming the URL and the status.
    fn query(&self, mut req: ureq::Request, url: &str) -> Result<Value, ClientError> {
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let text = match req.call() {
            Ok(r) => r.into_string(),
            Err(ureq::Error::Status(code, r)) => {
                let body = r.into_string().unwrap_or_default();
                return Err(ClientError::Query(format!(
                    "GET {url}: HTTP {code}: {body:.200}"
                )));
            }
            Err(e) => return Err(ClientError::Query(format!("GET {url}: {e}"))),
        }
        .map_err(|e| ClientError::Query(format!("GET {url}: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Query(format!("GET {url}: not JSON: {e}")))
    }
}

/// State shared by the callers and the worker.
pub(crate) struct Shared {
    pub settings: Settings,
    pub state: Mutex<State>,
    /// Signalled when `done` grows and when the worker exits.
    pub progress: Condvar,
    /// New events (the queue was empty, or holds a full batch).
    pub wake: tokio::sync::Notify,
    /// A flush or close: cut waits short.
    pub kick: tokio::sync::Notify,
    prefix: String,
    seq: AtomicU64,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One queued event.
pub(crate) struct Item {
    pub event_type: Box<str>,
    pub timestamp: f64,
    pub event_id: String,
    pub payload: Map<String, Value>,
}

#[derive(Default)]
pub(crate) struct State {
    pub queue: VecDeque<Item>,
    /// When the oldest event now in `queue` was queued.
    pub first_at: Option<Instant>,
    /// Events accepted by `emit` / resolved by the worker (sent, rejected,
    /// lost): their difference is what is held.
    pub enqueued: u64,
    pub done: u64,
    pub flush_target: u64,
    pub closed: bool,
    pub stopping: bool,
    pub deadline: Option<Instant>,
    pub worker_alive: bool,
    pub sent: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub lost: u64,
    pub retries: u64,
    pub peak: u64,
    pub transport: Option<&'static str>,
    pub last_error: Option<String>,
    pub drop_warning: Throttle,
}

impl State {
    pub(crate) fn held(&self) -> u64 {
        self.enqueued - self.done
    }

    /// A flush or a close is waiting: send without lingering.
    pub(crate) fn urgent(&self) -> bool {
        self.stopping || self.flush_target > self.done
    }
}

/// Lets a warning through at most once every 10 s.
#[derive(Default)]
pub(crate) struct Throttle(Option<Instant>);

impl Throttle {
    pub(crate) fn ready(&mut self) -> bool {
        let now = Instant::now();
        match self.0 {
            Some(t) if now.duration_since(t) < Duration::from_secs(10) => false,
            _ => {
                self.0 = Some(now);
                true
            }
        }
    }
}

/// 64 random bits without a random-number crate: std's `RandomState` is
/// seeded from the operating system's randomness.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_are_checked_and_endpoints_derived() {
        let e = Endpoints::parse("http://127.0.0.1:3010/").unwrap();
        assert_eq!(e.base, "http://127.0.0.1:3010");
        assert_eq!(e.ws, "ws://127.0.0.1:3010/ingest");
        assert_eq!(e.events, "http://127.0.0.1:3010/events");
        let e = Endpoints::parse("http://hub.local/agentpulse").unwrap();
        assert_eq!(e.ws, "ws://hub.local/agentpulse/ingest");
        assert_eq!(
            Endpoints::parse("127.0.0.1:3010").unwrap().base,
            "http://127.0.0.1:3010"
        );
        let e = Endpoints::parse("https://hub.example:8443/ap").unwrap();
        assert!(e.tls);
        assert_eq!(e.ws, "wss://hub.example:8443/ap/ingest");
        assert_eq!(e.events, "https://hub.example:8443/ap/events");
        for bad in [
            "",
            ":3010",
            "https://",
            "http://",
            "http://h:port",
            "ftp://x",
        ] {
            assert!(Endpoints::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_names_follow_the_hubs_rule() {
        assert!(is_valid_type_name("agent_completed"));
        assert!(is_valid_type_name("a.b-c_1"));
        assert!(!is_valid_type_name(""));
        assert!(!is_valid_type_name("Agent"));
        assert!(!is_valid_type_name("1x"));
        assert!(!is_valid_type_name(&"a".repeat(65)));
    }

    #[test]
    fn emit_checks_cheaply_and_numbers_events() {
        // No hub on this port: nothing is delivered, but emit works.
        let c = Client::builder("http://127.0.0.1:9")
            .close_on_drop(Duration::ZERO)
            .build()
            .unwrap();
        assert!(matches!(
            c.emit("Bad Type", json!({})),
            Err(ClientError::Invalid {
                field: "event_type",
                ..
            })
        ));
        assert!(matches!(
            c.emit("note", json!([1])),
            Err(ClientError::Invalid {
                field: "payload",
                ..
            })
        ));
        let ev = NewEvent::new("note", Map::new()).with_timestamp(f64::NAN);
        assert!(c.emit_event(ev).is_err());
        let a = c.emit_event(NewEvent::new("note", Map::new())).unwrap();
        let b = c.emit_event(NewEvent::new("note", Map::new())).unwrap();
        let (pa, na) = a.rsplit_once('-').unwrap();
        let (pb, nb) = b.rsplit_once('-').unwrap();
        assert_eq!(pa, pb);
        assert_eq!(pa.len(), 16);
        assert_eq!((na, nb), ("1", "2"));
        let own = NewEvent::new("note", Map::new()).with_event_id("mine-1");
        assert_eq!(c.emit_event(own).unwrap(), "mine-1");
        assert_eq!(c.stats().queued, 3);
        assert!(!c.close(Duration::ZERO));
        assert_eq!(c.stats().lost, 3);
        assert!(matches!(
            c.emit("note", json!({})),
            Err(ClientError::Closed { .. })
        ));
        assert_eq!(c.stats().dropped, 1);
    }

    #[test]
    fn two_clients_have_different_prefixes() {
        let a = Client::builder("http://127.0.0.1:9")
            .close_on_drop(Duration::ZERO)
            .build()
            .unwrap();
        let b = Client::builder("http://127.0.0.1:9")
            .close_on_drop(Duration::ZERO)
            .build()
            .unwrap();
        assert_ne!(a.handle.shared.prefix, b.handle.shared.prefix);
    }
}
