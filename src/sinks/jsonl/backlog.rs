//! What the log sink and the pipeline share about lines not yet written, so
//! that the hub never acknowledges an event the log does not hold.
//!
//! - The dispatcher counts the bytes it hands to the log ([`Backlog::handed`]),
//!   the sink the bytes it has written or dropped; the difference is what
//!   waits in memory (channel and retry buffer).
//! - While writing fails and more than `refuse_above` bytes wait (half the
//!   sink's `max_pending_bytes`), the dispatcher refuses new events: the
//!   caller gets a 503 naming the fault, and the buffer never has to drop a
//!   line it had accepted.
//! - If it must drop anyway (more than the other half was already on its
//!   way when writing started to fail), the ids it dropped are recorded:
//!   the dispatcher forgets their `event_id`s (a retry is stored, not
//!   answered "duplicate"), and an ingest waiting for one of them is
//!   answered 503, never 200.
//! - With a disk cap (`max_log_bytes`), the sink also says when the log has
//!   reached it with nothing left to delete ([`Backlog::set_full`]): new
//!   events are then refused as well, as [`Refusal::DiskCap`] (a 507 for
//!   HTTP callers), until space is freed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::CapReport;

/// Ranges of dropped ids remembered for acknowledgements; older ones merge.
const MAX_LOST_RANGES: usize = 4096;

/// Shared between the log sink, the dispatcher and the emitter.
#[derive(Debug)]
pub struct Backlog {
    handed: AtomicU64,
    settled: AtomicU64,
    failing: AtomicBool,
    refuse_above: u64,
    refused: AtomicU64,
    has_fresh: AtomicBool,
    lost: Mutex<Lost>,
    error: Mutex<Option<String>>,
    full: AtomicBool,
    full_reason: Mutex<Option<String>>,
    cap: Mutex<Option<CapReport>>,
}

/// Why the log takes no new events now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Writing fails and half the buffer already waits: retry later.
    Failing(String),
    /// The log has reached its disk cap (`max_log_bytes`) and no rotated
    /// file is left to delete: retry once space is freed.
    DiskCap(String),
}

impl Refusal {
    /// The explanation for the caller.
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Failing(r) | Refusal::DiskCap(r) => r,
        }
    }
}

#[derive(Debug, Default)]
struct Lost {
    /// Every dropped id range since start (merged, bounded).
    all: Vec<(u64, u64)>,
    /// Ranges the dispatcher has not yet forgotten.
    fresh: Vec<(u64, u64)>,
}

impl Backlog {
    /// A backlog for a sink that keeps at most `max_pending_bytes`.
    pub fn new(max_pending_bytes: usize) -> Backlog {
        Backlog {
            handed: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            refuse_above: (max_pending_bytes / 2) as u64,
            refused: AtomicU64::new(0),
            has_fresh: AtomicBool::new(false),
            lost: Mutex::new(Lost::default()),
            error: Mutex::new(None),
            full: AtomicBool::new(false),
            full_reason: Mutex::new(None),
            cap: Mutex::new(None),
        }
    }

