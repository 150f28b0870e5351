//! The VRRP raw socket (IP protocol 112, IPv4 or IPv6) of one instance, registered with tokio.
//!
//! Owns opening and configuring the socket and turning datagrams into `(RxMeta, payload)` with
//! the real TTL / hop limit and destination, so vrrp-proto's RFC 5798 §7.1 checks see what the
//! wire carried:
//!
//! * IPv4: SO_BINDTODEVICE, 224.0.0.18 membership on the interface, IP_MULTICAST_IF, multicast
//!   TTL 255 and no loopback, unicast TTL 255, IP_PKTINFO and IP_RECVTTL; the kernel hands us
//!   the IPv4 header, which we parse.
//! * IPv6 (RFC 5798 §5.1.2): an AF_INET6 raw socket (no IPv6 header is delivered), ff02::12
//!   membership on the interface, IPV6_MULTICAST_IF, multicast and unicast hop limit 255, no
//!   loopback; the source is the interface's link-local address (the instance's primary
//!   address), chosen per packet with IPV6_PKTINFO; IPV6_RECVPKTINFO gives the destination and
//!   IPV6_RECVHOPLIMIT the hop limit of what was received. A datagram without either control
//!   message cannot be checked and is reported malformed.
//!
//! Must not interpret VRRP payloads (vrrp-proto does) and never panics on what it receives:
//! a datagram whose IPv4 header does not parse is reported as [`Rx::Malformed`].

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, recvmsg, sendmsg,
    setsockopt, sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tandem_vrrp_proto::{IPPROTO_VRRP, RxMeta, Transmit, VRRP_GROUP_V4, VRRP_GROUP_V6, VRRP_TTL};
use tokio::io::unix::AsyncFd;

use crate::error::Error;

/// Largest datagram read: an IPv4 header with options (60) plus the largest VRRP message
/// (8 + 255 × 16) fits comfortably.
pub const RX_BUFFER: usize = 4608;

/// One received datagram.
#[derive(Debug)]
pub enum Rx {
    /// A protocol 112 packet: metadata and the payload's range in the buffer.
    Packet {
        /// Source, destination and TTL / hop limit (IPv4: from the header, TTL from
        /// IP_RECVTTL when present; IPv6: from the socket address and control messages).
        meta: RxMeta,
        /// Start of the VRRP payload in the buffer.
        start: usize,
        /// End of the VRRP payload (trimmed to the IP total length).
        end: usize,
    },
    /// The datagram is not a well-formed protocol 112 packet (counted and dropped).
    Malformed(&'static str),
}

/// The raw socket of one instance.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ifindex: u32,
    primary: IpAddr,
}

impl VrrpSocket {
    /// Opens the socket on `interface` (index `ifindex`), sending from `primary`, whose family
    /// selects IPv4 or IPv6 (then `primary` is the interface's link-local address).
    /// With `multicast` it joins the VRRP group on the interface; in unicast mode it only
    /// receives what is addressed to this host.
    pub fn open(
        interface: &str,
        ifindex: u32,
        primary: IpAddr,
        vrid: u8,
        multicast: bool,
    ) -> Result<VrrpSocket, Error> {
        let socket = match primary {
            IpAddr::V4(v4) => open_v4(interface, ifindex, v4, vrid, multicast)?,
            IpAddr::V6(_) => open_v6(interface, ifindex, vrid, multicast)?,
        };
        let err = |source| Error::Socket {
            action: "register the socket with tokio",
            interface: interface.to_owned(),
            vrid,
            source,
        };
        socket.set_nonblocking(true).map_err(|e| Error::Socket {
            action: "make the socket non-blocking",
            interface: interface.to_owned(),
            vrid,
            source: e,
        })?;
        // SAFETY: `socket` is an open socket2::Socket that the AsyncFd takes ownership of; its
        // fd stays open and unchanged until the AsyncFd (and the Socket inside it) is dropped.
        let fd = unsafe { AsyncFd::register(socket) }
            .map_err(|e| err(io::Error::other(e.to_string())))?;
        Ok(VrrpSocket {
            fd,
            ifindex,
            primary,
        })
    }

