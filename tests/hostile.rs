//! Under hostile and heavy input (issue 22): each reproduction of the issue
//! as an end-to-end test against the real binary, with real HTTP clients, a
//! real tmpfs for the disk-full cases (skipped with a message where `mount`
//! is not allowed) and a private `redis-server`.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{get_json, post_to, wait_for, Hub, Redis};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with a message) where mounting is not allowed.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root); the disk-full case is not tested"
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![b'x'; 64 * 1024];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    // Whatever is left (less than a block).
    let _ = f.write_all(&[b'x'; 4096]);
    let _ = f.flush();
    path
}

fn note(i: usize, key: Option<&str>) -> Value {
    let mut v = json!({"event_type": "note", "payload": {"i": i, "pad": "x".repeat(200)}});
    if let Some(k) = key {
        v["event_id"] = json!(k);
    }
    v
}

fn ndjson(events: &[Value]) -> String {
    let mut s = String::new();
    for e in events {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s
}

/// Every log line of `dir`'s active file, as JSON.
fn log_events(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("agent-events.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Issue 22 (1): with the log disk full, 20,000 events with ids and
/// 140,000 without are all answered 503; once space is freed, retrying the
/// 20,000 stores every one of them exactly once. (Before, the hub dropped
/// the oldest buffered lines, kept their ids in the dedup window and
/// answered the retry "200, duplicates: 20000" with none of them in the log.)
#[test]
fn a_full_disk_never_acknowledges_what_is_not_stored() {
    let Some(fs) = Tmpfs::mount("80m") else {
        return;
    };
    let log_dir = fs.path().join("logs");
    let hub = Hub::start(&log_dir, &[]);
    let filler = fill(fs.path());
    let url = hub.url("/events");
    let keyed: Vec<Value> = (0..20_000)
        .map(|i| note(i, Some(&format!("k{i}"))))
        .collect();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut send = |events: &[Value]| {
        for chunk in events.chunks(1000) {
            let (status, body) =
                post_to(&url, ndjson(chunk).as_bytes(), "application/x-ndjson", &[]);
            if status != 200 {
                assert!(body["error"].is_string(), "{status}: {body}");
            }
            *statuses.entry(status).or_default() += chunk.len();
        }
    };
    send(&keyed);
    let plain: Vec<Value> = (0..140_000).map(|i| note(i, None)).collect();
    send(&plain);
    assert_eq!(statuses.get(&503).copied(), Some(160_000), "{statuses:?}");
    let (_, health) = hub.get_json("/health");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["components"]["sink_jsonl"]["refused"]
            .as_u64()
            .unwrap()
            > 0,
        "{health}"
    );

    std::fs::remove_file(&filler).unwrap();
    // The health recovers once the backlog is written, without an event.
    wait_for("the log to recover", T, || {
        let (_, h) = hub.get_json("/health");
        (h["status"] == "ok").then_some(())
    });
    // Retried with the same event_ids: every one is stored, once.
    let mut ok = 0;
    for chunk in keyed.chunks(1000) {
        let (status, body) = post_to(&url, ndjson(chunk).as_bytes(), "application/x-ndjson", &[]);
        assert_eq!(status, 200, "{body}");
        ok += chunk.len();
    }
    assert_eq!(ok, 20_000);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in log_events(&log_dir) {
        if let Some(k) = e["event_id"].as_str() {
            *seen.entry(k.to_string()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 20_000, "every keyed event is in the log");
    assert!(seen.values().all(|&n| n == 1), "each exactly once");
}

/// Issue 22 (1), the last resort: when the buffer must drop lines it had
/// taken (here a 4 KiB buffer and one 100-event batch while writing fails),
/// the ingest is answered 503, `/health` keeps the loss until it is
/// acknowledged, and a retry with the same event_ids stores the events.
#[test]
fn dropped_lines_are_never_acknowledged_and_their_retry_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("logs");
    let hub = Hub::start(&log_dir, &["--log-max-pending-bytes", "4096"]);
    let (status, _) = hub.post(&ndjson(&[note(0, None)]), "application/x-ndjson");
    assert_eq!(status, 200);
    // Writing fails: the directory is replaced by a file.
    let moved = dir.path().join("moved");
    std::fs::rename(&log_dir, &moved).unwrap();
    std::fs::write(&log_dir, b"not a directory").unwrap();
    let batch: Vec<Value> = (0..100).map(|i| note(i, Some(&format!("d{i}")))).collect();
    let (status, body) = hub.post(&ndjson(&batch), "application/x-ndjson");
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
    let (_, h) = hub.get_json("/health");
    assert_eq!(h["status"], "degraded");
    let lost = h["components"]["sink_jsonl"]["lost_since_acknowledged"]
        .as_u64()
        .unwrap();
    assert!(lost > 0, "{h}");

    std::fs::remove_file(&log_dir).unwrap();
    std::fs::rename(&moved, &log_dir).unwrap();
    wait_for("the log to be written again", T, || {
        let (_, h) = hub.get_json("/health");
        let c = &h["components"]["sink_jsonl"];
        (c["error"].is_null() && c["unwritten_bytes"] == 0).then_some(())
    });
    // The loss stays until acknowledged.
    let (_, h) = hub.get_json("/health");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"][0].as_str().unwrap().contains("dropped"), "{h}");
    let (status, _) = post_to(
        &hub.url("/api/health/acknowledge"),
        b"",
        "application/json",
        &[],
    );
    assert_eq!(status, 200);
    let (_, h) = hub.get_json("/health");
    assert_eq!(h["status"], "ok", "{h}");

    let (status, body) = hub.post(&ndjson(&batch), "application/x-ndjson");
    assert_eq!(status, 200, "{body}");
    let keys: Vec<String> = log_events(&log_dir)
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    for i in 0..100 {
        let k = format!("d{i}");
        assert_eq!(
            keys.iter().filter(|x| **x == k).count(),
            1,
            "{k} stored once"
        );
    }
}

/// Issue 22 (2): 2.8 M lines of `{}` gzipped (a few KB on the wire) get a
/// small 413 at once, not a 414 MB 422; the hub's memory stays bounded.
#[test]
fn a_tiny_gzipped_body_gets_a_small_answer() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--no-log"]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..2_800_000 {
        gz.write_all(b"{}\n").unwrap();
    }
    let body = gz.finish().unwrap();
    assert!(body.len() < 64 * 1024, "{} bytes on the wire", body.len());
    let started = Instant::now();
    let resp = ureq::post(&hub.url("/events"))
        .set("Content-Type", "application/x-ndjson")
        .set("Content-Encoding", "gzip")
        .send_bytes(&body);
    let (status, text) = match resp {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 413, "{text}");
    assert!(text.len() < 1024, "{} bytes", text.len());
    assert!(text.contains("100000 events"), "{text}");
    eprintln!("413 after {:?}", started.elapsed());
    // 100,000 `{}` lines are answered 422 with the first errors listed and
    // the rest counted.
    let (status, v) = hub.post(&"{}\n".repeat(100_000), "application/x-ndjson");
    assert_eq!(status, 422);
    assert_eq!(v["rejected"], 100_000);
    assert_eq!(v["errors"].as_array().unwrap().len(), 100);
    assert_eq!(v["errors_omitted"], 99_900);
    let rss = rss_kib(hub.child.id());
    assert!(rss < 400 * 1024, "hub RSS {rss} KiB");
}

/// Issue 22 (11): a `Content-Encoding` the hub does not speak gets a 415
/// with a JSON body naming it; so do other refusals from layers.
#[test]
fn every_refusal_has_a_json_body() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--no-log"]);
    let (status, v) = post_to(
        &hub.url("/events"),
        b"\x1b\x00",
        "application/json",
        &[("Content-Encoding", "br")],
    );
    assert_eq!(status, 415);
    assert!(v["error"].as_str().unwrap().contains("br"), "{v}");
    // A plain GET of the ingest WebSocket path (no upgrade).
    let (status, v) = hub.get_json("/ingest");
    assert!(status >= 400, "{status}");
    assert!(v["error"].is_string(), "{v}");
    let (status, v) = hub.get_json("/api/agents?limit=0");
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
}

