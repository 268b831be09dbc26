//! Spans: GenAI agent, tool and inference spans to agentpulse events, any
//! other span to `otel.span` (the table is in the module doc of
//! [`super`]).

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use serde_json::{Map, Value};

use super::attrs::{self, Cut};
use super::ledger::{AgentRef, Charge, SpanKey};
use super::{
    cost_of, hex_id, label_passes, otel_object, secs, Batch, Decoded, EventMeta, Mapper, Problem,
    Tokens,
};
use crate::event::NewEvent;

/// What a GenAI span is, by `gen_ai.operation.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Agent,
    Tool,
    Inference,
    Other,
}

fn classify(op: Option<&str>) -> Kind {
    match op {
        Some("invoke_agent") => Kind::Agent,
        Some("execute_tool") => Kind::Tool,
        Some("chat" | "generate_content" | "text_completion" | "embeddings") => Kind::Inference,
        _ => Kind::Other,
    }
}

/// The GenAI attributes of a span, read in one pass.
#[derive(Debug, Default)]
struct GenAi<'a> {
    op: Option<&'a str>,
    agent_name: Option<&'a str>,
    agent_id: Option<&'a str>,
    conversation: Option<&'a str>,
    request_model: Option<&'a str>,
    response_model: Option<&'a str>,
    provider: Option<&'a str>,
    system: Option<&'a str>,
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
    cost: Option<f64>,
    error_type: Option<&'a str>,
    tool_name: Option<&'a str>,
    tool_call_id: Option<&'a str>,
    tool_type: Option<&'a str>,
    response_id: Option<&'a str>,
    finish_reasons: Option<&'a V>,
}

fn nonempty(v: &V) -> Option<&str> {
    attrs::as_str(v).filter(|s| !s.trim().is_empty())
}

impl<'a> GenAi<'a> {
    fn read(list: &'a [KeyValue]) -> GenAi<'a> {
        let mut g = GenAi::default();
        for kv in list {
            // Only a few keys matter; most spans carry others too.
            if !(kv.key.starts_with("gen_ai.") || kv.key == "error.type" || kv.key == "cost_usd") {
                continue;
            }
            let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
                continue;
            };
            // The first of repeated keys wins, as in `attrs::get`.
            macro_rules! set {
                ($f:ident, $e:expr) => {
                    if g.$f.is_none() {
                        g.$f = $e;
                    }
                };
            }
            match kv.key.as_str() {
                "gen_ai.operation.name" => set!(op, nonempty(v)),
                "gen_ai.agent.name" => set!(agent_name, nonempty(v)),
                "gen_ai.agent.id" => set!(agent_id, nonempty(v)),
                "gen_ai.conversation.id" => set!(conversation, nonempty(v)),
                "gen_ai.request.model" => set!(request_model, nonempty(v)),
                "gen_ai.response.model" => set!(response_model, nonempty(v)),
                "gen_ai.provider.name" => set!(provider, nonempty(v)),
                "gen_ai.system" => set!(system, nonempty(v)),
                "gen_ai.usage.input_tokens" | "gen_ai.usage.prompt_tokens" => {
                    set!(input, attrs::as_count(v))
                }
                "gen_ai.usage.output_tokens" | "gen_ai.usage.completion_tokens" => {
                    set!(output, attrs::as_count(v))
                }
                "gen_ai.usage.cache_read.input_tokens" | "gen_ai.usage.cache_read_input_tokens" => {
                    set!(cache_read, attrs::as_count(v))
                }
                "gen_ai.usage.cache_creation.input_tokens"
                | "gen_ai.usage.cache_creation_input_tokens" => {
                    set!(cache_write, attrs::as_count(v))
                }
                "gen_ai.usage.cost" | "gen_ai.usage.cost_usd" | "cost_usd" => {
                    set!(cost, attrs::as_f64(v))
                }
                "error.type" => set!(error_type, nonempty(v)),
                "gen_ai.tool.name" => set!(tool_name, nonempty(v)),
                "gen_ai.tool.call.id" => set!(tool_call_id, nonempty(v)),
                "gen_ai.tool.type" => set!(tool_type, nonempty(v)),
                "gen_ai.response.id" => set!(response_id, nonempty(v)),
                "gen_ai.response.finish_reasons" => set!(finish_reasons, Some(v)),
                _ => {}
            }
        }
        g
    }

