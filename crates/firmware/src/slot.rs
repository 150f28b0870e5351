//! The A/B slot model and the systemd-boot state on the ESP.
//!
//! Owns: which slot is running (`root=PARTLABEL=tandem-a|b` on the kernel command line),
//! the slot devices (`/dev/disk/by-partlabel/tandem-<slot>`), the boot entries
//! `loader/entries/tandem-<slot>[+LEFT[-DONE]].conf` (boot counting as systemd-boot does it),
//! `default` in `loader/loader.conf`, and the small atomic file operations on the ESP
//! (write a temp file, fsync, rename, fsync the directory, with `tandem-fsutil`'s primitives
//! and a fixed `.tmp` name the resumable install steps know). Also which entry systemd-boot
//! would boot ([`Status::next_boot`]), used by `firmware status` and the crash tests.
//! Must not write a slot partition (that is [`crate::install`]).

use std::path::{Path, PathBuf};

use crate::{Error, Result, io};

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// `tandem-a`.
    A,
    /// `tandem-b`.
    B,
}

impl Slot {
    /// The GPT partition label, also the ESP directory and the entry id stem.
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "tandem-a",
            Slot::B => "tandem-b",
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `A` or `B`.
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'A',
            Slot::B => 'B',
        }
    }

    /// The slot a label names.
    pub fn from_label(label: &str) -> Option<Slot> {
        match label {
            "tandem-a" => Some(Slot::A),
            "tandem-b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The `default` pattern of loader.conf that selects this slot: its blessed entry
    /// (`tandem-b.conf`) or a counted one with tries left (`tandem-b+2-1.conf`), never
    /// one out of tries (`tandem-b+0-3.conf`). systemd-boot 252 matches `default` against
    /// entry ids that still carry the counter, and it does not skip an out-of-tries entry
    /// that matches; with this pattern such an entry matches nothing, so systemd-boot
    /// falls back to its first entry in sort order, where out-of-tries entries come last.
    pub fn default_pattern(self) -> String {
        format!("{}[.+][c1-9]*", self.label())
    }

    /// The running slot, from a kernel command line (`root=PARTLABEL=tandem-a`).
    pub fn from_cmdline(cmdline: &str) -> Result<Slot> {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("root=PARTLABEL="))
            .and_then(Slot::from_label)
            .ok_or_else(|| Error::UnknownSlot(cmdline.trim().to_owned()))
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// A boot entry file name, parsed: `tandem-b+2-1.conf` is slot B, 2 tries left, 1 done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The slot it boots.
    pub slot: Slot,
    /// The file name in `loader/entries`.
    pub file: String,
    /// Tries left; `None` when the entry is not counted (blessed, or a factory entry).
    pub tries_left: Option<u32>,
    /// Tries done.
    pub tries_done: u32,
}

impl Entry {
    /// Parses an entry file name; `None` for files that are not Tandem slot entries.
    pub fn parse(file: &str) -> Option<Entry> {
        let stem = file.strip_suffix(".conf")?;
        let (id, counter) = match stem.rsplit_once('+') {
            Some((id, c)) => (id, Some(c)),
            None => (stem, None),
        };
        let slot = Slot::from_label(id)?;
        let (tries_left, tries_done) = match counter {
            None => (None, 0),
            Some(c) => {
                let (left, done) = match c.split_once('-') {
                    Some((l, d)) => (l, d.parse().ok()?),
                    None => (c, 0),
                };
                (Some(left.parse().ok()?), done)
            }
        };
        Some(Entry {
            slot,
            file: file.to_owned(),
            tries_left,
            tries_done,
        })
    }

    /// The blessed file name of this entry (the counter stripped).
    pub fn id(&self) -> String {
        format!("{}.conf", self.slot.label())
    }

    /// Blessed (or never counted): boots whatever the count.
    pub fn is_good(&self) -> bool {
        self.tries_left.is_none()
    }

    /// Counted and out of tries: systemd-boot sorts it last and does not pick it.
    pub fn is_bad(&self) -> bool {
        self.tries_left == Some(0)
    }

    /// Human state: `good`, `trial (2 tries left)`, `bad`.
    pub fn state(&self) -> String {
        match self.tries_left {
            None => "good".into(),
            Some(0) => "bad (out of tries)".into(),
            Some(n) => format!("trial ({n} tries left, {} done)", self.tries_done),
        }
    }
}

/// Where things are on a node (tests point these at temp files).
#[derive(Debug, Clone)]
pub struct Layout {
    /// The ESP mount point (`/efi`).
    pub esp: PathBuf,
    /// The directory of partition-label links (`/dev/disk/by-partlabel`).
    pub by_partlabel: PathBuf,
    /// The kernel command line file (`/proc/cmdline`).
    pub cmdline: PathBuf,
    /// The public key bundles are verified with.
    pub key: PathBuf,
    /// Tries a freshly written slot gets (`[boot] tries` of image.toml).
    pub tries: u32,
    /// The running image's manifest (`/usr/share/tandem/manifest.txt`): its `version:` is
    /// what a bundle is compared with.
    pub manifest: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            esp: "/efi".into(),
            by_partlabel: "/dev/disk/by-partlabel".into(),
            cmdline: "/proc/cmdline".into(),
            key: "/usr/share/tandem/firmware-key.pub.pem".into(),
            tries: 3,
            manifest: "/usr/share/tandem/manifest.txt".into(),
        }
    }
}

