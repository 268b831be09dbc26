//! The one reader of log lines for the offline commands (`validate`,
//! `report`, `replay`, `rebuild-metrics`, and whatever else reads logs a
//! user brings).
//!
//! # What a log line is
//!
//! One JSON object per line, in agentpulse's format or the original
//! module's, which has no `id`:
//!
//! ```json
//! {"id":42,"event_type":"agent_completed","timestamp":1729012421.567,"event_id":"k","payload":{"agent":"scribe"}}
//! {"event_type":"agent_completed","timestamp":1729012421.567,"payload":{"agent":"scribe"}}
//! ```
//!
//! `event_type` (a string), `timestamp` (a number) and `payload` (an object)
//! are required; `id` (an integer >= 0) and `event_id` (a string) are
//! optional; other keys are ignored. Both formats may be mixed in a file
//! and count in file order. Blank lines are skipped; a last line without
//! `\n` is torn (a crash mid-write) and reported, not read.
//!
//! Two parsers read that format, and accept exactly the same lines:
//! [`LoggedEvent::from_line`] builds the whole event, and
//! [`crate::metrics::EventFields::from_log_line`] borrows only what the KPIs
//! need, for speed. [`EventLog`] reads a file (plain or `.gz`) with either.
//!
//! # A file that is not a log
//!
//! A file in which no non-blank line is an event (a config file, a binary,
//! `agent-events.ids` caught by a glob) is one error,
//! [`LogError::NotALog`], instead of a message per line: the errors of a
//! file's first lines are held back until a line reads.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{is_blank, LineError, LogReader, ReadProgress, ReadStats};
use crate::event::{NewEvent, Payload, WireError};
use crate::metrics::EventFields;

/// Line errors of a file held back before its first event (more are only
/// counted in [`ReadStats::errors`]).
const HELD: usize = 1000;

/// One event read from a log line, in either format.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Its id; `None` for a line of the original module's format.
    pub id: Option<u64>,
    /// The event, with its `timestamp` always set.
    pub event: NewEvent,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<u64>,
    event_type: String,
    timestamp: f64,
    #[serde(default)]
    event_id: Option<String>,
    payload: Payload,
}

impl LoggedEvent {
    /// Parses one log line (without or with its `\n`). The error says what
    /// is wrong: malformed JSON with its column, or the envelope's fault.
    pub fn from_line(bytes: &[u8]) -> Result<LoggedEvent, WireError> {
        let e: Envelope = serde_json::from_slice(bytes).map_err(|e| {
            WireError::new(if e.is_syntax() || e.is_eof() {
                format!("malformed JSON: {e}")
            } else {
                format!("not an event: {e}")
            })
        })?;
        Ok(LoggedEvent {
            id: e.id,
            event: NewEvent {
                event_type: e.event_type.into(),
                timestamp: Some(e.timestamp),
                event_id: e.event_id.map(String::into_boxed_str),
                payload: e.payload,
            },
        })
    }
}

/// A log that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not one of its non-blank lines is an event.
    #[error(
        "{}: not a log: none of its {lines} lines is an event (line {}: {})",
        first.path.display(), first.line, first.message
    )]
    NotALog {
        /// Its non-blank lines.
        lines: u64,
        /// The first line's error.
        first: LineError,
    },
}

/// One log file being read by the offline commands.
#[derive(Debug)]
pub struct EventLog {
    reader: LogReader,
}

impl EventLog {
    /// Opens `path` (gzip when the name ends in `.gz`).
    pub fn open(path: impl AsRef<Path>) -> Result<EventLog, LogError> {
        let path = path.as_ref();
        LogReader::open(path)
            .map(|reader| EventLog { reader })
            .map_err(|source| LogError::Io {
                path: path.to_owned(),
                source,
            })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.reader.path()
    }

    /// Size of the file on disk (compressed for a `.gz`).
    pub fn file_size(&self) -> u64 {
        self.reader.file_size()
    }

    /// How far the reading has got, readable from the callbacks.
    pub fn progress(&self) -> ReadProgress {
        self.reader.progress()
    }

    /// Reads every event in full: `on_event(line number, event)`.
    pub fn read_events(
        &mut self,
        mut on_event: impl FnMut(u64, LoggedEvent),
        on_error: impl FnMut(LineError),
    ) -> Result<ReadStats, LogError> {
        self.read_with(
            |n, bytes| {
                on_event(n, LoggedEvent::from_line(bytes)?);
                Ok(ControlFlow::Continue(()))
            },
            on_error,
        )
    }

