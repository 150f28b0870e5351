//! Source-IP stickiness table with expiry and a size bound.
//!
//! Owns [`StickTable`]: client IP → [`ServerId`], the "show persistence table" view and the
//! export/import used to replicate entries to the peer node. Cookie persistence needs no table:
//! the cookie carries the [`ServerId`] itself (see [`ServerId::to_cookie`]).
//!
//! Must not read the clock, lock, or do IO: every call takes `now`, methods take `&mut self`,
//! and the proxy wraps the table in a short `Mutex` held for one call (never across an await).
//! Whether a looked-up server is still usable is decided by [`crate::Backend::pick`], which
//! falls back to the algorithm for dead or maint servers and keeps drain servers' users.
//!
//! Expiry and eviction: an entry expires `expire` after it was last inserted or looked up (a hit
//! refreshes it, like HAProxy's `stick on` which both matches and stores). Because the expiry is
//! a constant after the last touch, "least recently used" and "expires soonest" are the same
//! order, kept in one `BTreeMap` keyed by a touch sequence number. When the table is full an
//! insert evicts the least recently used entry (which is the oldest, expired or not).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::error::BalanceError;
use crate::server::ServerId;

/// One stick-table entry, as shown to operators and shipped to the peer.
///
/// The expiry is relative (`expires_in`) because `Instant`s mean nothing on another machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StickEntry {
    /// Client address (IPv4-mapped IPv6 addresses are stored as IPv4).
    pub client: IpAddr,
    /// Server the client sticks to.
    pub server: ServerId,
    /// Remaining lifetime at the time of export.
    pub expires_in: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    server: ServerId,
    expires_at: Instant,
    seq: u64,
}

/// Bounded client IP → server table with expiry; see the module doc for the eviction rule.
///
/// Request flow in the proxy: `lookup(now, ip)` → [`crate::Request::persist`] →
/// [`crate::Backend::pick`]; when the chosen server is not `persistent` (new client, or its
/// server died), `insert(now, ip, chosen.id)` so the client sticks to the new server.
#[derive(Debug, Clone)]
pub struct StickTable {
    expire: Duration,
    capacity: usize,
    map: HashMap<IpAddr, Slot>,
    /// Touch order: oldest first. Same keys as `map`.
    order: BTreeMap<u64, IpAddr>,
    next_seq: u64,
}

