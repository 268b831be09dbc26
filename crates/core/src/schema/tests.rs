use serde_json::{json, Value};

use super::*;
use crate::config::Config;

fn ev(ty: &str, payload: Value) -> NewEvent {
    NewEvent::new(ty, payload.as_object().cloned().unwrap_or_default())
}

/// One valid payload per declared type of the built-in schema.
fn valid_payloads() -> Vec<(&'static str, Value)> {
    vec![
        (
            "task_queued",
            json!({"task_id":"t_1","feature":"checkout","est_cost":0.45,"timestamp":1729012418.1}),
        ),
        (
            "agent_started",
            json!({"agent":"scribe","task_id":"t_1","model":"claude-sonnet-4.5","tools":["read","write"]}),
        ),
        (
            "agent_completed",
            json!({"agent":"scribe","task_id":"t_1","status":"success","duration_ms":2500,"cost_usd":0.12}),
        ),
        (
            "validation_complete",
            json!({"task_id":"t_1","result":{"test_passed":true},"cost":0.3,"duration_ms":900,"screenshots":3}),
        ),
        (
            "hitl_escalated",
            json!({"task_id":"t_1","attempts":2,"last_error":"timeout","priority":"high"}),
        ),
        (
            "budget_warning",
            json!({"current_spend":8.1,"limit":10,"remaining":1.9}),
        ),
        (
            "budget_exceeded",
            json!({"current_spend":10.2,"limit":10,"tasks_blocked":4}),
        ),
    ]
}

#[test]
fn every_declared_type_accepts_its_valid_payload() {
    let s = Schema::builtin();
    // The contract file's seven, the OpenTelemetry extension's four and
    // the hub's own `hitl_resolved`.
    assert_eq!(s.declared_types().len(), 7 + 4 + 1);
    s.validate(&ev(
        "hitl_resolved",
        json!({"task_id":"t_1","resolution":"retry","note":"","by":"ann"}),
    ))
    .unwrap();
    let e = s
        .validate(&ev("hitl_resolved", json!({"task_id":"t_1","note":""})))
        .unwrap_err();
    assert_eq!(e.field, "resolution");
    for (ty, p) in valid_payloads() {
        s.validate(&ev(ty, p))
            .unwrap_or_else(|e| panic!("{ty}: {e}"));
    }
}

#[test]
fn every_declared_field_is_required() {
    let s = Schema::builtin();
    for (ty, p) in valid_payloads() {
        for field in p.as_object().unwrap().keys() {
            let mut q = p.clone();
            q.as_object_mut().unwrap().remove(field);
            let e = s.validate(&ev(ty, q)).unwrap_err();
            assert_eq!(
                (e.event_type.as_str(), e.field.as_str()),
                (ty, field.as_str())
            );
            assert!(e.message.starts_with("missing"), "{e}");
        }
    }
}

#[test]
fn extra_fields_are_allowed() {
    let s = Schema::builtin();
    let (ty, mut p) = valid_payloads().remove(2);
    p["retry_of"] = json!("t_0");
    s.validate(&ev(ty, p)).unwrap();
}

#[test]
fn wrong_types_are_named_precisely() {
    let s = Schema::builtin();
    // (type, field, bad value, expected message)
    let table: Vec<(&str, &str, Value, &str)> = vec![
        (
            "agent_completed",
            "cost_usd",
            json!("abc"),
            r#"expected a finite number >= 0, got "abc""#,
        ),
        (
            "agent_completed",
            "cost_usd",
            json!(-0.5),
            "expected a finite number >= 0, got -0.5",
        ),
        (
            "agent_completed",
            "cost_usd",
            json!("NaN"),
            r#"expected a finite number >= 0, got "NaN""#,
        ),
        (
            "agent_completed",
            "duration_ms",
            json!(null),
            "expected a finite number >= 0, got null",
        ),
        (
            "agent_completed",
            "agent",
            json!(""),
            r#"expected a non-empty string, got """#,
        ),
        (
            "agent_completed",
            "agent",
            json!(7),
            "expected a non-empty string, got 7",
        ),
        (
            "agent_started",
            "tools",
            json!("read"),
            r#"expected an array of strings, got "read""#,
        ),
        (
            "agent_started",
            "tools",
            json!(["read", 3]),
            "expected an array of strings, item 1 is 3",
        ),
        (
            "validation_complete",
            "result",
            json!(true),
            "expected an object, got true",
        ),
        (
            "validation_complete",
            "screenshots",
            json!(-1),
            "expected an integer >= 0 or an array, got -1",
        ),
        (
            "hitl_escalated",
            "attempts",
            json!(1.5),
            "expected an integer >= 0, got 1.5",
        ),
        (
            "hitl_escalated",
            "last_error",
            json!({"a":1}),
            r#"expected a string, got {"a":1}"#,
        ),
        (
            "budget_warning",
            "remaining",
            json!("x"),
            r#"expected a finite number, got "x""#,
        ),
        ("task_queued", "est_cost", json!(1e308), ""),
    ];
    for (ty, field, bad, want) in table {
        let (_, mut p) = valid_payloads()
            .into_iter()
            .find(|(t, _)| *t == ty)
            .unwrap();
        p[field] = bad.clone();
        let r = s.validate(&ev(ty, p));
        if want.is_empty() {
            r.unwrap_or_else(|e| panic!("{ty}.{field}={bad}: {e}"));
            continue;
        }
        let e = r.unwrap_err();
        assert_eq!(e.to_string(), format!("{ty}.{field}: {want}"));
    }
}

