//! `mode tcp` end to end: relay, half-close, retry on connect failure.

use std::net::SocketAddr;

use tandem_proxy::plan::{Mode, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// Echoes until the client half-closes, then sends `bye` and closes.
async fn echo_then_bye() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.write_all(b"bye").await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn relay_keeps_the_other_direction_open_after_half_close() {
    let (echo, _task) = echo_then_bye().await;
    let be = backend(
        Mode::Tcp,
        vec![Server::new("dead", free_addr()), Server::new("echo", echo)],
    );
    let (_proxy, addr) = start(plan(Mode::Tcp, free_addr(), be)).await;
    for _ in 0..4 {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        let payload = vec![b'x'; 100_000];
        c.write_all(&payload).await.expect("write");
        c.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        tokio::time::timeout(LIMIT, c.read_to_end(&mut got))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(got.len(), payload.len() + 3);
        assert!(got.ends_with(b"bye"));
    }
}

#[tokio::test]
async fn tcp_with_every_server_down_closes_the_client() {
    let be = backend(Mode::Tcp, vec![Server::new("dead", free_addr())]);
    let (_proxy, addr) = start(plan(Mode::Tcp, free_addr(), be)).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let mut got = Vec::new();
    let n = tokio::time::timeout(LIMIT, c.read_to_end(&mut got))
        .await
        .expect("closed in time");
    assert!(n.is_ok_and(|n| n == 0) || got.is_empty());
}
