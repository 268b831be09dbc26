//! The retained events: an in-memory ring of the most recent records, shared
//! by every stream client, plus a watch channel that wakes them.
//!
//! Clients do not get a queue each: each keeps a cursor (the last id it
//! sent) and reads from the ring. How far behind a client is, in bytes, is
//! the difference of two running totals, so "a bounded queue by bytes" costs
//! nothing per client. Ids in the ring are contiguous (the dispatcher gives
//! consecutive ids), so finding a cursor is an index computation.

use std::collections::VecDeque;

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::event::{Event, Record, SharedRecord};
use crate::pipeline::Tap;
use crate::sinks::runner::Batch;

/// What the stream keeps of an event: its id, what filters look at, and
/// its wire message, checked as UTF-8 once here rather than once per
/// client. The payload itself is not kept: the ring holds 100,000 events.
#[derive(Debug)]
pub struct StreamItem {
    /// The event's id.
    pub id: u64,
    /// Its type.
    pub event_type: Arc<str>,
    /// `payload.agent`, when a string.
    pub agent: Option<Box<str>>,
    /// `payload.task_id`, when a string.
    pub task_id: Option<Box<str>>,
    /// The wire form (a WebSocket text message).
    pub message: Utf8Bytes,
}

impl StreamItem {
    /// The stream's view of `record`.
    pub fn new(record: &Record) -> Self {
        StreamItem::from_parts(&record.event, record.message())
    }

    /// The stream's view of an event read back from the log.
    pub fn from_event(event: &Event) -> Self {
        StreamItem::from_parts(event, Record::new(event.clone()).message())
    }

    fn from_parts(event: &Event, message: bytes::Bytes) -> Self {
        StreamItem {
            id: event.id,
            event_type: event.event_type.clone(),
            agent: event.str_field("agent").map(Box::from),
            task_id: event.str_field("task_id").map(Box::from),
            // The wire bytes are JSON written by serde_json: always UTF-8.
            message: Utf8Bytes::try_from(message).expect("wire bytes are UTF-8"),
        }
    }
}

/// A shared stream item.
pub type Item = Arc<StreamItem>;

struct Entry {
    item: Item,
    /// Bytes of all messages pushed up to and including this one.
    end_bytes: u64,
}

struct Inner {
    entries: VecDeque<Entry>,
    total_bytes: u64,
    /// The id of the last record pushed (0 before any).
    last_id: u64,
}

/// What a read found after a cursor.
#[derive(Debug, Default)]
pub struct Read {
    /// Items with ids after the cursor, oldest first (at most `max`).
    pub records: Vec<Item>,
    /// Ids after the cursor that the ring no longer holds: `(from, to)`.
    pub missing: Option<(u64, u64)>,
    /// The cursor to read after next time.
    pub next_cursor: u64,
    /// How many entries were looked at (kept or not).
    pub scanned: usize,
    /// With [`Retained::read_until_jump`]: the ids missing before the
    /// entry the read stopped at, `(from, to)`.
    pub jump: Option<(u64, u64)>,
}

/// The ring of retained records.
pub struct Retained {
    capacity: usize,
    inner: RwLock<Inner>,
    notify: watch::Sender<u64>,
}

impl Retained {
    /// A ring of `capacity` records, starting after `last_id` (the id the
    /// pipeline gave last, so that clients asking for later ids wait).
    pub fn new(capacity: usize, last_id: u64) -> Self {
        Retained {
            capacity: capacity.max(1),
            inner: RwLock::new(Inner {
                entries: VecDeque::with_capacity(capacity.clamp(1, 1 << 20)),
                total_bytes: 0,
                last_id,
            }),
            notify: watch::Sender::new(last_id),
        }
    }

    /// Appends records (in id order) and wakes the readers.
    pub fn push(&self, records: &[SharedRecord]) {
        // Built outside the lock: readers wait only for the appends.
        let items: Vec<Item> = records
            .iter()
            .map(|r| Arc::new(StreamItem::new(r)))
            .collect();
        self.push_items(items);
    }

    /// Appends items (in id order) and wakes the readers.
    pub fn push_items(&self, items: Vec<Item>) {
        let Some(last_id) = items.last().map(|i| i.id) else {
            return;
        };
        // Items pushed out of the ring are dropped after the lock is released.
        let mut evicted = Vec::new();
        {
            let mut inner = self.inner.write();
            for item in items {
                inner.total_bytes += item.message.len() as u64;
                let end_bytes = inner.total_bytes;
                if inner.entries.len() == self.capacity {
                    evicted.extend(inner.entries.pop_front());
                }
                inner.entries.push_back(Entry { item, end_bytes });
            }
            inner.last_id = last_id;
        }
        self.notify.send_replace(last_id);
        drop(evicted);
    }

