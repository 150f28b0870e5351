//! `tandem-proxy`: the data plane of a Tandem node (HAProxy-class HTTP and TCP proxy).
//!
//! Owns: listeners, connections, forwarding, server selection with limits and queueing,
//! health checks, and reload of the compiled configuration ([`Plan`]).
//! Does not own: parsing or validating the YAML configuration (`tandem-config`), addresses
//! on interfaces (VRRP daemon), or talking to systemd (supervisor).
//!
//! Layout, request path first:
//! - [`proxy`]: [`Proxy`], accept loops, frontend `max_connections`, reload, shutdown;
//! - `accept`: PROXY header ([`proxy_protocol`]) and TLS handshake of a new client
//!   connection; [`tls`]: certificates, upstream TLS and the stream types;
//! - [`http`]/[`tcp`]: one client connection in `mode http` (HTTP/1.1 and HTTP/2 from
//!   clients, HTTP/1.1 to servers) / `mode tcp`;
//! - `journey`: one request's way to a server, the same for all three paths: route, pick,
//!   connect, retry, persistence, passive health;
//! - [`protect`]: per-source connection/request rate and concurrency (429, close);
//! - [`queue`]: picking a server and waiting for a slot; selection is `tandem-balance`
//!   (algorithms, health hysteresis, slow start, persistence), adapted in [`select`];
//! - [`live`]: atomics, health monitors, stick tables and pools keyed by identity, surviving
//!   reloads;
//! - [`health`]: active checks; [`plan`]: the immutable compiled view; [`error`](mod@error):
//!   classification;
//! - leaves the request path uses and that import none of it back: `stats` (counters),
//!   `pool` (idle server connections, the request body they carry), `deadline` (timers,
//!   the clock origin, the shutdown wait);
//! - [`handover`]: binary upgrade, listening sockets passed to a successor (`docs/upgrade.md`);
//!   [`unix`]: claiming the Unix socket paths without taking anything over;
//! - [`api`]: the runtime API (Unix socket, line-delimited JSON, `docs/runtime-api.md`);
//!   [`metrics`]: every metric name and the Prometheus endpoint; `access`: the access log.
//!
//! The binary calls [`run`] with a [`PlanSource`] and a shutdown future.

mod accept;
mod access;
pub mod api;
pub mod basic_auth;
pub mod body;
mod connect;
mod deadline;
pub mod error;
pub mod from_config;
#[doc(hidden)]
pub mod fuzz;
pub mod guard;
pub mod handover;
pub mod health;
pub mod http;
mod idle;
mod journey;
pub mod live;
pub mod metrics;
mod pass;
pub mod plan;
mod pool;
pub mod protect;
pub mod proxy;
pub mod proxy_protocol;
pub mod queue;
pub mod select;
mod stats;
pub mod tcp;
pub mod tls;
pub mod unix;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{error, info, warn};

pub use crate::error::{ProxyError, Side};
pub use crate::plan::Plan;
pub use crate::proxy::{Proxy, ReloadError};

/// How long shutdown waits for open connections to finish, in seconds.
pub const SHUTDOWN_GRACE_SECS: u64 = 10;

/// Why a configuration could not be turned into a [`Plan`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is unreadable or invalid (all problems, one per line).
    #[error("invalid configuration {path}:\n{problems}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: String,
    },
}

/// Where [`run`] gets its plan from, at start and on every SIGHUP.
pub trait PlanSource: Send + Sync {
    /// Reads and compiles the configuration.
    fn load(&self) -> Result<Plan, LoadError>;
}

impl<F: Fn() -> Result<Plan, LoadError> + Send + Sync> PlanSource for F {
    fn load(&self) -> Result<Plan, LoadError> {
        self()
    }
}

/// The node's configuration file, compiled for one node of the pair.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// Path of the YAML file.
    pub path: PathBuf,
    /// Node name, selecting per-node settings; `None` for a single node.
    pub node: Option<String>,
}

