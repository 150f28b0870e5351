//! The runtime API: line-delimited JSON on a Unix socket (`runtime.socket`).
//!
//! Owns: the socket listener ([`spawn`]), the command protocol ([`execute`], documented in
//! `docs/runtime-api.md`): `show frontends|backends|servers`, `set server … state|weight`,
//! `reload`, `show persistence`, `import persistence`, `show rates`, `import rates`; and the
//! JSON views of live counters.
//! Does not own: the state it changes (`live`, through `ServerState::update`), how a reload
//! installs a plan (`proxy`), or where a reload reads its configuration ([`PlanSource`]).
//!
//! Access: by the peer's credentials (`SO_PEERCRED`, [`Access`]): root, the proxy's own user
//! and members of [`ADMIN_GROUP`] run every command, members of [`MONITOR_GROUP`] the read
//! commands (`show ...`); anyone else gets one error line and the connection closes.
//!
//! Bounds: at most [`MAX_CLIENTS`] sessions at once, a newcomer taking the place of the one
//! idle the longest (so idle clients never block a command), plus one reserved slot for a
//! single read command when every session is running one (the VRRP daemon's proxy probe is
//! one `show frontends` per connection); request lines of at most [`MAX_LINE_BYTES`];
//! [`IDLE_SECS`] of silence before a connection is closed; [`WRITE_SECS`] to read an answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
#[cfg(test)]
use serde_json::json;
use tandem_balance::{AdminState, Health, ServerId, StickEntry};
use tandem_control::access::{self, Access as Role, Peer};
use tandem_control::runtime::{
    self as wire, BackendInfo, Backends, Counter, Denied, FrontendInfo, Frontends, Imported,
    Persistence, RateEntry as RateEntryJson, RateLimit, Rates, RawRequest, Reloaded, Request,
    Responses, ServerInfo, ServerReply, Servers, StickEntry as EntryJson, StickEntryInfo,
};
use tandem_control::{Failure, Reply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::PlanSource;
use crate::live::{LiveBackend, ServerState, Snapshot};
use crate::metrics::{CLASSES, Counters, DENY_REASONS};
use crate::plan::Algorithm;
use crate::protect::{RateCounter, RateEntry, SourceTable};
use crate::proxy::Proxy;

/// Most API sessions open at once (plus one probe slot); a newcomer beyond them takes the
/// place of the session idle the longest.
pub const MAX_CLIENTS: usize = 8;
/// Longest request line, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Seconds of silence after which an API connection is closed.
pub const IDLE_SECS: u64 = 300;
/// Seconds a client may take to read an answer before the connection is dropped.
pub const WRITE_SECS: u64 = 10;
/// Seconds the reserved probe slot waits for its one request.
pub const PROBE_SECS: u64 = 2;

/// Why the API socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Something the proxy must not replace is at the socket path (left in place).
    #[error(transparent)]
    Occupied(crate::unix::ClaimError),
    /// Binding the Unix socket failed.
    #[error("failed to bind the runtime api socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Binding failed earlier (and was reported then).
    #[error("the runtime api socket could not be opened")]
    Unavailable,
}

/// A bound API socket, not yet served ([`bind`], then [`serve`]).
#[derive(Debug)]
pub struct Bound {
    /// Declared first: dropped (closed) before the path is released.
    listener: UnixListener,
    claimed: crate::unix::Claimed,
}

/// Permission bits of the API socket: anyone may connect; the peer's credentials decide
/// what it may do ([`Access`]), and a refused peer gets an error line saying why.
const SOCKET_MODE: u32 = 0o666;

/// Binds the API socket at `path`; a stale socket of this user that nothing listens on is
/// replaced, anything else at the path is refused and left alone (see `unix`).
pub fn bind(path: &Path) -> Result<Bound, ApiError> {
    match crate::unix::bind(path, SOCKET_MODE) {
        Ok((listener, claimed)) => Ok(Bound { listener, claimed }),
        Err(e @ crate::unix::ClaimError::Occupied { .. }) => Err(ApiError::Occupied(e)),
        Err(crate::unix::ClaimError::Bind { path, source }) => Err(ApiError::Bind { path, source }),
    }
}

