//! `cargo xtask`: the project's build tooling (CI checks, test tiers, image, QEMU pair).
//!
//! Owns: orchestration of cargo and system tools. Must not contain product logic.

fn main() -> anyhow::Result<()> {
    Ok(())
}
