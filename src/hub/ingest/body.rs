//! Parsing ingest bodies (pure, no I/O): one JSON object, a JSON array of
//! objects, or NDJSON (one object per line).
//!
//! - A JSON body that is not valid JSON is refused whole (HTTP 400) with the
//!   line and column of the fault: without valid JSON there are no event
//!   boundaries to keep the others by.
//! - In NDJSON each line stands alone: a malformed line is rejected with its
//!   line number and the other lines are kept.
//! - An event whose JSON text is larger than the per-event limit is rejected
//!   on its own (`<type>.payload: larger than ...`); for a single-event body
//!   the hub answers 413.
//! - A body of more events than the per-request limit is refused whole
//!   (413) as soon as the limit is passed: memory per request stays
//!   bounded by the limits, whatever a small compressed body inflates to.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::event::NewEvent;
use crate::schema::{parse_new_event, parse_new_event_bytes, ValidationError};

/// One item of a body: its event, or why it is not one.
pub type Item = Result<NewEvent, ValidationError>;

/// The body as a whole could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    /// Not valid JSON.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Malformed {
        /// 1-based line of the fault.
        line: usize,
        /// 1-based column of the fault.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// Valid JSON, but neither an object nor an array.
    #[error("expected a JSON object or an array of objects, got {0}")]
    NotEvents(&'static str),
    /// A single event larger than the per-event limit.
    #[error("the event is {size} bytes, over the {limit}-byte limit")]
    EventTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An empty body.
    #[error("empty body: expected a JSON object, an array, or NDJSON lines")]
    Empty,
    /// More events than one request may carry.
    #[error("more than {limit} events in one request or message; send them in several")]
    TooManyEvents {
        /// The limit.
        limit: usize,
    },
}

/// How much one body may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest single event (its JSON text), bytes.
    pub max_event_bytes: usize,
    /// Most events in one body.
    pub max_events: usize,
}

/// Default of [`BodyLimits::max_events`].
pub const DEFAULT_MAX_EVENTS: usize = 100_000;

/// How a body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One object or an array (`application/json`).
    Json,
    /// One object per line (`application/x-ndjson`, `application/jsonl`).
    Ndjson,
}

/// The content types `POST /events` parses, for error messages.
pub const ACCEPTED_TYPES: &str =
    "application/json (an event or an array) or application/x-ndjson (one event per line)";

/// A `Content-Type` that `POST /events` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: send Content-Type: {ACCEPTED_TYPES} (with curl: -H 'Content-Type: application/json')", match .0 { Some(t) => format!("content type {t:?} is not accepted"), None => "no Content-Type given".to_owned() })]
pub struct UnsupportedType(pub Option<String>);

impl Format {
    /// The format a `Content-Type` names. Only JSON types are taken: the
    /// types a browser may send cross-site without asking (`text/plain`,
    /// forms) are refused, so a web page cannot post events.
    pub fn from_content_type(ct: Option<&str>) -> Result<Format, UnsupportedType> {
        let Some(raw) = ct else {
            return Err(UnsupportedType(None));
        };
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Ok(Format::Ndjson),
            "application/json" => Ok(Format::Json),
            t if t.starts_with("application/") && t.ends_with("+json") => Ok(Format::Json),
            _ => Err(UnsupportedType(Some(raw.to_owned()))),
        }
    }
}

/// Parses a body into events. `intern` shares declared type names.
pub fn parse_body(
    bytes: &[u8],
    format: Format,
    limits: BodyLimits,
    intern: &impl Fn(&str) -> Arc<str>,
) -> Result<Vec<Item>, BodyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    match format {
        Format::Ndjson => parse_ndjson(bytes, limits, intern),
        Format::Json => parse_json(bytes, limits, intern),
    }
}

/// What the array visitor reports when the array is longer than allowed.
const TOO_MANY: &str = "agentpulse: too many events";

/// A JSON array read element by element, refused as soon as it holds more
/// than `limit` elements (so a huge array is never collected).
struct CappedArray(usize);