    /// Disjoint tokens: the conventions count cache reads and writes in
    /// `input_tokens`.
    fn tokens(&self) -> Tokens {
        let cache_read = self.cache_read.unwrap_or(0);
        let cache_write = self.cache_write.unwrap_or(0);
        Tokens {
            input: self
                .input
                .unwrap_or(0)
                .saturating_sub(cache_read.saturating_add(cache_write)),
            output: self.output.unwrap_or(0),
            cache_read,
            cache_write,
        }
    }

    fn has_usage(&self) -> bool {
        self.cost.is_some()
            || self.input.is_some_and(|n| n > 0)
            || self.output.is_some_and(|n| n > 0)
            || self.cache_read.is_some_and(|n| n > 0)
            || self.cache_write.is_some_and(|n| n > 0)
    }

    fn model(&self) -> Option<&'a str> {
        self.request_model.or(self.response_model)
    }
}

/// One span that passed the checks.
struct Item<'a> {
    item: usize,
    pos: (usize, usize, usize),
    span: &'a Span,
    service: Option<&'a str>,
    scope: Option<&'a str>,
    g: GenAi<'a>,
    kind: Kind,
    key: SpanKey,
    trace: String,
    span_hex: String,
    parent_hex: Option<String>,
    start: f64,
    end: f64,
    charge: Option<Charge>,
    /// The run of the nearest agent span above, when known.
    enclosing: Option<AgentRef>,
    /// Its own run, for an agent span.
    agent: Option<AgentRef>,
}

/// The JSON path of an item.
pub(crate) fn path(keys: [&str; 3], pos: (usize, usize, usize)) -> String {
    format!(
        "{}[{}].{}[{}].{}[{}]",
        keys[0], pos.0, keys[1], pos.1, keys[2], pos.2
    )
}

pub(crate) const KEYS: [&str; 3] = ["resourceSpans", "scopeSpans", "spans"];

/// Why a span is refused, if it is.
fn check(span: &Span) -> Result<(), String> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|&b| b == 0) {
        return Err(format!(
            "trace_id: expected 16 bytes, not all zero, got {}",
            if span.trace_id.is_empty() {
                "none".to_owned()
            } else {
                format!("{} bytes", span.trace_id.len())
            }
        ));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|&b| b == 0) {
        return Err(format!(
            "span_id: expected 8 bytes, not all zero, got {}",
            if span.span_id.is_empty() {
                "none".to_owned()
            } else {
                format!("{} bytes", span.span_id.len())
            }
        ));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(format!(
            "parent_span_id: expected 8 bytes or none, got {} bytes",
            span.parent_span_id.len()
        ));
    }
    if span.start_time_unix_nano == 0 {
        return Err("start_time_unix_nano: missing".into());
    }
    if span.end_time_unix_nano == 0 {
        return Err("end_time_unix_nano: missing (a span is exported once it ends)".into());
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(format!(
            "end_time_unix_nano ({}) is before start_time_unix_nano ({})",
            span.end_time_unix_nano, span.start_time_unix_nano
        ));
    }
    Ok(())
}

