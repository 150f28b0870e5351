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
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::error::Error;
use crate::netlink::Netlink;

/// Longest protocol line accepted; longer lines are dropped (255 IPv6 VIPs fit).
const MAX_LINE: u64 = 16 * 1024;
/// How often the guardian checks heartbeat deadlines.
const TICK: Duration = Duration::from_millis(10);
/// Messages buffered between the guardian's reader thread and its main loop.
const QUEUE: usize = 1024;

/// How to start the guardian: a program and its arguments (the binary passes itself and its
/// hidden subcommand).
#[derive(Clone, Debug)]
pub struct GuardianCommand {
    /// Program to run, e.g. `std::env::current_exe()`.
    pub program: PathBuf,
    /// Arguments, e.g. `["vrrp-guardian"]`.
    pub args: Vec<OsString>,
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
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
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
/// gone and every held VIP was removed (or removal failed after retries, logged).
pub fn guardian_main() -> io::Result<()> {
    let mut nl = Netlink::new()?;
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
    info!(pid = std::process::id(), "vip guardian running");
    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    loop {
        // Drain every pending message before looking at deadlines, so a beat that is already
        // in the pipe always counts.
        let mut eof = false;
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
                    eof = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        if eof {
            info!(
                held = held.len(),
                "vrrp daemon gone (pipe closed), removing held VIPs"
            );
            for (key, h) in &held {
                // Bounded retries: the daemon is gone, nobody else will remove them.
                for attempt in 1..=3 {
                    if remove_all(&mut nl, key, h) {
                        break;
                    }
                    warn!(key = %key, attempt, "retrying VIP removal");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            return Ok(());
        }
        let now = Instant::now();
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
}
