//! An in-memory pair harness for the sync core (quinn's `Pair` idea): two [`SyncCore`]s, a
//! model of each node's store, a wire with latency and cuts, and virtual time.
//!
//! Owns the simulated world only: message delivery, connection life (cores close on timeouts,
//! the harness reconnects with a delay while the link is up), delayed applies that re-check the
//! local current generation like the supervisor's transaction does, and a global registry of
//! every generation's parents used to check "no committed generation is ever overwritten".
//! Must not read the clock (time starts at a caller-given instant and moves only in
//! [`Pair::step`]) and does no IO; used by unit tests and `tests/sync_simulation.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use tracing::info_span;

use crate::core::{GenInfo, Identity, LocalView, Output, Relation, SyncCore};
use crate::proto::{self, GenRef, Message, Outcome, RefusalKind, WireGeneration};

/// One-way delivery delay.
pub const LATENCY: Duration = Duration::from_millis(2);
/// Delay before the harness reconnects after a close (link up).
pub const RECONNECT: Duration = Duration::from_millis(100);
/// How long a peer generation takes to apply.
pub const APPLY: Duration = Duration::from_millis(50);

/// One node's store model and core.
#[derive(Debug)]
pub struct Node {
    /// The core.
    pub core: SyncCore,
    /// The node's history, oldest first (append-only; never truncated in the model).
    pub history: Vec<WireGeneration>,
    /// Highest schema this node reads.
    pub max_schema: u32,
    applies: Vec<(Instant, WireGeneration, Option<GenRef>)>,
    commits: u64,
}

impl Node {
    /// The node's current generation.
    pub fn current(&self) -> Option<GenRef> {
        self.history.last().map(|g| g.generation.clone())
    }

    fn view(&self) -> LocalView {
        LocalView {
            history: self
                .history
                .iter()
                .map(|g| GenInfo {
                    generation: g.generation.clone(),
                    schema_version: g.schema_version,
                })
                .collect(),
        }
    }
}

/// The two nodes, the wire and virtual time.
#[derive(Debug)]
pub struct Pair {
    /// `lb1` and `lb2`.
    pub nodes: [Node; 2],
    /// Virtual now.
    pub now: Instant,
    /// Whether the sync link carries packets.
    pub link_up: bool,
    connected: bool,
    reconnect_at: Option<Instant>,
    wires: [VecDeque<(Instant, Vec<u8>)>; 2],
    /// Parents of every generation ever committed anywhere (a resolution has two).
    pub parents: BTreeMap<GenRef, Vec<GenRef>>,
    /// Human-readable trace.
    pub trace: Vec<String>,
    /// Messages delivered.
    pub delivered: u64,
}

/// The names of the two nodes.
pub const NAMES: [&str; 2] = ["lb1", "lb2"];

impl Pair {
    /// Two empty nodes reading schema `max_schema[i]`, link up, not yet connected.
    pub fn new(start: Instant, max_schema: [u32; 2]) -> Pair {
        let node = |i: usize| {
            let id = Identity {
                node: NAMES[i].into(),
                peer: NAMES[1 - i].into(),
                firmware: format!("0.{}.0", max_schema[i]),
                max_schema: max_schema[i],
            };
            Node {
                core: SyncCore::new(id, LocalView::default()),
                history: Vec::new(),
                max_schema: max_schema[i],
                applies: Vec::new(),
                commits: 0,
            }
        };
        Pair {
            nodes: [node(0), node(1)],
            now: start,
            link_up: true,
            connected: false,
            reconnect_at: Some(start),
            wires: [VecDeque::new(), VecDeque::new()],
            parents: BTreeMap::new(),
            trace: Vec::new(),
            delivered: 0,
        }
    }

    fn log(&mut self, s: String) {
        tracing::debug!(target: "sim", "{s}");
        self.trace.push(s);
    }

    /// An operator commit on node `i` with schema version `schema`.
    pub fn commit(&mut self, i: usize, schema: u32) -> GenRef {
        let node = &mut self.nodes[i];
        node.commits += 1;
        let parent = node.current();
        let number = parent.as_ref().map_or(1, |p| p.number + 1);
        let g = GenRef {
            number,
            fingerprint: format!("{:08x}{:08x}{:016x}", number, node.commits, i + 1),
        };
        node.history.push(WireGeneration {
            generation: g.clone(),
            parent: parent.clone(),
            schema_version: schema,
            author: "op".into(),
            node: Some(NAMES[i].into()),
            time_ms: 0,
            comment: String::new(),
            text: g.fingerprint.clone(),
        });
        self.parents.insert(g.clone(), parent.into_iter().collect());
        self.log(format!("{} commits {g}", NAMES[i]));
        let view = self.nodes[i].view();
        let now = self.now;
        let _s = info_span!("sync", peer = NAMES[1 - i]).entered();
        self.nodes[i].core.handle_local(now, view);
        g
    }

