//! The lab stack as `cargo xtask run` starts it (README), with the debug binaries: two demo
//! servers, `tandem supervisor --data-dir D/data --run-dir D/tandem`, `examples/lab.yaml`
//! loaded and committed through `tandemctl`, then the runtime API through `tandemctl`:
//! `show servers`, `server app1 drain`, `show stats` answer. Also: a proxy whose runtime
//! API and handover socket cannot bind raises alarms that `status` shows, naming the socket
//! and the cause, cleared once a restarted proxy has them.
//!
//! `tandemctl` runs in-process (`tandem_cli::commands::run`, what its `main` calls); its
//! binary belongs to another package. The lab file's fixed ports (8080, 9001, 9002) are
//! replaced by ephemeral ones so the test cannot collide with a running lab.
//! Must not use anything but 127.0.0.1, ephemeral ports and temporary directories.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use tandem_e2e::{demo_server, free_port};

/// A liveness bound for waits.
const WAIT: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tandem-lab-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("data")).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `GET /` through the frontend: the body, on 200.
fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n").ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    (out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"))
        .then(|| out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lab stack: the supervisor started as `cargo xtask run` starts it.
struct Lab {
    child: Child,
    socket: PathBuf,
    run_dir: PathBuf,
    stderr: PathBuf,
}

impl Lab {
    fn start(dir: &Path) -> Lab {
        let run_dir = dir.join("tandem");
        let stderr = dir.join("supervisor.log");
        let child = Command::new(tandem_e2e::tandem_bin())
            .arg("supervisor")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--run-dir")
            .arg(&run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start tandem supervisor");
        let lab = Lab {
            child,
            socket: run_dir.join("supervisor.sock"),
            run_dir,
            stderr,
        };
        wait_for("the control socket in the run directory", || {
            std::os::unix::net::UnixStream::connect(&lab.socket).is_ok()
        });
        lab
    }

    /// `tandemctl --socket SOCKET WORDS...`: exit code and what it printed.
    fn ctl(&self, words: &[&str]) -> (i32, String) {
        let socket = self.socket.display().to_string();
        let args = ["tandemctl", "--socket", &socket]
            .into_iter()
            .chain(words.iter().copied());
        let cli = tandem_cli::commands::Cli::try_parse_from(args).expect("parses");
        let mut out = Vec::new();
        let code = match tandem_cli::commands::run(&cli.global, cli.command.unwrap(), &mut out) {
            Ok(code) => code,
            Err(e) => {
                out.extend_from_slice(format!("tandemctl: error: {e:#}\n").as_bytes());
                2
            }
        };
        (code, String::from_utf8_lossy(&out).into_owned())
    }

    fn ok(&self, words: &[&str]) -> String {
        let (code, out) = self.ctl(words);
        assert_eq!(
            code,
            0,
            "tandemctl {} failed:\n{out}\nsupervisor log:\n{}",
            words.join(" "),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
        out
    }

    fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["--json", "status"])).expect("json")
    }

    fn alarm(&self, id: &str) -> Option<String> {
        self.status_json()["alarms"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == id)
            .and_then(|a| a["message"].as_str().map(str::to_owned))
    }

    fn proxy_pid(&self) -> Option<u64> {
        self.status_json()["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "proxy")
            .and_then(|s| s["pid"].as_u64())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// `examples/lab.yaml` on ephemeral ports; `extra` appended.
fn lab_yaml(dir: &Path, front: u16, app1: u16, app2: u16, extra: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(tandem_e2e::workspace_root().join("examples/lab.yaml")).unwrap();
    assert!(
        !text.contains("runtime:"),
        "the lab file keeps the default runtime.socket"
    );
    let text = text
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{front}"))
        .replace("127.0.0.1:9001", &format!("127.0.0.1:{app1}"))
        .replace("127.0.0.1:9002", &format!("127.0.0.1:{app2}"));
    let path = dir.join("lab.yaml");
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    path
}

#[test]
fn the_lab_stack_answers_show_servers_drain_and_show_stats() {
    let dir = TempDir::new("runtime");
    let (front, app1, app2) = (free_port(), demo_server("app1"), demo_server("app2"));
    let file = lab_yaml(&dir.0, front, app1, app2, "");
    let lab = Lab::start(&dir.0);
    lab.ok(&["config", "load", file.to_str().unwrap()]);
    let committed = lab.ok(&["config", "commit", "local stack"]);
    assert!(committed.contains("generation 1"), "{committed}");
    wait_for("a request through the proxy", || {
        get(front).is_some_and(|b| b.starts_with("hello from app"))
    });
    // The runtime API lives in the lab's run directory, not in /run/tandem.
    assert!(
        lab.run_dir.join("proxy.sock").exists(),
        "no runtime API socket in {}",
        lab.run_dir.display()
    );

    let status = lab.ok(&["status"]);
    assert!(status.contains("no alarms"), "{status}");

    let servers = lab.ok(&["show", "servers"]);
    for name in ["app1", "app2"] {
        let line = servers
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{servers}"));
        assert!(line.contains("ready"), "{line}");
    }
    let drained = lab.ok(&["server", "app1", "drain"]);
    assert!(drained.starts_with("done:"), "{drained}");
    let servers = lab.ok(&["show", "servers"]);
    let app1_line = servers.lines().find(|l| l.contains("app1")).unwrap();
    assert!(app1_line.contains("drain"), "{servers}");
    // Drained: new requests go to app2 only.
    for _ in 0..5 {
        assert_eq!(get(front).as_deref(), Some("hello from app2\n"));
    }
    let stats = lab.ok(&["show", "stats"]);
    assert!(
        stats.lines().any(|l| l.contains("web")),
        "frontend web missing:\n{stats}"
    );
    assert!(
        stats.lines().any(|l| l.contains("app")),
        "backend app missing:\n{stats}"
    );
}

#[test]
fn a_proxy_without_its_runtime_api_raises_an_alarm_that_status_shows() {
    let dir = TempDir::new("alarm");
    let (front, app1, app2) = (free_port(), demo_server("app1"), demo_server("app2"));
    // In a directory that the `runtime.socket` rule accepts (named `tandem-*`) but that does
    // not exist: the proxy serves, but cannot bind its runtime API nor its handover socket.
    let broken = lab_yaml(
        &dir.0,
        front,
        app1,
        app2,
        &format!(
            "runtime: {{ socket: {} }}\n",
            dir.0.join("tandem-missing/proxy.sock").display()
        ),
    );
    let lab = Lab::start(&dir.0);
    lab.ok(&["config", "load", broken.to_str().unwrap()]);
    lab.ok(&["config", "commit"]);
    wait_for("a request through the proxy", || get(front).is_some());
    let socket = dir.0.join("tandem-missing/proxy.sock");
    let mut msg = None;
    wait_for("alarm proxy-runtime-api", || {
        msg = lab.alarm("proxy-runtime-api");
        msg.is_some()
    });
    let msg = msg.unwrap();
    assert!(msg.contains(&socket.display().to_string()), "{msg}");
    assert!(msg.contains("No such file or directory"), "{msg}");
    let handover = lab.alarm("proxy-handover").expect("handover alarm");
    assert!(
        handover.contains(&format!("{}.handover", socket.display())),
        "{handover}"
    );
    let status = lab.ok(&["status"]);
    assert!(
        status.contains(&format!(
            "the proxy runtime API on {} is unavailable",
            socket.display()
        )) && !status.contains("no alarms"),
        "{status}"
    );
    let (code, out) = lab.ctl(&["show", "servers"]);
    assert_eq!(code, 1, "{out}");

    // Fixed in the configuration: a reload does not move the API (the proxy opens it when it
    // starts), so the alarm stays, now naming the new path...
    let good = lab_yaml(&dir.0, front, app1, app2, "");
    lab.ok(&["config", "load", good.to_str().unwrap()]);
    lab.ok(&["config", "commit"]);
    let msg = lab.alarm("proxy-runtime-api").expect("still raised");
    assert!(
        msg.contains(&lab.run_dir.join("proxy.sock").display().to_string()),
        "{msg}"
    );
    // ...until the proxy restarts; then both clear.
    let pid = lab.proxy_pid().expect("proxy pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("alarms cleared after the restart", || {
        lab.proxy_pid().is_some_and(|p| p != pid)
            && lab.alarm("proxy-runtime-api").is_none()
            && lab.alarm("proxy-handover").is_none()
    });
    lab.ok(&["show", "servers"]);
    let mut lines = BufReader::new(std::fs::File::open(&lab.stderr).unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("proxy runtime api unavailable"))),
        "the supervisor logs the problem"
    );
}

/// A configuration served over HTTP after `delay`, on 127.0.0.1; its URL.
fn slow_http(text: String, delay: Duration) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/lab.yaml", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            std::thread::sleep(delay);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
        }
    });
    url
}

#[test]
fn config_load_from_a_slow_http_server_still_reaches_the_supervisor() {
    let dir = TempDir::new("slowload");
    let (front, app1, app2) = (free_port(), demo_server("app1"), demo_server("app2"));
    let file = lab_yaml(&dir.0, front, app1, app2, "");
    // Longer than the supervisor keeps a silent connection (5 s).
    let url = slow_http(
        std::fs::read_to_string(file).unwrap(),
        Duration::from_secs(6),
    );
    let lab = Lab::start(&dir.0);
    let loaded = lab.ok(&["config", "load", &url]);
    assert!(loaded.contains("valid"), "{loaded}");
    lab.ok(&["config", "commit"]);
    wait_for("a request through the proxy", || get(front).is_some());
}
