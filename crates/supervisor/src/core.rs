//! The supervisor's core: the one owner of the node's parts, shared as `Arc<Core>` by the
//! control socket, config sync and the timers.
//!
//! Owns the parts and their wiring: the store, the node state ([`Shared`]), the services
//! ([`Children`], `services.rs`), maintenance mode ([`Maintenance`]), the split-brain guard
//! ([`SplitBrain`]), the transaction lock and the `commit confirmed` timer; start-up
//! ([`Core::boot`]) and shutdown. The transactions are in `transaction.rs`, the read-only
//! requests and the commands forwarded to the daemons in `query.rs`, config sync's side in
//! `sync.rs`. Must not parse the socket protocol (`control`) nor spawn processes itself
//! (`child`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_store::{CommitInfo, Store, StoreError};
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::ask::UnixDaemon;
pub use crate::ask::ask;
use crate::maintenance::Maintenance;
pub use crate::options::Options;
pub use crate::reply::{Failure, Reply, diagnostics_json};
use crate::services::{Children, Services};
use crate::splitbrain::{Env, SplitBrain};
pub(crate) use crate::state::lock;
use crate::state::{Severity, Shared, VrrpView, now_ms};

/// How often the VRRP daemon's status is polled for the roles (the split-brain guard needs
/// fresh roles: two polls and two runtime messages fit in its 2 s budget).
pub const VRRP_POLL: Duration = Duration::from_millis(250);

/// The supervisor's core; shared as `Arc<Core>` by the control socket and the timers.
pub struct Core {
    pub(crate) opts: Options,
    store: Arc<Mutex<Store>>,
    /// The node state.
    pub shared: Arc<Shared>,
    /// The services (proxy, VRRP daemon) the transactions apply generations to.
    pub(crate) services: Arc<dyn Children>,
    /// Serializes transactions (commit, rollback, confirm, confirm timeout).
    pub(crate) txn: tokio::sync::Mutex<()>,
    /// The config sync service, once started (`sync.rs`).
    pub(crate) sync: std::sync::OnceLock<tandem_sync::shell::SyncHandle>,
    /// Maintenance mode (`maintenance.rs`).
    pub(crate) maintenance: Arc<Maintenance>,
    /// The split-brain guard (`splitbrain.rs`).
    pub(crate) split_brain: SplitBrain,
    /// The armed `commit confirmed` timer, if any.
    pub(crate) confirm_timer: Mutex<Option<JoinHandle<()>>>,
    /// A peer generation committed and still being applied and checked: config sync does not
    /// announce it to the peer before it runs (`sync.rs`).
    pub(crate) applying_peer: Mutex<Option<u64>>,
    /// When persistence tables were last exported (they go every second, roles every 250 ms;
    /// `sync.rs`).
    pub(crate) last_persistence: Mutex<Option<Instant>>,
    pub(crate) started: Instant,
    /// The traffic history, opened on first use (`recorder.rs`).
    pub(crate) traffic: crate::recorder::TrafficStore,
}

impl Core {
    /// A core over `store`; nothing is started until [`Core::boot`].
    pub fn new(opts: Options, store: Store) -> Arc<Core> {
        let maintenance = Maintenance::new(Box::new(tandem_store::RealFs), opts.data_dir.clone());
        Core::with_parts(opts, store, maintenance, |opts, shared, store| {
            Arc::new(Services::new(
                opts.clone(),
                Arc::clone(shared),
                Arc::clone(store),
            ))
        })
    }

    /// A core with `maintenance` whose services are made by `children` (the real
    /// [`Services`], or a fake in tests).
    pub(crate) fn with_parts(
        opts: Options,
        store: Store,
        maintenance: Maintenance,
        children: impl FnOnce(&Options, &Arc<Shared>, &Arc<Mutex<Store>>) -> Arc<dyn Children>,
    ) -> Arc<Core> {
        let shared = Arc::new(Shared::new(opts.node.clone()));
        let store = Arc::new(Mutex::new(store));
        let services = children(&opts, &shared, &store);
        let traffic = crate::recorder::TrafficStore::new(
            crate::recorder::history_dir(&opts.data_dir),
            opts.node.clone().unwrap_or_else(|| "local".into()),
        );
        Arc::new(Core {
            maintenance: Arc::new(maintenance),
            shared,
            opts,
            store,
            services,
            txn: tokio::sync::Mutex::new(()),
            sync: std::sync::OnceLock::new(),
            split_brain: SplitBrain::default(),
            confirm_timer: Mutex::new(None),
            applying_peer: Mutex::new(None),
            last_persistence: Mutex::new(None),
            started: Instant::now(),
            traffic,
        })
    }

