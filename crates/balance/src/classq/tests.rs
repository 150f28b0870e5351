//! Tests of the class queue with simulated time: priority order, FIFO, guaranteed shares,
//! work conservation, displacement, expiry, cancel, requeue, capacity changes, reloads,
//! Retry-After, and a property test against a small model. One `Instant` taken at the start
//! of each test only serves as the origin of offsets; nothing waits on the wall clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::class::ClassSpec;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// gold (0, no share), silver (5, share 20%), bronze (10, share 10%, waits at most 1 s).
fn three() -> ClassSet {
    ClassSet::new(vec![
        ClassSpec::new("gold", 0),
        ClassSpec::new("silver", 5).share(20),
        ClassSpec::new("bronze", 10)
            .share(10)
            .max_queue_time(Duration::from_secs(1)),
    ])
    .unwrap()
}

const LIMITS: QueueLimits = QueueLimits {
    max_queue: 1024,
    queue_timeout: Duration::from_secs(5),
};

/// A queue driven at offsets from a fixed origin, with class lookup by name.
struct H {
    q: ClassQueue,
    t0: Instant,
}

impl H {
    fn new(set: ClassSet, limits: QueueLimits, capacity: u32) -> Self {
        Self {
            q: ClassQueue::new(set, limits, capacity).unwrap(),
            t0: Instant::now(),
        }
    }

    fn id(&self, name: &str) -> ClassId {
        self.q.classes().id(name).unwrap()
    }

    fn at(&self, offset: Duration) -> Instant {
        self.t0 + offset
    }

    fn arrive(&mut self, t: Duration, class: &str) -> Admission {
        let id = self.id(class);
        self.q.handle_arrival(self.at(t), id)
    }

    #[track_caller]
    fn serve(&mut self, t: Duration, class: &str) -> Ticket {
        match self.arrive(t, class) {
            Admission::Serve(ticket) => ticket,
            other => panic!("{class} at {t:?}: expected Serve, got {other:?}"),
        }
    }

    #[track_caller]
    fn queue(&mut self, t: Duration, class: &str) -> Ticket {
        match self.arrive(t, class) {
            Admission::Queued { ticket, .. } => ticket,
            other => panic!("{class} at {t:?}: expected Queued, got {other:?}"),
        }
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.q.poll_output()).collect()
    }

    fn granted(&mut self) -> Vec<Ticket> {
        self.outputs()
            .into_iter()
            .map(|o| match o {
                Output::Granted(t) => t,
                other => panic!("expected only grants, got {other:?}"),
            })
            .collect()
    }

    fn release(&mut self, t: Duration, ticket: Ticket) -> Vec<Ticket> {
        assert!(self.q.handle_release(self.at(t), ticket), "{ticket:?}");
        self.granted()
    }

    fn stats(&self, class: &str) -> ClassStats {
        self.q.stats(self.id(class))
    }
}

#[test]
fn a_free_slot_serves_at_once_whatever_the_class() {
    let mut h = H::new(three(), LIMITS, 3);
    h.serve(ms(0), "bronze");
    h.serve(ms(0), "bronze");
    h.serve(ms(0), "bronze");
    assert_eq!(
        h.q.in_flight(),
        3,
        "work-conserving: unused shares are anyone's"
    );
    h.queue(ms(0), "gold");
    assert_eq!(h.stats("bronze").served_at_once, 3);
    assert_eq!(h.stats("gold").queued, 1);
}

#[test]
fn lower_priority_number_is_served_first() {
    let mut h = H::new(three(), LIMITS, 1);
    let busy = h.serve(ms(0), "bronze");
    // Arrival order is the reverse of the priority order; no class is below its share
    // because shares of a 1-slot backend round down to 0 slots.
    let b = h.queue(ms(1), "bronze");
    let s = h.queue(ms(2), "silver");
    let g = h.queue(ms(3), "gold");
    assert_eq!(h.release(ms(10), busy), [g]);
    assert_eq!(h.release(ms(20), g), [s]);
    assert_eq!(h.release(ms(30), s), [b]);
    assert_eq!(h.release(ms(40), b), []);
    assert_eq!(h.q.in_flight(), 0);
}

