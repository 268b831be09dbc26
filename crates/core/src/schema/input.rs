//! The envelope of an incoming event: `{"event_type":..., "payload":{...},
//! "timestamp"?: number, "event_id"?: string}`.

use std::sync::Arc;

use serde_json::Value;

use super::fields::show;
use super::ValidationError;
use crate::event::{NewEvent, MAX_EVENT_ID_LEN};

pub use crate::event::MAX_EVENT_TYPE_LEN;

/// Latest accepted timestamp: the year 5138. Anything larger is almost
/// certainly milliseconds.
const MAX_TIMESTAMP: f64 = 1e11;

/// Checks [`crate::event::TYPE_NAME_PATTERN`], with the message to show.
pub(crate) fn check_type_name(name: &str) -> Result<(), String> {
    if crate::event::is_valid_type_name(name) {
        Ok(())
    } else {
        Err(format!(
            "expected a name matching {}, got {}",
            crate::event::TYPE_NAME_PATTERN,
            show(&Value::String(name.to_string()))
        ))
    }
}

pub(crate) fn check_timestamp(ty: &str, ts: f64) -> Result<(), ValidationError> {
    if !ts.is_finite() || ts < 0.0 {
        return Err(ValidationError::new(
            ty,
            "timestamp",
            format!("expected Unix seconds (a finite number >= 0), got {ts}"),
        ));
    }
    if ts > MAX_TIMESTAMP {
        return Err(ValidationError::new(
            ty,
            "timestamp",
            format!("expected Unix seconds, got {ts} (milliseconds? divide by 1000)"),
        ));
    }
    Ok(())
}

pub(crate) fn check_event_id(ty: &str, id: &str) -> Result<(), ValidationError> {
    if id.is_empty() || id.len() > MAX_EVENT_ID_LEN {
        return Err(ValidationError::new(
            ty,
            "event_id",
            format!(
                "expected a non-empty string of at most {MAX_EVENT_ID_LEN} bytes, got {} bytes",
                id.len()
            ),
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default)]
    event_type: Option<Value>,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    event_id: Option<Value>,
}

/// Reads one incoming event from its JSON text in a single pass (the
/// ingest paths' fast way). Input that is not a JSON object with the
/// expected envelope falls back to [`parse_new_event`]'s precise errors.
pub fn parse_new_event_bytes(
    text: &[u8],
    intern: impl Fn(&str) -> Arc<str>,
) -> Result<NewEvent, ValidationError> {
    match serde_json::from_slice::<Envelope>(text) {
        Ok(env) => from_parts(
            env.event_type,
            env.payload,
            env.timestamp,
            env.event_id,
            intern,
        ),
        Err(_) => {
            let value: Value = serde_json::from_slice(text).map_err(|e| {
                ValidationError::new("event", "event", format!("malformed JSON: {e}"))
            })?;
            parse_new_event(value, intern)
        }
    }
}

/// Reads the envelope of one incoming event. `intern` maps a type name to
/// its shared `Arc<str>` (see [`crate::schema::Schema::intern`]).
///
/// Only the envelope is checked here; [`crate::schema::Schema::validate`]
/// checks the rest.
pub fn parse_new_event(
    value: Value,
    intern: impl Fn(&str) -> Arc<str>,
) -> Result<NewEvent, ValidationError> {
    let Value::Object(mut obj) = value else {
        return Err(ValidationError::new(
            "event",
            "event",
            format!("expected a JSON object, got {}", show(&value)),
        ));
    };
    from_parts(
        obj.remove("event_type"),
        obj.remove("payload"),
        obj.remove("timestamp"),
        obj.remove("event_id"),
        intern,
    )
}

/// Builds an event from the four envelope values (absent ones `None`).
fn from_parts(
    event_type: Option<Value>,
    payload: Option<Value>,
    timestamp: Option<Value>,
    event_id: Option<Value>,
    intern: impl Fn(&str) -> Arc<str>,
) -> Result<NewEvent, ValidationError> {
    let event_type = match event_type {
        Some(Value::String(s)) => {
            check_type_name(&s).map_err(|why| ValidationError::new("event", "event_type", why))?;
            intern(&s)
        }
        Some(other) => {
            return Err(ValidationError::new(
                "event",
                "event_type",
                format!("expected a string, got {}", show(&other)),
            ))
        }
        None => return Err(ValidationError::new("event", "event_type", "missing")),
    };
    let ty = &*event_type;
    let payload = match payload {
        Some(Value::Object(p)) => p,
        None | Some(Value::Null) => Default::default(),
        Some(other) => {
            return Err(ValidationError::new(
                ty,
                "payload",
                format!("expected an object, got {}", show(&other)),
            ))
        }
    };
    let timestamp = match timestamp {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let ts = n.as_f64().unwrap_or(f64::NAN);
            check_timestamp(ty, ts)?;
            Some(ts)
        }
        Some(other) => {
            return Err(ValidationError::new(
                ty,
                "timestamp",
                format!("expected Unix seconds as a number, got {}", show(&other)),
            ))
        }
    };
    let event_id = match event_id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            check_event_id(ty, &s)?;
            Some(s.into_boxed_str())
        }
        Some(other) => {
            return Err(ValidationError::new(
                ty,
                "event_id",
                format!("expected a string, got {}", show(&other)),
            ))
        }
    };
    Ok(NewEvent {
        event_type,
        timestamp,
        event_id,
        payload,
    })
}
