//! Log records: Claude Code's events and GenAI evaluation results to
//! agentpulse events, any other record to `otel.log` (the table is in the
//! module doc of [`super`]).
//!
//! A record's event name is its `event_name` field, else its `event.name`
//! attribute, else its body when that is a string naming a Claude Code
//! event. Claude Code names its records `claude_code.<event>` (body) with
//! `event.name: <event>`; either form is recognised, and so is a bare
//! `<event>` from a resource whose `service.name` is `claude-code`.
//! Attribute names are those of Claude Code's monitoring documentation;
//! numbers may come as strings (Claude Code sends them so).

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

use super::attrs::{self, Cut};
use super::spans::{evaluation_payload, path};
use super::{
    cost_of, hex_id, otel_object, secs, Batch, Decoded, EventMeta, Mapper, Problem, Tokens,
};
use crate::event::NewEvent;

pub(crate) const KEYS: [&str; 3] = ["resourceLogs", "scopeLogs", "logRecords"];

/// The agent name of Claude Code's main session.
pub const CLAUDE_CODE_AGENT: &str = "claude-code";

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    UserPrompt,
    ApiRequest,
    ApiError,
    ToolResult,
    /// Another Claude Code event (`tool_decision`, ...): `otel.log`, with
    /// the session as its task.
    ClaudeOther,
    Evaluation,
    Other,
}

fn claude_kind(event: &str) -> Kind {
    match event {
        "user_prompt" => Kind::UserPrompt,
        "api_request" => Kind::ApiRequest,
        "api_error" => Kind::ApiError,
        "tool_result" => Kind::ToolResult,
        _ => Kind::ClaudeOther,
    }
}

/// The record's event name and kind.
fn classify<'a>(r: &'a LogRecord, service: Option<&str>) -> (Option<&'a str>, Kind) {
    let attr = attrs::str_attr(&r.attributes, "event.name");
    let body = r
        .body
        .as_ref()
        .and_then(|b| b.value.as_ref())
        .and_then(attrs::as_str)
        .filter(|s| s.starts_with("claude_code.") || *s == "gen_ai.evaluation.result");
    let field = Some(r.event_name.as_str()).filter(|s| !s.is_empty());
    for name in [field, attr, body].into_iter().flatten() {
        if name == "gen_ai.evaluation.result" {
            return (Some(name), Kind::Evaluation);
        }
        if let Some(ev) = name.strip_prefix("claude_code.") {
            return (Some(name), claude_kind(ev));
        }
    }
    let name = field.or(attr);
    if service == Some("claude-code") {
        if let Some(n) = name {
            return (Some(n), claude_kind(n));
        }
    }
    (name, Kind::Other)
}

/// The record's time: its own, else when it was observed, else its
/// `event.timestamp` attribute (ISO 8601); `None` lets the hub stamp it.
fn time_of(r: &LogRecord) -> Option<f64> {
    secs(r.time_unix_nano)
        .or_else(|| secs(r.observed_time_unix_nano))
        .or_else(|| {
            let s = attrs::str_attr(&r.attributes, "event.timestamp")?;
            let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
            Some(t.timestamp_micros() as f64 / 1e6)
        })
}

/// A stable key of the record for its event ids: Claude Code's session
/// and sequence when it has them, else a hash of the record.
fn record_key(r: &LogRecord, session: Option<&str>, service: Option<&str>) -> String {
    let seq = attrs::get(&r.attributes, "event.sequence").and_then(attrs::as_count);
    if let (Some(s), Some(q)) = (session, seq) {
        if s.len() <= 80 && s.bytes().all(|b| b.is_ascii_graphic()) {
            return format!("cc:{s}:{q}");
        }
    }
    let mut h = Sha1::new();
    h.update(r.encode_to_vec());
    h.update(service.unwrap_or("").as_bytes());
    let digest = h.finalize();
    format!("log:{}", const_hex::encode(&digest[..16]))
}

fn put(p: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
    p.insert(k.to_owned(), v.into());
}

