//! Safety at the door: the `Host`, browser origins, content types, the
//! token, the connection limit.
//!
//! - **Host** (every request, DNS rebinding): a request whose `Host` names
//!   neither a loopback name (`localhost`, `*.localhost`), an IP address, the
//!   machine's own host name, nor a name given with `--allow-host` (`*`
//!   allows all) is refused (403). A page whose name an attacker re-points
//!   at 127.0.0.1 sends its own name as `Host`, so it can neither read nor
//!   write; an IP address cannot be re-pointed, so IP hosts are always fine.
//! - **Origin** (every write, and every WebSocket): a request that carries
//!   an `Origin` header (every browser sends one on a cross-site request) is
//!   refused (403) unless the origin is the hub's own, a localhost one, or
//!   listed with `--allow-origin` (`*` allows all). Requests without
//!   `Origin` (curl, the SDKs, exporters) are unaffected. The write paths
//!   also take only the content types they parse (415 otherwise): the
//!   "simple" types a browser sends cross-site without asking (`text/plain`,
//!   forms) are never parsed.
//! - **Tokens** (roles in [`super::tokens`]): HTTP requests send
//!   `Authorization: Bearer <token>`; WebSockets the same, or
//!   `?token=<token>`, or the subprotocol `agentpulse.bearer.<token>`
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

use super::tokens::{Access, Denied};
use super::{error_response, SharedState};

/// Subprotocol prefix that carries a token.
pub const PROTOCOL_PREFIX: &str = "agentpulse.bearer.";

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

/// Checks the token on an HTTP request that wants `access`.
#[allow(clippy::result_large_err)]
pub fn check_http(
    state: &SharedState,
    headers: &HeaderMap,
    access: Access,
) -> Result<(), Response> {
    let how = "send Authorization: Bearer <token>";
    state
        .config
        .tokens
        .authorize(bearer(headers), access, how)
        .map_err(|d| denied(state, d))
}

fn denied(state: &SharedState, d: Denied) -> Response {
    match d {
        Denied::Unauthenticated(m) => refuse(state, StatusCode::UNAUTHORIZED, m),
        Denied::Forbidden(m) => refuse(state, StatusCode::FORBIDDEN, m),
    }
}

