//! Worked scenarios and property tests of the whole engine.

use std::sync::Arc;

use chrono::{Datelike, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::event::Event;

const EPS: f64 = 1e-12;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> f64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp() as f64
}

fn ev(event_type: &str, ts: f64, payload: Value) -> Event {
    Event {
        id: 0,
        event_type: Arc::from(event_type),
        timestamp: ts,
        event_id: None,
        payload: payload.as_object().cloned().unwrap_or_default(),
    }
}

fn feed(engine: &mut MetricsEngine, events: &[Event]) {
    for e in events {
        engine.observe(e);
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= EPS * a.abs().max(b.abs()).max(1.0)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
    }};
}

fn within_hist_error(v: f64, exact: f64) -> bool {
    (v - exact).abs() <= exact * RELATIVE_ERROR * (1.0 + 1e-9)
}

/// The seed success workflow, starting at T = 2026-12-02T10:15:00Z.
fn seed_success(t: f64) -> Vec<Event> {
    vec![
        ev(
            "task_queued",
            t,
            json!({"task_id":"t_001","feature":"user_authentication","est_cost":0.5,"timestamp":t}),
        ),
        ev(
            "agent_started",
            t + 1.0,
            json!({"agent":"scribe","task_id":"t_001","model":"m","tools":["edit"]}),
        ),
        ev(
            "agent_completed",
            t + 3.0,
            json!({"agent":"scribe","task_id":"t_001","status":"success","duration_ms":2000,"cost_usd":0.12}),
        ),
        ev(
            "agent_started",
            t + 3.0,
            json!({"agent":"critic","task_id":"t_001","model":"m","tools":[]}),
        ),
        ev(
            "agent_completed",
            t + 4.0,
            json!({"agent":"critic","task_id":"t_001","status":"approved","duration_ms":1000,"cost_usd":0.05}),
        ),
        ev(
            "agent_started",
            t + 4.0,
            json!({"agent":"runner","task_id":"t_001","model":"m","tools":["browser"]}),
        ),
        ev(
            "agent_completed",
            t + 6.0,
            json!({"agent":"runner","task_id":"t_001","status":"success","duration_ms":2000,"cost_usd":0.02}),
        ),
        ev(
            "validation_complete",
            t + 8.0,
            json!({"task_id":"t_001",
                   "result":{"browser_launched":true,"test_executed":true,"test_passed":true},
                   "cost":0.30,"duration_ms":1500,"screenshots":["a.png"]}),
        ),
        ev(
            "budget_warning",
            t + 9.0,
            json!({"current_spend":0.49,"limit":0.5}),
        ),
    ]
}

/// (1) Seed success workflow, every KPI of the hour bucket and the window.
///
/// - busy: scribe 2 s (T+1..T+3), critic 1 s (T+3..T+4), runner 2 s
///   (T+4..T+6) = 5 s; agents seen: 3.
///   hour: 5 / (3600 × 3) = 1/2160; window (60 min): 5 / (3600 × 3) as well;
///   minute 10:15: 5 / (60 × 3) = 1/36; overall span T..T+9 = 9 s:
///   5 / (9 × 3) = 5/27.
/// - cost: 0.12 + 0.05 + 0.02 + 0.30 = 0.49, one feature completed at T+8:
///   cost_per_feature 0.49.
/// - retries: one task finished (validation), 0 retries: 0.0.
/// - critic: 1 decision (approved), 0 rejected: 0.0.
/// - validation: 1 of 1 passed (test_passed with both flags true): 1.0.
/// - time to completion: T+8 − T = 8 s, p50 = p95 = 8 within 2 %.
/// - events: 9 (budget_warning counted by type only).
#[test]
fn seed_success_workflow() {
    let t = utc(2026, 12, 2, 10, 15, 0);
    let mut engine = MetricsEngine::default();
    feed(&mut engine, &seed_success(t));

    let hour = utc(2026, 12, 2, 10, 0, 0) as i64;
    let hb = engine
        .buckets(Granularity::Hourly)
        .find(|(s, _)| *s == hour)
        .unwrap()
        .1;
    assert_close!(hb.busy_seconds, 5.0);
    assert_close!(hb.total_cost, 0.49);
    assert_eq!(hb.events_by_type["budget_warning"], 1);
    assert_eq!(hb.events_by_type["agent_completed"], 3);
    let k = hb.kpis(3600.0);
    assert_close!(k.agent_utilization, 1.0 / 2160.0);
    assert_close!(k.cost_per_feature, 0.49);
    assert_eq!(k.average_retry_count, 0.0);
    assert_eq!(k.critic_rejection_rate, 0.0);
    assert_eq!(k.validation_pass_rate, 1.0);
    assert_eq!(k.time_to_completion, 8.0);
    assert!(within_hist_error(k.time_to_completion_p50, 8.0));
    assert!(within_hist_error(k.time_to_completion_p95, 8.0));
    assert_eq!(
        k.samples,
        Samples {
            events: 9,
            agents: 3,
            features_completed: 1,
            tasks_finished: 1,
            critic_decisions: 1,
            validations: 1,
            completions: 1,
        }
    );

    let snap = engine.snapshot(t + 30.0);
    assert_eq!(snap.window_minutes, 60);
    assert_eq!(snap.window, k, "the window holds exactly the hour's events");
    assert_eq!(snap.buckets.hourly.key, "2026-12-02T10:00:00");
    assert_eq!(snap.buckets.hourly.start, hour);
    assert_eq!(snap.buckets.hourly.kpis, k);
    assert_eq!(snap.buckets.daily.key, "2026-12-02");
    assert_close!(
        snap.buckets.daily.kpis.agent_utilization,
        5.0 / (86400.0 * 3.0)
    );
    assert_eq!(snap.buckets.weekly.key, "2026-W49");
    assert_eq!(snap.open_tasks, 0);
    assert_eq!(snap.evicted_tasks, 0);
    assert_eq!(snap.ignored_events, 0);
    let scribe = &snap.agents["scribe"];
    assert_close!(scribe.utilization, 2.0 / 3600.0);
    assert_eq!(scribe.busy_seconds, 2.0);
    assert_eq!((scribe.runs, scribe.failures), (1, 0));
    assert_eq!(scribe.cost_usd, 0.12);
    assert_eq!(scribe.mean_duration_ms, 2000.0);

    let minute = utc(2026, 12, 2, 10, 15, 0) as i64;
    let mb = engine
        .buckets(Granularity::Minute)
        .find(|(s, _)| *s == minute)
        .unwrap()
        .1;
    assert_close!(mb.kpis(60.0).agent_utilization, 1.0 / 36.0);

    let report = engine.report();
    assert_close!(report.overall.agent_utilization, 5.0 / 27.0);
    assert_close!(report.overall.cost_per_feature, 0.49);
    assert_eq!(report.overall.samples, k.samples);
    let f = &report.features["user_authentication"];
    assert_close!(f.cost_usd, 0.49);
    assert_eq!((f.tasks, f.completed), (1, true));
    assert_eq!(f.time_to_completion, 8.0);
    assert_close!(report.agents["runner"].utilization, 2.0 / 9.0);
}

