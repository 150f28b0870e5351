//! Shared pair test bed for the `pair_*` namespace tests: two nodes lb1/lb2 each running
//! `tandem supervisor --node lbN` (proxy and VRRP daemon as its children), a LAN segment
//! (198.18.0.0/24, VIP 198.18.0.100/24), a sync segment (198.18.1.0/24), a client and a backend
//! host with two servers (web1 198.18.0.21, web2 198.18.0.22) answering their own names.
//!
//! Owns the bed (`Bed`, `Node`, `Server`), the pair configuration and the control-socket
//! helpers. Each supervisor runs in its own mount namespace (`unshare -m` + a tmpfs on
//! /run/tandem-pair) so both proxies can use the same `runtime.socket` path, as on two real
//! appliances. Must not send traffic from the root namespace.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem_testbed::{Host, HostThread, Process, Testbed};

/// Liveness bound for every wait; the figures come from the printed measurements.
pub const WAIT: Duration = Duration::from_secs(30);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const RUN_DIR: &str = "/run/tandem-pair";

static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn config(weight: u32, comment: &str) -> String {
    config_with(weight, comment, "")
}

/// The pair configuration with `vrrp_extra` appended to the `www` instance (indented keys,
/// e.g. `    track: { proxy: 60 }\n`).
pub fn config_with(weight: u32, comment: &str, vrrp_extra: &str) -> String {
    format!(
        r#"# {comment}
version: 1
cluster:
  name: test
  nodes:
    lb1: {{ lan_address: 198.18.0.11, sync_address: 198.18.1.1, priority: 150 }}
    lb2: {{ lan_address: 198.18.0.12, sync_address: 198.18.1.2, priority: 100 }}
vrrp:
  - name: www
    interface: eth1
    vrid: 51
    advert_interval: 100ms
    preempt: false
    addresses: [198.18.0.100/24]
{vrrp_extra}frontends:
  - name: web
    bind: ["198.18.0.100:80"]
    default_backend: app
backends:
  - name: app
    balance: roundrobin
    persistence: {{ source: {{ expire: 30m }} }}
    servers:
      - {{ name: web1, address: 198.18.0.21:8080, weight: {weight} }}
      - {{ name: web2, address: 198.18.0.22:8080, weight: 100 }}
sync: {{ port: 7400 }}
runtime: {{ socket: {RUN_DIR}/proxy.sock }}
"#
    )
}

/// An HTTP server in the backend host answering every request with its name.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<HostThread<()>>,
}

