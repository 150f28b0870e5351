//! Pair failover tests under real supervisors in network namespaces (the bed of
//! `common/mod.rs`): the split-brain guard with the LAN heartbeat cut while both nodes live,
//! supervised restarts of a SIGKILLed child (proxy, or the VRRP daemon, whose restart adopts
//! its guardian's VIPs) that must not move the VIP, and a proxy crash loop that must.
//!
//! Owns the acceptance scenarios "LAN heartbeat cut with both nodes alive: exactly one node
//! holds the VIP" and "killing any child: back within 1 s, the VIP did not move unless the
//! proxy stayed down". Figures are printed; only generous liveness bounds are asserted.
//! Must not send traffic from the root namespace. Needs root: otherwise each test prints a
//! skip notice.

use tandem_e2e::pair as common;

use std::time::{Duration, Instant};

use common::{Bed, serial, wait_for};
use serde_json::json;
use tandem_testbed::require_root;

#[test]
fn pair_split_brain_with_the_lan_heartbeat_cut_is_resolved_by_priority() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let bed = Bed::new("pairsplit");
    let [lb1, lb2] = &bed.lb;
    wait_for("lb1 holds the VIP", || lb1.has_vip() && !lb2.has_vip());
    wait_for("an answer through the VIP", || {
        bed.get("198.18.0.3").is_some()
    });

    // Cut only VRRP between the nodes; the sync link and client traffic stay up.
    let t0 = Instant::now();
    lb1.cut_vrrp();
    let mut double_at = None;
    let mut single_again_at = None;
    let mut samples = Vec::new();
    while t0.elapsed() < Duration::from_secs(6) {
        let (a, b) = (lb1.has_vip(), lb2.has_vip());
        samples.push((t0.elapsed(), a, b));
        if a && b && double_at.is_none() {
            double_at = Some(t0.elapsed());
        }
        if double_at.is_some() && (a != b) && single_again_at.is_none() {
            single_again_at = Some(t0.elapsed());
        }
        if (a && b) || !(a || b) {
            single_again_at = None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let lb2_had = samples.iter().filter(|s| s.2).count();
    println!(
        "LAN heartbeat cut: both held the VIP from {double_at:?}; exactly one again from {single_again_at:?} after the cut (lb2 held it in {lb2_had} of {} samples)",
        samples.len()
    );
    let resolved = single_again_at.expect("exactly one node holds the VIP again");
    assert!(resolved < Duration::from_secs(5), "liveness bound");
    // The last second: only lb1 (priority 150) holds it.
    for (t, a, b) in samples
        .iter()
        .filter(|s| s.0 > t0.elapsed() - Duration::from_secs(1))
    {
        assert!(*a && !*b, "at {t:?} lb1 {a} lb2 {b}");
    }
    let v2 = lb2.vrrp();
    println!("lb2 vrrp while held: {v2}");
    assert_eq!(v2["state"], "backup");
    assert!(v2["hold_ms"].as_u64().is_some(), "{v2}");
    for n in [lb1, lb2] {
        let m = wait_for_alarm(n, "split-brain");
        println!("{} alarm split-brain: {m}", n.name);
    }
    assert!(
        bed.get("198.18.0.4").is_some(),
        "clients reach the VIP on lb1"
    );

    // Heal: the adverts flow again, the hold is released and the alarm cleared on both.
    let t1 = Instant::now();
    lb1.heal_vrrp();
    let t = wait_for("split-brain alarm cleared on both", || {
        lb1.alarm("split-brain").is_none() && lb2.alarm("split-brain").is_none()
    });
    println!("LAN healed: alarm cleared on both after {t:?}");
    wait_for("lb2 released its hold", || lb2.vrrp()["hold_ms"].is_null());
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        lb1.has_vip() && !lb2.has_vip(),
        "normal pair after {:?}",
        t1.elapsed()
    );
    assert_eq!(lb1.vrrp()["state"], "master");
    assert_eq!(lb2.vrrp()["state"], "backup");
    let r = lb1.ok(json!({"cmd": "status"}));
    println!("lb1 alarms after healing: {}", r["alarms"]);
}

fn wait_for_alarm(n: &common::Node, id: &str) -> String {
    let mut msg = None;
    wait_for(&format!("alarm {id} on {}", n.name), || {
        msg = n.alarm(id);
        msg.is_some()
    });
    msg.unwrap_or_default()
}

