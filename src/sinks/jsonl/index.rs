//! A sparse index of the log, id → (file, offset), and a reader that seeks
//! with it ([`LogCursor`]): how a stream reader that fell behind the
//! in-memory ring is served from disk without scanning files from their
//! start.
//!
//! The index holds one `Segment` per file of the log, oldest first
//! (rotated files by date, then the active file). Each segment has points
//! `(id, offset)`: every line at or after `offset` has an id `>= id`. For a
//! plain file the offset is a byte offset and there is a point about every
//! [`SPACING`] bytes; for a gzipped file it is the offset of a gzip member
//! (maintenance compresses into members of about [`SPACING`] bytes of
//! input, so a reader can start decompressing there).
//!
//! Who keeps it current:
//! - [`LogIndex::open`] (at the sink's open) lists the files, indexes the
//!   active file, and leaves the rotated ones to a background thread (a
//!   reader that needs one first indexes it itself);
//! - the sink calls [`LogIndex::note_written`] after each write that left
//!   nothing pending: the file's length is then the end of a complete line,
//!   and readers never read past it;
//! - rotation ([`LogIndex::rotated`]), gzip ([`LogIndex::compressed`]) and
//!   deletion ([`LogIndex::deleted`]) move or drop segments. A reader that
//!   has a file open keeps reading it (renaming or unlinking an open file
//!   does not disturb it); one that finds a path gone looks it up again.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use flate2::bufread::GzDecoder;
use flate2::read::MultiGzDecoder;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::logfile::{self, quick_id};

/// About this many bytes between two points of a segment (and of input per
/// gzip member).
pub const SPACING: u64 = 256 * 1024;

/// A position in a file: lines at or after `offset` have ids `>= id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// A lower bound of the ids from `offset` on.
    pub id: u64,
    /// Byte offset (plain file) or gzip member offset (gzipped file).
    pub offset: u64,
}

/// One file of the log.
#[derive(Debug, Clone)]
struct Segment {
    /// Unique and increasing in file order, so a reader can ask for "the
    /// file after the one I finished" even when files were renamed.
    serial: u64,
    path: PathBuf,
    gz: bool,
    /// The file the sink appends to.
    active: bool,
    /// `None` until the file was scanned (rotated files at start).
    points: Option<Vec<Point>>,
    /// Active file: bytes written, all of them complete lines.
    end: u64,
}

#[derive(Debug, Default)]
struct Inner {
    segments: Vec<Segment>,
    next_serial: u64,
    /// Points of the active file are added at most every SPACING bytes.
    last_point_offset: u64,
}

/// The index of one log (see the module docs). Shared by the JSONL sink,
/// maintenance and every reader.
#[derive(Debug)]
pub struct LogIndex {
    inner: RwLock<Inner>,
    /// The last id whose line is completely written to the active file.
    written: watch::Sender<u64>,
}

/// Where a reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    serial: u64,
    path: PathBuf,
    gz: bool,
    offset: u64,
}

/// The answer of [`LogIndex::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Start reading here.
    At(Location),
    /// The wanted id is older than the log's first (it was deleted with
    /// its file, or never written): the log starts at this id.
    Before(u64),
    /// The log has no line with that id or a later one yet.
    Nothing,
}

