//! How OpenTelemetry becomes agentpulse events (pure, no I/O): OTLP export
//! requests (traces, logs, metrics; `opentelemetry-proto`'s types) in,
//! [`NewEvent`]s and per-model counters out. The hub's OTLP endpoints
//! ([`crate::hub::otlp`]) decode requests ([`decode`]), hand them to a
//! [`Mapper`], queue the events and answer with `partial_success`.
//!
//! # The mapping
//!
//! | OpenTelemetry | agentpulse events | fields |
//! |---|---|---|
//! | span with `gen_ai.operation.name` = `invoke_agent` | `agent_started` at the span's start, `agent_completed` at its end | `agent` ← `gen_ai.agent.name`, else `gen_ai.agent.id`, else `service.name`; `task_id` ← `gen_ai.conversation.id`, else the trace id (hex); `model` ← `gen_ai.request.model`, else `gen_ai.response.model`, else `unknown`; `status` `failed` when the span status is ERROR or `error.type` is set, else `success`; `duration_ms`; tokens and `cost_usd` (below); `tools: []` |
//! | span, `execute_tool` | `tool_executed` | `tool` ← `gen_ai.tool.name`, else the span name; `task_id` and `agent` of the enclosing agent run when known (else `gen_ai.conversation.id` or the trace id, and `gen_ai.agent.name` if set); `status`; `duration_ms`; `tool_call_id`, `tool_type`, `error_type` |
//! | span, `chat`, `generate_content`, `text_completion`, `embeddings` | `llm_call` | `model`, `provider` (`gen_ai.provider.name`, else `gen_ai.system`), `operation`, tokens, `cost_usd`, `cost_source`, `duration_ms`, `status`, `response_id`, `finish_reasons`; `task_id`/`agent` as for tools |
//! | span event or log record `gen_ai.evaluation.result` | `validation_complete` | `task_id` as above; `result: {passed, name, score, label, explanation}`; `cost: 0`, `duration_ms: 0`, `screenshots: 0` |
//! | log record `claude_code.user_prompt` | `task_queued` the first time a session is seen, and `otel.log` | `task_id` ← `session.id`; `feature` ← attribute `feature`, else `claude-code`; `est_cost: 0` |
//! | `claude_code.api_request` | `agent_started` at its time minus `duration_ms`, `agent_completed` at its time | `agent` ← `agent.name` (the subagent), else `claude-code`; `task_id` ← `session.id`; `model`; `status: success`; `duration_ms`; `cost_usd` (the record's, else from its tokens); `input_tokens`, `output_tokens`, `cache_read_tokens`, `cache_creation_tokens`; `prompt_id`, `request_id` |
//! | `claude_code.api_error` | `agent_started`, `agent_completed` with `status: failed` | `error`, `status_code`, `attempt`, `cost_usd: 0` |
//! | `claude_code.tool_result` | `tool_executed` | `tool` ← `tool_name`; `status` from `success`; `duration_ms`; `error_type`/`error`; `decision_source` |
//! | any other span | `otel.span` | `name`, `kind`, `status`, `status_message`, `start_time`, `end_time` (Unix seconds), `duration_ms`, `attributes` (bounded: [`attrs`]), `scope` |
//! | any other log record (`claude_code.tool_decision` and the other Claude Code events included) | `otel.log` | `name` (the event name, else `log`), `severity`, `body` and `attributes` (bounded) |
//! | metric points `gen_ai.client.token.usage`, `claude_code.token.usage`, `claude_code.cost.usage` | per-model counters in `/api/metrics` (`otel.models`) and `/metrics` | tokens by type and `cost_usd` per model ([`metrics`]) |
//! | any other metric point | counted (`otel.metric_points.ignored`), not stored | |
//!
//! Every mapped event carries `otel: {trace_id, span_id, parent_span_id,
//! service_name}` (hex ids; `null` when absent) and an `event_id` derived
//! from what identifies its source, so an exporter's retry is a duplicate
//! the pipeline drops: `<trace><span>.<kind>` for spans (`s`/`e` for the
//! start and end of an agent run, `t` tool, `l` model call, `o` other span,
//! `v<n>` evaluation), `cc:<session>:<sequence>.<kind>` for Claude Code
//! records, `cc:<session>.q` for a session's `task_queued`, and a hash of
//! the record for other log records.
//!
//! # Costs and tokens
//!
//! Tokens of spans are the GenAI conventions' (`gen_ai.usage.input_tokens`
//! *including* cached tokens, `gen_ai.usage.output_tokens`,
//! `gen_ai.usage.cache_read.input_tokens`,
//! `gen_ai.usage.cache_creation.input_tokens`); Claude Code's are disjoint
//! (`input_tokens` excludes cache reads and writes). Either way the event
//! keeps the numbers as sent and the cost prices each kind once
//! ([`prices::Tokens`]). The cost of a call (`cost_source`):
//!
//! 1. the sender's, when it gives one (`cost_usd` of a Claude Code record;
//!    `gen_ai.usage.cost` or `cost_usd` on a span): `sender`;
//! 2. else its tokens × the price of its model: `config_price` or
//!    `price_table` ([`prices`]);
//! 3. else 0: `unpriced` (the model is counted in `unpriced_models`), or
//!    `none` when the call reports no tokens.
//!
//! An `llm_call`'s cost counts in budgets, `total_cost` and
//! `cost_per_feature` like an `agent_completed`'s. One model call is never
//! counted twice when a framework repeats its model calls' usage on the
//! agent span: see [`ledger`] for the rule.
//!
//! # Evaluations: `passed`
//!
//! `error.type` set: failed. Else the label (`gen_ai.evaluation.score.label`,
//! case-insensitive): `pass`, `passed`, `correct`, `relevant`, `true`,
//! `yes`, `good`, `success`, `ok`, `approved`, `accepted` pass; `fail`,
//! `failed`, `incorrect`, `not_relevant`, `irrelevant`, `false`, `no`,
//! `bad`, `error`, `rejected` fail. Else the score
//! (`gen_ai.evaluation.score.value`): `>= 0.5` passes. Neither: failed.
//!
//! # Bad input
//!
//! A span is rejected (counted in `partial_success.rejected_spans`, named
//! by its path and field in `error_message`) when its `trace_id` is not 16
//! bytes or all zero, its `span_id` not 8 bytes or all zero, its
//! `parent_span_id` neither empty nor 8 bytes, its start or end time is
//! missing, or it ends before it starts. A log record needs none of these
//! (records may carry no trace); it is rejected only when its times are
//! out of range. What is kept is bounded ([`attrs`]: 10 MB values and
//! 10,000 attributes are cut, counted and reported as a warning). The
//! pipeline refuses events stamped more than a day ahead: such spans and
//! records are rejected with that reason. Their neighbours are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};

