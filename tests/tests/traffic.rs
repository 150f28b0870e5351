//! The traffic history end to end: `tandem supervisor --history-interval 1` with the lab
//! configuration (`examples/lab.yaml` on ephemeral ports), requests through the proxy, then
//! `tandemctl show traffic --json` shows a non-zero request rate of frontend `web`, and the
//! chart and CSV render it. The store is `D/data/history`.
//!
//! `tandemctl` runs in-process (`tandem_cli::commands::run`). Must not use anything but
//! 127.0.0.1, ephemeral ports and temporary directories.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use tandem_e2e::{demo_server, free_port};

/// A liveness bound for waits.
const WAIT: Duration = Duration::from_secs(30);

/// A temporary directory with `data/`, removed at the end, and the supervisor in it.
struct Stack {
    dir: PathBuf,
    child: Option<Child>,
    socket: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /` through the frontend: whether it answered 200.
fn get(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200")
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Stack {
    fn start() -> Stack {
        let dir = std::env::temp_dir().join(format!("tandem-traffic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let run_dir = dir.join("tandem");
        let mut stack = Stack {
            socket: run_dir.join("supervisor.sock"),
            dir,
            child: None,
        };
        stack.child = Some(
            Command::new(tandem_e2e::tandem_bin())
                .arg("supervisor")
                .arg("--data-dir")
                .arg(stack.dir.join("data"))
                .arg("--run-dir")
                .arg(&run_dir)
                .args(["--history-interval", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(stack.dir.join("supervisor.log")).unwrap())
                .spawn()
                .expect("start tandem supervisor"),
        );
        wait_for("the control socket", || {
            std::os::unix::net::UnixStream::connect(&stack.socket).is_ok()
        });
        stack
    }

    /// `tandemctl --socket SOCKET WORDS...`, which must succeed: what it printed.
    fn ok(&self, words: &[&str]) -> String {
        let socket = self.socket.display().to_string();
        let args = ["tandemctl", "--socket", &socket]
            .into_iter()
            .chain(words.iter().copied());
        let cli = tandem_cli::commands::Cli::try_parse_from(args).expect("parses");
        let mut out = Vec::new();
        let code = tandem_cli::commands::run(&cli.global, cli.command.unwrap(), &mut out)
            .unwrap_or_else(|e| panic!("tandemctl {}: {e:#}", words.join(" ")));
        let out = String::from_utf8_lossy(&out).into_owned();
        assert_eq!(
            code,
            0,
            "tandemctl {} failed:\n{out}\nsupervisor log:\n{}",
            words.join(" "),
            std::fs::read_to_string(self.dir.join("supervisor.log")).unwrap_or_default()
        );
        out
    }

    fn lab_yaml(&self, front: u16, app1: u16, app2: u16) -> PathBuf {
        let text = std::fs::read_to_string(tandem_e2e::workspace_root().join("examples/lab.yaml"))
            .unwrap()
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{front}"))
            .replace("127.0.0.1:9001", &format!("127.0.0.1:{app1}"))
            .replace("127.0.0.1:9002", &format!("127.0.0.1:{app2}"));
        let path = self.dir.join("lab.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The largest `avg` of series `name` in a `show traffic --json` reply.
fn peak(reply: &serde_json::Value, name: &str) -> Option<f64> {
    reply["series"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["points"]
        .as_array()?
        .iter()
        .filter_map(|p| p["avg"].as_f64())
        .reduce(f64::max)
}

fn in_dir(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

#[test]
fn requests_through_the_proxy_show_up_in_show_traffic() {
    let stack = Stack::start();
    let (front, app1, app2) = (free_port(), demo_server("app1"), demo_server("app2"));
    let file = stack.lab_yaml(front, app1, app2);
    stack.ok(&["config", "load", file.to_str().unwrap()]);
    stack.ok(&["config", "commit", "traffic"]);
    wait_for("a request through the proxy", || get(front));
    // Requests over more than two record intervals, then one more interval to record them.
    let t = Instant::now();
    let mut sent = 0;
    while t.elapsed() < Duration::from_millis(3500) {
        assert!(get(front), "the proxy stopped answering");
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut reply = serde_json::Value::Null;
    wait_for("a non-zero request rate of frontend web", || {
        reply =
            serde_json::from_str(&stack.ok(&["--json", "show", "traffic", "web"])).expect("json");
        peak(&reply, "frontend/web/requests_per_s").is_some_and(|v| v > 0.0)
    });
    let rate = peak(&reply, "frontend/web/requests_per_s").unwrap();
    assert!(
        rate > 1.0 && rate < 1000.0,
        "{rate} requests/s for {sent} requests in 3.5 s"
    );
    assert_eq!(reply["resolution"], "10s", "{reply}");
    assert!(in_dir(&stack.dir.join("data/history"), "data"));

    // The default target: every frontend and the node; the chart fits 80 columns.
    let chart = stack.ok(&["show", "traffic", "--last", "1h"]);
    println!("{chart}");
    assert!(chart.contains("frontend/web"), "{chart}");
    assert!(chart.contains("requests_per_s"), "{chart}");
    assert!(chart.lines().all(|l| l.chars().count() <= 80), "{chart}");
    let csv = stack.ok(&["show", "traffic", "web", "--csv"]);
    assert!(csv.starts_with("time,metric,value\n"), "{csv}");
    assert!(csv.contains(",frontend/web/requests_per_s,"), "{csv}");
    // A server by name.
    let server = stack.ok(&["--json", "show", "traffic", "app1", "--last", "7d"]);
    assert!(
        server.contains("server/app/app1/requests_per_s"),
        "{server}"
    );
}
