//! The in-process emitter against a real log directory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentpulse::emitter::{EmitError, Emitter};
use agentpulse::event::{Event, NewEvent, SharedRecord};
use agentpulse::logfile;
use agentpulse::pipeline::{Outcome, QueuePolicy};
use agentpulse::sinks::runner::WhenFull;
use agentpulse::sinks::{Sink, SinkError};
use serde_json::json;

fn log_events(dir: &std::path::Path) -> Vec<Event> {
    let mut out = Vec::new();
    for f in logfile::log_files(dir, "agent-events.jsonl") {
        logfile::read_events(&f, |e| out.push(e), |e| panic!("bad line {e:?}")).unwrap();
    }
    out
}

fn emitter(dir: &std::path::Path) -> Emitter {
    Emitter::builder().log_dir(dir).quiet().build().unwrap()
}

fn started(dir: &std::path::Path) -> Emitter {
    let e = emitter(dir);
    e.start().unwrap();
    e
}

#[test]
fn ids_continue_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let e = started(dir.path());
    for i in 0..5 {
        e.emit("note", json!({ "i": i })).unwrap();
    }
    e.stop().unwrap();
    let ids: Vec<u64> = log_events(dir.path()).iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);

    let e = emitter(dir.path());
    let report = e.start().unwrap();
    assert_eq!(report.next_id, 6);
    assert_eq!(report.replayed, 5);
    e.emit("note", json!({})).unwrap();
    e.stop().unwrap();
    let ids: Vec<u64> = log_events(dir.path()).iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_retried_event_is_kept_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let e = started(dir.path());
    let ev = || NewEvent::new("note", Default::default()).with_event_id("sdk-1");
    let first = e.ingest_blocking(vec![ev(), ev()]).unwrap();
    assert_eq!(first[0].as_ref().unwrap(), &Outcome::Accepted(1));
    assert_eq!(first[1].as_ref().unwrap(), &Outcome::Duplicate(1));
    e.stop().unwrap();

    let e = started(dir.path());
    let again = e.ingest_blocking(vec![ev()]).unwrap();
    assert_eq!(again[0].as_ref().unwrap(), &Outcome::Duplicate(1));
    assert_eq!(e.stats().duplicates, 1);
    e.stop().unwrap();
    assert_eq!(log_events(dir.path()).len(), 1);
}

#[test]
fn a_full_queue_drops_the_newest_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = Emitter::builder()
        .log_dir(dir.path())
        .quiet()
        .queue_capacity(4)
        .build()
        .unwrap();
    // Not started: nothing drains the queue.
    for i in 0..4 {
        e.emit("note", json!({ "i": i })).unwrap();
    }
    match e.emit("note", json!({ "i": 4 })) {
        Err(EmitError::QueueFull { event_type }) => assert_eq!(event_type, "note"),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(e.stats().dropped, 1);
    e.start().unwrap();
    e.stop().unwrap();
    let kept: Vec<i64> = log_events(dir.path())
        .iter()
        .map(|e| e.payload["i"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, [0, 1, 2, 3]);
    assert_eq!(e.get_metrics().pipeline.dropped, 1);
}

#[test]
fn the_block_policy_waits_for_room() {
    let dir = tempfile::tempdir().unwrap();
    let e = Emitter::builder()
        .log_dir(dir.path())
        .quiet()
        .queue_capacity(1)
        .policy(QueuePolicy::Block)
        .build()
        .unwrap();
    e.emit("note", json!({"i": 0})).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let e2 = e.clone();
    let t = std::thread::spawn(move || {
        let r = e2.emit("note", json!({"i": 1}));
        tx.send(r.is_ok()).unwrap();
    });
    // The queue is full and nothing drains it: the producer must still wait.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    e.start().unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    t.join().unwrap();
    e.stop().unwrap();
    assert_eq!(log_events(dir.path()).len(), 2);
    assert_eq!(e.stats().dropped, 0);
}

#[test]
fn stop_writes_everything_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let e = started(dir.path());
    let mut accepted = 0;
    for i in 0..20_000 {
        if e.emit("note", json!({ "i": i })).is_ok() {
            accepted += 1;
        }
    }
    e.stop().unwrap();
    let written = log_events(dir.path());
    assert_eq!(written.len(), accepted);
    assert_eq!(accepted as u64 + e.stats().dropped, 20_000);
    assert!(matches!(
        e.emit("note", json!({})),
        Err(EmitError::Stopped { .. })
    ));
}

