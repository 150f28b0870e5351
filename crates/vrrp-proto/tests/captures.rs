//! Codec and frame tests against real keepalived 2.2.7 captures in `tests/data/`.
//!
//! Owns a tiny classic-pcap reader (Ethernet and Linux cooked SLL, IPv4 only) used by these
//! tests; touches nothing but the crate's public API.
//!
//! Fixtures (VIP 198.18.0.100, VRID 51, node .11 priority 150, node .12 priority 100):
//! * `keepalived-v3.pcap`: 1 s adverts (Max Adver Int 100 cs). .11 is master, resigns with a
//!   priority-0 advert, .12 takes over (advert + 5 gratuitous ARPs, 5 more 5 s later), then .11
//!   comes back and preempts.
//! * `keepalived-v3-adv10cs.pcap`: the same story with 100 ms adverts (10 cs).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tandem_vrrp_proto::{
    Advertisement, Command, Config, Instant, Output, Router, RxDisposition, RxMeta, State,
    garp_frame, validate,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const NODE_11: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const NODE_12: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);

/// One captured frame, reduced to what the tests need.
#[derive(Debug)]
enum Frame {
    /// An IPv4 packet with protocol 112.
    Vrrp {
        ts: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        payload: Vec<u8>,
    },
    /// A complete Ethernet ARP frame (only for Ethernet captures).
    Arp { ethernet: Vec<u8> },
}

/// Reads a classic pcap file (either byte order, µs or ns timestamps).
fn read_pcap(path: &str) -> Vec<Frame> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    assert!(data.len() >= 24, "{path}: no pcap global header");
    let magic = [data[0], data[1], data[2], data[3]];
    let (le, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        other => panic!("{path}: not a classic pcap file (magic {other:02x?})"),
    };
    let u32_at = |off: usize| {
        let b = [data[off], data[off + 1], data[off + 2], data[off + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20);
    // 1 = Ethernet, 113 = Linux cooked capture v1 (SLL).
    let link_header = match linktype {
        1 => 14,
        113 => 16,
        other => panic!("{path}: unsupported link type {other}"),
    };
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let (sec, frac, incl) = (
            u64::from(u32_at(off)),
            u64::from(u32_at(off + 4)),
            u32_at(off + 8) as usize,
        );
        let ts = Instant::from_nanos(sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 });
        let pkt = &data[off + 16..off + 16 + incl];
        off += 16 + incl;
        let ethertype = u16::from_be_bytes([pkt[link_header - 2], pkt[link_header - 1]]);
        let l3 = &pkt[link_header..];
        match ethertype {
            0x0806 if linktype == 1 => frames.push(Frame::Arp {
                ethernet: pkt.to_vec(),
            }),
            0x0800 => {
                assert_eq!(l3[0] >> 4, 4, "{path}: not IPv4");
                let ihl = usize::from(l3[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([l3[2], l3[3]]));
                if l3[9] != 112 {
                    continue;
                }
                // Check the IPv4 header checksum too, so we know we parse the header right.
                let sum: u32 = l3[..ihl]
                    .chunks(2)
                    .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                    .sum();
                assert_eq!(
                    (sum & 0xffff) + (sum >> 16),
                    0xffff,
                    "{path}: bad IPv4 header checksum"
                );
                frames.push(Frame::Vrrp {
                    ts,
                    src: Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]),
                    dst: Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]),
                    ttl: l3[8],
                    payload: l3[ihl..total].to_vec(),
                });
            }
            _ => {}
        }
    }
    assert_eq!(off, data.len(), "{path}: trailing bytes");
    frames
}

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn config_12(interval_cs: u16) -> Config {
    let mut c = Config::new(51, IpAddr::V4(NODE_12), vec![IpAddr::V4(VIP)]);
    c.advert_interval_cs = interval_cs;
    c
}