/// (2) Failure workflow for task t_002 (feature payments), from T:
///
/// | time  | event                                   | retries so far |
/// |-------|-----------------------------------------|----------------|
/// | T     | task_queued                             | 0              |
/// | T+1/2 | scribe started / success, 0.10          | 0              |
/// | T+2/3 | critic started / rejected, 0.05         | 0              |
/// | T+3/5 | runner started / failed, 0.01           | 0              |
/// | T+5/6 | medic started / failed, 0.20            | 0 (medic had not failed) |
/// | T+7/9 | medic started / FAILED, 0.20            | 1 (medic's last run failed) |
/// | T+10  | hitl_escalated attempts 2               | finished: max(1, 2) = 2 |
/// | T+11  | critic_decision rejected false          |                |
/// | T+12  | validation_complete, browser not launched |              |
///
/// average_retry_count = 2 / 1 task = 2.0; critic decisions 2 (one
/// rejected): 0.5; validations 1, passed 0: 0.0; ttc 12 s; feature cost
/// 0.10 + 0.05 + 0.01 + 0.20 + 0.20 = 0.56; busy 1+1+2+1+2 = 7 s over 4
/// agents: 7 / 14400.
#[test]
fn failure_workflow() {
    let t = utc(2026, 12, 2, 11, 0, 0);
    let s = |agent: &str, dt: f64| {
        ev(
            "agent_started",
            t + dt,
            json!({"agent":agent,"task_id":"t_002"}),
        )
    };
    let c = |agent: &str, dt: f64, status: &str, cost: f64| {
        ev(
            "agent_completed",
            t + dt,
            json!({"agent":agent,"task_id":"t_002","status":status,"cost_usd":cost}),
        )
    };
    let events = vec![
        ev(
            "task_queued",
            t,
            json!({"task_id":"t_002","feature":"payments"}),
        ),
        s("scribe", 1.0),
        c("scribe", 2.0, "success", 0.10),
        s("critic", 2.0),
        c("critic", 3.0, "rejected", 0.05),
        s("runner", 3.0),
        c("runner", 5.0, "failed", 0.01),
        s("medic", 5.0),
        c("medic", 6.0, "failed", 0.20),
        s("medic", 7.0),
        c("medic", 9.0, "FAILED", 0.20),
        ev(
            "hitl_escalated",
            t + 10.0,
            json!({"task_id":"t_002","attempts":2,"last_error":"boom","priority":"high"}),
        ),
        ev(CRITIC_DECISION, t + 11.0, json!({"rejected": false})),
        ev(
            "validation_complete",
            t + 12.0,
            json!({"task_id":"t_002","result":{"browser_launched":false,"test_executed":true,"test_passed":true},"cost":0.0}),
        ),
    ];
    let mut engine = MetricsEngine::default();
    feed(&mut engine, &events);
    let b = engine.buckets(Granularity::Hourly).next().unwrap().1;
    let k = b.kpis(3600.0);
    assert_eq!(k.average_retry_count, 2.0);
    assert_eq!(k.samples.tasks_finished, 1);
    assert_eq!(k.critic_rejection_rate, 0.5);
    assert_eq!(k.samples.critic_decisions, 2);
    assert_eq!(k.validation_pass_rate, 0.0);
    assert_eq!(k.samples.validations, 1);
    assert_eq!(k.time_to_completion, 12.0);
    assert_close!(k.cost_per_feature, 0.56);
    assert_close!(k.agent_utilization, 7.0 / 14400.0);
    assert_eq!(b.per_agent["medic"].failures, 2);
    assert_eq!(b.per_agent["medic"].runs, 2);
    assert_eq!(b.per_agent["runner"].failures, 1);
    assert_eq!(b.per_agent["critic"].failures, 0, "rejected is not failed");
    assert_eq!(engine.open_tasks(), 0);
}

