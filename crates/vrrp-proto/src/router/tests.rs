//! Router unit tests: table-style transitions of RFC 5798 §6 under simulated time.
//!
//! Owns nothing but tests; drives [`Router`] only through its public API.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::counters::InvalidReason;

const A: &str = "198.18.0.11";
const B: &str = "198.18.0.12";
const VIP: &str = "198.18.0.100";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Instant {
    Instant::from_nanos(n * 1_000_000)
}

fn cfg(primary: &str, priority: u8) -> Config {
    let mut c = Config::new(51, ip(primary), vec![ip(VIP)]);
    c.priority = priority;
    c
}

fn started(c: Config, now: Instant) -> Router {
    let mut r = Router::new(c, now).unwrap();
    r.handle_command(now, Command::Startup).unwrap();
    r
}

/// Drains outputs into short labels, e.g. `state Initialize->Master AddressOwner`, `tx 255`.
fn drain(r: &mut Router) -> Vec<String> {
    std::iter::from_fn(|| r.poll_output())
        .map(|o| match o {
            Output::StateChanged { from, to, reason } => {
                format!("state {from:?}->{to:?} {reason:?}")
            }
            Output::Transmit(t) => {
                assert_eq!(t.ttl, 255);
                assert_eq!(
                    Advertisement::decode(&t.payload, t.src, t.dst).as_ref(),
                    Ok(&t.advert)
                );
                format!("tx {}", t.advert.priority)
            }
            Output::AddVips { .. } => "add".into(),
            Output::RemoveVips { .. } => "remove".into(),
            Output::SendGratuitous { .. } => "garp".into(),
        })
        .collect()
}

fn advert(src: &str, priority: u8, interval_cs: u16) -> (RxMeta, Vec<u8>) {
    let meta = RxMeta {
        src: ip(src),
        dst: ip("224.0.0.18"),
        ttl: 255,
    };
    let bytes = Advertisement {
        vrid: 51,
        priority,
        max_adver_int_cs: interval_cs,
        addresses: vec![ip(VIP)],
    }
    .encode(meta.src, meta.dst)
    .unwrap();
    (meta, bytes)
}

fn receive(r: &mut Router, now: Instant, src: &str, priority: u8) -> Vec<String> {
    let (meta, bytes) = advert(src, priority, 100);
    assert_eq!(
        r.handle_packet(now, &meta, &bytes),
        Ok(RxDisposition::Processed)
    );
    drain(r)
}

/// A backup learned from `master_prio` at `now` (1 s interval).
fn backup(local: &str, prio: u8, master: &str, master_prio: u8) -> Router {
    let mut r = started(cfg(local, prio), ms(0));
    drain(&mut r);
    receive(&mut r, ms(0), master, master_prio);
    assert_eq!(r.state(), State::Backup);
    r
}

/// A router that became master by Master_Down_Timer expiry; returns it and the current time.
fn master(local: &str, prio: u8) -> (Router, Instant) {
    let mut r = started(cfg(local, prio), ms(0));
    let at = r.poll_timeout().unwrap();
    r.handle_timeout(at);
    assert_eq!(r.state(), State::Master);
    drain(&mut r);
    (r, at)
}

#[test]
fn startup_as_owner_goes_master_at_once() {
    let mut r = started(cfg(A, 255), ms(5));
    assert_eq!(
        drain(&mut r),
        [
            "state Initialize->Master AddressOwner",
            "tx 255",
            "add",
            "garp"
        ]
    );
    assert_eq!(r.poll_timeout(), Some(ms(1005)));
    assert!(r.is_owner() && r.accepts_vip_traffic());
    // The owner discards every advert (RFC 5798 §7.1), even a priority 0 one.
    let (meta, bytes) = advert(B, 0, 100);
    assert!(matches!(
        r.handle_packet(ms(6), &meta, &bytes),
        Err(RxError::LocalIsOwner { vrid: 51, .. })
    ));
    assert_eq!(r.counters().invalid(InvalidReason::LocalIsOwner), 1);
    assert_eq!(drain(&mut r), Vec::<String>::new());
}

