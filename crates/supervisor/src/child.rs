//! Child processes: start one service, capture its output, restart it when it dies, stop it.
//!
//! Owns the per-service task ([`spawn`]), the restart policy ([`Backoff`], pure, tested with
//! virtual instants) and the process-group handling (each child leads its own group, so a
//! stop reaches everything it started; a child gets SIGTERM when the supervisor dies), and
//! the identity a child runs as ([`ServiceUser`], [`Credentials`]): on the appliance the
//! supervisor is root and each child is started as the unprivileged service user with only
//! the capabilities its service needs ([`capabilities_of`]), raised as ambient capabilities
//! in the forked child before the exec, so no file capabilities or setuid bits are involved
//! and `NoNewPrivileges` holds. Docs: `docs/security.md`.
//! Must not interpret what a child prints beyond forwarding it (the transaction code reads
//! the proxy's reload acknowledgements from [`ChildEvent::Line`]).

use std::collections::VecDeque;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Gid, Pid, Uid};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::state::{ChildEvent, ServiceState, Severity, Shared, now_ms};

/// Delay of the second restart in a row; later ones double up to [`BACKOFF_CAP`].
/// The first restart after a stable run is immediate (a killed proxy is back in well under 1 s).
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay between restarts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A run at least this long resets the backoff and clears the flapping alarm.
pub const STABLE_RUN: Duration = Duration::from_secs(10);
/// Restarts within [`FLAP_WINDOW`] that raise the flapping alarm.
pub const FLAP_RESTARTS: usize = 5;
/// Window of the flapping count.
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);
/// How long a stop waits after SIGTERM before SIGKILL (the proxy drains for 10 s).
pub const STOP_GRACE: Duration = Duration::from_secs(12);
/// Commands queued per child task.
const COMMAND_QUEUE: usize = 16;

/// How to start a service.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Service name (`proxy`, `vrrp`, `sync`).
    pub service: &'static str,
    /// Program (the `tandem` multi-call binary).
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Who the process runs as; `None`: the supervisor's own identity (tests, `xtask run`).
    pub creds: Option<Credentials>,
    /// Directories the child must reach as `creds` (socket directories, the configuration
    /// directory), made so by [`grant`] before each start. Ignored without `creds`.
    pub dirs: Vec<(PathBuf, Access)>,
}

/// A Linux capability a service keeps (numbers from `linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// `CAP_NET_BIND_SERVICE`: bind ports below 1024 (the proxy's frontends on 80 and 443).
    NetBindService = 10,
    /// `CAP_NET_ADMIN`: add and remove the VIPs through netlink (VRRP daemon and guardian).
    NetAdmin = 12,
    /// `CAP_NET_RAW`: the raw IP protocol 112 socket, `SO_BINDTODEVICE` and the AF_PACKET
    /// socket of gratuitous ARP and unsolicited neighbour advertisements (VRRP daemon).
    NetRaw = 13,
}

impl Capability {
    /// The capability's name as `capsh` and `/proc/<pid>/status` decoders print it.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetBindService => "cap_net_bind_service",
            Capability::NetAdmin => "cap_net_admin",
            Capability::NetRaw => "cap_net_raw",
        }
    }

    /// The capability's bit in a capability mask (`CapEff:` in `/proc/<pid>/status`).
    pub fn mask(self) -> u64 {
        1 << (self as u32)
    }
}

/// The capabilities each service keeps when it runs as the service user; nothing else.
/// The proxy binds privileged ports; the VRRP daemon (and its guardian, which it starts and
/// which inherits them) changes addresses and sends raw packets. Sync runs inside the
/// supervisor, so it has no entry.
pub fn capabilities_of(service: &str) -> &'static [Capability] {
    match service {
        "vrrp" => &[Capability::NetAdmin, Capability::NetRaw],
        "proxy" => &[Capability::NetBindService],
        _ => &[],
    }
}

