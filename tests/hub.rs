//! End-to-end tests of `agentpulse serve`: the real binary, real HTTP and
//! WebSocket clients.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{get_json, post_to, wait_for, ws, Hub};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

fn note(i: usize) -> String {
    json!({"event_type": "note", "payload": {"i": i}}).to_string()
}

fn completed(agent: &str, task: &str, cost: Value) -> Value {
    json!({"event_type":"agent_completed","payload":{
        "agent":agent,"task_id":task,"status":"success","duration_ms":5,"cost_usd":cost}})
}

fn ids(answer: &Value) -> Vec<u64> {
    answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[test]
fn http_ingest_takes_objects_arrays_ndjson_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);

    let (s, a) = hub.post(&note(0), "application/json");
    assert_eq!((s, ids(&a)), (200, vec![1]), "{a}");

    let (s, a) = hub.post(&format!("[{},{}]", note(1), note(2)), "application/json");
    assert_eq!((s, ids(&a)), (200, vec![2, 3]), "{a}");

    let (s, a) = hub.post(
        &format!("{}\n{}\n", note(3), note(4)),
        "application/x-ndjson",
    );
    assert_eq!((s, ids(&a)), (200, vec![4, 5]), "{a}");

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(format!("{}\n{}", note(5), note(6)).as_bytes())
        .unwrap();
    let body = gz.finish().unwrap();
    let (s, a) = post_to(
        &hub.url("/events"),
        &body,
        "application/x-ndjson",
        &[("Content-Encoding", "gzip")],
    );
    assert_eq!((s, ids(&a)), (200, vec![6, 7]), "{a}");

    let (s, events) = hub.get_json("/api/events?since=0");
    assert_eq!(s, 200);
    let got: Vec<u64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(events["last_id"], 7);
}

#[test]
fn bad_input_gets_a_clear_answer_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--max-body-bytes", "200000"]);
    hub.post(&note(0), "application/json");

    // Malformed JSON: 400 naming line and column.
    let (s, a) = hub.post("{\"event_type\":\n \"note\",,}", "application/json");
    assert_eq!(s, 400, "{a}");
    assert!(
        a["error"].as_str().unwrap().contains("line 2, column"),
        "{a}"
    );

    // A batch with invalid events: the valid ones are kept (207).
    let batch = json!([
        {"event_type":"note","payload":{"ok":1}},
        completed("scribe", "t1", json!("abc")),
        {"payload":{}},
        {"event_type":"note","payload":{"ok":2}},
    ]);
    let (s, a) = hub.post(&batch.to_string(), "application/json");
    assert_eq!(s, 207, "{a}");
    assert_eq!(a["accepted"], 2);
    assert_eq!(a["ids"], json!([2, null, null, 3]));
    assert_eq!(a["errors"][0]["index"], 1);
    assert_eq!(
        a["errors"][0]["error"],
        r#"agent_completed.cost_usd: expected a finite number >= 0, got "abc""#
    );
    assert_eq!(a["errors"][0]["field"], "cost_usd");
    assert_eq!(a["errors"][1]["index"], 2);
    assert_eq!(a["errors"][1]["error"], "event.event_type: missing");

    // Only invalid events: 422.
    let (s, a) = hub.post(
        &completed("scribe", "t1", json!(-1)).to_string(),
        "application/json",
    );
    assert_eq!(s, 422, "{a}");

    // NDJSON: a malformed line is rejected alone, with its line number.
    let (s, a) = hub.post(
        &format!("{}\n{{oops\n{}", note(9), note(10)),
        "application/x-ndjson",
    );
    assert_eq!(s, 207, "{a}");
    assert_eq!(a["ids"], json!([4, null, 5]));
    assert!(
        a["errors"][0]["error"].as_str().unwrap().contains("line 2"),
        "{a}"
    );

    // Over the request limit: 413. One event over 64 KiB: 413.
    // Regression: the hub used to answer before reading an oversized body and
    // close, so the client, still sending, saw "broken pipe" instead of 413.
    for size in [300_000, 4_000_000] {
        let (s, a) = hub.post(&"x".repeat(size), "application/json");
        assert_eq!(s, 413, "{a}");
        assert!(a["error"].as_str().unwrap().contains("200000"), "{a}");
    }
    let big = json!({"event_type":"note","payload":{"blob":"y".repeat(70_000)}});
    let (s, a) = hub.post(&big.to_string(), "application/json");
    assert_eq!(s, 413, "{a}");

    // Wrong method and path: JSON errors.
    let (s, a) = hub.get_json("/events");
    assert_eq!(s, 405, "{a}");
    assert!(a["error"].as_str().unwrap().contains("GET"), "{a}");
    let (s, a) = hub.get_json("/nope");
    assert_eq!(s, 404, "{a}");

    // Bad query parameters.
    let (s, a) = hub.get_json("/api/events?since=abc");
    assert_eq!(s, 400, "{a}");

    // Nothing of the rejected events reached the log, the stream or the
    // metrics; the hub is still serving.
    let (s, events) = hub.get_json("/api/events?since=0");
    assert_eq!(s, 200);
    assert_eq!(events["last_id"], 5);
    assert_eq!(events["events"].as_array().unwrap().len(), 5);
    let (_, m) = hub.get_json("/api/metrics");
    assert_eq!(m["pipeline"]["accepted"], 5);
    assert!(m["pipeline"]["rejected"].as_u64().unwrap() >= 4, "{m}");
    let (s, h) = hub.get_json("/health");
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")), "{h}");
}

