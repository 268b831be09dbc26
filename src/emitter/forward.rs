//! [`ForwardSink`]: a pipeline sink that hands every event to a [`Client`],
//! so that an in-process [`crate::Emitter`] forwards to a hub.
//!
//! The global emitter uses it when `AGENTPULSE_HUB_URL` is set: events are
//! validated in the process (errors come back from `emit_event` at once),
//! then sent to the hub with their timestamp and `event_id` (the client
//! gives one to events without). The emitter's `flush` and `stop` wait for
//! the hub's answers (at most the sink's flush timeout).

use std::time::Duration;

use crate::client::Client;
use crate::event::{NewEvent, SharedRecord};
use crate::sinks::{Sink, SinkError};

/// Forwards events to a hub through a [`Client`].
#[derive(Debug)]
pub struct ForwardSink {
    client: Client,
    flush_timeout: Duration,
}

impl ForwardSink {
    /// Forwards to `client`; a flush waits at most 5 s for the hub.
    pub fn new(client: Client) -> ForwardSink {
        ForwardSink {
            client,
            flush_timeout: Duration::from_secs(5),
        }
    }

    /// How long a flush waits for the hub's answers.
    pub fn flush_timeout(mut self, d: Duration) -> ForwardSink {
        self.flush_timeout = d;
        self
    }

    /// The client events go through (for its counters).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Sink for ForwardSink {
    fn name(&self) -> &'static str {
        "hub"
    }

    fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), SinkError> {
        for record in batch {
            let e = &record.event;
            let mut event =
                NewEvent::new(e.event_type.clone(), e.payload.clone()).with_timestamp(e.timestamp);
            event.event_id = e.event_id.clone();
            // A full queue is counted by the client (`dropped`).
            let _ = self.client.emit_event(event);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.client.flush(self.flush_timeout) {
            return Ok(());
        }
        let s = self.client.stats();
        Err(SinkError::io(
            format!("delivering to the hub at {}", self.client.hub_url()),
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "{} event{} still undelivered after {:?} ({})",
                    s.queued,
                    if s.queued == 1 { "" } else { "s" },
                    self.flush_timeout,
                    s.last_error.as_deref().unwrap_or("no answer yet")
                ),
            ),
        ))
    }

    fn dropped(&self) -> u64 {
        let s = self.client.stats();
        s.dropped + s.lost
    }
}

impl Drop for ForwardSink {
    fn drop(&mut self) {
        // The pipeline flushed before stopping; do not wait again.
        self.client.close(Duration::from_millis(100));
    }
}
