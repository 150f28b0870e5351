//! `cargo xtask pair`: the appliance pair as two QEMU VMs on this machine.
//!
//! Owns: the lab around the VMs (network namespaces `tandem-pair-*`, bridges and taps
//! inside them, the client host and demo web servers), the QEMU processes, their serial
//! consoles (Unix sockets + log files under `target/pair/`), `pair console`, `pair down`,
//! and the boot checks of `cargo xtask test --system`. Design: docs/pair.md.
//! Must not touch the root network namespace (198.18.0.0/15 from there reaches an outside
//! service), nor any process, namespace or interface it did not create.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::image;
use crate::spec::{BoardSpec, ImageSpec};
use crate::{host, project_root, section};

/// The namespace that holds the bridges, the taps and the QEMU processes.
pub const LAN_NS: &str = "tandem-pair-lan";
/// Namespaces of the test hosts on the LAN: (namespace, address, role).
const HOSTS: [(&str, &str, &str); 3] = [
    ("tandem-pair-client", "198.18.0.10", "client"),
    ("tandem-pair-web1", "198.18.0.21", "web1"),
    ("tandem-pair-web2", "198.18.0.22", "web2"),
];
/// The demo web servers: `python3 -m http.server` (threads, HTTP/1.0), with a listen
/// backlog for bursts (the module's is 5: a burst of proxy connections, e.g. the system
/// tier's 2000 concurrent clients, would see SYNs dropped). Arguments: port, address, dir.
const WEB_SERVER: &str = "import functools, sys, http.server as h
h.ThreadingHTTPServer.request_queue_size = 4096
handler = functools.partial(h.SimpleHTTPRequestHandler, directory=sys.argv[3])
h.ThreadingHTTPServer((sys.argv[2], int(sys.argv[1])), handler).serve_forever()
";
/// The VIP the pair serves on the LAN (a pair config puts it there).
pub const VIP: &str = "198.18.0.100";
/// The lab side of the management segment (the operator's host, inside `LAN_NS`).
const MGMT_HOST: &str = "198.19.0.1/24";
/// What the serial console prints when it is ready: the first-boot setup's first question
/// on a node that is not set up, the admin password prompt on one that is.
pub const READY: [&str; 2] = ["node name (lb1 or lb2): ", "password: "];
/// Bound on one TCG boot to the console prompt (about 30-40 s idle; much more under load).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<PairCmd>,
    /// Boot only the first N nodes (1 while iterating on a loaded machine).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
}

#[derive(clap::Subcommand)]
pub enum PairCmd {
    /// Boot the pair (the default): build what is missing, start the lab and the VMs.
    Up,
    /// Attach to a node's serial console (Ctrl-] detaches).
    Console {
        /// lb1 or lb2.
        node: String,
    },
    /// Stop the VMs and remove the lab (namespaces, taps, hosts).
    Down,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    match args.cmd.unwrap_or(PairCmd::Up) {
        PairCmd::Up => {
            let lab = up(sh, args.nodes)?;
            for node in &lab.nodes {
                let t = wait_for_prompt(node, BOOT_TIMEOUT)?;
                eprintln!(
                    "{}: console prompt after {:.1} s",
                    node.name,
                    t.as_secs_f64()
                );
            }
            lab.disarm();
            eprintln!(
                "\nThe pair is up ({}).\n  consoles: cargo xtask pair console lb1 | lb2 (Ctrl-] detaches)\n  \
                 the VIP will answer at http://{VIP}/ from the client host once the nodes are set up and\n  \
                 serving: ip netns exec tandem-pair-client curl http://{VIP}/\n  \
                 management: 198.19.0.11 (lb1), 198.19.0.12 (lb2) from `ip netns exec {LAN_NS} ...`\n  \
                 stop: cargo xtask pair down",
                accel_note(&state_dir())
            );
            Ok(())
        }
        PairCmd::Console { node } => console(sh, &node),
        PairCmd::Down => down(sh),
    }
}

