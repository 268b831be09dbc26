//! Budgets: spend per scope and period, `budget_warning` /
//! `budget_exceeded` events, and the "may I spend this?" check.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::event::{Event, NewEvent};
use crate::metrics::{Granularity, MAX_AMOUNT, MAX_TIMESTAMP};

/// Event type emitted when a budget's spend reaches `warn_at` × limit.
pub const BUDGET_WARNING: &str = "budget_warning";
/// Event type emitted when a budget's spend reaches its limit.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";

/// Keys (features, tasks, agents) remembered per budget by default.
pub const DEFAULT_MAX_KEYS: usize = 10_000;
/// Tasks remembered (feature, activity) by default.
pub const DEFAULT_MAX_TASKS: usize = 100_000;
/// Agents remembered per task (for `tasks_blocked` of agent budgets).
const MAX_AGENTS_PER_TASK: usize = 32;

/// Relative tolerance of threshold comparisons, so that ten costs of 0.1
/// reach a limit of 1.0 despite binary rounding.
const EPSILON: f64 = 1e-9;

/// Whether `spend` has reached `threshold` (within [`EPSILON`]).
fn reached(spend: f64, threshold: f64) -> bool {
    spend >= threshold - threshold.abs() * EPSILON
}

/// Whether `spend` is over `limit` (beyond [`EPSILON`]).
fn over(spend: f64, limit: f64) -> bool {
    spend > limit + limit.abs() * EPSILON
}

/// Money as shown in events and views: rounded to 1e-10 USD, so sums print
/// as `0.3`, not `0.30000000000000004`.
fn money(x: f64) -> f64 {
    let r = (x * 1e10).round() / 1e10;
    if r.is_finite() {
        r + 0.0
    } else {
        x
    }
}

/// The start (Unix seconds, UTC) of the period of `period` containing
/// `ts`: 00:00 of the day, Monday 00:00 of the ISO week, the 1st 00:00 of
/// the month; 0 for `lifetime`. A timestamp on a boundary belongs to the
/// period that starts there.
pub fn period_start(period: BudgetPeriod, ts: f64) -> i64 {
    match period {
        BudgetPeriod::Day => Granularity::Daily.bucket_start(ts),
        BudgetPeriod::Week => Granularity::Weekly.bucket_start(ts),
        BudgetPeriod::Month => {
            let day = Granularity::Daily.bucket_start(ts);
            DateTime::from_timestamp(day, 0)
                .and_then(|d| NaiveDate::from_ymd_opt(d.year(), d.month(), 1))
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp())
                .unwrap_or(day)
        }
        BudgetPeriod::Lifetime => 0,
    }
}

/// The end (exclusive) of the period starting at `start`; `None` for
/// `lifetime`.
pub fn period_end(period: BudgetPeriod, start: i64) -> Option<i64> {
    match period {
        BudgetPeriod::Day => Some(start.saturating_add(86_400)),
        BudgetPeriod::Week => Some(start.saturating_add(604_800)),
        BudgetPeriod::Month => {
            let d = DateTime::from_timestamp(start, 0)?;
            let (y, m) = if d.month() == 12 {
                (d.year() + 1, 1)
            } else {
                (d.year(), d.month() + 1)
            };
            Some(
                NaiveDate::from_ymd_opt(y, m, 1)?
                    .and_hms_opt(0, 0, 0)?
                    .and_utc()
                    .timestamp(),
            )
        }
        BudgetPeriod::Lifetime => None,
    }
}

/// A map with a size bound that forgets the least recently used entry.
#[derive(Debug, Clone)]
struct Lru<V> {
    map: HashMap<Arc<str>, (u64, V)>,
    order: BTreeMap<u64, Arc<str>>,
    tick: u64,
    cap: usize,
}

