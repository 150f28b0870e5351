//! Who may use a local control socket: the caller's credentials (SO_PEERCRED) against two
//! groups, resolved by name when the caller connects.
//!
//! Root and members of the admin group (`tandem-admin`) get every command; members of the
//! monitor group (`tandem-monitor`) get the read commands only; everyone else is refused with
//! an error that says which groups give access. A group that does not exist gives nothing, so
//! on a node without the groups only root gets in. Membership counts the caller's primary
//! group and its supplementary groups as the kernel has them (`/proc/PID/status`), falling
//! back to the group database when the process is gone.
//!
//! Owns the policy ([`decide`], pure) and reading the credentials ([`Peer::of`]). Must not
//! know commands: the socket server says which of its commands are reads. The VRRP daemon's
//! control socket applies the same rules (`crates/vrrpd/src/control.rs`, a copy: the daemon
//! does not depend on the supervisor).

use nix::unistd::{Gid, Group, Uid, User};

/// The group of full access.
pub const ADMIN_GROUP: &str = "tandem-admin";
/// The group of read-only access.
pub const MONITOR_GROUP: &str = "tandem-monitor";

/// The groups that give access (their names; tests use groups the host has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    /// Full access.
    pub admin: String,
    /// Read commands only.
    pub monitor: String,
}

impl Default for Groups {
    fn default() -> Groups {
        Groups {
            admin: ADMIN_GROUP.into(),
            monitor: MONITOR_GROUP.into(),
        }
    }
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Read commands only.
    Monitor,
    /// Everything.
    Admin,
}

/// The process at the other end of a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id (0 when unknown).
    pub pid: u32,
    /// Login name, or `uid N`.
    pub name: String,
    /// Every group id of the process (primary and supplementary).
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of the process connected on `stream`.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        let (uid, gid) = (cred.uid(), cred.gid());
        let pid = cred.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let name = user
            .as_ref()
            .map_or_else(|| format!("uid {uid}"), |u| u.name.clone());
        let mut groups = proc_groups(pid).unwrap_or_else(|| {
            // The process is gone or /proc is not there: what the group database says.
            user.as_ref()
                .and_then(|u| {
                    let name = std::ffi::CString::new(u.name.as_bytes()).ok()?;
                    nix::unistd::getgrouplist(&name, Gid::from_raw(gid)).ok()
                })
                .map(|g| g.into_iter().map(Gid::as_raw).collect())
                .unwrap_or_default()
        });
        groups.push(gid);
        groups.sort_unstable();
        groups.dedup();
        Ok(Peer {
            uid,
            gid,
            pid,
            name,
            groups,
        })
    }
}

/// The supplementary groups of process `pid` (`Groups:` of `/proc/PID/status`).
fn proc_groups(pid: u32) -> Option<Vec<u32>> {
    if pid == 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

/// The gid of group `name`, if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The access of `peer`, given the gids the two groups resolve to (`None`: no such group);
/// the refusal message when it has none.
pub fn decide(
    peer: &Peer,
    groups: &Groups,
    admin_gid: Option<u32>,
    monitor_gid: Option<u32>,
) -> Result<Access, String> {
    let member = |gid: Option<u32>| gid.is_some_and(|g| peer.groups.contains(&g));
    if peer.uid == 0 || member(admin_gid) {
        return Ok(Access::Admin);
    }
    if member(monitor_gid) {
        return Ok(Access::Monitor);
    }
    let missing: Vec<&str> = [
        (admin_gid, groups.admin.as_str()),
        (monitor_gid, groups.monitor.as_str()),
    ]
    .into_iter()
    .filter(|(g, _)| g.is_none())
    .map(|(_, n)| n)
    .collect();
    let note = match missing.as_slice() {
        [] => String::new(),
        [one] => format!(" (group {one} does not exist on this node)"),
        _ => " (neither group exists on this node: only root has access)".into(),
    };
    Err(format!(
        "permission denied: {} (uid {}) is not root and not in group {} (full access) or {} (read-only){note}",
        peer.name, peer.uid, groups.admin, groups.monitor
    ))
}

/// [`decide`] with the groups resolved now (they may be created while the daemon runs).
pub fn check(peer: &Peer, groups: &Groups) -> Result<Access, String> {
    decide(
        peer,
        groups,
        group_id(&groups.admin),
        group_id(&groups.monitor),
    )
}

/// The refusal of a command that is not a read, for a monitor-group caller.
pub fn read_only(peer: &Peer, cmd: &str, groups: &Groups, reads: &[&str]) -> String {
    format!(
        "permission denied: `{cmd}` changes the node and needs group {} or root; {} has read-only access (group {}: {})",
        groups.admin,
        peer.name,
        groups.monitor,
        reads.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid: groups.first().copied().unwrap_or(uid),
            pid: 1,
            name: format!("u{uid}"),
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_admins_monitors_and_the_rest() {
        let g = Groups::default();
        let (admin, monitor) = (Some(900), Some(901));
        assert_eq!(
            decide(&peer(0, &[0]), &g, admin, monitor),
            Ok(Access::Admin)
        );
        assert_eq!(
            decide(&peer(1000, &[1000, 900]), &g, admin, monitor),
            Ok(Access::Admin)
        );
        assert_eq!(
            decide(&peer(1000, &[901]), &g, admin, monitor),
            Ok(Access::Monitor)
        );
        // Both: the larger access.
        assert_eq!(
            decide(&peer(1000, &[901, 900]), &g, admin, monitor),
            Ok(Access::Admin)
        );
        let e = decide(&peer(1000, &[1000]), &g, admin, monitor).unwrap_err();
        assert_eq!(
            e,
            "permission denied: u1000 (uid 1000) is not root and not in group tandem-admin (full access) or tandem-monitor (read-only)"
        );
    }

    #[test]
    fn missing_groups_leave_only_root() {
        let g = Groups::default();
        assert_eq!(decide(&peer(0, &[0]), &g, None, None), Ok(Access::Admin));
        let e = decide(&peer(1000, &[1000]), &g, None, None).unwrap_err();
        assert!(
            e.ends_with("(neither group exists on this node: only root has access)"),
            "{e}"
        );
        let e = decide(&peer(1000, &[1000]), &g, Some(900), None).unwrap_err();
        assert!(
            e.ends_with("(group tandem-monitor does not exist on this node)"),
            "{e}"
        );
    }

    #[test]
    fn proc_groups_of_this_process() {
        let mine = proc_groups(std::process::id()).expect("/proc/self/status");
        let want: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        assert_eq!(mine, want);
    }
}