#[test]
fn threads_and_async_tasks_emit_together() {
    let dir = tempfile::tempdir().unwrap();
    let e = Emitter::builder()
        .log_dir(dir.path())
        .quiet()
        .policy(QueuePolicy::Block)
        .build()
        .unwrap();
    e.start().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    e.emit("note", json!({ "t": t, "i": i })).unwrap();
                }
            })
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let e = e.clone();
                tokio::spawn(async move {
                    for i in 0..1000 {
                        let ev = NewEvent::new(
                            "note",
                            json!({ "a": t, "i": i }).as_object().unwrap().clone(),
                        );
                        e.emit_async(ev).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    e.stop().unwrap();
    let ids: Vec<u64> = log_events(dir.path()).iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 8000);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids strictly increasing"
    );
}

#[test]
fn invalid_events_are_refused_at_once_and_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let e = started(dir.path());
    let err = e
        .emit(
            "agent_completed",
            json!({"agent":"scribe","task_id":"t","status":"success","duration_ms":5,"cost_usd":"abc"}),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"agent_completed.cost_usd: expected a finite number >= 0, got "abc""#
    );
    let err = e.emit("note", json!([1, 2])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "note.payload: expected an object, got an array"
    );
    e.emit("note", json!({"ok": true})).unwrap();
    e.stop().unwrap();
    assert_eq!(log_events(dir.path()).len(), 1);
    assert_eq!(e.stats().rejected, 2);
}

#[test]
fn a_torn_last_line_is_moved_aside_and_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let e = started(dir.path());
    for _ in 0..3 {
        e.emit("note", json!({})).unwrap();
    }
    e.stop().unwrap();
    // A crash in the middle of a write leaves half a line.
    let path = dir.path().join("agent-events.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, br#"{"id":4,"event_type":"no"#).unwrap();
    drop(f);

    let e = emitter(dir.path());
    let report = e.start().unwrap();
    let moved = report.torn_line_moved_to.expect("torn line reported");
    assert!(std::fs::read_to_string(moved)
        .unwrap()
        .contains(r#"{"id":4,"event_type":"no"#));
    assert_eq!(report.next_id, 4);
    e.emit("note", json!({"after": true})).unwrap();
    e.stop().unwrap();
    let events = log_events(dir.path());
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(events[3].payload["after"], true);
}

/// A sink that always fails, to show it cannot take the others down.
struct Broken(Arc<AtomicU64>);

impl Sink for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), SinkError> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Err(SinkError::io(
            "writing",
            std::io::Error::other("disk on fire"),
        ))
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Err(SinkError::io(
            "flushing",
            std::io::Error::other("disk on fire"),
        ))
    }
}

#[test]
fn a_failing_sink_is_reported_and_the_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let e = Emitter::builder()
        .log_dir(dir.path())
        .quiet()
        .sink(Box::new(Broken(seen.clone())), WhenFull::Block)
        .build()
        .unwrap();
    e.start().unwrap();
    for _ in 0..100 {
        e.emit("note", json!({})).unwrap();
    }
    assert!(e.flush());
    let broken = e
        .sink_reports()
        .into_iter()
        .find(|s| s.name == "broken")
        .unwrap();
    assert!(broken.errors >= 1);
    assert!(broken.last_error.unwrap().contains("disk on fire"));
    assert_eq!(seen.load(Ordering::Relaxed), 100);
    e.stop().unwrap();
    assert_eq!(log_events(dir.path()).len(), 100);
}

#[test]
fn metrics_follow_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let e = started(dir.path());
    let now = agentpulse::event::now_unix();
    let ev = |ty: &str, dt: f64, p: serde_json::Value| {
        NewEvent::new(ty, p.as_object().unwrap().clone()).with_timestamp(now - 60.0 + dt)
    };
    e.ingest_blocking(vec![
        ev("task_queued", 0.0, json!({"task_id":"t1","feature":"login","est_cost":0.5,"timestamp":now})),
        ev("agent_completed", 2.0, json!({"agent":"critic","task_id":"t1","status":"rejected","duration_ms":10,"cost_usd":0.1})),
        ev("validation_complete", 5.0, json!({"task_id":"t1","result":{"passed":true},"cost":0.2,"duration_ms":10,"screenshots":1})),
    ])
    .unwrap();
    e.record_critic_decision(false).unwrap();
    assert!(e.flush());
    let m = serde_json::to_value(e.get_metrics()).unwrap();
    let w = &m["window"];
    assert_eq!(w["validation_pass_rate"], 1.0);
    assert_eq!(w["critic_rejection_rate"], 0.5);
    assert!((w["cost_per_feature"].as_f64().unwrap() - 0.3).abs() < 1e-9);
    assert!((w["time_to_completion"].as_f64().unwrap() - 5.0).abs() < 1e-9);
    assert_eq!(m["pipeline"]["accepted"], 4);
    e.stop().unwrap();
}

