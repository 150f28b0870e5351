//! The test tiers: what `cargo xtask test` runs, in order.
//!
//! Owns: the list of tiers and how each is invoked. Tests themselves live in the
//! crates (unit, integration, network-namespace) and in the QEMU system tier
//! (`--system`, xtask/src/pair.rs; not in the default tiers yet).
//! Tests that need root skip with a notice outside CI and fail inside it (`CI` set).

use anyhow::Result;
use xshell::{Shell, cmd};

use crate::{host, lint, section};

#[derive(clap::Args, Default)]
pub struct Args {
    /// Skip the lint tier (fmt, clippy, isolation checks).
    #[arg(long)]
    pub no_lint: bool,
    /// Also run the system tier after the others: build the image if missing, boot one
    /// VM then the pair under QEMU, check the serial console and systemd-analyze (root).
    #[arg(long)]
    pub system: bool,
    /// Run only the system tier (implies `--system`; for iterating on the image).
    #[arg(long)]
    pub only_system: bool,
    /// Only the power-cut test: lb1 killed at random points of `firmware install`, then
    /// booted again (root; about 2 minutes per run under TCG; not in CI).
    #[arg(long)]
    pub power_cut: bool,
    /// Runs of the power-cut test.
    #[arg(long, default_value_t = 10)]
    pub power_cut_runs: usize,
    /// Extra arguments passed to `cargo test` (e.g. a test name filter).
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

pub fn run(sh: &Shell, args: Args, ci: bool) -> Result<()> {
    if args.power_cut {
        section("power-cut test (QEMU)");
        return crate::system::power_cut(sh, args.power_cut_runs);
    }
    if args.only_system {
        section("system tier (QEMU)");
        return crate::system::run(sh);
    }
    if !args.no_lint {
        lint::run(sh)?;
    }
    if !host::nix_is_root() {
        eprintln!(
            "note: not root: network-namespace tests will skip with a notice (CI runs them as root)"
        );
    }
    section("cargo test (unit, integration, network namespaces)");
    let extra = &args.cargo_args;
    let mut c = cmd!(
        sh,
        "cargo test --workspace --locked --no-fail-fast -- {extra...}"
    );
    if ci {
        c = c.env("CI", "true");
    }
    c.run()?;
    if args.system {
        section("system tier (QEMU)");
        crate::system::run(sh)?;
    }
    Ok(())
}