fn put_str(p: &mut Map<String, Value>, k: &str, list: &[KeyValue], key: &str, cut: &mut Cut) {
    if let Some(v) = attrs::str_attr(list, key) {
        put(p, k, attrs::bounded_str(v, attrs::MAX_VALUE_BYTES, cut));
    }
}

fn count(list: &[KeyValue], key: &str) -> Option<u64> {
    attrs::get(list, key).and_then(attrs::as_count)
}

fn number(list: &[KeyValue], key: &str) -> Option<f64> {
    attrs::get(list, key).and_then(attrs::as_f64)
}

pub(super) fn map(m: &Mapper, d: &Decoded<ExportLogsServiceRequest>) -> Batch {
    let mut b = Batch {
        warnings: d.warnings.clone(),
        ..Batch::default()
    };
    let mut n = 0usize;
    for (ri, rl) in d.request.resource_logs.iter().enumerate() {
        let res_attrs: &[KeyValue] = rl.resource.as_ref().map_or(&[], |r| &r.attributes);
        let service = attrs::str_attr(res_attrs, "service.name");
        for (si, sl) in rl.scope_logs.iter().enumerate() {
            let scope = sl
                .scope
                .as_ref()
                .map(|s| s.name.as_str())
                .filter(|s| !s.is_empty());
            for (i, r) in sl.log_records.iter().enumerate() {
                let item = n;
                n += 1;
                let pos = (ri, si, i);
                if let Some(why) = d.broken.get(&pos) {
                    b.rejected.push(Problem {
                        item,
                        path: path(KEYS, pos),
                        message: why.clone(),
                    });
                    continue;
                }
                one(
                    m,
                    &mut b,
                    Ctx {
                        item,
                        pos,
                        r,
                        service,
                        scope,
                        res_attrs,
                    },
                );
            }
        }
    }
    b.items = n;
    b
}

struct Ctx<'a> {
    item: usize,
    pos: (usize, usize, usize),
    r: &'a LogRecord,
    service: Option<&'a str>,
    scope: Option<&'a str>,
    res_attrs: &'a [KeyValue],
}