/// `target/pair/`: per-node directories with disks, consoles, pid files and logs.
pub fn state_dir() -> PathBuf {
    project_root().join("target/pair")
}

fn accel_note(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("accel")).unwrap_or_else(|_| "unknown accelerator".into())
}

/// One VM of the pair.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
}

impl Node {
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    /// The second serial port's file (ttyS1: diagnostics of test builds).
    pub fn diag_log(&self) -> PathBuf {
        self.dir.join("diag.log")
    }
    fn serial_sock(&self) -> PathBuf {
        self.dir.join("serial.sock")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
}

/// The running lab. Dropping it without `disarm` tears everything down (also on error).
pub struct Lab {
    pub nodes: Vec<Node>,
    armed: bool,
}

impl Lab {
    /// Leaves the lab running after this process exits (`pair down` removes it).
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.armed {
            eprintln!("tearing the pair down");
            if let Ok(sh) = Shell::new()
                && let Err(e) = down(&sh)
            {
                eprintln!("warning: pair tear-down: {e:#}");
            }
        }
    }
}

/// Tries KVM with a 5 s probe (the kernel must print its banner on the serial port);
/// returns the `-accel` argument and a note for the screen.
pub fn pick_accel(sh: &Shell, vmlinuz: &Path) -> (String, String) {
    let started = Instant::now();
    let out = cmd!(
        sh,
        "timeout 5 qemu-system-x86_64 -accel kvm -machine q35 -m 256 -nodefaults -display none
         -no-reboot -serial stdio -kernel {vmlinuz} -append 'console=ttyS0 panic=-1'"
    )
    .quiet()
    .ignore_status()
    .ignore_stderr()
    .read()
    .unwrap_or_default();
    if out.contains("Linux version") {
        (
            "kvm".into(),
            format!(
                "KVM (probe booted a kernel in {:.1} s)",
                started.elapsed().as_secs_f64()
            ),
        )
    } else {
        (
            "tcg,tb-size=64".into(),
            "software emulation (TCG): /dev/kvm cannot run a guest here; expect 30-40 s per boot, more under load"
                .into(),
        )
    }
}

/// Starts the lab and boots `count` nodes (does not wait for them).
pub fn up(sh: &Shell, count: usize) -> Result<Lab> {
    if !host::nix_is_root() {
        bail!("the pair needs root (network namespaces, taps)");
    }
    let spec = ImageSpec::load()?;
    let board = BoardSpec::load(&spec.image.board)?;
    host::ensure_packages_from(
        sh,
        &project_root().join("image/host-packages.txt"),
        &spec.mirror()?,
    )?;
    let out = image::ensure_built(sh)?;
    down(sh)?; // a previous lab, if any
    let dir = state_dir();
    std::fs::create_dir_all(&dir)?;
    let mut lab = Lab {
        nodes: Vec::new(),
        armed: true,
    };

    section("the lab: namespaces, bridges, hosts");
    let ns = LAN_NS;
    cmd!(sh, "ip netns add {ns}").run()?;
    cmd!(sh, "ip -n {ns} link set lo up").run()?;
    for br in ["br-lan", "br-mgmt"] {
        cmd!(sh, "ip -n {ns} link add {br} type bridge").run()?;
        cmd!(sh, "ip -n {ns} link set {br} up").run()?;
    }
    cmd!(sh, "ip -n {ns} addr add {MGMT_HOST} dev br-mgmt").run()?;
    for (host_ns, addr, role) in HOSTS {
        cmd!(sh, "ip netns add {host_ns}").run()?;
        let (outer, inner) = (format!("h-{role}"), "eth0");
        cmd!(
            sh,
            "ip -n {ns} link add {outer} type veth peer name {inner} netns {host_ns}"
        )
        .run()?;
        cmd!(sh, "ip -n {ns} link set {outer} master br-lan up").run()?;
        cmd!(sh, "ip -n {host_ns} link set lo up").run()?;
        cmd!(sh, "ip -n {host_ns} addr add {addr}/24 dev {inner}").run()?;
        cmd!(sh, "ip -n {host_ns} link set {inner} up").run()?;
        if role.starts_with("web") {
            let www = dir.join(role);
            std::fs::create_dir_all(&www)?;
            std::fs::write(www.join("index.html"), format!("{role}\n"))?;
            spawn_logged(
                &dir.join(format!("{role}.pid")),
                &dir.join(format!("{role}.log")),
                Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        host_ns,
                        "/usr/bin/python3",
                        "-c",
                        WEB_SERVER,
                        "80",
                        addr,
                    ])
                    .arg(&www),
            )?;
        }
    }

    let (accel, note) = pick_accel(sh, &out.vmlinuz);
    eprintln!("accelerator: {note}");
    std::fs::write(dir.join("accel"), &note)?;

    std::fs::write(dir.join("accel.arg"), &accel)?;
    let names: Vec<String> = (1..=count).map(|i| format!("lb{i}")).collect();
    for i in 0..names.len() {
        let node = boot_vm(sh, &board, &out.img, &accel, &names, i, true)?;
        lab.nodes.push(node);
    }
    Ok(lab)
}

