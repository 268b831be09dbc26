//! Reading JSONL logs: plain or gzipped files, line by line, fast.
//!
//! [`LogReader`] reads in large chunks and hands out borrowed lines, so
//! reading costs no allocation per line. The offline commands (`validate`,
//! `report`, `replay`, `rebuild-metrics`) read logs a user brings, in
//! agentpulse's format or the original module's, through one reader:
//! [`EventLog`] ([`entries`]). [`read_events`] reads agentpulse's own logs
//! (every line has an id) for the recovery at start and stream backfill.
//! [`last_event`] reads a plain log backwards from its end and so does not
//! depend on the file's size. For the file layout see
//! [`crate::sinks::jsonl`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

use crate::event::Event;
use names::rotated_files;

pub mod entries;
pub mod names;

pub use entries::{EventLog, LogError, LoggedEvent};

/// Size of the chunks read from a file (grows for longer lines).
const CHUNK: usize = 1 << 20;

/// Size of the blocks read backwards by [`last_event`].
const TAIL_BLOCK: u64 = 64 * 1024;

/// A reader that counts the bytes taken from the file.
struct Counting {
    file: File,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

enum Source {
    Plain(Counting),
    Gz(Box<MultiGzDecoder<Counting>>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(r) => r.read(buf),
            Source::Gz(r) => r.read(buf),
        }
    }
}

/// How far a [`LogReader`] has got, readable while it runs (for example
/// from the line callback, to drive a progress bar).
#[derive(Debug, Clone, Default)]
pub struct ReadProgress(Arc<AtomicU64>);

