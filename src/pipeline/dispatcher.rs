//! The dispatcher: the one thread that gives events their ids, drops
//! duplicates, serialises each event once and hands the shared batch to
//! every sink and tap.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use super::dedup::DedupWindow;
use super::{Command, Outcome, PipelineStats, Refused, Tap};
use crate::clock::SharedClock;
use crate::event::{Event, LineWriter, NewEvent, SharedRecord};
use crate::sinks::runner::{panic_message, Batch, SinkHandle, SinkStopError};

/// Most commands taken from the queue before a batch is handed on.
const MAX_BATCH: usize = 4096;

/// How long a stopping dispatcher waits for each sink's final flush.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Dispatcher {
    pub next_id: u64,
    pub dedup: DedupWindow,
    pub sinks: Vec<SinkHandle>,
    pub taps: Vec<Box<dyn Tap>>,
    pub stats: Arc<PipelineStats>,
    pub clock: SharedClock,
    /// Ids reserved ahead on disk (with a log only).
    pub ids: Option<super::ids::IdReservation>,
    /// Serialises each event once, into shared chunks.
    pub lines: LineWriter,
    /// What the log has not written yet (with a log only).
    pub backlog: Option<Arc<crate::sinks::jsonl::Backlog>>,
    /// The sinks' freeing thread ([`crate::sinks::reclaim`]): joined at
    /// stop, after the sinks.
    pub reclaim_thread: std::thread::JoinHandle<()>,
    /// In a cluster: where taken events go for their ids (they come back
    /// as [`Command::Tailed`]); `None` gives ids here.
    pub outbox: Option<Box<dyn super::Outbox>>,
}

