//! Address, MAC and name validation for the testbed.
//!
//! Owns [`Cidr`] (an IPv4 address with prefix length, restricted to 198.18.0.0/15) and the
//! checks on MACs and names. It never runs a command and never touches a namespace: everything
//! here is pure so it can be unit-tested without root.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The benchmarking range (RFC 2544) reserved for tests: 198.18.0.0/15.
pub const TEST_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// Prefix length of [`TEST_NET`].
pub const TEST_NET_PREFIX_LEN: u8 = 15;

/// Longest Linux interface name in bytes (IFNAMSIZ 16 minus the NUL).
pub const IFNAME_MAX: usize = 15;

/// An IPv4 address with a prefix length, e.g. `198.18.0.11/24`, inside 198.18.0.0/15.
///
/// Constructing one validates it: the address must be in 198.18.0.0/15 and the prefix length
/// must be at least 15, so the connected route the kernel installs stays inside the test range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Cidr {
    /// Validates and builds a `Cidr`.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self> {
        let shown = format!("{addr}/{prefix_len}");
        if prefix_len > 32 {
            return Err(Error::InvalidAddress {
                addr: shown,
                reason: "prefix length above 32",
            });
        }
        if !in_test_net(addr) {
            return Err(Error::AddressNotAllowed {
                addr: shown,
                reason: "outside 198.18.0.0/15",
            });
        }
        if prefix_len < TEST_NET_PREFIX_LEN {
            return Err(Error::AddressNotAllowed {
                addr: shown,
                reason: "prefix shorter than /15 would route outside the test range",
            });
        }
        Ok(Self { addr, prefix_len })
    }

    /// The address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidAddress {
            addr: s.to_owned(),
            reason,
        };
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| invalid("missing /prefix_len"))?;
        let addr: Ipv4Addr = ip.parse().map_err(|_| invalid("not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| invalid("prefix length is not a number"))?;
        Self::new(addr, prefix_len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Whether `addr` lies in 198.18.0.0/15.
pub fn in_test_net(addr: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - u32::from(TEST_NET_PREFIX_LEN));
    u32::from(addr) & mask == u32::from(TEST_NET)
}

/// Checks a MAC address written as six colon-separated hex octets; it must be unicast.
pub(crate) fn check_mac(mac: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidMac {
        mac: mac.to_owned(),
        reason,
    };
    let octets: Vec<&str> = mac.split(':').collect();
    if octets.len() != 6 {
        return Err(invalid("expected six colon-separated octets"));
    }
    let mut first = 0u8;
    for (i, o) in octets.iter().enumerate() {
        if o.len() != 2 {
            return Err(invalid("each octet must be two hex digits"));
        }
        let v = u8::from_str_radix(o, 16).map_err(|_| invalid("not hex"))?;
        if i == 0 {
            first = v;
        }
    }
    if first & 1 == 1 {
        return Err(invalid(
            "multicast bit set, an interface needs a unicast mac",
        ));
    }
    Ok(())
}

/// Checks a Linux interface name: 1..=15 bytes of `[A-Za-z0-9_.-]`.
pub(crate) fn check_ifname(name: &str) -> Result<()> {
    check_chars("interface", name, IFNAME_MAX)
}

/// Checks a testbed, host or segment name: 1..=`max` bytes of `[A-Za-z0-9_.-]`.
///
/// The same alphabet as interface names keeps namespace names safe as file names and as `ip`
/// arguments.
pub(crate) fn check_chars(kind: &'static str, name: &str, max: usize) -> Result<()> {
    let invalid = |reason| Error::InvalidName {
        kind,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > max {
        return Err(invalid("too long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(invalid(
            "only ASCII letters, digits, '_', '-' and '.' are allowed",
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid("reserved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_cidr(input: &str, expected: std::result::Result<&str, &str>) {
        let got = input
            .parse::<Cidr>()
            .map(|c| c.to_string())
            .map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(g), Ok(e)) => assert_eq!(g, e, "{input}"),
            (Err(g), Err(e)) => assert!(g.contains(e), "{input}: error {g:?} lacks {e:?}"),
            (g, e) => panic!("{input}: got {g:?}, expected {e:?}"),
        }
    }

    #[test]
    fn cidr_accepts_only_the_test_range() {
        check_cidr("198.18.0.11/24", Ok("198.18.0.11/24"));
        check_cidr("198.19.255.254/15", Ok("198.19.255.254/15"));
        check_cidr("198.18.0.1/32", Ok("198.18.0.1/32"));
        check_cidr("198.17.255.255/24", Err("outside 198.18.0.0/15"));
        check_cidr("198.20.0.1/24", Err("outside 198.18.0.0/15"));
        check_cidr("10.0.0.1/24", Err("outside 198.18.0.0/15"));
        check_cidr("198.18.0.1/8", Err("prefix shorter than /15"));
        check_cidr("198.18.0.1/33", Err("prefix length above 32"));
        check_cidr("198.18.0.1", Err("missing /prefix_len"));
        check_cidr("fe80::1/64", Err("not an IPv4 address"));
        check_cidr("198.18.0.1/x", Err("prefix length is not a number"));
    }

    #[test]
    fn mac_must_be_six_unicast_octets() {
        assert!(check_mac("02:00:c6:12:00:0b").is_ok());
        assert!(check_mac("02:00:C6:12:00:0B").is_ok());
        let err = |m| check_mac(m).unwrap_err().to_string();
        assert!(err("01:00:5e:00:00:12").contains("multicast"));
        assert!(err("02:00:c6:12:00").contains("six"));
        assert!(err("02:00:c6:12:00:zz").contains("not hex"));
        assert!(err("2:00:c6:12:00:0b").contains("two hex digits"));
    }

    #[test]
    fn ifname_limits() {
        assert!(check_ifname("eth1").is_ok());
        assert!(check_ifname("a23456789012345").is_ok());
        let err = |n| check_ifname(n).unwrap_err().to_string();
        assert!(err("a234567890123456").contains("too long"));
        assert!(err("").contains("empty"));
        assert!(err("eth 1").contains("only ASCII"));
        assert!(err("eth/1").contains("only ASCII"));
        assert!(err("..").contains("reserved"));
    }
}
