//! Response bodies sent to clients: a server's streamed body, or a small static error page.
//!
//! Owns: [`ProxyBody`] and the end-of-response bookkeeping of an upstream body (return the
//! keep-alive connection to its server's pool, free the server slot).
//! Does not own: choosing statuses (`error`) or forwarding (`http`).
//! No allocation per response: error pages are static bytes.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::StatusCode;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use crate::queue::Slot;

/// What to do when an upstream response body ends.
pub struct Release {
    /// The connection, reusable once the body is complete.
    pub(crate) conn: SendRequest<Incoming>,
    /// The server slot, freed when the body ends or is dropped.
    pub(crate) slot: Slot,
    /// Pool bound of the server's backend.
    pub(crate) max_idle: usize,
}

impl Release {
    fn finish(self, complete: bool) {
        if complete {
            self.slot.server.put_idle(self.conn, self.max_idle);
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
    },
    /// A fixed body (error pages); `None` once sent.
    Static(Option<Bytes>),
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream { .. } => f.write_str("ProxyBody::Upstream"),
            Self::Static(_) => f.write_str("ProxyBody::Static"),
        }
    }
}

impl ProxyBody {
    pub(crate) fn upstream(inner: Incoming, release: Release) -> Self {
        Self::Upstream {
            inner,
            release: Some(release),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Static(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Upstream { inner, release } => {
                let res = Pin::new(&mut *inner).poll_frame(cx);
                match &res {
                    Poll::Ready(None) => {
                        if let Some(r) = release.take() {
                            r.finish(true);
                        }
                    }
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => {
                        if let Some(r) = release.take() {
                            r.finish(true);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(r) = release.take() {
                            r.finish(false);
                        }
                    }
                    _ => {}
                }
                res
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Static(b) => b.is_none(),
            Self::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Static(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Static(None) => SizeHint::with_exact(0),
            Self::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Self::Upstream { inner, release } = self
            && let Some(r) = release.take()
        {
            // Empty bodies are never polled; an unfinished body makes the connection unusable.
            r.finish(inner.is_end_stream());
        }
    }
}

/// The static page for an error status, HAProxy style.
pub(crate) fn error_page(status: StatusCode) -> Bytes {
    Bytes::from_static(match status {
        StatusCode::BAD_REQUEST => {
            b"<html><body><h1>400 Bad request</h1>\nYour browser sent an invalid request.\n</body></html>\n"
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
