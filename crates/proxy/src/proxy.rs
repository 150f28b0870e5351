//! The running proxy: listeners, the current snapshot, reload and graceful shutdown.
//!
//! Owns: [`Proxy`] (start, reload, shutdown), one accept loop per bind address, the
//! per-frontend connection limit at accept time, and the health checker tasks' lifetimes.
//! Does not own: what a connection does (`http`, `tcp`), nor reading config files (`lib`).
//!
//! Reload contract: the new plan's new addresses are bound first; if any bind fails the
//! reload is refused and nothing changes. Otherwise the snapshot is swapped atomically
//! (`ArcSwap`), listeners whose address is gone stop accepting, new ones start, and
//! established connections finish on the snapshot they started with.
//!
//! Upgrade: [`Proxy::start_with`] adopts listening sockets received from a predecessor
//! (`handover`) for the binds they match instead of binding; [`Proxy::listener_fds`] gives
//! duplicates of this proxy's listening sockets to a successor.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug_span, error, info, info_span, warn};

use crate::deadline::stopped;
use crate::live::{Registry, ServerState, Snapshot};
use crate::plan::{Mode, Plan};

/// Pending connections the kernel may hold per listener.
const LISTEN_BACKLOG: u32 = 1024;
/// Pause after a failed accept (e.g. out of file descriptors), in milliseconds.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 50;
/// How often shutdown checks whether connections have drained, in milliseconds.
const DRAIN_POLL_MS: u64 = 20;

/// Why a plan could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A new bind address could not be bound.
    #[error("failed to bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The proxy is shutting down.
    #[error("the proxy is shutting down")]
    ShuttingDown,
}

struct Listener {
    /// Set to `true` to stop this accept loop.
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    local: SocketAddr,
    /// A duplicate of the listening socket, for handing it over (`listener_fds`).
    fd: OwnedFd,
}

/// What reload and shutdown change; behind an async mutex so reloads are serialized.
struct Control {
    listeners: HashMap<SocketAddr, Listener>,
    checks: Vec<JoinHandle<()>>,
    stopped: bool,
    /// Listening sockets from a predecessor, used by the first plan instead of binding;
    /// the ones it does not bind are closed after it is installed.
    adopt: HashMap<SocketAddr, std::net::TcpListener>,
}

struct Inner {
    current: ArcSwap<Snapshot>,
    registry: Registry,
    generation: AtomicU64,
    control: Mutex<Control>,
    /// Set to `true` on shutdown: http connections finish their request and close.
    shutdown: watch::Sender<bool>,
    /// One clone per open client connection; shutdown waits for the count to drop.
    conns: Arc<()>,
}

/// The data plane; cheap to clone, all clones drive the same proxy.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("generation", &self.generation())
            .finish()
    }
}

impl Proxy {
    /// Binds every frontend of `plan`, starts health checks, and starts serving.
    pub async fn start(plan: Plan) -> Result<Proxy, ReloadError> {
        Self::start_with(plan, HashMap::new()).await
    }

    /// Like [`Proxy::start`], but serves the binds found in `inherited` (configured bind
    /// address to listening socket, from a predecessor) on those sockets; the others are
    /// bound fresh, and inherited sockets the plan does not bind are closed.
    pub async fn start_with(
        plan: Plan,
        inherited: HashMap<SocketAddr, std::net::TcpListener>,
    ) -> Result<Proxy, ReloadError> {
        let registry = Registry::default();
        let first = Arc::new(registry.bind(Arc::new(plan.clone()), 0));
        let proxy = Proxy {
            inner: Arc::new(Inner {
                current: ArcSwap::new(first),
                registry,
                generation: AtomicU64::new(0),
                control: Mutex::new(Control {
                    listeners: HashMap::new(),
                    checks: Vec::new(),
                    stopped: false,
                    adopt: inherited,
                }),
                shutdown: watch::channel(false).0,
                conns: Arc::new(()),
            }),
        };
        proxy.reload(plan).await?;
        Ok(proxy)
    }

    /// Installs `plan`; see the module doc for the contract. Returns the new generation.
    pub async fn reload(&self, plan: Plan) -> Result<u64, ReloadError> {
        let mut ctl = self.inner.control.lock().await;
        if ctl.stopped {
            return Err(ReloadError::ShuttingDown);
        }
        let mut fresh = Vec::new();
        for addr in plan.bind_addrs() {
            if !ctl.listeners.contains_key(&addr) {
                let listener = match ctl.adopt.remove(&addr) {
                    Some(l) => adopt(l),
                    None => bind(addr),
                };
                let listener = listener.map_err(|source| ReloadError::Bind { addr, source })?;
                let fd = listener
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| ReloadError::Bind { addr, source })?;
                fresh.push((addr, listener, fd));
            }
        }
        for (addr, _) in ctl.adopt.drain() {
            info!(bind = %addr, "inherited listener not in the configuration, closed");
        }
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let snap = Arc::new(self.inner.registry.bind(Arc::new(plan), generation));
        self.inner.current.store(snap.clone());

