//! A cluster of hubs on one Redis Stream (`serve --cluster`): each test
//! runs its own `redis-server` and three real hub processes (A, B, C), as
//! the README's recipe does.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{post_to, wait_for, ws, Hub, Redis};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(30);

/// Three hubs on `redis`, each with its own log dir under `root`.
fn three_hubs(redis: &Redis, root: &Path) -> Vec<Hub> {
    ["a", "b", "c"]
        .iter()
        .map(|name| start_hub(redis, &root.join(name), 0))
        .collect()
}

fn start_hub(redis: &Redis, dir: &Path, port: u16) -> Hub {
    Hub::start_on(dir, port, &["--cluster", &redis.url()])
}

/// A batch of `n` notes with event ids `{prefix}-{from}`.., as NDJSON.
fn notes(prefix: &str, from: u64, n: u64) -> String {
    (from..from + n)
        .map(|i| {
            json!({"event_type": "note", "event_id": format!("{prefix}-{i}"),
                   "payload": {"n": i, "agent": "writer", "task_id": "t1"}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn post(hub: &Hub, body: &str) -> (u16, Value) {
    post_to(
        &hub.url("/events"),
        body.as_bytes(),
        "application/x-ndjson",
        &[],
    )
}

/// Every event `/api/events` of `hub` retains, oldest first, page by page.
fn api_events(hub: &Hub) -> Vec<Value> {
    let mut out = Vec::new();
    let mut since = 0u64;
    loop {
        let (status, body) = hub.get_json(&format!("/api/events?since={since}&limit=1000"));
        assert_eq!(status, 200, "{body}");
        out.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next"].as_u64() {
            Some(n) => since = n,
            None => return out,
        }
    }
}

/// The lines of a hub's active log.
fn log_lines(hub: &Hub) -> Vec<String> {
    std::fs::read_to_string(hub.log_dir.join("agent-events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until `hub` has `n` events with an id up to `last`.
fn wait_for_last_id(hub: &Hub, last: u64) {
    wait_for(&format!("{} to reach id {last}", hub.addr), LONG, || {
        let (_, h) = hub.get_json("/health");
        (h["last_id"].as_u64()? >= last).then_some(())
    });
}

/// The `(id, event_id)` of the next `n` events a reader gets; fails on
/// any gap or reset notice.
fn read_events(reader: &ws::Client, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = reader.next(LONG);
        let ty = m["event_type"].as_str().unwrap_or("");
        assert_ne!(ty, "stream_gap", "unexpected gap: {m}");
        if let Some(id) = m["id"].as_u64() {
            out.push((id, m["event_id"].as_str().unwrap_or("").to_owned()));
        }
    }
    out
}

#[test]
fn events_posted_round_robin_reach_every_hub_with_the_same_ids_in_the_same_order() {
    let redis = Redis::start();
    let root = tempfile::tempdir().unwrap();
    let hubs = three_hubs(&redis, root.path());
    let readers: Vec<ws::Client> = hubs
        .iter()
        .map(|h| ws::connect(&h.ws_url("/agent-events?since=0"), &[]))
        .collect();
    let mut epochs = HashSet::new();
    for r in &readers {
        let hello = r.next(LONG);
        assert_eq!(hello["event_type"], "connection_established", "{hello}");
        epochs.insert(hello["epoch"].as_str().unwrap().to_owned());
    }
    assert_eq!(epochs.len(), 1, "one epoch for the cluster: {epochs:?}");

    let (batches, per) = (60u64, 10u64);
    let mut acked: HashMap<String, u64> = HashMap::new();
    for b in 0..batches {
        let hub = &hubs[(b % 3) as usize];
        let (status, body) = post(hub, &notes("rr", b * per, per));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], per, "{body}");
        for (i, id) in body["ids"].as_array().unwrap().iter().enumerate() {
            acked.insert(format!("rr-{}", b * per + i as u64), id.as_u64().unwrap());
        }
    }
    let n = (batches * per) as usize;
    let seen: Vec<Vec<(u64, String)>> = readers.iter().map(|r| read_events(r, n)).collect();
    assert_eq!(seen[0], seen[1], "A and B differ");
    assert_eq!(seen[0], seen[2], "A and C differ");
    assert!(
        seen[0].windows(2).all(|w| w[0].0 < w[1].0),
        "ids strictly increase"
    );
    let got: HashMap<String, u64> = seen[0].iter().map(|(id, k)| (k.clone(), *id)).collect();
    assert_eq!(got, acked, "every acknowledged id, as acknowledged");

    // /api/events and the logs say the same, byte for byte in the logs.
    let last = seen[0].last().unwrap().0;
    let api: Vec<Vec<Value>> = hubs
        .iter()
        .map(|h| {
            wait_for_last_id(h, last);
            api_events(h)
        })
        .collect();
    assert_eq!(api[0].len(), n);
    assert_eq!(api[0], api[1]);
    assert_eq!(api[0], api[2]);
    let ids: Vec<u64> = api[0].iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, seen[0].iter().map(|s| s.0).collect::<Vec<_>>());
    let logs: Vec<Vec<String>> = hubs
        .iter()
        .map(|h| {
            wait_for("the log to hold every event", LONG, || {
                let l = log_lines(h);
                (l.len() == n).then_some(l)
            })
        })
        .collect();
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
    let first: Value = serde_json::from_str(&logs[0][0]).unwrap();
    assert_eq!(first, api[0][0]);
    let (_, health) = hubs[1].get_json("/health");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["components"]["cluster"]["tailed"], n as u64);
}

#[test]
fn the_same_event_id_posted_to_two_hubs_is_stored_once() {
    let redis = Redis::start();
    let root = tempfile::tempdir().unwrap();
    let hubs = three_hubs(&redis, root.path());
    let body = notes("same", 0, 1);
    let (status, a) = post(&hubs[0], &body);
    assert_eq!((status, a["accepted"].as_u64()), (200, Some(1)), "{a}");
    let id = a["ids"][0].as_u64().unwrap();
    let (status, b) = post(&hubs[1], &body);
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        (b["accepted"].as_u64(), b["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(b["ids"][0].as_u64(), Some(id), "the earlier id");
    let (_, m) = hubs[1].get_json("/api/metrics");
    assert_eq!(m["pipeline"]["duplicates"], 1, "{}", m["pipeline"]);

    // Two hubs at once, the same 100 event ids: each stored once.
    let body = Arc::new(notes("race", 0, 100));
    let answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = hubs[..2]
            .iter()
            .map(|h| {
                let (body, url) = (body.clone(), h.url("/events"));
                s.spawn(move || post_to(&url, body.as_bytes(), "application/x-ndjson", &[]).1)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        answers[0]["ids"], answers[1]["ids"],
        "the same ids from both"
    );
    let accepted: u64 = answers
        .iter()
        .map(|a| a["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(accepted, 100, "{answers:?}");

    // A marker after them: once a hub has it, it has everything before.
    let (_, m) = post(&hubs[2], &notes("marker", 0, 1));
    let last = m["ids"][0].as_u64().unwrap();
    for h in &hubs {
        wait_for_last_id(h, last);
        let events = api_events(h);
        assert_eq!(events.len(), 102, "{}", h.addr);
        let keys: HashSet<&str> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(keys.len(), events.len(), "no event_id twice on {}", h.addr);
    }
}

/// Posts batches round robin until `stop`, retrying each batch (same
/// event ids) until it is acknowledged; records the acknowledged ids and
/// the 503s.
struct Producer {
    acked: Arc<Mutex<HashMap<String, u64>>>,
    unavailable: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    fn start(urls: Vec<String>, prefix: &'static str, per: u64) -> Producer {
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let unavailable = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, u, st) = (acked.clone(), unavailable.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut batch = 0u64;
            let mut turn = 0usize;
            while !st.load(Ordering::Relaxed) {
                let body = notes(prefix, batch * per, per);
                let url = &urls[turn % urls.len()];
                turn += 1;
                let r = ureq::post(url)
                    .timeout(Duration::from_secs(10))
                    .set("Content-Type", "application/x-ndjson")
                    .send_string(&body);
                match r {
                    Ok(resp) => {
                        let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
                        let mut acked = a.lock().unwrap();
                        for (i, id) in v["ids"].as_array().unwrap().iter().enumerate() {
                            let key = format!("{prefix}-{}", batch * per + i as u64);
                            let id = id.as_u64().unwrap();
                            if let Some(before) = acked.insert(key.clone(), id) {
                                assert_eq!(before, id, "{key} acknowledged with two ids");
                            }
                        }
                        batch += 1;
                    }
                    Err(ureq::Error::Status(503, resp)) => {
                        assert_eq!(resp.header("retry-after"), Some("1"));
                        u.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    // A hub killed under us: the same batch, to the next hub.
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Producer {
            acked,
            unavailable,
            stop,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(mut self) -> HashMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.acked.lock().unwrap().clone()
    }
}

/// Every acknowledged event is on `hub` with its acknowledged id, and no
/// event_id is there twice.
fn assert_holds(hub: &Hub, acked: &HashMap<String, u64>) {
    let last = acked.values().copied().max().unwrap();
    wait_for_last_id(hub, last);
    let events = api_events(hub);
    let mut stored: HashMap<String, u64> = HashMap::new();
    for e in &events {
        let key = e["event_id"].as_str().unwrap().to_owned();
        let id = e["id"].as_u64().unwrap();
        assert!(
            stored.insert(key.clone(), id).is_none(),
            "{key} stored twice on {}",
            hub.addr
        );
    }
    for (key, id) in acked {
        assert_eq!(stored.get(key), Some(id), "{key} on {}", hub.addr);
    }
}

#[test]
fn redis_killed_and_restarted_during_ingest_loses_and_doubles_nothing_acknowledged() {
    let mut redis = Redis::start_persistent();
    let root = tempfile::tempdir().unwrap();
    let hubs = three_hubs(&redis, root.path());
    let producer = Producer::start(hubs.iter().map(|h| h.url("/events")).collect(), "k", 5);
    wait_for("some acknowledged events", LONG, || {
        (producer.acked() >= 100).then_some(())
    });
    redis.kill();
    wait_for("503s while Redis is down", LONG, || {
        (producer.unavailable.load(Ordering::Relaxed) >= 3).then_some(())
    });
    wait_for("/health degraded", LONG, || {
        let (_, h) = hubs[0].get_json("/health");
        (h["status"] == "degraded").then_some(())
    });
    // The hubs keep serving what they have.
    assert!(!api_events(&hubs[1]).is_empty());
    let before = producer.acked();
    let redis = redis.restart();
    wait_for("ingest to resume", LONG, || {
        (producer.acked() >= before + 100).then_some(())
    });
    let acked = producer.finish();
    for h in &hubs {
        assert_holds(h, &acked);
    }
    wait_for("/health ok again", LONG, || {
        let (_, h) = hubs[0].get_json("/health");
        (h["status"] == "ok").then_some(())
    });
    drop(redis);
}

#[test]
fn a_hub_killed_while_posting_loses_nothing_it_acknowledged_and_catches_up_on_restart() {
    let redis = Redis::start();
    let root = tempfile::tempdir().unwrap();
    let mut hubs = three_hubs(&redis, root.path());
    let producer = Producer::start(vec![hubs[0].url("/events")], "a", 20);
    wait_for("some acknowledged events", LONG, || {
        (producer.acked() >= 200).then_some(())
    });
    hubs[0].child.kill().unwrap(); // SIGKILL
    hubs[0].child.wait().unwrap();
    let acked = producer.finish();
    for h in &hubs[1..] {
        assert_holds(h, &acked);
    }
    // More while A is down, then A again on its port and log: it catches up.
    let (status, b) = post(&hubs[1], &notes("b", 0, 50));
    assert_eq!(status, 200);
    wait_for_last_id(&hubs[1], b["ids"][49].as_u64().unwrap());
    let port = hubs[0].addr.port();
    let dir = hubs[0].log_dir.clone();
    hubs[0] = start_hub(&redis, &dir, port);
    let want = api_events(&hubs[1]);
    let last = want.last().unwrap()["id"].as_u64().unwrap();
    wait_for_last_id(&hubs[0], last);
    assert_eq!(api_events(&hubs[0]), want);
    let lines: Vec<Value> = log_lines(&hubs[0])
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<u64> = lines.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "no id twice in A's log"
    );
    assert_eq!(ids.last(), Some(&last));
}

#[test]
fn a_reader_resumes_on_b_with_the_position_it_had_on_c() {
    let redis = Redis::start();
    let root = tempfile::tempdir().unwrap();
    let hubs = three_hubs(&redis, root.path());
    for b in 0..10 {
        let (status, _) = post(&hubs[(b % 3) as usize], &notes("r", b * 10, 10));
        assert_eq!(status, 200);
    }
    let on_c = ws::connect(&hubs[2].ws_url("/agent-events?since=0"), &[]);
    let hello = on_c.next(LONG);
    let epoch = hello["epoch"].as_str().unwrap().to_owned();
    let first = read_events(&on_c, 40);
    drop(on_c);
    let since = first.last().unwrap().0;
    for b in 10..16 {
        let (status, _) = post(&hubs[(b % 3) as usize], &notes("r", b * 10, 10));
        assert_eq!(status, 200);
    }
    let on_b = ws::connect(
        &hubs[1].ws_url(&format!("/agent-events?since={since}&epoch={epoch}")),
        &[],
    );
    let hello = on_b.next(LONG);
    assert_eq!(hello["epoch"], epoch.as_str(), "{hello}");
    let rest = read_events(&on_b, 120);
    let mut all = first.clone();
    all.extend(rest);
    let keys: Vec<String> = all.iter().map(|(_, k)| k.clone()).collect();
    let want: Vec<String> = (0..160).map(|i| format!("r-{i}")).collect();
    assert_eq!(keys, want, "nothing missed or repeated across the hubs");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
}

/// 30 tasks of a small workflow, a task every 97 s from `t0`.
fn workflow(t0: f64) -> Vec<Value> {
    let ev = |ty: &str, ts: f64, p: Value| json!({"event_type": ty, "timestamp": ts, "payload": p});
    let mut out = Vec::new();
    for t in 0..30u32 {
        let id = format!("t{t}");
        let base = t0 + f64::from(t) * 97.0;
        out.push(ev("task_queued", base, json!({"task_id": id, "feature": format!("f{}", t % 3), "est_cost": 0.5, "timestamp": base})));
        out.push(ev(
            "agent_started",
            base + 1.0,
            json!({"agent": "scribe", "task_id": id, "model": "m", "tools": []}),
        ));
        out.push(ev("agent_completed", base + 30.0, json!({"agent": "scribe", "task_id": id, "status": "success", "duration_ms": 29000, "cost_usd": 0.12})));
        out.push(ev("validation_complete", base + 80.0, json!({"task_id": id, "result": {"browser_launched": true, "test_executed": true, "test_passed": t % 4 != 1}, "cost": 0.3, "duration_ms": 20000, "screenshots": 1})));
    }
    out
}

/// Every bucket value under `prefix` in Redis.
fn buckets(redis: &Redis, prefix: &str) -> std::collections::BTreeMap<String, Value> {
    let keys = redis
        .cmd(&["KEYS", &format!("{prefix}*")])
        .unwrap_or_default();
    keys.lines()
        .filter(|k| !k.ends_with(":raw") && !k.is_empty())
        .map(|k| {
            (
                k.trim_start_matches(prefix).to_owned(),
                redis.get_json(k).unwrap(),
            )
        })
        .collect()
}

#[test]
fn redis_buckets_count_each_event_once_and_equal_a_single_hub() {
    let redis = Redis::start();
    let root = tempfile::tempdir().unwrap();
    let url = redis.url();
    let metrics = [
        "--redis-url",
        url.as_str(),
        "--redis-flush-ms",
        "50",
        "--no-redis-bridge",
    ];
    let mut hubs: Vec<Hub> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let mut args = vec!["--cluster", url.as_str(), "--redis-prefix", "c:"];
            args.extend_from_slice(&metrics);
            Hub::start(&root.path().join(n), &args)
        })
        .collect();
    let mut args = vec!["--redis-prefix", "one:"];
    args.extend_from_slice(&metrics);
    let mut one = Hub::start(&root.path().join("one"), &args);
    // A task's events split across the hubs: the hard case for merging.
    // Inside the rolling window (an hour) and the current buckets.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let events = workflow(now - 3000.0);
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    let mut last = 0;
    for (i, chunk) in lines.chunks(7).enumerate() {
        let body = chunk.join("\n");
        let (s, a) = post(&hubs[i % 3], &body);
        assert_eq!(s, 200, "{a}");
        last = a["ids"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_u64()
            .unwrap();
        let (s, a) = post(&one, &body);
        assert_eq!(s, 200, "{a}");
    }
    // The KPIs of every hub's engine are the same, events and all.
    let kpis = |h: &Hub| {
        wait_for_last_id(h, last);
        let (_, m) = h.get_json("/api/metrics");
        let keep = ["window", "agents", "buckets", "open_tasks"];
        keep.map(|k| m[k].clone())
    };
    let k0 = kpis(&hubs[0]);
    assert!(
        k0[1].as_object().is_some_and(|a| a.contains_key("scribe")),
        "agents in /api/metrics: {k0:?}"
    );
    assert_eq!(kpis(&hubs[1]), k0);
    assert_eq!(kpis(&hubs[2]), k0);
    assert_eq!(kpis(&one), k0, "the cluster's KPIs are a single hub's");
    for h in hubs.iter_mut().chain([&mut one]) {
        assert!(h.terminate().success());
    }
    let (cluster, single) = (buckets(&redis, "c:"), buckets(&redis, "one:"));
    assert!(!single.is_empty());
    assert_eq!(
        cluster.keys().collect::<Vec<_>>(),
        single.keys().collect::<Vec<_>>()
    );
    for (k, v) in &single {
        let c = &cluster[k];
        let close = match (v.as_object(), c.as_object()) {
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(f, x)| match (x.as_f64(), b[f].as_f64()) {
                        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                        _ => *x == b[f],
                    })
            }
            _ => v == c,
        };
        assert!(close, "{k}: cluster {c} vs one hub {v}");
    }
}

#[test]
fn the_ingest_websocket_and_otlp_get_the_cluster_s_answers() {
    let mut redis = Redis::start_persistent();
    let root = tempfile::tempdir().unwrap();
    let hubs = three_hubs(&redis, root.path());
    // /ingest on A: the answer's ids are the cluster's.
    let ingest = ws::connect(&hubs[0].ws_url("/ingest"), &[]);
    ingest.send(&notes("ws", 0, 3));
    let a = ingest.next(LONG);
    assert_eq!(
        (a["status"].as_u64(), a["accepted"].as_u64()),
        (Some(200), Some(3)),
        "{a}"
    );
    // The same event ids through B's /ingest: duplicates, the same ids.
    let ingest_b = ws::connect(&hubs[1].ws_url("/ingest"), &[]);
    ingest_b.send(&notes("ws", 0, 3));
    let b = ingest_b.next(LONG);
    assert_eq!(b["duplicates"].as_u64(), Some(3), "{b}");
    assert_eq!(b["ids"], a["ids"]);
    // OTLP/HTTP on C: a GenAI span becomes events every hub has.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 3_000_000_000;
    let span = json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]},
      "scopeSpans": [{"scope": {"name": "t"}, "spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
         "name": "invoke_agent router", "kind": 1,
         "startTimeUnixNano": t.to_string(), "endTimeUnixNano": (t + 1_500_000_000).to_string(),
         "attributes": [
           {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
           {"key": "gen_ai.agent.name", "value": {"stringValue": "router"}}],
         "status": {"code": 1}}]}]}]})
    .to_string();
    let (status, _) = post_to(
        &hubs[2].url("/v1/traces"),
        span.as_bytes(),
        "application/json",
        &[],
    );
    assert_eq!(status, 200);
    let last = wait_for("the span's events on C", LONG, || {
        let events = api_events(&hubs[2]);
        (events.len() > 3).then(|| events.last().unwrap()["id"].as_u64().unwrap())
    });
    for h in &hubs[..2] {
        wait_for_last_id(h, last);
        // The span's events may still be reaching C: until they agree.
        wait_for("the same events on every hub", LONG, || {
            (api_events(h) == api_events(&hubs[2])).then_some(())
        });
    }
    // Redis down: /ingest answers 503, OTLP 503 with Retry-After.
    redis.kill();
    wait_for("a 503 on /ingest", LONG, || {
        ingest.send(&notes("down", 0, 1));
        (ingest.next(LONG)["status"] == 503).then_some(())
    });
    let r = ureq::post(&hubs[2].url("/v1/traces"))
        .set("Content-Type", "application/json")
        .send_string(&span);
    match r {
        Err(ureq::Error::Status(503, resp)) => assert_eq!(resp.header("retry-after"), Some("1")),
        other => panic!("expected a 503, got {other:?}"),
    }
    let _redis = redis.restart();
    wait_for("/ingest to take events again", LONG, || {
        ingest.send(&notes("down", 0, 1));
        (ingest.next(LONG)["status"] == 200).then_some(())
    });
}