/// Escalation takes the larger of the counted retries and `attempts`, and a
/// successful completion stops the next start from being a retry.
#[test]
fn retries_counting() {
    let t = utc(2026, 12, 2, 12, 0, 0);
    let s = |task: &str, agent: &str, dt: f64| {
        ev(
            "agent_started",
            t + dt,
            json!({"agent":agent,"task_id":task}),
        )
    };
    let c = |task: &str, agent: &str, dt: f64, status: &str| {
        ev(
            "agent_completed",
            t + dt,
            json!({"agent":agent,"task_id":task,"status":status}),
        )
    };
    let mut engine = MetricsEngine::default();
    feed(
        &mut engine,
        &[
            // a: runner fails twice then is retried twice: 2 > attempts 1.
            s("a", "runner", 0.0),
            c("a", "runner", 1.0, "timeout"),
            s("a", "runner", 2.0),
            c("a", "runner", 3.0, "Crashed"),
            s("a", "runner", 4.0),
            ev(
                "hitl_escalated",
                t + 5.0,
                json!({"task_id":"a","attempts":1}),
            ),
            // b: fail, retry (1), success, start again (not a retry).
            s("b", "scribe", 0.0),
            c("b", "scribe", 1.0, "error"),
            s("b", "scribe", 2.0),
            c("b", "scribe", 3.0, "success"),
            s("b", "scribe", 4.0),
            c("b", "scribe", 5.0, "success"),
            ev("validation_complete", t + 6.0, json!({"task_id":"b"})),
            // b again: a task is counted once, at its first finish.
            ev(
                "hitl_escalated",
                t + 7.0,
                json!({"task_id":"b","attempts":9}),
            ),
        ],
    );
    let k = engine.totals().kpis(3600.0);
    assert_eq!(k.samples.tasks_finished, 2);
    assert_eq!(engine.totals().retries_sum, 3);
    assert_eq!(k.average_retry_count, 1.5);
    assert_eq!(
        k.validation_pass_rate, 0.0,
        "a result-less validation fails"
    );
    assert_eq!(k.samples.completions, 0, "b was never queued");
}

/// (3) A span from H − 90.5 s to H + 30.25 s, where H = Monday
/// 2026-12-07T00:00Z is an hour, day and week boundary. Every granularity
/// gives 90.5 s to the bucket before H and 30.25 s to the one from H; the
/// minute buckets split 90.5 as 30.5 + 60. A second agent completing at
/// H + 1800 with no start and duration_ms = 7 200 000 is busy over
/// [H − 5400, H + 1800]: 1800 s in hour H − 2h (seen there by busy time
/// alone), 3600 s in hour H − 1h, 1800 s in hour H.
#[test]
fn span_across_boundaries_is_split_exactly() {
    let h = utc(2026, 12, 7, 0, 0, 0);
    let hi = h as i64;
    let mut engine = MetricsEngine::default();
    feed(
        &mut engine,
        &[
            ev(
                "agent_started",
                h - 90.5,
                json!({"agent":"a","task_id":"x"}),
            ),
            ev(
                "agent_completed",
                h + 30.25,
                json!({"agent":"a","task_id":"x","status":"success"}),
            ),
        ],
    );
    let busy = |e: &MetricsEngine, g: Granularity, start: i64, agent: &str| {
        e.bucket_set()
            .get(g, start)
            .and_then(|b| b.per_agent.get(agent))
            .map_or(0.0, |a| a.busy_seconds)
    };
    for g in [Granularity::Hourly, Granularity::Daily, Granularity::Weekly] {
        assert_eq!(busy(&engine, g, hi - g.length_secs(), "a"), 90.5, "{g:?}");
        assert_eq!(busy(&engine, g, hi, "a"), 30.25, "{g:?}");
    }
    let m = Granularity::Minute;
    assert_eq!(busy(&engine, m, hi - 120, "a"), 30.5);
    assert_eq!(busy(&engine, m, hi - 60, "a"), 60.0);
    assert_eq!(busy(&engine, m, hi, "a"), 30.25);
    let minute_sum: f64 = engine.buckets(m).map(|(_, b)| b.busy_seconds).sum();
    assert_eq!(minute_sum, 120.75);
    assert_eq!(engine.totals().busy_seconds, 120.75);
    let prev_hour = engine
        .bucket_set()
        .get(Granularity::Hourly, hi - 3600)
        .unwrap();
    assert_eq!(prev_hour.kpis(3600.0).agent_utilization, 90.5 / 3600.0);

    engine.observe(&ev(
        "agent_completed",
        h + 1800.0,
        json!({"agent":"b","task_id":"y","status":"success","duration_ms":7_200_000}),
    ));
    let g = Granularity::Hourly;
    assert_eq!(busy(&engine, g, hi - 7200, "b"), 1800.0);
    assert_eq!(busy(&engine, g, hi - 3600, "b"), 3600.0);
    assert_eq!(busy(&engine, g, hi, "b"), 1800.0);
    let two_before = engine.bucket_set().get(g, hi - 7200).unwrap();
    assert_eq!(two_before.events, 0);
    let k = two_before.kpis(3600.0);
    assert_eq!((k.samples.agents, k.agent_utilization), (1, 0.5));
    let k = engine.bucket_set().get(g, hi - 3600).unwrap().kpis(3600.0);
    assert_eq!(k.agent_utilization, 3690.5 / 7200.0);
    // Only the minutes within retention (62 back from H + 1800) got b's
    // busy time: [H − 1860, H + 1800] = 3660 s.
    let b_minutes: f64 = engine
        .buckets(m)
        .filter_map(|(_, b)| b.per_agent.get("b"))
        .map(|a| a.busy_seconds)
        .sum();
    assert_eq!(b_minutes, 3660.0);
    assert_eq!(engine.totals().per_agent["b"].busy_seconds, 7200.0);
}

