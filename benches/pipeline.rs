//! Criterion benchmarks of the pipeline's hot paths.
//!
//! - `emit`: the caller-side cost of `Emitter::emit_event` (validation,
//!   timestamp, enqueue) with the pipeline running, as wall time and as the
//!   calling thread's CPU time.
//! - `pipeline`: events/s through validation + dispatcher + JSONL log
//!   (durability `batch`) + metrics, no console, ~300-byte events.
//! - `report`: reading a JSONL log back and computing the KPIs (MB/s).
//! - `report`: also the line splitting alone (`LogReader`) and
//!   `recover_last_id` (what a start reads to find the next id).
//! - `parts`: validating one event, serialising one, reading the clock,
//!   the metrics engine on one event and over a mix of 500 open tasks.
//!
//! Run: `cargo bench --bench pipeline`. Figures go in BENCHMARKS.md.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Map, Value};

use agentpulse::emitter::Emitter;

// As in the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use agentpulse::event::{Event, NewEvent, Record};
use agentpulse::logfile;
use agentpulse::metrics::{MetricsConfig, MetricsEngine};
use agentpulse::pipeline::QueuePolicy;
use agentpulse::schema::Schema;
use agentpulse::sinks::jsonl::{Durability, JsonlConfig};

/// A realistic `agent_completed` payload: with the envelope, ~300 bytes.
fn payload(i: u64) -> Map<String, Value> {
    let agent = ["scribe", "critic", "runner", "medic", "gemini"][(i % 5) as usize];
    json!({
        "agent": agent,
        "task_id": format!("t_{:06}", i / 5),
        "status": if i.is_multiple_of(7) { "failed" } else { "success" },
        "duration_ms": 1200 + i % 5000,
        "cost_usd": 0.0123 + (i % 100) as f64 / 1000.0,
        "model": "claude-sonnet-4.5",
        "feature": format!("feature_{}", i % 50),
        "notes": "wrote 3 tests; 2 assertions refined after critic review",
    })
    .as_object()
    .unwrap()
    .clone()
}

fn event(i: u64, ts: f64) -> NewEvent {
    NewEvent::new("agent_completed", payload(i)).with_timestamp(ts)
}

fn bench_emit(c: &mut Criterion) {
    let emitter = Emitter::builder()
        .no_log()
        .quiet()
        .queue_capacity(1 << 22)
        .build()
        .unwrap();
    emitter.start().unwrap();
    let template = payload(1);
    let mut g = c.benchmark_group("emit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("emit_event (caller side)", |b| {
        b.iter_batched(
            || NewEvent::new(emitter.schema().intern("agent_completed"), template.clone()),
            |ev| emitter.emit_event(ev),
            BatchSize::SmallInput,
        )
    });
    // The same calls, timed by the calling thread's CPU clock: the work
    // done on the caller's thread, without the time it spends preempted by
    // the pipeline's own threads (on 2 cores the dispatcher and the metrics
    // sink compete with the caller for the CPU). Events are built in
    // chunks of 128 just before they are emitted, as an agent would build
    // one right before emitting it (so its memory is in the cache); only
    // the emits are timed.
    g.bench_function("emit_event (caller thread CPU time)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(128);
                left -= n;
                let evs: Vec<NewEvent> = (0..n)
                    .map(|_| {
                        NewEvent::new(emitter.schema().intern("agent_completed"), template.clone())
                    })
                    .collect();
                let start = thread_cpu_time();
                for ev in evs {
                    let _ = emitter.emit_event(ev);
                }
                total += thread_cpu_time().saturating_sub(start);
            }
            // Each sample starts with an empty queue: none is dropped.
            assert!(emitter.flush());
            total
        })
    });
    g.finish();
    emitter.stop().unwrap();
    let s = emitter.stats();
    eprintln!("emit: accepted {} dropped {}", s.accepted, s.dropped);
}

/// CPU time consumed by the calling thread so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A started emitter writing its log into `dir`, no console, blocking when
/// full (a benchmark must not drop).
fn logging_emitter(dir: &std::path::Path, durability: Durability) -> Emitter {
    let emitter = Emitter::builder()
        .jsonl(JsonlConfig {
            dir: dir.to_path_buf(),
            durability,
            ..JsonlConfig::default()
        })
        .quiet()
        .policy(QueuePolicy::Block)
        .build()
        .unwrap();
    emitter.start().unwrap();
    emitter
}

