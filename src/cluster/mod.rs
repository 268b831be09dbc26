//! Many hubs, one stream: a cluster of hubs on a Redis Stream
//! (`serve --cluster redis://HOST:PORT[/DB]`).
//!
//! # Design
//!
//! The hubs given the same Redis URL and stream key form one cluster. Redis
//! is the one place where ids are given and duplicates dropped; every hub
//! is a reader of the shared stream, so every hub's ring, JSONL log,
//! metrics, alerts and stream readers see the same events with the same
//! ids in the same order.
//!
//! ```text
//!  ingest (HTTP, /ingest, OTLP, Redis bridge, in process)
//!     │ validate (the hub's schema), as without a cluster
//!     ▼
//!  dispatcher ── in a cluster it gives no id: Outbox ──► appender task (append.rs)
//!     ▲                                                    │ one round trip per batch:
//!     │                                                    │ EVALSHA of the Lua script
//!     │                                                    │ (script.rs): dedup, ids, XADD
//!     │                                                    ▼
//!     │                                             Redis: the stream
//!     │  Command::Tailed (events with their ids)           │
//!     └──────────── tail task (tail.rs) ◄── XREAD BLOCK ──┘
//!                   from the hub's last logged id
//! ```
//!
//! The ingest answer is sent once the script has run: Redis holds the
//! events (as far as its persistence says, see the README), and the ids
//! and duplicate outcomes in the answer are the script's. The hub's own
//! log, metrics and readers get the events from its tail, moments later.
//!
//! # Wire layout in Redis
//!
//! With the stream key `K` (default [`DEFAULT_STREAM_KEY`],
//! `--cluster-stream-key`):
//!
//! | key            | type   | what                                                            |
//! |----------------|--------|-----------------------------------------------------------------|
//! | `K`            | stream | one entry per event: entry id `<id>-0`, field `e` = the wire line (`{"id":…}`, no `\n`), field `h` = the origin id of the hub that appended it |
//! | `K:seq`        | string | the last id given (`INCR`)                                      |
//! | `K:epoch`      | string | the cluster's stream epoch, created once (`SET NX`)             |
//! | `K:dedup:<event_id>` | string | the id the first event with this `event_id` got; TTL `--cluster-dedup-ttl` |
//! | `K:times`      | zset   | with retention by age only: score = ms, member = first id appended in that second |
//! | `K:alerts`     | string | the alerts lease: origin id of the hub that emits alerts and notifies ([`lease`]), TTL 3 s |
//!
//! **Entry id = event id.** The entry of event 42 is `42-0`: ids strictly
//! increase (one `INCR` in an atomic script), so explicit entry ids are
//! accepted by `XADD`, and a hub that restarts resumes its tail with
//! `XREAD … STREAMS K <last logged id>-0`, no mapping to store. The cost:
//! entry ids carry no time, so retention by age (`MINID`) goes through
//! `K:times`, one mark per second of appends, and trims to the newest mark
//! older than the age (it keeps at most a second more than asked).
//! Retention by count is `XTRIM MAXLEN ~` after each append.
//!
//! **Epoch.** `K:epoch` is made once by the first hub (`SET NX` of a fresh
//! random epoch) and read by every hub at start: it is each hub's stream
//! epoch, so `?since=ID&epoch=E` resumes on any hub. The script refuses to
//! append when `K:epoch` is not the hub's (Redis lost its data, or was
//! emptied): new ids would reuse old ones. The hub then answers 503 and
//! `/health` says why. A hub whose log holds another epoch's history
//! refuses to start (its ids would clash).
//!
//! **Counted once.** Each entry names the process that appended it (field
//! `h`, a random origin id per process). With Redis bucket metrics, a
//! hub's engine sees every event (so task state is whole) but records the
//! bucket increments of its own events only ([`own`]): each event is
//! counted once in the cluster.
//!
//! **Faults.** Redis unreachable: the append fails at once and the batch
//! is refused (503, `Retry-After`); the tail retries from its last id. A
//! member restarted while Redis is away starts on its log's epoch
//! ([`Cluster::offline`]); the script and the tail check the epoch on every
//! connection, so another history is refused, never mixed in.
//!
//! Limits of this slice: the dedup keys are computed inside the script, so
//! it runs on one Redis (or a primary with replicas), not on Redis Cluster;
//! an event appended whose answer was lost (a timeout) is stored, and its
//! retry without an `event_id` is stored again (at-least-once; with an
//! `event_id`, exactly once within the dedup TTL). In-process events with
//! no one to answer (alerts fed back) that Redis refuses are only counted
//! (`append_failures`). Alerts, budgets and notifications fire once per
//! cluster through a lease ([`lease`]); in a failover (≤ 3 s) some may be
//! lost, or, with a holder stalled past its lease, doubled. Needs Redis ≥ 5 (the script calls
//! `TIME` after writes: effects replication).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

pub mod append;
pub mod keys;
pub mod lease;
pub mod own;
pub mod script;
pub mod tail;

pub use keys::Keys;

/// The stream key when none is given.
pub const DEFAULT_STREAM_KEY: &str = "agentpulse:events";