/// The unprivileged account the services run as (`--service-user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    /// The name as given (a user name, or `UID:GID`).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id; key files the proxy reads are readable by this group.
    pub gid: u32,
}

impl ServiceUser {
    /// `tandem` (a user looked up in the passwd database: its uid and primary group) or
    /// `UID:GID` (numeric, for tests: no account needed, e.g. `65534:65534`).
    /// Refused unless the supervisor is root (only root can change a child's identity).
    pub fn resolve(spec: &str) -> Result<ServiceUser, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(format!(
                "service user `{spec}` ignored: the supervisor is not root"
            ));
        }
        if let Some((u, g)) = spec.split_once(':') {
            let parse = |s: &str, what: &str| {
                s.parse::<u32>()
                    .map_err(|_| format!("service user `{spec}`: {what} `{s}` is not a number"))
            };
            let (uid, gid) = (parse(u, "uid")?, parse(g, "gid")?);
            if uid == 0 {
                return Err(format!("service user `{spec}`: uid 0 is root, not a drop"));
            }
            return Ok(ServiceUser {
                name: spec.to_owned(),
                uid,
                gid,
            });
        }
        match nix::unistd::User::from_name(spec) {
            Ok(Some(u)) if u.uid.is_root() => {
                Err(format!("service user `{spec}` is root (uid 0), not a drop"))
            }
            Ok(Some(u)) => Ok(ServiceUser {
                name: spec.to_owned(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(format!("service user `{spec}` does not exist")),
            Err(e) => Err(format!("cannot look up service user `{spec}`: {e}")),
        }
    }

    /// The identity of `service`'s process: this user, its group, the service's capabilities.
    pub fn credentials(&self, service: &str) -> Credentials {
        Credentials {
            uid: self.uid,
            gid: self.gid,
            caps: capabilities_of(service).to_vec(),
        }
    }
}

/// The identity a child process gets between fork and exec (see [`spawn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Real, effective and saved user id.
    pub uid: u32,
    /// Real, effective and saved group id; also the only supplementary group.
    pub gid: u32,
    /// Capabilities kept: permitted, effective, inheritable and ambient, and the whole
    /// bounding set (every other capability is dropped from it).
    pub caps: Vec<Capability>,
}

impl Credentials {
    /// The capability mask of `caps`.
    pub fn mask(&self) -> u64 {
        self.caps.iter().fold(0, |m, c| m | c.mask())
    }
}

/// What a child needs on a directory (see [`grant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Pass through it (`x`): a parent of what the child reads.
    Traverse,
    /// List and read it (`rx`): the configuration directory.
    Read,
    /// Create and remove its sockets there (`rwx` plus the sticky bit, so the child cannot
    /// remove or replace files it does not own, such as the supervisor's control socket).
    Write,
}

impl Access {
    /// The group permission bits, plus the sticky bit for [`Access::Write`].
    fn group_bits(self) -> u32 {
        match self {
            Access::Traverse => 0o010,
            Access::Read => 0o050,
            Access::Write => 0o1070,
        }
    }
}

/// Makes `dir` reachable by group `gid` with `access`: nothing when its mode already allows
/// it to everyone (`o+x` for traverse, e.g. `/data` at 0755) or to that group; otherwise the
/// directory's group becomes `gid` and the group bits are added (its owner stays). A
/// world-writable directory (`/tmp`) is left alone. The supervisor owns these directories
/// (`/run/tandem`, `/data`, `/data/config`); it never changes a file's mode.
pub fn grant(dir: &Path, gid: u32, access: Access) -> std::io::Result<()> {
    if access == Access::Write {
        std::fs::create_dir_all(dir)?;
    }
    let meta = std::fs::metadata(dir)?;
    let mode = meta.permissions().mode() & 0o7777;
    let bits = access.group_bits();
    let perm = bits & 0o070;
    let sticky = bits & 0o1000;
    let world = perm >> 3;
    if mode & 0o002 != 0 {
        return Ok(());
    }
    let by_others = access != Access::Write && mode & world == world;
    let by_group = meta.gid() == gid && mode & perm == perm && mode & sticky == sticky;
    if by_others || by_group {
        return Ok(());
    }
    nix::unistd::chown(dir, None, Some(Gid::from_raw(gid))).map_err(std::io::Error::from)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | bits))
}

