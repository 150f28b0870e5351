//! Tests that need processes of their own: a client running as another user, a proxy in a
//! child process with its own file-descriptor limits and memory, thousands of connections.
//!
//! Owns: one test binary without libtest (`harness = false`): `main` either runs one of
//! the child roles below (the binary re-executes itself for them) or runs the tests, one
//! at a time, each on its own tokio runtime, with libtest's name filters (`cargo test -p
//! tandem-proxy --test processes api`), `--exact` and `--list`.
//! Child roles: `--child-proxy CONFIG` (the proxy, `tandem_proxy::run`, until SIGTERM) and
//! `--child-api-client UID GID SOCKET LINE...` (drops to UID/GID with no supplementary
//! groups, sends each line to the runtime API, prints each answer line).
//! Touches loopback and temporary directories only; every wait is bounded; every child
//! process is killed when its test ends, whatever the outcome.

mod api;
mod child;

use std::process::ExitCode;

/// A test: its name (module::function) and body.
type Test = (&'static str, fn());

const TESTS: &[Test] = &[
    (
        "api::a_client_of_another_user_is_refused",
        api::a_client_of_another_user_is_refused,
    ),
    (
        "api::the_monitor_group_may_only_read_and_the_admin_group_may_change",
        api::the_monitor_group_may_only_read_and_the_admin_group_may_change,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--child-proxy") => child::proxy(&args[1..]),
        Some("--child-api-client") => child::api_client(&args[1..]),
        _ => run_tests(&args),
    }
}

/// libtest's command line, enough of it for `cargo test` and its filters.
fn run_tests(args: &[String]) -> ExitCode {
    let exact = args.iter().any(|a| a == "--exact");
    let list = args.iter().any(|a| a == "--list");
    let ignored_only = args.iter().any(|a| a == "--ignored");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| if exact { name == f } else { name.contains(f) })
        })
        .filter(|_| !ignored_only)
        .collect();
    if list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let outcome = std::panic::catch_unwind(test);
        println!(
            "test {name} ... {}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len(),
        TESTS.len() - selected.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failures:\n    {}", failed.join("\n    "));
        ExitCode::from(101)
    }
}

/// Runs `f` on a fresh multi-threaded runtime (what `#[tokio::test]` would do).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A scratch directory that is a Tandem run directory (`tandem-*`), world-traversable.
pub fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-proc-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    dir
}
