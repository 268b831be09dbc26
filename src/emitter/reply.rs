//! Where an ingest call waits for its batch: one wake-up per answer.
//!
//! The dispatcher calls a batch's [`Reply`](crate::pipeline::Reply) once the
//! events are with the sinks, but with a durable log the caller must then
//! wait for the log's watermark as well. Woken by the reply first, the
//! caller's task would mostly find the log not yet written and sleep again:
//! two wake-ups of a runtime thread per request, the second one from the
//! log's thread. Here the reply only stores the outcomes and wakes the
//! caller when nothing else will: when the watermark has already passed
//! them, when the batch was refused, or without a durable log. Otherwise
//! the log's watermark moving past them is the one wake-up.

use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use super::DURABLE_SLICE;
use crate::pipeline::{Outcome, Refused, Reply};

/// What the dispatcher answered for one batch.
type Answer = Result<Vec<Outcome>, Refused>;

enum State {
    Waiting,
    Answered(Answer),
    /// The reply was dropped uncalled (the pipeline stopped).
    Gone,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Option<State>>,
    notify: Notify,
}

impl Shared {
    fn set(&self, state: State) {
        let mut slot = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*slot, None | Some(State::Waiting)) {
            *slot = Some(state);
        }
    }

    fn take(&self) -> Option<Option<Answer>> {
        let mut slot = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match slot.take() {
            None | Some(State::Waiting) => {
                *slot = Some(State::Waiting);
                None
            }
            Some(State::Answered(a)) => Some(Some(a)),
            Some(State::Gone) => Some(None),
        }
    }
}

/// The dispatcher's side: fills the slot, and wakes the waiter unless the
/// log's watermark will.
struct Filler {
    shared: Arc<Shared>,
    watermark: Option<watch::Receiver<u64>>,
    /// The last id the log held at start: written before the watermark
    /// began, so a duplicate of it is never waited for.
    recovered: u64,
    answered: bool,
}

impl Filler {
    fn answer(mut self, answer: Answer) {
        // Whether the log's watermark still has to pass these events: its
        // move then wakes the waiter, which sees the answer stored here
        // first (stored before the watermark is read).
        let highest = match &answer {
            Ok(outcomes) => outcomes.iter().map(|o| o.id()).max(),
            Err(_) => None,
        };
        self.shared.set(State::Answered(answer));
        self.answered = true;
        let log_will_wake = match (highest, &self.watermark) {
            (Some(id), Some(wm)) => {
                id > self.recovered && *wm.borrow() < id && wm.has_changed().is_ok()
            }
            _ => false,
        };
        if !log_will_wake {
            self.shared.notify.notify_one();
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.set(State::Gone);
            self.shared.notify.notify_one();
        }
    }
}

/// The caller's side of one batch's answer.
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    watermark: Option<watch::Receiver<u64>>,
}

impl Waiter {
    /// A waiter and the [`Reply`] to queue with the batch. `watermark` is
    /// the durable log's, when acknowledgements wait for it; `recovered`
    /// the last id the log held at start.
    pub(crate) fn new(watermark: Option<watch::Receiver<u64>>, recovered: u64) -> (Waiter, Reply) {
        let shared = Arc::new(Shared::default());
        let filler = Filler {
            shared: shared.clone(),
            watermark: watermark.clone(),
            recovered,
            answered: false,
        };
        let reply: Reply = Box::new(move |answer| filler.answer(answer));
        let mut watermark = watermark;
        if let Some(wm) = &mut watermark {
            // Only moves after this point count as wake-ups.
            wm.mark_unchanged();
        }
        (Waiter { shared, watermark }, reply)
    }

    /// The dispatcher's answer, or `None` when the reply was dropped
    /// uncalled (the pipeline stopped).
    pub(crate) async fn answer(mut self) -> Option<Answer> {
        loop {
            if let Some(answer) = self.shared.take() {
                return answer;
            }
            let notified = self.shared.notify.notified();
            match &mut self.watermark {
                Some(wm) => {
                    // A slice at most: a reply that counted on a watermark
                    // that then stalls (the log failing) is still read.
                    let moved = tokio::time::timeout(DURABLE_SLICE, async {
                        tokio::select! {
                            () = notified => true,
                            changed = wm.changed() => changed.is_ok(),
                        }
                    })
                    .await;
                    if moved == Ok(false) {
                        // The log's thread is gone: only the reply wakes.
                        self.watermark = None;
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    fn accepted(id: u64) -> Answer {
        Ok(vec![Outcome::Accepted(id)])
    }

    /// Starts waiting on another task and lets it fall asleep; it returns
    /// the answer and how long it took. With the paused clock, time moves
    /// only when every task waits on a timer: an answer that took no time
    /// was woken by its reply or the watermark, one that took a slice was
    /// found by the fallback poll.
    async fn asleep(waiter: Waiter) -> JoinHandle<(Option<Answer>, Duration)> {
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let answer = waiter.answer().await;
            (answer, start.elapsed())
        });
        tokio::task::yield_now().await;
        task
    }

    #[tokio::test(start_paused = true)]
    async fn the_watermark_is_the_one_wake_up_when_the_log_is_behind() {
        let (tx, rx) = watch::channel(0u64);
        let (waiter, reply) = Waiter::new(Some(rx), 0);
        let task = asleep(waiter).await;
        reply(accepted(5));
        tx.send_replace(5);
        assert_eq!(task.await.unwrap(), (Some(accepted(5)), Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn the_reply_wakes_when_the_watermark_will_not() {
        // Already written, refused, no durable log, or a duplicate of a
        // recovered event: the reply itself wakes the caller.
        let cases: Vec<(Option<u64>, u64, Answer)> = vec![
            (Some(7), 0, accepted(5)),
            (Some(0), 0, Err(Refused::Failing("disk full".into()))),
            (None, 0, accepted(5)),
            (Some(0), 9, Ok(vec![Outcome::Duplicate(4)])),
        ];
        for (mark, recovered, answer) in cases {
            let (_tx, rx) = watch::channel(mark.unwrap_or(0));
            let (waiter, reply) = Waiter::new(mark.map(|_| rx), recovered);
            let task = asleep(waiter).await;
            reply(answer.clone());
            let (got, took) = task.await.unwrap();
            assert_eq!(got, Some(answer.clone()));
            assert_eq!(took, Duration::ZERO, "{answer:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_dropped_uncalled_is_no_answer_at_once() {
        let (_tx, rx) = watch::channel(0u64);
        let (waiter, reply) = Waiter::new(Some(rx), 0);
        let task = asleep(waiter).await;
        drop(reply);
        assert_eq!(task.await.unwrap(), (None, Duration::ZERO));
    }

    /// The reply does not wake a caller whose events the log has yet to
    /// write; if the watermark then stalls (the log started failing), the
    /// answer still gets out within a slice, and the caller's
    /// `wait_durable` reports the failure.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_watermark_still_lets_the_answer_out() {
        let (_tx, rx) = watch::channel(0u64);
        let (waiter, reply) = Waiter::new(Some(rx), 0);
        let task = asleep(waiter).await;
        reply(accepted(3));
        assert_eq!(task.await.unwrap(), (Some(accepted(3)), DURABLE_SLICE));
    }
}