    /// Moves the last id forward (the pipeline recovered ids that the ring
    /// does not hold).
    pub fn set_last_id(&self, last_id: u64) {
        {
            let mut inner = self.inner.write();
            if last_id <= inner.last_id {
                return;
            }
            inner.last_id = last_id;
        }
        self.notify.send_replace(last_id);
    }

    /// A receiver that changes whenever records are pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// The id of the last record pushed.
    pub fn last_id(&self) -> u64 {
        self.inner.read().last_id
    }

    /// The oldest id still held, if any.
    pub fn oldest_id(&self) -> Option<u64> {
        self.inner.read().entries.front().map(|e| e.item.id)
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.inner.read().entries.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `max` records after `cursor` for which `keep` holds
    /// (records that fail `keep` still advance the cursor).
    pub fn read_after(
        &self,
        cursor: u64,
        max: usize,
        keep: impl FnMut(&StreamItem) -> bool,
    ) -> Read {
        self.read(cursor, max, keep, false)
    }

    /// [`Retained::read_after`] that stops before the first id that does
    /// not follow the one before it (the cursor, then each entry read),
    /// saying which ids are missing ([`Read::jump`]): for a cluster, where
    /// every id is an event, so missing ones are events this hub never got.
    pub fn read_until_jump(
        &self,
        cursor: u64,
        max: usize,
        keep: impl FnMut(&StreamItem) -> bool,
    ) -> Read {
        self.read(cursor, max, keep, true)
    }

    fn read(
        &self,
        cursor: u64,
        max: usize,
        mut keep: impl FnMut(&StreamItem) -> bool,
        stop_at_jump: bool,
    ) -> Read {
        let inner = self.inner.read();
        let mut read = Read {
            next_cursor: cursor,
            ..Read::default()
        };
        let Some(first) = inner.entries.front().map(|e| e.item.id) else {
            return read;
        };
        let mut start = 0usize;
        if cursor + 1 < first {
            read.missing = Some((cursor + 1, first - 1));
            read.next_cursor = first - 1;
        } else {
            start = inner.after(cursor);
        }
        let mut scanned = 0usize;
        for e in inner.entries.range(start.min(inner.entries.len())..) {
            if stop_at_jump && e.item.id > read.next_cursor + 1 {
                read.jump = Some((read.next_cursor + 1, e.item.id - 1));
                break;
            }
            read.next_cursor = e.item.id;
            if keep(&e.item) {
                read.records.push(e.item.clone());
                if read.records.len() >= max {
                    scanned += 1;
                    break;
                }
            }
            scanned += 1;
            // Bound the time the read lock is held when a filter drops most.
            if scanned >= max * 16 {
                break;
            }
        }
        read.scanned = scanned;
        read
    }

    /// How many bytes of records lie after `cursor` (how far a client is
    /// behind), and how many records. Ids older than the ring count at the
    /// ring's average size.
    pub fn lag(&self, cursor: u64) -> (u64, u64) {
        let inner = self.inner.read();
        let count = inner.last_id.saturating_sub(cursor);
        let Some(front) = inner.entries.front() else {
            // Nothing held: only ids the ring never had (a start with a
            // log the ring was not filled from), at an assumed 300 bytes.
            return (count * 300, count);
        };
        let first = front.item.id;
        if cursor < first {
            let before_first = front.end_bytes - front.item.message.len() as u64;
            let held = inner.total_bytes - before_first;
            let average = held / inner.entries.len() as u64;
            return (held + (first - 1 - cursor) * average, count);
        }
        match inner.after(cursor) {
            0 => (0, 0),
            idx => {
                let e = &inner.entries[idx - 1];
                (inner.total_bytes - e.end_bytes, count)
            }
        }
    }
}

impl Inner {
    /// The index of the first entry with an id after `cursor`. Ids are
    /// increasing but not always contiguous (after a crash they jump past
    /// the reserved ones), so this searches rather than subtracts.
    fn after(&self, cursor: u64) -> usize {
        let first = match self.entries.front() {
            Some(e) => e.item.id,
            None => return 0,
        };
        // The common case, contiguous ids: one look.
        let guess = cursor.saturating_add(1).saturating_sub(first) as usize;
        if guess < self.entries.len()
            && self.entries[guess].item.id == cursor + 1
            && (guess == 0 || self.entries[guess - 1].item.id <= cursor)
        {
            return guess;
        }
        self.entries.partition_point(|e| e.item.id <= cursor)
    }
}

/// The tap that feeds the ring from the dispatcher thread.
pub struct RingTap(pub std::sync::Arc<Retained>);

impl Tap for RingTap {
    fn replay_capacity(&self) -> usize {
        self.0.capacity
    }