/// A rate counter on the wire, relative to now.
fn counter_json(c: RateCounter) -> Counter {
    {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Counter {
            current: c.current,
            previous: c.previous,
            elapsed_ms: ms(c.elapsed),
            period_ms: ms(c.period),
        }
    }
}

/// A rate counter from the wire.
fn rate_counter(c: &Counter) -> RateCounter {
    RateCounter {
        current: c.current,
        previous: c.previous,
        elapsed: Duration::from_millis(c.elapsed_ms),
        period: Duration::from_millis(c.period_ms),
    }
}

/// Serves the API on `path` ([`bind`] then [`serve`]) until the task is aborted, with the
/// groups of [`Access::from_system`].
pub fn spawn(
    proxy: Proxy,
    path: &Path,
    source: Option<Arc<dyn PlanSource>>,
) -> Result<JoinHandle<()>, ApiError> {
    Ok(serve(proxy, bind(path)?, source, Access::from_system()))
}

/// Serves the API on a bound socket until the task is aborted, admitting peers by `access`;
/// the socket is unlinked when the task ends (if it is still this one).
pub fn serve(
    proxy: Proxy,
    bound: Bound,
    source: Option<Arc<dyn PlanSource>>,
    access: Access,
) -> JoinHandle<()> {
    let path = bound.claimed.path().to_owned();
    info!(socket = %path.display(), admin_gid = ?access.admin_gid, monitor_gid = ?access.monitor_gid,
        "runtime api listening");
    let span = info_span!("api", socket = %path.display());
    let access = Arc::new(access);
    let sessions = Arc::new(Sessions::default());
    tokio::spawn(
        async move {
            // Closed, then unlinked, when the task ends or is aborted.
            let listener = bound;
            loop {
                // Never waits for a slot: who may stay is decided per connection.
                let stream = match listener.listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        error!(cause = %e, "runtime api accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (proxy, source) = (proxy.clone(), source.clone());
                let (access, sessions) = (access.clone(), sessions.clone());
                tokio::spawn(
                    async move {
                        if let Err(e) =
                            connection(stream, &proxy, source.as_deref(), &access, &sessions).await
                        {
                            debug!(cause = %e, "runtime api connection ended with an error");
                        }
                    }
                    .in_current_span(),
                );
            }
        }
        .instrument(span),
    )
}

/// Group whose members (and root) may run every command.
pub const ADMIN_GROUP: &str = access::ADMIN_GROUP;
/// Group whose members may run the read commands (`show ...`).
pub const MONITOR_GROUP: &str = access::MONITOR_GROUP;

/// Who may use the API, by the peer's credentials (`SO_PEERCRED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Members of this group run every command; `None`: only root and the proxy's user.
    pub admin_gid: Option<u32>,
    /// Members of this group run the read commands; `None`: nobody by group.
    pub monitor_gid: Option<u32>,
    /// The proxy's own user, which runs every command (it can signal the proxy anyway).
    pub owner_uid: u32,
}

impl Access {
    /// [`ADMIN_GROUP`] and [`MONITOR_GROUP`] resolved now (at start); a group that does not
    /// exist admits nobody, so without `tandem-admin` only root (and the proxy's user) may
    /// change anything.
    pub fn from_system() -> Self {
        let gid = |name: &str| match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            Ok(None) => {
                info!(
                    group = name,
                    "runtime api group does not exist, nobody is admitted by it"
                );
                None
            }
            Err(e) => {
                warn!(group = name, cause = %e, "runtime api group lookup failed, nobody is admitted by it");
                None
            }
        };
        Access {
            admin_gid: gid(ADMIN_GROUP),
            monitor_gid: gid(MONITOR_GROUP),
            owner_uid: nix::unistd::geteuid().as_raw(),
        }
    }

    /// What the peer may do, or why it may not connect at all: root and the proxy's user
    /// run everything, the groups decide for the others (`tandem_control::access`).
    fn role(&self, cred: &tokio::net::unix::UCred) -> Result<Role, String> {
        let uid = cred.uid();
        if uid == 0 || uid == self.owner_uid {
            return Ok(Role::Admin);
        }
        let peer = Peer::from_cred(uid, cred.gid(), cred.pid());
        access::policy(&peer, self.admin_gid, self.monitor_gid).ok_or_else(|| {
            format!(
                "permission denied: uid {uid} is not root and not in group {ADMIN_GROUP} or {MONITOR_GROUP}"
            )
        })
    }
}

