//! The test tiers: what `cargo xtask test` runs, in order.
//!
//! Owns: the list of tiers and how each is invoked. Tests themselves live in the
//! crates (unit, integration, network-namespace), in the end-to-end package `tests/`
//! (`tandem-e2e`: the `tandem` binary across processes, namespaces and keepalived; part of
//! `cargo test --workspace`), and in the QEMU system tier (xtask/src/system.rs: the pair
//! scenario, then a few power-cut runs; root only).
//! Tests that need root skip with a notice outside CI and fail inside it (`CI` set).

use std::time::Instant;

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

use crate::{host, lint, section};

/// Power-cut runs in the default tiers (CI): enough to catch an install that leaves the
/// node unbootable at a common point, within CI's hour. `--power-cut` runs 10 by default.
const DEFAULT_TIER_POWER_CUT_RUNS: usize = 2;

#[derive(clap::Args, Default)]
pub struct Args {
    /// Skip the lint tier (fmt, clippy, isolation checks).
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the system tier (the appliance image booted as the QEMU pair, then the
    /// power-cut runs), which runs after the other tiers by default when root.
    #[arg(long)]
    pub no_system: bool,
    /// Run only the system tier: the pair scenario, without the power-cut runs (for
    /// iterating on the image).
    #[arg(long)]
    pub only_system: bool,
    /// Only the power-cut test: lb1 killed at random points of `firmware install`, then
    /// booted again (root; about 2 minutes per run under TCG).
    #[arg(long)]
    pub power_cut: bool,
    /// Runs of the power-cut test: 10 with `--power-cut`, 2 in the default tiers (0: none).
    #[arg(long)]
    pub power_cut_runs: Option<usize>,
    /// Extra arguments passed to `cargo test` (e.g. a test name filter).
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

pub fn run(sh: &Shell, args: Args, ci: bool) -> Result<()> {
    let started = Instant::now();
    if args.power_cut {
        section("power-cut test (QEMU)");
        return crate::system::power_cut(sh, args.power_cut_runs.unwrap_or(10), true);
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
    // The end-to-end tests (`tests/`, package tandem-e2e) start the `tandem` binary. They
    // build it themselves when it is missing or stale (`tandem_e2e::tandem_bin`); built here,
    // it is never built inside a test whose clock is running.
    cmd!(sh, "cargo build --locked -p tandem --bin tandem").run()?;
    let extra = &args.cargo_args;
    let mut c = cmd!(
        sh,
        "cargo test --workspace --locked --no-fail-fast -- {extra...}"
    );
    if ci {
        c = c.env("CI", "true");
    }
    c.run()?;
    eprintln!("tiers before the system tier: {:.0?}", started.elapsed());
    if args.no_system {
        return Ok(());
    }
    if !host::nix_is_root() {
        if ci {
            bail!("the system tier needs root (QEMU, namespaces, mmdebstrap); CI runs as root");
        }
        eprintln!("skipped: the system tier needs root (QEMU pair); `--no-system` silences this");
        return Ok(());
    }
    let t = Instant::now();
    section("system tier (QEMU)");
    crate::system::run(sh)?;
    eprintln!("system tier: {:.0?}", t.elapsed());
    let runs = args.power_cut_runs.unwrap_or(DEFAULT_TIER_POWER_CUT_RUNS);
    if runs > 0 {
        let t = Instant::now();
        section("power-cut test (QEMU)");
        // On the images the system tier has just built.
        crate::system::power_cut(sh, runs, false)?;
        eprintln!("power-cut test: {:.0?}", t.elapsed());
    }
    eprintln!("all tiers: {:.0?}", started.elapsed());
    Ok(())
}