#[test]
fn remaining_may_be_negative_when_overspent() {
    let s = Schema::builtin();
    s.validate(&ev(
        "budget_warning",
        json!({"current_spend":11,"limit":10,"remaining":-1}),
    ))
    .unwrap();
}

#[test]
fn undeclared_types_pass_unless_strict() {
    let mut s = Schema::builtin();
    s.validate(&ev("circuit_breaker_open", json!({"service":"gemini"})))
        .unwrap();
    s.set_strict(true);
    let e = s
        .validate(&ev("circuit_breaker_open", json!({})))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "circuit_breaker_open.event_type: undeclared event type (strict mode is on)"
    );
}

#[test]
fn type_names_follow_the_pattern() {
    let s = Schema::builtin();
    for good in ["a", "x.y-z_1", &"a".repeat(64)] {
        s.validate(&ev(good, json!({})))
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "",
        "A",
        "1abc",
        "a b",
        "a/b",
        "é",
        &"a".repeat(65),
        "agent_Started",
    ] {
        let e = s.validate(&ev(bad, json!({}))).unwrap_err();
        assert_eq!(
            (e.event_type.as_str(), e.field.as_str()),
            ("event", "event_type"),
            "{bad}"
        );
    }
}

#[test]
fn huge_and_deep_payloads_are_refused_not_panicked_on() {
    let s = Schema::builtin();
    let big = "x".repeat(10 * 1024 * 1024);
    let e = s.validate(&ev("note", json!({ "blob": big }))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "note.payload: larger than the 65536-byte limit"
    );

    // 100,000 levels deep: built without recursion, checked without recursion.
    let mut v = json!(1);
    for _ in 0..100_000 {
        v = Value::Array(vec![v]);
    }
    let e = s
        .validate(&ev("note", json!({ "deep": Value::Null })))
        .map(|_| ());
    assert!(e.is_ok());
    let mut p = serde_json::Map::new();
    p.insert("deep".into(), v);
    let mut deep = NewEvent::new("note", p);
    let e = s.validate(&deep).unwrap_err();
    assert_eq!(e.to_string(), "note.payload: nested deeper than 64 levels");
    // Drop iteratively too: serde_json's Drop recurses.
    let mut cur = deep.payload.remove("deep").unwrap();
    while let Value::Array(mut a) = cur {
        cur = a.pop().unwrap_or(Value::Null);
    }
}

#[test]
fn a_payload_just_under_the_limit_passes() {
    let s = Schema::builtin();
    let blob = "x".repeat(65_000);
    s.validate(&ev("note", json!({ "blob": blob }))).unwrap();
}

#[test]
fn envelope_errors_name_the_field() {
    let parse = |v: Value| parse_new_event(v, |s| Arc::from(s));
    let cases: Vec<(Value, &str)> = vec![
        (json!([1]), "event.event: expected a JSON object, got [1]"),
        (json!({"payload":{}}), "event.event_type: missing"),
        (
            json!({"event_type":5}),
            "event.event_type: expected a string, got 5",
        ),
        (
            json!({"event_type":"Bad"}),
            r#"event.event_type: expected a name matching ^[a-z][a-z0-9_.-]{0,63}$, got "Bad""#,
        ),
        (
            json!({"event_type":"x","payload":[1]}),
            "x.payload: expected an object, got [1]",
        ),
        (
            json!({"event_type":"x","timestamp":"now"}),
            r#"x.timestamp: expected Unix seconds as a number, got "now""#,
        ),
        (
            json!({"event_type":"x","timestamp":-1.0}),
            "x.timestamp: expected Unix seconds (a finite number >= 0), got -1",
        ),
        (
            json!({"event_type":"x","timestamp":1729012418123u64}),
            "x.timestamp: expected Unix seconds, got 1729012418123 (milliseconds? divide by 1000)",
        ),
        (
            json!({"event_type":"x","event_id":7}),
            "x.event_id: expected a string, got 7",
        ),
        (
            json!({"event_type":"x","event_id":"k".repeat(129)}),
            "x.event_id: expected a non-empty string of at most 128 bytes, got 129 bytes",
        ),
    ];
    for (v, want) in cases {
        assert_eq!(parse(v).unwrap_err().to_string(), want);
    }
    let ok =
        parse(json!({"event_type":"x","timestamp":1.5,"event_id":"k1","payload":{"a":1},"id":99}))
            .unwrap();
    assert_eq!(ok.timestamp, Some(1.5));
    assert_eq!(ok.event_id.as_deref(), Some("k1"));
    assert_eq!(ok.payload["a"], 1);
}

