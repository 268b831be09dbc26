//! OpenTelemetry in, end to end: the real binary, the Rust SDK's OTLP
//! exporter, hand-written OTLP/JSON, protobuf from opentelemetry-proto,
//! tonic gRPC clients, Claude Code's records from tests/fixtures.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::{free_port, get_json, wait_for, Hub};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);
const PROTO: &str = "application/x-protobuf";

/// A POST with raw bytes: status, `Retry-After`, body.
fn post(
    url: &str,
    body: &[u8],
    ct: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Vec<u8>) {
    let mut req = ureq::post(url).timeout(Duration::from_secs(30));
    if !ct.is_empty() {
        req = req.set("Content-Type", ct);
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = resp.status();
    let retry = resp.header("Retry-After").map(str::to_owned);
    let mut out = Vec::new();
    resp.into_reader().read_to_end(&mut out).unwrap();
    (status, retry, out)
}

fn kv(k: &str, v: V) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, V::StringValue(v.into()))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A chat span of `model` with usage, in trace `trace`.
fn chat(trace: u8, id: u8, model: &str, input: i64, output: i64) -> Span {
    let t = now_ns() - 5_000_000_000;
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![0, 0, 0, 0, 0, 0, 1, id],
        name: format!("chat {model}"),
        kind: 3,
        start_time_unix_nano: t,
        end_time_unix_nano: t + 800_000_000,
        attributes: vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", model),
            kv("gen_ai.usage.input_tokens", V::IntValue(input)),
            kv("gen_ai.usage.output_tokens", V::IntValue(output)),
            s("gen_ai.agent.name", "booker"),
        ],
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "otlp-test")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// The events in the hub's log.
fn logged(hub: &Hub) -> Vec<Value> {
    std::fs::read_to_string(hub.log_dir.join("agent-events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the log holds `n` events; returns them.
fn wait_logged(hub: &Hub, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} events in the log"), T, || {
        let v = logged(hub);
        (v.len() >= n).then_some(v)
    })
}

/// `/api/metrics` once `ready` holds of it (the metrics sink runs beside
/// the log's).
fn metrics_when(hub: &Hub, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("{path} to be ready"), T, || {
        let (_, m) = hub.get_json(path);
        ready(&m).then_some(m)
    })
}

fn last_id(hub: &Hub) -> u64 {
    hub.get_json("/health").1["last_id"].as_u64().unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/claude-code")
            .join(name),
    )
    .unwrap()
}

#[test]
fn the_rust_sdk_exporter_over_http_protobuf() {
    use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
    use opentelemetry::KeyValue as Kv;
    use opentelemetry_otlp::{Protocol, WithExportConfig};

    common::rustls_provider();
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(hub.url("/v1/traces"))
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        // Batched, as applications run it: the run's spans go in one export.
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("rust-agent")
                .build(),
        )
        .build();
    let tracer = provider.tracer("rust-agent");
    tracer.in_span("invoke_agent scribe", |cx| {
        let agent = cx.span();
        agent.set_attribute(Kv::new("gen_ai.operation.name", "invoke_agent"));
        agent.set_attribute(Kv::new("gen_ai.agent.name", "scribe"));
        agent.set_attribute(Kv::new("gen_ai.request.model", "claude-haiku-4-5"));
        let mut chat = tracer.start("chat claude-haiku-4-5");
        chat.set_attribute(Kv::new("gen_ai.operation.name", "chat"));
        chat.set_attribute(Kv::new("gen_ai.request.model", "claude-haiku-4-5"));
        chat.set_attribute(Kv::new("gen_ai.usage.input_tokens", 10_000));
        chat.set_attribute(Kv::new("gen_ai.usage.output_tokens", 2_000));
        chat.end();
        let mut tool = tracer.start("execute_tool write_file");
        tool.set_attribute(Kv::new("gen_ai.operation.name", "execute_tool"));
        tool.set_attribute(Kv::new("gen_ai.tool.name", "write_file"));
        tool.end();
    });
    provider.shutdown().unwrap();
    let events = wait_logged(&hub, 4);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "llm_call",
            "tool_executed",
            "agent_started",
            "agent_completed"
        ]
    );
    let llm = &events[0]["payload"];
    assert_eq!(llm["agent"], "scribe", "the enclosing agent (same export)");
    assert_eq!(llm["cost_usd"], (10_000.0 * 1.0 + 2_000.0 * 5.0) / 1e6);
    assert_eq!(events[3]["payload"]["otel"]["service_name"], "rust-agent");
    // The KPIs: the agent's cost and its run.
    let m = metrics_when(&hub, "/api/metrics", |m| m["agents"]["scribe"]["runs"] == 1);
    assert_eq!(m["agents"]["scribe"]["cost_usd"], 0.02);
    assert_eq!(m["events_by_type"]["llm_call"], 1);
}

