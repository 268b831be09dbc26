//! The appender: the dispatcher's [`Outbox`] in a cluster. Batches wait in
//! a bounded channel; one task takes every batch waiting (up to
//! [`MAX_EVENTS_PER_ROUND_TRIP`] events), appends them in one round trip
//! ([`super::script`]) and answers each batch with the script's outcomes.
//! When Redis cannot be reached the batches are refused at once (the
//! ingest answer is a 503 with `Retry-After`): nothing is acknowledged that
//! Redis does not hold.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::script::{AppendScript, Appended, Prepared};
use super::{Cluster, ClusterError, CALL_TIMEOUT};
use crate::event::NewEvent;
use crate::pipeline::{Outbox, Outcome, Refused, Reply};

/// Batches waiting for the appender, at most.
const QUEUE: usize = 256;

/// Most events appended in one round trip.
pub const MAX_EVENTS_PER_ROUND_TRIP: usize = 16_384;

/// A batch on its way to Redis.
struct Pending {
    events: Vec<NewEvent>,
    reply: Option<Reply>,
}

/// The dispatcher's end: hands batches to the appender task.
pub struct ClusterOutbox {
    tx: mpsc::Sender<Pending>,
}

impl Outbox for ClusterOutbox {
    fn send(&self, events: Vec<NewEvent>, reply: Option<Reply>) {
        // On the dispatcher thread (not async): waiting for room is the
        // backpressure of a slow Redis.
        if let Err(mpsc::error::SendError(p)) = self.tx.blocking_send(Pending { events, reply }) {
            if let Some(reply) = p.reply {
                reply(Err(Refused::Failing(
                    "cluster: the appender has stopped".into(),
                )));
            }
        }
    }
}

/// Starts the appender task on the current runtime; returns the outbox
/// to give the pipeline ([`crate::EmitterBuilder::cluster`]). The task
/// ends when the outbox is dropped (the pipeline stopped).
pub fn start(cluster: &Cluster) -> ClusterOutbox {
    let (tx, rx) = mpsc::channel(QUEUE);
    let script = AppendScript::new(
        cluster.keys().clone(),
        cluster.epoch.clone(),
        cluster.origin.clone(),
        &cluster.config,
    );
    tokio::spawn(run(cluster.clone(), script, rx));
    ClusterOutbox { tx }
}

async fn run(cluster: Cluster, script: AppendScript, mut rx: mpsc::Receiver<Pending>) {
    let status = cluster.status.clone();
    let url = cluster.config.url.clone();
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    let mut taken: Vec<Pending> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut n = first.events.len();
        taken.push(first);
        while n < MAX_EVENTS_PER_ROUND_TRIP {
            match rx.try_recv() {
                Ok(p) => {
                    n += p.events.len();
                    taken.push(p);
                }
                Err(_) => break,
            }
        }
        let now = crate::clock::system().now();
        let mut prepared = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(taken.len());
        for p in taken.drain(..) {
            replies.push((p.events.len(), p.reply));
            prepared.extend(p.events.into_iter().map(|e| Prepared::new(e, now)));
        }
        let result = append(&cluster, &script, &url, &mut con, &prepared).await;
        status.append_round_trips.fetch_add(1, Ordering::Relaxed);
        answer(&status, result, replies);
    }
}

/// One round trip, connecting first when needed.
async fn append(
    cluster: &Cluster,
    script: &AppendScript,
    url: &str,
    con: &mut Option<redis::aio::MultiplexedConnection>,
    events: &[Prepared],
) -> Result<Vec<Appended>, ClusterError> {
    if cluster.status.history_lost.load(Ordering::Relaxed) {
        return Err(ClusterError::HistoryLost {
            key: cluster.keys().epoch.clone(),
            expected: cluster.epoch.clone(),
        });
    }
    let c = match con {
        Some(c) => c,
        None => con.insert(super::connect(&cluster.client, url).await?),
    };
    let result = match tokio::time::timeout(CALL_TIMEOUT, script.append(c, url, events)).await {
        Err(_) => Err(ClusterError::Timeout { url: url.into() }),
        Ok(r) => r,
    };
    if let Err(e) = &result {
        if !matches!(e, ClusterError::HistoryLost { .. }) {
            // A fresh connection next time: this one may be broken.
            *con = None;
        }
    }
    result
}

/// Answers each batch, in order, and keeps the counters.
fn answer(
    status: &Arc<super::ClusterStatus>,
    result: Result<Vec<Appended>, ClusterError>,
    replies: Vec<(usize, Option<Reply>)>,
) {
    match result {
        Ok(answers) => {
            if !status.append_up.swap(true, Ordering::Relaxed) {
                tracing::info!("cluster: appending again");
            }
            status.set_error(None);
            let mut answers = answers.into_iter();
            for (n, reply) in replies {
                let outcomes: Vec<Outcome> = answers
                    .by_ref()
                    .take(n)
                    .map(|a| match a {
                        Appended::New(id) => {
                            status.appended.fetch_add(1, Ordering::Relaxed);
                            Outcome::Accepted(id)
                        }
                        Appended::Duplicate(id) => {
                            status.duplicates.fetch_add(1, Ordering::Relaxed);
                            Outcome::Duplicate(id)
                        }
                    })
                    .collect();
                if let Some(reply) = reply {
                    reply(Ok(outcomes));
                }
            }
        }
        Err(e) => {
            if matches!(e, ClusterError::HistoryLost { .. }) {
                status.history_lost.store(true, Ordering::Relaxed);
            }
            if status.append_up.swap(false, Ordering::Relaxed) {
                tracing::error!("cluster: cannot append: {e}");
            }
            let why = e.to_string();
            status.set_error(Some(why.clone()));
            status
                .append_failures
                .fetch_add(replies.len() as u64, Ordering::Relaxed);
            for (_, reply) in replies {
                if let Some(reply) = reply {
                    reply(Err(Refused::Failing(format!(
                        "cluster: not stored, retry with the same event_id: {why}"
                    ))));
                }
            }
        }
    }
}
