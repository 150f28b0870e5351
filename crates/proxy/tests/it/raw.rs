//! The raw HTTP/1.1 forwarder (`http::h1`): response framing relayed byte for byte,
//! pipelining, pooled-connection reuse and staleness, large bodies, and the requests it hands
//! to hyper (HTTP/1.0, `Expect`, chunked request bodies, h2c).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tandem_proxy::plan::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// A server answering each request head with `respond(path)` (raw bytes); `close_after`
/// closes the connection after each response without saying so. Counts connections.
struct Scripted {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scripted(respond: fn(&str) -> Vec<u8>, close_after: bool) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        if s.write_all(&respond(&path)).await.is_err() {
                            return;
                        }
                        if close_after {
                            // Let the proxy pool the connection first, then close it.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Scripted { addr, conns, task }
}

fn responses(path: &str) -> Vec<u8> {
    match path {
        "/chunked" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec()
        }
        "/close" => b"HTTP/1.1 200 OK\r\nX-Kind: eof\r\n\r\nuntil the end".to_vec(),
        "/early" => {
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
        }
        "/both" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()
        }
        "/private" => {
            b"HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok".to_vec()
        }
        p => {
            let body = format!("path {p}");
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
        }
    }
}

async fn proxy_for(s: &Scripted) -> (tandem_proxy::proxy::Proxy, SocketAddr) {
    proxy_to(s.addr).await
}

/// A proxy with one HTTP backend of one server at `server`.
async fn proxy_to(server: SocketAddr) -> (tandem_proxy::proxy::Proxy, SocketAddr) {
    let mut srv = tandem_proxy::plan::Server::new("s1", server);
    srv.weight = 1;
    start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![srv]),
    ))
    .await
}

