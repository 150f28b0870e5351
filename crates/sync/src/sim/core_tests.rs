//! Unit tests of the sync core (`crate::core`) on the in-memory pair harness ([`super`]), in
//! virtual time. They live beside the harness so that the core never names the harness.

use std::time::{Duration, Instant};

use crate::core::{LinkState, Relation};
use crate::proto::RefusalKind;
use crate::sim::Pair;

fn pair() -> Pair {
    let mut p = Pair::new(Instant::now(), [1, 1]);
    p.run_for(Duration::from_millis(500));
    p
}

#[test]
fn a_commit_reaches_the_peer_with_its_number() {
    let mut p = pair();
    assert_eq!(p.nodes[0].core.status().link, LinkState::Up);
    let g = p.commit(0, 1);
    p.run_for(Duration::from_millis(200));
    assert_eq!(p.nodes[1].current(), Some(g.clone()));
    assert_eq!(p.nodes[0].core.status().relation, Relation::InSync);
    assert_eq!(p.nodes[0].core.status().peer_current, Some(g));
    // And back: lb2 commits on top, lb1 follows.
    let g2 = p.commit(1, 1);
    p.run_for(Duration::from_millis(200));
    assert_eq!(p.nodes[0].current(), Some(g2));
}

#[test]
fn an_empty_peer_gets_the_current_generation_only() {
    let mut p = pair();
    p.cut();
    p.run_for(Duration::from_secs(3));
    for _ in 0..3 {
        p.commit(0, 1);
    }
    let st = p.nodes[0].core.status();
    assert_eq!(st.link, LinkState::Down);
    assert_eq!(st.queued, vec![1, 2, 3]);
    p.heal();
    p.run_for(Duration::from_secs(1));
    assert!(p.converged());
    assert_eq!(
        p.nodes[1].history.len(),
        1,
        "intermediate generations are not applied"
    );
    assert_eq!(p.nodes[1].current().map(|g| g.number), Some(3));
}

#[test]
fn a_cut_queues_and_a_heal_catches_up() {
    let mut p = pair();
    p.commit(0, 1);
    p.run_for(Duration::from_millis(200));
    p.cut();
    p.run_for(Duration::from_secs(3));
    p.commit(0, 1);
    let g = p.commit(0, 1);
    assert_eq!(p.nodes[0].core.status().queued, vec![2, 3]);
    p.heal();
    p.run_for(Duration::from_millis(500));
    assert_eq!(p.nodes[1].current(), Some(g));
    assert!(p.nodes[0].core.status().queued.is_empty());
}

#[test]
fn independent_commits_diverge_without_overwrite_until_resolved() {
    let mut p = pair();
    p.commit(0, 1);
    p.run_for(Duration::from_millis(200));
    p.cut();
    p.run_for(Duration::from_secs(3));
    let a = p.commit(0, 1);
    let b = p.commit(1, 1);
    p.heal();
    p.run_for(Duration::from_secs(1));
    for (i, mine) in [(0, &a), (1, &b)] {
        let st = p.nodes[i].core.status();
        assert_eq!(st.relation, Relation::Diverged, "node {i}");
        assert_eq!(
            p.nodes[i].current().as_ref(),
            Some(mine),
            "node {i} kept its own"
        );
        assert!(
            st.peer_head.is_some(),
            "node {i} has the peer's text for the diff"
        );
    }
    // The operator on lb2 takes lb1's side.
    assert!(p.resolve(1, false));
    p.run_for(Duration::from_secs(1));
    assert!(p.converged());
    let cur = p.nodes[0].current().unwrap();
    assert_eq!(cur.fingerprint, a.fingerprint);
    assert_eq!(cur.number, 3);
    assert_eq!(p.nodes[0].core.status().relation, Relation::InSync);
    // lb2 keeps its divergent generation in history.
    assert!(p.nodes[1].history.iter().any(|g| g.generation == b));
}

#[test]
fn use_local_resolution_wins_on_the_peer() {
    let mut p = pair();
    p.cut();
    p.run_for(Duration::from_secs(3));
    p.commit(0, 1);
    let b = p.commit(1, 1);
    p.heal();
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.nodes[0].core.status().relation, Relation::Diverged);
    assert!(p.resolve(1, true));
    p.run_for(Duration::from_secs(1));
    assert!(p.converged());
    assert_eq!(p.nodes[0].current().unwrap().fingerprint, b.fingerprint);
}

#[test]
fn a_newer_schema_is_refused_by_older_firmware() {
    let mut p = Pair::new(Instant::now(), [2, 1]);
    p.run_for(Duration::from_millis(300));
    let g1 = p.commit(0, 1);
    p.run_for(Duration::from_millis(200));
    assert_eq!(p.nodes[1].current(), Some(g1.clone()));
    p.commit(0, 2);
    p.run_for(Duration::from_secs(1));
    assert_eq!(
        p.nodes[1].current(),
        Some(g1),
        "lb2 keeps its configuration"
    );
    match p.nodes[0].core.status().relation {
        Relation::Blocked { kind, reason } => {
            assert_eq!(kind, RefusalKind::Schema);
            assert!(
                reason.contains("config schema v2 needs newer firmware"),
                "{reason}"
            );
            assert!(reason.contains("lb2 runs firmware 0.1.0"), "{reason}");
        }
        other => panic!("expected blocked, got {other:?}"),
    }
    // A later schema-1 commit goes through again.
    let g3 = p.commit(0, 1);
    p.run_for(Duration::from_millis(300));
    assert_eq!(p.nodes[1].current(), Some(g3));
}

#[test]
fn a_dead_peer_is_noticed_and_the_link_returns() {
    let mut p = pair();
    p.cut();
    p.run_for(crate::core::PEER_DEAD + Duration::from_millis(600));
    assert_eq!(p.nodes[0].core.status().link, LinkState::Down);
    assert_eq!(p.nodes[1].core.status().link, LinkState::Down);
    p.heal();
    p.run_for(Duration::from_millis(300));
    assert_eq!(p.nodes[0].core.status().link, LinkState::Up);
    assert!(p.nodes[0].core.status().counters.closes >= 1);
}
