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
//! The wire code is in submodules: `head` (reading heads, line and preface checks),
//! `response` (a server's response head and its framing), `chunked` (the end of a chunked
//! body), `relay` (sending the request, relaying the response body, the linger); this
//! module is the request path that drives them.
//!
//! Owns: reading request heads (`client_header`, the head size and count limits), the plain
//! HTTP/1.1 request path (protect, the smuggling checks on parsed heads, header rewriting,
//! sending on a server connection and the stale-connection retries, counters, the access
//! log), response framing (Content-Length, chunked, close-delimited, 1xx) and the raw
//! upstream pool use. Anything else is handed to hyper unchanged, before a byte of the
//! request is acted on ([`Outcome::Fallback`]): HTTP/1.0 clients, request bodies in chunked
//! encoding, `Expect`, `CONNECT`, and the HTTP/2 preface (h2c prior knowledge); the
//! connection then stays with hyper.
//! Does not own: the raw head guard (`guard`, which sees every byte read here first),
//! admission and the connection counters (`super::serve`), the request's journey
//! (`journey`: routing, picking a server, connect retries, persistence, passive health),
//! selection, queueing and live state.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode, Uri};
use tandem_balance::ServerId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{ConnCtx, denied, forwarded_value, nominated_framing};
use crate::access::{AccessLog, ms};
use crate::body::error_page;
use crate::deadline::{Deadline, before};
use crate::error::ProxyError;
use crate::journey::{Journey, Leg, NewCookie, Tries};
use crate::live::{LiveBackend, RawUpstream};
use crate::plan::{Algorithm, Backend, BackendId, Forwarded, Frontend, LogFormat, Persistence};

mod chunked;
mod head;
mod relay;
mod response;

use head::{
    HeadError, connection_tokens, crlf_lines, fill, h2_preface, head_end, hop_by_hop, is,
    named_by_connection, poll_fill, read_head,
};
use relay::{BodyError, Sent, linger, relay_body, send_or_answer, still_open};
use response::{Framing, parse_response};

/// Request headers parsed on the stack; a larger `max_headers` uses the heap.
const HEADER_SLOTS: usize = 128;

/// A client buffer up to this capacity is kept between requests; a larger one is freed.
const KEEP_BUF_BYTES: usize = 1024;

/// How the raw path left a client connection.
pub(crate) enum Outcome {
    /// Closed (or to be dropped): nothing more to do.
    Closed,
    /// To be served by hyper from here, starting with these bytes already read.
    Fallback(Vec<u8>),
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
    crate::journey::log_failed(log, &err, backend);
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
    if let Err(why) =
        crate::protect::admit_request(live_fe.sources.as_ref(), &live_fe.stats, ctx.peer.ip(), now)
    {
        // Kept open for the next request unless a body is left unread or the client asked
        // to close.
        let client_close = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"close"));
        return Analyzed::Refuse {
            err: denied(why),
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
            && let Some(pool) = slot.server.pool_to_keep()
        {
            pool.put_raw(conn, backend.max_idle_per_server);
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
        && let Some(mut c) = state.pool().take_raw()
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
    crate::pass::pass_through!(write [Self { inner, .. }] => inner);
}

#[doc(hidden)]
pub(crate) mod fuzz;
