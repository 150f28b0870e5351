//! The set-up of a new client connection, before anything is served on it.
//!
//! Owns: [`accept_client`]: the PROXY header (if the bind expects one) then the TLS
//! handshake (if the frontend terminates TLS), under one `client_header` deadline, and what
//! it yields ([`Accepted`]) or why it failed ([`AcceptError`]).
//! Does not own: the PROXY wire format (`proxy_protocol`), certificates and the TLS
//! configuration (`tls`), nor what is served over the stream (`http`, `tcp`).

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::plan::Frontend;
use crate::proxy_protocol::{self, Header};
use crate::tls::{ALPN_H2, ClientStream, MaybeTls};

/// A client connection ready to serve.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The stream, after the PROXY header and the TLS handshake.
    pub stream: ClientStream,
    /// The client: from the PROXY header when there is one, else the TCP peer.
    pub client: SocketAddr,
    /// Where the client connected to: from the PROXY header, else our local address.
    pub local: SocketAddr,
    /// Whether TLS was terminated.
    pub tls: bool,
    /// Whether ALPN chose HTTP/2.
    pub h2: bool,
}

/// Why a client connection was dropped before being served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    /// The PROXY header was missing, malformed or cut short.
    #[error("bad proxy protocol header: {0}")]
    ProxyHeader(#[from] proxy_protocol::ReadError),
    /// The TLS handshake failed.
    #[error("tls handshake failed: {0}")]
    Handshake(io::Error),
    /// The PROXY header and TLS handshake took longer than `timeout client_header`.
    #[error("no {stage} within the client header timeout")]
    Timeout {
        /// `proxy protocol header` or `tls handshake`.
        stage: &'static str,
    },
}

impl AcceptError {
    /// A short stable label for logs and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::ProxyHeader(_) => "proxy_header",
            Self::Handshake(_) => "tls_handshake",
            Self::Timeout { .. } => "preamble_timeout",
        }
    }
}

/// Reads the PROXY header if `bind` expects one, then terminates TLS if the frontend has it;
/// both within the frontend's `client_header` timeout.
pub(crate) async fn accept_client(
    mut stream: TcpStream,
    peer: SocketAddr,
    fe: &Frontend,
    bind: SocketAddr,
) -> Result<Accepted, AcceptError> {
    let deadline = Instant::now() + fe.timeouts.header;
    let local = stream.local_addr().unwrap_or(bind);
    let (client, local) = if fe.accept_proxy.contains(&bind) {
        let read = proxy_protocol::read_header(&mut stream);
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => {
                return Err(AcceptError::Timeout {
                    stage: "proxy protocol header",
                });
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(Header::Local)) => (peer, local),
            Ok(Ok(Header::Proxied {
                source,
                destination,
            })) => (source, destination),
        }
    } else {
        (peer, local)
    };
    let Some(tls) = &fe.tls else {
        return Ok(Accepted {
            stream: MaybeTls::Plain(stream),
            client,
            local,
            tls: false,
            h2: false,
        });
    };
    // Boxed: the handshake state is only needed until it completes, but inline it would size
    // the task of every connection, TLS or not, for its whole life.
    let accept = Box::pin(tokio_rustls::TlsAcceptor::from(tls.config.clone()).accept(stream));
    let stream = match tokio::time::timeout_at(deadline, accept).await {
        Err(_) => {
            return Err(AcceptError::Timeout {
                stage: "tls handshake",
            });
        }
        Ok(Err(e)) => return Err(AcceptError::Handshake(e)),
        Ok(Ok(s)) => s,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    Ok(Accepted {
        stream: MaybeTls::Tls(Box::new(stream)),
        client,
        local,
        tls: true,
        h2,
    })
}
