//! `GET /api/tasks/{id}`: one task's events, its state, its totals and its
//! agent spans, as JSON: what the dashboard's timeline draws.
//!
//! Where the events come from: the task index ([`super::task_index`])
//! names the ids of any task among the last million events; each is read
//! from the ring when it is still there, else from the log by id (through
//! the log index, a short read per id, nearby ids in one pass). A task
//! older than the index is looked for by a bounded scan of the log just
//! before it ([`SCAN_BUDGET`] events or [`SCAN_TIME`]), and the answer says
//! where that scan stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::task_index::MAX_IDS_PER_TASK;
use super::{error_response, HubState, SharedState};
use crate::event::Event;
use crate::sinks::jsonl::index::{LogCursor, LogRead};

/// Most events a scan for a task older than the index reads.
pub const SCAN_BUDGET: u64 = 1_000_000;

/// Longest such a scan runs.
pub const SCAN_TIME: Duration = Duration::from_secs(2);

/// Ids this close to the last one read are reached by reading on rather
/// than seeking again (the log index has a point about every 256 KiB,
/// some 800 events).
const READ_ON: u64 = 1000;

/// Bytes per read of the log.
const CHUNK: usize = 64 * 1024;

/// Statuses of `agent_completed` that mean the step failed (as the
/// dashboard reads them).
const FAILED: [&str; 5] = ["failed", "failure", "error", "timeout", "crashed"];

/// Where a scan for an unindexed task went.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Scan {
    /// First id looked at.
    from: u64,
    /// Last id it would have looked at.
    to: u64,
    /// Last id it did look at.
    stopped_at: u64,
    /// Whether it covered `from..=to`.
    complete: bool,
    /// Why it stopped early (`time`), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// `GET /api/tasks/{id}` (read token).
pub async fn task(State(state): State<SharedState>, Path(task): Path<String>) -> Response {
    let st = state.clone();
    let t = task.clone();
    match tokio::task::spawn_blocking(move || answer(&st, &t)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(unknown)) => (StatusCode::NOT_FOUND, Json(unknown)).into_response(),
        Err(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "reading the task failed"),
    }
}

