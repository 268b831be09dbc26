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

use crate::event::NewEvent;

mod decl;
mod fields;
mod input;

pub use decl::{EventDecl, FieldDecl};
pub use fields::FieldKind;
pub use input::{parse_new_event, parse_new_event_bytes, MAX_EVENT_TYPE_LEN};

/// Deepest accepted nesting of a payload (objects and arrays).
pub const MAX_DEPTH: usize = 64;

/// An event was refused: which event, which field, what was wrong. When
/// several declared fields are missing or wrong, the first (in declared
/// order) is `field`/`message` and the others are in `more`; the message
/// names them all: `agent_completed.status: missing (expected a non-empty
/// string); agent_completed.cost_usd: expected a finite number >= 0, got "abc"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationError {
    /// The event's type, or `event` when the type itself is unusable.
    pub event_type: String,
    /// The offending field (`payload` for the payload as a whole, or an
    /// envelope key such as `event_type` or `timestamp`).
    pub field: String,
    /// What was expected and what was found.
    pub message: String,
    /// The other faulty fields of the same event, in declared order.
    pub more: Vec<FieldError>,
}

/// One faulty field of an event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field.
    pub field: String,
    /// What was expected and what was found.
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}: {}", self.event_type, self.field, self.message)?;
        for m in &self.more {
            write!(f, "; {}.{}: {}", self.event_type, m.field, m.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

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
            more: Vec::new(),
        }
    }

    /// Every faulty field: `field`/`message`, then `more`.
    pub fn fields(&self) -> Vec<FieldError> {
        let mut all = vec![FieldError {
            field: self.field.clone(),
            message: self.message.clone(),
        }];
        all.extend(self.more.iter().cloned());
        all
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

/// The declarations of the event types agentpulse emits for OpenTelemetry
/// input (`config/otel-events.yaml`): part of every schema, unless the
/// configuration declares the type itself.
pub const EXTENSION_EVENTS_YAML: &str = include_str!("../../config/otel-events.yaml");

#[derive(serde::Deserialize)]
struct Extension {
    events: Vec<EventDecl>,
}

/// The declarations of the event types the hub itself emits
/// (`config/hub-events.yaml`: `hitl_resolved`), an extension like
/// [`EXTENSION_EVENTS_YAML`].
pub const HUB_EVENTS_YAML: &str = include_str!("../../config/hub-events.yaml");

fn extension_events() -> &'static [EventDecl] {
    static EXT: std::sync::OnceLock<Vec<EventDecl>> = std::sync::OnceLock::new();
    EXT.get_or_init(|| {
        [EXTENSION_EVENTS_YAML, HUB_EVENTS_YAML]
            .iter()
            .flat_map(|yaml| {
                serde_norway::from_str::<Extension>(yaml)
                    .expect("the extension's declarations are valid")
                    .events
            })
            .collect()
    })
}

/// The checked event declarations.
#[derive(Debug, Clone)]
pub struct Schema {
    types: HashMap<Box<str>, TypeDecl, foldhash::fast::RandomState>,
    strict: bool,
    max_payload_bytes: usize,
}

