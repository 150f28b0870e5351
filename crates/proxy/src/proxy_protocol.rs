//! The PROXY protocol (HAProxy's spec, versions 1 and 2): parse what a load balancer in
//! front of us sends, and encode what we send to servers (`send_proxy`).
//!
//! Owns: [`parse`] and [`encode`] (pure functions, no IO, no allocation on the parse path)
//! and [`read_header`], the strict bounded reader used on binds with `proxy_protocol: true`.
//! Does not own: deciding which binds expect a header (the plan), the deadline (the caller
//! wraps [`read_header`] in `timeout client_header`), nor what the address is used for.
//!
//! Strictness: a bind that expects a header rejects a connection without one (like HAProxy's
//! `accept-proxy`); v1 lines are ASCII with single spaces, canonical addresses, and decimal
//! ports; v2 headers must carry a known version, command, family and protocol, a length that
//! covers the addresses, and well-formed TLVs, and are bounded by [`MAX_V2_PAYLOAD_BYTES`].
//! [`read_header`] never consumes a byte past the header: it peeks, then reads exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The 12-byte signature opening every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (spec section 2.1).
pub const V1_MAX_BYTES: usize = 107;
/// Largest v2 payload (addresses and TLVs) accepted, in bytes; the spec allows 65535 but
/// real senders (AWS NLB, HAProxy with SSL TLVs) stay well below.
pub const MAX_V2_PAYLOAD_BYTES: usize = 2048;
/// Fixed part of a v2 header: signature, version/command, family/protocol, length.
const V2_FIXED_BYTES: usize = 16;
/// Largest header [`read_header`] buffers.
const MAX_HEADER_BYTES: usize = V2_FIXED_BYTES + MAX_V2_PAYLOAD_BYTES;

/// Which PROXY protocol version a backend sends (`send_proxy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The text format.
    V1,
    /// The binary format.
    V2,
}

/// What a PROXY header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// The original connection's addresses.
    Proxied {
        /// The client, as seen by the sender.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// No address information (v1 `UNKNOWN`, v2 `LOCAL` or an unsupported family such as
    /// `AF_UNIX`): the connection's own addresses apply.
    Local,
}

/// Why bytes are not a valid PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// More bytes are needed to decide.
    #[error("incomplete proxy protocol header")]
    Incomplete,
    /// Neither the v1 `PROXY ` prefix nor the v2 signature.
    #[error("missing proxy protocol header")]
    NotProxy,
    /// A v1 line without CRLF within 107 bytes.
    #[error("proxy protocol v1 header longer than 107 bytes")]
    V1TooLong,
    /// A v1 line that does not follow the grammar; the field names the part at fault.
    #[error("malformed proxy protocol v1 header: bad {0}")]
    V1Malformed(&'static str),
    /// A v2 version nibble other than 2.
    #[error("unsupported proxy protocol v2 version {0}")]
    V2Version(u8),
    /// A v2 command other than LOCAL (0) or PROXY (1).
    #[error("unsupported proxy protocol v2 command {0}")]
    V2Command(u8),
    /// A v2 family or transport protocol outside the spec.
    #[error("unsupported proxy protocol v2 family/protocol byte {0:#04x}")]
    V2Family(u8),
    /// A v2 length above [`MAX_V2_PAYLOAD_BYTES`].
    #[error("proxy protocol v2 payload of {0} bytes is over the limit")]
    V2TooLong(usize),
    /// A v2 length too short for the addresses of its family.
    #[error("proxy protocol v2 payload of {0} bytes is too short for its address family")]
    V2TooShort(usize),
    /// A v2 TLV that runs past the end of the header.
    #[error("malformed proxy protocol v2 tlv")]
    V2Tlv,
}

