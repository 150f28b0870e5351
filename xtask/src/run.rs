//! `cargo xtask run`: the product on this machine, as a local stack on loopback.
//!
//! Owns: building the release binaries, starting two demo web servers, a node supervisor
//! (which starts the proxy) with its own data directory `target/run/data` and run directory
//! `target/run/tandem` (its sockets: control, proxy runtime API, handover; the appliance's is
//! `/run/tandem`, which does not exist here), committing the configuration through
//! `tandemctl`, and stopping everything on Ctrl-C. `--smoke` also drives the runtime API
//! through `tandemctl` (`show servers`, `server app1 drain`, `show stats`) and stops.
//! The same commands are run with the debug binaries by `tests/tests/lab_stack.rs`.
//! Must not contain product logic: every step goes through the shipped binaries.
//! The QEMU pair (the appliance image) is `cargo xtask pair`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::{project_root, section};

#[derive(clap::Args)]
pub struct Args {
    /// The configuration to run (its servers on 127.0.0.1:9001 and :9002 are started here).
    #[arg(long, default_value = "examples/lab.yaml")]
    pub config: String,
    /// Start, check that a request goes through, and stop (used by the test tier).
    #[arg(long)]
    pub smoke: bool,
}

/// Demo servers the lab configuration points at.
const DEMO_SERVERS: &[(&str, &str)] = &[("app1", "127.0.0.1:9001"), ("app2", "127.0.0.1:9002")];

/// Kills a child process when dropped, so Ctrl-C or an error leaves nothing behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    section("building tandem and tandemctl (release)");
    cmd!(sh, "cargo build --release -p tandem -p tandem-cli").run()?;
    let root = project_root();
    let bin = crate::cargo_target_dir().join("release");
    let dir = root.join("target/run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).context("creating target/run/data")?;
    // The node's run directory: the supervisor derives its sockets from it and places the
    // proxy's runtime.socket (default /run/tandem/proxy.sock) there.
    let run_dir = dir.join("tandem");
    let socket = run_dir.join("supervisor.sock");

    section("demo web servers");
    let stop = Arc::new(AtomicBool::new(false));
    for (name, addr) in DEMO_SERVERS {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("demo server {name} cannot bind {addr} (already in use?)"))?;
        eprintln!("{name} answers on http://{addr}/");
        let (name, stop) = (name.to_string(), stop.clone());
        std::thread::spawn(move || demo_server(&listener, &name, &stop));
    }

    section("tandem supervisor (starts the proxy)");
    let log = std::fs::File::create(dir.join("supervisor.log"))?;
    let _supervisor = Guard(
        Command::new(bin.join("tandem"))
            .arg("supervisor")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--run-dir")
            .arg(&run_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting tandem supervisor")?,
    );
    wait_for(&socket, Duration::from_secs(10))?;

    section(&format!("committing {}", args.config));
    let ctl = |words: &[&str]| -> Result<()> {
        let status = Command::new(bin.join("tandemctl"))
            .arg("--socket")
            .arg(&socket)
            .args(words)
            .status()
            .context("running tandemctl")?;
        if !status.success() {
            bail!("tandemctl {} failed ({status})", words.join(" "));
        }
        Ok(())
    };
    ctl(&["config", "load", &args.config])?;
    ctl(&["config", "commit", "local stack"])?;
    ctl(&["status"])?;

    let answer = get("127.0.0.1:8080").context("a request through the proxy failed")?;
    eprintln!("\nthrough the proxy: {answer}");
    if args.smoke {
        section("the runtime API through tandemctl");
        ctl(&["show", "servers"])?;
        ctl(&["server", "app1", "drain"])?;
        ctl(&["show", "stats"])?;
        ctl(&["server", "app1", "ready"])?;
        stop.store(true, Ordering::Relaxed);
        return Ok(());
    }
    eprintln!(
        "\nThe local stack is running: http://127.0.0.1:8080/ (frontend web).\n\
         Manage it with: {} --socket {} (status, show servers, server app1 drain, config edit, ...)\n\
         Supervisor log: {}\nPress Ctrl-C to stop.",
        bin.join("tandemctl").display(),
        socket.display(),
        dir.join("supervisor.log").display()
    );
    // Ctrl-C ends this process; the guards and the supervisor's own shutdown stop the rest.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Waits (bounded) until the supervisor's control socket exists.
fn wait_for(path: &Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            bail!(
                "the supervisor did not open {} within {limit:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One plain HTTP/1.0 GET through the proxy; returns the response body.
fn get(addr: &str) -> Result<String> {
    let start = Instant::now();
    loop {
        let attempt = (|| -> Result<String> {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut s, &mut text)?;
            if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
                bail!("unexpected answer: {}", text.lines().next().unwrap_or(""));
            }
            Ok(text
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_owned())
        })();
        match attempt {
            Ok(body) => return Ok(body),
            Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A tiny HTTP responder: every request gets `hello from NAME`; `/health` gets 200 too.
fn demo_server(listener: &TcpListener, name: &str, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let name = name.to_owned();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => return,
            });
            // Serve keep-alive requests until the peer closes; bodies are not expected.
            loop {
                let mut line = String::new();
                let mut head_len = 0;
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head_len += n,
                    }
                    if line == "\r\n" || line == "\n" || head_len > 64 * 1024 {
                        break;
                    }
                }
                let body = format!("hello from {name}\n");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}
