//! Alerts and budgets through the real hub: rules firing on live metrics,
//! webhooks (a receiver started here), budgets and the check endpoint.

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, Hub};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// The contract's events plus `extra` YAML, written to a file in `dir`.
fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let base = agentpulse::config::DEFAULT_CONFIG_YAML;
    // Keep the events and destinations; replace the alerts (a file
    // extends the built-in ones unless it says so).
    let events_part = &base[..base.find("alerts:").unwrap()];
    let path = dir.join("agentpulse.yaml");
    std::fs::write(&path, format!("replace: [alerts]\n{events_part}{extra}")).unwrap();
    path
}

fn validation(task: usize, passed: bool) -> Value {
    json!({"event_type":"validation_complete","payload":{"task_id":format!("t{task}"),
        "result":{"passed":passed},"cost":0.01,"duration_ms":5,"screenshots":0}})
}

fn events_of(hub: &Hub, ty: &str) -> Vec<Value> {
    let (_, e) = hub.get_json(&format!("/api/events?since=0&types={ty}"));
    e["events"].as_array().unwrap().clone()
}

#[test]
fn a_rule_fires_once_reaches_the_webhook_and_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (url, hooks) = common::webhook_receiver(false);
    let cfg = config(
        dir.path(),
        &format!(
            "alerts:\n  - condition: \"validation_pass_rate < 0.70\"\n    action: notify_admin\n    message: \"Validation pass rate <70%\"\n    min_samples: 4\nnotifiers:\n  notify_admin:\n    - type: webhook\n      url: {url}\n    - type: console\n"
        ),
    );
    let hub = Hub::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    // Three failures: below min_samples, nothing fires.
    for i in 0..3 {
        hub.post(&validation(i, false).to_string(), "application/json");
    }
    assert!(
        hooks.recv_timeout(Duration::from_millis(1500)).is_err(),
        "min_samples respected"
    );
    // The fourth sample: the rule holds and fires, once.
    hub.post(&validation(3, false).to_string(), "application/json");
    let hook = hooks.recv_timeout(T).expect("webhook called");
    assert_eq!(hook["event_type"], "alert_triggered", "{hook}");
    let p = &hook["payload"];
    assert_eq!(p["rule"], "validation_pass_rate < 0.70");
    assert_eq!(p["value"], 0.0);
    assert_eq!(p["threshold"], 0.7);
    assert_eq!(p["message"], "Validation pass rate <70%");
    for i in 4..8 {
        hub.post(&validation(i, false).to_string(), "application/json");
    }
    assert!(
        hooks.recv_timeout(Duration::from_millis(1500)).is_err(),
        "fires once while true"
    );
    assert_eq!(events_of(&hub, "alert_triggered").len(), 1);
    let (_, a) = hub.get_json("/api/alerts");
    assert_eq!(a["active"].as_array().unwrap().len(), 1, "{a}");

    // Passing validations lift the rate: resolved, once.
    for i in 8..40 {
        hub.post(&validation(i, true).to_string(), "application/json");
    }
    let resolved = hooks.recv_timeout(T).expect("resolution sent");
    assert_eq!(resolved["event_type"], "alert_resolved", "{resolved}");
    wait_for("resolved in the log", T, || {
        (events_of(&hub, "alert_resolved").len() == 1).then_some(())
    });
    let (_, a) = hub.get_json("/api/alerts");
    assert_eq!(a["active"].as_array().unwrap().len(), 0, "{a}");
    assert_eq!(a["history"].as_array().unwrap().len(), 2, "{a}");
}

