//! The supervisor's core: the children it runs, the configuration transactions, and the
//! answers to control-socket requests.
//!
//! Owns the transaction: validate → diff → commit a generation → render `running.yaml` →
//! apply to each service → check (see `apply`) → on failure, commit a generation restoring the
//! previous one and apply that; `commit confirmed` arms a timer whose deadline is persisted in
//! the store, so it survives a supervisor restart. Transactions are serialized by one async
//! mutex. Must not parse the socket protocol (`control`) nor spawn processes itself (`child`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tandem_config::{Config, Report};
use tandem_store::{CommitInfo, Generation, PendingConfirm, Store, StoreError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::apply::{self, ProxyLog};
use crate::child::{self, ChildCmd, ChildHandle, ChildSpec};
use crate::state::{ChildEvent, ServiceState, Severity, Shared, VrrpView, now_ms};

/// Longest `commit confirmed` window accepted.
pub const MAX_CONFIRM_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long a request to the VRRP daemon or the proxy runtime API may take.
const PEER_SOCKET_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the VRRP daemon's status is polled for the roles (the split-brain guard needs
/// fresh roles: two polls and two runtime messages fit in its 2 s budget).
pub const VRRP_POLL: Duration = Duration::from_millis(250);

/// How the supervisor runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The data directory (`/data` on the appliance); the store lives in `DIR/config`.
    pub data_dir: PathBuf,
    /// This node's name in `cluster.nodes`, if any.
    pub node: Option<String>,
    /// The `tandem` multi-call binary the children run.
    pub program: PathBuf,
    /// The node's run directory (`/run/tandem` on the appliance, [`crate::DEFAULT_RUN_DIR`]):
    /// the sockets of the node live here. A configuration's `runtime.socket` under
    /// `/run/tandem` (its default, `/run/tandem/proxy.sock`) is placed in this directory
    /// instead when it differs (a lab stack off the appliance), see
    /// [`Core::runtime_socket`].
    pub run_dir: PathBuf,
    /// Where to serve the control socket.
    pub control_socket: PathBuf,
    /// The VRRP daemon's control socket.
    pub vrrp_socket: PathBuf,
    /// The groups that give access to the control socket (`crate::access`).
    pub access_groups: crate::access::Groups,
    /// Run the services as this unprivileged user with only their capabilities
    /// (`--service-user`, set by the appliance's unit; `child::ServiceUser`).
    pub service_user: Option<child::ServiceUser>,
    /// Generate and load the host firewall at every apply (`--firewall`, set by the
    /// appliance's unit; `firewall.rs`). Off by default: it changes the host's netfilter rules.
    pub firewall: bool,
}

/// A failed request: what went wrong, what to do next, and the config diagnostics if any.
#[derive(Debug, Default)]
pub struct Failure {
    /// What failed, lowercase.
    pub error: String,
    /// What the operator should do next.
    pub hint: Option<String>,
    /// Extra fields merged into the reply (`diagnostics`, `generation`, `restored`, ...).
    pub extra: serde_json::Map<String, Value>,
}

impl Failure {
    /// A failure with a hint.
    pub fn new(error: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            hint: Some(hint.into()),
            extra: serde_json::Map::new(),
        }
    }

    fn with(mut self, key: &str, value: Value) -> Failure {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The reply object: `{"ok":false,"error":...,"hint":...,...}`.
    pub fn to_json(&self) -> Value {
        let mut m = self.extra.clone();
        m.insert("ok".into(), Value::Bool(false));
        m.insert("error".into(), Value::String(self.error.clone()));
        if let Some(h) = &self.hint {
            m.insert("hint".into(), Value::String(h.clone()));
        }
        Value::Object(m)
    }
}

/// A request's outcome: the reply object (without `ok`) or a failure.
pub type Reply = Result<Value, Failure>;

/// Diagnostics as JSON, for `tandemctl` to print with line and column.
pub fn diagnostics_json(report: &Report) -> Value {
    Value::Array(
        report
            .diagnostics
            .iter()
            .map(|d| {
                json!({
                    "severity": d.severity.to_string(),
                    "origin": d.origin,
                    "line": d.line,
                    "column": d.column,
                    "path": d.path,
                    "message": d.message,
                })
            })
            .collect(),
    )
}

fn invalid(report: &Report) -> Failure {
    let n = report.error_count();
    Failure::new(
        format!(
            "the candidate has {n} error{}; nothing was changed",
            if n == 1 { "" } else { "s" }
        ),
        "fix them (`config edit`) and run `config validate`",
    )
    .with("diagnostics", diagnostics_json(report))
}

fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::Invalid(r) => invalid(&r),
        StoreError::Empty(_) => Failure::new(
            e.to_string(),
            "load a configuration with `config load FILE`, then `config commit`",
        ),
        StoreError::NoSuchGeneration(_) => {
            Failure::new(e.to_string(), "`show history` lists the generations kept")
        }
        e if tandem_store::is_full(&e) => Failure::new(
            e.to_string(),
            "the data partition is full: nothing was changed and the running configuration keeps serving; a leftover firmware download (/data/tandem/incoming.upgrade) or a large candidate uses space",
        ),
        other => Failure::new(
            other.to_string(),
            "check the data directory (disk full or read-only?) and `logs supervisor`",
        ),
    }
}