#[test]
fn websocket_ingest_acks_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let c = ws::connect(&hub.ws_url("/ingest"), &[]);
    c.send(&note(0));
    let ack = c.next(T);
    assert_eq!(
        (ack["seq"].as_u64(), ack["status"].as_u64()),
        (Some(1), Some(200)),
        "{ack}"
    );
    assert_eq!(ack["ids"], json!([1]));

    c.send(&format!(
        "[{},{}]",
        note(1),
        completed("critic", "t", json!("x"))
    ));
    let ack = c.next(T);
    assert_eq!(ack["seq"], 2);
    assert_eq!(ack["status"], 207);
    assert_eq!(ack["ids"], json!([2, null]));

    c.send(&format!("{}\n{}", note(2), note(3)));
    let ack = c.next(T);
    assert_eq!(ack["ids"], json!([3, 4]), "{ack}");

    c.send("{broken");
    let ack = c.next(T);
    assert_eq!(ack["status"], 400, "{ack}");

    // Retries with an event_id are kept once.
    let keyed = json!({"event_type":"note","event_id":"k-1","payload":{}}).to_string();
    c.send(&keyed);
    let first = c.next(T)["ids"][0].as_u64().unwrap();
    c.send(&keyed);
    let again = c.next(T);
    assert_eq!(again["ids"][0].as_u64(), Some(first));
    assert_eq!(again["duplicates"], 1);
}

#[test]
fn every_stream_path_greets_then_streams_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let clients: Vec<_> = ["/", "/agent-events", "/stream"]
        .iter()
        .map(|p| {
            let c = ws::connect(&hub.ws_url(p), &[]);
            let hello = c.next(T);
            assert_eq!(hello["event_type"], "connection_established", "{p}");
            assert!(hello["timestamp"].is_f64());
            assert!(hello["message"].is_string());
            c
        })
        .collect();
    for i in 0..20 {
        hub.post(&note(i), "application/json");
    }
    for c in &clients {
        let got: Vec<u64> = (0..20)
            .map(|_| c.next_event(T)["id"].as_u64().unwrap())
            .collect();
        assert_eq!(got, (1..=20).collect::<Vec<_>>());
    }
    // The original's ping: text is echoed.
    clients[1].send("ping-42");
    wait_for("echo", T, || {
        clients[1]
            .rx
            .recv_timeout(T)
            .ok()
            .filter(|v| v == "ping-42")
    });
}

