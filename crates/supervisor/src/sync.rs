//! Config sync inside the supervisor: the [`Host`] the `tandem-sync` shell runs against, the
//! peer's side of a transaction (`peer_apply`), what a commit reports about the peer, the
//! `show sync` / `pair` / `sync resolve` commands, sync alarms, and runtime-state export
//! (source-persistence tables and the per-source rate counters of `protect`) from the active
//! node and import on the passive one.
//!
//! Owns the glue only: every peer generation goes through the same store commit and apply as
//! a local commit, under the same transaction lock. Must not speak the sync protocol (the
//! `tandem-sync` core decides what to push and when) nor open network sockets itself.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use tandem_config::SUPPORTED_VERSION;
use tandem_store::{CommitInfo, Fs as _, Generation, Store, StoreError};
use tandem_sync::shell::{self, Command, Endpoints, Host, PeerResult, ShellStatus, SyncHandle};
use tandem_sync::{
    GenInfo, GenRef, LinkState, LocalView, Outcome, RefusalKind, Relation, WireGeneration,
};
use tracing::{info, warn};

use tandem_control::supervisor as wire;

use crate::core::{Core, Failure, Reply, ask};
use crate::reply::{data, wire_changes};
use crate::state::Severity;

/// How long a commit waits for the peer to run the new generation before answering "queued".
pub const PEER_ACK_WAIT: Duration = Duration::from_secs(10);
/// How often sync alarms are re-evaluated.
pub const ALARM_POLL: Duration = Duration::from_millis(500);
/// Most persistence entries exported per backend per round (a bound on frame size).
pub const MAX_EXPORT_ENTRIES: usize = 20_000;
/// Most rate-counter sources exported per frontend per round (a bound on frame size).
pub const MAX_EXPORT_RATES: usize = 10_000;
/// Entries per `import persistence|rates` request (the runtime API takes lines of at most
/// 64 KiB; an entry is at most ~160 bytes).
pub const IMPORT_CHUNK: usize = 256;

fn wire_ref(g: &GenRef) -> wire::GenerationRef {
    wire::GenerationRef {
        number: Some(g.number),
        fingerprint: Some(g.fingerprint.clone()),
    }
}

fn gref(g: &Generation) -> GenRef {
    GenRef {
        number: g.meta.number,
        fingerprint: g.meta.fingerprint.clone(),
    }
}

fn wire(g: &Generation) -> WireGeneration {
    WireGeneration {
        generation: gref(g),
        parent: g.meta.parent.zip(g.meta.parent_fingerprint.clone()).map(
            |(number, fingerprint)| GenRef {
                number,
                fingerprint,
            },
        ),
        schema_version: g.meta.schema_version,
        author: g.meta.author.clone(),
        node: g.meta.node.clone(),
        time_ms: g.meta.time_ms,
        comment: g.meta.comment.clone(),
        text: g.text.clone(),
    }
}

/// The supervisor as the sync shell's host.
pub struct SyncHost {
    core: Weak<Core>,
}

/// Where the peer is before any configuration names this node: recorded by `pair` with the
/// peer's name and sync address (`DATA/sync/bootstrap.json`), used only while this node has no
/// configuration at all, so a freshly set-up node can receive its first generation from the
/// peer instead of needing the same first configuration committed on both nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bootstrap {
    /// The peer's name in `cluster.nodes`.
    pub peer: String,
    /// This node's sync address and port (listen).
    pub local: SocketAddr,
    /// The peer's sync address and port (dial).
    pub remote: SocketAddr,
}

/// The bootstrap file under the data directory.
pub const BOOTSTRAP_FILE: &str = "sync/bootstrap.json";

/// `IP` or `IP:PORT` (IPv6 as `[IP]:PORT`); the port defaults to config sync's 7400.
pub fn parse_sync_address(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    t.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, tandem_config::raw::DEFAULT_SYNC_PORT))
        .map_err(|_| format!("invalid sync address `{t}`: expected IP or IP:PORT"))
}

impl Bootstrap {
    pub(crate) fn load(dir: &std::path::Path) -> Option<Bootstrap> {
        let bytes = tandem_store::RealFs.read(&dir.join(BOOTSTRAP_FILE)).ok()?;
        serde_json::from_slice(&bytes)
            .inspect_err(|e| warn!(cause = %e, "ignoring an unreadable sync bootstrap file"))
            .ok()
    }

