//! The raw state of a bucket as flat hash fields (pure, no I/O): how
//! [`BucketStats`] is kept in a Redis hash so that several writers can add
//! to it with atomic increments.
//!
//! | field                      | kind  | meaning                                   |
//! |----------------------------|-------|-------------------------------------------|
//! | `events`, `critic_decisions`, `critic_rejected`, `validations`, `validations_passed`, `tasks_finished`, `retries_sum`, `completions` | int | counters |
//! | `busy_seconds`, `total_cost`, `feature_cost`, `ttc_sum` | float | sums |
//! | `type:<event_type>`        | int   | events of that type                       |
//! | `agent_busy:<agent>`, `agent_cost:<agent>`, `agent_dur_sum:<agent>` | float | per-agent sums |
//! | `agent_runs:<agent>`, `agent_failures:<agent>`, `agent_dur_n:<agent>`, `agent_events:<agent>` | int | per-agent counters; their presence marks the agent as seen |
//! | `feat_cost:<f>`, `feat_ttc_sum:<f>` | float | per-feature sums             |
//! | `feat_queued:<f>`, `feat_val:<f>`, `feat_ttc_n:<f>` | int | per-feature counters |
//! | `done:<feature>`           | flag  | the feature completed in the bucket (set union: `HSET` to 1) |
//! | `hist:<bin>`, `hist_zeros`, `hist_count` | int | the time-to-completion histogram |
//!
//! Names come last in a field, so they may contain `:`. Unknown fields are
//! ignored when reading (writers may add bookkeeping such as `applied:<hub>`).

use std::collections::HashMap;
use std::sync::Arc;

use super::bucket::{AgentStats, BucketStats, FeatureStats};

/// How a field is combined when written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue {
    /// `HINCRBY`.
    Int(u64),
    /// `HINCRBYFLOAT`.
    Float(f64),
    /// `HSET field 1`: set membership, idempotent.
    Flag,
}

/// The increments that add `b` to a stored bucket. Zero-valued counters of
/// an agent are kept: they mark the agent as seen.
pub fn to_fields(b: &BucketStats) -> Vec<(String, RawValue)> {
    use RawValue::{Flag, Float, Int};
    let mut out = Vec::with_capacity(16 + b.per_agent.len() * 6 + b.per_feature.len() * 5);
    let int = |out: &mut Vec<_>, k: &str, v: u64| {
        if v > 0 {
            out.push((k.to_string(), Int(v)));
        }
    };
    int(&mut out, "events", b.events);
    int(&mut out, "critic_decisions", b.critic_decisions);
    int(&mut out, "critic_rejected", b.critic_rejected);
    int(&mut out, "validations", b.validations);
    int(&mut out, "validations_passed", b.validations_passed);
    int(&mut out, "tasks_finished", b.tasks_finished);
    int(&mut out, "retries_sum", b.retries_sum);
    int(&mut out, "completions", b.completions);
    int(&mut out, "hist_count", b.ttc_histogram.count);
    int(&mut out, "hist_zeros", b.ttc_histogram.zeros);
    for (k, v) in [
        ("busy_seconds", b.busy_seconds),
        ("total_cost", b.total_cost),
        ("feature_cost", b.feature_cost),
        ("ttc_sum", b.ttc_sum),
    ] {
        if v != 0.0 {
            out.push((k.to_string(), Float(v)));
        }
    }
    for (t, n) in &b.events_by_type {
        out.push((format!("type:{t}"), Int(*n)));
    }
    for (bin, n) in &b.ttc_histogram.bins {
        out.push((format!("hist:{bin}"), Int(*n)));
    }
    for (a, s) in &b.per_agent {
        out.push((format!("agent_busy:{a}"), Float(s.busy_seconds)));
        out.push((format!("agent_cost:{a}"), Float(s.cost_usd)));
        out.push((format!("agent_dur_sum:{a}"), Float(s.duration_ms_sum)));
        out.push((format!("agent_runs:{a}"), Int(s.runs)));
        out.push((format!("agent_failures:{a}"), Int(s.failures)));
        out.push((format!("agent_dur_n:{a}"), Int(s.duration_ms_count)));
        if s.events > 0 {
            out.push((format!("agent_events:{a}"), Int(s.events)));
        }
    }
    for (f, s) in &b.per_feature {
        out.push((format!("feat_cost:{f}"), Float(s.cost_usd)));
        out.push((format!("feat_ttc_sum:{f}"), Float(s.ttc_sum)));
        out.push((format!("feat_queued:{f}"), Int(s.tasks_queued)));
        out.push((format!("feat_val:{f}"), Int(s.validations)));
        out.push((format!("feat_ttc_n:{f}"), Int(s.ttc_count)));
    }
    for f in &b.features_completed {
        out.push((format!("done:{f}"), Flag));
    }
    out
}

