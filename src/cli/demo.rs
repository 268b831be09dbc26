//! `agentpulse demo`: the original example's workflows, played against a
//! running hub (`--hub URL`) or an in-process pipeline.
//!
//! - default, the success path of task `t_001`: queued → scribe writes the
//!   test → critic approves → runner executes → gemini validates (passed)
//!   → budget warning;
//! - `--failure`, task `t_002`: scribe → critic approves → runner fails →
//!   medic fails twice → HITL escalation → budget exceeded;
//! - `--tasks N [--agents M] [--seed S]`: a randomised but seeded fleet of N
//!   tasks on M teams working in parallel (agents `scribe-1`, `critic-1`,
//!   ..., `gemini-M`; critics' verdicts as `critic_decision` events), with
//!   critic rejections, runner failures, medic fixes, escalations and
//!   budget events; the same seed gives the same events.
//!
//! Every event's timestamp is the start time plus its offset in the
//! workflow, whatever `--speed` is: `--speed 1` pauses between events as
//! long as their offsets say (the success path takes 4 s, the failure path
//! 5.2 s), `--speed 0.5` half as long, `--speed 0` not at all. So the final
//! KPIs, computed from the run's own events (`report`'s "overall" figures:
//! utilization over the run's time span), are the same at any speed. The
//! start time is `--start`, else chosen so that no event is stamped after
//! the moment it is sent: now at `--speed 1` or slower, and at `--speed 0`
//! the run's span before now (the last event is stamped when it is sent).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use agentpulse::config::KPI_NAMES;
use agentpulse::emitter::Emitter;
use agentpulse::event::{now_unix, Event, NewEvent};
use agentpulse::metrics::{MetricsConfig, MetricsEngine};
use agentpulse::pipeline::QueuePolicy;
use agentpulse::sinks::console::{format_event, ConsoleSink, Level};
use agentpulse::Client;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Play the failure path (runner fails, medic fails twice, HITL
    /// escalation, budget exceeded) instead of the success path.
    #[arg(long, conflicts_with = "tasks")]
    failure: bool,
    /// Send to a running hub (e.g. http://127.0.0.1:3010) instead of an
    /// in-process pipeline.
    #[arg(long, env = "AGENTPULSE_HUB_URL", value_parser = super::hub_url)]
    hub: Option<String>,
    /// The hub's token.
    #[arg(long, env = "AGENTPULSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: super::TlsArgs,
    /// Directory of the in-process pipeline's log (default: a new
    /// temporary directory, kept and named in the output).
    #[arg(long, conflicts_with = "hub")]
    log_dir: Option<PathBuf>,
    /// Print every event in the console format (on stderr with --json).
    #[arg(long, short)]
    verbose: bool,
    /// Pause scale: 1 = the workflow's own pauses (a few seconds), 0.5 =
    /// twice as fast, 0 = no pauses. Timestamps do not depend on it.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Play a randomised fleet of this many tasks instead.
    #[arg(long)]
    tasks: Option<u32>,
    /// Teams working in parallel in the fleet.
    #[arg(long, default_value_t = 4, requires = "tasks")]
    agents: u32,
    /// Seed of the fleet's randomness (same seed, same events).
    #[arg(long, default_value_t = 1, requires = "tasks")]
    seed: u64,
    /// Unix seconds of the first event (default: now).
    #[arg(long)]
    start: Option<f64>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// One event of a workflow, `at` milliseconds after its start.
#[derive(Debug, Clone)]
pub struct DemoEvent {
    at: u64,
    event_type: &'static str,
    payload: Value,
}

fn ev(at: u64, event_type: &'static str, payload: Value) -> DemoEvent {
    DemoEvent {
        at,
        event_type,
        payload,
    }
}

const SONNET: &str = "claude-sonnet-4.5";
const HAIKU: &str = "claude-haiku-4.5";
const GEMINI: &str = "gemini-2.5-pro";

/// The original example's success path (offsets in ms).
pub fn success_workflow() -> Vec<DemoEvent> {
    let t = "t_001";
    vec![
        ev(
            0,
            "task_queued",
            json!({"task_id": t, "feature": "user_authentication", "est_cost": 0.35}),
        ),
        ev(
            200,
            "agent_started",
            json!({"agent": "scribe", "task_id": t, "model": SONNET, "tools": ["read", "write", "edit", "grep"]}),
        ),
        ev(
            1200,
            "agent_completed",
            json!({"agent": "scribe", "task_id": t, "status": "success", "duration_ms": 1000, "cost_usd": 0.12}),
        ),
        ev(
            1400,
            "agent_started",
            json!({"agent": "critic", "task_id": t, "model": HAIKU, "tools": ["read"]}),
        ),
        ev(
            1800,
            "agent_completed",
            json!({"agent": "critic", "task_id": t, "status": "approved", "duration_ms": 400, "cost_usd": 0.02}),
        ),
        ev(
            2000,
            "agent_started",
            json!({"agent": "runner", "task_id": t, "model": HAIKU, "tools": ["bash"]}),
        ),
        ev(
            2600,
            "agent_completed",
            json!({"agent": "runner", "task_id": t, "status": "success", "duration_ms": 600, "cost_usd": 0.01}),
        ),
        ev(
            2800,
            "agent_started",
            json!({"agent": "gemini", "task_id": t, "model": GEMINI, "tools": ["browser", "screenshot"]}),
        ),
        ev(
            3800,
            "validation_complete",
            json!({"task_id": t, "result": {"passed": true, "browser_launched": true, "test_executed": true, "test_passed": true}, "cost": 0.08, "duration_ms": 1000, "screenshots": 3}),
        ),
        ev(
            4000,
            "budget_warning",
            json!({"current_spend": 8.23, "limit": 10.0, "remaining": 1.77}),
        ),
    ]
}

/// The original example's failure path (offsets in ms).
pub fn failure_workflow() -> Vec<DemoEvent> {
    let t = "t_002";
    let error = "TimeoutError: the checkout button never appeared (30000 ms)";
    vec![
        ev(
            0,
            "task_queued",
            json!({"task_id": t, "feature": "payment_processing", "est_cost": 0.5}),
        ),
        ev(
            200,
            "agent_started",
            json!({"agent": "scribe", "task_id": t, "model": SONNET, "tools": ["read", "write", "edit", "grep"]}),
        ),
        ev(
            1000,
            "agent_completed",
            json!({"agent": "scribe", "task_id": t, "status": "success", "duration_ms": 800, "cost_usd": 0.10}),
        ),
        ev(
            1200,
            "agent_started",
            json!({"agent": "critic", "task_id": t, "model": HAIKU, "tools": ["read"]}),
        ),
        ev(
            1600,
            "agent_completed",
            json!({"agent": "critic", "task_id": t, "status": "approved", "duration_ms": 400, "cost_usd": 0.02}),
        ),
        ev(
            1800,
            "agent_started",
            json!({"agent": "runner", "task_id": t, "model": HAIKU, "tools": ["bash"]}),
        ),
        ev(
            2400,
            "agent_completed",
            json!({"agent": "runner", "task_id": t, "status": "failed", "duration_ms": 600, "cost_usd": 0.01, "error": error}),
        ),
        ev(
            2600,
            "agent_started",
            json!({"agent": "medic", "task_id": t, "model": SONNET, "tools": ["read", "edit", "bash"]}),
        ),
        ev(
            3600,
            "agent_completed",
            json!({"agent": "medic", "task_id": t, "status": "failed", "duration_ms": 1000, "cost_usd": 0.15}),
        ),
        ev(
            3800,
            "agent_started",
            json!({"agent": "medic", "task_id": t, "model": SONNET, "tools": ["read", "edit", "bash"]}),
        ),
        ev(
            4800,
            "agent_completed",
            json!({"agent": "medic", "task_id": t, "status": "failed", "duration_ms": 1000, "cost_usd": 0.15}),
        ),
        ev(
            5000,
            "hitl_escalated",
            json!({"task_id": t, "attempts": 2, "last_error": error, "priority": "high"}),
        ),
        ev(
            5200,
            "budget_exceeded",
            json!({"current_spend": 10.42, "limit": 10.0, "tasks_blocked": 3}),
        ),
    ]
}

const FEATURES: [&str; 8] = [
    "user_authentication",
    "checkout",
    "search",
    "payment_processing",
    "profile_settings",
    "notifications",
    "file_upload",
    "onboarding",
];

/// xorshift64*: small, fast, and the same sequence everywhere for a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let s = seed ^ 0x9E37_79B9_7F4A_7C15;
        Rng(if s == 0 { 1 } else { s })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// In [lo, hi].
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A cost in [lo, hi), to the 1/10,000 of a dollar.
    fn cost(&mut self, lo: f64, hi: f64) -> f64 {
        ((lo + (hi - lo) * self.unit()) * 10_000.0).round() / 10_000.0
    }
}

