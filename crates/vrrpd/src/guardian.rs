//! The VIP guardian: a dead-man's switch that removes the VIPs when the daemon dies or freezes.
//!
//! # Design
//!
//! keepalived's most reported split brain is `kill -9`: the VIP stays on the interface while
//! the peer takes over, so both nodes answer ARP for it. Tandem closes that hole in two layers:
//!
//! 1. **Guardian process.** At startup the daemon spawns a tiny helper (the same `tandem`
//!    binary, hidden subcommand `vrrp-guardian`, see [`guardian_main`]) in **its own process
//!    group**, so a `kill -9 -- -PGID` of the daemon's group does not reach it. The daemon holds
//!    the write end of a pipe that is the guardian's stdin and speaks a line protocol on it:
//!    `hold KEY IFINDEX TIMEOUT_MS ADDR/PREFIX[,ADDR/PREFIX...] SRC DST=HEX[,DST=HEX...]` when
//!    it installs VIPs (the last two fields: its primary address and, per advert destination,
//!    the encoded priority-0 advert to resign with), `beat KEY` on every advert it sends as
//!    master, `release KEY` when it removes them.
//!    The guardian removes the VIPs of a held key itself, through netlink, and then sends the
//!    priority-0 adverts on the daemon's behalf (so the peer takes over after Skew_Time, about
//!    60 ms at a 100 ms interval, instead of Master_Down_Interval, as after a clean SIGTERM), when
//!    * the pipe reaches EOF (the daemon died: the kernel closes its fds at any death, even
//!      SIGKILL), then it exits; or
//!    * no `beat` arrived for `TIMEOUT_MS` (3 advert intervals: the daemon is frozen, e.g.
//!      SIGSTOP, or stuck), then it forgets the key and keeps running.
//!
//!    A daemon that resumes after a freeze notices the gap since its last heartbeat and
//!    resynchronises: it re-announces `hold`, reinstalls the VIPs if the protocol still says
//!    master, and sends gratuitous ARP; the peer's adverts then settle who is master.
//!
//!    **Adoption by a restarted daemon.** With `--listen PATH` (`tandem vrrp` passes
//!    `<control socket>.guardian`, see [`crate::guardian_socket`]) the guardian does not act on
//!    EOF at once: it waits a grace period of `min(100 ms, TIMEOUT_MS / 2)` (TIMEOUT_MS is just
//!    under Master_Down_Interval) for a successor, since the supervisor restarts the daemon at
//!    once. Without a listening socket, or with nothing held, EOF acts immediately as above.
//!    The handover, race-free because some guardian holds the VIPs at every moment:
//!    1. The starting daemon connects to PATH *before* spawning its own guardian
//!       ([`Adoption::connect`], bounded: 300 ms). The old guardian accepts at any time but
//!       answers only once orphaned (so a second daemon next to a live one learns nothing):
//!       `held KEY MS_SINCE_LAST_BEAT` per held key, then `end`; from then on its grace is
//!       frozen and it waits (at most 1 s) for the confirmation.
//!    2. The daemon spawns its own guardian (which unlinks PATH and binds it anew), and starts
//!       each instance whose key is held with a last beat within Master_Down_Interval with
//!       `ResumeMaster` (no `remove_stale_vips`; the advert goes out at once, the VIPs are
//!       re-added idempotently, and the new guardian gets `hold` on its pipe); the others start
//!       normally.
//!    3. Once every instance started, the daemon writes `done KEY[,KEY...]` (`done -` for none)
//!       and closes. The old guardian removes and resigns the keys that were not adopted, then
//!       exits without touching the adopted ones. EOF without `done`, a bad line or the 1 s
//!       bound: it removes and resigns everything, as after a plain death. It unlinks PATH on
//!       exit only if PATH is still the socket it bound (inode check).
//!
//!    Measured in the pair test (`cargo test -p tandem --test pair_failover -- --nocapture`):
//!    the restarted daemon is master 30-65 ms after the SIGKILL (its instance starts ~16 ms
//!    after the daemon does), the peer's longest advert silence is 95-110 ms (about one
//!    interval) and the peer never holds the VIP.
//! 2. **Address lifetime backstop.** Every VIP is installed with a finite valid/preferred
//!    lifetime ([`crate::VIP_LIFETIME`], whole seconds, the kernel's granularity) that the master
//!    renews every [`crate::VIP_RENEW`]. If the guardian is gone too (killed with the daemon by
//!    a `kill -9` of both, OOM), the kernel itself drops the VIP when the lifetime runs out.
//!
//! # Failure modes
//!
//! * Guardian killed alone: the daemon's next write fails with EPIPE; it logs, counts, and
//!   relies on the lifetime backstop (VIP gone at most `VIP_LIFETIME` after the daemon dies).
//! * Guardian frozen: beats pile up in the pipe; the daemon's writes are non-blocking and
//!   dropped when the pipe is full (counted), so the daemon never blocks on it.
//! * Daemon frozen for just about `TIMEOUT_MS`: the guardian may remove the VIPs right as the
//!   daemon resumes and re-adds them; the next renewal (at most `VIP_RENEW` later) reinstalls
//!   them if the daemon is still master.
//! * Daemon killed twice in a row (the successor dies mid-adoption): the old guardian sees EOF
//!   without `done` and removes everything; the successor's guardian does the same for its own
//!   `hold`s. A successor that does not answer at all is bounded by the 1 s confirmation wait.
//! * Standalone `tandem vrrp` (no supervisor): the grace delays the VIP removal and the
//!   resignation by up to 100 ms after a SIGKILL (removal still within the 400 ms the
//!   `vrrp_failover` test asserts).
//! * Guardian cannot reach netlink: it logs every failure and retries the removal on the next
//!   tick until it succeeds or the key is released.
//!
//! This module owns both ends of the protocol ([`GuardianLink`] in the daemon, [`guardian_main`]
//! in the helper). Must not run the VRRP protocol: it only ever *removes* addresses it was told
//! about, never adds any.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufRead, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::error::Error;
use crate::netlink::Netlink;