/// The open sessions, for the connection limit: at most [`MAX_CLIENTS`], the one idle the
/// longest making room for a newcomer, plus one probe slot.
#[derive(Debug, Default)]
struct Sessions {
    open: std::sync::Mutex<Vec<Entry>>,
    next: std::sync::atomic::AtomicU64,
    /// The reserved slot ([`probe`]) is in use.
    probing: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    /// Waiting for a request since then; `None` while a command runs or its answer is written.
    idle_since: Option<Instant>,
    /// Notified when a newcomer takes this session's place.
    evict: Arc<tokio::sync::Notify>,
}

/// A session's place in [`Sessions`]; released on drop.
struct Place<'a> {
    sessions: &'a Sessions,
    id: u64,
    evict: Arc<tokio::sync::Notify>,
}

impl Sessions {
    /// A place for a new session: a free one, else the one of the session idle the longest
    /// (which is told to close); `None` when every session is running a command.
    fn admit(&self) -> Option<Place<'_>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= MAX_CLIENTS {
            let oldest = open
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.idle_since.map(|t| (i, t)))
                .min_by_key(|&(_, t)| t)?
                .0;
            let gone = open.swap_remove(oldest);
            gone.evict.notify_one();
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evict = Arc::new(tokio::sync::Notify::new());
        open.push(Entry {
            id,
            idle_since: Some(Instant::now()),
            evict: evict.clone(),
        });
        Some(Place {
            sessions: self,
            id,
            evict,
        })
    }
}

impl Place<'_> {
    /// Marks the session idle (waiting for a request) or busy.
    fn set_idle(&self, idle: bool) {
        let mut open = self.sessions.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = open.iter_mut().find(|e| e.id == self.id) {
            e.idle_since = if idle {
                Some(e.idle_since.unwrap_or_else(Instant::now))
            } else {
                None
            };
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut open = self.sessions.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|e| e.id != self.id);
    }
}

/// Writes one response line within [`WRITE_SECS`] (a client that does not read is dropped).
async fn answer<W: AsyncWriteExt + Unpin>(wr: &mut W, out: &Value) -> std::io::Result<()> {
    let bytes = tandem_control::to_line(out);
    match tokio::time::timeout(Duration::from_secs(WRITE_SECS), wr.write_all(&bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "runtime api client did not read its answer",
        )),
    }
}

/// One accepted connection: who it is, then a session, the probe slot, or a refusal.
async fn connection(
    stream: UnixStream,
    proxy: &Proxy,
    source: Option<&dyn PlanSource>,
    access: &Access,
    sessions: &Sessions,
) -> std::io::Result<()> {
    let role = match stream.peer_cred() {
        Ok(cred) => access.role(&cred),
        Err(e) => Err(format!(
            "permission denied: peer credentials unavailable: {e}"
        )),
    };
    let (rd, mut wr) = stream.into_split();
    let role = match role {
        Ok(r) => r,
        Err(why) => {
            debug!(reason = %why, "runtime api client refused");
            return answer(&mut wr, &fail(why)).await;
        }
    };
    let rd = BufReader::new(rd);
    if let Some(place) = sessions.admit() {
        return session(rd, wr, proxy, source, role, &place).await;
    }
    // Every session is running a command: the reserved slot takes one read request.
    if !sessions
        .probing
        .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        let r = probe(rd, &mut wr, proxy).await;
        sessions
            .probing
            .store(false, std::sync::atomic::Ordering::Release);
        return r;
    }
    answer(
        &mut wr,
        &fail(format!(
            "too many runtime api connections ({MAX_CLIENTS} running commands), try again"
        )),
    )
    .await
}

/// Reads one request line (at most [`MAX_LINE_BYTES`]); `None` at the end of the stream.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    rd: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<()>> {
    line.clear();
    let n = rd
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', line)
        .await?;
    Ok((n > 0).then_some(()))
}

