//! Live state: what changes while the proxy runs, keyed so it survives reloads.
//!
//! Owns: [`ServerState`] (active requests, the health/admin [`ServerMonitor`] and its published
//! status, slow-start origin, idle upstream connections, counters), [`BackendQueue`] (the FIFO
//! of requests waiting for a server slot), stick tables, frontend limits and counters, the
//! [`Registry`] that hands out the same state for the same identity across plans, and the
//! [`Snapshot`] (a plan bound to its live state) that the proxy swaps.
//! Does not own: the selection policy (`tandem-balance`, adapted in `select`), the queue
//! protocol (`queue`), metric names (`metrics`), or IO.
//! No lock here is ever held across an `.await`; the request path reads status atomics only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tandem_balance::{
    AdminState, Health, HealthConfig, InitState, ServerId, ServerMonitor, Status, StickEntry,
    StickTable, Transition,
};
use tokio::sync::{Semaphore, oneshot};
use tracing::{info, warn};

pub(crate) use crate::deadline::epoch;
pub(crate) use crate::pool::{RawUpstream, Upstream};

use crate::plan::{Backend, Persistence, Plan, STICK_TABLE_CAPACITY, Server};
use crate::pool::ServerPool;
use crate::protect::SourceTable;
use crate::stats::{BackendStats, Counters, FrontendStats};

/// Stable identity of a server: live state is kept across reloads while this is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// Backend name.
    pub backend: String,
    /// Server name.
    pub server: String,
    /// Server address.
    pub addr: SocketAddr,
}

fn pack(s: Status) -> u8 {
    let admin = match s.admin {
        AdminState::Ready => 0,
        AdminState::Drain => 1,
        AdminState::Maint => 2,
    };
    admin | if s.health == Health::Up { 0 } else { 4 }
}

fn unpack(v: u8) -> Status {
    Status {
        admin: match v & 3 {
            0 => AdminState::Ready,
            1 => AdminState::Drain,
            _ => AdminState::Maint,
        },
        health: if v & 4 == 0 { Health::Up } else { Health::Down },
    }
}

/// Live state of one server, shared by every plan that contains it.
#[derive(Debug)]
pub struct ServerState {
    /// Its identity.
    pub key: ServerKey,
    /// Stable opaque id (cookies, stick tables).
    pub id: ServerId,
    /// Requests (http) or connections (tcp) in flight; bounded by `max_connections`.
    pub(crate) active: AtomicU32,
    /// The monitor's status, packed, for lock-free reads on the request path.
    status: AtomicU8,
    /// When the server last became able to take new users (slow start); see [`epoch`].
    up_since: AtomicU64,
    /// Health and admin state machine; locked for one call, never across an await.
    monitor: Mutex<ServerMonitor>,
    /// Admin state of the last plan bound, so a reload applies only config changes.
    config_admin: AtomicU8,
    /// Weight set by `set server weight` ([`NO_WEIGHT`]: use the configured one); a reload
    /// restores the configured weight, as in HAProxy.
    runtime_weight: AtomicU32,
    /// Idle keep-alive connections (hyper's and the raw HTTP/1 forwarder's).
    pool: ServerPool,
    /// Traffic counters (shared with the `Sink`s of its requests).
    pub counters: Arc<Counters>,
    /// Connect failures.
    pub(crate) connect_failures: AtomicU64,
    /// Status changes (health and admin).
    pub(crate) transitions: AtomicU64,
}

impl ServerState {
    fn new(key: ServerKey, backend: &Backend, server: &Server) -> Self {
        let (config, init) = health_config(backend);
        let monitor = ServerMonitor::new(config, server.admin, init);
        let _ = epoch();
        Self {
            id: ServerId::derive(&key.backend, &key.server),
            key,
            active: AtomicU32::new(0),
            status: AtomicU8::new(pack(monitor.status())),
            up_since: AtomicU64::new(0),
            monitor: Mutex::new(monitor),
            config_admin: AtomicU8::new(pack(Status {
                admin: server.admin,
                health: Health::Up,
            })),
            runtime_weight: AtomicU32::new(NO_WEIGHT),
            pool: ServerPool::default(),
            counters: Arc::default(),
            connect_failures: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
        }
    }

