//! The global emitter ([`get_emitter`], [`emit_event`]) and its
//! environment settings.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::sinks::runner::WhenFull;

use super::{EmitError, Emitter, EmitterError, ForwardSink};

static GLOBAL: OnceLock<Emitter> = OnceLock::new();

/// Why [`init_global`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InitGlobalError {
    /// A global emitter already exists; the one given is handed back.
    #[error("the global emitter already exists")]
    AlreadySet(Emitter),
    /// The emitter is installed as the global one but did not start.
    #[error("the global emitter did not start: {0}")]
    Start(#[source] EmitterError),
}

/// Installs `emitter` (started or not; it is started if needed) as the
/// global one. Fails, handing it back, when the global one already exists;
/// fails with the start's error when it cannot start (it stays installed,
/// and as built, so `get_emitter().start()` may be tried again).
pub fn init_global(emitter: Emitter) -> Result<(), InitGlobalError> {
    let mut handed_back = Some(emitter.clone());
    GLOBAL.get_or_init(|| {
        handed_back = None;
        emitter
    });
    if let Some(e) = handed_back {
        return Err(InitGlobalError::AlreadySet(e));
    }
    match get_emitter().start() {
        // Started by the caller before it was handed over.
        Ok(_) | Err(EmitterError::AlreadyStarted) => Ok(()),
        Err(e) => Err(InitGlobalError::Start(e)),
    }
}

/// The global emitter, created and started on first use with the defaults:
/// the built-in schema (or `AGENTPULSE_CONFIG`), console output (unless
/// `AGENTPULSE_QUIET` is set) and the log in `logs/` (or
/// `AGENTPULSE_LOG_DIR`). Call `get_emitter().stop()` before the program
/// exits so that everything emitted is written.
///
/// **Hub mode.** When `AGENTPULSE_HUB_URL` is set (e.g.
/// `http://127.0.0.1:3010`, with `AGENTPULSE_TOKEN` if the hub has a token),
/// the global emitter still validates every event in the process (errors
/// come back at once), but writes no log and prints nothing: it forwards
/// each event to that hub through a [`crate::Client`]
/// ([`ForwardSink`]). `flush()` and `stop()` then wait (at
/// most 5 s) for the hub's answers. Its `get_metrics()` covers only this
/// process's events; the hub's `/api/metrics` has the whole picture.
pub fn get_emitter() -> &'static Emitter {
    GLOBAL.get_or_init(|| {
        let emitter = default_from_env();
        if let Err(e) = emitter.start() {
            tracing::error!("agentpulse: {e}; events are kept in memory only");
            let fallback = Emitter::builder()
                .no_log()
                .build()
                .expect("built-in config");
            // Only a thread the OS refuses fails here; the emitter then
            // stays stopped, and every emit says so to its caller.
            if let Err(e) = fallback.start() {
                tracing::error!("agentpulse: {e}; events are refused");
            }
            return fallback;
        }
        emitter
    })
}

fn default_from_env() -> Emitter {
    let mut b = Emitter::builder();
    if let Some(path) = std::env::var_os("AGENTPULSE_CONFIG") {
        match crate::config::load(Path::new(&path)) {
            Ok(c) => b = b.config(c),
            Err(e) => tracing::error!("agentpulse: {e}; using the built-in config"),
        }
    }
    // Hub mode (see `get_emitter`): forward instead of logging locally.
    match crate::client::Client::from_env() {
        Some(Ok(client)) => {
            let sink = ForwardSink::new(client);
            return match b
                .no_log()
                .quiet()
                .sink(Box::new(sink), WhenFull::Block)
                .build()
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!("agentpulse: {e}; using the built-in config");
                    Emitter::builder().build().expect("built-in config")
                }
            };
        }
        Some(Err(e)) => tracing::error!("agentpulse: {e}; recording events locally instead"),
        None => {}
    }
    if let Some(dir) = std::env::var_os("AGENTPULSE_LOG_DIR") {
        b = b.log_dir(PathBuf::from(dir));
    }
    if std::env::var_os("AGENTPULSE_QUIET").is_some_and(|v| !v.is_empty() && v != "0") {
        b = b.quiet();
    }
    match b.build() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("agentpulse: {e}; using the built-in config");
            Emitter::builder().build().expect("built-in config")
        }
    }
}

/// Emits an event on the global emitter (see [`get_emitter`]).
pub fn emit_event(event_type: &str, payload: Value) -> Result<(), EmitError> {
    get_emitter().emit(event_type, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this crate's unit tests that touches the global
    /// emitter (it is one per process).
    #[test]
    fn init_global_returns_a_failed_start_and_stays_startable() {
        let dir = tempfile::tempdir().unwrap();
        // The log's directory cannot be made under a regular file.
        let blocker = dir.path().join("logs");
        std::fs::write(&blocker, "not a directory").unwrap();
        let emitter = Emitter::builder()
            .log_dir(blocker.join("here"))
            .quiet()
            .build()
            .unwrap();
        match init_global(emitter) {
            Err(InitGlobalError::Start(EmitterError::Log(_))) => {}
            other => panic!("expected the start's error, got {other:?}"),
        }
        let again = Emitter::builder().no_log().quiet().build().unwrap();
        assert!(matches!(
            init_global(again),
            Err(InitGlobalError::AlreadySet(_))
        ));
        std::fs::remove_file(&blocker).unwrap();
        get_emitter().start().unwrap();
        emit_event("note", serde_json::json!({"n": 1})).unwrap();
        get_emitter().stop().unwrap();
    }
}