/// What the owner can ask of a child task.
#[derive(Debug)]
pub enum ChildCmd {
    /// Send a signal to the process; answers its pid, or an error when it is not running.
    Signal(Signal, oneshot::Sender<Result<u32, String>>),
    /// Stop gracefully and start again at once (a planned restart, not counted).
    Restart(oneshot::Sender<()>),
    /// Stop gracefully and end the task.
    Stop(oneshot::Sender<()>),
}

/// The restart policy, pure: the caller supplies instants.
#[derive(Debug, Default)]
pub struct Backoff {
    /// Crashes since the last stable run.
    consecutive: u32,
    /// Crash instants within the flapping window (at most [`FLAP_RESTARTS`] kept).
    recent: VecDeque<Instant>,
}

impl Backoff {
    /// Records a crash at `now` after a run of `ran`; returns the delay before restarting
    /// and whether the service is flapping.
    pub fn on_exit(&mut self, now: Instant, ran: Duration) -> (Duration, bool) {
        if ran >= STABLE_RUN {
            self.consecutive = 0;
        }
        let delay = match self.consecutive {
            0 => Duration::ZERO,
            n => BACKOFF_BASE
                .saturating_mul(1 << (n - 1).min(16))
                .min(BACKOFF_CAP),
        };
        self.consecutive = self.consecutive.saturating_add(1);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > FLAP_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() == FLAP_RESTARTS {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        (delay, self.recent.len() >= FLAP_RESTARTS)
    }

    /// Records that the current run became stable.
    pub fn stable(&mut self) {
        self.consecutive = 0;
        self.recent.clear();
    }
}

/// A running child task.
#[derive(Debug)]
pub struct ChildHandle {
    /// Commands to the task.
    pub tx: mpsc::Sender<ChildCmd>,
    /// The task; ends after `Stop`.
    pub task: JoinHandle<()>,
}

/// Starts the task that runs `spec` and keeps it running.
pub fn spawn(spec: ChildSpec, shared: Arc<Shared>) -> ChildHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let span = info_span!("child", service = spec.service);
    let task = tokio::spawn(supervise(spec, rx, shared).instrument(span));
    ChildHandle { tx, task }
}

/// What ended one run of the child.
enum RunEnd {
    /// It exited on its own.
    Crashed,
    /// A restart was asked for.
    Restart(oneshot::Sender<()>),
    /// A stop was asked for.
    Stop(oneshot::Sender<()>),
}

