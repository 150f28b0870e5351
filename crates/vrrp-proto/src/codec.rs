//! VRRPv3 advertisement wire format (RFC 5798 §5.2) and its checksum (§5.2.8).
//!
//! Owns encoding and structural decoding of the VRRP message (the IP payload), including the
//! checksum over the IPv4 (RFC 768 style) or IPv6 (RFC 2460 §8.1) pseudo-header.
//! Must not look at IP headers, TTLs or the local configuration: the policy checks of §7.1
//! that need those live in [`mod@crate::validate`].
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      IPvX Address(es)                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::IPPROTO_VRRP;

/// VRRP protocol version implemented here.
pub const VERSION: u8 = 3;
/// The only packet type of VRRPv3: ADVERTISEMENT.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of the fixed part of the message, before the addresses, in bytes.
pub const HEADER_LEN: usize = 8;
/// Largest Max Adver Int the 12-bit field can carry, in centiseconds.
pub const MAX_ADVER_INT_CS: u16 = 0x0fff;

/// A decoded (or to-be-encoded) VRRPv3 ADVERTISEMENT.
///
/// All addresses share one family, which is also the family of the IP header carrying the
/// message; [`Advertisement::encode`] enforces this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    /// Virtual Router Identifier, 1..=255.
    pub vrid: u8,
    /// Sender's priority: 255 = address owner, 1..=254 = backup-capable, 0 = master resigning.
    pub priority: u8,
    /// Sender's advertisement interval, in centiseconds (12 bits; 0 is rejected on receive).
    pub max_adver_int_cs: u16,
    /// The virtual router's addresses, in the sender's configured order.
    pub addresses: Vec<IpAddr>,
}

/// Structural problem found while decoding a VRRP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the 8-byte fixed header.
    #[error("vrrp message truncated: {len} bytes, the fixed header needs 8")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The version nibble is not 3 (e.g. a VRRPv2 speaker on the segment).
    #[error("unsupported vrrp version {version} for vrid {vrid}")]
    Version {
        /// Version found in the packet.
        version: u8,
        /// VRID found in the packet.
        vrid: u8,
    },
    /// The type nibble is not 1 (ADVERTISEMENT).
    #[error("unknown vrrp packet type {kind} for vrid {vrid}")]
    Type {
        /// Type found in the packet.
        kind: u8,
        /// VRID found in the packet.
        vrid: u8,
    },
    /// The IP source and destination given for the pseudo-header are of different families.
    #[error("vrrp pseudo-header mixes address families: source {src}, destination {dst}")]
    MixedFamilies {
        /// IP source address.
        src: IpAddr,
        /// IP destination address.
        dst: IpAddr,
    },
    /// Count IPvX Addr is zero; RFC 5798 §5.2.5 sets the minimum to 1.
    #[error("vrrp advertisement for vrid {vrid} carries no address")]
    NoAddresses {
        /// VRID found in the packet.
        vrid: u8,
    },
    /// The message length does not match 8 + count × address size (truncated or trailing bytes).
    #[error(
        "vrrp advertisement for vrid {vrid} is {len} bytes but announces {count} addresses ({expected} bytes)"
    )]
    Length {
        /// VRID found in the packet.
        vrid: u8,
        /// Count IPvX Addr found in the packet.
        count: u8,
        /// Bytes received.
        len: usize,
        /// Bytes the count implies.
        expected: usize,
    },
    /// The checksum over the pseudo-header and message does not verify.
    #[error(
        "bad vrrp checksum for vrid {vrid} from {src}: field {found:#06x}, computed {computed:#06x}"
    )]
    Checksum {
        /// VRID found in the packet.
        vrid: u8,
        /// IP source address used in the pseudo-header.
        src: IpAddr,
        /// Checksum field in the packet.
        found: u16,
        /// Checksum computed over the packet with the field zeroed.
        computed: u16,
    },
    /// Max Adver Int is zero, which would make Master_Down_Interval zero.
    #[error("vrrp advertisement for vrid {vrid} from {src} has a zero advertisement interval")]
    ZeroInterval {
        /// VRID found in the packet.
        vrid: u8,
        /// IP source address.
        src: IpAddr,
    },
}

