//! `agentpulse validate-config [--config PATH]`: checks a configuration file
//! (schema, destinations, metrics, alert rules, notifiers, budgets) without
//! starting anything.

use std::path::Path;
use std::process::ExitCode;

use agentpulse::config::Config;
use agentpulse::schema::Schema;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to check (or the global `--config`).
    file: Option<std::path::PathBuf>,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let path = args.file.as_deref().or(config);
    let config = match Config::load_or_builtin(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let schema = Schema::from_config(&config)?;
    let rules = agentpulse::alerts::parse_rules(&config)?;
    println!(
        "{}: ok: {} event types, {} alert rules, {} notifier actions, {} budgets{}",
        config.origin,
        schema.declared_types().len(),
        rules.len(),
        config.notifiers.len(),
        config.budgets.len(),
        if config.strict { ", strict" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}
