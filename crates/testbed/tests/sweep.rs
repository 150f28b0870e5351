//! Integration test of the sweep: leftovers of a SIGKILLed test process are removed by the next
//! `Testbed::new`, while namespaces of live testbeds are left alone.
//!
//! Owns only this test. To fake "a test process that was SIGKILLed" it creates, by hand, exactly
//! what such a process leaves behind (a `tandem-<pid>-...` namespace with a process inside and a
//! free lock file) for a pid it killed itself; a guard deletes them if the sweep does not.

mod common;

use std::process::{Child, Command, Stdio};

use common::{STEP, process_gone_within};
use tandem_testbed::Testbed;

/// Deletes the hand-made leftovers if the test fails before the sweep did.
struct Leftovers {
    netns: String,
    lock: std::path::PathBuf,
    sleeper: Child,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// Whether `pid` is listed by `ip netns pids <netns>` within `timeout`.
fn pid_in_netns_within(netns: &str, pid: u32, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let out = Command::new("ip")
            .args(["netns", "pids", netns])
            .output()
            .expect("ip netns pids");
        let listed = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|p| p == pid.to_string());
        if listed || std::time::Instant::now() >= deadline {
            return listed;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn leftovers_of_a_killed_test_process_are_swept() {
    if !common::root_or_skip() {
        return;
    }
    // A live testbed in this process must survive the sweep.
    let live = Testbed::new("sweep_live").expect("testbed");
    let live_host = live.host("a").expect("host");

    // The "test process": spawned, then SIGKILLed, so its pid is dead.
    let mut dead = Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("spawn sleep");
    let dead_pid = dead.id();
    dead.kill().expect("kill");
    dead.wait().expect("reap");

    let netns = format!("tandem-{dead_pid}-0-killed-h-lb1");
    let lock = std::path::PathBuf::from(format!("/run/tandem-testbed/{dead_pid}.lock"));
    std::fs::create_dir_all("/run/tandem-testbed").expect("lock dir");
    std::fs::write(&lock, "").expect("lock file without a holder");
    let status = Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .expect("ip netns add");
    assert!(status.success(), "ip netns add {netns}");
    let sleeper = Command::new("ip")
        .args(["netns", "exec", &netns, "sleep", "300"])
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep inside the leftover namespace");
    let leftovers = Leftovers {
        netns: netns.clone(),
        lock: lock.clone(),
        sleeper,
    };
    let sleeper_pid = leftovers.sleeper.id();
    assert!(common::netns_list().contains(&netns));
    // `ip netns exec` enters the namespace and then execs `sleep`; until it has entered, the
    // sweep cannot see it there (a CI run swept too early and left it running).
    assert!(
        pid_in_netns_within(&netns, sleeper_pid, STEP),
        "process {sleeper_pid} never showed up in {netns}"
    );

    let next = Testbed::new("sweep_next").expect("testbed");

    assert!(
        !common::netns_list().contains(&netns),
        "leftover namespace {netns} was not swept"
    );
    assert!(
        process_gone_within(sleeper_pid, STEP),
        "process {sleeper_pid} in the leftover was not killed"
    );
    assert!(
        !lock.exists(),
        "lock file of the dead process was not removed"
    );
    assert!(
        common::netns_list().contains(&live_host.netns().to_owned()),
        "the sweep deleted a live namespace"
    );
    live_host.run(|| ()).expect("the live host still works");
    drop(leftovers);
    drop(next);
    drop(live);
}