impl PlanSource for ConfigFile {
    fn load(&self) -> Result<Plan, LoadError> {
        let loaded = tandem_config::load(&self.path).map_err(|report| LoadError::Invalid {
            path: self.path.clone(),
            problems: report.to_string(),
        })?;
        for w in &loaded.warnings {
            tracing::warn!(warning = %w.message, line = w.line, key = %w.path, "configuration warning");
        }
        Plan::from_config_file(&loaded.config, self.node.as_deref(), &self.path).map_err(|errors| {
            LoadError::Invalid {
                path: self.path.clone(),
                problems: errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        })
    }
}

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The initial configuration could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The initial plan could not be installed.
    #[error(transparent)]
    Start(#[from] ReloadError),
    /// The SIGHUP handler could not be installed.
    #[error("failed to install the SIGHUP handler: {0}")]
    Signal(std::io::Error),
    /// Taking the listening sockets over from the running proxy failed.
    #[error(transparent)]
    Handover(#[from] handover::HandoverError),
    /// The runtime API socket path is taken (a live socket, another user's, not a socket).
    #[error("runtime api unavailable: {0}")]
    Api(api::ApiError),
}

/// Runs the proxy until `shutdown` completes; SIGHUP reloads from `source`.
///
/// An invalid configuration on SIGHUP is logged and refused; the old plan keeps serving.
/// On shutdown, listeners close and open connections get [`SHUTDOWN_GRACE_SECS`] to finish.
///
/// The runtime API (`runtime.socket`) and the metrics endpoint (`metrics.listen`) start with
/// the first plan; failing to open them is logged and the data plane serves anyway, except
/// that a fresh start refuses to run when something it must not replace occupies the API
/// socket path (a live socket: another proxy; another user's socket; a file that is not a
/// socket), before binding any frontend. Changing their settings needs a restart.
pub async fn run(
    source: impl PlanSource + 'static,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with(source, shutdown, handover::Options::default()).await
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard one, as every
/// connection is a file descriptor (two per proxied one); logs both. The limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            warn!(cause = %e, "cannot read the open file limit");
            return None;
        }
    };
    if soft >= hard {
        info!(soft, hard, "open file limit");
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            info!(
                soft_was = soft,
                soft = hard,
                hard,
                "raised the open file limit to the hard limit"
            );
            Some(hard)
        }
        Err(e) => {
            warn!(soft, hard, cause = %e, "cannot raise the open file limit");
            Some(soft)
        }
    }
}

/// Warns when the frontends' `max_connections` need more file descriptors than `limit`
/// (see `tandem_config::file_descriptors_needed`): connections beyond are refused (accept
/// fails) rather than queued.
fn warn_if_short_of_files(plan: &Plan, limit: Option<u64>) {
    let Some(limit) = limit else { return };
    let fes = plan.frontends();
    let unbounded = fes.iter().any(|f| f.max_connections.is_none());
    let connections: u64 = fes
        .iter()
        .map(|f| u64::from(f.max_connections.unwrap_or(0)))
        .sum();
    let listeners = fes.iter().map(|f| f.binds.len() as u64).sum();
    let checks = plan
        .backends()
        .iter()
        .filter(|b| b.health_check.is_some())
        .map(|b| b.servers.len() as u64)
        .sum();
    let need = tandem_config::file_descriptors_needed(connections, listeners, checks);
    if need > limit && !unbounded {
        warn!(
            need,
            limit,
            connections,
            "the frontends' max_connections need more open files than the limit allows"
        );
    }
}

