//! Proxy errors, classified by where they came from and whether a retry is safe.
//!
//! Owns: [`ProxyError`], its [`Side`], its retry-safety and the HTTP status a client sees.
//! Does not own: the retry loop (in `forward`) nor response bodies (in `body`).
//! The status code follows from data here, never from matching error strings.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::StatusCode;

/// Which side of the proxy an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something invalid or went away.
    Client,
    /// A server failed, was unreachable or too slow.
    Upstream,
    /// The proxy itself (no server, queue full, no route).
    Internal,
}

/// Something that stopped a request or connection from being served.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The backend has no usable server (none configured, or all down).
    #[error("no server available in backend {backend}")]
    NoServer {
        /// The backend.
        backend: String,
    },
    /// The backend queue is at its bound.
    #[error("queue of backend {backend} is full")]
    QueueFull {
        /// The backend.
        backend: String,
    },
    /// The request waited in the backend queue longer than `timeout queue`.
    #[error("queued for {waited:?} in backend {backend} without a free server")]
    QueueTimeout {
        /// The backend.
        backend: String,
        /// How long it waited.
        waited: Duration,
    },
    /// No route matched and the frontend has no default backend.
    #[error("no route for the request on frontend {frontend}")]
    NoRoute {
        /// The frontend.
        frontend: String,
    },
    /// Connecting to a server failed before anything was sent.
    #[error("failed to connect to server {server} at {addr}: {source}")]
    Connect {
        /// The server.
        server: String,
        /// Its address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Connecting to a server took longer than `timeout connect`.
    #[error("connect to server {server} at {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The server.
        server: String,
        /// Its address.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The HTTP handshake with a fresh server connection failed.
    #[error("http handshake with server {server} failed: {source}")]
    Handshake {
        /// The server.
        server: String,
        /// The cause.
        source: hyper::Error,
    },
    /// The server did not send a response head within `timeout server`.
    #[error("server {server} did not answer within {after:?}")]
    ServerTimeout {
        /// The server.
        server: String,
        /// The timeout.
        after: Duration,
    },
    /// The server connection failed after the request was (possibly) sent.
    #[error("server {server} failed while handling the request: {source}")]
    Upstream {
        /// The server.
        server: String,
        /// The cause.
        source: hyper::Error,
    },
    /// The server connection failed after the request was (possibly) sent (raw forwarder).
    #[error("server {server} failed while handling the request: {source}")]
    UpstreamIo {
        /// The server.
        server: String,
        /// The cause.
        source: io::Error,
    },
    /// The server's response could not be parsed or was cut short (raw forwarder).
    #[error("server {server} sent an invalid response: {reason}")]
    BadResponse {
        /// The server.
        server: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// The request head is longer than the frontend's `max_header_size`.
    #[error("request head longer than {limit} bytes")]
    HeaderTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Frontend `protect` refused the client (rate or concurrency per source).
    /// No frontend name here: refusals come in floods, and the log line carries the frontend.
    #[error("client refused by protect: {reason} limit")]
    Denied {
        /// Which limit (`connection_rate`, `request_rate`, `concurrent`).
        reason: &'static str,
    },
    /// The client request is malformed or ambiguous (smuggling defence).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong, for logs.
        reason: &'static str,
    },
}

impl ProxyError {
    /// Where the error came from.
    pub fn side(&self) -> Side {
        match self {
            Self::NoServer { .. }
            | Self::QueueFull { .. }
            | Self::QueueTimeout { .. }
            | Self::NoRoute { .. } => Side::Internal,
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Handshake { .. }
            | Self::ServerTimeout { .. }
            | Self::Upstream { .. }
            | Self::UpstreamIo { .. }
            | Self::BadResponse { .. } => Side::Upstream,
            Self::BadRequest { .. } | Self::Denied { .. } | Self::HeaderTooLarge { .. } => {
                Side::Client
            }
        }
    }

    /// HAProxy's two-letter termination state for the access log (who, and at which step).
    pub fn termination(&self) -> [u8; 2] {
        match self {
            Self::NoServer { .. } => *b"SC",
            Self::QueueFull { .. } => *b"PQ",
            Self::QueueTimeout { .. } => *b"sQ",
            Self::NoRoute { .. } | Self::Denied { .. } => *b"PR",
            Self::Connect { .. } | Self::Handshake { .. } => *b"SC",
            Self::ConnectTimeout { .. } => *b"sC",
            Self::ServerTimeout { .. } => *b"sH",
            Self::Upstream { .. } | Self::UpstreamIo { .. } | Self::BadResponse { .. } => *b"SH",
            Self::BadRequest { .. } | Self::HeaderTooLarge { .. } => *b"CR",
        }
    }

    /// Whether trying another server is safe whatever the request: nothing was sent.
    pub fn retry_safe(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::ConnectTimeout { .. } | Self::Handshake { .. }
        )
    }

    /// The status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoServer { .. }
            | Self::QueueFull { .. }
            | Self::QueueTimeout { .. }
            | Self::NoRoute { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Handshake { .. }
            | Self::Upstream { .. }
            | Self::UpstreamIo { .. }
            | Self::BadResponse { .. } => StatusCode::BAD_GATEWAY,
            Self::ServerTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Denied { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::HeaderTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// A short stable label for logs and metrics (bounded cardinality).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoServer { .. } => "no_server",
            Self::QueueFull { .. } => "queue_full",
            Self::QueueTimeout { .. } => "queue_timeout",
            Self::NoRoute { .. } => "no_route",
            Self::Connect { .. } => "connect",
            Self::ConnectTimeout { .. } => "connect_timeout",
            Self::Handshake { .. } => "handshake",
            Self::ServerTimeout { .. } => "server_timeout",
            Self::Upstream { .. } | Self::UpstreamIo { .. } => "upstream",
            Self::BadResponse { .. } => "bad_response",
            Self::BadRequest { .. } => "bad_request",
            Self::Denied { .. } => "denied",
            Self::HeaderTooLarge { .. } => "header_too_large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_retry_follow_from_kind() {
        let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
        let cases: Vec<(ProxyError, StatusCode, bool, Side)> = vec![
            (
                ProxyError::NoServer {
                    backend: "b".into(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
                false,
                Side::Internal,
            ),
            (
                ProxyError::QueueTimeout {
                    backend: "b".into(),
                    waited: Duration::ZERO,
                },
                StatusCode::SERVICE_UNAVAILABLE,
                false,
                Side::Internal,
            ),
            (
                ProxyError::Connect {
                    server: "s".into(),
                    addr,
                    source: io::ErrorKind::ConnectionRefused.into(),
                },
                StatusCode::BAD_GATEWAY,
                true,
                Side::Upstream,
            ),
            (
                ProxyError::ServerTimeout {
                    server: "s".into(),
                    after: Duration::ZERO,
                },
                StatusCode::GATEWAY_TIMEOUT,
                false,
                Side::Upstream,
            ),
            (
                ProxyError::BadRequest { reason: "x" },
                StatusCode::BAD_REQUEST,
                false,
                Side::Client,
            ),
        ];
        for (err, status, retry, side) in cases {
            assert_eq!(
                (err.status(), err.retry_safe(), err.side()),
                (status, retry, side),
                "{err}"
            );
        }
    }
}
