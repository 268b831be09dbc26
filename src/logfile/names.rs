//! The names of a log's files on disk: the active file, the rotated ones
//! (`agent-events-2026-12-01.jsonl`, `.1.jsonl`, `.jsonl.gz`) and the side
//! files beside it (`agent-events.ids`, `.epoch`, `.torn`). Written by the
//! JSONL sink, read by everything that reads logs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

/// Suffix of a finished compressed file.
pub(crate) const GZ: &str = ".gz";
/// Suffix of a compressed file being written.
pub(crate) const GZ_TMP: &str = ".gz.tmp";

/// A log's file name split into the parts rotated names are built from.
#[derive(Debug, Clone)]
pub(crate) struct LogName {
    /// `agent-events` for `agent-events.jsonl`.
    stem: String,
    /// `.jsonl` for `agent-events.jsonl`; empty when the name has none.
    ext: String,
}

/// What a rotated file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// Plain JSONL.
    Plain,
    /// Gzipped JSONL.
    Gz,
    /// A gzip file being written (or left behind by a crash).
    GzTmp,
}

/// A file in the log directory that belongs to this log's rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RotatedFile {
    /// The day the file covers.
    pub date: NaiveDate,
    /// 0 for the first file of the day, then 1, 2, ... for name collisions.
    pub seq: u32,
    /// Plain, gzipped or temporary.
    pub kind: Kind,
    /// Full path.
    pub path: PathBuf,
}

impl LogName {
    pub(crate) fn new(file_name: &str) -> LogName {
        match file_name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => LogName {
                stem: stem.to_owned(),
                ext: format!(".{ext}"),
            },
            _ => LogName {
                stem: file_name.to_owned(),
                ext: String::new(),
            },
        }
    }

    /// The plain rotated name for `date`; `seq` 0 has no sequence number.
    pub(crate) fn rotated(&self, date: NaiveDate, seq: u32) -> String {
        let date = date.format("%Y-%m-%d");
        if seq == 0 {
            format!("{}-{date}{}", self.stem, self.ext)
        } else {
            format!("{}-{date}.{seq}{}", self.stem, self.ext)
        }
    }

    /// Recognises a rotated name: `{stem}-YYYY-MM-DD[.N]{ext}[.gz|.gz.tmp]`.
    pub(crate) fn parse(&self, name: &str) -> Option<(NaiveDate, u32, Kind)> {
        let rest = name.strip_prefix(self.stem.as_str())?.strip_prefix('-')?;
        let (date, rest) = (rest.get(..10)?, rest.get(10..)?);
        let shape_ok = date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
        if !shape_ok {
            return None;
        }
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        let (rest, kind) = if let Some(r) = rest.strip_suffix(GZ_TMP) {
            (r, Kind::GzTmp)
        } else if let Some(r) = rest.strip_suffix(GZ) {
            (r, Kind::Gz)
        } else {
            (rest, Kind::Plain)
        };
        let seq_part = rest.strip_suffix(self.ext.as_str())?;
        let seq = if seq_part.is_empty() {
            0
        } else {
            let digits = seq_part.strip_prefix('.')?;
            // Only the canonical spelling we produce: no sign, no leading zero.
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || digits.starts_with('0')
            {
                return None;
            }
            digits.parse().ok()?
        };
        Some((date, seq, kind))
    }
}

/// Every file of this log's rotation in `dir`, sorted by date, sequence
/// number and kind. A missing or unreadable directory has none.
pub(crate) fn scan(dir: &Path, name: &LogName) -> Vec<RotatedFile> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<RotatedFile> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let file_name = entry.file_name();
            let (date, seq, kind) = name.parse(file_name.to_str()?)?;
            // Directories or sockets with a matching name are not ours.
            if !entry.file_type().ok()?.is_file() {
                return None;
            }
            Some(RotatedFile {
                date,
                seq,
                kind,
                path: entry.path(),
            })
        })
        .collect();
    files.sort_by_key(|f| (f.date, f.seq, f.kind));
    files
}

/// The rotated files of the log `file_name` in `dir`, oldest first: plain
/// and gzipped, one path per rotated file (when a crash during compression
/// left both forms, the plain one). The active file is not included.
pub fn rotated_files(dir: impl AsRef<Path>, file_name: &str) -> Vec<(NaiveDate, PathBuf)> {
    let mut out: Vec<(NaiveDate, u32, PathBuf)> = Vec::new();
    for f in scan(dir.as_ref(), &LogName::new(file_name)) {
        if f.kind == Kind::GzTmp {
            continue;
        }
        // Sorted with Plain before Gz, so a duplicate is always the gz copy.
        if matches!(out.last(), Some((d, s, _)) if *d == f.date && *s == f.seq) {
            continue;
        }
        out.push((f.date, f.seq, f.path));
    }
    out.into_iter().map(|(d, _, p)| (d, p)).collect()
}

pub(crate) fn taken(path: &Path) -> bool {
    !matches!(fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The name the active file covering `date` rotates to: the first of
/// `stem-date.ext`, `stem-date.1.ext`, ... for which neither the plain nor
/// the gzipped form exists.
pub(crate) fn rotation_target(dir: &Path, name: &LogName, date: NaiveDate) -> PathBuf {
    let mut seq = 0;
    loop {
        let plain = dir.join(name.rotated(date, seq));
        if !taken(&plain) && !taken(&with_suffix(&plain, GZ)) {
            return plain;
        }
        seq += 1;
    }
}

/// Path of a file kept beside the log `dir/file_name`: `dir/<stem>.<kind>`
/// (`logs/agent-events.ids` for `agent-events.jsonl`). The log's extension
/// is left out on purpose, so that the glob `logs/*.jsonl*` that users give
/// to `report` or `validate` matches logs only.
pub fn sidecar_path(dir: &Path, file_name: &str, kind: &str) -> PathBuf {
    let stem = match file_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file_name,
    };
    let path = dir.join(format!("{stem}.{kind}"));
    // Before this naming the side files were `<file_name>.<kind>`: adopt one.
    let legacy = dir.join(format!("{file_name}.{kind}"));
    if legacy != path && !path.exists() && legacy.exists() {
        if let Err(e) = fs::rename(&legacy, &path) {
            tracing::warn!(
                "cannot rename {} to {}: {e}",
                legacy.display(),
                path.display()
            );
            return legacy;
        }
    }
    path
}
