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
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use agentpulse::event::{NewEvent, MAX_EVENT_ID_LEN};
use agentpulse::logfile::LogReader;
use agentpulse::Client;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSONL logs (plain or .gz), replayed in the order given.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The hub to send to, e.g. http://127.0.0.1:3010.
    #[arg(long, env = "AGENTPULSE_HUB_URL")]
    hub: String,
    /// The hub's token.
    #[arg(long, env = "AGENTPULSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    let mut b = Client::builder(&args.hub);
    if let Some(t) = &args.token {
        b = b.token(t.as_str());
    }
    let client = b.build()?;
    check_reachable(client.hub_url())?;
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
        let mut reader =
            LogReader::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let progress = reader.progress();
        let gz = path.extension().is_some_and(|e| e == "gz");
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut pos = 0u64;
        let skip = |line: u64, why: String, skipped: &mut u64| {
            *skipped += 1;
            if *skipped <= SHOWN_ERRORS {
                bar.suspend(|| eprintln!("{}:{line}: skipped: {why}", path.display()));
            }
        };
        reader
            .for_each_line(|line| {
                pos += line.bytes.len() as u64 + 1;
                bar.set_position(base + if gz { progress.bytes_read() } else { pos });
                if line.bytes.iter().all(u8::is_ascii_whitespace) {
                    return ControlFlow::Continue(());
                }
                if !line.terminated {
                    skip(
                        line.number,
                        "torn last line (no newline)".into(),
                        &mut skipped,
                    );
                    return ControlFlow::Continue(());
                }
                let event = match parse(line.bytes, &name, line.number) {
                    Ok(e) => e,
                    Err(why) => {
                        skip(line.number, why, &mut skipped);
                        return ControlFlow::Continue(());
                    }
                };
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
                    Err(e) => skip(line.number, e.to_string(), &mut skipped),
                }
                if queued % 256 == 0 {
                    bar.set_message(format!("{queued} events"));
                }
                ControlFlow::Continue(())
            })
            .with_context(|| format!("cannot read {}", path.display()))?;
        base += reader.file_size();
    }
    bar.finish_and_clear();
    if skipped > SHOWN_ERRORS {
        eprintln!("... {} more lines skipped", skipped - SHOWN_ERRORS);
    }
    let delivered = drain(&client, Duration::from_secs(30));
    let s = client.stats();
    client.close(Duration::from_secs(1));
    println!(
        "replayed {queued} events to {}: {} new, {} already there, {} rejected, {} undelivered, {skipped} lines skipped",
        client.hub_url(),
        s.sent - s.duplicates,
        s.duplicates,
        s.rejected,
        s.queued + s.lost,
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

/// Fails with a clear message when nothing answers at `hub` (`GET
/// /health`, which needs no token), instead of queueing for nothing.
pub(crate) fn check_reachable(hub: &str) -> anyhow::Result<()> {
    let url = format!("{hub}/health");
    match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
        Ok(_) | Err(ureq::Error::Status(..)) => Ok(()),
        Err(e) => bail!("cannot reach the hub at {hub}: {e}"),
    }
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

/// One log line as the event to send again.
fn parse(bytes: &[u8], file: &str, line: u64) -> Result<NewEvent, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut obj) = v else {
        return Err("not a JSON object".into());
    };
    let Some(Value::String(event_type)) = obj.remove("event_type") else {
        return Err("no event_type string".into());
    };
    let Some(Value::Object(payload)) = obj.remove("payload") else {
        return Err("no payload object".into());
    };
    let timestamp = obj.get("timestamp").and_then(Value::as_f64);
    let event_id = match (obj.get("event_id").and_then(Value::as_str), obj.get("id")) {
        (Some(own), _) => own.to_string(),
        (None, Some(id)) if id.is_u64() => format!("replay:{id}"),
        _ => format!("replay:{file}:{line}"),
    };
    let mut event = NewEvent::new(event_type.as_str(), payload).with_event_id(clip(event_id));
    event.timestamp = timestamp;
    Ok(event)
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
        let e = parse(
            br#"{"id":7,"event_type":"note","timestamp":5.5,"payload":{"n":1}}"#,
            "f.jsonl",
            3,
        )
        .unwrap();
        assert_eq!(e.event_id.as_deref(), Some("replay:7"));
        assert_eq!(e.timestamp, Some(5.5));
        let e = parse(
            br#"{"id":7,"event_type":"note","timestamp":5.5,"event_id":"sdk-1","payload":{}}"#,
            "f.jsonl",
            3,
        )
        .unwrap();
        assert_eq!(e.event_id.as_deref(), Some("sdk-1"));
        // The original module's format has no id.
        let e = parse(
            br#"{"event_type":"note","timestamp":5.5,"payload":{}}"#,
            "old.jsonl",
            3,
        )
        .unwrap();
        assert_eq!(e.event_id.as_deref(), Some("replay:old.jsonl:3"));
        assert!(parse(b"[1]", "f", 1).is_err());
        assert!(parse(br#"{"event_type":"note"}"#, "f", 1).is_err());
        assert_eq!(clip("é".repeat(100)).len(), 128);
    }
}
