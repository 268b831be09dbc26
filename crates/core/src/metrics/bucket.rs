//! Time buckets: their granularities, boundaries and names, and the additive
//! raw state of one bucket ([`BucketStats`]) from which KPIs are derived.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike};
use serde::{Deserialize, Serialize};

use super::histogram::LogHistogram;
use super::name_map::NameMap;

/// Seconds from the Unix epoch (a Thursday) to the first Monday, 1970-01-05:
/// weeks are aligned on it.
const FIRST_MONDAY: i64 = 4 * 86_400;

/// The size of a time bucket. All buckets are UTC, so every bucket of a
/// granularity has the same length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One minute.
    Minute,
    /// One hour.
    Hourly,
    /// One day, from 00:00 UTC.
    Daily,
    /// One ISO week, from Monday 00:00 UTC.
    Weekly,
}

impl Granularity {
    /// Every granularity, finest first.
    pub const ALL: [Granularity; 4] = [
        Granularity::Minute,
        Granularity::Hourly,
        Granularity::Daily,
        Granularity::Weekly,
    ];

    /// The length of a bucket in seconds.
    pub const fn length_secs(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hourly => 3_600,
            Granularity::Daily => 86_400,
            Granularity::Weekly => 604_800,
        }
    }

    /// The granularity named `name` (`minute`, `hourly`, `daily`, `weekly`).
    pub fn from_name(name: &str) -> Option<Granularity> {
        Granularity::ALL.into_iter().find(|g| g.as_str() == name)
    }

    /// The lowercase name of the granularity (`minute`, `hourly`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hourly => "hourly",
            Granularity::Daily => "daily",
            Granularity::Weekly => "weekly",
        }
    }

    /// Position in [`Granularity::ALL`], for per-granularity arrays.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The start (Unix seconds) of the bucket containing `ts`. A timestamp
    /// exactly on a boundary belongs to the bucket that starts there.
    /// Integer arithmetic after one `floor`, so boundaries are exact;
    /// out-of-range inputs saturate instead of overflowing.
    pub fn bucket_start(self, ts: f64) -> i64 {
        // `as` saturates (and maps NaN to 0), which is all we need here.
        let secs = ts.floor() as i64;
        let offset = if self == Granularity::Weekly {
            FIRST_MONDAY
        } else {
            0
        };
        let shifted = secs.saturating_sub(offset);
        shifted
            .saturating_sub(shifted.rem_euclid(self.length_secs()))
            .saturating_add(offset)
    }

    /// The name of the bucket containing `start`: minute
    /// `YYYY-MM-DDTHH:MM:00`, hourly `YYYY-MM-DDTHH:00:00`, daily
    /// `YYYY-MM-DD`, weekly `YYYY-Www` (ISO week-year and week number).
    /// Outside chrono's range, the start in seconds.
    pub fn bucket_name(self, start: i64) -> String {
        let start = self.bucket_start(start as f64);
        let Some(dt) = DateTime::from_timestamp(start, 0) else {
            return start.to_string();
        };
        match self {
            Granularity::Minute => dt.format("%Y-%m-%dT%H:%M:00").to_string(),
            Granularity::Hourly => dt.format("%Y-%m-%dT%H:00:00").to_string(),
            Granularity::Daily => dt.format("%Y-%m-%d").to_string(),
            Granularity::Weekly => {
                let w = dt.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
        }
    }
}

/// Raw per-agent state of a bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    /// Events of the agent in the bucket: its activity, by which the
    /// bounded views (`/api/metrics`, the all-time totals) rank agents.
    #[serde(default)]
    pub events: u64,
    /// Seconds of completed busy spans clipped to the bucket.
    pub busy_seconds: f64,
    /// `agent_completed` events.
    pub runs: u64,
    /// `agent_completed` events with a failed status.
    pub failures: u64,
    /// Sum of `agent_completed.cost_usd`.
    pub cost_usd: f64,
    /// Sum of `agent_completed.duration_ms`.
    pub duration_ms_sum: f64,
    /// How many `agent_completed` carried a usable `duration_ms`: the
    /// denominator of the mean duration (not every run reports one).
    pub duration_ms_count: u64,
}

impl AgentStats {
    pub(crate) fn merge(&mut self, o: &AgentStats) {
        self.events += o.events;
        self.busy_seconds += o.busy_seconds;
        self.runs += o.runs;
        self.failures += o.failures;
        self.cost_usd += o.cost_usd;
        self.duration_ms_sum += o.duration_ms_sum;
        self.duration_ms_count += o.duration_ms_count;
    }
}

