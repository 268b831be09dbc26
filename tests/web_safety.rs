//! A web page the user visits must not be able to write to the hub (cross-
//! site requests) or read it (DNS rebinding). Each request here is written
//! byte for byte on a raw socket, with the `Host`, `Origin` and
//! `Content-Type` a browser (or an attacker's page) would send.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Hub;
use serde_json::Value;

/// One HTTP/1.1 request on a fresh connection; the status and the body.
fn raw(
    hub: &Hub,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(hub.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {}\r\n", hub.addr));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Until the server closes (`Connection: close`), the body is complete
    // (`Content-Length`), or, for a switch to WebSocket, the headers end.
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
        if n == 0 || response_complete(&out) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn response_complete(out: &[u8]) -> bool {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    if head.starts_with("http/1.1 101") {
        return true;
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| out.len() >= end + 4 + len)
}

/// The error message of a JSON error body (chunked bodies included).
fn error_of(body: &str) -> String {
    let start = body
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {body:?}"));
    let end = body.rfind('}').unwrap() + 1;
    let v: Value = serde_json::from_str(&body[start..end]).unwrap();
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
        .to_owned()
}

fn stored(hub: &Hub) -> u64 {
    hub.get_json("/api/events?since=0").1["events"]
        .as_array()
        .unwrap()
        .len() as u64
}

const EVENT: &str = r#"{"event_type":"budget_exceeded","payload":{"current_spend":99,"limit":1,"tasks_blocked":3}}"#;

#[test]
fn a_foreign_page_cannot_post_events_whatever_the_body_type() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    for ct in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json",
        "application/x-ndjson",
    ] {
        let (status, body) = raw(
            &hub,
            "POST",
            "/events",
            &[("Origin", "https://evil.example"), ("Content-Type", ct)],
            EVENT.as_bytes(),
        );
        assert_eq!(status, 403, "{ct}: {body}");
        assert!(error_of(&body).contains("https://evil.example"), "{body}");
    }
    // The null origin (sandboxed frames, data: URLs) is foreign too.
    let (status, _) = raw(
        &hub,
        "POST",
        "/events",
        &[("Origin", "null"), ("Content-Type", "application/json")],
        EVENT.as_bytes(),
    );
    assert_eq!(status, 403);
    assert_eq!(stored(&hub), 0, "nothing refused was stored");

    // The hub's own page and localhost pages may write.
    for origin in [
        format!("http://{}", hub.addr),
        "http://localhost:5173".into(),
    ] {
        let (status, body) = raw(
            &hub,
            "POST",
            "/events",
            &[("Origin", &origin), ("Content-Type", "application/json")],
            EVENT.as_bytes(),
        );
        assert_eq!(status, 200, "{origin}: {body}");
    }
    assert_eq!(stored(&hub), 2);
}

#[test]
fn only_json_bodies_are_parsed_and_the_refusal_says_how_to_send() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    // What `curl -d` sends without -H, and no type at all.
    for headers in [
        vec![("Content-Type", "text/plain")],
        vec![("Content-Type", "application/x-www-form-urlencoded")],
        vec![],
    ] {
        let (status, body) = raw(&hub, "POST", "/events", &headers, EVENT.as_bytes());
        assert_eq!(status, 415, "{headers:?}: {body}");
        let e = error_of(&body);
        assert!(
            e.contains("application/json") && e.contains("application/x-ndjson"),
            "the message names the accepted types: {e}"
        );
        assert!(e.contains("-H 'Content-Type: application/json'"), "{e}");
    }
    assert_eq!(stored(&hub), 0);
    let (status, _) = raw(
        &hub,
        "POST",
        "/events",
        &[("Content-Type", "application/json; charset=utf-8")],
        EVENT.as_bytes(),
    );
    assert_eq!(status, 200);
}

