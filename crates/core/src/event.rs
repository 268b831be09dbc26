//! The event model and its wire format.
//!
//! # Wire format
//!
//! Every event leaves agentpulse as one JSON object, the same bytes on every
//! path: one line of the JSONL log (followed by `\n`), one WebSocket text
//! message (without the `\n`).
//!
//! ```json
//! {"id":42,"event_type":"agent_completed","timestamp":1729012421.567,"event_id":"sdk-7f3a","payload":{"agent":"scribe","status":"success"}}
//! ```
//!
//! | key          | type            | meaning                                                        |
//! |--------------|-----------------|----------------------------------------------------------------|
//! | `id`         | integer (u64)   | assigned by the pipeline; strictly increasing, never reused     |
//! | `event_type` | string          | matches `^[a-z][a-z0-9_.-]{0,63}$`                              |
//! | `timestamp`  | number          | Unix seconds (UTC) with a fraction, always written with a `.`   |
//! | `event_id`   | string          | only present when the sender gave one: its dedup key (≤128 B)   |
//! | `payload`    | object          | the event's fields, as sent                                    |
//!
//! Keys always appear in this order. This is a superset of the original
//! module's format (`event_type`, `timestamp`, `payload`), whose readers
//! ignore keys they do not know. Readers of agentpulse's format must ignore
//! unknown keys too: later versions may add some.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::swar;

/// The fields of an event, as a JSON object.
pub type Payload = Map<String, Value>;

/// Longest accepted client-chosen `event_id`, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 128;

/// Longest event type name.
pub const MAX_EVENT_TYPE_LEN: usize = 64;

/// The rule for event type names, as the error messages show it.
pub const TYPE_NAME_PATTERN: &str = "^[a-z][a-z0-9_.-]{0,63}$";

/// Whether `name` follows [`TYPE_NAME_PATTERN`]: the one check, used by
/// the schema (the hub) and the client alike.
pub fn is_valid_type_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_EVENT_TYPE_LEN
        && b[0].is_ascii_lowercase()
        && b[1..].iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

