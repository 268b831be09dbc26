//! Start-up wiring: reading the log back, handing the sinks to their
//! threads, starting the dispatcher; and stopping it all.

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::event::NewEvent;
use crate::pipeline::dedup::DedupWindow;
use crate::pipeline::dispatcher::Dispatcher;
use crate::pipeline::{recovery, Command};
use crate::sinks::alerts::AlertsSink;
use crate::sinks::jsonl::{JsonlSink, LogIndex};
use crate::sinks::metrics::MetricsSink;
use crate::sinks::notify::NotifySink;
use crate::sinks::reclaim::Reclaimer;
use crate::sinks::runner::{panic_message, Batch, Parked, SinkHandle, SpawnError, WhenFull};
use crate::sinks::Sink;

use super::{metrics_engine, Emitter, EmitterError, Parts, StartReport, State};

/// What `start` read from the log, before anything is handed to a thread.
struct ReadBack {
    report: StartReport,
    dedup: DedupWindow,
    next_id: u64,
    ids: Option<crate::pipeline::ids::IdReservation>,
    log: Option<OpenLog>,
    /// The last events read back, for taps that want them at start.
    recent: std::collections::VecDeque<crate::event::Event>,
}

/// Every thread a start needs, made before anything is handed to one
/// (with the sinks `start` makes itself).
struct Threads {
    reclaim: Reclaimer<Batch>,
    reclaim_thread: JoinHandle<()>,
    log: Option<Parked<()>>,
    metrics: (Parked<()>, MetricsSink),
    console: Option<Parked<()>>,
    alerts: Option<AlertThreads>,
    /// One per extra sink, in order.
    extra: Vec<Parked<()>>,
    dispatcher: Parked<Vec<String>>,
}

/// The threads of the alert rules and budgets.
struct AlertThreads {
    /// Feeds what the rules produce back into the queue.
    feedback: (Parked<()>, std::sync::mpsc::Receiver<NewEvent>),
    alerts: (Parked<()>, AlertsSink),
    notify: (Parked<()>, NotifySink),
}

/// The opened log, ready for its thread.
struct OpenLog {
    sink: JsonlSink,
    backlog: Arc<crate::sinks::jsonl::Backlog>,
    index: Arc<LogIndex>,
    /// Whether ingest waits for the log's watermark.
    durable: bool,
    /// The last id found in the log.
    last_id: u64,
}

