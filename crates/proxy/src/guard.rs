//! Raw request-head guard: sees the client's bytes before hyper does, to catch framing
//! conflicts that hyper normalizes silently (smuggling defence).
//!
//! Owns: [`Scanner`], a small HTTP/1 framing tracker (heads, Content-Length bodies, chunked
//! bodies) that flags a request carrying both `Content-Length` and `Transfer-Encoding`, or a
//! request head longer than the frontend's `max_header_size` when that is below what hyper
//! can enforce (its read buffer has a floor of 8 KiB), and [`Guarded`], the IO wrapper that
//! feeds it and raises per-connection flags.
//! Does not own: answering (the handler turns the flag into a 400 and never forwards),
//! nor other checks hyper already does (invalid names, obs-fold, bad Content-Length).
//! When it loses track (malformed input), it stops scanning: hyper rejects such input.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest head or chunk-size line tracked, in bytes; longer input is left to hyper.
const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading request-line and header lines.
    Head,
    /// Skipping this many Content-Length body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its CRLF (the `+ 2`).
    ChunkData(u64),
    /// Reading trailer lines after the last chunk.
    Trailer,
    /// Lost track or flagged: no more scanning.
    Off,
}

/// Tracks HTTP/1 request framing over a byte stream; see the module doc.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    started: bool,
    content_length: Option<u64>,
    chunked: bool,
    /// A request with both Content-Length and Transfer-Encoding was seen.
    pub conflict: bool,
    /// Longest request head accepted (request line, headers, line ends).
    max_head: usize,
    /// Bytes of the current head so far.
    head_bytes: usize,
    /// A request head longer than `max_head` was seen.
    pub too_large: bool,
    /// A request head began since the flag was last cleared (for the head clock).
    head_began: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
            started: false,
            content_length: None,
            chunked: false,
            conflict: false,
            max_head: usize::MAX,
            head_bytes: 0,
            too_large: false,
            head_began: false,
        }
    }
}

impl Scanner {
    /// Feeds bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Body(n) | State::ChunkData(n) => {
                    let take = n.min(data.len() as u64);
                    data = &data[take as usize..];
                    let left = n - take;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => {
                            self.line.clear();
                            State::ChunkSize
                        }
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::Head | State::ChunkSize | State::Trailer => {
                    let head = self.state == State::Head;
                    if head
                        && !self.started
                        && self.line.is_empty()
                        && !matches!(data[0], b'\r' | b'\n')
                    {
                        self.head_began = true;
                    }
                    let Some(end) = data.iter().position(|&b| b == b'\n') else {
                        if head && !self.count_head(data.len()) {
                            return;
                        }
                        self.push(data);
                        return;
                    };
                    if head && !self.count_head(end + 1) {
                        return;
                    }
                    self.push(&data[..end]);
                    data = &data[end + 1..];
                    let mut line = std::mem::take(&mut self.line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    self.on_line(&line);
                    line.clear();
                    self.line = line;
                }
            }
        }
    }

    /// A scanner that also flags request heads longer than `max_head` bytes.
    pub fn with_max_head(max_head: usize) -> Self {
        Self {
            max_head,
            ..Self::default()
        }
    }

    /// Counts `n` more head bytes; false (and scanning stops) once over the limit.
    fn count_head(&mut self, n: usize) -> bool {
        self.head_bytes = self.head_bytes.saturating_add(n);
        if self.head_bytes > self.max_head {
            self.too_large = true;
            self.state = State::Off;
            return false;
        }
        true
    }

    fn push(&mut self, part: &[u8]) {
        if self.line.len() + part.len() > MAX_LINE_BYTES {
            self.state = State::Off;
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn on_line(&mut self, line: &[u8]) {
        match self.state {
            // Blank lines before a request line are not part of any head.
            State::Head if line.is_empty() && !self.started => self.head_bytes = 0,
            State::Head if line.is_empty() => {
                self.started = false;
                self.head_bytes = 0;
                if self.chunked && self.content_length.is_some() {
                    self.conflict = true;
                    self.state = State::Off;
                } else if self.chunked {
                    self.state = State::ChunkSize;
                } else {
                    self.state = match self.content_length {
                        Some(n) if n > 0 => State::Body(n),
                        _ => State::Head,
                    };
                }
                self.content_length = None;
                self.chunked = false;
            }
            State::Head if !self.started => self.started = true,
            State::Head => {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    return;
                };
                let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
                if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    self.chunked = true;
                } else if name.eq_ignore_ascii_case(b"content-length") {
                    match std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        Some(n) => self.content_length = Some(n),
                        // hyper rejects it; stop tracking.
                        None => self.state = State::Off,
                    }
                }
            }
            State::ChunkSize => {
                let digits = line
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                match std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| u64::from_str_radix(d, 16).ok())
                {
                    Some(0) => self.state = State::Trailer,
                    Some(n) => self.state = State::ChunkData(n.saturating_add(2)),
                    None => self.state = State::Off,
                }
            }
            State::Trailer if line.is_empty() => self.state = State::Head,
            State::Trailer => {}
            State::Body(_) | State::ChunkData(_) | State::Off => {}
        }
    }
}

