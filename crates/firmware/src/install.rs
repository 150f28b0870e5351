//! Installing a verified bundle into the inactive slot: a [`Plan`] of [`Step`]s, made
//! first (nothing written), then executed in order.
//!
//! The order, and why a power cut at any point leaves the running slot bootable:
//!
//! 1. [`Step::DefaultToRunning`] (only if `default` names the target, e.g. an earlier
//!    install was never rebooted): `loader.conf` is rewritten atomically to name the
//!    running slot. Before and after the rename the default is a bootable entry.
//! 2. [`Step::RemoveTargetEntries`]: every `tandem-<target>*.conf` goes, and the directory
//!    is fsynced. From here nothing on the ESP refers to the target slot, so its partition
//!    and its kernel files may be garbage at any moment without anything booting them.
//! 3. [`Step::WriteSlot`]: `rootfs.squashfs` is copied to the target partition, fsynced.
//! 4. [`Step::VerifySlot`]: the page cache is dropped and the partition read back; its
//!    sha256 must equal the signed one (this also catches a bundle changed after
//!    verification and a short write).
//! 5. [`Step::CopyBootFile`] × 2: `vmlinuz` and `initrd.img` into `/<label>/` on the ESP,
//!    each via a `.tmp` file that is hashed against the signed sum, fsynced and renamed.
//! 6. [`Step::WriteEntry`]: `loader/entries/tandem-<target>+<tries>.conf`, via `.tmp` +
//!    rename (systemd-boot reads only `*.conf`, so a leftover `.tmp` is ignored). The entry
//!    exists but is not the default: a cut here still boots the running slot.
//! 7. [`Step::SetDefault`]: `loader.conf` names the target, atomically (vfat re-points the
//!    existing directory entry in one sector; see [`crate::slot::write_atomic`]). Only now
//!    does the next boot try the new slot, with boot counting: if it never gets blessed,
//!    systemd-boot stops picking it after `tries` boots and boots the running slot again.
//!
//! The running slot's partition, kernel files and entry are never opened for writing.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::AsFd as _;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::bundle::{Bundle, hash_range, hex};
use crate::slot::{Entry, Layout, Slot, rename_synced, sync_dir, tmp_path, write_atomic};
use crate::version::Relation;
use crate::{Error, Result, io};

/// One step of an installation, in the order [`Plan::new`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `default` in loader.conf back to the running slot (only when it names the target).
    DefaultToRunning,
    /// Remove the target slot's boot entries.
    RemoveTargetEntries,
    /// Copy the slot image to the target partition and fsync it.
    WriteSlot,
    /// Read the partition back and compare its sha256 with the signed one.
    VerifySlot,
    /// Copy a kernel or initramfs member to `/<label>/` on the ESP.
    CopyBootFile(&'static str),
    /// Create the counted boot entry of the target slot.
    WriteEntry,
    /// Point `default` at the target slot: the next boot tries it.
    SetDefault,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::DefaultToRunning => write!(f, "make the running slot the default again"),
            Step::RemoveTargetEntries => write!(f, "remove the inactive slot's boot entries"),
            Step::WriteSlot => write!(f, "write the root image to the inactive slot"),
            Step::VerifySlot => write!(f, "read the slot back and compare its sha256"),
            Step::CopyBootFile(m) => write!(f, "copy {m} to the ESP"),
            Step::WriteEntry => write!(f, "create the counted boot entry"),
            Step::SetDefault => write!(f, "make the new slot the next boot"),
        }
    }
}

/// Whether [`Plan::new`] accepts a bundle of an older release than the running firmware
/// (or one whose version cannot be ordered, see [`crate::version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downgrade {
    /// Refuse it ([`Error::Downgrade`], [`Error::UnorderedVersion`]): the default.
    Refuse,
    /// The operator asked for it (`firmware install ... --allow-downgrade`).
    Allow,
}

/// What an installation will do; made without writing anything.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where things are.
    pub layout: Layout,
    /// The slot that runs (never written).
    pub running: Slot,
    /// The slot that receives the bundle.
    pub target: Slot,
    /// The target partition.
    pub device: PathBuf,
    /// The entry file to create (`tandem-b+3.conf`).
    pub entry_file: String,
    /// Its content.
    pub entry_text: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The verified bundle.
    pub bundle: Bundle,
    /// The running firmware's version (its manifest's `version:`).
    pub running_version: String,
    /// How the bundle's version relates to it.
    pub relation: Relation,
}

