//! The raw HTTP/1.1 forwarder: keep-alive requests relayed on the proxy's own buffers, in the
//! client connection's task, as HAProxy does.
//!
//! hyper serves a request through two connections in two tasks joined by channels, converting
//! heads to `http::Request`/`Response` and back; it also keeps 16 KiB of buffers per client
//! connection for the connection's whole life. This path parses the head with `httparse`,
//! rewrites it into the bytes the server gets, writes it on a pooled server connection of its
//! own ([`RawUpstream`]) and relays the response head and body back, framing checked but bytes
//! untouched. Between requests a client connection holds no buffer (reads go through a
//! per-thread scratch buffer), so an idle keep-alive client costs a few hundred bytes.
//!
//! Owns: reading request heads (`client_header`, the head size and count limits), the plain
//! HTTP/1.1 request path (protect, the smuggling checks on parsed heads, header rewriting,
//! sending on a server connection and the stale-connection retries, counters, the access
//! log), response framing (Content-Length, chunked, close-delimited, 1xx) and the raw
//! upstream pool use. Routing, picking a server, connect retries, persistence and passive
//! health are the request's journey (`journey`). Anything else is handed to hyper unchanged, before a byte of the request is acted on
//! ([`Outcome::Fallback`]): HTTP/1.0 clients, request bodies in chunked encoding,
//! `Expect`, `CONNECT`, and the HTTP/2 preface (h2c prior knowledge); the connection then
//! stays with hyper.
//! Does not own: the raw head guard (`guard`, which sees every byte read here first),
//! admission and the connection counters (`super::serve`), selection, queueing and live state.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode, Uri};
use tandem_balance::ServerId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{ConnCtx, denied, forwarded_value, nominated_framing};
use crate::access::{AccessLog, ms};
use crate::body::error_page;
use crate::deadline::Deadline;
use crate::error::ProxyError;
use crate::journey::{Journey, Leg, NewCookie, Tries};
use crate::live::{LiveBackend, RawUpstream};
use crate::plan::{Algorithm, Backend, BackendId, Forwarded, Frontend, LogFormat, Persistence};
use crate::protect::Refusal;

/// Per-thread read buffer for client reads: a connection keeps only the bytes it got.
const SCRATCH_BYTES: usize = 16 * 1024;
/// Request headers parsed on the stack; a larger `max_headers` uses the heap.
const HEADER_SLOTS: usize = 128;
/// Largest response head accepted from a server.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most response headers accepted from a server.
const MAX_RESPONSE_HEADERS: usize = 128;
/// A client buffer up to this capacity is kept between requests; a larger one is freed.
const KEEP_BUF_BYTES: usize = 1024;
/// Read size on server connections (and for streamed request bodies).
const UPSTREAM_BUF_BYTES: usize = 16 * 1024;
/// How long a connection closed with its request body unread still drains the client.
const LINGER: Duration = Duration::from_secs(2);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// How the raw path left a client connection.
pub(crate) enum Outcome {
    /// Closed (or to be dropped): nothing more to do.
    Closed,
    /// To be served by hyper from here, starting with these bytes already read.
    Fallback(Vec<u8>),
}

/// Reads what the client sent into `buf` through the per-thread scratch buffer.
fn poll_fill<T: AsyncRead + Unpin>(
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

async fn fill<T: AsyncRead + Unpin>(io: &mut T, buf: &mut Vec<u8>) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_fill(io, cx, buf)).await
}

/// Runs `fut` unless `timer` fires first (`None`).
async fn before<F: Future>(timer: &mut Deadline, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        timer.poll_expired(cx).map(|()| None)
    })
    .await
}

/// End of a head (`\r\n\r\n`) in `buf`, searching from `from`; the head's length.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

/// Whether `buf` (what a server sent so far) holds the start of a final response: past any
/// complete interim (1xx) heads, a status line whose code does not begin with 1. A head too
/// large to be one counts (reading it will say so).
fn final_answer_started(buf: &[u8]) -> bool {
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

/// How sending request bytes to a server ended.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// All of them were written.
    All,
    /// The server began a final answer first; it is in the read buffer, the rest unsent.
    Answered,
}

