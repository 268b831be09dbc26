//! Every reader gets every event: lagging readers served from the log,
//! stuck sockets, epochs and resets, `tail --json`, complete filtered reads
//! and checked ranges. Real binary, real Python `websockets` readers.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{note_bodies, post_to, rss_kib, wait_for, ws, Hub, PyReader};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
const BURST: u64 = 200_000;

fn post_all(url: &str, bodies: &[String]) {
    for b in bodies {
        let (s, v) = post_to(url, b.as_bytes(), "application/x-ndjson", &[]);
        assert_eq!(s, 200, "{v}");
    }
}

/// Four readers that pause every 200 messages: far behind the ring.
fn lagging_readers(url: &str) -> Vec<PyReader> {
    (0..4)
        .map(|_| {
            PyReader::start(
                url,
                BURST,
                &[
                    "--pause-every",
                    "200",
                    "--pause-ms",
                    "15",
                    "--timeout",
                    "240",
                ],
            )
        })
        .collect()
}

fn assert_complete(summary: &Value) {
    assert_eq!(summary["count"], BURST, "{summary}");
    assert_eq!(summary["first"], 1, "{summary}");
    assert_eq!(summary["last"], BURST, "{summary}");
    assert_eq!(summary["out_of_order"], 0, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(summary["gaps"], json!([]), "{summary}");
}

#[test]
fn lagging_python_readers_get_every_event_once_in_order_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A small ring, so the readers are sure to fall far behind it.
    let hub = Hub::start(dir.path(), &["--ring-capacity", "20000"]);
    let readers = lagging_readers(&hub.ws_url("/agent-events?since=0"));
    let pid = hub.child.id();
    let bodies = note_bodies(0, BURST, 1000, 300);
    let (before, _) = rss_kib(pid);
    post_all(&hub.url("/events"), &bodies);
    let (_, m) = hub.get_json("/api/metrics");
    let behind = BURST - m["hub"]["messages_out"].as_u64().unwrap() / 4;
    let (during, _) = rss_kib(pid);
    for r in readers {
        assert_complete(&r.finish(Duration::from_secs(240)));
    }
    let (_, m) = hub.get_json("/api/metrics");
    let from_log = m["hub"]["messages_from_log"].as_u64().unwrap();
    let (_, peak) = rss_kib(pid);
    eprintln!(
        "readers ~{behind} events behind at the end of the burst; {from_log} messages from the log; \
         hub RSS {before} KiB before, {during} KiB after the burst, peak {peak} KiB"
    );
    assert!(from_log > 4 * 50_000, "served from the log: {from_log}");
    assert_eq!(m["hub"]["slow_consumer_gaps"], 0);
    // The ring (20,000 events), the pipeline's buffers and the metrics;
    // nothing that grows with how far behind the readers are (~60 MB of
    // events each).
    assert!(
        peak < before + 100 * 1024,
        "peak RSS {peak} KiB, {before} KiB before the burst"
    );
}

/// The wall clock moved by an offset the test sets: rotation at midnight
/// and gzip after days, without waiting for them.
#[derive(Debug, Default)]
struct ShiftedClock(AtomicU64);