#[test]
fn events_stamped_far_in_the_future_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = started(dir.path());
    let now = agentpulse::event::now_unix();
    let ok = NewEvent::new("note", Default::default()).with_timestamp(now + 3600.0);
    e.emit_event(ok).unwrap();
    let far = NewEvent::new("note", Default::default()).with_timestamp(now + 3.0 * 86_400.0);
    let err = e.emit_event(far).unwrap_err().to_string();
    assert!(err.starts_with("note.timestamp: "), "{err}");
    assert!(err.contains("more than a day ahead"), "{err}");
    e.stop().unwrap();
    assert_eq!(log_events(dir.path()).len(), 1);
}

/// Issue 22 (1), the property: whatever the sequence of batches, disk
/// failures (the log directory replaced by a file) and recoveries, with a
/// buffer small enough to drop lines, the dedup window only ever holds
/// stored ids. Seen from outside: every acknowledged event (accepted or
/// duplicate) is in the log with its `event_id`, and once the log works
/// again a retry of every key leaves each key in the log exactly once.
mod dedup_holds_only_stored_ids {
    use super::*;
    use agentpulse::sinks::jsonl::JsonlConfig;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        /// A batch of keys `k{first}..k{first+n}`.
        Send(u8, u8),
        Break,
        Fix,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, 1u8..40).prop_map(|(a, n)| Op::Send(a, n)),
            1 => Just(Op::Break),
            1 => Just(Op::Fix),
        ]
    }

    fn batch(first: u8, n: u8) -> Vec<NewEvent> {
        (first..first.saturating_add(n).min(80))
            .map(|k| {
                NewEvent::new(
                    "note",
                    json!({"pad": "x".repeat(100)}).as_object().unwrap().clone(),
                )
                .with_event_id(format!("k{k}"))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn acknowledged_means_stored(ops in prop::collection::vec(op(), 1..14)) {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("logs");
            let aside = root.path().join("aside");
            let emitter = Emitter::builder()
                .jsonl(JsonlConfig { dir: dir.clone(), max_pending_bytes: 4096, ..JsonlConfig::default() })
                .quiet()
                .build()
                .unwrap();
            emitter.start().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let mut broken = false;
            let fix = |broken: &mut bool| {
                if *broken {
                    std::fs::remove_file(&dir).unwrap();
                    std::fs::rename(&aside, &dir).unwrap();
                    *broken = false;
                }
            };
            // key -> id of every acknowledged answer
            let mut acked: Vec<(String, u64)> = Vec::new();
            for op in &ops {
                match op {
                    Op::Send(a, n) => {
                        let events = batch(*a, *n);
                        let keys: Vec<String> = events.iter().map(|e| e.event_id.as_deref().unwrap().to_string()).collect();
                        if let Ok(results) = rt.block_on(emitter.ingest(events)) {
                            for (k, r) in keys.into_iter().zip(results) {
                                let id = match r.unwrap() { Outcome::Accepted(id) | Outcome::Duplicate(id) => id };
                                acked.push((k, id));
                            }
                        }
                    }
                    Op::Break if !broken => {
                        std::fs::create_dir_all(&dir).unwrap();
                        std::fs::rename(&dir, &aside).unwrap();
                        std::fs::write(&dir, b"not a directory").unwrap();
                        broken = true;
                    }
                    Op::Fix => fix(&mut broken),
                    Op::Break => {}
                }
            }
            fix(&mut broken);
            // Everything kept is written once the log works again.
            wait_for_written(&emitter);
            // Retry every key: each ends up in the log exactly once.
            for first in (0..80u8).step_by(20) {
                let results = rt.block_on(emitter.ingest(batch(first, 20))).unwrap();
                for (i, r) in results.into_iter().enumerate() {
                    let id = match r.unwrap() { Outcome::Accepted(id) | Outcome::Duplicate(id) => id };
                    acked.push((format!("k{}", first as usize + i), id));
                }
            }
            emitter.stop().unwrap();
            let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
            for e in log_events(&dir) {
                if let Some(k) = &e.event_id {
                    by_key.entry(k.to_string()).or_default().push(e.id);
                }
            }
            for (k, id) in &acked {
                let ids = by_key.get(k).cloned().unwrap_or_default();
                prop_assert!(ids.contains(id), "{k} acknowledged as {id}, log has {ids:?}");
            }
            prop_assert_eq!(by_key.len(), 80);
            for (k, ids) in &by_key {
                prop_assert_eq!(ids.len(), 1, "{} stored {:?}", k, ids);
            }
        }
    }

    fn wait_for_written(emitter: &Emitter) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            emitter.flush();
            let b = emitter.log_backlog().unwrap();
            if b.unwritten() == 0 && !b.failing() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the log did not recover"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A sink that panics at its first batch.
struct Panics;

impl Sink for Panics {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn write_batch(&mut self, _: &[SharedRecord]) -> Result<(), SinkError> {
        panic!("the panicking sink was given a batch");
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[test]
fn stop_fails_naming_a_sink_that_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let e = Emitter::builder()
        .log_dir(dir.path())
        .quiet()
        .sink(Box::new(Panics), WhenFull::Block)
        .build()
        .unwrap();
    e.start().unwrap();
    e.emit("note", json!({"n": 1})).unwrap();
    let err = e.stop().unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, agentpulse::emitter::EmitterError::Panicked(_)),
        "{err:?}"
    );
    assert!(text.contains("sink panics panicked"), "{text}");
    assert!(
        text.contains("the panicking sink was given a batch"),
        "{text}"
    );
    // The other sinks are unaffected: the log has the event.
    assert_eq!(log_events(dir.path()).len(), 1);
    // Stopped all the same: a second stop has nothing more to report.
    e.stop().unwrap();
}

#[test]
fn a_clean_stop_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let e = started(dir.path());
    e.emit("note", json!({"n": 1})).unwrap();
    e.stop().unwrap();
}