#[test]
fn filters_limit_what_a_client_receives() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let c = ws::connect(
        &hub.ws_url("/stream?types=agent_completed,note&agent=critic"),
        &[],
    );
    c.next(T);
    let batch = json!([
        completed("scribe", "t1", json!(0.1)),
        completed("critic", "t1", json!(0.1)),
        {"event_type":"note","payload":{"agent":"critic"}},
        {"event_type":"agent_started","payload":{"agent":"critic","task_id":"t1","model":"m","tools":[]}},
    ]);
    hub.post(&batch.to_string(), "application/json");
    assert_eq!(c.next_event(T)["id"], 2);
    assert_eq!(c.next_event(T)["id"], 3);
    // Nothing else arrives: a later matching event is the next one seen.
    hub.post(
        &completed("critic", "t2", json!(0.2)).to_string(),
        "application/json",
    );
    assert_eq!(c.next_event(T)["id"], 5);

    let (_, e) = hub.get_json("/api/events?since=0&task_id=t2");
    assert_eq!(e["events"].as_array().unwrap().len(), 1);
}

#[test]
fn resume_with_since_across_a_restart_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut hub = Hub::start_on(dir.path(), port, &[]);
    let c = ws::connect(&hub.ws_url("/agent-events"), &[]);
    c.next(T);
    for i in 0..5 {
        hub.post(&note(i), "application/json");
    }
    let mut seen: Vec<u64> = (0..3)
        .map(|_| c.next_event(T)["id"].as_u64().unwrap())
        .collect();
    // The hub goes down while the client has seen 3 of 5.
    assert!(hub.terminate().success());
    drop(hub);

    let hub = Hub::start_on(dir.path(), port, &[]);
    for i in 5..8 {
        hub.post(&note(i), "application/json");
    }
    let last = *seen.last().unwrap();
    let c = ws::connect(&hub.ws_url(&format!("/agent-events?since={last}")), &[]);
    assert_eq!(c.next(T)["event_type"], "connection_established");
    // Live events sent during the catch-up must not be missed or repeated.
    for i in 8..10 {
        hub.post(&note(i), "application/json");
    }
    while seen.len() < 10 {
        seen.push(c.next_event(T)["id"].as_u64().unwrap());
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    assert!(
        c.rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing repeated"
    );
}

