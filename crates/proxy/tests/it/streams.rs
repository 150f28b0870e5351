//! HTTP/2 streams and server slots: a stream whose response the client never reads must not
//! keep a server's `max_connections` slot.
//!
//! Owns: tests that drive the proxy with the `h2` crate as a raw client, so the test decides
//! the stream windows (0: the proxy may send no DATA) and keeps the connection alive with
//! PINGs. Touches loopback only; every wait is bounded.

use std::time::Duration;

use hyper::StatusCode;
use tandem_proxy::plan::{Frontend, Mode, Plan};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_http2_streams_do_not_pin_server_slots() {
    let srv = http_server("big").await;
    let mut sv = server(&srv, 1);
    sv.max_connections = Some(10);
    let mut be = backend(Mode::Http, vec![sv]);
    // Long enough that queued requests wait for a slot instead of failing with 503.
    be.timeouts.queue = Duration::from_secs(60);
    let bind = free_addr();
    let mut fe = Frontend::new("web", Mode::Http, bind, "app");
    fe.timeouts.idle = Duration::from_millis(300);
    let (proxy, addr) = start(Plan::new(vec![fe], vec![be]).expect("valid plan")).await;

    // One HTTP/2 connection with stream windows of 0: no response body can flow.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, &'static [u8]>(tcp)
        .await
        .expect("h2 handshake");
    let mut pings = conn.ping_pong().expect("ping pong");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    // PINGs keep the connection busy both ways, so no client inactivity timer fires on it.
    let pinger = tokio::spawn(async move {
        loop {
            if pings.ping(h2::Ping::opaque()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut streams = Vec::new();
    for i in 0..100 {
        let mut send = send.clone().ready().await.expect("stream slot");
        let req = hyper::Request::get(format!("http://a.test/bytes/{}", 256 * 1024 + i))
            .body(())
            .expect("request");
        let (resp, _) = send.send_request(req, true).expect("send");
        streams.push(resp);
    }
    let state = proxy.server_state("app", "big").expect("server state");
    wait_until("the streams to take the 10 slots", || state.active() == 10).await;

    // Other clients are served meanwhile.
    let c = client();
    for _ in 0..3 {
        let (status, body, _) = get(&c, addr, "/other").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "big:0"));
    }
    assert!(
        !driver.is_finished(),
        "the PINGs kept the HTTP/2 connection open"
    );
    // Every stream got a slot in turn (none is left waiting behind the unread ones).
    wait_until("every stream to have had its request sent", || {
        hits(&srv) == 100 + 3
    })
    .await;
    wait_until("the slots to be free", || state.active() == 0).await;
    pinger.abort();
    drop(streams);
}
