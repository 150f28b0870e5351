//! The image and board descriptions: typed views of `image/image.toml` and
//! `board/<board>.toml`, shared by `cargo xtask image` and `cargo xtask pair`.
//!
//! Owns: parsing and checking those files (unknown keys are errors). Must not hold any
//! board or image fact itself: everything comes from the TOML files.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::project_root;

/// `image/image.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub image: ImageMeta,
    pub rootfs: Rootfs,
    #[serde(rename = "package")]
    pub packages: Vec<Package>,
    pub kernel: ImageKernel,
    pub partitions: Partitions,
    pub data: Data,
    pub boot: Boot,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMeta {
    pub name: String,
    pub board: String,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    pub suite: String,
    pub sources: Vec<String>,
    pub variant: String,
    pub path_exclude: Vec<String>,
    pub path_include: Vec<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    /// Why the package is in the image (required: packages are chosen, not collected).
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageKernel {
    pub keep_modules: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    pub alignment_mib: u64,
    pub part: Vec<Part>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub label: String,
    /// One of `esp`, `slot-a`, `slot-b`, `data`.
    pub role: String,
    /// sfdisk GPT type (alias such as `U`/`L`, or a GUID).
    #[serde(rename = "type")]
    pub type_: String,
    pub size_mib: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    pub dirs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    pub tries: u32,
    pub menu_timeout_s: u32,
}

/// `board/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardSpec {
    pub board: BoardMeta,
    pub console: Console,
    pub kernel: BoardKernel,
    #[serde(rename = "nic")]
    pub nics: Vec<Nic>,
    pub watchdog: Watchdog,
    pub sysctl: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardMeta {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    pub tty: String,
    pub baud: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardKernel {
    pub cmdline: Vec<String>,
    pub keep_modules: Vec<String>,
    pub initramfs_modules: Vec<String>,
    pub deny_modules: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// Interface name in the appliance: `mgmt`, `lan` or `sync`.
    pub role: String,
    /// udev `ID_PATH` of the port on the hardware.
    pub pci_path: String,
    /// MAC of this role's NIC on each QEMU VM (lb1, lb2, ...).
    pub qemu_macs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watchdog {
    pub driver: String,
    pub qemu_driver: String,
    pub qemu_device: String,
    pub runtime_s: u32,
    pub reboot_s: u32,
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

impl ImageSpec {
    /// Reads and checks `image/image.toml`.
    pub fn load() -> Result<Self> {
        let path = project_root().join("image/image.toml");
        let spec: Self = read_toml(&path)?;
        spec.check()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(spec)
    }

    fn check(&self) -> Result<()> {
        for role in ["esp", "slot-a", "slot-b", "data"] {
            let n = self
                .partitions
                .part
                .iter()
                .filter(|p| p.role == role)
                .count();
            ensure!(n == 1, "partition role `{role}` appears {n} times (want 1)");
        }
        ensure!(
            self.partitions
                .part
                .last()
                .is_some_and(|p| p.role == "data"),
            "the data partition must be the last one (it grows to fill the disk)"
        );
        for p in &self.packages {
            ensure!(
                !p.reason.trim().is_empty(),
                "package {} has no reason",
                p.name
            );
        }
        ensure!(self.boot.tries > 0, "boot.tries must be at least 1");
        Ok(())
    }

    /// The partition with this role (checked to exist by `load`).
    pub fn part(&self, role: &str) -> &Part {
        self.partitions
            .part
            .iter()
            .find(|p| p.role == role)
            .expect("roles are checked by ImageSpec::load")
    }

    /// The first mirror URI of the rootfs sources (`deb URI suite ...`).
    pub fn mirror(&self) -> Result<String> {
        let first = self
            .rootfs
            .sources
            .first()
            .context("rootfs.sources is empty")?;
        match first.split_whitespace().nth(1) {
            Some(uri) => Ok(uri.to_owned()),
            None => bail!("rootfs.sources[0] is not `deb URI suite components`: {first}"),
        }
    }
}

impl BoardSpec {
    /// Reads `board/<name>.toml`.
    pub fn load(name: &str) -> Result<Self> {
        let path = project_root().join(format!("board/{name}.toml"));
        let spec: Self = read_toml(&path)?;
        ensure!(
            spec.board.name == name,
            "{} names itself `{}`",
            path.display(),
            spec.board.name
        );
        Ok(spec)
    }

    /// The NIC with this role.
    #[cfg(test)]
    pub fn nic(&self, role: &str) -> Result<&Nic> {
        self.nics
            .iter()
            .find(|n| n.role == role)
            .with_context(|| format!("board {} has no `{role}` NIC", self.board.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_image_and_board_files_parse() {
        let image = ImageSpec::load().expect("image/image.toml");
        let board = BoardSpec::load(&image.image.board).expect("board file");
        for role in ["mgmt", "lan", "sync"] {
            let nic = board.nic(role).expect("every role has a NIC");
            assert!(nic.qemu_macs.len() >= 2, "{role}: one MAC per pair VM");
        }
        assert!(
            board
                .kernel
                .cmdline
                .iter()
                .any(|a| a.starts_with("console="))
        );
    }
}
