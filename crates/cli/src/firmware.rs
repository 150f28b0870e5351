//! `tandemctl firmware install FILE|URL | rollback | status` and `tandemctl show version`,
//! plus the hidden helpers the image's units call (`firmware wait-healthy`, `give-up`,
//! `settle`).
//!
//! Owns: the operator's view of the A/B slots and running `tandem-firmware`'s install plan
//! locally, as root, not through the supervisor: an upgrade must work when the supervisor
//! or its configuration is what is broken, and only root writes block devices. Fetching a
//! bundle over plain HTTP ([`crate::http`], bounded; the signature, not the transport, is
//! what is trusted). An older release than the running one is refused unless
//! `--allow-downgrade` (order: `tandem_firmware::version`).
//! Must not: reboot without being asked (`--reboot`), or write anything before the bundle
//! has verified.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::Value;
#[cfg(test)]
use serde_json::json;
use tandem_firmware::{Bundle, Downgrade, Layout, Plan, Relation, Slot};

use crate::client::Client;

/// The image manifest (`show version`).
pub const MANIFEST: &str = "/usr/share/tandem/manifest.txt";
/// Where a bundle fetched over HTTP is stored before verification.
const DOWNLOAD: &str = "/data/tandem/incoming.upgrade";

/// `firmware` commands.
#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Verify a bundle (FILE or http://HOST[:PORT]/PATH) and install it into the inactive
    /// slot; the next boot tries it (boot counting), the boot is blessed once healthy.
    Install {
        /// The `.upgrade` bundle: a path or an http:// URL.
        bundle: String,
        /// Reboot into the new slot when the install succeeded.
        #[arg(long)]
        reboot: bool,
        /// Install the bundle even when it holds an older release than the running
        /// firmware (or a version that cannot be ordered); refused without it.
        #[arg(long)]
        allow_downgrade: bool,
        /// Boot tries the new slot gets (default 3; tests use 1).
        #[arg(long, hide = true)]
        tries: Option<u32>,
    },
    /// Boot the other (previously blessed) slot next.
    Rollback {
        /// Reboot at once.
        #[arg(long)]
        reboot: bool,
    },
    /// Running slot, next boot, and each slot's entry, version and state.
    Status,
    /// Wait until the node is healthy (supervisor services up, VRRP settled, peer seen
    /// when paired); exit 1 on timeout. Run by tandem-bless-boot.service.
    #[command(hide = true)]
    WaitHealthy {
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 240)]
        timeout: u64,
    },
    /// The trial boot did not get healthy in time: on its last try point the default back
    /// at the good slot. Run by tandem-trial-timeout.service before it reboots.
    #[command(hide = true)]
    GiveUp,
    /// After a fallback boot: make the ESP's default say what runs. Run at every boot.
    #[command(hide = true)]
    Settle,
}

