//! Tests of snapshot building and selection: distribution, smoothness, consistency, limits,
//! exclusions, backups, persistence and slow start. Pure: fixed keys, fixed seeds, and one
//! `Instant` base that only serves as an origin for offsets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::server::ServerSpec;

const PICKS: usize = 10_000;
const TOLERANCE: f64 = 0.02;

fn addr(n: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n as u8], 8080))
}

fn client(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n as u32))
}

fn spec(balance: Balance, weights: &[u32]) -> BackendSpec {
    BackendSpec {
        name: "web".into(),
        balance,
        servers: weights
            .iter()
            .enumerate()
            .map(|(i, &w)| ServerSpec::new(format!("s{i}"), addr(i)).weight(w))
            .collect(),
        all_backups: false,
    }
}

fn backend(balance: Balance, weights: &[u32]) -> Backend {
    Backend::new(spec(balance, weights), 42).expect("valid spec")
}

fn picked(pick: Pick) -> usize {
    match pick {
        Pick::Picked(chosen) => chosen.index,
        other => panic!("expected a pick, got {other:?}"),
    }
}

fn down() -> Live {
    Live {
        status: Status {
            admin: AdminState::Ready,
            health: Health::Down,
        },
        ..Live::READY
    }
}

fn admin(admin: AdminState) -> Live {
    Live {
        status: Status {
            admin,
            health: Health::Up,
        },
        ..Live::READY
    }
}

/// A request whose hash keys (IP, path, header) are all derived from `n`.
fn keyed(n: usize, buf: &mut String) -> Request<'_> {
    use std::fmt::Write;
    buf.clear();
    write!(buf, "/item/{n}?q=1").expect("writing to a String cannot fail");
    Request::new(client(n)).path(buf).header(buf.as_bytes())
}

/// Picks `PICKS` times with a fresh key per pick (for hashing) and no load change.
fn counts(b: &Backend, live: &[Live]) -> Vec<usize> {
    counts_at(b, live, Instant::now())
}

/// [`counts`] at a given `now` (for slow start).
fn counts_at(b: &Backend, live: &[Live], now: Instant) -> Vec<usize> {
    let mut counts = vec![0; b.servers().len()];
    let mut buf = String::new();
    for n in 0..PICKS {
        counts[picked(b.pick(now, &keyed(n, &mut buf), live, &[]))] += 1;
    }
    counts
}

#[track_caller]
fn assert_shares(counts: &[usize], weights: &[u32]) {
    let total: usize = counts.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (i, (&c, &w)) in counts.iter().zip(weights).enumerate() {
        let got = c as f64 / total as f64;
        let want = f64::from(w) / f64::from(wsum);
        assert!(
            (got - want).abs() <= TOLERANCE,
            "server {i}: share {got:.4}, weight share {want:.4} (counts {counts:?})"
        );
    }
}

const WEIGHTS: [u32; 5] = [100, 50, 25, 25, 10];

const ALL: [Balance; 7] = [
    Balance::RoundRobin,
    Balance::LeastConn,
    Balance::Source,
    Balance::Uri,
    Balance::Header(String::new()),
    Balance::First,
    Balance::Random,
];

fn all_algorithms() -> Vec<Balance> {
    ALL.iter()
        .map(|b| match b {
            Balance::Header(_) => Balance::Header("x-user".into()),
            other => other.clone(),
        })
        .collect()
}

// ---------------------------------------------------------------- spec validation

#[test]
fn snapshot_is_shareable_across_threads() {
    // The proxy shares one snapshot between all worker threads through `ArcSwap`.
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Backend>();
}

#[test]
fn rejects_invalid_specs() {
    let mut s = spec(Balance::RoundRobin, &[1, 257]);
    assert!(matches!(
        Backend::new(s.clone(), 0),
        Err(BalanceError::InvalidWeight { weight: 257, .. })
    ));
    s.servers[1].weight = 256;
    assert!(Backend::new(s.clone(), 0).is_ok());
    s.servers[1].name = "s0".into();
    assert!(matches!(
        Backend::new(s.clone(), 0),
        Err(BalanceError::DuplicateServerName { .. })
    ));
    s.servers[1].name = String::new();
    assert!(matches!(
        Backend::new(s.clone(), 0),
        Err(BalanceError::EmptyServerName { .. })
    ));
    s.servers[1].name = "s1".into();
    s.servers[0].id = Some(ServerId(5));
    s.servers[1].id = Some(ServerId(5));
    let err = Backend::new(s, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "duplicate server id 0000000000000005 for servers s0 and s1 in backend web"
    );
    assert!(matches!(
        Backend::new(spec(Balance::Header(String::new()), &[1]), 0),
        Err(BalanceError::EmptyHeaderName { .. })
    ));
}

