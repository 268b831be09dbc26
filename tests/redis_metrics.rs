//! Bucket metrics in Redis, against private `redis-server`s started here.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{wait_for, Hub, Redis};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// 2026-11-30T00:00:00Z: a Monday, so an hour, day and ISO week boundary.
const MONDAY: f64 = 1_795_996_800.0;

fn hub_with(redis: &Redis, dir: &std::path::Path, extra: &[&str]) -> Hub {
    let url = redis.url();
    let mut args = vec!["--redis-url", url.as_str(), "--redis-flush-ms", "50"];
    args.extend_from_slice(extra);
    Hub::start(dir, &args)
}

fn ev(ty: &str, ts: f64, payload: Value) -> Value {
    json!({"event_type": ty, "timestamp": ts, "payload": payload})
}

/// A workflow of `tasks` tasks starting at `t0`, a task every 97 s.
fn workflow(tasks: std::ops::Range<u32>, t0: f64) -> Vec<Value> {
    let mut out = Vec::new();
    for t in tasks {
        let id = format!("t{t}");
        let base = t0 + f64::from(t) * 97.0;
        let feature = format!("feature_{}", t % 4);
        out.push(ev(
            "task_queued",
            base,
            json!({"task_id":id,"feature":feature,"est_cost":0.5,"timestamp":base}),
        ));
        out.push(ev(
            "agent_started",
            base + 1.0,
            json!({"agent":"scribe","task_id":id,"model":"m","tools":["read"]}),
        ));
        out.push(ev("agent_completed", base + 30.0, json!({"agent":"scribe","task_id":id,"status":"success","duration_ms":29000,"cost_usd":0.12})));
        out.push(ev(
            "agent_started",
            base + 31.0,
            json!({"agent":"critic","task_id":id,"model":"m","tools":[]}),
        ));
        let verdict = if t % 3 == 0 { "rejected" } else { "approved" };
        out.push(ev("agent_completed", base + 35.0, json!({"agent":"critic","task_id":id,"status":verdict,"duration_ms":4000,"cost_usd":0.03})));
        if t % 5 == 0 {
            out.push(ev(
                "agent_started",
                base + 36.0,
                json!({"agent":"runner","task_id":id,"model":"m","tools":[]}),
            ));
            out.push(ev("agent_completed", base + 40.0, json!({"agent":"runner","task_id":id,"status":"failed","duration_ms":4000,"cost_usd":0.01})));
            out.push(ev(
                "agent_started",
                base + 41.0,
                json!({"agent":"runner","task_id":id,"model":"m","tools":[]}),
            ));
        }
        out.push(ev("agent_completed", base + 50.0, json!({"agent":"runner","task_id":id,"status":"success","duration_ms":9000,"cost_usd":0.02})));
        out.push(ev("validation_complete", base + 80.0, json!({"task_id":id,"result":{"browser_launched":true,"test_executed":true,"test_passed": t % 4 != 1},"cost":0.3,"duration_ms":20000,"screenshots":2})));
    }
    out
}

fn post_all(hub: &Hub, events: &[Value]) {
    post_all_to(&hub.url("/events"), events);
}

fn post_all_to(url: &str, events: &[Value]) {
    let body: Vec<String> = events.iter().map(Value::to_string).collect();
    for chunk in body.chunks(200) {
        let (s, a) = common::post_to(
            url,
            chunk.join("\n").as_bytes(),
            "application/x-ndjson",
            &[],
        );
        assert_eq!(s, 200, "{a}");
    }
}

/// Every value key under `prefix` with its JSON.
fn values(redis: &Redis, prefix: &str) -> BTreeMap<String, Value> {
    let keys = redis
        .cmd(&["KEYS", &format!("{prefix}*")])
        .unwrap_or_default();
    keys.lines()
        .filter(|k| !k.ends_with(":raw"))
        .map(|k| {
            (
                k.trim_start_matches(prefix).to_string(),
                redis.get_json(k).unwrap(),
            )
        })
        .collect()
}

fn close(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    a.len() == b.len()
        && a.iter().all(|(k, x)| {
            let y = &b[k];
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                _ => x == y,
            }
        })
}

fn assert_same(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in a {
        assert!(close(v, &b[k]), "{k}: {v} vs {}", b[k]);
    }
}

fn events_in(redis: &Redis, key: &str) -> Option<u64> {
    redis.get_json(key).and_then(|v| v["events"].as_u64())
}

#[test]
fn buckets_split_exactly_at_hour_day_and_week_boundaries() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with(&redis, dir.path(), &[]);
    post_all(
        &hub,
        &[
            ev("note", MONDAY - 0.001, json!({})),
            ev("note", MONDAY, json!({})),
            ev("note", MONDAY + 59.999, json!({})),
            ev("note", MONDAY + 3600.0 - 0.001, json!({})),
        ],
    );
    let expect = [
        ("metrics:hourly:2026-11-29T23:00:00", 1),
        ("metrics:hourly:2026-11-30T00:00:00", 3),
        ("metrics:daily:2026-11-29", 1),
        ("metrics:daily:2026-11-30", 3),
        ("metrics:weekly:2026-W48", 1),
        ("metrics:weekly:2026-W49", 3),
    ];
    for (key, n) in expect {
        wait_for(key, T, || (events_in(&redis, key) == Some(n)).then_some(()));
    }
    // The value is the seed's shape: the six KPIs, numbers.
    let v = redis.get_json("metrics:daily:2026-11-30").unwrap();
    for k in agentpulse::config::KPI_NAMES {
        assert!(v[k].is_number(), "{k} in {v}");
    }
}