#[test]
fn fifo_within_a_class() {
    let mut h = H::new(three(), LIMITS, 1);
    let busy = h.serve(ms(0), "gold");
    let order: Vec<Ticket> = (0..5).map(|i| h.queue(ms(i), "silver")).collect();
    let mut served: Vec<Ticket> = Vec::new();
    let mut current = busy;
    for i in 0..5 {
        let g = h.release(ms(100 + i), current);
        served.extend(&g);
        current = g[0];
    }
    assert_eq!(served, order);
}

#[test]
fn newcomers_do_not_overtake_waiters_of_their_class() {
    let mut h = H::new(three(), LIMITS, 1);
    let busy = h.serve(ms(0), "gold");
    let first = h.queue(ms(1), "gold");
    // The slot frees; `first` is granted in the same call, so a newcomer cannot take it.
    assert_eq!(h.release(ms(2), busy), [first]);
    h.queue(ms(2), "gold");
}

#[test]
fn a_lower_class_keeps_its_share_under_a_flood_of_a_higher_class() {
    // 20 slots: silver is guaranteed 4, bronze 2.
    let mut h = H::new(three(), LIMITS, 20);
    let mut gold: Vec<Ticket> = (0..20).map(|_| h.serve(ms(0), "gold")).collect();
    let bronze: Vec<Ticket> = (0..5).map(|i| h.queue(ms(i), "bronze")).collect();
    for i in 0..100 {
        h.queue(ms(5 + i), "gold");
    }
    assert_eq!(h.stats("bronze").guaranteed, 2);
    // The first two freed slots go to bronze although gold waits with precedence.
    assert_eq!(h.release(ms(200), gold.remove(0)), [bronze[0]]);
    assert_eq!(h.release(ms(201), gold.remove(0)), [bronze[1]]);
    // Bronze is at its guarantee: the next slot goes to gold.
    let g = h.release(ms(202), gold.remove(0));
    assert_eq!(h.q.class_of(g[0]), Some(h.id("gold")));
    // A bronze request ends: bronze is below its guarantee again and gets the slot back.
    assert_eq!(h.release(ms(203), bronze[0]), [bronze[2]]);
    assert_eq!(h.stats("bronze").in_flight, 2);
    // Without bronze demand the share is used by gold (work-conserving).
    for &t in &bronze[3..] {
        assert!(h.q.handle_cancel(h.at(ms(204)), t));
    }
    let g = h.release(ms(205), bronze[1]);
    assert_eq!(h.q.class_of(g[0]), Some(h.id("gold")));
    assert_eq!(h.stats("bronze").in_flight, 1);
}

#[test]
fn guarantees_follow_the_capacity() {
    let mut h = H::new(three(), LIMITS, 9);
    // floor(20% x 9) = 1, floor(10% x 9) = 0.
    assert_eq!(h.stats("silver").guaranteed, 1);
    assert_eq!(h.stats("bronze").guaranteed, 0);
    h.q.handle_capacity(h.at(ms(0)), 50);
    assert_eq!(h.stats("silver").guaranteed, 10);
    assert_eq!(h.stats("bronze").guaranteed, 5);
    h.q.handle_capacity(h.at(ms(0)), UNLIMITED);
    assert_eq!(h.stats("bronze").guaranteed, UNLIMITED / 10);
}

#[test]
fn a_flood_of_a_lower_class_cannot_lock_a_higher_class_out_of_a_full_queue() {
    let limits = QueueLimits {
        max_queue: 4,
        ..LIMITS
    };
    let mut h = H::new(three(), limits, 1);
    let busy = h.serve(ms(0), "bronze");
    let bronze: Vec<Ticket> = (0..4).map(|i| h.queue(ms(i), "bronze")).collect();
    // Bronze itself is refused: nobody below it to displace.
    let Admission::Refused { retry_after } = h.arrive(ms(5), "bronze") else {
        panic!("bronze should be refused");
    };
    assert!(retry_after >= RETRY_AFTER_MIN);
    // Gold displaces the newest bronze waiter.
    let g = h.queue(ms(6), "gold");
    match h.outputs().as_slice() {
        [
            Output::Rejected {
                ticket,
                reason: Rejection::Evicted,
                retry_after,
            },
        ] => {
            assert_eq!(*ticket, bronze[3]);
            assert!(*retry_after >= RETRY_AFTER_MIN);
        }
        other => panic!("expected one eviction, got {other:?}"),
    }
    assert_eq!(h.release(ms(7), busy), [g]);
    let s = h.stats("bronze");
    assert_eq!((s.refused, s.evicted, s.waiting), (1, 1, 3));
    assert_eq!(s.rejected(), 2);
}

