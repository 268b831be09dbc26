//! The first hour of a new user, through the real binary: a config from the
//! README, typos, closed pipes, `host:port` URLs, `--bind localhost`, wrong
//! tokens, the documented log glob, validation answers, the demo's clock,
//! and the original module's logs in `report` / `rebuild-metrics`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, wait_for, Hub, Redis};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// Runs the binary; returns exit code, stdout, stderr. `AGENTPULSE_*`
/// variables of the calling environment are cleared.
fn run(args: &[&str]) -> (i32, String, String) {
    run_in(None, args)
}

fn run_in(dir: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = clean(bin());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agentpulse");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn clean(mut cmd: Command) -> Command {
    for k in [
        "AGENTPULSE_HUB_URL",
        "AGENTPULSE_TOKEN",
        "AGENTPULSE_CONFIG",
        "AGENTPULSE_REDIS_URL",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("AGENTPULSE_LOG", "warn").env("NO_COLOR", "1");
    cmd
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The README's `Alerts and budgets` example, as a user saves it.
fn readme_config() -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```yaml\nalerts:")
        .expect("the README has the alerting example");
    let block = &readme[start + "```yaml\n".len()..];
    block[..block.find("```").unwrap()].to_string()
}

#[test]
fn a_config_from_the_readme_extends_the_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "my.yaml", &readme_config());
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = run(&["validate-config", cfg]);
    assert_eq!(code, 0, "{err}");
    // The built-in schema and alert rules stay; the file's rule is added.
    assert!(
        out.contains("ok (extends the built-in configuration): 12 event types, 5 alert rules"),
        "{out}"
    );
    assert!(out.contains("(overrides built-in)"), "{out}");
    assert!(out.contains("my.yaml:"), "{out}");
    let (code, out, _) = run(&["validate-config", cfg, "--json"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sections"]["alert_rules"].as_array().unwrap().len(), 5);
    assert_eq!(doc["sections"]["budgets"][0]["source"]["file"], cfg);

    // Validation is still on: every missing field of the event, at once.
    let log = dir.path().join("logs");
    let (code, _, err) = run(&[
        "--config",
        cfg,
        "emit",
        "--quiet",
        "--log-dir",
        log.to_str().unwrap(),
        "agent_completed",
        r#"{"agent":"x"}"#,
    ]);
    assert_eq!(code, 2, "{err}");
    for f in ["task_id", "status", "duration_ms", "cost_usd"] {
        assert!(
            err.contains(&format!("agent_completed.{f}: missing")),
            "{f}: {err}"
        );
    }
}

#[test]
fn typos_are_refused_with_their_position_and_the_nearest_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, want) in [
        (
            "budget:\n  - {scope: global, period: day, limit_usd: 5}\n",
            ":1:1: budget: unknown key; did you mean `budgets`?",
        ),
        (
            "alert:\n  - {condition: events > 1, action: warn_user}\n",
            ":1:1: alert: unknown key; did you mean `alerts`?",
        ),
        (
            "stric: true\n",
            ":1:1: stric: unknown key; did you mean `strict`?",
        ),
        (
            "alerts:\n  - condition: events > 1\n    action: notify_admn\n",
            ":3:5: alerts[0].action: no notifier `notify_admn`; did you mean `notify_admin`?",
        ),
    ] {
        let cfg = write(dir.path(), "t.yaml", yaml);
        let (code, out, err) = run(&["validate-config", cfg.to_str().unwrap()]);
        assert_eq!(code, 1, "{yaml}: {out}");
        assert!(err.contains(want), "{yaml}\n{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        // The hub refuses to start with it, saying the same.
        let (code, _, err) = run(&["serve", "--port", "0", "--no-log", "--config"]
            .iter()
            .copied()
            .chain([cfg.to_str().unwrap()])
            .collect::<Vec<_>>());
        assert_ne!(code, 0);
        assert!(err.contains(want), "serve: {err}");
    }
    // An empty file: a warning, and the defaults apply.
    let cfg = write(dir.path(), "empty.yaml", "# to do\n");
    let (code, out, err) = run(&["validate-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning:") && err.contains("is empty: the built-in configuration applies"),
        "{err}"
    );
    assert!(out.contains("4 alert rules"), "{out}");
}

