//! The engine: per-task and per-feature state that turns events into
//! contributions, applied to the buckets of every granularity, to the
//! all-time totals and optionally to a caller's [`BucketSet`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use foldhash::quality::RandomState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::bucket::{
    AgentRun, AgentStats, BucketSet, BucketStats, Contribution, FeatureStats, Granularity,
};
use super::input::EventFields;
use super::kpi::{AgentKpis, BucketView, CurrentBuckets, FeatureReport, MetricsSnapshot, Report};
use crate::event::{Event, NewEvent};

/// The latest usable timestamp, 9999-12-31T23:59:59Z: every bucket up to it
/// has a name. Later events are ignored.
pub const MAX_TIMESTAMP: f64 = 253_402_300_799.0;

/// The largest cost (USD) or duration (ms) taken as data. Larger values are
/// treated as malformed, which keeps every sum finite.
pub const MAX_AMOUNT: f64 = 1e12;

/// The event type of a critic decision.
pub const CRITIC_DECISION: &str = "critic_decision";

/// The event type of one model call (from OpenTelemetry spans): its
/// `cost_usd` counts in `total_cost`, the agent's cost and its task's
/// feature, like an `agent_completed`'s.
pub const LLM_CALL: &str = "llm_call";

/// Statuses of `agent_completed` that count as failed (compared
/// case-insensitively).
pub const FAILED_STATUSES: [&str; 5] = ["failed", "failure", "error", "timeout", "crashed"];

/// Open starts kept per (task, agent): a producer that never completes
/// cannot grow a task without bound. The oldest start is dropped.
const MAX_OPEN_STARTS: usize = 64;

/// The name of the row into which the bounded all-time totals fold their
/// least active names (agents, features, event types).
pub const OTHER: &str = "(other)";

/// Default number of names per section the all-time totals keep.
pub const DEFAULT_MAX_NAMES: usize = 1000;

/// Default number of tasks held in memory (open or finished).
pub const DEFAULT_MAX_OPEN_TASKS: usize = 250_000;

/// Agents listed by [`MetricsEngine::snapshot`] (the most active of the
/// window); `/api/agents` pages through all of them.
pub const DEFAULT_SNAPSHOT_AGENTS: usize = 100;

/// The eviction sweep runs after this many events...
const EVICTION_EVERY_EVENTS: u32 = 1024;
/// ...or once the newest timestamp has advanced by this many seconds.
const EVICTION_EVERY_SECS: f64 = 60.0;

/// The event `record_critic_decision(rejected)` emits: a `critic_decision`
/// with payload `{"rejected": rejected}`.
pub fn critic_decision_event(rejected: bool) -> NewEvent {
    let mut payload = Map::new();
    payload.insert("rejected".to_owned(), Value::Bool(rejected));
    NewEvent::new(CRITIC_DECISION, payload)
}

/// What one event adds to the all-time cost, critic decisions and
/// validations, by the engine's rules (the README's definitions): the one
/// place they are written, used by the engine for every bucket and by
/// readers that need only these totals (`agentpulse logs --stats`), which
/// then skip the per-task state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PointTotals {
    /// `agent_completed.cost_usd`, `validation_complete.cost` or
    /// `llm_call.cost_usd` (0 when absent or out of range).
    pub cost: f64,
    /// `Some(rejected)` for a critic decision: an `agent_completed` of agent
    /// `critic` with status `approved`/`rejected`, or a `critic_decision`.
    pub critic_rejected: Option<bool>,
    /// `Some(passed)` for a `validation_complete`.
    pub validation_passed: Option<bool>,
}

impl PointTotals {
    /// The totals `fields` adds to.
    pub fn of(fields: &EventFields<'_>) -> PointTotals {
        let mut p = PointTotals::default();
        match &*fields.event_type {
            "agent_completed" => {
                p.cost = amount(fields.cost_usd).unwrap_or(0.0);
                if fields.agent.as_deref() == Some("critic") {
                    p.critic_rejected = fields.status.as_deref().and_then(critic_verdict);
                }
            }
            "validation_complete" => {
                p.validation_passed = Some(fields.result_passed);
                p.cost = amount(fields.cost).unwrap_or(0.0);
            }
            CRITIC_DECISION => p.critic_rejected = fields.rejected,
            LLM_CALL => p.cost = amount(fields.cost_usd).unwrap_or(0.0),
            _ => {}
        }
        p
    }
}

/// How many buckets of each granularity the engine keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Minute buckets (the window is built from them).
    pub minute: usize,
    /// Hourly buckets.
    pub hourly: usize,
    /// Daily buckets.
    pub daily: usize,
    /// Weekly buckets.
    pub weekly: usize,
}

