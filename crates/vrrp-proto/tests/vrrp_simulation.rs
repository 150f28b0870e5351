//! Seeded deterministic simulation of a VRRP pair (sozu-style), on the pair harness.
//!
//! Owns the action mix, the health model and the safety/liveness check:
//! **once the network has been healthy (no loss, no partition, links up, both nodes running,
//! nothing pending) for longer than the convergence window, there is exactly one Master.**
//! The harness additionally asserts on every step that each shell's VIP view matches its
//! router's state, and the routers run `check_invariants()` (debug builds).
//! Touches nothing but the crate's public API. No wall clock: time only moves by drawn deltas.
//!
//! Environment:
//! * `VRRP_SIM_SEED=<n>`: replay one seed, with a TRACE log of both routers.
//! * `VRRP_SIM_SEEDS=<n>`: how many seeds (0..n) the main test runs (default 256).
//! * `VRRP_SIM_STEPS=<n>`: actions per seed (default 400).

mod common;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use common::{A, B, Pair, Rng, node_config};
use tandem_vrrp_proto::{Command, Instant, State};

const DEFAULT_SEEDS: u64 = 256;
const DEFAULT_STEPS: u64 = 400;
/// Upper bound of the random per-packet extra delay (reordering), also used in the window.
const MAX_JITTER: Duration = Duration::from_millis(20);
const MAX_LATENCY: Duration = Duration::from_millis(3);

/// Something the simulation will do at a later instant.
#[derive(Clone, Copy, Debug)]
enum Pending {
    /// Start a fresh router on a crashed node.
    Restart(usize),
    /// Send Startup to a node that was shut down gracefully.
    Startup(usize),
    /// Bring a node's link back.
    LinkUp(usize),
    /// Clear loss and partitions.
    Heal,
    /// Restart a crashed master with ResumeMaster (supervised restart of its daemon).
    Resume(usize),
    /// The end of a HoldBackup: release it (true) or let it run out (false).
    EndHold(usize, bool),
}

/// Outcome of one seed.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    trace_hash: u64,
    checks: u64,
    harness_steps: u64,
    delivered: u64,
    transitions: usize,
}

