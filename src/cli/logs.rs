//! `agentpulse logs [--dir DIR | FILE...]`: read, filter, search and
//! follow the JSONL logs offline, as the original's `view_logs.py` did.
//!
//! Files are read through [`EventLog`], the reader `report` and `validate`
//! use (plain or `.gz`, agentpulse's lines and the original's id-less
//! ones). Each line is first read for its few filter fields, borrowed from
//! the line ([`EventFields`]); only a line that passes is parsed in full,
//! and only to print it in the console format. `--json` prints the line as
//! it is in the file, `--stats` never builds an event at all.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

use agentpulse::event::Event;
use agentpulse::hub::stream::filter::Filter;
use agentpulse::logfile::{EventLog, LineError, LogError, LoggedEvent};
use agentpulse::metrics::{BucketStats, EventFields, PointTotals};
use agentpulse::sinks::console::format_event;
use agentpulse::sinks::jsonl::rotated_files;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Log files (plain or .gz), read in the order given, instead of a
    /// directory.
    files: Vec<PathBuf>,
    /// The log directory (default `logs`, or the config's `file`
    /// destination): its rotated daily files, oldest first, then the
    /// active file.
    #[arg(long, visible_alias = "log-dir", env = "AGENTPULSE_LOG_DIR")]
    dir: Option<PathBuf>,
    /// Print the wire lines as they are in the file.
    #[arg(long)]
    json: bool,
    /// Only the last N matching events.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Keep printing events as they are written, across the daily
    /// rotation (plain files only).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only these event types (comma-separated or repeated).
    #[arg(long = "type", visible_alias = "types", value_delimiter = ',')]
    types: Vec<String>,
    /// Only events whose payload's `agent` is this.
    #[arg(long)]
    agent: Option<String>,
    /// Only events whose payload's `task_id` is this.
    #[arg(long)]
    task_id: Option<String>,
    /// Only events whose payload's `status` is this.
    #[arg(long)]
    status: Option<String>,
    /// Only events whose line holds TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// Only events of this UTC day (YYYY-MM-DD); only its files are opened.
    #[arg(long, conflicts_with_all = ["from", "to"], value_parser = parse_date)]
    date: Option<NaiveDate>,
    /// Only events at or after this UTC date or RFC 3339 time.
    #[arg(long, value_parser = parse_from)]
    from: Option<f64>,
    /// Only events up to this UTC date (that whole day) or RFC 3339 time.
    #[arg(long, value_parser = parse_to)]
    to: Option<End>,
    /// Print statistics of the matching events instead of the events.
    #[arg(long, conflicts_with_all = ["tail", "follow"])]
    stats: bool,
}

/// Bad lines named one by one on stderr before they are only counted.
const SHOWN_ERRORS: u64 = 100;

/// How often `--follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

const DAY: f64 = 86_400.0;

fn day_start(d: NaiveDate) -> f64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp() as f64)
        .unwrap_or(0.0)
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("expected YYYY-MM-DD, got {s:?} ({e})"))
}

/// A date (its midnight, UTC) or an RFC 3339 time, as Unix seconds.
fn parse_time(s: &str, end_of_day: bool) -> Result<f64, String> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(day_start(d) + if end_of_day { DAY } else { 0.0 });
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| {
            let t = t.with_timezone(&Utc);
            t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9
        })
        .map_err(|e| format!("expected YYYY-MM-DD or an RFC 3339 time, got {s:?} ({e})"))
}

fn parse_from(s: &str) -> Result<f64, String> {
    parse_time(s, false)
}

/// The end of `--to`: a date's end (exclusive), or a time (inclusive).
#[derive(Debug, Clone, Copy)]
struct End {
    ts: f64,
    inclusive: bool,
}

/// `--to` a date means through that day: its end, exclusive.
fn parse_to(s: &str) -> Result<End, String> {
    let is_date = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").is_ok();
    parse_time(s, true).map(|ts| End {
        ts,
        inclusive: !is_date,
    })
}

/// The time range asked for: `from <= ts < to` (`to` a day's end) or
/// `ts <= to` (`to` a time).
#[derive(Debug, Clone, Copy, Default)]
struct Range {
    from: Option<f64>,
    to: Option<f64>,
    to_inclusive: bool,
}

impl Range {
    fn from_args(args: &Args) -> Range {
        if let Some(d) = args.date {
            let start = day_start(d);
            return Range {
                from: Some(start),
                to: Some(start + DAY),
                to_inclusive: false,
            };
        }
        Range {
            from: args.from,
            to: args.to.map(|e| e.ts),
            to_inclusive: args.to.is_some_and(|e| e.inclusive),
        }
    }

