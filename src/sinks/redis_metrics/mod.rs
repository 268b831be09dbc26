//! Bucket metrics in Redis: exact per-bucket values shared by many hubs.
//!
//! The metrics sink records, beside its own engine, what every event adds
//! to each hourly, daily and weekly bucket ([`Increments`]). A [`Flusher`]
//! task takes those increments every `flush_interval` (or sooner once
//! `flush_max_events` events are waiting) and applies them in one flush of
//! two round trips ([`store::apply`]), so Redis load does not grow with the
//! event rate.
//!
//! When Redis is down or slow, nothing upstream notices: increments keep
//! merging into a pending set (bounded by `max_pending_buckets`; beyond it
//! new increments are dropped and counted), and the flush that was in
//! flight is retried as it was, under the same sequence number, so it is
//! applied exactly once.
//!
//! Hubs that share a Redis merge exactly when each task's events reach one
//! hub (the usual sharding by task or by agent process). A task whose events
//! are split across hubs is approximated: each hub sees part of its state,
//! so its time to completion is counted only by the hub that saw both the
//! `task_queued` and the `validation_complete`, its cost counts towards
//! `cost_per_feature` only on the hub that saw its `task_queued`, its retries
//! only where the failed completion and the restart were seen, and a busy
//! span only where both its start and its completion were seen (a
//! completion with `duration_ms` still places the span). Everything that is
//! a plain count (events, validations, pass rate, critic decisions) is exact
//! in every case.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use crate::metrics::{BucketSet, Granularity};

pub mod store;

pub use store::{Flush, Keys};

/// Settings of the Redis bucket store.
#[derive(Debug, Clone)]
pub struct RedisMetricsConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key names and TTLs.
    pub keys: Keys,
    /// Time between flushes (default 1 s).
    pub flush_interval: Duration,
    /// Flush sooner once this many events are waiting (default 200,000).
    pub flush_max_events: u64,
    /// Most buckets kept pending while Redis is unreachable (default 10,000:
    /// more than a year of hourly buckets).
    pub max_pending_buckets: usize,
    /// How long one Redis operation may take before it counts as failed.
    pub timeout: Duration,
}

impl RedisMetricsConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisMetricsConfig {
            url: url.into(),
            keys: Keys::default(),
            flush_interval: Duration::from_secs(1),
            flush_max_events: 200_000,
            max_pending_buckets: 10_000,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of the store, readable from any thread.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Whether the last Redis operation succeeded.
    pub up: AtomicBool,
    /// Flushes applied.
    pub flushes: AtomicU64,
    /// Round trips to Redis.
    pub round_trips: AtomicU64,
    /// Failed flush attempts.
    pub failures: AtomicU64,
    /// Events whose increments were dropped (pending bound reached).
    pub dropped_events: AtomicU64,
    /// Events waiting to be flushed.
    pub pending_events: AtomicU64,
    /// Duration of the last successful flush, microseconds.
    pub last_flush_micros: AtomicU64,
}

#[derive(Default)]
struct Pending {
    set: BucketSet,
    events: u64,
}

/// Increments waiting for the flusher, shared with the metrics sink.
#[derive(Default)]
pub struct Increments {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    threshold: AtomicU64,
}

impl Increments {
    /// An empty set whose flusher is woken early at `threshold` events.
    pub fn new(threshold: u64) -> Arc<Self> {
        let i = Increments::default();
        i.threshold.store(threshold.max(1), Ordering::Relaxed);
        Arc::new(i)
    }

    /// Lets `f` add increments for `events` events (the metrics sink calls
    /// this once per batch).
    pub fn add(&self, events: u64, f: impl FnOnce(&mut BucketSet)) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p.set);
        p.events += events;
        if p.events >= self.threshold.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Takes everything waiting.
    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The task that writes increments to Redis.
pub struct Flusher {
    config: RedisMetricsConfig,
    increments: Arc<Increments>,
    stats: Arc<StoreStats>,
    hub_id: String,
}