/// Entries kept in the stream when no other count is given.
pub const DEFAULT_MAX_LEN: u64 = 1_000_000;

/// How long an `event_id` is remembered when no other time is given.
pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(3600);

/// How long one Redis call may take before the hub gives up on it.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a cluster member.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// The stream's key; the other keys are named after it.
    pub stream_key: String,
    /// Entries kept (`XTRIM MAXLEN ~`); 0: no limit by count.
    pub max_len: u64,
    /// Age of the oldest entries kept (`XTRIM MINID`); `None`: no limit by age.
    pub max_age: Option<Duration>,
    /// How long an `event_id` is remembered for dedup.
    pub dedup_ttl: Duration,
}

impl ClusterConfig {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            stream_key: DEFAULT_STREAM_KEY.into(),
            max_len: DEFAULT_MAX_LEN,
            max_age: None,
            dedup_ttl: DEFAULT_DEDUP_TTL,
        }
    }
}

/// Why the cluster could not be joined or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL is not a Redis URL.
    #[error("--cluster: bad Redis URL {url}: {source}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered with an error, or could not be reached.
    #[error("the cluster's Redis at {url}: {source}")]
    Redis {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: redis::RedisError,
    },
    /// Redis did not answer in time.
    #[error("the cluster's Redis at {url} did not answer within {} s", CALL_TIMEOUT.as_secs())]
    Timeout {
        /// The URL.
        url: String,
    },
    /// The stream's epoch in Redis is not the one this hub joined with:
    /// Redis lost or dropped the cluster's history.
    #[error("the cluster's history in Redis is gone ({key} is no longer {expected}): Redis lost its data or was emptied; restart the hubs with empty logs to start a new history")]
    HistoryLost {
        /// The epoch key.
        key: String,
        /// The epoch this hub joined with.
        expected: String,
    },
    /// An answer of Redis had an unexpected shape.
    #[error("the cluster's Redis gave an unexpected answer: {0}")]
    Protocol(String),
}

/// Counters and state of a cluster member, for `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    /// Whether the last append reached Redis.
    pub append_up: AtomicBool,
    /// Whether the tail is connected and reading.
    pub tail_up: AtomicBool,
    /// Set once the script found another epoch: nothing is appended since.
    pub history_lost: AtomicBool,
    /// Events appended by this hub (given an id).
    pub appended: AtomicU64,
    /// Events this hub sent that Redis knew by their `event_id`.
    pub duplicates: AtomicU64,
    /// Batches refused because Redis could not be reached (503s).
    pub append_failures: AtomicU64,
    /// Round trips of the appender (one per batch).
    pub append_round_trips: AtomicU64,
    /// Events read from the stream by the tail.
    pub tailed: AtomicU64,
    /// `XREAD` calls of the tail.
    pub tail_reads: AtomicU64,
    /// Events the tail could not read because the stream no longer held
    /// them (behind its retention), or whose lines did not parse.
    pub missed: AtomicU64,
    /// The last id the tail read.
    pub tail_last_id: AtomicU64,
    /// Whether this hub holds the alerts lease ([`lease`]).
    pub alerts_leader: AtomicBool,
    /// The last error met (append or tail), while failing.
    pub last_error: Mutex<Option<String>>,
}

impl ClusterStatus {
    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Why the cluster makes the hub degraded, if it does.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        let err = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let why = err.unwrap_or_else(|| "not connected".into());
        if self.history_lost.load(Ordering::Relaxed) {
            out.push(format!("cluster: {why}"));
        } else if !self.append_up.load(Ordering::Relaxed) {
            out.push(format!("cluster: ingest refused (503): {why}"));
        } else if !self.tail_up.load(Ordering::Relaxed) {
            out.push(format!("cluster: not reading the shared stream: {why}"));
        }
        let missed = self.missed.load(Ordering::Relaxed);
        if missed > 0 {
            out.push(format!(
                "cluster: {missed} events of the stream were not read (behind its retention, or unreadable)"
            ));
        }
        out
    }

    /// The counters as JSON (the `/health` component).
    pub fn to_json(&self) -> Value {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "status": if self.reasons().is_empty() { "ok" } else { "degraded" },
            "append_up": self.append_up.load(Ordering::Relaxed),
            "tail_up": self.tail_up.load(Ordering::Relaxed),
            "history_lost": self.history_lost.load(Ordering::Relaxed),
            "appended": r(&self.appended),
            "duplicates": r(&self.duplicates),
            "append_failures": r(&self.append_failures),
            "append_round_trips": r(&self.append_round_trips),
            "tailed": r(&self.tailed),
            "tail_reads": r(&self.tail_reads),
            "missed": r(&self.missed),
            "tail_last_id": r(&self.tail_last_id),
            "alerts_leader": self.alerts_leader.load(Ordering::Relaxed),
            "error": *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

/// A joined cluster: its settings, Redis client, epoch and status. Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The settings.
    pub config: Arc<ClusterConfig>,
    /// The cluster's stream epoch (from `K:epoch`).
    pub epoch: String,
    /// Counters and state.
    pub status: Arc<ClusterStatus>,
    /// This process's origin id (random): field `h` of what it appends.
    pub origin: String,
    /// The ids this process appended, as its tail reads them back (for
    /// counting Redis bucket increments once, [`own`]).
    pub own: Arc<own::OwnIds>,
    keys: Arc<Keys>,
    client: redis::Client,
}

