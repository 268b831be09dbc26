//! The task index: task id → the ids of its events, for the last
//! [`DEFAULT_WINDOW`] events, so `GET /api/tasks/{id}` finds a task's
//! events (in the ring or, by id, in the log) without scanning the log.
//!
//! Compact and bounded whatever the traffic (a million distinct tasks cost
//! the same as a few): each event with a `task_id` is one 16-byte entry,
//! its id and a 32-bit hash of its task, in chunks of [`CHUNK`] entries. A
//! lookup compares hashes over the window (a few milliseconds for a
//! million entries, outside the lock but for the chunk being filled);
//! the rare hash collision is dropped by the reader, which checks each
//! event's `task_id`. A chunk goes once its newest id has left the window.
//! A lookup returns at most [`MAX_IDS_PER_TASK`] ids (the task's newest).
//! The [`TaskTap`] feeds it, and the HITL queue ([`super::hitl`]), on the
//! dispatcher thread: from the log at start ([`Tap::on_recovered`]), then
//! every batch.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::Mutex;

use super::hitl::HitlBook;
use crate::event::Event;
use crate::pipeline::Tap;
use crate::sinks::runner::Batch;

/// How many of the newest events the index covers.
pub const DEFAULT_WINDOW: u64 = 1_000_000;

/// Most ids a lookup returns (the task's newest): an answer stays bounded.
pub const MAX_IDS_PER_TASK: usize = 10_000;

/// Entries per chunk (1 MiB).
pub const CHUNK: usize = 65_536;

/// What the index says of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Ids of events that may be the task's (its hash matches), oldest
    /// first, at most [`MAX_IDS_PER_TASK`].
    pub ids: Vec<u64>,
    /// Whether older ids were left out for [`MAX_IDS_PER_TASK`].
    pub truncated: bool,
    /// The oldest id the index covers: a task seen only before it is not
    /// in the index (0: nothing indexed yet).
    pub covered_from: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    task: u32,
}

#[derive(Default)]
struct Inner {
    /// Full chunks, oldest first; shared with lookups, never changed.
    sealed: VecDeque<Arc<[Entry]>>,
    /// The chunk being filled.
    active: Vec<Entry>,
    /// The first id observed (recovered or live); 0 before any.
    first_seen: u64,
    /// The newest id observed.
    last_id: u64,
}

/// The bounded task → event ids index (see the module docs).
pub struct TaskIndex {
    window: u64,
    hasher: foldhash::fast::RandomState,
    inner: Mutex<Inner>,
}

