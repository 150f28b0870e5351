//! Two-router scenarios on the pair harness (`tests/common`): election, partition, failover,
//! preemption after a link flap, switchover, shutdown, under virtual time.
//!
//! Owns only these scenarios; touches nothing but the crate's public API.

mod common;

use std::time::Duration;

use common::{A, B, Pair, node_config, subscribe};
use tandem_vrrp_proto::{Command, Reason, State};

fn pair(prio_a: u8, prio_b: u8, preempt: bool) -> Pair {
    subscribe();
    let mut p = Pair::new(
        node_config(1, prio_a, preempt),
        node_config(2, prio_b, preempt),
        1,
    );
    p.start();
    p.drive_for(Duration::from_secs(10));
    p
}

/// Time at which node `i` last entered `to`.
fn entered(p: &Pair, i: usize, to: State) -> tandem_vrrp_proto::Instant {
    p.nodes[i]
        .transitions
        .iter()
        .rev()
        .find(|t| t.2 == to)
        .map(|t| t.0)
        .expect("transition happened")
}

#[test]
fn higher_priority_wins_the_election() {
    let p = pair(200, 100, true);
    assert_eq!(p.masters(), [A]);
    assert_eq!(p.nodes[B].state(), Some(State::Backup));
    assert_eq!((p.nodes[A].add_vips, p.nodes[B].add_vips), (1, 0));
    // Both start as Backup; A's shorter Master_Down_Interval (skew) makes it master first.
    assert_eq!(p.nodes[A].transitions[1].3, Reason::MasterDown);
    assert_eq!(
        p.nodes[B].router().master_address(),
        Some(p.nodes[A].config.primary_address)
    );
}

#[test]
fn equal_priority_tie_breaks_on_primary_address() {
    // Both time out together and both become master; the lower address yields.
    let p = pair(150, 150, false);
    assert_eq!(p.masters(), [B], "10.0.0.2 > 10.0.0.1");
    assert_eq!(
        p.nodes[A].router().master_address(),
        Some(p.nodes[B].config.primary_address)
    );
}

#[test]
fn cut_a_to_b_makes_b_master_within_master_down_interval_then_heals() {
    let mut p = pair(200, 100, true);
    let mdi = p.nodes[B].router().master_down_interval();
    let latency = p.wires[A].latency;
    let cut_at = p.time;
    p.wires[A].cut = true;
    p.drive_for(mdi + Duration::from_secs(1));
    assert_eq!(p.nodes[B].state(), Some(State::Master));
    let took_over = entered(&p, B, State::Master);
    // B's timer was last reset by an advert received at most one interval before the cut.
    assert!(
        took_over - cut_at <= mdi + latency,
        "took {:?}, mdi {mdi:?}",
        took_over - cut_at
    );
    assert!(took_over - cut_at >= mdi - Duration::from_secs(1));
    assert_eq!(p.nodes[B].add_vips, 1, "exactly one AddVips on B");
    // A still hears B's lower-priority adverts and stays master: a one-way cut is split brain.
    assert_eq!(p.masters(), [A, B]);
    // Heal: B hears A's higher priority and yields, whatever the preempt setting.
    p.wires[A].cut = false;
    p.drive_for(Duration::from_secs(2));
    assert_eq!(p.masters(), [A]);
    assert_eq!((p.nodes[B].add_vips, p.nodes[B].remove_vips), (1, 1));
}

#[test]
fn split_brain_heals_to_the_higher_priority_even_without_preempt() {
    let mut p = pair(200, 100, false);
    p.wires[A].cut = true;
    p.wires[B].cut = true;
    p.drive_for(Duration::from_secs(10));
    assert_eq!(p.masters(), [A, B]);
    p.wires[A].cut = false;
    p.wires[B].cut = false;
    p.drive_for(Duration::from_secs(2));
    assert_eq!(p.masters(), [A]);
}

