//! Where events go out: every destination is a [`Sink`].
//!
//! The dispatcher hands each sink batches of [`SharedRecord`]s (the event
//! plus its wire bytes, serialised once). Each sink runs on its own thread
//! (see [`runner`]), so a slow or failing sink never stalls the others.
//! A sink that fails keeps what it could not write and retries on the next
//! tick; failures are logged through `tracing` and counted. Spent batches
//! are freed on a thread of their own ([`reclaim`]).

use std::time::Duration;

use crate::event::SharedRecord;

pub mod alerts;
pub mod console;
pub mod jsonl;
pub mod metrics;
pub mod notify;
pub mod reclaim;
pub mod redis_metrics;
pub mod runner;
pub mod thread;

/// A failure of a sink: what it was doing and the I/O error.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the sink was doing (includes the path where there is one).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl SinkError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SinkError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A destination for events.
///
/// Contract: `write_batch` takes ownership of the batch's content: when it
/// returns an error, the sink itself keeps whatever it could not write (within
/// its own bound, counting what it has to drop) and retries in `tick` or the
/// next `write_batch`. The runner never hands the same batch twice.
pub trait Sink: Send + 'static {
    /// Short name for logs and counters (`console`, `jsonl`, ...).
    fn name(&self) -> &'static str;

    /// Writes (or buffers) a batch of records, in id order.
    fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), SinkError>;

    /// Makes everything handed in so far reach its destination (for a file:
    /// written and, where the durability setting asks, synced).
    fn flush(&mut self) -> Result<(), SinkError>;

    /// Called at least every [`Sink::tick_interval`] while the sink is idle
    /// or busy: periodic flushing, rotation, retrying after a failure.
    fn tick(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// How often [`Sink::tick`] wants to run.
    fn tick_interval(&self) -> Duration {
        Duration::from_millis(100)
    }

    /// Whether everything handed in so far has reached the destination as
    /// far as the sink promises (for a file: written, and synced when the
    /// durability setting says so). Acknowledgements of ingest wait for it.
    fn caught_up(&self) -> bool {
        true
    }

    /// Events this sink had to give up on (its retry buffer overflowed).
    fn dropped(&self) -> u64 {
        0
    }

    /// How long the sink's thread may doze after a small batch before it
    /// looks for the next one, or `None` to wait for every batch at once.
    ///
    /// A dozing thread is not waiting on its channel, so the dispatcher
    /// hands it batches without waking it: a stream of one-event requests
    /// then costs one wake-up per doze instead of one per event (on a
    /// 2-core host, each wake-up competes with the request's own path).
    /// Only for sinks no acknowledgement waits for and whose channel
    /// blocks when full (nothing is dropped while dozing).
    fn doze(&self) -> Option<Duration> {
        None
    }
}
