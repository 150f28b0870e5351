//! The control socket: line-delimited JSON on a Unix stream socket, and the ordered event feed.
//!
//! # Protocol
//!
//! One JSON object per line in each direction. Requests:
//!
//! * `{"cmd":"status"}` → `{"ok":true,"node":"lb1","instances":[{...}]}`: per instance its
//!   state, base and effective priority, current master, whether VIPs are held, track state and
//!   counters (adverts sent/received/invalid, transitions, daemon-side errors).
//! * `{"cmd":"switchover"}` or `{"cmd":"switchover","instance":"www"}` → planned hand-over of
//!   every (or the named) instance this node is master of, through the state machine's
//!   switchover (priority-0 advert, VIPs removed, no preemption back for the switchover hold):
//!   `{"ok":true,"switched":["www"]}`, or `{"ok":false,"error":"..."}` when none applies.
//! * `{"cmd":"hold","instance":"www","ms":1000}` (instance optional: every instance) → stay
//!   Backup for `ms` milliseconds (1..=60000) through the state machine's `HoldBackup`: a master
//!   resigns (priority-0 advert, VIPs removed), a backup does not take over before the hold
//!   ends, adverts are still processed. Sending it again refreshes the hold (the new end
//!   replaces the old one). Used by the supervisor's split-brain guard. Reply
//!   `{"ok":true,"held":["www"],"skipped":[]}`; `status` shows `hold_ms` (remaining).
//! * `{"cmd":"release"}` or `{"cmd":"release","instance":"www"}` → ends a hold early; the
//!   instance is a plain backup again (takes over within Master_Down_Interval when no adverts
//!   arrive): `{"ok":true,"released":["www"],"skipped":[...]}`.
//! * `{"cmd":"announce"}` or `{"cmd":"announce","instance":"www"}` → a master sends a fresh
//!   burst of gratuitous ARP / unsolicited NA for its VIPs (the split-brain guard's winner
//!   does, once the other node gave them up, so clients that followed the other node's
//!   announcements come back): `{"ok":true,"announced":["www"],"skipped":[...]}`.
//! * `{"cmd":"watch"}` → `{"ok":true,"watching":true}`, then one line per event, in order,
//!   until the client disconnects: `{"event":"state","seq":7,"ts_ms":1732262400123,
//!   "instance":"www","vrid":51,"interface":"eth1","from":"backup","to":"master",
//!   "reason":"master_down"}`; `"event":"resync"` when a resumed daemon reinstalled its VIPs;
//!   `"event":"lagged","missed":N` if the client read too slowly and events were dropped.
//!
//! Unknown commands and malformed lines get `{"ok":false,"error":"..."}` and the connection
//! stays open.
//!
//! # Access and bounds
//!
//! The caller's credentials (SO_PEERCRED) decide, not the file mode (0666): root and group
//! `tandem-admin` get every command, group `tandem-monitor` the reads (`status`, `watch`),
//! anyone else one refusal line and a closed connection ([`Policy`]; the same rules as the
//! supervisor's control socket, `crates/supervisor/src/access.rs`). A request line must arrive
//! whole within [`REQUEST_DEADLINE`] of the connection or of the previous reply (a watcher
//! sends nothing more and is not timed out); a reply or event the client does not read within
//! [`WRITE_DEADLINE`] closes the connection. [`MAX_CLIENTS`] connections at once, plus
//! [`RESERVED`] that only the supervisor gets (the daemon's parent process, [`Policy`]): its
//! 250 ms status poll, the maintenance hold and the split-brain guard must get through however
//! many other clients there are. [`MAX_LINE`] bytes per request, [`EVENT_BUFFER`] events
//! buffered per watcher.
//!
//! The wire shapes (requests, replies, [`Event`]) and the access policy are
//! `tandem_control::vrrp` and `tandem_control::access`, shared with the supervisor, its
//! client.
//!
//! Owns the socket server, who may use it ([`Policy`]) and the event publisher ([`Events`]).
//! Must not run the protocol: it talks to instance tasks only through their command channels
//! and status snapshots.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
#[cfg(test)]
use serde_json::json;
use tandem_control::access::{self, Access, Groups, Peer, Wording};
use tandem_control::vrrp::{Applied, FanOut, Lagged, Request, Status, Watching};
use tandem_control::{Failure, Reply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::Error;

/// Concurrent control connections of clients other than the supervisor.
pub const MAX_CLIENTS: usize = 16;
/// Connections beyond [`MAX_CLIENTS`] only the supervisor gets.
pub const RESERVED: usize = 4;
/// A request line must arrive whole within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A reply or an event must be written within this.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// The commands of the read-only group.
pub const READ_COMMANDS: &[&str] = tandem_control::vrrp::READ_COMMANDS;
/// Longest request line, in bytes.
pub const MAX_LINE: u64 = 4096;
/// Events buffered per watcher before it is told it lagged.
pub const EVENT_BUFFER: usize = 256;
/// How long a request waits for an instance task to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// One published event (`tandem_control::vrrp::Event`).
pub use tandem_control::vrrp::Event;

/// The ordered event publisher shared by all instances.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Serialises numbering and sending, so `seq` order is delivery order.
    seq: Mutex<u64>,
}

