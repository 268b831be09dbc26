//! Command-line interface: one file per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `print!` that hands a write error back (`?`) instead of panicking: a
/// closed stdout (`agentpulse report x | head -1`) ends the command
/// quietly, as `cat` does ([`main`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)?
    }};
}

/// `println!` that hands a write error back (`?`); see [`out!`].
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        writeln!(std::io::stdout())?
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

mod bench;
mod claude_hook;
mod demo;
mod emit;
mod logs;
mod redis_cmds;
mod replay;
mod report;
mod serve;
mod tail;
mod validate;
mod validate_config;

/// agentpulse: real-time observability for multi-agent LLM systems.
#[derive(Debug, Parser)]
#[command(name = "agentpulse", version, about, propagate_version = true)]
pub struct Cli {
    /// Schema and configuration file (default: the built-in observability.yaml).
    #[arg(long, global = true, env = "AGENTPULSE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: ingest, live stream, log, metrics.
    // Boxed: its options outweigh every other command's.
    Serve(Box<serve::Args>),
    /// Validate and record one event.
    Emit(emit::Args),
    /// Check JSONL logs against the schema; reports every bad line.
    Validate(validate::Args),
    /// Check a configuration file (schema, alerts, notifiers, budgets).
    ValidateConfig(validate_config::Args),
    /// Compute the six KPIs from JSONL logs, offline.
    Report(report::Args),
    /// Read, filter, search and follow the JSONL logs, or count them
    /// (--stats), offline.
    Logs(logs::Args),
    /// Print a hub's live stream, resuming after disconnects.
    Tail(tail::Args),
    /// Print bucket metrics stored in Redis.
    Metrics(redis_cmds::MetricsArgs),
    /// Recompute the Redis bucket metrics from JSONL logs (idempotent).
    RebuildMetrics(redis_cmds::RebuildArgs),
    /// Load generator against a running hub.
    Bench(bench::Args),
    /// Play the original example's workflows (or a seeded fleet) and print
    /// the resulting KPIs.
    Demo(demo::Args),
    /// Send the events of JSONL logs to a running hub, in order, with their
    /// timestamps (replaying twice counts nothing twice).
    Replay(replay::Args),
    /// Claude Code hook command: turn the hook JSON on stdin into events
    /// and send them to a hub.
    ClaudeHook(claude_hook::Args),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve::run(cli.config.as_deref(), *args),
        Command::Emit(args) => emit::run(cli.config.as_deref(), args),
        Command::Validate(args) => validate::run(cli.config.as_deref(), args),
        Command::Report(args) => report::run(args),
        Command::Logs(args) => logs::run(cli.config.as_deref(), args),
        Command::ValidateConfig(args) => validate_config::run(cli.config.as_deref(), args),
        Command::Tail(args) => tail::run(args),
        Command::Metrics(args) => redis_cmds::metrics(args),
        Command::RebuildMetrics(args) => redis_cmds::rebuild(args),
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(cli.config.as_deref(), args),
        Command::Replay(args) => replay::run(args),
        Command::ClaudeHook(args) => claude_hook::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}{}", message(&e), hint(&e));
            ExitCode::FAILURE
        }
    }
}

/// A hint for causes whose remedy is obvious.
fn hint(e: &anyhow::Error) -> &'static str {
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    match kind {
        Some(std::io::ErrorKind::AddrInUse) => {
            " (another program, perhaps another `agentpulse serve`, listens there: pick another --port, or --port 0 for any free one)"
        }
        _ => "",
    }
}

/// Whether `e` is a write to a pipe whose reader has gone (`| head -1`).
fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes, each said once: a cause whose text the
/// message already holds (many errors quote their source) is left out.
pub(crate) fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A `println!` somewhere on a closed stdout panics with "failed printing
/// to stdout: Broken pipe"; what the commands print goes through [`out!`],
/// and this catches the rest (clap, the load generators): a quiet exit 0.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// `1 event`, `2 events`.
pub(crate) fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Whether stderr may carry colour: a terminal, and `NO_COLOR` unset or empty.
pub(crate) fn stderr_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTPULSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal, never with NO_COLOR: log files and pipes
    // get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(stderr_colour())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Reads the configuration (the file over the built-in one) and prints its
/// warnings on stderr.
pub(crate) fn load_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<agentpulse::config::Config> {
    let config = agentpulse::config::load_or_builtin(path)?;
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    Ok(config)
}

/// A progress bar on stderr for reading `total` bytes, hidden when stderr
/// is not a terminal or the input is small.
pub(crate) fn progress_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if total < 64 * 1024 * 1024 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// A hub's base URL from an option: `http://HOST:PORT[/PATH]` (or `ws://`,
/// `wss://`, `https://`) as given, or a bare `HOST:PORT` / `HOST`, which
/// gets `http://`. A trailing `/` is dropped.
pub(crate) fn hub_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let full = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let (scheme, rest) = full.split_once("://").unwrap_or(("", ""));
    if !matches!(scheme, "http" | "https" | "ws" | "wss") {
        return Err(format!(
            "expected http://HOST:PORT or HOST:PORT, got {s:?} (scheme {scheme:?})"
        ));
    }
    let host_port = rest.split('/').next().unwrap_or("");
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(format!(
            "expected http://HOST:PORT or HOST:PORT, got {s:?} (no host)"
        ));
    }
    if let Some((_, port)) = host_port.rsplit_once(':') {
        if !host_port.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!("{s:?}: the port is not a number from 0 to 65535"));
        }
    }
    Ok(full)
}

