//! The class-aware admission queue of one backend: who gets a slot when every server is at
//! `max_connections`, who waits, who is told to come back later.
//!
//! Owns [`ClassQueue`] (per-class FIFO waiters, per-class in-flight counts, the guaranteed
//! shares, `max_queue_time` expiry, the queue bound, Retry-After estimates and per-class
//! counters) and its vocabulary ([`Admission`], [`Output`], [`Ticket`], [`ClassStats`]).
//! Sans-IO: no clock (every input carries `now`), no channels, no locks, no tasks. Must not
//! pick servers (that is [`crate::Backend::pick`]) nor know how a waiter is woken (the proxy
//! keeps a wake-up sender per [`Ticket`]).
//!
//! # Model
//!
//! The backend has a *capacity*: the number of requests its usable servers take at once (the
//! sum of their `max_connections`, [`UNLIMITED`] when one of them has none, see
//! [`crate::Backend::capacity`]), set by the caller with [`ClassQueue::handle_capacity`]. Every request of the backend holds a [`Ticket`] from
//! arrival to the end of its response: first *waiting*, then *in flight* (holding a slot), or
//! only one of them. In-flight requests never exceed the capacity through this queue: a ticket
//! becomes in flight only while `in_flight < capacity`.
//!
//! # Policy
//!
//! - **Work-conserving**: an arrival is served at once when nobody waits and a slot is free,
//!   whatever its class. Nobody overtakes a waiter: while requests wait, arrivals wait too.
//! - **Guaranteed share first**: when a slot frees, a class with waiters whose in-flight count
//!   is below its guaranteed slots, `floor(share% x capacity)`, gets it (the highest-priority
//!   such class first). Shares add up to at most 100%, so every guarantee can hold at once.
//! - **Then strict priority**: otherwise the waiting class with the lowest priority number
//!   gets the slot, and within a class the oldest waiter (FIFO).
//! - **`max_queue_time`**: a waiter that has waited its class's limit (the backend's
//!   `timeout queue` by default) is rejected ([`Rejection::Expired`]); the caller answers 503.
//! - **Bounded**: at most [`QueueLimits::max_queue`] waiters in all classes. When the queue is
//!   full, an arrival displaces the newest waiter of the lowest-priority class below its own
//!   ([`Rejection::Evicted`]), so a flood of a low class never locks a high class out; a class
//!   keeps its first `floor(share% x capacity)` waiters against displacement, and while it has
//!   fewer waiters than that it may displace a waiter of any other class, so a share stays
//!   usable under a flood of a higher class. With nobody to displace the arrival is refused
//!   ([`Admission::Refused`]).
//!
//! Why a higher class never starves and a lower class keeps its share: while class `H` has
//! waiters, every freed slot goes to `H` unless a class is below its guarantee, and those
//! guarantees add up to at most the capacity. So once the requests in flight at the start of a
//! backlog have ended, `H` holds at least `capacity - sum(other guarantees)` slots; a class
//! with a share holds its guarantee as long as it has waiters. The seeded surge simulation
//! (`tests/class_simulation.rs`) checks both, with a delay bound derived from this argument.
//!
//! # Retry-After
//!
//! Expired, displaced and refused requests carry a Retry-After suggestion: the time the queue
//! needs to serve the waiters that would be served before a new request of that class (its own
//! class and higher), at the rate slots were freed over the last full second
//! ([`DRAIN_WINDOW`]); without a recent rate (nothing was freed for two windows), the class's
//! `max_queue_time`. Rounded up to whole seconds (the header's unit) and clamped to
//! [`RETRY_AFTER_MIN`]..=[`RETRY_AFTER_MAX`].
//!
//! # Contract
//!
//! - Inputs: [`handle_arrival`](ClassQueue::handle_arrival) (a request for the backend),
//!   [`handle_release`](ClassQueue::handle_release) (an in-flight request ended, or the pick
//!   found no server at all), [`handle_requeue`](ClassQueue::handle_requeue) (a request
//!   holding a slot found every server full when picking), [`handle_cancel`](ClassQueue::handle_cancel)
//!   (the client went away), [`handle_capacity`](ClassQueue::handle_capacity) (servers went
//!   up or down, weights or limits changed), [`handle_timeout`](ClassQueue::handle_timeout)
//!   (the instant from [`poll_timeout`](ClassQueue::poll_timeout) came) and
//!   [`reconfigure`](ClassQueue::reconfigure) (a reload changed the classes or the limits).
//! - Outputs: after **every** `handle_*` call, drain [`poll_output`](ClassQueue::poll_output)
//!   until `None` and deliver each [`Output`] to its ticket's waiter: [`Output::Granted`]
//!   (a slot is reserved, pick a server now) or [`Output::Rejected`] (answer 503 with
//!   `Retry-After`). Any call may emit rejections of *other* tickets (expiry is processed at
//!   the start of every call, displacement on arrival), and a grant or rejection may be for a
//!   ticket whose waiter has just gone: the caller then calls `handle_cancel` for it.
//! - Each ticket is resolved exactly once: released or cancelled by the caller, or rejected
//!   (expired, displaced) by an output; after that every call with it returns `false`.
//! - Time must not go backwards. Callers on several threads read the clock before they get
//!   the lock, so a `now` slightly older than the last one is taken as the last one rather
//!   than trusted (it can only delay an expiry by that skew).
//! - Capacity: the caller keeps it current with `handle_capacity`, computing it with
//!   [`crate::Backend::capacity`] (the same notion of "usable server" as the pick). When a granted request's
//!   pick still finds every server full (the capacity was stale), `handle_requeue` puts it
//!   back at the head of its class, and the queue stops believing the capacity: it admits no
//!   more than the current in-flight count, plus one more per freed slot, until that reaches
//!   the capacity again or `handle_capacity` is called. A capacity of 0 queues every arrival;
//!   the proxy answers "no server" from its own pick before asking (as it does today).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::class::{ClassId, ClassSet};
use crate::error::BalanceError;

