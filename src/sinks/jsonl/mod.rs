//! The JSONL log sink: every event as one line of a daily log file.
//!
//! # On-disk layout
//!
//! With the defaults (`dir = logs`, `file_name = agent-events.jsonl`):
//!
//! ```text
//! logs/
//!   agent-events.jsonl                 active file: today's events (UTC), appended
//!   agent-events-2024-10-14.jsonl      rotated at UTC midnight: one file per day
//!   agent-events-2024-10-14.1.jsonl    same day again (name was taken, e.g. after a restart)
//!   agent-events-2024-10-06.jsonl.gz   gzipped once more than `compress_after_days` old,
//!                                      as gzip members of ~256 KiB of lines each
//!   agent-events.torn                  fragments of torn last lines, one per line
//!   agent-events.ids                   ids reserved ahead (see `pipeline::ids`)
//!   agent-events.epoch                 the stream epoch of this history (see `pipeline::epoch`)
//! ```
//!
//! Readers seek into the log through [`index`], which the sink keeps
//! current as it writes, rotates, gzips and deletes.
//!
//! Each line is one event in the wire format (see [`crate::event`]),
//! terminated by `\n`. Rotated files are named after the UTC day they cover;
//! files more than `delete_after_days` old are deleted. Dates come from the
//! names, so copying or touching a file does not change its fate, and files
//! whose names do not follow this pattern are never touched.
//!
//! A crash can leave a torn last line in the active file; on open it is moved
//! to the `.torn` side file so that new lines always start on a fresh line
//! (see [`TornLine`]).
//!
//! # Failures
//!
//! When the disk is full, the directory vanishes or a write fails otherwise,
//! the sink keeps the unwritten lines (up to `max_pending_bytes`, dropping
//! the oldest whole lines beyond that and counting them), reopens the file
//! (recreating the directory) and retries on the next tick or write. A line
//! is never written twice nor in pieces separated by another line. With a
//! [`Backlog`] (the emitter always gives one) new events are refused before
//! the buffer would have to drop, and any line it drops all the same is
//! reported by id, so that no acknowledgement claims it (see
//! [`backlog`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::event::SharedRecord;
use crate::sinks::{Sink, SinkError};

pub mod backlog;
mod cap;
pub mod index;
mod pending;
mod recovery;
mod rotation;

pub use backlog::{Backlog, Refusal};
pub use cap::CapReport;
pub use index::{LogCursor, LogIndex};

pub use crate::logfile::names::{rotated_files, sidecar_path};
pub use recovery::TornLine;
pub use rotation::MaintenanceReport;

use crate::logfile::names::LogName;
use cap::DiskCap;
use pending::Pending;
use rotation::Retention;

/// Pending bytes above which the sink writes without waiting for a tick.
const WRITE_THRESHOLD: usize = 64 * 1024;

/// Slack when comparing clock intervals: Unix seconds as `f64` are only
/// precise to about 0.25 µs today.
const INTERVAL_SLACK: f64 = 1e-3;

/// When written data is forced to disk with `fsync` (`sync_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Never sync: the OS writes back when it likes. A machine crash can
    /// lose the last seconds; a process crash loses nothing once written.
    None,
    /// Sync at most every `fsync_interval`, and on `flush`.
    #[default]
    Batch,
    /// Write and sync at the end of every batch.
    Always,
}

impl Durability {
    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Batch => "batch",
            Durability::Always => "always",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A durability name that is not `none`, `batch` or `always`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown durability {0:?} (expected none, batch or always)")]
pub struct ParseDurabilityError(String);

impl FromStr for Durability {
    type Err = ParseDurabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Durability::None),
            "batch" => Ok(Durability::Batch),
            "always" => Ok(Durability::Always),
            _ => Err(ParseDurabilityError(s.to_owned())),
        }
    }
}

