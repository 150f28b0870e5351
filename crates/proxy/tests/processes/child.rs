//! The child roles of the `processes` test binary (see `main`): run in a process of their
//! own, started by a test, and print what the test reads.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

/// `--child-proxy CONFIG`: the proxy on CONFIG until SIGTERM or SIGINT.
pub fn proxy(args: &[String]) -> ExitCode {
    let Some(config) = args.first() else {
        eprintln!("usage: --child-proxy CONFIG");
        return ExitCode::from(2);
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let source = tandem_proxy::ConfigFile {
        path: config.into(),
        node: None,
    };
    let res = runtime.block_on(tandem_proxy::run(source, async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("sigterm");
        let mut int = signal(SignalKind::interrupt()).expect("sigint");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("child proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--child-api-client UID GID SOCKET LINE...`: becomes UID/GID (no supplementary
/// groups), sends each LINE to the runtime API on SOCKET and prints each answer line;
/// `connect failed: ...` when it cannot connect.
pub fn api_client(args: &[String]) -> ExitCode {
    let [uid, gid, socket, lines @ ..] = args else {
        eprintln!("usage: --child-api-client UID GID SOCKET LINE...");
        return ExitCode::from(2);
    };
    let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
        eprintln!("uid and gid must be numbers");
        return ExitCode::from(2);
    };
    // Single-threaded here: dropping privileges for the whole process is sound.
    nix::unistd::setgroups(&[]).expect("setgroups");
    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)).expect("setgid");
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).expect("setuid");
    let stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            println!("connect failed: {e}");
            return ExitCode::SUCCESS;
        }
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    for line in lines {
        // A refused client is answered (and closed) before its line is read: a failed
        // write still leaves that answer to read.
        let _ = writer.write_all(format!("{line}\n").as_bytes());
        let mut answer = String::new();
        match reader.read_line(&mut answer) {
            Ok(0) | Err(_) => {
                println!("closed");
                break;
            }
            Ok(_) => print!("{answer}"),
        }
    }
    ExitCode::SUCCESS
}

/// A test body run by `--child-netns-test NAME`.
type Body = (&'static str, fn());

/// Test bodies run by `--child-netns-test NAME`.
const NETNS_TESTS: &[Body] = &[("slow_readers", crate::memory::slow_readers_in_small_buffers)];

/// `--child-netns-test NAME`: this process (still single-threaded) moves to a new network
/// namespace, brings its loopback up with TCP buffers of at most 16 KiB, and runs the body.
pub fn netns_test(args: &[String]) -> ExitCode {
    let Some(body) = args
        .first()
        .and_then(|n| NETNS_TESTS.iter().find(|(name, _)| name == n))
    else {
        eprintln!("usage: --child-netns-test NAME, NAME one of slow_readers");
        return ExitCode::from(2);
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare the network namespace");
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip");
    assert!(up.success(), "ip link set lo up");
    for key in ["tcp_wmem", "tcp_rmem"] {
        std::fs::write(format!("/proc/sys/net/ipv4/{key}"), "4096 16384 16384")
            .unwrap_or_else(|e| panic!("set {key} in the namespace: {e}"));
    }
    match std::panic::catch_unwind(body.1) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
