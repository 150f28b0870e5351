//! The appliance's own defences, end to end in network namespaces: `tandem supervisor
//! --service-user UID:GID` starts the proxy and the VRRP daemon (and its guardian) as that
//! user with only their capabilities (read from `/proc/<pid>/status`), the proxy still binds
//! ports 80 and 443 and the VRRP daemon still adds its VIP; `--firewall` loads the generated
//! nftables rules in the node's namespace at every apply: a frontend reachable from the lan
//! side, the sync port only from the peer on the sync side, VRRP from the lan accepted (a
//! higher-priority peer takes the VIP over), anything else dropped and counted.
//!
//! Uses uid/gid 65534 (`nobody`/`nogroup` on Debian) so no account has to be created. Needs
//! root and `nft` (xtask/host-packages.txt); without root each test prints a skip notice.
//! Must not send traffic from the root namespace, nor load rules outside a test host.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem_testbed::{Host, HostThread, Process, Testbed, require_root};

/// Liveness bound of every wait.
const WAIT: Duration = Duration::from_secs(30);
/// The test's service user (`nobody:nogroup`): not root, no account needed.
const UID: u32 = 65534;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// `CAP_NET_BIND_SERVICE`.
const CAP_BIND: u64 = 1 << 10;
/// `CAP_NET_ADMIN | CAP_NET_RAW`.
const CAP_VRRP: u64 = (1 << 12) | (1 << 13);

fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// A scratch directory, removed at the end; mode 0700 like a root-only data directory, so
/// the supervisor has to open it to the service user itself.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("tandem-lp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("tandem")).expect("scratch dir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP server in a host answering every request with `name`.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<HostThread<()>>,
}

impl Server {
    fn start(host: &Host, addr: &'static str, name: &'static str) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = host
            .spawn_thread(move || {
                let l = TcpListener::bind(addr).expect("bind server");
                l.set_nonblocking(true).expect("nonblocking");
                let deadline = Instant::now() + Duration::from_secs(300);
                while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok((mut s, _)) = l.accept() else {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut r = BufReader::new(s.try_clone().expect("clone"));
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                            name.len()
                        )
                        .as_bytes(),
                    );
                }
            })
            .expect("spawn server");
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `tandem supervisor` in a host, dropping the services to uid/gid 65534.
struct Supervisor {
    dir: PathBuf,
    _process: Process,
}

impl Supervisor {
    fn start(host: &Host, dir: &Path, firewall: bool) -> Supervisor {
        let mut cmd = Command::new(tandem_e2e::tandem_bin());
        cmd.args(["supervisor", "--node", "lb1", "--data-dir"])
            .arg(dir)
            .arg("--socket")
            .arg(dir.join("supervisor.sock"))
            .arg("--run-dir")
            .arg(dir.join("tandem"))
            .arg("--vrrp-socket")
            .arg(dir.join("tandem/vrrp.sock"))
            .args(["--service-user", &format!("{UID}:{UID}")]);
        if firewall {
            cmd.arg("--firewall");
        }
        let process = host.spawn(&mut cmd).expect("spawn supervisor");
        let s = Supervisor {
            dir: dir.to_owned(),
            _process: process,
        };
        wait_for("the control socket", || {
            UnixStream::connect(s.dir.join("supervisor.sock")).is_ok()
        });
        s
    }

    fn call(&self, req: Value) -> Value {
        let mut s = UnixStream::connect(self.dir.join("supervisor.sock")).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        s.write_all(format!("{req}\n").as_bytes()).expect("write");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }

    fn commit(&self, text: &str) {
        let r = self.call(json!({"cmd": "commit", "text": text, "comment": "test"}));
        if r["ok"] != true {
            let logs = self.call(json!({"cmd": "logs", "lines": 60}));
            panic!("commit failed: {r:#}\nlogs: {:#}", logs["lines"]);
        }
    }

    /// The pid of running service `name`.
    fn pid(&self, name: &str) -> u32 {
        let mut pid = None;
        wait_for(&format!("{name} running"), || {
            let s = self.call(json!({"cmd": "status"}));
            pid = s["services"].as_array().and_then(|a| {
                a.iter()
                    .find(|x| x["name"] == name && x["state"] == "running")
                    .and_then(|x| x["pid"].as_u64())
            });
            pid.is_some()
        });
        pid.expect("seen running") as u32
    }
}

