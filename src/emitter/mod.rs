//! Where events come in, in process: the [`Emitter`] and the global
//! [`emit_event`].
//!
//! ```no_run
//! use serde_json::json;
//! agentpulse::emit_event("agent_started", json!({
//!     "agent": "scribe", "task_id": "t_001",
//!     "model": "claude-sonnet-4.5", "tools": ["read", "write"],
//! })).ok();
//! agentpulse::get_emitter().stop().ok(); // flush before exit
//! ```
//!
//! Emitting validates on the caller's thread (so errors come back at once),
//! stamps the time, and `try_send`s onto a bounded queue: it never waits
//! and never allocates beyond the event itself (declared type names are
//! shared). When the queue is full the policy applies: drop the new event
//! and count it (default), or wait for room.
//!
//! The module by job: [`EmitterBuilder`] in `builder.rs`; reading the log
//! back and wiring the sinks and the dispatcher (`start`, `stop`) in
//! `start.rs`; the emit and ingest API in `api.rs`; the global emitter and
//! its environment settings in `global.rs`.

mod api;
mod builder;
mod forward;
mod global;
mod reply;
mod start;

pub use builder::{jsonl_from_config, EmitterBuilder};
pub use forward::ForwardSink;
pub use global::{emit_event, get_emitter, init_global, InitGlobalError};

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::metrics::{MetricsConfig, MetricsEngine, MetricsSnapshot};
use crate::pipeline::{Command, PipelineStats, QueuePolicy, StatsSnapshot, Tap};
use crate::schema::{Schema, ValidationError};
use crate::sinks::alerts::SharedAlerts;
use crate::sinks::console::ConsoleSink;
use crate::sinks::jsonl::{JsonlConfig, LogIndex};
use crate::sinks::metrics::SharedEngine;
use crate::sinks::notify::NotifyStats;
use crate::sinks::redis_metrics::Increments;
use crate::sinks::runner::{SinkStats, SpawnError, WhenFull};
use crate::sinks::Sink;

/// Default queue length between producers and the dispatcher.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

pub use crate::event::MAX_FUTURE_SECS;

/// How long an ingest waits for the log before checking whether it fails.
const DURABLE_SLICE: Duration = Duration::from_millis(50);

/// Default number of `event_id`s remembered for deduplication.
pub const DEFAULT_DEDUP_WINDOW: usize = 100_000;

/// Why an event was not taken.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The event is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The queue was full and the policy is to drop; the drop is counted.
    #[error("{event_type}: dropped, the event queue is full")]
    QueueFull {
        /// The dropped event's type.
        event_type: String,
    },
    /// The emitter has been stopped.
    #[error("{event_type}: dropped, the emitter is stopped")]
    Stopped {
        /// The dropped event's type.
        event_type: String,
    },
    /// The events were taken but the log has not confirmed them in time
    /// (a failing disk): the sender should retry with the same `event_id`s.
    #[error("events up to id {id} are accepted but not yet written to the log; retry with the same event_id")]
    NotDurable {
        /// The highest id waited for.
        id: u64,
    },
    /// The log cannot be written and enough already waits for it: the
    /// events were not taken at all (no id, no trace). Retry later.
    #[error("{reason}")]
    LogUnavailable {
        /// What fails, and how much waits.
        reason: String,
    },
    /// Some of the events were taken but the log had to drop them before
    /// they could be written: they are not stored. A retry (with the same
    /// `event_id`s) stores them.
    #[error("events up to id {id} were accepted but dropped before the log could write them (its buffer overflowed while writing failed); retry with the same event_id and they will be stored")]
    NotStored {
        /// The highest id of the batch.
        id: u64,
    },
    /// The log has reached its disk cap (`max_log_bytes`) and has no
    /// rotated file left to delete: the events were not taken. Retry once
    /// space is freed (or the cap raised).
    #[error("{reason}")]
    LogFull {
        /// The cap, what the log holds, and what to do.
        reason: String,
    },
}

impl From<crate::pipeline::Refused> for EmitError {
    fn from(r: crate::pipeline::Refused) -> EmitError {
        match r {
            crate::pipeline::Refused::Failing(reason) => EmitError::LogUnavailable { reason },
            crate::pipeline::Refused::DiskCap(reason) => EmitError::LogFull { reason },
        }
    }
}

