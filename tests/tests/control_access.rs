//! Who may use the supervisor's control socket (SO_PEERCRED): `tandemctl` run as another
//! user (`setpriv --reuid=65534 ...`, this test binary re-executed with `TANDEM_TEST_CTL`)
//! is refused; a member of the read-only group reads but cannot change anything; a member
//! of the admin group commits; and idle clients (this binary again, `TANDEM_TEST_IDLE`)
//! neither block a command nor keep their connections.
//!
//! The supervisor runs with `--admin-group daemon --monitor-group nogroup`, groups every
//! Debian host has, so the test never adds groups to the host. Needs root (setpriv, and a
//! supervisor other users can reach); skipped with a notice outside CI, fails in CI.
//! Must not use anything but 127.0.0.1, ephemeral ports and temporary directories.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use serde_json::{Value, json};

const CHILD_CTL: &str = "TANDEM_TEST_CTL";
const CHILD_IDLE: &str = "TANDEM_TEST_IDLE";
/// uid/gid 65534: `nobody` / `nogroup`.
const NOBODY: u32 = 65534;
const WAIT: Duration = Duration::from_secs(20);

/// Child: `tandemctl` with the words of `TANDEM_TEST_CTL` (JSON: socket, words...), in-process
/// as its `main` does; prints its output and exit code for the parent.
#[test]
fn child_ctl() {
    let Ok(spec) = std::env::var(CHILD_CTL) else {
        return;
    };
    let words: Vec<String> = serde_json::from_str(&spec).expect("words");
    let args = ["tandemctl".to_owned(), "--socket".to_owned()]
        .into_iter()
        .chain(words);
    let cli = tandem_cli::commands::Cli::try_parse_from(args).expect("parses");
    let mut out = Vec::new();
    let code = match tandem_cli::commands::run(&cli.global, cli.command.unwrap(), &mut out) {
        Ok(c) => c,
        Err(e) => {
            out.extend_from_slice(format!("tandemctl: error: {e:#}\n").as_bytes());
            2
        }
    };
    println!(
        "@@OUT {}",
        serde_json::to_string(&String::from_utf8_lossy(&out)).unwrap()
    );
    println!("@@EXIT {code}");
}

/// Child: opens N connections to the socket of `TANDEM_TEST_IDLE` (`PATH N`), says so, sends
/// nothing, and reports how many the server closed (EOF) within 20 s.
#[test]
fn child_idle() {
    let Ok(spec) = std::env::var(CHILD_IDLE) else {
        return;
    };
    let (path, n) = spec.rsplit_once(' ').expect("PATH N");
    let n: usize = n.parse().expect("N");
    let streams: Vec<UnixStream> = (0..n)
        .map(|_| UnixStream::connect(path).expect("connect"))
        .collect();
    println!("@@CONNECTED {n}");
    std::io::stdout().flush().unwrap();
    let started = Instant::now();
    let mut closed = 0;
    for mut s in streams {
        let left = WAIT
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = Vec::new();
        if s.read_to_end(&mut buf).is_ok() {
            closed += 1;
        }
    }
    println!("@@CLOSED {closed}");
}

/// Whether the parent tests can run: root (setpriv). Panics in CI, which runs as root.
fn root_or_skip() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "control_access needs root (setpriv); CI runs as root"
    );
    eprintln!("skipped: needs root (setpriv to other users); CI runs as root");
    false
}

fn gid(name: &str) -> u32 {
    nix::unistd::Group::from_name(name)
        .expect("group database")
        .unwrap_or_else(|| panic!("group {name} exists on Debian"))
        .gid
        .as_raw()
}

/// This test binary under setpriv as `uid`/`gid` with supplementary `groups`.
fn as_user(uid: u32, gid: u32, groups: &[u32]) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        c.arg(format!("--groups={}", list.join(",")));
    }
    c.arg("--").arg(std::env::current_exe().unwrap()).args([
        "--nocapture",
        "--test-threads",
        "1",
        "--exact",
    ]);
    c
}