/// Issue 22 (10): a 25 MB array published on `agent-events` is refused
/// whole and counted, as a 413 would be over HTTP; the events around it are
/// kept.
#[test]
fn the_redis_bridge_applies_the_http_limits() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        &[
            "--no-log",
            "--redis-url",
            &redis.url(),
            "--max-body-bytes",
            "1000000",
        ],
    );
    wait_for("the bridge to subscribe", T, || {
        let (_, v) = hub.get_json("/api/metrics");
        (v["hub"]["redis"]["up"] == true).then_some(())
    });
    let big: Vec<String> = (0..170_000)
        .map(|i| json!({"event_type":"note","payload":{"i":i}}).to_string())
        .collect();
    let big = format!("[{}]", big.join(","));
    let file = dir.path().join("big.json");
    std::fs::write(&file, &big).unwrap();
    let published = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "-x",
            "PUBLISH",
            "agent-events",
        ])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(published.status.success());
    // The events around it are taken.
    let after = redis.cmd(&["PUBLISH", "agent-events", r#"{"event_type":"after"}"#]);
    assert!(after.is_some());
    wait_for("the refusal to be counted", T, || {
        let (_, v) = hub.get_json("/api/metrics");
        (v["hub"]["redis"]["refused"] == 1 && v["pipeline"]["accepted"] == 1).then_some(())
    });
    let (_, v) = hub.get_json("/api/events?since=0");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_type"], "after");
    let rss = rss_kib(hub.child.id());
    assert!(rss < 200 * 1024, "hub RSS {rss} KiB");
    let (_, h) = hub.get_json("/health");
    assert_eq!(h["components"]["redis_bridge"]["refused"], 1, "{h}");
}

/// Issue 22 (4): one event stamped 23 hours ahead does not blind the
/// rolling window, not even after a restart that reads it back from the
/// log: live events are counted.
#[test]
fn an_event_a_day_ahead_does_not_blind_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut hub = Hub::start(dir.path(), &[]);
    let ahead = json!({"event_type":"note","timestamp": now + 23.0 * 3600.0,"payload":{}});
    assert_eq!(hub.post(&ahead.to_string(), "application/json").0, 200);
    let live = json!({"event_type":"note","payload":{"agent":"scribe"}});
    assert_eq!(hub.post(&live.to_string(), "application/json").0, 200);
    let window_events = |hub: &Hub, want: u64| {
        wait_for("the live events in the window", T, || {
            let (_, m) = hub.get_json("/api/metrics");
            let n = m["window"]["samples"]["events"].as_u64().unwrap();
            let total = m["pipeline"]["accepted"].as_u64().unwrap();
            // Once the metrics have seen every accepted event.
            (m["events_by_type"]["note"].as_u64() == Some(total) || n >= want).then_some(n)
        })
    };
    assert_eq!(window_events(&hub, 1), 1, "the live event is in the window");
    hub.terminate();
    let hub = Hub::start(dir.path(), &[]);
    assert_eq!(hub.post(&live.to_string(), "application/json").0, 200);
    assert_eq!(window_events(&hub, 2), 2, "after a restart too");
}