impl ReadProgress {
    /// Bytes of the file read so far (compressed bytes for a `.gz`), to
    /// compare with [`LogReader::file_size`].
    pub fn bytes_read(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One line of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// 1-based line number.
    pub number: u64,
    /// The line without its `\n`.
    pub bytes: &'a [u8],
    /// False for a last line without `\n`: a torn write, not a record.
    pub terminated: bool,
}

/// Reads a log file (`.jsonl`, or gzipped when the name ends in `.gz`)
/// line by line.
pub struct LogReader {
    path: PathBuf,
    source: Source,
    file_size: u64,
    progress: ReadProgress,
    buf: Vec<u8>,
    /// `buf[start..filled]` is read but not yet handed out.
    start: usize,
    filled: usize,
    lines: u64,
    done: bool,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("path", &self.path)
            .field("file_size", &self.file_size)
            .field("bytes_read", &self.bytes_read())
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

impl LogReader {
    /// Opens `path`; gzip is recognised by the `.gz` extension.
    pub fn open(path: impl AsRef<Path>) -> io::Result<LogReader> {
        let path = path.as_ref().to_owned();
        let file = File::open(&path)?;
        let file_size = file.metadata()?.len();
        let progress = ReadProgress::default();
        let counting = Counting {
            file,
            count: progress.0.clone(),
        };
        let source = if is_gz(&path) {
            // Multi-member, so concatenated gzip files read whole too.
            Source::Gz(Box::new(MultiGzDecoder::new(counting)))
        } else {
            Source::Plain(counting)
        };
        Ok(LogReader {
            path,
            source,
            file_size,
            progress,
            buf: Vec::new(),
            start: 0,
            filled: 0,
            lines: 0,
            done: false,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file on disk (compressed size for a `.gz`).
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Bytes of the file read so far; see [`ReadProgress::bytes_read`].
    pub fn bytes_read(&self) -> u64 {
        self.progress.bytes_read()
    }

    /// A handle on [`LogReader::bytes_read`] usable while
    /// [`LogReader::for_each_line`] runs.
    pub fn progress(&self) -> ReadProgress {
        self.progress.clone()
    }

    /// Calls `f` with each line, in order, until the end of the file or
    /// until `f` breaks (a later call then goes on with the next line).
    pub fn for_each_line<F>(&mut self, mut f: F) -> io::Result<()>
    where
        F: FnMut(LogLine<'_>) -> ControlFlow<()>,
    {
        if self.buf.is_empty() {
            self.buf = vec![0; CHUNK];
        }
        loop {
            while let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.filled]) {
                let line = &self.buf[self.start..self.start + i];
                self.start += i + 1;
                self.lines += 1;
                let flow = f(LogLine {
                    number: self.lines,
                    bytes: line,
                    terminated: true,
                });
                if flow.is_break() {
                    return Ok(());
                }
            }
            if self.done {
                return Ok(());
            }
            // Keep the unfinished line and make room after it.
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = loop {
                match self.source.read(&mut self.buf[self.filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                self.done = true;
                if self.filled > 0 {
                    let line = &self.buf[..self.filled];
                    self.start = self.filled;
                    self.lines += 1;
                    // Nothing follows, so whether f breaks does not matter.
                    let _ = f(LogLine {
                        number: self.lines,
                        bytes: line,
                        terminated: false,
                    });
                }
                return Ok(());
            }
            self.filled += n;
        }
    }
}

/// A line of a log that is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", path.display())]
pub struct LineError {
    /// The log file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

/// Counts from [`read_events`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Events parsed.
    pub events: u64,
    /// Lines reported as errors.
    pub errors: u64,
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Parses every non-blank line of the log at `path` as an event. Lines that
/// do not parse, and a last line without `\n` (torn by a crash), go to
/// `on_error`. Fails only when the file cannot be read.
pub fn read_events(
    path: impl AsRef<Path>,
    mut on_event: impl FnMut(Event),
    mut on_error: impl FnMut(LineError),
) -> io::Result<ReadStats> {
    let path = path.as_ref();
    let mut reader = LogReader::open(path)?;
    let mut stats = ReadStats::default();
    reader.for_each_line(|line| {
        stats.lines += 1;
        if is_blank(line.bytes) {
            return ControlFlow::Continue(());
        }
        let result = if line.terminated {
            Event::from_wire(line.bytes).map_err(|e| e.to_string())
        } else {
            Err(format!(
                "torn last line ({} bytes without a newline)",
                line.bytes.len()
            ))
        };
        match result {
            Ok(event) => {
                stats.events += 1;
                on_event(event);
            }
            Err(message) => {
                stats.errors += 1;
                on_error(LineError {
                    path: path.to_owned(),
                    line: line.number,
                    message,
                });
            }
        }
        ControlFlow::Continue(())
    })?;
    Ok(stats)
}

/// The last complete line of the log at `path` that parses as an event,
/// skipping a torn tail and unparseable lines. A plain file is read
/// backwards in blocks from its end; a `.gz` one has to be read through.
pub fn last_event(path: impl AsRef<Path>) -> io::Result<Option<Event>> {
    let path = path.as_ref();
    if is_gz(path) {
        return last_event_streaming(path);
    }
    let mut file = File::open(path)?;
    let mut pos = file.metadata()?.len();
    // `buf` holds the file from `pos` up to the end of the part not yet
    // examined; once a `\n` has been seen, that end is right after a `\n`.
    let mut buf: Vec<u8> = Vec::new();
    let mut found_end = false;
    let mut block = vec![0u8; TAIL_BLOCK as usize];
    loop {
        if found_end {
            // Lines inside buf, from the back: buf[i+1 .. len-1].
            while let Some(i) = buf[..buf.len() - 1].iter().rposition(|&b| b == b'\n') {
                if let Some(event) = parse_line(&buf[i + 1..buf.len() - 1]) {
                    return Ok(Some(event));
                }
                buf.truncate(i + 1);
            }
            if pos == 0 {
                // buf is the file's first line.
                return Ok(parse_line(&buf[..buf.len() - 1]));
            }
        } else if pos == 0 {
            // No newline at all: the whole file is one torn line.
            return Ok(None);
        }
        let start = pos.saturating_sub(TAIL_BLOCK);
        let chunk = &mut block[..(pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        pos = start;
        if !found_end {
            if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
                found_end = true;
                buf.clear();
                buf.extend_from_slice(&chunk[..=i]);
            }
        } else {
            buf.splice(0..0, chunk.iter().copied());
        }
    }
}

fn parse_line(line: &[u8]) -> Option<Event> {
    if is_blank(line) {
        return None;
    }
    Event::from_wire(line).ok()
}

/// [`last_event`] for files that can only be read forwards: keeps the last
/// few complete lines and parses them at the end, so that only those are
/// parsed in the usual case.
fn last_event_streaming(path: &Path) -> io::Result<Option<Event>> {
    const KEEP: usize = 16;
    let mut recent: Vec<Vec<u8>> = vec![Vec::new(); KEEP];
    let mut count = 0usize;
    let mut reader = LogReader::open(path)?;
    reader.for_each_line(|line| {
        if line.terminated && !is_blank(line.bytes) {
            let slot = &mut recent[count % KEEP];
            slot.clear();
            slot.extend_from_slice(line.bytes);
            count += 1;
        }
        ControlFlow::Continue(())
    })?;
    for k in (count.saturating_sub(KEEP)..count).rev() {
        if let Some(event) = parse_line(&recent[k % KEEP]) {
            return Ok(Some(event));
        }
    }
    if count <= KEEP {
        return Ok(None);
    }
    // The last lines were all bad: parse everything, keep the last success.
    let mut last = None;
    LogReader::open(path)?.for_each_line(|line| {
        if line.terminated {
            if let Some(event) = parse_line(line.bytes) {
                last = Some(event);
            }
        }
        ControlFlow::Continue(())
    })?;
    Ok(last)
}

/// Every file of the log `file_name` in `dir`, oldest first: the rotated
/// files (plain or `.gz`) by date, then the active file if it exists.
pub fn log_files(dir: impl AsRef<Path>, file_name: &str) -> Vec<PathBuf> {
    let dir = dir.as_ref();
    let mut files: Vec<PathBuf> = rotated_files(dir, file_name)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let active = dir.join(file_name);
    if active.is_file() {
        files.push(active);
    }
    files
}

/// The id of a line in agentpulse's own format (`{"id":N,...`) without a
/// full parse.
pub(crate) fn quick_id(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"id\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // The `,` proves the number is complete, even in a torn line.
    if digits == 0 || rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The largest event id in the file at `path`, if it has any.
fn max_id(path: &Path) -> io::Result<Option<u64>> {
    let mut max = None;
    LogReader::open(path)?.for_each_line(|line| {
        // A torn last line with a complete id still counts: that id was
        // handed out and must not be reused.
        let id = quick_id(line.bytes).or_else(|| {
            line.terminated
                .then(|| parse_line(line.bytes).map(|e| e.id))
                .flatten()
        });
        max = max.max(id);
        ControlFlow::Continue(())
    })?;
    Ok(max)
}

/// The largest event id in the newest file of the log that has an event:
/// the active file, else the rotated files from the newest back. `None`
/// when the log has no event at all. The whole file is scanned (quickly,
/// ids only) rather than its last line trusted, so that ids are never
/// reused even if a file's lines are out of order.
pub fn recover_last_id(dir: impl AsRef<Path>, file_name: &str) -> io::Result<Option<u64>> {
    for path in log_files(dir, file_name).iter().rev() {
        match max_id(path) {
            Ok(Some(id)) => return Ok(Some(id)),
            Ok(None) => {}
            // Removed by maintenance meanwhile: nothing to learn from it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Record;
    use serde_json::json;
    use std::io::Write;

    fn event(id: u64) -> Event {
        Event {
            id,
            event_type: Arc::from("agent_completed"),
            timestamp: 1729012421.5 + id as f64,
            event_id: None,
            payload: json!({"agent": "scribe", "n": id})
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    fn lines(ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
        ids.into_iter()
            .flat_map(|id| Record::new(event(id)).line.to_vec())
            .collect()
    }

    fn collect(path: &Path) -> (Vec<u64>, Vec<LineError>) {
        let (mut ids, mut errors) = (Vec::new(), Vec::new());
        read_events(path, |e| ids.push(e.id), |e| errors.push(e)).unwrap();
        (ids, errors)
    }

    #[test]
    fn reads_lines_with_numbers_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, b"one\n\nthree\nfour").unwrap();
        let mut got = Vec::new();
        let mut r = LogReader::open(&p).unwrap();
        r.for_each_line(|l| {
            got.push((l.number, l.bytes.to_vec(), l.terminated));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            got,
            [
                (1, b"one".to_vec(), true),
                (2, b"".to_vec(), true),
                (3, b"three".to_vec(), true),
                (4, b"four".to_vec(), false)
            ]
        );
        assert_eq!(r.bytes_read(), 15);
        assert_eq!(r.file_size(), 15);
    }

    #[test]
    fn break_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, b"1\n2\n3\n").unwrap();
        let mut r = LogReader::open(&p).unwrap();
        let mut got = Vec::new();
        r.for_each_line(|l| {
            got.push(l.number);
            if l.number == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(got, [1, 2]);
        r.for_each_line(|l| {
            got.push(l.number);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(got, [1, 2, 3]);
    }

    #[test]
    fn lines_longer_than_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let long = vec![b'x'; CHUNK * 2 + 3];
        let mut content = b"short\n".to_vec();
        content.extend_from_slice(&long);
        content.extend_from_slice(b"\nend\n");
        std::fs::write(&p, &content).unwrap();
        let mut lens = Vec::new();
        LogReader::open(&p)
            .unwrap()
            .for_each_line(|l| {
                lens.push(l.bytes.len());
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(lens, [5, long.len(), 3]);
    }

    #[test]
    fn read_events_reports_bad_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let mut content = lines(1..=3);
        content.extend_from_slice(b"not json\n\n");
        content.extend_from_slice(&lines([4]));
        content.extend_from_slice(&lines([5])[..20]);
        std::fs::write(&p, &content).unwrap();
        let (ids, errors) = collect(&p);
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(errors.len(), 2);
        assert_eq!((errors[0].line, errors[1].line), (4, 7));
        assert!(errors[1].message.contains("torn"));
        assert!(errors[0]
            .to_string()
            .starts_with(&format!("{}:4: ", p.display())));
    }

    #[test]
    fn reads_gzip_files_and_reports_compressed_progress() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a-2024-10-01.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&p).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&lines(1..=5000)).unwrap();
        enc.finish().unwrap();
        let (ids, errors) = collect(&p);
        assert_eq!(ids, (1..=5000).collect::<Vec<_>>());
        assert!(errors.is_empty());
        let mut r = LogReader::open(&p).unwrap();
        let progress = r.progress();
        r.for_each_line(|_| ControlFlow::Continue(())).unwrap();
        assert_eq!(progress.bytes_read(), r.file_size());
        assert_eq!(last_event(&p).unwrap().unwrap().id, 5000);
    }

    #[test]
    fn last_event_skips_torn_tail_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let mut content = lines(1..=3);
        content.extend_from_slice(b"garbage\n");
        content.extend_from_slice(&lines([4])[..30]);
        std::fs::write(&p, &content).unwrap();
        assert_eq!(last_event(&p).unwrap().unwrap(), event(3));

        std::fs::write(&p, b"").unwrap();
        assert_eq!(last_event(&p).unwrap(), None);
        std::fs::write(&p, b"{\"id\":1").unwrap();
        assert_eq!(last_event(&p).unwrap(), None);
        std::fs::write(&p, lines([7])).unwrap();
        assert_eq!(last_event(&p).unwrap().unwrap().id, 7);
        std::fs::write(&p, b"x\ny\n").unwrap();
        assert_eq!(last_event(&p).unwrap(), None);
        assert!(last_event(dir.path().join("missing.jsonl")).is_err());
    }

    #[test]
    fn last_event_on_a_big_file_reads_only_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let mut f = std::io::BufWriter::new(File::create(&p).unwrap());
        for chunk in 0..20u64 {
            f.write_all(&lines(chunk * 10_000 + 1..=(chunk + 1) * 10_000))
                .unwrap();
        }
        // A bad line bigger than a block, then a torn tail.
        f.write_all(&vec![b'z'; TAIL_BLOCK as usize * 2]).unwrap();
        f.write_all(b"\n{\"id\":999999,\"ev").unwrap();
        drop(f);
        assert!(std::fs::metadata(&p).unwrap().len() > 10_000_000);
        let start = std::time::Instant::now();
        assert_eq!(last_event(&p).unwrap().unwrap().id, 200_000);
        // Reading backwards takes a few blocks, not the whole file.
        assert!(start.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn log_files_and_last_id_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let name = "agent-events.jsonl";
        assert_eq!(recover_last_id(d, name).unwrap(), None);
        std::fs::write(d.join("agent-events-2024-10-01.jsonl"), lines(1..=10)).unwrap();
        let mut enc = flate2::write::GzEncoder::new(
            File::create(d.join("agent-events-2024-09-30.jsonl.gz")).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&lines(100..=110)).unwrap(); // out of order: ignored, older file
        enc.finish().unwrap();
        std::fs::write(d.join("agent-events-2024-10-02.jsonl"), b"").unwrap();
        std::fs::write(d.join("agent-events-2024-10-01.1.jsonl"), lines(11..=20)).unwrap();
        std::fs::write(d.join("unrelated-2024-10-05.jsonl"), lines([5000])).unwrap();

        let names: Vec<String> = log_files(d, name)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "agent-events-2024-09-30.jsonl.gz",
                "agent-events-2024-10-01.jsonl",
                "agent-events-2024-10-01.1.jsonl",
                "agent-events-2024-10-02.jsonl"
            ]
        );
        // No active file, newest rotated one is empty: the one before it.
        assert_eq!(recover_last_id(d, name).unwrap(), Some(20));

        // An active file with only a torn line whose id is complete.
        std::fs::write(d.join(name), b"{\"id\":21,\"event_ty").unwrap();
        assert_eq!(recover_last_id(d, name).unwrap(), Some(21));
        std::fs::write(d.join(name), b"{\"id\":2").unwrap();
        assert_eq!(recover_last_id(d, name).unwrap(), Some(20));

        // Active file wins, and its largest id counts, not its last.
        let mut active = lines([30, 31]);
        active.extend_from_slice(&lines([25]));
        std::fs::write(d.join(name), active).unwrap();
        assert_eq!(recover_last_id(d, name).unwrap(), Some(31));
        assert_eq!(log_files(d, name).last().unwrap(), &d.join(name));
    }
}