use crate::event::NewEvent;

pub mod attrs;
pub mod decode;
pub mod ledger;
mod logs;
pub mod metrics;
pub use agentpulse_core::prices;
mod spans;
#[cfg(test)]
mod tests;

pub use decode::{DecodeError, Decoded, Encoding};
pub use metrics::{ModelCounters, ModelUsage};
pub use prices::{Prices, Tokens};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// Most problems named in one `partial_success` message.
const MAX_PROBLEMS_NAMED: usize = 10;

/// Claude Code sessions remembered (for "the first time a session is seen").
const SESSIONS_REMEMBERED: usize = 100_000;

/// What is wrong with one span, record or point.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Its position in the request, counted over the whole request.
    pub item: usize,
    /// Its path (`resourceSpans[0].scopeSpans[1].spans[3]`) and name.
    pub path: String,
    /// The field and what is wrong.
    pub message: String,
}

/// What an event needs after the pipeline has answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventMeta {
    /// The span or record it came from (index over the request).
    pub item: usize,
    /// Its position: resource, scope and item index ([`item_path`]).
    pub pos: (usize, usize, usize),
    /// The model it could not price, when it cost 0 for want of a price.
    pub unpriced: Option<Arc<str>>,
    /// The Claude Code session whose first `task_queued` this is.
    pub session: Option<Arc<str>>,
}

/// One export request, mapped.
#[derive(Debug, Default)]
pub struct Batch {
    /// The events, in the request's order.
    pub events: Vec<NewEvent>,
    /// One entry per event.
    pub meta: Vec<EventMeta>,
    /// Spans, records or points in the request.
    pub items: usize,
    /// Items refused before mapping.
    pub rejected: Vec<Problem>,
    /// Items kept but cut to the bounds.
    pub truncated: Vec<Problem>,
    /// Remarks on the request as a whole (e.g. invalid UTF-8 replaced).
    pub warnings: Vec<String>,
}

impl Batch {
    fn push(&mut self, event: NewEvent, meta: EventMeta) {
        self.events.push(event);
        self.meta.push(meta);
    }
}

/// What the signal's items are called in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Log records.
    Logs,
    /// Metric data points.
    Metrics,
}

impl Signal {
    /// Plural noun of the items.
    pub fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Logs => "log records",
            Signal::Metrics => "data points",
        }
    }

    /// The signal's name (`traces`, `logs`, `metrics`).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }
}

/// The JSON path of an item (`resourceSpans[0].scopeSpans[1].spans[3]`).
pub fn item_path(signal: Signal, pos: (usize, usize, usize)) -> String {
    let keys = match signal {
        Signal::Traces => spans::KEYS,
        Signal::Logs => logs::KEYS,
        Signal::Metrics => metrics::KEYS,
    };
    spans::path(keys, pos)
}

