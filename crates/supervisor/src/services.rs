//! The services of the node as the transactions see them: the proxy and the VRRP daemon as
//! child processes (`child`), started, reloaded, restarted, stopped and checked for a
//! generation.
//!
//! Owns the table of running children and what the proxy logged about its sockets; [`Children`]
//! is the seam the transaction code (`transaction.rs`) drives, with [`Services`] the real
//! implementation and a fake in the transaction tests. Must not commit generations or write
//! `running.yaml` (the transaction does, before it calls [`Children::apply`]), nor spawn
//! processes itself (`child`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use tandem_config::Config;
use tandem_store::{Generation, Store};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::apply::{self, ProxyLog};
use crate::ask::ask;
use crate::child::{self, ChildCmd, ChildHandle, ChildSpec};
use crate::options::Options;
use crate::sockets::{
    ALARM_HANDOVER, ALARM_RUNTIME_API, LoggedCauses, PROBE_WINDOW, handover_socket, runtime_socket,
};
use crate::state::{ChildEvent, ServiceState, Severity, Shared, lock};

/// A boxed future, for the object-safe [`Children`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a transaction asks of the node's services.
pub trait Children: Send + Sync {
    /// Brings the services to generation `next` (coming from `prev`, if any) and checks them:
    /// `running.yaml` already holds `next`. `Err` says what failed; the transaction then
    /// restores the previous generation.
    fn apply<'a>(
        &'a self,
        next: &'a Generation,
        prev: Option<&'a Generation>,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Whether `service` (`proxy`, `vrrp`) is one of this node's services now.
    fn is_started(&self, service: &str) -> bool;
    /// Starts the background watchers (at boot).
    fn watch(self: Arc<Self>);
    /// Stops every service.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// The real services: child processes of the `tandem` binary.
pub struct Services {
    opts: Options,
    shared: Arc<Shared>,
    store: Arc<Mutex<Store>>,
    children: Mutex<BTreeMap<&'static str, ChildHandle>>,
    /// What the running proxy logged about its runtime API and handover sockets.
    proxy_causes: Mutex<LoggedCauses>,
}

impl Children for Services {
    fn apply<'a>(
        &'a self,
        next: &'a Generation,
        prev: Option<&'a Generation>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.apply_proxy(next, prev).await?;
            self.apply_vrrp(next, prev).await
        })
    }

    fn is_started(&self, service: &str) -> bool {
        Services::is_started(self, service)
    }

    fn watch(self: Arc<Self>) {
        Services::watch(self);
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.stop_all())
    }
}

impl Services {
    /// The services of a node run with `opts`, reading the store's `running.yaml`.
    pub fn new(opts: Options, shared: Arc<Shared>, store: Arc<Mutex<Store>>) -> Services {
        Services {
            opts,
            shared,
            store,
            children: Mutex::default(),
            proxy_causes: Mutex::default(),
        }
    }