#[test]
fn retention_by_count_and_age_and_a_hub_behind_it_says_so() {
    let redis = Redis::start();
    let root = tempfile::tempdir().unwrap();
    let url = redis.url();
    let a = Hub::start(
        &root.path().join("a"),
        &[
            "--cluster",
            &url,
            "--cluster-max-len",
            "100",
            "--cluster-max-age",
            "1",
        ],
    );
    let xlen = || {
        redis
            .cmd(&["XLEN", "agentpulse:events"])
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    for b in 0..10 {
        let (status, _) = post(&a, &notes("old", b * 100, 100));
        assert_eq!(status, 200);
    }
    // MAXLEN ~ trims whole nodes: about 100 entries are left, not 1,000.
    let left = xlen();
    assert!((100..300).contains(&left), "{left} entries left");
    // A hub started now is behind the retention: it says so, and serves
    // what the stream still has.
    let late = Hub::start(&root.path().join("late"), &["--cluster", &url]);
    wait_for_last_id(&late, 1000);
    let (_, h) = late.get_json("/health");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["components"]["cluster"]["missed"], 1000 - left, "{h}");
    assert_eq!(api_events(&late).len() as u64, left);
    // Its readers are told what is gone, then get what it has.
    let reader = ws::connect(&late.ws_url("/agent-events?since=0"), &[]);
    let hello = reader.next(LONG);
    assert_eq!(hello["oldest_id"], 1001 - left, "{hello}");
    let gap = reader.next(LONG);
    assert_eq!(gap["event_type"], "stream_gap", "{gap}");
    assert_eq!(gap["payload"]["reason"], "not_retained", "{gap}");
    assert_eq!(
        (
            gap["payload"]["from_id"].as_u64(),
            gap["payload"]["to_id"].as_u64()
        ),
        (Some(1), Some(1000 - left))
    );
    assert_eq!(reader.next_event(LONG)["id"], 1001 - left);
    // By age: entries older than a second go as newer ones come.
    let mut n = 0;
    wait_for(
        "entries older than --cluster-max-age to be trimmed",
        LONG,
        || {
            n += 1;
            let (status, _) = post(&a, &notes("new", n, 1));
            assert_eq!(status, 200);
            let first = redis.cmd(&["XRANGE", "agentpulse:events", "-", "+", "COUNT", "1"])?;
            let first_id: u64 = first.lines().next()?.split('-').next()?.parse().ok()?;
            (first_id > 1000).then_some(())
        },
    );
}

