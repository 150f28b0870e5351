//! The shared harness of the end-to-end tests (`tests/tests/*.rs`): where the `tandem`
//! binary under test is ([`tandem_bin`]), where the workspace is ([`workspace_root`]), and the
//! pair test bed of the `pair_*` namespace tests ([`pair`]), and the loopback demo web server
//! and free ports of the single-node stack tests ([`demo_server`], [`free_port`]).
//!
//! Owns only test scaffolding; must not be a dependency of any product crate. The tests
//! start the real binary as child processes, so they live in their own package (the design's
//! top-level `tests/`) and cannot use `CARGO_BIN_EXE_tandem`, which only exists inside the
//! `tandem` package: [`tandem_bin`] builds and finds it instead.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

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

/// A demo server on 127.0.0.1 as `cargo xtask run` has: every request of a keep-alive
/// connection gets 200 `hello from NAME`. Returns its port; it lives as long as the test
/// process.
pub fn demo_server(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let at = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                    seen.drain(..at + 4);
                    let body = format!("hello from {name}\n");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
