//! `tandemctl console`: the serial console's login program (agetty runs it as root through
//! `/usr/lib/tandem/console`), then the interactive prompt.
//!
//! Owns, for the console:
//! - the login: the admin password (`DIR/admin.argon2`), 3 tries per session;
//! - failed logins: logged with the time to the journal (syslog on `/dev/log`, facility
//!   authpriv) and to `DIR/console-auth.log`, and counted in `DIR/login-failures` (written
//!   atomically), so that after [`Backoff::free`] failures in a row the next try waits,
//!   doubling from [`Backoff::base`] up to [`Backoff::cap`], across getty restarts and
//!   reboots ([`Backoff`], pure, driven by a [`Clock`]);
//! - the idle timeout: a session waiting at a prompt (password or command) for longer than
//!   `idle_timeout` in `DIR/console.conf` (default [`DEFAULT_IDLE_TIMEOUT`]) ends; a running
//!   command is never cut ([`Idle`]);
//! - the recovery when the password file is missing or unreadable on a node that is set up
//!   (setup never runs again there): the recovery code printed at setup
//!   (`DIR/recovery.argon2`), or, without one, a reset with physical presence within
//!   [`BOOT_WINDOW`] of power-on (the operator guide's "Lost admin password").
//!
//! Must not: store a secret in clear, start a shell, or run setup on a node that has a node
//! name or a configuration.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use crate::commands::{Global, parse_duration};
use crate::setup::{self, DIR};

/// The failure counter (`{"count": N, "last_ms": T}`).
pub const FAILURES_FILE: &str = "login-failures";
/// The log of console logins on the data partition.
pub const AUTH_LOG: &str = "console-auth.log";
/// The console settings (`idle_timeout = 15m`).
pub const SETTINGS_FILE: &str = "console.conf";
/// The recovery code's Argon2id hash (`setup` writes it).
pub use crate::setup::RECOVERY_FILE;
/// How long a session may wait at a prompt, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The longest idle timeout accepted.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Password tries per session; then the session ends and getty starts a new one.
pub const TRIES_PER_SESSION: u32 = 3;
/// How long after power-on a reset with physical presence is offered.
pub const BOOT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// `console-auth.log` is rotated to `.1` beyond this size.
const AUTH_LOG_MAX: u64 = 1 << 20;

/// `tandemctl console` (hidden test options).
#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// The node's data directory (tests).
    #[arg(long, hide = true, default_value = DIR)]
    pub dir: PathBuf,
    /// The first backoff wait (tests; default 5s).
    #[arg(long, hide = true)]
    pub backoff_base: Option<String>,
    /// The uptime file (tests).
    #[arg(long, hide = true, default_value = "/proc/uptime")]
    pub proc_uptime: PathBuf,
    /// The syslog socket (tests).
    #[arg(long, hide = true, default_value = "/dev/log")]
    pub syslog: PathBuf,
}

/// Wall-clock time and sleeping, injectable for tests.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Waits `d`.
    fn sleep(&self, d: Duration);
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Consecutive failed logins, as kept in `DIR/login-failures`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// Failures since the last good login.
    pub count: u32,
    /// When the last one happened, ms since the Unix epoch.
    pub last_ms: u64,
}

/// The wait before a login try, from the failures before it (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures in a row that cost no wait.
    pub free: u32,
    /// The wait after `free` failures; doubles with each further one.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            free: 3,
            base: Duration::from_secs(5),
            cap: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The wait owed after `count` failures in a row, counted from the last one.
    pub fn delay(&self, count: u32) -> Duration {
        if count < self.free {
            return Duration::ZERO;
        }
        let doublings = (count - self.free).min(20);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// How long a try at `now_ms` must still wait. A clock that went back (the last failure
    /// is in the future) owes the whole delay again, never more.
    pub fn wait(&self, f: &Failures, now_ms: u64) -> Duration {
        let delay = self.delay(f.count);
        let since = Duration::from_millis(now_ms.saturating_sub(f.last_ms));
        delay.saturating_sub(since)
    }
}