fn one(m: &Mapper, b: &mut Batch, c: Ctx<'_>) {
    let r = c.r;
    let a = &r.attributes[..];
    let (name, kind) = classify(r, c.service);
    let mut cut = Cut::default();
    let ts = time_of(r);
    let trace = hex_id(&r.trace_id);
    let span = hex_id(&r.span_id);
    let otel = otel_object(trace.as_deref(), span.as_deref(), None, c.service);
    let session = attrs::str_attr(a, "session.id");
    let key = record_key(r, session, c.service);
    let meta = |unpriced: Option<Arc<str>>, session: Option<Arc<str>>| EventMeta {
        item: c.item,
        pos: c.pos,
        unpriced,
        session,
    };
    let is_claude = !matches!(kind, Kind::Evaluation | Kind::Other);
    // Claude Code's task is its session.
    let task = session
        .or_else(|| attrs::str_attr(a, "gen_ai.conversation.id"))
        .map(str::to_owned)
        .or_else(|| trace.clone())
        .unwrap_or_else(|| {
            if is_claude {
                CLAUDE_CODE_AGENT.to_owned()
            } else {
                "otel".to_owned()
            }
        });
    let task = attrs::name(&task, &mut cut).unwrap_or_default();
    let agent = attrs::str_attr(a, "agent.name")
        .and_then(|x| attrs::name(x, &mut cut))
        .unwrap_or_else(|| CLAUDE_CODE_AGENT.to_owned());
    match kind {
        Kind::ApiRequest | Kind::ApiError => {
            let failed = kind == Kind::ApiError;
            let model = attrs::str_attr(a, "model")
                .and_then(|x| attrs::name(x, &mut cut))
                .unwrap_or_else(|| "unknown".into());
            let duration_ms = number(a, "duration_ms")
                .filter(|d| *d >= 0.0)
                .unwrap_or(0.0);
            let end = ts;
            let start = end.map(|t| (t - duration_ms / 1000.0).max(0.0));
            let mut s = Map::new();
            put(&mut s, "agent", agent.as_str());
            put(&mut s, "task_id", task.as_str());
            put(&mut s, "model", model.as_str());
            put(&mut s, "tools", Value::Array(Vec::new()));
            put(&mut s, "source", "claude_code");
            put(&mut s, "otel", otel.clone());
            let mut started = NewEvent::new("agent_started", s).with_event_id(format!("{key}.s"));
            started.timestamp = start;
            b.push(started, meta(None, None));
            let mut e = Map::new();
            put(&mut e, "agent", agent);
            put(&mut e, "task_id", task.as_str());
            put(&mut e, "status", if failed { "failed" } else { "success" });
            put(&mut e, "duration_ms", duration_ms);
            let mut unpriced = None;
            if failed {
                put(&mut e, "cost_usd", 0.0);
                put(&mut e, "cost_source", "none");
                put_str(&mut e, "error", a, "error", &mut cut);
                if let Some(x) = count(a, "status_code") {
                    put(&mut e, "status_code", x);
                }
                if let Some(x) = count(a, "attempt") {
                    put(&mut e, "attempt", x);
                }
            } else {
                let tokens = Tokens {
                    input: count(a, "input_tokens").unwrap_or(0),
                    output: count(a, "output_tokens").unwrap_or(0),
                    cache_read: count(a, "cache_read_tokens").unwrap_or(0),
                    cache_write: count(a, "cache_creation_tokens").unwrap_or(0),
                };
                for k in [
                    "input_tokens",
                    "output_tokens",
                    "cache_read_tokens",
                    "cache_creation_tokens",
                ] {
                    if let Some(x) = count(a, k) {
                        put(&mut e, k, x);
                    }
                }
                let sender = number(a, "cost_usd")
                    .or_else(|| count(a, "cost_usd_micros").map(|u| u as f64 / 1e6));
                let costed = cost_of(&m.prices, sender, &[Some(model.as_str())], &tokens);
                put(&mut e, "cost_usd", costed.cost);
                put(&mut e, "cost_source", costed.source);
                unpriced = costed.unpriced;
            }
            put(&mut e, "model", model);
            for (k, key) in [
                ("request_id", "request_id"),
                ("prompt_id", "prompt.id"),
                ("query_source", "query_source"),
                ("speed", "speed"),
                ("effort", "effort"),
            ] {
                put_str(&mut e, k, a, key, &mut cut);
            }
            put(&mut e, "source", "claude_code");
            put(&mut e, "otel", otel);
            let mut completed =
                NewEvent::new("agent_completed", e).with_event_id(format!("{key}.e"));
            completed.timestamp = end;
            b.push(completed, meta(unpriced, None));
        }
        Kind::ToolResult => {
            let tool = attrs::str_attr(a, "tool_name")
                .or_else(|| attrs::str_attr(a, "name"))
                .and_then(|x| attrs::name(x, &mut cut))
                .unwrap_or_else(|| "tool".into());
            let ok = attrs::get(a, "success")
                .and_then(attrs::as_bool)
                .unwrap_or(true);
            let mut p = Map::new();
            put(&mut p, "tool", tool);
            put(&mut p, "task_id", task.as_str());
            put(&mut p, "agent", agent);
            put(&mut p, "status", if ok { "success" } else { "failed" });
            put(
                &mut p,
                "duration_ms",
                number(a, "duration_ms")
                    .filter(|d| *d >= 0.0)
                    .unwrap_or(0.0),
            );
            put_str(&mut p, "tool_call_id", a, "tool_use_id", &mut cut);
            put_str(&mut p, "error_type", a, "error_type", &mut cut);
            put_str(&mut p, "error", a, "error", &mut cut);
            put_str(&mut p, "decision_source", a, "decision_source", &mut cut);
            put_str(&mut p, "prompt_id", a, "prompt.id", &mut cut);
            put(&mut p, "source", "claude_code");
            put(&mut p, "otel", otel);
            let mut ev = NewEvent::new("tool_executed", p).with_event_id(format!("{key}.t"));
            ev.timestamp = ts;
            b.push(ev, meta(None, None));
        }
        Kind::UserPrompt => {
            // New to the mapper, and not queued earlier in this request.
            let queued_here = |s: &str| b.meta.iter().any(|x| x.session.as_deref() == Some(s));
            if let Some(s) = session.filter(|s| !m.session_seen(s) && !queued_here(s)) {
                let feature = attrs::str_attr(a, "feature")
                    .or_else(|| attrs::str_attr(c.res_attrs, "feature"))
                    .and_then(|x| attrs::name(x, &mut cut))
                    .unwrap_or_else(|| CLAUDE_CODE_AGENT.to_owned());
                let mut p = Map::new();
                put(&mut p, "task_id", task.as_str());
                put(&mut p, "feature", feature);
                put(&mut p, "est_cost", 0.0);
                put(&mut p, "timestamp", ts.unwrap_or(0.0));
                put(&mut p, "source", "claude_code");
                put(&mut p, "otel", otel.clone());
                let id = if s.len() <= 80 && s.bytes().all(|b| b.is_ascii_graphic()) {
                    format!("cc:{s}.q")
                } else {
                    format!("{key}.q")
                };
                let mut ev = NewEvent::new("task_queued", p).with_event_id(id);
                ev.timestamp = ts;
                b.push(ev, meta(None, Some(Arc::from(s))));
            }
            log_event(b, &c, name, ts, &key, Some(&task), otel, &mut cut);
        }
        Kind::Evaluation => {
            let p = evaluation_payload(a, &task, otel);
            let mut ev = NewEvent::new("validation_complete", p).with_event_id(format!("{key}.v"));
            ev.timestamp = ts;
            b.push(ev, meta(None, None));
        }
        Kind::ClaudeOther => log_event(b, &c, name, ts, &key, Some(&task), otel, &mut cut),
        Kind::Other => {
            let task = session.or_else(|| attrs::str_attr(a, "gen_ai.conversation.id"));
            log_event(b, &c, name, ts, &key, task, otel, &mut cut)
        }
    }
    if cut.any() {
        b.truncated.push(Problem {
            item: c.item,
            path: path(KEYS, c.pos),
            message: format!(
                "{} attributes left out, {} values shortened",
                cut.dropped, cut.shortened
            ),
        });
    }
}

