use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::event::{Event, Record};
use crate::logfile::{last_event, log_files, read_events};

/// 2024-10-15T23:59:59Z.
const LAST_SECOND: f64 = 1729036799.0;
const DAY: f64 = 86_400.0;

fn event(id: u64) -> Event {
    Event {
        id,
        event_type: Arc::from("tool_called"),
        timestamp: LAST_SECOND + id as f64 / 1000.0,
        event_id: id.is_multiple_of(3).then(|| format!("k-{id}").into()),
        payload: json!({"agent": "scribe", "tool": "search", "n": id, "text": "é\"\n"})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn records(ids: impl IntoIterator<Item = u64>) -> Vec<SharedRecord> {
    ids.into_iter()
        .map(|id| Arc::new(Record::new(event(id))))
        .collect()
}

fn config(dir: &Path) -> JsonlConfig {
    JsonlConfig {
        dir: dir.to_owned(),
        ..JsonlConfig::default()
    }
}

fn open_at(config: JsonlConfig, now: f64) -> (JsonlSink, OpenReport, ManualClock) {
    let clock = ManualClock::new(now);
    let (sink, report) = JsonlSink::open(config, Arc::new(clock.clone())).unwrap();
    (sink, report, clock)
}

/// Ids of the events in `path`; panics on any bad or torn line.
fn ids_in(path: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    read_events(path, |e| ids.push(e.id), |e| panic!("{e}")).unwrap();
    ids
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn durability_names() {
    for d in [Durability::None, Durability::Batch, Durability::Always] {
        assert_eq!(d.as_str().parse::<Durability>().unwrap(), d);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
        assert_eq!(
            serde_json::from_str::<Durability>(&format!("\"{d}\"")).unwrap(),
            d
        );
    }
    assert!("Batch".parse::<Durability>().is_err());
    assert_eq!(Durability::default(), Durability::Batch);
    let c = JsonlConfig::default();
    assert_eq!(c.active_path(), Path::new("logs/agent-events.jsonl"));
    assert_eq!(c.max_pending_bytes, 64 * 1024 * 1024);
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, report, _) = open_at(config(dir.path()), LAST_SECOND - 3600.0);
    assert_eq!(report, OpenReport::default());
    assert_eq!(sink.active_path(), dir.path().join("agent-events.jsonl"));
    sink.write_batch(&records(1..=50)).unwrap();
    sink.write_batch(&records(51..=100)).unwrap();
    sink.flush().unwrap();
    let mut events = Vec::new();
    read_events(sink.active_path(), |e| events.push(e), |e| panic!("{e}")).unwrap();
    assert_eq!(events, (1..=100).map(event).collect::<Vec<_>>());
    assert_eq!(sink.dropped(), 0);
    assert_eq!(sink.name(), "jsonl");
}

#[test]
fn open_creates_missing_parents() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/logs");
    let (sink, _, _) = open_at(config(&nested), LAST_SECOND);
    assert!(sink.active_path().is_file());
}

#[test]
fn open_fails_when_parent_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("blocker"), b"").unwrap();
    let err = JsonlSink::open(
        config(&dir.path().join("blocker/logs")),
        Arc::new(ManualClock::new(LAST_SECOND)),
    )
    .unwrap_err();
    assert!(err.to_string().contains("blocker/logs"), "{err}");
}

#[test]
fn writes_on_flush_and_on_tick_after_flush_interval() {
    // Durability `none` buffers; `batch` and `always` write every batch.
    let dir = tempfile::tempdir().unwrap();
    let c = JsonlConfig {
        durability: Durability::None,
        ..config(dir.path())
    };
    let (mut sink, _, clock) = open_at(c, LAST_SECOND - 3600.0);
    let path = sink.active_path().to_owned();

    sink.write_batch(&records(1..=2)).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 0, "small batches wait");
    sink.flush().unwrap();
    assert_eq!(ids_in(&path), [1, 2]);

    sink.write_batch(&records([3])).unwrap();
    clock.advance(0.05);
    sink.tick().unwrap();
    assert_eq!(ids_in(&path), [1, 2], "flush_interval has not passed");
    clock.advance(0.05);
    sink.tick().unwrap();
    assert_eq!(ids_in(&path), [1, 2, 3]);
    assert_eq!(sink.pending_bytes(), 0);
}