impl Emitter {
    /// Reads the log back (last id, dedup window, metrics), opens the sinks
    /// and starts the dispatcher.
    ///
    /// A start that fails (the log cannot be opened or read, a thread
    /// cannot be created) leaves the emitter as built, so it can be started
    /// again: every thread is created before anything is handed to one. The
    /// metrics read so far are cleared, and so is what taps built from the
    /// history ([`crate::pipeline::Tap::on_recovery_abandoned`]).
    pub fn start(&self) -> Result<StartReport, EmitterError> {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Built(parts) = &mut *state else {
            return Err(EmitterError::AlreadyStarted);
        };
        let prepared = self
            .read_back(parts)
            .and_then(|read| Ok((self.make_threads(parts, &read)?, read)));
        let (threads, read) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                // The retry reads the whole history again.
                *self.inner.engine.lock().unwrap_or_else(|e| e.into_inner()) =
                    metrics_engine(&self.inner.config);
                for tap in parts.taps.iter_mut() {
                    tap.on_recovery_abandoned();
                }
                return Err(e);
            }
        };
        let parts = match std::mem::replace(&mut *state, State::Stopped) {
            State::Built(parts) => parts,
            _ => unreachable!("the state was Built above, under the same lock"),
        };
        let (thread, report) = self.launch(*parts, read, threads);
        *state = State::Running(thread);
        Ok(report)
    }

    /// Creates every thread the pipeline needs (and the sinks made here
    /// rather than given), each waiting for its work.
    fn make_threads(&self, parts: &Parts, read: &ReadBack) -> Result<Threads, EmitterError> {
        fn park<T: Send + 'static>(name: String) -> Result<Parked<T>, SpawnError> {
            Parked::spawn(std::thread::Builder::new(), name)
        }
        let for_sink = |sink: &dyn Sink| park::<()>(SinkHandle::thread_name(sink));
        // At most 32 spent batches wait to be freed (~150 MB of payloads
        // at the largest batches); past that, sinks free them in place.
        let (reclaim, reclaim_thread) = Reclaimer::spawn(32)?;
        let log = read.log.as_ref().map(|l| for_sink(&l.sink)).transpose()?;
        let mut metrics_sink =
            MetricsSink::new(self.inner.engine.clone()).with_clock(self.inner.clock.clone());
        if let Some(inc) = &parts.increments {
            metrics_sink = metrics_sink.with_increments(inc.clone());
            if let Some(only) = &parts.increment_filter {
                metrics_sink = metrics_sink.with_increment_filter(only.clone());
            }
        }
        let metrics = (for_sink(&metrics_sink)?, metrics_sink);
        let console = parts.console.as_ref().map(|c| for_sink(c)).transpose()?;
        let has_alerts = {
            let a = self.inner.alerts.lock().unwrap_or_else(|e| e.into_inner());
            !a.engine.rules().is_empty() || a.budgets.budgets().next().is_some()
        };
        let alerts = if has_alerts {
            // What rules and budgets produce comes back in through the
            // queue, from a thread of its own: the alerts sink never waits
            // on the pipeline that feeds it.
            let (fb_tx, fb_rx) = std::sync::mpsc::channel::<NewEvent>();
            let alerts_sink = AlertsSink::new(
                self.inner.alerts.clone(),
                self.inner.engine.clone(),
                self.inner.stats.clone(),
                self.inner.clock.clone(),
                fb_tx,
            );
            let mut notify_sink =
                NotifySink::new(self.inner.config.clone(), self.inner.notify_stats.clone());
            if let Some(gate) = &parts.alerts_gate {
                notify_sink = notify_sink.with_gate(gate.clone());
            }
            Some(AlertThreads {
                feedback: (park("agentpulse-feedback".into())?, fb_rx),
                alerts: (for_sink(&alerts_sink)?, alerts_sink),
                notify: (for_sink(&notify_sink)?, notify_sink),
            })
        } else {
            None
        };
        let extra = parts
            .extra_sinks
            .iter()
            .map(|(s, _)| for_sink(&**s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Threads {
            reclaim,
            reclaim_thread,
            log,
            metrics,
            console,
            alerts,
            extra,
            dispatcher: park("agentpulse-dispatch".into())?,
        })
    }

    /// The part of `start` that can fail without using anything up: opens
    /// the log and reads it back into the metrics, the dedup window and
    /// the taps.
    fn read_back(&self, parts: &mut Parts) -> Result<ReadBack, EmitterError> {
        let keep_recent = parts
            .taps
            .iter()
            .map(|t| t.replay_capacity())
            .max()
            .unwrap_or(0);
        let mut read = ReadBack {
            report: StartReport {
                epoch: crate::pipeline::epoch::fresh(),
                ..StartReport::default()
            },
            dedup: DedupWindow::new(parts.dedup_window),
            next_id: 1,
            ids: None,
            log: None,
            recent: std::collections::VecDeque::new(),
        };
        if let Some(cluster) = &parts.cluster {
            read.report.epoch = cluster.epoch.clone();
        }
        let Some(jcfg) = parts.jsonl.clone() else {
            return Ok(read);
        };
        // Open first: it repairs a torn last line before we read back.
        let (sink, open) = JsonlSink::open(jcfg.clone(), self.inner.clock.clone())?;
        let backlog = Arc::new(crate::sinks::jsonl::Backlog::new(jcfg.max_pending_bytes));
        let mut sink = sink.with_backlog(backlog.clone());
        read.report.torn_line_moved_to = open.torn.map(|t| t.moved_to);
        let mut engine = self.inner.engine.lock().unwrap_or_else(|e| e.into_inner());
        // The window follows the clock, not the log's newest timestamp:
        // an event stamped ahead in the log must not prune what follows.
        engine.advance_clock(self.inner.clock.now());
        let taps = &mut parts.taps;
        let recent = &mut read.recent;
        let rec = recovery::recover(
            &jcfg.dir,
            &jcfg.file_name,
            parts.replay_days,
            self.inner.clock.now(),
            &mut read.dedup,
            |event| {
                engine.observe(event);
                for tap in taps.iter_mut() {
                    tap.on_recovered(event);
                }
                if keep_recent > 0 {
                    if recent.len() == keep_recent {
                        recent.pop_front();
                    }
                    recent.push_back(event.clone());
                }
            },
        )?;
        drop(engine);
        if let Some(cluster) = &parts.cluster {
            let found = crate::pipeline::epoch::stored(&jcfg.dir, &jcfg.file_name);
            match found {
                Some(found) if rec.last_id > 0 && found != cluster.epoch => {
                    return Err(EmitterError::ForeignHistory {
                        dir: jcfg.dir.clone(),
                        found,
                        expected: cluster.epoch.clone(),
                    })
                }
                _ => crate::pipeline::epoch::store(&jcfg.dir, &jcfg.file_name, &cluster.epoch)?,
            }
            read.report.epoch = cluster.epoch.clone();
            // The cluster gives the ids: the tail goes on from the last one
            // logged here, and no id is reserved locally.
            read.next_id = rec.last_id + 1;
        } else {
            let reservation = crate::pipeline::ids::IdReservation::load(&jcfg.dir, &jcfg.file_name);
            read.report.epoch = crate::pipeline::epoch::load_or_create(
                &jcfg.dir,
                &jcfg.file_name,
                rec.last_id == 0,
            )?;
            // Past the log and past any ids handed out before a crash.
            read.next_id = rec.last_id.max(reservation.reserved()) + 1;
            read.ids = Some(reservation);
        }
        let index = LogIndex::open(&jcfg.dir, &jcfg.file_name, rec.last_id);
        sink.set_index(index.clone());
        read.report.replayed = rec.replayed;
        read.report.bad_lines = rec.bad_lines;
        read.log = Some(OpenLog {
            sink,
            backlog,
            index,
            durable: jcfg.durability != crate::sinks::jsonl::Durability::None,
            last_id: rec.last_id,
        });
        Ok(read)
    }

    /// The rest of `start`: hands the sinks to their threads and starts
    /// the dispatcher. Nothing can fail here.
    fn launch(
        &self,
        parts: Parts,
        read: ReadBack,
        threads: Threads,
    ) -> (JoinHandle<Option<Vec<String>>>, StartReport) {
        let Parts {
            rx,
            console,
            extra_sinks,
            mut taps,
            cluster,
            alerts_gate,
            ..
        } = parts;
        let ReadBack {
            mut report,
            dedup,
            next_id,
            ids,
            log,
            recent,
        } = read;
        let Threads {
            reclaim,
            reclaim_thread,
            log: log_thread,
            metrics,
            console: console_thread,
            alerts,
            extra,
            dispatcher: dispatcher_thread,
        } = threads;
        let mut sinks = Vec::new();
        let mut backlog = None;
        if let (Some(log), Some(thread)) = (log, log_thread) {
            // Set once: a start that got this far does not run again.
            let _already_set = self.inner.backlog.set(log.backlog.clone());
            let _already_set = self.inner.log_index.set(log.index);
            backlog = Some(log.backlog);
            self.inner
                .recovered_last_id
                .store(log.last_id, std::sync::atomic::Ordering::Relaxed);
            let handle =
                SinkHandle::start(thread, Box::new(log.sink), 64, WhenFull::Block, &reclaim);
            // A cluster member acknowledges once the cluster's Redis holds
            // the events; its log is fed from the cluster's stream.
            if log.durable && cluster.is_none() {
                *self.inner.durable.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(handle.watermark());
            }
            sinks.push(handle);
        }
        let (thread, metrics_sink) = metrics;
        sinks.push(SinkHandle::start(
            thread,
            Box::new(metrics_sink),
            64,
            WhenFull::Block,
            &reclaim,
        ));
        if let (Some(c), Some(thread)) = (console, console_thread) {
            sinks.push(SinkHandle::start(
                thread,
                Box::new(c),
                16,
                WhenFull::DropNewest,
                &reclaim,
            ));
        }
        if let Some(a) = alerts {
            let (thread, fb_rx) = a.feedback;
            let queue = self.inner.tx.clone();
            let now = self.inner.clock.clone();
            let gate = alerts_gate;
            // Not joined: it ends when the alerts sink drops its sender.
            let _feedback = thread.run(move || {
                for mut ev in fb_rx {
                    if gate.as_ref().is_some_and(|g| !g()) {
                        // Another hub of the cluster emits these.
                        continue;
                    }
                    ev.timestamp.get_or_insert_with(|| now.now());
                    if queue.blocking_send(Command::One(ev)).is_err() {
                        break;
                    }
                }
            });
            let (thread, sink) = a.alerts;
            sinks.push(SinkHandle::start(
                thread,
                Box::new(sink),
                64,
                WhenFull::Block,
                &reclaim,
            ));
            let (thread, sink) = a.notify;
            sinks.push(SinkHandle::start(
                thread,
                Box::new(sink),
                64,
                WhenFull::DropNewest,
                &reclaim,
            ));
        }
        for ((s, when_full), thread) in extra_sinks.into_iter().zip(extra) {
            sinks.push(SinkHandle::start(thread, s, 64, when_full, &reclaim));
        }
        *self
            .inner
            .sink_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = sinks
            .iter()
            .map(|s| (s.name(), s.stats().clone()))
            .collect();
        report.next_id = next_id;
        let recent: Vec<crate::event::SharedRecord> = recent
            .into_iter()
            .map(|e| Arc::new(crate::event::Record::new(e)))
            .collect();
        for tap in &mut taps {
            let want = tap.replay_capacity().min(recent.len());
            tap.on_start(&recent[recent.len() - want..], next_id - 1);
        }
        self.inner
            .stats
            .last_id
            .store(next_id - 1, std::sync::atomic::Ordering::Relaxed);
        // The sinks hold the only senders now.
        drop(reclaim);
        let dispatcher = Dispatcher {
            next_id,
            dedup,
            sinks,
            taps,
            stats: self.inner.stats.clone(),
            clock: self.inner.clock.clone(),
            ids,
            lines: crate::event::LineWriter::new(),
            backlog,
            reclaim_thread,
            outbox: cluster.map(|c| c.outbox),
        };
        (dispatcher_thread.run(move || dispatcher.run(rx)), report)
    }

    /// Stops the pipeline: everything accepted before is written and every
    /// sink flushed before this returns. Later emits fail with `Stopped`.
    /// Fails with [`EmitterError::Panicked`] when the dispatcher or a sink's
    /// thread panicked (the pipeline is stopped all the same).
    pub fn stop(&self) -> Result<(), EmitterError> {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Running(thread) = std::mem::replace(&mut *state, State::Stopped) else {
            return Ok(());
        };
        if self.send_blocking(Command::Stop).is_err() {
            // The dispatcher has already gone: its join below says why.
            tracing::debug!("the dispatcher had ended before the stop");
        }
        match thread.join() {
            // `None`: never given its work, which `start` always gives.
            Ok(None) => Ok(()),
            Ok(Some(panicked)) if panicked.is_empty() => Ok(()),
            Ok(Some(panicked)) => Err(EmitterError::Panicked(panicked)),
            Err(panic) => Err(EmitterError::Panicked(vec![format!(
                "the thread agentpulse-dispatch panicked: {}",
                panic_message(&*panic)
            )])),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::sinks::runner::REFUSE_SPAWN;
    use crate::sinks::SinkError;

    /// Counts the events it is given.
    struct Counting(Arc<AtomicU64>);

    impl Sink for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn write_batch(&mut self, batch: &[crate::event::SharedRecord]) -> Result<(), SinkError> {
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    /// Counts what it rebuilt from history (and forgets on a failed start).
    struct History(Arc<AtomicU64>);

    impl crate::pipeline::Tap for History {
        fn on_recovered(&mut self, _: &crate::event::Event) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn on_recovery_abandoned(&mut self) {
            self.0.store(0, Ordering::Relaxed);
        }
        fn on_batch(&mut self, _: &crate::sinks::runner::Batch) {}
    }

    #[test]
    fn a_start_that_cannot_create_a_thread_can_be_retried() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A history to read back: its metrics must count once.
            let first = Emitter::builder()
                .log_dir(dir.path())
                .quiet()
                .build()
                .unwrap();
            first.start().unwrap();
            first
                .emit(
                    "agent_started",
                    serde_json::json!({"agent": "a", "task_id": "t",
                "model": "m", "tools": []}),
                )
                .unwrap();
            first.stop().unwrap();
        }
        let seen = Arc::new(AtomicU64::new(0));
        let history = Arc::new(AtomicU64::new(0));
        let e = Emitter::builder()
            .log_dir(dir.path())
            .quiet()
            .sink(Box::new(Counting(seen.clone())), WhenFull::Block)
            .tap(Box::new(History(history.clone())))
            .build()
            .unwrap();
        e.emit("note", serde_json::json!({"n": 1})).unwrap();
        for refused in [
            "sink-counting",
            "agentpulse-dispatch",
            "sink-jsonl",
            "agentpulse-free",
        ] {
            REFUSE_SPAWN.with(|r| *r.borrow_mut() = Some(refused.to_owned()));
            match e.start() {
                Err(EmitterError::Spawn(err)) => assert_eq!(err.thread, refused),
                other => panic!("{refused}: expected a spawn error, got {other:?}"),
            }
        }
        REFUSE_SPAWN.with(|r| *r.borrow_mut() = None);
        let report = e.start().unwrap();
        assert_eq!((report.next_id, report.replayed), (2, 1));
        // Read back once, not once per attempt: by the metrics and by the
        // taps (regression: a tap kept what each failed start gave it).
        assert_eq!(e.get_metrics().kpis.agents["a"].events, 1);
        assert_eq!(history.load(Ordering::Relaxed), 1);
        e.stop().unwrap();
        // Nothing was used up by the refused starts: the sink given to the
        // builder got the event emitted before them.
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }
}