impl agentpulse::clock::Clock for ShiftedClock {
    fn now(&self) -> f64 {
        agentpulse::clock::wall_now() + f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[test]
fn lagging_readers_follow_the_log_through_rotation_and_gzip() {
    use agentpulse::emitter::Emitter;
    use agentpulse::hub::{self, HubConfig};
    use agentpulse::sinks::jsonl::JsonlConfig;

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ShiftedClock::default());
    let jsonl = JsonlConfig {
        dir: dir.path().to_owned(),
        compress_after_days: 1,
        ..JsonlConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let builder = Emitter::builder()
        .jsonl(jsonl.clone())
        .quiet()
        .clock(clock.clone());
    let config = HubConfig {
        port: 0,
        ring_capacity: 20_000,
        log: Some(jsonl),
        ..HubConfig::default()
    };
    let running = rt
        .block_on(hub::start(config, builder, token.clone()))
        .unwrap();
    let addr = running.addr;
    let readers = lagging_readers(&format!("ws://{addr}/agent-events?since=0"));
    let url = format!("http://{addr}/events");
    let bodies = note_bodies(0, BURST, 1000, 300);
    let day = 86_400f64;
    for (i, b) in bodies.iter().enumerate() {
        // Past midnight a third of the way in; two days on at two thirds,
        // so maintenance gzips both earlier days while readers are in them.
        if i == 70 {
            clock.0.store(day.to_bits(), Ordering::Relaxed);
        }
        if i == 140 {
            clock.0.store((3.0 * day).to_bits(), Ordering::Relaxed);
            let out = running
                .state()
                .counters
                .messages_out
                .load(Ordering::Relaxed);
            eprintln!(
                "two days on at id 140,000; the readers are near id {}",
                out / 4
            );
        }
        let (s, v) = post_to(&url, b.as_bytes(), "application/x-ndjson", &[]);
        assert_eq!(s, 200, "{v}");
    }
    for r in readers {
        assert_complete(&r.finish(Duration::from_secs(240)));
    }
    // Maintenance runs on its own thread: both earlier days end up gzipped.
    let files = wait_for("both earlier days gzipped", T, || {
        let files: Vec<String> = agentpulse::logfile::log_files(dir.path(), "agent-events.jsonl")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        (files.len() == 3 && files[..2].iter().all(|f| f.ends_with(".jsonl.gz"))).then_some(files)
    });
    eprintln!("log files: {files:?}");
    let from_log = running
        .state()
        .counters
        .messages_from_log
        .load(Ordering::Relaxed);
    assert!(from_log > 4 * 50_000, "served from the log: {from_log}");
    token.cancel();
    rt.block_on(running.wait()).unwrap();
}

/// Server-to-client WebSocket frames (unmasked) from raw bytes: the text
/// messages' event ids, and the close frame's code and reason.
fn frames(bytes: &[u8]) -> (Vec<u64>, Option<(u16, String)>) {
    let (mut ids, mut i) = (Vec::new(), 0);
    // Skip the HTTP answer.
    let start = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    i += start;
    while i + 2 <= bytes.len() {
        let op = bytes[i] & 0x0f;
        let mut len = (bytes[i + 1] & 0x7f) as usize;
        let mut at = i + 2;
        if len == 126 {
            len = u16::from_be_bytes([bytes[at], bytes[at + 1]]) as usize;
            at += 2;
        } else if len == 127 {
            len = u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            at += 8;
        }
        if at + len > bytes.len() {
            break;
        }
        let payload = &bytes[at..at + len];
        match op {
            1 if payload.starts_with(b"{\"id\":") => {
                let v: Value = serde_json::from_slice(payload).unwrap();
                ids.push(v["id"].as_u64().unwrap());
            }
            8 => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
                return (ids, Some((code, reason)));
            }
            _ => {}
        }
        i = at + len;
    }
    (ids, None)
}

#[test]
fn a_socket_that_never_reads_is_closed_with_4008_and_a_resume_gets_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--ping-interval", "1"]);
    let n = 6000u64; // ~24 MB: more than the kernel's socket buffers
    let steady = PyReader::start(&hub.ws_url("/agent-events"), n, &["--timeout", "120"]);
    let mut stuck = std::net::TcpStream::connect(hub.addr).unwrap();
    write!(
        stuck,
        "GET /agent-events HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        hub.addr
    )
    .unwrap();
    post_all(&hub.url("/events"), &note_bodies(0, n, 250, 4000));
    wait_for("the stuck socket to be given up", T, || {
        let (_, m) = hub.get_json("/api/metrics");
        (m["hub"]["stuck_clients"].as_u64() == Some(1)).then_some(())
    });
    // Now it reads: what the socket held, then the close frame, then the end.
    stuck.set_read_timeout(Some(T)).unwrap();
    let mut bytes = Vec::new();
    stuck.read_to_end(&mut bytes).unwrap();
    let (ids, close) = frames(&bytes);
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.starts_with("stuck:"), "{reason}");
    assert!(!ids.is_empty() && ids.len() < n as usize);
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    // The reader beside it was not held up, and a resume gets the rest.
    let s = steady.finish(Duration::from_secs(120));
    assert_eq!(
        (s["count"].as_u64(), s["last"].as_u64()),
        (Some(n), Some(n)),
        "{s}"
    );
    let last = *ids.last().unwrap();
    let resumed = PyReader::start(
        &hub.ws_url(&format!("/agent-events?since={last}")),
        n,
        &["--timeout", "60"],
    );
    let s = resumed.finish(Duration::from_secs(60));
    assert_eq!(s["first"], last + 1, "{s}");
    assert_eq!(s["count"], n - last, "{s}");
    assert_eq!(s["gaps"], json!([]));
}