// ---------------------------------------------------------------- distribution

#[test]
fn roundrobin_distribution_is_exact() {
    let b = backend(Balance::RoundRobin, &WEIGHTS);
    let c = counts(&b, &[Live::READY; 5]);
    assert_shares(&c, &WEIGHTS);
    // 10_000 picks is 47 full cycles of 210 plus 130: within one cycle of exact.
    let wsum: u32 = WEIGHTS.iter().sum();
    for (&count, &w) in c.iter().zip(&WEIGHTS) {
        let exact = PICKS as f64 * f64::from(w) / f64::from(wsum);
        assert!((count as f64 - exact).abs() <= f64::from(w));
    }
}

/// Live state plus runtime weight overrides.
struct Overridden<'a>(&'a [Live], &'a [Option<u32>]);

impl LiveView for Overridden<'_> {
    fn live(&self, index: usize) -> Live {
        self.0[index]
    }

    fn weight(&self, index: usize) -> Option<u32> {
        self.1[index]
    }
}

#[test]
fn runtime_weight_overrides_the_configured_one() {
    let b = backend(Balance::RoundRobin, &[1, 1]);
    let live = b.initial_live();
    let now = Instant::now();
    let req = Request::new(client(1));
    let weights = [Some(3), None];
    let view = Overridden(&live, &weights);
    let mut got = [0usize; 2];
    for _ in 0..400 {
        got[picked(b.pick(now, &req, &view, &[]))] += 1;
    }
    assert_eq!(got, [300, 100]);
    // Zero takes no new users; above the maximum is capped.
    let weights = [Some(0), Some(1000)];
    let view = Overridden(&live, &weights);
    for _ in 0..10 {
        assert_eq!(picked(b.pick(now, &req, &view, &[])), 1);
    }
}

#[test]
fn roundrobin_is_smooth() {
    // nginx's reference sequence for weights 5, 1, 1.
    let b = backend(Balance::RoundRobin, &[5, 1, 1]);
    let live = [Live::READY; 3];
    let now = Instant::now();
    let req = Request::new(client(1));
    let seq: Vec<usize> = (0..14)
        .map(|_| picked(b.pick(now, &req, &live, &[])))
        .collect();
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);

    // The heavy server (4/7 of the weight) never runs more than twice in a row.
    let b = backend(Balance::RoundRobin, &[100, 50, 25]);
    let live = [Live::READY; 3];
    let mut run = 0;
    for _ in 0..PICKS {
        if picked(b.pick(now, &req, &live, &[])) == 0 {
            run += 1;
            assert!(run <= 2, "run of {run} picks on the heavy server");
        } else {
            run = 0;
        }
    }
}

#[test]
fn hash_distribution_follows_weights() {
    for balance in [
        Balance::Source,
        Balance::Uri,
        Balance::Header("x-user".into()),
    ] {
        let b = backend(balance.clone(), &WEIGHTS);
        let c = counts(&b, &[Live::READY; 5]);
        assert_shares(&c, &WEIGHTS);
    }
}

#[test]
fn leastconn_distribution_follows_weights() {
    // Connections are never released: picks fill servers in proportion to their weight.
    let b = backend(Balance::LeastConn, &WEIGHTS);
    let mut live = vec![Live::READY; 5];
    let now = Instant::now();
    let req = Request::new(client(1));
    let mut counts = [0; 5];
    for _ in 0..PICKS {
        let i = picked(b.pick(now, &req, &live, &[]));
        live[i].active += 1;
        counts[i] += 1;
    }
    assert_shares(&counts, &WEIGHTS);
}

