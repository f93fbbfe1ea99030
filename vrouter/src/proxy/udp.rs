//! UDP through the host proxy: a host socket per masqueraded flow, or a forward's
//! listening socket and the client's address.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::Interest;
use vswitch::wire::ip::IpHead;
use vswitch::wire::udp::{self as wire_udp, UdpPacket};

use super::errqueue::{self, Quote};
use super::{unmapped, Entry, HostProxy, Reg, Unreachable, PROTO_UDP};

/// The largest UDP payload (IPv6's; IPv4's is 20 bytes less, and a larger datagram
/// for an IPv4 container is not passed on).
const MAX_PAYLOAD: usize = 65535 - 8;

pub(super) struct UdpFlow {
    /// Masquerade: its own host socket; forward: the listener's entry.
    pub socket: Option<UdpSocket>,
    pub listener: Option<usize>,
    pub container: SocketAddr,
    /// The container's MAC, whose share a masquerade flow counts against.
    pub owner: vswitch::Mac,
    /// The other end as the container sees it (the flow's key).
    pub remote: SocketAddr,
    /// The other end on the host side, where its datagrams go.
    pub peer: SocketAddr,
    pub rule: Option<usize>,
    pub last_active: Instant,
    /// The TTL the host socket sends with now (the container's less this hop).
    pub ttl: u8,
    /// Whether the host socket sends with DF now (as the container's datagram asked).
    pub df: bool,
    /// The container's latest datagram's head, for the ICMP errors about it.
    pub quote: Quote,
}

/// A connected host socket for a masqueraded flow to `dst`, with ICMP errors queued
/// (IPv4; over IPv6 the errors are not passed on yet).
fn masquerade_socket(dst: SocketAddr, ttl: u8, df: bool) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_nonblocking(true)?;
    let fd = s.as_raw_fd();
    let _ = errqueue::set_ttl(fd, dst.is_ipv6(), ttl);
    let _ = errqueue::want_ttl(fd, dst.is_ipv6());
    let _ = errqueue::enable(fd, dst.is_ipv6());
    if dst.is_ipv4() {
        let _ = errqueue::set_dont_fragment(fd, df);
        s.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
    } else {
        s.bind(&SocketAddr::from(([0u16; 8], 0)).into())?;
    }
    s.connect(&dst.into())?;
    Ok(UdpSocket::from_std(s.into()))
}

