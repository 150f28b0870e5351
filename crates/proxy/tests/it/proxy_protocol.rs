//! PROXY protocol end to end on loopback: v1 and v2 accepted on a bind that expects them
//! (the server sees the header's client in X-Forwarded-For), malformed, missing and slow
//! headers rejected, and `send_proxy` v1/v2 to servers in http and tcp mode (the test
//! server parses the header and the test compares its exact bytes).
//!
//! Owns: a raw TCP test server that reads a PROXY header first.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_proxy::plan::{Frontend, Mode, Plan};
use tandem_proxy::proxy_protocol::{self, Header, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// A proxy whose only bind expects a PROXY header, with a client header timeout of 300 ms.
async fn accepting_proxy(app: &TestServer, mode: Mode) -> (tandem_proxy::Proxy, SocketAddr) {
    let bind = free_addr();
    let mut fe = Frontend::new("web", mode, bind, "app");
    fe.accept_proxy = vec![bind];
    fe.timeouts.header = Duration::from_millis(300);
    start(Plan::new(vec![fe], vec![backend(mode, vec![server(app, 1)])]).expect("valid")).await
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_headers_set_the_client_address() {
    let app = http_server("app").await;
    let (_proxy, addr) = accepting_proxy(&app, Mode::Http).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            proxy_protocol::encode(Version::V1, sa("192.0.2.1:5000"), sa("198.51.100.2:443")),
            "192.0.2.1",
        ),
        (
            proxy_protocol::encode(Version::V2, sa("192.0.2.7:5000"), sa("198.51.100.2:443")),
            "192.0.2.7",
        ),
        (
            proxy_protocol::encode(Version::V2, sa("[2001:db8::9]:1"), sa("[2001:db8::1]:443")),
            "2001:db8::9",
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
    ];
    for (header, client) in cases {
        let raw = [header.as_slice(), REQUEST].concat();
        let resp = raw_exchange(addr, &raw).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(
            resp.contains(&format!("seen-x-forwarded-for: {client}\r\n")),
            "{client}: {resp}"
        );
    }
    // The header and the request may arrive in separate segments.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"PROXY TCP4 192.0.2.3 ").await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"198.51.100.2 1 2\r\nGET / HT")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&REQUEST[8..]).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out);
    assert!(
        resp.contains("seen-x-forwarded-for: 192.0.2.3\r\n"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_missing_and_slow_headers_are_rejected() {
    let app = http_server("app").await;
    let (_proxy, addr) = accepting_proxy(&app, Mode::Http).await;
    let mut v2_bad_version =
        proxy_protocol::encode(Version::V2, sa("192.0.2.7:1"), sa("192.0.2.8:2"));
    v2_bad_version[12] = 0x31;
    let cases: Vec<Vec<u8>> = vec![
        REQUEST.to_vec(),
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n".to_vec(),
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 99999\r\n".to_vec(),
        [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat(),
        v2_bad_version,
    ];
    for bad in cases {
        let raw = [bad.as_slice(), REQUEST].concat();
        let resp = raw_exchange(addr, &raw).await;
        assert_eq!(
            resp,
            "",
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&bad)
        );
    }
    // A header that never completes is cut at `client_header` (300 ms), not at LIMIT.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"PROXY TCP4 192.0.2.1").await.expect("write");
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
    assert!(out.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(hits(&app), 0);
}

/// What a PROXY-reading test server saw: the exact header bytes and their parse.
type Seen = Arc<Mutex<Vec<(Vec<u8>, Header)>>>;

/// A server that reads a PROXY header, then answers one HTTP request (`http`) or echoes.
async fn proxy_reading_server(http: bool) -> (SocketAddr, Seen, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let st = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let st = st.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let (header, len) = loop {
                    match proxy_protocol::parse(&buf) {
                        Ok(found) => break found,
                        Err(proxy_protocol::ParseError::Incomplete) => {}
                        Err(e) => panic!("server got a bad proxy header: {e}"),
                    }
                    let n = s.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "closed before the proxy header");
                    buf.extend_from_slice(&chunk[..n]);
                };
                st.lock().expect("lock").push((buf[..len].to_vec(), header));
                let mut rest = buf[len..].to_vec();
                if http {
                    while !rest.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = s.read(&mut chunk).await.expect("read");
                        if n == 0 {
                            return;
                        }
                        rest.extend_from_slice(&chunk[..n]);
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                } else {
                    let _ = s.write_all(&rest).await;
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    (addr, seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_v1_and_v2_in_http_mode() {
    for version in [Version::V1, Version::V2] {
        let (server_addr, seen, _task) = proxy_reading_server(true).await;
        let mut be = backend(
            Mode::Http,
            vec![tandem_proxy::plan::Server::new("pp", server_addr)],
        );
        be.send_proxy = Some(version);
        let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            let me = c.local_addr().expect("local");
            c.write_all(REQUEST).await.expect("write");
            let mut out = Vec::new();
            let _ = tokio::time::timeout(LIMIT, c.read_to_end(&mut out)).await;
            assert!(
                out.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&out)
            );
            let (bytes, header) = seen.lock().expect("lock").pop().expect("a header");
            assert_eq!(
                bytes,
                proxy_protocol::encode(version, me, addr),
                "{version:?}"
            );
            assert_eq!(
                header,
                Header::Proxied {
                    source: me,
                    destination: addr
                }
            );
        }
        proxy.shutdown(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_in_tcp_mode_carries_the_received_header() {
    let (server_addr, seen, _task) = proxy_reading_server(false).await;
    let bind = free_addr();
    let mut fe = Frontend::new("relay", Mode::Tcp, bind, "app");
    fe.accept_proxy = vec![bind];
    let mut be = backend(
        Mode::Tcp,
        vec![tandem_proxy::plan::Server::new("pp", server_addr)],
    );
    be.send_proxy = Some(Version::V2);
    let (_proxy, addr) = start(Plan::new(vec![fe], vec![be]).expect("valid")).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nhello")
        .await
        .expect("write");
    let mut echo = [0u8; 5];
    tokio::time::timeout(LIMIT, c.read_exact(&mut echo))
        .await
        .expect("in time")
        .expect("echo");
    assert_eq!(&echo, b"hello");
    let (bytes, _) = seen.lock().expect("lock").pop().expect("a header");
    assert_eq!(
        bytes,
        proxy_protocol::encode(Version::V2, sa("192.0.2.1:56324"), sa("198.51.100.2:443"))
    );
}