/// (4) Events 1 ms before and exactly at the Monday 2027-01-04T00:00Z
/// boundary (hour, day and ISO week), and 59.999 s into a minute.
#[test]
fn boundary_events_land_in_the_right_buckets() {
    let b = utc(2027, 1, 4, 0, 0, 0);
    let mut engine = MetricsEngine::default();
    feed(
        &mut engine,
        &[
            ev("ping", b - 0.001, json!({})),
            ev("ping", b, json!({})),
            ev("ping", b + 60.0 + 59.999, json!({})),
        ],
    );
    let keys = |g: Granularity| -> Vec<(String, u64)> {
        engine
            .buckets(g)
            .map(|(s, st)| (g.bucket_name(s), st.events))
            .collect()
    };
    assert_eq!(
        keys(Granularity::Minute),
        [
            ("2027-01-03T23:59:00".to_owned(), 1),
            ("2027-01-04T00:00:00".to_owned(), 1),
            ("2027-01-04T00:01:00".to_owned(), 1)
        ]
    );
    assert_eq!(
        keys(Granularity::Hourly),
        [
            ("2027-01-03T23:00:00".to_owned(), 1),
            ("2027-01-04T00:00:00".to_owned(), 2)
        ]
    );
    assert_eq!(
        keys(Granularity::Daily),
        [("2027-01-03".to_owned(), 1), ("2027-01-04".to_owned(), 2)]
    );
    assert_eq!(
        keys(Granularity::Weekly),
        [("2026-W53".to_owned(), 1), ("2027-W01".to_owned(), 2)]
    );
    let d = Utc.timestamp_opt(b as i64 - 1, 0).unwrap();
    assert_eq!(
        (d.iso_week().year(), d.iso_week().week()),
        (2026, 53),
        "chrono agrees"
    );
}

#[test]
fn unusable_timestamps_are_ignored_and_counted() {
    let mut engine = MetricsEngine::default();
    for ts in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
        engine.observe(&ev("task_queued", ts, json!({"task_id":"x"})));
    }
    assert_eq!(engine.ignored_events(), 4);
    assert!(engine.bucket_set().is_empty());
    assert!(engine.totals().is_empty());
    assert_eq!(engine.snapshot(f64::NAN).ignored_events, 4);
}

/// Costs after a completion are attributed at the next completion, once;
/// a feature completed twice in one bucket is one feature.
#[test]
fn feature_cost_attribution() {
    let t = utc(2026, 12, 2, 13, 0, 0);
    let mut engine = MetricsEngine::default();
    let cost = |task: &str, dt: f64, c: f64| {
        ev(
            "agent_completed",
            t + dt,
            json!({"agent":"scribe","task_id":task,"status":"success","cost_usd":c}),
        )
    };
    let val = |task: &str, dt: f64, c: f64| {
        ev(
            "validation_complete",
            t + dt,
            json!({"task_id":task,"result":{"passed":true},"cost":c}),
        )
    };
    feed(
        &mut engine,
        &[
            ev("task_queued", t, json!({"task_id":"t1","feature":"f"})),
            ev("task_queued", t, json!({"task_id":"t2","feature":"f"})),
            cost("t1", 1.0, 1.0),
            val("t1", 2.0, 0.0), // minute 0: f completed, 1.0 attributed
            cost("t2", 61.0, 2.0),
            val("t2", 62.0, 0.5),  // minute 1: 2.5 attributed
            val("t2", 63.0, 0.0),  // again: nothing new, still one feature
            cost("t2", 64.0, 4.0), // after the last completion: never attributed
            ev("task_queued", t, json!({"task_id":"t3"})),
            cost("t3", 65.0, 8.0), // no feature: total cost only
        ],
    );
    let m = Granularity::Minute;
    let t0 = t as i64;
    let m0 = engine.bucket_set().get(m, t0).unwrap();
    let m1 = engine.bucket_set().get(m, t0 + 60).unwrap();
    assert_eq!((m0.feature_cost, m0.features_completed.len()), (1.0, 1));
    assert_eq!((m1.feature_cost, m1.features_completed.len()), (2.5, 1));
    let hour = engine
        .bucket_set()
        .get(Granularity::Hourly, t0)
        .unwrap()
        .kpis(3600.0);
    assert_eq!(hour.cost_per_feature, 3.5);
    assert_eq!(hour.samples.features_completed, 1);
    let window = engine.snapshot(t + 70.0).window;
    assert_eq!(window.cost_per_feature, 3.5, "window merge counts once");
    assert_eq!(engine.totals().total_cost, 15.5);
    let report = engine.report();
    assert_eq!(report.features["f"].cost_usd, 7.5);
    assert_eq!(report.features["f"].tasks, 2);
    assert_eq!(report.features.len(), 1);
}

#[test]
fn critic_decisions_from_both_sources() {
    let t = utc(2026, 12, 2, 14, 0, 0);
    let mut engine = MetricsEngine::default();
    let decision = critic_decision_event(true);
    assert_eq!(&*decision.event_type, CRITIC_DECISION);
    feed(
        &mut engine,
        &[
            ev(CRITIC_DECISION, t, Value::Object(decision.payload.clone())),
            ev(CRITIC_DECISION, t, json!({"rejected":"yes"})), // not a bool
            ev(
                "agent_completed",
                t,
                json!({"agent":"critic","status":"Approved"}),
            ),
            ev(
                "agent_completed",
                t,
                json!({"agent":"critic","status":"success"}),
            ),
            ev(
                "agent_completed",
                t,
                json!({"agent":"scribe","status":"rejected"}),
            ),
        ],
    );
    let k = engine.totals().kpis(60.0);
    assert_eq!(k.samples.critic_decisions, 2);
    assert_eq!(k.critic_rejection_rate, 0.5);
}

#[test]
fn validation_pass_rules() {
    let p = |v: Value| validation_passed(Some(&v));
    assert!(p(json!({"passed": true})));
    assert!(p(json!({"test_passed": true})));
    assert!(p(json!({"test_passed": true, "browser_launched": true})));
    assert!(!p(json!({"test_passed": true, "test_executed": false})));
    assert!(!p(json!({"test_passed": true, "test_executed": null})));
    assert!(!p(json!({"passed": "true"})));
    assert!(!p(json!("passed")));
    assert!(!validation_passed(None));
}

