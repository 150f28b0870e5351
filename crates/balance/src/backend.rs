//! The immutable backend snapshot and server selection.
//!
//! Owns [`Backend`] (built once per config load, shared as `Arc<Backend>` and swapped with
//! `ArcSwap` on reload), the [`LiveView`] through which it reads runtime state, and
//! [`Backend::pick`]. Must not own runtime state: health, admin state, active connections and
//! "up since" live with the caller (atomics in the proxy), so health flips never rebuild a
//! snapshot. Must not allocate on the pick path, read the clock, or hold a lock beyond one pick.
//!
//! # Pick contract
//!
//! [`Backend::pick`] takes `now`, the request's keys, a [`LiveView`] and an `exclude` list of
//! server indexes already tried for this request, and returns:
//! - [`Pick::Picked`]: connect there; on failure call again with that index added to `exclude`;
//! - [`Pick::AllFull`]: usable servers exist but all are at `max_connections`; queue and retry;
//! - [`Pick::NoServer`]: nothing can take the request; answer 503.
//!
//! A server takes new traffic when it is up, `Ready`, has a non-zero effective weight
//! ([`crate::effective_weight`], i.e. after slow start, of the runtime weight from
//! [`LiveView::weight`] or else the configured one) and is below `max_connections`.
//! Persistent users ([`Request::persist`]) also go to `Drain` and weight-0 servers, but fall back
//! to the algorithm when their server is down, in maintenance, full, excluded or gone
//! (HAProxy's `option redispatch`). Backups are considered only when no primary is usable;
//! "all primaries full" is [`Pick::AllFull`], not a reason to use backups (as in HAProxy).
//!
//! # Algorithms
//!
//! - `roundrobin`: nginx's smooth weighted round robin: each pick adds every usable server's
//!   effective weight to its counter, takes the highest counter and subtracts the total from it.
//!   Exact proportions over every window of `sum(weights)` picks, with the heavy server's picks
//!   interleaved rather than bunched. The counters sit behind a `Mutex` held for one O(N) pass.
//! - `leastconn`: lowest `(active + 1) / weight` (compared by cross-multiplication), scanning
//!   from a rotating start so ties go round robin.
//! - `source`, `uri`, `header`: weighted rendezvous hashing (see below).
//! - `first`: the first usable server in config order below its `max_connections`.
//! - `random`: two weighted random draws (rendezvous with a random key from a seeded
//!   SplitMix64), the one with lower `active / weight` wins, ties to the first draw (HAProxy's
//!   `random(2)`).
//!
//! # Why weighted rendezvous hashing rather than a ring or Maglev
//!
//! Each server scores every key with `-weight / ln(u)`, `u = hash(key, server id)` uniform in
//! (0, 1), and the highest score wins. Then:
//! - server `i` gets exactly `w_i / sum(w)` of the keys in expectation, with no virtual-node
//!   variance (a ring needs thousands of virtual nodes per server to be within 2%);
//! - when a server leaves, only its own keys move, each to its second choice: the minimal
//!   possible disruption, and the keys of every other server provably stay put;
//! - availability is evaluated during the scan, so down, full and excluded servers are skipped
//!   without rebuilding anything (a ring or Maglev table would need a rebuild on every health
//!   flip, or a walk with its own skew), and the "next choice" of a key is well defined;
//! - scores depend only on the stable [`ServerId`], so the mapping survives reloads, reordering
//!   and re-addressing, and is identical on both nodes.
//!
//! The cost is O(N) hash-and-log per pick, which is negligible next to a connect for the tens or
//! low hundreds of servers a backend has. Slow start changes the effective weight and so moves a
//! recovering server's keys back gradually.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::error::BalanceError;
use crate::hash::{SplitMix64, hash_bytes, rendezvous_score};
use crate::health::{Health, Status};
use crate::persist::canonical_ip;
use crate::server::{AdminState, BackendSpec, Balance, InitState, MAX_WEIGHT, Server, ServerId};
use crate::slowstart::effective_weight;

#[cfg(test)]
mod tests;

/// Runtime state of one server, as read by [`Backend::pick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// Admin state and health.
    pub status: Status,
    /// Connections currently open to the server.
    pub active: u32,
    /// When the server last went from down to up, for slow start; `None` if up since load time.
    pub up_since: Option<Instant>,
}

impl Live {
    /// Up, ready, idle, not ramping.
    pub const READY: Self = Self {
        status: Status {
            admin: AdminState::Ready,
            health: Health::Up,
        },
        active: 0,
        up_since: None,
    };
}

