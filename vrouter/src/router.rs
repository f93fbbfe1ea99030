//! The router's decisions, with no IO: a frame that reached a router interface goes in
//! (a virtio-net header, then Ethernet), rewritten in place where it can be, and an
//! [`Action`] comes out. Frames the router makes itself (ARP requests, ICMP errors) wait
//! in a small fixed outbox. Time is passed in.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet,
    IpProtocol, Ipv4Packet,
};
use vswitch::frame::{VnetHdr, ETH_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use vswitch::Mac;

use crate::checksum;
use crate::nat::{Direction, Flow, FlowKey, FlowTable, Inserted, Timeouts, PROTO_TCP, PROTO_UDP};
use crate::neighbor::{NeighborTable, Resolution};
use crate::route::{mask, Route, RouteTable};
use vswitch::wire::ethernet::{EthernetFrame as WireEthernet, EthernetRepr};
use vswitch::wire::ipv4::Ipv4Packet as WireIpv4;
use vswitch::wire::tcp::{self, TcpPacket};

/// One leg of the router: its address on one bridge's subnet.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl Iface {
    fn network(&self) -> u32 {
        u32::from(self.ip) & mask(self.prefix)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network() | !mask(self.prefix))
    }

    fn on_link(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.network()
    }
}

/// A load-balanced virtual address: connections to `vip` go to one of `backends`.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub vip: SocketAddrV4,
    pub backends: Vec<SocketAddrV4>,
}

#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    pub neighbor_max: usize,
    pub neighbor_aging: Duration,
    /// ICMP errors per second, and the burst allowed above that rate.
    pub icmp_rate: u32,
    pub icmp_burst: u32,
    /// Translated flows (service connections) at most; the least recently used is
    /// evicted past that.
    pub nat_max_flows: usize,
    pub nat_timeouts: Timeouts,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            neighbor_max: 4096,
            neighbor_aging: Duration::from_secs(300),
            icmp_rate: 100,
            icmp_burst: 50,
            nat_max_flows: 65536,
            nat_timeouts: Timeouts::default(),
        }
    }
}

/// What becomes of a frame the router was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Rewritten in place: send it into the bridge of interface `iface`.
    Send { iface: usize },
    /// Rewritten but for the destination MAC, which is not known yet: keep the frame
    /// until `next_hop` answers ARP (an ARP request is in the outbox), then
    /// [`Router::complete`] it.
    Resolve {
        iface: usize,
        next_hop: Ipv4Addr,
        /// Who sent it, for the ICMP error should ARP fail (the frame's own source
        /// MAC has been rewritten by then).
        sender: Mac,
    },
    /// For an address outside every subnet, with the host proxy on (masquerade, or the
    /// return half of a port forward): hand the IP packet to the proxy.
    ToHost,
    /// Nothing more to do: answered or consumed.
    Done,
    /// Dropped, for this reason ([`Router::handle`] counts it).
    Drop(RouterDrop),
}

vswitch::drop_reasons! {
    /// Why the router did not forward a frame.
    pub enum RouterDrop {
        /// Too short for the headers it claims.
        Truncated => "truncated",
        /// An IPv4 header that does not parse (version, lengths).
        BadIpHeader => "bad_ip_header",
        BadIpChecksum => "bad_ip_checksum",
        /// TTL ran out here (an ICMP time-exceeded went back).
        TtlExceeded => "ttl_exceeded",
        /// No route to the destination (an ICMP network-unreachable went back).
        NoRoute => "no_route",
        /// The next hop never answered ARP (an ICMP host-unreachable went back).
        NeighborUnresolved => "neighbor_unresolved",
        /// Too many frames already waiting for ARP answers.
        HoldQueueFull => "hold_queue_full",
        /// Neither ARP nor IPv4 (IPv6 comes later).
        UnsupportedEthertype => "unsupported_ethertype",
        /// A unicast frame for another MAC that flooded onto the router's port.
        NotForRouter => "not_for_router",
        /// Addressed to the router but not something it serves (only ping is).
        ToRouterUnsupported => "to_router_unsupported",
        /// Sent to a subnet's broadcast or network address, or from a multicast,
        /// broadcast or unspecified source: not routed.
        NotRoutable => "not_routable",
        /// No free port to translate a hairpin service connection's source to.
        NatPortsExhausted => "nat_ports_exhausted",
        /// No free buffer for a frame the router or its proxy made.
        NoBuffer => "no_buffer",
        /// Larger than the outgoing bridge's MTU (fragmentation-needed went back if DF).
        TooBig => "too_big",
        /// IPv6, which this router does not route yet (the containers' own neighbour
        /// discovery and multicast listener reports, mostly).
        Ipv6NotRouted => "ipv6_not_routed",
        /// A source no container may use here: loopback, 0/8, link-local, the subnet's
        /// broadcast, the router's own addresses, or one that is not on the ingress
        /// bridge's subnet (reverse-path check).
        MartianSource => "martian_source",
        /// For a next hop not yet known while its leg already asks ARP for
        /// [`crate::neighbor::INCOMPLETE_MAX`] others (dropped without another request).
        NeighborTableBusy => "neighbor_table_busy",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub routed: u64,
    pub translated: u64,
    pub arp_replies: u64,
    pub arp_requests: u64,
    pub echo_replies: u64,
    pub icmp_errors: u64,
    pub icmp_rate_limited: u64,
    /// ARP requests not sent: more than [`ARP_RATE`] a second were due.
    pub arp_rate_limited: u64,
    pub outbox_full: u64,
    /// Packets routed on that had to be cut into fragments for the outgoing bridge.
    pub fragmented: u64,
    /// Resets sent to the ends of TCP flows dropped (idle past their timeout, or
    /// evicted for room) while they still held them.
    pub flow_resets: u64,
    pub drops: [u64; RouterDrop::COUNT],
}

impl RouterStats {
    pub fn dropped(&self, reason: RouterDrop) -> u64 {
        self.drops[reason as usize]
    }
}

/// Room for a frame the router builds: the virtio-net header, Ethernet, IPv4 and an
/// ICMP error quoting at most a 60-byte IP header and 8 bytes.
pub const SMALL_FRAME: usize = 128;
const OUTBOX_SLOTS: usize = 256;

/// Frames the router made, waiting to be sent. Fixed size: nothing is allocated.
#[derive(Clone)]
pub struct Outbox {
    frames: [(usize, usize, [u8; SMALL_FRAME]); OUTBOX_SLOTS],
    len: usize,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            frames: [(0, 0, [0; SMALL_FRAME]); OUTBOX_SLOTS],
            len: 0,
        }
    }

    /// A zeroed slot for a frame to leave by `iface`, or `None` when full.
    fn slot(&mut self, iface: usize) -> Option<&mut (usize, usize, [u8; SMALL_FRAME])> {
        if self.len == OUTBOX_SLOTS {
            return None;
        }
        let slot = &mut self.frames[self.len];
        self.len += 1;
        *slot = (iface, 0, [0; SMALL_FRAME]);
        Some(slot)
    }

    /// Hands each waiting frame (interface, bytes) to `f`, then empties the box.
    pub fn drain(&mut self, mut f: impl FnMut(usize, &[u8])) {
        for (iface, len, bytes) in &self.frames[..self.len] {
            f(*iface, &bytes[..*len]);
        }
        self.len = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Clone)]
