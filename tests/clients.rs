//! The clients' side, end to end with the real hub binary: the Rust SDK
//! (`agentpulse::Client`), `agentpulse demo`, `claude-hook`, `replay`, the
//! recipes of docs/integrations.md and examples/rust_agent.rs.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agentpulse::client::{Client, ClientError, Transport};
use agentpulse::NewEvent;
use common::{free_port, get_json, wait_for, Hub};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// Every event the hub holds, oldest first.
fn all_events(hub: &Hub, headers: &[(&str, &str)]) -> Vec<Value> {
    let (status, v) = get_json(&hub.url("/api/events?since=0&limit=100000"), headers);
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().cloned().unwrap_or_default()
}

fn client(hub: &Hub) -> agentpulse::client::ClientBuilder {
    Client::builder(&hub.url("")).retry(Duration::from_millis(50), Duration::from_millis(500))
}

// ------------------------------------------------------------ Rust SDK

/// Emits `total` events steadily while the hub is stopped (SIGTERM, or
/// SIGKILL with `kill`) and a new one started on the same port and log;
/// then checks that the hub holds every event exactly once.
fn delivery_across_restart(kill: bool) -> agentpulse::client::ClientStats {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut hub = Hub::start_on(dir.path(), port, &[]);
    let c = client(&hub).build().unwrap();
    let total = 20_000u64;
    let producer = {
        let c = c.clone();
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            for n in 0..total {
                let id = c
                    .emit_event(NewEvent::new(
                        "note",
                        json!({ "n": n }).as_object().unwrap().clone(),
                    ))
                    .expect("queued");
                ids.push(id);
                if n % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            ids
        })
    };
    wait_for("a first part delivered", T, || {
        (c.stats().sent >= 3000).then_some(())
    });
    assert_eq!(c.stats().transport, Some("websocket"));
    // Mid-stream: stop the hub, then a new hub on the same port and log.
    if kill {
        hub.child.kill().unwrap();
        hub.child.wait().unwrap();
    } else {
        assert!(hub.terminate().success());
    }
    let hub = Hub::start_on(dir.path(), port, &[]);
    let emitted = producer.join().unwrap();
    assert!(c.flush(T), "flush: {:?}", c.stats());
    let s = c.stats();
    assert_eq!(
        (s.sent, s.rejected, s.dropped, s.lost, s.queued),
        (total, 0, 0, 0, 0),
        "{s:?}"
    );
    assert!(s.last_error.is_some(), "the restart was noticed: {s:?}");

    let events = all_events(&hub, &[]);
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len() as u64, total);
    if kill {
        // After a crash ids jump past those reserved (never reused).
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    } else {
        assert_eq!(ids, (1..=total).collect::<Vec<_>>(), "ids 1..=N, no gap");
    }
    let got: BTreeSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = emitted.iter().map(String::as_str).collect();
    assert_eq!(got.len(), events.len(), "no event_id twice");
    assert_eq!(got, want, "every emitted event, once");
    assert!(c.close(Duration::from_secs(5)));
    s
}

#[test]
fn client_delivers_every_event_once_across_a_hub_restart() {
    delivery_across_restart(false);
}

#[test]
fn client_delivers_every_event_once_across_a_hub_crash() {
    // SIGKILL: batches in flight may be in the log without an answer; they
    // are sent again and the new hub recognises them (duplicates).
    delivery_across_restart(true);
}

/// A stand-in for the hub's `/ingest` on a real socket. The first
/// connection reads one message and then, per `hang`, closes without
/// answering or stays silent; later connections answer every message as the
/// hub does (all accepted, ids counting up). Reports each message as
/// (connection number, its event_ids).
fn flaky_ingest(hang: bool) -> (String, std::sync::mpsc::Receiver<(u32, Vec<String>)>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let mut next_id = 1u64;
            let mut held = Vec::new();
            for conn in 1u32.. {
                let (sock, _) = listener.accept().await.unwrap();
                let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
                    continue;
                };
                let mut seq = 0u64;
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    let batch: Vec<Value> = serde_json::from_str(&text).unwrap();
                    let ids: Vec<String> = batch
                        .iter()
                        .map(|e| e["event_id"].as_str().unwrap().to_string())
                        .collect();
                    let _ = tx.send((conn, ids));
                    if conn == 1 {
                        break;
                    }
                    seq += 1;
                    let n = batch.len() as u64;
                    let answer = json!({"accepted": n, "duplicates": 0, "rejected": 0,
                        "ids": (next_id..next_id + n).collect::<Vec<_>>(),
                        "seq": seq, "status": 200});
                    next_id += n;
                    ws.send(Message::text(answer.to_string())).await.unwrap();
                }
                if hang {
                    held.push(ws); // open, never answered
                }
            }
        });
    });
    (format!("http://{addr}"), rx)
}

#[test]
fn unanswered_batches_are_sent_again_with_the_same_event_ids() {
    for hang in [false, true] {
        let (url, rx) = flaky_ingest(hang);
        let c = Client::builder(&url)
            .retry(Duration::from_millis(20), Duration::from_millis(100))
            .request_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        for n in 0..3 {
            c.emit("note", json!({ "n": n })).unwrap();
        }
        assert!(c.flush(T), "hang={hang}: {:?}", c.stats());
        let s = c.stats();
        assert_eq!((s.sent, s.retries, s.lost), (3, 1, 0), "hang={hang}: {s:?}");
        let (first_conn, first) = rx.recv_timeout(T).unwrap();
        let (second_conn, second) = rx.recv_timeout(T).unwrap();
        assert_eq!((first_conn, second_conn), (1, 2));
        assert_eq!(first.len(), 3);
        assert_eq!(first, second, "the same event_ids again");
        let why = s.last_error.unwrap();
        if hang {
            assert!(why.contains("no answer"), "{why}");
        } else {
            assert!(why.contains("closed") || why.contains("broke"), "{why}");
        }
    }
}