impl Retention {
    /// The defaults for a window of `window_minutes`: two spare minutes
    /// beyond the window, a week of hours, a month of days, a quarter of
    /// weeks.
    pub fn for_window(window_minutes: u32) -> Self {
        Retention {
            minute: window_minutes as usize + 2,
            hourly: 168,
            daily: 31,
            weekly: 14,
        }
    }

    /// The retention of `g`.
    pub fn get(&self, g: Granularity) -> usize {
        match g {
            Granularity::Minute => self.minute,
            Granularity::Hourly => self.hourly,
            Granularity::Daily => self.daily,
            Granularity::Weekly => self.weekly,
        }
    }
}

/// Settings of a [`MetricsEngine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsConfig {
    /// Length of the rolling window, minutes.
    pub window_minutes: u32,
    /// Tasks (and feature attribution state) with no event for longer than
    /// this, relative to the newest event timestamp, are evicted.
    pub task_idle_eviction_secs: f64,
    /// Buckets kept per granularity.
    pub retention: Retention,
    /// Names kept per section (agents, features, event types) in the
    /// all-time totals: the most active ones; the others are folded into
    /// one [`OTHER`] row, so the totals stay bounded whatever the names.
    #[serde(default = "default_max_names")]
    pub max_names: usize,
    /// Tasks held in memory at most; past it the least recently active one
    /// is evicted (and counted in `evicted_tasks`).
    #[serde(default = "default_max_open_tasks")]
    pub max_open_tasks: usize,
}

fn default_max_names() -> usize {
    DEFAULT_MAX_NAMES
}

fn default_max_open_tasks() -> usize {
    DEFAULT_MAX_OPEN_TASKS
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self::with_window_minutes(60)
    }
}

impl MetricsConfig {
    /// Defaults, but keeping every hourly, daily and weekly bucket however
    /// old (for offline reports and rebuilds of whole logs).
    pub fn keeping_every_bucket() -> Self {
        let mut c = MetricsConfig::default();
        // Large, yet far from overflowing when multiplied by a bucket length.
        c.retention.hourly = usize::MAX / 4;
        c.retention.daily = usize::MAX / 4;
        c.retention.weekly = usize::MAX / 4;
        c.max_names = usize::MAX / 4;
        c.max_open_tasks = usize::MAX / 4;
        c
    }

    /// Defaults with a rolling window of `window_minutes`.
    pub fn with_window_minutes(window_minutes: u32) -> Self {
        MetricsConfig {
            window_minutes,
            task_idle_eviction_secs: 86_400.0,
            retention: Retention::for_window(window_minutes),
            max_names: DEFAULT_MAX_NAMES,
            max_open_tasks: DEFAULT_MAX_OPEN_TASKS,
        }
    }

    /// Makes the settings usable: a window of at least a minute, enough
    /// minute buckets to cover it, at least one bucket of everything, and a
    /// non-negative idle time.
    fn normalised(mut self) -> Self {
        self.window_minutes = self.window_minutes.max(1);
        let r = &mut self.retention;
        r.minute = r.minute.max(self.window_minutes as usize);
        r.hourly = r.hourly.max(1);
        r.daily = r.daily.max(1);
        r.weekly = r.weekly.max(1);
        self.max_names = self.max_names.max(1);
        self.max_open_tasks = self.max_open_tasks.max(1);
        if self.task_idle_eviction_secs.is_nan() || self.task_idle_eviction_secs < 0.0 {
            self.task_idle_eviction_secs = 86_400.0;
        }
        self
    }
}

/// What the engine remembers of one task.
#[derive(Debug, Clone)]
struct TaskState {
    /// The task's id (the map's key), for the recency queue.
    id: Arc<str>,
    feature: Option<Arc<str>>,
    queued_at: Option<f64>,
    /// Per agent, the timestamps of its starts not yet completed; the
    /// latest is matched first.
    open: Vec<(Arc<str>, Vec<f64>)>,
    /// Agents whose latest completion on this task failed: their next start
    /// is a retry.
    failed_agents: Vec<Arc<str>>,
    /// Agents that have emitted an `agent_completed` on this task: their
    /// spans end with their own completions, not with the validation.
    completed_agents: Vec<Arc<str>>,
    /// Spans ended by the task's `validation_complete` (agent, end): an
    /// agent that completes the task after all continues from there.
    ended_by_validation: Vec<(Arc<str>, f64)>,
    retries: u64,
    validated: bool,
    finished: bool,
    last_seen: f64,
    /// The engine's event sequence number at the task's latest event.
    touched: u64,
}

impl TaskState {
    fn new(id: Arc<str>, ts: f64) -> Self {
        TaskState {
            id,
            feature: None,
            queued_at: None,
            open: Vec::new(),
            failed_agents: Vec::new(),
            completed_agents: Vec::new(),
            ended_by_validation: Vec::new(),
            retries: 0,
            validated: false,
            finished: false,
            last_seen: ts,
            touched: 0,
        }
    }
}