impl Events {
    /// A publisher with no subscribers yet.
    pub fn new() -> Events {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        Events {
            tx,
            seq: Mutex::new(0),
        }
    }

    /// Numbers, timestamps and publishes `event` (its `seq` and `ts_ms` are overwritten).
    pub fn publish(&self, mut event: Event) {
        // A poisoned lock only means another publisher panicked mid-send; the counter is intact.
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        *seq += 1;
        event.seq = *seq;
        event.ts_ms = unix_ms();
        // No subscriber is fine: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// A new subscription that sees every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A request from the control socket to one instance task.
#[derive(Debug)]
pub enum InstanceRequest {
    /// Hand mastership over; the reply says whether it applied.
    Switchover(oneshot::Sender<Result<(), String>>),
    /// Stay backup for this long (split-brain guard); refreshes a running hold.
    Hold(Duration, oneshot::Sender<Result<(), String>>),
    /// End a hold early.
    Release(oneshot::Sender<Result<(), String>>),
    /// Re-announce the VIPs (gratuitous ARP / unsolicited NA burst) when master.
    Announce(oneshot::Sender<Result<(), String>>),
}

/// Longest hold accepted on the control socket.
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// What the control server knows about one instance.
#[derive(Clone, Debug)]
pub struct InstanceHandle {
    /// Instance name.
    pub name: String,
    /// Latest status snapshot (JSON), written by the instance task after every step.
    pub status: Arc<Mutex<Value>>,
    /// Requests to the instance task.
    pub requests: mpsc::Sender<InstanceRequest>,
}

/// Everything the server needs.
#[derive(Debug)]
pub struct ControlState {
    /// This node's name.
    pub node: String,
    /// The instances, in config order.
    pub instances: Vec<InstanceHandle>,
    /// The event feed.
    pub events: Arc<Events>,
}

/// Who may use the control socket (module docs).
#[derive(Clone, Debug)]
pub struct Policy {
    /// The group of full access (besides root).
    pub admin_group: String,
    /// The group of read-only access.
    pub monitor_group: String,
    /// The process whose connections use the [`RESERVED`] slots: the supervisor, which
    /// started this daemon (its parent); `None` reserves nothing.
    pub reserved_pid: Option<u32>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            admin_group: "tandem-admin".into(),
            monitor_group: "tandem-monitor".into(),
            reserved_pid: u32::try_from(nix::unistd::getppid().as_raw()).ok(),
        }
    }
}

impl Policy {
    fn groups(&self) -> Groups {
        Groups {
            admin: self.admin_group.clone(),
            monitor: self.monitor_group.clone(),
        }
    }
}