#[test]
fn random_distribution_follows_weights_when_idle() {
    // With equal (zero) load the first draw always wins: plain weighted sampling.
    let b = backend(Balance::Random, &WEIGHTS);
    let c = counts(&b, &[Live::READY; 5]);
    assert_shares(&c, &WEIGHTS);
}

#[test]
fn random_distribution_follows_weights_under_load() {
    // Closed loop: 64 requests in flight, each completing after 64 further picks (FIFO).
    let b = backend(Balance::Random, &WEIGHTS);
    let mut live = vec![Live::READY; 5];
    let now = Instant::now();
    let req = Request::new(client(1));
    let mut in_flight = std::collections::VecDeque::new();
    let mut counts = [0; 5];
    for _ in 0..PICKS {
        if in_flight.len() == 64 {
            let done: usize = in_flight.pop_front().expect("non-empty");
            live[done].active -= 1;
        }
        let i = picked(b.pick(now, &req, &live, &[]));
        live[i].active += 1;
        counts[i] += 1;
        in_flight.push_back(i);
    }
    assert_shares(&counts, &WEIGHTS);
}

#[test]
fn random_is_deterministic_for_a_seed() {
    let live = [Live::READY; 5];
    let now = Instant::now();
    let req = Request::new(client(1));
    let run = |seed| {
        let b = Backend::new(spec(Balance::Random, &WEIGHTS), seed).expect("valid");
        (0..100)
            .map(|_| picked(b.pick(now, &req, &live, &[])))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn random_prefers_the_less_loaded_draw() {
    // Two equal servers, one busy: the idle one wins whenever the draws differ (half the time),
    // and the first draw wins the rest, so it gets about 3/4 of the picks.
    let b = backend(Balance::Random, &[1, 1]);
    let mut live = vec![Live::READY; 2];
    live[0].active = 10;
    let now = Instant::now();
    let req = Request::new(client(1));
    let idle = (0..PICKS)
        .filter(|_| picked(b.pick(now, &req, &live, &[])) == 1)
        .count();
    let share = idle as f64 / PICKS as f64;
    assert!((share - 0.75).abs() < TOLERANCE, "idle share {share}");
}

// ---------------------------------------------------------------- leastconn, first

#[test]
fn leastconn_picks_least_busy_weighted() {
    let b = backend(Balance::LeastConn, &[1, 1, 1]);
    let mut live = vec![Live::READY; 3];
    live[0].active = 10;
    live[1].active = 2;
    live[2].active = 5;
    let now = Instant::now();
    let req = Request::new(client(1));
    assert_eq!(picked(b.pick(now, &req, &live, &[])), 1);

    // Weighted: 11/100 beats 7/50 although server 0 has more connections.
    let b = backend(Balance::LeastConn, &[100, 50]);
    let mut live = vec![Live::READY; 2];
    live[0].active = 10;
    live[1].active = 6;
    assert_eq!(picked(b.pick(now, &req, &live, &[])), 0);
}

#[test]
fn leastconn_ties_rotate() {
    let b = backend(Balance::LeastConn, &[1, 1, 1]);
    let live = [Live::READY; 3];
    let now = Instant::now();
    let req = Request::new(client(1));
    let mut seq: Vec<usize> = (0..6)
        .map(|_| picked(b.pick(now, &req, &live, &[])))
        .collect();
    assert_eq!(seq[..3], seq[3..]);
    seq.truncate(3);
    seq.sort_unstable();
    assert_eq!(seq, [0, 1, 2]);
}

#[test]
fn first_fills_in_order_then_spills() {
    let mut s = spec(Balance::First, &[1, 1, 1]);
    for server in &mut s.servers {
        server.max_connections = Some(2);
    }
    let b = Backend::new(s, 0).expect("valid");
    let mut live = vec![Live::READY; 3];
    let now = Instant::now();
    let req = Request::new(client(1));
    let mut seq = Vec::new();
    for _ in 0..6 {
        let i = picked(b.pick(now, &req, &live, &[]));
        live[i].active += 1;
        seq.push(i);
    }
    assert_eq!(seq, [0, 0, 1, 1, 2, 2]);
    assert_eq!(b.pick(now, &req, &live, &[]), Pick::AllFull);
    live[0].active -= 1;
    assert_eq!(picked(b.pick(now, &req, &live, &[])), 0);
}

// ---------------------------------------------------------------- consistency

/// For `PICKS` keys: the server each key maps to, or `None` when nothing was picked.
fn mapping(b: &Backend, live: &[Live]) -> Vec<Option<ServerId>> {
    let now = Instant::now();
    let mut buf = String::new();
    (0..PICKS)
        .map(|n| match b.pick(now, &keyed(n, &mut buf), live, &[]) {
            Pick::Picked(c) => Some(c.id),
            _ => None,
        })
        .collect()
}

#[test]
fn hash_is_stable_for_a_key() {
    for balance in [
        Balance::Source,
        Balance::Uri,
        Balance::Header("x-user".into()),
    ] {
        let b = backend(balance.clone(), &WEIGHTS);
        let live = [Live::READY; 5];
        assert_eq!(mapping(&b, &live), mapping(&b, &live));
        // A fresh snapshot (reload) with servers reordered and re-addressed maps identically.
        let mut s = spec(balance.clone(), &WEIGHTS);
        s.servers.reverse();
        for (i, server) in s.servers.iter_mut().enumerate() {
            server.address = addr(100 + i);
        }
        let reloaded = Backend::new(s, 7).expect("valid");
        assert_eq!(mapping(&b, &live), mapping(&reloaded, &live), "{balance:?}");
    }
}

#[test]
fn uri_ignores_query_string() {
    let b = backend(Balance::Uri, &WEIGHTS);
    let live = [Live::READY; 5];
    let now = Instant::now();
    for n in 0..200 {
        let bare = format!("/p/{n}");
        let with_query = format!("/p/{n}?session={}", n * 7);
        assert_eq!(
            b.pick(now, &Request::new(client(0)).path(&bare), &live, &[]),
            b.pick(now, &Request::new(client(1)).path(&with_query), &live, &[]),
        );
    }
}

#[test]
fn header_absent_falls_back_to_roundrobin() {
    let b = backend(Balance::Header("x-user".into()), &[2, 1]);
    let live = [Live::READY; 2];
    let now = Instant::now();
    let absent = Request::new(client(1));
    let empty = Request::new(client(1)).header(b"");
    let seq: Vec<usize> = (0..6)
        .map(|n| {
            let req = if n % 2 == 0 { absent } else { empty };
            picked(b.pick(now, &req, &live, &[]))
        })
        .collect();
    assert_eq!(seq, [0, 1, 0, 0, 1, 0]);
}

/// Removes server `gone` (by marking it down, and by dropping it from a new snapshot) and checks
/// that only its keys move, and that they are at most its share plus 5%.
fn check_minimal_disruption(balance: Balance, weights: &[u32], gone: usize) {
    let b = backend(balance.clone(), weights);
    let all_up = vec![Live::READY; weights.len()];
    let before = mapping(&b, &all_up);
    let gone_id = b.servers()[gone].id;

    let mut without = all_up.clone();
    without[gone] = down();
    let after_down = mapping(&b, &without);

    let mut s = spec(balance.clone(), weights);
    s.servers.remove(gone);
    let smaller = Backend::new(s, 0).expect("valid");
    let after_removed = mapping(&smaller, &all_up[1..]);
    assert_eq!(after_down, after_removed, "down and removed must agree");

    let moved = before
        .iter()
        .zip(&after_down)
        .filter(|(a, b)| a != b)
        .inspect(|(a, _)| assert_eq!(**a, Some(gone_id), "a key of a remaining server moved"))
        .count();
    let share = f64::from(weights[gone]) / f64::from(weights.iter().sum::<u32>());
    let moved = moved as f64 / PICKS as f64;
    assert!(
        moved <= share + 0.05,
        "{balance:?}: moved {moved:.4} > share {share:.4} + 5%"
    );
    assert!(
        after_down
            .iter()
            .all(|id| id.is_some_and(|id| id != gone_id))
    );
}

#[test]
fn hash_moves_only_the_leaving_servers_keys() {
    for balance in [
        Balance::Source,
        Balance::Uri,
        Balance::Header("x-user".into()),
    ] {
        for gone in 0..5 {
            check_minimal_disruption(balance.clone(), &[1; 5], gone);
            check_minimal_disruption(balance.clone(), &WEIGHTS, gone);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any weights, any leaving server: keys of the remaining servers never move.
    #[test]
    fn rendezvous_keys_of_remaining_servers_stay(
        weights in proptest::collection::vec(1u32..=256, 2..8),
        gone in any::<prop::sample::Index>(),
        keys in proptest::collection::vec(any::<u32>(), 1..200),
    ) {
        let b = backend(Balance::Source, &weights);
        let gone = gone.index(weights.len());
        let mut live = vec![Live::READY; weights.len()];
        let now = Instant::now();
        let before: Vec<Pick> = keys
            .iter()
            .map(|&k| b.pick(now, &Request::new(IpAddr::V4(k.into())), &live, &[]))
            .collect();
        live[gone] = down();
        for (&k, old) in keys.iter().zip(before) {
            let new = b.pick(now, &Request::new(IpAddr::V4(k.into())), &live, &[]);
            if let Pick::Picked(c) = old
                && c.index != gone
            {
                prop_assert_eq!(new, old);
            }
        }
    }
}

// ---------------------------------------------------------------- availability

#[test]
fn unusable_servers_are_never_picked() {
    let weights = [10, 0, 10, 10, 10, 10];
    let mut live = vec![Live::READY; 6];
    live[2] = down();
    live[3] = admin(AdminState::Drain);
    live[4] = admin(AdminState::Maint);
    // Only servers 0 and 5 are usable (1 has weight 0).
    for balance in all_algorithms() {
        let b = backend(balance.clone(), &weights);
        let c = counts(&b, &live);
        assert_eq!(c[0] + c[5], PICKS, "{balance:?}: {c:?}");
    }
}

#[test]
fn excluded_servers_are_skipped_for_retries() {
    let live = [Live::READY; 3];
    let now = Instant::now();
    for balance in all_algorithms() {
        let b = backend(balance.clone(), &[1, 1, 1]);
        let req = Request::new(client(3)).header(b"u");
        let mut tried = Vec::new();
        for _ in 0..3 {
            let i = picked(b.pick(now, &req, &live, &tried));
            assert!(!tried.contains(&i), "{balance:?} retried {i}");
            tried.push(i);
        }
        assert_eq!(
            b.pick(now, &req, &live, &tried),
            Pick::NoServer,
            "{balance:?}"
        );
    }
}

#[test]
fn all_full_is_distinct_from_no_server() {
    let now = Instant::now();
    let req = Request::new(client(1)).header(b"u");
    for balance in all_algorithms() {
        let mut s = spec(balance.clone(), &[1, 1]);
        s.servers[0].max_connections = Some(1);
        s.servers[1].max_connections = Some(3);
        let b = Backend::new(s, 0).expect("valid");
        let mut live = vec![Live::READY; 2];
        live[0].active = 1;
        assert_eq!(picked(b.pick(now, &req, &live, &[])), 1, "{balance:?}");
        live[1].active = 3;
        assert_eq!(b.pick(now, &req, &live, &[]), Pick::AllFull, "{balance:?}");
        live[1] = down();
        assert_eq!(b.pick(now, &req, &live, &[]), Pick::AllFull, "{balance:?}");
        live[0] = admin(AdminState::Maint);
        assert_eq!(b.pick(now, &req, &live, &[]), Pick::NoServer, "{balance:?}");
    }
    let empty = Backend::new(spec(Balance::RoundRobin, &[]), 0).expect("valid");
    assert_eq!(empty.pick(now, &req, &[] as &[Live], &[]), Pick::NoServer);
}

// ---------------------------------------------------------------- backups

fn with_backups(balance: Balance, all_backups: bool) -> Backend {
    let mut s = spec(balance, &[1, 1, 1, 1]);
    s.servers[2].backup = true;
    s.servers[3].backup = true;
    s.all_backups = all_backups;
    Backend::new(s, 0).expect("valid")
}

#[test]
fn backups_only_when_all_primaries_are_unavailable() {
    let now = Instant::now();
    let req = Request::new(client(1)).header(b"u");
    for balance in all_algorithms() {
        let b = with_backups(balance.clone(), false);
        let mut live = vec![Live::READY; 4];
        live[0] = down();
        assert!(
            counts(&b, &live)
                .iter()
                .enumerate()
                .all(|(i, &c)| (i == 1) == (c > 0))
        );
        live[1] = admin(AdminState::Maint);
        // Only the first backup, as HAProxy without `option allbackups`.
        assert_eq!(counts(&b, &live), [0, 0, PICKS, 0], "{balance:?}");
        live[2] = down();
        assert_eq!(counts(&b, &live), [0, 0, 0, PICKS], "{balance:?}");
        live[3] = admin(AdminState::Drain);
        assert_eq!(b.pick(now, &req, &live, &[]), Pick::NoServer, "{balance:?}");
    }
}

#[test]
fn all_backups_balances_over_backups() {
    for balance in all_algorithms() {
        if balance == Balance::First {
            continue;
        }
        let b = with_backups(balance.clone(), true);
        let live = [down(), down(), Live::READY, Live::READY];
        let c = counts(&b, &live);
        assert_eq!(c[0] + c[1], 0);
        assert!(c[2] > PICKS / 3 && c[3] > PICKS / 3, "{balance:?}: {c:?}");
    }
}

#[test]
fn full_primaries_queue_instead_of_using_backups() {
    let mut s = spec(Balance::RoundRobin, &[1, 1]);
    s.servers[0].max_connections = Some(1);
    s.servers[1].backup = true;
    let b = Backend::new(s, 0).expect("valid");
    let mut live = vec![Live::READY; 2];
    live[0].active = 1;
    let now = Instant::now();
    assert_eq!(
        b.pick(now, &Request::new(client(1)), &live, &[]),
        Pick::AllFull
    );
}

// ---------------------------------------------------------------- persistence

#[test]
fn persistence_wins_over_the_algorithm() {
    let b = backend(Balance::RoundRobin, &[1, 1, 1]);
    let live = [Live::READY; 3];
    let now = Instant::now();
    let cookie = b.servers()[2].id.to_cookie();
    let id = ServerId::from_cookie(std::str::from_utf8(&cookie).expect("ascii")).expect("valid");
    let req = Request::new(client(1)).persist(id);
    for _ in 0..10 {
        let pick = b.pick(now, &req, &live, &[]);
        assert_eq!(
            pick,
            Pick::Picked(Chosen {
                index: 2,
                id,
                persistent: true
            })
        );
    }
}

#[test]
fn persistence_falls_back_for_dead_maint_full_or_unknown_servers() {
    let mut s = spec(Balance::RoundRobin, &[1, 1]);
    s.servers[1].max_connections = Some(1);
    let b = Backend::new(s, 0).expect("valid");
    let now = Instant::now();
    let id = b.servers()[1].id;
    let req = Request::new(client(1)).persist(id);
    let fallback = |live: &[Live]| b.pick(now, &req, live, &[]);
    let not_persistent =
        |pick: Pick| matches!(pick, Pick::Picked(c) if !c.persistent && c.index == 0);
    assert!(not_persistent(fallback(&[Live::READY, down()])));
    assert!(not_persistent(fallback(&[
        Live::READY,
        admin(AdminState::Maint)
    ])));
    assert!(not_persistent(fallback(&[
        Live::READY,
        Live {
            active: 1,
            ..Live::READY
        }
    ])));
    let unknown = Request::new(client(1)).persist(ServerId(12345));
    assert!(
        matches!(b.pick(now, &unknown, &[Live::READY; 2], &[]), Pick::Picked(c) if !c.persistent)
    );
    // Excluded after a failed attempt: the retry goes elsewhere.
    assert!(not_persistent(b.pick(now, &req, &[Live::READY; 2], &[1])));
}

#[test]
fn drain_and_weight_zero_keep_persistent_users() {
    let b = backend(Balance::RoundRobin, &[1, 0, 1]);
    let now = Instant::now();
    let live = [Live::READY, Live::READY, admin(AdminState::Drain)];
    for index in [1, 2] {
        let req = Request::new(client(1)).persist(b.servers()[index].id);
        assert_eq!(
            b.pick(now, &req, &live, &[]),
            Pick::Picked(Chosen {
                index,
                id: b.servers()[index].id,
                persistent: true
            })
        );
    }
    // ...but new users never go there.
    assert_eq!(counts(&b, &live), [PICKS, 0, 0]);
}

#[test]
fn persistence_survives_reload() {
    let b = backend(Balance::Source, &[1, 1, 1]);
    let cookie = b.servers()[1].id.to_cookie();
    let mut s = spec(Balance::LeastConn, &[5, 5, 5]);
    s.servers.swap(0, 1);
    s.servers[0].address = addr(200);
    let reloaded = Backend::new(s, 0).expect("valid");
    let id = ServerId::from_cookie(std::str::from_utf8(&cookie).expect("ascii")).expect("valid");
    assert_eq!(
        reloaded.server_by_id(id).map(|s| s.name.as_str()),
        Some("s1")
    );
    assert_eq!(reloaded.server_by_name("s1").map(|s| s.id), Some(id));
}

// ---------------------------------------------------------------- slow start

#[test]
fn slow_start_scales_the_share_of_a_recovering_server() {
    let mut s = spec(Balance::RoundRobin, &[100, 100]);
    s.servers[1].slow_start = Duration::from_secs(10);
    let b = Backend::new(s, 0).expect("valid");
    let now = Instant::now() + Duration::from_secs(3_600);
    let ramping = |secs| Live {
        up_since: Some(now - Duration::from_secs(secs)),
        ..Live::READY
    };
    // Halfway through the ramp: effective weights 100 and 50.
    assert_shares(&counts_at(&b, &[Live::READY, ramping(5)], now), &[100, 50]);
    assert_shares(&counts_at(&b, &[Live::READY, ramping(1)], now), &[100, 10]);
    assert_shares(
        &counts_at(&b, &[Live::READY, ramping(10)], now),
        &[100, 100],
    );
}

#[test]
fn initial_live_reflects_the_spec() {
    let mut s = spec(Balance::RoundRobin, &[1, 1, 1]);
    s.servers[1].initial_admin = AdminState::Maint;
    s.servers[2].init_state = InitState::FullyDown;
    let b = Backend::new(s, 0).expect("valid");
    let live = b.initial_live();
    assert_eq!(live[0], Live::READY);
    assert_eq!(live[1].status.admin, AdminState::Maint);
    assert_eq!(live[2].status.health, Health::Down);
    assert_eq!(counts(&b, &live), [PICKS, 0, 0]);
}

#[test]
fn capacity_counts_the_servers_pick_would_use() {
    let limited = |w: &[(u32, Option<u32>, bool)], all_backups: bool| {
        let spec = BackendSpec {
            name: "web".into(),
            balance: Balance::RoundRobin,
            servers: w
                .iter()
                .enumerate()
                .map(|(i, &(weight, max, backup))| {
                    let mut s = ServerSpec::new(format!("s{i}"), addr(i)).weight(weight);
                    s.max_connections = max;
                    s.backup = backup;
                    s
                })
                .collect(),
            all_backups,
        };
        Backend::new(spec, 1).expect("valid spec")
    };
    let now = Instant::now();
    let b = limited(
        &[
            (1, Some(10), false),
            (1, Some(20), false),
            (0, Some(40), false),
            (1, Some(5), true),
            (1, Some(7), true),
        ],
        false,
    );
    let mut live = b.initial_live();
    assert_eq!(b.capacity(now, &live), 30, "weight 0 takes no new traffic");
    live[0] = down();
    assert_eq!(b.capacity(now, &live), 20);
    live[1] = admin(AdminState::Drain);
    assert_eq!(
        b.capacity(now, &live),
        5,
        "no usable primary: the first usable backup"
    );
    live[3] = admin(AdminState::Maint);
    assert_eq!(b.capacity(now, &live), 7);
    live[4] = down();
    assert_eq!(b.capacity(now, &live), 0, "nothing takes new traffic");
    let all = limited(
        &[(1, Some(10), false), (1, Some(5), true), (1, Some(7), true)],
        true,
    );
    let mut live = all.initial_live();
    live[0] = down();
    assert_eq!(
        all.capacity(now, &live),
        12,
        "all_backups: every usable backup"
    );
    let open = limited(&[(1, Some(10), false), (1, None, false)], false);
    assert_eq!(
        open.capacity(now, &open.initial_live()),
        crate::UNLIMITED,
        "a server without max_connections never fills"
    );
}
