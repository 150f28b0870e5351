//! Integration tests of the testbed: traffic between hosts, link cuts, addresses, processes,
//! parallel testbeds and cleanup after panics. They need root; without it they skip (or fail
//! when `CI` is set).
//!
//! Owns only these tests; every namespace they create goes through `Testbed`.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{STEP, bed, process_gone_within, request, serve_one_line};
use tandem_testbed::{Attach, Error, Host, Segment, Testbed};

/// A LAN with hosts a (198.18.0.1) and b (198.18.0.2) on `eth1`.
fn two_hosts(bed: &Testbed) -> (Segment, Host, Host) {
    let lan = bed.segment("lan").expect("segment");
    let a = bed.host("a").expect("host a");
    let b = bed.host("b").expect("host b");
    a.attach(&lan, "eth1", "198.18.0.1/24").expect("attach a");
    b.attach(&lan, "eth1", "198.18.0.2/24").expect("attach b");
    (lan, a, b)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn tcp_round_trip_between_two_hosts() {
    let Some(bed) = bed("tcp_round_trip") else {
        return;
    };
    let (_lan, a, b) = two_hosts(&bed);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let server = a
        .spawn_thread(move || {
            let listener = TcpListener::bind("198.18.0.1:7000").expect("bind in a");
            ready_tx.send(()).expect("signal ready");
            serve_one_line(&listener, "a got: ")
        })
        .expect("server thread");
    // Connecting before the bind would be refused: wait (bounded) for the server.
    ready_rx.recv_timeout(STEP).expect("server listening");
    let reply = b
        .run(|| request(addr("198.18.0.1:7000"), "hello from b\n"))
        .expect("run in b");
    let peer = server.join().expect("server panicked");
    assert_eq!(reply.expect("request from b"), "a got: hello from b\n");
    assert_eq!(
        peer.ip(),
        Ipv4Addr::new(198, 18, 0, 2),
        "server must see b's testbed address"
    );
    bed.close().expect("teardown");
}

#[test]
fn spawned_process_talks_tcp_to_another_host() {
    let Some(bed) = bed("process_tcp") else {
        return;
    };
    let (_lan, a, b) = two_hosts(&bed);
    let listener = a
        .run(|| TcpListener::bind("198.18.0.1:7001"))
        .expect("run in a")
        .expect("bind in a");
    let server = std::thread::spawn(move || serve_one_line(&listener, "pong:"));
    // bash (Essential in Debian) as the client, through /dev/tcp.
    let out = b
        .output(
            Command::new("bash").args([
                "-c",
                "exec 3<>/dev/tcp/198.18.0.1/7001 && echo ping >&3 && cat <&3",
            ]),
            STEP,
        )
        .expect("bash in b");
    let peer = server.join().expect("server panicked");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong:ping\n");
    assert_eq!(
        peer.ip(),
        Ipv4Addr::new(198, 18, 0, 2),
        "the process must run in b"
    );
}

#[test]
fn attach_sets_addresses_and_mac_and_addresses_can_change() {
    let Some(bed) = bed("addresses") else { return };
    let lan = bed.segment("lan").expect("segment");
    let lb1 = bed.host("lb1").expect("host");
    let client = bed.host("client").expect("host");
    lb1.attach_with(
        &lan,
        Attach::new("eth1")
            .address("198.18.0.11/24")
            .mac("02:00:c6:12:00:0b"),
    )
    .expect("attach lb1");
    client
        .attach(&lan, "eth0", "198.18.0.2/24")
        .expect("attach client");

    let shown: Vec<String> = lb1
        .addresses("eth1")
        .expect("addresses")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["198.18.0.11/24"]);
    let link = lb1
        .output(
            Command::new("ip").args(["-o", "link", "show", "eth1"]),
            STEP,
        )
        .expect("ip link in lb1");
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("02:00:c6:12:00:0b"),
        "mac not set: {link:?}"
    );

    let vip = Ipv4Addr::new(198, 18, 0, 100);
    lb1.add_address("eth1", "198.18.0.100/24").expect("add vip");
    assert!(
        lb1.has_address("eth1", vip).expect("query"),
        "the VIP must be on lb1"
    );
    lb1.wait_for_address("eth1", vip, true, STEP)
        .expect("vip present");
    let listener = lb1
        .run(|| TcpListener::bind("198.18.0.100:80"))
        .expect("run")
        .expect("bind vip");
    let server = std::thread::spawn(move || serve_one_line(&listener, "vip: "));
    let reply = client
        .run(|| request(addr("198.18.0.100:80"), "hi\n"))
        .expect("run in client");
    server.join().expect("server panicked");
    assert_eq!(reply.expect("request to vip"), "vip: hi\n");

    lb1.del_address("eth1", "198.18.0.100/24").expect("del vip");
    assert!(
        !lb1.has_address("eth1", vip).expect("query"),
        "the VIP must be gone from lb1"
    );
    let lo: Vec<String> = lb1
        .addresses("lo")
        .expect("lo")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(lo, ["127.0.0.1/8"], "loopback must be up with its address");
}

