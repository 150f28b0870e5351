//! Raw request-head guard: sees the client's bytes before hyper does, to catch framing
//! ambiguities that hyper accepts or normalizes silently (request smuggling defence,
//! RFC 9112 sections 2.2, 5, 6 and 7.1).
//!
//! Owns: [`Scanner`], a small strict HTTP/1 framing tracker (heads, Content-Length bodies,
//! chunked bodies, trailers) and [`Guarded`], the IO wrapper that feeds it and raises
//! per-connection flags. A request is refused ([`Scanner::rejected`]) when it has:
//! - a line not ended by CRLF (bare LF), or a CR anywhere else (bare CR);
//! - a request line other than `token SP target SP HTTP/1.0|HTTP/1.1`;
//! - obs-fold, a header name that is not a token (empty, space before the colon, CTLs,
//!   separators), a CTL other than HTAB in a value (NUL...);
//! - Content-Length twice (even identical), or not `1*DIGIT` fitting in 64 bits (lists,
//!   signs, hex, junk);
//! - Transfer-Encoding twice, other than exactly `chunked` (any case: `chunked, gzip`,
//!   `gzip, chunked`, `chunked, chunked`, `chunkedx`, `identity`, empty), on HTTP/1.0, or
//!   together with Content-Length;
//! - two Host fields, or an absolute-form target whose authority differs from Host (the
//!   proxy routes on the authority, a server might use Host: refused, not rewritten);
//! - in a chunked body: a chunk size that is not `1*HEXDIG` of at most 16 digits followed
//!   by nothing or `[BWS] ;extension` (`0x5`, `+5`, empty, overflow), chunk data not
//!   followed by CRLF, or a trailer line that is not a field (a request after a last
//!   chunk that lacks its final CRLF).
//!
//! It also flags a request head longer than the frontend's `max_header_size` when that is
//! below what hyper can enforce (its read buffer has a floor of 8 KiB).
//! Does not own: answering (the handler turns the flag into a 400 and never forwards; a
//! flagged connection gets 400 for every request from then on and closes), nor limits
//! hyper enforces (header count, URI length).
//!
//! A body error is refused before forwarding only when it arrives with the head; otherwise
//! the request is already streaming and hyper aborts it (the server sees a truncated body,
//! never a request of its own, since bodies are re-framed). An HTTP/2 preface
//! (`PRI * HTTP/2.0`) and lines over [`MAX_LINE_BYTES`] stop the scanning (hyper's own
//! limits apply).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest head or chunk-size line tracked, in bytes; longer input is left to hyper.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most hex digits of a chunk size (64 bits).
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading request-line and header lines.
    Head,
    /// Skipping this many Content-Length body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping this many chunk data bytes.
    ChunkData(u64),
    /// Expecting the CR (`false`) or LF (`true`) after chunk data.
    ChunkEnd(bool),
    /// Reading trailer lines after the last chunk.
    Trailer,
    /// Lost track or flagged: no more scanning.
    Off,
}

/// What the head being read has declared so far.
#[derive(Debug, Default)]
struct HeadInfo {
    http10: bool,
    content_length: Option<u64>,
    chunked: bool,
    /// Authority of an absolute-form target.
    authority: Option<Vec<u8>>,
    host: Option<Vec<u8>>,
}