impl HostProxy {
    /// A UDP datagram from a container (whole: the router reassembled it).
    pub(super) fn udp_from_container(
        &mut self,
        ip: &IpHead<'_>,
        packet: &[u8],
        reg: &Reg<'_>,
        now: Instant,
    ) {
        // The UDP length, not the frame's: Ethernet may have padded it.
        let Some(udp) = UdpPacket::new_checked(ip.payload) else {
            self.stats.malformed += 1;
            return;
        };
        let src = SocketAddr::new(ip.src, udp.src_port());
        let dst = SocketAddr::new(ip.dst, udp.dst_port());
        // Port 0 is no one's; UDP over IPv6 without a checksum is not UDP (RFC 8200
        // section 8.1: the receiver discards it).
        if src.port() == 0 || dst.port() == 0 || (ip.src.is_ipv6() && udp.checksum() == 0) {
            self.stats.malformed += 1;
            return;
        }
        let payload = udp.payload();
        let ttl = ip.ttl.saturating_sub(1);
        let df = ip.dont_frag;
        let key = (PROTO_UDP, src, dst);
        if let Some(&n) = self.flows.get(&key) {
            let Some(Entry::Udp(flow)) = self.entries[n].as_mut() else {
                return;
            };
            flow.last_active = now;
            flow.quote = Quote::of(packet);
            let (remote, rule, listener) = (flow.peer, flow.rule, flow.listener);
            let (sent, mtu) = match &flow.socket {
                Some(socket) => {
                    let fd = socket.as_raw_fd();
                    if flow.ttl != ttl {
                        // A traceroute's probes change their TTL as they go.
                        flow.ttl = ttl;
                        let _ = errqueue::set_ttl(fd, dst.is_ipv6(), ttl);
                    }
                    if flow.df != df && dst.is_ipv4() {
                        flow.df = df;
                        let _ = errqueue::set_dont_fragment(fd, df);
                    }
                    let sent = super::send_past_pending_error(|| socket.send(payload));
                    let too_big =
                        matches!(&sent, Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE));
                    (sent, too_big.then(|| errqueue::path_mtu(fd)).flatten())
                }
                None => match listener.map(|l| &self.entries[l]) {
                    Some(Some(Entry::UdpListener { socket, .. })) => {
                        (socket.send_to(payload, remote), None)
                    }
                    _ => (Ok(0), None),
                },
            };
            if let (Ok(k), Some(r)) = (sent, rule) {
                self.forward_stats[r].bytes_out += k as u64;
            }
            self.lru.touch(n);
            if let Some(mtu) = mtu {
                self.fragmentation_needed(packet, mtu);
            }
            return;
        }
        if self.is_gateway(dst.ip()) {
            // Nothing of a forward's listens there: as a host with no socket on that
            // port answers (the router does the same without a proxy).
            self.stats.no_flow += 1;
            return self.error_from_gateway(packet, Unreachable::Port);
        }
        if !self.masquerade {
            self.stats.no_flow += 1;
            return;
        }
        if !self.within_share() {
            return;
        }
        let socket = match masquerade_socket(dst, ttl, df) {
            Ok(s) => s,
            Err(e) => return self.unreachable_for(packet, &e),
        };
        if let Err(e) = socket.send(payload) {
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                if let Some(mtu) = errqueue::path_mtu(socket.as_raw_fd()) {
                    return self.fragmentation_needed(packet, mtu);
                }
            }
            return self.unreachable_for(packet, &e);
        }
        self.make_room();
        let n = self.add(Entry::Udp(UdpFlow {
            socket: Some(socket),
            listener: None,
            container: src,
            owner: self.from,
            remote: dst,
            peer: dst,
            rule: None,
            last_active: now,
            ttl,
            df,
            quote: Quote::of(packet),
        }));
        if let Some(Entry::Udp(UdpFlow {
            socket: Some(s), ..
        })) = self.entries[n].as_mut()
        {
            let _ = reg.registry.register(s, reg.token(n), Interest::READABLE);
        }
        self.flows.insert(key, n);
        self.stats.udp_flows += 1;
    }

    /// Queues a datagram for a container, with `ttl` (the hop limit over IPv6); over
    /// IPv4 the router cuts it into fragments on the way if it is larger than the
    /// bridge's MTU. Both ends are of one family (a flow's are).
    fn udp_to_container(&mut self, src: SocketAddr, dst: SocketAddr, ttl: u8, payload: &[u8]) {
        self.queues
            .emit(40 + 8 + payload.len(), |buf| match (src, dst) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    wire_udp::emit_packet(s, d, ttl, payload, buf)
                }
                (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                    wire_udp::emit_packet6(s, d, ttl, payload, buf)
                }
                _ => None,
            });
    }

    /// Reads a batch of datagrams from forward listener `n`; true if there may be more.
    pub(super) fn receive_forward_udp(&mut self, n: usize, now: Instant) -> bool {
        let mut buf = std::mem::take(&mut self.rx_buf);
        buf.resize(MAX_PAYLOAD, 0);
        let more = self.forward_udp_batch(n, &mut buf, now);
        self.rx_buf = buf;
        more
    }

    fn forward_udp_batch(&mut self, n: usize, buf: &mut [u8], now: Instant) -> bool {
        for _ in 0..super::RX_BATCH {
            let (got, rule) = match &self.entries[n] {
                Some(Entry::UdpListener { socket, rule }) => (socket.recv_from(buf), *rule),
                _ => return false,
            };
            let Ok((len, peer)) = got else { return false };
            let client = unmapped(peer);
            let to = self.rules[rule].to;
            // The flow this client already has: found by its own address, or (for a
            // client the lab sees from the gateway) by looking.
            let existing = self
                .flows
                .get(&(PROTO_UDP, to, client))
                .copied()
                .or_else(|| {
                    self.entries.iter().position(|e| {
                    matches!(e, Some(Entry::Udp(f)) if f.listener == Some(n) && f.peer == client)
                })
                });
            let source = match existing.and_then(|f| match self.entries[f].as_mut() {
                Some(Entry::Udp(flow)) => {
                    flow.last_active = now;
                    Some((f, flow.remote))
                }
                _ => None,
            }) {
                Some((f, source)) => {
                    self.lru.touch(f);
                    source
                }
                None => {
                    let source = self.forward_source(client, to);
                    self.make_room();
                    let f = self.add(Entry::Udp(UdpFlow {
                        socket: None,
                        listener: Some(n),
                        container: to,
                        owner: vswitch::Mac::default(),
                        remote: source,
                        peer: client,
                        rule: Some(rule),
                        last_active: now,
                        ttl: 64,
                        df: false,
                        quote: Quote::default(),
                    }));
                    self.flows.insert((PROTO_UDP, to, source), f);
                    self.forward_stats[rule].connections += 1;
                    self.stats.udp_flows += 1;
                    source
                }
            };
            self.forward_stats[rule].bytes_in += len as u64;
            self.udp_to_container(source, to, 64, &buf[..len]);
        }
        true
    }

    /// Reads a batch of datagrams (and errors) from masquerade flow `n`'s socket;
    /// true if there may be more.
    pub(super) fn receive_masquerade_udp(&mut self, n: usize, now: Instant) -> bool {
        let mut buf = std::mem::take(&mut self.rx_buf);
        buf.resize(MAX_PAYLOAD, 0);
        let more = self.masquerade_udp_batch(n, &mut buf, now);
        self.rx_buf = buf;
        more
    }

    fn masquerade_udp_batch(&mut self, n: usize, buf: &mut [u8], now: Instant) -> bool {
        for _ in 0..super::RX_BATCH {
            let Some(Some(Entry::Udp(flow))) = self.entries.get_mut(n) else {
                return false;
            };
            let Some(socket) = &flow.socket else {
                return false;
            };
            // What the network said about the container's datagrams (a TTL that ran
            // out on the way, a closed port): back to the container, from its sender.
            if let Some(entry) = errqueue::read(socket.as_raw_fd()) {
                let quote = flow.quote;
                if let Some(err) = entry {
                    if !quote.is_empty() {
                        self.relay_error(&err, &quote);
                    }
                }
                continue;
            }
            let (len, ttl) = match errqueue::recv_with_ttl(socket.as_raw_fd(), buf) {
                Ok(got) => got,
                // A pending error read out above leaves its errno once more.
                Err(e) if e.raw_os_error().is_some_and(|c| c != libc::EAGAIN) => continue,
                Err(_) => return false,
            };
            flow.last_active = now;
            let (remote, container) = (flow.remote, flow.container);
            self.lru.touch(n);
            // The reply crossed the host (the gateway's hop), as through a kernel NAT.
            let ttl = ttl.map_or(64, |t| t.saturating_sub(1).max(1));
            self.udp_to_container(remote, container, ttl, &buf[..len]);
        }
        true
    }
}