#[test]
fn a_start_that_failed_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    // The log's directory cannot be made while a file has its parent's name.
    let blocker = dir.path().join("logs");
    std::fs::write(&blocker, "not a directory").unwrap();
    let e = emitter(&blocker.join("here"));
    e.emit("note", json!({"n": 1})).unwrap();
    let err = e.start().unwrap_err();
    assert!(
        matches!(err, agentpulse::emitter::EmitterError::Log(_)),
        "{err:?}"
    );
    std::fs::remove_file(&blocker).unwrap();
    let report = e.start().unwrap();
    assert_eq!(report.next_id, 1);
    e.emit("note", json!({"n": 2})).unwrap();
    e.stop().unwrap();
    // The event emitted before the failed start waited in the queue.
    let got: Vec<_> = log_events(&blocker.join("here"))
        .iter()
        .map(|ev| ev.payload["n"].clone())
        .collect();
    assert_eq!(got, [json!(1), json!(2)]);
}

#[test]
fn a_hub_whose_sink_panicked_fails_its_shutdown_with_the_message() {
    use agentpulse::hub::{self, HubConfig};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let builder = Emitter::builder()
        .no_log()
        .quiet()
        .sink(Box::new(Panics), WhenFull::Block);
    let config = HubConfig {
        port: 0,
        log: None,
        ..HubConfig::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = rt.block_on(hub::start(config, builder, shutdown)).unwrap();
    running
        .state()
        .emitter
        .emit("note", json!({"n": 1}))
        .unwrap();
    // `agentpulse serve` returns this error from `main`: a non-zero exit
    // with the message.
    let err = rt.block_on(running.shutdown()).unwrap_err();
    assert!(err.to_string().contains("sink panics panicked"), "{err}");
}

/// Durability `batch` (the default): a lone event's ingest is answered only
/// once its line is in the log file, however quickly the next one follows
/// (the one-event fast path must not answer before the write).
#[test]
fn a_lone_event_is_in_the_log_file_when_its_ingest_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let e = started(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..200 {
        let ev = NewEvent::new(
            "note",
            json!({ "i": i }).as_object().cloned().unwrap_or_default(),
        );
        let results = rt.block_on(e.ingest(vec![ev])).unwrap();
        let id = match results.as_slice() {
            [Ok(Outcome::Accepted(id))] => *id,
            other => panic!("expected one accepted event, got {other:?}"),
        };
        // Read straight after the answer, with no flush: the line is there.
        let logged = log_events(dir.path());
        assert_eq!(logged.last().map(|ev| ev.id), Some(id), "event {i}");
        assert_eq!(logged.len(), i + 1);
    }
    e.stop().unwrap();
}
