//! The dedup window: the last N client-chosen `event_id`s and the ids they
//! were given, so a retried event is recognised and kept once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Remembers the most recent `capacity` event ids (FIFO eviction).
#[derive(Debug)]
pub struct DedupWindow {
    capacity: usize,
    map: HashMap<Arc<str>, u64>,
    order: VecDeque<Arc<str>>,
}

impl DedupWindow {
    /// A window of `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DedupWindow {
            capacity,
            map: HashMap::with_capacity(capacity.min(1 << 20)),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
        }
    }

    /// The id an earlier event with this key was given, if it is still in
    /// the window.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.map.get(key).copied()
    }

    /// Records that `key` was given `id`, evicting the oldest key when full.
    pub fn insert(&mut self, key: &str, id: u64) {
        if self.map.contains_key(key) {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        let key: Arc<str> = Arc::from(key);
        self.map.insert(key.clone(), id);
        self.order.push_back(key);
    }

    /// Forgets every key whose id is in `first..=last` (their events were
    /// never stored: a retry must be stored, not answered "duplicate").
    /// Scans the window; called only when the log had to drop lines.
    pub fn forget_ids(&mut self, first: u64, last: u64) {
        let map = &mut self.map;
        self.order.retain(|k| match map.get(k) {
            Some(id) if (first..=last).contains(id) => {
                map.remove(k);
                false
            }
            _ => true,
        });
    }

    /// The id remembered for each key (for tests and checks).
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.map.iter().map(|(k, v)| (&**k, *v))
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_n_keys() {
        let mut w = DedupWindow::new(3);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            w.insert(k, i as u64 + 1);
        }
        assert_eq!(w.get("a"), None);
        assert_eq!(w.get("b"), Some(2));
        assert_eq!(w.get("d"), Some(4));
        w.insert("b", 99);
        assert_eq!(w.get("b"), Some(2), "first id wins");
        assert_eq!(w.len(), 3);
        w.forget_ids(2, 3);
        assert_eq!((w.get("b"), w.get("c"), w.get("d")), (None, None, Some(4)));
        assert_eq!(w.len(), 1);
        w.insert("b", 5);
        assert_eq!(w.get("b"), Some(5), "a forgotten key is stored anew");
    }
}