impl<V> Lru<V> {
    fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            cap: cap.max(1),
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|(_, v)| v)
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(_, v)| v)
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.map.iter().map(|(k, (_, v))| (k, v))
    }

    /// The entry of `key`, made most recently used; created with `make`
    /// when absent, evicting the least recently used entry when full. The
    /// flag says whether an entry was evicted.
    fn touch(&mut self, key: &str, make: impl FnOnce() -> V) -> (&mut V, bool) {
        self.tick += 1;
        let tick = self.tick;
        let mut evicted = false;
        let k: Arc<str> = match self.map.get_key_value(key) {
            Some((k, (old, _))) => {
                let k = k.clone();
                self.order.remove(old);
                k
            }
            None => {
                if self.map.len() >= self.cap {
                    if let Some((_, oldest)) = self.order.pop_first() {
                        self.map.remove(&oldest);
                        evicted = true;
                    }
                }
                let k: Arc<str> = Arc::from(key);
                self.map.insert(k.clone(), (tick, make()));
                k
            }
        };
        self.order.insert(tick, k.clone());
        let slot = self.map.get_mut(&k).expect("just inserted");
        slot.0 = tick;
        (&mut slot.1, evicted)
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// What the tracker remembers of a task.
#[derive(Debug, Clone, Default)]
struct TaskInfo {
    /// The `feature` of its `task_queued`.
    feature: Option<Arc<str>>,
    /// Queued or started, and not finished since.
    active: bool,
    /// Agents that started on it (at most [`MAX_AGENTS_PER_TASK`]).
    agents: Vec<Arc<str>>,
}

/// One key's spend in its budget's current period.
#[derive(Debug, Clone, Default)]
struct KeySpend {
    spend: f64,
    warned: bool,
    exceeded: bool,
}

/// One budget's state.
#[derive(Debug, Clone)]
struct BudgetSlot {
    config: BudgetConfig,
    /// Spend per key (`""` for the global scope), all in period `current`.
    keys: Lru<KeySpend>,
    /// The start of the newest period a cost was charged to.
    current: i64,
    evictions: u64,
}

impl BudgetSlot {
    /// Adds `cost` stamped `ts` to `key`; says which threshold it crossed.
    fn add(&mut self, key: &str, cost: f64, ts: f64, late: &mut u64) -> Option<Crossing> {
        let start = period_start(self.config.period, ts);
        if start < self.current {
            // A cost of a period already over: its sums are gone.
            *late += 1;
            return None;
        }
        if start > self.current {
            // Roll-over: fresh sums for every key; past ones are of no
            // further use.
            self.current = start;
            self.keys.clear();
        }
        let (entry, evicted) = self.keys.touch(key, KeySpend::default);
        self.evictions += u64::from(evicted);
        entry.spend += cost;
        let limit = self.config.limit_usd;
        if !entry.exceeded && reached(entry.spend, limit) {
            // A cost that crosses both thresholds at once only reports the
            // second: the warning would come too late to be of use.
            entry.exceeded = true;
            entry.warned = true;
            Some(Crossing::Exceeded)
        } else if !entry.warned && reached(entry.spend, self.config.warn_at * limit) {
            entry.warned = true;
            Some(Crossing::Warning)
        } else {
            None
        }
    }

    /// Whether the tracked period is that of `now` (or later, for events
    /// stamped slightly ahead of the caller's clock).
    fn is_current(&self, now: f64) -> bool {
        self.current >= period_start(self.config.period, now)
    }

    /// The period of `now` and the spend of `key` in it (0 if none).
    fn spend_at(&self, key: &str, now: f64) -> (i64, f64) {
        match self.keys.get(key) {
            Some(k) if self.is_current(now) => (self.current, k.spend),
            _ => (period_start(self.config.period, now), 0.0),
        }
    }

    fn status(&self, index: usize, key: &str, period_start: i64, spend: f64) -> BudgetStatus {
        let c = &self.config;
        let state = if reached(spend, c.limit_usd) {
            BudgetState::Exceeded
        } else if reached(spend, c.warn_at * c.limit_usd) {
            BudgetState::Warning
        } else {
            BudgetState::Ok
        };
        BudgetStatus {
            budget_index: index,
            scope: c.scope,
            period: c.period,
            key: key_opt(key),
            period_start,
            resets_at: period_end(c.period, period_start),
            limit: c.limit_usd,
            warn_at: c.warn_at,
            spend: money(spend),
            remaining: money(c.limit_usd - spend),
            state,
        }
    }
}

fn key_opt(key: &str) -> Option<String> {
    (!key.is_empty()).then(|| key.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crossing {
    Warning,
    Exceeded,
}

/// Where a budget stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetState {
    /// Below `warn_at` × limit.
    Ok,
    /// At or above `warn_at` × limit, below the limit.
    Warning,
    /// At or above the limit.
    Exceeded,
}

/// One budget key's spend in the current period (`GET /api/budgets`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    /// The budget's position in `budgets:`.
    pub budget_index: usize,
    /// Its scope.
    pub scope: BudgetScope,
    /// Its period.
    pub period: BudgetPeriod,
    /// The feature, task or agent; absent for `global`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Start of the period (Unix seconds; 0 for `lifetime`).
    pub period_start: i64,
    /// End of the period (Unix seconds); absent for `lifetime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<i64>,
    /// The limit, USD.
    pub limit: f64,
    /// The warning fraction.
    pub warn_at: f64,
    /// Spend in the period, USD.
    pub spend: f64,
    /// `limit - spend` (negative once overspent).
    pub remaining: f64,
    /// Where it stands.
    pub state: BudgetState,
}

/// The keys a planned spend would be charged to (`GET
/// /api/budgets/check?feature=&task=&agent=&cost=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckKeys<'a> {
    /// The feature. When absent and `task` is known to the tracker, the
    /// task's feature is used.
    pub feature: Option<&'a str>,
    /// The task.
    pub task: Option<&'a str>,
    /// The agent.
    pub agent: Option<&'a str>,
}

/// One budget a planned spend was checked against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetCheck {
    /// The budget as it stands now.
    #[serde(flatten)]
    pub status: BudgetStatus,
    /// Its spend with the planned cost added.
    pub projected: f64,
    /// Whether it blocks the spend: already at its limit, or over it with
    /// the cost.
    pub would_exceed: bool,
}

/// The answer to "may this cost be spent?".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// No applicable budget would be exceeded.
    pub allowed: bool,
    /// The cost checked.
    pub cost: f64,
    /// The feature used (given, or the task's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The budgets that block the spend.
    pub would_exceed: Vec<BudgetCheck>,
    /// Every applicable budget (those whose scope has a key), blocking or not.
    pub checked: Vec<BudgetCheck>,
}

/// A planned cost that cannot be checked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cost must be a finite number >= 0, got {0}")]
pub struct BadCost(pub f64);

/// Counters of the tracker's bounded state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrackerStats {
    /// Tasks remembered.
    pub tasks: usize,
    /// Tasks forgotten to stay within the bound.
    pub task_evictions: u64,
    /// Budget keys remembered, over all budgets.
    pub keys: usize,
    /// Budget keys forgotten to stay within the bound.
    pub key_evictions: u64,
    /// Costs of a period already over for their key (not counted).
    pub late_costs: u64,
    /// Events ignored for an unusable timestamp.
    pub ignored_events: u64,
    /// Events stamped after `now` given to [`BudgetTracker::observe_at`]:
    /// their costs were counted at `now` (a sender's clock running fast must
    /// not move spend into a later period, nor hide it).
    pub future_events: u64,
}

/// Tracks spend against the configured budgets. Pure: fed events, told the
/// time.
#[derive(Debug, Clone)]
pub struct BudgetTracker {
    budgets: Vec<BudgetSlot>,
    tasks: Lru<TaskInfo>,
    task_evictions: u64,
    late_costs: u64,
    ignored_events: u64,
    future_events: u64,
}

impl BudgetTracker {
    /// A tracker of `budgets` with the default bounds.
    pub fn new(budgets: Vec<BudgetConfig>) -> Self {
        BudgetTracker::with_bounds(budgets, DEFAULT_MAX_KEYS, DEFAULT_MAX_TASKS)
    }

    /// A tracker remembering at most `max_keys` keys per budget and
    /// `max_tasks` tasks (each at least 1).
    pub fn with_bounds(budgets: Vec<BudgetConfig>, max_keys: usize, max_tasks: usize) -> Self {
        BudgetTracker {
            budgets: budgets
                .into_iter()
                .map(|config| BudgetSlot {
                    config,
                    keys: Lru::new(max_keys),
                    current: i64::MIN,
                    evictions: 0,
                })
                .collect(),
            tasks: Lru::new(max_tasks),
            task_evictions: 0,
            late_costs: 0,
            ignored_events: 0,
            future_events: 0,
        }
    }

    /// The budgets tracked.
    pub fn budgets(&self) -> impl Iterator<Item = &BudgetConfig> {
        self.budgets.iter().map(|b| &b.config)
    }