#[test]
fn pair_a_sigkilled_proxy_is_back_within_1s_and_the_vip_stays() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let text = common::config_with(100, "track proxy", "    track: { proxy: 60 }\n");
    let bed = Bed::with_config("pairkillproxy", &text);
    let [lb1, lb2] = &bed.lb;
    wait_for("lb1 holds the VIP", || lb1.has_vip() && !lb2.has_vip());
    wait_for("lb1 tracks a healthy proxy", || {
        lb1.vrrp()["proxy_tracking"] == "up"
    });
    wait_for("an answer through the VIP", || {
        bed.get("198.18.0.3").is_some()
    });
    let proxy = |n: &common::Node| {
        let s = n.ok(json!({"cmd": "status"}));
        s["services"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "proxy").cloned())
            .unwrap_or_default()
    };
    let before = proxy(lb1);
    let pid = before["pid"].as_u64().expect("proxy pid") as i32;
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill proxy");
    let mut back = None;
    let mut lb2_had = false;
    let mut lb1_lost = false;
    while t0.elapsed() < Duration::from_secs(3) {
        lb2_had |= lb2.has_vip();
        lb1_lost |= !lb1.has_vip();
        if back.is_none() {
            let p = proxy(lb1);
            if p["pid"].as_u64().is_some_and(|p| p as i32 != pid) && p["healthy"] == true {
                back = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "SIGKILLed proxy (pid {pid}) serving again after {back:?}; lb2 had the VIP: {lb2_had}, lb1 lost it: {lb1_lost}"
    );
    let back = back.expect("the proxy is back");
    assert!(back < Duration::from_secs(2), "liveness bound");
    assert!(!lb2_had && !lb1_lost, "the VIP did not move");
    assert_eq!(lb1.vrrp()["state"], "master");
    wait_for("an answer through the VIP", || {
        bed.get("198.18.0.4").is_some()
    });
}

#[test]
fn pair_a_sigkilled_vrrp_daemon_is_back_within_1s_and_the_vip_stays() {
    if !require_root() {
        return;
    }
    let _s = serial();
    let bed = Bed::new("pairkillvrrp");
    let [lb1, lb2] = &bed.lb;
    wait_for("lb1 holds the VIP", || lb1.has_vip() && !lb2.has_vip());
    wait_for("an answer through the VIP", || {
        bed.get("198.18.0.3").is_some()
    });
    wait_for("lb2 hears lb1's adverts", || {
        lb2.vrrpd_status()
            .is_some_and(|s| s["instances"][0]["last_advert_ms"].as_u64().is_some())
    });
    let before = lb1.service("vrrp");
    let pid = before["pid"].as_u64().expect("vrrp pid") as i32;
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill vrrp");
    let mut back = None;
    let mut lb2_had = false;
    let mut lb1_lost = false;
    let mut max_gap = 0u64;
    let mut samples = 0u32;
    while t0.elapsed() < Duration::from_millis(1500) {
        lb2_had |= lb2.has_vip();
        lb1_lost |= !lb1.has_vip();
        samples += 1;
        if let Some(s) = lb2.vrrpd_status() {
            let i = &s["instances"][0];
            max_gap = max_gap.max(i["last_advert_ms"].as_u64().unwrap_or(0));
            assert_eq!(
                i["state"],
                "backup",
                "lb2 at {:?}: {i}\nlb1 vrrp logs: {:#}",
                t0.elapsed(),
                lb1.call(json!({"cmd": "logs", "service": "vrrp", "lines": 60}))["lines"]
            );
        }
        if back.is_none() {
            let p = lb1.service("vrrp");
            if p["pid"].as_u64().is_some_and(|p| p as i32 != pid)
                && lb1
                    .vrrpd_status()
                    .is_some_and(|s| s["instances"][0]["state"] == "master")
            {
                back = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "SIGKILLed vrrp daemon (pid {pid}) master again after {back:?}; lb2's longest advert silence {max_gap} ms (status, ±25 ms); lb2 had the VIP: {lb2_had}, lb1 lost it: {lb1_lost} ({samples} samples)"
    );
    let back = back.expect("the vrrp daemon is back");
    assert!(back < Duration::from_secs(1), "back within 1 s: {back:?}");
    assert!(!lb2_had && !lb1_lost, "the VIP did not move");
    let v1 = lb1.vrrp();
    println!("lb1 vrrp after the restart: {v1}");
    assert_eq!(v1["vips_held"], true);
    for i in 0..5 {
        let src = format!("198.18.0.{}", 4 + i);
        assert!(
            bed.get(&src).is_some(),
            "client request {i} through the VIP"
        );
    }
    // The previous guardian handed over and exited; the new one stays.
    std::thread::sleep(Duration::from_millis(500));
    assert!(lb1.has_vip() && !lb2.has_vip(), "stable after the restart");
}

#[test]
fn pair_a_proxy_that_stays_down_moves_the_vip() {
    if !require_root() {
        return;
    }
    let _s = serial();
    // preempt, so the backup takes over from a master whose proxy penalty sinks it below.
    let text = common::config_with(100, "track proxy, preempt", "    track: { proxy: 60 }\n")
        .replace("preempt: false", "preempt: true");
    let bed = Bed::with_config("pairproxydown", &text);
    let [lb1, lb2] = &bed.lb;
    wait_for("lb1 holds the VIP", || lb1.has_vip() && !lb2.has_vip());
    wait_for("lb1 tracks a healthy proxy", || {
        lb1.vrrp()["proxy_tracking"] == "up"
    });
    wait_for("an answer through the VIP", || {
        bed.get("198.18.0.3").is_some()
    });
    // Crash loop: every new proxy pid is SIGKILLed at once, until the VIP moves (bounded).
    let t0 = Instant::now();
    let mut kills = 0;
    let mut last = None;
    let mut moved = None;
    while t0.elapsed() < Duration::from_secs(6) {
        if let Some(pid) = lb1.service("proxy")["pid"].as_u64()
            && last != Some(pid)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            last = Some(pid);
            kills += 1;
        }
        if lb2.has_vip() && !lb1.has_vip() {
            moved = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("proxy crash loop on lb1 ({kills} kills): the VIP moved to lb2 after {moved:?}");
    let moved = moved.expect("the VIP moves when the proxy stays down");
    assert!(moved < Duration::from_secs(6), "liveness bound");
    // The VIP is observed before the status socket is read: allow the report to catch up.
    wait_for("lb2 reports master", || lb2.vrrp()["state"] == "master");
    wait_for("an answer through the VIP on lb2", || {
        bed.get("198.18.0.4").is_some()
    });
    // The proxy is left alone again: it comes back and lb1 (priority 150) preempts.
    let t = wait_for("lb1 holds the VIP again", || {
        lb1.has_vip() && !lb2.has_vip()
    });
    println!("proxy left alone: lb1 holds the VIP again after {t:?}");
}

/// `GET /` on the VIP from client address `src`: the HTTP status, or None.
fn status_from(bed: &Bed, src: &str) -> Option<u16> {
    let out = bed
        .client
        .output(
            std::process::Command::new("curl").args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "2",
                "--interface",
                src,
                "http://198.18.0.100/",
            ]),
            Duration::from_secs(5),
        )
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|c| *c != 0)
}

/// One request to node `n`'s proxy runtime API, through its proxy's view of the filesystem
/// (the proxy socket lives on a tmpfs in the node's own mount namespace).
fn runtime(n: &common::Node, req: serde_json::Value) -> Option<serde_json::Value> {
    use std::io::{BufRead as _, Write as _};
    let pid = n.service("proxy")["pid"].as_u64()?;
    let path = format!("/proc/{pid}/root{}/proxy.sock", common::RUN_DIR);
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(format!("{req}\n").as_bytes()).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

#[test]
fn pair_a_source_over_its_request_rate_is_still_refused_after_a_failover() {
    if !require_root() {
        return;
    }
    let _s = serial();
    // 5 requests per source per minute: the whole test runs well inside one window.
    let text = common::config(100, "protect").replace(
        "    default_backend: app\n",
        "    default_backend: app\n    protect: { request_rate_per_source: 5/60s }\n",
    );
    let mut bed = Bed::with_config("pairrates", &text);
    let [lb1, lb2] = &bed.lb;
    wait_for("lb1 holds the VIP", || lb1.has_vip() && !lb2.has_vip());
    wait_for("an answer through the VIP", || {
        status_from(&bed, "198.18.0.3") == Some(200)
    });
    // The abuser: 5 requests pass, the next is refused on lb1.
    let abuser = "198.18.0.5";
    let mut codes = Vec::new();
    while codes.last() != Some(&429) && codes.len() < 20 {
        codes.extend(status_from(&bed, abuser));
    }
    println!("abuser on lb1: {codes:?}");
    assert_eq!(
        codes.last(),
        Some(&429),
        "lb1 refuses the abuser: {codes:?}"
    );
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 5, "{codes:?}");

    // Replicated to the passive node's proxy (runtime state goes once a second).
    let t = wait_for("lb2's proxy has the abuser's request count", || {
        runtime(lb2, json!({"cmd": "show rates", "frontend": "web"})).is_some_and(|r| {
            r["entries"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|x| x["client"] == abuser && x["requests"]["current"].as_u64() >= Some(5))
            })
        })
    });
    println!("rate counters on lb2 {t:?} after the refusal");
    let shown = runtime(lb2, json!({"cmd": "show rates", "frontend": "web"}));
    println!("lb2 show rates: {shown:?}");

    // lb1 dies (the supervisor is SIGKILLed; its children get SIGTERM and the VRRP daemon
    // resigns): the VIP moves to lb2.
    let t0 = Instant::now();
    drop(bed.lb[0].process.take());
    let [lb1, lb2] = &bed.lb;
    let mut lb2_at = None;
    let mut lb1_gone_at = None;
    wait_for("lb2 holds the VIP", || {
        let (a, b) = (lb1.has_vip(), lb2.has_vip());
        if b && lb2_at.is_none() {
            lb2_at = Some(t0.elapsed());
        }
        if !a && lb1_gone_at.is_none() {
            lb1_gone_at = Some(t0.elapsed());
        }
        b && !a
    });
    // Not asserted here: with the supervisor SIGKILLed, lb1's VIP normally goes within
    // ~40 ms (its VRRP daemon resigns on SIGTERM), but was seen to stay until its 10 s
    // lifetime ran out while lb2 already held it (see the commit message).
    println!("after the SIGKILL: lb2 held the VIP from {lb2_at:?}, lb1 lost it at {lb1_gone_at:?}");
    wait_for("lb2 answers through the VIP", || {
        status_from(&bed, "198.18.0.6") == Some(200)
    });
    println!("lb2 serves the VIP {:?} after lb1 died", t0.elapsed());
    assert_eq!(
        status_from(&bed, abuser),
        Some(429),
        "the abuser is still refused on lb2"
    );
    assert_eq!(
        status_from(&bed, "198.18.0.7"),
        Some(200),
        "another client is served on lb2"
    );
    let denied = lb2.ok(json!({"cmd": "show_stats"}))["frontends"][0]["denied"].clone();
    println!("lb2 frontend denied: {denied}");
    assert!(denied["request_rate"].as_u64() >= Some(1), "{denied}");
}