    /// The dispatcher handed `bytes` of lines to the sink.
    pub fn handed(&self, bytes: u64) {
        self.handed.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The sink has written or dropped `bytes` of lines in all so far.
    pub fn set_settled(&self, bytes: u64) {
        self.settled.store(bytes, Ordering::Relaxed);
    }

    /// Bytes handed to the sink and not yet written (nor dropped).
    pub fn unwritten(&self) -> u64 {
        self.handed
            .load(Ordering::Relaxed)
            .saturating_sub(self.settled.load(Ordering::Relaxed))
    }

    /// The sink's last write attempt failed (with `error`), or succeeded.
    pub fn set_failing(&self, error: Option<String>) {
        self.failing.store(error.is_some(), Ordering::Relaxed);
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Whether the sink's last write attempt failed.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// The sink has reached its disk cap (with why), or is under it again.
    pub fn set_full(&self, reason: Option<String>) {
        self.full.store(reason.is_some(), Ordering::Relaxed);
        *self.full_reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// What the disk cap has done, as of the sink's last check.
    pub fn set_cap_report(&self, report: CapReport) {
        *self.cap.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// What the disk cap has done (`None` without a cap).
    pub fn cap_report(&self) -> Option<CapReport> {
        *self.cap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the log is at its disk cap, while it is.
    pub fn full(&self) -> Option<String> {
        if !self.full.load(Ordering::Relaxed) {
            return None;
        }
        self.full_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why new events are refused, when they are: the disk cap is reached,
    /// or writing fails and more than half the buffer is waiting.
    pub fn refusal(&self) -> Option<Refusal> {
        if let Some(why) = self.full() {
            return Some(Refusal::DiskCap(why));
        }
        if !self.failing() || self.unwritten() <= self.refuse_above {
            return None;
        }
        let error = self
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "writing fails".into());
        Some(Refusal::Failing(format!(
            "the event log cannot be written ({error}) and {} bytes already wait to be written; \
             new events are refused until it can: retry later",
            self.unwritten()
        )))
    }

    /// Counts `n` events refused.
    pub fn count_refused(&self, n: u64) {
        self.refused.fetch_add(n, Ordering::Relaxed);
    }

    /// Events refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The sink dropped the lines of ids `first..=last`.
    pub fn record_lost(&self, first: u64, last: u64) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        push_range(&mut lost.all, first, last);
        if lost.all.len() > MAX_LOST_RANGES {
            // Keep the newest apart; the oldest merge into one wide range
            // (which may cover stored ids: such an ingest is answered 503
            // and its retry a duplicate: nothing is lost).
            let half = lost.all.len() / 2;
            let (a, _) = lost.all[0];
            let (_, z) = lost.all[half];
            lost.all.drain(..=half);
            lost.all.insert(0, (a, z));
        }
        push_range(&mut lost.fresh, first, last);
        self.has_fresh.store(true, Ordering::Release);
    }

    /// The dropped ranges the dispatcher has not yet forgotten (cheap when
    /// there are none).
    pub fn take_fresh_losses(&self) -> Vec<(u64, u64)> {
        if !self.has_fresh.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut self.lost.lock().unwrap_or_else(|e| e.into_inner()).fresh)
    }

    /// Whether any of `ids` was dropped.
    pub fn any_lost(&self, ids: impl IntoIterator<Item = u64>) -> bool {
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if lost.all.is_empty() {
            return false;
        }
        ids.into_iter()
            .any(|id| lost.all.iter().any(|&(a, z)| (a..=z).contains(&id)))
    }
}

fn push_range(ranges: &mut Vec<(u64, u64)>, first: u64, last: u64) {
    if let Some((_, z)) = ranges.last_mut() {
        if first <= *z + 1 && first >= *z {
            *z = (*z).max(last);
            return;
        }
    }
    ranges.push((first, last));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_while_failing_and_over_half() {
        let b = Backlog::new(1000);
        b.handed(900);
        assert!(b.refusal().is_none(), "not failing");
        b.set_failing(Some("No space left on device".into()));
        let why = b.refusal().unwrap();
        assert!(matches!(why, Refusal::Failing(_)), "{why:?}");
        assert!(why.reason().contains("No space left"), "{why:?}");
        b.set_settled(500);
        assert!(b.refusal().is_none(), "400 bytes wait: under half");
        b.set_settled(0);
        b.set_failing(None);
        assert!(b.refusal().is_none());
    }

    #[test]
    fn the_disk_cap_refuses_until_cleared() {
        let b = Backlog::new(1000);
        b.set_full(Some("at the cap".into()));
        assert_eq!(b.refusal(), Some(Refusal::DiskCap("at the cap".into())));
        // It comes first even while writing also fails.
        b.set_failing(Some("EIO".into()));
        b.handed(900);
        assert!(matches!(b.refusal(), Some(Refusal::DiskCap(_))));
        b.set_full(None);
        assert!(matches!(b.refusal(), Some(Refusal::Failing(_))));
    }

    #[test]
    fn lost_ranges_merge_and_are_taken_once() {
        let b = Backlog::new(1000);
        assert!(b.take_fresh_losses().is_empty());
        b.record_lost(5, 7);
        b.record_lost(8, 9);
        b.record_lost(20, 20);
        assert_eq!(b.take_fresh_losses(), [(5, 9), (20, 20)]);
        assert!(b.take_fresh_losses().is_empty());
        assert!(b.any_lost([1, 6]));
        assert!(!b.any_lost([10, 19, 21]));
    }
}