/// Longest protocol line accepted; longer lines are dropped (255 IPv6 VIPs fit).
const MAX_LINE: u64 = 16 * 1024;
/// How often the guardian checks heartbeat deadlines.
const TICK: Duration = Duration::from_millis(10);
/// Messages buffered between the guardian's reader thread and its main loop.
const QUEUE: usize = 1024;
/// Longest wait of an orphaned guardian for a successor daemon (see [`grace`]).
const MAX_GRACE: Duration = Duration::from_millis(100);
/// Bound on each step of an adoption (report, confirmation).
const ADOPT_TIMEOUT: Duration = Duration::from_secs(1);

/// How to start the guardian: a program and its arguments (the binary passes itself and its
/// hidden subcommand).
#[derive(Clone, Debug)]
pub struct GuardianCommand {
    /// Program to run, e.g. `std::env::current_exe()`.
    pub program: PathBuf,
    /// Arguments, e.g. `["vrrp-guardian"]`.
    pub args: Vec<OsString>,
    /// Where the guardian listens for a successor daemon (passed as `--listen PATH`); `None`
    /// for no adoption (VIPs removed as soon as the daemon dies).
    pub listen: Option<PathBuf>,
}

/// The daemon's end of the guardian pipe.
#[derive(Debug)]
pub struct GuardianLink {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Writes that failed or were dropped (pipe full, guardian gone).
    pub write_errors: u64,
    lost_logged: bool,
}

