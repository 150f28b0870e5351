//! Two-router pair harness (quinn `Pair` idea) shared by `pair.rs` and `vrrp_simulation.rs`.
//!
//! Owns a virtual clock, two [`Router`]s acting as nodes "a" and "b", and two in-memory wires
//! (a→b, b→a) with latency, jitter (reordering), loss, duplication and cut knobs, plus a tiny
//! deterministic RNG. It plays the role of the `vrrpd` shell: executes outputs, delivers
//! packets, fires timers. Touches nothing but the crate's public API; no wall clock, no IO.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the harness"
)]

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use tandem_vrrp_proto::{Command, Config, Instant, Output, Reason, Router, RxError, RxMeta, State};

/// splitmix64: tiny, seedable, good enough for test decisions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// Uniform duration in `0..=max`.
    pub fn duration(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.next_u64() % nanos.saturating_add(1))
    }

    /// Picks one element.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A packet in flight.
#[derive(Clone, Debug)]
struct InFlight {
    deliver_at: Instant,
    seq: u64,
    meta: RxMeta,
    payload: Vec<u8>,
}

/// One direction of the link between the nodes.
#[derive(Clone, Debug, Default)]
pub struct Wire {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra random delay in `0..=jitter`; lets packets overtake each other.
    pub jitter: Duration,
    /// Probability of dropping a packet, in ‰.
    pub loss_per_mille: u32,
    /// Probability of delivering a packet twice (independent delays), in ‰.
    pub duplicate_per_mille: u32,
    /// Partition: drop everything.
    pub cut: bool,
    queue: Vec<InFlight>,
}

impl Wire {
    /// Whether the wire currently delivers every packet within `latency + jitter`.
    pub fn healthy(&self) -> bool {
        !self.cut && self.loss_per_mille == 0
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.queue.iter().map(|p| p.deliver_at).min()
    }

    /// Removes and returns the earliest due packet, ties broken by send order.
    fn pop_due(&mut self, now: Instant) -> Option<InFlight> {
        let idx = (0..self.queue.len())
            .filter(|&i| self.queue[i].deliver_at <= now)
            .min_by_key(|&i| (self.queue[i].deliver_at, self.queue[i].seq))?;
        Some(self.queue.swap_remove(idx))
    }
}

/// One appliance: its router (None while crashed) and the shell-side view of its effects.
#[derive(Debug)]
pub struct Node {
    pub name: &'static str,
    pub config: Config,
    pub router: Option<Router>,
    /// Physical link state (the router is told through LinkUp/LinkDown).
    pub link_up: bool,
    /// VIPs installed, as the shell tracks them from AddVips/RemoveVips.
    pub vips: bool,
    pub add_vips: u32,
    pub remove_vips: u32,
    pub gratuitous: u32,
    pub adverts_sent: u64,
    /// Every transition: (time, from, to, reason).
    pub transitions: Vec<(Instant, State, State, Reason)>,
}

impl Node {
    fn new(name: &'static str, config: Config, now: Instant) -> Node {
        let router = Router::new(config.clone(), now).expect("test configs are valid");
        Node {
            name,
            config,
            router: Some(router),
            link_up: true,
            vips: false,
            add_vips: 0,
            remove_vips: 0,
            gratuitous: 0,
            adverts_sent: 0,
            transitions: Vec::new(),
        }
    }

    pub fn state(&self) -> Option<State> {
        self.router.as_ref().map(Router::state)
    }

    pub fn is_master(&self) -> bool {
        self.state() == Some(State::Master)
    }

    pub fn router(&self) -> &Router {
        self.router.as_ref().expect("node is running")
    }
}

/// Both nodes, both wires and the virtual clock.
pub struct Pair {
    pub time: Instant,
    pub nodes: [Node; 2],
    /// `wires[0]` carries a→b, `wires[1]` carries b→a.
    pub wires: [Wire; 2],
    pub rng: Rng,
    seq: u64,
    /// Running hash of every event, for same-seed-same-trace checks.
    trace_hash: std::collections::hash_map::DefaultHasher,
    /// Last notable events (transitions, VIP changes, harness actions), for failure reports.
    pub recent: VecDeque<String>,
    /// Harness steps taken (livelock guard and statistics).
    pub steps: u64,
    pub delivered: u64,
}

/// Upper bound on work at one instant before we call it a livelock.
const MAX_ROUNDS_PER_INSTANT: usize = 10_000;
const RECENT_EVENTS: usize = 48;

pub const A: usize = 0;
pub const B: usize = 1;

impl Pair {
    /// Creates both routers at time zero (state Initialize; call [`Pair::start`]).
    pub fn new(a: Config, b: Config, seed: u64) -> Pair {
        let wire = Wire {
            latency: Duration::from_micros(500),
            ..Wire::default()
        };
        Pair {
            time: Instant::ZERO,
            nodes: [
                Node::new("a", a, Instant::ZERO),
                Node::new("b", b, Instant::ZERO),
            ],
            wires: [wire.clone(), wire],
            rng: Rng::new(seed),
            seq: 0,
            trace_hash: Default::default(),
            recent: VecDeque::new(),
            steps: 0,
            delivered: 0,
        }
    }