#[test]
fn startup_as_backup_then_master_after_master_down_interval() {
    let mut r = started(cfg(B, 100), ms(0));
    assert_eq!(drain(&mut r), ["state Initialize->Backup Startup"]);
    // 3 × 1 s + (256 − 100) × 1 s / 256 = 3.609375 s.
    assert_eq!(r.master_down_interval(), Duration::from_micros(3_609_375));
    assert_eq!(r.skew_time(), Duration::from_micros(609_375));
    let down = Instant::from_nanos(3_609_375_000);
    assert_eq!(r.poll_timeout(), Some(down));
    r.handle_timeout(Instant::from_nanos(3_609_374_999));
    assert_eq!((r.state(), drain(&mut r).len()), (State::Backup, 0));
    r.handle_timeout(down);
    assert_eq!(
        drain(&mut r),
        ["state Backup->Master MasterDown", "tx 100", "add", "garp"]
    );
    assert!(!r.accepts_vip_traffic(), "non-owner without accept mode");
    // Adver_Timer: one advert per interval.
    assert_eq!(r.poll_timeout(), Some(down + Duration::from_secs(1)));
    r.handle_timeout(down + Duration::from_secs(1));
    assert_eq!(drain(&mut r), ["tx 100"]);
    assert_eq!(r.counters().adverts_sent, 2);
    assert_eq!(r.counters().became_master, 1);
}

#[test]
fn backup_learns_master_adver_interval() {
    let mut r = started(cfg(B, 100), ms(0));
    let (meta, bytes) = advert(A, 150, 10);
    r.handle_packet(ms(100), &meta, &bytes).unwrap();
    assert_eq!(r.master_adver_interval(), Duration::from_millis(100));
    // 3 × 100 ms + 156 × 100 ms / 256 = 360.9375 ms.
    assert_eq!(
        r.poll_timeout(),
        Some(ms(100) + Duration::from_micros(360_937) + Duration::from_nanos(500))
    );
    assert_eq!(r.master_address(), Some(ip(A)));
}

#[test]
fn backup_advert_handling_table() {
    // (preempt, local priority, advert priority, advert accepted = timer reset)
    let table = [
        (true, 100, 150, true),
        (true, 100, 100, true),
        (true, 100, 99, false),
        (false, 100, 99, true),
        (false, 100, 1, true),
        (false, 200, 150, true),
        (true, 200, 150, false),
    ];
    for (preempt, local, theirs, accepted) in table {
        let mut c = cfg(B, local);
        c.preempt = preempt;
        let mut r = started(c, ms(0));
        let before = r.poll_timeout().unwrap();
        receive(&mut r, ms(1000), A, theirs);
        let reset = r.poll_timeout().unwrap() != before;
        assert_eq!(
            reset, accepted,
            "preempt={preempt} local={local} advert={theirs}"
        );
        assert_eq!(r.state(), State::Backup);
    }
}

#[test]
fn backup_priority_zero_sets_master_down_timer_to_skew_time() {
    for preempt in [true, false] {
        let mut c = cfg(B, 100);
        c.preempt = preempt;
        let mut r = started(c, ms(0));
        receive(&mut r, ms(500), A, 150);
        assert_eq!(receive(&mut r, ms(1000), A, 0), Vec::<String>::new());
        assert_eq!(
            r.poll_timeout(),
            Some(ms(1000) + Duration::from_micros(609_375))
        );
        assert_eq!(r.counters().priority_zero_received, 1);
        r.handle_timeout(r.poll_timeout().unwrap());
        assert_eq!(
            drain(&mut r),
            ["state Backup->Master MasterDown", "tx 100", "add", "garp"]
        );
    }
}

#[test]
fn master_priority_zero_sends_advert_immediately() {
    let (mut r, at) = master(A, 150);
    let now = at + Duration::from_millis(300);
    assert_eq!(receive(&mut r, now, B, 0), ["tx 150"]);
    assert_eq!(
        r.poll_timeout(),
        Some(now + Duration::from_secs(1)),
        "Adver_Timer reset"
    );
    assert_eq!(r.state(), State::Master);
}