#[test]
fn with_durability_batch_every_batch_is_written_before_the_sink_returns() {
    // Ingest acknowledgements wait for `caught_up`: an acknowledged event
    // must be in the file (with the OS), so that it survives a crash.
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, _, _) = open_at(config(dir.path()), LAST_SECOND - 3600.0);
    let path = sink.active_path().to_owned();
    sink.write_batch(&records(1..=2)).unwrap();
    assert_eq!(ids_in(&path), [1, 2]);
    assert!(sink.caught_up());
    let none = tempfile::tempdir().unwrap();
    let c = JsonlConfig {
        durability: Durability::None,
        ..config(none.path())
    };
    let (mut sink, _, _) = open_at(c, LAST_SECOND - 3600.0);
    sink.write_batch(&records(1..=2)).unwrap();
    assert!(!sink.caught_up());
}

#[test]
fn big_batches_are_written_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, _, _) = open_at(config(dir.path()), LAST_SECOND - 3600.0);
    sink.write_batch(&records(1..=1000)).unwrap();
    let len = fs::metadata(sink.active_path()).unwrap().len();
    assert!(len >= WRITE_THRESHOLD as u64);
    assert!(sink.pending_bytes() < WRITE_THRESHOLD);
}

#[test]
fn durability_always_writes_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let c = JsonlConfig {
        durability: Durability::Always,
        ..config(dir.path())
    };
    let (mut sink, _, _) = open_at(c, LAST_SECOND - 3600.0);
    sink.write_batch(&records([1])).unwrap();
    assert_eq!(ids_in(sink.active_path()), [1]);
    assert!(!sink.unsynced);
}

#[test]
fn durability_batch_syncs_on_tick_after_fsync_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, _, clock) = open_at(config(dir.path()), LAST_SECOND - 3600.0);
    assert_eq!(sink.tick_interval(), Duration::from_millis(100));
    sink.write_batch(&records([1])).unwrap();
    clock.advance(0.1);
    sink.tick().unwrap();
    assert!(sink.unsynced, "written, not yet synced");
    clock.advance(0.9);
    sink.tick().unwrap();
    assert!(!sink.unsynced);
}

#[test]
fn drop_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, _, _) = open_at(config(dir.path()), LAST_SECOND - 3600.0);
    let path = sink.active_path().to_owned();
    sink.write_batch(&records(1..=3)).unwrap();
    drop(sink);
    assert_eq!(ids_in(&path), [1, 2, 3]);
}

#[test]
fn rotates_at_utc_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, _, clock) = open_at(config(dir.path()), LAST_SECOND - 10.0);
    sink.write_batch(&records(1..=3)).unwrap();
    sink.tick().unwrap();
    sink.write_batch(&records(4..=5)).unwrap(); // still pending at midnight
    clock.set(LAST_SECOND + 0.5);
    sink.tick().unwrap();
    assert!(rotated_files(dir.path(), "agent-events.jsonl").is_empty());

    clock.set(LAST_SECOND + 1.0); // 2024-10-16T00:00:00Z
    sink.write_batch(&records(6..=7)).unwrap();
    sink.flush().unwrap();
    let rotated = rotated_files(dir.path(), "agent-events.jsonl");
    let old = dir.path().join("agent-events-2024-10-15.jsonl");
    assert_eq!(rotated, [(date("2024-10-15"), old.clone())]);
    assert_eq!(ids_in(&old), [1, 2, 3, 4, 5]);
    assert_eq!(ids_in(sink.active_path()), [6, 7]);

    // The next midnight, via tick.
    clock.advance(DAY);
    sink.write_batch(&records([8])).unwrap();
    clock.advance(0.1);
    sink.tick().unwrap();
    assert!(dir.path().join("agent-events-2024-10-16.jsonl").is_file());
    sink.write_batch(&records([9])).unwrap();
    sink.flush().unwrap();
    sink.wait_maintenance();

    let mut all = Vec::new();
    for f in log_files(dir.path(), "agent-events.jsonl") {
        all.extend(ids_in(&f));
    }
    assert_eq!(all, (1..=9).collect::<Vec<_>>(), "nothing lost or doubled");
}

