//! The task timeline (`GET /api/tasks/{id}`) and answering an escalation
//! (`POST /api/hitl/{task_id}/resolve`, `GET /api/hitl/{task_id}?wait=`),
//! against the real binary over real HTTP and WebSocket, restarts included.

mod common;

use std::time::{Duration, Instant};

use common::{get_json, post_to, ws, Hub};
use serde_json::{json, Value};

const JSON: &str = "application/json";

fn run_demo(hub: &Hub, extra: &[&str]) {
    let url = hub.url("");
    let mut args = vec!["demo", "--speed", "0", "--hub", &url];
    args.extend_from_slice(extra);
    let out = common::bin().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` filler events of no task, posted as NDJSON in one request.
fn filler(hub: &Hub, n: usize) {
    let body: String = (0..n)
        .map(|i| format!("{{\"event_type\":\"note\",\"payload\":{{\"i\":{i}}}}}\n"))
        .collect();
    let (status, v) = hub.post(&body, "application/x-ndjson");
    assert_eq!(status, 200, "{v}");
}

fn escalate(hub: &Hub, task: &str) -> u64 {
    let ev = json!({"event_type": "hitl_escalated", "payload":
        {"task_id": task, "attempts": 2, "last_error": "boom", "priority": "high"}});
    let (status, v) = hub.post(&ev.to_string(), JSON);
    assert_eq!(status, 200, "{v}");
    v["ids"][0].as_u64().unwrap()
}

fn resolve(hub: &Hub, task: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    post_to(
        &hub.url(&format!("/api/hitl/{task}/resolve")),
        body.to_string().as_bytes(),
        JSON,
        headers,
    )
}

fn spans_by_agent(doc: &Value) -> Vec<(String, Value, String)> {
    doc["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["agent"].as_str().unwrap().to_owned(),
                s["duration_ms"].clone(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_success_workflow_has_a_span_per_agent_with_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    run_demo(&hub, &[]);
    let (status, doc) = hub.get_json("/api/tasks/t_001");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["state"], "passed");
    assert_eq!(doc["source"], "index");
    let spans = spans_by_agent(&doc);
    let agents: Vec<&str> = spans.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(agents, ["scribe", "critic", "runner", "gemini"], "{doc}");
    for (agent, duration, _) in &spans {
        assert!(
            duration.as_f64().is_some_and(|d| d > 0.0),
            "{agent}: {duration}"
        );
    }
    // gemini's span is ended by the validation (1 s in the demo).
    assert_eq!(spans[3].1, json!(1000.0));
    assert_eq!(spans[3].2, "passed");
    let totals = &doc["totals"];
    assert_eq!(totals["est_cost"], 0.35);
    assert!(totals["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(doc["events"].as_array().unwrap().len(), 9, "{doc}");
    assert!(doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["payload"]["task_id"] == "t_001"));
}

#[test]
fn the_failure_workflow_shows_the_failed_runner_the_medics_retries_and_the_escalation() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    run_demo(&hub, &["--failure"]);
    let (status, doc) = hub.get_json("/api/tasks/t_002");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["state"], "escalated");
    let spans = doc["spans"].as_array().unwrap();
    let runner = spans.iter().find(|s| s["agent"] == "runner").unwrap();
    assert_eq!(runner["failed"], true);
    let medic: Vec<&Value> = spans.iter().filter(|s| s["agent"] == "medic").collect();
    assert_eq!(medic.len(), 2);
    assert_eq!(medic[1]["retry"], true);
    assert_eq!(medic[1]["attempt"], 2);
    assert_eq!(doc["escalation"]["attempts"], 2.0);
    assert_eq!(doc["hitl"]["escalation"]["priority"], "high");
    assert!(doc["totals"]["retries"].as_u64().unwrap() >= 1);
}

#[test]
fn an_unknown_task_is_a_404_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    filler(&hub, 10);
    let (status, v) = hub.get_json("/api/tasks/nope");
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
}

#[test]
fn a_task_older_than_the_ring_is_read_from_the_log_by_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--ring-capacity", "1000"]);
    run_demo(&hub, &[]);
    filler(&hub, 5000);
    // The ring holds the newest 1000 of 5009: the task's 9 left it.
    let retained = &hub.get_json("/api/metrics").1["hub"]["retained"];
    assert_eq!(retained, 1000);
    let (status, doc) = hub.get_json("/api/tasks/t_001");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["source"], "index");
    assert_eq!(doc["events"].as_array().unwrap().len(), 9);
    assert_eq!(spans_by_agent(&doc).len(), 4);
    // Some in the ring, some in the log: a task that spans both.
    let ev = json!({"event_type": "agent_started",
        "payload": {"agent": "scribe", "task_id": "t_001", "model": "m", "tools": []}});
    assert_eq!(hub.post(&ev.to_string(), JSON).0, 200);
    let doc = hub.get_json("/api/tasks/t_001").1;
    assert_eq!(doc["events"].as_array().unwrap().len(), 10);
    assert_eq!(doc["state"], "running");
}

#[test]
fn a_task_older_than_the_index_is_found_by_a_bounded_scan_that_says_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        &["--ring-capacity", "100", "--task-index-events", "1000"],
    );
    run_demo(&hub, &[]);
    filler(&hub, 3000);
    let (status, doc) = hub.get_json("/api/tasks/t_001");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["source"], "scan");
    assert_eq!(doc["events"].as_array().unwrap().len(), 9);
    assert_eq!(doc["scan"]["complete"], true, "{doc}");
    assert_eq!(doc["scan"]["from"], 1);
    // An unknown task: the scan says what it covered.
    let (status, v) = hub.get_json("/api/tasks/nope");
    assert_eq!(status, 404);
    assert_eq!(v["scan"]["from"], 1, "{v}");
    assert!(v["scan"]["to"].as_u64().unwrap() >= 2000, "{v}");
}

#[test]
fn the_index_is_rebuilt_from_the_log_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path(), &["--ring-capacity", "100"]);
    run_demo(&hub, &[]);
    filler(&hub, 500);
    hub.terminate();
    let hub = Hub::start(dir.path(), &["--ring-capacity", "100"]);
    let (status, doc) = hub.get_json("/api/tasks/t_001");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["source"], "index");
    assert_eq!(doc["events"].as_array().unwrap().len(), 9);
}

#[test]
fn resolving_reaches_the_stream_and_the_long_poll_and_stays_resolved_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path(), &[]);
    let esc = escalate(&hub, "t_9");
    let stream = ws::connect(&hub.ws_url("/stream?types=hitl_resolved&task_id=t_9"), &[]);
    // The agent's long poll, waiting while the human decides.
    let poll_url = hub.url("/api/hitl/t_9?wait=30");
    let poll = std::thread::spawn(move || {
        let t = Instant::now();
        (get_json(&poll_url, &[]), t.elapsed())
    });
    let (status, open) = hub.get_json("/api/hitl/t_9");
    assert_eq!(status, 200);
    assert_eq!(open["state"], "open");
    assert_eq!(open["escalation"]["id"], esc);

    let note = "restart the browser pool";
    let (status, v) = resolve(
        &hub,
        "t_9",
        &json!({"resolution": "retry", "note": note, "by": "ann"}),
        &[],
    );
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_u64().unwrap();
    let ((status, polled), waited) = poll.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(polled["state"], "resolved", "{polled}");
    assert_eq!(polled["resolution"]["note"], note);
    assert_eq!(polled["resolution"]["by"], "ann");
    assert!(
        waited < Duration::from_secs(25),
        "answered at once: {waited:?}"
    );

    let ev = stream.next_event(Duration::from_secs(10));
    assert_eq!(ev["event_type"], "hitl_resolved");
    assert_eq!(ev["id"], id);
    assert_eq!(ev["payload"]["resolution"], "retry");
    assert_eq!(ev["payload"]["escalation_id"], esc);

    // Answered once: a second answer is a conflict.
    let (status, v) = resolve(&hub, "t_9", &json!({"resolution": "resolved"}), &[]);
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no open escalation"));

    hub.terminate();
    let hub = Hub::start(dir.path(), &[]);
    let (status, after) = hub.get_json("/api/hitl/t_9");
    assert_eq!(status, 200);
    assert_eq!(after["state"], "resolved", "{after}");
    assert_eq!(after["resolution"]["id"], id);
    let (status, _) = resolve(&hub, "t_9", &json!({"resolution": "resolved"}), &[]);
    assert_eq!(status, 409);
    assert_eq!(hub.get_json("/api/hitl").1["open"], json!([]));
    // The timeline shows the answer.
    let doc = hub.get_json("/api/tasks/t_9").1;
    assert_eq!(doc["state"], "retrying");
    assert_eq!(doc["resolution"]["by"], "ann");
}

#[test]
fn a_long_poll_answers_with_the_open_state_after_its_wait() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    escalate(&hub, "t_open");
    let t = Instant::now();
    let (status, v) = hub.get_json("/api/hitl/t_open?wait=0.5");
    assert_eq!(status, 200);
    assert_eq!(v["state"], "open");
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    let (status, v) = hub.get_json("/api/hitl/unknown?wait=1");
    assert_eq!(status, 404, "{v}");
    let (status, v) = hub.get_json("/api/hitl/t_open?wait=soon");
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().starts_with("wait"), "{v}");
}

#[test]
fn resolve_refuses_what_it_must_with_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    // No escalation at all, and a task whose escalation is not open.
    let (status, v) = resolve(&hub, "t_none", &json!({"resolution": "resolved"}), &[]);
    assert_eq!(status, 409, "{v}");
    escalate(&hub, "t_1");
    let url = hub.url("/api/hitl/t_1/resolve");
    let body = json!({"resolution": "resolved"}).to_string();
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, v) = post_to(&url, body.as_bytes(), ct, &[]);
        assert_eq!(status, 415, "{ct}: {v}");
        assert!(v["error"].is_string());
    }
    let (status, v) = resolve(&hub, "t_1", &json!({"resolution": "maybe"}), &[]);
    assert_eq!(status, 422);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .starts_with("hitl_resolved.resolution"));
    let long = "x".repeat(4097);
    let (status, v) = resolve(
        &hub,
        "t_1",
        &json!({"resolution": "retry", "note": long}),
        &[],
    );
    assert_eq!(status, 422);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .starts_with("hitl_resolved.note"));
    let (status, v) = resolve(
        &hub,
        "t_1",
        &json!({"resolution": "retry", "who": "x"}),
        &[],
    );
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("who"), "{v}");
    let (status, v) = post_to(&url, b"{not json", JSON, &[]);
    assert_eq!(status, 400, "{v}");
    // A foreign page may not answer; the hub's own page may.
    let (status, _) = resolve(
        &hub,
        "t_1",
        &json!({"resolution": "abandoned"}),
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(status, 403);
    assert_eq!(hub.get_json("/api/hitl/t_1").1["state"], "open");
    let own = format!("http://{}", hub.addr);
    let (status, v) = resolve(
        &hub,
        "t_1",
        &json!({"resolution": "abandoned", "note": "<img src=x onerror=alert(1)>"}),
        &[("Origin", &own)],
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["resolution"]["note"], "<img src=x onerror=alert(1)>",
        "stored as given"
    );
}

#[test]
fn resolve_needs_a_token_that_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        dir.path(),
        &[
            "--token",
            "adm",
            "--ingest-token",
            "ing",
            "--read-token",
            "rd",
        ],
    );
    let ev = json!({"event_type": "hitl_escalated", "payload":
        {"task_id": "t_tok", "attempts": 1, "last_error": "e", "priority": "normal"}});
    let (status, _) = post_to(
        &hub.url("/events"),
        ev.to_string().as_bytes(),
        JSON,
        &[("Authorization", "Bearer ing")],
    );
    assert_eq!(status, 200);
    let body = json!({"resolution": "resolved"});
    assert_eq!(resolve(&hub, "t_tok", &body, &[]).0, 401);
    let (status, _) = resolve(&hub, "t_tok", &body, &[("Authorization", "Bearer rd")]);
    assert_eq!(status, 403);
    // Reading the state needs a read token.
    assert_eq!(hub.get_json("/api/hitl/t_tok").0, 401);
    let (status, v) = get_json(
        &hub.url("/api/hitl/t_tok"),
        &[("Authorization", "Bearer rd")],
    );
    assert_eq!((status, v["state"].as_str()), (200, Some("open")));
    assert_eq!(hub.get_json("/api/tasks/t_tok").0, 401);
    let (status, v) = resolve(&hub, "t_tok", &body, &[("Authorization", "Bearer ing")]);
    assert_eq!(status, 200, "{v}");
}

#[test]
fn the_rust_client_waits_for_the_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--token", "tk"]);
    let client = agentpulse::Client::builder(&hub.url(""))
        .token("tk")
        .build()
        .unwrap();
    client
        .emit(
            "hitl_escalated",
            json!({"task_id": "t_rc", "attempts": 3, "last_error": "e", "priority": "high"}),
        )
        .unwrap();
    // Still open: `None` after the timeout.
    let t = Instant::now();
    let open = client
        .wait_for_resolution("t_rc", Duration::from_millis(300))
        .unwrap();
    assert_eq!(open, None);
    assert!(t.elapsed() >= Duration::from_millis(250));
    let url = hub.url("/api/hitl/t_rc/resolve");
    // The human answers while the agent waits (or just before: either
    // way the call returns the answer).
    let answer = std::thread::spawn(move || {
        post_to(
            &url,
            br#"{"resolution":"resolved","note":"ok","by":"bob"}"#,
            JSON,
            &[("Authorization", "Bearer tk")],
        )
    });
    let got = client
        .wait_for_resolution("t_rc", Duration::from_secs(20))
        .unwrap()
        .expect("resolved");
    assert_eq!(answer.join().unwrap().0, 200);
    assert_eq!(got.resolution, "resolved");
    assert_eq!((got.note.as_str(), got.by.as_str()), ("ok", "bob"));
    let err = client
        .wait_for_resolution("t_unknown", Duration::from_secs(1))
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}
