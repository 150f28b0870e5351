//! Reading HTTP/1.1 heads: client bytes through a per-thread scratch buffer, where a head
//! ends, the line and preface checks, a server's response head within `timeout server`,
//! and the field-name helpers the request and response rewriting share.
//!
//! Owns: the bytes-level rules of a head (CRLF line ends, the HTTP/2 preface, the end of a
//! head, interim vs final responses), [`read_head`] and its size bound.
//! Does not own: what a head means (`super::analyze`, `super::response`), nor the
//! smuggling guard (`crate::guard`). No state beyond the per-thread scratch buffer.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::deadline::before;
use crate::live::RawUpstream;

/// Per-thread read buffer for client reads: a connection keeps only the bytes it got.
pub(super) const SCRATCH_BYTES: usize = 16 * 1024;

/// Largest response head accepted from a server.
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Read size on server connections (and for streamed request bodies).
pub(super) const UPSTREAM_BUF_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// Reads what the client sent into `buf` through the per-thread scratch buffer.
pub(super) fn poll_fill<T: AsyncRead + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let mut rb = ReadBuf::new(scratch);
        match Pin::new(io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let got = rb.filled();
                buf.extend_from_slice(got);
                Poll::Ready(Ok(got.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

pub(super) async fn fill<T: AsyncRead + Unpin>(io: &mut T, buf: &mut Vec<u8>) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_fill(io, cx, buf)).await
}

/// End of a head (`\r\n\r\n`) in `buf`, searching from `from`; the head's length.
pub(super) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

/// Whether `buf` (what a server sent so far) holds the start of a final response: past any
/// complete interim (1xx) heads, a status line whose code does not begin with 1. A head too
/// large to be one counts (reading it will say so).
pub(super) fn final_answer_started(buf: &[u8]) -> bool {
    if buf.len() > MAX_RESPONSE_HEAD {
        return true;
    }
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        // "HTTP/1.1 " is 9 bytes; the status code follows.
        match rest.get(9) {
            None => return false,
            Some(b'1') => match head_end(rest, 0) {
                Some(n) => at += n,
                None => return false,
            },
            Some(_) => return true,
        }
    }
}

/// Whether every line in `head` ends with CRLF and no CR appears elsewhere (RFC 9112
/// section 2.2: a bare LF or CR is refused, never guessed at). A final lone CR is allowed
/// (the LF may still come).
pub(super) fn crlf_lines(head: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in head {
        if (b == b'\n') != (prev == b'\r') {
            return false;
        }
        prev = b;
    }
    true
}

/// Whether `buf` may be the start of the HTTP/2 client preface.
pub(super) fn h2_preface(buf: &[u8]) -> bool {
    let p = b"PRI * HTTP/2.0";
    let n = buf.len().min(p.len());
    buf[..n] == p[..n]
}

pub(super) fn is(name: &str, want: &str) -> bool {
    name.eq_ignore_ascii_case(want)
}

/// Hop-by-hop fields never forwarded (besides those the Connection field names).
pub(super) fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|h| is(name, h))
}

/// Tokens of Connection fields.
pub(super) fn connection_tokens<'a>(
    headers: &'a [httparse::Header<'a>],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(|h| is(h.name, "connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Whether a Connection token names `name`, for removal. A token naming a field that frames
/// or routes the message never gets here: the head checks refuse it first (400, or 502 for
/// a response).
pub(super) fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

#[derive(Debug)]
pub(super) enum HeadError {
    Closed,
    Timeout,
    Io,
    TooLarge,
}

impl HeadError {
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Self::Closed => "connection closed before the response head",
            Self::Timeout => "no response head in time",
            Self::Io => "connection failed before the response head",
            Self::TooLarge => "response head too large",
        }
    }
}

/// Reads until `conn.buf` holds a complete response head; its length.
pub(super) async fn read_head(conn: &mut RawUpstream) -> Result<usize, HeadError> {
    let mut scanned = 0;
    loop {
        if let Some(n) = head_end(&conn.buf, scanned) {
            return Ok(n);
        }
        scanned = conn.buf.len();
        if conn.buf.len() > MAX_RESPONSE_HEAD {
            return Err(HeadError::TooLarge);
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(UPSTREAM_BUF_BYTES);
        }
        let got = before(&mut conn.timer, conn.stream.read_buf(&mut conn.buf)).await;
        match got {
            None => return Err(HeadError::Timeout),
            Some(Ok(0)) if conn.buf.is_empty() => return Err(HeadError::Closed),
            Some(Ok(0)) | Some(Err(_)) => return Err(HeadError::Io),
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_answer_is_told_from_interim_ones() {
        assert!(!final_answer_started(b""));
        assert!(!final_answer_started(b"HTTP/1.1 "));
        assert!(final_answer_started(b"HTTP/1.1 4"));
        assert!(!final_answer_started(b"HTTP/1.1 100 Continue\r\n"));
        assert!(!final_answer_started(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(!final_answer_started(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 1"
        ));
        assert!(final_answer_started(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413"
        ));
        assert!(final_answer_started(&vec![b'1'; MAX_RESPONSE_HEAD + 1]));
    }

    #[test]
    fn head_end_and_preface() {
        assert_eq!(
            head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", 0),
            Some(27)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 25), Some(27));
        assert!(h2_preface(b"PRI * HTTP/2.0\r\n"));
        assert!(h2_preface(b"PR"));
        assert!(!h2_preface(b"PUT / HTTP/1.1"));
    }
}
