//! `agentpulse logs` (issue 19), through the real binary: formats,
//! filters, search, dates across rotated plain and gzipped files, stats on
//! the original's workflows, follow across a rotation, bad lines.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{bin, wait_for};
use serde_json::{json, Value};

/// Runs `agentpulse logs ARGS` with no colour by default; (code, stdout, stderr).
fn logs(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = bin();
    cmd.arg("logs")
        .args(args)
        .env("AGENTPULSE_LOG", "warn")
        .env_remove("AGENTPULSE_LOG_DIR")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 2024-10-15T13:46:40Z.
const T0: f64 = 1_729_000_000.0;

/// One line in the original module's format (no id).
fn original(offset_ms: u64, ty: &str, payload: Value) -> String {
    json!({"event_type": ty, "timestamp": T0 + offset_ms as f64 / 1000.0, "payload": payload})
        .to_string()
}

/// The original example's success workflow (event_streaming_example.py),
/// as its log viewer read it.
fn success() -> Vec<String> {
    let t = "t_001";
    vec![
        original(
            0,
            "task_queued",
            json!({"task_id": t, "feature": "user_authentication", "est_cost": 0.35}),
        ),
        original(
            200,
            "agent_started",
            json!({"agent": "scribe", "task_id": t, "model": "claude-sonnet-4.5"}),
        ),
        original(
            1200,
            "agent_completed",
            json!({"agent": "scribe", "task_id": t, "status": "success", "duration_ms": 1000, "cost_usd": 0.12}),
        ),
        original(
            1400,
            "agent_started",
            json!({"agent": "critic", "task_id": t, "model": "claude-haiku-4.5"}),
        ),
        original(
            1800,
            "agent_completed",
            json!({"agent": "critic", "task_id": t, "status": "approved", "duration_ms": 400, "cost_usd": 0.02}),
        ),
        original(
            2000,
            "agent_started",
            json!({"agent": "runner", "task_id": t, "model": "claude-haiku-4.5"}),
        ),
        original(
            2600,
            "agent_completed",
            json!({"agent": "runner", "task_id": t, "status": "success", "duration_ms": 600, "cost_usd": 0.01}),
        ),
        original(
            2800,
            "agent_started",
            json!({"agent": "gemini", "task_id": t, "model": "gemini-2.5-pro"}),
        ),
        original(
            3800,
            "validation_complete",
            json!({"task_id": t, "result": {"passed": true, "browser_launched": true, "test_executed": true, "test_passed": true}, "cost": 0.08, "duration_ms": 1000, "screenshots": 3}),
        ),
        original(
            4000,
            "budget_warning",
            json!({"current_spend": 8.23, "limit": 10.0, "remaining": 1.77}),
        ),
    ]
}

/// The original example's failure workflow, ten seconds after the success one.
fn failure() -> Vec<String> {
    let t = "t_002";
    let err = "TimeoutError: the Checkout button never appeared";
    let at = |ms: u64| 10_000 + ms;
    vec![
        original(
            at(0),
            "task_queued",
            json!({"task_id": t, "feature": "payment_processing", "est_cost": 0.5}),
        ),
        original(
            at(200),
            "agent_started",
            json!({"agent": "scribe", "task_id": t}),
        ),
        original(
            at(1000),
            "agent_completed",
            json!({"agent": "scribe", "task_id": t, "status": "success", "duration_ms": 800, "cost_usd": 0.10}),
        ),
        original(
            at(1200),
            "agent_started",
            json!({"agent": "critic", "task_id": t}),
        ),
        original(
            at(1600),
            "agent_completed",
            json!({"agent": "critic", "task_id": t, "status": "approved", "duration_ms": 400, "cost_usd": 0.02}),
        ),
        original(
            at(1800),
            "agent_started",
            json!({"agent": "runner", "task_id": t}),
        ),
        original(
            at(2400),
            "agent_completed",
            json!({"agent": "runner", "task_id": t, "status": "failed", "duration_ms": 600, "cost_usd": 0.01, "error": err}),
        ),
        original(
            at(2600),
            "agent_started",
            json!({"agent": "medic", "task_id": t}),
        ),
        original(
            at(3600),
            "agent_completed",
            json!({"agent": "medic", "task_id": t, "status": "failed", "duration_ms": 1000, "cost_usd": 0.15}),
        ),
        original(
            at(3800),
            "agent_started",
            json!({"agent": "medic", "task_id": t}),
        ),
        original(
            at(4800),
            "agent_completed",
            json!({"agent": "medic", "task_id": t, "status": "failed", "duration_ms": 1000, "cost_usd": 0.15}),
        ),
        original(
            at(5000),
            "hitl_escalated",
            json!({"task_id": t, "attempts": 2, "last_error": err, "priority": "high"}),
        ),
        original(
            at(5200),
            "budget_exceeded",
            json!({"current_spend": 10.42, "limit": 10.0, "tasks_blocked": 3}),
        ),
    ]
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn write_gz(path: &Path, lines: &[String]) {
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    for l in lines {
        enc.write_all(l.as_bytes()).unwrap();
        enc.write_all(b"\n").unwrap();
    }
    enc.finish().unwrap();
}

fn stats(args: &[&str]) -> Value {
    let mut all = vec!["--stats", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = logs(&all, &[]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn stats_of_the_original_workflows_equal_the_hand_worked_values() {
    let dir = tempfile::tempdir().unwrap();
    let (s, f) = (
        dir.path().join("success.jsonl"),
        dir.path().join("failure.jsonl"),
    );
    write_lines(&s, &success());
    write_lines(&f, &failure());

    // Success: 10 events, one task, scribe/critic/runner/gemini, cost
    // 0.12 + 0.02 + 0.01 (agents) + 0.08 (validation) = 0.23, the one
    // validation passed, the critic's one decision approved.
    let v = stats(&[s.to_str().unwrap()]);
    assert_eq!(v["events"], 10);
    assert_eq!(
        v["by_type"],
        json!({"task_queued": 1, "agent_started": 4, "agent_completed": 3,
               "validation_complete": 1, "budget_warning": 1})
    );
    assert_eq!(
        (v["tasks"].clone(), v["agents"].clone()),
        (json!(1), json!(4))
    );
    assert!(close(&v["total_cost_usd"], 0.23), "{v}");
    assert!(close(&v["validation_pass_rate"], 1.0), "{v}");
    assert!(close(&v["critic_rejection_rate"], 0.0), "{v}");
    assert!(close(&v["first_timestamp"], T0), "{v}");
    assert!(close(&v["last_timestamp"], T0 + 4.0), "{v}");

    // Failure: 13 events, one task, scribe/critic/runner/medic, cost
    // 0.10 + 0.02 + 0.01 + 0.15 + 0.15 = 0.43, no validation (a rate
    // without data is 0), one critic decision (approved).
    let v = stats(&[f.to_str().unwrap()]);
    assert_eq!(v["events"], 13);
    assert_eq!(
        v["by_type"],
        json!({"task_queued": 1, "agent_started": 5, "agent_completed": 5,
               "hitl_escalated": 1, "budget_exceeded": 1})
    );
    assert_eq!(
        (v["tasks"].clone(), v["agents"].clone()),
        (json!(1), json!(4))
    );
    assert!(close(&v["total_cost_usd"], 0.43), "{v}");
    assert!(close(&v["validation_pass_rate"], 0.0), "{v}");
    assert_eq!(v["validations"], 0);
    assert!(close(&v["critic_rejection_rate"], 0.0), "{v}");
    assert_eq!(v["critic_decisions"], 1);
    assert!(close(&v["first_timestamp"], T0 + 10.0), "{v}");
    assert!(close(&v["last_timestamp"], T0 + 15.2), "{v}");

    // Both, plus one rejection by the critic: 2 tasks, 5 agents, 1 of 3
    // critic decisions rejected.
    let extra = dir.path().join("reject.jsonl");
    write_lines(
        &extra,
        &[original(
            20_000,
            "agent_completed",
            json!({"agent": "critic", "task_id": "t_003", "status": "rejected", "cost_usd": 0.05}),
        )],
    );
    let v = stats(&[
        s.to_str().unwrap(),
        f.to_str().unwrap(),
        extra.to_str().unwrap(),
    ]);
    assert_eq!(v["events"], 24);
    assert_eq!(
        (v["tasks"].clone(), v["agents"].clone()),
        (json!(3), json!(5))
    );
    assert!(close(&v["total_cost_usd"], 0.71), "{v}");
    assert!(close(&v["critic_rejection_rate"], 1.0 / 3.0), "{v}");
    assert!(close(&v["validation_pass_rate"], 1.0), "{v}");

    // The text form says the same.
    let (code, out, err) = logs(&["--stats", s.to_str().unwrap(), f.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("Events: 23 from 2024-10-15T13:46:40.000Z to 2024-10-15T13:46:55.200Z"),
        "{out}"
    );
    for want in [
        "Tasks: 2",
        "Agents: 5",
        "Total cost: $0.6600",
        "Validation pass rate: 100.0% (of 1 validation)",
        "Critic rejection rate: 0.0% (of 2 critic decisions)",
        "  agent_started        9",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
}

/// The two workflows in a log directory's active file.
fn workflow_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut all = success();
    all.extend(failure());
    write_lines(&dir.path().join("agent-events.jsonl"), &all);
    dir
}

fn json_lines(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = logs(&all, &[]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_filter_and_search() {
    let dir = workflow_dir();
    let d = dir.path().to_str().unwrap();
    let count = |extra: &[&str]| {
        let mut a = vec!["--dir", d];
        a.extend_from_slice(extra);
        json_lines(&a).len()
    };
    assert_eq!(count(&[]), 23);
    assert_eq!(count(&["--type", "agent_started"]), 9);
    assert_eq!(count(&["--type", "task_queued,hitl_escalated"]), 3);
    assert_eq!(
        count(&["--type", "task_queued", "--type", "budget_warning"]),
        3
    );
    assert_eq!(count(&["--agent", "medic"]), 4);
    assert_eq!(count(&["--task-id", "t_001"]), 9);
    assert_eq!(count(&["--task-id", "t_001", "--agent", "critic"]), 2);
    assert_eq!(count(&["--status", "failed"]), 3);
    assert_eq!(count(&["--status", "failed", "--agent", "runner"]), 1);
    // Exact matches, as the stream's filter: no prefixes.
    assert_eq!(count(&["--agent", "med"]), 0);
    // Case-insensitive over the whole line: keys, values, nested ones.
    assert_eq!(count(&["--search", "checkout BUTTON"]), 2);
    assert_eq!(count(&["--search", "SCREENSHOTS"]), 1);
    assert_eq!(count(&["--search", "payment_processing"]), 1);
    assert_eq!(count(&["--search", "nothing like this"]), 0);
    assert_eq!(
        count(&["--search", "medic", "--type", "agent_completed"]),
        2
    );
    // --tail: the last N of those that pass.
    let last = json_lines(&["--dir", d, "--tail", "2", "--agent", "medic"]);
    assert_eq!(last.len(), 2);
    assert_eq!(last[0]["event_type"], "agent_started");
    assert_eq!(last[1]["event_type"], "agent_completed");
    assert_eq!(last[1]["timestamp"], json!(T0 + 14.8));
    assert_eq!(count(&["--tail", "0"]), 0);
    assert_eq!(count(&["--tail", "100"]), 23);
    // --stats counts only what passes.
    let v = stats(&["--dir", d, "--agent", "critic"]);
    assert_eq!(v["events"], 4);
    assert_eq!(v["agents"], 1);
}

#[test]
fn json_round_trips_the_wire_lines_and_console_is_the_sinks_format() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.jsonl");
    // agentpulse's lines (ids, event_id, unusual spacing kept as written)
    // and the original's, mixed.
    let text = concat!(
        r#"{"id":1,"event_type":"agent_started","timestamp":1729000418.9,"event_id":"k1","payload":{"agent":"scribe","task_id":"t_001","tools":["read","write"]}}"#,
        "\n",
        r#"{"event_type":"note","timestamp":1729000419.25,"payload":{"text":"ünïcode \"quoted\"","n":1.5e3}}"#,
        "\n",
        r#"{"id":3, "event_type":"task_queued","timestamp":1729000420,"payload":{}}"#,
        "\n",
    );
    std::fs::write(&p, text).unwrap();
    let (code, out, err) = logs(&["--json", p.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, text, "byte for byte");

    let (code, out, _) = logs(&[p.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("[13:53:38] AGENT_STARTED\n  agent: scribe\n  task_id: t_001\n  tools: [\"read\",\"write\"]\n\n"),
        "{out}"
    );
    assert!(out.contains("[13:53:39] NOTE\n"), "{out}");
    assert!(!out.contains('\x1b'), "no colour into a pipe: {out:?}");
}

#[test]
fn colour_only_when_asked_and_never_with_no_color() {
    let dir = workflow_dir();
    let d = dir.path().to_str().unwrap();
    let (_, forced, _) = logs(&["--dir", d], &[("CLICOLOR_FORCE", "1")]);
    assert!(
        forced.contains("\x1b[1m\x1b[34m[13:46:40] TASK_QUEUED"),
        "{forced:?}"
    );
    let (_, piped, _) = logs(&["--dir", d], &[]);
    assert!(!piped.contains('\x1b'));
    let (_, no_color, _) = logs(&["--dir", d], &[("NO_COLOR", "1")]);
    assert!(!no_color.contains('\x1b'));
    assert_eq!(piped, no_color);
    let (_, json, _) = logs(&["--dir", d, "--json"], &[("CLICOLOR_FORCE", "1")]);
    assert!(!json.contains('\x1b'), "--json is the wire lines");
}

#[test]
fn bad_lines_are_named_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent-events.jsonl");
    let mut lines = success();
    lines.insert(2, "not json".into());
    lines.insert(5, r#"{"event_type":"x","payload":{}}"#.into());
    let mut text = lines.join("\n");
    text.push_str("\n{\"event_type\":\"torn"); // a crash mid-write
    std::fs::write(&p, text).unwrap();
    let (code, out, err) = logs(&["--dir", dir.path().to_str().unwrap(), "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 10);
    let shown = p.display().to_string();
    assert!(err.contains(&format!("{shown}:3: malformed JSON")), "{err}");
    assert!(err.contains(&format!("{shown}:6: not an event")), "{err}");
    assert!(
        err.contains(&format!("{shown}:13: torn last line")),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("logs: 10 events from 1 file; 3 bad lines skipped"),
        "{err}"
    );
}

#[test]
fn an_empty_or_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Files that are not this log's are not logs either.
    std::fs::write(dir.path().join("notes.txt"), "hello\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = logs(&["--dir", d], &[]);
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert!(err.contains(&format!("no logs in {d}")), "{err}");
    let missing = dir.path().join("nope");
    let (code, _, err) = logs(&["--dir", missing.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("no log directory"), "{err}");
    // The directory from the environment, as `serve` and `emit` take it.
    let (code, _, err) = logs(&[], &[("AGENTPULSE_LOG_DIR", d)]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("no logs in {d}")), "{err}");
}

/// An event of `day` (October 2024) at `hour`, naming where it was filed.
fn dated(day: u32, hour: u32, note: &str) -> String {
    let ts = chrono::NaiveDate::from_ymd_opt(2024, 10, day)
        .unwrap()
        .and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    json!({"event_type": "note", "timestamp": ts, "payload": {"note": note}}).to_string()
}

/// Three rotated days (gzipped, plain, gzipped) and an active file. Each
/// file also holds a "misfiled" event stamped on another day: it shows
/// only if its file was opened, which tells which files were.
fn three_days() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_gz(
        &d.join("agent-events-2024-10-01.jsonl.gz"),
        &[
            dated(1, 8, "d1"),
            dated(1, 20, "d1"),
            dated(2, 12, "misfiled in d1"),
            "bad line of d1".into(),
        ],
    );
    write_lines(
        &d.join("agent-events-2024-10-02.jsonl"),
        &[
            dated(2, 0, "d2"),
            dated(2, 12, "d2"),
            dated(2, 23, "d2"),
            dated(1, 12, "misfiled in d2"),
        ],
    );
    write_gz(
        &d.join("agent-events-2024-10-03.jsonl.gz"),
        &[dated(3, 6, "d3"), dated(2, 18, "misfiled in d3")],
    );
    write_lines(
        &d.join("agent-events.jsonl"),
        &[dated(4, 1, "d4"), dated(3, 1, "misfiled in active")],
    );
    dir
}

fn notes(args: &[&str]) -> (Vec<String>, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = logs(&all, &[]);
    assert_eq!(code, 0, "{err}");
    let notes = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["payload"]["note"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    (notes, err)
}

#[test]
fn dates_open_only_the_daily_files_that_can_hold_them() {
    let dir = three_days();
    let d = dir.path().to_str().unwrap();
    let (all, err) = notes(&["--dir", d]);
    assert_eq!(all.len(), 11, "{all:?}");
    assert!(
        err.contains("bad line of d1") || err.contains("2024-10-01.jsonl.gz:4"),
        "{err}"
    );

    // One day: only its file (neither d1's nor d3's misfiled event, no
    // bad line of d1).
    let (got, err) = notes(&["--dir", d, "--date", "2024-10-02"]);
    assert_eq!(got, ["d2", "d2", "d2"]);
    assert!(err.contains("logs: 3 events from 1 file"), "{err}");
    assert!(!err.contains("2024-10-01"), "{err}");

    // A gzipped day.
    let (got, _) = notes(&["--dir", d, "--date", "2024-10-01"]);
    assert_eq!(got, ["d1", "d1"]);
    let (got, _) = notes(&["--dir", d, "--date", "2024-10-03"]);
    // d3's file and the active file (written after the 3rd).
    assert_eq!(got, ["d3", "misfiled in active"]);

    // Dates: --to a date is through that day. d2's and d3's files.
    let (got, err) = notes(&["--dir", d, "--from", "2024-10-02", "--to", "2024-10-02"]);
    assert_eq!(got, ["d2", "d2", "d2"]);
    assert!(err.contains("from 1 file"), "{err}");
    let (got, err) = notes(&["--dir", d, "--from", "2024-10-02", "--to", "2024-10-03"]);
    assert_eq!(
        got,
        [
            "d2",
            "d2",
            "d2",
            "d3",
            "misfiled in d3",
            "misfiled in active"
        ]
    );
    assert!(err.contains("from 3 files"), "{err}");

    // RFC 3339 times, UTC: from noon on the 2nd to 06:00 on the 3rd
    // (inclusive) opens d2's and d3's files and the active one (which may
    // hold the 3rd's events), not d1's.
    let (got, err) = notes(&[
        "--dir",
        d,
        "--from",
        "2024-10-02T12:00:00Z",
        "--to",
        "2024-10-03T06:00:00+00:00",
    ]);
    assert_eq!(
        got,
        ["d2", "d2", "d3", "misfiled in d3", "misfiled in active"]
    );
    assert!(err.contains("from 3 files"), "{err}");
    // Open-ended, in another zone's notation.
    let (got, _) = notes(&["--dir", d, "--from", "2024-10-03T08:00:00+02:00"]);
    assert_eq!(got, ["d3", "d4"]);
    let (got, _) = notes(&["--dir", d, "--to", "2024-10-01T12:00:00Z"]);
    assert_eq!(got, ["d1"]);
    // A time is inclusive, midnight too.
    let (got, _) = notes(&["--dir", d, "--to", "2024-10-02T00:00:00Z"]);
    assert_eq!(got, ["d1", "d1", "d2", "misfiled in d2"]);
    // --stats over a range.
    let v = stats(&["--dir", d, "--date", "2024-10-02"]);
    assert_eq!(v["events"], 3);
    assert!(close(&v["last_timestamp"], 1_727_910_000.0), "{v}");

    let (code, _, err) = logs(&["--dir", d, "--date", "2024-13-01"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("YYYY-MM-DD"), "{err}");
}

/// A running `logs --follow`, its stdout lines on a channel.
struct Follow {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    got: Vec<String>,
}

impl Follow {
    fn start(args: &[&str]) -> Follow {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentpulse"))
            .arg("logs")
            .args(args)
            .env("AGENTPULSE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Follow {
            child,
            lines,
            got: Vec::new(),
        }
    }

    /// Waits until `n` lines have come in all; returns their notes.
    fn until(&mut self, n: usize) -> Vec<String> {
        wait_for(
            &format!("{n} lines from logs --follow"),
            Duration::from_secs(20),
            || {
                while let Ok(l) = self.lines.try_recv() {
                    self.got.push(l);
                }
                (self.got.len() >= n).then_some(())
            },
        );
        self.got
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["payload"]["note"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        if self.child.kill().is_err() {
            // Already gone.
        }
        if self.child.wait().is_err() {
            // Nothing more to reap.
        }
    }
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
    f.write_all(b"\n").unwrap();
}

#[test]
fn follow_sees_appended_lines_and_goes_on_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let active = d.join("agent-events.jsonl");
    write_gz(
        &d.join("agent-events-2024-10-01.jsonl.gz"),
        &[dated(1, 1, "old")],
    );
    write_lines(
        &active,
        &[dated(2, 1, "a1"), dated(2, 2, "a2"), dated(2, 3, "a3")],
    );
    // --tail applies to what is there at the start.
    let mut f = Follow::start(&[
        "--dir",
        d.to_str().unwrap(),
        "--follow",
        "--json",
        "--tail",
        "2",
    ]);
    assert_eq!(f.until(2), ["a2", "a3"]);

    append(&active, &dated(2, 4, "a4"));
    assert_eq!(f.until(3), ["a2", "a3", "a4"]);
    // A line written in two pieces shows once, whole.
    let piece = dated(2, 5, "a5");
    let (head, rest) = piece.split_at(10);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap()
        .write_all(head.as_bytes())
        .unwrap();
    append(&active, rest);
    assert_eq!(f.until(4)[3], "a5");

    // The daily rotation: the active file is renamed (after one more line
    // in it) and a new one starts.
    append(&active, &dated(2, 6, "a6"));
    std::fs::rename(&active, d.join("agent-events-2024-10-02.jsonl")).unwrap();
    append(&active, &dated(3, 1, "b1"));
    assert_eq!(f.until(6), ["a2", "a3", "a4", "a5", "a6", "b1"]);
    append(&active, &dated(3, 2, "b2"));
    assert_eq!(f.until(7)[6], "b2");
    // Nothing was read twice.
    while let Ok(l) = f.lines.try_recv() {
        f.got.push(l);
    }
    assert_eq!(f.got.len(), 7, "{:?}", f.got);
}

#[test]
fn follow_refuses_gzipped_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent-events-2024-10-01.jsonl.gz");
    write_gz(&p, &[dated(1, 1, "x")]);
    let (code, _, err) = logs(&["--follow", p.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("gzipped"), "{err}");
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.jsonl");
    let lines: Vec<String> = (0..50_000)
        .map(|i| dated(1 + i % 28, 1, &format!("n{i}")))
        .collect();
    write_lines(&p, &lines);
    let mut child = bin()
        .args(["logs", p.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    drop(out);
    let result = child.wait_with_output().unwrap();
    assert!(result.status.success(), "{:?}", result.status);
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!err.contains("error") && !err.contains("panicked"), "{err}");
}

#[test]
fn stats_rates_agree_with_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mixed.jsonl");
    let mut lines = success();
    lines.extend(failure());
    lines.push(original(
        20_000,
        "agent_completed",
        json!({"agent": "critic", "task_id": "t_003", "status": "REJECTED", "cost_usd": 0.05}),
    ));
    lines.push(original(
        20_100,
        "critic_decision",
        json!({"rejected": true}),
    ));
    lines.push(original(
        20_200,
        "critic_decision",
        json!({"rejected": false}),
    ));
    lines.push(original(20_300, "validation_complete", json!({"task_id": "t_003", "result": {"test_passed": true, "browser_launched": false}, "cost": 0.5})));
    lines.push(original(
        20_400,
        "validation_complete",
        json!({"task_id": "t_003", "result": {"test_passed": true}, "cost": -1}),
    ));
    lines.push(original(
        20_500,
        "llm_call",
        json!({"agent": "scribe", "cost_usd": 0.25}),
    ));
    write_lines(&p, &lines);
    let v = stats(&[p.to_str().unwrap()]);
    let out = bin()
        .args(["report", "--json", p.to_str().unwrap()])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let overall = &report["overall"];
    for k in ["critic_rejection_rate", "validation_pass_rate"] {
        assert_eq!(v[k], overall[k], "{k}: {v} vs {overall}");
    }
    assert_eq!(
        v["critic_decisions"],
        overall["samples"]["critic_decisions"]
    );
    assert_eq!(v["validations"], overall["samples"]["validations"]);
    // By hand: critic decisions approved, approved, REJECTED, true, false:
    // 2 of 5; validations passed, failed (browser not launched), passed: 2
    // of 3; cost 0.23 + 0.43 + 0.05 + 0.5 + 0 (negative: out of range) + 0.25.
    assert!(close(&v["critic_rejection_rate"], 0.4), "{v}");
    assert!(close(&v["validation_pass_rate"], 2.0 / 3.0), "{v}");
    assert!(close(&v["total_cost_usd"], 1.46), "{v}");
    assert_eq!(v["events"], 29);
}