/// Reason an [`Advertisement`] cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The IP source and destination are of different families.
    #[error("cannot encode vrid {vrid}: source {src} and destination {dst} differ in family")]
    MixedFamilies {
        /// VRID being encoded.
        vrid: u8,
        /// IP source address.
        src: IpAddr,
        /// IP destination address.
        dst: IpAddr,
    },
    /// A listed address is not of the IP header's family.
    #[error("cannot encode vrid {vrid}: address {addr} is not of the packet's family")]
    AddressFamily {
        /// VRID being encoded.
        vrid: u8,
        /// The offending address.
        addr: IpAddr,
    },
    /// The address list is empty or longer than the 8-bit count allows.
    #[error("cannot encode vrid {vrid}: {count} addresses, need 1..=255")]
    AddressCount {
        /// VRID being encoded.
        vrid: u8,
        /// Number of addresses in the advertisement.
        count: usize,
    },
    /// The interval is zero or does not fit in 12 bits.
    #[error("cannot encode vrid {vrid}: advertisement interval {cs} cs is outside 1..=4095")]
    Interval {
        /// VRID being encoded.
        vrid: u8,
        /// The interval, in centiseconds.
        cs: u16,
    },
}

impl Advertisement {
    /// Encoded length of this advertisement for the given family, in bytes.
    pub fn encoded_len(&self, v6: bool) -> usize {
        HEADER_LEN + self.addresses.len() * if v6 { 16 } else { 4 }
    }

