//! The metrics sink: feeds every accepted event to the metrics engine
//! (`crate::metrics`), which readers query through a shared lock.

use std::sync::{Arc, Mutex};

use super::{Sink, SinkError};
use crate::event::SharedRecord;
use crate::metrics::MetricsEngine;

/// A metrics engine shared between the sink thread and readers.
pub type SharedEngine = Arc<Mutex<MetricsEngine>>;

/// Hands events to a shared [`MetricsEngine`].
pub struct MetricsSink {
    engine: SharedEngine,
}

impl MetricsSink {
    /// A sink feeding `engine`.
    pub fn new(engine: SharedEngine) -> Self {
        MetricsSink { engine }
    }
}

impl Sink for MetricsSink {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), SinkError> {
        // One lock per batch keeps readers' waits short and the cost low.
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        for r in batch {
            engine.observe(&r.event);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