/// Boots node `names[i]` (`fresh`: new disk overlay, OVMF vars and taps; otherwise the
/// node's disk as it was, e.g. after its QEMU was killed). Does not wait for it.
pub fn boot_vm(
    sh: &Shell,
    board: &BoardSpec,
    img: &Path,
    accel: &str,
    names: &[String],
    i: usize,
    fresh: bool,
) -> Result<Node> {
    let disk = if fresh { Disk::Fresh(img) } else { Disk::Kept };
    boot_vm_with(sh, board, accel, names, i, disk)
}

/// What a node's VM boots.
pub enum Disk<'a> {
    /// A new copy-on-write overlay of this image, new OVMF vars, new taps.
    Fresh(&'a Path),
    /// The node's disk and OVMF vars as they were (after its QEMU was killed).
    Kept,
    /// Another image (the bare-Debian baseline) on this node's VM: the same machine,
    /// NICs, taps and a copy of the node's OVMF vars, on a throw-away overlay. The node's
    /// own disk and vars are not touched. The node's QEMU must not be running.
    Borrowed(&'a Path),
}

/// Boots node `names[i]` on `disk`. Does not wait for it.
pub fn boot_vm_with(
    sh: &Shell,
    board: &BoardSpec,
    accel: &str,
    names: &[String],
    i: usize,
    disk: Disk,
) -> Result<Node> {
    let fresh = matches!(disk, Disk::Fresh(_));
    let dir = state_dir();
    let ns = LAN_NS;
    let name = &names[i];
    let node_dir = dir.join(name);
    std::fs::create_dir_all(&node_dir)?;
    let node = Node {
        name: name.clone(),
        dir: node_dir.clone(),
    };
    section(&format!("booting {name}"));
    let (disk, vars) = match disk {
        Disk::Fresh(img) => {
            // A copy-on-write overlay per VM: the built image is never written. 4 GiB so
            // the data partition has room to grow on first boot.
            let (disk, vars) = (node_dir.join("disk.qcow2"), node_dir.join("OVMF_VARS.fd"));
            cmd!(sh, "qemu-img create -q -f qcow2 -F raw -b {img} {disk} 4G").run()?;
            std::fs::copy(OVMF_VARS, &vars).context("copying the OVMF vars template")?;
            (disk, vars)
        }
        Disk::Kept => (node_dir.join("disk.qcow2"), node_dir.join("OVMF_VARS.fd")),
        Disk::Borrowed(img) => {
            let (disk, vars) = (
                node_dir.join("borrowed.qcow2"),
                node_dir.join("borrowed-vars.fd"),
            );
            cmd!(sh, "qemu-img create -q -f qcow2 -F raw -b {img} {disk} 4G").run()?;
            std::fs::copy(node_dir.join("OVMF_VARS.fd"), &vars)
                .context("copying the node's OVMF vars")?;
            (disk, vars)
        }
    };
    let mut nic_args: Vec<String> = Vec::new();
    for nic in &board.nics {
        let role = &nic.role;
        let mac = nic
            .qemu_macs
            .get(i)
            .with_context(|| format!("board has no QEMU MAC for {role} on {name}"))?;
        let id = format!("n{role}");
        match role.as_str() {
            // The sync link: a point-to-point wire between the two QEMU processes
            // (datagram Unix sockets; no host interface, no bridge).
            "sync" => {
                let me = dir.join(format!("sync-{name}.sock"));
                let peer = dir.join(format!("sync-{}.sock", names_peer(name)));
                nic_args.push("-netdev".into());
                nic_args.push(format!(
                    "dgram,id={id},local.type=unix,local.path={},remote.type=unix,remote.path={}",
                    me.display(),
                    peer.display()
                ));
            }
            // mgmt and lan: a tap on the namespace's bridge.
            _ => {
                let tap = format!("{name}-{role}");
                let br = if role == "lan" { "br-lan" } else { "br-mgmt" };
                if fresh {
                    cmd!(sh, "ip -n {ns} tuntap add dev {tap} mode tap").run()?;
                    cmd!(sh, "ip -n {ns} link set {tap} master {br} up").run()?;
                }
                nic_args.push("-netdev".into());
                nic_args.push(format!("tap,id={id},ifname={tap},script=no,downscript=no"));
            }
        }
        nic_args.push("-device".into());
        nic_args.push(format!("virtio-net-pci,netdev={id},mac={mac}"));
    }
    let serial = format!(
        "socket,id=ser0,path={},server=on,wait=off,logfile={}",
        node.serial_sock().display(),
        node.serial_log().display()
    );
    // A second serial port (ttyS1) into a file: test builds write their diagnostics report
    // there (image --diagnostics), off the console the tests type on.
    let diag = format!("file,id=ser1,path={}", node_dir.join("diag.log").display());
    let code = format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}");
    let vars = format!("if=pflash,format=raw,unit=1,file={}", vars.display());
    let drive = format!("if=none,id=disk0,format=qcow2,file={}", disk.display());
    let pidfile = node.pidfile();
    let wd = &board.watchdog.qemu_device;
    let qlog = node_dir.join("qemu.log");
    // QEMU runs inside the lab namespace so that its taps are there; -daemonize
    // returns once the VM is started. ICH9-LPC.noreboot=off: q35's built-in TCO
    // watchdog (iTCO_wdt, the hardware board's driver) really resets, as on the box.
    cmd!(
        sh,
        "ip netns exec {ns} qemu-system-x86_64 -name {name} -machine q35 -accel {accel}
         -m 768 -smp 1 -nodefaults -display none -daemonize -pidfile {pidfile} -D {qlog}
         -drive {code} -drive {vars} -drive {drive} -device virtio-blk-pci,drive=disk0
         -chardev {serial} -serial chardev:ser0 -chardev {diag} -serial chardev:ser1 -device {wd}
         -global ICH9-LPC.noreboot=off {nic_args...}"
    )
    .run()
    .with_context(|| format!("starting {name}"))?;
    Ok(node)
}

