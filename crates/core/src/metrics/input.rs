//! What the engine reads of an event: its type, its timestamp and ten
//! payload fields, already typed ([`EventFields`]).
//!
//! Two ways in: from an [`Event`] (the pipeline's path), and straight from a
//! wire-format line ([`EventFields::from_wire`]), which borrows the strings
//! it needs from the line and skips every other field without building it.
//! Reading a log for its KPIs (`report`, `rebuild-metrics`) takes the second
//! path: building each payload as a `serde_json::Value` map cost more than
//! the KPIs themselves.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::event::{Event, WireError};

/// The parts of one event the metrics engine uses. A field that is absent
/// or of the wrong type is `None` (strings must be strings, amounts
/// numbers, `rejected` a boolean).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFields<'a> {
    /// The event's type.
    pub event_type: Cow<'a, str>,
    /// Unix seconds.
    pub timestamp: f64,
    /// `payload.agent`.
    pub agent: Option<Cow<'a, str>>,
    /// `payload.task_id`.
    pub task_id: Option<Cow<'a, str>>,
    /// `payload.feature`.
    pub feature: Option<Cow<'a, str>>,
    /// `payload.status`.
    pub status: Option<Cow<'a, str>>,
    /// `payload.cost_usd`.
    pub cost_usd: Option<f64>,
    /// `payload.cost`.
    pub cost: Option<f64>,
    /// `payload.duration_ms`.
    pub duration_ms: Option<f64>,
    /// `payload.attempts`.
    pub attempts: Option<f64>,
    /// Whether `payload.result` says the validation passed (see
    /// [`validation_passed`]).
    pub result_passed: bool,
    /// `payload.rejected`.
    pub rejected: Option<bool>,
}

impl<'a> EventFields<'a> {
    /// What the engine reads of `event`, borrowed from it.
    pub fn from_event(event: &'a Event) -> Self {
        let mut o = EventFields {
            event_type: Cow::Borrowed(&event.event_type),
            timestamp: event.timestamp,
            ..EventFields::default()
        };
        // One pass over the payload: cheaper than a lookup per field.
        for (k, v) in &event.payload {
            let s = || v.as_str().map(Cow::Borrowed);
            match k.as_str() {
                "agent" => o.agent = s(),
                "task_id" => o.task_id = s(),
                "feature" => o.feature = s(),
                "status" => o.status = s(),
                "cost_usd" => o.cost_usd = v.as_f64(),
                "cost" => o.cost = v.as_f64(),
                "duration_ms" => o.duration_ms = v.as_f64(),
                "attempts" => o.attempts = v.as_f64(),
                "result" => o.result_passed = validation_passed(Some(v)),
                "rejected" => o.rejected = v.as_bool(),
                _ => {}
            }
        }
        o
    }

    /// Reads one line of the wire format (see [`crate::event`]) for the
    /// engine. Accepts and refuses exactly the lines [`Event::from_wire`]
    /// does, but builds nothing the engine does not read.
    pub fn from_wire(line: &'a [u8]) -> Result<Self, WireError> {
        match Self::from_log_line(line)? {
            (Some(_), fields) => Ok(fields),
            (None, _) => Err(WireError::new("missing field `id`".into())),
        }
    }

    /// Reads one line of a log in either format, agentpulse's or the
    /// original module's (no `id`), with its id if it has one: the lines
    /// the hub's `logfile::LoggedEvent::from_line` reads.
    pub fn from_log_line(line: &'a [u8]) -> Result<(Option<u64>, Self), WireError> {
        // Strings that are skipped are not checked by the parser; a line
        // `Event::from_wire` refuses must be refused here too. Most lines
        // are ASCII, which is checked a word at a time.
        if !line.is_ascii() {
            std::str::from_utf8(line).map_err(|e| WireError::new(e.to_string()))?;
        }
        let w: WireFields<'a> =
            serde_json::from_slice(line).map_err(|e| WireError::new(e.to_string()))?;
        let p = w.payload;
        Ok((
            w.id,
            EventFields {
                event_type: w.event_type,
                timestamp: w.timestamp,
                agent: p.agent,
                task_id: p.task_id,
                feature: p.feature,
                status: p.status,
                cost_usd: p.cost_usd,
                cost: p.cost,
                duration_ms: p.duration_ms,
                attempts: p.attempts,
                result_passed: p.result_passed,
                rejected: p.rejected,
            },
        ))
    }
}

/// Whether a `validation_complete.result` passed: `passed == true`, or
/// `test_passed == true` with `browser_launched` and `test_executed` true
/// when present.
pub fn validation_passed(result: Option<&Value>) -> bool {
    let Some(r) = result.and_then(Value::as_object) else {
        return false;
    };
    let flag = |k: &str| match r.get(k) {
        None => Flag::Absent,
        Some(Value::Bool(true)) => Flag::True,
        Some(_) => Flag::Other,
    };
    result_flags_pass(
        flag("passed"),
        flag("test_passed"),
        flag("browser_launched"),
        flag("test_executed"),
    )
}

