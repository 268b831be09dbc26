//! Runs one [`Sink`] on its own thread, fed batches over a bounded channel.
//!
//! Each sink has a when-full policy ([`WhenFull`]): `Block` (the JSONL log
//! and the metrics: nothing may be lost, so a slow disk slows the
//! dispatcher, whose own queue policy then applies at the producers) or
//! `DropNewest` (the console: a stalled terminal must not stall anything;
//! dropped events are counted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::reclaim::Reclaimer;
#[cfg(test)]
pub(crate) use super::thread::REFUSE_SPAWN;
pub use super::thread::{panic_message, spawn_thread, Parked, SpawnError};
use super::Sink;
use crate::event::SharedRecord;

/// A batch of records, shared by every sink.
pub type Batch = Arc<[SharedRecord]>;

/// Batches smaller than this are freed by the sink itself: waking the
/// freeing thread would cost more than it saves.
const RECLAIM_MIN_EVENTS: usize = 32;

/// Batches of fewer events than this count as small for [`Sink::doze`]:
/// the lone events of one-event requests, not bulk ingest.
const SMALL_BATCH: usize = 32;

/// How long the sinks that doze ([`Sink::doze`]) do: at 10,000 one-event
/// requests a second, a wake-up per ~10 batches; far below what fills a
/// channel of 64 batches.
pub const SMALL_BATCH_DOZE: Duration = Duration::from_millis(1);

/// What to do when a sink's channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room (lossless).
    Block,
    /// Drop the batch and count its events.
    DropNewest,
}

/// Counters of one sink, readable from any thread.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events handed to the sink.
    pub events: AtomicU64,
    /// Failed operations (each also logged).
    pub errors: AtomicU64,
    /// Events dropped because the channel was full (`DropNewest`).
    pub dropped_full: AtomicU64,
    /// Events the sink itself gave up on (its retry buffer overflowed).
    pub dropped_by_sink: AtomicU64,
    /// Events not handed over because the sink's thread had ended (it
    /// panicked): counted, and said in `last_error`, until `stop` reports
    /// the panic.
    pub dropped_dead: AtomicU64,
    /// The last error's text, for `/health`.
    pub last_error: Mutex<Option<String>>,
}

enum Msg {
    Batch(Batch),
    Flush(SyncSender<()>),
    Stop(SyncSender<()>),
}

/// The dispatcher's side of a running sink.
pub struct SinkHandle {
    name: &'static str,
    tx: SyncSender<Msg>,
    when_full: WhenFull,
    stats: Arc<SinkStats>,
    watermark: tokio::sync::watch::Receiver<u64>,
    thread: Option<JoinHandle<Option<()>>>,
}

impl SinkHandle {
    /// Starts `sink` on a thread (`sink-{name}`) with a channel of
    /// `capacity` batches; spent batches go to `reclaim`. Fails when the
    /// thread cannot be created (the sink is then dropped).
    pub fn spawn(
        sink: Box<dyn Sink>,
        capacity: usize,
        when_full: WhenFull,
        reclaim: &Reclaimer<Batch>,
    ) -> Result<SinkHandle, SpawnError> {
        let thread = Parked::spawn(std::thread::Builder::new(), Self::thread_name(&*sink))?;
        Ok(Self::start(thread, sink, capacity, when_full, reclaim))
    }

    /// The name of the thread that runs `sink`.
    pub fn thread_name(sink: &dyn Sink) -> String {
        format!("sink-{}", sink.name())
    }

    /// [`SinkHandle::spawn`] on a thread made beforehand (see [`Parked`]):
    /// cannot fail.
    pub fn start(
        thread: Parked<()>,
        sink: Box<dyn Sink>,
        capacity: usize,
        when_full: WhenFull,
        reclaim: &Reclaimer<Batch>,
    ) -> SinkHandle {
        let reclaim = reclaim.clone();
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let stats = Arc::new(SinkStats::default());
        let name = sink.name();
        let thread_stats = stats.clone();
        let (wm_tx, watermark) = tokio::sync::watch::channel(0);
        let thread = thread.run(move || run(sink, rx, thread_stats, wm_tx, reclaim));
        SinkHandle {
            name,
            tx,
            when_full,
            stats,
            watermark,
            thread: Some(thread),
        }
    }