/// The window covers the minute of `now` and the 59 before it.
#[test]
fn window_edges() {
    let t = utc(2026, 12, 2, 15, 0, 0);
    let mut engine = MetricsEngine::default();
    engine.observe(&ev("ping", t + 5.0, json!({})));
    assert_eq!(engine.snapshot(t + 59.0 * 60.0).window.samples.events, 1);
    assert_eq!(engine.snapshot(t + 60.0 * 60.0).window.samples.events, 0);
    assert_eq!(engine.snapshot(t - 1.0).window.samples.events, 0);
}

#[test]
fn retention_drops_old_buckets() {
    let t = utc(2026, 12, 2, 0, 0, 0);
    let mut engine = MetricsEngine::default();
    for i in 0..100 {
        engine.observe(&ev("ping", t + f64::from(i) * 60.0, json!({})));
    }
    assert_eq!(engine.buckets(Granularity::Minute).count(), 62);
    let first = engine.buckets(Granularity::Minute).next().unwrap().0;
    assert_eq!(first, t as i64 + 38 * 60);
    // A late event older than the retention only reaches coarser buckets.
    engine.observe(&ev("ping", t, json!({})));
    assert_eq!(engine.buckets(Granularity::Minute).count(), 62);
    assert_eq!(
        engine.buckets(Granularity::Hourly).next().unwrap().1.events,
        61
    );
    assert_eq!(engine.totals().events, 101);
}

/// A task idle for more than a day is evicted and counted; one idle for
/// exactly a day is kept.
#[test]
fn idle_tasks_are_evicted() {
    let t = utc(2026, 12, 2, 0, 0, 0);
    let mut engine = MetricsEngine::default();
    engine.observe(&ev(
        "task_queued",
        t,
        json!({"task_id":"old","feature":"f"}),
    ));
    engine.observe(&ev("task_queued", t + 61.0, json!({"task_id":"edge"})));
    assert_eq!(engine.open_tasks(), 2);
    engine.observe(&ev(
        "task_queued",
        t + 86_400.0 + 61.0,
        json!({"task_id":"new"}),
    ));
    assert_eq!(engine.evicted_tasks(), 1);
    assert_eq!(engine.open_tasks(), 2);
    let snap = engine.snapshot(t + 86_400.0 + 61.0);
    assert_eq!((snap.open_tasks, snap.evicted_tasks), (2, 1));
    // The evicted task starts afresh: no queue time, so no completion time.
    engine.observe(&ev(
        "validation_complete",
        t + 86_400.0 + 62.0,
        json!({"task_id":"old"}),
    ));
    assert_eq!(engine.totals().completions, 0);
    assert_eq!(engine.totals().tasks_finished, 1);
}

/// observe_into gives `extra` exactly the engine's bucket contributions;
/// clearing it between "flushes" and adding the pieces gives them again.
#[test]
fn observe_into_mirrors_the_buckets() {
    let t = utc(2026, 12, 2, 10, 15, 0);
    let events = seed_success(t);
    let mut engine = MetricsEngine::default();
    let mut extra = BucketSet::new();
    let mut flushed = BucketSet::new();
    for (i, e) in events.iter().enumerate() {
        engine.observe_into(e, &mut extra);
        if i == 4 {
            flushed.merge(&extra);
            extra.clear();
            assert!(extra.is_empty());
        }
    }
    flushed.merge(&extra);
    assert_eq!(&flushed, engine.bucket_set());
    assert_eq!(flushed.len(), 4);
    assert_eq!(flushed.iter().count(), 4);
}

#[test]
fn config_is_normalised() {
    let mut cfg = MetricsConfig::with_window_minutes(0);
    cfg.retention = Retention {
        minute: 0,
        hourly: 0,
        daily: 0,
        weekly: 0,
    };
    cfg.task_idle_eviction_secs = f64::NAN;
    let engine = MetricsEngine::new(cfg);
    assert_eq!(engine.config().window_minutes, 1);
    assert_eq!(engine.config().retention.minute, 1);
    assert_eq!(engine.config().task_idle_eviction_secs, 86_400.0);
    let d = MetricsConfig::default();
    assert_eq!(d.retention, Retention::for_window(60));
    assert_eq!(d.retention.minute, 62);
}

#[test]
fn snapshot_serialises() {
    let t = utc(2026, 12, 2, 10, 15, 0);
    let mut engine = MetricsEngine::default();
    feed(&mut engine, &seed_success(t));
    let snap = engine.snapshot(t + 10.0);
    let v = serde_json::to_value(&snap).unwrap();
    assert_eq!(v["buckets"]["weekly"]["key"], "2026-W49");
    assert_eq!(v["window"]["samples"]["validations"], 1);
    let back: MetricsSnapshot = serde_json::from_value(v).unwrap();
    assert_eq!(back, snap);
    let r = serde_json::to_value(engine.report()).unwrap();
    assert_eq!(r["features"]["user_authentication"]["completed"], true);
}

// ---------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------

const AGENTS: [&str; 4] = ["scribe", "critic", "runner", "medic"];
const STATUSES: [&str; 7] = [
    "success", "failed", "approved", "rejected", "ERROR", "timeout", "weird",
];
const TASKS: usize = 6;

