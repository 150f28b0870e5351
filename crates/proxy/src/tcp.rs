//! `mode tcp`: relay bytes between a client and a server, half-close correct.
//!
//! Owns: picking a server for a new client connection (retrying another one when connect
//! fails) and the bidirectional relay. When one side stops sending (FIN), the other side's
//! write half is shut down and the opposite direction keeps flowing (`copy_bidirectional`).
//! Also: per-source admission (`protect`), source stickiness, passive connect feedback, counters.
//! Does not own: accepting or the frontend limit (`proxy`), selection and queueing (`queue`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, warn};

use crate::accept::Accepted;
use crate::access::AccessLog;
use crate::error::ProxyError;
use crate::live::Snapshot;
use crate::queue::{Slot, Tried, acquire};
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
    mut log: Option<&mut AccessLog>,
) -> Result<(ServerStream, Slot), ProxyError> {
    let backend = &snap.plan.backends()[id];
    let sel = &*snap.plan.balancers()[id];
    let live = &snap.backends[id];
    let now = Instant::now();
    let mut req = tandem_balance::Request::new(peer.ip());
    req.persist = live.stuck_server(now, peer.ip());
    let passive = backend
        .health_check
        .as_ref()
        .is_some_and(|h| h.passive_connect_failures.is_some());
    let mut tried = Tried::default();
    let mut last_err = None;
    for _ in 0..=backend.retries {
        let queued = Instant::now();
        let slot = match acquire(backend, sel, live, &req, &tried).await {
            Ok(s) => s,
            Err(ProxyError::NoServer { .. }) if last_err.is_some() => break,
            Err(e) => return Err(e),
        };
        let server = &backend.servers[slot.index];
        let connecting = Instant::now();
        let opened = crate::connect::open(server, backend, peer, local).await;
        if let Some(l) = log.as_deref_mut() {
            l.server = Some(slot.index);
            l.tw = crate::access::ms(connecting - queued);
            l.tc = crate::access::ms(connecting.elapsed());
        }
        match opened {
            Ok(s) => {
                slot.server
                    .counters
                    .sessions_total
                    .fetch_add(1, Ordering::Relaxed);
                live.stats
                    .counters
                    .sessions_total
                    .fetch_add(1, Ordering::Relaxed);
                if passive {
                    slot.server.update(Instant::now(), |m| m.on_connect(true));
                }
                if !slot.persistent {
                    live.stick_to(now, peer.ip(), slot.server.id);
                }
                return Ok((s, slot));
            }
            Err(e) => {
                slot.server.connect_failed(passive, &e);
                tried.insert(slot.index);
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| ProxyError::NoServer {
        backend: backend.name.clone(),
    }))
}
