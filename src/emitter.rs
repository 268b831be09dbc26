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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::alerts::{AlertEngine, BudgetTracker};
use crate::clock::{self, SharedClock};
use crate::config::{Config, ConfigError};
use crate::event::NewEvent;
use crate::metrics::{MetricsConfig, MetricsEngine, MetricsSnapshot};
use crate::pipeline::dedup::DedupWindow;
use crate::pipeline::dispatcher::Dispatcher;
use crate::pipeline::{recovery, Command, Outcome, PipelineStats, QueuePolicy, StatsSnapshot, Tap};
use crate::schema::{Schema, ValidationError};
use crate::sinks::alerts::{AlertState, AlertsSink, SharedAlerts};
use crate::sinks::console::{ConsoleSink, Level};
use crate::sinks::jsonl::{JsonlConfig, JsonlSink, LogIndex};
use crate::sinks::metrics::{MetricsSink, SharedEngine};
use crate::sinks::notify::{NotifySink, NotifyStats};
use crate::sinks::reclaim::Reclaimer;
use crate::sinks::redis_metrics::Increments;
use crate::sinks::runner::{
    panic_message, spawn_thread, SinkHandle, SinkStats, SpawnError, WhenFull,
};
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
    Running(JoinHandle<Vec<String>>),
    Stopped,
}

/// What `start` read from the log, before anything is handed to a thread.
struct ReadBack {
    report: StartReport,
    dedup: DedupWindow,
    next_id: u64,
    ids: Option<crate::pipeline::ids::IdReservation>,
    log: Option<OpenLog>,
    /// The last events read back, for taps that want them at start.
    recent: std::collections::VecDeque<crate::event::Event>,
}

/// The opened log, ready for its thread.
struct OpenLog {
    sink: JsonlSink,
    backlog: Arc<crate::sinks::jsonl::Backlog>,
    index: Arc<LogIndex>,
    /// Whether ingest waits for the log's watermark.
    durable: bool,
    /// The last id found in the log.
    last_id: u64,
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

/// Sets up an [`Emitter`].
pub struct EmitterBuilder {
    config: Option<Config>,
    jsonl: Option<JsonlConfig>,
    log_enabled: Option<bool>,
    console: Option<Option<ConsoleSink>>,
    queue_capacity: usize,
    policy: QueuePolicy,
    clock: SharedClock,
    replay_days: u32,
    dedup_window: usize,
    extra_sinks: Vec<(Box<dyn Sink>, WhenFull)>,
    taps: Vec<Box<dyn Tap>>,
    strict: Option<bool>,
    increments: Option<Arc<Increments>>,
}

impl Default for EmitterBuilder {
    fn default() -> Self {
        EmitterBuilder {
            config: None,
            jsonl: None,
            log_enabled: None,
            console: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            policy: QueuePolicy::DropNewest,
            clock: clock::system(),
            replay_days: 8,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            extra_sinks: Vec::new(),
            taps: Vec::new(),
            strict: None,
            increments: None,
        }
    }
}

impl EmitterBuilder {
    /// Uses this configuration (default: the built-in one).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Writes the JSONL log with these settings.
    pub fn jsonl(mut self, jsonl: JsonlConfig) -> Self {
        self.jsonl = Some(jsonl);
        self.log_enabled = Some(true);
        self
    }

    /// Writes the JSONL log into `dir` (other settings default).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        let mut j = self.jsonl.take().unwrap_or_default();
        j.dir = dir.into();
        self.jsonl = Some(j);
        self.log_enabled = Some(true);
        self
    }

    /// Writes no JSONL log.
    pub fn no_log(mut self) -> Self {
        self.log_enabled = Some(false);
        self
    }

    /// Prints events at or above `level` to standard output.
    pub fn console(mut self, level: Level) -> Self {
        self.console = Some(Some(ConsoleSink::stdout(level)));
        self
    }

    /// Prints events through this console sink.
    pub fn console_sink(mut self, sink: ConsoleSink) -> Self {
        self.console = Some(Some(sink));
        self
    }

    /// No console output.
    pub fn quiet(mut self) -> Self {
        self.console = Some(None);
        self
    }

    /// Queue length in events (default 65,536).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// What a full queue does (default: drop the new event and count it).
    pub fn policy(mut self, policy: QueuePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock (tests inject one).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// How many days of rotated logs are read back at start (default 8, to
    /// cover the weekly bucket); 0 reads only the active file.
    pub fn replay_days(mut self, days: u32) -> Self {
        self.replay_days = days;
        self
    }

    /// How many `event_id`s are remembered (default 100,000).
    pub fn dedup_window(mut self, n: usize) -> Self {
        self.dedup_window = n;
        self
    }

    /// Refuses undeclared event types (overrides the file's `strict`).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = Some(strict);
        self
    }

