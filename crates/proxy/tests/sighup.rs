//! `run` end to end with a real config file: serve, reload on SIGHUP, refuse an invalid
//! file on SIGHUP (old plan keeps serving), stop on the shutdown future.
//!
//! Own test binary: it sends SIGHUP to its own process, which must not reach other tests.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

async fn named_server(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(name.to_owned()))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(bind: SocketAddr, server: SocketAddr, dir: &std::path::Path) -> String {
    format!(
        "version: 1\nfrontends:\n  - name: web\n    bind: [\"{bind}\"]\n    default_backend: app\n\
         backends:\n  - name: app\n    servers:\n      - {{ name: s1, address: {server} }}\n\
         runtime: {{ socket: {}/proxy.sock }}\n",
        dir.display()
    )
}

/// Body of a `GET /` on a fresh connection, or `None` if nothing answers.
async fn body(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_owned)
}

async fn wait_for_body(addr: SocketAddr, want: &str) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if body(addr).await.as_deref() == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got {want:?} from {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sighup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn run_serves_reloads_on_sighup_and_refuses_invalid_files() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    let (one, two) = (named_server("one").await, named_server("two").await);
    let bind = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dir = std::env::temp_dir().join(format!("tandem-proxy-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tandem.yaml");
    std::fs::write(&path, config(bind, one, &dir)).expect("write config");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let source = tandem_proxy::ConfigFile {
        path: path.clone(),
        node: None,
    };
    let running = tokio::spawn(tandem_proxy::run(source, async move {
        let _ = stop_rx.await;
    }));
    wait_for_body(bind, "one").await;

    // A valid new file: SIGHUP switches to it.
    std::fs::write(&path, config(bind, two, &dir)).expect("write config");
    sighup();
    wait_for_body(bind, "two").await;

    // An invalid file: SIGHUP is refused, the running plan keeps serving.
    std::fs::write(&path, "version: 1\nfrontends: [ { name: web } ]\n").expect("write config");
    sighup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(body(bind).await.as_deref(), Some("two"));

    let _ = stop_tx.send(());
    tokio::time::timeout(LIMIT, running)
        .await
        .expect("run stops in time")
        .expect("task")
        .expect("run ok");
    assert!(body(bind).await.is_none(), "listener closed after shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