/// What follows `marker` on a line of a child's output (the test harness may print
/// `test NAME ... ` before it on the same line).
fn marked<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// `tandemctl --socket SOCKET WORDS` as another user: exit code and output.
fn ctl_as(uid: u32, gid: u32, groups: &[u32], socket: &Path, words: &[&str]) -> (i32, String) {
    let mut spec = vec![socket.display().to_string()];
    spec.extend(words.iter().map(|w| (*w).to_owned()));
    let out = as_user(uid, gid, groups)
        .arg("child_ctl")
        .env(CHILD_CTL, serde_json::to_string(&spec).unwrap())
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = stdout
        .lines()
        .find_map(|l| marked(l, "@@OUT "))
        .map(|j| serde_json::from_str::<String>(j).unwrap())
        .unwrap_or_else(|| {
            panic!(
                "child printed no output: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let code = stdout
        .lines()
        .find_map(|l| marked(l, "@@EXIT "))
        .and_then(|c| c.parse().ok())
        .expect("exit code");
    (code, text)
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tandem-access-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Supervisor {
    child: Child,
    socket: PathBuf,
}

impl Supervisor {
    fn start(dir: &Path, groups: Option<(&str, &str)>) -> Supervisor {
        let mut cmd = Command::new(tandem_e2e::tandem_bin());
        cmd.arg("supervisor")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--run-dir")
            .arg(dir.join("tandem"));
        if let Some((admin, monitor)) = groups {
            cmd.args(["--admin-group", admin, "--monitor-group", monitor]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tandem supervisor");
        let s = Supervisor {
            child,
            socket: dir.join("tandem/supervisor.sock"),
        };
        let t = Instant::now();
        while UnixStream::connect(&s.socket).is_err() {
            assert!(t.elapsed() < WAIT, "no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// One request as root (this process).
    fn call(&self, req: Value) -> Value {
        let stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        (&stream).write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// A configuration serving on an ephemeral port, written where every user can read it.
fn config_file(dir: &Path) -> PathBuf {
    let port = |l: TcpListener| l.local_addr().unwrap().port();
    let (front, back) = (
        port(TcpListener::bind("127.0.0.1:0").unwrap()),
        port(TcpListener::bind("127.0.0.1:0").unwrap()),
    );
    let path = dir.join("lab.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\nfrontends:\n  - name: web\n    bind: [\"127.0.0.1:{front}\"]\n    default_backend: app\nbackends:\n  - name: app\n    servers:\n      - {{ name: app1, address: 127.0.0.1:{back} }}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn other_users_are_refused_monitors_read_and_admins_commit() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("groups");
    let sup = Supervisor::start(&dir.0, Some(("daemon", "nogroup")));
    let (admin, monitor, other) = (gid("daemon"), gid("nogroup"), gid("bin"));
    let socket = sup.socket.clone();
    let file = config_file(&dir.0);
    let file = file.to_str().unwrap();

    // Neither group: refused, with what would give access.
    let (code, out) = ctl_as(NOBODY, other, &[], &socket, &["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "permission denied: nobody (uid 65534) is not root and not in group daemon (full access) or nogroup (read-only)"
        ),
        "{out}"
    );

    // Read-only group (primary group nogroup): reads work, changes are refused.
    let (code, out) = ctl_as(NOBODY, monitor, &[], &socket, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SERVICE"), "{out}");
    let (code, out) = ctl_as(NOBODY, monitor, &[], &socket, &["show", "history"]);
    assert_eq!(code, 0, "{out}");
    for words in [
        &["config", "load", file][..],
        &["config", "commit"][..],
        &["maintenance", "on"][..],
    ] {
        let (code, out) = ctl_as(NOBODY, monitor, &[], &socket, words);
        assert_eq!(code, 1, "{words:?}: {out}");
        assert!(
            out.contains("changes the node and needs group daemon or root; nobody has read-only access (group nogroup: status, sync_status, history, show_config, show_servers, show_stats, show_traffic, logs)"),
            "{words:?}: {out}"
        );
    }
    assert_eq!(sup.call(json!({"cmd": "candidate_get"}))["source"], "empty");
    assert_eq!(sup.call(json!({"cmd": "status"}))["maintenance"], false);

    // Admin group as a supplementary group: commits, recorded under its name.
    let (code, out) = ctl_as(NOBODY, other, &[admin], &socket, &["config", "load", file]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = ctl_as(
        NOBODY,
        other,
        &[admin],
        &socket,
        &["config", "commit", "by nobody"],
    );
    assert_eq!(code, 0, "{out}");
    let st = sup.call(json!({"cmd": "status"}));
    assert_eq!(st["generation"]["number"], 1, "{st:#}");
    assert_eq!(st["generation"]["author"], "nobody", "{st:#}");
}

#[test]
fn without_the_groups_only_root_gets_in() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("nogroups");
    // Group names no host has: as on a node where they were never created.
    let sup = Supervisor::start(
        &dir.0,
        Some(("tandem-test-no-admin", "tandem-test-no-monitor")),
    );
    let (code, out) = ctl_as(NOBODY, NOBODY, &[], &sup.socket, &["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("(neither group exists on this node: only root has access)"),
        "{out}"
    );
    assert_eq!(sup.call(json!({"cmd": "status"}))["ok"], true);
}

#[test]
fn idle_clients_neither_block_a_command_nor_keep_their_connections() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("idle");
    let sup = Supervisor::start(&dir.0, Some(("daemon", "nogroup")));
    // 40 idle read-only clients, more than the socket serves at once.
    let mut idle = as_user(NOBODY, gid("nogroup"), &[])
        .arg("child_idle")
        .env(CHILD_IDLE, format!("{} 40", sup.socket.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("idle clients");
    let mut lines = BufReader::new(idle.stdout.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| marked(&l, "@@CONNECTED ") == Some("40")),
        "the idle clients did not connect"
    );
    // The operator's commands get through at once, while all 40 are still connected.
    for _ in 0..5 {
        let r = sup.call(json!({"cmd": "status"}));
        assert_eq!(r["ok"], true, "{r:#}");
    }
    // And none of them keeps its connection (closed by the server within the deadline).
    let closed = lines
        .map_while(Result::ok)
        .find_map(|l| marked(&l, "@@CLOSED ").map(str::to_owned))
        .expect("the idle child reports");
    assert_eq!(closed, "40", "idle connections still open after 20 s");
    let _ = idle.wait();
    // A root client that sends nothing is dropped too.
    let mut s = UnixStream::connect(&sup.socket).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("closed by the server");
    println!("an idle root connection was closed after {:?}", t.elapsed());
}
