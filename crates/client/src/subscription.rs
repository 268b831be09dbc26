//! Reading a hub's stream: [`Subscription`], the reader `agentpulse tail`
//! is built on.
//!
//! ```no_run
//! # async fn run() -> Result<(), agentpulse_client::ClientError> {
//! use agentpulse_client::{Delivery, Subscription};
//!
//! let mut sub = Subscription::builder("http://127.0.0.1:3010").since(0).build()?;
//! loop {
//!     match sub.next().await {
//!         Delivery::Event(e) => println!("{}", e.text),
//!         Delivery::Gap { from, to, reason } => eprintln!("ids {from}..={to} lost: {reason}"),
//!         Delivery::Reset { .. } => eprintln!("the hub serves another history; starting over"),
//!         _ => {}
//!     }
//! }
//! # }
//! ```
//!
//! - **Resumes by itself.** When the connection ends (the hub restarts, a
//!   stuck socket is closed, the network drops) it reconnects with
//!   exponential backoff (200 ms doubling up to 5 s) and resumes with
//!   `?since=<last id>&epoch=<epoch>`, so every retained event comes
//!   exactly once, in id order; repeats are dropped.
//! - **Knows the history it reads.** It keeps the hub's epoch; a hub that
//!   serves another history (restarted without a log, log deleted) answers
//!   with a reset, given as [`Delivery::Reset`], after which ids start
//!   over from that history's oldest retained event.
//! - **Lossless** by default (the hub serves a slow reader from its log);
//!   [`SubscriptionBuilder::live`] asks for the live-edge mode instead.
//!
//! Async: call [`Subscription::next`] from a tokio runtime.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{ClientError, Endpoints};
use agentpulse_core::event::{Event, WireError};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An event from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Its id.
    pub id: u64,
    /// Its wire form (one JSON object, as in the log).
    pub text: String,
}

impl StreamEvent {
    /// The event, parsed.
    pub fn event(&self) -> Result<Event, WireError> {
        Event::from_wire(self.text.as_bytes())
    }
}

/// What [`Subscription::next`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The next event (ids increase; each comes once).
    Event(StreamEvent),
    /// Ids `from..=to` will not come: `not_retained`, `log_unreadable`, or
    /// in live mode `slow_consumer`.
    Gap {
        /// First id not delivered.
        from: u64,
        /// Last id not delivered.
        to: u64,
        /// Why, as the hub said.
        reason: String,
    },
    /// The hub serves another history than the one read so far; the
    /// events that follow are those of `epoch` after `resume_from`.
    Reset {
        /// The hub's epoch.
        epoch: String,
        /// The epoch read before, if one was known.
        previous_epoch: Option<String>,
        /// Events after this id follow.
        resume_from: u64,
    },
    /// Connected (again): the hub's last id then.
    Connected {
        /// The hub's last id.
        last_id: u64,
        /// Whether this is a reconnection.
        again: bool,
    },
    /// The connection ended or could not be made; the next call waits
    /// `retry_in`, then reconnects.
    Disconnected {
        /// What happened.
        reason: String,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// The hub said it is shutting down (a disconnection follows).
    Shutdown,
    /// The hub refused the token (401: none or unknown; 403: a token that
    /// may not read). Retrying cannot help: every later `next` answers the
    /// same.
    Refused {
        /// The HTTP status of the refused handshake.
        status: u16,
        /// The hub's reason, when it gave one.
        message: String,
    },
}

/// Settings of a [`Subscription`].
#[derive(Debug, Clone)]
pub struct SubscriptionBuilder {
    url: String,
    token: Option<String>,
    types: Option<String>,
    agent: Option<String>,
    task_id: Option<String>,
    since: Option<u64>,
    epoch: Option<String>,
    live: bool,
    ca_cert: Option<std::path::PathBuf>,
}

impl SubscriptionBuilder {
    /// For an `https://` hub: trust the PEM certificates of this file too
    /// (besides the system's authorities, and `SSL_CERT_FILE`).
    pub fn ca_cert(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.ca_cert = path;
        self
    }
    /// The hub's bearer token.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }
    /// Only these event types (comma-separated).
    pub fn types(mut self, types: Option<String>) -> Self {
        self.types = types;
        self
    }
    /// Only events of this agent.
    pub fn agent(mut self, agent: Option<String>) -> Self {
        self.agent = agent;
        self
    }
    /// Only events of this task.
    pub fn task_id(mut self, task_id: Option<String>) -> Self {
        self.task_id = task_id;
        self
    }
    /// Start after this id (default: live events from connecting on).
    pub fn since(mut self, since: impl Into<Option<u64>>) -> Self {
        self.since = since.into();
        self
    }
    /// The epoch `since` belongs to, when resuming a reading of an earlier
    /// run.
    pub fn epoch(mut self, epoch: Option<String>) -> Self {
        self.epoch = epoch;
        self
    }
    /// Live-edge mode: skip ahead (a `slow_consumer` gap) rather than fall
    /// behind.
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }
    /// Checks the URL; connects on the first [`Subscription::next`].
    pub fn build(self) -> Result<Subscription, ClientError> {
        let url = self.url.trim();
        // The URL is checked as http; https and wss make the stream wss.
        let (tls, http) = match ["wss://", "https://", "ws://"]
            .iter()
            .find_map(|p| url.strip_prefix(p).map(|rest| (*p, rest)))
        {
            Some(("ws://", rest)) => (false, format!("http://{rest}")),
            Some((_, rest)) => (true, format!("http://{rest}")),
            None => (false, url.to_owned()),
        };
        let endpoints = Endpoints::parse(&http)?;
        let host = endpoints.base.trim_start_matches("http://");
        let (stream, connector) = if tls {
            let config = super::tls::client_config(self.ca_cert.as_deref())?;
            (format!("wss://{host}/agent-events"), Some(config))
        } else {
            (format!("ws://{host}/agent-events"), None)
        };
        Ok(Subscription {
            tls: connector,
            after: self.since,
            epoch: self.epoch.clone(),
            opts: self,
            stream,
            ws: None,
            backoff: INITIAL_BACKOFF,
            wait: None,
            refused: None,
            connections: 0,
        })
    }
}

