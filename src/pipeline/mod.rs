//! The pipeline between producers and sinks.
//!
//! ```text
//! producers (emit, HTTP, WebSocket, Redis)      validate on the caller's side
//!        │  bounded queue (policy: drop newest and count, or block)
//!        ▼
//! dispatcher thread   id, dedup by event_id, serialise once → Batch
//!        │  Arc<[Arc<Record>]> shared by all
//!        ├──► sink thread: JSONL log        (when full: block)
//!        ├──► sink thread: metrics engine   (when full: block)
//!        ├──► sink thread: console          (when full: drop, counted)
//!        ├──► taps on the dispatcher thread (the hub's stream; never block)
//!        └─ spent batches ──► freeing thread (sinks/reclaim.rs; never waits)
//! ```

use serde::Serialize;

use crate::event::{NewEvent, SharedRecord};
use crate::sinks::runner::Batch;
pub use crate::stats::{PipelineStats, StatsSnapshot};

pub mod dedup;
pub(crate) mod dispatcher;
pub mod epoch;
pub mod ids;
pub mod recovery;

/// What became of one accepted-for-processing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "id", rename_all = "snake_case")]
pub enum Outcome {
    /// Written with this id.
    Accepted(u64),
    /// Its `event_id` was seen before; the earlier event has this id.
    Duplicate(u64),
}

impl Outcome {
    /// The id the event has in the log (its own or its original's).
    pub fn id(self) -> u64 {
        match self {
            Outcome::Accepted(id) | Outcome::Duplicate(id) => id,
        }
    }
}

/// A batch the pipeline would not take: the log cannot be written and
/// enough already waits for it, or it has reached its disk cap (see
/// [`crate::sinks::jsonl::backlog`]).
pub type Refused = crate::sinks::jsonl::Refusal;

/// Called with the outcomes of a batch once its events are with the sinks,
/// or with the refusal of the whole batch.
pub type Reply = Box<dyn FnOnce(Result<Vec<Outcome>, Refused>) + Send>;

/// Called once a flush has completed.
pub type Ack = Box<dyn FnOnce() + Send>;

/// What producers put on the queue.
pub(crate) enum Command {
    One(NewEvent),
    Many(Vec<NewEvent>, Option<Reply>),
    Flush(Ack),
    /// Events that already have their ids (a cluster's shared stream,
    /// [`crate::cluster`]): handed on as they are, in order.
    Tailed(Vec<SharedRecord>),
    Stop,
}

/// Where a cluster member's dispatcher sends the events it takes instead
/// of giving them ids itself ([`crate::cluster`]): the ids come from the
/// cluster, and the events come back with them through
/// [`crate::Emitter::feed_tailed`]. `send` may wait for room (it runs on
/// the dispatcher thread, outside async code) but must not wait on the
/// pipeline.
pub trait Outbox: Send + 'static {
    /// Takes `events` (validated, timestamped) and calls `reply`, when
    /// given, with their outcomes once the cluster holds them, or with the
    /// refusal of the whole batch.
    fn send(&self, events: Vec<NewEvent>, reply: Option<Reply>);
}

/// A consumer that runs on the dispatcher thread and sees every batch, in
/// id order, as soon as it is formed. It must not block: it is for handing
/// the batch on (the hub's live stream), not for I/O.
pub trait Tap: Send + 'static {
    /// How many of the most recent logged events this tap wants to see at
    /// start (through [`Tap::on_start`]).
    fn replay_capacity(&self) -> usize {
        0
    }
    /// At start, before [`Tap::on_start`]: each event read back from the
    /// log (the days the pipeline replays), oldest first. For taps that
    /// rebuild state of their own from history (the hub's task index and
    /// HITL queue) without keeping the events.
    fn on_recovered(&mut self, event: &crate::event::Event) {
        let _ = event;
    }
    /// A start failed after [`Tap::on_recovered`] was given part of the
    /// history, maybe all: forget what it built, since a retry gives the
    /// whole history again.
    fn on_recovery_abandoned(&mut self) {}
    /// The pipeline starts: `recent` are the last logged events (at most
    /// [`Tap::replay_capacity`]), `last_id` the last id given so far.
    fn on_start(&mut self, recent: &[SharedRecord], last_id: u64) {
        let _ = (recent, last_id);
    }
    /// A new batch of accepted events.
    fn on_batch(&mut self, batch: &Batch);
    /// The pipeline has stopped; no batch follows.
    fn on_stop(&mut self) {}
}

/// What to do when the queue in front of the dispatcher is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueuePolicy {
    /// Refuse the new event and count it (the caller never waits).
    #[default]
    DropNewest,
    /// Wait for room.
    Block,
}

impl std::str::FromStr for QueuePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "drop" | "drop_newest" => Ok(QueuePolicy::DropNewest),
            "block" => Ok(QueuePolicy::Block),
            other => Err(format!("unknown queue policy `{other}` (drop, block)")),
        }
    }
}
