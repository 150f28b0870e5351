//! `mode http`: serve HTTP/1.1 and HTTP/2 clients, route, and forward to pooled server
//! connections (HTTP/1.1 keep-alive, as HAProxy 2.6 does by default).
//!
//! HTTP/2 comes from ALPN `h2` on TLS, or from the client preface on plain text (h2c prior
//! knowledge); each stream is one request, routed and balanced on its own.
//!
//! Owns: the per-connection hyper server setup (keep-alive, header timeout and limits), the
//! request handler (smuggling checks, routing, header rewriting, the retry loop), upstream
//! connection reuse, and turning a [`ProxyError`] into the response a client sees.
//! Does not own: accepting connections or the frontend limit (`proxy`), server selection and
//! queueing (`queue`), or live state (`live`). Never holds a lock across an `.await`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use crate::body::{ProxyBody, Release, error_page};
use crate::error::ProxyError;
use crate::guard::Guarded;
use crate::live::Snapshot;
use crate::plan::{Backend, BackendId, Frontend, Server};
use crate::queue::{Slot, Tried, acquire};
use crate::tls::Accepted;

/// Smallest read buffer hyper accepts.
const MIN_BUF_BYTES: usize = 8192;
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
}

/// Serves one client connection until it closes or `shutdown` fires (then drains gracefully).
pub(crate) async fn serve(
    acc: Accepted,
    snap: Arc<Snapshot>,
    frontend: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let fe: &Frontend = &snap.plan.frontends()[frontend];
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(fe.timeouts.header)
        .max_headers(fe.max_headers)
        .max_buf_size(fe.max_header_bytes.max(MIN_BUF_BYTES))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(fe.max_header_bytes).unwrap_or(u32::MAX));
    // On TLS, ALPN has decided; on plain text the client preface does (h2c prior knowledge).
    let builder = match (acc.tls, acc.h2) {
        (true, true) => builder.http2_only(),
        (true, false) => builder.http1_only(),
        (false, _) => builder,
    };
    let peer = acc.client;
    let peer_value = HeaderValue::try_from(peer.ip().to_string())
        .expect("an IP address is a valid header value");
    let conflict = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(ConnCtx {
        snap: snap.clone(),
        frontend,
        peer,
        local: acc.local,
        proto: HeaderValue::from_static(if acc.tls { "https" } else { "http" }),
        peer_value,
        conflict: conflict.clone(),
    });
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(Guarded::new(acc.stream, conflict)), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        () = crate::proxy::stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        debug!(cause = %e, "client connection ended with an error");
    }
}

async fn handle(ctx: &ConnCtx, req: Request<Incoming>) -> Response<ProxyBody> {
    let plan = &ctx.snap.plan;
    let fe = &plan.frontends()[ctx.frontend];
    let method = req.method().clone();
    let res = match check_request(ctx, &req).and_then(|()| route(fe, &req)) {
        Err(e) => Err(e),
        Ok(id) => forward(ctx, id, req).await,
    };
    match res {
        Ok((resp, server)) => {
            info!(target: "tandem_proxy::access", frontend = %fe.name, client = %ctx.peer, %method,
                status = resp.status().as_u16(), server = %server, "request");
            resp
        }
        Err(e) => {
            let status = e.status();
            warn!(target: "tandem_proxy::access", frontend = %fe.name, client = %ctx.peer, %method,
                status = status.as_u16(), kind = e.kind(), side = ?e.side(), cause = %e, "request failed");
            error_response(status)
        }
    }
}