    /// Takes in one accepted event; returns the `budget_warning` and
    /// `budget_exceeded` events it causes, stamped with its timestamp.
    /// Only `task_queued`, `agent_started`, `agent_completed`, `llm_call`,
    /// `validation_complete` and `hitl_escalated` are read; every other
    /// type (budget and alert events included, whoever sent them) is
    /// ignored.
    ///
    /// Costs are charged to the period of the event's timestamp; an event
    /// stamped in the future would therefore move a budget into that period
    /// and make every later cost "late". [`BudgetTracker::observe_at`]
    /// guards against that.
    pub fn observe(&mut self, event: &Event) -> Vec<NewEvent> {
        self.observe_inner(event, None)
    }

    /// [`BudgetTracker::observe`], with events stamped after `now` counted
    /// as of `now` (and counted in [`TrackerStats::future_events`]).
    pub fn observe_at(&mut self, event: &Event, now: f64) -> Vec<NewEvent> {
        self.observe_inner(event, Some(now))
    }

    fn observe_inner(&mut self, event: &Event, now: Option<f64>) -> Vec<NewEvent> {
        let ts = event.timestamp;
        let relevant = matches!(
            &*event.event_type,
            "task_queued"
                | "agent_started"
                | "agent_completed"
                | "llm_call"
                | "validation_complete"
                | "hitl_escalated"
        );
        if !relevant || self.budgets.is_empty() {
            return Vec::new();
        }
        if !(ts.is_finite() && (0.0..=MAX_TIMESTAMP).contains(&ts)) {
            self.ignored_events += 1;
            return Vec::new();
        }
        let ts = match now {
            Some(now) if ts > now => {
                self.future_events += 1;
                now
            }
            _ => ts,
        };
        let task_id = event.str_field("task_id").filter(|t| !t.is_empty());
        let agent = event.str_field("agent").filter(|a| !a.is_empty());
        let mut crossings = Vec::new();
        match &*event.event_type {
            "task_queued" => {
                if let Some(t) = task_id {
                    let feature = event.str_field("feature").filter(|f| !f.is_empty());
                    let info = self.task(t);
                    info.active = true;
                    if let Some(f) = feature {
                        info.feature = Some(Arc::from(f));
                    }
                }
            }
            "agent_started" => {
                if let Some(t) = task_id {
                    let info = self.task(t);
                    info.active = true;
                    if let Some(a) = agent {
                        if !info.agents.iter().any(|x| &**x == a)
                            && info.agents.len() < MAX_AGENTS_PER_TASK
                        {
                            info.agents.push(Arc::from(a));
                        }
                    }
                }
            }
            // A model call (OpenTelemetry) spends like an agent's run.
            "agent_completed" | "llm_call" => {
                if let Some(t) = task_id {
                    // Keeps the task recently used; does not activate it.
                    self.task(t);
                }
                if let Some(cost) = cost(event, "cost_usd") {
                    crossings = self.spend(cost, ts, task_id, agent);
                }
            }
            // validation_complete and hitl_escalated finish the task, after
            // its cost is counted.
            finish => {
                if finish == "validation_complete" {
                    if let Some(cost) = cost(event, "cost") {
                        crossings = self.spend(cost, ts, task_id, None);
                    }
                }
                if let Some(t) = task_id {
                    self.task(t).active = false;
                }
            }
        }
        crossings
            .into_iter()
            .map(|(i, key, crossing)| self.crossing_event(i, &key, crossing, ts))
            .collect()
    }

    /// The task's entry, created when unknown.
    fn task(&mut self, task_id: &str) -> &mut TaskInfo {
        let (info, evicted) = self.tasks.touch(task_id, TaskInfo::default);
        self.task_evictions += u64::from(evicted);
        info
    }

    /// Adds `cost` to every budget it applies to; returns the crossings.
    fn spend(
        &mut self,
        cost: f64,
        ts: f64,
        task_id: Option<&str>,
        agent: Option<&str>,
    ) -> Vec<(usize, String, Crossing)> {
        let feature = task_id
            .and_then(|t| self.tasks.get(t))
            .and_then(|i| i.feature.clone());
        let mut out = Vec::new();
        for (i, b) in self.budgets.iter_mut().enumerate() {
            let key = match b.config.scope {
                BudgetScope::Global => Some(""),
                BudgetScope::Feature => feature.as_deref(),
                BudgetScope::Task => task_id,
                BudgetScope::Agent => agent,
            };
            if let Some(key) = key {
                if let Some(c) = b.add(key, cost, ts, &mut self.late_costs) {
                    out.push((i, key.to_string(), c));
                }
            }
        }
        out
    }

    /// Tasks still active within budget `i`'s key.
    fn tasks_blocked(&self, scope: BudgetScope, key: &str) -> u64 {
        let n = match scope {
            BudgetScope::Global => self.tasks.values().filter(|t| t.active).count(),
            BudgetScope::Feature => self
                .tasks
                .values()
                .filter(|t| t.active && t.feature.as_deref() == Some(key))
                .count(),
            BudgetScope::Task => usize::from(self.tasks.get(key).is_some_and(|t| t.active)),
            BudgetScope::Agent => self
                .tasks
                .values()
                .filter(|t| t.active && t.agents.iter().any(|a| &**a == key))
                .count(),
        };
        n as u64
    }

    fn crossing_event(&self, i: usize, key: &str, crossing: Crossing, ts: f64) -> NewEvent {
        let b = &self.budgets[i];
        let c = &b.config;
        let (start, spend) = b.spend_at(key, ts);
        let mut p = Map::new();
        p.insert("current_spend".into(), json!(money(spend)));
        p.insert("limit".into(), json!(c.limit_usd));
        p.insert("remaining".into(), json!(money(c.limit_usd - spend)));
        let ty = match crossing {
            Crossing::Warning => {
                p.insert("warn_at".into(), json!(c.warn_at));
                BUDGET_WARNING
            }
            Crossing::Exceeded => {
                p.insert(
                    "tasks_blocked".into(),
                    Value::from(self.tasks_blocked(c.scope, key)),
                );
                BUDGET_EXCEEDED
            }
        };
        p.insert("scope".into(), Value::from(c.scope.as_str()));
        p.insert("period".into(), Value::from(c.period.as_str()));
        if !key.is_empty() {
            p.insert("key".into(), Value::from(key));
        }
        p.insert("period_start".into(), Value::from(start));
        p.insert("budget_index".into(), Value::from(i));
        NewEvent::new(ty, p).with_timestamp(ts)
    }

