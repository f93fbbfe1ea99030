//! The tunnel endpoint: one internal port on every bridge with a VNI, and UDP sockets
//! on the underlay. A frame the bridge sends to the port is encapsulated (its checksum
//! finished, a TCP super-frame cut into segments first) and sent to the peer that has
//! its destination MAC, or to every peer (head-end replication) when none does. A
//! datagram from a peer is checked, its inner source MAC learned (MAC -> peer, with
//! aging and a limit, per VNI), and the inner frame injected into the VNI's bridge,
//! consecutive TCP segments of a flow merged (GRO). A peer's kernel may send checksums
//! left partial and TSO super-frames uncut (a VXLAN device over a veth does, with the
//! kernel's default offloads): the first go on marked NEEDS_CSUM, the second as GSO
//! frames, as the kernel would hand them to its own containers (see
//! [`offload::rx_checksums`] and [`offload::rx_super_frame`]).

use std::any::Any;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::UdpSocket;
use mio::Interest;
use vswitch::datapath::Captured;
use vswitch::frame::{
    max_frame_len, VnetHdr, ETH_HDR_LEN, GSO_TCPV4, VNET_F_NEEDS_CSUM, VNET_HDR_LEN,
};
use vswitch::gro::{self, Checksums, TcpRun};
use vswitch::pool::BufId;
use vswitch::{Emitter, Fdb, Handler, Mac, PortId, Verdict};

use crate::offload;
use crate::vxlan::{self, Vxlan, HEADER_LEN};

#[derive(Debug, Clone)]
pub struct VtepConfig {
    pub listen: SocketAddrV4,
    pub peers: Vec<SocketAddrV4>,
    /// Remote MACs per VNI at most, and how long one is remembered.
    pub remote_max: usize,
    pub remote_aging: Duration,
}

vswitch::drop_reasons! {
    /// Why a frame or datagram went no further.
    pub enum VtepDrop {
        /// A datagram from an address that is not a peer.
        NotPeer => "not_peer",
        /// Shorter than a VXLAN header and an inner Ethernet header.
        Truncated => "truncated",
        /// Flags other than 0x08.
        BadFlags => "bad_flags",
        /// A VNI no bridge here has.
        UnknownVni => "unknown_vni",
        /// An inner frame larger than the bridge's MTU allows (it would need fragments).
        /// A TCP/IPv4 super-frame whose checksums are valid or partial is not one: it
        /// goes on as a GSO frame (see [`PeerStats::rx_gso_frames`]).
        Oversize => "oversize",
        /// A super-frame this software cannot cut (TCP over IPv6, UDP).
        UnsupportedGso => "unsupported_gso",
        /// Headers that do not match what the virtio-net header says.
        Malformed => "malformed",
        /// No free buffer for an arriving datagram.
        NoBuffer => "no_buffer",
        /// The underlay socket refused to send.
        SendError => "send_error",
    }
}

/// What went to and came from one peer. Packets are VXLAN datagrams; bytes count
/// the VXLAN header and the inner frame (no outer IP or UDP header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_errors: u64,
    /// Inner IPv4 TCP or UDP packets from this peer whose checksum the sending kernel
    /// left partial (CHECKSUM_PARTIAL: the field holds the pseudo-header sum), handed
    /// on marked NEEDS_CSUM rather than as checksum errors. A kernel VXLAN host over a
    /// veth with its default offloads sends most of its TCP and UDP like this.
    pub rx_partial_checksum: u64,
    /// Inner IPv4 TCP or UDP packets from this peer whose IP, TCP or UDP checksum was
    /// neither valid nor partial: passed on unchanged, for the receiver to drop.
    pub rx_bad_checksum: u64,
    /// Inner TCP super-frames from this peer (larger than the VNI's MTU: a sender's
    /// TSO skb that a kernel VXLAN device over a veth sends whole), handed on as GSO
    /// frames ([`offload::rx_super_frame`]). Each is also one `rx_partial_checksum`.
    pub rx_gso_frames: u64,
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddrV4,
    pub stats: PeerStats,
}

/// One VNI: its bridge's port and MTU, and the MACs learned behind each peer.
pub struct Segment {
    pub vni: u32,
    pub port: PortId,
    pub mtu: u32,
    pub remote: Fdb<usize>,
}

/// Sockets sending from these many source ports: flows are hashed over them, so the
/// underlay's ECMP and the peer's receive queues see the flows apart.
const SENDERS: usize = 8;
/// Source ports come from the dynamic range, as RFC 7348 recommends.
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
const SOCKET_BUFFER: usize = 4 << 20;
/// The largest datagram: header plus a 64 KiB inner frame.
const MAX_DATAGRAM: usize = HEADER_LEN + 65535;
/// Datagrams read per turn of the poll loop: each holds a buffer until it is
/// forwarded, so this stays well under the pool's size.
const RX_BATCH: usize = 64;

