//! Per-source abuse protection (frontend `protect`): connection rate, request rate and
//! concurrent connections per client address.
//!
//! Owns: [`SourceTable`] (one per frontend with `protect`, shared across reloads while its
//! limits are unchanged), the rate estimator, and [`SourceGuard`] (a counted connection).
//! Does not own: what a refusal looks like to the client (`http` answers 429, `tcp` closes),
//! nor counting refusals in metrics beyond [`crate::metrics::FrontendStats::denied`].
//!
//! Rates use HAProxy's `freq_ctr` estimate: events in the current period plus the previous
//! period's count weighted by the part of it still inside the sliding window.
//!
//! Memory bound: at most [`MAX_SOURCES`] addresses are tracked per frontend (about 64 bytes
//! each, so about 4 MiB). When full, the address tracked longest ago is evicted (its counters
//! restart from zero; a connection of an evicted source still open is no longer counted).
//! The table lock is held for one hash-map operation, never across an await.
//!
//! Replication (config sync's runtime state, through the runtime API's `show rates` /
//! `import rates`): [`SourceTable::export`] lists every source whose rate estimate is not zero,
//! each counter relative to `now` ([`RateCounter`]), so the list can be replayed on the peer
//! with [`SourceTable::import`]; an imported counter replaces the local one only when its
//! estimate is higher (an abuser stays refused; a fresher local count is never lowered).
//! Concurrent connections are not replicated: they do not move across a failover.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::plan::{Protect, Rate};
use crate::stats::FrontendStats;

/// Most client addresses tracked per frontend.
pub const MAX_SOURCES: usize = 65_536;

/// Why a connection or request was refused; the index in `FrontendStats::denied`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too many new connections per period from this source.
    ConnectionRate = 0,
    /// Too many requests per period from this source.
    RequestRate = 1,
    /// Too many open connections from this source.
    Concurrent = 2,
}

impl Refusal {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        crate::stats::DENY_REASONS[self as usize]
    }
}

