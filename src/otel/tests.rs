//! The mapping on its own: spans, records and points in, events out.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event as SpanEvent;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{json, Value};

use super::*;
use crate::config::PriceConfig;
use crate::schema::Schema;

const T0: u64 = 1_796_032_800_000_000_000;
const TRACE: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];

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

fn i(k: &str, v: i64) -> KeyValue {
    kv(k, V::IntValue(v))
}

fn span(id: u8, parent: u8, name: &str, start_ms: u64, end_ms: u64, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
        parent_span_id: if parent == 0 {
            vec![]
        } else {
            vec![0, 0, 0, 0, 0, 0, 0, parent]
        },
        name: name.into(),
        kind: 1,
        start_time_unix_nano: T0 + start_ms * 1_000_000,
        end_time_unix_nano: T0 + end_ms * 1_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> Decoded<ExportTraceServiceRequest> {
    Decoded::whole(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "travel-bot")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    })
}

fn mapper() -> Mapper {
    Mapper::new(Prices::builtin())
}

/// Every event must pass the built-in schema (with its extension).
fn valid(b: &Batch) {
    let schema = Schema::builtin();
    for e in &b.events {
        schema
            .validate(e)
            .unwrap_or_else(|err| panic!("{}: {err}: {:?}", e.event_type, e.payload));
        assert!(e.event_id.is_some(), "{} has no event_id", e.event_type);
    }
}

fn payload(e: &NewEvent) -> Value {
    Value::Object(e.payload.clone())
}

fn types(b: &Batch) -> Vec<&str> {
    b.events.iter().map(|e| &*e.event_type).collect()
}

fn chat(id: u8, parent: u8, input: i64, output: i64) -> Span {
    span(
        id,
        parent,
        "chat claude-sonnet-4-5",
        10,
        110,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "anthropic"),
            s("gen_ai.request.model", "claude-sonnet-4-5"),
            s("gen_ai.response.model", "claude-sonnet-4-5-20250929"),
            i("gen_ai.usage.input_tokens", input),
            i("gen_ai.usage.output_tokens", output),
        ],
    )
}

fn agent(id: u8, input: i64, output: i64) -> Span {
    let mut a = vec![
        s("gen_ai.operation.name", "invoke_agent"),
        s("gen_ai.agent.name", "planner"),
        s("gen_ai.conversation.id", "conv-7"),
        s("gen_ai.request.model", "claude-sonnet-4-5"),
    ];
    if input > 0 {
        a.push(i("gen_ai.usage.input_tokens", input));
        a.push(i("gen_ai.usage.output_tokens", output));
    }
    span(id, 0, "invoke_agent planner", 0, 2500, a)
}

#[test]
fn an_agent_run_with_a_tool_and_a_model_call() {
    let m = mapper();
    let tool = span(
        3,
        1,
        "execute_tool search",
        200,
        260,
        vec![
            s("gen_ai.operation.name", "execute_tool"),
            s("gen_ai.tool.name", "search_flights"),
            s("gen_ai.tool.call.id", "call_1"),
        ],
    );
    // Children first, as an SDK exports them.
    let b = m.traces(&request(vec![chat(2, 1, 1000, 200), tool, agent(1, 0, 0)]));
    valid(&b);
    assert_eq!(b.items, 3);
    assert!(b.rejected.is_empty() && b.truncated.is_empty());
    assert_eq!(
        types(&b),
        [
            "llm_call",
            "tool_executed",
            "agent_started",
            "agent_completed"
        ]
    );
    let llm = payload(&b.events[0]);
    assert_eq!(llm["task_id"], "conv-7", "the enclosing agent's task");
    assert_eq!(llm["agent"], "planner");
    assert_eq!(llm["model"], "claude-sonnet-4-5");
    assert_eq!(llm["input_tokens"], 1000);
    assert_eq!(llm["cost_source"], "price_table");
    // 1000 × 3 + 200 × 15 per million.
    assert_eq!(llm["cost_usd"], 0.006);
    assert_eq!(llm["duration_ms"], 100.0);
    assert_eq!(
        llm["otel"],
        json!({"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "0000000000000002",
               "parent_span_id": "0000000000000001", "service_name": "travel-bot"})
    );
    assert_eq!(
        b.events[0].event_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e47360000000000000002.l")
    );
    let tool = payload(&b.events[1]);
    assert_eq!(tool["tool"], "search_flights");
    assert_eq!(tool["task_id"], "conv-7");
    assert_eq!(tool["agent"], "planner");
    assert_eq!(tool["status"], "success");
    let start = &b.events[2];
    assert_eq!(start.timestamp, Some(T0 as f64 / 1e9));
    assert_eq!(payload(start)["agent"], "planner");
    let end = payload(&b.events[3]);
    assert_eq!(end["status"], "success");
    assert_eq!(end["duration_ms"], 2500.0);
    assert_eq!(end["cost_usd"], 0.0);
    assert_eq!(end["cost_source"], "none");
    assert_eq!(
        b.events[3].timestamp,
        Some((T0 + 2_500_000_000) as f64 / 1e9)
    );
}

