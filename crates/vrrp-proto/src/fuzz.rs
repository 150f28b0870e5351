//! Fuzzing entry point of the VRRP receive path (`cargo xtask fuzz`, see docs/testing.md):
//! arbitrary bytes as a received packet, through the codec, the RFC 5798 §7.1 checks and a
//! running [`Router`], with the invariants that must hold for any input.
//!
//! Owns: [`advertisement`], its input layout, and the test replaying the checked-in corpus
//! (`fuzz/corpus/vrrp/`) on every `cargo test`.
//! Must not change behaviour: nothing here is called by the daemon.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::codec::{Advertisement, MAX_ADVER_INT_CS, checksum};
use crate::{Command, Config, Instant, Output, Received, Router, RxMeta, validate};

/// Input flag: the packet came over IPv6 (else IPv4).
pub const FLAG_V6: u8 = 1;
/// Input flag: overwrite the checksum field with the right checksum before receiving, so
/// mutations reach the checks behind it.
pub const FLAG_FIX_CHECKSUM: u8 = 2;
/// Input flag: the IP destination follows the source in the input (else the VRRP group).
pub const FLAG_DESTINATION: u8 = 4;
/// Input bits 3 and 4 choose the receiving router's configuration: a preempting backup of
/// priority 100, the address owner, a non-preempting backup that drops adverts with another
/// address list, or a backup in unicast mode with one peer.
pub const ROUTER_SHIFT: u8 = 3;

/// The VRID of the receiving router.
pub const VRID: u8 = 51;

/// Reads the fuzz input layout: flags, TTL, the IP source (4 or 16 bytes), the IP destination
/// when [`FLAG_DESTINATION`] is set, then the VRRP message; missing address bytes are zero.
/// Returns the flags, the metadata and the message.
pub fn split_input(data: &[u8]) -> (u8, RxMeta, Vec<u8>) {
    let flags = data.first().copied().unwrap_or(0);
    let ttl = data.get(1).copied().unwrap_or(0);
    let v6 = flags & FLAG_V6 != 0;
    let mut rest = data.get(2..).unwrap_or_default();
    let addr = |rest: &mut &[u8]| {
        let len = if v6 { 16 } else { 4 };
        let mut b = [0u8; 16];
        let n = rest.len().min(len);
        b[..n].copy_from_slice(&rest[..n]);
        *rest = &rest[n..];
        if v6 {
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    };
    let src = addr(&mut rest);
    let dst = if flags & FLAG_DESTINATION != 0 {
        addr(&mut rest)
    } else if v6 {
        IpAddr::V6(crate::VRRP_GROUP_V6)
    } else {
        IpAddr::V4(crate::VRRP_GROUP_V4)
    };
    let mut message = rest.to_vec();
    if flags & FLAG_FIX_CHECKSUM != 0 && message.len() >= 8 {
        let sum = checksum(src, dst, &message);
        message[6..8].copy_from_slice(&sum.to_be_bytes());
    }
    (flags, RxMeta { src, dst, ttl }, message)
}

/// The receiving router's configuration chosen by `flags` (see [`ROUTER_SHIFT`]).
fn router_config(flags: u8) -> Config {
    let (primary, vips, peer) = if flags & FLAG_V6 != 0 {
        (
            IpAddr::V6("fe80::12".parse().expect("literal")),
            vec![
                IpAddr::V6("fe80::100".parse().expect("literal")),
                IpAddr::V6("2001:2::100".parse().expect("literal")),
            ],
            IpAddr::V6("fe80::11".parse().expect("literal")),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 12)),
            vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))],
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)),
        )
    };
    let mut c = Config::new(VRID, primary, vips);
    match (flags >> ROUTER_SHIFT) & 3 {
        0 => {}
        1 => c.priority = 255,
        2 => {
            c.preempt = false;
            c.drop_on_address_mismatch = true;
        }
        _ => c.unicast_peers = vec![peer],
    }
    c
}

