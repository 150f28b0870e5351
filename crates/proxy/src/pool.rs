//! Server connections kept alive between requests, and the request body they carry.
//!
//! Owns: [`Upstream`] (a hyper HTTP/1.1 sender with its `timeout server` timer),
//! [`RawUpstream`] (a connection of the raw HTTP/1 forwarder with its read buffer and
//! deadline), [`ServerPool`] (one server's idle connections of both kinds, most recent
//! last) and [`ReqBody`] (a client's request body on its way to a server, counted into a
//! [`Sink`]).
//! Does not own: when a connection may be pooled (the server's status: `live`; the
//! response's framing: the request path), opening connections (`connect`), or counters
//! (`stats`). A leaf of the request path: it imports no module that imports it back.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use tokio::time::Sleep;

use crate::deadline::Deadline;
use crate::stats::Sink;
use crate::tls::ServerStream;

/// A client's request body on its way to a server, counted.
pub struct ReqBody {
    inner: Incoming,
    bytes: u64,
    /// Set once the server is known, right before sending.
    pub(crate) sink: Option<Sink>,
}

impl ReqBody {
    pub(crate) fn new(inner: Incoming) -> Self {
        Self {
            inner,
            bytes: 0,
            sink: None,
        }
    }
}

impl Drop for ReqBody {
    fn drop(&mut self) {
        if let Some(s) = &self.sink {
            s.bytes_in(self.bytes);
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &res
            && let Some(d) = f.data_ref()
        {
            this.bytes += d.len() as u64;
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A keep-alive connection of the raw HTTP/1 forwarder (`h1`): the stream, its read buffer
/// (kept across requests, empty between them) and the `timeout server` deadline of its
/// requests (moved per request, re-armed only when it fires: see `deadline`).
pub(crate) struct RawUpstream {
    /// The connection (TLS when the backend uses it).
    pub(crate) stream: ServerStream,
    /// Response bytes read and not yet forwarded; empty while pooled.
    pub(crate) buf: Vec<u8>,
    /// `timeout server` of the request in flight; stale (and harmless) while pooled.
    pub(crate) timer: Deadline,
}

impl RawUpstream {
    /// A new connection, with its timer.
    pub(crate) fn new(stream: ServerStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            timer: Deadline::new(tokio::time::Instant::now()),
        }
    }
}

impl std::fmt::Debug for RawUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawUpstream").finish_non_exhaustive()
    }
}

/// A keep-alive connection to a server, with the `timeout server` timer of its requests.
///
/// The timer lives as long as the connection and is re-armed for each request: moving a
/// registered deadline later is an atomic store in tokio, where a new timer per request
/// means inserting into and removing from the timer wheel under its lock every time.
pub(crate) struct Upstream {
    /// hyper's sender of requests on the connection.
    pub(crate) send: SendRequest<ReqBody>,
    /// Armed for the request in flight; stale (and harmless) while pooled.
    pub(crate) timer: Pin<Box<Sleep>>,
}

impl Upstream {
    /// A new connection's sender, with its timer.
    pub(crate) fn new(send: SendRequest<ReqBody>) -> Self {
        Self {
            send,
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("closed", &self.send.is_closed())
            .finish_non_exhaustive()
    }
}

/// Idle keep-alive connections of one server, most recent last.
#[derive(Debug, Default)]
pub(crate) struct ServerPool {
    /// hyper's.
    hyper: Mutex<Vec<Upstream>>,
    /// The raw HTTP/1 forwarder's (`h1`).
    raw: Mutex<Vec<RawUpstream>>,
}

impl ServerPool {
    /// Drops every idle connection (the server takes no traffic now).
    pub(crate) fn clear(&self) {
        self.hyper.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.raw.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Takes an idle connection, dropping closed ones; it may need `ready()`.
    pub(crate) fn take_idle(&self) -> Option<Upstream> {
        let mut pool = self.hyper.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = pool.pop() {
            if !c.send.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps a connection if it is open and there is room.
    pub(crate) fn put_idle(&self, conn: Upstream, max_idle: usize) {
        if conn.send.is_closed() {
            return;
        }
        let mut pool = self.hyper.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < max_idle {
            pool.push(conn);
        }
    }

    /// Takes the most recent idle raw connection; the caller checks it is still open.
    pub(crate) fn take_raw(&self) -> Option<RawUpstream> {
        self.raw.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Keeps a raw connection if there is room. Beyond the first [`POOL_BUFFERED`] pooled
    /// connections, the read buffer is freed (a peak of concurrency leaves many idle
    /// connections behind).
    pub(crate) fn put_raw(&self, mut conn: RawUpstream, max_idle: usize) {
        let mut pool = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < max_idle {
            if pool.len() >= POOL_BUFFERED {
                conn.buf = Vec::new();
            }
            pool.push(conn);
        }
    }
}

/// Pooled raw connections per server that keep their read buffer.
const POOL_BUFFERED: usize = 64;
