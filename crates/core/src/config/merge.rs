//! Layering a user's file over the built-in configuration (pure).
//!
//! Both are merged as JSON values before they are read into
//! [`super::Config`], so that any key a struct gains is merged too:
//!
//! - lists of named entries add or override by name: `events` by `on`,
//!   `destinations` by `type`, `alerts` by condition (compared in their
//!   parsed form, so `x > 0.50` and `x>0.5` are one rule); `notifiers` by
//!   action;
//! - `budgets` (none are built in) are the file's;
//! - mappings (`metrics`, `limits`, ...) merge key by key; any other value
//!   the file gives replaces the built-in one;
//! - `replace: [alerts, ...]` (or `replace: all`) starts those sections
//!   from nothing instead.
//!
//! Every entry of the result is traced to where it came from ([`Sources`]).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::locate::{locate, Seg};
use super::Replace;

/// Where an entry of the effective configuration comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The file, or `<built-in>`.
    pub file: String,
    /// Its position in its list in that file (0-based), for list entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Its 1-based line in that file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The file's entry took the place of a built-in one of the same name.
    pub overrides: bool,
}

/// The name of the built-in configuration in messages.
pub const BUILTIN: &str = "<built-in>";

impl Source {
    fn builtin(index: Option<usize>) -> Source {
        Source {
            file: BUILTIN.to_string(),
            index,
            line: None,
            overrides: false,
        }
    }

    /// Whether it is the built-in configuration.
    pub fn is_builtin(&self) -> bool {
        self.file == BUILTIN
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_builtin() {
            return f.write_str("built-in");
        }
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if self.overrides {
            f.write_str(" (overrides built-in)")?;
        }
        Ok(())
    }
}

/// Where each entry of an effective configuration comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sources {
    /// By event type.
    pub events: BTreeMap<String, Source>,
    /// By destination type.
    pub destinations: BTreeMap<String, Source>,
    /// In the order of [`super::Config::alerts`].
    pub alerts: Vec<Source>,
    /// By action.
    pub notifiers: BTreeMap<String, Source>,
    /// In the order of [`super::Config::budgets`].
    pub budgets: Vec<Source>,
    /// Every other setting, by dotted path (`metrics.aggregate.window_minutes`),
    /// with its effective value.
    pub settings: Vec<(String, Value, Source)>,
}

/// How an entry of a list section is named.
type NameOf = fn(&Value) -> Option<String>;

/// The sections merged as lists of named entries, and how an entry is named.
const NAMED: [(&str, NameOf); 3] = [
    ("events", key_on),
    ("destinations", key_type),
    ("alerts", key_condition),
];

fn key_on(v: &Value) -> Option<String> {
    v.get("on").and_then(Value::as_str).map(str::to_string)
}

fn key_type(v: &Value) -> Option<String> {
    v.get("type").and_then(Value::as_str).map(str::to_string)
}

/// An alert's name: its condition, parsed and shown again.
pub(crate) fn key_condition(v: &Value) -> Option<String> {
    let text = v.get("condition").and_then(Value::as_str)?.trim();
    Some(
        crate::alerts::Condition::parse(text)
            .map(|c| c.to_string())
            .unwrap_or_else(|_| text.to_string()),
    )
}

/// The user's file, as merged: its name, its text (for line numbers), its
/// value and which sections it replaces.
pub(crate) struct Layer<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub value: &'a Value,
    pub replace: Replace,
}

impl Layer<'_> {
    fn source(&self, path: &[Seg], index: Option<usize>, overrides: bool) -> Source {
        Source {
            file: self.file.to_string(),
            index,
            line: locate(self.text, path).map(|(l, _)| l),
            overrides,
        }
    }
}