/// Rebuilds a bucket from its stored fields (as `HGETALL` returns them).
/// Unparseable values count as zero; unknown fields are ignored.
pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> BucketStats {
    let mut b = BucketStats::default();
    let mut agents: HashMap<&str, AgentStats> = HashMap::new();
    let mut features: HashMap<&str, FeatureStats> = HashMap::new();
    for (k, v) in fields {
        let int = || v.parse::<u64>().unwrap_or(0);
        let float = || {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .unwrap_or(0.0)
        };
        match k {
            "events" => b.events = int(),
            "critic_decisions" => b.critic_decisions = int(),
            "critic_rejected" => b.critic_rejected = int(),
            "validations" => b.validations = int(),
            "validations_passed" => b.validations_passed = int(),
            "tasks_finished" => b.tasks_finished = int(),
            "retries_sum" => b.retries_sum = int(),
            "completions" => b.completions = int(),
            "hist_count" => b.ttc_histogram.count = int(),
            "hist_zeros" => b.ttc_histogram.zeros = int(),
            "busy_seconds" => b.busy_seconds = float(),
            "total_cost" => b.total_cost = float(),
            "feature_cost" => b.feature_cost = float(),
            "ttc_sum" => b.ttc_sum = float(),
            _ => {
                let Some((prefix, name)) = k.split_once(':') else {
                    continue;
                };
                match prefix {
                    "type" => b.events_by_type.update(&Arc::from(name), |c| *c += int()),
                    "hist" => {
                        if let Ok(bin) = name.parse::<i32>() {
                            b.ttc_histogram.bins.insert(bin, int());
                        }
                    }
                    "done" => {
                        b.features_completed.insert(Arc::from(name));
                    }
                    "agent_busy" => agents.entry(name).or_default().busy_seconds = float(),
                    "agent_cost" => agents.entry(name).or_default().cost_usd = float(),
                    "agent_dur_sum" => agents.entry(name).or_default().duration_ms_sum = float(),
                    "agent_runs" => agents.entry(name).or_default().runs = int(),
                    "agent_failures" => agents.entry(name).or_default().failures = int(),
                    "agent_dur_n" => agents.entry(name).or_default().duration_ms_count = int(),
                    "agent_events" => agents.entry(name).or_default().events = int(),
                    "feat_cost" => features.entry(name).or_default().cost_usd = float(),
                    "feat_ttc_sum" => features.entry(name).or_default().ttc_sum = float(),
                    "feat_queued" => features.entry(name).or_default().tasks_queued = int(),
                    "feat_val" => features.entry(name).or_default().validations = int(),
                    "feat_ttc_n" => features.entry(name).or_default().ttc_count = int(),
                    _ => {}
                }
            }
        }
    }
    let mut agents: Vec<_> = agents.into_iter().collect();
    agents.sort_by(|a, b| a.0.cmp(b.0));
    for (name, s) in agents {
        b.per_agent.update(&Arc::from(name), |x| *x = s);
    }
    let mut features: Vec<_> = features.into_iter().collect();
    features.sort_by(|a, b| a.0.cmp(b.0));
    for (name, s) in features {
        b.per_feature.update(&Arc::from(name), |x| *x = s);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::metrics::{Granularity, MetricsConfig, MetricsEngine};
    use serde_json::json;

    /// Applies increments to a map of strings, as Redis would.
    fn apply(store: &mut HashMap<String, String>, fields: &[(String, RawValue)]) {
        for (k, v) in fields {
            let cur = store.get(k).cloned();
            let new = match v {
                RawValue::Int(n) => (cur.map_or(0, |c| c.parse::<u64>().unwrap()) + n).to_string(),
                RawValue::Float(x) => {
                    (cur.map_or(0.0, |c| c.parse::<f64>().unwrap()) + x).to_string()
                }
                RawValue::Flag => "1".to_string(),
            };
            store.insert(k.clone(), new);
        }
    }

    fn engine_with_workflow(tasks: std::ops::Range<u32>) -> MetricsEngine {
        let mut e = MetricsEngine::new(MetricsConfig::default());
        let t0 = 1_764_576_000.0;
        let mut id = 0;
        let mut ev = |ty: &str, ts: f64, p: serde_json::Value| {
            id += 1;
            e.observe(&Event {
                id,
                event_type: Arc::from(ty),
                timestamp: ts,
                event_id: None,
                payload: p.as_object().unwrap().clone(),
            });
        };
        for t in tasks {
            let task = format!("t{t}");
            let base = t0 + f64::from(t) * 7.0;
            ev(
                "task_queued",
                base,
                json!({"task_id":task,"feature":format!("f:{}", t % 3),"est_cost":1}),
            );
            ev(
                "agent_started",
                base + 1.0,
                json!({"agent":"scribe","task_id":task}),
            );
            ev(
                "agent_completed",
                base + 3.0,
                json!({"agent":"scribe","task_id":task,"status":"success","duration_ms":2000,"cost_usd":0.1}),
            );
            ev(
                "agent_completed",
                base + 4.0,
                json!({"agent":"critic","task_id":task,"status": if t % 2 == 0 {"approved"} else {"rejected"},"duration_ms":10,"cost_usd":0.01}),
            );
            ev(
                "validation_complete",
                base + 6.0,
                json!({"task_id":task,"result":{"passed": t % 4 != 0},"cost":0.2}),
            );
        }
        e
    }

    #[test]
    fn fields_round_trip_and_add_up() {
        let whole = engine_with_workflow(0..40);
        for (start, b) in whole.buckets(Granularity::Hourly) {
            let mut store = HashMap::new();
            apply(&mut store, &to_fields(b));
            let back = from_fields(store.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let len = Granularity::Hourly.length_secs() as f64;
            let (a, r) = (b.kpis(len), back.kpis(len));
            assert_eq!(a.samples, r.samples, "bucket {start}");
            for (x, y) in [
                (a.agent_utilization, r.agent_utilization),
                (a.cost_per_feature, r.cost_per_feature),
                (a.average_retry_count, r.average_retry_count),
                (a.critic_rejection_rate, r.critic_rejection_rate),
                (a.validation_pass_rate, r.validation_pass_rate),
                (a.time_to_completion, r.time_to_completion),
                (a.time_to_completion_p95, r.time_to_completion_p95),
            ] {
                assert!((x - y).abs() < 1e-9, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn two_writers_add_up_to_one() {
        // Each writer sees whole tasks, as two hubs would behind a router.
        let (a, b) = (engine_with_workflow(0..20), engine_with_workflow(20..40));
        let whole = engine_with_workflow(0..40);
        let len = Granularity::Hourly.length_secs() as f64;
        for (start, w) in whole.buckets(Granularity::Hourly) {
            let mut store = HashMap::new();
            for e in [&a, &b] {
                if let Some(part) = e.bucket_set().get(Granularity::Hourly, start) {
                    apply(&mut store, &to_fields(part));
                }
            }
            let merged = from_fields(store.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let (x, y) = (w.kpis(len), merged.kpis(len));
            assert_eq!(x.samples, y.samples);
            assert!((x.cost_per_feature - y.cost_per_feature).abs() < 1e-9);
            assert!((x.agent_utilization - y.agent_utilization).abs() < 1e-9);
        }
    }

    #[test]
    fn names_with_colons_and_unknown_fields() {
        let b = from_fields([
            ("agent_runs:team:scribe", "3"),
            ("done:feat:x", "1"),
            ("applied:hub-7", "12"),
            ("events", "not a number"),
        ]);
        assert_eq!(b.per_agent.get("team:scribe").unwrap().runs, 3);
        assert!(b.features_completed.contains("feat:x"));
        assert_eq!(b.events, 0);
    }
}