#[test]
fn rotation_name_collision_gets_a_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let taken = dir.path().join("agent-events-2024-10-15.jsonl");
    fs::write(&taken, b"earlier run\n").unwrap();
    let (mut sink, _, clock) = open_at(config(dir.path()), LAST_SECOND);
    sink.write_batch(&records(1..=2)).unwrap();
    clock.advance(1.0);
    sink.tick().unwrap();
    assert_eq!(fs::read(&taken).unwrap(), b"earlier run\n");
    assert_eq!(
        ids_in(&dir.path().join("agent-events-2024-10-15.1.jsonl")),
        [1, 2]
    );
    sink.wait_maintenance();
}

#[test]
fn no_rotation_when_disabled_or_clock_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, _, clock) = open_at(config(dir.path()), LAST_SECOND);
    sink.write_batch(&records([1])).unwrap();
    clock.set(LAST_SECOND - DAY);
    sink.write_batch(&records([2])).unwrap();
    sink.flush().unwrap();
    assert!(rotated_files(dir.path(), "agent-events.jsonl").is_empty());

    let dir = tempfile::tempdir().unwrap();
    let c = JsonlConfig {
        rotate_daily: false,
        ..config(dir.path())
    };
    let (mut sink, _, clock) = open_at(c, LAST_SECOND);
    sink.write_batch(&records([1])).unwrap();
    clock.advance(3.0 * DAY);
    sink.write_batch(&records([2])).unwrap();
    sink.tick().unwrap();
    sink.flush().unwrap();
    assert_eq!(names_in(dir.path()), ["agent-events.jsonl"]);
    assert_eq!(ids_in(sink.active_path()), [1, 2]);
}

#[test]
fn open_rotates_a_file_from_an_earlier_day() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent-events.jsonl");
    let mut content = Record::new(event(1)).line.to_vec();
    content.extend_from_slice(b"{\"id\":2,\"torn");
    fs::write(&path, &content).unwrap();
    // mtime 2024-10-14 12:00 UTC; the clock says 2024-10-15.
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs_f64(LAST_SECOND - 1.5 * DAY);
    File::options()
        .append(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (mut sink, report, _) = open_at(config(dir.path()), LAST_SECOND - 60.0);
    let old = dir.path().join("agent-events-2024-10-14.jsonl");
    assert_eq!(report.rotated, std::slice::from_ref(&old));
    assert_eq!(report.torn.unwrap().bytes, 13);
    assert_eq!(ids_in(&old), [1]);
    sink.write_batch(&records([3])).unwrap();
    sink.flush().unwrap();
    assert_eq!(ids_in(sink.active_path()), [3]);
}

