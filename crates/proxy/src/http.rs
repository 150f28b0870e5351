//! `mode http`: serve HTTP/1.1 and HTTP/2 clients, route, and forward to pooled server
//! connections (HTTP/1.1 keep-alive, as HAProxy 2.6 does by default).
//!
//! HTTP/2 comes from ALPN `h2` on TLS, or from the client preface on plain text (h2c prior
//! knowledge); each stream is one request, routed and balanced on its own.
//!
//! Owns: the per-connection hyper server setup (keep-alive, header timeout and limits, the
//! client idle wrapper, per-source admission), the request handler (smuggling checks, request
//! rate, header rewriting, the persistence cookie's header, counters and the access log
//! record), hyper's upstream connections (reuse from the pool, new ones), and turning a
//! [`ProxyError`] into the response a client sees.
//! Does not own: accepting connections or the frontend limit (`proxy`), the request's
//! journey (`journey`: routing, picking a server, retries, persistence, passive health),
//! server selection (`tandem-balance`) and queueing (`queue`), or live state (`live`).
//! Never holds a lock across an `.await`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tandem_balance::ServerId;
use tokio::sync::watch;
use tracing::{Instrument, debug, warn};

use crate::accept::Accepted;
use crate::access::{AccessLog, ms};
use crate::body::{ProxyBody, Release, ReqBody, error_page};
use crate::deadline::epoch;
use crate::error::ProxyError;
use crate::guard::Guarded;
use crate::idle::{Busy, IdleIo};
use crate::journey::{Journey, Leg, NewCookie, Tries};
use crate::live::{ServerState, Snapshot, Upstream};
use crate::plan::{Algorithm, Backend, BackendId, Forwarded, Frontend, LogFormat, Server};
use crate::protect::{Refusal, SourceGuard};

mod h1;
#[doc(hidden)]
pub(crate) use h1::fuzz as h1_fuzz;

/// Smallest read buffer hyper accepts.
const MIN_BUF_BYTES: usize = 8192;
/// hyper's request header count limit when none is set (`h1_max_headers`).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;
/// Most concurrent streams on one HTTP/2 client connection (HAProxy
/// `tune.h2.max-concurrent-streams`).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What every request of one client connection shares.
struct ConnCtx {
    snap: Arc<Snapshot>,
    frontend: usize,
    /// The client: from the PROXY header when the bind expects one, else the TCP peer.
    peer: SocketAddr,
    /// Where the client connected to (PROXY header destination, else our address).
    local: SocketAddr,
    /// `X-Forwarded-Proto` value: `https` when TLS was terminated.
    proto: HeaderValue,
    /// `X-Forwarded-For` value: the client address, formatted once per connection.
    peer_value: HeaderValue,
    /// Raised by the raw head guard when a request had both Content-Length and
    /// Transfer-Encoding; every request from then on gets 400 and the connection closes.
    conflict: Arc<AtomicBool>,
    /// Raised by the raw head guard when a request head exceeded `max_header_size` (only
    /// watched when that limit is below hyper's smallest buffer); the request gets 431.
    oversized: Option<Arc<AtomicBool>>,
    /// When the current request head began arriving (`Tq`), set by the raw head guard only
    /// when an access log is kept.
    head_start: Option<Arc<AtomicU64>>,
    /// Requests being handled now; pauses the client idle timer (see `idle`).
    busy: Busy,
    /// Set when `protect` refused the connection: every request gets 429 and it closes.
    refused: Option<Refusal>,
    /// Counts this connection against its source's concurrency while it lives.
    _source: Option<SourceGuard>,
}