#[test]
fn client_without_a_hub_stays_fast_and_bounded() {
    // Nothing listens on this port.
    let url = format!("http://127.0.0.1:{}", free_port());
    let bound = 1000;
    let c = Client::builder(&url)
        .max_queue(bound)
        .close_on_drop(Duration::ZERO)
        .build()
        .unwrap();
    let blob = "x".repeat(2048);
    let rss_before = rss_kib();
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let (mut queued, mut full) = (0u64, 0u64);
    for n in 0..100_000u64 {
        let t = Instant::now();
        match c.emit("note", json!({ "n": n, "blob": blob.clone() })) {
            Ok(()) => queued += 1,
            Err(ClientError::QueueFull { max, .. }) => {
                assert_eq!(max, bound);
                full += 1
            }
            Err(e) => panic!("{e}"),
        }
        slowest = slowest.max(t.elapsed());
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "100,000 emits took {elapsed:?}"
    );
    assert!(
        slowest < Duration::from_millis(200),
        "one emit took {slowest:?}"
    );
    let s = c.stats();
    assert_eq!((queued, full), (bound as u64, 100_000 - bound as u64));
    assert_eq!(s.queued, bound as u64);
    assert_eq!(s.dropped, full);
    assert!(s.peak_queued <= bound as u64, "{s:?}");
    assert_eq!(s.transport, None);
    assert!(s.last_error.is_some(), "{s:?}");
    // 100,000 events of 2 KiB would be 200 MiB unbounded.
    if let (Some(a), Some(b)) = (rss_before, rss_kib()) {
        assert!(
            b.saturating_sub(a) < 64 * 1024,
            "memory grew by {} KiB",
            b - a
        );
    }
    assert!(!c.flush(Duration::from_millis(300)));
    let t = Instant::now();
    assert!(!c.close(Duration::from_millis(300)));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let s = c.stats();
    assert_eq!((s.lost, s.queued), (bound as u64, 0), "{s:?}");
    assert!(matches!(
        c.emit("note", json!({})),
        Err(ClientError::Closed { .. })
    ));
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn client_counts_rejected_events_and_never_resends_them() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let c = client(&hub).build().unwrap();
    let good =
        json!({"agent":"scribe","task_id":"t_1","status":"success","duration_ms":5,"cost_usd":0.1});
    let bad = json!({"agent":"scribe","task_id":"t_1","status":"success","duration_ms":5,"cost_usd":"abc"});
    for p in [&good, &bad, &good, &bad, &good] {
        c.emit("agent_completed", p.clone()).unwrap();
    }
    assert!(c.flush(T));
    let s = c.stats();
    assert_eq!((s.sent, s.rejected, s.retries), (3, 2, 0), "{s:?}");
    let err = s.last_error.unwrap();
    assert!(err.contains("agent_completed.cost_usd"), "{err}");
    assert_eq!(all_events(&hub, &[]).len(), 3);
    // Nothing is retried later either.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.stats().retries, 0);
    assert_eq!(all_events(&hub, &[]).len(), 3);
}

#[test]
fn client_sends_its_token_and_counts_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--token", "s3cret"]);
    let auth = [("Authorization", "Bearer s3cret")];

    let good = client(&hub).token("s3cret").build().unwrap();
    good.emit("note", json!({"who": "good"})).unwrap();
    assert!(good.flush(T));
    let s = good.stats();
    assert_eq!((s.sent, s.rejected), (1, 0), "{s:?}");
    assert_eq!(s.transport, Some("websocket"));

    for token in [None, Some("wrong")] {
        let mut b = client(&hub);
        if let Some(t) = token {
            b = b.token(t);
        }
        let bad = b.build().unwrap();
        bad.emit("note", json!({"who": "bad"})).unwrap();
        bad.emit("note", json!({"who": "bad"})).unwrap();
        assert!(bad.flush(T), "refusals are answers");
        let s = bad.stats();
        assert_eq!((s.sent, s.rejected, s.retries), (0, 2, 0), "{s:?}");
        assert!(s.last_error.as_deref().unwrap().contains("401"), "{s:?}");
    }
    let events = all_events(&hub, &auth);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"]["who"], "good");
}

#[test]
fn client_falls_back_to_http_when_the_websocket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // No WebSocket connection allowed: /ingest answers 503.
    let hub = Hub::start(dir.path(), &["--max-connections", "0"]);
    let c = client(&hub).build().unwrap();
    for n in 0..1200 {
        c.emit("note", json!({ "n": n })).unwrap();
    }
    assert!(c.flush(T), "{:?}", c.stats());
    let s = c.stats();
    assert_eq!((s.sent, s.rejected), (1200, 0), "{s:?}");
    assert_eq!(s.transport, Some("http"));
    assert_eq!(all_events(&hub, &[]).len(), 1200);

    // HTTP only, by choice, to a normal hub.
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let c = client(&hub).transport(Transport::Http).build().unwrap();
    c.emit("note", json!({"n": 1})).unwrap();
    assert!(c.flush(T));
    assert_eq!(c.stats().transport, Some("http"));
    assert_eq!(all_events(&hub, &[]).len(), 1);
}

