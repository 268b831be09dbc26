//! `agentpulse metrics` (read bucket metrics back from Redis) and
//! `agentpulse rebuild-metrics` (recompute them from logs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use agentpulse::config::KPI_NAMES;
use agentpulse::hub::api::parse_time;
use agentpulse::logfile::EventLog;
use agentpulse::metrics::{Granularity, MetricsConfig, MetricsEngine};
use agentpulse::sinks::redis_metrics::store::{read_series, replace};
use agentpulse::sinks::redis_metrics::{connect as connect_redis, Keys};

/// `--redis-prefix` (old name `--prefix`): one definition for `serve`,
/// `metrics` and `rebuild-metrics`, so the name and variable agree.
#[derive(Debug, clap::Args)]
pub struct RedisPrefix {
    /// Prefix of the metric keys in Redis.
    #[arg(
        long,
        visible_alias = "prefix",
        env = "AGENTPULSE_REDIS_PREFIX",
        default_value = "metrics:"
    )]
    pub redis_prefix: String,
}

/// `--redis-ttl-days` (old name `--ttl-days`), for `serve` and
/// `rebuild-metrics`.
#[derive(Debug, clap::Args)]
pub struct RedisTtl {
    /// TTL of hourly / daily / weekly buckets, in days.
    #[arg(
        long,
        visible_alias = "ttl-days",
        env = "AGENTPULSE_REDIS_TTL_DAYS",
        value_delimiter = ',',
        default_value = "7,30,90"
    )]
    pub redis_ttl_days: Vec<u64>,
}

#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// The Redis holding the buckets (redis://HOST:PORT, or HOST:PORT).
    #[arg(long, env = "AGENTPULSE_REDIS_URL", value_parser = super::redis_url)]
    redis_url: String,
    /// hourly, daily or weekly.
    #[arg(long, visible_alias = "buckets", default_value = "daily")]
    bucket: String,
    /// Start (Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, UTC).
    #[arg(long)]
    from: Option<String>,
    /// End (same forms); default now.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    prefix: RedisPrefix,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Also list the buckets without data (the table skips them).
    #[arg(long)]
    all: bool,
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// JSONL logs (plain or .gz).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The Redis to write (redis://HOST:PORT, or HOST:PORT).
    #[arg(long, env = "AGENTPULSE_REDIS_URL", value_parser = super::redis_url)]
    redis_url: String,
    #[command(flatten)]
    prefix: RedisPrefix,
    #[command(flatten)]
    ttl: RedisTtl,
}

/// A granularity stored in Redis (minutes are not).
pub(crate) fn stored_granularity(option: &str, name: &str) -> anyhow::Result<Granularity> {
    Granularity::from_name(name)
        .filter(|g| *g != Granularity::Minute)
        .ok_or_else(|| anyhow::anyhow!("{option}: expected hourly, daily or weekly, got {name:?}"))
}

async fn connect(url: &str) -> anyhow::Result<redis::aio::ConnectionManager> {
    connect_redis(url, Duration::from_secs(3), Duration::from_secs(30))
        .await
        .map_err(|e| {
            let hint = if e.contains("refused") {
                " (is redis-server running there?)"
            } else {
                ""
            };
            anyhow::anyhow!("{e}{hint}")
        })
}

pub fn metrics(args: MetricsArgs) -> anyhow::Result<ExitCode> {
    let g = stored_granularity("--bucket", &args.bucket)?;
    let to = match &args.to {
        Some(t) => parse_time(t).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
        None => agentpulse::event::now_unix(),
    };
    let from = match &args.from {
        Some(f) => parse_time(f).map_err(|e| anyhow::anyhow!("--from: {e}"))?,
        None => to - 6.0 * g.length_secs() as f64,
    };
    let keys = Keys {
        prefix: args.prefix.redis_prefix.clone(),
        ..Keys::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let series = rt.block_on(async {
        let mut con = connect(&args.redis_url).await?;
        anyhow::Ok(read_series(&mut con, &keys, g, from, to).await?)
    })?;
    let total = series.len();
    let series: Vec<Value> = series
        .into_iter()
        .filter(|b| args.all || b["kpis"].is_object())
        .collect();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&Value::Array(series))?);
        return Ok(ExitCode::SUCCESS);
    }
    if series.is_empty() {
        outln!(
            "no data in {} (--all lists them)",
            super::plural(
                total as u64,
                &format!("{} bucket", g.as_str()),
                &format!("{} buckets", g.as_str())
            )
        );
        return Ok(ExitCode::SUCCESS);
    }
    out!("{:<20}", "bucket");
    for k in KPI_NAMES {
        out!(" {:>12}", short(k));
    }
    outln!(" {:>8}", "events");
    for b in &series {
        out!("{:<20}", b["key"].as_str().unwrap_or(""));
        match b["kpis"].as_object() {
            None => outln!("  (no data)"),
            Some(k) => {
                for name in KPI_NAMES {
                    out!(
                        " {:>12.4}",
                        k.get(name).and_then(Value::as_f64).unwrap_or(0.0)
                    );
                }
                outln!(
                    " {:>8}",
                    k.get("events").and_then(Value::as_u64).unwrap_or(0)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn short(kpi: &str) -> &str {
    match kpi {
        "agent_utilization" => "utilization",
        "cost_per_feature" => "cost/feature",
        "average_retry_count" => "retries",
        "critic_rejection_rate" => "rejections",
        "validation_pass_rate" => "pass_rate",
        "time_to_completion" => "ttc_s",
        other => other,
    }
}

pub fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let keys = Keys::with_ttl_days(&args.prefix.redis_prefix, &args.ttl.redis_ttl_days)
        .map_err(|e| anyhow::anyhow!("--redis-ttl-days: {e}"))?;
    // Keep every bucket of the logs, however old: retention is Redis's TTL.
    let mut engine = MetricsEngine::new(MetricsConfig::keeping_every_bucket());
    let total: u64 = args
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        bar.set_style(style);
    }
    let (mut events, mut bad, mut done) = (0u64, 0u64, 0u64);
    for path in &args.files {
        bar.set_message(path.display().to_string());
        let mut seen = 0u64;
        // The reader `report` uses: either format, in file order; a file
        // without a single event stops the rebuild before Redis is touched.
        let mut log = EventLog::open(path)?;
        let progress = log.progress();
        let stats = log.read_fields(
            |_, _, fields| {
                engine.observe_fields(fields);
                seen += 1;
                if seen.is_multiple_of(65_536) {
                    bar.set_position(done + progress.bytes_read());
                }
            },
            |_| {},
        )?;
        events += stats.events;
        bad += stats.errors;
        done += log.file_size();
        bar.set_position(done);
    }
    bar.finish_and_clear();
    let buckets: Vec<(Granularity, i64, &agentpulse::metrics::BucketStats)> = engine
        .bucket_set()
        .iter()
        .filter(|(g, _, _)| *g != Granularity::Minute)
        .collect();
    let n = buckets.len();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut con = connect(&args.redis_url).await?;
        for chunk in buckets.chunks(200) {
            replace(&mut con, &keys, chunk).await?;
        }
        anyhow::Ok(())
    })?;
    eprintln!(
        "rebuilt {} from {} ({} skipped)",
        super::plural(n as u64, "bucket", "buckets"),
        super::plural(events, "event", "events"),
        super::plural(bad, "unreadable line", "unreadable lines"),
    );
    Ok(ExitCode::SUCCESS)
}
