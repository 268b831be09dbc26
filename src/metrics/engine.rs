//! The engine: per-task and per-feature state that turns events into
//! contributions, applied to the buckets of every granularity, to the
//! all-time totals and optionally to a caller's [`BucketSet`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use foldhash::quality::RandomState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::bucket::{AgentRun, BucketSet, BucketStats, Contribution, Granularity};
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
        c
    }

    /// Defaults with a rolling window of `window_minutes`.
    pub fn with_window_minutes(window_minutes: u32) -> Self {
        MetricsConfig {
            window_minutes,
            task_idle_eviction_secs: 86_400.0,
            retention: Retention::for_window(window_minutes),
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
        if self.task_idle_eviction_secs.is_nan() || self.task_idle_eviction_secs < 0.0 {
            self.task_idle_eviction_secs = 86_400.0;
        }
        self
    }
}

/// What the engine remembers of one task.
#[derive(Debug, Clone)]
struct TaskState {
    feature: Option<Arc<str>>,
    queued_at: Option<f64>,
    /// Per agent, the timestamps of its starts not yet completed; the
    /// latest is matched first.
    open: Vec<(Arc<str>, Vec<f64>)>,
    /// Agents whose latest completion on this task failed: their next start
    /// is a retry.
    failed_agents: Vec<Arc<str>>,
    retries: u64,
    validated: bool,
    finished: bool,
    last_seen: f64,
}

impl TaskState {
    fn new(ts: f64) -> Self {
        TaskState {
            feature: None,
            queued_at: None,
            open: Vec::new(),
            failed_agents: Vec::new(),
            retries: 0,
            validated: false,
            finished: false,
            last_seen: ts,
        }
    }
}