/// Capacity of a backend with at least one usable server without `max_connections`.
pub const UNLIMITED: u32 = u32::MAX;
/// Shortest Retry-After suggested: 1 second (the header counts whole seconds).
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
/// Longest Retry-After suggested: 60 seconds.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// Window over which the drain rate (slots freed per second) is measured: 1 second.
pub const DRAIN_WINDOW: Duration = Duration::from_secs(1);

/// Bounds of one backend's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most requests waiting in all classes together (the proxy's `max_queue`).
    pub max_queue: usize,
    /// The backend's `timeout queue`: the `max_queue_time` of classes without one; non-zero.
    pub queue_timeout: Duration,
}

/// One request's handle from arrival to the end of its response; unique within a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

impl Ticket {
    /// A number for logs; tickets of one queue are numbered in arrival order.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What to do with an arriving request ([`ClassQueue::handle_arrival`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A slot is reserved: pick a server now; release the ticket when the response is done.
    Serve(Ticket),
    /// Every slot is taken: wait for an [`Output`] for this ticket, at the latest at
    /// `deadline` (then call [`ClassQueue::handle_timeout`], which rejects it).
    Queued {
        /// The waiter's handle.
        ticket: Ticket,
        /// When its class's `max_queue_time` runs out.
        deadline: Instant,
    },
    /// The queue is full and nobody can be displaced: answer 503 at once.
    Refused {
        /// Suggested `Retry-After`, whole seconds.
        retry_after: Duration,
    },
}

/// Why a waiting request is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// It waited its class's `max_queue_time`.
    Expired,
    /// The queue was full and a request of a class with precedence took its place.
    Evicted,
}