    /// Admin state and health, as selection sees them.
    pub fn status(&self) -> Status {
        unpack(self.status.load(Ordering::Acquire))
    }

    /// Whether the server may receive new users.
    pub fn is_up(&self) -> bool {
        self.status().accepts_new()
    }

    /// When the server last came up, if after load time (slow start).
    pub fn up_since(&self) -> Option<Instant> {
        match self.up_since.load(Ordering::Acquire) {
            0 => None,
            n => Some(epoch() + Duration::from_nanos(n - 1)),
        }
    }

    /// The weight set at runtime, if any.
    pub fn runtime_weight(&self) -> Option<u32> {
        match self.runtime_weight.load(Ordering::Acquire) {
            NO_WEIGHT => None,
            w => Some(w),
        }
    }

    /// Sets (or with `None` clears) the runtime weight; selection uses it at once.
    pub fn set_runtime_weight(&self, weight: Option<u32>) {
        self.runtime_weight
            .store(weight.unwrap_or(NO_WEIGHT), Ordering::Release);
    }

    /// The weight selection uses: the runtime one, else `configured`.
    pub fn weight(&self, configured: u32) -> u32 {
        self.runtime_weight().unwrap_or(configured)
    }

    /// Requests or connections in flight now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    /// Status changes so far.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// Feeds the monitor under its lock, publishes the new status, then logs and counts the
    /// transition, if any, with its reason (once, here).
    pub(crate) fn update(
        &self,
        now: Instant,
        f: impl FnOnce(&mut ServerMonitor) -> Option<Transition>,
    ) -> Option<Transition> {
        let t = {
            let mut m = self.monitor.lock().unwrap_or_else(|p| p.into_inner());
            let t = f(&mut m);
            if let Some(t) = &t {
                if t.came_up() {
                    let n = now.saturating_duration_since(epoch()).as_nanos();
                    let n = u64::try_from(n).unwrap_or(u64::MAX - 1) + 1;
                    self.up_since.store(n, Ordering::Release);
                }
                self.status.store(pack(t.to), Ordering::Release);
            }
            t
        }?;
        self.transitions.fetch_add(1, Ordering::Relaxed);
        if !t.to.accepts_persistent() {
            // Connections to a server that takes no traffic are not reused.
            self.pool.clear();
        }
        let (backend, server) = (&self.key.backend, &self.key.server);
        if t.to.accepts_persistent() || t.to.admin == AdminState::Maint {
            info!(%backend, %server, from = %t.from, to = %t.to, reason = ?t.reason,
                active = self.active(), "server state change");
        } else {
            warn!(%backend, %server, from = %t.from, to = %t.to, reason = ?t.reason,
                active = self.active(), "server state change");
        }
        Some(t)
    }

    /// The monitor's hysteresis streak (for `show servers`).
    pub fn health_streak(&self) -> u32 {
        self.monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .health_state()
            .streak
    }

    /// Applies the thresholds, weight and config admin state of a newly bound plan.
    fn rebind(&self, backend: &Backend, server: &Server) {
        self.set_runtime_weight(None);
        let (config, _) = health_config(backend);
        let mut m = self.monitor.lock().unwrap_or_else(|p| p.into_inner());
        if m.config() != config {
            m.reconfigure(config);
        }
        drop(m);
        let admin = pack(Status {
            admin: server.admin,
            health: Health::Up,
        });
        if self.config_admin.swap(admin, Ordering::AcqRel) != admin {
            // The configured state changed: it wins over a runtime command (HAProxy reload).
            self.update(Instant::now(), |m| m.set_admin(server.admin));
        }
    }

