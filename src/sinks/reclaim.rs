//! Frees spent batches on a thread of their own.
//!
//! An event's payload is a JSON map built on the emitting thread: a dozen
//! or more small allocations. Freeing them from another thread costs the
//! allocator ~30 ns each, ~0.5 µs per event: more than the metrics engine
//! spends on it. Whichever sink finished a batch last used to pay that,
//! and the last was the slowest, so the pipeline's slowest thread got
//! slower still. Sinks hand their spent batches here instead. When the
//! channel is full the sink frees the batch itself: handing over never
//! waits.

use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

use super::thread::{spawn_thread, SpawnError};

/// The sending side: cheap to clone, one per sink.
#[derive(Debug)]
pub struct Reclaimer<T: Send + 'static> {
    tx: SyncSender<T>,
}

impl<T: Send + 'static> Clone for Reclaimer<T> {
    fn clone(&self) -> Self {
        Reclaimer {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static> Reclaimer<T> {
    /// Starts the thread `agentpulse-free`, with room for `capacity` values
    /// waiting. It ends once every `Reclaimer` is dropped and what they
    /// handed over is freed; join the handle to wait for that.
    pub fn spawn(capacity: usize) -> Result<(Reclaimer<T>, JoinHandle<()>), SpawnError> {
        let (tx, rx) = mpsc::sync_channel::<T>(capacity.max(1));
        let thread = spawn_thread(
            std::thread::Builder::new(),
            "agentpulse-free".into(),
            move || rx.into_iter().for_each(drop),
        )?;
        Ok((Reclaimer { tx }, thread))
    }

    /// Hands `value` over to be dropped on the freeing thread; drops it
    /// here if that thread is behind or gone. Never waits.
    pub fn give(&self, value: T) {
        // A refused value comes back inside the error, dropped right here.
        let _ = self.tx.try_send(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Receiver, Sender};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Records the name of the thread that drops it; optionally tells when
    /// its drop starts and waits for a go-ahead before finishing.
    struct Probe {
        dropped_on: Arc<Mutex<Vec<String>>>,
        hold: Option<(Sender<()>, Receiver<()>)>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            if let Some((started, go)) = self.hold.take() {
                let _ = started.send(());
                let _ = go.recv_timeout(Duration::from_secs(10));
            }
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.dropped_on.lock().unwrap().push(name);
        }
    }

    fn probe(log: &Arc<Mutex<Vec<String>>>) -> Probe {
        Probe {
            dropped_on: log.clone(),
            hold: None,
        }
    }

    #[test]
    fn values_are_dropped_on_the_freeing_thread_and_join_waits_for_them() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (r, thread) = Reclaimer::spawn(16).unwrap();
        let r2 = r.clone();
        for _ in 0..5 {
            r.give(probe(&log));
            r2.give(probe(&log));
        }
        drop((r, r2));
        thread.join().unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 10);
        assert!(log.iter().all(|n| n == "agentpulse-free"), "{log:?}");
    }

    #[test]
    fn a_full_channel_frees_in_place_instead_of_waiting() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (r, thread) = Reclaimer::spawn(1).unwrap();
        // The freeing thread takes the first value and stalls in its drop.
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        r.give(Probe {
            dropped_on: log.clone(),
            hold: Some((started_tx, go_rx)),
        });
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the freeing thread took the first value");
        r.give(probe(&log)); // fills the channel
        r.give(probe(&log)); // no room: dropped right here
        let here = std::thread::current().name().unwrap_or("").to_owned();
        assert_eq!(*log.lock().unwrap(), vec![here]);
        go_tx.send(()).unwrap();
        drop(r);
        thread.join().unwrap();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}
