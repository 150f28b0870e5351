//! Moving bytes of one exchange between the client and a server connection: the request
//! (watching for an early answer), the response body as its framing delimits it, and the
//! linger after a close with input unread.
//!
//! Owns: [`send_or_answer`], [`relay_body`], [`linger`], [`still_open`] (the pooled
//! connection probe) and their outcomes ([`Sent`], [`BodyError`]).
//! Does not own: deciding what is sent or whether a connection is kept (`super::exchange`),
//! parsing heads (`super::head`, `super::response`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::chunked::Chunks;
use super::head::{UPSTREAM_BUF_BYTES, fill, final_answer_started, poll_fill};
use super::response::Framing;
use crate::deadline::before;
use crate::live::RawUpstream;

/// How long a connection closed with its request body unread still drains the client.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// How sending request bytes to a server ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// All of them were written.
    All,
    /// The server began a final answer first; it is in the read buffer, the rest unsent.
    Answered,
}

/// Writes `data` to the server while watching for an early answer (a server may refuse an
/// upload before reading it, and then stop reading or close). Interim responses are kept in
/// `buf` (the connection's read buffer) for the head reader. A write that fails after the
/// server answered is an answer.
pub(super) async fn send_or_answer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    data: &[u8],
) -> io::Result<Sent> {
    let mut written = 0;
    std::future::poll_fn(|cx| {
        while written < data.len() {
            match Pin::new(&mut *stream).poll_write(cx, &data[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => {
                    // What the server sent before it reset is still readable.
                    while let Poll::Ready(Ok(n)) = poll_fill(&mut *stream, cx, buf) {
                        if n == 0 || final_answer_started(buf) {
                            break;
                        }
                    }
                    return Poll::Ready(if final_answer_started(buf) {
                        Ok(Sent::Answered)
                    } else {
                        Err(e)
                    });
                }
                Poll::Pending => break,
            }
        }
        if written == data.len() {
            return Poll::Ready(Ok(Sent::All));
        }
        // Blocked on the server: has it answered?
        loop {
            match poll_fill(&mut *stream, cx, buf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(if final_answer_started(buf) {
                        Ok(Sent::Answered)
                    } else {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    });
                }
                Poll::Ready(Ok(_)) if final_answer_started(buf) => {
                    return Poll::Ready(Ok(Sent::Answered));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// After answering a request whose body was left unread (the write side already shut):
/// reads and discards what the client still sends, until it closes or [`LINGER`] passes, so
/// closing with unread input (a TCP reset) does not destroy the answer before the client
/// read it.
pub(super) async fn linger<T: AsyncRead + Unpin>(io: &mut T) {
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            sink.clear();
            match fill(io, &mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Whether a pooled connection is still open and quiet (nothing unsolicited to read).
pub(super) fn still_open(c: &mut RawUpstream) -> bool {
    c.buf.clear();
    let mut probe = [0u8; 1];
    let mut rb = ReadBuf::new(&mut probe);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(
        Pin::new(&mut c.stream).poll_read(&mut cx, &mut rb),
        Poll::Pending
    )
}

/// Where a response body relay failed.
pub(super) enum BodyError {
    Server(io::Error),
    ServerTimeout,
    Client,
    Framing,
}

/// Relays the response: `out` (the client's head) and the body, framed as `framing`,
/// from `conn.buf[head..]` on; the body bytes relayed. Leaves in `conn.buf` only bytes
/// beyond the response (then the connection is not reused).
pub(super) async fn relay_body<T: AsyncWrite + Unpin>(
    io: &mut T,
    conn: &mut RawUpstream,
    head: usize,
    framing: Framing,
    mut out: Vec<u8>,
    timeout: Duration,
) -> Result<u64, (u64, BodyError)> {
    let mut bytes = 0u64;
    let mut chunks = Chunks::START;
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    // Body bytes that came with the head.
    let mut start = head;
    loop {
        let avail = &conn.buf[start..];
        let (take, done) = match framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let t = (avail.len() as u64).min(left) as usize;
                (t, left - t as u64 == 0)
            }
            Framing::Chunked => match chunks.feed(avail) {
                Ok(Some(n)) => (n, true),
                Ok(None) => (avail.len(), false),
                Err(_) => return Err((bytes, BodyError::Framing)),
            },
            Framing::UntilClose => (avail.len(), false),
        };
        let chunk = &avail[..take];
        let write = if out.is_empty() {
            io.write_all(chunk).await
        } else {
            out.extend_from_slice(chunk);
            let r = io.write_all(&out).await;
            out = Vec::new();
            r
        };
        if write.is_err() {
            return Err((bytes, BodyError::Client));
        }
        bytes += take as u64;
        if let Framing::Length(_) = framing {
            left -= take as u64;
        }
        conn.buf.drain(..start + take);
        start = 0;
        if done {
            if io.flush().await.is_err() {
                return Err((bytes, BodyError::Client));
            }
            return Ok(bytes);
        }
        if io.flush().await.is_err() {
            return Err((bytes, BodyError::Client));
        }
        conn.timer.set(tokio::time::Instant::now() + timeout);
        if conn.buf.capacity() < UPSTREAM_BUF_BYTES {
            conn.buf.reserve(UPSTREAM_BUF_BYTES);
        }
        match before(&mut conn.timer, conn.stream.read_buf(&mut conn.buf)).await {
            None => return Err((bytes, BodyError::ServerTimeout)),
            Some(Ok(0)) if framing == Framing::UntilClose => {
                let _ = io.flush().await;
                return Ok(bytes);
            }
            Some(Ok(0)) => {
                return Err((
                    bytes,
                    BodyError::Server(io::ErrorKind::UnexpectedEof.into()),
                ));
            }
            Some(Err(e)) => return Err((bytes, BodyError::Server(e))),
            Some(Ok(_)) => {}
        }
    }
}