impl Failures {
    /// Reads the counter; a missing file is no failure, an unreadable one counts as
    /// `free` failures (it is never a way around the wait).
    pub fn load(dir: &Path, backoff: &Backoff, now_ms: u64) -> Failures {
        match std::fs::read(dir.join(FAILURES_FILE)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Failures::default(),
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| {
                    Some(Failures {
                        count: u32::try_from(v.get("count")?.as_u64()?).ok()?,
                        last_ms: v.get("last_ms")?.as_u64()?,
                    })
                })
                .unwrap_or(Failures {
                    count: backoff.free,
                    last_ms: now_ms,
                }),
            Err(_) => Failures {
                count: backoff.free,
                last_ms: now_ms,
            },
        }
    }

    /// Writes the counter atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        setup::write_file(
            &dir.join(FAILURES_FILE),
            &format!(
                "{}\n",
                json!({"count": self.count, "last_ms": self.last_ms})
            ),
            0o600,
        )
    }
}

/// `console.conf`: `key = value` lines, `#` comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long a prompt may wait for input before the session ends.
    pub idle_timeout: Duration,
}

impl Settings {
    /// Reads `DIR/console.conf`; missing: the defaults; a bad value is reported and the
    /// default used (the console must always come up).
    pub fn load(dir: &Path) -> (Settings, Option<String>) {
        let mut s = Settings {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        };
        let path = dir.join(SETTINGS_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return (s, None);
        };
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return (
                    s,
                    Some(format!("{}: `{line}` is not `key = value`", path.display())),
                );
            };
            match k.trim() {
                "idle_timeout" => match check_idle_timeout(v.trim()) {
                    Ok(d) => s.idle_timeout = d,
                    Err(e) => return (s, Some(format!("{}: {e:#}", path.display()))),
                },
                other => {
                    return (
                        s,
                        Some(format!("{}: unknown key `{other}`", path.display())),
                    );
                }
            }
        }
        (s, None)
    }
}

/// Parses an idle timeout: 1 s to 24 h.
pub fn check_idle_timeout(text: &str) -> anyhow::Result<Duration> {
    let d = parse_duration(text)?;
    anyhow::ensure!(
        d >= Duration::from_secs(1) && d <= MAX_IDLE_TIMEOUT,
        "idle_timeout {text} is out of range; use 1s to 24h, e.g. 15m"
    );
    Ok(d)
}

/// `tandemctl idle-timeout [DURATION]`: shows or sets the console's idle timeout.
pub fn idle_timeout_command(
    dir: &Path,
    value: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let Some(v) = value else {
        let (s, problem) = Settings::load(dir);
        if let Some(p) = problem {
            writeln!(out, "warning: {p}")?;
        }
        writeln!(
            out,
            "console idle timeout: {}",
            crate::render::ago(s.idle_timeout.as_millis() as u64)
        )?;
        return Ok(0);
    };
    let d = check_idle_timeout(v)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    setup::write_file(
        &dir.join(SETTINGS_FILE),
        &format!("# tandemctl console settings (this node only)\nidle_timeout = {v}\n"),
        0o644,
    )?;
    writeln!(
        out,
        "console idle timeout: {} (from the next console session)",
        crate::render::ago(d.as_millis() as u64)
    )?;
    Ok(0)
}

/// Where failed and good logins are reported.
struct AuthLog {
    file: PathBuf,
    syslog: PathBuf,
    tty: String,
}

impl AuthLog {
    /// Logs `message` (with the time and the tty) to the journal and the log file.
    fn log(&self, now_ms: u64, failure: bool, message: &str) {
        let when = crate::render::utc(now_ms);
        let line = format!("{when} {} on {}: {message}", "console login", self.tty);
        // authpriv (10) × 8 + warning (4) or notice (5).
        let pri = 80 + if failure { 4 } else { 5 };
        let datagram = format!(
            "<{pri}>tandemctl[{}]: console login on {}: {message}",
            std::process::id(),
            self.tty
        );
        if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
            let _ = sock.send_to(datagram.as_bytes(), &self.syslog);
        }
        if std::fs::metadata(&self.file).is_ok_and(|m| m.len() > AUTH_LOG_MAX) {
            let _ = std::fs::rename(&self.file, self.file.with_extension("log.1"));
        }
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .and_then(|mut f| {
                writeln!(f, "{line}")?;
                f.sync_all()
            });
        if let Err(e) = appended {
            eprintln!("cannot write {}: {e}", self.file.display());
        }
    }
}

/// The terminal of stdin, for the logs.
fn tty_name() -> String {
    std::fs::read_link("/proc/self/fd/0")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "the console".into())
}