/// A client stream whose incoming bytes go through a [`Scanner`]; raises `flag` on conflict.
#[derive(Debug)]
pub struct Guarded<T> {
    inner: T,
    scanner: Scanner,
    flag: Arc<AtomicBool>,
    /// Raised when a head exceeds the limit set by [`Guarded::with_head_limit`].
    too_large: Option<Arc<AtomicBool>>,
    /// When the latest request head began arriving (see [`Guarded::with_head_clock`]).
    head_start: Option<Arc<AtomicU64>>,
}

impl<T> Guarded<T> {
    /// Wraps `inner`; `flag` is set once a conflicting request has been read.
    pub fn new(inner: T, flag: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            scanner: Scanner::default(),
            flag,
            too_large: None,
            head_start: None,
        }
    }

    /// Records in `clock` when each request head begins to arrive, as nanoseconds after
    /// `crate::live::epoch()` (the access log's `Tq`).
    pub fn with_head_clock(mut self, clock: Arc<AtomicU64>) -> Self {
        self.head_start = Some(clock);
        self
    }

    /// Also raises `flag` once a request head longer than `max_head` bytes has been read.
    pub fn with_head_limit(mut self, max_head: usize, flag: Arc<AtomicBool>) -> Self {
        self.scanner.max_head = max_head;
        self.too_large = Some(flag);
        self
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res
            && this.scanner.state != State::Off
        {
            this.scanner.feed(&buf.filled()[before..]);
            if std::mem::take(&mut this.scanner.head_began)
                && let Some(clock) = &this.head_start
            {
                let since = crate::live::epoch().elapsed().as_nanos();
                clock.store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
            if this.scanner.conflict {
                this.flag.store(true, Ordering::Release);
            }
            if this.scanner.too_large
                && let Some(f) = &this.too_large
            {
                f.store(true, Ordering::Release);
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of every size from 1 to 7 bytes; all must agree.
    fn check(input: &str, conflict: bool) {
        for step in 1..=7 {
            let mut s = Scanner::default();
            for piece in input.as_bytes().chunks(step) {
                s.feed(piece);
            }
            assert_eq!(s.conflict, conflict, "step {step}: {input:?}");
        }
    }

    #[tokio::test]
    async fn head_clock_marks_the_first_byte_of_each_head() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1024);
        let clock = Arc::new(AtomicU64::new(0));
        let mut g =
            Guarded::new(server, Arc::new(AtomicBool::new(false))).with_head_clock(clock.clone());
        let mut buf = [0u8; 256];
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let _ = g.read(&mut buf).await.unwrap();
        let first = clock.load(Ordering::Relaxed);
        assert_ne!(first, 0, "head start recorded");
        client.write_all(b"Host: x\r\n\r\n").await.unwrap();
        let _ = g.read(&mut buf).await.unwrap();
        assert_eq!(clock.load(Ordering::Relaxed), first, "same head");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        client
            .write_all(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let _ = g.read(&mut buf).await.unwrap();
        assert!(clock.load(Ordering::Relaxed) > first, "next head");
    }

    #[test]
    fn flags_heads_over_the_limit_only() {
        let run = |input: &str, max: usize| {
            let mut flags = Vec::new();
            for step in 1..=7 {
                let mut s = Scanner::with_max_head(max);
                for piece in input.as_bytes().chunks(step) {
                    s.feed(piece);
                }
                flags.push(s.too_large);
            }
            assert!(flags.windows(2).all(|w| w[0] == w[1]), "{input:?}");
            flags[0]
        };
        let head = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"; // 27 bytes
        assert!(!run(head, 27));
        assert!(run(head, 26));
        // Each head of a keep-alive connection is measured on its own; bodies do not count.
        let two = "POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\n\
                   0123456789012345678901234567890123456789GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(!run(two, 39), "the first head is 39 bytes");
        assert!(run(two, 38));
    }

    #[test]
    fn flags_cl_te_conflicts_only() {
        check("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
        check(
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
        );
        check(
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
            true,
        );
        // A body that looks like a conflicting head is body, not a head.
        check(
            "POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
             GET / HTTP/1.1\r\n\r\n",
            false,
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab\r\nc\r\n0\r\n\r\n",
            false,
        );
        // The second, pipelined request after a chunked body is scanned as a head.
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nwxyz\r\n0\r\nX-T: 1\r\n\r\n\
             POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            true,
        );
    }
}