        let gone: Vec<SocketAddr> = ctl
            .listeners
            .keys()
            .filter(|a| snap.plan.frontend_for_bind(**a).is_none())
            .copied()
            .collect();
        for addr in gone {
            if let Some(l) = ctl.listeners.remove(&addr) {
                let _ = l.stop.send(true);
                info!(bind = %addr, "listener removed");
            }
        }
        for (addr, listener, fd) in fresh {
            let local = listener.local_addr().unwrap_or(addr);
            let (stop, stop_rx) = watch::channel(false);
            let span = info_span!("listener", bind = %local);
            let task = tokio::spawn(
                accept_loop(listener, addr, self.inner.clone(), stop_rx).instrument(span),
            );
            info!(bind = %local, "listener added");
            ctl.listeners.insert(
                addr,
                Listener {
                    stop,
                    task,
                    local,
                    fd,
                },
            );
        }
        for t in ctl.checks.drain(..) {
            t.abort();
        }
        ctl.checks = crate::health::spawn_all(&snap);
        info!(
            generation,
            frontends = snap.plan.frontends().len(),
            backends = snap.plan.backends().len(),
            "plan installed"
        );
        Ok(generation)
    }

    /// Generation of the installed plan (1 for the first).
    pub fn generation(&self) -> u64 {
        self.inner.current.load().generation
    }

    /// The installed snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Actual local addresses of the listeners, by configured bind address (port 0 resolved).
    pub async fn local_addrs(&self) -> HashMap<SocketAddr, SocketAddr> {
        self.inner
            .control
            .lock()
            .await
            .listeners
            .iter()
            .map(|(k, l)| (*k, l.local))
            .collect()
    }

    /// Duplicates of the listening sockets, by configured bind address, for a successor
    /// process (`handover`). Closing them does not affect this proxy.
    pub async fn listener_fds(&self) -> io::Result<Vec<(SocketAddr, OwnedFd)>> {
        let ctl = self.inner.control.lock().await;
        ctl.listeners
            .iter()
            .map(|(addr, l)| Ok((*addr, l.fd.try_clone()?)))
            .collect()
    }

    /// Live state of a server of the installed plan.
    pub fn server_state(&self, backend: &str, server: &str) -> Option<Arc<ServerState>> {
        let snap = self.inner.current.load();
        let bi = snap
            .plan
            .backends()
            .iter()
            .position(|b| b.name == backend)?;
        let si = snap.plan.backends()[bi]
            .servers
            .iter()
            .position(|s| s.name == server)?;
        Some(snap.backends[bi].servers[si].clone())
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        Arc::strong_count(&self.inner.conns) - 1
    }

    /// Stops accepting, lets http connections finish their current request, and waits up
    /// to `grace` for every connection to close.
    pub async fn shutdown(&self, grace: Duration) {
        {
            let mut ctl = self.inner.control.lock().await;
            ctl.stopped = true;
            for (_, l) in ctl.listeners.drain() {
                let _ = l.stop.send(true);
                let _ = l.task.await;
            }
            for t in ctl.checks.drain(..) {
                t.abort();
            }
        }
        let _ = self.inner.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(DRAIN_POLL_MS)).await;
        }
        let left = self.open_connections();
        if left > 0 {
            warn!(
                connections = left,
                "grace period over, connections still open"
            );
        }
    }
}

/// Completes once `rx` holds `true` (or its sender is gone); the guard is not held.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(LISTEN_BACKLOG)
}

/// A listening socket from a predecessor, made ready for tokio.
fn adopt(l: std::net::TcpListener) -> io::Result<TcpListener> {
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

async fn accept_loop(
    listener: TcpListener,
    bind: SocketAddr,
    inner: Arc<Inner>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let snap = inner.current.load_full();
        let Some(fi) = snap.plan.frontend_for_bind(bind) else {
            return;
        };
        // The frontend limit is taken before accepting: excess clients wait in the backlog.
        let permit = match snap.frontends[fi].limit.clone() {
            None => None,
            Some(sem) => tokio::select! {
                p = sem.acquire_owned() => p.ok(),
                () = stopped(&mut stop) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    error!(cause = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        // A reload may have happened while waiting: serve with the newest plan.
        let snap = inner.current.load_full();
        let Some(fi) = snap.plan.frontend_for_bind(bind) else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let fe = &snap.plan.frontends()[fi];
        // Debug level: an enabled span is formatted and stored per connection and entered on
        // every poll (memory per idle connection, CPU per request); the events inside carry
        // the frontend and client themselves.
        let span =
            debug_span!("conn", frontend = %fe.name, client = %peer, generation = snap.generation);
        let guard = inner.conns.clone();
        let mode = fe.mode;
        let shutdown = inner.shutdown.subscribe();
        tokio::spawn(
            async move {
                // PROXY header and TLS handshake first, bounded by `timeout client_header`.
                let accepted =
                    crate::accept::accept_client(stream, peer, &snap.plan.frontends()[fi], bind)
                        .await;
                match accepted {
                    Err(e) => {
                        let fe = &snap.plan.frontends()[fi];
                        info!(frontend = %fe.name, client = %peer, kind = e.kind(), cause = %e,
                            "client connection dropped before serving");
                    }
                    Ok(acc) => match mode {
                        Mode::Http => crate::http::serve(acc, snap, fi, shutdown).await,
                        Mode::Tcp => crate::tcp::serve(acc, snap, fi).await,
                    },
                }
                drop(permit);
                drop(guard);
            }
            .instrument(span),
        );
    }
}