impl LogIndex {
    /// Indexes the log `file_name` in `dir`: the active file now, rotated
    /// files on a background thread. `last_id` is the last id in the log
    /// (what the pipeline recovered), the watermark readers start from.
    pub fn open(dir: &Path, file_name: &str, last_id: u64) -> Arc<LogIndex> {
        let active = dir.join(file_name);
        let mut inner = Inner::default();
        for path in logfile::log_files(dir, file_name) {
            let is_active = path == active;
            let gz = path.extension().is_some_and(|e| e == "gz");
            let mut seg = Segment {
                serial: inner.next_serial,
                path,
                gz,
                active: is_active,
                points: None,
                end: 0,
            };
            inner.next_serial += 1;
            if is_active {
                let mut points = match scan(&seg.path, false) {
                    Ok(scanned) => {
                        seg.end = scanned.end;
                        scanned.points
                    }
                    Err(e) => {
                        tracing::warn!(path = %seg.path.display(), "cannot index the log: {e}");
                        Vec::new()
                    }
                };
                if points.is_empty() {
                    // Lines appended from here on come after `last_id`.
                    points.push(Point {
                        id: last_id + 1,
                        offset: seg.end,
                    });
                }
                seg.points = Some(points);
                inner.last_point_offset = seg.end;
            }
            inner.segments.push(seg);
        }
        if !inner.segments.last().is_some_and(|s| s.active) {
            // Created by the sink right after; starts empty.
            inner.segments.push(Segment {
                serial: inner.next_serial,
                path: active,
                gz: false,
                active: true,
                points: Some(vec![Point {
                    id: last_id + 1,
                    offset: 0,
                }]),
                end: 0,
            });
            inner.next_serial += 1;
        }
        let index = Arc::new(LogIndex {
            inner: RwLock::new(inner),
            written: watch::Sender::new(last_id),
        });
        let background = index.clone();
        let spawned = std::thread::Builder::new()
            .name("jsonl-index".into())
            .spawn(move || background.index_rotated());
        if let Err(e) = spawned {
            tracing::warn!("cannot start the log indexer (readers index files themselves): {e}");
        }
        index
    }

    /// Scans every rotated file not indexed yet, newest first (readers
    /// most often want recent ones).
    fn index_rotated(&self) {
        loop {
            let todo = {
                let inner = self.inner.read();
                inner
                    .segments
                    .iter()
                    .rev()
                    .find(|s| s.points.is_none())
                    .map(|s| s.serial)
            };
            match todo {
                Some(serial) => self.ensure_points(serial),
                None => return,
            }
        }
    }

