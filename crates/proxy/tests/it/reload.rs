//! Reload end to end: under load with no failed request, listeners added and removed,
//! refused reloads leave the old plan serving, established connections keep their plan.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use tandem_proxy::ReloadError;
use tandem_proxy::plan::{Backend, Frontend, Mode, Plan};

use crate::common::*;

fn two_frontends(bind1: std::net::SocketAddr, bind2: std::net::SocketAddr, s: &TestServer) -> Plan {
    Plan::new(
        vec![
            Frontend::new("one", Mode::Http, bind1, "app"),
            Frontend::new("two", Mode::Http, bind2, "app"),
        ],
        vec![backend(Mode::Http, vec![server(s, 1)])],
    )
    .expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    let (a, b, c) = (
        http_server("a").await,
        http_server("b").await,
        http_server("c").await,
    );
    let bind = free_addr();
    let plans = [
        plan(
            Mode::Http,
            bind,
            backend(Mode::Http, vec![server(&a, 1), server(&b, 1)]),
        ),
        plan(
            Mode::Http,
            bind,
            backend(Mode::Http, vec![server(&b, 1), server(&c, 1)]),
        ),
        plan(
            Mode::Http,
            bind,
            backend(Mode::Http, vec![server(&c, 2), server(&a, 1)]),
        ),
    ];
    let (proxy, addr) = start(plans[0].clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for i in 0..6 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + LIMIT;
            // Half the clients keep their connection alive, half open one per request.
            let keep = i % 2 == 0;
            let mut c = client();
            while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                if !keep {
                    c = client();
                }
                let (status, _, _) = get(&c, addr, "/").await;
                if status == StatusCode::OK {
                    &ok
                } else {
                    &failed
                }
                .fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for i in 0..12 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy
            .reload(plans[(i + 1) % plans.len()].clone())
            .await
            .expect("reload");
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "{} ok",
        ok.load(Ordering::SeqCst)
    );
    assert!(ok.load(Ordering::SeqCst) > 100);
    assert_eq!(proxy.generation(), 13);
}

#[tokio::test]
async fn reload_adds_and_removes_listeners() {
    let s = http_server("a").await;
    let (bind1, bind2) = (free_addr(), free_addr());
    let (proxy, addr1) = start(plan(
        Mode::Http,
        bind1,
        backend(Mode::Http, vec![server(&s, 1)]),
    ))
    .await;
    proxy
        .reload(two_frontends(bind1, bind2, &s))
        .await
        .expect("reload adds a frontend");
    assert_eq!(get(&client(), bind2, "/").await.0, StatusCode::OK);
    assert_eq!(get(&client(), addr1, "/").await.0, StatusCode::OK);
    proxy
        .reload(plan(
            Mode::Http,
            bind2,
            backend(Mode::Http, vec![server(&s, 1)]),
        ))
        .await
        .expect("reload removes one");
    wait_until("bind1 closed", || {
        std::net::TcpStream::connect(bind1).is_err()
    })
    .await;
    assert_eq!(get(&client(), bind2, "/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn refused_reload_keeps_the_old_plan_serving() {
    let s = http_server("a").await;
    let bind = free_addr();
    let (proxy, addr) = start(plan(
        Mode::Http,
        bind,
        backend(Mode::Http, vec![server(&s, 1)]),
    ))
    .await;
    // A second frontend on an address someone else holds: the reload must be refused whole.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr");
    let other = http_server("other").await;
    let bad = Plan::new(
        vec![
            Frontend::new("one", Mode::Http, bind, "app"),
            Frontend::new("two", Mode::Http, taken, "app"),
        ],
        vec![Backend::new("app", Mode::Http, vec![server(&other, 1)])],
    )
    .expect("valid plan");
    let err = proxy.reload(bad).await.expect_err("bind conflict");
    assert!(
        matches!(err, ReloadError::Bind { addr, .. } if addr == taken),
        "{err}"
    );
    assert_eq!(proxy.generation(), 1);
    let (status, body, _) = get(&client(), addr, "/").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "a:0"),
        "old plan serves"
    );
    assert_eq!(hits(&other), 0);
    // An invalid plan never gets this far: Plan::new reports every problem.
    assert!(Plan::new(vec![Frontend::new("one", Mode::Http, bind, "nope")], vec![]).is_err());
}

#[tokio::test]
async fn established_connection_finishes_on_its_plan() {
    let (old, new) = (http_server("old").await, http_server("new").await);
    let bind = free_addr();
    let (proxy, addr) = start(plan(
        Mode::Http,
        bind,
        backend(Mode::Http, vec![server(&old, 1)]),
    ))
    .await;
    let kept = client();
    assert_eq!(get(&kept, addr, "/").await.1, "old:0");
    proxy
        .reload(plan(
            Mode::Http,
            bind,
            backend(Mode::Http, vec![server(&new, 1)]),
        ))
        .await
        .expect("reload");
    assert_eq!(
        get(&client(), addr, "/").await.1,
        "new:0",
        "new connections use the new plan"
    );
    assert_eq!(
        get(&kept, addr, "/").await.1,
        "old:0",
        "the kept-alive connection keeps its plan"
    );
}

#[tokio::test]
async fn shutdown_closes_listeners_and_drains() {
    let s = http_server("a").await;
    let bind = free_addr();
    let (proxy, addr) = start(plan(
        Mode::Http,
        bind,
        backend(Mode::Http, vec![server(&s, 1)]),
    ))
    .await;
    let slow = tokio::spawn(async move { get(&client(), addr, "/slow/300").await.0 });
    wait_until("request in flight", || {
        s.stats.inflight.load(Ordering::SeqCst) == 1
    })
    .await;
    proxy.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        slow.await.expect("task"),
        StatusCode::OK,
        "in-flight request finished"
    );
    assert_eq!(proxy.open_connections(), 0);
    assert!(std::net::TcpStream::connect(bind).is_err());
}