async fn supervise(spec: ChildSpec, mut rx: mpsc::Receiver<ChildCmd>, shared: Arc<Shared>) {
    let name = spec.service;
    let mut backoff = Backoff::default();
    loop {
        shared.service(name, |s| {
            s.state = ServiceState::Starting;
            s.pid = None;
            s.since_ms = now_ms();
        });
        let started = Instant::now();
        let end = match start(&spec, &shared) {
            Ok(child) => run_once(child, &spec, &mut rx, &shared, &mut backoff).await,
            Err(e) => {
                error!(cause = %e, program = %spec.program.display(), "failed to start service");
                shared.log(name, &format!("supervisor: failed to start: {e}"));
                shared.service(name, |s| {
                    s.last_exit = Some(format!("failed to start: {e}"))
                });
                RunEnd::Crashed
            }
        };
        match end {
            RunEnd::Stop(done) => {
                shared.service(name, |s| {
                    s.state = ServiceState::Stopped;
                    s.pid = None;
                    s.since_ms = now_ms();
                });
                let _ = done.send(());
                return;
            }
            RunEnd::Restart(done) => {
                let _ = done.send(());
                continue;
            }
            RunEnd::Crashed => {}
        }
        let (delay, flapping) = backoff.on_exit(Instant::now(), started.elapsed());
        shared.service(name, |s| {
            s.restarts += 1;
            s.state = ServiceState::Backoff;
            s.pid = None;
            s.since_ms = now_ms();
            s.flapping = flapping;
            s.healthy = Some(false);
        });
        if flapping {
            shared.raise(
                &format!("flapping:{name}"),
                Severity::Critical,
                format!(
                    "service {name} is flapping: {FLAP_RESTARTS} restarts within {}s; see `logs {name}`",
                    FLAP_WINDOW.as_secs()
                ),
            );
        }
        info!(
            delay_ms = delay.as_millis() as u64,
            flapping, "restarting service"
        );
        // Wait out the delay, still answering commands.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(ChildCmd::Signal(_, reply)) => {
                        let _ = reply.send(Err(format!("{name} is not running (restarting)")));
                    }
                    Some(ChildCmd::Restart(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(ChildCmd::Stop(done)) => {
                        shared.service(name, |s| s.state = ServiceState::Stopped);
                        let _ = done.send(());
                        return;
                    }
                },
            }
        }
    }
}

fn start(spec: &ChildSpec, shared: &Arc<Shared>) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a stop signals the whole group, and a Ctrl-C on the
        // supervisor's terminal does not reach the children directly.
        .process_group(0);
    let identity = match &spec.creds {
        Some(c) => {
            for (dir, access) in &spec.dirs {
                if let Err(e) = grant(dir, c.gid, *access) {
                    warn!(dir = %dir.display(), ?access, cause = %e, "cannot open a directory to the service user");
                }
            }
            Some(Become::new(c))
        }
        None => None,
    };
    // SAFETY: the closure runs in the forked child before exec. `Become::apply` and prctl(2)
    // make only async-signal-safe system calls on values prepared before the fork and
    // allocate nothing (errors are `io::Error`s made from errno, which do not allocate).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(d) = &identity {
                d.apply()?;
            }
            // The child gets SIGTERM if the supervisor dies, so no orphan keeps a port. Set
            // after the identity change, which clears the parent-death signal.
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn()?;
    if let Some(c) = &spec.creds {
        info!(
            uid = c.uid,
            gid = c.gid,
            capabilities = ?c.caps.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "service runs as the service user"
        );
    }
    let pid = child.id().unwrap_or(0);
    info!(pid, "service started");
    shared.service(spec.service, |s| {
        s.pid = Some(pid);
        s.state = ServiceState::Running;
        s.since_ms = now_ms();
    });
    let _ = shared.events.send(ChildEvent::Started {
        service: spec.service,
        pid,
    });
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, spec.service, Arc::clone(shared)));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, spec.service, Arc::clone(shared)));
    }
    Ok(child)
}

/// `struct __user_cap_header_struct` of capset(2).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` of capset(2); version 3 takes two (bits 0-31, 32-63).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`); 40
/// (`CAP_CHECKPOINT_RESTORE`) on the 6.1 kernel when the file cannot be read.
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The identity change of one child start, with everything computed before the fork.
struct Become {
    uid: Uid,
    gid: Gid,
    groups: [Gid; 1],
    mask: u64,
    last_cap: u32,
}

impl Become {
    fn new(c: &Credentials) -> Become {
        Become {
            uid: Uid::from_raw(c.uid),
            gid: Gid::from_raw(c.gid),
            groups: [Gid::from_raw(c.gid)],
            mask: c.mask(),
            last_cap: last_capability().min(63),
        }
    }