/// Builds a fleet's events on one timeline.
struct Fleet {
    rng: Rng,
    events: Vec<DemoEvent>,
}

impl Fleet {
    /// One agent run: started at `t`, completed after a random duration.
    /// Returns the completion time.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        t: u64,
        agent: &str,
        task: &str,
        model: &str,
        tools: Value,
        dur: (u64, u64),
        cost: (f64, f64),
        status: &str,
    ) -> u64 {
        let d = self.rng.range(dur.0, dur.1);
        let c = self.rng.cost(cost.0, cost.1);
        self.events.push(ev(
            t,
            "agent_started",
            json!({"agent": agent, "task_id": task, "model": model, "tools": tools}),
        ));
        self.events.push(ev(
            t + d,
            "agent_completed",
            json!({"agent": agent, "task_id": task, "status": status, "duration_ms": d, "cost_usd": c}),
        ));
        t + d
    }
}

/// `tasks` tasks on `agents` parallel teams, from `seed`.
pub fn fleet_workflow(tasks: u32, agents: u32, seed: u64) -> Vec<DemoEvent> {
    let teams = agents.max(1) as usize;
    let mut f = Fleet {
        rng: Rng::new(seed),
        events: Vec::new(),
    };
    let mut free_at = vec![0u64; teams];
    // About one task per team every five seconds.
    let mean_gap = (5_000 / teams as u64).max(40);
    let mut arrival = 0u64;
    for i in 0..tasks {
        let task = format!("t_{:04}", i + 1);
        let feature = FEATURES[f.rng.range(0, FEATURES.len() as u64 - 1) as usize];
        if i > 0 {
            arrival += f.rng.range(mean_gap / 2, mean_gap * 3 / 2);
        }
        let est = f.rng.cost(0.2, 0.8);
        f.events.push(ev(
            arrival,
            "task_queued",
            json!({"task_id": task, "feature": feature, "est_cost": est}),
        ));
        let k = (0..teams).min_by_key(|&k| free_at[k]).unwrap_or(0);
        let name = |role: &str| format!("{role}-{}", k + 1);
        let mut t = arrival.max(free_at[k]) + 100;
        // The scribe writes; the critic may reject once, then it rewrites.
        let mut rejected_once = false;
        loop {
            t = f.run(
                t,
                &name("scribe"),
                &task,
                SONNET,
                json!(["read", "write", "edit", "grep"]),
                (600, 2000),
                (0.05, 0.2),
                "success",
            );
            let rejected = !rejected_once && f.rng.chance(0.2);
            let verdict = if rejected { "rejected" } else { "approved" };
            t = f.run(
                t + 100,
                &name("critic"),
                &task,
                HAIKU,
                json!(["read"]),
                (200, 600),
                (0.01, 0.03),
                verdict,
            );
            f.events
                .push(ev(t, "critic_decision", json!({"rejected": rejected})));
            if !rejected {
                break;
            }
            rejected_once = true;
            t += 100;
        }
        let runner_fails = f.rng.chance(0.25);
        let status = if runner_fails { "failed" } else { "success" };
        t = f.run(
            t + 100,
            &name("runner"),
            &task,
            HAIKU,
            json!(["bash"]),
            (300, 1200),
            (0.005, 0.02),
            status,
        );
        if runner_fails {
            let mut fixed = false;
            for _ in 0..2 {
                let ok = f.rng.chance(0.6);
                t = f.run(
                    t + 100,
                    &name("medic"),
                    &task,
                    SONNET,
                    json!(["read", "edit", "bash"]),
                    (500, 1500),
                    (0.05, 0.2),
                    if ok { "success" } else { "failed" },
                );
                if ok {
                    fixed = true;
                    break;
                }
            }
            if !fixed {
                f.events.push(ev(
                    t + 100,
                    "hitl_escalated",
                    json!({"task_id": task, "attempts": 2,
                           "last_error": "AssertionError: expected the page to show the new state",
                           "priority": "high"}),
                ));
                free_at[k] = t + 200;
                continue;
            }
            // The fix is checked by running the test again.
            t = f.run(
                t + 100,
                &name("runner"),
                &task,
                HAIKU,
                json!(["bash"]),
                (300, 1200),
                (0.005, 0.02),
                "success",
            );
        }
        let gemini = name("gemini");
        let start = t + 100;
        f.events.push(ev(
            start,
            "agent_started",
            json!({"agent": gemini, "task_id": task, "model": GEMINI, "tools": ["browser", "screenshot"]}),
        ));
        let d = f.rng.range(800, 2500);
        let passed = f.rng.chance(0.85);
        let cost = f.rng.cost(0.03, 0.1);
        let shots = f.rng.range(1, 5);
        t = start + d;
        f.events.push(ev(
            t,
            "validation_complete",
            json!({"task_id": task,
                   "result": {"passed": passed, "browser_launched": true, "test_executed": true, "test_passed": passed},
                   "cost": cost, "duration_ms": d, "screenshots": shots}),
        ));
        free_at[k] = t + 100;
    }
    // In time order; a task's own events keep their order.
    f.events.sort_by_key(|e| e.at);
    add_budget_events(f.events, tasks)
}