/// Runs a `firmware` command.
pub fn run(command: &FirmwareCommand, socket: &Path, out: &mut dyn Write) -> anyhow::Result<i32> {
    let layout = Layout::default();
    match command {
        FirmwareCommand::Install {
            bundle,
            reboot,
            allow_downgrade,
            tries,
        } => {
            let layout = Layout {
                tries: tries.unwrap_or(layout.tries),
                ..layout
            };
            let started = Instant::now();
            let path = fetch(bundle, out)?;
            // A downloaded bundle (about 150 MiB of /data) goes once the install is over,
            // whatever its outcome.
            let _cleanup = Downloaded(bundle.starts_with("http://").then(|| path.clone()));
            writeln!(out, "verifying {} ...", path.display())?;
            let b = Bundle::verify(&path, &layout.key)?;
            writeln!(
                out,
                "signature and sha256 of every member good: version {}",
                b.version()
            )?;
            let downgrade = if *allow_downgrade {
                Downgrade::Allow
            } else {
                Downgrade::Refuse
            };
            let plan = Plan::new(&layout, b, downgrade).map_err(|e| match e {
                tandem_firmware::Error::Downgrade { .. }
                | tandem_firmware::Error::UnorderedVersion { .. } => anyhow::anyhow!(
                    "{e}; nothing was written (`firmware install {bundle} --allow-downgrade` installs it anyway)"
                ),
                e => e.into(),
            })?;
            match plan.relation {
                Relation::Downgrade | Relation::Unordered => writeln!(
                    out,
                    "downgrade from {} to {} allowed by --allow-downgrade",
                    plan.running_version,
                    plan.bundle.version()
                )?,
                Relation::Upgrade | Relation::SameRelease => writeln!(
                    out,
                    "running {}, installing {}",
                    plan.running_version,
                    plan.bundle.version()
                )?,
            }
            writeln!(
                out,
                "installing into slot {} ({}), running slot {} stays untouched",
                plan.target,
                plan.device.display(),
                plan.running
            )?;
            let n = plan.steps.len();
            plan.execute(|i, step| {
                let _ = writeln!(out, "  [{}/{n}] {step}", i + 1);
                let _ = out.flush();
            })?;
            writeln!(
                out,
                "installed {} into slot {} in {:.1} s; the next boot tries it ({} tries), it is kept once the node is healthy",
                plan.bundle.version(),
                plan.target,
                started.elapsed().as_secs_f64(),
                layout.tries
            )?;
            if *reboot {
                return reboot_now(out);
            }
            writeln!(out, "reboot to switch: `reboot`")?;
            Ok(0)
        }
        FirmwareCommand::Rollback { reboot } => {
            let slot = layout.rollback()?;
            writeln!(out, "slot {slot} boots next (rollback)")?;
            if *reboot {
                return reboot_now(out);
            }
            Ok(0)
        }
        FirmwareCommand::Status => {
            status(&layout, out)?;
            Ok(0)
        }
        FirmwareCommand::WaitHealthy { timeout } => {
            wait_healthy(socket, Duration::from_secs(*timeout), out)
        }
        FirmwareCommand::GiveUp => {
            match layout.give_up_trial()? {
                Some(slot) => writeln!(
                    out,
                    "trial boot never got healthy and has no tries left: slot {slot} boots next"
                )?,
                None => writeln!(out, "trial boot not healthy: rebooting to try again")?,
            }
            Ok(0)
        }
        FirmwareCommand::Settle => {
            if let Some(bad) = layout.settle_fallback()? {
                writeln!(
                    out,
                    "slot {bad} ran out of boot tries without getting healthy; back on slot {}",
                    bad.other()
                )?;
            }
            Ok(0)
        }
    }
}

/// `show version`: the manifest of the running image and the running slot.
pub fn show_version(out: &mut dyn Write) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(MANIFEST).with_context(|| format!("reading {MANIFEST}"))?;
    let slot = Layout::default()
        .running()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "unknown".into());
    writeln!(out, "slot: {slot}")?;
    write!(out, "{text}")?;
    Ok(0)
}