/// `base` (the built-in value) with `layer` over it, and where each entry
/// of the result comes from. `layer: None` gives the built-in alone.
pub(crate) fn merge(base: &Value, layer: Option<&Layer<'_>>) -> (Value, Sources) {
    let empty = Map::new();
    let base = base.as_object().unwrap_or(&empty);
    let user = layer.and_then(|l| l.value.as_object()).unwrap_or(&empty);
    let replace = layer.map(|l| l.replace).unwrap_or_default();
    let mut sources = Sources::default();
    let mut out = Map::new();

    for (section, name_of) in NAMED {
        let from_base: &[Value] = if replace.replaces(section) {
            &[]
        } else {
            base.get(section)
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice)
        };
        let from_user = user
            .get(section)
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let mut list: Vec<(Option<String>, Value, Source)> = from_base
            .iter()
            .enumerate()
            .map(|(i, v)| (name_of(v), v.clone(), Source::builtin(Some(i))))
            .collect();
        let builtin_len = list.len();
        for (i, v) in from_user.iter().enumerate() {
            let layer = layer.expect("user entries come from a layer");
            let name = name_of(v);
            let path = [Seg::Key(section.to_string()), Seg::Index(i)];
            let slot = name.as_ref().and_then(|n| {
                list[..builtin_len]
                    .iter()
                    .position(|(k, _, s)| k.as_ref() == Some(n) && s.is_builtin())
            });
            match slot {
                Some(at) => list[at] = (name, v.clone(), layer.source(&path, Some(i), true)),
                None => list.push((name, v.clone(), layer.source(&path, Some(i), false))),
            }
        }
        if list.is_empty() && !user.contains_key(section) {
            continue;
        }
        for (name, _, source) in &list {
            match (section, name) {
                ("events", Some(n)) => {
                    sources.events.insert(n.clone(), source.clone());
                }
                ("destinations", Some(n)) => {
                    sources.destinations.insert(n.clone(), source.clone());
                }
                ("alerts", _) => sources.alerts.push(source.clone()),
                _ => {}
            }
        }
        out.insert(
            section.to_string(),
            Value::Array(list.into_iter().map(|(_, v, _)| v).collect()),
        );
    }

    // Notifiers: by action.
    let mut notifiers = Map::new();
    if !replace.replaces("notifiers") {
        if let Some(Value::Object(m)) = base.get("notifiers") {
            for (k, v) in m {
                notifiers.insert(k.clone(), v.clone());
                sources.notifiers.insert(k.clone(), Source::builtin(None));
            }
        }
    }
    if let (Some(Value::Object(m)), Some(layer)) = (user.get("notifiers"), layer) {
        for (k, v) in m {
            let overrides = notifiers.insert(k.clone(), v.clone()).is_some();
            let path = [Seg::Key("notifiers".into()), Seg::Key(k.clone())];
            sources
                .notifiers
                .insert(k.clone(), layer.source(&path, None, overrides));
        }
    }
    if !notifiers.is_empty() || user.contains_key("notifiers") {
        out.insert("notifiers".into(), Value::Object(notifiers));
    }

    // Budgets: the file's when it has any, else the built-in ones.
    let (budgets, from) = match (user.get("budgets"), layer) {
        (Some(Value::Array(b)), Some(layer)) => (b.clone(), Some(layer)),
        _ => (
            base.get("budgets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            None,
        ),
    };
    for i in 0..budgets.len() {
        sources.budgets.push(match from {
            Some(layer) => {
                let path = [Seg::Key("budgets".into()), Seg::Index(i)];
                layer.source(&path, Some(i), false)
            }
            None => Source::builtin(Some(i)),
        });
    }
    if !budgets.is_empty() || user.contains_key("budgets") {
        out.insert("budgets".into(), Value::Array(budgets));
    }

    // Everything else: mappings key by key, other values replaced.
    let handled = |k: &str| {
        NAMED.iter().any(|(s, _)| *s == k) || matches!(k, "notifiers" | "budgets" | "replace")
    };
    let keys = base.keys().chain(user.keys());
    let mut seen = std::collections::BTreeSet::new();
    for k in keys {
        if handled(k) || !seen.insert(k.clone()) {
            continue;
        }
        let b = if replace.all { None } else { base.get(k) };
        let value = match (b, user.get(k)) {
            (Some(b), Some(u)) => deep_merge(b, u),
            (Some(b), None) => b.clone(),
            (None, Some(u)) => u.clone(),
            (None, None) => continue,
        };
        settings(
            k,
            &value,
            user.get(k),
            layer,
            &mut vec![Seg::Key(k.clone())],
            &mut sources.settings,
        );
        out.insert(k.clone(), value);
    }
    (Value::Object(out), sources)
}