/// Parses one header at the start of `buf`; returns it and its length in bytes.
///
/// Never panics, whatever `buf` holds; [`ParseError::Incomplete`] means a prefix of a
/// possibly valid header.
pub fn parse(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    if buf.is_empty() {
        return Err(ParseError::Incomplete);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return parse_v2(buf);
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return parse_v1(buf);
    }
    Err(ParseError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() >= V1_MAX_BYTES {
            Err(ParseError::V1TooLong)
        } else {
            Err(ParseError::Incomplete)
        };
    };
    if buf[cr] == b'\n' {
        return Err(ParseError::V1Malformed("line ending"));
    }
    // The LF counts too: a CR as byte 107 is too long whether or not the LF has arrived.
    if cr + 2 > V1_MAX_BYTES {
        return Err(ParseError::V1TooLong);
    }
    match buf.get(cr + 1) {
        None => return Err(ParseError::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(ParseError::V1Malformed("line ending")),
    }
    let len = cr + 2;
    let line = &buf[6..cr];
    if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(ParseError::V1Malformed("character"));
    }
    // Only printable ASCII remains, so this cannot fail.
    let line = std::str::from_utf8(line).map_err(|_| ParseError::V1Malformed("character"))?;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok((Header::Local, len));
    }
    let mut parts = line.split(' ');
    let proto = parts.next().ok_or(ParseError::V1Malformed("protocol"))?;
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ParseError::V1Malformed("field count"));
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            IpAddr::V4(
                src.parse()
                    .map_err(|_| ParseError::V1Malformed("source address"))?,
            ),
            IpAddr::V4(
                dst.parse()
                    .map_err(|_| ParseError::V1Malformed("destination address"))?,
            ),
        ),
        "TCP6" => (
            IpAddr::V6(
                src.parse()
                    .map_err(|_| ParseError::V1Malformed("source address"))?,
            ),
            IpAddr::V6(
                dst.parse()
                    .map_err(|_| ParseError::V1Malformed("destination address"))?,
            ),
        ),
        _ => return Err(ParseError::V1Malformed("protocol")),
    };
    let sport = port(sport).ok_or(ParseError::V1Malformed("source port"))?;
    let dport = port(dport).ok_or(ParseError::V1Malformed("destination port"))?;
    Ok((
        Header::Proxied {
            source: SocketAddr::new(src, sport),
            destination: SocketAddr::new(dst, dport),
        },
        len,
    ))
}

/// A decimal port: 1 to 5 digits, no sign, no leading zero (except `0` itself).
fn port(s: &str) -> Option<u16> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if ok { s.parse().ok() } else { None }
}

fn parse_v2(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    if buf.len() < V2_FIXED_BYTES {
        return Err(ParseError::Incomplete);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ParseError::V2Version(ver_cmd >> 4));
    }
    let command = ver_cmd & 0x0f;
    if command > 1 {
        return Err(ParseError::V2Command(command));
    }
    let fam = buf[13];
    let (family, proto) = (fam >> 4, fam & 0x0f);
    if family > 3 || proto > 2 {
        return Err(ParseError::V2Family(fam));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_V2_PAYLOAD_BYTES {
        return Err(ParseError::V2TooLong(len));
    }
    let total = V2_FIXED_BYTES + len;
    let Some(payload) = buf.get(V2_FIXED_BYTES..total) else {
        return Err(ParseError::Incomplete);
    };
    let addr_len = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if len < addr_len {
        return Err(ParseError::V2TooShort(len));
    }
    check_tlvs(&payload[addr_len..])?;
    // LOCAL (health checks from the sender), UNSPEC and UNIX carry no usable address.
    if command == 0 || proto == 0 {
        return Ok((Header::Local, total));
    }
    let header = match family {
        1 => {
            let ip = |i: usize| {
                Ipv4Addr::new(payload[i], payload[i + 1], payload[i + 2], payload[i + 3])
            };
            let port = |i: usize| u16::from_be_bytes([payload[i], payload[i + 1]]);
            Header::Proxied {
                source: SocketAddr::new(IpAddr::V4(ip(0)), port(8)),
                destination: SocketAddr::new(IpAddr::V4(ip(4)), port(10)),
            }
        }
        2 => {
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&payload[i..i + 16]);
                Ipv6Addr::from(o)
            };
            let port = |i: usize| u16::from_be_bytes([payload[i], payload[i + 1]]);
            Header::Proxied {
                source: SocketAddr::new(IpAddr::V6(ip(0)), port(32)),
                destination: SocketAddr::new(IpAddr::V6(ip(16)), port(34)),
            }
        }
        _ => Header::Local,
    };
    Ok((header, total))
}

/// Every TLV (type, 16-bit length, value) must end exactly at the end of the payload.
fn check_tlvs(mut rest: &[u8]) -> Result<(), ParseError> {
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(ParseError::V2Tlv);
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        rest = rest.get(3 + len..).ok_or(ParseError::V2Tlv)?;
    }
    Ok(())
}

