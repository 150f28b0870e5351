//! Seeded simulation of the class queue in a traffic surge: Poisson arrivals of two classes,
//! random service times, slot releases and impatient clients, on simulated time (one
//! `Instant` is taken as the origin; nothing waits on the wall clock).
//!
//! Scenario (`surge`): one backend of 100 slots (say 4 servers x `max_connections: 25`),
//! service times uniform in 20..60 ms (mean 40 ms, so the backend serves about 2500 req/s).
//! Normal load is half of that, 1250 req/s; from 2 s to 12 s the load is ten times normal
//! (12 500 req/s, five times what the backend serves), then normal again until 15 s.
//! 10% of the arrivals are `gold` (priority 0, no share, the backend's 5 s `timeout queue`),
//! 90% `bronze` (priority 10, share 10%, `max_queue_time: 500ms`); 2% of waiting bronze
//! clients give up after 50 to 400 ms. The queue holds 1024 requests.
//!
//! Why not "10x the capacity" with gold at 10%: gold alone would then ask for 100% of the
//! backend while bronze is guaranteed 10% of it, and no queue can bound a wait whose demand
//! exceeds its service. `gold_overload` runs exactly that and checks what still holds.
//!
//! Checked in `surge`, for every seed:
//! - in flight never exceeds the 100 slots (the simulated servers count their own slots);
//! - gold never expires, is never refused nor displaced;
//! - gold's longest wait is within the bound derived in the class queue's module doc:
//!   while gold has a backlog, once the requests in flight when it began have ended (at most
//!   `S_max` = 60 ms), gold holds at least `C - g` = 100 - 10 slots, each freed within
//!   `S_max`; so gold is served at rate `R = (C - g) / S_max` after a latency `T = S_max`,
//!   and a FIFO class whose arrivals satisfy `A[a, b] <= sigma + R (b - a)` waits at most
//!   `T + sigma / R`. `sigma` is measured on the run's own gold arrivals (a leaky bucket
//!   drained at `R`);
//! - bronze keeps its 10 guaranteed slots whenever it has waiters during the surge;
//! - bronze gets expired or refused (the surge is five times what the backend serves);
//! - the queue's own audit passes, and each ticket is resolved exactly once.
//!
//! Seeds: `CLASS_SIM_SEED=n` replays one seed, `CLASS_SIM_SEEDS=n` runs seeds 1..=n (default:
//! one fixed seed). Figures: `cargo test -p tandem-balance --test class_simulation --
//! --nocapture`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use tandem_balance::{
    Admission, ClassId, ClassQueue, ClassSet, ClassSpec, Output, QueueLimits, Rejection, Ticket,
};

/// splitmix64: deterministic, seedable, enough for a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Uniform integer in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() <= p
    }
}

const GOLD: usize = 0;
const BRONZE: usize = 1;
const NAMES: [&str; 2] = ["gold", "bronze"];

#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// Slots of the backend.
    capacity: u32,
    /// Service time bounds, microseconds.
    service_us: (u64, u64),
    /// Normal arrival rate, requests per second.
    normal_rate: f64,
    /// Surge multiplier and window, microseconds.
    surge: f64,
    surge_us: (u64, u64),
    /// Arrivals end here; the run continues until everything is resolved.
    end_us: u64,
    gold_fraction: f64,
    bronze_share: u8,
    bronze_max_queue_time: Duration,
    queue_timeout: Duration,
    max_queue: usize,
    /// Fraction of waiting bronze clients that give up, and after how long (microseconds).
    bronze_impatient: f64,
    patience_us: (u64, u64),
}

const SURGE: Scenario = Scenario {
    capacity: 100,
    service_us: (20_000, 60_000),
    normal_rate: 1250.0,
    surge: 10.0,
    surge_us: (2_000_000, 12_000_000),
    end_us: 15_000_000,
    gold_fraction: 0.10,
    bronze_share: 10,
    bronze_max_queue_time: Duration::from_millis(500),
    queue_timeout: Duration::from_secs(5),
    max_queue: 1024,
    bronze_impatient: 0.02,
    patience_us: (50_000, 400_000),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive,
    Done(Ticket),
    GiveUp(Ticket),
}

#[derive(Debug, Default, Clone)]
struct Figures {
    arrived: [u64; 2],
    served_at_once: [u64; 2],
    served_from_queue: [u64; 2],
    expired: [u64; 2],
    refused: [u64; 2],
    evicted: [u64; 2],
    cancelled: [u64; 2],
    /// Waits of requests that got a slot after waiting, microseconds.
    waits: [Vec<u64>; 2],
    max_in_flight: u32,
    /// Smallest bronze in-flight count seen while bronze had waiters during the surge.
    min_bronze_while_waiting: Option<u32>,
    /// Gold arrival times, microseconds (for the burst measure).
    gold_arrivals: Vec<u64>,
    trace: u64,
    steps: u64,
}

