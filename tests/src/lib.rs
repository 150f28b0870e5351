//! The shared harness of the end-to-end tests (`tests/tests/*.rs`): where the `tandem`
//! binary under test is ([`tandem_bin`]), where the workspace is ([`workspace_root`]), and the
//! pair test bed of the `pair_*` namespace tests ([`pair`]).
//!
//! Owns only test scaffolding; must not be a dependency of any product crate. The tests
//! start the real binary as child processes, so they live in their own package (the design's
//! top-level `tests/`) and cannot use `CARGO_BIN_EXE_tandem`, which only exists inside the
//! `tandem` package: [`tandem_bin`] builds and finds it instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod pair;

/// The environment variable naming a prebuilt `tandem` binary to test instead of building one.
pub const TANDEM_BIN_ENV: &str = "TANDEM_BIN";

/// The workspace's root directory (where `examples/` and the root `Cargo.toml` are).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `tandem` binary under test, built once per test process.
///
/// [`TANDEM_BIN_ENV`] set: that file. Otherwise `cargo build -p tandem --bin tandem` runs
/// (a no-op when it is up to date) with the profile and target directory of this test
/// executable (`<target>/<profile>/deps/<test>-<hash>`), so the binary is the current
/// source's, as `CARGO_BIN_EXE_tandem` was, and sits at `<target>/<profile>/tandem`.
pub fn tandem_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os(TANDEM_BIN_ENV) {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable is in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("<target>/<profile>");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("no profile directory in {}", exe.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(&cargo)
            .args(["build", "--quiet", "-p", "tandem", "--bin", "tandem"])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(workspace_root())
            .status()
            .unwrap_or_else(|e| panic!("running {}: {e}", Path::new(&cargo).display()));
        assert!(
            status.success(),
            "cargo build -p tandem --profile {profile} failed: {status}"
        );
        let bin = profile_dir.join("tandem");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}
