//! `agentpulse validate FILE.jsonl...`: checks every line of the logs
//! against the schema and reports each bad line as `path:line: error`.
//! Lines are read as `report` and `replay` read them
//! ([`agentpulse::logfile::EventLog`]): agentpulse's format or the
//! original's (without `id`); where ids are present they must increase.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agentpulse::logfile::{EventLog, LogError, LoggedEvent};
use agentpulse::schema::Schema;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSONL logs (plain or .gz).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Refuse event types the schema does not declare.
    #[arg(long, env = "AGENTPULSE_STRICT")]
    strict: bool,
    /// Stop listing after this many bad lines (all are still counted).
    #[arg(long, default_value_t = 1000)]
    max_errors: usize,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config)?;
    let mut schema = Schema::from_config(&config)?;
    if args.strict {
        schema.set_strict(true);
    }
    let (mut lines, mut bad, mut not_logs) = (0u64, 0u64, 0u64);
    let mut last_id: Option<u64> = None;
    // Bad lines are listed as they come, from either callback.
    let listing = std::cell::RefCell::new(Listing {
        max: args.max_errors,
        listed: 0,
        failed: Ok(()),
    });
    for path in &args.files {
        let mut log = EventLog::open(path)?;
        let bar = super::progress_bar(log.file_size());
        let progress = log.progress();
        let mut invalid = 0u64;
        let result = log.read_events(
            |number, e| {
                if number.is_multiple_of(65_536) {
                    bar.set_position(progress.bytes_read());
                }
                if let Err(p) = check(&schema, &e, &mut last_id) {
                    invalid += 1;
                    listing
                        .borrow_mut()
                        .list(format!("{}:{number}: {p}", path.display()));
                }
            },
            |err| listing.borrow_mut().list(err.to_string()),
        );
        bar.finish_and_clear();
        match result {
            Ok(stats) => {
                lines += stats.events + stats.errors;
                bad += stats.errors + invalid;
            }
            Err(e @ LogError::NotALog { lines: n, .. }) => {
                lines += n;
                bad += n;
                not_logs += 1;
                listing.borrow_mut().list(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
        std::mem::replace(&mut listing.borrow_mut().failed, Ok(()))?;
    }
    let listed = listing.borrow().listed;
    if listed > args.max_errors {
        outln!("... {} more bad lines not listed", listed - args.max_errors);
    }
    outln!(
        "{} checked, {} valid, {} invalid{}",
        super::plural(lines, "event", "events"),
        lines - bad,
        bad,
        if not_logs > 0 {
            format!(" ({} not a log)", super::plural(not_logs, "file", "files"))
        } else {
            String::new()
        }
    );
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Lists bad lines on stdout, up to `max`; counts the rest.
struct Listing {
    max: usize,
    listed: usize,
    /// The first write error (a closed stdout), handed on after the file.
    failed: std::io::Result<()>,
}

impl Listing {
    fn list(&mut self, text: String) {
        use std::io::Write as _;
        self.listed += 1;
        if self.listed <= self.max && self.failed.is_ok() {
            self.failed = writeln!(std::io::stdout(), "{text}");
        }
    }
}

/// What is wrong with an event read from a log line: its id out of order,
/// or what the schema says.
fn check(schema: &Schema, e: &LoggedEvent, last_id: &mut Option<u64>) -> Result<(), String> {
    let ty = &*e.event.event_type;
    // Order is checked on every line that has an id, valid or not, so one
    // bad line does not hide an ordering fault after it.
    if let Some(id) = e.id {
        let prev = last_id.replace(id);
        if let Some(prev) = prev.filter(|p| id <= *p) {
            return Err(format!(
                "{ty}.id: {id} does not follow {prev} (ids must increase)"
            ));
        }
    }
    schema.validate(&e.event).map_err(|e| e.to_string())
}