#[test]
fn pair_maintenance_survives_a_supervisor_restart_and_keeps_the_node_off_the_vip() {
    if !require_root() {
        return;
    }
    let _s = serial();
    // preempt: without the maintenance hold, lb1 (priority 150) takes the VIP back from lb2.
    let text = common::config(100, "preempt").replace("preempt: false", "preempt: true");
    let mut bed = Bed::with_config("pairmaint", &text);
    {
        let [lb1, lb2] = &bed.lb;
        wait_for("lb1 holds the VIP", || lb1.has_vip() && !lb2.has_vip());
        let r = lb1.ok(json!({"cmd": "maintenance", "on": true}));
        println!("maintenance on: {r}");
        let t = wait_for("the VIP moves to lb2", || lb2.has_vip() && !lb1.has_vip());
        println!("VIP on lb2 {t:?} after maintenance on");
        wait_for("an answer through the VIP on lb2", || {
            bed.get("198.18.0.3").is_some()
        });
    }

    // The supervisor dies and starts again (as after a reboot: its children go with it).
    bed.lb[0]
        .process
        .as_mut()
        .expect("lb1 supervisor")
        .kill(Duration::from_secs(10))
        .expect("kill lb1's supervisor");
    bed.lb[0].start();
    let [lb1, lb2] = &bed.lb;
    let s = lb1.ok(json!({"cmd": "status"}));
    assert_eq!(s["maintenance"], true, "{s:#}");
    assert!(s["maintenance_since_ms"].as_u64().is_some(), "{s:#}");
    assert!(lb1.alarm("maintenance").is_some());
    let t = wait_for("lb1's restarted vrrp daemon holds backup", || {
        let v = lb1.vrrp();
        v["state"] == "backup" && v["hold_ms"].as_u64().is_some()
    });
    println!("lb1's vrrp daemon holds backup {t:?} after the restart");
    // Well past the master-down interval, the preemption and a hold's lifetime (5 s, refreshed
    // every 500 ms): lb1 never takes the VIP.
    let t0 = Instant::now();
    let mut samples = 0;
    while t0.elapsed() < Duration::from_secs(7) {
        let (a, b) = (lb1.has_vip(), lb2.has_vip());
        assert!(
            !a && b,
            "at {:?} after the restart lb1 {a} lb2 {b}: {}",
            t0.elapsed(),
            lb1.vrrp()
        );
        samples += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{samples} samples over 7 s: only lb2 held the VIP");
    assert_eq!(lb1.vrrp()["state"], "backup");

    // maintenance off: lb1 rejoins and, with preempt, takes the VIP back.
    lb1.ok(json!({"cmd": "maintenance", "on": false}));
    let t = wait_for("lb1 holds the VIP again", || {
        lb1.has_vip() && !lb2.has_vip()
    });
    println!("lb1 holds the VIP {t:?} after maintenance off");
    assert_eq!(lb1.ok(json!({"cmd": "status"}))["maintenance"], false);
    assert!(lb1.alarm("maintenance").is_none());
}
