//! The human-in-the-loop queue, kept by the hub: which tasks have an open
//! escalation (`hitl_escalated`) and how the others were answered
//! (`hitl_resolved`), and the two endpoints that use it:
//!
//! - `POST /api/hitl/{task_id}/resolve` with
//!   `{"resolution": "resolved"|"retry"|"abandoned", "note": "...", "by": "..."}`
//!   emits `hitl_resolved` through the pipeline (log, stream, dashboards);
//!   409 when the task has no open escalation;
//! - `GET /api/hitl/{task_id}?wait=30`: the task's escalation state; with
//!   `wait`, a long poll that answers as soon as it is resolved, or after
//!   the wait with the open state.
//!
//! The book is fed from the log at start and then by every batch (see
//! [`super::task_index::TaskTap`]), so a resolved escalation stays resolved
//! across a restart. An escalation is open from its `hitl_escalated` until
//! a `hitl_resolved` of the task; a later `hitl_escalated` opens it again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{error_response, SharedState};
use crate::event::{Event, NewEvent};
use crate::pipeline::Outcome;

/// The event type a resolution is emitted as.
pub const RESOLVED_TYPE: &str = "hitl_resolved";

/// Longest note, in bytes.
pub const MAX_NOTE_BYTES: usize = 4096;

/// Longest `by`, in bytes (a `name` field of the schema).
pub const MAX_BY_BYTES: usize = 256;

/// Longest long poll, in seconds.
pub const MAX_WAIT_SECS: f64 = 60.0;

/// Tasks the book remembers; past it, the oldest resolved ones go first.
pub const MAX_TASKS: usize = 100_000;

/// The answers a human may give.
pub const RESOLUTIONS: [&str; 3] = ["resolved", "retry", "abandoned"];

/// An escalation, as `hitl_escalated` said it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Escalation {
    /// The event's id.
    pub id: u64,
    /// Its timestamp.
    pub timestamp: f64,
    /// `attempts`, when a number.
    pub attempts: Option<f64>,
    /// `priority`, when a string.
    pub priority: Option<String>,
    /// `last_error`, when a string.
    pub last_error: Option<String>,
}

/// A human's answer, as `hitl_resolved` said it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Resolution {
    /// The event's id.
    pub id: u64,
    /// Its timestamp.
    pub timestamp: f64,
    /// `resolved`, `retry` or `abandoned`.
    pub resolution: String,
    /// The note (text, at most [`MAX_NOTE_BYTES`]).
    pub note: String,
    /// Who answered.
    pub by: String,
}

/// What the book holds for one task.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TaskHitl {
    /// The last escalation.
    pub escalation: Option<Escalation>,
    /// The answer to it, once given (`None` while open).
    pub resolution: Option<Resolution>,
    /// A resolve request is on its way through the pipeline.
    #[serde(skip)]
    pending: bool,
}

impl TaskHitl {
    /// `open`, `resolved`, or `none` (a resolution without an escalation).
    pub fn state(&self) -> &'static str {
        match (&self.escalation, &self.resolution) {
            (Some(_), None) => "open",
            (_, Some(_)) => "resolved",
            (None, None) => "none",
        }
    }
}

/// Why a resolve could not begin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveRefused {
    /// No escalation of the task is open.
    #[error("task {0:?} has no open escalation")]
    NotOpen(String),
    /// Another resolve of the task is being written.
    #[error("task {0:?} is being resolved by another request")]
    InProgress(String),
}

/// The HITL queue (see the module docs).
pub struct HitlBook {
    tasks: Mutex<HashMap<Arc<str>, TaskHitl, foldhash::fast::RandomState>>,
    /// Bumped after every batch that changed the book: wakes long polls.
    changed: watch::Sender<u64>,
}

impl Default for HitlBook {
    fn default() -> Self {
        HitlBook {
            tasks: Mutex::new(HashMap::default()),
            changed: watch::Sender::new(0),
        }
    }
}

impl HitlBook {
    /// Forgets every task's escalations (see
    /// [`crate::pipeline::Tap::on_recovery_abandoned`]).
    pub fn clear(&self) {
        self.tasks.lock().clear();
        self.changed.send_modify(|n| *n += 1);
    }

