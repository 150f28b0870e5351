//! `tandemctl console` (the serial console's login program) driven through a pty, as agetty
//! runs it: wrong passwords are logged (syslog datagrams and the log file on the data dir)
//! and, after 3, the next session waits before it asks; an idle session ends; a lost or
//! unreadable password file on a set-up node asks for the recovery code, or for a power-on
//! reset, and never reopens the setup.
//!
//! Each test has its own data directory (`--dir`), syslog socket (`--syslog`) and uptime
//! file (`--proc-uptime`); the backoff's first wait is shortened with `--backoff-base`.
//! No supervisor runs: after the login the prompt is `tandem> `.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse";
/// The setup's first question: never asked on a node that is set up.
const SETUP_QUESTION: &str = "node name (lb1 or lb2)";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tandem-console-{name}-{}", std::process::id()));
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

/// A node that is set up: its name, and optionally the password and the recovery code.
fn node(dir: &Path, password: Option<&str>, recovery: Option<&str>) {
    std::fs::write(dir.join("node.env"), "TANDEM_NODE=lb1\n").unwrap();
    if let Some(p) = password {
        let h = tandem_cli::setup::hash_password(p).unwrap();
        std::fs::write(dir.join("admin.argon2"), format!("{h}\n")).unwrap();
    }
    if let Some(c) = recovery {
        let h = tandem_cli::setup::hash_password(c).unwrap();
        std::fs::write(dir.join("recovery.argon2"), format!("{h}\n")).unwrap();
    }
    std::fs::write(dir.join("uptime"), "86400.00 80000.00\n").unwrap();
}

/// `tandemctl console` on a pty.
struct Console {
    child: Child,
    master: std::fs::File,
    output: Arc<Mutex<Vec<u8>>>,
    pos: usize,
}

