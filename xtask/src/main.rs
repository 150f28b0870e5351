//! `cargo xtask`: the project's build tooling (CI checks, test tiers, host set-up).
//!
//! Owns: orchestration of cargo and system tools, in the cargo-xtask pattern.
//! Must not contain product logic; anything a daemon needs lives in `crates/`.
//! Keep the dependency list short (anyhow, clap, xshell).

mod fuzz;
mod host;
mod image;
mod lint;
mod modgraph;
mod pair;
mod run;
mod spec;
mod system;
mod test;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Build tooling for Tandem.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Everything CI checks: lint tier (fmt, clippy, isolation) then every test tier.
    Ci,
    /// Run the test tiers (installs missing host packages first when root).
    Test(test::Args),
    /// Only the lint tier: fmt check, clippy -D warnings, dependency isolation.
    Lint,
    /// Run the product locally (the local stack on loopback).
    Run(run::Args),
    /// Install the Debian packages the tests need (root only).
    Setup,
    /// Build the appliance disk image and upgrade bundle into target/image/ (root only).
    Image(image::Args),
    /// Boot the appliance pair as two QEMU VMs (`pair console lb1`, `pair down`; root only).
    Pair(pair::Args),
    /// Print the module import cycles inside each crate (a tidy test keeps new ones out).
    Modgraph,
    /// Fuzz a parser for a bounded time, or minimise its corpus (cargo-fuzz; see docs/testing.md).
    Fuzz(fuzz::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let sh = xshell::Shell::new()?;
    sh.change_dir(project_root());
    match cli.cmd {
        Cmd::Ci => {
            // CI runs as root on a clean machine: nothing may be skipped there, so
            // the test tier gets `CI=true` (passed to the children, not set on us).
            host::ensure_packages(&sh)?;
            lint::run(&sh)?;
            test::run(
                &sh,
                test::Args {
                    no_lint: true,
                    ..Default::default()
                },
                true,
            )
        }
        Cmd::Test(args) => {
            host::ensure_packages(&sh)?;
            test::run(&sh, args, std::env::var_os("CI").is_some())
        }
        Cmd::Lint => lint::run(&sh),
        Cmd::Run(args) => run::run(&sh, args),
        Cmd::Setup => host::ensure_packages(&sh),
        Cmd::Image(args) => image::run(&sh, args).map(|_| ()),
        Cmd::Pair(args) => pair::run(&sh, args),
        Cmd::Fuzz(args) => fuzz::run(&sh, args),
        Cmd::Modgraph => modgraph::run(),
    }
}

/// The workspace root, derived from this crate's manifest directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Where cargo puts build outputs: `CARGO_TARGET_DIR` (relative to the workspace root when
/// relative) or `target/`.
pub fn cargo_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => project_root().join(d),
        _ => project_root().join("target"),
    }
}

/// Prints a section header so CI logs show which step is running.
pub fn section(name: &str) {
    eprintln!("\n==> {name}");
}
