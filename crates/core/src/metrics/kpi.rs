//! Serialisable views: the six KPIs with their sample counts, per-agent and
//! per-feature figures, the live snapshot and the offline report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bucket::{AgentStats, BucketStats, FeatureStats};

/// `num / den`, or 0.0 when the denominator is 0 (or the result would not be
/// a finite non-negative number): "no data" reads as 0 and the sample counts
/// beside it tell the two apart.
pub(crate) fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        let r = num / den;
        if r.is_finite() && r >= 0.0 {
            return r;
        }
    }
    0.0
}

/// The six KPIs of a bucket, a window or the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kpis {
    /// Busy seconds / (span × agents seen), in [0, 1].
    pub agent_utilization: f64,
    /// Cost attributed to completed features / features completed.
    pub cost_per_feature: f64,
    /// Retries of finished tasks / tasks finished.
    pub average_retry_count: f64,
    /// Rejections / critic decisions, in [0, 1].
    pub critic_rejection_rate: f64,
    /// Passed / validations, in [0, 1].
    pub validation_pass_rate: f64,
    /// Mean seconds from `task_queued` to the first `validation_complete`.
    pub time_to_completion: f64,
    /// Median time-to-completion, within 2 %.
    pub time_to_completion_p50: f64,
    /// 95th percentile of time-to-completion, within 2 %.
    pub time_to_completion_p95: f64,
    /// The denominators, so that "0" can be told from "no data".
    pub samples: Samples,
}

/// Sample counts behind [`Kpis`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Samples {
    /// Events observed.
    pub events: u64,
    /// Distinct agents seen (utilization's denominator, with the span).
    pub agents: u64,
    /// Distinct features completed (cost_per_feature's denominator).
    pub features_completed: u64,
    /// Tasks finished (average_retry_count's denominator).
    pub tasks_finished: u64,
    /// Critic decisions (critic_rejection_rate's denominator).
    pub critic_decisions: u64,
    /// Validations (validation_pass_rate's denominator).
    pub validations: u64,
    /// Time-to-completion samples (time_to_completion's denominator).
    pub completions: u64,
}

/// One agent's figures over a window or the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentKpis {
    /// Events of the agent (its activity).
    #[serde(default)]
    pub events: u64,
    /// Busy seconds / span, in [0, 1] (concurrent spans add up before the
    /// clamp).
    pub utilization: f64,
    /// Seconds of completed busy spans.
    pub busy_seconds: f64,
    /// `agent_completed` events.
    pub runs: u64,
    /// Those with a failed status.
    pub failures: u64,
    /// Sum of `cost_usd`.
    pub cost_usd: f64,
    /// Mean `duration_ms` over the completions that reported one.
    pub mean_duration_ms: f64,
}

impl AgentKpis {
    /// The figures of `stats` over `span_seconds`.
    pub fn from_stats(stats: &AgentStats, span_seconds: f64) -> Self {
        AgentKpis {
            events: stats.events,
            utilization: ratio(stats.busy_seconds, span_seconds).min(1.0),
            busy_seconds: stats.busy_seconds,
            runs: stats.runs,
            failures: stats.failures,
            cost_usd: stats.cost_usd,
            mean_duration_ms: ratio(stats.duration_ms_sum, stats.duration_ms_count as f64),
        }
    }
}

/// One feature's figures over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureReport {
    /// Costs of the feature's tasks (those arriving once the task's feature
    /// was known).
    pub cost_usd: f64,
    /// Tasks queued for the feature.
    pub tasks: u64,
    /// Whether any of its tasks was validated.
    pub completed: bool,
    /// Mean time-to-completion of its tasks, seconds.
    pub time_to_completion: f64,
}

impl FeatureReport {
    /// The report of `stats`.
    pub fn from_stats(stats: &FeatureStats, completed: bool) -> Self {
        FeatureReport {
            cost_usd: stats.cost_usd,
            tasks: stats.tasks_queued,
            completed,
            time_to_completion: ratio(stats.ttc_sum, stats.ttc_count as f64),
        }
    }
}

