//! `cargo xtask test --system`: the appliance scenario on the real image booted as the
//! QEMU pair, asserted through the serial consoles and the lab's client host.
//!
//! Owns: the scenario (first-boot setup on both consoles, a config with the VIP and the two
//! demo web servers, traffic through the VIP, lb1 killed and the client outage measured,
//! lb1 back, lb2 upgraded to a second build and blessed, a broken build rolled back) and
//! the test builds it needs (`image --version-suffix v2`, `image --broken`).
//! Must not touch the root network namespace: every packet stays in `tandem-pair-*`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use xshell::{Shell, cmd};

use crate::image;
use crate::pair::{self, LAN_NS, Node, VIP};
use crate::spec::{BoardSpec, ImageSpec};
use crate::{project_root, section};

/// The lab's bundle and config server (inside `LAN_NS`, on the management bridge).
const SERVE: &str = "198.19.0.1:8080";
/// The admin password the test sets (a test lab only).
const PASSWORD: &str = "lab-admin-pw";
/// Trial timeout of the broken test build.
const BROKEN_TRIAL_S: u32 = 90;

struct Console<'a> {
    node: &'a Node,
    pos: usize,
}

impl<'a> Console<'a> {
    fn new(node: &'a Node) -> Self {
        let pos = std::fs::metadata(node.serial_log())
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        Console { node, pos }
    }

    /// Waits for `needle` after what was already consumed.
    fn expect(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let start = self.pos;
        self.pos = pair::wait_for_text(self.node, needle, start, timeout)?;
        let log = std::fs::read(self.node.serial_log())?;
        Ok(String::from_utf8_lossy(&log[start..self.pos.min(log.len())]).into_owned())
    }

    /// Types `line`, then waits for `until`; returns what was printed.
    fn run(&mut self, line: &str, until: &str, timeout: Duration) -> Result<String> {
        eprintln!("[{}] {line}", self.node.name);
        pair::send_line(self.node, line)?;
        self.expect(until, timeout)
    }

    /// The interactive prompt of this node (`lb1> `), or `tandem> ` before the
    /// supervisor answers.
    fn prompt(&mut self, timeout: Duration) -> Result<()> {
        let (end, _) = pair::wait_for_any(
            self.node,
            &[&format!("{}> ", self.node.name), "tandem> "],
            self.pos,
            timeout,
        )?;
        self.pos = end;
        Ok(())
    }

    /// A command at the prompt: its output up to the next prompt.
    fn cmd(&mut self, line: &str, timeout: Duration) -> Result<String> {
        eprintln!("[{}] {line}", self.node.name);
        pair::send_line(self.node, line)?;
        let start = self.pos;
        self.prompt(timeout)?;
        let log = std::fs::read(self.node.serial_log())?;
        let out = String::from_utf8_lossy(&log[start..self.pos.min(log.len())]).into_owned();
        eprintln!("{out}");
        Ok(out)
    }

    fn login(&mut self) -> Result<()> {
        self.expect("password: ", pair::BOOT_TIMEOUT)?;
        self.run(PASSWORD, "tandemctl on ", Duration::from_secs(60))?;
        self.prompt(Duration::from_secs(30))
    }
}