    /// Scans a segment's file if it has no points yet.
    fn ensure_points(&self, serial: u64) {
        let Some((path, gz)) = self
            .inner
            .read()
            .segments
            .iter()
            .find(|s| s.serial == serial && s.points.is_none())
            .map(|s| (s.path.clone(), s.gz))
        else {
            return;
        };
        // Outside the lock: scanning a big file takes a while.
        let points = match scan(&path, gz) {
            Ok(s) => s.points,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Renamed (gzipped) or deleted meanwhile: whoever did it
                // updated the segment; if it is still unindexed, try again.
                return;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot index the log: {e}");
                Vec::new()
            }
        };
        let mut inner = self.inner.write();
        if let Some(seg) = inner
            .segments
            .iter_mut()
            .find(|s| s.serial == serial && s.path == path && s.points.is_none())
        {
            seg.points = Some(points);
        }
    }

    /// The last id completely written to the log.
    pub fn written(&self) -> u64 {
        *self.written.borrow()
    }

    /// A receiver that changes when more is written.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// The first id the log holds, if any. A file not indexed yet is not
    /// scanned for this: its first line is enough.
    pub fn first_id(&self) -> Option<u64> {
        let segments: Vec<Segment> = self.inner.read().segments.clone();
        for seg in segments {
            let first = match &seg.points {
                Some(points) => points.first().map(|p| p.id),
                None => first_line_id(&seg.path, seg.gz).ok().flatten(),
            };
            if first.is_some() {
                return first;
            }
        }
        None
    }

    /// Where to start reading for the first line with an id `>= id`.
    pub fn locate(&self, id: u64) -> Found {
        self.locate_from(id, None)
    }

    /// As [`LogIndex::locate`], only among files after the one with
    /// `serial` (a reader that finished a file goes on with the next one).
    fn locate_from(&self, id: u64, after_serial: Option<u64>) -> Found {
        // Newest first: the newest file whose first id is <= id.
        let serials: Vec<u64> = self
            .inner
            .read()
            .segments
            .iter()
            .filter(|s| after_serial.is_none_or(|a| s.serial > a))
            .map(|s| s.serial)
            .rev()
            .collect();
        let mut oldest_first = None;
        for &serial in &serials {
            self.ensure_points(serial);
            let inner = self.inner.read();
            let Some(seg) = inner.segments.iter().find(|s| s.serial == serial) else {
                continue;
            };
            let Some(points) = seg.points.as_ref() else {
                continue;
            };
            let Some(first) = points.first() else {
                // An empty file: a later one, if any, is where to go.
                continue;
            };
            if first.id <= id {
                let at = points[points.partition_point(|p| p.id <= id) - 1];
                return Found::At(Location {
                    serial,
                    path: seg.path.clone(),
                    gz: seg.gz,
                    offset: at.offset,
                });
            }
            oldest_first = Some((seg.serial, seg.path.clone(), seg.gz, first.id));
        }
        match oldest_first {
            // Every file starts after `id`: after a finished file that is
            // simply the next one; otherwise the ids before it are gone.
            Some((serial, path, gz, first)) => {
                if after_serial.is_some() {
                    Found::At(Location {
                        serial,
                        path,
                        gz,
                        offset: 0,
                    })
                } else {
                    Found::Before(first)
                }
            }
            None => Found::Nothing,
        }
    }

    /// How far a reader of segment `serial` may read: `Some(end)` while it
    /// is the active file (bytes written), `None` once rotated (to its end).
    fn readable_end(&self, serial: u64) -> Option<u64> {
        self.inner
            .read()
            .segments
            .iter()
            .find(|s| s.serial == serial && s.active)
            .map(|s| s.end)
    }

    /// The sink wrote everything up to `last_id`, and the active file is
    /// `end` bytes long.
    pub fn note_written(&self, last_id: u64, end: u64) {
        {
            let mut inner = self.inner.write();
            let last_point = inner.last_point_offset;
            let Some(seg) = inner.segments.last_mut().filter(|s| s.active) else {
                return;
            };
            seg.end = end;
            let points = seg.points.get_or_insert_with(Vec::new);
            if end >= last_point + SPACING {
                // `end` is where the line after `last_id` will start.
                points.push(Point {
                    id: last_id + 1,
                    offset: end,
                });
                inner.last_point_offset = end;
            }
        }
        self.written.send_if_modified(|w| {
            let changed = last_id > *w;
            *w = (*w).max(last_id);
            changed
        });
    }

    /// Ids `from..to` will never be written (a cluster member that fell
    /// behind the shared stream's retention, `crate::cluster::tail`): when
    /// nothing was written since the active file's last point and that
    /// point says `from`, it says `to`, so the log's first id is right and
    /// readers older than it get a `not_retained` gap. Otherwise (lines
    /// after the point) the ids are skipped as after a crash.
    pub fn skip(&self, from: u64, to: u64) {
        let mut inner = self.inner.write();
        let Some(seg) = inner.segments.last_mut().filter(|s| s.active) else {
            return;
        };
        let end = seg.end;
        if let Some(p) = seg.points.as_mut().and_then(|p| p.last_mut()) {
            if p.id == from && p.offset == end {
                p.id = to;
            }
        }
    }

    /// The active file was renamed to `to`; a new, empty active file at
    /// `active_path` follows.
    pub fn rotated(&self, to: &Path, active_path: &Path) {
        let written = self.written();
        let mut inner = self.inner.write();
        let serial = inner.next_serial;
        inner.next_serial += 1;
        if let Some(seg) = inner.segments.last_mut().filter(|s| s.active) {
            seg.active = false;
            seg.path = to.to_owned();
        }
        inner.segments.push(Segment {
            serial,
            path: active_path.to_owned(),
            gz: false,
            active: true,
            points: Some(vec![Point {
                id: written + 1,
                offset: 0,
            }]),
            end: 0,
        });
        inner.last_point_offset = 0;
    }

    /// The active file was (re)opened after its path stopped naming the
    /// file the sink had open (removed or replaced): what was in the old
    /// one is gone; the new one is `len` bytes long.
    pub fn reopened(&self, len: u64) {
        let written = self.written();
        let mut inner = self.inner.write();
        if let Some(seg) = inner.segments.last_mut().filter(|s| s.active) {
            seg.points = Some(vec![Point {
                id: written + 1,
                offset: len,
            }]);
            seg.end = len;
        }
        inner.last_point_offset = len;
    }

    /// Maintenance gzipped `plain` into `gz` with these member points.
    pub fn compressed(&self, plain: &Path, gz: &Path, points: Vec<Point>) {
        let mut inner = self.inner.write();
        if let Some(seg) = inner
            .segments
            .iter_mut()
            .find(|s| !s.active && s.path == plain)
        {
            seg.path = gz.to_owned();
            seg.gz = true;
            seg.points = Some(points);
        }
    }

    /// Maintenance deleted `path`.
    pub fn deleted(&self, path: &Path) {
        self.inner
            .write()
            .segments
            .retain(|s| s.active || s.path != path);
    }
}