#[test]
fn a_share_reserves_queue_places_too() {
    // 10 slots: silver is guaranteed 2, bronze 1; the queue holds 4.
    let limits = QueueLimits {
        max_queue: 4,
        ..LIMITS
    };
    let mut h = H::new(three(), limits, 10);
    for _ in 0..10 {
        h.serve(ms(0), "gold");
    }
    let b = h.queue(ms(1), "bronze");
    let gold: Vec<Ticket> = (0..3).map(|i| h.queue(ms(2 + i), "gold")).collect();
    // Full. Gold cannot displace bronze's one protected waiter, nor its own class.
    assert!(matches!(h.arrive(ms(9), "gold"), Admission::Refused { .. }));
    assert_eq!(h.outputs(), []);
    // Silver has fewer waiters than its guarantee: it displaces the newest waiter of the
    // lowest class with unprotected waiters, which is gold here.
    h.queue(ms(10), "silver");
    assert!(matches!(
        h.outputs().as_slice(),
        [Output::Rejected { ticket, reason: Rejection::Evicted, .. }] if *ticket == gold[2]
    ));
    assert_eq!(
        h.q.class_of(b),
        Some(h.id("bronze")),
        "bronze kept its place"
    );
}

#[test]
fn waiters_expire_at_their_class_max_queue_time() {
    let mut h = H::new(three(), LIMITS, 1);
    h.serve(ms(0), "gold");
    let Admission::Queued {
        ticket: b,
        deadline,
    } = h.arrive(ms(100), "bronze")
    else {
        panic!("queued");
    };
    assert_eq!(deadline, h.at(ms(1100)), "bronze waits at most 1 s");
    let g = h.queue(ms(200), "gold");
    assert_eq!(h.q.poll_timeout(), Some(h.at(ms(1100))));
    h.q.handle_timeout(h.at(ms(1099)));
    assert_eq!(h.outputs(), []);
    h.q.handle_timeout(h.at(ms(1100)));
    match h.outputs().as_slice() {
        [
            Output::Rejected {
                ticket,
                reason: Rejection::Expired,
                retry_after,
            },
        ] => {
            assert_eq!(*ticket, b);
            // No slot was freed yet: no drain rate, so the class's max_queue_time.
            assert_eq!(*retry_after, Duration::from_secs(1));
        }
        other => panic!("expected bronze to expire, got {other:?}"),
    }
    // Gold defaults to the backend's `timeout queue`, 5 s.
    assert_eq!(h.q.poll_timeout(), Some(h.at(ms(5200))));
    assert!(
        !h.q.handle_cancel(h.at(ms(1200)), b),
        "resolved exactly once"
    );
    h.q.handle_timeout(h.at(ms(5200)));
    assert!(matches!(
        h.outputs().as_slice(),
        [Output::Rejected { ticket, reason: Rejection::Expired, .. }] if *ticket == g
    ));
    assert_eq!(h.q.poll_timeout(), None);
    assert_eq!(h.stats("bronze").expired, 1);
    assert_eq!(h.stats("gold").expired, 1);
}

#[test]
fn an_expired_waiter_is_not_granted_by_a_late_release() {
    let mut h = H::new(three(), LIMITS, 1);
    let busy = h.serve(ms(0), "gold");
    let b = h.queue(ms(0), "bronze");
    // The caller did not call handle_timeout; the release comes after bronze's deadline.
    assert!(h.q.handle_release(h.at(ms(1500)), busy));
    assert!(matches!(
        h.outputs().as_slice(),
        [Output::Rejected { ticket, reason: Rejection::Expired, .. }] if *ticket == b
    ));
    assert_eq!(h.q.in_flight(), 0);
}

