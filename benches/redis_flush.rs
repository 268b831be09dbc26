//! The Redis flush of one second's worth of events: 100,000 events of mixed
//! types (a realistic workflow over 2,000 tasks, 6 agents, 50 features),
//! turned into bucket increments and applied in one flush (two round trips)
//! against the local Redis at 127.0.0.1:6379 (`AGENTPULSE_BENCH_REDIS` to
//! change). Keys use the prefix `bench:` and are deleted afterwards.
//!
//! Run: `cargo bench --bench redis_flush`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

use agentpulse::event::Event;
use agentpulse::metrics::{BucketSet, Granularity, MetricsConfig, MetricsEngine};
use agentpulse::sinks::redis_metrics::{store, Flush, Keys};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn increments() -> (BucketSet, usize) {
    let mut engine = MetricsEngine::new(MetricsConfig::default());
    let mut set = BucketSet::new();
    let t0 = agentpulse::event::now_unix().floor();
    let agents = ["scribe", "critic", "runner", "medic", "gemini", "router"];
    let n = std::cell::Cell::new(0u64);
    let mut push = |ty: &str, p: serde_json::Value| {
        let id = n.get() + 1;
        n.set(id);
        engine.observe_into(
            &Event {
                id,
                event_type: Arc::from(ty),
                // All in one second, as one flush interval.
                timestamp: t0 + (id % 1000) as f64 / 1000.0,
                event_id: None,
                payload: p.as_object().unwrap().clone(),
            },
            &mut set,
        );
    };
    let mut task = 0u64;
    while n.get() < 100_000 {
        task += 1;
        let id = format!("t{task}");
        push(
            "task_queued",
            json!({"task_id": id, "feature": format!("f{}", task % 50), "est_cost": 0.4}),
        );
        for (k, a) in agents.iter().enumerate() {
            push(
                "agent_started",
                json!({"agent": a, "task_id": id, "model": "m", "tools": []}),
            );
            let status = if (task + k as u64).is_multiple_of(9) {
                "failed"
            } else if *a == "critic" {
                "approved"
            } else {
                "success"
            };
            push(
                "agent_completed",
                json!({"agent": a, "task_id": id, "status": status, "duration_ms": 800, "cost_usd": 0.01}),
            );
        }
        push(
            "validation_complete",
            json!({"task_id": id, "result": {"passed": !task.is_multiple_of(7)}, "cost": 0.2}),
        );
        if task.is_multiple_of(20) {
            push(
                "hitl_escalated",
                json!({"task_id": id, "attempts": 2, "last_error": "x", "priority": "high"}),
            );
        }
    }
    set.clear_granularity(Granularity::Minute);
    (set, n.get() as usize)
}

fn bench(c: &mut Criterion) {
    let url =
        std::env::var("AGENTPULSE_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let con = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).ok()?;
        redis::aio::ConnectionManager::new(client).await.ok()
    });
    let Some(mut con) = con else {
        eprintln!("redis_flush: no Redis at {url}; skipped");
        return;
    };
    let (set, events) = increments();
    let buckets: Vec<_> = set.iter().map(|(g, s, b)| (g, s, b.clone())).collect();
    let fields: usize = buckets
        .iter()
        .map(|(_, _, b)| agentpulse::metrics::raw::to_fields(b).len())
        .sum();
    eprintln!(
        "redis_flush: {events} events -> {} buckets, {fields} hash fields",
        buckets.len()
    );
    let keys = Keys {
        prefix: "bench:".into(),
        ..Keys::default()
    };
    let mut seq = 0u64;
    c.bench_function("redis flush of 100k events' increments", |b| {
        b.iter(|| {
            seq += 1;
            let flush = Flush {
                hub_id: "bench".into(),
                seq,
                buckets: buckets.clone(),
            };
            rt.block_on(store::apply(&mut con, &keys, &flush)).unwrap();
        })
    });
    rt.block_on(async {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("bench:*")
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut con)
                .await
                .unwrap();
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