/// The id of the first line of a file that has one (reading only until
/// that line).
fn first_line_id(path: &Path, gz: bool) -> io::Result<Option<u64>> {
    let file = File::open(path)?;
    let mut reader: Box<dyn BufRead> = if gz {
        Box::new(BufReader::new(MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if let Some(id) = quick_id(&line) {
            return Ok(Some(id));
        }
    }
}

/// What scanning a file found.
struct Scanned {
    points: Vec<Point>,
    /// Plain files: the offset after the last complete line.
    end: u64,
}

/// Indexes a file: ids of lines about every [`SPACING`] bytes (plain), or
/// of each gzip member's first line (gz).
fn scan(path: &Path, gz: bool) -> io::Result<Scanned> {
    if gz {
        return scan_gz(path);
    }
    let mut points = Vec::new();
    let mut reader = logfile::LogReader::open(path)?;
    let mut offset = 0u64;
    let mut next_point = 0u64;
    let mut end = 0u64;
    reader.for_each_line(|line| {
        let start = offset;
        offset += line.bytes.len() as u64 + 1;
        if !line.terminated {
            return ControlFlow::Continue(());
        }
        end = offset;
        if start >= next_point {
            if let Some(id) = quick_id(line.bytes) {
                points.push(Point { id, offset: start });
                next_point = start + SPACING;
            }
        }
        ControlFlow::Continue(())
    })?;
    Ok(Scanned { points, end })
}

/// A reader that counts what it hands out, to know where a gzip member
/// ends in the compressed file.
struct Counted<R> {
    inner: R,
    consumed: u64,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.consumed += amt as u64;
        self.inner.consume(amt);
    }
}

fn scan_gz(path: &Path) -> io::Result<Scanned> {
    let mut src = Counted {
        inner: BufReader::with_capacity(64 * 1024, File::open(path)?),
        consumed: 0,
    };
    let mut points = Vec::new();
    loop {
        if src.fill_buf()?.is_empty() {
            break;
        }
        let member_start = src.consumed;
        // One member: the bufread decoder stops at its end, so `consumed`
        // is then the next member's offset.
        let mut member = BufReader::with_capacity(64 * 1024, GzDecoder::new(&mut src));
        let mut first = Vec::new();
        member.read_until(b'\n', &mut first)?;
        if let Some(id) = quick_id(&first) {
            points.push(Point {
                id,
                offset: member_start,
            });
        }
        io::copy(&mut member, &mut io::sink())?;
    }
    Ok(Scanned { points, end: 0 })
}

/// A line read back from the log: its id and its bytes (the wire message,
/// without the newline), a slice of the reader's chunk.
pub type LogLine = (u64, Bytes);

/// What a [`LogCursor::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRead {
    /// Lines were added (or skipped over): the cursor moved.
    Lines,
    /// Ids `from..=to` are older than anything in the log.
    Missing {
        /// First missing id.
        from: u64,
        /// Last missing id.
        to: u64,
    },
    /// The cursor reached `upto`, or the end of what is written.
    End,
}