impl Server {
    pub fn start(host: &Host, addr: &'static str, name: &'static str) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = host
            .spawn_thread(move || {
                let l = TcpListener::bind(addr).expect("bind server");
                l.set_nonblocking(true).expect("nonblocking");
                let deadline = Instant::now() + Duration::from_secs(300);
                while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match l.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                            let mut r = BufReader::new(s.try_clone().expect("clone"));
                            let mut line = String::new();
                            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                                line.clear();
                            }
                            let _ = s.write_all(
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}", name.len()).as_bytes(),
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
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

pub struct Node {
    pub name: &'static str,
    pub host: Host,
    pub dir: PathBuf,
    pub process: Option<Process>,
}

impl Node {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("supervisor.sock")
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "sh",
            "-c",
            &format!("mount -t tmpfs tandem-pair {RUN_DIR} && exec \"$0\" \"$@\""),
        ])
        .arg(crate::tandem_bin())
        .args(["supervisor", "--node", self.name, "--data-dir"])
        .arg(&self.dir)
        .arg("--socket")
        .arg(self.socket())
        .arg("--vrrp-socket")
        .arg(self.dir.join("vrrp.sock"))
        .arg("--run-dir")
        .arg(self.dir.join("tandem"))
        .env("RUST_LOG", "info,tandem_sync=debug");
        self.process = Some(self.host.spawn(&mut cmd).expect("spawn supervisor"));
        let sock = self.socket();
        wait_for(&format!("{} control socket", self.name), || {
            UnixStream::connect(&sock).is_ok()
        });
    }

    pub fn call(&self, req: Value) -> Value {
        let mut s = UnixStream::connect(self.socket()).expect("connect control socket");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(format!("{req}\n").as_bytes()).expect("write");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }

    pub fn ok(&self, req: Value) -> Value {
        let r = self.call(req.clone());
        if r["ok"] != true {
            let logs = self.call(json!({"cmd": "logs", "lines": 40}));
            panic!("{} {req}: {r:#}\nlogs: {:#}", self.name, logs["lines"]);
        }
        r
    }

    pub fn generation(&self) -> (u64, String) {
        let s = self.ok(json!({"cmd": "status"}));
        (
            s["generation"]["number"].as_u64().unwrap_or(0),
            s["generation"]["fingerprint"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    }

    pub fn sync(&self) -> Value {
        self.ok(json!({"cmd": "sync_status"}))
    }

    pub fn link(&self) -> String {
        self.sync()["sync"]["core"]["link"]
            .as_str()
            .unwrap_or("none")
            .to_owned()
    }

    pub fn alarms(&self) -> Vec<String> {
        self.ok(json!({"cmd": "status"}))["alarms"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `www` instance as the supervisor's `status` shows it (from the VRRP daemon).
    pub fn vrrp(&self) -> Value {
        self.ok(json!({"cmd": "status"}))["vrrp"]["instances"][0].clone()
    }

    /// The message of alarm `id`, if raised.
    pub fn alarm(&self, id: &str) -> Option<String> {
        self.ok(json!({"cmd": "status"}))["alarms"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == id)
            .and_then(|a| a["message"].as_str().map(str::to_owned))
    }

    /// Drops every VRRP packet (IP protocol 112) in and out of this node's LAN interface with
    /// a tc classic-BPF filter (iproute2 only; no nftables/iptables on the build machines):
    /// the LAN heartbeat is cut, client traffic still flows.
    pub fn cut_vrrp(&self) {
        // ldb [net_off + 9] (the IP protocol); jeq 112 → TC_ACT_SHOT (2), else TC_ACT_OK (0).
        const DROP_112: &str = "4,48 0 0 4293918729,21 0 1 112,6 0 0 2,6 0 0 0";
        self.tc(&["qdisc", "add", "dev", "eth1", "clsact"]);
        for dir in ["ingress", "egress"] {
            self.tc(&[
                "filter", "add", "dev", "eth1", dir, "protocol", "ip", "bpf", "bytecode", DROP_112,
                "da",
            ]);
        }
    }

    /// Removes the filter of [`Node::cut_vrrp`].
    pub fn heal_vrrp(&self) {
        self.tc(&["qdisc", "del", "dev", "eth1", "clsact"]);
    }

    fn tc(&self, args: &[&str]) {
        let out = self
            .host
            .output(Command::new("tc").args(args), Duration::from_secs(5))
            .expect("run tc");
        assert!(
            out.status.success(),
            "tc {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The pid and health of supervised service `name` (`proxy`, `vrrp`) in `status`.
    pub fn service(&self, name: &str) -> Value {
        let s = self.ok(json!({"cmd": "status"}));
        s["services"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
            .unwrap_or_default()
    }

    /// `status` straight from this node's VRRP daemon (its control socket), `None` while it
    /// does not answer (restarting); bounded by a 200 ms timeout.
    pub fn vrrpd_status(&self) -> Option<Value> {
        let mut s = UnixStream::connect(self.dir.join("vrrp.sock")).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
        s.set_write_timeout(Some(Duration::from_millis(200))).ok()?;
        s.write_all(b"{\"cmd\":\"status\"}\n").ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        let v: Value = serde_json::from_str(&line).ok()?;
        (v["ok"] == true).then_some(v)
    }

    pub fn has_vip(&self) -> bool {
        self.host.has_address("eth1", VIP).expect("addresses")
    }
}

pub struct Bed {
    pub lb: [Node; 2],
    pub client: Host,
    _servers: Vec<Server>,
    _bed: Testbed,
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

impl Bed {
    /// Builds the bed, starts both supervisors, pairs them, commits the initial config on both
    /// (the sync address lives in the config), and waits for the sync link.
    pub fn new(name: &str) -> Bed {
        Bed::with_config(name, &config(100, "initial"))
    }

    /// As [`Bed::new`] with `initial` as the first configuration on both nodes.
    pub fn with_config(name: &str, initial: &str) -> Bed {
        let bed = Bed::bare(name);
        let lb = &bed.lb;
        // Pairing, as an operator does with `tandemctl pair` on both consoles.
        let fp = bed.fingerprints();
        lb[0].ok(json!({"cmd": "sync_pair", "peer_fingerprint": fp[1]}));
        lb[1].ok(json!({"cmd": "sync_pair", "peer_fingerprint": fp[0]}));
        for n in lb {
            n.ok(json!({"cmd": "commit", "text": initial, "comment": "initial"}));
        }
        let t = wait_for("sync link up on both", || {
            lb.iter().all(|n| n.link() == "up")
        });
        println!("sync link up {t:?} after the initial commits");
        assert_eq!(lb[0].generation(), lb[1].generation());
        bed
    }

    /// Both nodes' sync certificate fingerprints, as `pair` shows them.
    pub fn fingerprints(&self) -> Vec<String> {
        self.lb
            .iter()
            .map(|n| {
                n.ok(json!({"cmd": "sync_pair"}))["fingerprint"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// The bed with both supervisors started: not paired, nothing committed.
    pub fn bare(name: &str) -> Bed {
        std::fs::create_dir_all(RUN_DIR).expect("run dir");
        let bed = Testbed::new(name).expect("testbed");
        let lan = bed.segment("lan").expect("lan");
        let sync = bed.segment("sync").expect("sync");
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir().join(format!(
            "tandem-pair-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mk = |n: &'static str, lan_ip: &str, sync_ip: &str| {
            let host = bed.host(n).expect("host");
            host.attach(&lan, "eth1", lan_ip).expect("attach lan");
            host.attach(&sync, "eth2", sync_ip).expect("attach sync");
            host.sysctl("net.ipv4.ip_nonlocal_bind", "1")
                .expect("sysctl");
            let dir = base.join(n);
            std::fs::create_dir_all(&dir).expect("dir");
            Node {
                name: n,
                host,
                dir,
                process: None,
            }
        };
        let mut lb = [
            mk("lb1", "198.18.0.11/24", "198.18.1.1/24"),
            mk("lb2", "198.18.0.12/24", "198.18.1.2/24"),
        ];
        let client = bed.host("client").expect("client");
        client
            .attach(&lan, "eth1", "198.18.0.2/24")
            .expect("attach client");
        for i in 3..=10 {
            client
                .add_address("eth1", &format!("198.18.0.{i}/24"))
                .expect("client address");
        }
        let backend = bed.host("backend").expect("backend");
        backend
            .attach(&lan, "eth1", "198.18.0.21/24")
            .expect("attach backend");
        backend
            .add_address("eth1", "198.18.0.22/24")
            .expect("backend address");
        let servers = vec![
            Server::start(&backend, "198.18.0.21:8080", "web1"),
            Server::start(&backend, "198.18.0.22:8080", "web2"),
        ];
        for n in &mut lb {
            n.start();
        }
        Bed {
            lb,
            client,
            _servers: servers,
            _bed: bed,
        }
    }

    /// `GET /` on the VIP from client address `src`: the server's name, or None.
    pub fn get(&self, src: &str) -> Option<String> {
        let out = self
            .client
            .output(
                Command::new("curl").args([
                    "-s",
                    "-m",
                    "2",
                    "--interface",
                    src,
                    "http://198.18.0.100/",
                ]),
                Duration::from_secs(5),
            )
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for n in &mut self.lb {
            drop(n.process.take());
            let _ = std::fs::remove_dir_all(&n.dir);
        }
    }
}
