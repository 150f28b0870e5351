//! The metrics endpoint's access and bounds: only on `metrics.listen`, basic authentication
//! with `metrics.auth`, and slow or idle scrapers not keeping others out.
//!
//! Owns: the scraper clients of these tests. Touches loopback only (127.0.0.0/8).

use std::net::SocketAddr;
use std::time::Duration;

use tandem_proxy::Proxy;
use tandem_proxy::basic_auth::BasicAuth;
use tandem_proxy::plan::{Mode, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// `openssl passwd -5 -salt saltsalt secret`
const SECRET_HASH: &str = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";

async fn proxy_with(servers: usize) -> Proxy {
    let servers = (0..servers)
        .map(|i| {
            Server::new(
                &format!("server-with-a-long-name-{i}"),
                SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
            )
        })
        .collect();
    start(plan(Mode::Http, free_addr(), backend(Mode::Http, servers)))
        .await
        .0
}

/// One raw request on a fresh connection; the whole answer (the endpoint closes or `LIMIT`).
async fn scrape(addr: SocketAddr, extra: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_only_on_the_configured_address() {
    let proxy = proxy_with(1).await;
    let port = free_addr().port();
    let listen = SocketAddr::from(([127, 0, 0, 2], port));
    let (local, task) = tandem_proxy::metrics::spawn(proxy.clone(), listen)
        .await
        .expect("listener");
    assert_eq!(local, listen);
    assert!(scrape(listen, "").await.starts_with("HTTP/1.1 200"));
    for other in [[127, 0, 0, 1], [127, 0, 0, 3]] {
        let addr = SocketAddr::from((other, port));
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "{addr} must not answer: only {listen} is bound"
        );
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_auth_asks_for_credentials_and_checks_them() {
    let proxy = proxy_with(1).await;
    let auth = BasicAuth::new(vec![("prom".into(), SECRET_HASH.into())]);
    let (addr, task) = tandem_proxy::metrics::spawn_with(
        proxy.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        Some(auth),
    )
    .await
    .expect("listener");
    let basic = |user: &str, password: &str| {
        use base64ct::Encoding as _;
        format!(
            "Authorization: Basic {}\r\n",
            base64ct::Base64::encode_string(format!("{user}:{password}").as_bytes())
        )
    };
    for (what, extra) in [
        ("no credentials", String::new()),
        ("a wrong password", basic("prom", "wrong")),
        ("an unknown user", basic("grafana", "secret")),
        (
            "another scheme",
            "Authorization: Bearer secret\r\n".to_owned(),
        ),
    ] {
        let resp = scrape(addr, &extra).await;
        assert!(resp.starts_with("HTTP/1.1 401"), "{what}: {resp}");
        assert!(
            resp.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"tandem metrics\""),
            "{what}: {resp}"
        );
        assert!(!resp.contains("tandem_frontend"), "{what}: no metrics leak");
    }
    for _ in 0..3 {
        let resp = scrape(addr, &basic("prom", "secret")).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("tandem_frontend_sessions_total"), "{resp}");
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_scrapers_do_not_keep_a_scrape_out() {
    // Enough servers that the text does not fit in the socket buffers of a non-reader.
    let proxy = proxy_with(1500).await;
    let (addr, task) =
        tandem_proxy::metrics::spawn(proxy.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("listener");
    let mut stuck = Vec::new();
    for i in 0..2 * tandem_proxy::metrics::MAX_SCRAPERS {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut s = sock.connect(addr).await.expect("connect");
        if i % 2 == 0 {
            // Asks and never reads the answer.
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
                .await
                .expect("write");
        }
        // Otherwise connects and sends nothing.
        stuck.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    let resp = scrape(addr, "").await;
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    assert!(
        resp.contains("server-with-a-long-name-1499"),
        "the whole text arrived"
    );
    assert!(
        started.elapsed() < Duration::from_secs(tandem_proxy::metrics::SCRAPE_IO_SECS),
        "served without waiting for the stuck scrapers' deadlines"
    );
    task.abort();
    drop(stuck);
}
