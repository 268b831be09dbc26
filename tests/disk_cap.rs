//! The disk cap (issue 20, point 6): `--max-log-bytes` (and
//! `limits.max_log_bytes`, `AGENTPULSE_MAX_LOG_BYTES`) deletes the oldest
//! rotated files first, then answers 507 on every ingest path while the
//! current file alone is at the cap, the hub staying up and saying why in
//! `/health`; and tokens given in the configuration file (issue 20, point 4).

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{Days, Utc};
use common::{get_json, post_to, wait_for, ws, Hub};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// A rotated day `days_ago` before today with `n` events of ~300 bytes.
fn rotated_day(dir: &Path, days_ago: u64, n: usize) -> std::path::PathBuf {
    let date = Utc::now().date_naive() - Days::new(days_ago);
    let path = dir.join(format!("agent-events-{date}.jsonl"));
    let ts = Utc::now().timestamp() as f64 - days_ago as f64 * 86_400.0;
    let mut text = String::new();
    for i in 0..n {
        let e = json!({"id": (10 - days_ago) * 100_000 + i as u64, "event_type": "note",
            "timestamp": ts, "payload": {"pad": "x".repeat(240)}});
        text.push_str(&e.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn notes(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"event_type": "note", "payload": {"i": i, "pad": "y".repeat(240)}}).to_string()
                + "\n"
        })
        .collect()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn the_cap_deletes_the_oldest_rotated_days_first_then_answers_507_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // Three older days of ~100 KB each, and a file that is not the log's.
    let d3 = rotated_day(&logs, 3, 330);
    let d2 = rotated_day(&logs, 2, 330);
    let d1 = rotated_day(&logs, 1, 330);
    let other = logs.join("notes.txt");
    std::fs::write(&other, "x".repeat(50_000)).unwrap();
    let cap: u64 = 400_000;
    let hub = Hub::start(&logs, &["--max-log-bytes", "400KB"]);
    let (_, h) = hub.get_json("/health");
    assert_eq!(
        h["components"]["sink_jsonl"]["disk_cap"]["max_log_bytes"], cap,
        "{h}"
    );
    assert_eq!(h["status"], "ok", "{h}");

    // ~110 KB: the log would pass 400 KB, so the oldest day goes, only it.
    let (status, body) = hub.post(&notes(350), "application/x-ndjson");
    assert_eq!(status, 200, "{body}");
    assert!(!d3.exists(), "the oldest day is deleted first");
    assert!(d2.exists() && d1.exists(), "the newer days stay");
    let (_, h) = hub.get_json("/health");
    assert_eq!(
        h["components"]["sink_jsonl"]["disk_cap"]["deleted_files"], 1,
        "{h}"
    );

    // More: the next oldest, then the last rotated day.
    let (status, body) = hub.post(&notes(350), "application/x-ndjson");
    assert_eq!(status, 200, "{body}");
    assert!(!d2.exists() && d1.exists());
    let (status, body) = hub.post(&notes(350), "application/x-ndjson");
    assert_eq!(status, 200, "{body}");
    assert!(!d1.exists());
    assert!(
        other.exists(),
        "files that are not the log's are never touched"
    );

    // Only today's file is left: at the cap, every ingest path says 507.
    let active = logs.join("agent-events.jsonl");
    let mut last = 200;
    for _ in 0..10 {
        let (status, body) = hub.post(&notes(350), "application/x-ndjson");
        last = status;
        if status == 507 {
            let e = body["error"].as_str().unwrap();
            assert!(
                e.contains("max_log_bytes") && e.contains("disk cap"),
                "{body}"
            );
            assert_eq!(body["cause"], "max_log_bytes", "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(last, 507, "the current file alone reached the cap");
    // Past the cap by at most what was in flight (one request here).
    assert!(size(&active) <= cap + 120_000, "{}", size(&active));
    let lines_at_cap = std::fs::read_to_string(&active).unwrap().lines().count();

    // One event by curl-like JSON, the WebSocket ingest and OTLP: all 507.
    let one = json!({"event_type": "note", "payload": {}}).to_string();
    let (status, body) = post_to(&hub.url("/events"), one.as_bytes(), "application/json", &[]);
    assert_eq!(status, 507, "{body}");
    let c = ws::connect(&hub.ws_url("/ingest"), &[]);
    c.send(&one);
    let ack = c.next(T);
    assert_eq!(ack["status"], 507, "{ack}");
    let t = (Utc::now().timestamp_nanos_opt().unwrap() - 2_000_000_000).to_string();
    let otlp = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
         "name": "invoke_agent router", "startTimeUnixNano": t, "endTimeUnixNano": t,
         "attributes": [
           {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
           {"key": "gen_ai.agent.name", "value": {"stringValue": "router"}}]}]}]}]});
    let (status, body) = post_to(
        &hub.url("/v1/traces"),
        otlp.to_string().as_bytes(),
        "application/json",
        &[],
    );
    assert_eq!(status, 507, "{body}");

    // The hub stays up, reads work, and /health says why.
    let (status, events) = hub.get_json("/api/events?limit=5");
    assert_eq!(status, 200, "{events}");
    let (_, h) = hub.get_json("/health");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(
        h["components"]["sink_jsonl"]["disk_cap"]["full"], true,
        "{h}"
    );
    assert!(
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("disk cap")),
        "{h}"
    );
    assert_eq!(
        std::fs::read_to_string(&active).unwrap().lines().count(),
        lines_at_cap,
        "nothing refused was written"
    );

    // Space freed by hand (today's file moved out): noticed without an
    // event, and events are taken again.
    std::fs::rename(&active, dir.path().join("archived.jsonl")).unwrap();
    wait_for("the hub to notice the space", T, || {
        let (_, h) = hub.get_json("/health");
        (h["status"] == "ok").then_some(())
    });
    let (status, body) = hub.post(&notes(10), "application/x-ndjson");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        std::fs::read_to_string(&active).unwrap().lines().count(),
        10
    );
}