/// Issue 22 (3): many distinct agent names keep `/api/metrics` bounded in
/// size (the most active listed, all counted) and `/api/agents` pages
/// through every one of them.
#[test]
fn many_agent_names_keep_answers_bounded_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--no-log"]);
    let n = 5000;
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"event_type": format!("type.{i}"), "payload": {"agent": format!("run-{i:05}"), "task_id": "t"}})
        })
        .collect();
    let (status, _) = hub.post(&ndjson(&events), "application/x-ndjson");
    assert_eq!(status, 200);
    let m = wait_for("the metrics to see every event", T, || {
        let (_, m) = hub.get_json("/api/metrics");
        (m["agents_total"] == n).then_some(m)
    });
    assert_eq!(m["agents"].as_object().unwrap().len(), 100);
    // The all-time totals keep at most twice `max_names` (1,000) types
    // before folding the least active into `(other)`.
    assert!(
        m["event_types_total"].as_u64().unwrap() <= 2001,
        "{}",
        m["event_types_total"]
    );
    let types = m["events_by_type"].as_object().unwrap();
    assert!(types.len() <= 101, "{}", types.len());
    assert!(types.contains_key("(other)"));
    assert_eq!(types.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), n);
    assert!(
        m.to_string().len() < 100_000,
        "{} bytes",
        m.to_string().len()
    );
    let mut after: Option<String> = None;
    let mut names = Vec::new();
    loop {
        let path = match &after {
            Some(a) => format!("/api/agents?limit=1000&after={a}"),
            None => "/api/agents?limit=1000".to_string(),
        };
        let (status, page) = get_json(&hub.url(&path), &[]);
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], n);
        for a in page["agents"].as_array().unwrap() {
            names.push(a["agent"].as_str().unwrap().to_string());
            assert_eq!(a["events"], 1);
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..n).map(|i| format!("run-{i:05}")).collect();
    assert_eq!(names, expected, "every agent once, by name");
}

