//! How the supervisor runs: the [`Options`] the binary's flags give (`tandem supervisor`).
//!
//! Owns only the shape of the options; must not read flags or the environment itself.

use std::path::PathBuf;
use std::time::Duration;

use crate::child;

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
    /// [`crate::Core::runtime_socket`].
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
    /// How often the traffic recorder samples the proxy (`--history-interval`; default
    /// [`crate::recorder::DEFAULT_INTERVAL`], shorter in tests).
    pub history_interval: Duration,
}