    /// Records a failed connect to this server (counter, passive health) and logs it; the
    /// caller tries another server.
    pub(crate) fn connect_failed(&self, passive: bool, cause: &dyn std::fmt::Display) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        if passive {
            self.update(Instant::now(), |m| m.on_connect(false));
        }
        warn!(backend = %self.key.backend, server = %self.key.server, %cause,
            "connect failed, trying another server");
    }

    /// Its idle connections, to take one from.
    pub(crate) fn pool(&self) -> &ServerPool {
        &self.pool
    }

    /// Its idle connections, to return one to: `None` while the server takes no traffic
    /// (connections to it are not reused then).
    pub(crate) fn pool_to_keep(&self) -> Option<&ServerPool> {
        self.status().accepts_persistent().then_some(&self.pool)
    }
}

/// `runtime_weight` value meaning "the configured weight".
const NO_WEIGHT: u32 = u32::MAX;

/// Thresholds and initial health for servers of `b` (always up without a health check).
fn health_config(b: &Backend) -> (HealthConfig, InitState) {
    match &b.health_check {
        None => (HealthConfig::default(), InitState::FullyUp),
        Some(hc) => (
            HealthConfig {
                rise: hc.rise.max(1),
                fall: hc.fall.max(1),
                passive_connect_failures: hc.passive_connect_failures,
                passive_5xx: hc.passive_5xx,
            },
            // A server starts up and needs `fall` failed checks to go down, like any up
            // server (HAProxy's `init-state fully-up`): a restart never drops a healthy server
            // on one lost probe.
            InitState::FullyUp,
        ),
    }
}

/// The FIFO of requests waiting for a slot on one backend's servers.
///
/// Protocol (see `queue`): a waiter pushes a wake-up sender and re-tries once; a releaser
/// decrements `active` and, if `len > 0`, wakes the head. Both use `SeqCst` on `active`
/// and `len`, so at least one of them sees the other and no wake-up is lost.
#[derive(Debug, Default)]
pub struct BackendQueue {
    /// Waiters' wake-up senders, oldest first; bounded by the backend's `max_queue`.
    pub(crate) waiters: Mutex<std::collections::VecDeque<oneshot::Sender<()>>>,
    /// Number of entries in `waiters` (including abandoned ones not yet popped).
    pub(crate) len: AtomicUsize,
}