/// Issue 13 (9): events with unique task ids and `--max-open-tasks
/// 100000`: `open_tasks` never exceeds it, evictions are counted (also in
/// `/metrics`), and the hub's memory stays bounded. 1.2 M events, not the
/// issue's 3 M: the debug hub takes ~1 min per million here, and twelve
/// times the bound shows the same (the engine's unit test
/// `open_tasks_never_exceed_the_bound` checks the bound at every event).
#[test]
fn open_tasks_are_bounded_by_max_open_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--no-log", "--max-open-tasks", "100000"]);
    let url = hub.url("/events");
    let total = 1_200_000u64;
    let batch = 20_000u64;
    let mut rss_at_1m = 0;
    let mut sent = 0;
    while sent < total {
        let mut body = String::with_capacity(batch as usize * 70);
        for i in sent..sent + batch {
            body.push_str(r#"{"event_type":"task_queued","payload":{"task_id":"t"#);
            body.push_str(&i.to_string());
            body.push_str(r#"","feature":"f","est_cost":0,"timestamp":0}}"#);
            body.push('\n');
        }
        let (status, v) = post_to(&url, body.as_bytes(), "application/x-ndjson", &[]);
        assert_eq!(status, 200, "{v}");
        sent += batch;
        if sent % 300_000 == 0 {
            let (_, m) = hub.get_json("/api/metrics");
            assert!(
                m["open_tasks"].as_u64().unwrap() <= 100_000,
                "{}",
                m["open_tasks"]
            );
        }
        if sent == 400_000 {
            rss_at_1m = rss_kib(hub.child.id());
        }
    }
    let m = wait_for("the metrics to see every event", T, || {
        let (_, m) = hub.get_json("/api/metrics");
        (m["evicted_tasks"] == total - 100_000).then_some(m)
    });
    assert_eq!(m["open_tasks"], 100_000);
    assert_eq!(m["evicted_tasks"], total - 100_000);
    let rss = rss_kib(hub.child.id());
    eprintln!("hub RSS: {rss_at_1m} KiB at 400 k events, {rss} KiB at 1.2 M");
    assert!(
        rss < rss_at_1m + 64 * 1024,
        "RSS grew from {rss_at_1m} to {rss} KiB"
    );
    let text = ureq::get(&hub.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        text.contains(&format!(
            "agentpulse_tasks_evicted_total {}",
            total - 100_000
        )),
        "{text}"
    );
}

/// Regression (issue 22, point 6): SIGTERM waited forever on a client that
/// had sent half a request. Shutdown is bounded by the grace period now.
#[test]
fn shutdown_is_bounded_whatever_the_clients_do() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path(), &["--shutdown-grace", "1"]);
    let (status, _) = hub.post(
        &note(0, Some("kept-before-shutdown")).to_string(),
        "application/json",
    );
    assert_eq!(status, 200);
    // One client stops in the middle of its headers, one in its body.
    let mut half_headers = TcpStream::connect(hub.addr).unwrap();
    half_headers
        .write_all(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        .unwrap();
    let mut half_body = TcpStream::connect(hub.addr).unwrap();
    half_body
        .write_all(
            b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"event_type\":",
        )
        .unwrap();
    // Both requests are in the hub's hands before the signal.
    wait_for("both connections accepted", Duration::from_secs(10), || {
        let (_, health) = hub.get_json("/health");
        (health["status"].is_string()).then_some(())
    });
    let began = Instant::now();
    let status = hub.terminate();
    assert!(
        status.success(),
        "hub exit status {status:?}: {}",
        hub.stderr.lock().unwrap()
    );
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "shutdown took {:?} with a grace of 1 s",
        began.elapsed()
    );
    let ids: Vec<Value> = log_events(dir.path())
        .into_iter()
        .map(|e| e["event_id"].clone())
        .collect();
    assert!(
        ids.contains(&json!("kept-before-shutdown")),
        "the event acknowledged before shutdown is in the log: {ids:?}"
    );
    drop((half_headers, half_body));
}