/// Admits a new connection on a frontend: the concurrency guard to keep while it lives, or
/// the refusal (counted in the frontend's `denied`).
pub(crate) fn admit(
    sources: Option<&Arc<SourceTable>>,
    stats: &FrontendStats,
    ip: IpAddr,
) -> Result<Option<SourceGuard>, Refusal> {
    let Some(t) = sources else {
        return Ok(None);
    };
    t.connect(ip, Instant::now()).inspect_err(|why| {
        stats.denied[*why as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
}

/// Admits a request from `ip` on a frontend with `sources`, or refuses it for its source's
/// request rate (counted in the frontend's `denied`).
pub(crate) fn admit_request(
    sources: Option<&Arc<SourceTable>>,
    stats: &FrontendStats,
    ip: IpAddr,
    now: Instant,
) -> Result<(), Refusal> {
    match sources {
        Some(t) if !t.request(ip, now) => {
            stats.denied[Refusal::RequestRate as usize]
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(Refusal::RequestRate)
        }
        _ => Ok(()),
    }
}

/// One rate counter of a source as exported: the sliding window relative to the export time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateCounter {
    /// Events counted in the current period.
    pub current: u32,
    /// Events counted in the previous period.
    pub previous: u32,
    /// How far into the current period the export was taken.
    pub elapsed: Duration,
    /// The period of the limit the counter was kept for.
    pub period: Duration,
}

impl RateCounter {
    /// Estimated events in the last period (HAProxy's `freq_ctr` estimate).
    pub fn estimate(&self) -> u64 {
        let per = self.period.as_nanos().max(1);
        let into = self.elapsed.as_nanos().min(per);
        let prev_part = (u128::from(self.previous) * (per - into)) / per;
        u64::try_from(u128::from(self.current) + prev_part).unwrap_or(u64::MAX)
    }
}

/// The rate state of one source, as exported for the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateEntry {
    /// The client address.
    pub client: IpAddr,
    /// Its new-connection counter, when `connection_rate` is limited.
    pub connections: Option<RateCounter>,
    /// Its request counter, when `request_rate` is limited.
    pub requests: Option<RateCounter>,
}

/// A sliding-window event counter (HAProxy `freq_ctr`).
#[derive(Clone, Copy, Debug)]
struct Freq {
    start: Instant,
    curr: u32,
    prev: u32,
}

impl Freq {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            curr: 0,
            prev: 0,
        }
    }

    /// Rotates periods up to `now`.
    fn rotate(&mut self, now: Instant, per: Duration) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= per {
            self.prev = if elapsed >= per * 2 { 0 } else { self.curr };
            self.curr = 0;
            let periods = elapsed.as_nanos() / per.as_nanos().max(1);
            let skip = u32::try_from(periods).unwrap_or(u32::MAX);
            self.start += per.saturating_mul(skip);
        }
    }

    /// Estimated events in the last `per`, counting one more now; false when over `rate`.
    fn admit(&mut self, now: Instant, rate: Rate) -> bool {
        self.rotate(now, rate.per);
        let into = now.saturating_duration_since(self.start).as_nanos();
        let per = rate.per.as_nanos().max(1);
        let prev_part = (u128::from(self.prev) * (per - into.min(per))) / per;
        let estimate = u128::from(self.curr) + prev_part;
        if estimate >= u128::from(rate.count) {
            return false;
        }
        self.curr = self.curr.saturating_add(1);
        true
    }

    /// The counter as of `now`, relative to it; `None` when it estimates no event.
    fn export(mut self, now: Instant, per: Duration) -> Option<RateCounter> {
        self.rotate(now, per);
        let c = RateCounter {
            current: self.curr,
            previous: self.prev,
            elapsed: now.saturating_duration_since(self.start).min(per),
            period: per,
        };
        (c.estimate() > 0).then_some(c)
    }

    /// A counter replaying `c` at `now` for a limit of period `per`. Counted for another
    /// period (the peer runs another configuration for a moment), its estimate becomes the
    /// current count of a period starting now: never less strict than the peer was.
    fn import(now: Instant, per: Duration, c: &RateCounter) -> Freq {
        if c.period == per {
            // A monotonic clock younger than `elapsed` (just booted): start the period now.
            let start = now.checked_sub(c.elapsed.min(per)).unwrap_or(now);
            Freq {
                start,
                curr: c.current,
                prev: c.previous,
            }
        } else {
            Freq {
                start: now,
                curr: u32::try_from(c.estimate()).unwrap_or(u32::MAX),
                prev: 0,
            }
        }
    }

    /// Replaces this counter by the imported `c` when `c` estimates more events at `now`.
    fn merge(&mut self, now: Instant, per: Duration, c: &RateCounter) {
        let local = self.export(now, per).map_or(0, |l| l.estimate());
        let theirs = Freq::import(now, per, c);
        if theirs.export(now, per).map_or(0, |t| t.estimate()) > local {
            *self = theirs;
        }
    }
}

#[derive(Debug)]
struct Entry {
    conns: Freq,
    reqs: Freq,
    open: u32,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<IpAddr, Entry>,
    /// Insertion order, for eviction; same keys as `map`.
    order: VecDeque<IpAddr>,
}

impl Inner {
    fn entry(&mut self, ip: IpAddr, now: Instant) -> &mut Entry {
        if !self.map.contains_key(&ip) {
            while self.map.len() >= MAX_SOURCES {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.map.remove(&old);
            }
            self.order.push_back(ip);
        }
        self.map.entry(ip).or_insert_with(|| Entry {
            conns: Freq::new(now),
            reqs: Freq::new(now),
            open: 0,
        })
    }
}

/// Per-source state of one frontend; see the module doc.
#[derive(Debug)]
pub struct SourceTable {
    limits: Protect,
    inner: Mutex<Inner>,
}