/// A static error response; asks the client to close after a bad request.
pub(crate) fn error_response(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Static(Some(error_page(status))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::BAD_REQUEST {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Smuggling defence on what hyper has parsed (hyper already rejects most ambiguous framing).
fn check_request(ctx: &ConnCtx, req: &Request<Incoming>) -> Result<(), ProxyError> {
    if ctx.conflict.load(Ordering::Acquire) {
        return Err(ProxyError::BadRequest {
            reason: "both content-length and transfer-encoding",
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
    for (r, id) in fe.resolved_routes() {
        if let Some(host) = &r.host
            && !request_host(req).is_some_and(|h| h.eq_ignore_ascii_case(host))
        {
            continue;
        }
        if let Some(prefix) = &r.path_prefix
            && !req.uri().path().starts_with(prefix.as_str())
        {
            continue;
        }
        if let Some((name, want)) = &r.header {
            match (req.headers().get(name), want) {
                (None, _) => continue,
                (Some(got), Some(want)) if got != want => continue,
                _ => {}
            }
        }
        return Ok(id);
    }
    fe.default_id().ok_or_else(|| ProxyError::NoRoute {
        frontend: fe.name.clone(),
    })
}

/// Removes hop-by-hop headers, including those the Connection header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let Some(conn) = h.get(header::CONNECTION).cloned()
        && let Ok(list) = conn.to_str()
    {
        for name in list.split(',') {
            let name = name.trim();
            if !name.is_empty() {
                h.remove(name);
            }
        }
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        h.remove(name);
    }
}

async fn forward(
    ctx: &ConnCtx,
    id: BackendId,
    req: Request<Incoming>,
) -> Result<(Response<ProxyBody>, Arc<str>), ProxyError> {
    let backend: &Backend = &ctx.snap.plan.backends()[id];
    let live = &ctx.snap.backends[id];
    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in `:authority`; HTTP/1.1 servers need a Host header.
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        let value = HeaderValue::from_str(parts.uri.authority()?.as_str()).ok()?;
        parts.headers.insert(header::HOST, value.clone());
        Some(value)
    });
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .append(X_FORWARDED_FOR.clone(), ctx.peer_value.clone());
    parts
        .headers
        .insert(X_FORWARDED_PROTO.clone(), ctx.proto.clone());
    if let Some(host) = host {
        parts.headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    if parts.uri.scheme().is_some() {
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = Uri::try_from(pq).map_err(|_| ProxyError::BadRequest {
            reason: "invalid request target",
        })?;
    }
    parts.version = Version::HTTP_11;
    let mut req = Request::from_parts(parts, body);

    let mut tried = Tried::default();
    let mut last_err: Option<ProxyError> = None;
    // One attempt per server tried, plus stale pooled connections, bounded by `attempts`.
    let attempts = backend.retries as usize + 1 + backend.max_idle_per_server.min(8);
    let mut connect_failures = 0u32;
    for _ in 0..attempts {
        let slot = match acquire(backend, live, tried).await {
            Ok(s) => s,
            Err(ProxyError::NoServer { .. }) if last_err.is_some() => break,
            Err(e) => return Err(e),
        };
        let server: &Server = &backend.servers[slot.index];
        let (mut conn, reused) = match connection(ctx, backend, server, &slot).await {
            Ok(c) => c,
            Err(e) => {
                debug_assert!(e.retry_safe());
                slot.server.connect_failures.fetch_add(1, Ordering::Relaxed);
                warn!(backend = %backend.name, server = %server.name, cause = %e, "connect failed, trying another server");
                tried.insert(slot.index);
                last_err = Some(e);
                connect_failures += 1;
                if connect_failures > backend.retries {
                    break;
                }
                continue;
            }
        };
        slot.server.sent.fetch_add(1, Ordering::Relaxed);
        let sent = tokio::time::timeout(backend.timeouts.server, conn.try_send_request(req)).await;
        match sent {
            Err(_) => {
                return Err(ProxyError::ServerTimeout {
                    server: server.name.clone(),
                    after: backend.timeouts.server,
                });
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let release = Release {
                    conn,
                    slot,
                    // A connection that carried a client's PROXY header is that client's.
                    max_idle: if backend.send_proxy.is_some() {
                        0
                    } else {
                        backend.max_idle_per_server
                    },
                };
                let name: Arc<str> = Arc::from(server.name.as_str());
                return Ok((
                    Response::from_parts(parts, ProxyBody::upstream(body, release)),
                    name,
                ));
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
    Err(last_err.unwrap_or_else(|| ProxyError::NoServer {
        backend: backend.name.clone(),
    }))
}

/// A ready connection to `server`: a pooled one, else a new one. `true` if reused.
async fn connection(
    ctx: &ConnCtx,
    backend: &Backend,
    server: &Server,
    slot: &Slot,
) -> Result<(SendRequest<Incoming>, bool), ProxyError> {
    // With `send_proxy`, a connection is bound to the client it was opened for: never shared.
    while backend.send_proxy.is_none()
        && let Some(mut c) = slot.server.take_idle()
    {
        // A connection whose last response just ended becomes ready as soon as its task runs.
        if let Ok(Ok(())) = tokio::time::timeout(backend.timeouts.connect, c.ready()).await {
            return Ok((c, true));
        }
    }
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
    Ok((send, false))
}