/// One boolean flag of a validation result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Flag {
    #[default]
    Absent,
    True,
    /// Present but not `true`.
    Other,
}

fn result_flags_pass(passed: Flag, test_passed: Flag, browser: Flag, executed: Flag) -> bool {
    passed == Flag::True
        || (test_passed == Flag::True && browser != Flag::Other && executed != Flag::Other)
}

/// The envelope of a log line: as [`Event::from_wire`] requires it, but
/// with `id` optional (the original module's lines have none).
#[derive(Deserialize)]
struct WireFields<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    timestamp: f64,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: PayloadFields<'a>,
}

/// The payload fields the engine reads. Deserialised by hand: a field of
/// an unexpected type is absent, not an error, and the other fields are
/// skipped without being built.
#[derive(Default)]
struct PayloadFields<'a> {
    agent: Option<Cow<'a, str>>,
    task_id: Option<Cow<'a, str>>,
    feature: Option<Cow<'a, str>>,
    status: Option<Cow<'a, str>>,
    cost_usd: Option<f64>,
    cost: Option<f64>,
    duration_ms: Option<f64>,
    attempts: Option<f64>,
    result_passed: bool,
    rejected: Option<bool>,
}

impl<'de: 'a, 'a> Deserialize<'de> for PayloadFields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PayloadVisitor(std::marker::PhantomData))
    }
}

struct PayloadVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for PayloadVisitor<'a> {
    type Value = PayloadFields<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut p = PayloadFields::default();
        // As in a `serde_json::Map`, the last of duplicate keys wins.
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match &*key {
                "agent" => p.agent = map.next_value::<Loose<'de>>()?.into_str(),
                "task_id" => p.task_id = map.next_value::<Loose<'de>>()?.into_str(),
                "feature" => p.feature = map.next_value::<Loose<'de>>()?.into_str(),
                "status" => p.status = map.next_value::<Loose<'de>>()?.into_str(),
                "cost_usd" => p.cost_usd = map.next_value::<Loose<'de>>()?.number(),
                "cost" => p.cost = map.next_value::<Loose<'de>>()?.number(),
                "duration_ms" => p.duration_ms = map.next_value::<Loose<'de>>()?.number(),
                "attempts" => p.attempts = map.next_value::<Loose<'de>>()?.number(),
                "rejected" => p.rejected = map.next_value::<Loose<'de>>()?.boolean(),
                "result" => p.result_passed = map.next_value::<ResultPassed>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
}

/// An object key, borrowed from the line unless it has escapes. (serde's
/// own `Cow<str>` always copies.)
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_str(LooseVisitor(std::marker::PhantomData))? {
            Loose::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("expected a string key")),
        }
    }
}

/// A JSON value reduced to what the engine can use: a string, a number, a
/// boolean, or something else (skipped).
enum Loose<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    Other,
}

impl<'a> Loose<'a> {
    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    fn number(self) -> Option<f64> {
        match self {
            Loose::Num(x) => Some(x),
            _ => None,
        }
    }

    fn boolean(self) -> Option<bool> {
        match self {
            Loose::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn flag(self) -> Flag {
        match self {
            Loose::Bool(true) => Flag::True,
            _ => Flag::Other,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor(std::marker::PhantomData))
    }
}

struct LooseVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::Num(v as f64))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Num(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::Num(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
}

/// `payload.result` reduced to whether it passed.
struct ResultPassed(bool);

impl<'de> Deserialize<'de> for ResultPassed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ResultVisitor)
    }
}

struct ResultVisitor;

