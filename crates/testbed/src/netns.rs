//! Low-level namespace plumbing: running `ip`, creating and deleting named network namespaces,
//! finding and killing the processes inside one, and entering one from the current thread.
//!
//! Owns every invocation of `ip` (iproute2) in this crate and the `/run/netns` conventions.
//! It knows nothing about testbeds, hosts or segments and never decides *what* to create;
//! it must not touch namespaces it was not given by name.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Where `ip netns add` bind-mounts named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// How long teardown waits for killed processes to leave a namespace.
const KILL_WAIT: Duration = Duration::from_secs(3);

/// Serialises `ip netns add/del` inside this process.
///
/// The first `ip netns add` on a machine makes `/run/netns` a shared mount; concurrent first
/// calls can race on that, so we never run two at once from one process (and retry across
/// processes, see [`add`]).
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Path of the bind mount of a named namespace.
pub(crate) fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Runs `ip <args>`, in namespace `netns` when given (`ip -n <netns> <args>`), and returns stdout.
///
/// A non-zero exit becomes [`Error::Command`] with the command line, namespace and stderr.
pub(crate) fn ip(netns: Option<&str>, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(args);
    let command = render(&cmd);
    let where_ = netns.unwrap_or("root").to_owned();
    tracing::trace!(netns = %where_, %command, "run");
    let out = cmd.output().map_err(|source| Error::Spawn {
        command: command.clone(),
        netns: where_.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            netns: where_,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Renders a command line for error messages and logs.
pub(crate) fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Creates the named namespace with loopback up and IPv6 disabled.
///
/// IPv6 is off so the wire only carries what a test sends (no router solicitations, MLD or
/// DAD); the brief restricts tests to 198.18.0.0/15 anyway.
pub(crate) fn add(name: &str) -> Result<()> {
    {
        // The lock only serialises; a poisoned lock still serialises, so ignore poisoning.
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut attempt = 0;
        loop {
            attempt += 1;
            match ip(None, &["netns", "add", name]) {
                Ok(_) => break,
                // Another process may be racing on the first-time /run/netns setup: retry a
                // bounded number of times.
                Err(e) if attempt < 3 && !path(name).exists() => {
                    tracing::debug!(netns = name, cause = %e, attempt, "netns add failed, retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
    ip(Some(name), &["link", "set", "lo", "up"])?;
    run_in(name, "sysctl", || {
        // Ignore failures: a kernel without IPv6 has no such files, and that is what we want.
        for f in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6"), "1");
        }
    })?;
    Ok(())
}

/// Kills every process in the named namespace (never this process) and deletes the name.
///
/// Best effort and bounded in time; returns the first error but always tries every step.
pub(crate) fn destroy(name: &str) -> Result<()> {
    kill_all(name);
    let _guard = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    match ip(None, &["netns", "del", name]) {
        Ok(_) => Ok(()),
        Err(_) if !path(name).exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// SIGKILLs the processes whose network namespace is `name`, waiting at most [`KILL_WAIT`].
fn kill_all(name: &str) {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pids = pids_in(name);
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            tracing::debug!(netns = name, pid, "killing leftover process");
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if Instant::now() >= deadline {
            tracing::warn!(netns = name, ?pids, "processes still alive after SIGKILL");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of the live processes whose network namespace is the named one, excluding this process.
///
/// Compares the nsfs inode of `/proc/<pid>/ns/net` with the bind mount in `/run/netns`, which is
/// what `ip netns pids` does. Zombies have no namespace links and are not listed.
pub(crate) fn pids_in(name: &str) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(path(name)) else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// Names in `/run/netns` (what `ip netns list` shows).
pub(crate) fn list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Runs `f` on a fresh thread that first enters the named network namespace; returns its value.
///
/// The calling thread never changes namespace. A panic in `f` is resumed on the caller, so an
/// assertion failing inside a host fails the test like any other.
pub(crate) fn run_in<T: Send>(name: &str, label: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(format!("netns:{label}"))
            .spawn_scoped(scope, || enter_and(name, f))
            .map_err(|source| Error::Thread {
                host: label.to_owned(),
                source,
            })?;
        match handle.join() {
            Ok(r) => r,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// Moves the *current thread* into the named network namespace, then runs `f`.
///
/// Only the calling thread changes namespace (`setns(CLONE_NEWNET)` is per thread), so callers
/// must run this on a thread they own and drop afterwards, never on a shared pool thread.
pub(crate) fn enter_and<T>(name: &str, f: impl FnOnce() -> T) -> Result<T> {
    enter(name)?;
    Ok(f())
}

/// Moves the *current thread* into the named network namespace (see [`enter_and`]).
pub(crate) fn enter(name: &str) -> Result<()> {
    let setns_err = |source| Error::Setns {
        netns: name.to_owned(),
        source,
    };
    let file = File::open(path(name)).map_err(setns_err)?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|e| setns_err(std::io::Error::from(e)))
}