impl<'de> serde::de::DeserializeSeed<'de> for CappedArray {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CappedArray {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if out.len() == self.0 {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            out.push(raw);
        }
        Ok(out)
    }
}

fn parse_json(
    bytes: &[u8],
    limits: BodyLimits,
    intern: &impl Fn(&str) -> Arc<str>,
) -> Result<Vec<Item>, BodyError> {
    let max_event_bytes = limits.max_event_bytes;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'[') {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let raws = CappedArray(limits.max_events)
            .deserialize(&mut de)
            .and_then(|r| de.end().map(|()| r))
            .map_err(|e| {
                if e.to_string().starts_with(TOO_MANY) {
                    BodyError::TooManyEvents {
                        limit: limits.max_events,
                    }
                } else {
                    malformed(e)
                }
            })?;
        return Ok(raws
            .into_iter()
            .map(|raw| parse_one(raw.get().as_bytes(), max_event_bytes, intern))
            .collect());
    }
    let trimmed = trim(bytes);
    if trimmed.len() > max_event_bytes {
        // Parse anyway so that malformed input is still reported as such.
        let _: &RawValue = serde_json::from_slice(bytes).map_err(malformed)?;
        return Err(BodyError::EventTooLarge {
            size: trimmed.len(),
            limit: max_event_bytes,
        });
    }
    let value: Value = serde_json::from_slice(bytes).map_err(malformed)?;
    match value {
        Value::Object(_) => Ok(vec![parse_new_event(value, intern)]),
        Value::Array(_) => unreachable!("arrays are handled above"),
        Value::Null => Err(BodyError::NotEvents("null")),
        Value::Bool(_) => Err(BodyError::NotEvents("a boolean")),
        Value::Number(_) => Err(BodyError::NotEvents("a number")),
        Value::String(_) => Err(BodyError::NotEvents("a string")),
    }
}

fn parse_ndjson(
    bytes: &[u8],
    limits: BodyLimits,
    intern: &impl Fn(&str) -> Arc<str>,
) -> Result<Vec<Item>, BodyError> {
    let max_event_bytes = limits.max_event_bytes;
    let mut items = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = trim(line);
        if line.is_empty() {
            continue;
        }
        if items.len() == limits.max_events {
            return Err(BodyError::TooManyEvents {
                limit: limits.max_events,
            });
        }
        // One pass over valid lines; a malformed one is parsed again only
        // to say where it breaks.
        let item = parse_one(line, max_event_bytes, intern).map_err(|mut e| {
            e.message = match serde_json::from_slice::<&RawValue>(line) {
                Err(j) => format!(
                    "line {}: malformed JSON at column {}: {}",
                    i + 1,
                    j.column(),
                    strip_position(&j.to_string())
                ),
                Ok(_) => format!("line {}: {}", i + 1, e.message),
            };
            e
        });
        items.push(item);
    }
    Ok(items)
}

/// One event's JSON text: size-checked, then parsed and its envelope read.
fn parse_one(text: &[u8], max_event_bytes: usize, intern: &impl Fn(&str) -> Arc<str>) -> Item {
    if text.len() > max_event_bytes {
        return Err(ValidationError::new(
            type_hint(text),
            "payload",
            format!(
                "the event is {} bytes, over the {max_event_bytes}-byte limit",
                text.len()
            ),
        ));
    }
    parse_new_event_bytes(text, intern)
}

/// The `event_type` of an oversized event, found cheaply for the error
/// message; `event` when there is none near the start.
fn type_hint(text: &[u8]) -> String {
    let head = &text[..text.len().min(512)];
    let head = String::from_utf8_lossy(head);
    head.find("\"event_type\"")
        .and_then(|i| {
            let rest = head[i + 12..].trim_start().strip_prefix(':')?.trim_start();
            let rest = rest.strip_prefix('"')?;
            let end = rest.find('"')?;
            let name = &rest[..end];
            crate::schema::FieldKind::Name
                .check(&Value::String(name.into()))
                .ok()
                .filter(|_| name.len() <= 64)
                .map(|_| name.to_string())
        })
        .unwrap_or_else(|| "event".into())
}

