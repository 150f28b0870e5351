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

/// Sans-IO modules inside crates that do IO elsewhere (so [`PURE_CRATES`]' per-crate
/// `cargo tree` check cannot see them): files, or directories (every `.rs` file below), that
/// must not read the clock nor name an async runtime or a socket library. Time is an input
/// there (`now` arguments). See docs/ARCHITECTURE.md, "Invariants".
const PURE_MODULES: &[&str] = &["crates/sync/src/core.rs", "crates/sync/src/core"];

/// What a [`PURE_MODULES`] file must not contain (outside `//` comments).
const FORBIDDEN_IN_PURE_MODULES: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "tokio",
    "socket2",
    "hyper",
    "std::net",
    "std::fs",
];

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
    section("no clock and no IO in the pure modules");
    let bad = pure_module_violations();
    if !bad.is_empty() {
        bail!(
            "pure modules must not read the clock or do IO:\n{}",
            bad.join("\n")
        );
    }
    eprintln!(
        "ok: {} pure modules free of {FORBIDDEN_IN_PURE_MODULES:?}",
        PURE_MODULES.len()
    );
    Ok(())
}

/// `file:line: token` for every forbidden token in a [`PURE_MODULES`] file.
fn pure_module_violations() -> Vec<String> {
    fn files(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        if p.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                files(&e.path(), out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p.to_owned());
        }
    }
    let root = crate::project_root();
    let mut found = Vec::new();
    for m in PURE_MODULES {
        let mut list = Vec::new();
        files(&root.join(m), &mut list);
        for f in list {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for token in FORBIDDEN_IN_PURE_MODULES {
                    if code.contains(token) {
                        let rel = f.strip_prefix(&root).unwrap_or(&f);
                        found.push(format!("{}:{}: {token}", rel.display(), n + 1));
                    }
                }
            }
        }
    }
    found
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The sans-IO modules of IO crates do not read the clock nor do IO
    /// ([`PURE_MODULES`]); `cargo xtask lint` runs the same check.
    #[test]
    fn pure_modules_do_not_read_the_clock_or_do_io() {
        assert!(
            crate::project_root().join(PURE_MODULES[0]).is_file(),
            "{} moved: update PURE_MODULES",
            PURE_MODULES[0]
        );
        let bad = pure_module_violations();
        assert!(bad.is_empty(), "clock or IO in a pure module: {bad:#?}");
    }
}
