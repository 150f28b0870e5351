//! Request smuggling corpus (RFC 9112 framing ambiguities), data-driven.
//!
//! Owns: a tap server that counts every TCP connection, every byte and every request path
//! it receives, and one table of raw requests with the status the client must see. A case
//! expecting 400 must leave the tap untouched (no connection, no byte); a positive control
//! (valid edge cases: chunk extensions, trailers, `Chunked` in capitals, a body that looks
//! like a request) must reach it. Touches loopback only.
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
use tandem_proxy::plan::{Mode, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// What the tap server saw.
#[derive(Default)]
struct Tap {
    accepts: AtomicU64,
    bytes: AtomicU64,
    /// Paths of the requests it parsed, in order, with the body length.
    requests: Mutex<Vec<(String, usize)>>,
}

impl Tap {
    fn seen(&self) -> (u64, u64, usize) {
        (
            self.accepts.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
            self.requests.lock().expect("not poisoned").len(),
        )
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
                        let body = collect(req.into_body()).await;
                        t.requests
                            .lock()
                            .expect("not poisoned")
                            .push((path, body.len()));
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

/// The corpus: name, raw bytes, status the client must see. 400 means "nothing reached the
/// server"; 200 means "reached it" (positive controls send `Connection: close`).
const CORPUS: &[(&str, &[u8], u16)] = &[
    // Content-Length and Transfer-Encoding together (CL.TE, TE.CL).
    (
        "cl then te",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        400,
    ),
    (
        "te then cl",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        400,
    ),
    (
        "cl and te with expect 100-continue",
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    // Content-Length values.
    (
        "two differing content-length",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        400,
    ),
    (
        "two identical content-length",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    (
        "content-length list",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nabcdef",
        400,
    ),
    (
        "content-length identical list",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,5\r\n\r\nabcde",
        400,
    ),
    (
        "content-length with plus",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nabcde",
        400,
    ),
    (
        "content-length negative",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        400,
    ),
    (
        "content-length hex",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n0123456789abcdef",
        400,
    ),
    (
        "content-length with trailing junk",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nabcde",
        400,
    ),
    (
        "content-length empty",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
        400,
    ),
    (
        "content-length overflowing u64",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        400,
    ),
    // Transfer-Encoding values.
    (
        "te chunked not last",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te chunked twice in a list",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te chunked in two fields",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te chunkedx",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te identity",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n",
        400,
    ),
    (
        "te gzip then chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te with space before the colon",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te with a vertical tab",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te on http/1.0",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te with an empty value",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\nContent-Length: 0\r\n\r\n",
        400,
    ),
    // Field syntax.
    (
        "obs-fold with a space",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\nConnection: close\r\n\r\n",
        400,
    ),
    (
        "obs-fold with a tab hiding te",
        b"POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        400,
    ),
    (
        "content-length with space before the colon",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n",
        400,
    ),
    (
        "invalid character in a header name",
        b"GET / HTTP/1.1\r\nHost: x\r\nX\x01A: 1\r\n\r\n",
        400,
    ),
    (
        "header name with a slash",
        b"GET / HTTP/1.1\r\nHost: x\r\nX/A: 1\r\n\r\n",
        400,
    ),
    (
        "empty header name",
        b"GET / HTTP/1.1\r\nHost: x\r\n: 1\r\n\r\n",
        400,
    ),
    (
        "nul in a header value",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        400,
    ),
    (
        "bare cr in a header value",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    // Line endings.
    (
        "bare lf line endings",
        b"GET / HTTP/1.1\nHost: x\nConnection: close\n\n",
        400,
    ),
    (
        "bare lf ending one header",
        b"POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    (
        "bare cr line ending",
        b"GET / HTTP/1.1\rHost: x\r\n\r\n",
        400,
    ),
    // Chunked bodies.
    (
        "chunk size 0x5",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk size with a sign",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk size overflowing u64",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    (
        "empty chunk size",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk size with bare lf",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nabcde\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk data longer than its size",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcde\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk data without its crlf",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde0\r\n\r\n",
        400,
    ),
    (
        "last chunk without the final crlf, next request as trailer",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    // Request line.
    (
        "two spaces in the request line",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "http/1.2",
        b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
        400,
    ),
    ("http/0.9", b"GET /\r\n\r\n", 400),
    (
        "lowercase version",
        b"GET / http/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    // Host.
    (
        "two host headers",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        400,
    ),
    ("no host on http/1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    (
        "absolute-form with a different host",
        b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
        400,
    ),
    // Positive controls: valid edge cases reach the server.
    (
        "plain get",
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        200,
    ),
    (
        "chunk extensions",
        b"POST /ext HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5;ext\r\nabcde\r\n3 ; a=\"b;c\"\r\nfgh\r\n0;last\r\n\r\n",
        200,
    ),
    (
        "trailers",
        b"POST /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\nX-Checksum: 1\r\n\r\n",
        200,
    ),
    (
        "te Chunked in capitals",
        b"POST /caps HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        200,
    ),
    (
        "uppercase hex chunk size",
        b"POST /hex HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        200,
    ),
    (
        "absolute-form with the same host",
        b"GET http://a.example/abs HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        200,
    ),
    (
        "expect 100-continue with a content-length body",
        b"POST /expect HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        200,
    ),
    (
        "http/1.0 with content-length",
        b"POST /ten HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",
        200,
    ),
];

/// Sends `raw` on a fresh connection; the response must start with `expected`, and the tap
/// must have seen nothing (400) or a request (200).
async fn check(
    addr: SocketAddr,
    tap: &Tap,
    name: &str,
    raw: &[u8],
    expected: u16,
) -> Option<String> {
    let before = tap.seen();
    let resp = raw_exchange(addr, raw).await;
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
    if status != expected {
        problems.push(format!(
            "status {status}, want {expected}: {:?}",
            resp.lines().next()
        ));
    }
    if expected == 400 && after != before {
        problems.push(format!(
            "reached the server: connections, bytes, requests {before:?} -> {after:?}"
        ));
    }
    if expected == 200 && after.2 == before.2 {
        problems.push("positive control did not reach the server".into());
    }
    (!problems.is_empty()).then(|| format!("{name}: {}", problems.join("; ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_corpus_is_refused_before_any_server_and_valid_edges_pass() {
    let (tap_addr, tap) = tap_server().await;
    let (_proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![Server::new("tap", tap_addr)]),
    ))
    .await;
    let refused = CORPUS.iter().filter(|c| c.2 == 400).count();
    assert!(refused >= 20, "corpus has {refused} refused cases");
    let mut failures = Vec::new();
    for (name, raw, expected) in CORPUS {
        if let Some(f) = check(addr, &tap, name, raw, *expected).await {
            failures.push(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // No request ever reached the tap under a path a refused case tried to smuggle.
    let requests = tap.requests.lock().expect("not poisoned").clone();
    assert!(
        requests.iter().all(|(p, _)| p != "/smuggled"),
        "{requests:?}"
    );
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
    let requests = tap.requests.lock().expect("not poisoned").clone();
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