/// The `partial_success` of a request: how many items were rejected and a
/// message naming them (and the truncations and warnings), empty when all
/// is well.
pub fn summary(
    signal: Signal,
    items: usize,
    rejected: &[Problem],
    truncated: &[Problem],
    warnings: &[String],
) -> (u64, String) {
    use std::fmt::Write as _;
    let mut rejected: Vec<&Problem> = rejected.iter().collect();
    rejected.sort_by_key(|p| p.item);
    rejected.dedup_by_key(|p| p.item);
    let mut msg = String::new();
    let mut named = 0;
    if !rejected.is_empty() {
        let _ = write!(
            msg,
            "rejected {} of {items} {}: ",
            rejected.len(),
            signal.items()
        );
        for (i, p) in rejected.iter().enumerate() {
            if named == MAX_PROBLEMS_NAMED {
                let _ = write!(msg, "; and {} more", rejected.len() - i);
                break;
            }
            if i > 0 {
                msg.push_str("; ");
            }
            let _ = write!(msg, "{}: {}", p.path, p.message);
            named += 1;
        }
    }
    if !truncated.is_empty() {
        if !msg.is_empty() {
            msg.push_str(". ");
        }
        let _ = write!(
            msg,
            "kept {} {} cut to the size bounds: ",
            truncated.len(),
            signal.items()
        );
        for (i, p) in truncated.iter().enumerate() {
            if i == MAX_PROBLEMS_NAMED.min(3) {
                let _ = write!(msg, "; and {} more", truncated.len() - i);
                break;
            }
            if i > 0 {
                msg.push_str("; ");
            }
            let _ = write!(msg, "{}: {}", p.path, p.message);
        }
    }
    for w in warnings {
        if !msg.is_empty() {
            msg.push_str(". ");
        }
        msg.push_str(w);
    }
    (rejected.len() as u64, msg)
}

/// Counters of what the mapper took in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Spans received.
    pub spans: u64,
    /// Log records received.
    pub log_records: u64,
    /// Metric data points received.
    pub data_points: u64,
    /// Items refused before mapping (malformed).
    pub rejected: u64,
    /// Items kept but cut to the bounds.
    pub truncated: u64,
    /// Data points added to the per-model counters.
    pub points_used: u64,
    /// Data points of other metrics: acknowledged, counted, not stored.
    pub points_ignored: u64,
    /// Data points not taken (retries, resets, malformed values).
    pub points_skipped: u64,
}

/// What the mapper has counted, and the metric streams it follows.
#[derive(Debug, Default)]
pub struct Counters {
    /// Per-model counters from metric points.
    pub usage: ModelUsage,
    /// Calls and points that cost 0 for want of a price, per model (as
    /// sent).
    pub unpriced: metrics::Bounded<u64>,
    /// What came in.
    pub stats: Stats,
    pub(crate) streams: metrics::Streams,
}

/// Claude Code sessions seen (for "the first time a session is seen").
#[derive(Debug, Default)]
struct Sessions {
    seen: HashMap<Arc<str>, ()>,
    order: VecDeque<Arc<str>>,
}

/// Turns export requests into events; keeps what spans several requests
/// need (the [`ledger`], the Claude Code sessions seen, the metric
/// streams), bounded. Shared by every request: each part has its own lock,
/// held briefly (building the events of a request takes none), so requests
/// map in parallel.
#[derive(Debug)]
pub struct Mapper {
    prices: Prices,
    ledger: Mutex<ledger::Ledger>,
    sessions: Mutex<Sessions>,
    counters: Mutex<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mapper {
    /// A mapper pricing with `prices`.
    pub fn new(prices: Prices) -> Mapper {
        Mapper {
            prices,
            ledger: Mutex::new(ledger::Ledger::new()),
            sessions: Mutex::new(Sessions::default()),
            counters: Mutex::new(Counters::default()),
        }
    }

    /// The prices in force.
    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// What has been counted (locked while held).
    pub fn counters(&self) -> MutexGuard<'_, Counters> {
        lock(&self.counters)
    }

    /// Maps a trace export request.
    pub fn traces(&self, req: &Decoded<ExportTraceServiceRequest>) -> Batch {
        let b = spans::map(self, req);
        self.count(&b, |s, n| s.spans += n);
        b
    }

    /// Maps a logs export request.
    pub fn logs(&self, req: &Decoded<ExportLogsServiceRequest>) -> Batch {
        let b = logs::map(self, req);
        self.count(&b, |s, n| s.log_records += n);
        b
    }