    /// Runs in the forked child (see the SAFETY note at the call): drops every other
    /// capability from the bounding set, becomes uid/gid (keeping the permitted set across
    /// setresuid), sets the permitted, effective and inheritable sets to the mask, raises
    /// the mask's capabilities as ambient (what survives the exec of a binary without file
    /// capabilities), and sets no_new_privs. No allocation, only system calls.
    fn apply(&self) -> std::io::Result<()> {
        let last = std::io::Error::last_os_error;
        for cap in 0..=self.last_cap {
            if self.mask & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                let e = last();
                // EINVAL: a capability this kernel does not have.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
        nix::sys::prctl::set_keepcaps(true)?;
        nix::unistd::setgroups(&self.groups)?;
        nix::unistd::setresgid(self.gid, self.gid, self.gid)?;
        nix::unistd::setresuid(self.uid, self.uid, self.uid)?;
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let word = |shift: u32| (self.mask >> shift) as u32;
        let data = [
            CapData {
                effective: word(0),
                permitted: word(0),
                inheritable: word(0),
            },
            CapData {
                effective: word(32),
                permitted: word(32),
                inheritable: word(32),
            },
        ];
        // SAFETY: capset(2) reads one version-3 header and two data structs, both live on
        // this stack frame for the duration of the call and laid out as the kernel's.
        let r = unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            )
        };
        if r != 0 {
            return Err(last());
        }
        for cap in 0..=self.last_cap {
            if self.mask & (1 << cap) == 0 {
                continue;
            }
            // SAFETY: prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap) takes integers only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err(last());
            }
        }
        nix::sys::prctl::set_keepcaps(false)?;
        nix::sys::prctl::set_no_new_privs()?;
        Ok(())
    }
}

/// Copies a child's output lines into its log ring and the event feed.
async fn pump(stream: impl AsyncRead + Unpin, service: &'static str, shared: Arc<Shared>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        shared.log(service, &line);
        let _ = shared.events.send(ChildEvent::Line { service, line });
    }
}

async fn run_once(
    mut child: tokio::process::Child,
    spec: &ChildSpec,
    rx: &mut mpsc::Receiver<ChildCmd>,
    shared: &Arc<Shared>,
    backoff: &mut Backoff,
) -> RunEnd {
    let name = spec.service;
    let pid = child.id().unwrap_or(0);
    let stable = tokio::time::sleep(STABLE_RUN);
    tokio::pin!(stable);
    let mut is_stable = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                let how = match status {
                    Ok(s) => describe(s),
                    Err(e) => format!("wait failed: {e}"),
                };
                warn!(pid, how = %how, "service exited");
                shared.log(name, &format!("supervisor: {name} (pid {pid}) exited: {how}"));
                shared.service(name, |s| s.last_exit = Some(how.clone()));
                let _ = shared.events.send(ChildEvent::Exited { service: name, pid, how });
                return RunEnd::Crashed;
            }
            () = &mut stable, if !is_stable => {
                is_stable = true;
                backoff.stable();
                shared.service(name, |s| s.flapping = false);
                shared.clear(&format!("flapping:{name}"));
            }
            cmd = rx.recv() => match cmd {
                Some(ChildCmd::Signal(sig, reply)) => {
                    let r = kill(Pid::from_raw(pid as i32), sig)
                        .map(|()| pid)
                        .map_err(|e| format!("failed to send {sig} to {name} (pid {pid}): {e}"));
                    let _ = reply.send(r);
                }
                Some(ChildCmd::Restart(done)) => {
                    stop(&mut child, pid, name, shared).await;
                    return RunEnd::Restart(done);
                }
                Some(ChildCmd::Stop(done)) => {
                    stop(&mut child, pid, name, shared).await;
                    return RunEnd::Stop(done);
                }
                None => {
                    stop(&mut child, pid, name, shared).await;
                    let (tx, _) = oneshot::channel();
                    return RunEnd::Stop(tx);
                }
            },
        }
    }
}