    fn save(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let path = dir.join(BOOTSTRAP_FILE);
        if let Some(parent) = path.parent() {
            tandem_store::RealFs.create_dir_all(parent)?;
        }
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        tandem_store::RealFs.write_atomic(&path, &bytes)
    }
}

impl Host for SyncHost {
    fn endpoints(&self) -> Option<Endpoints> {
        let core = self.core.upgrade()?;
        let node = core.opts.node.clone()?;
        let config = match core.store(Store::load_current) {
            Ok(g) => g.config,
            Err(StoreError::Empty(_)) => {
                // No configuration yet: the peer recorded by `pair`, if any.
                let b = Bootstrap::load(&core.opts.data_dir)?;
                return Some(Endpoints {
                    node,
                    peer: b.peer,
                    local: b.local,
                    remote: b.remote,
                });
            }
            Err(_) => return None,
        };
        let cluster = config.cluster.as_ref()?;
        if cluster.nodes.len() != 2 {
            return None;
        }
        let me = cluster.nodes.iter().find(|(k, _)| k.to_string() == node)?;
        let peer = cluster.nodes.iter().find(|(k, _)| k.to_string() != node)?;
        let port = config.sync.port.get();
        Some(Endpoints {
            node,
            peer: peer.0.to_string(),
            local: (me.1.sync_address, port).into(),
            remote: (peer.1.sync_address, port).into(),
        })
    }

    fn local_view(&self) -> LocalView {
        let Some(core) = self.core.upgrade() else {
            return LocalView::default();
        };
        // A peer generation being applied is not announced before it runs: the peer's
        // commit reports "committed on lb1 and lb2" only once this node checked it.
        let applying = *crate::core::lock(&core.applying_peer);
        let mut history: Vec<GenInfo> = core
            .store(Store::history)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| Some(m.number) != applying)
            .map(|m| GenInfo {
                generation: GenRef {
                    number: m.number,
                    fingerprint: m.fingerprint,
                },
                schema_version: m.schema_version,
            })
            .collect();
        history.reverse();
        LocalView { history }
    }

    fn load(&self, number: u64) -> Option<WireGeneration> {
        let core = self.core.upgrade()?;
        core.store(|s| s.generation(number)).ok().map(|g| wire(&g))
    }

    async fn apply(&self, generation: WireGeneration, expected: Option<GenRef>) -> Outcome {
        match self.core.upgrade() {
            Some(core) => core.peer_apply(generation, expected).await,
            None => Outcome::Refused {
                kind: RefusalKind::Busy,
                reason: "the supervisor is stopping".into(),
            },
        }
    }

    async fn runtime_export(&self) -> Option<Value> {
        let core = self.core.upgrade()?;
        core.runtime_export().await
    }

    async fn runtime_import(&self, state: Value) {
        if let Some(core) = self.core.upgrade() {
            core.runtime_import(state).await;
        }
    }
}

/// Starts config sync for `core`: loads (or makes) the node identity in `DATA/sync`, runs the
/// shell, and watches its status for alarms. A failure raises alarm `sync` and leaves the
/// node running alone.
pub fn start(core: &Arc<Core>) {
    let dir = core.opts.data_dir.join("sync");
    let identity = match tandem_sync::tls::Identity::load_or_create(&dir) {
        Ok(i) => i,
        Err(e) => {
            core.shared.raise(
                "sync",
                Severity::Critical,
                format!("config sync cannot start: {e}"),
            );
            return;
        }
    };
    let host = Arc::new(SyncHost {
        core: Arc::downgrade(core),
    });
    let (handle, _task) = shell::spawn(
        host,
        identity,
        env!("CARGO_PKG_VERSION").into(),
        SUPPORTED_VERSION,
    );
    let _ = core.sync.set(handle.clone());
    let weak = Arc::downgrade(core);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ALARM_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(core) = weak.upgrade() else { return };
            let st = handle.snapshot();
            core.sync_alarms(&st);
            // The split-brain guard never holds without a live peer (`splitbrain.rs`).
            let link_up = st.core.as_ref().is_some_and(|c| c.link == LinkState::Up);
            if !link_up {
                core.release_all("the sync link is down: the peer cannot be confirmed alive")
                    .await;
            }
        }
    });
}