/// Decrements the busy count when a request's handling ends.
struct BusyGuard<'a>(&'a AtomicU32);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one client connection until it closes or `shutdown` fires (then drains gracefully).
pub(crate) async fn serve(
    acc: Accepted,
    snap: Arc<Snapshot>,
    frontend: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = acc.client;
    let fe: &Frontend = &snap.plan.frontends()[frontend];
    let live_fe = &snap.frontends[frontend];
    live_fe
        .stats
        .counters
        .sessions_total
        .fetch_add(1, Ordering::Relaxed);
    live_fe.stats.current.fetch_add(1, Ordering::Relaxed);
    let (refused, source) =
        match crate::protect::admit(live_fe.sources.as_ref(), &live_fe.stats, peer.ip()) {
            Ok(guard) => (None, guard),
            Err(why) => (Some(why), None),
        };
    let peer_value = HeaderValue::try_from(peer.ip().to_string())
        .expect("an IP address is a valid header value");
    let conflict = Arc::new(AtomicBool::new(false));
    let busy: Busy = Arc::new(AtomicU32::new(0));
    let oversized = (fe.max_header_bytes < MIN_BUF_BYTES).then(|| Arc::new(AtomicBool::new(false)));
    let head_start = (fe.log_format != LogFormat::Off).then(|| Arc::new(AtomicU64::new(0)));
    let ctx = Arc::new(ConnCtx {
        snap: snap.clone(),
        frontend,
        peer,
        local: acc.local,
        proto: HeaderValue::from_static(if acc.tls { "https" } else { "http" }),
        peer_value,
        conflict: conflict.clone(),
        oversized: oversized.clone(),
        head_start: head_start.clone(),
        busy: busy.clone(),
        refused,
        _source: source,
    });
    let mut stream = IdleIo::new(acc.stream, fe.timeouts.idle, busy);
    // Plain HTTP/1.1 on the raw forwarder (which checks the heads it parses itself); HTTP/2
    // and what the raw forwarder hands over, on hyper behind the raw head guard, which starts
    // at the request boundary where the hand-over happens.
    let read = if acc.h2 {
        Vec::new()
    } else {
        match h1::serve(&ctx, &mut stream, &mut shutdown, acc.tls).await {
            h1::Outcome::Closed => {
                live_fe.stats.current.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            h1::Outcome::Fallback(read) => read,
        }
    };
    let mut io = Guarded::new(h1::Rewind::new(read, stream), conflict);
    if let Some(flag) = oversized {
        io = io.with_head_limit(fe.max_header_bytes, flag);
    }
    if let Some(clock) = head_start {
        io = io.with_head_clock(clock);
    }
    // Boxed: a connection served by the raw forwarder does not carry hyper's state.
    Box::pin(serve_hyper(ctx, io, (acc.tls, acc.h2), shutdown)).await;
    live_fe.stats.current.fetch_sub(1, Ordering::Relaxed);
}

/// Serves the rest of a client connection with hyper (HTTP/2, and what the raw forwarder
/// hands over).
async fn serve_hyper<T>(
    ctx: Arc<ConnCtx>,
    io: T,
    (tls, h2): (bool, bool),
    mut shutdown: watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let fe: &Frontend = &ctx.snap.plan.frontends()[ctx.frontend];
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(fe.timeouts.header)
        .max_buf_size(fe.max_header_bytes.max(MIN_BUF_BYTES))
        .keep_alive(ctx.refused.is_none());
    // hyper's own limit is 100 headers, parsed into a stack array; an explicit limit makes it
    // build and fill a vector of that many slots for every request head (about 5% of the
    // proxy's instructions per keep-alive request), so it is only set when it differs.
    if fe.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(fe.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(fe.max_header_bytes).unwrap_or(u32::MAX));
    // On TLS, ALPN has decided; on plain text the client preface does (h2c prior knowledge).
    let builder = match (tls, h2) {
        (true, true) => builder.http2_only(),
        (true, false) => builder.http1_only(),
        (false, _) => builder,
    };
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| {
        let ctx = svc_ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        () = crate::deadline::stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        debug!(cause = %e, "client connection ended with an error");
    }
}

async fn handle(ctx: &ConnCtx, req: Request<Incoming>) -> Response<ProxyBody> {
    ctx.busy.fetch_add(1, Ordering::Relaxed);
    let _busy = BusyGuard(&ctx.busy);
    let start = Instant::now();
    let plan = &ctx.snap.plan;
    let fe = &plan.frontends()[ctx.frontend];
    let live_fe = &ctx.snap.frontends[ctx.frontend];
    let tq = ctx
        .head_start
        .as_ref()
        .map_or(-1, |clock| match clock.load(Ordering::Relaxed) {
            0 => -1,
            n => ms(start.saturating_duration_since(epoch() + Duration::from_nanos(n))),
        });
    let mut log = AccessLog::begin(
        &ctx.snap,
        ctx.frontend,
        ctx.peer,
        start,
        Some((req.method().clone(), req.uri().clone())),
        tq,
    );
    let admitted = match ctx.refused {
        // Counted once, when the connection was refused.
        Some(why) => Err(denied(why)),
        None => crate::protect::admit_request(
            live_fe.sources.as_ref(),
            &live_fe.stats,
            ctx.peer.ip(),
            start,
        )
        .map_err(denied),
    };
    let mut backend = None;
    let res = match admitted
        .and_then(|()| check_request(ctx, &req))
        .and_then(|()| route(fe, &req))
    {
        Err(e) => Err(e),
        Ok(id) => {
            backend = Some(id);
            forward(ctx, id, req, start, &mut log).await
        }
    };
    let resp = match res {
        Ok(resp) => resp,
        Err(e) => {
            let status = e.status();
            if e.side() != crate::error::Side::Client || status != StatusCode::TOO_MANY_REQUESTS {
                warn!(frontend = %fe.name, client = %ctx.peer, status = status.as_u16(),
                    kind = e.kind(), side = ?e.side(), cause = %e, "request failed");
            }
            crate::journey::log_failed(log.take(), &e, backend);
            let mut resp = error_response(status);
            if ctx.refused.is_some() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    };
    let status = resp.status().as_u16();
    live_fe.stats.counters.response(status);
    if let Some(id) = backend {
        ctx.snap.backends[id].stats.counters.response(status);
    }
    resp
}

/// A `protect` refusal as an error (429); allocation-free, refusals come in floods.
fn denied(why: Refusal) -> ProxyError {
    ProxyError::Denied {
        reason: why.as_str(),
    }
}

/// A static error response; asks the client to close after a bad request.
pub(crate) fn error_response(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Static(Some(error_page(status))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::BAD_REQUEST || status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Fields a `Connection` option may never name: the framing and routing of the message.
///
/// A proxy removes the fields the `Connection` field names (RFC 9110 section 7.6.1) but
/// frames and routes the message by these; removing them would make the next hop frame it
/// differently (a request body forwarded without its `Content-Length` is a second request
/// on a pooled server connection: CL.0 smuggling). So a request naming one is refused
/// (400) and a response naming one is a bad response (502), on every path.
/// `Connection`, `Upgrade`, `TE`, `Keep-Alive` and `Proxy-Connection` are hop-by-hop and
/// never forwarded whether named or not; RFC 9110 requires senders to name `Upgrade`
/// (section 7.8) and `TE` (section 10.1.4), so naming those stays valid.
pub(crate) const FRAMING_FIELDS: [&str; 4] =
    ["content-length", "transfer-encoding", "host", "trailer"];

/// The framing field ([`FRAMING_FIELDS`]) the `Connection` options `tokens` name, if any.
pub(crate) fn nominated_framing<'a>(
    tokens: impl IntoIterator<Item = &'a [u8]>,
) -> Option<&'static str> {
    tokens.into_iter().find_map(|t| {
        let t = t.trim_ascii();
        FRAMING_FIELDS
            .iter()
            .find(|f| t.eq_ignore_ascii_case(f.as_bytes()))
            .copied()
    })
}

/// The `Connection` options of a parsed head (every field, comma-separated).
fn connection_options(h: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    h.get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
}

/// Smuggling defence on what hyper has parsed (hyper already rejects most ambiguous framing).
fn check_request(ctx: &ConnCtx, req: &Request<Incoming>) -> Result<(), ProxyError> {
    if ctx
        .oversized
        .as_ref()
        .is_some_and(|f| f.load(Ordering::Acquire))
    {
        return Err(ProxyError::HeaderTooLarge {
            limit: ctx.snap.plan.frontends()[ctx.frontend].max_header_bytes,
        });
    }
    if ctx.conflict.load(Ordering::Acquire) {
        // The raw head guard refused this connection's framing; it logged the exact rule.
        return Err(ProxyError::BadRequest {
            reason: "ambiguous request framing",
        });
    }
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err(ProxyError::BadRequest {
            reason: "both content-length and transfer-encoding",
        });
    }
    let mut hosts = h.get_all(header::HOST).iter();
    if let (Some(_), Some(_)) = (hosts.next(), hosts.next()) {
        return Err(ProxyError::BadRequest {
            reason: "several host headers",
        });
    }
    if nominated_framing(connection_options(h)).is_some() {
        return Err(ProxyError::BadRequest {
            reason: "connection header names a framing header",
        });
    }
    // HTTP/2 routes on `:authority`; a server would go by Host (RFC 9113 section 8.3.1).
    if let (Some(authority), Some(host)) = (req.uri().authority(), h.get(header::HOST))
        && !authority
            .as_str()
            .as_bytes()
            .eq_ignore_ascii_case(host.as_bytes().trim_ascii())
    {
        return Err(ProxyError::BadRequest {
            reason: "host differs from the request's authority",
        });
    }
    if req.version() == Version::HTTP_11
        && !h.contains_key(header::HOST)
        && req.uri().authority().is_none()
    {
        return Err(ProxyError::BadRequest {
            reason: "http/1.1 request without host",
        });
    }
    Ok(())
}

/// Host of the request without port, from the URI authority or the Host header.
fn request_host(req: &Request<Incoming>) -> Option<&str> {
    if let Some(a) = req.uri().authority() {
        return Some(a.host());
    }
    let v = req.headers().get(header::HOST)?.to_str().ok()?;
    if v.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        return v.find(']').map(|end| &v[..=end]);
    }
    Some(v.split_once(':').map_or(v, |(h, _port)| h))
}