    fn contains(&self, ts: f64) -> bool {
        self.from.is_none_or(|f| ts >= f)
            && self
                .to
                .is_none_or(|t| if self.to_inclusive { ts <= t } else { ts < t })
    }

    /// Whether events in `[start, end)` can be in the range.
    fn overlaps(&self, start: f64, end: f64) -> bool {
        self.from.is_none_or(|f| end > f)
            && self.to.is_none_or(|t| {
                if self.to_inclusive {
                    start <= t
                } else {
                    start < t
                }
            })
    }

    fn is_all(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }
}

/// The log's directory and file name: `--dir`, else the config's `file`
/// destination, else `logs/agent-events.jsonl` (as `serve` and `emit`).
fn log_location(config: &agentpulse::config::Config, dir: Option<&Path>) -> (PathBuf, String) {
    let j = agentpulse::emitter::jsonl_from_config(config);
    (dir.map(Path::to_path_buf).unwrap_or(j.dir), j.file_name)
}

/// The files of the log `name` in `dir` that can hold events of `range`:
/// a rotated file holds its day's events; the active file those after the
/// newest rotated day, up to its last write (plus a day, for events
/// stamped ahead). Also whether the directory has any log at all.
fn select_files(dir: &Path, name: &str, range: &Range) -> (Vec<PathBuf>, bool) {
    let rotated = rotated_files(dir, name);
    let active = dir.join(name);
    let active_exists = active.is_file();
    let any = active_exists || !rotated.is_empty();
    let newest = rotated.last().map(|(d, _)| day_start(*d));
    let mut files: Vec<PathBuf> = rotated
        .into_iter()
        .filter(|(d, _)| {
            let start = day_start(*d);
            range.overlaps(start, start + DAY)
        })
        .map(|(_, p)| p)
        .collect();
    if active_exists {
        let written = std::fs::metadata(&active)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        let start = newest.unwrap_or(f64::NEG_INFINITY);
        let end = written.map_or(f64::INFINITY, |w| w + DAY);
        if range.is_all() || range.overlaps(start, end) {
            files.push(active);
        }
    }
    (files, any)
}

/// Case-insensitive search of a line's bytes.
struct Search {
    needle: Vec<u8>,
    /// Non-ASCII text is folded with Unicode's rules (slower, rare).
    unicode: bool,
}

impl Search {
    fn new(text: &str) -> Search {
        Search {
            needle: text.to_lowercase().into_bytes(),
            unicode: !text.is_ascii(),
        }
    }

    fn matches(&self, line: &[u8]) -> bool {
        if self.needle.is_empty() {
            return true;
        }
        if self.unicode {
            let hay = String::from_utf8_lossy(line).to_lowercase();
            return memchr::memmem::find(hay.as_bytes(), &self.needle).is_some();
        }
        // Find the first byte in either case, then compare the rest.
        let (first, rest) = (self.needle[0], &self.needle[1..]);
        let upper = first.to_ascii_uppercase();
        memchr::memchr2_iter(first, upper, line).any(|i| {
            line.get(i + 1..i + 1 + rest.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(rest))
        })
    }
}

/// The statistics of `--stats`: counts here; cost, critic decisions and
/// validations by the metrics engine's own rule ([`PointTotals`]) and its
/// ratios ([`BucketStats::kpis`]). The engine itself is not run: its
/// per-task state (busy spans, retries, features) is what made reading a
/// log for its KPIs cost 15 ns a byte, and none of it is asked for here.
struct Stats {
    totals: BucketStats,
    events: u64,
    by_type: Names,
    tasks: Names,
    agents: Names,
    first: Option<f64>,
    last: Option<f64>,
}

/// Distinct names with a count each: a name is allocated once, when first
/// seen, and looked up borrowed from the line.
type Names = std::collections::HashMap<Box<str>, u64, foldhash::fast::RandomState>;

fn count(names: &mut Names, name: &str) {
    match names.get_mut(name) {
        Some(n) => *n += 1,
        None => {
            names.insert(name.into(), 1);
        }
    }
}

impl Stats {
    fn new() -> Stats {
        Stats {
            totals: BucketStats::new(),
            events: 0,
            by_type: Names::default(),
            tasks: Names::default(),
            agents: Names::default(),
            first: None,
            last: None,
        }
    }