impl Plan {
    /// Plans installing `bundle` (already verified) into the inactive slot. A bundle of an
    /// older release than the running firmware is refused unless `downgrade` allows it; the
    /// refusal names both versions.
    pub fn new(layout: &Layout, bundle: Bundle, downgrade: Downgrade) -> Result<Plan> {
        let running_version = layout.running_version()?;
        let relation = crate::version::relation(&running_version, bundle.version());
        if downgrade == Downgrade::Refuse {
            let versions = || (running_version.clone(), bundle.version().to_owned());
            match relation {
                Relation::Downgrade => {
                    let (running, new) = versions();
                    return Err(Error::Downgrade {
                        path: bundle.path.clone(),
                        running,
                        bundle: new,
                    });
                }
                Relation::Unordered => {
                    let (running, new) = versions();
                    return Err(Error::UnorderedVersion {
                        path: bundle.path.clone(),
                        running,
                        bundle: new,
                    });
                }
                Relation::Upgrade | Relation::SameRelease => {}
            }
        }
        let st = layout.status()?;
        let running = st.running;
        let target = running.other();
        let running_entry = st.entry(running).ok_or_else(|| Error::Esp {
            path: layout.entries_dir(),
            reason: format!("the running slot {running} has no boot entry"),
        })?;
        let path = layout.entries_dir().join(&running_entry.file);
        let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
        let options = text
            .lines()
            .find_map(|l| l.strip_prefix("options "))
            .ok_or_else(|| Error::Esp {
                path: path.clone(),
                reason: "no `options` line".into(),
            })?;
        let options: Vec<String> = options
            .split_whitespace()
            .map(|w| {
                if w.starts_with("root=PARTLABEL=") {
                    format!("root=PARTLABEL={}", target.label())
                } else {
                    w.to_owned()
                }
            })
            .collect();
        let version = bundle.version().to_owned();
        let label = target.label();
        let entry_text = format!(
            "title Tandem {version} (slot {target})\nversion {version}\nlinux /{label}/vmlinuz\n\
             initrd /{label}/initrd.img\noptions {}\n",
            options.join(" ")
        );
        let device = layout.device(target);
        let slot_len = bundle.member("rootfs.squashfs").len;
        let partition = device_len(&device)?;
        if slot_len > partition {
            return Err(Error::TooBig {
                device,
                image: slot_len,
                partition,
            });
        }
        let mut steps = Vec::new();
        if st.default_slot() == Some(target) {
            steps.push(Step::DefaultToRunning);
        }
        steps.extend([
            Step::RemoveTargetEntries,
            Step::WriteSlot,
            Step::VerifySlot,
            Step::CopyBootFile("vmlinuz"),
            Step::CopyBootFile("initrd.img"),
            Step::WriteEntry,
            Step::SetDefault,
        ]);
        Ok(Plan {
            layout: layout.clone(),
            running,
            target,
            device,
            entry_file: format!("{label}+{}.conf", layout.tries),
            entry_text,
            steps,
            bundle,
            running_version,
            relation,
        })
    }

    /// Runs every step in order, calling `progress` before each.
    pub fn execute(&self, mut progress: impl FnMut(usize, &Step)) -> Result<()> {
        for (i, step) in self.steps.iter().enumerate() {
            progress(i, step);
            self.run(step)?;
        }
        Ok(())
    }

    /// Runs one step.
    pub fn run(&self, step: &Step) -> Result<()> {
        let l = &self.layout;
        match step {
            Step::DefaultToRunning => l.set_default(self.running),
            Step::RemoveTargetEntries => {
                let dir = l.entries_dir();
                for e in l.entries()? {
                    if e.slot == self.target {
                        let p = dir.join(&e.file);
                        std::fs::remove_file(&p).map_err(io("removing", &p))?;
                    }
                }
                sync_dir(&dir)
            }
            Step::WriteSlot => self.write_slot(None),
            Step::VerifySlot => {
                let m = self.bundle.member("rootfs.squashfs");
                let mut dev = File::open(&self.device).map_err(io("opening", &self.device))?;
                drop_cache(&dev);
                let actual = hash_range(&mut dev, &self.device, 0, m.len)?;
                if actual != m.sha256 {
                    return Err(Error::HashMismatch {
                        what: format!("slot {} read back", self.device.display()),
                        expected: m.sha256.clone(),
                        actual,
                    });
                }
                Ok(())
            }
            Step::CopyBootFile(name) => {
                let dir = l.esp.join(self.target.label());
                std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
                let dst = dir.join(name);
                let tmp = tmp_path(&dst);
                self.copy_member(name, &tmp, None)?;
                rename_synced(&tmp, &dst)
            }
            Step::WriteEntry => {
                let dir = l.entries_dir();
                write_atomic(&dir.join(&self.entry_file), self.entry_text.as_bytes())
            }
            Step::SetDefault => l.set_default(self.target),
        }
    }