/// A raw HTTP/1.1 exchange on `stream`: reads one answer (head and a
/// `Content-Length` body); its status and body.
fn read_answer(stream: &mut std::net::TcpStream) -> (u16, String) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => panic!(
                "the answer's head ended early ({other:?}): {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// Blocks until the hub closes `stream` (EOF or reset), at most `within`;
/// how long that took.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> Duration {
    use std::io::Read;
    let began = Instant::now();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return began.elapsed(),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the hub kept the connection open for {within:?}")
            }
            Err(_) => return began.elapsed(),
        }
    }
}

/// The hub's connection counters (`/api/metrics` → `hub.http`).
fn http_counters(hub: &Hub) -> Value {
    let (status, m) = hub.get_json("/api/metrics");
    assert_eq!(status, 200, "{m}");
    m["hub"]["http"].clone()
}

/// Issue 22 (5): 300 clients sending headers slowly were never closed. A
/// client that sends its head a byte at a time is cut after the header
/// timeout, whatever it keeps sending.
#[test]
fn a_slowloris_is_cut_after_the_header_timeout() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--header-timeout", "0.3"]);
    let mut stream = TcpStream::connect(hub.addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let began = Instant::now();
    // The slow client: one byte every 20 ms of a head that never ends,
    // until the hub closes on it.
    let drip = std::thread::spawn(move || {
        let head = format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}",
            "a".repeat(100_000)
        );
        for b in head.bytes() {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    closed_within(&mut stream, Duration::from_secs(5));
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "closed after {took:?}, before the header timeout"
    );
    drip.join().unwrap();
    let c = http_counters(&hub);
    assert_eq!(c["header_timeouts"], 1, "{c}");
    // A request that comes at once is unaffected.
    assert_eq!(hub.get_json("/health").0, 200);
}

/// Issue 22 (5): a body that stalls is answered 408 after the body timeout
/// and its connection closed (on `POST /events` and OTLP alike), while the
/// hub answers others meanwhile.
#[test]
fn a_stalled_body_is_cut_after_the_body_timeout() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--body-timeout", "0.3"]);
    for (path, ct) in [
        ("/events", "application/json"),
        ("/v1/traces", "application/json"),
    ] {
        let mut stream = TcpStream::connect(hub.addr).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ct}\r\nContent-Length: 1000\r\n\r\n{{\"event_type\":"
        )
        .unwrap();
        // Others are served while this body stalls.
        assert_eq!(hub.get_json("/health").0, 200);
        let began = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (status, body) = read_answer(&mut stream);
        assert_eq!(status, 408, "{path}: {body}");
        assert!(body.contains("--body-timeout"), "{path}: {body}");
        closed_within(&mut stream, Duration::from_secs(5));
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{path}: closed {:?} after the answer",
            began.elapsed()
        );
    }
    assert!(log_events(dir.path()).is_empty());
}

