//! The IO shell around [`SyncCore`]: TCP on the sync link, mutual TLS with pinned certificates,
//! length-prefixed frames, reconnect with capped backoff, runtime-state ticks, and the status
//! the supervisor shows.
//!
//! Owns the sockets and tasks: one listener on `sync_address:port` (both nodes accept; the
//! node whose name sorts first also dials, so there is one connection), a reader and a writer
//! task per connection (bounded channels), and the loop that feeds the core and carries out
//! its outputs through the [`Host`] (the supervisor). Must not commit or apply anything itself
//! (the host does, through its transaction path) nor parse configuration.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::backoff::Backoff;
use crate::core::{Identity, LinkState, LocalView, Output, Relation, Status, SyncCore};
use crate::proto::{self, GenRef, Message, Outcome, WireGeneration};
use crate::tls;

/// TCP connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// TLS handshake timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often runtime state (VRRP roles, persistence) is exported to the peer.
/// Every 250 ms: the VRRP roles feed the supervisor's split-brain guard, which must resolve a
/// double master within 2 s (the host sends the heavy persistence tables only once a second).
pub const RUNTIME_INTERVAL: Duration = Duration::from_millis(250);
/// How often the endpoints and pairing are re-read (configuration changes).
pub const RECHECK: Duration = Duration::from_secs(1);
/// Frames queued for the writer task per connection.
const WRITE_QUEUE: usize = 64;
/// Frames queued from the reader task.
const READ_QUEUE: usize = 64;
/// Commands queued from the supervisor.
const COMMAND_QUEUE: usize = 64;

/// Where this node and its peer are, from the running configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// This node's name.
    pub node: String,
    /// The peer's name.
    pub peer: String,
    /// Our `sync_address:port` (listen).
    pub local: SocketAddr,
    /// The peer's `sync_address:port` (dial).
    pub remote: SocketAddr,
}

/// What the shell needs from the supervisor.
pub trait Host: Send + Sync + 'static {
    /// The endpoints from the running configuration; `None` when the node is not in a
    /// two-node cluster (sync idles).
    fn endpoints(&self) -> Option<Endpoints>;
    /// The local history.
    fn local_view(&self) -> LocalView;
    /// Local generation `number` in full.
    fn load(&self, number: u64) -> Option<WireGeneration>;
    /// Validates, commits (keeping the number) and applies a peer generation, provided the
    /// local current generation is still `expected_current`.
    fn apply(
        &self,
        generation: WireGeneration,
        expected_current: Option<GenRef>,
    ) -> impl Future<Output = Outcome> + Send;
    /// Runtime state to send to the peer (`None`: nothing this time).
    fn runtime_export(&self) -> impl Future<Output = Option<Value>> + Send;
    /// Runtime state received from the peer.
    fn runtime_import(&self, state: Value) -> impl Future<Output = ()> + Send;
}

/// Requests from the supervisor to the shell.
#[derive(Debug)]
pub enum Command {
    /// The local history changed (commit, rollback).
    LocalChanged,
    /// The operator resolved a divergence (see [`SyncCore::handle_resolved`]).
    Resolved {
        /// The new local generation.
        generation: GenRef,
        /// The peer generation it supersedes.
        supersedes: GenRef,
    },
    /// Export runtime state now (e.g. on a VRRP role change).
    RuntimeNow,
}

/// What `status` / `show sync` show, published after every step.
#[derive(Debug, Clone, Serialize)]
pub struct ShellStatus {
    /// `idle` (not clustered), `unpaired`, `connecting`, or `running`.
    pub state: String,
    /// Why idle or unpaired, lowercase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Our certificate fingerprint (`AB:CD:...`).
    pub fingerprint: String,
    /// The pinned peer fingerprint, if paired.
    pub peer_fingerprint: Option<String>,
    /// The peer's sync endpoint.
    pub remote: Option<String>,
    /// The core's view, once clustered.
    pub core: Option<Status>,
    /// When the last message came from the peer, milliseconds since the Unix epoch.
    pub last_exchange_ms: Option<u64>,
    /// Failed connection attempts and IO errors (never reset).
    pub errors: u64,
    /// The last connection error.
    pub last_error: Option<String>,
}

