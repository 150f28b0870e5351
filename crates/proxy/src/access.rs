//! The access log: one line per HTTP request (or TCP session), HAProxy-like, or structured.
//!
//! Owns: [`AccessLog`] (the record, filled along the request and emitted once at the end of
//! the response) and its two renderings on the `tandem_proxy::access` tracing target:
//! - `text`: `client frontend backend/server Tw/Tc/Tr/Tt status bytes term "METHOD uri"`,
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
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) start: Instant,
    /// Queue wait, connect, and response-head times (ms, -1 when not reached).
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
                tracing::info!(target: "tandem_proxy::access", client = %self.client, frontend,
                    backend, server, tw = self.tw, tc = self.tc, tr = self.tr, tt,
                    status = self.status, bytes = self.bytes, termination = term,
                    method = %self.method, uri = %self.uri, "request");
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
        write!(
            f,
            "{} {fe} {be}/{srv} {}/{}/{}/{} {} {} {} \"{} {}\"",
            l.client, l.tw, l.tc, l.tr, self.tt, l.status, l.bytes, self.term, l.method, l.uri
        )
    }
}
