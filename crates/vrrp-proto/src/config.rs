//! Per-virtual-router configuration (RFC 5798 §6.1 parameters) and its validation.
//!
//! Owns the [`Config`] value the shell builds from the appliance config, the defaults (named
//! constants with units) and [`Config::validate`].
//! Must not parse files or know about interfaces: `tandem-config` and `vrrpd` do that.

use std::net::IpAddr;
use std::time::Duration;

/// Default priority of a backup-capable router (RFC 5798 §6.1).
pub const DEFAULT_PRIORITY: u8 = 100;
/// Default Advertisement_Interval, in centiseconds (RFC 5798 §6.1: 1 second).
pub const DEFAULT_ADVERT_INTERVAL_CS: u16 = 100;
/// Default preempt delay: none (RFC behaviour).
pub const DEFAULT_PREEMPT_DELAY: Duration = Duration::ZERO;
/// Default hold after a planned switchover during which this router will not preempt.
pub const DEFAULT_SWITCHOVER_HOLD: Duration = Duration::from_secs(60);
/// Priority value reserved for the IP address owner.
pub const OWNER_PRIORITY: u8 = 255;

/// Configuration of one virtual router on one interface.
///
/// Build with [`Config::new`] and adjust the public fields; [`crate::Router::new`] validates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Virtual Router Identifier, 1..=255.
    pub vrid: u8,
    /// This router's primary address on the interface: the IP source of its adverts and the
    /// tie-breaker when priorities are equal (RFC 5798 §6.4.3). Its family selects IPv4 or IPv6;
    /// for IPv6 it must be the interface's link-local address (RFC 5798 §5.1.2.1).
    pub primary_address: IpAddr,
    /// Base priority, 1..=255; 255 means this router owns the virtual addresses.
    pub priority: u8,
    /// Advertisement_Interval, in centiseconds, 1..=4095.
    pub advert_interval_cs: u16,
    /// The virtual addresses (VIPs), same family as `primary_address`, 1..=255 of them.
    /// For IPv6 RFC 5798 expects the first one to be the virtual router's link-local address;
    /// this is not enforced here.
    pub virtual_addresses: Vec<IpAddr>,
    /// Preempt_Mode: a backup takes over from a lower-priority master.
    pub preempt: bool,
    /// Accept_Mode: a non-owner master accepts packets addressed to the VIPs.
    /// Only exposed to the shell ([`crate::Router::accepts_vip_traffic`]); the core does not use it.
    pub accept_mode: bool,
    /// keepalived-style preempt delay: for this long after startup (or link up) a backup with
    /// `preempt` behaves as if preempt were off, i.e. it accepts a lower-priority master.
    pub preempt_delay: Duration,
    /// After a [`crate::Command::Switchover`] this router behaves as if preempt were off for
    /// this long, so it does not immediately take the master role back.
    pub switchover_hold: Duration,
    /// Unicast peers. Empty: advertise to the multicast group. Otherwise one advert per peer is
    /// sent to each peer's address, and adverts from any other source are rejected.
    pub unicast_peers: Vec<IpAddr>,
    /// Drop a non-owner advert whose address list differs from `virtual_addresses`
    /// (RFC 3768 §7.1 wording, kept in RFC 5798 §7.1 as a detached bullet; keepalived drops too).
    /// Off by default: the mismatch is only logged and counted, because dropping makes both
    /// nodes master while a VIP change is being rolled out to the pair.
    pub drop_on_address_mismatch: bool,
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// VRID 0 is not a valid virtual router identifier.
    #[error("vrid 0 is invalid, use 1..=255")]
    Vrid,
    /// Priority 0 is reserved for "master resigning" adverts.
    #[error("priority 0 is reserved for vrid {vrid}, use 1..=255")]
    Priority {
        /// The virtual router.
        vrid: u8,
    },
    /// The advertisement interval is zero or does not fit the 12-bit field.
    #[error("advertisement interval {cs} cs for vrid {vrid} is outside 1..=4095")]
    Interval {
        /// The virtual router.
        vrid: u8,
        /// The configured interval, in centiseconds.
        cs: u16,
    },
    /// The primary address is unspecified or multicast.
    #[error("primary address {addr} for vrid {vrid} is not a unicast address")]
    PrimaryAddress {
        /// The virtual router.
        vrid: u8,
        /// The configured primary address.
        addr: IpAddr,
    },
    /// An IPv6 primary address must be the interface's link-local address (RFC 5798 §5.1.2.1).
    #[error("ipv6 primary address {addr} for vrid {vrid} is not link-local (fe80::/10)")]
    Ipv6PrimaryNotLinkLocal {
        /// The virtual router.
        vrid: u8,
        /// The configured primary address.
        addr: IpAddr,
    },
    /// No virtual address, or more than the 8-bit count field can carry.
    #[error("vrid {vrid} has {count} virtual addresses, need 1..=255")]
    VirtualAddressCount {
        /// The virtual router.
        vrid: u8,
        /// Number configured.
        count: usize,
    },
    /// A virtual address or unicast peer is not of the primary address's family.
    #[error(
        "address {addr} for vrid {vrid} is not of the same family as primary address {primary}"
    )]
    Family {
        /// The virtual router.
        vrid: u8,
        /// The offending address.
        addr: IpAddr,
        /// The primary address.
        primary: IpAddr,
    },
}