#[test]
fn ttls_are_set_and_refreshed() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with(&redis, dir.path(), &[]);
    let now = agentpulse::event::now_unix();
    post_all(&hub, &[ev("note", now, json!({}))]);
    let g = agentpulse::metrics::Granularity::Hourly;
    let key = format!("metrics:hourly:{}", g.bucket_name(g.bucket_start(now)));
    wait_for("value", T, || events_in(&redis, &key));
    let ttl = |k: &str| redis.cmd(&["TTL", k]).unwrap().parse::<i64>().unwrap();
    let week = 7 * 86_400;
    assert!((week - 60..=week).contains(&ttl(&key)), "{}", ttl(&key));
    assert!((week - 60..=week).contains(&ttl(&format!("{key}:raw"))));
    let daily = key.replace("hourly", "daily");
    let daily = &daily[..daily.len() - 9];
    wait_for("daily", T, || events_in(&redis, daily));
    assert!(ttl(daily) > 29 * 86_400, "{}", ttl(daily));

    redis.cmd(&["EXPIRE", &key, "100"]).unwrap();
    post_all(&hub, &[ev("note", now, json!({}))]);
    wait_for("ttl refreshed", T, || (ttl(&key) > week - 60).then_some(()));
    assert_eq!(events_in(&redis, &key), Some(2));
}

#[test]
fn stored_values_equal_the_offline_report() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hub_with(&redis, dir.path(), &[]);
    let events = workflow(0..60, MONDAY - 2.0 * 3600.0);
    post_all(&hub, &events);
    assert!(hub.terminate().success());
    let stored = values(&redis, "metrics:");
    let out = common::bin()
        .args(["report", "--buckets", "hourly"])
        .arg(dir.path().join("agent-events.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    let hourly: BTreeMap<String, Value> = stored
        .into_iter()
        .filter(|(k, _)| k.starts_with("hourly:"))
        .collect();
    let report: BTreeMap<String, Value> = report
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("metrics:").to_string(), v))
        .collect();
    assert!(hourly.len() >= 2, "{hourly:?}");
    assert_same(&hourly, &report);
    // And the KPIs are not all zero: the comparison means something.
    let any = hourly.values().next().unwrap();
    assert!(any["validation_pass_rate"].as_f64().unwrap() > 0.0, "{any}");
}

#[test]
fn two_hubs_sharing_redis_equal_one_hub() {
    let redis = Redis::start();
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let t0 = MONDAY + 5.0 * 3600.0;
    let mut a = hub_with(&redis, d1.path(), &["--redis-prefix", "two:"]);
    let mut b = hub_with(&redis, d2.path(), &["--redis-prefix", "two:"]);
    let mut one = hub_with(&redis, d3.path(), &["--redis-prefix", "one:"]);
    // Each task's events go to one hub, as agents of one process would.
    let (first, second) = (workflow(0..40, t0), workflow(40..80, t0));
    let (ua, ub) = (a.url("/events"), b.url("/events"));
    std::thread::scope(|s| {
        s.spawn(|| post_all_to(&ua, &first));
        s.spawn(|| post_all_to(&ub, &second));
    });
    post_all(&one, &[first.clone(), second.clone()].concat());
    for h in [&mut a, &mut b, &mut one] {
        assert!(h.terminate().success());
    }
    let (two, whole) = (values(&redis, "two:"), values(&redis, "one:"));
    assert!(!whole.is_empty());
    assert_same(&two, &whole);
}

#[test]
fn a_redis_outage_loses_nothing_and_doubles_nothing() {
    let redis = Redis::start_persistent();
    let control = Redis::start();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let t0 = MONDAY + 9.0 * 3600.0;
    let events = workflow(0..60, t0);
    let mut hub = hub_with(&redis, d1.path(), &[]);
    post_all(&hub, &events[..200]);
    wait_for("first flush", T, || {
        let (_, h) = hub.get_json("/health");
        (h["components"]["redis_metrics"]["pending_events"] == 0
            && h["components"]["redis_metrics"]["flushes"].as_u64() > Some(0))
        .then_some(())
    });
    let redis = {
        let mut r = redis;
        r.kill();
        // Ingest, stream and log carry on while Redis is down.
        post_all(&hub, &events[200..400]);
        let (s, h) = hub.get_json("/health");
        assert_eq!(s, 200);
        wait_for("degraded", T, || {
            let (_, h) = hub.get_json("/health");
            (h["status"] == "degraded").then_some(())
        });
        assert!(h["components"].is_object());
        r.restart()
    };
    post_all(&hub, &events[400..]);
    wait_for("recovery", T, || {
        let (_, h) = hub.get_json("/health");
        (h["status"] == "ok" && h["components"]["redis_metrics"]["pending_events"] == 0)
            .then_some(())
    });
    assert!(hub.terminate().success());

    let mut reference = hub_with(&control, d2.path(), &[]);
    post_all(&reference, &events);
    assert!(reference.terminate().success());
    assert_same(&values(&redis, "metrics:"), &values(&control, "metrics:"));
}