/// One generated event, before it is turned into an `Event`.
#[derive(Debug, Clone)]
struct Spec {
    kind: u8,
    task: Option<usize>,
    agent: usize,
    status: usize,
    cost: f64,
    duration_ms: f64,
    flags: [bool; 4],
    attempts: u32,
    gap: f64,
    junk: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..9,
        prop::option::weighted(0.9, 0..TASKS),
        0..AGENTS.len(),
        0..STATUSES.len(),
        prop_oneof![Just(0.0), 0.0f64..5.0],
        0.0f64..400_000.0,
        any::<[bool; 4]>(),
        0u32..5,
        0.0f64..300.0,
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(kind, task, agent, status, cost, duration_ms, flags, attempts, gap, junk)| Spec {
                kind,
                task,
                agent,
                status,
                cost,
                duration_ms,
                flags,
                attempts,
                gap,
                junk,
            },
        )
}

/// Turns specs into events with increasing timestamps from `base`. The
/// feature of task i is `feature(i)`.
fn build(
    specs: &[Spec],
    base: f64,
    feature: impl Fn(usize) -> String,
) -> Vec<(Option<usize>, Event)> {
    let mut ts = base;
    specs
        .iter()
        .map(|s| {
            ts += s.gap;
            let task = s.task.map(|i| format!("t{i}"));
            let agent = AGENTS[s.agent];
            let [a, b, c, d] = s.flags;
            let (ty, mut payload) = match s.kind {
                0 => (
                    "task_queued",
                    json!({"task_id":task,"feature":s.task.map(&feature),"est_cost":s.cost}),
                ),
                1 => (
                    "agent_started",
                    json!({"agent":agent,"task_id":task,"model":"m","tools":[]}),
                ),
                2 | 3 => (
                    "agent_completed",
                    json!({"agent":agent,"task_id":task,"status":STATUSES[s.status],
                           "duration_ms":s.duration_ms,"cost_usd":s.cost}),
                ),
                4 => (
                    "validation_complete",
                    json!({"task_id":task,"cost":s.cost,"duration_ms":s.duration_ms,
                           "result":{"passed":a,"test_passed":b,"browser_launched":c,"test_executed":d}}),
                ),
                5 => (
                    "hitl_escalated",
                    json!({"task_id":task,"attempts":s.attempts,"last_error":"e","priority":"p"}),
                ),
                6 => (CRITIC_DECISION, json!({"rejected":a})),
                7 => ("budget_warning", json!({"current_spend":s.cost,"limit":1.0})),
                _ => ("something_else", json!({"agent":agent,"task_id":task})),
            };
            if s.junk {
                // Mistyped fields of every kind; the engine must shrug.
                payload = json!({"task_id":[task],"agent":7,"feature":{},"status":false,
                    "cost_usd":"1.0","cost":-3.0,"duration_ms":1e300,"result":"passed",
                    "attempts":-2,"rejected":"yes"});
                if a {
                    payload["task_id"] = json!(task);
                    payload["agent"] = json!(agent);
                }
            }
            if s.task.is_none() {
                if let Some(o) = payload.as_object_mut() {
                    o.remove("task_id");
                }
            }
            (s.task, ev(ty, ts, payload))
        })
        .collect()
}

fn base_ts() -> f64 {
    utc(2026, 12, 2, 9, 30, 0)
}

/// Retention large enough that no bucket of a test stream is ever dropped,
/// so that order and partitioning cannot matter through it.
fn roomy() -> MetricsConfig {
    MetricsConfig {
        retention: Retention {
            minute: 100_000,
            hourly: 10_000,
            daily: 1_000,
            weekly: 100,
        },
        ..MetricsConfig::default()
    }
}

fn check_kpis(k: &Kpis) -> Result<(), TestCaseError> {
    let all = [
        k.agent_utilization,
        k.cost_per_feature,
        k.average_retry_count,
        k.critic_rejection_rate,
        k.validation_pass_rate,
        k.time_to_completion,
        k.time_to_completion_p50,
        k.time_to_completion_p95,
    ];
    for v in all {
        prop_assert!(v.is_finite() && v >= 0.0, "{:?}", k);
    }
    for r in [
        k.agent_utilization,
        k.critic_rejection_rate,
        k.validation_pass_rate,
    ] {
        prop_assert!(r <= 1.0, "{:?}", k);
    }
    Ok(())
}

fn check_agents<'a>(agents: impl IntoIterator<Item = &'a AgentKpis>) -> Result<(), TestCaseError> {
    for a in agents {
        prop_assert!((0.0..=1.0).contains(&a.utilization), "{:?}", a);
        for v in [a.busy_seconds, a.cost_usd, a.mean_duration_ms] {
            prop_assert!(v.is_finite() && v >= 0.0, "{:?}", a);
        }
    }
    Ok(())
}

/// Compares two JSON trees, numbers within a relative 1e-9 (sums differ in
/// rounding when added in another order).
fn approx(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| approx(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| approx(v, w)))
        }
        _ => a == b,
    }
}

fn same_state(a: &MetricsEngine, b: &MetricsEngine) -> Result<(), TestCaseError> {
    for g in Granularity::ALL {
        let ka: Vec<i64> = a.buckets(g).map(|(s, _)| s).collect();
        let kb: Vec<i64> = b.buckets(g).map(|(s, _)| s).collect();
        prop_assert_eq!(&ka, &kb);
        for ((s, x), (_, y)) in a.buckets(g).zip(b.buckets(g)) {
            let (vx, vy) = (
                serde_json::to_value(x).unwrap(),
                serde_json::to_value(y).unwrap(),
            );
            prop_assert!(approx(&vx, &vy), "{:?} {}:\n{}\n{}", g, s, vx, vy);
            let (kx, ky) = (
                serde_json::to_value(x.kpis(g.length_secs() as f64)).unwrap(),
                serde_json::to_value(y.kpis(g.length_secs() as f64)).unwrap(),
            );
            prop_assert!(approx(&kx, &ky), "{:?} {}:\n{}\n{}", g, s, kx, ky);
        }
    }
    let (ta, tb) = (
        serde_json::to_value(a.totals()).unwrap(),
        serde_json::to_value(b.totals()).unwrap(),
    );
    prop_assert!(approx(&ta, &tb), "totals:\n{}\n{}", ta, tb);
    Ok(())
}