/// The whole system tier.
pub fn run(sh: &Shell) -> Result<()> {
    let started = Instant::now();
    let spec = ImageSpec::load()?;
    let board = BoardSpec::load(&spec.image.board)?;
    section("system test: images (the factory image, a second build, a broken build)");
    let (base, v2, bad) = test_images(sh, true)?;
    let bad = bad.context("no broken build")?;
    let dir = &base.dir;
    std::fs::copy(
        project_root().join("xtask/data/system-pair.yaml"),
        dir.join("system-pair.yaml"),
    )?;
    let name = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (v2_bundle, bad_bundle) = (name(&v2.upgrade), name(&bad.upgrade));
    let baseline = image::build_baseline(sh, &base)?;
    let t_build = started.elapsed();

    section("system test: boot the pair, first-boot setup on both serial consoles");
    let lab = pair::up(sh, 2)?;
    let state = pair::state_dir();
    serve(dir)?;
    let (lb1, lb2) = (&lab.nodes[0], &lab.nodes[1]);
    let mut c1 = Console::new(lb1);
    let mut c2 = Console::new(lb2);
    let mut boot_times = Vec::new();
    for (c, i) in [(&mut c1, 1), (&mut c2, 2)] {
        c.pos = 0;
        let first = c.expect("node name (lb1 or lb2): ", pair::BOOT_TIMEOUT)?;
        check_first_boot(c.node, &first)?;
        boot_times.push(started.elapsed());
        setup(c, i)?;
    }

    section("system test: commit the lab configuration on both nodes");
    let url = format!("http://{SERVE}/system-pair.yaml");
    for c in [&mut c1, &mut c2] {
        // `setup` starts the supervisor and returns before it listens: on a quick setup of
        // the other node the first `config load` can come before that (seen once).
        let deadline = Instant::now() + Duration::from_secs(120);
        let out = loop {
            let out = c.cmd(&format!("config load {url}"), Duration::from_secs(60))?;
            if !out.contains("cannot reach the supervisor") || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        ensure!(
            !out.contains("error"),
            "{}: config load failed:\n{out}",
            c.node.name
        );
        let out = c.cmd("config commit system test", Duration::from_secs(120))?;
        ensure!(
            !out.contains("error"),
            "{}: config commit failed:\n{out}",
            c.node.name
        );
    }

    section("system test: traffic from the client through the VIP");
    let t = wait_for_vip(sh, Duration::from_secs(180))?;
    eprintln!(
        "the VIP answers ({:.1} s after the commits)",
        t.as_secs_f64()
    );
    let status = c1.cmd("status", Duration::from_secs(30))?;
    ensure!(
        status.to_ascii_lowercase().contains("master"),
        "lb1 is not master:\n{status}"
    );

    section("system test: least privilege and the firewall on lb1 (report on its ttyS1)");
    let report = security_report(lb1, Duration::from_secs(300))?;
    eprintln!("{report}");
    check_security_report(&report)?;

    section("system test: 2000 concurrent keep-alive connections through the VIP");
    let load = concurrent_clients(CONCURRENT_CLIENTS)?;
    eprintln!("{load}");

    section("system test: lb1's QEMU quits; client outage (a request every 10 ms)");
    let gap = outage_while(sh, || {
        let pid = pair::pid_of(&lb1.pidfile()).context("lb1 has no pid")?;
        cmd!(sh, "kill {pid}").run()?;
        Ok(())
    })?;
    eprintln!("client outage when lb1 died: {gap:.0} ms");

    // The boot-time comparison, on the same VM in the same conditions (lb2 running and
    // serving beside it): first the bare-Debian baseline on lb1's machine (same NICs,
    // taps, a copy of its firmware variables), to its login prompt; then lb1 on its own
    // disk, to "node healthy" (supervisor READY, proxy listening, VRRP settled).
    section("system test: the bare-Debian baseline boots on lb1's VM (boot-time reference)");
    let accel = std::fs::read_to_string(state.join("accel.arg"))?;
    let names = vec!["lb1".to_owned(), "lb2".to_owned()];
    wait_gone(lb1)?;
    let t_bare = Instant::now();
    let bare = pair::boot_vm_with(
        sh,
        &board,
        &accel,
        &names,
        0,
        pair::Disk::Borrowed(&baseline),
    )?;
    let mut cb = Console::new(&bare);
    cb.pos = 0;
    cb.expect("login: ", pair::BOOT_TIMEOUT)?;
    let t_baseline = t_bare.elapsed();
    cb.expect("=== boot report", Duration::from_secs(300))?;
    let bare_report = cb.expect("=== end of boot report", Duration::from_secs(120))?;
    eprintln!(
        "bare Debian: login prompt {:.1} s after QEMU started\n{bare_report}",
        t_baseline.as_secs_f64()
    );
    let pid = pair::pid_of(&bare.pidfile()).context("the baseline VM has no pid")?;
    cmd!(sh, "kill {pid}").run()?;
    wait_gone(&bare)?;

    section("system test: lb1 comes back");
    let t_back = Instant::now();
    let lb1b = pair::boot_vm(sh, &board, &base.img, &accel, &names, 0, false)?;
    let mut c1 = Console::new(&lb1b);
    c1.pos = 0; // QEMU started a new serial log
    c1.expect("node healthy after", pair::BOOT_TIMEOUT)?;
    let t_healthy = t_back.elapsed();
    // lb1 has the higher priority and preempts: it serves on the VIP once the client's
    // neighbour entry for the VIP names lb1's LAN MAC (its gratuitous ARP).
    let lb1_mac = board
        .nics
        .iter()
        .find(|n| n.role == "lan")
        .and_then(|n| n.qemu_macs.first())
        .context("board has no LAN MAC for lb1")?
        .to_ascii_lowercase();
    let t_vip = vip_owner_is(sh, &lb1_mac, t_back, Duration::from_secs(120));
    c1.pos = 0;
    c1.login()?;
    wait_for_vip(sh, Duration::from_secs(180))?;
    let boot_report = c1.cmd("show boot", Duration::from_secs(330))?;
    let vip_note = match t_vip {
        Some(t) => format!("{:.1} s", t.as_secs_f64()),
        None => "not seen within 120 s".to_owned(),
    };
    eprintln!(
        "lb1 back: healthy {:.1} s after QEMU started, master on the VIP (seen by the client) \
         {vip_note}; bare Debian login prompt {:.1} s (same VM, same conditions, {:+.1} s to healthy)",
        t_healthy.as_secs_f64(),
        t_baseline.as_secs_f64(),
        t_healthy.as_secs_f64() - t_baseline.as_secs_f64()
    );

    section("system test: upgrade lb2 to the second build");
    let t_up = Instant::now();
    let out = c2.run(
        &format!("firmware install http://{SERVE}/{v2_bundle} --reboot"),
        "rebooting",
        Duration::from_secs(600),
    )?;
    ensure!(
        out.contains("signature and sha256"),
        "lb2: install output:\n{out}"
    );
    let t_install = t_up.elapsed();
    c2.login()?;
    let version = c2.cmd("show version", Duration::from_secs(30))?;
    ensure!(
        version.contains(&format!("version: {}-v2", image::workspace_version()?)),
        "lb2 does not run the second build:\n{version}"
    );
    let blessed = wait_status(&mut c2, "slot B: ", "good", Duration::from_secs(400))?;
    let t_upgrade = t_up.elapsed();
    eprintln!(
        "lb2 upgraded and blessed in {:.0} s (install {:.0} s):\n{blessed}",
        t_upgrade.as_secs_f64(),
        t_install.as_secs_f64()
    );

    section("system test: a broken build on lb2 rolls back");
    let t_rb = Instant::now();
    c2.run(
        &format!("firmware install http://{SERVE}/{bad_bundle} --tries 1 --reboot"),
        "rebooting",
        Duration::from_secs(600),
    )?;
    c2.expect("no tries left: slot B boots next", pair::BOOT_TIMEOUT)?;
    c2.login()?;
    let version = c2.cmd("show version", Duration::from_secs(30))?;
    ensure!(
        version.contains("-v2"),
        "lb2 is not back on the second build:\n{version}"
    );
    let st = c2.cmd("firmware status", Duration::from_secs(30))?;
    ensure!(st.contains("running slot: B"), "lb2 not on slot B:\n{st}");
    let t_rollback = t_rb.elapsed();
    wait_for_vip(sh, Duration::from_secs(60))?;

    drop(lab);
    eprintln!(
        "\nsystem test passed in {:.0} s (test builds {:.0} s)\n  setup prompts: lb1 {:.0} s, lb2 {:.0} s after start\n  \
         outage when lb1 died: {gap:.0} ms\n  {load}\n  upgrade lb2 (download, verify, write, reboot, blessed): {:.0} s\n  \
         broken build rolled back (install, trial, give-up, reboot): {:.0} s\n  \
         boot (same VM, lb2 running beside it, QEMU start to the console line): lb1 healthy {:.1} s \
         (master on the VIP: {vip_note}), bare Debian login prompt {:.1} s\n\nlb1 (show boot):\n{boot_report}\n\nbare Debian:\n{bare_report}",
        started.elapsed().as_secs_f64(),
        t_build.as_secs_f64(),
        boot_times[0].as_secs_f64() - t_build.as_secs_f64(),
        boot_times[1].as_secs_f64() - t_build.as_secs_f64(),
        t_upgrade.as_secs_f64(),
        t_rollback.as_secs_f64(),
        t_healthy.as_secs_f64(),
        t_baseline.as_secs_f64(),
    );
    Ok(())
}

/// The system tier's builds, all from the current tree and the same release binaries
/// (what ships; a cold fat-LTO build took 363 s against 203 s with thin LTO, not worth
/// testing other binaries than the shipped ones): the factory image (where `pair` looks
/// for it), a second build (`-v2`) and, if asked, a broken build whose trial boots give
/// up after `BROKEN_TRIAL_S`.
fn test_images(
    sh: &Shell,
    broken: bool,
) -> Result<(image::Outputs, image::Outputs, Option<image::Outputs>)> {
    let bin = image::build_binaries(sh, "release")?;
    let build = |suffix: Option<&str>, broken: bool| image::Args {
        zstd_level: 1,
        tandem_bin: Some(bin.tandem.clone()),
        tandemctl_bin: bin.tandemctl.clone(),
        version_suffix: suffix.map(str::to_owned),
        broken,
        trial_timeout_s: broken.then_some(BROKEN_TRIAL_S),
        ..Default::default()
    };
    // The factory image of the pair also reports its security settings on ttyS1.
    let base = image::run(
        sh,
        image::Args {
            diagnostics: true,
            ..build(None, false)
        },
    )?;
    let v2 = image::run(sh, build(Some("v2"), false))?;
    let bad = if broken {
        Some(image::run(sh, build(None, true))?)
    } else {
        None
    };
    Ok((base, v2, bad))
}

/// Clients the fd-limit check holds open at once through the VIP.
const CONCURRENT_CLIENTS: usize = 2000;

/// The security report of a `--diagnostics` build, from the node's second serial port.
fn security_report(node: &Node, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let log = std::fs::read(node.diag_log()).unwrap_or_default();
        let text = String::from_utf8_lossy(&log).into_owned();
        if let (Some(a), Some(b)) = (
            text.find("=== security report"),
            text.find("=== end of security report"),
        ) && a < b
        {
            return Ok(text[a..b].replace('\r', ""));
        }
        ensure!(
            Instant::now() < deadline,
            "{}: no security report on ttyS1 ({}) within {timeout:?}; so far:\n{text}",
            node.name,
            node.diag_log().display()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The report's lines for the first process whose command line starts `/usr/bin/tandem
/// <what> `.
fn process_block<'a>(report: &'a str, what: &str) -> Option<Vec<&'a str>> {
    let head = format!(": /usr/bin/tandem {what} ");
    let mut lines = report
        .lines()
        .skip_while(|l| !(l.starts_with("pid ") && l.contains(&head)));
    let first = lines.next()?;
    let mut block = vec![first];
    block.extend(lines.take_while(|l| l.starts_with("    ")));
    Some(block)
}

/// What the booted appliance must show: the proxy and the VRRP daemon as user `tandem`
/// with only their capabilities, the supervisor root, the open-file hard limit, the
/// sysctls, and the firewall loaded with its counters.
fn check_security_report(report: &str) -> Result<()> {
    let field = |block: &[&str], key: &str| -> String {
        block
            .iter()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let uid = report
        .lines()
        .find_map(|l| l.strip_prefix("/etc/passwd:tandem:x:"))
        .and_then(|r| r.split(':').next())
        .context("no tandem account in /etc/passwd")?
        .to_owned();
    for (what, caps) in [("proxy", "0000000000000400"), ("vrrp", "0000000000003000")] {
        let b = process_block(report, what).with_context(|| format!("no {what} process"))?;
        let ids = field(&b, "Uid:");
        ensure!(
            ids.split_whitespace().all(|u| u == uid),
            "{what} does not run as tandem (uid {uid}): Uid {ids}"
        );
        for set in ["CapEff:", "CapPrm:", "CapAmb:", "CapBnd:"] {
            ensure!(
                field(&b, set) == caps,
                "{what}: {set} {} (want {caps})",
                field(&b, set)
            );
        }
        ensure!(
            field(&b, "NoNewPrivs:") == "1",
            "{what}: NoNewPrivs not set"
        );
        let files = field(&b, "Max open files");
        ensure!(
            files.split_whitespace().nth(1) == Some("1048576"),
            "{what}: open-file hard limit is not 1048576: {files}"
        );
    }
    let sup = process_block(report, "supervisor").context("no supervisor process")?;
    ensure!(
        field(&sup, "Uid:").split_whitespace().all(|u| u == "0"),
        "the supervisor is not root"
    );
    for want in [
        "kernel/sysrq = 0",
        "net/ipv4/conf/all/rp_filter = 2",
        "net/ipv4/conf/lan/rp_filter = 2",
        "net/ipv4/conf/lan/accept_redirects = 0",
        "net/ipv4/conf/all/send_redirects = 0",
        "net/ipv6/conf/lan/accept_ra = 0",
        "net/ipv4/tcp_syncookies = 1",
        "table inet tandem",
        "counter dropped_lan",
    ] {
        ensure!(report.contains(want), "the security report lacks `{want}`");
    }
    let nr_open: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("fs/nr_open = "))
        .and_then(|v| v.trim().parse().ok())
        .context("no fs/nr_open in the report")?;
    ensure!(
        nr_open >= 1_048_576,
        "fs.nr_open {nr_open} is below the proxy's hard limit"
    );
    Ok(())
}

/// `clients` keep-alive connections through the VIP from the client host, all open at
/// once: each connects and gets a page (50 in flight at a time) and is held open until
/// every one is, then each gets a second page on the same connection (50 in flight),
/// then all close. Fails unless every connection opened and every request got a page.
fn concurrent_clients(clients: usize) -> Result<String> {
    let script = format!(
        r#"
import asyncio, json, resource, time
N = {clients}
INFLIGHT = 50
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
errors = {{}}
examples = {{}}
def err(kind, e):
    k = kind + ": " + type(e).__name__
    errors[k] = errors.get(k, 0) + 1
    examples.setdefault(k, str(e)[:200])
async def get(r, w):
    w.write(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    body = await r.readexactly(length)
    if not (head.startswith(b"HTTP/1.1 200") and (b"web1" in body or b"web2" in body)):
        raise ValueError(head.split(b"\r\n")[0].decode(errors="replace"))
async def main():
    gate = asyncio.Semaphore(INFLIGHT)
    async def first():
        async with gate:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("{VIP}", 80), 60)
            except Exception as e:
                err("connect", e)
                return None
            try:
                await asyncio.wait_for(get(r, w), 60)
                return (r, w)
            except Exception as e:
                err("request 1", e)
                w.close()
                return None
    t0 = time.time()
    conns = [c for c in await asyncio.gather(*(first() for _ in range(N))) if c]
    t_open = time.time() - t0
    async def second(c):
        async with gate:
            try:
                await asyncio.wait_for(get(*c), 60)
                return 1
            except Exception as e:
                err("request 2", e)
                return 0
    t1 = time.time()
    oks = sum(await asyncio.gather(*(second(c) for c in conns)))
    t_second = time.time() - t1
    for r, w in conns:
        w.close()
    ok = len(conns) + oks
    print(json.dumps({{"clients": N, "open_at_once": len(conns), "open_s": round(t_open, 1),
        "requests": 2 * N, "ok": ok, "failed": 2 * N - ok, "second_round_s": round(t_second, 1),
        "errors": errors, "examples": examples}}))
asyncio.run(asyncio.wait_for(main(), 540))
"#
    );
    let started = Instant::now();
    let out = Command::new("timeout")
        .args([
            "600",
            "ip",
            "netns",
            "exec",
            "tandem-pair-client",
            "python3",
            "-c",
            &script,
        ])
        .output()
        .context("running the concurrent clients")?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(
        out.status.success(),
        "the concurrent clients failed ({}): {text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = text
        .split("\"failed\": ")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .context("the concurrent clients printed no result")?;
    let open = text
        .split("\"open_at_once\": ")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    ensure!(
        failed == 0 && open == clients,
        "{clients} concurrent connections through the VIP: {text}"
    );
    Ok(format!(
        "{clients} concurrent keep-alive connections through the VIP, 0 failures ({:.0} s): {text}",
        started.elapsed().as_secs_f64()
    ))
}

/// Waits (bounded) until the node's QEMU has exited.
fn wait_gone(node: &Node) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pair::pid_alive(&node.pidfile()) {
        ensure!(
            Instant::now() < deadline,
            "{}: QEMU still running 30 s after it was stopped",
            node.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The first boot grew the data partition to the end of the (4 GiB) disk.
fn check_first_boot(node: &Node, console: &str) -> Result<()> {
    let line = console
        .lines()
        .find(|l| l.contains("tandem-firstboot: ") && l.contains("data partition"))
        .with_context(|| format!("{}: no tandem-firstboot line on the console", node.name))?;
    eprintln!("[{}] {}", node.name, line.trim());
    ensure!(
        line.contains("data partition grown to 3."),
        "{}: the data partition was not grown to the disk: {line}",
        node.name
    );
    Ok(())
}

/// Answers the first-boot setup's questions for node `lb{i}` (after its first question).
fn setup(c: &mut Console, i: usize) -> Result<()> {
    c.run(
        &format!("lb{i}"),
        "management address",
        Duration::from_secs(30),
    )?;
    c.run(
        &format!("198.19.0.1{i}/24"),
        "management gateway",
        Duration::from_secs(30),
    )?;
    // No management gateway: the lab host is on the management subnet.
    c.run("", "LAN address", Duration::from_secs(30))?;
    c.run(
        &format!("198.18.0.1{i}/24"),
        "sync link address",
        Duration::from_secs(30),
    )?;
    c.run(
        &format!("198.18.1.{i}/24"),
        "admin password",
        Duration::from_secs(30),
    )?;
    c.run(PASSWORD, "again", Duration::from_secs(30))?;
    c.run(PASSWORD, "setup done", Duration::from_secs(120))?;
    c.prompt(Duration::from_secs(120))
}

/// Starts the lab's HTTP server for bundles and the config (inside `LAN_NS`).
fn serve(dir: &std::path::Path) -> Result<()> {
    let state = pair::state_dir();
    pair::spawn_logged(
        &state.join("bundles.pid"),
        &state.join("bundles.log"),
        Command::new("ip")
            .args([
                "netns",
                "exec",
                LAN_NS,
                "/usr/bin/python3",
                "-m",
                "http.server",
            ])
            .args(["8080", "--bind", "198.19.0.1", "--directory"])
            .arg(dir),
    )
}

/// `cargo xtask test --power-cut`: `runs` times, lb1's QEMU is killed (SIGKILL: the
/// guest's page cache and unflushed writes are lost) at a random point of
/// `firmware install`, then booted again: it must reach the console and log in.
/// `fresh_images`: build the factory image and the second build first; otherwise use
/// the ones the system tier has just built in the same `cargo xtask test`.
pub fn power_cut(sh: &Shell, runs: usize, fresh_images: bool) -> Result<()> {
    let started = Instant::now();
    let spec = ImageSpec::load()?;
    let board = BoardSpec::load(&spec.image.board)?;
    let (base, v2) = if fresh_images {
        let (base, v2, _) = test_images(sh, false)?;
        (base, v2)
    } else {
        let version = image::workspace_version()?;
        let base = image::Outputs::new(&spec, &version);
        let v2 = image::Outputs::new(&spec, &format!("{version}-v2"));
        ensure!(
            base.img.exists() && v2.upgrade.exists(),
            "the system tier's images are missing ({}, {})",
            base.img.display(),
            v2.upgrade.display()
        );
        (base, v2)
    };
    let bundle = v2
        .upgrade
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lab = pair::up(sh, 1)?;
    serve(&base.dir)?;
    let lb1 = &lab.nodes[0];
    let mut c = Console::new(lb1);
    c.pos = 0;
    let first = c.expect("node name (lb1 or lb2): ", pair::BOOT_TIMEOUT)?;
    check_first_boot(lb1, &first)?;
    setup(&mut c, 1)?;
    // One complete install first: how long the window is.
    let t = Instant::now();
    let out = c.cmd(
        &format!("firmware install http://{SERVE}/{bundle}"),
        Duration::from_secs(900),
    )?;
    ensure!(
        out.contains("installed "),
        "the reference install failed:
{out}"
    );
    let window = t.elapsed();
    eprintln!(
        "a complete install takes {:.1} s on the console",
        window.as_secs_f64()
    );
    let accel = std::fs::read_to_string(pair::state_dir().join("accel.arg"))?;
    let names = vec!["lb1".to_owned()];
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut results = Vec::new();
    let mut node = None;
    for run in 1..=runs {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Up to 15 % past the reference install's length, so that some cuts come after
        // a completed install too (then the new slot must boot).
        let cut = window.mul_f64((seed % 1000) as f64 / 1000.0 * 1.15);
        let current = node.as_ref().unwrap_or(lb1);
        // At the prompt: after the setup (first run) or the login of the previous run.
        let c = Console::new(current);
        pair::send_line(
            current,
            &format!("firmware install http://{SERVE}/{bundle}"),
        )?;
        // The last run (of two or more) cuts right after the install said `installed`:
        // what it reported must have reached the disk.
        let cut = if runs >= 2 && run == runs {
            let t = Instant::now();
            pair::wait_for_text(current, "installed ", c.pos, Duration::from_secs(600))?;
            t.elapsed()
        } else {
            std::thread::sleep(cut);
            cut
        };
        let pid = pair::pid_of(&current.pidfile()).context("lb1 has no pid")?;
        cmd!(sh, "kill -KILL {pid}").run()?;
        while pair::pid_alive(&current.pidfile()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read(current.serial_log()).unwrap_or_default();
        let tail = String::from_utf8_lossy(&log[c.pos.min(log.len())..]).into_owned();
        let step = tail
            .lines()
            .rfind(|l| l.contains("  [") || l.contains("verifying") || l.contains("downloading"))
            .unwrap_or("before the download")
            .trim()
            .to_owned();
        let completed = tail.contains("installed ");
        let target = tail
            .lines()
            .find_map(|l| l.split("installing into slot ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned);
        let step = if completed {
            "install completed".to_owned()
        } else {
            step
        };
        let t_boot = Instant::now();
        let n = pair::boot_vm(sh, &board, &base.img, &accel, &names, 0, false)?;
        let mut c = Console::new(&n);
        c.pos = 0;
        c.login()?;
        let st = c.cmd("firmware status", Duration::from_secs(60))?;
        let running = st
            .lines()
            .find_map(|l| l.trim().strip_prefix("running slot: "))
            .unwrap_or("?")
            .trim()
            .to_owned();
        eprintln!(
            "power cut {run}/{runs}: at {:.1} s ({step}); booted slot {running} to the prompt in {:.0} s",
            cut.as_secs_f64(),
            t_boot.elapsed().as_secs_f64()
        );
        if completed {
            // An install that said `installed` is durable: its slot boots next.
            ensure!(
                target.as_deref() == Some(running.as_str()),
                "power cut {run}: the install had completed (into slot {target:?}) but slot \
                 {running} booted:\n{st}"
            );
        }
        results.push((cut, step, running));
        node = Some(n);
    }
    drop(lab);
    eprintln!(
        "\npower-cut test: {runs} of {runs} cuts booted ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    for (i, (cut, step, slot)) in results.iter().enumerate() {
        eprintln!(
            "  {}: cut at {:.1} s, last step seen `{step}`, booted slot {slot}",
            i + 1,
            cut.as_secs_f64()
        );
    }
    Ok(())
}

/// `firmware status` until the line starting with `line` contains `want`.
fn wait_status(c: &mut Console, line: &str, want: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = c.cmd("firmware status", Duration::from_secs(60))?;
        if st.lines().any(|l| l.contains(line) && l.contains(want)) {
            return Ok(st);
        }
        if Instant::now() > deadline {
            bail!("{}: `{line}` never became {want}:\n{st}", c.node.name);
        }
        std::thread::sleep(Duration::from_secs(10));
    }
}

/// Polls (every 100 ms, up to `timeout`) the client host's neighbour entry for the VIP
/// until it names `mac`; returns the time since `since`, or `None`.
fn vip_owner_is(sh: &Shell, mac: &str, since: Instant, timeout: Duration) -> Option<Duration> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let neigh = cmd!(sh, "ip -n tandem-pair-client neigh show {VIP}")
            .quiet()
            .ignore_status()
            .read()
            .unwrap_or_default();
        if neigh.to_ascii_lowercase().contains(mac) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Waits until the client gets a page from the VIP.
fn wait_for_vip(sh: &Shell, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let url = format!("http://{VIP}/");
    loop {
        let out = cmd!(sh, "ip netns exec tandem-pair-client curl -s -m 2 {url}")
            .quiet()
            .ignore_status()
            .read()
            .unwrap_or_default();
        if out.contains("web1") || out.contains("web2") {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("the VIP {VIP} did not answer from the client host within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs a client in the client namespace sending a request every 10 ms, calls `event`
/// after 3 s, and returns the longest gap between two successful requests, in ms.
fn outage_while(sh: &Shell, event: impl FnOnce() -> Result<()>) -> Result<f64> {
    let script = format!(
        r#"
import http.client, time, json
end = time.time() + 40
last_ok = None; gap = 0.0; ok = fail = 0
while time.time() < end:
    t = time.time()
    try:
        c = http.client.HTTPConnection("{VIP}", 80, timeout=0.3)
        c.request("GET", "/"); r = c.getresponse(); r.read(); c.close()
        good = r.status == 200
    except Exception:
        good = False
    now = time.time()
    if good:
        ok += 1
        if last_ok is not None: gap = max(gap, now - last_ok)
        last_ok = now
    else:
        fail += 1
    time.sleep(max(0.0, 0.01 - (time.time() - t)))
print(json.dumps({{"gap_ms": gap * 1000, "ok": ok, "fail": fail}}))
"#
    );
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            "tandem-pair-client",
            "python3",
            "-c",
            &script,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the client loop")?;
    std::thread::sleep(Duration::from_secs(3));
    event()?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("client: {text}");
    let _ = sh;
    let gap = text
        .split("\"gap_ms\": ")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|n| n.trim().parse::<f64>().ok())
        .context("the client loop printed no gap")?;
    ensure!(
        !text.contains("\"ok\": 0,"),
        "no request succeeded during the failover"
    );
    Ok(gap)
}
