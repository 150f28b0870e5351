//! Test helpers: backend servers that count what they see, clients, and proxy start-up.
//!
//! Owns: `TestServer` (hyper on 127.0.0.1:0, counts requests and concurrency, can be made
//! unhealthy or slow), raw TCP helpers, `start` (a proxy with one frontend), `free_addr`.
//! Must not touch anything but loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tandem_proxy::Proxy;
use tandem_proxy::plan::{Backend, Frontend, Mode, Plan, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any single test wait.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// What a test server saw.
#[derive(Default, Debug)]
pub struct Stats {
    /// Requests other than health checks.
    pub hits: AtomicU64,
    /// Requests in progress now.
    pub inflight: AtomicU32,
    /// Most requests in progress at once.
    pub max_inflight: AtomicU32,
    /// Health endpoint answers 503 when false.
    pub healthy: AtomicBool,
    /// Health checks received.
    pub checks: AtomicU64,
    /// TCP connections accepted (keep-alive reuse shows as few accepts).
    pub accepts: AtomicU64,
    /// Extra delay added to every non-health request, in milliseconds.
    pub delay_ms: AtomicU64,
    /// When non-zero, every non-health request is answered with this status.
    pub status: AtomicU32,
}

pub struct TestServer {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An http server answering its name; `/slow/N` waits N ms; `/bytes/N` answers N bytes of
/// `x` instead of its name; `/health` reflects `healthy`;
/// echoes `x-forwarded-*` and `x-secret` request headers as `seen-*` response headers.
pub async fn http_server(name: &'static str) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind test server");
    let addr = listener.local_addr().expect("local addr");
    let stats = Arc::new(Stats {
        healthy: AtomicBool::new(true),
        ..Stats::default()
    });
    let st = stats.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            st.accepts.fetch_add(1, Ordering::SeqCst);
            let st = st.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(answer(name, &st, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    TestServer {
        name,
        addr,
        stats,
        task,
    }
}

async fn answer(name: &'static str, st: &Stats, req: Request<Incoming>) -> Response<String> {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        st.checks.fetch_add(1, Ordering::SeqCst);
        let status = if st.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut r = Response::new(String::new());
        *r.status_mut() = status;
        return r;
    }
    st.hits.fetch_add(1, Ordering::SeqCst);
    let now = st.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_inflight.fetch_max(now, Ordering::SeqCst);
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|m| m.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut seen = hyper::HeaderMap::new();
    for h in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-secret",
        "connection",
    ] {
        for v in req.headers().get_all(h) {
            seen.append(
                hyper::header::HeaderName::try_from(format!("seen-{h}")).expect("name"),
                v.clone(),
            );
        }
    }
    let size = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok());
    let body = collect(req.into_body()).await;
    let text = match size {
        Some(n) => "x".repeat(n),
        None => format!("{name}:{}", body.len()),
    };
    let mut resp = Response::new(text);
    st.inflight.fetch_sub(1, Ordering::SeqCst);
    *resp.headers_mut() = seen;
    resp.headers_mut()
        .insert("x-server", name.parse().expect("header value"));
    let forced = st.status.load(Ordering::SeqCst);
    if forced != 0 {
        *resp.status_mut() = StatusCode::from_u16(forced as u16).expect("status");
    }
    resp
}

/// Reads a whole body (bounded by `LIMIT`).
pub async fn collect<B: Body + Unpin>(mut body: B) -> Vec<u8>
where
    B::Data: AsRef<[u8]>,
{
    let mut out = Vec::new();
    let read = async {
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Some(d) = frame.data_ref() {
                out.extend_from_slice(d.as_ref());
            }
        }
    };
    let _ = tokio::time::timeout(LIMIT, read).await;
    out
}

pub type HttpClient = Client<HttpConnector, String>;

/// A keep-alive http client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` through `proxy`; returns status, body and the headers.
pub async fn get(
    c: &HttpClient,
    proxy: SocketAddr,
    path: &str,
) -> (StatusCode, String, hyper::HeaderMap) {
    let req = Request::get(format!("http://{proxy}{path}"))
        .body(String::new())
        .expect("request");
    let resp = tokio::time::timeout(LIMIT, c.request(req))
        .await
        .expect("in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = String::from_utf8(collect(body).await).expect("utf-8");
    (parts.status, body, parts.headers)
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A server entry for `s` with `weight`.
pub fn server(s: &TestServer, weight: u32) -> Server {
    let mut sv = Server::new(s.name, s.addr);
    sv.weight = weight;
    sv
}

/// A plan with one frontend named `web` on `bind` and one backend named `app`.
pub fn plan(mode: Mode, bind: SocketAddr, backend: Backend) -> Plan {
    Plan::new(
        vec![Frontend::new("web", mode, bind, &backend.name)],
        vec![backend],
    )
    .expect("valid plan")
}

pub fn backend(mode: Mode, servers: Vec<Server>) -> Backend {
    Backend::new("app", mode, servers)
}

/// Starts a proxy; returns it and the frontend address.
pub async fn start(plan: Plan) -> (Proxy, SocketAddr) {
    init_tracing();
    let bind = plan.frontends()[0].binds[0];
    let proxy = Proxy::start(plan).await.expect("proxy starts");
    let addr = proxy.local_addrs().await[&bind];
    (proxy, addr)
}

/// Writes `raw` on a fresh connection and reads until the server closes or `LIMIT`.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `cond` holds, polling, at most `LIMIT`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn hits(s: &TestServer) -> u64 {
    s.stats.hits.load(Ordering::SeqCst)
}

/// GET `path` through `proxy` with extra request headers; returns status, body and headers.
pub async fn get_with(
    c: &HttpClient,
    proxy: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, hyper::HeaderMap) {
    let mut req = Request::get(format!("http://{proxy}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(String::new()).expect("request");
    let resp = tokio::time::timeout(LIMIT, c.request(req))
        .await
        .expect("in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = String::from_utf8(collect(body).await).expect("utf-8");
    (parts.status, body, parts.headers)
}

/// GET `path` on a fresh connection from source address `from` (any 127.0.0.0/8 address).
pub async fn get_from(
    from: std::net::IpAddr,
    proxy: SocketAddr,
    path: &str,
) -> (StatusCode, String) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(from, 0))
        .expect("bind source address");
    let stream = tokio::time::timeout(LIMIT, sock.connect(proxy))
        .await
        .expect("in time")
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "test")
        .body(String::new())
        .expect("request");
    let resp = tokio::time::timeout(LIMIT, send.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        String::from_utf8(collect(body).await).expect("utf-8"),
    )
}

/// The `x-server` header of a response (which test server answered).
pub fn served_by(h: &hyper::HeaderMap) -> String {
    h.get("x-server")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}
