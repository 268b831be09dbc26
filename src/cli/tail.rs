//! `agentpulse tail`: print a hub's live stream in the console format,
//! reconnecting and resuming (`?since=`) on its own.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use agentpulse::event::Event;
use agentpulse::sinks::console::format_event;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The hub, e.g. http://127.0.0.1:3010 or ws://127.0.0.1:3010.
    #[arg(
        long,
        env = "AGENTPULSE_HUB_URL",
        default_value = "http://127.0.0.1:3010",
        value_parser = super::hub_url
    )]
    hub: String,
    /// Only these event types (comma-separated).
    #[arg(long)]
    types: Option<String>,
    /// Only events of this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only events of this task.
    #[arg(long)]
    task_id: Option<String>,
    /// Start after this event id (default: live events only).
    #[arg(long)]
    since: Option<u64>,
    /// Print the raw wire JSON, one event per line.
    #[arg(long)]
    json: bool,
    /// The hub's token.
    #[arg(long, env = "AGENTPULSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Exit after this many events (0: never).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

/// The WebSocket URL of a hub's stream.
pub fn stream_url(hub: &str, args: &Args, since: Option<u64>) -> String {
    let base = hub.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        base.to_string()
    };
    let mut q = Vec::new();
    if let Some(s) = since {
        q.push(format!("since={s}"));
    }
    for (k, v) in [
        ("types", &args.types),
        ("agent", &args.agent),
        ("task_id", &args.task_id),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", encode(v)));
        }
    }
    let mut url = format!("{base}/agent-events");
    if !q.is_empty() {
        url.push('?');
        url.push_str(&q.join("&"));
    }
    url
}

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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(tail(args))
}

async fn tail(args: Args) -> anyhow::Result<ExitCode> {
    let color = {
        let s = anstream::stdout();
        !matches!(s.current_choice(), anstream::ColorChoice::Never)
    };
    let mut since = args.since;
    let mut printed = 0u64;
    let mut backoff = Duration::from_millis(200);
    let mut out = std::io::stdout().lock();
    loop {
        let url = stream_url(&args.hub, &args, since);
        let mut request = url.as_str().into_client_request()?;
        if let Some(t) = &args.token {
            request
                .headers_mut()
                .insert("Authorization", format!("Bearer {t}").parse()?);
        }
        let conn = tokio::select! {
            c = tokio_tungstenite::connect_async(request) => c,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let (mut ws, _) = match conn {
            Ok(c) => c,
            Err(e) => {
                // A refused token does not get better by retrying.
                if let Some(status) = auth_refusal(&e) {
                    let hub = args.hub.as_str();
                    eprintln!(
                        "tail: {}",
                        super::token_refused(hub, status, args.token.as_deref())
                    );
                    return Ok(ExitCode::from(2));
                }
                let hint = match &e {
                    tokio_tungstenite::tungstenite::Error::Io(io)
                        if io.kind() == std::io::ErrorKind::ConnectionRefused =>
                    {
                        format!(" ({})", super::serve_hint(&args.hub))
                    }
                    _ => String::new(),
                };
                eprintln!("tail: cannot connect to {url}: {e}{hint}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = tokio::signal::ctrl_c() => {
                    let _ = ws.close(None).await;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            let value: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(_) => continue,
            };
            match value["event_type"].as_str() {
                Some("connection_established") => {
                    if since.is_none() {
                        since = value["last_id"].as_u64();
                    }
                    continue;
                }
                Some("stream_gap") | Some("service_shutdown") => {
                    eprintln!("tail: {}", value);
                    continue;
                }
                _ => {}
            }
            let Ok(event) = Event::from_wire(text.as_bytes()) else {
                continue;
            };
            since = Some(event.id);
            if args.json {
                writeln!(out, "{text}")?;
            } else {
                let mut buf = Vec::new();
                format_event(&event, color, &mut buf);
                out.write_all(&buf)?;
            }
            out.flush()?;
            printed += 1;
            if args.count > 0 && printed >= args.count {
                let _ = ws.close(None).await;
                return Ok(ExitCode::SUCCESS);
            }
        }
        eprintln!(
            "tail: disconnected; resuming after event {}",
            since.unwrap_or(0)
        );
    }
}

/// The status of a handshake the hub refused for its token (401, 403).
fn auth_refusal(e: &tokio_tungstenite::tungstenite::Error) -> Option<u16> {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp)
            if matches!(resp.status().as_u16(), 401 | 403) =>
        {
            Some(resp.status().as_u16())
        }
        _ => None,
    }
}