impl Dispatcher {
    /// Runs until a `Stop` command arrives or every sender is gone, then
    /// flushes and stops every sink. Returns what panicked on the way (a
    /// sink's thread, the freeing thread), one line each: empty when all
    /// went well.
    pub fn run(mut self, mut rx: Receiver<Command>) -> Vec<String> {
        let mut batch: Vec<SharedRecord> = Vec::with_capacity(MAX_BATCH);
        let mut replies: Vec<(super::Reply, Result<Vec<Outcome>, Refused>)> = Vec::new();
        let mut flushes = Vec::new();
        let mut stopping = false;
        let mut cmds = Vec::with_capacity(MAX_BATCH);
        while !stopping {
            // Taken in bulk: the queue's capacity is given back once per
            // batch, not once per event (each give-back takes a lock that
            // the producers' `try_send` contends with).
            if rx.blocking_recv_many(&mut cmds, MAX_BATCH) == 0 {
                break;
            }
            self.forget_lost();
            for cmd in cmds.drain(..) {
                stopping |= self.take(cmd, &mut batch, &mut replies, &mut flushes);
            }
            self.hand_on(&mut batch);
            // Acknowledge ingest only once its events are with the sinks.
            for (reply, outcomes) in replies.drain(..) {
                reply(outcomes);
            }
            for ack in flushes.drain(..) {
                for sink in &self.sinks {
                    sink.flush(STOP_TIMEOUT);
                }
                ack();
            }
        }
        // Whatever was queued before the stop is still delivered.
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            self.take(cmd, &mut batch, &mut replies, &mut flushes);
        }
        self.hand_on(&mut batch);
        for (reply, outcomes) in replies.drain(..) {
            reply(outcomes);
        }
        let mut panicked = Vec::new();
        for sink in self.sinks.drain(..) {
            match sink.stop(STOP_TIMEOUT) {
                Ok(()) => {}
                // A slow flush was only ever logged: the sink goes on
                // writing on its own thread.
                Err(e @ SinkStopError::TimedOut { .. }) => tracing::error!("{e}"),
                Err(e @ SinkStopError::Panicked { .. }) => panicked.push(e.to_string()),
            }
        }
        // Every sink has stopped and dropped its `Reclaimer`: the freeing
        // thread ends once it has freed what it was given.
        if let Err(panic) = self.reclaim_thread.join() {
            panicked.push(format!(
                "the thread agentpulse-free panicked: {}",
                panic_message(&*panic)
            ));
        }
        for tap in &mut self.taps {
            tap.on_stop();
        }
        if let Some(ids) = &mut self.ids {
            if let Err(e) = ids.release(self.next_id - 1) {
                tracing::error!("cannot release event ids: {e}");
            }
        }
        for ack in flushes.drain(..) {
            ack();
        }
        panicked
    }

    /// Carries out one command: events join `batch`, replies and flush
    /// acknowledgements wait until the batch is handed on. True for `Stop`.
    fn take(
        &mut self,
        cmd: Command,
        batch: &mut Vec<SharedRecord>,
        replies: &mut Vec<(super::Reply, Result<Vec<Outcome>, Refused>)>,
        flushes: &mut Vec<super::Ack>,
    ) -> bool {
        match cmd {
            Command::One(ev) => {
                if self.refusal().is_some() {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                } else if let Some(outbox) = &self.outbox {
                    outbox.send(vec![ev], None);
                } else {
                    self.accept(ev, batch);
                }
            }
            Command::Many(events, reply) => {
                if let Some(reason) = self.refusal() {
                    self.stats
                        .refused
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                    if let Some(reply) = reply {
                        replies.push((reply, Err(reason)));
                    }
                    return false;
                }
                if let Some(outbox) = &self.outbox {
                    // Answered by the outbox once the cluster holds them;
                    // the counters see the answer on its way.
                    let stats = self.stats.clone();
                    let n = events.len() as u64;
                    let reply = reply.map(|reply| -> super::Reply {
                        Box::new(move |answer: Result<Vec<Outcome>, Refused>| {
                            match &answer {
                                Ok(outcomes) => {
                                    let dups = outcomes
                                        .iter()
                                        .filter(|o| matches!(o, Outcome::Duplicate(_)))
                                        .count();
                                    stats.duplicates.fetch_add(dups as u64, Ordering::Relaxed);
                                }
                                Err(_) => {
                                    stats.refused.fetch_add(n, Ordering::Relaxed);
                                }
                            }
                            reply(answer);
                        })
                    });
                    outbox.send(events, reply);
                    return false;
                }
                let outcomes: Vec<Outcome> = events
                    .into_iter()
                    .map(|ev| self.accept(ev, batch))
                    .collect();
                if let Some(reply) = reply {
                    replies.push((reply, Ok(outcomes)));
                }
            }
            Command::Tailed(records) => self.take_tailed(records, batch),
            Command::Flush(ack) => flushes.push(ack),
            Command::Stop => return true,
        }
        false
    }

    /// Why new events are refused now, if they are (the log cannot take
    /// them; see [`crate::sinks::jsonl::backlog`]).
    fn refusal(&self) -> Option<Refused> {
        self.backlog.as_ref()?.refusal()
    }

    /// Forgets the `event_id`s of events the log had to drop, so that their
    /// retries are stored.
    fn forget_lost(&mut self) {
        if let Some(b) = &self.backlog {
            for (first, last) in b.take_fresh_losses() {
                self.dedup.forget_ids(first, last);
            }
        }
    }

    fn accept(&mut self, ev: NewEvent, batch: &mut Vec<SharedRecord>) -> Outcome {
        if let Some(key) = &ev.event_id {
            if let Some(original) = self.dedup.get(key) {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return Outcome::Duplicate(original);
            }
        }
        let id = self.next_id;
        if let Some(ids) = &mut self.ids {
            if let Err(e) = ids.ensure(id) {
                // Go on: losing the reservation only risks reusing ids
                // after a crash, not losing events.
                tracing::error!("cannot reserve event ids: {e}");
            }
        }
        self.next_id += 1;
        if let Some(key) = &ev.event_id {
            self.dedup.insert(key, id);
        }
        let event = Event {
            id,
            event_type: ev.event_type,
            timestamp: ev.timestamp.unwrap_or_else(|| self.clock.now()),
            event_id: ev.event_id,
            payload: ev.payload,
        };
        batch.push(Arc::new(self.lines.record(event)));
        Outcome::Accepted(id)
    }

    /// Events with the cluster's ids: each one past the last id joins the
    /// batch as it is (a tail that reads again after a reconnect may repeat
    /// some).
    fn take_tailed(&mut self, records: Vec<SharedRecord>, batch: &mut Vec<SharedRecord>) {
        for record in records {
            let id = record.event.id;
            if id < self.next_id {
                continue;
            }
            if let Some(key) = &record.event.event_id {
                self.dedup.insert(key, id);
            }
            self.next_id = id + 1;
            batch.push(record);
        }
    }

    fn hand_on(&mut self, batch: &mut Vec<SharedRecord>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        // One allocation for the shared batch; `batch` keeps its capacity.
        let shared: Batch = batch.drain(..).collect();
        if let Some(b) = &self.backlog {
            b.handed(shared.iter().map(|r| r.line.len() as u64).sum());
        }
        for sink in &self.sinks {
            sink.send(&shared);
        }
        for tap in &mut self.taps {
            tap.on_batch(&shared);
        }
        self.stats.accepted.fetch_add(n, Ordering::Relaxed);
        self.stats
            .last_id
            .store(self.next_id.saturating_sub(1), Ordering::Relaxed);
    }
}