#[test]
fn cancel_removes_a_waiter_and_returns_a_granted_slot() {
    let mut h = H::new(three(), LIMITS, 1);
    let busy = h.serve(ms(0), "gold");
    let a = h.queue(ms(1), "gold");
    let b = h.queue(ms(2), "gold");
    let c = h.queue(ms(3), "gold");
    assert!(h.q.handle_cancel(h.at(ms(4)), a));
    assert!(!h.q.handle_cancel(h.at(ms(4)), a));
    assert_eq!(h.outputs(), []);
    assert_eq!(h.release(ms(5), busy), [b]);
    // `b` was granted but its client is gone before it picked: the slot passes on.
    assert!(h.q.handle_cancel(h.at(ms(6)), b));
    assert_eq!(h.granted(), [c]);
    assert!(!h.q.handle_release(h.at(ms(7)), b), "no double release");
    assert_eq!(h.stats("gold").cancelled, 1);
    assert_eq!(h.stats("gold").served_from_queue, 2);
    assert_eq!(h.q.in_flight(), 1);
}

#[test]
fn unknown_class_ids_count_as_the_default_class() {
    let big = ClassSet::new(vec![
        ClassSpec::new("a", 0),
        ClassSpec::new("b", 1),
        ClassSpec::new("c", 2),
        ClassSpec::new("d", 3),
    ])
    .unwrap();
    let foreign = big.id("d").unwrap();
    let mut h = H::new(three(), LIMITS, 1);
    h.serve(ms(0), "gold");
    let Admission::Queued { ticket, deadline } = h.q.handle_arrival(h.at(ms(0)), foreign) else {
        panic!("queued");
    };
    assert_eq!(h.q.class_of(ticket), Some(h.id("bronze")));
    assert_eq!(deadline, h.at(ms(1000)), "with the default class's limit");
    assert_eq!(h.stats("bronze").queued, 1);
    assert_eq!(h.q.stats(foreign), h.stats("bronze"));
}

#[test]
fn requeue_stops_admissions_until_slots_free_or_capacity_is_set() {
    let mut h = H::new(three(), LIMITS, 4);
    let held: Vec<Ticket> = (0..3).map(|_| h.serve(ms(0), "gold")).collect();
    let t = h.serve(ms(0), "gold");
    let w1 = h.queue(ms(1), "gold");
    let w2 = h.queue(ms(2), "gold");
    // `t`'s pick found every server full (a server went down and the caller has not said
    // so yet): `t` waits again, at the head, and nobody is granted in its place.
    assert!(h.q.handle_requeue(h.at(ms(3)), t));
    assert_eq!(h.outputs(), []);
    assert!(!h.q.is_in_flight(t));
    assert_eq!(h.q.in_flight(), 3);
    assert!(matches!(h.arrive(ms(4), "gold"), Admission::Queued { .. }));
    // A slot frees: the freed one plus one probe are granted, oldest first.
    assert_eq!(h.release(ms(5), held[0]), [t, w1]);
    // The probe's pick fails too: back to the head again.
    assert!(h.q.handle_requeue(h.at(ms(6)), w1));
    assert_eq!(h.outputs(), []);
    // The caller learns the capacity is 3 after all, then a fourth server comes back.
    h.q.handle_capacity(h.at(ms(7)), 3);
    assert_eq!(h.outputs(), []);
    h.q.handle_capacity(h.at(ms(8)), 4);
    assert_eq!(h.granted(), [w1]);
    assert!(
        !h.q.handle_requeue(h.at(ms(9)), w2),
        "only in-flight tickets"
    );
    assert_eq!(h.stats("gold").requeued, 2);
}