impl Core {
    /// Whether the persistence tables are due in this runtime export (once a second).
    pub(crate) fn persistence_due(&self) -> bool {
        let mut last = crate::core::lock(&self.last_persistence);
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_millis(950));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    fn sync_handle(&self) -> Option<&SyncHandle> {
        self.sync.get()
    }

    /// The peer as `status` shows it.
    pub(crate) fn peer_summary(&self) -> Value {
        let Some(st) = self.sync_handle().map(SyncHandle::snapshot) else {
            return json!({"state": "unknown", "detail": "config sync is not running"});
        };
        match &st.core {
            None => json!({"state": st.state, "detail": st.detail}),
            Some(c) => json!({
                "name": c.peer,
                "state": st.state,
                "link": c.link,
                "relation": c.relation,
                "generation": c.peer_current,
                "firmware": c.peer_firmware,
                "last_exchange_ms": st.last_exchange_ms,
                "queued": c.queued,
            }),
        }
    }

    /// After a local commit: push it and wait (bounded) for the peer; fills `nodes`, `peer`
    /// and `message` in the commit reply.
    pub(crate) async fn sync_after_commit(&self, reply: &mut wire::CommitReply) {
        let me = self.node_label();
        let (Some(number), Some(fp)) = (reply.generation, reply.fingerprint.as_deref()) else {
            return;
        };
        let g = GenRef {
            number,
            fingerprint: fp.to_owned(),
        };
        let Some(handle) = self.sync_handle() else {
            reply.peer = Some("config sync is not running; the peer was not updated".to_owned());
            reply.message = Some(format!("committed on {me} (generation {number})"));
            return;
        };
        handle.notify(Command::LocalChanged);
        let peer = handle
            .snapshot()
            .core
            .map_or_else(|| "the peer".to_owned(), |c| c.peer);
        let result = handle.wait_peer(&g, PEER_ACK_WAIT).await;
        let (message, peer_text) = match &result {
            PeerResult::Applied => {
                reply.nodes = Some(vec![me.clone(), peer.clone()]);
                (format!("committed on {me} and {peer} (generation {number})"), format!("{peer} runs generation {number}"))
            }
            PeerResult::Unreachable(why) => (
                format!("committed on {me}; peer {peer} unreachable, change queued (generation {number})"),
                format!("unreachable ({why}); {peer} catches up when it returns"),
            ),
            PeerResult::Pending => (
                format!("committed on {me}; peer {peer} has not confirmed yet, change queued (generation {number})"),
                format!("no answer within {}s; `show sync` follows it", PEER_ACK_WAIT.as_secs()),
            ),
            PeerResult::Refused(why) => (
                format!("committed on {me}; peer {peer} refused it (generation {number}): {why}"),
                format!("refused: {why}"),
            ),
            PeerResult::Diverged => (
                format!("committed on {me}; NOT synced: the configuration diverged from {peer} (generation {number})"),
                "diverged: `show sync` shows the diff, `sync resolve use-local|use-peer` picks a side".to_owned(),
            ),
            PeerResult::NotSynced(why) => (format!("committed on {me} (generation {number})"), format!("not synced: {why}")),
        };
        reply.message = Some(message);
        reply.peer = Some(peer_text);
    }