#[test]
fn client_batches_by_bytes_and_keeps_given_ids_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let c = client(&hub).max_batch_bytes(4096).build().unwrap();
    let blob = "y".repeat(1000);
    for n in 0..20 {
        c.emit("note", json!({ "n": n, "blob": blob })).unwrap();
    }
    let ev = NewEvent::new("note", json!({"own": true}).as_object().unwrap().clone())
        .with_timestamp(1_700_000_000.25)
        .with_event_id("my-key-1");
    assert_eq!(c.emit_event(ev.clone()).unwrap(), "my-key-1");
    assert!(c.flush(T));
    // The same key again: the hub keeps it once.
    c.emit_event(ev).unwrap();
    assert!(c.flush(T));
    let s = c.stats();
    assert_eq!((s.sent, s.duplicates), (22, 1), "{s:?}");
    let events = all_events(&hub, &[]);
    assert_eq!(events.len(), 21);
    let ns: Vec<u64> = events[..20]
        .iter()
        .map(|e| e["payload"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..20).collect::<Vec<_>>(), "in order");
    assert_eq!(events[20]["event_id"], "my-key-1");
    assert_eq!(events[20]["timestamp"], 1_700_000_000.25);
}

#[test]
fn client_works_from_async_code() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let c = client(&hub).build().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..4 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..50 {
                    c.emit("note", json!({ "task": t, "n": n })).unwrap();
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert!(c.flush(T));
    assert_eq!(c.stats().sent, 200);
}