/// The reserved slot: one read request within [`PROBE_SECS`], then the connection closes.
async fn probe<R: AsyncBufReadExt + Unpin, W: AsyncWriteExt + Unpin>(
    mut rd: R,
    wr: &mut W,
    proxy: &Proxy,
) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(64);
    let read = tokio::time::timeout(
        Duration::from_secs(PROBE_SECS),
        read_line(&mut rd, &mut line),
    );
    let Ok(Ok(Some(()))) = read.await else {
        return Ok(());
    };
    let out = match serde_json::from_slice::<RawRequest>(&line) {
        Ok(c) if c.is_read_only() && line.len() <= MAX_LINE_BYTES => {
            execute(proxy, None, &line).await
        }
        _ => fail(format!(
            "too many runtime api connections ({MAX_CLIENTS} running commands): only one show command is served now"
        )),
    };
    answer(wr, &out).await
}

async fn session<R: AsyncBufReadExt + Unpin, W: AsyncWriteExt + Unpin>(
    mut rd: R,
    mut wr: W,
    proxy: &Proxy,
    source: Option<&dyn PlanSource>,
    role: Role,
    place: &Place<'_>,
) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(256);
    loop {
        place.set_idle(true);
        let read = tokio::time::timeout(
            Duration::from_secs(IDLE_SECS),
            read_line(&mut rd, &mut line),
        );
        let got = tokio::select! {
            r = read => r,
            () = place.evict.notified() => {
                let why = "closed: a new runtime api connection took the place of this idle one";
                let _ = answer(&mut wr, &fail(why)).await;
                return Ok(());
            }
        };
        match got {
            Err(_) | Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Some(()))) => {}
        }
        place.set_idle(false);
        let too_long = line.len() > MAX_LINE_BYTES;
        let out = if too_long {
            fail(format!("request line longer than {MAX_LINE_BYTES} bytes"))
        } else if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        } else {
            match (role, serde_json::from_slice::<RawRequest>(&line)) {
                (Role::Monitor, Ok(c)) if !c.is_read_only() => fail(format!(
                    "permission denied: {:?} needs root or group {ADMIN_GROUP}; group {MONITOR_GROUP} may only run show commands",
                    c.cmd
                )),
                _ => execute(proxy, source, &line).await,
            }
        };
        answer(&mut wr, &out).await?;
        if too_long {
            return Ok(());
        }
    }
}

fn fail(msg: impl Into<String>) -> Value {
    Reply::<()>::Err(Failure::new(msg)).to_value()
}

/// A successful reply as sent.
fn ok<T: serde::Serialize>(data: T) -> Result<Value, String> {
    Ok(Reply::Ok(data).to_value())
}

/// Runs one request line and returns the response object.
pub async fn execute(proxy: &Proxy, source: Option<&dyn PlanSource>, line: &[u8]) -> Value {
    let request = match serde_json::from_slice::<RawRequest>(line) {
        Ok(raw) => Request::try_from(raw),
        Err(e) => return fail(format!("invalid request: {e}")),
    };
    let request = match request {
        Ok(r) => r,
        Err(unknown) => return fail(unknown),
    };
    let snap = proxy.snapshot();
    let res = match request {
        Request::ShowFrontends => ok(Frontends {
            frontends: show_frontends(&snap),
        }),
        Request::ShowBackends => ok(Backends {
            backends: show_backends(&snap),
        }),
        Request::ShowServers { backend } => {
            show_servers(&snap, backend.as_deref()).and_then(|servers| ok(Servers { servers }))
        }
        Request::SetServer {
            server,
            state,
            weight,
        } => set_server(&snap, server.as_deref(), state.as_deref(), weight).and_then(ok),
        Request::Reload => match source {
            None => Err("reload is not available: the proxy has no configuration source".into()),
            Some(src) => {
                let reloaded = match src.load() {
                    Err(e) => Err(e.to_string()),
                    Ok(plan) => proxy.reload(plan).await.map_err(|e| e.to_string()),
                };
                match reloaded {
                    Ok(generation) => {
                        info!(generation, "reloaded from the runtime api");
                        ok(Reloaded { generation })
                    }
                    Err(e) => {
                        // As on SIGHUP: the supervisor reloads through here, its log shows it.
                        error!(cause = %e, "reload refused, previous configuration keeps serving");
                        Err(format!("reload refused: {e}"))
                    }
                }
            }
        },
        Request::ShowPersistence { backend } => {
            show_persistence(&snap, backend.as_deref()).and_then(ok)
        }
        Request::ImportPersistence { backend, entries } => {
            import_persistence(&snap, backend.as_deref(), &entries).and_then(ok)
        }
        Request::ShowRates { frontend } => show_rates(&snap, frontend.as_deref()).and_then(ok),
        Request::ImportRates { frontend, entries } => {
            import_rates(&snap, frontend.as_deref(), &entries).and_then(ok)
        }
    };
    res.unwrap_or_else(fail)
}

