//! The tail: each hub reads the shared stream (`XREAD BLOCK` from its last
//! id) and hands what it reads to its own pipeline
//! ([`crate::Emitter::feed_tailed`]), which writes the log, counts the
//! metrics, runs the alerts and wakes the stream readers as for events it
//! took itself.
//!
//! It starts from the last id of the hub's log (entry id `<id>-0`, see
//! [`super`]), so a hub that starts late or restarts catches up. Entries
//! the stream no longer holds (trimmed by its retention before this hub
//! read them) show as a jump in the ids: they are counted as missed,
//! `/health` says so, and readers crossing the jump get a `not_retained`
//! gap (`hub::stream::cursor`: in a cluster every id is an event). When Redis cannot be reached the tail retries (from
//! 100 ms up to 1 s apart) from where it was.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError};
use crate::emitter::Emitter;
use crate::event::{Event, Record, SharedRecord};

/// Most entries taken by one `XREAD`.
const READ_COUNT: usize = 4096;

/// How long one `XREAD` blocks when there is nothing new (ms).
const BLOCK_MS: u64 = 1000;

/// Reads the stream after `last_id` into `emitter` until `shutdown`.
pub async fn run(
    cluster: Cluster,
    emitter: Emitter,
    mut last_id: u64,
    shutdown: CancellationToken,
) {
    let status = cluster.status.clone();
    let url = cluster.config.url.clone();
    status.tail_last_id.store(last_id, Ordering::Relaxed);
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let read = async {
            let c = match &mut con {
                Some(c) => c,
                None => {
                    let mut c = super::connect(&cluster.client, &url).await?;
                    check_epoch(&mut c, &cluster).await?;
                    con.insert(c)
                }
            };
            read_after(c, &cluster, last_id).await
        };
        let entries = tokio::select! {
            () = shutdown.cancelled() => return,
            r = read => r,
        };
        status.tail_reads.fetch_add(1, Ordering::Relaxed);
        let entries = match entries {
            Ok(e) => e,
            Err(e @ ClusterError::HistoryLost { .. }) => {
                // Another history's ids would be taken for this one's.
                tracing::error!("cluster: {e}; the tail stops");
                status.history_lost.store(true, Ordering::Relaxed);
                status.tail_up.store(false, Ordering::Relaxed);
                status.set_error(Some(e.to_string()));
                return;
            }
            Err(e) => {
                con = None;
                if status.tail_up.swap(false, Ordering::Relaxed) {
                    tracing::error!("cluster: cannot read the shared stream: {e}");
                }
                status.set_error(Some(e.to_string()));
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if !status.tail_up.swap(true, Ordering::Relaxed) {
            tracing::info!("cluster: reading the shared stream after id {last_id}");
            if status.append_up.load(Ordering::Relaxed) {
                status.set_error(None);
            }
        }
        if entries.is_empty() {
            continue;
        }
        let fed_up_to = last_id;
        let records = to_records(&cluster, entries, &mut last_id);
        if let (Some(first), Some(index)) = (records.first(), emitter.log_index()) {
            if first.event.id > fed_up_to + 1 {
                // Behind the retention: the log starts past the gap.
                index.skip(fed_up_to + 1, first.event.id);
            }
        }
        status.tail_last_id.store(last_id, Ordering::Relaxed);
        if records.is_empty() {
            continue;
        }
        status
            .tailed
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        if emitter.feed_tailed(records).await.is_err() {
            // The pipeline has stopped: nothing more to feed.
            return;
        }
    }
}

/// The events of `entries` (ids after `last_id`, in order), advancing
/// `last_id`; jumps in the ids and unreadable lines are counted as missed.
fn to_records(cluster: &Cluster, entries: Vec<Entry>, last_id: &mut u64) -> Vec<SharedRecord> {
    let origin = cluster.origin.as_bytes();
    to_records_of(&cluster.status, &cluster.own, origin, entries, last_id)
}

/// [`to_records`], given the parts of the cluster it needs.
fn to_records_of(
    status: &super::ClusterStatus,
    own: &super::own::OwnIds,
    origin: &[u8],
    entries: Vec<Entry>,
    last_id: &mut u64,
) -> Vec<SharedRecord> {
    let mut records = Vec::with_capacity(entries.len());
    for Entry {
        id,
        line,
        origin: entry_origin,
    } in entries
    {
        if id <= *last_id {
            continue;
        }
        if id > *last_id + 1 {
            let missed = id - *last_id - 1;
            status.missed.fetch_add(missed, Ordering::Relaxed);
            tracing::warn!(
                "cluster: ids {}..={} are no longer in the shared stream (its retention); this hub does not have them",
                *last_id + 1,
                id - 1
            );
        }
        *last_id = id;
        if entry_origin == origin {
            own.insert(id);
        }
        match Event::from_wire(&line) {
            Ok(event) if event.id == id => {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(&line);
                buf.push(b'\n');
                records.push(Arc::new(Record {
                    event,
                    line: Bytes::from(buf),
                }));
            }
            Ok(event) => {
                status.missed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "cluster: stream entry {id}-0 holds event {}; skipped",
                    event.id
                );
            }
            Err(e) => {
                status.missed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("cluster: stream entry {id}-0 is not an event: {e}; skipped");
            }
        }
    }
    records
}

