//! Host set-up: installs the Debian packages listed in `xtask/host-packages.txt`.
//!
//! Owns: deciding which packages are missing and calling apt-get once.
//! Must not install anything when not root (it tells the user what to run instead).

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::{project_root, section};

/// Package names from `xtask/host-packages.txt` (comments and blank lines skipped).
pub fn wanted() -> Result<Vec<String>> {
    let path = project_root().join("xtask/host-packages.txt");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn is_installed(sh: &Shell, pkg: &str) -> bool {
    let format = "-f=${Status}";
    cmd!(sh, "dpkg-query -W {format} {pkg}")
        .quiet()
        .ignore_stderr()
        .read()
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs whatever is missing; a no-op when everything is there.
pub fn ensure_packages(sh: &Shell) -> Result<()> {
    let missing: Vec<String> = wanted()?
        .into_iter()
        .filter(|p| !is_installed(sh, p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    section(&format!("installing host packages: {}", missing.join(" ")));
    if !nix_is_root() {
        bail!(
            "missing Debian packages: {}; run `sudo cargo xtask setup` or `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    cmd!(sh, "apt-get update -q")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    cmd!(
        sh,
        "apt-get install -y -q --no-install-recommends {missing...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()?;
    Ok(())
}

/// True when running as uid 0 (read from /proc to avoid a libc dependency here).
pub fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