    /// Encodes the message, computing the checksum with the pseudo-header built from `src`
    /// (the sender's primary address) and `dst` (the VRRP group or a unicast peer).
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len(src.is_ipv6()));
        self.encode_into(src, dst, &mut out)?;
        Ok(out)
    }

    /// Like [`Advertisement::encode`] but appends to `out`; on error `out` is left untouched.
    pub fn encode_into(
        &self,
        src: IpAddr,
        dst: IpAddr,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let vrid = self.vrid;
        if src.is_ipv6() != dst.is_ipv6() {
            return Err(EncodeError::MixedFamilies { vrid, src, dst });
        }
        let count = u8::try_from(self.addresses.len())
            .ok()
            .filter(|&c| c > 0)
            .ok_or(EncodeError::AddressCount {
                vrid,
                count: self.addresses.len(),
            })?;
        if let Some(&addr) = self.addresses.iter().find(|a| a.is_ipv6() != src.is_ipv6()) {
            return Err(EncodeError::AddressFamily { vrid, addr });
        }
        if self.max_adver_int_cs == 0 || self.max_adver_int_cs > MAX_ADVER_INT_CS {
            return Err(EncodeError::Interval {
                vrid,
                cs: self.max_adver_int_cs,
            });
        }
        let start = out.len();
        out.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        out.push(self.vrid);
        out.push(self.priority);
        out.push(count);
        out.extend_from_slice(&self.max_adver_int_cs.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        for addr in &self.addresses {
            match addr {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
        let sum = checksum(src, dst, &out[start..]);
        out[start + 6..start + 8].copy_from_slice(&sum.to_be_bytes());
        Ok(())
    }

    /// Decodes and structurally checks a VRRP message: version, type, address count versus
    /// length, checksum (with the pseudo-header from `src`/`dst`) and a non-zero interval.
    ///
    /// `bytes` must be exactly the IP payload (trimmed by the IP total / payload length, so
    /// Ethernet padding is not included). Never panics, whatever the input.
    pub fn decode(bytes: &[u8], src: IpAddr, dst: IpAddr) -> Result<Advertisement, DecodeError> {
        let header = Header::parse(bytes)?;
        let vrid = header.vrid;
        if src.is_ipv6() != dst.is_ipv6() {
            return Err(DecodeError::MixedFamilies { src, dst });
        }
        if header.count == 0 {
            return Err(DecodeError::NoAddresses { vrid });
        }
        let addr_len = if src.is_ipv6() { 16 } else { 4 };
        let expected = HEADER_LEN + usize::from(header.count) * addr_len;
        if bytes.len() != expected {
            return Err(DecodeError::Length {
                vrid,
                count: header.count,
                len: bytes.len(),
                expected,
            });
        }
        // Summing the whole message including the checksum field yields 0 when it is right;
        // recompute with the field zeroed only to report both values in the error.
        if sum_message(src, dst, bytes) != 0xffff {
            let found = u16::from_be_bytes([bytes[6], bytes[7]]);
            let computed = checksum_with_zeroed_field(src, dst, bytes);
            return Err(DecodeError::Checksum {
                vrid,
                src,
                found,
                computed,
            });
        }
        if header.max_adver_int_cs == 0 {
            return Err(DecodeError::ZeroInterval { vrid, src });
        }
        let addresses = bytes[HEADER_LEN..]
            .chunks_exact(addr_len)
            .map(|c| {
                // `chunks_exact` guarantees `c.len() == addr_len`, so the indexing and the
                // fixed-size copy below cannot go out of bounds.
                if addr_len == 16 {
                    let mut b16 = [0u8; 16];
                    b16.copy_from_slice(c);
                    IpAddr::V6(Ipv6Addr::from(b16))
                } else {
                    IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                }
            })
            .collect();
        Ok(Advertisement {
            vrid,
            priority: header.priority,
            max_adver_int_cs: header.max_adver_int_cs,
            addresses,
        })
    }
}

/// The fixed 8-byte header, parsed without any policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) vrid: u8,
    pub(crate) priority: u8,
    pub(crate) count: u8,
    /// Max Adver Int with the 4 reserved bits masked off (they are ignored on receipt).
    pub(crate) max_adver_int_cs: u16,
}

impl Header {
    /// Parses the fixed header and checks version and type.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header, DecodeError> {
        let Some(fixed) = bytes.get(..HEADER_LEN) else {
            return Err(DecodeError::TooShort { len: bytes.len() });
        };
        let vrid = fixed[1];
        let version = fixed[0] >> 4;
        if version != VERSION {
            return Err(DecodeError::Version { version, vrid });
        }
        let kind = fixed[0] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(DecodeError::Type { kind, vrid });
        }
        Ok(Header {
            vrid,
            priority: fixed[2],
            count: fixed[3],
            max_adver_int_cs: u16::from_be_bytes([fixed[4], fixed[5]]) & MAX_ADVER_INT_CS,
        })
    }
}

/// Computes the VRRP checksum of `message` (whose checksum field is taken as zero) with the
/// pseudo-header for `src` → `dst`.
///
/// If `src` and `dst` differ in family the IPv6 layout is used with the IPv4 address mapped;
/// callers reject mixed families before getting here.
pub fn checksum(src: IpAddr, dst: IpAddr, message: &[u8]) -> u16 {
    checksum_with_zeroed_field(src, dst, message)
}

fn checksum_with_zeroed_field(src: IpAddr, dst: IpAddr, message: &[u8]) -> u16 {
    let mut acc = pseudo_header_sum(src, dst, message.len());
    for (i, pair) in message.chunks(2).enumerate() {
        // Word 3 (bytes 6..8) is the checksum field itself.
        if i != 3 {
            acc += word(pair);
        }
    }
    !fold(acc)
}

/// One's complement sum (folded, not inverted) of pseudo-header plus message as-is.
fn sum_message(src: IpAddr, dst: IpAddr, message: &[u8]) -> u16 {
    let mut acc = pseudo_header_sum(src, dst, message.len());
    for pair in message.chunks(2) {
        acc += word(pair);
    }
    fold(acc)
}

