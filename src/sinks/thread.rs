//! Threads made by name: a refusal by the system is a [`SpawnError`]
//! naming the thread, never a panic; [`Parked`] threads are made before
//! they get their work, so that a start can fail before it changes
//! anything.

use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

/// A thread could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the thread {thread}: {source}")]
pub struct SpawnError {
    /// The thread's name.
    pub thread: String,
    /// Why the system refused.
    #[source]
    pub source: std::io::Error,
}

#[cfg(test)]
thread_local! {
    /// The name of a thread that [`spawn_thread`] refuses, on this thread
    /// only: how tests meet a system that creates no more threads.
    pub(crate) static REFUSE_SPAWN: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

/// Starts `f` on a thread named `name`, made by `builder`; a refusal is a
/// [`SpawnError`] naming the thread.
pub fn spawn_thread<T: Send + 'static>(
    builder: std::thread::Builder,
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, SpawnError> {
    #[cfg(test)]
    if REFUSE_SPAWN.with(|r| r.borrow().as_deref() == Some(name.as_str())) {
        return Err(SpawnError {
            thread: name,
            source: std::io::Error::other("refused by the test"),
        });
    }
    // A NUL in the name would make `spawn` panic: sink names are the
    // sinks' own choice.
    let builder = builder.name(name.replace('\0', " "));
    builder.spawn(f).map_err(|source| SpawnError {
        thread: name,
        source,
    })
}

/// A thread made before it is given its work, so that `start` can create
/// every thread it needs before it hands anything over: a refusal then
/// leaves the sinks, taps and queue where they were. Dropped unused, the
/// thread ends at once.
pub struct Parked<T: Send + 'static> {
    work: SyncSender<Work<T>>,
    thread: JoinHandle<Option<T>>,
}

type Work<T> = Box<dyn FnOnce() -> T + Send>;

impl<T: Send + 'static> Parked<T> {
    /// Creates the thread `name`, waiting for its work.
    pub fn spawn(builder: std::thread::Builder, name: String) -> Result<Parked<T>, SpawnError> {
        let (work, rx) = mpsc::sync_channel::<Work<T>>(1);
        let thread = spawn_thread(builder, name, move || rx.recv().ok().map(|f| f()))?;
        Ok(Parked { work, thread })
    }

    /// Runs `f` on the thread; its join gives `Some` of what `f` returned.
    pub fn run(self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<Option<T>> {
        // The thread holds the receiver until it has the work, so the send
        // fails only if the thread is gone (it never runs anything that
        // could end it before): its join then says `None`.
        if self.work.send(Box::new(f)).is_err() {
            tracing::error!("a parked thread ended before it was given its work");
        }
        self.thread
    }
}

/// The text a panic was raised with (`panic!` gives a `&str` or a
/// `String`; anything else has no text to show).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}
