//! A reader's position in the retained events, and the one code path that
//! reads after it: from the ring while the reader keeps up, from the JSONL
//! log (through its index) once it has fallen behind the ring's oldest id,
//! and back to the ring when it has caught up. The stream and
//! `/api/events` both read through a [`Cursor`].

use axum::extract::ws::Utf8Bytes;

use super::filter::Filter;
use crate::event::Event;
use crate::hub::HubState;
use crate::sinks::jsonl::index::{LogCursor, LogLine, LogRead};

/// Most ring entries handed out per step.
pub const READ_CHUNK: usize = 1024;

/// Bytes of log lines read per step: the reader's one read chunk.
pub const LOG_CHUNK: usize = 128 * 1024;

/// The gap reason for ids that are gone.
pub const NOT_RETAINED: &str = "not_retained";

/// What one [`Cursor::step`] found.
#[derive(Debug)]
pub enum Step {
    /// Events after the old position that pass the filter (maybe none,
    /// when the filter dropped all), with their ids; the cursor moved.
    Events {
        /// `(id, wire message)`, in id order.
        messages: Vec<(u64, Utf8Bytes)>,
        /// Whether they were read from the log (not the ring).
        from_log: bool,
        /// How many events were looked at (kept by the filter or not).
        scanned: usize,
    },
    /// Ids `from..=to` cannot be delivered; the cursor moved past them.
    Gap {
        /// First missing id.
        from: u64,
        /// Last missing id.
        to: u64,
        /// `not_retained` (older than the log's first id, or there is no
        /// log) or `log_unreadable` (reading the log failed; see the hub's
        /// warnings).
        reason: &'static str,
    },
    /// Nothing after the cursor yet: wait for the ring to move.
    Live,
    /// The ids after the cursor have left the ring but are not in the log
    /// yet (the writer is behind): wait for the log to move.
    Waiting,
}

/// Whether every id names an event: in a cluster Redis gives ids one by
/// one to what it stores, so ids missing between two that were read are
/// events this hub never got (trimmed from the shared stream before its
/// tail read them): a `not_retained` gap. On one hub, missing ids are ids
/// reserved and never given (after a crash), skipped in silence.
fn ids_contiguous(state: &HubState) -> bool {
    state.config.cluster.is_some()
}

/// A position (the last id delivered or skipped) and what the reader wants.
#[derive(Debug)]
pub struct Cursor {
    after: u64,
    filter: Filter,
    log: Option<LogCursor>,
}

impl Cursor {
    /// A cursor after id `after`.
    pub fn new(after: u64, filter: Filter) -> Cursor {
        Cursor {
            after,
            filter,
            log: None,
        }
    }

    /// The last id delivered or skipped.
    pub fn after(&self) -> u64 {
        self.after
    }

    /// Moves the cursor (a reader skipped to the live edge).
    pub fn skip_to(&mut self, after: u64) {
        self.after = after;
        self.log = None;
    }

    /// Whether the next step reads the log (blocking file I/O: async
    /// callers run it on a blocking thread).
    pub fn in_log(&self, state: &HubState) -> bool {
        self.after < state.ring.last_id()
            && state.ring.oldest_id().is_none_or(|o| self.after + 1 < o)
    }

    /// Moves the cursor past the ids up to `to`, which cannot be delivered.
    fn gap_to(&mut self, to: u64, reason: &'static str) -> Step {
        let from = self.after + 1;
        self.after = to;
        self.log = None;
        Step::Gap { from, to, reason }
    }

    /// Keeps the lines read from the log up to the first id that does not
    /// follow the one before it; when that is the first line, the gap
    /// before it is the step. The log is read again from the new position.
    fn cut_at_jump(&mut self, before: u64, lines: &mut Vec<LogLine>) -> Option<Step> {
        let mut prev = before;
        let cut = lines.iter().position(|(id, _)| {
            let jumps = *id > prev + 1;
            prev = *id;
            jumps
        })?;
        self.log = None;
        if cut == 0 {
            let (from, to) = (before + 1, lines[0].0 - 1);
            self.after = to;
            lines.clear();
            return Some(Step::Gap {
                from,
                to,
                reason: NOT_RETAINED,
            });
        }
        lines.truncate(cut);
        self.after = lines[cut - 1].0;
        None
    }