/// The idle timer of a console session: armed while a prompt waits for input, disarmed
/// while a command runs. A watchdog thread ends the session when it expires: it puts the
/// terminal back as it found it, says so, logs it and exits the process (getty then shows a
/// fresh login).
#[derive(Clone)]
pub struct Idle {
    waiting_since: Arc<Mutex<Option<Instant>>>,
}

impl Idle {
    /// Starts the watchdog for `timeout`; `expired` runs when it fires.
    pub fn start(timeout: Duration, expired: impl FnOnce() + Send + 'static) -> Idle {
        let idle = Idle {
            waiting_since: Arc::new(Mutex::new(None)),
        };
        let since = Arc::clone(&idle.waiting_since);
        std::thread::spawn(move || {
            loop {
                let left = match *since.lock().unwrap_or_else(|p| p.into_inner()) {
                    Some(t) => timeout.saturating_sub(t.elapsed()),
                    None => timeout,
                };
                if left.is_zero() {
                    expired();
                    return;
                }
                std::thread::sleep(left.min(Duration::from_millis(250)));
            }
        });
        idle
    }

    /// A prompt waits for input from now on.
    pub fn waiting(&self) {
        *self.waiting_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Input came; a command runs (no timeout until the next prompt).
    pub fn busy(&self) {
        *self.waiting_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The password file's state.
enum PasswordFile {
    Good(String),
    Missing,
    Unreadable(String),
}

fn password_file(path: &Path) -> PasswordFile {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PasswordFile::Missing,
        Err(e) => PasswordFile::Unreadable(e.to_string()),
        Ok(text) => match argon2::password_hash::PasswordHash::new(text.trim()) {
            Ok(_) => PasswordFile::Good(text),
            Err(e) => PasswordFile::Unreadable(format!("not an Argon2 hash ({e})")),
        },
    }
}

/// Everything a login or recovery step needs.
struct Session<'a> {
    dir: &'a Path,
    backoff: Backoff,
    clock: &'a dyn Clock,
    log: AuthLog,
    idle: Idle,
    input: &'a mut dyn std::io::BufRead,
    out: &'a mut dyn Write,
}

impl Session<'_> {
    /// Reads a secret (echo off) with the idle timer armed.
    fn secret(&mut self, question: &str) -> anyhow::Result<String> {
        self.idle.waiting();
        let v = setup::read_secret(question, self.input, self.out);
        self.idle.busy();
        v
    }

    /// Reads a line with the idle timer armed.
    fn line(&mut self, question: &str) -> anyhow::Result<String> {
        write!(self.out, "{question}: ")?;
        self.out.flush()?;
        self.idle.waiting();
        let mut line = String::new();
        let n = self.input.read_line(&mut line);
        self.idle.busy();
        anyhow::ensure!(n? > 0, "end of input");
        Ok(line.trim().to_owned())
    }

    /// Waits out the backoff owed by earlier failures, saying so.
    fn wait_backoff(&mut self) -> anyhow::Result<()> {
        let f = Failures::load(self.dir, &self.backoff, self.clock.now_ms());
        let wait = self.backoff.wait(&f, self.clock.now_ms());
        if !wait.is_zero() {
            writeln!(
                self.out,
                "{} failed logins in a row: the next try is possible in {:.1} s",
                f.count,
                wait.as_secs_f64()
            )?;
            self.out.flush()?;
            self.clock.sleep(wait);
        }
        Ok(())
    }

