//! The journey of one request (or `mode tcp` connection) to a server: route, pick,
//! connect, retry, persistence, with the passive health feedback and counters on the way.
//!
//! Owns: matching a request against a frontend's routes ([`route`]), the persistence key a
//! request carries ([`Journey::persisted`], [`cookie_server`]) and the one a new user gets
//! ([`Journey::persist_new_user`]), the loop that picks a server (queueing for a slot),
//! opens or reuses a connection to it and tries another one when that fails, bounded per
//! path ([`Tries`]), passive health on connects, timeouts and 5xx responses, the session
//! and response counters of backends and servers, the access log's `Tw`/`Tc` timings, and
//! the log line of a request that failed ([`log_failed`]).
//! The three paths (`tcp`, `http` on hyper, `http::h1` raw) call it; what differs between
//! them (how a connection is opened or reused, the wire protocol) is theirs.
//! Does not own: selection and queueing (`queue`, `tandem-balance`), opening a connection
//! (`connect`) or pooling it (`pool`), the wire format of a request or response (the
//! paths), nor live state (`live`). Never holds a lock across an `.await`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::header::HeaderName;
use tandem_balance::ServerId;

use crate::access::{AccessLog, ms};
use crate::error::ProxyError;
use crate::live::{LiveBackend, Snapshot};
use crate::plan::{Backend, BackendId, Frontend, Persistence};
use crate::queue::{Slot, Tried, acquire};
use crate::stats::{FrontendStats, Sink};

/// The backend of the first route of `fe` that matches, else the default; `None` when
/// nothing matches and there is no default. `host` is without its port; `header` looks a
/// request header up by name (the first field of that name).
pub(crate) fn route<'h>(
    fe: &Frontend,
    host: Option<&str>,
    path: &str,
    header: impl Fn(&HeaderName) -> Option<&'h [u8]>,
) -> Option<BackendId> {
    for (r, id) in fe.resolved_routes() {
        if let Some(want) = &r.host
            && !host.is_some_and(|h| h.eq_ignore_ascii_case(want))
        {
            continue;
        }
        if let Some(prefix) = &r.path_prefix
            && !path.starts_with(prefix.as_str())
        {
            continue;
        }
        if let Some((name, want)) = &r.header {
            match (header(name), want) {
                (None, _) => continue,
                (Some(got), Some(want)) if got != want.as_bytes() => continue,
                _ => {}
            }
        }
        return Some(id);
    }
    fe.default_id()
}

/// Completes and emits the access log line of a request that failed with `err` before a
/// response was relayed.
pub(crate) fn log_failed(log: Option<AccessLog>, err: &ProxyError, backend: Option<BackendId>) {
    if let Some(mut l) = log {
        l.backend = backend;
        l.status = err.status().as_u16();
        l.termination = err.termination();
        l.emit();
    }
}

/// The server a persistence cookie named `name` points to, among the values of a request's
/// `Cookie` fields (`None` for a value that is not text); the first cookie of that name
/// decides, and one that names no server falls back to the algorithm.
pub(crate) fn cookie_server<'v>(
    values: impl IntoIterator<Item = Option<&'v str>>,
    name: &str,
) -> Option<ServerId> {
    for v in values {
        let Some(v) = v else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == name
            {
                return ServerId::from_cookie(val.trim()).ok();
            }
        }
    }
    None
}

/// A persistence cookie a response must set for a new user: `NAME=VALUE; Path=/`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewCookie<'a> {
    /// The backend's cookie name.
    pub(crate) name: &'a str,
    /// The server's id, as the cookie carries it.
    pub(crate) value: [u8; 16],
}

/// How many tries a path gives a request; the paths' bounds differ and are kept as they
/// were.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tries {
    /// Servers picked at the most, whatever each try met (a failed connect, a stale pooled
    /// connection).
    attempts: usize,
    /// The journey ends after more connect failures than this (the backend's `retries`).
    connect_failures: u32,
    /// `mode tcp`: a failed connect's time is logged too (`Tc`), and a successful connect
    /// counts for passive health when it completed (http: when it began).
    tcp: bool,
}

impl Tries {
    /// `mode tcp`: one connect per try, `retries` more after the first.
    pub(crate) fn tcp(backend: &Backend) -> Self {
        Self {
            attempts: backend.retries as usize + 1,
            connect_failures: backend.retries,
            tcp: true,
        }
    }

    /// `mode http` (hyper and the raw forwarder): `retries` more connects after the first,
    /// and up to `min(max_idle_per_server, 8)` more tries for pooled connections found
    /// closed.
    pub(crate) fn http(backend: &Backend) -> Self {
        Self {
            attempts: backend.retries as usize + 1 + backend.max_idle_per_server.min(8),
            connect_failures: backend.retries,
            tcp: false,
        }
    }
}