/// The supervisor's core; shared as `Arc<Core>` by the control socket and the timers.
pub struct Core {
    pub(crate) opts: Options,
    store: Mutex<Store>,
    /// The node state.
    pub shared: Arc<Shared>,
    children: Mutex<BTreeMap<&'static str, ChildHandle>>,
    /// Serializes transactions (commit, rollback, confirm, confirm timeout).
    pub(crate) txn: tokio::sync::Mutex<()>,
    /// The config sync service, once started (`sync.rs`).
    pub(crate) sync: std::sync::OnceLock<tandem_sync::shell::SyncHandle>,
    /// The split-brain guard's state (`splitbrain.rs`).
    pub(crate) split_brain: Mutex<crate::splitbrain::GuardState>,
    /// Serializes split-brain checks (runtime messages are imported concurrently).
    pub(crate) split_brain_turn: tokio::sync::Mutex<()>,
    /// The armed `commit confirmed` timer, if any.
    confirm_timer: Mutex<Option<JoinHandle<()>>>,
    /// A peer generation committed and still being applied and checked: config sync does not
    /// announce it to the peer before it runs (`sync.rs`).
    pub(crate) applying_peer: Mutex<Option<u64>>,
    /// What the running proxy logged about its runtime API and handover sockets.
    pub(crate) proxy_causes: Mutex<crate::sockets::LoggedCauses>,
    started: std::time::Instant,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No holder panics (map and store calls return errors); recover anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    /// A core over `store`; nothing is started until [`Core::boot`].
    pub fn new(opts: Options, store: Store) -> Arc<Core> {
        Arc::new(Core {
            shared: Arc::new(Shared::new(opts.node.clone())),
            opts,
            store: Mutex::new(store),
            children: Mutex::default(),
            txn: tokio::sync::Mutex::new(()),
            sync: std::sync::OnceLock::new(),
            split_brain: Mutex::default(),
            split_brain_turn: tokio::sync::Mutex::new(()),
            confirm_timer: Mutex::new(None),
            applying_peer: Mutex::new(None),
            proxy_causes: Mutex::default(),
            started: std::time::Instant::now(),
        })
    }