/// A Redis URL from an option: `redis://`, `rediss://`, `unix://` as
/// given, or a bare `HOST:PORT` / `HOST`, which gets `redis://`.
pub(crate) fn redis_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("expected redis://HOST:PORT or HOST:PORT".into());
    }
    Ok(if s.contains("://") {
        s.to_string()
    } else {
        format!("redis://{s}")
    })
}

/// An address to listen on: an IP address, or a name such as `localhost`
/// (its first address, IPv4 preferred).
pub(crate) fn bind_addr(s: &str) -> Result<std::net::IpAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = s.trim().parse() {
        return Ok(ip);
    }
    let addrs: Vec<std::net::IpAddr> = (s.trim(), 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .map(|a| a.ip())
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} has no address"))
}

/// "cannot reach X at URL: <the innermost cause>", with a hint when the
/// connection was refused.
pub(crate) fn unreachable(
    what: &str,
    url: &str,
    hint: &str,
    e: &(dyn std::error::Error + 'static),
) -> anyhow::Error {
    let mut cause = e;
    while let Some(s) = cause.source() {
        cause = s;
    }
    let refused = cause
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    let hint = if refused {
        format!(" ({hint})")
    } else {
        String::new()
    };
    anyhow::anyhow!("cannot reach {what} at {url}: {cause}{hint}")
}

/// The hint for a hub that does not answer.
pub(crate) fn serve_hint(hub: &str) -> String {
    format!("is `agentpulse serve` running at {hub}?")
}

/// The one line for a hub that refused the token (401 or 403).
pub(crate) fn token_refused(hub: &str, status: u16, token: Option<&str>) -> String {
    match token.filter(|t| !t.is_empty()) {
        None => format!(
            "the hub at {hub} needs a token ({status}): pass --token or set AGENTPULSE_TOKEN"
        ),
        Some(_) if status == 403 => format!(
            "the hub at {hub} knows the token but does not let it do this (403): readers need a --read-token or --token of the hub, senders an --ingest-token or --token"
        ),
        Some(_) => format!(
            "the hub at {hub} refused the token ({status}): check --token / AGENTPULSE_TOKEN against the hub's tokens"
        ),
    }
}

/// `--ca-cert`, for the commands that talk to a hub that may be `https://`.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct TlsArgs {
    /// For an https hub: a PEM file of certificates to trust besides the
    /// system's (SSL_CERT_FILE is honoured too), e.g. a self-made one's.
    #[arg(long, env = agentpulse::client::ENV_CA_CERT)]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// An HTTP agent for `hub`: for an `https://` one, trusting the system's
    /// authorities and `--ca-cert` (read only then: the system's store
    /// takes milliseconds, and `claude-hook` runs on every tool call).
    pub fn agent(&self, hub: &str) -> anyhow::Result<ureq::Agent> {
        if hub.trim_start().starts_with("https://") {
            Ok(agentpulse::client::tls::http_agent(self.ca_cert.as_deref())?.build())
        } else {
            Ok(ureq::AgentBuilder::new().build())
        }
    }
}

/// Fails with one clear line when nothing answers at `hub` (`GET /health`,
/// which needs no token) or when the hub refuses `token` (`GET
/// /api/config`), instead of queueing events for nothing.
pub(crate) fn check_hub(hub: &str, token: Option<&str>, tls: &TlsArgs) -> anyhow::Result<()> {
    let timeout = std::time::Duration::from_secs(5);
    let agent = tls.agent(hub)?;
    match agent.get(&format!("{hub}/health")).timeout(timeout).call() {
        Ok(_) | Err(ureq::Error::Status(..)) => {}
        Err(e) => return Err(unreachable("the hub", hub, &serve_hint(hub), &e)),
    }
    let mut req = agent.get(&format!("{hub}/api/config")).timeout(timeout);
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Err(ureq::Error::Status(code @ (401 | 403), _)) => {
            anyhow::bail!("{}", token_refused(hub, code, token))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_host_port_too() {
        assert_eq!(hub_url("127.0.0.1:3010").unwrap(), "http://127.0.0.1:3010");
        assert_eq!(hub_url("localhost").unwrap(), "http://localhost");
        assert_eq!(hub_url("http://h:1/x/").unwrap(), "http://h:1/x");
        assert_eq!(hub_url("ws://h:1").unwrap(), "ws://h:1");
        assert_eq!(hub_url("[::1]:3010").unwrap(), "http://[::1]:3010");
        for bad in ["", ":3010", "ftp://h", "h:port", "http://"] {
            assert!(hub_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            redis_url("127.0.0.1:6379").unwrap(),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redis_url("redis://h/2").unwrap(), "redis://h/2");
        assert_eq!(
            bind_addr("localhost").unwrap(),
            std::net::IpAddr::from([127, 0, 0, 1])
        );
        assert_eq!(bind_addr("0.0.0.0").unwrap().to_string(), "0.0.0.0");
    }

    #[test]
    fn messages_say_each_cause_once() {
        let io = std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "Address in use (os error 98)",
        );
        let e =
            anyhow::Error::new(io).context("binding 127.0.0.1:3010: Address in use (os error 98)");
        assert_eq!(
            message(&e),
            "binding 127.0.0.1:3010: Address in use (os error 98)"
        );
        assert_eq!(plural(1u64, "event", "events"), "1 event");
        assert_eq!(plural(0u64, "event", "events"), "0 events");
    }
}