/// The `Key:\tvalue` lines of `/proc/<pid>/status`.
fn proc_status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Asserts that `pid` runs as the test's service user with exactly capabilities `mask`
/// (effective, permitted, ambient and bounding) and no_new_privs.
fn assert_identity(what: &str, pid: u32, mask: u64) {
    let st = proc_status(pid);
    let ids = format!("{UID}\t{UID}\t{UID}\t{UID}");
    assert_eq!(st["Uid"], ids, "{what} (pid {pid}) uids: {st:?}");
    assert_eq!(st["Gid"], ids, "{what} (pid {pid}) gids");
    assert_eq!(st["Groups"], UID.to_string(), "{what} supplementary groups");
    let hex = format!("{mask:016x}");
    for set in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(st[set], hex, "{what} (pid {pid}) {set}");
    }
    assert_eq!(st["CapInh"], hex, "{what} inheritable");
    assert_eq!(st["NoNewPrivs"], "1", "{what} no_new_privs");
    println!(
        "{what} (pid {pid}): Uid {} CapEff {} CapBnd {} NoNewPrivs {}",
        st["Uid"], st["CapEff"], st["CapBnd"], st["NoNewPrivs"]
    );
}

/// The pid of a child process of `parent` (the VRRP daemon's guardian).
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent).then_some(pid)
    })
}

/// `GET /` on `addr` from inside `host`: the body, or `None`.
fn get(host: &Host, addr: SocketAddr) -> Option<String> {
    host.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.starts_with("HTTP/1.1 200")
            .then(|| out.rsplit("\r\n\r\n").next().unwrap_or("").to_owned())
    })
    .expect("run in host")
}

/// A TCP connection attempt from `host` to `addr` with a 1.5 s timeout.
fn connect(host: &Host, addr: SocketAddr) -> std::io::Result<()> {
    host.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).map(drop))
        .expect("run in host")
}

/// The named counters of table `inet tandem` in `host`: name → packets.
fn counters(host: &Host) -> BTreeMap<String, u64> {
    let out = host
        .output(
            Command::new("nft").args(["-j", "list", "counters", "table", "inet", "tandem"]),
            Duration::from_secs(5),
        )
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft list counters: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j is JSON");
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let c = o.get("counter")?;
            Some((c["name"].as_str()?.to_owned(), c["packets"].as_u64()?))
        })
        .collect()
}

