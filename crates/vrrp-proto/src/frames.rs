//! Link-layer announcement frames a new master sends for its VIPs: gratuitous ARP (IPv4) and
//! unsolicited Neighbor Advertisement (IPv6), plus the RFC 5798 §7.3 virtual MAC.
//!
//! Owns pure byte builders, so the daemon only has to write the frames to a packet socket.
//! Must not decide *when* to send them or how often to repeat them: the router emits
//! [`crate::Output::SendGratuitous`] and the shell owns repetition.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::codec::{fold, sum_words};

/// Length of a gratuitous ARP Ethernet frame without padding, in bytes.
pub const GARP_FRAME_LEN: usize = 42;
/// Length of an unsolicited NA Ethernet frame with a Target Link-Layer Address option, in bytes.
pub const UNSOLICITED_NA_FRAME_LEN: usize = 86;

/// The virtual router MAC address of RFC 5798 §7.3: `00-00-5E-00-01-{VRID}` for IPv4,
/// `00-00-5E-00-02-{VRID}` for IPv6.
pub fn virtual_mac(vrid: u8, ipv6: bool) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, if ipv6 { 0x02 } else { 0x01 }, vrid]
}

/// Builds a broadcast gratuitous ARP frame announcing `ip` at `mac`.
///
/// Same layout as keepalived 2.2.7: an ARP *request* (opcode 1) with sender and target protocol
/// address both `ip`, target hardware address `ff:ff:ff:ff:ff:ff`, no Ethernet padding (the
/// NIC pads to 60 bytes).
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    const BROADCAST: [u8; 6] = [0xff; 6];
    let mut f = [0u8; GARP_FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes()); // EtherType ARP
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // HTYPE Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // PTYPE IPv4
    f[18] = 6; // HLEN
    f[19] = 4; // PLEN
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // OPER request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&BROADCAST);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Builds an unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) for `target` at `mac`, as
/// RFC 5798 §6.4.1 asks a new master to send: to `ff02::1` (MAC `33:33:00:00:00:01`), hop limit
/// 255, Solicited clear, Override set, Router set when `router_flag`, with a Target Link-Layer
/// Address option. The IPv6 source is `target` itself, as keepalived does.
pub fn unsolicited_na_frame(
    mac: [u8; 6],
    target: Ipv6Addr,
    router_flag: bool,
) -> [u8; UNSOLICITED_NA_FRAME_LEN] {
    const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    const ICMP_LEN: u16 = 32;
    let mut f = [0u8; UNSOLICITED_NA_FRAME_LEN];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    // IPv6 header.
    f[14] = 0x60;
    f[18..20].copy_from_slice(&ICMP_LEN.to_be_bytes());
    f[20] = 58; // next header ICMPv6
    f[21] = 255; // hop limit (RFC 4861 §7.1.2)
    f[22..38].copy_from_slice(&target.octets());
    f[38..54].copy_from_slice(&ALL_NODES.octets());
    // ICMPv6 Neighbor Advertisement.
    let icmp = 54;
    f[icmp] = 136;
    f[icmp + 4] = if router_flag { 0x80 } else { 0 } | 0x20; // R, S=0, O=1
    f[icmp + 8..icmp + 24].copy_from_slice(&target.octets());
    f[icmp + 24] = 2; // option: Target Link-Layer Address
    f[icmp + 25] = 1; // length in units of 8 bytes
    f[icmp + 26..icmp + 32].copy_from_slice(&mac);
    let pseudo = sum_words(&target.octets())
        + sum_words(&ALL_NODES.octets())
        + u64::from(ICMP_LEN)
        + 58
        + sum_words(&f[icmp..]);
    f[icmp + 2..icmp + 4].copy_from_slice(&(!fold(pseudo)).to_be_bytes());
    f
}

/// The announcement frame for one VIP, whichever its family (IPv6 NAs are sent with R clear).
pub fn announcement_frame(mac: [u8; 6], vip: IpAddr) -> Vec<u8> {
    match vip {
        IpAddr::V4(v4) => garp_frame(mac, v4).to_vec(),
        IpAddr::V6(v6) => unsolicited_na_frame(mac, v6, false).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_macs() {
        assert_eq!(virtual_mac(51, false), [0, 0, 0x5e, 0, 1, 51]);
        assert_eq!(virtual_mac(7, true), [0, 0, 0x5e, 0, 2, 7]);
    }

    #[test]
    fn unsolicited_na_layout_and_checksum() {
        let mac = [0x02, 0x00, 0xc6, 0x12, 0x00, 0x0c];
        let target: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let f = unsolicited_na_frame(mac, target, true);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!((f[20], f[21]), (58, 255));
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 32);
        assert_eq!(f[54], 136);
        assert_eq!(f[58], 0xa0, "R and O set, S clear");
        assert_eq!(&f[62..78], &target.octets());
        assert_eq!(&f[80..86], &mac);
        // The ICMPv6 checksum verifies: pseudo-header + message folds to 0xffff.
        let all = sum_words(&f[22..38]) + sum_words(&f[38..54]) + 32 + 58 + sum_words(&f[54..]);
        assert_eq!(fold(all), 0xffff);
        assert_eq!(unsolicited_na_frame(mac, target, false)[58], 0x20);
        assert_eq!(
            announcement_frame(mac, IpAddr::V6(target)).len(),
            UNSOLICITED_NA_FRAME_LEN
        );
    }
}