/// What the queue asks the caller to do ([`ClassQueue::poll_output`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A slot is reserved for this waiting ticket: wake it, it picks a server now.
    Granted(Ticket),
    /// This waiting ticket is answered 503 with `Retry-After`; the ticket is resolved.
    Rejected {
        /// The waiter's handle.
        ticket: Ticket,
        /// Expired or displaced.
        reason: Rejection,
        /// Suggested `Retry-After`, whole seconds.
        retry_after: Duration,
    },
}

/// Counters and gauges of one class in one backend's queue, for `/metrics` and `show stats`.
///
/// Identities: `arrived == served_at_once + queued + refused`; every ticket that waited ends
/// as one of `served_from_queue`, `expired`, `evicted` or `cancelled` (a ticket put back by
/// [`ClassQueue::handle_requeue`] counts in `requeued` and waits again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Requests that arrived.
    pub arrived: u64,
    /// Served without waiting.
    pub served_at_once: u64,
    /// Had to wait (first time; not counting requeues).
    pub queued: u64,
    /// Got a slot after waiting (requeued tickets count again).
    pub served_from_queue: u64,
    /// Waited their `max_queue_time` and were rejected.
    pub expired: u64,
    /// Refused on arrival because the queue was full.
    pub refused: u64,
    /// Displaced from a full queue by a class with precedence.
    pub evicted: u64,
    /// Left while waiting (client gone).
    pub cancelled: u64,
    /// Put back into the queue because every server was full after all.
    pub requeued: u64,
    /// Total time waited by the requests counted in `served_from_queue`.
    pub queue_time: Duration,
    /// Waiting now.
    pub waiting: usize,
    /// Holding a slot now.
    pub in_flight: u32,
    /// Slots guaranteed by the class's share at the current capacity.
    pub guaranteed: u32,
}

impl ClassStats {
    /// Requests answered 503 by the queue: expired, evicted and refused.
    pub fn rejected(&self) -> u64 {
        self.expired + self.evicted + self.refused
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    class: ClassId,
    /// First arrival; kept by a requeue so `max_queue_time` counts from here.
    arrived: Instant,
    state: State,
}

#[derive(Debug, Clone)]
struct Class {
    max_queue_time: Duration,
    share_percent: u8,
    guaranteed: u32,
    /// Waiters by ticket number (arrival order), with their arrival time.
    waiters: BTreeMap<u64, Instant>,
    in_flight: u32,
    stats: ClassStats,
}

/// Slots freed per [`DRAIN_WINDOW`], for Retry-After.
#[derive(Debug, Clone, Default)]
struct Drain {
    start: Option<Instant>,
    count: u32,
    /// Last complete window: (slots freed, its length, its end).
    last: Option<(u32, Duration, Instant)>,
}

impl Drain {
    fn record(&mut self, now: Instant) {
        match self.start {
            None => self.start = Some(now),
            Some(s) if now.saturating_duration_since(s) >= DRAIN_WINDOW => {
                self.last = Some((self.count, now.saturating_duration_since(s), now));
                self.start = Some(now);
                self.count = 0;
            }
            Some(_) => {}
        }
        self.count = self.count.saturating_add(1);
    }