impl Schema {
    /// Builds the schema from the declarations of a configuration's
    /// `events:` section (see also `Schema::from_config` and
    /// `Schema::builtin` in [`crate::config`]). The error names the entry:
    /// `events[2].emit[0].cost: ...`.
    pub fn from_decls(
        events: &[EventDecl],
        strict: bool,
        max_payload_bytes: usize,
    ) -> Result<Schema, String> {
        let mut types = HashMap::default();
        // The file's declarations, then the extension's types it does not
        // declare itself.
        let ext = extension_events();
        let ext_left = ext.iter().filter(|d| !events.iter().any(|c| c.on == d.on));
        for (i, decl) in events.iter().chain(ext_left).enumerate() {
            if let Err(why) = input::check_type_name(&decl.on) {
                return Err(format!("events[{i}].on: {why}"));
            }
            let mut fields = Vec::new();
            for (j, f) in decl.emit.iter().enumerate() {
                let (name, kind) = match f {
                    FieldDecl::Name(n) => (n.clone(), FieldKind::infer(n)),
                    FieldDecl::Typed(map) if map.len() == 1 => {
                        let (n, k) = map.iter().next().expect("one entry");
                        let kind = k
                            .parse::<FieldKind>()
                            .map_err(|e| format!("events[{i}].emit[{j}].{n}: {e}"))?;
                        (n.clone(), kind)
                    }
                    FieldDecl::Typed(_) => {
                        return Err(format!(
                            "events[{i}].emit[{j}]: expected `name` or `name: kind`"
                        ))
                    }
                };
                if name.is_empty() {
                    return Err(format!("events[{i}].emit[{j}]: empty field name"));
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
                return Err(format!("events[{i}].on: `{}` is declared twice", decl.on));
            }
        }
        Ok(Schema {
            types,
            strict,
            max_payload_bytes,
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

    /// For an undeclared type, the declared type it is likely a misspelling
    /// of (within a small edit distance: `agent_complete` →
    /// `agent_completed`).
    pub fn likely_type(&self, event_type: &str) -> Option<&str> {
        if self.types.contains_key(event_type) {
            return None;
        }
        crate::suggest::within_edits(event_type, self.types.keys().map(|k| &**k))
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
        let decl = self.types.get(ty);
        // Declared names were checked when the schema was built.
        if decl.is_none() {
            if let Err(why) = input::check_type_name(ty) {
                return Err(ValidationError::new("event", "event_type", why));
            }
        }
        if let Some(ts) = event.timestamp {
            input::check_timestamp(ty, ts)?;
        }
        if let Some(id) = &event.event_id {
            input::check_event_id(ty, id)?;
        }
        // One pass over the payload's (sorted) keys both measures it and
        // merges it with the declared fields (also sorted).
        let required: &[usize] = decl.map_or(&[], |d| &d.sorted);
        let mut next = 0;
        let mut problem: Option<Problem> = None;
        let limit = self.max_payload_bytes;
        let mut size = 2usize;
        for (k, v) in &event.payload {
            size += k.len() + 4;
            walk(v, 1, &mut size, limit).map_err(|e| payload_error(ty, e, limit))?;
            let Some(d) = decl else { continue };
            while let Some(&i) = required.get(next) {
                let (name, kind) = &d.fields[i];
                match (**name).cmp(k.as_str()) {
                    std::cmp::Ordering::Less => {
                        problem.get_or_insert(Problem::Missing);
                        next += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        if problem.is_none() && kind.check(v).is_err() {
                            problem = Some(Problem::Kind);
                        }
                        next += 1;
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
        }
        if size > limit {
            return Err(payload_error(ty, TooMuch::Large, limit));
        }
        if next < required.len() {
            problem.get_or_insert(Problem::Missing);
        }
        match (decl, problem) {
            // Every faulty field, named in declared order as the
            // configuration lists them (the error path: a second pass).
            (Some(d), Some(_)) => {
                let mut faults = d.fields.iter().filter_map(|(name, kind)| {
                    let message = match event.payload.get(&**name) {
                        None => format!("missing (expected {})", kind.expected()),
                        Some(v) => kind.check(v).err()?,
                    };
                    Some(FieldError {
                        field: name.to_string(),
                        message,
                    })
                });
                let first = faults.next().expect("a declared field is faulty");
                let mut e = ValidationError::new(ty, first.field, first.message);
                e.more = faults.collect();
                Err(e)
            }
            (None, _) if self.strict => Err(ValidationError::new(
                ty,
                "event_type",
                format!(
                    "undeclared event type (strict mode is on){}",
                    self.likely_type(ty)
                        .map(|t| format!("; did you mean `{t}`?"))
                        .unwrap_or_default()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// The first thing wrong with a declared event's fields, in key order.
enum Problem {
    Missing,
    Kind,
}

/// Why a payload is refused as a whole.
enum TooMuch {
    Deep,
    Large,
}

fn payload_error(ty: &str, why: TooMuch, limit: usize) -> ValidationError {
    let message = match why {
        TooMuch::Deep => format!("nested deeper than {MAX_DEPTH} levels"),
        TooMuch::Large => format!("larger than the {limit}-byte limit"),
    };
    ValidationError::new(ty, "payload", message)
}

/// Adds the serialised size of `v` (roughly) to `size`, refusing nesting
/// deeper than [`MAX_DEPTH`] and stopping as soon as `limit` is passed.
fn walk(v: &Value, depth: usize, size: &mut usize, limit: usize) -> Result<(), TooMuch> {
    if depth > MAX_DEPTH {
        return Err(TooMuch::Deep);
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
        return Err(TooMuch::Large);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
