//! Who may use the supervisor's control socket: the shared policy of `tandem_control::access`
//! (root and group `tandem-admin` every command, group `tandem-monitor` the reads, groups
//! resolved by name when a caller connects), worded as the supervisor words its refusals.
//!
//! Owns reading the caller of a tokio stream ([`peer_of`]) and the supervisor's wording
//! ([`check`]). Must not know commands (`control` says which are reads) nor hold the policy
//! itself: the VRRP daemon and the proxy runtime API apply the same one from the same crate.

use tandem_control::access::{self, Wording};
pub use tandem_control::access::{
    ADMIN_GROUP, Access, Groups, MONITOR_GROUP, Peer, decide, group_id, read_only,
};

/// The credentials of the process connected on `stream` (SO_PEERCRED).
pub fn peer_of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    Ok(Peer::from_cred(cred.uid(), cred.gid(), cred.pid()))
}

/// [`decide`] with the groups resolved now (they may be created while the daemon runs).
pub fn check(peer: &Peer, groups: &Groups) -> Result<Access, String> {
    access::check(peer, groups, Wording::Full)
}