#[test]
fn gzip_after_7_days_and_delete_after_30() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let week_old = d.join("agent-events-2024-10-08.jsonl");
    let month_old = d.join("agent-events-2024-09-15.jsonl.gz");
    let older = d.join("agent-events-2024-10-01.jsonl");
    fs::write(&week_old, Record::new(event(1)).line).unwrap();
    fs::write(&older, Record::new(event(0)).line).unwrap();
    fs::write(&month_old, b"").unwrap();
    fs::write(d.join("agent-events-2024-01-01.txt"), b"not ours").unwrap();

    // On open (2024-10-15): only what is already past its limits.
    let (mut sink, _, clock) = open_at(config(d), LAST_SECOND - 60.0);
    assert!(!older.exists());
    assert!(d.join("agent-events-2024-10-01.jsonl.gz").is_file());
    assert!(week_old.is_file());
    assert!(month_old.is_file());

    // After midnight, 10-08 is 8 days old and 09-15 is 31.
    clock.advance(120.0);
    sink.tick().unwrap();
    let report = sink.wait_maintenance().expect("maintenance ran");
    assert_eq!(
        report.compressed,
        [d.join("agent-events-2024-10-08.jsonl.gz")]
    );
    assert_eq!(report.deleted, std::slice::from_ref(&month_old));
    assert_eq!(
        names_in(d),
        [
            "agent-events-2024-01-01.txt",
            "agent-events-2024-10-01.jsonl.gz",
            "agent-events-2024-10-08.jsonl.gz",
            "agent-events.jsonl",
        ]
    );
    assert_eq!(ids_in(&d.join("agent-events-2024-10-08.jsonl.gz")), [1]);
    // Once per day only.
    clock.advance(60.0);
    sink.tick().unwrap();
    assert!(sink.wait_maintenance().is_none());
}

#[test]
fn torn_line_is_moved_aside_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, _, _) = open_at(config(dir.path()), LAST_SECOND - 3600.0);
    let path = sink.active_path().to_owned();
    sink.write_batch(&records(1..=3)).unwrap();
    drop(sink);
    // A crash in the middle of writing line 4.
    let line4 = Record::new(event(4)).line;
    let half = &line4[..line4.len() / 2];
    let mut f = File::options().append(true).open(&path).unwrap();
    io::Write::write_all(&mut f, half).unwrap();
    drop(f);
    let complete_len = fs::metadata(&path).unwrap().len() - half.len() as u64;

    let (mut sink, report, _) = open_at(config(dir.path()), LAST_SECOND - 3000.0);
    let torn = report.torn.expect("torn line reported");
    assert_eq!(torn.bytes, half.len() as u64);
    assert_eq!(torn.moved_to, dir.path().join("agent-events.torn"));
    let mut expected_side = half.to_vec();
    expected_side.push(b'\n');
    assert_eq!(fs::read(&torn.moved_to).unwrap(), expected_side);
    assert_eq!(fs::metadata(&path).unwrap().len(), complete_len);
    assert!(fs::read(&path).unwrap().ends_with(b"\n"));

    sink.write_batch(&records(5..=6)).unwrap();
    sink.flush().unwrap();
    assert_eq!(ids_in(&path), [1, 2, 3, 5, 6]);
    assert_eq!(last_event(&path).unwrap().unwrap().id, 6);
}

#[test]
fn directory_replaced_by_a_file_then_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("logs");
    let c = JsonlConfig {
        durability: Durability::None,
        ..config(&dir)
    };
    let (mut sink, _, clock) = open_at(c, LAST_SECOND - 3600.0);
    sink.write_batch(&records(1..=2)).unwrap();
    sink.flush().unwrap();

    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, b"in the way").unwrap();
    sink.write_batch(&records(3..=4)).unwrap(); // only buffered
    let err = sink.flush().unwrap_err();
    assert!(err.to_string().contains("logs"), "{err}");
    clock.advance(0.1);
    sink.write_batch(&records([5])).unwrap();
    assert!(sink.tick().is_err());
    clock.advance(0.1);
    assert!(sink.tick().is_err());

    fs::remove_file(&dir).unwrap();
    clock.advance(0.05);
    sink.tick().unwrap(); // not due yet: nothing attempted
    assert!(!dir.exists());
    clock.advance(0.05);
    sink.tick().unwrap();
    sink.write_batch(&records([6])).unwrap();
    sink.flush().unwrap();
    // 1 and 2 went with the removed directory; the rest exactly once.
    assert_eq!(ids_in(&dir.join("agent-events.jsonl")), [3, 4, 5, 6]);
    assert_eq!(sink.dropped(), 0);
}

