//! Redis I/O for bucket metrics: apply a flush idempotently, publish the
//! derived JSON values, read series back, rebuild from scratch.
//!
//! Per bucket (hourly, daily, weekly; `P` is the prefix, default `metrics:`):
//!
//! - `P<granularity>:<name>` — the seed-compatible value: a JSON object with
//!   the six KPIs (plus `time_to_completion_p50`, `_p95` and `events`), all
//!   numbers, set with `SET ... EX ttl` (refreshed at every write).
//! - `P<granularity>:<name>:raw` — a hash of additive raw state (see
//!   [`crate::metrics::raw`]) plus bookkeeping: `version` (bumped by every
//!   applied flush) and `applied:<hub id>` (the last flush sequence number of
//!   that hub applied here).
//!
//! A flush is applied by a Lua script per bucket that adds the increments
//! only when the hub's sequence number is newer than `applied:<hub>`: a
//! flush retried after a lost reply is never counted twice. The script
//! returns the merged hash; the hub derives the KPIs from it (the same Rust
//! code as everywhere else) and sets the value only if `version` has not
//! moved since (another hub's newer write wins), in a second round trip.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use serde_json::{json, Value};

use crate::metrics::raw::{from_fields, to_fields, RawValue};
use crate::metrics::{BucketStats, Granularity};

/// Key names and lifetimes.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Prefix of every key (default `metrics:`).
    pub prefix: String,
    /// TTL of hourly buckets, seconds (default 7 days).
    pub ttl_hourly: u64,
    /// TTL of daily buckets (default 30 days).
    pub ttl_daily: u64,
    /// TTL of weekly buckets (default 90 days).
    pub ttl_weekly: u64,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            prefix: "metrics:".into(),
            ttl_hourly: 7 * 86_400,
            ttl_daily: 30 * 86_400,
            ttl_weekly: 90 * 86_400,
        }
    }
}

impl Keys {
    /// The value key of a bucket, e.g. `metrics:hourly:2026-12-01T07:00:00`.
    pub fn value_key(&self, g: Granularity, start: i64) -> String {
        format!("{}{}:{}", self.prefix, g.as_str(), g.bucket_name(start))
    }

    /// The raw-state hash of a bucket.
    pub fn raw_key(&self, g: Granularity, start: i64) -> String {
        format!("{}:raw", self.value_key(g, start))
    }

    /// Keys under `prefix` with the TTLs of hourly, daily and weekly buckets
    /// given in days (as the command-line options take them).
    pub fn with_ttl_days(prefix: &str, ttl_days: &[u64]) -> Result<Keys, String> {
        match ttl_days {
            [h, d, w] if *h > 0 && *d > 0 && *w > 0 => Ok(Keys {
                prefix: prefix.to_string(),
                ttl_hourly: h * 86_400,
                ttl_daily: d * 86_400,
                ttl_weekly: w * 86_400,
            }),
            other => Err(format!(
                "expected three positive numbers of days (hourly,daily,weekly), got {other:?}"
            )),
        }
    }

    /// The TTL of buckets of `g` (None for minutes: not stored).
    pub fn ttl(&self, g: Granularity) -> Option<u64> {
        match g {
            Granularity::Minute => None,
            Granularity::Hourly => Some(self.ttl_hourly),
            Granularity::Daily => Some(self.ttl_daily),
            Granularity::Weekly => Some(self.ttl_weekly),
        }
    }
}

