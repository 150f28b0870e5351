//! The runtime API by the peer's credentials: clients run as other users in a child process
//! (the test binary, dropping to that user before it connects).

use std::path::Path;

use tandem_proxy::Proxy;
use tandem_proxy::api::Access;
use tandem_proxy::plan::{Backend, Frontend, Mode, Plan, Server};

/// Group ids the tests give the admin and monitor roles (no such groups need to exist).
const ADMIN_GID: u32 = 4242;
const MONITOR_GID: u32 = 4343;
/// `nobody`.
const OTHER_UID: u32 = 65534;

/// A proxy with one frontend and server, its runtime API on `socket` with the test groups.
async fn proxy_with_api(socket: &Path) -> (Proxy, tokio::task::JoinHandle<()>) {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let plan = Plan::new(
        vec![Frontend::new("web", Mode::Http, free, "app")],
        vec![Backend::new(
            "app",
            Mode::Http,
            vec![Server::new("a", "127.0.0.1:9".parse().expect("addr"))],
        )],
    )
    .expect("plan");
    let proxy = Proxy::start(plan).await.expect("proxy");
    let access = Access {
        admin_gid: Some(ADMIN_GID),
        monitor_gid: Some(MONITOR_GID),
        owner_uid: 0,
    };
    let bound = tandem_proxy::api::bind(socket).expect("bind");
    let task = tandem_proxy::api::serve(proxy.clone(), bound, None, access);
    (proxy, task)
}

/// Runs the client role as `uid`/`gid`; its answer lines.
fn client_as(uid: u32, gid: u32, socket: &Path, lines: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .arg("--child-api-client")
        .arg(uid.to_string())
        .arg(gid.to_string())
        .arg(socket)
        .args(lines)
        .output()
        .expect("run the client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|_| panic!("not an answer: {l:?} (all: {text:?})"))
        })
        .collect()
}

/// Whether this process may run clients as other users (root); outside CI it skips the test
/// with a notice, in CI it fails.
fn can_switch_users(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !crate::in_ci(),
        "{test} runs clients as other users: CI runs it as root"
    );
    eprintln!("skipped: {test} needs root (clients as other users)");
    false
}

fn error_of(v: &serde_json::Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

pub fn a_client_of_another_user_is_refused() {
    if !can_switch_users("api::a_client_of_another_user_is_refused") {
        return;
    }
    let dir = crate::scratch("api-uid");
    let socket = dir.join("proxy.sock");
    crate::block_on(async {
        let (proxy, task) = proxy_with_api(&socket).await;
        let sock = socket.clone();
        let answers = tokio::task::spawn_blocking(move || {
            client_as(
                OTHER_UID,
                OTHER_UID,
                &sock,
                &[r#"{"cmd":"show frontends"}"#],
            )
        })
        .await
        .expect("client");
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0]["ok"], false);
        assert_eq!(
            error_of(&answers[0]),
            "permission denied: uid 65534 is not root and not in group tandem-admin or tandem-monitor"
        );
        // Root (the test's own user) is served on the same socket.
        let sock = socket.clone();
        let answers = tokio::task::spawn_blocking(move || {
            client_as(0, 0, &sock, &[r#"{"cmd":"show frontends"}"#])
        })
        .await
        .expect("client");
        assert_eq!(answers[0]["ok"], true, "{answers:?}");
        task.abort();
        proxy.shutdown(std::time::Duration::from_millis(10)).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

pub fn the_monitor_group_may_only_read_and_the_admin_group_may_change() {
    if !can_switch_users("api::the_monitor_group_may_only_read_and_the_admin_group_may_change") {
        return;
    }
    let dir = crate::scratch("api-groups");
    let socket = dir.join("proxy.sock");
    crate::block_on(async {
        let (proxy, task) = proxy_with_api(&socket).await;
        let set = r#"{"cmd":"set server","server":"app/a","weight":5}"#;
        let show = r#"{"cmd":"show servers"}"#;
        let sock = socket.clone();
        let monitor = tokio::task::spawn_blocking(move || {
            client_as(OTHER_UID, MONITOR_GID, &sock, &[show, set, show])
        })
        .await
        .expect("client");
        assert_eq!(monitor.len(), 3, "{monitor:?}");
        assert_eq!(monitor[0]["servers"][0]["weight"], 1, "{monitor:?}");
        assert_eq!(
            error_of(&monitor[1]),
            "permission denied: \"set server\" needs root or group tandem-admin; group tandem-monitor may only run show commands"
        );
        assert_eq!(
            monitor[2]["servers"][0]["weight"], 1,
            "nothing changed: {monitor:?}"
        );
        let sock = socket.clone();
        let admin =
            tokio::task::spawn_blocking(move || client_as(OTHER_UID, ADMIN_GID, &sock, &[set]))
                .await
                .expect("client");
        assert_eq!(admin[0]["ok"], true, "{admin:?}");
        assert_eq!(admin[0]["server"]["weight"], 5, "{admin:?}");
        task.abort();
        proxy.shutdown(std::time::Duration::from_millis(10)).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
