//! Route netlink: interface lookup, link state, and VIP add/replace/remove with finite address
//! lifetimes (synchronous), plus the link-change notifications the daemon waits on (async).
//!
//! Owns the one place where Tandem talks `NETLINK_ROUTE` (`netlink-packet-route` messages over a
//! blocking `netlink-sys` socket with a receive timeout). Requests are synchronous on purpose:
//! the guardian process uses them without an async runtime, and every request is a
//! sub-millisecond kernel round trip, so the daemon calls them inline. [`LinkEvents`] is the
//! exception: a socket subscribed to `RTMGRP_LINK`, registered with tokio, that wakes the
//! instance task when any link changes (the task then re-reads the links it cares about, so
//! the notifications themselves are never parsed and a lost one, `ENOBUFS`, costs nothing but
//! the same re-read).
//! Must not decide *when* to change addresses (the instance task and the guardian do) and never
//! touches an address it was not asked about.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope, CacheInfo,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::unix::AsyncFd;

/// How long one request waits for the kernel's answer before failing with `TimedOut`.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Most messages accepted in one reply (a dump of addresses on a busy box is still far below).
const MAX_REPLY_MESSAGES: usize = 4096;

/// Receive buffer of the link notification socket: room for a burst of link messages (one is
/// about 1.5 KiB with stats) before the kernel reports an overrun (`ENOBUFS`).
const EVENTS_RCVBUF: usize = 256 * 1024;

/// A route-netlink socket subscribed to link changes (`RTMGRP_LINK`), for the async daemon.
#[derive(Debug)]
pub struct LinkEvents {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl LinkEvents {
    /// Opens the socket in the caller's network namespace; must be called inside a tokio runtime.
    pub fn open() -> io::Result<LinkEvents> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, nix::libc::RTMGRP_LINK as u32))?;
        socket.set_rx_buf_sz(EVENTS_RCVBUF)?;
        socket.set_non_blocking(true)?;
        // SAFETY: `socket` is an open netlink socket that the AsyncFd takes ownership of; its fd
        // stays open and unchanged until the AsyncFd (and the Socket inside it) is dropped.
        let fd =
            unsafe { AsyncFd::register(socket) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(LinkEvents {
            fd,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Waits until at least one link notification arrived, then drains every pending one.
    /// Returns how many datagrams were read; an overrun (`ENOBUFS`, notifications lost) also
    /// returns, since the caller re-reads link state either way.
    pub async fn changed(&mut self) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut read = 0;
            let mut overrun = false;
            loop {
                match nix::sys::socket::recv(
                    self.fd.get_ref().as_raw_fd(),
                    &mut self.buf,
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(_) => read += 1,
                    Err(nix::errno::Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::ENOBUFS) => overrun = true,
                    Err(e) => return Err(e.into()),
                }
                if read >= 1024 {
                    break; // bounded: the rest is read on the next call
                }
            }
            if read > 0 || overrun {
                return Ok(read);
            }
        }
    }
}

/// What the daemon needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Kernel interface index.
    pub index: u32,
    /// Administratively up (`IFF_UP`) *and* carrier present (`IFF_LOWER_UP`).
    pub up: bool,
    /// Hardware address, when the link has an Ethernet one.
    pub mac: Option<[u8; 6]>,
}

/// A blocking route-netlink client; one per thread or task (not shared).
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens a route-netlink socket in the caller's network namespace.
    pub fn new() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let timeout =
            nix::sys::time::TimeVal::new(i64::try_from(REPLY_TIMEOUT.as_secs()).unwrap_or(2), 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(io::Error::from)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Looks an interface up by name; `Ok(None)` when it does not exist.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(link_info)),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Looks an interface up by index; `Ok(None)` when it does not exist (any more).
    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<LinkInfo>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(link_info)),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds `addr/prefix` on interface `index`, or replaces it if present (which renews its
    /// lifetime). `lifetime` is rounded up to whole seconds, the kernel's granularity; `None`
    /// means permanent.
    ///
    /// IPv6 addresses are added with `IFA_F_NODAD`: without it a new address stays *tentative*
    /// (unusable as a source, not answered for) during Duplicate Address Detection, one
    /// `RetransTimer` per `dad_transmits` (1 s by default), which would delay every IPv6
    /// takeover by that long. A VIP is duplicated on purpose during a takeover race; VRRP, not
    /// DAD, decides who holds it (keepalived adds its IPv6 VIPs with `nodad` too).
    pub fn add_address(
        &mut self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
        lifetime: Option<Duration>,
    ) -> io::Result<()> {
        let mut msg = address_message(index, addr, prefix);
        if let Some(lifetime) = lifetime {
            let secs = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
            let secs = u32::try_from(secs.max(1)).unwrap_or(u32::MAX - 1);
            let mut info = CacheInfo::default();
            info.ifa_preferred = secs;
            info.ifa_valid = secs;
            msg.attributes.push(AddressAttribute::CacheInfo(info));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// Removes `addr/prefix` from interface `index`. Returns `Ok(false)` when it was not there.
    pub fn del_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<bool> {
        let msg = address_message(index, addr, prefix);
        match self.request(RouteNetlinkMessage::DelAddress(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The usable IPv6 link-local addresses of interface `index` (not tentative, not failed
    /// DAD), in the kernel's order: candidates for an IPv6 instance's primary address.
    pub fn link_local_v6(&mut self, index: u32) -> io::Result<Vec<Ipv6Addr>> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet6;
        let replies = self.request(RouteNetlinkMessage::GetAddress(query), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewAddress(a) = r else {
                continue;
            };
            if a.header.index != index {
                continue;
            }
            let flags = a
                .attributes
                .iter()
                .find_map(|at| match at {
                    AddressAttribute::Flags(f) => Some(*f),
                    _ => None,
                })
                .unwrap_or_else(|| {
                    AddressFlags::from_bits_retain(u32::from(a.header.flags.bits()))
                });
            if flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed) {
                continue;
            }
            let addr = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = addr
                && is_link_local(IpAddr::V6(ip))
            {
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// The addresses on interface `index`, with their prefix lengths.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for r in replies {
            if let RouteNetlinkMessage::NewAddress(a) = r {
                if a.header.index != index {
                    continue;
                }
                let local = a.attributes.iter().find_map(|at| match at {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let addr = local.or_else(|| {
                    a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
                if let Some(ip) = addr {
                    out.push((ip, a.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Sends one request and collects the inner messages of its reply, until the ACK (plain
    /// requests) or `NLMSG_DONE` (dumps). A NACK becomes the kernel's errno as an `io::Error`.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {e}"))
                    })?;
                let len = usize::try_from(msg.header.length).unwrap_or(0);
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "zero-length netlink message",
                    ));
                }
                // Netlink messages are 4-byte aligned in a datagram.
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a late reply to an earlier, timed-out request
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        if out.len() >= MAX_REPLY_MESSAGES {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "netlink reply too long",
                            ));
                        }
                        out.push(m);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn address_message(index: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.prefix_len = prefix;
    msg.header.scope = if is_link_local(addr) {
        AddressScope::Link
    } else {
        AddressScope::Universe
    };
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    if addr.is_ipv6() {
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    msg
}

/// Whether `addr` is an IPv6 link-local address (fe80::/10).
pub fn is_link_local(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

fn link_info(msg: RouteNetlinkMessage) -> Option<LinkInfo> {
    let RouteNetlinkMessage::NewLink(link) = msg else {
        return None;
    };
    let flags = link.header.flags;
    let mac = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    });
    Some(LinkInfo {
        index: link.header.index,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
        mac,
    })
}