/// The caller on `stream`: name, pid, and its access, or the refusal (groups resolved now).
fn caller(stream: &UnixStream, policy: &Policy) -> (String, u32, Result<Access, String>) {
    let Ok(cred) = stream.peer_cred() else {
        return (
            "unknown".into(),
            0,
            Err("permission denied: the caller's credentials are unknown".into()),
        );
    };
    let peer = Peer::from_cred(cred.uid(), cred.gid(), cred.pid());
    let access = access::check(&peer, &policy.groups(), Wording::Short);
    (peer.name, peer.pid, access)
}

/// A failure reply.
fn fail(error: impl Into<String>) -> Value {
    Reply::<()>::Err(Failure::new(error)).to_value()
}

/// Writes `v` as one line within [`WRITE_DEADLINE`].
async fn write_bounded<W: tokio::io::AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    v: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    tokio::time::timeout(WRITE_DEADLINE, w.write_all(&line))
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client does not read",
            ))
        })
}

/// Binds the control socket at `path` (replacing a stale socket file) with mode 0666 (the
/// caller's credentials decide, see the module docs).
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let err = |source| Error::ControlSocket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

/// Serves connections until the task is aborted; removes nothing (the caller unlinks `path`).
pub async fn serve(listener: UnixListener, state: Arc<ControlState>, path: PathBuf) {
    serve_with(listener, state, path, Policy::default()).await;
}