/// The state of task `id`, created if new, marked as seen at `ts`. A macro,
/// not a function: a function returning the `get_mut` borrow from its hit
/// branch is rejected by the current borrow checker, and a second lookup
/// would hash the id twice on the hot path.
macro_rules! task_entry {
    ($self:ident, $id:expr, $ts:expr) => {{
        $self.seq += 1;
        let seq = $self.seq;
        let task = match $self.tasks.get_mut($id) {
            Some(task) => {
                task.last_seen = task.last_seen.max($ts);
                task
            }
            None => {
                let id: Arc<str> = Arc::from($id);
                $self.created_task = true;
                $self
                    .tasks
                    .entry(Arc::clone(&id))
                    .or_insert_with(|| Box::new(TaskState::new(id, $ts)))
            }
        };
        task.touched = seq;
        $self.recency.push_back((seq, Arc::clone(&task.id)));
        task
    }};
}

/// Cost attribution state of one feature. One `attributed` serves every
/// granularity (and the totals): each sees every event in the same order,
/// so per-granularity copies would always be equal.
#[derive(Debug, Clone)]
struct FeatureState {
    cost: f64,
    attributed: f64,
    last_seen: f64,
}

/// The metrics engine. See the module documentation for what it computes.
#[derive(Debug, Clone)]
pub struct MetricsEngine {
    config: MetricsConfig,
    buckets: BucketSet,
    totals: BucketStats,
    /// Boxed: the table doubles as tasks arrive, and moving a 24-byte entry
    /// instead of a ~120-byte one made `observe` ~16% cheaper while it grows.
    tasks: HashMap<Arc<str>, Box<TaskState>, RandomState>,
    /// Task ids in the order of their events (with the sequence number of
    /// each): the least recently active task is the first entry whose
    /// number is still its task's `touched`. Stale entries are skipped, and
    /// the queue is compacted once it is twice the number of tasks.
    recency: std::collections::VecDeque<(u64, Arc<str>)>,
    /// Events that touched a task so far.
    seq: u64,
    /// Whether the current event created a task (to check the bound).
    created_task: bool,
    features: HashMap<Arc<str>, FeatureState, RandomState>,
    /// At most the oldest `last_seen` of any task or feature: until the
    /// eviction cutoff passes it, a sweep would find nothing to evict.
    oldest_seen: f64,
    /// Interned event types, agent and feature names: bucket keys share one
    /// allocation per name and match by pointer.
    names: Interner,
    newest_ts: f64,
    /// The hub's clock, when it drives the engine ([`MetricsEngine::advance_clock`]):
    /// retention and eviction then follow it instead of the newest event.
    clock_now: Option<f64>,
    /// The start of the minute after the reference time's.
    next_minute: f64,
    /// Per granularity, the start of the oldest bucket kept.
    horizon: [i64; 4],
    events_since_sweep: u32,
    last_sweep_ts: f64,
    evicted_tasks: u64,
    ignored_events: u64,
}

impl Default for MetricsEngine {
    fn default() -> Self {
        Self::new(MetricsConfig::default())
    }
}

impl MetricsEngine {
    /// An engine with `config` (out-of-range settings are normalised: a
    /// window of at least one minute, minute retention covering the window,
    /// at least one bucket of each granularity).
    pub fn new(config: MetricsConfig) -> Self {
        MetricsEngine {
            config: config.normalised(),
            buckets: BucketSet::new(),
            totals: BucketStats::new(),
            tasks: HashMap::default(),
            recency: std::collections::VecDeque::new(),
            seq: 0,
            created_task: false,
            features: HashMap::default(),
            oldest_seen: f64::INFINITY,
            names: Interner::default(),
            newest_ts: f64::NEG_INFINITY,
            clock_now: None,
            next_minute: f64::NEG_INFINITY,
            horizon: [i64::MIN; 4],
            events_since_sweep: 0,
            last_sweep_ts: f64::NEG_INFINITY,
            evicted_tasks: 0,
            ignored_events: 0,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }

    /// Observes one event.
    pub fn observe(&mut self, event: &Event) {
        self.observe_impl(&EventFields::from_event(event), None);
    }

    /// Observes one event and applies exactly the same bucket contributions
    /// to `extra` as well (not the totals), e.g. to accumulate the
    /// increments since a last flush.
    pub fn observe_into(&mut self, event: &Event, extra: &mut BucketSet) {
        self.observe_impl(&EventFields::from_event(event), Some(extra));
    }

    /// Observes one event given by the fields the engine reads (e.g. read
    /// straight from a log line with [`EventFields::from_wire`]).
    pub fn observe_fields(&mut self, event: &EventFields<'_>) {
        self.observe_impl(event, None);
    }

    /// The kept buckets of granularity `g`, in start order.
    pub fn buckets(&self, g: Granularity) -> impl Iterator<Item = (i64, &BucketStats)> + '_ {
        self.buckets.of(g)
    }