#[test]
fn allowed_origins_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--allow-origin", "https://ok.example"]);
    let post = |origin: &str| {
        raw(
            &hub,
            "POST",
            "/events",
            &[("Origin", origin), ("Content-Type", "application/json")],
            EVENT.as_bytes(),
        )
        .0
    };
    assert_eq!(post("https://ok.example"), 200);
    assert_eq!(post("https://other.example"), 403);
}

/// A request: method, path and extra headers.
type Request = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// Every kind of request the hub answers.
fn every_path() -> Vec<Request> {
    let ws = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let json = vec![("Content-Type", "application/json")];
    vec![
        ("GET", "/", vec![]),
        ("GET", "/", ws.clone()),
        ("GET", "/agent-events", ws.clone()),
        ("GET", "/stream", ws.clone()),
        ("GET", "/ingest", ws),
        ("POST", "/events", json),
        ("GET", "/api/events?since=0", vec![]),
        ("GET", "/api/metrics", vec![]),
        ("GET", "/api/metrics?bucket=hourly", vec![]),
        ("GET", "/api/config", vec![]),
        ("GET", "/api/alerts", vec![]),
        ("GET", "/api/budgets", vec![]),
        ("GET", "/api/budgets/check?cost=1", vec![]),
        ("GET", "/health", vec![]),
        ("GET", "/metrics", vec![]),
        ("GET", "/no/such/path", vec![]),
        ("DELETE", "/events", vec![]),
    ]
}

/// Sends every request of [`every_path`] with `Host: host`: method, path,
/// whether it asked for a WebSocket, status, body.
fn every_answer(hub: &Hub, host: &str) -> Vec<(&'static str, &'static str, bool, u16, String)> {
    every_path()
        .into_iter()
        .map(|(method, path, mut headers)| {
            let body: &[u8] = if method == "POST" {
                EVENT.as_bytes()
            } else {
                b""
            };
            let upgrade = headers.iter().any(|(k, _)| *k == "Upgrade");
            headers.push(("Host", host));
            let (status, text) = raw(hub, method, path, &headers, body);
            (method, path, upgrade, status, text)
        })
        .collect()
}

#[test]
fn a_rebound_name_is_refused_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &["--allow-host", "hub.example"]);
    let port = hub.addr.port();
    let evil = format!("attacker.example:{port}");
    for (method, path, upgrade, status, text) in every_answer(&hub, &evil) {
        assert!(!upgrade || status != 101);
        assert_eq!(status, 403, "{method} {path} with Host {evil}: {text}");
        let e = error_of(&text);
        assert!(
            e.contains("attacker.example") && e.contains("--allow-host"),
            "{method} {path}: {e}"
        );
    }
    assert_eq!(stored(&hub), 0);

    // The names and addresses the hub answers to.
    let allowed = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("app.localhost:{port}"),
        format!("[::1]:{port}"),
        format!("192.0.2.7:{port}"),
        format!("hub.example:{port}"),
        "hub.example".to_string(),
    ];
    for host in &allowed {
        for (method, path, upgrade, status, text) in every_answer(&hub, host) {
            assert_ne!(status, 403, "{method} {path} with Host {host}: {text}");
            if upgrade {
                assert_eq!(status, 101, "{method} {path} with Host {host}: {text}");
            }
        }
    }
    // A page served under an allowed name is the hub's own origin.
    let origin = format!("http://hub.example:{port}");
    let host = format!("hub.example:{port}");
    let (status, text) = raw(
        &hub,
        "POST",
        "/events",
        &[
            ("Host", &host),
            ("Origin", &origin),
            ("Content-Type", "application/json"),
        ],
        EVENT.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn the_ingest_websocket_refuses_foreign_pages() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    let (status, text) = raw(
        &hub,
        "GET",
        "/ingest",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Origin", "https://evil.example"),
        ],
        b"",
    );
    assert_eq!(status, 403, "{text}");
    assert!(error_of(&text).contains("evil.example"));
}