#[test]
fn otlp_json_by_hand_partial_success_and_nothing_stored_from_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let t = now_ns() - 3_000_000_000;
    let body = json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "by-hand"}}]},
    "scopeSpans": [{"scope": {"name": "curl"}, "spans": [
        {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
         "name": "invoke_agent router", "kind": 1,
         "startTimeUnixNano": t.to_string(), "endTimeUnixNano": (t + 1_500_000_000).to_string(),
         "attributes": [
           {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
           {"key": "gen_ai.agent.name", "value": {"stringValue": "router"}},
           {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1000"}},
           {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "100"}},
           {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4.1"}}],
         "status": {"code": 1}},
        {"spanId": "eee19b7ec3c1b175", "name": "no trace",
         "startTimeUnixNano": t.to_string(), "endTimeUnixNano": t.to_string()},
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b176", "name": "backwards",
         "startTimeUnixNano": (t + 10).to_string(), "endTimeUnixNano": t.to_string()},
        {"traceId": "zz", "spanId": "eee19b7ec3c1b177", "name": "bad hex"}
    ]}]}]});
    let (status, _, resp) = post(
        &hub.url("/v1/traces"),
        body.to_string().as_bytes(),
        "application/json",
        &[],
    );
    assert_eq!(status, 200);
    let resp: Value = serde_json::from_slice(&resp).unwrap();
    let p = &resp["partialSuccess"];
    assert_eq!(p["rejectedSpans"], 3, "{resp}");
    let msg = p["errorMessage"].as_str().unwrap();
    assert!(
        msg.starts_with("rejected 3 of 4 spans: resourceSpans[0].scopeSpans[0].spans[1]"),
        "{msg}"
    );
    assert!(msg.contains("trace_id: expected 16 bytes"), "{msg}");
    assert!(
        msg.contains("spans[2] (\"backwards\"): end_time_unix_nano"),
        "{msg}"
    );
    assert!(msg.contains("spans[3]: undecodable"), "{msg}");
    let events = wait_logged(&hub, 2);
    assert_eq!(events[1]["event_type"], "agent_completed");
    let p = &events[1]["payload"];
    assert_eq!(p["otel"]["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(p["cost_usd"], (1000.0 * 2.0 + 100.0 * 8.0) / 1e6);
    assert_eq!(
        events[1]["event_id"],
        "5b8efff798038103d269b633813fc60ceee19b7ec3c1b174.e"
    );
    // A full success answers {} (JSON) or an empty message (protobuf).
    let ok = json!({"resourceSpans": []});
    let (status, _, resp) = post(
        &hub.url("/v1/traces"),
        ok.to_string().as_bytes(),
        "application/json",
        &[],
    );
    assert_eq!((status, resp.as_slice()), (200, &b"{}"[..]));
    let (status, _, resp) = post(&hub.url("/v1/logs"), b"", PROTO, &[]);
    assert_eq!((status, resp.len()), (200, 0));

    // Garbage: 400 with a google.rpc.Status in the request's encoding,
    // nothing stored, the hub up.
    let before = last_id(&hub);
    for (path, body, ct) in [
        (
            "/v1/traces",
            &b"{\"resourceSpans\": [oops"[..],
            "application/json",
        ),
        ("/v1/logs", &b"\x0a\xff\xff\xff\xff\x0f garbage"[..], PROTO),
        ("/v1/metrics", &b"not json"[..], "application/json"),
    ] {
        let (status, _, resp) = post(&hub.url(path), body, ct, &[]);
        assert_eq!(status, 400, "{path}");
        let message = if ct == PROTO {
            let st = tonic_types::pb::Status::decode(resp.as_slice()).unwrap();
            assert_eq!(st.code, 3);
            st.message
        } else {
            let v: Value = serde_json::from_slice(&resp).unwrap();
            assert_eq!(v["code"], 3);
            v["message"].as_str().unwrap().to_owned()
        };
        assert!(message.starts_with("the body is not an OTLP"), "{message}");
    }
    assert_eq!(last_id(&hub), before, "nothing stored");
    assert_eq!(hub.get_json("/health").0, 200);
    // Over the limit: 413.
    let small = tempfile::tempdir().unwrap();
    let hub2 = Hub::start(small.path(), &["--max-body-bytes", "1000"]);
    let big = traces((0..50).map(|i| chat(9, i, "gpt-5", 1, 1)).collect()).encode_to_vec();
    let (status, _, _) = post(&hub2.url("/v1/traces"), &big, PROTO, &[]);
    assert_eq!(status, 413);
}

#[test]
fn protobuf_gzip_and_an_exporter_retry_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let req = traces(vec![
        chat(1, 1, "gpt-5", 1000, 100),
        chat(1, 2, "gpt-5", 2000, 200),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&req.encode_to_vec()).unwrap();
    let body = gz.finish().unwrap();
    let send = || {
        let (status, _, resp) = post(
            &hub.url("/v1/traces"),
            &body,
            PROTO,
            &[("Content-Encoding", "gzip")],
        );
        assert_eq!(status, 200);
        ExportTraceServiceResponse::decode(resp.as_slice()).unwrap()
    };
    assert_eq!(send().partial_success, None);
    wait_logged(&hub, 2);
    // The same body again, as an exporter retries after a lost answer.
    assert_eq!(send().partial_success, None);
    let m = metrics_when(&hub, "/api/metrics", |m| {
        m["events_by_type"]["llm_call"] == 2
    });
    assert_eq!(m["pipeline"]["duplicates"], 2, "{}", m["pipeline"]);
    assert_eq!(m["pipeline"]["accepted"], 2);
    assert_eq!(m["events_by_type"]["llm_call"], 2);
    assert_eq!(logged(&hub).len(), 2);
    let cost = m["agents"]["booker"]["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (3000.0 * 1.25 + 300.0 * 10.0) / 1e6).abs() < 1e-15,
        "{cost}"
    );
}

#[test]
fn only_otlp_content_types_are_read_and_foreign_pages_may_not_post() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let body = traces(vec![chat(2, 1, "gpt-5", 1, 1)]).encode_to_vec();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "",
    ] {
        let (status, _, resp) = post(&hub.url("/v1/traces"), &body, ct, &[]);
        assert_eq!(status, 415, "{ct}");
        let v: Value = serde_json::from_slice(&resp).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("application/x-protobuf or application/json"),
            "{v}"
        );
    }
    let (status, _, _) = post(
        &hub.url("/v1/logs"),
        &body,
        PROTO,
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(status, 403);
    let (status, _, _) = post(
        &hub.url("/v1/traces"),
        &body,
        PROTO,
        &[("Origin", "http://localhost:5173")],
    );
    assert_eq!(status, 200);
    assert_eq!(logged(&hub).len(), 1);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

#[test]
fn the_token_on_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let hub = Hub::start(
        dir.path(),
        &[
            "--ingest-token",
            "w-secret",
            "--read-token",
            "r-secret",
            "--otlp-grpc-port",
            &grpc.to_string(),
        ],
    );
    let body = traces(vec![chat(3, 1, "gpt-5", 1, 1)]).encode_to_vec();
    let url = hub.url("/v1/traces");
    assert_eq!(post(&url, &body, PROTO, &[]).0, 401);
    assert_eq!(
        post(&url, &body, PROTO, &[("Authorization", "Bearer nope")]).0,
        401
    );
    assert_eq!(
        post(&url, &body, PROTO, &[("Authorization", "Bearer r-secret")]).0,
        403
    );
    assert_eq!(
        post(&url, &body, PROTO, &[("Authorization", "Bearer w-secret")]).0,
        200
    );
    runtime().block_on(async {
        let mut c = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap();
        let req = || traces(vec![chat(3, 2, "gpt-5", 1, 1)]);
        let e = c.export(with_token(req(), None)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
        let e = c
            .export(with_token(req(), Some("r-secret")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        let ok = c.export(with_token(req(), Some("w-secret"))).await.unwrap();
        assert_eq!(ok.into_inner().partial_success, None);
    });
    let events = wait_logged(&hub, 2);
    assert_eq!(events[1]["payload"]["otel"]["span_id"], "0000000000000102");
}

#[test]
fn a_configured_price_gives_the_exact_cost_and_unpriced_models_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prices.yaml");
    std::fs::write(
        &cfg,
        "prices:\n  - model: my-model\n    input_per_mtok: 2.0\n    output_per_mtok: 10.0\n    cache_read_per_mtok: 0.2\n",
    )
    .unwrap();
    let out = common::bin()
        .args(["validate-config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The effective prices, and where they come from.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 price over the built-in table"), "{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("my-model"))
        .unwrap();
    assert!(
        row.contains("$2 in, $10 out") && row.contains("prices.yaml"),
        "{row}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("(table)") && l.contains("built-in")),
        "{text}"
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "prices:\n  - {model: x, input_per_mtok: -2, output_per_mtok: 1}\n",
    )
    .unwrap();
    let out = common::bin()
        .args(["validate-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("prices[0].input_per_mtok"), "{err}");

    let logs = dir.path().join("logs");
    let hub = Hub::start(&logs, &["--config", cfg.to_str().unwrap()]);
    let req = traces(vec![
        chat(4, 1, "my-model-2026-01-01", 1000, 500),
        chat(4, 2, "acme-7b", 1000, 500),
        chat(4, 3, "acme-7b", 10, 5),
    ]);
    let (status, _, _) = post(&hub.url("/v1/traces"), &req.encode_to_vec(), PROTO, &[]);
    assert_eq!(status, 200);
    let events = wait_logged(&hub, 3);
    assert_eq!(events[0]["payload"]["cost_usd"], 0.007);
    assert_eq!(events[0]["payload"]["cost_source"], "config_price");
    assert_eq!(events[1]["payload"]["cost_source"], "unpriced");
    let m = hub.get_json("/api/metrics").1;
    assert_eq!(m["otel"]["unpriced_models"], json!({"acme-7b": 2}));
    let text = ureq::get(&hub.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        text.contains("agentpulse_otel_unpriced_total{model=\"acme-7b\"} 2"),
        "{text}"
    );
}

fn logs_request() -> ExportLogsServiceRequest {
    serde_json::from_slice(&fixture("session.json")).unwrap()
}

fn check_claude_code(hub: &Hub) {
    let events = wait_logged(hub, 12);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "task_queued",
            "otel.log",
            "agent_started",
            "agent_completed",
            "otel.log",
            "tool_executed",
            "agent_started",
            "agent_completed",
            "agent_started",
            "agent_completed",
            "tool_executed",
            "otel.log",
        ]
    );
    // The KPIs of that day: both calls' costs, one failed completion.
    let m = metrics_when(
        hub,
        "/api/metrics?bucket=daily&from=2026-11-30&to=2026-11-30",
        |m| m["series"][0]["events"] == 12,
    );
    let day = &m["series"][0];
    assert!(
        (day["total_cost"].as_f64().unwrap() - 0.0163).abs() < 1e-12,
        "{day}"
    );
    assert_eq!(day["events"], 12);
    let totals = hub.get_json("/api/metrics").1;
    assert_eq!(totals["events_by_type"]["agent_completed"], 3);
    assert_eq!(
        totals["agents"].as_object().map(|a| a.len()),
        Some(0),
        "two days old: not in the window"
    );
}

#[test]
fn claude_code_records_through_v1_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let (status, _, resp) = post(
        &hub.url("/v1/logs"),
        &fixture("session.json"),
        "application/json",
        &[],
    );
    assert_eq!((status, resp.as_slice()), (200, &b"{}"[..]));
    check_claude_code(&hub);
    // Its metric points: per-model counters in /api/metrics and /metrics.
    let (status, _, _) = post(
        &hub.url("/v1/metrics"),
        &fixture("metrics.json"),
        "application/json",
        &[],
    );
    assert_eq!(status, 200);
    let m = hub.get_json("/api/metrics").1;
    let sonnet = &m["otel"]["models"]["claude-sonnet-4-5-20250929"];
    assert_eq!(sonnet["input_tokens"], 1200);
    assert_eq!(sonnet["cache_read_tokens"], 8000);
    assert_eq!(sonnet["cost_usd"], 0.0123);
    assert_eq!(m["otel"]["received"]["points_ignored"], 1);
    let text = ureq::get(&hub.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        text.contains(
            "agentpulse_otel_model_tokens{model=\"claude-haiku-4-5-20251001\",type=\"input\"} 2000"
        ),
        "{text}"
    );
}

#[test]
fn claude_code_records_through_v1_logs_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let body = logs_request().encode_to_vec();
    let (status, _, resp) = post(&hub.url("/v1/logs"), &body, PROTO, &[]);
    assert_eq!((status, resp.len()), (200, 0));
    check_claude_code(&hub);
    let metrics: ExportMetricsServiceRequest =
        serde_json::from_slice(&fixture("metrics.json")).unwrap();
    let (status, _, _) = post(
        &hub.url("/v1/metrics"),
        &metrics.encode_to_vec(),
        PROTO,
        &[],
    );
    assert_eq!(status, 200);
    let m = hub.get_json("/api/metrics").1;
    assert_eq!(
        m["otel"]["models"]["claude-haiku-4-5-20251001"]["cost_usd"],
        0.004
    );
}

#[test]
fn claude_code_records_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let hub = Hub::start(dir.path(), &["--otlp-grpc-port", &grpc.to_string()]);
    runtime().block_on(async {
        let mut c = LogsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap()
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let r = c.export(logs_request()).await.unwrap().into_inner();
        assert_eq!(r.partial_success, None);
        // A retry of the whole request: every event a duplicate.
        c.export(logs_request()).await.unwrap();
    });
    check_claude_code(&hub);
    let m = hub.get_json("/api/metrics").1;
    assert_eq!(
        m["pipeline"]["duplicates"], 11,
        "all but the session's task_queued, not re-sent"
    );
    assert_eq!(m["otel"]["requests"]["grpc"], 2);
}