    /// All kept buckets.
    pub fn bucket_set(&self) -> &BucketSet {
        &self.buckets
    }

    /// The all-time totals (never dropped by retention).
    pub fn totals(&self) -> &BucketStats {
        &self.totals
    }

    /// Tasks tracked and not yet finished.
    pub fn open_tasks(&self) -> u64 {
        self.tasks.values().filter(|t| !t.finished).count() as u64
    }

    /// Tasks evicted after being idle.
    pub fn evicted_tasks(&self) -> u64 {
        self.evicted_tasks
    }

    /// Events ignored for a negative, non-finite or too large timestamp.
    pub fn ignored_events(&self) -> u64 {
        self.ignored_events
    }

    /// Merges `other`'s buckets and totals into this engine (not its task
    /// state, nor its counters). Buckets older than this engine's retention
    /// after the merge are left out.
    pub fn merge_buckets(&mut self, other: &MetricsEngine) {
        self.advance(other.newest_ts);
        for (g, start, b) in other.buckets.iter() {
            if start >= self.horizon[g.index()] {
                self.buckets.entry(g, start).merge(b);
            }
        }
        self.totals.merge(&other.totals);
        self.bound_totals();
    }

    /// Lets the hub's clock drive retention and eviction from now on:
    /// buckets are kept relative to `now`, not to the newest event, so an
    /// event stamped ahead of the clock is counted in its bucket but never
    /// prunes the window. Called before each batch (and before reading the
    /// log back at start); `now` only moves forwards.
    pub fn advance_clock(&mut self, now: f64) {
        if !now.is_finite() {
            return;
        }
        if self.clock_now.is_none_or(|c| now > c) {
            self.clock_now = Some(now);
            self.prune_to(self.reference_now());
        }
    }

    /// The time retention and eviction count back from: the newest event
    /// timestamp seen, but never later than the hub's clock when it drives
    /// the engine. So an event stamped ahead prunes nothing, and history
    /// sent late (a backfill) is kept as an offline report keeps it.
    fn reference_now(&self) -> f64 {
        match self.clock_now {
            Some(c) => c.min(self.newest_ts),
            None => self.newest_ts,
        }
    }

    /// The merge of the minute buckets of the window ending with the minute
    /// containing `now`.
    pub fn window_stats(&self, now: f64) -> BucketStats {
        let g = Granularity::Minute;
        let last = g.bucket_start(now);
        let first = last.saturating_sub((i64::from(self.config.window_minutes) - 1) * 60);
        let mut out = BucketStats::new();
        for b in self.buckets.range(g, first, last) {
            out.merge(b);
        }
        out
    }

    /// The live view at `now` (Unix seconds; a non-finite `now` reads as 0),
    /// listing the [`DEFAULT_SNAPSHOT_AGENTS`] most active agents of the
    /// window.
    pub fn snapshot(&self, now: f64) -> MetricsSnapshot {
        self.snapshot_top(now, DEFAULT_SNAPSHOT_AGENTS, &[])
    }

    /// The live view at `now`, listing the `top` most active agents of the
    /// window (by events) and, whatever their rank, those named in
    /// `include` that were seen (alert rules name theirs). `agents_total`
    /// counts them all.
    pub fn snapshot_top(&self, now: f64, top: usize, include: &[&str]) -> MetricsSnapshot {
        let now = if now.is_finite() { now } else { 0.0 };
        let span = f64::from(self.config.window_minutes) * 60.0;
        let window = self.window_stats(now);
        let view = |g: Granularity| {
            let start = g.bucket_start(now);
            let kpis = self
                .buckets
                .get(g, start)
                .map(|b| b.kpis(g.length_secs() as f64))
                .unwrap_or_default();
            BucketView {
                key: g.bucket_name(start),
                start,
                kpis,
            }
        };
        let mut agents = top_agents(&window, span, top);
        for name in include {
            if let Some(s) = window.per_agent.get(name) {
                agents.insert(name.to_string(), AgentKpis::from_stats(s, span));
            }
        }
        MetricsSnapshot {
            as_of: now,
            window_minutes: self.config.window_minutes,
            window: window.kpis(span),
            buckets: CurrentBuckets {
                hourly: view(Granularity::Hourly),
                daily: view(Granularity::Daily),
                weekly: view(Granularity::Weekly),
            },
            agents,
            agents_total: window.per_agent.len() as u64,
            open_tasks: self.open_tasks(),
            evicted_tasks: self.evicted_tasks,
            ignored_events: self.ignored_events,
        }
    }

    /// The span of the totals: the observed time range, at least 1 s.
    pub fn overall_span(&self) -> f64 {
        match (self.totals.min_ts, self.totals.max_ts) {
            (Some(lo), Some(hi)) => (hi - lo).max(1.0),
            _ => 1.0,
        }
    }