    /// Applies one event (escalations and resolutions; others are ignored).
    pub fn observe(&self, event: &Event) {
        let ty = &*event.event_type;
        if ty != "hitl_escalated" && ty != RESOLVED_TYPE {
            return;
        }
        let Some(task) = event.str_field("task_id") else {
            return;
        };
        let s = |k: &str| event.str_field(k).map(str::to_owned);
        let mut tasks = self.tasks.lock();
        if tasks.len() >= MAX_TASKS && !tasks.contains_key(task) {
            evict(&mut tasks);
        }
        let entry = tasks.entry(Arc::from(task)).or_default();
        if ty == "hitl_escalated" {
            entry.escalation = Some(Escalation {
                id: event.id,
                timestamp: event.timestamp,
                attempts: event.f64_field("attempts"),
                priority: s("priority"),
                last_error: s("last_error"),
            });
            entry.resolution = None;
        } else {
            entry.resolution = Some(Resolution {
                id: event.id,
                timestamp: event.timestamp,
                resolution: s("resolution").unwrap_or_default(),
                note: s("note").unwrap_or_default(),
                by: s("by").unwrap_or_default(),
            });
            entry.pending = false;
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// What the book holds for `task`.
    pub fn get(&self, task: &str) -> Option<TaskHitl> {
        self.tasks.lock().get(task).cloned()
    }

    /// Open escalations, oldest first (at most `limit`).
    pub fn open(&self, limit: usize) -> Vec<(String, Escalation)> {
        let tasks = self.tasks.lock();
        let mut open: Vec<(String, Escalation)> = tasks
            .iter()
            .filter(|(_, t)| t.resolution.is_none())
            .filter_map(|(k, t)| Some((k.to_string(), t.escalation.clone()?)))
            .collect();
        open.sort_by_key(|(_, e)| e.id);
        open.truncate(limit);
        open
    }

    /// Marks `task` as being resolved: one resolve at a time, and only of
    /// an open escalation. Undone by [`HitlBook::abort_resolve`] when the
    /// event could not be written.
    pub fn begin_resolve(&self, task: &str) -> Result<(), ResolveRefused> {
        let mut tasks = self.tasks.lock();
        match tasks.get_mut(task) {
            Some(t) if t.escalation.is_some() && t.resolution.is_none() => {
                if t.pending {
                    return Err(ResolveRefused::InProgress(task.to_owned()));
                }
                t.pending = true;
                Ok(())
            }
            _ => Err(ResolveRefused::NotOpen(task.to_owned())),
        }
    }

    /// The resolve of `task` failed: it is open again.
    pub fn abort_resolve(&self, task: &str) {
        if let Some(t) = self.tasks.lock().get_mut(task) {
            t.pending = false;
        }
    }

    /// A receiver that changes whenever the book does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Makes room: resolved tasks first (oldest answer first), then the oldest
/// escalations; a tenth of the book at a time so that this stays rare.
fn evict(tasks: &mut HashMap<Arc<str>, TaskHitl, foldhash::fast::RandomState>) {
    let mut keys: Vec<(bool, u64, Arc<str>)> = tasks
        .iter()
        .map(|(k, t)| {
            let open = t.resolution.is_none();
            let id = t
                .resolution
                .as_ref()
                .map(|r| r.id)
                .or(t.escalation.as_ref().map(|e| e.id))
                .unwrap_or(0);
            (open, id, k.clone())
        })
        .collect();
    keys.sort();
    for (_, _, k) in keys.into_iter().take(MAX_TASKS / 10) {
        tasks.remove(&k);
    }
}

/// The body of a resolve request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    resolution: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    by: Option<String>,
}

/// The JSON answer for a task's HITL state.
fn state_json(task: &str, t: &TaskHitl) -> Value {
    json!({
        "task_id": task,
        "state": t.state(),
        "escalation": t.escalation,
        "resolution": t.resolution,
    })
}

/// `POST /api/hitl/{task_id}/resolve` (write token, own origin, JSON body).
pub async fn resolve(
    State(state): State<SharedState>,
    Path(task): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "resolve: the body must be JSON (Content-Type: application/json)",
        );
    }
    // A resolution is small: the note's limit and some room for the rest.
    let bytes = match axum::body::to_bytes(body, MAX_NOTE_BYTES * 2 + 4096).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("resolve: body not read or over the limit: {e}"),
            )
        }
    };
    let req: ResolveBody = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, format!("{RESOLVED_TYPE}: {e}")),
    };
    if let Err(e) = check(&task, &req) {
        return error_response(StatusCode::UNPROCESSABLE_ENTITY, e);
    }
    let book = &state.hitl;
    if let Err(e) = book.begin_resolve(&task) {
        return error_response(StatusCode::CONFLICT, e.to_string());
    }
    let by = req.by.clone().unwrap_or_else(|| "anonymous".to_owned());
    let escalation_id = book
        .get(&task)
        .and_then(|t| t.escalation.map(|e| e.id))
        .unwrap_or(0);
    let payload = json!({
        "task_id": task,
        "resolution": req.resolution,
        "note": req.note,
        "by": by,
        "escalation_id": escalation_id,
    });
    let Value::Object(payload) = payload else {
        unreachable!("an object literal")
    };
    let results = state
        .emitter
        .ingest(vec![NewEvent::new(RESOLVED_TYPE, payload)])
        .await;
    let id = match results.as_deref() {
        Ok([Ok(Outcome::Accepted(id) | Outcome::Duplicate(id))]) => *id,
        Ok([Err(e)]) => {
            book.abort_resolve(&task);
            return error_response(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
        }
        Ok(_) => {
            book.abort_resolve(&task);
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "resolve: no outcome");
        }
        Err(e) => {
            book.abort_resolve(&task);
            let (status, body) = super::ingest::refusal_answer(e);
            return (status, Json(body)).into_response();
        }
    };
    let t = book.get(&task).unwrap_or_default();
    let mut answer = state_json(&task, &t);
    answer["id"] = json!(id);
    Json(answer).into_response()
}

