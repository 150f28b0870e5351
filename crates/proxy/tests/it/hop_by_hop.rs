//! A `Connection` field never removes the fields that frame or route a message: the raw
//! forwarder drops the fields a `Connection` field names (hop-by-hop, RFC 9110 section 7.6.1),
//! but not `Content-Length`, `Transfer-Encoding` or `Host`, or the next hop would read a
//! request body as a request of its own (smuggling), get no Host, or read a response body
//! until the close (found by the `http1_request` and `http1_response` fuzz targets, see
//! docs/testing.md).
//!
//! Owns: a recording server that frames requests strictly by their Content-Length, as a real
//! one does, and the tests. Touches loopback only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_proxy::plan::{Mode, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// A request as the server read it: request line, Host value, body length.
type Seen = (String, Option<String>, usize);

/// A server that parses what it receives as HTTP/1.1 requests framed by Content-Length,
/// records each, and answers each with `response`.
async fn recording_server(response: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut slots = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut slots);
                    if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
                        let header = |name: &str| {
                            req.headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case(name))
                                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                        };
                        let len: usize = header("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= head + len {
                            let line =
                                format!("{} {}", req.method.unwrap_or(""), req.path.unwrap_or(""));
                            log.lock()
                                .expect("not poisoned")
                                .push((line, header("host"), len));
                            buf.drain(..head + len);
                            if s.write_all(response).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn proxy_to(server: SocketAddr) -> (tandem_proxy::Proxy, SocketAddr) {
    start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![Server::new("rec", server)]),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_content_length_does_not_turn_the_body_into_a_request() {
    let (server, seen) = recording_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let (_proxy, addr) = proxy_to(server).await;
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let raw = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{hidden}\
         GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        hidden.len()
    );
    let out = raw_exchange(addr, raw.as_bytes()).await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        vec![
            (
                "POST /upload".to_owned(),
                Some("x".to_owned()),
                hidden.len()
            ),
            ("GET /last".to_owned(), Some("x".to_owned()), 0),
        ],
        "the server must read the body as the upload's body, not as a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_host_does_not_strip_host() {
    let (server, seen) = recording_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let (_proxy, addr) = proxy_to(server).await;
    let out = raw_exchange(
        addr,
        b"GET /a HTTP/1.1\r\nHost: shop.example\r\nConnection: host, close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        vec![("GET /a".to_owned(), Some("shop.example".to_owned()), 0)]
    );
}

/// Sends two pipelined GETs on one connection and reads both responses (bounded in time).
async fn two_responses(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_the_response_framing_does_not_unframe_the_response() {
    let (server, _) = recording_server(
        b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let (_proxy, addr) = proxy_to(server).await;
    let out = two_responses(addr).await;
    assert_eq!(
        out.matches("\r\ncontent-length: 2\r\n").count()
            + out.matches("\r\nContent-Length: 2\r\n").count(),
        2,
        "each response keeps its length, so the client can tell them apart: {out:?}"
    );

    let (server, _) = recording_server(
        b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    )
    .await;
    let (_proxy, addr) = proxy_to(server).await;
    let out = two_responses(addr).await;
    assert_eq!(
        out.matches("\r\nTransfer-Encoding: chunked\r\n").count(),
        2,
        "each response keeps its chunked framing: {out:?}"
    );
}