impl Figures {
    fn fold(&mut self, parts: [u64; 3]) {
        for p in parts {
            self.trace ^= p;
            self.trace = self.trace.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

struct Sim {
    sc: Scenario,
    q: ClassQueue,
    ids: [ClassId; 2],
    t0: Instant,
    now: u64,
    rng: Rng,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    /// Live tickets: class and arrival time.
    live: HashMap<Ticket, (usize, u64)>,
    resolved: HashMap<Ticket, u32>,
    /// Slots the simulated servers have handed out.
    busy: u32,
    f: Figures,
}

impl Sim {
    fn new(sc: Scenario, seed: u64) -> Self {
        let set = ClassSet::new(vec![
            ClassSpec::new("gold", 0),
            ClassSpec::new("bronze", 10)
                .share(sc.bronze_share)
                .max_queue_time(sc.bronze_max_queue_time),
        ])
        .expect("valid classes");
        let ids = [set.id("gold").unwrap(), set.id("bronze").unwrap()];
        let limits = QueueLimits {
            max_queue: sc.max_queue,
            queue_timeout: sc.queue_timeout,
        };
        let mut sim = Sim {
            sc,
            q: ClassQueue::new(set, limits, sc.capacity).expect("valid limits"),
            ids,
            t0: Instant::now(),
            now: 0,
            rng: Rng(seed),
            events: BinaryHeap::new(),
            seq: 0,
            live: HashMap::new(),
            resolved: HashMap::new(),
            busy: 0,
            f: Figures::default(),
        };
        sim.schedule(0, Ev::Arrive);
        sim
    }

    fn at(&self, us: u64) -> Instant {
        self.t0 + Duration::from_micros(us)
    }

    fn schedule(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((t, self.seq, ev)));
    }

    fn rate(&self, t: u64) -> f64 {
        let (a, b) = self.sc.surge_us;
        if (a..b).contains(&t) {
            self.sc.normal_rate * self.sc.surge
        } else {
            self.sc.normal_rate
        }
    }

    fn resolve(&mut self, t: Ticket) {
        *self.resolved.entry(t).or_default() += 1;
        self.live.remove(&t);
    }

    /// The simulated servers take a granted request.
    fn start(&mut self, t: Ticket, waited: bool) {
        self.busy += 1;
        assert!(
            self.busy <= self.sc.capacity,
            "servers hold {} requests, capacity {}",
            self.busy,
            self.sc.capacity
        );
        self.f.max_in_flight = self.f.max_in_flight.max(self.busy);
        let (class, arrived) = self.live[&t];
        if waited {
            self.f.served_from_queue[class] += 1;
            self.f.waits[class].push(self.now - arrived);
        } else {
            self.f.served_at_once[class] += 1;
        }
        let svc = self.rng.range(self.sc.service_us.0, self.sc.service_us.1);
        self.schedule(self.now + svc, Ev::Done(t));
    }

    fn drain_outputs(&mut self) {
        while let Some(out) = self.q.poll_output() {
            match out {
                Output::Granted(t) => {
                    self.f.fold([self.now, 1, t.get()]);
                    self.start(t, true);
                }
                Output::Rejected { ticket, reason, .. } => {
                    self.f.fold([self.now, 2 + reason as u64, ticket.get()]);
                    let class = self.live[&ticket].0;
                    match reason {
                        Rejection::Expired => self.f.expired[class] += 1,
                        Rejection::Evicted => self.f.evicted[class] += 1,
                    }
                    self.resolve(ticket);
                }
            }
        }
    }

    fn arrive(&mut self) {
        let class = if self.rng.chance(self.sc.gold_fraction) {
            GOLD
        } else {
            BRONZE
        };
        self.f.arrived[class] += 1;
        if class == GOLD {
            self.f.gold_arrivals.push(self.now);
        }
        match self.q.handle_arrival(self.at(self.now), self.ids[class]) {
            Admission::Serve(t) => {
                self.f.fold([self.now, 10 + class as u64, t.get()]);
                self.live.insert(t, (class, self.now));
                self.start(t, false);
            }
            Admission::Queued { ticket, .. } => {
                self.f.fold([self.now, 20 + class as u64, ticket.get()]);
                self.live.insert(ticket, (class, self.now));
                if class == BRONZE && self.rng.chance(self.sc.bronze_impatient) {
                    let p = self.rng.range(self.sc.patience_us.0, self.sc.patience_us.1);
                    self.schedule(self.now + p, Ev::GiveUp(ticket));
                }
            }
            Admission::Refused { retry_after } => {
                self.f
                    .fold([self.now, 30 + class as u64, retry_after.as_secs()]);
                self.f.refused[class] += 1;
            }
        }
        let gap = -self.rng.unit().ln() / self.rate(self.now);
        let next = self.now + ((gap * 1e6) as u64).max(1);
        if next < self.sc.end_us {
            self.schedule(next, Ev::Arrive);
        }
    }

    fn check(&mut self) {
        let bronze = self.q.stats(self.ids[BRONZE]);
        let (a, b) = self.sc.surge_us;
        let settled = a + self.sc.service_us.1;
        if (settled..b).contains(&self.now) && bronze.waiting > 0 {
            let m = self.f.min_bronze_while_waiting.get_or_insert(u32::MAX);
            *m = (*m).min(bronze.in_flight);
        }
        assert_eq!(self.q.in_flight(), self.busy, "queue and servers agree");
        self.f.steps += 1;
        if self.f.steps.is_multiple_of(512) {
            self.q
                .check_consistency()
                .unwrap_or_else(|e| panic!("step {}: {e}", self.f.steps));
        }
    }

    fn run(mut self) -> Figures {
        loop {
            let next = self.events.peek().map(|Reverse((t, _, _))| *t);
            let deadline = self
                .q
                .poll_timeout()
                .map(|d| d.saturating_duration_since(self.t0).as_micros() as u64);
            match (next, deadline) {
                (None, None) => break,
                (n, Some(d)) if n.is_none_or(|n| d <= n) => {
                    self.now = self.now.max(d);
                    self.q.handle_timeout(self.at(self.now));
                }
                _ => {
                    let Some(Reverse((t, _, ev))) = self.events.pop() else {
                        break;
                    };
                    self.now = t;
                    match ev {
                        Ev::Arrive => self.arrive(),
                        Ev::Done(ticket) => {
                            self.busy -= 1;
                            assert!(self.q.handle_release(self.at(t), ticket));
                            self.f.fold([t, 40, ticket.get()]);
                            self.resolve(ticket);
                        }
                        Ev::GiveUp(ticket) => {
                            // A client whose request already runs stays for the response.
                            if !self.q.is_in_flight(ticket)
                                && self.q.handle_cancel(self.at(t), ticket)
                            {
                                self.f.fold([t, 50, ticket.get()]);
                                self.f.cancelled[BRONZE] += 1;
                                self.resolve(ticket);
                            }
                        }
                    }
                }
            }
            self.drain_outputs();
            self.check();
        }
        assert!(
            self.live.is_empty(),
            "{} tickets never resolved",
            self.live.len()
        );
        assert!(
            self.resolved.values().all(|&n| n == 1),
            "a ticket was resolved twice"
        );
        assert_eq!((self.q.in_flight(), self.q.waiting(), self.busy), (0, 0, 0));
        // The queue's own counters agree with what the simulation saw.
        for (class, id) in self.ids.iter().enumerate() {
            let s = self.q.stats(*id);
            assert_eq!(s.arrived, self.f.arrived[class], "{}", NAMES[class]);
            assert_eq!(s.expired, self.f.expired[class], "{}", NAMES[class]);
            assert_eq!(s.refused, self.f.refused[class], "{}", NAMES[class]);
            assert_eq!(s.evicted, self.f.evicted[class], "{}", NAMES[class]);
            assert_eq!(
                s.served_from_queue, self.f.served_from_queue[class],
                "{}",
                NAMES[class]
            );
        }
        self.f
    }
}

/// Smallest `sigma` such that the gold arrivals in every closed window `[a, b]` number at most
/// `sigma + rate * (b - a)`: the peak of a bucket filled by each arrival and drained at `rate`.
fn burst(arrivals: &[u64], rate_per_us: f64) -> f64 {
    let mut level: f64 = 0.0;
    let mut peak: f64 = 0.0;
    let mut last = 0u64;
    for &t in arrivals {
        level = (level - rate_per_us * (t - last) as f64).max(0.0) + 1.0;
        last = t;
        peak = peak.max(level);
    }
    peak
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("CLASS_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return vec![s];
    }
    let n: u64 = std::env::var("CLASS_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if n <= 1 {
        vec![0x5eed]
    } else {
        (1..=n).collect()
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn print(name: &str, seed: u64, f: &Figures) {
    println!(
        "{name} seed {seed}: {} steps, trace {:016x}",
        f.steps, f.trace
    );
    for (class, label) in NAMES.iter().enumerate() {
        let mut w = f.waits[class].clone();
        w.sort_unstable();
        println!(
            "  {label:6} arrived {:6}  at once {:6}  from queue {:6}  expired {:6} ({:4.1}%)  refused {:6} ({:4.1}%)  evicted {:5}  cancelled {:4}  wait p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
            f.arrived[class],
            f.served_at_once[class],
            f.served_from_queue[class],
            f.expired[class],
            pct(f.expired[class], f.arrived[class]),
            f.refused[class],
            pct(f.refused[class], f.arrived[class]),
            f.evicted[class],
            f.cancelled[class],
            percentile(&w, 0.5) as f64 / 1e3,
            percentile(&w, 0.99) as f64 / 1e3,
            w.last().copied().unwrap_or(0) as f64 / 1e3,
        );
    }
}

#[test]
fn surge_gold_waits_are_bounded_and_bronze_keeps_its_share() {
    let sc = SURGE;
    let guaranteed = u64::from(sc.capacity) * u64::from(sc.bronze_share) / 100;
    let s_max = sc.service_us.1;
    let lanes = u64::from(sc.capacity) - guaranteed;
    for seed in seeds() {
        let f = Sim::new(sc, seed).run();
        print("surge", seed, &f);
        let rate = lanes as f64 / s_max as f64; // gold slots per microsecond, R
        let sigma = burst(&f.gold_arrivals, rate);
        let bound_us = s_max as f64 + sigma / rate;
        let gold_max = f.waits[GOLD].iter().copied().max().unwrap_or(0);
        println!(
            "  gold burst sigma {sigma:.1} at R = {lanes} slots / {} ms: bound T + sigma/R = {:.1} ms; measured max {:.1} ms",
            s_max / 1000,
            bound_us / 1e3,
            gold_max as f64 / 1e3
        );
        println!(
            "  bronze: {:.1}% of its arrivals expired, {:.1}% refused, {:.1}% displaced; min in flight while waiting {:?} (guaranteed {guaranteed}); max in flight {}",
            pct(f.expired[BRONZE], f.arrived[BRONZE]),
            pct(f.refused[BRONZE], f.arrived[BRONZE]),
            pct(f.evicted[BRONZE], f.arrived[BRONZE]),
            f.min_bronze_while_waiting,
            f.max_in_flight
        );
        assert!(f.max_in_flight <= sc.capacity);
        assert_eq!(
            (f.expired[GOLD], f.refused[GOLD], f.evicted[GOLD]),
            (0, 0, 0),
            "seed {seed}: gold was turned away"
        );
        assert!(
            gold_max as f64 <= bound_us,
            "seed {seed}: gold waited {gold_max} us, bound {bound_us:.0} us"
        );
        assert!(
            f.min_bronze_while_waiting
                .is_some_and(|m| u64::from(m) >= guaranteed),
            "seed {seed}: bronze fell below its {guaranteed} guaranteed slots: {:?}",
            f.min_bronze_while_waiting
        );
        assert!(
            f.expired[BRONZE] + f.refused[BRONZE] > f.arrived[BRONZE] / 2,
            "seed {seed}: a five-fold overload must turn most bronze away"
        );
        assert!(f.served_from_queue[BRONZE] > 0 && f.waits[GOLD].len() > 100);
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let short = Scenario {
        end_us: 4_000_000,
        surge_us: (1_000_000, 3_000_000),
        ..SURGE
    };
    let a = Sim::new(short, 7).run();
    let b = Sim::new(short, 7).run();
    let c = Sim::new(short, 8).run();
    assert_eq!((a.trace, a.steps), (b.trace, b.steps));
    assert_ne!(a.trace, c.trace, "a different seed gives a different run");
}

/// The literal figures: gold is 10% of ten times the capacity, i.e. as much as the
/// backend serves, while bronze is guaranteed 10% of it. No queue can bound gold's wait here;
/// what must still hold is the capacity, bronze's guarantee, and that bronze is turned away
/// before gold.
#[test]
fn gold_overload_still_keeps_capacity_and_shares() {
    let sc = Scenario {
        normal_rate: 2500.0,
        end_us: 12_000_000,
        ..SURGE
    };
    let guaranteed = u64::from(sc.capacity) * u64::from(sc.bronze_share) / 100;
    let seed = seeds()[0];
    let f = Sim::new(sc, seed).run();
    print("gold_overload", seed, &f);
    println!(
        "  bronze min in flight while waiting {:?} (guaranteed {guaranteed}); max in flight {}",
        f.min_bronze_while_waiting, f.max_in_flight
    );
    assert!(f.max_in_flight <= sc.capacity);
    assert!(
        f.min_bronze_while_waiting
            .is_some_and(|m| u64::from(m) >= guaranteed),
        "bronze fell below its guarantee: {:?}",
        f.min_bronze_while_waiting
    );
    let gold_turned_away = f.expired[GOLD] + f.refused[GOLD] + f.evicted[GOLD];
    let bronze_turned_away = f.expired[BRONZE] + f.refused[BRONZE] + f.evicted[BRONZE];
    assert!(
        pct(gold_turned_away, f.arrived[GOLD]) < pct(bronze_turned_away, f.arrived[BRONZE]),
        "gold must fare better than bronze"
    );
}