struct Sim {
    pair: Pair,
    /// Decisions of the simulation (the pair has its own RNG for wire effects).
    rng: Rng,
    pending: Vec<(Instant, Pending)>,
    healthy_since: Option<Instant>,
    /// Time after which a healthy network must have exactly one master.
    window: Duration,
    checks: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let mut a = node_config(1, rng.pick(&[100, 150, 200, 254, 255]), rng.chance(700));
        let mut b = node_config(2, rng.pick(&[50, 100, 150, 200, 254]), rng.chance(700));
        if rng.chance(200) {
            b.priority = a.priority.min(254);
        }
        for c in [&mut a, &mut b] {
            c.advert_interval_cs = rng.pick(&[20, 50, 100]);
            c.preempt_delay = rng.pick(&[
                Duration::ZERO,
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(3),
            ]);
            c.switchover_hold = rng.pick(&[
                Duration::ZERO,
                Duration::from_secs(2),
                Duration::from_secs(5),
            ]);
        }
        let max_interval =
            Duration::from_millis(10 * u64::from(a.advert_interval_cs.max(b.advert_interval_cs)));
        let max_hold = [
            a.preempt_delay,
            b.preempt_delay,
            a.switchover_hold,
            b.switchover_hold,
        ]
        .into_iter()
        .max()
        .unwrap();
        // A preempt delay / hold may run out, then a Master_Down_Interval (≤ 4 intervals) passes,
        // then one more advert (≤ 1 interval) plus delivery settles a double master.
        let window = max_hold
            + 5 * max_interval
            + 2 * (MAX_LATENCY + MAX_JITTER)
            + Duration::from_millis(100);
        let mut pair = Pair::new(a, b, rng.next_u64());
        for w in &mut pair.wires {
            w.latency = rng.duration(MAX_LATENCY);
        }
        pair.start();
        let mut sim = Sim {
            pair,
            rng,
            pending: Vec::new(),
            healthy_since: None,
            window,
            checks: 0,
        };
        sim.refresh(true);
        sim
    }

    fn now(&self) -> Instant {
        self.pair.time
    }

    fn healthy_now(&self) -> bool {
        self.pending.is_empty()
            && self.pair.wires.iter().all(|w| w.healthy())
            && self
                .pair
                .nodes
                .iter()
                .all(|n| n.link_up && n.state().is_some_and(|s| s != State::Initialize))
    }

    /// Updates the health clock; a disturbance restarts it even if the network stays healthy.
    fn refresh(&mut self, disturbance: bool) {
        if !self.healthy_now() {
            self.healthy_since = None;
        } else if self.healthy_since.is_none() || disturbance {
            self.healthy_since = Some(self.now());
        }
    }

    /// The model: after `window` of health, exactly one master.
    fn check(&mut self) -> Result<(), String> {
        let Some(since) = self.healthy_since else {
            return Ok(());
        };
        if self.now() - since <= self.window {
            return Ok(());
        }
        self.checks += 1;
        let masters = self.pair.masters();
        if masters.len() == 1 {
            return Ok(());
        }
        let states: Vec<_> = self
            .pair
            .nodes
            .iter()
            .map(|n| (n.name, n.state()))
            .collect();
        Err(format!(
            "{} masters after {:?} of health (window {:?}): {states:?}",
            masters.len(),
            self.now() - since,
            self.window
        ))
    }

    /// Runs every harness event up to `until`, applying pending actions on time and checking
    /// the model after each event.
    fn run_until(&mut self, until: Instant) -> Result<(), String> {
        loop {
            let next_pending = self
                .pending
                .iter()
                .map(|p| p.0)
                .min()
                .filter(|t| *t <= until);
            let stop = next_pending.unwrap_or(until);
            while self.pair.step_before(stop) {
                self.check()?;
            }
            self.pair.drive_bounded(stop, 0);
            self.check()?;
            let Some(at) = next_pending else {
                return Ok(());
            };
            let due: Vec<Pending> = self
                .pending
                .iter()
                .filter(|p| p.0 <= at)
                .map(|p| p.1)
                .collect();
            self.pending.retain(|p| p.0 > at);
            for p in due {
                self.apply_pending(p);
            }
            self.refresh(true);
            self.check()?;
        }
    }

    fn apply_pending(&mut self, p: Pending) {
        match p {
            Pending::Restart(i) => self.pair.restart(i),
            Pending::Startup(i) => self.pair.command(i, Command::Startup),
            Pending::LinkUp(i) => self.pair.set_link(i, true),
            Pending::Heal => self.heal(),
            Pending::Resume(i) => self.pair.resume(i),
            Pending::EndHold(i, true) => self.pair.command(i, Command::ReleaseHold),
            Pending::EndHold(_, false) => {}
        }
    }

    fn heal(&mut self) {
        for w in &mut self.pair.wires {
            w.loss_per_mille = 0;
            w.cut = false;
        }
        self.pair.note("heal".into());
    }

    fn schedule(&mut self, after: Duration, p: Pending) {
        let at = self.now() + after;
        self.pending.push((at, p));
    }

    /// A node that is running and not already subject to a pending event.
    fn idle_node(&mut self) -> Option<usize> {
        let i = self.rng.pick(&[A, B]);
        let busy = self.pending.iter().any(|p| matches!(p.1, Pending::Restart(j) | Pending::Startup(j) | Pending::LinkUp(j) | Pending::Resume(j) | Pending::EndHold(j, _) if j == i));
        (!busy && self.pair.nodes[i].router.is_some()).then_some(i)
    }

    /// Draws and performs one action, then advances time by a drawn delta.
    fn act(&mut self) -> Result<(), String> {
        // (weight, action id)
        const MIX: [(u64, u8); 18] = [
            (30, 0), // advance a little
            (20, 1), // advance up to 5 s
            (10, 2), // advance up to 30 s
            (5, 3),  // loss on one wire
            (8, 4),  // heal
            (4, 5),  // partition
            (3, 6),  // duplicates
            (3, 7),  // jitter / reordering
            (4, 8),  // base priority change
            (3, 9),  // track penalty change
            (2, 10), // crash, restart later
            (2, 11), // graceful shutdown, startup later
            (3, 12), // link flap
            (2, 13), // switchover
            (1, 14), // big clock jump
            (1, 15), // buggify
            (2, 16), // hold backup (split-brain guard), released or run out
            (2, 17), // crash a master, resume it quickly (supervised restart)
        ];
        let total: u64 = MIX.iter().map(|m| m.0).sum();
        let mut draw = self.rng.below(total);
        let action = MIX
            .iter()
            .find(|m| {
                if draw < m.0 {
                    true
                } else {
                    draw -= m.0;
                    false
                }
            })
            .map_or(0, |m| m.1);
        let mut disturbance = true;
        let mut advance = self.rng.duration(Duration::from_millis(500));
        match action {
            0 => disturbance = false,
            1 => {
                disturbance = false;
                advance = self.rng.duration(Duration::from_secs(5));
            }
            2 => {
                disturbance = false;
                advance = self.rng.duration(Duration::from_secs(30));
            }
            3 => {
                let w = self.rng.pick(&[A, B]);
                self.pair.wires[w].loss_per_mille = 100 + self.rng.below(901) as u32;
                self.pair.note(format!(
                    "loss {} on wire {w}",
                    self.pair.wires[w].loss_per_mille
                ));
            }
            4 => self.heal(),
            5 => {
                let which = self.rng.below(3) as usize;
                for w in [A, B] {
                    if which == 2 || which == w {
                        self.pair.wires[w].cut = true;
                    }
                }
                self.pair.note(format!("partition {which}"));
            }
            6 => {
                disturbance = false;
                let w = self.rng.pick(&[A, B]);
                self.pair.wires[w].duplicate_per_mille = self.rng.below(500) as u32;
            }
            7 => {
                disturbance = false;
                let w = self.rng.pick(&[A, B]);
                self.pair.wires[w].jitter = self.rng.duration(MAX_JITTER);
            }
            8 => {
                if let Some(i) = self.idle_node() {
                    let p = 1 + self.rng.below(254) as u8;
                    self.pair.command(i, Command::SetPriority(p));
                }
            }
            9 => {
                if let Some(i) = self.idle_node() {
                    let w = self.rng.pick(&[0, 0, 10, 50, 120, 255]);
                    self.pair.command(i, Command::SetTrackPenalty(w));
                }
            }
            10 => {
                if let Some(i) = self.idle_node() {
                    self.pair.crash(i);
                    let after = self.rng.duration(Duration::from_secs(10));
                    self.schedule(after, Pending::Restart(i));
                }
            }
            11 => {
                if let Some(i) = self.idle_node() {
                    self.pair.command(i, Command::Shutdown);
                    let after = self.rng.duration(Duration::from_secs(5));
                    self.schedule(after, Pending::Startup(i));
                }
            }
            12 => {
                if let Some(i) = self.idle_node()
                    && self.pair.nodes[i].link_up
                {
                    self.pair.set_link(i, false);
                    let after = self.rng.duration(Duration::from_secs(5));
                    self.schedule(after, Pending::LinkUp(i));
                }
            }
            13 => {
                if let Some(&m) = self.pair.masters().first() {
                    self.pair.command(m, Command::Switchover);
                }
            }
            14 => {
                let d = Duration::from_secs(1) + self.rng.duration(Duration::from_secs(600));
                self.refresh(true);
                self.pair.jump(d);
            }
            16 => {
                if let Some(i) = self.idle_node() {
                    let after = self.rng.duration(Duration::from_secs(3));
                    let until = self.now() + after;
                    self.pair.command(i, Command::HoldBackup { until });
                    let release = self.rng.chance(500);
                    self.schedule(after, Pending::EndHold(i, release));
                }
            }
            17 => {
                if let Some(&m) = self.pair.masters().first()
                    && let Some(i) = self.idle_node().filter(|i| *i == m)
                {
                    self.pair.crash(i);
                    let after = self.rng.duration(Duration::from_millis(300));
                    self.schedule(after, Pending::Resume(i));
                }
            }
            _ => self.buggify(),
        }
        self.refresh(disturbance);
        self.check()?;
        self.run_until(self.now() + advance)
    }

    /// Rare extremes.
    fn buggify(&mut self) {
        match self.rng.below(5) {
            0 => {
                // Both nodes die and come back at the same instant.
                if self.pair.nodes.iter().all(|n| n.router.is_some()) && self.pending.is_empty() {
                    self.pair.crash(A);
                    self.pair.crash(B);
                    let after = self.rng.duration(Duration::from_secs(2));
                    self.schedule(after, Pending::Restart(A));
                    self.schedule(after, Pending::Restart(B));
                }
            }
            1 => {
                // Total blackout for up to a minute.
                for w in &mut self.pair.wires {
                    w.cut = true;
                }
                let after = self.rng.duration(Duration::from_secs(60));
                self.schedule(after, Pending::Heal);
                self.pair.note("blackout".into());
            }
            2 => {
                // Equal priorities: the primary-address tie-break decides.
                for i in [A, B] {
                    self.pair.command(i, Command::SetTrackPenalty(0));
                    self.pair.command(i, Command::SetPriority(177));
                }
            }
            3 => {
                // Zero latency and jitter: simultaneous events everywhere.
                for w in &mut self.pair.wires {
                    w.latency = Duration::ZERO;
                    w.jitter = Duration::ZERO;
                }
            }
            _ => {
                self.refresh(true);
                self.pair.jump(Duration::from_secs(3600));
            }
        }
    }

    fn report(&self) -> Report {
        Report {
            trace_hash: self.pair.trace_hash(),
            checks: self.checks,
            harness_steps: self.pair.steps,
            delivered: self.pair.delivered,
            transitions: self.pair.nodes.iter().map(|n| n.transitions.len()).sum(),
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
    )
}