/// Reads from `c` until `done` says so of what was read, `c` closes, or 10 s passed.
async fn read_until(
    c: &mut (impl tokio::io::AsyncRead + Unpin),
    done: impl Fn(&str) -> bool,
) -> String {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&String::from_utf8_lossy(&out)) {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, c.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn chunked_response_is_relayed_as_sent_and_the_connection_is_reused() {
    let s = scripted(responses, false).await;
    let (_proxy, addr) = proxy_for(&s).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let first = read_until(&mut c, |o| o.ends_with("X-Trailer: t\r\n\r\n")).await;
    assert!(
        first.starts_with("HTTP/1.1 200 OK\r\n"),
        "status line: {first:?}"
    );
    assert!(
        first.ends_with("\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
        "chunks and trailer relayed untouched: {first:?}"
    );
    assert!(
        first.contains("Transfer-Encoding: chunked\r\n"),
        "{first:?}"
    );
    // The same client connection serves the next request.
    c.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let second = read_until(&mut c, |o| o.ends_with("path /next")).await;
    assert!(second.ends_with("path /next"), "{second:?}");
    assert_eq!(s.conns.load(Ordering::SeqCst), 1, "one server connection");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let s = scripted(responses, false).await;
    let (_proxy, addr) = proxy_for(&s).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nHEAD /three HTTP/1.1\r\nHost: a\r\n\r\nGET /four HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .expect("write");
    let out = read_until(&mut c, |o| o.ends_with("path /four")).await;
    let one = out.find("path /one").expect("one answered");
    let two = out.find("path /two").expect("two answered");
    assert!(one < two, "{out:?}");
    // HEAD: the head (with its Content-Length) and no body.
    assert!(!out.contains("path /three"), "no body for HEAD: {out:?}");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 4, "{out:?}");
}

#[tokio::test]
async fn close_delimited_response_reaches_the_client_then_the_connection_closes() {
    let s = scripted(responses, false).await;
    let (_proxy, addr) = proxy_for(&s).await;
    let out = raw_exchange(addr, b"GET /close HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    assert!(out.contains("connection: close\r\n"), "{out:?}");
    assert!(out.ends_with("\r\n\r\nuntil the end"), "{out:?}");
}

#[tokio::test]
async fn interim_responses_are_relayed_before_the_final_one() {
    let s = scripted(responses, false).await;
    let (_proxy, addr) = proxy_for(&s).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"GET /early HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let out = read_until(&mut c, |o| o.ends_with("\r\n\r\nok")).await;
    let early = out
        .find("HTTP/1.1 103 Early Hints\r\n")
        .expect("103 relayed");
    let ok = out.find("HTTP/1.1 200 OK\r\n").expect("200 relayed");
    assert!(early < ok, "{out:?}");
    assert!(out.contains("Link: </s.css>; rel=preload\r\n"), "{out:?}");
}

#[tokio::test]
async fn ambiguous_response_framing_is_a_502_and_hop_by_hop_fields_are_dropped() {
    let s = scripted(responses, false).await;
    let (_proxy, addr) = proxy_for(&s).await;
    let out = raw_exchange(
        addr,
        b"GET /both HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{out:?}");
    let out = raw_exchange(
        addr,
        b"GET /private HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    assert!(!out.contains("X-Private"), "{out:?}");
    assert!(!out.contains("Keep-Alive"), "{out:?}");
    assert!(out.contains("connection: close\r\n"), "{out:?}");
    assert!(out.ends_with("\r\n\r\nok"), "{out:?}");
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_replaced_without_an_error() {
    let s = scripted(responses, true).await;
    let (_proxy, addr) = proxy_for(&s).await;
    let c = client();
    for i in 0..5 {
        let (status, body, _) = get(&c, addr, &format!("/r{i}")).await;
        assert_eq!(status, hyper::StatusCode::OK, "request {i}");
        assert_eq!(body, format!("path /r{i}"));
        // Give the server time to close the connection the proxy pooled.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert!(
        s.conns.load(Ordering::SeqCst) >= 5,
        "a new connection each time"
    );
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let srv = http_server("big").await;
    let (_proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![server(&srv, 1)]),
    ))
    .await;
    let body = vec![b'x'; 3 * 1024 * 1024 + 17];
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.expect("head");
    c.write_all(&body).await.expect("body");
    let out = read_until(&mut c, |o| {
        o.ends_with(&format!("big:{}", 3 * 1024 * 1024 + 17))
    })
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    // And the connection still serves a pipelined pair afterwards.
    c.write_all(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let out = read_until(&mut c, |o| o.matches("big:").count() == 2).await;
    assert!(out.contains("big:3"), "{out:?}");
    assert!(out.ends_with("big:0"), "{out:?}");
}

#[tokio::test]
async fn requests_the_raw_path_hands_to_hyper_are_served() {
    let srv = http_server("h").await;
    let (_proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![server(&srv, 1)]),
    ))
    .await;
    // HTTP/1.0.
    let out = raw_exchange(addr, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out:?}");
    assert!(out.ends_with("h:0"), "{out:?}");
    // A chunked request body, after a request the raw path served on the same connection.
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let first = read_until(&mut c, |o| o.ends_with("h:0")).await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first:?}");
    c.write_all(
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    let second = read_until(&mut c, |o| o.ends_with("h:4")).await;
    assert!(second.ends_with("h:4"), "{second:?}");
    // Expect: 100-continue.
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(
        b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write");
    let cont = read_until(&mut c, |o| o.contains("100 Continue")).await;
    assert!(cont.starts_with("HTTP/1.1 100 Continue"), "{cont:?}");
    c.write_all(b"hello").await.expect("body");
    let out = read_until(&mut c, |o| o.ends_with("h:5")).await;
    assert!(out.ends_with("h:5"), "{out:?}");
}

#[tokio::test]
async fn a_refused_request_that_asked_to_close_is_answered_then_closed() {
    use tandem_proxy::plan::{Frontend, Plan, Protect, Rate};
    let srv = http_server("r").await;
    let bind = free_addr();
    let mut fe = Frontend::new("web", Mode::Http, bind, "app");
    fe.protect = Protect {
        request_rate: Some(Rate {
            count: 1,
            per: Duration::from_secs(60),
        }),
        ..Protect::default()
    };
    let plan = Plan::new(vec![fe], vec![backend(Mode::Http, vec![server(&srv, 1)])]).expect("plan");
    let (_proxy, addr) = start(plan).await;
    let first = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first:?}");
    // raw_exchange reads to the end: it returns only because the proxy closed (bounded wait).
    let started = std::time::Instant::now();
    let second = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        second.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{second:?}"
    );
    assert!(second.contains("connection: close\r\n"), "{second:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the connection was closed, not left to the read bound"
    );
}

#[tokio::test]
async fn an_error_answer_to_a_request_that_asked_to_close_closes() {
    // The only server refuses connections: 503/502 after the retries.
    let dead = free_addr();
    let (_proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(
            Mode::Http,
            vec![tandem_proxy::plan::Server::new("gone", dead)],
        ),
    ))
    .await;
    let started = std::time::Instant::now();
    let out = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 50"), "{out:?}");
    assert!(out.contains("connection: close\r\n"), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the connection was closed, not left to the read bound"
    );
}