#[test]
fn a_redis_restarted_empty_is_refused_rather_than_mixing_two_histories() {
    let redis = Redis::start(); // no persistence: a restart empties it
    let root = tempfile::tempdir().unwrap();
    let hubs = three_hubs(&redis, root.path());
    let (status, first) = post(&hubs[0], &notes("h1", 0, 5));
    assert_eq!(status, 200, "{first}");
    wait_for_last_id(&hubs[2], 5);
    let before = api_events(&hubs[2]);
    let redis = redis.restart();
    wait_for("a refusal naming the lost history", LONG, || {
        let (status, body) = post(&hubs[1], &notes("h1", 5, 1));
        (status == 503 && body["error"].as_str()?.contains("history")).then_some(())
    });
    // A new hub on the empty Redis starts a new history (new epoch, ids
    // from 1); the old hubs take none of it.
    let new = start_hub(&redis, &root.path().join("new"), 0);
    let (status, body) = post(&new, &notes("h2", 0, 3));
    assert_eq!((status, body["ids"][0].as_u64()), (200, Some(1)), "{body}");
    wait_for("the old hubs' tails to stop", LONG, || {
        let (_, h) = hubs[2].get_json("/health");
        (h["components"]["cluster"]["history_lost"] == true).then_some(())
    });
    assert_eq!(api_events(&hubs[2]), before);
    let (_, h) = hubs[0].get_json("/health");
    assert_eq!(h["status"], "degraded", "{h}");
}

