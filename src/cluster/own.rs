//! The ids a hub appended itself, as its tail reads them back: with Redis
//! bucket metrics, each hub records the increments of those only, so each
//! event is counted once in the cluster (by the hub that took it), with
//! the task state of every event before it (each hub's engine sees them
//! all).
//!
//! The tail notes an id (the entry's field `h` is this process's origin)
//! before it hands the event on, and the metrics sink asks about ids in
//! increasing order, so ranges below the id asked are dropped as it goes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Ranges of ids, oldest first.
#[derive(Debug, Default)]
pub struct OwnIds {
    /// Off until a metrics sink asks (nothing would drain the ranges).
    enabled: AtomicBool,
    ranges: Mutex<VecDeque<(u64, u64)>>,
}

/// Ranges kept at most: past it the oldest go (their events were handed
/// on long ago).
const MAX_RANGES: usize = 1 << 16;

impl OwnIds {
    /// Starts recording (a metrics sink will ask).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Notes that this hub appended `id` (ids come in increasing order).
    pub fn insert(&self, id: u64) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut r = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        match r.back_mut() {
            Some((_, end)) if *end + 1 == id => *end = id,
            _ => {
                if r.len() == MAX_RANGES {
                    r.pop_front();
                }
                r.push_back((id, id));
            }
        }
    }

    /// Whether this hub appended `id`; forgets every id below it.
    pub fn take(&self, id: u64) -> bool {
        let mut r = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(start, end)) = r.front() {
            if end < id {
                r.pop_front();
            } else {
                return start <= id;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_answer_in_order() {
        let own = OwnIds::default();
        own.insert(1);
        assert!(!own.take(1), "off until enabled");
        own.enable();
        for id in [2, 3, 4, 7, 8] {
            own.insert(id);
        }
        let got: Vec<u64> = (1..=9).filter(|id| own.take(*id)).collect();
        assert_eq!(got, vec![2, 3, 4, 7, 8]);
        assert!(!own.take(3), "forgotten once passed");
    }
}