/// Raw per-feature state of a bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Costs that arrived in the bucket for tasks of the feature.
    pub cost_usd: f64,
    /// Tasks of the feature first queued in the bucket.
    pub tasks_queued: u64,
    /// `validation_complete` events of the feature's tasks.
    pub validations: u64,
    /// Sum of the time-to-completion of the feature's tasks, seconds.
    pub ttc_sum: f64,
    /// Number of time-to-completion samples.
    pub ttc_count: u64,
}

impl FeatureStats {
    pub(crate) fn merge(&mut self, o: &FeatureStats) {
        self.cost_usd += o.cost_usd;
        self.tasks_queued += o.tasks_queued;
        self.validations += o.validations;
        self.ttc_sum += o.ttc_sum;
        self.ttc_count += o.ttc_count;
    }
}

/// The additive raw state of one bucket (or of any merge of buckets):
/// counts, sums, sets and a histogram, so that merging two buckets gives
/// exactly the state of observing both. KPIs are derived from it by
/// [`BucketStats::kpis`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketStats {
    /// Events with a timestamp in the bucket.
    pub events: u64,
    /// Those events by `event_type`.
    pub events_by_type: NameMap<u64>,
    /// Seconds of completed agent busy spans clipped to the bucket.
    pub busy_seconds: f64,
    /// Every cost (`agent_completed.cost_usd`, `validation_complete.cost`).
    pub total_cost: f64,
    /// Feature cost attributed to features completed in the bucket.
    pub feature_cost: f64,
    /// Critic decisions.
    pub critic_decisions: u64,
    /// Critic decisions that rejected.
    pub critic_rejected: u64,
    /// `validation_complete` events.
    pub validations: u64,
    /// Those that passed.
    pub validations_passed: u64,
    /// Tasks finished (first validation or escalation) in the bucket.
    pub tasks_finished: u64,
    /// Sum of the retries of those tasks.
    pub retries_sum: u64,
    /// Time-to-completion samples (tasks first validated, with a known
    /// queue time).
    pub completions: u64,
    /// Sum of those times, seconds.
    pub ttc_sum: f64,
    /// Histogram of those times, for percentiles.
    pub ttc_histogram: LogHistogram,
    /// Features completed in the bucket.
    pub features_completed: BTreeSet<Arc<str>>,
    /// Completed features counted without their names: in the bounded
    /// all-time totals, those folded into the `(other)` row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub features_completed_other: u64,
    /// Earliest event timestamp in the bucket.
    pub min_ts: Option<f64>,
    /// Latest event timestamp in the bucket.
    pub max_ts: Option<f64>,
    /// Per agent. Its keys are the agents seen in the bucket: an agent is
    /// seen when it has an event or busy time in the bucket, and both
    /// create its entry, so no separate set is kept.
    pub per_agent: NameMap<AgentStats>,
    /// Per feature.
    pub per_feature: NameMap<FeatureStats>,
}

/// What one event adds to the bucket holding its timestamp (busy time is
/// applied separately, clipped per bucket). Built once per event by the
/// engine and applied to every bucket it touches, so all targets receive
/// identical contributions.
#[derive(Debug, Default)]
pub(crate) struct Contribution {
    /// Interned, so that the per-bucket lookup matches by pointer.
    pub event_type: Option<Arc<str>>,
    pub ts: f64,
    pub agent: Option<Arc<str>>,
    pub run: Option<AgentRun>,
    pub cost: f64,
    /// A cost of the agent outside a run (`llm_call`).
    pub agent_cost: f64,
    pub feature: Option<Arc<str>>,
    pub feature_queued: bool,
    pub feature_validation: bool,
    pub critic_rejected: Option<bool>,
    pub validation_passed: Option<bool>,
    pub finished_retries: Option<u64>,
    pub ttc: Option<f64>,
    pub completed_feature: Option<(Arc<str>, f64)>,
}

/// The agent-side part of an `agent_completed`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AgentRun {
    pub failed: bool,
    pub cost: f64,
    pub duration_ms: Option<f64>,
}

impl BucketStats {
    /// Adds one event's cost, critic decision and validation (the values of
    /// the engine's `PointTotals`): all that readers of these totals alone
    /// (`agentpulse logs --stats`) add.
    pub fn add_totals(
        &mut self,
        cost: f64,
        critic_rejected: Option<bool>,
        validation_passed: Option<bool>,
    ) {
        self.total_cost += cost;
        if let Some(rejected) = critic_rejected {
            self.critic_decisions += 1;
            self.critic_rejected += u64::from(rejected);
        }
        if let Some(passed) = validation_passed {
            self.validations += 1;
            self.validations_passed += u64::from(passed);
        }
    }

