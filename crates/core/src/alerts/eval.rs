//! Evaluating rules: the alert state machine, active alerts and history.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::rule::{MetricInput, Reading, Rule};
use crate::event::NewEvent;

/// Event type of an alert that fires (or re-notifies).
pub const ALERT_TRIGGERED: &str = "alert_triggered";
/// Event type of an alert that ends.
pub const ALERT_RESOLVED: &str = "alert_resolved";

/// Transitions kept by [`AlertEngine::history`].
pub const HISTORY_LEN: usize = 1_000;

/// Whether an alert fired or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AlertKind {
    /// It fired, or re-notified (`repeat`).
    #[serde(rename = "alert_triggered")]
    Triggered,
    /// It ended.
    #[serde(rename = "alert_resolved")]
    Resolved,
}

impl AlertKind {
    /// The event type.
    pub const fn event_type(self) -> &'static str {
        match self {
            AlertKind::Triggered => ALERT_TRIGGERED,
            AlertKind::Resolved => ALERT_RESOLVED,
        }
    }
}

/// Why an alert ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveReason {
    /// The condition no longer holds.
    ConditionFalse,
    /// Fewer than `min_samples` samples remain: the evidence is gone.
    InsufficientSamples,
}

/// One thing the engine has to say: an alert fired, re-notified or ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// `alert_triggered` or `alert_resolved`.
    #[serde(rename = "type")]
    pub kind: AlertKind,
    /// A re-notification of an alert still active (triggered only).
    pub repeat: bool,
    /// The rule's position in `alerts:`.
    pub rule_index: usize,
    /// The condition as written.
    pub rule: String,
    /// The metric's name (without label).
    pub metric: &'static str,
    /// The agent of a per-agent rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The value read (NaN serialises as `null`).
    pub value: f64,
    /// Its sample count (absent for counters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// The rule's threshold.
    pub threshold: f64,
    /// The rule's operator.
    pub operator: &'static str,
    /// The rule's message.
    pub message: String,
    /// The rule's action.
    pub action: String,
    /// When the alert fired (Unix seconds).
    pub since: f64,
    /// When this was decided (the `now` of the evaluation).
    pub at: f64,
    /// Why it ended (resolved only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ResolveReason>,
}

impl AlertEvent {
    /// The event to emit through the pipeline: type `alert_triggered` or
    /// `alert_resolved`, timestamp `at`, payload `{rule, metric,
    /// agent_name?, value, samples?, threshold, operator, message, action,
    /// rule_index, since}` plus `repeat` (triggered) or `reason` and
    /// `duration_secs` (resolved). The agent is under `agent_name`, not
    /// `agent`, so that the metrics engine does not count the alert as
    /// activity of that agent.
    pub fn to_new_event(&self) -> NewEvent {
        let mut p = Map::new();
        p.insert("rule".into(), Value::from(self.rule.as_str()));
        p.insert("metric".into(), Value::from(self.metric));
        if let Some(agent) = &self.agent {
            p.insert("agent_name".into(), Value::from(agent.as_str()));
        }
        p.insert("value".into(), json!(self.value));
        if let Some(s) = self.samples {
            p.insert("samples".into(), Value::from(s));
        }
        p.insert("threshold".into(), json!(self.threshold));
        p.insert("operator".into(), Value::from(self.operator));
        p.insert("message".into(), Value::from(self.message.as_str()));
        p.insert("action".into(), Value::from(self.action.as_str()));
        p.insert("rule_index".into(), Value::from(self.rule_index));
        p.insert("since".into(), json!(self.since));
        match self.kind {
            AlertKind::Triggered => {
                p.insert("repeat".into(), Value::from(self.repeat));
            }
            AlertKind::Resolved => {
                if let Some(r) = self.reason {
                    p.insert("reason".into(), serde_json::to_value(r).unwrap_or_default());
                }
                p.insert("duration_secs".into(), json!(self.at - self.since));
            }
        }
        NewEvent::new(self.kind.event_type(), p).with_timestamp(self.at)
    }
}

