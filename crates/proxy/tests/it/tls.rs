//! TLS end to end on loopback: SNI certificate choice, TLS 1.2 and 1.3, resumption, ALPN h2,
//! h2c prior knowledge, HTTP/2 multiplexing, certificate reload through the config file,
//! TLS to servers, and (when installed) curl and h2load against the proxy.
//!
//! Owns: the TLS test clients and a TLS test server. Certificates: `tests/data` (README).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion, RootCertStore};
use tandem_proxy::plan::{Frontend, Mode, Plan};
use tandem_proxy::tls::{FrontendTls, UpstreamTls};
use tandem_proxy::{ConfigFile, PlanSource, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::common::*;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The leaf certificate of a PEM file of `tests/data`.
fn leaf(name: &str) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(data(name))
        .expect("pem")
        .next()
        .expect("a certificate")
        .expect("valid pem")
}

fn roots() -> RootCertStore {
    let mut r = RootCertStore::empty();
    r.add(leaf("ca.pem")).expect("test ca");
    r
}

/// A client trusting the test CA, with the given versions and ALPN.
pub fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots())
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

pub fn both() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

pub async fn tls_connect(
    cfg: &Arc<ClientConfig>,
    addr: SocketAddr,
    sni: &str,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_owned()).expect("name");
    tokio::time::timeout(
        LIMIT,
        tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

/// Sends one HTTP/1.1 request on `s` and returns the raw response (the server closes).
async fn h1_get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
) -> String {
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A proxy whose frontend terminates TLS with `certs` (first is default) and `alpn`.
async fn tls_proxy(servers: &[&TestServer], certs: &[&str], alpn: &[&str]) -> (Proxy, SocketAddr) {
    let bind = free_addr();
    let mut fe = Frontend::new("web", Mode::Http, bind, "app");
    let paths: Vec<PathBuf> = certs.iter().map(|c| data(c)).collect();
    let alpn: Vec<String> = alpn.iter().map(|s| (*s).to_owned()).collect();
    fe.tls = Some(FrontendTls::load(&paths, &alpn).expect("certificates load"));
    let be = backend(Mode::Http, servers.iter().map(|s| server(s, 1)).collect());
    start(Plan::new(vec![fe], vec![be]).expect("valid plan")).await
}

fn peer_leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")[0]
        .clone()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate() {
    let app = http_server("app").await;
    let (_proxy, addr) = tls_proxy(&[&app], &["a.test.pem", "b.test.pem"], &[]).await;
    let cfg = client_config(&both(), &[]);
    let mut a = tls_connect(&cfg, addr, "a.test").await;
    assert_eq!(peer_leaf(&a), leaf("a.test.pem"));
    let resp = h1_get(&mut a, "a.test").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("seen-x-forwarded-proto: https"), "{resp}");
    let b = tls_connect(&cfg, addr, "b.test").await;
    assert_eq!(peer_leaf(&b), leaf("b.test.pem"));
    let w = tls_connect(&cfg, addr, "x.wild.a.test").await;
    assert_eq!(peer_leaf(&w), leaf("a.test.pem"));
    // Unknown SNI: the default (first) certificate is offered, so verifying for
    // `c.test` fails on the client side.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("c.test").expect("name");
    let err = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
        .expect_err("a.test certificate is not valid for c.test");
    let err = err.to_string();
    assert!(
        err.contains("NotValidForName") || err.contains("not valid for name"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_both_negotiate() {
    let app = http_server("app").await;
    let (_proxy, addr) = tls_proxy(&[&app], &["a.test.pem"], &["http/1.1"]).await;
    for (version, want) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let cfg = client_config(&[version], &[b"http/1.1"]);
        let mut s = tls_connect(&cfg, addr, "a.test").await;
        assert_eq!(s.get_ref().1.protocol_version(), Some(want));
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let resp = h1_get(&mut s, "a.test").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{want:?}: {resp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume() {
    let app = http_server("app").await;
    let (_proxy, addr) = tls_proxy(&[&app], &["a.test.pem"], &[]).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        // One config: its session store carries the ticket from the first connection.
        let cfg = client_config(&[version], &[]);
        let mut first = tls_connect(&cfg, addr, "a.test").await;
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        // Reading the response also reads the TLS 1.3 tickets sent after the handshake.
        assert!(
            h1_get(&mut first, "a.test")
                .await
                .starts_with("HTTP/1.1 200")
        );
        let mut second = tls_connect(&cfg, addr, "a.test").await;
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?}"
        );
        assert!(
            h1_get(&mut second, "a.test")
                .await
                .starts_with("HTTP/1.1 200")
        );
    }
}

/// An HTTP/2 client over `io`.
pub async fn h2_client<I>(io: I) -> hyper::client::conn::http2::SendRequest<String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<String>,
    uri: &str,
) -> (StatusCode, Version, String, hyper::HeaderMap) {
    let req = Request::get(uri).body(String::new()).expect("request");
    let resp = tokio::time::timeout(LIMIT, send.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = String::from_utf8(collect(body).await).expect("utf-8");
    (parts.status, parts.version, body, parts.headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_serves_http2() {
    let app = http_server("app").await;
    let (_proxy, addr) = tls_proxy(&[&app], &["a.test.pem"], &["h2", "http/1.1"]).await;
    let cfg = client_config(&both(), &[b"h2", b"http/1.1"]);
    let s = tls_connect(&cfg, addr, "a.test").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2_client(s).await;
    let (status, version, body, headers) = h2_get(&mut send, "https://a.test/x").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(body, "app:0");
    assert_eq!(headers["seen-x-forwarded-host"], "a.test");
    assert_eq!(headers["seen-x-forwarded-proto"], "https");
    // A client that offers only http/1.1 gets HTTP/1.1 on the same bind.
    let cfg = client_config(&both(), &[b"http/1.1"]);
    let mut s = tls_connect(&cfg, addr, "a.test").await;
    assert!(h1_get(&mut s, "a.test").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_and_http1_share_a_plain_bind() {
    let app = http_server("app").await;
    let (_proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![server(&app, 1)]),
    ))
    .await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut send = h2_client(tcp).await;
    let (status, version, body, headers) = h2_get(&mut send, &format!("http://{addr}/")).await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(body, "app:0");
    assert_eq!(headers["seen-x-forwarded-proto"], "http");
    let (status, _, _) = get(&client(), addr, "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_multiplexes_100_streams_over_the_servers() {
    let (s1, s2) = (http_server("s1").await, http_server("s2").await);
    let (_proxy, addr) = tls_proxy(&[&s1, &s2], &["a.test.pem"], &["h2"]).await;
    let cfg = client_config(&both(), &[b"h2"]);
    let send = h2_client(tls_connect(&cfg, addr, "a.test").await).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let mut send = send.clone();
        // Every stream waits a little at the server, so they are in flight together.
        set.spawn(async move {
            h2_get(&mut send, &format!("https://a.test/slow/{}", 20 + i % 5)).await
        });
    }
    let mut by_server = std::collections::HashMap::<String, usize>::new();
    while let Some(r) = set.join_next().await {
        let (status, version, _, headers) = r.expect("task");
        assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
        let name = headers["x-server"].to_str().expect("ascii").to_owned();
        *by_server.entry(name).or_default() += 1;
    }
    assert_eq!(by_server.values().sum::<usize>(), 100);
    assert!(
        by_server.get("s1").copied().unwrap_or(0) >= 30
            && by_server.get("s2").copied().unwrap_or(0) >= 30,
        "streams are balanced independently: {by_server:?}"
    );
    assert!(
        s1.stats
            .max_inflight
            .load(std::sync::atomic::Ordering::SeqCst)
            > 1
    );
}

/// A scratch directory for a config file and its certificates.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-it-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_with_the_config_and_bad_pem_is_refused() {
    init_tracing();
    let app = http_server("app").await;
    let dir = scratch_dir("reload");
    let cert = dir.join("site.pem");
    std::fs::copy(data("a.test.pem"), &cert).expect("copy");
    let bind = free_addr();
    let config = dir.join("tandem.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nfrontends:\n  - name: web\n    bind: [\"{bind}\"]\n    tls: {{ certificates: [site.pem], alpn: [h2, http/1.1] }}\n    default_backend: app\nbackends:\n  - name: app\n    servers:\n      - {{ name: app1, address: \"{}\" }}\n",
            app.addr
        ),
    )
    .expect("write config");
    let source = ConfigFile {
        path: config,
        node: None,
    };
    let proxy = Proxy::start(source.load().expect("valid config"))
        .await
        .expect("start");
    let addr = proxy.local_addrs().await[&bind];
    let cfg = client_config(&both(), &[]);
    assert_eq!(
        peer_leaf(&tls_connect(&cfg, addr, "a.test").await),
        leaf("a.test.pem")
    );

    std::fs::copy(data("a2.test.pem"), &cert).expect("copy");
    proxy
        .reload(source.load().expect("valid config"))
        .await
        .expect("reload");
    let mut s = tls_connect(&cfg, addr, "a.test").await;
    assert_eq!(
        peer_leaf(&s),
        leaf("a2.test.pem"),
        "new certificate after reload"
    );
    assert!(h1_get(&mut s, "a.test").await.starts_with("HTTP/1.1 200"));

    let key_only = std::fs::read_to_string(data("b.test.pem")).expect("read");
    let key_only = &key_only[key_only.find("-----BEGIN PRIVATE KEY").expect("key")..];
    for (bad, why) in [
        (
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            "invalid pem",
        ),
        (key_only, "no certificate found"),
    ] {
        std::fs::write(&cert, bad).expect("write bad pem");
        let err = source.load().expect_err("bad pem is refused").to_string();
        assert!(
            err.contains(&format!("failed to load certificate {}: ", cert.display()))
                && err.contains(why),
            "{err}"
        );
        assert_eq!(
            peer_leaf(&tls_connect(&cfg, addr, "a.test").await),
            leaf("a2.test.pem"),
            "the old certificate keeps serving"
        );
    }
    proxy.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP/1.1 server over TLS with the `a.test` certificate, answering `tls-app`.
async fn tls_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use hyper::service::service_fn;
    let tls = FrontendTls::load(&[data("a.test.pem")], &[]).expect("cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config().clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new("tls-app".to_owned()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_servers_verifies_ca_and_sni() {
    let (server_addr, _task) = tls_server().await;
    let cases = [
        (
            UpstreamTls::load(true, Some("a.test"), Some(&data("ca.pem"))),
            StatusCode::OK,
        ),
        // The server's certificate is not valid for b.test: verification fails, 502.
        (
            UpstreamTls::load(true, Some("b.test"), Some(&data("ca.pem"))),
            StatusCode::BAD_GATEWAY,
        ),
        // Not valid for the server's IP either when no SNI is set.
        (
            UpstreamTls::load(true, None, Some(&data("ca.pem"))),
            StatusCode::BAD_GATEWAY,
        ),
        // verify: false accepts any certificate.
        (UpstreamTls::load(false, None, None), StatusCode::OK),
    ];
    for (i, (tls, want)) in cases.into_iter().enumerate() {
        let mut be = backend(
            Mode::Http,
            vec![tandem_proxy::plan::Server::new("tls", server_addr)],
        );
        be.tls = Some(tls.expect("upstream tls loads"));
        be.retries = 0;
        let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
        let (status, body, _) = get(&client(), addr, "/").await;
        assert_eq!(status, want, "case {i}: {body}");
        if want == StatusCode::OK {
            assert_eq!(body, "tls-app");
        }
        proxy.shutdown(Duration::from_millis(200)).await;
    }
}

/// Runs an external client with a time bound; `None` when it is not installed.
async fn run_tool(program: &str, args: &[String]) -> Option<std::process::Output> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(LIMIT, child)
        .await
        .expect("tool finished in time")
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("failed to run {program}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_h2load_against_the_proxy() {
    let app = http_server("app").await;
    let (_proxy, addr) =
        tls_proxy(&[&app], &["a.test.pem", "b.test.pem"], &["h2", "http/1.1"]).await;
    let port = addr.port();
    let ca = data("ca.pem").display().to_string();
    let base = |http: &str| -> Vec<String> {
        vec![
            "-sS".into(),
            "--max-time".into(),
            "10".into(),
            http.into(),
            "--resolve".into(),
            format!("a.test:{port}:127.0.0.1"),
            "--cacert".into(),
            ca.clone(),
            "-w".into(),
            " %{http_version}".into(),
            format!("https://a.test:{port}/"),
        ]
    };
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let Some(out) = run_tool("curl", &base(flag)).await else {
            eprintln!("skipped: curl is not installed");
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {flag}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout, format!("app:0 {version}"), "curl {flag}");
    }
    let args: Vec<String> = ["-n", "200", "-c", "2", "-m", "10"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([format!("https://127.0.0.1:{port}/")])
        .collect();
    let Some(out) = run_tool("h2load", &args).await else {
        eprintln!("skipped: h2load is not installed (Debian nghttp2-client)");
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2load: {stdout}");
    assert!(
        stdout.contains("200 succeeded, 0 failed, 0 errored"),
        "h2load: {stdout}"
    );
    assert!(stdout.contains("h2"), "h2load negotiated h2: {stdout}");
}
