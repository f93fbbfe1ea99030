//! The tunnel endpoint's IO shell: one internal port on every bridge with a VNI, and
//! UDP sockets on the underlay. The decisions are [`Endpoint`]'s; this file moves the
//! bytes. A frame the bridge sends to the port is encapsulated (its checksum
//! finished, a TCP super-frame cut into segments first) and sent to the peers the
//! endpoint chose. A datagram from a peer is accepted (and its inner source MAC
//! learned) by the endpoint, and the inner frame injected into the VNI's bridge,
//! consecutive TCP segments of a flow merged (GRO). A peer's kernel may send checksums
//! left partial and TSO super-frames uncut (a VXLAN device over a veth does, with the
//! kernel's default offloads): the first go on marked NEEDS_CSUM, the second as GSO
//! frames, as the kernel would hand them to its own containers (see
//! [`offload::rx_checksums`] and [`offload::rx_super_frame`]).

use std::any::Any;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::UdpSocket;
use mio::Interest;
use vswitch::datapath::Captured;
use vswitch::frame::{
    max_frame_len, VnetHdr, ETH_HDR_LEN, GSO_TCPV4, GSO_TCPV6, VNET_F_NEEDS_CSUM, VNET_HDR_LEN,
};
use vswitch::gro::{self, Checksums, TcpRun};
use vswitch::pool::BufId;
use vswitch::wire::ethernet::{EthernetFrame, EthernetRepr, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use vswitch::wire::icmpv6::Ipv6Repr;
use vswitch::wire::ipv4::{Ipv4Repr, HEADER_LEN as IP_HEADER_LEN};
use vswitch::wire::ipv6::HEADER_LEN as IP6_HEADER_LEN;
use vswitch::wire::udp;
use vswitch::wire::vxlan::{self, HEADER_LEN};
use vswitch::wire::PROTO_UDP;
use vswitch::{Emitter, Handler, Mac, PortId, Traced, Verdict};

pub use crate::endpoint::{Egress, Endpoint, Peer, PeerStats, Segment, Targets, VtepDrop};
use crate::offload;
use crate::store::{StoreStatus, StoreUpdate};

#[derive(Debug, Clone)]
pub struct VtepConfig {
    /// The underlay address: IPv4, or IPv6 (then every peer is IPv6 too).
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    /// Remote MACs per VNI at most, and how long one is remembered.
    pub remote_max: usize,
    pub remote_aging: Duration,
}

/// Sockets sending from these many source ports: flows are hashed over them, so the
/// underlay's ECMP and the peer's receive queues see the flows apart.
const SENDERS: usize = 8;
/// Source ports come from the dynamic range, as RFC 7348 recommends.
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
const SOCKET_BUFFER: usize = 4 << 20;
/// The largest datagram: header plus a 64 KiB inner frame.
const MAX_DATAGRAM: usize = HEADER_LEN + 65535;
/// Frames handed on per turn of the poll loop: each holds a buffer until it is
/// forwarded, so this stays well under the pool's size.
const RX_BATCH: usize = 64;
/// Datagrams one recvmmsg asks for (each into its own buffer).
const RX_MMSG: usize = 16;
/// Buffers a receive leaves free for the rest of the datapath.
const RX_RESERVE: usize = 16;
/// Where a datagram lands in its buffer: the VXLAN header where the virtio-net
/// header's tail goes, so the inner frame sits exactly where a port's frame does
/// (no copy).
const RX_AT: usize = VNET_HDR_LEN - HEADER_LEN;

/// `SO_MEMINFO` from <asm-generic/socket.h> (Linux 4.6; not in the libc crate for
/// glibc targets): a socket's memory figures, `SK_MEMINFO_VARS` u32s, the last of
/// which (`SK_MEMINFO_DROPS`, <linux/sock_diag.h>) counts the datagrams the kernel
/// dropped for a full receive buffer. Read rather than `SO_RXQ_OVFL`, whose control
/// message the kernel copies out of the packet's buffer: with hardened usercopy, a
/// datagram in a cloned buffer (a local kernel vxlan peer's TCP) made that copy a
/// kernel BUG that killed the reading thread (found by review).
const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_DROPS: usize = 8;

/// The kernel's count of datagrams dropped at `socket` for a full receive buffer
/// (a running count that wraps at 2^32), if it tells.
fn socket_drops(socket: &UdpSocket) -> Option<u32> {
    let mut info = [0u32; SK_MEMINFO_DROPS + 1];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` has room for `len` bytes; the kernel writes at most that many.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (r == 0 && len as usize >= std::mem::size_of_val(&info)).then_some(info[SK_MEMINFO_DROPS])
}

/// A datagram [`recv_batch`] received: `len` bytes in `buf` at [`RX_AT`], from `from`.
#[derive(Debug, Clone, Copy)]
struct Received {
    buf: BufId,
    len: usize,
    from: SocketAddr,
}

pub struct Vtep {
    listen: SocketAddr,
    socket: UdpSocket,
    /// The sending sockets, and the datagrams waiting to leave together.
    tx: Tx,
    endpoint: Endpoint,
    /// Where super-frames are cut into segments, and where datagrams that find no
    /// free buffer are read and dropped.
    scratch: Vec<u8>,
    /// The kernel's count of datagrams dropped at the listening socket, as last seen.
    rx_overflowed: u32,
    /// A capture of the underlay side (`tapnet capture underlay`), if one runs.
    underlay: Underlay,
    /// The store's status, when the lab has `etcd`.
    store: Option<StoreStatus>,
}

/// The underlay capture: copies of the datagrams with outer Ethernet, IPv4 or IPv6
/// and UDP headers made up for them. Costs a branch when nobody captures.
#[derive(Default)]
struct Underlay {
    tap: Option<Sender<Captured>>,
    /// Copies a slow capture reader could not take (the datagrams went on).
    dropped: u64,
}

impl Underlay {
    fn on(&self) -> bool {
        self.tap.is_some()
    }

    fn copy(&mut self, src: SocketAddr, dst: SocketAddr, datagram: &[u8]) {
        let Some(tx) = &self.tap else { return };
        let ip_len = if src.is_ipv6() {
            IP6_HEADER_LEN
        } else {
            IP_HEADER_LEN
        };
        let headers = ETH_HDR_LEN + ip_len + udp::HEADER_LEN;
        let mut f = vec![0u8; headers + datagram.len()];
        // Longer than a length field says: it says the most.
        let udp_len = (udp::HEADER_LEN + datagram.len()).min(0xffff - ip_len);
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                EthernetRepr {
                    dst: Mac([0; 6]),
                    src: Mac([0; 6]),
                    ethertype: ETHERTYPE_IPV4,
                }
                .emit(&mut f);
                Ipv4Repr {
                    src: s,
                    dst: d,
                    protocol: PROTO_UDP,
                    ttl: 64,
                    ident: 0,
                    dont_frag: true,
                    payload_len: udp_len,
                }
                .emit(&mut f[ETH_HDR_LEN..]);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                EthernetRepr {
                    dst: Mac([0; 6]),
                    src: Mac([0; 6]),
                    ethertype: ETHERTYPE_IPV6,
                }
                .emit(&mut f);
                Ipv6Repr {
                    src: s,
                    dst: d,
                    next_header: PROTO_UDP,
                    hop_limit: 64,
                    payload_len: udp_len,
                }
                .emit(&mut f[ETH_HDR_LEN..]);
            }
            // One family per lab: a stranger of the other cannot reach the socket.
            _ => return,
        }
        // Checksum zero over IPv4, as VXLAN sends it there; over IPv6 the kernel
        // computed one on the wire (RFC 6935 leaves zero to tunnels that opt in), and
        // the copy gets it too (below).
        udp::emit_header(
            src.port(),
            dst.port(),
            datagram.len(),
            &mut f[ETH_HDR_LEN + ip_len..],
        );
        f[headers..].copy_from_slice(datagram);
        if let (IpAddr::V6(s), IpAddr::V6(d)) = (src.ip(), dst.ip()) {
            vswitch::wire::icmpv6::fill_l4_checksum6(
                s,
                d,
                PROTO_UDP,
                &mut f[ETH_HDR_LEN + ip_len..],
            );
        }
        let copy = Captured {
            at: std::time::SystemTime::now(),
            frame: f,
        };
        match tx.try_send(copy) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(_)) => self.dropped += 1,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => self.tap = None,
        }
    }
}

/// A batch of segments holds at most this many bytes...
const GSO_BATCH_BYTES: usize = 65000;
/// ... and this many datagrams.
const GSO_BATCH_SEGMENTS: usize = 64;

/// Sends `batch`, datagrams of `size` bytes back to back (the last may be shorter), to
/// `peer`: as one UDP GSO send while `udp_gso` holds ([`send_gso`]), else with one
/// sendmmsg. A GSO refusal clears `udp_gso` only if the same datagrams then go with
/// sendmmsg (so an oversize batch on an older kernel, which also says EINVAL, does
/// not turn GSO off for good). Returns false if some did not go.
fn send_batch(
    socket: &UdpSocket,
    peer: &mut Peer,
    batch: &[u8],
    size: usize,
    udp_gso: &mut bool,
) -> bool {
    let addr = socket2::SockAddr::from(peer.addr);
    let mut gso_refused = false;
    if *udp_gso && batch.len() > size {
        match send_gso(socket, &addr, batch, size) {
            Ok(()) => {
                let count = batch.len().div_ceil(size.max(1));
                peer.stats.tx_packets += count as u64;
                peer.stats.tx_bytes += batch.len() as u64;
                peer.stats.tx_gso_sends += 1;
                return true;
            }
            // Not for this socket or device, or (EINVAL, before Linux 5.10's fix)
            // datagrams larger than the path MTU: the sendmmsg below tells which.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                ) =>
            {
                gso_refused = true
            }
            Err(_) => {
                peer.stats.tx_errors += batch.len().div_ceil(size.max(1)) as u64;
                return false;
            }
        }
    }
    // SAFETY: all-zero is a valid iovec and mmsghdr.
    let mut iovs: [libc::iovec; GSO_BATCH_SEGMENTS] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; GSO_BATCH_SEGMENTS] = unsafe { std::mem::zeroed() };
    let mut count = 0;
    for (k, datagram) in batch
        .chunks(size.max(1))
        .take(GSO_BATCH_SEGMENTS)
        .enumerate()
    {
        iovs[k] = libc::iovec {
            iov_base: datagram.as_ptr() as *mut libc::c_void,
            iov_len: datagram.len(),
        };
        count = k + 1;
    }
    for k in 0..count {
        let hdr = &mut msgs[k].msg_hdr;
        hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = addr.len();
        hdr.msg_iov = &mut iovs[k];
        hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    while done < count {
        // SAFETY: `msgs[done..count]` point at iovecs into `batch` and at `addr`, all
        // alive for the call.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs[done..].as_mut_ptr(),
                (count - done) as u32,
                0,
            )
        };
        if n <= 0 {
            peer.stats.tx_errors += (count - done) as u64;
            return false;
        }
        for m in &msgs[done..done + n as usize] {
            peer.stats.tx_packets += 1;
            peer.stats.tx_bytes += m.msg_len as u64;
        }
        done += n as usize;
    }
    if gso_refused {
        // The same datagrams went one by one: GSO itself is refused here, so one
        // sendmmsg a batch from now on.
        *udp_gso = false;
    }
    true
}

/// `UDP_SEGMENT` from <linux/udp.h> (not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;

/// Sends `batch`, datagrams of `size` bytes back to back (the last may be shorter),
/// to `addr` as one UDP GSO send (udp(7) `UDP_SEGMENT`, Linux 4.18): the kernel
/// builds one super-datagram and cuts it into the datagrams at the device (or the
/// device does), instead of taking each through the stack.
fn send_gso(
    socket: &UdpSocket,
    addr: &socket2::SockAddr,
    batch: &[u8],
    size: usize,
) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: batch.as_ptr() as *mut libc::c_void,
        iov_len: batch.len(),
    };
    // SAFETY: CMSG_SPACE only computes a size.
    const SPACE: usize = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; SPACE.div_ceil(8)];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = addr.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = SPACE;
    // SAFETY: the control buffer holds one cmsghdr with room for a u16 (SPACE), so
    // CMSG_FIRSTHDR is not null and CMSG_DATA points inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::IPPROTO_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size as u16);
    }
    // SAFETY: msg points at the iovec over `batch`, at `addr` and at `control`, all
    // alive for the call.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one datagram to `peer`, counted in its stats. Returns false if it did not go.
fn send_one(socket: &UdpSocket, peer: &mut Peer, datagram: &[u8]) -> bool {
    match socket.send_to(datagram, peer.addr) {
        Ok(_) => {
            peer.stats.tx_packets += 1;
            peer.stats.tx_bytes += datagram.len() as u64;
            true
        }
        Err(_) => {
            peer.stats.tx_errors += 1;
            false
        }
    }
}

/// Receives up to `want` datagrams (1..=[`RX_MMSG`], each into a fresh buffer from
/// `out`) with one recvmmsg(2) into `got`, with their senders. Buffers not filled go
/// back. Returns how many came; an error (EAGAIN: the socket is empty) means none did.
fn recv_batch(
    socket: &UdpSocket,
    out: &mut Emitter<'_>,
    want: usize,
    got: &mut [Option<Received>; RX_MMSG],
) -> io::Result<usize> {
    let want = want.min(RX_MMSG);
    let mut bufs = [None; RX_MMSG];
    // SAFETY: all-zero is a valid iovec, sockaddr_storage and mmsghdr.
    let mut iovs: [libc::iovec; RX_MMSG] = unsafe { std::mem::zeroed() };
    let mut names: [libc::sockaddr_storage; RX_MMSG] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; RX_MMSG] = unsafe { std::mem::zeroed() };
    let mut asked = 0;
    for (k, slot) in bufs.iter_mut().enumerate().take(want) {
        let Some(buf) = out.alloc() else { break };
        *slot = Some(buf);
        let room = out.room(buf);
        let max = (room.len() - RX_AT).min(MAX_DATAGRAM);
        iovs[k] = libc::iovec {
            iov_base: room[RX_AT..].as_mut_ptr().cast(),
            iov_len: max,
        };
        asked = k + 1;
    }
    for k in 0..asked {
        let hdr = &mut msgs[k].msg_hdr;
        hdr.msg_name = (&mut names[k] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = &mut iovs[k];
        hdr.msg_iovlen = 1;
    }
    // SAFETY: msgs[..asked] point at iovecs into pool buffers lent to this call (the
    // pool's slab never moves) and at `names`, all alive for the call.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            asked as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let n = if n < 0 { 0 } else { n as usize };
    for k in 0..asked {
        let buf = bufs[k].expect("filled above");
        got[k] = match (k < n).then(|| sockaddr(&names[k])).flatten() {
            Some(from) => Some(Received {
                buf,
                len: msgs[k].msg_len as usize,
                from,
            }),
            None => {
                out.release(buf);
                None
            }
        };
    }
    if n == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// The address in `ss`, if it is IPv4 or IPv6.
fn sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is large and aligned enough for either; the family
    // says which the kernel wrote.
    unsafe {
        match ss.ss_family as libc::c_int {
            libc::AF_INET => {
                let a = &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                Some(SocketAddr::from((
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let a = &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// The sending side: the sockets datagrams leave from, and the datagrams waiting to
/// leave together. Datagrams for the same peers from the same socket, of one size
/// (the last may be shorter: UDP GSO cuts at the first one's size), are gathered
/// and sent as one UDP GSO send (or one sendmmsg) when the batch is full, when a
/// datagram that cannot join comes, or when the datapath has handed over all it
/// had ([`Handler::flush`]): a flood of small frames costs a send per batch, not per
/// frame, and a super-frame's segments go as before. Datagrams never change order.
struct Tx {
    /// Sockets bound to distinct source ports, with their ports.
    senders: Vec<(UdpSocket, u16)>,
    /// The local address the datagrams leave from (for the underlay capture).
    ip: IpAddr,
    /// Whether a batch goes as one UDP GSO send (`UDP_SEGMENT`): true until the
    /// kernel refuses one (a device without checksum offload, an old kernel).
    udp_gso: bool,
    /// The waiting datagrams, back to back (at most [`GSO_BATCH_BYTES`] unless one
    /// datagram is larger).
    batch: Vec<u8>,
    /// Which sender they leave from, and for which peers.
    sender: usize,
    targets: Targets,
    /// The first datagram's size, and how many wait.
    size: usize,
    count: usize,
    /// A shorter datagram ended the batch: nothing may follow it.
    closed: bool,
}

impl Tx {
    /// The sender a flow (its inner hash) leaves from.
    fn sender_of(&self, flow: u64) -> usize {
        (flow % self.senders.len() as u64) as usize
    }

    /// Queues `datagram` (VXLAN header included) for the peers `targets`, from
    /// sender `sender`; sends what was waiting first if it cannot join them. Its
    /// underlay copy (if a capture runs) is taken now.
    fn push(
        &mut self,
        endpoint: &mut Endpoint,
        underlay: &mut Underlay,
        sender: usize,
        targets: Targets,
        datagram: &[u8],
    ) {
        let joins = self.count > 0
            && !self.closed
            && self.sender == sender
            && self.targets == targets
            && datagram.len() <= self.size
            && self.count < GSO_BATCH_SEGMENTS
            && self.batch.len() + datagram.len() <= GSO_BATCH_BYTES;
        if !joins {
            self.flush(endpoint);
            self.sender = sender;
            self.targets = targets;
            self.size = datagram.len();
        }
        if underlay.on() {
            let src = SocketAddr::new(self.ip, self.senders[sender].1);
            for p in targets.peers(endpoint.peers().len()) {
                let peer = &endpoint.peers()[p];
                if peer.live {
                    underlay.copy(src, peer.addr, datagram);
                }
            }
        }
        self.batch.extend_from_slice(datagram);
        self.count += 1;
        self.closed = datagram.len() < self.size;
    }

    /// Sends the waiting datagrams to each live peer of the batch: one datagram with
    /// sendto, several as one UDP GSO send or sendmmsg ([`send_batch`]). A batch
    /// that does not go to a peer is one [`VtepDrop::SendError`].
    fn flush(&mut self, endpoint: &mut Endpoint) {
        if self.count == 0 {
            return;
        }
        let gso_before = self.udp_gso;
        let socket = &self.senders[self.sender].0;
        let mut failed = 0;
        for p in self.targets.peers(endpoint.peers().len()) {
            let peer = endpoint.peer_mut(p);
            if !peer.live {
                continue;
            }
            let sent = if self.count == 1 {
                send_one(socket, peer, &self.batch)
            } else {
                send_batch(socket, peer, &self.batch, self.size, &mut self.udp_gso)
            };
            if !sent {
                failed += 1;
            }
        }
        endpoint.count(VtepDrop::SendError, failed);
        self.batch.clear();
        self.count = 0;
        self.closed = false;
        if gso_before && !self.udp_gso && self.ip.is_ipv4() {
            // The checksum was on for GSO alone: without it, zero again (RFC 7348).
            for (s, _) in &self.senders {
                set_int(
                    &socket2::SockRef::from(s),
                    libc::SOL_SOCKET,
                    libc::SO_NO_CHECK,
                    1,
                );
            }
        }
    }
}

/// A UDP socket of `addr`'s family, bound to it, set up for VXLAN
/// ([`underlay_options`]).
fn udp_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        // IPv6 only: an IPv4 datagram must not arrive as a mapped address (the
        // underlay is one family), and `[::]:4789` must not take IPv4's port.
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    underlay_options(&s, addr.is_ipv6());
    s.bind(&addr.into())?;
    Ok(s)
}

/// An int socket option; errors are ignored (the kernel default stays).
fn set_int(s: &socket2::Socket, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: the options set here take an int; the fd is valid.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// VXLAN never lets its datagrams be fragmented (RFC 7348 section 4.3): a datagram
/// too big for the underlay fails to send (EMSGSIZE, counted) instead. The UDP
/// checksum is on over both families, because UDP GSO (`UDP_SEGMENT`, which sends a
/// super-frame's segments as one datagram the device cuts) refuses a socket without
/// it; the device computes it (checksum offload), so it costs the sender nothing.
/// RFC 7348 section 5 lets an IPv4 VTEP send a correct checksum instead of zero, and
/// receivers (the kernel's vxlan included) must take either. If the kernel refuses
/// GSO, the IPv4 sockets go back to zero (`SO_NO_CHECK`), as the kernel's vxlan
/// sends by default. Over IPv6 the checksum always stays on:
/// RFC 6935/6936 allow zero only where the receiver opts in, and a Linux vxlan device
/// drops zero-checksum IPv6 VXLAN unless `udp6zerocsumrx` is set, which is off by
/// default; so UDP_NO_CHECK6_TX is never set.
fn underlay_options(s: &socket2::Socket, ipv6: bool) {
    if ipv6 {
        // Never fragment locally, and take the path MTU as EMSGSIZE (ipv6(7)).
        set_int(
            s,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        );
        set_int(s, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1);
    } else {
        set_int(
            s,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        );
    }
}

impl Vtep {
    /// Binds the listening socket and the senders now, so that an unbindable `listen`
    /// refuses the lab before anything else is built.
    pub fn bind(config: &VtepConfig) -> io::Result<Vtep> {
        let socket = udp_socket(config.listen)?;
        let mut senders = Vec::new();
        let span = (*SOURCE_PORTS.end() - *SOURCE_PORTS.start()) as u32 + 1;
        let seed = std::process::id();
        for k in 0..64u32 {
            if senders.len() == SENDERS {
                break;
            }
            let port = *SOURCE_PORTS.start()
                + ((seed.wrapping_mul(2654435761).wrapping_add(k * 4099)) % span) as u16;
            if let Ok(s) = udp_socket(SocketAddr::new(config.listen.ip(), port)) {
                // Nothing is read from a sender: the smallest receive buffer the kernel
                // allows, so that datagrams sent to it hold a few KiB, not megabytes,
                // until tapnet exits (found by review).
                let _ = s.set_recv_buffer_size(0);
                senders.push((UdpSocket::from_std(s.into()), port));
            }
        }
        if senders.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "no free source port in 49152-65535",
            ));
        }
        Ok(Vtep {
            listen: config.listen,
            socket: UdpSocket::from_std(socket.into()),
            tx: Tx {
                senders,
                ip: config.listen.ip(),
                udp_gso: true,
                batch: Vec::with_capacity(GSO_BATCH_BYTES + MAX_DATAGRAM),
                sender: 0,
                targets: Targets::All,
                size: 0,
                count: 0,
                closed: false,
            },
            endpoint: Endpoint::new(&config.peers, config.remote_max, config.remote_aging),
            scratch: vec![0; MAX_DATAGRAM + 64],
            rx_overflowed: 0,
            underlay: Underlay::default(),
            store: None,
        })
    }

    /// Takes what the store client says: the other hosts as peers (with their
    /// containers' MACs and addresses), and the store's status for `show vxlan`.
    pub fn apply_store(&mut self, update: StoreUpdate, now: Instant) {
        self.endpoint.apply_store(&update.changes, self.listen, now);
        self.store = Some(update.status);
    }

    /// The store's status, if the lab has one.
    pub fn store(&self) -> Option<&StoreStatus> {
        self.store.as_ref()
    }

    /// ARP requests answered here for containers the store knows.
    pub fn arp_suppressed(&self) -> u64 {
        self.endpoint.arp_suppressed
    }

    /// Serves VNI `vni` through internal port `port` of a bridge with MTU `mtu`.
    pub fn add_vni(&mut self, vni: u32, port: PortId, mtu: u32) {
        self.endpoint.add_vni(vni, port, mtu);
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn peers(&self) -> &[Peer] {
        self.endpoint.peers()
    }

    pub fn segments(&self) -> &[Segment] {
        self.endpoint.segments()
    }

    pub fn source_ports(&self) -> Vec<u16> {
        self.tx.senders.iter().map(|(_, p)| *p).collect()
    }

    /// What sending `frame` (virtio-net header, then Ethernet) by VNI port `port` would
    /// do: its VNI and the peers' addresses, or why it would be dropped. The same
    /// decision as sending ([`Endpoint::egress`]); nothing is sent. For `tapnet trace`.
    pub fn trace(
        &self,
        port: PortId,
        frame: &[u8],
        now: Instant,
    ) -> Result<(Egress, Vec<SocketAddr>), VtepDrop> {
        let e = self.endpoint.egress(port, frame, now)?;
        let peers = self.endpoint.peers();
        let addrs = e
            .peers(peers.len())
            .filter(|&p| peers[p].live)
            .map(|p| peers[p].addr)
            .collect();
        Ok((e, addrs))
    }

    /// Underlay copies a slow capture reader missed.
    pub fn underlay_capture_dropped(&self) -> u64 {
        self.underlay.dropped
    }

    pub fn dropped(&self, reason: VtepDrop) -> u64 {
        self.endpoint.dropped(reason)
    }

    /// Reads datagrams ([`RX_MMSG`] a recvmmsg, [`recv_batch`]) and hands each inner
    /// frame on, until [`RX_BATCH`] went on or the socket is empty; true if there may
    /// be more.
    fn receive(&mut self, out: &mut Emitter<'_>, now: Instant) -> bool {
        // Consecutive TCP segments of one flow are merged into the first one's buffer
        // (GRO) and go into the bridge as one super-frame: one TAP write, not forty.
        let mut open: Option<Open> = None;
        let mut frames = 0;
        let more = loop {
            if frames >= RX_BATCH {
                break true;
            }
            let want = RX_MMSG
                .min(RX_BATCH - frames)
                .min(out.available().saturating_sub(RX_RESERVE));
            if want == 0 {
                // No buffer: read a datagram anyway (readiness is edge-triggered) and
                // drop it, counted.
                match self.socket.recv_from(&mut self.scratch) {
                    Ok(_) => {
                        self.endpoint.count(VtepDrop::NoBuffer, 1);
                        frames += 1;
                        continue;
                    }
                    Err(_) => break false,
                }
            }
            let mut got = [None; RX_MMSG];
            let n = recv_batch(&self.socket, out, want, &mut got).unwrap_or(0);
            for r in got.iter().flatten() {
                self.deliver(out, &mut open, r.buf, r.len, r.from, now);
            }
            frames += n;
            if n < want {
                // Fewer than asked: the socket is empty.
                break false;
            }
        };
        if let Some(o) = open.take() {
            o.flush(out);
        }
        more
    }

    /// Hands on the datagram of `len` bytes in `buf` (at [`RX_AT`]) from `from`:
    /// accepted by the endpoint, its inner frame checked and injected into its
    /// bridge, merged into the open TCP run if it continues it.
    fn deliver(
        &mut self,
        out: &mut Emitter<'_>,
        open: &mut Option<Open>,
        buf: BufId,
        len: usize,
        from: SocketAddr,
        now: Instant,
    ) {
        let n = len;
        let room = out.room(buf);
        self.underlay
            .copy(from, self.listen, &room[RX_AT..RX_AT + n]);
        let got = match self.endpoint.accept(from, &room[RX_AT..RX_AT + n], now) {
            Ok(got) => got,
            Err(reason) => {
                self.endpoint.count(reason, 1);
                out.release(buf);
                return;
            }
        };
        let (port, mtu) = (got.port, got.mtu);
        VnetHdr::default().emit(&mut room[..VNET_HDR_LEN]);
        // A checksum the peer's kernel left partial goes on marked NEEDS_CSUM.
        let (sums, len) = offload::rx_checksums(&mut room[..VNET_HDR_LEN + n - HEADER_LEN]);
        self.endpoint.rx_checksums(got.peer, sums);
        let frame = &mut room[..len];
        if len - VNET_HDR_LEN > max_frame_len(mtu, &frame[VNET_HDR_LEN..]) {
            // A TCP super-frame sent whole: on as GSO, never merged into a run.
            if !offload::rx_super_frame(frame, mtu, sums) {
                self.endpoint.count(VtepDrop::Oversize, 1);
                out.release(buf);
                return;
            }
            self.endpoint.peer_mut(got.peer).stats.rx_gso_frames += 1;
            if let Some(o) = open.take() {
                o.flush(out);
            }
            out.inject(port, buf, len);
            return;
        }
        if let Some(o) = open.as_mut() {
            if o.port == port && o.merge(out, buf, len, sums) {
                out.release(buf);
                let stats = &mut self.endpoint.peer_mut(got.peer).stats;
                stats.rx_gro_merged += 1;
                if o.run.is_v6() {
                    stats.rx_gro_merged_v6 += 1;
                }
                return;
            }
        }
        if let Some(o) = open.take() {
            o.flush(out);
        }
        match Open::start(out, buf, len, port, sums) {
            Some(o) => *open = Some(o),
            None => out.inject(port, buf, len),
        }
    }

    /// Cuts the super-frame `eth` as `egress` planned and queues the segments for its
    /// peers ([`Tx::push`]): they leave in batches, one send (UDP GSO, or sendmmsg)
    /// per batch and peer, so a 64 KiB super-frame costs a syscall, not forty-five.
    fn send_segments(
        &mut self,
        vnet: &VnetHdr,
        eth: &[u8],
        egress: &Egress,
    ) -> Result<(), VtepDrop> {
        let Vtep {
            tx,
            endpoint,
            scratch,
            underlay,
            ..
        } = self;
        let sender = tx.sender_of(egress.flow);
        offload::segment(vnet, eth, scratch, HEADER_LEN, |datagram| {
            vxlan::emit(datagram, egress.vni);
            tx.push(endpoint, underlay, sender, egress.targets, datagram);
        })?;
        Ok(())
    }
}

/// A frame (in a pool buffer) that following TCP segments of its flow are merged into.
struct Open {
    buf: BufId,
    port: PortId,
    run: TcpRun,
}

/// Where the inner IP packet starts in a frame (after the virtio-net and Ethernet
/// headers; frames with a VLAN tag are not merged).
const IP_AT: usize = VNET_HDR_LEN + ETH_HDR_LEN;

impl Open {
    /// Opens a run at the frame in `buf` (its checksums found to be `sums` by
    /// [`offload::rx_checksums`]): a TCP data segment over IPv4 or IPv6 (TCP right
    /// after the fixed header) whose checksums are valid or left partial by its
    /// sender.
    fn start(
        out: &mut Emitter<'_>,
        buf: BufId,
        len: usize,
        port: PortId,
        sums: Checksums,
    ) -> Option<Open> {
        let frame = out.frame(buf, len);
        let ip = frame
            .get(VNET_HDR_LEN..)
            .and_then(EthernetFrame::new_checked)
            .is_some_and(|e| matches!(e.ethertype(), ETHERTYPE_IPV4 | ETHERTYPE_IPV6));
        if !gro::mergeable(sums) || !ip {
            return None;
        }
        let run = TcpRun::start(&frame[IP_AT..])?;
        Some(Open { buf, port, run })
    }

    /// Appends the segment in `buf` (its checksums found to be `sums`) if it
    /// continues the run (the buffer stays the caller's to release). A segment left
    /// partial joins one that was not, and the other way round: a merged run goes on
    /// as NEEDS_CSUM anyway. One whose checksum is wrong never joins.
    fn merge(&mut self, out: &mut Emitter<'_>, buf: BufId, len: usize, sums: Checksums) -> bool {
        if !gro::mergeable(sums) {
            return false;
        }
        let have = IP_AT + self.run.len();
        let (new, open) = out.two(buf, len, self.buf);
        // The Ethernet headers must match; the virtio-net headers may not (one
        // segment partial, the other not).
        if new.len() < IP_AT || new[VNET_HDR_LEN..IP_AT] != open[VNET_HDR_LEN..IP_AT] {
            return false;
        }
        let ip = &new[IP_AT..];
        if !self.run.accepts(&open[IP_AT..have], ip) {
            return false;
        }
        let payload = &ip[self.run.headers()..];
        if have + payload.len() > open.len() {
            return false;
        }
        open[have..have + payload.len()].copy_from_slice(payload);
        self.run.appended(&mut open[IP_AT..], ip);
        true
    }

    /// Sends the frame into its bridge: a GSO super-frame (GSO_TCPV4 or GSO_TCPV6,
    /// NEEDS_CSUM, the checksum field holding the pseudo-header sum) if segments were
    /// merged, else the one
    /// segment with the virtio-net header it came with (NEEDS_CSUM if it arrived
    /// partial).
    fn flush(self, out: &mut Emitter<'_>) {
        let len = IP_AT + self.run.len();
        let frame = out.data(self.buf, len);
        if let Some(mss) = self.run.finish(&mut frame[IP_AT..]) {
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                gso_type: if self.run.is_v6() {
                    GSO_TCPV6
                } else {
                    GSO_TCPV4
                },
                hdr_len: (ETH_HDR_LEN + self.run.headers()) as u16,
                gso_size: mss,
                csum_start: (ETH_HDR_LEN + self.run.l4()) as u16,
                csum_offset: 16,
            }
            .emit(frame);
        }
        out.inject(self.port, self.buf, len);
    }
}

/// Turns the ARP request in `frame` (virtio-net header, Ethernet; checked by
/// [`Endpoint::suppress_arp`]) into the reply `ip is at mac`, in place.
fn arp_reply_in_place(frame: &mut [u8], ip: std::net::Ipv4Addr, mac: Mac) {
    use vswitch::wire::arp::{ArpPacket, ArpRepr, OP_REPLY};
    let Some(mut eth) = EthernetFrame::new_checked(&mut frame[VNET_HDR_LEN..]) else {
        return;
    };
    let Some((sha, spa)) =
        ArpPacket::new_checked(eth.payload()).map(|a| (a.sender_mac(), a.sender_ip()))
    else {
        return;
    };
    eth.set_dst(sha);
    eth.set_src(mac);
    ArpRepr {
        operation: OP_REPLY,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: sha,
        target_ip: spa,
    }
    .emit(eth.payload_mut());
}

impl Handler for Vtep {
    fn attach(&mut self, out: &mut Emitter<'_>) {
        let _ = out
            .registry()
            .register(&mut self.socket, out.token(0), Interest::READABLE);
    }

    fn handle(
        &mut self,
        port: PortId,
        buf: BufId,
        len: usize,
        out: &mut Emitter<'_>,
        now: Instant,
    ) -> Verdict {
        let data = out.data(buf, len);
        if let Some((ip, mac, _)) = self.endpoint.suppress_arp(port, data) {
            // Answered as the container would, from its side of the tunnel: the
            // bridge learns it behind this port, and no peer sees the request.
            arp_reply_in_place(data, ip, mac);
            self.endpoint.arp_suppressed += 1;
            return Verdict::Inject { via: port, len };
        }
        let egress = match self.endpoint.egress(port, data, now) {
            Ok(e) => e,
            Err(reason) => {
                self.endpoint.count(reason, 1);
                return Verdict::Release;
            }
        };
        let vnet = VnetHdr::parse(data).expect("checked by egress");
        if egress.cut.is_some() {
            if let Err(reason) = self.send_segments(&vnet, &data[VNET_HDR_LEN..], &egress) {
                self.endpoint.count(reason, 1);
            }
            return Verdict::Release;
        }
        if offload::finish(&vnet, &mut data[VNET_HDR_LEN..]).is_err() {
            self.endpoint.count(VtepDrop::Malformed, 1);
            return Verdict::Release;
        }
        // The header goes over the virtio-net header's tail, in front of the frame.
        let datagram = &mut data[VNET_HDR_LEN - HEADER_LEN..];
        vxlan::emit(datagram, egress.vni);
        // Copied into the batch, to leave with the frames of this turn that can go with
        // it (Handler::flush): one copy of a frame of at most the MTU buys a send per
        // batch instead of one per frame.
        let sender = self.tx.sender_of(egress.flow);
        self.tx.push(
            &mut self.endpoint,
            &mut self.underlay,
            sender,
            egress.targets,
            datagram,
        );
        Verdict::Release
    }

    fn flush(&mut self, _out: &mut Emitter<'_>) {
        self.tx.flush(&mut self.endpoint);
    }

    fn ready(&mut self, _n: usize, out: &mut Emitter<'_>, now: Instant) -> bool {
        self.receive(out, now)
    }

    fn tick(&mut self, _out: &mut Emitter<'_>, now: Instant) {
        self.endpoint.tick(now);
        // What the kernel dropped at the socket since the last tick (a count that
        // wraps at 2^32), for `show drops`.
        if let Some(count) = socket_drops(&self.socket) {
            let new = count.wrapping_sub(self.rx_overflowed);
            self.endpoint.count(VtepDrop::SocketOverflow, new as u64);
            self.rx_overflowed = count;
        }
    }

    fn capture_outside(&mut self, tx: Sender<Captured>) -> bool {
        self.underlay.tap = Some(tx);
        true
    }

    fn kind(&self) -> &'static str {
        "vxlan"
    }

    fn trace(&self, port: PortId, frame: &mut [u8], now: Instant) -> Traced {
        if let Some((ip, mac, peer)) = self.endpoint.suppress_arp(port, frame) {
            arp_reply_in_place(frame, ip, mac);
            return Traced::Inject {
                via: port,
                step: format!(
                    "vxlan: ARP for {ip} answered here with {mac}, the container host {} registered in etcd (ARP suppression: not flooded to the peers)",
                    self.endpoint.peers()[peer].addr
                ),
            };
        }
        match Vtep::trace(self, port, frame, now) {
            Ok((egress, peers)) => {
                let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
                let how = match egress.targets {
                    Targets::One(_) => "to the peer that has it",
                    Targets::All => "to every peer (not learned, or a broadcast)",
                };
                let cut = egress.cut.map_or(String::new(), |c| {
                    format!(", cut into segments of {} bytes", c.max_segment())
                });
                Traced::Leaves {
                    egress: format!("vxlan {}", peers.join(", ")),
                    step: format!(
                        "vxlan: encapsulated with VNI {}{cut}, sent {how}: {}",
                        egress.vni,
                        peers.join(", ")
                    ),
                }
            }
            Err(reason) => Traced::Drop {
                reason: reason.name(),
                step: format!("vxlan: dropped ({})", reason.name()),
            },
        }
    }

    fn answers_arp(
        &self,
        port: PortId,
        ip: std::net::Ipv4Addr,
        _now: Instant,
    ) -> Option<(Mac, String)> {
        let seg = self.segments().iter().find(|s| s.port == port)?;
        let &(mac, peer) = seg.registered.get(&ip)?;
        Some((
            mac,
            format!(
                "answered by the VXLAN endpoint: host {} registered it in etcd",
                self.peers()[peer].addr
            ),
        ))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender and a receiver on loopback (the test's own addresses), the receiver
    /// non-blocking; and a peer record for the receiver.
    fn loopback() -> (UdpSocket, std::net::UdpSocket, Peer) {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let peer = Peer {
            addr: rx.local_addr().unwrap(),
            stats: PeerStats::default(),
            from_store: false,
            live: true,
            registered: Vec::new(),
        };
        (UdpSocket::from_std(tx.into()), rx, peer)
    }

    /// The datagrams waiting at `rx`, by size.
    fn received(rx: &std::net::UdpSocket) -> Vec<usize> {
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = [0u8; 2048];
        std::iter::from_fn(|| rx.recv(&mut buf).ok()).collect()
    }

    #[test]
    fn a_batch_goes_as_one_gso_send_cut_at_the_first_size() {
        let (tx, rx, mut peer) = loopback();
        let mut gso = true;
        let batch = [vec![1u8; 100], vec![2u8; 100], vec![3u8; 40]].concat();
        assert!(send_batch(&tx, &mut peer, &batch, 100, &mut gso));
        assert!(gso);
        assert_eq!(received(&rx), [100, 100, 40]);
        assert_eq!(peer.stats.tx_gso_sends, 1);
        assert_eq!(peer.stats.tx_packets, 3);
    }

    #[test]
    fn a_gso_refusal_sends_the_batch_one_by_one_and_turns_gso_off() {
        let (tx, rx, mut peer) = loopback();
        // UDP GSO needs the checksum (the kernel says EIO without it): refused.
        set_int(
            &socket2::SockRef::from(&tx),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            1,
        );
        let mut gso = true;
        let batch = [vec![1u8; 100], vec![2u8; 100], vec![3u8; 40]].concat();
        assert!(send_batch(&tx, &mut peer, &batch, 100, &mut gso));
        assert!(!gso, "refused, and the datagrams went without it");
        assert_eq!(received(&rx), [100, 100, 40]);
        assert_eq!(peer.stats.tx_gso_sends, 0);
        assert_eq!(peer.stats.tx_packets, 3);
    }
}