/// Writes `data` to the server while watching for an early answer (a server may refuse an
/// upload before reading it, and then stop reading or close). Interim responses are kept in
/// `buf` (the connection's read buffer) for the head reader. A write that fails after the
/// server answered is an answer.
async fn send_or_answer<S: AsyncRead + AsyncWrite + Unpin>(
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
async fn linger<T: AsyncRead + Unpin>(io: &mut T) {
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

/// Whether every line in `head` ends with CRLF and no CR appears elsewhere (RFC 9112
/// section 2.2: a bare LF or CR is refused, never guessed at). A final lone CR is allowed
/// (the LF may still come).
fn crlf_lines(head: &[u8]) -> bool {
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
fn h2_preface(buf: &[u8]) -> bool {
    let p = b"PRI * HTTP/2.0";
    let n = buf.len().min(p.len());
    buf[..n] == p[..n]
}

/// Serves plain HTTP/1.1 requests on `io` until the connection ends or needs hyper.
pub(crate) async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ConnCtx,
    io: &mut T,
    shutdown: &mut watch::Receiver<bool>,
    tls: bool,
) -> Outcome {
    let fe: &Frontend = &ctx.snap.plan.frontends()[ctx.frontend];
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    let mut timer = Deadline::new(tokio::time::Instant::now() + fe.timeouts.header);
    loop {
        if buf.is_empty() && buf.capacity() > KEEP_BUF_BYTES {
            buf = Vec::new();
        }
        // 1. A complete request head, within `client_header`.
        timer.set(tokio::time::Instant::now() + fe.timeouts.header);
        let mut head_began = (!buf.is_empty()).then(Instant::now);
        let mut scanned = 0;
        let head_len = {
            let mut stop = std::pin::pin!(crate::deadline::stopped(shutdown));
            loop {
                // Empty lines before a request line are ignored (RFC 9112 section 2.2).
                let blank = buf
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                if blank > 0 {
                    buf.drain(..blank);
                    scanned = 0;
                }
                if first && !tls && !buf.is_empty() && h2_preface(&buf) {
                    if buf.len() >= 4 {
                        return Outcome::Fallback(buf);
                    }
                } else if let Some(n) = head_end(&buf, scanned) {
                    break n;
                }
                scanned = buf.len();
                if !crlf_lines(&buf) {
                    let err = ProxyError::BadRequest {
                        reason: "line not ended by crlf",
                    };
                    refuse(ctx, io, err, None, None, true).await;
                    return Outcome::Closed;
                }
                if buf.len() > fe.max_header_bytes {
                    let err = ProxyError::HeaderTooLarge {
                        limit: fe.max_header_bytes,
                    };
                    refuse(ctx, io, err, None, None, true).await;
                    return Outcome::Closed;
                }
                let idle = buf.is_empty();
                let step = std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = poll_fill(io, cx, &mut buf) {
                        return Poll::Ready(Some(r));
                    }
                    if timer.poll_expired(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    if idle && stop.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Ok(0)));
                    }
                    Poll::Pending
                })
                .await;
                match step {
                    Some(Ok(0)) | Some(Err(_)) => return Outcome::Closed,
                    Some(Ok(_)) => {
                        head_began.get_or_insert_with(Instant::now);
                    }
                    None => {
                        debug!(frontend = %fe.name, client = %ctx.peer, "no complete request head within client_header");
                        return Outcome::Closed;
                    }
                }
            }
        };
        first = false;
        if head_len > fe.max_header_bytes {
            let err = ProxyError::HeaderTooLarge {
                limit: fe.max_header_bytes,
            };
            refuse(ctx, io, err, None, None, true).await;
            return Outcome::Closed;
        }

        // 2. What the head asks for.
        let start = Instant::now();
        let tq = head_began.map_or(-1, |t| ms(start.saturating_duration_since(t)));
        let mut prepared = match analyze(ctx, &buf[..head_len], start) {
            Analyzed::Fallback => return Outcome::Fallback(buf),
            Analyzed::Refuse {
                err,
                backend,
                line,
                close,
            } => {
                let log = AccessLog::begin(&ctx.snap, ctx.frontend, ctx.peer, start, line, tq);
                if refuse(ctx, io, err, backend, log, close).await {
                    return Outcome::Closed;
                }
                buf.drain(..head_len);
                continue;
            }
            Analyzed::Forward(p) => p,
        };

        // 3. Forward it; the request future is boxed so an idle connection does not carry
        // its state.
        let mut log = AccessLog::begin(
            &ctx.snap,
            ctx.frontend,
            ctx.peer,
            start,
            prepared.line.take(),
            tq,
        );
        let backend = prepared.backend;
        let client_close = prepared.client_close;
        prepared.stopping = *shutdown.borrow();
        let ended = Box::pin(exchange(
            ctx, io, &mut buf, head_len, prepared, start, &mut log,
        ))
        .await;
        match ended {
            Ended::KeepAlive => {}
            Ended::Close => {
                let _ = io.shutdown().await;
                return Outcome::Closed;
            }
            Ended::CloseUnread => {
                let _ = io.shutdown().await;
                linger(io).await;
                return Outcome::Closed;
            }
            Ended::Failed(err, consumed) => {
                let close =
                    refuse(ctx, io, err, Some(backend), log, !consumed || client_close).await;
                if close {
                    if !consumed {
                        linger(io).await;
                    }
                    return Outcome::Closed;
                }
            }
        }
        if *shutdown.borrow() {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
    }
}

