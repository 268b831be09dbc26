//! The alerts sink: evaluates the schema's alert rules as metrics change and
//! tracks budgets over the event stream ([`crate::alerts`], pure), and feeds
//! the events they produce (`alert_triggered`, `alert_resolved`,
//! `budget_warning`, `budget_exceeded`) back into the pipeline, so that they
//! reach the console, the log, the stream and the notifiers like any other.
//!
//! Rules are evaluated after batches (at most ten times a second) and on
//! every tick (each second),
//! so a window that slides past its samples resolves an alert without new
//! events. The produced events go through an unbounded channel to a small
//! feedback thread: this sink never waits on the pipeline that feeds it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Sink, SinkError};
use crate::alerts::{AlertEngine, BudgetTracker, MetricInput};
use crate::clock::SharedClock;
use crate::event::{NewEvent, SharedRecord};
use crate::sinks::metrics::SharedEngine;
use crate::stats::PipelineStats;

/// Alert and budget state, shared with the HTTP APIs.
pub struct AlertState {
    /// The rules and their active alerts and history.
    pub engine: AlertEngine,
    /// Spend per budget scope and period.
    pub budgets: BudgetTracker,
}

/// Whether this hub may emit what rules and budgets produce and deliver
/// notifications now (a cluster: only the hub holding the alerts lease,
/// [`crate::cluster`]; every hub still evaluates, so a new holder is warm).
pub type Gate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Shared alert state.
pub type SharedAlerts = Arc<Mutex<AlertState>>;

/// Evaluates rules and budgets; see the module doc.
pub struct AlertsSink {
    state: SharedAlerts,
    metrics: SharedEngine,
    stats: Arc<PipelineStats>,
    clock: SharedClock,
    feedback: std::sync::mpsc::Sender<NewEvent>,
    /// When rules were last evaluated (Unix seconds).
    last_eval: f64,
    /// How long the last snapshot took (seconds): the next evaluation waits
    /// at least [`EVAL_COST_FACTOR`] times as long, so that a window of many
    /// agents (whose merge holds the engine's lock) never takes more than a
    /// few percent of the metrics sink's time.
    last_cost: f64,
}

/// See [`AlertsSink::last_cost`].
const EVAL_COST_FACTOR: f64 = 20.0;

/// Rules are evaluated at most this often (seconds): a snapshot of the
/// window costs a merge of its minute buckets, and at thousands of batches
/// a second evaluating each one would cost more than the events.
const MIN_EVAL_INTERVAL: f64 = 0.1;

impl AlertsSink {
    /// A sink evaluating `state` against `metrics`, sending what it
    /// produces to `feedback`.
    pub fn new(
        state: SharedAlerts,
        metrics: SharedEngine,
        stats: Arc<PipelineStats>,
        clock: SharedClock,
        feedback: std::sync::mpsc::Sender<NewEvent>,
    ) -> Self {
        AlertsSink {
            state,
            metrics,
            stats,
            clock,
            feedback,
            last_eval: f64::NEG_INFINITY,
            last_cost: 0.0,
        }
    }

    fn evaluate(&mut self, state: &mut AlertState, now: f64) {
        let interval = MIN_EVAL_INTERVAL.max(EVAL_COST_FACTOR * self.last_cost);
        if state.engine.rules().is_empty() || now - self.last_eval < interval {
            return;
        }
        self.last_eval = now;
        // Agents a rule names are read whatever their rank in the window.
        let named: Vec<&str> = state
            .engine
            .rules()
            .iter()
            .filter_map(|r| match &r.condition.metric {
                crate::alerts::Metric::Agent { agent, .. } => Some(agent.as_str()),
                _ => None,
            })
            .collect();
        let started = std::time::Instant::now();
        let snapshot = self
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot_top(now, crate::metrics::DEFAULT_SNAPSHOT_AGENTS, &named);
        self.last_cost = started.elapsed().as_secs_f64();
        let input = MetricInput::new(&snapshot, self.stats.snapshot());
        for alert in state.engine.evaluate(&input, now) {
            let _ = self.feedback.send(alert.to_new_event());
        }
    }
}

impl Sink for AlertsSink {
    fn name(&self) -> &'static str {
        "alerts"
    }

    fn write_batch(&mut self, batch: &[SharedRecord]) -> Result<(), SinkError> {
        let now = self.clock.now();
        let state = self.state.clone();
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        for r in batch {
            for ev in state.budgets.observe_at(&r.event, now) {
                let _ = self.feedback.send(ev);
            }
        }
        self.evaluate(&mut state, now);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn tick(&mut self) -> Result<(), SinkError> {
        let now = self.clock.now();
        let state = self.state.clone();
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        self.evaluate(&mut state, now);
        Ok(())
    }

    fn tick_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn doze(&self) -> Option<Duration> {
        // Nothing acknowledges after this sink, and its channel blocks
        // when full: the dashboard's figures may be a millisecond late.
        Some(super::runner::SMALL_BATCH_DOZE)
    }
}
