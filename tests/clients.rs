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
    assert_eq!(ids, (1..=total).collect::<Vec<_>>(), "ids 1..=N, no gap");
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