/// One request on `c`; `Err` describes a failure (transport error, timeout or non-200).
async fn try_get(c: &HttpClient, addr: std::net::SocketAddr) -> Result<(), String> {
    let req = hyper::Request::get(format!("http://{addr}/"))
        .body(String::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(LIMIT, c.request(req)).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Ok(Ok(resp)) => {
            let status = resp.status();
            let _ = collect(resp.into_body()).await;
            if status == StatusCode::OK {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        }
    }
}

/// The acceptance test of reload: a load generator (keep-alive clients and clients opening
/// a connection per request) runs while 20 reloads add, remove and reweight servers and
/// change the algorithm, one every 100 ms at least; two invalid reloads in the middle are
/// refused with their errors. No request may fail, and every server a reload adds must
/// then get traffic (checked for the algorithms that spread load: round robin, least
/// connections, random).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_with_changed_backends_under_load_fail_no_request() {
    use tandem_proxy::plan::Algorithm;
    let servers = [
        http_server("a").await,
        http_server("b").await,
        http_server("c").await,
        http_server("d").await,
        http_server("e").await,
    ];
    let bind = free_addr();
    // Servers by bit (a = 1, b = 2, ...), weights and algorithm of the initial plan and of
    // each of the 20 reloads.
    let masks: [u8; 21] = [
        0b00011, 0b00111, 0b00110, 0b01110, 0b11100, 0b11000, 0b10001, 0b11111, 0b00101, 0b01010,
        0b10100, 0b01001, 0b10010, 0b00111, 0b11000, 0b00001, 0b00110, 0b11001, 0b01110, 0b10101,
        0b11111,
    ];
    let algorithms = [
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::Random,
        Algorithm::RoundRobin,
        Algorithm::First,
        Algorithm::Source,
        Algorithm::Uri,
    ];
    let make_backend = |k: usize| {
        let chosen: Vec<_> = servers
            .iter()
            .enumerate()
            .filter(|(i, _)| masks[k] & (1 << i) != 0)
            .map(|(i, s)| server(s, 1 + ((k + i) % 3) as u32))
            .collect();
        let mut be = backend(Mode::Http, chosen);
        be.algorithm = algorithms[k % algorithms.len()].clone();
        be
    };
    let make = |k: usize| plan(Mode::Http, bind, make_backend(k));
    let (proxy, addr) = start(make(0)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + 3 * LIMIT;
            // Even clients keep their connection alive, odd ones open one per request.
            let keep = i % 2 == 0;
            let mut c = client();
            while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                if !keep {
                    c = client();
                }
                match try_get(&c, addr).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.lock().expect("not poisoned").push(e),
                }
            }
        }));
    }
    let spreads = |a: &Algorithm| {
        matches!(
            a,
            Algorithm::RoundRobin | Algorithm::LeastConn | Algorithm::Random
        )
    };
    let mut checked_additions = 0;
    for k in 1..=20 {
        let started = tokio::time::Instant::now();
        let before: Vec<u64> = servers.iter().map(hits).collect();
        let generation = proxy.reload(make(k)).await.expect("valid reload");
        assert_eq!(generation, k as u64 + 1);
        let added = masks[k] & !masks[k - 1];
        if spreads(&algorithms[k % algorithms.len()]) {
            for (i, s) in servers.iter().enumerate() {
                if added & (1 << i) != 0 {
                    wait_until(
                        &format!("reload {k}: added server {} serves", s.name),
                        || hits(s) > before[i],
                    )
                    .await;
                    checked_additions += 1;
                }
            }
        }
        if k == 10 {
            // Invalid configuration: refused with every error, before the proxy sees it.
            let errors = Plan::new(
                vec![Frontend::new("web", Mode::Http, bind, "missing")],
                vec![backend(Mode::Http, vec![server(&servers[0], 1)])],
            )
            .expect_err("unknown backend");
            let text = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            assert!(text.contains("unknown backend \"missing\""), "{text}");
            // Valid but not installable: a new frontend on an address someone holds.
            let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let taken = squatter.local_addr().expect("addr");
            let bad = Plan::new(
                vec![
                    Frontend::new("web", Mode::Http, bind, "app"),
                    Frontend::new("two", Mode::Http, taken, "app"),
                ],
                vec![make_backend(k)],
            )
            .expect("valid plan");
            let err = proxy.reload(bad).await.expect_err("bind conflict");
            assert!(
                matches!(err, ReloadError::Bind { addr, .. } if addr == taken),
                "{err}"
            );
            assert_eq!(
                proxy.generation(),
                k as u64 + 1,
                "refused reload changed nothing"
            );
        }
        let pause = Duration::from_millis(100).saturating_sub(started.elapsed());
        tokio::time::sleep(pause).await;
    }
    // Traffic continues after the last reload too.
    let last = ok.load(Ordering::SeqCst);
    wait_until("requests after the last reload", || {
        ok.load(Ordering::SeqCst) > last + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client");
    }
    let failures = failures.lock().expect("not poisoned").clone();
    let ok = ok.load(Ordering::SeqCst);
    eprintln!(
        "20 reloads under load: {ok} requests ok, {} failed, {checked_additions} added servers seen serving",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok > 200, "{ok} requests");
    assert!(checked_additions >= 5, "{checked_additions}");
    assert_eq!(proxy.generation(), 21);
}