fn route(fe: &Frontend, req: &Request<Incoming>) -> Result<BackendId, ProxyError> {
    crate::journey::route(fe, request_host(req), req.uri().path(), |name| {
        req.headers().get(name).map(HeaderValue::as_bytes)
    })
    .ok_or_else(|| ProxyError::NoRoute {
        frontend: fe.name.clone(),
    })
}

/// The hop-by-hop headers always removed; `Connection` first.
static HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the Connection header names.
///
/// One pass over the (few) headers present finds which hop-by-hop names occur, so only
/// those are looked up and removed: most requests carry none, most responses only
/// `Connection`.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = 0u8;
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| *hop == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0
        && let Some(conn) = h.get(header::CONNECTION).cloned()
        && let Ok(list) = conn.to_str()
    {
        for name in list.split(',') {
            let name = name.trim();
            // `keep-alive` is one of HOP_BY_HOP, removed below if present.
            if !name.is_empty() && !name.eq_ignore_ascii_case("keep-alive") {
                h.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(*name);
        }
    }
}

/// The server a persistence cookie named `name` points to, if the request carries one.
fn cookie_server(headers: &HeaderMap, name: &str) -> Option<ServerId> {
    crate::journey::cookie_server(
        headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().ok()),
        name,
    )
}

async fn forward(
    ctx: &ConnCtx,
    id: BackendId,
    req: Request<Incoming>,
    start: Instant,
    log: &mut Option<AccessLog>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let plan = &ctx.snap.plan;
    let mut journey = Journey::new(&ctx.snap, id, Tries::http);
    let backend: &Backend = journey.backend;
    let (mut parts, body) = req.into_parts();
    let h2_stream = parts.version == Version::HTTP_2;

    // Selection keys: cheap clones (shared bytes), only for the algorithms that hash them.
    let key_uri = matches!(backend.algorithm, Algorithm::Uri).then(|| parts.uri.clone());
    let key_header = plan
        .hash_header(id)
        .and_then(|name| parts.headers.get(name).cloned());
    let client_ip = ctx.peer.ip();
    let persist = journey.persisted(|name| cookie_server(&parts.headers, name), client_ip, start);
    let breq = tandem_balance::Request {
        client_ip,
        path: key_uri.as_ref().map_or("/", |u| u.path()),
        header: key_header.as_ref().map(HeaderValue::as_bytes),
        persist,
    };

    // HTTP/2 carries the host in `:authority`; HTTP/1.1 servers need a Host header.
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        let value = HeaderValue::from_str(parts.uri.authority()?.as_str()).ok()?;
        parts.headers.insert(header::HOST, value.clone());
        Some(value)
    });
    strip_hop_by_hop(&mut parts.headers);
    match plan.frontends()[ctx.frontend].forwarded {
        Forwarded::XForwarded => {
            parts
                .headers
                .append(X_FORWARDED_FOR.clone(), ctx.peer_value.clone());
            parts
                .headers
                .insert(X_FORWARDED_PROTO.clone(), ctx.proto.clone());
            if let Some(host) = host {
                parts.headers.insert(X_FORWARDED_HOST.clone(), host);
            }
        }
        Forwarded::Rfc7239 => {
            if let Some(v) = forwarded_value(ctx.peer.ip(), &ctx.proto, host.as_ref()) {
                parts.headers.append(header::FORWARDED, v);
            }
        }
        Forwarded::None => {}
    }
    if parts.uri.scheme().is_some() {
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = Uri::try_from(pq).map_err(|_| ProxyError::BadRequest {
            reason: "invalid request target",
        })?;
    }
    parts.version = Version::HTTP_11;
    let mut req = Request::from_parts(parts, ReqBody::new(body));

    let live_fe = &ctx.snap.frontends[ctx.frontend];
    let live = journey.live;
    loop {
        let Leg {
            slot,
            mut conn,
            reused,
        } = journey
            .connect(&breq, log.as_mut(), |i| {
                connection(ctx, backend, &backend.servers[i], &live.servers[i])
            })
            .await?;
        let server: &Server = &backend.servers[slot.index];
        let sink = journey.request_sent(&live_fe.stats, &slot);
        req.body_mut().sink = Some(sink.clone());
        let sent = {
            // `timeout server` on the connection's own timer (see `Upstream`).
            conn.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + backend.timeouts.server);
            let mut send = std::pin::pin!(conn.send.try_send_request(req));
            let timer = &mut conn.timer;
            std::future::poll_fn(|cx| {
                if let std::task::Poll::Ready(r) = send.as_mut().poll(cx) {
                    return std::task::Poll::Ready(Ok(r));
                }
                timer.as_mut().poll(cx).map(Err)
            })
            .await
        };
        match sent {
            Err(()) => {
                journey.server_silent(&slot);
                return Err(ProxyError::ServerTimeout {
                    server: server.name.clone(),
                    after: backend.timeouts.server,
                });
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                if nominated_framing(connection_options(&parts.headers)).is_some() {
                    // The connection is dropped with the response, never pooled.
                    return Err(ProxyError::BadResponse {
                        server: server.name.clone(),
                        reason: "connection header names a framing header",
                    });
                }
                let status = parts.status.as_u16();
                let elapsed = start.elapsed();
                journey.responded(&slot, status, elapsed);
                strip_hop_by_hop(&mut parts.headers);
                if let Some(c) = journey.persist_new_user(&slot, client_ip, start) {
                    set_cookie(&mut parts.headers, c);
                }
                let mut log = log.take().map(Box::new);
                if let Some(l) = log.as_mut() {
                    l.tr = ms(elapsed);
                    l.status = status;
                }
                let release = Release {
                    conn,
                    slot,
                    // A connection that carried a client's PROXY header is that client's.
                    max_idle: if backend.send_proxy.is_some() {
                        0
                    } else {
                        backend.max_idle_per_server
                    },
                    sink,
                    log,
                };
                let body = ProxyBody::upstream(body, release, backend.timeouts.server);
                let body = if h2_stream {
                    // The stream's window may stay shut: see `relay`.
                    crate::body::relay(body, plan.frontends()[ctx.frontend].timeouts.idle)
                } else {
                    body
                };
                return Ok(Response::from_parts(parts, body));
            }
            Ok(Err(mut e)) => match e.take_message() {
                // Not sent: the pooled connection was closed meanwhile; safe to try again.
                Some(back) if reused => {
                    debug!(server = %server.name, cause = %e.error(), "stale pooled connection");
                    req = back;
                }
                _ => {
                    return Err(ProxyError::Upstream {
                        server: server.name.clone(),
                        source: e.into_error(),
                    });
                }
            },
        }
    }
}

