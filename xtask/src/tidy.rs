//! Tidy checks run by `cargo test`: conventions every file must follow.
//!
//! Owns: repository-wide textual rules (module docs, no `dbg!`, unit descriptions).
//! Must not check behaviour; that is what the crates' tests are for.

use std::path::{Path, PathBuf};

use crate::project_root;

fn files_with_ext(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let p = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if name == "target" || name.starts_with('.') {
                continue;
            }
            files_with_ext(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

fn rust_files() -> Vec<PathBuf> {
    let root = project_root();
    let mut out = Vec::new();
    for dir in ["crates", "xtask", "tests", "fuzz"] {
        files_with_ext(&root.join(dir), "rs", &mut out);
    }
    assert!(
        !out.is_empty(),
        "tidy found no Rust files under {}",
        root.display()
    );
    out
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let offenders: Vec<_> = rust_files()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "these files must start with a `//!` module doc saying what they own: {offenders:#?}"
    );
}

#[test]
fn no_stray_dbg_macros() {
    let needle = concat!("dbg", "!(");
    let offenders: Vec<_> = rust_files()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains(needle)
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "remove debugging macros from: {offenders:#?}"
    );
}

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let mut offenders = Vec::new();
    for p in rust_files() {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // The patterns are split so this file does not match itself.
            let kw = concat!("un", "safe");
            let flagged = [" {", " fn", " impl"]
                .iter()
                .any(|tail| code.contains(&format!("{kw}{tail}")));
            if flagged {
                let window = &lines[i.saturating_sub(4)..i];
                if !window.iter().any(|l| l.contains("SAFETY:")) && !line.contains("SAFETY:") {
                    offenders.push(format!("{}:{}", p.display(), i + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "unsafe without a `// SAFETY:` comment: {offenders:#?}"
    );
}

#[test]
fn every_systemd_unit_has_a_description() {
    let mut units = Vec::new();
    files_with_ext(&project_root().join("systemd"), "service", &mut units);
    let offenders: Vec<_> = units
        .into_iter()
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains("Description=")
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "units without Description=: {offenders:#?}"
    );
}

#[test]
fn every_crate_inherits_workspace_lints() {
    let mut manifests = Vec::new();
    let root = project_root();
    for dir in ["crates", "tests"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let m = e.path().join("Cargo.toml");
            if m.exists() {
                manifests.push(m);
            }
        }
    }
    // The end-to-end tests' package is `tests/` itself.
    manifests.push(root.join("tests/Cargo.toml"));
    manifests.push(root.join("xtask/Cargo.toml"));
    let offenders: Vec<_> = manifests
        .into_iter()
        .filter(|m| {
            let t = std::fs::read_to_string(m).unwrap_or_default();
            !t.contains("[lints]") || !t.contains("workspace = true")
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "add `[lints] workspace = true` to: {offenders:#?}"
    );
}

#[test]
fn host_packages_list_is_not_empty() {
    let pkgs = crate::host::wanted().expect("xtask/host-packages.txt is readable");
    assert!(
        pkgs.iter().any(|p| p == "iproute2"),
        "the test bed needs iproute2: {pkgs:?}"
    );
}