    /// The offline report, from the totals.
    pub fn report(&self) -> Report {
        let span = self.overall_span();
        let t = &self.totals;
        let mut features: BTreeMap<String, FeatureReport> = t
            .per_feature
            .iter()
            .map(|(f, s)| {
                let done = t.features_completed.contains(&**f);
                (f.to_string(), FeatureReport::from_stats(s, done))
            })
            .collect();
        for f in &t.features_completed {
            features
                .entry(f.to_string())
                .or_insert_with(|| FeatureReport {
                    completed: true,
                    ..FeatureReport::default()
                });
        }
        Report {
            overall: t.kpis(span),
            agents: agent_kpis(t, span),
            features,
        }
    }

    fn observe_impl(&mut self, event: &EventFields<'_>, mut extra: Option<&mut BucketSet>) {
        let ts = event.timestamp;
        if !(ts.is_finite() && (0.0..=MAX_TIMESTAMP).contains(&ts)) {
            self.ignored_events += 1;
            return;
        }
        self.advance(ts);
        // Any task or feature this event creates is last seen at `ts`.
        self.oldest_seen = self.oldest_seen.min(ts);
        self.created_task = false;
        let (contribution, spans) = self.contribution(event, ts);
        for g in Granularity::ALL {
            let start = g.bucket_start(ts);
            if start < self.horizon[g.index()] {
                continue;
            }
            self.buckets.entry(g, start).add(&contribution);
            if let Some(x) = extra.as_deref_mut() {
                x.entry(g, start).add(&contribution);
            }
        }
        self.totals.add(&contribution);
        for (agent, start, end) in spans {
            self.add_span(&agent, start, end, extra.as_deref_mut());
        }
        self.bound_totals();
        if self.created_task && self.tasks.len() > self.config.max_open_tasks {
            self.evict_least_recent();
        }
        if self.recency.len() > 2 * self.tasks.len() + 1024 {
            self.compact_recency();
        }
        self.events_since_sweep += 1;
        // A sweep visits every task, feature and name, so it waits for at
        // least an eighth as many events as there are of those: its cost
        // stays a few visits per event however many there are.
        let due = self.events_since_sweep >= EVICTION_EVERY_EVENTS
            || self.reference_now() - self.last_sweep_ts >= EVICTION_EVERY_SECS;
        let visits = self.tasks.len() + self.features.len() + self.names.len();
        if due && self.events_since_sweep as usize >= visits / 8 {
            self.sweep();
        }
    }

    /// Evicts the least recently active tasks until at most
    /// `max_open_tasks` are held.
    fn evict_least_recent(&mut self) {
        while self.tasks.len() > self.config.max_open_tasks {
            let Some((seq, id)) = self.recency.pop_front() else {
                break;
            };
            if self.tasks.get(&*id).is_some_and(|t| t.touched == seq) {
                self.tasks.remove(&*id);
                self.evicted_tasks += 1;
            }
        }
    }

    /// Drops the stale entries of the recency queue (each task keeps only
    /// its latest).
    fn compact_recency(&mut self) {
        let tasks = &self.tasks;
        self.recency
            .retain(|(seq, id)| tasks.get(&**id).is_some_and(|t| t.touched == *seq));
    }

    /// Folds the least active names of the all-time totals into [`OTHER`]
    /// rows once a section holds twice `max_names` (so the folding, which
    /// sorts, runs once per `max_names` new names).
    fn bound_totals(&mut self) {
        let keep = self.config.max_names;
        let t = &mut self.totals;
        if t.per_agent.len() <= 2 * keep
            && t.per_feature.len() <= 2 * keep
            && t.events_by_type.len() <= 2 * keep
            && t.features_completed.len() <= 2 * keep
        {
            return;
        }
        let other = self.names.get(OTHER);
        if t.per_agent.len() > 2 * keep {
            t.per_agent.fold_least_active(
                keep,
                &other,
                |a| a.events as f64 + a.busy_seconds,
                AgentStats::merge,
            );
        }
        if t.per_feature.len() > 2 * keep {
            t.per_feature.fold_least_active(
                keep,
                &other,
                |f| (f.tasks_queued + f.validations) as f64 + f.cost_usd,
                FeatureStats::merge,
            );
        }
        if t.events_by_type.len() > 2 * keep {
            t.events_by_type
                .fold_least_active(keep, &other, |n| *n as f64, |a, b| *a += b);
        }
        if t.features_completed.len() > 2 * keep {
            // Completed features keep their names while they are listed
            // per feature; the others are only counted.
            let listed = &t.per_feature;
            let before = t.features_completed.len();
            t.features_completed
                .retain(|f| listed.contains_key(f) && &**f != OTHER);
            t.features_completed_other += (before - t.features_completed.len()) as u64;
        }
    }

