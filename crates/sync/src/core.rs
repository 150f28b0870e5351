//! The sync state machine of one node towards its peer, sans IO (quinn-proto style).
//!
//! Owns the decision on every exchange: already in sync, peer behind (push our current
//! generation), we are behind (wait for the peer's push), divergence (raise, push nothing,
//! exchange heads so both sides show the diff), newer schema refused, firmware mismatch; the
//! single in-flight push and its acknowledgement; keepalives and dead-peer detection.
//! Must not read the clock, touch a socket or the store: time and messages are inputs, and the
//! effects (send, load and push a generation, apply a peer generation, close) are outputs.
//!
//! # Contract
//!
//! * Inputs: [`SyncCore::handle_connected`], [`SyncCore::handle_disconnected`],
//!   [`SyncCore::handle_message`], [`SyncCore::handle_local`] (the local history changed:
//!   a commit, or a peer generation applied), [`SyncCore::handle_apply_result`],
//!   [`SyncCore::handle_resolved`], [`SyncCore::handle_timeout`]. Every input takes `now`,
//!   which must not go backwards.
//! * Outputs: drain [`SyncCore::poll_output`] until `None` after every input, then sleep until
//!   [`SyncCore::poll_timeout`].
//! * The one rule: a peer generation is applied only when the local current generation is
//!   an ancestor of it (its parent, or in the peer's history) or the operator chose the peer's
//!   side (`resolves`). Otherwise the answer is `Diverged` and nothing is overwritten.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, info, warn};

use crate::proto::{
    GenRef, Hello, MAX_HISTORY, Message, Outcome, PROTOCOL_VERSION, RefusalKind, WireGeneration,
};

/// A peer that sent nothing for this long is considered gone; the connection is closed.
pub const PEER_DEAD: Duration = Duration::from_millis(2000);
/// Send a [`Message::Ping`] when nothing was sent for this long.
pub const KEEPALIVE: Duration = Duration::from_millis(500);
/// The peer must answer our hello within this.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// A push must be acknowledged within this (the peer applies it first: proxy reload and
/// checks take up to ~13 s in the worst case).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// Superseded peer generations remembered (see `SyncCore::merged`).
pub const MAX_MERGED: usize = 16;
/// After a `Busy` refusal, push again after this.
pub const BUSY_RETRY: Duration = Duration::from_millis(200);

/// One generation of the local history, as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenInfo {
    /// Number and fingerprint.
    pub generation: GenRef,
    /// Schema version of its configuration.
    pub schema_version: u32,
}

/// The local node's kept history, oldest first; the last entry is the current generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalView {
    /// Kept generations, oldest first.
    pub history: Vec<GenInfo>,
}

impl LocalView {
    /// The current generation, `None` before the first commit.
    pub fn current(&self) -> Option<&GenInfo> {
        self.history.last()
    }

    fn contains(&self, g: &GenRef) -> bool {
        self.history.iter().any(|i| &i.generation == g)
    }
}

/// Who this core is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// This node's name.
    pub node: String,
    /// The peer's name (from `cluster.nodes`).
    pub peer: String,
    /// This node's firmware version.
    pub firmware: String,
    /// Highest config schema version this firmware reads.
    pub max_schema: u32,
}

/// An effect the shell must carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this message.
    Send(Message),
    /// Load local generation `number` and send it as [`Message::Push`] with `resolves`.
    Push {
        /// The generation to load.
        number: u64,
        /// The peer generation it supersedes (divergence resolution), if any.
        resolves: Option<GenRef>,
    },
    /// Load the local current generation and send it as [`Message::Head`].
    SendHead,
    /// Validate, commit (keeping its number) and apply this peer generation, provided the
    /// local current generation is still `expected_current`; then call
    /// [`SyncCore::handle_local`] and [`SyncCore::handle_apply_result`].
    Apply {
        /// The generation.
        generation: WireGeneration,
        /// What the local current generation was when the core decided.
        expected_current: Option<GenRef>,
    },
    /// Runtime state received from the peer, for the shell to use.
    Runtime(serde_json::Value),
    /// Close the connection (the shell reconnects with backoff).
    Close {
        /// Why, lowercase.
        reason: String,
    },
}

/// The link to the peer as the core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// No connection.
    Down,
    /// Connected, waiting for the peer's hello.
    Handshake,
    /// Hellos exchanged.
    Up,
}