struct TokenBucket {
    rate: u32,
    burst: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = self
            .last
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_ARP: u16 = 0x0806;
const DEFAULT_TTL: u8 = 64;

pub struct Router {
    ifaces: Vec<Iface>,
    /// Each leg's bridge MTU (65535 until told).
    mtus: Vec<u32>,
    services: Vec<Service>,
    flows: FlowTable,
    routes: RouteTable,
    neighbors: NeighborTable,
    icmp: TokenBucket,
    outbox: Outbox,
    stats: RouterStats,
    /// Set when ARP taught the router something: kept frames may now go.
    learned: bool,
    /// Whether addresses outside every subnet go to the host proxy.
    host_egress: bool,
    /// ARP requests a second at most, over every leg (with a burst).
    arp_rate: TokenBucket,
    /// Addresses the neighbour table asked to be probed in a tick.
    probes: Vec<(usize, Ipv4Addr)>,
}

/// ARP requests per second the router sends at most, and the burst above that.
const ARP_RATE: u32 = 200;
const ARP_BURST: u32 = 100;

/// What a parsed frame is, for the dispatch in [`Router::handle`].
enum Kind {
    Arp,
    Ipv4,
}

impl Router {
    pub fn new(ifaces: Vec<Iface>, services: Vec<Service>, config: RouterConfig) -> Router {
        let legs = ifaces.len();
        let mut routes = RouteTable::default();
        for (i, iface) in ifaces.iter().enumerate() {
            routes.add(Route {
                network: Ipv4Addr::from(iface.network()),
                prefix: iface.prefix,
                iface: i,
                gateway: None,
            });
        }
        Router {
            mtus: vec![65535; ifaces.len()],
            ifaces,
            services,
            flows: FlowTable::new(config.nat_max_flows, config.nat_timeouts),
            routes,
            neighbors: NeighborTable::new(legs, config.neighbor_max, config.neighbor_aging),
            icmp: TokenBucket {
                rate: config.icmp_rate,
                burst: config.icmp_burst,
                tokens: config.icmp_burst as f64,
                last: None,
            },
            outbox: Outbox::new(),
            stats: RouterStats::default(),
            learned: false,
            host_egress: false,
            arp_rate: TokenBucket {
                rate: ARP_RATE,
                burst: ARP_BURST,
                tokens: ARP_BURST as f64,
                last: None,
            },
            probes: Vec::new(),
        }
    }

    /// The MTU of leg `iface`'s bridge: larger packets are not routed into it.
    pub fn set_mtu(&mut self, iface: usize, mtu: u32) {
        if let Some(m) = self.mtus.get_mut(iface) {
            *m = mtu;
        }
    }

    /// Tells the router where a port of the lab is: `ip` at `mac`, for good (a
    /// PERMANENT neighbour on the leg whose subnet holds `ip`; no ARP for it, and none
    /// can change it). False if no leg's subnet holds it.
    pub fn add_static_neighbor(&mut self, ip: Ipv4Addr, mac: Mac, now: Instant) -> bool {
        match self.ifaces.iter().position(|i| i.on_link(ip)) {
            Some(leg) => {
                self.neighbors.add_permanent(leg, ip, mac, now);
                true
            }
            None => false,
        }
    }

    /// The MTU of leg `iface`'s bridge.
    pub fn mtu(&self, iface: usize) -> u32 {
        self.mtus.get(iface).copied().unwrap_or(65535)
    }