    /// The id up to which everything handed to the sink has reached its
    /// destination (see [`Sink::caught_up`]).
    pub fn watermark(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watermark.clone()
    }

    /// The sink's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The sink's counters.
    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    /// Hands a batch to the sink according to its when-full policy.
    pub fn send(&self, batch: &Batch) {
        let msg = Msg::Batch(batch.clone());
        let handed = match self.when_full {
            WhenFull::Block => self.tx.send(msg).is_ok(),
            WhenFull::DropNewest => match self.tx.try_send(msg) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    self.stats
                        .dropped_full
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            },
        };
        if !handed {
            // The receiver is gone only when the thread ended, and it ends
            // before `stop` only by a panic.
            let lost = self
                .stats
                .dropped_dead
                .fetch_add(batch.len() as u64, Ordering::Relaxed)
                + batch.len() as u64;
            *self
                .stats
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(format!(
                "the sink's thread has ended (it panicked): {lost} events not written"
            ));
        }
    }

    /// Waits until everything sent so far has been handed to the sink and
    /// the sink has flushed, or `timeout` passed. Returns whether it finished.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_err() {
            return false;
        }
        ack_rx.recv_timeout(timeout).is_ok()
    }

    /// Flushes, stops the thread and waits for it (at most `timeout` for
    /// the final flush).
    pub fn stop(mut self, timeout: Duration) -> Result<(), SinkStopError> {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        // A thread that has gone without being told to (it panicked) no
        // longer takes the message; its join says why.
        // One that panics after the message was queued drops the ack
        // unsent (`Disconnected`): joining it then is just as prompt.
        let sent = self.tx.send(Msg::Stop(ack_tx)).is_ok();
        if sent && ack_rx.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout) {
            // Still flushing (a stalled disk): joining would wait as long.
            return Err(SinkStopError::TimedOut { sink: self.name });
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(panic)) => Err(SinkStopError::Panicked {
                sink: self.name,
                message: panic_message(&*panic),
            }),
            Some(Ok(_)) | None => Ok(()),
        }
    }
}

/// Why a sink did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum SinkStopError {
    /// Its final flush did not finish in time; the thread is left running.
    #[error("sink {sink} did not finish flushing in time")]
    TimedOut {
        /// The sink's name.
        sink: &'static str,
    },
    /// Its thread panicked: what it had not written is lost.
    #[error("sink {sink} panicked: {message}")]
    Panicked {
        /// The sink's name.
        sink: &'static str,
        /// The panic's message.
        message: String,
    },
}

