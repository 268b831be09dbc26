//! The pipeline's counters: kept live in atomics by the hub's pipeline
//! ([`PipelineStats`]), read at one moment by the alert rules and the APIs
//! ([`StatsSnapshot`]).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Events given an id and handed to the sinks.
    pub accepted: u64,
    /// Events refused by validation.
    pub rejected: u64,
    /// Events dropped because the queue was full (policy `drop`) or the
    /// pipeline had stopped.
    pub dropped: u64,
    /// Events recognised as retries by their `event_id`.
    pub duplicates: u64,
    /// Events refused because the log could not take them (disk full).
    pub refused: u64,
    /// The last id given.
    pub last_id: u64,
}

/// Counters of the pipeline, readable from any thread.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Events given an id and handed to the sinks.
    pub accepted: AtomicU64,
    /// Events refused by validation.
    pub rejected: AtomicU64,
    /// Events dropped because the queue was full (policy `drop`) or the
    /// pipeline had stopped.
    pub dropped: AtomicU64,
    /// Events recognised as retries by their `event_id`.
    pub duplicates: AtomicU64,
    /// Events refused because the log could not take them (disk full).
    pub refused: AtomicU64,
    /// The last id given.
    pub last_id: AtomicU64,
}

impl PipelineStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            last_id: self.last_id.load(Ordering::Relaxed),
        }
    }
}
