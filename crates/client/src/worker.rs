//! The client's background thread: a tokio current-thread runtime running
//! one loop that takes batches off the queue, sends them over the
//! WebSocket (or HTTP), and settles them with the hub's answers.
//!
//! A batch is *held* from the moment it leaves the queue until the hub
//! answers it: on the WebSocket it sits in `inflight` (in send order, at
//! most [`WS_WINDOW`]), and after a failure in `resend`, which is always
//! sent before anything new. Breaking the connection moves `inflight`
//! ahead of `resend`, so batches go again in their original order, with
//! their original `event_id`s.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};

use super::{Item, Shared, Throttle, Transport, WS_WINDOW};

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the WebSocket is left alone after it could not be opened while
/// HTTP works.
const HTTP_FALLBACK_FOR: Duration = Duration::from_secs(30);

/// Bodies from this size are gzipped on HTTP.
const GZIP_FROM: usize = 64 * 1024;

pub(crate) const USER_AGENT: &str = concat!("agentpulse-rust/", env!("CARGO_PKG_VERSION"));

/// Runs the worker until the client is closed (or its deadline passes),
/// then counts whatever is left as lost.
pub(super) fn run(shared: Arc<Shared>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match rt {
        Ok(rt) => {
            let mut worker = Worker::new(shared.clone());
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(worker.run())
            }));
            if result.is_err() {
                shared.lock().last_error =
                    Some("internal error: the client's thread panicked".into());
            }
        }
        Err(e) => {
            tracing::error!("agentpulse client: cannot start its runtime: {e}");
            shared.lock().last_error = Some(format!("cannot start the runtime: {e}"));
        }
    }
    let mut st = shared.lock();
    let left = st.held();
    if left > 0 {
        tracing::warn!(
            "agentpulse client: {} not delivered to {} before close",
            events(left),
            shared.settings.endpoints.base
        );
    }
    st.lost += left;
    st.done = st.enqueued;
    st.queue.clear();
    st.first_at = None;
    st.worker_alive = false;
    st.transport = None;
    drop(st);
    shared.progress.notify_all();
}

/// An encoded batch and its delivery state.
struct Batch {
    lines: Vec<Vec<u8>>,
    sent_before: bool,
    seq: u64,
    sent_at: Instant,
}

impl Batch {
    fn len(&self) -> usize {
        self.lines.len()
    }

    /// The batch as a JSON array.
    fn body(&self) -> Vec<u8> {
        let size = 2 + self.lines.iter().map(|l| l.len() + 1).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.push(b'[');
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(l);
        }
        out.push(b']');
        out
    }

    fn split(mut self) -> (Batch, Batch) {
        let back = self.lines.split_off(self.lines.len() / 2);
        let mk = |lines| Batch {
            lines,
            sent_before: false,
            seq: 0,
            sent_at: Instant::now(),
        };
        (mk(self.lines), mk(back))
    }
}

/// What an answer means for its batch.
enum Settled {
    /// Answered: counted as sent or rejected.
    Done,
    /// Too large: send the halves instead.
    Split(Batch, Batch),
    /// Try again later (408, 429, 5xx).
    Retry(Batch, String),
}

enum Conn {
    Ws(Box<WsStream>),
    Http,
}

enum Woke {
    Message(Option<Result<Message, tungstenite::Error>>),
    Notified,
    Timer,
}

struct Worker {
    shared: Arc<Shared>,
    conn: Option<Conn>,
    inflight: VecDeque<Batch>,
    resend: VecDeque<Batch>,
    attempt: u32,
    http_until: Option<Instant>,
    next_seq: u64,
    rng: u64,
    agent: ureq::Agent,
    warn_retry: Throttle,
    warn_reject: Throttle,
}

#[derive(Serialize)]
struct Wire<'a> {
    event_type: &'a str,
    timestamp: f64,
    event_id: &'a str,
    payload: &'a Map<String, Value>,
}

