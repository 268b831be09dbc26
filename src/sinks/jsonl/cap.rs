//! The disk cap (`max_log_bytes`): the log's files kept under a size.
//!
//! What counts: the log's own files in its directory, i.e. the active file,
//! the rotated days (plain, gzipped, half-written `.gz.tmp`) and the side
//! files (`.torn`, `.ids`, `.epoch`), plus the lines waiting to be written.
//! Other files in the directory are neither counted nor touched.
//!
//! Before each batch is written, and on each tick, the sink checks the cap:
//!
//! 1. When the batch would take the log past the cap, the oldest rotated
//!    files are deleted first, one by one, until it fits (each deletion is
//!    logged and counted, and the index is told, so that stream readers
//!    resuming from there are told the events are no longer retained).
//! 2. When no rotated file is left and the log still reaches the cap, the
//!    active file is never cut (it holds acknowledged events): the sink
//!    tells the [`Backlog`], and the pipeline refuses new events with
//!    [`Refusal::DiskCap`](super::Refusal) (HTTP 507) until space is freed:
//!    at the next UTC midnight the active file becomes a rotated one that
//!    can go, or a user moves files out or raises the cap.
//!
//! The events already accepted when the cap is reached are still written,
//! so the log can pass the cap by at most what was in flight (the ingest
//! queue). The directory is scanned again at most once a second, so that
//! space freed by hand is noticed without waiting for an event.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Backlog, LogIndex};
use crate::logfile::names::{self, LogName};

/// How often the directory is scanned again for sizes.
const RESCAN: Duration = Duration::from_secs(1);

/// The side files whose sizes count (see [`super::sidecar_path`]).
const SIDE_FILES: [&str; 3] = ["torn", "ids", "epoch"];

/// What the cap has done, for `/health`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapReport {
    /// The cap in bytes.
    pub max_bytes: u64,
    /// Bytes the log's files held at the last check (with what waits).
    pub used_bytes: u64,
    /// Rotated files deleted to stay under the cap since start.
    pub deleted_files: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
}

/// The state of the cap, kept by the sink.
#[derive(Debug)]
pub(crate) struct DiskCap {
    max: u64,
    /// Rotated files and their sizes, oldest first, from the last scan.
    rotated: Vec<(PathBuf, u64)>,
    /// Bytes of the side files at the last scan.
    side: u64,
    scanned: Option<Instant>,
    full: bool,
    report: CapReport,
}

impl DiskCap {
    pub(crate) fn new(max: u64) -> DiskCap {
        DiskCap {
            max,
            rotated: Vec::new(),
            side: 0,
            scanned: None,
            full: false,
            report: CapReport {
                max_bytes: max,
                ..CapReport::default()
            },
        }
    }

    /// Forgets the last scan (after a rotation added a file).
    pub(crate) fn rescan(&mut self) {
        self.scanned = None;
    }

    /// What the cap has done so far.
    pub(crate) fn report(&self) -> CapReport {
        self.report
    }

    fn scan(&mut self, dir: &Path, name: &LogName, file_name: &str) {
        self.rotated = names::scan(dir, name)
            .into_iter()
            .filter_map(|f| Some((f.path.clone(), size(&f.path)?)))
            .collect();
        self.side = SIDE_FILES
            .iter()
            .filter_map(|k| size(&super::sidecar_path(dir, file_name, k)))
            .sum();
        self.scanned = Some(Instant::now());
    }

    /// Makes room for `incoming` more bytes on top of an active file of
    /// `active` bytes (written or waiting): deletes the oldest rotated
    /// files while over the cap (not while `busy`, i.e. while maintenance
    /// gzips some of them), then tells `backlog` whether the log is full.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check(
        &mut self,
        dir: &Path,
        name: &LogName,
        file_name: &str,
        active: u64,
        incoming: u64,
        busy: bool,
        index: Option<&LogIndex>,
        backlog: Option<&Backlog>,
    ) {
        if self.scanned.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.scan(dir, name, file_name);
        }
        let rotated = |c: &DiskCap| c.rotated.iter().map(|(_, n)| n).sum::<u64>();
        let mut used = active + self.side + rotated(self);
        while used + incoming > self.max && !busy && !self.rotated.is_empty() {
            let (path, bytes) = self.rotated.remove(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.report.deleted_files += 1;
                    self.report.deleted_bytes += bytes;
                    if let Some(index) = index {
                        index.deleted(&path);
                    }
                    tracing::info!(
                        path = %path.display(),
                        bytes,
                        deleted_in_all = self.report.deleted_files,
                        "deleted the oldest rotated log file to stay under max_log_bytes ({})",
                        self.max
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a rotated log file to stay under max_log_bytes");
                    break;
                }
            }
            used = active + self.side + rotated(self);
        }
        self.report.used_bytes = used + incoming;
        let full = used + incoming >= self.max;
        if full != self.full {
            self.full = full;
            if full {
                tracing::warn!(
                    used = used + incoming,
                    max = self.max,
                    "the event log reached max_log_bytes with no rotated file left to delete: new events are refused (507)"
                );
            } else {
                tracing::info!(
                    used,
                    max = self.max,
                    "the event log is under max_log_bytes again: events are taken"
                );
            }
        }
        if let Some(b) = backlog {
            b.set_cap_report(self.report);
            b.set_full(full.then(|| {
                format!(
                    "the event log in {} has reached its disk cap: {} of max_log_bytes {} bytes, \
                     and no rotated file is left to delete; new events are refused until space is \
                     freed (files moved out of the directory, the cap raised, or the next UTC day)",
                    dir.display(),
                    used + incoming,
                    self.max
                )
            }));
        }
    }
}

fn size(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.len())
}
