//! Safety at the door: the token, browser origins, the connection limit.
//!
//! - With a token set (`--token`), ingest and the APIs need
//!   `Authorization: Bearer <token>`; WebSockets take it the same way, or as
//!   `?token=<token>`, or as the subprotocol `agentpulse.bearer.<token>`
//!   (browsers cannot set headers on WebSockets). `/health` and the
//!   dashboard page itself need none (they reveal no events).
//! - A WebSocket upgrade that carries an `Origin` header (every browser sends
//!   one) is refused unless the origin is the hub's own, a localhost one, or
//!   listed with `--allow-origin` (`*` allows all): a page the user happens
//!   to visit cannot read the stream.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::{error_response, SharedState};

/// Subprotocol prefix that carries a token.
pub const PROTOCOL_PREFIX: &str = "agentpulse.bearer.";

/// Compares without stopping at the first difference, so response time does
/// not reveal how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn protocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix(PROTOCOL_PREFIX))
}

/// The subprotocol to echo back when the client sent its token in one.
pub fn selected_protocol(headers: &HeaderMap) -> Option<String> {
    protocol_token(headers).map(|t| format!("{PROTOCOL_PREFIX}{t}"))
}

/// Checks the token on an HTTP request.
#[allow(clippy::result_large_err)]
pub fn check_http(state: &SharedState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &state.config.token else {
        return Ok(());
    };
    match bearer(headers) {
        Some(given) if same(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(refuse(state, StatusCode::UNAUTHORIZED, "invalid token")),
        None => Err(refuse(
            state,
            StatusCode::UNAUTHORIZED,
            "this hub requires a token: send Authorization: Bearer <token>",
        )),
    }
}

/// Checks origin and token on a WebSocket upgrade.
#[allow(clippy::result_large_err)]
pub fn check_ws(
    state: &SharedState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), Response> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !origin_allowed(state, headers, origin) {
            return Err(refuse(
                state,
                StatusCode::FORBIDDEN,
                format!(
                    "origin {} is not allowed (use --allow-origin)",
                    origin.to_str().unwrap_or("?")
                ),
            ));
        }
    }
    let Some(token) = &state.config.token else {
        return Ok(());
    };
    let given = bearer(headers)
        .or_else(|| query.get("token").map(String::as_str))
        .or_else(|| protocol_token(headers));
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(refuse(state, StatusCode::UNAUTHORIZED, "invalid token")),
        None => Err(refuse(
            state,
            StatusCode::UNAUTHORIZED,
            "this hub requires a token: ?token=, Authorization: Bearer, or subprotocol agentpulse.bearer.<token>",
        )),
    }
}

fn refuse(state: &SharedState, status: StatusCode, msg: impl Into<String>) -> Response {
    state.counters.refused.fetch_add(1, Ordering::Relaxed);
    error_response(status, msg)
}

/// Whether a browser origin may open a WebSocket.
pub fn origin_allowed(state: &SharedState, headers: &HeaderMap, origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let allowed = &state.config.allowed_origins;
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = host_part(rest);
    if matches!(host, "localhost" | "127.0.0.1" | "::1") {
        return true;
    }
    // The hub's own origin (the page it served), when reached by an IP
    // address. Names are not trusted this way: with DNS rebinding a hostile
    // page's name can point at the hub, making Origin and Host agree.
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| rest.eq_ignore_ascii_case(h) && host.parse::<std::net::IpAddr>().is_ok())
}

fn host_part(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    }
}

/// Holds one slot of the connection limit while a WebSocket is open.
pub struct ConnectionGuard(SharedState);

impl ConnectionGuard {
    /// Takes a slot, or `None` when the limit is reached.
    pub fn acquire(state: &SharedState) -> Option<ConnectionGuard> {
        let c = &state.counters.connections;
        let mut now = c.load(Ordering::Relaxed);
        loop {
            if now >= state.config.max_connections {
                state.counters.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match c.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(ConnectionGuard(state.clone())),
                Err(actual) => now = actual,
            }
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.counters.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