/// How the two histories relate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Relation {
    /// Not known (link down, or no hello yet).
    Unknown,
    /// Same current generation.
    InSync,
    /// The peer is behind: our generations are queued (or in flight) for it.
    PeerBehind,
    /// We are behind: the peer pushes to us.
    LocalBehind,
    /// Both changed independently: nothing is overwritten until an operator picks a side.
    Diverged,
    /// The peer refused our current generation (schema, invalid, apply failed); we retry
    /// when either side's history changes.
    Blocked {
        /// The refusal kind.
        kind: RefusalKind,
        /// The peer's reason.
        reason: String,
    },
}

/// Counters (exposed in status; never reset).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Pushes sent.
    pub pushes: u64,
    /// Peer generations applied here.
    pub applied: u64,
    /// Pushes refused (either direction).
    pub refused: u64,
    /// Connections closed by the core (timeouts, protocol errors).
    pub closes: u64,
}

/// A snapshot for `show sync` and alarms.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This node.
    pub node: String,
    /// The peer.
    pub peer: String,
    /// Link state.
    pub link: LinkState,
    /// How the histories relate.
    pub relation: Relation,
    /// Our current generation.
    pub local: Option<GenRef>,
    /// The peer's current generation as last heard.
    pub peer_current: Option<GenRef>,
    /// The peer's firmware as last heard.
    pub peer_firmware: Option<String>,
    /// The peer's highest schema as last heard.
    pub peer_max_schema: Option<u32>,
    /// Our firmware.
    pub firmware: String,
    /// The push waiting for its acknowledgement.
    pub in_flight: Option<GenRef>,
    /// Local generations newer than the peer's current (what a returning peer catches up on).
    pub queued: Vec<u64>,
    /// Milliseconds since the last message from the peer (while connected).
    pub last_exchange_ago_ms: Option<u64>,
    /// When diverged: the peer's current generation in full (received as a head).
    #[serde(skip)]
    pub peer_head: Option<WireGeneration>,
    /// The last refusal received for one of our pushes, or sent for one of the peer's.
    pub last_refusal: Option<String>,
    /// Counters.
    pub counters: Counters,
}

#[derive(Debug, Clone)]
struct Resolution {
    generation: GenRef,
    supersedes: GenRef,
}

/// The sync state machine; see the module docs for the contract.
#[derive(Debug)]
pub struct SyncCore {
    id: Identity,
    local: LocalView,
    link: LinkState,
    connected_at: Option<Instant>,
    peer: Option<Hello>,
    in_flight: Option<(GenRef, Instant)>,
    /// A peer push being applied by the shell.
    applying: Option<GenRef>,
    /// Our push the peer refused, and why; not pushed again until a history changes.
    blocked: Option<(GenRef, RefusalKind, String)>,
    busy_until: Option<Instant>,
    resolution: Option<Resolution>,
    /// Peer generations superseded by an operator's resolution: treated as part of our
    /// history (a merge), advertised in our hello, so the peer fast-forwards to our side.
    merged: Vec<GenRef>,
    peer_head: Option<WireGeneration>,
    head_sent_for: Option<(Option<GenRef>, Option<GenRef>)>,
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    last_refusal: Option<String>,
    now: Option<Instant>,
    outputs: VecDeque<Output>,
    counters: Counters,
}