    fn add(&mut self, f: &EventFields<'_>) {
        let point = PointTotals::of(f);
        self.totals
            .add_totals(point.cost, point.critic_rejected, point.validation_passed);
        self.events += 1;
        count(&mut self.by_type, &f.event_type);
        if let Some(task) = f.task_id.as_deref() {
            count(&mut self.tasks, task);
        }
        if let Some(agent) = f.agent.as_deref() {
            count(&mut self.agents, agent);
        }
        self.first = Some(self.first.map_or(f.timestamp, |t| t.min(f.timestamp)));
        self.last = Some(self.last.map_or(f.timestamp, |t| t.max(f.timestamp)));
    }

    fn by_type(&self) -> BTreeMap<&str, u64> {
        self.by_type.iter().map(|(k, n)| (&**k, *n)).collect()
    }

    fn to_json(&self, unreadable: u64) -> serde_json::Value {
        // The ratios only: the span does not enter them.
        let kpis = self.totals.kpis(1.0);
        json!({
            "events": self.events,
            "by_type": self.by_type(),
            "tasks": self.tasks.len(),
            "agents": self.agents.len(),
            "total_cost_usd": self.totals.total_cost,
            "validation_pass_rate": kpis.validation_pass_rate,
            "validations": kpis.samples.validations,
            "critic_rejection_rate": kpis.critic_rejection_rate,
            "critic_decisions": kpis.samples.critic_decisions,
            "first_timestamp": self.first,
            "last_timestamp": self.last,
            "first_time": self.first.map(rfc3339),
            "last_time": self.last.map(rfc3339),
            "unreadable_lines": unreadable,
        })
    }
}

fn rfc3339(ts: f64) -> String {
    DateTime::<Utc>::from_timestamp_millis((ts * 1000.0).round() as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ts.to_string())
}

/// What happens to each line: the filters, then printing (or the tail
/// buffer) or the statistics.
struct View {
    filter: Filter,
    status: Option<String>,
    search: Option<Search>,
    range: Range,
    json: bool,
    color: bool,
    /// `--tail N`: the last N printed blocks, printed at the end.
    tail: Option<(usize, VecDeque<Vec<u8>>)>,
    stats: Option<Stats>,
    out: io::BufWriter<io::Stdout>,
    matched: u64,
    bad: u64,
    /// The first write error (a closed stdout): reading then stops.
    failed: Option<io::Error>,
}