#[test]
fn the_grpc_port_default_taken_is_said_an_explicit_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Hold the default port (or find it held by another process).
    let _holder = std::net::TcpListener::bind("127.0.0.1:4317");
    let mut child = common::bin()
        .args(["serve", "--quiet", "--port", "0", "--log-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(!line.contains("OTLP/gRPC"), "{line}");
    let (_, health) = get_json(&format!("http://{addr}/health"), &[]);
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("otlp grpc: port 4317 is taken"), "{err}");
    assert_eq!(
        err.matches("port 4317 is taken").count(),
        1,
        "one line: {err}"
    );
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["components"]["otlp_grpc"]["status"], "degraded");
    assert!(health["reasons"][0]
        .as_str()
        .unwrap()
        .contains("OTLP over HTTP works"));
    // An explicitly given port that is taken: the hub does not start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = common::bin()
        .args([
            "serve",
            "--quiet",
            "--port",
            "0",
            "--otlp-grpc-port",
            &port,
            "--log-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// A sink that blocks until released: the pipeline backs up behind it.
struct Gate(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl agentpulse::sinks::Sink for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }
    fn write_batch(
        &mut self,
        _: &[agentpulse::event::SharedRecord],
    ) -> Result<(), agentpulse::sinks::SinkError> {
        let (open, cv) = &*self.0;
        let mut o = open.lock().unwrap();
        while !*o {
            o = cv.wait(o).unwrap();
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), agentpulse::sinks::SinkError> {
        Ok(())
    }
}

#[test]
fn a_full_queue_with_policy_drop_answers_429_with_retry_after() {
    use agentpulse::hub::{self, HubConfig};
    let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let builder = agentpulse::Emitter::builder()
        .no_log()
        .quiet()
        .queue_capacity(1)
        .policy(agentpulse::pipeline::QueuePolicy::DropNewest)
        .sink(
            Box::new(Gate(gate.clone())),
            agentpulse::sinks::runner::WhenFull::Block,
        );
    let config = HubConfig {
        port: 0,
        log: None,
        ..HubConfig::default()
    };
    let running = rt
        .block_on(hub::start(config, builder, shutdown.clone()))
        .unwrap();
    let url = format!("http://{}/v1/traces", running.addr);
    // Senders in parallel until one is refused: the gate holds the sink,
    // the sink's channel fills, then the dispatcher, then the queue.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..200u8 {
        let (url, tx) = (url.clone(), tx.clone());
        std::thread::spawn(move || {
            let body = traces(vec![chat(i, 1, "gpt-5", 1, 1)]).encode_to_vec();
            let _ = tx.send(post(&url, &body, PROTO, &[]));
        });
    }
    let refused = wait_for("a 429", Duration::from_secs(60), || {
        rx.try_iter().find(|(status, _, _)| *status == 429)
    });
    assert_eq!(refused.1.as_deref(), Some("1"), "Retry-After");
    let st = tonic_types::pb::Status::decode(refused.2.as_slice()).unwrap();
    assert!(st.message.contains("queue is full"), "{}", st.message);
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    rt.block_on(running.shutdown()).unwrap();
}

#[test]
fn otlp_in_the_api_and_prometheus_documents() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let hub = Hub::start(dir.path(), &["--otlp-grpc-port", &grpc.to_string()]);
    let (_, h) = hub.get_json("/health");
    assert_eq!(
        h["components"]["otlp_grpc"],
        json!({"status": "ok", "addr": format!("127.0.0.1:{grpc}")})
    );
    assert_eq!(h["status"], "ok");
    let mut m = HashMap::new();
    m.insert("otel", hub.get_json("/api/metrics").1["otel"].clone());
    assert_eq!(m["otel"]["prices_date"], "2026-12-02");
    let text = ureq::get(&hub.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(text.contains("agentpulse_otlp_grpc_up 1"), "{text}");
}

/// When the log cannot take what it was given (writing fails and its small
/// buffer must drop lines), OTLP answers 503 with `Retry-After` over HTTP and
/// `UNAVAILABLE` over gRPC, as the OTLP specification asks for a retryable
/// refusal; the exporter's retry, once the log writes again, stores every
/// span once (the event ids come from the span ids).
#[test]
fn a_log_that_cannot_write_answers_503_and_the_retry_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("logs");
    let grpc = free_port();
    let hub = Hub::start(
        &log_dir,
        &[
            "--log-max-pending-bytes",
            "4096",
            "--otlp-grpc-port",
            &grpc.to_string(),
        ],
    );
    let url = hub.url("/v1/traces");
    let first = traces(vec![chat(7, 1, "gpt-5", 1, 1)]).encode_to_vec();
    assert_eq!(post(&url, &first, PROTO, &[]).0, 200);
    wait_logged(&hub, 1);
    // Writing fails: the directory is replaced by a file.
    let moved = dir.path().join("moved");
    std::fs::rename(&log_dir, &moved).unwrap();
    std::fs::write(&log_dir, b"not a directory").unwrap();
    let batch = |trace: u8| traces((1..=100).map(|i| chat(trace, i, "gpt-5", 1, 1)).collect());
    let (status, retry, body) = post(&url, &batch(8).encode_to_vec(), PROTO, &[]);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(retry.as_deref(), Some("1"), "Retry-After");
    let st = tonic_types::pb::Status::decode(body.as_slice()).unwrap();
    assert!(st.message.contains("retry"), "{}", st.message);
    let grpc_refusal = runtime().block_on(async {
        let mut c = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap();
        c.export(batch(9)).await.unwrap_err()
    });
    assert_eq!(
        grpc_refusal.code(),
        tonic::Code::Unavailable,
        "{grpc_refusal}"
    );

    std::fs::remove_file(&log_dir).unwrap();
    std::fs::rename(&moved, &log_dir).unwrap();
    wait_for("the log to be written again", T, || {
        let (_, h) = hub.get_json("/health");
        let c = &h["components"]["sink_jsonl"];
        (c["error"].is_null() && c["unwritten_bytes"] == 0).then_some(())
    });
    // The exporters' retries.
    assert_eq!(post(&url, &batch(8).encode_to_vec(), PROTO, &[]).0, 200);
    runtime().block_on(async {
        let mut c = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap();
        c.export(batch(9)).await.unwrap();
    });
    let events = wait_for("201 spans in the log", T, || {
        let v = logged(&hub);
        let spans = v
            .iter()
            .filter(|e| e["payload"]["otel"]["span_id"].is_string())
            .count();
        (spans >= 201).then_some(v)
    });
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &events {
        if let Some(k) = e["event_id"].as_str() {
            *seen.entry(k.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 201, "every span stored");
    assert!(seen.values().all(|&n| n == 1), "each once: {seen:?}");
}
