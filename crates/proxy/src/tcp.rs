//! `mode tcp`: relay bytes between a client and a server, half-close correct.
//!
//! Owns: picking a server for a new client connection (retrying another one when connect
//! fails) and the bidirectional relay. When one side stops sending (FIN), the other side's
//! write half is shut down and the opposite direction keeps flowing (`copy_bidirectional`).
//! Does not own: accepting or the frontend limit (`proxy`), selection and queueing (`queue`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use crate::error::ProxyError;
use crate::live::Snapshot;
use crate::queue::{Slot, Tried, acquire};
use crate::tls::{Accepted, ServerStream};

/// Relays one client connection to a server of the frontend's backend until both sides close.
pub(crate) async fn serve(acc: Accepted, snap: Arc<Snapshot>, frontend: usize) {
    let (mut client, peer, local) = (acc.stream, acc.client, acc.local);
    let fe = &snap.plan.frontends()[frontend];
    let Some(id) = fe.default_id() else {
        // Plan validation guarantees a default backend for tcp frontends.
        debug_assert!(false, "tcp frontend {} without backend", fe.name);
        return;
    };
    let (mut server, slot) = match connect_any(&snap, id, peer, local).await {
        Ok(pair) => pair,
        Err(e) => {
            warn!(frontend = %fe.name, client = %peer, kind = e.kind(), side = ?e.side(), cause = %e, "tcp connection refused");
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((up, down)) => debug!(bytes_in = up, bytes_out = down, "tcp relay done"),
        Err(e) => debug!(cause = %e, "tcp relay ended with an error"),
    }
    drop(slot);
}

async fn connect_any(
    snap: &Snapshot,
    id: usize,
    client: SocketAddr,
    local: SocketAddr,
) -> Result<(ServerStream, Slot), ProxyError> {
    let backend = &snap.plan.backends()[id];
    let live = &snap.backends[id];
    let mut tried = Tried::default();
    let mut last_err = None;
    for _ in 0..=backend.retries {
        let slot = match acquire(backend, live, tried).await {
            Ok(s) => s,
            Err(ProxyError::NoServer { .. }) if last_err.is_some() => break,
            Err(e) => return Err(e),
        };
        let server = &backend.servers[slot.index];
        match crate::connect::open(server, backend, client, local).await {
            Ok(s) => {
                slot.server.sent.fetch_add(1, Ordering::Relaxed);
                return Ok((s, slot));
            }
            Err(e) => {
                slot.server.connect_failures.fetch_add(1, Ordering::Relaxed);
                warn!(backend = %backend.name, server = %server.name, cause = %e, "connect failed, trying another server");
                tried.insert(slot.index);
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| ProxyError::NoServer {
        backend: backend.name.clone(),
    }))
}
