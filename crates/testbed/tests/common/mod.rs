//! Helpers shared by the testbed's integration tests: skipping without root, tracing, bounded
//! socket helpers and checks that something is gone.
//!
//! Owns nothing of the library; it must not create namespaces itself (only through `Testbed`;
//! `tests/sweep.rs` fakes leftovers on purpose and cleans them up itself).

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tandem_testbed::Testbed;

/// Upper bound for any single network step in these tests.
pub const STEP: Duration = Duration::from_secs(5);

/// A testbed for this test, or `None` (after printing why) when not root and not in CI.
pub fn bed(name: &str) -> Option<Testbed> {
    if !root_or_skip() {
        return None;
    }
    Some(Testbed::new(name).expect("create testbed"))
}

/// Whether the test may run (root); prints the skip message otherwise (fails in CI).
pub fn root_or_skip() -> bool {
    init_tracing();
    tandem_testbed::require_root()
}

/// Installs a test-writer subscriber once (RUST_LOG selects, default warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

/// Accepts one connection, waiting at most `timeout`.
pub fn accept_within(listener: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).expect("blocking stream");
                s.set_read_timeout(Some(timeout)).expect("read timeout");
                s.set_write_timeout(Some(timeout)).expect("write timeout");
                return (s, peer);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no connection within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// Serves one connection: reads one line and answers `<prefix><line>`, then closes.
pub fn serve_one_line(listener: &TcpListener, prefix: &str) -> SocketAddr {
    let (s, peer) = accept_within(listener, STEP);
    answer_line(s, prefix);
    peer
}

/// Reads one line from `s` (bounded by its timeouts) and answers `<prefix><line>`.
///
/// Reading the whole request before closing matters: closing with unread data sends a RST.
pub fn answer_line(mut s: TcpStream, prefix: &str) {
    s.set_nonblocking(false).expect("blocking stream");
    s.set_read_timeout(Some(STEP)).expect("read timeout");
    s.set_write_timeout(Some(STEP)).expect("write timeout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        let n = s.read(&mut byte).expect("read request");
        assert_eq!(n, 1, "client closed before a full line");
        line.push(byte[0]);
    }
    s.write_all(prefix.as_bytes()).expect("write reply");
    s.write_all(&line).expect("write reply");
}

/// Connects (bounded), sends `line` and reads the reply to EOF.
pub fn request(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(STEP))?;
    s.set_write_timeout(Some(STEP))?;
    s.write_all(line.as_bytes())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Whether a process is gone (no `/proc/<pid>` or a zombie), waiting at most `timeout` for it.
pub fn process_gone_within(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // Format: "pid (comm) S ...": the state follows the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        };
        if gone || Instant::now() >= deadline {
            return gone;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Names listed by `ip netns list` (first word of each line).
pub fn netns_list() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(out.status.success(), "ip netns list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Interface names in the root namespace, from `ip -o link`.
pub fn root_links() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip -o link");
    assert!(out.status.success(), "ip -o link failed");
    // Lines look like "2: eth0: <...>" or "5: veth0@if4: <...>".
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .collect()
}
