//! What one connection is doing, for its timeouts: waiting for a request,
//! receiving a request's head, or busy with requests.
//!
//! hyper's own `header_read_timeout` starts as soon as a kept-alive
//! connection waits for its next request, so it cannot tell a slow header
//! from an idle connection. Here the two are apart:
//!
//! - **Waiting** (nothing in flight): the first request of a connection
//!   (the TLS handshake included) must arrive within the header timeout; a
//!   kept-alive connection may then wait the idle timeout for its next one.
//! - **Head** (bytes of a request arrived, its head is not complete): the
//!   header timeout, counted from the first byte.
//! - **Busy** (a request is being answered): no deadline here. A body that
//!   does not arrive is the handler's (`--body-timeout`, 408 and closed); a
//!   long answer is fine.
//!
//! The connection ends when a deadline passes. An upgraded connection (a
//! WebSocket) is no longer watched: its stream has pings of its own.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request's head (or the first request, or the TLS handshake) took
    /// longer than the header timeout.
    Header,
    /// A kept-alive connection sent nothing for the idle timeout.
    Idle,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Waiting { since: Instant, first: bool },
    Head { since: Instant },
    Busy { requests: usize },
}

/// The phase of one connection and its two timeouts.
#[derive(Debug)]
pub struct Watch {
    phase: Mutex<Phase>,
    changed: Notify,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Watch {
    /// A connection accepted now.
    pub fn new(header_timeout: Duration, idle_timeout: Duration) -> Arc<Watch> {
        Arc::new(Watch {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                first: true,
            }),
            changed: Notify::new(),
            header_timeout,
            idle_timeout,
        })
    }

    fn set(&self, f: impl FnOnce(Phase) -> Option<Phase>) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(next) = f(*phase) {
            *phase = next;
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: a waiting connection starts a request's head.
    fn on_read(&self) {
        self.set(|p| match p {
            Phase::Waiting { .. } => Some(Phase::Head {
                since: Instant::now(),
            }),
            _ => None,
        });
    }

    /// A request's head was read; busy until the guard (held by the
    /// answer's body) is dropped.
    pub fn begin_request(self: &Arc<Self>) -> BusyGuard {
        self.set(|p| {
            Some(Phase::Busy {
                requests: match p {
                    Phase::Busy { requests } => requests + 1,
                    _ => 1,
                },
            })
        });
        BusyGuard(self.clone())
    }

    fn end_request(&self) {
        self.set(|p| match p {
            Phase::Busy { requests } if requests > 1 => Some(Phase::Busy {
                requests: requests - 1,
            }),
            _ => Some(Phase::Waiting {
                since: Instant::now(),
                first: false,
            }),
        });
    }

    fn deadline(&self) -> Option<(Instant, Expiry)> {
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Waiting { since, first: true } | Phase::Head { since } => {
                Some((since + self.header_timeout, Expiry::Header))
            }
            Phase::Waiting {
                since,
                first: false,
            } => Some((since + self.idle_timeout, Expiry::Idle)),
            Phase::Busy { .. } => None,
        }
    }

    /// Resolves when the current deadline passes. Cancel-safe: it keeps no
    /// state of its own.
    pub async fn expired(&self) -> Expiry {
        loop {
            match self.deadline() {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// Keeps its connection busy while alive (see [`Watch::begin_request`]).
#[derive(Debug)]
pub struct BusyGuard(Arc<Watch>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// An answer's body that keeps its connection busy until hyper has sent it
/// all (and drops it).
pub struct Answer {
    inner: axum::body::Body,
    _busy: BusyGuard,
}

impl Answer {
    /// `inner`, holding `busy` until it is dropped.
    pub fn new(inner: axum::body::Body, busy: BusyGuard) -> Answer {
        Answer { inner, _busy: busy }
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket (plain or TLS) that tells its [`Watch`] when
/// bytes arrive, and holds what must live as long as the socket does (its
/// slot of the connection cap), upgraded or not.
pub struct Watched<IO> {
    io: IO,
    watch: Arc<Watch>,
    _slot: super::Slot,
}

impl<IO> Watched<IO> {
    /// `io`, reporting to `watch`, holding `slot`.
    pub fn new(io: IO, watch: Arc<Watch>, slot: super::Slot) -> Self {
        Watched {
            io,
            watch,
            _slot: slot,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            me.watch.on_read();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_first_request_gets_the_header_timeout_a_kept_alive_one_the_idle_timeout() {
        let w = Watch::new(Duration::from_secs(1), Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(w.expired().await, Expiry::Header);
        assert_eq!(t0.elapsed(), Duration::from_secs(1));

        let w = Watch::new(Duration::from_secs(1), Duration::from_secs(5));
        drop(w.begin_request());
        let t0 = Instant::now();
        assert_eq!(w.expired().await, Expiry::Idle);
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_is_timed_from_its_first_byte_and_busy_has_no_deadline() {
        let w = Watch::new(Duration::from_secs(1), Duration::from_secs(5));
        drop(w.begin_request());
        tokio::time::advance(Duration::from_secs(3)).await;
        w.on_read();
        let t0 = Instant::now();
        assert_eq!(w.expired().await, Expiry::Header);
        assert_eq!(t0.elapsed(), Duration::from_secs(1));

        let busy = w.begin_request();
        let waited = tokio::time::timeout(Duration::from_secs(3600), w.expired()).await;
        assert!(waited.is_err(), "a busy connection has no deadline");
        drop(busy);
        assert_eq!(w.expired().await, Expiry::Idle);
    }
}