impl Console {
    fn start(dir: &Path, extra: &[&str]) -> Console {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let io = |fd: &OwnedFd| Stdio::from(fd.as_fd().try_clone_to_owned().unwrap());
        let child = Command::new(env!("CARGO_BIN_EXE_tandemctl"))
            .arg("console")
            .arg("--dir")
            .arg(dir)
            .arg("--syslog")
            .arg(dir.join("log.sock"))
            .arg("--proc-uptime")
            .arg(dir.join("uptime"))
            .args(extra)
            .arg("--socket")
            .arg(dir.join("no-supervisor.sock"))
            .env("TERM", "vt100")
            .env("HOME", dir)
            .stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(io(&slave))
            .spawn()
            .expect("start tandemctl console");
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (out, mut reader) = (Arc::clone(&output), master.try_clone().unwrap());
        let mut answer = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child closed its side.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = &buf[..n];
                // A line editor asking where the cursor is gets an answer, as a terminal does.
                if chunk.windows(4).any(|w| w == b"\x1b[6n") {
                    let _ = answer.write_all(b"\x1b[1;1R");
                }
                out.lock().unwrap().extend_from_slice(chunk);
            }
        });
        Console {
            child,
            master,
            output,
            pos: 0,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits for `needle` after what was already expected; returns the text up to it.
    fn expect(&mut self, needle: &str) -> String {
        let t = Instant::now();
        loop {
            let all = self.text();
            if let Some(i) = all[self.pos.min(all.len())..].find(needle) {
                let end = self.pos + i + needle.len();
                let seen = all[self.pos..end].to_owned();
                self.pos = end;
                return seen;
            }
            assert!(
                t.elapsed() < WAIT,
                "timed out waiting for {needle:?}; console said:\n{}",
                &all[self.pos.min(all.len())..]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
    }

    /// The exit code, once the console ended by itself.
    fn exit_code(&mut self) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                t.elapsed() < WAIT,
                "the console did not end:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The syslog datagrams received so far.
fn syslog(sock: &UnixDatagram) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

#[test]
fn wrong_passwords_are_logged_and_the_backoff_survives_a_getty_restart() {
    let dir = TempDir::new("backoff");
    node(&dir.0, Some(PASSWORD), None);
    let log = UnixDatagram::bind(dir.0.join("log.sock")).unwrap();
    log.set_nonblocking(true).unwrap();
    let base = ["--backoff-base", "3s"];

    let mut c = Console::start(&dir.0, &base);
    for n in 1..=3 {
        c.expect("password: ");
        c.send(&format!("guess{n}"));
        c.expect("wrong password");
    }
    assert_eq!(c.exit_code(), 1, "three tries per session");
    let text = c.text();
    assert!(
        !text.contains("guess"),
        "the password is not echoed:\n{text}"
    );
    let sent = syslog(&log);
    assert_eq!(sent.len(), 3, "{sent:?}");
    for (i, m) in sent.iter().enumerate() {
        assert!(m.starts_with("<84>tandemctl["), "authpriv.warning: {m}");
        assert!(
            m.contains(&format!("login failed: wrong password ({} in a row", i + 1)),
            "{m}"
        );
    }
    let file = std::fs::read_to_string(dir.0.join("console-auth.log")).unwrap();
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(lines.len(), 3, "{file}");
    // `2026-12-07 23:08:38Z console login on /dev/pts/N: login failed: ...`
    let time = lines[2].split(" console login").next().unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b' ',
        "{file}"
    );
    assert!(lines[2].contains("(3 in a row; next try in 3 s)"), "{file}");

    // Getty starts a new session at once: it waits before it asks.
    let mut c = Console::start(&dir.0, &base);
    let before = c.expect("password: ");
    assert!(
        before.contains("3 failed logins in a row: the next try is possible in"),
        "{before}"
    );
    c.send(PASSWORD);
    c.expect("tandemctl on tandem");
    c.expect("tandem> ");
    c.send("exit");
    assert_eq!(c.exit_code(), 0);
    assert!(
        !dir.0.join("login-failures").exists(),
        "a good login resets the count"
    );
    let file = std::fs::read_to_string(dir.0.join("console-auth.log")).unwrap();
    assert!(
        file.lines()
            .last()
            .unwrap()
            .ends_with("login (admin password)"),
        "{file}"
    );
    assert!(
        syslog(&log)
            .iter()
            .any(|m| m.starts_with("<85>") && m.contains("login (admin password)"))
    );
}

#[test]
fn an_idle_session_ends() {
    let dir = TempDir::new("idle");
    node(&dir.0, Some(PASSWORD), None);
    std::fs::write(dir.0.join("console.conf"), "idle_timeout = 3s\n").unwrap();
    let mut c = Console::start(&dir.0, &[]);
    c.expect("password: ");
    c.send(PASSWORD);
    c.expect("tandem> ");
    c.expect("idle for 3s: session ended");
    assert_eq!(c.exit_code(), 0);
}

#[test]
fn a_lost_password_file_asks_for_the_recovery_code_and_never_reopens_the_setup() {
    let dir = TempDir::new("recovery");
    node(&dir.0, None, Some("ABCDEFGHJKLMNPQR"));
    let mut c = Console::start(&dir.0, &["--backoff-base", "1s"]);
    c.expect("is missing.");
    c.expect("recovery code: ");
    c.send("not-the-code");
    c.expect("wrong recovery code");
    c.expect("recovery code: ");
    // As written on paper: dashes and lower case are fine.
    c.send("abcd-efgh-jklm-npqr");
    c.expect("new admin password (at least 8 characters): ");
    c.send("new password 1");
    c.expect("again: ");
    c.send("new password 1");
    let shown = c.expect("admin password saved");
    assert!(
        shown.contains("recovery code: "),
        "a new code is shown:\n{shown}"
    );
    c.expect("tandem> ");
    c.send("exit");
    assert_eq!(c.exit_code(), 0);
    let text = c.text();
    assert!(!text.contains("not set up yet"), "{text}");
    assert!(!text.contains(SETUP_QUESTION), "{text}");
    let hash = std::fs::read_to_string(dir.0.join("admin.argon2")).unwrap();
    assert!(tandem_cli::setup::check_password(&hash, "new password 1"));
    // The old code is spent: the stored hash is a new one.
    let recovery = std::fs::read_to_string(dir.0.join("recovery.argon2")).unwrap();
    assert!(!tandem_cli::setup::check_password(
        &recovery,
        "ABCDEFGHJKLMNPQR"
    ));

    // An unreadable password file is treated the same way.
    std::fs::write(dir.0.join("admin.argon2"), "garbage\n").unwrap();
    let mut c = Console::start(&dir.0, &[]);
    c.expect("is unreadable: not an Argon2 hash");
    c.expect("recovery code: ");
    assert!(!c.text().contains(SETUP_QUESTION));
}

#[test]
fn without_a_recovery_code_a_reset_needs_presence_after_power_on() {
    let dir = TempDir::new("presence");
    node(&dir.0, None, None);
    // A day after power-on: how to do it, and nothing else.
    let mut c = Console::start(&dir.0, &[]);
    c.expect("power the box off and on, then log in on this serial console within 10 minutes");
    assert_eq!(c.exit_code(), 1);
    assert!(!dir.0.join("admin.argon2").exists());
    assert!(!c.text().contains(SETUP_QUESTION));

    // 42 s after power-on: the console offers the reset.
    std::fs::write(dir.0.join("uptime"), "42.50 40.00\n").unwrap();
    let mut c = Console::start(&dir.0, &[]);
    c.expect("powered on 42 s ago");
    c.expect("type the node name (lb1) to go on: ");
    c.send("lb1");
    c.expect("new admin password (at least 8 characters): ");
    c.send("new password 2");
    c.expect("again: ");
    c.send("new password 2");
    c.expect("admin password saved");
    c.expect("tandem> ");
    c.send("exit");
    assert_eq!(c.exit_code(), 0);
    let hash = std::fs::read_to_string(dir.0.join("admin.argon2")).unwrap();
    assert!(tandem_cli::setup::check_password(&hash, "new password 2"));
    assert!(
        dir.0.join("recovery.argon2").exists(),
        "a recovery code is made"
    );
}