/// The firmware state of a node, read from the kernel command line and the ESP.
#[derive(Debug, Clone)]
pub struct Status {
    /// The slot the node runs.
    pub running: Slot,
    /// `default` of loader.conf, as written (e.g. `tandem-a[.+][c1-9]*`, or `tandem-a.conf`
    /// in images before the pattern).
    pub default: Option<String>,
    /// The Tandem entries on the ESP.
    pub entries: Vec<Entry>,
}

impl Status {
    /// The entry of `slot`, if any (at most one per slot after a clean install).
    pub fn entry(&self, slot: Slot) -> Option<&Entry> {
        self.entries.iter().find(|e| e.slot == slot)
    }

    /// The slot `default` names.
    pub fn default_slot(&self) -> Option<Slot> {
        let d = self.default.as_deref()?;
        Slot::from_label(d.get(..8)?)
    }

    /// What systemd-boot (252) would boot next: the entry `default` matches (the slot's
    /// entry unless it is out of tries; an old-style `tandem-a.conf` default matches only
    /// the blessed file), else the first entry in its order: entries with tries before
    /// those without, then by id, newest (highest) first.
    pub fn next_boot(&self) -> Option<&Entry> {
        if let (Some(slot), Some(d)) = (self.default_slot(), self.default.as_deref()) {
            let exact = d.ends_with(".conf");
            if let Some(e) = self
                .entries
                .iter()
                .find(|e| e.slot == slot && !e.is_bad() && (!exact || e.file == d))
            {
                return Some(e);
            }
        }
        let mut all: Vec<&Entry> = self.entries.iter().collect();
        all.sort_by(|a, b| a.is_bad().cmp(&b.is_bad()).then(b.file.cmp(&a.file)));
        all.first().copied()
    }
}

impl Layout {
    /// `loader/entries` on the ESP.
    pub fn entries_dir(&self) -> PathBuf {
        self.esp.join("loader/entries")
    }

    /// `loader/loader.conf` on the ESP.
    pub fn loader_conf(&self) -> PathBuf {
        self.esp.join("loader/loader.conf")
    }

    /// The block device of a slot.
    pub fn device(&self, slot: Slot) -> PathBuf {
        self.by_partlabel.join(slot.label())
    }

    /// The running firmware's version: the `version:` line of its manifest ("unknown" when
    /// the manifest has none, which [`crate::version`] cannot order).
    pub fn running_version(&self) -> Result<String> {
        let text =
            std::fs::read_to_string(&self.manifest).map_err(io("reading", &self.manifest))?;
        Ok(crate::bundle::manifest_field(&text, "version")
            .unwrap_or("unknown")
            .to_owned())
    }

    /// The running slot.
    pub fn running(&self) -> Result<Slot> {
        let text = std::fs::read_to_string(&self.cmdline).map_err(io("reading", &self.cmdline))?;
        Slot::from_cmdline(&text)
    }