fn run(
    mut sink: Box<dyn Sink>,
    rx: Receiver<Msg>,
    stats: Arc<SinkStats>,
    watermark: tokio::sync::watch::Sender<u64>,
    reclaim: Reclaimer<Batch>,
) {
    // The last id handed in; published once the sink has caught up to it.
    let mut handed = 0u64;
    let name = sink.name();
    let interval = sink.tick_interval();
    let doze = sink.doze();
    // Set after a small batch: before waiting on the channel again, the
    // thread dozes (see `Sink::doze`) unless more is already there.
    let mut dozing = false;
    let mut last_tick = Instant::now();
    let mut last_warn: Option<Instant> = None;
    let mut report = |what: &str, err: super::SinkError, stats: &SinkStats| {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        let text = err.to_string();
        // One warning a second at most: a full disk must not flood the log.
        if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(sink = name, "{what}: {text}");
            last_warn = Some(Instant::now());
        }
        *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    };
    loop {
        let msg = match (dozing, doze) {
            (true, Some(nap)) => match rx.try_recv() {
                Ok(msg) => Ok(msg),
                Err(_) => {
                    // Whatever arrives meanwhile is queued without a wake
                    // (a disconnected channel is seen by the next wait).
                    std::thread::sleep(nap);
                    rx.recv_timeout(interval.saturating_sub(last_tick.elapsed()))
                }
            },
            _ => rx.recv_timeout(interval.saturating_sub(last_tick.elapsed())),
        };
        dozing = false;
        let mut stop_ack = None;
        match msg {
            Ok(Msg::Batch(batch)) => {
                dozing = batch.len() < SMALL_BATCH;
                stats
                    .events
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if let Some(last) = batch.last() {
                    handed = last.event.id;
                }
                match sink.write_batch(&batch) {
                    Ok(()) if sink.caught_up() => clear_error(&stats),
                    Ok(()) => {}
                    Err(e) => report("write failed", e, &stats),
                }
                // Only a batch's last holder has anything to free (two
                // sinks finishing at once may both pass it by: the later
                // one then frees it in place).
                if batch.len() >= RECLAIM_MIN_EVENTS && Arc::strong_count(&batch) == 1 {
                    reclaim.give(batch);
                }
            }
            Ok(Msg::Flush(ack)) => {
                match sink.flush() {
                    Ok(()) if sink.caught_up() => clear_error(&stats),
                    Ok(()) => {}
                    Err(e) => report("flush failed", e, &stats),
                }
                let _ = ack.send(());
            }
            Ok(Msg::Stop(ack)) => stop_ack = Some(ack),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = sink.flush();
                return;
            }
        }
        if let Some(ack) = stop_ack {
            if let Err(e) = sink.flush() {
                report("final flush failed", e, &stats);
            }
            stats
                .dropped_by_sink
                .store(sink.dropped(), Ordering::Relaxed);
            if sink.caught_up() && *watermark.borrow() < handed {
                watermark.send_replace(handed);
            }
            let _ = ack.send(());
            return;
        }
        if last_tick.elapsed() >= interval {
            match sink.tick() {
                // Recovered without waiting for an event: the backlog is
                // written.
                Ok(()) if sink.caught_up() => clear_error(&stats),
                Ok(()) => {}
                Err(e) => report("retry failed", e, &stats),
            }
            last_tick = Instant::now();
        }
        stats
            .dropped_by_sink
            .store(sink.dropped(), Ordering::Relaxed);
        if sink.caught_up() && *watermark.borrow() < handed {
            watermark.send_replace(handed);
        }
    }
}