#[test]
fn a_hanging_webhook_does_not_slow_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _never) = common::webhook_receiver(true);
    let cfg = config(
        dir.path(),
        &format!(
            "alerts:\n  - condition: \"events > 3\"\n    action: page\n    repeat_interval: 1s\nnotifiers:\n  page:\n    - type: webhook\n      url: {url}\n      timeout: 30s\n      retries: 5\n"
        ),
    );
    let hub = Hub::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    for i in 0..5 {
        hub.post(
            &json!({"event_type":"note","payload":{"i":i}}).to_string(),
            "application/json",
        );
    }
    wait_for("the alert", T, || {
        (!events_of(&hub, "alert_triggered").is_empty()).then_some(())
    });
    // The webhook hangs for 30 s per attempt; ingest goes on at full speed.
    let started = Instant::now();
    for i in 0..200 {
        let (s, _) = hub.post(
            &json!({"event_type":"note","payload":{"i":i}}).to_string(),
            "application/json",
        );
        assert_eq!(s, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn budgets_warn_and_exceed_once_and_the_check_endpoint_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "budgets:\n  - scope: global\n    period: day\n    limit_usd: 1.0\n    warn_at: 0.8\n  - scope: feature\n    period: lifetime\n    limit_usd: 0.5\n",
    );
    let hub = Hub::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let queued = json!({"event_type":"task_queued","payload":{"task_id":"t1","feature":"login","est_cost":1,"timestamp":0}});
    hub.post(&queued.to_string(), "application/json");
    let spend = |cost: f64| {
        json!({"event_type":"agent_completed","payload":{"agent":"scribe","task_id":"t1","status":"success","duration_ms":1,"cost_usd":cost}})
            .to_string()
    };
    for cost in [0.3, 0.3, 0.25, 0.2, 0.1, 0.1] {
        assert_eq!(hub.post(&spend(cost), "application/json").0, 200);
    }
    wait_for("budget events", T, || {
        let w = events_of(&hub, "budget_warning");
        let x = events_of(&hub, "budget_exceeded");
        (x.len() == 2 && w.len() == 1).then_some(())
    });
    let warning = &events_of(&hub, "budget_warning")[0]["payload"];
    assert_eq!(warning["scope"], "global");
    assert!(
        (warning["current_spend"].as_f64().unwrap() - 0.85).abs() < 1e-9,
        "{warning}"
    );
    assert_eq!(warning["limit"], 1.0);
    let exceeded = events_of(&hub, "budget_exceeded");
    let feature = exceeded
        .iter()
        .find(|e| e["payload"]["scope"] == "feature")
        .unwrap();
    assert_eq!(feature["payload"]["key"], "login");
    assert_eq!(feature["payload"]["tasks_blocked"], 1);

    let (s, b) = hub.get_json("/api/budgets");
    assert_eq!(s, 200);
    let states: Vec<&str> = b["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["state"].as_str().unwrap())
        .collect();
    assert!(states.iter().all(|s| *s == "exceeded"), "{b}");
    let (s, c) = hub.get_json("/api/budgets/check?feature=login&cost=0.05");
    assert_eq!(s, 200);
    assert_eq!(c["allowed"], false, "{c}");
    let (s, c) = hub.get_json("/api/budgets/check?feature=signup&cost=abc");
    assert_eq!(s, 400, "{c}");
    // No budget event was emitted twice.
    assert_eq!(events_of(&hub, "budget_warning").len(), 1);
    assert_eq!(events_of(&hub, "budget_exceeded").len(), 2);
}

#[test]
fn validate_config_checks_a_file_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(
        dir.path(),
        "alerts:\n  - condition: \"cost_per_feature > 1.00\"\n    action: warn_user\n",
    );
    let out = common::bin()
        .args(["validate-config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 alert rule,"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "alerts:\n  - condition: \"cost_per_feature >> 1\"\n    action: x\n",
    )
    .unwrap();
    let out = common::bin()
        .args(["validate-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alerts[0].condition"), "{err}");
    // The hub refuses to start with it, naming the rule.
    let out = common::bin()
        .args(["serve", "--port", "0", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("alerts[0].condition"));
}

#[test]
fn slack_webhooks_and_commands_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let (url, hooks) = common::webhook_receiver(false);
    let out = dir.path().join("alert.json");
    let cfg = config(
        dir.path(),
        &format!(
            "alerts:\n  - condition: \"events >= 2\"\n    action: page\n    message: \"two events\"\nnotifiers:\n  page:\n    - type: webhook\n      url: {url}\n      format: slack\n    - type: command\n      command: [\"sh\", \"-c\", \"cat > {}\"]\n",
            out.display()
        ),
    );
    let hub = Hub::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    for i in 0..2 {
        hub.post(
            &json!({"event_type":"note","payload":{"i":i}}).to_string(),
            "application/json",
        );
    }
    let slack = hooks.recv_timeout(T).expect("slack webhook called");
    let text = slack["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("[agentpulse ALERT] two events"), "{slack}");
    let written = wait_for("the command's output", T, || {
        std::fs::read_to_string(&out).ok().filter(|s| !s.is_empty())
    });
    let v: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(v["event_type"], "alert_triggered");
    assert_eq!(v["payload"]["message"], "two events");
}