#[test]
fn master_yield_table() {
    // (local primary, local priority, sender, sender priority, yields)
    let table = [
        (A, 150, B, 151, true),
        (A, 150, B, 150, true), // equal priority, 198.18.0.12 > 198.18.0.11
        (B, 150, A, 150, false),
        (A, 150, B, 149, false),
        (A, 254, B, 255, true),
    ];
    for (local, prio, sender, theirs, yields) in table {
        let (mut r, at) = master(local, prio);
        let (meta, bytes) = advert(sender, theirs, 50);
        r.handle_packet(at, &meta, &bytes).unwrap();
        let out = drain(&mut r);
        if yields {
            let reason =
                format!("state Master->Backup Preempted {{ by: {sender}, priority: {theirs} }}");
            assert_eq!(out, [reason.as_str(), "remove"]);
            assert_eq!(
                r.master_adver_interval(),
                Duration::from_millis(500),
                "learned from the advert"
            );
            assert_eq!(r.poll_timeout(), Some(at + r.master_down_interval()));
        } else {
            assert_eq!(
                out,
                Vec::<String>::new(),
                "{local} {prio} vs {sender} {theirs}"
            );
            assert_eq!(r.state(), State::Master);
        }
    }
}

#[test]
fn preempt_delay_lets_a_lower_master_keep_the_role_for_a_while() {
    let mut c = cfg(A, 200);
    c.preempt_delay = Duration::from_secs(10);
    let mut r = started(c, ms(0));
    // A lower-priority master advertises every second: accepted during the delay.
    let mut now = ms(0);
    while now < ms(10_000) {
        receive(&mut r, now, B, 100);
        assert_eq!(
            r.poll_timeout(),
            Some(now + r.master_down_interval()),
            "accepted at {now:?}"
        );
        now = now + Duration::from_secs(1);
    }
    let last_accepted = ms(9_000);
    // After the delay, its adverts are discarded, so Master_Down_Timer runs out.
    for _ in 0..3 {
        receive(&mut r, now, B, 100);
        assert_eq!(
            r.poll_timeout(),
            Some(last_accepted + r.master_down_interval())
        );
        now = now + Duration::from_secs(1);
    }
    r.handle_timeout(last_accepted + r.master_down_interval());
    assert_eq!(r.state(), State::Master);
}

#[test]
fn switchover_hands_over_and_holds_off_preemption() {
    let mut c = cfg(A, 200);
    c.switchover_hold = Duration::from_secs(30);
    let mut r = started(c, ms(0));
    r.handle_timeout(r.poll_timeout().unwrap());
    drain(&mut r);
    let now = ms(5_000);
    r.handle_command(now, Command::Switchover).unwrap();
    assert_eq!(
        drain(&mut r),
        ["state Master->Backup Switchover", "tx 0", "remove"]
    );
    assert_eq!(r.counters().priority_zero_sent, 1);
    // The peer (priority 100) takes over; during the hold its adverts are accepted.
    let mut t = now + Duration::from_millis(610);
    while t < now + Duration::from_secs(30) {
        receive(&mut r, t, B, 100);
        assert_eq!(r.poll_timeout(), Some(t + r.master_down_interval()));
        t = t + Duration::from_secs(1);
    }
    // After the hold, preempt applies again: lower adverts are discarded and we retake.
    let retake = r.poll_timeout().unwrap();
    receive(&mut r, t, B, 100);
    assert_eq!(
        r.poll_timeout(),
        Some(retake),
        "timer not reset by a lower-priority advert after the hold"
    );
    r.handle_timeout(retake);
    assert_eq!(r.state(), State::Master);
    // Switchover only applies to a master.
    let err = r
        .handle_command(retake, Command::Shutdown)
        .and_then(|_| r.handle_command(retake, Command::Switchover));
    assert!(matches!(
        err,
        Err(CommandError::NotApplicable {
            command: Command::Switchover,
            state: State::Initialize,
            ..
        })
    ));
}

#[test]
fn switchover_without_a_peer_retakes_after_master_down_interval() {
    let (mut r, at) = master(A, 200);
    r.handle_command(at, Command::Switchover).unwrap();
    drain(&mut r);
    assert_eq!(r.poll_timeout(), Some(at + r.master_down_interval()));
    r.handle_timeout(at + r.master_down_interval());
    assert_eq!(
        drain(&mut r),
        ["state Backup->Master MasterDown", "tx 200", "add", "garp"]
    );
}