#[test]
fn bad_input_is_rejected_before_anything_is_created() {
    let Some(bed) = bed("rejects") else { return };
    let lan = bed.segment("lan").expect("segment");
    let a = bed.host("a").expect("host");
    let err = a
        .attach(&lan, "eth1", "10.0.0.1/24")
        .expect_err("outside the test range");
    assert!(matches!(err, Error::AddressNotAllowed { .. }), "{err}");
    assert!(err.to_string().contains("10.0.0.1/24"), "{err}");
    let err = a
        .attach(&lan, "eth1", "198.18.0.1/8")
        .expect_err("prefix too short");
    assert!(matches!(err, Error::AddressNotAllowed { .. }), "{err}");
    // Nothing was created by the rejected attaches: eth1 does not exist in a.
    let err = a.addresses("eth1").expect_err("no eth1 in a");
    assert!(err.to_string().contains("eth1"), "{err}");
    let err = a
        .attach(&lan, "a-very-long-ifname", "198.18.0.1/24")
        .expect_err("ifname too long");
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    let err = a
        .add_address("lo", "192.0.2.1/32")
        .expect_err("outside the test range");
    assert!(matches!(err, Error::AddressNotAllowed { .. }), "{err}");
    let err = a.sysctl("kernel.hostname", "x").expect_err("global sysctl");
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    let err = a.link_down("eth9").expect_err("unknown interface");
    assert!(matches!(err, Error::UnknownInterface { .. }), "{err}");
    let err = bed.host("a").expect_err("duplicate host");
    assert!(matches!(err, Error::Duplicate { .. }), "{err}");
    a.attach(&lan, "eth1", "198.18.0.1/24")
        .expect("a valid attach still works");
    let err = a
        .attach(&lan, "eth1", "198.18.0.2/24")
        .expect_err("duplicate interface");
    assert!(matches!(err, Error::Duplicate { .. }), "{err}");
}