/// Answers a request with an error page (nothing of a response was sent yet), closing the
/// connection after it when `close` or the error asks for it; whether it closed.
async fn refuse<T: AsyncWrite + Unpin>(
    ctx: &ConnCtx,
    io: &mut T,
    err: ProxyError,
    backend: Option<BackendId>,
    log: Option<AccessLog>,
    close: bool,
) -> bool {
    let fe = &ctx.snap.plan.frontends()[ctx.frontend];
    let status = err.status();
    if err.side() != crate::error::Side::Client || status != StatusCode::TOO_MANY_REQUESTS {
        warn!(frontend = %fe.name, client = %ctx.peer, status = status.as_u16(),
            kind = err.kind(), side = ?err.side(), cause = %err, "request failed");
    }
    if let Some(mut l) = log {
        l.backend = backend;
        l.status = status.as_u16();
        l.termination = err.termination();
        l.emit();
    }
    ctx.snap.frontends[ctx.frontend]
        .stats
        .counters
        .response(status.as_u16());
    if let Some(id) = backend {
        ctx.snap.backends[id]
            .stats
            .counters
            .response(status.as_u16());
    }
    let close = close
        || ctx.refused.is_some()
        || status == StatusCode::BAD_REQUEST
        || status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let page = error_page(status);
    let mut out = Vec::with_capacity(160 + page.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/html\r\ncache-control: no-cache\r\n");
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(page.len().to_string().as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&page);
    let sent = io.write_all(&out).await.is_ok() && io.flush().await.is_ok();
    if close && sent {
        let _ = io.shutdown().await;
    }
    close || !sent
}

/// A request ready to forward.
struct Prepared {
    backend: BackendId,
    /// The head the server gets.
    head: Vec<u8>,
    /// Content-Length of the request body.
    body: u64,
    /// The method may be sent twice (retry on a connection that closed unanswered).
    idempotent: bool,
    /// `HEAD`: the response has no body whatever its framing says.
    head_method: bool,
    /// The client asked to close after this response.
    client_close: bool,
    /// Server named by the persistence cookie.
    cookie: Option<ServerId>,
    /// Path, for `algorithm: uri`.
    key_path: Option<String>,
    /// The hashed header's value, for `algorithm: header(NAME)`.
    key_header: Option<Vec<u8>>,
    /// The request line for the access log, kept only when logging.
    line: Option<(Method, Uri)>,
    /// The proxy is shutting down: ask the client to close after this response.
    stopping: bool,
}

enum Analyzed {
    Forward(Prepared),
    Refuse {
        err: ProxyError,
        backend: Option<BackendId>,
        line: Option<(Method, Uri)>,
        /// Close the connection after the answer.
        close: bool,
    },
    Fallback,
}

fn is(name: &str, want: &str) -> bool {
    name.eq_ignore_ascii_case(want)
}

/// Hop-by-hop fields never forwarded (besides those the Connection field names).
fn hop_by_hop(name: &str) -> bool {
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
fn connection_tokens<'a>(
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
fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// Parses and checks a complete request head, routes it and builds the head the server gets.
fn analyze(ctx: &ConnCtx, head: &[u8], now: Instant) -> Analyzed {
    let plan = &ctx.snap.plan;
    let fe = &plan.frontends()[ctx.frontend];
    let live_fe = &ctx.snap.frontends[ctx.frontend];
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut heap;
    let hdrs: &mut [httparse::Header<'_>] = if fe.max_headers <= HEADER_SLOTS {
        &mut slots[..fe.max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; fe.max_headers];
        &mut heap
    };
    let refuse = |err, line| Analyzed::Refuse {
        err,
        backend: None,
        line,
        close: true,
    };
    if !crlf_lines(head) {
        return refuse(
            ProxyError::BadRequest {
                reason: "line not ended by crlf",
            },
            None,
        );
    }
    let mut req = httparse::Request::new(hdrs);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return refuse(
                ProxyError::HeaderTooLarge {
                    limit: fe.max_header_bytes,
                },
                None,
            );
        }
        Ok(httparse::Status::Partial) | Err(_) => {
            return refuse(
                ProxyError::BadRequest {
                    reason: "invalid request head",
                },
                None,
            );
        }
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return refuse(
            ProxyError::BadRequest {
                reason: "invalid request head",
            },
            None,
        );
    };
    let headers: &[httparse::Header<'_>] = req.headers;
    if minor == 0 || method == "CONNECT" || method == "PRI" {
        return Analyzed::Fallback;
    }
    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut body: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        let name = h.name;
        if is(name, "host") {
            hosts += 1;
            host = Some(h.value);
        } else if is(name, "content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (n, body) {
                (Some(n), None) => body = Some(n),
                _ => {
                    return refuse(
                        ProxyError::BadRequest {
                            reason: "invalid content-length",
                        },
                        None,
                    );
                }
            }
        } else if is(name, "transfer-encoding") {
            chunked = true;
        } else if is(name, "expect") {
            return Analyzed::Fallback;
        }
    }
    let line = (fe.log_format != LogFormat::Off).then(|| {
        (
            Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
            Uri::try_from(target).unwrap_or_default(),
        )
    });
    if let Some(why) = ctx.refused {
        return refuse(denied(why), line);
    }
    let body_len = body.unwrap_or(0);
    if let Some(t) = &live_fe.sources
        && !t.request(ctx.peer.ip(), now)
    {
        live_fe.stats.denied[Refusal::RequestRate as usize].fetch_add(1, Ordering::Relaxed);
        // Kept open for the next request unless a body is left unread or the client asked
        // to close.
        let client_close = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"close"));
        return Analyzed::Refuse {
            err: denied(Refusal::RequestRate),
            backend: None,
            line,
            close: body_len > 0 || client_close,
        };
    }
    if chunked && body.is_some() {
        return refuse(
            ProxyError::BadRequest {
                reason: "both content-length and transfer-encoding",
            },
            line,
        );
    }
    if chunked {
        // Chunked request bodies are relayed by hyper (the guard has checked the framing).
        return Analyzed::Fallback;
    }
    if hosts > 1 {
        return refuse(
            ProxyError::BadRequest {
                reason: "several host headers",
            },
            line,
        );
    }
    if nominated_framing(connection_tokens(headers)).is_some() {
        return refuse(
            ProxyError::BadRequest {
                reason: "connection header names a framing header",
            },
            line,
        );
    }
    // Absolute form (`GET http://host/path`): route on its authority, send the origin form.
    let absolute = (!target.starts_with('/') && target != "*")
        .then(|| Uri::try_from(target).ok())
        .flatten()
        .filter(|u| u.authority().is_some());
    if !target.starts_with('/') && target != "*" && absolute.is_none() {
        return refuse(
            ProxyError::BadRequest {
                reason: "invalid request target",
            },
            line,
        );
    }
    if let (Some(u), Some(h)) = (&absolute, host)
        && !u
            .authority()
            .is_some_and(|a| a.as_str().as_bytes().eq_ignore_ascii_case(h.trim_ascii()))
    {
        // The proxy routes on the authority, a server might use Host: refused, not rewritten.
        return refuse(
            ProxyError::BadRequest {
                reason: "absolute-form target and host differ",
            },
            line,
        );
    }
    if host.is_none() && absolute.is_none() {
        return refuse(
            ProxyError::BadRequest {
                reason: "http/1.1 request without host",
            },
            line,
        );
    }
    let (path_query, path) = match &absolute {
        Some(u) => {
            let pq = u.path_and_query().map_or("/", |pq| pq.as_str());
            (pq, u.path())
        }
        None => (target, target.split_once('?').map_or(target, |(p, _)| p)),
    };
    let route_host: Option<&str> = match &absolute {
        Some(u) => u.host(),
        None => host
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|v| v.trim())
            .map(|v| {
                if v.starts_with('[') {
                    v.find(']').map_or(v, |end| &v[..=end])
                } else {
                    v.split_once(':').map_or(v, |(h, _port)| h)
                }
            }),
    };
    let header = |name: &hyper::header::HeaderName| {
        headers
            .iter()
            .find(|h| is(h.name, name.as_str()))
            .map(|h| h.value)
    };
    let Some(backend) = crate::journey::route(fe, route_host, path, header) else {
        return refuse(
            ProxyError::NoRoute {
                frontend: fe.name.clone(),
            },
            line,
        );
    };
    let be: &Backend = &plan.backends()[backend];
    let cookie = match &be.persistence {
        Some(Persistence::Cookie { name }) => cookie_server(headers, name),
        _ => None,
    };
    let key_path = matches!(be.algorithm, Algorithm::Uri).then(|| path.to_owned());
    let key_header = plan.hash_header(backend).and_then(|name| {
        headers
            .iter()
            .find(|h| is(h.name, name.as_str()))
            .map(|h| h.value.to_vec())
    });

    // The head the server gets.
    let mut out = Vec::with_capacity(head.len() + 160);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut client_close = false;
    let mut named = false;
    for t in connection_tokens(headers) {
        if t.eq_ignore_ascii_case(b"close") {
            client_close = true;
        } else if !t.eq_ignore_ascii_case(b"keep-alive") {
            named = true;
        }
    }
    let xfwd = fe.forwarded == Forwarded::XForwarded;
    for h in headers {
        if hop_by_hop(h.name)
            || (named && named_by_connection(headers, h.name))
            || (xfwd && (is(h.name, "x-forwarded-proto") || is(h.name, "x-forwarded-host")))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let host_value: Option<&[u8]> = match (host, &absolute) {
        (Some(h), _) => Some(h),
        (None, Some(u)) => {
            let a = u.authority().map_or("", |a| a.as_str());
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
            Some(a.as_bytes())
        }
        (None, None) => None,
    };
    match fe.forwarded {
        Forwarded::XForwarded => {
            out.extend_from_slice(b"x-forwarded-for: ");
            out.extend_from_slice(ctx.peer_value.as_bytes());
            out.extend_from_slice(b"\r\nx-forwarded-proto: ");
            out.extend_from_slice(ctx.proto.as_bytes());
            out.extend_from_slice(b"\r\n");
            if let Some(h) = host_value {
                out.extend_from_slice(b"x-forwarded-host: ");
                out.extend_from_slice(h);
                out.extend_from_slice(b"\r\n");
            }
        }
        Forwarded::Rfc7239 => {
            let host = host_value.and_then(|h| hyper::header::HeaderValue::from_bytes(h).ok());
            if let Some(v) = forwarded_value(ctx.peer.ip(), &ctx.proto, host.as_ref()) {
                out.extend_from_slice(b"forwarded: ");
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        Forwarded::None => {}
    }
    out.extend_from_slice(b"\r\n");
    Analyzed::Forward(Prepared {
        backend,
        head: out,
        body: body_len,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        head_method: method == "HEAD",
        client_close,
        cookie,
        key_path,
        key_header,
        line,
        stopping: false,
    })
}

/// The server a persistence cookie named `name` points to, if the request carries one.
fn cookie_server(headers: &[httparse::Header<'_>], name: &str) -> Option<ServerId> {
    crate::journey::cookie_server(
        headers
            .iter()
            .filter(|h| is(h.name, "cookie"))
            .map(|h| std::str::from_utf8(h.value).ok()),
        name,
    )
}

/// How an exchange ended.
enum Ended {
    /// Response delivered; the connection may serve another request.
    KeepAlive,
    /// Response delivered (or cut after its head was sent): close the connection.
    Close,
    /// The server answered before the request body was all sent (an early 413 or 401 to an
    /// upload): the answer was relayed, the rest of the body is unread. Close, draining the
    /// client's input for a moment so the close does not reset the answer away.
    CloseUnread,
    /// Nothing was sent to the client; answer with this error. `true` when the request
    /// (head and body) was entirely consumed from the client.
    Failed(ProxyError, bool),
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the response head said.
struct ResponseHead {
    status: u16,
    framing: Framing,
    /// The server will close the connection after this response.
    server_close: bool,
    /// The head the client gets (without the final CRLF).
    out: Vec<u8>,
}

/// Parses a complete response head and rewrites it for the client.
fn parse_response(head: &[u8], head_method: bool) -> Result<ResponseHead, &'static str> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete response head"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many response headers"),
        Err(_) => return Err("malformed response head"),
    }
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err("malformed response head");
    };
    let headers: &[httparse::Header<'_>] = resp.headers;
    let mut length: Option<u64> = None;
    let mut te_last_chunked: Option<bool> = None;
    let mut keep_alive_token = false;
    let mut close_token = false;
    let mut named = false;
    if nominated_framing(connection_tokens(headers)).is_some() {
        return Err("connection header names a framing header");
    }
    for t in connection_tokens(headers) {
        if t.eq_ignore_ascii_case(b"close") {
            close_token = true;
        } else if t.eq_ignore_ascii_case(b"keep-alive") {
            keep_alive_token = true;
        } else {
            named = true;
        }
    }
    for h in headers {
        if is(h.name, "content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("invalid content-length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting content-length");
            }
            length = Some(n);
        } else if is(h.name, "transfer-encoding") {
            let last = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .map(<[u8]>::trim_ascii)
                .unwrap_or_default();
            te_last_chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        }
    }
    if te_last_chunked.is_some() && length.is_some() {
        return Err("both content-length and transfer-encoding");
    }
    let framing = if head_method || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else {
        match (te_last_chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let server_close = close_token || (minor == 0 && !keep_alive_token);
    let mut out = Vec::with_capacity(head.len() + 96);
    out.extend_from_slice(b"HTTP/1.1 ");
    if !(100..1000).contains(&status) {
        return Err("invalid status code");
    }
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    match resp.reason {
        Some(r) if !r.is_empty() => out.extend_from_slice(r.as_bytes()),
        _ => out.extend_from_slice(
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .as_bytes(),
        ),
    }
    out.extend_from_slice(b"\r\n");
    for h in headers {
        // The response's own framing is relayed as is: Transfer-Encoding stays.
        let drop =
            (hop_by_hop(h.name) && !is(h.name, "transfer-encoding") && !is(h.name, "trailer"))
                || (named && named_by_connection(headers, h.name));
        if drop {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    Ok(ResponseHead {
        status,
        framing,
        server_close,
        out,
    })
}

/// Finds the end of a chunked body in a byte stream (lenient about extensions and
/// trailers, strict about sizes and the CRLF after data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunks {
    /// In a chunk-size line: the size so far, its digit count, and whether an extension (or
    /// the line end) began.
    Size { size: u64, digits: u8, ext: bool },
    /// In chunk data: bytes left.
    Data(u64),
    /// After chunk data: expecting CR (`false`) or LF (`true`).
    DataEnd(bool),
    /// In the trailer section: bytes on the current line.
    Trailer(u32),
    /// The body ended.
    Done,
}

impl Chunks {
    const START: Self = Self::Size {
        size: 0,
        digits: 0,
        ext: false,
    };

    /// Feeds body bytes; `Ok(Some(n))` when the body ends after the first `n` of them.
    fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut i = 0;
        while i < data.len() {
            match *self {
                Self::Done => return Ok(Some(i)),
                Self::Data(n) => {
                    let take = n.min((data.len() - i) as u64);
                    i += take as usize;
                    *self = if n == take {
                        Self::DataEnd(false)
                    } else {
                        Self::Data(n - take)
                    };
                }
                Self::DataEnd(lf) => {
                    let want = if lf { b'\n' } else { b'\r' };
                    if data[i] != want {
                        return Err("chunk data not followed by crlf");
                    }
                    i += 1;
                    *self = if lf { Self::START } else { Self::DataEnd(true) };
                }
                Self::Size { size, digits, ext } => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\n' => {
                            if digits == 0 {
                                return Err("empty chunk size");
                            }
                            *self = if size == 0 {
                                Self::Trailer(0)
                            } else {
                                Self::Data(size)
                            };
                        }
                        _ if ext => {}
                        b'\r' | b';' | b' ' | b'\t' => {
                            *self = Self::Size {
                                size,
                                digits,
                                ext: true,
                            }
                        }
                        _ => {
                            let d = (b as char).to_digit(16).ok_or("invalid chunk size")?;
                            if digits >= 16 {
                                return Err("chunk size too large");
                            }
                            *self = Self::Size {
                                size: size << 4 | u64::from(d),
                                digits: digits + 1,
                                ext: false,
                            };
                        }
                    }
                }
                Self::Trailer(n) => {
                    let b = data[i];
                    i += 1;
                    *self = match b {
                        b'\n' if n == 0 => Self::Done,
                        b'\n' => Self::Trailer(0),
                        b'\r' => Self::Trailer(n),
                        _ => Self::Trailer(n.saturating_add(1)),
                    };
                }
            }
        }
        Ok((*self == Self::Done).then_some(data.len()))
    }
}