/// Read access to the runtime state of a snapshot's servers, by [`Server::index`].
///
/// The proxy implements it over its per-server atomics (re-keyed by [`ServerId`] on reload).
/// Values may change between calls; `pick` reads each server once per pass and tolerates that.
pub trait LiveView {
    /// Runtime state of the server at `index` (config order).
    fn live(&self, index: usize) -> Live;

    /// Weight set at runtime by the operator (HAProxy `set server weight`), replacing the
    /// configured [`Server::weight`] (capped at [`MAX_WEIGHT`]); `None` keeps the configured one.
    /// Slow start ramps towards this weight.
    fn weight(&self, index: usize) -> Option<u32> {
        let _ = index;
        None
    }
}

impl LiveView for [Live] {
    fn live(&self, index: usize) -> Live {
        self[index]
    }
}

impl LiveView for Vec<Live> {
    fn live(&self, index: usize) -> Live {
        self[index]
    }
}

impl<const N: usize> LiveView for [Live; N] {
    fn live(&self, index: usize) -> Live {
        self[index]
    }
}

/// The parts of a request that selection may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Client address (`source`).
    pub client_ip: IpAddr,
    /// Request path, query string allowed (`uri` hashes the part before `?`).
    pub path: &'a str,
    /// Value of the header named by [`Balance::header_name`], if present (`header`).
    pub header: Option<&'a [u8]>,
    /// Server the client is persisted to (decoded cookie or stick-table hit).
    pub persist: Option<ServerId>,
}

impl<'a> Request<'a> {
    /// A request from `client_ip` for `/`, without header value or persistence.
    pub fn new(client_ip: IpAddr) -> Self {
        Self {
            client_ip,
            path: "/",
            header: None,
            persist: None,
        }
    }

    /// Sets the path.
    pub fn path(mut self, path: &'a str) -> Self {
        self.path = path;
        self
    }

    /// Sets the hashed header's value.
    pub fn header(mut self, value: &'a [u8]) -> Self {
        self.header = Some(value);
        self
    }

    /// Sets the persisted server.
    pub fn persist(mut self, id: ServerId) -> Self {
        self.persist = Some(id);
        self
    }
}

/// A chosen server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    /// Index in the snapshot (for [`LiveView`] and `exclude`).
    pub index: usize,
    /// Stable id (for the cookie and stick table).
    pub id: ServerId,
    /// Chosen because of [`Request::persist`] rather than by the algorithm.
    pub persistent: bool,
}

/// Outcome of [`Backend::pick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Send the request to this server.
    Picked(Chosen),
    /// Usable servers exist but all are at `max_connections`: queue.
    AllFull,
    /// No server can take new traffic: 503.
    NoServer,
}

/// Availability of one server for one pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Down, maint, drain, weight 0 or excluded.
    Unusable,
    /// Usable but at `max_connections`.
    Full,
    /// Can take the request.
    Free {
        /// Effective weight (after slow start), > 0.
        weight: u32,
        /// Active connections.
        active: u32,
    },
}

/// Outcome of selection within primaries or backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupPick {
    Picked(usize),
    AllFull,
    None,
}

impl GroupPick {
    fn from_scan(best: Option<usize>, saw_full: bool) -> Self {
        match (best, saw_full) {
            (Some(i), _) => Self::Picked(i),
            (None, true) => Self::AllFull,
            (None, false) => Self::None,
        }
    }
}

/// Immutable backend snapshot plus the small mutable selection state (round-robin counters,
/// tie rotor, RNG); see the module doc for the pick contract and the algorithms.
#[derive(Debug)]
pub struct Backend {
    name: String,
    balance: Balance,
    servers: Vec<Server>,
    primaries: Vec<usize>,
    backups: Vec<usize>,
    all_backups: bool,
    by_id: HashMap<ServerId, usize>,
    /// SWRR current weights by server index. A poisoned lock is recovered: any counter values
    /// are valid, they only shift the rotation.
    rr: Mutex<Vec<i64>>,
    /// Start offset for leastconn scans, so ties rotate.
    rotor: AtomicUsize,
    rng: SplitMix64,
}

