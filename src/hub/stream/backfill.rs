//! Resuming from ids older than the ring: read them back from the JSONL log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::filter::Filter;
use super::ring::{self, StreamItem};
use super::{gap_message, record_message, send_timed, text, Tx};
use crate::hub::SharedState;
use crate::logfile;

enum Item {
    Records(Vec<ring::Item>),
    Gap(u64, u64),
}

/// Sends the events with ids after `since` that the ring no longer holds,
/// from the log, with `stream_gap` notices for ids the log lacks too.
/// Returns the cursor from which the ring takes over.
pub(super) async fn from_log(
    state: &SharedState,
    tx: &mut Tx,
    since: u64,
    filter: &Filter,
    limit: Duration,
) -> Result<u64, ()> {
    let upto = match state.ring.oldest_id() {
        Some(oldest) => oldest - 1,
        None => state.ring.last_id(),
    };
    if since >= upto {
        return Ok(since);
    }
    let Some(log) = state.config.log.clone() else {
        send_timed(
            tx,
            text(gap_message(since + 1, upto, upto, "not_retained")),
            limit,
        )
        .await?;
        return Ok(upto);
    };
    // Everything accepted must be in the file before it is read back.
    state.emitter.flush_async().await;
    let (items_tx, mut items_rx) = tokio::sync::mpsc::channel::<Item>(4);
    let filter = filter.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut expected = since + 1;
        let mut chunk = Vec::with_capacity(256);
        for path in logfile::log_files(&log.dir, &log.file_name) {
            // Skip whole files that end before the wanted range.
            if let Ok(Some(last)) = logfile::last_event(&path) {
                if last.id < expected {
                    continue;
                }
            }
            let mut stop = false;
            let _ = logfile::read_events(
                &path,
                |event| {
                    if stop || event.id < expected || event.id > upto {
                        stop |= event.id > upto;
                        return;
                    }
                    if event.id > expected {
                        let _ = items_tx.blocking_send(Item::Gap(expected, event.id - 1));
                    }
                    expected = event.id + 1;
                    if filter.matches(&event) {
                        chunk.push(Arc::new(StreamItem::from_event(&event)));
                        if chunk.len() == chunk.capacity() {
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(256));
                            stop |= items_tx.blocking_send(Item::Records(full)).is_err();
                        }
                    }
                },
                |_| {},
            );
            if stop {
                break;
            }
        }
        if !chunk.is_empty() {
            let _ = items_tx.blocking_send(Item::Records(chunk));
        }
        if expected <= upto {
            let _ = items_tx.blocking_send(Item::Gap(expected, upto));
        }
    });
    while let Some(item) = items_rx.recv().await {
        match item {
            Item::Gap(from, to) => {
                send_timed(tx, text(gap_message(from, to, to, "not_retained")), limit).await?
            }
            Item::Records(records) => {
                for r in &records {
                    send_timed(tx, record_message(r), limit).await?;
                }
            }
        }
    }
    let _ = reader.await;
    Ok(upto)
}

/// Retained events after `since` for `/api/events`, as wire messages:
/// from the log for ids older than the ring, then from the ring.
pub fn collect(state: &SharedState, since: u64, limit: usize, filter: &Filter) -> Vec<Bytes> {
    let mut out = Vec::new();
    let read = state
        .ring
        .read_after(since, limit, |r| filter.matches_item(r));
    if read.missing.is_some() {
        if let Some(log) = &state.config.log {
            let upto = state.ring.oldest_id().map_or(u64::MAX, |o| o - 1);
            for path in logfile::log_files(&log.dir, &log.file_name) {
                if out.len() >= limit {
                    break;
                }
                if let Ok(Some(last)) = logfile::last_event(&path) {
                    if last.id <= since {
                        continue;
                    }
                }
                let _ = logfile::read_events(
                    &path,
                    |e| {
                        if e.id > since && e.id <= upto && out.len() < limit && filter.matches(&e) {
                            out.push(Bytes::from(StreamItem::from_event(&e).message));
                        }
                    },
                    |_| {},
                );
            }
        }
    }
    let room = limit.saturating_sub(out.len());
    out.extend(
        read.records
            .iter()
            .take(room)
            .map(|r| Bytes::from(r.message.clone())),
    );
    out
}