    fn store<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&lock(&self.store))
    }

    fn event(&self, message: &str) {
        self.shared.event(message);
    }

    fn watch(self: Arc<Self>) {
        let shared = Arc::clone(&self.shared);
        let mut events = shared.events.subscribe();
        let weak = Arc::downgrade(&self);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ChildEvent::Line {
                        service: "proxy",
                        line,
                    }) => match apply::parse_proxy_line(&line) {
                        Some(ProxyLog::Started) => {
                            shared.service("proxy", |s| s.healthy = Some(true));
                            let Some(services) = weak.upgrade() else {
                                return;
                            };
                            services.proxy_logged(|c| *c = Default::default());
                            // Also after a restart the transaction code did not ask for.
                            tokio::spawn(async move { services.check_proxy_sockets().await });
                        }
                        Some(ProxyLog::RuntimeApiUnavailable(cause)) => {
                            let Some(services) = weak.upgrade() else {
                                return;
                            };
                            services.proxy_logged(|c| c.runtime_api = Some(cause));
                        }
                        Some(ProxyLog::HandoverUnavailable(cause)) => {
                            let Some(services) = weak.upgrade() else {
                                return;
                            };
                            services.proxy_logged(|c| c.handover = Some(cause));
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
    }

    /// Stops every child (SIGTERM to each group, SIGKILL after the grace period).
    async fn stop_all(&self) {
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

    pub(crate) fn is_started(&self, service: &str) -> bool {
        lock(&self.children).contains_key(service)
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

    async fn apply_proxy(
        &self,
        next: &Generation,
        prev: Option<&Generation>,
    ) -> Result<(), String> {
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
                // The runtime API answers the reload; it serves where the running proxy
                // started it (the previous generation's `runtime.socket`). Without it, SIGHUP
                // and the proxy's log line, as before.
                let api =
                    prev.map(|p| runtime_socket(&p.config.runtime.socket, &self.opts.run_dir));
                let answer = match &api {
                    Some(socket) => apply::reload_over_api(socket).await,
                    None => apply::ApiReload::Unavailable("no previous generation".into()),
                };
                match answer {
                    apply::ApiReload::Reloaded => {}
                    apply::ApiReload::Failed(why) => return Err(why),
                    apply::ApiReload::NoAnswer(why) => {
                        info!(cause = %why, "the runtime api did not answer the reload, waiting for the proxy");
                        apply::wait_proxy_ack(&mut events, true).await?;
                    }
                    apply::ApiReload::Unavailable(why) => {
                        info!(cause = %why, "reloading the proxy by SIGHUP: its runtime api cannot reload");
                        match self.signal("proxy", Signal::SIGHUP).await {
                            Ok(_) => apply::wait_proxy_ack(&mut events, true).await?,
                            Err(_) => apply::wait_proxy_ack(&mut events, false).await?,
                        }
                    }
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

    /// Records what the proxy logged about its sockets (`None` resets: a new process).
    pub(crate) fn proxy_logged(&self, f: impl FnOnce(&mut LoggedCauses)) {
        f(&mut lock(&self.proxy_causes));
    }

    /// Checks the proxy's runtime API (a `show frontends` must answer `ok` within
    /// [`PROBE_WINDOW`]) and its handover socket (a socket file must exist), and raises or
    /// clears [`ALARM_RUNTIME_API`] and [`ALARM_HANDOVER`]. Run after every proxy start and
    /// reload. Does nothing while no configuration is committed.
    pub(crate) async fn check_proxy_sockets(&self) {
        let Ok(current) = self.store(Store::load_current) else {
            return;
        };
        let socket = runtime_socket(&current.config.runtime.socket, &self.opts.run_dir);
        let deadline = tokio::time::Instant::now() + PROBE_WINDOW;
        let problem = loop {
            let err = match ask(
                &socket,
                &serde_json::to_value(tandem_control::runtime::Request::ShowFrontends)
                    .unwrap_or_default(),
            )
            .await
            {
                Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => break None,
                Ok(v) => format!("it answered {v}"),
                Err(e) => e,
            };
            // The proxy's own reason (it could not bind) beats what a connect says.
            if let Some(cause) = lock(&self.proxy_causes).runtime_api.clone() {
                break Some(cause);
            }
            if tokio::time::Instant::now() >= deadline {
                break Some(err);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match problem {
            None => self.shared.clear(ALARM_RUNTIME_API),
            Some(cause) => {
                warn!(socket = %socket.display(), %cause, "proxy runtime api unavailable");
                self.shared.raise(
                    ALARM_RUNTIME_API,
                    Severity::Warning,
                    format!(
                        "the proxy runtime API on {} is unavailable: {cause}; `show servers`, `show stats`, `server ...`, config sync of persistence and rates, and vrrp `track.proxy` cannot work; check `runtime.socket` and the run directory {}",
                        socket.display(),
                        self.opts.run_dir.display()
                    ),
                );
            }
        }
        let handover = handover_socket(&socket);
        let is_socket = std::fs::symlink_metadata(&handover)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
        if is_socket {
            self.shared.clear(ALARM_HANDOVER);
        } else {
            let cause = lock(&self.proxy_causes)
                .handover
                .clone()
                .unwrap_or_else(|| "no socket there".into());
            self.shared.raise(
                ALARM_HANDOVER,
                Severity::Warning,
                format!(
                    "the proxy handover socket {} is unavailable: {cause}; a proxy binary upgrade needs a restart (connections are cut)",
                    handover.display()
                ),
            );
        }
    }
}