    /// Moves the newest timestamp to `ts` if later, dropping the buckets that
    /// fall out of retention.
    fn advance(&mut self, ts: f64) {
        if ts.is_nan() || ts <= self.newest_ts {
            return;
        }
        self.newest_ts = ts;
        self.prune_to(self.reference_now());
    }

    /// Drops the buckets that fall out of retention counted back from `now`.
    fn prune_to(&mut self, now: f64) {
        // Every bucket boundary is a minute boundary: within the minute of
        // the last move, no horizon changes.
        if now < self.next_minute {
            return;
        }
        self.next_minute = Granularity::Minute.bucket_start(now).saturating_add(60) as f64;
        for g in Granularity::ALL {
            let keep = self.config.retention.get(g) as i64 - 1;
            let horizon = g
                .bucket_start(now)
                .saturating_sub(keep.saturating_mul(g.length_secs()));
            if horizon > self.horizon[g.index()] {
                self.horizon[g.index()] = horizon;
                self.buckets.prune(g, horizon);
            }
        }
    }

    /// Adds the busy span `[start, end)` of `agent`: whole to the totals,
    /// clipped to each kept bucket of each granularity it overlaps. The
    /// horizon bounds the loop, so a bogus span costs at most the retention.
    fn add_span(
        &mut self,
        agent: &Arc<str>,
        start: f64,
        end: f64,
        mut extra: Option<&mut BucketSet>,
    ) {
        self.totals.add_busy(agent, end - start);
        for g in Granularity::ALL {
            let len = g.length_secs();
            let mut b = g.bucket_start(start).max(self.horizon[g.index()]);
            while (b as f64) < end {
                let lo = start.max(b as f64);
                let hi = end.min((b + len) as f64);
                if hi > lo {
                    self.buckets.entry(g, b).add_busy(agent, hi - lo);
                    if let Some(x) = extra.as_deref_mut() {
                        x.entry(g, b).add_busy(agent, hi - lo);
                    }
                }
                b += len;
            }
        }
    }