#[test]
fn the_cap_and_tokens_come_from_the_config_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hub.yaml");
    std::fs::write(
        &cfg,
        "limits:\n  max_log_bytes: 20KB\ntokens:\n  ingest: [in-from-file]\n  read: [rd-from-file]\n",
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let hub = Hub::start(&dir.path().join("logs"), &["--config", cfg_s]);
    let auth = |t: &str| format!("Bearer {t}");
    let (in_auth, rd_auth) = (auth("in-from-file"), auth("rd-from-file"));
    let post = |a: Option<&str>| {
        let h: Vec<(&str, &str)> = a.iter().map(|a| ("Authorization", *a)).collect();
        post_to(
            &hub.url("/events"),
            notes(30).as_bytes(),
            "application/x-ndjson",
            &h,
        )
    };
    assert_eq!(post(None).0, 401);
    assert_eq!(post(Some(&rd_auth)).0, 403, "the read token may not send");
    assert_eq!(
        get_json(&hub.url("/api/events"), &[("Authorization", &in_auth)]).0,
        403
    );
    assert_eq!(
        get_json(&hub.url("/api/events"), &[("Authorization", &rd_auth)]).0,
        200
    );
    // 20 KB: reached within a few requests of ~9 KB.
    let status = (0..10)
        .map(|_| post(Some(&in_auth)))
        .find(|(s, _)| *s != 200);
    assert_eq!(status.as_ref().map(|s| s.0), Some(507), "{status:?}");
    drop(hub);

    // validate-config counts the tokens and never prints them.
    let out = common::bin()
        .args(["--config", cfg_s, "validate-config"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("in-from-file") && !text.contains("rd-from-file"),
        "tokens are never printed: {text}"
    );
    assert!(text.contains("token (hidden)"), "{text}");

    // The flag overrides the file.
    let hub = Hub::start(
        &dir.path().join("logs2"),
        &["--config", cfg_s, "--max-log-bytes", "1MiB"],
    );
    let (_, h) = get_json(&hub.url("/health"), &[]);
    assert_eq!(
        h["components"]["sink_jsonl"]["disk_cap"]["max_log_bytes"],
        1 << 20,
        "{h}"
    );
}

#[test]
fn bad_sizes_and_tokens_are_refused_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, want) in [
        (
            "limits:\n  max_log_bytes: lots\n",
            "max_log_bytes: expected a number of bytes",
        ),
        (
            "limits:\n  max_log_bytes: 0\n",
            "max_log_bytes: expected a number of bytes > 0",
        ),
        ("tokens:\n  read: [\"has space\"]\n", "tokens.read[0]"),
        ("tokens:\n  reed: [x]\n", "did you mean `read`"),
    ] {
        let cfg = dir.path().join("bad.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let out = common::bin()
            .args(["--config", cfg.to_str().unwrap(), "validate-config"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml}: accepted");
        assert!(err.contains(want), "{yaml}: {err}");
    }
    let out = common::bin()
        .args(["serve", "--max-log-bytes", "ten", "--port", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--max-log-bytes"),
        "{err}"
    );
    // The environment variable is the flag.
    let out = common::bin()
        .args(["serve", "--port", "0"])
        .env("AGENTPULSE_MAX_LOG_BYTES", "ten")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--max-log-bytes"),
        "{err}"
    );
}
