//! Test hosts in network namespaces for Tandem's network tests.
//!
//! This crate owns building small LANs out of Linux network namespaces, bridges and veth pairs
//! for tests, running code and processes inside them, and removing all of it afterwards.
//! It must not touch anything it did not create: the root namespace gets no links, and only
//! namespaces named `tandem-<pid>-...` are ever deleted (by their owner, or by the sweep once
//! that owner is provably dead). It is a test library: it needs root and shells out to `ip`.
//!
//! # Example
//!
//! ```no_run
//! use std::net::{TcpListener, TcpStream};
//! use tandem_testbed::{Testbed, require_root};
//!
//! # fn main() -> Result<(), tandem_testbed::Error> {
//! if !require_root() {
//!     return Ok(());
//! }
//! let bed = Testbed::new("example")?;
//! let lan = bed.segment("lan")?;
//! let a = bed.host("a")?;
//! let b = bed.host("b")?;
//! a.attach(&lan, "eth1", "198.18.0.1/24")?;
//! b.attach(&lan, "eth1", "198.18.0.2/24")?;
//! // Sockets belong to the namespace they were created in, whichever thread uses them later.
//! let listener = a.run(|| TcpListener::bind("198.18.0.1:7000"))?.expect("bind");
//! let stream = b.run(|| TcpStream::connect("198.18.0.1:7000"))?.expect("connect");
//! # drop((listener, stream));
//! b.link_down("eth1")?; // pull b's cable
//! # Ok(())
//! # }
//! ```
//!
//! # Contract
//!
//! **Root.** Everything needs root. Call [`require_root`] at the start of a test: it returns
//! `false` (and prints "skipped: ...") when not root so the test can return, but panics when
//! the `CI` environment variable is set, because CI runs as root and a silent skip there would
//! hide a broken setup. [`Testbed::new`] itself fails with [`Error::NotRoot`].
//!
//! **Naming.** A testbed gets a key `<pid>-<n>` (`n` counts testbeds in this process), so
//! testbeds never collide, whether tests run in parallel threads or in parallel processes.
//! Hosts live in namespace `tandem-<key>-<bed>-h-<host>`, segments in
//! `tandem-<key>-<bed>-s-<segment>`, holding bridge [`BRIDGE`]. Interface names are short and
//! only need to be unique inside their namespace: the host end is named as the test asks
//! (`eth1`), the switch end `p<n>-<host>` (cut to 15 bytes). Nothing is created in the root
//! namespace. Each host and switch has loopback up and IPv6 disabled (a quiet wire).
//!
//! **Addresses.** Only 198.18.0.0/15 with a prefix of at least /15 ([`Cidr`]); anything else is
//! rejected before anything is created, so tests cannot send traffic elsewhere.
//!
//! **Handles.** [`Host`] and [`Segment`] are cheap `Clone + Send + 'static` handles. They do not
//! own the namespaces: the [`Testbed`] does. After the testbed is gone every operation on a
//! handle fails with [`Error::TornDown`]. [`Process`] owns its child: dropping it SIGKILLs its
//! process group and reaps it (bounded).
//!
//! **Drop order.** Dropping the `Testbed` (also during a panic's unwind) or calling
//! [`Testbed::close`]: (1) marks it torn down, (2) for each host namespace, then each switch
//! namespace: SIGKILLs every process whose network namespace it is (bounded wait, never this
//! process) and deletes it, which also removes its veth ends, ports and bridge; (3) removes the
//! process log dir, unless the thread is panicking (then it is kept and its path printed).
//! `Process` handles that outlive the testbed find their process already killed and just reap
//! it. Sockets and threads that a test keeps inside a deleted namespace keep the kernel object
//! alive (unnamed, unreachable) until they are closed; the name is gone regardless.
//!
//! **SIGKILL of the test process.** Drop does not run, so namespaces and processes stay. Each
//! test process holds an exclusive `flock` on `/run/tandem-testbed/<pid>.lock` for its whole
//! life; the kernel releases it on any death. The next [`Testbed::new`] on the machine (in any
//! test process) sweeps every `tandem-<pid>-*` namespace whose owner's lock is free: it kills
//! the processes inside and deletes it. Spawned processes run in their own process group and so
//! survive a SIGKILLed test until that sweep. The lock file of a dead process is removed by a
//! later sweep; the process log dirs in the temp dir are left alone.
//!
//! **Bounds.** Every wait in this crate is bounded. Closures passed to [`Host::run`] and
//! [`Host::spawn_thread`] are the caller's: bound them with socket timeouts.

mod addr;
mod bed;
mod error;
mod netns;
mod process;
mod sweep;

pub use addr::{Cidr, IFNAME_MAX, TEST_NET, TEST_NET_PREFIX_LEN, in_test_net};
pub use bed::{Attach, BRIDGE, Host, HostThread, IfAddr, Segment, Testbed};
pub use error::{Error, Result};
pub use process::Process;

/// Message printed when a test skips for lack of root.
pub const SKIP_MESSAGE: &str = "skipped: needs root (network namespaces); CI runs as root";

/// Whether the calling test may use a testbed: `true` when running as root.
///
/// When not root it prints [`SKIP_MESSAGE`] (uncaptured, so it shows in `cargo test` output) and returns `false`, so the test can `return`; but
/// when the `CI` environment variable is set (to anything) it panics instead: CI runs as root,
/// and a test that silently skips there would hide a broken runner.
pub fn require_root() -> bool {
    let is_root = nix::unistd::geteuid().is_root();
    match decide(is_root, std::env::var_os("CI").is_some()) {
        Decision::Run => true,
        Decision::Skip => {
            // Written to the real stderr, not through `eprintln!`, which the test harness
            // captures and only shows for failed tests: a skip must be visible.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{SKIP_MESSAGE}");
            false
        }
        Decision::Fail => panic!(
            "testbed needs root (network namespaces) and CI is set: CI must run these tests as root, not skip them"
        ),
    }
}

/// What a test does given root and CI.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Run,
    Skip,
    Fail,
}

fn decide(is_root: bool, ci: bool) -> Decision {
    match (is_root, ci) {
        (true, _) => Decision::Run,
        (false, false) => Decision::Skip,
        (false, true) => Decision::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_decision_never_skips_in_ci() {
        assert_eq!(decide(true, false), Decision::Run);
        assert_eq!(decide(true, true), Decision::Run);
        assert_eq!(decide(false, false), Decision::Skip);
        assert_eq!(decide(false, true), Decision::Fail);
    }
}
