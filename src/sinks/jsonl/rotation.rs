//! Names of rotated files, and maintenance of old ones (gzip, deletion).
//!
//! A log `agent-events.jsonl` rotates to `agent-events-YYYY-MM-DD.jsonl`
//! (`agent-events-YYYY-MM-DD.N.jsonl` when that name is taken), which later
//! becomes `agent-events-YYYY-MM-DD[.N].jsonl.gz`. Maintenance recognises
//! exactly these names and nothing else, so it never touches other files in
//! the directory.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::index::{self, LogIndex};
use crate::logfile::names::{scan, with_suffix, Kind, LogName, GZ, GZ_TMP};

/// How long rotated files are kept as they are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// Gzip plain files whose date is more than this many days before today.
    pub compress_after_days: u32,
    /// Delete files whose date is more than this many days before today.
    pub delete_after_days: u32,
}

/// What a maintenance run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Gzipped files that were written (their plain originals are gone).
    pub compressed: Vec<PathBuf>,
    /// Files that were deleted because they expired.
    pub deleted: Vec<PathBuf>,
    /// Operations that failed (already logged); retried on the next run.
    pub failures: usize,
}

/// Compresses and deletes rotated files of the log according to their
/// dates (from their names) relative to `today`, telling `index`. Failures
/// are logged and counted, and do not stop the rest.
pub(crate) fn maintain(
    dir: &Path,
    name: &LogName,
    today: NaiveDate,
    retention: Retention,
    index: Option<&LogIndex>,
) -> MaintenanceReport {
    let mut report = MaintenanceReport::default();
    for f in scan(dir, name) {
        let age = (today - f.date).num_days();
        let result = if age > i64::from(retention.delete_after_days) || f.kind == Kind::GzTmp {
            // A leftover temp file is from an interrupted run (runs never
            // overlap): the original is still there and gets compressed again.
            fs::remove_file(&f.path).map(|()| {
                if f.kind != Kind::GzTmp {
                    if let Some(index) = index {
                        index.deleted(&f.path);
                    }
                    report.deleted.push(f.path.clone());
                }
            })
        } else if age > i64::from(retention.compress_after_days) && f.kind == Kind::Plain {
            compress(&f.path, index).map(|gz| report.compressed.push(gz))
        } else {
            Ok(())
        };
        if let Err(e) = result {
            report.failures += 1;
            tracing::warn!(path = %f.path.display(), error = %e, "log maintenance failed");
        }
    }
    report
}

