//! End-to-end failover tests of `tandem vrrp` in network namespaces (tandem-testbed).
//!
//! Owns the two-LB pair scenarios: election, link loss, SIGKILL (guardian), SIGSTOP/SIGCONT,
//! SIGTERM, preempt on and off, a planned switchover through the control socket, tracked
//! interfaces, proxy tracking through a real `tandem proxy`'s runtime API, and an IPv6
//! instance (VIP 2001:2::100/64, adverts from link-local addresses) on link loss and SIGKILL
//! (IPv6 is turned on inside the hosts, addresses added by `ip` run inside them). Each test
//! builds its own testbed (lb1 198.18.0.11 priority 150, lb2 198.18.0.12 priority 100, a client
//! 198.18.0.2, VIP 198.18.0.100/24, advert interval 100 ms) and asserts what a user sees: which
//! host has the VIP, and which node answers a client connecting to the VIP.
//! Must not send traffic from the root namespace (only from test hosts) and never edits the
//! daemon's state other than through signals, links and its control socket. Needs root:
//! without it each test prints a skip notice (and fails in CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tandem_testbed::{Host, HostThread, Process, Testbed, require_root};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const IFACE: &str = "eth1";
const PORT: u16 = 8080;

/// The tests are timing-sensitive and the machine is small: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Liveness bounds for the timing checks below. They are deliberately loose: these tests show
/// behaviour (who holds the VIP), and the figures are measured by the failover bench
/// (`tests/vrrp/failover-bench.sh`), not asserted here. A bound well under
/// Master_Down_Interval would make CI flaky on a loaded machine.
const LIVENESS_FAST: Duration = Duration::from_secs(1);
/// For handovers that wait for Master_Down_Interval after a late carrier notification.
const LIVENESS_SLOW: Duration = Duration::from_secs(2);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `version`, `cluster` and `vrrp` sections every scenario shares; `vrrp_extra` holds
/// more keys of the `www` instance (indented four spaces), then the rest of the file follows.
fn pair_head(vrrp_extra: &str) -> String {
    format!(
        r#"version: 1
cluster:
  name: test
  nodes:
    lb1: {{ lan_address: 198.18.0.11, sync_address: 198.18.1.1, priority: 150 }}
    lb2: {{ lan_address: 198.18.0.12, sync_address: 198.18.1.2, priority: 100 }}
vrrp:
  - name: www
    interface: {IFACE}
    vrid: 51
    advert_interval: 100ms
    addresses: [198.18.0.100/24]
{vrrp_extra}"#
    )
}

fn config_yaml(preempt: bool, unicast: bool, track: &str) -> String {
    pair_head(&format!(
        "    preempt: {preempt}\n    unicast: {unicast}\n{track}"
    )) + r#"frontends:
  - name: web
    bind: ["198.18.0.100:80"]
    default_backend: app
backends:
  - name: app
    servers:
      - { name: app1, address: 198.18.0.20:8080 }
"#
}

/// A TCP responder inside an LB host: answers every connection with the node's name. Binds
/// 0.0.0.0, so it answers on the VIP while the VIP is on this host.
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<HostThread<()>>,
}

impl Responder {
    fn start(host: &Host, name: &'static str) -> Responder {
        Responder::start_at(host, name, SocketAddr::from(([0, 0, 0, 0], PORT)))
    }

