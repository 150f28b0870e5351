//! End-to-end tests of `tandem supervisor` on loopback: a SIGKILLed proxy child is back and
//! serving (time measured and printed), an invalid commit is refused with line and column and
//! changes nothing, a commit whose apply fails (bind on a taken port) is rolled back on its own,
//! `commit confirmed` reverts unless confirmed, also across a supervisor restart, and
//! `show_servers` / `show_stats` report the proxy's live counters and states (or say the proxy
//! is not running).
//! Must not use anything but 127.0.0.1, ephemeral ports and temporary directories.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem_e2e::free_port;

/// A liveness bound for waits; acceptance figures come from the printed measurements.
const WAIT: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tandem-sup-{name}-{}", std::process::id()));
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

/// A backend answering `200 ok` to every request, on an ephemeral port.
fn backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

fn config(dir: &Path, front: u16, back: u16, weight: u32, extra_bind: Option<u16>) -> String {
    let extra = extra_bind.map_or(String::new(), |p| {
        format!("  - name: extra\n    bind: [\"127.0.0.1:{p}\"]\n    default_backend: app\n")
    });
    format!(
        "# lab config for the supervisor tests\nversion: 1\nfrontends:\n  - name: web\n    bind: [\"127.0.0.1:{front}\"]\n    default_backend: app\n{extra}backends:\n  - name: app\n    servers:\n      - {{ name: app1, address: 127.0.0.1:{back}, weight: {weight} }}\nruntime: {{ socket: {}/proxy.sock }}\n",
        dir.display()
    )
}