    /// The peer's side of a transaction: validate, commit keeping the number, apply, check;
    /// refused unless the local current generation is still `expected`.
    pub(crate) async fn peer_apply(&self, g: WireGeneration, expected: Option<GenRef>) -> Outcome {
        let refused = |kind, reason: String| Outcome::Refused { kind, reason };
        let _guard = self.txn.lock().await;
        let prev = match self.store(Store::load_current) {
            Ok(p) => Some(p),
            Err(StoreError::Empty(_)) => None,
            Err(e) => {
                return refused(
                    RefusalKind::ApplyFailed,
                    format!("cannot read the current generation: {e}"),
                );
            }
        };
        if prev.as_ref().map(gref) != expected {
            return refused(
                RefusalKind::Busy,
                "a local commit happened meanwhile".into(),
            );
        }
        let from = g.node.clone().unwrap_or_else(|| "the peer".into());
        if g.schema_version > SUPPORTED_VERSION {
            let reason = format!(
                "config schema v{} needs newer firmware: {} runs firmware {}, which reads schema up to v{SUPPORTED_VERSION}",
                g.schema_version,
                self.node_label(),
                env!("CARGO_PKG_VERSION")
            );
            self.shared.raise(
                "sync-schema",
                Severity::Warning,
                format!(
                    "refused generation {} from {from}: {reason}",
                    g.generation.number
                ),
            );
            return refused(RefusalKind::Schema, reason);
        }
        let loaded = match self.store(|s| s.validate(&g.text)) {
            Ok(l) => l,
            Err(StoreError::Invalid(r)) => {
                let first = r
                    .diagnostics
                    .iter()
                    .find(|d| d.severity == tandem_config::Severity::Error)
                    .map(|d| format!("line {} column {}: {}", d.line, d.column, d.message))
                    .unwrap_or_default();
                return refused(
                    RefusalKind::Invalid,
                    format!("invalid on {}: {first}", self.node_label()),
                );
            }
            Err(e) => return refused(RefusalKind::Invalid, e.to_string()),
        };
        let fp = tandem_store::fingerprint_text(&loaded.config);
        if fp != g.generation.fingerprint {
            return refused(
                RefusalKind::Invalid,
                format!(
                    "fingerprint {fp} computed on {} differs from {}; firmware versions disagree on the configuration",
                    self.node_label(),
                    g.generation.fingerprint
                ),
            );
        }
        let info = CommitInfo {
            author: g.author.clone(),
            node: g.node.clone(),
            time_ms: g.time_ms,
            comment: g.comment.clone(),
        };
        let next = match self.store(|s| s.commit_numbered(&g.text, &info, g.generation.number)) {
            Ok(n) => n,
            Err(e) => {
                return refused(
                    RefusalKind::ApplyFailed,
                    format!("cannot commit on {}: {e}", self.node_label()),
                );
            }
        };
        self.event(&format!(
            "generation {} from {from} ({}) committed by config sync",
            next.meta.number, g.author
        ));
        *crate::core::lock(&self.applying_peer) = Some(next.meta.number);
        let applied = self.apply(&next, prev.as_ref()).await;
        *crate::core::lock(&self.applying_peer) = None;
        if let Err(cause) = applied {
            let f = self
                .restore_after_failure(&next, prev.as_ref(), &cause)
                .await;
            return refused(RefusalKind::ApplyFailed, f.error);
        }
        self.shared.clear("apply-failed");
        self.shared.clear("unconfigured");
        self.shared.clear("sync-schema");
        Outcome::Applied
    }

    /// Raises and clears the sync alarms from the shell's status.
    pub(crate) fn sync_alarms(&self, st: &ShellStatus) {
        let s = &self.shared;
        if st.state == "unpaired" {
            s.raise(
                "sync-unpaired",
                Severity::Warning,
                "config sync is not paired: run `pair` on both nodes and compare the fingerprints"
                    .into(),
            );
        } else {
            s.clear("sync-unpaired");
        }
        let Some(c) = &st.core else {
            for id in ["divergence", "sync-down", "sync-firmware"] {
                s.clear(id);
            }
            return;
        };
        match &c.relation {
            Relation::Diverged => s.raise(
                "divergence",
                Severity::Critical,
                format!(
                    "configuration diverged from {}: {} runs generation {}, {} runs generation {}; nothing was overwritten; `show sync` shows the diff, `sync resolve use-local|use-peer` picks a side",
                    c.peer,
                    c.node,
                    c.local.as_ref().map_or("none".into(), ToString::to_string),
                    c.peer,
                    c.peer_current.as_ref().map_or("none".into(), ToString::to_string),
                ),
            ),
            Relation::Unknown => {}
            _ => s.clear("divergence"),
        }
        if let Relation::Blocked {
            kind: RefusalKind::Schema,
            reason,
        } = &c.relation
        {
            s.raise(
                "sync-schema",
                Severity::Warning,
                format!(
                    "{} cannot take generation {}: {reason}",
                    c.peer,
                    c.local.as_ref().map_or(0, |g| g.number)
                ),
            );
        }
        if c.link == LinkState::Down && st.state != "unpaired" {
            s.raise(
                "sync-down",
                Severity::Warning,
                format!(
                    "peer {} unreachable on the sync link ({}); commits are queued: {:?}",
                    c.peer,
                    st.last_error.clone().unwrap_or_default(),
                    c.queued
                ),
            );
        } else {
            s.clear("sync-down");
        }
        match &c.peer_firmware {
            Some(f) if *f != c.firmware => s.raise(
                "sync-firmware",
                Severity::Info,
                format!(
                    "firmware differs: {} runs {}, {} runs {f}",
                    c.node, c.firmware, c.peer
                ),
            ),
            _ => s.clear("sync-firmware"),
        }
    }

