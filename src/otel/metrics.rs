//! Metric points: GenAI and Claude Code token and cost counters become
//! per-model counters ([`ModelUsage`]); other points are counted and not
//! stored.
//!
//! | metric | kind | attributes read | counts |
//! |---|---|---|---|
//! | `gen_ai.client.token.usage` | histogram (its `sum`) | `gen_ai.token.type` (`input`, `output`), `gen_ai.response.model`, else `gen_ai.request.model` | tokens; cost from the price table (input tokens at the input price) |
//! | `claude_code.token.usage` | sum | `type` (`input`, `output`, `cacheRead`, `cacheCreation`), `model` | tokens |
//! | `claude_code.cost.usage` | sum | `model` | `cost_usd` (Claude Code's own) |
//!
//! **Temporality.** A delta point adds its value. A cumulative point adds
//! what it grew by since the last point of its stream (a stream: the
//! resource's attributes, the scope, the metric and the point's
//! attributes); the first point of a stream, or one after a reset (a new
//! start time, or a smaller value), adds its whole value. A point no newer
//! than the last one taken of its stream (an exporter's retry) adds
//! nothing (`points_skipped`). At most [`STREAMS`] streams are followed,
//! oldest forgotten first. A point with a negative or non-finite value is
//! rejected and named in `partial_success`.
//!
//! These counters live in memory, since the hub started; they are a view
//! of what the metric points say and are kept apart from the KPIs, which
//! come from events (so Claude Code sending both `api_request` records and
//! `cost.usage` points counts each call once in each view). At most
//! [`MAX_MODELS`] models are kept; others add to `(other)`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point, Metric};
use serde::Serialize;

use super::attrs;
use super::spans::path;
use super::{Batch, Counters, Decoded, Prices, Problem, Tokens};

pub(crate) const KEYS: [&str; 3] = ["resourceMetrics", "scopeMetrics", "metrics"];

/// Most models with counters of their own.
pub const MAX_MODELS: usize = 1000;

/// Most metric streams followed (for cumulative points and retries).
pub const STREAMS: usize = 10_000;

/// Counters keyed by a name, at most [`MAX_MODELS`] names; the rest add to
/// `(other)`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Bounded<T> {
    map: BTreeMap<String, T>,
}

impl<T: Default> Bounded<T> {
    /// The entry of `name` (or of `(other)` when full).
    pub fn entry(&mut self, name: &str) -> &mut T {
        let name = name.trim();
        let key = if self.map.contains_key(name) || self.map.len() < MAX_MODELS {
            let mut cut = attrs::Cut::default();
            attrs::name(name, &mut cut).unwrap_or_else(|| "unknown".into())
        } else {
            "(other)".to_owned()
        };
        self.map.entry(key).or_default()
    }

    /// The entries, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Names kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Bounded<u64> {
    /// Adds `n` to `name`.
    pub fn add(&mut self, name: &str, n: u64) {
        *self.entry(name) += n;
    }
}

/// One model's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ModelCounters {
    /// Input tokens (as the metric counts them).
    pub input_tokens: f64,
    /// Output tokens.
    pub output_tokens: f64,
    /// Tokens read from a cache.
    pub cache_read_tokens: f64,
    /// Tokens written to a cache.
    pub cache_creation_tokens: f64,
    /// USD.
    pub cost_usd: f64,
    /// Data points taken.
    pub data_points: u64,
}

/// Per-model counters from metric points.
pub type ModelUsage = Bounded<ModelCounters>;

#[derive(Debug, Clone, Copy)]
struct Stream {
    start: u64,
    time: u64,
    value: f64,
}

/// The metric streams followed, for cumulative points and retries.
#[derive(Debug, Default)]
pub struct Streams {
    last: HashMap<u64, Stream>,
    order: VecDeque<u64>,
}

impl Streams {
    /// What point (`start`, `time`, `value`) of stream `key` adds, `None`
    /// when it adds nothing (not newer than the last one taken).
    fn delta(
        &mut self,
        key: u64,
        cumulative: bool,
        start: u64,
        time: u64,
        value: f64,
    ) -> Option<f64> {
        let prev = self.last.get(&key).copied();
        if let Some(p) = prev {
            if time != 0 && time <= p.time {
                return None;
            }
        }
        let add = match (cumulative, prev) {
            (true, Some(p)) if p.start == start && value >= p.value => value - p.value,
            _ => value,
        };
        if prev.is_none() {
            if self.last.len() >= STREAMS {
                if let Some(old) = self.order.pop_front() {
                    self.last.remove(&old);
                }
            }
            self.order.push_back(key);
        }
        self.last.insert(key, Stream { start, time, value });
        Some(add)
    }
}

fn hash_attrs(h: &mut DefaultHasher, list: &[KeyValue]) {
    for kv in list {
        kv.key.hash(h);
        // The JSON form hashes any value kind, bounded.
        let mut cut = attrs::Cut::default();
        attrs::any_to_json(kv.value.as_ref(), 1, &mut cut)
            .to_string()
            .hash(h);
    }
}

/// Which counter a point adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    Input,
    Output,
    CacheRead,
    CacheCreation,
    Cost,
}

fn token_counter(t: Option<&str>) -> Option<Counter> {
    match t? {
        "input" | "prompt" => Some(Counter::Input),
        "output" | "completion" => Some(Counter::Output),
        "cacheRead" | "cache_read" => Some(Counter::CacheRead),
        "cacheCreation" | "cache_creation" => Some(Counter::CacheCreation),
        _ => None,
    }
}

