//! `mode tcp`: relay bytes between a client and a server, half-close correct.
//!
//! Owns: the bidirectional relay of a client connection to the server its journey
//! (`journey`: pick, connect, retry another server when connect fails) found. When one side stops sending (FIN), the other side's
//! write half is shut down and the opposite direction keeps flowing (`copy_bidirectional`).
//! Also: per-source admission (`protect`), counters, the access log record.
//! Does not own: accepting or the frontend limit (`proxy`), selection and queueing (`queue`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, warn};

use crate::accept::Accepted;
use crate::access::AccessLog;
use crate::error::ProxyError;
use crate::journey::{Journey, Tries};
use crate::live::Snapshot;
use crate::queue::Slot;
use crate::tls::ServerStream;

/// Relays one client connection to a server of the frontend's backend until both sides close.
pub(crate) async fn serve(acc: Accepted, snap: Arc<Snapshot>, frontend: usize) {
    let (mut client, peer, local) = (acc.stream, acc.client, acc.local);
    let fe = &snap.plan.frontends()[frontend];
    let live_fe = &snap.frontends[frontend];
    let Some(id) = fe.default_id() else {
        // Plan validation guarantees a default backend for tcp frontends.
        debug_assert!(false, "tcp frontend {} without backend", fe.name);
        return;
    };
    live_fe
        .stats
        .counters
        .sessions_total
        .fetch_add(1, Ordering::Relaxed);
    let _source = match crate::protect::admit(live_fe.sources.as_ref(), &live_fe.stats, peer.ip()) {
        Ok(guard) => guard,
        Err(why) => {
            debug!(frontend = %fe.name, client = %peer, reason = why.as_str(), "tcp connection refused by protect");
            return;
        }
    };
    live_fe.stats.current.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let mut log = AccessLog::begin(&snap, frontend, peer, start, None, -1).map(|mut l| {
        l.backend = Some(id);
        l
    });
    let (mut server, slot) = match connect_any(&snap, id, peer, local, log.as_mut()).await {
        Ok(pair) => pair,
        Err(e) => {
            live_fe.stats.current.fetch_sub(1, Ordering::Relaxed);
            warn!(frontend = %fe.name, client = %peer, kind = e.kind(), side = ?e.side(), cause = %e, "tcp connection refused");
            if let Some(mut l) = log {
                l.termination = e.termination();
                l.emit();
            }
            return;
        }
    };
    let relayed = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    if let Some(l) = log.as_mut() {
        l.server = Some(slot.index);
        // The error does not say which side failed; client resets are the usual cause.
        l.termination = if relayed.is_ok() { *b"--" } else { *b"CD" };
        if let Ok((_, down)) = relayed {
            l.bytes = down;
        }
    }
    match relayed {
        Ok((up, down)) => {
            debug!(bytes_in = up, bytes_out = down, "tcp relay done");
            let r = Ordering::Relaxed;
            let b = &snap.backends[id];
            for c in [
                &live_fe.stats.counters,
                &b.stats.counters,
                &slot.server.counters,
            ] {
                c.bytes_in.fetch_add(up, r);
                c.bytes_out.fetch_add(down, r);
            }
        }
        Err(e) => debug!(cause = %e, "tcp relay ended with an error"),
    }
    live_fe.stats.current.fetch_sub(1, Ordering::Relaxed);
    drop(slot);
    if let Some(l) = log {
        l.emit();
    }
}

async fn connect_any(
    snap: &Snapshot,
    id: usize,
    peer: SocketAddr,
    local: SocketAddr,
    log: Option<&mut AccessLog>,
) -> Result<(ServerStream, Slot), ProxyError> {
    let mut journey = Journey::new(snap, id, Tries::tcp);
    let backend = journey.backend;
    let now = Instant::now();
    let mut req = tandem_balance::Request::new(peer.ip());
    req.persist = journey.persisted(|_| None, peer.ip(), now);
    let leg = journey
        .connect(&req, log, |i| async move {
            let stream = crate::connect::open(&backend.servers[i], backend, peer, local).await?;
            Ok((stream, false))
        })
        .await?;
    journey.session_started(&leg.slot);
    // `mode tcp` has no cookie persistence (validation refuses it).
    let _ = journey.persist_new_user(&leg.slot, peer.ip(), now);
    Ok((leg.conn, leg.slot))
}