    /// Counts, logs and reports one failed try of `what`.
    fn failed(&mut self, what: &str) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let mut f = Failures::load(self.dir, &self.backoff, now);
        f.count = f.count.saturating_add(1);
        f.last_ms = now;
        if let Err(e) = f.save(self.dir) {
            writeln!(self.out, "warning: cannot record the failed login: {e:#}")?;
        }
        let next = self.backoff.delay(f.count);
        self.log.log(
            now,
            true,
            &format!(
                "login failed: wrong {what} ({} in a row{})",
                f.count,
                if next.is_zero() {
                    String::new()
                } else {
                    format!("; next try in {} s", next.as_secs_f64())
                }
            ),
        );
        writeln!(self.out, "wrong {what}")?;
        Ok(())
    }

    /// A good login: logged, the counter reset.
    fn succeeded(&mut self, how: &str) {
        let _ = std::fs::remove_file(self.dir.join(FAILURES_FILE));
        self.log
            .log(self.clock.now_ms(), false, &format!("login ({how})"));
    }

    /// The password login; `true` once logged in.
    fn login(&mut self, hash: &str) -> anyhow::Result<bool> {
        for _ in 0..TRIES_PER_SESSION {
            self.wait_backoff()?;
            let pw = self.secret("password")?;
            if setup::check_password(hash, &pw) {
                self.succeeded("admin password");
                return Ok(true);
            }
            self.failed("password")?;
            // A pause against fast guessing even before the backoff starts.
            self.clock
                .sleep(Duration::from_secs(1).min(self.backoff.base));
        }
        Ok(false)
    }

    /// Asks for a new admin password, saves it, and a new recovery code.
    fn new_password(&mut self) -> anyhow::Result<()> {
        let password = loop {
            let a = self.secret("new admin password (at least 8 characters)")?;
            let b = self.secret("again")?;
            if a != b {
                writeln!(self.out, "  the two passwords differ")?;
            } else if a.chars().count() < 8 {
                writeln!(self.out, "  too short")?;
            } else {
                break a;
            }
        };
        setup::write_file(
            &self.dir.join("admin.argon2"),
            &format!("{}\n", setup::hash_password(&password)?),
            0o600,
        )?;
        setup::new_recovery_code(self.dir, self.out)?;
        writeln!(self.out, "admin password saved")?;
        Ok(())
    }

    /// The password file is missing or unreadable on a node that is set up; `true` once a
    /// new password is set (the operator is then logged in).
    fn recover(&mut self, problem: &str, uptime: Option<Duration>) -> anyhow::Result<bool> {
        let path = self.dir.join("admin.argon2");
        writeln!(
            self.out,
            "The admin password file {} is {problem}.\n\
             This node is set up, so the first-boot setup does not run again.\n\
             See \"Lost admin password\" in the operator guide.",
            path.display()
        )?;
        self.log.log(
            self.clock.now_ms(),
            true,
            &format!("the admin password file is {problem}: recovery asked"),
        );
        if let PasswordFile::Good(hash) = password_file(&self.dir.join(RECOVERY_FILE)) {
            writeln!(
                self.out,
                "Enter the recovery code printed at setup (or at the last password reset)."
            )?;
            for _ in 0..TRIES_PER_SESSION {
                self.wait_backoff()?;
                let code = normalize_code(&self.secret("recovery code")?);
                if setup::check_password(&hash, &code) {
                    self.succeeded("recovery code");
                    self.new_password()?;
                    return Ok(true);
                }
                self.failed("recovery code")?;
                self.clock
                    .sleep(Duration::from_secs(1).min(self.backoff.base));
            }
            return Ok(false);
        }
        let node = std::fs::read_to_string(self.dir.join("node.env"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("TANDEM_NODE=").map(str::to_owned))
            })
            .unwrap_or_else(|| "tandem".into());
        match uptime {
            Some(up) if up <= BOOT_WINDOW => {
                writeln!(
                    self.out,
                    "No recovery code is stored. The box was powered on {} s ago: within {} minutes of power-on,\n\
                     whoever is at this console may set a new admin password (physical presence).",
                    up.as_secs(),
                    BOOT_WINDOW.as_secs() / 60
                )?;
                let typed = self.line(&format!("type the node name ({node}) to go on"))?;
                if typed != node {
                    writeln!(self.out, "not the node name; nothing changed")?;
                    return Ok(false);
                }
                self.succeeded("physical presence after power-on");
                self.new_password()?;
                Ok(true)
            }
            _ => {
                writeln!(
                    self.out,
                    "No recovery code is stored. To set a new admin password with physical presence:\n\
                     power the box off and on, then log in on this serial console within {} minutes of power-on.\n\
                     The peer keeps serving meanwhile (this node's VIPs move to it).",
                    BOOT_WINDOW.as_secs() / 60
                )?;
                Ok(false)
            }
        }
    }
}