    /// A power cut in the middle of `step`: what is on disk then (tests only).
    #[cfg(test)]
    pub(crate) fn run_partially(&self, step: &Step) -> Result<()> {
        let l = &self.layout;
        match step {
            Step::DefaultToRunning | Step::SetDefault => {
                let slot = if *step == Step::SetDefault {
                    self.target
                } else {
                    self.running
                };
                let loader = l.loader_conf();
                let text = std::fs::read_to_string(&loader).map_err(io("reading", &loader))?;
                crate::slot::write_synced(
                    &tmp_path(&loader),
                    crate::slot::render_default(&text, slot).as_bytes(),
                )
            }
            Step::RemoveTargetEntries | Step::VerifySlot => Ok(()),
            Step::WriteSlot => {
                let half = self.bundle.member("rootfs.squashfs").len / 2;
                self.write_slot(Some(half))
            }
            Step::CopyBootFile(name) => {
                let dir = l.esp.join(self.target.label());
                std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
                let half = self.bundle.member(name).len / 2;
                self.copy_member(name, &tmp_path(&dir.join(name)), Some(half))
                    .or(Ok(()))
            }
            Step::WriteEntry => crate::slot::write_synced(
                &tmp_path(&l.entries_dir().join(&self.entry_file)),
                self.entry_text.as_bytes(),
            ),
        }
    }