    /// Runs `f` on the store. Store calls are short (a few small fsynced files), so they run
    /// inline rather than on the blocking pool.
    pub(crate) fn store<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&lock(&self.store))
    }

    pub(crate) fn event(&self, message: &str) {
        info!(event = message, "supervisor event");
        self.shared.log("supervisor", message);
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
        self.load_maintenance();
        self.spawn_watchers();
        crate::maintenance::spawn_guard(self);
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

    /// Start-up after a supervisor stopped in the middle of a transaction: `current` was
    /// committed but never applied and checked. Finishes the transaction as the commit would
    /// have: apply and check it, and when that fails restore the last generation that was
    /// applied and checked (as a new generation). Raises alarm `interrupted-commit` either way,
    /// so it does not pass silently.
    async fn finish_interrupted(&self, current: &Generation, i: tandem_store::Interrupted) {
        let n = current.meta.number;
        let who = &current.meta.author;
        warn!(
            generation = n,
            last_applied = i.last_applied,
            "the previous supervisor stopped before generation {n} was applied and checked; finishing the transaction"
        );
        self.event(&format!(
            "generation {n} (committed by {who}) was never applied and checked: the supervisor stopped during the transaction; applying and checking it now"
        ));
        let prev = match self.store(|s| s.generation(i.last_applied)) {
            Ok(g) => Some(g),
            Err(e) => {
                warn!(generation = i.last_applied, cause = %e, "the last applied generation cannot be read; trying the parent");
                current
                    .meta
                    .parent
                    .and_then(|p| self.store(|s| s.generation(p)).ok())
            }
        };
        let outcome = match self.apply(current, None).await {
            Ok(()) => "it was applied and checked at start and runs now".to_owned(),
            Err(cause) => {
                let f = self
                    .restore_after_failure(current, prev.as_ref(), &cause)
                    .await;
                let _ = self.store(Store::clear_pending_confirm);
                f.error
            }
        };
        self.shared.raise(
            "interrupted-commit",
            Severity::Warning,
            format!(
                "the supervisor stopped during the commit of generation {n} (by {who}), before it was checked; {outcome}; `show history` shows the generations"
            ),
        );
    }

    /// Background tasks: proxy health and socket problems from its log (with a check of its
    /// sockets after each start: `sockets.rs`), VRRP role polling.
    fn spawn_watchers(self: &Arc<Self>) {
        let shared = Arc::clone(&self.shared);
        let mut events = shared.events.subscribe();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ChildEvent::Line {
                        service: "proxy",
                        line,
                    }) => match apply::parse_proxy_line(&line) {
                        Some(ProxyLog::Started) => {
                            shared.service("proxy", |s| s.healthy = Some(true));
                            let Some(core) = weak.upgrade() else { return };
                            core.proxy_logged(|c| *c = Default::default());
                            // Also after a restart the transaction code did not ask for.
                            tokio::spawn(async move { core.check_proxy_sockets().await });
                        }
                        Some(ProxyLog::RuntimeApiUnavailable(cause)) => {
                            let Some(core) = weak.upgrade() else { return };
                            core.proxy_logged(|c| c.runtime_api = Some(cause));
                        }
                        Some(ProxyLog::HandoverUnavailable(cause)) => {
                            let Some(core) = weak.upgrade() else { return };
                            core.proxy_logged(|c| c.handover = Some(cause));
                        }
                        _ => {}
                    },
                    Ok(ChildEvent::Exited { service, .. }) => {
                        shared.service(service, |s| s.healthy = Some(false));
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
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

    async fn poll_vrrp(&self) -> VrrpView {
        if !lock(&self.children).contains_key("vrrp") {
            return VrrpView {
                available: false,
                reason: Some("no vrrp daemon on this node (no vrrp instances for it)".into()),
                instances: Vec::new(),
            };
        }
        match ask(&self.opts.vrrp_socket, &json!({"cmd": "status"})).await {
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
        let handles: Vec<(&'static str, ChildHandle)> = std::mem::take(&mut *lock(&self.children))
            .into_iter()
            .collect();
        for (name, h) in handles {
            let (tx, rx) = oneshot::channel();
            if h.tx.send(ChildCmd::Stop(tx)).await.is_ok() {
                let _ = rx.await;
            }
            let _ = h.task.await;
            info!(service = name, "service stopped for shutdown");
        }
    }

    // ---- children -------------------------------------------------------------------------

    fn spec(&self, service: &'static str, config: &Config) -> ChildSpec {
        let running = self.store(Store::running_path).display().to_string();
        let mut args = vec![service.to_owned(), "--config".into(), running];
        let node_in_cluster = self.opts.node.as_ref().filter(|n| {
            config
                .cluster
                .as_ref()
                .is_some_and(|c| c.nodes.keys().any(|k| k.to_string() == **n))
        });
        if let Some(node) = node_in_cluster {
            args.push("--node".into());
            args.push(node.clone());
        }
        if service == "vrrp" {
            args.push("--control-socket".into());
            args.push(self.opts.vrrp_socket.display().to_string());
            // `track.proxy`: the daemon's default probe asks the proxy runtime API
            // (`runtime.socket`), which also sees a proxy that listens but serves nothing.
            // A TCP probe of a frontend bind would fail on a VIP this node does not hold.
        }
        let creds = self
            .opts
            .service_user
            .as_ref()
            .map(|u| u.credentials(service));
        // As the service user, a child reads the configuration and makes its sockets.
        let store_root = self.store(Store::running_path);
        let mut dirs = vec![(self.opts.data_dir.clone(), child::Access::Traverse)];
        dirs.extend(
            store_root
                .parent()
                .map(|d| (d.to_owned(), child::Access::Read)),
        );
        for socket in [&config.runtime.socket, &self.opts.vrrp_socket] {
            dirs.extend(
                socket
                    .parent()
                    .map(|d| (d.to_owned(), child::Access::Write)),
            );
        }
        ChildSpec {
            service,
            program: self.opts.program.clone(),
            args,
            // JSON logs: the supervisor reads the proxy's reload acknowledgements from them.
            env: vec![("TANDEM_LOG".into(), "json".into())],
            creds,
            dirs,
        }
    }

    fn is_started(&self, service: &str) -> bool {
        lock(&self.children).contains_key(service)
    }

    /// Whether the VRRP daemon is one of this node's services now.
    pub(crate) fn vrrp_started(&self) -> bool {
        self.is_started("vrrp")
    }

    fn start_child(&self, spec: ChildSpec) {
        let name = spec.service;
        let handle = child::spawn(spec, Arc::clone(&self.shared));
        lock(&self.children).insert(name, handle);
        self.event(&format!("started service {name}"));
    }

    async fn command(&self, service: &str, make: impl FnOnce() -> ChildCmd) -> bool {
        let tx = lock(&self.children).get(service).map(|h| h.tx.clone());
        match tx {
            Some(tx) => tx.send(make()).await.is_ok(),
            None => false,
        }
    }

    async fn signal(&self, service: &str, sig: Signal) -> Result<u32, String> {
        let (tx, rx) = oneshot::channel();
        if !self.command(service, || ChildCmd::Signal(sig, tx)).await {
            return Err(format!("{service} is not started"));
        }
        rx.await
            .unwrap_or_else(|_| Err(format!("{service} task is gone")))
    }

    async fn stop_child(&self, service: &'static str) {
        let handle = lock(&self.children).remove(service);
        if let Some(h) = handle {
            let (tx, rx) = oneshot::channel();
            if h.tx.send(ChildCmd::Stop(tx)).await.is_ok() {
                let _ = rx.await;
            }
            let _ = h.task.await;
            self.event(&format!("stopped service {service}"));
        }
    }

    // ---- apply ----------------------------------------------------------------------------

    /// Renders `next` and applies it to every service, then checks (see `apply`).
    pub(crate) async fn apply(
        &self,
        next: &Generation,
        prev: Option<&Generation>,
    ) -> Result<(), String> {
        let socket = self.runtime_socket(&next.config);
        let text = self.store(|s| crate::sockets::render_running(s, next, &socket))?;
        self.store(|s| s.write_running(&text))
            .map_err(|e| format!("cannot render the running configuration: {e}"))?;
        self.apply_firewall(Some(&next.config))?;
        self.apply_proxy(next).await?;
        self.apply_vrrp(next, prev).await?;
        // The transaction is finished: a restart from here on runs this generation as
        // checked (`Core::boot`).
        if let Err(e) = self.store(|s| s.mark_applied(next.meta.number)) {
            warn!(generation = next.meta.number, cause = %e, "cannot record the generation as applied");
        }
        self.event(&format!(
            "generation {} applied and checked",
            next.meta.number
        ));
        Ok(())
    }

    async fn apply_proxy(&self, next: &Generation) -> Result<(), String> {
        // Subscribe before acting, so the acknowledgement cannot be missed.
        let mut events = self.shared.events.subscribe();
        if !self.is_started("proxy") {
            self.start_child(self.spec("proxy", &next.config));
            apply::wait_proxy_ack(&mut events, false).await?;
        } else {
            let ready = self
                .shared
                .service_status("proxy")
                .is_some_and(|s| s.state == ServiceState::Running && s.healthy == Some(true));
            if !ready {
                // Starting or restarting: it reads the new file when it starts; a SIGHUP
                // before it installed its handler would kill it.
                apply::wait_proxy_ack(&mut events, false).await?;
            } else {
                match self.signal("proxy", Signal::SIGHUP).await {
                    Ok(_) => apply::wait_proxy_ack(&mut events, true).await?,
                    Err(_) => apply::wait_proxy_ack(&mut events, false).await?,
                }
            }
        }
        let alive = self
            .shared
            .service_status("proxy")
            .is_some_and(|s| s.state == ServiceState::Running);
        if !alive {
            return Err("the proxy is not running after the change".into());
        }
        let binds: Vec<_> = next
            .config
            .frontends
            .iter()
            .flat_map(|f| f.bind.iter().map(|b| b.address.socket_addr()))
            .collect();
        let result = apply::check_listeners(&apply::local_check_targets(&binds)).await;
        self.shared
            .service("proxy", |s| s.healthy = Some(result.is_ok()));
        if result.is_ok() {
            // After a reload too: the proxy keeps its runtime API where it started it, so a
            // changed `runtime.socket` shows up here.
            self.check_proxy_sockets().await;
        }
        result
    }

    fn vrrp_wanted(&self, config: &Config) -> bool {
        if config.vrrp.is_empty() {
            self.shared.clear("vrrp-no-node");
            return false;
        }
        let in_cluster = self.opts.node.as_ref().is_some_and(|n| {
            config
                .cluster
                .as_ref()
                .is_some_and(|c| c.nodes.keys().any(|k| k.to_string() == *n))
        });
        if !in_cluster {
            self.shared.raise(
                "vrrp-no-node",
                Severity::Warning,
                "the configuration has vrrp instances but this node is not one of cluster.nodes (start the supervisor with --node NAME); vrrp is not running".into(),
            );
        } else {
            self.shared.clear("vrrp-no-node");
        }
        in_cluster
    }

    async fn apply_vrrp(&self, next: &Generation, prev: Option<&Generation>) -> Result<(), String> {
        let want = self.vrrp_wanted(&next.config);
        let have = self.is_started("vrrp");
        match (want, have) {
            (false, false) => return Ok(()),
            (false, true) => {
                self.stop_child("vrrp").await;
                return Ok(());
            }
            (true, false) => self.start_child(self.spec("vrrp", &next.config)),
            (true, true) => {
                let changed = prev.is_none_or(|p| {
                    let (a, b) = (
                        tandem_config::fingerprints(&p.config),
                        tandem_config::fingerprints(&next.config),
                    );
                    ["vrrp", "cluster", "interfaces"]
                        .iter()
                        .any(|k| a.get(*k) != b.get(*k))
                });
                if !changed {
                    return Ok(());
                }
                let (tx, rx) = oneshot::channel();
                self.command("vrrp", || ChildCmd::Restart(tx)).await;
                let _ = rx.await;
                self.event("restarted service vrrp for the new vrrp settings");
            }
        }
        // The child task records the pid once it has spawned the process; wait for it
        // (bounded), or a pid of `None` would later read as "restarted".
        let mut pid = None;
        for _ in 0..100 {
            pid = self.shared.service_status("vrrp").and_then(|s| s.pid);
            if pid.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(apply::VRRP_SETTLE).await;
        match self.shared.service_status("vrrp") {
            Some(s) if s.state == ServiceState::Running && s.pid == pid => Ok(()),
            Some(s) => Err(format!(
                "the vrrp daemon did not stay up: {}",
                s.last_exit.unwrap_or_else(|| "restarting".into())
            )),
            None => Err("the vrrp daemon did not start".into()),
        }
    }

    // ---- transactions ---------------------------------------------------------------------

    /// Commits `text` (or the candidate), applies it, restores the previous generation if
    /// applying fails; with `confirm_ms`, arms the automatic rollback. Then pushes the new
    /// generation to the peer and says whether it runs there (`nodes`, `peer`, `message`).
    pub async fn commit(
        self: &Arc<Self>,
        text: Option<String>,
        author: &str,
        comment: &str,
        confirm_ms: Option<u64>,
    ) -> Reply {
        let mut reply = self.commit_local(text, author, comment, confirm_ms).await?;
        // The transaction lock is released: the peer may push to us meanwhile.
        if reply.get("committed") == Some(&Value::Bool(true)) {
            self.sync_after_commit(&mut reply).await;
        }
        Ok(reply)
    }

    async fn commit_local(
        self: &Arc<Self>,
        text: Option<String>,
        author: &str,
        comment: &str,
        confirm_ms: Option<u64>,
    ) -> Reply {
        if let Some(ms) = confirm_ms
            && (ms == 0 || ms > MAX_CONFIRM_WINDOW.as_millis() as u64)
        {
            return Err(Failure::new(
                format!("commit confirmed window of {ms} ms is out of range"),
                "use a duration from 1s to 24h, e.g. `config commit confirmed 5m`",
            ));
        }
        let _guard = self.txn.lock().await;
        let text = match text {
            Some(t) => t,
            None => self
                .store(Store::candidate)
                .map_err(store_failure)?
                .ok_or_else(|| {
                    Failure::new(
                        "there is no candidate to commit",
                        "start one with `config edit` or `config load FILE`",
                    )
                })?,
        };
        let loaded = self.store(|s| s.validate(&text)).map_err(store_failure)?;
        let prev = match self.store(Store::load_current) {
            Ok(g) => Some(g),
            Err(StoreError::Empty(_)) => None,
            Err(e) => return Err(store_failure(e)),
        };
        let changes = prev
            .as_ref()
            .map(|p| tandem_config::diff(&p.config, &loaded.config))
            .unwrap_or_default();
        if prev.is_some() && changes.is_empty() {
            // Nothing to change; a plain commit still confirms a pending one (like Junos).
            let confirmed = self.take_pending();
            let _ = self.store(Store::clear_candidate);
            return Ok(json!({
                "committed": false,
                "message": "no changes; nothing committed",
                "confirmed": confirmed,
                "generation": prev.as_ref().map(|p| p.meta.number),
            }));
        }
        let confirmed = self.take_pending();
        let info = self.info(author, comment);
        let next = self
            .store(|s| s.commit(&text, &info))
            .map_err(store_failure)?;
        self.event(&format!(
            "{author} committed generation {} ({} change{})",
            next.meta.number,
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        ));
        // Recorded before applying, so a `commit confirmed` interrupted by a crash is still
        // reverted unless confirmed (`Core::boot` finishes the transaction and re-arms it).
        let pending = confirm_ms.zip(prev.as_ref()).map(|(ms, p)| PendingConfirm {
            generation: next.meta.number,
            restore: p.meta.number,
            deadline_ms: now_ms() + ms,
            author: author.to_owned(),
        });
        if let Some(p) = &pending {
            self.store(|s| s.set_pending_confirm(p))
                .map_err(store_failure)?;
        }
        crate::crash_point("after-commit");
        if let Err(cause) = self.apply(&next, prev.as_ref()).await {
            if pending.is_some() {
                let _ = self.store(Store::clear_pending_confirm);
            }
            // Keep the candidate: the operator fixes it and commits again.
            let _ = self.store(|s| s.set_candidate(&text));
            return Err(self
                .restore_after_failure(&next, prev.as_ref(), &cause)
                .await);
        }
        self.shared.clear("apply-failed");
        self.shared.clear("unconfigured");
        self.shared.clear("confirm-expired");
        self.shared.clear("interrupted-commit");
        self.shared.clear("store-repaired");
        let _ = self.store(Store::clear_candidate);
        let mut reply = json!({
            "committed": true,
            "generation": next.meta.number,
            "fingerprint": next.meta.fingerprint,
            "changes": changes,
            "applied": true,
            "confirmed": confirmed,
            "nodes": [self.node_label()],
            "warnings": loaded.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        if let (Some(ms), Some(mut pending)) = (confirm_ms, pending) {
            // The window counts from the end of the check, as the operator sees it.
            pending.deadline_ms = now_ms() + ms;
            self.store(|s| s.set_pending_confirm(&pending))
                .map_err(store_failure)?;
            self.arm_confirm(pending.clone());
            reply["pending_confirm"] = json!(pending);
        }
        Ok(reply)
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

    /// After `failed` did not apply: commit the previous generation again and apply it.
    pub(crate) async fn restore_after_failure(
        &self,
        failed: &Generation,
        prev: Option<&Generation>,
        cause: &str,
    ) -> Failure {
        let n = failed.meta.number;
        error!(
            generation = n,
            cause, "apply failed, restoring the previous generation"
        );
        let Some(prev) = prev else {
            self.shared.raise(
                "apply-failed",
                Severity::Critical,
                format!("generation {n} failed to apply and there is no previous one: {cause}"),
            );
            return Failure::new(
                format!("generation {n} failed to apply: {cause}; there is no previous generation to restore"),
                "fix the configuration and commit again; `logs proxy` shows the services' view",
            )
            .with("generation", json!(n));
        };
        let comment = format!("automatic rollback: generation {n} failed to apply: {cause}");
        let restored = match self
            .store(|s| s.rollback(prev.meta.number, &self.info("auto-rollback", &comment)))
        {
            Ok(g) => g,
            Err(e) => {
                self.shared.raise(
                    "apply-failed",
                    Severity::Critical,
                    format!(
                        "generation {n} failed to apply and restoring generation {} failed: {e}",
                        prev.meta.number
                    ),
                );
                return store_failure(e);
            }
        };
        let reapply = self.apply(&restored, Some(failed)).await;
        let (severity, state) = match &reapply {
            Ok(()) => (Severity::Warning, "restored".to_owned()),
            Err(e) => (Severity::Critical, format!("restore also failed: {e}")),
        };
        self.shared.raise(
            "apply-failed",
            severity,
            format!(
                "generation {n} failed to apply ({cause}); generation {} was {state} as generation {}",
                prev.meta.number, restored.meta.number
            ),
        );
        self.event(&format!(
            "generation {n} failed to apply; restored generation {} as {}",
            prev.meta.number, restored.meta.number
        ));
        Failure::new(
            format!(
                "generation {n} failed to apply: {cause}; the previous configuration (generation {}) was restored as generation {}",
                prev.meta.number, restored.meta.number
            ),
            "nothing changed on the running system; fix the candidate (`config edit`) and commit again",
        )
        .with("generation", json!(n))
        .with("restored", json!(restored.meta.number))
        .with("restored_from", json!(prev.meta.number))
    }

    /// Clears a pending confirm (confirmed by an operator action) and disarms its timer.
    fn take_pending(&self) -> Option<u64> {
        if let Some(t) = lock(&self.confirm_timer).take() {
            t.abort();
        }
        let pending = self.store(Store::pending_confirm).ok().flatten();
        if pending.is_some() {
            let _ = self.store(Store::clear_pending_confirm);
        }
        pending.map(|p| p.generation)
    }

    fn arm_confirm(self: &Arc<Self>, pending: PendingConfirm) {
        let core = Arc::downgrade(self);
        let wait = Duration::from_millis(pending.deadline_ms.saturating_sub(now_ms()));
        let task = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(core) = core.upgrade() {
                core.confirm_expired(pending.generation).await;
            }
        });
        if let Some(old) = lock(&self.confirm_timer).replace(task) {
            old.abort();
        }
    }

    async fn confirm_expired(&self, generation: u64) {
        let _guard = self.txn.lock().await;
        let Ok(Some(p)) = self.store(Store::pending_confirm) else {
            return;
        };
        let current = self.store(Store::load_current).ok();
        if p.generation != generation || current.as_ref().map(|g| g.meta.number) != Some(generation)
        {
            let _ = self.store(Store::clear_pending_confirm);
            return;
        }
        let comment = format!(
            "automatic rollback: commit confirmed of generation {generation} was not confirmed in time"
        );
        let restored = match self
            .store(|s| s.rollback(p.restore, &self.info("auto-rollback", &comment)))
        {
            Ok(g) => g,
            Err(e) => {
                self.shared.raise(
                    "confirm-expired",
                    Severity::Critical,
                    format!("generation {generation} was not confirmed and restoring generation {} failed: {e}", p.restore),
                );
                return;
            }
        };
        let _ = self.store(Store::clear_pending_confirm);
        *lock(&self.confirm_timer) = None;
        let result = self.apply(&restored, current.as_ref()).await;
        self.shared.raise(
            "confirm-expired",
            if result.is_ok() { Severity::Warning } else { Severity::Critical },
            format!(
                "generation {generation} was not confirmed in time; generation {} was restored as generation {}{}",
                p.restore,
                restored.meta.number,
                result.err().map(|e| format!(" but did not apply: {e}")).unwrap_or_default()
            ),
        );
        self.event(&comment);
    }

    /// Confirms the pending `commit confirmed`.
    pub async fn confirm(&self) -> Reply {
        let _guard = self.txn.lock().await;
        match self.take_pending() {
            Some(g) => {
                self.event(&format!("generation {g} confirmed"));
                Ok(json!({"confirmed": g}))
            }
            None => Err(Failure::new(
                "there is no commit waiting for confirmation",
                "`config commit confirmed 5m` starts one; `status` shows pending confirms",
            )),
        }
    }

    /// Commits generation `n`'s text again and applies it (restoring on failure).
    pub async fn rollback(self: &Arc<Self>, n: u64, author: &str, comment: &str) -> Reply {
        let text = self.store(|s| s.generation(n)).map_err(store_failure)?.text;
        let comment = if comment.is_empty() {
            format!("rollback to generation {n}")
        } else {
            format!("rollback to generation {n}: {comment}")
        };
        let mut reply = self.commit(Some(text), author, &comment, None).await?;
        reply["restores"] = json!(n);
        Ok(reply)
    }

    // ---- reads ----------------------------------------------------------------------------

    /// `status`: node, generation, pending confirm, services, VRRP roles, peer, sync, alarms.
    pub fn status(&self) -> Reply {
        let current = self.store(Store::load_current).ok();
        let pending = self.store(Store::pending_confirm).ok().flatten();
        let maintenance = self.shared.maintenance_record();
        Ok(json!({
            "node": self.opts.node,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "now_ms": now_ms(),
            "generation": current.as_ref().map(|g| json!({
                "number": g.meta.number,
                "fingerprint": g.meta.fingerprint,
                "author": g.meta.author,
                "time_ms": g.meta.time_ms,
                "comment": g.meta.comment,
            })),
            "pending_confirm": pending,
            "maintenance": self.shared.maintenance(),
            "maintenance_since_ms": maintenance.as_ref().map(|r| r.since_ms),
            "maintenance_by": maintenance.as_ref().map(|r| r.by.clone()),
            "services": self.shared.services(),
            "vrrp": self.shared.vrrp(),
            "peer": self.peer_summary(),
            "sync": self.sync.get().map(|h| h.snapshot()),
            "alarms": self.shared.alarms(),
        }))
    }

    /// `show history`: newest first, at most `limit`.
    pub fn history(&self, limit: usize) -> Reply {
        let mut h = self.store(Store::history).map_err(store_failure)?;
        h.truncate(limit);
        let current = self.store(Store::current_number).ok().flatten();
        Ok(json!({"current": current, "generations": h}))
    }

    /// `show config`: the text and the model of generation `n` (default: current).
    pub fn show_config(&self, n: Option<u64>) -> Reply {
        let g = match n {
            Some(n) => self.store(|s| s.generation(n)),
            None => self.store(Store::load_current),
        }
        .map_err(store_failure)?;
        Ok(json!({"generation": g.meta.number, "meta": g.meta, "text": g.text, "config": g.config}))
    }

    /// The candidate, or the current text when no candidate is being edited.
    pub fn candidate_get(&self) -> Reply {
        if let Some(text) = self.store(Store::candidate).map_err(store_failure)? {
            return Ok(json!({"source": "candidate", "text": text}));
        }
        match self.store(Store::load_current) {
            Ok(g) => Ok(json!({"source": "running", "generation": g.meta.number, "text": g.text})),
            Err(StoreError::Empty(_)) => Ok(json!({"source": "empty", "text": ""})),
            Err(e) => Err(store_failure(e)),
        }
    }

    /// Saves the candidate and reports whether it is valid (an invalid one is still saved).
    pub fn candidate_set(&self, text: &str) -> Reply {
        self.store(|s| s.set_candidate(text))
            .map_err(store_failure)?;
        Ok(match self.store(|s| s.validate(text)) {
            Ok(l) => {
                json!({"saved": true, "valid": true, "warnings": l.warnings.iter().map(ToString::to_string).collect::<Vec<_>>()})
            }
            Err(StoreError::Invalid(r)) => {
                json!({"saved": true, "valid": false, "error_count": r.error_count(), "diagnostics": diagnostics_json(&r)})
            }
            Err(e) => return Err(store_failure(e)),
        })
    }

    /// Discards the candidate.
    pub fn candidate_clear(&self) -> Reply {
        self.store(Store::clear_candidate).map_err(store_failure)?;
        Ok(json!({"cleared": true}))
    }

    fn text_or_candidate(&self, text: Option<String>) -> Result<String, Failure> {
        match text {
            Some(t) => Ok(t),
            None => self
                .store(Store::candidate)
                .map_err(store_failure)?
                .ok_or_else(|| {
                    Failure::new(
                        "there is no candidate",
                        "start one with `config edit` or `config load FILE`",
                    )
                }),
        }
    }

    /// Validates `text` (or the candidate).
    pub fn validate(&self, text: Option<String>) -> Reply {
        let text = self.text_or_candidate(text)?;
        let l = self.store(|s| s.validate(&text)).map_err(store_failure)?;
        Ok(
            json!({"valid": true, "warnings": l.warnings.iter().map(ToString::to_string).collect::<Vec<_>>()}),
        )
    }

    /// The changes from generation `against` (default: current) to `text` (or the candidate).
    pub fn diff(&self, text: Option<String>, against: Option<u64>) -> Reply {
        let text = self.text_or_candidate(text)?;
        let new = self.store(|s| s.validate(&text)).map_err(store_failure)?;
        let old = match against {
            Some(n) => self.store(|s| s.generation(n)),
            None => self.store(Store::load_current),
        };
        let (number, changes) = match old {
            Ok(g) => (
                Some(g.meta.number),
                tandem_config::diff(&g.config, &new.config),
            ),
            Err(StoreError::Empty(_)) => (None, Vec::new()),
            Err(e) => return Err(store_failure(e)),
        };
        Ok(
            json!({"against": number, "changes": changes, "text": tandem_config::diff::render(&changes)}),
        )
    }

    /// The last `lines` log lines of `service` (all when `None`).
    pub fn logs(&self, service: Option<&str>, lines: usize) -> Reply {
        const SERVICES: [&str; 3] = ["proxy", "vrrp", "supervisor"];
        if let Some(s) = service
            && !SERVICES.contains(&s)
        {
            return Err(Failure::new(
                format!("unknown service `{s}`"),
                format!("services: {}; none for all", SERVICES.join(", ")),
            ));
        }
        Ok(json!({"lines": self.shared.log_tail(service, lines.min(crate::state::LOG_LINES))}))
    }

    // ---- forwarded commands ----------------------------------------------------------------

    /// `server BACKEND/NAME drain|ready|maint|weight N`: forwarded to the proxy runtime API.
    pub async fn server(&self, request: &Value) -> Reply {
        let socket = self
            .store(Store::load_current)
            .map(|g| self.runtime_socket(&g.config))
            .map_err(store_failure)?;
        if !socket.exists() {
            return Err(Failure::new(
                format!(
                    "not available yet: the proxy runtime API is not listening on {}",
                    socket.display()
                ),
                "to change a server persistently, edit it in the configuration (`config edit`, set `state:` or `weight:`) and `config commit`",
            ));
        }
        // The proxy runtime API's `set server` (crates/proxy/src/api.rs): `server` is
        // `BACKEND/SERVER`, `state` is
        // ready|drain|maint, or `weight` 0..=256. Run-time only: the next commit or restart
        // returns to the configured values.
        let name = |k: &str| request.get(k).and_then(Value::as_str).unwrap_or("");
        let mut forwarded = json!({
            "cmd": "set server",
            "server": format!("{}/{}", name("backend"), name("server")),
        });
        match request.get("action").and_then(Value::as_str) {
            Some("weight") => {
                forwarded["weight"] = request.get("weight").cloned().unwrap_or(Value::Null)
            }
            Some(state @ ("ready" | "drain" | "maint")) => forwarded["state"] = json!(state),
            other => {
                return Err(Failure::new(
                    format!("unknown server action {other:?}"),
                    "use drain, ready, maint or weight N",
                ));
            }
        }
        let reply = ask(&socket, &forwarded)
            .await
            .map_err(|e| Failure::new(e, "check `status` and `logs proxy`"))?;
        if reply.get("ok") == Some(&Value::Bool(false)) {
            let e = reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            return Err(Failure::new(
                format!("the proxy refused: {e}"),
                "`show servers` lists backends and servers",
            ));
        }
        self.event(&format!(
            "server command forwarded to the proxy: {forwarded}"
        ));
        Ok(json!({"proxy": reply}))
    }

    /// The proxy runtime API's socket, or a failure saying the proxy is not running.
    fn proxy_socket(&self) -> Result<PathBuf, Failure> {
        let socket = self
            .store(Store::load_current)
            .map(|g| self.runtime_socket(&g.config))
            .map_err(store_failure)?;
        if !socket.exists() {
            return Err(proxy_down(format!(
                "the proxy runtime API is not listening on {}",
                socket.display()
            )));
        }
        Ok(socket)
    }

    /// One read-only request to the proxy runtime API; its reply when `ok`.
    async fn ask_proxy(&self, request: &Value) -> Result<Value, Failure> {
        let socket = self.proxy_socket()?;
        let reply = ask(&socket, request).await.map_err(proxy_down)?;
        if reply.get("ok") != Some(&Value::Bool(true)) {
            let e = reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            let cmd = request.get("cmd").and_then(Value::as_str).unwrap_or("");
            return Err(Failure::new(
                format!("the proxy refused `{cmd}`: {e}"),
                "`show servers` lists backends and servers; `logs proxy` shows the proxy's log",
            ));
        }
        Ok(reply)
    }

    /// `show_servers`: state and counters of every server (of `backend`), live from the proxy
    /// runtime API's `show servers`.
    pub async fn show_servers(&self, backend: Option<&str>) -> Reply {
        let mut request = json!({"cmd": "show servers"});
        if let Some(b) = backend {
            request["backend"] = json!(b);
        }
        let reply = self.ask_proxy(&request).await?;
        Ok(json!({"servers": reply.get("servers").cloned().unwrap_or(json!([]))}))
    }

    /// `show_stats`: counters of every frontend and backend, live from the proxy runtime API's
    /// `show frontends` and `show backends`.
    pub async fn show_stats(&self) -> Reply {
        let frontends = self.ask_proxy(&json!({"cmd": "show frontends"})).await?;
        let backends = self.ask_proxy(&json!({"cmd": "show backends"})).await?;
        Ok(json!({
            "frontends": frontends.get("frontends").cloned().unwrap_or(json!([])),
            "backends": backends.get("backends").cloned().unwrap_or(json!([])),
        }))
    }

    /// `failover`: planned switchover through the VRRP daemon.
    pub async fn failover(&self, instance: Option<&str>) -> Reply {
        if !self.is_started("vrrp") {
            return Err(Failure::new(
                "not available: no vrrp daemon runs on this node",
                "failover needs vrrp instances in the configuration and `--node NAME` on the supervisor; see `status`",
            ));
        }
        let mut req = json!({"cmd": "switchover"});
        if let Some(i) = instance {
            req["instance"] = json!(i);
        }
        let reply = ask(&self.opts.vrrp_socket, &req)
            .await
            .map_err(|e| Failure::new(e, "check `show vrrp` and `logs vrrp`"))?;
        if reply.get("ok") == Some(&Value::Bool(false)) {
            let e = reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            return Err(Failure::new(
                format!("the vrrp daemon refused the switchover: {e}"),
                "only the master of an instance can hand it over; `show vrrp` shows the roles",
            ));
        }
        self.event(&format!("planned switchover: {reply}"));
        Ok(json!({"vrrp": reply}))
    }
}

/// The proxy runtime API cannot be asked: `what` says why.
fn proxy_down(what: String) -> Failure {
    Failure::new(what, "the proxy is not running; see `tandemctl status`")
}

/// One request/response exchange on a line-delimited JSON Unix socket, bounded in time.
pub async fn ask(path: &Path, request: &Value) -> Result<Value, String> {
    let exchange = async {
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
        let mut line = request.to_string();
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("cannot write to {}: {e}", path.display()))?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader
            .read_line(&mut answer)
            .await
            .map_err(|e| format!("cannot read from {}: {e}", path.display()))?;
        serde_json::from_str::<Value>(&answer)
            .map_err(|e| format!("malformed answer from {}: {e}", path.display()))
    };
    tokio::time::timeout(PEER_SOCKET_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{} did not answer within {}s",
                path.display(),
                PEER_SOCKET_TIMEOUT.as_secs()
            ))
        })
}

impl Core {
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