    /// Every budget key's spend in the period containing `now`: one entry
    /// per global budget (spend 0 when nothing was spent yet), one per key
    /// with spend in the current period for the others. Ordered by budget,
    /// then key.
    pub fn snapshot(&self, now: f64) -> Vec<BudgetStatus> {
        let mut out = Vec::new();
        for (i, b) in self.budgets.iter().enumerate() {
            if b.config.scope == BudgetScope::Global {
                let (start, spend) = b.spend_at("", now);
                out.push(b.status(i, "", start, spend));
                continue;
            }
            if !b.is_current(now) {
                continue;
            }
            let mut keyed: Vec<BudgetStatus> = b
                .keys
                .iter()
                .map(|(key, k)| b.status(i, key, b.current, k.spend))
                .collect();
            keyed.sort_by(|a, b| a.key.cmp(&b.key));
            out.extend(keyed);
        }
        out
    }

    /// Whether spending `cost` now, charged to `keys`, stays within every
    /// applicable budget. A budget applies when its scope is `global` or its
    /// key is given (the feature may come from the task). It blocks when its
    /// spend has already reached the limit, or the cost would take it over.
    pub fn check(&self, keys: CheckKeys<'_>, cost: f64, now: f64) -> Result<CheckResult, BadCost> {
        if !(cost.is_finite() && cost >= 0.0) {
            return Err(BadCost(cost));
        }
        let feature = keys.feature.map(Arc::from).or_else(|| {
            keys.task
                .and_then(|t| self.tasks.get(t))
                .and_then(|t| t.feature.clone())
        });
        let mut checked = Vec::new();
        for (i, b) in self.budgets.iter().enumerate() {
            let key = match b.config.scope {
                BudgetScope::Global => Some(""),
                BudgetScope::Feature => feature.as_deref(),
                BudgetScope::Task => keys.task,
                BudgetScope::Agent => keys.agent,
            };
            let Some(key) = key else { continue };
            let (start, spend) = b.spend_at(key, now);
            let projected = spend + cost;
            let limit = b.config.limit_usd;
            checked.push(BudgetCheck {
                status: b.status(i, key, start, spend),
                projected: money(projected),
                would_exceed: reached(spend, limit) || over(projected, limit),
            });
        }
        let would_exceed: Vec<BudgetCheck> =
            checked.iter().filter(|c| c.would_exceed).cloned().collect();
        Ok(CheckResult {
            allowed: would_exceed.is_empty(),
            cost,
            feature: feature.map(|f| f.to_string()),
            would_exceed,
            checked,
        })
    }

    /// Counters of the bounded state.
    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            tasks: self.tasks.len(),
            task_evictions: self.task_evictions,
            keys: self.budgets.iter().map(|b| b.keys.len()).sum(),
            key_evictions: self.budgets.iter().map(|b| b.evictions).sum(),
            late_costs: self.late_costs,
            ignored_events: self.ignored_events,
            future_events: self.future_events,
        }
    }
}

/// The event's cost field `key`, when usable: a finite number in
/// `(0, MAX_AMOUNT]` (0 changes nothing).
fn cost(event: &Event, key: &str) -> Option<f64> {
    event
        .f64_field(key)
        .filter(|c| c.is_finite() && *c > 0.0 && *c <= MAX_AMOUNT)
}

// The `budgets:` section of the configuration.

/// What a budget's spend is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetScope {
    /// All spend together.
    Global,
    /// Per feature (the `feature` of the task's `task_queued`).
    Feature,
    /// Per `task_id`.
    Task,
    /// Per `agent`.
    Agent,
}

impl BudgetScope {
    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Global => "global",
            BudgetScope::Feature => "feature",
            BudgetScope::Task => "task",
            BudgetScope::Agent => "agent",
        }
    }
}

/// The period over which a budget's spend is summed (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// From 00:00 UTC.
    Day,
    /// ISO week, from Monday 00:00 UTC.
    Week,
    /// Calendar month, from the 1st 00:00 UTC.
    Month,
    /// Never resets.
    Lifetime,
}

impl BudgetPeriod {
    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
            BudgetPeriod::Lifetime => "lifetime",
        }
    }
}

/// One `budgets:` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// What the spend is grouped by.
    pub scope: BudgetScope,
    /// Over which period it is summed.
    pub period: BudgetPeriod,
    /// The limit in USD: finite and > 0.
    pub limit_usd: f64,
    /// Fraction of the limit at which `budget_warning` is emitted, in
    /// (0, 1] (default 0.8).
    #[serde(default = "default_warn_at")]
    pub warn_at: f64,
}

