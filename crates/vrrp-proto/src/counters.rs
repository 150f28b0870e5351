//! Per-router counters the shell exports as metrics (`vrrp.adverts_tx`, `vrrp.adverts_rx_invalid{reason}`, ...).
//!
//! Owns the [`Counters`] struct and the closed set of [`InvalidReason`]s.
//! Must not format or export metrics: the shell maps these fields to metric names.
//! To add a counter: add a field with a doc line, bump it in `router.rs` at the one place the
//! event happens, and cover it in a router test.

/// Why a received packet was discarded as invalid (bounded label set for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidReason {
    /// IPv4 TTL or IPv6 hop limit was not 255.
    Ttl,
    /// The packet arrived with an IP family other than the router's.
    Family,
    /// Sent to a multicast group other than the VRRP group.
    Destination,
    /// Unicast mode and the source is not a configured peer.
    UnknownPeer,
    /// Shorter than the fixed header.
    TooShort,
    /// Version is not 3.
    Version,
    /// Type is not ADVERTISEMENT.
    Type,
    /// Count IPvX Addr is zero.
    NoAddresses,
    /// Length inconsistent with the address count.
    Length,
    /// Checksum does not verify.
    Checksum,
    /// Max Adver Int is zero.
    ZeroInterval,
    /// The local router is the address owner, which discards all adverts (RFC 5798 §7.1).
    LocalIsOwner,
    /// Address list differs from ours and `drop_on_address_mismatch` is set.
    AddressList,
}

impl InvalidReason {
    /// Every reason, in declaration order.
    pub const ALL: [InvalidReason; 13] = [
        InvalidReason::Ttl,
        InvalidReason::Family,
        InvalidReason::Destination,
        InvalidReason::UnknownPeer,
        InvalidReason::TooShort,
        InvalidReason::Version,
        InvalidReason::Type,
        InvalidReason::NoAddresses,
        InvalidReason::Length,
        InvalidReason::Checksum,
        InvalidReason::ZeroInterval,
        InvalidReason::LocalIsOwner,
        InvalidReason::AddressList,
    ];

    /// Stable snake_case label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Ttl => "ttl",
            InvalidReason::Family => "family",
            InvalidReason::Destination => "destination",
            InvalidReason::UnknownPeer => "unknown_peer",
            InvalidReason::TooShort => "too_short",
            InvalidReason::Version => "version",
            InvalidReason::Type => "type",
            InvalidReason::NoAddresses => "no_addresses",
            InvalidReason::Length => "length",
            InvalidReason::Checksum => "checksum",
            InvalidReason::ZeroInterval => "zero_interval",
            InvalidReason::LocalIsOwner => "local_is_owner",
            InvalidReason::AddressList => "address_list",
        }
    }
}

/// Monotonic event counters of one [`crate::Router`]; read with [`crate::Router::counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Adverts sent (one per destination), including priority-0 ones.
    pub adverts_sent: u64,
    /// Priority-0 ("resigning") adverts sent, on shutdown or switchover.
    pub priority_zero_sent: u64,
    /// Valid adverts for our VRID processed by the state machine.
    pub adverts_received: u64,
    /// Valid priority-0 adverts received.
    pub priority_zero_received: u64,
    /// Packets for another VRID (not an error: another virtual router on the segment).
    pub other_vrid: u64,
    /// Our own adverts looped back (source is our primary address).
    pub own_looped: u64,
    /// Adverts whose address list differs from ours (misconfiguration, RFC 5798 §7.1 "MAY verify"),
    /// whether then processed or dropped.
    pub address_list_mismatch: u64,
    /// Valid adverts received while in Initialize or Fault, hence ignored.
    pub received_while_down: u64,
    /// State transitions of any kind.
    pub transitions: u64,
    /// Transitions into Master.
    pub became_master: u64,
    /// Transitions into Backup.
    pub became_backup: u64,
    /// Commands that did not apply in the current state (e.g. Switchover while Backup).
    pub commands_ignored: u64,
    invalid: [u64; InvalidReason::ALL.len()],
}

impl Counters {
    /// Invalid packets discarded for `reason`.
    pub fn invalid(&self, reason: InvalidReason) -> u64 {
        self.invalid[reason as usize]
    }

    /// Invalid packets discarded, all reasons together.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().sum()
    }

    pub(crate) fn count_invalid(&mut self, reason: InvalidReason) {
        self.invalid[reason as usize] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_slot() {
        let mut c = Counters::default();
        for (i, r) in InvalidReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            c.count_invalid(*r);
            assert_eq!(c.invalid(*r), 1);
        }
        assert_eq!(c.invalid_total(), InvalidReason::ALL.len() as u64);
    }
}