#[test]
fn a_requeued_ticket_keeps_its_arrival_time() {
    let mut h = H::new(three(), LIMITS, 1);
    let busy = h.serve(ms(0), "silver");
    let b = h.queue(ms(0), "bronze");
    assert_eq!(h.release(ms(900), busy), [b]);
    assert!(h.q.handle_requeue(h.at(ms(950)), b));
    assert_eq!(h.q.poll_timeout(), Some(h.at(ms(1000))));
    h.q.handle_timeout(h.at(ms(1000)));
    assert!(matches!(
        h.outputs().as_slice(),
        [Output::Rejected { ticket, reason: Rejection::Expired, .. }] if *ticket == b
    ));
}

#[test]
fn capacity_changes_grant_waiters_and_never_revoke_slots() {
    let mut h = H::new(three(), LIMITS, 2);
    let a = h.serve(ms(0), "gold");
    h.serve(ms(0), "gold");
    let w: Vec<Ticket> = (0..3).map(|i| h.queue(ms(i), "gold")).collect();
    h.q.handle_capacity(h.at(ms(10)), 4);
    assert_eq!(h.granted(), w[..2]);
    h.q.handle_capacity(h.at(ms(11)), 1);
    assert_eq!(h.q.in_flight(), 4, "in-flight requests keep their slots");
    // Releases do not grant until in-flight is below the new capacity.
    assert_eq!(h.release(ms(12), a), []);
    assert_eq!(h.q.waiting(), 1);
}

#[test]
fn zero_capacity_queues_and_zero_queue_refuses() {
    let mut h = H::new(three(), LIMITS, 0);
    h.queue(ms(0), "gold");
    let limits = QueueLimits {
        max_queue: 0,
        ..LIMITS
    };
    let mut h = H::new(three(), limits, 1);
    h.serve(ms(0), "bronze");
    assert!(matches!(h.arrive(ms(0), "gold"), Admission::Refused { .. }));
}

#[test]
fn time_going_backwards_is_taken_as_the_latest_time() {
    let mut h = H::new(three(), LIMITS, 1);
    h.serve(ms(0), "gold");
    h.q.handle_timeout(h.at(ms(500)));
    // A thread that read the clock at 400 ms gets the lock after one that read 500 ms.
    let Admission::Queued { deadline, .. } = h.arrive(ms(400), "bronze") else {
        panic!("queued");
    };
    assert_eq!(deadline, h.at(ms(1500)));
}

#[test]
fn retry_after_follows_the_drain_rate() {
    // 100 slots, each request takes 100 ms: about 1000 slots are freed per second.
    let limits = QueueLimits {
        max_queue: 3000,
        ..LIMITS
    };
    let mut h = H::new(three(), limits, 100);
    let mut in_flight: VecDeque<Ticket> = (0..100).map(|_| h.serve(ms(0), "gold")).collect();
    for i in 0..3000 {
        h.queue(ms(i / 100), "gold");
    }
    for step in 0..1500u64 {
        let t = in_flight.pop_front().unwrap();
        let g = h.release(ms(1 + step), t);
        in_flight.extend(g);
    }
    // 1500 gold wait; a refused gold arrival is behind 1500 at 1 ms per slot: 1.5 s, rounded
    // up to 2 s.
    assert_eq!(h.q.waiting(), 1500);
    let Admission::Refused { retry_after } = ({
        let limits = QueueLimits {
            max_queue: 1500,
            ..LIMITS
        };
        let set = h.q.classes().clone();
        h.q.reconfigure(h.at(ms(1500)), set, limits).unwrap();
        h.arrive(ms(1500), "gold")
    }) else {
        panic!("refused");
    };
    assert_eq!(retry_after, Duration::from_secs(2));
    // Bronze has no waiter of its guaranteed 10 places: it displaces the newest gold, which
    // is told to come back after the 1500 requests ahead of it: 1.5 s, rounded up.
    assert!(matches!(
        h.arrive(ms(1500), "bronze"),
        Admission::Queued { .. }
    ));
    assert!(matches!(
        h.outputs().as_slice(),
        [Output::Rejected { reason: Rejection::Evicted, retry_after, .. }]
            if *retry_after == Duration::from_secs(2)
    ));
    // Nothing freed for over two windows: no rate, the class's max_queue_time (gold: 5 s).
    // (Bronze's 1 s limit has run out by then, so the first gold takes its place.)
    assert!(matches!(
        h.arrive(ms(4000), "gold"),
        Admission::Queued { .. }
    ));
    let Admission::Refused { retry_after } = h.arrive(ms(4000), "gold") else {
        panic!("refused");
    };
    assert_eq!(retry_after, Duration::from_secs(5));
}

