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

use tandem_e2e::pair as common;

use std::time::{Duration, Instant};

use common::{Bed, config, serial, wait_for};
use serde_json::json;
use tandem_testbed::require_root;

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

#[test]
fn pair_a_node_without_configuration_takes_the_peers_first_generation() {
    if !require_root() {
        return;
    }
    let _s = serial();
    // lb2 is freshly set up: no configuration. The operator pairs it giving lb1's name and
    // both sync addresses, and commits the first configuration on lb1 only.
    let bed = Bed::bare("pairbootstrap");
    let [lb1, lb2] = &bed.lb;
    let fp = bed.fingerprints();
    lb1.ok(json!({"cmd": "sync_pair", "peer_fingerprint": fp[1]}));
    let r = lb2.ok(json!({"cmd": "sync_pair", "peer_fingerprint": fp[0],
        "peer_name": "lb1", "peer_address": "198.18.1.1", "local_address": "198.18.1.2"}));
    println!("pair on lb2: {r}");
    assert_eq!(r["bootstrap"]["remote"], "198.18.1.1:7400", "{r:#}");
    assert!(lb2.ok(json!({"cmd": "status"}))["generation"].is_null());
    let t0 = Instant::now();
    let r = lb1.ok(json!({"cmd": "commit", "text": config(100, "first"), "comment": "first"}));
    println!("commit on lb1 after {:?}: {}", t0.elapsed(), r["message"]);
    let t = wait_for("lb2 runs lb1's generation", || {
        lb2.generation() == lb1.generation()
    });
    println!(
        "lb2 took generation {:?} {t:?} after the commit",
        lb2.generation()
    );
    assert_eq!(lb1.generation().0, 1);
    wait_for("both in sync", || {
        [lb1, lb2]
            .iter()
            .all(|n| n.sync()["sync"]["core"]["relation"]["state"] == "in_sync")
    });
    for n in [lb1, lb2] {
        let alarms = n.alarms();
        assert!(
            !alarms
                .iter()
                .any(|a| a == "divergence" || a == "unconfigured"),
            "{}: {alarms:?}",
            n.name
        );
    }
    // lb2 runs it: it takes the VIP when lb1 hands it over.
    wait_for("lb1 holds the VIP", || lb1.has_vip() && !lb2.has_vip());
    wait_for("lb2 hears lb1's adverts", || {
        lb2.vrrp()["state"] == "backup"
    });
    lb1.ok(json!({"cmd": "failover"}));
    wait_for("the VIP on lb2", || lb2.has_vip() && !lb1.has_vip());
    wait_for("an answer through the VIP on lb2", || {
        bed.get("198.18.0.3").is_some()
    });
    // Later commits flow as usual, now over the configured endpoints.
    let r = lb1.ok(json!({"cmd": "commit", "text": config(50, "second"), "comment": "second"}));
    assert_eq!(r["nodes"], json!(["lb1", "lb2"]), "{r:#}");
    assert_eq!(lb2.generation().0, 2);
}