/// Responses by class, in the order of [`CLASSES`].
fn classes(c: &Counters) -> Responses {
    const _: () = assert!(CLASSES.len() == 6 && DENY_REASONS.len() == 3);
    Responses::from_counts(c.statuses())
}

fn show_frontends(snap: &Snapshot) -> Vec<FrontendInfo> {
    use std::sync::atomic::Ordering::Relaxed;
    snap.plan
        .frontends()
        .iter()
        .zip(&snap.frontends)
        .map(|(f, l)| {
            let c = &l.stats.counters;
            FrontendInfo {
                name: f.name.clone(),
                mode: format!("{:?}", f.mode).to_lowercase(),
                binds: f.binds.iter().map(ToString::to_string).collect(),
                sessions_current: u64::from(l.stats.current.load(Relaxed)),
                sessions_total: c.sessions_total.load(Relaxed),
                max_connections: f.max_connections,
                bytes_in: c.bytes_in.load(Relaxed),
                bytes_out: c.bytes_out.load(Relaxed),
                responses: classes(c),
                // In the order of DENY_REASONS.
                denied: Denied::from_counts(std::array::from_fn(|i| {
                    l.stats.denied[i].load(Relaxed)
                })),
            }
        })
        .collect()
}

fn algorithm(a: &Algorithm) -> String {
    match a {
        Algorithm::RoundRobin => "roundrobin".into(),
        Algorithm::LeastConn => "leastconn".into(),
        Algorithm::Source => "source".into(),
        Algorithm::Uri => "uri".into(),
        Algorithm::Header(h) => format!("header({h})"),
        Algorithm::First => "first".into(),
        Algorithm::Random => "random".into(),
    }
}

/// A count as it goes on the wire.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn show_backends(snap: &Snapshot) -> Vec<BackendInfo> {
    use std::sync::atomic::Ordering::Relaxed;
    snap.plan
        .backends()
        .iter()
        .zip(&snap.backends)
        .map(|(b, l)| {
            let c = &l.stats.counters;
            BackendInfo {
                name: b.name.clone(),
                algorithm: algorithm(&b.algorithm),
                sessions_current: l.servers.iter().map(|s| u64::from(s.active())).sum::<u64>(),
                sessions_total: c.sessions_total.load(Relaxed),
                queue: count(l.queue.len()),
                bytes_in: c.bytes_in.load(Relaxed),
                bytes_out: c.bytes_out.load(Relaxed),
                responses: classes(c),
                servers_total: count(l.servers.len()),
                servers_accepting: count(l.servers.iter().filter(|s| s.is_up()).count()),
            }
        })
        .collect()
}

fn admin_wire(a: AdminState) -> wire::AdminState {
    match a {
        AdminState::Ready => wire::AdminState::Ready,
        AdminState::Drain => wire::AdminState::Drain,
        AdminState::Maint => wire::AdminState::Maint,
    }
}

fn admin_str(a: AdminState) -> &'static str {
    admin_wire(a).as_str()
}