fn clear_error(stats: &SinkStats) {
    let mut last = stats.last_error.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some() {
        *last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    impl Sink for Nothing {
        fn name(&self) -> &'static str {
            "nothing"
        }
        fn write_batch(&mut self, _: &[SharedRecord]) -> Result<(), super::super::SinkError> {
            Ok(())
        }
        fn flush(&mut self) -> Result<(), super::super::SinkError> {
            Ok(())
        }
    }

    #[test]
    fn a_thread_that_cannot_be_created_is_an_error_naming_it() {
        // A petabyte of stack: more than the address space, so the system
        // refuses the thread.
        let builder = std::thread::Builder::new().stack_size(1 << 50);
        let err = Parked::<()>::spawn(builder, SinkHandle::thread_name(&Nothing))
            .err()
            .expect("the thread is refused");
        assert_eq!(err.thread, "sink-nothing");
        assert!(
            err.to_string()
                .starts_with("cannot start the thread sink-nothing: "),
            "{err}"
        );
    }

    #[test]
    fn a_sink_named_with_a_nul_still_gets_a_thread() {
        let (reclaim, _thread) = Reclaimer::spawn(1).unwrap();
        struct Odd;
        impl Sink for Odd {
            fn name(&self) -> &'static str {
                "odd\0name"
            }
            fn write_batch(&mut self, _: &[SharedRecord]) -> Result<(), super::super::SinkError> {
                Ok(())
            }
            fn flush(&mut self) -> Result<(), super::super::SinkError> {
                Ok(())
            }
        }
        let handle = SinkHandle::spawn(Box::new(Odd), 1, WhenFull::Block, &reclaim).unwrap();
        handle.stop(Duration::from_secs(5)).unwrap();
    }

    /// Dozes after small batches and records every id it is given.
    struct Dozer(Arc<Mutex<Vec<u64>>>);
    impl Sink for Dozer {
        fn name(&self) -> &'static str {
            "dozer"
        }
        fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), super::super::SinkError> {
            let mut seen = self.0.lock().unwrap();
            seen.extend(batch.iter().map(|r| r.event.id));
            Ok(())
        }
        fn flush(&mut self) -> Result<(), super::super::SinkError> {
            Ok(())
        }
        fn doze(&self) -> Option<Duration> {
            Some(SMALL_BATCH_DOZE)
        }
    }

    fn one(id: u64) -> Batch {
        let ev = crate::event::Event {
            id,
            event_type: "note".into(),
            timestamp: 1.0,
            event_id: None,
            payload: Default::default(),
        };
        Arc::from(vec![Arc::new(crate::event::Record::new(ev))])
    }

    /// A dozing sink misses nothing: more one-event batches than its channel
    /// holds, sent without pause, all arrive in order (the sender waits for
    /// room rather than dropping), and a flush or stop right after them
    /// returns only once the sink has taken them all.
    #[test]
    fn a_dozing_sink_gets_every_small_batch_in_order() {
        let (reclaim, _thread) = Reclaimer::spawn(1).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handle =
            SinkHandle::spawn(Box::new(Dozer(seen.clone())), 4, WhenFull::Block, &reclaim).unwrap();
        for id in 1..=100 {
            handle.send(&one(id));
        }
        assert!(handle.flush(Duration::from_secs(10)));
        assert_eq!(*seen.lock().unwrap(), (1..=100).collect::<Vec<u64>>());
        for id in 101..=150 {
            handle.send(&one(id));
        }
        handle.stop(Duration::from_secs(10)).unwrap();
        assert_eq!(*seen.lock().unwrap(), (1..=150).collect::<Vec<u64>>());
    }

    /// Panics at its first batch.
    struct Boom;
    impl Sink for Boom {
        fn name(&self) -> &'static str {
            "boom"
        }
        fn write_batch(&mut self, _: &[SharedRecord]) -> Result<(), super::super::SinkError> {
            panic!("boom at write");
        }
        fn flush(&mut self) -> Result<(), super::super::SinkError> {
            Ok(())
        }
    }

    #[test]
    fn stop_reports_a_sink_that_panicked() {
        let (reclaim, _thread) = Reclaimer::spawn(1).unwrap();
        let handle = SinkHandle::spawn(Box::new(Boom), 1, WhenFull::Block, &reclaim).unwrap();
        let batch: Batch = Arc::from(Vec::<SharedRecord>::new());
        handle.send(&batch);
        match handle.stop(Duration::from_secs(5)) {
            Err(SinkStopError::Panicked { sink, message }) => {
                assert_eq!(sink, "boom");
                assert_eq!(message, "boom at write");
            }
            other => panic!("expected a panic report, got {other:?}"),
        }
    }

    /// Regression: batches sent to a sink whose thread had panicked were
    /// dropped without a count (`let _ = tx.send(..)`).
    #[test]
    fn batches_for_a_sink_that_panicked_are_counted_as_dropped() {
        let records = |n: usize| -> Batch {
            (0..n)
                .map(|i| {
                    let ev = crate::event::Event {
                        id: i as u64 + 1,
                        event_type: "note".into(),
                        timestamp: 1.0,
                        event_id: None,
                        payload: Default::default(),
                    };
                    Arc::new(crate::event::Record::new(ev))
                })
                .collect()
        };
        for policy in [WhenFull::Block, WhenFull::DropNewest] {
            let (reclaim, _thread) = Reclaimer::spawn(1).unwrap();
            let handle = SinkHandle::spawn(Box::new(Boom), 1, policy, &reclaim).unwrap();
            handle.send(&records(1));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !handle.thread.as_ref().unwrap().is_finished() {
                assert!(Instant::now() < deadline, "the sink thread did not panic");
                std::thread::yield_now();
            }
            handle.send(&records(3));
            handle.send(&records(2));
            let stats = handle.stats().clone();
            assert_eq!(stats.dropped_dead.load(Ordering::Relaxed), 5, "{policy:?}");
            let error = stats.last_error.lock().unwrap().clone().unwrap_or_default();
            assert!(error.contains("5 events not written"), "{error}");
            assert!(matches!(
                handle.stop(Duration::from_secs(5)),
                Err(SinkStopError::Panicked { .. })
            ));
        }
    }
}
