//! The console sink: one colour-coded block per event, as the original.
//!
//! ```text
//! [11:53:38] AGENT_COMPLETED
//!   agent: scribe
//!   task_id: t_001
//!   status: success
//!
//! ```
//!
//! The header is bold and coloured by event family: `task*` blue, `agent*`
//! green, `validation*` magenta, `hitl*` yellow, `budget*` red, anything else
//! cyan. Times are UTC. String values print bare, other values as JSON.
//! Colour is off when the output is not a terminal or `NO_COLOR` is set
//! (anstream decides).

use std::io::Write;
use std::str::FromStr;

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Sink, SinkError};
use crate::event::{Event, SharedRecord};

/// How important an event is, for the console's level switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Everything.
    Debug,
    /// Everything (the default; the original's `level: info`).
    Info,
    /// Failures, rejections, escalations, budget warnings and alerts.
    Warn,
    /// Budget exceeded and alerts that fire.
    Error,
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            other => Err(format!(
                "unknown level `{other}` (debug, info, warn, error)"
            )),
        }
    }
}

/// The level of an event, from its type and status.
pub fn event_level(event: &Event) -> Level {
    match &*event.event_type {
        "budget_exceeded" | "alert_triggered" => Level::Error,
        "budget_warning" | "hitl_escalated" | "stream_gap" => Level::Warn,
        "agent_completed" => match event.str_field("status") {
            Some("failed" | "failure" | "error" | "timeout" | "crashed" | "rejected") => {
                Level::Warn
            }
            _ => Level::Info,
        },
        "validation_complete" => {
            let passed = event
                .payload
                .get("result")
                .map(|r| {
                    r.get("passed") == Some(&Value::Bool(true))
                        || r.get("test_passed") == Some(&Value::Bool(true))
                })
                .unwrap_or(false);
            if passed {
                Level::Info
            } else {
                Level::Warn
            }
        }
        _ => Level::Info,
    }
}

/// The header colour of an event family.
pub fn family_color(event_type: &str) -> AnsiColor {
    if event_type.starts_with("task") {
        AnsiColor::Blue
    } else if event_type.starts_with("agent") {
        AnsiColor::Green
    } else if event_type.starts_with("validation") {
        AnsiColor::Magenta
    } else if event_type.starts_with("hitl") {
        AnsiColor::Yellow
    } else if event_type.starts_with("budget") {
        AnsiColor::Red
    } else {
        AnsiColor::Cyan
    }
}

/// Appends the console block of `event` to `out`, with ANSI styling when
/// `color` is set.
pub fn format_event(event: &Event, color: bool, out: &mut Vec<u8>) {
    let time = DateTime::<Utc>::from_timestamp(event.timestamp.floor() as i64, 0)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "--:--:--".into());
    let style = Style::new()
        .bold()
        .fg_color(Some(family_color(&event.event_type).into()));
    if color {
        let _ = write!(out, "{style}");
    }
    let _ = write!(out, "[{time}] {}", event.event_type.to_ascii_uppercase());
    if color {
        let _ = write!(out, "{style:#}");
    }
    out.push(b'\n');
    for (k, v) in &event.payload {
        let _ = match v {
            Value::String(s) => writeln!(out, "  {k}: {}", s.replace('\n', "\n    ")),
            other => writeln!(out, "  {k}: {other}"),
        };
    }
    out.push(b'\n');
}

/// Writes events to a terminal (or any writer) in the console format.
pub struct ConsoleSink {
    out: Box<dyn Write + Send>,
    color: bool,
    level: Level,
    buf: Vec<u8>,
    /// Its reader has gone (`agentpulse serve | head`): nothing more is
    /// written, and that is no fault (as `cat` would stop).
    closed: bool,
}

impl ConsoleSink {
    /// A sink on standard output: colour when it is a terminal and
    /// `NO_COLOR` is unset.
    pub fn stdout(level: Level) -> Self {
        let stream = anstream::stdout();
        let color = !matches!(stream.current_choice(), anstream::ColorChoice::Never);
        ConsoleSink::new(Box::new(stream), color, level)
    }

    /// A sink on any writer.
    pub fn new(out: Box<dyn Write + Send>, color: bool, level: Level) -> Self {
        ConsoleSink {
            out,
            color,
            level,
            buf: Vec::with_capacity(8 * 1024),
            closed: false,
        }
    }
}

impl ConsoleSink {
    /// A broken pipe closes the sink quietly; other errors stay errors.
    fn closed_pipe(&mut self, r: std::io::Result<()>) -> std::io::Result<()> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }
}

impl Sink for ConsoleSink {
    fn name(&self) -> &'static str {
        "console"
    }

    fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), SinkError> {
        if self.closed {
            return Ok(());
        }
        self.buf.clear();
        for r in batch {
            if event_level(&r.event) >= self.level {
                format_event(&r.event, self.color, &mut self.buf);
            }
        }
        // A console is best effort: what fails to print is not kept.
        let result = self.out.write_all(&self.buf).and_then(|_| self.out.flush());
        self.closed_pipe(result)
            .map_err(|e| SinkError::io("writing to the console", e))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.closed {
            return Ok(());
        }
        let result = self.out.flush();
        self.closed_pipe(result)
            .map_err(|e| SinkError::io("flushing the console", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn event(ty: &str, payload: Value) -> Event {
        Event {
            id: 1,
            event_type: Arc::from(ty),
            timestamp: 1729000418.9,
            event_id: None,
            payload: payload.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn plain_block_matches_the_original_layout() {
        let mut out = Vec::new();
        let e = event(
            "agent_started",
            json!({"agent":"scribe","task_id":"t_001","tools":["read","write"]}),
        );
        format_event(&e, false, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[13:53:38] AGENT_STARTED\n  agent: scribe\n  task_id: t_001\n  tools: [\"read\",\"write\"]\n\n"
        );
    }

    #[test]
    fn header_is_bold_and_coloured_by_family() {
        for (ty, code) in [
            ("task_queued", "34"),
            ("agent_completed", "32"),
            ("validation_complete", "35"),
            ("hitl_escalated", "33"),
            ("budget_exceeded", "31"),
            ("circuit_breaker_open", "36"),
        ] {
            let mut out = Vec::new();
            format_event(&event(ty, json!({})), true, &mut out);
            let s = String::from_utf8(out).unwrap();
            assert!(s.starts_with("\x1b[1m\x1b["), "{ty}: {s:?}");
            assert!(s.contains(&format!("\x1b[{code}m[")), "{ty}: {s:?}");
            assert!(s.contains("\x1b[0m\n"), "{ty}: {s:?}");
        }
    }

    #[test]
    fn level_switch_filters_routine_events() {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Shared::default();
        let mut sink = ConsoleSink::new(Box::new(buf.clone()), false, Level::Warn);
        let recs: Vec<SharedRecord> = [
            event("agent_started", json!({"agent":"a"})),
            event("agent_completed", json!({"agent":"a","status":"failed"})),
            event("budget_exceeded", json!({"limit":1})),
        ]
        .into_iter()
        .map(|e| Arc::new(crate::event::Record::new(e)))
        .collect();
        sink.write_batch(&recs).unwrap();
        let s = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!s.contains("AGENT_STARTED"));
        assert!(s.contains("AGENT_COMPLETED"));
        assert!(s.contains("BUDGET_EXCEEDED"));
    }
}
