//! The stream epoch: which event history a hub serves.
//!
//! Ids are only meaningful within one history: a hub whose log was deleted,
//! or one without a log (`--no-log`), starts again at id 1. A reader that
//! resumes with `?since=ID` must be able to tell that the hub it reaches
//! is not the one it left, so each history has an epoch, a random string,
//! kept beside the id reservation (`agent-events.epoch` for
//! `agent-events.jsonl`). It is new when the history starts empty and on
//! every start without a log; otherwise it is read back.

use std::io::Write;
use std::path::Path;

/// A fresh random epoch: 128 bits from the OS, in hex.
pub fn fresh() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bytes) {
        // Without OS randomness: the time and process id still make it new.
        tracing::warn!("no OS randomness for the stream epoch: {e}");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (t ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The epoch of the log `dir/file_name`: the one stored, unless the history
/// is empty (`history_empty`) or none is stored (a log from before epochs),
/// in which case a fresh one is stored and returned.
pub fn load_or_create(dir: &Path, file_name: &str, history_empty: bool) -> std::io::Result<String> {
    if !history_empty {
        if let Some(s) = stored(dir, file_name) {
            return Ok(s);
        }
    }
    let epoch = fresh();
    store(dir, file_name, &epoch)?;
    Ok(epoch)
}

/// The epoch stored beside the log `dir/file_name`, if there is a valid one.
pub fn stored(dir: &Path, file_name: &str) -> Option<String> {
    let path = crate::sinks::jsonl::sidecar_path(dir, file_name, "epoch");
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| s.to_owned())
}

/// Stores `epoch` beside the log `dir/file_name` (written whole, then
/// renamed: a crash leaves the old one or the new one).
pub fn store(dir: &Path, file_name: &str, epoch: &str) -> std::io::Result<()> {
    let path = crate::sinks::jsonl::sidecar_path(dir, file_name, "epoch");
    let tmp = path.with_extension("epoch.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{epoch}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_while_the_history_goes_on_new_when_it_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), "agent-events.jsonl", true).unwrap();
        assert_eq!(a.len(), 32);
        assert!(dir.path().join("agent-events.epoch").exists());
        let b = load_or_create(dir.path(), "agent-events.jsonl", false).unwrap();
        assert_eq!(a, b);
        let c = load_or_create(dir.path(), "agent-events.jsonl", true).unwrap();
        assert_ne!(a, c);
        assert_ne!(fresh(), fresh());
        // A log from before epochs gets one.
        std::fs::remove_file(dir.path().join("agent-events.epoch")).unwrap();
        let d = load_or_create(dir.path(), "agent-events.jsonl", false).unwrap();
        assert_eq!(d.len(), 32);
    }
}