#[test]
fn a_hub_restarted_while_redis_is_down_serves_its_log_and_catches_up_after() {
    let mut redis = Redis::start_persistent();
    let root = tempfile::tempdir().unwrap();
    let mut hubs = three_hubs(&redis, root.path());
    let (status, _) = post(&hubs[1], &notes("before", 0, 20));
    assert_eq!(status, 200);
    wait_for_last_id(&hubs[0], 20);
    let have = api_events(&hubs[0]);
    redis.kill();
    hubs[0].child.kill().unwrap();
    hubs[0].child.wait().unwrap();
    let (port, dir) = (hubs[0].addr.port(), hubs[0].log_dir.clone());
    // Redis is down: A starts all the same, on its log, and says so.
    hubs[0] = start_hub(&redis, &dir, port);
    assert_eq!(api_events(&hubs[0]), have);
    let (_, h) = hubs[0].get_json("/health");
    assert_eq!(h["status"], "degraded", "{h}");
    let (status, _) = post(&hubs[0], &notes("down", 0, 1));
    assert_eq!(status, 503);
    let _redis = redis.restart();
    let (status, body) = post(&hubs[2], &notes("after", 0, 10));
    assert_eq!(status, 200, "{body}");
    let last = body["ids"][9].as_u64().unwrap();
    // Acknowledged once Redis holds them: C's own tail may still be on its way.
    wait_for_last_id(&hubs[2], last);
    wait_for_last_id(&hubs[0], last);
    assert_eq!(api_events(&hubs[0]), api_events(&hubs[2]));
    wait_for("A to take events again", LONG, || {
        (post(&hubs[0], &notes("down", 0, 1)).0 == 200).then_some(())
    });
}

