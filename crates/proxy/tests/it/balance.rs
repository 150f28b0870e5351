//! Server selection through the proxy: every `tandem-balance` algorithm as a client sees it,
//! consistent hashing across a reload, `first`, `leastconn`, passive health, keep-alive reuse.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::StatusCode;
use tandem_proxy::plan::{Algorithm, CheckKind, HealthCheck, Mode};

use crate::common::*;

/// The path and `x-user` header value of request `i`.
type Key = fn(usize) -> (String, String);

/// Sends `total` requests from 8 keep-alive clients; `key(i)` varies path and header.
async fn distribution(
    addr: std::net::SocketAddr,
    total: usize,
    key: Key,
) -> HashMap<String, usize> {
    let clients = 8;
    let mut tasks = Vec::new();
    for t in 0..clients {
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut counts: HashMap<String, usize> = HashMap::new();
            for i in (t..total).step_by(clients) {
                let (path, hv) = key(i);
                let (status, _, h) = get_with(&c, addr, &path, &[("x-user", &hv)]).await;
                assert_eq!(status, StatusCode::OK);
                *counts.entry(served_by(&h)).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("client task") {
            *counts.entry(k).or_default() += v;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_uri_and_header_follow_weights_within_2_percent_over_10k_requests() {
    let servers = [
        http_server("a").await,
        http_server("b").await,
        http_server("c").await,
    ];
    let weights = [1u32, 2, 5];
    let sum: u32 = weights.iter().sum();
    let cases: [(Algorithm, Key); 3] = [
        (Algorithm::Random, |_| ("/".into(), "x".into())),
        (Algorithm::Uri, |i| (format!("/item/{i}?q=1"), "x".into())),
        (Algorithm::Header("x-user".into()), |i| {
            ("/".into(), format!("user-{i}"))
        }),
    ];
    for (algo, key) in cases {
        let mut be = backend(
            Mode::Http,
            servers
                .iter()
                .zip(weights)
                .map(|(s, w)| server(s, w))
                .collect(),
        );
        be.algorithm = algo.clone();
        let (_proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
        let total = 10_000;
        let counts = distribution(addr, total, key).await;
        for (s, w) in servers.iter().zip(weights) {
            let got = counts.get(s.name).copied().unwrap_or(0) as f64 / total as f64;
            let want = f64::from(w) / f64::from(sum);
            assert!(
                (got - want).abs() <= 0.02,
                "{algo:?}: server {} got share {got:.4}, want {want:.4} ({counts:?})",
                s.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_is_stable_and_a_removed_server_moves_only_its_own_keys() {
    let servers = [
        http_server("a").await,
        http_server("b").await,
        http_server("c").await,
        http_server("d").await,
    ];
    let bind = free_addr();
    let make = |n: usize| {
        let mut be = backend(
            Mode::Http,
            servers[..n].iter().map(|s| server(s, 1)).collect(),
        );
        be.algorithm = Algorithm::Uri;
        plan(Mode::Http, bind, be)
    };
    let (proxy, addr) = start(make(4)).await;
    let keys = 2000;
    let map = |addr| async move {
        let c = client();
        let mut m = Vec::with_capacity(keys);
        for i in 0..keys {
            let (status, _, h) = get_with(&c, addr, &format!("/k/{i}"), &[]).await;
            assert_eq!(status, StatusCode::OK);
            m.push(served_by(&h));
        }
        m
    };
    let first = map(addr).await;
    assert_eq!(map(addr).await, first, "same path, same server");
    proxy.reload(make(3)).await.expect("reload without d");
    let after = map(addr).await;
    let mut moved = 0;
    for (before, now) in first.iter().zip(&after) {
        if before == "d" {
            assert_ne!(now, "d");
            moved += 1;
        } else {
            assert_eq!(before, now, "a key of a remaining server moved");
        }
    }
    let share = moved as f64 / keys as f64;
    assert!(
        share <= 0.25 + 0.03,
        "{share:.3} of keys moved, want about 1/4"
    );
}

#[tokio::test]
async fn source_is_stable_per_client_address() {
    let servers = [
        http_server("a").await,
        http_server("b").await,
        http_server("c").await,
    ];
    let mut be = backend(Mode::Http, servers.iter().map(|s| server(s, 1)).collect());
    be.algorithm = Algorithm::Source;
    let (_proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for n in 2..42u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, n));
        let (_, first) = get_from(ip, addr, "/").await;
        for _ in 0..3 {
            assert_eq!(get_from(ip, addr, "/").await.1, first, "client {ip} moved");
        }
        *seen.entry(first).or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        3,
        "40 addresses spread over every server: {seen:?}"
    );
}

#[tokio::test]
async fn first_fills_servers_in_config_order() {
    let servers = [
        http_server("a").await,
        http_server("b").await,
        http_server("c").await,
    ];
    let mut be = backend(
        Mode::Http,
        servers
            .iter()
            .map(|s| {
                let mut sv = server(s, 1);
                sv.max_connections = Some(2);
                sv
            })
            .collect(),
    );
    be.algorithm = Algorithm::First;
    let (_proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    // Idle: everything goes to the first server.
    let c = client();
    for _ in 0..10 {
        assert_eq!(served_by(&get_with(&c, addr, "/", &[]).await.2), "a");
    }
    // Five concurrent slow requests (1 s each, started 20 ms apart): a takes 2, b takes 2,
    // c takes the fifth.
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(tokio::spawn(async move {
            served_by(&get_with(&client(), addr, "/slow/1000", &[]).await.2)
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.expect("task"));
    }
    got.sort();
    assert_eq!(got, ["a", "a", "b", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_sends_to_the_least_busy_server() {
    let (slow, fast) = (http_server("slow").await, http_server("fast").await);
    slow.stats.delay_ms.store(200, Ordering::SeqCst);
    let mut be = backend(Mode::Http, vec![server(&slow, 1), server(&fast, 1)]);
    be.algorithm = Algorithm::LeastConn;
    let (_proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..20 {
                assert_eq!(get_with(&c, addr, "/", &[]).await.0, StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let (s, f) = (hits(&slow), hits(&fast));
    assert_eq!(s + f, 200);
    // Round robin would give 100 each; leastconn keeps the busy server at about its share
    // of concurrency, so the fast one takes the bulk.
    assert!(f >= 150, "fast got {f}, slow got {s}");
}

#[tokio::test]
async fn passive_5xx_marks_a_server_down_until_checks_bring_it_back() {
    let (a, b) = (http_server("a").await, http_server("b").await);
    let mut be = backend(Mode::Http, vec![server(&a, 1), server(&b, 1)]);
    let mut hc = HealthCheck::new(CheckKind::http("/health"));
    // Checks pass (only traffic fails): a stays down for 1 to 2 intervals, long enough to
    // see that nothing reaches it, and comes back after `rise` checks.
    hc.interval = Duration::from_secs(1);
    hc.rise = 2;
    hc.passive_5xx = Some(3);
    be.health_check = Some(hc);
    let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let state = proxy.server_state("app", "a").expect("state");
    a.stats.status.store(500, Ordering::SeqCst);
    let c = client();
    let mut fives = 0;
    for _ in 0..20 {
        if get_with(&c, addr, "/", &[]).await.0 == StatusCode::INTERNAL_SERVER_ERROR {
            fives += 1;
        }
        if !state.is_up() {
            break;
        }
    }
    assert!(!state.is_up(), "3 consecutive 5xx mark a down");
    assert_eq!(fives, 3);
    let before = hits(&a);
    for _ in 0..20 {
        assert_eq!(served_by(&get_with(&c, addr, "/", &[]).await.2), "b");
    }
    assert_eq!(hits(&a), before, "no request to a down server");
    a.stats.status.store(0, Ordering::SeqCst);
    wait_until("a back after rise checks", || state.is_up()).await;
}

#[tokio::test]
async fn keep_alive_reuses_client_and_server_connections() {
    let s = http_server("a").await;
    let (_proxy, addr) = start(plan(
        Mode::Http,
        free_addr(),
        backend(Mode::Http, vec![server(&s, 1)]),
    ))
    .await;
    let c = client();
    for _ in 0..100 {
        assert_eq!(get_with(&c, addr, "/", &[]).await.0, StatusCode::OK);
    }
    assert_eq!(hits(&s), 100);
    let accepts = s.stats.accepts.load(Ordering::SeqCst);
    assert!(
        accepts <= 2,
        "100 sequential requests opened {accepts} server connections"
    );
}

#[tokio::test]
async fn passive_connect_failures_mark_a_dead_server_down_and_clients_never_see_it() {
    let a = http_server("a").await;
    let dead = tandem_proxy::plan::Server::new("dead", free_addr());
    let mut be = backend(Mode::Http, vec![server(&a, 1), dead]);
    let mut hc = HealthCheck::new(CheckKind::Tcp);
    // Active checks are slow here: passive detection does the work.
    hc.interval = Duration::from_secs(30);
    hc.fall = 3;
    hc.passive_connect_failures = Some(2);
    be.health_check = Some(hc);
    let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let state = proxy.server_state("app", "dead").expect("state");
    let c = client();
    for _ in 0..20 {
        let (status, body, _) = get_with(&c, addr, "/", &[]).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "a:0"),
            "retried on a"
        );
    }
    assert!(!state.is_up(), "two connect failures mark the server down");
    let r = tandem_proxy::api::execute(&proxy, None, br#"{"cmd":"show servers"}"#).await;
    let dead = &r["servers"][1];
    assert_eq!(dead["health"], "down", "{r}");
    assert_eq!(
        dead["connect_failures"], 2,
        "no connect attempt after it was marked down"
    );
    assert_eq!(dead["transitions"], 1);
}

#[tokio::test]
async fn slow_start_ramps_a_server_back_from_maintenance() {
    let (a, b) = (http_server("a").await, http_server("b").await);
    let mut be = backend(Mode::Http, vec![server(&a, 100), server(&b, 100)]);
    be.slow_start = Duration::from_secs(60);
    let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let set = |state: &'static str| {
        let proxy = proxy.clone();
        async move {
            let line = format!(r#"{{"cmd":"set server","server":"app/a","state":"{state}"}}"#);
            tandem_proxy::api::execute(&proxy, None, line.as_bytes()).await
        }
    };
    let r = tandem_proxy::api::execute(&proxy, None, br#"{"cmd":"show servers"}"#).await;
    assert_eq!(
        r["servers"][0]["effective_weight"], 100,
        "no ramp at start-up"
    );
    assert_eq!(set("maint").await["server"]["effective_weight"], 0);
    let r = set("ready").await;
    let eff = r["server"]["effective_weight"].as_u64().expect("weight");
    assert!((1..=10).contains(&eff), "ramping from the bottom: {r}");
    // While ramping, a takes a trickle: far less than half of new requests.
    let c = client();
    for _ in 0..100 {
        assert_eq!(get_with(&c, addr, "/", &[]).await.0, StatusCode::OK);
    }
    assert!(hits(&a) < 20, "a got {} of 100 while ramping", hits(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_follows_weights_within_2_percent_over_10k_client_addresses() {
    let servers = [
        http_server("a").await,
        http_server("b").await,
        http_server("c").await,
    ];
    let weights = [1u32, 2, 5];
    let mut be = backend(
        Mode::Http,
        servers
            .iter()
            .zip(weights)
            .map(|(s, w)| server(s, w))
            .collect(),
    );
    be.algorithm = Algorithm::Source;
    let (_proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let total = 10_000usize;
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for i in (w..total).step_by(workers) {
                // One loopback address per client: 127.10.x.y.
                let ip = IpAddr::V4(Ipv4Addr::new(127, 10, (i / 250) as u8, (1 + i % 250) as u8));
                let (status, body) = get_from(ip, addr, "/").await;
                assert_eq!(status, StatusCode::OK);
                *counts.entry(body).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("worker") {
            *counts.entry(k).or_default() += v;
        }
    }
    let sum: u32 = weights.iter().sum();
    for (s, w) in servers.iter().zip(weights) {
        let got = counts.get(&format!("{}:0", s.name)).copied().unwrap_or(0) as f64 / total as f64;
        let want = f64::from(w) / f64::from(sum);
        assert!(
            (got - want).abs() <= 0.02,
            "server {} got share {got:.4}, want {want:.4} ({counts:?})",
            s.name
        );
    }
}