/// The supervisor's handle on the running shell.
#[derive(Clone)]
pub struct SyncHandle {
    /// Status after each step.
    pub status: watch::Receiver<ShellStatus>,
    commands: mpsc::Sender<Command>,
    /// The node identity (fingerprint, pinning).
    pub identity: Arc<tls::Identity>,
}

/// How a commit fared on the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerResult {
    /// The peer runs the generation.
    Applied,
    /// The peer is not connected; the generation is queued.
    Unreachable(String),
    /// The peer refused it (reason for the operator).
    Refused(String),
    /// The histories diverged; nothing was pushed.
    Diverged,
    /// Not clustered or not paired.
    NotSynced(String),
    /// No answer in time; still queued.
    Pending,
}

impl SyncHandle {
    /// Tells the shell something changed; never blocks (a full queue drops, counted in logs:
    /// the periodic recheck repairs it).
    pub fn notify(&self, cmd: Command) {
        if let Err(e) = self.commands.try_send(cmd) {
            warn!(cause = %e, "sync command queue full or closed; the next recheck catches up");
        }
    }

    /// The current status.
    pub fn snapshot(&self) -> ShellStatus {
        self.status.borrow().clone()
    }

    /// Waits (at most `timeout`) until the peer runs `generation`, refuses it, or is known
    /// unreachable.
    pub async fn wait_peer(&self, generation: &GenRef, timeout: Duration) -> PeerResult {
        let mut rx = self.status.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen_local = false;
        loop {
            let verdict = {
                let s = rx.borrow_and_update();
                match &s.core {
                    None => Some(PeerResult::NotSynced(
                        s.detail.clone().unwrap_or_else(|| s.state.clone()),
                    )),
                    Some(c) if c.local.as_ref() == Some(generation) || seen_local => {
                        seen_local = true;
                        if c.peer_current.as_ref() == Some(generation) {
                            Some(PeerResult::Applied)
                        } else if c.link != LinkState::Up {
                            Some(PeerResult::Unreachable(
                                s.last_error
                                    .clone()
                                    .unwrap_or_else(|| "sync link down".into()),
                            ))
                        } else {
                            match &c.relation {
                                Relation::Diverged => Some(PeerResult::Diverged),
                                Relation::Blocked { reason, .. } => {
                                    Some(PeerResult::Refused(reason.clone()))
                                }
                                _ => None,
                            }
                        }
                    }
                    Some(_) => None,
                }
            };
            if let Some(v) = verdict {
                return v;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return PeerResult::NotSynced("sync service stopped".into()),
                Err(_) => return PeerResult::Pending,
            }
        }
    }
}

