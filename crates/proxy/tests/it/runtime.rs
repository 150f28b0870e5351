//! Operating the proxy: the runtime API on its Unix socket, `/metrics`, `protect` (429 per
//! source), and idle keep-alive connections being closed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use tandem_proxy::plan::{Mode, Plan, Protect, Rate};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use crate::common::*;

/// One request line over the socket, one response line back.
async fn call(sock: &mut BufReader<UnixStream>, line: &str) -> Value {
    sock.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(LIMIT, sock.read_line(&mut out))
        .await
        .expect("in time")
        .expect("read");
    serde_json::from_str(&out).expect("one json object per line")
}

#[tokio::test]
async fn runtime_api_over_the_socket_shows_and_changes_servers() {
    let (a, b) = (http_server("a").await, http_server("b").await);
    let (proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![server(&a, 1), server(&b, 1)]),
    ))
    .await;
    let dir = std::env::temp_dir().join(format!("tandem-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("proxy.sock");
    let task = tandem_proxy::api::spawn(proxy.clone(), &path, None).expect("api socket");
    let mut sock = BufReader::new(UnixStream::connect(&path).await.expect("connect"));

    let c = client();
    for _ in 0..10 {
        assert_eq!(get_with(&c, addr, "/", &[]).await.0, StatusCode::OK);
    }
    let r = call(&mut sock, r#"{"cmd":"show servers"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    let servers = r["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["name"], "a");
    assert_eq!(servers[0]["state"], "ready");
    assert_eq!(servers[0]["health"], "up");
    assert_eq!(servers[0]["weight"], 1);
    assert_eq!(servers[0]["effective_weight"], 1);
    let total: u64 = servers
        .iter()
        .map(|s| s["sessions_total"].as_u64().expect("n"))
        .sum();
    assert_eq!(total, 10);
    assert_eq!(servers[0]["responses"]["2xx"], 5);

    let r = call(&mut sock, r#"{"cmd":"show backends"}"#).await;
    assert_eq!(r["backends"][0]["name"], "app", "{r}");
    assert_eq!(r["backends"][0]["queue"], 0);
    let r = call(&mut sock, r#"{"cmd":"show frontends"}"#).await;
    assert_eq!(r["frontends"][0]["responses"]["2xx"], 10, "{r}");

    // Drain via the API: new clients avoid the server.
    let r = call(
        &mut sock,
        r#"{"cmd":"set server","server":"app/a","state":"drain"}"#,
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    let before = hits(&a);
    for _ in 0..20 {
        assert_eq!(served_by(&get_with(&c, addr, "/", &[]).await.2), "b");
    }
    assert_eq!(hits(&a), before);
    let r = call(
        &mut sock,
        r#"{"cmd":"set server","server":"app/a","state":"ready"}"#,
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");

    // Weight via the API changes the distribution.
    let r = call(
        &mut sock,
        r#"{"cmd":"set server","server":"app/a","weight":3}"#,
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["server"]["weight"], 3);
    // At once, on the same keep-alive connection.
    let before = hits(&a);
    for _ in 0..40 {
        get_with(&c, addr, "/", &[]).await;
    }
    assert_eq!(hits(&a) - before, 30, "weight 3:1 gives a 30 of 40");

    // Errors name what was wrong.
    for (line, want) in [
        (
            r#"{"cmd":"set server","server":"app/web9","state":"drain"}"#,
            "no server web9 in backend app",
        ),
        (
            r#"{"cmd":"set server","server":"shop/a","state":"drain"}"#,
            "no backend shop",
        ),
        (
            r#"{"cmd":"set server","server":"app/a","state":"sleepy"}"#,
            "invalid state \"sleepy\": expected ready, drain or maint",
        ),
        (
            r#"{"cmd":"set server","server":"app/a","weight":300}"#,
            "invalid weight 300: must be 0..=256",
        ),
        (
            r#"{"cmd":"show persistence","backend":"app"}"#,
            "backend app has no persistence",
        ),
        (
            r#"{"cmd":"reload"}"#,
            "reload is not available: the proxy has no configuration source",
        ),
    ] {
        let r = call(&mut sock, line).await;
        assert_eq!(r, serde_json::json!({"ok": false, "error": want}), "{line}");
    }
    let r = call(&mut sock, "not json").await;
    assert_eq!(r["ok"], false);
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid request")),
        "{r}"
    );
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn metrics_expose_counters_after_traffic() {
    let s = http_server("a").await;
    let (proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![server(&s, 1)]),
    ))
    .await;
    let (maddr, task) =
        tandem_proxy::metrics::spawn(proxy.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("metrics listener");
    let c = client();
    for _ in 0..7 {
        assert_eq!(get_with(&c, addr, "/", &[]).await.0, StatusCode::OK);
    }
    let (status, text, h) = get(&c, maddr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain"),
        "{h:?}"
    );
    for line in [
        "tandem_frontend_requests_total{frontend=\"web\",class=\"2xx\"} 7",
        "tandem_frontend_sessions_total{frontend=\"web\"} 1",
        "tandem_backend_sessions_total{backend=\"app\"} 7",
        "tandem_server_sessions_total{backend=\"app\",server=\"a\"} 7",
        "tandem_server_requests_total{backend=\"app\",server=\"a\",class=\"2xx\"} 7",
        "tandem_server_up{backend=\"app\",server=\"a\"} 1",
        "tandem_server_response_time_seconds_count{backend=\"app\",server=\"a\"} 7",
        "tandem_backend_queue_length{backend=\"app\"} 0",
        "# TYPE tandem_server_response_time_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.contains("tandem_server_bytes_out_total{backend=\"app\",server=\"a\"} 21"),
        "7 bodies of \"a:0\"\n{text}"
    );
    assert_eq!(get(&c, maddr, "/other").await.0, StatusCode::NOT_FOUND);
    task.abort();
}

#[tokio::test]
async fn a_source_over_its_request_rate_gets_429_while_others_are_served() {
    let s = http_server("a").await;
    let bind = free_addr();
    let mut fe = tandem_proxy::plan::Frontend::new("web", Mode::Http, bind, "app");
    fe.protect = Protect {
        request_rate: Some(Rate {
            count: 20,
            per: Duration::from_secs(10),
        }),
        ..Protect::default()
    };
    let plan = Plan::new(vec![fe], vec![backend(Mode::Http, vec![server(&s, 1)])]).expect("plan");
    let (proxy, addr) = start(plan).await;
    let noisy = IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1));
    let calm = IpAddr::V4(Ipv4Addr::new(127, 0, 3, 2));
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(get_from(noisy, addr, "/").await);
    }
    assert!(statuses[..20].iter().all(|(st, _)| *st == StatusCode::OK));
    for (st, body) in &statuses[20..] {
        assert_eq!(*st, StatusCode::TOO_MANY_REQUESTS);
        assert!(body.len() < 200 && body.contains("429"), "{body}");
    }
    for _ in 0..5 {
        assert_eq!(get_from(calm, addr, "/").await.0, StatusCode::OK);
    }
    assert_eq!(hits(&s), 25, "refused requests never reach a server");
    let r = tandem_proxy::api::execute(&proxy, None, br#"{"cmd":"show frontends"}"#).await;
    assert_eq!(r["frontends"][0]["denied"]["request_rate"], 10, "{r}");
    assert_eq!(r["frontends"][0]["responses"]["4xx"], 10, "{r}");
}

#[tokio::test]
async fn a_source_over_its_connection_limits_is_refused() {
    let s = http_server("a").await;
    let bind = free_addr();
    let mut fe = tandem_proxy::plan::Frontend::new("web", Mode::Http, bind, "app");
    fe.protect = Protect {
        connection_rate: Some(Rate {
            count: 3,
            per: Duration::from_secs(10),
        }),
        ..Protect::default()
    };
    let plan = Plan::new(vec![fe], vec![backend(Mode::Http, vec![server(&s, 1)])]).expect("plan");
    let (_proxy, addr) = start(plan).await;
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 4, 1));
    for _ in 0..3 {
        assert_eq!(get_from(ip, addr, "/").await.0, StatusCode::OK);
    }
    let (st, body) = get_from(ip, addr, "/").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 4, 2));
    assert_eq!(get_from(other, addr, "/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let s = http_server("a").await;
    let bind = free_addr();
    let mut fe = tandem_proxy::plan::Frontend::new("web", Mode::Http, bind, "app");
    fe.timeouts.header = Duration::from_millis(300);
    fe.timeouts.idle = Duration::from_millis(300);
    let plan = Plan::new(vec![fe], vec![backend(Mode::Http, vec![server(&s, 1)])]).expect("plan");
    let (_proxy, addr) = start(plan).await;
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = std::time::Instant::now();
    // The server side closes the idle connection: read sees EOF (or a reset).
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "idle connection still open after 5 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn oversized_or_too_many_headers_are_refused_before_any_server() {
    let s = http_server("a").await;
    let bind = free_addr();
    let mut fe = tandem_proxy::plan::Frontend::new("web", Mode::Http, bind, "app");
    fe.max_headers = 20;
    fe.max_header_bytes = 8192;
    let plan = Plan::new(vec![fe], vec![backend(Mode::Http, vec![server(&s, 1)])]).expect("plan");
    let (_proxy, addr) = start(plan).await;
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..30 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let resp = raw_exchange(addr, many.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let resp = raw_exchange(addr, big.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let ok = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(hits(&s), 1);

    // A limit below hyper's smallest buffer (8 KiB) is enforced too.
    let s = http_server("b").await;
    let bind = free_addr();
    let mut fe = tandem_proxy::plan::Frontend::new("web", Mode::Http, bind, "app");
    fe.max_header_bytes = 1024;
    let plan = Plan::new(vec![fe], vec![backend(Mode::Http, vec![server(&s, 1)])]).expect("plan");
    let (_proxy, addr) = start(plan).await;
    let medium = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let resp = raw_exchange(addr, medium.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let ok = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(hits(&s), 1, "the oversized request never reached a server");
}

#[tokio::test]
async fn a_server_silent_mid_body_is_cut_after_the_server_timeout() {
    // A server that sends a head and 5 of 100 body bytes, then nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let saddr = listener.local_addr().expect("addr");
    let stall = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
                .await;
            held.push(s);
        }
    });
    let mut be = backend(
        Mode::Http,
        vec![tandem_proxy::plan::Server::new("stall", saddr)],
    );
    be.timeouts.server = Duration::from_millis(300);
    let (_proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "client still waiting after 5 s");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("hello"),
        "the body is cut, not completed: {text}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "cut after {waited:?}"
    );
    stall.abort();
}