    /// Waits for and reads one datagram into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Rx> {
        let v6 = self.primary.is_ipv6();
        loop {
            let mut guard = self.fd.readable().await?;
            let fd = guard.get_inner().as_raw_fd();
            let result = guard.try_io(|_| {
                if v6 {
                    recv_one_v6(fd, buf)
                } else {
                    recv_one(fd, buf)
                }
            });
            match result {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one advert from the primary address out of the interface (IP_PKTINFO /
    /// IPV6_PKTINFO), without blocking: a full socket buffer is an error the caller counts.
    pub fn send(&self, t: &Transmit) -> io::Result<()> {
        match (self.primary, t.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                send_v4(self.fd.get_ref(), self.ifindex, src, dst, &t.payload)
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                send_v6(self.fd.get_ref(), self.ifindex, src, dst, &t.payload)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "advert destination of the other address family",
            )),
        }
    }
}

/// Opens and configures an IPv4 raw protocol 112 socket (blocking; the caller registers it).
fn open_v4(
    interface: &str,
    ifindex: u32,
    primary: Ipv4Addr,
    vrid: u8,
    multicast: bool,
) -> Result<Socket, Error> {
    let err = |action: &'static str| {
        let interface = interface.to_owned();
        move |source: io::Error| Error::Socket {
            action,
            interface,
            vrid,
            source,
        }
    };
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )
    .map_err(err("open a raw ip protocol 112 socket"))?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(err("bind to the interface (SO_BINDTODEVICE)"))?;
    if multicast {
        socket
            .join_multicast_v4_n(&VRRP_GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))
            .map_err(err("join 224.0.0.18"))?;
    }
    socket
        .set_multicast_if_v4(&primary)
        .map_err(err("set IP_MULTICAST_IF"))?;
    socket
        .set_multicast_ttl_v4(u32::from(VRRP_TTL))
        .map_err(err("set IP_MULTICAST_TTL 255"))?;
    socket
        .set_multicast_loop_v4(false)
        .map_err(err("disable IP_MULTICAST_LOOP"))?;
    socket
        .set_ttl_v4(u32::from(VRRP_TTL))
        .map_err(err("set IP_TTL 255"))?;
    setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
        .map_err(|e| err("enable IP_PKTINFO")(e.into()))?;
    setsockopt(&socket, sockopt::Ipv4RecvTtl, &true)
        .map_err(|e| err("enable IP_RECVTTL")(e.into()))?;
    Ok(socket)
}

/// Opens and configures an IPv6 raw protocol 112 socket (blocking; the caller registers it).
fn open_v6(interface: &str, ifindex: u32, vrid: u8, multicast: bool) -> Result<Socket, Error> {
    let err = |action: &'static str| {
        let interface = interface.to_owned();
        move |source: io::Error| Error::Socket {
            action,
            interface,
            vrid,
            source,
        }
    };
    let socket = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )
    .map_err(err("open an ipv6 raw protocol 112 socket"))?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(err("bind to the interface (SO_BINDTODEVICE)"))?;
    if multicast {
        socket
            .join_multicast_v6(&VRRP_GROUP_V6, ifindex)
            .map_err(err("join ff02::12"))?;
    }
    socket
        .set_multicast_if_v6(ifindex)
        .map_err(err("set IPV6_MULTICAST_IF"))?;
    socket
        .set_multicast_hops_v6(u32::from(VRRP_TTL))
        .map_err(err("set IPV6_MULTICAST_HOPS 255"))?;
    socket
        .set_multicast_loop_v6(false)
        .map_err(err("disable IPV6_MULTICAST_LOOP"))?;
    socket
        .set_unicast_hops_v6(u32::from(VRRP_TTL))
        .map_err(err("set IPV6_UNICAST_HOPS 255"))?;
    setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
        .map_err(|e| err("enable IPV6_RECVPKTINFO")(e.into()))?;
    setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)
        .map_err(|e| err("enable IPV6_RECVHOPLIMIT")(e.into()))?;
    Ok(socket)
}