/// Runs `args` with a stdout whose reader has already gone: every write
/// fails with a broken pipe. Returns the exit code and stderr.
fn closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = clean(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_for(&format!("{args:?} to exit"), T, || {
        child.try_wait().ok().flatten()
    });
    (status.code(), reader.join().unwrap())
}

#[test]
fn every_command_that_prints_exits_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let logs = d.join("logs");
    // A log to read: the demo's fleet.
    let (code, _, err) = run(&[
        "demo",
        "--speed",
        "0",
        "--tasks",
        "200",
        "--log-dir",
        logs.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let log = logs.join("agent-events.jsonl");
    let log = log.to_str().unwrap();
    let redis = Redis::start();
    let redis_url = redis.url();
    let (code, _, err) = run(&["rebuild-metrics", log, "--redis-url", &redis_url]);
    assert_eq!(code, 0, "{err}");
    let hub = Hub::start(&d.join("hub"), &[]);
    let hub_url = hub.url("");
    let (code, _, err) = run(&["replay", log, "--hub", &hub_url]);
    assert_eq!(code, 0, "{err}");
    let empty = write(
        d,
        "hook.json",
        r#"{"session_id":"s","hook_event_name":"Stop"}"#,
    );
    let bench_dir = d.join("bench");
    let commands: Vec<Vec<&str>> = vec![
        vec!["report", log],
        vec!["report", log, "--json"],
        vec!["validate", log],
        vec!["validate-config"],
        vec![
            "metrics",
            "--redis-url",
            &redis_url,
            "--bucket",
            "daily",
            "--from",
            "2020-01-01",
            "--all",
        ],
        vec![
            "tail", "--hub", &hub_url, "--json", "--since", "0", "--count", "100",
        ],
        vec!["tail", "--hub", &hub_url, "--since", "0", "--count", "100"],
        vec!["demo", "--speed", "0", "--log-dir", logs.to_str().unwrap()],
        vec![
            "demo",
            "--speed",
            "0",
            "--verbose",
            "--tasks",
            "5",
            "--log-dir",
            logs.to_str().unwrap(),
        ],
        vec!["replay", log, "--hub", &hub_url],
        vec!["emit", "--log-dir", logs.to_str().unwrap(), "note", "{}"],
        vec![
            "bench",
            "pipeline",
            "--events",
            "2000",
            "--log-dir",
            bench_dir.to_str().unwrap(),
        ],
        vec!["serve", "--port", "0", "--no-log"],
        vec!["--help"],
        vec!["report", "--help"],
    ];
    for args in &commands {
        let (code, err) = closed_stdout(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
    // claude-hook --print reads stdin.
    let mut child = clean(bin())
        .args(["claude-hook", "--print"])
        .stdin(std::fs::File::open(&empty).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    // And the shell's way: `| head -1` with pipefail.
    let script = format!(
        "set -o pipefail; '{}' report '{log}' | head -1",
        env!("CARGO_BIN_EXE_agentpulse")
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn url_options_take_host_port_and_serve_binds_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(&dir.path().join("a"), &["--bind", "localhost"]);
    assert!(hub.addr.ip().is_loopback(), "{}", hub.addr);
    let (status, health) = hub.get_json("/health");
    assert_eq!(status, 200, "{health}");
    let hp = hub.addr.to_string(); // 127.0.0.1:PORT, no scheme
    let (code, _, err) = run(&["emit", "--hub", &hp, "note", r#"{"n":1}"#]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sent: event 1"), "{err}");
    let (code, out, err) = run(&[
        "tail", "--hub", &hp, "--json", "--since", "0", "--count", "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#""event_type":"note""#), "{out}");
    let (code, out, err) = run(&["demo", "--hub", &hp, "--speed", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("sent to http://{hp}")), "{out}");
    let log = hub.log_dir.join("agent-events.jsonl");
    let other = Hub::start(&dir.path().join("b"), &[]);
    wait_for("the log", T, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.lines().count() >= 11)
    });
    let (code, out, err) = run(&[
        "replay",
        log.to_str().unwrap(),
        "--hub",
        &other.addr.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("replayed 11 events"), "{out}");
    let redis = Redis::start();
    let bare = format!("127.0.0.1:{}", redis.port);
    let (code, _, err) = run(&[
        "rebuild-metrics",
        log.to_str().unwrap(),
        "--redis-url",
        &bare,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["metrics", "--redis-url", &bare, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
    // A malformed one is refused before anything runs.
    let (code, _, err) = run(&["emit", "--hub", "127.0.0.1:port", "note", "{}"]);
    assert_eq!(code, 2);
    assert!(err.contains("the port is not a number"), "{err}");
}

#[test]
fn errors_say_their_cause_once_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let port = hub.addr.port().to_string();
    let (code, _, err) = run(&["serve", "--no-log", "--port", &port]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(err.contains("pick another --port"), "{err}");
    let (code, _, err) = run(&["serve", "--port", "0", "--log-dir", "/proc/nope"]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // Nothing listens here: say so, with the obvious question.
    let dead = format!("127.0.0.1:{}", common::free_port());
    for args in [
        vec!["emit", "--hub", &dead, "note", "{}"],
        vec!["replay", "--hub", &dead, "/dev/null"],
        vec!["demo", "--hub", &dead, "--speed", "0"],
    ] {
        let (code, _, err) = run(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(
            err.contains(&format!("is `agentpulse serve` running at http://{dead}?")),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    }
    // tail keeps trying (the hub may come), and says what to check.
    let mut child = clean(bin())
        .args(["tail", "--hub", &dead])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = collect(child.stderr.take().unwrap());
    let text = wait_for("tail's first retry line", T, || {
        let s = seen.lock().unwrap().clone();
        s.contains("retrying").then_some(s)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains(&format!(
            "(is `agentpulse serve` running at http://{dead}?); retrying"
        )),
        "{text}"
    );
}

#[test]
fn a_wrong_token_stops_tail_replay_demo_and_emit_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(&dir.path().join("hub"), &["--token", "right"]);
    let url = hub.url("");
    let log = write(
        dir.path(),
        "a.jsonl",
        "{\"event_type\":\"note\",\"timestamp\":1.0,\"payload\":{}}\n",
    );
    let log = log.to_str().unwrap();
    for token in ["wrong", ""] {
        for args in [
            vec!["tail", "--hub", &url, "--token", token],
            vec!["replay", log, "--hub", &url, "--token", token],
            vec!["demo", "--hub", &url, "--speed", "0", "--token", token],
            vec!["emit", "--hub", &url, "--token", token, "note", "{}"],
        ] {
            let began = Instant::now();
            let (code, out, err) = run(&args);
            assert_ne!(code, 0, "{args:?}: {out}");
            assert!(began.elapsed() < Duration::from_secs(10), "{args:?}");
            let want = if token.is_empty() {
                "needs a token (401): pass --token or set AGENTPULSE_TOKEN"
            } else {
                "refused the token (401)"
            };
            assert!(err.contains(want), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
            assert!(!out.contains("KPIs"), "{args:?}: {out}");
        }
    }
    let (_, events) = common::get_json(
        &hub.url("/api/events?since=0"),
        &[("Authorization", "Bearer right")],
    );
    assert_eq!(events["events"], json!([]), "nothing got in");
}

#[test]
fn the_documented_glob_matches_logs_only() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let mut hub = Hub::start(&logs, &[]);
    hub.post(
        &json!([{"event_type":"note","payload":{"n":1}},{"event_type":"note","event_id":"k","payload":{"n":2}}]).to_string(),
        "application/json",
    );
    hub.terminate();
    // A crash mid-write leaves a torn line; the next start moves it aside.
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("agent-events.jsonl"))
        .unwrap()
        .write_all(b"{\"id\":3,\"event_ty")
        .unwrap();
    let mut hub = Hub::start(&logs, &[]);
    hub.post(
        r#"{"event_type":"note","payload":{"n":3}}"#,
        "application/json",
    );
    hub.terminate();
    let names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "agent-events.torn"), "{names:?}");
    assert!(names.iter().any(|n| n == "agent-events.ids"), "{names:?}");
    // The glob of docs/integrations.md, as a shell expands it.
    let docs = include_str!("../docs/integrations.md");
    assert!(docs.contains("agentpulse report logs/*.jsonl*"));
    let bin = env!("CARGO_BIN_EXE_agentpulse");
    for cmd in [
        "report logs/*.jsonl*",
        "validate logs/*.jsonl*",
        "report --json logs/*.jsonl*",
    ] {
        let out = Command::new("sh")
            .current_dir(dir.path())
            .args(["-c", &format!("'{bin}' {cmd}")])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{cmd}: {err}");
        assert!(err.is_empty(), "{cmd}: {err}");
    }
    let hub = Hub::start(&dir.path().join("other"), &[]);
    let out = Command::new("sh")
        .current_dir(dir.path())
        .args([
            "-c",
            &format!("'{bin}' replay logs/*.jsonl* --hub {}", hub.url("")),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("replayed 3 events"));
}

#[test]
fn an_ingest_answer_names_every_faulty_field_and_likely_types() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let (status, body) = hub.post(
        r#"{"event_type":"agent_completed","payload":{"agent":"x","cost_usd":"abc"}}"#,
        "application/json",
    );
    assert_eq!(status, 422, "{body}");
    let e = &body["errors"][0];
    // The first fault as before, for old clients...
    assert_eq!(e["field"], "task_id");
    assert_eq!(e["message"], "missing (expected a non-empty string)");
    // ...and all of them.
    let fields: Vec<&str> = e["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["task_id", "status", "duration_ms", "cost_usd"]);
    assert_eq!(
        e["fields"][3]["message"],
        "expected a finite number >= 0, got \"abc\""
    );
    let text = e["error"].as_str().unwrap();
    assert!(
        text.starts_with("agent_completed.task_id: missing")
            && text.contains("; agent_completed.cost_usd: expected"),
        "{text}"
    );

    // A near miss of a declared type is taken, with a warning.
    let (status, body) = hub.post(
        &json!([
            {"event_type":"agent_complete","payload":{"agent":"x"}},
            {"event_type":"circuit_breaker_open","payload":{}},
        ])
        .to_string(),
        "application/json",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["warnings"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["warnings"][0]["index"], 0);
    assert_eq!(body["warnings"][0]["likely_type"], "agent_completed");
    let (status, body) = hub.post(r#"{"event_type":"note","payload":{}}"#, "application/json");
    assert_eq!(status, 200);
    assert!(body.get("warnings").is_none(), "{body}");
    // emit says it too.
    let (code, _, err) = run(&[
        "emit",
        "--hub",
        &hub.url(""),
        "agent_complete",
        r#"{"agent":"x"}"#,
    ]);
    assert_eq!(code, 0);
    assert!(
        err.contains(
            "warning: undeclared event type `agent_complete`; did you mean `agent_completed`?"
        ),
        "{err}"
    );
}

#[test]
fn demo_at_speed_0_leaves_no_event_stamped_after_it_ends() {
    for extra in [&[][..], &["--failure"][..], &["--tasks", "300"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "demo",
            "--speed",
            "0",
            "--log-dir",
            dir.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let began = agentpulse::event::now_unix();
        let (code, _, err) = run(&args);
        let ended = agentpulse::event::now_unix();
        assert_eq!(code, 0, "{err}");
        let text = std::fs::read_to_string(dir.path().join("agent-events.jsonl")).unwrap();
        let stamps: Vec<f64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["timestamp"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        let last = stamps.iter().cloned().fold(f64::MIN, f64::max);
        assert!(
            last <= ended,
            "{extra:?}: last stamp {last} after the end {ended}"
        );
        // It ends at now, not long before: the run is laid out back from it.
        assert!(last >= began - 1.0, "{extra:?}: {last} < {began}");
    }
}

/// Every line of an agentpulse log without its `id`: the original module's format.
fn without_ids(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            json!({"event_type": v["event_type"], "timestamp": v["timestamp"], "payload": v["payload"]})
                .to_string()
                + "\n"
        })
        .collect()
}

fn close(v: &Value, want: f64, what: &str) {
    let x = v.as_f64().unwrap_or_else(|| panic!("{what}: {v}"));
    assert!((x - want).abs() < 1e-3, "{what}: {x} != {want}");
}

#[test]
fn report_and_rebuild_read_the_original_modules_logs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The original's two workflows (src/cli/demo.rs; the KPIs are worked
    // out by hand in docs/integrations.md and tests/clients.rs).
    let mut originals = Vec::new();
    for (name, extra, start) in [
        ("success", None, "1700000000"),
        ("failure", Some("--failure"), "1700000100"),
    ] {
        let logs = d.join(name);
        let mut args = vec![
            "demo",
            "--speed",
            "0",
            "--start",
            start,
            "--log-dir",
            logs.to_str().unwrap(),
        ];
        args.extend(extra);
        let (code, _, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        let text = without_ids(&logs.join("agent-events.jsonl"));
        assert!(!text.contains("\"id\""));
        originals.push(write(d, &format!("{name}-original.jsonl"), &text));
    }
    let report = |files: &[&Path]| -> Value {
        let mut args = vec!["report", "--json"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        assert!(err.is_empty(), "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let kpis = |v: &Value, want: [f64; 6]| {
        let o = &v["overall"];
        for (name, w) in agentpulse::config::KPI_NAMES.iter().zip(want) {
            close(&o[*name], w, name);
        }
    };
    let success = report(&[&originals[0]]);
    assert_eq!(success["events"], 10);
    assert_eq!(success["unreadable_lines"], 0);
    // Busy 3.0 s (gemini's span ended by its validation) / (4.0 s × 4 agents).
    kpis(&success, [0.1875, 0.23, 0.0, 0.0, 1.0, 3.8]);
    let failure = report(&[&originals[1]]);
    assert_eq!(failure["events"], 13);
    kpis(&failure, [0.1827, 0.0, 2.0, 0.0, 0.0, 0.0]);

    // Mixed in one file with agentpulse's own lines: counted in file order,
    // the same as the two files one after the other.
    let own = std::fs::read_to_string(d.join("failure/agent-events.jsonl")).unwrap();
    let mixed = write(
        d,
        "mixed.jsonl",
        &(std::fs::read_to_string(&originals[0]).unwrap() + &own),
    );
    let both = report(&[&originals[0], &originals[1]]);
    let m = report(&[&mixed]);
    assert_eq!(m["events"], 23);
    assert_eq!(m["overall"], both["overall"]);

    // rebuild-metrics fills a private Redis with what ingest writes.
    let ingested = Redis::start();
    let rebuilt = Redis::start();
    let hub = Hub::start(
        &d.join("hub"),
        &["--redis-url", &ingested.url(), "--redis-flush-ms", "50"],
    );
    let hub_addr = hub.addr.to_string();
    // Recent starts: buckets older than their TTL would not be kept.
    let t0 = (agentpulse::event::now_unix() - 7200.0).floor();
    let starts = [t0.to_string(), (t0 + 100.0).to_string()];
    let mut recent = Vec::new();
    for (i, start) in starts.iter().enumerate() {
        let mut args = vec!["demo", "--hub", &hub_addr, "--speed", "0", "--start", start];
        if i == 1 {
            args.push("--failure");
        }
        let (code, _, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        // The same workflow, written by an in-process demo, without ids.
        let logs = d.join(format!("recent-{i}"));
        args.truncate(1);
        args.extend([
            "--speed",
            "0",
            "--start",
            start,
            "--log-dir",
            logs.to_str().unwrap(),
        ]);
        if i == 1 {
            args.push("--failure");
        }
        let (code, _, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        let text = without_ids(&logs.join("agent-events.jsonl"));
        recent.push(write(d, &format!("recent-{i}.jsonl"), &text));
    }
    let value_keys = |r: &Redis| -> Vec<String> {
        let mut keys: Vec<String> = r
            .cmd(&["KEYS", "metrics:*"])
            .unwrap_or_default()
            .lines()
            .filter(|k| !k.ends_with(":raw") && !k.is_empty())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    };
    wait_for("ingest's buckets", T, || {
        let events: u64 = value_keys(&ingested)
            .iter()
            .filter(|k| k.starts_with("metrics:hourly:"))
            .filter_map(|k| ingested.get_json(k))
            .filter_map(|v| v["events"].as_u64())
            .sum();
        (events == 23).then_some(())
    });
    let (code, _, err) = run(&[
        "rebuild-metrics",
        recent[0].to_str().unwrap(),
        recent[1].to_str().unwrap(),
        "--redis-url",
        &rebuilt.url(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("from 23 events (0 unreadable lines skipped)"),
        "{err}"
    );
    let keys = value_keys(&ingested);
    assert!(!keys.is_empty());
    assert_eq!(value_keys(&rebuilt), keys);
    for k in &keys {
        assert_eq!(rebuilt.get_json(k), ingested.get_json(k), "{k}");
    }

    // A file of junk: one message, non-zero exit, for report and rebuild.
    let junk = write(d, "junk.txt", "hello\nnot a log\n\x00\x01\n");
    let (code, out, err) = run(&["report", junk.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not a log: none of its 3 lines is an event"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "report",
        originals[0].to_str().unwrap(),
        junk.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("junk.txt: not a log"), "{err}");
    let (code, _, err) = run(&[
        "rebuild-metrics",
        junk.to_str().unwrap(),
        "--redis-url",
        &rebuilt.url(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not a log"), "{err}");
}

#[test]
fn metrics_skips_empty_buckets_unless_all_and_option_names_agree() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let (code, _, err) = run(&[
        "demo",
        "--speed",
        "0",
        "--start",
        "1764576000",
        "--log-dir",
        logs.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let log = logs.join("agent-events.jsonl");
    let redis = Redis::start();
    let url = redis.url();
    // The old names still work; the new ones are serve's.
    let (code, _, err) = run(&[
        "rebuild-metrics",
        log.to_str().unwrap(),
        "--redis-url",
        &url,
        "--prefix",
        "m:",
        "--ttl-days",
        "1,2,3",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&[
        "rebuild-metrics",
        log.to_str().unwrap(),
        "--redis-url",
        &url,
        "--redis-prefix",
        "metrics:",
        "--redis-ttl-days",
        "7,30,90",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(redis
        .cmd(&["EXISTS", "m:hourly:2025-12-01T08:00:00"])
        .unwrap()
        .contains('1'));
    let args = [
        "metrics",
        "--redis-url",
        &url,
        "--bucket",
        "hourly",
        "--from",
        "2025-11-30",
        "--to",
        "2025-12-02",
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().count(),
        2,
        "header and the one hour with data: {out}"
    );
    assert!(out.contains("2025-12-01T08:00:00"), "{out}");
    let (code, out, _) = run(&[&args[..], &["--all"]].concat());
    assert_eq!(code, 0);
    assert!(out.lines().count() > 40, "{out}");
    assert!(out.contains("(no data)"));
    // Same names through the environment.
    for (prefix, want) in [
        ("m:", "2025-12-01T08:00:00"),
        ("none:", "no data in 49 hourly buckets"),
    ] {
        let out = clean(bin())
            .args([
                "metrics",
                "--bucket",
                "hourly",
                "--from",
                "2025-11-30",
                "--to",
                "2025-12-02",
            ])
            .env("AGENTPULSE_REDIS_URL", &url)
            .env("AGENTPULSE_REDIS_PREFIX", prefix)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(want), "{prefix}: {text}");
    }
}

/// Everything `r` gives, as it comes, on a thread of its own.
fn collect(mut r: impl Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    seen
}

#[test]
fn log_output_has_no_colour_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["serve", "--port", "0", "--quiet", "--log-dir"])
        .arg(dir.path())
        .env("AGENTPULSE_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = collect(child.stderr.take().unwrap());
    let text = wait_for("the start line", T, || {
        let s = seen.lock().unwrap().clone();
        s.contains("pipeline started").then_some(s)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

/// `agentpulse serve` on a terminal (`script` gives it one): its log lines
/// (stderr) are coloured, unless `NO_COLOR` is set.
#[test]
fn log_output_is_coloured_on_a_terminal_unless_no_color() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux) to give the hub a terminal");
        return;
    }
    for (no_color, want_colour) in [(false, true), (true, false)] {
        let dir = tempfile::tempdir().unwrap();
        let cmd = format!(
            "{}AGENTPULSE_LOG=info '{}' serve --port 0 --quiet --log-dir '{}'",
            if no_color { "NO_COLOR=1 " } else { "" },
            env!("CARGO_BIN_EXE_agentpulse"),
            dir.path().display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("NO_COLOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let seen = collect(child.stdout.take().unwrap());
        let text = wait_for("the start line on the terminal", T, || {
            let s = seen.lock().unwrap().clone();
            s.contains("pipeline started").then_some(s)
        });
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = wait_for("script to exit", T, || child.try_wait().ok().flatten());
        let line = text
            .lines()
            .find(|l| l.contains("pipeline started"))
            .unwrap();
        assert_eq!(
            line.contains('\u{1b}'),
            want_colour,
            "NO_COLOR={no_color}: {line:?}"
        );
    }
}
