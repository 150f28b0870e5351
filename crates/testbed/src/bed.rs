//! The testbed itself: [`Testbed`], its [`Segment`]s and [`Host`]s, and their teardown.
//!
//! Owns naming (namespace, bridge and port names), the registry of what a testbed created, the
//! per-host operations (attach, addresses, link state, sysctl, running code and processes) and
//! the teardown order. It shells out through `netns` only, and never touches a namespace, link
//! or process it did not create (or, via the sweep, that a dead test process created).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use crate::addr::{Cidr, check_chars, check_ifname, check_mac};
use crate::error::{Error, Result};
use crate::netns;
use crate::process::Process;
use crate::sweep::{self, NS_PREFIX};

/// Longest testbed name (it goes into namespace names, which are file names).
const BED_NAME_MAX: usize = 64;
/// Longest host or segment name.
const NODE_NAME_MAX: usize = 32;
/// Name of the bridge inside a segment's namespace.
pub const BRIDGE: &str = "br0";
/// How often bounded waits on addresses poll.
const POLL: Duration = Duration::from_millis(20);

/// Makes testbed keys unique within this process; the pid makes them unique across processes.
static NEXT_BED: AtomicU64 = AtomicU64::new(0);

/// A set of hosts and segments for one test; everything it created is removed when it drops.
///
/// See the crate documentation for the contract (naming, drop order, panics, SIGKILL).
#[derive(Debug)]
pub struct Testbed {
    inner: Arc<Inner>,
}

/// A layer-2 segment: a Linux bridge in its own "switch" namespace.
///
/// A cheap handle; cloning it does not create anything. The bridge lives until the `Testbed`
/// drops, whatever happens to the handle.
#[derive(Debug, Clone)]
pub struct Segment {
    bed: Arc<Inner>,
    name: String,
    netns: String,
}

/// A test host: a network namespace with loopback up, attached to segments by veth pairs.
///
/// A cheap handle (`Clone`, `Send`, `'static`) so it can move into threads; the namespace lives
/// until the `Testbed` drops, after which every operation fails with [`Error::TornDown`].
#[derive(Debug, Clone)]
pub struct Host {
    bed: Arc<Inner>,
    name: String,
    netns: String,
}

/// How to attach a host to a segment: interface name, addresses and an optional fixed MAC.
#[derive(Debug, Clone)]
pub struct Attach {
    ifname: String,
    addresses: Vec<String>,
    mac: Option<String>,
}

/// An IPv4 address as found on an interface (not restricted to the test range: `lo` has
/// 127.0.0.1/8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfAddr {
    /// The address.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
}

impl std::fmt::Display for IfAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A thread running inside a host's network namespace, from [`Host::spawn_thread`].
#[derive(Debug)]
pub struct HostThread<T> {
    handle: std::thread::JoinHandle<Option<T>>,
}

