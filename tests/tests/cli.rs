//! End-to-end tests of the built `tandem` binary: `check` exit codes and output, `schema`.
//!
//! They run the real executable on the shipped examples and on files written to a temp dir.

use std::path::PathBuf;
use std::process::{Command, Output};

fn tandem(args: &[&str]) -> Output {
    Command::new(tandem_e2e::tandem_bin())
        .args(args)
        .output()
        .expect("run tandem")
}

fn example(name: &str) -> String {
    tandem_e2e::workspace_root()
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh directory for one test's files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_accepts_the_pair_example_and_summarises_it() {
    let out = tandem(&["check", &example("pair.yaml")]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "cluster shop: lb1 (198.18.0.11, priority 150), lb2 (198.18.0.12, priority 100)"
        ),
        "{text}"
    );
    assert!(
        text.contains("configuration is valid (0 warnings)"),
        "the example must not teach anything `check` warns about: {text}"
    );
    assert!(
        text.contains("vrrp www: lan vrid 51, VIPs 198.18.0.100/24"),
        "{text}"
    );
    assert!(
        text.contains("frontend www (http, tls): 198.18.0.100:80, 198.18.0.100:443"),
        "{text}"
    );
    assert!(
        text.contains("backend shop (http, roundrobin, cookie SRV): 3 servers"),
        "{text}"
    );
    assert!(
        text.contains("server dr1 198.18.2.21:8080 (weight 1, backup)"),
        "{text}"
    );
    assert!(
        text.contains("configuration is valid (0 warnings)"),
        "{text}"
    );
}

#[test]
fn check_accepts_the_lab_example() {
    let out = tandem(&["check", &example("lab.yaml")]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("single node (no cluster)"), "{text}");
    assert!(
        text.contains("frontend web (http): 127.0.0.1:8080 -> app (default)"),
        "{text}"
    );
}

#[test]
fn check_rejects_an_invalid_file_with_every_diagnostic_and_exit_1() {
    let dir = temp_dir("invalid");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "version: 1\nfrontends:\n  - name: web\n    bind: [\"127.0.0.1:80\"]\n    default_backend: shop\n    max_conections: 5\nbackends:\n  - name: shop\n    servers:\n      - { name: a, address: 127.0.0.1:81, weight: 300 }\n",
    )
    .unwrap();
    let out = tandem(&["check", file.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let origin = file.display();
    assert!(
        text.contains(&format!("{origin}:6:5: error: frontends[0].max_conections: unknown key `max_conections`, did you mean `max_connections`?")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{origin}:10:51: error: backends[0].servers[0].weight: expected an integer from 0 to 256, found 300")),
        "{text}"
    );
    assert!(text.contains("2 errors, 0 warnings"), "{text}");
}

#[test]
fn check_prints_warnings_of_a_valid_file_and_exits_0() {
    let dir = temp_dir("warnings");
    let file = dir.join("first.yaml");
    std::fs::write(
        &file,
        "version: 1\nfrontends:\n  - { name: web, bind: [\"127.0.0.1:80\"], default_backend: b }\nbackends:\n  - name: b\n    balance: first\n    servers:\n      - { name: a, address: 127.0.0.1:81 }\n",
    )
    .unwrap();
    let out = tandem(&["check", file.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(":8:9: warning: backends[0].servers[0]: balance `first`"),
        "{text}"
    );
    assert!(
        text.contains("configuration is valid (1 warning)"),
        "{text}"
    );
}

#[test]
fn check_reports_a_missing_certificate_relative_to_the_config_directory() {
    let dir = temp_dir("certs");
    let file = dir.join("tls.yaml");
    let config = "version: 1\nfrontends:\n  - name: web\n    bind: [\"127.0.0.1:443\"]\n    tls: { certificates: [site.pem] }\n    default_backend: b\nbackends:\n  - { name: b, servers: [{ name: a, address: 127.0.0.1:81 }] }\n";
    std::fs::write(&file, config).unwrap();
    let out = tandem(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains(":5:27: error: frontends[0].tls.certificates[0]: cannot use certificate file `site.pem`: file not found"), "{}", stdout(&out));
    std::fs::write(dir.join("site.pem"), "test").unwrap();
    let out = tandem(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn check_of_a_missing_file_says_so_and_exits_1() {
    let out = tandem(&["check", "/nonexistent/tandem.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .contains("/nonexistent/tandem.yaml: error: cannot read the configuration file"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn schema_prints_a_json_schema_with_the_top_level_sections() {
    let out = tandem(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    let props = schema["properties"]
        .as_object()
        .expect("top-level properties");
    for key in [
        "version",
        "cluster",
        "interfaces",
        "vrrp",
        "frontends",
        "backends",
        "metrics",
        "sync",
        "runtime",
    ] {
        assert!(props.contains_key(key), "schema lacks `{key}`");
    }
}

/// Under the supervisor, a daemon's stderr is a pipe that breaks when the supervisor dies.
/// Logging into the broken pipe must not take the daemon down: here the proxy keeps
/// answering (and logging) after the reader of its stderr is gone.
#[test]
fn a_daemon_keeps_working_when_its_stderr_pipe_breaks() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    let dir = temp_dir("broken-stderr");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The backend's port is closed: every request fails with 503 and logs a warning.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nfrontends:\n  - name: web\n    bind: [\"127.0.0.1:{port}\"]\n    default_backend: app\nbackends:\n  - name: app\n    retries: 0\n    servers:\n      - {{ name: s1, address: \"127.0.0.1:{dead}\" }}\n"
        ),
    )
    .unwrap();
    /// Kills the proxy however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        Command::new(tandem_e2e::tandem_bin())
            .args(["proxy", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the proxy"),
    );
    let ask = || -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(r) = ask() {
            break r;
        }
        assert!(Instant::now() < deadline, "the proxy never listened");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(first.starts_with("HTTP/1.1 5"), "{first:?}");
    // The supervisor dies: the read end of the pipe closes.
    drop(child.0.stderr.take());
    for i in 0..3 {
        let r = ask().unwrap_or_default();
        assert!(
            r.starts_with("HTTP/1.1 5"),
            "request {i} after stderr broke: {r:?}"
        );
    }
    assert!(
        child.0.try_wait().expect("child status").is_none(),
        "the proxy is still running"
    );
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