/// Gzips `path` to `path.gz` through a temporary file, so that a complete
/// `.gz` exists before the original goes away, and tells `index`. Returns
/// the `.gz` path.
///
/// The output is a series of gzip members of about [`index::SPACING`]
/// bytes of input each, cut at line ends (any gzip reader reads them as one
/// stream): a reader can start decompressing at a member, so seeking into
/// a gzipped day costs at most one member (the ratio is within 1 % of one
/// member for the whole file).
pub(crate) fn compress(path: &Path, index: Option<&LogIndex>) -> io::Result<PathBuf> {
    let gz = with_suffix(path, GZ);
    let tmp = with_suffix(path, GZ_TMP);
    let result = (|| {
        let src = File::open(path)?;
        let mtime = src.metadata()?.modified().ok();
        // Between members `idle` holds the output; during one, the encoder.
        let mut idle = Some(Counting {
            inner: BufWriter::with_capacity(256 * 1024, File::create(&tmp)?),
            written: 0,
        });
        let mut member: Option<(GzEncoder<Counting<BufWriter<File>>>, u64)> = None;
        let mut points = Vec::new();
        let mut input = BufReader::with_capacity(256 * 1024, src);
        let mut line = Vec::new();
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let (enc, fed) = match &mut member {
                Some(m) => m,
                None => {
                    let out = idle.take().expect("between members");
                    if let Some(id) = crate::logfile::quick_id(&line) {
                        points.push(index::Point {
                            id,
                            offset: out.written,
                        });
                    }
                    member.insert((GzEncoder::new(out, Compression::default()), 0))
                }
            };
            enc.write_all(&line)?;
            *fed += line.len() as u64;
            if *fed >= index::SPACING {
                idle = Some(member.take().expect("in a member").0.finish()?);
            }
        }
        if let Some((enc, _)) = member.take() {
            idle = Some(enc.finish()?);
        }
        let out = idle
            .expect("between members")
            .inner
            .into_inner()
            .map_err(|e| e.into_error())?;
        // Keep the original's mtime: it tells when the day's last event came.
        if let Some(t) = mtime {
            let _ = out.set_modified(t);
        }
        out.sync_all()?;
        drop(out);
        fs::rename(&tmp, &gz)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")));
        if let Some(index) = index {
            index.compressed(path, &gz, points);
        }
        fs::remove_file(path)
    })();
    match result {
        Ok(()) => Ok(gz),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A writer that counts the bytes written through it (member offsets).
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Makes renames in `dir` durable; best effort (not every platform or file
/// system can sync a directory, and nothing is lost if it fails).
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logfile::names::{rotated_files, rotation_target};
    use std::io::Read;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn names_round_trip() {
        let n = LogName::new("agent-events.jsonl");
        assert_eq!(
            n.rotated(d("2024-10-15"), 0),
            "agent-events-2024-10-15.jsonl"
        );
        assert_eq!(
            n.rotated(d("2024-10-15"), 2),
            "agent-events-2024-10-15.2.jsonl"
        );
        assert_eq!(
            n.parse("agent-events-2024-10-15.jsonl"),
            Some((d("2024-10-15"), 0, Kind::Plain))
        );
        assert_eq!(
            n.parse("agent-events-2024-10-15.12.jsonl.gz"),
            Some((d("2024-10-15"), 12, Kind::Gz))
        );
        assert_eq!(
            n.parse("agent-events-2024-10-15.jsonl.gz.tmp"),
            Some((d("2024-10-15"), 0, Kind::GzTmp))
        );
        for other in [
            "agent-events.jsonl",
            "agent-events.jsonl.torn",
            "agent-events-2024-10-15.json",
            "agent-events-2024-1-15.jsonl",
            "agent-events-2024-13-15.jsonl",
            "agent-events-2024-10-15.01.jsonl",
            "agent-events-2024-10-15.x.jsonl",
            "agent-events-2024-10-15.jsonl.bak",
            "other-2024-10-15.jsonl",
            "agent-events-2024-10-15.jsonl.gz.tmp.1",
        ] {
            assert_eq!(n.parse(other), None, "{other}");
        }
    }

    #[test]
    fn names_without_extension() {
        let n = LogName::new("events");
        assert_eq!(n.rotated(d("2024-10-15"), 1), "events-2024-10-15.1");
        assert_eq!(
            n.parse("events-2024-10-15.1.gz"),
            Some((d("2024-10-15"), 1, Kind::Gz))
        );
        assert_eq!(
            n.parse("events-2024-10-15"),
            Some((d("2024-10-15"), 0, Kind::Plain))
        );
    }

    #[test]
    fn rotated_files_are_sorted_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "agent-events-2024-10-15.1.jsonl",
            "agent-events-2024-10-15.jsonl",
            "agent-events-2024-10-02.jsonl.gz",
            "agent-events-2024-10-02.jsonl", // crash between rename and delete
            "agent-events-2024-10-03.jsonl.gz.tmp",
            "agent-events.jsonl",
            "notes.txt",
        ] {
            fs::write(dir.path().join(f), b"").unwrap();
        }
        fs::create_dir(dir.path().join("agent-events-2024-10-04.jsonl")).unwrap();
        let names: Vec<String> = rotated_files(dir.path(), "agent-events.jsonl")
            .into_iter()
            .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "agent-events-2024-10-02.jsonl",
                "agent-events-2024-10-15.jsonl",
                "agent-events-2024-10-15.1.jsonl"
            ]
        );
        assert!(rotated_files(dir.path().join("missing"), "agent-events.jsonl").is_empty());
    }

    #[test]
    fn target_skips_plain_and_gz_names() {
        let dir = tempfile::tempdir().unwrap();
        let n = LogName::new("agent-events.jsonl");
        let day = d("2024-10-15");
        assert_eq!(
            rotation_target(dir.path(), &n, day),
            dir.path().join("agent-events-2024-10-15.jsonl")
        );
        fs::write(dir.path().join("agent-events-2024-10-15.jsonl"), b"x").unwrap();
        fs::write(dir.path().join("agent-events-2024-10-15.1.jsonl.gz"), b"x").unwrap();
        assert_eq!(
            rotation_target(dir.path(), &n, day),
            dir.path().join("agent-events-2024-10-15.2.jsonl")
        );
    }

    #[test]
    fn compress_replaces_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent-events-2024-10-01.jsonl");
        let content = b"{\"id\":1}\n{\"id\":2}\n".repeat(1000);
        fs::write(&p, &content).unwrap();
        let gz = compress(&p, None).unwrap();
        assert!(!p.exists());
        assert!(!with_suffix(&p, GZ_TMP).exists());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(File::open(&gz).unwrap())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, content);
    }

    #[test]
    fn maintenance_compresses_deletes_and_leaves_others_alone() {
        let dir = tempfile::tempdir().unwrap();
        let n = LogName::new("agent-events.jsonl");
        for f in [
            "agent-events-2024-10-08.jsonl",        // 7 days: kept plain
            "agent-events-2024-10-07.jsonl",        // 8 days: compressed
            "agent-events-2024-10-07.1.jsonl",      // 8 days: compressed
            "agent-events-2024-09-15.jsonl.gz",     // 30 days: kept
            "agent-events-2024-09-14.jsonl.gz",     // 31 days: deleted
            "agent-events-2024-09-01.jsonl",        // deleted, not compressed
            "agent-events-2024-10-06.jsonl.gz.tmp", // leftover: removed
            "agent-events-2024-09-01.txt",
            "other-2024-09-01.jsonl",
            "agent-events.jsonl",
        ] {
            fs::write(dir.path().join(f), b"{}\n").unwrap();
        }
        let report = maintain(
            dir.path(),
            &n,
            d("2024-10-15"),
            Retention {
                compress_after_days: 7,
                delete_after_days: 30,
            },
            None,
        );
        assert_eq!(report.failures, 0);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "agent-events-2024-09-01.txt",
                "agent-events-2024-09-15.jsonl.gz",
                "agent-events-2024-10-07.1.jsonl.gz",
                "agent-events-2024-10-07.jsonl.gz",
                "agent-events-2024-10-08.jsonl",
                "agent-events.jsonl",
                "other-2024-09-01.jsonl",
            ]
        );
        assert_eq!(report.compressed.len(), 2);
        assert_eq!(report.deleted.len(), 2);
    }
}