/// Inserts a `budget_warning` where the spend first reaches 80 % of the
/// budget and a `budget_exceeded` where it first passes it.
fn add_budget_events(events: Vec<DemoEvent>, tasks: u32) -> Vec<DemoEvent> {
    let limit = (f64::from(tasks) * 0.25).max(0.5);
    let limit = (limit * 100.0).round() / 100.0;
    let queued_after: Vec<u64> = {
        // Tasks queued after each position (blocked by an exceeded budget).
        let mut left = events
            .iter()
            .filter(|e| e.event_type == "task_queued")
            .count() as u64;
        events
            .iter()
            .map(|e| {
                if e.event_type == "task_queued" {
                    left -= 1;
                }
                left
            })
            .collect()
    };
    let mut out = Vec::with_capacity(events.len() + 2);
    let (mut spend, mut warned, mut exceeded) = (0.0f64, false, false);
    for (i, e) in events.into_iter().enumerate() {
        let cost = match e.event_type {
            "agent_completed" => e.payload["cost_usd"].as_f64().unwrap_or(0.0),
            "validation_complete" => e.payload["cost"].as_f64().unwrap_or(0.0),
            _ => 0.0,
        };
        spend += cost;
        let at = e.at;
        out.push(e);
        let cur = (spend * 100.0).round() / 100.0;
        if !warned && spend >= 0.8 * limit {
            warned = true;
            let remaining = ((limit - spend) * 100.0).round() / 100.0;
            out.push(ev(
                at,
                "budget_warning",
                json!({"current_spend": cur, "limit": limit, "remaining": remaining}),
            ));
        }
        if !exceeded && spend > limit {
            exceeded = true;
            out.push(ev(
                at,
                "budget_exceeded",
                json!({"current_spend": cur, "limit": limit, "tasks_blocked": queued_after[i]}),
            ));
        }
    }
    out
}