/// A connection counted against its source's concurrency; uncounted on drop.
#[derive(Debug)]
pub struct SourceGuard {
    table: Arc<SourceTable>,
    ip: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut inner = self.table.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.map.get_mut(&self.ip) {
            e.open = e.open.saturating_sub(1);
        }
    }
}

impl SourceTable {
    /// An empty table enforcing `limits`.
    pub fn new(limits: Protect) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn connect(
        self: &Arc<Self>,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Option<SourceGuard>, Refusal> {
        if self.limits.connection_rate.is_none() && self.limits.concurrent.is_none() {
            return Ok(None);
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = inner.entry(ip, now);
        if let Some(max) = self.limits.concurrent
            && e.open >= max
        {
            return Err(Refusal::Concurrent);
        }
        if let Some(rate) = self.limits.connection_rate
            && !e.conns.admit(now, rate)
        {
            return Err(Refusal::ConnectionRate);
        }
        if self.limits.concurrent.is_none() {
            return Ok(None);
        }
        e.open += 1;
        Ok(Some(SourceGuard {
            table: self.clone(),
            ip,
        }))
    }

    /// Admits a request from `ip`; false when it is over `request_rate`.
    pub fn request(&self, ip: IpAddr, now: Instant) -> bool {
        let Some(rate) = self.limits.request_rate else {
            return true;
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.entry(ip, now).reqs.admit(now, rate)
    }

    /// The rate state of every source with a non-zero estimate at `now`, tracked longest ago
    /// first, for the peer (see the module doc).
    pub fn export(&self, now: Instant) -> Vec<RateEntry> {
        let (conn_rate, req_rate) = (self.limits.connection_rate, self.limits.request_rate);
        if conn_rate.is_none() && req_rate.is_none() {
            return Vec::new();
        }
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .order
            .iter()
            .filter_map(|ip| {
                let e = inner.map.get(ip)?;
                let connections = conn_rate.and_then(|r| e.conns.export(now, r.per));
                let requests = req_rate.and_then(|r| e.reqs.export(now, r.per));
                (connections.is_some() || requests.is_some()).then_some(RateEntry {
                    client: *ip,
                    connections,
                    requests,
                })
            })
            .collect()
    }

    /// Merges rate state exported by the peer at `now` (see the module doc); counters for a
    /// limit this frontend does not have are ignored. Returns how many sources were merged.
    pub fn import(&self, now: Instant, entries: &[RateEntry]) -> usize {
        let (conn_rate, req_rate) = (self.limits.connection_rate, self.limits.request_rate);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut merged = 0;
        for r in entries {
            let conns = conn_rate.zip(r.connections);
            let reqs = req_rate.zip(r.requests);
            if conns.is_none() && reqs.is_none() {
                continue;
            }
            let e = inner.entry(r.client, now);
            if let Some((rate, c)) = conns {
                e.conns.merge(now, rate.per, &c);
            }
            if let Some((rate, c)) = reqs {
                e.reqs.merge(now, rate.per, &c);
            }
            merged += 1;
        }
        merged
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(n))
    }

    #[test]
    fn request_rate_is_per_source_and_recovers() {
        let t = SourceTable::new(Protect {
            request_rate: Some(Rate {
                count: 3,
                per: Duration::from_secs(1),
            }),
            ..Protect::default()
        });
        let now = Instant::now();
        let got: Vec<bool> = (0..5).map(|_| t.request(ip(1), now)).collect();
        assert_eq!(got, [true, true, true, false, false]);
        assert!(t.request(ip(2), now), "another source is served");
        // Two periods later the previous window no longer counts.
        assert!(t.request(ip(1), now + Duration::from_secs(2)));
    }

    #[test]
    fn concurrency_counts_open_connections() {
        let t = Arc::new(SourceTable::new(Protect {
            concurrent: Some(2),
            ..Protect::default()
        }));
        let now = Instant::now();
        let a = t.connect(ip(1), now).expect("first");
        let _b = t.connect(ip(1), now).expect("second");
        assert_eq!(t.connect(ip(1), now).err(), Some(Refusal::Concurrent));
        drop(a);
        assert!(t.connect(ip(1), now).is_ok(), "a slot freed");
    }

    fn limited(count: u32, secs: u64) -> SourceTable {
        SourceTable::new(Protect {
            request_rate: Some(Rate {
                count,
                per: Duration::from_secs(secs),
            }),
            connection_rate: Some(Rate {
                count: 1000,
                per: Duration::from_secs(secs),
            }),
            ..Protect::default()
        })
    }

    #[test]
    fn an_abuser_over_its_request_rate_stays_refused_on_the_peer() {
        let active = limited(5, 60);
        let passive = limited(5, 60);
        let now = Instant::now();
        while active.request(ip(1), now) {}
        assert!(active.request(ip(2), now), "a polite source");
        let exported = active.export(now + Duration::from_secs(3));
        assert_eq!(exported.len(), 2, "{exported:?}");
        let abuser = exported.iter().find(|e| e.client == ip(1)).expect("abuser");
        let reqs = abuser.requests.expect("request counter");
        assert_eq!((reqs.current, reqs.previous), (5, 0));
        assert_eq!(reqs.elapsed, Duration::from_secs(3));
        assert!(abuser.connections.is_none(), "no connection counted");

        // The passive node imports a moment later, on its own clock.
        let later = now + Duration::from_secs(10);
        assert_eq!(passive.import(later, &exported), 2);
        assert!(!passive.request(ip(1), later), "the abuser is refused");
        assert!(passive.request(ip(2), later), "the polite source is served");
        assert!(passive.request(ip(3), later), "an unknown source is served");
        // Two periods after the export, the abuser's window has passed.
        assert!(passive.request(ip(1), later + Duration::from_secs(120)));
    }

    #[test]
    fn idle_sources_are_not_exported_and_import_never_lowers_a_count() {
        let t = limited(5, 1);
        let now = Instant::now();
        t.request(ip(1), now);
        assert!(t.export(now + Duration::from_secs(3)).is_empty());
        // A local count of 4 is kept over an imported 1.
        let u = limited(5, 1);
        for _ in 0..4 {
            u.request(ip(1), now);
        }
        let one = RateEntry {
            client: ip(1),
            connections: None,
            requests: Some(RateCounter {
                current: 1,
                previous: 0,
                elapsed: Duration::ZERO,
                period: Duration::from_secs(1),
            }),
        };
        u.import(now, &[one]);
        assert!(u.request(ip(1), now), "the fifth request");
        assert!(!u.request(ip(1), now), "the sixth is over");
    }

    #[test]
    fn a_counter_of_another_period_is_imported_as_its_estimate() {
        let t = limited(5, 10);
        let now = Instant::now();
        let c = RateCounter {
            current: 2,
            previous: 10,
            elapsed: Duration::from_secs(30),
            period: Duration::from_secs(60),
        };
        assert_eq!(c.estimate(), 7);
        let entry = RateEntry {
            client: ip(9),
            connections: None,
            requests: Some(c),
        };
        t.import(now, &[entry]);
        assert!(!t.request(ip(9), now), "7 events estimated, over 5");
    }

    #[test]
    fn table_is_bounded() {
        let t = SourceTable::new(Protect {
            request_rate: Some(Rate {
                count: 1,
                per: Duration::from_secs(60),
            }),
            ..Protect::default()
        });
        let now = Instant::now();
        for n in 0..(MAX_SOURCES as u32 + 10) {
            t.request(ip(n), now);
        }
        assert_eq!(t.len(), MAX_SOURCES);
        assert!(
            t.request(ip(0), now),
            "the oldest source was evicted and starts afresh"
        );
    }
}