fn severity(n: i32) -> &'static str {
    match n {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unspecified",
    }
}

#[allow(clippy::too_many_arguments)]
fn log_event(
    b: &mut Batch,
    c: &Ctx<'_>,
    name: Option<&str>,
    ts: Option<f64>,
    key: &str,
    task: Option<&str>,
    otel: Value,
    cut: &mut Cut,
) {
    let r = c.r;
    let mut p = Map::new();
    put(
        &mut p,
        "name",
        attrs::bounded_str(name.unwrap_or("log"), attrs::MAX_NAME_BYTES, cut),
    );
    put(
        &mut p,
        "severity",
        if r.severity_text.is_empty() {
            severity(r.severity_number).to_owned()
        } else {
            attrs::bounded_str(&r.severity_text, 64, cut)
        },
    );
    if r.severity_number != 0 {
        put(&mut p, "severity_number", r.severity_number);
    }
    if let Some(t) = task.and_then(|t| attrs::name(t, cut)) {
        put(&mut p, "task_id", t);
    }
    if let Some(sc) = c.scope {
        put(
            &mut p,
            "scope",
            attrs::bounded_str(sc, attrs::MAX_NAME_BYTES, cut),
        );
    }
    if r.body.is_some() {
        p.insert("body".into(), attrs::any_to_json(r.body.as_ref(), 1, cut));
    }
    p.insert(
        "attributes".into(),
        Value::Object(attrs::to_object(&r.attributes, cut)),
    );
    if r.dropped_attributes_count > 0 {
        put(
            &mut p,
            "dropped_attributes_count",
            r.dropped_attributes_count,
        );
    }
    if cut.any() {
        p.insert("truncated".into(), cut.to_json());
    }
    put(&mut p, "otel", otel);
    let mut ev = NewEvent::new("otel.log", p).with_event_id(format!("{key}.l"));
    ev.timestamp = ts;
    b.push(
        ev,
        EventMeta {
            item: c.item,
            pos: c.pos,
            unpriced: None,
            session: None,
        },
    );
}
