//! The buffer of lines not yet written, with exact accounting.
//!
//! A `BufWriter` cannot say, after an error, which bytes reached the file.
//! This buffer can: the main buffer always starts at a line boundary, and a
//! line that was only partly written is moved aside (`in_flight`) with the
//! count of its bytes already in the file. So a retry continues exactly
//! where the file stops, never writes a byte twice, and dropping under
//! pressure only ever removes whole lines that have not been started.

use std::io::{self, Write};

/// A line whose beginning is in the file and whose end is not.
#[derive(Debug)]
struct InFlight {
    line: Vec<u8>,
    written: usize,
}

/// Lines waiting to be written.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// `buf[head..]` is unwritten and starts at a line boundary;
    /// `buf[..head]` is done (written or dropped) and reclaimed lazily.
    buf: Vec<u8>,
    head: usize,
    in_flight: Option<InFlight>,
}

/// Capacity kept after a large backlog has been written.
const KEEP_CAPACITY: usize = 1 << 20;

impl Pending {
    /// Bytes not yet written.
    pub(crate) fn unwritten(&self) -> usize {
        self.buf.len() - self.head
            + self
                .in_flight
                .as_ref()
                .map_or(0, |f| f.line.len() - f.written)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.unwritten() == 0
    }

    /// Appends one line; adds the `\n` if it lacks one so that lines can
    /// never run together.
    pub(crate) fn push(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        // Reclaim the done prefix once it is at least half the buffer, so
        // moving the rest costs no more than the bytes already consumed.
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(line);
        if line.last() != Some(&b'\n') {
            self.buf.push(b'\n');
        }
    }

    /// The bytes of the partly written line that are already in the file.
    pub(crate) fn written_prefix(&self) -> Option<&[u8]> {
        self.in_flight.as_ref().map(|f| &f.line[..f.written])
    }

    /// Forgets that the partly written line was started: it will be written
    /// whole (for when the file holding its beginning is gone).
    pub(crate) fn restart_in_flight(&mut self) {
        if let Some(f) = &mut self.in_flight {
            f.written = 0;
        }
    }

    /// Drops the oldest lines that have not been started until at most
    /// `max` bytes are unwritten (or nothing droppable is left). Returns
    /// the number of lines dropped.
    #[cfg(test)]
    pub(crate) fn drop_oldest(&mut self, max: usize) -> u64 {
        self.drop_oldest_ids(max, |_| {})
    }

    /// [`Pending::drop_oldest`], telling `on_id` the id of each dropped line
    /// (a wire-format line starts with `{"id":N`).
    pub(crate) fn drop_oldest_ids(&mut self, max: usize, mut on_id: impl FnMut(u64)) -> u64 {
        let mut dropped = 0;
        while self.unwritten() > max && self.head < self.buf.len() {
            let end = memchr::memchr(b'\n', &self.buf[self.head..])
                .map_or(self.buf.len(), |i| self.head + i + 1);
            if let Some(id) = line_id(&self.buf[self.head..end]) {
                on_id(id);
            }
            self.head = end;
            dropped += 1;
        }
        if self.head == self.buf.len() {
            self.clear_buf();
        }
        dropped
    }

