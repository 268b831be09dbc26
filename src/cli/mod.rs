//! Command-line interface: one file per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod claude_hook;
mod demo;
mod emit;
mod redis_cmds;
mod replay;
mod report;
mod serve;
mod tail;
mod validate;
mod validate_config;

/// agentpulse: real-time observability for multi-agent LLM systems.
#[derive(Debug, Parser)]
#[command(name = "agentpulse", version, about, propagate_version = true)]
pub struct Cli {
    /// Schema and configuration file (default: the built-in observability.yaml).
    #[arg(long, global = true, env = "AGENTPULSE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: ingest, live stream, log, metrics.
    Serve(serve::Args),
    /// Validate and record one event.
    Emit(emit::Args),
    /// Check JSONL logs against the schema; reports every bad line.
    Validate(validate::Args),
    /// Check a configuration file (schema, alerts, notifiers, budgets).
    ValidateConfig(validate_config::Args),
    /// Compute the six KPIs from JSONL logs, offline.
    Report(report::Args),
    /// Print a hub's live stream, resuming after disconnects.
    Tail(tail::Args),
    /// Print bucket metrics stored in Redis.
    Metrics(redis_cmds::MetricsArgs),
    /// Recompute the Redis bucket metrics from JSONL logs (idempotent).
    RebuildMetrics(redis_cmds::RebuildArgs),
    /// Load generator against a running hub.
    Bench(bench::Args),
    /// Play the original example's workflows (or a seeded fleet) and print
    /// the resulting KPIs.
    Demo(demo::Args),
    /// Send the events of JSONL logs to a running hub, in order, with their
    /// timestamps (replaying twice counts nothing twice).
    Replay(replay::Args),
    /// Claude Code hook command: turn the hook JSON on stdin into events
    /// and send them to a hub.
    ClaudeHook(claude_hook::Args),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve::run(cli.config.as_deref(), args),
        Command::Emit(args) => emit::run(cli.config.as_deref(), args),
        Command::Validate(args) => validate::run(cli.config.as_deref(), args),
        Command::Report(args) => report::run(args),
        Command::ValidateConfig(args) => validate_config::run(cli.config.as_deref(), args),
        Command::Tail(args) => tail::run(args),
        Command::Metrics(args) => redis_cmds::metrics(args),
        Command::RebuildMetrics(args) => redis_cmds::rebuild(args),
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(cli.config.as_deref(), args),
        Command::Replay(args) => replay::run(args),
        Command::ClaudeHook(args) => claude_hook::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTPULSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A progress bar on stderr for reading `total` bytes, hidden when stderr
/// is not a terminal or the input is small.
pub(crate) fn progress_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if total < 64 * 1024 * 1024 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