    /// `show sync`: the shell status, and the diff to the peer's configuration when diverged.
    pub fn sync_status(&self) -> Reply {
        let Some(h) = self.sync_handle() else {
            return Err(Failure::new(
                "config sync is not running",
                "`status` and `logs supervisor` say why",
            ));
        };
        let st = h.snapshot();
        let mut divergence = None;
        if let Some(c) = &st.core
            && let Some(head) = &c.peer_head
        {
            let local = self.store(Store::load_current).ok();
            let peer_cfg = self.store(|s| s.validate(&head.text)).ok();
            if let (Some(l), Some(p)) = (local, peer_cfg) {
                let changes = tandem_config::diff(&l.config, &p.config);
                divergence = Some(wire::Divergence {
                    local: Some(wire_ref(&gref(&l))),
                    peer: Some(wire_ref(&head.generation)),
                    peer_author: Some(head.author.clone()),
                    peer_time_ms: Some(head.time_ms),
                    changes: wire_changes(&changes),
                    text: Some(tandem_config::diff::render(&changes)),
                });
            }
        }
        data(wire::SyncStatus {
            sync: json!(st),
            divergence,
        })
    }

    /// `pair`: shows our fingerprint; with `peer_fingerprint`, pins the peer's certificate;
    /// with `bootstrap`, records where the peer is for a node without configuration (see
    /// [`Bootstrap`]).
    pub fn sync_pair(&self, peer_fingerprint: Option<&str>, bootstrap: Option<Bootstrap>) -> Reply {
        let Some(h) = self.sync_handle() else {
            return Err(Failure::new(
                "config sync is not running",
                "`status` and `logs supervisor` say why",
            ));
        };
        if let Some(b) = &bootstrap {
            if self.opts.node.is_none() {
                return Err(Failure::new(
                    "this node has no name: the supervisor runs without --node",
                    "set the node name with `setup` (it starts the supervisor with --node)",
                ));
            }
            if self.opts.node.as_deref() == Some(b.peer.as_str()) {
                return Err(Failure::new(
                    format!("the peer cannot be this node ({})", b.peer),
                    "give the other node's name, e.g. `pair --peer-name lb1 ...` on lb2",
                ));
            }
            b.save(&self.opts.data_dir).map_err(|e| {
                Failure::new(
                    format!("cannot record the peer's address: {e}"),
                    "check the data directory (disk full or read-only?)",
                )
            })?;
            self.event(&format!(
                "pairing: until a configuration names this node, config sync listens on {} and reaches {} at {}",
                b.local, b.peer, b.remote
            ));
            // A node without configuration opens its sync port to the recorded peer now.
            self.refresh_firewall();
        }
        let id = &h.identity;
        if let Some(fp) = peer_fingerprint {
            let pinned = id.pin(fp).map_err(|e| {
                Failure::new(
                    e.to_string(),
                    "copy the fingerprint `pair` shows on the peer's console",
                )
            })?;
            self.event(&format!("paired: pinned the peer certificate {pinned}"));
        }
        let pinned = id.pinned().ok().flatten();
        data(wire::PairReply {
            fingerprint: Some(tandem_sync::tls::display_fingerprint(&id.fingerprint)),
            peer_fingerprint: pinned.as_deref().map(tandem_sync::tls::display_fingerprint),
            paired: Some(pinned.is_some()),
            bootstrap: Bootstrap::load(&self.opts.data_dir).map(|b| wire::Bootstrap {
                peer: Some(b.peer),
                local: Some(b.local.to_string()),
                remote: Some(b.remote.to_string()),
            }),
        })
    }