impl GuardianLink {
    /// Spawns the guardian in its own process group with a pipe as its stdin.
    pub fn spawn(cmd: &GuardianCommand) -> Result<GuardianLink, Error> {
        let err = |source| Error::GuardianSpawn {
            program: cmd.program.clone(),
            source,
        };
        let mut command = Command::new(&cmd.program);
        command.args(&cmd.args);
        if let Some(path) = &cmd.listen {
            command.arg("--listen").arg(path);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own process group: a SIGKILL of the daemon's group must not reach it.
            .process_group(0)
            .spawn()
            .map_err(err)?;
        let stdin = child.stdin.take();
        if let Some(s) = &stdin {
            // Non-blocking: a frozen guardian must never block the daemon.
            let flags = nix::fcntl::fcntl(s.as_fd(), nix::fcntl::FcntlArg::F_GETFL)
                .map_err(|e| err(e.into()))?;
            let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(s.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
                .map_err(|e| err(e.into()))?;
        }
        info!(pid = child.id(), "vip guardian started");
        Ok(GuardianLink {
            child,
            stdin,
            write_errors: 0,
            lost_logged: false,
        })
    }

    /// Announces that `key`'s VIPs are installed on `ifindex`, with the priority-0 adverts
    /// (from `src`, one per destination) to resign with if the daemon goes silent.
    pub fn hold(
        &mut self,
        key: &str,
        ifindex: u32,
        timeout: Duration,
        vips: &[(IpAddr, u8)],
        src: IpAddr,
        resign: &[(IpAddr, Vec<u8>)],
    ) {
        let list: Vec<String> = vips.iter().map(|(a, p)| format!("{a}/{p}")).collect();
        let adverts: Vec<String> = resign
            .iter()
            .map(|(dst, payload)| format!("{dst}={}", hex(payload)))
            .collect();
        let line = format!(
            "hold {key} {ifindex} {} {} {src} {}\n",
            timeout.as_millis(),
            list.join(","),
            adverts.join(",")
        );
        self.write(&line);
    }

    /// Heartbeat for `key`.
    pub fn beat(&mut self, key: &str) {
        self.write(&format!("beat {key}\n"));
    }

    /// `key`'s VIPs were removed by the daemon.
    pub fn release(&mut self, key: &str) {
        self.write(&format!("release {key}\n"));
    }

    fn write(&mut self, line: &str) {
        let Some(stdin) = &mut self.stdin else {
            self.write_errors += 1;
            return;
        };
        // Lines are far below PIPE_BUF, so a write is atomic: all or nothing.
        if let Err(e) = stdin.write_all(line.as_bytes()) {
            self.write_errors += 1;
            if e.kind() == io::ErrorKind::WouldBlock {
                warn!("vip guardian pipe full, message dropped");
            } else if !self.lost_logged {
                self.lost_logged = true;
                error!(cause = %e, "vip guardian is gone; VIPs now rely on their address lifetime");
            }
        }
    }

    /// Closes the pipe (the guardian removes whatever is still held and exits) and waits for it
    /// at most `timeout`.
    pub fn close(mut self, timeout: Duration) {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    warn!(pid = self.child.id(), "vip guardian did not exit in time");
                    return;
                }
                Err(e) => {
                    warn!(cause = %e, "failed to wait for the vip guardian");
                    return;
                }
            }
        }
    }
}

/// Source address of the resignation adverts and, per destination, the encoded advert.
type Resign = (IpAddr, Vec<(IpAddr, Vec<u8>)>);

/// One parsed protocol line.
#[derive(Debug, PartialEq, Eq)]
enum Msg {
    Hold {
        key: String,
        ifindex: u32,
        timeout: Duration,
        vips: Vec<(IpAddr, u8)>,
        /// Source of the resignation adverts and, per destination, the encoded advert.
        resign: Option<Resign>,
    },
    Beat(String),
    Release(String),
}

fn parse(line: &str) -> Option<Msg> {
    let mut it = line.split_ascii_whitespace();
    match it.next()? {
        "hold" => {
            let key = it.next()?.to_owned();
            let ifindex = it.next()?.parse().ok()?;
            let timeout = Duration::from_millis(it.next()?.parse().ok()?);
            let mut vips = Vec::new();
            for item in it.next()?.split(',') {
                let (a, p) = item.split_once('/')?;
                vips.push((a.parse().ok()?, p.parse().ok()?));
            }
            let resign = match (it.next(), it.next()) {
                (Some(src), Some(list)) => {
                    let mut adverts = Vec::new();
                    for item in list.split(',') {
                        let (dst, payload) = item.split_once('=')?;
                        adverts.push((dst.parse().ok()?, unhex(payload)?));
                    }
                    Some((src.parse().ok()?, adverts))
                }
                _ => None,
            };
            Some(Msg::Hold {
                key,
                ifindex,
                timeout,
                vips,
                resign,
            })
        }
        "beat" => Some(Msg::Beat(it.next()?.to_owned())),
        "release" => Some(Msg::Release(it.next()?.to_owned())),
        _ => None,
    }
}