    /// An empty bucket.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was recorded in the bucket.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds `other` to `self`: sums add, sets unite, the histogram merges,
    /// min/max combine. Merging is associative and commutative (up to float
    /// rounding of the sums).
    pub fn merge(&mut self, other: &BucketStats) {
        self.events += other.events;
        for (k, n) in &other.events_by_type {
            self.events_by_type.update(k, |c| *c += n);
        }
        self.busy_seconds += other.busy_seconds;
        self.total_cost += other.total_cost;
        self.feature_cost += other.feature_cost;
        self.critic_decisions += other.critic_decisions;
        self.critic_rejected += other.critic_rejected;
        self.validations += other.validations;
        self.validations_passed += other.validations_passed;
        self.tasks_finished += other.tasks_finished;
        self.retries_sum = self.retries_sum.saturating_add(other.retries_sum);
        self.completions += other.completions;
        self.ttc_sum += other.ttc_sum;
        self.ttc_histogram.merge(&other.ttc_histogram);
        for f in &other.features_completed {
            if !self.features_completed.contains(&**f) {
                self.features_completed.insert(Arc::clone(f));
            }
        }
        self.features_completed_other += other.features_completed_other;
        self.min_ts = min_opt(self.min_ts, other.min_ts);
        self.max_ts = max_opt(self.max_ts, other.max_ts);
        for (k, a) in &other.per_agent {
            self.per_agent.update(k, |s| s.merge(a));
        }
        for (k, f) in &other.per_feature {
            self.per_feature.update(k, |s| s.merge(f));
        }
    }

    /// Applies the point contribution of one event.
    pub(crate) fn add(&mut self, c: &Contribution) {
        self.events += 1;
        if let Some(t) = &c.event_type {
            self.events_by_type.update(t, |n| *n += 1);
        }
        self.min_ts = min_opt(self.min_ts, Some(c.ts));
        self.max_ts = max_opt(self.max_ts, Some(c.ts));
        if let Some(agent) = &c.agent {
            self.per_agent.update(agent, |a| {
                a.events += 1;
                if let Some(run) = &c.run {
                    a.runs += 1;
                    a.failures += u64::from(run.failed);
                    a.cost_usd += run.cost;
                    if let Some(d) = run.duration_ms {
                        a.duration_ms_sum += d;
                        a.duration_ms_count += 1;
                    }
                }
                a.cost_usd += c.agent_cost;
            });
        }
        self.add_totals(c.cost, c.critic_rejected, c.validation_passed);
        if let Some(f) = &c.feature {
            self.per_feature.update(f, |fs| {
                fs.cost_usd += c.cost;
                fs.tasks_queued += u64::from(c.feature_queued);
                fs.validations += u64::from(c.feature_validation);
                if let Some(t) = c.ttc {
                    fs.ttc_sum += t;
                    fs.ttc_count += 1;
                }
            });
        }
        if let Some(r) = c.finished_retries {
            self.tasks_finished += 1;
            self.retries_sum = self.retries_sum.saturating_add(r);
        }
        if let Some(t) = c.ttc {
            self.completions += 1;
            self.ttc_sum += t;
            self.ttc_histogram.record(t);
        }
        if let Some((f, amount)) = &c.completed_feature {
            self.feature_cost += amount;
            if !self.features_completed.contains(&**f) {
                self.features_completed.insert(Arc::clone(f));
            }
        }
    }

    /// Adds `secs` of busy time of `agent` (which makes it seen here).
    pub(crate) fn add_busy(&mut self, agent: &Arc<str>, secs: f64) {
        self.busy_seconds += secs;
        self.per_agent.update(agent, |a| a.busy_seconds += secs);
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) | (None, x) => x,
    }
}

/// Buckets of every granularity, keyed by (granularity, bucket start).
/// The engine keeps its buckets in one; [`super::MetricsEngine::observe_into`]
/// accumulates into another (e.g. the increments since a flush).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketSet {
    /// One map per granularity, indexed by [`Granularity::ALL`] order.
    sets: [BTreeMap<i64, BucketStats>; 4],
}