/// Runs one received packet, laid out as [`split_input`] reads it, through
/// [`Advertisement::decode`], [`validate`] and a [`Router`] (as a backup just started, and
/// again after its timers ran).
///
/// Invariants: nothing panics (the router checks its own invariants after every input in
/// debug builds); a decoded advert carries the header's VRID, priority and address count,
/// re-encodes to the same bytes (reserved bits cleared) and decodes again to itself;
/// [`validate`] accepts exactly what decodes, for our VRID, and returns the decoded advert;
/// every advert the router sends decodes to what it says it sent, with TTL 255.
pub fn advertisement(data: &[u8]) {
    let (flags, meta, message) = split_input(data);
    let decoded = Advertisement::decode(&message, meta.src, meta.dst);
    match &decoded {
        Ok(ad) => {
            assert_eq!(ad.vrid, message[1]);
            assert_eq!(ad.priority, message[2]);
            assert_eq!(ad.addresses.len(), usize::from(message[3]));
            assert!(
                ad.addresses
                    .iter()
                    .all(|a| a.is_ipv6() == meta.src.is_ipv6())
            );
            assert!((1..=MAX_ADVER_INT_CS).contains(&ad.max_adver_int_cs));
            let encoded = ad
                .encode(meta.src, meta.dst)
                .expect("a decoded advert encodes");
            // The same bytes, but for the reserved bits, which are not kept...
            assert_eq!(encoded[..4], message[..4], "re-encoding changed the bytes");
            assert_eq!(
                encoded[4],
                message[4] & 0x0f,
                "re-encoding changed the bytes"
            );
            assert_eq!(encoded[5], message[5], "re-encoding changed the bytes");
            assert_eq!(encoded[8..], message[8..], "re-encoding changed the bytes");
            // ...and the checksum, equal when they were clear, up to the two forms of
            // one's complement zero (0x0000 and 0xffff verify alike).
            if message[4] >> 4 == 0 {
                let field = u16::from_be_bytes([message[6], message[7]]);
                let ours = u16::from_be_bytes([encoded[6], encoded[7]]);
                assert!(
                    field == ours || (field | ours == 0xffff && field & ours == 0),
                    "re-encoding changed the checksum from {field:#06x} to {ours:#06x}"
                );
            }
            assert_eq!(
                Advertisement::decode(&encoded, meta.src, meta.dst).as_ref(),
                Ok(ad)
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    let config = router_config(flags);
    for local_priority in [config.priority, 100, 255] {
        match validate(&meta, &message, &config, local_priority) {
            Ok(Received::Ours { advert, .. }) => {
                assert_eq!(message[1], VRID);
                assert_eq!(decoded.as_ref(), Ok(&advert), "validate and decode differ");
            }
            Ok(Received::OtherVrid { vrid }) => {
                assert_eq!(Some(&vrid), message.get(1));
                assert_ne!(vrid, VRID);
            }
            Ok(Received::Looped) => assert_eq!(meta.src, config.primary_address),
            Err(e) => {
                let _ = e.reason();
                assert!(!e.to_string().is_empty());
            }
        }
    }

    let start = Instant::from_nanos(1_000_000_000);
    let mut router = Router::new(config, start).expect("the fuzz router config is valid");
    let mut now = start;
    router
        .handle_command(now, Command::Startup)
        .expect("startup applies in Initialize");
    drain(&mut router);
    now = now + Duration::from_millis(10);
    let _ = router.handle_packet(now, &meta, &message);
    drain(&mut router);
    // Let the timers run (a backup may take over, a master advertises), then receive again.
    for _ in 0..4 {
        let Some(at) = router.poll_timeout() else {
            break;
        };
        now = at.max(now);
        router.handle_timeout(now);
        drain(&mut router);
    }
    let _ = router.handle_packet(now, &meta, &message);
    drain(&mut router);
}

/// Drains the router's outputs, checking every advert it asks to send.
fn drain(router: &mut Router) {
    while let Some(out) = router.poll_output() {
        if let Output::Transmit(t) = out {
            assert_eq!(t.ttl, crate::VRRP_TTL);
            assert_eq!(
                Advertisement::decode(&t.payload, t.src, t.dst),
                Ok(t.advert),
                "the router sends an advert that does not decode"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `check` on every file of `fuzz/corpus/<target>/` (at least 10) and of
    /// `fuzz/regressions/<target>/` (the inputs of fixed crashes), naming the file that fails.
    fn replay(target: &str, check: fn(&[u8])) {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let files = |dir: &str| -> Vec<_> {
            let dir = fuzz.join(dir).join(target);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .map(|rd| rd.map(|e| e.expect("corpus entry").path()).collect())
                .unwrap_or_default();
            files.sort();
            files
        };
        let corpus = files("corpus");
        assert!(
            corpus.len() >= 10,
            "fuzz/corpus/{target}: {} files",
            corpus.len()
        );
        for file in corpus.iter().chain(&files("regressions")) {
            let data = std::fs::read(file).expect("corpus file");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{} breaks an invariant (message above)", file.display());
            }
        }
    }

    #[test]
    fn vrrp_corpus_replays() {
        replay("vrrp", super::advertisement);
    }
}
