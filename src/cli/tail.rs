//! `agentpulse tail`: print a hub's stream in the console format (or as
//! JSON lines), reconnecting and resuming on its own. The reading is
//! [`agentpulse::client::Subscription`]'s: every retained event exactly
//! once, in id order, across reconnects and hub restarts; what cannot be
//! delivered (a gap, a reset) is one line on stderr.

use std::io::Write;
use std::process::ExitCode;

use agentpulse::client::{Delivery, Subscription};
use agentpulse::sinks::console::format_event;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The hub, e.g. http://127.0.0.1:3010, ws://127.0.0.1:3010 or
    /// https://hub.example:3010.
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
    /// The epoch `--since` belongs to (printed by an earlier tail): a hub
    /// serving another history then says so instead of skipping ids.
    #[arg(long)]
    epoch: Option<String>,
    /// Live-edge mode: skip ahead (reported as a gap) rather than fall behind.
    #[arg(long)]
    live: bool,
    /// Print the raw wire JSON, one event per line.
    #[arg(long)]
    json: bool,
    /// The hub's token.
    #[arg(long, env = "AGENTPULSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: super::TlsArgs,
    /// Exit after this many events (0: never).
    #[arg(long, default_value_t = 0)]
    count: u64,
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
    let mut sub = Subscription::builder(&args.hub)
        .token(args.token.clone())
        .types(args.types.clone())
        .agent(args.agent.clone())
        .task_id(args.task_id.clone())
        .since(args.since)
        .epoch(args.epoch.clone())
        .live(args.live)
        .ca_cert(args.tls.ca_cert.clone())
        .build()?;
    let mut printed = 0u64;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut line = Vec::new();
    loop {
        let delivery = tokio::select! {
            d = sub.next() => d,
            _ = tokio::signal::ctrl_c() => {
                out.flush()?;
                sub.close().await;
                return Ok(ExitCode::SUCCESS);
            }
        };
        match delivery {
            Delivery::Event(e) => {
                if args.json {
                    out.write_all(e.text.as_bytes())?;
                    out.write_all(b"\n")?;
                } else if let Ok(event) = e.event() {
                    line.clear();
                    format_event(&event, color, &mut line);
                    out.write_all(&line)?;
                }
                printed += 1;
                if args.count > 0 && printed >= args.count {
                    out.flush()?;
                    sub.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Delivery::Gap { from, to, reason } => eprintln!(
                "tail: gap: ids {from}..={to} ({} events) will not come ({reason})",
                to + 1 - from
            ),
            Delivery::Reset {
                epoch,
                previous_epoch,
                resume_from,
            } => eprintln!(
                "tail: reset: the hub serves another history (epoch {epoch}, was {}); continuing after its id {resume_from}",
                previous_epoch.as_deref().unwrap_or("unknown")
            ),
            Delivery::Connected { last_id, again } => {
                if again {
                    eprintln!(
                        "tail: connected again (hub's last id {last_id}, epoch {})",
                        sub.epoch().unwrap_or("unknown")
                    );
                }
            }
            Delivery::Disconnected { reason, retry_in } => {
                let hint = if reason.contains("Connection refused") {
                    format!(" ({})", super::serve_hint(&args.hub))
                } else {
                    String::new()
                };
                eprintln!(
                    "tail: {reason}{hint}; retrying in {retry_in:?}, resuming after event {}",
                    sub.last_id().unwrap_or(0)
                )
            }
            Delivery::Shutdown => eprintln!("tail: the hub is shutting down"),
            Delivery::Refused { status, message } => {
                // A refused token does not get better by retrying.
                out.flush()?;
                let why = super::token_refused(&args.hub, status, args.token.as_deref());
                if message.is_empty() {
                    eprintln!("tail: {why}");
                } else {
                    eprintln!("tail: {why} ({message})");
                }
                return Ok(ExitCode::from(2));
            }
        }
        out.flush()?;
    }
}
