//! Reading OTLP attributes: typed lookups that accept what real senders
//! send (Claude Code sends numbers as strings), and a bounded conversion of
//! attribute lists to JSON for `otel.span` / `otel.log` events.
//!
//! # Bounds (the truncation rule)
//!
//! An attribute list copied into an event keeps at most [`MAX_ATTRS`]
//! attributes (the first ones, in the sender's order; keys longer than
//! [`MAX_KEY_BYTES`] are cut); a string value keeps at most
//! [`MAX_VALUE_BYTES`] bytes (cut at a character boundary, `…` appended);
//! an array at most [`MAX_ARRAY_ITEMS`] items; a nested key-value list at
//! most [`MAX_ATTRS`] entries and [`MAX_NESTING`] levels; bytes become
//! hex of at most half as many bytes. All the copied text of one event
//! stays within [`ATTR_BUDGET`] bytes: past it, further attributes are
//! left out. Whatever was cut is counted ([`Cut`]) and reported in the
//! event (`truncated`) and in the response's `partial_success` message. A
//! value that is neither set nor known becomes `null`.

use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use serde_json::{Map, Value};

/// Most attributes copied into one event.
pub const MAX_ATTRS: usize = 64;
/// Longest string value copied, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Longest key copied, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Most items of an array copied.
pub const MAX_ARRAY_ITEMS: usize = 32;
/// Deepest nesting of arrays and key-value lists copied.
pub const MAX_NESTING: usize = 4;
/// Most bytes of keys and values copied into one event (well within the
/// schema's 64 KiB payload limit).
pub const ATTR_BUDGET: usize = 16 * 1024;
/// Longest name (agent, tool, model, task) put in a mapped event, in bytes:
/// the schema's limit for names.
pub const MAX_NAME_BYTES: usize = 256;

/// The value of `key` in `attrs` (the first, if the sender repeated it).
pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a V> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// A string value (only string values: a number is not a name).
pub fn as_str(v: &V) -> Option<&str> {
    match v {
        V::StringValue(s) => Some(s),
        _ => None,
    }
}

/// A non-empty string attribute.
pub fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    get(attrs, key)
        .and_then(as_str)
        .filter(|s| !s.trim().is_empty())
}