    /// `sync resolve use-local|use-peer`: ends a divergence by committing the chosen side as a
    /// new generation above both, here, and pushing it to the peer (which takes it although
    /// its own generation is not an ancestor: the operator chose).
    pub async fn sync_resolve(&self, side: &str, author: &str) -> Reply {
        let Some(h) = self.sync_handle() else {
            return Err(Failure::new(
                "config sync is not running",
                "`status` and `logs supervisor` say why",
            ));
        };
        let st = h.snapshot();
        let Some(c) = st.core.filter(|c| c.relation == Relation::Diverged) else {
            return Err(Failure::new(
                "there is no divergence to resolve",
                "`show sync` shows the sync state",
            ));
        };
        let (Some(local), Some(peer)) = (c.local.clone(), c.peer_current.clone()) else {
            return Err(Failure::new(
                "there is no divergence to resolve",
                "`show sync` shows the sync state",
            ));
        };
        let _guard = self.txn.lock().await;
        let prev = self
            .store(Store::load_current)
            .map_err(|e| Failure::new(e.to_string(), "check the data directory"))?;
        if gref(&prev) != local {
            return Err(Failure::new(
                "the local configuration changed meanwhile",
                "run `show sync` again",
            ));
        }
        let (text, comment) = match side {
            "use-local" => (
                prev.text.clone(),
                format!(
                    "divergence resolved: keep {}'s configuration over {}'s generation {}",
                    self.node_label(),
                    c.peer,
                    peer.number
                ),
            ),
            "use-peer" => match c.peer_head.as_ref().filter(|h| h.generation == peer) {
                Some(head) => (
                    head.text.clone(),
                    format!(
                        "divergence resolved: take {}'s generation {}",
                        c.peer, peer.number
                    ),
                ),
                None => {
                    return Err(Failure::new(
                        format!("{}'s configuration has not been received yet", c.peer),
                        "wait a second and try again; `show sync` shows the diff once it is here",
                    ));
                }
            },
            other => {
                return Err(Failure::new(
                    format!("unknown side `{other}`"),
                    "use `sync resolve use-local` or `sync resolve use-peer`",
                ));
            }
        };
        let number = local.number.max(peer.number) + 1;
        let next = self
            .store(|s| s.commit_numbered(&text, &self.info(author, &comment), number))
            .map_err(|e| Failure::new(e.to_string(), "`show sync` shows both sides"))?;
        if let Err(cause) = self.apply(&next, Some(&prev)).await {
            return Err(self.restore_after_failure(&next, Some(&prev), &cause).await);
        }
        self.event(&comment);
        h.notify(Command::Resolved {
            generation: gref(&next),
            supersedes: peer,
        });
        info!(generation = next.meta.number, side, "divergence resolved");
        data(wire::Resolved {
            resolved: Some(true),
            generation: Some(next.meta.number),
            comment: Some(comment),
        })
    }

    /// Runtime state for the peer: this node's VRRP roles and split-brain holds, and, when this
    /// node is master of any instance, its source-persistence tables and per-source rate
    /// counters (once a second).
    pub(crate) async fn runtime_export(&self) -> Option<Value> {
        let vrrp = self.shared.vrrp();
        let active = vrrp
            .instances
            .iter()
            .any(|i| i.get("state").and_then(Value::as_str) == Some("master"));
        let roles: Vec<Value> = vrrp
            .instances
            .iter()
            .map(|i| json!({"instance": i.get("name"), "state": i.get("state")}))
            .collect();
        let mut persistence = Vec::new();
        let due = active && self.persistence_due();
        if due && let Ok(g) = self.store(Store::load_current) {
            for b in &g.config.backends {
                if !matches!(
                    b.persistence,
                    Some(tandem_config::Persistence::Source { .. })
                ) {
                    continue;
                }
                let name = b.name.to_string();
                match ask(
                    &self.runtime_socket(&g.config),
                    &serde_json::to_value(tandem_control::runtime::Request::ShowPersistence {
                        backend: Some(name.clone()),
                    })
                    .unwrap_or_default(),
                )
                .await
                {
                    Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => {
                        let entries: Vec<Value> = newest_entries(&v, MAX_EXPORT_ENTRIES)
                            .into_iter()
                            .map(|e| json!({"client": e.get("client"), "server_id": e.get("server_id"), "expires_in_ms": e.get("expires_in_ms")}))
                            .collect();
                        persistence.push(json!({"backend": name, "entries": entries}));
                    }
                    Ok(v) => warn!(backend = %name, reply = %v, "show persistence refused"),
                    Err(e) => warn!(backend = %name, cause = %e, "cannot export persistence"),
                }
            }
        }
        let rates = if active && due {
            self.export_rates().await
        } else {
            Vec::new()
        };
        Some(
            json!({"node": self.opts.node, "active": active, "vrrp": roles, "holding": self.holding(), "persistence": persistence, "rates": rates}),
        )
    }