    /// Takes a metrics export request into the per-model counters; the
    /// batch has no events, only its items and problems.
    pub fn metrics(&self, req: &Decoded<ExportMetricsServiceRequest>) -> Batch {
        let b = metrics::take(&mut self.counters(), &self.prices, req);
        self.count(&b, |s, n| s.data_points += n);
        b
    }

    fn count(&self, b: &Batch, items: impl Fn(&mut Stats, u64)) {
        let mut c = self.counters();
        items(&mut c.stats, b.items as u64);
        c.stats.rejected += b.rejected.len() as u64;
        c.stats.truncated += b.truncated.len() as u64;
    }

    /// After the pipeline has answered: an accepted event that cost 0 for
    /// want of a price counts its model, and a session's first
    /// `task_queued` that was taken (or was a duplicate) marks the session
    /// seen. Call once per event, with whether the pipeline accepted it as
    /// new (`Some(true)`), as a duplicate (`Some(false)`) or refused it
    /// (`None`).
    pub fn settle(&self, meta: &EventMeta, accepted_new: Option<bool>) {
        if accepted_new == Some(true) {
            if let Some(m) = &meta.unpriced {
                self.counters().unpriced.add(m, 1);
            }
        }
        if accepted_new.is_some() {
            if let Some(s) = &meta.session {
                self.remember_session(s.clone());
            }
        }
    }

    fn session_seen(&self, s: &str) -> bool {
        lock(&self.sessions).seen.contains_key(s)
    }

    fn remember_session(&self, s: Arc<str>) {
        let mut ss = lock(&self.sessions);
        if ss.seen.contains_key(&s) {
            return;
        }
        if ss.seen.len() >= SESSIONS_REMEMBERED {
            if let Some(old) = ss.order.pop_front() {
                ss.seen.remove(&old);
            }
        }
        ss.seen.insert(s.clone(), ());
        ss.order.push_back(s);
    }

    /// Spans remembered by the ledger.
    pub fn ledger_len(&self) -> usize {
        lock(&self.ledger).len()
    }
}

/// What a mapped event says about the cost of one call.
#[derive(Debug, Clone, Default)]
pub(crate) struct Costed {
    pub cost: f64,
    pub source: &'static str,
    pub unpriced: Option<Arc<str>>,
}

/// The cost of a call: the sender's, else its tokens priced, else 0.
pub(crate) fn cost_of(
    prices: &Prices,
    sender: Option<f64>,
    models: &[Option<&str>],
    tokens: &Tokens,
) -> Costed {
    if let Some(c) = sender.filter(|c| c.is_finite() && *c >= 0.0) {
        return Costed {
            cost: c,
            source: "sender",
            unpriced: None,
        };
    }
    if tokens.is_zero() {
        return Costed {
            cost: 0.0,
            source: "none",
            unpriced: None,
        };
    }
    for m in models.iter().flatten() {
        if let Some(p) = prices.get(m) {
            return Costed {
                cost: p.cost(tokens),
                source: p.source.as_str(),
                unpriced: None,
            };
        }
    }
    Costed {
        cost: 0.0,
        source: "unpriced",
        unpriced: Some(Arc::from(
            models.iter().flatten().next().copied().unwrap_or("unknown"),
        )),
    }
}

/// The `otel` object of an event.
pub(crate) fn otel_object(
    trace: Option<&str>,
    span: Option<&str>,
    parent: Option<&str>,
    service: Option<&str>,
) -> Value {
    let s = |x: Option<&str>| x.map_or(Value::Null, |x| Value::String(x.to_owned()));
    let mut m = Map::new();
    m.insert("trace_id".into(), s(trace));
    m.insert("span_id".into(), s(span));
    m.insert("parent_span_id".into(), s(parent));
    m.insert("service_name".into(), s(service));
    Value::Object(m)
}

/// Hex of an id, `None` when empty or all zero.
pub(crate) fn hex_id(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0) {
        None
    } else {
        Some(const_hex::encode(bytes))
    }
}

/// Unix seconds of a nanosecond time, `None` for 0 (unset).
pub(crate) fn secs(ns: u64) -> Option<f64> {
    (ns != 0).then(|| ns as f64 / 1e9)
}

/// Whether an evaluation label passes (see the module doc), `None` when
/// it says neither.
pub(crate) fn label_passes(label: &str) -> Option<bool> {
    match label.trim().to_ascii_lowercase().as_str() {
        "pass" | "passed" | "correct" | "relevant" | "true" | "yes" | "good" | "success" | "ok"
        | "approved" | "accepted" => Some(true),
        "fail" | "failed" | "incorrect" | "not_relevant" | "irrelevant" | "false" | "no"
        | "bad" | "error" | "rejected" => Some(false),
        _ => None,
    }
}
