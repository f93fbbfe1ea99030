//! What the host's sockets learn from ICMP (IP_RECVERR, ip(7)): a probe's TTL running
//! out at a router, a port or host unreachable, a path MTU. The proxy reads each error
//! from the socket's error queue and hands it back to the container as the ICMP
//! message the network sent, so traceroute, ECONNREFUSED and path MTU discovery work
//! through masquerade as they do through a kernel NAT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

/// One ICMP error a host socket received.
#[derive(Debug, Clone, Copy)]
pub(super) struct IcmpError {
    /// ICMP type and code, as the network sent them.
    pub kind: u8,
    pub code: u8,
    /// The next-hop MTU of fragmentation-needed (`ee_info`).
    pub info: u32,
    /// Who sent it: a router on the way, or the destination.
    /// Who sent the error: a router on the way, or the destination (its family is
    /// the socket's).
    pub offender: IpAddr,
    /// The start of what the socket had sent: for a ping socket, the echo header.
    pub payload: [u8; 8],
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: an int option read through a valid pointer; the fd is the caller's.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to queue ICMP errors on the socket (IP_RECVERR).
pub(super) fn enable(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
    }
}

/// The TTL of the socket's packets (IP_TTL, 1 to 255).
pub(super) fn set_ttl(fd: RawFd, v6: bool, ttl: u8) -> io::Result<()> {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TTL)
    };
    setsockopt_int(fd, level, name, ttl.max(1) as libc::c_int)
}

/// Whether the socket's packets carry DF and it refuses to fragment (IP_PMTUDISC_DO,
/// a send larger than the path MTU failing with EMSGSIZE), or the kernel fragments
/// them (IP_PMTUDISC_DONT): as the container's own packet asked.
pub(super) fn set_dont_fragment(fd: RawFd, df: bool) -> io::Result<()> {
    let mode = if df {
        libc::IP_PMTUDISC_DO
    } else {
        libc::IP_PMTUDISC_DONT
    };
    setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, mode)
}

/// The path MTU the kernel knows for a connected socket (IP_MTU).
pub(super) fn path_mtu(fd: RawFd) -> Option<u32> {
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: IP_MTU writes an int through the pointer, of the length given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0 && mtu > 0).then_some(mtu as u32)
}

/// Asks the kernel to tell, with each datagram received, the TTL it arrived with
/// (IP_RECVTTL; read by [`recv_with_ttl`]).
pub(super) fn want_ttl(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
    }
}

/// Receives one datagram into `buf`, with the TTL it arrived with if the socket asked
/// for it ([`want_ttl`]).
pub(super) fn recv_with_ttl(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u8>)> {
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the sizes it gives.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = None;
    // SAFETY: walking the control messages the kernel just wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if (c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_TTL)
                || (c.cmsg_level == libc::SOL_IPV6 && c.cmsg_type == libc::IPV6_HOPLIMIT)
            {
                let v: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                ttl = u8::try_from(v).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, ttl))
}

/// Reads one entry of the socket's error queue. `None` when the queue is empty;
/// `Some(None)` for an entry that is not an ICMP error from the network (a local
/// one, say), which is read and passed over.
pub(super) fn read(fd: RawFd) -> Option<Option<IcmpError>> {
    let mut payload = [0u8; 8];
    // Room for one sock_extended_err and the offender's address, with the cmsg header.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the sizes it gives.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    // SAFETY: walking the control messages the kernel just wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let v4 = c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_RECVERR;
            let v6 = c.cmsg_level == libc::SOL_IPV6 && c.cmsg_type == libc::IPV6_RECVERR;
            if v4 || v6 {
                let data = libc::CMSG_DATA(cmsg);
                let ee: libc::sock_extended_err = std::ptr::read_unaligned(data.cast());
                let origin = if v6 {
                    libc::SO_EE_ORIGIN_ICMP6
                } else {
                    libc::SO_EE_ORIGIN_ICMP
                };
                if ee.ee_origin != origin {
                    return Some(None);
                }
                // SO_EE_OFFENDER: the sockaddr right after the extended error.
                let at = data.add(std::mem::size_of::<libc::sock_extended_err>());
                let offender = if v6 {
                    let sin6: libc::sockaddr_in6 = std::ptr::read_unaligned(at.cast());
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                } else {
                    let sin: libc::sockaddr_in = std::ptr::read_unaligned(at.cast());
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                };
                return Some(Some(IcmpError {
                    kind: ee.ee_type,
                    code: ee.ee_code,
                    info: ee.ee_info,
                    offender,
                    payload,
                }));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Some(None)
}

/// The head of a container's packet (its IP header and the first 8 bytes after it),
/// kept to be quoted in an ICMP error about it (RFC 792).
#[derive(Clone, Copy)]
pub(super) struct Quote {
    bytes: [u8; vswitch::wire::icmpv4::MAX_QUOTE],
    len: u8,
}

impl Default for Quote {
    fn default() -> Self {
        Quote {
            bytes: [0; vswitch::wire::icmpv4::MAX_QUOTE],
            len: 0,
        }
    }
}

impl Quote {
    pub fn of(packet: &[u8]) -> Quote {
        // IPv6: the fixed header and 28 bytes of what follows (the ports, a TCP
        // sequence number); IPv4: its header and 8 bytes, as routers quote (RFC 792).
        let q = if packet.first().is_some_and(|b| b >> 4 == 6) {
            &packet[..packet.len().min(vswitch::wire::icmpv4::MAX_QUOTE)]
        } else {
            vswitch::wire::icmpv4::quote(packet)
        };
        let mut out = Quote::default();
        out.bytes[..q.len()].copy_from_slice(q);
        out.len = q.len() as u8;
        out
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
