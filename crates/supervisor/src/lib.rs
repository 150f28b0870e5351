//! `tandem-supervisor`: the supervisor of a Tandem node (`tandem supervisor --data-dir DIR`).
//!
//! Owns the node: it starts the proxy and the VRRP daemon as child processes and restarts
//! them ([`child`]), keeps maintenance mode ([`maintenance`]), runs config sync with the peer in-process ([`sync`], `tandem-sync`), holds the node state ([`state`]), runs
//! configuration transactions over the store ([`core`], [`apply`]), serves the control socket
//! `tandemctl` talks to ([`control`]) and reports readiness to systemd ([`notify`]); with
//! `--firewall` it also generates and loads the host firewall at every apply ([`firewall`]).
//! Must not parse configuration itself (`tandem-config`), write config files except through
//! the store (`tandem-store`), or change addresses on interfaces (the VRRP daemon does).
//! See `LIFECYCLE.md` for start-up, transactions, restarts and how config sync plugs in.

pub mod apply;
pub mod child;
pub mod control;
pub mod core;
pub mod firewall;
pub mod maintenance;
pub mod notify;
pub mod splitbrain;
pub mod state;
pub mod sync;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tandem_store::{Store, StoreError};
use tracing::info;

pub use crate::core::{Core, Options};

/// Default path of the control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/tandem/supervisor.sock";
/// Default path of the VRRP daemon's control socket (`tandem-vrrpd`'s default).
pub const DEFAULT_VRRP_SOCKET: &str = "/run/tandem/vrrp.sock";

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The configuration store could not be opened.
    #[error("failed to open the configuration store: {0}")]
    Store(#[from] StoreError),
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
    let store = Store::open(&opts.data_dir)?;
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