#[test]
fn shutdown_resigns_with_priority_zero() {
    let (mut r, at) = master(A, 150);
    r.handle_command(at, Command::Shutdown).unwrap();
    assert_eq!(
        drain(&mut r),
        ["state Master->Initialize Shutdown", "tx 0", "remove"]
    );
    assert_eq!((r.poll_timeout(), r.vips_requested()), (None, false));
    // A backup shuts down silently.
    let mut b = backup(B, 100, A, 150);
    b.handle_command(ms(1), Command::Shutdown).unwrap();
    assert_eq!(drain(&mut b), ["state Backup->Initialize Shutdown"]);
    assert_eq!(b.poll_timeout(), None);
    // Packets while down are counted, not processed; restart works.
    let (meta, bytes) = advert(A, 150, 100);
    assert_eq!(
        b.handle_packet(ms(2), &meta, &bytes),
        Ok(RxDisposition::NotRunning)
    );
    b.handle_command(ms(3), Command::Startup).unwrap();
    assert_eq!(drain(&mut b), ["state Initialize->Backup Startup"]);
}

#[test]
fn link_down_and_up() {
    let (mut r, at) = master(A, 150);
    r.handle_command(at, Command::LinkDown).unwrap();
    assert_eq!(drain(&mut r), ["state Master->Fault LinkDown", "remove"]);
    assert_eq!(r.poll_timeout(), None);
    assert!(r.handle_command(at, Command::LinkDown).is_err());
    r.handle_command(at, Command::LinkUp).unwrap();
    assert_eq!(drain(&mut r), ["state Fault->Backup LinkUp"]);
    // Startup while the link is down goes to Fault, then LinkUp starts.
    let mut s = Router::new(cfg(B, 100), ms(0)).unwrap();
    s.handle_command(ms(0), Command::LinkDown).unwrap();
    s.handle_command(ms(1), Command::Startup).unwrap();
    assert_eq!(drain(&mut s), ["state Initialize->Fault LinkDown"]);
    s.handle_command(ms(2), Command::LinkUp).unwrap();
    assert_eq!(drain(&mut s), ["state Fault->Backup LinkUp"]);
    // An owner comes back straight to Master.
    let mut o = started(cfg(A, 255), ms(0));
    o.handle_command(ms(1), Command::LinkDown).unwrap();
    o.handle_command(ms(2), Command::LinkUp).unwrap();
    assert_eq!(
        drain(&mut o),
        [
            "state Initialize->Master AddressOwner",
            "tx 255",
            "add",
            "garp",
            "state Master->Fault LinkDown",
            "remove",
            "state Fault->Master LinkUp",
            "tx 255",
            "add",
            "garp"
        ]
    );
}

#[test]
fn priority_and_tracking() {
    let (mut r, at) = master(A, 150);
    r.handle_command(at, Command::SetTrackPenalty(60)).unwrap();
    assert_eq!(r.effective_priority(), 90);
    let at = r.poll_timeout().unwrap();
    r.handle_timeout(at);
    assert_eq!(drain(&mut r), ["tx 90"]);
    r.handle_command(at, Command::SetTrackPenalty(200)).unwrap();
    assert_eq!(r.effective_priority(), 1, "clamped to 1");
    r.handle_command(at, Command::SetTrackPenalty(0)).unwrap();
    r.handle_command(at, Command::SetPriority(120)).unwrap();
    assert_eq!(r.effective_priority(), 120);
    assert!(matches!(
        r.handle_command(at, Command::SetPriority(0)),
        Err(CommandError::Priority { vrid: 51 })
    ));
    assert_eq!(r.counters().commands_ignored, 1);
    // An owner with a failed track is no longer the owner.
    let mut o = Router::new(cfg(A, 255), ms(0)).unwrap();
    o.handle_command(ms(0), Command::SetTrackPenalty(10))
        .unwrap();
    assert_eq!((o.effective_priority(), o.is_owner()), (245, false));
    o.handle_command(ms(0), Command::SetTrackPenalty(1))
        .unwrap();
    assert_eq!(o.effective_priority(), 254);
    o.handle_command(ms(0), Command::Startup).unwrap();
    assert_eq!(o.state(), State::Backup);
}