enum Source {
    Plain(File),
    Gz(Box<MultiGzDecoder<File>>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(f) => f.read(buf),
            Source::Gz(d) => d.read(buf),
        }
    }
}

struct Open {
    serial: u64,
    source: Source,
    /// Plain files: the offset up to which the file was read into `buf`.
    pos: u64,
}

/// A position in the log (the last id read), reading forwards in chunks of
/// complete lines. Holds one open file and one chunk buffer.
pub struct LogCursor {
    index: Arc<LogIndex>,
    after: u64,
    open: Option<Open>,
    buf: BytesMut,
    chunk: usize,
}

impl std::fmt::Debug for LogCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCursor")
            .field("after", &self.after)
            .field("open", &self.open.as_ref().map(|o| o.serial))
            .finish_non_exhaustive()
    }
}

impl LogCursor {
    /// A cursor after id `after`, reading `chunk` bytes at a time.
    pub fn new(index: Arc<LogIndex>, after: u64, chunk: usize) -> LogCursor {
        LogCursor {
            index,
            after,
            open: None,
            buf: BytesMut::new(),
            chunk: chunk.max(4096),
        }
    }

    /// The last id read (or skipped).
    pub fn after(&self) -> u64 {
        self.after
    }

    /// Reads lines with ids in `after+1..=upto` into `out` until about
    /// `max_bytes` are there. Lines without an id (not agentpulse's
    /// format) are skipped.
    pub fn read(
        &mut self,
        upto: u64,
        max_bytes: usize,
        out: &mut Vec<LogLine>,
    ) -> io::Result<LogRead> {
        let mut got = 0usize;
        let mut moved = false;
        // A path that vanished between lookup and open is looked up again;
        // a few times at most (each vanishing is a rename or deletion).
        let mut retries = 0;
        loop {
            if self.after >= upto {
                return Ok(if moved { LogRead::Lines } else { LogRead::End });
            }
            if self.open.is_none() {
                match self.index.locate(self.after + 1) {
                    Found::At(loc) => match self.open_at(&loc) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound && retries < 8 => {
                            retries += 1;
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                    Found::Before(first) => {
                        let from = self.after + 1;
                        let to = (first - 1).min(upto);
                        self.after = to;
                        return Ok(LogRead::Missing { from, to });
                    }
                    Found::Nothing => {
                        return Ok(if moved { LogRead::Lines } else { LogRead::End });
                    }
                }
            }
            // Hand out the complete lines in the buffer.
            while let Some(i) = memchr::memchr(b'\n', &self.buf) {
                let mut line = self.buf.split_to(i + 1);
                line.truncate(i);
                let Some(id) = quick_id(&line) else { continue };
                if id <= self.after {
                    continue;
                }
                if id > upto {
                    // Not ours to read: the caller takes it from elsewhere.
                    // Put the line back for a later call with a larger upto.
                    let mut back = BytesMut::with_capacity(line.len() + 1 + self.buf.len());
                    back.extend_from_slice(&line);
                    back.extend_from_slice(b"\n");
                    back.extend_from_slice(&self.buf);
                    self.buf = back;
                    return Ok(if moved { LogRead::Lines } else { LogRead::End });
                }
                self.after = id;
                moved = true;
                got += line.len();
                out.push((id, line.freeze()));
                if got >= max_bytes {
                    return Ok(LogRead::Lines);
                }
            }
            // Read more.
            let open = self.open.as_mut().expect("opened above");
            let limit = match self.index.readable_end(open.serial) {
                Some(end) => end.saturating_sub(open.pos) as usize,
                None => usize::MAX,
            };
            if self.buf.capacity() - self.buf.len() < self.chunk / 2 {
                self.buf.reserve(self.chunk);
            }
            let room = (self.buf.capacity() - self.buf.len()).min(limit);
            let n = if room == 0 {
                0
            } else {
                let len = self.buf.len();
                // Safe zeroing-free growth is not worth it: zero, read, cut.
                self.buf.resize(len + room, 0);
                let n = loop {
                    match open.source.read(&mut self.buf[len..]) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            self.buf.truncate(len);
                            return Err(e);
                        }
                    }
                };
                self.buf.truncate(len + n);
                open.pos += n as u64;
                n
            };
            if n > 0 {
                continue;
            }
            if limit == 0 || self.index.readable_end(open.serial).is_some() {
                // The active file, read up to what is written: more later.
                return Ok(if moved { LogRead::Lines } else { LogRead::End });
            }
            // The end of a finished file: on to the next one. A torn last
            // line (a crash) is left behind.
            let serial = open.serial;
            self.open = None;
            self.buf.clear();
            match self.index.locate_from(self.after + 1, Some(serial)) {
                Found::At(loc) => match self.open_at(&loc) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound && retries < 8 => {
                        retries += 1;
                    }
                    Err(e) => return Err(e),
                },
                _ => return Ok(if moved { LogRead::Lines } else { LogRead::End }),
            }
        }
    }

    fn open_at(&mut self, loc: &Location) -> io::Result<()> {
        let mut file = File::open(&loc.path)?;
        file.seek(SeekFrom::Start(loc.offset))?;
        let source = if loc.gz {
            Source::Gz(Box::new(MultiGzDecoder::new(file)))
        } else {
            Source::Plain(file)
        };
        self.buf.clear();
        self.open = Some(Open {
            serial: loc.serial,
            source,
            pos: loc.offset,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::event::{Event, Record, SharedRecord};
    use crate::sinks::jsonl::{JsonlConfig, JsonlSink};
    use crate::sinks::Sink;
    use serde_json::json;

    /// 2024-10-15T12:00:00Z.
    const NOON: f64 = 1728993600.0;

    fn records(ids: std::ops::RangeInclusive<u64>) -> Vec<SharedRecord> {
        ids.map(|id| {
            Arc::new(Record::new(Event {
                id,
                event_type: Arc::from("note"),
                timestamp: NOON,
                event_id: None,
                payload: json!({"i": id, "pad": "x".repeat(200)})
                    .as_object()
                    .unwrap()
                    .clone(),
            }))
        })
        .collect()
    }

    /// Everything after `after` up to `upto`, in chunks of `chunk` bytes.
    fn read_all(cursor: &mut LogCursor, upto: u64) -> (Vec<u64>, Vec<(u64, u64)>) {
        let (mut ids, mut missing) = (Vec::new(), Vec::new());
        loop {
            let mut out = Vec::new();
            match cursor.read(upto, 10_000, &mut out).unwrap() {
                LogRead::Lines => {}
                LogRead::Missing { from, to } => missing.push((from, to)),
                LogRead::End => {
                    assert!(out.is_empty());
                    return (ids, missing);
                }
            }
            for (id, line) in out {
                let e = Event::from_wire(&line).unwrap();
                assert_eq!(e.id, id);
                ids.push(id);
            }
        }
    }

    fn range(a: u64, b: u64) -> Vec<u64> {
        (a..=b).collect()
    }

    #[test]
    fn reads_across_rotation_gzip_and_deletion_seeking_by_points() {
        let dir = tempfile::tempdir().unwrap();
        let config = JsonlConfig {
            dir: dir.path().to_owned(),
            compress_after_days: 1,
            ..JsonlConfig::default()
        };
        let clock = ManualClock::new(NOON);
        let (mut sink, _) = JsonlSink::open(config, Arc::new(clock.clone())).unwrap();
        let index = LogIndex::open(dir.path(), "agent-events.jsonl", 0);
        sink.set_index(index.clone());
        for chunk in 0..10 {
            sink.write_batch(&records(chunk * 1000 + 1..=(chunk + 1) * 1000))
                .unwrap();
        }
        assert_eq!(index.written(), 10_000);
        // ~2.6 MB: about ten points.
        let points = index.inner.read().segments[0].points.clone().unwrap();
        assert!(points.len() >= 8, "{points:?}");
        assert_eq!(points[0], Point { id: 1, offset: 0 });

        let mut c = LogCursor::new(index.clone(), 0, 64 * 1024);
        assert_eq!(read_all(&mut c, u64::MAX), (range(1, 10_000), vec![]));
        // A seek lands on a point at or before the wanted id, not at 0.
        match index.locate(9_000) {
            Found::At(loc) => assert!(loc.offset > 0),
            other => panic!("{other:?}"),
        }
        let mut c = LogCursor::new(index.clone(), 8_999, 64 * 1024);
        assert_eq!(read_all(&mut c, 9_500).0, range(9_000, 9_500));
        // `upto` leaves the rest for later.
        assert_eq!(read_all(&mut c, u64::MAX).0, range(9_501, 10_000));

        // A reader in the middle of the first day's file when it rotates.
        let mut mid = LogCursor::new(index.clone(), 0, 64 * 1024);
        let mut out = Vec::new();
        mid.read(u64::MAX, 100_000, &mut out).unwrap();
        let mid_at = mid.after();
        assert!(mid_at > 0 && mid_at < 10_000);

        clock.advance(86_400.0);
        sink.write_batch(&records(10_001..=12_000)).unwrap();
        let rotated = dir.path().join("agent-events-2024-10-15.jsonl");
        assert!(rotated.exists());
        assert_eq!(index.written(), 12_000);
        let mut c = LogCursor::new(index.clone(), 9_990, 64 * 1024);
        assert_eq!(read_all(&mut c, u64::MAX).0, range(9_991, 12_000));

        // Gzipped while `mid` has the plain file open.
        let gz = super::super::rotation::compress(&rotated, Some(&index)).unwrap();
        assert!(!rotated.exists());
        let (ids, _) = read_all(&mut mid, u64::MAX);
        assert_eq!(ids, range(mid_at + 1, 12_000));
        // New readers seek by gzip members.
        let gz_points = index.inner.read().segments[0].points.clone().unwrap();
        assert!(gz_points.len() >= 8, "{gz_points:?}");
        let mut c = LogCursor::new(index.clone(), 7_000, 64 * 1024);
        assert_eq!(read_all(&mut c, u64::MAX).0, range(7_001, 12_000));
        // The same from an index built from the files alone (a restart).
        let rebuilt = LogIndex::open(dir.path(), "agent-events.jsonl", 12_000);
        rebuilt.index_rotated();
        assert_eq!(
            rebuilt.inner.read().segments[0].points.clone().unwrap(),
            gz_points
        );
        let mut c = LogCursor::new(rebuilt.clone(), 0, 64 * 1024);
        assert_eq!(read_all(&mut c, u64::MAX).0, range(1, 12_000));
        assert_eq!(rebuilt.first_id(), Some(1));

        // The first day deleted: its ids are reported missing, once.
        std::fs::remove_file(&gz).unwrap();
        index.deleted(&gz);
        let mut c = LogCursor::new(index.clone(), 0, 64 * 1024);
        assert_eq!(
            read_all(&mut c, u64::MAX),
            (range(10_001, 12_000), vec![(1, 10_000)])
        );
        assert_eq!(index.first_id(), Some(10_001));
    }

    #[test]
    fn readers_never_read_past_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let config = JsonlConfig {
            dir: dir.path().to_owned(),
            ..JsonlConfig::default()
        };
        let (mut sink, _) = JsonlSink::open(config, Arc::new(ManualClock::new(NOON))).unwrap();
        let index = LogIndex::open(dir.path(), "agent-events.jsonl", 0);
        sink.set_index(index.clone());
        let mut c = LogCursor::new(index.clone(), 0, 4096);
        assert_eq!(read_all(&mut c, u64::MAX).0, Vec::<u64>::new());
        sink.write_batch(&records(1..=3)).unwrap();
        // A half-written line after what the index knows is not read.
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join("agent-events.jsonl"))
                .unwrap();
            f.write_all(b"{\"id\":4,\"event_ty").unwrap();
        }
        assert_eq!(read_all(&mut c, u64::MAX).0, range(1, 3));
    }
}