/// Reorders `events` by `perm` while keeping the events of each task in
/// their order: slot i gets the next unused event of the task of
/// `events[perm[i]]` (events without a task are free).
fn interleave(events: &[(Option<usize>, Event)], perm: &[usize]) -> Vec<Event> {
    let mut per_task: Vec<std::collections::VecDeque<&Event>> = vec![Default::default(); TASKS];
    for (task, e) in events {
        if let Some(t) = task {
            per_task[*t].push_back(e);
        }
    }
    perm.iter()
        .map(|&i| match events[i].0 {
            Some(t) => per_task[t].pop_front().unwrap().clone(),
            None => events[i].1.clone(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every KPI is finite and ≥ 0 and every rate in [0, 1], for any
    /// stream, junk and unusable timestamps included.
    #[test]
    fn kpis_are_bounded(
        specs in prop::collection::vec(spec(), 0..80),
        weird in prop::collection::vec(
            (0usize..80, prop_oneof![Just(f64::NAN), Just(-5.0), Just(f64::INFINITY),
                                     Just(1e18), Just(0.0), 0.0f64..2e9]), 0..5),
        now_offset in -3600.0f64..20_000.0,
    ) {
        let mut events: Vec<Event> =
            build(&specs, base_ts(), |i| format!("f{}", i % 3)).into_iter().map(|(_, e)| e).collect();
        for (i, ts) in weird {
            if let Some(e) = events.get_mut(i) {
                e.timestamp = ts;
            }
        }
        let mut engine = MetricsEngine::default();
        feed(&mut engine, &events);
        for g in Granularity::ALL {
            for (_, b) in engine.buckets(g) {
                check_kpis(&b.kpis(g.length_secs() as f64))?;
            }
        }
        let snap = engine.snapshot(base_ts() + now_offset);
        check_kpis(&snap.window)?;
        check_kpis(&snap.buckets.hourly.kpis)?;
        check_kpis(&snap.buckets.daily.kpis)?;
        check_kpis(&snap.buckets.weekly.kpis)?;
        check_agents(snap.agents.values())?;
        let report = engine.report();
        check_kpis(&report.overall)?;
        check_agents(report.agents.values())?;
        for f in report.features.values() {
            prop_assert!(f.cost_usd.is_finite() && f.cost_usd >= 0.0);
            prop_assert!(f.time_to_completion.is_finite() && f.time_to_completion >= 0.0);
        }
    }

    /// Processing the tasks in two engines (split by task, features never
    /// straddling the split) and merging their buckets equals processing
    /// the whole stream.
    #[test]
    fn partition_and_merge_equals_whole(specs in prop::collection::vec(spec(), 0..80)) {
        // Feature of task i: f{i % 4}, so each feature's tasks share i % 2.
        let events = build(&specs, base_ts(), |i| format!("f{}", i % 4));
        let mut whole = MetricsEngine::new(roomy());
        let mut even = MetricsEngine::new(roomy());
        let mut odd = MetricsEngine::new(roomy());
        for (task, e) in &events {
            whole.observe(e);
            if task.is_some_and(|t| t % 2 == 1) {
                odd.observe(e);
            } else {
                even.observe(e);
            }
        }
        even.merge_buckets(&odd);
        same_state(&whole, &even)?;
    }

    /// The order of events of different tasks does not matter (each task
    /// has its own feature here: a feature's cost attribution follows the
    /// arrival order of its tasks' events, by definition).
    #[test]
    fn order_across_tasks_does_not_matter(
        (specs, perm) in prop::collection::vec(spec(), 0..80).prop_flat_map(|specs| {
            let n = specs.len();
            (Just(specs), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
        })
    ) {
        let events = build(&specs, base_ts(), |i| format!("f{i}"));
        let mut a = MetricsEngine::new(roomy());
        let mut b = MetricsEngine::new(roomy());
        for (_, e) in &events {
            a.observe(e);
        }
        for e in interleave(&events, &perm) {
            b.observe(&e);
        }
        same_state(&a, &b)?;
        prop_assert_eq!(a.open_tasks(), b.open_tasks());
    }
}

/// Issue 13 (8): the original's validator (`gemini`) emits `agent_started`
/// and then the task's `validation_complete`, never an `agent_completed`:
/// the validation ends its span, so its utilisation counts it. An agent
/// that completes the task after all continues from the validation (its
/// busy time is counted once).
#[test]
fn the_validation_ends_the_validators_span() {
    let t = utc(2026, 12, 2, 10, 0, 0);
    let mut e = MetricsEngine::default();
    e.observe(&ev("task_queued", t, json!({"task_id":"t1","feature":"f"})));
    e.observe(&ev(
        "agent_started",
        t + 1.0,
        json!({"agent":"scribe","task_id":"t1"}),
    ));
    e.observe(&ev(
        "agent_completed",
        t + 3.0,
        json!({"agent":"scribe","task_id":"t1","status":"success"}),
    ));
    e.observe(&ev(
        "agent_started",
        t + 4.0,
        json!({"agent":"gemini","task_id":"t1"}),
    ));
    e.observe(&ev(
        "validation_complete",
        t + 10.0,
        json!({"task_id":"t1","result":{"passed":true}}),
    ));
    let r = e.report();
    assert_eq!(r.agents["gemini"].busy_seconds, 6.0);
    assert_eq!(r.agents["scribe"].busy_seconds, 2.0);
    let snap = e.snapshot(t + 11.0);
    assert!((snap.agents["gemini"].busy_seconds - 6.0).abs() < 1e-9);
    assert!(snap.agents["gemini"].utilization > 0.0);
    // It completes after all: the span continues from the validation.
    e.observe(&ev(
        "agent_completed",
        t + 12.0,
        json!({"agent":"gemini","task_id":"t1","status":"success","duration_ms":8000}),
    ));
    assert_eq!(e.report().agents["gemini"].busy_seconds, 8.0);
    // An agent that has completed on the task keeps its open span (a retry
    // in progress) until its own completion.
    e.observe(&ev(
        "agent_started",
        t + 13.0,
        json!({"agent":"scribe","task_id":"t1"}),
    ));
    e.observe(&ev(
        "validation_complete",
        t + 14.0,
        json!({"task_id":"t1","result":{"passed":true}}),
    ));
    assert_eq!(e.report().agents["scribe"].busy_seconds, 2.0);
}

/// Issue 22 (4): driven by the clock, an event stamped ahead (within the
/// accepted day) is counted in its bucket and prunes nothing: later live
/// events still count in the window.
#[test]
fn the_window_follows_the_clock_not_the_newest_event() {
    let now = utc(2026, 12, 2, 10, 0, 0);
    let mut e = MetricsEngine::default();
    e.advance_clock(now);
    e.observe(&ev("note", now + 23.0 * 3600.0, json!({})));
    e.observe(&ev("note", now + 1.0, json!({})));
    e.advance_clock(now + 2.0);
    e.observe(&ev("note", now + 2.0, json!({})));
    assert_eq!(e.snapshot(now + 3.0).window.samples.events, 2);
    let ahead = Granularity::Hourly.bucket_start(now + 23.0 * 3600.0);
    assert_eq!(
        e.bucket_set()
            .get(Granularity::Hourly, ahead)
            .unwrap()
            .events,
        1
    );
    // Without a clock (offline), the newest event is "now", as before.
    let mut offline = MetricsEngine::default();
    offline.observe(&ev("note", now + 23.0 * 3600.0, json!({})));
    offline.observe(&ev("note", now + 1.0, json!({})));
    assert_eq!(offline.snapshot(now + 3.0).window.samples.events, 0);
}

/// Issue 13 (9): past `max_open_tasks` the least recently active task is
/// evicted and counted; the bound holds at every step.
#[test]
fn open_tasks_never_exceed_the_bound() {
    let t = utc(2026, 12, 2, 10, 0, 0);
    let mut e = MetricsEngine::new(MetricsConfig {
        max_open_tasks: 100,
        ..MetricsConfig::default()
    });
    for i in 0..1000u32 {
        let ts = t + f64::from(i) * 0.01;
        e.observe(&ev(
            "task_queued",
            ts,
            json!({"task_id": format!("t{i}"), "feature":"f"}),
        ));
        // Task t0 stays active: it is never the least recent.
        e.observe(&ev(
            "agent_started",
            ts,
            json!({"agent":"a","task_id":"t0"}),
        ));
        assert!(e.open_tasks() <= 100);
    }
    assert_eq!(e.open_tasks(), 100);
    assert_eq!(e.evicted_tasks(), 900);
    // t0 survived: its 1000 starts are still open (at most 64 kept).
    e.observe(&ev(
        "agent_completed",
        t + 20.0,
        json!({"agent":"a","task_id":"t0","status":"success"}),
    ));
    assert!(e.report().agents["a"].busy_seconds > 0.0);
}

/// Issue 22 (3): the all-time totals keep the most active names and fold
/// the rest into `(other)`, whatever the number of names; the sums stay.
#[test]
fn totals_are_bounded_by_max_names() {
    let t = utc(2026, 12, 2, 10, 0, 0);
    let mut e = MetricsEngine::new(MetricsConfig {
        max_names: 10,
        ..MetricsConfig::default()
    });
    for i in 0..1000u32 {
        let ts = t + f64::from(i) * 0.01;
        let agent = if i % 2 == 0 {
            "busy".to_string()
        } else {
            format!("run-{i}")
        };
        e.observe(&ev(
            "agent_completed",
            ts,
            json!({"agent": agent, "task_id": format!("t{i}"), "status":"success","cost_usd":1.0}),
        ));
    }
    let totals = e.totals();
    assert!(totals.per_agent.len() <= 21, "{}", totals.per_agent.len());
    assert_eq!(totals.per_agent["busy"].runs, 500);
    let runs: u64 = totals.per_agent.values().map(|a| a.runs).sum();
    assert_eq!(runs, 1000);
    assert!(totals.per_agent.contains_key(OTHER));
    assert_eq!(totals.events, 1000);
}

#[test]
fn llm_call_costs_count_for_the_feature_the_agent_and_the_total() {
    let t = utc(2026, 12, 2, 10, 0, 0);
    let mut engine = MetricsEngine::new(MetricsConfig::default());
    feed(
        &mut engine,
        &[
            ev("task_queued", t, json!({"task_id":"t1","feature":"f"})),
            ev(
                LLM_CALL,
                t + 1.0,
                json!({"task_id":"t1","agent":"planner","cost_usd":0.25}),
            ),
            ev(LLM_CALL, t + 2.0, json!({"task_id":"t1","cost_usd":0.5})),
            ev(
                "validation_complete",
                t + 3.0,
                json!({"task_id":"t1","result":{"passed":true},"cost":0.0}),
            ),
        ],
    );
    let hour = engine
        .bucket_set()
        .get(Granularity::Hourly, t as i64)
        .unwrap();
    assert_close!(hour.kpis(3600.0).cost_per_feature, 0.75);
    assert_close!(engine.totals().total_cost, 0.75);
    let planner = engine.totals().per_agent.get("planner").unwrap();
    assert_close!(planner.cost_usd, 0.25);
    assert_eq!(planner.runs, 0, "a model call is not a run");
}
