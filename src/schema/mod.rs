//! Where events are checked: the event schema and validation (pure, no I/O).
//!
//! A [`Schema`] is built from the `events:` section of the configuration.
//! Every declared type must carry each field its `emit:` list names, with a
//! sensible type ([`FieldKind`], inferred from the field's name unless the
//! file says otherwise). Extra fields are allowed. Undeclared types pass
//! through unless the file sets `strict: true`.
//!
//! Errors name the event type, the field and what was wrong:
//! `agent_completed.cost_usd: expected a finite number >= 0, got "abc"`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::config::{Config, ConfigError, FieldDecl};
use crate::event::{NewEvent, Payload};

mod fields;
mod input;

pub use fields::FieldKind;
pub use input::{parse_new_event, parse_new_event_bytes, MAX_EVENT_TYPE_LEN};

/// Deepest accepted nesting of a payload (objects and arrays).
pub const MAX_DEPTH: usize = 64;

/// An event was refused: which event, which field, what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{event_type}.{field}: {message}")]
pub struct ValidationError {
    /// The event's type, or `event` when the type itself is unusable.
    pub event_type: String,
    /// The offending field (`payload` for the payload as a whole, or an
    /// envelope key such as `event_type` or `timestamp`).
    pub field: String,
    /// What was expected and what was found.
    pub message: String,
}

impl ValidationError {
    /// A new error.
    pub fn new(
        event_type: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ValidationError {
            event_type: event_type.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A declared event type.
#[derive(Debug, Clone)]
struct TypeDecl {
    name: Arc<str>,
    /// In declared order (error messages follow it).
    fields: Vec<(Box<str>, FieldKind)>,
    /// Indices into `fields` in key order, for a merge with the payload.
    sorted: Vec<usize>,
}

/// The checked event declarations.
#[derive(Debug, Clone)]
pub struct Schema {
    types: HashMap<Box<str>, TypeDecl>,
    strict: bool,
    max_payload_bytes: usize,
}

impl Schema {
    /// The schema of the built-in configuration.
    pub fn builtin() -> Schema {
        Schema::from_config(&Config::builtin()).expect("built-in schema is valid")
    }

    /// Builds the schema from a configuration's `events:` section.
    pub fn from_config(config: &Config) -> Result<Schema, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: config.origin.clone(),
            message,
        };
        let mut types = HashMap::new();
        for (i, decl) in config.events.iter().enumerate() {
            if let Err(why) = input::check_type_name(&decl.on) {
                return Err(invalid(format!("events[{i}].on: {why}")));
            }
            let mut fields = Vec::new();
            for (j, f) in decl.emit.iter().enumerate() {
                let (name, kind) = match f {
                    FieldDecl::Name(n) => (n.clone(), FieldKind::infer(n)),
                    FieldDecl::Typed(map) if map.len() == 1 => {
                        let (n, k) = map.iter().next().expect("one entry");
                        let kind = k
                            .parse::<FieldKind>()
                            .map_err(|e| invalid(format!("events[{i}].emit[{j}] ({n}): {e}")))?;
                        (n.clone(), kind)
                    }
                    FieldDecl::Typed(_) => {
                        return Err(invalid(format!(
                            "events[{i}].emit[{j}]: expected `name` or `name: kind`"
                        )))
                    }
                };
                if name.is_empty() {
                    return Err(invalid(format!("events[{i}].emit[{j}]: empty field name")));
                }
                fields.push((name.into_boxed_str(), kind));
            }
            let name: Arc<str> = Arc::from(decl.on.as_str());
            let mut sorted: Vec<usize> = (0..fields.len()).collect();
            sorted.sort_by(|&a, &b| fields[a].0.cmp(&fields[b].0));
            sorted.dedup_by(|a, b| fields[*a].0 == fields[*b].0);
            if types
                .insert(
                    decl.on.clone().into_boxed_str(),
                    TypeDecl {
                        name,
                        fields,
                        sorted,
                    },
                )
                .is_some()
            {
                return Err(invalid(format!(
                    "events[{i}].on: `{}` is declared twice",
                    decl.on
                )));
            }
        }
        Ok(Schema {
            types,
            strict: config.strict,
            max_payload_bytes: config.limits.max_payload_bytes,
        })
    }

    /// Whether undeclared types are refused.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// Sets strict mode.
    pub fn set_strict(&mut self, strict: bool) {
        self.strict = strict;
    }

    /// The payload size limit in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// Whether `event_type` is declared.
    pub fn is_declared(&self, event_type: &str) -> bool {
        self.types.contains_key(event_type)
    }

    /// The declared type names, sorted.
    pub fn declared_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.types.keys().map(|k| &**k).collect();
        v.sort_unstable();
        v
    }

