//! The `agentpulse` binary's offline subcommands.

mod common;

use common::bin;
use serde_json::Value;

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = bin()
        .args(args)
        .env("AGENTPULSE_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["serve", "emit", "validate", "report", "tail", "logs"] {
        let (code, out, _) = run(&[sub, "--help"], None);
        assert_eq!(code, 0, "{sub} --help");
        assert!(out.contains("Usage"), "{sub}: {out}");
    }
    let (code, out, _) = run(&["--help"], None);
    assert_eq!(code, 0);
    assert!(out.contains("serve"));
    let (code, _, err) = run(&["nonsense"], None);
    assert_ne!(code, 0);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

#[test]
fn emit_records_valid_events_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = run(
        &[
            "emit",
            "--log-dir",
            d,
            "agent_started",
            r#"{"agent":"scribe","task_id":"t_001","model":"m","tools":["read"]}"#,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("AGENT_STARTED"),
        "console block printed: {out}"
    );
    assert!(err.contains("recorded event 1"), "{err}");

    // From stdin, and the id continues.
    let (code, _, err) = run(
        &["emit", "--quiet", "--log-dir", d, "note"],
        Some(r#"{"text":"from stdin"}"#),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("recorded event 2"), "{err}");

    let (code, _, err) = run(
        &[
            "emit",
            "--quiet",
            "--log-dir",
            d,
            "agent_completed",
            r#"{"agent":"scribe","task_id":"t","status":"ok","duration_ms":1,"cost_usd":"abc"}"#,
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(
        err.contains(r#"agent_completed.cost_usd: expected a finite number >= 0, got "abc""#),
        "{err}"
    );

    let (code, _, err) = run(
        &["emit", "--quiet", "--log-dir", d, "note", "{not json"],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("not valid JSON"), "{err}");

    let log = std::fs::read_to_string(dir.path().join("agent-events.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2);
}

#[test]
fn validate_lists_every_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"id":1,"event_type":"note","timestamp":1.0,"payload":{}}"#, "\n",
            r#"{"event_type":"task_queued","timestamp":2.0,"payload":{"task_id":"t","feature":"f","est_cost":1,"timestamp":2}}"#, "\n",
            "not json\n",
            r#"{"id":3,"event_type":"agent_completed","timestamp":3.0,"payload":{"agent":"a"}}"#, "\n",
            r#"{"id":2,"event_type":"note","timestamp":4.0,"payload":{}}"#, "\n",
        ),
    )
    .unwrap();
    let (code, out, _) = run(&["validate", path.to_str().unwrap()], None);
    assert_eq!(code, 1);
    let p = path.display();
    assert!(out.contains(&format!("{p}:3: malformed JSON")), "{out}");
    assert!(
        out.contains(&format!("{p}:4: agent_completed.task_id: missing")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{p}:5: note.id: 2 does not follow 3")),
        "{out}"
    );
    assert!(
        out.contains("5 events checked, 2 valid, 3 invalid"),
        "{out}"
    );

    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        "{\"id\":1,\"event_type\":\"note\",\"timestamp\":1.0,\"payload\":{}}\n",
    )
    .unwrap();
    let (code, out, _) = run(&["validate", good.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn report_computes_the_kpis_of_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let t = 1_764_576_000.0; // 2025-12-01T08:00:00Z
    let events = [
        (
            "task_queued",
            t,
            r#"{"task_id":"t1","feature":"login","est_cost":0.5,"timestamp":0}"#,
        ),
        (
            "agent_started",
            t + 1.0,
            r#"{"agent":"scribe","task_id":"t1","model":"m","tools":[]}"#,
        ),
        (
            "agent_completed",
            t + 3.0,
            r#"{"agent":"scribe","task_id":"t1","status":"success","duration_ms":2000,"cost_usd":0.12}"#,
        ),
        (
            "validation_complete",
            t + 8.0,
            r#"{"task_id":"t1","result":{"test_passed":true},"cost":0.3,"duration_ms":10,"screenshots":1}"#,
        ),
    ];
    for (ty, ts, p) in events {
        let (code, _, err) = run(
            &[
                "emit",
                "--quiet",
                "--log-dir",
                d,
                "--timestamp",
                &ts.to_string(),
                ty,
                p,
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
    }
    let log = dir.path().join("agent-events.jsonl");
    let (code, out, err) = run(&["report", "--json", log.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let o = &v["overall"];
    assert_eq!(o["validation_pass_rate"], 1.0);
    assert!(
        (o["cost_per_feature"].as_f64().unwrap() - 0.42).abs() < 1e-9,
        "{o}"
    );
    assert!(
        (o["time_to_completion"].as_f64().unwrap() - 8.0).abs() < 1e-9,
        "{o}"
    );
    assert!(v["agents"]["scribe"].is_object(), "{v}");
    assert!(v["features"]["login"].is_object(), "{v}");
    assert_eq!(v["events"], 4);

    let (code, out, _) = run(&["report", log.to_str().unwrap()], None);
    assert_eq!(code, 0);
    assert!(out.contains("validation_pass_rate"), "{out}");
    assert!(out.contains("scribe"), "{out}");
}

#[test]
fn bench_pipeline_writes_every_event_and_reports_cpu_per_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        &[
            "bench",
            "pipeline",
            "--events",
            "5000",
            "--log-dir",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pipeline: 5000 events") && out.contains("dropped 0"),
        "{out}"
    );
    assert!(out.contains("all threads"), "{out}");
    let log = std::fs::read_to_string(dir.path().join("agent-events.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 5000);
    // The log it leaves reads back through `report`.
    let path = dir.path().join("agent-events.jsonl");
    let (code, out, err) = run(&["report", "--json", path.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["overall"]["samples"]["events"], 5000);
}