pub(super) fn take(
    m: &mut Counters,
    prices: &Prices,
    d: &Decoded<ExportMetricsServiceRequest>,
) -> Batch {
    let mut b = Batch {
        warnings: d.warnings.clone(),
        ..Batch::default()
    };
    let mut items = 0usize;
    for (ri, rm) in d.request.resource_metrics.iter().enumerate() {
        let res_attrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
        let mut base = DefaultHasher::new();
        hash_attrs(&mut base, res_attrs);
        for (si, sm) in rm.scope_metrics.iter().enumerate() {
            let mut scope_h = base.clone();
            sm.scope
                .as_ref()
                .map(|s| s.name.as_str())
                .hash(&mut scope_h);
            for (mi, metric) in sm.metrics.iter().enumerate() {
                let pos = (ri, si, mi);
                if let Some(why) = d.broken.get(&pos) {
                    items += 1;
                    b.rejected.push(Problem {
                        item: items - 1,
                        path: path(KEYS, pos),
                        message: why.clone(),
                    });
                    continue;
                }
                let mut h = scope_h.clone();
                metric.name.hash(&mut h);
                one_metric(m, prices, &mut b, &mut items, pos, metric, &h);
            }
        }
    }
    b.items = items;
    b
}

fn points_of(metric: &Metric) -> usize {
    match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// One point, read: attributes, start, time, value.
struct Point<'a> {
    attributes: &'a [KeyValue],
    start: u64,
    time: u64,
    value: Option<f64>,
}

fn one_metric(
    m: &mut Counters,
    prices: &Prices,
    b: &mut Batch,
    items: &mut usize,
    pos: (usize, usize, usize),
    metric: &Metric,
    stream: &DefaultHasher,
) {
    let name = metric.name.as_str();
    let (points, cumulative): (Vec<Point<'_>>, bool) = match (name, &metric.data) {
        ("gen_ai.client.token.usage", Some(Data::Histogram(h))) => (
            h.data_points
                .iter()
                .map(|p| Point {
                    attributes: &p.attributes,
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    value: p.sum,
                })
                .collect(),
            h.aggregation_temporality == 2,
        ),
        ("claude_code.token.usage" | "claude_code.cost.usage", Some(Data::Sum(s))) => (
            s.data_points
                .iter()
                .map(|p| Point {
                    attributes: &p.attributes,
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    value: match p.value {
                        Some(number_data_point::Value::AsDouble(x)) => Some(x),
                        Some(number_data_point::Value::AsInt(i)) => Some(i as f64),
                        None => None,
                    },
                })
                .collect(),
            s.aggregation_temporality == 2,
        ),
        _ => {
            let n = points_of(metric);
            *items += n;
            m.stats.points_ignored += n as u64;
            return;
        }
    };
    for (k, p) in points.iter().enumerate() {
        let item = *items;
        *items += 1;
        let Some(value) = p.value.filter(|v| v.is_finite() && *v >= 0.0) else {
            b.rejected.push(Problem {
                item,
                path: format!("{}.dataPoints[{k}] ({name:?})", path(KEYS, pos)),
                message: match p.value {
                    None => "value: missing".to_owned(),
                    Some(v) => format!("value: expected a finite number >= 0, got {v}"),
                },
            });
            continue;
        };
        let (model, counter) = match name {
            "gen_ai.client.token.usage" => (
                attrs::str_attr(p.attributes, "gen_ai.response.model")
                    .or_else(|| attrs::str_attr(p.attributes, "gen_ai.request.model")),
                token_counter(attrs::str_attr(p.attributes, "gen_ai.token.type")),
            ),
            "claude_code.token.usage" => (
                attrs::str_attr(p.attributes, "model"),
                token_counter(attrs::str_attr(p.attributes, "type")),
            ),
            _ => (attrs::str_attr(p.attributes, "model"), Some(Counter::Cost)),
        };
        let Some(counter) = counter else {
            // A token type these counters do not keep.
            m.stats.points_ignored += 1;
            continue;
        };
        let mut h = stream.clone();
        hash_attrs(&mut h, p.attributes);
        let Some(add) = m
            .streams
            .delta(h.finish(), cumulative, p.start, p.time, value)
        else {
            m.stats.points_skipped += 1;
            continue;
        };
        let model = model.unwrap_or("unknown");
        // GenAI token points carry no cost: price them.
        let mut cost = 0.0;
        let mut unpriced = false;
        if name == "gen_ai.client.token.usage" && add > 0.0 {
            let tokens = Tokens {
                input: if counter == Counter::Input {
                    add as u64
                } else {
                    0
                },
                output: if counter == Counter::Output {
                    add as u64
                } else {
                    0
                },
                ..Tokens::default()
            };
            match prices.get(model) {
                Some(price) => cost = price.cost(&tokens),
                None => unpriced = true,
            }
        }
        let c = m.usage.entry(model);
        c.data_points += 1;
        match counter {
            Counter::Input => c.input_tokens += add,
            Counter::Output => c.output_tokens += add,
            Counter::CacheRead => c.cache_read_tokens += add,
            Counter::CacheCreation => c.cache_creation_tokens += add,
            Counter::Cost => c.cost_usd += add,
        }
        c.cost_usd += cost;
        if unpriced {
            m.unpriced.add(model, 1);
        }
        m.stats.points_used += 1;
    }
}