/// A server's slot and a connection to it.
#[derive(Debug)]
pub(crate) struct Leg<C> {
    /// The server's slot, held while the request is in flight.
    pub(crate) slot: Slot,
    /// The connection.
    pub(crate) conn: C,
    /// It came from the pool (it may turn out closed, and the request go again).
    pub(crate) reused: bool,
}

/// One request's way through a backend: what it tried, how it failed.
pub(crate) struct Journey<'a> {
    /// The backend's index in the plan.
    pub(crate) id: BackendId,
    /// The backend.
    pub(crate) backend: &'a Backend,
    /// Its live state.
    pub(crate) live: &'a LiveBackend,
    sel: &'a tandem_balance::Backend,
    passive_connect: bool,
    passive_5xx: bool,
    tries: Tries,
    attempts: usize,
    connect_failures: u32,
    tried: Tried,
    last_err: Option<ProxyError>,
}

impl<'a> Journey<'a> {
    /// A journey to backend `id` of `snap`, bounded by `tries`.
    pub(crate) fn new(snap: &'a Snapshot, id: BackendId, tries: fn(&Backend) -> Tries) -> Self {
        let backend = &snap.plan.backends()[id];
        let passive = backend.health_check.as_ref();
        Self {
            id,
            backend,
            live: &snap.backends[id],
            sel: &*snap.plan.balancers()[id],
            passive_connect: passive.is_some_and(|h| h.passive_connect_failures.is_some()),
            passive_5xx: passive.is_some_and(|h| h.passive_5xx.is_some()),
            tries: tries(backend),
            attempts: 0,
            connect_failures: 0,
            tried: Tried::default(),
            last_err: None,
        }
    }

    /// The server the request sticks to, if any: the one its cookie names (`cookie` looks
    /// the backend's cookie up), or the source's stick-table entry.
    pub(crate) fn persisted(
        &self,
        cookie: impl FnOnce(&str) -> Option<ServerId>,
        client: IpAddr,
        now: Instant,
    ) -> Option<ServerId> {
        match &self.backend.persistence {
            Some(Persistence::Cookie { name }) => cookie(name),
            Some(Persistence::Source { .. }) => self.live.stuck_server(now, client),
            None => None,
        }
    }

    /// Picks a server and gets a connection to it with `open`, given the server's index in
    /// the backend (a pooled connection, `true`, or a new one), trying other servers while
    /// connects fail, within the path's [`Tries`].
    /// Called again after a try met a stale pooled connection, it goes on counting.
    ///
    /// The error ends the journey: the queue's (no server at all, queue full or timed out),
    /// else the last connect failure, else "no server" when the tries ran out.
    pub(crate) async fn connect<C, F>(
        &mut self,
        req: &tandem_balance::Request<'_>,
        mut log: Option<&mut AccessLog>,
        mut open: impl FnMut(usize) -> F,
    ) -> Result<Leg<C>, ProxyError>
    where
        F: Future<Output = Result<(C, bool), ProxyError>>,
    {
        while self.attempts < self.tries.attempts {
            self.attempts += 1;
            let queued = Instant::now();
            let slot = match acquire(self.backend, self.sel, self.live, req, &self.tried).await {
                Ok(s) => s,
                Err(ProxyError::NoServer { .. }) if self.last_err.is_some() => break,
                Err(e) => return Err(e),
            };
            let connecting = Instant::now();
            if let Some(l) = log.as_deref_mut() {
                l.backend = Some(self.id);
                l.server = Some(slot.index);
                l.tw = ms(connecting - queued);
            }
            match open(slot.index).await {
                Ok((conn, reused)) => {
                    if self.passive_connect && !reused {
                        let at = if self.tries.tcp {
                            Instant::now()
                        } else {
                            connecting
                        };
                        slot.server.update(at, |m| m.on_connect(true));
                    }
                    if let Some(l) = log {
                        l.tc = ms(connecting.elapsed());
                    }
                    return Ok(Leg { slot, conn, reused });
                }
                Err(e) => {
                    if self.tries.tcp
                        && let Some(l) = log.as_deref_mut()
                    {
                        l.tc = ms(connecting.elapsed());
                    }
                    slot.server.connect_failed(self.passive_connect, &e);
                    self.tried.insert(slot.index);
                    self.last_err = Some(e);
                    self.connect_failures += 1;
                    if self.connect_failures > self.tries.connect_failures {
                        break;
                    }
                }
            }
        }
        Err(self
            .last_err
            .take()
            .unwrap_or_else(|| ProxyError::NoServer {
                backend: self.backend.name.clone(),
            }))
    }