fn malformed(e: serde_json::Error) -> BodyError {
    BodyError::Malformed {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    }
}

/// serde_json appends " at line L column C"; the position is reported on
/// its own.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intern(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    const LIMITS: BodyLimits = BodyLimits {
        max_event_bytes: 65_536,
        max_events: 1000,
    };

    fn parse(body: &str, f: Format) -> Result<Vec<Item>, BodyError> {
        parse_body(body.as_bytes(), f, LIMITS, &intern)
    }

    #[test]
    fn more_events_than_the_limit_are_refused_whole() {
        let nd = "{}\n".repeat(1000);
        assert_eq!(parse(&nd, Format::Ndjson).unwrap().len(), 1000);
        let nd = "{}\n".repeat(1001);
        assert_eq!(
            parse(&nd, Format::Ndjson).unwrap_err(),
            BodyError::TooManyEvents { limit: 1000 }
        );
        let arr = format!("[{}{{}}]", "{},".repeat(999));
        assert_eq!(parse(&arr, Format::Json).unwrap().len(), 1000);
        let arr = format!("[{}{{}}]", "{},".repeat(1000));
        assert_eq!(
            parse(&arr, Format::Json).unwrap_err(),
            BodyError::TooManyEvents { limit: 1000 }
        );
        // Still malformed JSON first when it is malformed before the limit.
        assert!(matches!(
            parse("[{},]", Format::Json),
            Err(BodyError::Malformed { .. })
        ));
        assert!(matches!(
            parse("[{}] x", Format::Json),
            Err(BodyError::Malformed { .. })
        ));
    }

    #[test]
    fn object_array_and_ndjson() {
        let one = parse(r#"{"event_type":"a","payload":{"x":1}}"#, Format::Json).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(&*one[0].as_ref().unwrap().event_type, "a");

        let arr = parse(
            r#"[{"event_type":"a","payload":{}}, {"event_type":"b"}]"#,
            Format::Json,
        )
        .unwrap();
        assert_eq!(arr.len(), 2);

        let nd = parse(
            "{\"event_type\":\"a\"}\n\n{\"event_type\":\"b\"}\r\n",
            Format::Ndjson,
        )
        .unwrap();
        assert_eq!(nd.len(), 2);
        assert!(nd.iter().all(Result::is_ok));
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let e = parse("{\"event_type\":\n  \"a\",,}", Format::Json).unwrap_err();
        match e {
            BodyError::Malformed { line, column, .. } => assert_eq!((line, column), (2, 7)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("[1,", Format::Json),
            Err(BodyError::Malformed { .. })
        ));
        assert_eq!(
            parse("42", Format::Json).unwrap_err(),
            BodyError::NotEvents("a number")
        );
        assert_eq!(parse("  \n", Format::Json).unwrap_err(), BodyError::Empty);
    }

    #[test]
    fn ndjson_bad_line_is_rejected_alone() {
        let items = parse(
            "{\"event_type\":\"a\"}\n{oops\n{\"event_type\":\"Bad\"}\n{\"event_type\":\"c\"}",
            Format::Ndjson,
        )
        .unwrap();
        assert_eq!(items.len(), 4);
        assert!(items[0].is_ok() && items[3].is_ok());
        let e1 = items[1].as_ref().unwrap_err().to_string();
        assert!(
            e1.starts_with("event.event: line 2: malformed JSON at column 2"),
            "{e1}"
        );
        let e2 = items[2].as_ref().unwrap_err().to_string();
        assert!(
            e2.starts_with("event.event_type: line 3: expected a name"),
            "{e2}"
        );
    }

    #[test]
    fn array_items_are_checked_one_by_one() {
        let items = parse(r#"[{"event_type":"a"}, 7, {"payload":{}}]"#, Format::Json).unwrap();
        assert!(items[0].is_ok());
        assert_eq!(
            items[1].as_ref().unwrap_err().to_string(),
            "event.event: expected a JSON object, got 7"
        );
        assert_eq!(
            items[2].as_ref().unwrap_err().to_string(),
            "event.event_type: missing"
        );
    }

    #[test]
    fn oversized_events() {
        let big = format!(
            r#"{{"event_type":"note","payload":{{"blob":"{}"}}}}"#,
            "x".repeat(70_000)
        );
        assert!(matches!(
            parse(&big, Format::Json),
            Err(BodyError::EventTooLarge { limit: 65_536, .. })
        ));
        let batch = format!(r#"[{big}, {{"event_type":"a"}}]"#);
        let items = parse(&batch, Format::Json).unwrap();
        let e = items[0].as_ref().unwrap_err().to_string();
        assert!(e.starts_with("note.payload: the event is 700"), "{e}");
        assert!(items[1].is_ok());
        let items = parse(&format!("{big}\n{{\"event_type\":\"a\"}}"), Format::Ndjson).unwrap();
        assert!(items[0].is_err() && items[1].is_ok());
    }

    #[test]
    fn content_types() {
        let f = Format::from_content_type;
        assert_eq!(
            f(Some("application/x-ndjson; charset=utf-8")),
            Ok(Format::Ndjson)
        );
        assert_eq!(f(Some("Application/JSON")), Ok(Format::Json));
        assert_eq!(f(Some("application/vnd.agentpulse+json")), Ok(Format::Json));
        // What a browser sends cross-site without a preflight is refused.
        for simple in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let e = f(Some(simple)).unwrap_err();
            assert!(e.to_string().contains("application/json"), "{e}");
        }
        assert_eq!(f(None), Err(UnsupportedType(None)));
    }

    // The ingest parser's fuzz test: whatever the bytes, it answers without
    // panicking, and every item of a valid batch is accounted for.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let schema = crate::schema::Schema::builtin();
            for f in [Format::Json, Format::Ndjson] {
                let limits = BodyLimits { max_event_bytes: 1024, max_events: 100 };
                if let Ok(items) = parse_body(&bytes, f, limits, &intern) {
                    for ev in items.into_iter().flatten() {
                        let _ = schema.validate(&ev);
                    }
                }
            }
        }

        #[test]
        fn json_shaped_input_never_panics(
            lines in proptest::collection::vec(
                (
                    proptest::option::of("[a-zA-Z0-9_.\\-]{0,70}"),
                    proptest::option::of(proptest::prelude::any::<f64>()),
                    "[ -~]{0,40}",
                    0usize..6,
                ),
                0..20,
            )
        ) {
            let body: Vec<String> = lines
                .iter()
                .map(|(ty, ts, text, depth)| {
                    let mut payload = serde_json::json!({ "text": text, "cost_usd": ts });
                    for _ in 0..*depth {
                        payload = serde_json::json!({ "nested": payload });
                    }
                    let mut v = serde_json::json!({ "payload": payload });
                    if let Some(t) = ty { v["event_type"] = serde_json::json!(t); }
                    if let Some(ts) = ts { v["timestamp"] = serde_json::json!(ts); }
                    v.to_string()
                })
                .collect();
            let nd = body.join("\n");
            let items = parse_body(nd.as_bytes(), Format::Ndjson, LIMITS, &intern);
            if !nd.trim().is_empty() {
                proptest::prop_assert_eq!(items.unwrap().len(), lines.len());
            }
            let arr = format!("[{}]", body.join(","));
            let items = parse_body(arr.as_bytes(), Format::Json, LIMITS, &intern).unwrap();
            proptest::prop_assert_eq!(items.len(), lines.len());
            let schema = crate::schema::Schema::builtin();
            for ev in items.into_iter().flatten() {
                let _ = schema.validate(&ev);
            }
        }
    }
}
