//! Binary upgrade of `tandem proxy` end to end (real binaries, loopback only): a new
//! process takes the listening sockets over (`--takeover`) while a client opens a new
//! connection every few milliseconds; none may be refused or fail, the old process drains
//! (an in-flight slow request completes) and exits, the new one serves. A successor that
//! fails to start (invalid configuration, or a bind failure after receiving the sockets)
//! leaves the old process serving, and a later upgrade still works.
//!
//! Owns: its temp directory, a std-thread backend server and client; every child process
//! is killed on drop and every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// A child process, killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-handover-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A keep-alive HTTP/1.1 server answering `ok`; `/slow` answers after 800 ms.
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(LIMIT));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    if head.starts_with("GET /slow") {
                        std::thread::sleep(Duration::from_millis(800));
                    }
                    let resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn write_config(dir: &Path, name: &str, binds: &[SocketAddr], server: SocketAddr) -> PathBuf {
    let binds: Vec<String> = binds.iter().map(|b| format!("\"{b}\"")).collect();
    let text = format!(
        "version: 1\nruntime: {{ socket: {} }}\nfrontends:\n  - name: web\n    bind: [{}]\n    default_backend: app\n\
         backends:\n  - name: app\n    servers:\n      - {{ name: s1, address: {server} }}\n",
        dir.join("proxy.sock").display(),
        binds.join(", ")
    );
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn spawn_proxy(dir: &Path, config: &Path, takeover: bool, log: &str) -> Proc {
    let mut cmd = Command::new(tandem_e2e::tandem_bin());
    cmd.arg("proxy").arg("--config").arg(config);
    if takeover {
        cmd.arg("--takeover").arg(dir.join("proxy.sock.handover"));
    }
    let log = std::fs::File::create(dir.join(log)).expect("log file");
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    Proc(cmd.spawn().expect("spawn tandem proxy"))
}

/// One request on a new connection: `Ok` on 200, else why.
fn request(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    if out.starts_with("HTTP/1.1 200") && out.ends_with("ok") {
        Ok(())
    } else {
        Err(format!("response {out:?}"))
    }
}

fn wait_serving(addr: SocketAddr) {
    let deadline = Instant::now() + LIMIT;
    while request(addr, "/").is_err() {
        assert!(Instant::now() < deadline, "proxy never served on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client opening a new connection every 2 ms until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    attempted: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let attempted = Arc::new(AtomicU64::new(0));
        let (st, at) = (stop.clone(), attempted.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + 3 * LIMIT;
            let mut failures = Vec::new();
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                at.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = request(addr, "/") {
                    failures.push(e);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            failures
        });
        Load {
            stop,
            attempted,
            thread: Some(thread),
        }
    }

    /// Stops the client; returns attempts and failures.
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("client thread");
        (self.attempted.load(Ordering::SeqCst), failures)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn wait_for_path(p: &Path) {
    let deadline = Instant::now() + LIMIT;
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn upgrade_hands_listeners_over_without_refusing_a_connection() {
    let dir = temp_dir("upgrade");
    let server = backend();
    let (bind, bind2) = (free_addr(), free_addr());
    let config = write_config(&dir, "tandem.yaml", &[bind], server);
    let mut old = spawn_proxy(&dir, &config, false, "old.log");
    wait_serving(bind);
    wait_for_path(&dir.join("proxy.sock.handover"));

    let load = Load::start(bind);
    std::thread::sleep(Duration::from_millis(200));
    // An in-flight request in the old process must complete while it drains.
    let slow = std::thread::spawn(move || request(bind, "/slow"));
    std::thread::sleep(Duration::from_millis(100));
    // The new configuration also adds a bind: opened fresh by the new process.
    let config2 = write_config(&dir, "tandem2.yaml", &[bind, bind2], server);
    let started = Instant::now();
    let mut new = spawn_proxy(&dir, &config2, true, "new.log");
    let status = old
        .wait_exit(LIMIT)
        .unwrap_or_else(|| panic!("old process did not exit:\n{}", log(&dir, "old.log")));
    let upgrade = started.elapsed();
    assert!(
        status.success(),
        "old exit {status}:\n{}",
        log(&dir, "old.log")
    );
    std::thread::sleep(Duration::from_millis(200));
    let (attempted, failures) = load.finish();
    eprintln!(
        "upgrade took {upgrade:?} (old exited), {attempted} connections attempted, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {attempted} connections failed: {:?}\nold:\n{}\nnew:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        log(&dir, "old.log"),
        log(&dir, "new.log")
    );
    assert!(attempted >= 50, "{attempted} attempts");
    assert_eq!(
        slow.join().expect("slow client"),
        Ok(()),
        "in-flight request during drain"
    );
    // The new process serves, on the handed-over bind and on the new one.
    assert!(
        new.0.try_wait().expect("status").is_none(),
        "new process running"
    );
    request(bind, "/").expect("new process serves the old bind");
    request(bind2, "/").expect("new process serves the new bind");
    let old_log = log(&dir, "old.log");
    assert!(
        old_log.contains("handed over to the successor"),
        "{old_log}"
    );
    let new_log = log(&dir, "new.log");
    assert!(new_log.contains("listening sockets received"), "{new_log}");
    // The new process accepts the next upgrade in turn.
    wait_for_path(&dir.join("proxy.sock.handover"));
    let mut newer = spawn_proxy(&dir, &config2, true, "newer.log");
    assert!(
        new.wait_exit(LIMIT).is_some_and(|s| s.success()),
        "second upgrade:\n{}",
        log(&dir, "new.log")
    );
    request(bind, "/").expect("third process serves");
    assert!(newer.0.try_wait().expect("status").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_successor_leaves_the_old_proxy_serving() {
    let dir = temp_dir("refused");
    let server = backend();
    let bind = free_addr();
    let config = write_config(&dir, "tandem.yaml", &[bind], server);
    let mut old = spawn_proxy(&dir, &config, false, "old.log");
    wait_serving(bind);
    wait_for_path(&dir.join("proxy.sock.handover"));
    let load = Load::start(bind);

    // 1. Invalid configuration: the successor fails before contacting the old process.
    let invalid = dir.join("invalid.yaml");
    std::fs::write(&invalid, "version: 1\nfrontends: nonsense\n").expect("write");
    let mut bad = spawn_proxy(&dir, &invalid, true, "bad1.log");
    let status = bad.wait_exit(LIMIT).expect("invalid successor exits");
    assert!(!status.success());

    // 2. Valid configuration whose extra bind is taken: the successor receives the
    // sockets, fails to start, and closes the connection without READY.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr");
    let clash = write_config(&dir, "clash.yaml", &[bind, taken], server);
    let mut bad = spawn_proxy(&dir, &clash, true, "bad2.log");
    let status = bad.wait_exit(LIMIT).expect("clashing successor exits");
    assert!(!status.success(), "{}", log(&dir, "bad2.log"));
    assert!(
        log(&dir, "bad2.log").contains("listening sockets received"),
        "{}",
        log(&dir, "bad2.log")
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        old.0.try_wait().expect("status").is_none(),
        "old process still running"
    );
    let (attempted, failures) = load.finish();
    eprintln!(
        "refused upgrades: {attempted} connections attempted, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{failures:?}\n{}",
        log(&dir, "old.log")
    );
    request(bind, "/").expect("old process serves");
    assert!(log(&dir, "old.log").contains("handover aborted"));

    // 3. The handover socket survived: a valid upgrade still works.
    let mut new = spawn_proxy(&dir, &config, true, "new.log");
    assert!(
        old.wait_exit(LIMIT).is_some_and(|s| s.success()),
        "{}",
        log(&dir, "old.log")
    );
    request(bind, "/").expect("new process serves");
    assert!(new.0.try_wait().expect("status").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