#[test]
fn counters_track_rx_outcomes() {
    let mut r = backup(B, 100, A, 150);
    let (meta, mut bytes) = advert(A, 150, 100);
    bytes[7] ^= 1;
    assert!(r.handle_packet(ms(1), &meta, &bytes).is_err());
    assert!(
        r.handle_packet(ms(1), &RxMeta { ttl: 64, ..meta }, &advert(A, 150, 100).1)
            .is_err()
    );
    assert!(r.handle_packet(ms(1), &meta, &[]).is_err());
    let (own, own_bytes) = advert(B, 100, 100);
    assert_eq!(
        r.handle_packet(ms(1), &own, &own_bytes),
        Ok(RxDisposition::Looped)
    );
    let mut other = advert(A, 150, 100).1;
    other[1] = 52;
    assert_eq!(
        r.handle_packet(ms(1), &meta, &other),
        Ok(RxDisposition::OtherVrid { vrid: 52 })
    );
    let mismatched = Advertisement {
        vrid: 51,
        priority: 150,
        max_adver_int_cs: 100,
        addresses: vec![ip("198.18.0.200")],
    }
    .encode(meta.src, meta.dst)
    .unwrap();
    assert_eq!(
        r.handle_packet(ms(1), &meta, &mismatched),
        Ok(RxDisposition::Processed)
    );
    let c = r.counters();
    assert_eq!(
        (
            c.invalid(InvalidReason::Checksum),
            c.invalid(InvalidReason::Ttl),
            c.invalid(InvalidReason::TooShort)
        ),
        (1, 1, 1)
    );
    assert_eq!(
        (
            c.own_looped,
            c.other_vrid,
            c.address_list_mismatch,
            c.adverts_received
        ),
        (1, 1, 1, 2)
    );
    assert_eq!((c.transitions, c.became_backup), (1, 1));
}

#[test]
fn late_timer_after_a_clock_jump_sends_one_advert() {
    let (mut r, at) = master(A, 150);
    let late = at + Duration::from_secs(3600);
    r.handle_timeout(late);
    assert_eq!(drain(&mut r), ["tx 150"]);
    assert_eq!(r.poll_timeout(), Some(late + Duration::from_secs(1)));
}

#[test]
fn unicast_sends_one_advert_per_peer() {
    let mut c = cfg(A, 255);
    c.unicast_peers = vec![ip(B), ip("198.18.0.13")];
    let mut r = started(c, ms(0));
    let dsts: Vec<IpAddr> = std::iter::from_fn(|| r.poll_output())
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t.dst),
            _ => None,
        })
        .collect();
    assert_eq!(dsts, [ip(B), ip("198.18.0.13")]);
    assert_eq!(r.counters().adverts_sent, 2);
}

#[test]
fn accept_mode_is_exposed_for_the_shell() {
    let mut c = cfg(A, 150);
    c.accept_mode = true;
    let mut r = started(c, ms(0));
    assert!(!r.accepts_vip_traffic(), "backup never accepts");
    r.handle_timeout(r.poll_timeout().unwrap());
    assert!(r.accepts_vip_traffic());
}

