//! Live state: what changes while the proxy runs, keyed so it survives reloads.
//!
//! Owns: [`ServerState`] (active requests, health, idle upstream connections, counters),
//! [`BackendQueue`] (the FIFO of requests waiting for a server slot), frontend connection
//! limits, the [`Registry`] that hands out the same state for the same identity across
//! plans, and the [`Snapshot`] (a plan bound to its live state) that the proxy swaps.
//! Does not own: the selection policy (`select`), the queue protocol (`queue`), or IO.
//! No lock here is ever held across an `.await`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::{Semaphore, oneshot};

use crate::plan::Plan;
use crate::select::Hysteresis;

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

/// Live state of one server, shared by every plan that contains it.
#[derive(Debug)]
pub struct ServerState {
    /// Its identity.
    pub key: ServerKey,
    /// Requests (http) or connections (tcp) in flight; bounded by `max_connections`.
    pub(crate) active: AtomicU32,
    /// Whether health checks consider it up; written only by its checker.
    up: AtomicBool,
    /// Hysteresis counters; locked only by the checker, never across an await.
    pub(crate) health: Mutex<Hysteresis>,
    /// Idle keep-alive connections, most recent last.
    pool: Mutex<Vec<SendRequest<Incoming>>>,
    /// Requests or connections sent to this server.
    pub(crate) sent: AtomicU64,
    /// Connect failures.
    pub(crate) connect_failures: AtomicU64,
    /// Health state transitions.
    pub(crate) transitions: AtomicU64,
}

impl ServerState {
    fn new(key: ServerKey) -> Self {
        Self {
            key,
            active: AtomicU32::new(0),
            up: AtomicBool::new(true),
            health: Mutex::new(Hysteresis::UP),
            pool: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
        }
    }

    /// Whether the server may receive traffic.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
        if !up {
            // Connections to a down server are not reused.
            self.pool.lock().expect("pool lock poisoned").clear();
        }
    }

    /// Requests or connections in flight now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    /// Health state transitions so far.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// Takes an idle connection from the pool, dropping closed ones; it may need `ready()`.
    pub(crate) fn take_idle(&self) -> Option<SendRequest<Incoming>> {
        let mut pool = self.pool.lock().expect("pool lock poisoned");
        while let Some(c) = pool.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Returns a connection to the pool if there is room.
    pub(crate) fn put_idle(&self, conn: SendRequest<Incoming>, max_idle: usize) {
        if conn.is_closed() || !self.is_up() {
            return;
        }
        let mut pool = self.pool.lock().expect("pool lock poisoned");
        if pool.len() < max_idle {
            pool.push(conn);
        }
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
        let mut q = self.waiters.lock().expect("queue lock poisoned");
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

/// Live part of a backend in one snapshot.
#[derive(Debug)]
pub struct LiveBackend {
    /// State of each server, same order as the plan's servers.
    pub servers: Vec<Arc<ServerState>>,
    /// The backend's queue, shared across plans by backend name.
    pub queue: Arc<BackendQueue>,
    /// Round-robin running weights; per plan, locked briefly, never across an await.
    pub(crate) rr: Mutex<Vec<i64>>,
}

/// Live part of a frontend in one snapshot.
#[derive(Debug)]
pub struct LiveFrontend {
    /// Connection limit (`maxconn`), shared across plans while the limit is unchanged.
    pub limit: Option<Arc<Semaphore>>,
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
    limits: Mutex<HashMap<(String, u32), Weak<Semaphore>>>,
}

impl Registry {
    /// Binds `plan` to live state, reusing the state of unchanged servers, backends, limits.
    pub fn bind(&self, plan: Arc<Plan>, generation: u64) -> Snapshot {
        let mut servers = self.servers.lock().expect("registry lock poisoned");
        let mut queues = self.queues.lock().expect("registry lock poisoned");
        let mut limits = self.limits.lock().expect("registry lock poisoned");
        servers.retain(|_, w| w.strong_count() > 0);
        queues.retain(|_, w| w.strong_count() > 0);
        limits.retain(|_, w| w.strong_count() > 0);
        let backends = plan
            .backends()
            .iter()
            .map(|b| {
                let states = b
                    .servers
                    .iter()
                    .map(|s| {
                        let key = ServerKey {
                            backend: b.name.clone(),
                            server: s.name.clone(),
                            addr: s.addr,
                        };
                        reuse(&mut servers, key.clone(), || ServerState::new(key))
                    })
                    .collect::<Vec<_>>();
                LiveBackend {
                    rr: Mutex::new(vec![0; states.len()]),
                    servers: states,
                    queue: reuse(&mut queues, b.name.clone(), BackendQueue::default),
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
    use crate::plan::{Backend, Frontend, Mode, Server};

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
        one.backends[0].servers[0].set_up(false);
        let two = reg.bind(plan(&[("a", 1), ("b", 3)]), 2);
        assert!(Arc::ptr_eq(
            &one.backends[0].servers[0],
            &two.backends[0].servers[0]
        ));
        assert!(!two.backends[0].servers[0].is_up());
        assert!(!Arc::ptr_eq(
            &one.backends[0].servers[1],
            &two.backends[0].servers[1]
        ));
        assert!(Arc::ptr_eq(&one.backends[0].queue, &two.backends[0].queue));
    }
}