#[test]
fn reconfigure_keeps_tickets_and_moves_removed_classes_to_the_default() {
    let mut h = H::new(three(), LIMITS, 1);
    let busy = h.serve(ms(0), "silver");
    let s1 = h.queue(ms(1), "silver");
    let g = h.queue(ms(2), "gold");
    let s2 = h.queue(ms(3), "silver");
    // silver is gone; a new lowest class "batch" becomes the default, bronze waits 2 s now.
    let set = ClassSet::new(vec![
        ClassSpec::new("gold", 0),
        ClassSpec::new("bronze", 10).max_queue_time(Duration::from_secs(2)),
        ClassSpec::new("batch", 20),
    ])
    .unwrap();
    let limits = QueueLimits {
        max_queue: 2,
        ..LIMITS
    };
    h.q.reconfigure(h.at(ms(4)), set, limits).unwrap();
    let batch = h.id("batch");
    assert_eq!(h.q.class_of(busy), Some(batch));
    assert_eq!(h.q.class_of(s1), Some(batch));
    // The queue shrank to 2: the newest waiter of the lowest class goes.
    assert!(matches!(
        h.outputs().as_slice(),
        [Output::Rejected { ticket, reason: Rejection::Evicted, .. }] if *ticket == s2
    ));
    assert_eq!(h.q.stats(batch).in_flight, 1);
    assert_eq!(h.release(ms(5), busy), [g]);
    assert_eq!(h.release(ms(6), g), [s1]);
    assert!(h.q.check_consistency().is_ok());
    assert!(
        h.q.reconfigure(
            h.at(ms(7)),
            three(),
            QueueLimits {
                queue_timeout: Duration::ZERO,
                ..LIMITS
            }
        )
        .is_err()
    );
    assert_eq!(h.q.classes().len(), 3, "a refused reload changes nothing");
    assert!(h.q.classes().id("batch").is_some());
}

#[test]
fn counters_add_up() {
    let limits = QueueLimits {
        max_queue: 2,
        ..LIMITS
    };
    let mut h = H::new(three(), limits, 1);
    let busy = h.serve(ms(0), "bronze");
    let a = h.queue(ms(0), "bronze");
    h.queue(ms(0), "bronze");
    h.arrive(ms(0), "bronze"); // refused
    h.q.handle_cancel(h.at(ms(1)), a);
    h.release(ms(100), busy);
    h.q.handle_timeout(h.at(ms(2000)));
    h.outputs();
    let s = h.stats("bronze");
    assert_eq!(s.arrived, s.served_at_once + s.queued + s.refused);
    assert_eq!(
        (s.served_at_once, s.queued, s.refused, s.cancelled),
        (1, 2, 1, 1)
    );
    assert_eq!(s.served_from_queue, 1);
    assert_eq!(s.queue_time, ms(100));
    assert!(
        ClassQueue::new(
            three(),
            QueueLimits {
                queue_timeout: Duration::ZERO,
                ..LIMITS
            },
            1
        )
        .is_err()
    );
}

// ---------------------------------------------------------------------------------------
// Property test: random operations against a model of the policy.

#[derive(Debug, Clone)]
enum Op {
    Arrive(usize),
    Release(usize),
    Cancel(usize),
    Requeue(usize),
    Capacity(u32),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3).prop_map(Op::Arrive),
        4 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Requeue),
        1 => (0u32..12).prop_map(Op::Capacity),
        2 => (0u64..700).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Waiting,
    InFlight,
    Done,
}

/// What the test knows from the queue's answers alone.
#[derive(Default)]
struct Model {
    fate: HashMap<Ticket, Fate>,
    class: HashMap<Ticket, usize>,
    waiting: Vec<BTreeSet<Ticket>>,
    in_flight: Vec<u32>,
    resolved: HashMap<Ticket, u32>,
}