/// The offline report: everything the engine has totalled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// KPIs over the whole run (utilization over its observed time range).
    pub overall: Kpis,
    /// Per agent, over the whole run.
    pub agents: BTreeMap<String, AgentKpis>,
    /// Per feature.
    pub features: BTreeMap<String, FeatureReport>,
}

/// One named bucket and its KPIs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketView {
    /// The bucket's name, e.g. `2026-12-02T10:00:00` or `2026-W49`.
    pub key: String,
    /// Its start, Unix seconds.
    pub start: i64,
    /// Its KPIs over the full bucket length.
    pub kpis: Kpis,
}

/// The hourly, daily and weekly buckets containing the snapshot's time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CurrentBuckets {
    /// The current hour.
    pub hourly: BucketView,
    /// The current day.
    pub daily: BucketView,
    /// The current ISO week.
    pub weekly: BucketView,
}

/// The live view of the metrics at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// The moment, Unix seconds.
    pub as_of: f64,
    /// The rolling window's length in minutes.
    pub window_minutes: u32,
    /// KPIs over the rolling window.
    pub window: Kpis,
    /// The buckets containing `as_of`.
    pub buckets: CurrentBuckets,
    /// Per agent, over the rolling window: the most active ones (at most
    /// the `top` the snapshot was asked for, plus any asked for by name).
    pub agents: BTreeMap<String, AgentKpis>,
    /// Agents seen in the window, listed in `agents` or not (the full list
    /// is paged through `/api/agents`).
    #[serde(default)]
    pub agents_total: u64,
    /// Tasks tracked and not yet finished.
    pub open_tasks: u64,
    /// Tasks dropped from memory after being idle.
    pub evicted_tasks: u64,
    /// Events ignored for an unusable timestamp.
    pub ignored_events: u64,
}

// The KPIs read off a bucket: here, beside their definitions, so that the
// buckets (which only count) need nothing from this module.
impl BucketStats {
    /// The KPIs of this state over a period of `span_seconds` (the bucket
    /// length, the window length, or for totals the observed time range).
    /// See the module documentation for the definitions.
    pub fn kpis(&self, span_seconds: f64) -> Kpis {
        let agents = self.per_agent.len() as u64;
        let features_completed =
            self.features_completed.len() as u64 + self.features_completed_other;
        let capacity = if span_seconds.is_finite() && span_seconds > 0.0 {
            span_seconds * agents as f64
        } else {
            0.0
        };
        Kpis {
            agent_utilization: ratio(self.busy_seconds, capacity).min(1.0),
            cost_per_feature: ratio(self.feature_cost, features_completed as f64),
            average_retry_count: ratio(self.retries_sum as f64, self.tasks_finished as f64),
            critic_rejection_rate: ratio(self.critic_rejected as f64, self.critic_decisions as f64),
            validation_pass_rate: ratio(self.validations_passed as f64, self.validations as f64),
            time_to_completion: ratio(self.ttc_sum, self.completions as f64),
            time_to_completion_p50: self.ttc_histogram.quantile(0.50),
            time_to_completion_p95: self.ttc_histogram.quantile(0.95),
            samples: Samples {
                events: self.events,
                agents,
                features_completed,
                tasks_finished: self.tasks_finished,
                critic_decisions: self.critic_decisions,
                validations: self.validations,
                completions: self.completions,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_guards() {
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(ratio(1.0, 4.0), 0.25);
        assert_eq!(ratio(f64::MAX, 1e-300), 0.0);
        assert_eq!(ratio(-1.0, 2.0), 0.0);
    }

    #[test]
    fn kpis_serialise_flat_with_the_documented_keys() {
        let v = serde_json::to_value(Kpis::default()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "agent_utilization",
            "average_retry_count",
            "cost_per_feature",
            "critic_rejection_rate",
            "samples",
            "time_to_completion",
            "time_to_completion_p50",
            "time_to_completion_p95",
            "validation_pass_rate",
        ];
        let mut keys = keys;
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        let samples: Vec<&str> = v["samples"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut samples = samples;
        samples.sort_unstable();
        assert_eq!(
            samples,
            [
                "agents",
                "completions",
                "critic_decisions",
                "events",
                "features_completed",
                "tasks_finished",
                "validations"
            ]
        );
    }
}