#[test]
fn a_flush_retried_after_a_lost_reply_counts_once() {
    use agentpulse::metrics::{BucketSet, Granularity, MetricsConfig, MetricsEngine};
    use agentpulse::sinks::redis_metrics::{store, Flush, Keys};
    let redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut engine = MetricsEngine::new(MetricsConfig::default());
    let mut set = BucketSet::new();
    for (i, e) in workflow(0..5, MONDAY).into_iter().enumerate() {
        engine.observe_into(
            &agentpulse::Event {
                id: i as u64 + 1,
                event_type: std::sync::Arc::from(e["event_type"].as_str().unwrap()),
                timestamp: e["timestamp"].as_f64().unwrap(),
                event_id: None,
                payload: e["payload"].as_object().unwrap().clone(),
            },
            &mut set,
        );
    }
    let buckets: Vec<_> = set
        .iter()
        .filter(|(g, _, _)| *g != Granularity::Minute)
        .map(|(g, s, b)| (g, s, b.clone()))
        .collect();
    let flush = Flush {
        hub_id: "h1".into(),
        seq: 1,
        buckets,
    };
    let keys = Keys::default();
    let key = "metrics:hourly:2026-11-30T00:00:00";
    rt.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut con = redis::aio::ConnectionManager::new(client).await.unwrap();
        store::apply(&mut con, &keys, &flush).await.unwrap();
        let once = redis.get_json(key).unwrap();
        // The reply was lost: the hub sends the same flush again.
        store::apply(&mut con, &keys, &flush).await.unwrap();
        assert_eq!(redis.get_json(key).unwrap(), once);
        // A new flush with the same content does add (the test can fail).
        let again = Flush {
            seq: 2,
            ..flush.clone()
        };
        store::apply(&mut con, &keys, &again).await.unwrap();
        assert_eq!(
            redis.get_json(key).unwrap()["events"].as_u64(),
            once["events"].as_u64().map(|n| n * 2)
        );
    });
}

#[test]
fn the_hub_serves_with_redis_down_and_reports_degraded() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let hub = Hub::start(dir.path(), &["--redis-url", &url, "--redis-flush-ms", "50"]);
    let (s, a) = hub.post(
        &json!({"event_type":"note","timestamp":MONDAY,"payload":{}}).to_string(),
        "application/json",
    );
    assert_eq!((s, a["ids"][0].as_u64()), (200, Some(1)));
    let (s, h) = hub.get_json("/health");
    assert_eq!(s, 200);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"].to_string().contains("redis"), "{h}");
    let text = ureq::get(&hub.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(text.contains("agentpulse_redis_metrics_up 0"), "{text}");

    // Redis comes up: the pending increments land, health recovers.
    let redis = Redis::start_on(port);
    wait_for("stored", T, || {
        events_in(&redis, "metrics:hourly:2026-11-30T00:00:00")
    });
    wait_for("ok", T, || {
        let (_, h) = hub.get_json("/health");
        (h["status"] == "ok").then_some(())
    });
}

#[test]
fn reading_back_and_rebuilding() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hub_with(&redis, dir.path(), &[]);
    let events = workflow(0..30, MONDAY + 12.0 * 3600.0);
    post_all(&hub, &events);
    let path = "/api/metrics?bucket=hourly&from=2026-11-30T12:00:00&to=2026-11-30T13:00:00";
    let api = wait_for("all events stored", T, || {
        let (s, api) = hub.get_json(path);
        assert_eq!(s, 200, "{api}");
        (api["series"][0]["kpis"]["events"].as_u64() == Some(events.len() as u64)).then_some(api)
    });
    assert_eq!(api["source"], "redis");
    assert_eq!(api["series"].as_array().unwrap().len(), 2);
    assert!(
        api["series"][0]["kpis"]["validation_pass_rate"].as_f64() > Some(0.0),
        "{api}"
    );
    assert!(
        api["series"][1]["kpis"].is_null(),
        "no data in the next hour: {api}"
    );
    assert!(hub.terminate().success());
    let live = values(&redis, "metrics:");

    let out = common::bin()
        .args([
            "metrics",
            "--redis-url",
            &redis.url(),
            "--bucket",
            "daily",
            "--from",
            "2026-11-30",
            "--to",
            "2026-11-30",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        close(&printed[0]["kpis"], &live["daily:2026-11-30"]),
        "{printed}"
    );

    // Rebuilding from the log gives the live values, twice over.
    redis.cmd(&["FLUSHALL"]).unwrap();
    let log = dir.path().join("agent-events.jsonl");
    for _ in 0..2 {
        let out = common::bin()
            .args(["rebuild-metrics", "--redis-url", &redis.url()])
            .arg(&log)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(&values(&redis, "metrics:"), &live);
    }
}
