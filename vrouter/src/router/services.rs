//! Service VIPs, IPv4 and IPv6: a connection to a VIP gets a backend (rendezvous
//! hashing) and a NAT flow; the flow's packets are rewritten both ways, and a TCP flow
//! dropped while its ends still hold it gets a reset sent to each.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Instant;

use vswitch::frame::{VnetHdr, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use vswitch::wire::ethernet::{EthernetRepr, ETHERTYPE_IPV4, ETHERTYPE_IPV6, HEADER_LEN};
use vswitch::wire::nat::Rewrite6;
use vswitch::wire::tcp::{self, TcpPacket};
use vswitch::wire::{nat, PROTO_TCP};

use super::{Router, RouterDrop};
use crate::nat::{Direction, Flow, FlowKey, Inserted};

/// The NAT flow key of a TCP or UDP packet in `frame` (a first fragment), if any.
pub(super) fn flow_key(frame: &[u8]) -> Option<FlowKey> {
    FlowKey::from_frame(frame.get(VNET_HDR_LEN..)?)
}

/// A TCP segment's end and flags (`packet`: IPv4 or IPv6, TCP right after the
/// header), to reset both ends should its flow be dropped.
fn tcp_segment(packet: &[u8]) -> Option<(u32, u8)> {
    let ip = vswitch::wire::ip::IpHead::parse(packet).filter(|ip| ip.proto == PROTO_TCP)?;
    let t = TcpPacket::new_checked(ip.payload)?;
    Some((t.seq_end(), t.flags()))
}

impl Router {
    /// Service translation of the IPv4 packet in `frame`. A packet of a known flow is
    /// rewritten to the other side's view; a new connection to a VIP gets a backend
    /// (and a flow). Returns the new destination and the flow as it was before, if the
    /// packet was rewritten.
    pub(super) fn translate(
        &mut self,
        frame: &mut [u8],
        now: Instant,
    ) -> Result<Option<(Ipv4Addr, FlowKey)>, RouterDrop> {
        let Some(key) = flow_key(frame) else {
            return Ok(None);
        };
        let partial = VnetHdr::parse(frame).is_some_and(|v| v.flags & VNET_F_NEEDS_CSUM != 0);
        let packet = &mut frame[VNET_HDR_LEN + HEADER_LEN..];
        // Too short for the ports and checksum: left as it is.
        if !nat::can_rewrite_v4(packet) {
            return Ok(None);
        }
        let segment = tcp_segment(packet);
        let Some((new_src, new_dst, dir)) = self.flow_target(key, now)? else {
            return Ok(None);
        };
        let (SocketAddr::V4(new_src), SocketAddr::V4(new_dst)) = (new_src, new_dst) else {
            return Ok(None);
        };
        nat::rewrite_v4(packet, partial, new_src, new_dst);
        self.translated(&key, dir, segment);
        Ok(Some((*new_dst.ip(), key)))
    }

    /// Counts a translated packet, and follows its TCP `segment` (its end and flags)
    /// in the flow, to reset both ends should the flow be dropped.
    fn translated(&mut self, key: &FlowKey, dir: Direction, segment: Option<(u32, u8)>) {
        if let Some((next_seq, flags)) = segment {
            self.flows.tcp_segment(
                key,
                dir,
                next_seq,
                flags & tcp::FIN != 0,
                flags & tcp::RST != 0,
            );
        }
        self.stats.translated += 1;
    }

    /// Where a packet of flow `key` is to be rewritten to (source, destination) and
    /// which way it runs: from its flow, or, for a new connection to a VIP, from the
    /// flow made for it. None: no flow and no VIP, not translated.
    fn flow_target(
        &mut self,
        key: FlowKey,
        now: Instant,
    ) -> Result<Option<(SocketAddr, SocketAddr, Direction)>, RouterDrop> {
        Ok(Some(match self.flows.lookup(&key, now) {
            Some((flow, Direction::Original)) => {
                (flow.reply.dst, flow.reply.src, Direction::Original)
            }
            Some((flow, Direction::Reply)) => {
                (flow.original.dst, flow.original.src, Direction::Reply)
            }
            None => {
                let Some(svc) = self
                    .services
                    .iter()
                    .position(|s| s.proto == key.proto && s.vip == key.dst)
                else {
                    return Ok(None);
                };
                let flow = self.new_service_flow(svc, key, now)?;
                (flow.reply.dst, flow.reply.src, Direction::Original)
            }
        }))
    }

    /// Service translation of the IPv6 packet in `frame` (TCP or UDP right after the
    /// fixed header), as [`Router::translate`] does for IPv4: rewritten to the other
    /// side's view, the L4 checksum updated for the addresses (RFC 8200 section 8.1).
    /// Returns the new destination and the flow as it was before, if rewritten. UDP
    /// with a zero checksum that a flow or VIP would take is dropped: IPv6 forbids it,
    /// and a translation would hand the backend a datagram it must discard anyway.
    pub(super) fn translate6(
        &mut self,
        frame: &mut [u8],
        now: Instant,
    ) -> Result<Option<(Ipv6Addr, FlowKey)>, RouterDrop> {
        let Some(key) = flow_key(frame) else {
            return Ok(None);
        };
        let partial = VnetHdr::parse(frame).is_some_and(|v| v.flags & VNET_F_NEEDS_CSUM != 0);
        let packet = &mut frame[VNET_HDR_LEN + HEADER_LEN..];
        match nat::can_rewrite_v6(packet, partial) {
            Rewrite6::Yes => {}
            Rewrite6::No => return Ok(None),
            Rewrite6::UdpZeroChecksum => {
                let ours = self.flows.contains(&key)
                    || self
                        .services
                        .iter()
                        .any(|s| s.proto == key.proto && s.vip == key.dst);
                return if ours {
                    Err(RouterDrop::Udp6ZeroChecksum)
                } else {
                    Ok(None)
                };
            }
        }
        let segment = tcp_segment(packet);
        let Some((new_src, new_dst, dir)) = self.flow_target(key, now)? else {
            return Ok(None);
        };
        let (SocketAddr::V6(new_src), SocketAddr::V6(new_dst)) = (new_src, new_dst) else {
            return Ok(None);
        };
        nat::rewrite_v6(packet, partial, new_src, new_dst);
        self.translated(&key, dir, segment);
        Ok(Some((*new_dst.ip(), key)))
    }

    /// The flow a translated IPv6 packet in `frame` was sent as, found from its
    /// rewritten addresses (no flow refreshed): what an ICMPv6 error about it quotes,
    /// and whom it goes to.
    pub(super) fn sent_as6(&self, frame: &[u8]) -> Option<(SocketAddrV6, SocketAddrV6)> {
        let key = flow_key(frame)?;
        key.as_v6()?;
        let (flow, dir) = self.flows.get(&key.reversed())?;
        // The packet went the other way from the key found.
        match dir {
            Direction::Reply => flow.original.as_v6(),
            Direction::Original => flow.reply.as_v6(),
        }
    }

    /// Chooses a backend for a new connection to service `svc` and records the flow.
    /// A backend that would answer the client directly on its own subnet (hairpin)
    /// sees the connection come from the router's address on that subnet instead, so
    /// that its replies come back through the router.
    fn new_service_flow(
        &mut self,
        svc: usize,
        key: FlowKey,
        now: Instant,
    ) -> Result<Flow, RouterDrop> {
        let service = &self.services[svc];
        // Only a backend of the client's family: a service has one family (the lab
        // checks it), and a flow never crosses families.
        let backend = *service
            .backends
            .iter()
            .filter(|b| b.is_ipv4() == key.src.is_ipv4())
            .max_by_key(|b| flow_hash(&key, b))
            .ok_or(RouterDrop::NatPortsExhausted)?;
        let mut client = key.src;
        // Hairpin: the router's own address on the leg that holds both, with a port.
        let leg_addr = match (backend, key.src) {
            (SocketAddr::V4(b), SocketAddr::V4(c)) => self
                .ifaces
                .iter()
                .find(|i| i.on_link(*b.ip()) && i.on_link(*c.ip()))
                .and_then(|i| i.ip.map(std::net::IpAddr::V4)),
            (SocketAddr::V6(b), SocketAddr::V6(c)) => self
                .ifaces
                .iter()
                .filter_map(|i| i.ip6)
                .find(|&(gw, p)| {
                    super::ipv6::in_net6(*b.ip(), gw, p) && super::ipv6::in_net6(*c.ip(), gw, p)
                })
                .map(|(gw, _)| std::net::IpAddr::V6(gw)),
            _ => None,
        };
        if let Some(ip) = leg_addr {
            let start = flow_hash(&key, &backend) as u16;
            let free = (0..64u16)
                .map(|k| 32768 + (start.wrapping_add(k.wrapping_mul(7919))) % 28232)
                .map(|p| SocketAddr::new(ip, p))
                .find(|&a| {
                    !self.flows.contains(&FlowKey {
                        proto: key.proto,
                        src: backend,
                        dst: a,
                    })
                });
            client = free.ok_or(RouterDrop::NatPortsExhausted)?;
        }
        let flow = Flow {
            original: key,
            reply: FlowKey {
                proto: key.proto,
                src: backend,
                dst: client,
            },
            owner: svc,
            last_seen: now,
            closing: false,
            next_seq: [None; 2],
            finished: false,
            fins: 0,
        };
        match self.flows.insert(flow) {
            Inserted::Added { evicted } => {
                if let Some(old) = evicted {
                    self.reset_flow(&old, now);
                }
                Ok(flow)
            }
            // The reply key is taken by another flow (a client port reused towards
            // another VIP with the same backend): no translation could be undone.
            Inserted::KeyTaken => Err(RouterDrop::NatPortsExhausted),
        }
    }

    /// Ages the NAT flows; a TCP flow dropped while its ends still hold the
    /// connection gets a reset sent to each, as many as the outbox has room for now
    /// and the rest at the next tick.
    pub(super) fn expire_flows(&mut self, now: Instant) {
        let mut gone = [None; super::OUTBOX_SLOTS / 2];
        let mut n = 0;
        self.flows.expire(now, |f| {
            if n == gone.len() {
                return false;
            }
            gone[n] = Some(*f);
            n += 1;
            true
        });
        for f in gone.iter().flatten() {
            self.reset_flow(f, now);
        }
    }

    /// Tells both ends of a TCP flow that tapnet let go of (idle past its timeout, or
    /// evicted for room) that it is over: a reset to each, in its window, so neither
    /// waits on a connection that no longer goes anywhere.
    pub(super) fn reset_flow(&mut self, flow: &Flow, now: Instant) {
        if flow.original.proto != PROTO_TCP || flow.finished {
            return;
        }
        let [Some(client_next), Some(far_next)] = flow.next_seq else {
            return;
        };
        // To the client, from the address it called; to the far side, from the
        // address it saw (the client, or the router's own for a hairpin).
        let ends = [
            (flow.original.dst, flow.original.src, far_next, client_next),
            (flow.reply.dst, flow.reply.src, client_next, far_next),
        ];
        for (from, to, seq, ack) in ends {
            let sent = match (from, to) {
                (SocketAddr::V4(from), SocketAddr::V4(to)) => {
                    self.reset_v4(from, to, seq, ack, now)
                }
                (SocketAddr::V6(from), SocketAddr::V6(to)) => {
                    self.reset_v6(from, to, seq, ack, now)
                }
                _ => false,
            };
            if sent {
                self.stats.flow_resets += 1;
            }
        }
    }

    /// Queues a TCP reset from `from` to `to` (IPv4), if the router knows where `to`
    /// is; false if not sent.
    fn reset_v4(
        &mut self,
        from: SocketAddrV4,
        to: SocketAddrV4,
        seq: u32,
        ack: u32,
        now: Instant,
    ) -> bool {
        let Some(route) = self.routes.lookup(*to.ip()).copied() else {
            return false; // a client outside (through a forward): the proxy's side
        };
        let Some(mac) = self.neighbors.lookup(route.iface, *to.ip(), now) else {
            return false;
        };
        let me = self.ifaces[route.iface].mac;
        self.queue(route.iface, |buf| {
            let eth = &mut buf[VNET_HDR_LEN..];
            EthernetRepr {
                dst: mac,
                src: me,
                ethertype: ETHERTYPE_IPV4,
            }
            .emit(eth);
            let n = tcp::emit_rst(from, to, seq, ack, &mut eth[HEADER_LEN..])?;
            Some(VNET_HDR_LEN + HEADER_LEN + n)
        })
    }

    /// [`Router::reset_v4`] over IPv6: to a neighbour of the leg whose subnet6 holds
    /// `to`.
    fn reset_v6(
        &mut self,
        from: SocketAddrV6,
        to: SocketAddrV6,
        seq: u32,
        ack: u32,
        now: Instant,
    ) -> bool {
        let Some(leg) = self.ifaces.iter().position(|i| {
            i.ip6
                .is_some_and(|(gw, p)| super::ipv6::in_net6(*to.ip(), gw, p))
        }) else {
            return false;
        };
        let Some(mac) = self.neighbor6(leg, *to.ip(), now) else {
            return false;
        };
        let me = self.ifaces[leg].mac;
        self.queue(leg, |buf| {
            let eth = &mut buf[VNET_HDR_LEN..];
            EthernetRepr {
                dst: mac,
                src: me,
                ethertype: ETHERTYPE_IPV6,
            }
            .emit(eth);
            let n = tcp::emit_rst6(from, to, seq, ack, &mut eth[HEADER_LEN..])?;
            Some(VNET_HDR_LEN + HEADER_LEN + n)
        })
    }
}

/// Rendezvous hash of a flow and a backend: each flow picks the backend scoring
/// highest, so backends added or removed move only their share of new flows.
fn flow_hash(key: &FlowKey, backend: &SocketAddr) -> u64 {
    let fold = |a: &SocketAddr| match a {
        SocketAddr::V4(a) => u64::from(u32::from(*a.ip())),
        SocketAddr::V6(a) => {
            let o = u128::from(*a.ip());
            (o ^ (o >> 64)) as u64
        }
    };
    let mut x = fold(&key.src) << 16 | key.src.port() as u64;
    x ^= (fold(backend) << 16 | backend.port() as u64).rotate_left(29);
    x ^= key.proto as u64;
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
