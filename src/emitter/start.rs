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
use crate::sinks::runner::{panic_message, spawn_thread, SinkHandle, SpawnError, WhenFull};

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
    /// A start that fails while opening or reading the log leaves the
    /// emitter as built, so it can be started again (the metrics read so far
    /// are cleared; taps may see part of the history again through
    /// [`crate::pipeline::Tap::on_recovered`]). A thread that cannot be created
    /// ([`EmitterError::Spawn`]) is met after the sinks were handed over:
    /// the emitter is then stopped for good.
    pub fn start(&self) -> Result<StartReport, EmitterError> {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Built(parts) = &mut *state else {
            return Err(EmitterError::AlreadyStarted);
        };
        let read = match self.read_back(parts) {
            Ok(read) => read,
            Err(e) => {
                // The retry reads the whole history again.
                *self.inner.engine.lock().unwrap_or_else(|e| e.into_inner()) =
                    metrics_engine(&self.inner.config);
                return Err(e);
            }
        };
        let parts = match std::mem::replace(&mut *state, State::Stopped) {
            State::Built(parts) => parts,
            _ => unreachable!("the state was Built above, under the same lock"),
        };
        let (thread, report) = self.launch(*parts, read)?;
        *state = State::Running(thread);
        Ok(report)
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
        let reservation = crate::pipeline::ids::IdReservation::load(&jcfg.dir, &jcfg.file_name);
        read.report.epoch =
            crate::pipeline::epoch::load_or_create(&jcfg.dir, &jcfg.file_name, rec.last_id == 0)?;
        let index = LogIndex::open(&jcfg.dir, &jcfg.file_name, rec.last_id);
        sink.set_index(index.clone());
        // Past the log and past any ids handed out before a crash.
        read.next_id = rec.last_id.max(reservation.reserved()) + 1;
        read.ids = Some(reservation);
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
    /// the dispatcher. Only thread creation can fail here.
    fn launch(
        &self,
        parts: Parts,
        read: ReadBack,
    ) -> Result<(JoinHandle<Vec<String>>, StartReport), EmitterError> {
        let Parts {
            rx,
            console,
            extra_sinks,
            mut taps,
            increments,
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
        // At most 32 spent batches wait to be freed (~150 MB of payloads
        // at the largest batches); past that, sinks free them in place.
        let (reclaim, reclaim_thread) = Reclaimer::spawn(32).map_err(|source| SpawnError {
            thread: "agentpulse-free".into(),
            source,
        })?;
        let mut sinks = Vec::new();
        let mut backlog = None;
        if let Some(log) = log {
            // Set once: a start that got this far does not run again.
            let _already_set = self.inner.backlog.set(log.backlog.clone());
            let _already_set = self.inner.log_index.set(log.index);
            backlog = Some(log.backlog);
            self.inner
                .recovered_last_id
                .store(log.last_id, std::sync::atomic::Ordering::Relaxed);
            let handle = SinkHandle::spawn(Box::new(log.sink), 64, WhenFull::Block, &reclaim)?;
            if log.durable {
                *self.inner.durable.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(handle.watermark());
            }
            sinks.push(handle);
        }
        let mut metrics_sink =
            MetricsSink::new(self.inner.engine.clone()).with_clock(self.inner.clock.clone());
        if let Some(inc) = increments {
            metrics_sink = metrics_sink.with_increments(inc);
        }
        sinks.push(SinkHandle::spawn(
            Box::new(metrics_sink),
            64,
            WhenFull::Block,
            &reclaim,
        )?);
        if let Some(c) = console {
            sinks.push(SinkHandle::spawn(
                Box::new(c),
                16,
                WhenFull::DropNewest,
                &reclaim,
            )?);
        }
        let has_alerts = {
            let a = self.inner.alerts.lock().unwrap_or_else(|e| e.into_inner());
            !a.engine.rules().is_empty() || a.budgets.budgets().next().is_some()
        };
        if has_alerts {
            // What rules and budgets produce comes back in through the
            // queue, from a thread of its own: the alerts sink never waits
            // on the pipeline that feeds it.
            let (fb_tx, fb_rx) = std::sync::mpsc::channel::<NewEvent>();
            let queue = self.inner.tx.clone();
            let now = self.inner.clock.clone();
            spawn_thread(
                std::thread::Builder::new(),
                "agentpulse-feedback".into(),
                move || {
                    for mut ev in fb_rx {
                        ev.timestamp.get_or_insert_with(|| now.now());
                        if queue.blocking_send(Command::One(ev)).is_err() {
                            break;
                        }
                    }
                },
            )?;
            sinks.push(SinkHandle::spawn(
                Box::new(AlertsSink::new(
                    self.inner.alerts.clone(),
                    self.inner.engine.clone(),
                    self.inner.stats.clone(),
                    self.inner.clock.clone(),
                    fb_tx,
                )),
                64,
                WhenFull::Block,
                &reclaim,
            )?);
            sinks.push(SinkHandle::spawn(
                Box::new(NotifySink::new(
                    self.inner.config.clone(),
                    self.inner.notify_stats.clone(),
                )),
                64,
                WhenFull::DropNewest,
                &reclaim,
            )?);
        }
        for (s, when_full) in extra_sinks {
            sinks.push(SinkHandle::spawn(s, 64, when_full, &reclaim)?);
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
        };
        let thread = spawn_thread(
            std::thread::Builder::new(),
            "agentpulse-dispatch".into(),
            move || dispatcher.run(rx),
        )?;
        Ok((thread, report))
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
            Ok(panicked) if panicked.is_empty() => Ok(()),
            Ok(panicked) => Err(EmitterError::Panicked(panicked)),
            Err(panic) => Err(EmitterError::Panicked(vec![format!(
                "the thread agentpulse-dispatch panicked: {}",
                panic_message(&*panic)
            )])),
        }
    }
}