#[test]
fn bad_json_text_is_an_error_not_a_panic() {
    // The JSON layer refuses these before validation; none may panic.
    let inputs: Vec<Vec<u8>> = vec![
        b"NaN".to_vec(),
        br#"{"event_type":"x","payload":{"cost":NaN}}"#.to_vec(),
        br#"{"event_type":"x","payload":{"cost":1e400}}"#.to_vec(),
        b"\xff\xfe{}".to_vec(),
        format!("{}{}", "[".repeat(200_000), "]".repeat(200_000)).into_bytes(),
    ];
    for input in inputs {
        assert!(serde_json::from_slice::<Value>(&input).is_err());
    }
    // Huge integers parse as floats and are checked as numbers.
    let v: Value = serde_json::from_str(r#"{"event_type":"agent_completed","payload":{"agent":"a","task_id":"t","status":"ok","duration_ms":123456789012345678901234567890,"cost_usd":0}}"#).unwrap();
    let e = parse_new_event(v, |s| Arc::from(s)).unwrap();
    Schema::builtin().validate(&e).unwrap();
}

#[test]
fn explicit_field_kinds_in_the_file() {
    let c = Config::from_yaml(
        "events:\n  - on: deploy\n    emit:\n      - service\n      - replicas: count\n",
        "t.yaml",
    )
    .unwrap();
    let s = Schema::from_config(&c).unwrap();
    s.validate(&ev("deploy", json!({"service":"api","replicas":3})))
        .unwrap();
    let e = s
        .validate(&ev("deploy", json!({"service":"api","replicas":"3"})))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"deploy.replicas: expected an integer >= 0, got "3""#
    );
    let e = Config::from_yaml(
        "events:\n  - on: d\n    emit:\n      - r: widget\n",
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("events[0].emit[0].r: unknown field kind `widget`"),
        "{e}"
    );
}

#[test]
fn declared_types_are_interned() {
    let s = Schema::builtin();
    assert!(Arc::ptr_eq(
        &s.intern("agent_started"),
        &s.intern("agent_started")
    ));
}

#[test]
fn declared_fields_are_found_whatever_order_they_were_inserted_in() {
    // Validation merges the payload's keys with the declared ones, relying
    // on serde_json's sorted map (no `preserve_order`): this guards it.
    let s = Schema::builtin();
    let mut p = serde_json::Map::new();
    for (k, v) in [
        ("zz_extra", json!(1)),
        ("tools", json!([])),
        ("task_id", json!("t")),
        ("model", json!("m")),
        ("agent", json!("a")),
        ("aa_extra", json!(2)),
    ] {
        p.insert(k.into(), v);
    }
    s.validate(&NewEvent::new("agent_started", p.clone()))
        .unwrap();
    p.remove("model");
    let e = s.validate(&NewEvent::new("agent_started", p)).unwrap_err();
    assert_eq!(e.field, "model");
}

#[test]
fn the_otel_extension_is_declared_and_a_file_may_override_it() {
    let s = Schema::builtin();
    for ty in ["llm_call", "tool_executed", "otel.span", "otel.log"] {
        assert!(s.is_declared(ty), "{ty}");
    }
    let e = s
        .validate(&ev(
            "llm_call",
            json!({"task_id": "t", "model": "m", "status": "success",
            "duration_ms": 1, "cost_usd": 0, "input_tokens": -1, "output_tokens": 0}),
        ))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "llm_call.input_tokens: expected an integer >= 0, got -1"
    );
    let e = s
        .validate(&ev(
            "tool_executed",
            json!({"task_id": "t", "status": "success", "duration_ms": 1}),
        ))
        .unwrap_err();
    assert_eq!(e.field, "tool");
    // A file's own declaration of the type wins.
    let c = crate::config::Config::from_yaml(
        "events:\n  - on: llm_call\n    emit: [model]\n",
        "x.yaml",
    )
    .unwrap();
    let s = Schema::from_config(&c).unwrap();
    s.validate(&ev("llm_call", json!({"model": "m"}))).unwrap();
    assert!(s.is_declared("otel.span"));
}
