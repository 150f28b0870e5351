//! Metrics: every metric name, the counters behind them, and the Prometheus text endpoint.
//!
//! Owns: [`render`] (Prometheus text format 0.0.4 from a snapshot) and
//! [`spawn`] (a tiny http server answering `GET /metrics` on `metrics.listen`, with basic
//! authentication when `metrics.auth` is set, and bounds so slow scrapers cannot stall it).
//! Does not own: when counters are bumped (`http`, `tcp`, `health`, `protect`), nor the
//! runtime API's JSON view (`api`), which reads the same counters.
//!
//! # How to add a metric
//!
//! 1. Add its name as a `const` in the list below (prefix `tandem_`, unit suffix, `_total`
//!    for counters) with a doc line; the name is the only place it is spelled.
//! 2. Store it as an atomic in [`Counters`] (per frontend, backend and server) or in the
//!    specific stats struct, and bump it where the event happens with `Relaxed` ordering.
//! 3. Emit it in [`render`] with `family` (HELP and TYPE once) and `sample`.
//!
//! Labels are bounded on purpose: `frontend`, `backend` and `server` come from the
//! configuration (bounded by it), `class` has six values (`1xx`..`5xx`, `other`), `reason`
//! and `le` are fixed lists here. Never label with a client address, path or header.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, error, info};

pub use crate::stats::{
    BUCKETS_MS, BackendStats, CLASSES, Counters, DENY_REASONS, FrontendStats, class_index,
};

use crate::basic_auth::BasicAuth;
use crate::body::ProxyBody;
use crate::idle::IdleIo;
use crate::live::Snapshot;
use crate::proxy::Proxy;

