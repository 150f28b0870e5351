//! Interoperability of `tandem vrrp` with keepalived 2.2.7, both ways, on the shared VRRP test
//! bed (`<workspace>/../shared/vrrp/testbed.sh`, nginx as the stand-in proxy on each LB).
//!
//! Owns two scenarios: Tandem master (lb1, priority 150) with keepalived backup (lb2), and
//! keepalived master (lb1) with Tandem backup (lb2). In each, the master is stopped (SIGTERM,
//! and for Tandem also SIGKILL), the other daemon takes over, and after a restart the master
//! preempts back while the other one steps back. Tandem runs through
//! `tests/vrrp/tandem-foreign.sh`, which renders its config from the test bed's VRRP_* variables.
//! Must not touch the shared script or leave namespaces behind: every test bed gets its own
//! `PFX` and `STATE` and is torn down by a drop guard. Skips (locally) or fails (in CI) when
//! root, the script, or keepalived is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const VIP: &str = "198.18.0.100";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Prints a skip notice, or panics in CI where every prerequisite must be present.
fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("interop test cannot run in CI: {why}");
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

fn testbed_script() -> Option<PathBuf> {
    let root = tandem_e2e::workspace_root();
    let script = root.join("../shared/vrrp/testbed.sh");
    script
        .exists()
        .then(|| script.canonicalize().unwrap_or(script))
}

fn prerequisites() -> Option<PathBuf> {
    if !tandem_testbed::require_root() {
        return None;
    }
    let Some(script) = testbed_script() else {
        skip("../shared/vrrp/testbed.sh not found beside the workspace");
        return None;
    };
    for tool in ["keepalived", "nginx", "tcpdump", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            skip(&format!(
                "{tool} is not installed (see xtask/host-packages.txt)"
            ));
            return None;
        }
    }
    Some(script)
}

/// One test bed instance; `down` on drop.
struct Bed {
    script: PathBuf,
    pfx: String,
    state: PathBuf,
}

impl Bed {
    fn new(script: PathBuf, tag: &str) -> Bed {
        let pfx = format!("ti{}{tag}-", std::process::id() % 100_000);
        let state =
            std::env::temp_dir().join(format!("tandem-interop-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        Bed { script, pfx, state }
    }

    fn sh(&self, args: &[&str], timeout_s: u32) -> Output {
        let out = Command::new("timeout")
            .arg(timeout_s.to_string())
            .arg(&self.script)
            .args(args)
            .env("PFX", &self.pfx)
            .env("STATE", &self.state)
            .output()
            .expect("run testbed.sh");
        eprintln!(
            "testbed.sh {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str], timeout_s: u32) {
        let out = self.sh(args, timeout_s);
        assert!(
            out.status.success(),
            "testbed.sh {args:?} failed\n{}",
            self.logs()
        );
    }

    fn has_vip(&self, node: &str) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                &format!("{}{node}", self.pfx),
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {VIP}/"))
    }

    /// Waits until exactly `node` holds the VIP.
    fn wait_holder(&self, node: &str, timeout: Duration) -> Duration {
        let other = if node == "lb1" { "lb2" } else { "lb1" };
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.has_vip(node) && !self.has_vip(other) {
                return t0.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "VIP not held by {node} alone within {timeout:?} (lb1 {}, lb2 {})\n{}",
            self.has_vip("lb1"),
            self.has_vip("lb2"),
            self.logs()
        );
    }

    /// Which node's nginx answers the client through the VIP.
    fn client_sees(&self) -> String {
        let out = self.sh(&["status"], 30);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("client -> VIP"))
            .unwrap_or_default()
            .to_owned()
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for n in ["lb1", "lb2"] {
            let p = self.state.join(format!("logs/{n}-daemon.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            s.push_str(&format!(
                "--- {n} daemon log (last lines, newest first)\n{}\n",
                tail.join("\n")
            ));
        }
        s
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.sh(&["down"], 60);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

fn foreign_cmd() -> String {
    let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("vrrp/tandem-foreign.sh");
    format!(
        "{} {}",
        wrapper.display(),
        tandem_e2e::tandem_bin().display()
    )
}

#[test]
fn tandem_master_with_keepalived_backup() {
    let Some(script) = prerequisites() else {
        return;
    };
    let _s = serial();
    let bed = Bed::new(script, "a");
    let tandem = foreign_cmd();
    bed.ok(&["up", "--lb1", &tandem, "--advert-int", "0.1"], 120);
    bed.wait_holder("lb1", Duration::from_secs(10));
    assert!(
        bed.client_sees().contains("X-LB: lb1"),
        "{}",
        bed.client_sees()
    );

    // Graceful stop: keepalived takes over on Tandem's priority-0 advert.
    bed.ok(&["stop-daemon", "lb1", "TERM"], 30);
    let took = bed.wait_holder("lb2", Duration::from_secs(3));
    eprintln!("keepalived took over {took:?} after Tandem's SIGTERM");
    assert!(
        bed.client_sees().contains("X-LB: lb2"),
        "{}",
        bed.client_sees()
    );

    // Tandem comes back with the higher priority and preempts; keepalived steps back.
    bed.ok(&["start-daemon", "lb1"], 30);
    bed.wait_holder("lb1", Duration::from_secs(5));

    // kill -9 of Tandem's process group: its guardian removes the VIP, keepalived takes over.
    bed.ok(&["stop-daemon", "lb1", "KILL"], 30);
    let took = bed.wait_holder("lb2", Duration::from_secs(3));
    eprintln!("after SIGKILL of Tandem, keepalived alone holds the VIP after {took:?}");
    bed.ok(&["start-daemon", "lb1"], 30);
    bed.wait_holder("lb1", Duration::from_secs(5));
}

#[test]
fn keepalived_master_with_tandem_backup() {
    let Some(script) = prerequisites() else {
        return;
    };
    let _s = serial();
    let bed = Bed::new(script, "b");
    let tandem = foreign_cmd();
    bed.ok(&["up", "--lb2", &tandem, "--advert-int", "0.1"], 120);
    bed.wait_holder("lb1", Duration::from_secs(10));
    assert!(
        bed.client_sees().contains("X-LB: lb1"),
        "{}",
        bed.client_sees()
    );

    // keepalived stops (priority-0 advert): Tandem takes over.
    bed.ok(&["stop-daemon", "lb1", "TERM"], 30);
    let took = bed.wait_holder("lb2", Duration::from_secs(3));
    eprintln!("Tandem took over {took:?} after keepalived's SIGTERM");
    assert!(
        bed.client_sees().contains("X-LB: lb2"),
        "{}",
        bed.client_sees()
    );

    // keepalived returns with priority 150 and preempts; Tandem steps back and drops the VIP.
    bed.ok(&["start-daemon", "lb1"], 30);
    bed.wait_holder("lb1", Duration::from_secs(5));

    // keepalived killed hard: its VIP stays (keepalived's split brain), but Tandem takes over.
    bed.ok(&["stop-daemon", "lb1", "KILL"], 30);
    let t0 = Instant::now();
    while !bed.has_vip("lb2") {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "Tandem did not take over\n{}",
            bed.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "after SIGKILL of keepalived: Tandem holds the VIP after {:?}; keepalived left it on lb1: {}",
        t0.elapsed(),
        bed.has_vip("lb1")
    );
}
