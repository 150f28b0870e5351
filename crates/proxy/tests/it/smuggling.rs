//! Request smuggling corpus (RFC 9112 framing ambiguities), data-driven, run on every path a
//! request can take through the proxy.
//!
//! Owns: a tap server that counts every TCP connection, every byte and every request (path,
//! body length, field names) it receives; one table of raw HTTP/1 requests with the status
//! the client must see ([`CORPUS`]), one of server responses ([`RESPONSES`]) and one of
//! HTTP/2 requests ([`H2_CORPUS`], the cases translated to HTTP/2 framing, RFC 9113 section
//! 8). A refused case must leave the tap untouched (no connection, no byte); a positive
//! control (valid edge cases: chunk extensions, trailers, `Chunked` in capitals, a body that
//! looks like a request, `Connection` naming hop-by-hop fields) must reach it, without the
//! fields it names. Touches loopback only.
//!
//! Paths: the raw HTTP/1.1 forwarder (plain and TLS), hyper's HTTP/1 server (plain and TLS:
//! each case follows a chunked request to another backend on the same connection, which is
//! how a connection is handed from the raw path to hyper for good), and HTTP/2 (h2c prior
//! knowledge, and ALPN h2 on TLS) with the translated cases.
//!
//! Each case is written in one `write_all`, so the proxy's raw head guard sees the whole
//! request (head and body) before hyper hands the head to the handler: body-level framing
//! errors (chunk sizes, missing CRLF) are then refused before anything is forwarded. When a
//! body arrives later the proxy has already started streaming it and aborts the upstream
//! request instead (`http::bad_chunk_size_aborts_the_request`); bodies are always re-framed,
//! so no byte of a client body can become a request of its own upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tandem_proxy::Proxy;
use tandem_proxy::plan::{Backend, Frontend, Mode, Plan, Route, Server};
use tandem_proxy::tls::FrontendTls;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use crate::h2raw::{self, Outcome};
use crate::tls::{both, client_config, data, h2_client, tls_connect};

/// What the tap server saw.
#[derive(Default)]
struct Tap {
    accepts: AtomicU64,
    bytes: AtomicU64,
    /// The requests it parsed, in order.
    requests: Mutex<Vec<Seen>>,
}

/// One request the tap parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    path: String,
    /// Body bytes received (all of them, or up to where the body failed).
    body: usize,
    /// Lowercase field names, in order.
    fields: Vec<String>,
}