fn bench_pipeline(c: &mut Criterion) {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let emitter = logging_emitter(dir.path(), Durability::Batch);
    let ts = agentpulse::event::now_unix();
    let events: Vec<NewEvent> = (0..N).map(|i| event(i, ts + i as f64 * 1e-4)).collect();
    let line = Record::new(Event {
        id: 1,
        event_type: Arc::from("agent_completed"),
        timestamp: ts,
        event_id: None,
        payload: payload(1),
    })
    .line
    .len();
    eprintln!("pipeline: event size {line} bytes");
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(N));
    g.bench_function("validate+jsonl(batch)+metrics, 200k events", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| {
                for ev in evs {
                    emitter.emit_event(ev).unwrap();
                }
                assert!(emitter.flush());
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    emitter.stop().unwrap();
}

fn bench_report(c: &mut Criterion) {
    // A ~100 MB log written through the real sink.
    let dir = tempfile::tempdir().unwrap();
    let emitter = logging_emitter(dir.path(), Durability::None);
    let ts = agentpulse::event::now_unix() - 3600.0;
    for i in 0..330_000u64 {
        emitter.emit_event(event(i, ts + i as f64 * 0.01)).unwrap();
    }
    emitter.stop().unwrap();
    let path = dir.path().join("agent-events.jsonl");
    let bytes = std::fs::metadata(&path).unwrap().len();
    let mut g = c.benchmark_group("report");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("read_events + metrics", |b| {
        b.iter(|| {
            let mut engine = MetricsEngine::new(MetricsConfig::default());
            logfile::read_events(&path, |e| engine.observe(&e), |_| {}).unwrap();
            engine.report()
        })
    });
    g.bench_function(
        "EventLog::read_fields + metrics (what `report` does)",
        |b| {
            b.iter(|| {
                let mut engine = MetricsEngine::new(MetricsConfig::default());
                logfile::EventLog::open(&path)
                    .unwrap()
                    .read_fields(|_, _, f| engine.observe_fields(f), |_| {})
                    .unwrap();
                engine.report()
            })
        },
    );
    g.bench_function("read_events only", |b| {
        b.iter(|| {
            let mut n = 0u64;
            logfile::read_events(&path, |_| n += 1, |_| {}).unwrap();
            n
        })
    });
    // The line splitting alone: the floor under every reader. With memchr
    // 12.1 ms (7.6 GiB/s) against 15.9 ms for the hand-rolled 16-byte
    // search it replaced (issue 16.5; one A/B run, the log in page cache).
    g.bench_function("LogReader lines only", |b| {
        b.iter(|| {
            let mut n = 0u64;
            logfile::LogReader::open(&path)
                .unwrap()
                .for_each_line(|l| {
                    n += l.bytes.len() as u64;
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            n
        })
    });
    // What a start does to find the next id.
    g.bench_function("recover_last_id", |b| {
        b.iter(|| logfile::recover_last_id(dir.path(), "agent-events.jsonl").unwrap())
    });
    g.finish();
}

fn bench_parts(c: &mut Criterion) {
    let schema = Schema::builtin();
    let ev = event(3, 1_764_576_000.0);
    let e = Event {
        id: 42,
        event_type: ev.event_type.clone(),
        timestamp: 1_764_576_000.5,
        event_id: None,
        payload: ev.payload.clone(),
    };
    let mut g = c.benchmark_group("parts");
    g.bench_function("schema.validate", |b| b.iter(|| schema.validate(&ev)));
    g.bench_function("Record::new (serialise once)", |b| {
        b.iter_batched(|| e.clone(), Record::new, BatchSize::SmallInput)
    });
    g.bench_function("clock (event::now_unix)", |b| {
        b.iter(agentpulse::event::now_unix)
    });
    let mut buf = Vec::with_capacity(1024);
    g.bench_function("write_wire (into a reused buffer)", |b| {
        b.iter(|| {
            buf.clear();
            agentpulse::event::write_wire(&e, &mut buf);
            buf.len()
        })
    });
    let mut engine = MetricsEngine::new(MetricsConfig::default());
    let mut i = 0u64;
    g.bench_function("metrics.observe", |b| {
        b.iter_batched(
            || {
                i += 1;
                Event {
                    id: i,
                    event_type: Arc::from("agent_completed"),
                    timestamp: 1_764_576_000.0 + i as f64 * 0.01,
                    event_id: None,
                    payload: payload(i),
                }
            },
            |e| engine.observe(&e),
            BatchSize::SmallInput,
        )
    });
    // The engine over a mix (starts and completions of 500 open tasks,
    // four agents): the tasks and buckets exist, as in a running hub.
    let mut engine = MetricsEngine::new(MetricsConfig::default());
    let mix = observe_mix();
    for e in &mix {
        engine.observe(e);
    }
    g.throughput(Throughput::Elements(mix.len() as u64));
    g.bench_function("metrics.observe (started+completed, 500 tasks)", |b| {
        b.iter(|| {
            for e in &mix {
                engine.observe(e);
            }
        })
    });
    g.finish();
}

/// 20,000 events: each of 10,000 starts followed by its completion, over
/// 500 tasks and four agents, 0.1 s apart.
fn observe_mix() -> Vec<Event> {
    const AGENTS: [&str; 4] = ["scribe", "critic", "runner", "medic"];
    let t = 1_764_633_600.0; // 2026-12-02T00:00:00Z
    let ev = |event_type: &str, ts: f64, payload: Value| Event {
        id: 0,
        event_type: Arc::from(event_type),
        timestamp: ts,
        event_id: None,
        payload: payload.as_object().cloned().unwrap_or_default(),
    };
    let mut events = Vec::new();
    for i in 0..10_000u32 {
        let task = format!("t{}", i % 500);
        let agent = AGENTS[(i % 4) as usize];
        let ts = t + f64::from(i) * 0.1;
        events.push(ev(
            "agent_started",
            ts,
            json!({"agent":agent,"task_id":task,"model":"m","tools":[],"x":1}),
        ));
        events.push(ev(
            "agent_completed",
            ts + 0.05,
            json!({"agent":agent,"task_id":task,"status":"success","duration_ms":50,"cost_usd":0.01}),
        ));
    }
    events
}

criterion_group!(
    benches,
    bench_emit,
    bench_parts,
    bench_pipeline,
    bench_report
);
criterion_main!(benches);