/// Issue 22 (5): a kept-alive connection that sends nothing after its
/// answer is closed after the idle timeout (not the header timeout, which
/// is longer here).
#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        &["--idle-timeout", "0.3", "--header-timeout", "30"],
    );
    let mut stream = TcpStream::connect(hub.addr).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (status, _) = read_answer(&mut stream);
    assert_eq!(status, 200);
    // Kept alive: a second request on the same connection is answered.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut stream).0, 200);
    let took = closed_within(&mut stream, Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(10),
        "closed {took:?} after the answer"
    );
    let c = http_counters(&hub);
    assert_eq!(
        (c["idle_closed"].clone(), c["header_timeouts"].clone()),
        (json!(1), json!(0)),
        "{c}"
    );
}

/// Issue 22 (5): 1,100 idle connections made the hub unreachable. With a
/// total cap (WebSockets included) the connection past it is answered 503
/// at once, counted, and the hub serves again as soon as one closes.
#[test]
fn the_connection_cap_refuses_one_more_and_serves_again_once_one_closes() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        &["--max-total-connections", "3", "--header-timeout", "60"],
    );
    let stream = common::ws::connect(&hub.ws_url("/agent-events"), &[]);
    assert_eq!(stream.next(T)["event_type"], "connection_established");
    let idle_a = TcpStream::connect(hub.addr).unwrap();
    let idle_b = TcpStream::connect(hub.addr).unwrap();
    // Connections are accepted in order: the next one is the fourth.
    let began = Instant::now();
    let (status, body) = get_json(&hub.url("/health"), &[]);
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many connections") && e.contains("3")),
        "{body}"
    );
    assert!(began.elapsed() < Duration::from_secs(5));
    drop(idle_a);
    let health = wait_for("a free slot", T, || {
        let (status, h) = get_json(&hub.url("/health"), &[]);
        (status == 200).then_some(h)
    });
    assert!(
        health["components"]["http"]["over_limit"].as_u64() >= Some(1),
        "{health}"
    );
    // The WebSocket holds its slot: with it and idle_b open, one more
    // connection fits, not two.
    let idle_c = TcpStream::connect(hub.addr).unwrap();
    wait_for("the cap reached again", T, || {
        (get_json(&hub.url("/health"), &[]).0 == 503).then_some(())
    });
    drop(stream);
    wait_for("the WebSocket's slot freed", T, || {
        (get_json(&hub.url("/health"), &[]).0 == 200).then_some(())
    });
    drop((idle_b, idle_c));
}

/// Issue 22 (5): WebSocket streams are long-lived by design: the idle
/// (and header) timeouts do not touch them.
#[test]
fn an_open_websocket_stream_survives_past_the_idle_timeout() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        &["--idle-timeout", "0.3", "--header-timeout", "0.3"],
    );
    let stream = common::ws::connect(&hub.ws_url("/agent-events"), &[]);
    assert_eq!(stream.next(T)["event_type"], "connection_established");
    // The clock: a kept-alive connection opened after the stream is closed
    // by the idle timeout, so the stream has been silent longer than that.
    let mut idle = TcpStream::connect(hub.addr).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut idle).0, 200);
    closed_within(&mut idle, Duration::from_secs(10));
    let (status, _) = hub.post(&note(7, None).to_string(), "application/json");
    assert_eq!(status, 200);
    assert_eq!(stream.next_event(T)["payload"]["i"], 7);
    assert!(stream.closed.try_recv().is_err(), "the stream was closed");
    let c = http_counters(&hub);
    assert_eq!(c["idle_closed"], 1, "{c}");
}