/// Client connections open now, per frontend.
pub const FRONTEND_SESSIONS_CURRENT: &str = "tandem_frontend_sessions_current";
/// Client connections accepted, per frontend.
pub const FRONTEND_SESSIONS_TOTAL: &str = "tandem_frontend_sessions_total";
/// Request body bytes received from clients, per frontend.
pub const FRONTEND_BYTES_IN: &str = "tandem_frontend_bytes_in_total";
/// Response body bytes sent to clients, per frontend.
pub const FRONTEND_BYTES_OUT: &str = "tandem_frontend_bytes_out_total";
/// Responses by status class, per frontend.
pub const FRONTEND_REQUESTS: &str = "tandem_frontend_requests_total";
/// Connections or requests refused by `protect`, per frontend and reason.
pub const FRONTEND_DENIED: &str = "tandem_frontend_denied_total";
/// Requests or connections in flight to servers, per backend.
pub const BACKEND_SESSIONS_CURRENT: &str = "tandem_backend_sessions_current";
/// Requests or connections sent to servers, per backend.
pub const BACKEND_SESSIONS_TOTAL: &str = "tandem_backend_sessions_total";
/// Request body bytes sent to servers, per backend.
pub const BACKEND_BYTES_IN: &str = "tandem_backend_bytes_in_total";
/// Response body bytes received from servers, per backend.
pub const BACKEND_BYTES_OUT: &str = "tandem_backend_bytes_out_total";
/// Responses by status class, per backend (proxy errors such as 503 included).
pub const BACKEND_REQUESTS: &str = "tandem_backend_requests_total";
/// Requests waiting in the backend queue now.
pub const BACKEND_QUEUE: &str = "tandem_backend_queue_length";
/// Time from request to response head, per backend.
pub const BACKEND_RESPONSE_TIME: &str = "tandem_backend_response_time_seconds";
/// Requests or connections in flight, per server.
pub const SERVER_SESSIONS_CURRENT: &str = "tandem_server_sessions_current";
/// Requests or connections sent, per server.
pub const SERVER_SESSIONS_TOTAL: &str = "tandem_server_sessions_total";
/// Request body bytes sent, per server.
pub const SERVER_BYTES_IN: &str = "tandem_server_bytes_in_total";
/// Response body bytes received, per server.
pub const SERVER_BYTES_OUT: &str = "tandem_server_bytes_out_total";
/// Responses by status class, per server.
pub const SERVER_REQUESTS: &str = "tandem_server_requests_total";
/// 1 when the server's health is up, else 0.
pub const SERVER_UP: &str = "tandem_server_up";
/// 1 when the server takes new users (up and ready), else 0.
pub const SERVER_ACTIVE: &str = "tandem_server_accepting";
/// Weight in use (runtime `set server weight`, else configured), per server.
pub const SERVER_WEIGHT: &str = "tandem_server_weight";
/// Weight after slow start, per server.
pub const SERVER_EFFECTIVE_WEIGHT: &str = "tandem_server_effective_weight";
/// Status changes (health and admin), per server.
pub const SERVER_TRANSITIONS: &str = "tandem_server_transitions_total";
/// Failed connects to the server, per server.
pub const SERVER_CONNECT_FAILURES: &str = "tandem_server_connect_failures_total";
/// Time from request to response head, per server.
pub const SERVER_RESPONSE_TIME: &str = "tandem_server_response_time_seconds";

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn hist(out: &mut String, name: &str, labels: &str, c: &Counters) {
    let mut cum = 0u64;
    for (i, b) in BUCKETS_MS.iter().enumerate() {
        cum += c.hist[i].load(Ordering::Relaxed);
        let le = *b as f64 / 1000.0;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
    }
    cum += c.hist[BUCKETS_MS.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
    let sum = c.hist_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
}

/// One sample per status class of `c`.
fn classes(out: &mut String, name: &str, labels: &str, c: &Counters) {
    for (i, v) in c.statuses().iter().enumerate() {
        let _ = writeln!(out, "{name}{{{labels},class=\"{}\"}} {v}", CLASSES[i]);
    }
}

/// Escapes a label value (names are config tokens, but be safe).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric of `snap` in the Prometheus text format.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let plan = &snap.plan;
    let r = Ordering::Relaxed;
    let fes: Vec<(String, &crate::live::LiveFrontend)> = plan
        .frontends()
        .iter()
        .zip(&snap.frontends)
        .map(|(f, l)| (format!("frontend=\"{}\"", esc(&f.name)), l))
        .collect();
    let gauge_or_counter =
        |out: &mut String, name: &str, kind: &str, help: &str, vals: Vec<(String, u64)>| {
            family(out, name, kind, help);
            for (labels, v) in vals {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        };
    gauge_or_counter(
        &mut out,
        FRONTEND_SESSIONS_CURRENT,
        "gauge",
        "Client connections open now.",
        fes.iter()
            .map(|(l, f)| (l.clone(), u64::from(f.stats.current.load(r))))
            .collect(),
    );
    gauge_or_counter(
        &mut out,
        FRONTEND_SESSIONS_TOTAL,
        "counter",
        "Client connections accepted.",
        fes.iter()
            .map(|(l, f)| (l.clone(), f.stats.counters.sessions_total.load(r)))
            .collect(),
    );
    gauge_or_counter(
        &mut out,
        FRONTEND_BYTES_IN,
        "counter",
        "Request body bytes from clients.",
        fes.iter()
            .map(|(l, f)| (l.clone(), f.stats.counters.bytes_in.load(r)))
            .collect(),
    );
    gauge_or_counter(
        &mut out,
        FRONTEND_BYTES_OUT,
        "counter",
        "Response body bytes to clients.",
        fes.iter()
            .map(|(l, f)| (l.clone(), f.stats.counters.bytes_out.load(r)))
            .collect(),
    );
    family(
        &mut out,
        FRONTEND_REQUESTS,
        "counter",
        "Responses by status class.",
    );
    for (l, f) in &fes {
        classes(&mut out, FRONTEND_REQUESTS, l, &f.stats.counters);
    }
    family(
        &mut out,
        FRONTEND_DENIED,
        "counter",
        "Refusals by protect, by reason.",
    );
    for (l, f) in &fes {
        for (i, reason) in DENY_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{FRONTEND_DENIED}{{{l},reason=\"{reason}\"}} {}",
                f.stats.denied[i].load(r)
            );
        }
    }

    let bes: Vec<(String, &crate::live::LiveBackend)> = plan
        .backends()
        .iter()
        .zip(&snap.backends)
        .map(|(b, l)| (format!("backend=\"{}\"", esc(&b.name)), l))
        .collect();
    gauge_or_counter(
        &mut out,
        BACKEND_SESSIONS_CURRENT,
        "gauge",
        "Requests or connections in flight to servers.",
        bes.iter()
            .map(|(l, b)| {
                (
                    l.clone(),
                    b.servers.iter().map(|s| u64::from(s.active())).sum(),
                )
            })
            .collect(),
    );
    gauge_or_counter(
        &mut out,
        BACKEND_SESSIONS_TOTAL,
        "counter",
        "Requests or connections sent to servers.",
        bes.iter()
            .map(|(l, b)| (l.clone(), b.stats.counters.sessions_total.load(r)))
            .collect(),
    );
    gauge_or_counter(
        &mut out,
        BACKEND_BYTES_IN,
        "counter",
        "Request body bytes sent to servers.",
        bes.iter()
            .map(|(l, b)| (l.clone(), b.stats.counters.bytes_in.load(r)))
            .collect(),
    );
    gauge_or_counter(
        &mut out,
        BACKEND_BYTES_OUT,
        "counter",
        "Response body bytes from servers.",
        bes.iter()
            .map(|(l, b)| (l.clone(), b.stats.counters.bytes_out.load(r)))
            .collect(),
    );
    gauge_or_counter(
        &mut out,
        BACKEND_QUEUE,
        "gauge",
        "Requests waiting in the queue.",
        bes.iter()
            .map(|(l, b)| (l.clone(), b.queue.len() as u64))
            .collect(),
    );
    family(
        &mut out,
        BACKEND_REQUESTS,
        "counter",
        "Responses by status class.",
    );
    for (l, b) in &bes {
        classes(&mut out, BACKEND_REQUESTS, l, &b.stats.counters);
    }
    family(
        &mut out,
        BACKEND_RESPONSE_TIME,
        "histogram",
        "Time from request to response head.",
    );
    for (l, b) in &bes {
        hist(&mut out, BACKEND_RESPONSE_TIME, l, &b.stats.counters);
    }

    let now = Instant::now();
    let mut srv = Vec::new();
    for ((b, lb), sel) in plan
        .backends()
        .iter()
        .zip(&snap.backends)
        .zip(plan.balancers())
    {
        for (i, s) in lb.servers.iter().enumerate() {
            let labels = format!(
                "backend=\"{}\",server=\"{}\"",
                esc(&b.name),
                esc(&b.servers[i].name)
            );
            let cfg = &sel.servers()[i];
            let weight = s.weight(cfg.weight);
            let eff = if s.is_up() {
                tandem_balance::effective_weight(
                    weight,
                    s.up_since().map(|t| now.saturating_duration_since(t)),
                    cfg.slow_start,
                )
            } else {
                0
            };
            srv.push((labels, s, weight, eff));
        }
    }
    let per = |out: &mut String,
               name: &str,
               kind: &str,
               help: &str,
               f: &dyn Fn(&crate::live::ServerState, u32, u32) -> u64| {
        family(out, name, kind, help);
        for (l, s, w, e) in &srv {
            let _ = writeln!(out, "{name}{{{l}}} {}", f(s, *w, *e));
        }
    };
    per(
        &mut out,
        SERVER_SESSIONS_CURRENT,
        "gauge",
        "Requests or connections in flight.",
        &|s, _, _| u64::from(s.active()),
    );
    per(
        &mut out,
        SERVER_SESSIONS_TOTAL,
        "counter",
        "Requests or connections sent.",
        &|s, _, _| s.counters.sessions_total.load(r),
    );
    per(
        &mut out,
        SERVER_BYTES_IN,
        "counter",
        "Request body bytes sent.",
        &|s, _, _| s.counters.bytes_in.load(r),
    );
    per(
        &mut out,
        SERVER_BYTES_OUT,
        "counter",
        "Response body bytes received.",
        &|s, _, _| s.counters.bytes_out.load(r),
    );
    per(
        &mut out,
        SERVER_UP,
        "gauge",
        "1 when health checks consider the server up.",
        &|s, _, _| u64::from(s.status().health == tandem_balance::Health::Up),
    );
    per(
        &mut out,
        SERVER_ACTIVE,
        "gauge",
        "1 when the server takes new users (up and ready).",
        &|s, _, _| u64::from(s.is_up()),
    );
    per(
        &mut out,
        SERVER_WEIGHT,
        "gauge",
        "Weight in use (runtime or configured).",
        &|_, w, _| u64::from(w),
    );
    per(
        &mut out,
        SERVER_EFFECTIVE_WEIGHT,
        "gauge",
        "Weight after slow start (0 when not accepting).",
        &|_, _, e| u64::from(e),
    );
    per(
        &mut out,
        SERVER_TRANSITIONS,
        "counter",
        "Status changes (health and admin).",
        &|s, _, _| s.transitions(),
    );
    per(
        &mut out,
        SERVER_CONNECT_FAILURES,
        "counter",
        "Failed connects.",
        &|s, _, _| s.connect_failures.load(r),
    );
    family(
        &mut out,
        SERVER_REQUESTS,
        "counter",
        "Responses by status class.",
    );
    for (l, s, _, _) in &srv {
        classes(&mut out, SERVER_REQUESTS, l, &s.counters);
    }
    family(
        &mut out,
        SERVER_RESPONSE_TIME,
        "histogram",
        "Time from request to response head.",
    );
    for (l, s, _, _) in &srv {
        hist(&mut out, SERVER_RESPONSE_TIME, l, &s.counters);
    }
    out
}

/// Most scrape connections open at once; a newcomer beyond them closes the oldest.
pub const MAX_SCRAPERS: usize = 16;
/// Seconds a scraper has to send its request head, and may leave an answer unread.
pub const SCRAPE_IO_SECS: u64 = 10;
/// Longest life of a scrape connection, in seconds (keep-alive included).
pub const SCRAPE_CONNECTION_SECS: u64 = 60;

/// Serves `GET /metrics` on `addr` (that address only) until the task is aborted, to anyone;
/// returns the bound address.
pub async fn spawn(
    proxy: Proxy,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    spawn_with(proxy, addr, None).await
}

/// [`spawn`], answering only requests that pass `auth` (others get 401).
///
/// Bounds: a request head within [`SCRAPE_IO_SECS`], no write stalled longer than that (a
/// scraper that stops reading is dropped), [`SCRAPE_CONNECTION_SECS`] per connection, and
/// at most [`MAX_SCRAPERS`] connections, a newcomer closing the oldest: slow or idle
/// scrapers never keep a scrape out.
pub async fn spawn_with(
    proxy: Proxy,
    addr: SocketAddr,
    auth: Option<Arc<BasicAuth>>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(listen = %local, auth = auth.is_some(), "metrics endpoint listening");
    // Open connections, oldest first, so a newcomer can close the oldest.
    let open: Arc<Mutex<VecDeque<(u64, tokio::task::AbortHandle)>>> = Arc::default();
    let task = tokio::spawn(async move {
        let mut next = 0u64;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    error!(cause = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (proxy, auth, registry) = (proxy.clone(), auth.clone(), open.clone());
            let id = next;
            next += 1;
            // Held by the connection task: unregisters it however it ends. The list stays
            // locked until the task is in it, so it cannot unregister before that.
            let entry = Registered {
                open: open.clone(),
                id,
            };
            let mut list = registry.lock().unwrap_or_else(|p| p.into_inner());
            while list.len() >= MAX_SCRAPERS {
                if let Some((_, oldest)) = list.pop_front() {
                    debug!("metrics connection limit reached, closing the oldest");
                    oldest.abort();
                }
            }
            let conn = tokio::spawn(async move {
                let _entry = entry;
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (proxy, auth) = (proxy.clone(), auth.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(answer(&proxy, auth.as_ref(), &req).await)
                    }
                });
                let io = IdleIo::new(
                    stream,
                    Duration::from_secs(SCRAPE_IO_SECS),
                    Arc::new(AtomicU32::new(0)),
                );
                let serve = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(SCRAPE_IO_SECS))
                    .serve_connection(TokioIo::new(io), svc);
                match tokio::time::timeout(Duration::from_secs(SCRAPE_CONNECTION_SECS), serve).await
                {
                    Err(_) => {
                        debug!(client = %peer, "metrics connection closed after its lifetime")
                    }
                    Ok(Err(e)) => {
                        debug!(client = %peer, cause = %e, "metrics connection ended with an error")
                    }
                    Ok(Ok(())) => {}
                }
            });
            list.push_back((id, conn.abort_handle()));
        }
    });
    Ok((local, task))
}