    /// Reads the state of the ESP.
    pub fn status(&self) -> Result<Status> {
        let running = self.running()?;
        let loader = self.loader_conf();
        let text = std::fs::read_to_string(&loader).map_err(io("reading", &loader))?;
        let default = text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("default")).then(|| w.next().map(str::to_owned))?
        });
        Ok(Status {
            running,
            default,
            entries: self.entries()?,
        })
    }

    /// The Tandem entries on the ESP, sorted by file name.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let dir = self.entries_dir();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let e = e.map_err(io("listing", &dir))?;
            if let Some(entry) = e.file_name().to_str().and_then(Entry::parse) {
                out.push(entry);
            }
        }
        out.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(out)
    }

    /// Replaces `loader.conf` so that `default` names `slot`'s entry; other lines stay.
    pub fn set_default(&self, slot: Slot) -> Result<()> {
        let loader = self.loader_conf();
        let text = std::fs::read_to_string(&loader).map_err(io("reading", &loader))?;
        write_atomic(&loader, render_default(&text, slot).as_bytes())
    }

    /// Blesses the running slot's counted entry (`tandem-b+1-2.conf` → `tandem-b.conf`),
    /// as `systemd-bless-boot good` does. Returns whether anything was renamed.
    pub fn bless_running(&self) -> Result<bool> {
        let running = self.running()?;
        let dir = self.entries_dir();
        for e in self.entries()? {
            if e.slot == running && !e.is_good() {
                let from = dir.join(&e.file);
                let to = dir.join(e.id());
                rename_synced(&from, &to)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `firmware rollback`: the other slot becomes the default. It must have a good
    /// (blessed) entry: a slot that never proved healthy is not a rollback target.
    pub fn rollback(&self) -> Result<Slot> {
        let st = self.status()?;
        let target = st.running.other();
        match st.entry(target) {
            Some(e) if e.is_good() => {}
            Some(e) => {
                return Err(Error::Esp {
                    path: self.entries_dir().join(&e.file),
                    reason: format!(
                        "slot {target} was never blessed ({}); it is not a rollback target",
                        e.state()
                    ),
                });
            }
            None => {
                return Err(Error::Esp {
                    path: self.entries_dir(),
                    reason: format!("slot {target} has no boot entry (nothing installed there)"),
                });
            }
        }
        self.set_default(target)?;
        Ok(target)
    }

    /// After systemd-boot fell back (the default entry ran out of tries and the running,
    /// good slot booted instead): point `default` back at the running slot, so the state
    /// on the ESP says what actually runs. Returns the slot that failed, if it did.
    pub fn settle_fallback(&self) -> Result<Option<Slot>> {
        let st = self.status()?;
        let Some(default) = st.default_slot() else {
            return Ok(None);
        };
        let running_good = st.entry(st.running).is_some_and(Entry::is_good);
        let default_bad = st.entry(default).is_some_and(Entry::is_bad);
        if default != st.running && running_good && default_bad {
            self.set_default(st.running)?;
            return Ok(Some(default));
        }
        Ok(None)
    }

    /// On a trial boot that did not get healthy in time (the trial timer): if this boot
    /// used the entry's last try, point `default` at the other slot when that one is good,
    /// so the next boot does not depend on systemd-boot skipping an out-of-tries default.
    /// Returns the slot `default` was moved to, if it was.
    pub fn give_up_trial(&self) -> Result<Option<Slot>> {
        let st = self.status()?;
        let other = st.running.other();
        let last_try = st.entry(st.running).is_some_and(Entry::is_bad);
        let other_good = st.entry(other).is_some_and(Entry::is_good);
        if last_try && other_good && st.default_slot() != Some(other) {
            self.set_default(other)?;
            return Ok(Some(other));
        }
        Ok(None)
    }
}

/// `text` (a loader.conf) with its `default` line selecting `slot` (added if missing).
pub fn render_default(text: &str, slot: Slot) -> String {
    let line = format!("default {}", slot.default_pattern());
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.split_whitespace().next() == Some("default") {
                found = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.insert(0, line);
    }
    out.join("\n") + "\n"
}

/// Writes `path` atomically: `path.tmp`, fsync, then [`rename_synced`] over `path`.
///
/// On vfat the rename onto an existing name re-points the existing directory entry at the
/// new clusters (one sector), so after a power cut the name holds the old or the new
/// content, never a mix; a leftover `.tmp` is harmless.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    write_synced(&tmp, data)?;
    rename_synced(&tmp, path)
}

/// Renames `from` to `to` durably: rename, fsync the renamed file, fsync the directory.
///
/// The file's fsync is what makes a rename durable on vfat (the ESP): Linux's vfat writes
/// the new directory entry's start cluster and size (or re-points an existing entry) only
/// when the renamed *inode* is written back, while fsyncing the directory writes the entry
/// as created (empty) and the removal of the old one. Found by the QEMU power-cut test: a
/// cut after `firmware install` had reported success booted the old slot, with the new
/// boot entry present but empty and `loader.conf` still naming the old slot.
pub fn rename_synced(from: &Path, to: &Path) -> Result<()> {
    tandem_fsutil::rename_synced(from, to).map_err(io("renaming", from))
}

/// `path` with `.tmp` appended.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Creates or truncates `path`, writes `data`, fsyncs it.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    tandem_fsutil::write_synced(path, data).map_err(io("writing", path))
}

