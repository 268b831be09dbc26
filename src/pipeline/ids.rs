//! Ids that are never reused, even across a crash.
//!
//! The log holds the ids of the events written, but a crash can lose
//! events that were given ids (and shown on the live stream) before they
//! reached the file. So the dispatcher reserves ids ahead in a small file
//! beside the log (`agent-events.ids` for `agent-events.jsonl`), synced before any id of a new block is
//! given. At start the next id is past both the log's last id and the
//! reservation: after a crash ids jump (a gap), never repeat. A clean stop
//! writes back the last id given, so a clean restart continues without a
//! gap.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Ids reserved per write of the file: one sync per this many events.
pub const BLOCK: u64 = 1_000_000;

/// The reservation file and the highest id it covers.
#[derive(Debug)]
pub struct IdReservation {
    path: PathBuf,
    reserved: u64,
}

impl IdReservation {
    /// The reservation beside the log `dir/file_name` (0 when there is none
    /// or it is unreadable).
    pub fn load(dir: &Path, file_name: &str) -> IdReservation {
        let path = crate::sinks::jsonl::sidecar_path(dir, file_name, "ids");
        let reserved = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        IdReservation { path, reserved }
    }

    /// The highest id reserved.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Makes sure `id` is covered, reserving a new block (written and synced)
    /// when it is not.
    pub fn ensure(&mut self, id: u64) -> std::io::Result<()> {
        if id <= self.reserved {
            return Ok(());
        }
        self.write(id.saturating_add(BLOCK - 1))
    }

    /// After a clean stop: the reservation ends at the last id given.
    pub fn release(&mut self, last_given: u64) -> std::io::Result<()> {
        self.write(last_given)
    }

    fn write(&mut self, reserved: u64) -> std::io::Result<()> {
        let tmp = self.path.with_extension("ids.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{reserved}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.reserved = reserved;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_in_blocks_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = IdReservation::load(dir.path(), "log.jsonl");
        assert_eq!(r.reserved(), 0);
        r.ensure(1).unwrap();
        assert_eq!(r.reserved(), BLOCK);
        r.ensure(BLOCK).unwrap();
        assert_eq!(
            IdReservation::load(dir.path(), "log.jsonl").reserved(),
            BLOCK
        );
        r.ensure(BLOCK + 1).unwrap();
        assert_eq!(r.reserved(), 2 * BLOCK);
        r.release(BLOCK + 1).unwrap();
        assert_eq!(
            IdReservation::load(dir.path(), "log.jsonl").reserved(),
            BLOCK + 1
        );
    }

    #[test]
    fn the_file_is_named_so_that_log_globs_miss_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = IdReservation::load(dir.path(), "agent-events.jsonl");
        r.ensure(1).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["agent-events.ids"]);
    }

    #[test]
    fn a_reservation_under_the_old_name_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent-events.jsonl.ids"), "42\n").unwrap();
        let r = IdReservation::load(dir.path(), "agent-events.jsonl");
        assert_eq!(r.reserved(), 42);
        assert!(dir.path().join("agent-events.ids").exists());
        assert!(!dir.path().join("agent-events.jsonl.ids").exists());
    }
}