/// An alert that has fired and not ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAlert {
    /// The rule's position in `alerts:`.
    pub rule_index: usize,
    /// The condition as written.
    pub rule: String,
    /// The metric's name.
    pub metric: &'static str,
    /// The agent of a per-agent rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The rule's action.
    pub action: String,
    /// The rule's message.
    pub message: String,
    /// When it fired.
    pub since: f64,
    /// The value at the latest evaluation.
    pub last_value: f64,
    /// When it last notified (fired or repeated).
    pub last_notified: f64,
    /// How many notifications it has sent (1 + repeats).
    pub notifications: u64,
}

/// The alert state machine over a set of rules. Pure: no clock, no I/O.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    rules: Vec<Rule>,
    active: Vec<Option<ActiveAlert>>,
    history: VecDeque<AlertEvent>,
}

impl AlertEngine {
    /// An engine over `rules`, none active.
    pub fn new(rules: Vec<Rule>) -> Self {
        AlertEngine {
            active: vec![None; rules.len()],
            rules,
            history: VecDeque::new(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Evaluates every rule against `input` at time `now` (Unix seconds)
    /// and returns what changed, in rule order:
    ///
    /// - inactive, and the condition holds on at least `min_samples`
    ///   samples: fires (`alert_triggered`, `repeat: false`);
    /// - active and still holding: a re-notification (`repeat: true`) once
    ///   `repeat_interval` has passed since the last notification, else
    ///   nothing;
    /// - active, and the condition no longer holds, or fewer than
    ///   `min_samples` samples remain: resolves (`alert_resolved`, with the
    ///   reason).
    ///
    /// A non-finite `now` evaluates nothing.
    pub fn evaluate(&mut self, input: &MetricInput<'_>, now: f64) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        if !now.is_finite() {
            return out;
        }
        for (rule, slot) in self.rules.iter().zip(self.active.iter_mut()) {
            let (reading, verdict) = rule.condition.test(input, rule.min_samples);
            match (slot.as_mut(), verdict) {
                (None, Some(true)) => {
                    *slot = Some(ActiveAlert {
                        rule_index: rule.index,
                        rule: rule.rule.clone(),
                        metric: rule.condition.metric.name(),
                        agent: rule.condition.metric.agent().map(str::to_string),
                        action: rule.action.clone(),
                        message: rule.message.clone(),
                        since: now,
                        last_value: reading.value,
                        last_notified: now,
                        notifications: 1,
                    });
                    out.push(alert_event(rule, AlertKind::Triggered, reading, now, now));
                }
                (None, _) => {}
                (Some(a), Some(true)) => {
                    a.last_value = reading.value;
                    if now - a.last_notified >= rule.repeat_interval {
                        a.last_notified = now;
                        a.notifications += 1;
                        let mut e = alert_event(rule, AlertKind::Triggered, reading, a.since, now);
                        e.repeat = true;
                        out.push(e);
                    }
                }
                (Some(a), verdict) => {
                    let mut e = alert_event(rule, AlertKind::Resolved, reading, a.since, now);
                    e.reason = Some(if verdict.is_none() {
                        ResolveReason::InsufficientSamples
                    } else {
                        ResolveReason::ConditionFalse
                    });
                    *slot = None;
                    out.push(e);
                }
            }
        }
        for e in out.iter().filter(|e| !e.repeat) {
            if self.history.len() == HISTORY_LEN {
                self.history.pop_front();
            }
            self.history.push_back(e.clone());
        }
        out
    }

    /// The alerts active now, in rule order.
    pub fn active(&self) -> Vec<ActiveAlert> {
        self.active.iter().flatten().cloned().collect()
    }

    /// The last [`HISTORY_LEN`] transitions (fired, resolved; not the
    /// re-notifications), oldest first.
    pub fn history(&self) -> &VecDeque<AlertEvent> {
        &self.history
    }
}

fn alert_event(rule: &Rule, kind: AlertKind, r: Reading, since: f64, at: f64) -> AlertEvent {
    AlertEvent {
        kind,
        repeat: false,
        rule_index: rule.index,
        rule: rule.rule.clone(),
        metric: rule.condition.metric.name(),
        agent: rule.condition.metric.agent().map(str::to_string),
        value: r.value,
        samples: r.samples,
        threshold: rule.condition.threshold,
        operator: rule.condition.op.as_str(),
        message: rule.message.clone(),
        action: rule.action.clone(),
        since,
        at,
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::metrics::{AgentKpis, Kpis, MetricsSnapshot};
    use crate::stats::StatsSnapshot;

    fn rule(index: usize, v: serde_json::Value) -> Rule {
        Rule::parse(index, &v).unwrap()
    }

    fn engine(rules: Vec<serde_json::Value>) -> AlertEngine {
        AlertEngine::new(
            rules
                .into_iter()
                .enumerate()
                .map(|(i, v)| rule(i, v))
                .collect(),
        )
    }

    /// A snapshot whose critic rejection rate is `rate` over `decisions`.
    fn critic(rate: f64, decisions: u64) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        s.window.critic_rejection_rate = rate;
        s.window.samples.critic_decisions = decisions;
        s
    }

    fn eval(e: &mut AlertEngine, snap: &MetricsSnapshot, now: f64) -> Vec<AlertEvent> {
        e.evaluate(&MetricInput::new(snap, StatsSnapshot::default()), now)
    }

    fn kinds(events: &[AlertEvent]) -> Vec<(&'static str, bool)> {
        events
            .iter()
            .map(|e| (e.kind.event_type(), e.repeat))
            .collect()
    }

    const T0: f64 = 1_767_225_600.0; // 2026-01-01T00:00:00Z

    #[test]
    fn fires_once_stays_quiet_repeats_resolves_and_refires() {
        let mut e = engine(vec![json!({
            "condition": "critic_rejection_rate > 0.50",
            "action": "notify_admin",
            "message": "Critic rejecting >50% of tests",
            "repeat_interval": "10m",
        })]);
        assert!(eval(&mut e, &critic(0.4, 10), T0).is_empty());

        let fired = eval(&mut e, &critic(0.6, 10), T0 + 1.0);
        assert_eq!(kinds(&fired), [(ALERT_TRIGGERED, false)]);
        let f = &fired[0];
        assert_eq!(
            (f.value, f.threshold, f.operator, f.metric),
            (0.6, 0.5, ">", "critic_rejection_rate")
        );
        assert_eq!(f.samples, Some(10));
        assert_eq!((f.since, f.at), (T0 + 1.0, T0 + 1.0));

        // Quiet while true, until the interval has passed.
        for dt in [2.0, 60.0, 599.0, 600.9] {
            assert!(eval(&mut e, &critic(0.7, 10), T0 + dt).is_empty(), "{dt}");
        }
        let active = e.active();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].last_value, 0.7);
        assert_eq!(active[0].since, T0 + 1.0);

        let repeat = eval(&mut e, &critic(0.8, 10), T0 + 601.0);
        assert_eq!(kinds(&repeat), [(ALERT_TRIGGERED, true)]);
        assert_eq!(repeat[0].since, T0 + 1.0);
        assert!(eval(&mut e, &critic(0.8, 10), T0 + 1000.0).is_empty());
        assert_eq!(
            kinds(&eval(&mut e, &critic(0.8, 10), T0 + 1201.0)),
            [(ALERT_TRIGGERED, true)]
        );
        assert_eq!(e.active()[0].notifications, 3);
        assert_eq!(e.active()[0].last_notified, T0 + 1201.0);

        let resolved = eval(&mut e, &critic(0.5, 10), T0 + 1300.0);
        assert_eq!(kinds(&resolved), [(ALERT_RESOLVED, false)]);
        assert_eq!(resolved[0].reason, Some(ResolveReason::ConditionFalse));
        assert_eq!(resolved[0].since, T0 + 1.0);
        assert!(e.active().is_empty());
        assert!(eval(&mut e, &critic(0.5, 10), T0 + 1400.0).is_empty());

        // Fires afresh, with a new `since`, right after a resolve.
        let again = eval(&mut e, &critic(0.9, 10), T0 + 1401.0);
        assert_eq!(kinds(&again), [(ALERT_TRIGGERED, false)]);
        assert_eq!(again[0].since, T0 + 1401.0);

        // History holds the transitions only.
        let h: Vec<_> = e.history().iter().map(|h| h.kind).collect();
        assert_eq!(
            h,
            [
                AlertKind::Triggered,
                AlertKind::Resolved,
                AlertKind::Triggered
            ]
        );
        assert!(e.history().iter().all(|h| !h.repeat));
    }