/// Where the demo's events go.
enum Target {
    Local { emitter: Emitter, log: PathBuf },
    Hub(Client),
}

pub fn run(config: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    if !(args.speed.is_finite() && args.speed >= 0.0) {
        bail!("--speed: expected a number >= 0, got {}", args.speed);
    }
    let (name, tasks, events) = match args.tasks {
        Some(n) => ("fleet", n, fleet_workflow(n, args.agents, args.seed)),
        None if args.failure => ("failure", 1, failure_workflow()),
        None => ("success", 1, success_workflow()),
    };
    // Faster than real time, the run is laid out so that it ends now:
    // no event is stamped later than the moment it is sent (a stamp in the
    // future would keep a dashboard's KPIs moving after the run, and fire
    // alerts late).
    let span = events.last().map_or(0.0, |e| e.at as f64 / 1000.0);
    let start = args
        .start
        .unwrap_or_else(|| now_unix() - span * (1.0 - args.speed).max(0.0));
    if !(start.is_finite() && start >= 0.0) {
        bail!("--start: expected Unix seconds >= 0");
    }
    let verbose_to_stderr = args.json;
    let target = match &args.hub {
        Some(url) => {
            let mut b = Client::builder(url).ca_cert(args.tls.ca_cert.clone());
            if let Some(t) = &args.token {
                b = b.token(t.as_str());
            }
            let client = b.build()?;
            super::check_hub(client.hub_url(), args.token.as_deref(), &args.tls)?;
            Target::Hub(client)
        }
        None => {
            let dir = match &args.log_dir {
                Some(d) => d.clone(),
                None => temp_dir()?,
            };
            let cfg = super::load_config(config)?;
            let mut b = Emitter::builder()
                .config(cfg)
                .log_dir(&dir)
                .policy(QueuePolicy::Block);
            b = if !args.verbose {
                b.quiet()
            } else if verbose_to_stderr {
                b.console_sink(ConsoleSink::new(
                    Box::new(std::io::stderr()),
                    false,
                    Level::Debug,
                ))
            } else {
                b.console(Level::Debug)
            };
            let emitter = b.build()?;
            emitter.start()?;
            let log = dir.join(agentpulse::sinks::jsonl::JsonlConfig::default().file_name);
            Target::Local { emitter, log }
        }
    };

    let mut engine = MetricsEngine::new(MetricsConfig::default());
    let began = Instant::now();
    let mut last_ts = start;
    for (i, e) in events.iter().enumerate() {
        if args.speed > 0.0 {
            let due = began + Duration::from_secs_f64(e.at as f64 / 1000.0 * args.speed);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let ts = start + e.at as f64 / 1000.0;
        last_ts = ts;
        let mut payload: Map<String, Value> = e.payload.as_object().cloned().unwrap_or_default();
        if e.event_type == "task_queued" {
            payload.insert("timestamp".into(), json!(ts));
        }
        let event = Event {
            id: i as u64 + 1,
            event_type: Arc::from(e.event_type),
            timestamp: ts,
            event_id: None,
            payload: payload.clone(),
        };
        engine.observe(&event);
        let new = NewEvent::new(e.event_type, payload).with_timestamp(ts);
        match &target {
            Target::Local { emitter, .. } => emitter
                .emit_event(new)
                .with_context(|| format!("event {} ({})", i + 1, e.event_type))?,
            Target::Hub(client) => {
                if args.verbose {
                    let mut buf = Vec::new();
                    format_event(&event, false, &mut buf);
                    if verbose_to_stderr {
                        std::io::stderr().write_all(&buf)?;
                    } else {
                        std::io::stdout().write_all(&buf)?;
                    }
                }
                // A large fleet at full speed: let the queue drain.
                while client.stats().queued >= 8_000 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                client
                    .emit_event(new)
                    .with_context(|| format!("event {} ({})", i + 1, e.event_type))?;
            }
        }
    }

    let destination = match &target {
        Target::Local { emitter, log } => {
            emitter.stop()?;
            let s = emitter.stats();
            json!({"log": log, "recorded": s.accepted, "rejected": s.rejected, "dropped": s.dropped})
        }
        Target::Hub(client) => {
            let delivered = super::replay::drain(client, Duration::from_secs(30));
            let s = client.stats();
            client.close(Duration::from_secs(1));
            if !delivered || s.rejected > 0 {
                eprintln!(
                    "warning: not every event reached the hub at {}: {} sent, {} rejected, {} still queued ({})",
                    client.hub_url(),
                    s.sent,
                    s.rejected,
                    s.queued,
                    s.last_error.as_deref().unwrap_or("no answer")
                );
            }
            json!({"hub": client.hub_url(), "sent": s.sent, "duplicates": s.duplicates,
                   "rejected": s.rejected, "undelivered": s.queued + s.lost})
        }
    };
    let report = engine.report();
    let kpis = serde_json::to_value(&report.overall)?;
    let span = last_ts - start;
    if args.json {
        let doc = json!({
            "workflow": name,
            "tasks": tasks,
            "events": events.len(),
            "start": start,
            "span_seconds": span,
            "destination": destination,
            "kpis": kpis,
            "agents": report.agents,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_summary(name, tasks, events.len(), span, &destination, &kpis)?;
    }
    let failed = destination["rejected"].as_u64().unwrap_or(0) > 0
        || destination["undelivered"].as_u64().unwrap_or(0) > 0;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(
    name: &str,
    tasks: u32,
    events: usize,
    span: f64,
    destination: &Value,
    kpis: &Value,
) -> anyhow::Result<()> {
    outln!(
        "agentpulse demo: {name} workflow, {}, {} over {span:.1} s",
        super::plural(tasks, "task", "tasks"),
        super::plural(events as u64, "event", "events")
    );
    if let Some(log) = destination["log"].as_str() {
        outln!("recorded in {log}");
    } else {
        outln!(
            "sent to {}: {} stored ({} duplicates), {} rejected",
            destination["hub"].as_str().unwrap_or("?"),
            destination["sent"],
            destination["duplicates"],
            destination["rejected"]
        );
        outln!("dashboard: {}/", destination["hub"].as_str().unwrap_or("?"));
    }
    outln!("\nKPIs of this run (over its {span:.1} s)");
    for name in KPI_NAMES {
        let v = kpis[name].as_f64().unwrap_or(0.0);
        let unit = if name == "time_to_completion" {
            " s"
        } else {
            ""
        };
        outln!("  {name:<24} {v:.4}{unit}");
    }
    let s = &kpis["samples"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    outln!(
        "  (samples: {}, {} completed, {} finished, {}, {})",
        super::plural(n("agents"), "agent", "agents"),
        super::plural(n("features_completed"), "feature", "features"),
        super::plural(n("tasks_finished"), "task", "tasks"),
        super::plural(n("critic_decisions"), "critic decision", "critic decisions"),
        super::plural(n("validations"), "validation", "validations"),
    );
    Ok(())
}

/// A new directory under the system's temporary directory.
fn temp_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "agentpulse-demo-{}-{nanos:08x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleets_are_seeded_and_well_formed() {
        let a = fleet_workflow(30, 3, 7);
        let b = fleet_workflow(30, 3, 7);
        let c = fleet_workflow(30, 3, 8);
        let key = |v: &[DemoEvent]| {
            v.iter()
                .map(|e| format!("{} {} {}", e.at, e.event_type, e.payload))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        let queued = a.iter().filter(|e| e.event_type == "task_queued").count();
        assert_eq!(queued, 30);
        // Every task ends: validated or escalated.
        let ends = a
            .iter()
            .filter(|e| matches!(e.event_type, "validation_complete" | "hitl_escalated"))
            .count();
        assert_eq!(ends, 30);
        let teams: std::collections::BTreeSet<&str> = a
            .iter()
            .filter_map(|e| e.payload["agent"].as_str())
            .filter_map(|a| a.rsplit_once('-').map(|(_, k)| k))
            .collect();
        assert_eq!(teams.len(), 3);
        assert_eq!(
            a.iter()
                .filter(|e| e.event_type == "budget_warning")
                .count(),
            1
        );
    }
}