/// A number: int, double, or a string holding one.
pub fn as_f64(v: &V) -> Option<f64> {
    let x = match v {
        V::IntValue(i) => *i as f64,
        V::DoubleValue(d) => *d,
        V::StringValue(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

/// A count: a non-negative integer (an int, an integral double, or a
/// string holding one).
pub fn as_count(v: &V) -> Option<u64> {
    match v {
        V::IntValue(i) => u64::try_from(*i).ok(),
        V::StringValue(s) => s.trim().parse::<u64>().ok().or_else(|| {
            let x: f64 = s.trim().parse().ok()?;
            count_of(x)
        }),
        V::DoubleValue(d) => count_of(*d),
        _ => None,
    }
}

fn count_of(x: f64) -> Option<u64> {
    (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < 9.0e15).then_some(x as u64)
}

/// A boolean, or the strings `"true"` / `"false"`.
pub fn as_bool(v: &V) -> Option<bool> {
    match v {
        V::BoolValue(b) => Some(*b),
        V::StringValue(s) => match s.trim() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// What a bounded copy cut, and the bytes it may still copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Attributes (or nested entries, array items) left out.
    pub dropped: u64,
    /// Values or keys shortened.
    pub shortened: u64,
    /// Bytes of text that may still be copied.
    pub left: usize,
}

impl Default for Cut {
    fn default() -> Self {
        Cut {
            dropped: 0,
            shortened: 0,
            left: ATTR_BUDGET,
        }
    }
}

impl Cut {
    /// Whether anything was cut.
    pub fn any(&self) -> bool {
        self.dropped > 0 || self.shortened > 0
    }

    /// The event's `truncated` object.
    pub fn to_json(self) -> Value {
        serde_json::json!({"dropped": self.dropped, "shortened": self.shortened})
    }
}

/// `s` cut to at most `max` bytes (and what is left of the budget) at a
/// character boundary, with `…` when cut.
pub fn bounded_str(s: &str, max: usize, cut: &mut Cut) -> String {
    let max = max.min(cut.left);
    if s.len() <= max {
        cut.left -= s.len();
        return s.to_owned();
    }
    cut.shortened += 1;
    cut.left -= max;
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    let mut out = String::with_capacity(i + 3);
    out.push_str(&s[..i]);
    out.push('…');
    out
}

/// A name for a mapped event: trimmed and at most [`MAX_NAME_BYTES`]
/// bytes (the schema refuses longer names), `None` when empty.
pub fn name(s: &str, cut: &mut Cut) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if t.len() <= MAX_NAME_BYTES {
        return Some(t.to_owned());
    }
    cut.shortened += 1;
    let mut i = MAX_NAME_BYTES;
    while !t.is_char_boundary(i) {
        i -= 1;
    }
    Some(t[..i].to_owned())
}

/// `attrs` as a JSON object, bounded (see the module doc).
pub fn to_object(attrs: &[KeyValue], cut: &mut Cut) -> Map<String, Value> {
    kv_object(attrs, 1, cut)
}

fn kv_object(list: &[KeyValue], depth: usize, cut: &mut Cut) -> Map<String, Value> {
    let mut out = Map::new();
    for (i, kv) in list.iter().enumerate() {
        // A key and a little of its value must fit in what is left.
        if i >= MAX_ATTRS || cut.left < kv.key.len().min(MAX_KEY_BYTES) + 8 {
            cut.dropped += (list.len() - i) as u64;
            break;
        }
        let key = bounded_str(&kv.key, MAX_KEY_BYTES, cut);
        out.insert(key, any_to_json(kv.value.as_ref(), depth, cut));
    }
    out
}

/// One value as JSON, bounded.
pub fn any_to_json(v: Option<&AnyValue>, depth: usize, cut: &mut Cut) -> Value {
    let Some(v) = v.and_then(|v| v.value.as_ref()) else {
        return Value::Null;
    };
    match v {
        V::StringValue(s) => Value::String(bounded_str(s, MAX_VALUE_BYTES, cut)),
        V::BoolValue(b) => Value::Bool(*b),
        V::IntValue(i) => Value::from(*i),
        V::DoubleValue(d) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            // NaN and infinities have no JSON form.
            .unwrap_or_else(|| Value::String(d.to_string())),
        V::BytesValue(b) => {
            use std::fmt::Write as _;
            let take = b.len().min(MAX_VALUE_BYTES.min(cut.left) / 2);
            cut.left -= take * 2;
            if take < b.len() {
                cut.shortened += 1;
            }
            let mut hex = String::with_capacity(take * 2);
            for x in &b[..take] {
                let _ = write!(hex, "{x:02x}");
            }
            Value::String(hex)
        }
        V::ArrayValue(a) if depth < MAX_NESTING => {
            if a.values.len() > MAX_ARRAY_ITEMS {
                cut.dropped += (a.values.len() - MAX_ARRAY_ITEMS) as u64;
            }
            Value::Array(
                a.values
                    .iter()
                    .take(MAX_ARRAY_ITEMS)
                    .map(|x| any_to_json(Some(x), depth + 1, cut))
                    .collect(),
            )
        }
        V::KvlistValue(l) if depth < MAX_NESTING => {
            Value::Object(kv_object(&l.values, depth + 1, cut))
        }
        V::ArrayValue(_) | V::KvlistValue(_) => {
            cut.dropped += 1;
            Value::Null
        }
        // Meant for profiles only: read as absent, as the spec says.
        V::StringValueStrindex(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(k: &str, v: V) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn typed_lookups_accept_strings() {
        let attrs = vec![
            kv("a", V::StringValue("12".into())),
            kv("b", V::IntValue(7)),
            kv("c", V::DoubleValue(3.0)),
            kv("d", V::StringValue("0.25".into())),
            kv("e", V::IntValue(-1)),
            kv("f", V::StringValue("true".into())),
        ];
        let n = |k| get(&attrs, k).and_then(as_count);
        assert_eq!(
            (n("a"), n("b"), n("c"), n("d"), n("e")),
            (Some(12), Some(7), Some(3), None, None)
        );
        assert_eq!(get(&attrs, "d").and_then(as_f64), Some(0.25));
        assert_eq!(get(&attrs, "f").and_then(as_bool), Some(true));
        assert_eq!(str_attr(&attrs, "b"), None);
        assert_eq!(str_attr(&attrs, "missing"), None);
    }

    #[test]
    fn copies_are_bounded_and_cuts_counted() {
        let mut attrs: Vec<KeyValue> = (0..10_000)
            .map(|i| kv(&format!("k{i}"), V::IntValue(i)))
            .collect();
        attrs.insert(0, kv("big", V::StringValue("é".repeat(5_000_000))));
        let deep = (0..10).fold(V::IntValue(1), |v, _| {
            V::ArrayValue(ArrayValue {
                values: vec![AnyValue { value: Some(v) }],
            })
        });
        attrs.insert(1, kv("deep", deep));
        attrs.insert(
            2,
            kv(
                "list",
                V::KvlistValue(KeyValueList {
                    values: (0..100)
                        .map(|i| kv(&i.to_string(), V::BoolValue(true)))
                        .collect(),
                }),
            ),
        );
        let mut cut = Cut::default();
        let o = to_object(&attrs, &mut cut);
        assert_eq!(o.len(), MAX_ATTRS);
        let big = o["big"].as_str().unwrap();
        assert!(big.len() <= MAX_VALUE_BYTES + 3 && big.ends_with('…'));
        assert_eq!(o["list"].as_object().unwrap().len(), MAX_ATTRS);
        assert!(cut.any());
        assert!(cut.dropped >= 10_000 - 61 + 36, "{cut:?}");
        // Many large values stay within the budget.
        let huge: Vec<KeyValue> = (0..1000)
            .map(|i| kv(&format!("k{i}"), V::StringValue("x".repeat(100_000))))
            .collect();
        let mut cut = Cut::default();
        let o = to_object(&huge, &mut cut);
        let size = serde_json::to_vec(&o).unwrap().len();
        assert!(size < ATTR_BUDGET + 2048, "{size}");
        assert!(cut.dropped > 900 && cut.shortened >= 10, "{cut:?}");
    }
}
