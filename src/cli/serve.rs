//! `agentpulse serve`: the hub.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use agentpulse::emitter::Emitter;
use agentpulse::hub::tokens::{self, Access, Role, Tokens};
use agentpulse::hub::{self, HubConfig};
use agentpulse::pipeline::QueuePolicy;
use agentpulse::sinks::console::Level;
use agentpulse::sinks::jsonl::{Durability, JsonlConfig};
use agentpulse::sinks::redis_metrics::{Keys, RedisMetricsConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    /// (An IP address, or a name such as `localhost`.)
    #[arg(long, env = "AGENTPULSE_BIND", default_value = "127.0.0.1", value_parser = super::bind_addr)]
    bind: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "AGENTPULSE_PORT", default_value_t = 3010)]
    port: u16,
    /// Directory of the JSONL log.
    #[arg(long, env = "AGENTPULSE_LOG_DIR", default_value = "logs")]
    log_dir: PathBuf,
    /// Write no JSONL log (ids then restart at 1, with a new stream epoch,
    /// and resume is memory-only).
    #[arg(long, env = "AGENTPULSE_NO_LOG")]
    no_log: bool,
    /// Log durability: none, batch (fsync every second), always.
    #[arg(long, env = "AGENTPULSE_DURABILITY", default_value = "batch")]
    durability: Durability,
    /// Redis URL for the agent-events bridge and bucket metrics
    /// (redis://HOST:PORT, or HOST:PORT).
    #[arg(long, env = "AGENTPULSE_REDIS_URL", value_parser = super::redis_url)]
    redis_url: Option<String>,
    #[command(flatten)]
    redis_prefix: super::redis_cmds::RedisPrefix,
    /// Milliseconds between metric flushes to Redis.
    #[arg(long, env = "AGENTPULSE_REDIS_FLUSH_MS", default_value_t = 1000)]
    redis_flush_ms: u64,
    #[command(flatten)]
    redis_ttl: super::redis_cmds::RedisTtl,
    /// Do not subscribe to the agent-events channel (metrics only).
    #[arg(long, env = "AGENTPULSE_NO_REDIS_BRIDGE")]
    no_redis_bridge: bool,
    /// Admin token: may do everything (repeatable). Off loopback, a hub
    /// given no token makes one up and prints it.
    #[arg(
        long,
        env = "AGENTPULSE_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    token: Vec<String>,
    /// Ingest token: may only send events (repeatable).
    #[arg(
        long = "ingest-token",
        env = "AGENTPULSE_INGEST_TOKENS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    ingest_tokens: Vec<String>,
    /// Read token: may only read (streams, /api/*, /metrics, the dashboard)
    /// (repeatable).
    #[arg(
        long = "read-token",
        env = "AGENTPULSE_READ_TOKENS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    read_tokens: Vec<String>,
    /// Serve without any token even off loopback: anyone who can reach the
    /// address reads and writes every event.
    #[arg(
        long = "no-token",
        env = "AGENTPULSE_NO_TOKEN",
        conflicts_with_all = ["token", "ingest_tokens", "read_tokens"]
    )]
    no_token: bool,
    /// Browser origins allowed to send events and open WebSockets (besides the hub's own and
    /// localhost); `*` allows any.
    #[arg(
        long = "allow-origin",
        env = "AGENTPULSE_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    allow_origins: Vec<String>,
    /// Host names the hub answers to, besides IP addresses, `localhost`
    /// and this machine's name (for a hub served under its own name, e.g.
    /// behind a reverse proxy); `*` allows any. Requests for other names
    /// are refused: a web page cannot reach the hub through DNS rebinding.
    #[arg(
        long = "allow-host",
        env = "AGENTPULSE_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    allow_hosts: Vec<String>,
    /// No console output of events.
    #[arg(long, short, env = "AGENTPULSE_QUIET")]
    quiet: bool,
    /// Console level: debug, info, warn, error.
    #[arg(long, env = "AGENTPULSE_CONSOLE_LEVEL")]
    console_level: Option<Level>,
    /// Refuse event types the schema does not declare.
    #[arg(long, env = "AGENTPULSE_STRICT")]
    strict: bool,
    /// Events kept in memory for resume.
    #[arg(long, env = "AGENTPULSE_RING_CAPACITY", default_value_t = 100_000)]
    ring_capacity: usize,
    /// Newest events whose task ids are indexed for `/api/tasks/{id}`
    /// (older tasks are found by a bounded scan of the log).
    #[arg(
        long,
        env = "AGENTPULSE_TASK_INDEX_EVENTS",
        default_value_t = 1_000_000
    )]
    task_index_events: u64,
    /// Bytes a live-mode stream client (`?mode=live`) may fall behind before
    /// it gets a stream_gap (lossless clients are served from the log).
    #[arg(long, env = "AGENTPULSE_CLIENT_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024)]
    client_queue_bytes: u64,
    /// Seconds between server pings.
    #[arg(long, env = "AGENTPULSE_PING_INTERVAL", default_value_t = 30.0)]
    ping_interval: f64,
    /// Most WebSocket connections.
    #[arg(long, env = "AGENTPULSE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Most connections of any kind at once (HTTP and WebSocket); more are
    /// answered 503 and closed. Default: the config's
    /// limits.max_total_connections, else 16384; lowered to what the
    /// open-files limit allows.
    #[arg(long, env = "AGENTPULSE_MAX_TOTAL_CONNECTIONS")]
    max_total_connections: Option<usize>,
    /// Seconds a request's head may take to arrive (and, for a new
    /// connection, the TLS handshake with it); the connection is closed past
    /// it. Default: the config's limits.header_timeout, else 10.
    #[arg(long, env = "AGENTPULSE_HEADER_TIMEOUT")]
    header_timeout: Option<f64>,
    /// Seconds a kept-alive connection may wait for its next request
    /// before it is closed (WebSocket streams are not affected). Default:
    /// the config's limits.idle_timeout, else 60.
    #[arg(long, env = "AGENTPULSE_IDLE_TIMEOUT")]
    idle_timeout: Option<f64>,
    /// Serve HTTPS and WSS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "AGENTPULSE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "AGENTPULSE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest request body in bytes. Default: the config's
    /// limits.max_body_bytes, else 16777216 (16 MiB).
    #[arg(long, env = "AGENTPULSE_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Most events in one request, WebSocket message or Redis message.
    #[arg(
        long,
        env = "AGENTPULSE_MAX_EVENTS_PER_REQUEST",
        default_value_t = 100_000
    )]
    max_events_per_request: usize,
    /// Seconds a client may take to send a request's body. Default: the
    /// config's limits.body_timeout, else 60.
    #[arg(long, env = "AGENTPULSE_BODY_TIMEOUT")]
    body_timeout: Option<f64>,
    /// Seconds shutdown waits for clients before closing their connections.
    #[arg(long, env = "AGENTPULSE_SHUTDOWN_GRACE", default_value_t = 3.0)]
    shutdown_grace: f64,
    /// Tasks the metrics engine holds at most (default 250000, or the
    /// config's metrics.aggregate.max_open_tasks); the least recently
    /// active is evicted past it.
    #[arg(long, env = "AGENTPULSE_MAX_OPEN_TASKS")]
    max_open_tasks: Option<usize>,
    /// Bytes of log lines kept in memory while the log cannot be written;
    /// new events are refused (503) past half of it.
    #[arg(long, env = "AGENTPULSE_LOG_MAX_PENDING_BYTES", default_value_t = 64 << 20)]
    log_max_pending_bytes: usize,
    /// Disk cap of the log directory (bytes, or a size such as 10GB or
    /// 512MiB; default: the config's limits.max_log_bytes, else none): the
    /// oldest rotated files are deleted to stay under it, and new events
    /// are refused (507) when the current file alone reaches it.
    #[arg(long, env = "AGENTPULSE_MAX_LOG_BYTES")]
    max_log_bytes: Option<agentpulse::config::ByteSize>,
    /// OTLP/gRPC port on the --bind address (0: off). Default 4317; when
    /// the default is taken (another hub?) the hub serves OTLP over HTTP
    /// only and says so; a port given here that is taken is an error.
    #[arg(long = "otlp-grpc-port", env = "AGENTPULSE_OTLP_GRPC_PORT")]
    otlp_grpc_port: Option<u16>,
    /// Join a cluster of hubs on this Redis (redis://HOST:PORT[/DB]): ids
    /// and dedup in Redis, every hub serves every event of the cluster
    /// from the shared stream (see the README's cluster recipe).
    #[arg(long, env = "AGENTPULSE_CLUSTER_URL", value_parser = super::redis_url)]
    cluster: Option<String>,
    /// The cluster's stream key (the other keys are named after it).
    #[arg(
        long,
        env = "AGENTPULSE_CLUSTER_STREAM_KEY",
        default_value = agentpulse::cluster::DEFAULT_STREAM_KEY,
        requires = "cluster"
    )]
    cluster_stream_key: String,
    /// Entries the cluster's stream keeps (XTRIM MAXLEN ~; 0: no limit).
    #[arg(
        long,
        env = "AGENTPULSE_CLUSTER_MAX_LEN",
        default_value_t = agentpulse::cluster::DEFAULT_MAX_LEN,
        requires = "cluster"
    )]
    cluster_max_len: u64,
    /// Seconds of events the cluster's stream keeps (XTRIM MINID; default:
    /// no limit by age).
    #[arg(long, env = "AGENTPULSE_CLUSTER_MAX_AGE", requires = "cluster")]
    cluster_max_age: Option<f64>,
    /// Seconds an event_id is remembered by the cluster for dedup.
    #[arg(
        long,
        env = "AGENTPULSE_CLUSTER_DEDUP_TTL",
        default_value_t = 3600.0,
        requires = "cluster"
    )]
    cluster_dedup_ttl: f64,
    /// Full ingest queue: block (backpressure to senders) or drop.
    #[arg(long, env = "AGENTPULSE_QUEUE_POLICY", default_value = "block")]
    queue_policy: QueuePolicy,
}