/// Where a response body relay failed.
enum BodyError {
    Server(io::Error),
    ServerTimeout,
    Client,
    Framing,
}

/// Forwards one request and relays its response. Consumes the request from `buf` once it
/// has been sent (the bytes of a pipelined next request stay).
async fn exchange<T: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ConnCtx,
    io: &mut T,
    buf: &mut Vec<u8>,
    head_len: usize,
    p: Prepared,
    start: Instant,
    log: &mut Option<AccessLog>,
) -> Ended {
    let mut journey = Journey::new(&ctx.snap, p.backend, Tries::http);
    let backend: &Backend = journey.backend;
    let live: &LiveBackend = journey.live;
    let live_fe = &ctx.snap.frontends[ctx.frontend];
    let client_ip = ctx.peer.ip();
    let persist = journey.persisted(|_| p.cookie, client_ip, start);
    let breq = tandem_balance::Request {
        client_ip,
        path: p.key_path.as_deref().unwrap_or("/"),
        header: p.key_header.as_deref(),
        persist,
    };
    let buffered = ((buf.len() - head_len) as u64).min(p.body);
    // The whole request is in hand: it can be sent again on another connection.
    let resendable = buffered == p.body;
    // What follows is the next request (pipelining) or the rest of this body.
    let body_now = buf[head_len..head_len + buffered as usize].to_vec();
    buf.drain(..head_len + buffered as usize);
    // The request has been read entirely from the client.
    let mut consumed = resendable;

    let shared = backend.send_proxy.is_none();
    let mut stale_retries = 0;
    loop {
        let leg = journey
            .connect(&breq, log.as_mut(), |i| {
                raw_connection(ctx, backend, &backend.servers[i], &live.servers[i])
            })
            .await;
        let Leg {
            slot,
            mut conn,
            reused: was_reused,
        } = match leg {
            Ok(leg) => leg,
            Err(e) => return Ended::Failed(e, consumed),
        };
        let server = &backend.servers[slot.index];
        let sink = journey.request_sent(&live_fe.stats, &slot);
        let server_timeout = backend.timeouts.server;
        conn.timer.set(tokio::time::Instant::now() + server_timeout);

        // Send the request: head and the body bytes in hand, then the rest of the body,
        // unless the server answers first (`upload_cut`).
        let sent = if body_now.is_empty() {
            before(
                &mut conn.timer,
                send_or_answer(&mut conn.stream, &mut conn.buf, &p.head),
            )
            .await
        } else {
            let mut both = Vec::with_capacity(p.head.len() + body_now.len());
            both.extend_from_slice(&p.head);
            both.extend_from_slice(&body_now);
            before(
                &mut conn.timer,
                send_or_answer(&mut conn.stream, &mut conn.buf, &both),
            )
            .await
        };
        let mut upload_cut = false;
        match sent {
            Some(Ok(Sent::All)) => sink.bytes_in(buffered),
            Some(Ok(Sent::Answered)) => upload_cut = true,
            Some(Err(e)) if was_reused && resendable && stale_retries < 8 => {
                debug!(server = %server.name, cause = %e, "stale pooled connection");
                stale_retries += 1;
                continue;
            }
            Some(Err(e)) => {
                return Ended::Failed(send_failed(server, server_timeout, Some(e)), consumed);
            }
            None => return Ended::Failed(send_failed(server, server_timeout, None), consumed),
        }
        if !resendable && !upload_cut {
            // Stream the rest of the body from the client (its inactivity bounded by
            // `client_idle`), keeping whatever follows it for the next request.
            let mut left = p.body - buffered;
            while left > 0 {
                if buf.is_empty() {
                    match fill(io, buf).await {
                        Ok(0) | Err(_) => return Ended::Close,
                        Ok(_) => {}
                    }
                }
                let take = (buf.len() as u64).min(left) as usize;
                conn.timer.set(tokio::time::Instant::now() + server_timeout);
                match before(
                    &mut conn.timer,
                    send_or_answer(&mut conn.stream, &mut conn.buf, &buf[..take]),
                )
                .await
                {
                    Some(Ok(Sent::All)) => {}
                    Some(Ok(Sent::Answered)) => {
                        debug!(server = %server.name, "server answered before the request body was sent");
                        upload_cut = true;
                        break;
                    }
                    Some(Err(e)) => {
                        return Ended::Failed(send_failed(server, server_timeout, Some(e)), false);
                    }
                    None => {
                        return Ended::Failed(send_failed(server, server_timeout, None), false);
                    }
                }
                sink.bytes_in(take as u64);
                buf.drain(..take);
                left -= take as u64;
            }
            consumed = left == 0;
        }
        if !upload_cut
            && !matches!(
                before(&mut conn.timer, conn.stream.flush()).await,
                Some(Ok(()))
            )
        {
            return Ended::Failed(
                ProxyError::BadResponse {
                    server: server.name.clone(),
                    reason: "connection failed while sending the request",
                },
                consumed,
            );
        }

        // The response head (after any interim 1xx responses, which are relayed).
        let (resp, head_len_resp) = loop {
            let got = read_head(&mut conn).await;
            let n = match got {
                Ok(n) => n,
                Err(HeadError::Closed)
                    if was_reused && resendable && p.idempotent && stale_retries < 8 =>
                {
                    debug!(server = %server.name, "pooled connection closed before answering");
                    stale_retries += 1;
                    conn.buf.clear();
                    break (None, 0);
                }
                Err(HeadError::Timeout) => {
                    journey.server_silent(&slot);
                    return Ended::Failed(
                        ProxyError::ServerTimeout {
                            server: server.name.clone(),
                            after: server_timeout,
                        },
                        consumed,
                    );
                }
                Err(e) => {
                    return Ended::Failed(
                        ProxyError::BadResponse {
                            server: server.name.clone(),
                            reason: e.reason(),
                        },
                        consumed,
                    );
                }
            };
            let head = match parse_response(&conn.buf[..n], p.head_method) {
                Ok(h) => h,
                Err(reason) => {
                    return Ended::Failed(
                        ProxyError::BadResponse {
                            server: server.name.clone(),
                            reason,
                        },
                        consumed,
                    );
                }
            };
            if head.status == 101 {
                return Ended::Failed(
                    ProxyError::BadResponse {
                        server: server.name.clone(),
                        reason: "switching protocols without an upgrade request",
                    },
                    consumed,
                );
            }
            if (100..200).contains(&head.status) {
                let mut out = head.out;
                out.extend_from_slice(b"\r\n");
                if io.write_all(&out).await.is_err() {
                    return Ended::Close;
                }
                conn.buf.drain(..n);
                continue;
            }
            break (Some(head), n);
        };
        let Some(resp) = resp else {
            // Stale pooled connection: the same server again, on a new connection.
            continue;
        };
        // Relay the response.
        let status = resp.status;
        let elapsed = start.elapsed();
        journey.responded(&slot, status, elapsed);
        live.stats.counters.response(status);
        live_fe.stats.counters.response(status);
        if let Some(l) = log.as_mut() {
            l.tr = ms(elapsed);
            l.status = status;
        }
        // The client's request body not all read: it cannot send another request.
        let unread = upload_cut && !consumed;
        let close = p.client_close || resp.framing == Framing::UntilClose || p.stopping || unread;
        let mut out = resp.out;
        if let Some(c) = journey.persist_new_user(&slot, client_ip, start) {
            set_cookie(&mut out, c);
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let relayed = relay_body(
            io,
            &mut conn,
            head_len_resp,
            resp.framing,
            out,
            server_timeout,
        )
        .await;
        let (bytes, end) = match relayed {
            Ok(b) => (b, *b"--"),
            Err((b, BodyError::Client)) => (b, *b"CD"),
            Err((b, BodyError::ServerTimeout)) => (b, *b"sD"),
            Err((b, BodyError::Server(e))) => {
                debug!(server = %server.name, cause = %e, "server failed while sending the response body");
                (b, *b"SD")
            }
            Err((b, BodyError::Framing)) => (b, *b"SD"),
        };
        sink.bytes_out(bytes);
        let complete = end == *b"--";
        if let Some(mut l) = log.take() {
            l.bytes = bytes;
            l.termination = end;
            l.emit();
        }
        if complete
            && shared
            && !upload_cut
            && !resp.server_close
            && resp.framing != Framing::UntilClose
            && conn.buf.is_empty()
        {
            slot.server.put_raw(conn, backend.max_idle_per_server);
        }
        drop(slot);
        return if unread {
            Ended::CloseUnread
        } else if complete && !close {
            Ended::KeepAlive
        } else {
            Ended::Close
        };
    }
}

/// A connection to `server` for the raw forwarder: a pooled one that is still open, else a
/// new one. `true` if reused.
async fn raw_connection(
    ctx: &ConnCtx,
    backend: &Backend,
    server: &crate::plan::Server,
    state: &crate::live::ServerState,
) -> Result<(RawUpstream, bool), ProxyError> {
    // With `send_proxy`, a connection is bound to the client it was opened for: never shared.
    while backend.send_proxy.is_none()
        && let Some(mut c) = state.take_raw()
    {
        if still_open(&mut c) {
            return Ok((c, true));
        }
    }
    // Boxed: only new connections pay for the connect and handshake state.
    let stream = Box::pin(crate::connect::open(server, backend, ctx.peer, ctx.local)).await?;
    Ok((RawUpstream::new(stream), false))
}

/// Why sending the request to `server` failed: a write error (`Some`), or `timeout server`
/// (`after`) ran out (`None`).
fn send_failed(
    server: &crate::plan::Server,
    after: Duration,
    error: Option<io::Error>,
) -> ProxyError {
    let server = server.name.clone();
    match error {
        Some(source) => ProxyError::UpstreamIo { server, source },
        None => ProxyError::ServerTimeout { server, after },
    }
}

/// Whether a pooled connection is still open and quiet (nothing unsolicited to read).
fn still_open(c: &mut RawUpstream) -> bool {
    c.buf.clear();
    let mut probe = [0u8; 1];
    let mut rb = ReadBuf::new(&mut probe);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(
        Pin::new(&mut c.stream).poll_read(&mut cx, &mut rb),
        Poll::Pending
    )
}

#[derive(Debug)]
enum HeadError {
    Closed,
    Timeout,
    Io,
    TooLarge,
}

impl HeadError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Closed => "connection closed before the response head",
            Self::Timeout => "no response head in time",
            Self::Io => "connection failed before the response head",
            Self::TooLarge => "response head too large",
        }
    }
}

