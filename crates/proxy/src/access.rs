//! The access log: one line per HTTP request (or TCP session), HAProxy-like, or structured.
//!
//! Owns: [`AccessLog`] (the record, filled along the request and emitted once at the end of
//! the response or session) and its two renderings on the `tandem_proxy::access` target:
//! - `text`, http (httplog-like):
//!   `client frontend backend/server Tq/Tw/Tc/Tr/Tt status bytes term "METHOD uri"`;
//!   tcp (tcplog-like): `client frontend backend/server Tw/Tc/Tt bytes term`;
//!   timers in milliseconds (`-1`: not reached), `term` HAProxy's two-letter termination state
//!   (first: `C` client, `S` server, `P` proxy, `c`/`s` client/server timeout, `-` normal;
//!   second: `R` request, `Q` queue, `C` connect, `H` headers, `D` data, `-` normal);
//! - `json`: the same values as structured fields (rendered as JSON by the JSON subscriber).
//!
//! Does not own: when a request ends (`body`, `http`), nor the subscriber (the binary).
//! Emitting costs nothing when the format is `off` (no record is built).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, Uri};

use crate::live::Snapshot;
use crate::plan::LogFormat;

/// The log record of one request.
#[derive(Debug)]
pub(crate) struct AccessLog {
    pub(crate) format: LogFormat,
    pub(crate) snap: Arc<Snapshot>,
    pub(crate) frontend: usize,
    pub(crate) backend: Option<usize>,
    pub(crate) server: Option<usize>,
    pub(crate) client: SocketAddr,
    /// Request line of an http request; `None` for a tcp session.
    pub(crate) http: Option<(Method, Uri)>,
    pub(crate) start: Instant,
    /// Head receive (first byte to handler; -1 unknown, e.g. HTTP/2), queue wait, connect,
    /// and response-head times (ms, -1 when not reached).
    pub(crate) tq: i64,
    pub(crate) tw: i64,
    pub(crate) tc: i64,
    pub(crate) tr: i64,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) termination: [u8; 2],
}

/// Milliseconds of `d`, for the timers.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl AccessLog {
    /// The record of a request (or tcp session) that began at `start`, nothing reached yet;
    /// `None` when the frontend logs nothing.
    pub(crate) fn begin(
        snap: &Arc<Snapshot>,
        frontend: usize,
        client: SocketAddr,
        start: Instant,
        http: Option<(Method, Uri)>,
        tq: i64,
    ) -> Option<Self> {
        let format = snap.plan.frontends()[frontend].log_format;
        (format != LogFormat::Off).then(|| Self {
            format,
            snap: snap.clone(),
            frontend,
            backend: None,
            server: None,
            client,
            http,
            start,
            tq,
            tw: -1,
            tc: -1,
            tr: -1,
            status: 0,
            bytes: 0,
            termination: *b"--",
        })
    }

    fn names(&self) -> (&str, &str, &str) {
        let plan = &self.snap.plan;
        let fe = plan.frontends()[self.frontend].name.as_str();
        let be = self
            .backend
            .map_or("<NOSRV>", |b| plan.backends()[b].name.as_str());
        let srv = match (self.backend, self.server) {
            (Some(b), Some(s)) => plan.backends()[b].servers[s].name.as_str(),
            _ => "<NOSRV>",
        };
        (fe, be, srv)
    }

    /// Emits the line; `tt` is measured now.
    pub(crate) fn emit(&self) {
        let tt = ms(self.start.elapsed());
        let term = std::str::from_utf8(&self.termination).unwrap_or("--");
        match self.format {
            LogFormat::Off => {}
            LogFormat::Text => {
                tracing::info!(target: "tandem_proxy::access", "{}", Line { log: self, tt, term });
            }
            LogFormat::Json => {
                let (frontend, backend, server) = self.names();
                match &self.http {
                    Some((method, uri)) => {
                        tracing::info!(target: "tandem_proxy::access", client = %self.client,
                            frontend, backend, server, tq = self.tq, tw = self.tw, tc = self.tc, tr = self.tr,
                            tt, status = self.status, bytes = self.bytes, termination = term,
                            method = %method, uri = %uri, "request");
                    }
                    None => {
                        tracing::info!(target: "tandem_proxy::access", client = %self.client,
                            frontend, backend, server, tw = self.tw, tc = self.tc, tt,
                            bytes = self.bytes, termination = term, "session");
                    }
                }
            }
        }
    }
}

struct Line<'a> {
    log: &'a AccessLog,
    tt: i64,
    term: &'a str,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.log;
        let (fe, be, srv) = l.names();
        match &l.http {
            Some((method, uri)) => write!(
                f,
                "{} {fe} {be}/{srv} {}/{}/{}/{}/{} {} {} {} \"{method} {uri}\"",
                l.client, l.tq, l.tw, l.tc, l.tr, self.tt, l.status, l.bytes, self.term
            ),
            None => write!(
                f,
                "{} {fe} {be}/{srv} {}/{}/{} {} {}",
                l.client, l.tw, l.tc, self.tt, l.bytes, self.term
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Registry;
    use crate::plan::{Backend, Frontend, Mode, Plan, Server};

    #[test]
    fn text_lines_look_like_haproxy() {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let plan = Plan::new(
            vec![Frontend::new("web", Mode::Http, a(80), "app")],
            vec![Backend::new(
                "app",
                Mode::Http,
                vec![Server::new("s1", a(81))],
            )],
        )
        .expect("plan");
        let snap = Arc::new(Registry::default().bind(Arc::new(plan), 1));
        let mut log = AccessLog {
            format: LogFormat::Text,
            snap,
            frontend: 0,
            backend: Some(0),
            server: Some(0),
            client: "192.0.2.7:5555".parse().expect("addr"),
            http: Some((Method::GET, Uri::from_static("/cart?x=1"))),
            start: Instant::now(),
            tq: 2,
            tw: 0,
            tc: 1,
            tr: 12,
            status: 200,
            bytes: 512,
            termination: *b"--",
        };
        let line = Line {
            log: &log,
            tt: 13,
            term: "--",
        }
        .to_string();
        assert_eq!(
            line,
            "192.0.2.7:5555 web app/s1 2/0/1/12/13 200 512 -- \"GET /cart?x=1\""
        );
        log.http = None;
        log.server = None;
        let line = Line {
            log: &log,
            tt: 5,
            term: "SC",
        }
        .to_string();
        assert_eq!(line, "192.0.2.7:5555 web app/<NOSRV> 0/1/5 512 SC");
    }
}