    /// Time per freed slot over the last window, if that window is recent.
    fn per_slot(&self, now: Instant) -> Option<Duration> {
        let (count, span, end) = self.last?;
        if count == 0 || now.saturating_duration_since(end) > 2 * DRAIN_WINDOW {
            return None;
        }
        Some(span / count)
    }
}

/// The class-aware admission queue of one backend; see the module doc for the policy and the
/// call contract.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tandem_balance::{Admission, ClassQueue, ClassSet, ClassSpec, Output, QueueLimits};
///
/// let set = ClassSet::new(vec![
///     ClassSpec::new("gold", 0),
///     ClassSpec::new("bronze", 10).share(10).max_queue_time(Duration::from_secs(1)),
/// ])
/// .unwrap();
/// let (gold, bronze) = (set.id("gold").unwrap(), set.id("bronze").unwrap());
/// let limits = QueueLimits { max_queue: 1024, queue_timeout: Duration::from_secs(5) };
/// let mut q = ClassQueue::new(set, limits, 1).unwrap(); // one slot
/// let t0 = Instant::now();
///
/// let Admission::Serve(first) = q.handle_arrival(t0, bronze) else { unreachable!() };
/// let Admission::Queued { ticket: b, .. } = q.handle_arrival(t0, bronze) else { unreachable!() };
/// let Admission::Queued { ticket: g, .. } = q.handle_arrival(t0, gold) else { unreachable!() };
/// // The slot frees: gold goes first although bronze waited longer.
/// q.handle_release(t0 + Duration::from_millis(5), first);
/// assert_eq!(q.poll_output(), Some(Output::Granted(g)));
/// assert_eq!(q.poll_output(), None);
/// # let _ = b;
/// ```
#[derive(Debug, Clone)]
pub struct ClassQueue {
    set: ClassSet,
    limits: QueueLimits,
    classes: Vec<Class>,
    tickets: HashMap<u64, Entry>,
    next: u64,
    capacity: u32,
    /// Admission ceiling after a requeue showed the capacity to be stale.
    clamp: Option<u32>,
    in_flight: u32,
    waiting: usize,
    /// Latest `now` seen.
    now: Option<Instant>,
    outputs: VecDeque<Output>,
    drain: Drain,
}

fn guaranteed(share_percent: u8, capacity: u32) -> u32 {
    // share <= 100, so the result is at most `capacity` and fits.
    (u64::from(share_percent) * u64::from(capacity) / 100) as u32
}

fn class_state(set: &ClassSet, id: ClassId, limits: QueueLimits, capacity: u32) -> Class {
    let spec = set.spec(id);
    Class {
        max_queue_time: spec.max_queue_time.unwrap_or(limits.queue_timeout),
        share_percent: spec.share_percent,
        guaranteed: guaranteed(spec.share_percent, capacity),
        waiters: BTreeMap::new(),
        in_flight: 0,
        stats: ClassStats::default(),
    }
}

impl ClassQueue {
    /// An empty queue for `set` with `capacity` slots; fails on a zero `queue_timeout`.
    pub fn new(set: ClassSet, limits: QueueLimits, capacity: u32) -> Result<Self, BalanceError> {
        if limits.queue_timeout.is_zero() {
            return Err(BalanceError::ZeroQueueTime {
                what: "queue timeout".into(),
            });
        }
        let classes = set
            .iter()
            .map(|(id, _)| class_state(&set, id, limits, capacity))
            .collect();
        let q = Self {
            set,
            limits,
            classes,
            tickets: HashMap::new(),
            next: 0,
            capacity,
            clamp: None,
            in_flight: 0,
            waiting: 0,
            now: None,
            outputs: VecDeque::new(),
            drain: Drain::default(),
        };
        q.check_invariants();
        Ok(q)
    }

    /// The class list.
    pub fn classes(&self) -> &ClassSet {
        &self.set
    }

    /// The bounds.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// The capacity last set.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Requests holding a slot, all classes.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Requests waiting, all classes.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Counters and gauges of `class` (of the default class for a foreign id).
    pub fn stats(&self, class: ClassId) -> ClassStats {
        let c = &self.classes[self.set.resolve(class).index()];
        ClassStats {
            waiting: c.waiters.len(),
            in_flight: c.in_flight,
            guaranteed: c.guaranteed,
            ..c.stats
        }
    }

    /// The class a live ticket counts in (a reload may have moved it to the default class).
    pub fn class_of(&self, ticket: Ticket) -> Option<ClassId> {
        self.tickets.get(&ticket.0).map(|e| e.class)
    }

    /// Whether `ticket` holds a slot now.
    pub fn is_in_flight(&self, ticket: Ticket) -> bool {
        self.tickets
            .get(&ticket.0)
            .is_some_and(|e| e.state == State::InFlight)
    }