/// A loses its link, B takes over, A's link comes back: preempt decides who ends up master.
fn link_flap(preempt: bool) -> Pair {
    let mut p = pair(200, 100, preempt);
    p.set_link(A, false);
    assert_eq!(p.nodes[A].state(), Some(State::Fault));
    p.drive_for(Duration::from_secs(10));
    assert_eq!(p.masters(), [B]);
    p.set_link(A, true);
    p.drive_for(Duration::from_secs(10));
    p
}

#[test]
fn with_preempt_a_takes_back_after_link_heals() {
    let p = link_flap(true);
    assert_eq!(p.masters(), [A]);
    assert_eq!(p.nodes[A].add_vips, 2);
    // A preempted by letting its Master_Down_Timer run out while ignoring B's adverts.
    assert_eq!(p.nodes[A].transitions.last().unwrap().3, Reason::MasterDown);
}

#[test]
fn without_preempt_b_stays_master_after_link_heals() {
    let p = link_flap(false);
    assert_eq!(p.masters(), [B]);
    assert_eq!(p.nodes[A].state(), Some(State::Backup));
    assert_eq!(p.nodes[B].add_vips, 1);
}

#[test]
fn shutdown_hands_over_after_skew_time() {
    let mut p = pair(200, 100, true);
    let skew = p.nodes[B].router().skew_time();
    let at = p.time;
    p.command(A, Command::Shutdown);
    assert_eq!(p.nodes[A].state(), Some(State::Initialize));
    assert!(!p.nodes[A].vips);
    p.drive_for(Duration::from_secs(2));
    assert_eq!(p.masters(), [B]);
    // Priority 0 makes B's Master_Down_Timer Skew_Time instead of Master_Down_Interval.
    assert_eq!(
        entered(&p, B, State::Master) - at,
        skew + p.wires[A].latency
    );
}

#[test]
fn crash_fails_over_after_master_down_interval() {
    let mut p = pair(200, 100, true);
    let mdi = p.nodes[B].router().master_down_interval();
    let at = p.time;
    p.crash(A);
    p.drive_for(Duration::from_secs(10));
    assert_eq!(p.masters(), [B]);
    let took = entered(&p, B, State::Master) - at;
    assert!(
        took <= mdi && took > mdi - Duration::from_secs(1),
        "took {took:?}"
    );
}

#[test]
fn switchover_hands_over_and_is_held_then_preempted_back() {
    let mut p = pair(200, 100, true);
    let hold = p.nodes[A].config.switchover_hold;
    let at = p.time;
    p.command(A, Command::Switchover);
    p.drive_for(Duration::from_secs(2));
    assert_eq!(p.masters(), [B]);
    assert_eq!(
        entered(&p, B, State::Master) - at,
        p.nodes[B].router().skew_time() + p.wires[A].latency
    );
    // During the hold A accepts the lower-priority master.
    p.drive_for(hold - Duration::from_secs(3));
    assert_eq!(p.masters(), [B]);
    // After the hold, A preempts within one Master_Down_Interval.
    let mdi = p.nodes[A].router().master_down_interval();
    p.drive_for(Duration::from_secs(2) + mdi + Duration::from_secs(1));
    assert_eq!(p.masters(), [A]);
    assert_eq!((p.nodes[A].add_vips, p.nodes[B].add_vips), (2, 1));
}

#[test]
fn switchover_without_preempt_is_permanent() {
    let mut p = pair(200, 100, false);
    p.command(A, Command::Switchover);
    p.drive_for(Duration::from_secs(300));
    assert_eq!(p.masters(), [B]);
}

#[test]
fn priority_drop_below_backup_triggers_preemption() {
    let mut p = pair(200, 100, true);
    p.command(A, Command::SetTrackPenalty(150));
    assert_eq!(p.nodes[A].router().effective_priority(), 50);
    p.drive_for(Duration::from_secs(10));
    assert_eq!(p.masters(), [B]);
    p.command(A, Command::SetTrackPenalty(0));
    p.drive_for(Duration::from_secs(10));
    assert_eq!(p.masters(), [A]);
}