#[derive(Debug)]
struct Held {
    ifindex: u32,
    timeout: Duration,
    vips: Vec<(IpAddr, u8)>,
    resign: Option<Resign>,
    last_beat: Instant,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The guardian process: reads the protocol from stdin until EOF. Returns when the daemon is
/// gone and every held VIP was removed (or removal failed after retries, logged), or when a
/// successor daemon adopted the held VIPs through the `listen` socket (see the module doc).
pub fn guardian_main(listen: Option<&Path>) -> io::Result<()> {
    let mut nl = Netlink::new()?;
    let listener = match listen {
        Some(path) => Some(AdoptListener::bind(path)?),
        None => None,
    };
    let (tx, rx) = mpsc::sync_channel::<Option<String>>(QUEUE);
    std::thread::Builder::new()
        .name("guardian-reader".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut lock = stdin.lock();
            loop {
                let mut buf = Vec::new();
                match (&mut lock).take(MAX_LINE).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if tx
                            .send(Some(String::from_utf8_lossy(&buf).into_owned()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        })?;
    info!(pid = std::process::id(), listen = ?listen, "vip guardian running");
    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    // When the daemon's pipe closed (the guardian is an orphan waiting for a successor).
    let mut orphaned: Option<Instant> = None;
    let mut adopter: Option<Adopter> = None;
    loop {
        if orphaned.is_none() {
            // Drain every pending message before looking at deadlines, so a beat that is
            // already in the pipe always counts.
            let mut first = true;
            loop {
                let msg = if first {
                    first = false;
                    rx.recv_timeout(TICK)
                } else {
                    rx.try_recv().map_err(|e| match e {
                        mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                        mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
                    })
                };
                match msg {
                    Ok(Some(line)) => apply(&mut held, &line),
                    Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                        orphaned = Some(Instant::now());
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                }
            }
            if orphaned.is_some() {
                if listener.is_none() || held.is_empty() {
                    info!(
                        held = held.len(),
                        "vrrp daemon gone (pipe closed), removing held VIPs"
                    );
                    remove_everything(&mut nl, &held);
                    return Ok(());
                }
                info!(
                    held = held.len(),
                    grace_ms = grace(&held).as_millis() as u64,
                    "vrrp daemon gone (pipe closed), waiting for a successor to adopt the VIPs"
                );
            }
        } else {
            std::thread::sleep(TICK);
        }
        let now = Instant::now();
        if let Some(l) = &listener {
            if adopter.is_none() {
                adopter = l.accept();
            }
            if let Some(orphaned_at) = orphaned {
                match adopter.as_mut().map(|a| a.step(&held, now)) {
                    Some(AdoptStep::Pending) => {}
                    Some(AdoptStep::Adopted(keys)) => {
                        let rest: BTreeMap<String, Held> = held
                            .into_iter()
                            .filter(|(k, _)| !keys.contains(k))
                            .collect();
                        info!(adopted = ?keys, resigned = rest.len(), "a successor daemon adopted the held VIPs; exiting");
                        remove_everything(&mut nl, &rest);
                        l.unlink();
                        return Ok(());
                    }
                    Some(AdoptStep::Failed(why)) => {
                        warn!(
                            why,
                            "adoption by a successor daemon failed, removing held VIPs"
                        );
                        remove_everything(&mut nl, &held);
                        l.unlink();
                        return Ok(());
                    }
                    None if now.duration_since(orphaned_at) > grace(&held) => {
                        info!(
                            held = held.len(),
                            "no successor daemon within the grace period, removing held VIPs"
                        );
                        remove_everything(&mut nl, &held);
                        l.unlink();
                        return Ok(());
                    }
                    None => {}
                }
                continue;
            }
            // The daemon still runs: a connection that waits too long is dropped.
            if adopter
                .as_ref()
                .is_some_and(|a| now.duration_since(a.accepted) > ADOPT_TIMEOUT)
            {
                adopter = None;
            }
        }
        let expired: Vec<String> = held
            .iter()
            .filter(|(_, h)| now.duration_since(h.last_beat) > h.timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(h) = held.get(&key) {
                warn!(key = %key, silent_ms = now.duration_since(h.last_beat).as_millis() as u64,
                    "no heartbeat from the vrrp daemon, removing its VIPs");
                if remove_all(&mut nl, &key, h) {
                    held.remove(&key);
                }
            }
        }
    }
}

/// How long an orphaned guardian waits for a successor before it removes the VIPs and resigns:
/// [`MAX_GRACE`], but at most half the shortest heartbeat timeout (3 advert intervals, just
/// under Master_Down_Interval), so the peer never sees a silence longer than its master-down
/// wait because of the grace.
fn grace(held: &BTreeMap<String, Held>) -> Duration {
    held.values()
        .map(|h| h.timeout / 2)
        .fold(MAX_GRACE, Duration::min)
}

/// Removes every VIP of `held` and resigns for each key, with bounded retries (the daemon is
/// gone, nobody else will remove them).
fn remove_everything(nl: &mut Netlink, held: &BTreeMap<String, Held>) {
    for (key, h) in held {
        for attempt in 1..=3 {
            if remove_all(nl, key, h) {
                break;
            }
            warn!(key = %key, attempt, "retrying VIP removal");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The guardian's listening socket for a successor daemon.
struct AdoptListener {
    path: PathBuf,
    listener: UnixListener,
    /// Inode of the socket file we bound, so we never unlink a successor guardian's socket.
    ino: u64,
}

impl AdoptListener {
    fn bind(path: &Path) -> io::Result<AdoptListener> {
        // A previous guardian's path (it may still run, adopted or orphaned, with its
        // connection already accepted): the new one takes the name over.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let ino = std::fs::metadata(path)?.ino();
        Ok(AdoptListener {
            path: path.to_owned(),
            listener,
            ino,
        })
    }

    fn accept(&self) -> Option<Adopter> {
        match self.listener.accept() {
            Ok((stream, _)) => {
                info!("a successor vrrp daemon connected");
                Some(Adopter {
                    stream,
                    accepted: Instant::now(),
                    replied: None,
                    buf: Vec::new(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => {
                warn!(path = %self.path.display(), cause = %e, "guardian failed to accept");
                None
            }
        }
    }

    fn unlink(&self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A successor daemon connected to an orphaned (or soon orphaned) guardian.
struct Adopter {
    stream: UnixStream,
    accepted: Instant,
    /// When the held state was sent.
    replied: Option<Instant>,
    buf: Vec<u8>,
}

enum AdoptStep {
    Pending,
    /// The successor guards these keys now.
    Adopted(Vec<String>),
    Failed(&'static str),
}

impl Adopter {
    /// One step of the handover, once the guardian is an orphan: report the held state, then
    /// wait (bounded) for `done KEY[,KEY...]`.
    fn step(&mut self, held: &BTreeMap<String, Held>, now: Instant) -> AdoptStep {
        let Some(replied) = self.replied else {
            let mut text = String::new();
            for (key, h) in held {
                text.push_str(&format!(
                    "held {key} {}\n",
                    now.duration_since(h.last_beat).as_millis()
                ));
            }
            text.push_str("end\n");
            let _ = self.stream.set_nonblocking(false);
            let _ = self
                .stream
                .set_write_timeout(Some(Duration::from_millis(100)));
            if self.stream.write_all(text.as_bytes()).is_err()
                || self.stream.set_nonblocking(true).is_err()
            {
                return AdoptStep::Failed("cannot report the held VIPs");
            }
            self.replied = Some(now);
            return AdoptStep::Pending;
        };
        let mut chunk = [0u8; 4096];
        let mut closed = false;
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    // The successor writes its confirmation and closes: parse what came first.
                    closed = true;
                    break;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                    if self.buf.len() as u64 > MAX_LINE {
                        return AdoptStep::Failed("adoption line too long");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return AdoptStep::Failed("the successor connection failed"),
            }
        }
        if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(self.buf.get(..pos).unwrap_or(&[])).into_owned();
            return match line.split_once(' ') {
                Some(("done", keys)) => AdoptStep::Adopted(
                    keys.split(',')
                        .filter(|k| !k.is_empty() && *k != "-")
                        .map(str::to_owned)
                        .collect(),
                ),
                _ => AdoptStep::Failed("unexpected adoption line"),
            };
        }
        if closed {
            return AdoptStep::Failed("the successor closed the connection");
        }
        if now.duration_since(replied) > ADOPT_TIMEOUT {
            return AdoptStep::Failed("the successor did not confirm in time");
        }
        AdoptStep::Pending
    }
}

/// The successor's end of an adoption: what the previous guardian holds, and the connection to
/// confirm on once this daemon's own guardian holds the adopted VIPs.
#[derive(Debug)]
pub struct Adoption {
    stream: UnixStream,
    /// Held keys and how long since their last heartbeat.
    pub held: BTreeMap<String, Duration>,
}

impl Adoption {
    /// Connects to a previous guardian at `path` and reads what it holds; `None` when there is
    /// none (no socket, refused) or it does not answer within `timeout` (its daemon still runs,
    /// or it is gone).
    pub fn connect(path: &Path, timeout: Duration) -> Option<Adoption> {
        let stream = match UnixStream::connect(path) {
            Ok(s) => s,
            Err(e) => {
                debug!(path = %path.display(), cause = %e, "no previous vip guardian to adopt");
                return None;
            }
        };
        let read = || -> io::Result<BTreeMap<String, Duration>> {
            stream.set_read_timeout(Some(timeout))?;
            let mut held = BTreeMap::new();
            let mut r = io::BufReader::new(&stream).take(MAX_LINE);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "guardian closed the adoption connection",
                    ));
                }
                let mut it = line.split_ascii_whitespace();
                match (it.next(), it.next(), it.next().and_then(|m| m.parse().ok())) {
                    (Some("end"), _, _) => return Ok(held),
                    (Some("held"), Some(key), Some(ms)) => {
                        held.insert(key.to_owned(), Duration::from_millis(ms));
                    }
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("unexpected line {:?}", line.trim_end()),
                        ));
                    }
                }
            }
        };
        match read() {
            Ok(held) => {
                info!(path = %path.display(), held = ?held, "previous vip guardian reported its held VIPs");
                Some(Adoption { stream, held })
            }
            Err(e) => {
                warn!(path = %path.display(), cause = %e, "previous vip guardian did not report; starting afresh");
                None
            }
        }
    }

    /// Tells the previous guardian that `keys` are guarded by this daemon now (it resigns the
    /// others and exits).
    pub fn finish(mut self, keys: &[String]) {
        let list = if keys.is_empty() {
            "-".to_owned()
        } else {
            keys.join(",")
        };
        if let Err(e) = self.stream.write_all(format!("done {list}\n").as_bytes()) {
            warn!(cause = %e, "failed to confirm the adoption to the previous vip guardian");
        }
    }
}

fn apply(held: &mut BTreeMap<String, Held>, line: &str) {
    match parse(line) {
        Some(Msg::Hold {
            key,
            ifindex,
            timeout,
            vips,
            resign,
        }) => {
            info!(key = %key, ifindex, timeout_ms = timeout.as_millis() as u64, vips = ?vips, "guarding VIPs");
            held.insert(
                key,
                Held {
                    ifindex,
                    timeout,
                    vips,
                    resign,
                    last_beat: Instant::now(),
                },
            );
        }
        Some(Msg::Beat(key)) => {
            if let Some(h) = held.get_mut(&key) {
                h.last_beat = Instant::now();
            }
        }
        Some(Msg::Release(key)) => {
            if held.remove(&key).is_some() {
                info!(key = %key, "VIPs released by the daemon");
            }
        }
        None => warn!(line = %line.trim_end(), "unparsable guardian message dropped"),
    }
}

/// Removes every VIP of `h`, then resigns on the daemon's behalf; true when all VIPs are gone
/// (removed now or already absent).
fn remove_all(nl: &mut Netlink, key: &str, h: &Held) -> bool {
    let ok = remove_vips(nl, key, h);
    resign(key, h);
    ok
}

/// Sends the priority-0 adverts of `h` (best effort, logged), over IPv4 or IPv6 as the source.
fn resign(key: &str, h: &Held) {
    let Some((src, adverts)) = &h.resign else {
        return;
    };
    let opened = if src.is_ipv6() {
        crate::socket::open_sender_v6()
    } else {
        crate::socket::open_sender()
    };
    let socket = match opened {
        Ok(s) => s,
        Err(e) => {
            error!(key = %key, cause = %e, "guardian cannot open a vrrp socket to resign");
            return;
        }
    };
    for (dst, payload) in adverts {
        let sent = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                crate::socket::send_v4(&socket, h.ifindex, *s, *d, payload)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                crate::socket::send_v6(&socket, h.ifindex, *s, *d, payload)
            }
            _ => continue,
        };
        match sent {
            Ok(()) => info!(key = %key, %dst, "priority-0 advert sent on the daemon's behalf"),
            Err(e) => {
                warn!(key = %key, %dst, cause = %e, "guardian failed to send the priority-0 advert")
            }
        }
    }
}

fn remove_vips(nl: &mut Netlink, key: &str, h: &Held) -> bool {
    let mut ok = true;
    for (addr, prefix) in &h.vips {
        match nl.del_address(h.ifindex, *addr, *prefix) {
            Ok(true) => info!(key = %key, vip = %addr, prefix, "VIP removed by guardian"),
            Ok(false) => {}
            Err(e) => {
                ok = false;
                error!(key = %key, vip = %addr, prefix, cause = %e, "guardian failed to remove VIP");
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol() {
        assert_eq!(
            parse("hold eth1-51 7 300 198.18.0.100/24,198.18.0.101/32\n"),
            Some(Msg::Hold {
                key: "eth1-51".into(),
                ifindex: 7,
                timeout: Duration::from_millis(300),
                vips: vec![
                    ("198.18.0.100".parse().unwrap(), 24),
                    ("198.18.0.101".parse().unwrap(), 32)
                ],
                resign: None,
            })
        );
        match parse("hold k 7 300 198.18.0.100/24 198.18.0.11 224.0.0.18=3133ff\n") {
            Some(Msg::Hold { resign, .. }) => assert_eq!(
                resign,
                Some((
                    "198.18.0.11".parse().unwrap(),
                    vec![("224.0.0.18".parse().unwrap(), vec![0x31, 0x33, 0xff])]
                ))
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse("hold k 7 300 198.18.0.100/24 198.18.0.11 224.0.0.18=313"),
            None
        );
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(parse("beat k\n"), Some(Msg::Beat("k".into())));
        assert_eq!(parse("release k"), Some(Msg::Release("k".into())));
        for bad in [
            "",
            "hold",
            "hold k x 1 a/1",
            "hold k 1 1 nope/24",
            "hold k 1 1 1.2.3.4",
            "beat",
            "boom k",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn beats_only_refresh_held_keys_and_release_forgets() {
        let mut held = BTreeMap::new();
        apply(&mut held, "beat k");
        assert!(held.is_empty());
        apply(&mut held, "hold k 1 300 198.18.0.100/24");
        assert_eq!(held.len(), 1);
        apply(&mut held, "release k");
        assert!(held.is_empty());
    }

    fn adopter(stream: UnixStream) -> Adopter {
        Adopter {
            stream,
            accepted: Instant::now(),
            replied: None,
            buf: Vec::new(),
        }
    }

    #[test]
    fn adoption_reports_held_keys_and_reads_a_confirmation_written_before_close() {
        let mut held = BTreeMap::new();
        apply(&mut held, "hold a 1 300 198.18.0.100/24");
        apply(&mut held, "hold b 1 300 198.18.0.101/24");
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let mut a = adopter(ours);
        assert!(matches!(a.step(&held, Instant::now()), AdoptStep::Pending));
        let mut report = String::new();
        let mut r = io::BufReader::new(&theirs);
        while !report.ends_with("end\n") {
            r.read_line(&mut report).expect("read report");
        }
        assert!(report.starts_with("held a "), "{report}");
        assert!(report.contains("\nheld b "), "{report}");
        (&theirs).write_all(b"done a\n").expect("confirm");
        drop(r);
        drop(theirs);
        match a.step(&held, Instant::now()) {
            AdoptStep::Adopted(keys) => assert_eq!(keys, ["a"]),
            _ => panic!("confirmation before close not adopted"),
        }
    }

    #[test]
    fn adoption_fails_when_the_successor_closes_without_confirming() {
        let mut held = BTreeMap::new();
        apply(&mut held, "hold a 1 300 198.18.0.100/24");
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let mut a = adopter(ours);
        assert!(matches!(a.step(&held, Instant::now()), AdoptStep::Pending));
        drop(theirs);
        assert!(matches!(
            a.step(&held, Instant::now()),
            AdoptStep::Failed(_)
        ));
        assert_eq!(grace(&held), Duration::from_millis(100));
        apply(&mut held, "hold b 1 100 198.18.0.101/24");
        assert_eq!(grace(&held), Duration::from_millis(50));
    }
}