    /// A request of `class` arrives (an id from another set counts as the default class).
    pub fn handle_arrival(&mut self, now: Instant, class: ClassId) -> Admission {
        let now = self.tick(now);
        self.expire(now);
        let class = self.set.resolve(class);
        let k = class.index();
        self.classes[k].stats.arrived += 1;
        let admission = if self.waiting == 0 && self.in_flight < self.effective_capacity() {
            let ticket = self.issue(class, now, State::InFlight);
            self.in_flight += 1;
            self.classes[k].in_flight += 1;
            self.classes[k].stats.served_at_once += 1;
            Admission::Serve(ticket)
        } else if self.waiting >= self.limits.max_queue && !self.evict_for(class, now) {
            self.classes[k].stats.refused += 1;
            Admission::Refused {
                retry_after: self.retry_after(class, now),
            }
        } else {
            let ticket = self.issue(class, now, State::Waiting);
            self.classes[k].waiters.insert(ticket.0, now);
            self.waiting += 1;
            self.classes[k].stats.queued += 1;
            Admission::Queued {
                ticket,
                deadline: now + self.classes[k].max_queue_time,
            }
        };
        self.check_invariants();
        admission
    }

    /// The request of `ticket` is done: its response ended, or its pick found no server at
    /// all. Frees its slot (a waiting ticket is cancelled instead). False for an unknown or
    /// already resolved ticket.
    pub fn handle_release(&mut self, now: Instant, ticket: Ticket) -> bool {
        let now = self.tick(now);
        self.expire(now);
        let done = match self.tickets.get(&ticket.0).map(|e| e.state) {
            None => false,
            Some(State::Waiting) => {
                self.cancel_waiting(ticket);
                true
            }
            Some(State::InFlight) => {
                self.free_slot(ticket, now);
                true
            }
        };
        self.grant(now);
        self.check_invariants();
        done
    }

    /// The client of `ticket` went away: a waiter leaves the queue, a granted ticket gives
    /// its slot back. False for an unknown or already resolved ticket.
    pub fn handle_cancel(&mut self, now: Instant, ticket: Ticket) -> bool {
        let now = self.tick(now);
        self.expire(now);
        let done = match self.tickets.get(&ticket.0).map(|e| e.state) {
            None => false,
            Some(State::Waiting) => {
                self.cancel_waiting(ticket);
                true
            }
            Some(State::InFlight) => {
                self.free_slot(ticket, now);
                true
            }
        };
        self.grant(now);
        self.check_invariants();
        done
    }

    /// The in-flight `ticket`'s pick found every server full: it goes back to the head of its
    /// class (keeping its arrival time) and admissions stop at the current in-flight count
    /// (see the module doc). If it has waited its `max_queue_time` already, or the queue is
    /// full and nobody can be displaced, it is rejected by an output. False when the ticket is
    /// not in flight.
    pub fn handle_requeue(&mut self, now: Instant, ticket: Ticket) -> bool {
        let now = self.tick(now);
        self.expire(now);
        let Some(entry) = self
            .tickets
            .get(&ticket.0)
            .copied()
            .filter(|e| e.state == State::InFlight)
        else {
            self.check_invariants();
            return false;
        };
        let k = entry.class.index();
        self.in_flight -= 1;
        self.classes[k].in_flight -= 1;
        self.classes[k].stats.requeued += 1;
        self.clamp = Some(self.in_flight);
        if self.waiting >= self.limits.max_queue && !self.evict_for(entry.class, now) {
            self.tickets.remove(&ticket.0);
            self.classes[k].stats.evicted += 1;
            let retry_after = self.retry_after(entry.class, now);
            self.outputs.push_back(Output::Rejected {
                ticket,
                reason: Rejection::Evicted,
                retry_after,
            });
        } else {
            self.tickets.insert(
                ticket.0,
                Entry {
                    state: State::Waiting,
                    ..entry
                },
            );
            self.classes[k].waiters.insert(ticket.0, entry.arrived);
            self.waiting += 1;
        }
        self.expire(now);
        self.grant(now);
        self.check_invariants();
        true
    }