impl Model {
    fn resolve(&mut self, t: Ticket) {
        *self.resolved.entry(t).or_default() += 1;
        self.fate.insert(t, Fate::Done);
    }

    fn live(&self, pick: usize, want: &[Fate]) -> Option<Ticket> {
        let mut live: Vec<Ticket> = self
            .fate
            .iter()
            .filter(|(_, f)| want.contains(f))
            .map(|(t, _)| *t)
            .collect();
        live.sort();
        (!live.is_empty()).then(|| live[pick % live.len()])
    }
}

fn run_ops(ops: &[Op], max_queue: usize) -> Result<(), TestCaseError> {
    let set = three();
    let shares: Vec<u8> = set.iter().map(|(_, s)| s.share_percent).collect();
    let order: Vec<usize> = set.by_priority().iter().map(|c| c.index()).collect();
    let ids: Vec<ClassId> = set.iter().map(|(id, _)| id).collect();
    let limits = QueueLimits {
        max_queue,
        ..LIMITS
    };
    let mut q = ClassQueue::new(set, limits, 4).unwrap();
    let t0 = Instant::now();
    let mut now = Duration::ZERO;
    let mut capacity = 4u32;
    let mut m = Model {
        waiting: vec![BTreeSet::new(); 3],
        in_flight: vec![0; 3],
        ..Model::default()
    };
    for op in ops {
        let before = q.in_flight();
        let at = t0 + now;
        match *op {
            Op::Arrive(c) => match q.handle_arrival(at, ids[c]) {
                Admission::Serve(t) => {
                    prop_assert!(!m.fate.contains_key(&t), "ticket reused");
                    m.fate.insert(t, Fate::InFlight);
                    m.class.insert(t, c);
                    m.in_flight[c] += 1;
                }
                Admission::Queued { ticket, .. } => {
                    prop_assert!(!m.fate.contains_key(&ticket), "ticket reused");
                    m.fate.insert(ticket, Fate::Waiting);
                    m.class.insert(ticket, c);
                    m.waiting[c].insert(ticket);
                }
                Admission::Refused { retry_after } => {
                    prop_assert!(retry_after >= RETRY_AFTER_MIN && retry_after <= RETRY_AFTER_MAX);
                }
            },
            Op::Release(pick) | Op::Cancel(pick) => {
                let want = [Fate::InFlight, Fate::Waiting];
                if let Some(t) = m.live(pick, &want) {
                    let ok = if matches!(op, Op::Release(_)) {
                        q.handle_release(at, t)
                    } else {
                        q.handle_cancel(at, t)
                    };
                    // The ticket may have expired during this very call.
                    let c = m.class[&t];
                    match m.fate[&t] {
                        Fate::InFlight => {
                            prop_assert!(ok);
                            m.in_flight[c] -= 1;
                            m.resolve(t);
                        }
                        _ => {
                            if ok {
                                m.waiting[c].remove(&t);
                                m.resolve(t);
                            }
                        }
                    }
                } else if let Some(t) = m.live(pick, &[Fate::Done]) {
                    prop_assert!(!q.handle_release(at, t), "resolved ticket released again");
                }
            }
            Op::Requeue(pick) => {
                if let Some(t) = m.live(pick, &[Fate::InFlight]) {
                    prop_assert!(q.handle_requeue(at, t));
                    let c = m.class[&t];
                    m.in_flight[c] -= 1;
                    m.fate.insert(t, Fate::Waiting);
                    m.waiting[c].insert(t);
                }
            }
            Op::Capacity(n) => {
                capacity = n;
                q.handle_capacity(at, n);
            }
            Op::Advance(d) => {
                now += Duration::from_millis(d);
                q.handle_timeout(t0 + now);
            }
        }
        // Outputs, in order; each grant must follow the policy given what was waiting.
        while let Some(out) = q.poll_output() {
            match out {
                Output::Granted(t) => {
                    prop_assert_eq!(
                        m.fate.get(&t),
                        Some(&Fate::Waiting),
                        "grant of a non-waiter"
                    );
                    let below = order.iter().copied().find(|&k| {
                        let g = (u64::from(shares[k]) * u64::from(capacity) / 100) as u32;
                        !m.waiting[k].is_empty() && m.in_flight[k] < g
                    });
                    let first = order.iter().copied().find(|&k| !m.waiting[k].is_empty());
                    let expected = below.or(first).expect("someone waits");
                    let c = m.class[&t];
                    prop_assert_eq!(c, expected, "grant to the wrong class");
                    prop_assert_eq!(m.waiting[c].first(), Some(&t), "grant out of FIFO order");
                    m.waiting[c].remove(&t);
                    m.in_flight[c] += 1;
                    m.fate.insert(t, Fate::InFlight);
                }
                Output::Rejected { ticket, .. } => {
                    prop_assert_eq!(
                        m.fate.get(&ticket),
                        Some(&Fate::Waiting),
                        "rejection of a non-waiter"
                    );
                    m.waiting[m.class[&ticket]].remove(&ticket);
                    m.resolve(ticket);
                }
            }
        }
        if let Err(e) = q.check_consistency() {
            return Err(TestCaseError::fail(e));
        }
        // A grant never takes in-flight above the capacity (a capacity drop may leave it above).
        if q.in_flight() > before {
            prop_assert!(
                q.in_flight() <= capacity,
                "in flight {} > capacity {capacity}",
                q.in_flight()
            );
        }
        let model_in_flight: u32 = m.in_flight.iter().sum();
        prop_assert_eq!(q.in_flight(), model_in_flight);
        let model_waiting: usize = m.waiting.iter().map(BTreeSet::len).sum();
        prop_assert_eq!(q.waiting(), model_waiting);
        prop_assert!(q.waiting() <= max_queue);
    }
    // Drain: release every in-flight ticket, cancel every waiter; all must end resolved once.
    let end = t0 + now;
    while let Some(t) = m.live(0, &[Fate::InFlight, Fate::Waiting]) {
        if m.fate[&t] == Fate::InFlight {
            prop_assert!(q.handle_release(end, t));
            m.in_flight[m.class[&t]] -= 1;
        } else {
            prop_assert!(q.handle_cancel(end, t));
            m.waiting[m.class[&t]].remove(&t);
        }
        m.resolve(t);
        while let Some(out) = q.poll_output() {
            let t = match out {
                Output::Granted(t) => t,
                Output::Rejected { ticket, .. } => ticket,
            };
            // Grants during the drain are released at the next turn of the loop.
            if matches!(out, Output::Granted(_)) {
                m.waiting[m.class[&t]].remove(&t);
                m.in_flight[m.class[&t]] += 1;
                m.fate.insert(t, Fate::InFlight);
            } else {
                m.waiting[m.class[&t]].remove(&t);
                m.resolve(t);
            }
        }
    }
    prop_assert_eq!(q.in_flight(), 0);
    prop_assert_eq!(q.waiting(), 0);
    let issued = m.fate.len();
    prop_assert_eq!(m.resolved.len(), issued, "every ticket resolved");
    prop_assert!(
        m.resolved.values().all(|&n| n == 1),
        "resolved exactly once"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_follow_the_policy_and_resolve_every_ticket_once(
        ops in prop::collection::vec(op(), 1..200),
        max_queue in 0usize..12,
    ) {
        run_ops(&ops, max_queue)?;
    }
}

/// Many classes with equal shares of a small capacity all round down to 0 slots.
#[test]
fn many_small_shares_round_down() {
    let specs: Vec<ClassSpec> = (0..10)
        .map(|i| ClassSpec::new(format!("c{i}"), i).share(10))
        .collect();
    let set = ClassSet::new(specs).unwrap();
    let q = ClassQueue::new(set.clone(), LIMITS, 9).unwrap();
    let by_name: BTreeMap<&str, u32> = set
        .iter()
        .map(|(id, s)| (s.name.as_str(), q.stats(id).guaranteed))
        .collect();
    assert!(by_name.values().all(|&g| g == 0), "{by_name:?}");
}