    /// Reads what the metrics engine needs of every event, borrowed from
    /// the line: `on_event(line number, id, fields)`.
    pub fn read_fields(
        &mut self,
        mut on_event: impl FnMut(u64, Option<u64>, &EventFields<'_>),
        on_error: impl FnMut(LineError),
    ) -> Result<ReadStats, LogError> {
        self.read_with(
            |n, bytes| match EventFields::from_log_line(bytes) {
                Ok((id, fields)) => {
                    on_event(n, id, &fields);
                    Ok(ControlFlow::Continue(()))
                }
                // The precise message, on the rare error path.
                Err(_) => LoggedEvent::from_line(bytes).map(|_| ControlFlow::Continue(())),
            },
            on_error,
        )
    }

    /// [`EventLog::read_fields`] with the line itself (for a viewer that
    /// prints or searches it): `on_event(line number, id, fields, line)`.
    /// Reading stops early when `on_event` breaks (its reader has gone);
    /// the stats then count what was read.
    pub fn read_lines(
        &mut self,
        mut on_event: impl FnMut(u64, Option<u64>, &EventFields<'_>, &[u8]) -> ControlFlow<()>,
        on_error: impl FnMut(LineError),
    ) -> Result<ReadStats, LogError> {
        self.read_with(
            |n, bytes| match EventFields::from_log_line(bytes) {
                Ok((id, fields)) => Ok(on_event(n, id, &fields, bytes)),
                Err(_) => LoggedEvent::from_line(bytes).map(|_| ControlFlow::Continue(())),
            },
            on_error,
        )
    }

    fn read_with(
        &mut self,
        mut parse: impl FnMut(u64, &[u8]) -> Result<ControlFlow<()>, WireError>,
        mut on_error: impl FnMut(LineError),
    ) -> Result<ReadStats, LogError> {
        let path = self.reader.path().to_owned();
        let mut stats = ReadStats::default();
        let mut non_blank = 0u64;
        // Errors before the first event: shown only if one comes.
        let mut held: Option<Vec<LineError>> = Some(Vec::new());
        let result = self.reader.for_each_line(|line| {
            stats.lines += 1;
            if is_blank(line.bytes) {
                return ControlFlow::Continue(());
            }
            non_blank += 1;
            let mut flow = ControlFlow::Continue(());
            let result = if line.terminated {
                parse(line.number, line.bytes)
                    .map(|f| flow = f)
                    .map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "torn last line ({} bytes without a newline)",
                    line.bytes.len()
                ))
            };
            match result {
                Ok(()) => {
                    stats.events += 1;
                    if let Some(errors) = held.take() {
                        errors.into_iter().for_each(&mut on_error);
                    }
                }
                Err(message) => {
                    stats.errors += 1;
                    let e = LineError {
                        path: path.clone(),
                        line: line.number,
                        message,
                    };
                    match &mut held {
                        Some(h) if h.len() < HELD => h.push(e),
                        Some(_) => {}
                        None => on_error(e),
                    }
                }
            }
            flow
        });
        result.map_err(|source| LogError::Io {
            path: path.clone(),
            source,
        })?;
        match held.and_then(|h| h.into_iter().next()) {
            Some(first) if stats.events == 0 => Err(LogError::NotALog {
                lines: non_blank,
                first,
            }),
            _ => Ok(stats),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, content).unwrap();
        (dir, p)
    }

    const MIXED: &str = concat!(
        r#"{"event_type":"task_queued","timestamp":1.5,"payload":{"task_id":"t","feature":"f"}}"#,
        "\n",
        r#"{"id":7,"event_type":"agent_completed","timestamp":2.0,"event_id":"k","payload":{"agent":"a"}}"#,
        "\n\n",
        "junk\n",
        r#"{"event_type":"note","timestamp":3,"payload":{}}"#,
        "\n",
    );

