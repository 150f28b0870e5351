//! Who may use a local control socket: the caller's credentials (SO_PEERCRED) against two
//! groups.
//!
//! Root and members of the admin group (`tandem-admin`) get every command; members of the
//! monitor group (`tandem-monitor`) get the read commands only; everyone else is refused with
//! an error that says which groups give access. A group that does not exist gives nothing, so
//! on a node without the groups only root gets in. Membership counts the caller's primary
//! group and its supplementary groups as the kernel has them (`/proc/PID/status`), falling
//! back to the group database when the process is gone.
//!
//! Used by the supervisor's control socket, the VRRP daemon's control socket and the proxy
//! runtime API (which also admits its own user and resolves the groups once, at start).
//! Owns the policy ([`policy`], [`decide`], pure), reading a peer from its credentials
//! ([`Peer::from_cred`]) and the refusal texts. Must not know commands: each socket server
//! says which of its commands are reads; must not touch sockets (the servers read
//! SO_PEERCRED with their runtime and pass uid, gid and pid).

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

/// How a socket words its refusals. The two daemons' texts differ in details that are part
/// of their wire behaviour, so both are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    /// The supervisor's: notes each missing group; a read-only refusal names the monitor
    /// group.
    Full,
    /// The VRRP daemon's: notes missing groups only when both are missing; a read-only
    /// refusal lists the reads alone.
    Short,
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
    /// Every group id of the process (primary and supplementary), sorted.
    pub groups: Vec<u32>,
}

impl Peer {
    /// The peer with these credentials (from SO_PEERCRED): its name from the user database,
    /// its groups from `/proc/PID/status`, else from the group database.
    pub fn from_cred(uid: u32, gid: u32, pid: Option<i32>) -> Peer {
        let pid = pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
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
        Peer {
            uid,
            gid,
            pid,
            name,
            groups,
        }
    }

    /// Whether the peer is in group `gid` (`None`: a group that does not exist).
    pub fn in_group(&self, gid: Option<u32>) -> bool {
        gid.is_some_and(|g| self.groups.contains(&g))
    }
}

/// The supplementary groups of process `pid` (`Groups:` of `/proc/PID/status`).
pub fn proc_groups(pid: u32) -> Option<Vec<u32>> {
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

/// The policy: root and the admin group's members are admins, the monitor group's members
/// monitors, anyone else nothing (`None`). The gids are the groups' (`None`: no such group).
pub fn policy(peer: &Peer, admin_gid: Option<u32>, monitor_gid: Option<u32>) -> Option<Access> {
    if peer.uid == 0 || peer.in_group(admin_gid) {
        Some(Access::Admin)
    } else if peer.in_group(monitor_gid) {
        Some(Access::Monitor)
    } else {
        None
    }
}

/// The access of `peer` given the gids the two groups resolve to, or the refusal, worded as
/// [`Wording::Full`].
pub fn decide(
    peer: &Peer,
    groups: &Groups,
    admin_gid: Option<u32>,
    monitor_gid: Option<u32>,
) -> Result<Access, String> {
    decide_worded(peer, groups, admin_gid, monitor_gid, Wording::Full)
}

/// [`decide`] with the refusal worded as `wording` says.
pub fn decide_worded(
    peer: &Peer,
    groups: &Groups,
    admin_gid: Option<u32>,
    monitor_gid: Option<u32>,
    wording: Wording,
) -> Result<Access, String> {
    if let Some(access) = policy(peer, admin_gid, monitor_gid) {
        return Ok(access);
    }
    let missing: Vec<&str> = [
        (admin_gid, groups.admin.as_str()),
        (monitor_gid, groups.monitor.as_str()),
    ]
    .into_iter()
    .filter(|(g, _)| g.is_none())
    .map(|(_, n)| n)
    .collect();
    let note = match (missing.as_slice(), wording) {
        ([_, _], _) => " (neither group exists on this node: only root has access)".into(),
        ([one], Wording::Full) => format!(" (group {one} does not exist on this node)"),
        _ => String::new(),
    };
    Err(format!(
        "permission denied: {} (uid {}) is not root and not in group {} (full access) or {} (read-only){note}",
        peer.name, peer.uid, groups.admin, groups.monitor
    ))
}

/// [`decide_worded`] with the groups resolved now (they may be created while the daemon
/// runs).
pub fn check(peer: &Peer, groups: &Groups, wording: Wording) -> Result<Access, String> {
    decide_worded(
        peer,
        groups,
        group_id(&groups.admin),
        group_id(&groups.monitor),
        wording,
    )
}

/// The refusal of a command that is not a read, for a monitor-group caller ([`Wording::Full`]).
pub fn read_only(peer: &Peer, cmd: &str, groups: &Groups, reads: &[&str]) -> String {
    read_only_worded(&peer.name, cmd, groups, reads, Wording::Full)
}

/// [`read_only`] for the caller named `who`, worded as `wording` says.
pub fn read_only_worded(
    who: &str,
    cmd: &str,
    groups: &Groups,
    reads: &[&str],
    wording: Wording,
) -> String {
    let which = match wording {
        Wording::Full => format!("group {}: ", groups.monitor),
        Wording::Short => String::new(),
    };
    format!(
        "permission denied: `{cmd}` changes the node and needs group {} or root; {} has read-only access ({which}{})",
        groups.admin,
        who,
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
        // The VRRP daemon's wording notes only both missing.
        let e =
            decide_worded(&peer(1000, &[1000]), &g, Some(900), None, Wording::Short).unwrap_err();
        assert!(e.ends_with("or tandem-monitor (read-only)"), "{e}");
        let e = decide_worded(&peer(1000, &[1000]), &g, None, None, Wording::Short).unwrap_err();
        assert!(
            e.ends_with("(neither group exists on this node: only root has access)"),
            "{e}"
        );
    }

    #[test]
    fn read_only_refusals_in_both_wordings() {
        let g = Groups::default();
        let p = peer(1000, &[901]);
        assert_eq!(
            read_only(&p, "commit", &g, &["status", "logs"]),
            "permission denied: `commit` changes the node and needs group tandem-admin or root; u1000 has read-only access (group tandem-monitor: status, logs)"
        );
        assert_eq!(
            read_only_worded(
                &p.name,
                "switchover",
                &g,
                &["status", "watch"],
                Wording::Short
            ),
            "permission denied: `switchover` changes the node and needs group tandem-admin or root; u1000 has read-only access (status, watch)"
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

    #[test]
    fn this_process_as_a_peer() {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let p = Peer::from_cred(uid, gid, i32::try_from(std::process::id()).ok());
        assert!(p.groups.contains(&gid), "{p:?}");
        assert_eq!(p.uid, uid);
    }
}