/// The state of task `id`, created if new, marked as seen at `ts`. A macro,
/// not a function: a function returning the `get_mut` borrow from its hit
/// branch is rejected by the current borrow checker, and a second lookup
/// would hash the id twice on the hot path.
macro_rules! task_entry {
    ($tasks:expr, $id:expr, $ts:expr) => {
        match $tasks.get_mut($id) {
            Some(task) => {
                task.last_seen = task.last_seen.max($ts);
                task
            }
            None => $tasks
                .entry(Arc::from($id))
                .or_insert_with(|| Box::new(TaskState::new($ts))),
        }
    };
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
    features: HashMap<Arc<str>, FeatureState, RandomState>,
    /// At most the oldest `last_seen` of any task or feature: until the
    /// eviction cutoff passes it, a sweep would find nothing to evict.
    oldest_seen: f64,
    /// Interned event types, agent and feature names: bucket keys share one
    /// allocation per name and match by pointer.
    names: Interner,
    newest_ts: f64,
    /// The start of the minute after the newest timestamp's.
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
            features: HashMap::default(),
            oldest_seen: f64::INFINITY,
            names: Interner::default(),
            newest_ts: f64::NEG_INFINITY,
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

    /// The live view at `now` (Unix seconds; a non-finite `now` reads as 0).
    pub fn snapshot(&self, now: f64) -> MetricsSnapshot {
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
        MetricsSnapshot {
            as_of: now,
            window_minutes: self.config.window_minutes,
            window: window.kpis(span),
            buckets: CurrentBuckets {
                hourly: view(Granularity::Hourly),
                daily: view(Granularity::Daily),
                weekly: view(Granularity::Weekly),
            },
            agents: agent_kpis(&window, span),
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
        let (contribution, span) = self.contribution(event, ts);
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
        if let Some((agent, start, end)) = span {
            self.add_span(&agent, start, end, extra);
        }
        self.events_since_sweep += 1;
        // A sweep visits every task, feature and name, so it waits for at
        // least an eighth as many events as there are tasks: its cost stays
        // a few visits per event however many tasks are open.
        let due = self.events_since_sweep >= EVICTION_EVERY_EVENTS
            || self.newest_ts - self.last_sweep_ts >= EVICTION_EVERY_SECS;
        if due && self.events_since_sweep as usize >= self.tasks.len() / 8 {
            self.sweep();
        }
    }

    /// Moves the newest timestamp to `ts` if later, dropping the buckets that
    /// fall out of retention.
    fn advance(&mut self, ts: f64) {
        if ts.is_nan() || ts <= self.newest_ts {
            return;
        }
        self.newest_ts = ts;
        // Every bucket boundary is a minute boundary: within the minute of
        // the last move, no horizon changes.
        if ts < self.next_minute {
            return;
        }
        self.next_minute = Granularity::Minute.bucket_start(ts).saturating_add(60) as f64;
        for g in Granularity::ALL {
            let keep = self.config.retention.get(g) as i64 - 1;
            let horizon = g
                .bucket_start(ts)
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
    /// to its bucket, plus the busy span it closes, if any.
    fn contribution(
        &mut self,
        fields: &EventFields<'_>,
        ts: f64,
    ) -> (Contribution, Option<(Arc<str>, f64, f64)>) {
        let mut c = Contribution {
            event_type: Some(self.names.get(&fields.event_type)),
            ts,
            agent: fields.agent.as_deref().map(|a| self.names.get(a)),
            ..Contribution::default()
        };
        let task_id = fields.task_id.as_deref();
        let mut span = None;
        match &*fields.event_type {
            "task_queued" => {
                let Some(id) = task_id else { return (c, None) };
                let task = task_entry!(self.tasks, id, ts);
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
                    return (c, None);
                };
                let task = task_entry!(self.tasks, id, ts);
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
                c.cost = cost.unwrap_or(0.0);
                if let Some(agent) = &c.agent {
                    c.run = Some(AgentRun {
                        failed,
                        cost: c.cost,
                        duration_ms,
                    });
                    if &**agent == "critic" {
                        c.critic_rejected = status.and_then(critic_verdict);
                    }
                }
                let mut matched = None;
                if let Some(id) = task_id {
                    let task = task_entry!(self.tasks, id, ts);
                    if let (Some(x), Some(f)) = (cost, &task.feature) {
                        feature_entry(&mut self.features, f, ts).cost += x;
                        c.feature = Some(Arc::clone(f));
                    }
                    if let Some(agent) = &c.agent {
                        matched = pop_start(task, agent);
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
                            span = Some((Arc::clone(agent), s, ts));
                        }
                    }
                }
            }
            "validation_complete" => {
                c.validation_passed = Some(fields.result_passed);
                let cost = amount(fields.cost);
                c.cost = cost.unwrap_or(0.0);
                let Some(id) = task_id else { return (c, None) };
                let task = task_entry!(self.tasks, id, ts);
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
                if !task.finished {
                    task.finished = true;
                    c.finished_retries = Some(task.retries);
                }
            }
            "hitl_escalated" => {
                let Some(id) = task_id else { return (c, None) };
                let task = task_entry!(self.tasks, id, ts);
                if !task.finished {
                    task.finished = true;
                    let attempts = fields
                        .attempts
                        .filter(|a| a.is_finite() && *a >= 0.0)
                        .map_or(0, |a| a.min(f64::from(u32::MAX)) as u64);
                    c.finished_retries = Some(task.retries.max(attempts));
                }
            }
            CRITIC_DECISION => {
                c.critic_rejected = fields.rejected;
            }
            // A model call (from OpenTelemetry): its cost counts like an
            // agent's, for the task's feature and the agent; no run.
            LLM_CALL => {
                let cost = amount(fields.cost_usd);
                c.cost = cost.unwrap_or(0.0);
                if c.agent.is_some() {
                    c.agent_cost = c.cost;
                }
                if let (Some(x), Some(id)) = (cost, task_id) {
                    let task = task_entry!(self.tasks, id, ts);
                    if let Some(f) = &task.feature {
                        feature_entry(&mut self.features, f, ts).cost += x;
                        c.feature = Some(Arc::clone(f));
                    }
                }
            }
            _ => {}
        }
        (c, span)
    }

    /// Evicts idle tasks and feature state, and forgets names no longer
    /// used anywhere.
    fn sweep(&mut self) {
        self.events_since_sweep = 0;
        self.last_sweep_ts = self.newest_ts;
        let cutoff = self.newest_ts - self.config.task_idle_eviction_secs;
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