impl View {
    fn event(&mut self, fields: &EventFields<'_>, line: &[u8]) -> ControlFlow<()> {
        let passes = self.filter.matches_fields(
            &fields.event_type,
            fields.agent.as_deref(),
            fields.task_id.as_deref(),
        ) && self
            .status
            .as_deref()
            .is_none_or(|s| fields.status.as_deref() == Some(s))
            && self.range.contains(fields.timestamp)
            && self.search.as_ref().is_none_or(|s| s.matches(line));
        if !passes {
            return ControlFlow::Continue(());
        }
        self.matched += 1;
        if let Some(stats) = &mut self.stats {
            stats.add(fields);
            return ControlFlow::Continue(());
        }
        let mut block = Vec::with_capacity(line.len() + 64);
        match LoggedEvent::from_line(line) {
            Ok(e) if !self.json => {
                let event = Event {
                    // The original's lines have no id; the console shows none.
                    id: e.id.unwrap_or(0),
                    event_type: e.event.event_type,
                    timestamp: e.event.timestamp.unwrap_or(fields.timestamp),
                    event_id: e.event.event_id,
                    payload: e.event.payload,
                };
                format_event(&event, self.color, &mut block);
            }
            // --json, or (never expected: both parsers accept the same
            // lines) a line only the borrowing parser read: as it is.
            _ => {
                block.extend_from_slice(line);
                block.push(b'\n');
            }
        }
        match &mut self.tail {
            Some((n, kept)) => {
                if *n > 0 {
                    if kept.len() == *n {
                        kept.pop_front();
                    }
                    kept.push_back(block);
                }
                ControlFlow::Continue(())
            }
            None => self.write(&block),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> ControlFlow<()> {
        if self.failed.is_some() {
            return ControlFlow::Break(());
        }
        match self.out.write_all(bytes) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.failed = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    fn bad_line(&mut self, e: &dyn std::fmt::Display) {
        if self.bad < SHOWN_ERRORS {
            eprintln!("{e}: skipped");
        }
        self.bad += 1;
    }

    /// Prints the `--tail` buffer and from then on prints as it goes.
    fn release_tail(&mut self) {
        if let Some((_, kept)) = self.tail.take() {
            for block in kept {
                if self.write(&block).is_break() {
                    break;
                }
            }
        }
    }

    /// Flushes stdout; a write error (a closed stdout) is handed back.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.out.flush()
    }

    /// One line read by `--follow` (the same parsers as [`EventLog`]).
    fn follow_line(&mut self, path: &Path, number: u64, line: &[u8]) -> ControlFlow<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return ControlFlow::Continue(());
        }
        match EventFields::from_log_line(line) {
            Ok((_, fields)) => self.event(&fields, line),
            Err(_) => {
                let message = match LoggedEvent::from_line(line) {
                    Err(e) => e.to_string(),
                    Ok(_) => "unreadable".into(),
                };
                self.bad_line(&LineError {
                    path: path.to_owned(),
                    line: number,
                    message,
                });
                ControlFlow::Continue(())
            }
        }
    }
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let range = Range::from_args(&args);
    let (files, follow_path) = if args.files.is_empty() {
        let config = super::load_config(config)?;
        let (dir, name) = log_location(&config, args.dir.as_deref());
        if !dir.is_dir() {
            anyhow::bail!(
                "no log directory {} (pass --dir DIR or log files)",
                dir.display()
            );
        }
        let (mut files, any) = select_files(&dir, &name, &range);
        if !any {
            anyhow::bail!(
                "no logs in {}: neither {name} nor its rotated daily files (pass --dir DIR or log files)",
                dir.display()
            );
        }
        let active = dir.join(&name);
        if args.follow {
            // The active file is read by the follower, from its start.
            files.retain(|f| f != &active);
            (files, Some(active))
        } else {
            (files, None)
        }
    } else {
        let mut files = args.files.clone();
        let follow = if args.follow { files.pop() } else { None };
        (files, follow)
    };
    if let Some(p) = &follow_path {
        if p.extension().is_some_and(|e| e == "gz") {
            anyhow::bail!(
                "--follow: {} is gzipped, and gzipped logs do not grow: follow a plain file",
                p.display()
            );
        }
    }
    let color = !args.json && {
        let s = anstream::stdout();
        !matches!(s.current_choice(), anstream::ColorChoice::Never)
    };
    let types: HashSet<String> = args
        .types
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let mut view = View {
        filter: Filter {
            types: (!types.is_empty()).then_some(types),
            agent: args.agent.clone().filter(|a| !a.is_empty()),
            task_id: args.task_id.clone().filter(|t| !t.is_empty()),
        },
        status: args.status.clone().filter(|s| !s.is_empty()),
        search: args.search.as_deref().map(Search::new),
        range,
        json: args.json,
        color,
        tail: args
            .tail
            .map(|n| (n, VecDeque::with_capacity(n.min(1 << 16)))),
        stats: args.stats.then(Stats::new),
        out: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
        matched: 0,
        bad: 0,
        failed: None,
    };
    for path in &files {
        read_file(path, &mut view)?;
    }
    if let Some(path) = follow_path {
        return follow(&path, &mut view);
    }
    view.release_tail();
    view.flush()?;
    if let Some(stats) = &view.stats {
        print_stats(stats, args.json, view.bad)?;
    }
    summary(&view, files.len());
    Ok(ExitCode::SUCCESS)
}

fn summary(view: &View, files: usize) {
    eprintln!(
        "logs: {} from {}{}",
        super::plural(view.matched, "event", "events"),
        super::plural(files as u64, "file", "files"),
        if view.bad > 0 {
            format!(
                "; {} skipped",
                super::plural(view.bad, "bad line", "bad lines")
            )
        } else {
            String::new()
        }
    );
}

/// Reads one whole file through [`EventLog`].
fn read_file(path: &Path, view: &mut View) -> anyhow::Result<()> {
    let mut log = EventLog::open(path)?;
    let bar = super::progress_bar(log.file_size());
    let progress = log.progress();
    let mut seen = 0u64;
    // The view is borrowed by the event callback: errors wait here (the
    // first few; the rest are only counted) and are printed after the file.
    let (mut errors, mut unlisted) = (Vec::new(), 0u64);
    let result = log.read_lines(
        |_, _, fields, line| {
            seen += 1;
            if seen.is_multiple_of(65_536) {
                bar.set_position(progress.bytes_read());
            }
            view.event(fields, line)
        },
        |e| {
            if (errors.len() as u64) < SHOWN_ERRORS {
                errors.push(e);
            } else {
                unlisted += 1;
            }
        },
    );
    bar.finish_and_clear();
    for e in &errors {
        view.bad_line(e);
    }
    view.bad += unlisted;
    match result {
        Ok(_) => {}
        Err(e @ LogError::NotALog { lines, .. }) => {
            eprintln!("{e}: skipped");
            view.bad += lines;
        }
        Err(e) => return Err(e.into()),
    }
    view.flush()?;
    Ok(())
}

