//! Network tests of `apply` in test-bed namespaces (root only; addresses from 198.18.0.0/15):
//! a server behind a router is reachable only while the route is applied, a VLAN interface
//! carries traffic over a veth, and an active-backup bond loses a port under a live TCP
//! connection.
//!
//! Owns only these tests. The VLAN and bond tests need kernel support the build machines lack (no 8021q, no bonding):
//! they are `#[ignore]`d, and fail with that reason when run (`--ignored`) on such a kernel.
//! Every loop is bounded, and the testbed removes its namespaces on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use tandem_config::{MemoryCertFiles, Network};
use tandem_netcfg::{Files, IpSystem, Plan, apply, plan};
use tandem_testbed::{Attach, Host, Testbed, require_root};

const STEP: Duration = Duration::from_secs(5);

/// The network of a single-node config whose `network:` section is `section`.
fn net(section: &str) -> Network {
    let text = format!(
        "version: 1\nnetwork:\n{section}\nfrontends:\n  - {{ name: w, bind: [\"127.0.0.1:8080\"], default_backend: b }}\nbackends:\n  - {{ name: b, servers: [{{ name: s, address: 127.0.0.1:9001 }}] }}\n"
    );
    tandem_config::parse(&text, "t.yaml", &MemoryCertFiles::new(Vec::<String>::new()))
        .unwrap_or_else(|r| panic!("{r:?}"))
        .config
        .network
}

/// Applies `plan` inside `host`, files in a scratch directory.
fn apply_in(host: &Host, plan: &Plan) {
    let dir = std::env::temp_dir().join(format!(
        "tandem-netcfg-{}-{}",
        std::process::id(),
        host.name()
    ));
    let mut sys = IpSystem {
        files: Files::in_dir(&dir),
    };
    host.run(|| apply(plan, &mut sys))
        .expect("host")
        .unwrap_or_else(|e| panic!("apply in {}: {e}", host.name()));
    let _ = std::fs::remove_dir_all(&dir);
}

fn ip(host: &Host, args: &[&str]) -> std::process::Output {
    host.output(Command::new("ip").args(args), STEP)
        .expect("ip")
}

/// Whether `host` can create a link of `kind` (the kernel may lack 8021q or bonding).
fn supports(host: &Host, args: &[&str]) -> bool {
    let ok = ip(host, args).status.success();
    if ok {
        ip(host, &["link", "del", "probe0"]);
    }
    ok
}

fn connects(host: &Host, addr: SocketAddr) -> bool {
    host.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
        .expect("host")
}

#[test]
fn a_routed_server_is_reachable_only_while_the_route_is_applied() {
    if !require_root() {
        return;
    }
    let bed = Testbed::new("netcfg_route").expect("testbed");
    let lan = bed.segment("lan").expect("segment");
    let far = bed.segment("far").expect("segment");
    let lb = bed.host("lb").expect("host");
    let router = bed.host("router").expect("host");
    let server = bed.host("server").expect("host");
    lb.attach(&lan, "lan", "198.18.0.11/24").expect("attach");
    router
        .attach(&lan, "lan", "198.18.0.254/24")
        .expect("attach");
    router.attach(&far, "far", "198.18.2.1/24").expect("attach");
    router
        .sysctl("net.ipv4.ip_forward", "1")
        .expect("forwarding");
    server
        .attach(&far, "far", "198.18.2.10/24")
        .expect("attach");
    let back = ip(
        &server,
        &["route", "add", "198.18.0.0/24", "via", "198.18.2.1"],
    );
    assert!(back.status.success(), "{back:?}");
    let addr: SocketAddr = "198.18.2.10:7000".parse().unwrap();
    let _listener = server
        .run(|| TcpListener::bind(addr))
        .expect("host")
        .expect("bind");

    assert!(!connects(&lb, addr), "reachable before the route");
    let next = net("  routes: [{ to: 198.18.2.0/24, via: 198.18.0.254, dev: lan }]");
    let p = plan(&Network::default(), &next);
    apply_in(&lb, &p);
    assert!(connects(&lb, addr), "unreachable with the route");
    // Applying again from nothing (a restart that lost the previous state) is no error.
    apply_in(&lb, &p);
    apply_in(&lb, &p.inverse());
    assert!(!connects(&lb, addr), "still reachable after the rollback");

    // The same through a default gateway.
    let gw = plan(
        &Network::default(),
        &net("  gateway: { ipv4: 198.18.0.254 }"),
    );
    apply_in(&lb, &gw);
    assert!(connects(&lb, addr), "unreachable through the gateway");
    apply_in(&lb, &gw.inverse());
    assert!(!connects(&lb, addr), "reachable after removing the gateway");
}

