//! Repair of a torn last line.
//!
//! A crash (or a full disk) can leave the active file ending in part of a
//! line. Appending after it would glue the next event to the fragment and
//! corrupt both, so before the file is written again the fragment is moved
//! to a side file (`<stem>.torn`, one fragment per line) and the log
//! is cut back to its last newline. Nothing is dropped: the side file is
//! synced before the log is truncated.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A torn last line that was moved out of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornLine {
    /// The side file the fragment was appended to.
    pub moved_to: PathBuf,
    /// Length of the fragment in bytes (without the newline added in the
    /// side file).
    pub bytes: u64,
}

/// Block size for scanning backwards.
const BLOCK: u64 = 64 * 1024;

/// The offset just past the last `\n` in the first `len` bytes of `file`
/// (0 when there is none).
pub(crate) fn end_of_last_line(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// If `log` exists, is non-empty and does not end in `\n`, moves the bytes
/// after its last `\n` to `side` (followed by `\n`) and truncates `log` to
/// end at that newline.
pub(crate) fn repair_torn_tail(log: &Path, side: &Path) -> io::Result<Option<TornLine>> {
    let mut file = match OpenOptions::new().read(true).write(true).open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let keep = end_of_last_line(&mut file, len)?;
    if keep == len {
        return Ok(None);
    }
    let torn = len - keep;
    file.seek(SeekFrom::Start(keep))?;
    let side_file = OpenOptions::new().create(true).append(true).open(side)?;
    // One buffered write for the usual small fragment, so the side file
    // gets it as one piece.
    let mut out = BufWriter::with_capacity(64 * 1024, side_file);
    let copied = io::copy(&mut (&mut file).take(torn), &mut out)?;
    if copied != torn {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} shrank while being repaired", log.display()),
        ));
    }
    out.write_all(b"\n")?;
    let side_file = out.into_inner().map_err(|e| e.into_error())?;
    side_file.sync_all()?;
    file.set_len(keep)?;
    file.sync_all()?;
    tracing::warn!(
        log = %log.display(),
        side_file = %side.display(),
        bytes = torn,
        "moved a torn last line (left by a crash or a failed write) to the side file"
    );
    Ok(Some(TornLine {
        moved_to: side.to_owned(),
        bytes: torn,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn complete_and_missing_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.jsonl");
        let side = dir.path().join("a.jsonl.torn");
        assert_eq!(repair_torn_tail(&log, &side).unwrap(), None);
        fs::write(&log, b"").unwrap();
        assert_eq!(repair_torn_tail(&log, &side).unwrap(), None);
        fs::write(&log, b"{}\n{}\n").unwrap();
        assert_eq!(repair_torn_tail(&log, &side).unwrap(), None);
        assert_eq!(fs::read(&log).unwrap(), b"{}\n{}\n");
        assert!(!side.exists());
    }

    #[test]
    fn torn_tail_moves_to_side_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.jsonl");
        let side = dir.path().join("a.jsonl.torn");
        fs::write(&log, b"{\"id\":1}\n{\"id\":2}\n{\"id\":3,\"ev").unwrap();
        let t = repair_torn_tail(&log, &side).unwrap().unwrap();
        assert_eq!(t.bytes, 11);
        assert_eq!(t.moved_to, side);
        assert_eq!(fs::read(&log).unwrap(), b"{\"id\":1}\n{\"id\":2}\n");
        assert_eq!(fs::read(&side).unwrap(), b"{\"id\":3,\"ev\n");

        // A second repair appends a second record.
        fs::write(&log, b"{\"id\":4").unwrap();
        let t = repair_torn_tail(&log, &side).unwrap().unwrap();
        assert_eq!(t.bytes, 7);
        assert_eq!(fs::read(&log).unwrap(), b"");
        assert_eq!(fs::read(&side).unwrap(), b"{\"id\":3,\"ev\n{\"id\":4\n");
    }

    #[test]
    fn torn_tail_longer_than_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.jsonl");
        let side = dir.path().join("a.jsonl.torn");
        let mut content = b"{}\n".repeat(50_000);
        let tail = vec![b'x'; 200_000];
        content.extend_from_slice(&tail);
        fs::write(&log, &content).unwrap();
        let t = repair_torn_tail(&log, &side).unwrap().unwrap();
        assert_eq!(t.bytes, 200_000);
        assert_eq!(fs::read(&log).unwrap().len(), 150_000);
        let mut expected = tail;
        expected.push(b'\n');
        assert_eq!(fs::read(&side).unwrap(), expected);
    }
}