impl Cluster {
    /// Joins the cluster: reads its epoch from Redis, creating it if this
    /// is the first hub. Fails when Redis cannot be reached.
    pub async fn join(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|source| ClusterError::Url {
                url: config.url.clone(),
                source,
            })?;
        let keys = Keys::new(&config.stream_key);
        let url = config.url.clone();
        let mut con = connect(&client, &url).await?;
        let fresh = crate::pipeline::epoch::fresh();
        let call = async {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&keys.epoch).arg(&fresh).arg("NX");
            let _created: Option<String> = cmd.query_async(&mut con).await?;
            redis::cmd("GET")
                .arg(&keys.epoch)
                .query_async::<Option<String>>(&mut con)
                .await
        };
        let epoch = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => return Err(ClusterError::Timeout { url }),
            Ok(Err(source)) => return Err(ClusterError::Redis { url, source }),
            Ok(Ok(None)) => {
                return Err(ClusterError::Protocol(format!(
                    "{} vanished right after SET NX",
                    keys.epoch
                )))
            }
            Ok(Ok(Some(e))) => e,
        };
        let status = ClusterStatus {
            append_up: AtomicBool::new(true),
            ..ClusterStatus::default()
        };
        Ok(Cluster {
            config: Arc::new(config),
            epoch,
            status: Arc::new(status),
            origin: crate::pipeline::epoch::fresh(),
            own: Arc::new(own::OwnIds::default()),
            keys: Arc::new(keys),
            client,
        })
    }

    /// A member that could not reach Redis at start but has a history of
    /// the cluster in its log (`epoch` stored beside it): it serves what it
    /// has and refuses ingest until Redis answers. Safe because the append
    /// script and the tail check Redis's epoch against `epoch` (another
    /// history is refused, never mixed in).
    pub fn offline(config: ClusterConfig, epoch: String) -> Result<Cluster, ClusterError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|source| ClusterError::Url {
                url: config.url.clone(),
                source,
            })?;
        let keys = Keys::new(&config.stream_key);
        Ok(Cluster {
            config: Arc::new(config),
            epoch,
            status: Arc::new(ClusterStatus::default()),
            origin: crate::pipeline::epoch::fresh(),
            own: Arc::new(own::OwnIds::default()),
            keys: Arc::new(keys),
            client,
        })
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}

/// A new multiplexed connection, within [`CALL_TIMEOUT`].
pub(crate) async fn connect(
    client: &redis::Client,
    url: &str,
) -> Result<redis::aio::MultiplexedConnection, ClusterError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(CALL_TIMEOUT)
        .set_response_timeout(CALL_TIMEOUT);
    match tokio::time::timeout(
        CALL_TIMEOUT,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Err(_) => Err(ClusterError::Timeout { url: url.into() }),
        Ok(Err(source)) => Err(ClusterError::Redis {
            url: url.into(),
            source,
        }),
        Ok(Ok(c)) => Ok(c),
    }
}

/// Records the cluster's counters in the Prometheus exposition (called by
/// `/metrics` while its recorder is installed).
pub fn prometheus(status: &ClusterStatus) {
    use ::metrics::{counter, describe_counter, describe_gauge, gauge};
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let up = |b: &AtomicBool| if b.load(Ordering::Relaxed) { 1.0 } else { 0.0 };
    describe_gauge!(
        "agentpulse_cluster_append_up",
        "1 when the last append to the cluster's Redis succeeded."
    );
    gauge!("agentpulse_cluster_append_up").set(up(&status.append_up));
    describe_gauge!(
        "agentpulse_cluster_tail_up",
        "1 when the tail reads the cluster's stream."
    );
    gauge!("agentpulse_cluster_tail_up").set(up(&status.tail_up));
    let counters: [(&'static str, &'static str, &AtomicU64); 6] = [
        (
            "agentpulse_cluster_appended_total",
            "Events this hub appended to the cluster's stream.",
            &status.appended,
        ),
        (
            "agentpulse_cluster_duplicates_total",
            "Events this hub sent that the cluster knew by event_id.",
            &status.duplicates,
        ),
        (
            "agentpulse_cluster_append_failures_total",
            "Batches refused because the cluster's Redis could not store them.",
            &status.append_failures,
        ),
        (
            "agentpulse_cluster_append_round_trips_total",
            "Round trips of appends to Redis.",
            &status.append_round_trips,
        ),
        (
            "agentpulse_cluster_tailed_total",
            "Events read from the cluster's stream.",
            &status.tailed,
        ),
        (
            "agentpulse_cluster_missed_total",
            "Events of the stream this hub could not read (behind its retention).",
            &status.missed,
        ),
    ];
    for (name, help, value) in counters {
        describe_counter!(name, help);
        counter!(name).absolute(r(value));
    }
}
