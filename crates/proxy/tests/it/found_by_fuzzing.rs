//! Defects the fuzz targets found (docs/testing.md, "Fuzzing"), shown on the wire: a chunk
//! size followed by a form feed passed the raw head guard (`http1_response`, whose chunked
//! differential uses the guard as the strict parser), and a PROXY v1 header whose CRLF ends
//! past the 107-byte limit was accepted or refused depending on how its bytes arrived
//! (`proxy_protocol`). The `Connection` cases are in `hop_by_hop`.
//!
//! Owns: these tests only. Touches loopback only.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tandem_proxy::plan::{Frontend, Mode, Plan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_size_followed_by_a_form_feed_is_refused_before_any_server() {
    let app = http_server("app").await;
    let (_proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![server(&app, 1)]),
    ))
    .await;
    // RFC 9112 section 7.1: only spaces and tabs (BWS) may follow the size, before `;`.
    let resp = raw_exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\x0c\r\nabcde\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        app.stats.accepts.load(Ordering::SeqCst),
        0,
        "the server got a connection"
    );
    // The positive control: a space is allowed.
    let resp = raw_exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nabcde\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("app:5"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_v1_header_ending_past_107_bytes_is_refused_however_it_arrives() {
    let app = http_server("app").await;
    let bind = free_addr();
    let mut fe = Frontend::new("web", Mode::Http, bind, "app");
    fe.accept_proxy = vec![bind];
    let (_proxy, addr) = start(
        Plan::new(vec![fe], vec![backend(Mode::Http, vec![server(&app, 1)])]).expect("valid"),
    )
    .await;
    // 106 bytes, then CRLF: the LF is byte 108.
    let mut header = b"PROXY UNKNOWN ".to_vec();
    header.resize(106, b'x');
    header.extend_from_slice(b"\r\n");
    let request: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // All at once, and with the LF arriving on its own.
    let at_once = raw_exchange(addr, &[header.as_slice(), request].concat()).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&header[..107]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = s.write_all(&[b"\n".as_slice(), request].concat()).await;
    let mut split = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut split)).await;
    assert_eq!(at_once, "", "closed without an answer");
    assert!(split.is_empty(), "closed without an answer");
    assert_eq!(hits(&app), 0);
}