/// Tracks HTTP/1 request framing over a byte stream; see the module doc.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    started: bool,
    info: HeadInfo,
    /// Why a request was refused (the first reason); scanning stops then.
    pub rejected: Option<&'static str>,
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
            info: HeadInfo::default(),
            rejected: None,
            max_head: usize::MAX,
            head_bytes: 0,
            too_large: false,
            head_began: false,
        }
    }
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `b` may appear in a field value (VCHAR, SP, HTAB, obs-text).
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
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
                        (_, 0) => State::ChunkEnd(false),
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::ChunkEnd(lf) => {
                    let want = if lf { b'\n' } else { b'\r' };
                    if data[0] != want {
                        self.reject("chunk data not followed by crlf");
                        return;
                    }
                    data = &data[1..];
                    self.state = if lf {
                        self.line.clear();
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(true)
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
                    if self.state == State::Off {
                        return;
                    }
                    data = &data[end + 1..];
                    let mut line = std::mem::take(&mut self.line);
                    if line.pop_if(|b| *b == b'\r').is_none() {
                        self.reject("line ended by a bare lf");
                        return;
                    }
                    if line.contains(&b'\r') {
                        self.reject("bare cr");
                        return;
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

    /// Whether the bytes fed so far end exactly between two requests (no head begun, no body
    /// left, nothing refused); the fuzz targets compare framing decisions with it.
    #[doc(hidden)]
    pub fn at_request_boundary(&self) -> bool {
        self.state == State::Head
            && !self.started
            && self.line.is_empty()
            && self.rejected.is_none()
    }

    /// Refuses the connection's requests from now on; scanning stops.
    fn reject(&mut self, why: &'static str) {
        self.rejected.get_or_insert(why);
        self.state = State::Off;
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
            State::Head if line.is_empty() => self.end_of_head(),
            State::Head if !self.started => {
                self.started = true;
                self.request_line(line);
            }
            State::Head => self.header_line(line),
            State::ChunkSize => self.chunk_size_line(line),
            State::Trailer if line.is_empty() => self.state = State::Head,
            State::Trailer => {
                if let Err(why) = split_field(line) {
                    self.reject(why);
                }
            }
            State::Body(_) | State::ChunkData(_) | State::ChunkEnd(_) | State::Off => {}
        }
    }

    fn request_line(&mut self, line: &[u8]) {
        if line == b"PRI * HTTP/2.0" {
            // HTTP/2 prior knowledge: frames follow, not HTTP/1 heads.
            self.state = State::Off;
            return;
        }
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.reject("request line is not method sp target sp version");
        };
        if method.is_empty() || !method.iter().copied().all(is_tchar) {
            return self.reject("invalid method");
        }
        if target.is_empty() || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return self.reject("invalid request target");
        }
        self.info.http10 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            _ => return self.reject("unsupported http version"),
        };
        let lower = target.to_ascii_lowercase();
        let rest = lower
            .strip_prefix(b"http://")
            .or_else(|| lower.strip_prefix(b"https://"));
        if let Some(rest) = rest {
            let end = rest
                .iter()
                .position(|b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            self.info.authority = Some(rest[..end].to_vec());
        }
    }

    fn header_line(&mut self, line: &[u8]) {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return self.reject("obs-fold");
        }
        let (name, value) = match split_field(line) {
            Ok(field) => field,
            Err(why) => return self.reject(why),
        };
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.info.chunked {
                return self.reject("several transfer-encoding fields");
            }
            if !value.eq_ignore_ascii_case(b"chunked") {
                return self.reject("transfer-encoding other than chunked");
            }
            self.info.chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if self.info.content_length.is_some() {
                return self.reject("several content-length fields");
            }
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return self.reject("content-length is not a decimal number");
            }
            match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(n) => self.info.content_length = Some(n),
                None => self.reject("content-length too large"),
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            if self.info.host.is_some() {
                return self.reject("several host fields");
            }
            self.info.host = Some(value.to_ascii_lowercase());
        }
    }

    fn end_of_head(&mut self) {
        self.started = false;
        self.head_bytes = 0;
        let info = std::mem::take(&mut self.info);
        if info.chunked && info.content_length.is_some() {
            return self.reject("both content-length and transfer-encoding");
        }
        if info.chunked && info.http10 {
            return self.reject("transfer-encoding on http/1.0");
        }
        if let (Some(authority), Some(host)) = (&info.authority, &info.host)
            && authority != host
        {
            return self.reject("absolute-form target and host differ");
        }
        self.state = if info.chunked {
            State::ChunkSize
        } else {
            match info.content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Head,
            }
        };
    }

    fn chunk_size_line(&mut self, line: &[u8]) {
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > MAX_CHUNK_SIZE_DIGITS {
            return self.reject("invalid chunk size");
        }
        // Only BWS (spaces and tabs) before an extension; `trim_ascii_start` would also
        // skip form feeds, which no chunked decoder downstream accepts.
        let rest = &line[digits..];
        let rest = &rest[rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count()..];
        if !(rest.is_empty() || rest[0] == b';' && rest.iter().copied().all(is_value_byte)) {
            return self.reject("invalid chunk size");
        }
        // At most 16 hex digits: always fits.
        let size = std::str::from_utf8(&line[..digits])
            .ok()
            .and_then(|d| u64::from_str_radix(d, 16).ok());
        self.state = match size {
            Some(0) => State::Trailer,
            Some(n) => State::ChunkData(n),
            None => return self.reject("invalid chunk size"),
        };
    }
}