#[test]
#[ignore = "needs a kernel with 802.1Q support (8021q); the build and CI machines have none: run with --ignored where it exists"]
fn a_vlan_interface_carries_traffic_over_a_veth() {
    if !require_root() {
        return;
    }
    let bed = Testbed::new("netcfg_vlan").expect("testbed");
    let lan = bed.segment("lan").expect("segment");
    let a = bed.host("a").expect("host");
    let b = bed.host("b").expect("host");
    a.attach(&lan, "lan", "198.18.0.1/24").expect("attach");
    b.attach(&lan, "lan", "198.18.0.2/24").expect("attach");
    if !supports(
        &a,
        &[
            "link", "add", "link", "lan", "name", "probe0", "type", "vlan", "id", "9",
        ],
    ) {
        panic!("this kernel has no 802.1Q VLAN support (8021q): the test cannot run here");
    }
    let next = net("  vlans: { lan.120: {} }\n  interfaces: { lan.120: { mtu: 1400 } }");
    let p = plan(&Network::default(), &next);
    apply_in(&a, &p);
    apply_in(&b, &p);
    a.add_address("lan.120", "198.18.120.1/24")
        .expect("address");
    b.add_address("lan.120", "198.18.120.2/24")
        .expect("address");
    let addr: SocketAddr = "198.18.120.1:7000".parse().unwrap();
    let listener = a
        .run(|| TcpListener::bind(addr))
        .expect("host")
        .expect("bind");
    let server = a
        .spawn_thread(move || {
            let (mut s, _) = listener.accept().ok()?;
            s.set_read_timeout(Some(STEP)).ok()?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).ok()?;
            s.write_all(&buf).ok()?;
            Some(())
        })
        .expect("thread");
    let echoed = b
        .run(move || -> std::io::Result<[u8; 5]> {
            let mut s = TcpStream::connect_timeout(&addr, STEP)?;
            s.set_read_timeout(Some(STEP))?;
            s.write_all(b"hello")?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf)?;
            Ok(buf)
        })
        .expect("host")
        .expect("echo over the VLAN");
    assert_eq!(&echoed, b"hello");
    assert_eq!(server.join().expect("server"), Some(()));
    let shown =
        String::from_utf8_lossy(&ip(&a, &["-d", "link", "show", "lan.120"]).stdout).into_owned();
    assert!(
        shown.contains("vlan protocol 802.1Q id 120") && shown.contains("mtu 1400"),
        "{shown}"
    );
    apply_in(&a, &p.inverse());
    assert!(
        !ip(&a, &["link", "show", "lan.120"]).status.success(),
        "lan.120 left after rollback"
    );
}

#[test]
#[ignore = "needs a kernel with bonding support; the build and CI machines have none: run with --ignored where it exists"]
fn an_active_backup_bond_loses_a_port_and_the_client_keeps_working() {
    if !require_root() {
        return;
    }
    let bed = Testbed::new("netcfg_bond").expect("testbed");
    let lan = bed.segment("lan").expect("segment");
    let lb = bed.host("lb").expect("host");
    let client = bed.host("client").expect("host");
    lb.attach_with(&lan, Attach::new("eth1")).expect("attach");
    lb.attach_with(&lan, Attach::new("eth2")).expect("attach");
    client.attach(&lan, "lan", "198.18.0.2/24").expect("attach");
    if !supports(&lb, &["link", "add", "probe0", "type", "bond"]) {
        panic!("this kernel has no bonding support: the test cannot run here");
    }
    let next = net("  bonds: { bond0: { mode: active-backup, ports: [eth1, eth2] } }");
    let p = plan(&Network::default(), &next);
    apply_in(&lb, &p);
    lb.add_address("bond0", "198.18.0.1/24").expect("address");
    let addr: SocketAddr = "198.18.0.1:7000".parse().unwrap();
    let listener = lb
        .run(|| TcpListener::bind(addr))
        .expect("host")
        .expect("bind");
    const ROUNDS: usize = 40;
    let server = lb
        .spawn_thread(move || -> std::io::Result<usize> {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(STEP))?;
            let mut buf = [0u8; 4];
            for _ in 0..ROUNDS {
                s.read_exact(&mut buf)?;
                s.write_all(&buf)?;
            }
            Ok(ROUNDS)
        })
        .expect("thread");
    let lb_cut = lb.clone();
    let rounds = client
        .run(move || -> std::io::Result<usize> {
            let mut s = TcpStream::connect_timeout(&addr, STEP)?;
            s.set_read_timeout(Some(STEP))?;
            for n in 0..ROUNDS {
                if n == ROUNDS / 4 {
                    // Pull the cable of the first port (the active one) mid-conversation.
                    lb_cut.link_down("eth1").expect("link down");
                }
                let msg = (n as u32).to_be_bytes();
                s.write_all(&msg)?;
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf)?;
                assert_eq!(buf, msg);
                std::thread::sleep(Duration::from_millis(25));
            }
            Ok(ROUNDS)
        })
        .expect("host")
        .expect("the client saw an error");
    assert_eq!(rounds, ROUNDS);
    assert_eq!(server.join().expect("server").expect("server side"), ROUNDS);
    apply_in(&lb, &p.inverse());
    assert!(
        !ip(&lb, &["link", "show", "bond0"]).status.success(),
        "bond0 left after rollback"
    );
}