    /// Reads the next chunk after the cursor.
    pub fn step(&mut self, state: &HubState) -> Step {
        let ring = &state.ring;
        if self.after >= ring.last_id() {
            return Step::Live;
        }
        let contiguous = ids_contiguous(state);
        let oldest = ring.oldest_id();
        if oldest.is_some_and(|o| self.after + 1 >= o) {
            let keep = |r: &_| self.filter.matches_item(r);
            let read = if contiguous {
                ring.read_until_jump(self.after, READ_CHUNK, keep)
            } else {
                ring.read_after(self.after, READ_CHUNK, keep)
            };
            // Evicted between the check and the read: the log has it.
            if read.missing.is_none() {
                self.log = None;
                if read.records.is_empty() && read.next_cursor == self.after {
                    if let Some((from, to)) = read.jump {
                        self.after = to;
                        return Step::Gap {
                            from,
                            to,
                            reason: NOT_RETAINED,
                        };
                    }
                    return Step::Live;
                }
                self.after = read.next_cursor;
                return Step::Events {
                    messages: read
                        .records
                        .iter()
                        .map(|r| (r.id, r.message.clone()))
                        .collect(),
                    from_log: false,
                    scanned: read.scanned,
                };
            }
        }
        // Older than the ring: what the log has, up to just before the ring.
        let upto = match ring.oldest_id() {
            Some(o) => o - 1,
            None => ring.last_id(),
        };
        let Some(index) = state.emitter.log_index() else {
            return self.gap_to(upto, NOT_RETAINED);
        };
        let log = match &mut self.log {
            Some(l) if l.after() == self.after => l,
            slot => slot.insert(LogCursor::new(index.clone(), self.after, LOG_CHUNK)),
        };
        let mut lines = Vec::new();
        match log.read(upto, LOG_CHUNK, &mut lines) {
            Ok(LogRead::Lines) => {
                let before = self.after;
                self.after = log.after();
                if contiguous {
                    if let Some(gap) = self.cut_at_jump(before, &mut lines) {
                        return gap;
                    }
                }
                let scanned = lines.len();
                let messages = lines
                    .into_iter()
                    .filter_map(|(id, line)| {
                        if !self.filter.is_empty() {
                            let event = Event::from_wire(&line).ok()?;
                            if !self.filter.matches(&event) {
                                return None;
                            }
                        }
                        // Not UTF-8: not a line the hub wrote; skipped.
                        Some((id, Utf8Bytes::try_from(line).ok()?))
                    })
                    .collect();
                Step::Events {
                    messages,
                    from_log: true,
                    scanned,
                }
            }
            Ok(LogRead::Missing { from, to }) => {
                self.after = to;
                self.log = None;
                Step::Gap {
                    from,
                    to,
                    reason: NOT_RETAINED,
                }
            }
            Ok(LogRead::End) if index.written() < upto => Step::Waiting,
            // In a cluster, ids between the log's last and the ring's first
            // are events this hub never got.
            Ok(LogRead::End) if contiguous => self.gap_to(upto, NOT_RETAINED),
            Ok(LogRead::End) => {
                // Written, yet not in the log: ids skipped after a crash
                // (never given to an event). On to the ring.
                self.after = upto;
                self.log = None;
                Step::Events {
                    messages: Vec::new(),
                    from_log: true,
                    scanned: 0,
                }
            }
            Err(e) => {
                tracing::warn!("stream: cannot read the log after id {}: {e}", self.after);
                self.gap_to(upto, "log_unreadable")
            }
        }
    }
}