#[cfg(target_os = "linux")]
#[test]
fn disk_full_then_space_again() {
    // /dev/full fails every write with ENOSPC, like a full disk, even for
    // root.
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = JsonlConfig {
        durability: Durability::Always,
        ..config(dir.path())
    };
    let (mut sink, _, clock) = open_at(c, LAST_SECOND - 3600.0);
    let path = sink.active_path().to_owned();
    let aside = dir.path().join("aside");
    sink.write_batch(&records(1..=2)).unwrap();

    fs::rename(&path, &aside).unwrap();
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let err = sink.write_batch(&records(3..=4)).unwrap_err();
    assert!(err.to_string().contains("agent-events.jsonl"), "{err}");
    assert!(sink.write_batch(&records([5])).is_err());
    clock.advance(0.1);
    assert!(sink.tick().is_err());

    fs::remove_file(&path).unwrap();
    fs::rename(&aside, &path).unwrap();
    clock.advance(0.1);
    sink.tick().unwrap();
    sink.write_batch(&records([6])).unwrap();
    assert_eq!(ids_in(&path), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn pending_bound_drops_oldest_whole_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("logs");
    let line_len = Record::new(event(100)).line.len();
    let c = JsonlConfig {
        max_pending_bytes: line_len * 10 + line_len / 2,
        ..config(&dir)
    };
    let (mut sink, _, _) = open_at(c, LAST_SECOND - 3600.0);
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, b"").unwrap();
    for id in 100..130 {
        let _ = sink.write_batch(&records([id]));
        let _ = sink.flush();
    }
    let max = sink.config().max_pending_bytes;
    assert!(sink.pending_bytes() <= max);
    fs::remove_file(&dir).unwrap();
    sink.flush().unwrap();
    // The newest lines that fit, whole; the older ones counted as dropped.
    let kept = ids_in(&dir.join("agent-events.jsonl"));
    let first = 130 - kept.len() as u64;
    assert_eq!(kept, (first..130).collect::<Vec<_>>());
    assert_eq!(sink.dropped(), first - 100);
    let len = |ids: std::ops::Range<u64>| {
        ids.map(|id| Record::new(event(id)).line.len())
            .sum::<usize>()
    };
    assert!(len(first..130) <= max);
    assert!(len(first - 1..130) > max);
}

#[test]
fn reopen_continues_a_partly_written_line_in_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, _, _) = open_at(config(dir.path()), LAST_SECOND - 3600.0);
    let path = sink.active_path().to_owned();
    sink.write_batch(&records([1])).unwrap();
    sink.flush().unwrap();
    // Simulate a write that stopped after 10 bytes of line 2.
    let line2 = Record::new(event(2)).line;
    let mut f = File::options().append(true).open(&path).unwrap();
    io::Write::write_all(&mut f, &line2[..10]).unwrap();
    drop(f);
    // A writer taking n bytes, then failing: the state a short write
    // leaves behind.
    struct Ten(usize);
    impl io::Write for Ten {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::ErrorKind::StorageFull.into());
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    sink.pending.push(&line2);
    assert!(sink.pending.write_to(&mut Ten(10)).is_err());
    sink.file = None; // as after the failure
    sink.flush().unwrap();
    assert_eq!(ids_in(&path), [1, 2]);
    assert!(!sink.torn_path.exists());

    // If instead the file lost that beginning, the line is written whole.
    sink.pending.push(&Record::new(event(3)).line);
    assert!(sink.pending.write_to(&mut Ten(10)).is_err());
    sink.file = None;
    sink.flush().unwrap();
    assert_eq!(ids_in(&path), [1, 2, 3]);
    assert!(!sink.torn_path.exists());
}

/// Acknowledgements wait for the log, so its thread must take each batch
/// the moment it is handed over, for every durability setting.
#[test]
fn the_log_never_dozes() {
    for durability in [Durability::None, Durability::Batch, Durability::Always] {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _, _) = open_at(
            JsonlConfig {
                durability,
                ..config(dir.path())
            },
            1.7e9,
        );
        assert_eq!(sink.doze(), None, "{durability}");
    }
}