/// Retries `request` for at most `STEP` until it succeeds.
fn request_eventually(host: &Host, to: SocketAddr) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        match host.run(|| request(to, "again\n")).expect("run") {
            Ok(reply) => return reply,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no connection to {to} within {STEP:?}: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn link_cut_stops_traffic_and_restore_brings_it_back() {
    let Some(bed) = bed("link_cut") else { return };
    let (_lan, a, b) = two_hosts(&bed);
    let to_a = addr("198.18.0.1:7002");
    // Server: answer every connection until told to stop (bounded by accept_within's timeout).
    let listener = a
        .run(|| TcpListener::bind(to_a))
        .expect("run in a")
        .expect("bind in a");
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(60);
        while stop_rx.try_recv().is_err() && Instant::now() < deadline {
            match listener.accept() {
                Ok((s, _)) => common::answer_line(s, "up:"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });

    // The first connection on a new segment may wait for ARP on a busy machine: retry.
    assert_eq!(request_eventually(&b, to_a), "up:again\n", "before the cut");

    b.link_down("eth1").expect("cut b's cable");
    let cut = b.run(|| request(to_a, "x\n")).expect("run");
    assert!(cut.is_err(), "b reached a with its cable pulled: {cut:?}");
    // The host side only lost carrier: its address is still configured.
    assert!(
        b.has_address("eth1", Ipv4Addr::new(198, 18, 0, 2))
            .expect("query")
    );

    b.link_up("eth1").expect("restore b's cable");
    assert_eq!(request_eventually(&b, to_a), "up:again\n");

    a.admin_down("eth1").expect("admin down on a");
    let down = b.run(|| request(to_a, "x\n")).expect("run");
    assert!(
        down.is_err(),
        "b reached a while a's eth1 was admin down: {down:?}"
    );
    a.admin_up("eth1").expect("admin up on a");
    assert_eq!(request_eventually(&b, to_a), "up:again\n");

    stop_tx.send(()).expect("stop server");
    server.join().expect("server panicked");
}

#[test]
fn multicast_floods_across_the_segment() {
    // VRRP advertisements go to 224.0.0.18; the bridge must deliver them to every port.
    let Some(bed) = bed("multicast") else { return };
    let (_lan, a, b) = two_hosts(&bed);
    for h in [&a, &b] {
        let out = h
            .output(
                Command::new("ip").args(["route", "add", "224.0.0.0/4", "dev", "eth1"]),
                STEP,
            )
            .expect("ip route");
        assert!(
            out.status.success(),
            "route: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let group = Ipv4Addr::new(224, 0, 0, 18);
    let receiver = b
        .run(|| {
            let s = std::net::UdpSocket::bind("0.0.0.0:5798")?;
            s.join_multicast_v4(&group, &Ipv4Addr::new(198, 18, 0, 2))?;
            s.set_read_timeout(Some(STEP))?;
            std::io::Result::Ok(s)
        })
        .expect("run in b")
        .expect("receiver");
    let sender = a
        .run(|| {
            let s = std::net::UdpSocket::bind("198.18.0.1:0")?;
            s.set_multicast_ttl_v4(255)?;
            std::io::Result::Ok(s)
        })
        .expect("run in a")
        .expect("sender");
    sender.send_to(b"advert", (group, 5798)).expect("send");
    let mut buf = [0u8; 16];
    let (n, from) = receiver
        .recv_from(&mut buf)
        .expect("multicast datagram from a");
    assert_eq!(&buf[..n], b"advert");
    assert_eq!(from.ip(), Ipv4Addr::new(198, 18, 0, 1));
}

#[test]
fn parallel_testbeds_do_not_collide() {
    if !common::root_or_skip() {
        return;
    }
    // Same testbed name, host names, interface names and addresses in both.
    let run = |token: &'static str| {
        move || {
            let bed = Testbed::new("parallel").expect("testbed");
            let (_lan, a, b) = two_hosts(&bed);
            let listener = a
                .run(|| TcpListener::bind("198.18.0.1:7003"))
                .expect("run")
                .expect("bind");
            let server = std::thread::spawn(move || serve_one_line(&listener, token));
            let reply = b
                .run(|| request(addr("198.18.0.1:7003"), "who\n"))
                .expect("run")
                .expect("request");
            server.join().expect("server panicked");
            (reply, bed.netns_names())
        }
    };
    let one = std::thread::spawn(run("one:"));
    let two = std::thread::spawn(run("two:"));
    let (reply1, names1) = one.join().expect("testbed one panicked");
    let (reply2, names2) = two.join().expect("testbed two panicked");
    assert_eq!(reply1, "one:who\n");
    assert_eq!(reply2, "two:who\n");
    assert_eq!(names1.len(), 3);
    assert!(
        names1.iter().all(|n| !names2.contains(n)),
        "{names1:?} vs {names2:?}"
    );
}

/// Starts `sleep 300` as a group leader plus a `setsid sleep 300` that leaves the group, in
/// `host`; returns the handle and both pids.
fn sleepers(host: &Host) -> (tandem_testbed::Process, u32, u32) {
    let mut p = host
        .spawn(Command::new("bash").args(["-c", "setsid sleep 300 & echo $!; exec sleep 300"]))
        .expect("spawn sleepers");
    let deadline = Instant::now() + STEP;
    let escaped = loop {
        if let Some(pid) = p
            .stdout()
            .expect("stdout")
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no pid printed: {}",
            p.stderr().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let leader = p.pid();
    assert!(
        !process_gone_within(leader, Duration::ZERO),
        "leader must be running"
    );
    assert!(
        !process_gone_within(escaped, Duration::ZERO),
        "escaped process must be running"
    );
    assert!(p.try_wait().expect("try_wait").is_none());
    (p, leader, escaped)
}

#[test]
fn running_processes_are_killed_at_drop() {
    let Some(bed) = bed("drop_running") else {
        return;
    };
    let (_lan, a, _b) = two_hosts(&bed);
    let (process, leader, escaped) = sleepers(&a);
    // The testbed goes first, while the Process handle still lives.
    drop(bed);
    assert!(
        process_gone_within(leader, STEP),
        "group leader {leader} survived the testbed"
    );
    assert!(
        process_gone_within(escaped, STEP),
        "setsid process {escaped} survived the testbed"
    );
    drop(process);
    assert!(process_gone_within(leader, STEP));
}

#[test]
fn dropping_a_process_kills_its_group_and_waits_are_bounded() {
    let Some(bed) = bed("drop_process") else {
        return;
    };
    let a = bed.host("a").expect("host");
    let mut p = a
        .spawn(Command::new("bash").args(["-c", "sleep 300 & echo $!; wait"]))
        .expect("spawn");
    let deadline = Instant::now() + STEP;
    let child: u32 = loop {
        if let Some(pid) = p
            .stdout()
            .expect("stdout")
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pid printed");
        std::thread::sleep(Duration::from_millis(10));
    };
    let err = p
        .wait_timeout(Duration::from_millis(100))
        .expect_err("still running");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let leader = p.pid();
    drop(p);
    assert!(
        process_gone_within(leader, STEP),
        "leader {leader} survived its handle"
    );
    assert!(
        process_gone_within(child, STEP),
        "group member {child} survived its handle"
    );

    let err = a
        .output(Command::new("sleep").arg("300"), Duration::from_millis(100))
        .expect_err("bounded");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let out = a
        .output(
            Command::new("bash").args(["-c", "echo out; echo err >&2; exit 3"]),
            STEP,
        )
        .expect("bash");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    if !common::root_or_skip() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let body = std::thread::spawn(move || {
        let bed = Testbed::new("panics").expect("testbed");
        let (lan, a, b) = two_hosts(&bed);
        let sync = bed.segment("sync").expect("second segment");
        a.attach(&sync, "eth2", "198.19.0.1/24")
            .expect("attach sync");
        let (_p, leader, escaped) = sleepers(&b);
        let names = bed.netns_names();
        // Switch-side port names, as the switch namespace lists them.
        let sw = Command::new("ip")
            .args(["-n", lan.netns(), "-o", "link"])
            .output()
            .expect("ip -n lan link");
        tx.send((
            names,
            leader,
            escaped,
            bed.log_dir(),
            String::from_utf8_lossy(&sw.stdout).into_owned(),
        ))
        .expect("send");
        panic!("deliberate panic inside a testbed test");
    });
    assert!(body.join().is_err(), "the body must have panicked");
    let (names, leader, escaped, log_dir, switch_links) = rx.recv().expect("state from the body");

    assert_eq!(names.len(), 4, "{names:?}");
    let listed = common::netns_list();
    for n in &names {
        assert!(!listed.contains(n), "namespace {n} left behind");
    }
    let ports: Vec<&str> = switch_links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or(""))
        .filter(|n| n.starts_with('p'))
        .collect();
    assert_eq!(
        ports.len(),
        2,
        "expected two switch ports on lan: {switch_links}"
    );
    let root = common::root_links();
    for l in ports.iter().copied().chain(["br0", "eth1", "eth2"]) {
        assert!(
            !root.iter().any(|r| r == l),
            "link {l} in the root namespace: {root:?}"
        );
    }
    assert!(
        process_gone_within(leader, STEP),
        "process {leader} left behind"
    );
    assert!(
        process_gone_within(escaped, STEP),
        "setsid process {escaped} left behind"
    );
    // The process logs of a failed test are kept for the post-mortem; we clean them up here.
    let log_dir = log_dir.expect("a process was spawned, so there is a log dir");
    assert!(
        log_dir.is_dir(),
        "logs of a panicking test must be kept: {}",
        log_dir.display()
    );
    std::fs::remove_dir_all(&log_dir).expect("remove kept logs");
}

#[test]
fn handles_fail_cleanly_after_teardown() {
    let Some(bed) = bed("torn_down") else { return };
    let (_lan, a, _b) = two_hosts(&bed);
    let ns = a.netns().to_owned();
    bed.close().expect("teardown");
    assert!(
        !common::netns_list().contains(&ns),
        "{ns} still listed after close"
    );
    let err = a.addresses("eth1").expect_err("torn down");
    assert!(matches!(err, Error::TornDown { .. }), "{err}");
    let err = a.run(|| ()).expect_err("torn down");
    assert!(matches!(err, Error::TornDown { .. }), "{err}");
}

#[test]
fn sysctl_is_per_host() {
    let Some(bed) = bed("sysctl") else { return };
    let a = bed.host("a").expect("host a");
    let b = bed.host("b").expect("host b");
    a.sysctl("net.ipv4.ip_nonlocal_bind", "1")
        .expect("sysctl in a");
    let read = |h: &Host| {
        h.run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind"))
            .expect("run")
            .expect("read sysctl")
            .trim()
            .to_owned()
    };
    assert_eq!(read(&a), "1");
    assert_eq!(read(&b), "0", "the sysctl leaked to another host");
    // Non-local bind now works in a only.
    assert!(
        a.run(|| TcpListener::bind("198.18.0.200:80"))
            .expect("run")
            .is_ok()
    );
    assert!(
        b.run(|| TcpListener::bind("198.18.0.200:80"))
            .expect("run")
            .is_err()
    );
}