/// The answer for `task`, or (`Err`) the body of its 404: no event of it
/// was found.
pub fn answer(state: &HubState, task: &str) -> Result<Value, Value> {
    let started = Instant::now();
    let lookup = state.task_index.lookup(task);
    let (lines, source, scan, truncated) = if lookup.ids.is_empty() {
        let (lines, scan) = scan_log(state, task, lookup.covered_from);
        (lines, "scan", scan, false)
    } else {
        (
            read_ids(state, &lookup.ids),
            "index",
            None,
            lookup.truncated,
        )
    };
    let events: Vec<Event> = lines
        .iter()
        .filter_map(|(_, l)| Event::from_wire(l).ok())
        .filter(|e| e.str_field("task_id") == Some(task))
        .collect();
    if events.is_empty() {
        let mut body = json!({
            "error": format!("unknown task {task:?}: no event of it among the retained events"),
            "task_id": task,
            "indexed_from": lookup.covered_from,
        });
        if let Some(s) = scan {
            body["scan"] = json!(s);
        }
        return Err(body);
    }
    let mut doc = summarise(task, &events);
    doc["events"] = Value::Array(
        lines
            .iter()
            .filter(|(id, _)| events.iter().any(|e| e.id == *id))
            .filter_map(|(_, l)| serde_json::from_slice::<Value>(l).ok())
            .collect(),
    );
    doc["source"] = json!(source);
    doc["truncated"] = json!(truncated);
    doc["indexed_from"] = json!(lookup.covered_from);
    doc["hitl"] = json!(state.hitl.get(task));
    if let Some(s) = scan {
        doc["scan"] = json!(s);
    }
    doc["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
    Ok(doc)
}

/// The wire lines of `ids` (ascending): from the ring, else from the log.
fn read_ids(state: &HubState, ids: &[u64]) -> Vec<(u64, Bytes)> {
    let oldest_in_ring = state.ring.oldest_id().unwrap_or(u64::MAX);
    let split = ids.partition_point(|&id| id < oldest_in_ring);
    let mut out = Vec::with_capacity(ids.len());
    if split > 0 {
        if let Some(index) = state.emitter.log_index() {
            read_log_ids(index, &ids[..split], &mut out);
        }
    }
    for &id in &ids[split..] {
        let read = state.ring.read_after(id - 1, 1, |_| true);
        match read.records.first() {
            Some(item) if item.id == id => {
                out.push((id, Bytes::from(item.message.as_bytes().to_vec())));
            }
            // Pushed out of the ring since the split: the log has it.
            _ => {
                if let Some(index) = state.emitter.log_index() {
                    read_log_ids(index, &[id], &mut out);
                }
            }
        }
    }
    out
}

/// Reads the lines of `ids` (ascending) from the log.
fn read_log_ids(
    index: &Arc<crate::sinks::jsonl::index::LogIndex>,
    ids: &[u64],
    out: &mut Vec<(u64, Bytes)>,
) {
    let mut cursor: Option<LogCursor> = None;
    for &id in ids {
        let near = cursor
            .as_ref()
            .is_some_and(|c| c.after() < id && id - c.after() <= READ_ON);
        if !near {
            cursor = Some(LogCursor::new(index.clone(), id - 1, CHUNK));
        }
        let c = cursor.as_mut().expect("set above");
        let mut lines = Vec::new();
        while c.after() < id {
            lines.clear();
            match c.read(id, usize::MAX, &mut lines) {
                Ok(LogRead::Lines) => {
                    if let Some(line) = lines.iter().find(|(i, _)| *i == id) {
                        out.push(line.clone());
                    }
                }
                Ok(LogRead::Missing { .. } | LogRead::End) => break,
                Err(e) => {
                    tracing::warn!("task timeline: cannot read id {id} from the log: {e}");
                    break;
                }
            }
        }
        if c.after() < id {
            // Not there (not written yet, or gone): a fresh cursor next.
            cursor = None;
        }
    }
}

/// Looks for `task` in the log before `covered_from` (the index's reach;
/// 0: nothing indexed), at most [`SCAN_BUDGET`] events back.
fn scan_log(state: &HubState, task: &str, covered_from: u64) -> (Vec<(u64, Bytes)>, Option<Scan>) {
    let Some(index) = state.emitter.log_index() else {
        return (Vec::new(), None);
    };
    let Some(first) = index.first_id() else {
        return (Vec::new(), None);
    };
    let to = match covered_from {
        0 => state.ring.last_id(),
        c => c - 1,
    };
    if to < first {
        // The index covers the whole log: the task is not there.
        return (Vec::new(), None);
    }
    let from = first.max(to.saturating_sub(SCAN_BUDGET - 1));
    let key = format!(
        "\"task_id\":{}",
        serde_json::to_string(task).unwrap_or_default()
    );
    let finder = memchr::memmem::Finder::new(key.as_bytes());
    let deadline = Instant::now() + SCAN_TIME;
    let mut cursor = LogCursor::new(index.clone(), from - 1, 1 << 20);
    let mut found = Vec::new();
    let mut lines = Vec::new();
    let mut reason = None;
    while cursor.after() < to {
        if Instant::now() >= deadline {
            reason = Some("time");
            break;
        }
        lines.clear();
        match cursor.read(to, 1 << 20, &mut lines) {
            Ok(LogRead::Lines) => {}
            Ok(LogRead::Missing { .. }) => continue,
            Ok(LogRead::End) => break,
            Err(e) => {
                tracing::warn!("task timeline: scanning the log for {task:?}: {e}");
                reason = Some("log_unreadable");
                break;
            }
        }
        for (id, line) in lines.drain(..) {
            if finder.find(&line).is_some() && found.len() < MAX_IDS_PER_TASK {
                found.push((id, line));
            }
        }
    }
    let stopped_at = cursor.after().min(to);
    let scan = Scan {
        from,
        to,
        stopped_at,
        complete: stopped_at >= to && reason.is_none(),
        reason,
    };
    (found, Some(scan))
}

/// A span of one agent on the task: from its `agent_started` to its
/// `agent_completed` (or the task's `validation_complete`).
#[derive(Debug, Default)]
struct Span {
    agent: String,
    start: Option<f64>,
    end: Option<f64>,
    start_id: Option<u64>,
    end_id: Option<u64>,
    duration_ms: Option<f64>,
    status: String,
    model: Option<String>,
    cost_usd: Option<f64>,
    input_tokens: Option<f64>,
    output_tokens: Option<f64>,
    attempt: u32,
    error: Option<String>,
}

impl Span {
    fn to_json(&self) -> Value {
        json!({
            "agent": self.agent,
            "start": self.start,
            "end": self.end,
            "start_id": self.start_id,
            "end_id": self.end_id,
            "duration_ms": self.duration_ms,
            "status": self.status,
            "model": self.model,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "attempt": self.attempt,
            "retry": self.attempt > 1,
            "failed": FAILED.contains(&self.status.to_ascii_lowercase().as_str()),
            "error": self.error,
        })
    }
}

/// Whether a `validation_complete.result` says the task passed (the
/// dashboard's and the metrics engine's reading).
fn passed(result: Option<&Value>) -> bool {
    let Some(Value::Object(r)) = result else {
        return false;
    };
    if r.get("passed") == Some(&Value::Bool(true)) {
        return true;
    }
    r.get("test_passed") == Some(&Value::Bool(true))
        && r.get("browser_launched") != Some(&Value::Bool(false))
        && r.get("test_executed") != Some(&Value::Bool(false))
}

/// State, totals and spans of a task from its events (in id order).
fn summarise(task: &str, events: &[Event]) -> Value {
    let mut spans: Vec<Span> = Vec::new();
    let mut state = "unknown";
    let (mut cost, mut input_tokens, mut output_tokens) = (0.0f64, 0.0f64, 0.0f64);
    let (mut est_cost, mut feature) = (None, None);
    let mut models: Vec<String> = Vec::new();
    let (mut failures, mut retries, mut attempts) = (0u64, 0u64, 0u64);
    let mut validation = Value::Null;
    let mut escalation = Value::Null;
    let mut resolution = Value::Null;
    for e in events {
        let p = &e.payload;
        let num = |k: &str| p.get(k).and_then(Value::as_f64);
        let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
        if let Some(m) = text("model") {
            if !models.contains(&m) {
                models.push(m);
            }
        }
        input_tokens += num("input_tokens").unwrap_or(0.0);
        output_tokens += num("output_tokens").unwrap_or(0.0);
        match &*e.event_type {
            "task_queued" => {
                est_cost = num("est_cost").or(est_cost);
                feature = text("feature").or(feature);
                if state == "unknown" {
                    state = "queued";
                }
            }
            "agent_started" => {
                let agent = text("agent").unwrap_or_default();
                let attempt = spans.iter().filter(|s| s.agent == agent).count() as u32 + 1;
                if attempt > 1 {
                    retries += 1;
                }
                spans.push(Span {
                    agent,
                    start: Some(e.timestamp),
                    start_id: Some(e.id),
                    status: "running".into(),
                    model: text("model"),
                    attempt,
                    ..Span::default()
                });
                state = "running";
            }
            "agent_completed" => {
                let agent = text("agent").unwrap_or_default();
                let status = text("status").unwrap_or_else(|| "done".into());
                if FAILED.contains(&status.to_ascii_lowercase().as_str()) {
                    failures += 1;
                }
                let c = num("cost_usd");
                cost += c.unwrap_or(0.0);
                let open = spans
                    .iter_mut()
                    .rev()
                    .find(|s| s.agent == agent && s.end_id.is_none());
                let span = match open {
                    Some(s) => s,
                    None => {
                        spans.push(Span {
                            agent: agent.clone(),
                            attempt: 1,
                            ..Span::default()
                        });
                        spans.last_mut().expect("pushed")
                    }
                };
                span.end = Some(e.timestamp);
                span.end_id = Some(e.id);
                span.duration_ms = num("duration_ms")
                    .or_else(|| span.start.map(|s| (e.timestamp - s).max(0.0) * 1000.0));
                if span.start.is_none() {
                    span.start = span.duration_ms.map(|d| e.timestamp - d / 1000.0);
                }
                span.status = status;
                span.cost_usd = c;
                span.input_tokens = num("input_tokens");
                span.output_tokens = num("output_tokens");
                span.error = text("error");
                if let Some(m) = text("model") {
                    span.model = Some(m);
                }
            }
            "llm_call" => cost += num("cost_usd").unwrap_or(0.0),
            "validation_complete" => {
                let ok = passed(p.get("result"));
                cost += num("cost").unwrap_or(0.0);
                let status = if ok { "passed" } else { "failed" };
                state = status;
                validation = json!({"id": e.id, "timestamp": e.timestamp, "passed": ok,
                    "result": p.get("result"), "cost": num("cost")});
                // The validator's span: an agent started on the task and
                // never completed (the original's gemini) ends here.
                let mut ended = false;
                for s in spans.iter_mut().filter(|s| s.end_id.is_none()) {
                    s.end = Some(e.timestamp);
                    s.end_id = Some(e.id);
                    s.duration_ms = s.start.map(|st| (e.timestamp - st).max(0.0) * 1000.0);
                    s.status = status.into();
                    s.cost_usd = num("cost");
                    ended = true;
                }
                if !ended {
                    let d = num("duration_ms");
                    spans.push(Span {
                        agent: "validator".into(),
                        start: Some(e.timestamp - d.unwrap_or(0.0) / 1000.0),
                        end: Some(e.timestamp),
                        end_id: Some(e.id),
                        duration_ms: d,
                        status: status.into(),
                        cost_usd: num("cost"),
                        attempt: 1,
                        ..Span::default()
                    });
                }
            }
            "hitl_escalated" => {
                state = "escalated";
                attempts = attempts.max(num("attempts").unwrap_or(0.0) as u64);
                escalation = json!({"id": e.id, "timestamp": e.timestamp,
                    "attempts": num("attempts"), "priority": text("priority"),
                    "last_error": text("last_error")});
                resolution = Value::Null;
            }
            "hitl_resolved" => {
                state = match text("resolution").as_deref() {
                    Some("retry") => "retrying",
                    Some("abandoned") => "abandoned",
                    _ => "resolved",
                };
                resolution = json!({"id": e.id, "timestamp": e.timestamp,
                    "resolution": text("resolution"), "note": text("note"), "by": text("by")});
            }
            _ => {}
        }
    }
    let first = events.first().map_or(0.0, |e| e.timestamp);
    let last = events.last().map_or(0.0, |e| e.timestamp);
    let mut totals = Map::new();
    totals.insert("events".into(), json!(events.len()));
    totals.insert("cost_usd".into(), json!(cost));
    totals.insert("est_cost".into(), json!(est_cost));
    totals.insert(
        "over_estimate".into(),
        json!(est_cost.map(|est: f64| cost > est)),
    );
    totals.insert("duration_ms".into(), json!((last - first) * 1000.0));
    totals.insert("failures".into(), json!(failures));
    totals.insert("retries".into(), json!(retries.max(attempts)));
    if input_tokens > 0.0 || output_tokens > 0.0 {
        totals.insert("input_tokens".into(), json!(input_tokens));
        totals.insert("output_tokens".into(), json!(output_tokens));
    }
    totals.insert("models".into(), json!(models));
    json!({
        "task_id": task,
        "state": state,
        "feature": feature,
        "first_ts": first,
        "last_ts": last,
        "totals": totals,
        "spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(),
        "validation": validation,
        "escalation": escalation,
        "resolution": resolution,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64, ts: f64, ty: &str, payload: Value) -> Event {
        Event {
            id,
            event_type: Arc::from(ty),
            timestamp: ts,
            event_id: None,
            payload: payload.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn spans_retries_and_the_validators_span() {
        let t = "t";
        let events = [
            ev(
                1,
                0.0,
                "task_queued",
                json!({"task_id": t, "est_cost": 0.1, "feature": "f"}),
            ),
            ev(
                2,
                1.0,
                "agent_started",
                json!({"task_id": t, "agent": "runner", "model": "m"}),
            ),
            ev(
                3,
                2.0,
                "agent_completed",
                json!({"task_id": t, "agent": "runner", "status": "failed", "duration_ms": 1000, "cost_usd": 0.05}),
            ),
            ev(
                4,
                3.0,
                "agent_started",
                json!({"task_id": t, "agent": "runner"}),
            ),
            ev(
                5,
                4.0,
                "agent_completed",
                json!({"task_id": t, "agent": "runner", "status": "success", "duration_ms": 900, "cost_usd": 0.07}),
            ),
            ev(
                6,
                5.0,
                "agent_started",
                json!({"task_id": t, "agent": "gemini"}),
            ),
            ev(
                7,
                7.5,
                "validation_complete",
                json!({"task_id": t, "result": {"passed": true}, "cost": 0.01}),
            ),
        ];
        let doc = summarise(t, &events);
        assert_eq!(doc["state"], "passed");
        let spans = doc["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0]["failed"], true);
        assert_eq!(spans[1]["retry"], true);
        assert_eq!(spans[2]["agent"], "gemini");
        assert_eq!(spans[2]["duration_ms"], 2500.0);
        assert_eq!(doc["totals"]["retries"], 1);
        assert_eq!(doc["totals"]["over_estimate"], true);
        let cost = doc["totals"]["cost_usd"].as_f64().unwrap();
        assert!((cost - 0.13).abs() < 1e-9, "{cost}");
    }
}