fn names_peer(name: &str) -> &'static str {
    if name == "lb1" { "lb2" } else { "lb1" }
}

/// Starts a long-lived helper (a demo web server) detached, with its pid in `pidfile`.
pub fn spawn_logged(pidfile: &Path, log: &Path, command: &mut Command) -> Result<()> {
    eprintln!("$ {command:?} &");
    let log = std::fs::File::create(log)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting a lab helper")?;
    std::fs::write(pidfile, child.id().to_string())?;
    Ok(())
}

/// Waits (bounded) until the node's serial log shows the console prompt; returns the
/// time since the VM was started (its pid file was written).
pub fn wait_for_prompt(node: &Node, timeout: Duration) -> Result<Duration> {
    let started = std::fs::metadata(node.pidfile())
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| std::time::SystemTime::now());
    wait_for_any(node, &READY, 0, timeout)?;
    Ok(started.elapsed().unwrap_or_default())
}

/// Waits (bounded) for `needle` in the serial log after byte `from`; returns the log
/// length after the match.
pub fn wait_for_text(node: &Node, needle: &str, from: usize, timeout: Duration) -> Result<usize> {
    wait_for_any(node, &[needle], from, timeout).map(|(end, _)| end)
}

/// Waits (bounded) for the first of `needles` in the serial log after byte `from`;
/// returns the log length after the match and which needle matched.
pub fn wait_for_any(
    node: &Node,
    needles: &[&str],
    from: usize,
    timeout: Duration,
) -> Result<(usize, usize)> {
    let needle = needles.join(" | ");
    let deadline = Instant::now() + timeout;
    loop {
        let log = std::fs::read(node.serial_log()).unwrap_or_default();
        let tail = log.get(from..).unwrap_or_default();
        let found = needles
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                tail.windows(n.len().max(1))
                    .position(|w| w == n.as_bytes())
                    .map(|at| (at, i, n.len()))
            })
            .min();
        if let Some((at, i, len)) = found {
            return Ok((from + at + len, i));
        }
        let text = String::from_utf8_lossy(tail);
        if Instant::now() > deadline {
            let tail: String = text
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "{}: no {needle:?} on the serial console within {timeout:?}; last output:\n{tail}",
                node.name
            );
        }
        if !pid_alive(&node.pidfile()) {
            bail!("{}: QEMU exited while waiting for {needle:?}", node.name);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Types a line on the node's serial console; returns the log length before it.
pub fn send_line(node: &Node, line: &str) -> Result<usize> {
    let before = std::fs::metadata(node.serial_log())
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let mut s = UnixStream::connect(node.serial_sock())
        .with_context(|| format!("connecting to {}", node.serial_sock().display()))?;
    s.write_all(format!("{line}\r").as_bytes())?;
    s.flush()?;
    // Keep the connection until the guest has echoed the line, so the characters are
    // not lost when QEMU sees the client go.
    std::thread::sleep(Duration::from_millis(500));
    Ok(before)
}

pub fn pid_of(pidfile: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(pidfile).ok()?;
    let pid = pid.trim();
    (!pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit())).then(|| pid.to_owned())
}

