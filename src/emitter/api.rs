//! The emit and ingest API, and the readings (metrics, counters).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc::error::TrySendError;

use crate::config::Config;
use crate::event::NewEvent;
use crate::pipeline::{Command, Outcome, QueuePolicy, StatsSnapshot};
use crate::schema::{Schema, ValidationError};
use crate::sinks::alerts::SharedAlerts;
use crate::sinks::jsonl::LogIndex;
use crate::sinks::metrics::SharedEngine;
use crate::sinks::notify::NotifyStats;

use super::{EmitError, Emitter, Metrics, SinkReport, DURABLE_SLICE, MAX_FUTURE_SECS};

impl Emitter {
    /// Emits an event of `event_type` with `payload` (a JSON object), stamped
    /// now. Never waits under the default policy.
    pub fn emit(&self, event_type: &str, payload: Value) -> Result<(), EmitError> {
        let event_type = self.inner.schema.intern(event_type);
        let payload = match payload {
            Value::Object(map) => map,
            other => {
                self.count_rejected();
                return Err(ValidationError::new(
                    &*event_type,
                    "payload",
                    format!("expected an object, got {}", crate::event::kind_of(&other)),
                )
                .into());
            }
        };
        self.emit_event(NewEvent::new(event_type, payload))
    }

    /// Schema validation plus the checks that need the clock.
    fn check(&self, event: &NewEvent, now: f64) -> Result<(), ValidationError> {
        self.inner.schema.validate(event)?;
        if let Some(ts) = event.timestamp {
            if ts > now + MAX_FUTURE_SECS {
                return Err(ValidationError::new(
                    &*event.event_type,
                    "timestamp",
                    format!(
                        "{ts} is more than a day ahead of the hub's clock ({now:.0}); check the sender's clock"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Why new events are refused now, if they are: the log cannot be
    /// written and enough already waits for it.
    fn refusal(&self) -> Option<EmitError> {
        Some(self.inner.backlog.get()?.refusal()?.into())
    }

    /// Refuses one in-process event (counted) while the log cannot take it.
    fn refuse_if_log_full(&self) -> Result<(), EmitError> {
        match self.refusal() {
            Some(refused) => {
                self.inner
                    .stats
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(refused)
            }
            None => Ok(()),
        }
    }

    /// The log's backlog, when there is a log (for `/health`).
    pub fn log_backlog(&self) -> Option<&Arc<crate::sinks::jsonl::Backlog>> {
        self.inner.backlog.get()
    }

    /// Emits a prepared event (with its own timestamp or dedup key).
    pub fn emit_event(&self, mut event: NewEvent) -> Result<(), EmitError> {
        let now = self.inner.clock.now();
        if let Err(e) = self.check(&event, now) {
            self.count_rejected();
            return Err(e.into());
        }
        self.refuse_if_log_full()?;
        if event.timestamp.is_none() {
            event.timestamp = Some(now);
        }
        self.enqueue(Command::One(event))
    }

    /// Emits an event, waiting for room in the queue whatever the policy:
    /// for async producers that want backpressure.
    pub async fn emit_async(&self, mut event: NewEvent) -> Result<(), EmitError> {
        let now = self.inner.clock.now();
        if let Err(e) = self.check(&event, now) {
            self.count_rejected();
            return Err(e.into());
        }
        if event.timestamp.is_none() {
            event.timestamp = Some(now);
        }
        self.refuse_if_log_full()?;
        let ty = event.event_type.to_string();
        self.inner
            .tx
            .send(Command::One(event))
            .await
            .map_err(|_| self.count_dropped_stopped(ty))
    }

    /// Takes a batch of events (the ingest paths): validates each, queues the
    /// valid ones (waiting for room), and answers, per input, its outcome or
    /// its validation error, once the accepted ones are with the sinks.
    /// Invalid events leave no trace.
    pub async fn ingest(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Result<Outcome, ValidationError>>, EmitError> {
        self.ingest_with(events, false).await
    }

    /// [`Emitter::ingest`], but under the drop policy a full queue refuses
    /// the batch (`EmitError::QueueFull`, the events counted as dropped)
    /// instead of waiting: for senders that retry (OTLP exporters get 429).
    pub async fn ingest_or_refuse(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Result<Outcome, ValidationError>>, EmitError> {
        self.ingest_with(events, self.inner.policy == QueuePolicy::DropNewest)
            .await
    }

    async fn ingest_with(
        &self,
        events: Vec<NewEvent>,
        refuse_when_full: bool,
    ) -> Result<Vec<Result<Outcome, ValidationError>>, EmitError> {
        let (valid, mut results) = self.check_batch(events);
        if valid.is_empty() {
            return Ok(merge_outcomes(&mut results, Vec::new()));
        }
        // One wake-up of this task per answer: the log's watermark, or the
        // dispatcher when the watermark will not (see `reply`).
        let recovered = self
            .inner
            .recovered_last_id
            .load(std::sync::atomic::Ordering::Relaxed);
        let (waiter, reply) = super::reply::Waiter::new(self.durable_watermark(), recovered);
        let n = valid.len() as u64;
        let dropped = |e: EmitError| {
            self.inner
                .stats
                .dropped
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            e
        };
        let cmd = Command::Many(valid, Some(reply));
        if refuse_when_full {
            self.inner.tx.try_send(cmd).map_err(|e| {
                dropped(match e {
                    TrySendError::Full(_) => EmitError::QueueFull {
                        event_type: "batch".into(),
                    },
                    TrySendError::Closed(_) => EmitError::Stopped {
                        event_type: "batch".into(),
                    },
                })
            })?;
        } else {
            self.inner.tx.send(cmd).await.map_err(|_| {
                dropped(EmitError::Stopped {
                    event_type: "batch".into(),
                })
            })?;
        }
        let outcomes = waiter
            .answer()
            .await
            .ok_or_else(|| EmitError::Stopped {
                event_type: "batch".into(),
            })?
            .map_err(EmitError::from)?;
        let highest = outcomes.iter().map(|o| o.id()).max().unwrap_or(0);
        self.wait_durable(highest).await?;
        // Written up to `highest`, but perhaps not every one of them: the
        // log may have had to drop some while it could not write.
        if let Some(b) = self.inner.backlog.get().filter(|_| !self.inner.cluster) {
            if b.any_lost(outcomes.iter().map(|o| o.id())) {
                return Err(EmitError::NotStored { id: highest });
            }
        }
        Ok(merge_outcomes(&mut results, outcomes))
    }

    /// Waits until the log holds every id up to `id` (per the durability
    /// setting), at most 10 s. Without a log, or with durability `none`,
    /// returns at once.
    pub async fn wait_durable(&self, id: u64) -> Result<(), EmitError> {
        let Some(mut rx) = self.durable_watermark() else {
            return Ok(());
        };
        // A duplicate of an event logged before this start is on disk.
        if id
            <= self
                .inner
                .recovered_last_id
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        // In slices, so that a log that fails is answered at once rather
        // than after the whole wait.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waited = tokio::time::timeout(DURABLE_SLICE, async {
                rx.wait_for(|w| *w >= id).await.is_ok()
            })
            .await;
            // When the sink thread is gone (the pipeline stopped, which
            // flushes), its last watermark is the answer.
            if waited == Ok(true) || *rx.borrow() >= id {
                return Ok(());
            }
            let failing = self.inner.backlog.get().is_some_and(|b| b.failing());
            if waited == Ok(false) || failing || tokio::time::Instant::now() >= deadline {
                return Err(EmitError::NotDurable { id });
            }
        }
    }

    /// The log's watermark when acknowledgements wait for it.
    fn durable_watermark(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner
            .durable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// [`Emitter::ingest`] for synchronous callers (blocks the thread).
    pub fn ingest_blocking(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Result<Outcome, ValidationError>>, EmitError> {
        let (valid, mut results) = self.check_batch(events);
        if valid.is_empty() {
            return Ok(merge_outcomes(&mut results, Vec::new()));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let reply: crate::pipeline::Reply = Box::new(move |o| {
            let _ = tx.send(o);
        });
        self.send_blocking(Command::Many(valid, Some(reply)))?;
        let outcomes = rx
            .recv()
            .map_err(|_| EmitError::Stopped {
                event_type: "batch".into(),
            })?
            .map_err(EmitError::from)?;
        Ok(merge_outcomes(&mut results, outcomes))
    }

    /// Validates a batch: the valid events (timestamped) and, per input, its
    /// error or a placeholder to be filled with the outcome.
    fn check_batch(
        &self,
        events: Vec<NewEvent>,
    ) -> (Vec<NewEvent>, Vec<Result<(), ValidationError>>) {
        let now = self.inner.clock.now();
        let mut valid = Vec::with_capacity(events.len());
        let mut results = Vec::with_capacity(events.len());
        for mut ev in events {
            match self.check(&ev, now) {
                Ok(()) => {
                    ev.timestamp.get_or_insert(now);
                    valid.push(ev);
                    results.push(Ok(()));
                }
                Err(e) => {
                    self.count_rejected();
                    results.push(Err(e));
                }
            }
        }
        (valid, results)
    }

    /// Records a critic's decision as a `critic_decision` event
    /// (`{"rejected": bool}`), counted by `critic_rejection_rate`.
    pub fn record_critic_decision(&self, rejected: bool) -> Result<(), EmitError> {
        let mut payload = serde_json::Map::new();
        payload.insert("rejected".into(), Value::Bool(rejected));
        self.emit_event(NewEvent::new("critic_decision", payload))
    }

    /// Hands on events that already have their ids (a cluster's shared
    /// stream, [`crate::cluster`]), in id order, waiting for room in the
    /// queue. Those at or below the last id handed on are skipped.
    pub async fn feed_tailed(
        &self,
        records: Vec<crate::event::SharedRecord>,
    ) -> Result<(), EmitError> {
        self.inner
            .tx
            .send(Command::Tailed(records))
            .await
            .map_err(|_| EmitError::Stopped {
                event_type: "tailed".into(),
            })
    }

    /// Waits until everything emitted so far is written by every sink.
    pub fn flush(&self) -> bool {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let ack: crate::pipeline::Ack = Box::new(move || {
            let _ = tx.send(());
        });
        if self.send_blocking(Command::Flush(ack)).is_err() {
            return false;
        }
        rx.recv().is_ok()
    }

    /// The log's index (with a log, once started): where stream readers
    /// that fell behind the in-memory ring read from.
    pub fn log_index(&self) -> Option<&Arc<LogIndex>> {
        self.inner.log_index.get()
    }

    /// [`Emitter::flush`] for async callers.
    pub async fn flush_async(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ack: crate::pipeline::Ack = Box::new(move || {
            let _ = tx.send(());
        });
        if self.inner.tx.send(Command::Flush(ack)).await.is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    /// The metrics now: KPIs over the window and the current buckets, per
    /// agent, plus the pipeline's and sinks' counters.
    pub fn get_metrics(&self) -> Metrics {
        let kpis = self
            .inner
            .engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot(self.inner.clock.now());
        Metrics {
            kpis,
            pipeline: self.inner.stats.snapshot(),
            sinks: self.sink_reports(),
        }
    }

    /// Per-sink counters.
    pub fn sink_reports(&self) -> Vec<SinkReport> {
        use std::sync::atomic::Ordering::Relaxed;
        self.inner
            .sink_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, s)| SinkReport {
                name,
                events: s.events.load(Relaxed),
                errors: s.errors.load(Relaxed),
                dropped: s.dropped_full.load(Relaxed)
                    + s.dropped_by_sink.load(Relaxed)
                    + s.dropped_dead.load(Relaxed),
                last_error: s
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            })
            .collect()
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Alert rules and budgets (for `/api/alerts` and `/api/budgets`).
    pub fn alerts(&self) -> &SharedAlerts {
        &self.inner.alerts
    }

    /// Notifier counters.
    pub fn notify_stats(&self) -> &Arc<NotifyStats> {
        &self.inner.notify_stats
    }

    /// The metrics engine (for readers that need more than the snapshot).
    pub fn engine(&self) -> &SharedEngine {
        &self.inner.engine
    }

    /// The schema events are checked against.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Events waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.inner.tx.max_capacity() - self.inner.tx.capacity()
    }

    fn enqueue(&self, cmd: Command) -> Result<(), EmitError> {
        match self.inner.policy {
            QueuePolicy::DropNewest => match self.inner.tx.try_send(cmd) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(cmd)) => {
                    self.inner
                        .stats
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Err(EmitError::QueueFull {
                        event_type: command_type(&cmd),
                    })
                }
                Err(TrySendError::Closed(cmd)) => {
                    Err(self.count_dropped_stopped(command_type(&cmd)))
                }
            },
            QueuePolicy::Block => self.send_blocking(cmd),
        }
    }

    /// Sends, waiting for room. Outside a runtime this parks the thread;
    /// inside one (where parking would panic) it backs off in short sleeps.
    pub(super) fn send_blocking(&self, mut cmd: Command) -> Result<(), EmitError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.inner.tx.blocking_send(cmd).map_err(|e| {
                let ty = command_type(&e.0);
                self.count_dropped_stopped(ty)
            });
        }
        let mut spins = 0u32;
        loop {
            match self.inner.tx.try_send(cmd) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(c)) => {
                    cmd = c;
                    spins += 1;
                    if spins < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
                Err(TrySendError::Closed(c)) => {
                    return Err(self.count_dropped_stopped(command_type(&c)))
                }
            }
        }
    }

    /// Counts `n` events refused before they reached the emitter (malformed
    /// input at an ingest path), so `rejected` covers every refusal.
    pub fn note_rejected(&self, n: u64) {
        self.inner
            .stats
            .rejected
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn count_rejected(&self) {
        self.inner
            .stats
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn count_dropped_stopped(&self, event_type: String) -> EmitError {
        self.inner
            .stats
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        EmitError::Stopped { event_type }
    }
}

fn merge_outcomes(
    results: &mut [Result<(), ValidationError>],
    outcomes: Vec<Outcome>,
) -> Vec<Result<Outcome, ValidationError>> {
    let mut outcomes = outcomes.into_iter();
    results
        .iter_mut()
        .map(|r| match std::mem::replace(r, Ok(())) {
            Ok(()) => Ok(outcomes.next().expect("one outcome per valid event")),
            Err(e) => Err(e),
        })
        .collect()
}

fn command_type(cmd: &Command) -> String {
    match cmd {
        Command::One(ev) => ev.event_type.to_string(),
        Command::Many(..) => "batch".into(),
        Command::Flush(_) => "flush".into(),
        Command::Tailed(..) => "tailed".into(),
        Command::Stop => "stop".into(),
    }
}