    #[test]
    fn both_formats_mixed_in_file_order() {
        let (_d, p) = write(MIXED.as_bytes());
        let (mut got, mut errors) = (Vec::new(), Vec::new());
        let stats = EventLog::open(&p)
            .unwrap()
            .read_events(
                |n, e| got.push((n, e.id, e.event.event_type.to_string())),
                |e| errors.push(e),
            )
            .unwrap();
        assert_eq!(
            got,
            [
                (1, None, "task_queued".into()),
                (2, Some(7), "agent_completed".into()),
                (5, None, "note".into())
            ]
        );
        assert_eq!((stats.events, stats.errors, stats.lines), (3, 1, 5));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 4);
        assert!(
            errors[0].message.starts_with("malformed JSON"),
            "{}",
            errors[0]
        );

        let mut fields = Vec::new();
        EventLog::open(&p)
            .unwrap()
            .read_fields(
                |n, id, f| fields.push((n, id, f.event_type.to_string(), f.timestamp)),
                |_| {},
            )
            .unwrap();
        assert_eq!(
            fields,
            [
                (1, None, "task_queued".into(), 1.5),
                (2, Some(7), "agent_completed".into(), 2.0),
                (5, None, "note".into(), 3.0)
            ]
        );
    }

    #[test]
    fn a_file_without_events_is_one_error() {
        let (_d, p) = write(b"junk\n{\"a\":1}\n\nmore junk\n");
        let mut shown = 0;
        let e = EventLog::open(&p)
            .unwrap()
            .read_fields(|_, _, _| {}, |_| shown += 1)
            .unwrap_err();
        assert_eq!(shown, 0, "no line-by-line messages");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "{}: not a log: none of its 3 lines is an event (line 1: malformed JSON",
                p.display()
            )),
            "{text}"
        );
        // Empty files are no error: there is nothing to read.
        let (_d, p) = write(b"\n\n");
        let s = EventLog::open(&p)
            .unwrap()
            .read_fields(|_, _, _| {}, |_| {})
            .unwrap();
        assert_eq!(s.events, 0);
        // Bad first lines are shown once a line reads.
        let (_d, p) = write(format!("x\ny\n{MIXED}").as_bytes());
        let mut lines = Vec::new();
        EventLog::open(&p)
            .unwrap()
            .read_fields(|_, _, _| {}, |e| lines.push(e.line))
            .unwrap();
        assert_eq!(lines, [1, 2, 6]);
        assert!(matches!(
            EventLog::open(p.with_extension("missing")),
            Err(LogError::Io { .. })
        ));
    }

    #[test]
    fn envelope_faults_are_named() {
        let err = |l: &str| {
            LoggedEvent::from_line(l.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"event_type":"x","payload":{}}"#).contains("missing field `timestamp`"));
        assert!(err(r#"{"event_type":"x","timestamp":1,"payload":[]}"#).contains("invalid type"));
        assert!(err(r#"{"id":-1,"event_type":"x","timestamp":1,"payload":{}}"#).contains("id"));
        assert!(err("[1]").starts_with("not an event"));
        assert!(err("{\"event_type\"").starts_with("malformed JSON"));
    }

    fn field() -> impl Strategy<Value = Option<&'static str>> {
        prop_oneof![
            Just(None),
            Just(Some("1")),
            Just(Some("-1")),
            Just(Some("1.5")),
            Just(Some("\"s\"")),
            Just(Some("null")),
            Just(Some("{}")),
            Just(Some("{\"agent\":\"a\",\"cost\":1}")),
            Just(Some("[]")),
        ]
    }

    proptest! {
        /// The full and the borrowing parser accept the same lines.
        #[test]
        fn both_parsers_accept_the_same_lines(
            id in field(), ty in field(), ts in field(), eid in field(), payload in field(),
        ) {
            let mut parts = Vec::new();
            for (k, v) in [("id", id), ("event_type", ty), ("timestamp", ts), ("event_id", eid), ("payload", payload)] {
                if let Some(v) = v {
                    parts.push(format!("\"{k}\":{v}"));
                }
            }
            let line = format!("{{{}}}", parts.join(","));
            let full = LoggedEvent::from_line(line.as_bytes());
            let fast = EventFields::from_log_line(line.as_bytes());
            prop_assert_eq!(full.is_ok(), fast.is_ok(), "{}", line);
            if let (Ok(a), Ok((id, f))) = (full, fast) {
                prop_assert_eq!(a.id, id);
                prop_assert_eq!(a.event.timestamp, Some(f.timestamp));
                prop_assert_eq!(&*a.event.event_type, &*f.event_type);
            }
        }
    }
}