fn deep_merge(base: &Value, user: &Value) -> Value {
    match (base, user) {
        (Value::Object(b), Value::Object(u)) => {
            let mut out = b.clone();
            for (k, v) in u {
                let merged = match b.get(k) {
                    Some(bv) => deep_merge(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, u) => u.clone(),
    }
}

/// Records each leaf of `value` (a setting) with its source: the file when
/// the user's value has it, else built-in.
fn settings(
    name: &str,
    value: &Value,
    user: Option<&Value>,
    layer: Option<&Layer<'_>>,
    path: &mut Vec<Seg>,
    out: &mut Vec<(String, Value, Source)>,
) {
    if let Value::Object(m) = value {
        if !m.is_empty() {
            for (k, v) in m {
                path.push(Seg::Key(k.clone()));
                settings(
                    &format!("{name}.{k}"),
                    v,
                    user.and_then(|u| u.get(k)),
                    layer,
                    path,
                    out,
                );
                path.pop();
            }
            return;
        }
    }
    let source = match (user, layer) {
        (Some(_), Some(layer)) => layer.source(path, None, false),
        _ => Source::builtin(None),
    };
    out.push((name.to_string(), value.clone(), source));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer<'a>(value: &'a Value, replace: Replace) -> Layer<'a> {
        Layer {
            file: "my.yaml",
            text: "",
            value,
            replace,
        }
    }

    fn base() -> Value {
        json!({
            "version": 1,
            "events": [{"on": "a", "emit": ["x"]}, {"on": "b"}],
            "alerts": [{"condition": "events > 0.50", "action": "n"}],
            "notifiers": {"n": [{"type": "console"}]},
            "metrics": {"track": ["k"], "aggregate": {"window_minutes": 60, "buckets": ["hourly"]}},
        })
    }

    #[test]
    fn entries_add_or_override_by_name() {
        let user = json!({
            "events": [{"on": "b", "emit": ["y"]}, {"on": "c"}],
            "alerts": [{"condition": "events>0.5", "action": "m"}, {"condition": "events > 9", "action": "n"}],
            "notifiers": {"m": [], "n": [{"type": "webhook", "url": "http://h"}]},
            "metrics": {"aggregate": {"window_minutes": 5}},
            "strict": true,
        });
        let (v, s) = merge(&base(), Some(&layer(&user, Replace::default())));
        assert_eq!(
            v["events"],
            json!([{"on": "a", "emit": ["x"]}, {"on": "b", "emit": ["y"]}, {"on": "c"}])
        );
        assert!(s.events["a"].is_builtin());
        assert!(s.events["b"].overrides && s.events["b"].index == Some(0));
        assert!(!s.events["c"].overrides && s.events["c"].index == Some(1));
        assert_eq!(v["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(v["alerts"][0]["action"], "m");
        assert!(s.alerts[0].overrides);
        assert_eq!(v["notifiers"]["m"], json!([]));
        assert!(s.notifiers["n"].overrides && !s.notifiers["m"].overrides);
        assert_eq!(
            v["metrics"],
            json!({"track": ["k"], "aggregate": {"window_minutes": 5, "buckets": ["hourly"]}})
        );
        assert_eq!(v["strict"], true);
        let window = s
            .settings
            .iter()
            .find(|(k, _, _)| k == "metrics.aggregate.window_minutes")
            .unwrap();
        assert_eq!(window.1, 5);
        assert!(!window.2.is_builtin());
        let track = s
            .settings
            .iter()
            .find(|(k, _, _)| k == "metrics.track")
            .unwrap();
        assert!(track.2.is_builtin());
    }

    #[test]
    fn replace_starts_sections_from_nothing() {
        let user = json!({"alerts": [{"condition": "events > 9", "action": "n"}]});
        let only_alerts = Replace {
            alerts: true,
            ..Replace::default()
        };
        let (v, s) = merge(&base(), Some(&layer(&user, only_alerts)));
        assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(v["events"].as_array().unwrap().len(), 2);
        assert_eq!(s.alerts.len(), 1);
        let all = Replace {
            all: true,
            ..Replace::default()
        };
        let (v, _) = merge(&base(), Some(&layer(&user, all)));
        assert_eq!(
            v,
            json!({"alerts": [{"condition": "events > 9", "action": "n"}]})
        );
    }
}