    /// The declared fields of `event_type` with their kinds.
    pub fn fields(&self, event_type: &str) -> Option<impl Iterator<Item = (&str, FieldKind)>> {
        self.types
            .get(event_type)
            .map(|d| d.fields.iter().map(|(n, k)| (&**n, *k)))
    }

    /// The shared name of a declared type, so that events of declared types
    /// do not allocate their type name.
    pub fn intern(&self, event_type: &str) -> Arc<str> {
        match self.types.get(event_type) {
            Some(d) => d.name.clone(),
            None => Arc::from(event_type),
        }
    }

    /// Checks an event: its type name, timestamp, dedup key, payload size
    /// and depth, and every declared field.
    pub fn validate(&self, event: &NewEvent) -> Result<(), ValidationError> {
        let ty = &*event.event_type;
        if let Err(why) = input::check_type_name(ty) {
            return Err(ValidationError::new("event", "event_type", why));
        }
        if let Some(ts) = event.timestamp {
            input::check_timestamp(ty, ts)?;
        }
        if let Some(id) = &event.event_id {
            input::check_event_id(ty, id)?;
        }
        check_size_and_depth(ty, &event.payload, self.max_payload_bytes)?;
        match self.types.get(ty) {
            Some(decl) => {
                // Both the payload (a BTreeMap) and `sorted` are in key
                // order: one merge pass finds every declared field.
                let mut entries = event.payload.iter().peekable();
                for &i in &decl.sorted {
                    let (name, kind) = &decl.fields[i];
                    while entries.next_if(|(k, _)| k.as_str() < &**name).is_some() {}
                    match entries.next_if(|(k, _)| k.as_str() == &**name) {
                        None => {
                            // Report the first missing field in declared order.
                            let first = decl
                                .fields
                                .iter()
                                .find(|(n, _)| !event.payload.contains_key(&**n))
                                .unwrap_or(&decl.fields[i]);
                            return Err(ValidationError::new(
                                ty,
                                &*first.0,
                                format!("missing (expected {})", first.1.expected()),
                            ));
                        }
                        Some((_, v)) => kind
                            .check(v)
                            .map_err(|message| ValidationError::new(ty, &**name, message))?,
                    }
                }
                Ok(())
            }
            None if self.strict => Err(ValidationError::new(
                ty,
                "event_type",
                "undeclared event type (strict mode is on)",
            )),
            None => Ok(()),
        }
    }
}

/// Refuses payloads whose JSON text would exceed `limit` bytes or that nest
/// deeper than [`MAX_DEPTH`]. Recursion is bounded by `MAX_DEPTH`, so it
/// cannot overflow the stack, and it allocates nothing: this runs on the
/// producer's thread for every event. It stops as soon as the limit is
/// passed.
fn check_size_and_depth(ty: &str, payload: &Payload, limit: usize) -> Result<(), ValidationError> {
    // Strings are counted unescaped and numbers as 8 bytes: a close lower
    // bound of the JSON text, exact enough for a size limit.
    fn walk(v: &Value, depth: usize, size: &mut usize, limit: usize) -> Result<(), &'static str> {
        if depth > MAX_DEPTH {
            return Err("deep");
        }
        *size += match v {
            Value::Null => 4,
            Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                for x in a {
                    walk(x, depth + 1, size, limit)?;
                }
                2 + a.len()
            }
            Value::Object(o) => {
                for (k, x) in o {
                    *size += k.len() + 4;
                    walk(x, depth + 1, size, limit)?;
                }
                2
            }
        };
        if *size > limit {
            return Err("large");
        }
        Ok(())
    }
    let mut size = 2usize;
    let mut result = Ok(());
    for (k, v) in payload {
        size += k.len() + 4;
        result = walk(v, 1, &mut size, limit);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() && size > limit {
        result = Err("large");
    }
    match result {
        Ok(()) => Ok(()),
        Err("deep") => Err(ValidationError::new(
            ty,
            "payload",
            format!("nested deeper than {MAX_DEPTH} levels"),
        )),
        Err(_) => Err(ValidationError::new(
            ty,
            "payload",
            format!("larger than the {limit}-byte limit"),
        )),
    }
}

#[cfg(test)]
mod tests;
