//! The contract's Redis bridge: unchanged agents `PUBLISH agent-events`.

mod common;

use std::time::Duration;

use common::{wait_for, ws, Hub, Redis};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn publish(redis: &Redis, msg: &str) -> u64 {
    redis
        .cmd(&["PUBLISH", "agent-events", msg])
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn published_events_are_ingested_and_the_bridge_survives_a_redis_restart() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--redis-url", &redis.url()]);
    let client = ws::connect(&hub.ws_url("/agent-events"), &[]);
    client.next(T);
    // The original's wire format, exactly as its emit_event published it.
    let seed = json!({"event_type":"agent_started","timestamp":1729012419.234,
        "payload":{"agent":"scribe","task_id":"t_001","model":"claude-sonnet-4.5","tools":["read","write"]}});
    wait_for("the bridge to subscribe", T, || {
        (publish(&redis, &seed.to_string()) == 1).then_some(())
    });
    let got = client.next_event(T);
    assert_eq!(got["event_type"], "agent_started");
    assert_eq!(got["timestamp"], 1729012419.234);
    assert_eq!(got["payload"]["agent"], "scribe");

    // Bad messages are rejected alone; the next good one still arrives.
    publish(&redis, "{not json");
    publish(
        &redis,
        &json!({"event_type":"agent_completed","payload":{"agent":"x"}}).to_string(),
    );
    publish(
        &redis,
        &json!({"event_type":"note","payload":{"n":1}}).to_string(),
    );
    assert_eq!(client.next_event(T)["payload"]["n"], 1);

    // Redis restarts: the bridge reconnects on its own.
    let redis = redis.restart();
    wait_for("the bridge to resubscribe", T, || {
        (publish(
            &redis,
            &json!({"event_type":"note","payload":{"n":2}}).to_string(),
        ) == 1)
            .then_some(())
    });
    assert_eq!(client.next_event(T)["payload"]["n"], 2);
    let (_, m) = hub.get_json("/api/metrics");
    assert!(m["hub"]["redis"]["errors"].as_u64().is_some(), "{m}");
    let (_, h) = hub.get_json("/health");
    assert_eq!(h["components"]["redis_bridge"]["status"], "ok", "{h}");
}