    /// The operator on node `i` resolves a divergence, keeping its own configuration
    /// (`use_local`) or taking the peer's. Returns `false` when the core shows no divergence
    /// or (for `use_peer`) no peer head was received yet.
    pub fn resolve(&mut self, i: usize, use_local: bool) -> bool {
        let st = self.nodes[i].core.status();
        if st.relation != Relation::Diverged {
            return false;
        }
        let (Some(local), Some(peer)) = (st.local.clone(), st.peer_current.clone()) else {
            return false;
        };
        let text = if use_local {
            self.nodes[i].history.last().map(|g| g.text.clone())
        } else {
            st.peer_head
                .as_ref()
                .filter(|h| h.generation == peer)
                .map(|h| h.text.clone())
        };
        let Some(text) = text else { return false };
        let number = local.number.max(peer.number) + 1;
        let g = GenRef {
            number,
            fingerprint: text.clone(),
        };
        self.nodes[i].history.push(WireGeneration {
            generation: g.clone(),
            parent: Some(local.clone()),
            schema_version: 1,
            author: "op".into(),
            node: Some(NAMES[i].into()),
            time_ms: 0,
            comment: "resolve".into(),
            text,
        });
        self.parents.insert(g.clone(), vec![local, peer.clone()]);
        self.log(format!(
            "{} resolves (use_local={use_local}) with {g}",
            NAMES[i]
        ));
        let now = self.now;
        let view = self.nodes[i].view();
        let _s = info_span!("sync", peer = NAMES[1 - i]).entered();
        self.nodes[i].core.handle_local(now, view);
        self.nodes[i].core.handle_resolved(now, g, peer);
        true
    }

    /// Cuts the sync link: like TCP, a connection survives a cut and what was sent is
    /// delivered after [`Pair::heal`], unless the connection is closed meanwhile (the cores
    /// close it when they hear nothing for `PEER_DEAD`).
    pub fn cut(&mut self) {
        self.link_up = false;
        self.log("link cut".into());
    }

    /// Restores the sync link.
    pub fn heal(&mut self) {
        self.link_up = true;
        if !self.connected {
            self.reconnect_at = Some(self.now + RECONNECT);
        }
        self.log("link healed".into());
    }