/// [`run`] with upgrade settings: with `take_over`, the listening sockets come from the
/// running proxy (which then drains and exits); the handover socket (`serve`) lets a
/// successor do the same to this process, which then stops as on shutdown.
///
/// The configuration is loaded before contacting the running proxy: an invalid one fails
/// here and the running proxy never notices. Any failure before `READY` leaves it serving.
pub async fn run_with(
    source: impl PlanSource + 'static,
    shutdown: impl Future<Output = ()>,
    upgrade: handover::Options,
) -> Result<(), RunError> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(RunError::Signal)?;
    let source: std::sync::Arc<dyn PlanSource> = std::sync::Arc::new(source);
    let open_files = raise_open_file_limit();
    let first = source.load()?;
    warn_if_short_of_files(&first, open_files);
    let settings = first.settings.clone();
    // A fresh start claims the API socket before any frontend: a path it must not replace
    // stops it here. On a takeover the predecessor holds the socket until `DONE`.
    let mut api_socket = None;
    if let (Some(path), None) = (&settings.runtime_socket, &upgrade.take_over) {
        match api::bind(path) {
            Ok(bound) => api_socket = Some(bound),
            Err(e @ api::ApiError::Occupied(_)) => return Err(RunError::Api(e)),
            Err(e) => error!(cause = %e, "runtime api unavailable"),
        }
    }
    let proxy = match &upgrade.take_over {
        None => Proxy::start(first).await?,
        Some(path) => {
            let (predecessor, inherited) = handover::take_over(path).await?;
            let proxy = Proxy::start_with(first, inherited).await?;
            // Serving now: from here on a failure must not stop this process.
            if let Err(e) = predecessor.ready().await {
                warn!(cause = %e, "predecessor did not confirm the handover, serving anyway");
            }
            proxy
        }
    };
    info!(generation = proxy.generation(), "proxy started");
    // Aborted when `run` returns; each task owns its listener.
    let mut side_tasks = Vec::new();
    if let Some(path) = &settings.runtime_socket {
        let bound = match api_socket {
            Some(b) => Ok(b),
            None if upgrade.take_over.is_some() => api::bind(path),
            None => Err(api::ApiError::Unavailable),
        };
        match bound {
            Ok(b) => side_tasks.push(api::serve(
                proxy.clone(),
                b,
                Some(source.clone()),
                api::Access::from_system(),
            )),
            Err(api::ApiError::Unavailable) => {}
            Err(e) => error!(cause = %e, "runtime api unavailable"),
        }
    }
    if let Some(addr) = settings.metrics_listen {
        let auth = settings
            .metrics_auth
            .clone()
            .map(basic_auth::BasicAuth::new);
        match metrics::spawn_with(proxy.clone(), addr, auth).await {
            Ok((_, task)) => side_tasks.push(task),
            Err(e) => error!(listen = %addr, cause = %e, "metrics endpoint unavailable"),
        }
    }
    // Carries a successor's READY from the handover task; the reply releases it.
    let (handed_tx, mut handed_rx) = tokio::sync::mpsc::channel::<handover::HandedOver>(1);
    let handover_path = upgrade.serve.clone().or_else(|| {
        settings
            .runtime_socket
            .as_deref()
            .map(handover::default_path)
    });
    // Aborted when `run` returns, unless it ended after handing over.
    let mut handover_task = None;
    if let Some(path) = &handover_path {
        match handover::spawn(proxy.clone(), path, handed_tx) {
            Ok(task) => handover_task = Some(task),
            Err(e) => error!(cause = %e, "handover socket unavailable, upgrades need a restart"),
        }
    }
    let mut handed_over = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = handed_rx.recv() => {
                // The successor serves: release the side sockets for it, then drain.
                for t in side_tasks.drain(..) {
                    t.abort();
                    let _ = t.await;
                }
                let _ = done.send(());
                handed_over = true;
                info!("handed over to the successor, draining");
                break;
            }
            _ = hup.recv() => match source.load() {
                Ok(plan) => match proxy.reload(plan).await {
                    Ok(generation) => info!(generation, "reloaded on SIGHUP"),
                    Err(e) => error!(cause = %e, "reload refused, previous configuration keeps serving"),
                },
                Err(e) => error!(cause = %e, "reload refused, previous configuration keeps serving"),
            },
        }
    }
    info!("shutting down");
    // Awaited: a task's sockets are closed (and the API socket unlinked) when it ends.
    for t in side_tasks {
        t.abort();
        let _ = t.await;
    }
    if let Some(t) = handover_task {
        if handed_over {
            // Lets `DONE` go out; the task ends right after it.
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        } else {
            t.abort();
        }
    }
    proxy
        .shutdown(Duration::from_secs(SHUTDOWN_GRACE_SECS))
        .await;
    Ok(())
}