fn encode(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + item.payload.len() * 32);
    // A Map with string keys always serialises.
    serde_json::to_writer(
        &mut out,
        &Wire {
            event_type: &item.event_type,
            timestamp: item.timestamp,
            event_id: &item.event_id,
            payload: &item.payload,
        },
    )
    .expect("an event serialises");
    out
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        let agent = shared.settings.agent.clone();
        Worker {
            shared,
            conn: None,
            inflight: VecDeque::new(),
            resend: VecDeque::new(),
            attempt: 0,
            http_until: None,
            next_seq: 0,
            rng: super::random_u64() | 1,
            agent,
            warn_retry: Throttle::default(),
            warn_reject: Throttle::default(),
        }
    }

    async fn run(&mut self) {
        loop {
            let (queued, stopping, deadline) = {
                let st = self.shared.lock();
                (!st.queue.is_empty(), st.stopping, st.deadline)
            };
            if stopping && deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let work = queued || !self.inflight.is_empty() || !self.resend.is_empty();
            if !work {
                if stopping {
                    break;
                }
                self.idle().await;
                continue;
            }
            if self.conn.is_none() {
                match self.connect().await {
                    Ok(conn) => {
                        self.shared.lock().transport = Some(match conn {
                            Conn::Ws(_) => "websocket",
                            Conn::Http => "http",
                        });
                        self.next_seq = 0;
                        self.conn = Some(conn);
                    }
                    Err(why) => {
                        self.problem(&why);
                        self.backoff().await;
                        continue;
                    }
                }
            }
            match self.conn.take() {
                Some(Conn::Ws(ws)) => self.step_ws(ws).await,
                Some(Conn::Http) => self.step_http().await,
                None => {}
            }
        }
        if let Some(Conn::Ws(mut ws)) = self.conn.take() {
            let _ =
                tokio::time::timeout(Duration::from_millis(200), SinkExt::close(&mut *ws)).await;
        }
        // Whatever is still held is counted as lost by `run`'s caller.
    }

    /// The close deadline, when closing.
    fn deadline(&self) -> Option<Instant> {
        let st = self.shared.lock();
        st.stopping.then_some(st.deadline).flatten()
    }

    /// `d`, shortened to the close deadline.
    fn bounded(&self, d: Duration) -> Duration {
        match self.deadline() {
            Some(dl) => d
                .min(dl.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1)),
            None => d,
        }
    }

    /// Nothing to send: wait for events, a flush or a close. On an open
    /// WebSocket, also notice the hub closing it.
    async fn idle(&mut self) {
        let shared = self.shared.clone();
        let woke = match &mut self.conn {
            Some(Conn::Ws(ws)) => tokio::select! {
                m = ws.next() => Woke::Message(m),
                _ = shared.wake.notified() => Woke::Notified,
                _ = shared.kick.notified() => Woke::Notified,
                _ = tokio::time::sleep(Duration::from_secs(1)) => Woke::Timer,
            },
            _ => tokio::select! {
                _ = shared.wake.notified() => Woke::Notified,
                _ = shared.kick.notified() => Woke::Notified,
                _ = tokio::time::sleep(Duration::from_secs(1)) => Woke::Timer,
            },
        };
        if let Woke::Message(m) = woke {
            match m {
                Some(Ok(Message::Text(t))) => {
                    // An answer with nothing in flight: the hub is confused.
                    self.disconnect(&format!("unexpected message from the hub: {t}"));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // Nothing in flight: just reconnect when there is work.
                    tracing::debug!("agentpulse client: the hub closed an idle connection");
                    self.conn = None;
                    self.shared.lock().transport = None;
                }
                Some(Ok(_)) => {}
            }
        }
    }

    async fn connect(&mut self) -> Result<Conn, String> {
        let settings = &self.shared.settings;
        let http_now = match settings.transport {
            Transport::Http => true,
            Transport::WebSocket => false,
            Transport::Auto => self.http_until.is_some_and(|t| Instant::now() < t),
        };
        if http_now {
            return Ok(Conn::Http);
        }
        let url = settings.endpoints.ws.as_str();
        let mut req = url
            .into_client_request()
            .map_err(|e| format!("{url}: {e}"))?;
        req.headers_mut()
            .insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Some(t) = &settings.token {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| "the token is not a valid header value".to_string())?;
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        let limit = self.bounded(settings.request_timeout);
        let attempt = tokio::time::timeout(
            limit,
            tokio_tungstenite::connect_async_tls_with_config(
                req,
                None,
                true,
                settings
                    .tls
                    .clone()
                    .map(tokio_tungstenite::Connector::Rustls),
            ),
        )
        .await;
        let refusal = match attempt {
            Ok(Ok((ws, _))) => return Ok(Conn::Ws(Box::new(ws))),
            Err(_) => return Err(format!("{url}: no connection within {limit:?}")),
            Ok(Err(tungstenite::Error::Io(e))) => return Err(format!("{url}: {e}")),
            Ok(Err(tungstenite::Error::Http(resp))) => format!("HTTP {}", resp.status()),
            Ok(Err(e)) => e.to_string(),
        };
        // The hub answered but would not open the WebSocket.
        if settings.transport == Transport::Auto {
            tracing::info!(
                "agentpulse client: the WebSocket {url} cannot be opened ({refusal}); using POST /events"
            );
            self.http_until = Some(Instant::now() + HTTP_FALLBACK_FOR);
            Ok(Conn::Http)
        } else {
            Err(format!("{url}: {refusal}"))
        }
    }

    /// Whether the queue's head should go now.
    fn ready(&self) -> bool {
        let st = self.shared.lock();
        !st.queue.is_empty()
            && (st.queue.len() >= self.shared.settings.max_batch
                || st.urgent()
                || st
                    .first_at
                    .is_none_or(|t| t.elapsed() >= self.shared.settings.flush_interval))
    }

    /// When the queue's head becomes due, if it is not yet.
    fn due_at(&self) -> Option<Instant> {
        let st = self.shared.lock();
        if st.queue.is_empty() {
            return None;
        }
        Some(
            st.first_at
                .map_or_else(Instant::now, |t| t + self.shared.settings.flush_interval),
        )
    }

    /// Takes the next batch off the queue (up to the count and byte limits).
    fn take_batch(&mut self) -> Option<Batch> {
        let settings = &self.shared.settings;
        let items: Vec<Item> = {
            let mut st = self.shared.lock();
            let n = st.queue.len().min(settings.max_batch);
            let items = st.queue.drain(..n).collect();
            if st.queue.is_empty() {
                st.first_at = None;
            }
            items
        };
        if items.is_empty() {
            return None;
        }
        let mut lines = Vec::with_capacity(items.len());
        let mut bytes = 2;
        let mut rest = items.into_iter();
        for item in rest.by_ref() {
            let line = encode(&item);
            if !lines.is_empty() && bytes + line.len() + 1 > settings.max_batch_bytes {
                // Over the byte limit: this one and the rest start the next
                // batch, due at once.
                let mut st = self.shared.lock();
                let back: Vec<Item> = std::iter::once(item).chain(rest).collect();
                for it in back.into_iter().rev() {
                    st.queue.push_front(it);
                }
                st.first_at = Some(Instant::now() - settings.flush_interval);
                break;
            }
            bytes += line.len() + 1;
            lines.push(line);
        }
        Some(Batch {
            lines,
            sent_before: false,
            seq: 0,
            sent_at: Instant::now(),
        })
    }

    /// The next batch to send: a re-send first, else a due batch of new
    /// events.
    fn next_batch(&mut self) -> Option<Batch> {
        if let Some(b) = self.resend.pop_front() {
            return Some(b);
        }
        if self.ready() {
            return self.take_batch();
        }
        None
    }

    fn mark_sent(&mut self, batch: &mut Batch) {
        if batch.sent_before {
            self.shared.lock().retries += 1;
        }
        batch.sent_before = true;
        batch.sent_at = Instant::now();
    }

    async fn step_ws(&mut self, mut ws: Box<WsStream>) {
        let timeout = self.shared.settings.request_timeout;
        while self.inflight.len() < WS_WINDOW {
            let Some(mut batch) = self.next_batch() else {
                break;
            };
            self.mark_sent(&mut batch);
            self.next_seq += 1;
            batch.seq = self.next_seq;
            let body = String::from_utf8(batch.body()).expect("JSON is UTF-8");
            self.inflight.push_back(batch);
            let sent =
                tokio::time::timeout(self.bounded(timeout), ws.send(Message::text(body))).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return self.fail(&format!("sending to the hub: {e}")).await,
                Err(_) => return self.fail("sending to the hub timed out").await,
            }
        }
        // Wait for an answer, new events, a batch coming due, or a timeout.
        let mut until = Instant::now() + Duration::from_secs(1);
        if let Some(front) = self.inflight.front() {
            until = until.min(front.sent_at + timeout);
        }
        if self.inflight.len() < WS_WINDOW {
            if let Some(due) = self.due_at() {
                until = until.min(due);
            }
        }
        if let Some(dl) = self.deadline() {
            until = until.min(dl);
        }
        let shared = self.shared.clone();
        let woke = tokio::select! {
            m = ws.next() => Woke::Message(m),
            _ = shared.wake.notified() => Woke::Notified,
            _ = shared.kick.notified() => Woke::Notified,
            _ = tokio::time::sleep_until(until.into()) => Woke::Timer,
        };
        match woke {
            Woke::Message(Some(Ok(Message::Text(text)))) => {
                if let Err(why) = self.on_answer(&text) {
                    return self.fail(&why).await;
                }
            }
            Woke::Message(Some(Ok(Message::Close(_))) | None) => {
                return self.fail("the hub closed the connection").await;
            }
            Woke::Message(Some(Err(e))) => {
                return self
                    .fail(&format!("connection to the hub broke: {e}"))
                    .await;
            }
            Woke::Message(Some(Ok(_))) | Woke::Notified => {}
            Woke::Timer => {
                if let Some(front) = self.inflight.front() {
                    if front.sent_at.elapsed() >= timeout {
                        return self
                            .fail(&format!("no answer from the hub within {timeout:?}"))
                            .await;
                    }
                }
            }
        }
        self.conn = Some(Conn::Ws(ws));
    }

    /// Settles the answer to the oldest batch in flight; an error means the
    /// connection must be dropped (its batches are then sent again).
    fn on_answer(&mut self, text: &str) -> Result<(), String> {
        let answer: Value = serde_json::from_str(text)
            .map_err(|_| format!("unreadable answer from the hub: {text:.200}"))?;
        let Some(batch) = self.inflight.pop_front() else {
            return Err(format!("unexpected message from the hub: {text:.200}"));
        };
        if answer["seq"].as_u64() != Some(batch.seq) {
            self.inflight.push_front(batch);
            return Err(format!("answer out of order from the hub: {text:.200}"));
        }
        let status = answer["status"].as_u64().unwrap_or(200) as u16;
        match self.settle(batch, status, Some(answer)) {
            Settled::Done => {
                self.attempt = 0;
                Ok(())
            }
            Settled::Split(a, b) => {
                self.resend.push_front(b);
                self.resend.push_front(a);
                Ok(())
            }
            Settled::Retry(batch, why) => {
                self.inflight.push_front(batch);
                Err(why)
            }
        }
    }

    async fn step_http(&mut self) {
        let Some(mut batch) = self.next_batch() else {
            // Not due yet: wait until it is, or for a flush.
            let until = self
                .due_at()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            let shared = self.shared.clone();
            tokio::select! {
                _ = shared.wake.notified() => {},
                _ = shared.kick.notified() => {},
                _ = tokio::time::sleep_until(until.into()) => {},
            }
            self.conn = Some(Conn::Http);
            return;
        };
        self.mark_sent(&mut batch);
        let result = self.post(batch.body()).await;
        match result {
            Ok((status, answer)) => match self.settle(batch, status, answer) {
                Settled::Done => {
                    self.attempt = 0;
                    // Time to try the WebSocket again?
                    let retry_ws = self.shared.settings.transport == Transport::Auto
                        && self.http_until.is_some_and(|t| Instant::now() >= t);
                    if retry_ws {
                        self.http_until = None;
                        self.shared.lock().transport = None;
                    } else {
                        self.conn = Some(Conn::Http);
                    }
                }
                Settled::Split(a, b) => {
                    self.resend.push_front(b);
                    self.resend.push_front(a);
                    self.conn = Some(Conn::Http);
                }
                Settled::Retry(batch, why) => {
                    self.resend.push_front(batch);
                    self.conn = Some(Conn::Http);
                    self.problem(&why);
                    self.backoff().await;
                }
            },
            Err(why) => {
                self.resend.push_front(batch);
                self.http_until = None;
                self.shared.lock().transport = None;
                self.problem(&why);
                self.backoff().await;
            }
        }
    }

    /// `POST /events` of a JSON array, on the blocking pool.
    async fn post(&self, body: Vec<u8>) -> Result<(u16, Option<Value>), String> {
        let agent = self.agent.clone();
        let url = self.shared.settings.endpoints.events.clone();
        let token = self.shared.settings.token.clone();
        let timeout = self.bounded(self.shared.settings.request_timeout);
        let task = tokio::task::spawn_blocking(move || {
            let mut req = agent
                .post(&url)
                .timeout(timeout)
                .set("Content-Type", "application/json");
            if let Some(t) = &token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let body = if body.len() >= GZIP_FROM {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                match gz.write_all(&body).and_then(|_| gz.finish()) {
                    Ok(z) => {
                        req = req.set("Content-Encoding", "gzip");
                        z
                    }
                    Err(_) => body,
                }
            } else {
                body
            };
            let (status, text) = match req.send_bytes(&body) {
                Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
                Err(e) => return Err(format!("{url}: {e}")),
            };
            Ok((status, serde_json::from_str(&text).ok()))
        });
        task.await
            .unwrap_or_else(|e| Err(format!("sending thread failed: {e}")))
    }

    /// Counts an answer to `batch`.
    fn settle(&mut self, batch: Batch, status: u16, answer: Option<Value>) -> Settled {
        let n = batch.len() as u64;
        let ids_ok = answer
            .as_ref()
            .and_then(|a| a.get("ids"))
            .is_some_and(Value::is_array);
        match status {
            200 | 207 | 422 if ids_ok => {
                self.account(&batch, answer.as_ref().expect("checked"));
                Settled::Done
            }
            200 => {
                // Taken, though the answer is unreadable.
                let mut st = self.shared.lock();
                st.sent += n;
                st.done += n;
                drop(st);
                self.shared.progress.notify_all();
                Settled::Done
            }
            413 if n > 1 => {
                let (a, b) = batch.split();
                Settled::Split(a, b)
            }
            408 | 429 | 500..=599 => {
                let why = answer_error(status, answer.as_ref());
                Settled::Retry(batch, why)
            }
            _ => {
                // Refused for good (400, 401, 403, 404, 413 alone...).
                let why = answer_error(status, answer.as_ref());
                if self.warn_reject.ready() {
                    tracing::warn!(
                        "agentpulse client: the hub refused {} ({why}); they are not sent again",
                        events(n)
                    );
                }
                let mut st = self.shared.lock();
                st.rejected += n;
                st.done += n;
                st.last_error = Some(why);
                drop(st);
                self.shared.progress.notify_all();
                Settled::Done
            }
        }
    }

    /// A 200/207/422 answer: one id (or null: rejected) per event.
    fn account(&mut self, batch: &Batch, answer: &Value) {
        let n = batch.len();
        let ids = answer["ids"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let rejected = (0..n)
            .filter(|&i| ids.get(i).is_none_or(Value::is_null))
            .count() as u64;
        let duplicates = answer["duplicates"].as_u64().unwrap_or(0);
        let first_error = answer["errors"]
            .as_array()
            .and_then(|e| e.first())
            .map(|e| {
                e["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            });
        if rejected > 0 && self.warn_reject.ready() {
            tracing::warn!(
                "agentpulse client: the hub rejected {}, e.g. {}",
                events(rejected),
                first_error.as_deref().unwrap_or("?")
            );
        }
        let mut st = self.shared.lock();
        st.sent += n as u64 - rejected;
        st.duplicates += duplicates;
        st.rejected += rejected;
        st.done += n as u64;
        if rejected > 0 {
            st.last_error = first_error;
        }
        drop(st);
        self.shared.progress.notify_all();
    }

    /// Drops the connection, puts every unanswered batch up for re-sending
    /// (in order) and backs off.
    async fn fail(&mut self, why: &str) {
        self.disconnect(why);
        self.backoff().await;
    }

    fn disconnect(&mut self, why: &str) {
        self.conn = None;
        let mut again: VecDeque<Batch> = self.inflight.drain(..).collect();
        again.append(&mut self.resend);
        self.resend = again;
        self.shared.lock().transport = None;
        self.problem(why);
    }

    fn problem(&mut self, why: &str) {
        let held = {
            let mut st = self.shared.lock();
            st.last_error = Some(why.to_string());
            st.held()
        };
        if self.warn_retry.ready() {
            tracing::warn!(
                "agentpulse client: cannot deliver to {} ({why}); {} held, retrying",
                self.shared.settings.endpoints.base,
                events(held)
            );
        }
    }

    /// Waits before the next attempt: exponential with jitter, cut short by
    /// a flush or a close, never past the close deadline.
    async fn backoff(&mut self) {
        let s = &self.shared.settings;
        let base = s
            .retry_initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(s.retry_max);
        self.attempt = self.attempt.saturating_add(1);
        let delay = base.mul_f64(0.5 + 0.5 * self.unit());
        let mut until = Instant::now() + delay;
        if let Some(dl) = self.deadline() {
            until = until.min(dl);
        }
        let shared = self.shared.clone();
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {},
            _ = shared.kick.notified() => {},
        }
    }

    /// A number in [0, 1) (xorshift64*, for jitter only).
    fn unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A short description of a refusal.
fn answer_error(status: u16, answer: Option<&Value>) -> String {
    let why = answer.and_then(|a| {
        a["error"].as_str().map(str::to_string).or_else(|| {
            a["errors"]
                .as_array()
                .and_then(|e| e.first())
                .and_then(|e| e["error"].as_str())
                .map(str::to_string)
        })
    });
    match why {
        Some(w) => format!("HTTP {status}: {w}"),
        None => format!("HTTP {status}"),
    }
}

/// `1 event`, `2 events`.
pub(crate) fn events(n: u64) -> String {
    format!("{n} event{}", if n == 1 { "" } else { "s" })
}