#[test]
fn services_run_as_the_service_user_with_only_their_capabilities() {
    if !require_root() {
        return;
    }
    let bed = Testbed::new("lpids").expect("testbed");
    let lan = bed.segment("lan").expect("lan");
    let lb = bed.host("lb1").expect("host");
    lb.attach(&lan, "eth1", "198.18.0.11/24").expect("attach");
    let _backend = Server::start(&lb, "127.0.0.1:8080", "backend");
    let dir = Scratch::new("ids");
    let sup = Supervisor::start(&lb, &dir.0, false);
    let run = dir.0.join("tandem");
    // Privileged ports on loopback (the namespace's own: `ip_unprivileged_port_start` is
    // 1024 there too), a one-node cluster so the VRRP daemon runs and takes the VIP alone.
    sup.commit(&format!(
        r#"version: 1
cluster:
  name: t
  nodes:
    lb1: {{ lan_address: 198.18.0.11, sync_address: 198.18.1.1, priority: 150 }}
vrrp:
  - {{ name: www, interface: eth1, vrid: 51, advert_interval: 100ms, addresses: [198.18.0.100/24] }}
frontends:
  - name: web
    bind: ["127.0.0.1:80", "127.0.0.1:443"]
    default_backend: app
backends:
  - name: app
    servers: [{{ name: b, address: 127.0.0.1:8080 }}]
runtime: {{ socket: {}/proxy.sock }}
"#,
        run.display()
    ));

    let proxy = sup.pid("proxy");
    assert_identity("proxy", proxy, CAP_BIND);
    for port in [80, 443] {
        let body = get(&lb, SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(body.as_deref(), Some("backend"), "GET through port {port}");
    }

    let vrrp = sup.pid("vrrp");
    assert_identity("vrrp daemon", vrrp, CAP_VRRP);
    let mut guardian = None;
    wait_for("the vip guardian", || {
        guardian = child_of(vrrp);
        guardian.is_some()
    });
    assert_identity("vip guardian", guardian.expect("seen"), CAP_VRRP);
    // CAP_NET_ADMIN at work: the VIP is on the interface, added by the unprivileged daemon.
    lb.wait_for_address("eth1", VIP, true, WAIT)
        .expect("the VRRP daemon adds the VIP");

    // The runtime files: the run directory is the service group's (sticky, so the services
    // cannot remove what they do not own) and their sockets are theirs.
    let meta = std::fs::metadata(&run).expect("run dir");
    assert_eq!(meta.gid(), UID, "run dir group");
    assert_eq!(
        meta.mode() & 0o1070,
        0o1070,
        "run dir mode {:o}",
        meta.mode()
    );
    for sock in ["proxy.sock", "vrrp.sock"] {
        let m = std::fs::metadata(run.join(sock)).unwrap_or_else(|e| panic!("{sock}: {e}"));
        assert_eq!(m.uid(), UID, "{sock} is made by the service");
    }
    // The data directory (0700 root) was opened for traversal only, not for reading.
    let data = std::fs::metadata(&dir.0).expect("data dir").mode();
    assert_eq!(data & 0o077, 0o010, "data dir mode {data:o}");
    // The supervisor itself stays root (it owns the store, the firewall, the identities).
    let sup_pid = child_pid_of_host(&sup);
    assert_eq!(proc_status(sup_pid)["Uid"], "0\t0\t0\t0");
}

/// The supervisor's own pid: the parent of the proxy.
fn child_pid_of_host(sup: &Supervisor) -> u32 {
    let proxy = sup.pid("proxy");
    let stat = std::fs::read_to_string(format!("/proc/{proxy}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat format");
    rest.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("ppid")
}

/// The lab of the firewall test, as lb1 sees it (lb2 exists on the lan only as a VRRP peer).
fn pair_config(run: &Path, extra_bind: &str) -> String {
    format!(
        r#"version: 1
cluster:
  name: t
  nodes:
    lb1: {{ lan_address: 198.18.0.11, sync_address: 198.18.1.1, priority: 150 }}
    lb2: {{ lan_address: 198.18.0.12, sync_address: 198.18.1.2, priority: 200 }}
interfaces:
  eth1: {{ role: lan }}
  eth2: {{ role: sync }}
vrrp:
  - {{ name: www, interface: eth1, vrid: 51, advert_interval: 100ms, preempt: true, addresses: [198.18.0.100/24] }}
frontends:
  - name: web
    bind: ["198.18.0.100:80"{extra_bind}]
    default_backend: app
backends:
  - name: app
    servers: [{{ name: b, address: 198.18.0.12:8080 }}]
sync: {{ port: 7400 }}
runtime: {{ socket: {}/proxy.sock }}
"#,
        run.display()
    )
}

#[test]
fn the_firewall_opens_the_frontends_on_lan_sync_only_from_the_peer_and_drops_the_rest() {
    if !require_root() {
        return;
    }
    let bed = Testbed::new("lpfw").expect("testbed");
    let lan = bed.segment("lan").expect("lan");
    let sync = bed.segment("sync").expect("sync");
    let lb1 = bed.host("lb1").expect("lb1");
    lb1.attach(&lan, "eth1", "198.18.0.11/24").expect("attach");
    lb1.attach(&sync, "eth2", "198.18.1.1/24").expect("attach");
    lb1.sysctl("net.ipv4.ip_nonlocal_bind", "1")
        .expect("sysctl");
    // lb2 is the client, the server and, at the end, the VRRP peer on the lan.
    let lb2 = bed.host("lb2").expect("lb2");
    lb2.attach(&lan, "eth1", "198.18.0.12/24").expect("attach");
    let peer = bed.host("peer").expect("peer");
    peer.attach(&sync, "eth1", "198.18.1.2/24").expect("attach");
    let _server = Server::start(&lb2, "198.18.0.12:8080", "web");
    // A listener the firewall must hide: without it a connection would be accepted.
    let hidden = lb1
        .run(|| TcpListener::bind("0.0.0.0:9999"))
        .expect("run")
        .expect("bind 9999");

    let dir = Scratch::new("fw");
    let run = dir.0.join("tandem");
    let sup = Supervisor::start(&lb1, &dir.0, true);
    sup.commit(&pair_config(&run, ""));
    lb1.wait_for_address("eth1", VIP, true, WAIT)
        .expect("lb1 is master alone");
    let rules = std::fs::read_to_string(dir.0.join("firewall.nft")).expect("boot copy");
    assert!(
        rules.contains("tcp dport 80 accept comment \"frontend web\""),
        "{rules}"
    );

    // A frontend on the lan side: through the VIP to the server (the server's replies
    // come in as non-SYN segments, accepted without connection tracking).
    let vip80 = SocketAddr::from((VIP, 80));
    wait_for("an answer through the VIP", || get(&lb2, vip80).is_some());
    assert_eq!(get(&lb2, vip80).as_deref(), Some("web"));

    // The sync port: open to the peer's sync address on the sync side...
    let sync_port = SocketAddr::from(([198, 18, 1, 1], 7400));
    wait_for("the sync port from the peer", || {
        connect(&peer, sync_port).is_ok()
    });
    // ...and dropped from the lan side, although the same socket listens (a route through
    // lb1 makes its sync address reachable from the lan).
    let route = lb2
        .output(
            Command::new("ip").args(["route", "add", "198.18.1.0/24", "via", "198.18.0.11"]),
            Duration::from_secs(5),
        )
        .expect("ip route");
    assert!(route.status.success(), "ip route add");
    let before = counters(&lb1);
    let e = connect(&lb2, sync_port).expect_err("the sync port is closed to the lan");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::TimedOut,
        "dropped, not refused: {e}"
    );
    // Any other port: dropped and counted, although something listens there.
    let other = SocketAddr::from(([198, 18, 0, 11], 9999));
    let e = connect(&lb2, other).expect_err("port 9999 is closed to the lan");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::TimedOut,
        "dropped, not refused: {e}"
    );
    let after = counters(&lb1);
    println!("counters before {before:?}\ncounters after  {after:?}");
    assert!(
        after["dropped_lan"] >= before["dropped_lan"] + 2,
        "both SYNs counted as dropped on the lan side"
    );
    assert!(
        after["accepted_sync"] >= 1,
        "the peer's SYN counted as accepted sync"
    );
    drop(hidden);

    // The rules follow the configuration at every apply: a new bind opens at commit.
    let vip8080 = SocketAddr::from((VIP, 8080));
    assert!(
        connect(&lb2, vip8080).is_err(),
        "8080 is closed before the commit"
    );
    sup.commit(&pair_config(&run, ", \"198.18.0.100:8080\""));
    assert_eq!(
        get(&lb2, vip8080).as_deref(),
        Some("web"),
        "8080 after the commit"
    );

    // VRRP from the lan is accepted: lb2 (priority 200, preempt) starts advertising and
    // lb1 yields the VIP to it.
    let lb2_conf = dir.0.join("lb2.yaml");
    std::fs::write(&lb2_conf, pair_config(&run, "")).expect("lb2 config");
    let _lb2_vrrp = lb2
        .spawn(
            Command::new(tandem_e2e::tandem_bin())
                .args(["vrrp", "--node", "lb2", "--no-guardian", "--config"])
                .arg(&lb2_conf)
                .arg("--control-socket")
                .arg(dir.0.join("lb2-vrrp.sock")),
        )
        .expect("spawn lb2's vrrp daemon");
    let t = Instant::now();
    lb1.wait_for_address("eth1", VIP, false, WAIT)
        .expect("lb1 yields the VIP to lb2's adverts");
    lb2.wait_for_address("eth1", VIP, true, WAIT)
        .expect("lb2 holds the VIP");
    println!("lb1 yielded the VIP {:?} after lb2 started", t.elapsed());
    assert!(
        counters(&lb1)["accepted_vrrp"] > 0,
        "lb2's adverts were counted"
    );
}