/// Opens a send-only-use raw protocol 112 socket (TTL and multicast TTL 255, no loopback), for
/// the guardian's resignation adverts. It is opened right before use and closed after, so the
/// copies of VRRP traffic every raw socket receives never pile up.
pub fn open_sender() -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )?;
    socket.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
    socket.set_multicast_loop_v4(false)?;
    socket.set_ttl_v4(u32::from(VRRP_TTL))?;
    Ok(socket)
}

/// Sends `payload` (a VRRP message) to `dst` from `src` out of interface `ifindex`, selecting
/// both through IP_PKTINFO, without blocking.
pub fn send_v4(
    socket: &Socket,
    ifindex: u32,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
) -> io::Result<()> {
    let pktinfo = libc::in_pktinfo {
        ipi_ifindex: i32::try_from(ifindex).unwrap_or(0),
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let dest = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::Ipv4PacketInfo(&pktinfo)];
    sendmsg(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_DONTWAIT,
        Some(&dest),
    )
    .map_err(io::Error::from)?;
    Ok(())
}

/// The IPv6 twin of [`open_sender`] (hop limit 255 for multicast and unicast, no loopback).
pub fn open_sender_v6() -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )?;
    socket.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
    socket.set_multicast_loop_v6(false)?;
    socket.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
    Ok(socket)
}

/// Sends `payload` (a VRRP message, checksum computed over `src`) to `dst` from the link-local
/// `src` out of interface `ifindex`, selecting both through IPV6_PKTINFO, without blocking.
pub fn send_v6(
    socket: &Socket,
    ifindex: u32,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    payload: &[u8],
) -> io::Result<()> {
    let pktinfo = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: src.octets(),
        },
        ipi6_ifindex: ifindex,
    };
    // Link-local and multicast-link-local destinations need the interface as scope.
    let dest = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, ifindex));
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::Ipv6PacketInfo(&pktinfo)];
    sendmsg(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_DONTWAIT,
        Some(&dest),
    )
    .map_err(io::Error::from)?;
    Ok(())
}

/// One non-blocking `recvmsg` on the IPv6 socket: the payload is the whole datagram, the
/// metadata comes from the socket address and the control messages.
fn recv_one_v6(fd: i32, buf: &mut [u8]) -> io::Result<Rx> {
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let (len, src, dst, hops, truncated) = {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
            .map_err(io::Error::from)?;
        let (mut dst, mut hops) = (None, None);
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                        dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                    }
                    ControlMessageOwned::Ipv6HopLimit(h) => hops = Some(h),
                    _ => {}
                }
            }
        }
        let src = msg.address.map(|a| a.ip());
        (
            msg.bytes,
            src,
            dst,
            hops,
            msg.flags.contains(MsgFlags::MSG_TRUNC),
        )
    };
    if truncated {
        return Ok(Rx::Malformed("datagram larger than the receive buffer"));
    }
    Ok(meta_v6(src, dst, hops, len.min(buf.len())))
}

/// Builds the metadata of an IPv6 datagram of `len` bytes from what `recvmsg` reported.
pub fn meta_v6(src: Option<Ipv6Addr>, dst: Option<Ipv6Addr>, hops: Option<i32>, len: usize) -> Rx {
    let Some(src) = src else {
        return Rx::Malformed("ipv6 datagram without a source address");
    };
    let Some(dst) = dst else {
        return Rx::Malformed("ipv6 datagram without IPV6_PKTINFO");
    };
    let Some(hops) = hops.and_then(|h| u8::try_from(h).ok()) else {
        return Rx::Malformed("ipv6 datagram without a valid IPV6_HOPLIMIT");
    };
    Rx::Packet {
        meta: RxMeta {
            src: IpAddr::V6(src),
            dst: IpAddr::V6(dst),
            ttl: hops,
        },
        start: 0,
        end: len,
    }
}

/// One non-blocking `recvmsg`, then the IPv4 header parse.
fn recv_one(fd: i32, buf: &mut [u8]) -> io::Result<Rx> {
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo, libc::c_int);
    let (len, cmsg_ttl, truncated) = {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
            .map_err(io::Error::from)?;
        let mut ttl = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::Ipv4Ttl(t) = c {
                    ttl = u8::try_from(t).ok();
                }
            }
        }
        (msg.bytes, ttl, msg.flags.contains(MsgFlags::MSG_TRUNC))
    };
    if truncated {
        return Ok(Rx::Malformed("datagram larger than the receive buffer"));
    }
    Ok(parse_ipv4(&buf[..len.min(buf.len())], cmsg_ttl))
}