impl Config {
    /// A configuration with RFC defaults: priority 100, 1 s interval, preempt on, accept off,
    /// no preempt delay, a 60 s switchover hold, multicast.
    pub fn new(vrid: u8, primary_address: IpAddr, virtual_addresses: Vec<IpAddr>) -> Config {
        Config {
            vrid,
            primary_address,
            priority: DEFAULT_PRIORITY,
            advert_interval_cs: DEFAULT_ADVERT_INTERVAL_CS,
            virtual_addresses,
            preempt: true,
            accept_mode: false,
            preempt_delay: DEFAULT_PREEMPT_DELAY,
            switchover_hold: DEFAULT_SWITCHOVER_HOLD,
            unicast_peers: Vec::new(),
            drop_on_address_mismatch: false,
        }
    }

    /// Checks every field; returns the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let vrid = self.vrid;
        if vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if self.priority == 0 {
            return Err(ConfigError::Priority { vrid });
        }
        if self.advert_interval_cs == 0 || self.advert_interval_cs > crate::codec::MAX_ADVER_INT_CS
        {
            return Err(ConfigError::Interval {
                vrid,
                cs: self.advert_interval_cs,
            });
        }
        let primary = self.primary_address;
        if primary.is_unspecified() || primary.is_multicast() {
            return Err(ConfigError::PrimaryAddress {
                vrid,
                addr: primary,
            });
        }
        if let IpAddr::V6(v6) = primary
            && v6.segments()[0] & 0xffc0 != 0xfe80
        {
            return Err(ConfigError::Ipv6PrimaryNotLinkLocal {
                vrid,
                addr: primary,
            });
        }
        let count = self.virtual_addresses.len();
        if count == 0 || count > 255 {
            return Err(ConfigError::VirtualAddressCount { vrid, count });
        }
        let mixed = self
            .virtual_addresses
            .iter()
            .chain(&self.unicast_peers)
            .find(|a| a.is_ipv6() != primary.is_ipv6());
        if let Some(&addr) = mixed {
            return Err(ConfigError::Family {
                vrid,
                addr,
                primary,
            });
        }
        Ok(())
    }

    /// Advertisement_Interval as a duration.
    pub fn advert_interval(&self) -> Duration {
        centis(self.advert_interval_cs)
    }

    /// Whether adverts go to the IPv6 group / peers.
    pub fn is_ipv6(&self) -> bool {
        self.primary_address.is_ipv6()
    }

    /// The VRRP multicast group of this router's family.
    pub fn group(&self) -> IpAddr {
        if self.is_ipv6() {
            IpAddr::V6(crate::VRRP_GROUP_V6)
        } else {
            IpAddr::V4(crate::VRRP_GROUP_V4)
        }
    }
}

/// Converts centiseconds to a duration.
pub(crate) fn centis(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn validate_reports_each_problem() {
        let good = Config::new(51, ip("198.18.0.11"), vec![ip("198.18.0.100")]);
        assert_eq!(good.validate(), Ok(()));
        let check = |f: &dyn Fn(&mut Config), want: ConfigError| {
            let mut c = good.clone();
            f(&mut c);
            assert_eq!(c.validate(), Err(want));
        };
        check(&|c| c.vrid = 0, ConfigError::Vrid);
        check(&|c| c.priority = 0, ConfigError::Priority { vrid: 51 });
        check(
            &|c| c.advert_interval_cs = 0,
            ConfigError::Interval { vrid: 51, cs: 0 },
        );
        check(
            &|c| c.advert_interval_cs = 4096,
            ConfigError::Interval { vrid: 51, cs: 4096 },
        );
        check(
            &|c| c.primary_address = ip("224.0.0.18"),
            ConfigError::PrimaryAddress {
                vrid: 51,
                addr: ip("224.0.0.18"),
            },
        );
        check(
            &|c| {
                c.primary_address = ip("2001:db8::1");
                c.virtual_addresses = vec![ip("2001:db8::100")];
            },
            ConfigError::Ipv6PrimaryNotLinkLocal {
                vrid: 51,
                addr: ip("2001:db8::1"),
            },
        );
        check(
            &|c| c.virtual_addresses.clear(),
            ConfigError::VirtualAddressCount { vrid: 51, count: 0 },
        );
        check(
            &|c| c.unicast_peers.push(ip("fe80::1")),
            ConfigError::Family {
                vrid: 51,
                addr: ip("fe80::1"),
                primary: ip("198.18.0.11"),
            },
        );
    }
}