impl<T> HostThread<T> {
    /// Waits for the thread; `Err` carries its panic payload, like `JoinHandle::join`.
    ///
    /// The caller bounds the wait by bounding the work in the closure (socket timeouts).
    pub fn join(self) -> std::thread::Result<T> {
        match self.handle.join()? {
            Some(v) => Ok(v),
            // Only reached if entering the namespace failed, and then spawn_thread returned
            // that error instead of a HostThread; kept total rather than panicking.
            None => Err(Box::new(
                "host thread did not run: entering the namespace failed",
            )),
        }
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

#[derive(Debug)]
struct Inner {
    /// The readable name given by the test.
    name: String,
    /// `<pid>-<n>`: unique on this machine while this process lives.
    key: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    torn_down: bool,
    /// Host namespaces, in creation order.
    hosts: Vec<String>,
    /// Segment name -> (switch namespace, ports created so far).
    segments: HashMap<String, (String, u32)>,
    /// Segment namespaces, in creation order.
    segment_order: Vec<String>,
    /// (host name, ifname) -> (switch namespace, switch-side port name).
    links: HashMap<(String, String), (String, String)>,
    /// Counter for log file names.
    spawned: u64,
    /// Created lazily by the first `spawn`.
    log_dir: Option<PathBuf>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Poisoning only means a panic happened while the lock was held; the registry is still
        // the best knowledge of what to clean up, so keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, or [`Error::TornDown`].
    fn live(&self) -> Result<MutexGuard<'_, State>> {
        let st = self.state();
        if st.torn_down {
            return Err(Error::TornDown {
                bed: self.name.clone(),
            });
        }
        Ok(st)
    }

    fn ns_name(&self, kind: char, node: &str) -> String {
        format!("{NS_PREFIX}{}-{}-{kind}-{node}", self.key, self.name)
    }

    /// Kills and deletes everything; idempotent. Returns the first error, after trying all.
    fn teardown(&self) -> Result<()> {
        let (hosts, segments, log_dir) = {
            let mut st = self.state();
            if st.torn_down {
                return Ok(());
            }
            st.torn_down = true;
            (
                std::mem::take(&mut st.hosts),
                std::mem::take(&mut st.segment_order),
                st.log_dir.take(),
            )
        };
        tracing::info!(bed = %self.name, key = %self.key, hosts = hosts.len(), segments = segments.len(), "tearing down testbed");
        let mut first_err = None;
        // Hosts first: their processes die and their veth ends go, which removes the switch
        // ports with them; then the switches.
        for ns in hosts.iter().chain(segments.iter()) {
            if let Err(e) = netns::destroy(ns) {
                tracing::warn!(bed = %self.name, netns = %ns, cause = %e, "failed to delete namespace");
                first_err.get_or_insert(e);
            }
        }
        if let Some(dir) = log_dir {
            if std::thread::panicking() {
                tracing::warn!(bed = %self.name, dir = %dir.display(), "test panicked, keeping process logs");
                eprintln!(
                    "testbed {}: test panicked, process logs kept in {}",
                    self.name,
                    dir.display()
                );
            } else if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(bed = %self.name, dir = %dir.display(), cause = %e, "failed to remove log dir");
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Testbed {
    /// Creates an empty testbed named `name` (used in namespace names; `[A-Za-z0-9_.-]`, at most
    /// 64 bytes), after sweeping leftovers of dead test processes.
    ///
    /// Fails with [`Error::NotRoot`] when not root; tests should call
    /// [`require_root`](crate::require_root) first to skip cleanly.
    pub fn new(name: &str) -> Result<Self> {
        check_chars("testbed", name, BED_NAME_MAX)?;
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            return Err(Error::NotRoot {
                euid: euid.as_raw(),
            });
        }
        sweep::ensure_process_lock_and_sweep()?;
        let key = format!(
            "{}-{}",
            std::process::id(),
            NEXT_BED.fetch_add(1, Ordering::Relaxed)
        );
        tracing::info!(bed = name, %key, "testbed created");
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                key,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The name given to [`Testbed::new`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Creates a segment: namespace `tandem-<key>-<bed>-s-<name>` holding bridge `br0` with STP
    /// off, forward delay 0 and multicast snooping off (so VRRP multicast floods to all ports).
    pub fn segment(&self, name: &str) -> Result<Segment> {
        check_chars("segment", name, NODE_NAME_MAX)?;
        let ns = self.inner.ns_name('s', name);
        {
            let mut st = self.inner.live()?;
            if st.segments.contains_key(name) {
                return Err(Error::Duplicate {
                    kind: "segment",
                    name: name.to_owned(),
                    bed: self.inner.name.clone(),
                });
            }
            // Registered before creation, so a half-built segment is still torn down.
            st.segments.insert(name.to_owned(), (ns.clone(), 0));
            st.segment_order.push(ns.clone());
        }
        netns::add(&ns)?;
        netns::ip(
            Some(&ns),
            &[
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        netns::ip(Some(&ns), &["link", "set", BRIDGE, "up"])?;
        tracing::info!(bed = %self.inner.name, segment = name, netns = %ns, "segment created");
        Ok(Segment {
            bed: self.inner.clone(),
            name: name.to_owned(),
            netns: ns,
        })
    }

    /// Creates a host: namespace `tandem-<key>-<bed>-h-<name>` with loopback up and IPv6 off.
    pub fn host(&self, name: &str) -> Result<Host> {
        check_chars("host", name, NODE_NAME_MAX)?;
        let ns = self.inner.ns_name('h', name);
        {
            let mut st = self.inner.live()?;
            if st.hosts.contains(&ns) {
                return Err(Error::Duplicate {
                    kind: "host",
                    name: name.to_owned(),
                    bed: self.inner.name.clone(),
                });
            }
            st.hosts.push(ns.clone());
        }
        netns::add(&ns)?;
        tracing::info!(bed = %self.inner.name, host = name, netns = %ns, "host created");
        Ok(Host {
            bed: self.inner.clone(),
            name: name.to_owned(),
            netns: ns,
        })
    }

    /// Names of every namespace this testbed created and has not deleted yet.
    pub fn netns_names(&self) -> Vec<String> {
        let st = self.inner.state();
        st.hosts
            .iter()
            .chain(st.segment_order.iter())
            .cloned()
            .collect()
    }

    /// Directory of captured process output, once a process was spawned.
    ///
    /// Removed at teardown, except when the thread is panicking (then it is kept and printed).
    pub fn log_dir(&self) -> Option<PathBuf> {
        self.inner.state().log_dir.clone()
    }

    /// Tears down now and reports the first failure (drop does the same but can only log).
    pub fn close(self) -> Result<()> {
        self.inner.teardown()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(e) = self.inner.teardown() {
            tracing::warn!(bed = %self.inner.name, cause = %e, "testbed teardown incomplete");
        }
    }
}

impl Segment {
    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The switch namespace, e.g. for `ip netns exec <ns> tcpdump -i br0`.
    pub fn netns(&self) -> &str {
        &self.netns
    }
}

impl Attach {
    /// Attach with host-side interface `ifname` (at most 15 bytes), no address, random MAC.
    pub fn new(ifname: &str) -> Self {
        Self {
            ifname: ifname.to_owned(),
            addresses: Vec::new(),
            mac: None,
        }
    }

    /// Adds an address in CIDR form (`198.18.0.11/24`); must be inside 198.18.0.0/15.
    pub fn address(mut self, cidr: &str) -> Self {
        self.addresses.push(cidr.to_owned());
        self
    }

    /// Fixes the host-side MAC (`02:00:c6:12:00:0b`); must be unicast.
    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = Some(mac.to_owned());
        self
    }
}

impl Host {
    /// The host's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's namespace, e.g. for `ip netns exec <ns> ...`.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Connects this host to `segment` with interface `ifname` carrying address `cidr`.
    pub fn attach(&self, segment: &Segment, ifname: &str, cidr: &str) -> Result<()> {
        self.attach_with(segment, Attach::new(ifname).address(cidr))
    }

    /// Connects this host to `segment` as described by `attach`; the interface is up afterwards.
    ///
    /// Everything is validated before anything is created. The switch-side port is named
    /// `p<n>-<host>` (cut to 15 bytes) inside the segment's namespace.
    pub fn attach_with(&self, segment: &Segment, attach: Attach) -> Result<()> {
        let Attach {
            ifname,
            addresses,
            mac,
        } = attach;
        check_ifname(&ifname)?;
        let cidrs = addresses
            .iter()
            .map(|a| a.parse::<Cidr>())
            .collect::<Result<Vec<_>>>()?;
        if let Some(mac) = &mac {
            check_mac(mac)?;
        }
        if !Arc::ptr_eq(&self.bed, &segment.bed) {
            return Err(Error::ForeignSegment {
                segment: segment.name.clone(),
                segment_bed: segment.bed.name.clone(),
                bed: self.bed.name.clone(),
            });
        }
        let port = {
            let mut st = self.bed.live()?;
            let key = (self.name.clone(), ifname.clone());
            if st.links.contains_key(&key) {
                return Err(Error::Duplicate {
                    kind: "interface",
                    name: ifname,
                    bed: self.bed.name.clone(),
                });
            }
            let Some((_, ports)) = st.segments.get_mut(&segment.name) else {
                return Err(Error::TornDown {
                    bed: self.bed.name.clone(),
                });
            };
            let mut port = format!("p{ports}-{}", self.name);
            *ports += 1;
            port.truncate(crate::addr::IFNAME_MAX);
            port
        };
        let sw = segment.netns.as_str();
        let mut args = vec![
            "link",
            "add",
            port.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            ifname.as_str(),
        ];
        if let Some(mac) = &mac {
            args.extend(["address", mac.as_str()]);
        }
        args.extend(["netns", self.netns.as_str()]);
        netns::ip(Some(sw), &args)?;
        let configure = || -> Result<()> {
            netns::ip(
                Some(sw),
                &["link", "set", port.as_str(), "master", BRIDGE, "up"],
            )?;
            for cidr in &cidrs {
                netns::ip(
                    Some(&self.netns),
                    &["addr", "add", &cidr.to_string(), "dev", &ifname],
                )?;
            }
            netns::ip(Some(&self.netns), &["link", "set", &ifname, "up"])?;
            Ok(())
        };
        if let Err(e) = configure() {
            // Deleting one end of a veth pair deletes both.
            let _ = netns::ip(Some(sw), &["link", "del", port.as_str()]);
            return Err(e);
        }
        self.bed.state().links.insert(
            (self.name.clone(), ifname.clone()),
            (sw.to_owned(), port.clone()),
        );
        tracing::info!(
            bed = %self.bed.name, host = %self.name, %ifname, segment = %segment.name, %port,
            addresses = ?cidrs, ?mac, "host attached"
        );
        Ok(())
    }

    /// Adds an address (inside 198.18.0.0/15) to an interface of this host.
    pub fn add_address(&self, ifname: &str, cidr: &str) -> Result<()> {
        let cidr: Cidr = cidr.parse()?;
        check_ifname(ifname)?;
        self.ip(&["addr", "add", &cidr.to_string(), "dev", ifname])?;
        tracing::debug!(host = %self.name, ifname, %cidr, "address added");
        Ok(())
    }

    /// Removes an address from an interface of this host.
    pub fn del_address(&self, ifname: &str, cidr: &str) -> Result<()> {
        let cidr: Cidr = cidr.parse()?;
        check_ifname(ifname)?;
        self.ip(&["addr", "del", &cidr.to_string(), "dev", ifname])?;
        tracing::debug!(host = %self.name, ifname, %cidr, "address removed");
        Ok(())
    }

    /// The IPv4 addresses currently on `ifname` (any interface of the host, including `lo`).
    pub fn addresses(&self, ifname: &str) -> Result<Vec<IfAddr>> {
        check_ifname(ifname)?;
        let args = ["-j", "-4", "addr", "show", "dev", ifname];
        let out = self.ip(&args)?;
        parse_addresses(&out).map_err(|reason| Error::Parse {
            command: format!("ip -n {} {}", self.netns, args.join(" ")),
            netns: self.netns.clone(),
            reason,
        })
    }

    /// Whether `addr` is currently on `ifname` (with any prefix length).
    pub fn has_address(&self, ifname: &str, addr: Ipv4Addr) -> Result<bool> {
        Ok(self.addresses(ifname)?.iter().any(|a| a.addr == addr))
    }

    /// Waits at most `timeout` until `addr` is (`present = true`) or is not on `ifname`.
    pub fn wait_for_address(
        &self,
        ifname: &str,
        addr: Ipv4Addr,
        present: bool,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.has_address(ifname, addr)? == present {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let what = if present { "to appear" } else { "to disappear" };
                return Err(Error::Timeout {
                    what: format!("address {addr} on {}:{ifname} {what}", self.name),
                    after: timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Pulls the cable: sets the *switch-side* veth of `ifname` down.
    ///
    /// The host sees carrier loss (`NO-CARRIER`, operstate down) while its interface stays
    /// administratively up with its addresses and routes, like a real cable pull or a dead
    /// switch port. This is what a daemon watching link state must survive; prefer it for
    /// failover tests.
    pub fn link_down(&self, ifname: &str) -> Result<()> {
        let (sw, port) = self.link(ifname)?;
        netns::ip(Some(&sw), &["link", "set", &port, "down"])?;
        tracing::info!(host = %self.name, ifname, %port, "link down (switch side)");
        Ok(())
    }

    /// Plugs the cable back in: sets the switch-side veth of `ifname` up again.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        let (sw, port) = self.link(ifname)?;
        netns::ip(Some(&sw), &["link", "set", &port, "up"])?;
        tracing::info!(host = %self.name, ifname, %port, "link up (switch side)");
        Ok(())
    }

    /// Sets the *host-side* interface administratively down (`ip link set <ifname> down` in the
    /// host), like an operator would: the kernel drops the connected routes and the interface
    /// reports admin down, which software on the host sees differently from carrier loss.
    pub fn admin_down(&self, ifname: &str) -> Result<()> {
        check_ifname(ifname)?;
        self.ip(&["link", "set", ifname, "down"])?;
        tracing::info!(host = %self.name, ifname, "link down (host side, admin)");
        Ok(())
    }

    /// Sets the host-side interface administratively up again.
    ///
    /// Addresses survive admin down on IPv4; the connected routes come back with the link.
    pub fn admin_up(&self, ifname: &str) -> Result<()> {
        check_ifname(ifname)?;
        self.ip(&["link", "set", ifname, "up"])?;
        tracing::info!(host = %self.name, ifname, "link up (host side, admin)");
        Ok(())
    }

    /// Writes a per-namespace sysctl of this host, e.g. `("net.ipv4.ip_nonlocal_bind", "1")`.
    ///
    /// Only `net.` keys are accepted: other sysctls are global and would change the machine.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let invalid = |reason| Error::InvalidName {
            kind: "sysctl",
            name: key.to_owned(),
            reason,
        };
        let Some(rest) = key.strip_prefix("net.") else {
            return Err(invalid("only per-namespace net.* sysctls are allowed"));
        };
        if rest.split('.').any(|part| part.is_empty() || part == "..") || key.contains('/') {
            return Err(invalid("malformed key"));
        }
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))?
            .map_err(|source| Error::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
        tracing::debug!(host = %self.name, key, value, "sysctl set");
        Ok(())
    }

    /// Runs `f` on a fresh thread inside this host's network namespace and returns its result.
    ///
    /// Sockets created in `f` stay in the host's namespace wherever they are used afterwards,
    /// so `host.run(|| TcpListener::bind(..))` gives a listener to use from any thread (or to
    /// hand to tokio with `from_std`). Panics in `f` resume on the caller. `f` must bound its
    /// own blocking (socket timeouts): this call waits for it. `/sys` is not remounted, so read
    /// interface state with [`Host::addresses`] or netlink, not `/sys/class/net`.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        drop(self.bed.live()?);
        netns::run_in(&self.netns, &self.name, f)
    }

    /// Starts `f` on a new thread inside this host's network namespace (e.g. a server loop).
    ///
    /// Returns once the thread is inside the namespace. The thread is not stopped at teardown:
    /// bound its work (socket timeouts) and join it.
    pub fn spawn_thread<T, F>(&self, f: F) -> Result<HostThread<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        drop(self.bed.live()?);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let netns = self.netns.clone();
        let handle = std::thread::Builder::new()
            .name(format!("host:{}", self.name))
            .spawn(move || match netns::enter(&netns) {
                Ok(()) => {
                    let _ = tx.send(Ok(()));
                    Some(f())
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    None
                }
            })
            .map_err(|source| Error::Thread {
                host: self.name.clone(),
                source,
            })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(HostThread { handle }),
            Ok(Err(e)) => Err(e),
            // The thread died before reporting; the join shows why.
            Err(_) => match handle.join() {
                Err(payload) => std::panic::resume_unwind(payload),
                Ok(_) => Err(Error::Thread {
                    host: self.name.clone(),
                    source: std::io::Error::other("thread exited early"),
                }),
            },
        }
    }

    /// Spawns `cmd` in this host as leader of a new process group, stdin from `/dev/null`,
    /// stdout and stderr captured to files in the testbed's log dir ([`Process::stdout`]).
    pub fn spawn(&self, cmd: &mut Command) -> Result<Process> {
        let program = program_name(cmd);
        let (out_path, err_path) = self.log_paths(&program)?;
        let create = |p: &Path| {
            std::fs::File::create(p).map_err(|source| Error::Io {
                action: "create",
                path: p.to_owned(),
                source,
            })
        };
        cmd.stdin(Stdio::null())
            .stdout(create(&out_path)?)
            .stderr(create(&err_path)?);
        self.spawn_inner(cmd, program, Some(out_path), Some(err_path))
    }

    /// Spawns `cmd` like [`Host::spawn`] but with stdin, stdout and stderr piped; take them with
    /// [`Process::child_mut`].
    pub fn spawn_piped(&self, cmd: &mut Command) -> Result<Process> {
        let program = program_name(cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.spawn_inner(cmd, program, None, None)
    }

    /// Runs `cmd` in this host to completion, at most `timeout` (then it is killed and
    /// [`Error::Timeout`] returned), and returns its status and output.
    pub fn output(&self, cmd: &mut Command, timeout: Duration) -> Result<Output> {
        let mut p = self.spawn(cmd)?;
        let status = p.wait_timeout(timeout)?;
        Ok(Output {
            status,
            stdout: p.stdout()?.into_bytes(),
            stderr: p.stderr()?.into_bytes(),
        })
    }

    fn spawn_inner(
        &self,
        cmd: &mut Command,
        program: String,
        out: Option<PathBuf>,
        err: Option<PathBuf>,
    ) -> Result<Process> {
        cmd.process_group(0);
        let command = netns::render(cmd);
        // The child inherits the namespace of the thread that forks it, so forking from a thread
        // inside the host puts the process in the host without `ip netns exec` or `pre_exec`.
        let child = self.run(|| cmd.spawn())?.map_err(|source| Error::Spawn {
            command: command.clone(),
            netns: self.netns.clone(),
            source,
        })?;
        tracing::info!(host = %self.name, pid = child.id(), %command, "process spawned");
        Ok(Process::new(child, &self.name, program, out, err))
    }

    fn log_paths(&self, program: &str) -> Result<(PathBuf, PathBuf)> {
        let mut st = self.bed.live()?;
        let dir = match &st.log_dir {
            Some(d) => d.clone(),
            None => {
                let d = std::env::temp_dir()
                    .join("tandem-testbed")
                    .join(format!("{}-{}", self.bed.key, self.bed.name));
                std::fs::create_dir_all(&d).map_err(|source| Error::Io {
                    action: "create",
                    path: d.clone(),
                    source,
                })?;
                st.log_dir = Some(d.clone());
                d
            }
        };
        st.spawned += 1;
        let base = format!("{}-{}-{program}", st.spawned, self.name);
        Ok((
            dir.join(format!("{base}.stdout")),
            dir.join(format!("{base}.stderr")),
        ))
    }

    /// Switch namespace and port of an attached interface.
    fn link(&self, ifname: &str) -> Result<(String, String)> {
        let st = self.bed.live()?;
        st.links
            .get(&(self.name.clone(), ifname.to_owned()))
            .cloned()
            .ok_or_else(|| Error::UnknownInterface {
                host: self.name.clone(),
                ifname: ifname.to_owned(),
            })
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        drop(self.bed.live()?);
        netns::ip(Some(&self.netns), args)
    }
}

/// File-name-safe basename of the program of `cmd`.
fn program_name(cmd: &Command) -> String {
    let p = cmd.get_program().to_string_lossy();
    let base = p.rsplit('/').next().unwrap_or("process");
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads the addresses out of `ip -j -4 addr show` output.
fn parse_addresses(json: &str) -> std::result::Result<Vec<IfAddr>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let links = v.as_array().ok_or("top level is not an array")?;
    let mut out = Vec::new();
    for link in links {
        // With -4, interfaces without IPv4 addresses show up as `{}`.
        let Some(infos) = link.get("addr_info").and_then(|a| a.as_array()) else {
            continue;
        };
        for info in infos {
            if info.get("family").and_then(|f| f.as_str()) != Some("inet") {
                continue;
            }
            let addr = info
                .get("local")
                .and_then(|l| l.as_str())
                .and_then(|l| l.parse().ok())
                .ok_or("addr_info entry without a valid local address")?;
            let prefix_len = info
                .get("prefixlen")
                .and_then(|p| p.as_u64())
                .and_then(|p| u8::try_from(p).ok())
                .ok_or("addr_info entry without a valid prefixlen")?;
            out.push(IfAddr { addr, prefix_len });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json_addresses() {
        let json = r#"[{"ifindex":2,"ifname":"eth1","addr_info":[
            {"family":"inet","local":"198.18.0.11","prefixlen":24,"scope":"global"},
            {"family":"inet","local":"198.18.0.100","prefixlen":24,"scope":"global","secondary":true}]},{}]"#;
        let got: Vec<String> = parse_addresses(json)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["198.18.0.11/24", "198.18.0.100/24"]);
        assert_eq!(parse_addresses("[]").unwrap(), []);
        assert!(parse_addresses(r#"[{"addr_info":[{"family":"inet","prefixlen":24}]}]"#).is_err());
        assert!(parse_addresses("not json").is_err());
    }

    #[test]
    fn program_name_is_a_safe_basename() {
        assert_eq!(program_name(&Command::new("/usr/bin/python3")), "python3");
        assert_eq!(program_name(&Command::new("my prog.sh")), "my_prog_sh");
    }
}