#[test]
fn ipv6_router_round_trip() {
    let vip: IpAddr = "fe80::100".parse().unwrap();
    let mut c = Config::new(
        7,
        "fe80::1".parse().unwrap(),
        vec![vip, "2001:db8::100".parse().unwrap()],
    );
    c.priority = 255;
    let mut r = started(c, ms(0));
    let tx = std::iter::from_fn(|| r.poll_output())
        .find_map(|o| {
            if let Output::Transmit(t) = o {
                Some(t)
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(tx.dst, IpAddr::V6(crate::VRRP_GROUP_V6));
    assert_eq!(tx.payload.len(), 8 + 2 * 16);
    // A non-owner IPv6 backup accepts it.
    let mut b = Config::new(7, "fe80::2".parse().unwrap(), tx.advert.addresses.clone());
    b.priority = 100;
    let mut b = started(b, ms(0));
    let meta = RxMeta {
        src: tx.src,
        dst: tx.dst,
        ttl: 255,
    };
    assert_eq!(
        b.handle_packet(ms(1), &meta, &tx.payload),
        Ok(RxDisposition::Processed)
    );
    assert_eq!(b.master_address(), Some(tx.src));
}

#[test]
fn hold_backup_makes_a_master_resign_and_stay_backup_until_it_ends() {
    let (mut r, t) = master(A, 100);
    let until = t + Duration::from_secs(10);
    r.handle_command(t, Command::HoldBackup { until }).unwrap();
    assert_eq!(
        drain(&mut r),
        ["state Master->Backup Hold", "tx 0", "remove"]
    );
    assert_eq!(r.hold_until(), Some(until));
    // No adverts: the Master_Down_Timer fires and is re-armed at the end of the hold.
    let down = r.poll_timeout().unwrap();
    assert!(down < until);
    r.handle_timeout(down);
    assert_eq!(r.state(), State::Backup);
    assert_eq!(drain(&mut r), Vec::<String>::new());
    assert_eq!(r.poll_timeout(), Some(until));
    // Refresh: a later hold moves the take-over further out.
    let later = until + Duration::from_secs(5);
    r.handle_command(down, Command::HoldBackup { until: later })
        .unwrap();
    r.handle_timeout(until);
    assert_eq!(r.state(), State::Backup);
    assert_eq!(r.poll_timeout(), Some(later));
    // When the hold ends with no adverts heard, it is a plain backup whose timer expired.
    r.handle_timeout(later);
    assert_eq!(r.state(), State::Master);
    assert_eq!(
        drain(&mut r),
        ["state Backup->Master MasterDown", "tx 100", "add", "garp"]
    );
}

#[test]
fn a_held_backup_follows_adverts_and_release_pulls_the_timer_in() {
    let mut r = backup(B, 200, A, 100);
    let now = ms(100);
    r.handle_command(now, Command::HoldBackup { until: ms(60_000) })
        .unwrap();
    assert_eq!(drain(&mut r), Vec::<String>::new(), "a backup just stays");
    // Preempting and higher priority: the lower master's adverts are discarded, yet the hold
    // keeps it from taking over.
    receive(&mut r, ms(200), A, 100);
    let down = r.poll_timeout().unwrap();
    r.handle_timeout(down);
    assert_eq!(r.state(), State::Backup);
    assert_eq!(r.poll_timeout(), Some(ms(60_000)));
    // Release: back to a plain preempting backup, take-over within one Master_Down_Interval.
    let at = down + Duration::from_millis(1);
    r.handle_command(at, Command::ReleaseHold).unwrap();
    assert_eq!(r.hold_until(), None);
    assert_eq!(r.poll_timeout(), Some(at + r.master_down_interval()));
    assert!(matches!(
        r.handle_command(at, Command::ReleaseHold),
        Err(CommandError::NotApplicable { .. })
    ));
    r.handle_timeout(at + r.master_down_interval());
    assert_eq!(r.state(), State::Master);
}

#[test]
fn hold_is_refused_in_initialize_and_for_an_owner_and_ends_at_shutdown() {
    let mut r = Router::new(cfg(A, 100), ms(0)).unwrap();
    assert!(matches!(
        r.handle_command(ms(0), Command::HoldBackup { until: ms(10) }),
        Err(CommandError::NotApplicable { .. })
    ));
    let mut owner = started(cfg(A, 255), ms(0));
    drain(&mut owner);
    assert!(matches!(
        owner.handle_command(ms(1), Command::HoldBackup { until: ms(10_000) }),
        Err(CommandError::NotApplicable { .. })
    ));
    assert_eq!(owner.state(), State::Master);
    let mut b = started(cfg(B, 100), ms(0));
    b.handle_command(ms(1), Command::HoldBackup { until: ms(10_000) })
        .unwrap();
    b.handle_command(ms(2), Command::Shutdown).unwrap();
    assert_eq!(b.hold_until(), None);
}

#[test]
fn resume_master_goes_master_at_once_with_an_advert() {
    let mut r = Router::new(cfg(B, 100), ms(7)).unwrap();
    r.handle_command(ms(7), Command::ResumeMaster).unwrap();
    assert_eq!(
        drain(&mut r),
        ["state Initialize->Master Resumed", "tx 100", "add", "garp"]
    );
    assert_eq!(r.poll_timeout(), Some(ms(1007)));
    assert!(matches!(
        r.handle_command(ms(8), Command::ResumeMaster),
        Err(CommandError::NotApplicable { .. })
    ));
    // A better master that took over meanwhile wins as usual.
    receive(&mut r, ms(9), A, 200);
    assert_eq!(r.state(), State::Backup);
    // Link down at resume: Fault, like Startup.
    let mut f = Router::new(cfg(B, 100), ms(0)).unwrap();
    f.handle_command(ms(0), Command::LinkDown).unwrap();
    f.handle_command(ms(1), Command::ResumeMaster).unwrap();
    assert_eq!(f.state(), State::Fault);
    assert!(!f.vips_requested());
}
