//! How the hub accepts connections: one accept loop in front of the axum
//! router, with the limits a hub reachable by anyone needs.
//!
//! - **A total cap** (`--max-total-connections`) over HTTP and WebSocket
//!   connections: each holds a slot of a semaphore for as long as its
//!   socket lives (upgraded or not). Past it a connection is answered a
//!   short 503 and closed at once (over TLS: closed), and counted, so the
//!   hub never runs out of file descriptors and answers again as soon as a
//!   connection closes.
//! - **Header, idle and body timeouts**: the header and idle ones are the
//!   connection's ([`watch`]); the body one is the handlers' (408, then
//!   hyper closes a connection whose body was not read to its end).
//! - **TLS** ([`tls`]) when a certificate is given: the handshake falls
//!   under the header timeout.
//! - **Shutdown**: on the hub's token each connection finishes its request
//!   and closes; a second token ([`RunningHub::wait`](super::RunningHub::wait)
//!   after the grace) closes whatever is left.
//!
//! The hub speaks HTTP/1.1 (WebSocket upgrades need it).

use std::convert::Infallible;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::{HubError, SharedState};

pub mod tls;
pub mod watch;

use watch::{Answer, Expiry, Watch, Watched};

/// Default of `--max-total-connections` (lowered to what the open-files
/// limit allows, see [`connection_cap`]).
pub const DEFAULT_MAX_TOTAL_CONNECTIONS: usize = 16_384;

/// File descriptors kept for everything but client connections: the log,
/// Redis, OTLP/gRPC, refusals in progress.
const FD_RESERVE: u64 = 256;

/// Refusals (503 past the cap) written at once; past these, a connection
/// over the cap is closed without a word.
const REFUSALS_AT_ONCE: usize = 64;

/// How long a refusal may take to be written.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Pause after an accept error such as "too many open files", so that the
/// loop does not spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a connection holds while its socket is open: a slot of the cap and
/// its place in the open-connections gauge.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    state: SharedState,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state
            .counters
            .tcp_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the open-files limit was and became at start.
#[derive(Debug, Clone, Copy)]
pub struct OpenFiles {
    /// The soft limit found.
    pub before: u64,
    /// The soft limit now (the hard limit, where it could be raised).
    pub after: u64,
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to its hard limit
/// (every connection is a file descriptor).
pub fn raise_open_files_limit() -> io::Result<OpenFiles> {
    let (before, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let after = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(OpenFiles { before, after })
}

/// The connection cap: `requested` (or the default), but no more than the
/// open-files limit `nofile` leaves once `FD_RESERVE` descriptors are set aside.
/// Returns the cap and whether `requested` had to be lowered.
pub fn connection_cap(requested: Option<usize>, nofile: u64) -> (usize, bool) {
    let budget = usize::try_from(nofile.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
    match requested {
        Some(n) if n > budget => (budget, true),
        Some(n) => (n, false),
        None => (DEFAULT_MAX_TOTAL_CONNECTIONS.min(budget), false),
    }
}

/// Serves `app` on `listener` until the hub's shutdown token is cancelled
/// and every connection has closed (or `hard_stop` is cancelled).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    state: SharedState,
    hard_stop: CancellationToken,
) -> Result<(), HubError> {
    let slots = Arc::new(Semaphore::new(state.config.max_total_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let acceptor = state
        .config
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    let connections = TaskTracker::new();
    loop {
        let tcp = tokio::select! {
            () = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            state
                .counters
                .connections_over_limit
                .fetch_add(1, Ordering::Relaxed);
            refuse(tcp, acceptor.is_none(), &refusals, &state);
            continue;
        };
        state
            .counters
            .tcp_connections
            .fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            _permit: permit,
            state: state.clone(),
        };
        connections.spawn(connection(
            tcp,
            slot,
            acceptor.clone(),
            app.clone(),
            state.clone(),
            hard_stop.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Accept errors about one connection (it went away before it was taken),
/// not about the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Says "503, too many connections" to a connection over the cap and
/// closes it, without holding it longer than [`REFUSAL_TIME`]. Over TLS
/// nothing can be said before a handshake, so the connection is closed.
fn refuse(mut tcp: TcpStream, plain: bool, refusals: &Arc<Semaphore>, state: &SharedState) {
    let Some(permit) = plain
        .then(|| refusals.clone().try_acquire_owned().ok())
        .flatten()
    else {
        return;
    };
    let body = serde_json::json!({
        "error": format!(
            "too many connections: the hub serves at most {} at once (--max-total-connections); retry later",
            state.config.max_total_connections
        ),
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let _permit = permit;
        let written = tokio::time::timeout(REFUSAL_TIME, async {
            tcp.write_all(answer.as_bytes()).await?;
            tcp.shutdown().await?;
            // Read what the client sent until it closes: closing with
            // unread bytes would reset the connection, and the client
            // might lose the answer.
            let mut sink = [0u8; 4096];
            while tcp.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::debug!("refusing a connection over the cap: {e}");
        }
    });
}

/// One connection, from accept to close.
async fn connection(
    tcp: TcpStream,
    slot: Slot,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    state: SharedState,
    hard_stop: CancellationToken,
) {
    let watch = Watch::new(state.config.header_timeout, state.config.idle_timeout);
    match acceptor {
        None => {
            http(
                Watched::new(tcp, watch.clone(), slot),
                watch,
                app,
                state,
                hard_stop,
            )
            .await
        }
        Some(acceptor) => {
            let handshake = tokio::select! {
                r = acceptor.accept(tcp) => r,
                why = watch.expired() => {
                    count(&state, why);
                    return;
                }
                () = hard_stop.cancelled() => return,
            };
            match handshake {
                Ok(stream) => {
                    let io = Watched::new(stream, watch.clone(), slot);
                    http(io, watch, app, state, hard_stop).await;
                }
                Err(e) => {
                    state
                        .counters
                        .tls_handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("TLS handshake: {e}");
                }
            }
        }
    }
}

fn count(state: &SharedState, why: Expiry) {
    let c = match why {
        Expiry::Header => &state.counters.header_timeouts,
        Expiry::Idle => &state.counters.idle_closed,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

/// Serves HTTP/1.1 (and upgrades) on `io` until the client closes, a
/// deadline of `watch` passes, or the hub shuts down.
async fn http<IO>(
    io: IO,
    watch: Arc<Watch>,
    app: Router,
    state: SharedState,
    hard_stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = watch.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = requests.begin_request();
        let app = app.clone();
        async move {
            let answer = app
                .oneshot(req.map(axum::body::Body::new))
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            Ok::<_, Infallible>(answer.map(|body| Answer::new(body, busy)))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // The header timeout is the watch's: hyper's would also cut idle
        // kept-alive connections.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!("HTTP connection: {e}");
                }
                return;
            }
            // Dropping the connection closes the socket.
            why = watch.expired() => {
                count(&state, why);
                return;
            }
            () = state.shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = hard_stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_files_limit() {
        assert_eq!(connection_cap(None, 1_048_576), (16_384, false));
        assert_eq!(connection_cap(None, 1024), (768, false));
        assert_eq!(connection_cap(Some(100), 1024), (100, false));
        assert_eq!(connection_cap(Some(5000), 1024), (768, true));
    }
}