impl BackendQueue {
    /// Wakes the oldest live waiter, if any.
    pub(crate) fn wake_next(&self) {
        let mut q = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(tx) = q.pop_front() {
            self.len.fetch_sub(1, Ordering::SeqCst);
            if tx.send(()).is_ok() {
                break;
            }
        }
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A backend's source stick table, behind a mutex held for one call.
pub type Sticky = Mutex<StickTable>;

/// Live part of a backend in one snapshot.
#[derive(Debug)]
pub struct LiveBackend {
    /// State of each server, same order as the plan's servers.
    pub servers: Vec<Arc<ServerState>>,
    /// The backend's queue, shared across plans by backend name.
    pub queue: Arc<BackendQueue>,
    /// Source stick table (`persistence: source`), shared across plans by backend name.
    pub stick: Option<Arc<Sticky>>,
    /// Backend counters, shared across plans by backend name.
    pub stats: Arc<BackendStats>,
}

impl LiveBackend {
    /// The server `client` sticks to (`persistence: source`), if any.
    pub fn stuck_server(&self, now: Instant, client: std::net::IpAddr) -> Option<ServerId> {
        locked(self.stick.as_ref()?).lookup(now, client)
    }

    /// Makes `client` stick to `server` (`persistence: source`; nothing otherwise).
    pub fn stick_to(&self, now: Instant, client: std::net::IpAddr, server: ServerId) {
        if let Some(t) = &self.stick {
            locked(t).insert(now, client, server);
        }
    }

    /// Unexpired stick-table entries, least recently used first (for the peer, or `show
    /// persistence`); `None` without source persistence.
    pub fn export_sticky(&self, now: Instant) -> Option<Vec<StickEntry>> {
        Some(locked(self.stick.as_ref()?).entries(now).collect())
    }

    /// Merges entries exported by the peer; false without source persistence.
    pub fn import_sticky(&self, now: Instant, entries: Vec<StickEntry>) -> bool {
        let Some(t) = &self.stick else {
            return false;
        };
        locked(t).import(now, entries);
        true
    }
}

/// Live part of a frontend in one snapshot.
#[derive(Debug)]
pub struct LiveFrontend {
    /// Connection limit (`maxconn`), shared across plans while the limit is unchanged.
    pub limit: Option<Arc<Semaphore>>,
    /// Frontend counters, shared across plans by frontend name.
    pub stats: Arc<FrontendStats>,
    /// Per-source protection state, when `protect` is set; shared while unchanged.
    pub sources: Option<Arc<SourceTable>>,
}

/// A plan bound to its live state: what the proxy swaps atomically on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled configuration.
    pub plan: Arc<Plan>,
    /// Increases by one per installed plan.
    pub generation: u64,
    /// Same order as `plan.frontends()`.
    pub frontends: Vec<LiveFrontend>,
    /// Same order as `plan.backends()`.
    pub backends: Vec<LiveBackend>,
}

/// Hands out live state by identity so it outlives any one plan.
///
/// Entries are weak: state disappears when no plan and no connection uses it anymore.
#[derive(Debug, Default)]
pub struct Registry {
    servers: Mutex<HashMap<ServerKey, Weak<ServerState>>>,
    queues: Mutex<HashMap<String, Weak<BackendQueue>>>,
    sticks: Mutex<HashMap<(String, Duration), Weak<Sticky>>>,
    backend_stats: Mutex<HashMap<String, Weak<BackendStats>>>,
    frontend_stats: Mutex<HashMap<String, Weak<FrontendStats>>>,
    limits: Mutex<HashMap<(String, u32), Weak<Semaphore>>>,
    sources: Mutex<HashMap<(String, crate::plan::Protect), Weak<SourceTable>>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// Binds `plan` to live state, reusing the state of unchanged servers, backends, limits.
    pub fn bind(&self, plan: Arc<Plan>, generation: u64) -> Snapshot {
        let mut servers = locked(&self.servers);
        let mut queues = locked(&self.queues);
        let mut sticks = locked(&self.sticks);
        let mut bstats = locked(&self.backend_stats);
        let mut fstats = locked(&self.frontend_stats);
        let mut limits = locked(&self.limits);
        let mut sources = locked(&self.sources);
        servers.retain(|_, w| w.strong_count() > 0);
        queues.retain(|_, w| w.strong_count() > 0);
        sticks.retain(|_, w| w.strong_count() > 0);
        bstats.retain(|_, w| w.strong_count() > 0);
        fstats.retain(|_, w| w.strong_count() > 0);
        limits.retain(|_, w| w.strong_count() > 0);
        sources.retain(|_, w| w.strong_count() > 0);
        let backends = plan
            .backends()
            .iter()
            .map(|b| {
                let states: Vec<Arc<ServerState>> = b
                    .servers
                    .iter()
                    .map(|s| {
                        let key = ServerKey {
                            backend: b.name.clone(),
                            server: s.name.clone(),
                            addr: s.addr,
                        };
                        let mut fresh = false;
                        let st = reuse(&mut servers, key.clone(), || {
                            fresh = true;
                            ServerState::new(key, b, s)
                        });
                        if !fresh {
                            st.rebind(b, s);
                        }
                        st
                    })
                    .collect();
                let stick = match &b.persistence {
                    Some(Persistence::Source { expire }) => {
                        let st = reuse(&mut sticks, (b.name.clone(), *expire), || {
                            // Capacity is a positive constant, so `new` cannot fail.
                            Mutex::new(
                                StickTable::new(STICK_TABLE_CAPACITY, *expire)
                                    .expect("positive stick table capacity"),
                            )
                        });
                        // Servers that left the backend lose their clients.
                        let mut t = locked(&st);
                        let gone: Vec<ServerId> = t
                            .entries(Instant::now())
                            .map(|e| e.server)
                            .filter(|id| !states.iter().any(|s| s.id == *id))
                            .collect();
                        for id in gone {
                            t.remove_server(id);
                        }
                        drop(t);
                        Some(st)
                    }
                    _ => None,
                };
                LiveBackend {
                    servers: states,
                    queue: reuse(&mut queues, b.name.clone(), BackendQueue::default),
                    stick,
                    stats: reuse(&mut bstats, b.name.clone(), BackendStats::default),
                }
            })
            .collect();
        let frontends = plan
            .frontends()
            .iter()
            .map(|f| LiveFrontend {
                limit: f.max_connections.map(|n| {
                    reuse(&mut limits, (f.name.clone(), n), || {
                        Semaphore::new(n as usize)
                    })
                }),
                stats: reuse(&mut fstats, f.name.clone(), FrontendStats::default),
                sources: f.protect.is_enabled().then(|| {
                    reuse(&mut sources, (f.name.clone(), f.protect), || {
                        SourceTable::new(f.protect)
                    })
                }),
            })
            .collect();
        Snapshot {
            plan,
            generation,
            frontends,
            backends,
        }
    }
}

fn reuse<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, Weak<V>>,
    key: K,
    make: impl FnOnce() -> V,
) -> Arc<V> {
    if let Some(v) = map.get(&key).and_then(Weak::upgrade) {
        return v;
    }
    let v = Arc::new(make());
    map.insert(key, Arc::downgrade(&v));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Frontend, Mode};

    fn plan(servers: &[(&str, u16)]) -> Arc<Plan> {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let servers = servers.iter().map(|&(n, p)| Server::new(n, a(p))).collect();
        Arc::new(
            Plan::new(
                vec![Frontend::new("web", Mode::Http, a(80), "app")],
                vec![Backend::new("app", Mode::Http, servers)],
            )
            .expect("valid"),
        )
    }

    #[test]
    fn state_survives_rebind_for_unchanged_servers_only() {
        let reg = Registry::default();
        let one = reg.bind(plan(&[("a", 1), ("b", 2)]), 1);
        let now = Instant::now();
        one.backends[0].servers[0].update(now, |m| m.set_admin(AdminState::Maint));
        one.backends[0].servers[0].set_runtime_weight(Some(7));
        let two = reg.bind(plan(&[("a", 1), ("b", 3)]), 2);
        assert_eq!(
            two.backends[0].servers[0].runtime_weight(),
            None,
            "a reload restores the configured weight"
        );
        assert!(Arc::ptr_eq(
            &one.backends[0].servers[0],
            &two.backends[0].servers[0]
        ));
        assert_eq!(
            two.backends[0].servers[0].status().admin,
            AdminState::Maint,
            "a runtime admin state survives a reload that does not change it"
        );
        assert!(!Arc::ptr_eq(
            &one.backends[0].servers[1],
            &two.backends[0].servers[1]
        ));
        assert!(Arc::ptr_eq(&one.backends[0].queue, &two.backends[0].queue));
    }

    #[test]
    fn status_packing_round_trips() {
        for admin in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
            for health in [Health::Up, Health::Down] {
                let s = Status { admin, health };
                assert_eq!(unpack(pack(s)), s);
            }
        }
    }

    #[test]
    fn coming_back_up_starts_slow_start() {
        let reg = Registry::default();
        let snap = reg.bind(plan(&[("a", 1)]), 1);
        let s = &snap.backends[0].servers[0];
        assert_eq!(s.up_since(), None);
        let now = Instant::now();
        s.update(now, |m| m.set_admin(AdminState::Maint))
            .expect("transition");
        assert!(!s.is_up());
        s.update(now, |m| m.set_admin(AdminState::Ready))
            .expect("transition");
        let since = s.up_since().expect("ramp origin");
        assert!(since.max(now) - since.min(now) < Duration::from_micros(2));
        assert_eq!(s.transitions(), 2);
    }
}