    fn clear_buf(&mut self) {
        self.buf.clear();
        self.head = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf.shrink_to(KEEP_CAPACITY);
        }
    }

    /// Writes everything to `w`. On error, what was written stays written
    /// and the rest stays pending.
    pub(crate) fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<()> {
        if let Some(f) = &mut self.in_flight {
            while f.written < f.line.len() {
                match w.write(&f.line[f.written..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => f.written += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.in_flight = None;
        }
        while self.head < self.buf.len() {
            let result = match w.write(&self.buf[self.head..]) {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.head += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            self.set_aside_partial_line();
            return result;
        }
        self.clear_buf();
        Ok(())
    }

    /// Restores the invariant that `buf[head..]` starts at a line boundary
    /// after a write stopped inside a line.
    fn set_aside_partial_line(&mut self) {
        let head = self.head;
        if head == 0 || self.buf[head - 1] == b'\n' {
            return;
        }
        // buf[0] is always a line start: the buffer is only compacted at a
        // boundary.
        let start = self.buf[..head]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let end = memchr::memchr(b'\n', &self.buf[head..]).map_or(self.buf.len(), |i| head + i + 1);
        self.in_flight = Some(InFlight {
            line: self.buf[start..end].to_vec(),
            written: head - start,
        });
        self.head = end;
    }
}

/// The id of a wire-format line (`{"id":42,...`).
fn line_id(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"id\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A writer that accepts `budget` bytes, in pieces of at most `piece`,
    /// then fails until given a new budget.
    struct Flaky {
        out: Vec<u8>,
        budget: usize,
        piece: usize,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "full"));
            }
            let n = buf.len().min(self.budget).min(self.piece);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(i: usize) -> Vec<u8> {
        format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 17)).into_bytes()
    }

    #[test]
    fn partial_write_resumes_without_duplicates() {
        let mut p = Pending::default();
        let mut w = Flaky {
            out: Vec::new(),
            budget: 30,
            piece: 7,
        };
        let mut expected = Vec::new();
        for i in 0..10 {
            p.push(&line(i));
            expected.extend_from_slice(&line(i));
        }
        assert!(p.write_to(&mut w).is_err());
        assert_eq!(w.out.len(), 30);
        assert_eq!(p.unwritten(), expected.len() - 30);
        assert!(p.written_prefix().is_some());
        // Pressure never drops the line that is half in the file.
        let dropped = p.drop_oldest(0);
        assert_eq!(dropped, 9 - 1);
        assert_eq!(p.buf.len(), 0);
        w.budget = usize::MAX;
        p.write_to(&mut w).unwrap();
        assert!(p.is_empty());
        // The file holds whole lines: the first ones and the finished one.
        assert!(w.out.ends_with(b"\n"));
        for l in w.out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(l.starts_with(b"{\"id\":") && l.ends_with(b"}"));
        }
    }

    #[test]
    fn restart_writes_the_whole_line_again() {
        let mut p = Pending::default();
        p.push(b"abcdef\n");
        let mut w = Flaky {
            out: Vec::new(),
            budget: 3,
            piece: 100,
        };
        assert!(p.write_to(&mut w).is_err());
        assert_eq!(p.written_prefix(), Some(&b"abc"[..]));
        p.restart_in_flight();
        let mut fresh = Vec::new();
        p.write_to(&mut fresh).unwrap();
        assert_eq!(fresh, b"abcdef\n");
    }

    #[test]
    fn dropped_lines_report_their_ids() {
        let mut p = Pending::default();
        for i in 1..=5 {
            p.push(format!("{{\"id\":{i},\"x\":1}}\n").as_bytes());
        }
        let mut ids = Vec::new();
        let n = p.drop_oldest_ids(30, |id| ids.push(id));
        assert_eq!(n as usize, ids.len());
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(line_id(b"garbage"), None);
    }

    #[test]
    fn push_adds_missing_newline() {
        let mut p = Pending::default();
        p.push(b"a");
        p.push(b"");
        p.push(b"b\n");
        let mut out = Vec::new();
        p.write_to(&mut out).unwrap();
        assert_eq!(out, b"a\nb\n");
    }

    proptest! {
        /// Whatever the failures, the output is a prefix-free interleaving:
        /// every line written exactly once and whole, except dropped ones.
        #[test]
        fn exactly_once_under_failures(
            steps in proptest::collection::vec((0usize..6, 0usize..200, 1usize..50), 1..40),
            max in 0usize..400,
        ) {
            let mut p = Pending::default();
            let mut w = Flaky { out: Vec::new(), budget: 0, piece: 1 };
            let mut next = 0;
            let mut dropped = 0;
            for (pushes, budget, piece) in steps {
                for _ in 0..pushes {
                    p.push(&line(next));
                    next += 1;
                }
                dropped += p.drop_oldest(max);
                w.budget = budget;
                w.piece = piece;
                let _ = p.write_to(&mut w);
            }
            w.budget = usize::MAX;
            p.write_to(&mut w).unwrap();
            let lines: Vec<&[u8]> = w.out.split(|&b| b == b'\n').collect();
            prop_assert_eq!(lines.last().copied(), Some(&b""[..]));
            let mut last_id: Option<usize> = None;
            for l in &lines[..lines.len() - 1] {
                let id: usize = std::str::from_utf8(&l[6..l.iter().position(|&b| b == b',').unwrap()])
                    .unwrap().parse().unwrap();
                let mut full = line(id);
                full.pop();
                prop_assert_eq!(*l, &full[..]);
                prop_assert!(last_id.is_none_or(|x| x < id));
                last_id = Some(id);
            }
            prop_assert_eq!(lines.len() as u64 - 1 + dropped, next as u64);
        }
    }
}