fn server_json(snap: &Snapshot, bi: usize, si: usize, now: Instant) -> ServerInfo {
    use std::sync::atomic::Ordering::Relaxed;
    let b = &snap.plan.backends()[bi];
    let cfg = &snap.plan.balancers()[bi].servers()[si];
    let s: &ServerState = &snap.backends[bi].servers[si];
    let status = s.status();
    let weight = s.weight(cfg.weight);
    let effective = if status.accepts_new() {
        tandem_balance::effective_weight(
            weight,
            s.up_since().map(|t| now.saturating_duration_since(t)),
            cfg.slow_start,
        )
    } else {
        0
    };
    let c = &s.counters;
    ServerInfo {
        backend: b.name.clone(),
        name: cfg.name.clone(),
        id: s.id.to_string(),
        address: cfg.address.to_string(),
        backup: cfg.backup,
        state: admin_wire(status.admin),
        health: if status.health == Health::Up {
            wire::Health::Up
        } else {
            wire::Health::Down
        },
        status: status.to_string(),
        check_streak: s.health_streak(),
        weight,
        config_weight: cfg.weight,
        effective_weight: effective,
        max_connections: cfg.max_connections,
        sessions_current: u64::from(s.active()),
        sessions_total: c.sessions_total.load(Relaxed),
        queue: count(snap.backends[bi].queue.len()),
        bytes_in: c.bytes_in.load(Relaxed),
        bytes_out: c.bytes_out.load(Relaxed),
        responses: classes(c),
        connect_failures: s.connect_failures.load(Relaxed),
        transitions: s.transitions(),
    }
}

fn backend_index(snap: &Snapshot, name: &str) -> Result<usize, String> {
    snap.plan
        .backend_index(name)
        .ok_or_else(|| format!("no backend {name}"))
}

fn show_servers(snap: &Snapshot, backend: Option<&str>) -> Result<Vec<ServerInfo>, String> {
    let now = Instant::now();
    let only = backend.map(|n| backend_index(snap, n)).transpose()?;
    let mut out = Vec::new();
    for (bi, b) in snap.plan.backends().iter().enumerate() {
        if only.is_some_and(|o| o != bi) {
            continue;
        }
        for si in 0..b.servers.len() {
            out.push(server_json(snap, bi, si, now));
        }
    }
    Ok(out)
}

/// Resolves `BACKEND/SERVER`.
fn server_ref(snap: &Snapshot, spec: Option<&str>) -> Result<(usize, usize), String> {
    let spec = spec.ok_or("set server needs \"server\": \"BACKEND/SERVER\"")?;
    let (b, s) = spec
        .split_once('/')
        .ok_or_else(|| format!("invalid server {spec:?}: expected BACKEND/SERVER"))?;
    let bi = backend_index(snap, b)?;
    let si = snap.plan.backends()[bi]
        .servers
        .iter()
        .position(|x| x.name == s)
        .ok_or_else(|| format!("no server {s} in backend {b}"))?;
    Ok((bi, si))
}

fn set_server(
    snap: &Snapshot,
    server: Option<&str>,
    state: Option<&str>,
    weight: Option<u32>,
) -> Result<ServerReply, String> {
    let (bi, si) = server_ref(snap, server)?;
    if state.is_none() && weight.is_none() {
        return Err("set server needs \"state\" (ready|drain|maint) or \"weight\" (0..256)".into());
    }
    let admin = match state.map(wire::AdminState::parse).transpose()? {
        None => None,
        Some(wire::AdminState::Ready) => Some(AdminState::Ready),
        Some(wire::AdminState::Drain) => Some(AdminState::Drain),
        Some(wire::AdminState::Maint) => Some(AdminState::Maint),
    };
    if let Some(w) = weight
        && w > tandem_balance::MAX_WEIGHT
    {
        return Err(format!("invalid weight {w}: must be 0..=256"));
    }
    if let Some(admin) = admin {
        let state = &snap.backends[bi].servers[si];
        if state
            .update(Instant::now(), |m| m.set_admin(admin))
            .is_some()
        {
            info!(backend = %state.key.backend, server = %state.key.server, state = admin_str(admin),
                "server state set from the runtime api");
        }
    }
    if let Some(w) = weight {
        let state = &snap.backends[bi].servers[si];
        state.set_runtime_weight(Some(w));
        info!(backend = %state.key.backend, server = %state.key.server, weight = w,
            "server weight set from the runtime api (until the next reload)");
    }
    Ok(ServerReply {
        server: server_json(snap, bi, si, Instant::now()),
    })
}