/// A JSON value's kind, as error messages name it ("a string", "null").
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An event that has been accepted by the pipeline and given its `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Pipeline-assigned id: strictly increasing, never reused.
    pub id: u64,
    /// The event's type, e.g. `agent_completed`.
    pub event_type: Arc<str>,
    /// Unix seconds (UTC) with a fraction.
    pub timestamp: f64,
    /// The sender's dedup key, when it gave one.
    pub event_id: Option<Box<str>>,
    /// The event's fields.
    pub payload: Payload,
}

/// An event as a producer hands it in, before validation and id assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event's type.
    pub event_type: Arc<str>,
    /// Unix seconds; the pipeline stamps the current time when absent.
    pub timestamp: Option<f64>,
    /// Optional dedup key chosen by the sender.
    pub event_id: Option<Box<str>>,
    /// The event's fields.
    pub payload: Payload,
}

impl NewEvent {
    /// A new event of `event_type` with `payload`, no timestamp and no dedup key.
    pub fn new(event_type: impl Into<Arc<str>>, payload: Payload) -> Self {
        NewEvent {
            event_type: event_type.into(),
            timestamp: None,
            event_id: None,
            payload,
        }
    }

    /// Sets the timestamp (Unix seconds).
    pub fn with_timestamp(mut self, timestamp: f64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the dedup key.
    pub fn with_event_id(mut self, event_id: impl Into<Box<str>>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }
}

/// An accepted event together with its serialised wire form, shared by every
/// consumer so that an event is serialised exactly once.
#[derive(Debug, Clone)]
pub struct Record {
    /// The event.
    pub event: Event,
    /// The wire form followed by `\n`: a JSONL line.
    pub line: Bytes,
}

impl Record {
    /// Serialises `event` once.
    pub fn new(event: Event) -> Self {
        let mut buf = Vec::with_capacity(128 + event.payload.len() * 32);
        write_wire(&event, &mut buf);
        buf.push(b'\n');
        Record {
            event,
            line: Bytes::from(buf),
        }
    }

    /// The wire form without the trailing newline: a WebSocket message.
    pub fn message(&self) -> Bytes {
        self.line.slice(..self.line.len() - 1)
    }
}

/// Serialises many events into shared chunks of memory: each record's
/// line is a slice of a chunk, so a line costs no allocation of its own
/// (the dispatcher's way; [`Record::new`] allocates one per event).
#[derive(Debug, Default)]
pub struct LineWriter {
    scratch: Vec<u8>,
    chunk: bytes::BytesMut,
}

/// Size of the chunks lines are cut from: ~900 events of 300 bytes.
const LINE_CHUNK: usize = 256 * 1024;

impl LineWriter {
    /// A writer with no chunk yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serialises `event` once; the same bytes as [`Record::new`].
    pub fn record(&mut self, event: Event) -> Record {
        self.scratch.clear();
        write_wire(&event, &mut self.scratch);
        self.scratch.push(b'\n');
        if self.chunk.capacity() < self.scratch.len() {
            // A fresh chunk: the old one lives on in the lines cut from it
            // until the last of them is dropped.
            self.chunk = bytes::BytesMut::with_capacity(LINE_CHUNK.max(self.scratch.len()));
        }
        self.chunk.extend_from_slice(&self.scratch);
        Record {
            event,
            line: self.chunk.split().freeze(),
        }
    }
}

/// A record shared between the dispatcher and every sink.
pub type SharedRecord = Arc<Record>;

/// Appends the wire form of `event` (no newline) to `out`.
pub fn write_wire(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(itoa::Buffer::new().format(event.id).as_bytes());
    out.extend_from_slice(b",\"event_type\":");
    write_json_string(&event.event_type, out);
    out.extend_from_slice(b",\"timestamp\":");
    write_timestamp(event.timestamp, out);
    if let Some(event_id) = &event.event_id {
        out.extend_from_slice(b",\"event_id\":");
        write_json_string(event_id, out);
    }
    out.extend_from_slice(b",\"payload\":");
    write_object(&event.payload, out);
    out.push(b'}');
}

// The payload is written by hand rather than through serde: the bytes are
// exactly serde_json's compact form (a property test compares them), but
// strings without anything to escape, most of them, are copied whole
// instead of byte by byte. That halved the dispatcher's serialising time.

/// Appends `map` as compact JSON.
fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(k, out);
        out.push(b':');
        write_value(v, out);
    }
    out.push(b'}');
}

/// Appends `v` as compact JSON.
fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            } else {
                // Floats exactly as serde_json formats them.
                serde_json::to_writer(&mut *out, n).expect("a number serialises");
            }
        }
        Value::String(s) => write_json_string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(x, out);
            }
            out.push(b']');
        }
        Value::Object(o) => write_object(o, out),
    }
}

/// Whether `b` holds a byte JSON strings must escape: a control character,
/// `"` or `\\`. Eight bytes at a time, then the tail one by one.
fn needs_escape(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = swar::word(c);
        // `|`, not `||`: three cheap tests beat two branches.
        if swar::has_byte_below(w, 0x20) | swar::has_byte(w, b'"') | swar::has_byte(w, b'\\') {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&x| x < 0x20 || x == b'"' || x == b'\\')
}

/// Appends `s` as a JSON string.
fn write_json_string(s: &str, out: &mut Vec<u8>) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("a string serialises");
    }
}

/// Writes a timestamp as a JSON number that always has a fraction, as the
/// contract requires (`1729012421.0`, never `1729012421`).
fn write_timestamp(ts: f64, out: &mut Vec<u8>) {
    if ts.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(ts).as_bytes());
    } else {
        // The pipeline refuses non-finite timestamps; this keeps the output
        // valid JSON should one ever get here.
        out.extend_from_slice(b"0.0");
    }
}

/// A line of a log that is not a valid event in the wire format.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WireError(String);

impl WireError {
    /// An error with this message (for readers of the format elsewhere, such
    /// as the log reader).
    pub fn new(message: String) -> Self {
        WireError(message)
    }
}

#[derive(Deserialize)]
struct WireEvent {
    id: u64,
    event_type: Box<str>,
    timestamp: f64,
    #[serde(default)]
    event_id: Option<Box<str>>,
    payload: Payload,
}