/// `--follow`: reads `path` from its start, then what is appended to it;
/// when the file is rotated (renamed, a new one created in its place), the
/// rest of the old file, then the new one from its start. Never reads a
/// byte twice.
fn follow(path: &Path, view: &mut View) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::MetadataExt;
    struct Open {
        file: File,
        ino: u64,
        pos: u64,
        line: u64,
        /// An unfinished last line, completed by a later read.
        partial: Vec<u8>,
    }
    let mut current: Option<Open> = None;
    let mut caught_up = false;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        if current.is_none() {
            match File::open(path) {
                Ok(file) => {
                    let ino = file.metadata()?.ino();
                    current = Some(Open {
                        file,
                        ino,
                        pos: 0,
                        line: 0,
                        partial: Vec::new(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("opening {}", path.display())))
                }
            }
        }
        let mut drain = |open: &mut Open, view: &mut View| -> anyhow::Result<()> {
            loop {
                let n = open.file.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                open.pos += n as u64;
                let mut data = &chunk[..n];
                while let Some(i) = memchr::memchr(b'\n', data) {
                    open.line += 1;
                    let flow = if open.partial.is_empty() {
                        view.follow_line(path, open.line, &data[..i])
                    } else {
                        open.partial.extend_from_slice(&data[..i]);
                        let line = std::mem::take(&mut open.partial);
                        view.follow_line(path, open.line, &line)
                    };
                    data = &data[i + 1..];
                    if flow.is_break() {
                        view.flush()?;
                    }
                }
                open.partial.extend_from_slice(data);
            }
        };
        if let Some(open) = &mut current {
            drain(open, view)?;
            match std::fs::metadata(path) {
                Ok(m) if m.ino() == open.ino && m.len() < open.pos => {
                    // Truncated in place: start again from its new start.
                    open.file.seek(SeekFrom::Start(0))?;
                    open.pos = 0;
                    open.partial.clear();
                }
                Ok(m) if m.ino() == open.ino => {}
                // Rotated away (renamed, or deleted): what was appended
                // to the old file up to now, then the new one.
                _ => {
                    drain(open, view)?;
                    if !open.partial.is_empty() {
                        // Its last line will never be finished.
                        view.bad_line(&LineError {
                            path: path.to_owned(),
                            line: open.line + 1,
                            message: format!(
                                "torn last line ({} bytes without a newline) in the file rotated away",
                                open.partial.len()
                            ),
                        });
                    }
                    current = None;
                    continue;
                }
            }
        }
        if !caught_up {
            caught_up = true;
            view.release_tail();
        }
        view.flush()?;
        std::thread::sleep(FOLLOW_POLL);
    }
}

fn print_stats(stats: &Stats, json: bool, bad: u64) -> anyhow::Result<()> {
    let doc = stats.to_json(bad);
    if json {
        outln!("{}", serde_json::to_string(&doc)?);
        return Ok(());
    }
    let range = match (stats.first, stats.last) {
        (Some(a), Some(b)) => format!(" from {} to {}", rfc3339(a), rfc3339(b)),
        _ => String::new(),
    };
    outln!("Events: {}{range}", stats.events);
    let by_type = stats.by_type();
    let w = by_type.keys().map(|k| k.len()).max().unwrap_or(0);
    for (ty, n) in &by_type {
        outln!("  {ty:<w$}  {n}");
    }
    outln!("Tasks: {}", stats.tasks.len());
    outln!("Agents: {}", stats.agents.len());
    outln!(
        "Total cost: ${:.4}",
        doc["total_cost_usd"].as_f64().unwrap_or(0.0)
    );
    outln!(
        "Validation pass rate: {:.1}% (of {})",
        doc["validation_pass_rate"].as_f64().unwrap_or(0.0) * 100.0,
        super::plural(
            doc["validations"].as_u64().unwrap_or(0),
            "validation",
            "validations"
        )
    );
    outln!(
        "Critic rejection rate: {:.1}% (of {})",
        doc["critic_rejection_rate"].as_f64().unwrap_or(0.0) * 100.0,
        super::plural(
            doc["critic_decisions"].as_u64().unwrap_or(0),
            "critic decision",
            "critic decisions"
        )
    );
    Ok(())
}
