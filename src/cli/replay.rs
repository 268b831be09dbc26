//! `agentpulse replay FILE.jsonl... --hub URL [--speed X]`: send the events
//! of JSONL logs (plain or `.gz`, agentpulse's format or the original's) to
//! a running hub, in order, with their original timestamps.
//!
//! Each event is sent with an `event_id`: its own when it has one, else
//! `replay:<original id>` (`replay:<file name>:<line>` for lines of the
//! original format, which have no id). The hub keeps each key once, so
//! replaying the same log twice does not count anything twice. (Logs of
//! two different hubs share ids: replay them into different hubs, or accept
//! that events with equal ids are taken as one.)
//!
//! `--speed 0` (the default) sends as fast as the hub takes them; `--speed
//! 1` waits between events as long as their timestamps are apart (real
//! time), `--speed 0.1` ten times faster; `--max-pause` caps each wait.
//! A progress bar shows on stderr when it is a terminal. The summary line
//! goes to stdout; the exit code is 0 when every line reached the hub.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;

use agentpulse::event::{NewEvent, MAX_EVENT_ID_LEN};
use agentpulse::logfile::{EventLog, LogError, LoggedEvent};
use agentpulse::Client;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSONL logs (plain or .gz), replayed in the order given.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The hub to send to, e.g. http://127.0.0.1:3010.
    #[arg(long, env = "AGENTPULSE_HUB_URL", value_parser = super::hub_url)]
    hub: String,
    /// The hub's token.
    #[arg(long, env = "AGENTPULSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: super::TlsArgs,
    /// Pause scale between events' timestamps: 0 = no pauses (default),
    /// 1 = real time, 0.1 = ten times faster.
    #[arg(long, default_value_t = 0.0)]
    speed: f64,
    /// Longest pause between two events, in seconds (after --speed).
    #[arg(long)]
    max_pause: Option<f64>,
}

