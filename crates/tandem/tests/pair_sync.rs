//! Pair tests of config sync in network namespaces: two nodes lb1/lb2 each running
//! `tandem supervisor --node lbN` (proxy and VRRP daemon as its children), a LAN segment
//! (198.18.0.0/24, VIP 198.18.0.100/24), a sync segment (198.18.1.0/24), a client and a backend
//! host with two servers (web1 198.18.0.21, web2 198.18.0.22) answering their own names.
//!
//! Owns the acceptance scenarios of config sync: a commit on lb1 runs on lb2 (time printed),
//! an invalid candidate changes nothing on either node, commits queue while the sync link is
//! cut and lb2 catches up after, commits on both sides while cut raise a divergence on both
//! with no overwrite (then resolved), and source persistence survives a failover.
//! Drives the supervisors through their control sockets (the `tandemctl` protocol,
//! docs/control-api.md), so it needs no other binary. Each supervisor runs in its own mount
//! namespace (`unshare -m` + a tmpfs on /run/tandem-pair) so both proxies can use the same
//! `runtime.socket` path, as on two real appliances.
//! Must not send traffic from the root namespace. Needs root: otherwise each test prints a
//! skip notice.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem_testbed::{Host, HostThread, Process, Testbed, require_root};

/// Liveness bound for every wait; the figures come from the printed measurements.
const WAIT: Duration = Duration::from_secs(30);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const RUN_DIR: &str = "/run/tandem-pair";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn config(weight: u32, comment: &str) -> String {
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
frontends:
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

struct Node {
    name: &'static str,
    host: Host,
    dir: PathBuf,
    process: Option<Process>,
}

impl Node {
    fn socket(&self) -> PathBuf {
        self.dir.join("supervisor.sock")
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "sh",
            "-c",
            &format!("mount -t tmpfs tandem-pair {RUN_DIR} && exec \"$0\" \"$@\""),
        ])
        .arg(env!("CARGO_BIN_EXE_tandem"))
        .args(["supervisor", "--node", self.name, "--data-dir"])
        .arg(&self.dir)
        .arg("--socket")
        .arg(self.socket())
        .arg("--vrrp-socket")
        .arg(self.dir.join("vrrp.sock"))
        .env("RUST_LOG", "info,tandem_sync=debug");
        self.process = Some(self.host.spawn(&mut cmd).expect("spawn supervisor"));
        let sock = self.socket();
        wait_for(&format!("{} control socket", self.name), || {
            UnixStream::connect(&sock).is_ok()
        });
    }

    fn call(&self, req: Value) -> Value {
        let mut s = UnixStream::connect(self.socket()).expect("connect control socket");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(format!("{req}\n").as_bytes()).expect("write");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }

    fn ok(&self, req: Value) -> Value {
        let r = self.call(req.clone());
        if r["ok"] != true {
            let logs = self.call(json!({"cmd": "logs", "lines": 40}));
            panic!("{} {req}: {r:#}\nlogs: {:#}", self.name, logs["lines"]);
        }
        r
    }

    fn generation(&self) -> (u64, String) {
        let s = self.ok(json!({"cmd": "status"}));
        (
            s["generation"]["number"].as_u64().unwrap_or(0),
            s["generation"]["fingerprint"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    }

    fn sync(&self) -> Value {
        self.ok(json!({"cmd": "sync_status"}))
    }

    fn link(&self) -> String {
        self.sync()["sync"]["core"]["link"]
            .as_str()
            .unwrap_or("none")
            .to_owned()
    }

    fn alarms(&self) -> Vec<String> {
        self.ok(json!({"cmd": "status"}))["alarms"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn has_vip(&self) -> bool {
        self.host.has_address("eth1", VIP).expect("addresses")
    }
}

struct Bed {
    lb: [Node; 2],
    client: Host,
    _servers: Vec<Server>,
    _bed: Testbed,
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Duration {
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
    fn new(name: &str) -> Bed {
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
        // Pairing, as an operator does with `tandemctl pair` on both consoles.
        let fp: Vec<String> = lb
            .iter()
            .map(|n| {
                n.ok(json!({"cmd": "sync_pair"}))["fingerprint"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        lb[0].ok(json!({"cmd": "sync_pair", "peer_fingerprint": fp[1]}));
        lb[1].ok(json!({"cmd": "sync_pair", "peer_fingerprint": fp[0]}));
        for n in &lb {
            n.ok(json!({"cmd": "commit", "text": config(100, "initial"), "comment": "initial"}));
        }
        let t = wait_for("sync link up on both", || {
            lb.iter().all(|n| n.link() == "up")
        });
        println!("sync link up {t:?} after the initial commits");
        assert_eq!(lb[0].generation(), lb[1].generation());
        Bed {
            lb,
            client,
            _servers: servers,
            _bed: bed,
        }
    }

    /// `GET /` on the VIP from client address `src`: the server's name, or None.
    fn get(&self, src: &str) -> Option<String> {
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

#[test]
fn pair_a_commit_on_lb1_runs_on_lb2_and_an_invalid_one_changes_nothing() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let bed = Bed::new("pairsync");
    let [lb1, lb2] = &bed.lb;
    let mut figures = Vec::new();
    for weight in [50, 60, 70] {
        let t0 = Instant::now();
        let r =
            lb1.ok(json!({"cmd": "commit", "text": config(weight, "weight"), "comment": "weight"}));
        let reply_time = t0.elapsed();
        let msg = r["message"].as_str().unwrap_or("").to_owned();
        let g = lb1.generation();
        let on_peer = wait_for("lb2 at lb1's generation", || lb2.generation() == g) + reply_time;
        println!(
            "commit weight {weight}: reply after {reply_time:?} ({msg}); running on lb2 by {on_peer:?}"
        );
        assert!(msg.contains("committed on lb1 and lb2"), "{r:#}");
        assert_eq!(r["nodes"], json!(["lb1", "lb2"]));
        figures.push(on_peer);
        assert!(on_peer < Duration::from_secs(5), "liveness bound");
    }
    println!("commit -> running on lb2: {figures:?}");
    // Same generation in `status` on both.
    assert_eq!(lb1.generation(), lb2.generation());
    let h2 = lb2.ok(json!({"cmd": "history", "limit": 1}));
    assert_eq!(
        h2["generations"][0]["node"], "lb1",
        "the peer keeps the origin: {h2:#}"
    );

    // Invalid: refused with line and column; nothing changes on either node.
    let before = (lb1.generation(), lb2.generation());
    let bad = config(70, "invalid").replace("weight: 70", "weight: heavy");
    let r = lb1.call(json!({"cmd": "commit", "text": bad}));
    assert_eq!(r["ok"], false, "{r:#}");
    let d = &r["diagnostics"][0];
    assert!(
        d["line"].as_u64().is_some() && d["column"].as_u64().is_some(),
        "{r:#}"
    );
    println!(
        "invalid commit refused: {} at line {} column {}",
        d["message"], d["line"], d["column"]
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!((lb1.generation(), lb2.generation()), before);
}

#[test]
fn pair_commits_queue_while_the_sync_link_is_cut_and_divergence_overwrites_nothing() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let bed = Bed::new("paircut");
    let [lb1, lb2] = &bed.lb;
    lb1.host.link_down("eth2").expect("cut");
    let t = wait_for("both see the link down", || {
        lb1.link() == "down" && lb2.link() == "down"
    });
    println!("sync link cut noticed after {t:?}");
    let r1 = lb1.ok(json!({"cmd": "commit", "text": config(40, "queued 1")}));
    let r2 = lb1.ok(json!({"cmd": "commit", "text": config(30, "queued 2")}));
    for r in [&r1, &r2] {
        let m = r["message"].as_str().unwrap_or("");
        assert!(m.contains("peer lb2 unreachable, change queued"), "{r:#}");
        println!("{m}");
    }
    let queued = lb1.sync()["sync"]["core"]["queued"].clone();
    assert_eq!(queued.as_array().map(Vec::len), Some(2), "{queued}");
    wait_for("alarm sync-down on lb1", || {
        lb1.alarms().contains(&"sync-down".to_owned())
    });
    lb1.host.link_up("eth2").expect("heal");
    let g = lb1.generation();
    let t = wait_for("lb2 catches up", || lb2.generation() == g);
    println!("lb2 caught up {t:?} after the link returned");

    // Divergence: both commit while cut.
    lb1.host.link_down("eth2").expect("cut");
    wait_for("both see the link down", || {
        lb1.link() == "down" && lb2.link() == "down"
    });
    lb1.ok(json!({"cmd": "commit", "text": config(11, "lb1 side")}));
    lb2.ok(json!({"cmd": "commit", "text": config(22, "lb2 side")}));
    let (a, b) = (lb1.generation(), lb2.generation());
    assert_ne!(a, b);
    lb1.host.link_up("eth2").expect("heal");
    let t = wait_for("divergence alarm on both", || {
        lb1.alarms().contains(&"divergence".to_owned())
            && lb2.alarms().contains(&"divergence".to_owned())
    });
    println!("divergence raised on both {t:?} after the link returned");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        (lb1.generation(), lb2.generation()),
        (a.clone(), b),
        "nothing overwritten"
    );
    wait_for("the diff on lb2", || !lb2.sync()["divergence"].is_null());
    println!(
        "lb2 show sync divergence: {}",
        lb2.sync()["divergence"]["text"]
    );
    // The operator on lb2 takes lb1's side.
    let r = lb2.ok(json!({"cmd": "sync_resolve", "side": "use-peer"}));
    println!("resolved: {}", r["comment"]);
    wait_for("both converge on lb1's config", || {
        let (x, y) = (lb1.generation(), lb2.generation());
        x == y && x.1 == a.1
    });
    wait_for("divergence cleared", || {
        !lb1.alarms().contains(&"divergence".to_owned())
            && !lb2.alarms().contains(&"divergence".to_owned())
    });
}

#[test]
fn pair_source_persistence_survives_a_failover() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let bed = Bed::new("pairpersist");
    let [lb1, lb2] = &bed.lb;
    wait_for("lb1 holds the VIP", || lb1.has_vip() && !lb2.has_vip());
    let clients: Vec<String> = (3..=10).map(|i| format!("198.18.0.{i}")).collect();
    let mut before = Vec::new();
    for c in &clients {
        let mut got = None;
        wait_for("an answer through the VIP", || {
            got = bed.get(c);
            got.is_some()
        });
        before.push(got.unwrap_or_default());
    }
    println!("before failover: {before:?}");
    // Let the runtime sync carry the stick table over (every second).
    std::thread::sleep(Duration::from_millis(2500));
    let t0 = Instant::now();
    lb1.ok(json!({"cmd": "failover"}));
    wait_for("the VIP on lb2", || lb2.has_vip() && !lb1.has_vip());
    println!("VIP moved to lb2 after {:?}", t0.elapsed());
    // Reverse order: a fresh round robin on lb2 would hand out web1, web2, ... again, so
    // only the imported stick table keeps every client on its server.
    let mut after = Vec::new();
    for c in clients.iter().rev() {
        let mut got = None;
        wait_for("an answer through the VIP on lb2", || {
            got = bed.get(c);
            got.is_some()
        });
        after.push(got.unwrap_or_default());
    }
    after.reverse();
    println!("after failover:  {after:?}");
    assert_eq!(before, after, "every client stays on its server");
}