/// Refuses a request whose `Origin` (when it has one) may not write or
/// open a WebSocket.
#[allow(clippy::result_large_err)]
pub fn check_origin(state: &SharedState, headers: &HeaderMap) -> Result<(), Response> {
    match headers.get(header::ORIGIN) {
        Some(origin) if !origin_allowed(state, headers, origin) => Err(refuse(
            state,
            StatusCode::FORBIDDEN,
            format!(
                "origin {} may not use this hub (a page of another site cannot send events or open streams; allow it with --allow-origin)",
                origin.to_str().unwrap_or("?")
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses a request whose `Host` is not one the hub answers to (DNS
/// rebinding; see the module doc).
#[allow(clippy::result_large_err)]
pub fn check_host(
    state: &SharedState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<(), Response> {
    // HTTP/2 carries the host in the URI's authority, HTTP/1.1 in `Host`.
    let host = match uri.authority() {
        Some(a) => Some(a.as_str()),
        None => match headers.get(header::HOST) {
            Some(h) => Some(h.to_str().map_err(|_| {
                refuse(
                    state,
                    StatusCode::FORBIDDEN,
                    "the Host header is not readable",
                )
            })?),
            // HTTP/1.0 without Host: no browser sends that.
            None => None,
        },
    };
    match host {
        Some(h) if !host_allowed(&state.config.allowed_hosts, h) => Err(refuse(
            state,
            StatusCode::FORBIDDEN,
            format!(
                "host {h:?} is not one this hub answers to (a name pointed at the hub by another site is refused; to serve the hub under this name, start it with --allow-host {})",
                host_part(h)
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether a `Host` value (`name[:port]`) may be answered: IP addresses,
/// loopback names, this machine's name and the `allowed` names.
pub fn host_allowed(allowed: &[String], host: &str) -> bool {
    let name = host_part(host).trim_end_matches('.');
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let lower = name.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return true;
    }
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('.').eq_ignore_ascii_case(name))
    {
        return true;
    }
    machine_name().is_some_and(|m| m.eq_ignore_ascii_case(name))
}

/// This machine's host name (a name the user chose, not one a web page
/// controls).
pub fn machine_name() -> Option<&'static str> {
    static NAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// Checks origin and token on a WebSocket upgrade that wants `access`.
#[allow(clippy::result_large_err)]
pub fn check_ws(
    state: &SharedState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    access: Access,
) -> Result<(), Response> {
    check_origin(state, headers)?;
    let given = bearer(headers)
        .or_else(|| query.get("token").map(String::as_str))
        .or_else(|| protocol_token(headers));
    let how = "?token=, Authorization: Bearer, or subprotocol agentpulse.bearer.<token>";
    state
        .config
        .tokens
        .authorize(given, access, how)
        .map_err(|d| denied(state, d))
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
    // The hub's own origin (the page it served). A name counts only when
    // the hub answers to it (`host_allowed`): with DNS rebinding a hostile
    // page's name can point at the hub, making Origin and Host agree.
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            rest.eq_ignore_ascii_case(h) && host_allowed(&state.config.allowed_hosts, h)
        })
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use super::super::test_router::{call, error_of, hub, request};
    use super::super::tokens::{Role, Tokens};
    use super::super::HubConfig;

    fn note() -> String {
        json!({"event_type": "note", "payload": {"n": 1}}).to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_token_decides_who_reads_and_writes() {
        let tokens = Tokens::none()
            .with(Role::Admin, ["admin-t".to_owned()])
            .with(Role::Read, ["read-t".to_owned()])
            .with(Role::Ingest, ["ingest-t".to_owned()]);
        let (running, r) = hub(HubConfig {
            tokens,
            ..HubConfig::default()
        })
        .await;
        let bearer = |t: &str| format!("Bearer {t}");
        let json_type = ("content-type", "application/json");

        // Reads: none or an unknown token is 401, the ingest role 403.
        let (s, b) = call(&r, request("GET", "/api/metrics", &[], "")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        assert!(error_of(&b).contains("Authorization: Bearer"), "{b}");
        let wrong = bearer("nope");
        let (s, _) = call(
            &r,
            request("GET", "/api/metrics", &[("authorization", &wrong)], ""),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let ingest = bearer("ingest-t");
        let (s, _) = call(
            &r,
            request("GET", "/api/metrics", &[("authorization", &ingest)], ""),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        for t in ["read-t", "admin-t"] {
            let t = bearer(t);
            let (s, b) = call(
                &r,
                request("GET", "/api/metrics", &[("authorization", &t)], ""),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{t}: {b}");
        }

        // Writes: the read role may not, ingest and admin may.
        let read = bearer("read-t");
        let (s, _) = call(
            &r,
            request(
                "POST",
                "/events",
                &[("authorization", &read), json_type],
                &note(),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = call(&r, request("POST", "/events", &[json_type], &note())).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        for t in ["ingest-t", "admin-t"] {
            let t = bearer(t);
            let (s, b) = call(
                &r,
                request(
                    "POST",
                    "/events",
                    &[("authorization", &t), json_type],
                    &note(),
                ),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{t}: {b}");
        }

        // Admin calls: the admin role only.
        let (s, _) = call(
            &r,
            request(
                "POST",
                "/api/health/acknowledge",
                &[("authorization", &read)],
                "",
            ),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let admin = bearer("admin-t");
        let (s, b) = call(
            &r,
            request(
                "POST",
                "/api/health/acknowledge",
                &[("authorization", &admin)],
                "",
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");

        // `/health` reveals no events: no token needed.
        let (s, _) = call(&r, request("GET", "/health", &[], "")).await;
        assert_eq!(s, StatusCode::OK);
        running.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_foreign_origin_may_read_but_not_write() {
        let (running, r) = hub(HubConfig {
            allowed_origins: vec!["https://dash.example".into()],
            ..HubConfig::default()
        })
        .await;
        let json_type = ("content-type", "application/json");
        let post = |origin: &'static str| {
            request("POST", "/events", &[("origin", origin), json_type], &note())
        };
        let (s, b) = call(&r, post("https://evil.example")).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        assert!(
            error_of(&b).contains("origin https://evil.example may not use this hub"),
            "{b}"
        );
        // The admin call is guarded the same way.
        let (s, _) = call(
            &r,
            request(
                "POST",
                "/api/health/acknowledge",
                &[("origin", "https://evil.example")],
                "",
            ),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // Localhost pages, the hub's own origin and the listed one may.
        for origin in [
            "http://localhost:5173",
            "http://127.0.0.1:3010",
            "https://dash.example",
        ] {
            let (s, b) = call(&r, post(origin)).await;
            assert_eq!(s, StatusCode::OK, "{origin}: {b}");
        }
        // Without Origin (curl, the SDKs): as before.
        let (s, _) = call(&r, request("POST", "/events", &[json_type], &note())).await;
        assert_eq!(s, StatusCode::OK);
        // Reads are not origin-checked (the token guards them).
        let (s, _) = call(
            &r,
            request(
                "GET",
                "/api/metrics",
                &[("origin", "https://evil.example")],
                "",
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        // A "simple" content type a browser sends cross-site unasked is
        // never parsed.
        let (s, _) = call(
            &r,
            request(
                "POST",
                "/events",
                &[("content-type", "text/plain")],
                &note(),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        running.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_known_hosts_are_answered() {
        let (running, r) = hub(HubConfig {
            allowed_hosts: vec!["hub.internal".into()],
            ..HubConfig::default()
        })
        .await;
        let with_host = |path: &str, host: &str| {
            let mut req = request("GET", path, &[], "");
            req.headers_mut()
                .insert("host", host.parse().expect("a header value"));
            req
        };
        for host in [
            "127.0.0.1:3010",
            "10.1.2.3",
            "[::1]:3010",
            "localhost:3010",
            "app.localhost",
            "hub.internal:3010",
            "HUB.internal.",
        ] {
            let (s, b) = call(&r, with_host("/health", host)).await;
            assert_eq!(s, StatusCode::OK, "{host}: {b}");
        }
        // A name another site pointed at the hub: refused on every path,
        // even one that does not exist.
        for path in ["/health", "/api/metrics", "/no/such/path"] {
            let (s, b) = call(&r, with_host(path, "evil.example:3010")).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {b}");
            assert!(error_of(&b).contains("--allow-host evil.example"), "{b}");
        }
        running.shutdown().await.unwrap();
    }
}