/// A `MakeWriter` collecting log output in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn access_log_has_one_haproxy_like_line_per_request() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_env_filter("tandem_proxy::access=info")
        .finish();
    // This test's runtime is single-threaded: every task logs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = http_server("a").await;
    let bind = free_addr();
    let mut fe = tandem_proxy::plan::Frontend::new("web", Mode::Http, bind, "app");
    fe.log_format = tandem_proxy::plan::LogFormat::Text;
    let plan = Plan::new(vec![fe], vec![backend(Mode::Http, vec![server(&s, 1)])]).expect("plan");
    let proxy = tandem_proxy::Proxy::start(plan).await.expect("proxy");
    let addr = proxy.local_addrs().await[&bind];
    let c = client();
    assert_eq!(get_with(&c, addr, "/x?y=1", &[]).await.0, StatusCode::OK);
    s.stats
        .healthy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = tandem_proxy::api::execute(
        &proxy,
        None,
        br#"{"cmd":"set server","server":"app/a","state":"maint"}"#,
    )
    .await;
    assert_eq!(r["ok"], true);
    assert_eq!(
        get_with(&c, addr, "/y", &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    wait_until("two access log lines", || {
        String::from_utf8_lossy(&logs.0.lock().expect("buffer"))
            .lines()
            .count()
            >= 2
    })
    .await;
    let text = String::from_utf8_lossy(&logs.0.lock().expect("buffer")).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains(" web app/a "), "{text}");
    assert!(lines[0].contains(" 200 3 -- \"GET /x?y=1\""), "{text}");
    assert!(lines[1].contains(" web app/<NOSRV> "), "{text}");
    assert!(lines[1].contains(" 503 0 SC \"GET /y\""), "{text}");
}