    /// Updates task and feature state for `event` and returns what it adds
    /// to its bucket, plus the busy spans it closes.
    fn contribution(
        &mut self,
        fields: &EventFields<'_>,
        ts: f64,
    ) -> (Contribution, Vec<(Arc<str>, f64, f64)>) {
        let point = PointTotals::of(fields);
        let mut c = Contribution {
            event_type: Some(self.names.get(&fields.event_type)),
            ts,
            agent: fields.agent.as_deref().map(|a| self.names.get(a)),
            cost: point.cost,
            critic_rejected: point.critic_rejected,
            validation_passed: point.validation_passed,
            ..Contribution::default()
        };
        let task_id = fields.task_id.as_deref();
        let mut spans = Vec::new();
        match &*fields.event_type {
            "task_queued" => {
                let Some(id) = task_id else { return (c, spans) };
                let task = task_entry!(self, id, ts);
                if task.queued_at.is_none() {
                    task.queued_at = Some(ts);
                }
                if task.feature.is_none() {
                    if let Some(f) = fields.feature.as_deref() {
                        let f = self.names.get(f);
                        feature_entry(&mut self.features, &f, ts);
                        task.feature = Some(Arc::clone(&f));
                        c.feature = Some(f);
                        c.feature_queued = true;
                    }
                }
            }
            "agent_started" => {
                let (Some(agent), Some(id)) = (&c.agent, task_id) else {
                    return (c, spans);
                };
                let task = task_entry!(self, id, ts);
                if find_name(&task.failed_agents, agent, |a| a).is_some() {
                    task.retries += 1;
                }
                let starts = match find_name(&task.open, agent, |(a, _)| a) {
                    Some(i) => &mut task.open[i].1,
                    None => {
                        task.open.push((Arc::clone(agent), Vec::new()));
                        &mut task.open.last_mut().expect("just pushed").1
                    }
                };
                if starts.len() >= MAX_OPEN_STARTS {
                    starts.remove(0);
                }
                starts.push(ts);
            }
            "agent_completed" => {
                let status = fields.status.as_deref();
                let failed = status.is_some_and(is_failed_status);
                let cost = amount(fields.cost_usd);
                let duration_ms = amount(fields.duration_ms);
                if c.agent.is_some() {
                    c.run = Some(AgentRun {
                        failed,
                        cost: c.cost,
                        duration_ms,
                    });
                }
                let mut matched = None;
                if let Some(id) = task_id {
                    let task = task_entry!(self, id, ts);
                    if let (Some(x), Some(f)) = (cost, &task.feature) {
                        feature_entry(&mut self.features, f, ts).cost += x;
                        c.feature = Some(Arc::clone(f));
                    }
                    if let Some(agent) = &c.agent {
                        if find_name(&task.completed_agents, agent, |a| a).is_none()
                            && task.completed_agents.len() < MAX_OPEN_STARTS
                        {
                            task.completed_agents.push(Arc::clone(agent));
                        }
                        matched = pop_start(task, agent).or_else(|| {
                            // Its span was ended by the validation: it
                            // continues from there.
                            let i = find_name(&task.ended_by_validation, agent, |(a, _)| a)?;
                            Some(task.ended_by_validation.swap_remove(i).1)
                        });
                        let flagged = find_name(&task.failed_agents, agent, |a| a);
                        match (failed, flagged) {
                            (true, None) => task.failed_agents.push(Arc::clone(agent)),
                            (false, Some(i)) => {
                                task.failed_agents.swap_remove(i);
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(agent) = &c.agent {
                    // Without a matching start, the reported duration places
                    // the span; a start stamped after its completion gives
                    // no span at all.
                    let start = matched.or_else(|| duration_ms.map(|d| ts - d / 1000.0));
                    if let Some(s) = start.map(|s| s.max(0.0)) {
                        if ts > s {
                            spans.push((Arc::clone(agent), s, ts));
                        }
                    }
                }
            }
            "validation_complete" => {
                let Some(id) = task_id else { return (c, spans) };
                let task = task_entry!(self, id, ts);
                if let Some(f) = &task.feature {
                    let fs = feature_entry(&mut self.features, f, ts);
                    fs.cost += c.cost;
                    let unattributed = fs.cost - fs.attributed;
                    fs.attributed = fs.cost;
                    c.feature = Some(Arc::clone(f));
                    c.feature_validation = true;
                    c.completed_feature = Some((Arc::clone(f), unattributed));
                }
                if !task.validated {
                    task.validated = true;
                    c.ttc = task.queued_at.map(|q| (ts - q).max(0.0));
                }
                // The validator's span: an agent with no `agent_completed` of
                // its own on the task (the original's `gemini`) is busy on it
                // from its start to the task's validation.
                let done = &task.completed_agents;
                for (agent, starts) in &mut task.open {
                    if find_name(done, agent, |a| a).is_some() {
                        continue;
                    }
                    if let Some(s) = starts.pop() {
                        let s = s.max(0.0);
                        if ts > s {
                            spans.push((Arc::clone(agent), s, ts));
                        }
                        if task.ended_by_validation.len() < MAX_OPEN_STARTS {
                            task.ended_by_validation.push((Arc::clone(agent), ts));
                        }
                    }
                }
                if !task.finished {
                    task.finished = true;
                    c.finished_retries = Some(task.retries);
                }
            }
            "hitl_escalated" => {
                let Some(id) = task_id else { return (c, spans) };
                let task = task_entry!(self, id, ts);
                if !task.finished {
                    task.finished = true;
                    let attempts = fields
                        .attempts
                        .filter(|a| a.is_finite() && *a >= 0.0)
                        .map_or(0, |a| a.min(f64::from(u32::MAX)) as u64);
                    c.finished_retries = Some(task.retries.max(attempts));
                }
            }
            // A model call (from OpenTelemetry): its cost counts like an
            // agent's, for the task's feature and the agent; no run.
            LLM_CALL => {
                let cost = amount(fields.cost_usd);
                if c.agent.is_some() {
                    c.agent_cost = c.cost;
                }
                if let (Some(x), Some(id)) = (cost, task_id) {
                    let task = task_entry!(self, id, ts);
                    if let Some(f) = &task.feature {
                        feature_entry(&mut self.features, f, ts).cost += x;
                        c.feature = Some(Arc::clone(f));
                    }
                }
            }
            _ => {}
        }
        (c, spans)
    }

    /// Evicts idle tasks and feature state, and forgets names no longer
    /// used anywhere.
    fn sweep(&mut self) {
        self.events_since_sweep = 0;
        self.last_sweep_ts = self.reference_now();
        let cutoff = self.reference_now() - self.config.task_idle_eviction_secs;
        // Visiting every task is what makes a sweep costly: skipped when
        // nothing can be old enough yet.
        if self.oldest_seen < cutoff {
            let before = self.tasks.len();
            let mut oldest = f64::INFINITY;
            self.tasks.retain(|_, t| {
                let keep = t.last_seen >= cutoff;
                if keep {
                    oldest = oldest.min(t.last_seen);
                }
                keep
            });
            self.evicted_tasks += (before - self.tasks.len()) as u64;
            self.features.retain(|_, f| {
                let keep = f.last_seen >= cutoff;
                if keep {
                    oldest = oldest.min(f.last_seen);
                }
                keep
            });
            self.oldest_seen = oldest;
        }
        self.names.sweep();
    }
}

/// The `top` most active agents of `stats` (by events, then busy time,
/// then name).
fn top_agents(stats: &BucketStats, span: f64, top: usize) -> BTreeMap<String, AgentKpis> {
    let mut all: Vec<(&Arc<str>, &AgentStats)> = stats.per_agent.iter().collect();
    if all.len() > top {
        let nth = top.saturating_sub(1).min(all.len() - 1);
        all.select_nth_unstable_by(nth, |a, b| {
            b.1.events
                .cmp(&a.1.events)
                .then_with(|| b.1.busy_seconds.total_cmp(&a.1.busy_seconds))
                .then_with(|| a.0.cmp(b.0))
        });
        all.truncate(top);
    }
    all.into_iter()
        .map(|(a, s)| (a.to_string(), AgentKpis::from_stats(s, span)))
        .collect()
}

fn agent_kpis(stats: &BucketStats, span: f64) -> BTreeMap<String, AgentKpis> {
    stats
        .per_agent
        .iter()
        .map(|(a, s)| (a.to_string(), AgentKpis::from_stats(s, span)))
        .collect()
}

/// Slots of the interner's cache (a power of two).
const NAME_CACHE_SLOTS: usize = 64;

/// One shared `Arc` per name. A few names (event types, agents) come with
/// nearly every event, so a small direct-mapped cache indexed by a cheap
/// hash answers most lookups with one string comparison; misses go to the
/// set, whose keyed hash keeps adversarial names harmless.
#[derive(Debug, Clone)]
struct Interner {
    set: HashSet<Arc<str>>,
    cache: Vec<Option<Arc<str>>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            set: HashSet::new(),
            cache: vec![None; NAME_CACHE_SLOTS],
        }
    }
}

impl Interner {
    /// The shared copy of `name`, allocated only the first time it is seen.
    fn get(&mut self, name: &str) -> Arc<str> {
        let slot = cache_slot(name);
        if let Some(n) = &self.cache[slot] {
            if **n == *name {
                return Arc::clone(n);
            }
        }
        let n = match self.set.get(name) {
            Some(n) => Arc::clone(n),
            None => {
                let n: Arc<str> = Arc::from(name);
                self.set.insert(Arc::clone(&n));
                n
            }
        };
        self.cache[slot] = Some(Arc::clone(&n));
        n
    }

    /// Forgets the names nothing else holds any more (the cache is emptied
    /// first so that it does not keep them alive).
    fn sweep(&mut self) {
        self.cache.iter_mut().for_each(|c| *c = None);
        self.set.retain(|n| Arc::strong_count(n) > 1);
    }

    /// Names remembered.
    fn len(&self) -> usize {
        self.set.len()
    }
}

/// The cache slot of `name`: its length and up to four bytes from each end.
fn cache_slot(name: &str) -> usize {
    let b = name.as_bytes();
    let ends = b.iter().take(4).chain(b.iter().rev().take(4));
    let h = ends.fold(b.len(), |h, &x| {
        h.wrapping_mul(31).wrapping_add(usize::from(x))
    });
    h & (NAME_CACHE_SLOTS - 1)
}

/// The attribution state of feature `f`, created if new, marked as seen.
fn feature_entry<'m>(
    features: &'m mut HashMap<Arc<str>, FeatureState, RandomState>,
    f: &Arc<str>,
    ts: f64,
) -> &'m mut FeatureState {
    // `f` is interned, so the key clone is only a reference count.
    let fs = features.entry(Arc::clone(f)).or_insert(FeatureState {
        cost: 0.0,
        attributed: 0.0,
        last_seen: ts,
    });
    fs.last_seen = fs.last_seen.max(ts);
    fs
}