impl SyncCore {
    /// A core for `id` with the local history `local`; the link starts down.
    pub fn new(id: Identity, local: LocalView) -> SyncCore {
        SyncCore {
            id,
            local,
            link: LinkState::Down,
            connected_at: None,
            peer: None,
            in_flight: None,
            applying: None,
            blocked: None,
            busy_until: None,
            resolution: None,
            merged: Vec::new(),
            peer_head: None,
            head_sent_for: None,
            last_rx: None,
            last_tx: None,
            last_refusal: None,
            now: None,
            outputs: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    fn tick(&mut self, now: Instant) {
        debug_assert!(self.now.is_none_or(|t| now >= t), "time went backwards");
        self.now = Some(now);
    }

    fn send(&mut self, now: Instant, msg: Message) {
        self.counters.sent += 1;
        self.last_tx = Some(now);
        self.outputs.push_back(Output::Send(msg));
    }

    fn hello(&self) -> Hello {
        let mut history: Vec<GenRef> = self.merged.clone();
        history.extend(self.local.history.iter().map(|g| g.generation.clone()));
        let skip = history.len().saturating_sub(MAX_HISTORY);
        Hello {
            protocol: PROTOCOL_VERSION,
            node: self.id.node.clone(),
            firmware: self.id.firmware.clone(),
            max_schema: self.id.max_schema,
            current: self.local.current().map(|g| g.generation.clone()),
            history: history.split_off(skip),
        }
    }

    fn close(&mut self, reason: String) {
        warn!(peer = %self.id.peer, %reason, "closing the sync connection");
        self.counters.closes += 1;
        self.outputs.push_back(Output::Close { reason });
    }

    /// A connection to the peer is established (TLS done): say hello.
    pub fn handle_connected(&mut self, now: Instant) {
        self.tick(now);
        self.reset_connection();
        self.link = LinkState::Handshake;
        self.connected_at = Some(now);
        let hello = self.hello();
        self.send(now, Message::Hello(hello));
    }

    /// The connection is gone (closed by either side, or failed).
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.tick(now);
        if self.link != LinkState::Down {
            info!(peer = %self.id.peer, "sync link down");
        }
        self.reset_connection();
        self.link = LinkState::Down;
    }

    fn reset_connection(&mut self) {
        // The peer's view is kept for `status` (last known); what was in flight is lost and
        // re-decided after the next hello. An apply already started still completes; its
        // acknowledgement is dropped and the next hello carries the result.
        self.in_flight = None;
        self.busy_until = None;
        self.head_sent_for = None;
        self.connected_at = None;
        self.last_rx = None;
    }

    /// The local history changed (local commit, rollback, or a peer generation applied).
    pub fn handle_local(&mut self, now: Instant, local: LocalView) {
        self.tick(now);
        if local == self.local {
            return;
        }
        self.local = local;
        // Our side changed: a refusal of an older push no longer blocks.
        self.blocked = None;
        if self.link != LinkState::Down {
            let hello = self.hello();
            self.send(now, Message::Hello(hello));
        }
        self.evaluate(now);
    }

    /// The shell finished an [`Output::Apply`]; call [`SyncCore::handle_local`] first when it
    /// committed something.
    pub fn handle_apply_result(&mut self, now: Instant, generation: GenRef, outcome: Outcome) {
        self.tick(now);
        if self.applying.as_ref() == Some(&generation) {
            self.applying = None;
        }
        match &outcome {
            Outcome::Applied => {
                self.counters.applied += 1;
                info!(peer = %self.id.peer, %generation, "peer generation applied");
            }
            Outcome::Refused { kind, reason } => {
                self.counters.refused += 1;
                self.last_refusal = Some(format!(
                    "refused generation {generation} from {}: {reason}",
                    self.id.peer
                ));
                warn!(peer = %self.id.peer, %generation, ?kind, %reason, "peer generation refused");
            }
        }
        if self.link != LinkState::Down {
            self.send(
                now,
                Message::Ack {
                    generation,
                    outcome,
                },
            );
        }
        self.evaluate(now);
    }

    /// The operator resolved a divergence: `generation` (already committed and applied
    /// locally, numbered above both sides) supersedes the peer's current `supersedes`.
    pub fn handle_resolved(&mut self, now: Instant, generation: GenRef, supersedes: GenRef) {
        self.tick(now);
        info!(peer = %self.id.peer, %generation, %supersedes, "divergence resolved by the operator");
        if !self.merged.contains(&supersedes) {
            if self.merged.len() >= MAX_MERGED {
                self.merged.remove(0);
            }
            self.merged.push(supersedes.clone());
        }
        self.resolution = Some(Resolution {
            generation,
            supersedes,
        });
        if self.link != LinkState::Down {
            let hello = self.hello();
            self.send(now, Message::Hello(hello));
        }
        self.blocked = None;
        self.evaluate(now);
    }

    /// A message from the peer.
    pub fn handle_message(&mut self, now: Instant, msg: Message) {
        self.tick(now);
        self.counters.received += 1;
        self.last_rx = Some(now);
        debug!(peer = %self.id.peer, kind = msg.kind(), "received");
        match msg {
            Message::Hello(h) => {
                if h.protocol != PROTOCOL_VERSION {
                    self.close(format!(
                        "peer {} speaks sync protocol {}, this node speaks {PROTOCOL_VERSION}",
                        h.node, h.protocol
                    ));
                    return;
                }
                if h.node != self.id.peer {
                    self.close(format!(
                        "the peer says it is {}, the configuration names {}",
                        h.node, self.id.peer
                    ));
                    return;
                }
                if h.firmware != self.id.firmware
                    && self.peer.as_ref().is_none_or(|p| p.firmware != h.firmware)
                {
                    warn!(peer = %self.id.peer, local = %self.id.firmware, remote = %h.firmware, "firmware versions differ");
                }
                if self.link != LinkState::Up {
                    info!(peer = %self.id.peer, current = ?h.current, "sync link up");
                }
                let changed = self.peer.as_ref().is_none_or(|p| p.current != h.current);
                if changed {
                    self.blocked = None;
                }
                self.link = LinkState::Up;
                self.peer = Some(h);
                self.evaluate(now);
            }
            Message::Push {
                generation,
                resolves,
            } => self.on_push(now, generation, resolves),
            Message::Ack {
                generation,
                outcome,
            } => self.on_ack(now, generation, outcome),
            Message::Head { generation } => {
                self.peer_head = Some(generation);
            }
            Message::Runtime { state } => self.outputs.push_back(Output::Runtime(state)),
            Message::Ping => {}
        }
    }

    fn on_push(&mut self, now: Instant, generation: WireGeneration, resolves: Option<GenRef>) {
        let current = self.local.current().map(|g| g.generation.clone());
        let gref = generation.generation.clone();
        let refuse = |core: &mut SyncCore, kind: RefusalKind, reason: String| {
            core.counters.refused += 1;
            core.last_refusal = Some(format!(
                "refused generation {gref} from {}: {reason}",
                core.id.peer
            ));
            warn!(peer = %core.id.peer, generation = %gref, ?kind, %reason, "refusing a peer generation");
            core.send(
                now,
                Message::Ack {
                    generation: gref.clone(),
                    outcome: Outcome::Refused { kind, reason },
                },
            );
        };
        if self.applying.is_some() {
            refuse(
                self,
                RefusalKind::Busy,
                "another peer generation is being applied".into(),
            );
            return;
        }
        if current.as_ref() == Some(&gref) {
            // Already here (a repeated push after a reconnect).
            self.send(
                now,
                Message::Ack {
                    generation: gref,
                    outcome: Outcome::Applied,
                },
            );
            return;
        }
        let in_peer_history =
            |g: &GenRef| self.peer.as_ref().is_some_and(|p| p.history.contains(g));
        let fast_forward = match &current {
            None => true,
            Some(c) => {
                generation.parent.as_ref() == Some(c)
                    || (in_peer_history(c) && gref.number > c.number)
            }
        };
        let resolution = resolves.is_some() && resolves == current;
        if !fast_forward && !resolution {
            refuse(
                self,
                RefusalKind::Diverged,
                format!(
                    "this node's current generation {} is not in {}'s history; both changed the configuration independently",
                    current.as_ref().map_or("none".into(), ToString::to_string),
                    self.id.peer
                ),
            );
            self.evaluate(now);
            return;
        }
        if current.as_ref().is_some_and(|c| gref.number <= c.number) {
            refuse(
                self,
                RefusalKind::Diverged,
                format!(
                    "generation number {} is not above this node's current {}",
                    gref.number,
                    current.as_ref().map_or(0, |c| c.number)
                ),
            );
            return;
        }
        if generation.schema_version > self.id.max_schema {
            refuse(
                self,
                RefusalKind::Schema,
                schema_message(generation.schema_version, &self.id),
            );
            return;
        }
        self.applying = Some(gref);
        self.outputs.push_back(Output::Apply {
            generation,
            expected_current: current,
        });
    }

    fn on_ack(&mut self, now: Instant, generation: GenRef, outcome: Outcome) {
        if self.in_flight.as_ref().map(|(g, _)| g) != Some(&generation) {
            debug!(peer = %self.id.peer, %generation, "acknowledgement for nothing in flight");
            return;
        }
        self.in_flight = None;
        match outcome {
            Outcome::Applied => {
                info!(peer = %self.id.peer, %generation, "peer applied our generation");
                if let Some(p) = &mut self.peer {
                    p.current = Some(generation.clone());
                    if !p.history.contains(&generation) {
                        p.history.push(generation.clone());
                    }
                }
                if self
                    .resolution
                    .as_ref()
                    .is_some_and(|r| r.generation == generation)
                {
                    self.resolution = None;
                }
            }
            Outcome::Refused {
                kind: RefusalKind::Busy,
                ..
            } => {
                self.busy_until = Some(now + BUSY_RETRY);
            }
            Outcome::Refused { kind, reason } => {
                self.counters.refused += 1;
                self.last_refusal = Some(format!(
                    "{} refused generation {generation}: {reason}",
                    self.id.peer
                ));
                warn!(peer = %self.id.peer, %generation, ?kind, %reason, "peer refused our generation");
                self.blocked = Some((generation, kind, reason));
            }
        }
        self.evaluate(now);
    }

    /// How the histories relate, from the latest views.
    pub fn relation(&self) -> Relation {
        if self.link != LinkState::Up {
            return Relation::Unknown;
        }
        let Some(peer) = &self.peer else {
            return Relation::Unknown;
        };
        let local = self.local.current().map(|g| &g.generation);
        let remote = peer.current.as_ref();
        if local == remote {
            return Relation::InSync;
        }
        let Some(local) = local else {
            return Relation::LocalBehind;
        };
        if peer.history.contains(local) && remote.is_some_and(|r| r.number > local.number) {
            return Relation::LocalBehind;
        }
        let peer_behind = match remote {
            None => true,
            Some(r) => {
                (self.local.contains(r) || self.merged.contains(r)) && local.number > r.number
            }
        };
        if peer_behind {
            if let Some((g, kind, reason)) = &self.blocked
                && g == local
            {
                return Relation::Blocked {
                    kind: *kind,
                    reason: reason.clone(),
                };
            }
            return Relation::PeerBehind;
        }
        Relation::Diverged
    }

    fn evaluate(&mut self, now: Instant) {
        let relation = self.relation();
        if relation != Relation::Diverged {
            self.peer_head = None;
        }
        match relation {
            Relation::PeerBehind => {
                if self.in_flight.is_some() || self.busy_until.is_some_and(|t| now < t) {
                    return;
                }
                self.busy_until = None;
                let Some(current) = self.local.current().cloned() else {
                    return;
                };
                let peer_schema = self.peer.as_ref().map_or(u32::MAX, |p| p.max_schema);
                if current.schema_version > peer_schema {
                    // The peer would refuse it; say so without sending.
                    let peer_id = Identity {
                        node: self.id.peer.clone(),
                        peer: self.id.node.clone(),
                        firmware: self
                            .peer
                            .as_ref()
                            .map_or_else(String::new, |p| p.firmware.clone()),
                        max_schema: peer_schema,
                    };
                    let reason = schema_message(current.schema_version, &peer_id);
                    if self.blocked.is_none() {
                        warn!(peer = %self.id.peer, %reason, "not pushing: the peer's firmware is older");
                    }
                    self.blocked = Some((current.generation, RefusalKind::Schema, reason));
                    return;
                }
                let resolves = self
                    .resolution
                    .as_ref()
                    .filter(|r| r.generation == current.generation)
                    .map(|r| r.supersedes.clone());
                self.counters.pushes += 1;
                info!(peer = %self.id.peer, generation = %current.generation, resolving = resolves.is_some(), "pushing generation to the peer");
                self.in_flight = Some((current.generation.clone(), now));
                self.last_tx = Some(now);
                self.counters.sent += 1;
                self.outputs.push_back(Output::Push {
                    number: current.generation.number,
                    resolves,
                });
            }
            Relation::Diverged => {
                let key = (
                    self.local.current().map(|g| g.generation.clone()),
                    self.peer.as_ref().and_then(|p| p.current.clone()),
                );
                if self.head_sent_for.as_ref() != Some(&key) {
                    warn!(peer = %self.id.peer, local = ?key.0, remote = ?key.1, "configuration diverged from the peer; nothing is overwritten");
                    self.head_sent_for = Some(key);
                    if self.local.current().is_some() {
                        self.last_tx = Some(now);
                        self.counters.sent += 1;
                        self.outputs.push_back(Output::SendHead);
                    }
                }
            }
            _ => {}
        }
    }

    /// Timers: hello, acknowledgement, keepalive, dead peer, busy retry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.link == LinkState::Down {
            return;
        }
        if self.link == LinkState::Handshake
            && self.connected_at.is_some_and(|t| now >= t + HELLO_TIMEOUT)
        {
            self.close(format!(
                "no hello from {} within {HELLO_TIMEOUT:?}",
                self.id.peer
            ));
            return;
        }
        let alive_since = self.last_rx.or(self.connected_at);
        if alive_since.is_some_and(|t| now >= t + PEER_DEAD) {
            self.close(format!(
                "nothing heard from {} for {PEER_DEAD:?}",
                self.id.peer
            ));
            return;
        }
        if let Some((g, sent)) = &self.in_flight
            && now >= *sent + ACK_TIMEOUT
        {
            let g = g.clone();
            self.close(format!(
                "{} did not acknowledge generation {g} within {ACK_TIMEOUT:?}",
                self.id.peer
            ));
            return;
        }
        if self.busy_until.is_some_and(|t| now >= t) {
            self.busy_until = None;
            self.evaluate(now);
        }
        if self.last_tx.is_none_or(|t| now >= t + KEEPALIVE) {
            self.send(now, Message::Ping);
        }
    }

    /// When [`SyncCore::handle_timeout`] wants to run next; `None` while the link is down.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.link == LinkState::Down {
            return None;
        }
        let mut t = self
            .last_tx
            // The link left `Down` in an input, which recorded `now`: no clock read here.
            .map_or(self.now, |t| Some(t + KEEPALIVE))?;
        let mut min = |c: Option<Instant>| {
            if let Some(c) = c
                && c < t
            {
                t = c;
            }
        };
        min(self.last_rx.or(self.connected_at).map(|x| x + PEER_DEAD));
        if self.link == LinkState::Handshake {
            min(self.connected_at.map(|x| x + HELLO_TIMEOUT));
        }
        min(self.in_flight.as_ref().map(|(_, s)| *s + ACK_TIMEOUT));
        min(self.busy_until);
        Some(t)
    }

    /// The next effect to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// A snapshot for status and alarms.
    pub fn status(&self) -> Status {
        let local = self.local.current().map(|g| g.generation.clone());
        let peer_current = self.peer.as_ref().and_then(|p| p.current.clone());
        let queued = match (&local, &peer_current) {
            (Some(l), Some(p)) if self.local.contains(p) => self
                .local
                .history
                .iter()
                .filter(|g| g.generation.number > p.number && g.generation.number <= l.number)
                .map(|g| g.generation.number)
                .collect(),
            (Some(_), None) => self
                .local
                .history
                .iter()
                .map(|g| g.generation.number)
                .collect(),
            _ if self.peer.is_none() => self
                .local
                .current()
                .map(|g| g.generation.number)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        Status {
            node: self.id.node.clone(),
            peer: self.id.peer.clone(),
            link: self.link,
            relation: self.relation(),
            local,
            peer_current,
            peer_firmware: self.peer.as_ref().map(|p| p.firmware.clone()),
            peer_max_schema: self.peer.as_ref().map(|p| p.max_schema),
            firmware: self.id.firmware.clone(),
            in_flight: self.in_flight.as_ref().map(|(g, _)| g.clone()),
            queued,
            last_exchange_ago_ms: match (self.now, self.last_rx) {
                (Some(n), Some(r)) => Some(
                    u64::try_from(n.saturating_duration_since(r).as_millis()).unwrap_or(u64::MAX),
                ),
                _ => None,
            },
            peer_head: self.peer_head.clone(),
            last_refusal: self.last_refusal.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Peer generations superseded by resolutions (for the shell to persist).
    pub fn merged(&self) -> &[GenRef] {
        &self.merged
    }

    /// Restores the superseded peer generations persisted by the shell.
    pub fn set_merged(&mut self, merged: Vec<GenRef>) {
        let skip = merged.len().saturating_sub(MAX_MERGED);
        self.merged = merged[skip..].to_vec();
    }

    /// Whether the core is applying a peer generation right now.
    pub fn is_applying(&self) -> bool {
        self.applying.is_some()
    }
}

/// "config schema v2 needs newer firmware; lb2 runs firmware 0.1.0, which reads schema v1".
pub fn schema_message(schema: u32, receiver: &Identity) -> String {
    format!(
        "config schema v{schema} needs newer firmware: {} runs firmware {}, which reads schema up to v{}; upgrade {} first",
        receiver.node, receiver.firmware, receiver.max_schema, receiver.node
    )
}