/// An RFC 7239 `Forwarded` element: `for=...;proto=...[;host="..."]` (IPv6 quoted).
fn forwarded_value(
    client: std::net::IpAddr,
    proto: &HeaderValue,
    host: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    use std::fmt::Write as _;
    let mut v = String::with_capacity(64);
    match client {
        std::net::IpAddr::V4(a) => write!(v, "for={a}"),
        std::net::IpAddr::V6(a) => write!(v, "for=\"[{a}]\""),
    }
    .ok()?;
    write!(v, ";proto={}", proto.to_str().ok()?).ok()?;
    // A host with characters a quoted-string cannot carry is left out.
    if let Some(h) = host.and_then(|h| h.to_str().ok())
        && !h.contains(['"', '\\'])
    {
        write!(v, ";host=\"{h}\"").ok()?;
    }
    HeaderValue::try_from(v).ok()
}

/// Adds the persistence cookie of a new user to a response's headers.
fn set_cookie(headers: &mut HeaderMap, c: NewCookie<'_>) {
    let id = std::str::from_utf8(&c.value).unwrap_or_default();
    // Cookie names were validated as tokens by the config; a bad one just skips.
    if let Ok(v) = HeaderValue::try_from(format!("{}={id}; Path=/", c.name)) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// A ready connection to `server`: a pooled one, else a new one. `true` if reused.
async fn connection(
    ctx: &ConnCtx,
    backend: &Backend,
    server: &Server,
    state: &ServerState,
) -> Result<(Upstream, bool), ProxyError> {
    // With `send_proxy`, a connection is bound to the client it was opened for: never shared.
    while backend.send_proxy.is_none()
        && let Some(mut c) = state.pool().take_idle()
    {
        // Usually ready at once: no timer then. Polled with a no-op waker, so a pending
        // connection is polled again below, with the task's waker, under the timer.
        match c
            .send
            .poll_ready(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(Ok(())) => return Ok((c, true)),
            std::task::Poll::Ready(Err(_)) => continue,
            std::task::Poll::Pending => {}
        }
        // A connection whose last response just ended becomes ready as soon as its task runs.
        if let Ok(Ok(())) = tokio::time::timeout(backend.timeouts.connect, c.send.ready()).await {
            return Ok((c, true));
        }
    }
    // Boxed: only new connections pay for the connect and handshake state, instead of every
    // connection's request future (which hyper keeps allocated while the client is idle).
    Box::pin(open_new(ctx, backend, server))
        .await
        .inspect_err(|e| debug_assert!(e.retry_safe()))
}

/// Opens a new connection to `server` and starts its hyper connection task.
async fn open_new(
    ctx: &ConnCtx,
    backend: &Backend,
    server: &Server,
) -> Result<(Upstream, bool), ProxyError> {
    let stream = crate::connect::open(server, backend, ctx.peer, ctx.local).await?;
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Handshake {
            server: server.name.clone(),
            source,
        })?;
    let span = tracing::debug_span!("upstream", server = %server.name, addr = %server.addr);
    tokio::spawn(
        async move {
            if let Err(e) = conn.await {
                debug!(cause = %e, "server connection ended with an error");
            }
        }
        .instrument(span),
    );
    Ok((Upstream::new(send), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_element_follows_rfc_7239() {
        let http = HeaderValue::from_static("http");
        let host = HeaderValue::from_static("shop.test:8080");
        let check = |ip: &str, host: Option<&HeaderValue>, want: &str| {
            let got = forwarded_value(ip.parse().expect("ip"), &http, host).expect("value");
            assert_eq!(got, want);
        };
        check(
            "192.0.2.7",
            Some(&host),
            "for=192.0.2.7;proto=http;host=\"shop.test:8080\"",
        );
        check("2001:db8::1", None, "for=\"[2001:db8::1]\";proto=http");
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.test"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "nothing hop-by-hop: untouched");

        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Private"),
        );
        h.insert("x-private", HeaderValue::from_static("secret"));
        for name in ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"] {
            h.insert(name, HeaderValue::from_static("v"));
        }
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.append(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-keep"]);

        // Without a Connection header, the other hop-by-hop headers still go.
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn persistence_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; SRV=54d8501ec308aa74"),
        );
        let id = ServerId::derive("web", "s1");
        assert_eq!(cookie_server(&h, "SRV"), Some(id));
        assert_eq!(cookie_server(&h, "OTHER"), None);
        h.insert(header::COOKIE, HeaderValue::from_static("SRV=not-an-id"));
        assert_eq!(
            cookie_server(&h, "SRV"),
            None,
            "garbage falls back to the algorithm"
        );
    }
}