/// Runs this test binary's test `name` alone in a child process with
/// `env` set (process-wide settings such as the global emitter's).
fn run_child_test(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("AGENTPULSE_CLIENTS_CHILD", "1")
        .env("AGENTPULSE_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn in_child() -> bool {
    std::env::var_os("AGENTPULSE_CLIENTS_CHILD").is_some()
}

#[test]
fn global_emit_event_forwards_to_the_hub_when_hub_url_is_set() {
    if in_child() {
        // One line of setup: the environment. Validation stays local.
        agentpulse::emit_event(
            "task_queued",
            json!({"task_id":"t_g","feature":"f","est_cost":0.1,"timestamp":1.0}),
        )
        .unwrap();
        let err = agentpulse::emit_event("agent_completed", json!({"agent":"x"})).unwrap_err();
        assert!(err.to_string().contains("agent_completed."), "{err}");
        agentpulse::emit_event("note", json!({"n": 2})).unwrap();
        agentpulse::get_emitter().stop().unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--token", "tok"]);
    let local = tempfile::tempdir().unwrap();
    let out = run_child_test(
        "global_emit_event_forwards_to_the_hub_when_hub_url_is_set",
        &[
            ("AGENTPULSE_HUB_URL", &hub.url("")),
            ("AGENTPULSE_TOKEN", "tok"),
            ("AGENTPULSE_LOG_DIR", local.path().to_str().unwrap()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = all_events(&hub, &[("Authorization", "Bearer tok")]);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["task_queued", "note"]);
    assert!(events.iter().all(|e| e["event_id"].is_string()));
    assert_eq!(
        std::fs::read_dir(local.path()).unwrap().count(),
        0,
        "no local log in hub mode"
    );
}

// ------------------------------------------------------------ CLI helpers

/// Runs the binary; (exit code, stdout, stderr).
fn run_bin(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = common::bin()
        .args(args)
        .env("AGENTPULSE_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("AGENTPULSE_HUB_URL")
        .env_remove("AGENTPULSE_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        std::io::Write::write_all(&mut input, s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a shell command line; (exit code, stdout, stderr).
fn sh(cmd: &str) -> (i32, String, String) {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .env("AGENTPULSE_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("AGENTPULSE_HUB_URL")
        .env_remove("AGENTPULSE_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fenced block after `<!-- test: NAME -->` in docs/integrations.md.
fn doc_block(name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/integrations.md"))
        .unwrap();
    let marker = format!("<!-- test: {name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} not in docs/integrations.md"));
    let after = &doc[at + marker.len()..];
    let fence = after.find("```").unwrap();
    let body = fence + after[fence..].find('\n').unwrap() + 1;
    let end = body + after[body..].find("```").unwrap();
    after[body..end].to_string()
}

/// A documented command made runnable here: the hub's address, the log
/// directory and the binary's path substituted.
fn doc_command(name: &str, hub: Option<&str>, logs: Option<&std::path::Path>) -> String {
    let mut cmd = doc_block(name);
    if let Some(h) = hub {
        cmd = cmd.replace("http://127.0.0.1:3010", h);
    }
    if let Some(d) = logs {
        cmd = cmd.replace("logs/", &format!("{}/", d.display()));
    }
    cmd.lines()
        .map(|l| match l.strip_prefix("agentpulse ") {
            Some(rest) => format!("{} {rest}", env!("CARGO_BIN_EXE_agentpulse")),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_close(got: &Value, want: f64, what: &str) {
    let g = got.as_f64().unwrap_or_else(|| panic!("{what}: {got}"));
    // Timestamps near 1.7e9 s carry about 2e-7 s of rounding.
    assert!((g - want).abs() < 1e-6, "{what}: got {g}, want {want}");
}

fn read_log(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn new_subcommands_have_help() {
    for sub in ["demo", "replay", "claude-hook"] {
        let (code, out, _) = run_bin(&[sub, "--help"], None);
        assert_eq!(code, 0, "{sub} --help");
        assert!(out.contains("Usage"), "{sub}: {out}");
    }
    let (_, out, _) = run_bin(&["--help"], None);
    for sub in ["demo", "replay", "claude-hook"] {
        assert!(out.contains(sub), "{out}");
    }
}

// ------------------------------------------------------------ demo

const START: &str = "1700000000";

fn demo_json(extra: &[&str]) -> Value {
    let mut args = vec!["demo", "--speed", "0", "--start", START, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = run_bin(&args, None);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The six KPIs and their samples, as worked out by hand.
fn assert_kpis(kpis: &Value, want: [f64; 6], samples: Value) {
    let names = [
        "agent_utilization",
        "cost_per_feature",
        "average_retry_count",
        "critic_rejection_rate",
        "validation_pass_rate",
        "time_to_completion",
    ];
    for (name, w) in names.iter().zip(want) {
        assert_close(&kpis[name], w, name);
    }
    assert_eq!(kpis["samples"], samples);
}

#[test]
fn demo_success_and_failure_match_hand_worked_kpis() {
    // Success path (src/cli/demo.rs, offsets in seconds from --start):
    //   0.0 task_queued t_001 (user_authentication)
    //   0.2-1.2 scribe (0.12 $), 1.4-1.8 critic approved (0.02 $),
    //   2.0-2.6 runner (0.01 $), 2.8 gemini started (never completed),
    //   3.8 validation_complete passed (0.08 $), 4.0 budget_warning.
    // - agents seen: scribe, critic, runner, gemini = 4; span 4.0 s;
    //   busy 1.0 + 0.4 + 0.6 = 2.0 s, plus gemini's 2.8-3.8 = 1.0 s (the
    //   validation ends the span of the validator, which never completes)
    //   → utilization = 3.0 / (4.0 × 4) = 0.1875
    // - cost_per_feature = (0.12 + 0.02 + 0.01 + 0.08) / 1 feature = 0.23
    // - average_retry_count = 0 retries / 1 finished task = 0
    // - critic_rejection_rate = 0 rejected / 1 decision = 0
    // - validation_pass_rate = 1 / 1 = 1
    // - time_to_completion = 3.8 - 0.0 = 3.8 s
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let doc = demo_json(&["--log-dir", d]);
    assert_eq!(doc["workflow"], "success");
    assert_eq!(doc["events"], 10);
    assert_close(&doc["span_seconds"], 4.0, "span");
    assert_close(&doc["agents"]["gemini"]["busy_seconds"], 1.0, "gemini busy");
    assert_kpis(
        &doc["kpis"],
        [0.1875, 0.23, 0.0, 0.0, 1.0, 3.8],
        json!({"events": 10, "agents": 4, "features_completed": 1, "tasks_finished": 1,
               "critic_decisions": 1, "validations": 1, "completions": 1}),
    );
    // The log holds the same events, stamped from the start time.
    let log = dir.path().join("agent-events.jsonl");
    let lines = read_log(&log);
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "task_queued",
            "agent_started",
            "agent_completed",
            "agent_started",
            "agent_completed",
            "agent_started",
            "agent_completed",
            "agent_started",
            "validation_complete",
            "budget_warning"
        ]
    );
    assert_eq!(lines[0]["timestamp"], 1_700_000_000.0);
    assert_eq!(lines[0]["payload"]["timestamp"], 1_700_000_000.0);
    assert_close(&lines[9]["timestamp"], 1_700_000_004.0, "last timestamp");
    // `report` on that log agrees with the demo's figures.
    let (code, out, err) = run_bin(&["report", log.to_str().unwrap(), "--json"], None);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    for name in [
        "agent_utilization",
        "cost_per_feature",
        "time_to_completion",
    ] {
        assert_eq!(report["overall"][name], doc["kpis"][name], "{name}");
    }

    // The table, as printed.
    let dir2 = tempfile::tempdir().unwrap();
    let (code, out, err) = run_bin(
        &[
            "demo",
            "--speed",
            "0",
            "--start",
            START,
            "--log-dir",
            dir2.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("agentpulse demo: success workflow, 1 task, 10 events over 4.0 s\n"),
        "{out}"
    );
    for line in [
        "  agent_utilization        0.1875",
        "  cost_per_feature         0.2300",
        "  average_retry_count      0.0000",
        "  critic_rejection_rate    0.0000",
        "  validation_pass_rate     1.0000",
        "  time_to_completion       3.8000 s",
    ] {
        assert!(out.contains(&format!("{line}\n")), "{line:?} in\n{out}");
    }

    // Failure path (offsets in seconds):
    //   0.0 task_queued t_002 (payment_processing)
    //   0.2-1.0 scribe, 1.2-1.6 critic approved, 1.8-2.4 runner failed,
    //   2.6-3.6 medic failed, 3.8-4.8 medic failed again,
    //   5.0 hitl_escalated (attempts 2), 5.2 budget_exceeded.
    // - agents: scribe, critic, runner, medic = 4; span 5.2 s;
    //   busy 0.8 + 0.4 + 0.6 + 1.0 + 1.0 = 3.8 s
    //   → utilization = 3.8 / (5.2 × 4) = 0.182692307...
    // - cost_per_feature = 0: no validation, no feature completed
    // - average_retry_count: the medic's second start follows its own
    //   failed completion (1 retry); the task finishes by escalation with
    //   attempts 2 → max(1, 2) = 2 over 1 task = 2.0
    // - critic_rejection_rate = 0 / 1 = 0
    // - validation_pass_rate = 0 and time_to_completion = 0 (no samples)
    let doc = demo_json(&["--failure", "--log-dir", dir.path().to_str().unwrap()]);
    assert_eq!(doc["workflow"], "failure");
    assert_eq!(doc["events"], 13);
    assert_kpis(
        &doc["kpis"],
        [3.8 / (5.2 * 4.0), 0.0, 2.0, 0.0, 0.0, 0.0],
        json!({"events": 13, "agents": 4, "features_completed": 0, "tasks_finished": 1,
               "critic_decisions": 1, "validations": 0, "completions": 0}),
    );
    assert_eq!(doc["agents"]["medic"]["failures"], 2);
    assert_eq!(doc["destination"]["recorded"], 13);
}

#[test]
fn demo_against_a_hub_sends_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let doc = demo_json(&["--hub", &hub.url("")]);
    assert_eq!(doc["destination"]["sent"], 10);
    assert_eq!(doc["destination"]["rejected"], 0);
    assert_close(&doc["agents"]["gemini"]["busy_seconds"], 1.0, "gemini busy");
    assert_kpis(
        &doc["kpis"],
        [0.1875, 0.23, 0.0, 0.0, 1.0, 3.8],
        json!({"events": 10, "agents": 4, "features_completed": 1, "tasks_finished": 1,
               "critic_decisions": 1, "validations": 1, "completions": 1}),
    );
    let events = all_events(&hub, &[]);
    assert_eq!(events.len(), 10);
    assert_eq!(events[0]["event_type"], "task_queued");
    assert_eq!(events[0]["timestamp"], 1_700_000_000.0);
    assert_eq!(events[8]["event_type"], "validation_complete");
    assert_close(&events[8]["timestamp"], 1_700_000_003.8, "validation time");
    // An absent hub is an error at once, not a wait.
    let t = Instant::now();
    let (code, _, err) = run_bin(
        &[
            "demo",
            "--speed",
            "0",
            "--hub",
            &format!("http://127.0.0.1:{}", free_port()),
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach the hub"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn demo_fleet_is_seeded() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let fleet = |dir: &tempfile::TempDir, seed: &str| {
        demo_json(&[
            "--tasks",
            "40",
            "--agents",
            "3",
            "--seed",
            seed,
            "--log-dir",
            dir.path().to_str().unwrap(),
        ])
    };
    let (da, db, dc) = (fleet(&a, "9"), fleet(&b, "9"), fleet(&c, "10"));
    let log = |d: &tempfile::TempDir| std::fs::read(d.path().join("agent-events.jsonl")).unwrap();
    assert_eq!(log(&a), log(&b), "same seed, same events");
    assert_ne!(log(&a), log(&c), "another seed, other events");
    assert_eq!(da["kpis"], db["kpis"]);
    assert_ne!(da["kpis"], dc["kpis"]);
    let events = read_log(&a.path().join("agent-events.jsonl"));
    assert_eq!(da["events"].as_u64().unwrap() as usize, events.len());
    let count = |t: &str| events.iter().filter(|e| e["event_type"] == t).count();
    assert_eq!(count("task_queued"), 40);
    assert_eq!(count("validation_complete") + count("hitl_escalated"), 40);
    assert_eq!(count("budget_warning"), 1);
    let teams: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["payload"]["agent"].as_str())
        .filter_map(|a| a.rsplit_once('-').map(|(_, k)| k))
        .collect();
    assert_eq!(teams, ["1", "2", "3"].into_iter().collect());
    assert_eq!(
        da["kpis"]["samples"]["critic_decisions"].as_u64().unwrap() as usize,
        count("critic_decision")
    );
    // The same figures from the log.
    let (code, out, _) = run_bin(
        &[
            "report",
            a.path().join("agent-events.jsonl").to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["overall"]["samples"], da["kpis"]["samples"]);
    assert_eq!(
        report["overall"]["average_retry_count"],
        da["kpis"]["average_retry_count"]
    );
}

#[test]
fn demo_speed_scales_the_pauses_not_the_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (code, out, err) = run_bin(
        &[
            "demo",
            "--speed",
            "0.25",
            "--start",
            START,
            "--json",
            "--log-dir",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    let took = t.elapsed();
    assert_eq!(code, 0, "{err}");
    let slow: Value = serde_json::from_str(&out).unwrap();
    // 4.0 s of workflow × 0.25.
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took < Duration::from_millis(3500), "{took:?}");
    let dir = tempfile::tempdir().unwrap();
    let fast = demo_json(&["--log-dir", dir.path().to_str().unwrap()]);
    assert_eq!(slow["kpis"], fast["kpis"]);
}

// ------------------------------------------------------------ Claude Code hooks

const SESSION: &str = "5f3b2c1a-8d4e-4f6a-9b7c-1e2d3c4b5a69";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/claude-hooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn hook_print(input: &str) -> Value {
    let (code, out, err) = run_bin(&["claude-hook", "--print"], Some(input));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn claude_hook_maps_every_recorded_payload() {
    // (fixture, event type, payload fields expected, event_id suffix)
    let cases: Vec<(&str, &str, Value, Option<&str>)> = vec![
        (
            "session-start.json",
            "task_queued",
            json!({"task_id": SESSION, "feature": "shop", "est_cost": 0.0, "source": "startup"}),
            None,
        ),
        (
            "user-prompt-submit.json",
            "agent_started",
            json!({"agent": "claude-code", "model": "claude-code", "tools": [],
                "prompt": "Add an end-to-end test for the checkout button and run it", "prompt_chars": 57}),
            None,
        ),
        (
            "pre-tool-use-bash.json",
            "agent_started",
            json!({"agent": "tool:Bash", "tools": ["Bash"], "tool_name": "Bash",
                "tool_input": {"command": "npx playwright test tests/checkout.spec.ts", "description": "Run the checkout test"}}),
            Some(":toolu_01HvX3kQ9mJrTa7Lw2cYpB5e:pre"),
        ),
        (
            "post-tool-use-bash.json",
            "agent_completed",
            json!({"agent": "tool:Bash", "status": "success", "duration_ms": 0.0, "cost_usd": 0.0}),
            Some(":toolu_01HvX3kQ9mJrTa7Lw2cYpB5e:post"),
        ),
        (
            "pre-tool-use-edit.json",
            "agent_started",
            json!({"agent": "tool:Edit", "permission_mode": "acceptEdits"}),
            Some(":toolu_01Q8dNw4ZsFe6Ua2Kb9RtLx1:pre"),
        ),
        (
            "post-tool-use-failure-edit.json",
            "agent_completed",
            json!({"agent": "tool:Edit", "status": "failed", "error": "String to replace not found in file."}),
            Some(":toolu_01Q8dNw4ZsFe6Ua2Kb9RtLx1:post"),
        ),
        (
            "subagent-stop.json",
            "agent_completed",
            json!({"agent": "test-writer", "status": "success", "agent_id": "a7c41e9d", "stop_hook_active": false}),
            None,
        ),
        (
            "notification.json",
            "hitl_escalated",
            json!({"last_error": "Claude needs your permission to use Bash", "priority": "high", "attempts": 0,
                "notification_type": "permission_prompt"}),
            None,
        ),
        (
            "stop.json",
            "agent_completed",
            json!({"agent": "claude-code", "status": "success", "stop_hook_active": false}),
            None,
        ),
        (
            "pre-compact.json",
            "context_compacted",
            json!({"trigger": "auto"}),
            None,
        ),
        (
            "session-end.json",
            "session_ended",
            json!({"reason": "prompt_input_exit"}),
            None,
        ),
    ];
    // Every recorded payload is covered.
    let mut files: Vec<String> = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/claude-hooks"
    ))
    .unwrap()
    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
    .collect();
    files.sort();
    let mut named: Vec<String> = cases.iter().map(|c| c.0.to_string()).collect();
    named.sort();
    assert_eq!(files, named);

    for (file, event_type, fields, id_suffix) in cases {
        let input = fixture(file);
        let hook: Value = serde_json::from_str(&input).unwrap();
        let ev = hook_print(&input);
        assert_eq!(ev["event_type"], event_type, "{file}");
        assert!(ev["timestamp"].as_f64().unwrap() > 1.6e9, "{file}");
        let p = &ev["payload"];
        assert_eq!(p["task_id"], SESSION, "{file}");
        assert_eq!(p["session_id"], SESSION, "{file}");
        assert_eq!(p["hook_event_name"], hook["hook_event_name"], "{file}");
        assert_eq!(p["cwd"], "/home/dev/shop", "{file}");
        assert_eq!(p["transcript_path"], hook["transcript_path"], "{file}");
        for (k, v) in fields.as_object().unwrap() {
            assert_eq!(&p[k], v, "{file}: {k}");
        }
        match id_suffix {
            Some(s) => {
                let id = ev["event_id"].as_str().unwrap();
                assert_eq!(id, format!("claude:{SESSION}{s}"), "{file}");
            }
            None => assert!(ev.get("event_id").is_none(), "{file}"),
        }
    }

    // Without agent_type a subagent is "subagent"; a tool response that
    // says it failed makes a failed run; long strings are cut.
    let ev = hook_print(
        r#"{"session_id":"s","hook_event_name":"SubagentStop","stop_hook_active":false}"#,
    );
    assert_eq!(ev["payload"]["agent"], "subagent");
    let long = "z".repeat(2000);
    let ev = hook_print(
        &json!({"session_id":"s","hook_event_name":"PostToolUse","tool_name":"Write",
                "tool_input":{"file_path":"/a","content": long},
                "tool_response":{"success": false}, "tool_use_id":"t1"})
        .to_string(),
    );
    assert_eq!(ev["payload"]["status"], "failed");
    assert_eq!(ev["payload"]["tool_input"]["content_chars"], 2000);
    assert!(
        ev["payload"]["tool_input"]["content"]
            .as_str()
            .unwrap()
            .chars()
            .count()
            <= 501
    );
    let ev = hook_print(
        r#"{"session_id":"s","hook_event_name":"Notification","message":"Claude is waiting for your input","notification_type":"idle_prompt"}"#,
    );
    assert_eq!(ev["payload"]["priority"], "normal");
    let ev = hook_print(r#"{"session_id":"s","hook_event_name":"SomethingNew"}"#);
    assert_eq!(ev["event_type"], "claude_hook");
}

/// The hook command of the documented settings, runnable here.
fn settings_command(hub: &str) -> String {
    let settings: Value = serde_json::from_str(&doc_block("claude-settings")).unwrap();
    let cmd = settings["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .replace("http://127.0.0.1:3010", hub);
    cmd.replacen(
        "agentpulse ",
        &format!("{} ", env!("CARGO_BIN_EXE_agentpulse")),
        1,
    )
}

#[test]
fn recipe_claude_settings_is_valid() {
    let settings: Value = serde_json::from_str(&doc_block("claude-settings")).unwrap();
    let hooks = settings["hooks"].as_object().unwrap();
    for name in [
        "SessionStart",
        "UserPromptSubmit",
        "PreToolUse",
        "PostToolUse",
        "SubagentStop",
        "Stop",
        "Notification",
        "PreCompact",
        "SessionEnd",
    ] {
        let entries = hooks[name].as_array().unwrap_or_else(|| panic!("{name}"));
        for entry in entries {
            for h in entry["hooks"].as_array().unwrap() {
                assert_eq!(h["type"], "command");
                assert_eq!(
                    h["command"],
                    "agentpulse claude-hook --hub http://127.0.0.1:3010"
                );
                assert!(h["timeout"].as_u64().unwrap() >= 3);
            }
        }
    }
}

#[test]
fn claude_hook_session_reaches_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let cmd = settings_command(&hub.url(""));
    let session = [
        "session-start.json",
        "user-prompt-submit.json",
        "pre-tool-use-bash.json",
        "post-tool-use-bash.json",
        "pre-tool-use-edit.json",
        "post-tool-use-failure-edit.json",
        "subagent-stop.json",
        "notification.json",
        "stop.json",
        "pre-compact.json",
        "session-end.json",
        // Fired twice: kept once (same tool_use_id).
        "pre-tool-use-bash.json",
    ];
    for file in session {
        let path = format!(
            "{}/tests/fixtures/claude-hooks/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let (code, out, err) = sh(&format!("{cmd} < {path}"));
        assert_eq!(code, 0, "{file}: {err}");
        assert_eq!(out, "", "{file}: a hook prints nothing on stdout");
    }
    let events = all_events(&hub, &[]);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "task_queued",
            "agent_started",
            "agent_started",
            "agent_completed",
            "agent_started",
            "agent_completed",
            "agent_completed",
            "hitl_escalated",
            "agent_completed",
            "context_compacted",
            "session_ended"
        ]
    );
    let (_, metrics) = hub.get_json("/api/metrics");
    let agents = &metrics["agents"];
    assert_eq!(agents["tool:Bash"]["runs"], 1, "{agents}");
    assert_eq!(agents["tool:Bash"]["failures"], 0);
    assert_eq!(agents["tool:Edit"]["runs"], 1);
    assert_eq!(agents["tool:Edit"]["failures"], 1);
    assert_eq!(agents["claude-code"]["runs"], 1);
    assert_eq!(agents["test-writer"]["runs"], 1);

    // No hub: a quick, non-blocking failure (exit 1, never 2), silent on stdout.
    let absent = format!("http://127.0.0.1:{}", free_port());
    let t = Instant::now();
    let (code, out, err) = sh(&format!(
        "{} < {}/tests/fixtures/claude-hooks/stop.json",
        settings_command(&absent),
        env!("CARGO_MANIFEST_DIR")
    ));
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("cannot reach the hub"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let (code, out, _) = run_bin(&["claude-hook", "--hub", &hub.url("")], Some("not json"));
    assert_eq!((code, out.as_str()), (1, ""));
}

// ------------------------------------------------------------ recipes

#[test]
fn recipe_redis_cli_publish() {
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--redis-url", &redis.url()]);
    let cmd = doc_command("redis-cli", None, None)
        .replace("redis-cli ", &format!("redis-cli -p {} ", redis.port));
    // PUBLISH answers the number of subscribers: 1 once the bridge listens.
    wait_for("the bridge to subscribe", T, || {
        let (code, out, _) = sh(&cmd);
        (code == 0 && out.trim() == "1").then_some(())
    });
    let events = wait_for("the event", T, || {
        let e = all_events(&hub, &[]);
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_type"], "agent_started");
    assert_eq!(events[0]["timestamp"], 1729012419.234);
    assert_eq!(events[0]["payload"]["agent"], "scribe");
}

#[test]
fn recipe_curl_and_emit() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let (code, out, err) = sh(&doc_command("curl", Some(&hub.url("")), None));
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        answer,
        json!({"accepted": 1, "duplicates": 0, "rejected": 0, "ids": [1]})
    );
    let (code, _, err) = sh(&doc_command("emit", Some(&hub.url("")), None));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sent: event 2"), "{err}");
    let events = all_events(&hub, &[]);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["payload"]["agent"], "nightly-build");
    assert_eq!(events[1]["event_type"], "agent_completed");
    assert_eq!(events[1]["payload"]["duration_ms"], 93000);
}

#[test]
fn recipe_jq_reads_the_log() {
    let dir = tempfile::tempdir().unwrap();
    demo_json(&["--failure", "--log-dir", dir.path().to_str().unwrap()]);
    let log = dir.path().join("agent-events.jsonl");
    // What the two documented commands print for the failure path.
    let want_failed = vec![
        json!({"id": 7, "agent": "runner", "task": "t_002"}),
        json!({"id": 9, "agent": "medic", "task": "t_002"}),
        json!({"id": 11, "agent": "medic", "task": "t_002"}),
    ];
    let want_spend = [
        ("critic", 1, 0.02),
        ("medic", 2, 0.3),
        ("runner", 1, 0.01),
        ("scribe", 1, 0.1),
    ];
    let (failed, spend): (Vec<Value>, Value) = if sh("command -v jq").0 == 0 {
        let (code, out, err) = sh(&doc_command("jq-failed", None, Some(dir.path())));
        assert_eq!(code, 0, "{err}");
        let failed = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (code, out, err) = sh(&doc_command("jq-spend", None, Some(dir.path())));
        assert_eq!(code, 0, "{err}");
        (failed, serde_json::from_str(&out).unwrap())
    } else {
        eprintln!("jq is not installed: checking the same results with serde");
        let events = read_log(&log);
        let done: Vec<&Value> = events
            .iter()
            .filter(|e| e["event_type"] == "agent_completed")
            .collect();
        let failed = done
            .iter()
            .filter(|e| e["payload"]["status"] == "failed")
            .map(|e| json!({"id": e["id"], "agent": e["payload"]["agent"], "task": e["payload"]["task_id"]}))
            .collect();
        let mut by_agent: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
        for e in done {
            let a = by_agent
                .entry(e["payload"]["agent"].as_str().unwrap().to_string())
                .or_default();
            a.0 += 1;
            a.1 += e["payload"]["cost_usd"].as_f64().unwrap();
        }
        let spend = by_agent
            .into_iter()
            .map(|(agent, (runs, cost))| json!({"agent": agent, "runs": runs, "cost_usd": cost}))
            .collect();
        (failed, spend)
    };
    assert_eq!(failed, want_failed);
    let spend = spend.as_array().unwrap();
    assert_eq!(spend.len(), want_spend.len());
    for (got, (agent, runs, cost)) in spend.iter().zip(want_spend) {
        assert_eq!(got["agent"], agent);
        assert_eq!(got["runs"], runs);
        assert_close(&got["cost_usd"], cost, agent);
    }
}

// ------------------------------------------------------------ replay

#[test]
fn replay_sends_in_order_and_twice_counts_once() {
    let src = tempfile::tempdir().unwrap();
    demo_json(&["--failure", "--log-dir", src.path().to_str().unwrap()]);
    let original = read_log(&src.path().join("agent-events.jsonl"));
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let cmd = doc_command("replay", Some(&hub.url("")), Some(src.path()));
    let (code, out, err) = sh(&cmd);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!(
            "replayed 13 events to {}: 13 new, 0 already there, 0 rejected, 0 undelivered, 0 lines skipped",
            hub.url("")
        )
    );
    let events = all_events(&hub, &[]);
    assert_eq!(events.len(), 13);
    for (got, orig) in events.iter().zip(&original) {
        assert_eq!(got["event_type"], orig["event_type"]);
        assert_eq!(got["timestamp"], orig["timestamp"], "original timestamps");
        assert_eq!(got["payload"], orig["payload"]);
        assert_eq!(got["event_id"], format!("replay:{}", orig["id"]));
    }
    // Twice: nothing new, also from a gzipped copy.
    let (code, out, _) = sh(&cmd);
    assert_eq!(code, 0);
    assert!(out.contains(": 0 new, 13 already there,"), "{out}");
    let gz = src.path().join("copy.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(
        &mut enc,
        &std::fs::read(src.path().join("agent-events.jsonl")).unwrap(),
    )
    .unwrap();
    enc.finish().unwrap();
    let (code, out, err) = run_bin(
        &["replay", gz.to_str().unwrap(), "--hub", &hub.url("")],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": 0 new, 13 already there,"), "{out}");
    assert_eq!(all_events(&hub, &[]).len(), 13);
}

#[test]
fn replay_speed_1_keeps_the_gaps() {
    let src = tempfile::tempdir().unwrap();
    let log = src.path().join("three.jsonl");
    let lines: String = (0..3)
        .map(|i| {
            format!(
                "{}\n",
                json!({"id": i + 1, "event_type": "note", "timestamp": 1_700_000_000.0 + 0.6 * i as f64,
                       "payload": {"n": i}})
            )
        })
        .collect();
    std::fs::write(&log, lines).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", log.to_str().unwrap(), "--hub"];
        let url = hub.url("");
        args.push(&url);
        args.extend_from_slice(extra);
        let t = Instant::now();
        let (code, out, err) = run_bin(&args, None);
        assert_eq!(code, 0, "{err}");
        (t.elapsed(), out)
    };
    let (took, out) = replay(&["--speed", "1"]);
    assert!(took >= Duration::from_millis(1200), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(out.contains("3 new"), "{out}");
    let (took, out) = replay(&["--speed", "1", "--max-pause", "0.1"]);
    assert!(took < Duration::from_millis(1200), "{took:?}");
    assert!(out.contains("3 already there"), "{out}");
    let (took, _) = replay(&[]);
    assert!(took < Duration::from_millis(1200), "{took:?}");
    let events = all_events(&hub, &[]);
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["timestamp"], 1_700_000_001.2);
}

#[test]
fn replay_reads_the_original_format_and_names_bad_lines() {
    let src = tempfile::tempdir().unwrap();
    let log = src.path().join("old.jsonl");
    // The original module's lines (no id), a broken line, an invalid event.
    let text = [
        r#"{"event_type":"task_queued","timestamp":1729012418.123,"payload":{"task_id":"t_001","feature":"user_authentication","est_cost":0.35,"timestamp":1729012418.123}}"#,
        r#"{not json"#,
        r#"{"event_type":"agent_started","timestamp":1729012419.234,"payload":{"agent":"scribe","task_id":"t_001","model":"claude-sonnet-4.5","tools":["read","write","edit","grep"]}}"#,
        r#"{"event_type":"agent_completed","timestamp":1729012420.0,"payload":{"agent":"scribe"}}"#,
    ]
    .join("\n")
        + "\n";
    std::fs::write(&log, text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let (code, out, err) = run_bin(
        &["replay", log.to_str().unwrap(), "--hub", &hub.url("")],
        None,
    );
    assert_eq!(code, 1, "not everything reached the hub");
    assert!(
        err.contains("old.jsonl:2: skipped: malformed JSON"),
        "{err}"
    );
    assert!(
        out.contains("replayed 3 events") && out.contains("2 new") && out.contains("1 rejected"),
        "{out}"
    );
    assert!(out.contains("1 line skipped"), "{out}");
    let events = all_events(&hub, &[]);
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["replay:old.jsonl:1", "replay:old.jsonl:3"]);
    assert_eq!(events[0]["timestamp"], 1729012418.123);
}

// ------------------------------------------------------------ examples

#[allow(dead_code)]
#[path = "../examples/rust_agent.rs"]
mod rust_agent;

#[test]
fn example_rust_agent_reaches_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--token", "t0k"]);
    let auth = [("Authorization", "Bearer t0k")];
    // The example's own code, compiled into this test.
    let summary = rust_agent::run(&hub.url(""), Some("t0k")).unwrap();
    assert_eq!(summary.emitted, 9);
    assert_eq!((summary.stats.sent, summary.stats.rejected), (9, 0));
    assert_eq!(summary.metrics["window"]["samples"]["validations"], 1);
    assert_eq!(summary.metrics["validation_pass_rate"], 1.0);
    let events = all_events(&hub, &auth);
    let mine: Vec<&str> = events
        .iter()
        .filter(|e| e["payload"]["task_id"] == summary.task_id.as_str())
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        mine,
        [
            "task_queued",
            "agent_started",
            "agent_completed",
            "agent_started",
            "agent_completed",
            "agent_started",
            "agent_completed",
            "agent_started",
            "validation_complete"
        ]
    );
    // The example binary itself, when `cargo test` has built it (it builds
    // examples; `cargo test --test clients` alone does not).
    let exe = std::env::current_exe().unwrap();
    let built = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|d| d.join("examples").join("rust_agent"));
    match built.filter(|p| p.exists()) {
        Some(path) => {
            let out = std::process::Command::new(path)
                .env("AGENTPULSE_HUB_URL", hub.url(""))
                .env("AGENTPULSE_TOKEN", "t0k")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("9 events delivered"), "{stdout}");
            assert!(
                stdout.contains("validation_pass_rate     100.0%"),
                "{stdout}"
            );
        }
        None => eprintln!("examples/rust_agent not built: ran its code in-process only"),
    }
}
