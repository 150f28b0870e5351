//! Bodies: the request body sent to a server ([`ReqBody`]) and the response body sent to a
//! client ([`ProxyBody`]: a server's streamed body, or a small static page).
//!
//! Owns: counting body bytes (locally, flushed once into frontend, backend and server
//! counters), the end-of-response bookkeeping of an upstream body (return the keep-alive
//! connection to its server's pool, free the server slot, emit the access log line), the
//! server inactivity timeout while a response body streams (`timeout server`), and the
//! client side's for HTTP/2 streams ([`relay`], `client_idle`).
//! Does not own: choosing statuses (`error`), forwarding (`http`), or the log format (`access`).
//! No allocation per response except the inactivity timer, created only if the body stalls.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::StatusCode;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tracing::debug;

pub use crate::pool::ReqBody;
pub(crate) use crate::stats::Sink;

use crate::access::AccessLog;
use crate::deadline::Deadline;
use crate::pool::Upstream;
use crate::queue::Slot;

/// Error type of the bodies the proxy produces.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server stopped sending a response body for longer than `timeout server`.
#[derive(Debug, thiserror::Error)]
#[error("server sent nothing for {0:?} while streaming the response body")]
pub struct BodyTimeout(pub Duration);

/// What to do when an upstream response body ends.
pub struct Release {
    /// The connection, reusable once the body is complete.
    pub(crate) conn: Upstream,
    /// The server slot, freed when the body ends or is dropped.
    pub(crate) slot: Slot,
    /// Pool bound of the server's backend.
    pub(crate) max_idle: usize,
    /// Byte counters.
    pub(crate) sink: Sink,
    /// The access log line, completed and emitted at the end (boxed: only when logging).
    pub(crate) log: Option<Box<AccessLog>>,
}

/// How an upstream body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Completely sent.
    Complete,
    /// The server failed or closed early.
    ServerAbort,
    /// The server went silent for `timeout server`.
    ServerTimeout,
    /// The client went away (body dropped unfinished).
    ClientAbort,
}

impl Release {
    fn finish(self, end: End, bytes: u64) {
        self.sink.bytes_out(bytes);
        if end == End::Complete
            && let Some(pool) = self.slot.server.pool_to_keep()
        {
            pool.put_idle(self.conn, self.max_idle);
        }
        if let Some(mut log) = self.log {
            log.bytes = bytes;
            log.termination = match end {
                End::Complete => *b"--",
                End::ServerAbort => *b"SD",
                End::ServerTimeout => *b"sD",
                End::ClientAbort => *b"CD",
            };
            log.emit();
        }
        // Dropping `slot` frees the server slot and wakes the next queued request.
    }
}

/// A response body as the proxy sends it.
pub enum ProxyBody {
    /// Streamed from a server.
    Upstream {
        /// The server's body.
        inner: Incoming,
        /// Bookkeeping done once, at the end.
        release: Option<Release>,
        /// Body bytes sent so far.
        bytes: u64,
        /// `timeout server`, applied to silences while streaming.
        timeout: Duration,
        /// The silence timer, created the first time the body stalls.
        idle: Option<Pin<Box<Sleep>>>,
        /// A frame arrived since the timer was last armed.
        progressed: bool,
    },
    /// A fixed body (error pages, metrics); `None` once sent.
    Static(Option<Bytes>),
    /// Frames of an upstream body moved by a task of its own ([`relay`]).
    Relayed {
        /// The frames, one at a time.
        rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
        /// Raised by the task before it gives up on a client that stopped taking frames.
        cut: Arc<std::sync::atomic::AtomicBool>,
        /// How long the client may take no frame (`client_idle`).
        stall: Duration,
        /// The upstream body's size hint.
        hint: SizeHint,
        /// The channel ended.
        done: bool,
    },
}

/// The client took no frame of an HTTP/2 response body for `client_idle`.
#[derive(Debug, thiserror::Error)]
#[error("client took nothing for {0:?} of the response body")]
pub struct ClientStalled(pub Duration);

/// Moves `body` (a server's response to an HTTP/2 stream) to a task of its own that hands
/// its frames over a one-frame channel, and drops it (server slot freed, connection closed,
/// access log `CD`) once the client has taken nothing for `stall` (`client_idle`).
///
/// hyper polls an HTTP/2 response body only while the stream has send window: a client that
/// leaves its window at 0 (and keeps the connection alive with PINGs) would otherwise keep
/// the body, and with it the server's `max_connections` slot, forever, since nothing runs
/// the body's own timers. One task and channel per HTTP/2 response with a body; HTTP/1
/// clients need none (a client that stops reading times out in `IdleIo`).
pub(crate) fn relay(body: ProxyBody, stall: Duration) -> ProxyBody {
    if body.is_end_stream() {
        return body;
    }
    let hint = body.size_hint();
    let (tx, rx) = mpsc::channel(1);
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        let mut body = std::pin::pin!(body);
        let mut deadline = Deadline::new(tokio::time::Instant::now() + stall);
        loop {
            let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await else {
                // Complete: the channel closes after the last frame.
                return;
            };
            let last = frame.is_err();
            deadline.set(tokio::time::Instant::now() + stall);
            let mut send = std::pin::pin!(tx.send(frame));
            let sent = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = send.as_mut().poll(cx) {
                    return Poll::Ready(r.is_ok());
                }
                deadline.poll_expired(cx).map(|()| {
                    flag.store(true, Ordering::Release);
                    false
                })
            })
            .await;
            if !sent || last {
                if flag.load(Ordering::Acquire) {
                    debug!(after = ?stall, "http/2 client took nothing of the response body, dropping it");
                }
                // Dropping the body frees the slot (`End::ClientAbort`).
                return;
            }
        }
    });
    ProxyBody::Relayed {
        rx,
        cut,
        stall,
        hint,
        done: false,
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream { .. } => f.write_str("ProxyBody::Upstream"),
            Self::Static(_) => f.write_str("ProxyBody::Static"),
            Self::Relayed { .. } => f.write_str("ProxyBody::Relayed"),
        }
    }
}