pub struct Vtep {
    listen: SocketAddrV4,
    socket: UdpSocket,
    senders: Vec<(UdpSocket, u16)>,
    peers: Vec<Peer>,
    segments: Vec<Segment>,
    drops: [u64; VtepDrop::COUNT],
    remote_max: usize,
    remote_aging: Duration,
    /// Where super-frames are cut into segments, and where datagrams that find no
    /// free buffer are read and dropped.
    scratch: Vec<u8>,
    /// Equal-sized datagrams gathered for one sendmmsg.
    batch: Vec<u8>,
    /// A capture of the underlay side (`tapnet capture underlay`), if one runs.
    underlay: Option<Sender<Captured>>,
    /// Underlay copies a slow capture reader could not take (the datagrams went on).
    underlay_dropped: u64,
}

/// Copies a datagram, with outer Ethernet, IPv4 and UDP headers made up for it, to the
/// underlay capture. Costs a branch when nobody captures.
fn underlay_copy(
    tap: &mut Option<Sender<Captured>>,
    dropped: &mut u64,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    datagram: &[u8],
) {
    let Some(tx) = tap else { return };
    let mut f = Vec::with_capacity(14 + 28 + datagram.len());
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (28 + datagram.len()).min(0xffff) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let c = vswitch::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&(total - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // checksum zero, as sent
    f.extend_from_slice(datagram);
    let copy = Captured {
        at: std::time::SystemTime::now(),
        frame: f,
    };
    match tx.try_send(copy) {
        Ok(()) => {}
        Err(crossbeam_channel::TrySendError::Full(_)) => *dropped += 1,
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => *tap = None,
    }
}

/// A batch of segments holds at most this many bytes...
const GSO_BATCH_BYTES: usize = 65000;
/// ... and this many datagrams.
const GSO_BATCH_SEGMENTS: usize = 64;

/// Sends `batch`, datagrams of `size` bytes back to back (the last may be shorter), to
/// `peer` with one sendmmsg. (Not UDP GSO: the kernel refuses it on a socket that
/// sends UDP checksum zero, and RFC 7348 asks for zero.)
/// Returns false if some did not go.
fn send_batch(
    senders: &[(UdpSocket, u16)],
    peer: &mut Peer,
    flow: u64,
    batch: &[u8],
    size: usize,
) -> bool {
    let (socket, _) = &senders[(flow % senders.len() as u64) as usize];
    let addr = socket2::SockAddr::from(SocketAddr::V4(peer.addr));
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
    true
}

fn udp_socket(addr: SocketAddrV4) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&SocketAddr::V4(addr).into())?;
    Ok(s)
}

