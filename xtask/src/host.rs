//! Host set-up: installs the Debian packages listed in `xtask/host-packages.txt`
//! (test tiers) or in another list such as `image/host-packages.txt` (image and pair).
//!
//! Owns: deciding which packages are missing and calling apt-get, adding a Debian suite
//! (e.g. bookworm-backports) when a list entry asks for one (`name/suite`).
//! Must not install anything when not root (it tells the user what to run instead).

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::{project_root, section};

/// Package names from `xtask/host-packages.txt` (comments and blank lines skipped).
pub fn wanted() -> Result<Vec<String>> {
    wanted_from(&project_root().join("xtask/host-packages.txt"))
}

/// Package entries (`name` or `name/suite`) from a list file, comments and blanks skipped.
pub fn wanted_from(path: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn is_installed(sh: &Shell, pkg: &str) -> bool {
    let pkg = pkg.split('/').next().unwrap_or(pkg);
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

/// Installs the missing entries of a list such as `image/host-packages.txt`. Entries
/// `name/suite` are installed with `apt-get -t suite`; the suite is added to apt's sources
/// first (file `tandem-<suite>.sources`, same `mirror` as the image) if apt lacks it.
pub fn ensure_packages_from(sh: &Shell, list: &std::path::Path, mirror: &str) -> Result<()> {
    let missing: Vec<String> = wanted_from(list)?
        .into_iter()
        .filter(|p| !is_installed(sh, p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    section(&format!("installing host packages: {}", missing.join(" ")));
    if !nix_is_root() {
        bail!(
            "missing Debian packages: {}; run this command as root, or install them (see {})",
            missing.join(" "),
            list.display()
        );
    }
    let (plain, suited): (Vec<String>, Vec<String>) =
        missing.into_iter().partition(|p| !p.contains('/'));
    for p in &suited {
        let suite = p.split('/').nth(1).unwrap_or_default();
        let file = format!("/etc/apt/sources.list.d/tandem-{suite}.sources");
        if !std::path::Path::new(&file).exists() {
            let text = format!(
                "Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            );
            eprintln!("$ write {file} (suite {suite}, mirror {mirror})");
            std::fs::write(&file, text).with_context(|| format!("writing {file}"))?;
        }
    }
    cmd!(sh, "apt-get update -q")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    if !plain.is_empty() {
        cmd!(
            sh,
            "apt-get install -y -q --no-install-recommends {plain...}"
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    }
    for p in &suited {
        let mut it = p.splitn(2, '/');
        let (name, suite) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
        cmd!(
            sh,
            "apt-get install -y -q --no-install-recommends -t {suite} {name}"
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    }
    Ok(())
}

/// Installs the crates.io tool `krate` at `version` (`cargo install --locked`) unless a
/// binary `bin` of that version is on the PATH. For tools only some commands need (such as
/// cargo-fuzz for `cargo xtask fuzz`); CI installs none of them.
pub fn ensure_cargo_tool(sh: &Shell, bin: &str, krate: &str, version: &str) -> Result<()> {
    let have = cmd!(sh, "{bin} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    // `cargo-fuzz --version` prints `cargo-fuzz 0.13.2`.
    if have.split_whitespace().any(|w| w == version) {
        return Ok(());
    }
    section(&format!("installing {krate} {version} from crates.io"));
    cmd!(sh, "cargo install --locked {krate} --version {version}")
        .run()
        .with_context(|| format!("installing {krate} {version}"))?;
    Ok(())
}