#[test]
fn a_restarted_hub_without_a_log_answers_an_old_epoch_with_reset() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut hub = Hub::start_on(dir.path(), port, &["--no-log"]);
    for i in 0..3 {
        hub.post(
            &json!({"event_type":"note","payload":{"i":i}}).to_string(),
            "application/json",
        );
    }
    let (_, first) = hub.get_json("/api/events?since=0");
    let old = first["epoch"].as_str().unwrap().to_owned();
    assert_eq!(old.len(), 32);
    assert!(hub.terminate().success());
    drop(hub);
    let hub = Hub::start_on(dir.path(), port, &["--no-log"]);
    let body: Vec<String> = (0..10)
        .map(|i| json!({"event_type":"note","payload":{"i":i}}).to_string())
        .collect();
    hub.post(&body.join("\n"), "application/x-ndjson");

    // Resuming the old history (since=3 is below the new last id, 10).
    let c = ws::connect(
        &hub.ws_url(&format!("/agent-events?since=3&epoch={old}")),
        &[],
    );
    let welcome = c.next(T);
    let new = welcome["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let gap = c.next(T);
    assert_eq!(gap["event_type"], "stream_gap", "{gap}");
    assert_eq!(gap["payload"]["reason"], "reset");
    assert_eq!(gap["payload"]["epoch"], new.as_str());
    assert_eq!(gap["payload"]["previous_epoch"], old.as_str());
    assert_eq!(gap["payload"]["resume_from"], 0);
    let got: Vec<u64> = (0..10)
        .map(|_| c.next_event(T)["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (1..=10).collect::<Vec<_>>());

    // A since above the last id: a reset on the stream, an empty answer.
    let c = ws::connect(&hub.ws_url("/agent-events?since=1000"), &[]);
    c.next(T);
    let gap = c.next(T);
    assert_eq!(gap["payload"]["reason"], "reset", "{gap}");
    assert_eq!(c.next_event(T)["id"], 1);
    let (s, e) = hub.get_json("/api/events?since=1000");
    assert_eq!(s, 200);
    assert_eq!(e["events"], json!([]));
    assert_eq!(e["reset"], true);
    assert_eq!(e["next"], Value::Null);
    let (_, e) = hub.get_json(&format!("/api/events?since=0&epoch={old}"));
    assert_eq!(
        (e["events"].as_array().unwrap().len(), &e["reset"]),
        (0, &json!(true))
    );
    let (_, e) = hub.get_json(&format!("/api/events?since=0&epoch={new}"));
    assert_eq!(e["events"].as_array().unwrap().len(), 10);
    assert!(e.get("reset").is_none());
}

#[test]
fn an_epoch_lasts_as_long_as_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path(), &[]);
    let (_, e) = hub.get_json("/api/events");
    let epoch = e["epoch"].as_str().unwrap().to_owned();
    hub.post(r#"{"event_type":"note","payload":{}}"#, "application/json");
    assert!(hub.terminate().success());
    drop(hub);
    assert!(dir.path().join("agent-events.epoch").exists());
    let mut hub = Hub::start(dir.path(), &[]);
    assert_eq!(hub.get_json("/api/events").1["epoch"], epoch.as_str());
    assert!(hub.terminate().success());
    drop(hub);
    // The log deleted: a new history.
    std::fs::remove_file(dir.path().join("agent-events.jsonl")).unwrap();
    let hub = Hub::start(dir.path(), &[]);
    assert_ne!(hub.get_json("/api/events").1["epoch"], epoch.as_str());
}

/// `agentpulse tail --json` with stdout read line by line on a thread.
struct Tail {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Arc<std::sync::Mutex<String>>,
}

fn tail(hub_url: &str, extra: &[&str]) -> Tail {
    let mut child = common::bin()
        .args(["tail", "--hub", hub_url, "--json"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let stderr = Arc::new(std::sync::Mutex::new(String::new()));
    let mut err = child.stderr.take().unwrap();
    let e = stderr.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.push_str(&String::from_utf8_lossy(&buf[..n]));
            *e.lock().unwrap() = s.clone();
        }
    });
    Tail {
        child,
        lines,
        stderr,
    }
}

