//! Field kinds: what a declared field's value must look like.

use std::fmt::Write as _;
use std::str::FromStr;

use serde_json::Value;

/// The kind of value a declared field must hold.
///
/// In a config file an `emit:` entry may name the kind explicitly
/// (`- cost_usd: money`); otherwise it is inferred from the field's name
/// ([`FieldKind::infer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// `name`: a non-empty string of at most 256 bytes (ids, agent names, statuses).
    Name,
    /// `text`: any string.
    Text,
    /// `money` / `duration`: a finite number >= 0.
    NonNegative,
    /// `number`: any finite number.
    Number,
    /// `count`: an integer >= 0.
    Count,
    /// `count_or_list`: an integer >= 0, or an array (counted by its length).
    CountOrList,
    /// `string_list`: an array of strings.
    StringList,
    /// `object`: a JSON object.
    Object,
    /// `bool`: true or false.
    Bool,
    /// `any`: present, any value.
    Any,
}

impl FieldKind {
    /// The kind a field of this name has in the original schema and in
    /// common agent payloads; unknown names may hold anything.
    pub fn infer(field: &str) -> FieldKind {
        match field {
            "task_id" | "agent" | "feature" | "model" | "status" | "priority" => FieldKind::Name,
            "last_error" | "message" => FieldKind::Text,
            "est_cost" | "cost_usd" | "cost" | "current_spend" | "limit" | "duration_ms"
            | "timestamp" => FieldKind::NonNegative,
            // Negative once a budget is overspent.
            "remaining" => FieldKind::Number,
            "attempts" => FieldKind::Count,
            "screenshots" | "tasks_blocked" => FieldKind::CountOrList,
            "tools" => FieldKind::StringList,
            "result" => FieldKind::Object,
            _ => FieldKind::Any,
        }
    }

    /// What the kind expects, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            FieldKind::Name => "a non-empty string",
            FieldKind::Text => "a string",
            FieldKind::NonNegative => "a finite number >= 0",
            FieldKind::Number => "a finite number",
            FieldKind::Count => "an integer >= 0",
            FieldKind::CountOrList => "an integer >= 0 or an array",
            FieldKind::StringList => "an array of strings",
            FieldKind::Object => "an object",
            FieldKind::Bool => "true or false",
            FieldKind::Any => "a value",
        }
    }

    /// Checks `v`; the error says what was expected and what was found.
    pub fn check(self, v: &Value) -> Result<(), String> {
        let ok = match self {
            FieldKind::Name => matches!(v, Value::String(s) if !s.is_empty() && s.len() <= 256),
            FieldKind::Text => v.is_string(),
            FieldKind::NonNegative => v.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0),
            FieldKind::Number => v.as_f64().is_some_and(f64::is_finite),
            FieldKind::Count => is_count(v),
            FieldKind::CountOrList => is_count(v) || v.is_array(),
            FieldKind::StringList => {
                if let Value::Array(items) = v {
                    if let Some((i, bad)) = items.iter().enumerate().find(|(_, x)| !x.is_string()) {
                        return Err(format!(
                            "expected an array of strings, item {i} is {}",
                            show(bad)
                        ));
                    }
                    true
                } else {
                    false
                }
            }
            FieldKind::Object => v.is_object(),
            FieldKind::Bool => v.is_boolean(),
            FieldKind::Any => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {}, got {}", self.expected(), show(v)))
        }
    }
}

fn is_count(v: &Value) -> bool {
    v.as_u64().is_some()
        || v.as_f64()
            .is_some_and(|x| x >= 0.0 && x.fract() == 0.0 && x < 9.0e15)
}

/// A short rendering of a value for an error message: JSON text, cut at 60
/// characters so a 10 MB string does not end up in a log line.
pub(crate) fn show(v: &Value) -> String {
    const MAX: usize = 60;
    let rendered = match v {
        Value::String(s) if s.len() > MAX => {
            let cut = floor_char_boundary(s, MAX);
            let mut out = serde_json::to_string(&s[..cut]).unwrap_or_default();
            out.pop();
            let _ = write!(out, "…\" ({} bytes)", s.len());
            return out;
        }
        Value::Array(a) if a.len() > 8 => return format!("an array of {} items", a.len()),
        Value::Object(o) if o.len() > 8 => return format!("an object of {} keys", o.len()),
        _ => v.to_string(),
    };
    if rendered.len() > MAX {
        let cut = floor_char_boundary(&rendered, MAX);
        format!("{}…", &rendered[..cut])
    } else {
        rendered
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl FromStr for FieldKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "name" | "id" => FieldKind::Name,
            "text" | "string" => FieldKind::Text,
            "money" | "duration" | "non_negative" => FieldKind::NonNegative,
            "number" => FieldKind::Number,
            "count" | "integer" => FieldKind::Count,
            "count_or_list" => FieldKind::CountOrList,
            "string_list" => FieldKind::StringList,
            "object" => FieldKind::Object,
            "bool" | "boolean" => FieldKind::Bool,
            "any" => FieldKind::Any,
            other => {
                const KINDS: [&str; 11] = [
                    "name",
                    "text",
                    "money",
                    "duration",
                    "number",
                    "count",
                    "count_or_list",
                    "string_list",
                    "object",
                    "bool",
                    "any",
                ];
                return Err(format!(
                    "unknown field kind `{other}`{} ({})",
                    crate::suggest::did_you_mean(other, KINDS),
                    KINDS.join(", ")
                ));
            }
        })
    }
}