const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A hub's stream, read with resume, epochs and reconnects (see the module
/// docs).
pub struct Subscription {
    opts: SubscriptionBuilder,
    stream: String,
    /// For a `wss://` stream: whom to trust.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ws: Option<Ws>,
    /// The last id delivered or skipped (`None`: live from connecting).
    after: Option<u64>,
    epoch: Option<String>,
    backoff: Duration,
    /// Set after a disconnection: wait this long before reconnecting.
    wait: Option<Duration>,
    /// Set once the hub refused the token: status and reason.
    refused: Option<(u16, String)>,
    connections: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("stream", &self.stream)
            .field("after", &self.after)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription to the hub at `url` (`http://HOST:PORT`).
    pub fn builder(url: &str) -> SubscriptionBuilder {
        SubscriptionBuilder {
            url: url.to_owned(),
            token: None,
            types: None,
            agent: None,
            task_id: None,
            since: None,
            epoch: None,
            live: false,
            ca_cert: None,
        }
    }

    /// The last id delivered (or skipped past).
    pub fn last_id(&self) -> Option<u64> {
        self.after
    }

    /// The epoch of the history being read, once known.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The stream URL for the next connection.
    pub fn url(&self) -> String {
        let mut q = Vec::new();
        if let Some(s) = self.after {
            q.push(format!("since={s}"));
            if let Some(e) = &self.epoch {
                q.push(format!("epoch={}", encode(e)));
            }
        }
        for (k, v) in [
            ("types", &self.opts.types),
            ("agent", &self.opts.agent),
            ("task_id", &self.opts.task_id),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        if self.opts.live {
            q.push("mode=live".into());
        }
        if q.is_empty() {
            self.stream.clone()
        } else {
            format!("{}?{}", self.stream, q.join("&"))
        }
    }

    /// Closes the connection (politely); a later `next` reconnects.
    pub async fn close(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }

    /// The next delivery. Never ends: disconnections are reported and
    /// followed by a reconnection. Cancel-safe: dropping the future loses
    /// nothing.
    pub async fn next(&mut self) -> Delivery {
        if let Some((status, message)) = &self.refused {
            return Delivery::Refused {
                status: *status,
                message: message.clone(),
            };
        }
        loop {
            if self.ws.is_none() {
                if let Some(wait) = self.wait.take() {
                    tokio::time::sleep(wait).await;
                }
                match self.connect().await {
                    Ok(()) => {}
                    Err(Failure::Refused { status, message }) => {
                        // Remembered: the next call answers the same at once.
                        self.refused = Some((status, message.clone()));
                        return Delivery::Refused { status, message };
                    }
                    Err(Failure::Other(reason)) => return self.disconnected(reason),
                }
            }
            let ws = self.ws.as_mut().expect("connected above");
            let msg = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(frame))) => {
                    let why = match frame {
                        Some(f) if f.code != CloseCode::Normal => {
                            format!("closed by the hub ({}: {})", u16::from(f.code), f.reason)
                        }
                        _ => "closed by the hub".to_owned(),
                    };
                    return self.disconnected(why);
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return self.disconnected(e.to_string()),
                None => return self.disconnected("connection ended".into()),
            };
            if let Some(d) = self.take(msg.as_str()) {
                return d;
            }
        }
    }

    async fn connect(&mut self) -> Result<(), Failure> {
        let url = self.url();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Failure::Other(e.to_string()))?;
        if let Some(t) = &self.opts.token {
            let value = format!("Bearer {t}")
                .parse()
                .map_err(|_| Failure::Other("bad token".to_string()))?;
            request.headers_mut().insert("Authorization", value);
        }
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
        match tokio::time::timeout(Duration::from_secs(10), connecting).await {
            Ok(Ok((ws, _))) => {
                self.ws = Some(ws);
                Ok(())
            }
            Ok(Err(tungstenite::Error::Http(resp)))
                if matches!(resp.status().as_u16(), 401 | 403) =>
            {
                let message = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Err(Failure::Refused {
                    status: resp.status().as_u16(),
                    message,
                })
            }
            Ok(Err(e)) => Err(Failure::Other(format!("cannot connect to {url}: {e}"))),
            Err(_) => Err(Failure::Other(format!(
                "cannot connect to {url}: timed out"
            ))),
        }
    }

    fn disconnected(&mut self, reason: String) -> Delivery {
        self.ws = None;
        let retry_in = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.wait = Some(retry_in);
        Delivery::Disconnected { reason, retry_in }
    }

    /// What a message means for the reader, if anything.
    fn take(&mut self, text: &str) -> Option<Delivery> {
        if let Some(id) = message_id(text) {
            if self.after.is_some_and(|a| id <= a) {
                return None; // a repeat
            }
            self.after = Some(id);
            return Some(Delivery::Event(StreamEvent {
                id,
                text: text.to_owned(),
            }));
        }
        let v: Value = serde_json::from_str(text).ok()?;
        let p = &v["payload"];
        match v["event_type"].as_str()? {
            "connection_established" => {
                let last_id = v["last_id"].as_u64().unwrap_or(0);
                if let Some(e) = v["epoch"].as_str() {
                    self.epoch.get_or_insert_with(|| e.to_owned());
                }
                self.after.get_or_insert(last_id);
                self.backoff = INITIAL_BACKOFF;
                self.connections += 1;
                Some(Delivery::Connected {
                    last_id,
                    again: self.connections > 1,
                })
            }
            "stream_gap" if p["reason"] == "reset" => {
                let epoch = p["epoch"].as_str().unwrap_or_default().to_owned();
                let resume_from = p["resume_from"].as_u64().unwrap_or(0);
                let previous_epoch = self.epoch.replace(epoch.clone());
                self.after = Some(resume_from);
                Some(Delivery::Reset {
                    epoch,
                    previous_epoch,
                    resume_from,
                })
            }
            "stream_gap" => {
                let (from, to) = (p["from_id"].as_u64()?, p["to_id"].as_u64()?);
                self.after = Some(self.after.unwrap_or(0).max(to));
                Some(Delivery::Gap {
                    from,
                    to,
                    reason: p["reason"].as_str().unwrap_or("unknown").to_owned(),
                })
            }
            "service_shutdown" => Some(Delivery::Shutdown),
            _ => None,
        }
    }
}

