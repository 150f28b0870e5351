//! Persistence end to end: cookie insert (1000 clients, server death), drain and maint
//! through the runtime API, source stick table with export.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use tandem_proxy::Proxy;
use tandem_proxy::plan::{CheckKind, HealthCheck, Mode, Persistence};

use crate::common::*;

const COOKIE: &str = "SRV";

/// The `SRV=...` pair of a response's Set-Cookie, if any.
fn set_cookie(h: &hyper::HeaderMap) -> Option<String> {
    h.get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("SRV="))
        .map(|v| v.split(';').next().unwrap_or(v).to_owned())
}

/// Sends one runtime API request line and returns the response object.
pub async fn api(proxy: &Proxy, line: &str) -> Value {
    tandem_proxy::api::execute(proxy, None, line.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_cookie_clients_stick_then_move_when_their_server_dies() {
    let servers = Arc::new([
        http_server("a").await,
        http_server("b").await,
        http_server("c").await,
    ]);
    let mut be = backend(Mode::Http, servers.iter().map(|s| server(s, 1)).collect());
    be.persistence = Some(Persistence::Cookie {
        name: COOKIE.into(),
    });
    let mut hc = HealthCheck::new(CheckKind::http("/health"));
    hc.interval = Duration::from_millis(50);
    hc.fall = 2;
    be.health_check = Some(hc);
    let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;

    // Phase 1: 1000 clients, 20 requests each, 50 at a time on keep-alive connections.
    let clients = 1000usize;
    let workers = 50usize;
    let mut tasks = Vec::new();
    for w in 0..workers {
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut out = Vec::new();
            for _ in (w..clients).step_by(workers) {
                let (status, _, h) = get_with(&c, addr, "/", &[]).await;
                assert_eq!(status, StatusCode::OK);
                let cookie = set_cookie(&h).expect("new user gets a cookie");
                assert!(!cookie.contains("127.0.0.1"), "cookie leaks the address");
                let home = served_by(&h);
                for _ in 1..20 {
                    let (status, _, h) = get_with(&c, addr, "/", &[("cookie", &cookie)]).await;
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(served_by(&h), home, "client left its server");
                    assert_eq!(set_cookie(&h), None, "persistent user re-cookied");
                }
                out.push((cookie, home));
            }
            out
        }));
    }
    let mut users = Vec::new();
    for t in tasks {
        users.extend(t.await.expect("worker"));
    }
    assert_eq!(users.len(), clients);
    for s in servers.iter() {
        let n = users.iter().filter(|(_, h)| h == s.name).count();
        assert!(n > 250, "server {} has only {n} users", s.name);
    }

    // Phase 2: b dies (fails its checks); its users move, everyone keeps working.
    servers[1].stats.healthy.store(false, Ordering::SeqCst);
    let b = proxy.server_state("app", "b").expect("b");
    wait_until("b marked down", || !b.is_up()).await;
    let b_hits = hits(&servers[1]);
    let users = Arc::new(users);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            for (cookie, home) in users.iter().skip(w).step_by(workers) {
                let (status, _, h) = get_with(&c, addr, "/", &[("cookie", cookie)]).await;
                assert_eq!(status, StatusCode::OK);
                let now = served_by(&h);
                let cookie = if home == "b" {
                    assert_ne!(now, "b");
                    set_cookie(&h).expect("moved user gets a new cookie")
                } else {
                    assert_eq!(&now, home, "a user of a live server moved");
                    cookie.clone()
                };
                for _ in 0..4 {
                    let (status, _, h) = get_with(&c, addr, "/", &[("cookie", &cookie)]).await;
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(
                        served_by(&h),
                        now,
                        "moved user does not stay on its new server"
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    assert_eq!(
        hits(&servers[1]),
        b_hits,
        "a request reached the dead server"
    );
}

#[tokio::test]
async fn drain_keeps_persistent_users_maint_moves_them_and_api_drain_steers_new_clients() {
    let (a, b) = (http_server("a").await, http_server("b").await);
    let mut be = backend(Mode::Http, vec![server(&a, 1), server(&b, 1)]);
    be.persistence = Some(Persistence::Cookie {
        name: COOKIE.into(),
    });
    let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let c = client();
    // A user of a.
    let mut a_cookie = None;
    for _ in 0..4 {
        let (_, _, h) = get_with(&c, addr, "/", &[]).await;
        if served_by(&h) == "a" {
            a_cookie = set_cookie(&h);
        }
    }
    let a_cookie = a_cookie.expect("a user of a");

    let r = api(
        &proxy,
        r#"{"cmd":"set server","server":"app/a","state":"drain"}"#,
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["server"]["state"], "drain");
    for _ in 0..20 {
        let (_, _, h) = get_with(&c, addr, "/", &[]).await;
        assert_eq!(served_by(&h), "b", "a new client reached a drained server");
        let (_, _, h) = get_with(&c, addr, "/", &[("cookie", &a_cookie)]).await;
        assert_eq!(served_by(&h), "a", "drain dropped a persistent user");
    }

    let r = api(
        &proxy,
        r#"{"cmd":"set server","server":"app/a","state":"maint"}"#,
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    let (_, _, h) = get_with(&c, addr, "/", &[("cookie", &a_cookie)]).await;
    assert_eq!(served_by(&h), "b", "maint keeps no user");
    assert!(set_cookie(&h).is_some(), "the moved user is re-cookied");

    let r = api(
        &proxy,
        r#"{"cmd":"set server","server":"app/a","state":"ready"}"#,
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    let mut saw_a = false;
    for _ in 0..10 {
        saw_a |= served_by(&get_with(&c, addr, "/", &[]).await.2) == "a";
    }
    assert!(saw_a, "ready again takes new clients");
}

#[tokio::test]
async fn source_persistence_sticks_and_is_exported() {
    let (a, b) = (http_server("a").await, http_server("b").await);
    let mut be = backend(Mode::Http, vec![server(&a, 1), server(&b, 1)]);
    be.persistence = Some(Persistence::Source {
        expire: Duration::from_secs(60),
    });
    let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let mut homes = Vec::new();
    for n in 2..12u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 2, n));
        let (_, home) = get_from(ip, addr, "/").await;
        for _ in 0..3 {
            assert_eq!(get_from(ip, addr, "/").await.1, home);
        }
        homes.push((ip, home));
    }
    let r = api(&proxy, r#"{"cmd":"show persistence","backend":"app"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["kind"], "source");
    let entries = r["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 10);
    for (ip, home) in &homes {
        let e = entries
            .iter()
            .find(|e| e["client"] == ip.to_string())
            .expect("entry per client");
        assert_eq!(&e["server"], &Value::from(home.split(':').next().unwrap()));
        assert_eq!(e["server_id"].as_str().map(str::len), Some(16));
    }
    // Import (what config sync does on the peer): an imported client goes to its server.
    let servers = api(&proxy, r#"{"cmd":"show servers"}"#).await;
    let b_id = servers["servers"][1]["id"].as_str().expect("id").to_owned();
    for n in 1..=5u8 {
        let line = format!(
            r#"{{"cmd":"import persistence","backend":"app","entries":[{{"client":"127.0.9.{n}","server_id":"{b_id}","expires_in_ms":60000}}]}}"#
        );
        let r = api(&proxy, &line).await;
        assert_eq!(r["ok"], true, "{r}");
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 9, n));
        assert_eq!(
            get_from(ip, addr, "/").await.1,
            "b:0",
            "imported client {ip}"
        );
    }
    let r = api(
        &proxy,
        r#"{"cmd":"import persistence","backend":"app","entries":[{"client":"127.0.9.9","server_id":"zz","expires_in_ms":1}]}"#,
    )
    .await;
    assert_eq!(r["ok"], false, "{r}");
}