impl Backend {
    /// Validates `spec` and builds a snapshot; `seed` seeds the `random` algorithm.
    pub fn new(spec: BackendSpec, seed: u64) -> Result<Self, BalanceError> {
        if spec.balance.header_name().is_some_and(str::is_empty) {
            return Err(BalanceError::EmptyHeaderName {
                backend: spec.name.clone(),
            });
        }
        let mut servers = Vec::with_capacity(spec.servers.len());
        let mut by_id: HashMap<ServerId, usize> = HashMap::with_capacity(spec.servers.len());
        let mut names: HashMap<&str, usize> = HashMap::with_capacity(spec.servers.len());
        for (index, s) in spec.servers.iter().enumerate() {
            if s.name.is_empty() {
                return Err(BalanceError::EmptyServerName {
                    backend: spec.name.clone(),
                });
            }
            if s.weight > MAX_WEIGHT {
                return Err(BalanceError::InvalidWeight {
                    backend: spec.name.clone(),
                    server: s.name.clone(),
                    weight: s.weight,
                });
            }
            if names.insert(&s.name, index).is_some() {
                return Err(BalanceError::DuplicateServerName {
                    backend: spec.name.clone(),
                    server: s.name.clone(),
                });
            }
            let id =
                s.id.unwrap_or_else(|| ServerId::derive(&spec.name, &s.name));
            if let Some(first) = by_id.insert(id, index) {
                return Err(BalanceError::DuplicateServerId {
                    backend: spec.name.clone(),
                    id: id.to_string(),
                    first: spec.servers[first].name.clone(),
                    second: s.name.clone(),
                });
            }
            servers.push(Server {
                index,
                id,
                name: s.name.clone(),
                address: s.address,
                weight: s.weight,
                max_connections: s.max_connections,
                backup: s.backup,
                slow_start: s.slow_start,
                initial_admin: s.initial_admin,
                init_state: s.init_state,
                hash: hash_bytes(&id.0.to_le_bytes()),
            });
        }
        let (backups, primaries): (Vec<usize>, Vec<usize>) =
            (0..servers.len()).partition(|&i| servers[i].backup);
        Ok(Self {
            name: spec.name,
            balance: spec.balance,
            rr: Mutex::new(vec![0; servers.len()]),
            servers,
            primaries,
            backups,
            all_backups: spec.all_backups,
            by_id,
            rotor: AtomicUsize::new(0),
            rng: SplitMix64::new(seed),
        })
    }

    /// Backend name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Selection algorithm.
    pub fn balance(&self) -> &Balance {
        &self.balance
    }

    /// Servers in config order (`servers()[i].index == i`).
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// Server by stable id.
    pub fn server_by_id(&self, id: ServerId) -> Option<&Server> {
        self.by_id.get(&id).map(|&i| &self.servers[i])
    }

