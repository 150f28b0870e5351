//! Liveness lock of the test process and the sweep of leftovers from dead test processes.
//!
//! Owns the naming scheme of testbed namespaces (`tandem-<pid>-<n>-...`) as far as parsing it
//! back, the per-process lock file `/run/tandem-testbed/<pid>.lock`, and [`sweep`]. It must only
//! ever delete namespaces whose owner is provably dead: a live owner holds an exclusive `flock`
//! on its lock file for its whole life, and the kernel drops that lock when the process dies,
//! even by SIGKILL. A pid alone is not proof (pids are reused), the lock is.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::netns;

/// Every namespace this crate creates starts with this.
pub(crate) const NS_PREFIX: &str = "tandem-";

/// Directory of the per-process lock files.
const LOCK_DIR: &str = "/run/tandem-testbed";

/// The lock held by this process for its whole life (never dropped; the kernel releases it at
/// exit). `Err` holds the errno of the failed step so every `Testbed::new` reports it.
static PROCESS_LOCK: OnceLock<std::result::Result<Flock<File>, (PathBuf, Errno)>> = OnceLock::new();

fn lock_path(pid: u32) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("{pid}.lock"))
}

/// Takes this process's liveness lock (once) and then sweeps leftovers of dead processes.
///
/// Must be called before this process creates any namespace.
pub(crate) fn ensure_process_lock_and_sweep() -> Result<()> {
    let lock = PROCESS_LOCK.get_or_init(|| {
        let lock = take_process_lock();
        if lock.is_ok() {
            // Namespaces named with our own pid cannot be ours yet (we create none before this
            // lock is held): they are leftovers of a dead process that had the same pid.
            sweep(true);
        }
        lock
    });
    if let Err((path, errno)) = lock {
        return Err(Error::Io {
            action: "lock",
            path: path.clone(),
            source: std::io::Error::from(*errno),
        });
    }
    sweep(false);
    Ok(())
}

fn take_process_lock() -> std::result::Result<Flock<File>, (PathBuf, Errno)> {
    let path = lock_path(std::process::id());
    let err = |e: std::io::Error| (path.clone(), Errno::from_raw(e.raw_os_error().unwrap_or(0)));
    std::fs::create_dir_all(LOCK_DIR).map_err(err)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    // Blocking is bounded in practice: a sweeper only holds another process's lock for the
    // instant it takes to test it.
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| (path.clone(), errno))
}

/// Whether the process with this pid holds its liveness lock.
fn owner_alive(pid: u32) -> bool {
    let Ok(file) = File::open(lock_path(pid)) else {
        // No lock file: its owner died and a sweeper already removed it.
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_free) => false,
        Err((_, Errno::EWOULDBLOCK)) => true,
        // Unknown state: be conservative and leave the namespaces alone.
        Err(_) => true,
    }
}

/// Parses the owner pid out of a testbed namespace name.
pub(crate) fn owner_pid(ns: &str) -> Option<u32> {
    ns.strip_prefix(NS_PREFIX)?.split('-').next()?.parse().ok()
}

/// Deletes namespaces (and kills their processes) left by dead test processes, then removes
/// their lock files. Errors are logged, never returned: a sweep must not fail a test.
///
/// With `own_pid_too`, namespaces carrying this process's pid are treated as dead leftovers;
/// that is only correct before this process created any namespace.
fn sweep(own_pid_too: bool) {
    let me = std::process::id();
    for ns in netns::list() {
        let Some(pid) = owner_pid(&ns) else { continue };
        let dead = if pid == me {
            own_pid_too
        } else {
            !owner_alive(pid)
        };
        if dead {
            tracing::info!(netns = %ns, owner_pid = pid, "sweeping leftover namespace of a dead test process");
            if let Err(e) = netns::destroy(&ns) {
                tracing::warn!(netns = %ns, cause = %e, "failed to sweep leftover namespace");
            }
        }
    }
    let Ok(dir) = std::fs::read_dir(LOCK_DIR) else {
        return;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".lock"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // A live pid may be a process between creating and locking its file: leave it.
        if pid == me || std::path::Path::new(&format!("/proc/{pid}")).exists() || owner_alive(pid) {
            continue;
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_testbed_names_only() {
        assert_eq!(owner_pid("tandem-1234-7-vrrp_failover-h-lb1"), Some(1234));
        assert_eq!(owner_pid("tandem-x-7"), None);
        assert_eq!(owner_pid("vrrp-lb1"), None);
        assert_eq!(owner_pid("tandem"), None);
    }
}