/// `show boot`: systemd-analyze's boot time, the chain to `tandem-appliance.target`
/// (when the node became healthy) and the slowest units. Waits (bounded) while boot jobs are still running.
pub fn show_boot(out: &mut dyn Write) -> anyhow::Result<i32> {
    let started = Instant::now();
    loop {
        let time = std::process::Command::new("systemd-analyze")
            .arg("time")
            .output()
            .context("running systemd-analyze")?;
        if time.status.success() {
            out.write_all(&time.stdout)?;
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            writeln!(out, "boot not finished after 300 s")?;
            return Ok(1);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let chain = std::process::Command::new("systemd-analyze")
        .args(["critical-chain", "--no-pager", "tandem-appliance.target"])
        .output()
        .context("running systemd-analyze critical-chain")?;
    out.write_all(&chain.stdout)?;
    // Where the time went (one vCPU under emulation: every unit's time counts).
    let blame = std::process::Command::new("systemd-analyze")
        .args(["blame", "--no-pager"])
        .output()
        .context("running systemd-analyze blame")?;
    writeln!(out, "slowest units (systemd-analyze blame):")?;
    for line in String::from_utf8_lossy(&blame.stdout).lines().take(25) {
        writeln!(out, "  {}", line.trim())?;
    }
    let active = std::process::Command::new("systemctl")
        .args(["is-active", "tandem-appliance.target"])
        .output()
        .context("running systemctl is-active")?;
    write!(
        out,
        "tandem-appliance.target: {}",
        String::from_utf8_lossy(&active.stdout)
    )?;
    Ok(0)
}

fn status(layout: &Layout, out: &mut dyn Write) -> anyhow::Result<()> {
    let st = layout.status()?;
    writeln!(out, "running slot: {}", st.running)?;
    writeln!(
        out,
        "next boot:    {}",
        st.next_boot()
            .map(|e| e.slot.to_string())
            .unwrap_or_else(|| "nothing bootable!".into())
    )?;
    writeln!(
        out,
        "default:      {}",
        st.default.as_deref().unwrap_or("-")
    )?;
    for slot in [Slot::A, Slot::B] {
        let (state, version) = match st.entry(slot) {
            Some(e) => {
                let text =
                    std::fs::read_to_string(layout.entries_dir().join(&e.file)).unwrap_or_default();
                let version = text
                    .lines()
                    .find_map(|l| l.strip_prefix("version "))
                    .unwrap_or("?")
                    .to_owned();
                (e.state(), version)
            }
            None => ("empty".into(), "-".into()),
        };
        writeln!(out, "slot {slot}: {version:<16} {state}")?;
    }
    Ok(())
}

fn reboot_now(out: &mut dyn Write) -> anyhow::Result<i32> {
    writeln!(out, "rebooting")?;
    out.flush()?;
    let status = std::process::Command::new("systemctl")
        .arg("reboot")
        .status()
        .context("running systemctl reboot")?;
    Ok(if status.success() { 0 } else { 1 })
}

/// A local path as it is, or an http:// URL downloaded to [`DOWNLOAD`] (bounded by
/// [`crate::http::BUNDLE`]; a failed download leaves no file behind).
fn fetch(bundle: &str, out: &mut dyn Write) -> anyhow::Result<PathBuf> {
    if !bundle.starts_with("http://") {
        return Ok(PathBuf::from(bundle));
    }
    writeln!(out, "downloading {bundle} ...")?;
    let dest = PathBuf::from(DOWNLOAD);
    let n = download(bundle, &dest, crate::http::BUNDLE)?;
    writeln!(out, "downloaded {n} bytes")?;
    Ok(dest)
}

/// Removes a downloaded bundle when dropped.
struct Downloaded(Option<PathBuf>);

impl Drop for Downloaded {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Downloads `url` to `dest` through `dest.part`, renamed once complete.
pub fn download(url: &str, dest: &Path, limits: crate::http::Limits) -> anyhow::Result<u64> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = (|| {
        let file =
            std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
        let mut w = std::io::BufWriter::new(file);
        let n = crate::http::get(url, limits, &mut w)
            .with_context(|| format!("downloading to {}", part.display()))?;
        let file = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", part.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", part.display()))?;
        std::fs::rename(&part, dest)
            .with_context(|| format!("renaming {} to {}", part.display(), dest.display()))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Polls the supervisor until the node is healthy or `timeout` passes.
fn wait_healthy(socket: &Path, timeout: Duration, out: &mut dyn Write) -> anyhow::Result<i32> {
    let started = Instant::now();
    let mut last = String::from("supervisor not answering");
    while started.elapsed() < timeout {
        match Client::connect(socket)
            .and_then(|mut c| c.call(&tandem_control::supervisor::Request::Status))
        {
            Ok(v) => match unhealthy(&v) {
                None => {
                    writeln!(
                        out,
                        "node healthy after {:.1} s",
                        started.elapsed().as_secs_f64()
                    )?;
                    return Ok(0);
                }
                Some(why) => last = why,
            },
            Err(e) => last = format!("supervisor not answering: {e:#}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    writeln!(
        out,
        "node not healthy after {} s: {last}",
        timeout.as_secs()
    )?;
    Ok(1)
}

/// Why a `status` reply is not healthy, or `None` when it is: every service running and
/// healthy, every VRRP instance settled (master or backup), and, once config sync is
/// paired, the peer seen by it.
pub fn unhealthy(status: &Value) -> Option<String> {
    if status.get("ok") != Some(&Value::Bool(true)) {
        return Some("status refused".into());
    }
    for s in status["services"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("?");
        if s["state"].as_str() != Some("running") || s["healthy"] == Value::Bool(false) {
            return Some(format!("service {name} is {}", s["state"]));
        }
    }
    if status["vrrp"]["available"] == Value::Bool(true) {
        for i in status["vrrp"]["instances"].as_array().into_iter().flatten() {
            let state = i["state"].as_str().unwrap_or("").to_ascii_lowercase();
            if state != "master" && state != "backup" {
                return Some(format!("vrrp instance {} is {state}", i["name"]));
            }
        }
    }
    // The peer counts once config sync is paired (state connecting or running); an
    // unpaired or unclustered node is healthy on its own.
    let peer = &status["peer"];
    let paired = matches!(peer["state"].as_str(), Some("connecting" | "running"));
    if paired && peer["last_exchange_ms"].is_null() {
        return Some(format!("peer {} not seen yet", peer["name"]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-shot HTTP server on 127.0.0.1 answering `reply` to every connection.
    fn serve(reply: &'static [u8]) -> String {
        use std::io::Read as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/b.upgrade", l.local_addr().expect("addr"));
        std::thread::spawn(move || {
            for mut s in l.incoming().map_while(Result::ok) {
                // The whole request head, or closing with unread bytes resets the connection.
                let (mut seen, mut b) = (Vec::new(), [0u8; 4096]);
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(reply);
            }
        });
        url
    }

    #[test]
    fn a_failed_download_leaves_no_file_and_a_good_one_is_complete() {
        let dir = std::env::temp_dir().join(format!("tandem-dl-{}", std::process::id()));
        let dest = dir.join("incoming.upgrade");
        let limits = crate::http::Limits {
            max_bytes: 8,
            deadline: Duration::from_secs(5),
        };
        let e = download(
            &serve(b"HTTP/1.0 200 OK\r\n\r\n0123456789abcdef"),
            &dest,
            limits,
        )
        .expect_err("over the cap");
        assert!(
            format!("{e:#}").contains("more than the 8 byte limit"),
            "{e:#}"
        );
        assert!(!dest.exists() && !dir.join("incoming.upgrade.part").exists());
        let n = download(
            &serve(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nbundle"),
            &dest,
            limits,
        )
        .expect("downloaded");
        assert_eq!(n, 6);
        assert_eq!(std::fs::read(&dest).expect("read"), b"bundle");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn health_rules() {
        let good = json!({"ok": true, "services": [{"name": "proxy", "state": "running", "healthy": true}],
            "vrrp": {"available": true, "instances": [{"name": "vip", "state": "Backup"}]},
            "peer": {"state": "unknown"}});
        assert_eq!(unhealthy(&good), None);
        let mut v = good.clone();
        v["services"][0]["state"] = json!("backoff");
        assert!(unhealthy(&v).expect("unhealthy").contains("proxy"));
        let mut v = good.clone();
        v["vrrp"]["instances"][0]["state"] = json!("Init");
        assert!(unhealthy(&v).expect("unhealthy").contains("init"));
        let mut v = good;
        v["peer"] = json!({"name": "lb2", "state": "unpaired", "last_exchange_ms": null});
        assert_eq!(unhealthy(&v), None, "unpaired: the peer is not required");
        v["peer"] = json!({"name": "lb2", "state": "connecting", "last_exchange_ms": null});
        assert!(unhealthy(&v).expect("unhealthy").contains("lb2"));
    }
}
