//! Health checks, backups, per-server `max_connections` with the backend queue, and the
//! frontend connection limit, end to end.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::StatusCode;
use tandem_proxy::plan::{CheckKind, Frontend, HealthCheck, Mode, Plan};

use crate::common::*;

fn fast_check(rise: u32, fall: u32) -> HealthCheck {
    let mut hc = HealthCheck::new(CheckKind::http("/health"));
    hc.interval = Duration::from_millis(50);
    hc.timeout = Duration::from_millis(200);
    hc.rise = rise;
    hc.fall = fall;
    hc
}

#[tokio::test]
async fn down_after_fall_up_after_rise_and_no_traffic_while_down() {
    let (a, b) = (http_server("a").await, http_server("b").await);
    let mut be = backend(Mode::Http, vec![server(&a, 1), server(&b, 1)]);
    be.health_check = Some(fast_check(2, 3));
    let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let state = proxy.server_state("app", "a").expect("state");
    let c = client();

    a.stats.healthy.store(false, Ordering::SeqCst);
    let checks_at_fail = a.stats.checks.load(Ordering::SeqCst);
    wait_until("a marked down", || !state.is_up()).await;
    // Marked down only after `fall` failed checks.
    assert!(a.stats.checks.load(Ordering::SeqCst) - checks_at_fail >= 3);
    let before = hits(&a);
    for _ in 0..50 {
        let (status, body, _) = get(&c, addr, "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "b:0"));
    }
    assert_eq!(hits(&a), before, "a request reached a server marked down");

    a.stats.healthy.store(true, Ordering::SeqCst);
    let checks_at_heal = a.stats.checks.load(Ordering::SeqCst);
    wait_until("a back up", || state.is_up()).await;
    assert!(a.stats.checks.load(Ordering::SeqCst) - checks_at_heal >= 2);
    assert_eq!(state.transitions(), 2);
    let mut saw_a = false;
    for _ in 0..10 {
        saw_a |= get(&c, addr, "/").await.1 == "a:0";
    }
    assert!(saw_a, "a gets traffic again");
}

#[tokio::test]
async fn backup_serves_only_when_all_primaries_are_down() {
    let (p1, p2, bk) = (
        http_server("p1").await,
        http_server("p2").await,
        http_server("bk").await,
    );
    let mut backup = server(&bk, 1);
    backup.backup = true;
    let mut be = backend(Mode::Http, vec![server(&p1, 1), server(&p2, 1), backup]);
    be.health_check = Some(fast_check(1, 1));
    let (proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let c = client();
    for _ in 0..10 {
        assert_ne!(get(&c, addr, "/").await.1, "bk:0");
    }
    p1.stats.healthy.store(false, Ordering::SeqCst);
    let s1 = proxy.server_state("app", "p1").expect("state");
    wait_until("p1 down", || !s1.is_up()).await;
    for _ in 0..10 {
        assert_eq!(
            get(&c, addr, "/").await.1,
            "p2:0",
            "one primary left: no backup"
        );
    }
    p2.stats.healthy.store(false, Ordering::SeqCst);
    let s2 = proxy.server_state("app", "p2").expect("state");
    wait_until("p2 down", || !s2.is_up()).await;
    for _ in 0..10 {
        assert_eq!(get(&c, addr, "/").await.1, "bk:0");
    }
    p1.stats.healthy.store(true, Ordering::SeqCst);
    wait_until("p1 up", || s1.is_up()).await;
    assert_eq!(get(&c, addr, "/").await.1, "p1:0");
    assert_eq!(hits(&bk), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_queues_200_requests_and_never_exceeds_10() {
    let s = http_server("a").await;
    let mut sv = server(&s, 1);
    sv.max_connections = Some(10);
    let mut be = backend(Mode::Http, vec![sv]);
    be.timeouts.queue = Duration::from_secs(15);
    let (_proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        tasks.push(tokio::spawn(async move {
            get(&client(), addr, "/slow/20").await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::OK);
    }
    assert_eq!(hits(&s), 200);
    let max = s.stats.max_inflight.load(Ordering::SeqCst);
    assert!(max <= 10, "server saw {max} concurrent requests");
    assert!(max >= 5, "the limit was barely used: {max}");
}

#[tokio::test]
async fn queue_timeout_gives_503() {
    let s = http_server("a").await;
    let mut sv = server(&s, 1);
    sv.max_connections = Some(1);
    let mut be = backend(Mode::Http, vec![sv]);
    be.timeouts.queue = Duration::from_millis(100);
    let (_proxy, addr) = start(plan(Mode::Http, free_addr(), be)).await;
    let slow = tokio::spawn(async move { get(&client(), addr, "/slow/1000").await.0 });
    wait_until("slow request in flight", || {
        s.stats.inflight.load(Ordering::SeqCst) == 1
    })
    .await;
    let (status, _, _) = get(&client(), addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(slow.await.expect("task"), StatusCode::OK);
    assert_eq!(hits(&s), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_max_connections_bounds_concurrent_clients() {
    let s = http_server("a").await;
    let bind = free_addr();
    let mut fe = Frontend::new("web", Mode::Http, bind, "app");
    fe.max_connections = Some(3);
    let (_proxy, addr) =
        start(Plan::new(vec![fe], vec![backend(Mode::Http, vec![server(&s, 1)])]).expect("valid"))
            .await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        tasks.push(tokio::spawn(async move {
            raw_exchange(
                addr,
                b"GET /slow/30 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
        }));
    }
    for t in tasks {
        let resp = t.await.expect("task");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    let max = s.stats.max_inflight.load(Ordering::SeqCst);
    assert!(
        max <= 3,
        "server saw {max} concurrent requests behind maxconn 3"
    );
}