/// Encodes a header for a connection from `source` to `destination` (a PROXY command).
///
/// When the families differ, IPv4 addresses are written as IPv4-mapped IPv6, as HAProxy does.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (src, dst) = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(to_v6(s)), IpAddr::V6(to_v6(d))),
    };
    match version {
        Version::V1 => {
            let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {proto} {src} {dst} {} {}\r\n",
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut out = Vec::with_capacity(V2_FIXED_BYTES + 36);
            out.extend_from_slice(&V2_SIGNATURE);
            // Version 2, command PROXY.
            out.push(0x21);
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    // AF_INET, STREAM; 12 bytes of addresses.
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    // AF_INET6, STREAM; 36 bytes of addresses.
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&to_v6(s).octets());
                    out.extend_from_slice(&to_v6(d).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
            out
        }
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Why [`read_header`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a valid header.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The client closed before sending a whole header.
    #[error("connection closed inside the proxy protocol header")]
    Closed,
    /// Reading from the socket failed.
    #[error("failed to read the proxy protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one header from `stream`, consuming exactly its bytes and nothing after.
///
/// Peeks at what has arrived; bytes before the end of an incomplete header are consumed
/// (they can only be header bytes), so every round consumes at least one byte and the
/// buffer stays bounded by [`MAX_HEADER_BYTES`]. The caller bounds the time.
pub async fn read_header(stream: &mut TcpStream) -> Result<Header, ReadError> {
    let mut buf = vec![0u8; MAX_HEADER_BYTES];
    let mut have = 0;
    loop {
        let n = stream.peek(&mut buf[have..]).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        match parse(&buf[..have + n]) {
            Ok((header, len)) => {
                debug_assert!(len > have && len <= have + n);
                stream.read_exact(&mut buf[have..len]).await?;
                return Ok(header);
            }
            Err(ParseError::Incomplete) => {
                stream.read_exact(&mut buf[have..have + n]).await?;
                have += n;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn check(input: &[u8], expected: Result<(Header, usize), ParseError>) {
        assert_eq!(
            parse(input),
            expected,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }

    fn proxied(src: &str, dst: &str) -> Header {
        Header::Proxied {
            source: sa(src),
            destination: sa(dst),
        }
    }

    #[test]
    fn v1_valid() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        check(h, Ok((proxied("192.0.2.1:56324", "198.51.100.2:443"), 45)));
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        check(
            h,
            Ok((proxied("[2001:db8::1]:1", "[2001:db8::2]:65535"), h.len())),
        );
        check(b"PROXY UNKNOWN\r\n", Ok((Header::Local, 15)));
        check(
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nxx",
            Ok((Header::Local, 35)),
        );
    }

    #[test]
    fn v1_malformed() {
        use ParseError::*;
        let cases: &[(&[u8], ParseError)] = &[
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                V1Malformed("line ending"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
                V1Malformed("line ending"),
            ),
            (
                b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
                V1Malformed("field count"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                V1Malformed("field count"),
            ),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                V1Malformed("protocol"),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                V1Malformed("source address"),
            ),
            (
                b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
                V1Malformed("destination address"),
            ),
            (
                b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
                V1Malformed("source address"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                V1Malformed("source port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
                V1Malformed("source port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
                V1Malformed("destination port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\t\r\n",
                V1Malformed("character"),
            ),
            (b"PROXY \xff\r\n", V1Malformed("character")),
            (b"GET / HTTP/1.1\r\n", NotProxy),
            (b"proxy TCP4", NotProxy),
        ];
        for (input, err) in cases {
            check(input, Err(*err));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
        check(&long, Err(V1TooLong));
    }

    #[test]
    fn v1_truncated_is_incomplete() {
        let full = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        for n in 0..full.len() {
            check(&full[..n], Err(ParseError::Incomplete));
        }
    }

    /// The layout of spec section 2.2 for TCP over IPv4: signature, `\x21` (v2, PROXY),
    /// `\x11` (AF_INET, STREAM), length 12, then addresses and ports in network order.
    const SPEC_V2_TCP4: [u8; 28] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
        0x21, 0x11, 0x00, 0x0C, // v2 PROXY, TCP4, 12 bytes
        0xC0, 0x00, 0x02, 0x01, // 192.0.2.1
        0xC6, 0x33, 0x64, 0x02, // 198.51.100.2
        0xDC, 0x04, // 56324
        0x01, 0xBB, // 443
    ];

    #[test]
    fn v2_spec_example() {
        check(
            &SPEC_V2_TCP4,
            Ok((proxied("192.0.2.1:56324", "198.51.100.2:443"), 28)),
        );
        assert_eq!(
            encode(Version::V2, sa("192.0.2.1:56324"), sa("198.51.100.2:443")),
            SPEC_V2_TCP4
        );
    }

    #[test]
    fn v2_variants() {
        // LOCAL command: addresses ignored.
        let mut local = SPEC_V2_TCP4;
        local[12] = 0x20;
        check(&local, Ok((Header::Local, 28)));
        // UNSPEC family with no payload.
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 0]);
        check(&unspec, Ok((Header::Local, 16)));
        // TCP4 with a TLV (PP2_TYPE_AUTHORITY "a.test") after the addresses.
        let mut tlv = SPEC_V2_TCP4.to_vec();
        tlv[15] = 12 + 9;
        tlv.extend_from_slice(&[0x02, 0, 6]);
        tlv.extend_from_slice(b"a.test");
        tlv.extend_from_slice(b"payload");
        check(
            &tlv,
            Ok((proxied("192.0.2.1:56324", "198.51.100.2:443"), 37)),
        );
        // TCP6 round trip.
        let h = encode(Version::V2, sa("[2001:db8::1]:1"), sa("[2001:db8::2]:2"));
        check(&h, Ok((proxied("[2001:db8::1]:1", "[2001:db8::2]:2"), 52)));
    }

    #[test]
    fn v2_malformed() {
        use ParseError::*;
        let with = |i: usize, b: u8| {
            let mut h = SPEC_V2_TCP4;
            h[i] = b;
            h
        };
        check(&with(12, 0x11), Err(V2Version(1)));
        check(&with(12, 0x22), Err(V2Command(2)));
        check(&with(13, 0x41), Err(V2Family(0x41)));
        check(&with(13, 0x13), Err(V2Family(0x13)));
        check(&with(15, 11), Err(V2TooShort(11)));
        check(&with(15, 13), Err(Incomplete));
        let mut big = SPEC_V2_TCP4;
        big[14] = 0x10;
        check(&big, Err(V2TooLong(0x100C)));
        let mut bad_tlv = SPEC_V2_TCP4.to_vec();
        bad_tlv[15] = 12 + 4;
        bad_tlv.extend_from_slice(&[0x02, 0, 6, b'a']);
        check(&bad_tlv, Err(V2Tlv));
        check(&with(11, b'X'), Err(NotProxy));
    }

    #[test]
    fn v2_truncated_is_incomplete() {
        for n in 0..SPEC_V2_TCP4.len() {
            check(&SPEC_V2_TCP4[..n], Err(ParseError::Incomplete));
        }
    }

    #[test]
    fn v1_encode_round_trips() {
        let cases = [
            (
                "192.0.2.1:56324",
                "198.51.100.2:443",
                "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
            ),
            (
                "[2001:db8::1]:1",
                "[2001:db8::2]:2",
                "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
            ),
            (
                "192.0.2.1:5",
                "[2001:db8::2]:6",
                "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 5 6\r\n",
            ),
        ];
        for (src, dst, text) in cases {
            let bytes = encode(Version::V1, sa(src), sa(dst));
            assert_eq!(String::from_utf8_lossy(&bytes), text);
            assert_eq!(parse(&bytes).map(|(_, n)| n), Ok(text.len()));
        }
    }

    /// Garbage never panics: a cheap deterministic generator over biased alphabets.
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let len = (next() % 140) as usize;
            let mut buf: Vec<u8> = if round % 2 == 0 {
                b"PROXY TCP4 ".to_vec()
            } else {
                SPEC_V2_TCP4[..12 + (round % 5)].to_vec()
            };
            let alphabet = b"0123456789.: \r\nTCP46UNKOWabcdef\x00\x01\x02\x11\x21\xff";
            for _ in 0..len {
                let r = next();
                buf.push(if r % 3 == 0 {
                    r as u8
                } else {
                    alphabet[(r as usize >> 8) % alphabet.len()]
                });
            }
            if let Ok((_, n)) = parse(&buf) {
                assert!(n <= buf.len());
            }
        }
    }
}
