//! Traffic counters: the atomics the request path bumps and the metrics and the runtime API
//! read.
//!
//! Owns: [`Counters`], [`FrontendStats`], [`BackendStats`] (atomics updated on the request
//! path, no lock, no allocation), the fixed label lists they are indexed by ([`CLASSES`],
//! [`DENY_REASONS`], [`BUCKETS_MS`]), and [`Sink`], where a request's body bytes are counted.
//! Does not own: metric names and the Prometheus text (`metrics`), when counters are bumped
//! (the request path, `health`, `protect`), nor any live or request state: a leaf module,
//! it imports nothing of the crate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the response-time histogram buckets, in milliseconds (fixed).
pub const BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// Status class labels, indexed by [`class_index`].
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// `protect` refusal reasons, indexed as in [`FrontendStats::denied`].
pub const DENY_REASONS: [&str; 3] = ["connection_rate", "request_rate", "concurrent"];

/// Index into [`CLASSES`] of an HTTP status code.
pub fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// Traffic counters shared by frontends, backends and servers.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions (connections or requests) started.
    pub sessions_total: AtomicU64,
    /// Body bytes from the client side.
    pub bytes_in: AtomicU64,
    /// Body bytes from the server side.
    pub bytes_out: AtomicU64,
    /// Responses by status class ([`CLASSES`]).
    pub status: [AtomicU64; 6],
    /// Response-time histogram: non-cumulative counts per [`BUCKETS_MS`] bucket, then `+Inf`.
    pub hist: [AtomicU64; 13],
    /// Sum of observed response times, in microseconds.
    pub hist_sum_us: AtomicU64,
}

impl Counters {
    /// Counts one response of `status`.
    pub fn response(&self, status: u16) {
        self.status[class_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one response time.
    pub fn observe(&self, d: Duration) {
        let ms = d.as_millis();
        let i = BUCKETS_MS
            .iter()
            .position(|&b| ms <= u128::from(b))
            .unwrap_or(BUCKETS_MS.len());
        self.hist[i].fetch_add(1, Ordering::Relaxed);
        self.hist_sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Responses by class, as plain numbers.
    pub fn statuses(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.status[i].load(Ordering::Relaxed))
    }
}

/// Counters of one frontend, shared across reloads by name.
#[derive(Debug, Default)]
pub struct FrontendStats {
    /// Traffic.
    pub counters: Counters,
    /// Client connections open now.
    pub current: AtomicU32,
    /// Refusals by [`DENY_REASONS`].
    pub denied: [AtomicU64; 3],
}

/// Counters of one backend, shared across reloads by name.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Traffic, including responses the proxy generated (503, 504) for this backend.
    pub counters: Counters,
}

/// Where body byte counts go: a frontend, a backend and one of its servers.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    pub(crate) frontend: Arc<FrontendStats>,
    pub(crate) backend: Arc<BackendStats>,
    pub(crate) server: Arc<Counters>,
}

impl Sink {
    pub(crate) fn bytes_in(&self, n: u64) {
        self.add(n, |c| &c.bytes_in);
    }

    pub(crate) fn bytes_out(&self, n: u64) {
        self.add(n, |c| &c.bytes_out);
    }

    /// Adds `n` to the counter `field` picks, in the frontend's, backend's and server's.
    fn add(&self, n: u64, field: impl Fn(&Counters) -> &AtomicU64) {
        if n == 0 {
            return;
        }
        for c in [
            &self.frontend.counters,
            &self.backend.counters,
            &*self.server,
        ] {
            field(c).fetch_add(n, Ordering::Relaxed);
        }
    }
}
