//! Client inactivity timeout (`client_idle`, HAProxy `timeout client`) as an IO wrapper.
//!
//! Owns: [`IdleIo`], which fails a read or write with `TimedOut` when the client socket made
//! no progress for `client_idle` while the proxy waits on the client: a stalled request body,
//! or a client that stops reading its response. While a request is being handled (between
//! the request head and the response head, tracked by [`Busy`]), waiting for the server is
//! not client inactivity: `timeout server` applies instead.
//! Does not own: the wait for the next request on a keep-alive connection, which hyper's
//! header read timer bounds (`client_header`, like HAProxy's `timeout http-keep-alive`
//! defaulting to `timeout http-request`), so an idle keep-alive connection closes after
//! `min(client_header, client_idle)`.
//! One timer per connection, re-armed lazily (`deadline`): progress only records an instant.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::deadline::Deadline;

/// Requests of one connection being handled now (raised by the handler).
pub(crate) type Busy = Arc<AtomicU32>;

/// See the module doc.
pub(crate) struct IdleIo<T> {
    inner: T,
    timeout: Duration,
    last: Instant,
    timer: Deadline,
    busy: Busy,
}

impl<T> IdleIo<T> {
    pub(crate) fn new(inner: T, timeout: Duration, busy: Busy) -> Self {
        let now = Instant::now();
        Self {
            inner,
            timeout,
            last: now,
            timer: Deadline::new(now + timeout),
            busy,
        }
    }

    /// Whether the client has been silent too long; registers the waker otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer.set(self.last + self.timeout);
        self.timer.poll_expired(cx).is_ready()
    }

    /// What a read or write that got `res` from the client returns: progress records the
    /// instant; no progress for `timeout` fails it with `TimedOut` when `watched`.
    fn progress<R>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<io::Result<R>>,
        watched: bool,
    ) -> Poll<io::Result<R>> {
        match res {
            Poll::Ready(r) => {
                self.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => {
                if watched && self.expired(cx) {
                    return Poll::Ready(Err(self.timed_out()));
                }
                Poll::Pending
            }
        }
    }

    /// A read's result: waiting on the client for the next bytes of a request being handled
    /// is not idleness, waiting for the server is (see `Busy`).
    fn after_read(
        &mut self,
        cx: &mut Context<'_>,
        _buf: &ReadBuf<'_>,
        _filled: usize,
        res: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        let idle = self.busy.load(Ordering::Relaxed) == 0;
        self.progress(cx, res, idle)
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("client idle for {:?}", self.timeout),
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    crate::pass::pass_through!(read [Self { inner, .. }] => inner, then after_read);
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, data);
        this.progress(cx, res, true)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, res, true)
    }

    crate::pass::pass_through!(write_rest [Self { inner, .. }] => inner);
}