fn stick_of<'a>(
    snap: &'a Snapshot,
    name: Option<&str>,
) -> Result<(usize, &'a LiveBackend), String> {
    let name = name.ok_or("persistence commands need \"backend\"")?;
    let bi = backend_index(snap, name)?;
    Ok((bi, &snap.backends[bi]))
}

fn show_persistence(snap: &Snapshot, backend: Option<&str>) -> Result<Persistence, String> {
    let (bi, live) = stick_of(snap, backend)?;
    let b = &snap.plan.backends()[bi];
    match (&b.persistence, live.export_sticky(Instant::now())) {
        (Some(crate::plan::Persistence::Source { expire }), Some(entries)) => {
            let sel = &snap.plan.balancers()[bi];
            let entries = entries
                .iter()
                .map(|e| StickEntryInfo {
                    client: e.client,
                    server_id: e.server.to_string(),
                    server: sel.server_by_id(e.server).map(|s| s.name.clone()),
                    expires_in_ms: millis(e.expires_in),
                })
                .collect();
            Ok(Persistence::Source {
                backend: b.name.clone(),
                expire_ms: millis(*expire),
                capacity: count(crate::plan::STICK_TABLE_CAPACITY),
                entries,
            })
        }
        (Some(crate::plan::Persistence::Cookie { name }), _) => Ok(Persistence::Cookie {
            backend: b.name.clone(),
            cookie: name.clone(),
            entries: Vec::new(),
        }),
        _ => Err(format!("backend {} has no persistence", b.name)),
    }
}

/// A duration in whole milliseconds, as the wire carries it.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn import_persistence(
    snap: &Snapshot,
    backend: Option<&str>,
    entries: &wire::Entries<EntryJson>,
) -> Result<Imported, String> {
    let (bi, live) = stick_of(snap, backend)?;
    let name = &snap.plan.backends()[bi].name;
    if live.stick.is_none() {
        return Err(format!("backend {name} has no source persistence"));
    }
    let entries = entries.parse("import persistence")?;
    let mut parsed = Vec::with_capacity(entries.len());
    for e in &entries {
        let server = ServerId::from_cookie(&e.server_id)
            .map_err(|err| format!("invalid entry for {}: {err}", e.client))?;
        parsed.push(StickEntry {
            client: e.client,
            server,
            expires_in: Duration::from_millis(e.expires_in_ms),
        });
    }
    let n = parsed.len();
    live.import_sticky(Instant::now(), parsed);
    Ok(Imported { imported: count(n) })
}

fn rate_json(rate: Option<crate::plan::Rate>) -> Option<RateLimit> {
    rate.map(|r| RateLimit {
        count: r.count,
        per_ms: millis(r.per),
    })
}

/// The frontend `name` and its per-source table, or why not.
fn sources_of<'a>(
    snap: &'a Snapshot,
    name: Option<&str>,
) -> Result<(usize, &'a Arc<SourceTable>), String> {
    let name = name.ok_or("rate commands need \"frontend\"")?;
    let fi = snap
        .plan
        .frontends()
        .iter()
        .position(|f| f.name == name)
        .ok_or_else(|| format!("no frontend {name}"))?;
    let protect = &snap.plan.frontends()[fi].protect;
    match &snap.frontends[fi].sources {
        Some(t) if protect.connection_rate.is_some() || protect.request_rate.is_some() => {
            Ok((fi, t))
        }
        _ => Err(format!("frontend {name} has no per-source rate limit")),
    }
}

fn show_rates(snap: &Snapshot, frontend: Option<&str>) -> Result<Rates, String> {
    let (fi, table) = sources_of(snap, frontend)?;
    let f = &snap.plan.frontends()[fi];
    let entries = table
        .export(Instant::now())
        .into_iter()
        .map(|e| RateEntryJson {
            client: e.client,
            connections: e.connections.map(counter_json),
            requests: e.requests.map(counter_json),
        })
        .collect();
    Ok(Rates {
        frontend: f.name.clone(),
        connection_rate: rate_json(f.protect.connection_rate),
        request_rate: rate_json(f.protect.request_rate),
        entries,
    })
}