impl BucketSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bucket of granularity `g` starting at `start`, if it has data.
    pub fn get(&self, g: Granularity, start: i64) -> Option<&BucketStats> {
        self.sets[g.index()].get(&start)
    }

    /// Every bucket, by granularity (finest first) then start.
    pub fn iter(&self) -> impl Iterator<Item = (Granularity, i64, &BucketStats)> + '_ {
        Granularity::ALL
            .into_iter()
            .flat_map(move |g| self.of(g).map(move |(s, b)| (g, s, b)))
    }

    /// The buckets of granularity `g`, in start order.
    pub fn of(&self, g: Granularity) -> impl Iterator<Item = (i64, &BucketStats)> + '_ {
        self.sets[g.index()].iter().map(|(&s, b)| (s, b))
    }

    /// Merges every bucket of `other` into the bucket with the same key.
    pub fn merge(&mut self, other: &BucketSet) {
        for (g, start, b) in other.iter() {
            self.entry(g, start).merge(b);
        }
    }

    /// Whether the set holds no bucket.
    pub fn is_empty(&self) -> bool {
        self.sets.iter().all(BTreeMap::is_empty)
    }

    /// The number of buckets, all granularities together.
    pub fn len(&self) -> usize {
        self.sets.iter().map(BTreeMap::len).sum()
    }

    /// Removes every bucket of granularity `g`.
    pub fn clear_granularity(&mut self, g: Granularity) {
        self.sets[g.index()].clear();
    }

    /// Removes every bucket.
    pub fn clear(&mut self) {
        self.sets.iter_mut().for_each(BTreeMap::clear);
    }

    /// The bucket (g, start), created empty if absent.
    pub(crate) fn entry(&mut self, g: Granularity, start: i64) -> &mut BucketStats {
        self.sets[g.index()].entry(start).or_default()
    }

    /// Drops the buckets of `g` that start before `horizon`.
    pub(crate) fn prune(&mut self, g: Granularity, horizon: i64) {
        let set = &mut self.sets[g.index()];
        while set.first_key_value().is_some_and(|(&s, _)| s < horizon) {
            set.pop_first();
        }
    }

    /// The buckets of `g` with start in `[from, to]`.
    pub(crate) fn range(
        &self,
        g: Granularity,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = &BucketStats> + '_ {
        self.sets[g.index()].range(from..=to).map(|(_, b)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Kpis;
    use chrono::{NaiveDate, TimeZone, Utc};

    fn ts(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, mi, s).unwrap().timestamp()
    }

    #[test]
    fn lengths() {
        let lens: Vec<i64> = Granularity::ALL.iter().map(|g| g.length_secs()).collect();
        assert_eq!(lens, [60, 3600, 86400, 604800]);
    }

    #[test]
    fn names_of_each_granularity() {
        let t = ts(2026, 12, 2, 10, 15, 42) as f64 + 0.5;
        let name = |g: Granularity| g.bucket_name(g.bucket_start(t));
        assert_eq!(name(Granularity::Minute), "2026-12-02T10:15:00");
        assert_eq!(name(Granularity::Hourly), "2026-12-02T10:00:00");
        assert_eq!(name(Granularity::Daily), "2026-12-02");
        assert_eq!(name(Granularity::Weekly), "2026-W49");
        assert_eq!(
            Granularity::Weekly.bucket_start(t),
            ts(2026, 11, 30, 0, 0, 0),
            "weeks start on Monday"
        );
    }

    /// (4) Boundary placement: 1 ms before a boundary is in the earlier
    /// bucket, exactly on it in the later one — for the hour, the day and
    /// the ISO week that starts on Monday 2027-01-04.
    #[test]
    fn boundaries_belong_to_the_later_bucket() {
        let b = ts(2027, 1, 4, 0, 0, 0);
        let before = b as f64 - 0.001;
        for g in Granularity::ALL {
            assert_eq!(g.bucket_start(b as f64), b, "{g:?}");
            assert_eq!(g.bucket_start(before), b - g.length_secs(), "{g:?}");
        }
        // 59.999 s into a minute is still that minute.
        let m = ts(2026, 6, 1, 12, 34, 0);
        assert_eq!(Granularity::Minute.bucket_start(m as f64 + 59.999), m);
        assert_eq!(
            Granularity::Hourly.bucket_start(m as f64 + 59.999),
            m - 34 * 60
        );
    }

    #[test]
    fn iso_week_names_at_the_year_boundary() {
        let w = Granularity::Weekly;
        let name_at = |y, m, d| w.bucket_name(w.bucket_start(ts(y, m, d, 12, 0, 0) as f64));
        assert_eq!(name_at(2026, 12, 31), "2026-W53");
        assert_eq!(name_at(2027, 1, 3), "2026-W53");
        assert_eq!(name_at(2027, 1, 4), "2027-W01");
        assert_eq!(name_at(2025, 12, 29), "2026-W01");
        // Cross-check every day of three years against chrono's ISO weeks.
        let mut day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        while day < NaiveDate::from_ymd_opt(2028, 1, 1).unwrap() {
            let t = day.and_hms_opt(23, 59, 59).unwrap().and_utc().timestamp();
            let iso = day.iso_week();
            assert_eq!(
                w.bucket_name(w.bucket_start(t as f64)),
                format!("{}-W{:02}", iso.year(), iso.week())
            );
            day = day.succ_opt().unwrap();
        }
    }

    #[test]
    fn bucket_start_saturates() {
        use Granularity::*;
        // Far ahead: the last whole bucket that starts within an i64 (the
        // figures worked out apart from the code, with unbounded integers).
        let last = [
            (Minute, 9_223_372_036_854_775_800),
            (Hourly, 9_223_372_036_854_774_000),
            (Daily, 9_223_372_036_854_720_000),
            (Weekly, 9_223_372_036_854_201_600),
        ];
        for (g, start) in last {
            assert_eq!(g.bucket_start(f64::MAX), start, "{g:?}");
            assert_eq!(g.bucket_start(f64::INFINITY), start, "{g:?}");
            assert!(i64::MAX - start < g.length_secs(), "{g:?}");
            // Past chrono's range the name is the number.
            assert_eq!(g.bucket_name(i64::MAX), start.to_string(), "{g:?}");
        }
        // Far behind: pinned at the bottom (plus the Monday offset for
        // weeks) instead of overflowing.
        for g in [Minute, Hourly, Daily] {
            assert_eq!(g.bucket_start(f64::MIN), i64::MIN, "{g:?}");
            assert_eq!(g.bucket_name(i64::MIN), i64::MIN.to_string(), "{g:?}");
        }
        assert_eq!(Weekly.bucket_start(f64::MIN), i64::MIN + FIRST_MONDAY);
        // NaN counts as the epoch: its minute, hour and day, and the week
        // from Monday 1969-12-29.
        for g in [Minute, Hourly, Daily] {
            assert_eq!(g.bucket_start(f64::NAN), 0, "{g:?}");
        }
        assert_eq!(Weekly.bucket_start(f64::NAN), -3 * 86_400);
        assert_eq!(Weekly.bucket_name(0), "1970-W01");
    }

    #[test]
    fn empty_kpis_are_zero_with_zero_samples() {
        let k = BucketStats::new().kpis(3600.0);
        assert_eq!(k, Kpis::default());
    }

    #[test]
    fn merge_unites_sets_and_adds_sums() {
        let critic: Arc<str> = Arc::from("critic");
        let f: Arc<str> = Arc::from("f");
        let mut a = BucketStats::new();
        a.add(&Contribution {
            event_type: Some(Arc::from("validation_complete")),
            ts: 10.0,
            agent: Some(Arc::clone(&critic)),
            cost: 0.25,
            completed_feature: Some((Arc::clone(&f), 0.25)),
            validation_passed: Some(true),
            ttc: Some(4.0),
            ..Contribution::default()
        });
        let mut b = a.clone();
        b.min_ts = Some(5.0);
        b.add_busy(&critic, 2.0);
        a.merge(&b);
        assert_eq!(a.events, 2);
        assert_eq!(a.events_by_type["validation_complete"], 2);
        assert_eq!(a.features_completed.len(), 1);
        assert_eq!(a.feature_cost, 0.5);
        assert_eq!(a.min_ts, Some(5.0));
        assert_eq!(a.max_ts, Some(10.0));
        assert_eq!(a.per_agent["critic"].busy_seconds, 2.0);
        assert_eq!(a.ttc_histogram.count, 2);
        let k = a.kpis(60.0);
        assert_eq!(k.cost_per_feature, 0.5);
        assert_eq!(k.validation_pass_rate, 1.0);
        assert_eq!(k.time_to_completion, 4.0);
        assert_eq!(k.agent_utilization, 2.0 / 60.0);
    }

    #[test]
    fn serde_round_trip() {
        let mut a = BucketStats::new();
        a.add(&Contribution {
            event_type: Some(Arc::from("x")),
            ts: 1.5,
            ttc: Some(3.0),
            ..Contribution::default()
        });
        let json = serde_json::to_string(&a).unwrap();
        let back: BucketStats = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        let mut set = BucketSet::new();
        set.entry(Granularity::Daily, 0).merge(&a);
        let back: BucketSet = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);
    }
}
