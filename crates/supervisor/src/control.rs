//! The control socket: line-delimited JSON on a Unix stream socket, the API `tandemctl`
//! speaks (documented in `docs/control-api.md`).
//!
//! Owns the socket (bind, permissions, bounds), who may ask what, the request dispatch and
//! the caller's identity (SO_PEERCRED user, recorded as a commit's author).
//!
//! Access ([`crate::access`]): root and group `tandem-admin` get every command, group
//! `tandem-monitor` the read commands ([`READ_COMMANDS`]), anyone else a refusal line and a
//! closed connection. The socket itself is mode 0666: the credentials, not the file mode,
//! decide, so every caller gets an answer that says why.
//!
//! Bounds, so idle or slow clients cannot starve the operator: a request line must arrive
//! whole within [`REQUEST_DEADLINE`] of the connection (or of the previous reply), else the
//! connection is closed; a reply that cannot be written within [`WRITE_DEADLINE`] closes it;
//! [`MAX_CLIENTS`] connections at once, of which one user other than root holds at most
//! [`MAX_PER_USER`], plus [`ADMIN_RESERVED`] more that only admins (root, `tandem-admin`)
//! get; [`MAX_LINE`] bytes per request.
//! Must not implement any command itself: every command is a `Core` method.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{Instrument, debug, info_span, warn};

use tandem_control::supervisor::{Envelope, Request};

use crate::access::{self, Access, Groups, Peer};
use crate::core::{Core, Failure};

/// Concurrent control connections of any authorized caller.
pub const MAX_CLIENTS: usize = 16;
/// Connections beyond [`MAX_CLIENTS`] that only admins get: a flood of read-only or idle
/// clients never locks the operator out.
pub const ADMIN_RESERVED: usize = 4;
/// Concurrent connections of one user other than root.
pub const MAX_PER_USER: usize = 8;
/// Longest request line, in bytes (a 1 MiB config as a JSON string, escaped).
pub const MAX_LINE: usize = 4 << 20;
/// A request line must arrive whole within this after the connection opened or the
/// previous reply was sent (`tandemctl` opens one connection per request).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A reply must be written within this (a client that does not read is dropped).
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Default `limit` of `history`.
const DEFAULT_HISTORY: usize = 20;
/// Default `lines` of `logs`.
const DEFAULT_LOG_LINES: usize = 50;

/// The commands, for the "unknown command" hint (`tandem_control::supervisor`).
pub const COMMANDS: &[&str] = tandem_control::supervisor::COMMANDS;

/// The commands a monitor-group caller may use: they change nothing.
pub const READ_COMMANDS: &[&str] = tandem_control::supervisor::READ_COMMANDS;

/// Binds the control socket at `path` (replacing a stale one), mode 0666 (see the module
/// docs: SO_PEERCRED decides).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// The connection table: how many are open, in all and per user.
#[derive(Debug, Default)]
struct Slots {
    total: usize,
    per_user: HashMap<u32, usize>,
}

/// A held slot; given back when the connection ends.
struct Slot {
    slots: Arc<Mutex<Slots>>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = crate::core::lock(&self.slots);
        s.total -= 1;
        if let Some(n) = s.per_user.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                s.per_user.remove(&self.uid);
            }
        }
    }
}

/// Takes a slot for `peer` with `access`, or says why not.
fn take_slot(slots: &Arc<Mutex<Slots>>, peer: &Peer, access: Access) -> Result<Slot, Failure> {
    let mut s = crate::core::lock(slots);
    let limit = match access {
        Access::Admin => MAX_CLIENTS + ADMIN_RESERVED,
        Access::Monitor => MAX_CLIENTS,
    };
    if s.total >= limit {
        return Err(Failure::new(
            format!("too many control connections ({} open)", s.total),
            "close another tandemctl session and retry",
        ));
    }
    let mine = s.per_user.get(&peer.uid).copied().unwrap_or(0);
    if peer.uid != 0 && mine >= MAX_PER_USER {
        return Err(Failure::new(
            format!(
                "too many control connections of {} ({mine} open, at most {MAX_PER_USER})",
                peer.name
            ),
            "close another tandemctl session and retry",
        ));
    }
    s.total += 1;
    *s.per_user.entry(peer.uid).or_default() += 1;
    Ok(Slot {
        slots: Arc::clone(slots),
        uid: peer.uid,
    })
}