    /// Whether `anc` is `g` or one of its ancestors in the global registry.
    pub fn is_ancestor(&self, anc: &GenRef, g: &GenRef) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![g.clone()];
        while let Some(x) = stack.pop() {
            if &x == anc {
                return true;
            }
            if seen.insert(x.clone())
                && let Some(ps) = self.parents.get(&x)
            {
                stack.extend(ps.iter().cloned());
            }
        }
        false
    }

    fn disconnect(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.wires = [VecDeque::new(), VecDeque::new()];
        let now = self.now;
        for i in 0..2 {
            let _s = info_span!("sync", peer = NAMES[1 - i]).entered();
            self.nodes[i].core.handle_disconnected(now);
        }
        self.reconnect_at = Some(now + RECONNECT);
        self.log("disconnected".into());
    }

    /// Drains both cores' outputs, carrying out their effects.
    fn drain(&mut self) {
        loop {
            let mut any = false;
            for i in 0..2 {
                while let Some(out) = self.nodes[i].core.poll_output() {
                    any = true;
                    self.effect(i, out);
                }
            }
            if !any {
                return;
            }
        }
    }

    fn send(&mut self, i: usize, msg: Message) {
        if !self.connected {
            return;
        }
        // Through the real codec, so the framing is exercised too.
        let frame = proto::encode(&msg).expect("encodable");
        self.wires[i].push_back((self.now + LATENCY, frame));
    }

    fn effect(&mut self, i: usize, out: Output) {
        match out {
            Output::Send(m) => self.send(i, m),
            Output::Push { number, resolves } => {
                let g = self.nodes[i]
                    .history
                    .iter()
                    .rev()
                    .find(|g| g.generation.number == number)
                    .cloned()
                    .expect("the core pushes a generation of its history");
                self.send(
                    i,
                    Message::Push {
                        generation: g,
                        resolves,
                    },
                );
            }
            Output::SendHead => {
                if let Some(g) = self.nodes[i].history.last().cloned() {
                    self.send(i, Message::Head { generation: g });
                }
            }
            Output::Apply {
                generation,
                expected_current,
            } => {
                let due = self.now + APPLY;
                self.nodes[i]
                    .applies
                    .push((due, generation, expected_current));
            }
            Output::Runtime(_) => {}
            Output::Close { reason } => {
                self.log(format!("{} closes: {reason}", NAMES[i]));
                self.disconnect();
            }
        }
    }

    fn finish_apply(&mut self, i: usize, g: WireGeneration, expected: Option<GenRef>) {
        let now = self.now;
        let current = self.nodes[i].current();
        let outcome = if current != expected {
            Outcome::Refused {
                kind: RefusalKind::Busy,
                reason: "local commit raced".into(),
            }
        } else if g.schema_version > self.nodes[i].max_schema {
            Outcome::Refused {
                kind: RefusalKind::Schema,
                reason: "schema".into(),
            }
        } else {
            // The invariant: what we replace must be an ancestor of what we take.
            if let Some(c) = &current {
                assert!(
                    self.is_ancestor(c, &g.generation),
                    "{} would overwrite {c} with {} (not a descendant)\n{}",
                    NAMES[i],
                    g.generation,
                    self.trace.join("\n")
                );
            }
            assert!(
                current
                    .as_ref()
                    .is_none_or(|c| g.generation.number > c.number)
            );
            self.log(format!("{} applies {}", NAMES[i], g.generation));
            self.nodes[i].history.push(WireGeneration {
                parent: current,
                ..g.clone()
            });
            let view = self.nodes[i].view();
            let _s = info_span!("sync", peer = NAMES[1 - i]).entered();
            self.nodes[i].core.handle_local(now, view);
            Outcome::Applied
        };
        let _s = info_span!("sync", peer = NAMES[1 - i]).entered();
        self.nodes[i]
            .core
            .handle_apply_result(now, g.generation, outcome);
    }

    /// Advances virtual time to the next event (at most `max`), and processes it.
    pub fn step(&mut self, max: Duration) {
        self.drain();
        let limit = self.now + max;
        let mut next = limit;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t
                && t < next
            {
                next = t;
            }
        };
        if self.link_up {
            for w in &self.wires {
                consider(w.front().map(|(t, _)| *t));
            }
        }
        for n in &self.nodes {
            consider(n.core.poll_timeout());
            consider(n.applies.iter().map(|a| a.0).min());
        }
        if self.link_up && !self.connected {
            consider(self.reconnect_at);
        }
        self.now = next.max(self.now);
        let now = self.now;
        // Connect.
        if self.link_up && !self.connected && self.reconnect_at.is_some_and(|t| t <= now) {
            self.connected = true;
            self.reconnect_at = None;
            self.log("connected".into());
            for i in 0..2 {
                let _s = info_span!("sync", peer = NAMES[1 - i]).entered();
                self.nodes[i].core.handle_connected(now);
            }
        }
        // Deliver (i is the sending node; 1 - i receives).
        #[allow(clippy::needless_range_loop)] // two nodes indexed both ways
        for i in 0..2 {
            let mut buf = Vec::new();
            while self.link_up && self.wires[i].front().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, frame)) = self.wires[i].pop_front() {
                    buf.extend(frame);
                }
            }
            for msg in proto::decode_frames(&mut buf).expect("well-formed frames") {
                self.delivered += 1;
                let _s = info_span!("sync", peer = NAMES[i]).entered();
                self.nodes[1 - i].core.handle_message(now, msg);
            }
        }
        // Applies.
        for i in 0..2 {
            let due: Vec<_> = {
                let (d, rest) = std::mem::take(&mut self.nodes[i].applies)
                    .into_iter()
                    .partition(|a| a.0 <= now);
                self.nodes[i].applies = rest;
                d
            };
            for (_, g, expected) in due {
                self.finish_apply(i, g, expected);
            }
        }
        // Timers.
        for i in 0..2 {
            if self.nodes[i].core.poll_timeout().is_some_and(|t| t <= now) {
                let _s = info_span!("sync", peer = NAMES[1 - i]).entered();
                self.nodes[i].core.handle_timeout(now);
            }
        }
        self.drain();
    }

    /// Runs for `d` of virtual time (bounded number of steps).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0u32;
        while self.now < end {
            self.step(end - self.now);
            steps += 1;
            assert!(steps < 1_000_000, "livelock: no progress in virtual time");
        }
    }

    /// Whether both nodes have the same current generation.
    pub fn converged(&self) -> bool {
        self.nodes[0].current() == self.nodes[1].current()
    }
}

#[cfg(test)]
mod core_tests;
