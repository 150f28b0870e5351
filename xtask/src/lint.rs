//! The lint tier: formatting, clippy with `-D warnings`, and architecture checks.
//!
//! Owns: the checks that keep the tree clean and the crate boundaries honest
//! (the sans-IO cores must not depend on tokio). Must not run product tests.

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

use crate::section;

/// Crates that must stay free of any async runtime or socket library.
/// See docs/ARCHITECTURE.md, "Invariants".
const PURE_CRATES: &[&str] = &[
    "tandem-config",
    "tandem-vrrp-proto",
    "tandem-balance",
    "tandem-history",
    "tandem-forecast",
    "tandem-control",
];

/// Crates none of the pure cores may pull in.
const FORBIDDEN_IN_PURE: &[&str] = &["tokio", "socket2", "hyper"];

pub fn run(sh: &Shell) -> Result<()> {
    section("cargo fmt --check");
    cmd!(sh, "cargo fmt --all -- --check").run()?;
    // The fuzz targets are their own workspace (fuzz/Cargo.toml); formatting needs no build.
    cmd!(
        sh,
        "cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check"
    )
    .run()?;
    section("cargo clippy -D warnings");
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --locked -- -D warnings"
    )
    .run()?;
    section("dependency isolation of the pure cores");
    isolation(sh)?;
    Ok(())
}

/// `cargo tree -p CORE -i FORBIDDEN` must find nothing for every pair.
fn isolation(sh: &Shell) -> Result<()> {
    let mut bad = Vec::new();
    for krate in PURE_CRATES {
        for dep in FORBIDDEN_IN_PURE {
            // `cargo tree -i X` fails with "did not match any packages" when X is not
            // in the graph at all, and prints the inverse tree when it is.
            let out = cmd!(
                sh,
                "cargo tree --locked -e normal -p {krate} -i {dep} --prefix none"
            )
            .quiet()
            .ignore_status()
            .ignore_stderr()
            .read()?;
            if !out.trim().is_empty() {
                bad.push(format!("{krate} depends on {dep}:\n{out}"));
            }
        }
    }
    if !bad.is_empty() {
        bail!(
            "pure core crates must not depend on IO crates:\n{}",
            bad.join("\n")
        );
    }
    eprintln!(
        "ok: {} pure crates free of {:?}",
        PURE_CRATES.len(),
        FORBIDDEN_IN_PURE
    );
    Ok(())
}