/// Pops the latest open start of `agent` on `task`. An emptied list stays,
/// keeping its allocation for the agent's next start.
fn pop_start(task: &mut TaskState, agent: &Arc<str>) -> Option<f64> {
    let i = find_name(&task.open, agent, |(a, _)| a)?;
    task.open[i].1.pop()
}

/// The position of `name` in `items`: by pointer first (names are
/// interned, so this is the usual hit), then by value.
fn find_name<T>(items: &[T], name: &Arc<str>, key: impl Fn(&T) -> &Arc<str>) -> Option<usize> {
    items
        .iter()
        .position(|x| Arc::ptr_eq(key(x), name))
        .or_else(|| items.iter().position(|x| **key(x) == **name))
}

/// A cost or duration: a finite number in `[0, MAX_AMOUNT]`.
fn amount(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite() && (0.0..=MAX_AMOUNT).contains(x))
}

/// Whether an `agent_completed` status is a failure.
pub fn is_failed_status(status: &str) -> bool {
    FAILED_STATUSES
        .iter()
        .any(|f| f.eq_ignore_ascii_case(status))
}

/// `Some(rejected)` for a critic's `approved`/`rejected` status.
fn critic_verdict(status: &str) -> Option<bool> {
    if status.eq_ignore_ascii_case("rejected") {
        Some(true)
    } else if status.eq_ignore_ascii_case("approved") {
        Some(false)
    } else {
        None
    }
}