fn import_rates(
    snap: &Snapshot,
    frontend: Option<&str>,
    entries: &wire::Entries<RateEntryJson>,
) -> Result<Imported, String> {
    let (_, table) = sources_of(snap, frontend)?;
    let entries = entries.parse("import rates")?;
    let parsed: Vec<RateEntry> = entries
        .iter()
        .map(|e| RateEntry {
            client: e.client,
            connections: e.connections.as_ref().map(rate_counter),
            requests: e.requests.as_ref().map(rate_counter),
        })
        .collect();
    let n = table.import(Instant::now(), &parsed);
    Ok(Imported { imported: count(n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    }

    async fn proxy() -> Proxy {
        let yaml = format!(
            r#"version: 1
frontends:
  - name: web
    bind: ["127.0.0.1:{}"]
    default_backend: app
    protect: {{ request_rate_per_source: 3/60s }}
  - name: open
    bind: ["127.0.0.1:{}"]
    default_backend: app
backends:
  - name: app
    servers:
      - {{ name: a, address: 127.0.0.1:9, weight: 1 }}
"#,
            free_port(),
            free_port()
        );
        let loaded = tandem_config::parse(
            &yaml,
            "test.yaml",
            &tandem_config::MemoryCertFiles::default(),
        )
        .unwrap_or_else(|r| panic!("valid config: {r}"));
        let plan = crate::plan::Plan::from_config(&loaded.config, None).expect("plan");
        Proxy::start(plan).await.expect("proxy starts")
    }

    async fn api(proxy: &Proxy, line: &str) -> Value {
        execute(proxy, None, line.as_bytes()).await
    }

    /// The status code of `GET /` on `addr` from 127.0.0.1.
    async fn status(addr: std::net::SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        // The status line is enough (a bounded read, whether or not the proxy closes).
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while !out.windows(2).any(|w| w == b"\r\n") {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out)
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_owned()
    }

    #[tokio::test]
    async fn imported_rate_counters_refuse_a_source_over_its_rate() {
        let proxy = proxy().await;
        let web = proxy.snapshot().plan.frontends()[0].binds[0];
        let addr = proxy.local_addrs().await[&web];

        let r = api(&proxy, r#"{"cmd":"show rates","frontend":"web"}"#).await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["request_rate"], json!({"count": 3, "per_ms": 60000}));
        assert_eq!(r["connection_rate"], Value::Null);
        assert_eq!(r["entries"], json!([]));

        // The peer says 127.0.0.1 made 3 requests 2 s into the current minute.
        let r = api(
            &proxy,
            r#"{"cmd":"import rates","frontend":"web","entries":[{"client":"127.0.0.1","requests":{"current":3,"previous":0,"elapsed_ms":2000,"period_ms":60000}}]}"#,
        )
        .await;
        assert_eq!(r, json!({"ok": true, "imported": 1}));
        let r = api(&proxy, r#"{"cmd":"show rates","frontend":"web"}"#).await;
        let e = &r["entries"][0];
        assert_eq!(e["client"], "127.0.0.1", "{r}");
        assert_eq!(e["requests"]["current"], 3, "{r}");
        assert!(e["requests"]["elapsed_ms"].as_u64() >= Some(2000), "{r}");
        assert!(e.get("connections").is_none(), "{r}");
        assert_eq!(status(addr).await, "429", "over its rate on this node too");

        for (line, error) in [
            (
                r#"{"cmd":"show rates","frontend":"open"}"#,
                "frontend open has no per-source rate limit",
            ),
            (
                r#"{"cmd":"show rates","frontend":"nope"}"#,
                "no frontend nope",
            ),
            (r#"{"cmd":"show rates"}"#, "rate commands need \"frontend\""),
            (
                r#"{"cmd":"import rates","frontend":"web"}"#,
                "import rates needs \"entries\"",
            ),
        ] {
            let r = api(&proxy, line).await;
            assert_eq!(r, json!({"ok": false, "error": error}), "{line}");
        }
        let r = api(
            &proxy,
            r#"{"cmd":"import rates","frontend":"web","entries":[{"client":"x"}]}"#,
        )
        .await;
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("invalid entries for import rates")),
            "{r}"
        );
        proxy.shutdown(Duration::from_millis(10)).await;
    }
}