    #[test]
    fn min_samples_gate_firing_and_their_loss_resolves() {
        let mut e = engine(vec![
            json!({"condition": "critic_rejection_rate > 0.5", "action": "a"}),
            json!({"condition": "critic_rejection_rate > 0.5", "action": "a", "min_samples": 0}),
        ]);
        // 4 decisions < default 5: only the min_samples 0 rule fires.
        let fired = eval(&mut e, &critic(1.0, 4), T0);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].rule_index, 1);
        let fired = eval(&mut e, &critic(1.0, 5), T0 + 1.0);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].rule_index, 0);
        // Fewer samples than needed: rule 0 loses its evidence and resolves;
        // for rule 1 (min_samples 0) the value still decides.
        let gone = eval(&mut e, &critic(1.0, 4), T0 + 2.0);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].rule_index, 0);
        assert_eq!(gone[0].reason, Some(ResolveReason::InsufficientSamples));
        // The window empties: the KPI reads 0.0, false for rule 1.
        let gone = eval(&mut e, &critic(0.0, 0), T0 + 3.0);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].rule_index, 1);
        assert_eq!(gone[0].reason, Some(ResolveReason::ConditionFalse));
    }

    #[test]
    fn per_agent_rules() {
        let mut e = engine(vec![json!({
            "condition": "agent_failures{agent=\"medic\"} >= 3",
            "action": "a",
            "min_samples": 3,
        })]);
        let snap = |failures: u64, runs: u64| {
            let mut s = MetricsSnapshot::default();
            s.agents.insert(
                "medic".into(),
                AgentKpis {
                    runs,
                    failures,
                    ..Default::default()
                },
            );
            // Another agent failing does not matter.
            s.agents.insert(
                "critic".into(),
                AgentKpis {
                    runs: 10,
                    failures: 10,
                    ..Default::default()
                },
            );
            s
        };
        assert!(eval(&mut e, &snap(2, 5), T0).is_empty());
        let fired = eval(&mut e, &snap(3, 5), T0 + 1.0);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].agent.as_deref(), Some("medic"));
        assert_eq!(fired[0].metric, "agent_failures");
        let ev = fired[0].to_new_event();
        assert_eq!(ev.payload["agent_name"], "medic");
        assert!(!ev.payload.contains_key("agent"));
        // The agent leaves the window: no samples, resolved.
        let gone = eval(&mut e, &MetricsSnapshot::default(), T0 + 2.0);
        assert_eq!(gone[0].reason, Some(ResolveReason::InsufficientSamples));
        assert_eq!(gone[0].value, 0.0);
    }

    #[test]
    fn counters_ignore_min_samples() {
        let mut e = engine(vec![json!({
            "condition": "events_rejected > 10",
            "action": "a",
            "min_samples": 1000,
        })]);
        let snap = MetricsSnapshot::default();
        let counters = |rejected| StatsSnapshot {
            rejected,
            ..Default::default()
        };
        assert!(e
            .evaluate(&MetricInput::new(&snap, counters(10)), T0)
            .is_empty());
        let fired = e.evaluate(&MetricInput::new(&snap, counters(11)), T0 + 1.0);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].samples, None);
        assert_eq!(fired[0].value, 11.0);
        assert!(!fired[0].to_new_event().payload.contains_key("samples"));
    }

    #[test]
    fn float_edge_cases() {
        let mut e = engine(vec![
            json!({"condition": "cost_per_feature != 1", "action": "a", "min_samples": 0}),
            json!({"condition": "cost_per_feature == 1", "action": "a", "min_samples": 0}),
            json!({"condition": "cost_per_feature >= 1", "action": "a", "min_samples": 0}),
        ]);
        let snap = |v: f64| MetricsSnapshot {
            window: Kpis {
                cost_per_feature: v,
                ..Default::default()
            },
            ..Default::default()
        };
        // NaN holds for no operator, not even `!=`.
        assert!(eval(&mut e, &snap(f64::NAN), T0).is_empty());
        let fired = eval(&mut e, &snap(1.0), T0 + 1.0);
        let idx: Vec<usize> = fired.iter().map(|f| f.rule_index).collect();
        assert_eq!(idx, [1, 2]);
        // Becoming NaN resolves; the value serialises as null.
        let gone = eval(&mut e, &snap(f64::NAN), T0 + 2.0);
        assert_eq!(gone.len(), 2);
        assert!(gone[0].to_new_event().payload["value"].is_null());
        let fired = eval(&mut e, &snap(f64::INFINITY), T0 + 3.0);
        let idx: Vec<usize> = fired.iter().map(|f| f.rule_index).collect();
        assert_eq!(idx, [0, 2]);
        // A non-finite `now` changes nothing.
        assert!(eval(&mut e, &snap(0.0), f64::NAN).is_empty());
        assert_eq!(e.active().len(), 2);
    }

    #[test]
    fn a_clock_going_backwards_does_not_repeat() {
        let mut e = engine(vec![json!({
            "condition": "critic_rejection_rate > 0.5", "action": "a", "repeat_interval": 60,
        })]);
        assert_eq!(eval(&mut e, &critic(1.0, 9), T0).len(), 1);
        assert!(eval(&mut e, &critic(1.0, 9), T0 - 3600.0).is_empty());
        assert_eq!(eval(&mut e, &critic(1.0, 9), T0 + 60.0).len(), 1);
    }

    #[test]
    fn events_and_payloads() {
        let mut e = engine(vec![json!({
            "condition": "critic_rejection_rate > 0.50",
            "action": "notify_admin",
            "message": "Critic rejecting >50% of tests",
            "repeat_interval": 1,
        })]);
        let fired = eval(&mut e, &critic(0.75, 8), T0);
        let ev = fired[0].to_new_event();
        assert_eq!(&*ev.event_type, "alert_triggered");
        assert_eq!(ev.timestamp, Some(T0));
        assert_eq!(
            serde_json::Value::Object(ev.payload),
            json!({
                "rule": "critic_rejection_rate > 0.50",
                "metric": "critic_rejection_rate",
                "value": 0.75,
                "samples": 8,
                "threshold": 0.5,
                "operator": ">",
                "message": "Critic rejecting >50% of tests",
                "action": "notify_admin",
                "rule_index": 0,
                "since": T0,
                "repeat": false,
            })
        );
        let rep = eval(&mut e, &critic(0.75, 8), T0 + 1.0);
        assert_eq!(rep[0].to_new_event().payload["repeat"], true);
        let res = eval(&mut e, &critic(0.25, 8), T0 + 90.0);
        let ev = res[0].to_new_event();
        assert_eq!(&*ev.event_type, "alert_resolved");
        assert_eq!(ev.payload["reason"], "condition_false");
        assert_eq!(ev.payload["duration_secs"], 90.0);
        assert!(!ev.payload.contains_key("repeat"));

        // Active alerts and history serialise for the API.
        eval(&mut e, &critic(0.75, 8), T0 + 100.0);
        let active = serde_json::to_value(e.active()).unwrap();
        assert_eq!(active[0]["rule"], "critic_rejection_rate > 0.50");
        assert_eq!(active[0]["since"], T0 + 100.0);
        assert_eq!(active[0]["last_notified"], T0 + 100.0);
        let history = serde_json::to_value(e.history()).unwrap();
        assert_eq!(history.as_array().unwrap().len(), 3);
        assert_eq!(history[1]["type"], "alert_resolved");
        assert_eq!(history[1]["reason"], "condition_false");
    }

    #[test]
    fn history_is_bounded() {
        let mut e = engine(vec![json!({
            "condition": "critic_rejection_rate > 0.5", "action": "a",
        })]);
        for i in 0..(HISTORY_LEN + 10) {
            let rate = if i % 2 == 0 { 1.0 } else { 0.0 };
            assert_eq!(eval(&mut e, &critic(rate, 9), T0 + i as f64).len(), 1);
        }
        assert_eq!(e.history().len(), HISTORY_LEN);
        assert_eq!(e.history().front().unwrap().at, T0 + 10.0);
        assert_eq!(
            e.history().back().unwrap().at,
            T0 + (HISTORY_LEN + 9) as f64
        );
    }
}