/// Settings of the JSONL sink.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonlConfig {
    /// Directory of the log files; created (with parents) if missing.
    pub dir: PathBuf,
    /// Name of the active file; rotated names are derived from its stem
    /// and extension.
    pub file_name: String,
    /// When to sync to disk.
    pub durability: Durability,
    /// Longest time a line waits in memory before being written.
    pub flush_interval: Duration,
    /// Longest time between syncs with [`Durability::Batch`].
    pub fsync_interval: Duration,
    /// Start a new file at each UTC midnight.
    pub rotate_daily: bool,
    /// Gzip rotated files whose day is more than this many days ago.
    pub compress_after_days: u32,
    /// Delete rotated files whose day is more than this many days ago.
    pub delete_after_days: u32,
    /// Most unwritten bytes kept while writing fails; beyond it the oldest
    /// lines are dropped (and counted in [`Sink::dropped`]).
    pub max_pending_bytes: usize,
    /// The disk cap: most bytes the log's files may hold (see the `cap` module);
    /// `None` for no cap.
    pub max_log_bytes: Option<u64>,
}

impl Default for JsonlConfig {
    fn default() -> Self {
        JsonlConfig {
            dir: PathBuf::from("logs"),
            file_name: "agent-events.jsonl".to_owned(),
            durability: Durability::Batch,
            flush_interval: Duration::from_millis(100),
            fsync_interval: Duration::from_secs(1),
            rotate_daily: true,
            compress_after_days: 7,
            delete_after_days: 30,
            max_pending_bytes: 64 << 20,
            max_log_bytes: None,
        }
    }
}

impl JsonlConfig {
    /// Path of the active file.
    pub fn active_path(&self) -> PathBuf {
        self.dir.join(&self.file_name)
    }

    /// Path of the side file that receives torn lines.
    pub fn torn_path(&self) -> PathBuf {
        self.sidecar_path("torn")
    }

    /// Path of a file the log keeps beside it (`torn`, `ids`, ...): see
    /// [`sidecar_path`].
    pub fn sidecar_path(&self, kind: &str) -> PathBuf {
        sidecar_path(&self.dir, &self.file_name, kind)
    }

    fn retention(&self) -> Retention {
        Retention {
            compress_after_days: self.compress_after_days,
            delete_after_days: self.delete_after_days,
        }
    }
}

/// What [`JsonlSink::open`] found and fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// A torn last line that was moved to the side file.
    pub torn: Option<TornLine>,
    /// Files the active file was rotated to because it was from an earlier
    /// day.
    pub rotated: Vec<PathBuf>,
}

/// The UTC day of a Unix time in seconds.
fn utc_date(unix: f64) -> NaiveDate {
    let secs = if unix.is_finite() {
        unix.floor() as i64
    } else {
        0
    };
    DateTime::from_timestamp(secs, 0)
        .unwrap_or(DateTime::UNIX_EPOCH)
        .date_naive()
}

/// Whether `interval` has passed from `since` to `now` (or the clock went
/// backwards, which should not freeze writing).
fn due(since: f64, now: f64, interval: Duration) -> bool {
    now < since || now - since + INTERVAL_SLACK >= interval.as_secs_f64()
}

/// Identity of an open file, to notice that its path now names another file
/// (or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    #[cfg(unix)]
    fn of(meta: &fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId(meta.dev(), meta.ino())
    }

    #[cfg(not(unix))]
    fn of(_meta: &fs::Metadata) -> FileId {
        // Without inode numbers only a missing file can be noticed.
        FileId(0, 0)
    }
}