/// fsyncs a directory (its entries: creations, renames, removals).
pub fn sync_dir(dir: &Path) -> Result<()> {
    tandem_fsutil::sync_dir(dir).map_err(io("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entry_names() {
        let e = Entry::parse("tandem-b+2-1.conf").expect("entry");
        assert_eq!((e.slot, e.tries_left, e.tries_done), (Slot::B, Some(2), 1));
        assert_eq!(e.id(), "tandem-b.conf");
        let e = Entry::parse("tandem-a+3.conf").expect("entry");
        assert_eq!((e.tries_left, e.tries_done), (Some(3), 0));
        assert!(Entry::parse("tandem-b+0-3.conf").expect("entry").is_bad());
        assert!(Entry::parse("tandem-a.conf").expect("entry").is_good());
        assert_eq!(Entry::parse("debian.conf"), None);
        assert_eq!(Entry::parse("tandem-a+x.conf"), None);
    }

    #[test]
    fn running_slot_from_cmdline() {
        let c = "console=ttyS0,115200 root=PARTLABEL=tandem-b rootfstype=squashfs ro\n";
        assert_eq!(Slot::from_cmdline(c).expect("slot"), Slot::B);
        let e = Slot::from_cmdline("root=/dev/sda2").expect_err("unknown");
        assert!(e.to_string().contains("no root=PARTLABEL"), "{e}");
    }

    #[test]
    fn default_line_is_replaced_or_added() {
        let t = "# c\ndefault tandem-a.conf\ntimeout 0\n";
        assert_eq!(
            render_default(t, Slot::B),
            "# c\ndefault tandem-b[.+][c1-9]*\ntimeout 0\n"
        );
        assert_eq!(
            render_default("timeout 0\n", Slot::A),
            "default tandem-a[.+][c1-9]*\ntimeout 0\n"
        );
    }

    /// systemd-boot 252: `default tandem-a.conf` does not match `tandem-a+1.conf` (the id
    /// keeps the counter) and the first entry in its order boots: the lab saw exactly this
    /// (slot B booted after installing into A), hence the pattern.
    #[test]
    fn old_exact_default_misses_a_counted_entry() {
        let st = Status {
            running: Slot::B,
            default: Some("tandem-a.conf".into()),
            entries: vec![
                Entry::parse("tandem-a+1.conf").expect("a"),
                Entry::parse("tandem-b.conf").expect("b"),
            ],
        };
        assert_eq!(st.next_boot().map(|e| e.slot), Some(Slot::B));
        let st = Status {
            default: Some(Slot::A.default_pattern()),
            ..st
        };
        assert_eq!(st.next_boot().map(|e| e.slot), Some(Slot::A));
    }

    #[test]
    fn next_boot_skips_bad_default() {
        let st = Status {
            running: Slot::A,
            default: Some(Slot::B.default_pattern()),
            entries: vec![
                Entry::parse("tandem-a.conf").expect("a"),
                Entry::parse("tandem-b+0-3.conf").expect("b"),
            ],
        };
        assert_eq!(st.next_boot().map(|e| e.slot), Some(Slot::A));
    }
}