impl Tap {
    fn seen(&self) -> (u64, u64, usize) {
        (
            self.accepts.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
            self.requests.lock().expect("not poisoned").len(),
        )
    }

    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

/// A stream that adds every byte read to `bytes`.
struct Counting {
    inner: TcpStream,
    tap: Arc<Tap>,
}

impl AsyncRead for Counting {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.tap.bytes.fetch_add(n, Ordering::SeqCst);
        r
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Starts the tap on 127.0.0.1:0; the task ends with the test's runtime.
async fn tap_server() -> (SocketAddr, Arc<Tap>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
    let addr = l.local_addr().expect("addr");
    let tap = Arc::new(Tap::default());
    let t = tap.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            t.accepts.fetch_add(1, Ordering::SeqCst);
            let t = t.clone();
            tokio::spawn(async move {
                let t2 = t.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let t = t2.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let fields = req
                            .headers()
                            .keys()
                            .map(|k| k.as_str().to_owned())
                            .collect();
                        let body = collect(req.into_body()).await;
                        t.requests.lock().expect("not poisoned").push(Seen {
                            path,
                            body: body.len(),
                            fields,
                        });
                        Ok::<_, Infallible>(Response::new(format!("tap:{}", body.len())))
                    }
                });
                let io = TokioIo::new(Counting { inner: s, tap: t });
                let _ = http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    (addr, tap)
}

/// Status code of the first response line in `resp` (0 when there is none).
fn status_of(resp: &str) -> u16 {
    resp.strip_prefix("HTTP/1.1 ")
        .or_else(|| resp.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// One raw HTTP/1 request case.
struct Case {
    name: &'static str,
    raw: &'static [u8],
    /// 400 (or 431): refused, nothing reached the server; 200: reached it.
    want: u16,
    /// Fields the server must not see (those the case's `Connection` names).
    absent: &'static [&'static str],
}

const fn case(name: &'static str, raw: &'static [u8], want: u16) -> Case {
    Case {
        name,
        raw,
        want,
        absent: &[],
    }
}

/// A positive control whose `absent` fields must not reach the server.
const fn stripped(name: &'static str, raw: &'static [u8], absent: &'static [&'static str]) -> Case {
    Case {
        name,
        raw,
        want: 200,
        absent,
    }
}

/// The corpus. 400 means "nothing reached the server"; 200 means "reached it" (positive
/// controls send `Connection: close`).
const CORPUS: &[Case] = &[
    // Content-Length and Transfer-Encoding together (CL.TE, TE.CL).
    case(
        "cl then te",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        400,
    ),
    case(
        "te then cl",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        400,
    ),
    case(
        "cl and te with expect 100-continue",
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    // Content-Length values.
    case(
        "two differing content-length",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        400,
    ),
    case(
        "two identical content-length",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    case(
        "content-length list",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nabcdef",
        400,
    ),
    case(
        "content-length identical list",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,5\r\n\r\nabcde",
        400,
    ),
    case(
        "content-length with plus",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nabcde",
        400,
    ),
    case(
        "content-length negative",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        400,
    ),
    case(
        "content-length hex",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n0123456789abcdef",
        400,
    ),
    case(
        "content-length with trailing junk",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nabcde",
        400,
    ),
    case(
        "content-length empty",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
        400,
    ),
    case(
        "content-length overflowing u64",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        400,
    ),
    // Transfer-Encoding values.
    case(
        "te chunked not last",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    case(
        "te chunked twice in a list",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    case(
        "te chunked in two fields",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    case(
        "te chunkedx",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n",
        400,
    ),
    case(
        "te identity",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n",
        400,
    ),
    case(
        "te gzip then chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    case(
        "te with space before the colon",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    case(
        "te with a vertical tab",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    case(
        "te on http/1.0",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    case(
        "te with an empty value",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\nContent-Length: 0\r\n\r\n",
        400,
    ),
    // Field syntax.
    case(
        "obs-fold with a space",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\nConnection: close\r\n\r\n",
        400,
    ),
    case(
        "obs-fold with a tab hiding te",
        b"POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        400,
    ),
    case(
        "content-length with space before the colon",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n",
        400,
    ),
    case(
        "invalid character in a header name",
        b"GET / HTTP/1.1\r\nHost: x\r\nX\x01A: 1\r\n\r\n",
        400,
    ),
    case(
        "header name with a slash",
        b"GET / HTTP/1.1\r\nHost: x\r\nX/A: 1\r\n\r\n",
        400,
    ),
    case(
        "empty header name",
        b"GET / HTTP/1.1\r\nHost: x\r\n: 1\r\n\r\n",
        400,
    ),
    case(
        "nul in a header value",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        400,
    ),
    case(
        "bare cr in a header value",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    // Line endings.
    case(
        "bare lf line endings",
        b"GET / HTTP/1.1\nHost: x\nConnection: close\n\n",
        400,
    ),
    case(
        "bare lf ending one header",
        b"POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    case(
        "bare cr line ending",
        b"GET / HTTP/1.1\rHost: x\r\n\r\n",
        400,
    ),
    // Chunked bodies.
    case(
        "chunk size 0x5",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    case(
        "chunk size with a sign",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    case(
        "chunk size overflowing u64",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    case(
        "empty chunk size",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    case(
        "chunk size with bare lf",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nabcde\r\n0\r\n\r\n",
        400,
    ),
    case(
        "chunk data longer than its size",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    case(
        "chunk data without its crlf",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde0\r\n\r\n",
        400,
    ),
    case(
        "last chunk without the final crlf, next request as trailer",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    // Request line.
    case(
        "two spaces in the request line",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    case(
        "http/1.2",
        b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
        400,
    ),
    case("http/0.9", b"GET /\r\n\r\n", 400),
    case(
        "lowercase version",
        b"GET / http/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    // Host.
    case(
        "two host headers",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        400,
    ),
    case("no host on http/1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    case(
        "absolute-form with a different host",
        b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
        400,
    ),
    // Positive controls: valid edge cases reach the server.
    case(
        "plain get",
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        200,
    ),
    case(
        "chunk extensions",
        b"POST /ext HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5;ext\r\nabcde\r\n3 ; a=\"b;c\"\r\nfgh\r\n0;last\r\n\r\n",
        200,
    ),
    case(
        "trailers",
        b"POST /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\nX-Checksum: 1\r\n\r\n",
        200,
    ),
    case(
        "te Chunked in capitals",
        b"POST /caps HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        200,
    ),
    case(
        "uppercase hex chunk size",
        b"POST /hex HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        200,
    ),
    case(
        "absolute-form with the same host",
        b"GET http://a.example/abs HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        200,
    ),
    case(
        "expect 100-continue with a content-length body",
        b"POST /expect HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        200,
    ),
    case(
        "http/1.0 with content-length",
        b"POST /ten HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",
        200,
    ),
    // `Connection` naming a framing field (CL.0: the field removed, the body still relayed
    // by it). The body of the first cases is a complete request.
    case(
        "connection names content-length",
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    case(
        "connection names Content-Length after keep-alive",
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    case(
        "second connection field names content-length",
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: content-length\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    case(
        "connection names content-length between tabs",
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection:\tclose ,\tcontent-length\t\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    case(
        "connection names content-length on http/1.0",
        b"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive, content-length\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    case(
        "connection names content-length with expect",
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: content-length\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    case(
        "connection names transfer-encoding",
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n23\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n",
        400,
    ),
    case(
        "connection names host",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n",
        400,
    ),
    case(
        "connection names trailer",
        b"POST / HTTP/1.1\r\nHost: x\r\nTrailer: x-checksum\r\nConnection: trailer\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Checksum: 1\r\n\r\n",
        400,
    ),
    // `Connection` naming hop-by-hop fields, which are never forwarded anyway (RFC 9110
    // requires naming Upgrade and TE), or an end-to-end field: served, the field removed.
    stripped(
        "connection names upgrade and http2-settings (h2c upgrade attempt)",
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        &["upgrade", "http2-settings"],
    ),
    stripped(
        "connection names te",
        b"GET /te HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: TE, close\r\n\r\n",
        &["te"],
    ),
    stripped(
        "connection names keep-alive",
        b"GET /ka HTTP/1.1\r\nHost: x\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, close\r\n\r\n",
        &["keep-alive"],
    ),
    stripped(
        "connection names a private field",
        b"POST /private HTTP/1.1\r\nHost: x\r\nX-Private: 1\r\nConnection: close, X-Private\r\nContent-Length: 2\r\n\r\nab",
        &["x-private"],
    ),
];

/// How a corpus case reaches the proxy's request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The raw HTTP/1.1 forwarder.
    Raw,
    /// hyper's HTTP/1 server: [`HANDOVER`] first on the same connection.
    Hyper,
}

/// A request the raw path hands to hyper (a chunked body), routed to the `sink` backend:
/// the connection then stays with hyper, so the next request on it is parsed by hyper and
/// checked by the hyper path, while the tap sees nothing of this one.
const HANDOVER: &[u8] =
    b"POST /handover HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

/// Anything a case can be written to.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A proxy whose frontend sends `/handover` to `sink` and everything else to `target`,
/// terminating TLS (certificate `a.test`, ALPN h2 and http/1.1) when `tls`.
async fn corpus_proxy(target: SocketAddr, sink: &TestServer, tls: bool) -> (Proxy, SocketAddr) {
    let bind = free_addr();
    let mut fe = Frontend::new("web", Mode::Http, bind, "target");
    fe.routes.push(Route {
        host: None,
        path_prefix: Some("/handover".into()),
        header: None,
        backend: "sink".into(),
    });
    if tls {
        let alpn = ["h2".to_owned(), "http/1.1".to_owned()];
        fe.tls = Some(FrontendTls::load(&[data("a.test.pem")], &alpn).expect("certificate"));
    }
    let backends = vec![
        Backend::new("target", Mode::Http, vec![Server::new("target", target)]),
        Backend::new("sink", Mode::Http, vec![server(sink, 1)]),
    ];
    start(Plan::new(vec![fe], backends).expect("valid plan")).await
}

/// A connection to the proxy: TLS when `tls`, offering `alpn`.
async fn connect(addr: SocketAddr, tls: bool, alpn: &[&[u8]]) -> Box<dyn Io> {
    if tls {
        let cfg = client_config(&both(), alpn);
        Box::new(tls_connect(&cfg, addr, "a.test").await)
    } else {
        Box::new(TcpStream::connect(addr).await.expect("connect"))
    }
}

/// Reads one response with a Content-Length body (what the test servers send).
async fn read_one(s: &mut Box<dyn Io>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + len {
                    return;
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(LIMIT, read).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection ready for a case on `via`: for hyper, after [`HANDOVER`] was answered.
async fn ready(addr: SocketAddr, tls: bool, via: Via) -> Box<dyn Io> {
    let mut s = connect(addr, tls, &[b"http/1.1"]).await;
    if via == Via::Hyper {
        s.write_all(HANDOVER).await.expect("write");
        let resp = read_one(&mut s).await;
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "handover request: {resp:?}"
        );
    }
    s
}

/// Sends `case` on a fresh connection (after the handover request for hyper); the response
/// must have the case's status, and the tap must have seen nothing (400) or a request
/// without the case's `absent` fields (200).
async fn check(addr: SocketAddr, tls: bool, via: Via, tap: &Tap, case: &Case) -> Option<String> {
    let mut s = ready(addr, tls, via).await;
    let before = tap.seen();
    s.write_all(case.raw).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out).into_owned();
    let status = status_of(&resp);
    // A forwarded request could still be on its way to the tap: give it a moment.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = tap.seen();
    let mut problems = Vec::new();
    // `HTTP/1.1 100 Continue` may come first for Expect; look at the final status.
    let status = if status == 100 {
        resp.split("\r\n\r\n").nth(1).map_or(0, status_of)
    } else {
        status
    };
    if status != case.want {
        problems.push(format!(
            "status {status}, want {}: {:?}",
            case.want,
            resp.lines().next()
        ));
    }
    if case.want != 200 && after != before {
        problems.push(format!(
            "reached the server: connections, bytes, requests {before:?} -> {after:?}"
        ));
    }
    if case.want == 200 {
        match tap.requests().get(before.2) {
            None => problems.push("positive control did not reach the server".into()),
            Some(seen) => {
                for f in case.absent {
                    if seen.fields.iter().any(|s| s == f) {
                        problems.push(format!("the server saw `{f}`: {:?}", seen.fields));
                    }
                }
            }
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{} ({via:?}{}): {}",
            case.name,
            if tls { ", tls" } else { "" },
            problems.join("; ")
        )
    })
}

/// Runs the whole of [`CORPUS`] on one path; every failure, one per line.
async fn run_corpus(tls: bool, via: Via) {
    let (tap_addr, tap) = tap_server().await;
    let sink = http_server("sink").await;
    let (_proxy, addr) = corpus_proxy(tap_addr, &sink, tls).await;
    let refused = CORPUS.iter().filter(|c| c.want != 200).count();
    assert!(refused >= 20, "corpus has {refused} refused cases");
    let mut failures = Vec::new();
    for case in CORPUS {
        if let Some(f) = check(addr, tls, via, &tap, case).await {
            failures.push(f);
        }
    }
    eprintln!(
        "smuggling corpus via {via:?}{}: {} cases ({refused} refused, {} served), {} failures",
        if tls { " over tls" } else { "" },
        CORPUS.len(),
        CORPUS.len() - refused,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // No request ever reached the tap under a path a refused case tried to smuggle.
    let requests = tap.requests();
    assert!(
        requests.iter().all(|r| r.path != "/smuggled"),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_corpus_is_refused_before_any_server_and_valid_edges_pass() {
    run_corpus(false, Via::Raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_corpus_on_the_hyper_path() {
    run_corpus(false, Via::Hyper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_corpus_over_tls() {
    run_corpus(true, Via::Raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_corpus_over_tls_on_the_hyper_path() {
    run_corpus(true, Via::Hyper).await;
}

/// One server response and what the client must get.
struct Reply {
    name: &'static str,
    raw: &'static [u8],
    /// 502: refused (and the server connection closed, never reused); 200: relayed.
    want: u16,
    /// Fields the client must not see.
    absent: &'static [&'static str],
}

/// Responses naming a framing field in `Connection` (which would strip the framing the proxy
/// relays by), and controls naming fields that may go.
const RESPONSES: &[Reply] = &[
    Reply {
        name: "response connection names content-length",
        raw: b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
        want: 502,
        absent: &[],
    },
    Reply {
        name: "response connection names Content-Length after keep-alive",
        raw: b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 5\r\n\r\nhello",
        want: 502,
        absent: &[],
    },
    Reply {
        name: "second response connection field names content-length",
        raw: b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
        want: 502,
        absent: &[],
    },
    Reply {
        name: "response connection names transfer-encoding",
        raw: b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        want: 502,
        absent: &[],
    },
    Reply {
        name: "response connection names trailer",
        raw: b"HTTP/1.1 200 OK\r\nTrailer: x-sum\r\nConnection: Trailer\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
        want: 502,
        absent: &[],
    },
    Reply {
        name: "response connection names host",
        raw: b"HTTP/1.1 200 OK\r\nConnection: keep-alive, host\r\nContent-Length: 5\r\n\r\nhello",
        want: 502,
        absent: &[],
    },
    Reply {
        name: "response connection names a private field",
        raw: b"HTTP/1.1 200 OK\r\nX-Private: 1\r\nConnection: x-private\r\nContent-Length: 5\r\n\r\nhello",
        want: 200,
        absent: &["x-private"],
    },
    Reply {
        name: "response connection names keep-alive",
        raw: b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
        want: 200,
        absent: &["keep-alive"],
    },
];

/// What the scripted server did: per request, the index of the [`RESPONSES`] entry sent and
/// the server connection it went out on; and the connections the proxy closed.
#[derive(Default)]
struct Script {
    accepts: AtomicU64,
    served: Mutex<Vec<(usize, u64)>>,
    closed: Mutex<Vec<u64>>,
}

/// A raw server answering `GET /r/<i>` with `RESPONSES[i]`, keep-alive.
async fn script_server() -> (SocketAddr, Arc<Script>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let script = Arc::new(Script::default());
    let sc = script.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let id = sc.accepts.fetch_add(1, Ordering::SeqCst);
            let sc = sc.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                sc.closed.lock().expect("not poisoned").push(id);
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let i: usize = head
                        .split(' ')
                        .nth(1)
                        .and_then(|p| p.strip_prefix("/r/"))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(usize::MAX);
                    let Some(reply) = RESPONSES.get(i) else {
                        return;
                    };
                    sc.served.lock().expect("not poisoned").push((i, id));
                    if s.write_all(reply.raw).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, script)
}

/// Whether `resp` (a client's view) carries the field `name`.
fn has_field(resp: &str, name: &str) -> bool {
    let head = resp.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).any(|l| {
        l.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
    })
}

/// Runs [`RESPONSES`] on one HTTP/1 path: status and fields as the client sees them.
async fn run_responses_h1(tls: bool, via: Via) -> Arc<Script> {
    let (server, script) = script_server().await;
    let sink = http_server("sink").await;
    let (_proxy, addr) = corpus_proxy(server, &sink, tls).await;
    let mut failures = Vec::new();
    for (i, reply) in RESPONSES.iter().enumerate() {
        let mut s = ready(addr, tls, via).await;
        let req = format!("GET /r/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let resp = read_one(&mut s).await;
        let status = status_of(&resp);
        if status != reply.want {
            failures.push(format!(
                "{} ({via:?}): status {status}, want {}: {resp:?}",
                reply.name, reply.want
            ));
        }
        for f in reply.absent {
            if has_field(&resp, f) {
                failures.push(format!(
                    "{} ({via:?}): the client saw `{f}`: {resp:?}",
                    reply.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    script
}

/// Every refused response's server connection was closed by the proxy, never reused.
async fn refused_connections_are_closed(script: &Script) {
    let refused: Vec<u64> = script
        .served
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(i, _)| RESPONSES[*i].want != 200)
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(
        refused.len(),
        RESPONSES.iter().filter(|r| r.want != 200).count()
    );
    let served = script.served.lock().expect("not poisoned").clone();
    for c in &refused {
        assert_eq!(
            served.iter().filter(|(_, conn)| conn == c).count(),
            1,
            "server connection {c} answered a refused response, then served again: {served:?}"
        );
    }
    wait_until(
        "the proxy to close the refused responses' connections",
        || {
            let closed = script.closed.lock().expect("not poisoned");
            refused.iter().all(|c| closed.contains(c))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_naming_framing_fields_are_502_on_every_http1_path() {
    for (tls, via) in [
        (false, Via::Raw),
        (false, Via::Hyper),
        (true, Via::Raw),
        (true, Via::Hyper),
    ] {
        let script = run_responses_h1(tls, via).await;
        refused_connections_are_closed(&script).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_naming_framing_fields_are_502_over_http2() {
    for tls in [false, true] {
        let (server, script) = script_server().await;
        let sink = http_server("sink").await;
        let (_proxy, addr) = corpus_proxy(server, &sink, tls).await;
        let io = connect(addr, tls, &[b"h2"]).await;
        let mut send = h2_client(io).await;
        let scheme = if tls { "https" } else { "http" };
        let mut failures = Vec::new();
        for (i, reply) in RESPONSES.iter().enumerate() {
            let req = Request::get(format!("{scheme}://a.test/r/{i}"))
                .body(String::new())
                .expect("request");
            let resp = tokio::time::timeout(LIMIT, send.send_request(req))
                .await
                .expect("in time")
                .expect("response");
            if resp.status().as_u16() != reply.want {
                failures.push(format!(
                    "{} (h2, tls {tls}): status {}",
                    reply.name,
                    resp.status()
                ));
            }
            for f in reply.absent {
                if resp.headers().contains_key(*f) {
                    failures.push(format!("{} (h2): the client saw `{f}`", reply.name));
                }
            }
            let _ = collect(resp.into_body()).await;
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        refused_connections_are_closed(&script).await;
    }
}

/// What an HTTP/2 case must lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H2Want {
    /// Refused (a stream error or 400) before anything reached the server.
    Refused,
    /// Refused once its DATA contradicts its head: the request may have started upstream,
    /// but its body is cut, so the server sees a truncated request, never a complete one.
    RefusedBody,
    /// Served (200).
    Served,
}

/// One HTTP/2 request: header fields (pseudo-fields included; `:scheme` is set per path),
/// DATA frames, optional trailers.
struct H2Case {
    name: &'static str,
    fields: &'static [(&'static str, &'static str)],
    data: &'static [&'static [u8]],
    trailers: Option<&'static [(&'static str, &'static str)]>,
    want: H2Want,
}

const fn h2(
    name: &'static str,
    fields: &'static [(&'static str, &'static str)],
    data: &'static [&'static [u8]],
    want: H2Want,
) -> H2Case {
    H2Case {
        name,
        fields,
        data,
        trailers: None,
        want,
    }
}

/// A request body that is itself a request.
const HIDDEN: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// The corpus in HTTP/2 terms (RFC 9113 section 8): framing comes from frames, so the HTTP/1
/// framing fields become connection-specific fields (malformed, section 8.2.2), a
/// `content-length` the DATA contradicts (section 8.1.1), pseudo-field mistakes (section
/// 8.3) and a `host` that contradicts `:authority` (section 8.3.1).
const H2_CORPUS: &[H2Case] = &[
    h2(
        "connection names content-length",
        &[
            (":method", "POST"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("connection", "content-length"),
            ("content-length", "35"),
        ],
        &[HIDDEN],
        H2Want::Refused,
    ),
    h2(
        "connection keep-alive",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("connection", "keep-alive"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "keep-alive field",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("keep-alive", "timeout=5"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "proxy-connection field",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("proxy-connection", "keep-alive"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "transfer-encoding chunked",
        &[
            (":method", "POST"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("transfer-encoding", "chunked"),
        ],
        &[b"23\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n"],
        H2Want::Refused,
    ),
    h2(
        "upgrade field",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("upgrade", "h2c"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "te gzip",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("te", "gzip"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "te trailers and gzip",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("te", "trailers, gzip"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "content-length not a number",
        &[
            (":method", "POST"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("content-length", "5x"),
        ],
        &[b"abcde"],
        H2Want::Refused,
    ),
    h2(
        "host differs from :authority",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "a.example"),
            (":path", "/"),
            ("host", "b.example"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "host with another port than :authority",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "a.example"),
            (":path", "/"),
            ("host", "a.example:8080"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "two host fields",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("host", "x"),
            ("host", "y"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "no :method",
        &[(":scheme", ""), (":authority", "x"), (":path", "/")],
        &[],
        H2Want::Refused,
    ),
    h2(
        "no :path",
        &[(":method", "GET"), (":scheme", ""), (":authority", "x")],
        &[],
        H2Want::Refused,
    ),
    h2(
        "empty :path",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", ""),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "two :path fields",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            (":path", "/smuggled"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "pseudo-field after a regular field",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            ("x-a", "1"),
            (":path", "/"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "unknown pseudo-field",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            (":smuggle", "1"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "lf in a field value",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("x-a", "1\r\nContent-Length: 35"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "nul in a field value",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("x-a", "a\0b"),
        ],
        &[],
        H2Want::Refused,
    ),
    h2(
        "content-length larger than the data",
        &[
            (":method", "POST"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("content-length", "70"),
        ],
        &[HIDDEN],
        H2Want::RefusedBody,
    ),
    h2(
        "content-length smaller than the data",
        &[
            (":method", "POST"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("content-length", "0"),
        ],
        &[HIDDEN],
        H2Want::RefusedBody,
    ),
    h2(
        "two differing content-length fields",
        &[
            (":method", "POST"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/"),
            ("content-length", "35"),
            ("content-length", "70"),
        ],
        &[HIDDEN],
        H2Want::RefusedBody,
    ),
    // Positive controls.
    h2(
        "plain get",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/ok"),
        ],
        &[],
        H2Want::Served,
    ),
    h2(
        "a body that looks like a request",
        &[
            (":method", "POST"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/body"),
            ("content-length", "35"),
        ],
        &[HIDDEN],
        H2Want::Served,
    ),
    h2(
        "a body without content-length in two frames",
        &[
            (":method", "POST"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/frames"),
        ],
        &[b"GET /smuggled", b" HTTP/1.1\r\nHost: x\r\n\r\n"],
        H2Want::Served,
    ),
    h2(
        "te trailers",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/te"),
            ("te", "trailers"),
        ],
        &[],
        H2Want::Served,
    ),
    h2(
        "host equal to :authority but for case",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":authority", "a.example"),
            (":path", "/same-host"),
            ("host", "A.Example"),
        ],
        &[],
        H2Want::Served,
    ),
    h2(
        "host and no :authority",
        &[
            (":method", "GET"),
            (":scheme", ""),
            (":path", "/host"),
            ("host", "x"),
        ],
        &[],
        H2Want::Served,
    ),
    H2Case {
        name: "request trailers",
        fields: &[
            (":method", "POST"),
            (":scheme", ""),
            (":authority", "x"),
            (":path", "/trailers"),
        ],
        data: &[b"abcde"],
        trailers: Some(&[("x-checksum", "1")]),
        want: H2Want::Served,
    },
];

/// Runs [`H2_CORPUS`] over h2c prior knowledge or ALPN h2.
async fn run_h2_corpus(tls: bool) {
    let (tap_addr, tap) = tap_server().await;
    let sink = http_server("sink").await;
    let (_proxy, addr) = corpus_proxy(tap_addr, &sink, tls).await;
    let scheme = if tls { "https" } else { "http" };
    let mut failures = Vec::new();
    for case in H2_CORPUS {
        let fields: Vec<(&str, &str)> = case
            .fields
            .iter()
            .map(|&(n, v)| if n == ":scheme" { (n, scheme) } else { (n, v) })
            .collect();
        let bytes = h2raw::request(&fields, case.data, case.trailers);
        let mut s = connect(addr, tls, &[b"h2"]).await;
        let before = tap.seen();
        let outcome = h2raw::exchange(&mut s, &bytes, Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after = tap.seen();
        let refused = matches!(
            outcome,
            Outcome::Reset(_) | Outcome::GoAway(_) | Outcome::Status(400)
        );
        let mut problems = Vec::new();
        match case.want {
            H2Want::Refused | H2Want::RefusedBody if !refused => {
                problems.push(format!("not refused: {outcome:?}"));
            }
            H2Want::Refused if after != before => problems.push(format!(
                "reached the server: connections, bytes, requests {before:?} -> {after:?}"
            )),
            H2Want::RefusedBody => {
                let declared = case.data.iter().map(|d| d.len()).sum::<usize>();
                for r in &tap.requests()[before.2..] {
                    if r.body >= declared {
                        problems.push(format!("the server got a complete request: {r:?}"));
                    }
                }
            }
            H2Want::Served if outcome != Outcome::Status(200) => {
                problems.push(format!("not served: {outcome:?}"));
            }
            H2Want::Served if after.2 != before.2 + 1 => {
                problems.push(format!("reached the server {} times", after.2 - before.2));
            }
            H2Want::Served => {
                // One host for the server, whatever carried it (RFC 9113 section 8.3.1).
                let seen = &tap.requests()[before.2];
                let hosts = seen.fields.iter().filter(|f| *f == "host").count();
                if hosts != 1 {
                    problems.push(format!("the server saw {hosts} host fields: {seen:?}"));
                }
            }
            _ => {}
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} (h2, tls {tls}): {}",
                case.name,
                problems.join("; ")
            ));
        }
    }
    let refused = H2_CORPUS
        .iter()
        .filter(|c| c.want != H2Want::Served)
        .count();
    eprintln!(
        "smuggling corpus via {}: {} cases ({refused} refused, {} served), {} failures",
        if tls { "h2 over tls" } else { "h2c" },
        H2_CORPUS.len(),
        H2_CORPUS.len() - refused,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let requests = tap.requests();
    assert!(
        requests.iter().all(|r| r.path != "/smuggled"),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_corpus_over_h2c() {
    run_h2_corpus(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_corpus_over_h2_on_tls() {
    run_h2_corpus(true).await;
}

/// A request hidden in a body (keep-alive pipelining) is body, never a request upstream;
/// the real second request on the connection is forwarded as its own request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_hidden_in_a_body_never_reaches_the_server_as_a_request() {
    let (tap_addr, tap) = tap_server().await;
    let (_proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![Server::new("tap", tap_addr)]),
    ))
    .await;
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let chunked_hidden = format!("{:x}\r\n{hidden}\r\n0\r\n\r\n", hidden.len());
    let raw = format!(
        "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{hidden}\
         POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_hidden}\
         GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        hidden.len()
    );
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out.matches("HTTP/1.1 200").count(), 3, "{out}");
    let requests: Vec<(String, usize)> = tap
        .requests()
        .into_iter()
        .map(|r| (r.path, r.body))
        .collect();
    let len = hidden.len();
    assert_eq!(
        requests,
        vec![
            ("/first".to_owned(), len),
            ("/second".to_owned(), len),
            ("/third".to_owned(), 0)
        ]
    );
}
