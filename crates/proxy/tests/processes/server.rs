//! A keep-alive HTTP/1.1 test server on 127.0.0.1: `/bytes/N` answers N bytes of `x`,
//! `/head/N` answers a response head N bytes long (and never ends it), `/wait/N` answers
//! `ok` once N such requests are waiting at once (or after a minute), anything else `ok`.
//! Counts accepted connections and those that ended with an error (the peer reset them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the server saw.
#[derive(Debug, Default)]
pub struct Counts {
    /// Connections accepted.
    pub accepts: AtomicU64,
    /// Requests answered (or started, for `/head/N`).
    pub requests: AtomicU64,
    /// Connections the peer closed or reset while the server was writing to them (or, for
    /// `/head/N`, right after).
    pub cut: AtomicU64,
    /// `/head/N` connections the peer sent another request on instead of closing them.
    pub reused_after_head: AtomicU64,
    /// `/wait/N` requests waiting now.
    pub waiting: AtomicU64,
    /// Wakes the waiting requests when one more arrives.
    arrived: tokio::sync::Notify,
}

/// Starts the server; `sndbuf` sets each connection's send buffer (bytes) when given.
pub async fn start(sndbuf: Option<u32>) -> (SocketAddr, Arc<Counts>) {
    // A long backlog: thousands of connections arrive within seconds on a busy machine.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let l = sock.listen(4096).expect("listen");
    let addr = l.local_addr().expect("addr");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                // Out of descriptors for a moment: the client retries.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            if let Some(n) = sndbuf {
                let _ = socket_sndbuf(&s, n);
            }
            c.accepts.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(s, c.clone()));
        }
    });
    (addr, counts)
}

fn socket_sndbuf(s: &tokio::net::TcpStream, n: u32) -> nix::Result<()> {
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::SndBuf, &(n as usize))
}

async fn serve(mut s: tokio::net::TcpStream, counts: Arc<Counts>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let written = if let Some(n) = path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            // Streamed from one static chunk: thousands of unread answers cost no memory here.
            static CHUNK: [u8; 16 * 1024] = [b'x'; 16 * 1024];
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
            let mut r = s.write_all(head.as_bytes()).await;
            let mut left = n;
            while r.is_ok() && left > 0 {
                let take = left.min(CHUNK.len());
                r = s.write_all(&CHUNK[..take]).await;
                left -= take;
            }
            r
        } else if let Some(n) = path
            .strip_prefix("/wait/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            counts.waiting.fetch_add(1, Ordering::SeqCst);
            counts.arrived.notify_waiters();
            let all_here = async {
                loop {
                    let arrived = counts.arrived.notified();
                    if counts.waiting.load(Ordering::SeqCst) >= n {
                        return;
                    }
                    arrived.await;
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), all_here).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
        } else if let Some(n) = path
            .strip_prefix("/head/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            // A head of n bytes of fields, never ended.
            let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
            while out.len() < n {
                out.extend_from_slice(b"X-Filler: ");
                out.extend(std::iter::repeat_n(b'f', 1000));
                out.extend_from_slice(b"\r\n");
            }
            let r = s.write_all(&out).await;
            if r.is_ok() {
                // Wait for the proxy to give up on this connection.
                if let Ok(n) = s.read(&mut chunk).await
                    && n > 0
                {
                    counts.reused_after_head.fetch_add(1, Ordering::Relaxed);
                }
            }
            r
        } else {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
        };
        if written.is_err() {
            counts.cut.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if path.starts_with("/head/") {
            counts.cut.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}