    /// Runs `f` on the store. Store calls are short (a few small fsynced files), so they run
    /// inline rather than on the blocking pool.
    pub(crate) fn store<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&lock(&self.store))
    }

    pub(crate) fn event(&self, message: &str) {
        self.shared.event(message);
    }

    /// Starts the services for the current generation and re-arms a pending confirm.
    /// Returns once the proxy acknowledged its start (or failed to).
    pub async fn boot(self: &Arc<Self>) {
        let repairs = self.store(|s| s.repairs().to_vec());
        if !repairs.is_empty() {
            let what: Vec<String> = repairs.iter().map(ToString::to_string).collect();
            self.shared.raise(
                "store-repaired",
                Severity::Warning,
                format!(
                    "the configuration store was repaired at start: {}; `show history` lists the generations, `config rollback N` restores one",
                    what.join("; ")
                ),
            );
        }
        // Before any service starts: a node in maintenance never takes a VIP.
        self.maintenance.load(&self.shared);
        self.spawn_watchers();
        let weak = Arc::downgrade(self);
        self.maintenance.spawn_guard(
            self.shared.events.subscribe(),
            self.vrrp_daemon(),
            move || weak.upgrade().map(|core| core.vrrp_started()),
        );
        let current = match self.store(Store::load_current) {
            Ok(g) => g,
            Err(StoreError::Empty(_)) => {
                self.refresh_firewall();
                self.shared.raise(
                    "unconfigured",
                    Severity::Warning,
                    "no configuration committed; `config load FILE` then `config commit`".into(),
                );
                return;
            }
            Err(e) => {
                error!(cause = %e, "cannot load the current generation");
                self.shared.raise(
                    "store",
                    Severity::Critical,
                    format!("cannot load the current configuration: {e}; `rollback N` to a good generation"),
                );
                return;
            }
        };
        let _guard = self.txn.lock().await;
        match self.store(Store::interrupted) {
            Ok(Some(i)) => self.finish_interrupted(&current, i).await,
            Ok(None) => {
                self.event(&format!("booting generation {}", current.meta.number));
                if let Err(e) = self.apply(&current, None).await {
                    // A generation checked before: report it and keep supervising.
                    self.shared.raise(
                        "apply-failed",
                        Severity::Critical,
                        format!(
                            "generation {} did not start cleanly: {e}",
                            current.meta.number
                        ),
                    );
                }
            }
            Err(e) => {
                error!(cause = %e, "cannot read which generation was last applied");
                self.shared.raise(
                    "store",
                    Severity::Critical,
                    format!("cannot read which generation was last applied: {e}"),
                );
            }
        }
        let current = self.store(Store::current_number).ok().flatten();
        match self.store(Store::pending_confirm) {
            Ok(Some(p)) if Some(p.generation) == current => {
                self.event(&format!(
                    "re-arming commit confirmed of generation {} (deadline {} ms)",
                    p.generation, p.deadline_ms
                ));
                self.arm_confirm(p);
            }
            Ok(Some(_)) => {
                let _ = self.store(Store::clear_pending_confirm);
            }
            Ok(None) => {}
            Err(e) => warn!(cause = %e, "cannot read the pending confirm"),
        }
    }

    /// Background tasks: proxy health and socket problems from its log (the services'
    /// watchers), VRRP role polling, the traffic recorder (`recorder.rs`).
    fn spawn_watchers(self: &Arc<Self>) {
        Arc::clone(&self.services).watch();
        crate::recorder::spawn(Arc::downgrade(self), self.opts.history_interval);
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(VRRP_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(core) = core.upgrade() else { return };
                let view = core.poll_vrrp().await;
                core.shared.set_vrrp(view);
            }
        });
    }

    /// The proxy's counters for the traffic recorder (`recorder.rs`).
    fn traffic_stats(
        &self,
    ) -> impl std::future::Future<Output = Result<crate::recorder::Stats, String>> + Send + use<>
    {
        let socket = self
            .store(Store::load_current)
            .map(|g| self.runtime_socket(&g.config))
            .map_err(|e| e.to_string());
        let vrrp = self.shared.vrrp();
        async move { crate::recorder::read_stats(&socket?, &vrrp).await }
    }

    async fn poll_vrrp(&self) -> VrrpView {
        if !self.is_started("vrrp") {
            return VrrpView {
                available: false,
                reason: Some("no vrrp daemon on this node (no vrrp instances for it)".into()),
                instances: Vec::new(),
            };
        }
        match ask(
            &self.opts.vrrp_socket,
            &tandem_control::vrrp::Request::Status.to_value(),
        )
        .await
        {
            Ok(v) => VrrpView {
                available: true,
                reason: None,
                instances: v
                    .get("instances")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            },
            Err(e) => VrrpView {
                available: false,
                reason: Some(e),
                instances: Vec::new(),
            },
        }
    }

    /// Stops every child (SIGTERM to each group, SIGKILL after the grace period).
    pub async fn shutdown(&self) {
        self.services.shutdown().await;
    }

    pub(crate) fn is_started(&self, service: &str) -> bool {
        self.services.is_started(service)
    }

    /// Whether the VRRP daemon is one of this node's services now.
    pub(crate) fn vrrp_started(&self) -> bool {
        self.is_started("vrrp")
    }

    /// The VRRP daemon's control socket.
    fn vrrp_daemon(&self) -> UnixDaemon {
        UnixDaemon(self.opts.vrrp_socket.clone())
    }

    /// The runtime API socket of `config` on this node.
    pub fn runtime_socket(&self, config: &tandem_config::Config) -> PathBuf {
        crate::sockets::runtime_socket(&config.runtime.socket, &self.opts.run_dir)
    }

    pub(crate) fn node_label(&self) -> String {
        self.opts.node.clone().unwrap_or_else(|| "this node".into())
    }

    pub(crate) fn info(&self, author: &str, comment: &str) -> CommitInfo {
        CommitInfo {
            author: author.to_owned(),
            node: self.opts.node.clone(),
            time_ms: now_ms(),
            comment: comment.to_owned(),
        }
    }

    // ---- maintenance and the split-brain guard ---------------------------------------------

    /// `maintenance on|off` (`maintenance.rs`).
    pub async fn maintenance(&self, on: bool, author: &str) -> Reply {
        self.maintenance
            .set(
                on,
                author,
                &self.shared,
                &self.vrrp_daemon(),
                self.vrrp_started(),
                || self.split_brain.holding(),
            )
            .await
    }

    /// Instances this node holds backup (exported to the peer).
    pub(crate) fn holding(&self) -> Vec<String> {
        self.split_brain.holding()
    }

    /// Runs the split-brain guard on one runtime message from the peer (`splitbrain.rs`).
    pub(crate) async fn split_brain_check(&self, peer_state: &Value) {
        let vrrp = self.vrrp_daemon();
        let env = self.guard_env(&vrrp);
        self.split_brain
            .check(&env, || self.store(Store::load_current).ok(), peer_state)
            .await;
    }

    /// Drops every split-brain hold (`splitbrain.rs`).
    pub(crate) async fn release_all(&self, why: &str) {
        let vrrp = self.vrrp_daemon();
        self.split_brain
            .release_all(&self.guard_env(&vrrp), why)
            .await;
    }

    fn guard_env<'a>(&'a self, vrrp: &'a UnixDaemon) -> Env<'a, UnixDaemon> {
        Env {
            node: self.opts.node.as_deref(),
            shared: &self.shared,
            vrrp,
            maintenance: &self.maintenance,
        }
    }

    /// One line for systemd's STATUS: generation, services, alarms.
    pub fn status_line(&self) -> String {
        let generation = self
            .store(Store::current_number)
            .ok()
            .flatten()
            .map_or_else(
                || "no configuration".to_owned(),
                |n| format!("generation {n}"),
            );
        let services: Vec<String> = self
            .shared
            .services()
            .iter()
            .map(|s| format!("{} {:?}", s.name, s.state).to_lowercase())
            .collect();
        format!(
            "{generation}; {}; {} alarm(s)",
            services.join(", "),
            self.shared.alarms().len()
        )
    }
}

impl crate::recorder::Source for Core {
    fn running(&self) -> bool {
        self.is_started("proxy")
    }

    fn stats(
        &self,
    ) -> impl std::future::Future<Output = Result<crate::recorder::Stats, String>> + Send {
        self.traffic_stats()
    }

    fn traffic(&self) -> &crate::recorder::TrafficStore {
        &self.traffic
    }
}