    /// Counts a session (request or connection) started on `slot`'s server.
    pub(crate) fn session_started(&self, slot: &Slot) {
        slot.server
            .counters
            .sessions_total
            .fetch_add(1, Ordering::Relaxed);
        self.live
            .stats
            .counters
            .sessions_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request sent to `slot`'s server; where its body bytes count.
    pub(crate) fn request_sent(&self, frontend: &Arc<FrontendStats>, slot: &Slot) -> Sink {
        self.session_started(slot);
        Sink {
            frontend: frontend.clone(),
            backend: self.live.stats.clone(),
            server: slot.server.counters.clone(),
        }
    }

    /// Counts a response head of `status` from `slot`'s server, `elapsed` after the request
    /// began, and feeds passive 5xx detection.
    pub(crate) fn responded(&self, slot: &Slot, status: u16, elapsed: Duration) {
        slot.server.counters.response(status);
        slot.server.counters.observe(elapsed);
        self.live.stats.counters.observe(elapsed);
        if self.passive_5xx {
            slot.server
                .update(Instant::now(), |m| m.on_response(status));
        }
    }

    /// `slot`'s server did not answer within `timeout server`: passive detection counts it
    /// as a failed connect.
    pub(crate) fn server_silent(&self, slot: &Slot) {
        if self.passive_connect {
            slot.server.update(Instant::now(), |m| m.on_connect(false));
        }
    }

    /// Records a user the algorithm placed (new, or moved off a dead server) so it sticks:
    /// a stick-table entry, or the cookie the response must set (returned). Nothing for a
    /// request that went where its persistence said.
    pub(crate) fn persist_new_user(
        &self,
        slot: &Slot,
        client: IpAddr,
        now: Instant,
    ) -> Option<NewCookie<'a>> {
        if slot.persistent {
            return None;
        }
        match &self.backend.persistence {
            Some(Persistence::Cookie { name }) => Some(NewCookie {
                name,
                value: slot.server.id.to_cookie(),
            }),
            Some(Persistence::Source { .. }) => {
                self.live.stick_to(now, client, slot.server.id);
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::live::Registry;
    use crate::plan::{Mode, Plan, Server};

    fn snapshot(servers: usize, retries: u32) -> Snapshot {
        let a = SocketAddr::from(([127, 0, 0, 1], 80));
        let servers = (0..servers)
            .map(|i| Server::new(&format!("s{i}"), SocketAddr::from(([127, 0, 0, 1], 81))))
            .collect();
        let mut b = Backend::new("app", Mode::Http, servers);
        b.retries = retries;
        b.max_idle_per_server = 2;
        let plan = Plan::new(
            vec![crate::plan::Frontend::new("web", Mode::Http, a, "app")],
            vec![b],
        )
        .expect("valid");
        Registry::default().bind(Arc::new(plan), 1)
    }

    fn refused(i: usize) -> ProxyError {
        ProxyError::Connect {
            server: format!("s{i}"),
            addr: SocketAddr::from(([127, 0, 0, 1], 81)),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        }
    }

    #[test]
    fn the_paths_keep_their_bounds() {
        let snap = snapshot(1, 3);
        let b = &snap.plan.backends()[0];
        let tcp = Tries::tcp(b);
        assert_eq!((tcp.attempts, tcp.connect_failures), (4, 3));
        let http = Tries::http(b);
        assert_eq!((http.attempts, http.connect_failures), (3 + 1 + 2, 3));
    }

    #[tokio::test]
    async fn a_failed_connect_tries_another_server_and_the_last_error_ends_it() {
        let snap = snapshot(3, 1);
        let req = tandem_balance::Request::new(IpAddr::from([192, 0, 2, 1]));
        // The first server picked refuses: the journey goes on to another one.
        let mut j = Journey::new(&snap, 0, Tries::http);
        let mut seen = Vec::new();
        let leg = j
            .connect(&req, None, |i| {
                let first = seen.is_empty();
                seen.push(i);
                async move {
                    if first {
                        Err(refused(i))
                    } else {
                        Ok(((), false))
                    }
                }
            })
            .await
            .expect("a second server");
        assert_eq!(seen.len(), 2);
        assert_ne!(
            leg.slot.index, seen[0],
            "a server tried is not picked again"
        );
        drop(leg);
        // Everything refuses: after retries + 1 connect failures, the last one is the answer.
        let mut j = Journey::new(&snap, 0, Tries::http);
        let mut tries = 0;
        let err = j
            .connect(&req, None, |i| {
                tries += 1;
                async move { Err::<((), bool), _>(refused(i)) }
            })
            .await
            .expect_err("all refused");
        assert_eq!(tries, 2);
        assert!(matches!(err, ProxyError::Connect { .. }), "{err}");
    }
}