/// Reads until `conn.buf` holds a complete response head; its length.
async fn read_head(conn: &mut RawUpstream) -> Result<usize, HeadError> {
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

/// Relays the response: `out` (the client's head) and the body, framed as `framing`,
/// from `conn.buf[head..]` on; the body bytes relayed. Leaves in `conn.buf` only bytes
/// beyond the response (then the connection is not reused).
async fn relay_body<T: AsyncWrite + Unpin>(
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

/// Adds the persistence cookie of a new user to the response head `out`.
fn set_cookie(out: &mut Vec<u8>, c: NewCookie<'_>) {
    out.extend_from_slice(b"set-cookie: ");
    out.extend_from_slice(c.name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(&c.value);
    out.extend_from_slice(b"; Path=/\r\n");
}

/// A stream that first yields bytes already read (handing a connection over to hyper).
pub(crate) struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub(crate) fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
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

#[doc(hidden)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_end_is_found_across_splits() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut c = Chunks::START;
            let first = c.feed(&body[..split]).expect("valid");
            let got = match first {
                Some(n) => n,
                None => split + c.feed(&body[split..]).expect("valid").expect("ends"),
            };
            assert_eq!(got, end, "split at {split}");
        }
        let mut c = Chunks::START;
        assert_eq!(c.feed(b"0\r\n\r\n"), Ok(Some(5)));
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"11111111111111111\r\n",
        ] {
            let mut c = Chunks::START;
            assert!(c.feed(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let f = |head: &str, head_method: bool| {
            parse_response(head.as_bytes(), head_method).map(|r| (r.framing, r.server_close))
        };
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Ok((Framing::Length(5), false))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Ok((Framing::None, false))
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked, false))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false),
            Ok((Framing::UntilClose, true))
        );
        assert_eq!(
            f("HTTP/1.0 204 No Content\r\n\r\n", false),
            Ok((Framing::None, true))
        );
        assert_eq!(
            f(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            Ok((Framing::Length(0), false))
        );
        assert!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .is_err()
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Priv\r\nX-Priv: 1\r\nKeep-Alive: t=5\r\nX-Ok: 2\r\n\r\n",
            false,
        )
        .expect("valid");
        assert_eq!(
            String::from_utf8(r.out).expect("utf-8"),
            "HTTP/1.1 200 OK\r\nX-Ok: 2\r\n"
        );
    }

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