impl Flusher {
    /// A flusher for `increments`, identified by a fresh random hub id.
    pub fn new(config: RedisMetricsConfig, increments: Arc<Increments>) -> Self {
        let hub_id = format!("{:016x}", random_u64());
        Flusher {
            config,
            increments,
            stats: Arc::new(StoreStats::default()),
            hub_id,
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown`, then makes a last flush (bounded by the
    /// timeout) and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut con: Option<ConnectionManager> = None;
        let mut pending = BucketSet::new();
        let mut pending_events = 0u64;
        let mut inflight: Option<(Flush, u64)> = None;
        let mut seq = 0u64;
        let mut backoff = Duration::from_millis(100);
        loop {
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tokio::time::sleep(self.config.flush_interval) => false,
                _ = self.increments.wake.notified() => false,
            };
            let taken = self.increments.take();
            self.absorb(&mut pending, &mut pending_events, taken);
            if inflight.is_none() && !pending.is_empty() {
                seq += 1;
                let buckets = std::mem::take(&mut pending)
                    .iter()
                    .map(|(g, s, b)| (g, s, b.clone()))
                    .collect();
                inflight = Some((
                    Flush {
                        hub_id: self.hub_id.clone(),
                        seq,
                        buckets,
                    },
                    std::mem::take(&mut pending_events),
                ));
            }
            self.stats.pending_events.store(
                pending_events + inflight.as_ref().map_or(0, |f| f.1),
                Ordering::Relaxed,
            );
            if inflight.is_none() && !self.stats.up.load(Ordering::Relaxed) && !stopping {
                // Nothing to write: still find out whether Redis is back, so
                // that health reports the truth.
                if self.try_ping(&mut con).await.is_ok() {
                    self.stats.up.store(true, Ordering::Relaxed);
                    tracing::info!("redis metrics: connected");
                }
            }
            if let Some((flush, _)) = &inflight {
                match self.try_flush(&mut con, flush).await {
                    Ok(()) => {
                        inflight = None;
                        backoff = Duration::from_millis(100);
                        self.stats
                            .pending_events
                            .store(pending_events, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        self.stats.up.store(false, Ordering::Relaxed);
                        if !stopping {
                            tracing::warn!("redis metrics: flush failed ({e}); keeping increments, retrying in {backoff:?}");
                            tokio::select! {
                                _ = shutdown.cancelled() => {}
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
            if stopping {
                // One last try for what came in meanwhile.
                if inflight.is_none() && !pending.is_empty() {
                    seq += 1;
                    let buckets = pending.iter().map(|(g, s, b)| (g, s, b.clone())).collect();
                    let flush = Flush {
                        hub_id: self.hub_id.clone(),
                        seq,
                        buckets,
                    };
                    let _ = self.try_flush(&mut con, &flush).await;
                } else if inflight.is_some() {
                    tracing::warn!(
                        "redis metrics: stopping with increments of {} events not written",
                        self.stats.pending_events.load(Ordering::Relaxed)
                    );
                }
                return;
            }
        }
    }

    /// Merges newly taken increments into the pending set, within the bound.
    fn absorb(&self, pending: &mut BucketSet, pending_events: &mut u64, taken: Pending) {
        if taken.events == 0 && taken.set.is_empty() {
            return;
        }
        // Minute buckets are not stored in Redis: drop them before they
        // pile up during an outage.
        let mut kept = taken.set;
        kept.clear_granularity(Granularity::Minute);
        let mut would_be = pending.len();
        for (g, s, _) in kept.iter() {
            if pending.get(g, s).is_none() {
                would_be += 1;
            }
        }
        if would_be > self.config.max_pending_buckets {
            self.stats
                .dropped_events
                .fetch_add(taken.events, Ordering::Relaxed);
            tracing::error!(
                "redis metrics: {} pending buckets; dropping the increments of {} events",
                pending.len(),
                taken.events
            );
            return;
        }
        pending.merge(&kept);
        *pending_events += taken.events;
    }

    async fn try_ping(&self, con: &mut Option<ConnectionManager>) -> Result<(), String> {
        self.connect(con).await?;
        let c = con.as_mut().expect("connected");
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(
            self.config.timeout,
            redis::cmd("PING").query_async::<String>(c),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn connect(&self, con: &mut Option<ConnectionManager>) -> Result<(), String> {
        if con.is_none() {
            let t = self.config.timeout;
            *con = Some(connect(&self.config.url, t, t).await?);
        }
        Ok(())
    }

    async fn try_flush(
        &self,
        con: &mut Option<ConnectionManager>,
        flush: &Flush,
    ) -> Result<(), String> {
        let started = std::time::Instant::now();
        self.connect(con).await?;
        let c = con.as_mut().expect("connected");
        let r = tokio::time::timeout(
            self.config.timeout * 2,
            store::apply(c, &self.config.keys, flush),
        )
        .await;
        self.stats.round_trips.fetch_add(2, Ordering::Relaxed);
        match r {
            Ok(Ok(())) => {
                self.stats.up.store(true, Ordering::Relaxed);
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .last_flush_micros
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// A connection manager for `url` (it reconnects by itself), made within
/// `connect_timeout`; each command then times out after `response_timeout`.
pub async fn connect(
    url: &str,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {url}: {e}"))?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(connect_timeout)
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1);
    tokio::time::timeout(
        connect_timeout * 2,
        ConnectionManager::new_with_config(client, cfg),
    )
    .await
    .map_err(|_| format!("cannot reach Redis at {url}: connection timed out"))?
    .map_err(|e| format!("cannot reach Redis at {url}: {e}"))
}

/// Checks that Redis answers (for start-up reporting).
pub async fn ping(url: &str, timeout: Duration) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let fut = async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}