const APPLY: &str = r#"
local applied = tonumber(redis.call('HGET', KEYS[1], 'applied:' .. ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if applied < seq then
  for i = 4, #ARGV, 3 do
    local kind, field, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if kind == 'i' then
      redis.call('HINCRBY', KEYS[1], field, v)
    elseif kind == 'f' then
      redis.call('HINCRBYFLOAT', KEYS[1], field, v)
    else
      redis.call('HSET', KEYS[1], field, '1')
    end
  end
  redis.call('HSET', KEYS[1], 'applied:' .. ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HGETALL', KEYS[1])
"#;

const SET_IF_VERSION: &str = r#"
if redis.call('HGET', KEYS[1], 'version') == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"#;

/// The seed-compatible JSON value of a bucket's raw state.
pub fn value_json(stats: &BucketStats, g: Granularity) -> Value {
    let k = stats.kpis(g.length_secs() as f64);
    json!({
        "agent_utilization": k.agent_utilization,
        "cost_per_feature": k.cost_per_feature,
        "average_retry_count": k.average_retry_count,
        "critic_rejection_rate": k.critic_rejection_rate,
        "validation_pass_rate": k.validation_pass_rate,
        "time_to_completion": k.time_to_completion,
        "time_to_completion_p50": k.time_to_completion_p50,
        "time_to_completion_p95": k.time_to_completion_p95,
        "events": stats.events,
    })
}

/// One flush: this hub's `seq`-th, with the increments of each bucket.
#[derive(Debug, Clone)]
pub struct Flush {
    /// The writing hub.
    pub hub_id: String,
    /// Increasing per hub; retries reuse it.
    pub seq: u64,
    /// (granularity, bucket start, increments).
    pub buckets: Vec<(Granularity, i64, BucketStats)>,
}

/// Applies `flush` and publishes the values: two round trips whatever the
/// number of buckets. Safe to call again with the same flush.
pub async fn apply(
    con: &mut ConnectionManager,
    keys: &Keys,
    flush: &Flush,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    let mut stored = Vec::new();
    for (g, start, stats) in &flush.buckets {
        let Some(ttl) = keys.ttl(*g) else { continue };
        let cmd = pipe
            .cmd("EVAL")
            .arg(APPLY)
            .arg(1)
            .arg(keys.raw_key(*g, *start));
        cmd.arg(&flush.hub_id).arg(flush.seq).arg(ttl);
        for (field, v) in to_fields(stats) {
            match v {
                RawValue::Int(n) => cmd.arg("i").arg(field).arg(n),
                RawValue::Float(x) => cmd.arg("f").arg(field).arg(format_float(x)),
                RawValue::Flag => cmd.arg("s").arg(field).arg(1),
            };
        }
        stored.push((*g, *start, ttl));
    }
    if stored.is_empty() {
        return Ok(());
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(con).await?;
    let mut pipe = redis::pipe();
    for ((g, start, ttl), hash) in stored.iter().zip(&hashes) {
        let version = hash.get("version").cloned().unwrap_or_default();
        let merged = from_fields(hash.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        pipe.cmd("EVAL")
            .arg(SET_IF_VERSION)
            .arg(2)
            .arg(keys.raw_key(*g, *start))
            .arg(keys.value_key(*g, *start))
            .arg(version)
            .arg(value_json(&merged, *g).to_string())
            .arg(*ttl)
            .ignore();
    }
    pipe.query_async::<()>(con).await
}

/// Floats for `HINCRBYFLOAT`: shortest exact decimal, never exponent form.
fn format_float(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "0".into()
    }
}

/// The stored values of the buckets of `g` from `from` to `to` (Unix
/// seconds), in order; `null` where a bucket has no value.
pub async fn read_series(
    con: &mut ConnectionManager,
    keys: &Keys,
    g: Granularity,
    from: f64,
    to: f64,
) -> redis::RedisResult<Vec<Value>> {
    let starts = bucket_starts(g, from, to);
    if starts.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = starts.iter().map(|s| keys.value_key(g, *s)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&names).query_async(con).await?;
    Ok(starts
        .iter()
        .zip(values)
        .map(|(start, v)| {
            json!({
                "key": g.bucket_name(*start),
                "start": start,
                "kpis": v.and_then(|s| serde_json::from_str::<Value>(&s).ok()),
            })
        })
        .collect())
}

/// Bucket starts of `g` covering `from..=to` (at most 10,000).
pub fn bucket_starts(g: Granularity, from: f64, to: f64) -> Vec<i64> {
    let (mut s, last) = (g.bucket_start(from), g.bucket_start(to));
    let mut out = Vec::new();
    while s <= last && out.len() < 10_000 {
        out.push(s);
        s = g.bucket_start((s + g.length_secs()) as f64);
    }
    out
}

/// Replaces the stored state of each bucket with `stats` (for
/// `rebuild-metrics`): running it twice leaves the same values.
pub async fn replace(
    con: &mut ConnectionManager,
    keys: &Keys,
    buckets: &[(Granularity, i64, &BucketStats)],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (g, start, stats) in buckets {
        let Some(ttl) = keys.ttl(*g) else { continue };
        let raw = keys.raw_key(*g, *start);
        pipe.cmd("DEL").arg(&raw).ignore();
        let mut fields: Vec<(String, String)> = to_fields(stats)
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    RawValue::Int(n) => n.to_string(),
                    RawValue::Float(x) => format_float(x),
                    RawValue::Flag => "1".into(),
                };
                (k, v)
            })
            .collect();
        fields.push(("version".into(), "1".into()));
        pipe.cmd("HSET").arg(&raw).arg(fields).ignore();
        pipe.cmd("EXPIRE").arg(&raw).arg(ttl).ignore();
        pipe.cmd("SET")
            .arg(keys.value_key(*g, *start))
            .arg(value_json(stats, *g).to_string())
            .arg("EX")
            .arg(ttl)
            .ignore();
    }
    pipe.query_async::<()>(con).await
}