/// VXLAN sends UDP checksum zero (RFC 7348 section 5), as the kernel does by default,
/// and never lets its datagrams be fragmented (section 4.3): a datagram too big for
/// the underlay fails to send (EMSGSIZE, counted) instead.
fn no_udp_checksum(s: &socket2::Socket) {
    let pmtu: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: IP_MTU_DISCOVER takes an int; the fd is valid.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&pmtu as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let one: libc::c_int = 1;
    // SAFETY: SO_NO_CHECK takes an int; the fd is valid.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Vtep {
    /// Binds the listening socket and the senders now, so that an unbindable `listen`
    /// refuses the lab before anything else is built.
    pub fn bind(config: &VtepConfig) -> io::Result<Vtep> {
        let socket = udp_socket(config.listen)?;
        no_udp_checksum(&socket);
        let mut senders = Vec::new();
        let span = (*SOURCE_PORTS.end() - *SOURCE_PORTS.start()) as u32 + 1;
        let seed = std::process::id();
        for k in 0..64u32 {
            if senders.len() == SENDERS {
                break;
            }
            let port = *SOURCE_PORTS.start()
                + ((seed.wrapping_mul(2654435761).wrapping_add(k * 4099)) % span) as u16;
            if let Ok(s) = udp_socket(SocketAddrV4::new(*config.listen.ip(), port)) {
                no_udp_checksum(&s);
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
            senders,
            peers: config
                .peers
                .iter()
                .map(|&addr| Peer {
                    addr,
                    stats: PeerStats::default(),
                })
                .collect(),
            segments: Vec::new(),
            drops: [0; VtepDrop::COUNT],
            remote_max: config.remote_max,
            remote_aging: config.remote_aging,
            scratch: vec![0; MAX_DATAGRAM + 64],
            batch: Vec::with_capacity(GSO_BATCH_BYTES + MAX_DATAGRAM),
            underlay: None,
            underlay_dropped: 0,
        })
    }

    /// Serves VNI `vni` through internal port `port` of a bridge with MTU `mtu`.
    pub fn add_vni(&mut self, vni: u32, port: PortId, mtu: u32) {
        self.segments.push(Segment {
            vni,
            port,
            mtu,
            remote: Fdb::new(self.remote_max, self.remote_aging),
        });
    }

    pub fn listen(&self) -> SocketAddrV4 {
        self.listen
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn source_ports(&self) -> Vec<u16> {
        self.senders.iter().map(|(_, p)| *p).collect()
    }

    /// Where a frame for `dst` leaving by VNI port `port` would go: its VNI and the
    /// peers (one if learned, all otherwise). For `tapnet trace`.
    pub fn peek(&self, port: PortId, dst: Mac, now: Instant) -> Option<(u32, Vec<SocketAddrV4>)> {
        let seg = self.segments.iter().find(|s| s.port == port)?;
        let peers = match (!dst.is_multicast())
            .then(|| seg.remote.lookup(dst, now))
            .flatten()
        {
            Some(p) => vec![self.peers[p].addr],
            None => self.peers.iter().map(|p| p.addr).collect(),
        };
        Some((seg.vni, peers))
    }

    /// Underlay copies a slow capture reader missed.
    pub fn underlay_capture_dropped(&self) -> u64 {
        self.underlay_dropped
    }

    pub fn dropped(&self, reason: VtepDrop) -> u64 {
        self.drops[reason as usize]
    }

    fn drop(&mut self, reason: VtepDrop) {
        self.drops[reason as usize] += 1;
    }

    /// Sends one datagram (header included) to peer `p` from the sender that the
    /// inner flow hashes to.
    fn send(senders: &[(UdpSocket, u16)], peer: &mut Peer, flow: u64, datagram: &[u8]) -> bool {
        let (socket, _) = &senders[(flow % senders.len() as u64) as usize];
        match socket.send_to(datagram, SocketAddr::V4(peer.addr)) {
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

    /// Reads up to a batch of datagrams; true if there may be more.
    fn receive(&mut self, out: &mut Emitter<'_>, now: Instant) -> bool {
        // Consecutive TCP segments of one flow are merged into the first one's buffer
        // (GRO) and go into the bridge as one super-frame: one TAP write, not forty.
        let mut open: Option<Open> = None;
        let mut more = true;
        for _ in 0..RX_BATCH {
            let Some(buf) = out.alloc() else {
                // No buffer: read the datagram anyway (readiness is edge-triggered) and
                // drop it, counted.
                match self.socket.recv_from(&mut self.scratch) {
                    Ok(_) => {
                        self.drop(VtepDrop::NoBuffer);
                        continue;
                    }
                    Err(_) => {
                        more = false;
                        break;
                    }
                }
            };
            // The VXLAN header lands where the virtio-net header's tail goes, so the
            // inner frame sits exactly where a port's frame does: no copy.
            let at = VNET_HDR_LEN - HEADER_LEN;
            let room = out.room(buf);
            let max = (room.len() - at).min(MAX_DATAGRAM);
            let (n, from) = match self.socket.recv_from(&mut room[at..at + max]) {
                Ok(got) => got,
                Err(_) => {
                    out.release(buf);
                    more = false;
                    break;
                }
            };
            if let SocketAddr::V4(from4) = from {
                underlay_copy(
                    &mut self.underlay,
                    &mut self.underlay_dropped,
                    from4,
                    self.listen,
                    &room[at..at + n],
                );
            }
            let (port, peer, mtu) = match self.accept(from, &room[at..at + n], now) {
                Ok(got) => got,
                Err(reason) => {
                    self.drop(reason);
                    out.release(buf);
                    continue;
                }
            };
            VnetHdr::default().emit(&mut room[..VNET_HDR_LEN]);
            // A checksum the peer's kernel left partial goes on marked NEEDS_CSUM.
            let (sums, len) = offload::rx_checksums(&mut room[..VNET_HDR_LEN + n - HEADER_LEN]);
            match sums {
                Checksums::Partial { .. } => self.peers[peer].stats.rx_partial_checksum += 1,
                Checksums::Wrong => self.peers[peer].stats.rx_bad_checksum += 1,
                Checksums::Valid | Checksums::NotChecked => {}
            }
            let frame = &mut room[..len];
            if len - VNET_HDR_LEN > max_frame_len(mtu, &frame[VNET_HDR_LEN..]) {
                // A TCP super-frame sent whole: on as GSO, never merged into a run.
                if !offload::rx_super_frame(frame, mtu, sums) {
                    self.drop(VtepDrop::Oversize);
                    out.release(buf);
                    continue;
                }
                self.peers[peer].stats.rx_gso_frames += 1;
                if let Some(o) = open.take() {
                    o.flush(out);
                }
                out.inject(port, buf, len);
                continue;
            }
            if let Some(o) = open.as_mut() {
                if o.port == port && o.merge(out, buf, len, sums) {
                    out.release(buf);
                    continue;
                }
            }
            if let Some(o) = open.take() {
                o.flush(out);
            }
            match Open::start(out, buf, len, port, sums) {
                Some(o) => open = Some(o),
                None => out.inject(port, buf, len),
            }
        }
        if let Some(o) = open.take() {
            o.flush(out);
        }
        more
    }

    /// Checks a datagram and learns its inner source; the port to inject it at, the
    /// peer it came from, and the VNI's MTU.
    fn accept(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<(PortId, usize, u32), VtepDrop> {
        let SocketAddr::V4(from) = from else {
            return Err(VtepDrop::NotPeer);
        };
        // Peers are known by address: the kernel's VXLAN sends from ports of its own.
        let peer = self
            .peers
            .iter()
            .position(|p| p.addr.ip() == from.ip())
            .ok_or(VtepDrop::NotPeer)?;
        let v = Vxlan::new_checked(datagram).map_err(|e| match e {
            vxlan::HeaderError::Truncated => VtepDrop::Truncated,
            vxlan::HeaderError::BadFlags => VtepDrop::BadFlags,
        })?;
        let seg = self
            .segments
            .iter_mut()
            .find(|s| s.vni == v.vni())
            .ok_or(VtepDrop::UnknownVni)?;
        let inner = v.inner();
        if inner.len() > offload::max_rx_frame(seg.mtu, inner) {
            return Err(VtepDrop::Oversize);
        }
        let src = Mac(inner[6..12].try_into().expect("checked length"));
        if !src.is_multicast() && !src.is_zero() {
            seg.remote.learn(src, peer, now);
        }
        let stats = &mut self.peers[peer].stats;
        stats.rx_packets += 1;
        stats.rx_bytes += datagram.len() as u64;
        Ok((seg.port, peer, seg.mtu))
    }
}

/// A frame (in a pool buffer) that following TCP segments of its flow are merged into.
struct Open {
    buf: BufId,
    port: PortId,
    run: TcpRun,
}

/// Where the inner IPv4 packet starts in a frame (after the virtio-net and Ethernet
/// headers; frames with a VLAN tag are not merged).
const IP_AT: usize = VNET_HDR_LEN + ETH_HDR_LEN;

impl Open {
    /// Opens a run at the frame in `buf` (its checksums found to be `sums` by
    /// [`offload::rx_checksums`]): a TCP/IPv4 data segment whose checksums are valid
    /// or left partial by its sender.
    fn start(
        out: &mut Emitter<'_>,
        buf: BufId,
        len: usize,
        port: PortId,
        sums: Checksums,
    ) -> Option<Open> {
        let frame = out.frame(buf, len);
        if !gro::mergeable(sums)
            || frame.len() < IP_AT
            || frame[VNET_HDR_LEN + 12..IP_AT] != [0x08, 0x00]
        {
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

    /// Sends the frame into its bridge: a GSO super-frame (NEEDS_CSUM, the checksum
    /// field holding the pseudo-header sum) if segments were merged, else the one
    /// segment with the virtio-net header it came with (NEEDS_CSUM if it arrived
    /// partial).
    fn flush(self, out: &mut Emitter<'_>) {
        let len = IP_AT + self.run.len();
        let frame = out.data(self.buf, len);
        if let Some(mss) = self.run.finish(&mut frame[IP_AT..]) {
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
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

/// A hash of the inner flow (MACs, and IP addresses and ports when there are any),
/// to spread flows over the source ports while keeping each flow on one.
fn flow_hash(eth: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |b: &[u8]| {
        for &x in b {
            h = (h ^ x as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    mix(&eth[..12.min(eth.len())]);
    if eth.len() >= 38 && eth[12..14] == [0x08, 0x00] {
        mix(&eth[26..38]);
    }
    h
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
        _now: Instant,
    ) -> Verdict {
        let Some(seg) = self.segments.iter().position(|s| s.port == port) else {
            return Verdict::Release;
        };
        let data = out.data(buf, len);
        let Some(vnet) = VnetHdr::parse(data) else {
            self.drop(VtepDrop::Truncated);
            return Verdict::Release;
        };
        let (vni, mtu) = (self.segments[seg].vni, self.segments[seg].mtu);
        let dst = Mac(data[VNET_HDR_LEN..VNET_HDR_LEN + 6]
            .try_into()
            .expect("a frame"));
        // One peer if it is known to have the destination; all of them otherwise.
        let known = if dst.is_multicast() {
            None
        } else {
            self.segments[seg].remote.lookup(dst, _now)
        };
        let targets = match known {
            Some(p) => p..p + 1,
            None => 0..self.peers.len(),
        };
        let flow = flow_hash(&data[VNET_HDR_LEN..]);
        if vnet.is_gso() {
            // The segments go out in batches, one sendmmsg per batch and peer, so a
            // 64 KiB super-frame costs a syscall, not forty-five.
            let listen = self.listen;
            let Vtep {
                senders,
                peers,
                scratch,
                batch,
                underlay,
                underlay_dropped,
                ..
            } = self;
            batch.clear();
            let mut size = 0;
            let mut count = 0;
            let mut failed = 0u64;
            let mut oversize = false;
            let cut = offload::segment(
                &vnet,
                &data[VNET_HDR_LEN..],
                scratch,
                HEADER_LEN,
                |datagram| {
                    // Each segment must fit the bridge's MTU on its own: VXLAN
                    // never fragments.
                    if datagram.len() - HEADER_LEN > mtu as usize + ETH_HDR_LEN {
                        oversize = true;
                        return;
                    }
                    vxlan::emit(datagram, vni);
                    if underlay.is_some() {
                        let src = SocketAddrV4::new(
                            *listen.ip(),
                            senders[(flow % senders.len() as u64) as usize].1,
                        );
                        for p in targets.clone() {
                            underlay_copy(underlay, underlay_dropped, src, peers[p].addr, datagram);
                        }
                    }
                    if count > 0
                        && (batch.len() + datagram.len() > GSO_BATCH_BYTES
                            || count == GSO_BATCH_SEGMENTS)
                    {
                        for p in targets.clone() {
                            if !send_batch(senders, &mut peers[p], flow, batch, size) {
                                failed += 1;
                            }
                        }
                        batch.clear();
                        count = 0;
                    }
                    if count == 0 {
                        size = datagram.len();
                    }
                    batch.extend_from_slice(datagram);
                    count += 1;
                },
            );
            if count > 0 {
                for p in targets.clone() {
                    if !send_batch(senders, &mut peers[p], flow, batch, size) {
                        failed += 1;
                    }
                }
            }
            self.drops[VtepDrop::SendError as usize] += failed;
            if oversize {
                self.drop(VtepDrop::Oversize);
            }
            match cut {
                Ok(_) => {}
                Err(offload::OffloadError::UnsupportedGso) => self.drop(VtepDrop::UnsupportedGso),
                Err(offload::OffloadError::Malformed) => self.drop(VtepDrop::Malformed),
            }
            return Verdict::Release;
        }
        if len - VNET_HDR_LEN > mtu as usize + ETH_HDR_LEN + 4 {
            self.drop(VtepDrop::Oversize);
            return Verdict::Release;
        }
        if offload::finish(&vnet, &mut data[VNET_HDR_LEN..]).is_err() {
            self.drop(VtepDrop::Malformed);
            return Verdict::Release;
        }
        // The header goes over the virtio-net header's tail: the frame is not copied.
        let datagram = &mut data[VNET_HDR_LEN - HEADER_LEN..];
        vxlan::emit(datagram, vni);
        let mut failed = 0;
        if self.underlay.is_some() {
            let src = SocketAddrV4::new(
                *self.listen.ip(),
                self.senders[(flow % self.senders.len() as u64) as usize].1,
            );
            for p in targets.clone() {
                underlay_copy(
                    &mut self.underlay,
                    &mut self.underlay_dropped,
                    src,
                    self.peers[p].addr,
                    datagram,
                );
            }
        }
        for p in targets {
            if !Self::send(&self.senders, &mut self.peers[p], flow, datagram) {
                failed += 1;
            }
        }
        self.drops[VtepDrop::SendError as usize] += failed;
        Verdict::Release
    }

    fn ready(&mut self, _n: usize, out: &mut Emitter<'_>, now: Instant) -> bool {
        self.receive(out, now)
    }

    fn tick(&mut self, _out: &mut Emitter<'_>, now: Instant) {
        for seg in &mut self.segments {
            seg.remote.age(now);
        }
    }

    fn capture_outside(&mut self, tx: Sender<Captured>) -> bool {
        self.underlay = Some(tx);
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