    /// Sends Startup to both nodes.
    pub fn start(&mut self) {
        self.command(A, Command::Startup);
        self.command(B, Command::Startup);
    }

    /// Records a notable event in the trace.
    pub fn note(&mut self, event: String) {
        event.hash(&mut self.trace_hash);
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("{:?} {event}", self.time));
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace_hash.finish()
    }

    /// Applies a command to a running node (errors such as "not applicable" are fine here).
    pub fn command(&mut self, i: usize, command: Command) {
        let now = self.time;
        let name = self.nodes[i].name;
        if let Some(r) = self.nodes[i].router.as_mut() {
            let result =
                tracing::info_span!("node", name).in_scope(|| r.handle_command(now, command));
            self.note(format!(
                "{name} command {command:?} -> {}",
                if result.is_ok() { "ok" } else { "n/a" }
            ));
        }
        self.settle();
    }

    /// Kills a node without a goodbye; its shell removes the VIPs on the way down.
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.router = None;
        node.vips = false;
        let name = node.name;
        self.note(format!("{name} crashed"));
    }

    /// Starts a fresh router on a crashed node (with the current link state) and sends Startup.
    pub fn restart(&mut self, i: usize) {
        let now = self.time;
        let node = &mut self.nodes[i];
        node.router = Some(Router::new(node.config.clone(), now).expect("valid config"));
        let link_up = node.link_up;
        let name = node.name;
        self.note(format!("{name} restarted"));
        if !link_up {
            self.command(i, Command::LinkDown);
        }
        self.command(i, Command::Startup);
    }

    /// Starts a fresh router on a crashed node and sends ResumeMaster: the successor daemon of
    /// a master that adopted its VIPs (the shell reinstalls them at once).
    pub fn resume(&mut self, i: usize) {
        let now = self.time;
        let node = &mut self.nodes[i];
        node.router = Some(Router::new(node.config.clone(), now).expect("valid config"));
        let link_up = node.link_up;
        let name = node.name;
        self.note(format!("{name} resumed"));
        if !link_up {
            self.command(i, Command::LinkDown);
        }
        self.command(i, Command::ResumeMaster);
    }

    /// Takes a node's link down or up (the wires drop its packets while down).
    pub fn set_link(&mut self, i: usize, up: bool) {
        self.nodes[i].link_up = up;
        self.command(
            i,
            if up {
                Command::LinkUp
            } else {
                Command::LinkDown
            },
        );
    }

    /// Executes every queued output of node `i`; returns whether there was any.
    fn drain(&mut self, i: usize) -> bool {
        let mut any = false;
        let now = self.time;
        while let Some(out) = self.nodes[i].router.as_mut().and_then(Router::poll_output) {
            any = true;
            let name = self.nodes[i].name;
            match out {
                Output::Transmit(t) => {
                    self.nodes[i].adverts_sent += 1;
                    (now, i, t.advert.priority).hash(&mut self.trace_hash);
                    if self.nodes[i].link_up {
                        let meta = RxMeta {
                            src: t.src,
                            dst: t.dst,
                            ttl: t.ttl,
                        };
                        self.send(i, meta, t.payload);
                    }
                }
                Output::AddVips { .. } => {
                    let node = &mut self.nodes[i];
                    assert!(
                        !node.vips,
                        "{name}: AddVips while VIPs installed at {now:?}"
                    );
                    node.vips = true;
                    node.add_vips += 1;
                    self.note(format!("{name} add vips"));
                }
                Output::RemoveVips { .. } => {
                    let node = &mut self.nodes[i];
                    assert!(node.vips, "{name}: RemoveVips without VIPs at {now:?}");
                    node.vips = false;
                    node.remove_vips += 1;
                    self.note(format!("{name} remove vips"));
                }
                Output::SendGratuitous { .. } => self.nodes[i].gratuitous += 1,
                Output::StateChanged { from, to, reason } => {
                    self.nodes[i].transitions.push((now, from, to, reason));
                    self.note(format!("{name} {from:?} -> {to:?} ({reason:?})"));
                }
            }
        }
        any
    }

    /// Puts a packet from node `from` on its outgoing wire, applying the wire's knobs.
    fn send(&mut self, from: usize, meta: RxMeta, payload: Vec<u8>) {
        let copies = {
            let wire = &self.wires[from];
            if wire.cut || self.rng.chance(wire.loss_per_mille) {
                0
            } else if self.rng.chance(wire.duplicate_per_mille) {
                2
            } else {
                1
            }
        };
        for _ in 0..copies {
            let wire = &self.wires[from];
            let delay = wire.latency + self.rng.duration(wire.jitter);
            self.seq += 1;
            let p = InFlight {
                deliver_at: self.time + delay,
                seq: self.seq,
                meta,
                payload: payload.clone(),
            };
            self.wires[from].queue.push(p);
        }
    }

    /// Delivers every due packet; returns whether there was any.
    fn deliver_due(&mut self) -> bool {
        let mut any = false;
        let now = self.time;
        for from in [A, B] {
            let to = 1 - from;
            while let Some(p) = self.wires[from].pop_due(now) {
                any = true;
                let node = &mut self.nodes[to];
                let name = node.name;
                // A down link or a crashed node loses the packet.
                if !node.link_up {
                    continue;
                }
                if let Some(r) = node.router.as_mut() {
                    let result = tracing::info_span!("node", name)
                        .in_scope(|| r.handle_packet(now, &p.meta, &p.payload));
                    // The harness only ever carries packets the peer router encoded, so the only
                    // legitimate rejection is "we are the address owner" (RFC 5798 §7.1).
                    match result {
                        Ok(_) | Err(RxError::LocalIsOwner { .. }) => {}
                        Err(e) => panic!("{name}: valid packet rejected at {now:?}: {e}"),
                    }
                    self.delivered += 1;
                }
            }
        }
        any
    }

    /// Fires due timers; returns whether any fired.
    fn fire_timers(&mut self) -> bool {
        let now = self.time;
        let mut any = false;
        for node in &mut self.nodes {
            let name = node.name;
            if let Some(r) = node.router.as_mut()
                && r.poll_timeout().is_some_and(|t| t <= now)
            {
                tracing::info_span!("node", name).in_scope(|| r.handle_timeout(now));
                any = true;
            }
        }
        any
    }

    /// Processes everything due at the current instant until nothing changes.
    pub fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS_PER_INSTANT {
            let mut progress = self.drain(A);
            progress |= self.drain(B);
            progress |= self.deliver_due();
            progress |= self.fire_timers();
            if !progress {
                self.check_shell_view();
                return;
            }
        }
        panic!(
            "livelock: no quiescence at {:?} after {MAX_ROUNDS_PER_INSTANT} rounds",
            self.time
        );
    }

    /// The shell's VIP view must match each router's state once outputs are drained.
    fn check_shell_view(&self) {
        for n in &self.nodes {
            let master = n.is_master();
            assert_eq!(
                n.vips,
                master,
                "{}: shell VIPs {} but state {:?} at {:?}",
                n.name,
                n.vips,
                n.state(),
                self.time
            );
            if let Some(r) = &n.router {
                assert_eq!(
                    r.vips_requested(),
                    n.vips,
                    "{}: router and shell disagree on VIPs",
                    n.name
                );
            }
        }
    }

    /// Earliest pending timer or delivery.
    pub fn next_event(&self) -> Option<Instant> {
        let timers = self
            .nodes
            .iter()
            .filter_map(|n| n.router.as_ref()?.poll_timeout());
        let wires = self.wires.iter().filter_map(Wire::next_delivery);
        timers.chain(wires).min()
    }

    /// Settles, then jumps the clock to the next event if it is `<= deadline` and processes it.
    /// Returns false (clock unchanged) when there is none before the deadline.
    pub fn step_before(&mut self, deadline: Instant) -> bool {
        self.settle();
        match self.next_event() {
            Some(t) if t <= deadline => {
                self.time = self.time.max(t);
                self.steps += 1;
                self.settle();
                true
            }
            _ => false,
        }
    }

    /// One step: process the next event, whenever it is. False if nothing is pending.
    pub fn step(&mut self) -> bool {
        self.step_before(Instant::from_nanos(u64::MAX))
    }

    /// Runs every event up to `deadline`, then sets the clock to it. Panics on livelock
    /// (more than `max_steps` events).
    pub fn drive_bounded(&mut self, until: Instant, max_steps: u64) {
        let start = self.steps;
        while self.step_before(until) {
            assert!(
                self.steps - start <= max_steps,
                "livelock: more than {max_steps} steps before {until:?}"
            );
        }
        self.time = self.time.max(until);
        self.settle();
    }

    /// Drives for `d` of virtual time with a generous livelock bound.
    pub fn drive_for(&mut self, d: Duration) {
        let until = self.time + d;
        // At most a few events per 10 ms per node is already far more than VRRP produces.
        let bound = 1_000 + 2 * u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.drive_bounded(until, bound);
    }

    /// Jumps the clock without processing anything in between (a stalled process or host);
    /// overdue timers and packets are then handled late, at the new time.
    pub fn jump(&mut self, d: Duration) {
        self.time = self.time + d;
        self.note(format!("clock jump {d:?}"));
        self.settle();
    }

    /// Indices of nodes in Master.
    pub fn masters(&self) -> Vec<usize> {
        (0..2).filter(|&i| self.nodes[i].is_master()).collect()
    }

    /// The recent events, one per line, for failure messages.
    pub fn recent_events(&self) -> String {
        self.recent
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Config for a test node on 10.0.0.0/24 with VIP 10.0.0.100, VRID 51.
pub fn node_config(host: u8, priority: u8, preempt: bool) -> Config {
    let ip = |h: u8| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, h));
    let mut c = Config::new(51, ip(host), vec![ip(100)]);
    c.priority = priority;
    c.preempt = preempt;
    c
}

/// Installs a TRACE test-writer subscriber (quinn's `subscribe()`), once per test binary.
pub fn subscribe() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::TRACE)
        .with_target(false)
        .try_init();
}
