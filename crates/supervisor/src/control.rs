//! The control socket: line-delimited JSON on a Unix stream socket, the API `tandemctl`
//! speaks (documented in `docs/control-api.md`).
//!
//! Owns the socket (bind, permissions, bounds: [`MAX_CLIENTS`] connections, [`MAX_LINE`]
//! bytes per request, [`IDLE_TIMEOUT`] between requests), the request dispatch and the
//! caller's identity (SO_PEERCRED user, recorded as a commit's author).
//! Must not implement any command itself: every command is a `Core` method.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info_span, warn};

use crate::core::{Core, Failure};

/// Concurrent control connections.
pub const MAX_CLIENTS: usize = 16;
/// Longest request line, in bytes (a 1 MiB config as a JSON string, escaped).
pub const MAX_LINE: usize = 4 << 20;
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `limit` of `history`.
const DEFAULT_HISTORY: usize = 20;
/// Default `lines` of `logs`.
const DEFAULT_LOG_LINES: usize = 50;

/// The commands, for the "unknown command" hint.
pub const COMMANDS: &[&str] = &[
    "status",
    "sync_status",
    "sync_pair",
    "sync_resolve",
    "history",
    "show_config",
    "show_servers",
    "show_stats",
    "candidate_get",
    "candidate_set",
    "candidate_clear",
    "validate",
    "diff",
    "commit",
    "confirm",
    "rollback",
    "server",
    "failover",
    "maintenance",
    "logs",
];

/// Binds the control socket at `path` (replacing a stale one), mode 0660.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    // Root and the tandem group (operators' logins) may talk to the supervisor.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: UnixListener, core: Arc<Core>) {
    let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(cause = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            let mut stream = stream;
            let busy = Failure::new(
                "too many control connections",
                "close another tandemctl session and retry",
            )
            .to_json();
            let _ = stream.write_all(format!("{busy}\n").as_bytes()).await;
            continue;
        };
        let core = Arc::clone(&core);
        let user = peer_user(&stream);
        let span = info_span!("control", user = %user);
        tokio::spawn(
            async move {
                if let Err(e) = connection(stream, &core, &user).await {
                    debug!(cause = %e, "control connection ended");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// The login name of the peer process (SO_PEERCRED), or `uid N`.
fn peer_user(stream: &UnixStream) -> String {
    let Ok(cred) = stream.peer_cred() else {
        return "unknown".into();
    };
    let uid = cred.uid();
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

async fn connection(stream: UnixStream, core: &Arc<Core>, user: &str) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut buf = Vec::new();
        let n = match tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf),
        )
        .await
        {
            Err(_) | Ok(Ok(0)) => return Ok(()),
            Ok(r) => r?,
        };
        if n > MAX_LINE {
            let f = Failure::new(
                format!("request longer than {MAX_LINE} bytes"),
                "send a smaller configuration",
            );
            write
                .write_all(format!("{}\n", f.to_json()).as_bytes())
                .await?;
            return Ok(());
        }
        let reply = match serde_json::from_slice::<Value>(&buf) {
            Ok(req) => dispatch(core, &req, user).await,
            Err(e) => Failure::new(
                format!("malformed request: {e}"),
                "send one JSON object per line, e.g. {\"cmd\":\"status\"}",
            )
            .to_json(),
        };
        write.write_all(format!("{reply}\n").as_bytes()).await?;
    }
}

fn str_field(req: &Value, key: &str) -> Option<String> {
    req.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// `sync_pair`'s optional `peer_name` + `peer_address` (+ `local_address`): where the peer is
/// while this node has no configuration.
fn sync_bootstrap(req: &Value) -> Result<Option<crate::sync::Bootstrap>, Failure> {
    let hint = "give `peer_name`, `peer_address` and `local_address` together (IP or IP:PORT, port 7400 by default)";
    let (name, peer, local) = (
        str_field(req, "peer_name"),
        str_field(req, "peer_address"),
        str_field(req, "local_address"),
    );
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

fn u64_field(req: &Value, key: &str) -> Option<u64> {
    req.get(key).and_then(Value::as_u64)
}

/// Runs one request; the reply always has `ok`.
pub async fn dispatch(core: &Arc<Core>, req: &Value, user: &str) -> Value {
    let cmd = req.get("cmd").and_then(Value::as_str).unwrap_or("");
    // Only root may commit on behalf of someone else (e.g. a web UI acting for its user).
    let author = match str_field(req, "author") {
        Some(a) if user == "root" => a,
        _ => user.to_owned(),
    };
    let comment = str_field(req, "comment").unwrap_or_default();
    let result = match cmd {
        "status" => core.status(),
        "history" => {
            core.history(u64_field(req, "limit").map_or(DEFAULT_HISTORY, |n| n.min(1000) as usize))
        }
        "show_config" => core.show_config(u64_field(req, "generation")),
        "candidate_get" => core.candidate_get(),
        "candidate_set" => match str_field(req, "text") {
            Some(t) => core.candidate_set(&t),
            None => Err(Failure::new(
                "candidate_set needs `text`",
                "send the configuration text",
            )),
        },
        "candidate_clear" => core.candidate_clear(),
        "validate" => core.validate(str_field(req, "text")),
        "diff" => core.diff(str_field(req, "text"), u64_field(req, "generation")),
        "commit" => {
            core.commit(
                str_field(req, "text"),
                &author,
                &comment,
                u64_field(req, "confirm_ms"),
            )
            .await
        }
        "confirm" => core.confirm().await,
        "rollback" => match u64_field(req, "generation") {
            Some(n) => core.rollback(n, &author, &comment).await,
            None => Err(Failure::new(
                "rollback needs `generation`",
                "`show history` lists them",
            )),
        },
        "show_servers" => {
            core.show_servers(str_field(req, "backend").as_deref())
                .await
        }
        "show_stats" => core.show_stats().await,
        "server" => core.server(req).await,
        "failover" => core.failover(str_field(req, "instance").as_deref()).await,
        "maintenance" => match req.get("on").and_then(Value::as_bool) {
            Some(on) => core.maintenance(on, &author).await,
            None => Err(Failure::new(
                "maintenance needs `on` (true or false)",
                "`maintenance on` or `maintenance off`",
            )),
        },
        "sync_status" => core.sync_status(),
        "sync_pair" => match sync_bootstrap(req) {
            Ok(b) => core.sync_pair(str_field(req, "peer_fingerprint").as_deref(), b),
            Err(f) => Err(f),
        },
        "sync_resolve" => match str_field(req, "side") {
            Some(side) => core.sync_resolve(&side, &author).await,
            None => Err(Failure::new(
                "sync_resolve needs `side` (use-local or use-peer)",
                "`sync resolve use-local` keeps this node's configuration, `use-peer` takes the peer's",
            )),
        },
        "logs" => core.logs(
            str_field(req, "service").as_deref(),
            u64_field(req, "lines").map_or(DEFAULT_LOG_LINES, |n| n as usize),
        ),
        other => Err(Failure::new(
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