/// The emitter could not be set up or started.
#[derive(Debug, thiserror::Error)]
pub enum EmitterError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The JSONL log could not be opened.
    #[error("cannot open the event log: {0}")]
    Log(#[from] crate::sinks::SinkError),
    /// The existing log could not be read at start.
    #[error("cannot read the event log at start: {0}")]
    Recovery(#[from] std::io::Error),
    /// `start` was called twice, or after `stop`.
    #[error("the emitter was already started")]
    AlreadyStarted,
    /// A thread of the pipeline could not be created.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A cluster member's log holds another history than the cluster's
    /// (its Redis was emptied, or the log dir is another cluster's): ids
    /// would clash.
    #[error("the log in {dir} holds the history of stream epoch {found}, not the cluster's ({expected}); give this hub an empty --log-dir (or move the old log away)")]
    ForeignHistory {
        /// The log's directory.
        dir: PathBuf,
        /// The epoch stored beside the log.
        found: String,
        /// The cluster's epoch.
        expected: String,
    },
    /// The pipeline stopped, but threads of it had panicked (the
    /// dispatcher, a sink): what they held may be lost. One line each.
    #[error("the pipeline stopped after a panic: {}", .0.join("; "))]
    Panicked(Vec<String>),
}

/// What `start` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StartReport {
    /// The id the next event gets.
    pub next_id: u64,
    /// Events read back from the log into the metrics and dedup window.
    pub replayed: u64,
    /// Unreadable lines met while reading the log back.
    pub bad_lines: u64,
    /// Where a torn last line of the log was moved, if there was one.
    pub torn_line_moved_to: Option<PathBuf>,
    /// The stream epoch of this history (see [`crate::pipeline::epoch`]).
    pub epoch: String,
}

/// The metrics and counters `get_metrics` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// The six KPIs over the window and current buckets, per agent.
    #[serde(flatten)]
    pub kpis: MetricsSnapshot,
    /// Pipeline counters: accepted, rejected, dropped, duplicates.
    pub pipeline: StatsSnapshot,
    /// Per-sink counters.
    pub sinks: Vec<SinkReport>,
}

/// Counters of one sink.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    /// The sink's name.
    pub name: &'static str,
    /// Events handed to it.
    pub events: u64,
    /// Failed operations.
    pub errors: u64,
    /// Events it lost (channel full or its retry buffer overflowed).
    pub dropped: u64,
    /// Its last error, while it is failing.
    pub last_error: Option<String>,
}

enum State {
    Built(Box<Parts>),
    /// The dispatcher's thread; it returns what panicked under it.
    Running(JoinHandle<Option<Vec<String>>>),
    Stopped,
}

struct Parts {
    rx: mpsc::Receiver<Command>,
    jsonl: Option<JsonlConfig>,
    console: Option<ConsoleSink>,
    extra_sinks: Vec<(Box<dyn Sink>, WhenFull)>,
    taps: Vec<Box<dyn Tap>>,
    replay_days: u32,
    dedup_window: usize,
    increments: Option<Arc<Increments>>,
    cluster: Option<ClusterParts>,
    increment_filter: Option<crate::sinks::metrics::IncrementFilter>,
    alerts_gate: Option<crate::sinks::alerts::Gate>,
}

/// What a cluster member's pipeline is given (see
/// [`EmitterBuilder::cluster`]).
struct ClusterParts {
    outbox: Box<dyn crate::pipeline::Outbox>,
    epoch: String,
}

struct Inner {
    schema: Arc<Schema>,
    config: Config,
    tx: mpsc::Sender<Command>,
    policy: QueuePolicy,
    stats: Arc<PipelineStats>,
    clock: SharedClock,
    engine: SharedEngine,
    sink_stats: Mutex<Vec<(&'static str, Arc<SinkStats>)>>,
    /// Alert rules and budgets, shared with the HTTP APIs.
    alerts: SharedAlerts,
    /// Notifier counters.
    notify_stats: Arc<NotifyStats>,
    /// The last id found in the log at start: durable by definition.
    recovered_last_id: std::sync::atomic::AtomicU64,
    /// A cluster member: acknowledged once the cluster holds the events,
    /// not once the log does.
    cluster: bool,
    /// The log's watermark: ids up to it are written (or synced, per the
    /// durability setting). `None` without a log or with durability `none`.
    durable: Mutex<Option<tokio::sync::watch::Receiver<u64>>>,
    /// The log's index, for readers seeking into it (with a log only).
    log_index: std::sync::OnceLock<Arc<LogIndex>>,
    /// What the log has not written yet, with a log.
    backlog: OnceLock<Arc<crate::sinks::jsonl::Backlog>>,
    state: Mutex<State>,
}

/// The in-process entry point of the pipeline. Cheap to clone; all clones
/// feed the same pipeline.
#[derive(Clone)]
pub struct Emitter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("stats", &self.inner.stats.snapshot())
            .finish()
    }
}

/// An empty metrics engine with the configuration's aggregation settings.
fn metrics_engine(config: &Config) -> MetricsEngine {
    let aggregate = &config.metrics.aggregate;
    MetricsEngine::new(MetricsConfig {
        window_minutes: aggregate.window_minutes,
        max_open_tasks: aggregate.max_open_tasks,
        max_names: aggregate.max_names,
        ..MetricsConfig::default()
    })
}