/// Parses the IPv4 header a raw socket delivers in front of the payload.
pub fn parse_ipv4(packet: &[u8], cmsg_ttl: Option<u8>) -> Rx {
    if packet.len() < 20 {
        return Rx::Malformed("shorter than an ipv4 header");
    }
    if packet[0] >> 4 != 4 {
        return Rx::Malformed("not ipv4");
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || ihl > packet.len() {
        return Rx::Malformed("bad ipv4 header length");
    }
    if packet[9] != IPPROTO_VRRP {
        return Rx::Malformed("not ip protocol 112");
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < ihl {
        return Rx::Malformed("ipv4 total length shorter than its header");
    }
    let end = total.min(packet.len());
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Rx::Packet {
        meta: RxMeta {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            ttl: cmsg_ttl.unwrap_or(packet[8]),
        },
        start: ihl,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ttl: u8, proto: u8, total: u16) -> Vec<u8> {
        let mut h = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, ttl, proto, 0, 0, 198, 18, 0, 11, 224, 0, 0, 18,
        ];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h
    }

    #[test]
    fn parses_header_and_trims_to_total_length() {
        let mut p = header(255, 112, 28);
        p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0xee, 0xee]); // 2 bytes of padding
        match parse_ipv4(&p, None) {
            Rx::Packet { meta, start, end } => {
                assert_eq!(meta.ttl, 255);
                assert_eq!(meta.src, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)));
                assert_eq!(meta.dst, IpAddr::V4(VRRP_GROUP_V4));
                assert_eq!((start, end), (20, 28));
            }
            other => panic!("unexpected {other:?}"),
        }
        // The TTL from IP_RECVTTL wins over the header's.
        assert!(matches!(parse_ipv4(&p, Some(1)), Rx::Packet { meta, .. } if meta.ttl == 1));
    }

    #[test]
    fn ipv6_metadata_comes_from_the_control_messages() {
        let src: Ipv6Addr = "fe80::2".parse().unwrap();
        match meta_v6(Some(src), Some(VRRP_GROUP_V6), Some(255), 48) {
            Rx::Packet { meta, start, end } => {
                assert_eq!(meta.src, IpAddr::V6(src));
                assert_eq!(meta.dst, IpAddr::V6(VRRP_GROUP_V6));
                assert_eq!(meta.ttl, 255);
                assert_eq!((start, end), (0, 48));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(meta_v6(Some(src), Some(VRRP_GROUP_V6), Some(1), 8), Rx::Packet { meta, .. } if meta.ttl == 1)
        );
        for (s, d, h) in [
            (None, Some(VRRP_GROUP_V6), Some(255)),
            (Some(src), None, Some(255)),
            (Some(src), Some(VRRP_GROUP_V6), None),
            (Some(src), Some(VRRP_GROUP_V6), Some(256)),
            (Some(src), Some(VRRP_GROUP_V6), Some(-1)),
        ] {
            assert!(matches!(meta_v6(s, d, h, 8), Rx::Malformed(_)));
        }
    }

    #[test]
    fn malformed_headers_are_reported_not_panicked_on() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x45; 19],
            {
                let mut h = header(255, 112, 20);
                h[0] = 0x65; // version 6
                h
            },
            {
                let mut h = header(255, 112, 20);
                h[0] = 0x4f; // ihl 60 > len
                h
            },
            header(255, 6, 20),
            header(255, 112, 10),
        ];
        for c in cases {
            assert!(matches!(parse_ipv4(&c, None), Rx::Malformed(_)), "{c:?}");
        }
        // Every prefix of a valid packet is handled without panicking.
        let mut p = header(255, 112, 28);
        p.extend_from_slice(&[0; 8]);
        for n in 0..p.len() {
            let _ = parse_ipv4(&p[..n], None);
        }
    }
}
