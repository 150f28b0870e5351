//! Server slots: picking a server, per-server `max_connections`, and the backend FIFO queue.
//!
//! Owns: [`acquire`] (pick a usable server with a free slot, or wait in FIFO order up to
//! `timeout queue`) and [`Slot`] (a reserved slot, released on drop, waking the next waiter).
//! Does not own: the selection policy (`tandem-balance` through `select`), connecting, or
//! any response.
//!
//! Lost wake-up freedom: a waiter increments the queue length then re-tries; a releaser
//! decrements `active` then reads the queue length; both `SeqCst`, so one sees the other.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use tandem_balance::{Chosen, Request};

use crate::error::ProxyError;
use crate::live::{BackendQueue, LiveBackend, ServerState};
use crate::plan::Backend;
use crate::select::{Pick, View};

pub use crate::select::Tried;

/// A reserved slot on a server; dropping it frees the slot and wakes the next waiter.
#[derive(Debug)]
pub struct Slot {
    /// Index of the server in its backend.
    pub index: usize,
    /// Chosen because of persistence (cookie, stick table) rather than by the algorithm.
    pub persistent: bool,
    /// The server's live state.
    pub server: Arc<ServerState>,
    queue: Arc<BackendQueue>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server.active.fetch_sub(1, Ordering::SeqCst);
        if self.queue.len.load(Ordering::SeqCst) > 0 {
            self.queue.wake_next();
        }
    }
}

/// Tries to pick a server and reserve a slot on it, without waiting.
pub fn try_pick(
    backend: &Backend,
    sel: &tandem_balance::Backend,
    live: &LiveBackend,
    req: &Request<'_>,
    tried: &Tried,
) -> Pick {
    let now = std::time::Instant::now();
    let view = View(&live.servers);
    let chosen = match sel.pick(now, req, &view, tried.as_slice()) {
        Pick::Picked(c) => c,
        other => return other,
    };
    let max = backend.servers[chosen.index]
        .max_connections
        .unwrap_or(u32::MAX);
    // A concurrent pick (or another plan sharing this server) may have taken the last slot.
    match live.servers[chosen.index]
        .active
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
            (a < max).then_some(a + 1)
        }) {
        Ok(_) => Pick::Picked(chosen),
        Err(_) => Pick::AllFull,
    }
}

fn slot(live: &LiveBackend, chosen: Chosen) -> Slot {
    Slot {
        index: chosen.index,
        persistent: chosen.persistent,
        server: live.servers[chosen.index].clone(),
        queue: live.queue.clone(),
    }
}

/// Picks a server and reserves a slot, waiting in the backend queue if all are full.
pub async fn acquire(
    backend: &Backend,
    sel: &tandem_balance::Backend,
    live: &LiveBackend,
    req: &Request<'_>,
    tried: &Tried,
) -> Result<Slot, ProxyError> {
    // Newcomers only bypass the queue when it is empty (FIFO fairness).
    if live.queue.len.load(Ordering::SeqCst) == 0 {
        match try_pick(backend, sel, live, req, tried) {
            Pick::Picked(c) => return Ok(slot(live, c)),
            Pick::NoServer => {
                return Err(ProxyError::NoServer {
                    backend: backend.name.clone(),
                });
            }
            Pick::AllFull => {}
        }
    }
    // Boxed: the waiting state (channel, timer) is allocated only by requests that queue,
    // instead of enlarging every connection's request future.
    Box::pin(wait(backend, sel, live, req, tried)).await
}