    /// Copies the slot image to the partition (`limit`: stop early, as a cut would).
    fn write_slot(&self, limit: Option<u64>) -> Result<()> {
        let m = self.bundle.member("rootfs.squashfs");
        let src_path = &self.bundle.path;
        let mut src = File::open(src_path).map_err(io("opening", src_path))?;
        src.seek(SeekFrom::Start(m.offset))
            .map_err(io("seeking", src_path))?;
        let mut dev = OpenOptions::new()
            .write(true)
            .open(&self.device)
            .map_err(io("opening", &self.device))?;
        let mut left = limit.unwrap_or(m.len).min(m.len);
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            src.read_exact(&mut buf[..n])
                .map_err(io("reading", src_path))?;
            dev.write_all(&buf[..n])
                .map_err(io("writing", &self.device))?;
            left -= n as u64;
        }
        dev.sync_all().map_err(io("syncing", &self.device))
    }

    /// Copies a member to `dst`, checking its sha256 on the way (`limit`: a cut).
    fn copy_member(&self, name: &str, dst: &std::path::Path, limit: Option<u64>) -> Result<()> {
        let m = self.bundle.member(name);
        let src_path = &self.bundle.path;
        let mut src = File::open(src_path).map_err(io("opening", src_path))?;
        src.seek(SeekFrom::Start(m.offset))
            .map_err(io("seeking", src_path))?;
        let mut out = File::create(dst).map_err(io("creating", dst))?;
        let mut hasher = Sha256::new();
        let mut left = limit.unwrap_or(m.len).min(m.len);
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            src.read_exact(&mut buf[..n])
                .map_err(io("reading", src_path))?;
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io("writing", dst))?;
            left -= n as u64;
        }
        out.sync_all().map_err(io("syncing", dst))?;
        let actual = hex(&hasher.finalize());
        if actual != m.sha256 {
            return Err(Error::HashMismatch {
                what: format!("{name} copied to {}", dst.display()),
                expected: m.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// Size of a partition (or of the file standing in for it).
fn device_len(path: &std::path::Path) -> Result<u64> {
    let mut f = File::open(path).map_err(io("opening", path))?;
    f.seek(SeekFrom::End(0)).map_err(io("seeking", path))
}

/// Drops the cached pages of `file`, so that reading it back reads the device.
fn drop_cache(file: &File) {
    // Best effort: on a file system that ignores the advice the read-back still compares
    // what the kernel will hand the next boot's first reader.
    let _ = nix::fcntl::posix_fadvise(
        file.as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// The entry of `slot` is good or counted: used by the crash tests and status.
pub fn bootable(entry: Option<&Entry>) -> bool {
    entry.is_some_and(|e| !e.is_bad())
}

#[cfg(test)]
mod tests {
    //! Temp files stand in for the partitions and the ESP.

    use super::*;
    use crate::bundle::tests::{TempDir, bundle, files, key};

    const PART: u64 = 256 * 1024;

    struct Node {
        _dir: TempDir,
        layout: Layout,
        bundle: PathBuf,
        slot_a: Vec<u8>,
        new_slot: Vec<u8>,
        entry_a: String,
    }

    /// A node running slot A (factory state), and a bundle for the next version.
    fn node(tag: &str) -> Node {
        let d = TempDir::new(tag);
        let root = d.0.clone();
        let esp = root.join("esp");
        let parts = root.join("by-partlabel");
        std::fs::create_dir_all(esp.join("loader/entries")).expect("mkdir");
        std::fs::create_dir_all(esp.join("tandem-a")).expect("mkdir");
        std::fs::create_dir_all(&parts).expect("mkdir");
        std::fs::write(
            esp.join("loader/loader.conf"),
            "# factory\ndefault tandem-a.conf\ntimeout 0\neditor no\n",
        )
        .expect("write");
        let entry_a = "title Tandem 0.1.0 (slot A)\nversion 0.1.0\nlinux /tandem-a/vmlinuz\n\
                       initrd /tandem-a/initrd.img\noptions console=ttyS0,115200 root=PARTLABEL=tandem-a rootfstype=squashfs ro\n";
        std::fs::write(esp.join("loader/entries/tandem-a.conf"), entry_a).expect("write");
        std::fs::write(esp.join("tandem-a/vmlinuz"), "kernel a").expect("write");
        let slot_a: Vec<u8> = (0..PART).map(|i| (i % 251) as u8).collect();
        std::fs::write(parts.join("tandem-a"), &slot_a).expect("write");
        std::fs::write(parts.join("tandem-b"), vec![0u8; PART as usize]).expect("write");
        std::fs::write(
            root.join("cmdline"),
            "console=ttyS0,115200 root=PARTLABEL=tandem-a rootfstype=squashfs ro\n",
        )
        .expect("write");
        let (sk, key) = key(&root);
        let new_slot: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8 + 1).collect();
        let bundle = bundle(&root, &sk, &files(&new_slot, "0.2.0"));
        std::fs::write(root.join("manifest.txt"), "name: tandem\nversion: 0.1.0\n").expect("write");
        let layout = Layout {
            esp,
            by_partlabel: parts,
            cmdline: root.join("cmdline"),
            key,
            tries: 3,
            manifest: root.join("manifest.txt"),
        };
        Node {
            _dir: d,
            layout,
            bundle,
            slot_a,
            new_slot,
            entry_a: entry_a.to_owned(),
        }
    }

    fn plan(n: &Node) -> Plan {
        let b = Bundle::verify(&n.bundle, &n.layout.key).expect("verifies");
        Plan::new(&n.layout, b, Downgrade::Refuse).expect("plan")
    }

    /// systemd-boot's boot counting on one boot of the entry it picks.
    fn boot(layout: &Layout) -> Slot {
        let st = layout.status().expect("status");
        let e = st.next_boot().expect("something boots").clone();
        if let Some(left) = e.tries_left {
            let dir = layout.entries_dir();
            let to = format!("{}+{}-{}.conf", e.slot.label(), left - 1, e.tries_done + 1);
            std::fs::rename(dir.join(&e.file), dir.join(to)).expect("count");
        }
        std::fs::write(
            &layout.cmdline,
            format!("root=PARTLABEL={} ro\n", e.slot.label()),
        )
        .expect("cmdline");
        e.slot
    }

    fn slot_bytes(n: &Node, slot: Slot, len: usize) -> Vec<u8> {
        std::fs::read(n.layout.device(slot)).expect("read")[..len].to_vec()
    }

    /// Every file of the ESP and the partitions, for "nothing was written" checks.
    fn snapshot(n: &Node) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).expect("list") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push((p.clone(), std::fs::read(&p).expect("read")));
                }
            }
        }
        let mut out = Vec::new();
        walk(&n.layout.esp, &mut out);
        walk(&n.layout.by_partlabel, &mut out);
        out.sort();
        out
    }

    #[test]
    fn an_older_release_is_refused_naming_both_versions_unless_allowed() {
        let n = node("downgrade");
        std::fs::write(&n.layout.manifest, "name: tandem\nversion: 0.3.0\n").expect("write");
        let before = snapshot(&n);
        let b = Bundle::verify(&n.bundle, &n.layout.key).expect("verifies");
        let e = Plan::new(&n.layout, b.clone(), Downgrade::Refuse).expect_err("refused");
        assert!(matches!(e, Error::Downgrade { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("version 0.2.0 is older than the running firmware 0.3.0"),
            "{msg}"
        );
        assert_eq!(snapshot(&n), before, "a refused downgrade writes nothing");
        // Asked for: planned and installed like any other version.
        let p = Plan::new(&n.layout, b, Downgrade::Allow).expect("allowed");
        assert_eq!(p.relation, Relation::Downgrade);
        assert_eq!(p.running_version, "0.3.0");
        p.execute(|_, _| {}).expect("install");
        assert_eq!(slot_bytes(&n, Slot::B, n.new_slot.len()), n.new_slot);
    }

    #[test]
    fn same_release_and_upgrade_pass_and_an_unknown_running_version_is_refused() {
        let n = node("versions");
        for (running, want) in [
            ("0.1.0", Relation::Upgrade),
            ("0.2.0-v2", Relation::SameRelease),
        ] {
            std::fs::write(&n.layout.manifest, format!("version: {running}\n")).expect("write");
            let b = Bundle::verify(&n.bundle, &n.layout.key).expect("verifies");
            let p = Plan::new(&n.layout, b, Downgrade::Refuse).expect("planned");
            assert_eq!(p.relation, want, "{running}");
        }
        std::fs::write(&n.layout.manifest, "name: tandem\n").expect("write");
        let b = Bundle::verify(&n.bundle, &n.layout.key).expect("verifies");
        let e = Plan::new(&n.layout, b, Downgrade::Refuse).expect_err("refused");
        assert!(
            e.to_string().contains(
                "cannot tell whether version `0.2.0` is older than the running firmware `unknown`"
            ),
            "{e}"
        );
    }

    #[test]
    fn install_then_trial_boot_then_bless() {
        let n = node("install");
        let p = plan(&n);
        assert_eq!(p.target, Slot::B);
        assert_eq!(p.steps.first(), Some(&Step::RemoveTargetEntries));
        p.execute(|_, _| {}).expect("install");
        let entry =
            std::fs::read_to_string(n.layout.entries_dir().join("tandem-b+3.conf")).expect("entry");
        assert!(entry.contains("root=PARTLABEL=tandem-b "), "{entry}");
        assert!(entry.contains("console=ttyS0,115200"), "{entry}");
        assert!(entry.contains("version 0.2.0"), "{entry}");
        assert_eq!(slot_bytes(&n, Slot::B, n.new_slot.len()), n.new_slot);
        assert_eq!(boot(&n.layout), Slot::B);
        assert!(n.layout.bless_running().expect("bless"));
        let st = n.layout.status().expect("status");
        assert!(st.entry(Slot::B).expect("b").is_good());
        // Rollback goes back to A on purpose; and from there back to B.
        assert_eq!(n.layout.rollback().expect("rollback"), Slot::A);
        assert_eq!(boot(&n.layout), Slot::A);
        assert_eq!(n.layout.rollback().expect("rollback"), Slot::B);
    }

    #[test]
    fn unblessed_slot_runs_out_of_tries_and_the_old_slot_comes_back() {
        let n = node("fallback");
        plan(&n).execute(|_, _| {}).expect("install");
        for _ in 0..3 {
            assert_eq!(boot(&n.layout), Slot::B, "a trial boot of B");
        }
        // The trial timer of the last try gives up: default goes back to A.
        assert_eq!(n.layout.give_up_trial().expect("give up"), Some(Slot::A));
        assert_eq!(boot(&n.layout), Slot::A, "out of tries: A again");
        assert_eq!(n.layout.settle_fallback().expect("settle"), None);
        std::fs::write(n.layout.loader_conf(), "default tandem-b.conf\n").expect("loader.conf");
        assert_eq!(n.layout.settle_fallback().expect("settle"), Some(Slot::B));
        let st = n.layout.status().expect("status");
        assert_eq!(st.default_slot(), Some(Slot::A));
        assert!(
            n.layout.rollback().is_err(),
            "a bad slot is no rollback target"
        );
        // A new install over the bad slot works.
        let p = plan(&n);
        p.execute(|_, _| {}).expect("reinstall");
        assert_eq!(boot(&n.layout), Slot::B);
    }

    #[test]
    fn install_not_rebooted_then_installed_again_resets_default_first() {
        let n = node("twice");
        plan(&n).execute(|_, _| {}).expect("install");
        let p = plan(&n);
        assert_eq!(p.steps.first(), Some(&Step::DefaultToRunning));
        p.execute(|_, _| {}).expect("install again");
        assert_eq!(boot(&n.layout), Slot::B);
    }

    #[test]
    fn a_corrupted_write_is_caught_before_the_entry_exists() {
        let n = node("corrupt");
        let p = plan(&n);
        for step in &p.steps[..2] {
            p.run(step).expect("step");
        }
        p.run(&Step::WriteSlot).expect("write");
        // The disk returns something else than what was written.
        let mut bytes = std::fs::read(&p.device).expect("read");
        bytes[5] ^= 1;
        std::fs::write(&p.device, bytes).expect("write");
        let e = p.run(&Step::VerifySlot).expect_err("caught");
        assert!(e.to_string().contains("read back"), "{e}");
        assert_eq!(
            n.layout
                .status()
                .expect("status")
                .next_boot()
                .map(|e| e.slot),
            Some(Slot::A)
        );
    }

    /// A power cut after every number of completed steps, and in the middle of each step,
    /// from the factory state and from an install that was never rebooted: the running
    /// slot's partition, entry and kernel are untouched and the next boot is the running
    /// slot — or, only once `SetDefault` completed, the new slot, fully written.
    #[test]
    fn crash_at_every_step_keeps_the_running_slot_bootable() {
        for pending in [false, true] {
            let probe = node("crash-probe");
            if pending {
                plan(&probe).execute(|_, _| {}).expect("first install");
            }
            let count = plan(&probe).steps.len();
            for done in 0..=count {
                for partial in [false, true] {
                    if partial && done == count {
                        continue;
                    }
                    let n = node("crash");
                    if pending {
                        plan(&n).execute(|_, _| {}).expect("first install");
                    }
                    let p = plan(&n);
                    for step in &p.steps[..done] {
                        p.run(step).expect("step");
                    }
                    if partial {
                        p.run_partially(&p.steps[done]).expect("partial step");
                    }
                    let ctx = format!("pending={pending} done={done} partial={partial}");
                    // The running slot is untouched.
                    assert_eq!(slot_bytes(&n, Slot::A, PART as usize), n.slot_a, "{ctx}");
                    let a = std::fs::read_to_string(n.layout.entries_dir().join("tandem-a.conf"))
                        .expect("running entry");
                    assert_eq!(a, n.entry_a, "{ctx}");
                    let st = n.layout.status().expect("loader.conf readable");
                    let next = st.next_boot().expect("something boots").slot;
                    let completed = done == count;
                    if completed || (pending && done == 0) {
                        // The new slot only once it was fully written (or a complete
                        // earlier install, still pending, before this one began).
                        assert_eq!(next, Slot::B, "{ctx}");
                        assert_eq!(
                            slot_bytes(&n, Slot::B, n.new_slot.len()),
                            n.new_slot,
                            "{ctx}"
                        );
                    } else if pending && done == 1 && partial {
                        // Cut while pointing the default back: either is complete.
                        assert!(matches!(next, Slot::A | Slot::B), "{ctx}");
                    } else {
                        assert_eq!(next, Slot::A, "{ctx}");
                    }
                    // And the boot after a cut always works out: it reaches a good slot
                    // within `tries` boots even if the new slot never gets blessed.
                    let mut slot = boot(&n.layout);
                    for _ in 0..3 {
                        if slot == Slot::A {
                            break;
                        }
                        slot = boot(&n.layout);
                    }
                    assert_eq!(slot, Slot::A, "{ctx}: falls back to the running slot");
                }
            }
        }
    }
}