/// Sum of the 16-bit words of the pseudo-header (RFC 768 layout for IPv4, RFC 2460 §8.1 for IPv6).
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, len: usize) -> u64 {
    let mut acc = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc += sum_words(&s.octets()) + sum_words(&d.octets());
            // zero byte + protocol, then the 16-bit VRRP length.
            acc += u64::from(IPPROTO_VRRP);
            acc += (len as u64) & 0xffff;
        }
        (s, d) => {
            acc += sum_words(&to_v6(s).octets()) + sum_words(&to_v6(d).octets());
            // 32-bit upper-layer length, 24 zero bits, next header.
            let len = len as u64;
            acc += (len >> 16) & 0xffff;
            acc += len & 0xffff;
            acc += u64::from(IPPROTO_VRRP);
        }
    }
    acc
}

/// Internet checksum helper, shared with the frame builders.
pub(crate) fn sum_words(bytes: &[u8]) -> u64 {
    bytes.chunks(2).map(word).sum()
}

fn word(pair: &[u8]) -> u64 {
    match pair {
        [hi, lo] => u64::from(u16::from_be_bytes([*hi, *lo])),
        [hi] => u64::from(*hi) << 8,
        _ => 0,
    }
}

/// Folds carries into 16 bits (end-around carry).
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11));
    const GROUP4: IpAddr = IpAddr::V4(crate::VRRP_GROUP_V4);
    const GROUP6: IpAddr = IpAddr::V6(crate::VRRP_GROUP_V6);

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn advert(addresses: Vec<IpAddr>) -> Advertisement {
        Advertisement {
            vrid: 51,
            priority: 150,
            max_adver_int_cs: 100,
            addresses,
        }
    }

    /// Keepalived 2.2.7's advert from the capture (`tests/data/keepalived-v3.pcap`, frame 0).
    const KEEPALIVED_ADVERT: [u8; 12] = [
        0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0xcb, 0x43, 198, 18, 0, 100,
    ];

    #[test]
    fn encodes_keepalived_bytes() {
        let a = advert(vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))]);
        assert_eq!(a.encode(SRC4, GROUP4).unwrap(), KEEPALIVED_ADVERT);
        assert_eq!(
            Advertisement::decode(&KEEPALIVED_ADVERT, SRC4, GROUP4).unwrap(),
            a
        );
    }

    #[test]
    fn checksum_covers_the_pseudo_header() {
        // Same message, different source: the checksum must no longer verify.
        let other = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 12));
        let err = Advertisement::decode(&KEEPALIVED_ADVERT, other, GROUP4).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Checksum {
                    vrid: 51,
                    found: 0xcb43,
                    ..
                }
            ),
            "{err}"
        );
        // Unicast destination: also part of the pseudo-header.
        let unicast = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 12));
        let a = advert(vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))]);
        let bytes = a.encode(SRC4, unicast).unwrap();
        assert_ne!(bytes, KEEPALIVED_ADVERT);
        assert_eq!(Advertisement::decode(&bytes, SRC4, unicast).unwrap(), a);
    }

    #[test]
    fn ipv6_round_trip_and_checksum() {
        let src = v6("fe80::200:c6ff:fe12:b");
        let a = Advertisement {
            vrid: 7,
            priority: 254,
            max_adver_int_cs: 4095,
            addresses: vec![v6("fe80::1"), v6("2001:db8::100"), v6("2001:db8::101")],
        };
        let bytes = a.encode(src, GROUP6).unwrap();
        assert_eq!(bytes.len(), 8 + 3 * 16);
        assert_eq!(&bytes[..6], &[0x31, 7, 254, 3, 0x0f, 0xff]);
        assert_eq!(Advertisement::decode(&bytes, src, GROUP6).unwrap(), a);
        // Independent check: the sum over pseudo-header + message folds to 0xffff.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&to_v6(src).octets());
        pseudo.extend_from_slice(&crate::VRRP_GROUP_V6.octets());
        pseudo.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 112]);
        pseudo.extend_from_slice(&bytes);
        assert_eq!(fold(sum_words(&pseudo)), 0xffff);
        // Flipping any single bit breaks it.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                Advertisement::decode(&bad, src, GROUP6).is_err(),
                "bit flip at {i} accepted"
            );
        }
    }

    #[test]
    fn encode_rejects_bad_adverts() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let cases: Vec<(Advertisement, IpAddr, IpAddr)> = vec![
            (advert(vec![]), SRC4, GROUP4),
            (advert(vec![v4; 256]), SRC4, GROUP4),
            (advert(vec![v6("2001:db8::1")]), SRC4, GROUP4),
            (advert(vec![v4]), SRC4, GROUP6),
            (
                Advertisement {
                    max_adver_int_cs: 0,
                    ..advert(vec![v4])
                },
                SRC4,
                GROUP4,
            ),
            (
                Advertisement {
                    max_adver_int_cs: 4096,
                    ..advert(vec![v4])
                },
                SRC4,
                GROUP4,
            ),
        ];
        for (a, src, dst) in cases {
            let mut out = vec![0xaa];
            assert!(a.encode_into(src, dst, &mut out).is_err(), "{a:?} encoded");
            assert_eq!(out, [0xaa], "failed encode must not write");
        }
    }

    #[test]
    fn decode_rejects_each_structural_error() {
        let good = KEEPALIVED_ADVERT;
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.to_vec();
            f(&mut b);
            Advertisement::decode(&b, SRC4, GROUP4).unwrap_err()
        };
        // Re-checksums a mutated message so that only the intended check fails.
        let fix = |b: &mut Vec<u8>| {
            let c = checksum(SRC4, GROUP4, b);
            b[6..8].copy_from_slice(&c.to_be_bytes());
        };
        assert_eq!(with(&|b| b.truncate(7)), DecodeError::TooShort { len: 7 });
        assert_eq!(with(&|b| b.truncate(0)), DecodeError::TooShort { len: 0 });
        assert_eq!(
            with(&|b| b[0] = 0x21),
            DecodeError::Version {
                version: 2,
                vrid: 51
            }
        );
        assert_eq!(
            with(&|b| b[0] = 0x32),
            DecodeError::Type { kind: 2, vrid: 51 }
        );
        assert_eq!(
            with(&|b| {
                b[3] = 0;
                fix(b)
            }),
            DecodeError::NoAddresses { vrid: 51 }
        );
        assert!(matches!(
            with(&|b| b.truncate(11)),
            DecodeError::Length {
                len: 11,
                expected: 12,
                ..
            }
        ));
        assert!(matches!(
            with(&|b| b.push(0)),
            DecodeError::Length {
                len: 13,
                expected: 12,
                ..
            }
        ));
        assert!(matches!(
            with(&|b| {
                b[3] = 2;
                fix(b)
            }),
            DecodeError::Length { count: 2, .. }
        ));
        assert!(matches!(
            with(&|b| b[11] = 101),
            DecodeError::Checksum { vrid: 51, .. }
        ));
        assert_eq!(
            with(&|b| {
                b[4] = 0;
                b[5] = 0;
                fix(b)
            }),
            DecodeError::ZeroInterval {
                vrid: 51,
                src: SRC4
            }
        );
        let mixed = Advertisement::decode(&good, SRC4, GROUP6).unwrap_err();
        assert!(matches!(mixed, DecodeError::MixedFamilies { .. }));
        // Reserved bits are ignored on receipt (RFC 5798 §5.2.6).
        let mut rsvd = good.to_vec();
        rsvd[4] |= 0xf0;
        fix(&mut rsvd);
        assert_eq!(
            Advertisement::decode(&rsvd, SRC4, GROUP4)
                .unwrap()
                .max_adver_int_cs,
            100
        );
    }

    #[test]
    fn error_messages_are_lowercase_with_context() {
        let e = DecodeError::Checksum {
            vrid: 51,
            src: SRC4,
            found: 1,
            computed: 2,
        };
        assert_eq!(
            e.to_string(),
            "bad vrrp checksum for vrid 51 from 198.18.0.11: field 0x0001, computed 0x0002"
        );
    }
}
