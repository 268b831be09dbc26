//! A small multi-agent run reporting to an agentpulse hub through the Rust
//! SDK (`agentpulse::Client`).
//!
//! It plays the original observability module's success workflow for one
//! task:
//!
//! ```text
//! task_queued -> scribe (writes the test) -> critic (approves it)
//! -> runner (executes it) -> gemini (validates it: validation_complete, passed)
//! ```
//!
//! then flushes, prints the hub's KPIs and exits. The hub is
//! `$AGENTPULSE_HUB_URL` (default `http://127.0.0.1:3010`), with
//! `$AGENTPULSE_TOKEN` if it needs one:
//!
//! ```sh
//! cargo run --release -- serve &
//! cargo run --example rust_agent
//! ```
//!
//! (tests/clients.rs runs [`run`] against a real hub.)

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agentpulse::client::{Client, ClientError, ClientStats};
use serde_json::{json, Value};

const MODEL: &str = "claude-sonnet-4.5";

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    /// The task it ran.
    pub task_id: String,
    /// Events emitted.
    pub emitted: u64,
    /// The client's counters after the flush.
    pub stats: ClientStats,
    /// The hub's `/api/metrics` document afterwards.
    pub metrics: Value,
}

/// An agent whose every run is reported as `agent_started` /
/// `agent_completed`.
struct Agent {
    name: &'static str,
    tools: &'static [&'static str],
    cost_usd: f64,
    verdict: &'static str,
}

impl Agent {
    fn run(&self, client: &Client, task_id: &str) -> Result<&'static str, ClientError> {
        let start = Instant::now();
        client.emit(
            "agent_started",
            json!({"agent": self.name, "task_id": task_id, "model": MODEL, "tools": self.tools}),
        )?;
        std::thread::sleep(Duration::from_millis(50)); // the agent's work
        client.emit(
            "agent_completed",
            json!({
                "agent": self.name,
                "task_id": task_id,
                "status": self.verdict,
                "duration_ms": start.elapsed().as_millis() as u64,
                "cost_usd": self.cost_usd,
            }),
        )?;
        Ok(self.verdict)
    }
}

/// Gemini's validation: its own start, then `validation_complete`.
fn validate(client: &Client, task_id: &str) -> Result<(), ClientError> {
    let start = Instant::now();
    client.emit(
        "agent_started",
        json!({"agent": "gemini", "task_id": task_id, "model": "gemini-2.5-pro", "tools": ["browser"]}),
    )?;
    std::thread::sleep(Duration::from_millis(50)); // the browser run
    client.emit(
        "validation_complete",
        json!({
            "task_id": task_id,
            "result": {"passed": true, "browser_launched": true, "test_executed": true, "test_passed": true},
            "cost": 0.08,
            "duration_ms": start.elapsed().as_millis() as u64,
            "screenshots": 3,
        }),
    )
}

/// Runs one task against the hub at `hub_url` and returns what happened.
pub fn run(hub_url: &str, token: Option<&str>) -> Result<RunSummary, Box<dyn std::error::Error>> {
    let mut builder = Client::builder(hub_url);
    if let Some(t) = token {
        builder = builder.token(t);
    }
    let client = builder.build()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let task_id = format!("t_rs_{nanos:08x}");
    client.emit(
        "task_queued",
        json!({"task_id": task_id, "feature": "user_authentication", "est_cost": 0.35,
               "timestamp": agentpulse::event::now_unix()}),
    )?;
    let team = [
        Agent {
            name: "scribe",
            tools: &["read", "write", "edit", "grep"],
            cost_usd: 0.12,
            verdict: "success",
        },
        // The critic's "approved" completion is its decision; the hub counts
        // it (record_critic_decision would count the same decision twice).
        Agent {
            name: "critic",
            tools: &["read"],
            cost_usd: 0.02,
            verdict: "approved",
        },
        Agent {
            name: "runner",
            tools: &["bash"],
            cost_usd: 0.01,
            verdict: "success",
        },
    ];
    for agent in &team {
        agent.run(&client, &task_id)?;
    }
    validate(&client, &task_id)?;
    let emitted = 9;
    if !client.flush(Duration::from_secs(5)) {
        return Err(format!(
            "could not deliver every event to {hub_url}: {:?}",
            client.stats()
        )
        .into());
    }
    // The hub's engine takes acknowledged events a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let m = client.get_metrics(Duration::from_secs(5))?;
        let validations = m["window"]["samples"]["validations"].as_u64().unwrap_or(0);
        if validations >= 1 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stats = client.stats();
    client.close(Duration::from_secs(2));
    Ok(RunSummary {
        task_id,
        emitted,
        stats,
        metrics,
    })
}

fn main() -> ExitCode {
    let hub = std::env::var("AGENTPULSE_HUB_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:3010".into());
    let token = std::env::var("AGENTPULSE_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    match run(&hub, token.as_deref()) {
        Ok(s) => {
            println!(
                "task {}: {} events delivered to {hub} ({} sent)",
                s.task_id, s.emitted, s.stats.sent
            );
            println!("KPIs over the hub's window:");
            // Utilization is busy time over the whole window (60 min by
            // default) and the number of agents: a few seconds of work is a
            // small percentage.
            for name in agentpulse::config::KPI_NAMES {
                let v = s.metrics[name].as_f64().unwrap_or(0.0);
                let shown = match name {
                    "agent_utilization" => format!("{:.4}%", v * 100.0),
                    "cost_per_feature" => format!("${v:.3}"),
                    "average_retry_count" => format!("{v:.2}"),
                    "time_to_completion" => format!("{v:.3} s"),
                    _ => format!("{:.1}%", v * 100.0),
                };
                println!("  {name:<24} {shown}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rust_agent: {e}");
            ExitCode::FAILURE
        }
    }
}