#[test]
fn resume_from_ids_older_than_the_ring_reads_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--ring-capacity", "10"]);
    let body: Vec<String> = (0..50).map(note).collect();
    hub.post(&body.join("\n"), "application/x-ndjson");
    let c = ws::connect(&hub.ws_url("/stream?since=5"), &[]);
    c.next(T);
    let got: Vec<u64> = (0..45)
        .map(|_| c.next_event(T)["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (6..=50).collect::<Vec<_>>());

    // Without a log the old ids are gone: the client is told which.
    let dir2 = tempfile::tempdir().unwrap();
    let hub2 = Hub::start(dir2.path(), &["--ring-capacity", "10", "--no-log"]);
    hub2.post(&body.join("\n"), "application/x-ndjson");
    let c = ws::connect(&hub2.ws_url("/stream?since=5"), &[]);
    c.next(T);
    let gap = c.next(T);
    assert_eq!(gap["event_type"], "stream_gap", "{gap}");
    assert_eq!(gap["payload"]["from_id"], 6);
    assert_eq!(gap["payload"]["to_id"], 40);
    assert_eq!(gap["payload"]["reason"], "not_retained");
    assert_eq!(c.next_event(T)["id"], 41);
}

#[test]
fn a_slow_live_mode_client_gets_a_gap_and_does_not_delay_a_fast_one() {
    let dir = tempfile::tempdir().unwrap();
    // The limit is above one burst (250 events, ~1 MB) and far below the
    // total (~24 MB), so only a client that stops reading passes it.
    let hub = Hub::start(
        dir.path(),
        &["--client-queue-bytes", "4000000", "--durability", "none"],
    );
    let fast = ws::connect(&hub.ws_url("/stream"), &[]);
    fast.next(T);
    // A raw socket that completes the handshake and then reads nothing;
    // in live mode it prefers the present to completeness.
    let mut slow = std::net::TcpStream::connect(hub.addr).unwrap();
    write!(
        slow,
        "GET /stream?mode=live HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        hub.addr
    )
    .unwrap();
    let pad = "p".repeat(4000);
    let n = 6000; // ~24 MB: more than the kernel's socket buffers
    for chunk in 0..(n / 250) {
        let body: Vec<String> = (0..250)
            .map(|i| {
                json!({"event_type":"note","payload":{"i": chunk * 250 + i, "pad": pad}})
                    .to_string()
            })
            .collect();
        let (s, _) = hub.post(&body.join("\n"), "application/x-ndjson");
        assert_eq!(s, 200);
    }
    // The fast client has everything while the slow one reads nothing.
    let mut last = 0;
    while last < n as u64 {
        last = fast.next_event(T)["id"].as_u64().unwrap();
    }
    // Now the slow client reads: somewhere in its stream is a gap notice.
    slow.set_read_timeout(Some(T)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = Vec::new();
    let found = wait_for(
        "a stream_gap for the slow client",
        Duration::from_secs(30),
        || {
            let k = std::io::Read::read(&mut slow, &mut buf).ok()?;
            seen.extend_from_slice(&buf[..k]);
            let text = String::from_utf8_lossy(&seen);
            text.contains("\"stream_gap\"")
                .then(|| text.contains("slow_consumer"))
        },
    );
    assert!(found);
    let (_, m) = hub.get_json("/api/metrics");
    assert!(
        m["hub"]["slow_consumer_gaps"].as_u64().unwrap() >= 1,
        "{}",
        m["hub"]
    );
}

#[test]
fn token_and_origin_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--token", "s3cret"]);
    let (s, _) = hub.post(&note(0), "application/json");
    assert_eq!(s, 401);
    let (s, _) = post_to(
        &hub.url("/events"),
        note(0).as_bytes(),
        "application/json",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(s, 401);
    let (s, a) = post_to(
        &hub.url("/events"),
        note(0).as_bytes(),
        "application/json",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!((s, ids(&a)), (200, vec![1]));
    assert_eq!(get_json(&hub.url("/api/metrics"), &[]).0, 401);
    assert_eq!(get_json(&hub.url("/health"), &[]).0, 200);

    let e = ws::try_connect(&hub.ws_url("/stream"), &[]).err().unwrap();
    assert!(e.contains("401"), "{e}");
    ws::connect(&hub.ws_url("/stream?token=s3cret"), &[]).next(T);
    ws::connect(
        &hub.ws_url("/stream"),
        &[("Authorization", "Bearer s3cret")],
    )
    .next(T);
    ws::connect(
        &hub.ws_url("/stream"),
        &[("Sec-WebSocket-Protocol", "agentpulse.bearer.s3cret")],
    )
    .next(T);

    let e = ws::try_connect(
        &hub.ws_url("/stream?token=s3cret"),
        &[("Origin", "http://evil.example")],
    )
    .err()
    .unwrap();
    assert!(e.contains("403"), "{e}");
    ws::connect(
        &hub.ws_url("/stream?token=s3cret"),
        &[("Origin", "http://localhost:5173")],
    )
    .next(T);
    let own = format!("http://{}", hub.addr);
    ws::connect(
        &hub.ws_url("/stream?token=s3cret"),
        &[("Origin", own.as_str())],
    )
    .next(T);
}

#[test]
fn shutdown_tells_every_client_and_flushes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path(), &[]);
    let a = ws::connect(&hub.ws_url("/agent-events"), &[]);
    let b = ws::connect(&hub.ws_url("/"), &[]);
    a.next(T);
    b.next(T);
    let body: Vec<String> = (0..1000).map(note).collect();
    hub.post(&body.join("\n"), "application/x-ndjson");
    let status = hub.terminate();
    assert!(status.success(), "{status:?}");
    for c in [&a, &b] {
        let mut got = 0;
        let bye = loop {
            let v = c.next(T);
            if v.get("id").is_some() {
                got += 1;
            } else {
                break v;
            }
        };
        assert_eq!(got, 1000);
        assert_eq!(bye["event_type"], "service_shutdown", "{bye}");
        assert!(bye["payload"]["message"].is_string());
        assert_eq!(c.closed.recv_timeout(T).unwrap(), Some(1001));
    }
    let log = std::fs::read_to_string(dir.path().join("agent-events.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 1000);
}

#[test]
fn health_and_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    hub.post(&note(0), "application/json");
    let (s, h) = hub.get_json("/health");
    assert_eq!(s, 200);
    assert_eq!(h["status"], "ok");
    assert!(h["components"]["sink_jsonl"].is_object(), "{h}");
    let text = ureq::get(&hub.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        text.contains("# TYPE agentpulse_events_accepted_total counter"),
        "{text}"
    );
    assert!(
        text.contains("agentpulse_events_accepted_total 1"),
        "{text}"
    );
    assert!(
        text.contains("agentpulse_kpi{kpi=\"validation_pass_rate\"}"),
        "{text}"
    );
    // promtool is the reference parser of the exposition format; CI
    // (scripts/test.sh installs it) must not pass without it.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut promtool) => {
            promtool
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = promtool.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("promtool is needed under CI (scripts/test.sh installs it): {e}")
        }
        Err(_) => eprintln!("promtool not found: the exposition is not checked by it"),
    }
}

