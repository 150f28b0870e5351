//! VRRPv3 (RFC 5798) codec and router state machine, sans-IO.
//!
//! This crate owns the protocol: the advertisement wire format ([`codec`]), receive-side
//! validation of RFC 5798 §7.1 ([`mod@validate`]), the link-layer announcement frames a new master
//! sends ([`frames`]), and the per-virtual-router state machine of RFC 5798 §6 ([`Router`]).
//!
//! It deliberately does **not** touch sockets, netlink, the clock, threads or tokio.
//! The daemon shell (`vrrpd`) owns all IO: it feeds received packets, expired timers and
//! operator commands into a [`Router`] and executes the [`Output`] requests it drains.
//! See `LIFECYCLE.md` next to this crate's manifest for states, transitions and timers.

pub mod codec;
pub mod config;
pub mod counters;
pub mod frames;
#[doc(hidden)]
pub mod fuzz;
pub mod router;
pub mod time;
pub mod timer;
pub mod validate;

pub use codec::{Advertisement, DecodeError, EncodeError};
pub use config::{Config, ConfigError};
pub use counters::{Counters, InvalidReason};
pub use frames::{garp_frame, unsolicited_na_frame, virtual_mac};
pub use router::{Command, CommandError, Output, Reason, Router, RxDisposition, State, Transmit};
pub use time::Instant;
pub use timer::Timer;
pub use validate::{Received, RxError, RxMeta, validate};

/// IANA-assigned IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;

/// IPv4 multicast group VRRP advertisements are sent to (RFC 5798 §5.1.1.2).
pub const VRRP_GROUP_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 18);

/// IPv6 multicast group VRRP advertisements are sent to (RFC 5798 §5.1.2.2).
pub const VRRP_GROUP_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// The only TTL / hop limit a VRRP packet may be sent or accepted with (RFC 5798 §5.1.1.3, §7.1).
pub const VRRP_TTL: u8 = 255;
