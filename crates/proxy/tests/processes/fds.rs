//! File descriptors: a proxy started under a soft limit of 1024 open files raises it to the
//! hard limit itself, and then serves 5000 concurrent keep-alive clients, with 5000
//! requests in flight at once (so two descriptors per proxied connection).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ProxyChild, free_addr, raise_own_file_limit, scratch, wait_serving, write_config};

/// Concurrent clients.
const CLIENTS: usize = 5000;
/// Requests per client, all on its one keep-alive connection: one, then one the server
/// answers only when every client's is in flight, then one more.
const REQUESTS: usize = 3;
/// Hard limit given to the proxy (the test's own hard limit if lower).
const PROXY_HARD: u64 = 65_536;

/// Sends `GET path` and reads the `ok` answer; errors say what failed.
async fn one_request(s: &mut tokio::net::TcpStream, path: &str) -> Result<(), String> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 512];
    while !out.ends_with(b"\r\n\r\nok") {
        match s.read(&mut chunk).await {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&out))),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    if out.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("answer {:?}", String::from_utf8_lossy(&out)))
    }
}

pub fn five_thousand_keep_alive_clients_under_a_1024_soft_limit() {
    let hard = raise_own_file_limit();
    // This process holds the clients and the server's side of the proxy's connections.
    let needed = 2 * CLIENTS as u64 + 500;
    if hard < needed {
        let msg = format!("the hard open file limit is {hard}, this test needs {needed}");
        assert!(!crate::in_ci(), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    }
    let proxy_hard = PROXY_HARD.min(hard);
    let dir = scratch("fds");
    crate::block_on(async {
        let (server, counts) = crate::server::start(None).await;
        let bind = free_addr();
        let config = write_config(&dir, bind, server, "", "");
        let mut proxy = ProxyChild::start(
            &dir,
            &config,
            &format!("ulimit -Sn 1024 && ulimit -Hn {proxy_hard}"),
        );
        wait_serving(bind, &mut proxy).await;
        let limits =
            std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid)).expect("limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("open files line");
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(
            nums,
            vec![proxy_hard, proxy_hard],
            "the proxy raised its soft limit: {line}"
        );
        let log = proxy.log_text();
        assert!(
            log.contains("raised the open file limit") && log.contains("soft_was=1024"),
            "the proxy logs both limits:\n{log}"
        );

        let failures = Arc::new(AtomicU64::new(0));
        let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
        // Every client has its connection open and one request done before any goes on.
        let all_open = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..CLIENTS {
            let (failures, first_error, all_open) =
                (failures.clone(), first_error.clone(), all_open.clone());
            set.spawn(async move {
                let fail = |e: String| {
                    failures.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().expect("lock").get_or_insert(e);
                };
                // Spread the connects a little: the listen backlog is 1024.
                tokio::time::sleep(Duration::from_micros(200 * i as u64)).await;
                let mut s = match tokio::net::TcpStream::connect(bind).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        fail(format!("connect: {e}"));
                        None
                    }
                };
                if let Some(c) = s.as_mut()
                    && let Err(e) = one_request(c, "/").await
                {
                    fail(e);
                    s = None;
                }
                all_open.wait().await;
                if let Some(c) = s.as_mut() {
                    for path in [format!("/wait/{CLIENTS}"), "/".to_owned()] {
                        if let Err(e) = one_request(c, &path).await {
                            fail(e);
                            break;
                        }
                    }
                }
            });
        }
        let run = async {
            all_open.wait().await;
            // Every request in flight at once: a client and a server connection each.
            while counts.waiting.load(Ordering::SeqCst) < CLIENTS as u64 && !set.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(done) = set.try_join_next() {
                    done.expect("client task");
                }
            }
            let peak = proxy.open_files();
            while set.join_next().await.is_some() {}
            peak
        };
        let peak = tokio::time::timeout(Duration::from_secs(180), run)
            .await
            .expect("the clients finish in time");
        let failed = failures.load(Ordering::Relaxed);
        eprintln!(
            "{CLIENTS} concurrent keep-alive clients x {REQUESTS} requests through a proxy started with soft limit 1024, hard {proxy_hard}: {failed} failures, {} proxy file descriptors with every request in flight, {} server connections",
            peak,
            counts.accepts.load(Ordering::Relaxed)
        );
        assert_eq!(
            failed,
            0,
            "first failure: {:?}\n{}",
            first_error.lock().expect("lock"),
            proxy
                .log_text()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            peak >= 2 * CLIENTS,
            "every request was in flight at once: {peak} fds"
        );
        proxy.stop();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