/// [`serve`] with an explicit [`Policy`].
pub async fn serve_with(
    listener: UnixListener,
    state: Arc<ControlState>,
    path: PathBuf,
    policy: Policy,
) {
    let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
    let reserved = Arc::new(Semaphore::new(RESERVED));
    let mut failures: u64 = 0;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                warn!(path = %path.display(), cause = %e, failures, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (name, pid, access) = caller(&stream, &policy);
        let access = match access {
            Ok(a) => a,
            Err(denied) => {
                warn!(path = %path.display(), user = %name, pid, "control connection refused: not authorized");
                let mut s = stream;
                tokio::spawn(async move {
                    let _ = write_bounded(&mut s, &fail(denied)).await;
                });
                continue;
            }
        };
        // The supervisor first takes from its reserve, so other clients cannot starve it.
        let from_reserve = policy.reserved_pid.is_some_and(|p| p == pid);
        let permit = if from_reserve {
            Arc::clone(&reserved)
                .try_acquire_owned()
                .or_else(|_| Arc::clone(&permits).try_acquire_owned())
        } else {
            Arc::clone(&permits).try_acquire_owned()
        };
        let Ok(permit) = permit else {
            warn!(path = %path.display(), user = %name, pid, "too many control connections, refusing one");
            let mut s = stream;
            tokio::spawn(async move {
                let _ = write_bounded(
                    &mut s,
                    &fail(format!("too many connections ({MAX_CLIENTS} open)")),
                )
                .await;
            });
            continue;
        };
        let state = Arc::clone(&state);
        let groups = policy.groups();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, state, access, &name, &groups).await {
                debug!(cause = %e, "control connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn connection(
    stream: UnixStream,
    state: Arc<ControlState>,
    access: Access,
    name: &str,
    groups: &Groups,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = String::new();
        let n = match tokio::time::timeout(
            REQUEST_DEADLINE,
            (&mut read).take(MAX_LINE).read_line(&mut line),
        )
        .await
        {
            Err(_) => return Ok(()),
            Ok(r) => r?,
        };
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n as u64 >= MAX_LINE {
            write_json(&mut write, &fail("request line too long")).await?;
            return Ok(());
        }
        let request = match serde_json::from_str::<Value>(line.trim()) {
            Ok(v) => Request::from_value(&v),
            Err(e) => {
                write_json(&mut write, &fail(format!("malformed request: {e}"))).await?;
                continue;
            }
        };
        if access == Access::Monitor && !request.is_read() {
            let why = access::read_only_worded(
                name,
                request.cmd(),
                groups,
                READ_COMMANDS,
                Wording::Short,
            );
            write_json(&mut write, &fail(why)).await?;
            continue;
        }
        let reply = match request {
            Request::Status => status(&state),
            Request::Switchover { instance } => switchover(&state, instance.as_deref()).await,
            Request::Hold { instance, ms } => match ms {
                Some(ms) if ms >= 1 && ms <= MAX_HOLD.as_millis() as u64 => {
                    let d = Duration::from_millis(ms);
                    fan_out(&state, instance.as_deref(), (Applied::Held, "hold"), |tx| {
                        InstanceRequest::Hold(d, tx)
                    })
                    .await
                }
                _ => fail(format!("hold needs \"ms\": 1..={}", MAX_HOLD.as_millis())),
            },
            Request::Announce { instance } => {
                fan_out(
                    &state,
                    instance.as_deref(),
                    (Applied::Announced, "announce"),
                    InstanceRequest::Announce,
                )
                .await
            }
            Request::Release { instance } => {
                fan_out(
                    &state,
                    instance.as_deref(),
                    (Applied::Released, "release"),
                    InstanceRequest::Release,
                )
                .await
            }
            Request::Watch => {
                let mut rx = state.events.subscribe();
                write_json(
                    &mut write,
                    &Reply::Ok(Watching { watching: true }).to_value(),
                )
                .await?;
                loop {
                    match rx.recv().await {
                        // As declared, not through `Value` (see `Event`).
                        Ok(ev) => write_json(&mut write, &ev).await?,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            write_json(&mut write, &Lagged::new(missed)).await?;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    }
                }
            }
            Request::Unknown(other) => fail(format!(
                "unknown cmd `{other}`, expected status, switchover, hold, release, announce or watch"
            )),
        };
        write_json(&mut write, &reply).await?;
    }
}

fn status(state: &ControlState) -> Value {
    let instances: Vec<Value> = state
        .instances
        .iter()
        .map(|i| i.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .collect();
    Reply::Ok(Status {
        node: state.node.clone(),
        instances,
    })
    .to_value()
}

async fn switchover(state: &ControlState, only: Option<&str>) -> Value {
    fan_out(
        state,
        only,
        (Applied::Switched, "switch over"),
        InstanceRequest::Switchover,
    )
    .await
}

/// Sends one request to every (or the named) instance and collects the instances it applied to
/// (`key` puts them under the command's name); `verb` names the action in the error when it
/// applied to none.
async fn fan_out(
    state: &ControlState,
    only: Option<&str>,
    (key, verb): (fn(Vec<String>) -> Applied, &str),
    make: impl Fn(oneshot::Sender<Result<(), String>>) -> InstanceRequest,
) -> Value {
    if let Some(name) = only
        && !state.instances.iter().any(|i| i.name == name)
    {
        return fail(format!("no vrrp instance `{name}`"));
    }
    let mut switched = Vec::new();
    let mut errors = Vec::new();
    for inst in state
        .instances
        .iter()
        .filter(|i| only.is_none_or(|n| n == i.name))
    {
        let (tx, rx) = oneshot::channel();
        if inst.requests.send(make(tx)).await.is_err() {
            errors.push(format!("{}: instance task is gone", inst.name));
            continue;
        }
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => switched.push(inst.name.clone()),
            Ok(Ok(Err(e))) => errors.push(format!("{}: {e}", inst.name)),
            Ok(Err(_)) | Err(_) => errors.push(format!("{}: no answer", inst.name)),
        }
    }
    if switched.is_empty() {
        fail(format!("nothing to {verb}: {}", errors.join("; ")))
    } else {
        Reply::Ok(FanOut {
            applied: key(switched),
            skipped: errors,
        })
        .to_value()
    }
}

async fn write_json<T: Serialize>(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    v: &T,
) -> std::io::Result<()> {
    write_bounded(w, v).await
}

#[cfg(test)]
mod tests {
    //! The server on a temp socket with one fake instance; clients in child processes (this
    //! test binary re-executed, under `setpriv` for other users). Root only: skipped with a
    //! notice outside CI, fails in CI.

    use super::*;
    use std::io::{BufRead as _, BufReader as StdBufReader, Read as _, Write as _};
    use std::os::unix::net::UnixStream as StdStream;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    const CLIENT: &str = "TANDEM_VRRPD_TEST_CLIENT";
    const IDLE: &str = "TANDEM_VRRPD_TEST_IDLE";

    fn marked<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
        line.find(marker).map(|i| &line[i + marker.len()..])
    }

    /// Child: sends the request of `TANDEM_VRRPD_TEST_CLIENT` (`PATH\nJSON`), prints the reply.
    #[test]
    fn client_child() {
        let Ok(spec) = std::env::var(CLIENT) else {
            return;
        };
        let (path, req) = spec.split_once('\n').expect("PATH\\nJSON");
        let mut s = StdStream::connect(path).expect("connect");
        let _ = s.write_all(format!("{req}\n").as_bytes());
        let mut line = String::new();
        let _ = StdBufReader::new(&s).read_line(&mut line);
        println!("@@REPLY {}", line.trim());
    }

    /// Child: N idle connections to `TANDEM_VRRPD_TEST_IDLE` (`PATH N`); reports how many the
    /// server closed within 20 s.
    #[test]
    fn idle_child() {
        let Ok(spec) = std::env::var(IDLE) else {
            return;
        };
        let (path, n) = spec.rsplit_once(' ').expect("PATH N");
        let streams: Vec<StdStream> = (0..n.parse::<usize>().expect("N"))
            .map(|_| StdStream::connect(path).expect("connect"))
            .collect();
        println!("@@CONNECTED {}", streams.len());
        std::io::stdout().flush().unwrap();
        let t = Instant::now();
        let mut closed = 0;
        for mut s in streams {
            let left = Duration::from_secs(20).saturating_sub(t.elapsed());
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            if s.read_to_end(&mut Vec::new()).is_ok() {
                closed += 1;
            }
        }
        println!("@@CLOSED {closed}");
    }

    fn root_or_skip() -> bool {
        if nix::unistd::Uid::effective().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "the control access tests need root (setpriv); CI runs as root"
        );
        eprintln!("skipped: needs root (setpriv to other users); CI runs as root");
        false
    }

    fn gid(name: &str) -> u32 {
        nix::unistd::Group::from_name(name)
            .expect("group database")
            .expect("a Debian group")
            .gid
            .as_raw()
    }

    /// Removes a test's directory when dropped.
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The server with one instance `www` whose task accepts every request; its socket.
    fn server(tag: &str, policy: Policy) -> (PathBuf, TempDir) {
        let dir =
            std::env::temp_dir().join(format!("tandem-vrrpd-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vrrp.sock");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, mut rx) = mpsc::channel(16);
                tokio::spawn(async move {
                    while let Some(req) = rx.recv().await {
                        match req {
                            InstanceRequest::Switchover(r)
                            | InstanceRequest::Hold(_, r)
                            | InstanceRequest::Release(r)
                            | InstanceRequest::Announce(r) => {
                                let _ = r.send(Ok(()));
                            }
                        }
                    }
                });
                let state = Arc::new(ControlState {
                    node: "lb1".into(),
                    instances: vec![InstanceHandle {
                        name: "www".into(),
                        status: Arc::new(Mutex::new(json!({"name": "www", "state": "Master"}))),
                        requests: tx,
                    }],
                    events: Arc::new(Events::new()),
                });
                let listener = bind(&p).unwrap();
                ready_tx.send(()).unwrap();
                serve_with(listener, state, p, policy).await;
            });
        });
        ready_rx.recv().unwrap();
        (path, TempDir(dir))
    }

    /// This test binary, as `uid`/`gid` (+ `groups`) under setpriv, running test `name`.
    fn child(uid: u32, gid: u32, groups: &[u32], name: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"));
        if groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            let g: Vec<String> = groups.iter().map(u32::to_string).collect();
            c.arg(format!("--groups={}", g.join(",")));
        }
        c.arg("--").arg(std::env::current_exe().unwrap()).args([
            "--nocapture",
            "--test-threads",
            "1",
            "--exact",
            name,
        ]);
        c
    }

    fn ask_as(uid: u32, gid: u32, groups: &[u32], path: &Path, req: &str) -> Value {
        let out = child(uid, gid, groups, "control::tests::client_child")
            .env(CLIENT, format!("{}\n{req}", path.display()))
            .output()
            .expect("setpriv");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| marked(l, "@@REPLY "))
            .unwrap_or_else(|| panic!("no reply: {text}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn ask_here(path: &Path, req: &str) -> Value {
        let mut s = StdStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        StdBufReader::new(&s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn other_users_are_refused_monitors_read_admins_switch_over() {
        if !root_or_skip() {
            return;
        }
        let (path, _dir) = server(
            "access",
            Policy {
                admin_group: "daemon".into(),
                monitor_group: "nogroup".into(),
                reserved_pid: None,
            },
        );
        let (admin, monitor, other) = (gid("daemon"), gid("nogroup"), gid("bin"));
        let r = ask_as(65534, other, &[], &path, r#"{"cmd":"status"}"#);
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(
            r["error"],
            "permission denied: nobody (uid 65534) is not root and not in group daemon (full access) or nogroup (read-only)"
        );
        let r = ask_as(65534, monitor, &[], &path, r#"{"cmd":"status"}"#);
        assert_eq!(r["instances"][0]["name"], "www", "{r}");
        let r = ask_as(65534, monitor, &[], &path, r#"{"cmd":"switchover"}"#);
        assert_eq!(
            r["error"],
            "permission denied: `switchover` changes the node and needs group daemon or root; nobody has read-only access (status, watch)"
        );
        let r = ask_as(65534, other, &[admin], &path, r#"{"cmd":"switchover"}"#);
        assert_eq!(r["switched"][0], "www", "{r}");
        let r = ask_here(&path, r#"{"cmd":"hold","ms":1000}"#);
        assert_eq!(r["held"][0], "www", "root: {r}");
    }

    #[test]
    fn idle_clients_do_not_starve_the_supervisor_and_are_dropped() {
        if !root_or_skip() {
            return;
        }
        // This process plays the supervisor.
        let (path, _dir) = server(
            "idle",
            Policy {
                reserved_pid: Some(std::process::id()),
                ..Policy::default()
            },
        );
        let mut idle = Command::new(std::env::current_exe().unwrap())
            .args([
                "--nocapture",
                "--test-threads",
                "1",
                "--exact",
                "control::tests::idle_child",
            ])
            .env(IDLE, format!("{} 30", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = StdBufReader::new(idle.stdout.take().unwrap()).lines();
        assert!(
            lines
                .by_ref()
                .map_while(Result::ok)
                .any(|l| marked(&l, "@@CONNECTED ") == Some("30"))
        );
        // 30 idle root clients hold every shared slot; the supervisor's polls get through.
        for _ in 0..RESERVED + 2 {
            let r = ask_here(&path, r#"{"cmd":"status"}"#);
            assert_eq!(r["ok"], true, "{r}");
        }
        let closed = lines
            .map_while(Result::ok)
            .find_map(|l| marked(&l, "@@CLOSED ").map(str::to_owned));
        assert_eq!(closed.as_deref(), Some("30"), "idle connections kept");
        let _ = idle.wait();
    }
}