impl ProxyBody {
    pub(crate) fn upstream(inner: Incoming, release: Release, timeout: Duration) -> Self {
        Self::Upstream {
            inner,
            release: Some(release),
            bytes: 0,
            timeout,
            idle: None,
            progressed: false,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Static(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Relayed {
                rx,
                cut,
                stall,
                done,
                ..
            } => match rx.poll_recv(cx) {
                Poll::Ready(None) => {
                    *done = true;
                    if cut.load(Ordering::Acquire) {
                        // Cut, not complete: the stream must be reset, never ended.
                        return Poll::Ready(Some(Err(Box::new(ClientStalled(*stall)))));
                    }
                    Poll::Ready(None)
                }
                other => other,
            },
            Self::Upstream {
                inner,
                release,
                bytes,
                timeout,
                idle,
                progressed,
            } => {
                let res = Pin::new(&mut *inner).poll_frame(cx);
                let end = match &res {
                    Poll::Ready(None) => Some(End::Complete),
                    Poll::Ready(Some(Ok(f))) => {
                        *progressed = true;
                        if let Some(d) = f.data_ref() {
                            *bytes += d.len() as u64;
                        }
                        inner.is_end_stream().then_some(End::Complete)
                    }
                    Poll::Ready(Some(Err(_))) => Some(End::ServerAbort),
                    Poll::Pending => {
                        let deadline = tokio::time::Instant::now() + *timeout;
                        let timer = idle.get_or_insert_with(|| {
                            *progressed = false;
                            Box::pin(tokio::time::sleep_until(deadline))
                        });
                        if std::mem::take(progressed) {
                            timer.as_mut().reset(deadline);
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            if let Some(r) = release.take() {
                                r.finish(End::ServerTimeout, *bytes);
                            }
                            return Poll::Ready(Some(Err(Box::new(BodyTimeout(*timeout)))));
                        }
                        None
                    }
                };
                if let Some(end) = end
                    && let Some(r) = release.take()
                {
                    r.finish(end, *bytes);
                }
                res.map(|o| o.map(|r| r.map_err(BoxError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Static(b) => b.is_none(),
            Self::Upstream { inner, .. } => inner.is_end_stream(),
            Self::Relayed { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Static(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Static(None) => SizeHint::with_exact(0),
            Self::Upstream { inner, .. } => inner.size_hint(),
            Self::Relayed { hint, .. } => *hint,
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Self::Upstream {
            inner,
            release,
            bytes,
            ..
        } = self
            && let Some(r) = release.take()
        {
            // Empty bodies are never polled; an unfinished body makes the connection unusable.
            let end = if inner.is_end_stream() {
                End::Complete
            } else {
                End::ClientAbort
            };
            r.finish(end, *bytes);
        }
    }
}

/// The static page for an error status, HAProxy style.
pub(crate) fn error_page(status: StatusCode) -> Bytes {
    Bytes::from_static(match status {
        StatusCode::BAD_REQUEST => {
            b"<html><body><h1>400 Bad request</h1>\nYour browser sent an invalid request.\n</body></html>\n"
        }
        StatusCode::NOT_FOUND => {
            b"<html><body><h1>404 Not Found</h1>\nThe resource could not be found.\n</body></html>\n"
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            b"<html><body><h1>431 Request Header Fields Too Large</h1>\nYour browser sent a request head that is too large.\n</body></html>\n"
        }
        StatusCode::TOO_MANY_REQUESTS => {
            b"<html><body><h1>429 Too Many Requests</h1>\nYou have sent too many requests in a given amount of time.\n</body></html>\n"
        }
        StatusCode::BAD_GATEWAY => {
            b"<html><body><h1>502 Bad Gateway</h1>\nThe server returned an invalid or incomplete response.\n</body></html>\n"
        }
        StatusCode::GATEWAY_TIMEOUT => {
            b"<html><body><h1>504 Gateway Time-out</h1>\nThe server didn't respond in time.\n</body></html>\n"
        }
        _ => b"<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n",
    })
}