/// Lines the summary names one by one before it only counts them.
const SHOWN_ERRORS: u64 = 20;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(args.speed.is_finite() && args.speed >= 0.0) {
        bail!("--speed: expected a number >= 0, got {}", args.speed);
    }
    let max_pause = match args.max_pause {
        Some(p) if !(p.is_finite() && p >= 0.0) => bail!("--max-pause: expected seconds >= 0"),
        Some(p) => p,
        None => f64::INFINITY,
    };
    let mut b = Client::builder(&args.hub).ca_cert(args.tls.ca_cert.clone());
    if let Some(t) = &args.token {
        b = b.token(t.as_str());
    }
    let client = b.build()?;
    super::check_hub(client.hub_url(), args.token.as_deref(), &args.tls)?;
    let total: u64 = args
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = progress_bar(total);
    let began = Instant::now();
    // Seconds of pauses so far: event k is due at `began + schedule`.
    let mut schedule = 0.0f64;
    let mut prev_ts: Option<f64> = None;
    let (mut queued, mut skipped) = (0u64, 0u64);
    let mut base = 0u64;
    for path in &args.files {
        let mut log = EventLog::open(path)?;
        let progress = log.progress();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let skipped_cell = std::cell::Cell::new(skipped);
        let skip = |line: u64, why: String| {
            let n = skipped_cell.get() + 1;
            skipped_cell.set(n);
            if n <= SHOWN_ERRORS {
                bar.suspend(|| eprintln!("{}:{line}: skipped: {why}", path.display()));
            }
        };
        let result = log.read_events(
            |number, logged| {
                bar.set_position(base + progress.bytes_read());
                let event = to_send(logged, &name, number);
                if args.speed > 0.0 {
                    if let (Some(prev), Some(ts)) = (prev_ts, event.timestamp) {
                        schedule += ((ts - prev).max(0.0) * args.speed).min(max_pause);
                    }
                    let due = began + Duration::from_secs_f64(schedule);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                if event.timestamp.is_some() {
                    prev_ts = event.timestamp;
                }
                // Never let the client's bounded queue overflow.
                while client.stats().queued >= 8_000 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                match client.emit_event(event) {
                    Ok(_) => queued += 1,
                    Err(e) => skip(number, e.to_string()),
                }
                if queued % 256 == 0 {
                    bar.set_message(format!("{queued} events"));
                }
            },
            |err| skip(err.line, err.message),
        );
        skipped = skipped_cell.get();
        match result {
            Ok(_) => {}
            Err(e @ LogError::NotALog { lines, .. }) => {
                // One line for the whole file, and the others are still sent.
                bar.suspend(|| eprintln!("{e}"));
                skipped += lines;
            }
            Err(e) => return Err(e.into()),
        }
        base += log.file_size();
    }
    bar.finish_and_clear();
    if skipped > SHOWN_ERRORS {
        eprintln!("... {} more lines skipped", skipped - SHOWN_ERRORS);
    }
    let delivered = drain(&client, Duration::from_secs(30));
    let s = client.stats();
    client.close(Duration::from_secs(1));
    outln!(
        "replayed {} to {}: {} new, {} already there, {} rejected, {} undelivered, {} skipped",
        super::plural(queued, "event", "events"),
        client.hub_url(),
        s.sent - s.duplicates,
        s.duplicates,
        s.rejected,
        s.queued + s.lost,
        super::plural(skipped, "line", "lines"),
    );
    if let Some(e) = s
        .last_error
        .as_deref()
        .filter(|_| !delivered || s.rejected > 0)
    {
        eprintln!("last error: {e}");
    }
    let complete = delivered && s.rejected == 0 && s.lost == 0 && skipped == 0;
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Flushes `client` for as long as the hub keeps answering: gives up only
/// after `stall` without progress. Returns whether everything was answered.
pub(crate) fn drain(client: &Client, stall: Duration) -> bool {
    let answered = |c: &Client| {
        let s = c.stats();
        s.sent + s.rejected
    };
    let (mut last, mut since) = (answered(client), Instant::now());
    loop {
        if client.flush(Duration::from_secs(1)) {
            return true;
        }
        let now = answered(client);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= stall {
            return false;
        }
    }
}

/// A logged event as the event to send again, with its dedup key: its own
/// `event_id`, else `replay:<id>`, else (the original's format, no id)
/// `replay:<file>:<line>`.
fn to_send(logged: LoggedEvent, file: &str, line: u64) -> NewEvent {
    let mut event = logged.event;
    let key = match (&event.event_id, logged.id) {
        (Some(own), _) => own.to_string(),
        (None, Some(id)) => format!("replay:{id}"),
        (None, None) => format!("replay:{file}:{line}"),
    };
    event.event_id = Some(clip(key).into_boxed_str());
    event
}

/// At most [`MAX_EVENT_ID_LEN`] bytes, cut on a character boundary.
fn clip(mut s: String) -> String {
    if s.len() > MAX_EVENT_ID_LEN {
        let mut end = MAX_EVENT_ID_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Bytes read of `total`, on stderr; hidden when stderr is not a terminal.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_come_from_the_line() {
        let parse = |line: &[u8], file: &str, n: u64| {
            to_send(LoggedEvent::from_line(line).unwrap(), file, n)
        };
        let e = parse(
            br#"{"id":7,"event_type":"note","timestamp":5.5,"payload":{"n":1}}"#,
            "f.jsonl",
            3,
        );
        assert_eq!(e.event_id.as_deref(), Some("replay:7"));
        assert_eq!(e.timestamp, Some(5.5));
        let e = parse(
            br#"{"id":7,"event_type":"note","timestamp":5.5,"event_id":"sdk-1","payload":{}}"#,
            "f.jsonl",
            3,
        );
        assert_eq!(e.event_id.as_deref(), Some("sdk-1"));
        // The original module's format has no id.
        let e = parse(
            br#"{"event_type":"note","timestamp":5.5,"payload":{}}"#,
            "old.jsonl",
            3,
        );
        assert_eq!(e.event_id.as_deref(), Some("replay:old.jsonl:3"));
        assert_eq!(clip("é".repeat(100)).len(), 128);
    }
}