    /// The backend can now hold `capacity` requests at once ([`UNLIMITED`] when a usable
    /// server has no `max_connections`); waiters get the new slots.
    pub fn handle_capacity(&mut self, now: Instant, capacity: u32) {
        let now = self.tick(now);
        self.expire(now);
        self.capacity = capacity;
        self.clamp = None;
        for c in &mut self.classes {
            c.guaranteed = guaranteed(c.share_percent, capacity);
        }
        self.grant(now);
        self.check_invariants();
    }

    /// Time passed: rejects the waiters that have waited their `max_queue_time`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        self.expire(now);
        self.grant(now);
        self.check_invariants();
    }

    /// A reload: new classes or limits. Classes are matched by name and keep their waiters,
    /// in-flight requests and counters; those of removed classes move to the new default
    /// class (their counters go). Waiters past their new `max_queue_time`, and the newest
    /// waiters of the lowest classes beyond a smaller `max_queue`, are rejected by outputs.
    /// Tickets stay valid. Fails, changing nothing, on a zero `queue_timeout`.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        set: ClassSet,
        limits: QueueLimits,
    ) -> Result<(), BalanceError> {
        if limits.queue_timeout.is_zero() {
            return Err(BalanceError::ZeroQueueTime {
                what: "queue timeout".into(),
            });
        }
        let now = self.tick(now);
        let mut classes: Vec<Class> = set
            .iter()
            .map(|(id, _)| class_state(&set, id, limits, self.capacity))
            .collect();
        let map: Vec<ClassId> = self
            .set
            .iter()
            .map(|(_, spec)| set.id(&spec.name).unwrap_or_else(|| set.default_class()))
            .collect();
        for ((i, (_, spec)), old) in self
            .set
            .iter()
            .enumerate()
            .zip(std::mem::take(&mut self.classes))
        {
            let new = &mut classes[map[i].index()];
            if set.id(&spec.name).is_some() {
                new.stats = old.stats;
            }
            new.in_flight += old.in_flight;
            new.waiters.extend(old.waiters);
        }
        for e in self.tickets.values_mut() {
            e.class = map[e.class.index()];
        }
        self.set = set;
        self.limits = limits;
        self.classes = classes;
        self.expire(now);
        while self.waiting > self.limits.max_queue {
            let Some(&victim) = self
                .set
                .by_priority()
                .iter()
                .rev()
                .find(|id| !self.classes[id.index()].waiters.is_empty())
            else {
                break;
            };
            self.evict(victim.index(), now);
        }
        self.grant(now);
        self.check_invariants();
        Ok(())
    }

    /// The next thing to tell a waiter, if any; drain after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the oldest waiter of some class runs out of `max_queue_time`; call
    /// [`ClassQueue::handle_timeout`] then. `None` while nobody waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.classes
            .iter()
            .filter_map(|c| {
                let (_, &arrived) = c.waiters.first_key_value()?;
                Some(arrived + c.max_queue_time)
            })
            .min()
    }

    /// A full consistency audit, O(tickets): every waiter is a waiting ticket of its class,
    /// every count matches. For tests and debugging; the cheap checks run after every call in
    /// debug builds.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut problems = String::new();
        let mut waiting = vec![0usize; self.classes.len()];
        let mut in_flight = vec![0u32; self.classes.len()];
        for (&seq, e) in &self.tickets {
            let k = e.class.index();
            if k >= self.classes.len() {
                let _ = writeln!(problems, "ticket {seq} has foreign class {k}");
                continue;
            }
            match e.state {
                State::Waiting => {
                    waiting[k] += 1;
                    if self.classes[k].waiters.get(&seq) != Some(&e.arrived) {
                        let _ = writeln!(problems, "waiting ticket {seq} not in class {k}");
                    }
                }
                State::InFlight => in_flight[k] += 1,
            }
            if seq >= self.next {
                let _ = writeln!(problems, "ticket {seq} not yet issued");
            }
        }
        for (k, c) in self.classes.iter().enumerate() {
            if c.waiters.len() != waiting[k] {
                let _ = writeln!(
                    problems,
                    "class {k}: {} waiters, {} waiting tickets",
                    c.waiters.len(),
                    waiting[k]
                );
            }
            if c.in_flight != in_flight[k] {
                let _ = writeln!(
                    problems,
                    "class {k}: in-flight count {}, {} in-flight tickets",
                    c.in_flight, in_flight[k]
                );
            }
        }
        if let Err(e) = self.cheap_invariants() {
            problems.push_str(&e);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn tick(&mut self, now: Instant) -> Instant {
        let now = match self.now {
            Some(last) if last > now => last,
            _ => now,
        };
        self.now = Some(now);
        now
    }

    fn effective_capacity(&self) -> u32 {
        self.clamp.map_or(self.capacity, |c| c.min(self.capacity))
    }

    fn issue(&mut self, class: ClassId, now: Instant, state: State) -> Ticket {
        let seq = self.next;
        self.next += 1;
        self.tickets.insert(
            seq,
            Entry {
                class,
                arrived: now,
                state,
            },
        );
        Ticket(seq)
    }

    fn cancel_waiting(&mut self, ticket: Ticket) {
        if let Some(e) = self.tickets.remove(&ticket.0) {
            let c = &mut self.classes[e.class.index()];
            c.waiters.remove(&ticket.0);
            c.stats.cancelled += 1;
            self.waiting -= 1;
        }
    }

    fn free_slot(&mut self, ticket: Ticket, now: Instant) {
        if let Some(e) = self.tickets.remove(&ticket.0) {
            self.in_flight -= 1;
            self.classes[e.class.index()].in_flight -= 1;
            self.drain.record(now);
            // Probe one slot beyond what the servers last said they hold.
            self.clamp = self
                .clamp
                .map(|c| c.saturating_add(1))
                .filter(|&c| c < self.capacity);
        }
    }

    /// The class the next free slot goes to: guarantees first, then strict priority.
    fn next_class(&self) -> Option<usize> {
        let order = self.set.by_priority();
        let below_share = order.iter().map(|id| id.index()).find(|&k| {
            let c = &self.classes[k];
            !c.waiters.is_empty() && c.in_flight < c.guaranteed
        });
        below_share.or_else(|| {
            order
                .iter()
                .map(|id| id.index())
                .find(|&k| !self.classes[k].waiters.is_empty())
        })
    }

    fn grant(&mut self, now: Instant) {
        while self.waiting > 0 && self.in_flight < self.effective_capacity() {
            let Some(k) = self.next_class() else { break };
            let Some((seq, arrived)) = self.classes[k].waiters.pop_first() else {
                break;
            };
            if let Some(e) = self.tickets.get_mut(&seq) {
                e.state = State::InFlight;
            }
            self.waiting -= 1;
            self.in_flight += 1;
            let c = &mut self.classes[k];
            c.in_flight += 1;
            c.stats.served_from_queue += 1;
            c.stats.queue_time += now.saturating_duration_since(arrived);
            self.outputs.push_back(Output::Granted(Ticket(seq)));
        }
    }

    fn expire(&mut self, now: Instant) {
        for k in 0..self.classes.len() {
            loop {
                let c = &self.classes[k];
                let Some((&seq, &arrived)) = c.waiters.first_key_value() else {
                    break;
                };
                if arrived + c.max_queue_time > now {
                    break;
                }
                self.classes[k].waiters.remove(&seq);
                self.tickets.remove(&seq);
                self.waiting -= 1;
                self.classes[k].stats.expired += 1;
                let retry_after = self.retry_after(ClassId::from_index(k), now);
                self.outputs.push_back(Output::Rejected {
                    ticket: Ticket(seq),
                    reason: Rejection::Expired,
                    retry_after,
                });
            }
        }
    }

    /// Frees one queue place for an arrival of `class` by displacing a waiter; false when
    /// nobody can be displaced (see the module doc).
    fn evict_for(&mut self, class: ClassId, now: Instant) -> bool {
        let own = &self.classes[class.index()];
        let within_share = own.waiters.len() < own.guaranteed as usize;
        let mut victim = None;
        for id in self.set.by_priority().iter().rev() {
            if *id == class {
                if within_share {
                    continue;
                }
                break;
            }
            let c = &self.classes[id.index()];
            if c.waiters.len() > c.guaranteed as usize {
                victim = Some(id.index());
                break;
            }
        }
        match victim {
            Some(k) => {
                self.evict(k, now);
                true
            }
            None => false,
        }
    }

    /// Rejects the newest waiter of class index `k`.
    fn evict(&mut self, k: usize, now: Instant) {
        let Some((seq, _)) = self.classes[k].waiters.pop_last() else {
            return;
        };
        self.tickets.remove(&seq);
        self.waiting -= 1;
        self.classes[k].stats.evicted += 1;
        let retry_after = self.retry_after(ClassId::from_index(k), now);
        self.outputs.push_back(Output::Rejected {
            ticket: Ticket(seq),
            reason: Rejection::Evicted,
            retry_after,
        });
    }

    /// Retry-After for a request of `class` turned away now (see the module doc).
    fn retry_after(&self, class: ClassId, now: Instant) -> Duration {
        let mut ahead: u64 = 1;
        for id in self.set.by_priority() {
            ahead += self.classes[id.index()].waiters.len() as u64;
            if *id == class {
                break;
            }
        }
        let estimate = match self.drain.per_slot(now) {
            Some(per) => {
                let nanos = per.as_nanos().saturating_mul(u128::from(ahead));
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
            None => self.classes[class.index()].max_queue_time,
        };
        let whole = if estimate.subsec_nanos() > 0 {
            Duration::from_secs(estimate.as_secs().saturating_add(1))
        } else {
            estimate
        };
        whole.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
    }

    fn cheap_invariants(&self) -> Result<(), String> {
        let waiting: usize = self.classes.iter().map(|c| c.waiters.len()).sum();
        let in_flight: u32 = self.classes.iter().map(|c| c.in_flight).sum();
        let guaranteed: u64 = self.classes.iter().map(|c| u64::from(c.guaranteed)).sum();
        let checks = [
            (self.classes.len() == self.set.len(), "one state per class"),
            (waiting == self.waiting, "waiting total matches the classes"),
            (
                in_flight == self.in_flight,
                "in-flight total matches the classes",
            ),
            (
                self.tickets.len() == self.waiting + self.in_flight as usize,
                "every live ticket waits or holds a slot",
            ),
            (
                self.waiting <= self.limits.max_queue,
                "queue within its bound",
            ),
            (
                self.waiting == 0 || self.in_flight >= self.effective_capacity(),
                "nobody waits while a slot is free",
            ),
            (
                guaranteed <= u64::from(self.capacity),
                "guarantees fit in the capacity",
            ),
        ];
        let failed: Vec<&str> = checks
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, what)| *what)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "class queue invariants broken: {} (waiting {}, in flight {}, capacity {}, clamp {:?})\n",
                failed.join(", "),
                self.waiting,
                self.in_flight,
                self.capacity,
                self.clamp
            ))
        }
    }

    /// Debug builds: the O(classes) invariants after every mutating call.
    fn check_invariants(&self) {
        #[cfg(debug_assertions)]
        if let Err(e) = self.cheap_invariants() {
            panic!("{e}");
        }
    }
}

#[cfg(test)]
mod tests;
