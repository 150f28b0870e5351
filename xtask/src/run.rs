//! `cargo xtask run`: the product on this machine, on loopback.
//!
//! Owns: building the `tandem` binary and starting the local stack for a config.
//! The data plane and failover daemons are not part of the tree yet; until they
//! land this validates the configuration and prints its summary.

use anyhow::Result;
use xshell::{Shell, cmd};

use crate::section;

#[derive(clap::Args)]
pub struct Args {
    /// The configuration to run.
    #[arg(long, default_value = "examples/lab.yaml")]
    pub config: String,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    section("building tandem");
    cmd!(sh, "cargo build --release -p tandem").run()?;
    let config = args.config;
    section(&format!("tandem check {config}"));
    cmd!(sh, "target/release/tandem check {config}").run()?;
    eprintln!(
        "\nThe configuration is valid. The proxy (`tandem proxy`) is not built yet: \
         see `issues` #3; this command will start it once it lands."
    );
    Ok(())
}
