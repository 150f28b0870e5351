//! Memory under hostile or slow peers, measured on a proxy in a child process
//! (`/proc/PID/status`): a server sending a 1 MiB response head, and 10 000 clients that read
//! their responses very slowly or not at all (in a network namespace whose TCP buffers are
//! small, so that what a client leaves unread stays in the proxy, not in the kernel).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ProxyChild, free_addr, raise_own_file_limit, scratch, wait_serving, write_config};

/// Sends `raw` on a fresh connection and reads the whole answer (the proxy closes, or 10 s).
async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return "connect failed".into();
    };
    if s.write_all(raw).await.is_err() {
        return "write failed".into();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Requests answered with a 1 MiB head, per path.
const BIG_HEADS: usize = 100;
/// At once.
const BIG_HEADS_AT_ONCE: usize = 25;
/// Most the proxy's resident memory may grow across them, in KiB: a head kept per request
/// (or per pooled connection) would be 100 MiB.
const BIG_HEAD_GROWTH_KIB: u64 = 32 * 1024;

pub fn a_1_mib_response_head_is_a_502_and_not_kept() {
    let dir = scratch("big-head");
    crate::block_on(async {
        let (server, counts) = crate::server::start(None).await;
        let bind = free_addr();
        let config = write_config(&dir, bind, server, "", "");
        let mut proxy = ProxyChild::start(&dir, &config, "true");
        wait_serving(bind, &mut proxy).await;
        for _ in 0..20 {
            assert!(
                exchange(
                    bind,
                    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                )
                .await
                .starts_with("HTTP/1.1 200")
            );
        }
        let base = proxy.status_kib("VmRSS").expect("rss");
        // The raw forwarder (HTTP/1.1) and hyper (HTTP/1.0 is handed to it).
        for (path, request, status) in [
            (
                "raw",
                "GET /head/1048576 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 502",
            ),
            (
                "hyper",
                "GET /head/1048576 HTTP/1.0\r\nHost: t\r\n\r\n",
                "HTTP/1.0 502",
            ),
        ] {
            let accepts = counts.accepts.load(Ordering::SeqCst);
            let cut = counts.cut.load(Ordering::SeqCst);
            let mut set = tokio::task::JoinSet::new();
            let sem = Arc::new(tokio::sync::Semaphore::new(BIG_HEADS_AT_ONCE));
            for _ in 0..BIG_HEADS {
                let sem = sem.clone();
                set.spawn(async move {
                    let _p = sem.acquire().await.expect("permit");
                    exchange(bind, request.as_bytes()).await
                });
            }
            while let Some(r) = set.join_next().await {
                let resp = r.expect("task");
                assert!(
                    resp.starts_with(status),
                    "{path}: {}",
                    &resp[..resp.len().min(300)]
                );
            }
            // Every such server connection was closed by the proxy, none pooled: each request
            // needed a connection of its own, and the next one still works.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while counts.cut.load(Ordering::SeqCst) < cut + BIG_HEADS as u64 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{path}: server connections not closed: {counts:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                counts.reused_after_head.load(Ordering::SeqCst),
                0,
                "{path}: the proxy sent another request on a connection after a 1 MiB head"
            );
            assert!(
                counts.accepts.load(Ordering::SeqCst) > accepts,
                "{path}: new server connections replaced the closed ones"
            );
            assert!(
                exchange(
                    bind,
                    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                )
                .await
                .starts_with("HTTP/1.1 200")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = proxy.status_kib("VmRSS").expect("rss");
        let peak = proxy.status_kib("VmHWM").expect("hwm");
        eprintln!(
            "1 MiB response heads: {BIG_HEADS} per path, {BIG_HEADS_AT_ONCE} at once: all 502; proxy RSS {base} KiB before, {after} KiB after, peak {peak} KiB"
        );
        assert!(
            after.saturating_sub(base) < BIG_HEAD_GROWTH_KIB,
            "the proxy kept what the heads used: RSS {base} -> {after} KiB"
        );
        proxy.stop();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Slow-reading clients wanted.
const SLOW_CLIENTS: usize = 10_000;
/// Slow clients CI needs at least (what a hard open file limit of 20 000 allows).
const MIN_SLOW_CLIENTS_IN_CI: usize = 9_500;
/// Size of each response, in bytes: 16 times the proxy's per-connection read buffer.
const RESPONSE_BYTES: usize = 256 * 1024;
/// Resident memory the proxy may add per slow client, in KiB. What it really holds per
/// connection blocked on a client: the server connection's read buffer (16 KiB,
/// `UPSTREAM_BUF_BYTES` in `http/h1.rs`, full), the client's request bytes, the connection
/// task with its boxed exchange future, and the two sockets' structures: about 20 KiB.
/// Buffering whole responses would take 256 KiB each, eight times this bound.
const PER_CLIENT_KIB: u64 = 32;
/// Every tenth client reads 1 KiB a second; the others never read.
const READER_EVERY: usize = 10;

pub fn ten_thousand_slow_readers_keep_memory_bounded_and_others_are_served() {
    crate::in_netns("slow_readers");
}

/// The body of [`ten_thousand_slow_readers_keep_memory_bounded_and_others_are_served`], in
/// its namespace.
pub fn slow_readers_in_small_buffers() {
    let hard = raise_own_file_limit();
    // Both this process (clients, server side) and the proxy hold two descriptors per client.
    let fit = (hard.saturating_sub(300) / 2) as usize;
    let clients = SLOW_CLIENTS.min(fit);
    if clients < SLOW_CLIENTS {
        let msg = format!(
            "the hard open file limit is {hard}: {SLOW_CLIENTS} slow clients need {}",
            2 * SLOW_CLIENTS + 300
        );
        // The build machines (and CI, the same kind) have a hard limit of 20 000 that root
        // cannot raise (no CAP_SYS_RESOURCE): 9 850 clients fit. A runner with far less
        // would measure nothing, so CI insists on most of the figure.
        assert!(
            !crate::in_ci() || clients >= MIN_SLOW_CLIENTS_IN_CI,
            "{msg}; CI needs at least {MIN_SLOW_CLIENTS_IN_CI}"
        );
        eprintln!("notice: {msg}; running with {clients} clients");
    }
    let dir = scratch("slow-readers");
    crate::block_on(async {
        // A small send buffer, so the server cannot park whole responses in the kernel.
        let (server, counts) = crate::server::start(Some(8192)).await;
        let bind = free_addr();
        let config = write_config(
            &dir,
            bind,
            server,
            "    max_connections: 30000\n    timeouts: { client_idle: 300s }\n",
            // Connects may wait for SYN retransmissions when the machine is busy.
            "    timeouts: { connect: 30s }\n",
        );
        let mut proxy = ProxyChild::start(&dir, &config, "true");
        wait_serving(bind, &mut proxy).await;
        for _ in 0..20 {
            let r = exchange(
                bind,
                format!(
                    "GET /bytes/{RESPONSE_BYTES} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
            assert!(r.starts_with("HTTP/1.1 200"), "{}", &r[..r.len().min(200)]);
        }
        let base = proxy.status_kib("VmRSS").expect("rss");

        let stuck = Arc::new(AtomicU64::new(0));
        let connect_failures = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut set = tokio::task::JoinSet::new();
        for i in 0..clients {
            let (stuck, connect_failures, stop) =
                (stuck.clone(), connect_failures.clone(), stop.clone());
            set.spawn(async move {
                // Spread the connects (1000 a second): the proxy's listen backlog is 1024.
                tokio::time::sleep(Duration::from_millis(i as u64)).await;
                let sock = tokio::net::TcpSocket::new_v4().expect("socket");
                let _ = sock.set_recv_buffer_size(4096);
                let Ok(mut s) = sock.connect(bind).await else {
                    connect_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let req = format!("GET /bytes/{RESPONSE_BYTES} HTTP/1.1\r\nHost: t\r\n\r\n");
                if s.write_all(req.as_bytes()).await.is_err() {
                    connect_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                stuck.fetch_add(1, Ordering::Relaxed);
                let stopped = stop.notified();
                tokio::pin!(stopped);
                if i % READER_EVERY == 0 {
                    let mut chunk = [0u8; 1024];
                    loop {
                        tokio::select! {
                            () = &mut stopped => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        if matches!(s.read(&mut chunk).await, Ok(0) | Err(_)) {
                            return;
                        }
                    }
                } else {
                    stopped.await;
                }
                drop(s);
            });
        }
        // All of them connected, asked, and the proxy has read what it reads of each answer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        while stuck.load(Ordering::Relaxed) + connect_failures.load(Ordering::Relaxed)
            < clients as u64
            || counts.requests.load(Ordering::Relaxed) < 20 + clients as u64
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "slow clients not all in: {} asked, {} failed, the server saw {:?}",
                stuck.load(Ordering::Relaxed),
                connect_failures.load(Ordering::Relaxed),
                counts
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            connect_failures.load(Ordering::Relaxed),
            0,
            "every slow client got in"
        );
        // Settle: the proxy fills its buffers and blocks on the clients.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = proxy.status_kib("VmRSS").expect("rss");
        let files = proxy.open_files();

        // Other clients are served meanwhile.
        let mut others = tokio::task::JoinSet::new();
        for _ in 0..50 {
            others.spawn(async move {
                exchange(bind, format!("GET /bytes/{RESPONSE_BYTES} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await
            });
        }
        while let Some(r) = others.join_next().await {
            let r = r.expect("task");
            assert!(
                r.starts_with("HTTP/1.1 200") && r.len() > RESPONSE_BYTES,
                "another client: {}",
                &r[..r.len().min(200)]
            );
        }
        let rss_after = proxy.status_kib("VmRSS").expect("rss");
        let bound = clients as u64 * PER_CLIENT_KIB;
        eprintln!(
            "{clients} slow readers of {RESPONSE_BYTES}-byte responses ({} reading 1 KiB/s, the rest never): proxy RSS {base} KiB idle, {rss} KiB with them ({} KiB per client), {rss_after} KiB after 50 other clients were served; {files} proxy file descriptors; bound {bound} KiB over idle",
            clients / READER_EVERY,
            (rss.saturating_sub(base)) / clients as u64
        );
        assert!(
            rss.saturating_sub(base) < bound,
            "the proxy holds more than {PER_CLIENT_KIB} KiB per slow client: RSS {base} -> {rss} KiB"
        );
        stop.notify_waiters();
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while set.join_next().await.is_some() {}
        })
        .await;
        proxy.stop();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