#[test]
fn an_alert_and_a_budget_warning_fire_once_per_cluster() {
    let redis = Redis::start();
    let root = tempfile::tempdir().unwrap();
    let (url, hooks) = common::webhook_receiver(false);
    let base = agentpulse::config::DEFAULT_CONFIG_YAML;
    let events_part = &base[..base.find("alerts:").unwrap()];
    let cfg = root.path().join("agentpulse.yaml");
    std::fs::write(
        &cfg,
        format!(
            "replace: [alerts]\n{events_part}alerts:\n  - condition: \"validation_pass_rate < 0.70\"\n    action: notify_admin\n    message: \"Validation pass rate <70%\"\n    min_samples: 4\nnotifiers:\n  notify_admin:\n    - type: webhook\n      url: {url}\nbudgets:\n  - scope: global\n    period: day\n    limit_usd: 1.0\n    warn_at: 0.8\n"
        ),
    )
    .unwrap();
    let (cfg, redis_url) = (cfg.to_str().unwrap().to_owned(), redis.url());
    let hubs: Vec<Hub> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            Hub::start(
                &root.path().join(n),
                &["--config", &cfg, "--cluster", &redis_url],
            )
        })
        .collect();
    wait_for("one hub to hold the alerts lease", LONG, || {
        let leaders = hubs
            .iter()
            .filter(|h| h.get_json("/health").1["components"]["cluster"]["alerts_leader"] == true)
            .count();
        (leaders == 1).then_some(())
    });
    let validation = |t: u32| {
        json!({"event_type": "validation_complete", "payload": {"task_id": format!("t{t}"),
            "result": {"passed": false}, "cost": 0.3, "duration_ms": 5, "screenshots": 0}})
        .to_string()
    };
    for t in 0..4 {
        let (status, _) = post(&hubs[t as usize % 3], &validation(t));
        assert_eq!(status, 200);
    }
    let hook = hooks.recv_timeout(LONG).expect("the webhook called");
    assert_eq!(hook["event_type"], "alert_triggered", "{hook}");
    let count = |h: &Hub, ty: &str| {
        let (_, e) = h.get_json(&format!("/api/events?since=0&types={ty}"));
        e["events"].as_array().unwrap().len()
    };
    for h in &hubs {
        wait_for("the alert and the budget events on every hub", LONG, || {
            let n = (
                count(h, "alert_triggered"),
                count(h, "budget_warning"),
                count(h, "budget_exceeded"),
            );
            (n == (1, 1, 1)).then_some(())
        });
    }
    // Nothing more comes: once per cluster, not once per hub.
    assert!(
        hooks.recv_timeout(Duration::from_millis(1500)).is_err(),
        "the webhook called once"
    );
    for h in &hubs {
        assert_eq!(count(h, "alert_triggered"), 1);
        assert_eq!(count(h, "budget_warning"), 1);
        assert_eq!(count(h, "budget_exceeded"), 1);
    }
}