/// A number of seconds given on the command line, checked.
fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    if !(0.01..=86_400.0).contains(&v) {
        anyhow::bail!("{flag}: {v} is outside 0.01..=86400 seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

pub fn run(config_path: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let mut config = super::load_config(config_path)?;
    if args.no_token && !config.tokens.is_empty() {
        anyhow::bail!(
            "--no-token: the configuration file {} gives tokens (tokens:); remove them or drop --no-token",
            config.origin
        );
    }
    if let Some(path) = config_path.filter(|_| !config.tokens.is_empty()) {
        warn_if_others_can_read(path);
    }
    if let Some(n) = args.max_open_tasks {
        if n == 0 {
            anyhow::bail!("--max-open-tasks: must be at least 1");
        }
        config.metrics.aggregate.max_open_tasks = n;
    }
    let jsonl = JsonlConfig {
        dir: args.log_dir.clone(),
        durability: args.durability,
        max_pending_bytes: args.log_max_pending_bytes.max(4096),
        max_log_bytes: args
            .max_log_bytes
            .or(config.limits.max_log_bytes)
            .map(|b| b.0),
        ..JsonlConfig::default()
    };
    let mut builder = Emitter::builder()
        .config(config.clone())
        .policy(args.queue_policy);
    builder = if args.no_log {
        builder.no_log()
    } else {
        builder.jsonl(jsonl.clone())
    };
    if args.strict {
        builder = builder.strict(true);
    }
    builder = match (args.quiet, args.console_level) {
        (true, _) => builder.quiet(),
        (false, Some(level)) => builder.console(level),
        (false, None) => builder,
    };
    if !(0.1..=3600.0).contains(&args.ping_interval) {
        anyhow::bail!(
            "--ping-interval: {} is outside 0.1..=3600 seconds",
            args.ping_interval
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(hub::server::tls::server_config(cert, key)?),
        _ => None,
    };
    let open_files = match hub::server::raise_open_files_limit() {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!("cannot read or raise the open-files limit: {e}");
            None
        }
    };
    let nofile = open_files.map_or(u64::MAX, |f| f.after);
    let (max_total_connections, lowered) = hub::server::connection_cap(
        args.max_total_connections
            .or(config.limits.max_total_connections),
        nofile,
    );
    if lowered {
        tracing::warn!(
            "--max-total-connections: the open-files limit ({nofile}) allows {max_total_connections}; using that"
        );
    }
    if let Some(f) = open_files {
        if f.after > f.before {
            tracing::info!(
                "open files: soft limit raised from {} to {} (the hard limit); at most {max_total_connections} connections",
                f.before,
                f.after
            );
        } else {
            tracing::info!(
                "open files: soft limit {} (no higher allowed); at most {max_total_connections} connections",
                f.after
            );
        }
    }
    let hub_config = HubConfig {
        bind: args.bind,
        port: args.port,
        tokens: Tokens::none()
            .with(Role::Admin, args.token)
            .with(Role::Ingest, args.ingest_tokens)
            .with(Role::Read, args.read_tokens)
            .with(Role::Admin, config.tokens.admin.clone())
            .with(Role::Ingest, config.tokens.ingest.clone())
            .with(Role::Read, config.tokens.read.clone()),
        allowed_origins: args.allow_origins,
        allowed_hosts: args.allow_hosts,
        ring_capacity: args.ring_capacity.max(1),
        task_index_events: args.task_index_events.max(1),
        client_queue_bytes: args.client_queue_bytes,
        ping_interval: Duration::from_secs_f64(args.ping_interval),
        max_connections: args.max_connections,
        max_total_connections,
        header_timeout: seconds(
            "--header-timeout (or limits.header_timeout)",
            args.header_timeout
                .or(config.limits.header_timeout)
                .unwrap_or(10.0),
        )?,
        idle_timeout: seconds(
            "--idle-timeout (or limits.idle_timeout)",
            args.idle_timeout
                .or(config.limits.idle_timeout)
                .unwrap_or(60.0),
        )?,
        tls,
        max_body_bytes: args
            .max_body_bytes
            .or(config.limits.max_body_bytes)
            .unwrap_or(16 * 1024 * 1024),
        max_events_per_request: args.max_events_per_request.max(1),
        body_timeout: seconds(
            "--body-timeout (or limits.body_timeout)",
            args.body_timeout
                .or(config.limits.body_timeout)
                .unwrap_or(60.0),
        )?,
        shutdown_grace: seconds("--shutdown-grace", args.shutdown_grace)?,
        max_event_bytes: config.limits.max_payload_bytes,
        redis_metrics: match &args.redis_url {
            Some(url) => Some(redis_metrics_config(
                url,
                &args.redis_prefix.redis_prefix,
                args.redis_flush_ms,
                &args.redis_ttl.redis_ttl_days,
            )?),
            None => None,
        },
        redis_url: args.redis_url.filter(|_| !args.no_redis_bridge),
        log: (!args.no_log).then_some(jsonl),
        otlp_grpc: Some(hub::otlp::GrpcListen {
            port: args.otlp_grpc_port.unwrap_or(hub::otlp::DEFAULT_GRPC_PORT),
            explicit: args.otlp_grpc_port.is_some(),
        }),
        cluster: None,
    };
    let cluster = match &args.cluster {
        Some(url) => {
            let mut c = agentpulse::cluster::ClusterConfig::new(url.clone());
            if args.cluster_stream_key.is_empty() {
                anyhow::bail!("--cluster-stream-key: must not be empty");
            }
            c.stream_key = args.cluster_stream_key.clone();
            c.max_len = args.cluster_max_len;
            c.max_age = args
                .cluster_max_age
                .map(|v| seconds("--cluster-max-age", v))
                .transpose()?;
            c.dedup_ttl = seconds("--cluster-dedup-ttl", args.cluster_dedup_ttl)?;
            Some(c)
        }
        None => None,
    };
    let mut hub_config = hub_config;
    let generated = token_off_loopback(&mut hub_config, args.no_token)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agentpulse-hub")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let signal = shutdown_signal()?;
        let shutdown = CancellationToken::new();
        if cluster.is_some() && hub_config.redis_url.is_some() {
            // Every hub subscribed would ingest each message once.
            tracing::warn!(
                "--cluster with the agent-events bridge: every hub that subscribes ingests each PUBLISHed message (events without an event_id are stored once per hub); keep the bridge on one hub and give the others --no-redis-bridge"
            );
        }
        if let Some(c) = cluster {
            let joined = match agentpulse::cluster::Cluster::join(c.clone()).await {
                Ok(j) => j,
                Err(e) => match logged_epoch(hub_config.log.as_ref()) {
                    // A restart while Redis is away: serve the log, refuse
                    // ingest until Redis is back (its epoch is checked then).
                    Some(epoch) => {
                        tracing::warn!(
                            "{e}; serving this hub's log (epoch {epoch}) and refusing ingest until Redis answers"
                        );
                        agentpulse::cluster::Cluster::offline(c, epoch)?
                    }
                    None => return Err(e.into()),
                },
            };
            tracing::info!(epoch = %joined.epoch, "joined the cluster");
            hub_config.cluster = Some(joined);
        }
        let running = hub::start(hub_config, builder, shutdown.clone()).await?;
        let addr = running.addr;
        let grpc = match &running.state().otlp.grpc {
            hub::otlp::GrpcStatus::Listening(g) => format!(", OTLP/gRPC {g}"),
            _ => String::new(),
        };
        if let Some(why) = hub::otlp::health_reason(&running.state().otlp.grpc, addr) {
            eprintln!("agentpulse: {why}; choose a free port with --otlp-grpc-port");
        }
        let http = running.state().scheme();
        let ws = if http == "https" { "wss" } else { "ws" };
        outln!(
            "agentpulse listening on {http}://{addr} (dashboard {http}://{addr}/, stream {ws}://{addr}/agent-events, ingest POST {http}://{addr}/events, OTLP {http}://{addr}/v1/traces{grpc})"
        );
        if let Some(token) = &generated {
            let host = match addr.ip() {
                ip if ip.is_unspecified() => {
                    hub::auth::machine_name().unwrap_or("localhost").to_owned()
                }
                ip => ip.to_string(),
            };
            println!(
                "agentpulse: no token was given for {}, so this one is required (--no-token serves without): {token}",
                addr.ip()
            );
            println!(
                "agentpulse: dashboard {http}://{host}:{}/#token={token}",
                addr.port()
            );
        }
        tracing::info!(
            next_id = running.start_report.next_id,
            replayed = running.start_report.replayed,
            "pipeline started"
        );
        tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
        running.wait().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The stream epoch stored beside a log that holds events, if any: the
/// cluster's, for a member that restarts while Redis is unreachable.
fn logged_epoch(log: Option<&JsonlConfig>) -> Option<String> {
    let log = log?;
    let epoch = agentpulse::pipeline::epoch::stored(&log.dir, &log.file_name)?;
    match agentpulse::logfile::recover_last_id(&log.dir, &log.file_name) {
        Ok(Some(id)) if id > 0 => Some(epoch),
        _ => None,
    }
}

/// Off loopback, every kind of access needs a token: when the user gave
/// none for reads or writes, one admin token is made up (returned, to be
/// printed once), unless `--no-token` says otherwise. Warns of what is open.
fn token_off_loopback(config: &mut HubConfig, no_token: bool) -> anyhow::Result<Option<String>> {
    let open: Vec<&str> = [Access::Write, Access::Read]
        .into_iter()
        .filter(|a| !config.tokens.protects(*a))
        .map(Access::as_str)
        .collect();
    if open.is_empty() {
        return Ok(None);
    }
    if config.bind.is_loopback() {
        if !config.tokens.is_empty() {
            tracing::warn!(
                "no token grants the right to {}: anyone on this machine may",
                open.join(" or ")
            );
        }
        return Ok(None);
    }
    if no_token {
        tracing::warn!(
            "--no-token: anyone who can reach {} may {} (every event, prompts and costs included)",
            config.bind,
            open.join(" and ")
        );
        return Ok(None);
    }
    let token = tokens::generate().context("making up a token")?;
    config.tokens = std::mem::take(&mut config.tokens).with(Role::Admin, [token.clone()]);
    Ok(Some(token))
}

/// A configuration file that holds tokens should be readable by its owner
/// only: says so when others may read it.
fn warn_if_others_can_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o044 != 0 {
                tracing::warn!(
                    "{} holds tokens and others may read it (mode {:o}): chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The Redis metrics settings from the command line.
pub fn redis_metrics_config(
    url: &str,
    prefix: &str,
    flush_ms: u64,
    ttl_days: &[u64],
) -> anyhow::Result<RedisMetricsConfig> {
    let mut rc = RedisMetricsConfig::new(url);
    if !(10..=600_000).contains(&flush_ms) {
        anyhow::bail!("--redis-flush-ms: {flush_ms} is outside 10..=600000");
    }
    rc.flush_interval = Duration::from_millis(flush_ms);
    rc.keys = Keys::with_ttl_days(prefix, ttl_days)
        .map_err(|e| anyhow::anyhow!("--redis-ttl-days: {e}"))?;
    Ok(rc)
}

/// Registers for SIGTERM and SIGINT at once, before the hub says it
/// listens: a handler installed later, by a task not yet run, left a window
/// in which a SIGTERM killed the hub with the default action (seen in CI).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        // An error here means Ctrl-C cannot be watched: shut down rather
        // than run unstoppable.
        Ok(async {
            tokio::signal::ctrl_c().await.ok();
        })
    }
}