    /// The per-source rate counters of every frontend with a `protect` rate limit, from the
    /// proxy runtime API's `show rates` (sources with the most recent activity kept when
    /// trimming to [`MAX_EXPORT_RATES`]).
    async fn export_rates(&self) -> Vec<Value> {
        let Ok(g) = self.store(Store::load_current) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for f in &g.config.frontends {
            let limited = f.protect.as_ref().is_some_and(|p| {
                p.connection_rate_per_source.is_some() || p.request_rate_per_source.is_some()
            });
            if !limited {
                continue;
            }
            let name = f.name.to_string();
            match ask(
                &self.runtime_socket(&g.config),
                &serde_json::to_value(tandem_control::runtime::Request::ShowRates {
                    frontend: Some(name.clone()),
                })
                .unwrap_or_default(),
            )
            .await
            {
                Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => {
                    let entries = newest_entries(&v, MAX_EXPORT_RATES);
                    if !entries.is_empty() {
                        out.push(json!({"frontend": name, "entries": entries}));
                    }
                }
                Ok(v) => warn!(frontend = %name, reply = %v, "show rates refused"),
                Err(e) => warn!(frontend = %name, cause = %e, "cannot export rate counters"),
            }
        }
        out
    }

    /// Runtime state from the peer: runs the split-brain guard on its roles, and imports its
    /// persistence tables and rate counters while this node is not master of any instance.
    pub(crate) async fn runtime_import(&self, state: Value) {
        self.split_brain_check(&state).await;
        let vrrp = self.shared.vrrp();
        let active = vrrp
            .instances
            .iter()
            .any(|i| i.get("state").and_then(Value::as_str) == Some("master"));
        if active {
            return;
        }
        let Ok(g) = self.store(Store::load_current) else {
            return;
        };
        let socket = &self.runtime_socket(&g.config);
        let tables = state.get("persistence").and_then(Value::as_array);
        for t in tables.into_iter().flatten() {
            let (Some(backend), Some(entries)) =
                (t.get("backend"), t.get("entries").and_then(Value::as_array))
            else {
                continue;
            };
            for chunk in entries.chunks(IMPORT_CHUNK) {
                let req =
                    json!({"cmd": "import persistence", "backend": backend, "entries": chunk});
                match ask(socket, &req).await {
                    Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => {}
                    Ok(v) => warn!(%backend, reply = %v, "import persistence refused"),
                    Err(e) => warn!(%backend, cause = %e, "cannot import persistence"),
                }
            }
        }
        let rates = state.get("rates").and_then(Value::as_array);
        for t in rates.into_iter().flatten() {
            let (Some(frontend), Some(entries)) = (
                t.get("frontend"),
                t.get("entries").and_then(Value::as_array),
            ) else {
                continue;
            };
            for chunk in entries.chunks(IMPORT_CHUNK) {
                let req = json!({"cmd": "import rates", "frontend": frontend, "entries": chunk});
                match ask(socket, &req).await {
                    Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => {}
                    Ok(v) => warn!(%frontend, reply = %v, "import rates refused"),
                    Err(e) => warn!(%frontend, cause = %e, "cannot import rate counters"),
                }
            }
        }
    }
}

/// The last `max` entries of a runtime API reply's `entries` (most recently used last: the
/// newest are kept when trimming).
fn newest_entries(reply: &Value, max: usize) -> Vec<Value> {
    let mut entries: Vec<Value> = reply
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let skip = entries.len().saturating_sub(max);
    entries.drain(..skip);
    entries
}