/// The request's fields, checked: each fault names the field.
fn check(task: &str, req: &ResolveBody) -> Result<(), String> {
    if task.is_empty() || task.len() > 256 {
        return Err(format!(
            "{RESOLVED_TYPE}.task_id: expected 1 to 256 bytes, got {}",
            task.len()
        ));
    }
    if !RESOLUTIONS.contains(&req.resolution.as_str()) {
        return Err(format!(
            "{RESOLVED_TYPE}.resolution: expected one of resolved, retry, abandoned, got {:?}",
            req.resolution
        ));
    }
    if req.note.len() > MAX_NOTE_BYTES {
        return Err(format!(
            "{RESOLVED_TYPE}.note: at most {MAX_NOTE_BYTES} bytes, got {}",
            req.note.len()
        ));
    }
    if let Some(by) = &req.by {
        if by.is_empty() || by.len() > MAX_BY_BYTES {
            return Err(format!(
                "{RESOLVED_TYPE}.by: expected 1 to {MAX_BY_BYTES} bytes, got {}",
                by.len()
            ));
        }
    }
    Ok(())
}

/// `GET /api/hitl/{task_id}?wait=SECONDS` (read token): the task's state;
/// with `wait` (at most [`MAX_WAIT_SECS`]), answers once it is resolved or
/// when the wait is over. 404 when the hub knows no escalation of the task.
pub async fn status(
    State(state): State<SharedState>,
    Path(task): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let wait = match query.get("wait").map(|w| w.parse::<f64>()) {
        None => 0.0,
        Some(Ok(w)) if w.is_finite() && w >= 0.0 => w.min(MAX_WAIT_SECS),
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "wait: expected seconds from 0 to {MAX_WAIT_SECS}, got {:?}",
                    query["wait"]
                ),
            )
        }
    };
    let book = &state.hitl;
    let mut changes = book.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
    loop {
        let Some(t) = book.get(&task) else {
            return error_response(
                StatusCode::NOT_FOUND,
                format!("task {task:?} has no escalation the hub knows of"),
            );
        };
        if t.state() != "open" || tokio::time::Instant::now() >= deadline {
            return Json(state_json(&task, &t)).into_response();
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Json(state_json(&task, &t)).into_response();
                }
            }
            () = tokio::time::sleep_until(deadline) => {}
            () = state.shutdown.cancelled() => {
                return Json(state_json(&task, &t)).into_response();
            }
        }
    }
}

/// `GET /api/hitl`: the open escalations, oldest first.
pub async fn queue(State(state): State<SharedState>) -> Response {
    let open: Vec<Value> = state
        .hitl
        .open(1000)
        .into_iter()
        .map(|(task, e)| json!({"task_id": task, "escalation": e}))
        .collect();
    Json(json!({ "open": open })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64, ty: &str, payload: Value) -> Event {
        Event {
            id,
            event_type: Arc::from(ty),
            timestamp: id as f64,
            event_id: None,
            payload: payload.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn an_escalation_is_open_until_resolved_and_reopens() {
        let book = HitlBook::default();
        assert_eq!(
            book.begin_resolve("t"),
            Err(ResolveRefused::NotOpen("t".into()))
        );
        book.observe(&ev(
            1,
            "hitl_escalated",
            json!({"task_id": "t", "attempts": 3}),
        ));
        assert_eq!(book.get("t").unwrap().state(), "open");
        book.begin_resolve("t").unwrap();
        assert_eq!(
            book.begin_resolve("t"),
            Err(ResolveRefused::InProgress("t".into()))
        );
        book.observe(&ev(
            2,
            RESOLVED_TYPE,
            json!({"task_id": "t", "resolution": "retry", "note": "n", "by": "ann"}),
        ));
        let t = book.get("t").unwrap();
        assert_eq!(t.state(), "resolved");
        assert_eq!(t.resolution.unwrap().by, "ann");
        assert!(book.begin_resolve("t").is_err());
        book.observe(&ev(3, "hitl_escalated", json!({"task_id": "t"})));
        assert_eq!(book.open(10).len(), 1);
        book.begin_resolve("t").unwrap();
        book.abort_resolve("t");
        book.begin_resolve("t").unwrap();
    }

    #[test]
    fn the_fields_are_checked_by_name() {
        let body = |r: &str, note: usize| ResolveBody {
            resolution: r.into(),
            note: "x".repeat(note),
            by: None,
        };
        assert!(check("t", &body("retry", MAX_NOTE_BYTES)).is_ok());
        let e = check("t", &body("maybe", 0)).unwrap_err();
        assert!(e.starts_with("hitl_resolved.resolution"), "{e}");
        let e = check("t", &body("retry", MAX_NOTE_BYTES + 1)).unwrap_err();
        assert!(e.starts_with("hitl_resolved.note"), "{e}");
    }
}