impl Event {
    /// Parses one event in the wire format (a JSONL line, without or with
    /// its newline).
    pub fn from_wire(bytes: &[u8]) -> Result<Event, WireError> {
        let w: WireEvent = serde_json::from_slice(bytes).map_err(|e| WireError(e.to_string()))?;
        Ok(Event {
            id: w.id,
            event_type: Arc::from(w.event_type),
            timestamp: w.timestamp,
            event_id: w.event_id,
            payload: w.payload,
        })
    }

    /// The payload's string field `key`, if it is a string.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.payload.get(key).and_then(Value::as_str)
    }

    /// The payload's numeric field `key`, if it is a number.
    pub fn f64_field(&self, key: &str) -> Option<f64> {
        self.payload.get(key).and_then(Value::as_f64)
    }
}

/// How far ahead of the receiving clock an event may be stamped: clock skew
/// between machines is tolerated, a timestamp further ahead is refused at
/// ingest (it would move the metrics' and budgets' notion of now).
pub const MAX_FUTURE_SECS: f64 = 86_400.0;

/// The current time as Unix seconds with a fraction.
pub fn now_unix() -> f64 {
    crate::clock::wall_now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        let payload = json!({"agent":"scribe","task_id":"t_001","cost_usd":0.12});
        Event {
            id: 42,
            event_type: Arc::from("agent_completed"),
            timestamp: 1729012421.567,
            event_id: None,
            payload: payload.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn wire_format_has_keys_in_documented_order() {
        let rec = Record::new(sample());
        let line = std::str::from_utf8(&rec.line).unwrap();
        assert!(line.ends_with('\n'));
        assert!(line.starts_with(
            r#"{"id":42,"event_type":"agent_completed","timestamp":1729012421.567,"payload":{"#
        ));
        assert_eq!(&rec.message()[..], line.trim_end().as_bytes());
    }

    #[test]
    fn integral_timestamp_keeps_a_fraction() {
        let mut e = sample();
        e.timestamp = 1729012421.0;
        let rec = Record::new(e);
        assert!(std::str::from_utf8(&rec.line)
            .unwrap()
            .contains(r#""timestamp":1729012421.0,"#));
    }

    #[test]
    fn round_trip_with_event_id_and_escapes() {
        let mut e = sample();
        e.event_id = Some("k\"1\n".into());
        e.event_type = Arc::from("circuit_breaker_open");
        let rec = Record::new(e.clone());
        let back = Event::from_wire(&rec.line).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn seed_format_lines_are_read_by_old_readers() {
        // An old reader only knows event_type, timestamp and payload.
        let rec = Record::new(sample());
        let v: Value = serde_json::from_slice(&rec.line).unwrap();
        assert_eq!(v["event_type"], "agent_completed");
        assert!(v["timestamp"].is_f64());
        assert_eq!(v["payload"]["agent"], "scribe");
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é😀/]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"\n]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The hand-written payload writer gives serde_json's bytes.
        #[test]
        fn payload_bytes_are_serde_jsons(v in json_value()) {
            let mut payload = Map::new();
            payload.insert("v".to_owned(), v);
            let mut ours = Vec::new();
            write_object(&payload, &mut ours);
            proptest::prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&payload).unwrap()
            );
        }
    }

    #[test]
    fn line_writer_gives_the_bytes_of_record_new_across_chunks() {
        let mut w = LineWriter::new();
        let mut lines = Vec::new();
        for id in 0..3000 {
            let mut e = sample();
            e.id = id;
            let r = w.record(e.clone());
            assert_eq!(r.line, Record::new(e).line);
            lines.push(r.line);
        }
        // Earlier lines are intact after later chunks were cut.
        let mut e = sample();
        e.id = 7;
        assert_eq!(lines[7], Record::new(e).line);
    }

    #[test]
    fn bad_wire_lines_are_errors() {
        assert!(Event::from_wire(b"{\"id\":1").is_err());
        assert!(
            Event::from_wire(b"{\"event_type\":\"x\",\"timestamp\":1.0,\"payload\":{}}").is_err()
        );
        assert!(Event::from_wire(b"\xff\xfe").is_err());
    }
}