/// Splits a field line into its name (a token, nothing before the colon) and its value
/// (without leading and trailing whitespace, no CTL but HTAB).
fn split_field(line: &[u8]) -> Result<(&[u8], &[u8]), &'static str> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or("field line without a colon")?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().copied().all(is_tchar) {
        return Err("invalid field name");
    }
    if !value.iter().copied().all(is_value_byte) {
        return Err("invalid character in a field value");
    }
    Ok((name, value.trim_ascii()))
}

/// A client stream whose incoming bytes go through a [`Scanner`]; raises `flag` when a
/// request is refused.
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
    /// Wraps `inner`; `flag` is set once an ambiguous request has been read.
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
    /// `crate::deadline::epoch()` (the access log's `Tq`).
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
    crate::pass::pass_through!(read [Self { inner, .. }] => inner, then scan_read);
}

impl<T> Guarded<T> {
    /// Feeds what a read added to `buf` (after its first `filled` bytes) to the scanner,
    /// raising the flags; the read's result is passed on unchanged.
    fn scan_read(
        &mut self,
        _cx: &mut Context<'_>,
        buf: &ReadBuf<'_>,
        filled: usize,
        res: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        if let Poll::Ready(Ok(())) = res
            && self.scanner.state != State::Off
        {
            self.scanner.feed(&buf.filled()[filled..]);
            if std::mem::take(&mut self.scanner.head_began)
                && let Some(clock) = &self.head_start
            {
                let since = crate::deadline::epoch().elapsed().as_nanos();
                clock.store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
            if let Some(reason) = self.scanner.rejected
                && !self.flag.swap(true, Ordering::AcqRel)
            {
                tracing::info!(
                    reason,
                    "ambiguous request framing, refusing the connection's requests"
                );
            }
            if self.scanner.too_large
                && let Some(f) = &self.too_large
            {
                f.store(true, Ordering::Release);
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    crate::pass::pass_through!(write [Self { inner, .. }] => inner);
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
            assert_eq!(
                s.rejected.is_some(),
                conflict,
                "step {step}: {input:?} {:?}",
                s.rejected
            );
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
    fn flags_ambiguous_framing() {
        let head = |fields: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        for bad in [
            "Content-Length: 1\r\nContent-Length: 1\r\n",
            "Content-Length: 1,1\r\n",
            "Content-Length: +1\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding : chunked\r\n",
            "X: 1\r\n folded\r\n",
            "X: a\x00b\r\n",
            "X: 1\n",
            "X: 1\rY: 2\r\n",
            "Host: y\r\n",
        ] {
            check(&head(bad), true);
        }
        let chunked = |body: &str| {
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
        };
        for bad in [
            "0x5\r\n",
            "+5\r\n",
            "\r\n",
            "10000000000000000\r\n",
            "1\r\nab\r\n",
            "0\r\nGET / HTTP/1.1\r\n",
        ] {
            check(&chunked(bad), true);
        }
        for good in [
            "5;ext\r\nabcde\r\n0\r\n\r\n",
            "a ; x=\"y\"\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
        ] {
            check(&chunked(good), false);
        }
        check("GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", true);
        check("GET http://A/x HTTP/1.1\r\nHost: a\r\n\r\n", false);
        check("GET / HTTP/1.2\r\nHost: a\r\n\r\n", true);
        check(
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
        );
        // HTTP/2 prior knowledge: binary frames are not scanned.
        check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\n\x04", false);
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