    /// Whether `frame`, arriving on `iface`, is an IPv4 fragment that must be whole
    /// before the router decides on it: one for the host proxy (an outside address, or
    /// a gateway's), for a service VIP, or from a service backend (whose replies are
    /// translated). Those need ports, which only a first fragment carries. Fragments
    /// routed between subnets go on as they are.
    pub fn wants_reassembly(&self, iface: usize, frame: &[u8]) -> bool {
        let Some(me) = self.ifaces.get(iface) else {
            return false;
        };
        let Some(eth) = WireEthernet::new_checked(frame.get(VNET_HDR_LEN..).unwrap_or_default())
        else {
            return false;
        };
        if eth.dst() != me.mac || eth.ethertype() != ETHERTYPE_IPV4 {
            return false;
        }
        let Ok(ip) = WireIpv4::new_checked(eth.payload()) else {
            return false;
        };
        if !ip.is_fragment() {
            return false;
        }
        let (src, dst) = (ip.src(), ip.dst());
        self.is_own_ip(dst)
            || (self.host_egress && self.routes.lookup(dst).is_none())
            || self
                .services
                .iter()
                .any(|s| s.backends.iter().any(|b| *b.ip() == src))
    }

    /// Sends what no subnet holds to the host proxy instead of answering "no route".
    pub fn set_host_egress(&mut self, on: bool) {
        self.host_egress = on;
    }

    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn neighbors(&self) -> &NeighborTable {
        &self.neighbors
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// True once after ARP taught the router an address.
    pub fn take_learned(&mut self) -> bool {
        std::mem::take(&mut self.learned)
    }

    /// A drop, as a value: the caller of [`Router::decide`] counts it (or, tracing,
    /// only shows it).
    fn drop(&mut self, reason: RouterDrop) -> Action {
        Action::Drop(reason)
    }

    /// Counts what an action dropped.
    fn counted(&mut self, action: Action) -> Action {
        if let Action::Drop(reason) = action {
            self.stats.drops[reason as usize] += 1;
        }
        action
    }

    /// The gateways' addresses and the services' VIPs: the router answers for them.
    fn is_own_ip(&self, ip: Ipv4Addr) -> bool {
        self.ifaces.iter().any(|i| i.ip == ip) || self.services.iter().any(|s| *s.vip.ip() == ip)
    }

    /// Decides over `frame`, which arrived on interface `iface` at `now`, and counts a
    /// drop under its reason.
    pub fn handle(&mut self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        let action = self.decide(iface, frame, now);
        self.counted(action)
    }

    /// [`Router::handle`] without counting a drop: the decision itself, which `trace`
    /// shows as it is.
    pub fn decide(&mut self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        if frame.len() < VNET_HDR_LEN + ETH_HDR_LEN || iface >= self.ifaces.len() {
            return self.drop(RouterDrop::Truncated);
        }
        let kind = {
            let eth = EthernetFrame::new_unchecked(&frame[VNET_HDR_LEN..]);
            let dst = Mac(eth.dst_addr().0);
            let ours = dst == self.ifaces[iface].mac;
            match u16::from(eth.ethertype()) {
                ETHERTYPE_ARP if ours || dst == Mac::BROADCAST => Kind::Arp,
                ETHERTYPE_IPV4 if ours => Kind::Ipv4,
                _ if !ours && !dst.is_multicast() => return self.drop(RouterDrop::NotForRouter),
                // Multicast and broadcast that is not ARP (IPv6 neighbour discovery, mDNS):
                // a router does not forward it.
                ETHERTYPE_IPV4 => return self.drop(RouterDrop::NotRoutable),
                // The containers' own IPv6 chatter (neighbour discovery, MLD).
                ETHERTYPE_IPV6 => return self.drop(RouterDrop::Ipv6NotRouted),
                _ => return self.drop(RouterDrop::UnsupportedEthertype),
            }
        };
        match kind {
            Kind::Arp => self.arp(iface, frame, now),
            Kind::Ipv4 => self.ipv4(iface, frame, now),
        }
    }

    fn arp(&mut self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        let me = self.ifaces[iface].clone();
        let (op, sha, spa, tpa) = {
            let Ok(arp) = ArpPacket::new_checked(&frame[VNET_HDR_LEN + ETH_HDR_LEN..]) else {
                return self.drop(RouterDrop::Truncated);
            };
            if arp.hardware_len() != 6 || arp.protocol_len() != 4 {
                return self.drop(RouterDrop::UnsupportedEthertype);
            }
            let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            (
                arp.operation(),
                Mac(arp.source_hardware_addr().try_into().expect("hlen 6")),
                ip(arp.source_protocol_addr()),
                ip(arp.target_protocol_addr()),
            )
        };
        let sender_ok = me.on_link(spa) && !sha.is_multicast() && !sha.is_zero();
        let answers_for =
            tpa == me.ip || (me.on_link(tpa) && self.services.iter().any(|s| *s.vip.ip() == tpa));
        if !answers_for {
            // Not for us: only refresh what we know (gratuitous ARP, a moved address).
            if sender_ok {
                self.neighbors.refresh(iface, spa, sha, now);
            }
            return Action::Done;
        }
        // Learn only what a router should: an answer to its own request, or the
        // sender of a request aimed at it (which it answers).
        if sender_ok {
            let waited_for = if op == ArpOperation::Request {
                self.neighbors.learn_request(iface, spa, sha, now)
            } else {
                self.neighbors.confirm(iface, spa, sha, now)
            };
            self.learned |= waited_for;
        }
        if op != ArpOperation::Request {
            return Action::Done;
        }
        // Turn the request into the reply, in place.
        let eth_bytes = &mut frame[VNET_HDR_LEN..];
        let mut eth = EthernetFrame::new_unchecked(&mut *eth_bytes);
        eth.set_dst_addr(smoltcp::wire::EthernetAddress(sha.0));
        eth.set_src_addr(smoltcp::wire::EthernetAddress(me.mac.0));
        let mut arp = ArpPacket::new_unchecked(&mut eth_bytes[ETH_HDR_LEN..]);
        arp.set_operation(ArpOperation::Reply);
        arp.set_source_hardware_addr(&me.mac.0);
        arp.set_source_protocol_addr(&tpa.octets());
        arp.set_target_hardware_addr(&sha.0);
        arp.set_target_protocol_addr(&spa.octets());
        self.stats.arp_replies += 1;
        Action::Send { iface }
    }

    fn ipv4(&mut self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        let (src, dst, ttl, proto, frag_offset, header_len) = {
            let ip_bytes = &frame[VNET_HDR_LEN + ETH_HDR_LEN..];
            let Ok(ip) = Ipv4Packet::new_checked(ip_bytes) else {
                return self.drop(RouterDrop::BadIpHeader);
            };
            if ip.version() != 4 {
                return self.drop(RouterDrop::BadIpHeader);
            }
            if !ip.verify_checksum() {
                return self.drop(RouterDrop::BadIpChecksum);
            }
            (
                ip.src_addr(),
                ip.dst_addr(),
                ip.hop_limit(),
                ip.next_header(),
                ip.frag_offset(),
                ip.header_len() as usize,
            )
        };
        if src.is_multicast() || src.is_broadcast() || src.is_unspecified() {
            return self.drop(RouterDrop::NotRoutable);
        }
        // Martian sources, which Linux drops too (ip_route_input_slow, rp_filter): the
        // host's loopback, "this network", link-local, the subnet's broadcast, the
        // router's own addresses; and reverse-path filtering: a source must be on the
        // ingress bridge's subnet (the only way back to it), so no address of another
        // bridge, and nothing from outside every subnet, comes in here.
        let leg = &self.ifaces[iface];
        if src.is_loopback()
            || src.octets()[0] == 0
            || src.is_link_local()
            || src == leg.broadcast()
            || self.is_own_ip(src)
            || !leg.on_link(src)
        {
            return self.drop(RouterDrop::MartianSource);
        }
        // Traffic from a neighbour confirms where it is, as TCP's ACKs do for Linux:
        // a busy next hop does not have to go through ARP again every few minutes.
        if self.ifaces[iface].on_link(src) {
            let mac = Mac(frame[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12]
                .try_into()
                .expect("6 bytes"));
            self.neighbors.traffic_from(iface, src, mac, now);
        }
        let mut dst = dst;
        let mut translated = false;
        if frag_offset == 0 {
            match self.translate(frame, header_len, u8::from(proto), now) {
                Ok(Some(new_dst)) => {
                    dst = new_dst;
                    translated = true;
                }
                Ok(None) => {}
                Err(reason) => return self.drop(reason),
            }
        }
        if !translated && self.is_own_ip(dst) {
            // The host proxy sources some forwarded connections from a gateway (for
            // clients a container could not answer directly): their replies are its.
            let gateway = self.ifaces.iter().any(|i| i.ip == dst);
            if self.host_egress && gateway && matches!(proto, IpProtocol::Tcp | IpProtocol::Udp) {
                return Action::ToHost;
            }
            return self.addressed_to_router(iface, frame, proto, header_len, now);
        }
        let Some(route) = self.routes.lookup(dst).copied() else {
            if self.host_egress && outside_routable(dst) {
                if ttl <= 1 {
                    return self.ttl_expired(iface, frame, frag_offset, now);
                }
                return Action::ToHost;
            }
            self.icmp_error(
                iface,
                frame,
                Icmpv4Message::DstUnreachable,
                0,
                frag_offset,
                now,
            );
            return self.drop(RouterDrop::NoRoute);
        };
        let out = &self.ifaces[route.iface];
        if dst == out.broadcast() || u32::from(dst) == out.network() || dst.is_multicast() {
            return self.drop(RouterDrop::NotRoutable);
        }
        if ttl <= 1 {
            return self.ttl_expired(iface, frame, frag_offset, now);
        }
        // Too big for the outgoing bridge (a VXLAN bridge's 1450, say): a DF sender
        // (or a super-frame) is told the size that fits (RFC 1191), as a router would;
        // any other packet goes on, cut into fragments on its way out (RFC 791,
        // RFC 1812 section 5.2.6).
        let out_mtu = self.mtus[route.iface];
        if ip_size(frame) > out_mtu as usize {
            let df = frame[VNET_HDR_LEN + ETH_HDR_LEN + 6] & 0x40 != 0;
            let gso = VnetHdr::parse(frame).is_some_and(|v| v.is_gso());
            if df || gso {
                if df {
                    self.icmp_error_to(
                        iface,
                        sender_of(frame),
                        frame,
                        Icmpv4Message::DstUnreachable,
                        4,
                        frag_offset,
                        out_mtu.min(0xffff),
                        now,
                    );
                }
                return self.drop(RouterDrop::TooBig);
            }
            self.stats.fragmented += 1;
        }
        // TTL shares a 16-bit word with the protocol: update the checksum for that word.
        let ip_off = VNET_HDR_LEN + ETH_HDR_LEN;
        let old_word = u16::from_be_bytes([ttl, frame[ip_off + 9]]);
        let new_word = u16::from_be_bytes([ttl - 1, frame[ip_off + 9]]);
        frame[ip_off + 8] = ttl - 1;
        let check = u16::from_be_bytes([frame[ip_off + 10], frame[ip_off + 11]]);
        let check = checksum::update16(check, old_word, new_word);
        frame[ip_off + 10..ip_off + 12].copy_from_slice(&check.to_be_bytes());

        let sender = Mac(frame[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12]
            .try_into()
            .expect("6 bytes"));
        self.send_via(frame, Some(iface), route, dst, sender, now)
    }

    /// A packet whose TTL runs out here: time-exceeded back to its sender.
    fn ttl_expired(
        &mut self,
        iface: usize,
        frame: &[u8],
        frag_offset: u16,
        now: Instant,
    ) -> Action {
        self.icmp_error(
            iface,
            frame,
            Icmpv4Message::TimeExceeded,
            0,
            frag_offset,
            now,
        );
        self.drop(RouterDrop::TtlExceeded)
    }

    /// Addresses `frame` from the leg of `route` to its next hop, or asks ARP for it.
    #[allow(clippy::too_many_arguments)]
    fn send_via(
        &mut self,
        frame: &mut [u8],
        ingress: Option<usize>,
        route: Route,
        dst: Ipv4Addr,
        sender: Mac,
        now: Instant,
    ) -> Action {
        let next_hop = route.gateway.unwrap_or(dst);
        let out_mac = self.ifaces[route.iface].mac;
        frame[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12].copy_from_slice(&out_mac.0);
        self.stats.routed += 1;
        match self.neighbors.resolve(route.iface, next_hop, now) {
            Resolution::Known(mac) => {
                frame[VNET_HDR_LEN..VNET_HDR_LEN + 6].copy_from_slice(&mac.0);
                Action::Send { iface: route.iface }
            }
            asked @ (Resolution::Ask | Resolution::Wait) => {
                // The first request goes now (rate permitting); the table's tick sends
                // the next ones, a second apart, and never one per packet.
                if asked == Resolution::Ask && self.arp_allowed(now) {
                    self.arp_request(route.iface, next_hop);
                }
                Action::Resolve {
                    iface: route.iface,
                    next_hop,
                    sender,
                }
            }
            // Asked for lately and never answered: unreachable at once, as the kernel
            // says for a FAILED neighbour, without asking again for each packet.
            Resolution::Failed => {
                if sender != Mac::BROADCAST {
                    if let Some(ingress) = ingress {
                        self.icmp_error_to(
                            ingress,
                            sender,
                            frame,
                            Icmpv4Message::DstUnreachable,
                            1,
                            0,
                            0,
                            now,
                        );
                    }
                }
                self.drop(RouterDrop::NeighborUnresolved)
            }
            Resolution::Busy => self.drop(RouterDrop::NeighborTableBusy),
        }
    }

    /// The ARP request rate limit.
    fn arp_allowed(&mut self, now: Instant) -> bool {
        if self.arp_rate.take(now) {
            true
        } else {
            self.stats.arp_rate_limited += 1;
            false
        }
    }

    /// A packet the host proxy made (from a remote or a forward's client, to a
    /// container or a VIP), in `frame` after a virtio-net and an Ethernet header to be
    /// filled in: translated if it is for a VIP, then sent to its container.
    pub fn from_host(&mut self, frame: &mut [u8], now: Instant) -> Action {
        let action = self.decide_from_host(frame, now);
        self.counted(action)
    }

    fn decide_from_host(&mut self, frame: &mut [u8], now: Instant) -> Action {
        let ip_off = VNET_HDR_LEN + ETH_HDR_LEN;
        let (dst, proto, header_len) = {
            let Ok(ip) = Ipv4Packet::new_checked(&frame[ip_off..]) else {
                return self.drop(RouterDrop::BadIpHeader);
            };
            (ip.dst_addr(), ip.next_header(), ip.header_len() as usize)
        };
        frame[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let dst = match self.translate(frame, header_len, u8::from(proto), now) {
            Ok(Some(new_dst)) => new_dst,
            Ok(None) => dst,
            Err(reason) => return self.drop(reason),
        };
        let Some(route) = self.routes.lookup(dst).copied() else {
            return self.drop(RouterDrop::NoRoute);
        };
        // Nobody to tell should ARP fail: the proxy's side times out on its own.
        self.send_via(frame, None, route, dst, Mac::BROADCAST, now)
    }

    /// Fills in the destination MAC of a frame kept by [`Action::Resolve`], if the next
    /// hop is known by now.
    pub fn complete(
        &self,
        iface: usize,
        next_hop: Ipv4Addr,
        frame: &mut [u8],
        now: Instant,
    ) -> bool {
        match self.neighbors.lookup(iface, next_hop, now) {
            Some(mac) if frame.len() >= VNET_HDR_LEN + 6 => {
                frame[VNET_HDR_LEN..VNET_HDR_LEN + 6].copy_from_slice(&mac.0);
                true
            }
            _ => false,
        }
    }

    /// A kept frame whose next hop never answered: count it, and tell its sender
    /// (`sender` on interface `ingress`) that the host is unreachable.
    pub fn unresolved(&mut self, ingress: usize, sender: Mac, frame: &[u8], now: Instant) {
        self.stats.drops[RouterDrop::NeighborUnresolved as usize] += 1;
        if sender == Mac::BROADCAST {
            return;
        }
        self.icmp_error_to(
            ingress,
            sender,
            frame,
            Icmpv4Message::DstUnreachable,
            1,
            0,
            0,
            now,
        );
    }

    /// A frame that could not even be kept.
    pub fn hold_queue_full(&mut self) {
        self.stats.drops[RouterDrop::HoldQueueFull as usize] += 1;
    }

    /// A frame lost for want of a buffer.
    pub fn no_buffer(&mut self) {
        self.stats.drops[RouterDrop::NoBuffer as usize] += 1;
    }

    /// Traffic to one of the router's own addresses: answer ping, refuse the rest.
    fn addressed_to_router(
        &mut self,
        iface: usize,
        frame: &mut [u8],
        proto: IpProtocol,
        header_len: usize,
        now: Instant,
    ) -> Action {
        let ip_off = VNET_HDR_LEN + ETH_HDR_LEN;
        if proto != IpProtocol::Icmp {
            if proto == IpProtocol::Udp {
                self.icmp_error(iface, frame, Icmpv4Message::DstUnreachable, 3, 0, now);
            }
            return self.drop(RouterDrop::ToRouterUnsupported);
        }
        let total_len = u16::from_be_bytes([frame[ip_off + 2], frame[ip_off + 3]]) as usize;
        let icmp_range = ip_off + header_len..ip_off + total_len;
        {
            let Ok(icmp) = Icmpv4Packet::new_checked(&frame[icmp_range.clone()]) else {
                return self.drop(RouterDrop::Truncated);
            };
            if icmp.msg_type() != Icmpv4Message::EchoRequest {
                return self.drop(RouterDrop::ToRouterUnsupported);
            }
        }
        // Echo request -> echo reply, in place: swap the addresses, reset the TTL, fix
        // both checksums. The ICMP checksum is computed afresh, so a checksum the
        // sender left to offload does not matter.
        let (eth, rest) = frame[VNET_HDR_LEN..].split_at_mut(ETH_HDR_LEN);
        let requester: [u8; 6] = eth[6..12].try_into().expect("6 bytes");
        eth[0..6].copy_from_slice(&requester);
        eth[6..12].copy_from_slice(&self.ifaces[iface].mac.0);
        let mut ip = Ipv4Packet::new_unchecked(&mut rest[..total_len]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_hop_limit(DEFAULT_TTL);
        ip.fill_checksum();
        let mut icmp = Icmpv4Packet::new_unchecked(ip.payload_mut());
        icmp.set_msg_type(Icmpv4Message::EchoReply);
        icmp.fill_checksum();
        clear_vnet(frame);
        self.stats.echo_replies += 1;
        Action::Send { iface }
    }

    /// Queues an ARP request for `target` out of `iface`.
    pub fn arp_request(&mut self, iface: usize, target: Ipv4Addr) {
        let me = self.ifaces[iface].clone();
        let Some(slot) = self.outbox.slot(iface) else {
            self.stats.outbox_full += 1;
            return;
        };
        let bytes = &mut slot.2;
        let eth = &mut bytes[VNET_HDR_LEN..];
        eth[0..6].copy_from_slice(&Mac::BROADCAST.0);
        eth[6..12].copy_from_slice(&me.mac.0);
        eth[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        let mut arp = ArpPacket::new_unchecked(&mut eth[ETH_HDR_LEN..ETH_HDR_LEN + 28]);
        arp.set_hardware_type(smoltcp::wire::ArpHardware::Ethernet);
        arp.set_protocol_type(EthernetProtocol::Ipv4);
        arp.set_hardware_len(6);
        arp.set_protocol_len(4);
        arp.set_operation(ArpOperation::Request);
        arp.set_source_hardware_addr(&me.mac.0);
        arp.set_source_protocol_addr(&me.ip.octets());
        arp.set_target_hardware_addr(&[0; 6]);
        arp.set_target_protocol_addr(&target.octets());
        slot.1 = VNET_HDR_LEN + ETH_HDR_LEN + 28;
        self.stats.arp_requests += 1;
    }

    /// Queues an ICMP error about `frame` (as received on `iface`) back to its sender,
    /// unless the rules or the rate limit say not to.
    fn icmp_error(
        &mut self,
        iface: usize,
        frame: &[u8],
        kind: Icmpv4Message,
        code: u8,
        frag_offset: u16,
        now: Instant,
    ) {
        let Some(sender) = frame.get(VNET_HDR_LEN + 6..VNET_HDR_LEN + 12) else {
            return;
        };
        let sender = Mac(sender.try_into().expect("6 bytes"));
        self.icmp_error_to(iface, sender, frame, kind, code, frag_offset, 0, now);
    }

    /// [`Router::icmp_error`] to a given MAC.
    #[allow(clippy::too_many_arguments)]
    fn icmp_error_to(
        &mut self,
        iface: usize,
        requester: Mac,
        frame: &[u8],
        kind: Icmpv4Message,
        code: u8,
        frag_offset: u16,
        // The ICMP header's last four bytes: the next-hop MTU for "fragmentation needed".
        rest: u32,
        now: Instant,
    ) {
        let ip_off = VNET_HDR_LEN + ETH_HDR_LEN;
        let Some(orig) = frame.get(ip_off..) else {
            return;
        };
        if orig.len() < 20 || frag_offset != 0 {
            return;
        }
        let header_len = ((orig[0] & 0x0f) as usize * 4).clamp(20, 60);
        let src = Ipv4Addr::new(orig[12], orig[13], orig[14], orig[15]);
        if src.is_unspecified() || src.is_broadcast() || src.is_multicast() {
            return;
        }
        // Never an error about an ICMP error.
        if orig[9] == 1 {
            let t = orig.get(header_len).copied().unwrap_or(0);
            if !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) {
                return;
            }
        }
        if !self.icmp.take(now) {
            self.stats.icmp_rate_limited += 1;
            return;
        }
        let quoted = orig.len().min(header_len + 8);
        let me = self.ifaces[iface].clone();
        let Some(slot) = self.outbox.slot(iface) else {
            self.stats.outbox_full += 1;
            return;
        };
        let bytes = &mut slot.2;
        let eth = &mut bytes[VNET_HDR_LEN..];
        eth[0..6].copy_from_slice(&requester.0);
        eth[6..12].copy_from_slice(&me.mac.0);
        eth[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip_len = 20 + 8 + quoted;
        {
            let ip = &mut eth[ETH_HDR_LEN..ETH_HDR_LEN + ip_len];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = DEFAULT_TTL;
            ip[9] = 1; // ICMP
            ip[12..16].copy_from_slice(&me.ip.octets());
            ip[16..20].copy_from_slice(&src.octets());
            let c = checksum::checksum(&ip[..20]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let icmp = &mut ip[20..];
            icmp[0] = u8::from(kind);
            icmp[1] = code;
            icmp[4..8].copy_from_slice(&rest.to_be_bytes());
            icmp[8..8 + quoted].copy_from_slice(&orig[..quoted]);
            let c = checksum::checksum(icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
        }
        slot.1 = VNET_HDR_LEN + ETH_HDR_LEN + ip_len;
        self.stats.icmp_errors += 1;
    }

    /// Service translation. A packet of a known flow is rewritten to the other side's
    /// view; a new connection to a VIP gets a backend (and a flow). Returns the new
    /// destination if the packet was rewritten.
    fn translate(
        &mut self,
        frame: &mut [u8],
        header_len: usize,
        proto: u8,
        now: Instant,
    ) -> Result<Option<Ipv4Addr>, RouterDrop> {
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return Ok(None);
        }
        let ip_off = VNET_HDR_LEN + ETH_HDR_LEN;
        let l4 = ip_off + header_len;
        let csum_at = l4 + if proto == PROTO_TCP { 16 } else { 6 };
        if frame.len() < csum_at + 2 {
            return Ok(None);
        }
        let Some(key) = flow_key(frame) else {
            return Ok(None);
        };
        // A TCP segment's end and flags, to reset both ends should the flow be dropped.
        let segment = WireIpv4::new_checked(&frame[ip_off..])
            .ok()
            .filter(|_| proto == PROTO_TCP)
            .and_then(|ip| {
                let t = TcpPacket::new_checked(ip.payload())?;
                Some((t.seq_end(), t.flags()))
            });
        let (new_src, new_dst, dir) = match self.flows.lookup(&key, now) {
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
                    .position(|s| s.proto == proto && s.vip == key.dst)
                else {
                    return Ok(None);
                };
                let flow = self.new_service_flow(svc, key, now)?;
                (flow.reply.dst, flow.reply.src, Direction::Original)
            }
        };
        if let Some((next_seq, flags)) = segment {
            self.flows.tcp_segment(
                &key,
                dir,
                next_seq,
                flags & tcp::FIN != 0,
                flags & tcp::RST != 0,
            );
        }
        let partial = VnetHdr::parse(frame).is_some_and(|v| v.flags & VNET_F_NEEDS_CSUM != 0);
        rewrite_addresses(
            frame, ip_off, l4, csum_at, proto, partial, key, new_src, new_dst,
        );
        self.stats.translated += 1;
        Ok(Some(*new_dst.ip()))
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
        let backend = *service
            .backends
            .iter()
            .max_by_key(|b| flow_hash(&key, b))
            .expect("a service has backends");
        let mut client = key.src;
        if let Some(leg) = self
            .ifaces
            .iter()
            .find(|i| i.on_link(*backend.ip()) && i.on_link(*key.src.ip()))
        {
            let start = flow_hash(&key, &backend) as u16;
            let free = (0..64u16)
                .map(|k| 32768 + (start.wrapping_add(k.wrapping_mul(7919))) % 28232)
                .map(|p| SocketAddrV4::new(leg.ip, p))
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

    /// What [`Router::handle`] would do with `frame` (rewritten in place, as it would
    /// be), decided on a copy of the router: no table changes, nothing is sent. For
    /// `tapnet trace`.
    pub fn trace(&self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        // A copy of the router, but for its NAT table: of that, only the flow this
        // packet may belong to (the whole table could be tens of megabytes).
        let key = flow_key(frame);
        let mut copy = Router {
            ifaces: self.ifaces.clone(),
            mtus: self.mtus.clone(),
            services: self.services.clone(),
            flows: self.flows.excerpt(key.as_slice()),
            routes: self.routes.clone(),
            neighbors: self.neighbors.clone(),
            icmp: self.icmp.clone(),
            outbox: Outbox::new(),
            stats: self.stats.clone(),
            learned: false,
            host_egress: self.host_egress,
            arp_rate: self.arp_rate.clone(),
            probes: Vec::new(),
        };
        copy.decide(iface, frame, now)
    }

    /// Ages the ARP table and the NAT flows; a TCP flow dropped while its ends still
    /// hold the connection gets a reset sent to each.
    pub fn tick(&mut self, now: Instant) {
        // The neighbour table's next ARP requests (a second apart, three at most).
        let mut probes = std::mem::take(&mut self.probes);
        self.neighbors
            .tick(now, |iface, ip| probes.push((iface, ip)));
        for &(iface, ip) in &probes {
            if self.arp_allowed(now) {
                self.arp_request(iface, ip);
            }
        }
        probes.clear();
        self.probes = probes;
        let mut gone = [None; OUTBOX_SLOTS / 2];
        let mut n = 0;
        // As many as the outbox has room for resets now; the rest next second.
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
    fn reset_flow(&mut self, flow: &Flow, now: Instant) {
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
            let Some(route) = self.routes.lookup(*to.ip()).copied() else {
                continue; // a client outside (through a forward): the proxy's side
            };
            let Some(mac) = self.neighbors.lookup(route.iface, *to.ip(), now) else {
                continue;
            };
            let me = self.ifaces[route.iface].mac;
            let Some(slot) = self.outbox.slot(route.iface) else {
                self.stats.outbox_full += 1;
                continue;
            };
            let bytes = &mut slot.2;
            EthernetRepr {
                dst: mac,
                src: me,
                ethertype: ETHERTYPE_IPV4,
            }
            .emit(&mut bytes[VNET_HDR_LEN..]);
            if let Some(n) =
                tcp::emit_rst(from, to, seq, ack, &mut bytes[VNET_HDR_LEN + ETH_HDR_LEN..])
            {
                slot.1 = VNET_HDR_LEN + ETH_HDR_LEN + n;
                self.stats.flow_resets += 1;
            }
        }
    }
}

/// A frame the router rewrote and fully checksummed: no offload work is left.
fn clear_vnet(frame: &mut [u8]) {
    if let Some(vnet) = VnetHdr::parse(frame) {
        if vnet.flags & VNET_F_NEEDS_CSUM != 0 || vnet.is_gso() {
            VnetHdr::default().emit(frame);
        }
    }
}

/// Rendezvous hash of a flow and a backend: each flow picks the backend scoring
/// highest, so backends added or removed move only their share of new flows.
fn flow_hash(key: &FlowKey, backend: &SocketAddrV4) -> u64 {
    let mut x = u64::from(u32::from(*key.src.ip())) << 16 | key.src.port() as u64;
    x ^= (u64::from(u32::from(*backend.ip())) << 16 | backend.port() as u64).rotate_left(29);
    x ^= key.proto as u64;
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Rewrites a TCP or UDP packet's addresses and ports from `old` to `new_src` ->
/// `new_dst`, updating the checksums incrementally (RFC 1624). A checksum the sender
/// left to offload (NEEDS_CSUM) holds the uninverted pseudo-header sum: only the
/// addresses change it, the ports are summed later by whoever finishes it.
#[allow(clippy::too_many_arguments)]
pub fn rewrite_addresses(
    frame: &mut [u8],
    ip_off: usize,
    l4: usize,
    csum_at: usize,
    proto: u8,
    partial: bool,
    old: FlowKey,
    new_src: SocketAddrV4,
    new_dst: SocketAddrV4,
) {
    let (os, od) = (u32::from(*old.src.ip()), u32::from(*old.dst.ip()));
    let (ns, nd) = (u32::from(*new_src.ip()), u32::from(*new_dst.ip()));
    let ip_check = u16::from_be_bytes([frame[ip_off + 10], frame[ip_off + 11]]);
    let ip_check = checksum::update32(checksum::update32(ip_check, os, ns), od, nd);
    frame[ip_off + 10..ip_off + 12].copy_from_slice(&ip_check.to_be_bytes());
    frame[ip_off + 12..ip_off + 16].copy_from_slice(&ns.to_be_bytes());
    frame[ip_off + 16..ip_off + 20].copy_from_slice(&nd.to_be_bytes());

    let l4_check = u16::from_be_bytes([frame[csum_at], frame[csum_at + 1]]);
    let l4_check = if partial {
        !checksum::update32(checksum::update32(!l4_check, os, ns), od, nd)
    } else if proto == PROTO_UDP && l4_check == 0 {
        0 // no checksum was sent: none to keep right
    } else {
        let c = checksum::update32(checksum::update32(l4_check, os, ns), od, nd);
        let c = checksum::update16(c, old.src.port(), new_src.port());
        let c = checksum::update16(c, old.dst.port(), new_dst.port());
        if proto == PROTO_UDP && c == 0 {
            0xffff
        } else {
            c
        }
    };
    frame[csum_at..csum_at + 2].copy_from_slice(&l4_check.to_be_bytes());
    frame[l4..l4 + 2].copy_from_slice(&new_src.port().to_be_bytes());
    frame[l4 + 2..l4 + 4].copy_from_slice(&new_dst.port().to_be_bytes());
}

/// Whether an address may be reached through the host's sockets: never the host's own
/// loopback (a container must not reach services bound to 127.0.0.1 there), nor
/// "this network", class E, multicast or broadcast.
pub fn outside_routable(dst: Ipv4Addr) -> bool {
    let first = dst.octets()[0];
    !(dst.is_loopback() || first == 0 || first >= 224)
}

/// The size of the IP packets a frame will be on the wire: a super-frame's segments
/// (headers plus one segment), or the packet itself.
fn ip_size(frame: &[u8]) -> usize {
    match VnetHdr::parse(frame) {
        Some(v) if v.is_gso() => {
            (v.hdr_len as usize).saturating_sub(ETH_HDR_LEN) + v.gso_size as usize
        }
        _ => frame.len().saturating_sub(VNET_HDR_LEN + ETH_HDR_LEN),
    }
}

fn sender_of(frame: &[u8]) -> Mac {
    Mac(frame[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12]
        .try_into()
        .expect("6 bytes"))
}

/// The NAT flow key of a TCP or UDP packet in `frame` (a first fragment), if any.
fn flow_key(frame: &[u8]) -> Option<FlowKey> {
    let ip = WireIpv4::new_checked(frame.get(VNET_HDR_LEN + ETH_HDR_LEN..)?).ok()?;
    if ip.frag_offset() != 0 || !matches!(ip.protocol(), PROTO_TCP | PROTO_UDP) {
        return None;
    }
    let (sport, dport) = vswitch::wire::ports(ip.payload())?;
    Some(FlowKey {
        proto: ip.protocol(),
        src: SocketAddrV4::new(ip.src(), sport),
        dst: SocketAddrV4::new(ip.dst(), dport),
    })
}
