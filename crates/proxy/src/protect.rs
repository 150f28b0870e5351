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

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::live::LiveFrontend;
use crate::plan::{Protect, Rate};

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
        crate::metrics::DENY_REASONS[self as usize]
    }
}

/// Admits a new connection on a frontend: the concurrency guard to keep while it lives, or
/// the refusal (counted in the frontend's `denied`).
pub(crate) fn admit(fe: &LiveFrontend, ip: IpAddr) -> Result<Option<SourceGuard>, Refusal> {
    let Some(t) = &fe.sources else {
        return Ok(None);
    };
    t.connect(ip, Instant::now()).inspect_err(|why| {
        fe.stats.denied[*why as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
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
