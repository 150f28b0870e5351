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
//! stays open. Bounds: [`MAX_CLIENTS`] concurrent connections, [`MAX_LINE`] bytes per request,
//! [`EVENT_BUFFER`] events buffered per watcher.
//!
//! Owns the socket server, the [`Event`] type and its publisher ([`Events`]). Must not run the
//! protocol: it talks to instance tasks only through their command channels and status snapshots.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::Error;

/// Concurrent control connections.
pub const MAX_CLIENTS: usize = 16;
/// Longest request line, in bytes.
pub const MAX_LINE: u64 = 4096;
/// Events buffered per watcher before it is told it lagged.
pub const EVENT_BUFFER: usize = 256;
/// How long a request waits for an instance task to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// One published event.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// `state` or `resync`.
    pub event: &'static str,
    /// Position in the daemon's event order, from 1.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Instance name.
    pub instance: String,
    /// Its VRID.
    pub vrid: u8,
    /// Its interface.
    pub interface: String,
    /// Previous state (state events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// New state (state events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why, snake_case (`master_down`, `preempted`, `switchover`, ...).
    pub reason: String,
    /// Extra detail, e.g. who preempted us.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

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

/// Binds the control socket at `path` (replacing a stale socket file) with mode 0600.
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
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Serves connections until the task is aborted; removes nothing (the caller unlinks `path`).
pub async fn serve(listener: UnixListener, state: Arc<ControlState>, path: PathBuf) {
    let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
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
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            warn!(path = %path.display(), "too many control connections, refusing one");
            let mut s = stream;
            let _ = s
                .write_all(b"{\"ok\":false,\"error\":\"too many connections\"}\n")
                .await;
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, state).await {
                debug!(cause = %e, "control connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn connection(stream: UnixStream, state: Arc<ControlState>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = String::new();
        let n = (&mut read).take(MAX_LINE).read_line(&mut line).await?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n as u64 >= MAX_LINE {
            write_json(
                &mut write,
                &json!({"ok": false, "error": "request line too long"}),
            )
            .await?;
            return Ok(());
        }
        let request: Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(e) => {
                write_json(
                    &mut write,
                    &json!({"ok": false, "error": format!("malformed request: {e}")}),
                )
                .await?;
                continue;
            }
        };
        let cmd = request.get("cmd").and_then(Value::as_str).unwrap_or("");
        match cmd {
            "status" => write_json(&mut write, &status(&state)).await?,
            "switchover" => {
                let only = request.get("instance").and_then(Value::as_str);
                write_json(&mut write, &switchover(&state, only).await).await?;
            }
            "hold" => {
                let only = request.get("instance").and_then(Value::as_str);
                let reply = match request.get("ms").and_then(Value::as_u64) {
                    Some(ms) if ms >= 1 && ms <= MAX_HOLD.as_millis() as u64 => {
                        let d = Duration::from_millis(ms);
                        fan_out(&state, only, ("held", "hold"), |tx| {
                            InstanceRequest::Hold(d, tx)
                        })
                        .await
                    }
                    _ => {
                        json!({"ok": false, "error": format!("hold needs \"ms\": 1..={}", MAX_HOLD.as_millis())})
                    }
                };
                write_json(&mut write, &reply).await?;
            }
            "announce" => {
                let only = request.get("instance").and_then(Value::as_str);
                let reply = fan_out(
                    &state,
                    only,
                    ("announced", "announce"),
                    InstanceRequest::Announce,
                )
                .await;
                write_json(&mut write, &reply).await?;
            }
            "release" => {
                let only = request.get("instance").and_then(Value::as_str);
                let reply = fan_out(
                    &state,
                    only,
                    ("released", "release"),
                    InstanceRequest::Release,
                )
                .await;
                write_json(&mut write, &reply).await?;
            }
            "watch" => {
                let mut rx = state.events.subscribe();
                write_json(&mut write, &json!({"ok": true, "watching": true})).await?;
                loop {
                    match rx.recv().await {
                        Ok(ev) => write_json(&mut write, &ev).await?,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            write_json(&mut write, &json!({"event": "lagged", "missed": missed}))
                                .await?;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    }
                }
            }
            other => {
                write_json(
                    &mut write,
                    &json!({"ok": false, "error": format!("unknown cmd `{other}`, expected status, switchover, hold, release, announce or watch")}),
                )
                .await?;
            }
        }
    }
}

fn status(state: &ControlState) -> Value {
    let instances: Vec<Value> = state
        .instances
        .iter()
        .map(|i| i.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .collect();
    json!({"ok": true, "node": state.node, "instances": instances})
}

async fn switchover(state: &ControlState, only: Option<&str>) -> Value {
    fan_out(
        state,
        only,
        ("switched", "switch over"),
        InstanceRequest::Switchover,
    )
    .await
}

/// Sends one request to every (or the named) instance and collects the instances it applied to
/// under `key`; `verb` names the action in the error when it applied to none.
async fn fan_out(
    state: &ControlState,
    only: Option<&str>,
    (key, verb): (&str, &str),
    make: impl Fn(oneshot::Sender<Result<(), String>>) -> InstanceRequest,
) -> Value {
    if let Some(name) = only
        && !state.instances.iter().any(|i| i.name == name)
    {
        return json!({"ok": false, "error": format!("no vrrp instance `{name}`")});
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
        json!({"ok": false, "error": format!("nothing to {verb}: {}", errors.join("; "))})
    } else {
        json!({"ok": true, key: switched, "skipped": errors})
    }
}

async fn write_json<T: Serialize>(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    v: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}