/// A recovery code as typed: case, spaces and dashes do not matter.
pub fn normalize_code(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Seconds since boot, from `/proc/uptime`.
fn uptime(path: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// The terminal settings of stdin, put back when the session ends on its idle timer.
fn saved_termios() -> Option<nix::sys::termios::Termios> {
    nix::sys::termios::tcgetattr(std::io::stdin()).ok()
}

/// Runs the console: setup on a node that is not set up, else the login (or the recovery),
/// then the prompt.
pub fn run(args: &ConsoleArgs, global: &Global) -> anyhow::Result<i32> {
    let dir = args.dir.as_path();
    let clock = SystemClock;
    let mut out = std::io::stdout();
    let (settings, problem) = Settings::load(dir);
    let log = AuthLog {
        file: dir.join(AUTH_LOG),
        syslog: args.syslog.clone(),
        tty: tty_name(),
    };
    let termios = saved_termios();
    let timeout = settings.idle_timeout;
    let expired_log = AuthLog {
        file: log.file.clone(),
        syslog: log.syslog.clone(),
        tty: log.tty.clone(),
    };
    let idle = Idle::start(timeout, move || {
        if let Some(t) = &termios {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
        let msg = format!(
            "idle for {}: session ended",
            crate::render::ago(timeout.as_millis() as u64)
        );
        let mut o = std::io::stdout();
        let _ = write!(o, "\r\n{msg}\r\n");
        let _ = o.flush();
        expired_log.log(SystemClock.now_ms(), false, &msg);
        std::process::exit(0);
    });
    let version = std::fs::read_to_string(crate::firmware::MANIFEST)
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("version: ").map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".into());
    writeln!(out, "\nTandem {version}")?;
    if let Some(p) = problem {
        writeln!(out, "warning: {p}; the console idle timeout stays 15m")?;
    }
    let first_boot = !dir.join("node.env").exists()
        && !dir
            .parent()
            .is_some_and(|d| d.join("config/current").exists());
    if first_boot {
        writeln!(out, "This node is not set up yet.")?;
        idle.busy();
        if setup::run(
            &setup::SetupArgs {
                dir: dir.to_owned(),
                ..Default::default()
            },
            &mut out,
        )? != 0
        {
            return Ok(1);
        }
    } else {
        let backoff = Backoff {
            base: match &args.backoff_base {
                Some(b) => parse_duration(b)?,
                None => Backoff::default().base,
            },
            ..Backoff::default()
        };
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut session = Session {
            dir,
            backoff,
            clock: &clock,
            log,
            idle: idle.clone(),
            input: &mut input,
            out: &mut out,
        };
        let ok = match password_file(&dir.join("admin.argon2")) {
            PasswordFile::Good(hash) => session.login(&hash)?,
            PasswordFile::Missing => session.recover("missing", uptime(&args.proc_uptime))?,
            PasswordFile::Unreadable(why) => {
                session.recover(&format!("unreadable: {why}"), uptime(&args.proc_uptime))?
            }
        };
        if !ok {
            return Ok(1);
        }
    }
    crate::interactive::run_with(global, Some(&idle))
}

#[cfg(test)]
mod tests {
    //! The backoff policy with virtual time; the console itself runs through a pty in
    //! `tests/console.rs`.

    use super::*;
    use std::cell::Cell;

    /// A clock that only moves when slept on (or set).
    struct Virtual(Cell<u64>);
    impl Clock for Virtual {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
        fn sleep(&self, d: Duration) {
            self.0.set(self.0.get() + d.as_millis() as u64);
        }
    }

    #[test]
    fn three_free_failures_then_doubling_waits_up_to_the_cap() {
        let b = Backoff::default();
        let waits: Vec<u64> = (0..14).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(
            waits,
            [0, 0, 0, 5, 10, 20, 40, 80, 160, 320, 600, 600, 600, 600]
        );
        assert_eq!(b.delay(u32::MAX), b.cap);
    }

    #[test]
    fn the_wait_counts_from_the_last_failure_and_survives_a_clock_going_back() {
        let b = Backoff::default();
        let f = Failures {
            count: 4,
            last_ms: 10_000_000,
        };
        assert_eq!(b.wait(&f, 10_000_000), Duration::from_secs(10));
        assert_eq!(b.wait(&f, 10_004_000), Duration::from_secs(6));
        assert_eq!(b.wait(&f, 10_010_000), Duration::ZERO);
        // The clock went back an hour: the whole delay again, never an hour.
        assert_eq!(b.wait(&f, 10_000_000 - 3_600_000), Duration::from_secs(10));
    }

    /// A scripted session under virtual time: what an attacker trying passwords in a loop
    /// sees, across "getty restarts" (each session reloads the counter from disk).
    #[test]
    fn guessing_in_a_loop_costs_doubling_waits_across_sessions() {
        let dir =
            std::env::temp_dir().join(format!("tandem-console-policy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let hash = setup::hash_password("correct horse").unwrap();
        let clock = Virtual(Cell::new(1_700_000_000_000));
        let start = clock.now_ms();
        let mut transcript = String::new();
        for session in 0..3 {
            let mut input = std::io::Cursor::new(b"wrong1\nwrong2\nwrong3\n".to_vec());
            let mut out = Vec::new();
            let mut s = Session {
                dir: &dir,
                backoff: Backoff::default(),
                clock: &clock,
                log: AuthLog {
                    file: dir.join(AUTH_LOG),
                    syslog: dir.join("no-syslog"),
                    tty: "test".into(),
                },
                idle: Idle {
                    waiting_since: Arc::default(),
                },
                input: &mut input,
                out: &mut out,
            };
            assert!(!s.login(&hash).unwrap(), "session {session}");
            transcript.push_str(&String::from_utf8_lossy(&out));
        }
        // 9 failures, 1 s pause after each; the 4th to 9th tries owe 5, 10, 20, 40, 80, 160 s
        // counted from the failure before, so the pause is part of each wait.
        let spent = (clock.now_ms() - start) / 1000;
        assert_eq!(spent, 9 + (5 + 10 + 20 + 40 + 80 + 160 - 6), "{transcript}");
        assert!(
            transcript.contains("3 failed logins in a row: the next try is possible in 4.0 s"),
            "{transcript}"
        );
        let f = Failures::load(&dir, &Backoff::default(), clock.now_ms());
        assert_eq!(f.count, 9);
        let log = std::fs::read_to_string(dir.join(AUTH_LOG)).unwrap();
        assert_eq!(log.lines().count(), 9, "{log}");
        assert!(
            log.lines().next().unwrap().starts_with("2023-11-14 22:13:20Z console login on test: login failed: wrong password (1 in a row)"),
            "{log}"
        );
        // The right password after the wait resets the counter.
        let mut input = std::io::Cursor::new(b"correct horse\n".to_vec());
        let mut out = Vec::new();
        let mut s = Session {
            dir: &dir,
            backoff: Backoff::default(),
            clock: &clock,
            log: AuthLog {
                file: dir.join(AUTH_LOG),
                syslog: dir.join("no-syslog"),
                tty: "test".into(),
            },
            idle: Idle {
                waiting_since: Arc::default(),
            },
            input: &mut input,
            out: &mut out,
        };
        assert!(s.login(&hash).unwrap());
        assert_eq!(
            Failures::load(&dir, &Backoff::default(), clock.now_ms()),
            Failures::default()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreadable_counter_never_skips_the_wait() {
        let dir = std::env::temp_dir().join(format!("tandem-console-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FAILURES_FILE), "{garbage").unwrap();
        let b = Backoff::default();
        let f = Failures::load(&dir, &b, 42);
        assert_eq!(
            f,
            Failures {
                count: 3,
                last_ms: 42
            }
        );
        assert_eq!(b.wait(&f, 42), Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn settings_and_idle_timeouts() {
        let dir = std::env::temp_dir().join(format!("tandem-console-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(Settings::load(&dir).0.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        let mut out = Vec::new();
        idle_timeout_command(&dir, Some("30m"), &mut out).unwrap();
        assert_eq!(
            Settings::load(&dir),
            (
                Settings {
                    idle_timeout: Duration::from_secs(1800)
                },
                None
            )
        );
        assert!(idle_timeout_command(&dir, Some("25h"), &mut out).is_err());
        assert!(idle_timeout_command(&dir, Some("0s"), &mut out).is_err());
        std::fs::write(dir.join(SETTINGS_FILE), "idle_timeout = soon\n").unwrap();
        let (s, problem) = Settings::load(&dir);
        assert_eq!(s.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert!(problem.unwrap().contains("not a duration"));
        assert_eq!(normalize_code("abcd-efgh jkl2"), "ABCDEFGHJKL2");
        let _ = std::fs::remove_dir_all(dir);
    }
}