/// The queued path of [`acquire`]: FIFO wait for a slot, up to `timeout queue`.
async fn wait(
    backend: &Backend,
    sel: &tandem_balance::Backend,
    live: &LiveBackend,
    req: &Request<'_>,
    tried: &Tried,
) -> Result<Slot, ProxyError> {
    let start = Instant::now();
    let deadline = start + backend.timeouts.queue;
    let mut at_front = false;
    loop {
        let (tx, mut rx) = oneshot::channel();
        {
            let mut q = live.queue.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= backend.max_queue {
                q.retain(|t| !t.is_closed());
                live.queue.len.store(q.len(), Ordering::SeqCst);
                if q.len() >= backend.max_queue {
                    return Err(ProxyError::QueueFull {
                        backend: backend.name.clone(),
                    });
                }
            }
            if at_front {
                q.push_front(tx);
            } else {
                q.push_back(tx);
            }
            live.queue.len.fetch_add(1, Ordering::SeqCst);
        }
        // Re-try after announcing ourselves: a slot freed just before is not missed.
        match try_pick(backend, sel, live, req, tried) {
            Pick::Picked(c) => {
                rx.close();
                if rx.try_recv().is_ok() {
                    // We were woken too; pass the wake-up on.
                    live.queue.wake_next();
                }
                return Ok(slot(live, c));
            }
            Pick::NoServer => {
                rx.close();
                if rx.try_recv().is_ok() {
                    live.queue.wake_next();
                }
                return Err(ProxyError::NoServer {
                    backend: backend.name.clone(),
                });
            }
            Pick::AllFull => {}
        }
        tokio::select! {
            woken = &mut rx => {
                if woken.is_err() {
                    // Sender dropped without waking (queue trimmed): wait again.
                    at_front = true;
                    continue;
                }
                match try_pick(backend, sel, live, req, tried) {
                    Pick::Picked(c) => return Ok(slot(live, c)),
                    Pick::NoServer => return Err(ProxyError::NoServer { backend: backend.name.clone() }),
                    Pick::AllFull => at_front = true,
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                rx.close();
                if rx.try_recv().is_ok() {
                    live.queue.wake_next();
                }
                return Err(ProxyError::QueueTimeout { backend: backend.name.clone(), waited: elapsed(start) });
            }
        }
    }
}

fn elapsed(start: Instant) -> Duration {
    Instant::now().saturating_duration_since(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Registry;
    use crate::plan::{Frontend, Mode, Plan, Server};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use tandem_balance::AdminState;

    fn snapshot(servers: Vec<Server>, queue_ms: u64) -> crate::live::Snapshot {
        let a = SocketAddr::from(([127, 0, 0, 1], 80));
        let mut b = Backend::new("app", Mode::Http, servers);
        b.timeouts.queue = Duration::from_millis(queue_ms);
        let plan =
            Plan::new(vec![Frontend::new("web", Mode::Http, a, "app")], vec![b]).expect("valid");
        Registry::default().bind(Arc::new(plan), 1)
    }

    fn server(name: &str, port: u16, weight: u32, max: Option<u32>, backup: bool) -> Server {
        let mut s = Server::new(name, SocketAddr::from(([127, 0, 0, 1], port)));
        s.weight = weight;
        s.max_connections = max;
        s.backup = backup;
        s
    }

    fn req() -> Request<'static> {
        Request::new(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    fn picked(p: Pick) -> Option<usize> {
        match p {
            Pick::Picked(c) => Some(c.index),
            _ => None,
        }
    }

    #[test]
    fn backups_only_when_primaries_down() {
        let snap = snapshot(
            vec![
                server("a", 1, 1, None, false),
                server("bk", 2, 1, None, true),
            ],
            10,
        );
        let (b, sel, l) = (
            &snap.plan.backends()[0],
            &*snap.plan.balancers()[0],
            &snap.backends[0],
        );
        let t = Tried::default();
        assert_eq!(picked(try_pick(b, sel, l, &req(), &t)), Some(0));
        let now = std::time::Instant::now();
        l.servers[0].update(now, |m| m.set_admin(AdminState::Maint));
        assert_eq!(picked(try_pick(b, sel, l, &req(), &t)), Some(1));
        l.servers[1].update(now, |m| m.set_admin(AdminState::Maint));
        assert_eq!(try_pick(b, sel, l, &req(), &t), Pick::NoServer);
    }

    #[test]
    fn excluded_servers_are_skipped() {
        let snap = snapshot(
            vec![
                server("a", 1, 1, None, false),
                server("b", 2, 1, None, false),
            ],
            10,
        );
        let (b, sel, l) = (
            &snap.plan.backends()[0],
            &*snap.plan.balancers()[0],
            &snap.backends[0],
        );
        let mut tried = Tried::default();
        tried.insert(0);
        for _ in 0..4 {
            let p = try_pick(b, sel, l, &req(), &tried);
            assert_eq!(picked(p), Some(1));
            l.servers[1].active.fetch_sub(1, Ordering::SeqCst);
        }
        tried.insert(1);
        assert_eq!(try_pick(b, sel, l, &req(), &tried), Pick::NoServer);
    }

    #[tokio::test]
    async fn full_server_queues_then_times_out_or_gets_the_freed_slot() {
        let snap = snapshot(vec![server("a", 1, 1, Some(1), false)], 50);
        let (b, sel, l) = (
            &snap.plan.backends()[0],
            &*snap.plan.balancers()[0],
            &snap.backends[0],
        );
        let t = Tried::default();
        let first = acquire(b, sel, l, &req(), &t).await.expect("free slot");
        let err = acquire(b, sel, l, &req(), &t)
            .await
            .expect_err("queue timeout");
        assert!(matches!(err, ProxyError::QueueTimeout { .. }), "{err}");
        let r = req();
        let (got, ()) = tokio::join!(acquire(b, sel, l, &r, &t), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(first);
        });
        let second = got.expect("slot handed over");
        assert_eq!(l.servers[0].active(), 1);
        drop(second);
        assert_eq!(l.servers[0].active(), 0);
        assert!(l.queue.is_empty());
    }
}
