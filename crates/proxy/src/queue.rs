//! Server slots: picking a server, per-server `max_connections`, and the backend FIFO queue.
//!
//! Owns: [`acquire`] (pick a usable server with a free slot, or wait in FIFO order up to
//! `timeout queue`) and [`Slot`] (a reserved slot, released on drop, waking the next waiter).
//! Does not own: the selection arithmetic (`select`), connecting, or any response.
//!
//! Lost wake-up freedom: a waiter increments the queue length then re-tries; a releaser
//! decrements `active` then reads the queue length; both `SeqCst`, so one sees the other.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::live::{BackendQueue, LiveBackend, ServerState};
use crate::plan::Backend;
use crate::select::{Pick, swrr};

/// Set of server indices already tried by one request (first 64 servers tracked).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tried(u64);

impl Tried {
    /// Records server `i` as tried.
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.0 |= 1 << i;
        }
    }

    fn contains(self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }
}

/// A reserved slot on a server; dropping it frees the slot and wakes the next waiter.
#[derive(Debug)]
pub struct Slot {
    /// Index of the server in its backend.
    pub index: usize,
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
pub fn try_pick(backend: &Backend, live: &LiveBackend, tried: Tried) -> Pick {
    let usable = |i: usize| {
        let s = &backend.servers[i];
        s.weight > 0 && !tried.contains(i) && live.servers[i].is_up()
    };
    let n = backend.servers.len();
    let use_backups = !(0..n).any(|i| !backend.servers[i].backup && usable(i));
    let has_room = |i: usize| match backend.servers[i].max_connections {
        None => true,
        Some(max) => live.servers[i].active.load(Ordering::SeqCst) < max,
    };
    let mut any_usable = false;
    let picked = {
        let mut rr = live.rr.lock().expect("rr lock poisoned");
        let candidates = (0..n)
            .filter(|&i| backend.servers[i].backup == use_backups && usable(i))
            .inspect(|_| any_usable = true)
            .filter(|&i| has_room(i))
            .map(|i| (i, backend.servers[i].weight));
        swrr(&mut rr, candidates)
    };
    let Some(i) = picked else {
        return if any_usable {
            Pick::AllFull
        } else {
            Pick::NoServer
        };
    };
    let max = backend.servers[i].max_connections.unwrap_or(u32::MAX);
    // Another plan sharing this server may have taken the last slot since `has_room`.
    match live.servers[i]
        .active
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
            (a < max).then_some(a + 1)
        }) {
        Ok(_) => Pick::Picked(i),
        Err(_) => Pick::AllFull,
    }
}

fn slot(live: &LiveBackend, index: usize) -> Slot {
    Slot {
        index,
        server: live.servers[index].clone(),
        queue: live.queue.clone(),
    }
}

/// Picks a server and reserves a slot, waiting in the backend queue if all are full.
pub async fn acquire(
    backend: &Backend,
    live: &LiveBackend,
    tried: Tried,
) -> Result<Slot, ProxyError> {
    // Newcomers only bypass the queue when it is empty (FIFO fairness).
    if live.queue.len.load(Ordering::SeqCst) == 0 {
        match try_pick(backend, live, tried) {
            Pick::Picked(i) => return Ok(slot(live, i)),
            Pick::NoServer => {
                return Err(ProxyError::NoServer {
                    backend: backend.name.clone(),
                });
            }
            Pick::AllFull => {}
        }
    }
    let start = Instant::now();
    let deadline = start + backend.timeouts.queue;
    let mut at_front = false;
    loop {
        let (tx, mut rx) = oneshot::channel();
        {
            let mut q = live.queue.waiters.lock().expect("queue lock poisoned");
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
        match try_pick(backend, live, tried) {
            Pick::Picked(i) => {
                rx.close();
                if rx.try_recv().is_ok() {
                    // We were woken too; pass the wake-up on.
                    live.queue.wake_next();
                }
                return Ok(slot(live, i));
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
                match try_pick(backend, live, tried) {
                    Pick::Picked(i) => return Ok(slot(live, i)),
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
    use std::net::SocketAddr;

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

    #[test]
    fn backups_only_when_primaries_down() {
        let snap = snapshot(
            vec![
                server("a", 1, 1, None, false),
                server("bk", 2, 1, None, true),
            ],
            10,
        );
        let (b, l) = (&snap.plan.backends()[0], &snap.backends[0]);
        assert_eq!(try_pick(b, l, Tried::default()), Pick::Picked(0));
        l.servers[0].set_up(false);
        assert_eq!(try_pick(b, l, Tried::default()), Pick::Picked(1));
        l.servers[1].set_up(false);
        assert_eq!(try_pick(b, l, Tried::default()), Pick::NoServer);
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
        let (b, l) = (&snap.plan.backends()[0], &snap.backends[0]);
        let mut tried = Tried::default();
        tried.insert(0);
        for _ in 0..4 {
            assert_eq!(try_pick(b, l, tried), Pick::Picked(1));
        }
        tried.insert(1);
        assert_eq!(try_pick(b, l, tried), Pick::NoServer);
    }

    #[tokio::test]
    async fn full_server_queues_then_times_out_or_gets_the_freed_slot() {
        let snap = snapshot(vec![server("a", 1, 1, Some(1), false)], 50);
        let (b, l) = (&snap.plan.backends()[0], &snap.backends[0]);
        let first = acquire(b, l, Tried::default()).await.expect("free slot");
        let err = acquire(b, l, Tried::default())
            .await
            .expect_err("queue timeout");
        assert!(matches!(err, ProxyError::QueueTimeout { .. }), "{err}");
        let (got, ()) = tokio::join!(acquire(b, l, Tried::default()), async {
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