/// Runs one seed; on failure (model violation or panic) panics with the seed and step.
fn run_seed(seed: u64, steps: u64) -> Report {
    let step = Cell::new(0);
    let recent = std::cell::RefCell::new(String::new());
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed);
        for s in 0..steps {
            step.set(s);
            if let Err(e) = sim.act() {
                *recent.borrow_mut() = sim.pair.recent_events();
                return Err(e);
            }
        }
        // End healthy for a full window so every seed checks the model at least once.
        sim.heal();
        let pending = std::mem::take(&mut sim.pending);
        for (_, p) in pending {
            sim.apply_pending(p);
        }
        sim.refresh(true);
        let until = sim.now() + sim.window + Duration::from_secs(1);
        if let Err(e) = sim.run_until(until) {
            *recent.borrow_mut() = sim.pair.recent_events();
            return Err(e);
        }
        Ok(sim.report())
    }));
    match result {
        Ok(Ok(report)) => report,
        Ok(Err(model)) => panic!(
            "vrrp simulation failed: seed {seed} step {}: {model}\nrecent events:\n{}\nreplay: VRRP_SIM_SEED={seed} VRRP_SIM_STEPS={steps} cargo test -p tandem-vrrp-proto --test vrrp_simulation -- --nocapture",
            step.get(),
            recent.borrow()
        ),
        Err(_) => panic!(
            "vrrp simulation panicked (message above): seed {seed} step {}\nreplay: VRRP_SIM_SEED={seed} VRRP_SIM_STEPS={steps} cargo test -p tandem-vrrp-proto --test vrrp_simulation -- --nocapture",
            step.get()
        ),
    }
}

#[test]
fn exactly_one_master_once_the_network_is_healthy() {
    let steps = env_u64("VRRP_SIM_STEPS").unwrap_or(DEFAULT_STEPS);
    let seeds: Vec<u64> = match env_u64("VRRP_SIM_SEED") {
        Some(seed) => {
            common::subscribe();
            vec![seed]
        }
        None => (0..env_u64("VRRP_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let (mut checks, mut events, mut delivered, mut transitions) = (0, 0, 0, 0);
    for &seed in &seeds {
        let r = run_seed(seed, steps);
        assert!(r.checks > 0, "seed {seed}: the model was never checked");
        checks += r.checks;
        events += r.harness_steps;
        delivered += r.delivered;
        transitions += r.transitions;
    }
    eprintln!(
        "vrrp simulation: {} seeds × {steps} actions, {events} events, {delivered} packets delivered, {transitions} transitions, {checks} model checks",
        seeds.len()
    );
}

#[test]
fn same_seed_same_trace() {
    let a = run_seed(7, 100);
    let b = run_seed(7, 100);
    assert_eq!(a, b);
    assert!(a.transitions > 2, "trace too boring to compare: {a:?}");
    assert_ne!(run_seed(8, 100).trace_hash, a.trace_hash);
}