/// Starts the shell for `host` with `identity`, firmware `firmware` reading schemas up to
/// `max_schema`; runs until the returned task is aborted.
pub fn spawn<H: Host>(
    host: Arc<H>,
    identity: tls::Identity,
    firmware: String,
    max_schema: u32,
) -> (SyncHandle, JoinHandle<()>) {
    let identity = Arc::new(identity);
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let initial = ShellStatus {
        state: "starting".into(),
        detail: None,
        fingerprint: tls::display_fingerprint(&identity.fingerprint),
        peer_fingerprint: identity
            .pinned()
            .ok()
            .flatten()
            .map(|p| tls::display_fingerprint(&p)),
        remote: None,
        core: None,
        last_exchange_ms: None,
        errors: 0,
        last_error: None,
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let shell = Shell {
        host,
        identity: Arc::clone(&identity),
        firmware,
        max_schema,
        status: status_tx,
        commands: commands_rx,
        errors: Arc::new(AtomicU64::new(0)),
        last_error: None,
    };
    let task = tokio::spawn(shell.run());
    (
        SyncHandle {
            status: status_rx,
            commands: commands_tx,
            identity,
        },
        task,
    )
}

struct Shell<H> {
    host: Arc<H>,
    identity: Arc<tls::Identity>,
    firmware: String,
    max_schema: u32,
    status: watch::Sender<ShellStatus>,
    commands: mpsc::Receiver<Command>,
    errors: Arc<AtomicU64>,
    last_error: Option<String>,
}

/// An established connection: the writer's queue and the reader's feed.
struct Session {
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Result<Message, String>>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type Established = Result<Box<dyn Stream>, String>;

/// A TLS stream of either side.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<H: Host> Shell<H> {
    fn publish(
        &self,
        state: &str,
        detail: Option<String>,
        core: Option<&SyncCore>,
        remote: Option<SocketAddr>,
        last_rx_ms: Option<u64>,
    ) {
        let st = ShellStatus {
            state: state.to_owned(),
            detail,
            fingerprint: tls::display_fingerprint(&self.identity.fingerprint),
            peer_fingerprint: self
                .identity
                .pinned()
                .ok()
                .flatten()
                .map(|p| tls::display_fingerprint(&p)),
            remote: remote.map(|r| r.to_string()),
            core: core.map(SyncCore::status),
            last_exchange_ms: last_rx_ms,
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.clone(),
        };
        self.status.send_replace(st);
    }

    fn error(&mut self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        debug!(cause = %what, "sync connection error");
        self.last_error = Some(what);
    }

    async fn run(mut self) {
        loop {
            let Some(ep) = self.host.endpoints() else {
                self.publish(
                    "idle",
                    Some("this node is not one of two cluster.nodes; nothing to sync".into()),
                    None,
                    None,
                    None,
                );
                self.idle_wait().await;
                continue;
            };
            let span = info_span!("sync", peer = %ep.peer);
            self.run_endpoints(ep).instrument(span).await;
        }
    }

    /// Waits for a command or the recheck interval (commands are irrelevant while idle).
    async fn idle_wait(&mut self) {
        tokio::select! {
            _ = self.commands.recv() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }

    /// Runs while the endpoints stay `ep`.
    async fn run_endpoints(&mut self, ep: Endpoints) {
        info!(local = %ep.local, remote = %ep.remote, "sync service running");
        let id = Identity {
            node: ep.node.clone(),
            peer: ep.peer.clone(),
            firmware: self.firmware.clone(),
            max_schema: self.max_schema,
        };
        let mut core = SyncCore::new(id, self.host.local_view());
        let dialer = ep.node < ep.peer;
        let mut listener: Option<TcpListener> = None;
        let mut backoff = Backoff::default();
        let mut next_dial = tokio::time::Instant::now();
        let mut dialing: Option<JoinHandle<()>> = None;
        let (est_tx, est_rx) = mpsc::channel::<(bool, Established)>(4);
        let mut est_rx = Some(est_rx);
        let (apply_tx, apply_rx) = mpsc::channel::<(GenRef, Outcome)>(4);
        let mut apply_rx = Some(apply_rx);
        let (rt_tx, rt_rx) = mpsc::channel::<Value>(2);
        let mut rt_rx = Some(rt_rx);
        let mut session: Option<Session> = None;
        let mut last_rx_ms: Option<u64> = None;
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut runtime_tick = tokio::time::interval(RUNTIME_INTERVAL);
        runtime_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut runtime_busy = false;
        loop {
            let pinned = self.identity.pinned().ok().flatten();
            if listener.is_none() {
                match TcpListener::bind(ep.local).await {
                    Ok(l) => {
                        info!(local = %ep.local, "sync listener bound");
                        listener = Some(l);
                    }
                    Err(e) => self.error(format!("cannot listen on {}: {e}", ep.local)),
                }
            }
            let state = match (&pinned, &session) {
                (None, _) => "unpaired",
                (Some(_), None) => "connecting",
                (Some(_), Some(_)) => "running",
            };
            let detail = pinned.is_none().then(|| {
                "not paired: run `tandemctl pair` on both nodes and compare the fingerprints"
                    .to_owned()
            });
            self.publish(state, detail, Some(&core), Some(ep.remote), last_rx_ms);

            let want_dial = dialer && session.is_none() && dialing.is_none() && pinned.is_some();
            let timeout = core.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::LocalChanged) => core.handle_local(Instant::now(), self.host.local_view()),
                    Some(Command::Resolved { generation, supersedes }) => {
                        core.handle_local(Instant::now(), self.host.local_view());
                        core.handle_resolved(Instant::now(), generation, supersedes);
                    }
                    Some(Command::RuntimeNow) => runtime_tick.reset_immediately(),
                    None => return,
                },
                Some((g, outcome)) = recv_opt(&mut apply_rx) => {
                    core.handle_local(Instant::now(), self.host.local_view());
                    core.handle_apply_result(Instant::now(), g, outcome);
                }
                Some(state) = recv_opt(&mut rt_rx) => {
                    runtime_busy = false;
                    if session.is_some() && core.status().link == LinkState::Up {
                        self.write(&mut session, &Message::Runtime { state });
                    }
                }
                accepted = async { listener.as_ref().map(TcpListener::accept) .expect("guarded").await }, if listener.is_some() && pinned.is_some() => {
                    match accepted {
                        Ok((tcp, from)) => {
                            debug!(%from, "sync connection accepted");
                            let tx = est_tx.clone();
                            let identity = Arc::clone(&self.identity);
                            let (peer, pin) = (ep.peer.clone(), pinned.clone().unwrap_or_default());
                            tokio::spawn(async move {
                                let r = accept_tls(tcp, &identity, &peer, &pin).await;
                                let _ = tx.send((false, r)).await;
                            }.in_current_span());
                        }
                        Err(e) => self.error(format!("accept on {} failed: {e}", ep.local)),
                    }
                }
                _ = tokio::time::sleep_until(next_dial), if want_dial => {
                    let tx = est_tx.clone();
                    let identity = Arc::clone(&self.identity);
                    let (peer, pin, remote) = (ep.peer.clone(), pinned.clone().unwrap_or_default(), ep.remote);
                    dialing = Some(tokio::spawn(async move {
                        let r = dial_tls(remote, &identity, &peer, &pin).await;
                        let _ = tx.send((true, r)).await;
                    }.in_current_span()));
                }
                Some((dialed, est)) = recv_opt(&mut est_rx) => {
                    if dialed {
                        dialing = None;
                    }
                    match est {
                        Ok(stream) => {
                            if session.is_some() {
                                info!("a new sync connection replaces the current one");
                                core.handle_disconnected(Instant::now());
                            }
                            session = Some(start_session(stream));
                            backoff.reset();
                            self.last_error = None;
                            core.handle_connected(Instant::now());
                        }
                        Err(e) => {
                            self.error(e);
                            if dialed {
                                next_dial = tokio::time::Instant::now() + backoff.next_delay();
                            }
                        }
                    }
                }
                frame = async { session.as_mut().expect("guarded").rx.recv().await }, if session.is_some() => {
                    match frame {
                        Some(Ok(msg)) => {
                            last_rx_ms = Some(now_ms());
                            core.handle_message(Instant::now(), msg);
                        }
                        Some(Err(e)) => {
                            self.error(format!("connection with {} lost: {e}", ep.peer));
                            session = None;
                            core.handle_disconnected(Instant::now());
                            next_dial = tokio::time::Instant::now() + backoff.next_delay();
                        }
                        None => {
                            self.error(format!("connection with {} closed", ep.peer));
                            session = None;
                            core.handle_disconnected(Instant::now());
                            next_dial = tokio::time::Instant::now() + backoff.next_delay();
                        }
                    }
                }
                _ = async { tokio::time::sleep_until(timeout.expect("guarded")).await }, if timeout.is_some() => {
                    core.handle_timeout(Instant::now());
                }
                _ = runtime_tick.tick(), if session.is_some() && !runtime_busy => {
                    runtime_busy = true;
                    let host = Arc::clone(&self.host);
                    let tx = rt_tx.clone();
                    tokio::spawn(async move {
                        if let Some(state) = host.runtime_export().await {
                            let _ = tx.send(state).await;
                        } else {
                            let _ = tx.send(Value::Null).await;
                        }
                    }.in_current_span());
                }
                _ = recheck.tick() => {
                    if self.host.endpoints().as_ref() != Some(&ep) {
                        info!("sync endpoints changed; restarting the sync service");
                        if let Some(d) = dialing.take() { d.abort(); }
                        return;
                    }
                    core.handle_local(Instant::now(), self.host.local_view());
                }
            }
            // Carry out the core's effects.
            while let Some(out) = core.poll_output() {
                match out {
                    Output::Send(m) => self.write(&mut session, &m),
                    Output::Push { number, resolves } => match self.host.load(number) {
                        Some(generation) => self.write(
                            &mut session,
                            &Message::Push {
                                generation,
                                resolves,
                            },
                        ),
                        None => warn!(generation = number, "cannot load a generation to push"),
                    },
                    Output::SendHead => {
                        let current = self
                            .host
                            .local_view()
                            .current()
                            .map(|g| g.generation.number);
                        if let Some(generation) = current.and_then(|n| self.host.load(n)) {
                            self.write(&mut session, &Message::Head { generation });
                        }
                    }
                    Output::Apply {
                        generation,
                        expected_current,
                    } => {
                        let host = Arc::clone(&self.host);
                        let tx = apply_tx.clone();
                        tokio::spawn(
                            async move {
                                let g = generation.generation.clone();
                                let outcome = host.apply(generation, expected_current).await;
                                let _ = tx.send((g, outcome)).await;
                            }
                            .in_current_span(),
                        );
                    }
                    Output::Runtime(state) => {
                        if !state.is_null() {
                            let host = Arc::clone(&self.host);
                            tokio::spawn(
                                async move { host.runtime_import(state).await }.in_current_span(),
                            );
                        }
                    }
                    Output::Close { reason } => {
                        self.error(reason);
                        session = None;
                        core.handle_disconnected(Instant::now());
                        next_dial = tokio::time::Instant::now() + backoff.next_delay();
                    }
                }
            }
            // Never left unused: keeps the channels' senders alive for the tasks.
            let _ = (&apply_rx, &est_rx, &rt_rx);
        }
    }

    fn write(&mut self, session: &mut Option<Session>, msg: &Message) {
        let Some(s) = session else { return };
        if matches!(msg, Message::Runtime { state } if state.is_null()) {
            return;
        }
        match proto::encode(msg) {
            Ok(frame) => {
                if let Err(e) = s.tx.try_send(frame) {
                    // A peer that does not read is treated as gone; the core re-syncs after
                    // the reconnect.
                    self.error(format!(
                        "send queue to the peer failed ({e}); dropping the connection"
                    ));
                    *session = None;
                }
            }
            Err(e) => self.error(format!("cannot encode a {} message: {e}", msg.kind())),
        }
    }
}