impl<'de> Visitor<'de> for ResultVisitor {
    type Value = ResultPassed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut flags = [Flag::Absent; 4];
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let i = match &*key {
                "passed" => 0,
                "test_passed" => 1,
                "browser_launched" => 2,
                "test_executed" => 3,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            flags[i] = map.next_value::<Loose<'de>>()?.flag();
        }
        let [passed, test_passed, browser, executed] = flags;
        Ok(ResultPassed(result_flags_pass(
            passed,
            test_passed,
            browser,
            executed,
        )))
    }
    // Anything but an object does not pass.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(ResultPassed(false))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(ResultPassed(false))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(ResultPassed(false))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(ResultPassed(false))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(ResultPassed(false))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(ResultPassed(false))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(ResultPassed(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;

    fn both(line: &str) -> (Option<EventFields<'static>>, Option<EventFields<'static>>) {
        let ev = Event::from_wire(line.as_bytes()).ok();
        let a = ev.as_ref().map(|e| owned(EventFields::from_event(e)));
        let b = EventFields::from_wire(line.as_bytes()).ok().map(owned);
        (a, b)
    }

    fn owned(o: EventFields<'_>) -> EventFields<'static> {
        let own = |s: Option<Cow<'_, str>>| s.map(|s| Cow::Owned(s.into_owned()));
        EventFields {
            event_type: Cow::Owned(o.event_type.into_owned()),
            timestamp: o.timestamp,
            agent: own(o.agent),
            task_id: own(o.task_id),
            feature: own(o.feature),
            status: own(o.status),
            cost_usd: o.cost_usd,
            cost: o.cost,
            duration_ms: o.duration_ms,
            attempts: o.attempts,
            result_passed: o.result_passed,
            rejected: o.rejected,
        }
    }

    #[test]
    fn wire_and_event_paths_agree_on_examples() {
        let lines = [
            r#"{"id":1,"event_type":"agent_completed","timestamp":1.5,"payload":{"agent":"critic","task_id":"t\"1","status":"rejected","cost_usd":0.25,"duration_ms":1200,"notes":[1,{"a":null}]}}"#,
            r#"{"id":2,"event_type":"validation_complete","timestamp":2.0,"payload":{"task_id":"t1","cost":1e-3,"result":{"test_passed":true,"browser_launched":true,"x":[1]}}}"#,
            r#"{"id":3,"event_type":"validation_complete","timestamp":2.0,"payload":{"result":{"test_passed":true,"test_executed":false}}}"#,
            r#"{"id":4,"event_type":"validation_complete","timestamp":2.0,"payload":{"result":{"passed":true}}}"#,
            r#"{"id":5,"event_type":"validation_complete","timestamp":2.0,"payload":{"result":"passed"}}"#,
            r#"{"id":6,"event_type":"hitl_escalated","timestamp":3,"payload":{"task_id":7,"attempts":"3","agent":null}}"#,
            r#"{"id":7,"event_type":"critic_decision","timestamp":4.0,"event_id":"k","payload":{"rejected":true,"rejected":false}}"#,
            r#"{"id":8,"event_type":"x","timestamp":4.0,"payload":{"agent":"a","agent":"b","cost":-1}}"#,
            r#"{"id":9,"event_type":"x","timestamp":4.0,"payload":{"agent":"\u00e9\ud83d\ude00"}}"#,
            r#"{"payload":{},"timestamp":4.0,"event_type":"x","id":10,"extra":[true]}"#,
        ];
        for line in lines {
            let (a, b) = both(line);
            assert!(a.is_some(), "{line}");
            assert_eq!(a, b, "{line}");
        }
    }

    #[test]
    fn wire_path_refuses_what_event_path_refuses() {
        let bad: [&[u8]; 8] = [
            b"{\"id\":1",
            b"{\"event_type\":\"x\",\"timestamp\":1.0,\"payload\":{}}",
            b"{\"id\":-1,\"event_type\":\"x\",\"timestamp\":1.0,\"payload\":{}}",
            b"{\"id\":1,\"event_type\":\"x\",\"timestamp\":\"1\",\"payload\":{}}",
            b"{\"id\":1,\"event_type\":\"x\",\"timestamp\":1.0,\"payload\":[]}",
            b"{\"id\":1,\"id\":2,\"event_type\":\"x\",\"timestamp\":1.0,\"payload\":{}}",
            b"{\"id\":1,\"event_type\":\"x\",\"timestamp\":1.0,\"payload\":{\"notes\":\"\xff\"}}",
            b"\xff\xfe",
        ];
        for line in bad {
            assert!(Event::from_wire(line).is_err(), "{line:?}");
            assert!(EventFields::from_wire(line).is_err(), "{line:?}");
        }
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z\"\\\\é\n]{0,6}".prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("passed".to_owned()),
                        Just("test_passed".to_owned()),
                        Just("browser_launched".to_owned()),
                        "[a-z]{1,3}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn wire_and_event_paths_agree(
            fields in prop::collection::vec((
                prop_oneof![
                    Just("agent"), Just("task_id"), Just("feature"), Just("status"),
                    Just("cost_usd"), Just("cost"), Just("duration_ms"), Just("attempts"),
                    Just("result"), Just("rejected"), Just("other"),
                ],
                value(),
            ), 0..8),
            ts in 0.0f64..2e9,
        ) {
            let payload: Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let line = serde_json::json!({
                "id": 1, "event_type": "agent_completed", "timestamp": ts, "payload": payload,
            })
            .to_string();
            let (a, b) = both(&line);
            prop_assert!(a.is_some());
            prop_assert_eq!(a, b);
        }
    }
}