/// Stores IPv4-mapped IPv6 clients under their IPv4 address, so dual-stack listeners agree.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl StickTable {
    /// An empty table holding at most `capacity` entries, each living `expire` after last use.
    pub fn new(capacity: usize, expire: Duration) -> Result<Self, BalanceError> {
        if capacity == 0 {
            return Err(BalanceError::ZeroCapacity);
        }
        Ok(Self {
            expire,
            capacity,
            map: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        })
    }

    /// Number of entries stored (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table holds no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Server for `client` if an unexpired entry exists; a hit refreshes the entry's expiry.
    pub fn lookup(&mut self, now: Instant, client: IpAddr) -> Option<ServerId> {
        let client = canonical_ip(client);
        let slot = *self.map.get(&client)?;
        if slot.expires_at <= now {
            self.remove(client);
            return None;
        }
        self.touch(client, slot.server, now + self.expire);
        Some(slot.server)
    }

    /// Records that `client` sticks to `server` from `now` on for `expire`.
    pub fn insert(&mut self, now: Instant, client: IpAddr, server: ServerId) {
        self.purge_expired(now);
        self.touch(canonical_ip(client), server, now + self.expire);
    }

    /// Forgets `client`; returns the server it was stuck to.
    pub fn remove(&mut self, client: IpAddr) -> Option<ServerId> {
        let slot = self.map.remove(&canonical_ip(client))?;
        self.order.remove(&slot.seq);
        Some(slot.server)
    }

    /// Forgets every client stuck to `server` (e.g. the server was removed from the config).
    pub fn remove_server(&mut self, server: ServerId) {
        let map = &mut self.map;
        self.order.retain(|_, client| {
            let keep = map.get(client).is_some_and(|slot| slot.server != server);
            if !keep {
                map.remove(client);
            }
            keep
        });
    }

    /// Drops every entry expired at `now`.
    pub fn purge_expired(&mut self, now: Instant) {
        // Touch order is expiry order, so expired entries are a prefix of `order`.
        while let Some((&seq, &client)) = self.order.first_key_value() {
            if self.map[&client].expires_at > now {
                break;
            }
            self.order.remove(&seq);
            self.map.remove(&client);
        }
    }

    /// Unexpired entries, least recently used first ("show persistence table", replication).
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = StickEntry> + '_ {
        self.order.values().filter_map(move |client| {
            let slot = &self.map[client];
            (slot.expires_at > now).then(|| StickEntry {
                client: *client,
                server: slot.server,
                expires_in: slot.expires_at - now,
            })
        })
    }

    /// Merges entries exported by the peer (see [`StickTable::entries`]).
    ///
    /// Each entry's lifetime is capped at this table's `expire`. An existing local entry that
    /// outlives the imported one wins (it was used more recently). Entries are applied in the
    /// given order, so an LRU-first export keeps its recency order here, and the size bound holds.
    pub fn import(&mut self, now: Instant, entries: impl IntoIterator<Item = StickEntry>) {
        self.purge_expired(now);
        for entry in entries {
            if entry.expires_in.is_zero() {
                continue;
            }
            let client = canonical_ip(entry.client);
            let expires_at = now + entry.expires_in.min(self.expire);
            if self
                .map
                .get(&client)
                .is_some_and(|slot| slot.expires_at >= expires_at)
            {
                continue;
            }
            self.touch(client, entry.server, expires_at);
        }
    }

    /// Upserts `client` as most recently used, evicting the least recently used if full.
    fn touch(&mut self, client: IpAddr, server: ServerId, expires_at: Instant) {
        if let Some(old) = self.map.get(&client) {
            self.order.remove(&old.seq);
        } else if self.map.len() >= self.capacity
            && let Some((_, victim)) = self.order.pop_first()
        {
            self.map.remove(&victim);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, client);
        self.map.insert(
            client,
            Slot {
                server,
                expires_at,
                seq,
            },
        );
        debug_assert_eq!(self.map.len(), self.order.len());
        debug_assert!(self.map.len() <= self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn zero_capacity_rejected() {
        assert_eq!(
            StickTable::new(0, secs(1)).err(),
            Some(BalanceError::ZeroCapacity)
        );
    }

    #[test]
    fn lookup_insert_and_expiry() {
        let t0 = Instant::now();
        let mut t = StickTable::new(10, secs(30)).unwrap();
        assert_eq!(t.lookup(t0, ip(1)), None);
        t.insert(t0, ip(1), ServerId(7));
        assert_eq!(t.lookup(t0 + secs(29), ip(1)), Some(ServerId(7)));
        // The hit at 29 s refreshed the entry until 59 s.
        assert_eq!(t.lookup(t0 + secs(58), ip(1)), Some(ServerId(7)));
        assert_eq!(t.lookup(t0 + secs(88), ip(1)), None);
        assert!(t.is_empty(), "expired entry is dropped on lookup");
    }

    #[test]
    fn expiry_without_refresh() {
        let t0 = Instant::now();
        let mut t = StickTable::new(10, secs(30)).unwrap();
        t.insert(t0, ip(1), ServerId(7));
        assert_eq!(t.lookup(t0 + secs(30), ip(1)), None);
    }

    #[test]
    fn size_bound_evicts_least_recently_used() {
        let t0 = Instant::now();
        let mut t = StickTable::new(3, secs(60)).unwrap();
        t.insert(t0, ip(1), ServerId(1));
        t.insert(t0, ip(2), ServerId(2));
        t.insert(t0, ip(3), ServerId(3));
        // Touch 1 so 2 becomes the least recently used.
        assert_eq!(t.lookup(t0 + secs(1), ip(1)), Some(ServerId(1)));
        t.insert(t0 + secs(2), ip(4), ServerId(4));
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(t0 + secs(3), ip(2)), None);
        for n in [1, 3, 4] {
            assert_eq!(t.lookup(t0 + secs(3), ip(n)), Some(ServerId(n.into())));
        }
    }

    #[test]
    fn mapped_ipv6_is_stored_as_ipv4() {
        let t0 = Instant::now();
        let mut t = StickTable::new(3, secs(60)).unwrap();
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        t.insert(t0, IpAddr::V6(v4.to_ipv6_mapped()), ServerId(9));
        assert_eq!(t.lookup(t0, IpAddr::V4(v4)), Some(ServerId(9)));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        t.insert(t0, v6, ServerId(10));
        assert_eq!(t.lookup(t0, v6), Some(ServerId(10)));
    }

    #[test]
    fn entries_export_import_round_trip() {
        let t0 = Instant::now();
        let mut a = StickTable::new(10, secs(60)).unwrap();
        a.insert(t0, ip(1), ServerId(1));
        a.insert(t0 + secs(10), ip(2), ServerId(2));
        let exported: Vec<StickEntry> = a.entries(t0 + secs(20)).collect();
        assert_eq!(
            exported,
            vec![
                StickEntry {
                    client: ip(1),
                    server: ServerId(1),
                    expires_in: secs(40)
                },
                StickEntry {
                    client: ip(2),
                    server: ServerId(2),
                    expires_in: secs(50)
                },
            ]
        );
        // The peer's clock is unrelated; only relative lifetimes travel.
        let p0 = t0 + secs(1_000);
        let mut b = StickTable::new(10, secs(60)).unwrap();
        b.insert(p0, ip(2), ServerId(99));
        b.import(p0, exported.iter().copied());
        assert_eq!(b.lookup(p0, ip(1)), Some(ServerId(1)));
        assert_eq!(
            b.lookup(p0 + secs(1), ip(2)),
            Some(ServerId(99)),
            "local fresher entry wins"
        );
        assert_eq!(
            b.lookup(p0 + secs(40), ip(1)),
            Some(ServerId(1)),
            "refreshed by the hit at p0"
        );
    }

    #[test]
    fn import_caps_lifetime_and_respects_bound() {
        let t0 = Instant::now();
        let mut t = StickTable::new(2, secs(10)).unwrap();
        let entries = (1..=5).map(|n| StickEntry {
            client: ip(n),
            server: ServerId(n.into()),
            expires_in: secs(3_600),
        });
        t.import(t0, entries);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.entries(t0).map(|e| e.client).collect::<Vec<_>>(),
            vec![ip(4), ip(5)]
        );
        assert!(t.entries(t0).all(|e| e.expires_in == secs(10)));
    }

    #[test]
    fn remove_server_forgets_its_clients() {
        let t0 = Instant::now();
        let mut t = StickTable::new(10, secs(10)).unwrap();
        for n in 0..6 {
            t.insert(t0, ip(n), ServerId(u64::from(n % 2)));
        }
        t.remove_server(ServerId(0));
        assert_eq!(t.len(), 3);
        assert!(t.entries(t0).all(|e| e.server == ServerId(1)));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Under any mix of inserts and lookups with time moving forward, the bound holds,
            /// the two indexes agree, and a lookup never returns an expired mapping.
            #[test]
            fn bounded_and_consistent(
                ops in proptest::collection::vec((any::<bool>(), 0u32..20, 0u64..5), 0..200),
                cap in 1usize..8,
            ) {
                let t0 = Instant::now();
                let mut now = t0;
                let mut t = StickTable::new(cap, secs(6)).unwrap();
                let mut last_set: HashMap<IpAddr, (ServerId, Instant)> = HashMap::new();
                for (is_insert, n, dt) in ops {
                    now += secs(dt);
                    if is_insert {
                        t.insert(now, ip(n), ServerId(n.into()));
                        last_set.insert(ip(n), (ServerId(n.into()), now));
                    } else if let Some(server) = t.lookup(now, ip(n)) {
                        prop_assert_eq!(server, ServerId(n.into()));
                        prop_assert!(last_set.contains_key(&ip(n)));
                    }
                    prop_assert!(t.len() <= cap);
                    prop_assert_eq!(t.map.len(), t.order.len());
                }
            }
        }
    }
}
