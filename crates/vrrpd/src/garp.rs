//! Announcements on takeover, gratuitous ARP (IPv4 VIPs) and unsolicited Neighbor
//! Advertisements (IPv6 VIPs, RFC 5798 §6.4.1): an AF_PACKET socket that writes vrrp-proto's
//! frames, and the repetition policy.
//!
//! Owns the packet socket (protocol 0, so it never receives) and [`GarpSchedule`]: on takeover
//! one burst of [`GARP_BURST`] frames per VIP (ARP or NA, same schedule), [`GARP_BURST_INTERVAL`] apart, then one refresh
//! burst every [`GARP_REFRESH`] while master, so a switch or client that missed the takeover
//! (or flushed its table) catches up. keepalived sends 5 and 5 more after 5 s; we send the
//! first five faster (100 ms apart instead of back to back, so one lost frame on a busy port
//! does not lose them all) and keep refreshing.
//! Must not build frames (vrrp-proto does) nor decide that a takeover happened (the router does).

use std::io;
use std::mem::size_of;
use std::time::{Duration, Instant};

use nix::libc;
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

use crate::error::Error;

/// Frames per VIP in a burst.
pub const GARP_BURST: u32 = 5;
/// Spacing of the frames of a burst.
pub const GARP_BURST_INTERVAL: Duration = Duration::from_millis(100);
/// Period of the refresh bursts while master.
pub const GARP_REFRESH: Duration = Duration::from_secs(60);

/// A send-only packet socket bound to nothing, addressed per frame to one interface.
#[derive(Debug)]
pub struct GarpSocket {
    socket: Socket,
    /// The interface, for ARP frames.
    dest_arp: SockAddr,
    /// The interface, for IPv6 frames (NA).
    dest_ipv6: SockAddr,
}

impl GarpSocket {
    /// Opens the packet socket for interface `ifindex`.
    pub fn open(interface: &str, ifindex: u32) -> Result<GarpSocket, Error> {
        let err = |source| Error::PacketSocket {
            interface: interface.to_owned(),
            source,
        };
        // Protocol 0: the socket receives no frames at all, it only sends.
        let socket =
            Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0))).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ifindex too large",
            ))
        })?;
        Ok(GarpSocket {
            socket,
            dest_arp: link_dest(ifindex, libc::ETH_P_ARP as u16, [0xff; 6]),
            dest_ipv6: link_dest(ifindex, libc::ETH_P_IPV6 as u16, [0x33, 0x33, 0, 0, 0, 1]),
        })
    }

    /// Writes one Ethernet frame (destination MAC inside the frame) to the interface; the
    /// link-layer protocol of the send address follows the frame's EtherType.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let dest = if frame.get(12..14) == Some(&[0x86, 0xdd]) {
            &self.dest_ipv6
        } else {
            &self.dest_arp
        };
        self.socket.send_to(frame, dest)?;
        Ok(())
    }
}

/// The `sockaddr_ll` that sends to interface `ifindex` with link-layer protocol `protocol`.
fn link_dest(ifindex: i32, protocol: u16, mac: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `SockAddrStorage` wraps a zeroed `sockaddr_storage`, which is at least as large
    // and as aligned as `sockaddr_ll` (it is defined to hold any socket address type), and
    // all-zero bytes are a valid `sockaddr_ll`.
    let ll: &mut libc::sockaddr_ll = unsafe { storage.view_as() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = ifindex;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&mac);
    let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).unwrap_or(20);
    // SAFETY: `storage` now holds an initialised `sockaddr_ll` (family AF_PACKET) and `len`
    // is exactly its size, which is what `SockAddr::new` requires.
    unsafe { SockAddr::new(storage, len) }
}

/// When the next gratuitous ARP burst frame is due.
#[derive(Debug, Default, Clone)]
pub struct GarpSchedule {
    /// Frames left in the current burst after the one due at `next`.
    remaining: u32,
    /// When the next frame of a burst is due.
    next: Option<Instant>,
    /// When the next refresh burst starts.
    refresh: Option<Instant>,
}

impl GarpSchedule {
    /// A takeover: a burst starts now (the caller sends the first frame set immediately).
    pub fn start(&mut self, now: Instant) {
        self.remaining = GARP_BURST.saturating_sub(1);
        self.next = (self.remaining > 0).then(|| now + GARP_BURST_INTERVAL);
        self.refresh = Some(now + GARP_REFRESH);
    }

    /// No longer master: nothing more to send.
    pub fn stop(&mut self) {
        *self = GarpSchedule::default();
    }

    /// The next instant something is due.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.next, self.refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a frame set is due at `now`; advances the schedule when it is.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|t| t <= now) {
            self.remaining = self.remaining.saturating_sub(1);
            self.next = (self.remaining > 0).then(|| now + GARP_BURST_INTERVAL);
            return true;
        }
        if self.refresh.is_some_and(|t| t <= now) {
            self.start(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_sends_five_then_refreshes() {
        let t0 = Instant::now();
        let mut s = GarpSchedule::default();
        assert_eq!(s.deadline(), None);
        s.start(t0); // frame set 1 sent by the caller
        let mut sent = 1;
        let mut t = t0;
        while let Some(d) = s.deadline() {
            if d >= t0 + GARP_REFRESH {
                break;
            }
            t = d;
            assert!(s.due(t));
            sent += 1;
        }
        assert_eq!(sent, GARP_BURST);
        assert_eq!(t - t0, GARP_BURST_INTERVAL * (GARP_BURST - 1));
        assert_eq!(s.deadline(), Some(t0 + GARP_REFRESH));
        assert!(!s.due(t));
        assert!(s.due(t0 + GARP_REFRESH));
        s.stop();
        assert_eq!(s.deadline(), None);
    }
}