/// The id of a message in the wire format (`{"id":N,...`).
fn message_id(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("{\"id\":")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why a connection attempt failed.
enum Failure {
    /// The hub refused the token: final.
    Refused { status: u16, message: String },
    /// Anything else: retried.
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> Subscription {
        Subscription::builder("http://127.0.0.1:1")
            .types(Some("a b".into()))
            .build()
            .unwrap()
    }

    #[test]
    fn urls_carry_the_position_epoch_filters_and_mode() {
        let mut s = sub();
        assert_eq!(s.url(), "ws://127.0.0.1:1/agent-events?types=a%20b");
        s.take(r#"{"event_type":"connection_established","last_id":7,"epoch":"e1"}"#);
        assert_eq!(
            s.url(),
            "ws://127.0.0.1:1/agent-events?since=7&epoch=e1&types=a%20b"
        );
        let live = Subscription::builder("ws://h:2/")
            .live(true)
            .since(3)
            .build()
            .unwrap();
        assert_eq!(live.url(), "ws://h:2/agent-events?since=3&mode=live");
        assert!(Subscription::builder("ftp://x").build().is_err());
    }

    #[test]
    fn repeats_are_dropped_and_a_reset_starts_over() {
        let mut s = sub();
        s.take(r#"{"event_type":"connection_established","last_id":0,"epoch":"e1"}"#);
        let ev =
            |id: u64| format!(r#"{{"id":{id},"event_type":"n","timestamp":1.0,"payload":{{}}}}"#);
        assert!(matches!(s.take(&ev(1)), Some(Delivery::Event(e)) if e.id == 1));
        assert_eq!(s.take(&ev(1)), None);
        assert!(matches!(s.take(&ev(2)), Some(Delivery::Event(_))));
        let reset = s.take(
            r#"{"event_type":"stream_gap","payload":{"reason":"reset","epoch":"e2","resume_from":0}}"#,
        );
        assert_eq!(
            reset,
            Some(Delivery::Reset {
                epoch: "e2".into(),
                previous_epoch: Some("e1".into()),
                resume_from: 0
            })
        );
        assert!(matches!(s.take(&ev(1)), Some(Delivery::Event(e)) if e.id == 1));
        assert_eq!(s.epoch(), Some("e2"));
        let gap = s.take(
            r#"{"event_type":"stream_gap","payload":{"from_id":2,"to_id":9,"reason":"not_retained"}}"#,
        );
        assert!(matches!(gap, Some(Delivery::Gap { from: 2, to: 9, .. })));
        assert_eq!(s.last_id(), Some(9));
    }
}