/// Writes one reply line to a connection that is not served, bounded, and closes it.
async fn refuse(mut stream: UnixStream, reply: Value) {
    let _ = tokio::time::timeout(
        WRITE_DEADLINE,
        stream.write_all(format!("{reply}\n").as_bytes()),
    )
    .await;
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: UnixListener, core: Arc<Core>) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    let groups = core.opts.access_groups.clone();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(cause = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match access::peer_of(&stream) {
            Ok(p) => p,
            Err(e) => {
                warn!(cause = %e, "control connection without credentials, refused");
                continue;
            }
        };
        let access = match access::check(&peer, &groups) {
            Ok(a) => a,
            Err(denied) => {
                warn!(user = %peer.name, uid = peer.uid, pid = peer.pid, "control connection refused: not authorized");
                let f = Failure::new(
                    denied,
                    format!(
                        "ask an administrator to add the user to group {} (read-only: {})",
                        groups.admin, groups.monitor
                    ),
                );
                tokio::spawn(refuse(stream, f.to_json()));
                continue;
            }
        };
        let slot = match take_slot(&slots, &peer, access) {
            Ok(s) => s,
            Err(f) => {
                warn!(user = %peer.name, error = %f.error, "control connection refused");
                tokio::spawn(refuse(stream, f.to_json()));
                continue;
            }
        };
        let core = Arc::clone(&core);
        let span = info_span!("control", user = %peer.name);
        let groups = groups.clone();
        tokio::spawn(
            async move {
                if let Err(e) = connection(stream, &core, &peer, access, &groups).await {
                    debug!(cause = %e, "control connection ended");
                }
                drop(slot);
            }
            .instrument(span),
        );
    }
}

async fn connection(
    stream: UnixStream,
    core: &Arc<Core>,
    peer: &Peer,
    access: Access,
    groups: &Groups,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut buf = Vec::new();
        let n = match tokio::time::timeout(
            REQUEST_DEADLINE,
            (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf),
        )
        .await
        {
            Err(_) => {
                debug!(
                    deadline_s = REQUEST_DEADLINE.as_secs(),
                    "no complete request in time, closing"
                );
                return Ok(());
            }
            Ok(Ok(0)) => return Ok(()),
            Ok(r) => r?,
        };
        if n > MAX_LINE {
            let f = Failure::new(
                format!("request longer than {MAX_LINE} bytes"),
                "send a smaller configuration",
            );
            write_reply(&mut write, &f.to_json()).await?;
            return Ok(());
        }
        let reply = match serde_json::from_slice::<Value>(&buf) {
            Ok(req) => {
                let req = Envelope::from_value(&req);
                if access == Access::Monitor && !req.request.is_read() {
                    Failure::new(
                        access::read_only(peer, req.request.cmd(), groups, READ_COMMANDS),
                        format!("run it as root or as a member of group {}", groups.admin),
                    )
                    .to_json()
                } else {
                    dispatch(core, &req, &peer.name).await
                }
            }
            Err(e) => Failure::new(
                format!("malformed request: {e}"),
                "send one JSON object per line, e.g. {\"cmd\":\"status\"}",
            )
            .to_json(),
        };
        write_reply(&mut write, &reply).await?;
    }
}

/// Writes one reply line within [`WRITE_DEADLINE`].
async fn write_reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Value,
) -> std::io::Result<()> {
    tokio::time::timeout(
        WRITE_DEADLINE,
        write.write_all(format!("{reply}\n").as_bytes()),
    )
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client does not read its reply",
        ))
    })
}