impl TaskIndex {
    /// An index of the last `window` events.
    pub fn new(window: u64) -> TaskIndex {
        TaskIndex {
            window: window.max(1),
            hasher: foldhash::fast::RandomState::default(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn hash(&self, task: &str) -> u32 {
        self.hasher.hash_one(task) as u32
    }

    /// Notes event `id` (ids come in increasing order), of `task` if it has one.
    pub fn note(&self, id: u64, task: Option<&str>) {
        let entry = task.map(|t| Entry {
            id,
            task: self.hash(t),
        });
        let mut inner = self.inner.lock();
        if inner.first_seen == 0 {
            inner.first_seen = id;
        }
        inner.last_id = inner.last_id.max(id);
        if let Some(e) = entry {
            if inner.active.capacity() == 0 {
                inner.active.reserve_exact(CHUNK);
            }
            inner.active.push(e);
            if inner.active.len() == CHUNK {
                let full: Arc<[Entry]> = Arc::from(std::mem::take(&mut inner.active));
                inner.sealed.push_back(full);
            }
        }
        let oldest_kept = self.oldest_kept(&inner);
        while inner
            .sealed
            .front()
            .is_some_and(|c| c.last().is_none_or(|e| e.id < oldest_kept))
        {
            inner.sealed.pop_front();
        }
    }

    fn oldest_kept(&self, inner: &Inner) -> u64 {
        inner.last_id.saturating_sub(self.window - 1).max(1)
    }

    /// The ids that may be `task`'s, and how far back the index reaches.
    pub fn lookup(&self, task: &str) -> Lookup {
        let h = self.hash(task);
        let (sealed, active, oldest_kept, covered_from) = {
            let inner = self.inner.lock();
            let oldest_kept = self.oldest_kept(&inner);
            let covered_from = match inner.first_seen {
                0 => 0,
                first => first.max(oldest_kept),
            };
            let active: Vec<u64> = inner
                .active
                .iter()
                .filter(|e| e.task == h && e.id >= oldest_kept)
                .map(|e| e.id)
                .collect();
            let sealed: Vec<Arc<[Entry]>> = inner.sealed.iter().cloned().collect();
            (sealed, active, oldest_kept, covered_from)
        };
        // Newest first, so that the cap keeps the newest.
        let mut ids: Vec<u64> = active.into_iter().rev().collect();
        let mut truncated = ids.len() > MAX_IDS_PER_TASK;
        'chunks: for chunk in sealed.iter().rev() {
            for e in chunk.iter().rev() {
                if e.id < oldest_kept {
                    break 'chunks;
                }
                if e.task == h {
                    if ids.len() >= MAX_IDS_PER_TASK {
                        truncated = true;
                        break 'chunks;
                    }
                    ids.push(e.id);
                }
            }
        }
        ids.truncate(MAX_IDS_PER_TASK);
        ids.reverse();
        Lookup {
            ids,
            truncated,
            covered_from,
        }
    }

    /// Forgets everything indexed (a start that failed after reading part
    /// of the history: the retry reads all of it again).
    pub fn clear(&self) {
        *self.inner.lock() = Inner::default();
    }

    /// Indexed entries held now (whole chunks: a little past the window).
    pub fn len(&self) -> usize {
        let inner = self.inner.lock();
        inner.sealed.iter().map(|c| c.len()).sum::<usize>() + inner.active.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tap that keeps the task index and the HITL queue current.
pub struct TaskTap {
    /// The index.
    pub index: Arc<TaskIndex>,
    /// The HITL queue.
    pub hitl: Arc<HitlBook>,
}

impl TaskTap {
    fn observe(&self, event: &Event) {
        self.index.note(event.id, event.str_field("task_id"));
        self.hitl.observe(event);
    }
}

impl Tap for TaskTap {
    fn on_recovered(&mut self, event: &Event) {
        self.observe(event);
    }

    fn on_recovery_abandoned(&mut self) {
        self.index.clear();
        self.hitl.clear();
    }

    fn on_batch(&mut self, batch: &Batch) {
        for record in batch.iter() {
            self.observe(&record.event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_leave_with_the_window() {
        let index = TaskIndex::new(10);
        for id in 1..=5 {
            index.note(id, Some(if id % 2 == 0 { "even" } else { "odd" }));
        }
        assert_eq!(index.lookup("odd").ids, [1, 3, 5]);
        assert_eq!(index.lookup("even").covered_from, 1);
        // Ten later events without a task push every indexed one out.
        for id in 6..=15 {
            index.note(id, None);
        }
        assert!(index.lookup("odd").ids.is_empty());
        assert_eq!(index.lookup("odd").covered_from, 6);
        index.note(16, Some("odd"));
        assert_eq!(index.lookup("odd").ids, [16]);
    }

    #[test]
    fn whole_chunks_go_and_memory_stays_bounded() {
        let window = 3 * CHUNK as u64;
        let index = TaskIndex::new(window);
        let n = 10 * CHUNK as u64;
        for id in 1..=n {
            // Every event a task of its own: the worst case for a map.
            index.note(id, Some(&format!("t{id}")));
        }
        assert!(index.len() <= window as usize + CHUNK, "{}", index.len());
        assert_eq!(index.lookup(&format!("t{n}")).ids, [n]);
        assert!(index.lookup("t1").ids.is_empty());
        assert_eq!(index.lookup("t1").covered_from, n - window + 1);
    }

    #[test]
    fn one_task_returns_its_newest_ids() {
        let index = TaskIndex::new(DEFAULT_WINDOW);
        let n = MAX_IDS_PER_TASK as u64 + 5;
        for id in 1..=n {
            index.note(id, Some("big"));
        }
        let l = index.lookup("big");
        assert_eq!(l.ids.len(), MAX_IDS_PER_TASK);
        assert_eq!(l.ids[0], 6);
        assert_eq!(*l.ids.last().unwrap(), n);
        assert!(l.truncated);
    }
}
