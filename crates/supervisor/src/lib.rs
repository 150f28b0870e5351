//! `tandem-supervisor`: the supervisor of a Tandem node (`tandem supervisor --data-dir DIR`).
//!
//! One owner, [`Core`] ([`core`]), holds the node's parts: the store, the node state
//! ([`state`]), the services it starts and restarts as child processes ([`services`] over
//! [`child`] and the apply checks in [`apply`]), maintenance mode ([`maintenance`]) and the
//! split-brain guard ([`splitbrain`]). The configuration transactions over the store are
//! [`transaction`], the read-only requests and the commands forwarded to the daemons [`query`],
//! with replies shaped by [`reply`] and requests to local daemons made by [`ask`]. It also
//! decides who may use its control socket ([`access`]), runs config sync with the peer
//! in-process ([`sync`], `tandem-sync`), watches the proxy's local sockets in the node's run
//! directory ([`sockets`]), serves the control socket `tandemctl` talks to ([`control`]) and
//! reports readiness to systemd ([`notify`]); with `--firewall` it also generates and loads the
//! host firewall at every apply ([`firewall`]). Flags arrive as [`Options`] ([`options`]).
//! Must not parse configuration itself (`tandem-config`), write config files except through
//! the store (`tandem-store`), or change addresses on interfaces (the VRRP daemon does).
//! See `LIFECYCLE.md` for start-up, transactions, restarts and how config sync plugs in.

pub mod access;
pub mod apply;
pub mod ask;
pub mod child;
pub mod control;
pub mod core;
pub mod firewall;
pub mod maintenance;
pub mod notify;
pub mod options;
pub mod query;
pub mod recorder;
pub mod reply;
pub mod services;
pub mod sockets;
pub mod splitbrain;
pub mod state;
pub mod sync;
pub mod transaction;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tandem_store::{Store, StoreError};
use tracing::info;

pub use crate::core::{Core, Options};

/// The node's run directory on the appliance (`--run-dir`); the sockets below are in it.
pub const DEFAULT_RUN_DIR: &str = "/run/tandem";
/// Default path of the control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/tandem/supervisor.sock";
/// Default path of the VRRP daemon's control socket (`tandem-vrrpd`'s default).
pub const DEFAULT_VRRP_SOCKET: &str = "/run/tandem/vrrp.sock";
/// Name of the control socket in the run directory.
pub const CONTROL_SOCKET_NAME: &str = "supervisor.sock";
/// Name of the VRRP daemon's control socket in the run directory.
pub const VRRP_SOCKET_NAME: &str = "vrrp.sock";

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The configuration store could not be opened.
    #[error("failed to open the configuration store: {0}")]
    Store(#[from] StoreError),
    /// The run directory is not one the configuration's `runtime.socket` rule accepts (its
    /// sockets would be refused by `tandem check`).
    #[error("run directory {path} cannot hold the proxy's runtime API: {why}")]
    RunDir {
        /// The run directory.
        path: PathBuf,
        /// What the `runtime.socket` rule says.
        why: String,
    },
    /// The control socket could not be bound.
    #[error("failed to bind the control socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The environment variable naming a crash point (tests only; see [`crash_point`]).
pub const CRASH_POINT_ENV: &str = "TANDEM_SUPERVISOR_CRASH_POINT";

/// A test hook: when `TANDEM_SUPERVISOR_CRASH_POINT` is `name`, the supervisor SIGKILLs
/// itself here, as a power cut or an OOM kill would stop it. Points: `after-commit` (a local
/// commit wrote the new generation and has not applied it yet). Unset on the appliance.
pub fn crash_point(name: &str) {
    if std::env::var_os(CRASH_POINT_ENV).is_some_and(|v| v == name) {
        tracing::error!(point = name, "crash point reached: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Runs the supervisor until `shutdown` completes, then stops the children.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), SupervisorError> {
    // A `runtime.socket` under /run/tandem is placed here (`sockets.rs`), and the rendered
    // configuration must pass the same rule as the committed one.
    if let Err(why) = tandem_config::run_dir_socket(&opts.run_dir.join("proxy.sock")) {
        return Err(SupervisorError::RunDir {
            path: opts.run_dir.clone(),
            why,
        });
    }
    let store = Store::open(&opts.data_dir)?;
    // The children bind their sockets here (the proxy does not create directories). Not
    // fatal: with explicit socket paths elsewhere the supervisor works without it, and a
    // proxy that cannot bind its runtime API raises `proxy-runtime-api`.
    if let Err(e) = std::fs::create_dir_all(&opts.run_dir) {
        tracing::warn!(run_dir = %opts.run_dir.display(), cause = %e, "cannot create the run directory");
    }
    let socket = opts.control_socket.clone();
    let listener = control::bind(&socket).map_err(|source| SupervisorError::Socket {
        path: socket.clone(),
        source,
    })?;
    let core = Core::new(opts, store);
    sync::start(&core);
    info!(socket = %socket.display(), "control socket listening");
    let server = tokio::spawn(control::serve(listener, Arc::clone(&core)));
    core.boot().await;
    notify::ready(&core.status_line());
    notify::spawn(Arc::downgrade(&core));
    shutdown.await;
    info!("supervisor stopping");
    notify::stopping();
    server.abort();
    core.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