/// `tracing::warn!` at most once per second, counting what it held back.
#[derive(Debug, Default)]
struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    fn warn(&mut self, message: fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(suppressed = self.suppressed, "jsonl sink: {message}");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Writes events as JSONL to a daily-rotated file. See the module docs.
#[derive(Debug)]
pub struct JsonlSink {
    config: JsonlConfig,
    clock: SharedClock,
    name: LogName,
    active_path: PathBuf,
    torn_path: PathBuf,
    /// The open active file, `None` after a failure until reopened.
    file: Option<(File, FileId)>,
    /// The UTC day the active file covers.
    active_date: NaiveDate,
    /// The last day maintenance was started for.
    maintained: NaiveDate,
    pending: Pending,
    /// Clock time of the last write attempt and of the last sync.
    last_write: f64,
    last_sync: f64,
    /// Written bytes not yet synced.
    unsynced: bool,
    /// Whether the last write attempt failed (to log the recovery).
    failing: bool,
    dropped: u64,
    warn: WarnLimiter,
    maintenance: Option<JoinHandle<MaintenanceReport>>,
    /// Kept current with what is written, for readers seeking into the log.
    index: Option<Arc<LogIndex>>,
    /// The id of the last line handed to `pending`.
    last_pushed: u64,
    /// The active file last opened (`None` after a rotation).
    opened: Option<FileId>,
    /// Shared with the pipeline, when given.
    backlog: Option<std::sync::Arc<Backlog>>,
    /// Bytes of lines taken in so far (written, pending or dropped).
    pushed: u64,
    /// The disk cap, when configured.
    cap: Option<DiskCap>,
}

impl JsonlSink {
    /// Opens the log: creates the directory, repairs a torn last line,
    /// rotates the active file if it is from an earlier UTC day (by its
    /// mtime), compresses and deletes old rotated files, and opens the
    /// active file for appending.
    pub fn open(
        config: JsonlConfig,
        clock: SharedClock,
    ) -> Result<(JsonlSink, OpenReport), SinkError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir)
            .map_err(|e| SinkError::io(format!("creating log directory {}", dir.display()), e))?;
        let active_path = config.active_path();
        let torn_path = config.torn_path();
        let name = LogName::new(&config.file_name);
        let now = clock.now();
        let today = utc_date(now);
        let mut report = OpenReport::default();

        // The mtime must be read before the repair, which changes it.
        let file_date = match fs::metadata(&active_path) {
            Ok(meta) => meta
                .modified()
                .ok()
                .map(|t| DateTime::<Utc>::from(t).date_naive()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(SinkError::io(
                    format!("reading {}", active_path.display()),
                    e,
                ));
            }
        };
        report.torn = recovery::repair_torn_tail(&active_path, &torn_path).map_err(|e| {
            SinkError::io(
                format!("repairing torn line in {}", active_path.display()),
                e,
            )
        })?;

        let mut sink = JsonlSink {
            name,
            active_path,
            torn_path,
            file: None,
            // A file dated in the future (clock set back) is treated as today's.
            active_date: file_date.map_or(today, |d| d.min(today)),
            maintained: today,
            pending: Pending::default(),
            last_write: now,
            last_sync: now,
            unsynced: false,
            failing: false,
            dropped: 0,
            warn: WarnLimiter::default(),
            maintenance: None,
            index: None,
            last_pushed: 0,
            opened: None,
            backlog: None,
            pushed: 0,
            cap: config.max_log_bytes.map(DiskCap::new),
            config,
            clock,
        };
        if sink.config.rotate_daily && sink.active_date < today {
            if let Some(rotated) = sink.rename_active()? {
                report.rotated.push(rotated);
            }
            sink.active_date = today;
        }
        rotation::maintain(&dir, &sink.name, today, sink.config.retention(), None);
        sink.ensure_file()?;
        Ok((sink, report))
    }

    /// From now on, keeps `index` current: what is written, rotated,
    /// gzipped and deleted (see [`index`]).
    pub fn set_index(&mut self, index: Arc<LogIndex>) {
        self.index = Some(index);
    }

    /// Tells the index what is in the file once nothing is pending: the
    /// file then ends with the last line pushed.
    fn note_written(&mut self) {
        let (Some(index), Some((file, _))) = (&self.index, &self.file) else {
            return;
        };
        if !self.pending.is_empty() || self.last_pushed == 0 {
            return;
        }
        match file.metadata() {
            Ok(meta) => index.note_written(self.last_pushed, meta.len()),
            Err(e) => self
                .warn
                .warn(format_args!("cannot read the length of the log: {e}")),
        }
    }

    /// Reports unwritten bytes, failures and dropped ids to `backlog`.
    pub fn with_backlog(mut self, backlog: std::sync::Arc<Backlog>) -> Self {
        self.backlog = Some(backlog);
        // So that a log already at its cap refuses from the first event.
        self.check_cap(0);
        self
    }

    /// What the disk cap has done (`None` without a cap).
    pub fn cap_report(&self) -> Option<CapReport> {
        self.cap.as_ref().map(DiskCap::report)
    }

    /// Keeps the log under its disk cap with `incoming` more bytes to
    /// write (see [`cap`]).
    fn check_cap(&mut self, incoming: u64) {
        let Some(cap) = &mut self.cap else { return };
        // By path, not by the open handle: a file moved out of the
        // directory no longer counts.
        let active = fs::metadata(&self.active_path).map_or(0, |m| m.len())
            + self.pending.unwritten() as u64;
        let busy = self.maintenance.as_ref().is_some_and(|h| !h.is_finished());
        cap.check(
            &self.config.dir,
            &self.name,
            &self.config.file_name,
            active,
            incoming,
            busy,
            self.index.as_deref(),
            self.backlog.as_deref(),
        );
    }

    /// Tells the backlog how far writing is and whether it fails.
    fn publish(&self, result: &Result<(), SinkError>) {
        if let Some(b) = &self.backlog {
            b.set_settled(self.pushed - self.pending.unwritten() as u64);
            match result {
                Ok(()) if !self.failing => b.set_failing(None),
                Ok(()) => {}
                Err(e) => b.set_failing(Some(e.to_string())),
            }
        }
    }

    /// Path of the active file.
    pub fn active_path(&self) -> &Path {
        &self.active_path
    }

    /// The configuration the sink was opened with.
    pub fn config(&self) -> &JsonlConfig {
        &self.config
    }

    /// Bytes accepted but not yet written to the file.
    pub fn pending_bytes(&self) -> usize {
        self.pending.unwritten()
    }

    /// Waits for a maintenance run started by a rotation (which runs on its
    /// own thread so that gzipping a big file does not hold up writing) and
    /// returns what it did; `None` if none is running.
    pub fn wait_maintenance(&mut self) -> Option<MaintenanceReport> {
        self.maintenance.take().and_then(|h| h.join().ok())
    }

    /// Renames a non-empty active file to its rotated name for
    /// `active_date`. The file must be closed.
    fn rename_active(&mut self) -> Result<Option<PathBuf>, SinkError> {
        match fs::metadata(&self.active_path) {
            Ok(meta) if meta.len() > 0 => {}
            // An empty file is simply reused; a missing one is recreated.
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(SinkError::io(
                    format!("reading {}", self.active_path.display()),
                    e,
                ));
            }
        }
        let target =
            crate::logfile::names::rotation_target(&self.config.dir, &self.name, self.active_date);
        fs::rename(&self.active_path, &target).map_err(|e| {
            SinkError::io(
                format!(
                    "renaming {} to {}",
                    self.active_path.display(),
                    target.display()
                ),
                e,
            )
        })?;
        rotation::sync_dir(&self.config.dir);
        self.opened = None;
        if let Some(cap) = &mut self.cap {
            cap.rescan();
        }
        if let Some(index) = &self.index {
            index.rotated(&target, &self.active_path);
        }
        tracing::info!(from = %self.active_path.display(), to = %target.display(), "rotated log file");
        Ok(Some(target))
    }

    /// Rotates when the clock has moved to a later UTC day than the active
    /// file's, and starts maintenance once per day.
    fn maybe_rotate(&mut self) -> Result<(), SinkError> {
        if !self.config.rotate_daily {
            return Ok(());
        }
        let today = utc_date(self.clock.now());
        // Only forwards: a clock stepping back over midnight must not make
        // files flip between days.
        let result = if today > self.active_date {
            self.rotate(today)
        } else {
            Ok(())
        };
        // Even when rotation fails (say, the disk is full), deleting expired
        // files may be what frees the space.
        if today > self.maintained {
            self.maintained = today;
            self.start_maintenance(today);
        }
        result
    }

    fn rotate(&mut self, today: NaiveDate) -> Result<(), SinkError> {
        // Everything of the old day goes into the old file first.
        self.flush_inner()?;
        self.file = None;
        self.rename_active()?;
        self.active_date = today;
        self.ensure_file()
    }

    fn start_maintenance(&mut self, today: NaiveDate) {
        // Runs never overlap: each may delete the other's temp files.
        self.wait_maintenance();
        let dir = self.config.dir.clone();
        let name = self.name.clone();
        let retention = self.config.retention();
        let index = self.index.clone();
        let spawned = std::thread::Builder::new()
            .name("jsonl-maintenance".to_owned())
            .spawn(move || rotation::maintain(&dir, &name, today, retention, index.as_deref()));
        match spawned {
            Ok(handle) => self.maintenance = Some(handle),
            Err(e) => self
                .warn
                .warn(format_args!("cannot start log maintenance: {e}")),
        }
    }

    /// Makes sure the active file is open and is still the file at its
    /// path; reopens (recreating the directory) otherwise.
    fn ensure_file(&mut self) -> Result<(), SinkError> {
        if let Some((_, id)) = &self.file {
            match fs::metadata(&self.active_path) {
                Ok(meta) if FileId::of(&meta) == *id => return Ok(()),
                _ => {
                    self.warn.warn(format_args!(
                        "{} was removed or replaced; reopening it",
                        self.active_path.display()
                    ));
                    self.file = None;
                }
            }
        }
        let dir = &self.config.dir;
        fs::create_dir_all(dir)
            .map_err(|e| SinkError::io(format!("creating log directory {}", dir.display()), e))?;
        let path = &self.active_path;
        let continues = match self.pending.written_prefix() {
            Some(prefix) => ends_with_partial_line(path, prefix)
                .map_err(|e| SinkError::io(format!("reading {}", path.display()), e))?,
            None => false,
        };
        if !continues {
            // The file holding the start of a partly written line is gone:
            // write that line whole. Any other torn tail is moved aside.
            self.pending.restart_in_flight();
            recovery::repair_torn_tail(path, &self.torn_path).map_err(|e| {
                SinkError::io(format!("repairing torn line in {}", path.display()), e)
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SinkError::io(format!("opening {}", path.display()), e))?;
        let meta = file
            .metadata()
            .map_err(|e| SinkError::io(format!("reading {}", path.display()), e))?;
        let id = FileId::of(&meta);
        if self.opened.is_some_and(|old| old != id) {
            // The path names another file than the one written before (it
            // was removed or replaced): what the index knew no longer holds.
            if let Some(index) = &self.index {
                index.reopened(meta.len());
            }
        }
        self.opened = Some(id);
        self.file = Some((file, id));
        Ok(())
    }

    /// Writes all pending bytes (no sync).
    fn write_pending(&mut self) -> Result<(), SinkError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.last_write = self.clock.now();
        let result = self.ensure_file().and_then(|()| {
            let (file, _) = self.file.as_mut().expect("ensure_file opened the file");
            self.pending
                .write_to(file)
                .map_err(|e| SinkError::io(format!("writing {}", self.active_path.display()), e))
        });
        match result {
            Ok(()) => {
                self.unsynced = true;
                if self.failing {
                    self.failing = false;
                    tracing::info!(path = %self.active_path.display(), "jsonl sink: writing works again");
                }
                Ok(())
            }
            Err(e) => {
                // Reopen on retry: the handle may be what is broken.
                self.file = None;
                // The bytes that did reach the file may not be synced yet.
                self.unsynced = true;
                self.failing = true;
                Err(e)
            }
        }
    }

    fn sync(&mut self) -> Result<(), SinkError> {
        if !self.unsynced {
            return Ok(());
        }
        self.last_sync = self.clock.now();
        if let Some((file, _)) = &self.file {
            file.sync_data()
                .map_err(|e| SinkError::io(format!("syncing {}", self.active_path.display()), e))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Writes everything and syncs unless durability is `None`.
    fn flush_inner(&mut self) -> Result<(), SinkError> {
        self.write_pending()?;
        if self.config.durability != Durability::None {
            self.sync()?;
        }
        Ok(())
    }

    /// Drops the oldest lines while over the bound.
    fn enforce_bound(&mut self) {
        if self.pending.unwritten() <= self.config.max_pending_bytes {
            return;
        }
        let backlog = self.backlog.clone();
        let mut range: Option<(u64, u64)> = None;
        let n =
            self.pending
                .drop_oldest_ids(self.config.max_pending_bytes, |id| match &mut range {
                    Some((_, z)) if id == *z + 1 => *z = id,
                    _ => {
                        if let (Some(b), Some((a, z))) = (&backlog, range) {
                            b.record_lost(a, z);
                        }
                        range = Some((id, id));
                    }
                });
        if let (Some(b), Some((a, z))) = (&backlog, range) {
            b.record_lost(a, z);
        }
        if n > 0 {
            self.dropped += n;
            self.warn.warn(format_args!(
                "dropped {n} events: more than {} bytes could not be written to {} ({} dropped in total)",
                self.config.max_pending_bytes,
                self.active_path.display(),
                self.dropped
            ));
        }
    }

    /// Logs a failure (rate limited) and hands it back.
    fn report(&mut self, result: Result<(), SinkError>) -> Result<(), SinkError> {
        self.publish(&result);
        if let Err(e) = &result {
            self.warn.warn(format_args!(
                "{e}; keeping {} bytes to retry",
                self.pending.unwritten()
            ));
        }
        result
    }
}

/// Whether the file at `path` ends with `prefix` as the start of its last
/// line (preceded by `\n` or the start of the file): the part of a line
/// written before a failure.
fn ends_with_partial_line(path: &Path, prefix: &[u8]) -> io::Result<bool> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let need = prefix.len() as u64;
    if len < need {
        return Ok(false);
    }
    let with_newline = len > need;
    let start = len - need - u64::from(with_newline);
    let mut tail = vec![0; (len - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut tail)?;
    let (before, rest) = tail.split_at(usize::from(with_newline));
    Ok(rest == prefix && (before.is_empty() || before == b"\n"))
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), SinkError> {
        let mut result = self.maybe_rotate();
        if self.cap.is_some() {
            let incoming = batch.iter().map(|r| r.line.len() as u64).sum();
            self.check_cap(incoming);
        }
        for record in batch {
            self.pushed += record.line.len() as u64;
            self.pending.push(&record.line);
            self.last_pushed = record.event.id;
            // After a failure the rest of the batch is only buffered: one
            // failing attempt per batch is enough.
            if result.is_ok() && self.pending.unwritten() >= WRITE_THRESHOLD {
                result = self.write_pending();
            }
            // Only while writing fails: a healthy sink writes the buffer
            // down at the threshold.
            if result.is_err() {
                self.enforce_bound();
            }
        }
        // Unless durability is `none`, a batch is with the OS (or, for
        // `always`, on disk) before the sink returns: acknowledgements wait
        // for this (see `caught_up`), so an acknowledged event survives a
        // crash of the hub.
        if result.is_ok() {
            result = match self.config.durability {
                Durability::Always => self.flush_inner(),
                Durability::Batch => self.write_pending(),
                Durability::None => Ok(()),
            };
        }
        self.note_written();
        if result.is_err() {
            self.enforce_bound();
        }
        self.report(result)
    }

    fn caught_up(&self) -> bool {
        self.pending.is_empty() && !(self.config.durability == Durability::Always && self.unsynced)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let result = self.flush_inner();
        self.note_written();
        self.report(result)
    }

    fn tick(&mut self) -> Result<(), SinkError> {
        // A failed rotation is retried next tick; writing goes on meanwhile
        // (into the old day's file, which the next attempt rotates).
        let rotated = self.maybe_rotate();
        self.check_cap(0);
        let now = self.clock.now();
        let mut result = Ok(());
        if !self.pending.is_empty() && due(self.last_write, now, self.config.flush_interval) {
            result = self.write_pending();
        }
        if result.is_ok()
            && self.config.durability == Durability::Batch
            && self.unsynced
            && due(self.last_sync, now, self.config.fsync_interval)
        {
            result = self.sync();
        }
        self.note_written();
        self.report(rotated.and(result))
    }

    fn tick_interval(&self) -> Duration {
        let mut interval = self.config.flush_interval;
        if self.config.durability == Durability::Batch {
            interval = interval.min(self.config.fsync_interval);
        }
        interval.clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        // Best effort: the runner flushes on shutdown, this covers the rest.
        if let Err(e) = self.flush_inner() {
            tracing::warn!(error = %e, "jsonl sink: could not flush on close");
        }
    }
}

#[cfg(test)]
mod tests;