fn start_session(stream: Box<dyn Stream>) -> Session {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut wrx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let (rtx, rx) = mpsc::channel::<Result<Message, String>>(READ_QUEUE);
    let writer = tokio::spawn(
        async move {
            while let Some(frame) = wrx.recv().await {
                if let Err(e) = async {
                    wr.write_all(&frame).await?;
                    wr.flush().await
                }
                .await
                {
                    debug!(cause = %e, "sync write failed");
                    return;
                }
            }
            let _ = wr.shutdown().await;
        }
        .in_current_span(),
    );
    let reader = tokio::spawn(
        async move {
            loop {
                let r = read_frame(&mut rd).await;
                let stop = r.is_err();
                if rtx.send(r).await.is_err() || stop {
                    return;
                }
            }
        }
        .in_current_span(),
    );
    Session {
        tx,
        rx,
        tasks: [writer, reader],
    }
}

async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Message, String> {
    let mut header = [0u8; 4];
    rd.read_exact(&mut header)
        .await
        .map_err(|e| e.to_string())?;
    let len = proto::frame_len(header).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    proto::decode(&body).map_err(|e| e.to_string())
}

async fn accept_tls(
    tcp: TcpStream,
    identity: &tls::Identity,
    peer: &str,
    pinned: &str,
) -> Established {
    let _ = tcp.set_nodelay(true);
    let config = identity
        .server_config(peer, pinned)
        .map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => Err(format!("tls handshake with {peer} (incoming) failed: {e}")),
        Err(_) => Err(format!("tls handshake with {peer} (incoming) timed out")),
    }
}

async fn dial_tls(
    remote: SocketAddr,
    identity: &tls::Identity,
    peer: &str,
    pinned: &str,
) -> Established {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(remote)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(format!("cannot connect to {peer} at {remote}: {e}")),
        Err(_) => return Err(format!("connecting to {peer} at {remote} timed out")),
    };
    let _ = tcp.set_nodelay(true);
    let config = identity
        .client_config(peer, pinned)
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(tls::SERVER_NAME)
        .map_err(|e| e.to_string())?
        .to_owned();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => Err(format!("tls handshake with {peer} at {remote} failed: {e}")),
        Err(_) => Err(format!("tls handshake with {peer} at {remote} timed out")),
    }
}
