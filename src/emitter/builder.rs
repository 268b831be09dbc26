//! [`EmitterBuilder`]: the settings an [`Emitter`] is built from.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;

use crate::alerts::{AlertEngine, BudgetTracker};
use crate::clock;
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::pipeline::{PipelineStats, QueuePolicy, Tap};
use crate::schema::Schema;
use crate::sinks::alerts::AlertState;
use crate::sinks::console::{ConsoleSink, Level};
use crate::sinks::jsonl::JsonlConfig;
use crate::sinks::notify::NotifyStats;
use crate::sinks::redis_metrics::Increments;
use crate::sinks::runner::WhenFull;
use crate::sinks::Sink;

use super::{
    metrics_engine, Emitter, EmitterError, Inner, Parts, State, DEFAULT_DEDUP_WINDOW,
    DEFAULT_QUEUE_CAPACITY,
};

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
    cluster: Option<super::ClusterParts>,
    increment_filter: Option<crate::sinks::metrics::IncrementFilter>,
    alerts_gate: Option<crate::sinks::alerts::Gate>,
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
            cluster: None,
            increment_filter: None,
            alerts_gate: None,
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

    /// Records Redis bucket increments only for the events `only` says (a
    /// cluster member: those it appended).
    pub fn metrics_increment_filter(
        mut self,
        only: crate::sinks::metrics::IncrementFilter,
    ) -> Self {
        self.increment_filter = Some(only);
        self
    }

    /// Emits what alert rules and budgets produce, and delivers
    /// notifications, only while `gate` says so (a cluster member: the
    /// holder of the alerts lease).
    pub fn alerts_gate(mut self, gate: crate::sinks::alerts::Gate) -> Self {
        self.alerts_gate = Some(gate);
        self
    }

    /// Makes this emitter a member of a cluster ([`crate::cluster`]): the
    /// events it takes go to `outbox` for their ids instead of being given
    /// ids here, and come back through [`Emitter::feed_tailed`]; the stream
    /// epoch is the cluster's `epoch` (stored beside the log).
    pub fn cluster(mut self, outbox: Box<dyn crate::pipeline::Outbox>, epoch: String) -> Self {
        self.cluster = Some(super::ClusterParts { outbox, epoch });
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
        let rules = config.rules().map_err(|e| ConfigError::Invalid {
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
                cluster: self.cluster.is_some(),
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
                    cluster: self.cluster,
                    increment_filter: self.increment_filter,
                    alerts_gate: self.alerts_gate,
                }))),
            }),
        })
    }
}

/// The log settings the config file's `file` destination asks for (its
/// directory and file name; defaults otherwise).
pub fn jsonl_from_config(config: &Config) -> JsonlConfig {
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
}