#[test]
fn fallbacks_failed_status_and_the_trace_as_task() {
    let m = mapper();
    let mut a = span(
        1,
        0,
        "invoke_agent",
        0,
        10,
        vec![s("gen_ai.operation.name", "invoke_agent")],
    );
    a.status = Some(Status {
        code: 2,
        message: "boom".into(),
    });
    let t = span(
        2,
        0,
        "execute_tool x",
        0,
        5,
        vec![
            s("gen_ai.operation.name", "execute_tool"),
            s("error.type", "TimeoutError"),
        ],
    );
    let b = m.traces(&request(vec![a, t]));
    valid(&b);
    let end = payload(&b.events[1]);
    assert_eq!(end["agent"], "travel-bot", "service.name");
    assert_eq!(end["task_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(end["model"], "unknown");
    assert_eq!(end["status"], "failed");
    assert_eq!(end["status_message"], "boom");
    let tool = payload(&b.events[2]);
    assert_eq!(tool["tool"], "execute_tool x", "the span name");
    assert_eq!(tool["status"], "failed");
    assert!(tool.get("agent").is_none());
}

#[test]
fn usage_repeated_on_the_agent_span_counts_once() {
    // Shape 1: the model calls report usage and the agent span repeats
    // their sum; the calls carry the cost, whatever the order.
    for order in [[0, 1, 2], [2, 0, 1]] {
        let m = mapper();
        let spans = [
            chat(2, 1, 1000, 200),
            chat(3, 1, 3000, 100),
            agent(1, 4000, 300),
        ];
        let b = m.traces(&request(order.iter().map(|&k| spans[k].clone()).collect()));
        valid(&b);
        let total: f64 = b
            .events
            .iter()
            .filter_map(|e| e.payload.get("cost_usd").and_then(Value::as_f64))
            .sum();
        assert!((total - (0.006 + 0.0105)).abs() < 1e-12, "{total}");
        let end = b
            .events
            .iter()
            .find(|e| &*e.event_type == "agent_completed")
            .unwrap();
        assert_eq!(end.payload["cost_usd"], 0.0);
        assert_eq!(end.payload["cost_counted_in"], "model_calls");
        assert_eq!(end.payload["input_tokens"], 4000, "its tokens are kept");
    }
    // Shape 2: only the agent span reports usage: it carries the cost.
    let m = mapper();
    let b = m.traces(&request(vec![agent(1, 4000, 300)]));
    let end = payload(&b.events[1]);
    assert_eq!(end["cost_usd"], (4000.0 * 3.0 + 300.0 * 15.0) / 1e6);
    assert!(end.get("cost_counted_in").is_none());
    // Across requests, the agent first: the calls after it cost 0.
    let m = mapper();
    let first = m.traces(&request(vec![agent(1, 4000, 300)]));
    let later = m.traces(&request(vec![chat(2, 1, 1000, 200)]));
    assert!(payload(&first.events[1])["cost_usd"].as_f64().unwrap() > 0.0);
    let llm = payload(&later.events[0]);
    assert_eq!(llm["cost_usd"], 0.0);
    assert_eq!(llm["cost_counted_in"], "0000000000000001");
    // An exporter's retry decides the same (and has the same ids).
    let retry = m.traces(&request(vec![chat(2, 1, 1000, 200)]));
    assert_eq!(retry.events[0].payload, later.events[0].payload);
    assert_eq!(retry.events[0].event_id, later.events[0].event_id);
}

#[test]
fn cache_tokens_sender_cost_config_price_and_unpriced() {
    let cfg = PriceConfig {
        model: "my-model".into(),
        aliases: vec![],
        input_per_mtok: 2.0,
        output_per_mtok: 10.0,
        cache_read_per_mtok: Some(0.2),
        cache_write_per_mtok: None,
    };
    let m = Mapper::new(Prices::new(&[cfg]).unwrap());
    let c = |id: u8, model: &str, extra: Vec<KeyValue>| {
        let mut a = vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", model),
            i("gen_ai.usage.input_tokens", 1500),
            i("gen_ai.usage.output_tokens", 500),
        ];
        a.extend(extra);
        span(id, 0, "chat", 0, 1, a)
    };
    let b = m.traces(&request(vec![
        // Input includes the 500 cache reads: 1000 uncached.
        c(
            1,
            "my-model",
            vec![i("gen_ai.usage.cache_read.input_tokens", 500)],
        ),
        c(
            2,
            "my-model",
            vec![kv("gen_ai.usage.cost", V::DoubleValue(0.5))],
        ),
        c(3, "acme-42", vec![]),
    ]));
    valid(&b);
    let p: Vec<Value> = b.events.iter().map(payload).collect();
    assert_eq!(
        p[0]["cost_usd"],
        (1000.0 * 2.0 + 500.0 * 10.0 + 500.0 * 0.2) / 1e6
    );
    assert_eq!(p[0]["cost_source"], "config_price");
    assert_eq!(p[1]["cost_usd"], 0.5);
    assert_eq!(p[1]["cost_source"], "sender");
    assert_eq!(p[2]["cost_usd"], 0.0);
    assert_eq!(p[2]["cost_source"], "unpriced");
    assert_eq!(b.meta[2].unpriced.as_deref(), Some("acme-42"));
    // Counted once the pipeline took it, not before, not for a duplicate.
    assert!(m.counters().unpriced.is_empty());
    m.settle(&b.meta[2].clone(), Some(true));
    m.settle(&b.meta[2].clone(), Some(false));
    assert_eq!(
        m.counters().unpriced.iter().collect::<Vec<_>>(),
        [("acme-42", &1)]
    );
}

#[test]
fn malformed_spans_are_rejected_alone_and_big_ones_cut() {
    let m = mapper();
    let good = chat(1, 0, 10, 10);
    let mut no_trace = chat(2, 0, 1, 1);
    no_trace.trace_id.clear();
    let mut zero_span = chat(3, 0, 1, 1);
    zero_span.span_id = vec![0; 8];
    let backwards = span(4, 0, "late", 100, 50, vec![]);
    let mut unended = span(5, 0, "open", 100, 0, vec![]);
    unended.end_time_unix_nano = 0;
    let mut bad_parent = span(6, 0, "odd", 0, 1, vec![]);
    bad_parent.parent_span_id = vec![1, 2, 3];
    let mut huge: Vec<KeyValue> = (0..10_000).map(|k| i(&format!("attr.{k}"), k)).collect();
    huge.insert(0, s("blob", &"x".repeat(10 * 1024 * 1024)));
    let big = span(7, 0, "big", 0, 1, huge);
    let mut long_name = chat(8, 0, 1, 1);
    long_name.attributes[2] = s("gen_ai.request.model", &"m".repeat(1000));
    let b = m.traces(&request(vec![
        good, no_trace, zero_span, backwards, unended, bad_parent, big, long_name,
    ]));
    valid(&b);
    assert_eq!(b.items, 8);
    let msgs: Vec<&str> = b.rejected.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(b.rejected.len(), 5, "{msgs:?}");
    assert!(
        msgs[0].starts_with("trace_id: expected 16 bytes"),
        "{msgs:?}"
    );
    assert!(msgs[1].starts_with("span_id:"));
    assert!(msgs[2].contains("is before start_time_unix_nano"));
    assert!(msgs[3].starts_with("end_time_unix_nano: missing"));
    assert!(msgs[4].starts_with("parent_span_id:"));
    assert_eq!(
        b.rejected[0].path,
        "resourceSpans[0].scopeSpans[0].spans[1] (\"chat claude-sonnet-4-5\")"
    );
    // The neighbours are kept; the big span is cut, within the payload limit.
    assert_eq!(types(&b), ["llm_call", "otel.span", "llm_call"]);
    let big = &b.events[1];
    assert!(serde_json::to_vec(&big.payload).unwrap().len() < 64 * 1024);
    assert_eq!(
        big.payload["attributes"].as_object().unwrap().len(),
        attrs::MAX_ATTRS
    );
    assert!(big.payload["truncated"]["dropped"].as_u64().unwrap() >= 9_900);
    assert_eq!(
        payload(&b.events[2])["model"].as_str().unwrap().len(),
        attrs::MAX_NAME_BYTES
    );
    assert_eq!(b.truncated.len(), 2);
    let (n, msg) = summary(Signal::Traces, b.items, &b.rejected, &b.truncated, &[]);
    assert_eq!(n, 5);
    assert!(
        msg.starts_with("rejected 5 of 8 spans: resourceSpans[0].scopeSpans[0].spans[1]"),
        "{msg}"
    );
    assert!(msg.contains("kept 2 spans cut to the size bounds"), "{msg}");
}

#[test]
fn evaluation_results_become_validations() {
    let m = mapper();
    let mut a = agent(1, 0, 0);
    let ev = |label: Option<&str>, score: Option<f64>, err: bool| {
        let mut attrs = vec![s("gen_ai.evaluation.name", "relevance")];
        if let Some(l) = label {
            attrs.push(s("gen_ai.evaluation.score.label", l));
        }
        if let Some(x) = score {
            attrs.push(kv("gen_ai.evaluation.score.value", V::DoubleValue(x)));
        }
        if err {
            attrs.push(s("error.type", "judge_timeout"));
        }
        SpanEvent {
            time_unix_nano: T0 + 3_000_000_000,
            name: "gen_ai.evaluation.result".into(),
            attributes: attrs,
            dropped_attributes_count: 0,
        }
    };
    a.events = vec![
        ev(Some("Pass"), Some(0.1), false),
        ev(Some("not_relevant"), Some(0.9), false),
        ev(None, Some(0.5), false),
        ev(None, Some(0.49), false),
        ev(Some("pass"), Some(1.0), true),
        ev(Some("meh"), None, false),
    ];
    let b = m.traces(&request(vec![a]));
    valid(&b);
    let passed: Vec<bool> = b
        .events
        .iter()
        .filter(|e| &*e.event_type == "validation_complete")
        .map(|e| e.payload["result"]["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passed, [true, false, true, false, false, false]);
    let v = payload(&b.events[2]);
    assert_eq!(v["task_id"], "conv-7");
    assert_eq!(v["result"]["name"], "relevance");
    assert_eq!(
        b.events[2].event_id.as_deref().unwrap().rsplit('.').next(),
        Some("v0")
    );
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
fn claude_code_records() {
    let d = decode::logs(&fixture("session.json"), Encoding::Json).unwrap();
    let m = mapper();
    let b = m.logs(&d);
    valid(&b);
    assert!(b.rejected.is_empty());
    assert_eq!(
        types(&b),
        [
            "task_queued",
            "otel.log", // prompt 1
            "agent_started",
            "agent_completed", // api_request
            "otel.log",        // tool_decision
            "tool_executed",
            "agent_started",
            "agent_completed", // api_error
            "agent_started",
            "agent_completed", // the subagent's api_request
            "tool_executed",
            "otel.log", // prompt 2: the session was seen
        ]
    );
    let session = "5f0c8b8e-4a1f-4e3b-9a53-2c1d7e6f9a10";
    for e in &b.events {
        assert_eq!(e.payload["task_id"], session, "{}", e.event_type);
    }
    let q = payload(&b.events[0]);
    assert_eq!(q["feature"], "claude-code");
    assert_eq!(
        b.events[0].event_id.as_deref(),
        Some(&*format!("cc:{session}.q"))
    );
    let start = &b.events[2];
    let done = payload(&b.events[3]);
    assert_eq!(done["agent"], "claude-code");
    assert_eq!(done["cost_usd"], 0.0123);
    assert_eq!(done["cost_source"], "sender");
    assert_eq!(done["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(done["input_tokens"], 1200);
    assert_eq!(done["cache_read_tokens"], 8000);
    assert_eq!(done["cache_creation_tokens"], 500);
    // Started duration_ms before it ended (f64 Unix seconds: µs precision).
    assert!((b.events[3].timestamp.unwrap() - start.timestamp.unwrap() - 4.2).abs() < 1e-6);
    assert_eq!(done["duration_ms"], 4200.0);
    assert_eq!(
        b.events[3].event_id.as_deref(),
        Some(&*format!("cc:{session}:2.e"))
    );
    let tool = payload(&b.events[5]);
    assert_eq!(
        (tool["tool"].as_str(), tool["status"].as_str()),
        (Some("Bash"), Some("success"))
    );
    let err = payload(&b.events[7]);
    assert_eq!(err["status"], "failed");
    assert_eq!(err["status_code"], 529);
    assert_eq!(err["error"], "Overloaded");
    let sub = payload(&b.events[9]);
    assert_eq!(sub["agent"], "Explore");
    assert_eq!(sub["cost_source"], "price_table");
    assert_eq!(sub["cost_usd"], (2000.0 * 1.0 + 400.0 * 5.0) / 1e6);
    let failed_tool = payload(&b.events[10]);
    assert_eq!(failed_tool["status"], "failed");
    assert_eq!(failed_tool["error_type"], "Error:ENOENT");
    let decision = payload(&b.events[4]);
    assert_eq!(decision["name"], "claude_code.tool_decision");
    assert_eq!(decision["attributes"]["decision"], "accept");
    // The session is seen once the pipeline took its task_queued.
    assert_eq!(b.meta[0].session.as_deref(), Some(session));
    let again = m.logs(&d);
    assert_eq!(
        again.events[0].event_type.as_ref(),
        "task_queued",
        "not taken yet"
    );
    m.settle(&b.meta[0].clone(), Some(true));
    let again = m.logs(&d);
    assert_eq!(again.events.len(), b.events.len() - 1);
    // The same records over protobuf map to the same events.
    let bytes = d.request.encode_to_vec();
    let p = decode::logs(&bytes, Encoding::Protobuf).unwrap();
    let m2 = mapper();
    let b2 = m2.logs(&p);
    assert_eq!(b2.events, b.events);
}

#[test]
fn a_bare_event_name_from_claude_code_and_other_records() {
    let req = ExportLogsServiceRequest {
        resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
            resource: Some(Resource {
                attributes: vec![s("service.name", "claude-code")],
                ..Default::default()
            }),
            scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                log_records: vec![
                    opentelemetry_proto::tonic::logs::v1::LogRecord {
                        time_unix_nano: T0,
                        event_name: "tool_result".into(),
                        attributes: vec![
                            s("session.id", "s1"),
                            s("tool_name", "Edit"),
                            s("success", "true"),
                        ],
                        ..Default::default()
                    },
                    opentelemetry_proto::tonic::logs::v1::LogRecord {
                        time_unix_nano: T0,
                        severity_number: 17,
                        body: Some(AnyValue {
                            value: Some(V::StringValue("disk nearly full".into())),
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    let m = mapper();
    let b = m.logs(&Decoded::whole(req));
    valid(&b);
    assert_eq!(types(&b), ["tool_executed", "otel.log"]);
    let log = payload(&b.events[1]);
    assert_eq!(log["name"], "log");
    assert_eq!(log["severity"], "error");
    assert_eq!(log["body"], "disk nearly full");
    assert!(b.events[1].event_id.as_deref().unwrap().starts_with("log:"));
}

#[test]
fn claude_code_metric_points_are_per_model_counters() {
    let d = decode::metrics(&fixture("metrics.json"), Encoding::Json).unwrap();
    let m = mapper();
    let b = m.metrics(&d);
    assert!(b.events.is_empty() && b.rejected.is_empty());
    assert_eq!(b.items, 9);
    let sonnet = *m
        .counters()
        .usage
        .iter()
        .find(|(k, _)| *k == "claude-sonnet-4-5-20250929")
        .unwrap()
        .1;
    assert_eq!(
        (
            sonnet.input_tokens,
            sonnet.output_tokens,
            sonnet.cache_read_tokens,
            sonnet.cache_creation_tokens
        ),
        (1200.0, 350.0, 8000.0, 500.0)
    );
    assert_eq!(sonnet.cost_usd, 0.0123);
    assert_eq!(m.counters().stats.points_used, 8);
    assert_eq!(m.counters().stats.points_ignored, 1, "session.count");
    // A retry of the same points adds nothing.
    m.metrics(&d);
    let sonnet = *m
        .counters()
        .usage
        .iter()
        .find(|(k, _)| *k == "claude-sonnet-4-5-20250929")
        .unwrap()
        .1;
    assert_eq!(sonnet.input_tokens, 1200.0);
    assert_eq!(m.counters().stats.points_skipped, 8);
}

#[test]
fn cumulative_genai_token_points_add_what_they_grew_by() {
    let point = |t: u64, sum: f64, ty: &str, start: u64| {
        json!({"attributes": [{"key": "gen_ai.token.type", "value": {"stringValue": ty}},
                              {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-5"}}],
               "startTimeUnixNano": start.to_string(), "timeUnixNano": t.to_string(),
               "count": "1", "sum": sum})
    };
    let req = |points: Vec<Value>| {
        let body = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "gen_ai.client.token.usage", "histogram": {"aggregationTemporality": 2, "dataPoints": points}},
            {"name": "http.client.duration", "gauge": {"dataPoints": [{"asDouble": 1.0}]}}
        ]}]}]});
        decode::metrics(body.to_string().as_bytes(), Encoding::Json).unwrap()
    };
    let m = mapper();
    m.metrics(&req(vec![point(T0 + 1, 1_000_000.0, "input", T0)]));
    m.metrics(&req(vec![point(T0 + 2, 3_000_000.0, "input", T0)]));
    // A restarted sender: a new start time, counted from 0 again.
    m.metrics(&req(vec![point(T0 + 3, 500_000.0, "input", T0 + 3)]));
    // Bad values are rejected and named.
    let b = m.metrics(&req(vec![point(T0 + 4, -5.0, "output", T0)]));
    assert_eq!(b.rejected.len(), 1);
    assert!(b.rejected[0]
        .message
        .starts_with("value: expected a finite number >= 0"));
    let gpt = *m.counters().usage.iter().next().unwrap().1;
    assert_eq!(gpt.input_tokens, 3_500_000.0);
    // Priced from the table: 1.25 USD per million input tokens.
    assert_eq!(gpt.cost_usd, 3.5 * 1.25);
    assert_eq!(
        m.counters().stats.points_ignored,
        4,
        "one gauge point per request"
    );
}

#[test]
fn otlp_json_by_hand_hex_ids_and_int64_strings() {
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
      "scopeSpans":[{"scope":{"name":"hand"},"spans":[
        {"traceId":"4BF92F3577B34DA6A3CE929D0E0E4736","spanId":"00f067aa0ba902b7","name":"chat",
         "kind":3,"startTimeUnixNano":"1796032800000000000","endTimeUnixNano":"1796032801000000000",
         "attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},
                       {"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o-mini"}},
                       {"key":"gen_ai.usage.input_tokens","value":{"intValue":"1000000"}},
                       {"key":"gen_ai.usage.output_tokens","value":{"intValue":2000000}}],
         "unknownField": true},
        {"traceId":"not hex","spanId":"00f067aa0ba902b8","name":"broken"},
        {"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b9","name":"other",
         "startTimeUnixNano":1796032800000000000,"endTimeUnixNano":1796032800500000000}
      ]}]}]}"#;
    let d = decode::traces(body.as_bytes(), Encoding::Json).unwrap();
    assert_eq!(d.broken.len(), 1);
    let m = mapper();
    let b = m.traces(&d);
    valid(&b);
    assert_eq!(types(&b), ["llm_call", "otel.span"]);
    let llm = payload(&b.events[0]);
    assert_eq!(llm["otel"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        llm["cost_usd"], 1.35,
        "exact: 0.15 + 1.2 summed before dividing"
    );
    assert_eq!(b.rejected.len(), 1);
    assert_eq!(
        b.rejected[0].path,
        "resourceSpans[0].scopeSpans[0].spans[1]"
    );
    assert!(
        b.rejected[0].message.starts_with("undecodable:"),
        "{:?}",
        b.rejected
    );
    let other = payload(&b.events[1]);
    assert_eq!(other["duration_ms"], 500.0);
    assert_eq!(other["scope"], "hand");
}

#[test]
fn protobuf_with_a_non_utf8_string_keeps_the_other_spans() {
    let good = chat(1, 0, 1, 1);
    let mut bad = chat(2, 0, 1, 1);
    bad.attributes.push(s("marker", "MARKERXX"));
    let req = request(vec![good, bad, chat(3, 0, 1, 1)]).request;
    let mut bytes = req.encode_to_vec();
    let at = bytes.windows(8).position(|w| w == b"MARKERXX").unwrap();
    bytes[at] = 0xff; // not UTF-8
    let d = decode::traces(&bytes, Encoding::Protobuf).unwrap();
    let m = mapper();
    let b = m.traces(&d);
    assert_eq!(b.events.len(), 2);
    assert_eq!(b.rejected.len(), 1);
    assert_eq!(b.rejected[0].item, 1);
    assert!(b.rejected[0].message.starts_with("undecodable:"));
    // Garbage is refused whole.
    let e = decode::traces(b"\xff\xff\xff garbage", Encoding::Protobuf).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("the body is not an OTLP traces export request in protobuf"));
    assert!(decode::traces(b"{\"resourceSpans\": [", Encoding::Json).is_err());
    assert!(decode::logs(b"", Encoding::Json).is_err());
    // An empty protobuf request is a valid, empty one.
    assert_eq!(
        decode::traces(b"", Encoding::Protobuf)
            .unwrap()
            .request
            .resource_spans
            .len(),
        0
    );
    // Non-UTF-8 JSON is read with U+FFFD, and said so.
    let d = decode::logs(b"{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"stringValue\":\"a\xffb\"}}]}]}]}", Encoding::Json).unwrap();
    assert_eq!(d.warnings.len(), 1);
}

#[test]
fn responses_in_both_encodings() {
    assert_eq!(
        decode::response(Signal::Traces, Encoding::Json, 0, ""),
        b"{}"
    );
    let j: Value =
        serde_json::from_slice(&decode::response(Signal::Logs, Encoding::Json, 2, "why")).unwrap();
    assert_eq!(
        j,
        json!({"partialSuccess": {"rejectedLogRecords": 2, "errorMessage": "why"}})
    );
    let p = decode::response(Signal::Traces, Encoding::Protobuf, 3, "x");
    let r = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(
        &p[..],
    )
    .unwrap();
    assert_eq!(r.partial_success.unwrap().rejected_spans, 3);
    let st =
        tonic_types::pb::Status::decode(&decode::status(Encoding::Protobuf, 3, "bad")[..]).unwrap();
    assert_eq!((st.code, st.message.as_str()), (3, "bad"));
}