/// Regression (issue 15, item 3): a hub with history that falls behind the
/// stream's retention while it is down used to give its readers a silent
/// jump in ids. In a cluster every id is an event, so the jump is a
/// `not_retained` gap, read from the ring (C) and from the log (B, whose
/// ring is too small to hold the jump).
#[test]
fn a_hub_with_history_that_fell_behind_the_retention_tells_its_readers() {
    let redis = Redis::start();
    let root = tempfile::tempdir().unwrap();
    let url = redis.url();
    let a = Hub::start(
        &root.path().join("a"),
        &["--cluster", &url, "--cluster-max-len", "100"],
    );
    let start_b = || {
        Hub::start(
            &root.path().join("b"),
            &["--cluster", &url, "--ring-capacity", "20"],
        )
    };
    let start_c = || Hub::start(&root.path().join("c"), &["--cluster", &url]);
    let (mut b, mut c) = (start_b(), start_c());
    assert_eq!(post(&a, &notes("early", 0, 50)).0, 200);
    wait_for_last_id(&b, 50);
    wait_for_last_id(&c, 50);
    assert!(b.terminate().success());
    assert!(c.terminate().success());
    // While B and C are down, the stream moves on and is trimmed.
    for i in 0..10 {
        assert_eq!(post(&a, &notes("late", i * 100, 100)).0, 200);
    }
    let left: u64 = redis
        .cmd(&["XLEN", "agentpulse:events"])
        .unwrap()
        .parse()
        .unwrap();
    let first_kept = 1051 - left;
    assert!(first_kept > 51, "the stream kept everything: {left}");
    for hub in [start_b(), start_c()] {
        wait_for_last_id(&hub, 1050);
        let reader = ws::connect(&hub.ws_url("/agent-events?since=0"), &[]);
        let hello = reader.next(LONG);
        assert_eq!(hello["event_type"], "connection_established", "{hello}");
        let before: Vec<u64> = read_events(&reader, 50).iter().map(|e| e.0).collect();
        assert_eq!(before, (1..=50).collect::<Vec<_>>(), "{}", hub.addr);
        let gap = reader.next(LONG);
        assert_eq!(gap["event_type"], "stream_gap", "{}: {gap}", hub.addr);
        assert_eq!(gap["payload"]["reason"], "not_retained", "{gap}");
        assert_eq!(
            (
                gap["payload"]["from_id"].as_u64(),
                gap["payload"]["to_id"].as_u64()
            ),
            (Some(51), Some(first_kept - 1)),
            "{}: {gap}",
            hub.addr
        );
        let after: Vec<u64> = read_events(&reader, left as usize)
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            after,
            (first_kept..=1050).collect::<Vec<_>>(),
            "{}",
            hub.addr
        );
        let (_, h) = hub.get_json("/health");
        assert_eq!(h["components"]["cluster"]["missed"], first_kept - 51, "{h}");
        // Keep the restarted hubs alive until their check is done.
        drop(hub);
    }
    drop((b, c));
}
