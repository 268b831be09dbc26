//! The official OpenTelemetry SDK for Python and its OTLP exporters (HTTP
//! protobuf and gRPC, from PyPI through tests/py/venv.sh) sending to a real
//! hub: GenAI agent, tool and inference spans, evaluations, log records and
//! token metrics reach the stream, the log and the KPIs. And the README's
//! "Send OpenTelemetry" examples, run as written.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, python, wait_for, ws, Hub};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn sender(scenario: &str, env: &[(String, String)]) -> Value {
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/otel_send.py"))
        .args(["--scenario", scenario])
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/py/otel_send.py");
    assert!(out.status.success(), "the sender failed");
    serde_json::from_slice(&out.stdout).expect("the sender's JSON line")
}

fn logged(hub: &Hub) -> Vec<Value> {
    std::fs::read_to_string(hub.log_dir.join("agent-events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Stream events until every type of `want` was seen (at least as often).
fn stream_until(client: &ws::Client, want: &[&str]) -> Vec<Value> {
    let mut left: Vec<&str> = want.to_vec();
    let mut got = Vec::new();
    while !left.is_empty() {
        let e = client.next_event(T);
        let ty = e["event_type"].as_str().unwrap().to_owned();
        if let Some(i) = left.iter().position(|t| *t == ty) {
            left.remove(i);
        }
        got.push(e);
    }
    got
}

const GENAI: [&str; 7] = [
    "llm_call",
    "tool_executed",
    "agent_started",
    "agent_completed",
    "validation_complete",
    "validation_complete",
    "otel.log",
];

#[test]
fn the_python_sdk_over_http_protobuf_and_grpc_with_a_token() {
    for protocol in ["http/protobuf", "grpc"] {
        let dir = tempfile::tempdir().unwrap();
        let grpc = free_port();
        let hub = Hub::start(
            dir.path(),
            &[
                "--token",
                "adm",
                "--ingest-token",
                "py-secret",
                "--otlp-grpc-port",
                &grpc.to_string(),
            ],
        );
        let endpoint = if protocol == "grpc" {
            format!("http://127.0.0.1:{grpc}")
        } else {
            hub.url("")
        };
        let stream = ws::connect(&hub.ws_url("/agent-events?token=adm"), &[]);
        let env = |headers: &str| {
            vec![
                ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()),
                ("OTEL_EXPORTER_OTLP_HEADERS".into(), headers.into()),
                ("OTEL_SERVICE_NAME".into(), "travel-bot".into()),
            ]
        };
        // A wrong token: refused, nothing arrives.
        sender("genai", &env("Authorization=Bearer wrong"));
        let sent = sender("genai", &env("Authorization=Bearer py-secret"));
        let trace = sent["trace_id"].as_str().unwrap();
        let events = stream_until(&stream, &GENAI);
        assert_eq!(
            events.len(),
            GENAI.len(),
            "{protocol}: only the second run: {events:?}"
        );
        for e in &events {
            assert_eq!(e["payload"]["otel"]["trace_id"], trace, "{protocol}");
            assert_eq!(e["payload"]["otel"]["service_name"], "travel-bot");
        }
        let llm = events
            .iter()
            .find(|e| e["event_type"] == "llm_call")
            .unwrap();
        assert_eq!(llm["payload"]["agent"], "planner");
        assert_eq!(llm["payload"]["task_id"], "conv-py-1");
        assert_eq!(
            llm["payload"]["cost_usd"], 0.00625,
            "1000 × 1.25 + 500 × 10 per million"
        );
        let tool = events
            .iter()
            .find(|e| e["event_type"] == "tool_executed")
            .unwrap();
        assert_eq!(tool["payload"]["tool"], "search_flights");
        // The log has them, in the same order as the stream.
        let log = wait_for("the log", T, || {
            let l = logged(&hub);
            (l.len() >= GENAI.len()).then_some(l)
        });
        let ids = |v: &[Value]| {
            v.iter()
                .map(|e| e["id"].as_u64().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&log), ids(&events));
        // The KPIs: the agent's run and cost, one evaluation passed of two.
        let (_, m) = common::get_json(&hub.url("/api/metrics"), &[("Authorization", "Bearer adm")]);
        assert_eq!(m["agents"]["planner"]["runs"], 1, "{}", m["agents"]);
        assert_eq!(m["agents"]["planner"]["cost_usd"], 0.00625);
        assert_eq!(m["window"]["validation_pass_rate"], 0.5, "{}", m["window"]);
        // The token metrics: per model.
        let models = wait_for("token points", T, || {
            let (_, m) =
                common::get_json(&hub.url("/api/metrics"), &[("Authorization", "Bearer adm")]);
            let g = m["otel"]["models"]["gpt-5-2025-08-07"].clone();
            (!g.is_null()).then_some(g)
        });
        assert_eq!(models["input_tokens"], 1000, "{protocol}");
        assert_eq!(models["output_tokens"], 500);
        assert_eq!(models["cost_usd"], 0.00625);
    }
}

/// The `sh` block after `heading` in the README, and the first
/// `python` block after it when `python`.
fn readme_block(readme: &str, heading: &str, lang: &str) -> String {
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README: {heading}"));
    let rest = &readme[at..];
    let fence = format!("```{lang}\n");
    let start = rest.find(&fence).unwrap() + fence.len();
    let end = rest[start..].find("```").unwrap();
    rest[start..start + end].to_owned()
}

/// The `export K=V` lines of a shell block, `$AGENTPULSE_TOKEN` expanded
/// and the documented endpoints pointed at the test hub.
fn exports(block: &str, token: &str, http: &str, grpc: u16) -> Vec<(String, String)> {
    block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .map(|kv| {
            let kv = kv.split("  #").next().unwrap().trim();
            let (k, v) = kv.split_once('=').unwrap();
            let v = v
                .trim_matches('"')
                .replace("$AGENTPULSE_TOKEN", token)
                .replace("http://localhost:4317", &format!("http://127.0.0.1:{grpc}"))
                .replace("http://localhost:3010", http);
            (k.to_owned(), v)
        })
        .collect()
}

#[test]
fn the_readme_examples_run_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let hub = Hub::start(
        dir.path(),
        &["--token", "tok", "--otlp-grpc-port", &grpc.to_string()],
    );
    let http = hub.url("").trim_end_matches('/').to_owned();

    // Claude Code's settings: its records (tests/fixtures) go out through
    // the SDK's exporter configured by exactly these variables.
    let cc = readme_block(&readme, "**Claude Code**", "sh");
    assert!(cc.contains("CLAUDE_CODE_ENABLE_TELEMETRY=1") && cc.trim_end().ends_with("claude"));
    let env = exports(&cc, "tok", &http, grpc);
    assert!(env
        .iter()
        .any(|(k, v)| k == "OTEL_EXPORTER_OTLP_PROTOCOL" && v == "grpc"));
    sender("claude", &env);
    let log = wait_for("Claude Code's events", T, || {
        let l = logged(&hub);
        (l.len() >= 12).then_some(l)
    });
    assert_eq!(log[3]["event_type"], "agent_completed");
    assert_eq!(log[3]["payload"]["cost_usd"], 0.0123);
    assert_eq!(
        log[3]["payload"]["task_id"],
        "5f0c8b8e-4a1f-4e3b-9a53-2c1d7e6f9a10"
    );

    // The SDK example: agent.py as written, with its variables.
    let sdk = readme_block(&readme, "**An OpenTelemetry SDK**", "sh");
    let script = readme_block(&readme, "**An OpenTelemetry SDK**", "python");
    let path = dir.path().join("agent.py");
    std::fs::write(&path, script).unwrap();
    let env = exports(&sdk, "tok", &http, grpc);
    let status = Command::new(python())
        .arg(&path)
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .envs(env)
        .status()
        .unwrap();
    assert!(status.success());
    let log = wait_for("the example's events", T, || {
        let l = logged(&hub);
        (l.len() >= 15).then_some(l)
    });
    let types: Vec<&str> = log[12..]
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["llm_call", "agent_started", "agent_completed"]);
    assert_eq!(log[12]["payload"]["cost_usd"], 0.0045, "as the README says");
    assert_eq!(log[14]["payload"]["agent"], "planner");
    assert_eq!(log[14]["payload"]["task_id"], "trip-42");
    assert_eq!(log[14]["payload"]["otel"]["service_name"], "travel-bot");
}