/// SIGTERM to the child's process group, then SIGKILL after [`STOP_GRACE`].
async fn stop(child: &mut tokio::process::Child, pid: u32, name: &'static str, shared: &Shared) {
    shared.service(name, |s| s.state = ServiceState::Stopping);
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(_) => info!(pid, "service stopped"),
        Err(_) => {
            warn!(pid, "service did not stop in time, killing it");
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
    let _ = shared.events.send(ChildEvent::Exited {
        service: name,
        pid,
        how: "stopped".into(),
    });
}

/// `exit status 2`, `signal 9 (SIGKILL)`.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({s})"),
            Err(_) => format!("signal {sig}"),
        },
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, mode: u32) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tandem-grant-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    fn mode_and_gid(p: &Path) -> (u32, u32) {
        let m = std::fs::metadata(p).expect("stat");
        (m.permissions().mode() & 0o7777, m.gid())
    }

    #[test]
    fn grant_opens_a_private_directory_to_the_group_only_as_far_as_asked() {
        // Our own primary group: changing a directory's group to it needs no privilege.
        let gid = nix::unistd::getegid().as_raw();
        let read = scratch("read", 0o700);
        grant(&read, gid, Access::Read).expect("grant read");
        assert_eq!(mode_and_gid(&read), (0o750, gid));
        let write = scratch("write", 0o755);
        grant(&write, gid, Access::Write).expect("grant write");
        assert_eq!(
            mode_and_gid(&write),
            (0o1775, gid),
            "rwx for the group, sticky"
        );
        let traverse = scratch("traverse", 0o700);
        grant(&traverse, gid, Access::Traverse).expect("grant traverse");
        assert_eq!(mode_and_gid(&traverse), (0o710, gid));
        for p in [read, write, traverse] {
            let _ = std::fs::remove_dir_all(p);
        }
    }

    #[test]
    fn grant_leaves_directories_that_already_allow_it_alone() {
        let gid = nix::unistd::getegid().as_raw();
        // Everyone may traverse and read a 0755 directory; /tmp-like ones are world-writable.
        let open = scratch("open", 0o755);
        grant(&open, gid, Access::Read).expect("grant");
        assert_eq!(mode_and_gid(&open).0, 0o755);
        let world = scratch("world", 0o1777);
        grant(&world, gid, Access::Write).expect("grant");
        assert_eq!(mode_and_gid(&world).0, 0o1777);
        for p in [open, world] {
            let _ = std::fs::remove_dir_all(p);
        }
    }

    #[test]
    fn each_service_keeps_only_its_capabilities() {
        let mask = |s: &str| capabilities_of(s).iter().fold(0u64, |m, c| m | c.mask());
        assert_eq!(mask("proxy"), 0x400, "cap_net_bind_service");
        assert_eq!(mask("vrrp"), 0x3000, "cap_net_admin, cap_net_raw");
        assert_eq!(mask("anything else"), 0);
    }

    #[test]
    fn first_restart_is_immediate_then_exponential_with_a_cap() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let delays: Vec<u128> = (0..8)
            .map(|i| {
                b.on_exit(t0 + Duration::from_secs(30 * i), Duration::from_millis(50))
                    .0
                    .as_millis()
            })
            .collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1600, 3200, 5000]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        b.on_exit(t0, Duration::from_millis(1));
        b.on_exit(t0, Duration::from_millis(1));
        let (d, _) = b.on_exit(t0 + Duration::from_secs(100), STABLE_RUN);
        assert_eq!(d, Duration::ZERO);
    }

    #[test]
    fn five_restarts_in_a_minute_is_flapping_and_spread_out_is_not() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let flags: Vec<bool> = (0..6)
            .map(|i| {
                b.on_exit(t0 + Duration::from_secs(i), Duration::from_millis(1))
                    .1
            })
            .collect();
        assert_eq!(flags, vec![false, false, false, false, true, true]);
        let mut b = Backoff::default();
        let spread = (0..10).any(|i| {
            b.on_exit(t0 + Duration::from_secs(20 * i), Duration::from_millis(1))
                .1
        });
        assert!(!spread);
    }
}