#[test]
fn emit_and_tail_talk_to_a_running_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let tail = common::bin()
        .args([
            "tail",
            "--hub",
            &hub.url(""),
            "--json",
            "--count",
            "2",
            "--since",
            "0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for i in 0..2 {
        let out = common::bin()
            .args([
                "emit",
                "--hub",
                &hub.url(""),
                "note",
                &format!("{{\"i\":{i}}}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("sent: event {}", i + 1)));
    }
    let bad = common::bin()
        .args([
            "emit",
            "--hub",
            &hub.url(""),
            "agent_completed",
            "{\"agent\":\"a\"}",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("agent_completed.task_id: missing"));
    let out = tail.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["payload"]["i"], 1);
}

#[test]
fn metrics_series_and_config_for_dashboards() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let now = agentpulse::event::now_unix();
    let batch = json!([
        {"event_type":"task_queued","timestamp": now - 130.0,"payload":{"task_id":"t","feature":"f","est_cost":1,"timestamp":now}},
        {"event_type":"validation_complete","timestamp": now - 10.0,"payload":{"task_id":"t","result":{"passed":true},"cost":0.5,"duration_ms":1,"screenshots":0}},
    ]);
    assert_eq!(hub.post(&batch.to_string(), "application/json").0, 200);
    // Metrics are computed off the ingest path: wait until both are in.
    let m = wait_for("both events in the minute series", T, || {
        let (s, m) = hub.get_json("/api/metrics?bucket=minute");
        assert_eq!(s, 200, "{m}");
        let n: u64 = m["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["events"].as_u64().unwrap())
            .sum();
        (n == 2).then_some(m)
    });
    let series = m["series"].as_array().unwrap();
    assert_eq!(series.len(), 60);
    let validated = series
        .iter()
        .find(|b| b["kpis"]["samples"]["validations"] == 1)
        .unwrap();
    assert_eq!(
        validated["kpis"]["validation_pass_rate"], 1.0,
        "{validated}"
    );
    let (s, e) = hub.get_json("/api/metrics?bucket=yearly");
    assert_eq!(s, 400, "{e}");
    let (s, e) = hub.get_json("/api/metrics?bucket=daily&from=2026-12-02&to=2026-12-01");
    assert_eq!(s, 400, "{e}");
    let (s, d) = hub.get_json("/api/metrics?bucket=daily&from=2026-11-01&to=2026-11-30");
    assert_eq!((s, d["series"].as_array().unwrap().len()), (200, 30));

    let (_, m) = hub.get_json("/api/metrics");
    assert_eq!(m["events_by_type"]["task_queued"], 1, "{m}");
    let (s, c) = hub.get_json("/api/config");
    assert_eq!(s, 200);
    assert_eq!(c["window_minutes"], 60);
    assert_eq!(c["alerts"][0]["condition"], "critic_rejection_rate > 0.50");
}

/// Regression: a retry answered as a duplicate of an event logged before a
/// restart used to wait for a log watermark that the new process never
/// reaches, and time out with 503.
#[test]
fn a_retry_after_a_restart_is_answered_as_a_duplicate_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let keyed = json!({"event_type":"note","event_id":"sdk-42","payload":{}}).to_string();
    let mut hub = Hub::start_on(dir.path(), port, &["--durability", "always"]);
    let (s, a) = hub.post(&keyed, "application/json");
    assert_eq!((s, ids(&a)), (200, vec![1]));
    assert!(hub.terminate().success());
    drop(hub);
    let hub = Hub::start_on(dir.path(), port, &["--durability", "always"]);
    let started = std::time::Instant::now();
    let (s, a) = hub.post(&keyed, "application/json");
    assert_eq!(
        (s, ids(&a), a["duplicates"].as_u64()),
        (200, vec![1], Some(1)),
        "{a}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Ids are never reused, even when a crash loses events that were already
/// given ids (and shown on the stream) before they reached the log.
#[test]
fn ids_are_not_reused_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // `none`: the log is written every 100 ms, so a kill loses the tail.
    let hub = Hub::start_on(dir.path(), port, &["--durability", "none"]);
    let c = ws::connect(&hub.ws_url("/stream"), &[]);
    c.next(T);
    let body: Vec<String> = (0..3).map(note).collect();
    assert_eq!(hub.post(&body.join("\n"), "application/x-ndjson").0, 200);
    let seen: Vec<u64> = (0..3)
        .map(|_| c.next_event(T)["id"].as_u64().unwrap())
        .collect();
    drop(hub); // SIGKILL
    let hub = Hub::start_on(dir.path(), port, &["--durability", "none"]);
    let (_, a) = hub.post(&note(99), "application/json");
    let id = a["ids"][0].as_u64().unwrap();
    assert!(
        id > *seen.iter().max().unwrap(),
        "id {id} reused after the crash"
    );
}

#[test]
fn silent_clients_are_dropped_after_two_ping_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--ping-interval", "0.3"]);
    // A raw socket: it completes the handshake and never answers a ping.
    let mut silent = std::net::TcpStream::connect(hub.addr).unwrap();
    write!(
        silent,
        "GET /stream HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        hub.addr
    )
    .unwrap();
    // A well-behaved client (tungstenite answers pings) stays.
    let live = ws::connect(&hub.ws_url("/stream"), &[]);
    live.next(T);
    wait_for("the silent client to be dropped", T, || {
        let (_, m) = hub.get_json("/api/metrics");
        (m["hub"]["dropped_clients"].as_u64() == Some(1)).then_some(())
    });
    // Its socket is closed by the hub: reading reaches the end.
    silent.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    for _ in 0..100 {
        match std::io::Read::read(&mut silent, &mut buf) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed);
    // The live client still gets events.
    hub.post(&note(1), "application/json");
    assert_eq!(live.next_event(T)["payload"]["i"], 1);
}

#[test]
fn the_connection_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--max-connections", "2"]);
    let a = ws::connect(&hub.ws_url("/stream"), &[]);
    let b = ws::connect(&hub.ws_url("/ingest"), &[]);
    a.next(T);
    let e = ws::try_connect(&hub.ws_url("/stream"), &[]).err().unwrap();
    assert!(e.contains("503"), "{e}");
    drop(b);
    wait_for("a slot to free up", T, || {
        ws::try_connect(&hub.ws_url("/stream"), &[]).ok()
    });
}

/// Regression: the SIGTERM handler was installed by a task spawned after
/// the listening line, so a SIGTERM sent at once (as a supervisor or a test
/// does) could kill the hub with the default action, exit status "signal".
#[test]
fn a_sigterm_right_after_the_listening_line_is_a_clean_shutdown() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = Hub::start(dir.path(), &[]);
        let status = hub.terminate();
        assert!(status.success(), "round {round}: {status:?}");
    }
}
