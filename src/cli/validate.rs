//! `agentpulse validate FILE.jsonl...`: checks every line of the logs
//! against the schema and reports each bad line as `path:line: error`.
//! Lines in the original format (without `id`) are accepted; where ids are
//! present they must increase.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::Value;

use agentpulse::config::Config;
use agentpulse::logfile::LogReader;
use agentpulse::schema::{parse_new_event, Schema};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSONL logs (plain or .gz).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Refuse event types the schema does not declare.
    #[arg(long)]
    strict: bool,
    /// Stop listing after this many bad lines (all are still counted).
    #[arg(long, default_value_t = 1000)]
    max_errors: usize,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load_or_builtin(config)?;
    let mut schema = Schema::from_config(&config)?;
    if args.strict {
        schema.set_strict(true);
    }
    let (mut lines, mut bad) = (0u64, 0u64);
    let mut last_id: Option<u64> = None;
    for path in &args.files {
        let mut reader = LogReader::open(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let bar = super::progress_bar(reader.file_size());
        let progress = reader.progress();
        reader.for_each_line(|line| {
            if line.number.is_multiple_of(65_536) {
                bar.set_position(progress.bytes_read());
            }
            if line.bytes.iter().all(u8::is_ascii_whitespace) {
                return ControlFlow::Continue(());
            }
            lines += 1;
            let problem = if !line.terminated {
                Some("torn last line (no newline): an interrupted write".to_string())
            } else {
                check_line(&schema, line.bytes, &mut last_id).err()
            };
            if let Some(p) = problem {
                bad += 1;
                if bad as usize <= args.max_errors {
                    println!("{}:{}: {p}", path.display(), line.number);
                }
            }
            ControlFlow::Continue(())
        })?;
        bar.finish_and_clear();
    }
    if bad as usize > args.max_errors {
        println!(
            "... {} more bad lines not listed",
            bad as usize - args.max_errors
        );
    }
    println!(
        "{lines} events checked, {} valid, {bad} invalid",
        lines - bad
    );
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check_line(schema: &Schema, bytes: &[u8], last_id: &mut Option<u64>) -> Result<(), String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
    let id = match value.get("id") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| format!("event.id: expected an integer >= 0, got {v}"))?,
        ),
    };
    let ty = value["event_type"].as_str().unwrap_or("event").to_string();
    // Order is checked on every line that has an id, valid or not, so one
    // bad line does not hide an ordering fault after it.
    if let Some(id) = id {
        let prev = last_id.replace(id);
        if let Some(prev) = prev.filter(|p| id <= *p) {
            return Err(format!(
                "{ty}.id: {id} does not follow {prev} (ids must increase)"
            ));
        }
    }
    let event = parse_new_event(value, |t| Arc::from(t)).map_err(|e| e.to_string())?;
    schema.validate(&event).map_err(|e| e.to_string())
}