/// `run` with a config whose runtime API socket is `sock`, until `stop` fires.
fn run_with_socket(
    dir: &std::path::Path,
    bind: std::net::SocketAddr,
    server: std::net::SocketAddr,
    sock: &std::path::Path,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Result<(), tandem_proxy::RunError>> {
    let path = dir.join("tandem.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\nruntime: {{ socket: {} }}\nfrontends:\n  - name: web\n    bind: [\"{bind}\"]\n    default_backend: app\n\
             backends:\n  - name: app\n    servers:\n      - {{ name: s1, address: {server} }}\n",
            sock.display()
        ),
    )
    .expect("write config");
    let source = tandem_proxy::ConfigFile { path, node: None };
    tokio::spawn(tandem_proxy::run(source, async move {
        let _ = stop.await;
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_socket_never_replaces_what_the_proxy_did_not_create() {
    init_tracing();
    let srv = http_server("s").await;
    let dir = std::env::temp_dir().join(format!("tandem-api-claim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("proxy.sock");
    let bind = free_addr();

    // A regular file at the path: the proxy refuses to start and leaves it intact.
    std::fs::write(&sock, "someone's data").expect("write");
    let (_tx, rx) = tokio::sync::oneshot::channel();
    let res = tokio::time::timeout(LIMIT, run_with_socket(&dir, bind, srv.addr, &sock, rx))
        .await
        .expect("the proxy stops at once")
        .expect("task");
    let err = res.expect_err("refused").to_string();
    assert!(err.contains("a regular file, not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&sock).expect("kept"),
        "someone's data"
    );
    assert!(
        TcpStream::connect(bind).await.is_err(),
        "no frontend was bound"
    );

    // A socket another process serves: refused, and it keeps being served.
    std::fs::remove_file(&sock).expect("remove");
    let other = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let (_tx, rx) = tokio::sync::oneshot::channel();
    let res = tokio::time::timeout(LIMIT, run_with_socket(&dir, bind, srv.addr, &sock, rx))
        .await
        .expect("the proxy stops at once")
        .expect("task");
    let err = res.expect_err("refused").to_string();
    assert!(err.contains("another process is listening"), "{err}");
    let _client = std::os::unix::net::UnixStream::connect(&sock).expect("still served");
    other
        .accept()
        .expect("the other process still gets its clients");

    // Once that process is gone its stale socket is replaced; the proxy removes its own at
    // shutdown.
    drop(other);
    let (stop, rx) = tokio::sync::oneshot::channel();
    let running = run_with_socket(&dir, bind, srv.addr, &sock, rx);
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut api = loop {
        if let Ok(s) = UnixStream::connect(&sock).await {
            break BufReader::new(s);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the api never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let r = call(&mut api, r#"{"cmd":"show frontends"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    let _ = stop.send(());
    tokio::time::timeout(LIMIT, running)
        .await
        .expect("stops in time")
        .expect("task")
        .expect("run ok");
    assert!(
        !sock.exists(),
        "the proxy's own socket is removed at shutdown"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch directory named so that it is a Tandem run directory.
fn api_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-api-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_api_clients_beyond_the_limit_do_not_block_a_command() {
    let a = http_server("a").await;
    let (proxy, _addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![server(&a, 1)]),
    ))
    .await;
    let dir = api_dir("idle");
    let path = dir.join("proxy.sock");
    let task = tandem_proxy::api::spawn(proxy.clone(), &path, None).expect("api socket");
    // Twice as many silent clients as there are sessions, the oldest first.
    let mut idle = Vec::new();
    for _ in 0..2 * tandem_proxy::api::MAX_CLIENTS {
        idle.push(BufReader::new(
            UnixStream::connect(&path).await.expect("connect"),
        ));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut sock = BufReader::new(UnixStream::connect(&path).await.expect("connect"));
    let r = call(
        &mut sock,
        r#"{"cmd":"set server","server":"app/a","weight":2}"#,
    )
    .await;
    assert_eq!(r["ok"], true, "answered at once: {r}");
    // The clients idle the longest were told why they were closed.
    let mut first = String::new();
    tokio::time::timeout(LIMIT, idle[0].read_line(&mut first))
        .await
        .expect("in time")
        .expect("read");
    let v: Value = serde_json::from_str(&first).expect("json");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("took the place of this idle one")),
        "{v}"
    );
    // The most recent of them still has its session.
    let last = idle.last_mut().expect("clients");
    let r = call(last, r#"{"cmd":"show backends"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_slot_answers_while_every_session_is_busy() {
    // Enough servers that a `show servers` answer does not fit in the socket buffers.
    let servers: Vec<tandem_proxy::plan::Server> = (0..1500u16)
        .map(|i| {
            tandem_proxy::plan::Server::new(
                &format!("server-with-a-long-name-{i}"),
                std::net::SocketAddr::from(([127, 0, 0, 1], 10_000 + i)),
            )
        })
        .collect();
    let (proxy, _addr) = start(plan(Mode::Http, free_addr(), backend(Mode::Http, servers))).await;
    let dir = api_dir("probe");
    let path = dir.join("proxy.sock");
    let task = tandem_proxy::api::spawn(proxy.clone(), &path, None).expect("api socket");
    // Every session asks for the long answer and never reads it: all are busy writing.
    let mut busy = Vec::new();
    for _ in 0..tandem_proxy::api::MAX_CLIENTS {
        let mut s = UnixStream::connect(&path).await.expect("connect");
        s.write_all(b"{\"cmd\":\"show servers\"}\n")
            .await
            .expect("write");
        busy.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The VRRP daemon's probe still gets its answer, on the reserved slot.
    let mut probe = BufReader::new(UnixStream::connect(&path).await.expect("connect"));
    let r = call(&mut probe, r#"{"cmd":"show frontends"}"#).await;
    assert_eq!(r["frontends"][0]["name"], "web", "{r}");
    // That slot serves one read command, nothing that changes state.
    let mut other = BufReader::new(UnixStream::connect(&path).await.expect("connect"));
    let r = call(
        &mut other,
        r#"{"cmd":"set server","server":"app/server-with-a-long-name-0","weight":2}"#,
    )
    .await;
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("only one show command is served now")),
        "{r}"
    );
    task.abort();
    drop(busy);
    let _ = std::fs::remove_dir_all(&dir);
}
