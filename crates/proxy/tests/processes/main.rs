//! Tests that need processes of their own: a client running as another user, a proxy in a
//! child process with its own file-descriptor limits and memory, thousands of connections.
//!
//! Owns: one test binary without libtest (`harness = false`): `main` either runs one of
//! the child roles below (the binary re-executes itself for them) or runs the tests, one
//! at a time, each on its own tokio runtime, with libtest's name filters (`cargo test -p
//! tandem-proxy --test processes api`), `--exact` and `--list`.
//! Child roles: `--child-proxy CONFIG` (the proxy, `tandem_proxy::run`, until SIGTERM),
//! `--child-api-client UID GID SOCKET LINE...` (drops to UID/GID with no supplementary
//! groups, sends each line to the runtime API, prints each answer line), and
//! `--child-netns-test NAME` (a test body in a network namespace of its own: see
//! [`in_netns`]).
//! Touches loopback and temporary directories only; every wait is bounded; every child
//! process is killed when its test ends, whatever the outcome.

mod api;
mod child;
mod fds;
mod memory;
mod server;

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
    (
        "fds::five_thousand_keep_alive_clients_under_a_1024_soft_limit",
        fds::five_thousand_keep_alive_clients_under_a_1024_soft_limit,
    ),
    (
        "memory::a_1_mib_response_head_is_a_502_and_not_kept",
        memory::a_1_mib_response_head_is_a_502_and_not_kept,
    ),
    (
        "memory::ten_thousand_slow_readers_keep_memory_bounded_and_others_are_served",
        memory::ten_thousand_slow_readers_keep_memory_bounded_and_others_are_served,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--child-proxy") => child::proxy(&args[1..]),
        Some("--child-api-client") => child::api_client(&args[1..]),
        Some("--child-netns-test") => child::netns_test(&args[1..]),
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

/// A proxy in a child process (`--child-proxy`), killed when dropped.
pub struct ProxyChild {
    child: std::process::Child,
    /// Its process id.
    pub pid: u32,
    /// Where its log goes.
    pub log: std::path::PathBuf,
}

impl ProxyChild {
    /// Starts the proxy on `config` under `sh`, after running `limits` there (e.g.
    /// `ulimit -Sn 1024`), logging to `dir/proxy.log`.
    pub fn start(dir: &std::path::Path, config: &std::path::Path, limits: &str) -> ProxyChild {
        let log = dir.join("proxy.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{limits} && exec \"$0\" --child-proxy \"$1\""))
            .arg(std::env::current_exe().expect("test binary"))
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start the proxy");
        let pid = child.id();
        ProxyChild { child, pid, log }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A line of `/proc/PID/status` (e.g. `VmRSS`), its first number.
    pub fn status_kib(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Its open file descriptors now.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |d| d.count())
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it with SIGTERM (graceful), SIGKILL after a few seconds.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while self.running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProxyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process's open file limit raised to its hard limit; the hard limit.
pub fn raise_own_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

/// Whether this runs in CI (`CI=true`), where a test must not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Writes a one-frontend, one-server config in `dir`; `extra_backend` goes under the
/// backend, `extra_frontend` under the frontend (YAML, indented 4 spaces).
pub fn write_config(
    dir: &std::path::Path,
    bind: std::net::SocketAddr,
    server: std::net::SocketAddr,
    extra_frontend: &str,
    extra_backend: &str,
) -> std::path::PathBuf {
    let path = dir.join("tandem.yaml");
    let text = format!(
        "version: 1\nruntime: {{ socket: {}/proxy.sock }}\nfrontends:\n  - name: web\n    bind: [\"{bind}\"]\n    default_backend: app\n{extra_frontend}backends:\n  - name: app\n{extra_backend}    servers:\n      - {{ name: s1, address: \"{server}\" }}\n",
        dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Waits (at most 20 s) until the proxy on `addr` answers a request with 200.
pub async fn wait_serving(addr: std::net::SocketAddr, child: &mut ProxyChild) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(child.running(), "the proxy exited:\n{}", child.log_text());
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), s.read_to_end(&mut out))
                    .await;
            if out.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy never served:\n{}",
            child.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs the test body `name` (see `child::netns_test`) in a child process with a network
/// namespace of its own, whose loopback has TCP buffers of at most 16 KiB per socket (the
/// host's are autotuned to megabytes: on them the kernel, not the proxy, would hold what a
/// slow client does not read). Needs root (`unshare`): skipped with a notice outside CI,
/// failing in CI. The namespace goes away with the process.
pub fn in_netns(name: &str) {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            !in_ci(),
            "{name} needs root (a network namespace) and CI runs as root"
        );
        eprintln!("skipped: {name} needs root (a network namespace)");
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .arg("--child-netns-test")
        .arg(name)
        .spawn()
        .expect("start the test body");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not finish in 600 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{name} failed in its namespace: {status}");
}
