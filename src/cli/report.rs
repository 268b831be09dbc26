//! `agentpulse report FILE.jsonl...`: the six KPIs computed offline from
//! logs, overall, per agent and per feature, as a table or `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use agentpulse::config::KPI_NAMES;
use agentpulse::logfile::EventLog;
use agentpulse::metrics::{MetricsConfig, MetricsEngine};
use agentpulse::sinks::redis_metrics::store::value_json;
use agentpulse::sinks::redis_metrics::Keys;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSONL logs (plain or .gz), read in the order given.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print the KPIs of every hourly, daily or weekly bucket instead (JSON,
    /// keyed like the Redis values: `metrics:hourly:2026-12-01T07:00:00`).
    #[arg(long, visible_alias = "bucket")]
    buckets: Option<String>,
}

/// Unreadable lines named one by one before they are only counted.
const SHOWN_ERRORS: u64 = 20;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut engine = MetricsEngine::new(if args.buckets.is_some() {
        MetricsConfig::keeping_every_bucket()
    } else {
        MetricsConfig::default()
    });
    let (mut events, mut bad, mut shown) = (0u64, 0u64, 0u64);
    for path in &args.files {
        let mut log = EventLog::open(path)?;
        let size = log.file_size();
        let bar = super::progress_bar(size);
        let progress = log.progress();
        let mut seen = 0u64;
        // One thread: parsing on a second thread measured slower (the
        // events' memory then moves between threads). Only the fields the
        // KPIs need are read, borrowed from the line; lines of the
        // original format (no id) count in file order like the others.
        let stats = log.read_fields(
            |_, _, fields| {
                engine.observe_fields(fields);
                seen += 1;
                if seen.is_multiple_of(65_536) {
                    bar.set_position(progress.bytes_read());
                }
            },
            |err| {
                if shown < SHOWN_ERRORS {
                    eprintln!("{err}: skipped");
                }
                shown += 1;
            },
        )?;
        bad += stats.errors;
        events += stats.events;
        bar.finish_and_clear();
    }
    if bad > SHOWN_ERRORS {
        eprintln!("... {} more unreadable lines skipped", bad - SHOWN_ERRORS);
    }
    if let Some(name) = &args.buckets {
        let g = super::redis_cmds::stored_granularity("--buckets", name)?;
        let keys = Keys::default();
        let out: serde_json::Map<String, Value> = engine
            .buckets(g)
            .map(|(start, b)| (keys.value_key(g, start), value_json(b, g)))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let report = serde_json::to_value(engine.report())?;
    if args.json {
        let mut doc = report;
        doc["events"] = events.into();
        doc["unreadable_lines"] = bad.into();
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{}{}\n",
        super::plural(events, "event", "events"),
        if bad > 0 {
            format!(
                " ({} skipped)",
                super::plural(bad, "unreadable line", "unreadable lines")
            )
        } else {
            String::new()
        }
    );
    outln!("Overall");
    for name in KPI_NAMES {
        outln!("  {name:<24} {}", fmt(&report["overall"][name]));
    }
    for extra in ["time_to_completion_p50", "time_to_completion_p95"] {
        if let Some(v) = report["overall"].get(extra) {
            outln!("  {extra:<24} {}", fmt(v));
        }
    }
    print_table("Per agent", &report["agents"])?;
    print_table("Per feature", &report["features"])?;
    Ok(ExitCode::SUCCESS)
}

fn fmt(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() => format!("{x:.4}"),
        Some(x) => format!("{x}"),
        None => v.to_string(),
    }
}

/// Prints a map of name → flat object as a table with a column per key.
fn print_table(title: &str, rows: &Value) -> anyhow::Result<()> {
    let Some(rows) = rows.as_object().filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let columns: Vec<String> = rows
        .values()
        .next()
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter(|(_, v)| !v.is_object() && !v.is_array())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let name_w = rows.keys().map(String::len).max().unwrap_or(4).max(4);
    outln!("\n{title}");
    out!("  {:<name_w$}", "name");
    for c in &columns {
        out!("  {c:>w$}", w = c.len().max(10));
    }
    outln!();
    for (name, row) in rows {
        out!("  {name:<name_w$}");
        for c in &columns {
            out!("  {:>w$}", fmt(&row[c]), w = c.len().max(10));
        }
        outln!();
    }
    Ok(())
}