/// True while the process runs. A lab helper we spawned and killed stays a zombie until
/// this process exits, so state `Z` counts as gone.
pub fn pid_alive(pidfile: &Path) -> bool {
    pid_of(pidfile).is_some_and(|p| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
    })
}

/// Stops the processes of the lab (by their pid files) and removes its namespaces.
pub fn down(sh: &Shell) -> Result<()> {
    let dir = state_dir();
    let mut pidfiles = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                pidfiles.push(p.join("qemu.pid"));
            } else if p.extension().is_some_and(|x| x == "pid") {
                pidfiles.push(p);
            }
        }
    }
    for pf in &pidfiles {
        if let Some(pid) = pid_of(pf).filter(|_| pid_alive(pf)) {
            cmd!(sh, "kill {pid}").ignore_status().run()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_alive(pf) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if pid_alive(pf) {
                cmd!(sh, "kill -KILL {pid}").ignore_status().run()?;
            }
        }
        let _ = std::fs::remove_file(pf);
    }
    let existing = cmd!(sh, "ip netns list").quiet().read().unwrap_or_default();
    for ns in std::iter::once(LAN_NS).chain(HOSTS.iter().map(|h| h.0)) {
        if existing
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns))
        {
            cmd!(sh, "ip netns del {ns}").run()?;
        }
    }
    Ok(())
}

fn console(sh: &Shell, node: &str) -> Result<()> {
    let sock = state_dir().join(node).join("serial.sock");
    if !sock.exists() {
        bail!(
            "{node} is not running (no {}); start it with `cargo xtask pair`",
            sock.display()
        );
    }
    eprintln!("attached to {node}'s serial console; Ctrl-] detaches");
    let target = format!("UNIX-CONNECT:{}", sock.display());
    cmd!(sh, "socat -,raw,echo=0,escape=0x1d {target}").run()?;
    Ok(())
}