    /// Server by name.
    pub fn server_by_name(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// How many requests the servers that take new traffic hold at once: the sum of their
    /// `max_connections`, or [`crate::UNLIMITED`] when one of them has none. "Take new
    /// traffic" is decided exactly as in [`Backend::pick`]: up, `Ready`, non-zero effective
    /// weight; the usable primaries, or else the backups `pick` would use (the first usable
    /// one, all of them with `all_backups`). The input of [`crate::ClassQueue::handle_capacity`]:
    /// the caller recomputes it when a server's status, weight or slow start changes.
    pub fn capacity<L: LiveView + ?Sized>(&self, now: Instant, live: &L) -> u32 {
        let usable = |i: &&usize| self.slot(**i, now, live, &[]) != Slot::Unusable;
        let mut group: Vec<usize> = self.primaries.iter().filter(usable).copied().collect();
        if group.is_empty() {
            let mut backups = self.backups.iter().filter(usable).copied();
            group = if self.all_backups {
                backups.collect()
            } else {
                backups.next().into_iter().collect()
            };
        }
        let mut total: u32 = 0;
        for i in group {
            match self.servers[i].max_connections {
                None => return crate::UNLIMITED,
                Some(max) => total = total.saturating_add(max),
            }
        }
        total.min(crate::UNLIMITED - 1)
    }

    /// Runtime state at load time: admin and health from the spec, idle, not ramping.
    pub fn initial_live(&self) -> Vec<Live> {
        self.servers
            .iter()
            .map(|s| Live {
                status: Status {
                    admin: s.initial_admin,
                    health: match s.init_state {
                        InitState::FullyUp | InitState::Up => Health::Up,
                        InitState::Down | InitState::FullyDown => Health::Down,
                    },
                },
                active: 0,
                up_since: None,
            })
            .collect()
    }

    /// Chooses a server for `req`; see the module doc for the contract.
    ///
    /// `exclude` lists server indexes already tried for this request (small; scanned linearly).
    pub fn pick<L: LiveView + ?Sized>(
        &self,
        now: Instant,
        req: &Request<'_>,
        live: &L,
        exclude: &[usize],
    ) -> Pick {
        if let Some(chosen) = self.persistent(req, live, exclude) {
            return Pick::Picked(chosen);
        }
        let primary = self.pick_group(&self.primaries, now, req, live, exclude);
        let outcome = match primary {
            GroupPick::None if self.all_backups => {
                self.pick_group(&self.backups, now, req, live, exclude)
            }
            GroupPick::None => self.first_backup(now, live, exclude),
            other => other,
        };
        match outcome {
            GroupPick::Picked(index) => Pick::Picked(Chosen {
                index,
                id: self.servers[index].id,
                persistent: false,
            }),
            GroupPick::AllFull => Pick::AllFull,
            GroupPick::None => Pick::NoServer,
        }
    }

    fn persistent<L: LiveView + ?Sized>(
        &self,
        req: &Request<'_>,
        live: &L,
        exclude: &[usize],
    ) -> Option<Chosen> {
        let index = *self.by_id.get(&req.persist?)?;
        if exclude.contains(&index) {
            return None;
        }
        let state = live.live(index);
        let server = &self.servers[index];
        let full = server
            .max_connections
            .is_some_and(|max| state.active >= max);
        (state.status.accepts_persistent() && !full).then_some(Chosen {
            index,
            id: server.id,
            persistent: true,
        })
    }

    fn slot<L: LiveView + ?Sized>(
        &self,
        index: usize,
        now: Instant,
        live: &L,
        exclude: &[usize],
    ) -> Slot {
        if exclude.contains(&index) {
            return Slot::Unusable;
        }
        let state = live.live(index);
        if !state.status.accepts_new() {
            return Slot::Unusable;
        }
        let server = &self.servers[index];
        let since_up = state.up_since.map(|t| now.saturating_duration_since(t));
        let configured = live
            .weight(index)
            .map_or(server.weight, |w| w.min(MAX_WEIGHT));
        let weight = effective_weight(configured, since_up, server.slow_start);
        if weight == 0 {
            return Slot::Unusable;
        }
        if server
            .max_connections
            .is_some_and(|max| state.active >= max)
        {
            return Slot::Full;
        }
        Slot::Free {
            weight,
            active: state.active,
        }
    }

    fn pick_group<L: LiveView + ?Sized>(
        &self,
        group: &[usize],
        now: Instant,
        req: &Request<'_>,
        live: &L,
        exclude: &[usize],
    ) -> GroupPick {
        match &self.balance {
            Balance::RoundRobin => self.round_robin(group, now, live, exclude),
            Balance::LeastConn => self.least_conn(group, now, live, exclude),
            Balance::Source => {
                let key = match canonical_ip(req.client_ip) {
                    IpAddr::V4(v4) => hash_bytes(&v4.octets()),
                    IpAddr::V6(v6) => hash_bytes(&v6.octets()),
                };
                self.rendezvous(group, key, now, live, exclude)
            }
            Balance::Uri => {
                let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
                self.rendezvous(group, hash_bytes(path.as_bytes()), now, live, exclude)
            }
            Balance::Header(_) => match req.header {
                Some(value) if !value.is_empty() => {
                    self.rendezvous(group, hash_bytes(value), now, live, exclude)
                }
                // HAProxy: "if the header is absent ... the roundrobin algorithm is applied".
                _ => self.round_robin(group, now, live, exclude),
            },
            Balance::First => self.first(group, now, live, exclude),
            Balance::Random => self.random(group, now, live, exclude),
        }
    }

    fn round_robin<L: LiveView + ?Sized>(
        &self,
        group: &[usize],
        now: Instant,
        live: &L,
        exclude: &[usize],
    ) -> GroupPick {
        let mut current = self
            .rr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        let mut saw_full = false;
        for &i in group {
            match self.slot(i, now, live, exclude) {
                Slot::Unusable => {}
                Slot::Full => saw_full = true,
                Slot::Free { weight, .. } => {
                    current[i] += i64::from(weight);
                    total += i64::from(weight);
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
            }
        }
        if let Some(b) = best {
            current[b] -= total;
        }
        GroupPick::from_scan(best, saw_full)
    }

    fn least_conn<L: LiveView + ?Sized>(
        &self,
        group: &[usize],
        now: Instant,
        live: &L,
        exclude: &[usize],
    ) -> GroupPick {
        if group.is_empty() {
            return GroupPick::None;
        }
        // The rotor advances only when this group produced a pick, so a pick that scans the
        // primaries in vain and then the backups still rotates the backups by one. Concurrent
        // picks may read the same value: that only repeats a start offset, which is harmless.
        let start = self.rotor.load(Ordering::Relaxed) % group.len();
        let mut best: Option<(usize, u64, u64)> = None;
        let mut saw_full = false;
        for k in 0..group.len() {
            let i = group[(start + k) % group.len()];
            match self.slot(i, now, live, exclude) {
                Slot::Unusable => {}
                Slot::Full => saw_full = true,
                Slot::Free { weight, active } => {
                    let (load, weight) = (u64::from(active) + 1, u64::from(weight));
                    // load / weight < best_load / best_weight, without division.
                    if best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
                        best = Some((i, load, weight));
                    }
                }
            }
        }
        if best.is_some() {
            self.rotor.fetch_add(1, Ordering::Relaxed);
        }
        GroupPick::from_scan(best.map(|(i, _, _)| i), saw_full)
    }

    fn rendezvous<L: LiveView + ?Sized>(
        &self,
        group: &[usize],
        key: u64,
        now: Instant,
        live: &L,
        exclude: &[usize],
    ) -> GroupPick {
        let mut best: Option<(usize, f64)> = None;
        let mut saw_full = false;
        for &i in group {
            match self.slot(i, now, live, exclude) {
                Slot::Unusable => {}
                Slot::Full => saw_full = true,
                Slot::Free { weight, .. } => {
                    let score = rendezvous_score(key, self.servers[i].hash, weight);
                    if best.is_none_or(|(_, s)| score > s) {
                        best = Some((i, score));
                    }
                }
            }
        }
        GroupPick::from_scan(best.map(|(i, _)| i), saw_full)
    }

    fn first<L: LiveView + ?Sized>(
        &self,
        group: &[usize],
        now: Instant,
        live: &L,
        exclude: &[usize],
    ) -> GroupPick {
        let mut saw_full = false;
        for &i in group {
            match self.slot(i, now, live, exclude) {
                Slot::Unusable => {}
                Slot::Full => saw_full = true,
                Slot::Free { .. } => return GroupPick::Picked(i),
            }
        }
        GroupPick::from_scan(None, saw_full)
    }

    fn random<L: LiveView + ?Sized>(
        &self,
        group: &[usize],
        now: Instant,
        live: &L,
        exclude: &[usize],
    ) -> GroupPick {
        let (k1, k2) = (self.rng.next_u64(), self.rng.next_u64());
        // (index, score, weight, active) of the winner of each draw, found in one pass.
        let mut draws: [Option<(usize, f64, u32, u32)>; 2] = [None, None];
        let mut saw_full = false;
        for &i in group {
            match self.slot(i, now, live, exclude) {
                Slot::Unusable => {}
                Slot::Full => saw_full = true,
                Slot::Free { weight, active } => {
                    for (draw, key) in draws.iter_mut().zip([k1, k2]) {
                        let score = rendezvous_score(key, self.servers[i].hash, weight);
                        if draw.is_none_or(|(_, s, _, _)| score > s) {
                            *draw = Some((i, score, weight, active));
                        }
                    }
                }
            }
        }
        let best = match draws {
            [Some((i1, _, w1, a1)), Some((i2, _, w2, a2))] => {
                // The second draw wins only if strictly less loaded: a2/w2 < a1/w1.
                if u64::from(a2) * u64::from(w1) < u64::from(a1) * u64::from(w2) {
                    Some(i2)
                } else {
                    Some(i1)
                }
            }
            _ => None,
        };
        GroupPick::from_scan(best, saw_full)
    }

    /// Without `all_backups`, only the first usable backup in config order takes traffic.
    fn first_backup<L: LiveView + ?Sized>(
        &self,
        now: Instant,
        live: &L,
        exclude: &[usize],
    ) -> GroupPick {
        for &i in &self.backups {
            match self.slot(i, now, live, exclude) {
                Slot::Unusable => {}
                Slot::Full => return GroupPick::AllFull,
                Slot::Free { .. } => return GroupPick::Picked(i),
            }
        }
        GroupPick::None
    }
}