fn check_capture(name: &str, interval_cs: u16) {
    let frames = read_pcap(&data(name));
    let mut adverts = 0;
    let mut resignations = 0;
    for f in &frames {
        let Frame::Vrrp {
            src,
            dst,
            ttl,
            payload,
            ..
        } = f
        else {
            continue;
        };
        let (src, dst) = (IpAddr::V4(*src), IpAddr::V4(*dst));
        assert_eq!(
            (*ttl, dst),
            (255, IpAddr::V4(tandem_vrrp_proto::VRRP_GROUP_V4))
        );
        let a = Advertisement::decode(payload, src, dst).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((a.vrid, a.max_adver_int_cs), (51, interval_cs));
        assert_eq!(a.addresses, [IpAddr::V4(VIP)]);
        match (src, a.priority) {
            (IpAddr::V4(NODE_11), 150) | (IpAddr::V4(NODE_12), 100) => {}
            (IpAddr::V4(NODE_11), 0) => resignations += 1,
            other => panic!("{name}: unexpected sender/priority {other:?}"),
        }
        // Byte-identical re-encode, checksum computed with the captured pseudo-header.
        assert_eq!(
            &a.encode(src, dst).unwrap(),
            payload,
            "{name}: re-encode differs"
        );
        // And the full §7.1 validation passes for the other node's configuration.
        let mut local = config_12(interval_cs);
        if src == IpAddr::V4(NODE_12) {
            local.primary_address = IpAddr::V4(NODE_11);
        }
        let meta = RxMeta {
            src,
            dst,
            ttl: *ttl,
        };
        assert!(matches!(
            validate(&meta, payload, &local, 100),
            Ok(tandem_vrrp_proto::Received::Ours { .. })
        ));
        adverts += 1;
    }
    assert!(adverts >= 20, "{name}: only {adverts} adverts");
    assert_eq!(resignations, 1, "{name}: one priority-0 advert expected");
}

#[test]
fn one_second_capture_decodes_and_reencodes_byte_identical() {
    check_capture("keepalived-v3.pcap", 100);
}

#[test]
fn hundred_ms_capture_decodes_and_reencodes_byte_identical() {
    check_capture("keepalived-v3-adv10cs.pcap", 10);
}

#[test]
fn gratuitous_arps_match_keepalived() {
    for name in ["keepalived-v3.pcap", "keepalived-v3-adv10cs.pcap"] {
        let arps: Vec<Vec<u8>> = read_pcap(&data(name))
            .into_iter()
            .filter_map(|f| {
                if let Frame::Arp { ethernet } = f {
                    Some(ethernet)
                } else {
                    None
                }
            })
            .collect();
        assert!(arps.len() >= 10, "{name}: {} ARPs", arps.len());
        for arp in arps {
            let mac: [u8; 6] = arp[6..12].try_into().unwrap();
            assert_eq!(garp_frame(mac, VIP).as_slice(), arp.as_slice(), "{name}");
        }
    }
}

/// Replays node .11's adverts into a router configured as node .12 and checks that it takes
/// over after Skew_Time following the priority-0 advert, with keepalived's exact bytes.
fn replay_takeover(name: &str, interval_cs: u16) {
    let frames = read_pcap(&data(name));
    let Some(Frame::Vrrp { ts: start, .. }) = frames.first() else {
        panic!("{name}: empty")
    };
    let mut r = Router::new(config_12(interval_cs), *start).unwrap();
    r.handle_command(*start, Command::Startup).unwrap();
    let mut resign_at = None;
    let mut expected = None;
    for f in &frames {
        let Frame::Vrrp {
            ts,
            src,
            dst,
            ttl,
            payload,
        } = f
        else {
            continue;
        };
        if *src == NODE_11 && resign_at.is_none() {
            let meta = RxMeta {
                src: IpAddr::V4(*src),
                dst: IpAddr::V4(*dst),
                ttl: *ttl,
            };
            assert_eq!(
                r.handle_packet(*ts, &meta, payload),
                Ok(RxDisposition::Processed)
            );
            if payload[2] == 0 {
                resign_at = Some(*ts);
            }
        } else if *src == NODE_12 && expected.is_none() {
            expected = Some((*ts, payload.clone()));
        }
    }
    let (resign_at, (keepalived_at, keepalived_bytes)) = (resign_at.unwrap(), expected.unwrap());
    assert_eq!(r.state(), State::Backup);
    let takeover = r.poll_timeout().unwrap();
    assert_eq!(takeover, resign_at + r.skew_time());
    // keepalived sent its first advert within a millisecond of the RFC instant.
    let lag = keepalived_at - takeover;
    assert!(
        lag < Duration::from_millis(1) && keepalived_at >= takeover,
        "{name}: lag {lag:?}"
    );
    r.handle_timeout(takeover);
    let tx = std::iter::from_fn(|| r.poll_output())
        .find_map(|o| {
            if let Output::Transmit(t) = o {
                Some(t)
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(
        tx.payload, keepalived_bytes,
        "{name}: our first advert differs from keepalived's"
    );
}

#[test]
fn replayed_one_second_capture_takes_over_like_keepalived() {
    replay_takeover("keepalived-v3.pcap", 100);
}

#[test]
fn replayed_hundred_ms_capture_takes_over_like_keepalived() {
    replay_takeover("keepalived-v3-adv10cs.pcap", 10);
}
