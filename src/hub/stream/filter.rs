//! Stream and query parameters: `since`, `epoch`, `mode`, `limit`,
//! `types`, `agent`, `task_id`.

use std::collections::{HashMap, HashSet};

use crate::event::Event;

/// What a client asked to receive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only these event types (`types=a,b`).
    pub types: Option<HashSet<String>>,
    /// Only events whose payload's `agent` is this.
    pub agent: Option<String>,
    /// Only events whose payload's `task_id` is this.
    pub task_id: Option<String>,
}

impl Filter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        self.matches_fields(
            &event.event_type,
            event.str_field("agent"),
            event.str_field("task_id"),
        )
    }

    /// Whether a retained stream item passes.
    pub fn matches_item(&self, item: &super::ring::StreamItem) -> bool {
        self.matches_fields(
            &item.event_type,
            item.agent.as_deref(),
            item.task_id.as_deref(),
        )
    }

    /// Whether an event with these fields passes (for readers that hold
    /// the fields borrowed from a log line, such as `agentpulse logs`).
    pub fn matches_fields(
        &self,
        event_type: &str,
        agent: Option<&str>,
        task_id: Option<&str>,
    ) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(event_type))
            && self.agent.as_deref().is_none_or(|a| agent == Some(a))
            && self.task_id.as_deref().is_none_or(|t| task_id == Some(t))
    }

    /// Whether everything passes.
    pub fn is_empty(&self) -> bool {
        self.types.is_none() && self.agent.is_none() && self.task_id.is_none()
    }
}

/// The largest id a reader may name: ids are JSON numbers, and readers in
/// JavaScript hold them as doubles, exact up to 2^53 - 1.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// Largest `limit` of `/api/events`.
pub const MAX_LIMIT: usize = 100_000;

/// How a stream treats a reader that falls behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every retained event, however far behind (served from the log once
    /// older than the ring). The default.
    #[default]
    Lossless,
    /// Skip to the live edge (with a `slow_consumer` gap) once more than
    /// `client_queue_bytes` behind: for pages that prefer the present.
    Live,
}

/// The parameters of a stream or events request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamParams {
    /// Resume after this id.
    pub since: Option<u64>,
    /// The epoch of the history `since` belongs to (see
    /// [`crate::pipeline::epoch`]).
    pub epoch: Option<String>,
    /// Lossless (default) or live.
    pub mode: Mode,
    /// At most this many events (for `/api/events`).
    pub limit: Option<usize>,
    /// What to receive.
    pub filter: Filter,
}

impl StreamParams {
    /// Reads the query parameters; the error names the bad one.
    pub fn from_query(q: &HashMap<String, String>) -> Result<StreamParams, String> {
        let since =
            match q.get("since").map(|s| s.trim()) {
                None | Some("") => None,
                Some(s) => Some(s.parse::<u64>().ok().filter(|n| *n <= MAX_ID).ok_or_else(
                    || format!("since: expected an event id in 0..={MAX_ID}, got {s:?}"),
                )?),
            };
        let limit = match q.get("limit").map(|s| s.trim()) {
            None | Some("") => None,
            Some(s) => Some(
                s.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!("limit: expected an integer in 1..={MAX_LIMIT}, got {s:?}")
                    })?,
            ),
        };
        let epoch = match q.get("epoch").map(|s| s.trim()) {
            None | Some("") => None,
            Some(e) if e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Some(e.to_owned())
            }
            Some(e) => {
                return Err(format!(
                "epoch: expected the epoch a hub gave (letters and digits, at most 64), got {e:?}"
            ))
            }
        };
        let mode = match q.get("mode").map(|s| s.trim()) {
            None | Some("") | Some("lossless") => Mode::Lossless,
            Some("live") => Mode::Live,
            Some(m) => return Err(format!("mode: expected lossless or live, got {m:?}")),
        };
        let types = q.get("types").map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<HashSet<_>>()
        });
        let nonempty = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(StreamParams {
            since,
            epoch,
            mode,
            limit,
            filter: Filter {
                types: types.filter(|t| !t.is_empty()),
                agent: nonempty("agent"),
                task_id: nonempty("task_id"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_filters() {
        let p = StreamParams::from_query(&q(&[
            ("since", "5"),
            ("types", "a, b,"),
            ("agent", "critic"),
        ]))
        .unwrap();
        assert_eq!(p.since, Some(5));
        let ev = |ty: &str, agent: &str| Event {
            id: 1,
            event_type: Arc::from(ty),
            timestamp: 1.0,
            event_id: None,
            payload: json!({"agent": agent}).as_object().unwrap().clone(),
        };
        assert!(p.filter.matches(&ev("a", "critic")));
        assert!(!p.filter.matches(&ev("c", "critic")));
        assert!(!p.filter.matches(&ev("b", "scribe")));
        assert!(StreamParams::from_query(&q(&[])).unwrap().filter.is_empty());
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = StreamParams::from_query(&q(&[("since", "abc")])).unwrap_err();
        assert_eq!(
            e,
            r#"since: expected an event id in 0..=9007199254740991, got "abc""#
        );
        let e = StreamParams::from_query(&q(&[("since", "18446744073709551615")])).unwrap_err();
        assert!(e.contains("0..=9007199254740991"), "{e}");
        assert!(StreamParams::from_query(&q(&[("since", "9007199254740991")])).is_ok());
        let e = StreamParams::from_query(&q(&[("limit", "0")])).unwrap_err();
        assert_eq!(e, r#"limit: expected an integer in 1..=100000, got "0""#);
        let e = StreamParams::from_query(&q(&[("limit", "100001")])).unwrap_err();
        assert!(e.starts_with("limit:"));
        let e = StreamParams::from_query(&q(&[("mode", "fast")])).unwrap_err();
        assert_eq!(e, r#"mode: expected lossless or live, got "fast""#);
        let e = StreamParams::from_query(&q(&[("epoch", "a b")])).unwrap_err();
        assert!(e.starts_with("epoch:"));
        let p = StreamParams::from_query(&q(&[("mode", "live"), ("epoch", "ab12")])).unwrap();
        assert_eq!((p.mode, p.epoch.as_deref()), (Mode::Live, Some("ab12")));
    }
}