/// A connection's entry in the open list; removed on drop.
struct Registered {
    open: Arc<Mutex<VecDeque<(u64, tokio::task::AbortHandle)>>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(id, _)| *id != self.id);
    }
}

async fn answer(
    proxy: &Proxy,
    auth: Option<&Arc<BasicAuth>>,
    req: &Request<Incoming>,
) -> Response<ProxyBody> {
    if let Some(auth) = auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !auth.check(given).await {
            let mut resp = crate::http::error_response(StatusCode::UNAUTHORIZED);
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(crate::basic_auth::CHALLENGE),
            );
            return resp;
        }
    }
    if req.uri().path() != "/metrics" {
        return crate::http::error_response(StatusCode::NOT_FOUND);
    }
    let text = render(&proxy.snapshot());
    let mut resp = Response::new(ProxyBody::Static(Some(text.into())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_classes() {
        let c = Counters::default();
        c.observe(Duration::from_micros(500));
        c.observe(Duration::from_millis(7));
        c.observe(Duration::from_secs(60));
        assert_eq!(c.hist[0].load(Ordering::Relaxed), 1);
        assert_eq!(
            c.hist[3].load(Ordering::Relaxed),
            1,
            "7 ms is in the 10 ms bucket"
        );
        assert_eq!(c.hist[12].load(Ordering::Relaxed), 1, "+Inf");
        for (code, class) in [(101, 0), (204, 1), (302, 2), (429, 3), (503, 4), (42, 5)] {
            assert_eq!(class_index(code), class, "{code}");
        }
    }
}