impl Tail {
    fn ids(&self, n: usize, d: Duration) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let l = self.lines.recv_timeout(d).unwrap_or_else(|_| {
                    panic!(
                        "tail printed nothing within {d:?}; stderr: {}",
                        self.stderr.lock().unwrap()
                    )
                });
                serde_json::from_str::<Value>(&l).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tail_across_a_restart_without_a_log_loses_nothing_of_the_new_hub() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut hub = Hub::start_on(dir.path(), port, &["--no-log"]);
    let t = tail(&hub.url(""), &["--since", "0"]);
    let post = |hub: &Hub, n: u64| {
        let body: Vec<String> = (0..n)
            .map(|i| json!({"event_type":"note","payload":{"i":i}}).to_string())
            .collect();
        hub.post(&body.join("\n"), "application/x-ndjson");
    };
    post(&hub, 3);
    assert_eq!(t.ids(3, T), [1, 2, 3]);
    assert!(hub.terminate().success());
    drop(hub);
    let hub = Hub::start_on(dir.path(), port, &["--no-log"]);
    // More than tail had seen, before it is back: ids 1..5 of a new history.
    post(&hub, 5);
    assert_eq!(t.ids(5, Duration::from_secs(20)), [1, 2, 3, 4, 5]);
    post(&hub, 2);
    assert_eq!(t.ids(2, T), [6, 7]);
    let err = t.stderr.lock().unwrap().clone();
    let resets: Vec<&str> = err.lines().filter(|l| l.contains("reset")).collect();
    assert_eq!(resets.len(), 1, "{err}");
}

#[test]
fn tail_json_since_0_prints_a_whole_burst_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let t = tail(
        &hub.url(""),
        &["--since", "0", "--count", &BURST.to_string()],
    );
    let url = hub.url("/events");
    let sender = std::thread::spawn(move || post_all(&url, &note_bodies(0, BURST, 1000, 300)));
    let ids = t.ids(BURST as usize, Duration::from_secs(60));
    sender.join().unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!((ids[0], *ids.last().unwrap()), (1, BURST));
    assert!(!t.stderr.lock().unwrap().contains("gap"));
}

#[test]
fn filtered_reads_are_complete_or_give_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    // Most of the events only in the log.
    let hub = Hub::start(dir.path(), &["--ring-capacity", "1000"]);
    let bodies = note_bodies(0, 22_000, 2000, 100);
    post_all(&hub.url("/events"), &bodies);
    hub.post(r#"{"event_type":"c.c","payload":{}}"#, "application/json");
    let (s, e) = hub.get_json("/api/events?types=c.c&since=0&limit=2");
    assert_eq!(s, 200);
    let evs = e["events"].as_array().unwrap();
    assert_eq!(evs.len(), 1, "{e}");
    assert_eq!(evs[0]["id"], 22_001);
    assert_eq!(e["next"], Value::Null, "the range was read to its end");
    // Cut by the limit: a cursor, and going on from it gets the rest.
    let (_, e) = hub.get_json("/api/events?types=note&since=0&limit=5");
    assert_eq!(e["events"].as_array().unwrap().len(), 5);
    assert_eq!(e["next"], 5);
    let (_, e) = hub.get_json("/api/events?types=note&since=21995&limit=10");
    let ids: Vec<u64> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (21_996..=22_000).collect::<Vec<_>>());
    assert_eq!(e["next"], Value::Null);
}

#[test]
fn numeric_parameters_out_of_range_are_refused_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    hub.post(r#"{"event_type":"note","payload":{}}"#, "application/json");
    let (s, e) = hub.get_json("/api/events?since=18446744073709551615");
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("0..=9007199254740991"),
        "{e}"
    );
    let e = ws::try_connect(&hub.ws_url("/agent-events?since=18446744073709551615"), &[])
        .err()
        .unwrap();
    assert!(e.contains("400"), "{e}");
    let (s, e) = hub.get_json("/api/events?limit=100001");
    assert_eq!(s, 400, "{e}");
    let (s, e) = hub.get_json("/api/metrics?bucket=minute&from=1e300&to=1e300");
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("253402300799"), "{e}");
    let (s, e) = hub.get_json("/api/metrics?bucket=minute&from=1e300&to=3600");
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("from: "), "{e}");
    // In range: answered.
    let (s, _) = hub.get_json("/api/events?since=9007199254740991");
    assert_eq!(s, 200);
    let (s, _) = hub.get_json("/api/metrics?bucket=minute&from=0&to=3600");
    assert_eq!(s, 200);
}
