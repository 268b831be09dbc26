//! Units written in the configuration.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A length of time in seconds, written `30s`, `5m`, `1h`, `1d` or as a
/// number of seconds (`90`, `"90"`, `2.5`). Always finite and > 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

impl Seconds {
    /// The longest accepted: 365 days.
    pub const MAX: f64 = 365.0 * 86_400.0;

    /// Reads a YAML/JSON value: a number of seconds or a string `<n>[s|m|h|d]`.
    /// The error says what was expected.
    pub fn parse(v: &Value) -> Result<Seconds, String> {
        let expected = "expected a duration such as 30s, 5m, 1h, 1d or a number of seconds";
        let secs = match v {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::String(s) => {
                let t = s.trim();
                let (num, unit) = match t.char_indices().last() {
                    Some((i, c @ ('s' | 'm' | 'h' | 'd'))) => (&t[..i], c),
                    _ => (t, 's'),
                };
                let num = num.trim_end();
                // Only plain decimal numbers: no `inf`, `nan`, signs or exponents.
                if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    return Err(format!("{expected}, got {s:?}"));
                }
                let n: f64 = num.parse().map_err(|_| format!("{expected}, got {s:?}"))?;
                n * match unit {
                    'm' => 60.0,
                    'h' => 3_600.0,
                    'd' => 86_400.0,
                    _ => 1.0,
                }
            }
            other => return Err(format!("{expected}, got {other}")),
        };
        if !(secs.is_finite() && secs > 0.0) {
            return Err(format!("must be more than 0 seconds, got {v}"));
        }
        if secs > Seconds::MAX {
            return Err(format!("must be at most 365 days, got {v}"));
        }
        Ok(Seconds(secs))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Seconds::parse(&v).map_err(serde::de::Error::custom)
    }
}