/// Fails with [`ClusterError::HistoryLost`] when the stream's epoch in
/// Redis is not the one this hub joined with (checked on every connection:
/// a Redis restarted empty, then joined by a new hub, has a new history).
async fn check_epoch(
    con: &mut redis::aio::MultiplexedConnection,
    cluster: &Cluster,
) -> Result<(), ClusterError> {
    let epoch: Option<String> = redis::cmd("GET")
        .arg(&cluster.keys().epoch)
        .query_async(con)
        .await
        .map_err(|source| ClusterError::Redis {
            url: cluster.config.url.clone(),
            source,
        })?;
    if epoch.as_deref() == Some(cluster.epoch.as_str()) {
        Ok(())
    } else {
        Err(ClusterError::HistoryLost {
            key: cluster.keys().epoch.clone(),
            expected: cluster.epoch.clone(),
        })
    }
}

/// One `XREAD BLOCK` after `last_id`.
async fn read_after(
    con: &mut redis::aio::MultiplexedConnection,
    cluster: &Cluster,
    last_id: u64,
) -> Result<Vec<Entry>, ClusterError> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(BLOCK_MS)
        .arg("STREAMS")
        .arg(&cluster.keys().stream)
        .arg(format!("{last_id}-0"));
    let value: Value = cmd
        .query_async(con)
        .await
        .map_err(|source| ClusterError::Redis {
            url: cluster.config.url.clone(),
            source,
        })?;
    parse_xread(value)
}

/// One entry of the stream.
#[derive(Debug, PartialEq)]
struct Entry {
    id: u64,
    line: Bytes,
    /// The origin id of the hub that appended it.
    origin: Vec<u8>,
}

/// The entries of an `XREAD` reply for one stream (RESP2 or RESP3 shape).
fn parse_xread(value: Value) -> Result<Vec<Entry>, ClusterError> {
    let bad = |what: &str| ClusterError::Protocol(format!("XREAD: {what}"));
    let streams = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => Ok(kv.swap_remove(1)),
                _ => Err(bad("a stream is not [key, entries]")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(kvs) => kvs.into_iter().map(|(_, v)| v).collect(),
        _ => return Err(bad("not an array")),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            return Err(bad("entries are not an array"));
        };
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                return Err(bad("an entry is not [id, fields]"));
            };
            if parts.len() != 2 {
                return Err(bad("an entry is not [id, fields]"));
            }
            let fields = parts.pop().unwrap_or(Value::Nil);
            let id = match parts.pop() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                Some(Value::SimpleString(s)) => s,
                _ => return Err(bad("an entry id is not a string")),
            };
            let id: u64 = id
                .split_once('-')
                .and_then(|(ms, _)| ms.parse().ok())
                .ok_or_else(|| bad("an entry id is not <id>-0"))?;
            let Value::Array(fields) = fields else {
                return Err(bad("fields are not an array"));
            };
            let (mut line, mut origin) = (None, None);
            let mut it = fields.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
                    match &k[..] {
                        b"e" => line = Some(Bytes::from(v)),
                        b"h" => origin = Some(v),
                        _ => {}
                    }
                }
            }
            let line = line.ok_or_else(|| bad("an entry has no field e"))?;
            out.push(Entry {
                id,
                line,
                origin: origin.unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_entries_and_counts_jumps() {
        let line = r#"{"id":3,"event_type":"note","timestamp":1.0,"payload":{}}"#;
        let entry = |id: &str, h: &str| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![bulk("e"), bulk(line), bulk("h"), bulk(h)]),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("agentpulse:events"),
            Value::Array(vec![entry("3-0", "me")]),
        ])]);
        let entries = parse_xread(reply).unwrap();
        assert_eq!(
            entries,
            vec![Entry {
                id: 3,
                line: Bytes::from(line),
                origin: b"me".to_vec()
            }]
        );
        assert!(parse_xread(Value::Nil).unwrap().is_empty());
        let status = super::super::ClusterStatus::default();
        let own = super::super::own::OwnIds::default();
        own.enable();
        let mut last = 1;
        let recs = to_records_of(&status, &own, b"me", entries, &mut last);
        assert_eq!((recs.len(), last), (1, 3));
        assert_eq!(&recs[0].message()[..], line.as_bytes());
        assert_eq!(status.missed.load(Ordering::Relaxed), 1, "id 2 was missed");
        assert!(own.take(3), "appended by this hub");
    }
}