fn be_u128(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    u128::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    if b.len() != 8 {
        return 0;
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

pub(super) fn map(m: &Mapper, d: &Decoded<ExportTraceServiceRequest>) -> Batch {
    let total: usize = d
        .request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    // Agent spans give two events; most give one.
    let mut b = Batch {
        warnings: d.warnings.clone(),
        events: Vec::with_capacity(total * 5 / 4 + 4),
        meta: Vec::with_capacity(total * 5 / 4 + 4),
        ..Batch::default()
    };
    let mut items: Vec<Item<'_>> = Vec::with_capacity(total);
    let mut n = 0usize;
    for (r, rs) in d.request.resource_spans.iter().enumerate() {
        let service = rs
            .resource
            .as_ref()
            .and_then(|res| attrs::str_attr(&res.attributes, "service.name"));
        for (s, ss) in rs.scope_spans.iter().enumerate() {
            let scope = ss
                .scope
                .as_ref()
                .map(|sc| sc.name.as_str())
                .filter(|n| !n.is_empty());
            for (i, span) in ss.spans.iter().enumerate() {
                let item = n;
                n += 1;
                let pos = (r, s, i);
                let problem = match d.broken.get(&pos) {
                    Some(why) => Err(why.clone()),
                    None => check(span),
                };
                if let Err(message) = problem {
                    b.rejected.push(Problem {
                        item,
                        path: named_path(pos, span),
                        message,
                    });
                    continue;
                }
                let g = GenAi::read(&span.attributes);
                let kind = classify(g.op);
                let key = (be_u128(&span.trace_id), be_u64(&span.span_id));
                // Spans of one trace come together: its hex once.
                let trace = match items.last() {
                    Some(prev) if prev.key.0 == key.0 => prev.trace.clone(),
                    _ => const_hex::encode(&span.trace_id),
                };
                let agent = (kind == Kind::Agent).then(|| AgentRef {
                    agent: Arc::from(agent_name(&g, service)),
                    task: Arc::from(g.conversation.unwrap_or(&trace)),
                });
                items.push(Item {
                    item,
                    pos,
                    span,
                    service,
                    scope,
                    kind,
                    key,
                    span_hex: const_hex::encode(&span.span_id),
                    parent_hex: hex_id(&span.parent_span_id),
                    trace,
                    start: span.start_time_unix_nano as f64 / 1e9,
                    end: span.end_time_unix_nano as f64 / 1e9,
                    g,
                    charge: None,
                    enclosing: None,
                    agent,
                });
            }
        }
    }
    b.items = n;
    // The ledger's part, under its lock; building the events needs none.
    {
        let mut ledger = super::lock(&m.ledger);
        for it in &mut items {
            ledger.note(it.key, be_u64(&it.span.parent_span_id), it.agent.take());
        }
        // Model calls are decided before agent runs (see `ledger`).
        for pass in [Kind::Inference, Kind::Agent] {
            for it in items.iter_mut().filter(|it| it.kind == pass) {
                if it.g.has_usage() {
                    it.charge = Some(ledger.decide(it.key));
                }
            }
        }
        for it in items.iter_mut().filter(|it| it.kind != Kind::Agent) {
            it.enclosing = ledger.enclosing_agent(it.key).cloned();
        }
    }
    for it in &items {
        emit(m, &mut b, it);
    }
    b
}

fn named_path(pos: (usize, usize, usize), span: &Span) -> String {
    let mut p = path(KEYS, pos);
    if !span.name.is_empty() {
        let mut cut = Cut::default();
        p.push_str(&format!(
            " ({:?})",
            attrs::bounded_str(&span.name, 64, &mut cut)
        ));
    }
    p
}

fn agent_name<'a>(g: &GenAi<'a>, service: Option<&'a str>) -> &'a str {
    g.agent_name.or(g.agent_id).or(service).unwrap_or("agent")
}

fn status_of(span: &Span, g: &GenAi<'_>) -> &'static str {
    let error = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32);
    if error || g.error_type.is_some() {
        "failed"
    } else {
        "success"
    }
}

fn put(p: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
    p.insert(k.to_owned(), v.into());
}

fn put_opt(p: &mut Map<String, Value>, k: &str, v: Option<&str>) {
    if let Some(v) = v {
        p.insert(k.to_owned(), Value::String(v.to_owned()));
    }
}

fn emit(m: &Mapper, b: &mut Batch, it: &Item<'_>) {
    let span = it.span;
    let g = &it.g;
    let mut cut = Cut::default();
    let has_evals = it
        .span
        .events
        .iter()
        .any(|e| e.name == "gen_ai.evaluation.result");
    let mut otel = otel_object(
        Some(&it.trace),
        Some(&it.span_hex),
        it.parent_hex.as_deref(),
        it.service,
    );
    let meta = |unpriced: Option<Arc<str>>| EventMeta {
        item: it.item,
        pos: it.pos,
        unpriced,
        session: None,
    };
    let id = |suffix: &str| format!("{}{}.{suffix}", it.trace, it.span_hex);
    // From the nanoseconds: seconds as f64 lose the sub-microsecond part.
    let duration_ms = (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6;
    let model = g.model().and_then(|x| attrs::name(x, &mut cut));
    // A model call or tool inherits the run of its agent when known.
    let enclosing = it.enclosing.clone();
    let task = |own: Option<&str>| -> String {
        own.map(str::to_owned)
            .or_else(|| enclosing.as_ref().map(|a| a.task.to_string()))
            .unwrap_or_else(|| it.trace.clone())
    };
    match it.kind {
        Kind::Agent => {
            let agent =
                attrs::name(agent_name(g, it.service), &mut cut).unwrap_or_else(|| "agent".into());
            let task_id = attrs::name(g.conversation.unwrap_or(&it.trace), &mut cut)
                .unwrap_or_else(|| it.trace.clone());
            let model = model.unwrap_or_else(|| "unknown".into());
            let mut start = Map::new();
            put(&mut start, "agent", agent.as_str());
            put(&mut start, "task_id", task_id.as_str());
            put(&mut start, "model", model.as_str());
            put(&mut start, "tools", Value::Array(Vec::new()));
            put(&mut start, "operation", "invoke_agent");
            put_opt(&mut start, "provider", g.provider.or(g.system));
            put(&mut start, "otel", otel.clone());
            b.push(
                NewEvent::new("agent_started", start)
                    .with_timestamp(it.start)
                    .with_event_id(id("s")),
                meta(None),
            );
            let mut end = Map::new();
            put(&mut end, "agent", agent);
            put(&mut end, "task_id", task_id);
            put(&mut end, "status", status_of(span, g));
            put(&mut end, "duration_ms", duration_ms);
            let unpriced = usage_fields(m, &mut end, g, &[model.as_str()], it.charge, false);
            put(&mut end, "model", model);
            put_opt(&mut end, "error_type", g.error_type);
            status_message(&mut end, span);
            put(&mut end, "otel", last_use(&mut otel, has_evals));
            b.push(
                NewEvent::new("agent_completed", end)
                    .with_timestamp(it.end)
                    .with_event_id(id("e")),
                meta(unpriced),
            );
        }
        Kind::Tool => {
            let tool = attrs::name(g.tool_name.unwrap_or(&span.name), &mut cut)
                .unwrap_or_else(|| "tool".into());
            let mut p = Map::new();
            put(&mut p, "tool", tool);
            put(
                &mut p,
                "task_id",
                attrs::name(&task(g.conversation), &mut cut).unwrap_or_default(),
            );
            agent_field(&mut p, g, enclosing.as_ref(), &mut cut);
            put(&mut p, "status", status_of(span, g));
            put(&mut p, "duration_ms", duration_ms);
            put_opt(&mut p, "tool_call_id", g.tool_call_id);
            put_opt(&mut p, "tool_type", g.tool_type);
            put_opt(&mut p, "error_type", g.error_type);
            status_message(&mut p, span);
            put(&mut p, "otel", last_use(&mut otel, has_evals));
            b.push(
                NewEvent::new("tool_executed", p)
                    .with_timestamp(it.end)
                    .with_event_id(id("t")),
                meta(None),
            );
        }
        Kind::Inference => {
            let model_s = model.unwrap_or_else(|| "unknown".into());
            let mut p = Map::new();
            put(
                &mut p,
                "task_id",
                attrs::name(&task(g.conversation), &mut cut).unwrap_or_default(),
            );
            agent_field(&mut p, g, enclosing.as_ref(), &mut cut);
            put(&mut p, "model", model_s.as_str());
            put_opt(&mut p, "operation", g.op);
            put_opt(&mut p, "provider", g.provider.or(g.system));
            put(&mut p, "status", status_of(span, g));
            put(&mut p, "duration_ms", duration_ms);
            let other = g.response_model.filter(|r| Some(*r) != g.request_model);
            let models: Vec<&str> = std::iter::once(model_s.as_str()).chain(other).collect();
            let unpriced = usage_fields(m, &mut p, g, &models, it.charge, true);
            put_opt(&mut p, "response_id", g.response_id);
            if let Some(f) = g.finish_reasons {
                let mut c = Cut::default();
                let v = attrs::any_to_json(
                    Some(&opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(f.clone()),
                    }),
                    1,
                    &mut c,
                );
                p.insert("finish_reasons".into(), v);
            }
            put_opt(&mut p, "error_type", g.error_type);
            status_message(&mut p, span);
            put(&mut p, "otel", last_use(&mut otel, has_evals));
            b.push(
                NewEvent::new("llm_call", p)
                    .with_timestamp(it.end)
                    .with_event_id(id("l")),
                meta(unpriced),
            );
        }
        Kind::Other => {
            let mut p = Map::new();
            put(
                &mut p,
                "name",
                attrs::bounded_str(&span.name, attrs::MAX_NAME_BYTES, &mut cut),
            );
            put(&mut p, "kind", span_kind(span.kind));
            put(
                &mut p,
                "status",
                match span.status.as_ref().map(|s| s.code) {
                    Some(1) => "ok",
                    Some(2) => "error",
                    _ => "unset",
                },
            );
            status_message(&mut p, span);
            put(&mut p, "start_time", it.start);
            put(&mut p, "end_time", it.end);
            put(&mut p, "duration_ms", duration_ms);
            put_opt(&mut p, "scope", it.scope);
            if let Some(a) = &enclosing {
                put(&mut p, "task_id", a.task.as_ref());
                put(&mut p, "agent", a.agent.as_ref());
            }
            let a = attrs::to_object(&span.attributes, &mut cut);
            p.insert("attributes".into(), Value::Object(a));
            if !span.events.is_empty() {
                put(&mut p, "span_events", span.events.len() as u64);
            }
            if span.dropped_attributes_count > 0 {
                put(
                    &mut p,
                    "dropped_attributes_count",
                    span.dropped_attributes_count,
                );
            }
            if cut.any() {
                p.insert("truncated".into(), cut.to_json());
            }
            put(&mut p, "otel", last_use(&mut otel, has_evals));
            b.push(
                NewEvent::new("otel.span", p)
                    .with_timestamp(it.end)
                    .with_event_id(id("o")),
                meta(None),
            );
        }
    }
    if has_evals {
        evaluations(b, it, &otel, &task(g.conversation));
    }
    if cut.any() {
        b.truncated.push(Problem {
            item: it.item,
            path: named_path(it.pos, span),
            message: format!(
                "{} attributes left out, {} values shortened",
                cut.dropped, cut.shortened
            ),
        });
    }
}

/// The span's `otel` object for its last event: moved, unless evaluation
/// events still need it.
fn last_use(otel: &mut Value, needed_after: bool) -> Value {
    if needed_after {
        otel.clone()
    } else {
        std::mem::take(otel)
    }
}

fn agent_field(
    p: &mut Map<String, Value>,
    g: &GenAi<'_>,
    enclosing: Option<&AgentRef>,
    cut: &mut Cut,
) {
    let agent = g
        .agent_name
        .map(str::to_owned)
        .or_else(|| enclosing.map(|a| a.agent.to_string()));
    if let Some(a) = agent.and_then(|a| attrs::name(&a, cut)) {
        put(p, "agent", a);
    }
}

fn status_message(p: &mut Map<String, Value>, span: &Span) {
    if let Some(s) = span.status.as_ref().filter(|s| !s.message.is_empty()) {
        let mut c = Cut::default();
        put(
            p,
            "status_message",
            attrs::bounded_str(&s.message, attrs::MAX_VALUE_BYTES, &mut c),
        );
    }
}

/// Tokens, `cost_usd`, `cost_source` and, when the cost is counted
/// elsewhere, `cost_counted_in`; returns the model it could not price.
/// With `always`, input and output tokens are given even when not
/// reported (0; `cost_source: none` tells).
fn usage_fields(
    m: &Mapper,
    p: &mut Map<String, Value>,
    g: &GenAi<'_>,
    models: &[&str],
    charge: Option<Charge>,
    always: bool,
) -> Option<Arc<str>> {
    let tokens = g.tokens();
    if g.input.is_some() || always {
        put(p, "input_tokens", g.input.unwrap_or(0));
    }
    if g.output.is_some() || always {
        put(p, "output_tokens", g.output.unwrap_or(0));
    }
    if let Some(n) = g.cache_read {
        put(p, "cache_read_tokens", n);
    }
    if let Some(n) = g.cache_write {
        put(p, "cache_creation_tokens", n);
    }
    let models: Vec<Option<&str>> = models.iter().map(|m| Some(*m)).collect();
    let c = cost_of(&m.prices, g.cost, &models, &tokens);
    match charge {
        None | Some(Charge::Charged) => {
            put(p, "cost_usd", c.cost);
            put(p, "cost_source", c.source);
            c.unpriced
        }
        Some(other) => {
            put(p, "cost_usd", 0.0);
            put(p, "cost_source", c.source);
            put(
                p,
                "cost_counted_in",
                match other {
                    Charge::CountedBelow => "model_calls".to_owned(),
                    Charge::CountedAbove(a) => format!("{a:016x}"),
                    Charge::Charged => unreachable!(),
                },
            );
            None
        }
    }
}

fn span_kind(k: i32) -> &'static str {
    match k {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// `gen_ai.evaluation.result` span events as `validation_complete`s.
fn evaluations(b: &mut Batch, it: &Item<'_>, otel: &Value, task_id: &str) {
    for (n, ev) in it.span.events.iter().enumerate() {
        if ev.name != "gen_ai.evaluation.result" {
            continue;
        }
        let ts = secs(ev.time_unix_nano).unwrap_or(it.end);
        let p = evaluation_payload(&ev.attributes, task_id, otel.clone());
        b.push(
            NewEvent::new("validation_complete", p)
                .with_timestamp(ts)
                .with_event_id(format!("{}{}.v{n}", it.trace, it.span_hex)),
            EventMeta {
                item: it.item,
                pos: it.pos,
                unpriced: None,
                session: None,
            },
        );
    }
}

/// The payload of a `validation_complete` from an evaluation's attributes.
pub(crate) fn evaluation_payload(
    list: &[KeyValue],
    task_id: &str,
    otel: Value,
) -> Map<String, Value> {
    let mut cut = Cut::default();
    let label = attrs::str_attr(list, "gen_ai.evaluation.score.label");
    let score = attrs::get(list, "gen_ai.evaluation.score.value").and_then(attrs::as_f64);
    let error = attrs::str_attr(list, "error.type");
    let passed = if error.is_some() {
        false
    } else {
        label
            .and_then(label_passes)
            .or(score.map(|s| s >= 0.5))
            .unwrap_or(false)
    };
    let mut result = Map::new();
    result.insert("passed".into(), Value::Bool(passed));
    if let Some(n) = attrs::str_attr(list, "gen_ai.evaluation.name") {
        result.insert(
            "name".into(),
            attrs::bounded_str(n, attrs::MAX_NAME_BYTES, &mut cut).into(),
        );
    }
    if let Some(s) = score {
        result.insert("score".into(), s.into());
    }
    if let Some(l) = label {
        result.insert(
            "label".into(),
            attrs::bounded_str(l, attrs::MAX_NAME_BYTES, &mut cut).into(),
        );
    }
    if let Some(e) = attrs::str_attr(list, "gen_ai.evaluation.explanation") {
        result.insert(
            "explanation".into(),
            attrs::bounded_str(e, attrs::MAX_VALUE_BYTES, &mut cut).into(),
        );
    }
    if let Some(e) = error {
        result.insert("error_type".into(), e.into());
    }
    if let Some(r) = attrs::str_attr(list, "gen_ai.response.id") {
        result.insert("response_id".into(), r.into());
    }
    let mut p = Map::new();
    put(
        &mut p,
        "task_id",
        attrs::name(task_id, &mut cut).unwrap_or_default(),
    );
    p.insert("result".into(), Value::Object(result));
    put(&mut p, "cost", 0.0);
    put(&mut p, "duration_ms", 0.0);
    put(&mut p, "screenshots", 0u64);
    put(&mut p, "otel", otel);
    p
}