    fn start_at(host: &Host, name: &'static str, bind: SocketAddr) -> Responder {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = host
            .spawn_thread(move || {
                let listener = TcpListener::bind(bind).expect("bind responder");
                listener.set_nonblocking(true).expect("nonblocking");
                let deadline = Instant::now() + Duration::from_secs(180);
                while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.write_all(name.as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
            .expect("spawn responder");
        Responder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Two LB hosts and a client on one segment, with the daemon config written to a temp dir.
struct Pair {
    lb1: Host,
    lb2: Host,
    client: Host,
    dir: PathBuf,
    _responders: Vec<Responder>,
    // Dropped last: tears the namespaces down after the responders stopped.
    bed: Testbed,
}

impl Pair {
    fn new(name: &str, preempt: bool) -> Pair {
        Pair::with(name, preempt, false)
    }

    fn with(name: &str, preempt: bool, unicast: bool) -> Pair {
        Pair::build(name, config_yaml(preempt, unicast, ""))
    }

    fn build(name: &str, yaml: String) -> Pair {
        let bed = Testbed::new(name).expect("testbed");
        let lan = bed.segment("lan").expect("segment");
        let lb1 = bed.host("lb1").expect("host lb1");
        let lb2 = bed.host("lb2").expect("host lb2");
        let client = bed.host("client").expect("host client");
        lb1.attach(&lan, IFACE, "198.18.0.11/24")
            .expect("attach lb1");
        lb2.attach(&lan, IFACE, "198.18.0.12/24")
            .expect("attach lb2");
        client
            .attach(&lan, IFACE, "198.18.0.2/24")
            .expect("attach client");
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tandem-vrrp-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("tandem.yaml"), yaml).expect("write config");
        let responders = vec![Responder::start(&lb1, "lb1"), Responder::start(&lb2, "lb2")];
        Pair {
            lb1,
            lb2,
            client,
            dir,
            _responders: responders,
            bed,
        }
    }

    fn host(&self, node: &str) -> &Host {
        match node {
            "lb1" => &self.lb1,
            _ => &self.lb2,
        }
    }

    /// Any of the three hosts by name.
    fn host_any(&self, name: &str) -> &Host {
        match name {
            "client" => &self.client,
            other => self.host(other),
        }
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.sock"))
    }

    fn start(&self, node: &str) -> Process {
        self.start_with(node, &[])
    }

    /// The node's own config file when the test wrote one (`lb1.yaml`), else the shared one.
    fn config(&self, node: &str) -> PathBuf {
        let own = self.dir.join(format!("{node}.yaml"));
        if own.exists() {
            own
        } else {
            self.dir.join("tandem.yaml")
        }
    }

    fn start_with(&self, node: &str, extra: &[&str]) -> Process {
        let mut cmd = Command::new(tandem_e2e::tandem_bin());
        cmd.arg("vrrp")
            .arg("--config")
            .arg(self.config(node))
            .args(["--node", node])
            .arg("--control-socket")
            .arg(self.socket(node))
            .args(extra)
            .env("RUST_LOG", "info");
        self.host(node).spawn(&mut cmd).expect("spawn tandem vrrp")
    }

    fn has_vip(&self, node: &str) -> bool {
        self.host(node)
            .has_address(IFACE, VIP)
            .expect("read addresses")
    }

    fn wait_vip(&self, node: &str, present: bool, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        self.host(node)
            .wait_for_address(IFACE, VIP, present, timeout)
            .unwrap_or_else(|e| panic!("{node}: {e}"));
        t0.elapsed()
    }

    /// Who answers a new connection from the client to the VIP (None: nobody within 300 ms).
    fn ask(&self) -> Option<String> {
        self.ask_at(PORT)
    }

    /// Who answers a new connection from the client to the VIP on `port`.
    fn ask_at(&self, port: u16) -> Option<String> {
        self.client
            .run(|| {
                let addr = SocketAddr::from((VIP, port));
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
                s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                Some(out)
            })
            .expect("client run")
    }

    /// Waits until the client is answered by `node` (bounded).
    fn wait_answer(&self, node: &str, timeout: Duration) {
        self.wait_answer_at(PORT, node, timeout);
    }

    /// Waits until the client is answered by `node` on the VIP's `port` (bounded).
    fn wait_answer_at(&self, port: u16, node: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.ask_at(port);
            if last.as_deref() == Some(node) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("client was not answered by {node} within {timeout:?} (last answer {last:?})");
    }

    /// Asserts that during `span` the VIP stays on `node` only.
    fn assert_stable(&self, node: &str, span: Duration) {
        let other = if node == "lb1" { "lb2" } else { "lb1" };
        let deadline = Instant::now() + span;
        while Instant::now() < deadline {
            assert!(self.has_vip(node), "VIP left {node}");
            assert!(!self.has_vip(other), "VIP also on {other}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts both daemons and waits for the initial election (lb1 master).
    fn elect(&self) -> (Process, Process) {
        let d1 = self.start("lb1");
        let d2 = self.start("lb2");
        self.wait_vip("lb1", true, Duration::from_secs(5));
        self.wait_answer("lb1", Duration::from_secs(3));
        (d1, d2)
    }

    fn control(&self, node: &str, request: &str) -> serde_json::Value {
        let mut s = UnixStream::connect(self.socket(node)).expect("connect control socket");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(format!("{request}\n").as_bytes())
            .expect("write");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read reply");
        serde_json::from_str(&line).expect("reply is json")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let _ = &self.bed;
    }
}

fn logs(p: &Process) -> String {
    p.stderr().unwrap_or_default()
}

/// Polls both hosts until `node` has the VIP, recording whether both ever held it together.
fn watch_takeover(
    pair: &Pair,
    from: &str,
    to: &str,
    timeout: Duration,
) -> (Option<Duration>, Duration, bool) {
    let t0 = Instant::now();
    let mut gone = None;
    let mut both = false;
    loop {
        let a = pair.has_vip(from);
        let b = pair.has_vip(to);
        if !a && gone.is_none() {
            gone = Some(t0.elapsed());
        }
        both |= a && b;
        if b && !a {
            return (gone, t0.elapsed(), both);
        }
        assert!(
            t0.elapsed() < timeout,
            "no takeover by {to} within {timeout:?} (from has {a}, to has {b})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn initial_election_puts_the_vip_on_the_higher_priority_node_only() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::new("vrrp-elect", true);
    let (d1, d2) = pair.elect();
    pair.assert_stable("lb1", Duration::from_secs(1));
    assert_eq!(pair.ask().as_deref(), Some("lb1"));
    let st = pair.control("lb1", r#"{"cmd":"status"}"#);
    assert_eq!(st["ok"], true, "{st}");
    assert_eq!(st["instances"][0]["state"], "master", "{st}");
    assert!(
        st["instances"][0]["counters"]["adverts_sent"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{st}"
    );
    let st2 = pair.control("lb2", r#"{"cmd":"status"}"#);
    assert_eq!(st2["instances"][0]["state"], "backup", "{st2}");
    assert_eq!(st2["instances"][0]["master"], "198.18.0.11", "{st2}");
    drop((d1, d2));
}

#[test]
fn link_loss_fails_over_and_preempt_fails_back() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::new("vrrp-link", true);
    let (d1, d2) = pair.elect();
    pair.lb1.link_down(IFACE).expect("link down");
    // The isolated node drops its VIP (Fault) as soon as the link notification arrives, so it
    // cannot answer when the link returns; the peer takes over after Master_Down_Interval.
    let (gone, took, both) = watch_takeover(&pair, "lb1", "lb2", Duration::from_secs(2));
    let gone = gone.expect("VIP left lb1");
    eprintln!("link down: VIP gone from lb1 after {gone:?}, lb2 has it after {took:?}");
    assert!(!both, "both nodes held the VIP");
    assert!(
        gone < LIVENESS_FAST,
        "lb1 reacted to its link loss after {gone:?}"
    );
    pair.wait_answer("lb2", Duration::from_secs(2));
    let st = pair.control("lb1", r#"{"cmd":"status"}"#);
    assert_eq!(st["instances"][0]["state"], "fault", "{st}");
    assert!(
        st["instances"][0]["counters"]["link_events"].as_u64() >= Some(1),
        "the link loss was not seen through a notification: {st}"
    );
    pair.lb1.link_up(IFACE).expect("link up");
    pair.wait_vip("lb1", true, Duration::from_secs(3));
    pair.wait_vip("lb2", false, Duration::from_secs(1));
    pair.wait_answer("lb1", Duration::from_secs(3));
    pair.assert_stable("lb1", Duration::from_millis(500));
    drop((d1, d2));
}

#[test]
fn sigkill_of_the_master_leaves_no_vip_behind() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::new("vrrp-kill", true);
    let (mut d1, d2) = pair.elect();
    d1.signal(Signal::SIGKILL)
        .expect("kill -9 the daemon's process group");
    let (gone, took, both) = watch_takeover(&pair, "lb1", "lb2", Duration::from_secs(3));
    let gone = gone.expect("VIP left lb1");
    eprintln!(
        "sigkill: VIP gone from lb1 after {gone:?}, on lb2 after {took:?}, both at once: {both}"
    );
    assert!(
        gone <= Duration::from_millis(400),
        "VIP stayed on the killed master for {gone:?}\n{}",
        logs(&d1)
    );
    assert!(!both, "both nodes held the VIP at once");
    // The guardian resigns on the dead daemon's behalf (priority 0): the peer takes over after
    // Skew_Time (~61 ms), not Master_Down_Interval (~361 ms).
    assert!(took < LIVENESS_FAST, "takeover after SIGKILL took {took:?}");
    pair.wait_answer("lb2", Duration::from_secs(2));
    // And it stays that way: the dead node never gets it back.
    pair.assert_stable("lb2", Duration::from_secs(1));
    drop(d2);
}

#[test]
fn sigstop_of_the_master_removes_its_vip_and_sigcont_leaves_one_master() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::new("vrrp-stop", true);
    let (mut d1, d2) = pair.elect();
    d1.signal(Signal::SIGSTOP).expect("freeze the daemon");
    let (gone, took, both) = watch_takeover(&pair, "lb1", "lb2", Duration::from_secs(3));
    let gone = gone.expect("VIP left lb1");
    eprintln!("sigstop: VIP gone from lb1 after {gone:?}, on lb2 after {took:?}, both: {both}");
    assert!(
        gone <= Duration::from_millis(700),
        "guardian did not remove the frozen master's VIP in time: {gone:?}"
    );
    assert!(!both, "both nodes held the VIP while lb1 was frozen");
    pair.wait_answer("lb2", Duration::from_secs(2));
    d1.signal(Signal::SIGCONT).expect("thaw");
    // lb1 has the higher priority and preempts: after settling exactly one master, lb1.
    pair.wait_vip("lb1", true, Duration::from_secs(3));
    pair.wait_vip("lb2", false, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    pair.assert_stable("lb1", Duration::from_secs(1));
    pair.wait_answer("lb1", Duration::from_secs(2));
    let s1 = pair.control("lb1", r#"{"cmd":"status"}"#);
    let s2 = pair.control("lb2", r#"{"cmd":"status"}"#);
    assert_eq!(s1["instances"][0]["state"], "master", "{s1}");
    assert_eq!(s2["instances"][0]["state"], "backup", "{s2}");
    drop((d1, d2));
}

#[test]
fn sigterm_resigns_fast_and_exits_zero() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::new("vrrp-term", true);
    let (mut d1, d2) = pair.elect();
    let t0 = Instant::now();
    // SIGTERM to the daemon process only (as systemd's KillMode=mixed would first).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(d1.pid()).expect("pid")),
        Signal::SIGTERM,
    )
    .expect("sigterm");
    let (gone, took, both) = watch_takeover(&pair, "lb1", "lb2", Duration::from_secs(2));
    eprintln!("sigterm: VIP gone from lb1 after {gone:?}, on lb2 after {took:?}");
    assert!(!both, "both nodes held the VIP");
    // Priority 0 makes the backup take over after Skew_Time (~61 ms), not Master_Down_Interval.
    assert!(took < LIVENESS_FAST, "takeover after SIGTERM took {took:?}");
    let status = d1
        .wait_timeout(Duration::from_secs(5))
        .expect("daemon exits");
    assert!(status.success(), "exit status {status:?}\n{}", logs(&d1));
    assert!(t0.elapsed() < Duration::from_secs(5));
    pair.wait_answer("lb2", Duration::from_secs(2));
    // Restarted, lb1 preempts again (fail-back with preempt).
    let d1 = pair.start("lb1");
    pair.wait_vip("lb1", true, Duration::from_secs(3));
    pair.wait_vip("lb2", false, Duration::from_secs(1));
    pair.wait_answer("lb1", Duration::from_secs(2));
    drop((d1, d2));
}

#[test]
fn without_preempt_a_returning_higher_priority_node_stays_backup() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::new("vrrp-nopreempt", false);
    let d2 = pair.start("lb2");
    pair.wait_vip("lb2", true, Duration::from_secs(5));
    let d1 = pair.start("lb1");
    // lb1 (150) joins while lb2 (100) is master: with preempt off it must not take over.
    std::thread::sleep(Duration::from_millis(500));
    pair.assert_stable("lb2", Duration::from_secs(2));
    pair.wait_answer("lb2", Duration::from_secs(1));
    let s1 = pair.control("lb1", r#"{"cmd":"status"}"#);
    assert_eq!(s1["instances"][0]["state"], "backup", "{s1}");
    drop((d1, d2));
}

#[test]
fn planned_switchover_through_the_control_socket() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::new("vrrp-switch", true);
    let (d1, d2) = pair.elect();
    // Watch lb2's events while the switchover happens.
    let mut watch = UnixStream::connect(pair.socket("lb2")).expect("connect watch");
    watch
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    watch
        .write_all(b"{\"cmd\":\"watch\"}\n")
        .expect("write watch");
    let mut watch = BufReader::new(watch);
    let mut line = String::new();
    watch.read_line(&mut line).expect("watch ack");
    assert!(line.contains("\"watching\":true"), "{line}");

    let reply = pair.control("lb1", r#"{"cmd":"switchover"}"#);
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["switched"][0], "www", "{reply}");
    let (_, took, both) = watch_takeover(&pair, "lb1", "lb2", Duration::from_secs(2));
    eprintln!("switchover: lb2 has the VIP after {took:?}");
    assert!(!both, "both nodes held the VIP");
    pair.wait_answer("lb2", Duration::from_secs(2));
    // lb1 keeps its hands off during the switchover hold despite its higher priority.
    pair.assert_stable("lb2", Duration::from_secs(1));

    line.clear();
    watch.read_line(&mut line).expect("state event");
    let ev: serde_json::Value = serde_json::from_str(&line).expect("event json");
    assert_eq!(ev["event"], "state", "{ev}");
    assert_eq!(ev["from"], "backup", "{ev}");
    assert_eq!(ev["to"], "master", "{ev}");
    assert_eq!(ev["instance"], "www", "{ev}");
    assert!(
        ev["seq"].as_u64().is_some() && ev["ts_ms"].as_u64().is_some(),
        "{ev}"
    );

    // A second switchover on lb1 (now backup) is refused with a reason.
    let again = pair.control("lb1", r#"{"cmd":"switchover"}"#);
    assert_eq!(again["ok"], false, "{again}");
    let bad = pair.control("lb1", r#"{"cmd":"explode"}"#);
    assert_eq!(bad["ok"], false, "{bad}");
    let st = pair.control("lb1", r#"{"cmd":"status"}"#);
    assert_eq!(st["instances"][0]["state"], "backup", "{st}");
    assert!(
        st["instances"][0]["counters"]["priority_zero_sent"].as_u64() >= Some(1),
        "{st}"
    );
    drop((d1, d2));
}

#[test]
fn unicast_adverts_elect_and_fail_over() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::with("vrrp-unicast", true, true);
    let (mut d1, d2) = pair.elect();
    pair.assert_stable("lb1", Duration::from_millis(500));
    let st = pair.control("lb2", r#"{"cmd":"status"}"#);
    assert_eq!(st["instances"][0]["master"], "198.18.0.11", "{st}");
    d1.signal(Signal::SIGKILL).expect("kill -9");
    let (_, took, both) = watch_takeover(&pair, "lb1", "lb2", Duration::from_secs(3));
    eprintln!("unicast: lb2 took over after {took:?}");
    assert!(!both, "both nodes held the VIP");
    pair.wait_answer("lb2", Duration::from_secs(2));
    drop(d2);
}

#[test]
fn without_a_guardian_the_address_lifetime_removes_a_dead_masters_vip() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::new("vrrp-lifetime", true);
    let mut d1 = pair.start_with("lb1", &["--no-guardian"]);
    pair.wait_vip("lb1", true, Duration::from_secs(5));
    d1.signal(Signal::SIGKILL).expect("kill -9");
    // No guardian and no peer: only the kernel's address lifetime (10 s) can remove it.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        pair.has_vip("lb1"),
        "VIP vanished before its lifetime ran out"
    );
    let gone = pair.wait_vip("lb1", false, Duration::from_secs(12));
    eprintln!("lifetime backstop: VIP gone {gone:?} after the 2 s check");
}

#[test]
fn a_failed_tracked_interface_lowers_priority_and_hands_over() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let track = "    track: { interfaces: { eth2: 100 } }\n";
    let pair = Pair::build("vrrp-track", config_yaml(true, false, track));
    let uplink = pair.bed.segment("uplink").expect("segment");
    pair.lb1
        .attach(&uplink, "eth2", "198.18.1.11/24")
        .expect("attach");
    pair.lb2
        .attach(&uplink, "eth2", "198.18.1.12/24")
        .expect("attach");
    let (d1, d2) = pair.elect();
    // lb1's uplink fails: 150 - 100 = 50 < 100, so lb2 preempts.
    pair.lb1.link_down("eth2").expect("uplink down");
    let (_, took, _) = watch_takeover(&pair, "lb1", "lb2", Duration::from_secs(2));
    eprintln!("tracked uplink down: lb2 has the VIP after {took:?}");
    // Master_Down_Interval (~361 ms) after lb1's priority drops. eth2's ifindex equals its
    // switch-side peer's, so the kernel notifies its carrier loss late (linkwatch, up to 1 s,
    // ~540 ms measured): waiting for the notification alone would take ~900 ms here.
    assert!(
        took < LIVENESS_SLOW,
        "tracked uplink loss handed over after {took:?}"
    );
    pair.wait_answer("lb2", Duration::from_secs(2));
    let st = pair.control("lb1", r#"{"cmd":"status"}"#);
    assert_eq!(st["instances"][0]["effective_priority"], 50, "{st}");
    assert_eq!(
        st["instances"][0]["failed_tracks"][0], "interface eth2",
        "{st}"
    );
    // Uplink back: lb1 is 150 again and preempts.
    pair.lb1.link_up("eth2").expect("uplink up");
    pair.wait_vip("lb1", true, Duration::from_secs(2));
    pair.wait_vip("lb2", false, Duration::from_secs(1));
    pair.wait_answer("lb1", Duration::from_secs(2));
    drop((d1, d2));
}

/// The proxy-tracking pair: the same config on both nodes except the runtime API socket (both
/// namespaces share one file system). Each node's proxy serves VIP:80 (tcp) from its local
/// responder on 127.0.0.1:8080, so the answer names the node whose proxy carried it.
fn proxy_pair_yaml(socket: &std::path::Path) -> String {
    pair_head("    track: { proxy: 60 }\n")
        + &format!(
            r#"runtime: {{ socket: {} }}
frontends:
  - name: web
    mode: tcp
    bind: ["198.18.0.100:{PROXY_PORT}"]
    default_backend: app
backends:
  - name: app
    mode: tcp
    servers:
      - {{ name: local, address: "127.0.0.1:{PORT}" }}
"#,
            socket.display()
        )
}

/// Port the proxies serve on the VIP.
const PROXY_PORT: u16 = 80;

/// Starts `tandem proxy` on `node` and waits (bounded) for its runtime API socket.
fn start_proxy(pair: &Pair, node: &str) -> Process {
    let socket = pair.dir.join(format!("{node}-proxy.sock"));
    let _ = std::fs::remove_file(&socket);
    let mut cmd = Command::new(tandem_e2e::tandem_bin());
    cmd.arg("proxy")
        .arg("--config")
        .arg(pair.config(node))
        .args(["--node", node])
        .env("RUST_LOG", "info");
    let p = pair.host(node).spawn(&mut cmd).expect("spawn tandem proxy");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "{node}: proxy runtime api socket did not appear\n{}",
            logs(&p)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

#[test]
fn a_dead_proxy_hands_the_vip_over_and_its_return_takes_it_back() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let pair = Pair::build("vrrp-proxy", String::new());
    for node in ["lb1", "lb2"] {
        let socket = pair.dir.join(format!("{node}-proxy.sock"));
        std::fs::write(
            pair.dir.join(format!("{node}.yaml")),
            proxy_pair_yaml(&socket),
        )
        .expect("write node config");
        // The backup's proxy binds the VIP before the VIP is there, as on the appliance.
        pair.host(node)
            .sysctl("net.ipv4.ip_nonlocal_bind", "1")
            .expect("sysctl");
    }
    let mut p1 = start_proxy(&pair, "lb1");
    let p2 = start_proxy(&pair, "lb2");
    let (d1, d2) = pair.elect();
    pair.wait_answer_at(PROXY_PORT, "lb1", Duration::from_secs(3));
    let st = pair.control("lb1", r#"{"cmd":"status"}"#);
    assert_eq!(st["instances"][0]["proxy_tracking"], "up", "{st}");

    // lb1's proxy dies: its runtime API refuses connections, lb1 drops to 150 - 60 = 90 < 100.
    p1.signal(Signal::SIGKILL).expect("kill -9 lb1's proxy");
    let t0 = Instant::now();
    pair.wait_vip("lb2", true, Duration::from_secs(4));
    pair.wait_vip("lb1", false, Duration::from_secs(1));
    pair.wait_answer_at(PROXY_PORT, "lb2", Duration::from_secs(2));
    eprintln!(
        "proxy killed: client answered by lb2 through the VIP after {:?}",
        t0.elapsed()
    );
    let st = pair.control("lb1", r#"{"cmd":"status"}"#);
    assert_eq!(st["instances"][0]["effective_priority"], 90, "{st}");
    assert_eq!(st["instances"][0]["failed_tracks"][0], "proxy", "{st}");
    assert_eq!(st["instances"][0]["proxy_tracking"], "down", "{st}");
    assert_eq!(st["instances"][0]["state"], "backup", "{st}");
    pair.assert_stable("lb2", Duration::from_millis(500));
    assert_eq!(pair.ask_at(PROXY_PORT).as_deref(), Some("lb2"));

    // The proxy comes back: lb1 is 150 again and preempts.
    let p1 = start_proxy(&pair, "lb1");
    let t0 = Instant::now();
    pair.wait_vip("lb1", true, Duration::from_secs(4));
    pair.wait_vip("lb2", false, Duration::from_secs(1));
    pair.wait_answer_at(PROXY_PORT, "lb1", Duration::from_secs(2));
    eprintln!(
        "proxy back: lb1 serves the VIP again after {:?}",
        t0.elapsed()
    );
    let st = pair.control("lb1", r#"{"cmd":"status"}"#);
    assert_eq!(st["instances"][0]["effective_priority"], 150, "{st}");
    drop((d1, d2, p1, p2));
}

// IPv6: 2001:2::/48 (RFC 5180 benchmarking range) and link-local only.
const VIP6: &str = "2001:2::100";
/// The IPv6 responders' port (the IPv4 responders hold 8080 dual-stack-free on 0.0.0.0).
const PORT6: u16 = 8086;

fn ipv6_yaml() -> String {
    config_yaml(true, false, "")
        .replace("    vrid: 51\n", "    vrid: 52\n")
        .replace(
            "addresses: [198.18.0.100/24]",
            "addresses: [\"2001:2::100/64\"]",
        )
}

/// Runs `ip ARGS` in `host` (bounded) and returns its stdout.
fn ip_in(host: &Host, args: &[&str]) -> String {
    let out = host
        .output(Command::new("ip").args(args), Duration::from_secs(5))
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `inet6` lines of eth1 in `host`.
fn v6_lines(host: &Host) -> Vec<String> {
    ip_in(host, &["-6", "-o", "addr", "show", "dev", IFACE])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn has_vip6(pair: &Pair, node: &str) -> bool {
    let needle = format!("inet6 {VIP6}/64");
    v6_lines(pair.host(node))
        .iter()
        .any(|l| l.contains(&needle))
}

fn wait_vip6(pair: &Pair, node: &str, present: bool, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    while has_vip6(pair, node) != present {
        assert!(
            t0.elapsed() < timeout,
            "{node}: VIP {VIP6} did not {} within {timeout:?}: {:?}",
            if present { "appear" } else { "disappear" },
            v6_lines(pair.host(node))
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

/// Polls until `to` holds the IPv6 VIP and `from` does not: (when it left `from`, when it
/// settled on `to`, whether both held it at once).
fn watch_takeover6(
    pair: &Pair,
    from: &str,
    to: &str,
    timeout: Duration,
) -> (Option<Duration>, Duration, bool) {
    let t0 = Instant::now();
    let (mut gone, mut both) = (None, false);
    loop {
        let a = has_vip6(pair, from);
        let b = has_vip6(pair, to);
        if !a && gone.is_none() {
            gone = Some(t0.elapsed());
        }
        both |= a && b;
        if b && !a {
            return (gone, t0.elapsed(), both);
        }
        assert!(
            t0.elapsed() < timeout,
            "no ipv6 takeover by {to} within {timeout:?} (from has {a}, to has {b})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Who answers a connection from the client to [VIP6]:PORT6 (None: nobody within 300 ms).
fn ask6(pair: &Pair) -> Option<String> {
    pair.client
        .run(|| {
            let addr: SocketAddr = format!("[{VIP6}]:{PORT6}").parse().expect("addr");
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
            s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .expect("client run")
}

fn wait_answer6(pair: &Pair, node: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        last = ask6(pair);
        if last.as_deref() == Some(node) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("client was not answered by {node} over ipv6 within {timeout:?} (last {last:?})");
}

/// The IPv4 pair with IPv6 turned on (the test bed turns it off): link-local addresses on the
/// LBs through normal DAD (so the daemon's NODAD VIPs are the only shortcut), the client at
/// 2001:2::2/64, and IPv6 responders on the LBs.
fn ipv6_pair(name: &str) -> (Pair, Vec<Responder>) {
    let pair = Pair::build(name, ipv6_yaml());
    for node in ["lb1", "lb2", "client"] {
        let host = pair.host_any(node);
        host.sysctl("net.ipv6.conf.all.disable_ipv6", "0")
            .expect("enable ipv6");
        host.sysctl(&format!("net.ipv6.conf.{IFACE}.disable_ipv6"), "0")
            .expect("enable ipv6 on the interface");
    }
    ip_in(
        &pair.client,
        &["-6", "addr", "add", "2001:2::2/64", "dev", IFACE, "nodad"],
    );
    for node in ["lb1", "lb2"] {
        let t0 = Instant::now();
        loop {
            let lines = v6_lines(pair.host(node));
            if lines
                .iter()
                .any(|l| l.contains("inet6 fe80::") && !l.contains("tentative"))
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{node}: no usable link-local address: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let any6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, PORT6));
    let responders = vec![
        Responder::start_at(&pair.lb1, "lb1", any6),
        Responder::start_at(&pair.lb2, "lb2", any6),
    ];
    (pair, responders)
}

fn elect6(pair: &Pair) -> (Process, Process) {
    let d1 = pair.start("lb1");
    let d2 = pair.start("lb2");
    wait_vip6(pair, "lb1", true, Duration::from_secs(5));
    wait_answer6(pair, "lb1", Duration::from_secs(3));
    assert!(!has_vip6(pair, "lb2"), "VIP on both nodes");
    // Added with IFA_F_NODAD: usable at once, never tentative.
    let line = v6_lines(&pair.lb1)
        .into_iter()
        .find(|l| l.contains(VIP6))
        .expect("vip line");
    assert!(!line.contains("tentative"), "{line}");
    let st = pair.control("lb1", r#"{"cmd":"status"}"#);
    assert_eq!(st["instances"][0]["state"], "master", "{st}");
    let st2 = pair.control("lb2", r#"{"cmd":"status"}"#);
    assert_eq!(st2["instances"][0]["state"], "backup", "{st2}");
    let master = st2["instances"][0]["master"].as_str().unwrap_or("");
    assert!(
        master.starts_with("fe80:"),
        "adverts not from a link-local source: {st2}"
    );
    (d1, d2)
}

#[test]
fn ipv6_instance_fails_over_on_link_loss_and_fails_back() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let (pair, _responders) = ipv6_pair("vrrp-v6-link");
    let (d1, d2) = elect6(&pair);
    pair.lb1.link_down(IFACE).expect("link down");
    let (gone, took, both) = watch_takeover6(&pair, "lb1", "lb2", Duration::from_secs(3));
    eprintln!("ipv6 link down: VIP gone from lb1 after {gone:?}, on lb2 after {took:?}");
    assert!(!both, "both nodes held the ipv6 VIP");
    // The new master's unsolicited NA moves the client's neighbor entry at once.
    wait_answer6(&pair, "lb2", Duration::from_secs(2));
    let st = pair.control("lb2", r#"{"cmd":"status"}"#);
    assert!(
        st["instances"][0]["counters"]["garp_sent"].as_u64() >= Some(1),
        "no unsolicited NA sent: {st}"
    );
    pair.lb1.link_up(IFACE).expect("link up");
    wait_vip6(&pair, "lb1", true, Duration::from_secs(3));
    wait_vip6(&pair, "lb2", false, Duration::from_secs(1));
    wait_answer6(&pair, "lb1", Duration::from_secs(3));
    drop((d1, d2));
}

#[test]
fn ipv6_sigkill_of_the_master_leaves_no_vip_behind() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let (pair, _responders) = ipv6_pair("vrrp-v6-kill");
    let (mut d1, d2) = elect6(&pair);
    d1.signal(Signal::SIGKILL)
        .expect("kill -9 the daemon's process group");
    let (gone, took, both) = watch_takeover6(&pair, "lb1", "lb2", Duration::from_secs(3));
    let gone = gone.expect("VIP left lb1");
    eprintln!("ipv6 sigkill: VIP gone from lb1 after {gone:?}, on lb2 after {took:?}");
    assert!(
        gone <= Duration::from_millis(400),
        "ipv6 VIP stayed on the killed master for {gone:?}\n{}",
        logs(&d1)
    );
    assert!(!both, "both nodes held the ipv6 VIP");
    // The guardian resigns over IPv6 on the dead daemon's behalf: Skew_Time, not Master_Down.
    assert!(
        took < LIVENESS_FAST,
        "ipv6 takeover after SIGKILL took {took:?}"
    );
    wait_answer6(&pair, "lb2", Duration::from_secs(2));
    drop(d2);
}