    /// Adds a sink of your own.
    pub fn sink(mut self, sink: Box<dyn Sink>, when_full: WhenFull) -> Self {
        self.extra_sinks.push((sink, when_full));
        self
    }

    /// Records per-bucket increments for a Redis flusher.
    pub fn metrics_increments(mut self, increments: Arc<Increments>) -> Self {
        self.increments = Some(increments);
        self
    }

    /// Adds a tap (runs on the dispatcher thread; must not block).
    pub fn tap(mut self, tap: Box<dyn Tap>) -> Self {
        self.taps.push(tap);
        self
    }

    /// Builds the emitter; nothing runs until [`Emitter::start`], but events
    /// emitted before it wait in the queue.
    pub fn build(self) -> Result<Emitter, EmitterError> {
        let config = match self.config {
            Some(c) => c,
            None => Config::builtin(),
        };
        let mut schema = Schema::from_config(&config)?;
        if let Some(strict) = self.strict {
            schema.set_strict(strict);
        }
        let log_enabled = self
            .log_enabled
            .unwrap_or_else(|| config.destination_enabled("file"));
        let jsonl = log_enabled.then(|| self.jsonl.unwrap_or_else(|| jsonl_from_config(&config)));
        let console = match self.console {
            Some(c) => c,
            None if config.destination_enabled("console") => {
                let level = config
                    .destination("console")
                    .and_then(|d| d.level.as_deref())
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(Level::Info);
                Some(ConsoleSink::stdout(level))
            }
            None => None,
        };
        let rules = crate::alerts::parse_rules(&config).map_err(|e| ConfigError::Invalid {
            origin: config.origin.clone(),
            message: e.to_string(),
        })?;
        let alerts = Arc::new(Mutex::new(AlertState {
            engine: AlertEngine::new(rules),
            budgets: BudgetTracker::new(config.budgets.clone()),
        }));
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let engine = metrics_engine(&config);
        Ok(Emitter {
            inner: Arc::new(Inner {
                schema: Arc::new(schema),
                config,
                tx,
                policy: self.policy,
                stats: Arc::new(PipelineStats::default()),
                clock: self.clock,
                engine: Arc::new(Mutex::new(engine)),
                sink_stats: Mutex::new(Vec::new()),
                alerts,
                notify_stats: Arc::new(NotifyStats::default()),
                recovered_last_id: std::sync::atomic::AtomicU64::new(0),
                durable: Mutex::new(None),
                log_index: std::sync::OnceLock::new(),
                backlog: OnceLock::new(),
                state: Mutex::new(State::Built(Box::new(Parts {
                    rx,
                    jsonl,
                    console,
                    extra_sinks: self.extra_sinks,
                    taps: self.taps,
                    replay_days: self.replay_days,
                    dedup_window: self.dedup_window,
                    increments: self.increments,
                }))),
            }),
        })
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

/// The log settings the config file's `file` destination asks for.
fn jsonl_from_config(config: &Config) -> JsonlConfig {
    let mut j = JsonlConfig::default();
    if let Some(path) = config.destination("file").and_then(|d| d.path.as_deref()) {
        let path = Path::new(path);
        if let Some(name) = path.file_name() {
            j.file_name = name.to_string_lossy().into_owned();
        }
        j.dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
    }
    j
}

impl Emitter {
    /// A builder with the built-in defaults.
    pub fn builder() -> EmitterBuilder {
        EmitterBuilder::default()
    }

    /// Reads the log back (last id, dedup window, metrics), opens the sinks
    /// and starts the dispatcher.
    ///
    /// A start that fails while opening or reading the log leaves the
    /// emitter as built, so it can be started again (the metrics read so far
    /// are cleared; taps may see part of the history again through
    /// [`crate::pipeline::Tap::on_recovered`]). A thread that cannot be created
    /// ([`EmitterError::Spawn`]) is met after the sinks were handed over:
    /// the emitter is then stopped for good.
    pub fn start(&self) -> Result<StartReport, EmitterError> {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Built(parts) = &mut *state else {
            return Err(EmitterError::AlreadyStarted);
        };
        let read = match self.read_back(parts) {
            Ok(read) => read,
            Err(e) => {
                // The retry reads the whole history again.
                *self.inner.engine.lock().unwrap_or_else(|e| e.into_inner()) =
                    metrics_engine(&self.inner.config);
                return Err(e);
            }
        };
        let parts = match std::mem::replace(&mut *state, State::Stopped) {
            State::Built(parts) => parts,
            _ => unreachable!("the state was Built above, under the same lock"),
        };
        let (thread, report) = self.launch(*parts, read)?;
        *state = State::Running(thread);
        Ok(report)
    }

    /// The part of `start` that can fail without using anything up: opens
    /// the log and reads it back into the metrics, the dedup window and
    /// the taps.
    fn read_back(&self, parts: &mut Parts) -> Result<ReadBack, EmitterError> {
        let keep_recent = parts
            .taps
            .iter()
            .map(|t| t.replay_capacity())
            .max()
            .unwrap_or(0);
        let mut read = ReadBack {
            report: StartReport {
                epoch: crate::pipeline::epoch::fresh(),
                ..StartReport::default()
            },
            dedup: DedupWindow::new(parts.dedup_window),
            next_id: 1,
            ids: None,
            log: None,
            recent: std::collections::VecDeque::new(),
        };
        let Some(jcfg) = parts.jsonl.clone() else {
            return Ok(read);
        };
        // Open first: it repairs a torn last line before we read back.
        let (sink, open) = JsonlSink::open(jcfg.clone(), self.inner.clock.clone())?;
        let backlog = Arc::new(crate::sinks::jsonl::Backlog::new(jcfg.max_pending_bytes));
        let mut sink = sink.with_backlog(backlog.clone());
        read.report.torn_line_moved_to = open.torn.map(|t| t.moved_to);
        let mut engine = self.inner.engine.lock().unwrap_or_else(|e| e.into_inner());
        // The window follows the clock, not the log's newest timestamp:
        // an event stamped ahead in the log must not prune what follows.
        engine.advance_clock(self.inner.clock.now());
        let taps = &mut parts.taps;
        let recent = &mut read.recent;
        let rec = recovery::recover(
            &jcfg.dir,
            &jcfg.file_name,
            parts.replay_days,
            self.inner.clock.now(),
            &mut read.dedup,
            |event| {
                engine.observe(event);
                for tap in taps.iter_mut() {
                    tap.on_recovered(event);
                }
                if keep_recent > 0 {
                    if recent.len() == keep_recent {
                        recent.pop_front();
                    }
                    recent.push_back(event.clone());
                }
            },
        )?;
        drop(engine);
        let reservation = crate::pipeline::ids::IdReservation::load(&jcfg.dir, &jcfg.file_name);
        read.report.epoch =
            crate::pipeline::epoch::load_or_create(&jcfg.dir, &jcfg.file_name, rec.last_id == 0)?;
        let index = LogIndex::open(&jcfg.dir, &jcfg.file_name, rec.last_id);
        sink.set_index(index.clone());
        // Past the log and past any ids handed out before a crash.
        read.next_id = rec.last_id.max(reservation.reserved()) + 1;
        read.ids = Some(reservation);
        read.report.replayed = rec.replayed;
        read.report.bad_lines = rec.bad_lines;
        read.log = Some(OpenLog {
            sink,
            backlog,
            index,
            durable: jcfg.durability != crate::sinks::jsonl::Durability::None,
            last_id: rec.last_id,
        });
        Ok(read)
    }

    /// The rest of `start`: hands the sinks to their threads and starts
    /// the dispatcher. Only thread creation can fail here.
    fn launch(
        &self,
        parts: Parts,
        read: ReadBack,
    ) -> Result<(JoinHandle<Vec<String>>, StartReport), EmitterError> {
        let Parts {
            rx,
            console,
            extra_sinks,
            mut taps,
            increments,
            ..
        } = parts;
        let ReadBack {
            mut report,
            dedup,
            next_id,
            ids,
            log,
            recent,
        } = read;
        // At most 32 spent batches wait to be freed (~150 MB of payloads
        // at the largest batches); past that, sinks free them in place.
        let (reclaim, reclaim_thread) = Reclaimer::spawn(32).map_err(|source| SpawnError {
            thread: "agentpulse-free".into(),
            source,
        })?;
        let mut sinks = Vec::new();
        let mut backlog = None;
        if let Some(log) = log {
            // Set once: a start that got this far does not run again.
            let _already_set = self.inner.backlog.set(log.backlog.clone());
            let _already_set = self.inner.log_index.set(log.index);
            backlog = Some(log.backlog);
            self.inner
                .recovered_last_id
                .store(log.last_id, std::sync::atomic::Ordering::Relaxed);
            let handle = SinkHandle::spawn(Box::new(log.sink), 64, WhenFull::Block, &reclaim)?;
            if log.durable {
                *self.inner.durable.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(handle.watermark());
            }
            sinks.push(handle);
        }
        let mut metrics_sink =
            MetricsSink::new(self.inner.engine.clone()).with_clock(self.inner.clock.clone());
        if let Some(inc) = increments {
            metrics_sink = metrics_sink.with_increments(inc);
        }
        sinks.push(SinkHandle::spawn(
            Box::new(metrics_sink),
            64,
            WhenFull::Block,
            &reclaim,
        )?);
        if let Some(c) = console {
            sinks.push(SinkHandle::spawn(
                Box::new(c),
                16,
                WhenFull::DropNewest,
                &reclaim,
            )?);
        }
        let has_alerts = {
            let a = self.inner.alerts.lock().unwrap_or_else(|e| e.into_inner());
            !a.engine.rules().is_empty() || a.budgets.budgets().next().is_some()
        };
        if has_alerts {
            // What rules and budgets produce comes back in through the
            // queue, from a thread of its own: the alerts sink never waits
            // on the pipeline that feeds it.
            let (fb_tx, fb_rx) = std::sync::mpsc::channel::<NewEvent>();
            let queue = self.inner.tx.clone();
            let now = self.inner.clock.clone();
            spawn_thread(
                std::thread::Builder::new(),
                "agentpulse-feedback".into(),
                move || {
                    for mut ev in fb_rx {
                        ev.timestamp.get_or_insert_with(|| now.now());
                        if queue.blocking_send(Command::One(ev)).is_err() {
                            break;
                        }
                    }
                },
            )?;
            sinks.push(SinkHandle::spawn(
                Box::new(AlertsSink::new(
                    self.inner.alerts.clone(),
                    self.inner.engine.clone(),
                    self.inner.stats.clone(),
                    self.inner.clock.clone(),
                    fb_tx,
                )),
                64,
                WhenFull::Block,
                &reclaim,
            )?);
            sinks.push(SinkHandle::spawn(
                Box::new(NotifySink::new(
                    self.inner.config.clone(),
                    self.inner.notify_stats.clone(),
                )),
                64,
                WhenFull::DropNewest,
                &reclaim,
            )?);
        }
        for (s, when_full) in extra_sinks {
            sinks.push(SinkHandle::spawn(s, 64, when_full, &reclaim)?);
        }
        *self
            .inner
            .sink_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = sinks
            .iter()
            .map(|s| (s.name(), s.stats().clone()))
            .collect();
        report.next_id = next_id;
        let recent: Vec<crate::event::SharedRecord> = recent
            .into_iter()
            .map(|e| Arc::new(crate::event::Record::new(e)))
            .collect();
        for tap in &mut taps {
            let want = tap.replay_capacity().min(recent.len());
            tap.on_start(&recent[recent.len() - want..], next_id - 1);
        }
        self.inner
            .stats
            .last_id
            .store(next_id - 1, std::sync::atomic::Ordering::Relaxed);
        // The sinks hold the only senders now.
        drop(reclaim);
        let dispatcher = Dispatcher {
            next_id,
            dedup,
            sinks,
            taps,
            stats: self.inner.stats.clone(),
            clock: self.inner.clock.clone(),
            ids,
            lines: crate::event::LineWriter::new(),
            backlog,
            reclaim_thread,
        };
        let thread = spawn_thread(
            std::thread::Builder::new(),
            "agentpulse-dispatch".into(),
            move || dispatcher.run(rx),
        )?;
        Ok((thread, report))
    }

    /// Emits an event of `event_type` with `payload` (a JSON object), stamped
    /// now. Never waits under the default policy.
    pub fn emit(&self, event_type: &str, payload: Value) -> Result<(), EmitError> {
        let event_type = self.inner.schema.intern(event_type);
        let payload = match payload {
            Value::Object(map) => map,
            other => {
                self.count_rejected();
                return Err(ValidationError::new(
                    &*event_type,
                    "payload",
                    format!("expected an object, got {}", crate::event::kind_of(&other)),
                )
                .into());
            }
        };
        self.emit_event(NewEvent::new(event_type, payload))
    }

    /// Schema validation plus the checks that need the clock.
    fn check(&self, event: &NewEvent, now: f64) -> Result<(), ValidationError> {
        self.inner.schema.validate(event)?;
        if let Some(ts) = event.timestamp {
            if ts > now + MAX_FUTURE_SECS {
                return Err(ValidationError::new(
                    &*event.event_type,
                    "timestamp",
                    format!(
                        "{ts} is more than a day ahead of the hub's clock ({now:.0}); check the sender's clock"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Why new events are refused now, if they are: the log cannot be
    /// written and enough already waits for it.
    fn refusal(&self) -> Option<EmitError> {
        Some(self.inner.backlog.get()?.refusal()?.into())
    }

    /// Refuses one in-process event (counted) while the log cannot take it.
    fn refuse_if_log_full(&self) -> Result<(), EmitError> {
        match self.refusal() {
            Some(refused) => {
                self.inner
                    .stats
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(refused)
            }
            None => Ok(()),
        }
    }

    /// The log's backlog, when there is a log (for `/health`).
    pub fn log_backlog(&self) -> Option<&Arc<crate::sinks::jsonl::Backlog>> {
        self.inner.backlog.get()
    }

    /// Emits a prepared event (with its own timestamp or dedup key).
    pub fn emit_event(&self, mut event: NewEvent) -> Result<(), EmitError> {
        let now = self.inner.clock.now();
        if let Err(e) = self.check(&event, now) {
            self.count_rejected();
            return Err(e.into());
        }
        self.refuse_if_log_full()?;
        if event.timestamp.is_none() {
            event.timestamp = Some(now);
        }
        self.enqueue(Command::One(event))
    }

    /// Emits an event, waiting for room in the queue whatever the policy:
    /// for async producers that want backpressure.
    pub async fn emit_async(&self, mut event: NewEvent) -> Result<(), EmitError> {
        let now = self.inner.clock.now();
        if let Err(e) = self.check(&event, now) {
            self.count_rejected();
            return Err(e.into());
        }
        if event.timestamp.is_none() {
            event.timestamp = Some(now);
        }
        self.refuse_if_log_full()?;
        let ty = event.event_type.to_string();
        self.inner
            .tx
            .send(Command::One(event))
            .await
            .map_err(|_| self.count_dropped_stopped(ty))
    }

    /// Takes a batch of events (the ingest paths): validates each, queues the
    /// valid ones (waiting for room), and answers, per input, its outcome or
    /// its validation error, once the accepted ones are with the sinks.
    /// Invalid events leave no trace.
    pub async fn ingest(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Result<Outcome, ValidationError>>, EmitError> {
        self.ingest_with(events, false).await
    }

    /// [`Emitter::ingest`], but under the drop policy a full queue refuses
    /// the batch (`EmitError::QueueFull`, the events counted as dropped)
    /// instead of waiting: for senders that retry (OTLP exporters get 429).
    pub async fn ingest_or_refuse(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Result<Outcome, ValidationError>>, EmitError> {
        self.ingest_with(events, self.inner.policy == QueuePolicy::DropNewest)
            .await
    }

    async fn ingest_with(
        &self,
        events: Vec<NewEvent>,
        refuse_when_full: bool,
    ) -> Result<Vec<Result<Outcome, ValidationError>>, EmitError> {
        let (valid, mut results) = self.check_batch(events);
        if valid.is_empty() {
            return Ok(merge_outcomes(&mut results, Vec::new()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: crate::pipeline::Reply = Box::new(move |o| {
            let _ = tx.send(o);
        });
        let n = valid.len() as u64;
        let dropped = |e: EmitError| {
            self.inner
                .stats
                .dropped
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            e
        };
        let cmd = Command::Many(valid, Some(reply));
        if refuse_when_full {
            self.inner.tx.try_send(cmd).map_err(|e| {
                dropped(match e {
                    TrySendError::Full(_) => EmitError::QueueFull {
                        event_type: "batch".into(),
                    },
                    TrySendError::Closed(_) => EmitError::Stopped {
                        event_type: "batch".into(),
                    },
                })
            })?;
        } else {
            self.inner.tx.send(cmd).await.map_err(|_| {
                dropped(EmitError::Stopped {
                    event_type: "batch".into(),
                })
            })?;
        }
        let outcomes = rx
            .await
            .map_err(|_| EmitError::Stopped {
                event_type: "batch".into(),
            })?
            .map_err(EmitError::from)?;
        let highest = outcomes.iter().map(|o| o.id()).max().unwrap_or(0);
        self.wait_durable(highest).await?;
        // Written up to `highest`, but perhaps not every one of them: the
        // log may have had to drop some while it could not write.
        if let Some(b) = self.inner.backlog.get() {
            if b.any_lost(outcomes.iter().map(|o| o.id())) {
                return Err(EmitError::NotStored { id: highest });
            }
        }
        Ok(merge_outcomes(&mut results, outcomes))
    }

    /// Waits until the log holds every id up to `id` (per the durability
    /// setting), at most 10 s. Without a log, or with durability `none`,
    /// returns at once.
    pub async fn wait_durable(&self, id: u64) -> Result<(), EmitError> {
        let rx = self
            .inner
            .durable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(mut rx) = rx else { return Ok(()) };
        // A duplicate of an event logged before this start is on disk.
        if id
            <= self
                .inner
                .recovered_last_id
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        // In slices, so that a log that fails is answered at once rather
        // than after the whole wait.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waited = tokio::time::timeout(DURABLE_SLICE, async {
                rx.wait_for(|w| *w >= id).await.is_ok()
            })
            .await;
            // When the sink thread is gone (the pipeline stopped, which
            // flushes), its last watermark is the answer.
            if waited == Ok(true) || *rx.borrow() >= id {
                return Ok(());
            }
            let failing = self.inner.backlog.get().is_some_and(|b| b.failing());
            if waited == Ok(false) || failing || tokio::time::Instant::now() >= deadline {
                return Err(EmitError::NotDurable { id });
            }
        }
    }

    /// [`Emitter::ingest`] for synchronous callers (blocks the thread).
    pub fn ingest_blocking(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Result<Outcome, ValidationError>>, EmitError> {
        let (valid, mut results) = self.check_batch(events);
        if valid.is_empty() {
            return Ok(merge_outcomes(&mut results, Vec::new()));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let reply: crate::pipeline::Reply = Box::new(move |o| {
            let _ = tx.send(o);
        });
        self.send_blocking(Command::Many(valid, Some(reply)))?;
        let outcomes = rx
            .recv()
            .map_err(|_| EmitError::Stopped {
                event_type: "batch".into(),
            })?
            .map_err(EmitError::from)?;
        Ok(merge_outcomes(&mut results, outcomes))
    }

    /// Validates a batch: the valid events (timestamped) and, per input, its
    /// error or a placeholder to be filled with the outcome.
    fn check_batch(
        &self,
        events: Vec<NewEvent>,
    ) -> (Vec<NewEvent>, Vec<Result<(), ValidationError>>) {
        let now = self.inner.clock.now();
        let mut valid = Vec::with_capacity(events.len());
        let mut results = Vec::with_capacity(events.len());
        for mut ev in events {
            match self.check(&ev, now) {
                Ok(()) => {
                    ev.timestamp.get_or_insert(now);
                    valid.push(ev);
                    results.push(Ok(()));
                }
                Err(e) => {
                    self.count_rejected();
                    results.push(Err(e));
                }
            }
        }
        (valid, results)
    }

    /// Records a critic's decision as a `critic_decision` event
    /// (`{"rejected": bool}`), counted by `critic_rejection_rate`.
    pub fn record_critic_decision(&self, rejected: bool) -> Result<(), EmitError> {
        let mut payload = serde_json::Map::new();
        payload.insert("rejected".into(), Value::Bool(rejected));
        self.emit_event(NewEvent::new("critic_decision", payload))
    }

    /// Waits until everything emitted so far is written by every sink.
    pub fn flush(&self) -> bool {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let ack: crate::pipeline::Ack = Box::new(move || {
            let _ = tx.send(());
        });
        if self.send_blocking(Command::Flush(ack)).is_err() {
            return false;
        }
        rx.recv().is_ok()
    }

    /// The log's index (with a log, once started): where stream readers
    /// that fell behind the in-memory ring read from.
    pub fn log_index(&self) -> Option<&Arc<LogIndex>> {
        self.inner.log_index.get()
    }

    /// [`Emitter::flush`] for async callers.
    pub async fn flush_async(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ack: crate::pipeline::Ack = Box::new(move || {
            let _ = tx.send(());
        });
        if self.inner.tx.send(Command::Flush(ack)).await.is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    /// Stops the pipeline: everything accepted before is written and every
    /// sink flushed before this returns. Later emits fail with `Stopped`.
    /// Fails with [`EmitterError::Panicked`] when the dispatcher or a sink's
    /// thread panicked (the pipeline is stopped all the same).
    pub fn stop(&self) -> Result<(), EmitterError> {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Running(thread) = std::mem::replace(&mut *state, State::Stopped) else {
            return Ok(());
        };
        if self.send_blocking(Command::Stop).is_err() {
            // The dispatcher has already gone: its join below says why.
            tracing::debug!("the dispatcher had ended before the stop");
        }
        match thread.join() {
            Ok(panicked) if panicked.is_empty() => Ok(()),
            Ok(panicked) => Err(EmitterError::Panicked(panicked)),
            Err(panic) => Err(EmitterError::Panicked(vec![format!(
                "the thread agentpulse-dispatch panicked: {}",
                panic_message(&*panic)
            )])),
        }
    }

    /// The metrics now: KPIs over the window and the current buckets, per
    /// agent, plus the pipeline's and sinks' counters.
    pub fn get_metrics(&self) -> Metrics {
        let kpis = self
            .inner
            .engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot(self.inner.clock.now());
        Metrics {
            kpis,
            pipeline: self.inner.stats.snapshot(),
            sinks: self.sink_reports(),
        }
    }

    /// Per-sink counters.
    pub fn sink_reports(&self) -> Vec<SinkReport> {
        use std::sync::atomic::Ordering::Relaxed;
        self.inner
            .sink_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, s)| SinkReport {
                name,
                events: s.events.load(Relaxed),
                errors: s.errors.load(Relaxed),
                dropped: s.dropped_full.load(Relaxed) + s.dropped_by_sink.load(Relaxed),
                last_error: s
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            })
            .collect()
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Alert rules and budgets (for `/api/alerts` and `/api/budgets`).
    pub fn alerts(&self) -> &SharedAlerts {
        &self.inner.alerts
    }

    /// Notifier counters.
    pub fn notify_stats(&self) -> &Arc<NotifyStats> {
        &self.inner.notify_stats
    }

    /// The metrics engine (for readers that need more than the snapshot).
    pub fn engine(&self) -> &SharedEngine {
        &self.inner.engine
    }

    /// The schema events are checked against.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Events waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.inner.tx.max_capacity() - self.inner.tx.capacity()
    }

    fn enqueue(&self, cmd: Command) -> Result<(), EmitError> {
        match self.inner.policy {
            QueuePolicy::DropNewest => match self.inner.tx.try_send(cmd) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(cmd)) => {
                    self.inner
                        .stats
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Err(EmitError::QueueFull {
                        event_type: command_type(&cmd),
                    })
                }
                Err(TrySendError::Closed(cmd)) => {
                    Err(self.count_dropped_stopped(command_type(&cmd)))
                }
            },
            QueuePolicy::Block => self.send_blocking(cmd),
        }
    }

    /// Sends, waiting for room. Outside a runtime this parks the thread;
    /// inside one (where parking would panic) it backs off in short sleeps.
    fn send_blocking(&self, mut cmd: Command) -> Result<(), EmitError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.inner.tx.blocking_send(cmd).map_err(|e| {
                let ty = command_type(&e.0);
                self.count_dropped_stopped(ty)
            });
        }
        let mut spins = 0u32;
        loop {
            match self.inner.tx.try_send(cmd) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(c)) => {
                    cmd = c;
                    spins += 1;
                    if spins < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
                Err(TrySendError::Closed(c)) => {
                    return Err(self.count_dropped_stopped(command_type(&c)))
                }
            }
        }
    }

    /// Counts `n` events refused before they reached the emitter (malformed
    /// input at an ingest path), so `rejected` covers every refusal.
    pub fn note_rejected(&self, n: u64) {
        self.inner
            .stats
            .rejected
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn count_rejected(&self) {
        self.inner
            .stats
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn count_dropped_stopped(&self, event_type: String) -> EmitError {
        self.inner
            .stats
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        EmitError::Stopped { event_type }
    }
}

fn merge_outcomes(
    results: &mut [Result<(), ValidationError>],
    outcomes: Vec<Outcome>,
) -> Vec<Result<Outcome, ValidationError>> {
    let mut outcomes = outcomes.into_iter();
    results
        .iter_mut()
        .map(|r| match std::mem::replace(r, Ok(())) {
            Ok(()) => Ok(outcomes.next().expect("one outcome per valid event")),
            Err(e) => Err(e),
        })
        .collect()
}

fn command_type(cmd: &Command) -> String {
    match cmd {
        Command::One(ev) => ev.event_type.to_string(),
        Command::Many(..) => "batch".into(),
        Command::Flush(_) => "flush".into(),
        Command::Stop => "stop".into(),
    }
}

static GLOBAL: OnceLock<Emitter> = OnceLock::new();

/// Why [`init_global`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InitGlobalError {
    /// A global emitter already exists; the one given is handed back.
    #[error("the global emitter already exists")]
    AlreadySet(Emitter),
    /// The emitter is installed as the global one but did not start.
    #[error("the global emitter did not start: {0}")]
    Start(#[source] EmitterError),
}

/// Installs `emitter` (started or not; it is started if needed) as the
/// global one. Fails, handing it back, when the global one already exists;
/// fails with the start's error when it cannot start (it stays installed,
/// and as built, so `get_emitter().start()` may be tried again).
pub fn init_global(emitter: Emitter) -> Result<(), InitGlobalError> {
    let mut handed_back = Some(emitter.clone());
    GLOBAL.get_or_init(|| {
        handed_back = None;
        emitter
    });
    if let Some(e) = handed_back {
        return Err(InitGlobalError::AlreadySet(e));
    }
    match get_emitter().start() {
        // Started by the caller before it was handed over.
        Ok(_) | Err(EmitterError::AlreadyStarted) => Ok(()),
        Err(e) => Err(InitGlobalError::Start(e)),
    }
}

/// The global emitter, created and started on first use with the defaults:
/// the built-in schema (or `AGENTPULSE_CONFIG`), console output (unless
/// `AGENTPULSE_QUIET` is set) and the log in `logs/` (or
/// `AGENTPULSE_LOG_DIR`). Call `get_emitter().stop()` before the program
/// exits so that everything emitted is written.
///
/// **Hub mode.** When `AGENTPULSE_HUB_URL` is set (e.g.
/// `http://127.0.0.1:3010`, with `AGENTPULSE_TOKEN` if the hub has a token),
/// the global emitter still validates every event in the process (errors
/// come back at once), but writes no log and prints nothing: it forwards
/// each event to that hub through a [`crate::Client`]
/// ([`crate::client::ForwardSink`]). `flush()` and `stop()` then wait (at
/// most 5 s) for the hub's answers. Its `get_metrics()` covers only this
/// process's events; the hub's `/api/metrics` has the whole picture.
pub fn get_emitter() -> &'static Emitter {
    GLOBAL.get_or_init(|| {
        let emitter = default_from_env();
        if let Err(e) = emitter.start() {
            tracing::error!("agentpulse: {e}; events are kept in memory only");
            let fallback = Emitter::builder()
                .no_log()
                .build()
                .expect("built-in config");
            let _ = fallback.start();
            return fallback;
        }
        emitter
    })
}

fn default_from_env() -> Emitter {
    let mut b = Emitter::builder();
    if let Some(path) = std::env::var_os("AGENTPULSE_CONFIG") {
        match Config::load(Path::new(&path)) {
            Ok(c) => b = b.config(c),
            Err(e) => tracing::error!("agentpulse: {e}; using the built-in config"),
        }
    }
    // Hub mode (see `get_emitter`): forward instead of logging locally.
    match crate::client::Client::from_env() {
        Some(Ok(client)) => {
            let sink = crate::client::ForwardSink::new(client);
            return match b
                .no_log()
                .quiet()
                .sink(Box::new(sink), WhenFull::Block)
                .build()
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!("agentpulse: {e}; using the built-in config");
                    Emitter::builder().build().expect("built-in config")
                }
            };
        }
        Some(Err(e)) => tracing::error!("agentpulse: {e}; recording events locally instead"),
        None => {}
    }
    if let Some(dir) = std::env::var_os("AGENTPULSE_LOG_DIR") {
        b = b.log_dir(PathBuf::from(dir));
    }
    if std::env::var_os("AGENTPULSE_QUIET").is_some_and(|v| !v.is_empty() && v != "0") {
        b = b.quiet();
    }
    match b.build() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("agentpulse: {e}; using the built-in config");
            Emitter::builder().build().expect("built-in config")
        }
    }
}

/// Emits an event on the global emitter (see [`get_emitter`]).
pub fn emit_event(event_type: &str, payload: Value) -> Result<(), EmitError> {
    get_emitter().emit(event_type, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this crate's unit tests that touches the global
    /// emitter (it is one per process).
    #[test]
    fn init_global_returns_a_failed_start_and_stays_startable() {
        let dir = tempfile::tempdir().unwrap();
        // The log's directory cannot be made under a regular file.
        let blocker = dir.path().join("logs");
        std::fs::write(&blocker, "not a directory").unwrap();
        let emitter = Emitter::builder()
            .log_dir(blocker.join("here"))
            .quiet()
            .build()
            .unwrap();
        match init_global(emitter) {
            Err(InitGlobalError::Start(EmitterError::Log(_))) => {}
            other => panic!("expected the start's error, got {other:?}"),
        }
        let again = Emitter::builder().no_log().quiet().build().unwrap();
        assert!(matches!(
            init_global(again),
            Err(InitGlobalError::AlreadySet(_))
        ));
        std::fs::remove_file(&blocker).unwrap();
        get_emitter().start().unwrap();
        emit_event("note", serde_json::json!({"n": 1})).unwrap();
        get_emitter().stop().unwrap();
    }
}