/// `GET /` through the frontend answers 200.
fn serving(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

struct Supervisor {
    child: Child,
    socket: PathBuf,
}

impl Supervisor {
    fn start(dir: &Path) -> Supervisor {
        Supervisor::start_with(dir, None)
    }

    /// With `crash_point`, the supervisor SIGKILLs itself there
    /// (`TANDEM_SUPERVISOR_CRASH_POINT`, `crates/supervisor/src/lib.rs`).
    fn start_with(dir: &Path, crash_point: Option<&str>) -> Supervisor {
        let socket = dir.join("supervisor.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new(tandem_e2e::tandem_bin());
        if let Some(p) = crash_point {
            cmd.env("TANDEM_SUPERVISOR_CRASH_POINT", p);
        }
        let child = cmd
            .args(["supervisor", "--data-dir"])
            .arg(dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--vrrp-socket")
            .arg(dir.join("vrrp.sock"))
            .arg("--run-dir")
            .arg(dir.join("tandem"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tandem supervisor");
        let s = Supervisor { child, socket };
        wait_for("control socket", || UnixStream::connect(&s.socket).is_ok());
        s
    }

    fn call(&self, req: Value) -> Value {
        let stream = UnixStream::connect(&self.socket).expect("connect control socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut w = stream.try_clone().unwrap();
        w.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str(&line).expect("reply is JSON")
    }

    /// One request; `None` when the supervisor closed the connection without answering.
    fn call_raw(&self, req: Value) -> Option<Value> {
        let stream = UnixStream::connect(&self.socket).expect("connect control socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut w = stream.try_clone().unwrap();
        w.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        let n = BufReader::new(stream).read_line(&mut line).unwrap_or(0);
        (n > 0).then(|| serde_json::from_str(&line).expect("reply is JSON"))
    }

    /// Waits (bounded) for the supervisor process to exit by itself.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < WAIT {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn alarm(&self, id: &str) -> Option<String> {
        self.status()["alarms"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == id)
            .and_then(|a| a["message"].as_str().map(str::to_owned))
    }

    /// The message of alarm `id`, once it is raised (bounded by `wait_for`).
    fn wait_alarm(&self, id: &str) -> String {
        let mut msg = None;
        wait_for(&format!("alarm {id}"), || {
            msg = self.alarm(id);
            msg.is_some()
        });
        msg.expect("wait_for returned, so the alarm was seen")
    }

    fn status(&self) -> Value {
        self.call(json!({"cmd": "status"}))
    }

    fn current(&self) -> u64 {
        self.status()["generation"]["number"].as_u64().unwrap_or(0)
    }

    fn proxy(&self) -> Value {
        self.status()["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "proxy")
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
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

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A supervisor with generation 1 committed and serving on `front`.
fn started(dir: &TempDir) -> (Supervisor, u16, u16) {
    let (front, back) = (free_port(), backend());
    let sup = Supervisor::start(&dir.0);
    let r = sup.call(json!({"cmd": "commit", "text": config(&dir.0, front, back, 100, None), "comment": "initial"}));
    assert_eq!(r["ok"], true, "initial commit: {r:#}");
    assert_eq!(r["generation"], 1);
    wait_for("proxy serving", || serving(front));
    (sup, front, back)
}

#[test]
fn sigkilled_proxy_is_back_and_serving_quickly() {
    let dir = TempDir::new("kill");
    let (sup, front, _) = started(&dir);
    let mut figures = Vec::new();
    for round in 1..=3 {
        let before = sup.proxy();
        let pid = before["pid"].as_u64().expect("proxy pid") as i32;
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Serving again: a new process answers through the frontend.
        wait_for("proxy serving after SIGKILL", || {
            sup.proxy()["pid"].as_u64() != Some(pid as u64) && serving(front)
        });
        let took = t.elapsed();
        figures.push(took);
        println!("round {round}: proxy SIGKILLed (pid {pid}), serving again after {took:?}");
        let after = sup.proxy();
        assert_eq!(after["restarts"].as_u64(), Some(round));
        assert_eq!(after["last_exit"], "signal 9 (SIGKILL)");
    }
    println!("restart-to-serving times: {figures:?}");
    // Liveness only; the 1 s acceptance figure is the printed measurement.
    assert!(figures.iter().all(|d| *d < Duration::from_secs(5)));
    sup.stop();
}

#[test]
fn invalid_commit_is_refused_with_line_and_column_and_changes_nothing() {
    let dir = TempDir::new("invalid");
    let (sup, front, back) = started(&dir);
    let running = std::fs::read_to_string(dir.0.join("config/running.yaml")).unwrap();
    let pid = sup.proxy()["pid"].clone();
    let bad = config(&dir.0, front, back, 100, None).replace("weight: 100", "weight: heavy");
    let r = sup.call(json!({"cmd": "commit", "text": bad}));
    assert_eq!(r["ok"], false, "{r:#}");
    assert!(r["error"].as_str().unwrap().contains("1 error"), "{r:#}");
    let d = &r["diagnostics"][0];
    // Line 10 is the server line; the ephemeral backend port always has 5 digits.
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(10), Some(57)),
        "{d:#}"
    );
    assert_eq!(d["path"], "backends[0].servers[0].weight");
    assert!(r["hint"].as_str().unwrap().contains("config validate"));
    assert_eq!(sup.current(), 1);
    let history = sup.call(json!({"cmd": "history"}));
    assert_eq!(history["generations"].as_array().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.0.join("config/running.yaml")).unwrap(),
        running
    );
    assert_eq!(sup.proxy()["pid"], pid, "the proxy was not touched");
    assert!(serving(front));
    sup.stop();
}

#[test]
fn commit_whose_apply_fails_is_rolled_back_on_its_own() {
    let dir = TempDir::new("applyfail");
    let (sup, front, back) = started(&dir);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let t = Instant::now();
    let r = sup.call(json!({"cmd": "commit", "text": config(&dir.0, front, back, 100, Some(port)), "comment": "add a frontend on a taken port"}));
    println!(
        "failed apply + automatic restore took {:?}: {}",
        t.elapsed(),
        r["error"]
    );
    assert_eq!(r["ok"], false, "{r:#}");
    assert_eq!(r["generation"], 2);
    assert_eq!(r["restored"], 3);
    assert_eq!(r["restored_from"], 1);
    assert!(
        r["error"].as_str().unwrap().contains("failed to apply"),
        "{r:#}"
    );
    let status = sup.status();
    assert_eq!(status["generation"]["number"], 3);
    assert_eq!(status["generation"]["author"], "auto-rollback");
    assert!(
        status["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == "apply-failed"),
        "{status:#}"
    );
    let shown = sup.call(json!({"cmd": "show_config"}));
    assert_eq!(shown["meta"]["restores"], 1);
    assert_eq!(
        std::fs::read_to_string(dir.0.join("config/running.yaml")).unwrap(),
        config(&dir.0, front, back, 100, None)
    );
    assert!(serving(front), "the previous configuration keeps serving");
    // Run-time server changes go to the proxy runtime API.
    let r =
        sup.call(json!({"cmd": "server", "backend": "app", "server": "app1", "action": "drain"}));
    assert_eq!(r["ok"], true, "{r:#}");
    let r = sup.call(json!({"cmd": "server", "backend": "app", "server": "nope", "action": "weight", "weight": 5}));
    assert_eq!(r["ok"], false, "{r:#}");
    drop(taken);
    sup.stop();
}

#[test]
fn commit_confirmed_reverts_unless_confirmed_also_across_a_restart() {
    let dir = TempDir::new("confirm");
    let (sup, front, back) = started(&dir);
    // Not confirmed: reverts.
    let r = sup.call(
        json!({"cmd": "commit", "text": config(&dir.0, front, back, 50, None), "confirm_ms": 1500}),
    );
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["pending_confirm"]["restore"], 1);
    assert_eq!(
        r["changes"][0]["path"],
        "backends[app].servers[app1].weight"
    );
    wait_for("automatic rollback", || sup.current() == 3);
    let s = sup.status();
    assert_eq!(s["generation"]["author"], "auto-rollback");
    assert!(s["pending_confirm"].is_null());
    let shown = sup.call(json!({"cmd": "show_config"}));
    assert_eq!(shown["config"]["backends"][0]["servers"][0]["weight"], 100);

    // Confirmed: stays.
    let r = sup.call(
        json!({"cmd": "commit", "text": config(&dir.0, front, back, 60, None), "confirm_ms": 1500}),
    );
    assert_eq!(r["generation"], 4, "{r:#}");
    let c = sup.call(json!({"cmd": "confirm"}));
    assert_eq!(c["confirmed"], 4, "{c:#}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(sup.current(), 4);

    // The deadline survives a supervisor restart.
    let r = sup.call(
        json!({"cmd": "commit", "text": config(&dir.0, front, back, 70, None), "confirm_ms": 4000}),
    );
    assert_eq!(r["generation"], 5, "{r:#}");
    sup.stop();
    let sup = Supervisor::start(&dir.0);
    assert_eq!(sup.current(), 5);
    wait_for("automatic rollback after restart", || sup.current() == 6);
    let shown = sup.call(json!({"cmd": "show_config"}));
    assert_eq!(shown["meta"]["restores"], 4);
    wait_for("proxy serving", || serving(front));
    sup.stop();
}

#[test]
fn a_supervisor_killed_between_commit_and_apply_finishes_the_transaction_at_start() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = TempDir::new("crashcommit");
    let (sup, front, back) = started(&dir);
    sup.stop();
    let running = || std::fs::read_to_string(dir.0.join("config/running.yaml")).unwrap();

    // A good change, interrupted after the new generation was written: applied and checked at
    // the next start.
    let mut sup = Supervisor::start_with(&dir.0, Some("after-commit"));
    wait_for("proxy serving", || serving(front));
    let r = sup.call_raw(json!({"cmd": "commit", "text": config(&dir.0, front, back, 50, None), "comment": "weight 50"}));
    assert!(r.is_none(), "the supervisor died before answering: {r:?}");
    let st = sup
        .exited()
        .expect("the supervisor exits at the crash point");
    assert_eq!(st.signal(), Some(9), "{st:?}");
    assert_eq!(
        running(),
        config(&dir.0, front, back, 100, None),
        "not applied"
    );
    let sup = Supervisor::start(&dir.0);
    assert_eq!(sup.current(), 2, "the committed generation is kept");
    let msg = sup.wait_alarm("interrupted-commit");
    println!("after the restart: {msg}");
    assert!(msg.contains("generation 2"), "{msg}");
    assert!(msg.contains("applied and checked at start"), "{msg}");
    assert_eq!(running(), config(&dir.0, front, back, 50, None));
    assert_eq!(
        app1(&sup.call(json!({"cmd": "show_servers"})))["config_weight"],
        50
    );
    assert!(serving(front));
    sup.stop();

    // A change whose apply fails (a frontend on a taken port), interrupted: at the next start
    // it is applied, fails its check, and the last checked generation is restored.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut sup = Supervisor::start_with(&dir.0, Some("after-commit"));
    wait_for("proxy serving", || serving(front));
    let r = sup.call_raw(json!({"cmd": "commit", "text": config(&dir.0, front, back, 50, Some(port)), "comment": "taken port"}));
    assert!(r.is_none(), "the supervisor died before answering: {r:?}");
    sup.exited()
        .expect("the supervisor exits at the crash point");
    let sup = Supervisor::start(&dir.0);
    wait_for("the last checked generation restored", || {
        sup.current() == 4
    });
    let s = sup.status();
    assert_eq!(s["generation"]["author"], "auto-rollback", "{s:#}");
    assert_eq!(
        sup.call(json!({"cmd": "show_config"}))["meta"]["restores"],
        2
    );
    // The alarm is raised once the restore has finished (the restored generation exists a
    // moment before).
    let msg = sup.wait_alarm("interrupted-commit");
    println!("after the second restart: {msg}");
    assert!(msg.contains("generation 3"), "{msg}");
    assert!(sup.alarm("apply-failed").is_some(), "{s:#}");
    assert_eq!(running(), config(&dir.0, front, back, 50, None));
    wait_for("proxy serving", || serving(front));
    drop(taken);
    sup.stop();
}

/// The server `app1` in a `show_servers` reply.
fn app1(reply: &Value) -> Value {
    assert_eq!(reply["ok"], true, "{reply:#}");
    reply["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["backend"] == "app" && s["name"] == "app1")
        .cloned()
        .unwrap_or_else(|| panic!("no app/app1 in {reply:#}"))
}

#[test]
fn show_servers_and_stats_are_live_from_the_proxy() {
    let dir = TempDir::new("live");
    let (sup, front, _) = started(&dir);
    for _ in 0..5 {
        assert!(serving(front));
    }
    let srv = app1(&sup.call(json!({"cmd": "show_servers"})));
    assert_eq!(srv["state"], "ready", "{srv:#}");
    assert!(
        srv["responses"]["2xx"].as_u64().unwrap_or(0) >= 5,
        "the server that answered counts its requests: {srv:#}"
    );
    let stats = sup.call(json!({"cmd": "show_stats"}));
    assert_eq!(stats["ok"], true, "{stats:#}");
    assert!(
        stats["frontends"][0]["responses"]["2xx"]
            .as_u64()
            .unwrap_or(0)
            >= 5,
        "{stats:#}"
    );
    assert_eq!(stats["backends"][0]["name"], "app", "{stats:#}");

    let r =
        sup.call(json!({"cmd": "server", "backend": "app", "server": "app1", "action": "drain"}));
    assert_eq!(r["ok"], true, "{r:#}");
    let one = sup.call(json!({"cmd": "show_servers", "backend": "app"}));
    assert_eq!(app1(&one)["state"], "drain", "{one:#}");
    let r = sup.call(json!({"cmd": "show_servers", "backend": "nope"}));
    assert_eq!(r["ok"], false, "{r:#}");
    assert!(
        r["error"].as_str().unwrap().contains("no backend nope"),
        "{r:#}"
    );
    sup.stop();
}

#[test]
fn show_servers_without_a_proxy_says_so() {
    let dir = TempDir::new("noproxy");
    let sup = Supervisor::start(&dir.0);
    // A configuration whose proxy cannot be asked: commit one, then remove the API socket.
    let (front, back) = (free_port(), backend());
    let r = sup.call(json!({"cmd": "commit", "text": config(&dir.0, front, back, 100, None)}));
    assert_eq!(r["ok"], true, "{r:#}");
    std::fs::remove_file(dir.0.join("proxy.sock")).unwrap();
    for cmd in ["show_servers", "show_stats"] {
        let r = sup.call(json!({"cmd": cmd}));
        assert_eq!(r["ok"], false, "{r:#}");
        assert!(r["error"].as_str().unwrap().contains("proxy.sock"), "{r:#}");
        assert_eq!(
            r["hint"], "the proxy is not running; see `tandemctl status`",
            "{r:#}"
        );
    }
    sup.stop();
}

#[test]
fn logs_of_an_unknown_service_are_refused_with_the_known_ones() {
    let dir = TempDir::new("logs");
    let sup = Supervisor::start(&dir.0);
    let r = sup.call(json!({"cmd": "logs", "service": "proxi", "lines": 5}));
    assert_eq!(r["ok"], false, "{r:#}");
    assert_eq!(r["error"], "unknown service `proxi`", "{r:#}");
    assert_eq!(
        r["hint"], "services: proxy, vrrp, supervisor; none for all",
        "{r:#}"
    );
    let r = sup.call(json!({"cmd": "logs", "service": "supervisor", "lines": 5}));
    assert_eq!(r["ok"], true, "{r:#}");
    assert!(r["lines"].is_array(), "{r:#}");
    sup.stop();
}

/// Generation 1 (weight 100) then 2 (weight 50, `commit confirmed` 10 min with `confirm`),
/// both applied; the supervisor stopped. Returns the data dir's ports.
fn two_generations_then_stop(dir: &TempDir, confirm: bool) -> (u16, u16) {
    let (sup, front, back) = started(dir);
    let mut req = json!({"cmd": "commit", "text": config(&dir.0, front, back, 50, None)});
    if confirm {
        req["confirm_ms"] = json!(600_000);
    }
    let r = sup.call(req);
    assert_eq!(r["generation"], 2, "{r:#}");
    sup.stop();
    (front, back)
}

#[test]
fn a_corrupt_store_pointer_at_start_runs_the_last_good_generation_and_raises_an_alarm() {
    let dangling = r#"{"generation":9,"fingerprint":"00000000000000000000000000000000"}"#;
    let cases = [
        ("current", "garbage{", "unreadable current pointer"),
        ("current", "", "unreadable current pointer"),
        (
            "current",
            dangling,
            "it names generation 9, which is not in the store",
        ),
        ("applied", "garbage{", "unreadable applied pointer"),
        ("applied", "", "unreadable applied pointer"),
        (
            "applied",
            dangling,
            "it names generation 9, which is not in the store",
        ),
        (
            "pending-confirm.json",
            "{\"generation\":",
            "unreadable pending confirm",
        ),
        ("pending-confirm.json", "", "unreadable pending confirm"),
        (
            "pending-confirm.json",
            r#"{"generation":2,"restore":9,"deadline_ms":1,"author":"a"}"#,
            "would restore generation 9, which is not in the store",
        ),
    ];
    for (i, (file, bad, problem)) in cases.into_iter().enumerate() {
        let dir = TempDir::new(&format!("corrupt-{i}"));
        let (front, _) = two_generations_then_stop(&dir, file == "pending-confirm.json");
        let path = dir.0.join("config").join(file);
        std::fs::write(&path, bad).unwrap();
        let sup = Supervisor::start(&dir.0);
        let msg = sup.wait_alarm("store-repaired");
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(problem),
            "{file} = {bad:?}: {msg}"
        );
        let st = sup.status();
        assert_eq!(st["generation"]["number"], 2, "{file} = {bad:?}: {st:#}");
        assert!(st["pending_confirm"].is_null(), "{st:#}");
        wait_for("proxy serving the last good generation", || serving(front));
        let running = std::fs::read_to_string(dir.0.join("config/running.yaml")).unwrap();
        assert!(running.contains("weight: 50"), "{running}");
        assert!(
            dir.0
                .join("config")
                .join(format!("{file}.corrupt"))
                .exists(),
            "the bad file is kept"
        );
        // The next commit is a normal one and clears the alarm.
        let r = sup
            .call(json!({"cmd": "commit", "text": config(&dir.0, front, free_port(), 60, None)}));
        assert_eq!(r["generation"], 3, "{r:#}");
        assert_eq!(sup.alarm("store-repaired"), None);
        sup.stop();
    }
}

/// Mounts a tmpfs of `size` on `dir` for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (with a notice) when not root outside CI; panics in CI, which runs as root.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !nix::unistd::Uid::effective().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the full-disk test needs root (tmpfs mount); CI runs as root"
            );
            eprintln!("skipped: needs root (tmpfs mount); CI runs as root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "mount tmpfs on {}", dir.display());
        Some(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with one file until ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Fill the last partial page too.
    while f.write(&[0u8]).is_ok_and(|n| n > 0) {}
    path
}

#[test]
fn a_full_data_partition_during_a_commit_changes_nothing_and_names_enospc() {
    let dir = TempDir::new("full");
    let data = dir.0.join("data");
    let Some(_tmpfs) = Tmpfs::mount(&data, "8m") else {
        return;
    };
    let (front, back) = (free_port(), backend());
    let sup = Supervisor::start(&data);
    let r = sup.call(json!({"cmd": "commit", "text": config(&dir.0, front, back, 100, None)}));
    assert_eq!(r["ok"], true, "{r:#}");
    wait_for("proxy serving", || serving(front));
    let pid = sup.proxy()["pid"].clone();
    let running = std::fs::read_to_string(data.join("config/running.yaml")).unwrap();
    let store_files = |d: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d.join("config/generations"))
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.push((
            "current".into(),
            std::fs::read(d.join("config/current")).unwrap(),
        ));
        v.sort();
        v
    };
    let before = store_files(&data);
    let filler = fill(&data);

    let changed = config(&dir.0, front, back, 40, None);
    let r = sup.call(json!({"cmd": "commit", "text": changed}));
    assert_eq!(r["ok"], false, "{r:#}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("No space left on device"), "{r:#}");
    assert!(
        error.contains(&format!(
            "failed to write {}",
            data.join("config/generations/000002.yaml").display()
        )),
        "{r:#}"
    );
    assert!(
        r["hint"]
            .as_str()
            .unwrap()
            .contains("data partition is full"),
        "{r:#}"
    );
    let r = sup.call(json!({"cmd": "candidate_set", "text": changed}));
    assert_eq!(r["ok"], false, "{r:#}");
    assert!(
        r["error"].as_str().unwrap().contains("candidate.yaml")
            && r["error"]
                .as_str()
                .unwrap()
                .contains("No space left on device"),
        "{r:#}"
    );
    // Nothing changed: store, running file, the proxy process, the traffic.
    assert_eq!(store_files(&data), before);
    assert_eq!(
        std::fs::read_to_string(data.join("config/running.yaml")).unwrap(),
        running
    );
    assert_eq!(sup.current(), 1);
    assert_eq!(sup.proxy()["pid"], pid);
    assert!(serving(front));
    let history = sup.call(json!({"cmd": "history"}));
    assert_eq!(
        history["generations"].as_array().unwrap().len(),
        1,
        "{history:#}"
    );

    // Room again: the same commit goes through as generation 2.
    std::fs::remove_file(filler).unwrap();
    let r = sup.call(json!({"cmd": "commit", "text": changed}));
    assert_eq!(r["generation"], 2, "{r:#}");
    sup.stop();
}