/// Issue 22 (5), as reproduced: under `ulimit -n 1024`, 1,100 idle TCP
/// connections made `/health` and `POST /events` time out. Now the cap
/// (fitted to the open-files limit) turns the connections past it away at
/// once, the idle ones are cut after the header timeout, and the hub
/// serves again.
#[test]
fn idle_connections_past_the_open_files_limit_do_not_take_the_hub_down() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    // The header timeout is long, so that on a loaded machine opening the
    // connections and being turned away both still take clearly less
    // (the bounds below are fractions of it, not timings; they failed
    // twice under a loaded full run with 10 s, 8 s and 2 s).
    const HEADER_TIMEOUT: u64 = 20;
    let header_timeout = HEADER_TIMEOUT.to_string();
    let hub = Hub::start_with_nofile(dir.path(), 1024, &["--header-timeout", &header_timeout]);
    let opening = Instant::now();
    let idle: Vec<TcpStream> = (0..1100)
        .map(|_| TcpStream::connect(hub.addr).unwrap())
        .collect();
    // Connecting is quick, unless the listen backlog overflows; the
    // header timeout must not have freed slots yet.
    assert!(
        opening.elapsed() < Duration::from_secs(HEADER_TIMEOUT * 3 / 4),
        "{:?}",
        opening.elapsed()
    );
    // Turned away at once (a 503, or closed when many refusals are being
    // written), not left hanging.
    let began = Instant::now();
    let answer = ureq::get(&hub.url("/health"))
        .timeout(Duration::from_secs(30))
        .call();
    assert!(
        matches!(
            &answer,
            Err(ureq::Error::Status(503, _)) | Err(ureq::Error::Transport(_))
        ),
        "{answer:?}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(HEADER_TIMEOUT / 2),
        "turned away after {:?}",
        began.elapsed()
    );
    wait_for(
        "the hub to serve again",
        Duration::from_secs(3 * HEADER_TIMEOUT),
        || (ureq::get(&hub.url("/health")).call().ok()?.status() == 200).then_some(()),
    );
    let (status, body) = hub.post(&note(1, None).to_string(), "application/json");
    assert_eq!(status, 200, "{body}");
    let c = http_counters(&hub);
    let cap = c["max_total_connections"].as_u64().unwrap();
    assert!(cap < 1024, "the cap fits the limit: {c}");
    assert!(c["over_limit"].as_u64() >= Some(1100 - cap), "{c}");
    // Slots came back as the idle connections' header timeout passed.
    assert!(c["header_timeouts"].as_u64() >= Some(1), "{c}");
    drop(idle);
}

/// The HTTP limits in the configuration file (`limits:`), each overridden
/// by its flag: a body over `limits.max_body_bytes` is refused 413 (and
/// taken once `--max-body-bytes` raises it); a connection that sends no
/// request head is closed after `limits.header_timeout` (0.3 s here, not
/// the default 10 s); a value out of range stops the start naming the key.
#[test]
fn http_limits_come_from_the_config_file_and_flags_override_them() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("limits.yaml");
    std::fs::write(
        &cfg,
        "limits:\n  max_body_bytes: 2000\n  header_timeout: 0.3\n",
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let big: Vec<String> = (0..100).map(|i| note(i, None).to_string()).collect();
    let body = big.join("\n");
    assert!(body.len() > 2000);
    let hub = Hub::start(&dir.path().join("a"), &["--config", cfg_s]);
    let (status, answer) = hub.post(&body, "application/x-ndjson");
    assert_eq!(status, 413, "{answer}");
    let mut idle = std::net::TcpStream::connect(hub.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    // Closed (EOF or reset) well before the default's 10 s.
    match idle.read(&mut buf) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "still open after 5 s: {e}"
        ),
    }
    drop(hub);
    let hub = Hub::start(
        &dir.path().join("b"),
        &["--config", cfg_s, "--max-body-bytes", "100000"],
    );
    let (status, answer) = hub.post(&body, "application/x-ndjson");
    assert_eq!(status, 200, "{answer}");
    drop(hub);
    std::fs::write(&cfg, "limits:\n  header_timeout: 0\n").unwrap();
    let out = common::bin()
        .args([
            "--config",
            cfg_s,
            "serve",
            "--port",
            "0",
            "--otlp-grpc-port",
            "0",
        ])
        .arg("--log-dir")
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started");
    assert!(err.contains("limits.header_timeout"), "{err}");
}