/// How the upload server of the early-answer tests treats a request body.
#[derive(Clone, Copy)]
enum Upload {
    /// Answers 413 at once and closes without reading the body (the kernel resets).
    RefuseAndClose,
    /// Answers 401 at once, then holds the connection without reading.
    RefuseAndStall,
    /// Sends an unasked-for `100 Continue`, pauses, reads the whole body, answers 200
    /// `got:<n>`.
    ContinueThenRead,
}

/// A one-connection-at-a-time server for uploads, behaving as `how` after each head.
async fn upload_server(how: Upload) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let end = loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                match how {
                    Upload::RefuseAndClose => {
                        let _ = s
                            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
                            .await;
                    }
                    Upload::RefuseAndStall => {
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\ndenied",
                            )
                            .await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Upload::ContinueThenRead => {
                        let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                        // Long enough for the proxy's writes to block with the 100 in hand.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        let mut got = buf.len() - end;
                        let mut chunk = vec![0u8; 64 * 1024];
                        while got < len {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got += n,
                            }
                        }
                        let body = format!("got:{got}");
                        let _ = s
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Posts a `len`-byte body through the proxy at `addr`, the body written by another task so
/// the answer is read while the upload may still be going; what the client read.
async fn upload_through(addr: SocketAddr, len: usize, done: impl Fn(&str) -> bool) -> String {
    let c = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = c.into_split();
    let writer = tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'u'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if wr.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    });
    let out = read_until(&mut rd, done).await;
    writer.abort();
    out
}

/// Uploads 64 MiB (far more than the socket buffers hold, so the proxy's writes to the
/// server block) to a server refusing it as `how`; the client must get the refusal, ending in
/// `body`, with `connection: close` (the rest of its body was never read).
async fn assert_early_refusal(how: Upload, status_line: &str, body: &str) {
    let (server, task) = upload_server(how).await;
    let (_proxy, addr) = proxy_to(server).await;
    let out = upload_through(addr, 64 * 1024 * 1024, |o| o.ends_with(body)).await;
    task.abort();
    assert!(out.starts_with(status_line), "{out:?}");
    assert!(out.ends_with(body), "{out:?}");
    assert!(out.contains("connection: close\r\n"), "{out:?}");
}

#[tokio::test]
async fn an_early_refusal_of_an_upload_reaches_the_client_when_the_server_closes() {
    assert_early_refusal(
        Upload::RefuseAndClose,
        "HTTP/1.1 413 Payload Too Large\r\n",
        "too big!",
    )
    .await;
}

#[tokio::test]
async fn an_early_refusal_of_an_upload_reaches_the_client_when_the_server_stops_reading() {
    assert_early_refusal(
        Upload::RefuseAndStall,
        "HTTP/1.1 401 Unauthorized\r\n",
        "denied",
    )
    .await;
}

#[tokio::test]
async fn an_unasked_100_continue_does_not_cut_the_upload() {
    let (server, task) = upload_server(Upload::ContinueThenRead).await;
    let (_proxy, addr) = proxy_to(server).await;
    let len = 16 * 1024 * 1024;
    let want = format!("got:{len}");
    let out = upload_through(addr, len, |o| o.ends_with(&want)).await;
    task.abort();
    assert!(
        out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{out:?}"
    );
    assert!(out.ends_with(&want), "{out:?}");
}

#[tokio::test]
async fn after_an_early_refusal_the_rest_of_the_upload_is_drained_not_reset() {
    let (server, task) = upload_server(Upload::RefuseAndClose).await;
    let (_proxy, addr) = proxy_to(server).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 67108864\r\n\r\n")
        .await
        .expect("head");
    c.write_all(&vec![b'u'; 256 * 1024])
        .await
        .expect("body start");
    let out = read_until(&mut c, |o| o.ends_with("too big!")).await;
    task.abort();
    assert!(out.starts_with("HTTP/1.1 413 "), "{out:?}");
    // The client, not yet aware, goes on uploading: the proxy keeps reading (and discarding)
    // instead of resetting the connection under it.
    let chunk = vec![b'u'; 64 * 1024];
    for i in 0..64 {
        tokio::time::timeout(Duration::from_secs(5), c.write_all(&chunk))
            .await
            .expect("the proxy keeps reading")
            .unwrap_or_else(|e| panic!("write {i} after the answer failed: {e}"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    c.shutdown().await.expect("shutdown");
    let rest = read_until(&mut c, |_| false).await;
    assert_eq!(rest, "", "nothing after the answer, then the close");
}
