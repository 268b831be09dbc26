//! The metrics sink: feeds every accepted event to the metrics engine
//! (`crate::metrics`), which readers query through a shared lock.

use std::sync::{Arc, Mutex};

use super::redis_metrics::Increments;
use super::{Sink, SinkError};
use crate::clock::SharedClock;
use crate::event::SharedRecord;
use crate::metrics::MetricsEngine;

/// A metrics engine shared between the sink thread and readers.
pub type SharedEngine = Arc<Mutex<MetricsEngine>>;

/// Which events' bucket increments this hub records, by id (a cluster
/// member records those it appended: each event is counted once in the
/// cluster, with the task state of every event behind it).
pub type IncrementFilter = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// Hands events to a shared [`MetricsEngine`], and, when Redis is
/// configured, records what each event adds to each bucket for the flusher.
pub struct MetricsSink {
    engine: SharedEngine,
    increments: Option<Arc<Increments>>,
    only: Option<IncrementFilter>,
    clock: Option<SharedClock>,
}

impl MetricsSink {
    /// A sink feeding `engine`.
    pub fn new(engine: SharedEngine) -> Self {
        MetricsSink {
            engine,
            increments: None,
            only: None,
            clock: None,
        }
    }

    /// Lets `clock` drive the engine's retention (see
    /// [`MetricsEngine::advance_clock`]): the window follows the clock, not
    /// the newest event timestamp.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Also records bucket increments into `increments`.
    pub fn with_increments(mut self, increments: Arc<Increments>) -> Self {
        self.increments = Some(increments);
        self
    }

    /// Records increments only for the events `only` says (every event
    /// still feeds the engine).
    pub fn with_increment_filter(mut self, only: IncrementFilter) -> Self {
        self.only = Some(only);
        self
    }
}

impl Sink for MetricsSink {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), SinkError> {
        // One lock per batch keeps readers' waits short and the cost low.
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(clock) = &self.clock {
            engine.advance_clock(clock.now());
        }
        match &self.increments {
            None => {
                for r in batch {
                    engine.observe(&r.event);
                }
            }
            Some(inc) => match &self.only {
                None => inc.add(batch.len() as u64, |set| {
                    for r in batch {
                        engine.observe_into(&r.event, set);
                    }
                }),
                Some(only) => {
                    let counted: Vec<bool> = batch.iter().map(|r| only(r.event.id)).collect();
                    let n = counted.iter().filter(|c| **c).count() as u64;
                    inc.add(n, |set| {
                        for (r, counted) in batch.iter().zip(counted) {
                            if counted {
                                engine.observe_into(&r.event, set);
                            } else {
                                engine.observe(&r.event);
                            }
                        }
                    })
                }
            },
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn tick(&mut self) -> Result<(), SinkError> {
        // Idle or not, buckets leave the window as the clock moves on.
        if let Some(clock) = &self.clock {
            let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            engine.advance_clock(clock.now());
        }
        Ok(())
    }

    fn tick_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn doze(&self) -> Option<std::time::Duration> {
        // Nothing acknowledges after this sink, and its channel blocks
        // when full: the dashboard's figures may be a millisecond late.
        Some(super::runner::SMALL_BATCH_DOZE)
    }
}