    fn on_start(&mut self, recent: &[SharedRecord], last_id: u64) {
        self.0.push(recent);
        self.0.set_last_id(last_id);
    }

    fn on_batch(&mut self, batch: &Batch) {
        self.0.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Record};
    use std::sync::Arc;

    fn rec(id: u64) -> SharedRecord {
        Arc::new(Record::new(Event {
            id,
            event_type: Arc::from(if id.is_multiple_of(2) { "even" } else { "odd" }),
            timestamp: 1.0,
            event_id: None,
            payload: Default::default(),
        }))
    }

    #[test]
    fn a_read_until_a_jump_stops_before_the_missing_ids() {
        let ring = Retained::new(100, 0);
        let ids = [1, 2, 3, 7, 8, 20];
        ring.push(&ids.iter().copied().map(rec).collect::<Vec<_>>());
        let ids_of = |r: &Read| r.records.iter().map(|r| r.id).collect::<Vec<_>>();
        let r = ring.read_until_jump(1, 10, |_| true);
        assert_eq!(
            (ids_of(&r), r.next_cursor, r.jump),
            (vec![2, 3], 3, Some((4, 6)))
        );
        // At the jump: nothing read, the missing ids said.
        let r = ring.read_until_jump(3, 10, |_| true);
        assert_eq!(
            (ids_of(&r), r.next_cursor, r.jump),
            (vec![], 3, Some((4, 6)))
        );
        // Past it; a filter that drops 7 still stops at the next jump.
        let r = ring.read_until_jump(6, 10, |r| r.id != 7);
        assert_eq!(
            (ids_of(&r), r.next_cursor, r.jump),
            (vec![8], 8, Some((9, 19)))
        );
        // read_after does not stop.
        assert_eq!(ids_of(&ring.read_after(1, 10, |_| true)), [2, 3, 7, 8, 20]);
    }

    #[test]
    fn reads_after_a_cursor_and_reports_what_fell_out() {
        let ring = Retained::new(4, 0);
        ring.push(&(1..=6).map(rec).collect::<Vec<_>>());
        assert_eq!(ring.oldest_id(), Some(3));
        assert_eq!(ring.last_id(), 6);

        let r = ring.read_after(4, 10, |_| true);
        assert_eq!(r.records.iter().map(|r| r.id).collect::<Vec<_>>(), [5, 6]);
        assert_eq!((r.missing, r.next_cursor), (None, 6));

        let r = ring.read_after(0, 10, |_| true);
        assert_eq!(r.missing, Some((1, 2)));
        assert_eq!(r.records.len(), 4);

        let r = ring.read_after(6, 10, |_| true);
        assert!(r.records.is_empty());
        assert_eq!(r.next_cursor, 6);
    }

    #[test]
    fn filters_advance_the_cursor() {
        let ring = Retained::new(100, 0);
        ring.push(&(1..=10).map(rec).collect::<Vec<_>>());
        let r = ring.read_after(0, 2, |r| &*r.event_type == "even");
        assert_eq!(r.records.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(r.next_cursor, 4);
    }

    #[test]
    fn lag_is_measured_in_bytes() {
        let ring = Retained::new(100, 0);
        let recs: Vec<_> = (1..=5).map(rec).collect();
        let len = recs[0].message().len() as u64;
        ring.push(&recs);
        assert_eq!(ring.lag(5), (0, 0));
        assert_eq!(ring.lag(3).1, 2);
        assert!(ring.lag(3).0 >= 2 * len - 2);
        assert_eq!(ring.lag(0).1, 5);
    }

    #[test]
    fn ids_with_a_gap_are_found_by_search() {
        // After a crash ids jump past the reservation.
        let ring = Retained::new(100, 0);
        ring.push(&[rec(1), rec(2), rec(3)]);
        ring.push(&[rec(1_000_004), rec(1_000_005)]);
        let after = |c| {
            ring.read_after(c, 10, |_| true)
                .records
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(after(2), [3, 1_000_004, 1_000_005]);
        assert_eq!(after(3), [1_000_004, 1_000_005]);
        assert_eq!(after(500), [1_000_004, 1_000_005]);
        assert_eq!(after(1_000_004), [1_000_005]);
        assert!(after(1_000_005).is_empty());
        assert_eq!(ring.lag(1_000_005), (0, 0));
        assert!(ring.lag(3).0 > 0);
    }

    #[test]
    fn ring_starting_after_recovered_ids() {
        let ring = Retained::new(10, 41);
        assert_eq!(ring.last_id(), 41);
        let r = ring.read_after(41, 10, |_| true);
        assert!(r.records.is_empty() && r.missing.is_none());
        ring.push(&[rec(42)]);
        assert_eq!(ring.read_after(41, 10, |_| true).records.len(), 1);
    }
}