/// `sync_pair`'s optional `peer_name` + `peer_address` (+ `local_address`): where the peer is
/// while this node has no configuration.
fn sync_bootstrap(
    name: Option<String>,
    peer: Option<String>,
    local: Option<String>,
) -> Result<Option<crate::sync::Bootstrap>, Failure> {
    let hint = "give `peer_name`, `peer_address` and `local_address` together (IP or IP:PORT, port 7400 by default)";
    match (name, peer, local) {
        (None, None, None) => Ok(None),
        (Some(name), Some(peer), Some(local)) => {
            let remote =
                crate::sync::parse_sync_address(&peer).map_err(|e| Failure::new(e, hint))?;
            let local =
                crate::sync::parse_sync_address(&local).map_err(|e| Failure::new(e, hint))?;
            Ok(Some(crate::sync::Bootstrap {
                peer: name,
                local,
                remote,
            }))
        }
        _ => Err(Failure::new("incomplete peer address for pairing", hint)),
    }
}

/// Runs one request; the reply always has `ok`.
pub async fn dispatch(core: &Arc<Core>, req: &Envelope, user: &str) -> Value {
    // Only root may commit on behalf of someone else (e.g. a web UI acting for its user).
    let author = match &req.author {
        Some(a) if user == "root" => a.clone(),
        _ => user.to_owned(),
    };
    let comment = req.comment.clone().unwrap_or_default();
    let result = match req.request.clone() {
        Request::Status => core.status(),
        Request::History { limit } => {
            core.history(limit.map_or(DEFAULT_HISTORY, |n| n.min(1000) as usize))
        }
        Request::ShowConfig { generation } => core.show_config(generation),
        Request::CandidateGet => core.candidate_get(),
        Request::CandidateSet { text } => match text {
            Some(t) => core.candidate_set(&t),
            None => Err(Failure::new(
                "candidate_set needs `text`",
                "send the configuration text",
            )),
        },
        Request::CandidateClear => core.candidate_clear(),
        Request::Validate { text } => core.validate(text),
        Request::Diff { text, generation } => core.diff(text, generation),
        Request::Commit { text, confirm_ms } => {
            core.commit(text, &author, &comment, confirm_ms).await
        }
        Request::Confirm => core.confirm().await,
        Request::Rollback { generation } => match generation {
            Some(n) => core.rollback(n, &author, &comment).await,
            None => Err(Failure::new(
                "rollback needs `generation`",
                "`show history` lists them",
            )),
        },
        Request::ShowServers { backend } => core.show_servers(backend.as_deref()).await,
        Request::ShowStats => core.show_stats().await,
        Request::ShowTraffic { target, last } => {
            core.show_traffic(target.as_deref(), last.as_deref())
        }
        Request::Server {
            backend,
            server,
            action,
            weight,
        } => {
            core.server(
                backend.as_deref(),
                server.as_deref(),
                action.as_deref(),
                weight,
            )
            .await
        }
        Request::Failover { instance } => core.failover(instance.as_deref()).await,
        Request::Maintenance { on } => match on {
            Some(on) => core.maintenance(on, &author).await,
            None => Err(Failure::new(
                "maintenance needs `on` (true or false)",
                "`maintenance on` or `maintenance off`",
            )),
        },
        Request::SyncStatus => core.sync_status(),
        Request::SyncPair {
            peer_fingerprint,
            peer_name,
            peer_address,
            local_address,
        } => match sync_bootstrap(peer_name, peer_address, local_address) {
            Ok(b) => core.sync_pair(peer_fingerprint.as_deref(), b),
            Err(f) => Err(f),
        },
        Request::SyncResolve { side } => match side {
            Some(side) => core.sync_resolve(&side, &author).await,
            None => Err(Failure::new(
                "sync_resolve needs `side` (use-local or use-peer)",
                "`sync resolve use-local` keeps this node's configuration, `use-peer` takes the peer's",
            )),
        },
        Request::Logs { service, lines } => core.logs(
            service.as_deref(),
            lines.map_or(DEFAULT_LOG_LINES, |n| n as usize),
        ),
        Request::Unknown(other) => Err(Failure::new(
            format!("unknown command `{other}`"),
            format!("known commands: {}", COMMANDS.join(", ")),
        )),
    };
    match result {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.insert("ok".into(), Value::Bool(true));
                v
            } else {
                json!({"ok": true, "value": v})
            }
        }
        Err(f) => f.to_json(),
    }
}
