//! Start-up recovery: reading the log back so that ids continue, retried
//! events are still recognised, and in-memory metrics cover recent history.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::dedup::DedupWindow;
use crate::event::Event;
use crate::logfile;
use crate::sinks::jsonl::rotated_files;

/// What reading the log back found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The largest id in the log (0 when the log is empty).
    pub last_id: u64,
    /// Events read back.
    pub replayed: u64,
    /// Lines that were not events (reported through `tracing`).
    pub bad_lines: u64,
}

/// Reads the rotated files of the last `replay_days` days (by their date,
/// relative to `now`) and the active file, oldest first, giving each event
/// to `on_event` and remembering its `event_id` in `dedup`. When those
/// files hold no event, older files are searched for the last id.
pub fn recover(
    dir: &Path,
    file_name: &str,
    replay_days: u32,
    now: f64,
    dedup: &mut DedupWindow,
    mut on_event: impl FnMut(&Event),
) -> std::io::Result<Recovered> {
    let today = DateTime::<Utc>::from_timestamp(now as i64, 0)
        .unwrap_or_default()
        .date_naive();
    let oldest = today - chrono::Days::new(u64::from(replay_days));
    let mut files: Vec<_> = rotated_files(dir, file_name)
        .into_iter()
        .filter(|(date, _)| *date >= oldest)
        .map(|(_, p)| p)
        .collect();
    let active = dir.join(file_name);
    if active.exists() {
        files.push(active);
    }
    let mut rec = Recovered::default();
    for path in &files {
        logfile::read_events(
            path,
            |event| {
                rec.last_id = rec.last_id.max(event.id);
                rec.replayed += 1;
                if let Some(key) = &event.event_id {
                    dedup.insert(key, event.id);
                }
                on_event(&event);
            },
            |err| {
                rec.bad_lines += 1;
                tracing::warn!("{err}");
            },
        )?;
    }
    if rec.replayed == 0 {
        rec.last_id = logfile::recover_last_id(dir, file_name)?.unwrap_or(0);
    }
    Ok(rec)
}