fn default_warn_at() -> f64 {
    0.8
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;

    /// Unix seconds of a UTC date and time.
    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> f64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp() as f64
    }

    fn budget(scope: BudgetScope, period: BudgetPeriod, limit: f64) -> BudgetConfig {
        BudgetConfig {
            scope,
            period,
            limit_usd: limit,
            warn_at: 0.8,
        }
    }

    fn ev(ty: &str, ts: f64, payload: serde_json::Value) -> Event {
        Event {
            id: 0,
            event_type: Arc::from(ty),
            timestamp: ts,
            event_id: None,
            payload: payload.as_object().unwrap().clone(),
        }
    }

    fn completed(ts: f64, task: &str, agent: &str, cost: f64) -> Event {
        ev(
            "agent_completed",
            ts,
            json!({"agent": agent, "task_id": task, "status": "success", "cost_usd": cost}),
        )
    }

    fn queued(ts: f64, task: &str, feature: &str) -> Event {
        ev(
            "task_queued",
            ts,
            json!({"task_id": task, "feature": feature}),
        )
    }

    fn started(ts: f64, task: &str, agent: &str) -> Event {
        ev(
            "agent_started",
            ts,
            json!({"task_id": task, "agent": agent}),
        )
    }

    fn validated(ts: f64, task: &str, cost: f64) -> Event {
        ev(
            "validation_complete",
            ts,
            json!({"task_id": task, "result": {"passed": true}, "cost": cost}),
        )
    }

    /// (event type, key, current_spend) of each emitted event.
    fn summary(out: &[NewEvent]) -> Vec<(String, Option<String>, f64)> {
        out.iter()
            .map(|e| {
                (
                    e.event_type.to_string(),
                    e.payload
                        .get("key")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    e.payload["current_spend"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    fn types(out: &[NewEvent]) -> Vec<&str> {
        out.iter().map(|e| &*e.event_type).collect()
    }

    #[test]
    fn periods_start_on_utc_boundaries() {
        use BudgetPeriod::*;
        // Day: midnight UTC; a timestamp on the boundary belongs to the new day.
        assert_eq!(
            period_start(Day, at(2026, 3, 10, 23, 59, 59) + 0.999),
            at(2026, 3, 10, 0, 0, 0) as i64
        );
        assert_eq!(
            period_start(Day, at(2026, 3, 11, 0, 0, 0)),
            at(2026, 3, 11, 0, 0, 0) as i64
        );
        // Week: Monday 00:00 (2026-01-01 is a Thursday; its ISO week starts
        // on Monday 2025-12-29).
        assert_eq!(
            period_start(Week, at(2026, 1, 1, 12, 0, 0)),
            at(2025, 12, 29, 0, 0, 0) as i64
        );
        assert_eq!(
            period_start(Week, at(2026, 1, 4, 23, 59, 59)),
            at(2025, 12, 29, 0, 0, 0) as i64
        );
        assert_eq!(
            period_start(Week, at(2026, 1, 5, 0, 0, 0)),
            at(2026, 1, 5, 0, 0, 0) as i64
        );
        // Month: the 1st, through February and the year's end.
        assert_eq!(
            period_start(Month, at(2026, 2, 28, 23, 59, 59)),
            at(2026, 2, 1, 0, 0, 0) as i64
        );
        assert_eq!(
            period_start(Month, at(2026, 3, 1, 0, 0, 0)),
            at(2026, 3, 1, 0, 0, 0) as i64
        );
        assert_eq!(
            period_start(Month, at(2028, 2, 29, 8, 0, 0)),
            at(2028, 2, 1, 0, 0, 0) as i64
        );
        assert_eq!(
            period_start(Month, at(2026, 12, 31, 23, 59, 59)),
            at(2026, 12, 1, 0, 0, 0) as i64
        );
        assert_eq!(period_start(Lifetime, at(2026, 12, 31, 0, 0, 0)), 0);

        let dec = at(2026, 12, 1, 0, 0, 0) as i64;
        assert_eq!(period_end(Month, dec), Some(at(2027, 1, 1, 0, 0, 0) as i64));
        let feb = at(2026, 2, 1, 0, 0, 0) as i64;
        assert_eq!(period_end(Month, feb), Some(at(2026, 3, 1, 0, 0, 0) as i64));
        assert_eq!(period_end(Day, feb), Some(feb + 86_400));
        assert_eq!(period_end(Week, feb), Some(feb + 604_800));
        assert_eq!(period_end(Lifetime, 0), None);
    }

    #[test]
    fn global_daily_warns_and_exceeds_once_and_rolls_over_at_midnight() {
        let mut t = BudgetTracker::new(vec![budget(BudgetScope::Global, BudgetPeriod::Day, 10.0)]);
        let day = at(2026, 3, 10, 9, 0, 0);
        assert!(t.observe(&completed(day, "t1", "scribe", 7.9)).is_empty());
        let out = t.observe(&completed(day + 1.0, "t1", "scribe", 0.1));
        assert_eq!(summary(&out), [("budget_warning".into(), None, 8.0)]);
        let w = &out[0];
        assert_eq!(w.timestamp, Some(day + 1.0));
        assert_eq!(
            Value::Object(w.payload.clone()),
            json!({
                "current_spend": 8.0, "limit": 10.0, "remaining": 2.0, "warn_at": 0.8,
                "scope": "global", "period": "day",
                "period_start": at(2026, 3, 10, 0, 0, 0) as i64, "budget_index": 0,
            })
        );
        // Warned once only.
        assert!(t
            .observe(&completed(day + 2.0, "t1", "scribe", 1.0))
            .is_empty());
        let out = t.observe(&completed(day + 3.0, "t1", "scribe", 1.5));
        assert_eq!(summary(&out), [("budget_exceeded".into(), None, 10.5)]);
        assert_eq!(out[0].payload["remaining"], -0.5);
        assert_eq!(out[0].payload["limit"], 10.0);
        assert!(out[0].payload.contains_key("tasks_blocked"));
        // Exceeded once only.
        assert!(t
            .observe(&completed(day + 4.0, "t1", "scribe", 5.0))
            .is_empty());

        // One millisecond before midnight still counts for the day...
        let midnight = at(2026, 3, 11, 0, 0, 0);
        assert!(t
            .observe(&completed(midnight - 0.001, "t1", "scribe", 1.0))
            .is_empty());
        let snap = t.snapshot(midnight - 0.001);
        assert_eq!(snap[0].spend, 16.5);
        assert_eq!(snap[0].state, BudgetState::Exceeded);
        // ...and at midnight the sum starts afresh, thresholds too.
        assert!(t
            .observe(&completed(midnight, "t1", "scribe", 7.0))
            .is_empty());
        let snap = t.snapshot(midnight + 1.0);
        assert_eq!(snap[0].spend, 7.0);
        assert_eq!(snap[0].period_start, midnight as i64);
        assert_eq!(snap[0].resets_at, Some(midnight as i64 + 86_400));
        assert_eq!(snap[0].state, BudgetState::Ok);
        let out = t.observe(&completed(midnight + 5.0, "t1", "scribe", 4.0));
        assert_eq!(summary(&out), [("budget_exceeded".into(), None, 11.0)]);
    }

    #[test]
    fn weekly_rolls_over_on_monday_across_the_year_end() {
        let mut t = BudgetTracker::new(vec![budget(BudgetScope::Global, BudgetPeriod::Week, 10.0)]);
        // Thursday 2026-12-31 and Sunday 2027-01-03 are both in 2026-W53.
        assert!(t
            .observe(&completed(at(2026, 12, 31, 12, 0, 0), "t", "a", 5.0))
            .is_empty());
        let out = t.observe(&completed(at(2027, 1, 3, 23, 59, 59), "t", "a", 3.0));
        assert_eq!(types(&out), ["budget_warning"]);
        assert_eq!(
            out[0].payload["period_start"],
            at(2026, 12, 28, 0, 0, 0) as i64
        );
        // Monday 2027-01-04 starts 2027-W01.
        assert!(t
            .observe(&completed(at(2027, 1, 4, 0, 0, 0), "t", "a", 5.0))
            .is_empty());
        assert_eq!(t.snapshot(at(2027, 1, 4, 1, 0, 0))[0].spend, 5.0);
        let out = t.observe(&completed(at(2027, 1, 10, 23, 0, 0), "t", "a", 5.0));
        assert_eq!(types(&out), ["budget_exceeded"]);
    }

    #[test]
    fn monthly_rolls_over_on_the_first() {
        let mut t =
            BudgetTracker::new(vec![budget(BudgetScope::Global, BudgetPeriod::Month, 10.0)]);
        for d in [1, 15, 28] {
            assert!(t
                .observe(&completed(at(2026, 2, d, 12, 0, 0), "t", "a", 2.0))
                .is_empty());
        }
        let out = t.observe(&completed(at(2026, 2, 28, 23, 59, 59), "t", "a", 2.0));
        assert_eq!(summary(&out), [("budget_warning".into(), None, 8.0)]);
        assert!(t
            .observe(&completed(at(2026, 3, 1, 0, 0, 0), "t", "a", 2.0))
            .is_empty());
        let s = &t.snapshot(at(2026, 3, 20, 0, 0, 0))[0];
        assert_eq!(
            (s.spend, s.period_start),
            (2.0, at(2026, 3, 1, 0, 0, 0) as i64)
        );
        assert_eq!(s.resets_at, Some(at(2026, 4, 1, 0, 0, 0) as i64));
        // A new month with nothing spent reads 0.
        assert_eq!(t.snapshot(at(2026, 4, 2, 0, 0, 0))[0].spend, 0.0);
    }

    #[test]
    fn lifetime_never_resets() {
        let mut t = BudgetTracker::new(vec![budget(
            BudgetScope::Global,
            BudgetPeriod::Lifetime,
            1.0,
        )]);
        // Ten costs of 0.1 reach 1.0 despite binary rounding.
        let mut all = Vec::new();
        for i in 0..10 {
            all.extend(t.observe(&completed(at(2020 + i, 1, 1, 0, 0, 0), "t", "a", 0.1)));
        }
        assert_eq!(
            summary(&all),
            [
                ("budget_warning".into(), None, 0.8),
                ("budget_exceeded".into(), None, 1.0)
            ]
        );
        assert_eq!(all[0].payload["period_start"], 0);
        let s = &t.snapshot(at(2040, 1, 1, 0, 0, 0))[0];
        assert_eq!((s.spend, s.remaining, s.resets_at), (1.0, 0.0, None));
    }

    #[test]
    fn model_calls_spend_like_runs() {
        let mut t = BudgetTracker::new(vec![
            budget(BudgetScope::Feature, BudgetPeriod::Day, 1.0),
            budget(BudgetScope::Agent, BudgetPeriod::Day, 1.0),
        ]);
        let t0 = at(2026, 5, 5, 10, 0, 0);
        t.observe(&queued(t0, "t1", "login"));
        let call = |ts: f64, cost: f64| {
            ev(
                "llm_call",
                ts,
                json!({"task_id": "t1", "agent": "planner", "model": "m", "cost_usd": cost}),
            )
        };
        assert!(t.observe(&call(t0 + 1.0, 0.5)).is_empty());
        let out = t.observe(&call(t0 + 2.0, 0.6));
        assert_eq!(
            summary(&out),
            [
                ("budget_exceeded".into(), Some("login".into()), 1.1),
                ("budget_exceeded".into(), Some("planner".into()), 1.1),
            ]
        );
    }

    #[test]
    fn feature_task_and_agent_scopes() {
        let mut t = BudgetTracker::new(vec![
            budget(BudgetScope::Feature, BudgetPeriod::Day, 1.0),
            budget(BudgetScope::Task, BudgetPeriod::Day, 1.0),
            budget(BudgetScope::Agent, BudgetPeriod::Day, 1.0),
        ]);
        let t0 = at(2026, 5, 5, 10, 0, 0);
        t.observe(&queued(t0, "t1", "login"));
        t.observe(&queued(t0, "t2", "login"));
        t.observe(&queued(t0, "t3", "search"));
        // No task_queued: no feature.
        let out = t.observe(&completed(t0 + 1.0, "t9", "scribe", 0.5));
        assert!(out.is_empty());
        let out = t.observe(&completed(t0 + 2.0, "t1", "scribe", 0.4));
        // task t1 at 0.4, login at 0.4, scribe at 0.9: the agent warns.
        assert_eq!(
            summary(&out),
            [("budget_warning".into(), Some("scribe".into()), 0.9)]
        );
        assert_eq!(out[0].payload["scope"], "agent");
        assert_eq!(out[0].payload["budget_index"], 2);
        // Validation costs count for feature and task, not for any agent.
        let out = t.observe(&validated(t0 + 3.0, "t2", 0.45));
        assert_eq!(
            summary(&out),
            [("budget_warning".into(), Some("login".into()), 0.85)]
        );
        let out = t.observe(&completed(t0 + 4.0, "t3", "critic", 0.9));
        assert_eq!(
            summary(&out),
            [
                ("budget_warning".into(), Some("search".into()), 0.9),
                ("budget_warning".into(), Some("t3".into()), 0.9),
                ("budget_warning".into(), Some("critic".into()), 0.9),
            ]
        );
        let out = t.observe(&completed(t0 + 5.0, "t1", "medic", 0.2));
        assert_eq!(
            summary(&out),
            [("budget_exceeded".into(), Some("login".into()), 1.05)]
        );

        let snap = t.snapshot(t0 + 6.0);
        let keys: Vec<(usize, Option<&str>, f64, BudgetState)> = snap
            .iter()
            .map(|s| (s.budget_index, s.key.as_deref(), s.spend, s.state))
            .collect();
        assert_eq!(
            keys,
            [
                (0, Some("login"), 1.05, BudgetState::Exceeded),
                (0, Some("search"), 0.9, BudgetState::Warning),
                (1, Some("t1"), 0.6, BudgetState::Ok),
                (1, Some("t2"), 0.45, BudgetState::Ok),
                (1, Some("t3"), 0.9, BudgetState::Warning),
                (1, Some("t9"), 0.5, BudgetState::Ok),
                (2, Some("critic"), 0.9, BudgetState::Warning),
                (2, Some("medic"), 0.2, BudgetState::Ok),
                (2, Some("scribe"), 0.9, BudgetState::Warning),
            ]
        );
        // The next day, the keyed budgets have nothing to show.
        assert!(t.snapshot(t0 + 86_400.0).is_empty());
    }

    #[test]
    fn tasks_blocked_counts_the_scopes_active_tasks() {
        let mut t = BudgetTracker::new(vec![
            budget(BudgetScope::Global, BudgetPeriod::Day, 10.0),
            budget(BudgetScope::Feature, BudgetPeriod::Day, 10.0),
            budget(BudgetScope::Agent, BudgetPeriod::Day, 10.0),
            budget(BudgetScope::Task, BudgetPeriod::Day, 10.0),
        ]);
        let t0 = at(2026, 5, 5, 10, 0, 0);
        for (task, feature) in [
            ("a1", "A"),
            ("a2", "A"),
            ("a3", "A"),
            ("b1", "B"),
            ("b2", "B"),
        ] {
            t.observe(&queued(t0, task, feature));
        }
        t.observe(&started(t0 + 1.0, "a1", "fixer"));
        t.observe(&started(t0 + 1.0, "b1", "fixer"));
        t.observe(&started(t0 + 1.0, "b2", "fixer"));
        // a3 is validated, b2 escalated: no longer active.
        t.observe(&validated(t0 + 2.0, "a3", 0.0));
        t.observe(&ev(
            "hitl_escalated",
            t0 + 2.0,
            json!({"task_id": "b2", "attempts": 3}),
        ));
        // Started again after finishing: active again.
        t.observe(&validated(t0 + 2.0, "b1", 0.0));
        t.observe(&started(t0 + 3.0, "b1", "fixer"));

        let out = t.observe(&completed(t0 + 4.0, "a1", "fixer", 12.0));
        let blocked: Vec<(&str, Option<&str>, u64)> = out
            .iter()
            .map(|e| {
                (
                    e.payload["scope"].as_str().unwrap(),
                    e.payload.get("key").and_then(Value::as_str),
                    e.payload["tasks_blocked"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            blocked,
            [
                ("global", None, 3),         // a1, a2, b1
                ("feature", Some("A"), 2),   // a1, a2
                ("agent", Some("fixer"), 2), // a1, b1
                ("task", Some("a1"), 1),
            ]
        );
        // The validation that pushes task a2 over its limit also finishes it.
        let out = t.observe(&validated(t0 + 5.0, "a2", 11.0));
        let task = out.iter().find(|e| e.payload["scope"] == "task").unwrap();
        assert_eq!(task.payload["tasks_blocked"], 0);
    }

    #[test]
    fn budget_events_from_anyone_are_not_spend() {
        let mut t = BudgetTracker::new(vec![budget(BudgetScope::Global, BudgetPeriod::Day, 1.0)]);
        let t0 = at(2026, 5, 5, 10, 0, 0);
        // An agent's own budget events, even with cost-like fields.
        for ty in ["budget_warning", "budget_exceeded", "alert_triggered"] {
            let e = ev(
                ty,
                t0,
                json!({"current_spend": 5.0, "limit": 1.0, "cost_usd": 5.0, "cost": 5.0,
                       "remaining": -4.0, "tasks_blocked": 1, "agent": "scribe"}),
            );
            assert!(t.observe(&e).is_empty());
        }
        assert_eq!(t.snapshot(t0)[0].spend, 0.0);
        // They did not stand in for the tracker's own events.
        let out = t.observe(&completed(t0 + 1.0, "t", "scribe", 1.0));
        assert_eq!(types(&out), ["budget_exceeded"]);
        // The tracker's own events, fed back through the pipeline, change nothing.
        for own in out {
            let back = ev(
                &own.event_type,
                own.timestamp.unwrap(),
                Value::Object(own.payload),
            );
            assert!(t.observe(&back).is_empty());
        }
        assert_eq!(t.snapshot(t0 + 2.0)[0].spend, 1.0);
    }

    #[test]
    fn emitted_events_pass_the_contract_schema() {
        let schema = crate::schema::Schema::builtin();
        let mut t = BudgetTracker::new(vec![
            budget(BudgetScope::Global, BudgetPeriod::Day, 1.0),
            budget(BudgetScope::Agent, BudgetPeriod::Week, 2.0),
        ]);
        let t0 = at(2026, 5, 5, 10, 0, 0);
        let mut all = t.observe(&completed(t0, "t", "scribe", 0.9));
        all.extend(t.observe(&completed(t0, "t", "scribe", 0.9)));
        all.extend(t.observe(&completed(t0, "t", "scribe", 0.9)));
        assert_eq!(
            types(&all),
            [
                "budget_warning",
                "budget_exceeded",
                "budget_warning",
                "budget_exceeded"
            ]
        );
        for e in &all {
            schema.validate(e).unwrap_or_else(|err| panic!("{err}"));
        }
    }

    #[test]
    fn unusable_costs_and_timestamps_are_ignored() {
        let mut t = BudgetTracker::new(vec![budget(
            BudgetScope::Global,
            BudgetPeriod::Lifetime,
            1.0,
        )]);
        let t0 = at(2026, 5, 5, 10, 0, 0);
        for cost in [
            json!(-1.0),
            json!("0.5"),
            json!(null),
            json!(2e12),
            json!(0.0),
        ] {
            let e = ev(
                "agent_completed",
                t0,
                json!({"agent": "a", "cost_usd": cost}),
            );
            assert!(t.observe(&e).is_empty());
        }
        for ts in [f64::NAN, -1.0, f64::INFINITY, 1e12] {
            assert!(t.observe(&completed(ts, "t", "a", 5.0)).is_empty());
        }
        assert_eq!(t.stats().ignored_events, 4);
        assert_eq!(t.snapshot(t0)[0].spend, 0.0);
    }

    #[test]
    fn late_and_future_costs() {
        let mut t = BudgetTracker::new(vec![budget(BudgetScope::Agent, BudgetPeriod::Day, 10.0)]);
        let day2 = at(2026, 5, 6, 0, 0, 0);
        t.observe(&completed(day2 - 10.0, "t", "a", 1.0));
        t.observe(&completed(day2 + 10.0, "t", "b", 2.0));
        // The roll-over dropped day 1's sums; a late day-1 cost is not counted.
        assert_eq!(t.stats().keys, 1);
        t.observe(&completed(day2 - 5.0, "t", "a", 1.0));
        assert_eq!(t.stats().late_costs, 1);
        assert_eq!(t.stats().keys, 1);

        // observe_at counts a cost stamped ahead of now as of now.
        let out = t.observe_at(&completed(day2 + 3_600.0, "t", "b", 5.0), day2 + 20.0);
        assert!(out.is_empty());
        assert_eq!(t.stats().future_events, 1);
        let ok = t.observe_at(&completed(day2 + 300.0, "t", "b", 8.0), day2 + 20.0);
        assert_eq!(types(&ok), ["budget_exceeded"]);
        assert_eq!(ok[0].timestamp, Some(day2 + 20.0), "stamped at now");
        assert_eq!(t.stats().future_events, 2);
    }

    // Regression: an agent whose clock ran more than 300 s fast could
    // overspend without a `budget_exceeded`: its costs were dropped.
    #[test]
    fn a_fast_clock_cannot_overspend_unseen() {
        let mut t = BudgetTracker::new(vec![budget(BudgetScope::Global, BudgetPeriod::Day, 1.0)]);
        let now = at(2026, 5, 6, 12, 0, 0);
        let mut out = Vec::new();
        for i in 0..3 {
            // An hour ahead: inside the day the pipeline accepts.
            let ev = completed(now + 3_600.0 + f64::from(i), "t", "a", 0.4);
            out.extend(t.observe_at(&ev, now + f64::from(i)));
        }
        assert_eq!(types(&out), ["budget_warning", "budget_exceeded"]);
        assert!((t.snapshot(now)[0].spend - 1.2).abs() < 1e-9);
        assert_eq!(t.stats().future_events, 3);
    }

    #[test]
    fn state_is_bounded_least_recently_used_first() {
        let mut t = BudgetTracker::with_bounds(
            vec![budget(BudgetScope::Agent, BudgetPeriod::Day, 1.0)],
            2,
            3,
        );
        let t0 = at(2026, 5, 5, 10, 0, 0);
        t.observe(&completed(t0, "t", "a", 0.5));
        t.observe(&completed(t0, "t", "b", 0.5));
        t.observe(&completed(t0, "t", "a", 0.1)); // a is now the most recent
        t.observe(&completed(t0, "t", "c", 0.5)); // evicts b
        let keys: Vec<Option<String>> = t.snapshot(t0).into_iter().map(|s| s.key).collect();
        assert_eq!(keys, [Some("a".into()), Some("c".into())]);
        assert_eq!(t.stats().key_evictions, 1);
        // A forgotten key starts from 0.
        t.observe(&completed(t0, "t", "b", 0.1));
        let b = t
            .snapshot(t0)
            .into_iter()
            .find(|s| s.key.as_deref() == Some("b"));
        assert_eq!(b.unwrap().spend, 0.1);

        for i in 0..10 {
            t.observe(&queued(t0, &format!("q{i}"), "f"));
        }
        let s = t.stats();
        assert_eq!((s.tasks, s.task_evictions), (3, 8));
        assert_eq!(s.keys, 2);

        // Without budgets, nothing is kept.
        let mut none = BudgetTracker::new(Vec::new());
        assert!(none.observe(&queued(t0, "t", "f")).is_empty());
        assert_eq!(none.stats(), TrackerStats::default());
    }

    #[test]
    fn check_answers_may_i_spend() {
        let mut t = BudgetTracker::new(vec![
            budget(BudgetScope::Global, BudgetPeriod::Day, 10.0),
            budget(BudgetScope::Feature, BudgetPeriod::Day, 1.0),
            budget(BudgetScope::Agent, BudgetPeriod::Day, 3.0),
        ]);
        let t0 = at(2026, 5, 5, 10, 0, 0);
        t.observe(&queued(t0, "t1", "login"));
        t.observe(&completed(t0, "t1", "scribe", 0.6));

        // Only the global budget applies without keys.
        let r = t.check(CheckKeys::default(), 0.4, t0).unwrap();
        assert!(r.allowed);
        assert_eq!(r.checked.len(), 1);
        assert_eq!(r.checked[0].projected, 1.0);

        // Reaching the limit exactly is allowed; going over is not.
        let login = CheckKeys {
            feature: Some("login"),
            ..Default::default()
        };
        assert!(t.check(login, 0.4, t0).unwrap().allowed);
        let r = t.check(login, 0.41, t0).unwrap();
        assert!(!r.allowed);
        assert_eq!(r.would_exceed.len(), 1);
        assert_eq!(r.would_exceed[0].status.key.as_deref(), Some("login"));
        assert_eq!(r.would_exceed[0].projected, 1.01);
        assert_eq!(r.checked.len(), 2);

        // The feature can come from a known task.
        let by_task = CheckKeys {
            task: Some("t1"),
            agent: Some("scribe"),
            ..Default::default()
        };
        let r = t.check(by_task, 0.5, t0).unwrap();
        assert_eq!(r.feature.as_deref(), Some("login"));
        assert!(!r.allowed);
        assert_eq!(r.checked.len(), 3);

        // An exhausted budget blocks even a zero cost.
        t.observe(&completed(t0, "t1", "scribe", 0.4));
        let r = t.check(login, 0.0, t0).unwrap();
        assert!(!r.allowed);
        // ...but not the next day.
        assert!(t.check(login, 0.9, t0 + 86_400.0).unwrap().allowed);
        // An unknown feature has spent nothing.
        let other = CheckKeys {
            feature: Some("search"),
            ..Default::default()
        };
        assert!(t.check(other, 1.0, t0).unwrap().allowed);

        assert_eq!(t.check(login, -1.0, t0), Err(BadCost(-1.0)));
        assert!(t.check(login, f64::NAN, t0).is_err());

        let v = serde_json::to_value(t.check(login, 0.5, t0).unwrap()).unwrap();
        assert_eq!(v["allowed"], false);
        assert_eq!(v["would_exceed"][0]["scope"], "feature");
        assert_eq!(v["would_exceed"][0]["state"], "exceeded");
        assert_eq!(v["would_exceed"][0]["projected"], 1.5);
        assert_eq!(v["checked"][0]["scope"], "global");
    }
}
